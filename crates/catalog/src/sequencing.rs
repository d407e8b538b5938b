//! The custody log's coordination rows (`custodia_ledger::coordinated`): every gateway on this database sequences
//! its entries here, and integrates them in turn under the integration row's lock.
//!
//! - An entry gets its index from `log_sequence` in the transaction that stores it in `custody_index`: the
//!   sequence row's lock, taken first, orders every appending transaction, so indices are contiguous, none is
//!   given twice, and a record's `prior` (the artefact's latest record) is read under that same lock, across
//!   processes.
//! - A process runs one sequencing transaction at a time (a gateway that freezes then holds or awaits the sequence
//!   row's lock on one connection), and each, once it holds that lock, takes every request waiting, up to
//!   [`MAX_BATCH`] (Tessera's batching, grown by the wait for the lock): the fences are checked request by request (a stale one refuses its own
//!   request only), the sequence row is locked and moved once, each artefact's latest record is read once, the
//!   requests' records are made in the order they arrived (each chained to the one before it about its artefact,
//!   in the batch or before it), and they are stored together. If the transaction fails, none of their records is
//!   stored; if the database refused what a statement wrote (a constraint, a trigger: one record, perhaps), each
//!   of its requests is sequenced again in a transaction of its own, in the order they first came, its record made
//!   again from the prior it then reads, so that one record the database refuses fails its own request only.
//! - PostgreSQL: the integration lock is `SELECT … FOR UPDATE` on the `log_integration` row (or `SKIP LOCKED`, for
//!   a process that only takes it if free), in a transaction held until the checkpoint is published (or the holder
//!   dies: its connection goes, and the lock with it). Publishing tells every process (`NOTIFY`, with the
//!   checkpoint's note), each listening on a connection of its own. SQLite: a catalog has one gateway, so the lock
//!   is in-process, and publishing is a short transaction.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use custodia_ledger::{Coordination, CoordinationError, Integrated, IntegrationLock};
use futures::future::BoxFuture;
use sqlx::{AnyPool, Row as _};
use tokio::sync::oneshot;

use crate::{Catalog, CatalogError, HearingFence, Registration, Result, TransferMove, UploadCompletion};

/// An entry sequenced into the custody log, not yet necessarily integrated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub index: u64,
    pub entry: Vec<u8>,
}

/// Where one of the log's own entries, about no case, is indexed ([`Catalog::sequence_log_entry`]): its shelf of
/// the custody index (the `case_id` of its row, which no case's id can be), so that each kind is read without the
/// others. A gateway's timestamps are many (one a minute while the log changes, each a few KiB of token) and its
/// registry's pins few: the check for the last pin at start-up reads pins alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogShelf {
    /// RFC 3161 timestamps of the log's checkpoints (under the empty case id, where they always were).
    Timestamps,
    /// Pins of the partner registry (under `*partner-registry`: an identifier has no `*`).
    PartnerRegistryPins,
}

impl LogShelf {
    /// The `case_id` of its rows in the custody index.
    pub fn case_id(self) -> &'static str {
        match self {
            Self::Timestamps => "",
            Self::PartnerRegistryPins => "*partner-registry",
        }
    }
}

/// The openings of a log entry's commitments ([`Catalog::sequence_log_entry`]), kept under the entry's SHA-256.
#[derive(Clone, Copy)]
pub struct EntryOpenings<'a> {
    /// The entry's SHA-256, in hex.
    pub record_sha256: &'a str,
    /// The openings, canonical JSON.
    pub openings: &'a str,
}

impl std::fmt::Debug for EntryOpenings<'_> {
    /// The SHA-256 only: the openings are the texts that the entry's commitments hide.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryOpenings").field("record_sha256", &self.record_sha256).finish_non_exhaustive()
    }
}

/// The longest a PostgreSQL transaction holding the integration lock may sit idle: a gateway that stops answering
/// (frozen, cut off) loses the lock, and another integrates. Longer than a turn's writes to the store may take (S3
/// requests give up after 10 s of retries): a holder that loses the lock all the same may still write a checkpoint
/// after another's, which the next turn repairs (`custodia_ledger::coordinated`).
/// Well within the 20 s an append waits for integration (`custodia_ledger::coordinated::INTEGRATION_PATIENCE`), so
/// that appends waiting behind a frozen holder are still integrated by another gateway within it.
const IDLE_INTEGRATION_TIMEOUT: &str = "12s";
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
    /// How many requests the running transaction took, until it answers them.
    in_transaction: usize,
}

/// A request waiting in the queue.
struct Request {
    id: u64,
    sequencing: Sequencing,
    /// What became of it. Closed when its caller went away.
    done: oneshot::Sender<Answer>,
}

/// What became of a request.
enum Answer {
    /// Its index, or why it has none.
    Done(Result<Sequenced>),
    /// The database refused what its batch's transaction wrote: its caller asks again, alone
    /// ([`Sequencing::alone`]).
    Again,
}

/// What a request asks to sequence.
struct Sequencing {
    case_id: String,
    artefact_id: Option<String>,
    openings: Option<String>,
    fence: Option<HearingFence>,
    /// The turns the record is made under, each still to be held when it is stored ([`Catalog::within_turn`]).
    turns: Arc<[crate::turns::TurnFence]>,
    /// What the catalog lists with the record, if it registers an artefact ([`Catalog::sequence_registration`]).
    registration: Option<Box<Registration>>,
    /// The transfer the record moves on, if it is a transfer's evidence ([`Catalog::sequence_moving_transfer`]).
    moves: Option<TransferMove>,
    record: Record,
    /// Asked again after its batch failed, to be taken by a transaction of its own: the id it was first asked
    /// under, which orders those asked again.
    alone: Option<u64>,
}

/// A record to sequence, and its SHA-256 (hex).
#[derive(Clone)]
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
    moves: Option<TransferMove>,
    made: Made,
}

impl Sequencer {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock; if something did, the queue is still whole.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request waits (one whose caller went away does not count). If none does, the task running the
    /// transactions ends, in the same critical section, and the next request starts another.
    fn waiting_or_end(&self) -> bool {
        let mut queue = self.queue();
        queue.waiting.retain(|request| !request.done.is_closed());
        if queue.waiting.is_empty() {
            queue.task = None;
            return false;
        }
        true
    }

    /// Whether requests wait for a transaction, or are in the one running.
    fn busy(&self) -> bool {
        let queue = self.queue();
        queue.in_transaction > 0 || !queue.waiting.is_empty()
    }

    /// The requests a transaction takes: every one waiting, up to [`MAX_BATCH`], but those whose callers went away,
    /// and a request asked again alone by itself (those go first, and only one goes into a batch, which ends it).
    fn take_batch(&self) -> Vec<Request> {
        let mut queue = self.queue();
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH
            && queue.waiting.front().is_some_and(|request| batch.is_empty() || request.sequencing.alone.is_none())
            && let Some(request) = queue.waiting.pop_front()
        {
            if request.done.is_closed() {
                continue;
            }
            let alone = request.sequencing.alone.is_some();
            batch.push(request);
            if alone {
                break;
            }
        }
        queue.in_transaction = batch.len();
        batch
    }

    /// The running transaction's requests are answered now.
    fn answering(&self) {
        self.queue().in_transaction = 0;
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
    /// if alone. If the database refuses what the transaction wrote (a constraint, a trigger: perhaps one record's
    /// doing), each request of the batch is sequenced again in a transaction of its own, `entry_for` called again
    /// with the prior it then reads; a transaction that fails otherwise (the database unreachable or out of room),
    /// or one that sequences a request alone, fails with [`CatalogError::BatchFailed`], and none of its records is
    /// stored. A call that waits more than 10 s for a
    /// transaction to take it fails with [`CatalogError::Busy`].
    pub async fn sequence_custody<E>(
        &self,
        case_id: &str,
        artefact_id: Option<&str>,
        openings: &str,
        fence: Option<&HearingFence>,
        entry_for: impl FnMut(Option<u64>) -> std::result::Result<(Vec<u8>, String), E>,
    ) -> Result<std::result::Result<Sequenced, E>> {
        self.sequence_from_prior(case_id, artefact_id, openings, fence.cloned(), None, None, entry_for).await
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
        entry_for: impl FnMut(Option<u64>) -> std::result::Result<(Vec<u8>, String), E>,
    ) -> Result<std::result::Result<Sequenced, E>> {
        let (case_id, artefact_id) = (registration.artefact.case_id.clone(), registration.artefact.id.clone());
        let registration = Some(Box::new(registration));
        let (case_id, artefact_id) = (case_id.as_str(), Some(artefact_id.as_str()));
        self.sequence_from_prior(case_id, artefact_id, openings, fence.cloned(), registration, None, entry_for).await
    }

    /// [`Catalog::sequence_custody`] for the record that is a transfer's evidence and moves it on: it is sequenced
    /// only while the transfer is still in stage `moves.from` (its row locked meanwhile), and the transfer moves to
    /// `moves.to` in the same transaction, its signed evidence (`moves.evidence`) kept in `transfer_evidences` as
    /// pending, with the record's index, until its inclusion proof is added. Otherwise nothing is sequenced, moved
    /// or kept, and the error is [`CatalogError::TransferMoved`]. So of two requests racing to move one transfer on
    /// (two downloads through two gateways, each the transfer's `Retrieval`; a download and the sweep's
    /// `NonRetrieval`), one logs its evidence; and a gateway that stops once the transaction has committed leaves
    /// the evidence kept, for the duty of the transfers to complete.
    pub async fn sequence_moving_transfer<E>(
        &self,
        case_id: &str,
        artefact_id: Option<&str>,
        openings: &str,
        moves: TransferMove,
        entry_for: impl FnMut(Option<u64>) -> std::result::Result<(Vec<u8>, String), E>,
    ) -> Result<std::result::Result<Sequenced, E>> {
        let (fence, registration, moves) = (None, None, Some(moves));
        self.sequence_from_prior(case_id, artefact_id, openings, fence, registration, moves, entry_for).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn sequence_from_prior<E>(
        &self,
        case_id: &str,
        artefact_id: Option<&str>,
        openings: &str,
        fence: Option<HearingFence>,
        registration: Option<Box<Registration>>,
        moves: Option<TransferMove>,
        entry_for: impl FnMut(Option<u64>) -> std::result::Result<(Vec<u8>, String), E>,
    ) -> Result<std::result::Result<Sequenced, E>> {
        let mut entry_for = entry_for;
        let mut alone = None;
        loop {
            let (prior_tx, mut prior) = oneshot::channel();
            let (made, made_rx) = oneshot::channel();
            let (id, done) = self.enqueue(Sequencing {
                case_id: case_id.to_owned(),
                artefact_id: artefact_id.map(str::to_owned),
                openings: Some(openings.to_owned()),
                fence: fence.clone(),
                turns: self.turn_fences.clone(),
                registration: registration.clone(),
                moves: moves.clone(),
                record: Record::FromPrior { prior: prior_tx, made: made_rx },
                alone,
            });
            // No prior comes to a request refused (its fence stale) or failed before its turn: its answer says why.
            if let Some(prior) = self.turn(id, &mut prior).await? {
                let (entry, sha256) = match entry_for(prior) {
                    Ok(made) => made,
                    // Dropping `made` tells the transaction that this request takes no index.
                    Err(err) => return Ok(Err(err)),
                };
                // Gone only if the transaction failed meanwhile, which the answer says.
                let _ = made.send(Made { entry, sha256 });
            }
            match done.await {
                // Asked again once at most: a request taken alone is never told to.
                Ok(Answer::Again) if alone.is_none() => alone = Some(id),
                answer => return answered(answer).map(Ok),
            }
        }
    }

    /// Sequences one of the log's own entries, about no case (an RFC 3161 timestamp of a checkpoint, a pin of the
    /// partner registry), as a custody record is: in one transaction it gets the log's next index, goes into the
    /// custody index on its `shelf` (no case, no artefact; where [`Catalog::log_entries_newest_first`] finds it)
    /// and chains to nothing, and its `openings`, if it has any, are kept under its SHA-256. So it is never
    /// in the log without its row of the index, on PostgreSQL or SQLite, whatever stops between the two. It is
    /// stored only while the turns this catalog is within are still held ([`Catalog::within_turn`]).
    ///
    /// Fails as [`Catalog::sequence_custody`] does, and then nothing of it is stored.
    pub async fn sequence_log_entry(
        &self,
        shelf: LogShelf,
        entry: Vec<u8>,
        openings: Option<EntryOpenings<'_>>,
    ) -> Result<Sequenced> {
        let (sha256, openings) = match openings {
            Some(EntryOpenings { record_sha256, openings }) => (record_sha256.to_owned(), Some(openings.to_owned())),
            None => (String::new(), None),
        };
        self.sequence_made(shelf.case_id(), Made { entry, sha256 }, openings, self.turn_fences.clone()).await
    }

    /// Sequences an entry made before it was queued (no prior), indexed under `case_id`, with `openings` under its
    /// SHA-256 if it has any, under `turns`.
    async fn sequence_made(
        &self,
        case_id: &str,
        made: Made,
        openings: Option<String>,
        turns: Arc<[crate::turns::TurnFence]>,
    ) -> Result<Sequenced> {
        let mut alone = None;
        loop {
            let (id, mut done) = self.enqueue(Sequencing {
                case_id: case_id.to_owned(),
                artefact_id: None,
                openings: openings.clone(),
                fence: None,
                turns: turns.clone(),
                registration: None,
                moves: None,
                record: Record::Made(made.clone()),
                alone,
            });
            match self.turn(id, &mut done).await?.ok_or(CatalogError::SequencingStopped)? {
                Answer::Again if alone.is_none() => alone = Some(id),
                Answer::Again => return Err(CatalogError::SequencingStopped),
                Answer::Done(done) => return done,
            }
        }
    }

    /// Queues `sequencing` for the next transaction, and starts the task that runs them unless it runs: the
    /// request's id, and where its answer will come.
    /// A request asked again alone goes before those waiting, after those asked again before it (in the order they
    /// were first asked: a record about an artefact chains after the one asked before it, as in their batch).
    fn enqueue(&self, sequencing: Sequencing) -> (u64, oneshot::Receiver<Answer>) {
        let (done, answer) = oneshot::channel();
        let mut queue = self.sequencer.queue();
        queue.last_id += 1;
        let id = queue.last_id;
        match sequencing.alone {
            Some(first) => {
                let at = queue
                    .waiting
                    .iter()
                    .position(|waiting| waiting.sequencing.alone.is_none_or(|other| other > first))
                    .unwrap_or(queue.waiting.len());
                queue.waiting.insert(at, Request { id, sequencing, done });
            }
            None => queue.waiting.push_back(Request { id, sequencing, done }),
        }
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

    /// Runs sequencing transactions, one at a time, while requests wait. Each takes its batch once it holds the
    /// sequence row's lock, so that what arrived while it waited for the lock (held by another gateway's
    /// transaction) goes in too: with several gateways, batches grow with the wait rather than queue behind it.
    async fn run_sequencing(self) {
        while self.sequencer.waiting_or_end() {
            let locked = self.lock_sequence().await;
            let batch = self.sequencer.take_batch();
            if batch.is_empty() {
                // Their callers went away meanwhile; the transaction, if any, rolls back.
                continue;
            }
            let (sequencing, done): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|request| (request.sequencing, request.done)).unzip();
            let records = done.len();
            // Whether the transaction held the sequence row's lock: a failure to take it is no record's doing.
            let (sequenced, reached_records) = match locked {
                Ok(tx) => (self.sequence_batch(tx, sequencing).await, true),
                Err(err) => (Err(err), false),
            };
            self.sequencer.answering();
            match sequenced {
                Ok(answers) => {
                    for (done, answer) in done.into_iter().zip(answers) {
                        if let Some(answer) = answer {
                            // A caller that went away meanwhile has no need of its answer.
                            let _ = done.send(Answer::Done(answer));
                        }
                    }
                }
                // The database refused what a statement wrote: perhaps one record's doing, so each is asked again
                // alone (a refusal a whole batch would meet, such as a full disk, fails it as a whole: each alone
                // would only wait for the lock to fail again).
                Err(err) if records > 1 && reached_records && crate::refused_a_write(&err) => {
                    for done in done {
                        let _ = done.send(Answer::Again);
                    }
                }
                Err(err) => {
                    let source = Arc::new(err);
                    for done in done {
                        let _ =
                            done.send(Answer::Done(Err(CatalogError::BatchFailed { records, source: source.clone() })));
                    }
                }
            }
        }
    }

    /// A sequencing transaction holding the sequence row's lock (on SQLite, the database's write lock), waited for
    /// within the limits that keep a stuck gateway from holding it long; with the row's next index.
    async fn lock_sequence(&self) -> sqlx::Result<(sqlx::Transaction<'static, sqlx::Any>, i64)> {
        if self.postgres_url.is_some() {
            // A gateway that stops answering while it holds the lock (frozen, cut off) loses it within seconds, and
            // one waiting for it too long gives up retryably (set as the transaction begins: no round trip more).
            let mut tx = self.pool.begin_with(begin_with_limits(IDLE_SEQUENCING_TIMEOUT, SEQUENCE_LOCK_WAIT)).await?;
            let next = sqlx::query("SELECT next FROM log_sequence WHERE id = 1 FOR UPDATE").fetch_one(&mut *tx).await?;
            let next = next.try_get("next")?;
            return Ok((tx, next));
        }
        let mut tx = self.pool.begin().await?;
        // SQLite: write first, so that the transaction takes the write lock (waiting for it as long as the
        // connection's busy timeout) before it reads anything. A transaction that reads first and then writes
        // while another connection writes is refused at once (SQLITE_BUSY, which no wait can resolve).
        // (A statement that writes takes the lock whether or not it changes a row; this one changes none.)
        sqlx::query("UPDATE log_sequence SET next = next WHERE id = -1").execute(&mut *tx).await?;
        let next =
            sqlx::query("SELECT next FROM log_sequence WHERE id = 1").fetch_one(&mut *tx).await?.try_get("next")?;
        Ok((tx, next))
    }

    /// Sequences a batch of requests in `tx`, which holds the sequence row's lock: for each request, in order, its
    /// answer (`None` for one that made no record: its caller has its answer, or went away).
    async fn sequence_batch(
        &self,
        (mut tx, next): (sqlx::Transaction<'static, sqlx::Any>, i64),
        batch: Vec<Sequencing>,
    ) -> sqlx::Result<Vec<Option<Result<Sequenced>>>> {
        let held = fences_held(&mut tx, batch.iter().filter_map(|sequencing| sequencing.fence.as_ref())).await?;
        let turns_held =
            crate::turns::turns_held(&mut tx, batch.iter().flat_map(|sequencing| sequencing.turns.iter())).await?;
        let registrations = || batch.iter().filter_map(|sequencing| sequencing.registration.as_deref());
        let claimed =
            claims_held(&mut tx, registrations().filter_map(|registration| registration.consumes.as_ref())).await?;
        let mut listed =
            listed_already(&mut tx, registrations().map(|registration| registration.artefact.id.as_str())).await?;
        let holdings = registrations().filter_map(|registration| registration.holding.as_deref());
        let lasting = self.holdings_lasting(&mut tx, holdings).await?;
        let movable =
            transfers_in_stage(&mut tx, batch.iter().filter_map(|sequencing| sequencing.moves.as_ref())).await?;
        let mut consumed = HashSet::new();
        let mut moving = HashSet::new();
        let mut answers: Vec<Option<Result<Sequenced>>> = Vec::with_capacity(batch.len());
        let mut admitted = Vec::with_capacity(batch.len());
        for (at, sequencing) in batch.into_iter().enumerate() {
            let registration = sequencing.registration.as_deref();
            let consumes = registration.and_then(|registration| registration.consumes.as_ref());
            if let Some(stale) = sequencing.fence.as_ref().filter(|fence| !held[*fence]) {
                answers.push(Some(Err(stale.lost())));
            } else if sequencing.turns.iter().any(|turn| !turns_held[turn]) {
                // The turn's lock went (its connection cut, its gateway frozen past the limit): another gateway may
                // hold it now, and the check made under it no longer holds.
                answers.push(Some(Err(CatalogError::TurnLost)));
            } else if let Some(lost) =
                consumes.filter(|completion| !claimed[*completion] || !consumed.insert(completion.upload_id.clone()))
            {
                // Not claimed as it says, or consumed by a request before it in this batch.
                answers.push(Some(Err(CatalogError::ClaimLost { upload_id: lost.upload_id.clone() })));
            } else if registration.and_then(|registration| registration.holding.as_ref()).is_some_and(|id| !lasting[id])
            {
                // Lapsed, or about to: other gateways may have counted its bytes as free.
                answers.push(Some(Err(CatalogError::HoldingLapsed)));
            } else if let Some(moved) =
                sequencing.moves.as_ref().filter(|moves| !movable[*moves] || !moving.insert(moves.transfer_id.clone()))
            {
                // Not in the stage it says, or moved on by a request before it in this batch.
                let (transfer_id, from) = (moved.transfer_id.clone(), moved.from.clone());
                answers.push(Some(Err(CatalogError::TransferMoved { transfer_id, from })));
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
        // The indices from the sequence row's next (its lock is held): one for each record made, in order; the row
        // moves past them as they are stored, so that the indices stay contiguous.
        let first = next;
        let artefacts: HashSet<&str> = admitted.iter().filter_map(|(_, s)| s.artefact_id.as_deref()).collect();
        let mut latest = latest_records(&mut tx, artefacts).await?;
        let mut stored = Vec::with_capacity(admitted.len());
        for (at, sequencing) in admitted {
            let Sequencing {
                case_id,
                artefact_id,
                openings,
                fence: _,
                registration,
                moves,
                record,
                alone: _,
                turns: _,
            } = sequencing;
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
            stored.push(Stored { at, index, case_id, artefact_id, openings, registration, moves, made });
        }
        if stored.is_empty() {
            return Ok(answers);
        }
        insert_records(&mut tx, &stored, first + stored.len() as i64, self.postgres_url.is_some()).await?;
        for record in &stored {
            let Some(moves) = &record.moves else { continue };
            move_transfer(&mut tx, moves, record.index).await?;
        }
        for record in &stored {
            let Some(registration) = record.registration.as_deref() else { continue };
            let artefact = crate::ArtefactRow { ledger_index: record.index, ..registration.artefact.clone() };
            crate::insert_artefact_row(&mut tx, &artefact, registration.hearing.as_deref()).await?;
            if let Some(completion) = &registration.consumes {
                crate::uploads_removed(&mut tx, &completion.upload_id).await?;
            }
            if let Some(holding) = &registration.holding {
                crate::holdings::holding_consumed(&mut tx, holding).await?;
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
        Arc::new(LogCoordination {
            catalog: self.clone(),
            publications: tokio::sync::watch::Sender::new(None),
            listener: Mutex::new(None),
        })
    }
}

/// A request's answer as the sequencing task sent it; a closed channel means the task ended before answering.
fn answered(done: std::result::Result<Answer, oneshot::error::RecvError>) -> Result<Sequenced> {
    match done {
        Ok(Answer::Done(answer)) => answer,
        // Sent only to a request in a batch of several, which is asked again rather than answered.
        Ok(Answer::Again) | Err(_) => Err(CatalogError::SequencingStopped),
    }
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

/// Whether each of `moves`' transfers is still in the stage it is to move from, each checked once, in the order of
/// the transfers (so that two batches cannot deadlock on their rows). The row is locked meanwhile (on PostgreSQL,
/// until the transaction ends), so that nothing else moves it before the batch's records are stored.
async fn transfers_in_stage<'a>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    moves: impl Iterator<Item = &'a TransferMove>,
) -> sqlx::Result<BTreeMap<TransferMove, bool>> {
    let mut movable: BTreeMap<TransferMove, bool> = moves.map(|moves| (moves.clone(), false)).collect();
    for (moves, in_stage) in &mut movable {
        let locked = sqlx::query("UPDATE transfers SET stage = stage WHERE id = $1 AND stage = $2")
            .bind(&moves.transfer_id)
            .bind(&moves.from)
            .execute(&mut **tx)
            .await?;
        *in_stage = locked.rows_affected() == 1;
    }
    Ok(movable)
}

/// Moves a transfer on, with the record that is its evidence (at `index`): checked in stage by
/// [`transfers_in_stage`] and locked since. The signed evidence is kept with it, pending its inclusion proof, so
/// that the transfer never stands moved on without the evidence its record commits to. A rung already kept is
/// never replaced (none is: a transfer moves on from a stage once, and its closing rung comes only so): if one
/// were, the insert would fail, and the move and the record with it.
async fn move_transfer(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    moves: &TransferMove,
    index: i64,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE transfers SET stage = $1, updated_at = $2 WHERE id = $3 AND stage = $4")
        .bind(&moves.to)
        .bind(&moves.at)
        .bind(&moves.transfer_id)
        .bind(&moves.from)
        .execute(&mut **tx)
        .await?;
    let evidence = &moves.evidence;
    sqlx::query(
        "INSERT INTO transfer_evidences (transfer_id, rung, event, signed, ledger_index) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&moves.transfer_id)
    .bind(evidence.rung)
    .bind(&evidence.event)
    .bind(&evidence.signed)
    .bind(index)
    .execute(&mut **tx)
    .await?;
    Ok(())
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
/// Stores the records of `stored` in the custody index, with their openings, and moves the sequence row's next to
/// `next` (on PostgreSQL, in the statement that inserts the records: the sequence row's lock is held meanwhile, and
/// every statement is a round trip under it).
async fn insert_records(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    stored: &[Stored],
    next: i64,
    postgres: bool,
) -> sqlx::Result<()> {
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
    let insert = format!(
        "INSERT INTO custody_index (ledger_index, case_id, artefact_id, record) VALUES {}",
        rows_of_placeholders(stored.len(), 4)
    );
    let sql = if postgres {
        format!("WITH moved AS (UPDATE log_sequence SET next = ${} WHERE id = 1) {insert}", stored.len() * 4 + 1)
    } else {
        sqlx::query("UPDATE log_sequence SET next = $1 WHERE id = 1").bind(next).execute(&mut **tx).await?;
        insert
    };
    let mut query = sqlx::query(&sql);
    for record in stored {
        query = query
            .bind(record.index)
            .bind(record.case_id.as_str())
            .bind(record.artefact_id.as_deref())
            .bind(record.made.entry.as_slice());
    }
    if postgres {
        query = query.bind(next);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

struct LogCoordination {
    catalog: Catalog,
    /// The note of the checkpoint this process last heard was published (PostgreSQL's `NOTIFY`, by
    /// [`listen_for_publications`]); `None` when the listening connection was found again (what was published
    /// meanwhile was not heard). On SQLite, whose one gateway publishes everything itself, nothing is heard.
    publications: tokio::sync::watch::Sender<Option<Bytes>>,
    /// The task that listens, started with the first subscriber; stopped with the coordination.
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for LogCoordination {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.lock().unwrap_or_else(PoisonError::into_inner).take() {
            listener.abort();
        }
    }
}

/// The channel on which a gateway that published the log's checkpoint tells the others (`NOTIFY`, sent with the
/// publishing transaction's commit; the payload is the checkpoint's note, a few hundred bytes of text).
const PUBLISHED_CHANNEL: &str = "custodia_log_published";

/// The least time between two connections of the listener: one lost after listening at least this long is made
/// again at once, and one that could not be made, or lasted less, waits the rest. A notification sent while none
/// listens is not heard, so each loss is told as one (`None`, which has integrators read the row), and every
/// integrator still looks at the row now and then.
const LISTEN_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Listens for the checkpoints published through the log's coordination, for as long as the task runs: each note
/// heard, and `None` whenever some may have gone unheard (when the connection is lost, and once it listens again).
async fn listen_for_publications(url: String, publications: tokio::sync::watch::Sender<Option<Bytes>>) {
    // The listener's own pool of one connection: a connection is asked for once a second at most, and one that
    // cannot be made within that second fails (rather than after sqlx's own retries, which go on for 30 s).
    let pool = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(LISTEN_AGAIN_AFTER)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy(&url)
    {
        Ok(pool) => pool,
        Err(err) => {
            // Not reached with the URL the catalog connected with; integrators then follow the row only.
            tracing::error!(error = %custodia_core::ErrorChain(&err), "cannot listen for the log's publications");
            return;
        }
    };
    loop {
        let connected = tokio::time::Instant::now();
        let mut listened = false;
        let listening = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            // A lost connection ends this listener (and is told) rather than being made again inside it.
            listener.eager_reconnect(false);
            listener.listen(PUBLISHED_CHANNEL).await?;
            listened = true;
            // Connected (again): whatever was published meanwhile is looked at now.
            publications.send_replace(None);
            loop {
                let Some(notification) = listener.try_recv().await? else {
                    // The connection was lost; a new one is made below.
                    return Ok::<(), sqlx::Error>(());
                };
                let note = notification.payload();
                publications.send_replace((!note.is_empty()).then(|| Bytes::copy_from_slice(note.as_bytes())));
            }
        };
        if let Err(err) = listening.await {
            tracing::debug!(error = %custodia_core::ErrorChain(&err), "listening for the log's publications failed; trying again");
        }
        if listened {
            // Nothing is heard until the next connection listens: the row says what was published meanwhile.
            publications.send_replace(None);
        }
        tokio::time::sleep_until(connected + LISTEN_AGAIN_AFTER).await;
    }
}

fn coordination_error(what: &'static str) -> impl FnOnce(CatalogError) -> CoordinationError {
    move |err| CoordinationError { what, transient: err.is_transient(), source: Box::new(err) }
}

fn integrated((size, checkpoint): (i64, Option<Vec<u8>>), sequenced: i64) -> Integrated {
    Integrated { size: size as u64, checkpoint: checkpoint.map(Bytes::from), sequenced: sequenced as u64 }
}

/// Both coordination rows in one query, with `lock` (a locking clause on the integration row, or nothing).
fn read_rows(lock: &str) -> String {
    format!(
        "SELECT i.size AS size, i.checkpoint AS checkpoint, s.next AS next \
         FROM log_integration i, log_sequence s WHERE i.id = 1 AND s.id = 1{lock}"
    )
}

/// What begins a PostgreSQL transaction that holds a lock others wait for: it may sit idle `idle` at most (a
/// holder that stops answering loses its lock) and waits `lock_wait` at most for a lock (then fails, retryably).
/// Sent with `BEGIN` as one simple query.
fn begin_with_limits(idle: &str, lock_wait: &str) -> String {
    format!("BEGIN; SET LOCAL idle_in_transaction_session_timeout = '{idle}'; SET LOCAL lock_timeout = '{lock_wait}'")
}

fn integrated_of(row: &sqlx::any::AnyRow) -> Result<Integrated> {
    Ok(integrated((row.try_get("size")?, row.try_get("checkpoint")?), row.try_get("next")?))
}

impl LogCoordination {
    /// Both coordination rows, without the lock: what every gateway's integrator asks when it follows.
    async fn read(&self) -> Result<Integrated> {
        integrated_of(&sqlx::query(&read_rows("")).fetch_one(&self.catalog.pool).await?)
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

    /// The integration lock, waited for (`wait`) or only if free: `None` when another holds it.
    async fn lock(&self, wait: bool) -> Result<Option<Box<dyn IntegrationLock>>> {
        let pool = &self.catalog.pool;
        if self.catalog.postgres_url.is_none() {
            let mutex = self.catalog.integration.clone();
            let held = if wait {
                mutex.lock_owned().await
            } else {
                let Ok(held) = mutex.try_lock_owned() else { return Ok(None) };
                held
            };
            let row = self.read().await?;
            return Ok(Some(Box::new(InProcessLock { pool: pool.clone(), row, _held: held })));
        }
        // The limits are set as the transaction begins: no round trip more.
        let mut tx = pool.begin_with(begin_with_limits(IDLE_INTEGRATION_TIMEOUT, INTEGRATION_LOCK_WAIT)).await?;
        // Skipped if held, for a process that only takes the lock if free.
        let locking = if wait { " FOR UPDATE OF i" } else { " FOR UPDATE OF i SKIP LOCKED" };
        let Some(row) = sqlx::query(&read_rows(locking)).fetch_optional(&mut *tx).await? else {
            // Held by another gateway (skipped): this transaction locked nothing.
            return Ok(None);
        };
        let row = integrated_of(&row)?;
        Ok(Some(Box::new(RowLock { tx, row })))
    }
}

impl Coordination for LogCoordination {
    fn sequence(&self, entry: Bytes) -> BoxFuture<'_, std::result::Result<u64, CoordinationError>> {
        Box::pin(async move {
            // A plain append (`Log::append`): under no case, with no openings and under no turn.
            let made = Made { entry: entry.to_vec(), sha256: String::new() };
            let sequenced = self.catalog.sequence_made("", made, None, Arc::new([])).await;
            sequenced.map(|sequenced| sequenced.index).map_err(coordination_error("sequencing a log entry"))
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
        Box::pin(async move {
            let locked = self.lock(true).await.map_err(coordination_error("taking the log's integration lock"))?;
            // Waited for, so always taken.
            locked.ok_or_else(|| CoordinationError {
                what: "taking the log's integration lock",
                transient: true,
                source: "the integration row is missing".into(),
            })
        })
    }

    fn try_lock_integration(
        &self,
    ) -> BoxFuture<'_, std::result::Result<Option<Box<dyn IntegrationLock>>, CoordinationError>> {
        Box::pin(async move { self.lock(false).await.map_err(coordination_error("taking the log's integration lock")) })
    }

    fn sequencing(&self) -> bool {
        self.catalog.sequencer.busy()
    }

    fn publications(&self) -> tokio::sync::watch::Receiver<Option<Bytes>> {
        if let Some(url) = &self.catalog.postgres_url {
            let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
            if listener.is_none() {
                *listener = Some(tokio::spawn(listen_for_publications(url.to_string(), self.publications.clone())));
            }
        }
        self.publications.subscribe()
    }
}

/// Publishes what was integrated: the row's size and checkpoint, and the sequence moved past them if it was behind
/// (a log adopted from its store). On PostgreSQL, in one statement that also tells the other gateways (`NOTIFY`,
/// sent at commit; a note that is not text, which a signed note never is, goes as an empty payload: "look").
async fn publish_row(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    size: u64,
    checkpoint: &[u8],
    postgres: bool,
) -> Result<()> {
    if postgres {
        sqlx::query(
            "WITH published AS (UPDATE log_integration SET size = $1, checkpoint = $2 WHERE id = 1 RETURNING size), \
                  moved AS (UPDATE log_sequence SET next = $1 WHERE id = 1 AND next < $1 RETURNING next) \
             SELECT pg_notify($3, $4)",
        )
        .bind(size as i64)
        .bind(checkpoint)
        .bind(PUBLISHED_CHANNEL)
        .bind(std::str::from_utf8(checkpoint).unwrap_or_default())
        .execute(&mut **tx)
        .await?;
        return Ok(());
    }
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
                publish_row(&mut self.tx, size, &checkpoint, true).await?;
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
                publish_row(&mut tx, size, &checkpoint, false).await?;
                tx.commit().await?;
                Ok(())
            };
            published.await.map_err(coordination_error("publishing the log's checkpoint"))
        })
    }
}
