//! Turns (`Catalog::take_turn`): one holder at a time of a key across every gateway on one PostgreSQL database, not
//! only within a process. Each gateway here is a catalog of its own (its own pools and connections), as separate
//! processes have. Judged by what each holder saw, never by how long anything took: a turn that did not exclude
//! would let the second holder in while the first still holds it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use custodia_catalog::{Catalog, CatalogError, TurnKind};
use custodia_tests::postgres::TempPostgres;

/// Takes `key` on `catalog`, and says whether the turn was had while `held` (the other holder's flag) was set.
async fn entered_while_held(catalog: Catalog, key: &'static str, held: Arc<AtomicBool>) -> bool {
    let _turn = catalog.take_turn(kind_of(key), key).await.unwrap();
    held.load(Ordering::SeqCst)
}

/// The kind of turn `key` names, as the gateway takes them.
fn kind_of(key: &str) -> TurnKind {
    match key.split_once(' ').map(|(kind, _)| kind) {
        Some("policy") => TurnKind::Policy,
        Some("membership") => TurnKind::Membership,
        Some("transfer") => TurnKind::Transfer,
        _ => TurnKind::Quota,
    }
}

/// Sequences one custody record about `artefact` through `catalog`.
async fn record(catalog: &Catalog, artefact: &str) -> Result<u64, CatalogError> {
    let made = catalog
        .sequence_custody("case-1", Some(artefact), "{}", None, |prior| {
            Ok::<_, std::convert::Infallible>((format!("{{\"prior\":{prior:?}}}").into_bytes(), format!("{prior:?}")))
        })
        .await?;
    Ok(made.unwrap().index)
}

/// A record made under a turn is stored only while the turn's lock is still held: once its connection is gone (and
/// another gateway took the turn), the record is refused, retryably, and nothing is stored; the one made under the
/// new holder's turn is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_made_under_a_lost_turn_is_refused() {
    let postgres = TempPostgres::start();
    let (a, b) = (Catalog::connect(&postgres.url).await.unwrap(), Catalog::connect(&postgres.url).await.unwrap());
    let turn = a.take_turn(TurnKind::Policy, "policy of artefact-9").await.unwrap();
    assert_eq!(record(&a.within_turn(&turn), "artefact-9").await.unwrap(), 0, "held: stored");
    // A's turn loses its lock (its connection cut), and B takes the turn.
    support::terminate_the_holder(&postgres).await;
    let taken = b.take_turn(TurnKind::Policy, "policy of artefact-9").await.unwrap();
    let refused = record(&a.within_turn(&turn), "artefact-9").await;
    assert!(matches!(refused, Err(CatalogError::TurnLost)), "{refused:?}");
    assert!(refused.unwrap_err().is_transient());
    assert_eq!(record(&b.within_turn(&taken), "artefact-9").await.unwrap(), 1, "B's record follows A's first");
    drop((turn, taken));
}

/// A direct upload's holding is written, and grown, only while the quota turn its check was made under is held:
/// one written after the turn went would be counted after another gateway's check had found its bytes free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holding_taken_or_grown_under_a_lost_turn_is_refused() {
    let postgres = TempPostgres::start();
    let (a, b) = (Catalog::connect(&postgres.url).await.unwrap(), Catalog::connect(&postgres.url).await.unwrap());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let until = now + 60_000;
    let turn = a.take_turn(TurnKind::Quota, "quota of acct").await.unwrap();
    a.within_turn(&turn).hold_direct("h1", "acct", 10, now, until).await.unwrap();
    assert!(a.within_turn(&turn).grow_direct_holding("h1", 20, now, until).await.unwrap(), "held: grown");
    support::terminate_the_holder(&postgres).await;
    let taken = b.take_turn(TurnKind::Quota, "quota of acct").await.unwrap();
    let refused = a.within_turn(&turn).hold_direct("h2", "acct", 10, now, until).await;
    assert!(matches!(refused, Err(CatalogError::TurnLost)), "{refused:?}");
    let refused = a.within_turn(&turn).grow_direct_holding("h1", 30, now, until).await;
    assert!(matches!(refused, Err(CatalogError::TurnLost)), "{refused:?}");
    let held = b.direct_holdings_of("acct", now).await.unwrap();
    assert_eq!((held.uploads, held.bytes), (1, 20), "nothing written under the lost turn");
    b.within_turn(&taken).hold_direct("h3", "acct", 5, now, until).await.unwrap();
    drop((turn, taken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_has_one_holder_among_gateways_and_passes_on_when_let_go_or_its_holder_dies() {
    let postgres = TempPostgres::start();
    let (a, b) = (Catalog::connect(&postgres.url).await.unwrap(), Catalog::connect(&postgres.url).await.unwrap());

    // A holds the policy turn of one artefact; B asks for it meanwhile, and for another key.
    let turn = a.take_turn(kind_of("policy of artefact-1"), "policy of artefact-1").await.unwrap();
    let held = Arc::new(AtomicBool::new(true));
    let waiting = tokio::spawn(entered_while_held(b.clone(), "policy of artefact-1", held.clone()));
    let other = b
        .take_turn(kind_of("policy of artefact-2"), "policy of artefact-2")
        .await
        .expect("another key is another turn");
    drop(other);
    // B asks, again and again, while A holds the turn (were the turn not had by one alone, B would be in by now).
    give_the_waiter_time().await;
    assert!(!waiting.is_finished(), "B waits while A holds the turn");
    held.store(false, Ordering::SeqCst);
    drop(turn);
    assert!(!waiting.await.unwrap(), "B had the turn only once A let it go");

    // A gateway that dies holding a turn (its connections close) lets it go.
    let turn = a.take_turn(kind_of("membership in case-1"), "membership in case-1").await.unwrap();
    let held = Arc::new(AtomicBool::new(true));
    let waiting = tokio::spawn(entered_while_held(b.clone(), "membership in case-1", held.clone()));
    give_the_waiter_time().await;
    held.store(false, Ordering::SeqCst);
    std::mem::forget(turn);
    drop(a);
    support::terminate_the_holder(&postgres).await;
    assert!(!waiting.await.unwrap(), "B had the turn once A's connection was gone");
}

/// A turn held for longer than its transaction may sit idle (30 s; a transfer's completion holds it while a whole
/// artefact is checked and stored) is still held: its keeper asks the database something meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_held_longer_than_a_transaction_may_idle_is_still_held() {
    let postgres = TempPostgres::start();
    let (a, b) = (Catalog::connect(&postgres.url).await.unwrap(), Catalog::connect(&postgres.url).await.unwrap());
    let turn = a.take_turn(kind_of("transfer tr-1"), "transfer tr-1").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(35)).await;
    let held = Arc::new(AtomicBool::new(true));
    let waiting = tokio::spawn(entered_while_held(b, "transfer tr-1", held.clone()));
    give_the_waiter_time().await;
    held.store(false, Ordering::SeqCst);
    drop(turn);
    assert!(!waiting.await.unwrap(), "B had the turn only once A let it go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_turn_has_one_holder_in_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display());
    let catalog = Catalog::connect(&url).await.unwrap();
    let turn = catalog.take_turn(kind_of("quota of account-1"), "quota of account-1").await.unwrap();
    let held = Arc::new(AtomicBool::new(true));
    let waiting = tokio::spawn(entered_while_held(catalog.clone(), "quota of account-1", held.clone()));
    // However long it is given, the waiter does not get in while the turn is held.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished());
    held.store(false, Ordering::SeqCst);
    drop(turn);
    assert!(!waiting.await.unwrap());
}

/// Time for a waiter to ask for the turn many times over (it asks again every 100 ms at most). Only whether it got
/// in while the turn was held is judged ([`entered_while_held`]), never how long it took.
async fn give_the_waiter_time() {
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}
