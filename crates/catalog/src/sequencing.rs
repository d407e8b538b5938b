//! The custody log's coordination rows (`custodia_ledger::coordinated`): every gateway on this database sequences
//! its entries here, and integrates them in turn under the integration row's lock.
//!
//! - An entry gets its index from `log_sequence` in the transaction that stores it in `custody_index`: the
//!   sequence row's lock, taken first, orders every appending transaction, so indices are contiguous, none is
//!   given twice, and a record's `prior` (the artefact's latest record) is read under that same lock, across
//!   processes.
//! - A process runs one sequencing transaction at a time (a gateway that freezes then holds or awaits the sequence
//!   row's lock on one connection), and each takes every request that arrived while the one before ran, up to
//!   [`MAX_BATCH`] (Tessera's batching): the fences are checked request by request (a stale one refuses its own
//!   request only), the sequence row is locked and moved once, each artefact's latest record is read once, the
//!   requests' records are made in the order they arrived (each chained to the one before it about its artefact,
//!   in the batch or before it), and they are stored together. If the transaction fails, every request of the
//!   batch gets the error and none of their records is stored.
//! - PostgreSQL: the integration lock is `SELECT … FOR UPDATE` on the `log_integration` row, in a transaction held
//!   until the checkpoint is published (or the holder dies: its connection goes, and the lock with it). SQLite: a
//!   catalog has one gateway, so the lock is in-process, and publishing is a short transaction.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use custodia_ledger::{Coordination, CoordinationError, Integrated, IntegrationLock};
use futures::future::BoxFuture;
use sqlx::{AnyPool, Row as _};
use tokio::sync::oneshot;

use crate::{Catalog, CatalogError, HearingFence, Registration, Result, UploadCompletion};

/// An entry sequenced into the custody log, not yet necessarily integrated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub index: u64,
    pub entry: Vec<u8>,
}

/// The longest a PostgreSQL transaction holding the integration lock may sit idle: a gateway that stops answering
/// (frozen, cut off) loses the lock, and another integrates. Longer than a turn's writes to the store may take (S3
/// requests give up after 10 s of retries): a holder that loses the lock all the same may still write a checkpoint
/// after another's, which the next turn repairs (`custodia_ledger::coordinated`).
const IDLE_INTEGRATION_TIMEOUT: &str = "20s";
/// The longest a sequencing transaction may sit idle: it holds the sequence row's lock, which every append waits
/// for, and does nothing but a few statements and wait for its requests' records to be made (microseconds each).
const IDLE_SEQUENCING_TIMEOUT: &str = "5s";
/// The longest an append waits for a sequencing transaction of this process to take it before it fails, retryably
/// (while the database is unreachable, each transaction takes up to the pool's 5 s to fail).
const SEQUENCING_TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest an append waits for the sequence row's lock before it fails, retryably.
const SEQUENCE_LOCK_WAIT: &str = "10s";
/// The longest a gateway waits for the integration lock before its turn fails (and its waiting appends are answered
/// with a retryable error): a turn takes milliseconds, so a wait this long means the holder is stuck.
const INTEGRATION_LOCK_WAIT: &str = "15s";
/// The most requests one sequencing transaction takes; those beyond wait for the next. Its inserts bind four
/// values a record, well within SQLite's and PostgreSQL's limits on a statement's parameters.
const MAX_BATCH: usize = 256;

/// This process's sequencing: the requests waiting for the next transaction, and the one task that runs the
/// transactions while any wait.
#[derive(Default)]
pub(crate) struct Sequencer {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Request>,
    /// The task running sequencing transactions, while one runs (one at a time: another starts only once it has
    /// found nothing left to take, or ended otherwise, its runtime shutting down, say).
    task: Option<tokio::task::JoinHandle<()>>,
    /// The id given to the latest request, by which one that waited too long withdraws.
    last_id: u64,
}

/// A request waiting in the queue.
struct Request {
    id: u64,
    sequencing: Sequencing,
    /// What became of it: its index, or why it has none. Closed when its caller went away.
    done: oneshot::Sender<Result<Sequenced>>,
}

/// What a request asks to sequence.
struct Sequencing {
    case_id: String,
    artefact_id: Option<String>,
    openings: Option<String>,
    fence: Option<HearingFence>,
    /// What the catalog lists with the record, if it registers an artefact ([`Catalog::sequence_registration`]).
    registration: Option<Box<Registration>>,
    record: Record,
}

/// A record to sequence, and its SHA-256 (hex).
struct Made {
    entry: Vec<u8>,
    sha256: String,
}

enum Record {
    /// Made before it was queued: a plain log entry, which chains to nothing.
    Made(Made),
    /// Made by its caller, from the `prior` the transaction sends when the batch comes to it. The caller sends the
    /// record back, or drops the sender if it made none (or went away): the request then takes no index.
    FromPrior { prior: oneshot::Sender<Option<u64>>, made: oneshot::Receiver<Made> },
}

/// A request whose record is to be stored, with the index it takes.
struct Stored {
    at: usize,
    index: i64,
    case_id: String,
    artefact_id: Option<String>,
    openings: Option<String>,
    registration: Option<Box<Registration>>,
    made: Made,
}

impl Sequencer {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock; if something did, the queue is still whole.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The requests the next transaction takes: every one waiting, up to [`MAX_BATCH`], but those whose callers
    /// went away. None when none waits: the task running the transactions then ends, in the same critical section,
    /// and the next request starts another.
    fn take_batch(&self) -> Vec<Request> {
        let mut queue = self.queue();
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH
            && let Some(request) = queue.waiting.pop_front()
        {
            if !request.done.is_closed() {
                batch.push(request);
            }
        }
        if batch.is_empty() {
            queue.task = None;
        }
        batch
    }

    /// Takes request `id` out of the queue, if no transaction took it yet.
    fn withdraw(&self, id: u64) -> bool {
        let mut queue = self.queue();
        let Some(at) = queue.waiting.iter().position(|request| request.id == id) else { return false };
        queue.waiting.remove(at);
        true
    }
}

impl Catalog {
    /// Sequences a custody record about `case_id` (and `artefact_id`): gives it the log's next index, stores it in
    /// the custody index, and keeps `openings` (the openings of its commitments) under its SHA-256, in one
    /// transaction. `entry_for` makes the entry and its SHA-256 (hex) from the index of the artefact's latest
    /// record (its `prior`; `None` for the artefact's first record, or a record about no artefact), read in that
    /// transaction; if it fails, nothing is sequenced and its error is returned inside `Ok`.
    ///
    /// A record a hearing room writes carries the room's `fence`: it is sequenced only if the fence's node still
    /// holds the hearing's lease under the fence's epoch, checked in the same transaction; otherwise nothing is
    /// sequenced and the error is [`CatalogError::LeaseLost`].
    ///
    /// The transaction may sequence other records of this process with this one, each made, fenced and chained as
    /// if alone: if it fails, the error is [`CatalogError::BatchFailed`] and none of them is stored. A call that
    /// waits more than 10 s for a transaction to take it fails with [`CatalogError::Busy`].
    pub async fn sequence_custody<E>(
        &self,
        case_id: &str,
        artefact_id: Option<&str>,
        openings: &str,
        fence: Option<&HearingFence>,
        entry_for: impl FnOnce(Option<u64>) -> std::result::Result<(Vec<u8>, String), E>,
    ) -> Result<std::result::Result<Sequenced, E>> {
        self.sequence_from_prior(case_id, artefact_id, openings, fence.cloned(), None, entry_for).await
    }

    /// [`Catalog::sequence_custody`] for the record that registers an artefact, listed with it: in the transaction
    /// that sequences the record, the artefact's row is inserted (its `ledger_index` the record's), with its
    /// hearing's output count if it is one, so that no artefact is ever registered in the log but missing from its
    /// case. An artefact already listed is refused ([`CatalogError::Conflict`]) and nothing is sequenced.
    ///
    /// With `registration.consumes`, the record registers what a resumable upload holds: it is sequenced only
    /// while the upload's completion is still claimed with that last chunk (the claim locked meanwhile), and the
    /// upload is removed in the same transaction, with its chunks' rows and its claim. So an upload is registered
    /// once: a gateway whose claim went stale (it froze, and another took the upload over) sequences nothing
    /// ([`CatalogError::ClaimLost`]), and once the record is stored no retry finds the upload. The chunks' objects
    /// are the caller's to delete (the sweep deletes any it leaves).
    pub async fn sequence_registration<E>(
        &self,
        openings: &str,
        fence: Option<&HearingFence>,
        registration: Registration,
        entry_for: impl FnOnce(Option<u64>) -> std::result::Result<(Vec<u8>, String), E>,
    ) -> Result<std::result::Result<Sequenced, E>> {
        let (case_id, artefact_id) = (registration.artefact.case_id.clone(), registration.artefact.id.clone());
        let registration = Some(Box::new(registration));
        self.sequence_from_prior(&case_id, Some(&artefact_id), openings, fence.cloned(), registration, entry_for).await
    }

    async fn sequence_from_prior<E>(
        &self,
        case_id: &str,
        artefact_id: Option<&str>,
        openings: &str,
        fence: Option<HearingFence>,
        registration: Option<Box<Registration>>,
        entry_for: impl FnOnce(Option<u64>) -> std::result::Result<(Vec<u8>, String), E>,
    ) -> Result<std::result::Result<Sequenced, E>> {
        let (prior_tx, mut prior) = oneshot::channel();
        let (made, made_rx) = oneshot::channel();
        let (id, done) = self.enqueue(Sequencing {
            case_id: case_id.to_owned(),
            artefact_id: artefact_id.map(str::to_owned),
            openings: Some(openings.to_owned()),
            fence,
            registration,
            record: Record::FromPrior { prior: prior_tx, made: made_rx },
        });
        // No prior comes to a request refused (its fence stale) or failed before its turn: its answer says why.
        let Some(prior) = self.turn(id, &mut prior).await? else { return answer(done.await).map(Ok) };
        let (entry, sha256) = match entry_for(prior) {
            Ok(made) => made,
            // Dropping `made` tells the transaction that this request takes no index.
            Err(err) => return Ok(Err(err)),
        };
        // Gone only if the transaction failed meanwhile, which the answer says.
        let _ = made.send(Made { entry, sha256 });
        answer(done.await).map(Ok)
    }

    /// Sequences a plain log entry (no case, no openings, no prior): its index.
    async fn sequence_entry(&self, entry: Vec<u8>) -> Result<u64> {
        let (id, mut done) = self.enqueue(Sequencing {
            case_id: String::new(),
            artefact_id: None,
            openings: None,
            fence: None,
            registration: None,
            record: Record::Made(Made { entry, sha256: String::new() }),
        });
        let done = self.turn(id, &mut done).await?.ok_or(CatalogError::SequencingStopped)?;
        Ok(done?.index)
    }

    /// Queues `sequencing` for the next transaction, and starts the task that runs them unless it runs: the
    /// request's id, and where its answer will come.
    fn enqueue(&self, sequencing: Sequencing) -> (u64, oneshot::Receiver<Result<Sequenced>>) {
        let (done, answer) = oneshot::channel();
        let mut queue = self.sequencer.queue();
        queue.last_id += 1;
        let id = queue.last_id;
        queue.waiting.push_back(Request { id, sequencing, done });
        if queue.task.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
            queue.task = Some(tokio::spawn(self.clone().run_sequencing()));
        }
        (id, answer)
    }

    /// Waits for the first word about request `id` on `first` (`None` if the channel closed without one), for
    /// [`SEQUENCING_TURN_WAIT`] unless a transaction has taken the request by then: one that has not is withdrawn,
    /// and the error is [`CatalogError::Busy`].
    async fn turn<T>(&self, id: u64, first: &mut oneshot::Receiver<T>) -> Result<Option<T>> {
        match tokio::time::timeout(SEQUENCING_TURN_WAIT, &mut *first).await {
            Ok(word) => Ok(word.ok()),
            Err(_) if self.sequencer.withdraw(id) => Err(CatalogError::Busy { waited: SEQUENCING_TURN_WAIT }),
            // Taken just now: the transaction has limits of its own.
            Err(_) => Ok(first.await.ok()),
        }
    }

    /// Runs sequencing transactions, one at a time, while requests wait.
    async fn run_sequencing(self) {
        loop {
            let batch = self.sequencer.take_batch();
            if batch.is_empty() {
                return;
            }
            let (sequencing, done): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|request| (request.sequencing, request.done)).unzip();
            let records = done.len();
            match self.sequence_batch(sequencing).await {
                Ok(answers) => {
                    for (done, answer) in done.into_iter().zip(answers) {
                        if let Some(answer) = answer {
                            // A caller that went away meanwhile has no need of its answer.
                            let _ = done.send(answer);
                        }
                    }
                }
                Err(err) => {
                    let source = Arc::new(err);
                    for done in done {
                        let _ = done.send(Err(CatalogError::BatchFailed { records, source: source.clone() }));
                    }
                }
            }
        }
    }

    /// Sequences a batch of requests in one transaction: for each request, in order, its answer (`None` for one
    /// that made no record: its caller has its answer, or went away).
    async fn sequence_batch(&self, batch: Vec<Sequencing>) -> sqlx::Result<Vec<Option<Result<Sequenced>>>> {
        let mut tx = self.pool.begin().await?;
        if self.postgres_url.is_some() {
            // A gateway that stops answering while it holds the lock (frozen, cut off) loses it within seconds, and
            // one waiting for it too long gives up retryably.
            sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true), set_config('lock_timeout', $2, true)")
                .bind(IDLE_SEQUENCING_TIMEOUT)
                .bind(SEQUENCE_LOCK_WAIT)
                .execute(&mut *tx)
                .await?;
        } else {
            // SQLite: write first, so that the transaction takes the write lock (waiting for it as long as the
            // connection's busy timeout) before it reads anything. A transaction that reads first and then writes
            // while another connection writes is refused at once (SQLITE_BUSY, which no wait can resolve).
            // (A statement that writes takes the lock whether or not it changes a row; this one changes none.)
            sqlx::query("UPDATE log_sequence SET next = next WHERE id = -1").execute(&mut *tx).await?;
        }
        let held = fences_held(&mut tx, batch.iter().filter_map(|sequencing| sequencing.fence.as_ref())).await?;
        let registrations = || batch.iter().filter_map(|sequencing| sequencing.registration.as_deref());
        let claimed =
            claims_held(&mut tx, registrations().filter_map(|registration| registration.consumes.as_ref())).await?;
        let mut listed =
            listed_already(&mut tx, registrations().map(|registration| registration.artefact.id.as_str())).await?;
        let mut consumed = HashSet::new();
        let mut answers: Vec<Option<Result<Sequenced>>> = Vec::with_capacity(batch.len());
        let mut admitted = Vec::with_capacity(batch.len());
        for (at, sequencing) in batch.into_iter().enumerate() {
            let registration = sequencing.registration.as_deref();
            let consumes = registration.and_then(|registration| registration.consumes.as_ref());
            if let Some(stale) = sequencing.fence.as_ref().filter(|fence| !held[*fence]) {
                answers.push(Some(Err(stale.lost())));
            } else if let Some(lost) =
                consumes.filter(|completion| !claimed[*completion] || !consumed.insert(completion.upload_id.clone()))
            {
                // Not claimed as it says, or consumed by a request before it in this batch.
                answers.push(Some(Err(CatalogError::ClaimLost { upload_id: lost.upload_id.clone() })));
            } else if let Some(registration) =
                registration.filter(|registration| !listed.insert(registration.artefact.id.clone()))
            {
                // Listed already, or by a request before it in this batch.
                let what = format!("artefact {}", registration.artefact.id);
                answers.push(Some(Err(CatalogError::Conflict { what })));
            } else {
                answers.push(None);
                admitted.push((at, sequencing));
            }
        }
        if admitted.is_empty() {
            return Ok(answers);
        }
        // An index for every admitted request, taken with the sequence row's lock; those that make no record give
        // theirs back below, so that the indices stay contiguous.
        let reserved = admitted.len() as i64;
        let next: i64 = sqlx::query("UPDATE log_sequence SET next = next + $1 WHERE id = 1 RETURNING next")
            .bind(reserved)
            .fetch_one(&mut *tx)
            .await?
            .try_get("next")?;
        let first = next - reserved;
        let artefacts: HashSet<&str> = admitted.iter().filter_map(|(_, s)| s.artefact_id.as_deref()).collect();
        let mut latest = latest_records(&mut tx, artefacts).await?;
        let mut stored = Vec::with_capacity(admitted.len());
        for (at, sequencing) in admitted {
            let Sequencing { case_id, artefact_id, openings, fence: _, registration, record } = sequencing;
            let prior = artefact_id.as_ref().and_then(|artefact| latest.get(artefact)).copied();
            let made = match record {
                Record::Made(made) => Some(made),
                Record::FromPrior { prior: turn, made } => match turn.send(prior.map(|prior| prior as u64)) {
                    Ok(()) => made.await.ok(),
                    Err(_) => None,
                },
            };
            let Some(made) = made else { continue };
            let index = first + stored.len() as i64;
            if let Some(artefact) = &artefact_id {
                latest.insert(artefact.clone(), index);
            }
            stored.push(Stored { at, index, case_id, artefact_id, openings, registration, made });
        }
        if stored.is_empty() {
            // Rolled back: the reserved indices with it.
            return Ok(answers);
        }
        let unused = reserved - stored.len() as i64;
        if unused > 0 {
            sqlx::query("UPDATE log_sequence SET next = next - $1 WHERE id = 1").bind(unused).execute(&mut *tx).await?;
        }
        insert_records(&mut tx, &stored).await?;
        for record in &stored {
            let Some(registration) = record.registration.as_deref() else { continue };
            let artefact = crate::ArtefactRow { ledger_index: record.index, ..registration.artefact.clone() };
            crate::insert_artefact_row(&mut tx, &artefact, registration.hearing.as_deref()).await?;
            if let Some(completion) = &registration.consumes {
                crate::uploads_removed(&mut tx, &completion.upload_id).await?;
            }
        }
        tx.commit().await?;
        for Stored { at, index, made, .. } in stored {
            answers[at] = Some(Ok(Sequenced { index: index as u64, entry: made.entry }));
        }
        Ok(answers)
    }

    /// The coordination of the custody log through this database, for `custodia_ledger::Log::open_coordinated`.
    pub fn log_coordination(&self) -> Arc<dyn Coordination> {
        Arc::new(LogCoordination { catalog: self.clone() })
    }
}

/// A request's answer as the sequencing task sent it; a closed channel means the task ended before answering.
fn answer(done: std::result::Result<Result<Sequenced>, oneshot::error::RecvError>) -> Result<Sequenced> {
    done.map_err(|_| CatalogError::SequencingStopped)?
}

/// Whether each of `fences` still holds, each checked once, in the order of their hearings (so that transactions
/// lock lease rows in one order, and two batches cannot deadlock on them). A stale fence changes nothing, so the
/// transaction goes on for the other requests.
async fn fences_held<'a>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    fences: impl Iterator<Item = &'a HearingFence>,
) -> sqlx::Result<BTreeMap<HearingFence, bool>> {
    let mut held: BTreeMap<HearingFence, bool> = fences.map(|fence| (fence.clone(), false)).collect();
    for (fence, holds) in &mut held {
        *holds = crate::leases::holds_lease(tx, fence).await?;
    }
    Ok(held)
}

/// Whether each of `completions` is still claimed as it says, each checked once, in the order of their uploads. As
/// [`Catalog::delete_upload`] does, the upload's row is locked first, then its claim's (on PostgreSQL, until the
/// transaction ends), so that a removal or a release of the claim waits for the transaction, and finds the upload
/// gone once its registration is stored.
async fn claims_held<'a>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    completions: impl Iterator<Item = &'a UploadCompletion>,
) -> sqlx::Result<BTreeMap<UploadCompletion, bool>> {
    let mut held: BTreeMap<UploadCompletion, bool> =
        completions.map(|completion| (completion.clone(), false)).collect();
    for (completion, holds) in &mut held {
        let upload = sqlx::query("UPDATE uploads SET upload_offset = upload_offset WHERE id = $1")
            .bind(&completion.upload_id)
            .execute(&mut **tx)
            .await?;
        if upload.rows_affected() != 1 {
            continue;
        }
        let claim =
            sqlx::query("UPDATE upload_claims SET renewed_at = renewed_at WHERE upload_id = $1 AND object = $2")
                .bind(&completion.upload_id)
                .bind(&completion.last_chunk)
                .execute(&mut **tx)
                .await?;
        *holds = claim.rows_affected() == 1;
    }
    Ok(held)
}

/// Which of `artefacts` the catalog lists already, read in one statement.
async fn listed_already<'a>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    artefacts: impl Iterator<Item = &'a str>,
) -> sqlx::Result<HashSet<String>> {
    let artefacts: Vec<&str> = artefacts.collect();
    if artefacts.is_empty() {
        return Ok(HashSet::new());
    }
    let sql = format!("SELECT id FROM artefacts WHERE id IN ({})", placeholders(1, artefacts.len()));
    let mut query = sqlx::query_scalar(&sql);
    for artefact in artefacts {
        query = query.bind(artefact);
    }
    Ok(query.fetch_all(&mut **tx).await?.into_iter().collect())
}

/// `$first, $first + 1, …`: `count` placeholders.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// `($1, …, $columns), (…), …`: the placeholders of `rows` rows of `columns` values.
fn rows_of_placeholders(rows: usize, columns: usize) -> String {
    (0..rows).map(|row| format!("({})", placeholders(row * columns + 1, columns))).collect::<Vec<_>>().join(", ")
}

/// The index of the latest record about each of `artefacts` that has any, read in one statement.
async fn latest_records(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    artefacts: HashSet<&str>,
) -> sqlx::Result<HashMap<String, i64>> {
    if artefacts.is_empty() {
        return Ok(HashMap::new());
    }
    // One `MAX` per artefact, each found at the end of its run in `custody_by_artefact`.
    let sql = format!(
        "SELECT v.column1 AS artefact_id, \
         (SELECT MAX(ledger_index) FROM custody_index WHERE artefact_id = v.column1) AS last \
         FROM (VALUES {}) AS v",
        rows_of_placeholders(artefacts.len(), 1)
    );
    let mut query = sqlx::query(&sql);
    for artefact in artefacts {
        query = query.bind(artefact);
    }
    let mut latest = HashMap::new();
    for row in query.fetch_all(&mut **tx).await? {
        if let Some(last) = row.try_get::<Option<i64>, _>("last")? {
            latest.insert(row.try_get("artefact_id")?, last);
        }
    }
    Ok(latest)
}

/// Stores `stored` in the custody index, and their openings (once each) under their records' SHA-256.
async fn insert_records(tx: &mut sqlx::Transaction<'static, sqlx::Any>, stored: &[Stored]) -> sqlx::Result<()> {
    let mut kept = HashSet::new();
    let openings: Vec<(&str, &str)> = stored
        .iter()
        .filter_map(|record| Some((record.made.sha256.as_str(), record.openings.as_deref()?)))
        .filter(|(sha256, _)| kept.insert(*sha256))
        .collect();
    if !openings.is_empty() {
        let sql = format!(
            "INSERT INTO custody_openings (record_sha256, openings) VALUES {} ON CONFLICT (record_sha256) DO NOTHING",
            rows_of_placeholders(openings.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        for (sha256, openings) in openings {
            query = query.bind(sha256).bind(openings);
        }
        query.execute(&mut **tx).await?;
    }
    let sql = format!(
        "INSERT INTO custody_index (ledger_index, case_id, artefact_id, record) VALUES {}",
        rows_of_placeholders(stored.len(), 4)
    );
    let mut query = sqlx::query(&sql);
    for record in stored {
        query = query
            .bind(record.index)
            .bind(record.case_id.as_str())
            .bind(record.artefact_id.as_deref())
            .bind(record.made.entry.as_slice());
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

struct LogCoordination {
    catalog: Catalog,
}

fn coordination_error(what: &'static str) -> impl FnOnce(CatalogError) -> CoordinationError {
    move |err| CoordinationError { what, transient: err.is_transient(), source: Box::new(err) }
}

/// The integration row, locked until `tx` ends (PostgreSQL).
async fn lock_row(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<(i64, Option<Vec<u8>>)> {
    let row = sqlx::query("SELECT size, checkpoint FROM log_integration WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut **tx)
        .await?;
    Ok((row.try_get("size")?, row.try_get("checkpoint")?))
}

async fn sequenced(pool: &AnyPool) -> Result<i64> {
    Ok(sqlx::query("SELECT next FROM log_sequence WHERE id = 1").fetch_one(pool).await?.try_get("next")?)
}

fn integrated((size, checkpoint): (i64, Option<Vec<u8>>), sequenced: i64) -> Integrated {
    Integrated { size: size as u64, checkpoint: checkpoint.map(Bytes::from), sequenced: sequenced as u64 }
}

impl LogCoordination {
    /// Both coordination rows in one query: what every gateway's integrator asks every 200 ms.
    async fn read(&self) -> Result<Integrated> {
        let row = sqlx::query(
            "SELECT i.size AS size, i.checkpoint AS checkpoint, s.next AS next \
             FROM log_integration i, log_sequence s WHERE i.id = 1 AND s.id = 1",
        )
        .fetch_one(&self.catalog.pool)
        .await?;
        Ok(integrated((row.try_get("size")?, row.try_get("checkpoint")?), row.try_get("next")?))
    }

    async fn entries(&self, from: u64, to: u64, limit: usize) -> Result<Vec<(u64, Bytes)>> {
        let rows = sqlx::query(
            "SELECT ledger_index, record FROM custody_index WHERE ledger_index >= $1 AND ledger_index < $2 \
             ORDER BY ledger_index LIMIT $3",
        )
        .bind(from as i64)
        .bind(to.min(i64::MAX as u64) as i64)
        .bind(limit as i64)
        .fetch_all(&self.catalog.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let index: i64 = row.try_get("ledger_index")?;
                let record: Vec<u8> = row.try_get("record")?;
                Ok((index as u64, Bytes::from(record)))
            })
            .collect()
    }

    async fn lock(&self) -> Result<Box<dyn IntegrationLock>> {
        let pool = &self.catalog.pool;
        if self.catalog.postgres_url.is_none() {
            let held = self.catalog.integration.clone().lock_owned().await;
            let row = self.read().await?;
            return Ok(Box::new(InProcessLock { pool: pool.clone(), row, _held: held }));
        }
        let mut tx = pool.begin().await?;
        sqlx::query(
            "SELECT set_config('idle_in_transaction_session_timeout', $1, true), set_config('lock_timeout', $2, true)",
        )
        .bind(IDLE_INTEGRATION_TIMEOUT)
        .bind(INTEGRATION_LOCK_WAIT)
        .execute(&mut *tx)
        .await?;
        let row = lock_row(&mut tx).await?;
        let row = integrated(row, sequenced(pool).await?);
        Ok(Box::new(RowLock { tx, row }))
    }
}

impl Coordination for LogCoordination {
    fn sequence(&self, entry: Bytes) -> BoxFuture<'_, std::result::Result<u64, CoordinationError>> {
        Box::pin(async move {
            self.catalog.sequence_entry(entry.to_vec()).await.map_err(coordination_error("sequencing a log entry"))
        })
    }

    fn integrated(&self) -> BoxFuture<'_, std::result::Result<Integrated, CoordinationError>> {
        Box::pin(async move { self.read().await.map_err(coordination_error("reading the log's integration row")) })
    }

    fn entries(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> BoxFuture<'_, std::result::Result<Vec<(u64, Bytes)>, CoordinationError>> {
        Box::pin(async move {
            self.entries(from, to, limit).await.map_err(coordination_error("reading sequenced log entries"))
        })
    }

    fn lock_integration(&self) -> BoxFuture<'_, std::result::Result<Box<dyn IntegrationLock>, CoordinationError>> {
        Box::pin(async move { self.lock().await.map_err(coordination_error("taking the log's integration lock")) })
    }
}

/// Publishes what was integrated: the row's size and checkpoint, and the sequence moved past them if it was behind
/// (a log adopted from its store).
async fn publish_row(tx: &mut sqlx::Transaction<'static, sqlx::Any>, size: u64, checkpoint: &[u8]) -> Result<()> {
    sqlx::query("UPDATE log_integration SET size = $1, checkpoint = $2 WHERE id = 1")
        .bind(size as i64)
        .bind(checkpoint)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE log_sequence SET next = $1 WHERE id = 1 AND next < $1")
        .bind(size as i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// PostgreSQL: the integration row, locked by the transaction that will publish.
struct RowLock {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    row: Integrated,
}

impl IntegrationLock for RowLock {
    fn integrated(&self) -> &Integrated {
        &self.row
    }

    fn publish(
        mut self: Box<Self>,
        size: u64,
        checkpoint: Bytes,
    ) -> BoxFuture<'static, std::result::Result<(), CoordinationError>> {
        Box::pin(async move {
            let published = async {
                publish_row(&mut self.tx, size, &checkpoint).await?;
                self.tx.commit().await?;
                Ok(())
            };
            published.await.map_err(coordination_error("publishing the log's checkpoint"))
        })
    }
}

/// SQLite: the one gateway's in-process lock, and a short transaction to publish.
struct InProcessLock {
    pool: AnyPool,
    row: Integrated,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl IntegrationLock for InProcessLock {
    fn integrated(&self) -> &Integrated {
        &self.row
    }

    fn publish(
        self: Box<Self>,
        size: u64,
        checkpoint: Bytes,
    ) -> BoxFuture<'static, std::result::Result<(), CoordinationError>> {
        Box::pin(async move {
            let published = async {
                let mut tx = self.pool.begin().await?;
                publish_row(&mut tx, size, &checkpoint).await?;
                tx.commit().await?;
                Ok(())
            };
            published.await.map_err(coordination_error("publishing the log's checkpoint"))
        })
    }
}
