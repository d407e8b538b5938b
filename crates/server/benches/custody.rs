//! How many custody records per second the gateway writes, printed beside the ledger's raw append rate measured
//! in the same run on the same disk.
//!
//! `cargo bench -p custodia-server --bench custody` opens a gateway as `custodia serve` does (SQLite catalog,
//! local log, fresh data directory on the real disk) and has many tasks record artefact accesses through
//! `Gateway::record`, each record about one of many artefacts: the record is sealed (case reference, purpose and
//! site committed under fresh salts), its openings are written to the catalog (an fsync'd SQLite commit) before
//! the entry is appended, the append is chained to the artefact's previous record, and the entry is indexed.
//! Beside it, the same number of tasks append entries of the same size straight to a `custodia_ledger::Log` in
//! another directory of the same disk: what the ledger alone sustains there, now.
//!
//! Tuning, by environment variable: `CUSTODY_BENCH_RECORDS` (records per measurement, 10000),
//! `CUSTODY_BENCH_TASKS` (concurrent writers, 64), `CUSTODY_BENCH_ARTEFACTS` (artefacts the records are about,
//! 1024).
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use custodia_benchkit::{BoxError, Headline, Table, add_to_summary, env_or, rate};
use custodia_core::{AccessKind, ActorId, ArtefactId, CaseId, CustodyEvent};
use custodia_ledger::{Log, LogOptions, LogSigner};
use custodia_server::config::ServeConfig;
use custodia_service::clock::Clock;
use custodia_service::gateway::Gateway;
use tokio::task::JoinSet;

const CASE: &str = "bench-custody";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let records: u64 = env_or("CUSTODY_BENCH_RECORDS", 10_000)?;
    let tasks: u64 = env_or("CUSTODY_BENCH_TASKS", 64)?;
    let artefacts: u64 = env_or("CUSTODY_BENCH_ARTEFACTS", 1024)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = tempfile::Builder::new().prefix("custody-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!(
        "custodia custody-record benchmark: {records} records, {tasks} writers, {artefacts} artefacts, {cores} cores"
    );
    println!("data in {}", dir.path().display());

    let state =
        custodia_server::startup::open(&ServeConfig::with_data_dir(&dir.path().join("gateway")), Clock::default())
            .await?;
    let gateway = state.gateway.clone();
    let now = gateway.now().to_string();
    gateway
        .catalog()
        .create_case(&custodia_catalog::Case { id: CASE.into(), title: "benchmark".into(), created_at: now })
        .await?;
    let case = CaseId::new(CASE)?;
    // A warm-up, so that the case's salt is made and kept before timing.
    let (sample, _) = record(&gateway, &case, 0).await?;

    let ledger = Log::open_local(
        &dir.path().join("ledger"),
        LogSigner::generate("bench.custodia.invalid/log")?,
        LogOptions::default(),
    )
    .await?;
    let entry_len = sample;
    let raw = measure(records, tasks, {
        let ledger = ledger.clone();
        move |_| {
            let ledger = ledger.clone();
            async move { ledger.append(vec![b'x'; entry_len]).await.map(|_| ()).map_err(BoxError::from) }
        }
    })
    .await?;
    let through_gateway = measure(records, tasks, {
        let gateway = gateway.clone();
        move |n| {
            let (gateway, case) = (gateway.clone(), case.clone());
            async move { record(&gateway, &case, n % artefacts).await.map(|_| ()) }
        }
    })
    .await?;

    println!("\n-- custody records, {entry_len}-byte entries, {tasks} concurrent writers --");
    let mut table = Table::new(["path", "records/s", "p50", "p99", "of the raw ledger"]);
    for (name, measured) in [
        ("ledger append (raw, same disk, same run)", &raw),
        ("gateway record (seal, openings row, append, index)", &through_gateway),
    ] {
        table.row([
            name.to_owned(),
            format!("{:.0}", measured.per_second),
            format!("{:.1} ms", measured.p50.as_secs_f64() * 1e3),
            format!("{:.1} ms", measured.p99.as_secs_f64() * 1e3),
            format!("{:.0}%", 100.0 * measured.per_second / raw.per_second),
        ]);
    }
    table.print();
    add_to_summary(
        "custody",
        &[Headline {
            measurement: format!("custody records through the gateway/s, {tasks} writers"),
            figure: format!(
                "{:.0}/s, p99 {:.1} ms",
                through_gateway.per_second,
                through_gateway.p99.as_secs_f64() * 1e3
            ),
            against: format!("raw ledger appends, same run: {:.0}/s", raw.per_second),
            ratio: format!("{:.2}", through_gateway.per_second / raw.per_second),
        }],
    )?;
    Ok(())
}

/// Records one artefact access about artefact number `artefact` through the gateway; returns the entry's length.
async fn record(gateway: &Gateway, case: &CaseId, artefact: u64) -> Result<(usize, u64), BoxError> {
    let artefact = ArtefactId::new(format!("art-bench-{artefact:06}"))?;
    let sealed = gateway
        .seal(case, ActorId::new("acct-bench")?, gateway.now(), "trial preparation", |committer| {
            CustodyEvent::ArtefactAccessed {
                artefact,
                access: AccessKind::Download,
                site: committer.commit("site", "IT, web session"),
            }
        })
        .await?;
    let index = gateway.record(&sealed).await?;
    Ok((sealed.record.to_entry()?.len(), index))
}

struct Measured {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `count` operations on `tasks` concurrent tasks, each operation timed.
async fn measure<F, Fut>(count: u64, tasks: u64, operation: F) -> Result<Measured, BoxError>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let (next, operation) = (next.clone(), operation.clone());
        set.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok::<_, BoxError>(latencies);
                }
                let one = Instant::now();
                operation(n).await?;
                latencies.push(one.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(count as usize);
    while let Some(done) = set.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile) as usize];
    Ok(Measured { per_second: rate(count, elapsed), p50: at(0.5), p99: at(0.99) })
}
