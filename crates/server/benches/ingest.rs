//! How fast the gateway takes evidence in, printed beside the machine's own limits measured in the same run.
//!
//! `cargo bench -p custodia-server --bench ingest` starts the release `custodia` binary on a loopback port with a
//! fresh data directory on the real disk, sets up an administrator, an account, a case, a membership and an API
//! token through the HTTP API, and uploads a pseudo-random file (1 GiB) as a streamed raw body with its SHA-256
//! stated, as a provider would: `curl -T`. It reports the upload's throughput, split into the streaming phase (body
//! received, hashed and written) and what follows it (fsync, publish, probe, manifest, ledger), the gateway's CPU
//! time and its peak resident memory (`VmHWM`). Beside them it measures what the machine itself can do: `openssl
//! speed` SHA-256 over 16 KiB blocks, and a sequential write of the same size to the same disk with a final fsync.
//!
//! Each measurement that touches the disk runs several times and the best run counts: on a virtual machine the
//! first writes into memory or disk blocks the host has not handed over yet are several times slower than later
//! ones, and every run is printed so that the spread shows. Each upload differs from the one before in its first
//! bytes, so that each is new to the gateway, as evidence is.
//!
//! `VmHWM` is the whole process's peak since it started, set-up included: each argon2 password hash (the first
//! administrator's, the sign-ins, the new account) allocates 19 MiB, which glibc's malloc may keep, so the rows
//! below it show the memory at start, after set-up and after the uploads, and what the uploads added.
//!
//! Goals: throughput at least 80% of min(hash speed, disk speed); peak resident memory under 100 MiB.
//!
//! Tuning, by environment variable: `INGEST_BENCH_BYTES` (the upload's size, 1073741824), `INGEST_BENCH_RUNS` (runs
//! of the disk test and of the upload, 3).
#![allow(clippy::print_stdout)]

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use custodia_benchkit::{
    BoxError, Table, clock_ticks_per_second, cpu_ticks, env_or, mb_per_s, openssl_rate, openssl_speed, rate,
    sequential_write, size_text, write_pseudo_random,
};
use serde_json::{Value, json};

const DEFAULT_BYTES: u64 = 1 << 30;
const DEFAULT_RUNS: usize = 3;
/// Throughput at least this share of min(hash speed, disk speed).
const GOAL_RATIO: f64 = 0.8;
/// Peak resident memory of the gateway below this.
const GOAL_PEAK_RSS: u64 = 100 << 20;
const CASE: &str = "bench-ingest";

fn main() -> Result<(), BoxError> {
    let bytes: u64 = env_or("INGEST_BENCH_BYTES", DEFAULT_BYTES)?;
    let runs: usize = env_or("INGEST_BENCH_RUNS", DEFAULT_RUNS)?.max(1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let binary = Path::new(env!("CARGO_BIN_EXE_custodia"));
    let dir = tempfile::Builder::new().prefix("ingest-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!("custodia ingest benchmark: {} over loopback HTTP, {runs} runs, {cores} cores", size_text(bytes));
    println!("gateway {}", binary.display());
    println!("data and disk tests in {}", dir.path().display());

    println!("\n-- machine limits --");
    let sha256 =
        openssl_speed(&["-seconds", "3", "-bytes", "16384", "sha256"], |stdout| openssl_rate(stdout, "sha256", 16384));
    match sha256 {
        Some(rate) => println!("openssl speed sha256, 16384-byte blocks: {}", mb_per_s(rate)),
        None => println!("openssl speed sha256: no figure"),
    }
    let mut disk = Vec::with_capacity(runs);
    for run in 1..=runs {
        disk.push(sequential_write(&dir.path().join("disk-test"), bytes)?);
        println!("sequential write of {} + fsync, run {run}: {}", size_text(bytes), mb_per_s(disk[run - 1]));
    }

    println!("\n-- input --");
    let input = dir.path().join("evidence.webm");
    let started = Instant::now();
    // On disk before the upload starts, so that its write-back does not compete with the gateway's. Its SHA-256 is
    // taken by sha256sum before each upload, as a provider would.
    write_pseudo_random(&input, bytes, 0xc057_0d1a)?;
    println!("wrote {} of pseudo-random bytes (fsync'd) in {:.1} s", size_text(bytes), started.elapsed().as_secs_f64());

    println!("\n-- gateway --");
    let data_dir = dir.path().join("data");
    let mut server = Server::start(binary, &data_dir)?;
    let outcome = run_uploads(&server, dir.path(), &input, bytes, runs);
    let log = server.stop();
    let uploads = match outcome {
        Ok(uploads) => uploads,
        Err(err) => {
            println!("the benchmark failed: {err}\n-- gateway log --\n{log}");
            return Err(err);
        }
    };
    for run in &uploads.runs {
        check_stored(&data_dir, &run.digest, bytes)?;
    }

    print_summary(bytes, cores, &uploads, sha256, &disk);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// The input

/// Makes the input differ from the previous run's in its first 8 bytes (so that every upload is new to the gateway,
/// as evidence is), flushes that to disk, and returns its SHA-256 in hex.
fn prepare_input(path: &Path, run: usize) -> Result<String, BoxError> {
    if run > 1 {
        let mut file = fs::OpenOptions::new().write(true).open(path)?;
        file.write_all(&(run as u64).to_le_bytes())?;
        file.sync_all()?;
    }
    let started = Instant::now();
    let digest = sha256sum(path)?;
    println!("input {run}: sha256sum {digest} in {:.1} s", started.elapsed().as_secs_f64());
    Ok(digest)
}

fn sha256sum(path: &Path) -> Result<String, BoxError> {
    let output = Command::new("sha256sum").arg(path).output()?;
    if !output.status.success() {
        return Err(format!("sha256sum failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let stdout = String::from_utf8(output.stdout)?;
    let digest = stdout.split_whitespace().next().ok_or("sha256sum printed nothing")?;
    Ok(digest.to_owned())
}

// ---------------------------------------------------------------------------------------------------------------
// The gateway

struct Server {
    child: Child,
    base: String,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Server {
    fn start(binary: &Path, data_dir: &Path) -> Result<Self, BoxError> {
        fs::create_dir_all(data_dir)?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let log = data_dir.with_extension("log");
        let output = File::create(&log)?;
        let child = Command::new(binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("CUSTODIA_DATA_DIR", data_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()?;
        let mut server = Self { child, base: format!("http://127.0.0.1:{port}"), data_dir: data_dir.into(), log };
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("the gateway exited at start ({status}):\n{}", server.log_text()).into());
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("the gateway did not listen within 60 s:\n{}", server.log_text()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "gateway {} listening on {} after {:.2} s",
            server.child.id(),
            server.base,
            started.elapsed().as_secs_f64()
        );
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the gateway and returns its log.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log_text()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl with `args`, returning the HTTP status and the response body.
fn curl(args: &[&str]) -> Result<(u16, String), BoxError> {
    let output = Command::new("curl").args(["-sS", "-w", "\n%{http_code}"]).args(args).output()?;
    if !output.status.success() {
        return Err(
            format!("curl {args:?} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr)).into()
        );
    }
    let text = String::from_utf8(output.stdout)?;
    let (body, status) = text.rsplit_once('\n').ok_or("curl printed no status")?;
    Ok((status.trim().parse()?, body.to_owned()))
}

/// Sends `body` as JSON with `method` and returns the response's JSON, insisting on `expected` status.
fn call(method: &str, url: &str, body: &Value, extra: &[&str], expected: u16) -> Result<Value, BoxError> {
    let body = body.to_string();
    // Signed in by cookie, as the gateway's own pages are (it refuses cross-site requests that change something).
    let mut args = vec![
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
        "-H",
        "Sec-Fetch-Site: same-origin",
        "--data-binary",
        &body,
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let (status, text) = curl(&args)?;
    if status != expected {
        return Err(format!("{method} {url}: {status}, not {expected}: {text}").into());
    }
    if text.trim().is_empty() { Ok(Value::Null) } else { Ok(serde_json::from_str(&text)?) }
}

fn text_field(value: &Value, field: &str) -> Result<String, BoxError> {
    value.get(field).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| format!("no {field} in {value}").into())
}

/// Signs the administrator in, makes a prosecutor on a new case, and mints the prosecutor a read+write token.
fn set_up(server: &Server, dir: &Path) -> Result<String, BoxError> {
    let base = &server.base;
    let admin_password = fs::read_to_string(server.data_dir.join("keys").join("initial-admin-password"))?;
    let admin_jar = dir.join("admin.cookies").display().to_string();
    let user_jar = dir.join("user.cookies").display().to_string();
    let session = format!("{base}/api/v1/session");
    call("POST", &session, &json!({"username": "admin", "password": admin_password.trim()}), &["-c", &admin_jar], 200)?;
    let admin = ["-b", admin_jar.as_str()];
    let password = "bench-password-0123456789";
    let account = call(
        "POST",
        &format!("{base}/api/v1/accounts"),
        &json!({"username": "provider", "display_name": "Bench Provider", "password": password, "jurisdiction": "NL"}),
        &admin,
        201,
    )?;
    let account = text_field(&account, "id")?;
    call("POST", &format!("{base}/api/v1/cases"), &json!({"id": CASE, "title": "Ingest benchmark"}), &admin, 201)?;
    let member = format!("{base}/api/v1/cases/{CASE}/members/{account}");
    call("PUT", &member, &json!({"role": "prosecutor"}), &admin, 204)?;
    call("POST", &session, &json!({"username": "provider", "password": password}), &["-c", &user_jar], 200)?;
    let token = call(
        "POST",
        &format!("{base}/api/v1/tokens"),
        &json!({"scopes": ["read", "write"], "expires_in_seconds": 3600}),
        &["-b", &user_jar],
        201,
    )?;
    text_field(&token, "token")
}

// ---------------------------------------------------------------------------------------------------------------
// The upload

/// What one process looked like at one moment, from `/proc`.
#[derive(Clone, Copy, Default)]
struct ProcSample {
    /// Peak resident set since the process started.
    hwm: u64,
    rss: u64,
    rss_anon: u64,
    rss_file: u64,
    /// Bytes the process passed to write(2) and friends.
    wchar: u64,
    /// User + system CPU time, in clock ticks.
    cpu_ticks: u64,
}

fn sample(pid: u32) -> io::Result<ProcSample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    let io = fs::read_to_string(format!("/proc/{pid}/io"))?;
    let wchar =
        io.lines().find_map(|line| line.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    Ok(ProcSample {
        hwm: kib("VmHWM:"),
        rss: kib("VmRSS:"),
        rss_anon: kib("RssAnon:"),
        rss_file: kib("RssFile:"),
        wchar,
        cpu_ticks: cpu_ticks(&format!("/proc/{pid}/stat"), 14)?,
    })
}

/// One upload.
struct Run {
    /// The SHA-256 of what was uploaded, in hex.
    digest: String,
    wall: Duration,
    /// From the start until the gateway had written every byte of the body (to its staging object).
    streamed: Option<Duration>,
    gateway_cpu: f64,
    curl_cpu: f64,
}

/// Every upload, and the gateway's memory around them.
struct Uploads {
    runs: Vec<Run>,
    /// Just after the gateway started listening.
    at_start: ProcSample,
    /// After set-up (sign-ins, an account), before the first upload.
    before: ProcSample,
    /// After the last upload.
    after: ProcSample,
    /// The highest VmRSS seen while uploads ran, sampled every 10 ms.
    sampled_peak_rss: u64,
}

impl Uploads {
    fn best(&self) -> &Run {
        self.runs.iter().min_by_key(|run| run.wall).unwrap_or_else(|| unreachable!("at least one run"))
    }
}

fn run_uploads(server: &Server, dir: &Path, input: &Path, bytes: u64, runs: usize) -> Result<Uploads, BoxError> {
    let at_start = sample(server.pid())?;
    let token = set_up(server, dir)?;
    println!("set up an account, case {CASE}, membership and API token");
    let before = sample(server.pid())?;
    let mut uploads = Uploads { runs: Vec::new(), at_start, before, after: before, sampled_peak_rss: before.rss };
    for number in 1..=runs {
        let digest = prepare_input(input, number)?;
        let (run, peak) = upload(server, dir, input, &digest, bytes, &token)?;
        let streamed =
            run.streamed.map_or_else(String::new, |at| format!(", body written after {:.2} s", at.as_secs_f64()));
        println!("upload {number}: {} in {:.2} s{streamed}", mb_per_s(rate(bytes, run.wall)), run.wall.as_secs_f64(),);
        uploads.sampled_peak_rss = uploads.sampled_peak_rss.max(peak);
        uploads.runs.push(run);
    }
    uploads.after = sample(server.pid())?;
    Ok(uploads)
}

/// Uploads `input` once, returning what it took and the highest VmRSS sampled meanwhile.
fn upload(
    server: &Server,
    dir: &Path,
    input: &Path,
    digest: &str,
    bytes: u64,
    token: &str,
) -> Result<(Run, u64), BoxError> {
    let pid = server.pid();
    let ticks = clock_ticks_per_second();
    let url = format!(
        "{}/api/v1/cases/{CASE}/artefacts?purpose=ingest%20benchmark&filename=evidence.webm&sha256={digest}",
        server.base
    );
    let authorization = format!("Authorization: Bearer {token}");
    let input = input.display().to_string();
    let response_file = dir.join("response.json");
    let response_path = response_file.display().to_string();

    let before = sample(pid)?;
    let children_before = cpu_ticks("/proc/self/stat", 16)?;
    let running = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let sampler = {
        let running = Arc::clone(&running);
        std::thread::spawn(move || {
            let mut peak = before.rss;
            let mut streamed = None;
            while running.load(Ordering::Relaxed) {
                if let Ok(now) = sample(pid) {
                    peak = peak.max(now.rss);
                    if streamed.is_none() && now.wchar >= before.wchar + bytes {
                        streamed = Some(started.elapsed());
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (peak, streamed)
        })
    };
    let output = Command::new("curl")
        .args(["-sS", "-X", "POST", "-T", &input, "-H", "Content-Type: video/webm", "-H", "Expect:"])
        .args(["-H", &authorization, "-o", &response_path, "-w", "%{http_code}", &url])
        .output();
    let wall = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let (peak, streamed) = sampler.join().map_err(|_| "the sampler panicked")?;
    let output = output?;
    let after = sample(pid)?;
    let children_after = cpu_ticks("/proc/self/stat", 16)?;

    let status = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let body = fs::read_to_string(&response_file).unwrap_or_default();
    if !output.status.success() || status != "201" {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("upload: curl {}, HTTP {status}: {body}{stderr}", output.status).into());
    }
    let response: Value = serde_json::from_str(&body)?;
    if response.get("sha256").and_then(Value::as_str) != Some(digest) || response.get("size") != Some(&json!(bytes)) {
        return Err(format!("the gateway registered something else: {response}").into());
    }
    let run = Run {
        digest: digest.to_owned(),
        wall,
        streamed,
        gateway_cpu: after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / ticks,
        curl_cpu: children_after.saturating_sub(children_before) as f64 / ticks,
    };
    Ok((run, peak))
}

/// The object is at its content address, whole, and no staging object is left.
fn check_stored(data_dir: &Path, digest: &str, bytes: u64) -> Result<(), BoxError> {
    let objects = data_dir.join("objects");
    let object = objects.join("objects").join("sha256").join(&digest[..2]).join(digest);
    let size = fs::metadata(&object).map_err(|err| format!("{}: {err}", object.display()))?.len();
    if size != bytes {
        return Err(format!("{} holds {size} bytes, not {bytes}", object.display()).into());
    }
    let staging = objects.join("staging");
    let leftovers = fs::read_dir(&staging).map_or(0, Iterator::count);
    if leftovers > 0 {
        return Err(format!("{leftovers} staging objects left in {}", staging.display()).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Report

fn print_summary(bytes: u64, cores: usize, uploads: &Uploads, sha256: Option<f64>, disk: &[f64]) {
    let best = uploads.best();
    let wall = best.wall.as_secs_f64();
    let throughput = bytes as f64 / wall;
    let mut walls: Vec<f64> = uploads.runs.iter().map(|run| run.wall.as_secs_f64()).collect();
    walls.sort_by(f64::total_cmp);
    let median = walls[walls.len() / 2];
    let disk_best = disk.iter().copied().fold(0.0, f64::max);
    let limit = sha256.map_or(disk_best, |sha256| sha256.min(disk_best));
    let limiter = if sha256.is_some_and(|sha256| sha256 < disk_best) { "hash" } else { "disk" };
    let ratio = throughput / limit;
    let peak = uploads.after.hwm;
    let verdict = |met: bool| if met { "meets goal" } else { "MISSES goal" };
    let runs = uploads.runs.len();

    let mut results = Table::new(["measurement", "this run", "limit / goal", "ratio"]);
    results.row([
        format!("ingest {} via POST .../artefacts, best of {runs}", size_text(bytes)),
        format!("{} ({wall:.2} s)", mb_per_s(throughput)),
        format!("min(hash, disk) = {} ({limiter})", mb_per_s(limit)),
        format!("{:.0}% ({}: >= {:.0}%)", 100.0 * ratio, verdict(ratio >= GOAL_RATIO), 100.0 * GOAL_RATIO),
    ]);
    results.row([
        format!("  median of {runs}"),
        format!("{} ({median:.2} s)", mb_per_s(bytes as f64 / median)),
        String::new(),
        format!("{:.0}%", 100.0 * bytes as f64 / median / limit),
    ]);
    if let Some(streamed) = best.streamed {
        let streamed = streamed.as_secs_f64();
        results.row([
            "  body received, hashed, written (no fsync)".into(),
            format!("{} ({streamed:.2} s)", mb_per_s(bytes as f64 / streamed)),
            String::new(),
            format!("{:.0}% of the time", 100.0 * streamed / wall),
        ]);
        results.row([
            "  then fsync, publish, probe, manifest, ledger".into(),
            format!("{:.2} s", wall - streamed),
            String::new(),
            format!("{:.0}% of the time", 100.0 * (wall - streamed) / wall),
        ]);
    }
    results.row([
        "  gateway CPU time".into(),
        format!("{:.2} s", best.gateway_cpu),
        format!("{cores} cores x {wall:.2} s"),
        format!("{:.0}% of one core", 100.0 * best.gateway_cpu / wall),
    ]);
    results.row([
        "  curl CPU time".into(),
        format!("{:.2} s", best.curl_cpu),
        String::new(),
        format!("{:.0}% of one core", 100.0 * best.curl_cpu / wall),
    ]);
    results.row([
        "gateway peak RSS (VmHWM) after the uploads".into(),
        size_text(peak),
        format!("goal < {}", size_text(GOAL_PEAK_RSS)),
        verdict(peak < GOAL_PEAK_RSS).into(),
    ]);
    for (label, at) in [
        ("  at start", &uploads.at_start),
        ("  after set-up", &uploads.before),
        ("  after the uploads", &uploads.after),
    ] {
        results.row([
            format!("{label}: VmHWM; VmRSS = anon + file"),
            format!(
                "{}; {} = {} + {}",
                size_text(at.hwm),
                size_text(at.rss),
                size_text(at.rss_anon),
                size_text(at.rss_file)
            ),
            String::new(),
            String::new(),
        ]);
    }
    results.row([
        "  highest VmRSS sampled during the uploads".into(),
        size_text(uploads.sampled_peak_rss),
        String::new(),
        format!("+{} over set-up", size_text(uploads.sampled_peak_rss.saturating_sub(uploads.before.rss))),
    ]);

    let mut limits = Table::new(["machine limit (same run)", "measured", "ingest / limit"]);
    limits.row([
        "openssl speed sha256, 16384-byte blocks (1 core)".into(),
        sha256.map_or_else(|| "n/a".into(), mb_per_s),
        sha256.map_or_else(|| "n/a".into(), |sha256| format!("{:.0}%", 100.0 * throughput / sha256)),
    ]);
    let runs_text: Vec<String> = disk.iter().map(|rate| format!("{:.0}", rate / 1e6)).collect();
    limits.row([
        format!("sequential write {} + fsync, same disk, best of {}", size_text(bytes), disk.len()),
        format!("{} (runs: {})", mb_per_s(disk_best), runs_text.join(", ")),
        format!("{:.0}%", 100.0 * throughput / disk_best),
    ]);
    if let Some(sha256) = sha256 {
        // One core doing both in turn, with no overlap: a floor that any pipelining should beat.
        let serial = 1.0 / (1.0 / sha256 + 1.0 / disk_best);
        limits.row([
            "  hash then write, one after the other".into(),
            mb_per_s(serial),
            format!("{:.0}%", 100.0 * throughput / serial),
        ]);
    }

    println!("\n== custodia ingest, {} on {cores} cores: results ==", size_text(bytes));
    results.print();
    println!();
    limits.print();
}
