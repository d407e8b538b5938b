//! What sharing one custody log costs: appends per second through the log's coordination on PostgreSQL
//! (`Catalog::log_coordination`, tiles and checkpoints in a garage bucket) with one, two and three appending
//! processes, beside the same log sequenced by one process alone (`Log::open`, no database: the peer doing the same
//! job without coordinating), in the same run. Each "process" is a log handle with a database pool and an
//! integrator of its own, as a gateway has; the same appenders in all whatever the number of processes (32 unless
//! `COORDINATION_BENCH_APPENDERS` says), spread over them, each appending a 600-byte entry (about a custody record)
//! and waiting until a published checkpoint covers it, then appending the next. With few appenders the figure is
//! how long an append waits (32 appenders / the time each append takes); with many, what the log can take.
//!
//! Goal: no worse with three processes than with one. `cargo bench -p custodia-catalog --bench coordination`
//! (garage from `scripts/garage.sh`, named by `CUSTODIA_GARAGE`; PostgreSQL 15 from Debian). `COORDINATION_BENCH_SECONDS`
//! (the length of each measurement, 10) and
//! `COORDINATION_BENCH_ROUNDS` (how many times each is measured, in a different order each round, 4; the figures
//! are the medians).
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

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let seconds: u64 = env_or("COORDINATION_BENCH_SECONDS", 10)?;
    let appenders: usize = env_or("COORDINATION_BENCH_APPENDERS", 32)?;
    let duration = Duration::from_secs(seconds);
    let garage = Garage::start();
    let postgres = TempPostgres::start();
    let signer = LogSigner::generate("custodia.bench/log")?;
    let key = signer.expose_secret().to_owned();
    println!("custodia log coordination benchmark: {appenders} appenders in all, {seconds} s each");

    let rounds: usize = env_or("COORDINATION_BENCH_ROUNDS", 4)?;
    let servers = Servers { postgres: &postgres, garage: &garage };
    let alone = Log::open(garage.object_store(), StorePath::from("alone"), signer, LogOptions::default()).await?;
    // Every arrangement is measured once a round, and in each round they go in a different order (each comes first,
    // second, third and last in four rounds): garage grows slower as it holds more, and a machine busier in one part
    // of the run than in another then weighs on all of them alike. Each figure is the median of its rounds.
    let mut alone_rates = Vec::new();
    let mut coordinated: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        for position in 0..4 {
            let processes = (position + 4 - round % 4) % 4;
            if processes == 0 {
                let (rate, cpu) = measure(std::slice::from_ref(&alone), appenders, duration, &servers).await?;
                println!("round {}: one process alone (no database): {rate:.0} appends/s; {cpu}", round + 1);
                alone_rates.push(rate);
                continue;
            }
            let mut logs = Vec::new();
            for _ in 0..processes {
                let catalog = Catalog::connect(&postgres.url).await?;
                let signer = LogSigner::from_skey(&key)?;
                let log = Log::open_coordinated(
                    garage.object_store(),
                    StorePath::from("shared"),
                    signer,
                    LogOptions::default(),
                    catalog.log_coordination(),
                    None,
                )
                .await?;
                logs.push(log);
            }
            let (rate, cpu) = measure(&logs, appenders, duration, &servers).await?;
            println!("round {}: {processes} coordinated process(es): {rate:.0} appends/s; {cpu}", round + 1);
            coordinated[processes - 1].push(rate);
            for log in logs {
                log.close().await;
            }
        }
    }
    alone.close().await;
    let alone_rate = median(alone_rates);
    let rates: Vec<(usize, f64)> =
        coordinated.into_iter().enumerate().map(|(at, rates)| (at + 1, median(rates))).collect();

    let one = rates[0].1;
    let mut table = Table::new(["measurement", "appends/s", "against (same run)", "ratio"]);
    for (processes, rate) in &rates {
        table.row([
            format!("{processes} process(es) on one log, PostgreSQL + garage"),
            format!("{rate:.0}"),
            if *processes == 1 {
                format!("one process alone, no database {alone_rate:.0}/s")
            } else {
                format!("1 process {one:.0}/s")
            },
            if *processes == 1 {
                format!("{:.2}x", rate / alone_rate)
            } else {
                format!("{:.2}x (goal 1.00x or more)", rate / one)
            },
        ]);
    }
    table.print();
    let headlines: Vec<Headline> = rates
        .iter()
        .map(|(processes, rate)| Headline {
            measurement: format!("log appends/s, {processes} coordinated process(es)"),
            figure: format!("{rate:.0}/s"),
            against: format!("alone {alone_rate:.0}/s"),
            ratio: format!("{:.2}x", rate / alone_rate),
        })
        .collect();
    add_to_summary("coordination", &headlines)?;
    Ok(())
}

/// The middle of `figures` (the mean of the middle two for an even count).
fn median(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    let middle = figures.len() / 2;
    if figures.len().is_multiple_of(2) { (figures[middle - 1] + figures[middle]) / 2.0 } else { figures[middle] }
}

/// The servers the logs use, whose CPU time is counted beside the appending processes'.
struct Servers<'a> {
    postgres: &'a TempPostgres,
    garage: &'a Garage,
}

/// CPU seconds used so far: by the appending processes (this one), PostgreSQL (with its backends) and garage.
fn cpu_now(servers: &Servers<'_>) -> Result<[f64; 3], BoxError> {
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
    servers: &Servers<'_>,
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
