//! Budgets kept in the catalog (`custodia_service::budget::BudgetStore`): two gateways on one PostgreSQL spend one
//! budget; the keys stored are salted hashes; and with the database down each process holds the budget on its own,
//! from what it had spent, until the database is back. Judged by counts, never by timing.

use custodia_catalog::Catalog;
use custodia_service::budget::{Budget, BudgetStore, STORE_PAUSE};
use custodia_service::clock::Clock;
use custodia_tests::postgres::TempPostgres;
use hmac::Mac as _;

async fn gateway(url: &str) -> (Catalog, BudgetStore) {
    let catalog = Catalog::connect(url).await.unwrap();
    let store = BudgetStore::new(catalog.clone(), Clock::default());
    (catalog, store)
}

async fn taken(budget: &Budget, key: &str, times: usize) -> usize {
    let mut taken = 0;
    for _ in 0..times {
        taken += usize::from(budget.take(key).await.is_ok());
    }
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_database_spend_one_budget_and_store_no_key_in_clear() {
    let postgres = TempPostgres::start();
    let (catalog, a) = gateway(&postgres.url).await;
    let (_, b) = gateway(&postgres.url).await;
    let on_a = Budget::new(6, 1).kept_in("sign_in.account_checks", &a);
    let on_b = Budget::new(6, 1).kept_in("sign_in.account_checks", &b);
    let mut taken = 0;
    for _ in 0..10 {
        taken += usize::from(on_a.take("judge").await.is_ok());
        taken += usize::from(on_b.take("judge").await.is_ok());
    }
    assert_eq!(taken, 6, "twenty tries alternated over two gateways get one budget of six");
    let wait = on_b.take("judge").await.unwrap_err();
    assert!(wait.as_secs() > 30, "about a minute for the next: {wait:?}");
    assert!(on_a.check("judge").await.is_err() && on_b.check_many("judge", 1).await.is_err());
    // Another budget with the same key, and another key, have their own buckets.
    assert!(Budget::new(6, 1).kept_in("uploads", &a).take("judge").await.is_ok());
    assert!(on_b.take("clerk").await.is_ok());

    // Each stored bucket is HMAC-SHA256 under the database's one salt of the budget's name and its key: neither
    // the key, nor its plain digest.
    let salt = catalog.budget_salt(|| unreachable!("made at the first take")).await.unwrap();
    let keyed = |name: &str, key: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&salt).unwrap();
        mac.update(format!("{name}\0{key}").as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&postgres.url).await.unwrap();
    let mut stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT bucket FROM budget_buckets").fetch_all(&pool).await.unwrap();
    stored.sort();
    let mut expected = vec![
        keyed("sign_in.account_checks", "judge"),
        keyed("uploads", "judge"),
        keyed("sign_in.account_checks", "clerk"),
    ];
    expected.sort();
    assert_eq!(stored, expected);
    use sha2::Digest as _;
    assert!(!stored.iter().any(|bucket| bucket[..] == sha2::Sha256::digest(b"judge")[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_each_gateway_holds_the_budget_from_what_it_spent_until_it_is_back() {
    let postgres = TempPostgres::start();
    let (_, a) = gateway(&postgres.url).await;
    let (_, b) = gateway(&postgres.url).await;
    // One an hour: what a database stopped, recovered and waited for takes (tens of seconds on a busy machine)
    // gives nothing back, so each count below is exact.
    let on_a = Budget::per_hour(3, 1).kept_in("custody_records", &a);
    let on_b = Budget::per_hour(3, 1).kept_in("custody_records", &b);
    assert_eq!(taken(&on_a, "account", 2).await, 2);

    postgres.stop();
    // Neither a pass-all nor a lockout: A goes on from the one it has left; B, which spent none, has its own
    // burst (N gateways, N budgets, while the database is down); both refill.
    assert_eq!(taken(&on_a, "account", 5).await, 1, "A had spent two of three");
    let wait = on_a.take("account").await.unwrap_err();
    assert!(wait.as_secs() <= 3600, "an hour at most, at one an hour: {wait:?}");
    assert!(on_a.take("another account").await.is_ok(), "other keys are not locked out");
    assert_eq!(taken(&on_b, "account", 5).await, 3);

    postgres.restart();
    // Once the pause after a failure is over, B asks the database again: the one token A left there.
    tokio::time::sleep(STORE_PAUSE + std::time::Duration::from_millis(500)).await;
    let mut back = false;
    for _ in 0..60 {
        if on_b.check("account").await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(back, "B's own bucket is spent: only the database's has a token left");
    assert_eq!(taken(&on_b, "account", 3).await, 1, "the budget is shared again: one left, as A left it");
    assert!(on_a.take("account").await.is_err());
}
