//! How fast the custody log is on this machine, printed beside the machine's own limits measured in the same run.
//!
//! `cargo bench -p custodia-ledger --bench ledger` measures, on a durable log in a directory on the real disk:
//! durable appends per second under many concurrent appenders, append-to-checkpoint latency under that load and
//! under a light paced load, and inclusion and consistency proofs on a log of a million entries. Beside them it
//! measures what the machine itself can do: `openssl speed` for SHA-256 and Ed25519, and how many fsync'd
//! write-and-rename operations and how many sequential MB/s the same disk sustains.
//!
//! Tuning, by environment variable: `LEDGER_BENCH_ENTRIES` (saturated appends, 200000), `LEDGER_BENCH_TASKS`
//! (concurrent appenders, 1024), `LEDGER_BENCH_LIGHT_RATE` and `LEDGER_BENCH_LIGHT_SECS` (paced load, 500/s for
//! 10 s), `LEDGER_BENCH_PROOF_SIZE` (log size for the proofs, 1000000), `LEDGER_BENCH_FILL_TASKS` (appenders that
//! grow the log to that size, 8192), `LEDGER_BENCH_PROOFS` (proofs per measurement, 20000).
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use custodia_benchkit::{
    BoxError, Headline, SplitMix, Table, add_to_summary, env_or, mb_per_s, openssl_rate, openssl_speed, rate,
    sequential_write_within,
};
use custodia_ledger::merkle::{Hash, fold_range, leaf_hash, perfect_nodes, verify_consistency, verify_inclusion};
use custodia_ledger::{Checkpoint, Log, LogError, LogOptions, LogSigner};
use tokio::task::JoinSet;

const ENTRY_SIZE: usize = 1024;
const ORIGIN: &str = "bench.custodia.invalid/log";
/// What the log should sustain, and what Trillian Tessera's POSIX driver is reported to do.
const GOAL_APPENDS: f64 = 20_000.0;
const GOAL_P99: Duration = Duration::from_secs(1);

struct Config {
    entries: u64,
    tasks: usize,
    light_rate: f64,
    light_secs: f64,
    proof_size: u64,
    fill_tasks: usize,
    proofs: usize,
}

impl Config {
    fn from_env() -> Result<Self, BoxError> {
        Ok(Self {
            entries: env_or("LEDGER_BENCH_ENTRIES", 200_000)?,
            tasks: env_or("LEDGER_BENCH_TASKS", 1024)?,
            light_rate: env_or("LEDGER_BENCH_LIGHT_RATE", 500.0)?,
            light_secs: env_or("LEDGER_BENCH_LIGHT_SECS", 10.0)?,
            proof_size: env_or("LEDGER_BENCH_PROOF_SIZE", 1_000_000)?,
            fill_tasks: env_or("LEDGER_BENCH_FILL_TASKS", 8192)?,
            proofs: env_or("LEDGER_BENCH_PROOFS", 20_000)?,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let config = Config::from_env()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = tempfile::Builder::new().prefix("ledger-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!("custodia-ledger benchmark: {cores} cores, log and disk tests in {}", dir.path().display());

    println!("\n-- machine limits --");
    let machine = measure_machine(&dir.path().join("disk"))?;

    println!("\n-- durable appends, {} B entries --", ENTRY_SIZE);
    let log_dir = dir.path().join("log");
    let signer = LogSigner::generate(ORIGIN)?;
    let skey = signer.expose_secret().to_owned();
    let mut log = Log::open_local(&log_dir, signer, LogOptions::default()).await?;
    let mut ids = IndexMap::default();

    let saturated = run_saturated(&log, &mut ids, config.entries, config.tasks).await?;
    saturated.print(&format!("saturated, {} tasks", config.tasks));

    let light_count = (config.light_rate * config.light_secs).round() as u64;
    let light = run_paced(&log, &mut ids, light_count, config.light_rate).await?;
    light.print(&format!("paced at {}/s", config.light_rate));

    let fill_count = config.proof_size.saturating_sub(ids.len());
    let fill = match fill_count {
        0 => None,
        n => {
            let fill = run_saturated(&log, &mut ids, n, config.fill_tasks).await?;
            fill.print(&format!("saturated, {} tasks (growing the log to {})", config.fill_tasks, config.proof_size));
            Some(fill)
        }
    };

    println!("\n-- proofs --");
    // Reopen, so that the tile cache starts cold, as it would after a restart.
    drop(log);
    let started = Instant::now();
    log = reopen(&log_dir, &skey).await?;
    let reopened = started.elapsed();
    println!("reopened a log of {} entries in {:.1} ms", log.checkpoint().checkpoint.size, ms(reopened));
    let proofs = measure_proofs(&log, &ids, config.proofs).await?;

    print_summary(&config, &machine, &saturated, &light, fill.as_ref(), &proofs, cores);
    drop(log);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// The machine's own limits

struct Machine {
    /// OpenSSL SHA-256 over 1024-byte blocks, bytes per second (one core).
    openssl_sha256: Option<f64>,
    /// OpenSSL Ed25519 signatures per second (one core).
    openssl_ed25519: Option<f64>,
    /// This crate's `leaf_hash` over 1 KiB entries, bytes per second (one core).
    leaf_hash: f64,
    /// This crate's checkpoint signing (note formatting included), per second (one core).
    checkpoint_signs: f64,
    /// Write 1 KiB, fsync, rename, fsync the directory: operations per second from one thread.
    fsync_serial: f64,
    /// The same from 16 threads at once (the log's write concurrency), in separate directories.
    fsync_parallel: f64,
    /// Sequential writes with a final fsync, bytes per second.
    sequential: f64,
}

fn measure_machine(dir: &Path) -> Result<Machine, BoxError> {
    fs::create_dir_all(dir)?;
    let openssl_sha256 = openssl_speed(&["-seconds", "2", "sha256"], |stdout| openssl_rate(stdout, "sha256", 1024));
    let openssl_ed25519 = openssl_speed(&["-seconds", "2", "ed25519"], parse_ed25519_signs);
    if let Some(rate) = openssl_sha256 {
        println!("openssl sha256, 1024-byte blocks: {}", mb_per_s(rate));
    }
    if let Some(rate) = openssl_ed25519 {
        println!("openssl ed25519: {} signs/s", count(rate));
    }

    let leaf_hash = per_second(Duration::from_secs(1), || {
        black_box(leaf_hash(black_box(&[0x5a; ENTRY_SIZE])));
    }) * (ENTRY_SIZE + 1) as f64;
    println!("leaf_hash (sha2 crate), 1 KiB entries: {}", mb_per_s(leaf_hash));
    let signer = LogSigner::generate(ORIGIN)?;
    let mut size = 0;
    let checkpoint_signs = per_second(Duration::from_secs(1), || {
        size += 1;
        black_box(signer.sign(&Checkpoint::new(ORIGIN, size, Hash([7; 32]))).ok());
    });
    println!("LogSigner::sign (checkpoint note): {} signs/s", count(checkpoint_signs));

    let fsync_serial = fsync_rate(&dir.join("serial"), 1, Duration::from_secs(2))?;
    println!("write 1 KiB + fsync + rename + fsync dir, 1 thread: {} ops/s", count(fsync_serial));
    let fsync_parallel = fsync_rate(&dir.join("parallel"), 16, Duration::from_secs(2))?;
    println!("write 1 KiB + fsync + rename + fsync dir, 16 threads: {} ops/s", count(fsync_parallel));
    let sequential = sequential_write_within(&dir.join("sequential"), 1 << 30, Duration::from_secs(2))?;
    println!("sequential write + final fsync: {}", mb_per_s(sequential));
    fs::remove_dir_all(dir)?;
    Ok(Machine {
        openssl_sha256,
        openssl_ed25519,
        leaf_hash,
        checkpoint_signs,
        fsync_serial,
        fsync_parallel,
        sequential,
    })
}

/// From the ` 253 bits EdDSA (Ed25519)   0.0000s   0.0001s  42839.0  15740.9` row, the sign/s column.
fn parse_ed25519_signs(stdout: &str) -> Option<f64> {
    let row = stdout.lines().find(|line| line.contains("(Ed25519)"))?;
    let words: Vec<&str> = row.split_whitespace().collect();
    words.get(words.len().checked_sub(2)?)?.parse().ok()
}

/// How many times per second `work` runs, run for about `duration`.
fn per_second(duration: Duration, mut work: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < duration {
        for _ in 0..64 {
            work();
        }
        runs += 64;
    }
    runs as f64 / started.elapsed().as_secs_f64()
}

/// Durable small-object replacements per second, as the log's store does them: write a staging file, fsync it,
/// rename it over the object, fsync the directory.
fn fsync_rate(dir: &Path, threads: usize, duration: Duration) -> io::Result<f64> {
    let started = Instant::now();
    let deadline = started + duration;
    let payload = [0x5a; 1024];
    let total = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let dir = dir.join(thread.to_string());
                scope.spawn(move || -> io::Result<u64> {
                    fs::create_dir_all(&dir)?;
                    let directory = File::open(&dir)?;
                    let staging = dir.join("object#1");
                    let mut ops = 0;
                    while Instant::now() < deadline {
                        let mut file = File::create(&staging)?;
                        file.write_all(&payload)?;
                        file.sync_all()?;
                        drop(file);
                        fs::rename(&staging, dir.join(format!("object{}", ops % 64)))?;
                        directory.sync_all()?;
                        ops += 1;
                    }
                    Ok(ops)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or_else(|_| Err(io::Error::other("panicked"))))
            .sum::<io::Result<u64>>()
    })?;
    let elapsed = started.elapsed();
    fs::remove_dir_all(dir)?;
    Ok(total as f64 / elapsed.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------------------------
// Appends

/// A 1 KiB entry that carries its id, so that its leaf hash can be recomputed from the index it was given.
fn entry(id: u64) -> Bytes {
    let mut bytes = vec![0xa5; ENTRY_SIZE];
    bytes[..8].copy_from_slice(&id.to_be_bytes());
    Bytes::from(bytes)
}

/// Which entry id each log index holds.
#[derive(Default)]
struct IndexMap(Vec<Option<u64>>);

impl IndexMap {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn id(&self, index: u64) -> Option<u64> {
        self.0.get(index as usize).copied().flatten()
    }

    fn record(&mut self, samples: &[Sample]) -> Result<(), BoxError> {
        for sample in samples {
            let index = sample.index as usize;
            if self.0.len() <= index {
                self.0.resize(index + 1, None);
            }
            if let Some(earlier) = self.0[index].replace(sample.id) {
                return Err(format!("index {index} was returned for entries {earlier} and {}", sample.id).into());
            }
        }
        match self.0.iter().position(Option::is_none) {
            Some(gap) => Err(format!("no append returned index {gap}").into()),
            None => Ok(()),
        }
    }
}

struct Sample {
    id: u64,
    index: u64,
    latency: Duration,
    /// The published tree size right after the append returned: the checkpoint that covered it (or a later one).
    seen_size: u64,
}

async fn append_one(log: &Log, id: u64) -> Result<Sample, LogError> {
    let entry = entry(id);
    let started = Instant::now();
    let index = log.append(entry).await?;
    let latency = started.elapsed();
    Ok(Sample { id, index, latency, seen_size: log.checkpoint().checkpoint.size })
}

/// What one load pattern achieved.
struct Run {
    entries: u64,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    /// Distinct checkpoints that appenders saw right after their append returned: every published checkpoint,
    /// unless all of a batch's appenders were slower to look than the sequencer was to publish the next one.
    checkpoints: usize,
}

impl Run {
    fn new(ids: &mut IndexMap, samples: Vec<Sample>, elapsed: Duration) -> Result<Self, BoxError> {
        ids.record(&samples)?;
        let checkpoints = samples.iter().map(|sample| sample.seen_size).collect::<BTreeSet<_>>().len();
        let mut latencies: Vec<Duration> = samples.iter().map(|sample| sample.latency).collect();
        latencies.sort_unstable();
        Ok(Self { entries: samples.len() as u64, elapsed, latencies, checkpoints })
    }

    fn rate(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }

    fn checkpoint_rate(&self) -> f64 {
        self.checkpoints as f64 / self.elapsed.as_secs_f64()
    }

    fn batch(&self) -> f64 {
        self.entries as f64 / self.checkpoints.max(1) as f64
    }

    fn percentile(&self, quantile: f64) -> Duration {
        let rank = ((self.latencies.len() as f64 * quantile).ceil() as usize).clamp(1, self.latencies.len().max(1));
        self.latencies.get(rank - 1).copied().unwrap_or_default()
    }

    fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    fn latency_text(&self) -> String {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(self.max())
        )
    }

    fn print(&self, label: &str) {
        println!(
            "{label}: {} entries in {:.2} s = {} appends/s; {} checkpoints ({:.1}/s, {:.0} entries each); latency {}",
            count(self.entries as f64),
            self.elapsed.as_secs_f64(),
            count(self.rate()),
            count(self.checkpoints as f64),
            self.checkpoint_rate(),
            self.batch(),
            self.latency_text()
        );
    }
}

/// `count` appends from `tasks` tasks, each appending in a loop, as fast as the log acknowledges them.
async fn run_saturated(log: &Log, ids: &mut IndexMap, count: u64, tasks: usize) -> Result<Run, BoxError> {
    let first_id = ids.len();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..tasks {
        let (log, next) = (log.clone(), next.clone());
        workers.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok::<_, LogError>(samples);
                }
                samples.push(append_one(&log, first_id + n).await?);
            }
        });
    }
    let mut samples = Vec::with_capacity(count as usize);
    while let Some(joined) = workers.join_next().await {
        samples.extend(joined??);
    }
    Run::new(ids, samples, started.elapsed())
}

/// `count` appends started at a steady `rate` per second, each in its own task.
async fn run_paced(log: &Log, ids: &mut IndexMap, count: u64, rate: f64) -> Result<Run, BoxError> {
    let first_id = ids.len();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let started = Instant::now();
    let mut appends = JoinSet::new();
    for n in 0..count {
        ticks.tick().await;
        let log = log.clone();
        appends.spawn(async move { append_one(&log, first_id + n).await });
    }
    let mut samples = Vec::with_capacity(count as usize);
    while let Some(joined) = appends.join_next().await {
        samples.push(joined??);
    }
    Run::new(ids, samples, started.elapsed())
}

/// Opens the log again once the previous handle's sequencer has let go of the directory lock.
async fn reopen(dir: &Path, skey: &str) -> Result<Log, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Log::open_local(dir, LogSigner::from_skey(skey)?, LogOptions::default()).await {
            Err(LogError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            result => return Ok(result?),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Proofs

struct Proofs {
    size: u64,
    inclusion_cold: f64,
    inclusion_warm: f64,
    inclusion_verify: f64,
    consistency: f64,
    consistency_verify: f64,
}

async fn measure_proofs(log: &Log, ids: &IndexMap, proofs: usize) -> Result<Proofs, BoxError> {
    let checkpoint = log.checkpoint().checkpoint;
    let (size, root) = (checkpoint.size, checkpoint.root);
    if size < 2 {
        return Err("the log needs at least 2 entries for proofs".into());
    }
    let storage = log.storage();
    let mut random = SplitMix(0x00c0_ffee);
    let indices: Vec<u64> = (0..proofs).map(|_| random.next_u64() % size).collect();

    let started = Instant::now();
    let mut inclusion = Vec::with_capacity(proofs);
    for &index in &indices {
        inclusion.push(storage.inclusion_proof(index, size).await?);
    }
    let inclusion_cold = rate(proofs as u64, started.elapsed());
    println!("inclusion proofs in a tree of {size}, cold tile cache: {}/s", count(inclusion_cold));

    let started = Instant::now();
    for &index in &indices {
        black_box(storage.inclusion_proof(index, size).await?);
    }
    let inclusion_warm = rate(proofs as u64, started.elapsed());
    println!("inclusion proofs, warm tile cache: {}/s", count(inclusion_warm));

    let mut leaves = Vec::with_capacity(proofs);
    for &index in &indices {
        let id = ids.id(index).ok_or_else(|| format!("no entry was appended at index {index}"))?;
        leaves.push(leaf_hash(&entry(id)));
    }
    let started = Instant::now();
    for ((&index, proof), leaf) in indices.iter().zip(&inclusion).zip(&leaves) {
        verify_inclusion(index, size, leaf, proof, &root)?;
    }
    let inclusion_verify = rate(proofs as u64, started.elapsed());
    println!("inclusion proof verification (leaf hashes precomputed): {}/s", count(inclusion_verify));

    let olds: Vec<u64> = (0..proofs).map(|_| 1 + random.next_u64() % (size - 1)).collect();
    let mut old_roots = Vec::with_capacity(proofs);
    for &old in &olds {
        let edge = storage.node_hashes(&perfect_nodes(0..old), size).await?;
        old_roots.push(fold_range(&edge).ok_or("empty tree edge")?);
    }
    let started = Instant::now();
    let mut consistency = Vec::with_capacity(proofs);
    for &old in &olds {
        consistency.push(storage.consistency_proof(old, size).await?);
    }
    let consistency_rate = rate(proofs as u64, started.elapsed());
    println!("consistency proofs to {size} from random sizes, warm tile cache: {}/s", count(consistency_rate));
    let started = Instant::now();
    for ((&old, proof), old_root) in olds.iter().zip(&consistency).zip(&old_roots) {
        verify_consistency(old, size, proof, old_root, &root)?;
    }
    let consistency_verify = rate(proofs as u64, started.elapsed());
    println!("consistency proof verification: {}/s", count(consistency_verify));

    Ok(Proofs {
        size,
        inclusion_cold,
        inclusion_warm,
        inclusion_verify,
        consistency: consistency_rate,
        consistency_verify,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Summary

fn print_summary(
    config: &Config,
    machine: &Machine,
    saturated: &Run,
    light: &Run,
    fill: Option<&Run>,
    proofs: &Proofs,
    cores: usize,
) {
    let sha = machine.openssl_sha256;
    let ed = machine.openssl_ed25519;
    let optional = |value: Option<f64>, show: fn(f64) -> String| value.map_or_else(|| "n/a".to_owned(), show);
    let ratio =
        |ours: f64, theirs: Option<f64>| theirs.map_or_else(|| "n/a".to_owned(), |t| format!("{:.3}", ours / t));
    // Per append the sequencer hashes the leaf (0x00 || 1 KiB) and, amortised, one interior node (0x01 || 64 B).
    let hashed_per_append = (1 + ENTRY_SIZE + 65) as f64;

    let mut results = Table::new(["measurement", "this run", "goal / reference"]);
    results.row([
        format!("durable appends/s, {} tasks, {} entries", config.tasks, count(saturated.entries as f64)),
        count(saturated.rate()),
        format!("goal {}/s; Tessera POSIX ~10,000/s on 7 cores", count(GOAL_APPENDS)),
    ]);
    results.row([
        "  checkpoints/s, entries per checkpoint".to_owned(),
        format!("{:.1}/s, {:.0}", saturated.checkpoint_rate(), saturated.batch()),
        String::new(),
    ]);
    results.row([
        "  append -> durable checkpoint latency".to_owned(),
        saturated.latency_text(),
        format!("goal p99 < {} s; Tessera ~3 s average", GOAL_P99.as_secs()),
    ]);
    results.row([
        format!("paced appends, {}/s for {} s", config.light_rate, config.light_secs),
        format!("{}/s achieved", count(light.rate())),
        String::new(),
    ]);
    results.row([
        "  checkpoints/s, entries per checkpoint".to_owned(),
        format!("{:.1}/s, {:.1}", light.checkpoint_rate(), light.batch()),
        String::new(),
    ]);
    results.row([
        "  append -> durable checkpoint latency".to_owned(),
        light.latency_text(),
        format!("goal p99 < {} s", GOAL_P99.as_secs()),
    ]);
    if let Some(fill) = fill {
        results.row([
            format!("durable appends/s, {} tasks, {} entries", config.fill_tasks, count(fill.entries as f64)),
            count(fill.rate()),
            format!("goal {}/s", count(GOAL_APPENDS)),
        ]);
        results.row([
            "  checkpoints/s, entries per checkpoint".to_owned(),
            format!("{:.1}/s, {:.0}", fill.checkpoint_rate(), fill.batch()),
            String::new(),
        ]);
        results.row(["  append -> durable checkpoint latency".to_owned(), fill.latency_text(), String::new()]);
    }
    let tree = count(proofs.size as f64);
    results.row([
        format!("inclusion proofs/s, tree {tree}, cold cache"),
        count(proofs.inclusion_cold),
        "1 task".into(),
    ]);
    results.row([
        format!("inclusion proofs/s, tree {tree}, warm cache"),
        count(proofs.inclusion_warm),
        "1 task".into(),
    ]);
    results.row(["inclusion verifications/s".into(), count(proofs.inclusion_verify), "1 task".into()]);
    results.row([format!("consistency proofs/s, to {tree}"), count(proofs.consistency), "1 task, warm cache".into()]);
    results.row(["consistency verifications/s".into(), count(proofs.consistency_verify), "1 task".into()]);

    let mut limits = Table::new(["machine limit (same run)", "measured", "compared with the log"]);
    limits.row([
        "openssl ed25519 signs/s (1 core)".into(),
        optional(ed, count),
        format!(
            "appends/s / signs/s = {}; checkpoints/s / signs/s = {}",
            ratio(saturated.rate(), ed),
            ratio(saturated.checkpoint_rate(), ed)
        ),
    ]);
    limits.row([
        "LogSigner::sign checkpoint notes/s".into(),
        count(machine.checkpoint_signs),
        format!("signing uses {:.2}% of a core", 100.0 * saturated.checkpoint_rate() / machine.checkpoint_signs),
    ]);
    limits.row([
        "openssl sha256, 1024-byte blocks (1 core)".into(),
        optional(sha, mb_per_s),
        format!(
            "append path hashes {} = {} of it",
            mb_per_s(saturated.rate() * hashed_per_append),
            ratio(saturated.rate() * hashed_per_append, sha)
        ),
    ]);
    limits.row([
        "leaf_hash (sha2 crate), 1 KiB entries".into(),
        mb_per_s(machine.leaf_hash),
        format!("{} of openssl", ratio(machine.leaf_hash, sha)),
    ]);
    limits.row([
        "fsync'd write+rename+dir fsync, 1 thread".into(),
        format!("{}/s", count(machine.fsync_serial)),
        format!(
            "checkpoints/s / this = {:.3} (a batch is >= 2 such rounds: tiles, then checkpoint)",
            saturated.checkpoint_rate() / machine.fsync_serial
        ),
    ]);
    limits.row([
        "fsync'd write+rename+dir fsync, 16 threads".into(),
        format!("{}/s", count(machine.fsync_parallel)),
        String::new(),
    ]);
    limits.row([
        "sequential write + fsync".into(),
        mb_per_s(machine.sequential),
        format!(
            "appends write {} of bundles (+ partial rewrites) = {:.3} of it",
            mb_per_s(saturated.rate() * ENTRY_SIZE as f64),
            saturated.rate() * ENTRY_SIZE as f64 / machine.sequential
        ),
    ]);

    println!("\n== custodia-ledger on {cores} cores: results ==");
    results.print();
    println!();
    limits.print();

    let p99 = saturated.percentile(0.99);
    let headlines = [
        Headline {
            measurement: format!("ledger: durable appends/s, {} tasks", config.tasks),
            figure: format!("{}/s", count(saturated.rate())),
            against: format!(
                "openssl ed25519 {} signs/s (1 core); goal {}/s",
                optional(ed, count),
                count(GOAL_APPENDS)
            ),
            ratio: format!(
                "{} appends per sign; {:.1}x goal",
                ratio(saturated.rate(), ed),
                saturated.rate() / GOAL_APPENDS
            ),
        },
        Headline {
            measurement: "ledger: append -> durable checkpoint, p99".into(),
            figure: format!("{:.1} ms", ms(p99)),
            against: format!("goal {} s", GOAL_P99.as_secs()),
            ratio: format!("{:.3}", p99.as_secs_f64() / GOAL_P99.as_secs_f64()),
        },
    ];
    if let Err(err) = add_to_summary("ledger", &headlines) {
        println!("could not add to the summary: {err}");
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A whole number with thousands separators.
fn count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}
