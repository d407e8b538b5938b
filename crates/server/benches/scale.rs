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
//! - **Several gateways**: two and three gateway processes on the same bucket and database, appending to one log
//!   (each a data directory of its own, the log's key shared): one big upload to each at once (throughput is all
//!   of them together), and the 8 clients' small uploads spread over them. Goal: the append rate with more
//!   gateways no worse than with one. (On one machine the gateways share its cores, garage and PostgreSQL, so more
//!   gateways cannot add capacity here; what this shows is what coordinating them costs.)
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

    let (embedded, _) =
        measure("embedded (local directory, SQLite)", binary, dir.path(), &[], 1, None, bytes, runs, appends)?;
    let mut scaled_env = garage.gateway_env();
    scaled_env.push(("CUSTODIA_DATABASE_URL", postgres.url.clone()));
    let name = "garage and PostgreSQL, 1 gateway";
    let (scaled, shared) = measure(name, binary, dir.path(), &scaled_env, 1, None, bytes, runs, appends)?;
    let mut several = Vec::new();
    for gateways in [2, 3] {
        let name = format!("garage and PostgreSQL, {gateways} gateways");
        let env = &scaled_env;
        let (measured, _) = measure(&name, binary, dir.path(), env, gateways, Some(&shared), bytes, runs, appends)?;
        several.push((gateways, measured));
    }

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
    for (gateways, measured) in &several {
        table.row([
            format!("ingest, {gateways} gateways at once (one file each), garage + PostgreSQL"),
            mb_per_s(measured.ingest),
            format!("1 gateway {}", mb_per_s(scaled.ingest)),
            format!("{:.2}x", measured.ingest / scaled.ingest),
        ]);
        table.row([
            format!("appends per second, {gateways} gateways (8 clients spread over them)"),
            format!("{:.0}/s", measured.appends),
            format!("1 gateway {:.0}/s", scaled.appends),
            format!("{:.2}x (goal 1.00x or more)", measured.appends / scaled.appends),
        ]);
    }
    table.print();
    let mut headlines = vec![
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
    ];
    for (gateways, measured) in &several {
        headlines.push(Headline {
            measurement: format!("appends/s, {gateways} gateways on one log"),
            figure: format!("{:.0}/s", measured.appends),
            against: format!("1 gateway {:.0}/s", scaled.appends),
            ratio: format!("{:.2}x", measured.appends / scaled.appends),
        });
    }
    add_to_summary("scale", &headlines)?;
    drop(garage);
    drop(postgres);
    Ok(())
}

/// Where a configuration's gateways keep what they share: the first gateway's data directory (its key and first
/// administrator) and the token the clients use.
struct Shared {
    first_data_dir: std::path::PathBuf,
    token: String,
}

/// One configuration: `gateways` fresh processes with `env` (the first on `shared`'s data directory, if given; the
/// others on directories of their own with its log key), then the big file `runs` times, one upload per gateway at
/// once (best counts; throughput is all of them together), then `appends` small uploads from 8 clients at once,
/// spread over the gateways.
#[allow(clippy::too_many_arguments)]
fn measure(
    name: &str,
    binary: &Path,
    dir: &Path,
    env: &[(&'static str, String)],
    gateways: usize,
    shared: Option<&Shared>,
    bytes: u64,
    runs: usize,
    appends: usize,
) -> Result<(Measured, Shared), BoxError> {
    println!("\n-- {name} --");
    let slug: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let mut env: Vec<(&str, String)> = env.iter().map(|(key, value)| (*key, value.clone())).collect();
    // One account plays eight clients: its budgets (2 uploads at once, 30 a minute) are lifted alike for every
    // configuration.
    env.extend([
        ("CUSTODIA_DIRECT_UPLOADS_PER_ACCOUNT", "16".to_owned()),
        ("CUSTODIA_UPLOADS_PER_MINUTE", "1000000".to_owned()),
        ("CUSTODIA_CUSTODY_RECORDS_PER_MINUTE", "1000000".to_owned()),
    ]);
    let first_data_dir = shared.map_or_else(|| dir.join(&slug), |shared| shared.first_data_dir.clone());
    let mut servers = vec![Server::start_on(binary, &first_data_dir, gateway::free_port()?, &env)?];
    let token = match shared {
        Some(shared) => shared.token.clone(),
        None => set_up(&servers[0], dir)?,
    };
    let key = std::fs::read(first_data_dir.join("keys/gateway.key"))?;
    for other in 1..gateways {
        let data = dir.join(format!("{slug}-{other}"));
        std::fs::create_dir_all(data.join("keys"))?;
        let key_file = data.join("keys/gateway.key");
        std::fs::write(&key_file, &key)?;
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        servers.push(Server::start_on(binary, &data, gateway::free_port()?, &env)?);
    }

    let mut best = Duration::MAX;
    for run in 0..runs {
        let mut files = Vec::new();
        for (n, _) in servers.iter().enumerate() {
            let file = dir.join(format!("{slug}-{n}.bin"));
            let seed = 0x5ca1e + (run * 10 + n) as u64 + name.len() as u64 * 1000;
            files.push((file.clone(), write_pseudo_random(&file, bytes, seed)?));
        }
        let walls: Vec<Duration> = std::thread::scope(|scope| {
            let uploads: Vec<_> = servers
                .iter()
                .zip(&files)
                .enumerate()
                .map(|(n, (server, (file, digest)))| {
                    let (token, slug) = (&token, &slug);
                    scope.spawn(move || -> Result<Duration, String> {
                        let replies = dir.join(format!("{slug}-replies-{n}"));
                        std::fs::create_dir_all(&replies).map_err(|e| e.to_string())?;
                        let (measured, _) =
                            upload(server, &replies, file, digest, bytes, token).map_err(|e| e.to_string())?;
                        Ok(measured.wall)
                    })
                })
                .collect();
            uploads
                .into_iter()
                .map(|upload| upload.join().map_err(|_| "an upload panicked".to_owned())?)
                .collect::<Result<Vec<Duration>, String>>()
        })?;
        let wall = walls.into_iter().max().unwrap_or_default();
        println!("upload {}: {}", run + 1, mb_per_s((bytes * gateways as u64) as f64 / wall.as_secs_f64()));
        best = best.min(wall);
        for (file, _) in files {
            std::fs::remove_file(file)?;
        }
    }
    let ingest = (bytes * gateways as u64) as f64 / best.as_secs_f64();

    let small = dir.join("small");
    std::fs::create_dir_all(&small)?;
    let per_client = appends / 8;
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let base = servers[client % servers.len()].base.clone();
            let token = token.clone();
            let small = small.join(format!("{slug}-{client}"));
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
    for server in &mut servers {
        server.stop();
    }
    Ok((Measured { ingest, appends }, Shared { first_data_dir, token }))
}
