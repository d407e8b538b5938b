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
//!   of us wrote, in one request, beside each of the gateway's runs (just before it in one run, just after it in the
//!   next, so that both meet garage as it is then: it slows as its disk fills over the benchmark; and with what
//!   waits in the page cache written back before each, so that neither pays for the other's writes; and after one
//!   upload not counted, since garage costs more per byte once it holds a few hundred megabytes than fresh). Goal:
//!   the gateway, which also hashes, signs and records custody, reaches at least 90% of the direct PUT. Each prints
//!   its CPU seconds per GiB by component (curl, the gateways, garage, PostgreSQL, read from `/proc`) and its share
//!   of the CPU-bound ceiling (what this machine's cores would allow if the CPU were the only limit): here the
//!   gateway, garage and curl share the cores.
//! - **Appends per second**: small uploads (1 KiB, each a custody record in the log and a row in the catalog)
//!   from 8 clients at once.
//!
//! - **Several gateways**: two and three gateway processes on the same bucket and database, appending to one log
//!   (each a data directory of its own, the log's key shared): one big upload to each at once (throughput is all
//!   of them together), and the 8 clients' small uploads spread over them. Goal: the append rate with more
//!   gateways no worse than with one. (On one machine the gateways share its cores, garage and PostgreSQL, so more
//!   gateways cannot add capacity here; what this shows is what coordinating them costs.)
//!
//! - **Servers on CPUs of their own**: the one-gateway ingest and its direct PUT once more, last, with garage and
//!   PostgreSQL pinned (`taskset`) to one half of the machine's cores and the gateway and curl to the other, as
//!   deployed (the store and the database on machines of their own). Same goal.
//!
//! Tuning, by environment variable: `SCALE_BENCH_BYTES` (the file, 268435456), `SCALE_BENCH_RUNS` (3),
//! `SCALE_BENCH_APPENDS` (small uploads per configuration, 400).
#![allow(clippy::print_stdout)]

mod gateway;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use custodia_benchkit::{
    BoxError, Headline, Table, add_to_summary, clock_ticks_per_second, env_or, mb_per_s, process_tree_cpu_seconds,
    size_text, write_pseudo_random,
};
use custodia_tests::garage::Garage;
use custodia_tests::postgres::TempPostgres;
use gateway::{CASE, Server, set_up, upload};

/// The gateway's ingest on garage, as a share of a direct PUT to garage.
const GOAL_SHARE_OF_DIRECT_PUT: f64 = 0.9;

struct Measured {
    ingest: f64,
    appends: f64,
    /// CPU seconds one big upload cost, by component (summed over the runs, divided by them).
    cpu: Cpu,
    /// The direct PUT to garage measured in the same runs, on a configuration with one gateway on garage: its best
    /// throughput, and its CPU seconds per upload.
    direct: Option<(f64, Cpu)>,
}

/// The peer: a file of `bytes` (fresh, from `seed`) PUT straight into garage's bucket by curl with its own AWS
/// Signature V4: how long it took, and the CPU seconds it cost.
fn direct_put(garage: &Garage, dir: &Path, bytes: u64, seed: u64) -> Result<(Duration, Cpu), BoxError> {
    let input = dir.join("direct.bin");
    write_pseudo_random(&input, bytes, seed)?;
    settle()?;
    let url = format!("{}/{}/direct/{seed}", garage.endpoint, garage.bucket);
    let cpu_before = cpu_now(&[], garage, None)?;
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
    let cpu = cpu_now(&[], garage, None)?.minus(&cpu_before);
    std::fs::remove_file(&input)?;
    if !output.status.success() {
        return Err(format!("direct PUT: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    println!("direct PUT: {}", mb_per_s(bytes as f64 / took.as_secs_f64()));
    Ok((took, cpu))
}

/// Writes back to disk what is waiting in the page cache (the input files just made, the last upload's objects),
/// so that a measured upload does not pay for what came before it.
fn settle() -> Result<(), BoxError> {
    if !Command::new("sync").status()?.success() {
        return Err("sync failed".into());
    }
    Ok(())
}

/// CPU seconds, by component: the clients (curl), the gateways, garage, PostgreSQL (with its backends).
#[derive(Default, Clone, Copy)]
struct Cpu {
    clients: f64,
    gateways: f64,
    garage: f64,
    postgres: f64,
}

impl Cpu {
    fn total(&self) -> f64 {
        self.clients + self.gateways + self.garage + self.postgres
    }

    fn minus(&self, before: &Cpu) -> Cpu {
        Cpu {
            clients: self.clients - before.clients,
            gateways: self.gateways - before.gateways,
            garage: self.garage - before.garage,
            postgres: self.postgres - before.postgres,
        }
    }

    fn plus(&self, other: &Cpu) -> Cpu {
        Cpu {
            clients: self.clients + other.clients,
            gateways: self.gateways + other.gateways,
            garage: self.garage + other.garage,
            postgres: self.postgres + other.postgres,
        }
    }

    fn divided(&self, by: f64) -> Cpu {
        Cpu {
            clients: self.clients / by,
            gateways: self.gateways / by,
            garage: self.garage / by,
            postgres: self.postgres / by,
        }
    }

    /// Per GiB of `bytes`, by component, in words.
    fn per_gib(&self, bytes: u64) -> String {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        format!(
            "{:.2} CPU s/GiB (curl {:.2}, gateways {:.2}, garage {:.2}, PostgreSQL {:.2})",
            self.total() / gib,
            self.clients / gib,
            self.gateways / gib,
            self.garage / gib,
            self.postgres / gib
        )
    }

    /// The fastest `bytes` could go on this machine's `cores` if the CPU were the only limit.
    fn ceiling(&self, bytes: u64, cores: f64) -> f64 {
        bytes as f64 * cores / self.total()
    }
}

/// The CPU seconds used so far: by this process's children that were waited for (the curl clients: the gateways
/// are waited for only at the end), by `gateways`, by garage and by PostgreSQL.
fn cpu_now(gateways: &[u32], garage: &Garage, postgres: Option<&TempPostgres>) -> Result<Cpu, BoxError> {
    let clients = custodia_benchkit::cpu_ticks("/proc/self/stat", 16)? as f64 / clock_ticks_per_second();
    Ok(Cpu {
        clients,
        gateways: gateways.iter().map(|pid| process_tree_cpu_seconds(*pid)).sum(),
        garage: garage.pid().map_or(0.0, process_tree_cpu_seconds),
        postgres: postgres.and_then(TempPostgres::pid).map_or(0.0, process_tree_cpu_seconds),
    })
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

    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
    let components = (&garage, None);
    let (embedded, _) = measure(
        "embedded (local directory, SQLite)",
        binary,
        dir.path(),
        &[],
        1,
        None,
        components,
        bytes,
        runs,
        appends,
    )?;
    let mut scaled_env = garage.gateway_env();
    scaled_env.push(("CUSTODIA_DATABASE_URL", postgres.url.clone()));
    let name = "garage and PostgreSQL, 1 gateway";
    // The peer, a direct PUT to the same garage, is measured in this configuration's runs, each beside the gateway's
    // upload (before it, then after it, in turn): garage grows slower as its disk fills over the benchmark, so both
    // see it as it is then.
    let components = (&garage, Some(&postgres));
    // garage costs about a third more per byte once it holds a few hundred megabytes than it does fresh (measured
    // here: 5.9 against 8.6 CPU s/GiB). One upload, not counted, takes it past that first, so that the first figure
    // of the peer (best counts) does not alone meet a fresh garage.
    println!("\n-- warming garage up (not counted) --");
    direct_put(&garage, dir.path(), bytes, 0x3a7e)?;
    let (scaled, shared) = measure(name, binary, dir.path(), &scaled_env, 1, None, components, bytes, runs, appends)?;
    let (direct, direct_cpu) = scaled.direct.ok_or("the direct PUT was not measured")?;
    let mut several = Vec::new();
    for gateways in [2, 3] {
        let name = format!("garage and PostgreSQL, {gateways} gateways");
        let env = &scaled_env;
        let (measured, _) =
            measure(&name, binary, dir.path(), env, gateways, Some(&shared), components, bytes, runs, appends)?;
        several.push((gateways, measured));
    }
    // Deployed, the store and the database run on machines of their own, and the gateway does not take its CPU
    // from them. The same comparison once more, last (this process, and so the gateway and curl it starts from now
    // on, pinned to one half of the cores; garage and PostgreSQL, with every process and thread they start, to the
    // other): the direct PUT beside each of the gateway's uploads, as before.
    let separated = match cores as usize {
        0 | 1 => None,
        all => {
            let half = all / 2;
            let (near, far) = (format!("0-{}", half - 1), format!("{half}-{}", all - 1));
            custodia_benchkit::pin_process_tree(std::process::id(), &near)?;
            for server in [garage.pid(), postgres.pid()].into_iter().flatten() {
                custodia_benchkit::pin_process_tree(server, &far)?;
            }
            let name = format!("garage and PostgreSQL on CPUs {far}, 1 gateway and curl on CPUs {near}");
            let (measured, _) =
                measure(&name, binary, dir.path(), &scaled_env, 1, Some(&shared), components, bytes, runs, appends)?;
            let (direct, _) = measured.direct.ok_or("the direct PUT was not measured")?;
            Some((measured.ingest, direct, far, near))
        }
    };

    let mut table = Table::new(["measurement", "gateway", "peer or default (same run)", "ratio"]);
    let share = scaled.ingest / direct;
    table.row([
        format!("ingest, {} file, garage + PostgreSQL", size_text(bytes)),
        mb_per_s(scaled.ingest),
        format!("direct PUT to garage {}", mb_per_s(direct)),
        format!("{share:.2}x (goal {GOAL_SHARE_OF_DIRECT_PUT:.2}x)"),
    ]);
    // What this machine's cores allow each, if the CPU were the only limit (the gateway, garage and curl share
    // them here; deployed, the store has machines of its own).
    let (direct_ceiling, scaled_ceiling) = (direct_cpu.ceiling(bytes, cores), scaled.cpu.ceiling(bytes, cores));
    table.row([
        format!("ingest as a share of what {cores:.0} cores allow it (CPU-bound ceiling)"),
        format!("{:.2}x of {}", scaled.ingest / scaled_ceiling, mb_per_s(scaled_ceiling)),
        format!("direct PUT {:.2}x of {}", direct / direct_ceiling, mb_per_s(direct_ceiling)),
        format!("ceilings {:.2}x", scaled_ceiling / direct_ceiling),
    ]);
    if let Some((ingest, direct, far, near)) = &separated {
        table.row([
            format!("ingest, garage + PostgreSQL on CPUs {far} of their own, gateway and curl on CPUs {near}"),
            mb_per_s(*ingest),
            format!("direct PUT to garage, curl on CPUs {near}, {}", mb_per_s(*direct)),
            format!("{:.2}x (goal {GOAL_SHARE_OF_DIRECT_PUT:.2}x)", ingest / direct),
        ]);
    }
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
    if let Some((ingest, direct, _, _)) = &separated {
        headlines.push(Headline {
            measurement: "ingest on garage + PostgreSQL, servers on CPUs of their own".to_owned(),
            figure: mb_per_s(*ingest),
            against: format!("direct PUT {}", mb_per_s(*direct)),
            ratio: format!("{:.2}x", ingest / direct),
        });
    }
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
    (garage, postgres): (&Garage, Option<&TempPostgres>),
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
    let mut servers = vec![Server::start_on(binary, &first_data_dir, gateway::free_port(), &env)?];
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
        servers.push(Server::start_on(binary, &data, gateway::free_port(), &env)?);
    }

    let mut best = Duration::MAX;
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let mut cpu = Cpu::default();
    // With one gateway on garage, the peer goes first in each run.
    let peer = gateways == 1 && postgres.is_some();
    let (mut direct_best, mut direct_cpu) = (Duration::MAX, Cpu::default());
    // Every file is new to garage (a file of its own for every configuration, run, gateway and the peer): garage
    // stores a block it holds already only once, so an upload of the same bytes again would cost it next to nothing.
    let configuration = name.bytes().fold(0u64, |hash, byte| hash.wrapping_mul(31).wrapping_add(u64::from(byte)));
    for run in 0..runs {
        // The peer goes first in every other run, the gateway in the others: garage grows slower as it fills, so
        // neither always meets it fuller.
        let mut direct_run = || -> Result<(), BoxError> {
            let seed = configuration.wrapping_add(0xd1ec7 + run as u64);
            let (took, cpu) = direct_put(garage, dir, bytes, seed)?;
            direct_best = direct_best.min(took);
            direct_cpu = direct_cpu.plus(&cpu);
            Ok(())
        };
        if peer && run % 2 == 0 {
            direct_run()?;
        }
        let mut files = Vec::new();
        for (n, _) in servers.iter().enumerate() {
            let file = dir.join(format!("{slug}-{n}.bin"));
            // (The gateway would also only hash a file it stored already.)
            let seed = configuration.wrapping_add((run * 10 + n) as u64);
            files.push((file.clone(), write_pseudo_random(&file, bytes, seed)?));
        }
        settle()?;
        let cpu_before = cpu_now(&pids, garage, postgres)?;
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
        cpu = cpu.plus(&cpu_now(&pids, garage, postgres)?.minus(&cpu_before));
        let wall = walls.into_iter().max().unwrap_or_default();
        println!("upload {}: {}", run + 1, mb_per_s((bytes * gateways as u64) as f64 / wall.as_secs_f64()));
        best = best.min(wall);
        for (file, _) in files {
            std::fs::remove_file(file)?;
        }
        if peer && run % 2 == 1 {
            direct_run()?;
        }
    }
    let ingest = (bytes * gateways as u64) as f64 / best.as_secs_f64();
    let cpu = cpu.divided((runs * gateways) as f64);
    println!("per upload: {}", cpu.per_gib(bytes));
    let direct = peer.then(|| {
        let direct_cpu = direct_cpu.divided(runs as f64);
        println!("direct PUT, per upload: {}", direct_cpu.per_gib(bytes));
        (bytes as f64 / direct_best.as_secs_f64(), direct_cpu)
    });

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
    Ok((Measured { ingest, appends, cpu, direct }, Shared { first_data_dir, token }))
}
