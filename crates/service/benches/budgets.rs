//! What a budget take costs: in memory, and kept in the catalog (`BudgetStore`) on SQLite and on PostgreSQL, each
//! counted over a loop of takes from one task (every take one round trip; keys cycled so that most are inserts
//! and some are refusals, as under a flood of many clients). Run: `cargo bench -p custodia-service --bench
//! budgets` (`-- --takes N` for another count); PostgreSQL is a local server on loopback, started for the run.

#![allow(clippy::print_stdout)] // a benchmark program prints its figures

use std::time::Instant;

use custodia_service::budget::{Budget, BudgetStore};
use custodia_service::clock::Clock;

async fn per_take(budget: &Budget, takes: usize) -> (f64, usize) {
    let started = Instant::now();
    let mut refused = 0;
    for n in 0..takes {
        // 64 keys, each with a burst of 10 at 600 a minute: refusals mixed in with takes.
        refused += usize::from(budget.take(&format!("account-{}", n % 64)).await.is_err());
    }
    (started.elapsed().as_secs_f64() * 1e6 / takes as f64, refused)
}

fn budget() -> Budget {
    Budget::new(10, 600)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let takes = args.iter().position(|a| a == "--takes").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(2000);
    println!("{takes} takes from one task, one key of 64 each time");

    let (micros, refused) = per_take(&budget(), takes).await;
    println!("in memory:           {micros:9.2} µs a take ({refused} refused)");

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display());
    let catalog = custodia_catalog::Catalog::connect(&url).await.unwrap();
    let sqlite = budget().kept_in("bench", &BudgetStore::new(catalog, Clock::default()));
    let (micros, refused) = per_take(&sqlite, takes).await;
    println!("SQLite (WAL, FULL):  {micros:9.2} µs a take ({refused} refused)");

    let postgres = custodia_tests::postgres::TempPostgres::start();
    let catalog = custodia_catalog::Catalog::connect(&postgres.url).await.unwrap();
    let shared = budget().kept_in("bench", &BudgetStore::new(catalog, Clock::default()));
    let (micros, refused) = per_take(&shared, takes).await;
    println!("PostgreSQL:          {micros:9.2} µs a take ({refused} refused)");
}
