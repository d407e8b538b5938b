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
//! Every process runs an integrator (`Integrator::run`): woken by its own appends, and every
//! [`FOLLOW_INTERVAL`] to pick up checkpoints others published and entries a dead process left sequenced.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// Every this many follows, a turn under the lock whether or not anything waits (about every 5 s).
const CHECK_EVERY_TICKS: u32 = 25;

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
    /// One past the highest index an append of this process has waited for: once a published checkpoint covers
    /// it, a turn this process's appends asked for has nothing to do.
    pub(crate) awaited: AtomicU64,
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
    /// This process's appends wait: if another process's turn has published them meanwhile (it integrates
    /// whatever is sequenced, by any process), the lock is let go at once. With several processes appending, most
    /// turns are these, and end so.
    ForOwnAppends,
    /// Opening the log, entries that no appender here waits for (left by a process that died), and the periodic
    /// check of the store against the row: a whole turn.
    Whole,
}

/// The first wait after a failed integration; it doubles up to [`RETRY_WAIT_MAX`].
const RETRY_WAIT_MIN: std::time::Duration = std::time::Duration::from_millis(50);
const RETRY_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

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
        let mut wait = RETRY_WAIT_MIN;
        let mut ticks = 0u32;
        loop {
            let nudged = tokio::select! {
                () = shared.nudge.notified() => true,
                () = tokio::time::sleep(FOLLOW_INTERVAL) => false,
                None = self.handles.recv() => return,
            };
            // Now and then a turn even with nothing to integrate: it checks the store's checkpoint against the row.
            ticks = (ticks + 1) % CHECK_EVERY_TICKS;
            if !nudged && ticks != 0 {
                match self.follow().await {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(err) => {
                        self.failed(err);
                        continue;
                    }
                }
            }
            let turn = if nudged && ticks != 0 { Turn::ForOwnAppends } else { Turn::Whole };
            match self.integrate(turn).await {
                Ok(()) => {
                    wait = RETRY_WAIT_MIN;
                    shared.failing.store(false, Ordering::Release);
                }
                Err(err) => {
                    self.failed(err);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        None = self.handles.recv() => return,
                    }
                    wait = (wait * 2).min(RETRY_WAIT_MAX);
                    // Whatever was nudged meanwhile is tried next.
                    shared.nudge.notify_one();
                }
            }
        }
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

    /// Publishes locally the checkpoint others published. `true` if entries wait for integration.
    async fn follow(&mut self) -> Result<bool, LogError> {
        let row = self.shared.coordination.integrated().await.map_err(coordination_error)?;
        self.shared.waiting.store(row.sequenced.saturating_sub(row.size), Ordering::Relaxed);
        self.publish_from_row(&row)?;
        Ok(row.sequenced > row.size)
    }

    /// Publishes locally the checkpoint `row` says was published, if it is ahead of this process's.
    fn publish_from_row(&self, row: &Integrated) -> Result<(), LogError> {
        if let Some(note) = &row.checkpoint
            && row.size > self.publish.borrow().checkpoint.size
        {
            let signed = SignedCheckpoint::open(note, &[self.signer.verifier()])?;
            self.published(signed);
        }
        Ok(())
    }

    fn published(&self, signed: SignedCheckpoint) {
        self.publish.send_replace(signed);
        *self.published_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::SystemTime::now();
    }

    /// One turn under the integration lock.
    async fn integrate(&mut self, turn: Turn) -> Result<(), LogError> {
        let lock = self.shared.coordination.lock_integration().await.map_err(coordination_error)?;
        let row = lock.integrated().clone();
        if turn == Turn::ForOwnAppends
            && row.checkpoint.is_some()
            && row.size >= self.shared.awaited.load(Ordering::Acquire)
        {
            drop(lock);
            return self.publish_from_row(&row);
        }
        let stored = match self.storage.get(CHECKPOINT).await? {
            Some(note) => SignedCheckpoint::open(&note, &[self.signer.verifier()])?,
            None if row.checkpoint.is_none() => {
                // A new log: its empty checkpoint, written under the lock.
                let signed = self.signer.sign(&Checkpoint::new(self.signer.name(), 0, crate::merkle::empty_root()))?;
                self.storage.put(CHECKPOINT, Bytes::copy_from_slice(signed.note())).await?;
                signed
            }
            None => self.put_back_published(&row, 0).await?,
        };
        let stored = if stored.checkpoint.size < row.size {
            self.put_back_published(&row, stored.checkpoint.size).await?
        } else {
            stored
        };
        let state = if stored.checkpoint.size > row.size {
            // The store is ahead of the row: a checkpoint that landed before its row moved (a crash, a lost
            // answer), a log that predates its coordination, or entries appended outside it. Whatever is sequenced
            // there must be what the store holds; the rest is adopted from the store.
            self.check_sequenced_match(row.size, &stored).await?;
            TreeState::open_at(&self.storage, &stored.checkpoint).await?
        } else {
            self.state_at(&row, &stored).await?
        };
        let from = state.size();
        // Entries sequenced since the row was read are taken too: sequencing does not wait for this lock.
        let pending =
            self.shared.coordination.entries(from, UNBOUNDED, self.max_batch).await.map_err(coordination_error)?;
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
                return Ok(());
            }
            // Adopting the store (a log that predates its coordination, or one that was ahead): record it.
            lock.publish(from, Bytes::copy_from_slice(stored.note())).await.map_err(coordination_error)?;
            self.state = Some(state);
            self.published(stored);
            return Ok(());
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
        Ok(())
    }

    /// The store's checkpoint is behind the one the row says was published (`stored_size` entries). If the store
    /// holds the tiles of the published tree, only its checkpoint object is old: a gateway that lost the
    /// integration lock while it wrote (frozen past the lock's idle limit, or slowed by the store) wrote it after a
    /// newer one. Tiles are deterministic, so the published checkpoint is put back. Otherwise the store was restored
    /// from an older copy, and is refused.
    async fn put_back_published(&self, row: &Integrated, stored_size: u64) -> Result<SignedCheckpoint, LogError> {
        let Some(note) = &row.checkpoint else { return Err(behind(stored_size, row.size)) };
        let published = SignedCheckpoint::open(note, &[self.signer.verifier()])?;
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
    /// otherwise read from the store.
    async fn state_at(&mut self, row: &Integrated, stored: &SignedCheckpoint) -> Result<TreeState, LogError> {
        let expected_root = match &row.checkpoint {
            Some(note) => SignedCheckpoint::open(note, &[self.signer.verifier()])?.checkpoint.root,
            None => return TreeState::open_at(&self.storage, &stored.checkpoint).await,
        };
        if let Some(state) = self.state.take()
            && state.size() <= row.size
            && row.size - state.size() <= self.max_batch as u64
        {
            let missed = self
                .shared
                .coordination
                .entries(state.size(), row.size, self.max_batch)
                .await
                .map_err(coordination_error)?;
            if missed.len() as u64 == row.size - state.size() {
                let entries: Vec<Bytes> = missed.into_iter().map(|(_, entry)| entry).collect();
                let (caught_up, _) = state.apply(&entries);
                if caught_up.root() == expected_root {
                    return Ok(caught_up);
                }
            }
        }
        // Read from the store's tiles at the row's size (the store may be ahead; its tiles below are the same).
        let checkpoint = Checkpoint::new(self.signer.name(), row.size, expected_root);
        TreeState::open_at(&self.storage, &checkpoint).await
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
