//! Batch sequencing (`Catalog::sequence_custody`): the requests that arrive while a sequencing transaction runs go
//! together into the next one, on PostgreSQL and on SQLite alike. A trigger records every move of the sequence row
//! (`log_sequence`), so a test sees how many transactions took the records and what each reserved.
//!
//! The tests that count transactions run on a current-thread runtime: the tasks they spawn all queue their requests
//! before the sequencing task (spawned by the first of them) runs, so one transaction takes them all, whatever the
//! machine's load.

use std::collections::HashMap;

use custodia_catalog::{
    Account, ArtefactRow, Case, Catalog, CatalogError, HearingFence, KeptEvidence, Registration, Sequenced,
    TransferEvidenceRow, TransferMove, TransferRow, UploadChunk, UploadCompletion, UploadRow,
};
use custodia_tests::postgres::TempPostgres;

const HEARING: &str = "h-batch";

/// What one request asks: the artefact its record is about, the fence it carries, and whether making its record
/// fails.
#[derive(Clone, Default)]
struct Ask {
    artefact: Option<&'static str>,
    fence: Option<HearingFence>,
    fails: bool,
}

fn about(artefact: &'static str) -> Ask {
    Ask { artefact: Some(artefact), ..Ask::default() }
}

/// What became of a request: its answer, and the prior its record was made from (`None` if it was never made).
#[derive(Debug)]
struct Outcome {
    answer: custodia_catalog::Result<Result<Sequenced, String>>,
    made_from: Option<Option<u64>>,
}

impl Outcome {
    fn index(&self) -> u64 {
        match &self.answer {
            Ok(Ok(sequenced)) => sequenced.index,
            other => panic!("not sequenced: {other:?}"),
        }
    }
}

/// The entry request `n` makes from `prior`.
fn entry(n: usize, prior: Option<u64>) -> Vec<u8> {
    format!("record {n} after {prior:?}").into_bytes()
}

/// Spawns a task per ask, in order, each sequencing request `n`'s record ([`entry`], its SHA-256 standing in as
/// `sha-n`, its openings `{"n":n}`); their outcomes, in the same order.
async fn sequence_all(catalog: &Catalog, asks: Vec<Ask>, first: usize) -> Vec<Outcome> {
    let tasks: Vec<_> = asks
        .into_iter()
        .enumerate()
        .map(|(n, ask)| {
            let n = first + n;
            let catalog = catalog.clone();
            tokio::spawn(async move {
                let mut made_from = None;
                let openings = format!("{{\"n\":{n}}}");
                let answer = catalog
                    .sequence_custody("case", ask.artefact, &openings, ask.fence.as_ref(), |prior| {
                        made_from = Some(prior);
                        if ask.fails {
                            return Err(format!("request {n} makes no record"));
                        }
                        Ok((entry(n, prior), format!("sha-{n}")))
                    })
                    .await;
                Outcome { answer, made_from }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

/// A catalog at `url` whose sequence row's moves a trigger records, and a pool of the test's own to read them.
async fn catalog_recording_moves(url: &str) -> (Catalog, sqlx::AnyPool) {
    let catalog = Catalog::connect(url).await.unwrap();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let statements: &[&str] = if url.starts_with("sqlite:") {
        &[
            "CREATE TABLE sequence_moves (seq INTEGER PRIMARY KEY AUTOINCREMENT, old_next BIGINT NOT NULL, \
             new_next BIGINT NOT NULL)",
            "CREATE TRIGGER record_sequence_move AFTER UPDATE ON log_sequence BEGIN \
             INSERT INTO sequence_moves (old_next, new_next) VALUES (OLD.next, NEW.next); END",
        ]
    } else {
        &[
            "CREATE TABLE sequence_moves (seq BIGSERIAL PRIMARY KEY, old_next BIGINT NOT NULL, \
             new_next BIGINT NOT NULL)",
            "CREATE FUNCTION record_sequence_move() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             INSERT INTO sequence_moves (old_next, new_next) VALUES (OLD.next, NEW.next); RETURN NEW; END $$",
            "CREATE TRIGGER record_sequence_move AFTER UPDATE ON log_sequence FOR EACH ROW \
             EXECUTE FUNCTION record_sequence_move()",
        ]
    };
    for statement in statements {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    (catalog, pool)
}

/// Every committed move of the sequence row, in order: (next before, next after).
async fn moves(pool: &sqlx::AnyPool) -> Vec<(i64, i64)> {
    sqlx::query_as("SELECT old_next, new_next FROM sequence_moves ORDER BY seq").fetch_all(pool).await.unwrap()
}

/// Checks that each sequenced request's record chains to the record before it about its artefact, by index, and
/// that its entry is the one it made from that prior.
fn assert_chained(outcomes: &[Outcome], asks: &[Ask], first: usize, mut latest: HashMap<&'static str, u64>) {
    let mut sequenced: Vec<(u64, usize)> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, outcome)| matches!(outcome.answer, Ok(Ok(_))))
        .map(|(n, outcome)| (outcome.index(), n))
        .collect();
    sequenced.sort_unstable();
    for (index, n) in sequenced {
        let prior = asks[n].artefact.and_then(|artefact| latest.insert(artefact, index));
        assert_eq!(outcomes[n].made_from, Some(prior), "request {} at {index} chains to {prior:?}", first + n);
        let Ok(Ok(made)) = &outcomes[n].answer else { unreachable!() };
        assert_eq!(made.entry, entry(first + n, prior), "request {}'s entry as it made it", first + n);
    }
}

/// A hundred requests about three artefacts (and none) from one process, all waiting at once: one transaction
/// takes them all, in the order they came, each chained to the one before it about its artefact; a second batch
/// chains to the first's records, read from the custody index.
async fn waiting_requests_go_in_one_transaction(url: &str) {
    let (catalog, pool) = catalog_recording_moves(url).await;
    let cycle = [about("a"), about("b"), Ask::default(), about("c")];
    let asks: Vec<Ask> = (0..100).map(|n| cycle[n % cycle.len()].clone()).collect();
    let outcomes = sequence_all(&catalog, asks.clone(), 0).await;
    let indices: Vec<u64> = outcomes.iter().map(Outcome::index).collect();
    assert_eq!(indices, (0..100).collect::<Vec<_>>(), "contiguous, in the order the requests came");
    assert_chained(&outcomes, &asks, 0, HashMap::new());
    assert_eq!(moves(&pool).await, vec![(0, 100)], "one transaction, one move of the sequence row for all");
    assert_eq!(catalog.custody_indexed_between(0, 1000).await.unwrap(), (0..100).collect::<Vec<i64>>());
    assert_eq!(catalog.openings("sha-99").await.unwrap().as_deref(), Some("{\"n\":99}"));

    let latest = HashMap::from([("a", 96), ("b", 97), ("c", 99)]);
    let outcomes = sequence_all(&catalog, asks[..50].to_vec(), 100).await;
    let indices: Vec<u64> = outcomes.iter().map(Outcome::index).collect();
    assert_eq!(indices, (100..150).collect::<Vec<_>>());
    assert_chained(&outcomes, &asks[..50], 100, latest);
    assert_eq!(moves(&pool).await, vec![(0, 100), (100, 150)]);
}

/// A lease taken by node B from node A (epoch 2), and a batch with records under B's fence, under A's stale one
/// and under none: the stale one alone is refused, its record never made, and the others are sequenced together,
/// contiguous and chained as if it had never been asked.
async fn a_stale_fence_refuses_its_request_alone(url: &str) {
    let (catalog, pool) = catalog_recording_moves(url).await;
    assert_eq!(catalog.take_hearing_lease(HEARING, "node-a", 1_000, 2_000).await.unwrap(), Some(1));
    assert_eq!(catalog.take_hearing_lease(HEARING, "node-b", 2_000, 3_000).await.unwrap(), Some(2));
    let fenced = |node: &str, epoch| Ask {
        fence: Some(HearingFence { hearing_id: HEARING.to_owned(), node: node.to_owned(), epoch }),
        ..about("a")
    };
    let asks = vec![about("a"), fenced("node-b", 2), fenced("node-a", 1), fenced("node-b", 2), Ask::default()];
    let outcomes = sequence_all(&catalog, asks.clone(), 0).await;
    assert!(
        matches!(&outcomes[2].answer, Err(CatalogError::LeaseLost { hearing_id, epoch: 1 }) if hearing_id == HEARING),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(outcomes[2].made_from, None, "the stale record was never made");
    let indices: Vec<u64> = [0, 1, 3, 4].map(|n| outcomes[n].index()).to_vec();
    assert_eq!(indices, vec![0, 1, 2, 3]);
    assert_chained(&outcomes, &asks, 0, HashMap::new());
    assert_eq!(moves(&pool).await, vec![(0, 4)], "the four in one transaction with the refused one");
    assert_eq!(catalog.openings("sha-2").await.unwrap(), None);
}

/// A batch in which two requests fail to make their records: they get their own errors and no index; the others
/// are sequenced together, contiguous, each chained past the failed ones. The transaction moves the sequence once,
/// past the four made. A batch in which nothing is made moves nothing.
async fn a_record_not_made_takes_no_index(url: &str) {
    let (catalog, pool) = catalog_recording_moves(url).await;
    let failing = |artefact| Ask { fails: true, ..about(artefact) };
    let asks = vec![about("a"), failing("a"), about("a"), Ask::default(), failing("b"), about("b")];
    let outcomes = sequence_all(&catalog, asks.clone(), 0).await;
    for n in [1, 4] {
        assert!(
            matches!(&outcomes[n].answer, Ok(Err(err)) if *err == format!("request {n} makes no record")),
            "{:?}",
            outcomes[n]
        );
    }
    assert_eq!((outcomes[1].made_from, outcomes[4].made_from), (Some(Some(0)), Some(None)), "made from their priors");
    let indices: Vec<u64> = [0, 2, 3, 5].map(|n| outcomes[n].index()).to_vec();
    assert_eq!(indices, vec![0, 1, 2, 3]);
    assert_chained(&outcomes, &asks, 0, HashMap::new());
    assert_eq!(moves(&pool).await, vec![(0, 4)], "moved once, past the four made");
    assert_eq!(catalog.custody_indexed_between(0, 100).await.unwrap(), vec![0, 1, 2, 3]);

    let outcomes = sequence_all(&catalog, vec![failing("a")], 6).await;
    assert!(matches!(outcomes[0].answer, Ok(Err(_))), "{:?}", outcomes[0]);
    let outcomes = sequence_all(&catalog, vec![about("a")], 7).await;
    assert_eq!((outcomes[0].index(), outcomes[0].made_from), (4, Some(Some(1))));
    assert_eq!(moves(&pool).await, vec![(0, 4), (4, 5)], "the batch that made nothing left no trace");
}

/// A request whose caller went away while it waited is skipped, and the others are sequenced as if it had never
/// been asked.
async fn a_request_whose_caller_went_away_is_skipped(url: &str) {
    let (catalog, pool) = catalog_recording_moves(url).await;
    let mut gone = Box::pin(catalog.sequence_custody("case", Some("a"), "{}", None, |prior| {
        Ok::<_, std::convert::Infallible>((entry(99, prior), "sha-gone".to_owned()))
    }));
    assert!(futures::poll!(gone.as_mut()).is_pending(), "queued, and waiting for its turn");
    drop(gone);
    let asks = vec![about("a"), about("a"), about("a")];
    let outcomes = sequence_all(&catalog, asks.clone(), 0).await;
    let indices: Vec<u64> = outcomes.iter().map(Outcome::index).collect();
    assert_eq!(indices, vec![0, 1, 2]);
    assert_chained(&outcomes, &asks, 0, HashMap::new());
    assert_eq!(moves(&pool).await, vec![(0, 3)]);
    assert_eq!(catalog.openings("sha-gone").await.unwrap(), None, "the one that went away was not stored");
}

/// A batch whose transaction fails because the database refuses one record (a trigger refuses the record about
/// artefact `poison`): each request is asked again alone, so that only the refused one fails (not retryable, and
/// nothing of it stored) and the others are sequenced, contiguous and chained as if it had never been asked. On
/// PostgreSQL, a batch that fails retryably (a serialization failure) is not asked again: every request of it gets
/// the error, and nothing of the batch is stored.
async fn a_refused_record_fails_its_own_request_only(url: &str) {
    let (catalog, pool) = catalog_recording_moves(url).await;
    let postgres = !url.starts_with("sqlite:");
    let statements: &[&str] = if postgres {
        &[
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.artefact_id = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; \
             IF NEW.artefact_id = 'conflict' THEN RAISE EXCEPTION 'conflicting' USING ERRCODE = 'serialization_failure'; \
             END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON custody_index FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
        ]
    } else {
        &["CREATE TRIGGER refuse_poison BEFORE INSERT ON custody_index WHEN NEW.artefact_id = 'poison' \
           BEGIN SELECT RAISE(ABORT, 'poisoned'); END"]
    };
    for statement in statements {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let asks = vec![about("a"), Ask::default(), about("poison"), about("a")];
    let outcomes = sequence_all(&catalog, asks.clone(), 0).await;
    let Err(err @ CatalogError::BatchFailed { records: 1, .. }) = &outcomes[2].answer else {
        panic!("the refused record's error, alone: {:?}", outcomes[2])
    };
    assert!(err.to_string().contains("poisoned"), "{err}");
    assert!(!err.is_transient(), "{err}");
    let indices: Vec<u64> = [0, 1, 3].map(|n| outcomes[n].index()).to_vec();
    assert_eq!(indices, vec![0, 1, 2], "the others, contiguous, in the order they came");
    assert_chained(&outcomes, &asks, 0, HashMap::new());
    assert_eq!(moves(&pool).await, vec![(0, 1), (1, 2), (2, 3)], "each alone, after the batch failed");
    assert_eq!(catalog.custody_indexed_between(0, 100).await.unwrap(), vec![0, 1, 2]);
    assert_eq!(catalog.openings("sha-2").await.unwrap(), None, "nothing of the refused one");
    if !postgres {
        return;
    }

    let asks = vec![about("a"), Ask::default(), about("conflict"), about("a")];
    let outcomes = sequence_all(&catalog, asks, 4).await;
    for outcome in &outcomes {
        let Err(err @ CatalogError::BatchFailed { records: 4, .. }) = &outcome.answer else {
            panic!("the batch's error: {outcome:?}")
        };
        assert!(err.to_string().contains("conflicting"), "{err}");
        assert!(err.is_transient(), "{err}");
    }
    assert_eq!(moves(&pool).await.len(), 3, "the sequence row as it was");
    assert_eq!(catalog.custody_indexed_between(0, 100).await.unwrap(), vec![0, 1, 2], "nothing stored");
}

/// Account `acct-1` and case `case`, which the artefacts registered here are of.
async fn account_and_case(catalog: &Catalog) {
    let account = Account {
        id: "acct-1".into(),
        username: "clerk".into(),
        display_name: "Clerk".into(),
        password_hash: "$argon2id$...".into(),
        is_admin: false,
        jurisdiction: "IT".into(),
    };
    catalog.create_account(&account, "2026-12-05T00:00:00Z").await.unwrap();
    let case = Case { id: "case".into(), title: "R v Smuggler".into(), created_at: "2026-12-05T00:00:00Z".into() };
    catalog.create_case(&case).await.unwrap();
}

/// Upload `up-1` of case `case`: 10 bytes, its first 4 in a recorded chunk, its completion claimed at `now` with
/// the last chunk `last`.
async fn claimed_upload(catalog: &Catalog, now: i64, last: &str) {
    account_and_case(catalog).await;
    let upload = UploadRow {
        id: "up-1".into(),
        case_id: "case".into(),
        account_id: "acct-1".into(),
        length: 10,
        offset: 0,
        metadata: String::new(),
        expires_at: now + 3600,
        completing: None,
    };
    catalog.create_upload(&upload).await.unwrap();
    let chunk = UploadChunk { offset: 0, size: 4, object: "up-1.0.a".into() };
    assert!(catalog.record_upload_chunk("up-1", &chunk, now).await.unwrap());
    assert!(catalog.claim_upload_completion("up-1", 4, last, now, now + 3600).await.unwrap());
}

/// The catalog row of artefact `id` of case `case`, provided by `acct-1`.
fn artefact_row(id: &str) -> ArtefactRow {
    ArtefactRow {
        id: id.into(),
        case_id: "case".into(),
        sha256: "00".repeat(32),
        size: 10,
        media_type: "application/octet-stream".into(),
        manifest: b"{}".to_vec(),
        manifest_signature: "sig".into(),
        ledger_index: 0,
        provider_account: "acct-1".into(),
        policy: None,
        created_at: "2026-12-05T00:00:00Z".into(),
    }
}

/// Sequences, as request `n`, the registration of artefact `registered` from `completion`'s upload.
async fn sequence_consuming(
    catalog: &Catalog,
    n: usize,
    completion: &UploadCompletion,
) -> custodia_catalog::Result<Result<Sequenced, String>> {
    let openings = format!("{{\"n\":{n}}}");
    let registration = Registration {
        artefact: artefact_row("registered"),
        hearing: None,
        consumes: Some(completion.clone()),
        holding: None,
    };
    catalog
        .sequence_registration(&openings, None, registration, |prior| Ok((entry(n, prior), format!("sha-{n}"))))
        .await
}

/// The record that registers a resumable upload's bytes lists the artefact and consumes the upload in its own
/// transaction: a transaction that fails leaves the upload and its claim as they were and lists nothing; a claim
/// that went stale (released, and the upload claimed again by another request) sequences nothing; the claim that
/// holds sequences the record, lists the artefact under the record's index, and removes the upload, its chunks'
/// rows and its claim at once, so no later request finds it to register again.
async fn a_registration_consumes_its_upload_once(url: &str) {
    let (catalog, pool) = catalog_recording_moves(url).await;
    let now = 1_000;
    claimed_upload(&catalog, now, "up-1.4.first").await;
    let first = UploadCompletion { upload_id: "up-1".into(), last_chunk: "up-1.4.first".into() };

    // The transaction fails after the upload was removed in it: nothing of it stays, the upload included.
    let refuse: &[&str] = if url.starts_with("sqlite:") {
        &["CREATE TRIGGER refuse_registered BEFORE INSERT ON custody_index WHEN NEW.artefact_id = 'registered' \
           BEGIN SELECT RAISE(ABORT, 'refused'); END"]
    } else {
        &[
            "CREATE FUNCTION refuse_registered() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.artefact_id = 'registered' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_registered BEFORE INSERT ON custody_index FOR EACH ROW \
             EXECUTE FUNCTION refuse_registered()",
        ]
    };
    for statement in refuse {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let failed = sequence_consuming(&catalog, 0, &first).await;
    assert!(matches!(failed, Err(CatalogError::BatchFailed { records: 1, .. })), "{failed:?}");
    let upload = catalog.upload("up-1").await.unwrap().expect("the upload stays");
    assert_eq!(upload.completing.map(|claim| claim.object).as_deref(), Some("up-1.4.first"), "and its claim");
    assert!(catalog.upload_holds_object("up-1", "up-1.0.a").await.unwrap(), "and its chunk");
    assert_eq!(catalog.artefact("registered").await.unwrap(), None, "nothing listed");
    let drop_trigger = if url.starts_with("sqlite:") {
        "DROP TRIGGER refuse_registered"
    } else {
        "DROP TRIGGER refuse_registered ON custody_index"
    };
    sqlx::query(drop_trigger).execute(&pool).await.unwrap();

    // The first claim goes stale and is released; another request claims the completion with its own last chunk.
    assert!(catalog.release_upload_claim("up-1", "up-1.4.first", now + 61).await.unwrap());
    assert!(catalog.claim_upload_completion("up-1", 4, "up-1.4.second", now + 61, now + 3600).await.unwrap());
    let stale = sequence_consuming(&catalog, 1, &first).await;
    assert!(
        matches!(&stale, Err(CatalogError::ClaimLost { upload_id }) if upload_id == "up-1"),
        "the stale claim's registration: {stale:?}"
    );
    assert_eq!(moves(&pool).await, vec![], "nothing sequenced");
    assert!(catalog.upload("up-1").await.unwrap().is_some(), "the upload is the other request's to finish");

    // The claim that holds, in one batch with a record about something else.
    let second = UploadCompletion { upload_id: "up-1".into(), last_chunk: "up-1.4.second".into() };
    let (registered, other) =
        tokio::join!(sequence_consuming(&catalog, 2, &second), sequence_all(&catalog, vec![about("other")], 3));
    assert_eq!(registered.unwrap().unwrap().index, 0);
    assert_eq!(other[0].index(), 1);
    let listed = catalog.artefact("registered").await.unwrap().expect("listed with its registration");
    assert_eq!(listed.ledger_index, 0, "under its record's index");
    assert_eq!(catalog.upload("up-1").await.unwrap(), None, "consumed with its registration");
    assert!(!catalog.upload_holds_object("up-1", "up-1.0.a").await.unwrap());
    assert_eq!(catalog.delete_upload("up-1", i64::MAX).await.unwrap(), None, "nothing left to remove");

    // Sent again (the claim's gateway did not learn of its success, say), it finds no upload to register.
    let again = sequence_consuming(&catalog, 4, &second).await;
    assert!(matches!(again, Err(CatalogError::ClaimLost { .. })), "{again:?}");
    assert_eq!(catalog.custody_indexed_between(0, 100).await.unwrap(), vec![0, 1], "registered once");

    // An artefact listed already is not registered again, with an upload or without.
    let registration =
        Registration { artefact: artefact_row("registered"), hearing: None, consumes: None, holding: None };
    let again = catalog.sequence_registration("{}", None, registration, |_| Ok::<_, String>((vec![5], "sha-5".into())));
    let again = again.await;
    assert!(matches!(&again, Err(CatalogError::Conflict { what }) if what == "artefact registered"), "{again:?}");
    assert_eq!(catalog.custody_indexed_between(0, 100).await.unwrap(), vec![0, 1], "nothing sequenced");
}

#[tokio::test]
async fn a_registration_consumes_its_upload_once_on_postgres() {
    let server = TempPostgres::start();
    a_registration_consumes_its_upload_once(&server.url).await;
}

#[tokio::test]
async fn a_registration_consumes_its_upload_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_registration_consumes_its_upload_once(&sqlite(&dir)).await;
}

fn sqlite(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display())
}

#[tokio::test]
async fn waiting_requests_go_in_one_transaction_on_postgres() {
    let server = TempPostgres::start();
    waiting_requests_go_in_one_transaction(&server.url).await;
}

#[tokio::test]
async fn waiting_requests_go_in_one_transaction_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    waiting_requests_go_in_one_transaction(&sqlite(&dir)).await;
}

#[tokio::test]
async fn a_stale_fence_refuses_its_request_alone_on_postgres() {
    let server = TempPostgres::start();
    a_stale_fence_refuses_its_request_alone(&server.url).await;
}

#[tokio::test]
async fn a_stale_fence_refuses_its_request_alone_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_stale_fence_refuses_its_request_alone(&sqlite(&dir)).await;
}

#[tokio::test]
async fn a_record_not_made_takes_no_index_on_postgres() {
    let server = TempPostgres::start();
    a_record_not_made_takes_no_index(&server.url).await;
}

#[tokio::test]
async fn a_record_not_made_takes_no_index_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_record_not_made_takes_no_index(&sqlite(&dir)).await;
}

#[tokio::test]
async fn a_request_whose_caller_went_away_is_skipped_on_postgres() {
    let server = TempPostgres::start();
    a_request_whose_caller_went_away_is_skipped(&server.url).await;
}

#[tokio::test]
async fn a_request_whose_caller_went_away_is_skipped_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_request_whose_caller_went_away_is_skipped(&sqlite(&dir)).await;
}

/// Three processes, each with 120 requests about four artefacts (and none) at once, on two threads: the indices
/// are exactly 0..360, and every artefact's records chain, across batches and processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_of_three_processes_chain_on_postgres() {
    let server = TempPostgres::start();
    let (first, pool) = catalog_recording_moves(&server.url).await;
    let catalogs = [first, Catalog::connect(&server.url).await.unwrap(), Catalog::connect(&server.url).await.unwrap()];
    let cycle = [about("a"), about("b"), Ask::default(), about("c"), about("d")];
    let asks: Vec<Ask> = (0..120).map(|n| cycle[n % cycle.len()].clone()).collect();
    let runs = catalogs.iter().enumerate().map(|(process, catalog)| sequence_all(catalog, asks.clone(), process * 120));
    let outcomes: Vec<Outcome> = futures::future::join_all(runs).await.into_iter().flatten().collect();
    let all_asks: Vec<Ask> = (0..3).flat_map(|_| asks.clone()).collect();
    let mut indices: Vec<u64> = outcomes.iter().map(Outcome::index).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..360).collect::<Vec<_>>(), "every index once, none skipped");
    assert_chained(&outcomes, &all_asks, 0, HashMap::new());
    let moves = moves(&pool).await;
    assert_eq!(moves.iter().map(|(from, to)| to - from).sum::<i64>(), 360, "{moves:?}");
}

#[tokio::test]
async fn a_refused_record_fails_its_own_request_only_on_postgres() {
    let server = TempPostgres::start();
    a_refused_record_fails_its_own_request_only(&server.url).await;
}

#[tokio::test]
async fn a_refused_record_fails_its_own_request_only_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_refused_record_fails_its_own_request_only(&sqlite(&dir)).await;
}

/// A transfer received from partner `p` and delivered: artefact `art-<id>` of case `case`, retrieved by nobody yet.
fn delivered_transfer(id: &str) -> TransferRow {
    TransferRow {
        id: id.into(),
        direction: "in".into(),
        partner: "p".into(),
        artefact_id: Some(format!("art-{id}")),
        case_id: Some("case".into()),
        account_id: Some("partner:p".into()),
        size: 10,
        sha256: "00".repeat(32),
        chunk_size: 4,
        received: 10,
        stage: "delivered".into(),
        offer: None,
        created_at: "2026-12-05T00:00:00Z".into(),
        updated_at: "2026-12-05T00:00:00Z".into(),
    }
}

/// Sequences, as request `n`, an evidence of `transfer` (a record about its artefact) that moves it from
/// "delivered" to `to`, keeping the signed evidence `signed-n` ([`kept`]); `fails`: making the record fails.
async fn sequence_moving(catalog: &Catalog, n: usize, transfer: &str, to: &str, fails: bool) -> Outcome {
    let mut made_from = None;
    let moves = TransferMove {
        transfer_id: transfer.into(),
        from: "delivered".into(),
        to: to.into(),
        at: format!("2026-12-06T00:00:{:02}Z", n % 60),
        evidence: kept(n, to),
    };
    let (artefact, openings) = (format!("art-{transfer}"), format!("{{\"n\":{n}}}"));
    let answer = catalog
        .sequence_moving_transfer("case", Some(&artefact), &openings, moves, |prior| {
            made_from = Some(prior);
            if fails {
                return Err(format!("request {n} makes no record"));
            }
            Ok((entry(n, prior), format!("sha-{n}")))
        })
        .await;
    Outcome { answer, made_from }
}

/// The evidence request `n` keeps with its move to `to`: the closing rung, signed as `signed-n`.
fn kept(n: usize, to: &str) -> KeptEvidence {
    let event = if to == "retrieved" { "Retrieval" } else { "NonRetrieval" };
    KeptEvidence { rung: 4, event: event.into(), signed: format!("signed-{n}") }
}

async fn stage_of(catalog: &Catalog, transfer: &str) -> String {
    catalog.transfer(transfer).await.unwrap().expect("the transfer").stage
}

fn refused_as_moved(outcome: &Outcome, transfer: &str) -> bool {
    matches!(&outcome.answer, Err(CatalogError::TransferMoved { transfer_id, from })
        if transfer_id == transfer && from == "delivered")
}

/// Within one batch: a request whose record is not made moves nothing, so the next one moves the transfer; of
/// two requests in one batch that move one transfer, the first is sequenced and moves it, the second is refused
/// (its record never made) while a record about something else goes on; asked again later, a move from a stage
/// the transfer has left sequences nothing.
async fn a_transfer_moves_with_one_evidence_in_a_batch(url: &str) {
    let (catalog, pool) = catalog_recording_moves(url).await;
    for id in ["t-1", "t-2"] {
        catalog.insert_transfer(&delivered_transfer(id)).await.unwrap();
    }
    let not_made = sequence_moving(&catalog, 0, "t-1", "retrieved", true).await;
    assert!(matches!(not_made.answer, Ok(Err(_))), "{not_made:?}");
    assert_eq!(stage_of(&catalog, "t-1").await, "delivered", "no record, no move");

    let (first, second, other) = tokio::join!(
        sequence_moving(&catalog, 1, "t-1", "retrieved", false),
        sequence_moving(&catalog, 2, "t-1", "failed", false),
        catalog.sequence_custody("case", Some("other"), "{}", None, |prior| {
            Ok::<_, String>((entry(3, prior), "sha-3".to_owned()))
        }),
    );
    assert_eq!(first.index(), 0);
    assert!(refused_as_moved(&second, "t-1"), "{second:?}");
    assert_eq!(second.made_from, None, "the refused record was never made");
    assert_eq!(other.unwrap().unwrap().index, 1);
    assert_eq!(moves(&pool).await, vec![(0, 2)], "one transaction");
    let moved = catalog.transfer("t-1").await.unwrap().unwrap();
    assert_eq!((moved.stage.as_str(), moved.updated_at.as_str()), ("retrieved", "2026-12-06T00:00:01Z"));
    assert_eq!(stage_of(&catalog, "t-2").await, "delivered", "another transfer stays as it was");

    let again = sequence_moving(&catalog, 4, "t-1", "failed", false).await;
    assert!(refused_as_moved(&again, "t-1"), "{again:?}");
    assert_eq!(catalog.custody_indexed_between(0, 100).await.unwrap(), vec![0, 1], "one evidence");
    assert_eq!(stage_of(&catalog, "t-1").await, "retrieved");
}

#[tokio::test]
async fn a_transfer_moves_with_one_evidence_in_a_batch_on_postgres() {
    let server = TempPostgres::start();
    a_transfer_moves_with_one_evidence_in_a_batch(&server.url).await;
}

#[tokio::test]
async fn a_transfer_moves_with_one_evidence_in_a_batch_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_transfer_moves_with_one_evidence_in_a_batch(&sqlite(&dir)).await;
}

/// Two processes (two catalogs on one database) race to move each of 24 delivered transfers on, one to
/// "retrieved" (a download), the other to "failed" (the sweep's `NonRetrieval`), in the opposite order of the
/// transfers: for each, exactly one evidence is sequenced, the other refused, and the transfer is in the winner's
/// stage.
async fn two_processes_move_a_transfer_once(url: &str) {
    let catalogs = [Catalog::connect(url).await.unwrap(), Catalog::connect(url).await.unwrap()];
    let transfers: Vec<String> = (0..24).map(|n| format!("t-{n:02}")).collect();
    for id in &transfers {
        catalogs[0].insert_transfer(&delivered_transfer(id)).await.unwrap();
    }
    let race = |process: usize, to: &'static str| {
        let catalog = catalogs[process].clone();
        let mut order = transfers.clone();
        if process == 1 {
            order.reverse();
        }
        tokio::spawn(async move {
            let asks = order.into_iter().enumerate().map(|(n, transfer)| {
                let catalog = catalog.clone();
                async move {
                    let outcome = sequence_moving(&catalog, process * 100 + n, &transfer, to, false).await;
                    (transfer, outcome)
                }
            });
            futures::future::join_all(asks).await
        })
    };
    let (retrieving, failing) = (race(0, "retrieved"), race(1, "failed"));
    let outcomes: Vec<_> = [retrieving.await.unwrap(), failing.await.unwrap()].into_iter().flatten().collect();
    for transfer in &transfers {
        let raced: Vec<&Outcome> = outcomes.iter().filter(|(t, _)| t == transfer).map(|(_, o)| o).collect();
        assert_eq!(raced.len(), 2);
        let won: Vec<usize> = (0..2).filter(|&p| matches!(raced[p].answer, Ok(Ok(_)))).collect();
        assert_eq!(won.len(), 1, "{transfer}: exactly one evidence sequenced: {raced:?}");
        let lost = 1 - won[0];
        assert!(refused_as_moved(raced[lost], transfer), "{transfer}: the other refused: {:?}", raced[lost]);
        assert_eq!(raced[lost].made_from, None, "{transfer}: the refused evidence was never made");
        let winner = if won[0] == 0 { "retrieved" } else { "failed" };
        assert_eq!(stage_of(&catalogs[1], transfer).await, winner, "{transfer}: in the winner's stage");
    }
    let indexed = catalogs[0].custody_indexed_between(0, 1000).await.unwrap();
    assert_eq!(indexed, (0..24).collect::<Vec<i64>>(), "one evidence a transfer, contiguous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_move_a_transfer_once_on_postgres() {
    let server = TempPostgres::start();
    two_processes_move_a_transfer_once(&server.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_move_a_transfer_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    two_processes_move_a_transfer_once(&sqlite(&dir)).await;
}

/// The closing rung request `n` keeps pending for `transfer`, its record at `index`.
fn pending(transfer: &str, n: usize, index: u64) -> TransferEvidenceRow {
    TransferEvidenceRow {
        transfer_id: transfer.into(),
        rung: 4,
        event: "Retrieval".into(),
        own: None,
        partner: None,
        signed: Some(format!("signed-{n}")),
        ledger_index: Some(index as i64),
    }
}

/// The signed evidence is kept in the transaction that sequences its record and moves its transfer: once that
/// commits, the evidence is there, pending its proof, with the record's index (nothing else needs to run for it
/// to survive); a move refused (the transfer moved on already) keeps nothing and leaves the evidence kept before
/// as it was; a transaction that fails (the database refuses the record, or refuses to keep the evidence) stores
/// nothing of the three. Adding the evidence as logged (`own`) completes it.
async fn the_evidence_is_kept_in_the_transaction_that_moves_its_transfer(url: &str) {
    let (catalog, pool) = catalog_recording_moves(url).await;
    for id in ["t-1", "t-2", "t-3"] {
        catalog.insert_transfer(&delivered_transfer(id)).await.unwrap();
    }
    let postgres = !url.starts_with("sqlite:");
    let statements: &[&str] = if postgres {
        &[
            "CREATE FUNCTION refuse_record() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             RAISE EXCEPTION 'record refused'; END $$",
            "CREATE TRIGGER refuse_record BEFORE INSERT ON custody_index FOR EACH ROW \
             WHEN (NEW.artefact_id = 'art-t-2') EXECUTE FUNCTION refuse_record()",
            "CREATE FUNCTION refuse_keep() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             RAISE EXCEPTION 'evidence refused'; END $$",
            "CREATE TRIGGER refuse_keep BEFORE INSERT ON transfer_evidences FOR EACH ROW \
             WHEN (NEW.transfer_id = 't-3') EXECUTE FUNCTION refuse_keep()",
        ]
    } else {
        &[
            "CREATE TRIGGER refuse_record BEFORE INSERT ON custody_index WHEN NEW.artefact_id = 'art-t-2' \
             BEGIN SELECT RAISE(ABORT, 'record refused'); END",
            "CREATE TRIGGER refuse_keep BEFORE INSERT ON transfer_evidences WHEN NEW.transfer_id = 't-3' \
             BEGIN SELECT RAISE(ABORT, 'evidence refused'); END",
        ]
    };
    for statement in statements {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }

    let moved = sequence_moving(&catalog, 0, "t-1", "retrieved", false).await;
    let index = moved.index();
    assert_eq!(stage_of(&catalog, "t-1").await, "retrieved");
    let kept = catalog.transfer_evidences("t-1").await.unwrap();
    assert_eq!(kept, vec![pending("t-1", 0, index)], "kept with the move, pending");
    assert!(kept[0].is_pending());
    assert_eq!(catalog.pending_transfer_evidences().await.unwrap(), kept);

    let again = sequence_moving(&catalog, 1, "t-1", "failed", false).await;
    assert!(refused_as_moved(&again, "t-1"), "{again:?}");
    assert_eq!(catalog.transfer_evidences("t-1").await.unwrap(), kept, "a refused move keeps nothing");

    for (n, transfer, why) in [(2, "t-2", "record refused"), (3, "t-3", "evidence refused")] {
        let failed = sequence_moving(&catalog, n, transfer, "retrieved", false).await;
        let Err(err @ CatalogError::BatchFailed { records: 1, .. }) = &failed.answer else {
            panic!("{transfer}: the transaction fails: {failed:?}")
        };
        assert!(err.to_string().contains(why), "{err}");
        assert_eq!(stage_of(&catalog, transfer).await, "delivered", "{transfer}: not moved");
        assert!(catalog.transfer_evidences(transfer).await.unwrap().is_empty(), "{transfer}: nothing kept");
        assert_eq!(catalog.openings(&format!("sha-{n}")).await.unwrap(), None, "{transfer}: nothing sequenced");
    }
    assert_eq!(catalog.custody_indexed_between(0, 100).await.unwrap(), vec![index as i64], "one record");
    assert_eq!(moves(&pool).await, vec![(0, 1)], "one transaction committed");

    catalog.keep_transfer_evidence("t-1", 4, "Retrieval", Some("logged-0"), None).await.unwrap();
    let completed = catalog.transfer_evidences("t-1").await.unwrap();
    assert_eq!(completed, vec![TransferEvidenceRow { own: Some("logged-0".into()), ..pending("t-1", 0, index) }]);
    assert!(!completed[0].is_pending());
    assert!(catalog.pending_transfer_evidences().await.unwrap().is_empty(), "completed");
}

#[tokio::test]
async fn the_evidence_is_kept_in_the_transaction_that_moves_its_transfer_on_postgres() {
    let server = TempPostgres::start();
    the_evidence_is_kept_in_the_transaction_that_moves_its_transfer(&server.url).await;
}

#[tokio::test]
async fn the_evidence_is_kept_in_the_transaction_that_moves_its_transfer_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    the_evidence_is_kept_in_the_transaction_that_moves_its_transfer(&sqlite(&dir)).await;
}

/// A direct upload's registration is stored only while its holding of the quota lasts `HOLDING_MARGIN` more, and
/// consumes it: one whose holding lapsed (its gateway frozen, or the database away past the expiry) may have had
/// its quota counted as free by another gateway meanwhile, so it is refused, retryably, and stores nothing.
async fn a_registration_needs_its_holding_to_last(url: &str) {
    let catalog = Catalog::connect(url).await.unwrap();
    account_and_case(&catalog).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let margin = custodia_catalog::HOLDING_MARGIN.as_millis() as i64;
    catalog.hold_direct("lapsed", "acct-1", 10, now - 60_000, now - 1).await.unwrap();
    catalog.hold_direct("ending", "acct-1", 10, now, now + margin / 2).await.unwrap();
    catalog.hold_direct("lasting", "acct-1", 10, now, now + 6 * margin).await.unwrap();
    let register = |artefact: &str, holding: &str| {
        let registration = Registration {
            artefact: artefact_row(artefact),
            hearing: None,
            consumes: None,
            holding: Some(holding.to_owned()),
        };
        catalog.sequence_registration("{}", None, registration, |_| Ok::<_, String>((vec![1], "sha-1".into())))
    };
    for (artefact, holding) in [("a-lapsed", "lapsed"), ("a-ending", "ending"), ("a-gone", "never-held")] {
        let refused = register(artefact, holding).await;
        assert!(matches!(refused, Err(CatalogError::HoldingLapsed)), "{holding}: {refused:?}");
        assert!(refused.unwrap_err().is_transient(), "the upload may be sent again");
        assert_eq!(catalog.artefact(artefact).await.unwrap(), None, "{holding}: not listed");
    }
    assert_eq!(catalog.custody_indexed_between(0, 100).await.unwrap(), Vec::<i64>::new(), "nothing sequenced");

    register("a-lasting", "lasting").await.unwrap().unwrap();
    assert!(catalog.artefact("a-lasting").await.unwrap().is_some());
    let counted = catalog.direct_holdings_of("acct-1", now).await.unwrap();
    assert_eq!(counted.uploads, 1, "the registration consumed its holding (the one ending soon is left): {counted:?}");
    let again = register("a-again", "lasting").await;
    assert!(matches!(again, Err(CatalogError::HoldingLapsed)), "a holding is consumed once: {again:?}");
}

#[tokio::test]
async fn a_registration_needs_its_holding_to_last_on_postgres() {
    let server = TempPostgres::start();
    a_registration_needs_its_holding_to_last(&server.url).await;
}

#[tokio::test]
async fn a_registration_needs_its_holding_to_last_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_registration_needs_its_holding_to_last(&sqlite(&dir)).await;
}
