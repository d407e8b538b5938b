//! One log, many processes (Tessera's pattern): every process that appends sequences its entries in a database they
//! share, and whichever process holds the integration lock integrates what is sequenced into tiles and publishes the
//! checkpoint.
//!
//! - **Sequencing** is the database's: an entry gets its index in the transaction that stores it, so an index is
//!   never given twice and never skipped, and a sequenced entry is durable before anyone waits for it.
//! - **Integration** runs under a lock on the coordination row. Its tile writes are deterministic (the same entries
//!   give the same bytes at the same paths), so a process that takes over from one killed mid-batch rewrites them
//!   harmlessly. The checkpoint is written only while the lock is held, and the row's integrated size moves in the
//!   same critical section, so two processes never publish two trees.
//! - **The commit points** are, in order, the checkpoint in the store and then the row. A crash between them leaves
//!   the store ahead of the row; the next integrator checks the store's extra entries against the sequenced ones
//!   and adopts them. A store behind the row (restored from an older copy) is refused: serving it would unpublish
//!   entries.
//!
//! Every process runs an integrator (`Integrator::run`): woken by its own appends, by publications it hears of
//! ([`Coordination::publications`]), and every [`FOLLOW_INTERVAL`] to pick up checkpoints others published and
//! entries a dead process left sequenced. For its own appends it takes the lock only if free (the holder integrates
//! everything sequenced, by any process, and every process hears when it publishes). The process that publishes
//! integrates for all while others append: it takes turns for their entries too, a few milliseconds apart so that
//! what they sequence meanwhile goes into one turn, and the others leave their appends to it for as long as they
//! hear it publish what they wait for (50 ms at a time), rather than queue for the lock and catch up with
//! tiles they did not write. A process appending alone takes its turn once its own appends being sequenced have landed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};

use crate::LogError;
use crate::checkpoint::{Checkpoint, LogSigner, SignedCheckpoint};
use crate::storage::{CHECKPOINT, LogStore};
use crate::tile::{TILE_WIDTH, Tile, TileKind};
use crate::tree_state::{SequencerGuard, TreeState, collect_superseded_partials};

/// An `entries` bound past any index.
const UNBOUNDED: u64 = i64::MAX as u64;

/// How often an integrator looks at the coordination row when nothing wakes it.
pub const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// How often an integrator takes a whole turn under the lock (waiting for it), whether or not anything waits: it
/// checks the store's checkpoint against the row.
const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a process integrating for other processes too waits after each trigger before it takes the lock, so
/// that the others' sequencing transactions (which the sequence row's lock orders one after another) commit
/// meanwhile and one turn integrates them all, rather than one turn each (a turn's writes to the store cost the
/// same whatever it holds); also the first wait after finding the lock held. A process appending alone never waits.
const BUSY_RETRY: Duration = Duration::from_millis(3);

/// For how long after hearing of another process's checkpoint that took entries its appends wait for an integrator
/// leaves its appends to that process: the process that publishes integrates whatever is sequenced, by any process,
/// so the others neither queue for the lock nor catch up with tiles they did not write. Once no publication was
/// heard for this long (the integrating process stopped, died or was cut off, or has nothing more to do), a process
/// whose appends wait takes the lock.
const ANOTHER_INTEGRATES: Duration = Duration::from_millis(50);

/// For how long after one of its turns integrated entries other processes sequenced an integrator keeps taking
/// turns for them: each [`BUSY_RETRY`] after the last, and after a turn that found nothing, once a look at the row
/// (without the lock, every [`BUSY_RETRY`]) finds something sequenced.
const OTHERS_APPENDING: Duration = Duration::from_millis(50);

/// How long [`crate::Log::integrated`] waits for a published checkpoint to cover a sequenced entry, through failed
/// turns (another gateway may integrate it meanwhile), before it gives up with a retryable error.
pub const INTEGRATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// A failure of the shared database a log is coordinated through.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct CoordinationError {
    pub what: &'static str,
    /// Whether trying again later may succeed (the database unreachable, say), rather than a refusal about the data.
    pub transient: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What the coordination row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrated {
    /// How many entries the published checkpoint covers.
    pub size: u64,
    /// The published checkpoint's note; `None` until the log is first integrated through this row (a log that
    /// predates its coordination is adopted as its store holds it).
    pub checkpoint: Option<Bytes>,
    /// How many entries are sequenced: those from `size` on wait for integration.
    pub sequenced: u64,
}

/// The shared database that sequences a log's entries and coordinates their integration. Implemented over SQL by
/// the catalog; every process appending to the log uses the same one.
pub trait Coordination: Send + Sync + 'static {
    /// Stores `entry` durably at the next index, and returns it.
    fn sequence(&self, entry: Bytes) -> BoxFuture<'_, Result<u64, CoordinationError>>;

    /// The coordination row, read without the lock.
    fn integrated(&self) -> BoxFuture<'_, Result<Integrated, CoordinationError>>;

    /// Sequenced entries with indices in `from..to`, in order, at most `limit` of them. Sequenced entries are
    /// immutable, so this needs no lock.
    fn entries(&self, from: u64, to: u64, limit: usize) -> BoxFuture<'_, Result<Vec<(u64, Bytes)>, CoordinationError>>;

    /// Waits for the integration lock, and returns it with the row as it stands under the lock.
    fn lock_integration(&self) -> BoxFuture<'_, Result<Box<dyn IntegrationLock>, CoordinationError>>;

    /// The integration lock if no other process holds it now; `None` if one does (it publishes what it integrates,
    /// and [`Coordination::publications`] says when).
    fn try_lock_integration(&self) -> BoxFuture<'_, Result<Option<Box<dyn IntegrationLock>>, CoordinationError>>;

    /// Whether this process has entries on their way to being sequenced (waiting for, or in, a transaction): an
    /// integrator about to take a turn for this process's appends waits a little for them to land.
    fn sequencing(&self) -> bool;

    /// The note of the checkpoint this process last heard was published through this coordination, by any process;
    /// `None` (a change all the same) when it may have missed some: the row says. A publication not heard (a
    /// notification lost with a connection) is not repeated, so a follower still looks at the row now and then.
    fn publications(&self) -> watch::Receiver<Option<Bytes>>;
}

/// The integration lock, held until it is dropped (released, nothing changed) or published.
pub trait IntegrationLock: Send {
    /// The coordination row, as read under this lock.
    fn integrated(&self) -> &Integrated;

    /// Records that the published checkpoint, `checkpoint`, covers `size` entries, makes sure sequencing goes on
    /// from no less than `size`, and releases the lock.
    fn publish(self: Box<Self>, size: u64, checkpoint: Bytes) -> BoxFuture<'static, Result<(), CoordinationError>>;
}

/// What the handles of a coordinated log share with its integrator.
pub(crate) struct Shared {
    pub(crate) coordination: Arc<dyn Coordination>,
    /// Woken by each local append.
    pub(crate) nudge: Notify,
    /// Counts failed integrations, with the latest failure: an append waiting for integration gives up when it
    /// moves.
    pub(crate) failures: watch::Sender<(u64, Option<Arc<LogError>>)>,
    pub(crate) failing: AtomicBool,
    /// Sequenced but not yet integrated, as last seen.
    pub(crate) waiting: AtomicU64,
    /// The indices this process's appends wait for, until the integrator finds them covered: whose entries a
    /// publication took, and (one past the highest) what a turn for this process's appends must cover.
    pub(crate) pending: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

/// The process's integrator: catches up with the row, integrates what is sequenced, publishes locally.
pub(crate) struct Integrator {
    /// Closed once every handle of the log is gone: the integrator stops.
    pub(crate) handles: tokio::sync::mpsc::Receiver<std::convert::Infallible>,
    pub(crate) storage: LogStore,
    pub(crate) signer: LogSigner,
    /// The tree as this process last integrated or followed it; `None` until it needs one.
    pub(crate) state: Option<TreeState>,
    pub(crate) max_batch: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) published_at: Arc<std::sync::Mutex<std::time::SystemTime>>,
    // Declared before `publish` so that it is released first: `Log::close` waits for `publish` to go.
    pub(crate) _guard: Option<SequencerGuard>,
    pub(crate) publish: watch::Sender<SignedCheckpoint>,
}

/// Why an integrator takes a turn under the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// This process's appends wait. The lock is taken only if free: a process that holds it integrates whatever is
    /// sequenced, by any process, and publishes, and every process hears of it
    /// ([`Coordination::publications`]); if that did not cover them, this process tries again soon. So the
    /// processes follow each other's checkpoints rather than queue for the lock. If a turn taken finds them
    /// published already, it lets the lock go at once.
    ForOwnAppends,
    /// Entries that no appender here waits for (left by a process that died, or sequenced by other processes
    /// while this one integrates for them): the lock if free, a whole turn.
    Waiting,
    /// Opening the log, and the periodic check of the store against the row: the lock waited for, a whole turn.
    Whole,
}

/// What woke an integrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// An append of this process was sequenced.
    OwnAppends,
    /// Another process published.
    Published,
    /// Nothing for [`FOLLOW_INTERVAL`].
    Tick,
    /// The time set to try the lock again for this process's appends has come.
    Retry,
}

/// A turn an integrator set itself for later.
#[derive(Debug, Clone, Copy)]
struct Try {
    at: Instant,
    /// How long it waited for this one: doubled while the lock stays held.
    waited: Duration,
    why: Why,
}

/// Why an integrator set itself a turn for later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// More of this process's appends are being sequenced: the turn is taken as soon as they have landed.
    Gathering,
    /// This process integrates for others too: what they sequence meanwhile goes into the turn.
    Continuing,
    /// This process integrates for others, and its last turn found nothing to do: the row is read (without the
    /// lock) until something is sequenced, while others appended lately.
    Watching,
    /// Another process publishes what this one's appends wait for: the turn is taken only if it stops.
    Deferring,
    /// The lock was held: the row is read first (a publication may have gone unheard), then the lock tried.
    Held,
}

impl Try {
    fn new(why: Why, waited: Duration) -> Self {
        Self { at: Instant::now() + waited, waited, why }
    }

    /// The try after one that found the lock held (`tried`, if it was set for later): [`BUSY_RETRY`] at first, the
    /// wait doubling while the lock stays held, up to [`FOLLOW_INTERVAL`]. A try set for another reason (a
    /// deferral, a gathering) is no measure of how long the holder takes: the wait starts short after it.
    fn after_held(tried: Option<Try>) -> Self {
        let waited = tried
            .filter(|tried| tried.why == Why::Held)
            .map_or(BUSY_RETRY, |tried| (tried.waited * 2).min(FOLLOW_INTERVAL));
        Self::new(Why::Held, waited)
    }

    /// Whether it is a turn of a process integrating for others.
    fn for_others(self) -> bool {
        matches!(self.why, Why::Continuing | Why::Watching)
    }

    /// The turn it sets.
    fn turn(self) -> Turn {
        if self.for_others() { Turn::Waiting } else { Turn::ForOwnAppends }
    }
}

/// What a turn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The lock was held by another process; nothing was done.
    Held,
    /// Nothing needed integrating (or another process had integrated it).
    Nothing,
    /// A batch was integrated and published.
    Integrated,
}

/// The first wait after a failed integration; it doubles up to [`RETRY_WAIT_MAX`].
const RETRY_WAIT_MIN: std::time::Duration = std::time::Duration::from_millis(50);
const RETRY_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `at` was less than `window` ago.
fn within(at: Option<Instant>, window: Duration) -> bool {
    at.is_some_and(|at| at.elapsed() < window)
}

fn coordination_error(err: CoordinationError) -> LogError {
    LogError::Coordination(err)
}

impl Integrator {
    /// Brings the log to what the row and the store say (adopting a log that predates the row), before anything is
    /// appended: returns the published checkpoint.
    pub(crate) async fn open(&mut self) -> Result<SignedCheckpoint, LogError> {
        self.integrate(Turn::Whole).await?;
        Ok(self.publish.borrow().clone())
    }

    pub(crate) async fn run(mut self) {
        let shared = self.shared.clone();
        let mut publications = shared.coordination.publications();
        let mut wait = RETRY_WAIT_MIN;
        let mut checked = Instant::now();
        // The next turn this integrator has set itself, and the wait before it (see [`Try`]).
        let mut next_try: Option<Try> = None;
        // When this process last heard of a checkpoint another process published: while one was heard within
        // [`ANOTHER_INTEGRATES`], that process integrates, and this one leaves its appends to it.
        let mut others_published: Option<Instant> = None;
        // When a turn of this process last integrated entries other processes sequenced: while one did within
        // [`OTHERS_APPENDING`], this process integrates for them too.
        let mut others_appended: Option<Instant> = None;
        // The size of the checkpoint this process last published itself: what its own notification says.
        let mut own_size = 0;
        loop {
            let tick = next_try.map_or_else(|| Instant::now() + FOLLOW_INTERVAL, |next| next.at);
            let wake = tokio::select! {
                () = shared.nudge.notified() => Wake::OwnAppends,
                Ok(()) = publications.changed() => Wake::Published,
                () = tokio::time::sleep_until(tick.into()) => {
                    if next_try.is_some() { Wake::Retry } else { Wake::Tick }
                }
                None = self.handles.recv() => return,
            };
            let heard = if wake == Wake::Published { publications.borrow_and_update().clone() } else { None };
            // What this process's checkpoint covered before anything heard now is published.
            let before = self.publish.borrow().checkpoint.size;
            let another_integrates = others_published.filter(|at| at.elapsed() < ANOTHER_INTEGRATES);
            let turn = if checked.elapsed() >= CHECK_INTERVAL {
                checked = Instant::now();
                Some(Turn::Whole)
            } else if matches!(wake, Wake::OwnAppends | Wake::Retry) {
                let continuing = next_try.is_some_and(Try::for_others);
                if self.uncovered() == 0 && !continuing {
                    // A publication heard meanwhile covered them.
                    next_try = None;
                    None
                } else if wake == Wake::OwnAppends
                    && let Some(next) = next_try
                {
                    // A try is set already: taken now if it waited for this process's sequencing, which has landed.
                    (next.why == Why::Gathering && !shared.coordination.sequencing()).then_some(next.turn())
                } else if let Some(heard) = another_integrates.filter(|_| !continuing) {
                    // Another process integrates, and its turns take this process's appends too (it integrates
                    // whatever is sequenced): this one takes the lock only if that process publishes nothing more.
                    let waited = (heard + ANOTHER_INTEGRATES).saturating_duration_since(Instant::now());
                    next_try = Some(Try::new(Why::Deferring, waited));
                    None
                } else if let Some(next) = next_try.filter(|_| wake == Wake::Retry) {
                    match next.why {
                        // Another process held the lock: what it published may not have been heard (a listening
                        // connection lost), so the row says first.
                        Why::Held => match self.follow().await {
                            Ok(_) if self.uncovered() == 0 => {
                                next_try = None;
                                None
                            }
                            Ok(_) => Some(next.turn()),
                            Err(err) => {
                                self.failed(err);
                                None
                            }
                        },
                        // Nothing was sequenced at the last look: the lock only once something is.
                        Why::Watching => match self.follow().await {
                            Ok(row) if row.sequenced > row.size => Some(Turn::Waiting),
                            Ok(_) => {
                                next_try = within(others_appended, OTHERS_APPENDING)
                                    .then(|| Try::new(Why::Watching, BUSY_RETRY));
                                None
                            }
                            Err(err) => {
                                self.failed(err);
                                None
                            }
                        },
                        _ => Some(next.turn()),
                    }
                } else if within(others_appended, OTHERS_APPENDING) {
                    // Other processes append too: their sequencing transactions commit meanwhile, and this turn
                    // takes them all.
                    next_try = Some(Try::new(Why::Continuing, BUSY_RETRY));
                    None
                } else if shared.coordination.sequencing() {
                    // More of this process's appends are being sequenced (a sequencing transaction takes those
                    // that wait once it holds the sequence row's lock, so a burst of appends lands in one or two):
                    // one turn takes them all, rather than one turn each.
                    next_try = Some(Try::new(Why::Gathering, BUSY_RETRY));
                    None
                } else {
                    Some(Turn::ForOwnAppends)
                }
            } else if let Some(note) = heard
                && let Ok(size) = self.publish_note(&note)
            {
                // What was published came with the news: no need to read the row.
                if size > own_size {
                    // Another process published: this one no longer integrates for others.
                    others_appended = None;
                    if next_try.is_some_and(Try::for_others) {
                        next_try = None;
                    }
                }
                if size > own_size && self.own_between(before, size) > 0 {
                    // It took entries this process's appends wait for: it integrates for all, so this one leaves
                    // its appends to it, and takes the lock for them only if it publishes nothing more.
                    others_published = Some(Instant::now());
                    next_try = (self.uncovered() > 0).then(|| Try::new(Why::Deferring, ANOTHER_INTEGRATES));
                } else if self.uncovered() == 0 && next_try.is_some_and(|next| !next.for_others()) {
                    next_try = None;
                }
                None
            } else {
                match self.follow().await {
                    Ok(_) if self.uncovered() > 0 => {
                        if wake == Wake::Published {
                            next_try.get_or_insert(Try::new(Why::Held, BUSY_RETRY));
                            None
                        } else {
                            Some(Turn::ForOwnAppends)
                        }
                    }
                    Ok(row) if wake == Wake::Tick && row.sequenced > row.size => Some(Turn::Waiting),
                    Ok(_) => None,
                    Err(err) => {
                        self.failed(err);
                        None
                    }
                }
            };
            let Some(turn) = turn else { continue };
            let before_turn = self.publish.borrow().checkpoint.size;
            match self.integrate(turn).await {
                Ok(outcome) => {
                    wait = RETRY_WAIT_MIN;
                    shared.failing.store(false, Ordering::Release);
                    next_try = match outcome {
                        Outcome::Held if self.uncovered() > 0 => {
                            // Another process integrates: it publishes soon, and this one hears it.
                            Some(Try::after_held(next_try))
                        }
                        Outcome::Integrated => {
                            own_size = self.publish.borrow().checkpoint.size;
                            if own_size.saturating_sub(before_turn) > self.own_between(before_turn, own_size) {
                                // The turn took entries this process's appends do not wait for: others'. This
                                // process integrates for them now.
                                others_appended = Some(Instant::now());
                                others_published = None;
                            }
                            // While others append, what they sequence meanwhile is integrated by the next turn.
                            within(others_appended, OTHERS_APPENDING).then(|| Try::new(Why::Continuing, BUSY_RETRY))
                        }
                        Outcome::Nothing if turn == Turn::Waiting && within(others_appended, OTHERS_APPENDING) => {
                            Some(Try::new(Why::Watching, BUSY_RETRY))
                        }
                        _ => None,
                    };
                }
                Err(err) => {
                    next_try = None;
                    self.failed(err);
                    // What others publish meanwhile is published here too (it may cover this process's appends);
                    // the wait itself runs its course.
                    let until = tokio::time::Instant::now() + wait;
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep_until(until) => break,
                            Ok(()) = publications.changed() => {
                                let heard = publications.borrow_and_update().clone();
                                if let Some(note) = heard {
                                    // A note that does not open is no news; the row is read at the next turn.
                                    let _ = self.publish_note(&note);
                                }
                            }
                            None = self.handles.recv() => return,
                        }
                    }
                    wait = (wait * 2).min(RETRY_WAIT_MAX);
                    // Whatever was nudged meanwhile is tried next.
                    shared.nudge.notify_one();
                }
            }
        }
    }

    /// The indices this process's appends wait for (some perhaps covered already).
    fn pending(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<u64>> {
        self.shared.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One past the highest index an append of this process waits for: once a published checkpoint covers it, a
    /// turn this process's appends asked for has nothing to do.
    fn awaited(&self) -> u64 {
        self.pending().last().map_or(0, |last| last + 1)
    }

    /// How many of the entries this process's appends wait for have indices in `from..to`; those below `from` are
    /// covered already (`from` is no more than what this process has published), and forgotten.
    fn own_between(&self, from: u64, to: u64) -> u64 {
        let mut pending = self.pending();
        *pending = pending.split_off(&from);
        pending.range(..to).count() as u64
    }

    /// How many of the entries this process's appends wait for its published checkpoint does not cover yet.
    fn uncovered(&self) -> u64 {
        self.awaited().saturating_sub(self.publish.borrow().checkpoint.size)
    }

    fn failed(&self, err: LogError) {
        tracing::error!(error = %err, "custody log integration failed; sequenced entries wait");
        self.shared.failing.store(true, Ordering::Release);
        let err = Arc::new(err);
        self.shared.failures.send_modify(|(count, latest)| {
            *count += 1;
            *latest = Some(err);
        });
    }

    /// Publishes locally the checkpoint others published: the row as read.
    async fn follow(&mut self) -> Result<Integrated, LogError> {
        let row = self.shared.coordination.integrated().await.map_err(coordination_error)?;
        self.shared.waiting.store(row.sequenced.saturating_sub(row.size), Ordering::Relaxed);
        self.publish_from_row(&row)?;
        Ok(row)
    }

    /// Publishes locally the checkpoint `row` says was published, if it is ahead of this process's.
    fn publish_from_row(&self, row: &Integrated) -> Result<(), LogError> {
        if let Some(note) = &row.checkpoint
            && row.size > self.publish.borrow().checkpoint.size
        {
            self.publish_note(note)?;
        }
        Ok(())
    }

    /// Publishes locally the checkpoint of `note` (checked against the log's key), if it is ahead of this
    /// process's: the size this process's checkpoint covers now.
    fn publish_note(&self, note: &[u8]) -> Result<u64, LogError> {
        let signed = self.opened(note)?;
        let size = signed.checkpoint.size;
        if size > self.publish.borrow().checkpoint.size {
            self.published(signed);
        }
        Ok(size.max(self.publish.borrow().checkpoint.size))
    }

    /// The checkpoint of `note`, checked against the log's key: the one this process published last if that is
    /// its note (already checked), so that a turn does not check the same signature again and again.
    fn opened(&self, note: &[u8]) -> Result<SignedCheckpoint, LogError> {
        let published = self.publish.borrow();
        if published.note() == note {
            return Ok(published.clone());
        }
        drop(published);
        Ok(SignedCheckpoint::open(note, &[self.signer.verifier()])?)
    }

    fn published(&self, signed: SignedCheckpoint) {
        self.publish.send_replace(signed);
        *self.published_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::SystemTime::now();
    }

    /// One turn under the integration lock: [`Outcome::Held`] if another process holds it (only a turn that waits
    /// for it, [`Turn::Whole`], waits).
    async fn integrate(&mut self, turn: Turn) -> Result<Outcome, LogError> {
        let coordination = &self.shared.coordination;
        let lock = if turn == Turn::Whole {
            coordination.lock_integration().await.map_err(coordination_error)?
        } else {
            match coordination.try_lock_integration().await.map_err(coordination_error)? {
                Some(lock) => lock,
                None => return Ok(Outcome::Held),
            }
        };
        self.integrate_locked(turn, lock).await
    }

    async fn integrate_locked(&mut self, turn: Turn, lock: Box<dyn IntegrationLock>) -> Result<Outcome, LogError> {
        let row = lock.integrated().clone();
        if turn == Turn::ForOwnAppends && row.checkpoint.is_some() && row.size >= self.awaited() {
            drop(lock);
            return self.publish_from_row(&row).map(|()| Outcome::Nothing);
        }
        // Between whole turns the row is trusted as it stands: the store's checkpoint is not read. The row moves
        // only after the store's checkpoint was written, so the store holds the row's checkpoint, or one written
        // late by a process that had lost the lock (behind it), or one by a process that died before it moved the
        // row (ahead of it, over entries sequenced here, which this turn integrates again into the same tiles). This
        // turn's checkpoint replaces either, and the next whole turn checks the store against the row.
        let stored = match (&row.checkpoint, turn) {
            (Some(note), Turn::ForOwnAppends | Turn::Waiting) => self.opened(note)?,
            _ => self.stored_checkpoint(&row).await?,
        };
        let (state, pending) = if stored.checkpoint.size > row.size {
            // The store is ahead of the row: a checkpoint that landed before its row moved (a crash, a lost
            // answer), a log that predates its coordination, or entries appended outside it. Whatever is sequenced
            // there must be what the store holds; the rest is adopted from the store.
            self.check_sequenced_match(row.size, &stored).await?;
            (TreeState::open_at(&self.storage, &stored.checkpoint).await?, None)
        } else {
            self.state_at(&row, &stored).await?
        };
        self.integrate_from(lock, &row, stored, state, pending).await
    }

    /// The store's checkpoint, put back to the published one if it is behind the row.
    async fn stored_checkpoint(&self, row: &Integrated) -> Result<SignedCheckpoint, LogError> {
        let stored = match self.storage.get(CHECKPOINT).await? {
            Some(note) => self.opened(&note)?,
            None if row.checkpoint.is_none() => {
                // A new log: its empty checkpoint, written under the lock.
                let signed = self.signer.sign(&Checkpoint::new(self.signer.name(), 0, crate::merkle::empty_root()))?;
                self.storage.put(CHECKPOINT, Bytes::copy_from_slice(signed.note())).await?;
                signed
            }
            None => self.put_back_published(row, 0).await?,
        };
        if stored.checkpoint.size < row.size {
            self.put_back_published(row, stored.checkpoint.size).await
        } else {
            Ok(stored)
        }
    }

    /// Integrates what is sequenced after `state` (the tree at the row, or the store ahead of it), and publishes.
    async fn integrate_from(
        &mut self,
        lock: Box<dyn IntegrationLock>,
        row: &Integrated,
        stored: SignedCheckpoint,
        state: TreeState,
        pending: Option<Vec<(u64, Bytes)>>,
    ) -> Result<Outcome, LogError> {
        let from = state.size();
        // Entries sequenced since the row was read are taken too: sequencing does not wait for this lock.
        let pending = match pending {
            Some(pending) => pending,
            None => {
                self.shared.coordination.entries(from, UNBOUNDED, self.max_batch).await.map_err(coordination_error)?
            }
        };
        let batch: Vec<Bytes> = pending
            .into_iter()
            .enumerate()
            .take_while(|(offset, (index, _))| *index == from + *offset as u64)
            .map(|(_, (_, entry))| entry)
            .collect();
        self.shared.waiting.store(row.sequenced.saturating_sub(from + batch.len() as u64), Ordering::Relaxed);
        if batch.is_empty() {
            if from == row.size && row.checkpoint.is_some() {
                drop(lock);
                self.state = Some(state);
                if stored.checkpoint.size > self.publish.borrow().checkpoint.size {
                    self.published(stored);
                }
                return Ok(Outcome::Nothing);
            }
            // Adopting the store (a log that predates its coordination, or one that was ahead): record it.
            lock.publish(from, Bytes::copy_from_slice(stored.note())).await.map_err(coordination_error)?;
            self.state = Some(state);
            self.published(stored);
            return Ok(Outcome::Nothing);
        }
        let (next, writes) = state.apply(&batch);
        let full_tiles: Vec<String> =
            writes.iter().filter(|(path, _)| !path.contains(".p/")).map(|(path, _)| path.clone()).collect();
        self.storage.put_all(writes).await?;
        let checkpoint = Checkpoint::new(self.signer.name(), next.size(), next.root());
        let signed = self.signer.sign(&checkpoint)?;
        self.storage.put(CHECKPOINT, Bytes::copy_from_slice(signed.note())).await?;
        lock.publish(next.size(), Bytes::copy_from_slice(signed.note())).await.map_err(coordination_error)?;
        self.state = Some(next);
        self.published(signed);
        collect_superseded_partials(&self.storage, full_tiles);
        Ok(Outcome::Integrated)
    }

    /// The store's checkpoint is behind the one the row says was published (`stored_size` entries). If the store
    /// holds the tiles of the published tree, only its checkpoint object is old: a gateway that lost the
    /// integration lock while it wrote (frozen past the lock's idle limit, or slowed by the store) wrote it after a
    /// newer one. Tiles are deterministic, so the published checkpoint is put back. Otherwise the store was restored
    /// from an older copy, and is refused.
    async fn put_back_published(&self, row: &Integrated, stored_size: u64) -> Result<SignedCheckpoint, LogError> {
        let Some(note) = &row.checkpoint else { return Err(behind(stored_size, row.size)) };
        let published = self.opened(note)?;
        if TreeState::open_at(&self.storage, &published.checkpoint).await.is_err() {
            return Err(behind(stored_size, row.size));
        }
        self.storage.put(CHECKPOINT, note.clone()).await?;
        tracing::warn!(
            stored = stored_size,
            published = row.size,
            "the log's store held an older checkpoint than the one published, written late by a gateway that had \
             lost the integration lock; the published one is put back"
        );
        Ok(published)
    }

    /// The tree at the row's size: this process's own, caught up with the entries others integrated when it can be,
    /// otherwise read from the store. When catching up, the entries sequenced after the row's size come in the same
    /// query, and are returned with it.
    async fn state_at(
        &mut self,
        row: &Integrated,
        stored: &SignedCheckpoint,
    ) -> Result<(TreeState, Option<Vec<(u64, Bytes)>>), LogError> {
        let expected_root = match &row.checkpoint {
            Some(note) => self.opened(note)?.checkpoint.root,
            None => return Ok((TreeState::open_at(&self.storage, &stored.checkpoint).await?, None)),
        };
        if let Some(state) = self.state.take_if(|state| state.size() == row.size && state.root() == expected_root) {
            return Ok((state, None));
        }
        if let Some(state) = self.state.take()
            && state.size() <= row.size
            && row.size - state.size() <= self.max_batch as u64
        {
            let behind = (row.size - state.size()) as usize;
            let mut sequenced = self
                .shared
                .coordination
                .entries(state.size(), UNBOUNDED, behind + self.max_batch)
                .await
                .map_err(coordination_error)?;
            if sequenced.len() >= behind
                && sequenced.get(behind.wrapping_sub(1)).is_none_or(|(i, _)| *i + 1 == row.size)
            {
                let pending = sequenced.split_off(behind);
                let missed: Vec<Bytes> = sequenced.into_iter().map(|(_, entry)| entry).collect();
                let (caught_up, _) = state.apply(&missed);
                if caught_up.root() == expected_root {
                    return Ok((caught_up, Some(pending)));
                }
            }
        }
        // Read from the store's tiles at the row's size (the store may be ahead; its tiles below are the same).
        let checkpoint = Checkpoint::new(self.signer.name(), row.size, expected_root);
        Ok((TreeState::open_at(&self.storage, &checkpoint).await?, None))
    }

    /// Every entry sequenced in `from..` that the store's checkpoint covers must be the entry the store holds.
    async fn check_sequenced_match(&self, from: u64, stored: &SignedCheckpoint) -> Result<(), LogError> {
        let to = stored.checkpoint.size;
        let mut next = from;
        let mut bundle: Option<(u64, Vec<Bytes>)> = None;
        while next < to {
            let sequenced =
                self.shared.coordination.entries(next, to, self.max_batch).await.map_err(coordination_error)?;
            let Some(&(last, _)) = sequenced.last() else { break };
            for (index, entry) in sequenced {
                let number = index / TILE_WIDTH;
                if bundle.as_ref().is_none_or(|(held, _)| *held != number) {
                    let width = (to - number * TILE_WIDTH).min(TILE_WIDTH) as u16;
                    let tile = Tile { kind: TileKind::Entries, index: number, width };
                    bundle = Some((number, self.storage.entry_bundle(tile).await?));
                }
                let held = bundle.as_ref().and_then(|(_, entries)| entries.get((index % TILE_WIDTH) as usize));
                if held != Some(&entry) {
                    return Err(LogError::Diverged { index });
                }
            }
            next = last + 1;
        }
        Ok(())
    }
}

fn behind(stored: u64, published: u64) -> LogError {
    LogError::Corrupt {
        path: CHECKPOINT.into(),
        reason: format!(
            "the store's checkpoint covers {stored} entries but {published} were published through the database: \
             the log's store was restored from an older copy, or is not this log's"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_after_finding_the_lock_held_doubles_only_while_it_stays_held() {
        let first = Try::after_held(None);
        assert_eq!((first.why, first.waited), (Why::Held, BUSY_RETRY));
        let second = Try::after_held(Some(first));
        assert_eq!(second.waited, BUSY_RETRY * 2);
        let mut held = second;
        for _ in 0..20 {
            held = Try::after_held(Some(held));
        }
        assert_eq!(held.waited, FOLLOW_INTERVAL, "the wait stops growing");
        // A process that deferred to another for up to 50 ms, then found the lock held, tries again soon: the holder
        // is about to publish, and what it deferred is no measure of that (doubled, it once made appends wait
        // 100 ms more whenever a publication went unheard).
        for why in [Why::Deferring, Why::Gathering, Why::Continuing, Why::Watching] {
            let after = Try::after_held(Some(Try::new(why, ANOTHER_INTEGRATES)));
            assert_eq!((after.why, after.waited), (Why::Held, BUSY_RETRY), "after {why:?}");
        }
    }
}
