//! The writable log: a single sequencer that batches appends (group commit), integrates them into tiles, signs
//! a new checkpoint, and only then acknowledges them.
//!
//! Commit protocol, per batch: write every new tile and entry bundle (none of them is reachable from the
//! published checkpoint yet), wait until all are durable, then replace the checkpoint. The checkpoint is the
//! commit point: a crash before it leaves the old checkpoint and stray unreachable tiles, which the next batch
//! overwrites; a crash after it leaves the new one. Either way the log reopens consistent, and no index is
//! returned before the checkpoint that covers it is durable.

use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use tokio::sync::{mpsc, oneshot, watch};

use crate::LogError;
use crate::checkpoint::{Checkpoint, LogSigner, SignedCheckpoint};
use crate::coordinated::{Coordination, Integrator, Shared};
use crate::storage::{CHECKPOINT, LogStore};
pub use crate::tree_state::SequencerGuard;
use crate::tree_state::{TreeState, collect_superseded_partials};

/// Tuning for the sequencer.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The most entries integrated in one batch.
    pub max_batch: usize,
    /// How many appends may wait for the sequencer before `append` itself waits.
    pub queue_depth: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self { max_batch: 8192, queue_depth: 65536 }
    }
}

struct AppendRequest {
    entry: Bytes,
    reply: oneshot::Sender<Result<u64, Arc<LogError>>>,
}

/// How appends reach the tree.
#[derive(Clone)]
enum Appending {
    /// This process sequences the log alone, in one task ([`Log::open`]).
    Alone(mpsc::Sender<AppendRequest>),
    /// A shared database sequences it for every process appending to it ([`Log::open_coordinated`]). The
    /// integrator stops once every handle, and with them every clone of the sender, is gone.
    Coordinated { shared: Arc<Shared>, _alive: mpsc::Sender<std::convert::Infallible> },
}

/// An append-only custody log. Clones are handles to the same log.
#[derive(Clone)]
pub struct Log {
    storage: LogStore,
    appending: Appending,
    published: watch::Receiver<SignedCheckpoint>,
    /// Set while the latest batch failed and the sequencer has not yet recovered ([`Log::is_appending`]); a
    /// coordinated log keeps its flag in [`Shared`].
    failing: Arc<std::sync::atomic::AtomicBool>,
    /// When this process last published a checkpoint ([`Log::published_at`]).
    published_at: Arc<std::sync::Mutex<std::time::SystemTime>>,
    /// Entries this process appended and had acknowledged ([`Log::appended_here`]), whichever process integrated
    /// them: shared by every clone of this handle, never by another process's handle on the same log.
    appended: Arc<std::sync::atomic::AtomicU64>,
    _guard: Option<SequencerGuard>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("storage", &self.storage).finish_non_exhaustive()
    }
}

impl Log {
    /// Opens the log below `prefix` in `store`, creating it (with a signed checkpoint of size 0) if there is
    /// none. The existing checkpoint must be signed by `signer`, and the stored tiles must reproduce its root.
    ///
    /// Only this process may append to the log; the caller sees to that (for a local directory,
    /// [`Log::open_local`] does). Several processes share a log through [`Log::open_coordinated`].
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        signer: LogSigner,
        options: LogOptions,
    ) -> Result<Self, LogError> {
        Self::open_guarded(store, prefix, signer, options, None).await
    }

    pub(crate) async fn open_guarded(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        signer: LogSigner,
        options: LogOptions,
        guard: Option<SequencerGuard>,
    ) -> Result<Self, LogError> {
        let storage = LogStore::new(store, prefix);
        let (state, published) = TreeState::open(&storage, &signer).await?;
        let (requests, receiver) = mpsc::channel(options.queue_depth.max(1));
        let (publish, published_rx) = watch::channel(published);
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let published_at = Arc::new(std::sync::Mutex::new(std::time::SystemTime::now()));
        let sequencer = Sequencer {
            storage: storage.clone(),
            signer,
            state,
            publish,
            max_batch: options.max_batch.max(1),
            failing: failing.clone(),
            published_at: published_at.clone(),
            _guard: guard.clone(),
        };
        tokio::spawn(sequencer.run(receiver));
        Ok(Self {
            storage,
            appending: Appending::Alone(requests),
            published: published_rx,
            failing,
            published_at,
            appended: Arc::default(),
            _guard: guard,
        })
    }

    /// Opens the log below `prefix` in `store` as one of the processes that append to it through `coordination`
    /// (see [`crate::coordinated`]): sequencing is the database's, and this process integrates in turn with the
    /// others. A log in the store that predates its coordination is adopted; a store behind what the database
    /// says was published is refused. `guard` (a lock, say) is held for as long as the log or its integrator lives.
    pub async fn open_coordinated(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        signer: LogSigner,
        options: LogOptions,
        coordination: Arc<dyn Coordination>,
        guard: Option<SequencerGuard>,
    ) -> Result<Self, LogError> {
        let storage = LogStore::new(store, prefix);
        let empty = signer.sign(&Checkpoint::new(signer.name(), 0, crate::merkle::empty_root()))?;
        let (publish, published_rx) = watch::channel(empty);
        let published_at = Arc::new(std::sync::Mutex::new(std::time::SystemTime::now()));
        let shared = Arc::new(Shared {
            coordination,
            nudge: tokio::sync::Notify::new(),
            failures: watch::channel((0, None)).0,
            failing: std::sync::atomic::AtomicBool::new(false),
            waiting: std::sync::atomic::AtomicU64::new(0),
            pending: std::sync::Mutex::default(),
        });
        let (alive, handles) = mpsc::channel(1);
        let mut integrator = Integrator {
            handles,
            storage: storage.clone(),
            signer,
            state: None,
            max_batch: options.max_batch.max(1),
            shared: shared.clone(),
            published_at: published_at.clone(),
            _guard: guard.clone(),
            publish,
        };
        integrator.open().await?;
        tokio::spawn(integrator.run());
        Ok(Self {
            storage,
            appending: Appending::Coordinated { shared, _alive: alive },
            published: published_rx,
            failing: Arc::default(),
            published_at,
            appended: Arc::default(),
            _guard: guard,
        })
    }

    /// Appends one entry and returns its index once a durable, signed checkpoint covers it.
    pub async fn append(&self, entry: impl Into<Bytes>) -> Result<u64, LogError> {
        let entry = entry.into();
        if entry.len() > usize::from(u16::MAX) {
            return Err(LogError::EntryTooLarge { len: entry.len() });
        }
        let index = match &self.appending {
            Appending::Alone(requests) => {
                let (reply, response) = oneshot::channel();
                requests.send(AppendRequest { entry, reply }).await.map_err(|_| LogError::Closed)?;
                response.await.map_err(|_| LogError::Closed)?.map_err(LogError::Batch)?
            }
            Appending::Coordinated { shared, .. } => {
                let index = shared.coordination.sequence(entry).await.map_err(LogError::Coordination)?;
                self.integrated(index).await?;
                index
            }
        };
        // Counted only once acknowledged: a refused or failed append is not this process's entry in the log (a
        // coordinated one left sequenced by a failed wait is integrated later, but its caller was told it failed).
        self.count_appended_here(1);
        Ok(index)
    }

    /// How many entries this process has appended to the log since it opened it, each acknowledged: those
    /// [`Log::append`] returned, and those its caller sequenced in the log's database itself and counted
    /// ([`Log::count_appended_here`]). Unlike the checkpoint's size, it leaves out what other processes sharing
    /// the log appended. What monitoring calls this process's appends.
    pub fn appended_here(&self) -> u64 {
        self.appended.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts `entries` this process appended to a coordinated log without [`Log::append`]: sequenced by its caller
    /// in the database the log is coordinated through (the gateway's custody records, which the catalog chains to
    /// their artefact's previous record in the transaction that sequences them), durable from then on.
    pub fn count_appended_here(&self, entries: u64) {
        self.appended.fetch_add(entries, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits until a published checkpoint covers entry `index`, which the log's coordination sequenced (for a log
    /// this process appends to alone, [`Log::append`] has already waited). Through failed turns it waits on for up
    /// to [`crate::coordinated::INTEGRATION_PATIENCE`] (another process may integrate the entry meanwhile), then
    /// gives up with [`LogError::NotIntegrated`]: the entry stays sequenced, and is integrated once the store and
    /// the database answer again.
    pub async fn integrated(&self, index: u64) -> Result<SignedCheckpoint, LogError> {
        let Appending::Coordinated { shared, .. } = &self.appending else {
            return self.wait_for_size(index + 1).await;
        };
        let mut failures = shared.failures.subscribe();
        failures.mark_unchanged();
        shared.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(index);
        shared.nudge.notify_one();
        let mut published = self.published.clone();
        let patience = tokio::time::sleep(crate::coordinated::INTEGRATION_PATIENCE);
        let mut patience = std::pin::pin!(patience);
        let mut cause = None;
        loop {
            tokio::select! {
                reached = published.wait_for(|signed| signed.checkpoint.size > index) => {
                    return reached.map(|signed| signed.clone()).map_err(|_| LogError::Closed);
                }
                changed = failures.changed() => {
                    changed.map_err(|_| LogError::Closed)?;
                    cause = failures.borrow_and_update().1.clone();
                }
                () = patience.as_mut() => return Err(LogError::NotIntegrated { index, cause }),
            }
        }
    }

    /// How many entries are sequenced, integrated or not: for a coordinated log, what its database says now (other
    /// processes may have sequenced entries this one has not seen published yet); otherwise the published size.
    pub async fn sequenced(&self) -> Result<u64, LogError> {
        match &self.appending {
            Appending::Alone(_) => Ok(self.checkpoint().checkpoint.size),
            Appending::Coordinated { shared, .. } => {
                Ok(shared.coordination.integrated().await.map_err(LogError::Coordination)?.sequenced)
            }
        }
    }

    /// Whether the log takes appends now: its sequencer (or integrator) runs, and its latest batch did not fail
    /// (or it has recovered since). What a health check asks.
    pub fn is_appending(&self) -> bool {
        let ordering = std::sync::atomic::Ordering::Acquire;
        match &self.appending {
            Appending::Alone(requests) => !requests.is_closed() && !self.failing.load(ordering),
            Appending::Coordinated { shared, .. } => {
                self.published.has_changed().is_ok() && !shared.failing.load(ordering)
            }
        }
    }

    /// Appends waiting for integration: sent to this process's sequencer but not yet in a batch being integrated,
    /// or, for a coordinated log, sequenced by any process but not yet integrated (as last seen). What monitoring
    /// calls the integration lag.
    pub fn appends_waiting(&self) -> usize {
        match &self.appending {
            Appending::Alone(requests) => requests.max_capacity() - requests.capacity(),
            Appending::Coordinated { shared, .. } => {
                shared.waiting.load(std::sync::atomic::Ordering::Relaxed).try_into().unwrap_or(usize::MAX)
            }
        }
    }

    /// When this process last published a checkpoint, or, until it has, when it opened the log.
    pub fn published_at(&self) -> std::time::SystemTime {
        *self.published_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest published checkpoint.
    pub fn checkpoint(&self) -> SignedCheckpoint {
        self.published.borrow().clone()
    }

    /// Waits until a published checkpoint covers at least `size` entries.
    pub async fn wait_for_size(&self, size: u64) -> Result<SignedCheckpoint, LogError> {
        let mut published = self.published.clone();
        let reached =
            published.wait_for(|signed| signed.checkpoint.size >= size).await.map_err(|_| LogError::Closed)?;
        Ok(reached.clone())
    }

    /// Drops this handle and waits until the sequencer has stopped and released the log (its directory lock,
    /// say), so that another process may open it. The sequencer stops once the last handle is gone, so this
    /// waits for every other clone to be dropped too.
    pub async fn close(self) {
        let mut published = self.published.clone();
        drop(self);
        // The sequencer's publisher is dropped, after its guard, when it stops.
        let _ = published.wait_for(|_| false).await;
    }

    /// Read access to the stored tiles, for proofs and entries.
    pub fn storage(&self) -> &LogStore {
        &self.storage
    }

    /// An offline proof (c2sp.org/tlog-proof@v1) of entry `index` under the latest checkpoint.
    pub async fn tlog_proof(&self, index: u64) -> Result<crate::TlogProof, LogError> {
        let signed = self.checkpoint();
        let path = self.storage.inclusion_proof(index, signed.checkpoint.size).await?;
        Ok(crate::TlogProof { extra: None, index, path, checkpoint_note: signed.note().to_vec() })
    }
}

struct Sequencer {
    storage: LogStore,
    signer: LogSigner,
    state: TreeState,
    max_batch: usize,
    failing: Arc<std::sync::atomic::AtomicBool>,
    published_at: Arc<std::sync::Mutex<std::time::SystemTime>>,
    // Declared before `publish` so that it is released first: `Log::close` waits for `publish` to go.
    _guard: Option<SequencerGuard>,
    publish: watch::Sender<SignedCheckpoint>,
}

/// The first wait before the sequencer reloads again after a failed reload ([`Sequencer::recover`]).
const RECOVERY_WAIT_MIN: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest wait between two reloads.
const RECOVERY_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

impl Sequencer {
    async fn run(mut self, mut requests: mpsc::Receiver<AppendRequest>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while requests.recv_many(&mut batch, self.max_batch).await > 0 {
            let entries: Vec<Bytes> = batch.iter().map(|request| request.entry.clone()).collect();
            let first_index = self.state.size();
            match self.integrate(&entries).await {
                Ok(full_tiles) => {
                    self.failing.store(false, std::sync::atomic::Ordering::Release);
                    for (offset, request) in batch.drain(..).enumerate() {
                        let _ = request.reply.send(Ok(first_index + offset as u64));
                    }
                    collect_superseded_partials(&self.storage, full_tiles);
                }
                Err(err) => {
                    self.failing.store(true, std::sync::atomic::Ordering::Release);
                    tracing::error!(error = %err, entries = entries.len(), "custody log batch failed");
                    let err = Arc::new(err);
                    for request in batch.drain(..) {
                        let _ = request.reply.send(Err(err.clone()));
                    }
                    // The checkpoint write may have landed even though the store reported an error, so the
                    // truth is whatever the store now holds; never reuse indices it may have published.
                    if !self.recover(&mut requests).await {
                        return;
                    }
                }
            }
        }
    }

    /// Writes a batch and publishes its checkpoint. Returns the full tiles it completed.
    async fn integrate(&mut self, entries: &[Bytes]) -> Result<Vec<String>, LogError> {
        let (next, writes) = self.state.apply(entries);
        let full_tiles: Vec<String> =
            writes.iter().filter(|(path, _)| !path.contains(".p/")).map(|(path, _)| path.clone()).collect();
        self.storage.put_all(writes).await?;
        let checkpoint = Checkpoint::new(self.signer.name(), next.size(), next.root());
        let signed = self.signer.sign(&checkpoint)?;
        self.storage.put(CHECKPOINT, Bytes::copy_from_slice(signed.note())).await?;
        self.state = next;
        self.publish.send_replace(signed);
        *self.published_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::SystemTime::now();
        Ok(full_tiles)
    }

    /// Reloads the state from the store after a failed batch, again and again until the store answers, waiting
    /// longer each time (up to [`RECOVERY_WAIT_MAX`]): a store that fails for a while (a full descriptor table, a
    /// lost network) must not stop the log for good. Appends that arrive meanwhile are refused with the reason,
    /// not left waiting. `false` once every appender has gone.
    async fn recover(&mut self, requests: &mut mpsc::Receiver<AppendRequest>) -> bool {
        let mut wait = RECOVERY_WAIT_MIN;
        loop {
            let err = match self.reload().await {
                Ok(()) => return true,
                Err(err) => Arc::new(err),
            };
            tracing::error!(error = %err, retry_in_ms = wait.as_millis() as u64, "custody log cannot reload after a failed batch");
            let retry = tokio::time::sleep(wait);
            let mut retry = std::pin::pin!(retry);
            loop {
                tokio::select! {
                    () = retry.as_mut() => break,
                    request = requests.recv() => match request {
                        Some(request) => {
                            let _ = request.reply.send(Err(err.clone()));
                        }
                        None => return false,
                    },
                }
            }
            wait = (wait * 2).min(RECOVERY_WAIT_MAX);
        }
    }

    async fn reload(&mut self) -> Result<(), LogError> {
        let (state, signed) = TreeState::open(&self.storage, &self.signer).await?;
        self.state = state;
        self.publish.send_replace(signed);
        Ok(())
    }
}
