//! What sharing one custody log costs: appends per second through the log's coordination on PostgreSQL
//! (`Catalog::log_coordination`, tiles and checkpoints in a garage bucket) with one, two and three appending
//! processes, beside the same log sequenced by one process alone (`Log::open`, no database: the peer doing the same
//! job without coordinating), in the same run. Each "process" is a log handle with a database pool and an
//! integrator of its own, as a gateway has; the same appenders in all whatever the number of processes, spread over
//! them, each appending a 600-byte entry (about a custody record) and waiting until a published checkpoint covers
//! it, then appending the next. Two loads:
//! - **capacity** (1024 appenders unless `COORDINATION_BENCH_CAPACITY_APPENDERS` says): what the log can take, its
//!   append rate. Goal: no worse with three processes than with one.
//! - **light** (32 unless `COORDINATION_BENCH_LIGHT_APPENDERS` says): how long an append waits for a published
//!   checkpoint when the log has time to spare (32 appenders / the rate).
//!
//! Every measurement has a garage and a PostgreSQL of its own, started for it, and a new log: garage grows slower as
//! it holds more, so that in a shared garage whichever arrangement came later in the run paid for what the earlier
//! ones wrote (measured the other way round, the order alone moved the three-process ratio at capacity from 0.81x
//! to 1.05x).
//!
//! `cargo bench -p custodia-catalog --bench coordination` (garage from `scripts/garage.sh`, named by
//! `CUSTODIA_GARAGE`; PostgreSQL 15 from Debian). `COORDINATION_BENCH_SECONDS` (the length of each measurement,
//! 10) and `COORDINATION_BENCH_ROUNDS` (how many times each is measured, in a different order each round, 4; the
//! figures are the medians).
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use custodia_benchkit::{
    BoxError, Headline, Table, add_to_summary, env_or, process_cpu_seconds, process_tree_cpu_seconds,
};
use custodia_catalog::Catalog;
use custodia_ledger::{Log, LogOptions, LogSigner};
use custodia_tests::garage::Garage;
use custodia_tests::postgres::TempPostgres;
use object_store::path::Path as StorePath;

/// How many arrangements are measured: one process alone, then one, two and three coordinated processes.
const ARRANGEMENTS: usize = 4;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let seconds: u64 = env_or("COORDINATION_BENCH_SECONDS", 10)?;
    let loads = [
        Load { name: "capacity", appenders: env_or("COORDINATION_BENCH_CAPACITY_APPENDERS", 1024)? },
        Load { name: "light", appenders: env_or("COORDINATION_BENCH_LIGHT_APPENDERS", 32)? },
    ];
    let rounds: usize = env_or("COORDINATION_BENCH_ROUNDS", 4)?;
    let duration = Duration::from_secs(seconds);
    let signer = LogSigner::generate("custodia.bench/log")?;
    let key = signer.expose_secret().to_owned();
    println!("custodia log coordination benchmark: {seconds} s each, fresh servers for each measurement");

    let mut table = Table::new(["load", "measurement", "appends/s", "mean wait", "against (same run)", "ratio"]);
    let mut headlines = Vec::new();
    for load in &loads {
        // Each arrangement is measured once a round, and in each round they go in a different order (each comes
        // first, second, third and last in four rounds): a machine busier in one part of the run than in another
        // then weighs on all of them alike. Each figure is the median of its rounds.
        let mut rates: [Vec<f64>; ARRANGEMENTS] = Default::default();
        for round in 0..rounds {
            for position in 0..ARRANGEMENTS {
                let processes = (position + ARRANGEMENTS - round % ARRANGEMENTS) % ARRANGEMENTS;
                let (rate, cpu) = measure_fresh(processes, load.appenders, duration, &key).await?;
                let arrangement = if processes == 0 {
                    "one process alone (no database)".to_owned()
                } else {
                    format!("{processes} coordinated process(es)")
                };
                println!("{} load, round {}: {arrangement}: {rate:.0} appends/s; {cpu}", load.name, round + 1);
                rates[processes].push(rate);
            }
        }
        let [alone, one, rest @ ..] = rates.map(median);
        let wait = |rate: f64| format!("{:.1} ms", load.appenders as f64 / rate * 1e3);
        let name = format!("{} ({} appenders)", load.name, load.appenders);
        table.row([
            name.clone(),
            "1 process on one log, PostgreSQL + garage".to_owned(),
            format!("{one:.0}"),
            wait(one),
            format!("one process alone, no database {alone:.0}/s"),
            format!("{:.2}x", one / alone),
        ]);
        for (at, rate) in rest.iter().enumerate() {
            let processes = at + 2;
            let goal = if load.name == "capacity" { " (goal 1.00x or more)" } else { "" };
            table.row([
                name.clone(),
                format!("{processes} processes on one log, PostgreSQL + garage"),
                format!("{rate:.0}"),
                wait(*rate),
                format!("1 process {one:.0}/s"),
                format!("{:.2}x{goal}", rate / one),
            ]);
        }
        headlines.extend([one].iter().chain(&rest).enumerate().map(|(at, rate)| Headline {
            measurement: format!("log appends/s, {} load, {} coordinated process(es)", load.name, at + 1),
            figure: format!("{rate:.0}/s"),
            against: format!("alone {alone:.0}/s"),
            ratio: format!("{:.2}x", rate / alone),
        }));
    }
    table.print();
    add_to_summary("coordination", &headlines)?;
    Ok(())
}

/// A number of appenders, each appending one entry at a time.
struct Load {
    name: &'static str,
    appenders: usize,
}

/// Measures `processes` coordinated processes (0: one process alone, without a database) on a garage and a
/// PostgreSQL started for this measurement, and a new log: appends per second, and what each cost in CPU time.
async fn measure_fresh(
    processes: usize,
    appenders: usize,
    duration: Duration,
    key: &str,
) -> Result<(f64, CpuPerAppend), BoxError> {
    let servers = Servers { garage: Garage::start(), postgres: TempPostgres::start() };
    let mut logs = Vec::new();
    if processes == 0 {
        let signer = LogSigner::from_skey(key)?;
        logs.push(
            Log::open(servers.garage.object_store(), StorePath::from("alone"), signer, LogOptions::default()).await?,
        );
    }
    for _ in 0..processes {
        let catalog = Catalog::connect(&servers.postgres.url).await?;
        let signer = LogSigner::from_skey(key)?;
        let log = Log::open_coordinated(
            servers.garage.object_store(),
            StorePath::from("shared"),
            signer,
            LogOptions::default(),
            catalog.log_coordination(),
            None,
        )
        .await?;
        logs.push(log);
    }
    let measured = measure(&logs, appenders, duration, &servers).await?;
    for log in logs {
        log.close().await;
    }
    Ok(measured)
}

/// The middle of `figures` (the mean of the middle two for an even count).
fn median(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    let middle = figures.len() / 2;
    if figures.len().is_multiple_of(2) { (figures[middle - 1] + figures[middle]) / 2.0 } else { figures[middle] }
}

/// The servers the logs use, whose CPU time is counted beside the appending processes'.
struct Servers {
    postgres: TempPostgres,
    garage: Garage,
}

/// CPU seconds used so far: by the appending processes (this one), PostgreSQL (with its backends) and garage.
fn cpu_now(servers: &Servers) -> Result<[f64; 3], BoxError> {
    let tree = |pid: Option<u32>| pid.map_or(0.0, process_tree_cpu_seconds);
    Ok([process_cpu_seconds()?, tree(servers.postgres.pid()), tree(servers.garage.pid())])
}

/// What an acknowledged append cost in CPU time, by whom.
struct CpuPerAppend([f64; 3]);

impl std::fmt::Display for CpuPerAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [appenders, postgres, garage] = self.0.map(|seconds| seconds * 1e6);
        write!(
            f,
            "CPU µs per append: appending processes {appenders:.0}, PostgreSQL {postgres:.0}, garage {garage:.0}, \
             total {:.0}",
            appenders + postgres + garage
        )
    }
}

/// Appends from `appenders` tasks spread over `logs` for `duration`: acknowledged appends per second, and what each
/// cost in CPU time.
async fn measure(
    logs: &[Log],
    appenders: usize,
    duration: Duration,
    servers: &Servers,
) -> Result<(f64, CpuPerAppend), BoxError> {
    let acknowledged = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_now(servers)?;
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..appenders)
        .map(|appender| {
            let (log, acknowledged) = (logs[appender % logs.len()].clone(), acknowledged.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let entry = format!("{{\"appender\":{appender},\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(560));
                    log.append(entry.into_bytes()).await?;
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                Ok::<_, custodia_ledger::LogError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_now(servers)?;
    let count = acknowledged.load(Ordering::Relaxed);
    let per_append = std::array::from_fn(|at| (cpu_after[at] - cpu_before[at]) / count.max(1) as f64);
    Ok((count as f64 / elapsed, CpuPerAppend(per_append)))
}
