//! Token buckets shared by every gateway on one database (`custodia_catalog::budgets`): a take refills by the time
//! elapsed, takes only what the bucket holds and says how long to wait otherwise; two handles on one PostgreSQL
//! spend one budget, also at once; a bucket is filled again on demand; full buckets are pruned. Times are chosen by the test (ms since the epoch), so
//! nothing here depends on how fast the machine is.

use std::time::Duration;

use custodia_catalog::{BucketRule, Catalog, PRUNE_EVERY_MS, Take};
use custodia_tests::postgres::TempPostgres;

const T0: i64 = 1_000_000_000;

/// Three at once, then one every two seconds.
const RULE: BucketRule = BucketRule { burst: 3.0, per_second: 0.5 };

fn key(n: u8) -> [u8; 32] {
    [n; 32]
}

fn wait_of(take: Take) -> Duration {
    match take {
        Take::Short { wait } => wait,
        Take::Taken => panic!("expected the bucket to be short"),
    }
}

fn assert_about(wait: Duration, seconds: f64) {
    assert!((wait.as_secs_f64() - seconds).abs() < 1e-6, "waited {wait:?}, expected {seconds} s");
}

async fn sqlite() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display());
    (dir, url)
}

/// Burst, refill, waits, a take of more than the burst, and a clock behind, on one database.
async fn a_bucket_refills_takes_only_what_it_holds_and_says_how_long(a: &Catalog, b: &Catalog) {
    for catalog in [a, b, a] {
        assert_eq!(catalog.take_tokens(&key(1), RULE, 1.0, T0).await.unwrap(), Take::Taken);
    }
    // Spent: one token comes every two seconds.
    assert_about(wait_of(b.take_tokens(&key(1), RULE, 1.0, T0).await.unwrap()), 2.0);
    assert_about(wait_of(a.take_tokens(&key(1), RULE, 2.0, T0).await.unwrap()), 4.0);
    // Half refilled after one second: a second more.
    assert_about(wait_of(a.take_tokens(&key(1), RULE, 1.0, T0 + 1_000).await.unwrap()), 1.0);
    assert!((a.tokens_left(&key(1), RULE, T0 + 1_000).await.unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(b.take_tokens(&key(1), RULE, 1.0, T0 + 2_000).await.unwrap(), Take::Taken);
    assert_about(wait_of(a.take_tokens(&key(1), RULE, 1.0, T0 + 2_000).await.unwrap()), 2.0);
    // A gateway whose clock is ten seconds behind refills nothing, and moves the bucket back in time for no one.
    assert_about(wait_of(b.take_tokens(&key(1), RULE, 1.0, T0 - 8_000).await.unwrap()), 2.0);
    assert_eq!(a.take_tokens(&key(1), RULE, 1.0, T0 + 4_000).await.unwrap(), Take::Taken);
    // Long after: full, never more than the burst.
    assert!((b.tokens_left(&key(1), RULE, T0 + 3_600_000).await.unwrap() - 3.0).abs() < 1e-9);
    assert_eq!(a.take_tokens(&key(1), RULE, 3.0, T0 + 3_600_000).await.unwrap(), Take::Taken);
    assert!(b.take_tokens(&key(1), RULE, 1.0, T0 + 3_600_000).await.unwrap() != Take::Taken);
    // More than the burst takes the burst; another key is untouched.
    assert_eq!(a.take_tokens(&key(2), RULE, 50.0, T0).await.unwrap(), Take::Taken);
    assert_about(wait_of(b.take_tokens(&key(2), RULE, 1.0, T0).await.unwrap()), 2.0);
    assert_eq!(b.take_tokens(&key(3), RULE, 1.0, T0).await.unwrap(), Take::Taken);
    assert!((a.tokens_left(&key(4), RULE, T0).await.unwrap() - 3.0).abs() < 1e-9, "a key never taken is full");
    // Filled again at once by either handle (a success that clears failures); other keys keep what they spent.
    b.refill_bucket(&key(2)).await.unwrap();
    assert!((a.tokens_left(&key(2), RULE, T0).await.unwrap() - 3.0).abs() < 1e-9, "full again");
    assert_eq!(a.take_tokens(&key(2), RULE, 3.0, T0).await.unwrap(), Take::Taken);
    assert!((b.tokens_left(&key(3), RULE, T0).await.unwrap() - 2.0).abs() < 1e-9, "another key is untouched");
    a.refill_bucket(&key(5)).await.unwrap();
    assert!((b.tokens_left(&key(5), RULE, T0).await.unwrap() - 3.0).abs() < 1e-9, "a key never taken stays full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_postgres_spend_one_budget() {
    let postgres = TempPostgres::start();
    let a = Catalog::connect(&postgres.url).await.unwrap();
    let b = Catalog::connect(&postgres.url).await.unwrap();
    a_bucket_refills_takes_only_what_it_holds_and_says_how_long(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_same_buckets() {
    let (_dir, url) = sqlite().await;
    let catalog = Catalog::connect(&url).await.unwrap();
    a_bucket_refills_takes_only_what_it_holds_and_says_how_long(&catalog, &catalog.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_at_once_from_two_handles_never_spend_a_token_twice() {
    let postgres = TempPostgres::start();
    let a = Catalog::connect(&postgres.url).await.unwrap();
    let b = Catalog::connect(&postgres.url).await.unwrap();
    let rule = BucketRule { burst: 10.0, per_second: 1.0 / 60.0 };
    let takes = (0..60).map(|n| {
        let catalog = if n % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { catalog.take_tokens(&key(9), rule, 1.0, T0).await.unwrap() })
    });
    let taken = futures::future::join_all(takes).await.into_iter().filter(|t| *t.as_ref().unwrap() == Take::Taken);
    assert_eq!(taken.count(), 10, "sixty takes at once from two gateways spend the burst of ten, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buckets_are_pruned_and_partly_spent_ones_kept() {
    let postgres = TempPostgres::start();
    let catalog = Catalog::connect(&postgres.url).await.unwrap();
    // A first take prunes (this process never has), then not again for a minute.
    for n in 0..100u8 {
        assert_eq!(catalog.take_tokens(&key(n), RULE, 1.0, T0).await.unwrap(), Take::Taken);
    }
    assert_eq!(catalog.budget_buckets().await.unwrap(), 100);
    // Six seconds fill an empty bucket of three: none is due before, every one after.
    assert_eq!(catalog.prune_full_buckets(T0 + 5_999).await.unwrap(), 0);
    let slow = BucketRule { burst: 3.0, per_second: 0.001 };
    assert_eq!(catalog.take_tokens(&key(200), slow, 1.0, T0).await.unwrap(), Take::Taken);
    assert_eq!(catalog.prune_full_buckets(T0 + 6_000).await.unwrap(), 100);
    assert_eq!(catalog.budget_buckets().await.unwrap(), 1, "the slow bucket is not full yet");
    // A key cycled through long after: the take that finds a minute passed prunes what is full.
    assert_eq!(catalog.take_tokens(&key(201), RULE, 1.0, T0 + PRUNE_EVERY_MS).await.unwrap(), Take::Taken);
    assert_eq!(catalog.budget_buckets().await.unwrap(), 2);
    let later = T0 + 2 * PRUNE_EVERY_MS + 3_000_000;
    assert_eq!(catalog.take_tokens(&key(202), RULE, 1.0, later).await.unwrap(), Take::Taken);
    assert_eq!(catalog.budget_buckets().await.unwrap(), 1, "only the bucket just taken from is left");
    // A pruned bucket is full, as if it had been kept.
    assert!((catalog.tokens_left(&key(200), slow, later).await.unwrap() - 3.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_handle_on_a_database_hashes_under_the_one_salt_first_stored() {
    let postgres = TempPostgres::start();
    let a = Catalog::connect(&postgres.url).await.unwrap();
    let b = Catalog::connect(&postgres.url).await.unwrap();
    let salt = a.budget_salt(|| [7; 32]).await.unwrap();
    assert_eq!(salt, [7; 32]);
    assert_eq!(b.budget_salt(|| [8; 32]).await.unwrap(), salt, "another gateway finds the first one's salt");
    assert_eq!(a.budget_salt(|| unreachable!("kept after the first read")).await.unwrap(), salt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budgets_migration_runs_again_without_harm() {
    let (_dir, url) = sqlite().await;
    let catalog = Catalog::connect(&url).await.unwrap();
    assert_eq!(catalog.take_tokens(&key(1), RULE, 3.0, T0).await.unwrap(), Take::Taken);
    drop(catalog);
    // As if the last migration had not been recorded as applied: it runs again over its own tables.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM schema_version WHERE version = (SELECT MAX(version) FROM schema_version)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let catalog = Catalog::connect(&url).await.unwrap();
    assert!(catalog.take_tokens(&key(1), RULE, 1.0, T0).await.unwrap() != Take::Taken, "the bucket was kept");
}
