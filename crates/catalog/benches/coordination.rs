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
//!   checkpoint when the log has time to spare.
//!
//! Each measurement counts the appends acknowledged in its window, which opens once the appenders have run for a
//! second (connections made, the first tiles written), and how long each of them waited (mean and 99th percentile).
//!
//! Every measurement has a garage and a PostgreSQL of its own, started for it, and a new log: garage grows slower as
//! it holds more, so that in a shared garage whichever arrangement came later in the run paid for what the earlier
//! ones wrote (measured the other way round, the order alone moved the three-process ratio at capacity from 0.81x
//! to 1.05x).
//!
//! `cargo bench -p custodia-catalog --bench coordination` (garage from `scripts/garage.sh`, named by
//! `CUSTODIA_GARAGE`; PostgreSQL 15 from Debian). `COORDINATION_BENCH_SECONDS` (the length of each measurement's
//! window, 10) and `COORDINATION_BENCH_ROUNDS` (how many times each is measured, in a different order each round, 4).
//! Each rate and wait is the median of its rounds. Each ratio is the median of the ratios taken within each round,
//! shown with their range: a shared machine can slow by a fifth within minutes, and a round's measurements are
//! minutes apart at most.
#![allow(clippy::print_stdout)]

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

    let mut table =
        Table::new(["load", "measurement", "appends/s", "wait per append: mean, p99", "against (same run)", "ratio"]);
    let mut headlines = Vec::new();
    for load in &loads {
        // Each arrangement is measured once a round, and in each round they go in a different order (each comes
        // first, second, third and last in four rounds): a machine busier in one part of the run than in another
        // then weighs on all of them alike. Each figure is the median of its rounds.
        let mut rounds_of: [Vec<Measured>; ARRANGEMENTS] = Default::default();
        for round in 0..rounds {
            for position in 0..ARRANGEMENTS {
                let processes = (position + ARRANGEMENTS - round % ARRANGEMENTS) % ARRANGEMENTS;
                let measured = measure_fresh(processes, load.appenders, duration, &key).await?;
                let arrangement = if processes == 0 {
                    "one process alone (no database)".to_owned()
                } else {
                    format!("{processes} coordinated process(es)")
                };
                println!("{} load, round {}: {arrangement}: {measured}", load.name, round + 1);
                rounds_of[processes].push(measured);
            }
        }
        // Each ratio is taken within each round, of two measurements minutes apart at most (a machine that slows
        // over the run then changes both alike), and the median of the rounds' ratios shown, with their range.
        let ratio = |of: usize, to: usize| Ratio::of_rounds(&rounds_of[of], &rounds_of[to]);
        let ratios: Vec<Ratio> = (2..ARRANGEMENTS).map(|processes| ratio(processes, 1)).collect();
        let one_to_alone = ratio(1, 0);
        let [alone, one, rest @ ..] = rounds_of.map(|rounds| Measured::median(&rounds));
        let name = format!("{} ({} appenders)", load.name, load.appenders);
        table.row([
            name.clone(),
            "1 process on one log, PostgreSQL + garage".to_owned(),
            format!("{:.0}", one.rate),
            one.waits(),
            format!("one process alone, no database {:.0}/s ({})", alone.rate, alone.waits()),
            one_to_alone.shown(""),
        ]);
        for (at, (more, ratio)) in rest.iter().zip(&ratios).enumerate() {
            let goal = if load.name == "capacity" { "goal 1.00x or more" } else { "" };
            table.row([
                name.clone(),
                format!("{} processes on one log, PostgreSQL + garage", at + 2),
                format!("{:.0}", more.rate),
                more.waits(),
                format!("1 process {:.0}/s", one.rate),
                ratio.shown(goal),
            ]);
        }
        headlines.push(Headline {
            measurement: format!("log appends/s, {} load, 1 coordinated process", load.name),
            figure: format!("{:.0}/s", one.rate),
            against: format!("alone {:.0}/s", alone.rate),
            ratio: format!("{:.2}x", one_to_alone.median),
        });
        headlines.extend(rest.iter().zip(&ratios).enumerate().map(|(at, (more, ratio))| Headline {
            measurement: format!("log appends/s, {} load, {} coordinated processes", load.name, at + 2),
            figure: format!("{:.0}/s", more.rate),
            against: format!("1 process {:.0}/s", one.rate),
            ratio: format!("{:.2}x", ratio.median),
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
/// PostgreSQL started for this measurement, and a new log.
async fn measure_fresh(
    processes: usize,
    appenders: usize,
    duration: Duration,
    key: &str,
) -> Result<Measured, BoxError> {
    let servers = Servers { garage: Garage::start(), postgres: TempPostgres::start() };
    // What the servers just set up (and the last measurement's servers removed) goes to disk before anything is
    // measured.
    if !std::process::Command::new("sync").status()?.success() {
        return Err("sync failed".into());
    }
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

/// One arrangement's append rate against another's, round by round.
struct Ratio {
    /// The median of the rounds' ratios.
    median: f64,
    /// The lowest and the highest of them.
    range: (f64, f64),
}

impl Ratio {
    /// `of`'s rate over `to`'s, measured in the same rounds.
    fn of_rounds(of: &[Measured], to: &[Measured]) -> Self {
        let ratios: Vec<f64> = of.iter().zip(to).map(|(of, to)| of.rate / to.rate).collect();
        let range =
            ratios.iter().fold((f64::INFINITY, 0.0_f64), |(low, high), ratio| (low.min(*ratio), high.max(*ratio)));
        Self { median: median(ratios), range }
    }

    /// The median, then the range and `goal` (if not empty) in parentheses.
    fn shown(&self, goal: &str) -> String {
        let goal = if goal.is_empty() { String::new() } else { format!("; {goal}") };
        format!("{:.2}x (rounds {:.2}–{:.2}x{goal})", self.median, self.range.0, self.range.1)
    }
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

/// How long the appenders run before the measurement starts: connections made, the log's first tiles written.
const WARM_UP: Duration = Duration::from_secs(1);

/// What one measurement found.
struct Measured {
    /// Appends acknowledged per second.
    rate: f64,
    /// How long an append waited until a published checkpoint covered it, in seconds: the mean and the 99th
    /// percentile.
    mean_wait: f64,
    p99_wait: f64,
    cpu: CpuPerAppend,
}

impl Measured {
    /// The median of each figure over `rounds`.
    fn median(rounds: &[Measured]) -> Measured {
        let of = |figure: &dyn Fn(&Measured) -> f64| median(rounds.iter().map(figure).collect());
        Measured {
            rate: of(&|m| m.rate),
            mean_wait: of(&|m| m.mean_wait),
            p99_wait: of(&|m| m.p99_wait),
            cpu: CpuPerAppend(std::array::from_fn(|at| of(&|m| m.cpu.0[at]))),
        }
    }

    fn waits(&self) -> String {
        format!("{:.1} ms, {:.1} ms", self.mean_wait * 1e3, self.p99_wait * 1e3)
    }
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} appends/s; wait per append {}; {}", self.rate, self.waits(), self.cpu)
    }
}

/// Appends from `appenders` tasks spread over `logs`, each appending and waiting for its entry to be published,
/// then the next: after [`WARM_UP`], for `duration`, the appends acknowledged, how long each waited, and what they
/// cost in CPU time. (What is still waiting at the end is let finish, and not counted.)
async fn measure(logs: &[Log], appenders: usize, duration: Duration, servers: &Servers) -> Result<Measured, BoxError> {
    let started = Instant::now();
    let (from, until) = (started + WARM_UP, started + WARM_UP + duration);
    let tasks: Vec<_> = (0..appenders)
        .map(|appender| {
            let log = logs[appender % logs.len()].clone();
            tokio::spawn(async move {
                let mut waits = Vec::new();
                let mut n = 0u64;
                while Instant::now() < until {
                    let entry = format!("{{\"appender\":{appender},\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(560));
                    let appending = Instant::now();
                    log.append(entry.into_bytes()).await?;
                    let acknowledged = Instant::now();
                    if (from..until).contains(&acknowledged) {
                        waits.push((acknowledged - appending).as_secs_f64());
                    }
                    n += 1;
                }
                Ok::<_, custodia_ledger::LogError>(waits)
            })
        })
        .collect();
    tokio::time::sleep_until(from.into()).await;
    let cpu_before = cpu_now(servers)?;
    tokio::time::sleep_until(until.into()).await;
    let cpu_after = cpu_now(servers)?;
    let mut waits = Vec::new();
    for task in tasks {
        waits.extend(task.await??);
    }
    waits.sort_by(f64::total_cmp);
    let count = waits.len().max(1) as f64;
    let per_append = std::array::from_fn(|at| (cpu_after[at] - cpu_before[at]) / count);
    Ok(Measured {
        rate: waits.len() as f64 / duration.as_secs_f64(),
        mean_wait: waits.iter().sum::<f64>() / count,
        p99_wait: waits.get((waits.len() * 99 / 100).min(waits.len().saturating_sub(1))).copied().unwrap_or(0.0),
        cpu: CpuPerAppend(per_append),
    })
}
