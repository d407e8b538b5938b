//! Hearing leases (`hearing_leases`): the compare-and-set that gives a hearing to one node, and the fence that
//! refuses a stale holder's custody records and journal entries inside the transaction that would write them. On
//! PostgreSQL and on SQLite, one code path.

use custodia_catalog::{Catalog, CatalogError, HearingFence};
use custodia_tests::postgres::TempPostgres;

const HEARING: &str = "h-lease";
/// Times in milliseconds since the Unix epoch, chosen by the test: the catalog takes them as given.
const T0: i64 = 1_000_000;
const EXPIRY: i64 = 15_000;

fn fence(node: &str, epoch: i64) -> HearingFence {
    HearingFence { hearing_id: HEARING.to_owned(), node: node.to_owned(), epoch }
}

async fn lease_compare_and_set(catalog: &Catalog) {
    // Nobody holds it: node A takes it under epoch 1.
    assert_eq!(catalog.take_hearing_lease(HEARING, "node-a", T0, T0 + EXPIRY).await.unwrap(), Some(1));
    // B may not while A's lease runs; A taking it again keeps its epoch.
    assert_eq!(catalog.take_hearing_lease(HEARING, "node-b", T0 + 1, T0 + 1 + EXPIRY).await.unwrap(), None);
    assert_eq!(catalog.take_hearing_lease(HEARING, "node-a", T0 + 2, T0 + 2 + EXPIRY).await.unwrap(), Some(1));
    assert!(catalog.renew_hearing_lease(&fence("node-a", 1), T0 + 10 + EXPIRY).await.unwrap());
    assert_eq!(catalog.unheld_hearings(T0 + 10).await.unwrap(), Vec::<String>::new(), "no journal yet");
    catalog.append_hearing_journal(HEARING, 0, "{}", Some(&fence("node-a", 1))).await.unwrap();
    assert_eq!(catalog.unheld_hearings(T0 + 10).await.unwrap(), Vec::<String>::new(), "held by A");

    // Past its expiry, A's lease is B's to take, under epoch 2; A's renewal then fails, and so does C's take.
    let later = T0 + 10 + EXPIRY;
    assert_eq!(catalog.unheld_hearings(later).await.unwrap(), vec![HEARING.to_owned()]);
    assert_eq!(catalog.take_hearing_lease(HEARING, "node-b", later, later + EXPIRY).await.unwrap(), Some(2));
    assert!(!catalog.renew_hearing_lease(&fence("node-a", 1), later + EXPIRY).await.unwrap());
    assert_eq!(catalog.take_hearing_lease(HEARING, "node-c", later + 1, later + EXPIRY).await.unwrap(), None);
    let lease = catalog.hearing_lease(HEARING).await.unwrap().unwrap();
    assert_eq!((lease.node.as_str(), lease.epoch, lease.expires_at), ("node-b", 2, later + EXPIRY));

    // Past B's expiry, C takes it, under epoch 3.
    let latest = later + EXPIRY;
    assert_eq!(catalog.unheld_hearings(latest).await.unwrap(), vec![HEARING.to_owned()]);
    assert_eq!(catalog.take_hearing_lease(HEARING, "node-c", latest, latest + EXPIRY).await.unwrap(), Some(3));
    assert!(catalog.hearing_lease("h-never").await.unwrap().is_none());
}

/// A stale fence sequences nothing and journals nothing: the error says the lease was lost, no index is used
/// up (the next record, under the current fence, takes index 0), and the journal is as it was.
async fn stale_fence_writes_nothing(catalog: &Catalog) {
    assert_eq!(catalog.take_hearing_lease(HEARING, "node-a", T0, T0 + EXPIRY).await.unwrap(), Some(1));
    catalog.append_hearing_journal(HEARING, 0, "{\"n\":0}", Some(&fence("node-a", 1))).await.unwrap();
    let later = T0 + EXPIRY;
    assert_eq!(catalog.take_hearing_lease(HEARING, "node-b", later, later + EXPIRY).await.unwrap(), Some(2));

    let mut made = 0;
    let stale = catalog
        .sequence_custody("case", Some("artefact"), "{}", Some(&fence("node-a", 1)), |prior| {
            made += 1;
            Ok::<_, std::convert::Infallible>((format!("{prior:?}").into_bytes(), "stale".to_owned()))
        })
        .await;
    assert!(
        matches!(&stale, Err(CatalogError::LeaseLost { hearing_id, epoch: 1 }) if hearing_id == HEARING),
        "{stale:?}"
    );
    assert_eq!(made, 0, "the stale record was never even made");
    let journal = catalog.append_hearing_journal(HEARING, 1, "{\"n\":1}", Some(&fence("node-a", 1))).await;
    assert!(matches!(journal, Err(CatalogError::LeaseLost { .. })), "{journal:?}");
    // A wrong node under the current epoch is as stale.
    let journal = catalog.append_hearing_journal(HEARING, 1, "{\"n\":1}", Some(&fence("node-c", 2))).await;
    assert!(matches!(journal, Err(CatalogError::LeaseLost { .. })), "{journal:?}");
    assert_eq!(catalog.hearing_journal(HEARING).await.unwrap(), vec!["{\"n\":0}".to_owned()]);

    // The holder writes: the first index of the log, the artefact's first record.
    let sequenced = catalog
        .sequence_custody("case", Some("artefact"), "{}", Some(&fence("node-b", 2)), |prior| {
            Ok::<_, std::convert::Infallible>((format!("{prior:?}").into_bytes(), "fresh".to_owned()))
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((sequenced.index, sequenced.entry), (0, b"None".to_vec()));
    catalog.append_hearing_journal(HEARING, 1, "{\"n\":1}", Some(&fence("node-b", 2))).await.unwrap();
    assert_eq!(catalog.hearing_journal(HEARING).await.unwrap().len(), 2);
}

fn sqlite(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join(name).display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_taken_only_when_free_expired_or_ours_on_postgres() {
    let server = TempPostgres::start();
    lease_compare_and_set(&Catalog::connect(&server.url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_taken_only_when_free_expired_or_ours_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    lease_compare_and_set(&Catalog::connect(&sqlite(&dir, "catalog.db")).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fence_sequences_and_journals_nothing_on_postgres() {
    let server = TempPostgres::start();
    stale_fence_writes_nothing(&Catalog::connect(&server.url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fence_sequences_and_journals_nothing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    stale_fence_writes_nothing(&Catalog::connect(&sqlite(&dir, "catalog.db")).await.unwrap()).await;
}
