//! Artefact storage: evidence bytes in an `object_store`, content-addressed and write-once.
//!
//! An upload streams into a staging object while it is hashed, in one pass, with memory bounded by the part
//! size. Only a complete upload whose digest matches what the client stated is copied, with a create-only
//! copy, to `objects/sha256/<hex>`; anything else is discarded. So nothing half-written can ever sit where
//! evidence lives, and the same bytes uploaded twice are one object.
//!
//! On a local disk the staging file is written directly, with an `fdatasync` started every 32 MiB beside the
//! writing, so that the fsync before publishing waits for the last few megabytes rather than for the whole upload,
//! which would otherwise sit in the page cache until then.
//!
//! Write-once does not rest on the backend alone. A local directory refuses to create a file that exists; many S3
//! servers do not: garage 2.x ignores `If-None-Match` on PutObject and has no conditional copy, so a create-only
//! write there silently replaces what was stored. [`probe_create_only`] finds out at start-up which kind a store is,
//! by trying; a store that overwrote is never trusted as write-once ([`CreateOnly::Ignored`]). Evidence stays
//! write-once there all the same, by content addressing: an object's name is the SHA-256 of the bytes this very
//! pass verified, so a publication checks that the name is free and otherwise stores nothing, and a race between
//! two publications of one name can only write the same bytes twice. Objects with a fresh random name (manifests,
//! policies) are written once with [`put_once`], which on such a store checks the name is free first.
//!
//! A resumable upload's bytes wait below `staging/tus/` as chunk objects ([`ArtefactStore::write_chunk`]), one a
//! request, until the upload is complete and its chunks are read back in order into [`ArtefactStore::ingest`].
//! Which chunks belong to an upload is recorded elsewhere (the catalog), by their owner, who also removes those that
//! belong to none ([`ArtefactStore::staged_chunks`]): [`ArtefactStore::sweep_staging`] leaves them alone. Both
//! sweeps remove only objects older than a bound their caller gives, since a store shared by several gateways holds
//! what the others are writing now.
//!
//! In an S3 bucket with Object Lock, each evidence object is given retention once written ([`object_lock`]): an
//! artefact at its content address by [`ArtefactStore::with_retention`], whether its bytes were written now or
//! before, and manifests and policies by the [`object_lock::RetainingStore`] they are written through. Staging
//! objects and chunks never are: they are deleted once used.
//!
//! This crate knows nothing of cases, people or the ledger.

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use custodia_core::{ErrorChain, Sha256, Sha256Hasher};
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt as _};

pub mod object_lock;

use object_lock::EvidenceRetention;

/// Where complete, verified artefacts live.
const OBJECTS: &str = "objects/sha256";
/// Where uploads in progress live until they are verified.
const STAGING: &str = "staging";
/// Where the chunks of resumable uploads live, within staging: their owner keeps track of them, not
/// [`ArtefactStore::sweep_staging`].
const CHUNKS: &str = "staging/tus";

/// How big each multipart part is, and how many may be in flight: this bounds an upload's memory.
const PART_SIZE: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;

/// On a local disk parts need not meet S3's 5 MiB minimum: smaller ones bound an upload's memory more tightly.
const LOCAL_PART_SIZE: usize = 1024 * 1024;
const LOCAL_PARTS_IN_FLIGHT: usize = 4;
/// How much is written to a local staging file between two `fdatasync`s that run beside the writing.
const LOCAL_SYNC_EVERY: u64 = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The body ended in an error (its connection reset, say) after `received` bytes: `source`, as the body's
    /// stream gave it.
    #[error("the upload was cut off after {received} bytes: {source}")]
    Interrupted { received: u64, source: BodyError },
    #[error("the upload's SHA-256 is {actual}, not the {expected} the client stated; nothing was kept")]
    DigestMismatch { expected: Sha256, actual: Sha256 },
    #[error("the upload exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("no artefact with SHA-256 {0}")]
    NotFound(Sha256),
    #[error("range {start}..{end} is outside an artefact of {size} bytes")]
    BadRange { start: u64, end: u64, size: u64 },
    /// A resumable upload's chunk is not in the store any more, or not the size it was written.
    #[error("chunk {0} of a resumable upload is missing or not as it was written")]
    ChunkLost(String),
    #[error("object storage failed: {0}")]
    Backend(#[from] object_store::Error),
}

impl StoreError {
    /// Whether trying again later may succeed: the store was unreachable or failing ([`is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Backend(err) if is_transient(err))
    }
}

/// Why a body ended before its end, as its stream said (the connection reset or stalled, the sender's quota
/// passed): kept whole as the source of [`StoreError::Interrupted`]. Any error converts into it, and so do a
/// `String` and a `&str`.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A chunk of a resumable upload, as the store lists it ([`ArtefactStore::staged_chunks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedChunk {
    /// The name it was written under ([`ArtefactStore::write_chunk`]).
    pub name: String,
    /// When the store last wrote it.
    pub written: SystemTime,
}

/// A verified artefact in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredArtefact {
    pub sha256: Sha256,
    pub size: u64,
    /// False when identical bytes were already stored: one object, now with one more custody record.
    pub newly_stored: bool,
}

/// Limits on one upload.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestOptions {
    /// The SHA-256 the client says it is sending. A mismatch keeps nothing.
    pub expected_sha256: Option<Sha256>,
    /// The most bytes accepted.
    pub max_size: Option<u64>,
}

/// Whether an object store's error may pass if the request is tried again later: the store could not be reached,
/// timed out or failed on its side (object_store's `Generic` errors, after its own retries), as opposed to an
/// answer about the object (not found, exists, precondition) or a request it does not support.
pub fn is_transient(err: &object_store::Error) -> bool {
    matches!(err, object_store::Error::Generic { .. } | object_store::Error::JoinError { .. })
}

/// Whether an object store refuses a create-only write to a name that exists ([`probe_create_only`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOnly {
    /// It refuses: create-only writes and copies are enforced by the store.
    Enforced,
    /// It accepted a create-only write over an existing object, or has no create-only write at all: it cannot be
    /// trusted as write-once, and names are checked before each write instead.
    Ignored,
}

/// Finds out whether `store` enforces create-only writes, by trying, below `at` (a name no one else uses): a
/// create-only put of a fresh name, then a second create-only put of the same name, which an enforcing store
/// refuses; and a create-only copy onto it likewise. The probe objects are removed.
pub async fn probe_create_only(store: &dyn ObjectStore, at: &Path) -> Result<CreateOnly, StoreError> {
    let target = at.clone().join(random_name());
    let source = at.clone().join(random_name());
    let create = || object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
    let first = store.put_opts(&target, Bytes::from_static(b"first").into(), create()).await;
    let verdict = match first {
        Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
            Ok(CreateOnly::Ignored)
        }
        Err(err) => Err(StoreError::from(err)),
        Ok(_) => {
            let second = store.put_opts(&target, Bytes::from_static(b"second").into(), create()).await;
            match second {
                Ok(_) => Ok(CreateOnly::Ignored),
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                    store.put(&source, Bytes::from_static(b"source").into()).await?;
                    match store.copy_if_not_exists(&source, &target).await {
                        Err(object_store::Error::AlreadyExists { .. }) => Ok(CreateOnly::Enforced),
                        Ok(())
                        | Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                            Ok(CreateOnly::Ignored)
                        }
                        Err(err) => Err(StoreError::from(err)),
                    }
                }
                Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                    Ok(CreateOnly::Ignored)
                }
                Err(err) => Err(StoreError::from(err)),
            }
        }
    };
    for probe in [&target, &source] {
        match store.delete(probe).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(err) => tracing::warn!(error = %ErrorChain(&err), "could not remove a create-only probe object"),
        }
    }
    verdict
}

/// Writes `bytes` at `path`, once: fails with [`object_store::Error::AlreadyExists`] if something is there. On a
/// store that ignores create-only writes, the name is checked first; this is for names no other writer can choose
/// (a fresh random identifier), where a check and a write cannot race.
pub async fn put_once(
    store: &dyn ObjectStore,
    create_only: CreateOnly,
    path: &Path,
    bytes: Bytes,
) -> Result<(), object_store::Error> {
    let mode = match create_only {
        CreateOnly::Enforced => object_store::PutMode::Create,
        CreateOnly::Ignored => {
            match store.head(path).await {
                Ok(_) => {
                    let source = format!("{path} exists and is never replaced").into();
                    return Err(object_store::Error::AlreadyExists { path: path.to_string(), source });
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
            object_store::PutMode::Overwrite
        }
    };
    store.put_opts(path, bytes.into(), object_store::PutOptions { mode, ..Default::default() }).await.map(drop)
}

/// Artefact bytes below `prefix` in an object store.
#[derive(Clone)]
pub struct ArtefactStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// Whether the store refuses to replace an object; if not, publication checks the name first.
    create_only: CreateOnly,
    /// The directory behind `store`, when it is a local one, so that FFmpeg can read objects in place.
    local_root: Option<PathBuf>,
    /// The retention each artefact at its content address is given, in a bucket with Object Lock.
    retention: Option<EvidenceRetention>,
}

impl fmt::Debug for ArtefactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtefactStore")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .field("create_only", &self.create_only)
            .field("retention", &self.retention.as_ref().map(EvidenceRetention::rule))
            .finish()
    }
}

impl ArtefactStore {
    /// Artefacts in `store` below `prefix`; `create_only` is what [`probe_create_only`] found of it.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, create_only: CreateOnly) -> Self {
        Self { store, prefix, create_only, local_root: None, retention: None }
    }

    /// Gives each artefact published at its content address `retention` (in the store's bucket, which has Object
    /// Lock): once written, or, for bytes already stored, extended to what `retention` asks now if it is less. The
    /// ingest fails (transiently, [`StoreError::is_transient`]) if the retention cannot be set; the object then
    /// stays at its address, unlocked and registered by no one, until a retry of the same bytes locks it.
    pub fn with_retention(mut self, retention: EvidenceRetention) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Whether the store enforces create-only writes.
    pub fn create_only(&self) -> CreateOnly {
        self.create_only
    }

    /// A store in a local directory: fsync'd writes, and objects readable in place through [`Self::local_path`].
    pub fn local(dir: &std::path::Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(local_error)?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_fsync(true);
        // A local directory creates a file only if it does not exist (a hard link, or `O_EXCL`).
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::default(),
            create_only: CreateOnly::Enforced,
            local_root: Some(dir.to_path_buf()),
            retention: None,
        })
    }

    /// Whether the store is a local directory (whose objects are files, read in place).
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// Where a stored artefact's bytes lie on the local disk, for a local store.
    pub fn local_path(&self, sha256: &Sha256) -> Option<PathBuf> {
        self.local_file(&self.object_path(sha256))
    }

    /// Where `path` lies on the local disk, for a local store.
    fn local_file(&self, path: &Path) -> Option<PathBuf> {
        let root = self.local_root.as_ref()?;
        Some(path.parts().fold(root.clone(), |file, part| file.join(part.as_ref())))
    }

    fn path(&self, parts: &[&str]) -> Path {
        parts.iter().flat_map(|part| part.split('/')).fold(self.prefix.clone(), |path, part| path.join(part))
    }

    fn object_path(&self, sha256: &Sha256) -> Path {
        let hex = sha256.to_hex();
        // Two levels of fan-out keep directories small on a local disk.
        self.path(&[OBJECTS, &hex[..2], &hex])
    }

    /// Streams `body` into the store, hashing it in the same pass. Returns only once the artefact is durable at
    /// its content address; on any error nothing is left where evidence lives.
    ///
    /// Into a remote store, an upload whose SHA-256 the client states goes straight to its content address as a
    /// multipart upload, completed only once the bytes hash to it (aborted otherwise: a multipart upload is no
    /// object until completed), so that nothing is written twice; bytes already stored are hashed and not written
    /// again. One without goes through a staging object and a copy.
    pub async fn ingest<S, E>(&self, body: S, options: IngestOptions) -> Result<StoredArtefact, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BodyError>,
    {
        let body = regrouped(body);
        if self.local_root.is_none()
            && let Some(expected) = options.expected_sha256
        {
            return self.ingest_at_address(body, expected, options.max_size).await;
        }
        let staging = self.path(&[STAGING, &random_name()]);
        let streamed = match self.local_file(&staging) {
            Some(file) => stream_into_file(file, body, Intake::new(options.max_size)).await.map(Intake::finish),
            None => self.write_object(&staging, body, Intake::new(options.max_size), None).await,
        };
        let result = match streamed {
            Ok((sha256, size)) => self.publish(&staging, sha256, size, options.expected_sha256).await,
            Err(err) => Err(err),
        };
        match self.store.delete(&staging).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(err) => tracing::warn!(error = %ErrorChain(&err), "could not remove a staging object"),
        }
        result
    }

    /// Takes the file at `file` into the store as the artefact of SHA-256 `sha256` and `size` bytes, which the
    /// caller computed over these very bytes (a verified transfer's payload, staged on this machine and never
    /// changed since). A local store on the same filesystem links the file into place, create-only, without
    /// copying or hashing it again, and syncs the directory; any other store has it streamed in and hashed on the
    /// way, and refuses a digest that differs. The file stays where it is, for the caller to remove.
    pub async fn ingest_file(
        &self,
        file: &std::path::Path,
        sha256: Sha256,
        size: u64,
    ) -> Result<StoredArtefact, StoreError> {
        if let Some(target) = self.local_path(&sha256) {
            let source = file.to_path_buf();
            let linked = blocking(move || {
                if std::fs::metadata(&source)?.len() != size {
                    return Err(io::Error::other("the staged file is not the size its digest was computed over"));
                }
                let dir = target.parent().ok_or_else(|| io::Error::other("an object path without a directory"))?;
                std::fs::create_dir_all(dir)?;
                let newly_stored = match std::fs::hard_link(&source, &target) {
                    Ok(()) => true,
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(err) if err.kind() == io::ErrorKind::CrossesDevices => return Ok(None),
                    Err(err) => return Err(err),
                };
                File::open(dir)?.sync_all()?;
                Ok(Some(newly_stored))
            })
            .await
            .map_err(local_error)?;
            if let Some(newly_stored) = linked {
                return Ok(StoredArtefact { sha256, size, newly_stored });
            }
        }
        let body = read_local(file.to_path_buf(), None, || StoreError::NotFound(sha256)).await?;
        self.ingest(body, IngestOptions { expected_sha256: Some(sha256), max_size: Some(size) }).await
    }

    /// An upload whose SHA-256 the client stated, into a remote store: see [`Self::ingest`].
    async fn ingest_at_address<S>(
        &self,
        body: S,
        expected: Sha256,
        max_size: Option<u64>,
    ) -> Result<StoredArtefact, StoreError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Send,
    {
        let target = self.object_path(&expected);
        let stored = match self.store.head(&target).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(err) => return Err(err.into()),
        };
        let (sha256, size) = if stored {
            // The bytes are there if they are what the client says: hashed, and not written again.
            let mut intake = Intake::new(max_size);
            let mut body = std::pin::pin!(body);
            while let Some(chunk) = body.next().await {
                intake.take(chunk)?;
            }
            intake.finish()
        } else {
            // Completed only if the bytes are what the client stated.
            self.write_object(&target, body, Intake::new(max_size), Some(expected)).await?
        };
        if sha256 != expected {
            return Err(StoreError::DigestMismatch { expected, actual: sha256 });
        }
        self.retain(&target).await?;
        Ok(StoredArtefact { sha256, size, newly_stored: !stored })
    }

    /// Streams `body` through `intake` into a new object at `path`, whole or not at all, with object_store's
    /// `BufWriter`: one PUT for what fits in one part, a multipart upload of [`PART_SIZE`] parts ([`PARTS_IN_FLIGHT`]
    /// at a time) for more. The object is completed only if the body ended well and, with `expected`, hashed to it;
    /// otherwise nothing was put, or the multipart upload is aborted (it is no object until completed). Returns the
    /// digest (of a counting intake, the default) and size of what was taken, kept or not.
    async fn write_object<S>(
        &self,
        path: &Path,
        body: S,
        mut intake: Intake,
        expected: Option<Sha256>,
    ) -> Result<(Sha256, u64), StoreError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Send,
    {
        let mut writer =
            BufWriter::with_capacity(self.store.clone(), path.clone(), PART_SIZE).with_max_concurrency(PARTS_IN_FLIGHT);
        let mut body = std::pin::pin!(body);
        let streamed = async {
            while let Some(chunk) = body.next().await {
                writer.put(intake.take(chunk)?).await?;
            }
            Ok::<_, StoreError>(())
        }
        .await
        .map(|()| intake.finish());
        match streamed {
            Ok((sha256, size)) if expected.is_none_or(|expected| expected == sha256) => {
                tokio::io::AsyncWriteExt::shutdown(&mut writer).await.map_err(finishing_error)?;
                Ok((sha256, size))
            }
            streamed => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %ErrorChain(&abort), "could not abort a refused or failed multipart upload");
                }
                streamed
            }
        }
    }

    async fn publish(
        &self,
        staging: &Path,
        sha256: Sha256,
        size: u64,
        expected: Option<Sha256>,
    ) -> Result<StoredArtefact, StoreError> {
        if let Some(expected) = expected.filter(|expected| *expected != sha256) {
            return Err(StoreError::DigestMismatch { expected, actual: sha256 });
        }
        // Create-only: evidence objects are never overwritten, even with the same bytes. A store that does not
        // enforce it has the name checked first: the name is the digest of the bytes just verified, so two
        // publications racing past the check write the same bytes.
        let target = self.object_path(&sha256);
        let newly_stored = match self.create_only {
            CreateOnly::Enforced => match self.store.copy_if_not_exists(staging, &target).await {
                Ok(()) => true,
                Err(object_store::Error::AlreadyExists { .. }) => false,
                Err(err) => return Err(err.into()),
            },
            CreateOnly::Ignored => match self.store.head(&target).await {
                Ok(_) => false,
                Err(object_store::Error::NotFound { .. }) => {
                    self.store.copy(staging, &target).await?;
                    true
                }
                Err(err) => return Err(err.into()),
            },
        };
        self.retain(&target).await?;
        Ok(StoredArtefact { sha256, size, newly_stored })
    }

    /// Gives the artefact at `target` its retention, where the store has one to give.
    async fn retain(&self, target: &Path) -> Result<(), StoreError> {
        match &self.retention {
            Some(retention) => Ok(retention.retain(target).await?),
            None => Ok(()),
        }
    }

    /// Whether the object store answers now (a readiness check): one listing of the top of this store's prefix,
    /// which holds a few folders (objects, staging), never the objects themselves. A local store's directory is
    /// opened itself first, since object_store lists a directory that is gone, or is a file now, as empty.
    pub async fn answers(&self) -> Result<(), StoreError> {
        if let Some(root) = &self.local_root {
            tokio::fs::read_dir(root).await.map_err(local_error)?.next_entry().await.map_err(local_error)?;
        }
        self.store.list_with_delimiter(Some(&self.prefix)).await?;
        Ok(())
    }

    /// The size of a stored artefact.
    pub async fn size(&self, sha256: &Sha256) -> Result<u64, StoreError> {
        match self.store.head(&self.object_path(sha256)).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound(*sha256)),
            Err(err) => Err(err.into()),
        }
    }

    /// Streams a stored artefact, or a byte range of it. From a local store, in [`LOCAL_READ_CHUNK`]s read in
    /// place (`object_store` reads a local file 8 KiB at a time, each read a task of its own: a third of the
    /// speed a download could go).
    pub async fn read(
        &self,
        sha256: &Sha256,
        range: Option<Range<u64>>,
    ) -> Result<impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static, StoreError> {
        if let Some(file) = self.local_path(sha256) {
            let sha256 = *sha256;
            return Ok(futures::future::Either::Left(
                read_local(file, range, move || StoreError::NotFound(sha256)).await?,
            ));
        }
        let options = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        match self.store.get_opts(&self.object_path(sha256), options).await {
            Ok(result) => Ok(futures::future::Either::Right(result.into_stream().map_err(StoreError::from))),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound(*sha256)),
            Err(err) => Err(err.into()),
        }
    }

    /// Copies a stored artefact into the file at `path` (made if it does not exist, overwritten if it does), for
    /// a program that reads files (a masking child) when the store is remote. Returns the bytes
    /// copied.
    pub async fn copy_to_file(&self, sha256: &Sha256, path: &std::path::Path) -> Result<u64, StoreError> {
        use tokio::io::AsyncWriteExt as _;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
            .map_err(local_error)?;
        let mut body = std::pin::pin!(self.read(sha256, None).await?);
        let mut copied = 0;
        while let Some(chunk) = body.try_next().await? {
            file.write_all(&chunk).await.map_err(local_error)?;
            copied += chunk.len() as u64;
        }
        file.flush().await.map_err(local_error)?;
        Ok(copied)
    }

    /// Removes staging objects left by uploads that a crash interrupted: those last written before
    /// `written_before`, a bound the caller chooses well past the time an upload's staging object lives (in a
    /// remote store, from the upload's last byte until its copy to its address), since in a store that several
    /// gateways share, a younger one may be another gateway's upload under way. Resumable uploads' chunks are
    /// left to their owner ([`Self::staged_chunks`]). Returns how many were removed.
    pub async fn sweep_staging(&self, written_before: SystemTime) -> Result<usize, StoreError> {
        let staging = self.path(&[STAGING]);
        let chunks = self.path(&[CHUNKS]);
        let leftovers: Vec<Path> = self
            .store
            .list(Some(&staging))
            .try_filter(|meta| {
                let stale = SystemTime::from(meta.last_modified) < written_before;
                futures::future::ready(stale && !meta.location.prefix_matches(&chunks))
            })
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for path in &leftovers {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(leftovers.len())
    }

    // The chunks of resumable uploads.

    fn chunk_path(&self, name: &str) -> Path {
        self.path(&[CHUNKS]).join(name)
    }

    /// Writes `body` as the chunk `name` of a resumable upload (a name no other writer chooses), below
    /// `staging/tus/`, and returns its size once it is durable. It is an object only once every byte is in: a body
    /// that ends in an error leaves nothing (a multipart upload aborted, a local file removed) and fails with
    /// [`StoreError::Interrupted`]. A chunk is never evidence: its bytes become an artefact only through
    /// [`Self::ingest`], hashed there as any upload's.
    pub async fn write_chunk<S, E>(&self, name: &str, body: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BodyError>,
    {
        let body = regrouped(body);
        let path = self.chunk_path(name);
        let Some(file) = self.local_file(&path) else {
            return Ok(self.write_object(&path, body, Intake::counting(), None).await?.1);
        };
        let intake = match stream_into_file(file.clone(), body, Intake::counting()).await {
            Ok(intake) => intake,
            Err(err) => {
                // Removed before the answer, not only soon after it: a failed chunk leaves nothing once this returns.
                let gone = file.clone();
                let removed = blocking(move || match std::fs::remove_file(&gone) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
                    _ => Ok(()),
                });
                if let Err(remove) = removed.await {
                    tracing::warn!(error = %ErrorChain(&remove), path = %file.display(), "could not remove a failed chunk's file");
                }
                return Err(err);
            }
        };
        // The file is durable; its name must be too, and its directory's (made by the first chunk).
        blocking(move || {
            let dir = file.parent().ok_or_else(|| io::Error::other("a chunk path without a directory"))?;
            File::open(dir)?.sync_all()?;
            match dir.parent() {
                Some(parent) => File::open(parent)?.sync_all(),
                None => Ok(()),
            }
        })
        .await
        .map_err(local_error)?;
        Ok(intake.size)
    }

    /// Streams the chunk `name` of a resumable upload; [`StoreError::ChunkLost`] if it is not there.
    pub async fn read_chunk(
        &self,
        name: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let path = self.chunk_path(name);
        if let Some(file) = self.local_file(&path) {
            let name = name.to_owned();
            return Ok(read_local(file, None, move || StoreError::ChunkLost(name)).await?.boxed());
        }
        match self.store.get(&path).await {
            Ok(result) => Ok(result.into_stream().map_err(StoreError::from).boxed()),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::ChunkLost(name.to_owned())),
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes the chunk `name` of a resumable upload; one already gone is no error.
    pub async fn delete_chunk(&self, name: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.chunk_path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Every chunk of resumable uploads in the store, with when each was written: for their owner to find those
    /// that belong to no upload. A chunk being written is listed only once complete (a multipart upload is no
    /// object until then), or, in a local directory, as the file being written, written last as its last bytes.
    pub fn staged_chunks(&self) -> impl Stream<Item = Result<StagedChunk, StoreError>> + Send + '_ {
        self.store.list(Some(&self.path(&[CHUNKS]))).map(|meta| {
            let meta = meta?;
            let name = meta.location.filename().unwrap_or_default().to_owned();
            Ok(StagedChunk { name, written: SystemTime::from(meta.last_modified) })
        })
    }
}

/// The smallest chunk [`regrouped`] passes on (but the last).
pub const MIN_CHUNK: usize = 64 * 1024;

/// `body` with its chunks gathered so that each but the last holds at least [`MIN_CHUNK`] bytes: smaller ones are
/// copied together (empty ones vanish), larger ones pass as they are. A client decides how its body is split (an
/// HTTP/1.1 chunked body can come a byte a chunk), and whatever keeps chunks (a multipart part being filled, what a
/// probe reads from memory) then keeps a few dozen per megabyte rather than a million, and no more of the buffers
/// they are cut from. An error (kept whole, a [`BodyError`]) comes after the bytes that came before it.
pub fn regrouped<S, E>(body: S) -> impl Stream<Item = Result<Bytes, BodyError>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<BodyError>,
{
    struct Regrouping<S> {
        body: std::pin::Pin<Box<S>>,
        pending: bytes::BytesMut,
        /// An error (or the end, `Some(None)`) that came while bytes were pending: it follows them.
        ended: Option<Option<BodyError>>,
    }
    let state = Regrouping { body: Box::pin(body), pending: bytes::BytesMut::new(), ended: None };
    futures::stream::unfold(state, |mut state| async move {
        if let Some(ended) = state.ended.take() {
            return ended.map(|err| (Err(err), Regrouping { ended: Some(None), ..state }));
        }
        loop {
            match state.body.next().await {
                Some(Ok(chunk)) if state.pending.is_empty() && chunk.len() >= MIN_CHUNK => {
                    return Some((Ok(chunk), state));
                }
                Some(Ok(chunk)) => {
                    state.pending.extend_from_slice(&chunk);
                    if state.pending.len() >= MIN_CHUNK {
                        let gathered = state.pending.split().freeze();
                        return Some((Ok(gathered), state));
                    }
                }
                end => {
                    let error = match end {
                        Some(Err(err)) => Some(err.into()),
                        _ => None,
                    };
                    if state.pending.is_empty() {
                        return error.map(|err| (Err(err), Regrouping { ended: Some(None), ..state }));
                    }
                    let gathered = state.pending.split().freeze();
                    return Some((Ok(gathered), Regrouping { ended: Some(error), ..state }));
                }
            }
        }
    })
}

/// The one pass over an upload's bytes: counts them against the limit and hashes them, in order, as they
/// arrive, whichever way they are then written.
struct Intake {
    /// None when the bytes are only counted: a resumable upload's chunk, hashed whole once the upload completes.
    hasher: Option<Sha256Hasher>,
    size: u64,
    max_size: Option<u64>,
}

impl Intake {
    fn new(max_size: Option<u64>) -> Self {
        Self { hasher: Some(Sha256Hasher::default()), size: 0, max_size }
    }

    fn counting() -> Self {
        Self { hasher: None, size: 0, max_size: None }
    }

    fn take(&mut self, chunk: Result<Bytes, BodyError>) -> Result<Bytes, StoreError> {
        let chunk = chunk.map_err(|source| StoreError::Interrupted { received: self.size, source })?;
        self.size += chunk.len() as u64;
        if let Some(limit) = self.max_size.filter(|limit| self.size > *limit) {
            return Err(StoreError::TooLarge { limit });
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&chunk);
        }
        Ok(chunk)
    }

    /// The digest and size of what was taken (of a counting intake, only the size means anything).
    fn finish(self) -> (Sha256, u64) {
        (self.hasher.unwrap_or_default().finish(), self.size)
    }
}

/// The store's error inside the `io::Error` object_store's `BufWriter` finishes with.
fn finishing_error(err: std::io::Error) -> StoreError {
    match err.downcast::<object_store::Error>() {
        Ok(err) => StoreError::Backend(err),
        Err(err) => StoreError::Backend(object_store::Error::Generic { store: "object store", source: Box::new(err) }),
    }
}

/// Streams `body` into a new local file at `path`, through `intake` (which counts and may hash it) in the same
/// pass; returns the intake once the file is durable. On any failure, or if this future is dropped, the file is
/// removed.
async fn stream_into_file<S>(path: PathBuf, body: S, mut intake: Intake) -> Result<Intake, StoreError>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Send,
{
    let mut staging = LocalStaging::create(path).await.map_err(local_error)?;
    let mut part = Vec::new();
    let mut part_size = 0;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = intake.take(chunk)?;
        part_size += chunk.len();
        part.push(chunk);
        if part_size >= LOCAL_PART_SIZE {
            staging.write(std::mem::take(&mut part), part_size as u64).await.map_err(local_error)?;
            part_size = 0;
        }
    }
    if !part.is_empty() {
        staging.write(part, part_size as u64).await.map_err(local_error)?;
    }
    staging.finish().await.map_err(local_error)?;
    Ok(intake)
}

fn local_error(err: io::Error) -> StoreError {
    StoreError::Backend(object_store::Error::Generic { store: "local", source: err.into() })
}

/// A staging file being written on a local disk. Parts are written on the blocking pool, each at its own offset,
/// at most `LOCAL_PARTS_IN_FLIGHT` at a time, while hashing goes on; every `LOCAL_SYNC_EVERY` bytes an `fdatasync`
/// is started beside them, so that the disk works while the upload goes on and the final `fsync` has little left
/// to do. No thread waits on the client. Unless [`Self::finish`] succeeds, dropping it removes the file.
struct LocalStaging {
    path: PathBuf,
    file: Arc<File>,
    writes: tokio::task::JoinSet<io::Result<()>>,
    sync: Option<tokio::task::JoinHandle<io::Result<()>>>,
    offset: u64,
    unsynced: u64,
    finished: bool,
}

impl LocalStaging {
    async fn create(path: PathBuf) -> io::Result<Self> {
        let at = path.clone();
        let file = blocking(move || {
            if let Some(dir) = at.parent() {
                std::fs::create_dir_all(dir)?;
            }
            File::create_new(&at)
        })
        .await?;
        let writes = tokio::task::JoinSet::new();
        Ok(Self { path, file: Arc::new(file), writes, sync: None, offset: 0, unsynced: 0, finished: false })
    }

    async fn write(&mut self, part: Vec<Bytes>, size: u64) -> io::Result<()> {
        while self.writes.len() >= LOCAL_PARTS_IN_FLIGHT {
            if let Some(written) = self.writes.join_next().await {
                written.map_err(io::Error::other)??;
            }
        }
        let file = Arc::clone(&self.file);
        let mut offset = self.offset;
        self.writes.spawn_blocking(move || {
            for chunk in part {
                file.write_all_at(&chunk, offset)?;
                offset += chunk.len() as u64;
            }
            Ok(())
        });
        self.offset += size;
        self.unsynced += size;
        // A sync still running is left alone: the next one, or the final fsync, covers what it does not.
        if self.unsynced >= LOCAL_SYNC_EVERY && self.sync.as_ref().is_none_or(|sync| sync.is_finished()) {
            if let Some(synced) = self.sync.take() {
                synced.await.map_err(io::Error::other)??;
            }
            let file = Arc::clone(&self.file);
            self.sync = Some(tokio::task::spawn_blocking(move || file.sync_data()));
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Waits for every write, then makes the file durable.
    async fn finish(&mut self) -> io::Result<()> {
        while let Some(written) = self.writes.join_next().await {
            written.map_err(io::Error::other)??;
        }
        if let Some(synced) = self.sync.take() {
            synced.await.map_err(io::Error::other)??;
        }
        let file = Arc::clone(&self.file);
        blocking(move || file.sync_all()).await?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for LocalStaging {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Writes still running hold the file open; removing its name is enough.
        let path = std::mem::take(&mut self.path);
        let remove = move || {
            // The caller may have removed it already.
            if let Err(err) = std::fs::remove_file(&path).or_else(|err| match err.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(err),
            }) {
                tracing::warn!(error = %ErrorChain(&err), path = %path.display(), "could not remove a failed upload's staging file");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// How much one read of a local object takes: large enough that a download is not paced by the reads (each a
/// task on the blocking pool), small enough that twenty downloads at once hold a few MiB between them.
pub const LOCAL_READ_CHUNK: usize = 256 * 1024;
/// Reads of a local object in flight at once: one chunk read ahead.
const LOCAL_READS_AHEAD: usize = 2;

/// Streams `range` (or all) of the local object `file`, [`LOCAL_READ_CHUNK`] at a time, one read ahead; `missing`
/// is the error when there is no such file. The file is opened for each read and closed after it: a download the
/// client reads slowly holds no descriptor between reads (slow readers holding one each once took every descriptor
/// the process had, and the log stopped).
async fn read_local(
    file: PathBuf,
    range: Option<Range<u64>>,
    missing: impl FnOnce() -> StoreError,
) -> Result<impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static, StoreError> {
    let path = file.clone();
    let size = match blocking(move || Ok(std::fs::metadata(path)?.len())).await {
        Ok(size) => size,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(missing()),
        Err(err) => return Err(local_error(err)),
    };
    let Range { start, end } = range.unwrap_or(0..size);
    if start > end || end > size {
        return Err(StoreError::BadRange { start, end, size });
    }
    let file = Arc::new(file);
    let chunk = LOCAL_READ_CHUNK as u64;
    let reads = (start..end).step_by(LOCAL_READ_CHUNK).map(move |offset| {
        let file = file.clone();
        let length = (end - offset).min(chunk) as usize;
        async move {
            let read = blocking(move || {
                let mut bytes = vec![0; length];
                File::open(file.as_path())?.read_exact_at(&mut bytes, offset)?;
                Ok(bytes)
            });
            read.await.map(Bytes::from).map_err(local_error)
        }
    });
    // The next chunk is read while the one before it is sent (and, for a case export, hashed).
    Ok(futures::stream::iter(reads).buffered(LOCAL_READS_AHEAD))
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(io::Error::other)?
}

fn random_name() -> String {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
