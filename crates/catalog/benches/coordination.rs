//! What sharing one custody log costs: appends per second through the log's coordination on PostgreSQL
//! (`Catalog::log_coordination`, tiles and checkpoints in a garage bucket) with one, two and three appending
//! processes, beside the same log sequenced by one process alone (`Log::open`, no database: the peer doing the same
//! job without coordinating), in the same run. Each "process" is a log handle with a database pool and an
//! integrator of its own, as a gateway has; 32 appenders at once, spread over them, each appending a 600-byte entry
//! (about a custody record) and waiting until a published checkpoint covers it.
//!
//! Goal: no worse with three processes than with one. `cargo bench -p custodia-catalog --bench coordination`
//! (garage from `scripts/garage.sh`, named by `CUSTODIA_GARAGE`; PostgreSQL 15 from Debian). `COORDINATION_BENCH_SECONDS`
//! (the length of each measurement, 10).
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use custodia_benchkit::{BoxError, Headline, Table, add_to_summary, env_or};
use custodia_catalog::Catalog;
use custodia_ledger::{Log, LogOptions, LogSigner};
use custodia_tests::garage::Garage;
use custodia_tests::postgres::TempPostgres;
use object_store::path::Path as StorePath;

const APPENDERS: usize = 32;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let seconds: u64 = env_or("COORDINATION_BENCH_SECONDS", 10)?;
    let duration = Duration::from_secs(seconds);
    let garage = Garage::start();
    let postgres = TempPostgres::start();
    let signer = LogSigner::generate("custodia.bench/log")?;
    let key = signer.expose_secret().to_owned();
    println!("custodia log coordination benchmark: {APPENDERS} appenders, {seconds} s each");

    let alone = Log::open(garage.object_store(), StorePath::from("alone"), signer, LogOptions::default()).await?;
    let alone_rate = measure(&[alone], duration).await?;
    println!("one process alone (no database): {alone_rate:.0} appends/s");

    let mut rates = Vec::new();
    for processes in 1..=3 {
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
        let rate = measure(&logs, duration).await?;
        println!("{processes} coordinated processes: {rate:.0} appends/s");
        rates.push((processes, rate));
        for log in logs {
            log.close().await;
        }
    }

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

/// Appends from [`APPENDERS`] tasks spread over `logs` for `duration`; acknowledged appends per second.
async fn measure(logs: &[Log], duration: Duration) -> Result<f64, BoxError> {
    let acknowledged = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..APPENDERS)
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
    Ok(acknowledged.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
