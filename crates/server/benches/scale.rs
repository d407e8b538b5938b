//! What the gateway's scale-out backends cost: ingest throughput and appends per second of one gateway on garage
//! (S3) and PostgreSQL, beside the same gateway on its embedded default (a local directory and SQLite), in the
//! same run, with a direct PUT of the same file to the same garage as the peer.
//!
//! `cargo bench -p custodia-server --bench scale` starts a garage (tests/src/garage.rs; built once by
//! `scripts/garage.sh`) and a PostgreSQL (Debian's binaries) on loopback, then, for each configuration, the
//! release `custodia` binary on a fresh data directory:
//!
//! - **Ingest**: a pseudo-random file streamed as a raw body with its SHA-256 stated (`curl -T`), as a provider
//!   would, best of several runs; beside it, the same file PUT straight into the same bucket by curl with its own
//!   AWS Signature V4 (`--aws-sigv4`, the payload unsigned so that curl does not read it twice), an S3 client none
//!   of us wrote, in one request. Goal: the gateway, which also hashes, signs
//!   and records custody, reaches at least 90% of the direct PUT.
//! - **Appends per second**: small uploads (1 KiB, each a custody record in the log and a row in the catalog)
//!   from 8 clients at once.
//!
//! Several gateways on one bucket are not measured: the log has one sequencer per store until it is sequenced
//! through PostgreSQL, so a second gateway would corrupt it.
//!
//! Tuning, by environment variable: `SCALE_BENCH_BYTES` (the file, 268435456), `SCALE_BENCH_RUNS` (3),
//! `SCALE_BENCH_APPENDS` (small uploads per configuration, 400).
#![allow(clippy::print_stdout)]

mod gateway;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use custodia_benchkit::{BoxError, Headline, Table, add_to_summary, env_or, mb_per_s, size_text, write_pseudo_random};
use custodia_tests::garage::Garage;
use custodia_tests::postgres::TempPostgres;
use gateway::{CASE, Server, set_up, upload};

/// The gateway's ingest on garage, as a share of a direct PUT to garage.
const GOAL_SHARE_OF_DIRECT_PUT: f64 = 0.9;

struct Measured {
    ingest: f64,
    appends: f64,
}

fn main() -> Result<(), BoxError> {
    let bytes: u64 = env_or("SCALE_BENCH_BYTES", 256 << 20)?;
    let runs: usize = env_or("SCALE_BENCH_RUNS", 3)?.max(1);
    let appends: usize = env_or("SCALE_BENCH_APPENDS", 400)?.max(8);
    let binary = Path::new(env!("CARGO_BIN_EXE_custodia"));
    let dir = tempfile::Builder::new().prefix("scale-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!("custodia scale-out benchmark: {} files, {runs} runs, {appends} small uploads", size_text(bytes));
    let garage = Garage::start();
    let postgres = TempPostgres::start();
    let input = dir.path().join("evidence.bin");

    // The peer: the same file PUT straight into the bucket, best of the runs.
    let mut direct = Duration::MAX;
    for run in 0..runs {
        write_pseudo_random(&input, bytes, 0xd1ec7 + run as u64)?;
        let url = format!("{}/{}/direct/{run}", garage.endpoint, garage.bucket);
        let started = Instant::now();
        let output = Command::new("curl")
            .args(["-sS", "-f", "-T"])
            .arg(&input)
            .args(["--aws-sigv4", &format!("aws:amz:{}:s3", garage.region)])
            .args(["--user", &format!("{}:{}", garage.key_id, garage.secret)])
            // garage wants the header; curl then signs it, and sends the body unhashed, as fast as it can.
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", &url])
            .output()?;
        let took = started.elapsed();
        if !output.status.success() {
            return Err(format!("direct PUT: {}", String::from_utf8_lossy(&output.stderr)).into());
        }
        println!("direct PUT {}: {}", run + 1, mb_per_s(bytes as f64 / took.as_secs_f64()));
        direct = direct.min(took);
    }
    let direct = bytes as f64 / direct.as_secs_f64();

    let embedded =
        measure("embedded (local directory, SQLite)", binary, dir.path(), &[], &input, bytes, runs, appends)?;
    let mut scaled_env = garage.gateway_env();
    scaled_env.push(("CUSTODIA_DATABASE_URL", postgres.url.clone()));
    let scaled = measure("garage and PostgreSQL", binary, dir.path(), &scaled_env, &input, bytes, runs, appends)?;

    let mut table = Table::new(["measurement", "gateway", "peer or default (same run)", "ratio"]);
    let share = scaled.ingest / direct;
    table.row([
        format!("ingest, {} file, garage + PostgreSQL", size_text(bytes)),
        mb_per_s(scaled.ingest),
        format!("direct PUT to garage {}", mb_per_s(direct)),
        format!("{share:.2}x (goal {GOAL_SHARE_OF_DIRECT_PUT:.2}x)"),
    ]);
    table.row([
        format!("ingest, {} file, embedded default", size_text(bytes)),
        mb_per_s(embedded.ingest),
        format!("garage + PostgreSQL {}", mb_per_s(scaled.ingest)),
        format!("{:.2}x", scaled.ingest / embedded.ingest),
    ]);
    table.row([
        "appends per second (1 KiB uploads, 8 clients), garage + PostgreSQL".to_owned(),
        format!("{:.0}/s", scaled.appends),
        format!("embedded default {:.0}/s", embedded.appends),
        format!("{:.2}x", scaled.appends / embedded.appends),
    ]);
    table.print();
    add_to_summary(
        "scale",
        &[
            Headline {
                measurement: "ingest on garage + PostgreSQL".to_owned(),
                figure: mb_per_s(scaled.ingest),
                against: format!("direct PUT {}", mb_per_s(direct)),
                ratio: format!("{share:.2}x"),
            },
            Headline {
                measurement: "appends/s on garage + PostgreSQL".to_owned(),
                figure: format!("{:.0}/s", scaled.appends),
                against: format!("embedded {:.0}/s", embedded.appends),
                ratio: format!("{:.2}x", scaled.appends / embedded.appends),
            },
        ],
    )?;
    drop(garage);
    drop(postgres);
    Ok(())
}

/// One configuration: a fresh gateway with `env`, the big file `runs` times (best counts), then `appends` small
/// uploads from 8 clients at once.
#[allow(clippy::too_many_arguments)]
fn measure(
    name: &str,
    binary: &Path,
    dir: &Path,
    env: &[(&'static str, String)],
    input: &Path,
    bytes: u64,
    runs: usize,
    appends: usize,
) -> Result<Measured, BoxError> {
    println!("\n-- {name} --");
    let data = dir.join(name.split_whitespace().next().unwrap_or("gateway"));
    let mut env: Vec<(&str, String)> = env.iter().map(|(key, value)| (*key, value.clone())).collect();
    // One account plays eight clients: its budgets (2 uploads at once, 30 a minute) are lifted alike for both
    // configurations.
    env.extend([
        ("CUSTODIA_DIRECT_UPLOADS_PER_ACCOUNT", "16".to_owned()),
        ("CUSTODIA_UPLOADS_PER_MINUTE", "1000000".to_owned()),
        ("CUSTODIA_CUSTODY_RECORDS_PER_MINUTE", "1000000".to_owned()),
    ]);
    let mut server = Server::start_on(binary, &data, gateway::free_port()?, &env)?;
    let token = set_up(&server, dir)?;
    let mut best = Duration::MAX;
    for run in 0..runs {
        let digest = write_pseudo_random(input, bytes, 0x5ca1e + run as u64 + name.len() as u64 * 1000)?;
        let (measured, _) = upload(&server, dir, input, &digest, bytes, &token)?;
        println!("upload {}: {}", run + 1, mb_per_s(bytes as f64 / measured.wall.as_secs_f64()));
        best = best.min(measured.wall);
    }
    let ingest = bytes as f64 / best.as_secs_f64();

    let small = dir.join("small");
    std::fs::create_dir_all(&small)?;
    let per_client = appends / 8;
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let base = server.base.clone();
            let token = token.clone();
            let small = small.join(format!("{}-{client}", name.len()));
            std::thread::spawn(move || -> Result<(), String> {
                for n in 0..per_client {
                    let body = format!("{client}-{n}-{}", "x".repeat(1000));
                    std::fs::write(&small, &body).map_err(|e| e.to_string())?;
                    let url = format!("{base}/api/v1/cases/{CASE}/artefacts?purpose=append%20benchmark");
                    let output = Command::new("curl")
                        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-T"])
                        .arg(&small)
                        .args(["-H", &format!("Authorization: Bearer {token}"), "-H", "Expect:", &url])
                        .output()
                        .map_err(|e| e.to_string())?;
                    let status = String::from_utf8_lossy(&output.stdout);
                    if status.trim() != "201" {
                        return Err(format!("a small upload answered {status}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.join().map_err(|_| "a client panicked")??;
    }
    let appends = (per_client * 8) as f64 / started.elapsed().as_secs_f64();
    println!("ingest {}; {appends:.0} appends/s", mb_per_s(ingest));
    server.stop();
    Ok(Measured { ingest, appends })
}
