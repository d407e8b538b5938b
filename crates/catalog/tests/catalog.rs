//! The catalog against a real SQLite file and a real PostgreSQL server.

use custodia_catalog::{
    Account, ArtefactRow, Case, Catalog, CatalogError, LogShelf, TransferRow, UploadChunk, UploadClaim, UploadRow,
    WidenRequestRow,
};
use custodia_tests::postgres::TempPostgres;

fn account(id: &str) -> Account {
    Account {
        id: id.into(),
        username: format!("user-{id}"),
        display_name: "Witness Name".into(),
        password_hash: "$argon2id$...".into(),
        is_admin: false,
        jurisdiction: "IT".into(),
    }
}

/// A resumable upload's chunks: recorded with a compare-and-set on the offset, its completion claimed by one,
/// and every object that held its bytes handed back when it is removed. `up-1` is 10 bytes long, at offset 0, and
/// expires at 50.
async fn exercise_upload_chunks(catalog: &Catalog) {
    let chunk = |offset: i64, size: i64, object: &str| UploadChunk { offset, size, object: object.into() };
    assert!(catalog.record_upload_chunk("up-1", &chunk(0, 4, "up-1.0.a"), 10).await.unwrap());
    // Another request at the same offset loses, and records nothing.
    assert!(!catalog.record_upload_chunk("up-1", &chunk(0, 6, "up-1.0.b"), 10).await.unwrap(), "a stale offset");
    assert!(!catalog.record_upload_chunk("up-1", &chunk(4, 2, "up-1.4.c"), 50).await.unwrap(), "expired");
    assert!(!catalog.record_upload_chunk("up-gone", &chunk(0, 2, "up-gone.0.d"), 10).await.unwrap(), "no upload");
    assert!(catalog.record_upload_chunk("up-1", &chunk(4, 2, "up-1.4.e"), 10).await.unwrap());
    let row = catalog.upload("up-1").await.unwrap().unwrap();
    assert_eq!((row.offset, row.completing), (6, None));
    assert_eq!(catalog.upload_chunks("up-1").await.unwrap(), [chunk(0, 4, "up-1.0.a"), chunk(4, 2, "up-1.4.e")]);
    assert!(catalog.upload_holds_object("up-1", "up-1.4.e").await.unwrap());
    assert!(!catalog.upload_holds_object("up-1", "up-1.0.b").await.unwrap(), "the loser's object is no part of it");

    // The last chunk claims the completion: one claim at a time, and no chunk recorded meanwhile.
    assert!(!catalog.claim_upload_completion("up-1", 4, "up-1.4.f", 11, 100).await.unwrap(), "not at that offset");
    assert!(catalog.claim_upload_completion("up-1", 6, "up-1.6.g", 11, 100).await.unwrap());
    assert!(!catalog.claim_upload_completion("up-1", 6, "up-1.6.h", 12, 100).await.unwrap(), "claimed already");
    assert!(!catalog.record_upload_chunk("up-1", &chunk(6, 2, "up-1.6.i"), 12).await.unwrap(), "claimed");
    assert!(catalog.upload_holds_object("up-1", "up-1.6.g").await.unwrap());
    let row = catalog.upload("up-1").await.unwrap().unwrap();
    let claim = UploadClaim { object: "up-1.6.g".into(), renewed_at: 11 };
    assert_eq!((row.offset, row.expires_at, row.completing), (6, 100, Some(claim)));
    assert!(catalog.renew_upload_claim("up-1", "up-1.6.g", 20).await.unwrap());
    assert!(!catalog.renew_upload_claim("up-1", "up-1.6.h", 20).await.unwrap(), "not its claim");
    // A claim renewed at 20 is not released as stale before 20, nor is the upload removed under it.
    assert!(!catalog.release_upload_claim("up-1", "up-1.6.g", 20).await.unwrap());
    assert_eq!(catalog.delete_upload("up-1", 20).await.unwrap(), None);
    assert!(catalog.release_upload_claim("up-1", "up-1.6.g", 21).await.unwrap());
    assert_eq!(catalog.upload("up-1").await.unwrap().unwrap().completing, None);
    assert!(catalog.claim_upload_completion("up-1", 6, "up-1.6.j", 30, 50).await.unwrap());

    // Removed, the upload hands back every object that held its bytes.
    let mut objects = catalog.delete_upload("up-1", i64::MAX).await.unwrap().unwrap();
    objects.sort();
    assert_eq!(objects, ["up-1.0.a", "up-1.4.e", "up-1.6.j"]);
    assert_eq!(catalog.upload("up-1").await.unwrap(), None);
    assert_eq!(catalog.upload_chunks("up-1").await.unwrap(), []);
    assert_eq!(catalog.delete_upload("up-1", i64::MAX).await.unwrap(), None, "gone already");
    let upload = new_upload();
    catalog.create_upload(&upload).await.unwrap();
}

/// The resumable upload the tests make: 10 bytes, none received, expiring at 50.
fn new_upload() -> UploadRow {
    UploadRow {
        id: "up-1".into(),
        case_id: "case-1".into(),
        account_id: "acct-1".into(),
        length: 10,
        offset: 0,
        metadata: String::new(),
        expires_at: 50,
        completing: None,
    }
}

async fn exercise(catalog: &Catalog) {
    catalog.create_account(&account("acct-1"), "2026-11-29T00:00:00Z").await.unwrap();
    catalog.create_account(&account("acct-2"), "2026-11-29T00:00:00Z").await.unwrap();
    let duplicate = catalog.create_account(&account("acct-1"), "2026-11-29T00:00:00Z").await;
    assert!(matches!(duplicate, Err(CatalogError::Conflict { .. })), "{duplicate:?}");
    assert!(!format!("{:?}", account("x")).contains("Witness Name"), "personal data stays out of Debug");

    catalog.create_session("tok-hash", "acct-1", 100).await.unwrap();
    assert_eq!(catalog.session_account("tok-hash", 99).await.unwrap().as_deref(), Some("acct-1"));
    assert_eq!(catalog.session_account("tok-hash", 100).await.unwrap(), None, "expired at its expiry time");

    let case = Case { id: "case-1".into(), title: "R v Smuggler".into(), created_at: "2026-11-29T00:00:00Z".into() };
    catalog.create_case(&case).await.unwrap();
    catalog.set_member("case-1", "acct-1", "prosecutor").await.unwrap();
    catalog.set_member("case-1", "acct-1", "clerk").await.unwrap();
    assert_eq!(catalog.member_role("case-1", "acct-1").await.unwrap().as_deref(), Some("clerk"));
    assert_eq!(catalog.member_role("case-1", "acct-2").await.unwrap(), None);
    assert_eq!(catalog.cases_of("acct-1").await.unwrap(), vec![(case.clone(), "clerk".to_owned())]);

    let artefact = ArtefactRow {
        id: "art-1".into(),
        case_id: "case-1".into(),
        sha256: "ab".repeat(32),
        size: 5,
        media_type: "video/webm".into(),
        manifest: b"{}".to_vec(),
        manifest_signature: "sig".into(),
        ledger_index: 7,
        provider_account: "acct-1".into(),
        policy: None,
        created_at: "2026-11-29T00:00:00Z".into(),
    };
    catalog.insert_artefact(&artefact).await.unwrap();
    assert_eq!(catalog.artefact("art-1").await.unwrap(), Some(artefact.clone()));
    assert_eq!(catalog.artefacts_in_case("case-1").await.unwrap(), vec![artefact]);

    catalog.index_custody(7, "case-1", Some("art-1"), b"r7").await.unwrap();
    catalog.index_custody(7, "case-1", Some("art-1"), b"r7").await.unwrap();
    catalog.index_custody(9, "case-1", Some("art-1"), b"r9").await.unwrap();
    assert_eq!(catalog.artefact_timeline("art-1").await.unwrap(), vec![(7, b"r7".to_vec()), (9, b"r9".to_vec())]);
    // The watermark stops at the first gap, however far past it other indexes are.
    assert_eq!(catalog.custody_indexed_up_to().await.unwrap(), 0);
    for index in 0..7 {
        catalog.index_custody(index, "case-1", None, b"case record").await.unwrap();
    }
    assert_eq!(catalog.custody_indexed_up_to().await.unwrap(), 8);
    assert_eq!(catalog.custody_indexed_between(5, 10).await.unwrap(), vec![5, 6, 7, 9]);
    catalog.index_custody(8, "case-1", None, b"case record").await.unwrap();
    assert_eq!(catalog.custody_indexed_up_to().await.unwrap(), 10);
    // The log's own entries (its timestamps) are indexed under no case, and read newest first, within bounds.
    for index in [10, 11, 12] {
        catalog.index_custody(index, "", None, format!("stamp {index}").as_bytes()).await.unwrap();
    }
    let stamp = |index: i64| (index, format!("stamp {index}").into_bytes());
    assert_eq!(
        catalog.log_entries_newest_first(LogShelf::Timestamps, 0, 12, 8).await.unwrap(),
        vec![stamp(11), stamp(10)]
    );
    assert_eq!(catalog.log_entries_newest_first(LogShelf::Timestamps, 11, 100, 1).await.unwrap(), vec![stamp(12)]);
    assert_eq!(catalog.log_entries_newest_first(LogShelf::Timestamps, 0, 10, 8).await.unwrap(), vec![]);

    let request = WidenRequestRow {
        id: "wr-1".into(),
        artefact_id: "art-1".into(),
        requested_by: "acct-2".into(),
        request: "{}".into(),
        status: "pending".into(),
        decided_by: None,
        decision_ledger_index: None,
        created_at: "2026-11-29T00:00:00Z".into(),
    };
    catalog.insert_widen_request(&request).await.unwrap();
    assert!(
        catalog.decide_widen_request("wr-1", "approved", "acct-1", 11, Some(("art-1", "{\"p\":1}"))).await.unwrap()
    );
    assert!(!catalog.decide_widen_request("wr-1", "refused", "acct-1", 12, None).await.unwrap(), "decided once");
    assert_eq!(catalog.artefact("art-1").await.unwrap().unwrap().policy.as_deref(), Some("{\"p\":1}"));

    let upload = new_upload();
    catalog.create_upload(&upload).await.unwrap();
    exercise_upload_chunks(catalog).await;
    assert_eq!(catalog.expired_uploads(50).await.unwrap().len(), 1);

    // A witness of our own log: an alarm before any cosignature, then a cosignature clears it, then a later alarm
    // keeps the cosignature.
    catalog.store_witness_alarm("w1+01+key", "refused-as-inconsistent", "t1").await.unwrap();
    let alarmed = &catalog.witness_cosignatures().await.unwrap()[0];
    assert_eq!((alarmed.size, alarmed.alarm.as_deref()), (None, Some("refused-as-inconsistent")));
    catalog.store_witness_cosignature("w1+01+key", 5, "note 5", "line 5", "t2").await.unwrap();
    catalog.store_witness_cosignature("w1+01+key", 7, "note 7", "line 7", "t3").await.unwrap();
    catalog.store_witness_alarm("w1+01+key", "witness-ahead-of-log", "t4").await.unwrap();
    let stored = catalog.witness_cosignatures().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].size, stored[0].checkpoint.as_deref(), stored[0].cosignature.as_deref(), stored[0].alarm.as_deref()),
        (Some(7), Some("note 7"), Some("line 7"), Some("witness-ahead-of-log"))
    );

    // A transfer, read whole and without its offer (chunk after chunk, its chain is not read).
    let transfer = TransferRow {
        id: "xfer-1".into(),
        direction: "in".into(),
        partner: "tn-tunis".into(),
        artefact_id: None,
        case_id: Some("case-1".into()),
        account_id: Some("acct-2".into()),
        size: 10,
        sha256: "00".repeat(32),
        chunk_size: 4,
        received: 0,
        stage: "receiving".into(),
        offer: Some("{\"chain\":\"...\"}".into()),
        created_at: "2026-12-05T00:00:00Z".into(),
        updated_at: "2026-12-05T00:00:00Z".into(),
    };
    catalog.insert_transfer(&transfer).await.unwrap();
    assert_eq!(catalog.transfer("xfer-1").await.unwrap().unwrap().offer, transfer.offer);
    let brief = catalog.transfer_without_offer("xfer-1").await.unwrap().unwrap();
    assert_eq!((brief.offer, brief.size, brief.stage.as_str()), (None, 10, "receiving"));
    assert_eq!(catalog.received_offer("art-x").await.unwrap(), None, "not yet received");
    catalog.settle_transfer("xfer-1", Some("art-x"), None, None).await.unwrap();
    assert_eq!(catalog.received_offer("art-x").await.unwrap(), transfer.offer);

    // Its staging: on one gateway's disk, counted there only; another gateway that takes it over starts from 0,
    // and the first can count nothing more, nor note the artefact it would have made.
    assert_eq!(catalog.transfer_staging("xfer-1").await.unwrap(), None);
    assert!(catalog.stage_transfer_here("xfer-1", "stg-a", None, 0).await.unwrap());
    assert!(!catalog.stage_transfer_here("xfer-1", "stg-b", None, 0).await.unwrap(), "staged on A already");
    assert!(catalog.count_staged("xfer-1", "stg-a", 4, "t1").await.unwrap());
    assert_eq!(catalog.transfer("xfer-1").await.unwrap().unwrap().received, 4);
    assert!(!catalog.stage_transfer_here("xfer-1", "stg-b", Some("stg-c"), 0).await.unwrap(), "not where B saw it");
    assert!(catalog.stage_transfer_here("xfer-1", "stg-b", Some("stg-a"), 0).await.unwrap());
    let staging = catalog.transfer_staging("xfer-1").await.unwrap().unwrap();
    assert_eq!((staging.staged_by.as_str(), staging.received), ("stg-b", 0));
    assert_eq!(catalog.transfer("xfer-1").await.unwrap().unwrap().received, 0, "nothing of A's counts at B");
    assert!(!catalog.count_staged("xfer-1", "stg-a", 8, "t2").await.unwrap(), "A's sync after the takeover");
    assert!(!catalog.note_received_artefact("xfer-1", "stg-a", "art-a").await.unwrap());
    assert!(catalog.count_staged("xfer-1", "stg-b", 8, "t3").await.unwrap());
    assert!(catalog.note_received_artefact("xfer-1", "stg-b", "art-b").await.unwrap());
    let row = catalog.transfer("xfer-1").await.unwrap().unwrap();
    assert_eq!((row.received, row.artefact_id.as_deref()), (8, Some("art-b")));
}

/// The names of the catalog's indexes, read from the database's own tables.
async fn index_names(pool: &sqlx::AnyPool, sqlite: bool) -> Vec<String> {
    use sqlx::Row as _;
    let query = if sqlite {
        "SELECT name FROM sqlite_master WHERE type = 'index'"
    } else {
        "SELECT CAST(indexname AS TEXT) AS name FROM pg_indexes WHERE schemaname = 'public'"
    };
    let rows = sqlx::query(query).fetch_all(pool).await.unwrap();
    rows.iter().map(|row| row.try_get::<String, _>("name").unwrap()).collect()
}

/// Migration 6 applies, on a new catalog and on one made before it: the sums behind the storage quota have their
/// indexes.
async fn quota_sums_have_their_indexes(url: &str, sqlite: bool) {
    const INDEXES: [&str; 2] = ["artefacts_by_provider", "uploads_by_account"];
    let catalog = Catalog::connect(url).await.unwrap();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let names = index_names(&pool, sqlite).await;
    assert!(INDEXES.iter().all(|index| names.iter().any(|name| name == index)), "{names:?}");
    // A catalog from before the migration (without the indexes, at version 6) gains them when it is opened.
    drop(catalog);
    for statement in [
        "DROP INDEX artefacts_by_provider",
        "DROP INDEX uploads_by_account",
        "DELETE FROM schema_version WHERE version >= 7",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    assert!(!index_names(&pool, sqlite).await.iter().any(|name| INDEXES.contains(&name.as_str())));
    let reopened = Catalog::connect(url).await.unwrap();
    let names = index_names(&pool, sqlite).await;
    assert!(INDEXES.iter().all(|index| names.iter().any(|name| name == index)), "{names:?}");
    assert_eq!(reopened.count_accounts().await.unwrap(), 2, "the migration kept what the catalog held");
    if sqlite {
        // SQLite reads the quota's sum from the index alone (asked on a new connection, which knows the new
        // index: a query plan is not checked against a schema that changed since the connection read it).
        use sqlx::Row as _;
        let pool = sqlx::AnyPool::connect(url).await.unwrap();
        let plan = sqlx::query(
            "EXPLAIN QUERY PLAN SELECT COALESCE(SUM(size), 0) FROM artefacts WHERE provider_account = 'acct-1'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let plan: Vec<String> = plan.iter().map(|row| row.try_get::<String, _>("detail").unwrap()).collect();
        assert!(plan.iter().any(|step| step.contains("artefacts_by_provider")), "{plan:?}");
    }
}

#[tokio::test]
async fn sqlite_catalog_round_trips_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display());
    let catalog = Catalog::connect(&url).await.unwrap();
    exercise(&catalog).await;
    drop(catalog);
    let reopened = Catalog::connect(&url).await.unwrap();
    assert_eq!(reopened.count_accounts().await.unwrap(), 2, "migrations run once; data persists");
    drop(reopened);
    quota_sums_have_their_indexes(&url, true).await;
}

#[tokio::test]
async fn postgres_catalog_round_trips() {
    let server = TempPostgres::start();
    let catalog = Catalog::connect(&server.url).await.unwrap();
    exercise(&catalog).await;
    drop(catalog);
    let reopened = Catalog::connect(&server.url).await.unwrap();
    assert_eq!(reopened.count_accounts().await.unwrap(), 2);
    drop(reopened);
    quota_sums_have_their_indexes(&server.url, false).await;
}

/// Gateways starting at once on one new PostgreSQL database: every one connects, and the migrations are applied
/// once each, one after another (under an advisory lock), not raced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_starting_at_once_migrate_once() {
    let server = TempPostgres::start();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = server.url.clone();
            tokio::spawn(async move { Catalog::connect(&url).await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().expect("every gateway starts");
    }
    let pool = sqlx::AnyPool::connect(&server.url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version").fetch_all(&pool).await.unwrap();
    assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>(), "each migration once, in order");
    assert!(!versions.is_empty());
}
