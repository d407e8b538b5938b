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

mod gateway;

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use custodia_benchkit::{
    BoxError, Headline, Table, add_to_summary, env_or, mb_per_s, openssl_rate, openssl_speed, rate, sequential_write,
    size_text, write_pseudo_random,
};
use gateway::{CASE, ProcSample, Run, Server, sample, set_up, sha256sum, upload};

const DEFAULT_BYTES: u64 = 1 << 30;
const DEFAULT_RUNS: usize = 3;
/// Throughput at least this share of min(hash speed, disk speed).
const GOAL_RATIO: f64 = 0.8;
/// Peak resident memory of the gateway below this.
const GOAL_PEAK_RSS: u64 = 100 << 20;

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

// ---------------------------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------------------------
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

    let headlines = [
        Headline {
            measurement: format!("ingest {} (POST .../artefacts), best of {runs}", size_text(bytes)),
            figure: mb_per_s(throughput),
            against: format!("min(openssl sha256, disk write + fsync) = {} ({limiter})", mb_per_s(limit)),
            ratio: format!("{ratio:.2} (goal >= {GOAL_RATIO})"),
        },
        Headline {
            measurement: "peak RSS: set-up and the uploads".into(),
            figure: size_text(peak),
            against: format!("budget {}", size_text(GOAL_PEAK_RSS)),
            ratio: format!("{:.2}", peak as f64 / GOAL_PEAK_RSS as f64),
        },
    ];
    if let Err(err) = add_to_summary("ingest", &headlines) {
        println!("could not add to the summary: {err}");
    }
}
