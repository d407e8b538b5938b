//! How fast the gateway witnesses its partners' logs, and how much latency witnessing adds to publishing its own.
//!
//! `cargo bench -p custodia-server --bench witness` measures two things.
//!
//! 1. **add-checkpoint requests per second on one core.** Partner logs (`custodia_ledger::Log` over memory) are
//!    grown first, and for each step the request that moves the witness from the log's previous size, with its
//!    consistency proof, is kept (c2sp.org/tlog-witness), so that making them is not timed. The witness is then
//!    opened as `custodia serve` opens it (`witness_api::open_for`: the `CUSTODIA_WITNESSED_LOGS` file, the witness
//!    key made on first start, the SQLite catalog in a fresh data directory on the real disk), and
//!    `Witness::add_checkpoint` handles the requests one after another on a current-thread tokio runtime: parse,
//!    the log's signature, the consistency proof, the cosignature, and the durable compare-and-swap in the catalog
//!    (an fsync'd SQLite commit; sqlx runs each SQLite connection on a thread of its own, which mostly waits for the
//!    disk). The witness takes one request at a time anyway (`Witness::turn`), so this sequential figure is its
//!    capacity. Beside it, from the same run: `openssl speed ed25519` (a request needs one verification and one
//!    signature at least), the same two operations through ed25519-dalek, the library the witness uses (faster
//!    than OpenSSL 3.0's Ed25519 on common x86 CPUs), the witness core alone on the same requests
//!    (`custodia_witness::decide` and the cosignature, no IO), and a plain fsync'd SQLite update of the same size
//!    on the same disk (WAL, `synchronous=FULL`, as the catalog). Last, a few requests go over HTTP on loopback to
//!    a `custodia serve` process, no more than one peer's burst (120; a peer is then held to 1200 a minute), so
//!    that figure is a latency, not a capacity.
//! 2. **The latency that publication with three witnesses adds to append → checkpoint.** Five `custodia serve`
//!    processes on loopback: a log whose policy names three witnesses (each another gateway, group `all`, quorum
//!    that group, `CUSTODIA_WITNESS_PUBLISH=quorum`, the default: `/log/checkpoint` shows only a checkpoint all
//!    three cosigned), the three witnesses, and a gateway with no witnesses as the baseline. A signed-in
//!    administrator changes a member's role through the public API (one custody record each), alternately on the
//!    witnessed log and on the baseline, at a modest rate, well below a witness's per-peer budget (20 a second).
//!    Each is timed from the moment its request is sent until `/log/checkpoint` (polled) covers it, on the
//!    witnessed log with three valid cosignatures. The goal is a p99 under 100 ms; Tessera's default witness
//!    timeout, 1 s, is the comparison.
//!
//! Tuning, by environment variable: `WITNESS_BENCH_LOGS` (partner logs, 4), `WITNESS_BENCH_REQUESTS` (requests
//! made, 20000), `WITNESS_BENCH_SECS` (at most this long handling them in-process, 10), `WITNESS_BENCH_HTTP`
//! (requests over HTTP, 100, at most 120), `WITNESS_BENCH_APPENDS` (appends to each of the two logs, 100),
//! `WITNESS_BENCH_RATE` (appends a second to each, 5), `WITNESS_BENCH_POLL_MS` (how often `/log/checkpoint` is
//! read, 2), `WITNESS_BENCH_DEADLINE_SECS` (the longest an append may wait for publication before the run fails,
//! 30). Needs `openssl` on the path for the peer figure. Every `custodia serve` it starts is killed when the run
//! ends, fails or panics, and its data directory (below `CARGO_TARGET_TMPDIR`) is removed.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use custodia_benchkit::{BoxError, SplitMix, Table, env_or, openssl_speed, process_cpu_seconds, rate};
use custodia_ledger::{Log, LogOptions, LogSigner, LogVerifier};
use custodia_server::config::ServeConfig;
use custodia_server::witness_api::Answer;
use custodia_service::clock::Clock;
use custodia_witness::{AddCheckpoint, CosignerKey, CosignerVerifier, Decision, Known, decide};
use sqlx::{ConnectOptions as _, Connection as _};

/// The goal for the latency witnessing adds, and Tessera's default timeout for one witness.
const GOAL_P99: Duration = Duration::from_millis(100);
const TESSERA_WITNESS_TIMEOUT: Duration = Duration::from_secs(1);
/// One peer's burst at the witness endpoint (`witness_api::REQUESTS_BURST`).
const HTTP_BURST: u64 = 120;
const BINARY: &str = env!("CARGO_BIN_EXE_custodia");

struct Config {
    logs: usize,
    requests: usize,
    seconds: f64,
    http: u64,
    appends: usize,
    rate: f64,
    poll: Duration,
    deadline: Duration,
}

impl Config {
    fn from_env() -> Result<Self, BoxError> {
        let config = Self {
            logs: env_or("WITNESS_BENCH_LOGS", 4)?,
            requests: env_or("WITNESS_BENCH_REQUESTS", 20_000)?,
            seconds: env_or("WITNESS_BENCH_SECS", 10.0)?,
            http: env_or("WITNESS_BENCH_HTTP", 100)?,
            appends: env_or("WITNESS_BENCH_APPENDS", 100)?,
            rate: env_or("WITNESS_BENCH_RATE", 5.0)?,
            poll: Duration::from_millis(env_or("WITNESS_BENCH_POLL_MS", 2)?),
            deadline: Duration::from_secs(env_or("WITNESS_BENCH_DEADLINE_SECS", 30)?),
        };
        if config.logs == 0 || config.requests == 0 || config.appends == 0 || config.rate <= 0.0 {
            return Err("WITNESS_BENCH_LOGS, _REQUESTS, _APPENDS and _RATE must be above 0".into());
        }
        if config.http > HTTP_BURST {
            return Err(format!(
                "WITNESS_BENCH_HTTP={} is above one peer's burst at the witness endpoint ({HTTP_BURST}): the rest \
                 would be answered 429",
                config.http
            )
            .into());
        }
        Ok(config)
    }
}

fn main() -> Result<(), BoxError> {
    let config = Config::from_env()?;
    if !Path::new(BINARY).is_file() {
        return Err(format!(
            "the custodia binary {BINARY} is missing: `cargo bench -p custodia-server --bench witness` builds it"
        )
        .into());
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = tempfile::Builder::new().prefix("witness-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!(
        "custodia witness benchmark: {cores} cores; {} partner logs, up to {} requests or {} s in-process, {} over \
         HTTP; {} appends at {}/s to each of two logs",
        config.logs, config.requests, config.seconds, config.http, config.appends, config.rate
    );
    println!("data in {}", dir.path().display());
    // One core: everything this process does (apart from sqlx's SQLite connection threads) runs on this thread.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let capacity = capacity(&config, dir.path()).await?;
        let publication = publication(&config, dir.path()).await?;
        println!(
            "\nload average (1, 5, 15 minutes) at the end: {} on {cores} cores; well above the cores, other work \
             skewed the latencies",
            load_average()
        );
        capacity.print();
        publication.print();
        Ok::<_, BoxError>(())
    })?;
    drop(runtime);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// 1. add-checkpoint capacity

struct Capacity {
    openssl_sign: Option<f64>,
    openssl_verify: Option<f64>,
    dalek_sign: f64,
    dalek_verify: f64,
    handled: Timed,
    cpu_per_request: Duration,
    core: Timed,
    sqlite: Timed,
    http: Timed,
}

async fn capacity(config: &Config, dir: &Path) -> Result<Capacity, BoxError> {
    println!("\n-- machine: openssl speed ed25519 (one core); load average now {} --", load_average());
    let (openssl_sign, openssl_verify) = openssl_ed25519();
    match (openssl_sign, openssl_verify) {
        (Some(sign), Some(verify)) => println!("openssl ed25519: {sign:.0} signs/s, {verify:.0} verifications/s"),
        _ => println!(
            "ERROR: no openssl ed25519 figure (is `openssl` installed and on the path?); the ratios are left out"
        ),
    }
    let (dalek_sign, dalek_verify) = dalek_ed25519();
    println!(
        "ed25519-dalek (the witness's own, this build): {dalek_sign:.0} signs/s, {dalek_verify:.0} verifications/s"
    );

    println!("\n-- making the requests (not timed) --");
    let started = Instant::now();
    let partners = Partners::grow(config.logs, config.requests).await?;
    println!(
        "{} requests from {} logs in {:.1} s; logs now of {} entries, {} B a request on average",
        partners.requests.len(),
        config.logs,
        started.elapsed().as_secs_f64(),
        partners.sizes.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        partners.requests.iter().map(Vec::len).sum::<usize>() / partners.requests.len()
    );

    println!("\n-- Witness::add_checkpoint in-process, SQLite catalog on disk --");
    let data = dir.join("witness");
    std::fs::create_dir_all(&data)?;
    let mut serve = ServeConfig::with_data_dir(&data);
    serve.gateway.origin = "witness.bench.custodia.invalid/log".into();
    serve.witness.logs_file = Some(partners.write_list(&dir.join("witnessed-logs"))?);
    let catalog = custodia_catalog::Catalog::connect(&serve.database_url()).await?;
    let witness = custodia_server::witness_api::open_for(&serve, catalog, Clock::default()).await?;
    let budget = Duration::from_secs_f64(config.seconds);
    let cpu_before = process_cpu_seconds()?;
    let handled = timed(&partners.requests, budget, |body| {
        let witness = witness.clone();
        async move {
            match witness.add_checkpoint(body).await? {
                Answer::Cosigned(_) => Ok(()),
                other => Err(format!("the witness did not cosign: {other:?}").into()),
            }
        }
    })
    .await?;
    let cpu_per_request =
        Duration::from_secs_f64((process_cpu_seconds()? - cpu_before).max(0.0) / handled.count as f64);
    handled.print("add_checkpoint");
    let done = &partners.requests[..handled.count];

    // The same requests through the witness core alone: what the request costs without the catalog.
    let core = core_alone(&partners.verifiers, done)?;
    core.print("witness core, no IO");

    // The catalog's floor: the same compare-and-swap update, as many times, on a plain table of the same disk.
    let sqlite = sqlite_floor(&dir.join("plain.db"), done.len(), budget).await?;
    sqlite.print("plain SQLite update");

    println!("\n-- the same requests over HTTP on loopback to `custodia serve` --");
    let http = over_http(&partners, dir, config.http).await?;
    http.print("HTTP add-checkpoint");

    Ok(Capacity {
        openssl_sign,
        openssl_verify,
        dalek_sign,
        dalek_verify,
        handled,
        cpu_per_request,
        core,
        sqlite,
        http,
    })
}

impl Capacity {
    fn print(&self) {
        let both = self.openssl_sign.zip(self.openssl_verify).map(|(sign, verify)| 1.0 / (1.0 / sign + 1.0 / verify));
        println!("\n-- witness add-checkpoint: requests handled per second, one at a time (one core) --");
        let mut table = Table::new(["", "per second", "p50", "p99", "of openssl verify+sign"]);
        let share =
            |per_second: f64| both.map_or_else(|| "n/a".to_owned(), |b| format!("{:.0}%", 100.0 * per_second / b));
        for (name, figure) in [
            ("openssl speed ed25519: sign (same run)", self.openssl_sign),
            ("openssl speed ed25519: verify (same run)", self.openssl_verify),
            ("openssl: one verify + one sign", both),
            (
                "ed25519-dalek: one verify + one sign (this build)",
                Some(1.0 / (1.0 / self.dalek_sign + 1.0 / self.dalek_verify)),
            ),
        ] {
            let text = figure.map_or_else(|| "n/a".to_owned(), |f| format!("{f:.0}"));
            table.row([name.to_owned(), text, String::new(), String::new(), figure.map_or("n/a".into(), share)]);
        }
        for (name, timed) in [
            ("witness core alone (parse, verify, proof, cosign; no IO)", &self.core),
            ("plain SQLite update, fsync'd (WAL, synchronous=FULL), same disk", &self.sqlite),
            ("Witness::add_checkpoint, SQLite catalog on disk", &self.handled),
            ("HTTP POST /witness/add-checkpoint, loopback, one peer, in a row", &self.http),
        ] {
            table.row([
                name.to_owned(),
                format!("{:.0}", timed.per_second),
                ms(timed.p50),
                ms(timed.p99),
                share(timed.per_second),
            ]);
        }
        table.print();
        let (whole, core, sqlite) =
            (self.handled.mean.as_secs_f64(), self.core.mean.as_secs_f64(), self.sqlite.mean.as_secs_f64());
        println!(
            "Per request, on average: {:.0} µs in all ({:.0} µs of CPU in this process); the witness core {:.0} µs \
             ({:.0}%), a plain fsync'd SQLite update {:.0} µs ({:.0}%), the rest (reading the log's state, the \
             catalog's pool and driver) {:.0} µs ({:.0}%).",
            whole * 1e6,
            self.cpu_per_request.as_secs_f64() * 1e6,
            core * 1e6,
            100.0 * core / whole,
            sqlite * 1e6,
            100.0 * sqlite / whole,
            (whole - core - sqlite).max(0.0) * 1e6,
            100.0 * (whole - core - sqlite).max(0.0) / whole,
        );
        if both.is_some_and(|both| self.core.per_second > both) {
            println!(
                "The witness core outruns openssl's one verify + one sign: it signs and verifies with ed25519-dalek, \
                 which is faster than this openssl on this CPU (see its row)."
            );
        }
        println!(
            "Over HTTP a peer may send {HTTP_BURST} at once, then 1200 a minute (20/s): a log sends one request a \
             checkpoint per witness, so the in-process figure is the witness's capacity across all its logs."
        );
    }
}

/// `openssl speed ed25519`: signatures and verifications per second, one core.
fn openssl_ed25519() -> (Option<f64>, Option<f64>) {
    let row = |stdout: &str, from_end: usize| -> Option<f64> {
        let row = stdout.lines().find(|line| line.contains("(Ed25519)"))?;
        let words: Vec<&str> = row.split_whitespace().collect();
        words.get(words.len().checked_sub(from_end)?)?.parse().ok()
    };
    let verify = std::cell::Cell::new(None);
    let sign = openssl_speed(&["-seconds", "2", "ed25519"], |stdout| {
        verify.set(row(stdout, 1));
        row(stdout, 2)
    });
    (sign, verify.get())
}

/// ed25519-dalek, which the witness signs and verifies with: signatures and verifications per second over a
/// checkpoint-sized message, one core, a second each.
fn dalek_ed25519() -> (f64, f64) {
    use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
    let key = SigningKey::from_bytes(&[7; 32]);
    let message = [0x5a; 120];
    let signature = key.sign(&message);
    let verifying = key.verifying_key();
    let per_second = |work: &mut dyn FnMut()| {
        let started = Instant::now();
        let mut runs = 0u64;
        while started.elapsed() < Duration::from_secs(1) {
            for _ in 0..64 {
                work();
            }
            runs += 64;
        }
        rate(runs, started.elapsed())
    };
    let sign = per_second(&mut || {
        std::hint::black_box(key.sign(std::hint::black_box(&message)));
    });
    let verify = per_second(&mut || {
        std::hint::black_box(verifying.verify(std::hint::black_box(&message), &signature).is_ok());
    });
    (sign, verify)
}

/// Partner logs and the add-checkpoint requests that follow them, in the order they are sent.
struct Partners {
    verifiers: Vec<LogVerifier>,
    sizes: Vec<u64>,
    requests: Vec<Vec<u8>>,
}

impl Partners {
    /// Grows `logs` logs in memory, a few entries at a time, each in turn, and keeps `count` requests in all.
    async fn grow(logs: usize, count: usize) -> Result<Self, BoxError> {
        let mut opened = Vec::new();
        for number in 0..logs {
            let signer = LogSigner::generate(&format!("partner{number}.bench.custodia.invalid/log"))?;
            let verifier = signer.verifier();
            let store = Arc::new(object_store::memory::InMemory::new());
            let log = Log::open(store, object_store::path::Path::from("log"), signer, LogOptions::default()).await?;
            opened.push((log, verifier, 0u64));
        }
        let mut random = SplitMix(0x0077_1e55);
        let mut requests = Vec::with_capacity(count);
        let mut entry = 0u64;
        while requests.len() < count {
            for (log, _, known) in &mut opened {
                if requests.len() == count {
                    break;
                }
                // 1 to 8 entries at once, as a log's batches come; one checkpoint for them.
                let grown = 1 + random.next_u64() % 8;
                let appends = (0..grown).map(|_| {
                    entry += 1;
                    log.append(format!("bench entry {entry}: {}", "x".repeat(200)).into_bytes())
                });
                futures::future::try_join_all(appends).await?;
                let checkpoint = log.checkpoint();
                let size = checkpoint.checkpoint.size;
                let proof =
                    if *known == 0 { Vec::new() } else { log.storage().consistency_proof(*known, size).await? };
                requests
                    .push(AddCheckpoint { old_size: *known, proof, checkpoint: checkpoint.note().to_vec() }.to_bytes());
                *known = size;
            }
        }
        let sizes = opened.iter().map(|(_, _, size)| *size).collect();
        let verifiers = opened.into_iter().map(|(_, verifier, _)| verifier).collect();
        Ok(Self { verifiers, sizes, requests })
    }

    /// The `CUSTODIA_WITNESSED_LOGS` file.
    fn write_list(&self, path: &Path) -> Result<PathBuf, BoxError> {
        let lines: String = self.verifiers.iter().map(|verifier| format!("log {verifier}\n")).collect();
        std::fs::write(path, lines)?;
        Ok(path.to_owned())
    }
}

/// The witness's decision and cosignature on `requests`, with the state each leaves kept in memory.
fn core_alone(verifiers: &[LogVerifier], requests: &[Vec<u8>]) -> Result<Timed, BoxError> {
    let key = CosignerKey::generate("core.bench.custodia.invalid/witness")?;
    let keys: HashMap<&str, &LogVerifier> = verifiers.iter().map(|verifier| (verifier.name(), verifier)).collect();
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut latencies = Vec::with_capacity(requests.len());
    let started = Instant::now();
    for body in requests {
        let one = Instant::now();
        let request = AddCheckpoint::parse(body)?;
        let origin = custodia_witness::witness::claimed_origin(&request.checkpoint).unwrap_or_default().to_owned();
        let log = keys.get(origin.as_str()).copied();
        let state = known.entry(origin).or_insert_with(Known::unseen);
        let Decision::Cosign { checkpoint, .. } = decide(log.map(std::slice::from_ref), state, &request) else {
            return Err("the witness core did not cosign a request".into());
        };
        std::hint::black_box(key.cosign(checkpoint.checkpoint.body().as_bytes(), 1_800_000_000)?);
        *state = Known { size: checkpoint.checkpoint.size, root: checkpoint.checkpoint.root };
        latencies.push(one.elapsed());
    }
    Ok(Timed::of(latencies, started.elapsed()))
}

/// `count` fsync'd updates (or as many as `budget` allows) of one row, each its own transaction, as the catalog's
/// compare-and-swap: what SQLite on this disk allows one writer.
async fn sqlite_floor(path: &Path, count: usize, budget: Duration) -> Result<Timed, BoxError> {
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .connect()
        .await?;
    sqlx::query("CREATE TABLE logs (origin TEXT PRIMARY KEY, size INTEGER NOT NULL, note TEXT NOT NULL)")
        .execute(&mut db)
        .await?;
    sqlx::query("INSERT INTO logs VALUES ('log', 0, '')").execute(&mut db).await?;
    // About the size of a cosigned checkpoint note.
    let note = "n".repeat(400);
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for size in 0..count as i64 {
        if started.elapsed() > budget {
            break;
        }
        let one = Instant::now();
        let done = sqlx::query("UPDATE logs SET size = $1, note = $2 WHERE origin = 'log' AND size = $3")
            .bind(size + 1)
            .bind(&note)
            .bind(size)
            .execute(&mut db)
            .await?;
        if done.rows_affected() != 1 {
            return Err("the plain SQLite update changed no row".into());
        }
        latencies.push(one.elapsed());
    }
    let elapsed = started.elapsed();
    db.close().await?;
    Ok(Timed::of(latencies, elapsed))
}

/// The first `count` requests, one after another, to a `custodia serve` that witnesses the partner logs.
async fn over_http(partners: &Partners, dir: &Path, count: u64) -> Result<Timed, BoxError> {
    if count == 0 {
        return Ok(Timed::of(Vec::new(), Duration::ZERO));
    }
    let list = partners.write_list(&dir.join("http-witnessed-logs"))?;
    let mut gateway = Gateway::new("http", dir)?;
    gateway.start(&[("CUSTODIA_WITNESSED_LOGS", list.as_os_str())]).await?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let url = format!("{}/witness/add-checkpoint", gateway.base());
    let mut latencies = Vec::new();
    let started = Instant::now();
    for body in partners.requests.iter().take(count as usize) {
        let one = Instant::now();
        let response = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body.clone())
            .send()
            .await?;
        let status = response.status();
        let answer = response.bytes().await?;
        if status != 200 {
            return Err(format!("the witness answered {status}: {}", String::from_utf8_lossy(&answer)).into());
        }
        latencies.push(one.elapsed());
    }
    let elapsed = started.elapsed();
    drop(gateway);
    Ok(Timed::of(latencies, elapsed))
}

// ---------------------------------------------------------------------------------------------------------------
// 2. append → published checkpoint, with and without three witnesses

struct Publication {
    appends: usize,
    rate: f64,
    poll: Duration,
    records_per_append: u64,
    baseline: Timed,
    witnessed: Timed,
    baseline_ack: Timed,
    witnessed_ack: Timed,
    paired: Timed,
}

async fn publication(config: &Config, dir: &Path) -> Result<Publication, BoxError> {
    println!(
        "\n-- publication: a log with three witnesses on loopback, and a log with none; load average now {} --",
        load_average()
    );
    let mut witnesses = Vec::new();
    for name in ["w1", "w2", "w3"] {
        witnesses.push(Gateway::new(name, dir)?);
    }
    let mut log = Gateway::new("log", dir)?;
    let mut baseline = Gateway::new("baseline", dir)?;
    let log_list = dir.join("log-witnessed");
    std::fs::write(&log_list, format!("log {}\n", log.log.verifier()))?;
    for witness in &mut witnesses {
        witness.start(&[("CUSTODIA_WITNESSED_LOGS", log_list.as_os_str())]).await?;
    }
    let mut policy = format!("log {}\n", log.log.verifier());
    for witness in &witnesses {
        policy.push_str(&format!(
            "witness {} {} {}/witness\n",
            witness.name,
            witness.witness.verifier(),
            witness.base()
        ));
    }
    policy.push_str("group all-three all w1 w2 w3\nquorum all-three\n");
    let policy_file = dir.join("log-policy");
    std::fs::write(&policy_file, policy)?;
    log.start(&[("CUSTODIA_WITNESS_POLICY", policy_file.as_os_str()), ("CUSTODIA_WITNESS_PUBLISH", "quorum".as_ref())])
        .await?;
    baseline.start(&[]).await?;
    let cosigners: Vec<CosignerVerifier> = witnesses.iter().map(|witness| witness.witness.verifier()).collect();

    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut witnessed = Appender::new(&client, &log, cosigners, config).await?;
    let mut plain = Appender::new(&client, &baseline, Vec::new(), config).await?;
    if witnessed.records_per_append != plain.records_per_append {
        return Err(format!(
            "a role change made {} records on one gateway and {} on the other",
            witnessed.records_per_append, plain.records_per_append
        )
        .into());
    }
    println!(
        "set up: each role change is {} record(s); the witnessed log publishes size {}, the baseline {}",
        plain.records_per_append, witnessed.size, plain.size
    );

    let interval = Duration::from_secs_f64(1.0 / config.rate);
    let started = tokio::time::Instant::now();
    let (mut with, mut without, mut with_ack, mut without_ack, mut paired) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for number in 0..config.appends {
        tokio::time::sleep_until(started + interval.mul_f64(number as f64)).await;
        let (ack, published) = witnessed.append_and_wait().await?;
        let (plain_ack, plain_published) = plain.append_and_wait().await?;
        with.push(published);
        without.push(plain_published);
        with_ack.push(ack);
        without_ack.push(plain_ack);
        paired.push(published.saturating_sub(plain_published));
    }
    let elapsed = started.elapsed();
    // Nothing but these appends went into the witnessed log: its collector's size is the one counted.
    let collected: serde_json::Value =
        serde_json::from_slice(&get(&client, &format!("{}/witness/cosignatures", log.base())).await?.1)?;
    if collected["log_size"].as_u64() != Some(witnessed.size) {
        return Err(format!(
            "the witnessed log is of size {} but the appends counted {}: something else appended to it, and the \
             figures would be wrong",
            collected["log_size"], witnessed.size
        )
        .into());
    }
    for gateway in witnesses.iter_mut().chain([&mut log, &mut baseline]) {
        gateway.check_alive()?;
    }
    drop((witnesses, log, baseline));
    Ok(Publication {
        appends: config.appends,
        rate: config.rate,
        poll: config.poll,
        records_per_append: plain.records_per_append,
        baseline: Timed::of(without, elapsed),
        witnessed: Timed::of(with, elapsed),
        baseline_ack: Timed::of(without_ack, elapsed),
        witnessed_ack: Timed::of(with_ack, elapsed),
        paired: Timed::of(paired, elapsed),
    })
}

impl Publication {
    fn print(&self) {
        println!(
            "\n-- append → /log/checkpoint covering it: {} role changes ({} record(s) each) to each log, {}/s, \
             alternately; /log/checkpoint read every {} ms --",
            self.appends,
            self.records_per_append,
            self.rate,
            self.poll.as_millis()
        );
        let mut table = Table::new(["", "p50", "p99", "max", "append acknowledged, p50", "p99"]);
        for (name, published, ack) in [
            ("no witnesses (baseline)", &self.baseline, &self.baseline_ack),
            ("three witnesses, quorum of all three (publish=quorum)", &self.witnessed, &self.witnessed_ack),
        ] {
            table.row([
                name.to_owned(),
                ms(published.p50),
                ms(published.p99),
                ms(published.max),
                ms(ack.p50),
                ms(ack.p99),
            ]);
        }
        let added = |with: Duration, without: Duration| {
            format!("{:+.1} ms", (with.as_secs_f64() - without.as_secs_f64()) * 1e3)
        };
        table.row([
            "added by witnessing (difference of the figures above)".to_owned(),
            added(self.witnessed.p50, self.baseline.p50),
            added(self.witnessed.p99, self.baseline.p99),
            added(self.witnessed.max, self.baseline.max),
            String::new(),
            String::new(),
        ]);
        table.row([
            "added, append by append (witnessed minus the baseline's next)".to_owned(),
            ms(self.paired.p50),
            ms(self.paired.p99),
            ms(self.paired.max),
            String::new(),
            String::new(),
        ]);
        table.print();
        let p99 = self.witnessed.p99;
        println!(
            "Witnessed publication p99 {}: the goal is under {} ({}); Tessera's default witness timeout is {}, {:.0}x \
             this p99.",
            ms(p99),
            ms(GOAL_P99),
            if p99 < GOAL_P99 { "met" } else { "NOT met" },
            ms(TESSERA_WITNESS_TIMEOUT),
            TESSERA_WITNESS_TIMEOUT.as_secs_f64() / p99.as_secs_f64().max(1e-9)
        );
    }
}

/// A signed-in administrator changing one member's role on one gateway, and waiting for publication.
struct Appender<'a> {
    client: &'a reqwest::Client,
    base: String,
    cookie: String,
    member_url: String,
    /// Witnesses whose valid cosignatures the published checkpoint must carry (none: the log's own).
    cosigners: Vec<CosignerVerifier>,
    /// The size the log will have once the last append is in it.
    size: u64,
    records_per_append: u64,
    changes: u64,
    poll: Duration,
    deadline: Duration,
}

impl<'a> Appender<'a> {
    async fn new(
        client: &'a reqwest::Client,
        gateway: &Gateway,
        cosigners: Vec<CosignerVerifier>,
        config: &Config,
    ) -> Result<Self, BoxError> {
        let base = gateway.base();
        let password = std::fs::read_to_string(gateway.data().join("keys/initial-admin-password"))?;
        let signed_in = client
            .post(format!("{base}/api/v1/session"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "username": "admin", "password": password.trim() }).to_string())
            .send()
            .await?;
        let status = signed_in.status();
        let cookie = signed_in
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(|value| value.strip_prefix("custodia_session="))
            .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
            .ok_or_else(|| format!("signing in to {} answered {status} and no session cookie", gateway.name))?;
        let mut appender = Self {
            client,
            base,
            cookie,
            member_url: String::new(),
            cosigners,
            size: 0,
            records_per_append: 0,
            changes: 0,
            poll: config.poll,
            deadline: config.deadline,
        };
        appender.call("POST", "/api/v1/cases", serde_json::json!({ "id": "case-bench", "title": "R v Bench" })).await?;
        let account = appender
            .call(
                "POST",
                "/api/v1/accounts",
                serde_json::json!({ "username": "member", "display_name": "A member",
                    "password": "correct-horse-battery-staple", "jurisdiction": "IT" }),
            )
            .await?;
        let id = serde_json::from_slice::<serde_json::Value>(&account)?["id"]
            .as_str()
            .ok_or("no account id in the answer")?
            .to_owned();
        appender.member_url = format!("/api/v1/cases/case-bench/members/{id}");
        appender.change_role().await?;
        // How many records one role change makes: the published size before and after one, once all is published.
        let before = appender.published_size_settled().await?;
        appender.change_role().await?;
        let after = appender.published_size_settled().await?;
        appender.records_per_append =
            after.checked_sub(before).filter(|&n| n > 0).ok_or("a role change made no record")?;
        appender.size = after;
        Ok(appender)
    }

    async fn call(&self, method: &str, path: &str, body: serde_json::Value) -> Result<Vec<u8>, BoxError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let response = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::COOKIE, format!("custodia_session={}", self.cookie))
            .header("Sec-Fetch-Site", "same-origin")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status();
        let answer = response.bytes().await?.to_vec();
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {}", String::from_utf8_lossy(&answer)).into());
        }
        Ok(answer)
    }

    async fn change_role(&mut self) -> Result<(), BoxError> {
        let role = if self.changes.is_multiple_of(2) { "prosecutor" } else { "defence" };
        self.changes += 1;
        self.call("PUT", &self.member_url.clone(), serde_json::json!({ "role": role })).await?;
        Ok(())
    }

    /// The published size once it has stopped moving for a while (setup: whatever the setup appended).
    async fn published_size_settled(&self) -> Result<u64, BoxError> {
        let mut last = None;
        let mut steady_since = Instant::now();
        let deadline = Instant::now() + self.deadline;
        loop {
            let now = self.published().await?;
            if now.is_some() && now == last {
                if steady_since.elapsed() > Duration::from_millis(500) {
                    return Ok(now.unwrap_or_default());
                }
            } else {
                (last, steady_since) = (now, Instant::now());
            }
            if Instant::now() > deadline {
                return Err(format!("{}: /log/checkpoint never settled ({last:?})", self.base).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The size `/log/checkpoint` shows, if it carries a valid cosignature of every cosigner; `None` if it does not
    /// (or shows nothing yet, 503).
    async fn published(&self) -> Result<Option<u64>, BoxError> {
        let (status, note) = get(self.client, &format!("{}/log/checkpoint", self.base)).await?;
        if status == 503 {
            return Ok(None);
        }
        if status != 200 {
            return Err(format!("/log/checkpoint answered {status}: {}", String::from_utf8_lossy(&note)).into());
        }
        let size = std::str::from_utf8(&note)?
            .lines()
            .nth(1)
            .and_then(|line| line.parse::<u64>().ok())
            .ok_or("a checkpoint without a size")?;
        for cosigner in &self.cosigners {
            if cosigner.cosignature_on(&note)?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(size))
    }

    /// One role change: how long until it was acknowledged, and until `/log/checkpoint` covered it.
    async fn append_and_wait(&mut self) -> Result<(Duration, Duration), BoxError> {
        let target = self.size + self.records_per_append;
        let started = Instant::now();
        self.change_role().await?;
        let acknowledged = started.elapsed();
        self.size = target;
        loop {
            // The size is read from the note as served; the cosignatures are checked only once it covers the target.
            let (status, note) = get(self.client, &format!("{}/log/checkpoint", self.base)).await?;
            if status == 200 {
                let size = std::str::from_utf8(&note)?.lines().nth(1).and_then(|line| line.parse::<u64>().ok());
                if size.is_some_and(|size| size >= target)
                    && self.cosigners.iter().all(|c| c.cosignature_on(&note).is_ok_and(|found| found.is_some()))
                {
                    return Ok((acknowledged, started.elapsed()));
                }
            }
            if started.elapsed() > self.deadline {
                return Err(format!(
                    "{}: /log/checkpoint did not cover size {target} within {} s (status {status})",
                    self.base,
                    self.deadline.as_secs()
                )
                .into());
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, Vec<u8>), BoxError> {
    let response = client.get(url).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.bytes().await?.to_vec()))
}

// ---------------------------------------------------------------------------------------------------------------
// Gateways as child processes

/// One `custodia serve` process on loopback, with its keys made before it starts (so that others can name them),
/// killed when dropped, panics included.
struct Gateway {
    name: &'static str,
    dir: PathBuf,
    port: u16,
    log: LogSigner,
    witness: CosignerKey,
    /// The process, with the record by which the next test or benchmark stops it if this process is killed first.
    child: Option<(Child, custodia_tests::leftovers::Recorded)>,
}

impl Gateway {
    fn new(name: &'static str, parent: &Path) -> Result<Self, BoxError> {
        let dir = parent.join(format!("gateway-{name}"));
        let host = format!("{name}.bench.custodia.invalid");
        let log = LogSigner::generate(&format!("{host}/log"))?;
        let witness = CosignerKey::generate(&format!("{host}/witness"))?;
        let keys = dir.join("data/keys");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&keys)?;
        for (file, secret) in
            [("gateway.key", log.expose_secret().to_owned()), ("witness.key", witness.expose_secret())]
        {
            let mut key = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(keys.join(file))?;
            writeln!(key, "{secret}")?;
        }
        // Taken from the harness's pool, so that the gateways started together never share one.
        let port = custodia_tests::free_port();
        Ok(Self { name, dir, port, log, witness, child: None })
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join("stderr.log")
    }

    /// Starts it with `env` and waits until it listens.
    async fn start(&mut self, env: &[(&str, &std::ffi::OsStr)]) -> Result<(), BoxError> {
        let stderr = std::fs::File::create(self.stderr_path())?;
        let child = Command::new(BINARY)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env("CUSTODIA_DATA_DIR", self.data())
            .env("CUSTODIA_ORIGIN", format!("{}.bench.custodia.invalid/log", self.name))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|err| format!("cannot run {BINARY}: {err}"))?;
        let recorded = custodia_tests::leftovers::record(child.id(), &self.data());
        self.child = Some((child, recorded));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(
                    format!("custodia serve ({}) did not listen within 60 s: {}", self.name, self.log_tail()).into()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An error, with the end of its operator log, if the process has stopped.
    fn check_alive(&mut self) -> Result<(), BoxError> {
        let Some((child, _)) = &mut self.child else { return Ok(()) };
        match child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                Err(format!("custodia serve ({}) stopped ({status}): {}", self.name, self.log_tail()).into())
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // The record goes after the process has.
        if let Some((mut child, _recorded)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Figures

struct Timed {
    count: usize,
    per_second: f64,
    mean: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Timed {
    fn of(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        let count = latencies.len();
        let at = |quantile: f64| {
            latencies.get(((count.max(1) - 1) as f64 * quantile).round() as usize).copied().unwrap_or_default()
        };
        let total: Duration = latencies.iter().sum();
        Self {
            count,
            per_second: if count == 0 { 0.0 } else { rate(count as u64, elapsed) },
            mean: total.checked_div(count.max(1) as u32).unwrap_or_default(),
            p50: at(0.5),
            p99: at(0.99),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }

    fn print(&self, what: &str) {
        println!(
            "{what}: {} in a row, {:.0}/s, p50 {}, p99 {}, max {}",
            self.count,
            self.per_second,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        );
    }
}

/// `requests` handled one after another by `handle` until they run out or `budget` has passed.
async fn timed<'a, F, Fut>(requests: &'a [Vec<u8>], budget: Duration, handle: F) -> Result<Timed, BoxError>
where
    F: Fn(&'a [u8]) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    let mut latencies = Vec::with_capacity(requests.len());
    let started = Instant::now();
    for body in requests {
        if started.elapsed() > budget {
            break;
        }
        let one = Instant::now();
        handle(body).await?;
        latencies.push(one.elapsed());
    }
    Ok(Timed::of(latencies, started.elapsed()))
}

/// The machine's load averages (1, 5 and 15 minutes), for a reader judging how much else ran beside the figures.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let averages: Vec<&str> = text.split_whitespace().take(3).collect();
    if averages.len() == 3 { averages.join(" ") } else { "unknown".to_owned() }
}

fn ms(duration: Duration) -> String {
    let millis = duration.as_secs_f64() * 1e3;
    if millis < 1.0 { format!("{:.0} µs", millis * 1e3) } else { format!("{millis:.1} ms") }
}
