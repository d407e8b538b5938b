//! How fast the offline verifier checks a court bundle, beside `openssl dgst -sha256` over the same payload, and how
//! much memory it needs.
//!
//! `cargo bench -p custodia-bundle --bench verify` builds real bundles on the real disk, as `Gateway::export` does:
//! a pseudo-random payload file, a manifest signed with the log signer's key, and three custody records about the
//! artefact (registration, a download, the export, each naming the one before as `prior`) appended to a real
//! `custodia_ledger::Log` over an in-memory object store, among records about another artefact, with
//! c2sp.org/tlog-proof files against the one checkpoint that covers the export. The bundle is streamed from the
//! payload file by `BundleWriter::write_to` and must verify as valid before anything is timed.
//!
//! It then times `verify` over `BufReader<File>` against `openssl dgst -sha256` of the payload file (a child
//! process, so its start-up is counted), and plain read-and-hash loops with the `sha2` crate that the verifier
//! uses, over the payload file and over the whole bundle file, which separate the cost of the hash and of the file
//! from the cost of parsing the tar. Both files were just written and fsync'd and fit in memory, so every
//! measurement reads from the page cache: the comparison is of CPU, not disk. The runs alternate (openssl, verify,
//! sha2 loops; openssl, verify, sha2 loops; ...) and the best of each is reported, which evens out the page cache
//! and other work on the machine. Rates are payload bytes per second (the loop over the bundle file: the bundle's
//! bytes), 1 MB = 10^6 bytes.
//!
//! Memory: before each verification the peak resident set (`VmHWM`) is reset through `/proc/self/clear_refs`, and
//! read again after it; the same is done for a small bundle, to show that the peak does not grow with the payload.
//! In this process the allocator keeps memory that earlier work freed, which can hide the verifier's own, so each
//! bundle is also verified by a fresh child process (this benchmark again, told so by `VERIFY_BENCH_CHILD_BUNDLE`)
//! that does nothing else, and its resident set before and peak during are reported too.
//!
//! Goals: verify at least 90% of openssl's speed; peak resident memory flat in the payload's size, a few MiB above
//! what the process held before.
//!
//! Tuning, by environment variable: `VERIFY_BENCH_BYTES` (the large payload, 1073741824), `VERIFY_BENCH_SMALL_BYTES`
//! (the small one, 67108864), `VERIFY_BENCH_ROUNDS` (timed runs of each, best kept, 3), `VERIFY_BENCH_READ` (the
//! sha2 loops' read size, 262144, the verifier's own).
#![allow(clippy::print_stdout)]

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custodia_benchkit::{
    BoxError, Headline, add_to_summary, env_or, mb_per_s, openssl_rate, openssl_speed, rate, write_pseudo_random,
};
use custodia_bundle::{BundleRecord, BundleSource, BundleWriter, verify};
use custodia_core::{
    AccessKind, ActorId, ArtefactId, CaseId, Commitment, CustodyEvent, CustodyRecord, ExportFormat, Label, Manifest,
    Opening, Openings, Salt, Sha256,
};
use custodia_ledger::{Log, LogOptions, LogSigner, LogVerifier, TlogProof};
use sha2::Digest as _;

const DEFAULT_BYTES: u64 = 1 << 30;
const DEFAULT_SMALL_BYTES: u64 = 64 << 20;
/// Verify at least this share of openssl's SHA-256 speed.
const GOAL_RATIO: f64 = 0.9;
/// The peak resident set while verifying may exceed what the process held before by at most this much.
const GOAL_GROWTH: u64 = 8 << 20;
/// The bundle's write buffer.
const CHUNK: usize = 8 << 20;
/// Reads of the plain hashing loop, by default the size of the verifier's own reads.
const DEFAULT_READ: usize = 256 << 10;
/// Set in the child process that verifies a bundle alone, to measure its memory from a clean start.
const CHILD_BUNDLE: &str = "VERIFY_BENCH_CHILD_BUNDLE";
const CHILD_KEY: &str = "VERIFY_BENCH_CHILD_KEY";
/// Records about another artefact, appended before and between this artefact's, so that its records are not
/// neighbours in the log and the inclusion proofs have a realistic depth.
const OTHER_RECORDS: usize = 500;
const ORIGIN: &str = "bench.custodia.invalid/log";

fn main() -> Result<(), BoxError> {
    if let Ok(bundle) = std::env::var(CHILD_BUNDLE) {
        return child(Path::new(&bundle));
    }
    let large: u64 = env_or("VERIFY_BENCH_BYTES", DEFAULT_BYTES)?;
    let small: u64 = env_or("VERIFY_BENCH_SMALL_BYTES", DEFAULT_SMALL_BYTES)?;
    let rounds: usize = env_or("VERIFY_BENCH_ROUNDS", 3)?;
    let read_size: usize = env_or("VERIFY_BENCH_READ", DEFAULT_READ)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = tempfile::Builder::new().prefix("verify-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!("custodia bundle verify benchmark: {} and {} payloads, {cores} cores", size_text(small), size_text(large));
    println!("files in {}", dir.path().display());

    let signer = LogSigner::generate(ORIGIN)?;
    let verifier = signer.verifier();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let log = runtime.block_on(Log::open(
        Arc::new(object_store::memory::InMemory::new()),
        object_store::path::Path::from("log"),
        LogSigner::from_skey(signer.expose_secret())?,
        LogOptions::default(),
    ))?;

    println!("\n-- machine limits --");
    // The hash alone, with no file reading; OpenSSL 3 may name the row after the EVP digest.
    let openssl_speed = openssl_speed(&["-seconds", "2", "-bytes", "16384", "-evp", "sha256"], |stdout| {
        openssl_rate(stdout, "sha256", 16384).or_else(|| openssl_rate(stdout, "SHA2-256", 16384))
    });
    match openssl_speed {
        Some(rate) => println!("openssl speed -evp sha256, 16384-byte blocks (hash only, no IO): {}", mb_per_s(rate)),
        None => println!("openssl speed sha256: no figure"),
    }

    println!("\n-- building bundles --");
    let mut bundles = Vec::new();
    for (name, bytes) in [("small", small), ("large", large)] {
        let built = build(&runtime, &log, &signer, dir.path(), name, bytes)?;
        let report = verify(BufReader::new(File::open(&built.bundle)?), std::slice::from_ref(&verifier))?;
        if !report.is_valid() {
            return Err(format!("the {name} bundle does not verify:\n{report}").into());
        }
        println!(
            "{name}: {} payload, {} bundle, records {:?}, verifies as valid ({} checks)",
            size_text(built.bytes),
            size_text(built.bundle_bytes),
            built.records,
            report.checks.len()
        );
        bundles.push(built);
    }
    runtime.block_on(log.close());
    drop(runtime);

    println!("\n-- timed runs (page cache warm; best of {rounds}) --");
    let mut rows = Vec::new();
    for built in &bundles {
        let mut best = Best::default();
        for round in 1..=rounds {
            let openssl = openssl_dgst(&built.payload, &built.sha256)?;
            let run = timed_verify(&built.bundle, &verifier, &built.sha256)?;
            let plain = sha2_loop(&built.payload, Some(&built.sha256), read_size)?;
            let raw_bundle = sha2_loop(&built.bundle, None, read_size)?;
            println!(
                "{} round {round}: openssl {}, verify {}, sha2 loop over the payload {}, over the bundle {}, verify peak {}",
                size_text(built.bytes),
                rate_text(built.bytes, openssl),
                rate_text(built.bytes, run.elapsed),
                rate_text(built.bytes, plain),
                rate_text(built.bundle_bytes, raw_bundle),
                run.hwm.map_or("unknown".into(), size_text),
            );
            best.add(openssl, &run, plain, raw_bundle);
        }
        let alone = child_peak(&built.bundle, &verifier)?;
        println!(
            "{}: a fresh process that only verifies it: RSS {} before, peak {}",
            size_text(built.bytes),
            size_text(alone.0),
            size_text(alone.1)
        );
        best.alone = Some(alone);
        rows.push((built.bytes, best));
    }

    println!("\n-- summary --");
    println!("Throughput (payload MB/s, 1 MB = 10^6 bytes; best of {rounds}, page cache warm):");
    println!(
        "sha2 loops: the verifier's hash alone, in {} reads, over the payload file and over the whole bundle file",
        size_text(read_size as u64)
    );
    if let Some(rate) = openssl_speed {
        println!("openssl speed -evp sha256 (hash only, no IO): {}", mb_per_s(rate));
    }
    println!(
        "| payload  | verify MB/s | openssl dgst MB/s | verify / openssl | sha2 payload MB/s | sha2 bundle MB/s | verify / sha2 bundle |"
    );
    println!(
        "|----------|-------------|-------------------|------------------|-------------------|------------------|----------------------|"
    );
    let mb = |bytes: u64, elapsed: Duration| rate(bytes, elapsed) / 1e6;
    for ((bytes, best), built) in rows.iter().zip(&bundles) {
        println!(
            "| {:<8} | {:>11.0} | {:>17.0} | {:>15.1}% | {:>17.0} | {:>16.0} | {:>19.1}% |",
            size_text(*bytes),
            mb(*bytes, best.verify),
            mb(*bytes, best.openssl),
            100.0 * best.openssl.as_secs_f64() / best.verify.as_secs_f64(),
            mb(*bytes, best.sha2),
            mb(built.bundle_bytes, best.raw_bundle),
            100.0 * mb(*bytes, best.verify) / mb(built.bundle_bytes, best.raw_bundle),
        );
    }
    println!("\nMemory of verify: in this process, VmHWM reset through /proc/self/clear_refs before each run (the run");
    println!("that grew most of {rounds}); and a fresh process that does nothing but verify the bundle from a file:");
    println!("| payload  | RSS before | peak (VmHWM) | growth   | fresh process: RSS before | peak     | growth   |");
    println!("|----------|------------|--------------|----------|---------------------------|----------|----------|");
    for (bytes, best) in &rows {
        let unknown = || "unknown".to_owned();
        println!(
            "| {:<8} | {:>10} | {:>12} | {:>8} | {:>25} | {:>8} | {:>8} |",
            size_text(*bytes),
            best.rss_before.map_or_else(unknown, size_text),
            best.hwm.map_or_else(unknown, size_text),
            best.growth().map_or_else(unknown, size_text),
            best.alone.map_or_else(unknown, |(before, _)| size_text(before)),
            best.alone.map_or_else(unknown, |(_, peak)| size_text(peak)),
            best.alone.map_or_else(unknown, |(before, peak)| size_text(peak.saturating_sub(before))),
        );
    }

    let (large_bytes, large_best) = rows.last().ok_or("no bundle was measured")?;
    let ratio = large_best.openssl.as_secs_f64() / large_best.verify.as_secs_f64();
    println!(
        "\nGoal: verify >= {:.0}% of openssl on {}: {:.1}% -> {}",
        GOAL_RATIO * 100.0,
        size_text(*large_bytes),
        ratio * 100.0,
        if ratio >= GOAL_RATIO { "met" } else { "NOT met" }
    );
    let growths: Vec<Option<u64>> =
        rows.iter().map(|(_, best)| best.alone.map(|(before, peak)| peak.saturating_sub(before))).collect();
    match growths.as_slice() {
        [Some(small_growth), .., Some(large_growth)] => println!(
            "Goal: peak memory flat, a fresh verifying process grows under {}: {} for {}, {} for {} -> {}",
            size_text(GOAL_GROWTH),
            size_text(*small_growth),
            size_text(rows[0].0),
            size_text(*large_growth),
            size_text(*large_bytes),
            if *large_growth <= GOAL_GROWTH && *large_growth <= small_growth + (1 << 20) { "met" } else { "NOT met" }
        ),
        _ => println!("Goal: peak memory flat: not measured (/proc/self/clear_refs or VmHWM unavailable)"),
    }
    let mut headlines = vec![Headline {
        measurement: format!("bundle verify, {} payload", size_text(*large_bytes)),
        figure: mb_per_s(rate(*large_bytes, large_best.verify)),
        against: format!("openssl dgst -sha256, same file: {}", mb_per_s(rate(*large_bytes, large_best.openssl))),
        ratio: format!("{ratio:.2} (goal >= {GOAL_RATIO})"),
    }];
    if let Some(Some(growth)) = growths.last() {
        headlines.push(Headline {
            measurement: format!("bundle verify, memory growth of a fresh process, {}", size_text(*large_bytes)),
            figure: size_text(*growth),
            against: format!("goal under {}", size_text(GOAL_GROWTH)),
            ratio: format!("{:.2}", *growth as f64 / GOAL_GROWTH as f64),
        });
    }
    add_to_summary("verify", &headlines)?;
    Ok(())
}

/// A bundle on disk and what went into it.
struct Built {
    payload: PathBuf,
    bundle: PathBuf,
    sha256: Sha256,
    bytes: u64,
    bundle_bytes: u64,
    records: Vec<u64>,
}

/// Writes a payload, registers, accesses and exports it in the log, and writes its bundle, as the gateway does.
fn build(
    runtime: &tokio::runtime::Runtime,
    log: &Log,
    signer: &LogSigner,
    dir: &Path,
    name: &str,
    bytes: u64,
) -> Result<Built, BoxError> {
    let payload = dir.join(format!("{name}.payload"));
    let started = Instant::now();
    let sha256: Sha256 = write_pseudo_random(&payload, bytes, 0xc057_0d1a ^ bytes)?.parse()?;
    println!("{name}: wrote {} of pseudo-random bytes (fsync'd) in {:.1} s", size_text(bytes), secs(started));

    let artefact = ArtefactId::new(format!("art-bench-{name}"))?;
    let other = ArtefactId::new(format!("art-other-{name}"))?;
    let case = CaseId::new("case-bench")?;
    let actor = ActorId::new("acct-bench")?;
    let salt = |text: &str| Salt::from_bytes(*Sha256::of(text.as_bytes()).as_bytes());
    let manifest = Manifest::new(
        artefact.clone(),
        case.clone(),
        salt("manifest nonce"),
        sha256,
        bytes,
        Label::new("application/octet-stream")?,
        jiff::Timestamp::now(),
        actor.clone(),
    )
    .sign(signer.signing_key())?;

    // Salts are fixed here so that a run is repeatable; the gateway draws each from the OS.
    let case_opening = Opening { salt: salt("case"), text: case.to_string() };
    let site = "IT, web session";
    let record = |purpose: &str,
                  event: &dyn Fn(&mut Openings) -> CustodyEvent,
                  prior: Option<u64>|
     -> Result<(Vec<u8>, Vec<u8>), BoxError> {
        let mut openings = Openings::default();
        openings.insert("case", case_opening.clone());
        let purpose = openings.commit("purpose", salt(purpose), purpose);
        let event = event(&mut openings);
        let record = CustodyRecord {
            prior,
            ..CustodyRecord::new(case_opening.commitment("case"), actor.clone(), jiff::Timestamp::now(), purpose, event)
        };
        Ok((record.to_entry()?, openings.to_canonical()))
    };
    let site_commitment = |openings: &mut Openings| -> Commitment { openings.commit("site", salt(site), site) };
    let (other_record, _) = record(
        "unrelated work",
        &|openings| CustodyEvent::ArtefactAccessed {
            artefact: other.clone(),
            access: AccessKind::View,
            site: site_commitment(openings),
        },
        None,
    )?;
    let registered = CustodyEvent::ArtefactRegistered {
        artefact: artefact.clone(),
        manifest_sha256: manifest.sha256(),
        manifest_signature: manifest.signature(),
    };
    let exported = CustodyEvent::ArtefactExported {
        artefact: artefact.clone(),
        format: ExportFormat::CourtBundle,
        export_sha256: None,
    };
    type MakeEvent<'a> = &'a dyn Fn(&mut Openings) -> CustodyEvent;
    let events: [(&str, MakeEvent<'_>); 3] = [
        ("statement intake", &|_| registered.clone()),
        ("trial preparation", &|openings| CustodyEvent::ArtefactAccessed {
            artefact: artefact.clone(),
            access: AccessKind::Download,
            site: site_commitment(openings),
        }),
        ("disclosure to the court", &|_| exported.clone()),
    ];

    let (records, checkpoint) = runtime.block_on(async {
        let mut records = Vec::new();
        let mut prior = None;
        for (purpose, event) in events {
            for _ in 0..OTHER_RECORDS {
                log.append(other_record.clone()).await?;
            }
            let (entry, openings) = record(purpose, event, prior)?;
            let index = log.append(entry.clone()).await?;
            prior = Some(index);
            records.push((index, entry, openings));
        }
        let export_index = prior.ok_or("no records")?;
        let checkpoint = log.wait_for_size(export_index + 1).await?;
        let size = checkpoint.checkpoint.size;
        let mut bundled = Vec::new();
        for (index, entry, openings) in records {
            let path = log.storage().inclusion_proof(index, size).await?;
            let proof = TlogProof { extra: None, index, path, checkpoint_note: checkpoint.note().to_vec() };
            bundled.push(BundleRecord { index, entry, proof: proof.to_bytes(), openings });
        }
        Ok::<_, BoxError>((bundled, checkpoint))
    })?;

    let source = BundleSource {
        artefact,
        payload_sha256: sha256,
        payload_size: bytes,
        manifest: manifest.bytes().to_vec(),
        manifest_signature: manifest.signature(),
        records: records.clone(),
        checkpoint: checkpoint.note().to_vec(),
        vkey: signer.verifier().to_string(),
        bagged_at: jiff::Timestamp::now().to_string(),
        witnessing: None,
        timestamp: None,
        provider_chain: None,
    };
    let bundle = dir.join(format!("{name}.tar"));
    let started = Instant::now();
    let mut out = BufWriter::with_capacity(CHUNK, File::create(&bundle)?);
    BundleWriter::new(&source)?.write_to(&mut File::open(&payload)?, &mut out)?;
    out.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
    let bundle_bytes = fs::metadata(&bundle)?.len();
    println!("{name}: wrote the bundle with BundleWriter::write_to (fsync'd) in {:.1} s", secs(started));
    Ok(Built { payload, bundle, sha256, bytes, bundle_bytes, records: records.iter().map(|r| r.index).collect() })
}

/// One timed verification and the memory it took.
struct Run {
    elapsed: Duration,
    rss_before: Option<u64>,
    hwm: Option<u64>,
}

fn timed_verify(bundle: &Path, verifier: &LogVerifier, sha256: &Sha256) -> Result<Run, BoxError> {
    // Writing 5 to clear_refs resets VmHWM to the current resident set (Linux 4.0 and later).
    let reset = fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before = proc_status("VmRSS")?;
    let started = Instant::now();
    let report = verify(BufReader::new(File::open(bundle)?), std::slice::from_ref(verifier))?;
    let elapsed = started.elapsed();
    let hwm = if reset { proc_status("VmHWM")? } else { None };
    if !report.is_valid() || report.sha256 != Some(*sha256) {
        return Err(format!("the bundle did not verify:\n{report}").into());
    }
    Ok(Run { elapsed, rss_before, hwm })
}

/// In the child: verify one bundle, then print the resident set before and the peak during, in bytes.
fn child(bundle: &Path) -> Result<(), BoxError> {
    let key: LogVerifier = std::env::var(CHILD_KEY)?.parse()?;
    fs::write("/proc/self/clear_refs", "5")?;
    let before = proc_status("VmRSS")?.ok_or("no VmRSS")?;
    let report = verify(BufReader::new(File::open(bundle)?), std::slice::from_ref(&key))?;
    let peak = proc_status("VmHWM")?.ok_or("no VmHWM")?;
    if !report.is_valid() {
        return Err(format!("the bundle did not verify:\n{report}").into());
    }
    println!("{before} {peak}");
    Ok(())
}

/// Runs this benchmark again as a child that only verifies `bundle`, and reads back its memory figures.
fn child_peak(bundle: &Path, verifier: &LogVerifier) -> Result<(u64, u64), BoxError> {
    let output = Command::new(std::env::current_exe()?)
        .env(CHILD_BUNDLE, bundle)
        .env(CHILD_KEY, verifier.to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let figures: Vec<u64> = stdout.split_whitespace().filter_map(|word| word.parse().ok()).collect();
    match (output.status.success(), figures.as_slice()) {
        (true, [before, peak]) => Ok((*before, *peak)),
        _ => Err(format!("the verifying child failed: {stdout} {}", String::from_utf8_lossy(&output.stderr)).into()),
    }
}

/// `openssl dgst -sha256 <payload>`, timed from spawn to exit.
fn openssl_dgst(payload: &Path, sha256: &Sha256) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let output = Command::new("openssl").args(["dgst", "-sha256"]).arg(payload).output()?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let digest = stdout.trim().rsplit(' ').next().unwrap_or_default();
    if !output.status.success() || digest != sha256.to_hex() {
        return Err(
            format!("openssl dgst failed or disagrees: {stdout} {}", String::from_utf8_lossy(&output.stderr)).into()
        );
    }
    Ok(elapsed)
}

/// The same hash the verifier uses, over a whole file in reads of the verifier's size, with nothing else: the floor
/// for verify. The digest is checked when it is known.
fn sha2_loop(path: &Path, sha256: Option<&Sha256>, read_size: usize) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let mut file = File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; read_size];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let elapsed = started.elapsed();
    let digest = Sha256::from_bytes(hasher.finalize().into());
    if sha256.is_some_and(|expected| *expected != digest) {
        return Err("the sha2 loop disagrees with the payload's digest".into());
    }
    Ok(elapsed)
}

/// The best time of each measurement, and the highest memory figures.
#[derive(Default)]
struct Best {
    openssl: Duration,
    verify: Duration,
    sha2: Duration,
    raw_bundle: Duration,
    rss_before: Option<u64>,
    hwm: Option<u64>,
    /// A fresh process's resident set before verifying, and its peak.
    alone: Option<(u64, u64)>,
}

impl Best {
    fn add(&mut self, openssl: Duration, run: &Run, sha2: Duration, raw_bundle: Duration) {
        let min = |best: Duration, new: Duration| if best.is_zero() { new } else { best.min(new) };
        self.openssl = min(self.openssl, openssl);
        self.verify = min(self.verify, run.elapsed);
        self.sha2 = min(self.sha2, sha2);
        self.raw_bundle = min(self.raw_bundle, raw_bundle);
        if let (Some(before), Some(hwm)) = (run.rss_before, run.hwm)
            && self.growth().is_none_or(|growth| hwm.saturating_sub(before) > growth)
        {
            self.rss_before = Some(before);
            self.hwm = Some(hwm);
        }
    }

    fn growth(&self) -> Option<u64> {
        Some(self.hwm?.saturating_sub(self.rss_before?))
    }
}

/// A `kB` field of /proc/self/status, in bytes.
fn proc_status(field: &str) -> io::Result<Option<u64>> {
    let status = fs::read_to_string("/proc/self/status")?;
    Ok(status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024))
}

fn secs(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

fn rate_text(bytes: u64, elapsed: Duration) -> String {
    format!("{} ({:.3} s)", mb_per_s(rate(bytes, elapsed)), elapsed.as_secs_f64())
}

/// Whole units where the size is a multiple of one (`1 GiB`, `64 MiB`), unlike `custodia_benchkit::size_text`: the
/// summary's columns are sized for these.
fn size_text(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{:.0} KiB", bytes as f64 / KIB as f64)
    }
}
