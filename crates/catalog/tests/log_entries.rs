//! The log's own entries (`Catalog::sequence_log_entry`: a checkpoint's RFC 3161 timestamp, a pin of the partner
//! registry) are sequenced as custody records are: the transaction that gives one its index writes its row of the
//! custody index, under no case, and keeps its openings, on PostgreSQL and on SQLite alike. So the index's
//! watermark stays contiguous, and an entry whose transaction fails leaves neither a row nor an opening, nor an
//! index taken: nothing for a start-up to find and mend.

mod support;

use custodia_catalog::{Catalog, CatalogError, EntryOpenings, LogShelf, TurnKind};
use custodia_tests::postgres::TempPostgres;

/// Sequences a custody record about `artefact` of case `case-1`: its index and the prior it was made from.
async fn record(catalog: &Catalog, artefact: &str, n: usize) -> Result<(u64, Option<u64>), CatalogError> {
    let mut made_from = None;
    let sequenced = catalog
        .sequence_custody("case-1", Some(artefact), "{}", None, |prior| {
            made_from = Some(prior);
            Ok::<_, std::convert::Infallible>((format!("record {n}").into_bytes(), format!("sha-{n}")))
        })
        .await?;
    Ok((sequenced.unwrap().index, made_from.unwrap()))
}

/// A pin of the partner registry, with its openings kept under `sha`.
async fn pin(catalog: &Catalog, sha: &str) -> Result<u64, CatalogError> {
    let openings = EntryOpenings { record_sha256: sha, openings: "{\"registry\":\"opened\"}" };
    let entry = format!("pin {sha}").into_bytes();
    Ok(catalog.sequence_log_entry(LogShelf::PartnerRegistryPins, entry, Some(openings)).await?.index)
}

/// A timestamp entry (no openings).
async fn timestamp(catalog: &Catalog, n: usize) -> Result<u64, CatalogError> {
    Ok(catalog.sequence_log_entry(LogShelf::Timestamps, format!("timestamp {n}").into_bytes(), None).await?.index)
}

/// The sequence row's next index.
async fn next(pool: &sqlx::AnyPool) -> i64 {
    sqlx::query_scalar("SELECT next FROM log_sequence WHERE id = 1").fetch_one(pool).await.unwrap()
}

/// Timestamps and pins between custody records: each indexed under no case, where the bundles and the pin's check
/// read them, with its openings; the watermark contiguous with the sequence row; chains of custody records pass
/// over them.
async fn a_log_entry_is_indexed_in_the_transaction_that_sequences_it(url: &str) {
    let catalog = Catalog::connect(url).await.unwrap();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    assert_eq!(record(&catalog, "a", 0).await.unwrap(), (0, None));
    assert_eq!(timestamp(&catalog, 1).await.unwrap(), 1);
    assert_eq!(pin(&catalog, "sha-pin").await.unwrap(), 2);
    assert_eq!(record(&catalog, "a", 3).await.unwrap(), (3, Some(0)), "chained past the log's own entries");
    // Several at once, from several tasks: contiguous all the same.
    let at_once: Vec<_> = (4..12)
        .map(|n| {
            let catalog = catalog.clone();
            tokio::spawn(async move { timestamp(&catalog, n).await.unwrap() })
        })
        .collect();
    let mut indices = Vec::new();
    for task in at_once {
        indices.push(task.await.unwrap());
    }
    indices.sort_unstable();
    assert_eq!(indices, (4..12).collect::<Vec<u64>>());

    assert_eq!(catalog.custody_indexed_up_to().await.unwrap(), 12, "no gap below the sequence's next");
    assert_eq!(next(&pool).await, 12);
    let stamps = catalog.log_entries_newest_first(LogShelf::Timestamps, 0, 4, 10).await.unwrap();
    assert_eq!(stamps, vec![(1, b"timestamp 1".to_vec())], "the timestamps' shelf: timestamps alone");
    let pins = catalog.log_entries_newest_first(LogShelf::PartnerRegistryPins, 0, 100, 10).await.unwrap();
    assert_eq!(pins, vec![(2, b"pin sha-pin".to_vec())], "the pins' shelf: pins alone");
    let artefact_of_pin: Option<String> =
        sqlx::query_scalar("SELECT artefact_id FROM custody_index WHERE ledger_index = 2")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(artefact_of_pin, None);
    assert_eq!(catalog.openings("sha-pin").await.unwrap().as_deref(), Some("{\"registry\":\"opened\"}"));
}

/// A log entry whose transaction the database refuses (a trigger on the custody index, as a failing disk would)
/// takes no index, and keeps no opening: its openings were written in the same transaction. The next entry takes
/// the index it would have had, so the watermark stays contiguous.
async fn a_log_entry_the_database_refuses_leaves_no_gap(url: &str) {
    let catalog = Catalog::connect(url).await.unwrap();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let refuse: &[&str] = if url.starts_with("sqlite:") {
        &["CREATE TRIGGER refuse_caseless BEFORE INSERT ON custody_index WHEN NEW.case_id <> 'case-1' \
           BEGIN SELECT RAISE(ABORT, 'injected: the disk is failing'); END"]
    } else {
        &[
            "CREATE FUNCTION refuse_caseless() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.case_id <> 'case-1' THEN RAISE EXCEPTION 'injected: the disk is failing'; END IF; \
             RETURN NEW; END $$",
            "CREATE TRIGGER refuse_caseless BEFORE INSERT ON custody_index FOR EACH ROW \
             EXECUTE FUNCTION refuse_caseless()",
        ]
    };
    assert_eq!(record(&catalog, "a", 0).await.unwrap(), (0, None));
    for statement in refuse {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let refused = pin(&catalog, "sha-refused").await;
    assert!(
        matches!(&refused, Err(err @ CatalogError::BatchFailed { .. }) if err.to_string().contains("injected")),
        "{refused:?}"
    );
    let refused = timestamp(&catalog, 1).await;
    assert!(matches!(refused, Err(CatalogError::BatchFailed { .. })), "{refused:?}");
    assert_eq!(catalog.openings("sha-refused").await.unwrap(), None, "no opening without its entry");
    assert_eq!(next(&pool).await, 1, "no index taken");
    assert_eq!(record(&catalog, "a", 2).await.unwrap(), (1, Some(0)), "custody records go on meanwhile");

    let mend = if url.starts_with("sqlite:") {
        "DROP TRIGGER refuse_caseless"
    } else {
        "DROP TRIGGER refuse_caseless ON custody_index"
    };
    sqlx::query(mend).execute(&pool).await.unwrap();
    assert_eq!(pin(&catalog, "sha-pin").await.unwrap(), 2);
    assert_eq!(catalog.custody_indexed_up_to().await.unwrap(), 3, "contiguous");
    assert_eq!(catalog.custody_indexed_between(0, 100).await.unwrap(), vec![0, 1, 2]);
}

/// Pins indexed under no case before the pins had a shelf of their own (and timestamps beside them) are found on
/// their shelves once the catalog is migrated: the pins moved, the timestamps and custody records where they were.
async fn pins_indexed_before_their_shelf_move_to_it(url: &str) {
    let catalog = Catalog::connect(url).await.unwrap();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let pin = br#"{"at":"2026-01-01T00:00:00Z","kind":"partners_pinned","registry":"c0ffee","v":1}"#.to_vec();
    let stamp = br#"{"checkpoint":{"root":"AAAA","size":1},"kind":"checkpoint_timestamp","token":"MII","v":1}"#;
    let custody = br#"{"kind":"partners_pinned (a custody record about a case, never moved)"}"#.to_vec();
    for (index, case, record) in [(0_i64, "", stamp.to_vec()), (1, "", pin.clone()), (2, "case-1", custody)] {
        catalog.index_custody(index, case, None, &record).await.unwrap();
    }
    let last: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_version").fetch_one(&pool).await.unwrap();
    sqlx::query("DELETE FROM schema_version WHERE version = $1").bind(last).execute(&pool).await.unwrap();
    let catalog = Catalog::connect(url).await.unwrap();
    let on = |shelf| {
        let catalog = catalog.clone();
        async move { catalog.log_entries_newest_first(shelf, 0, 10, 10).await.unwrap() }
    };
    assert_eq!(on(LogShelf::PartnerRegistryPins).await, vec![(1, pin)], "the pin moved to its shelf");
    assert_eq!(on(LogShelf::Timestamps).await, vec![(0, stamp.to_vec())], "the timestamp stays");
    let case: String =
        sqlx::query_scalar("SELECT case_id FROM custody_index WHERE ledger_index = 2").fetch_one(&pool).await.unwrap();
    assert_eq!(case, "case-1");
}

#[tokio::test]
async fn pins_indexed_before_their_shelf_move_to_it_on_postgres() {
    let server = TempPostgres::start();
    pins_indexed_before_their_shelf_move_to_it(&server.url).await;
}

#[tokio::test]
async fn pins_indexed_before_their_shelf_move_to_it_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    pins_indexed_before_their_shelf_move_to_it(&sqlite(&dir)).await;
}

fn sqlite(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_entry_is_indexed_in_the_transaction_that_sequences_it_on_postgres() {
    let server = TempPostgres::start();
    a_log_entry_is_indexed_in_the_transaction_that_sequences_it(&server.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_entry_is_indexed_in_the_transaction_that_sequences_it_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_log_entry_is_indexed_in_the_transaction_that_sequences_it(&sqlite(&dir)).await;
}

#[tokio::test]
async fn a_log_entry_the_database_refuses_leaves_no_gap_on_postgres() {
    let server = TempPostgres::start();
    a_log_entry_the_database_refuses_leaves_no_gap(&server.url).await;
}

#[tokio::test]
async fn a_log_entry_the_database_refuses_leaves_no_gap_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_log_entry_the_database_refuses_leaves_no_gap(&sqlite(&dir)).await;
}

/// The partner registry's turn has one holder among gateways (two starting at once check and pin one after the
/// other), and a pin made under it is stored only while its lock is held: once its connection is gone, the pin is
/// refused, retryably, and nothing of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_is_made_under_the_partner_registry_turn_on_postgres() {
    let postgres = TempPostgres::start();
    let (a, b) = (Catalog::connect(&postgres.url).await.unwrap(), Catalog::connect(&postgres.url).await.unwrap());
    const KEY: &str = "the partner registry";
    let turn = a.take_turn(TurnKind::PartnerRegistry, KEY).await.unwrap();
    let waiting = tokio::spawn({
        let b = b.clone();
        async move {
            let turn = b.take_turn(TurnKind::PartnerRegistry, KEY).await.unwrap();
            // What B finds once it holds the turn: A's pin, already sequenced.
            (b.log_entries_newest_first(LogShelf::PartnerRegistryPins, 0, i64::MAX, 10).await.unwrap(), turn)
        }
    });
    // The turn is taken on the pool it shares with the quotas': A takes an account's quota turn meanwhile.
    drop(a.take_turn(TurnKind::Quota, "quota of account-1").await.unwrap());
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "B waits while A holds the turn");
    assert_eq!(pin(&a.within_turn(&turn), "sha-a").await.unwrap(), 0, "held: stored");
    drop(turn);
    let (found, b_turn) = waiting.await.unwrap();
    assert_eq!(found, vec![(0, b"pin sha-a".to_vec())], "B's check sees A's pin");
    drop(b_turn);

    let turn = a.take_turn(TurnKind::PartnerRegistry, KEY).await.unwrap();
    support::terminate_the_holder(&postgres).await;
    let refused = pin(&a.within_turn(&turn), "sha-lost").await;
    assert!(matches!(refused, Err(CatalogError::TurnLost)), "{refused:?}");
    assert_eq!(a.openings("sha-lost").await.unwrap(), None);
    assert_eq!(a.custody_indexed_between(0, 100).await.unwrap(), vec![0], "nothing of the refused pin");
    drop(turn);
}
