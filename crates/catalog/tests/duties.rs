//! Duties one gateway performs for all (`custodia_catalog::Duty`): a lease its holder renews. One holder at a time;
//! a holder that stops renewing (dead, frozen, cut off) loses the duty once its lease expires, and finds out at its
//! next renewal; a database restart changes nothing. On SQLite, the one gateway holds every duty.

use custodia_catalog::{Catalog, DUTY_EXPIRY, Duty};
use custodia_tests::postgres::TempPostgres;

/// Times in milliseconds since the Unix epoch, chosen by the test.
const T0: i64 = 1_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duty_has_one_holder_and_passes_on_only_when_its_lease_expires_unrenewed() {
    let postgres = TempPostgres::start();
    let catalog = Catalog::connect(&postgres.url).await.unwrap();
    let expiry = DUTY_EXPIRY.as_millis() as i64;

    let a = catalog.try_duty_at(Duty::HEARINGS, "node-a", T0).await.unwrap().expect("nobody holds it: A takes it");
    assert!(catalog.try_duty_at(Duty::HEARINGS, "node-b", T0 + 1).await.unwrap().is_none(), "A holds it");
    assert!(
        catalog.try_duty_at(Duty::TIMESTAMPING, "node-b", T0 + 1).await.unwrap().is_some(),
        "another duty is another lease"
    );

    // A renews within its lease: B may not take it even after the first lease would have run out.
    assert_eq!(a.held_until(), T0 + expiry);
    assert!(a.still_held_at(T0 + expiry - 1).await);
    assert_eq!(a.held_until(), T0 + 2 * expiry - 1, "renewed");
    assert!(catalog.try_duty_at(Duty::HEARINGS, "node-b", T0 + expiry + 1).await.unwrap().is_none());

    // A stops renewing (frozen): once its lease has expired, B takes the duty, and A finds out at its next renewal.
    let later = T0 + 2 * expiry;
    let b = catalog.try_duty_at(Duty::HEARINGS, "node-b", later).await.unwrap().expect("A's lease expired");
    assert!(!a.still_held_at(later + 1).await, "A thawed: the duty is B's");
    assert!(b.still_held_at(later + 2).await);
    assert!(catalog.try_duty_at(Duty::HEARINGS, "node-a", later + 3).await.unwrap().is_none());

    // A restart of the database keeps the lease where it is.
    drop(catalog);
    postgres.restart();
    let catalog = Catalog::connect(&postgres.url).await.unwrap();
    assert!(catalog.try_duty_at(Duty::HEARINGS, "node-a", later + 4).await.unwrap().is_none());
    assert!(b.still_held_at(later + 5).await, "B renews on a new connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_the_one_gateway_holds_every_duty() {
    let dir = tempfile::tempdir().unwrap();
    let catalog =
        Catalog::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display())).await.unwrap();
    let lease = catalog.try_duty_at(Duty::HEARINGS, "node-a", T0).await.unwrap().expect("held");
    assert!(lease.still_held_at(i64::MAX - 1).await);
    assert!(catalog.try_duty_at(Duty::HEARINGS, "node-b", T0).await.unwrap().is_some(), "one gateway per catalog");
}
