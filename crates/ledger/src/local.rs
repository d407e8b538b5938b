//! A log in a local directory: fsync'd writes and an exclusive lock, so that exactly one process sequences it.

use std::fs::OpenOptions;
use std::path::Path as FsPath;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::log::{Log, SequencerGuard};
use crate::{LogError, LogOptions, LogSigner};

/// The lock file, inside the log directory but outside the served `checkpoint` and `tile/` paths.
const LOCK_FILE: &str = ".sequencer.lock";

impl Log {
    /// Opens (or creates) the log in directory `dir`. Writes are fsync'd before they are acknowledged, and an
    /// exclusive lock on the directory, held until the last handle and the sequencer are gone, keeps a second
    /// process from sequencing the same log.
    pub async fn open_local(dir: &FsPath, signer: LogSigner, options: LogOptions) -> Result<Self, LogError> {
        let (store, lock) = Self::local_store(dir)?;
        Self::open_guarded(store, Path::default(), signer, options, Some(Arc::new(lock))).await
    }

    /// [`Log::open_coordinated`] for a log in directory `dir`, with fsync'd writes and the directory's lock (so
    /// that [`Log::open_local`] refuses it meanwhile), beside `guard`.
    pub async fn open_local_coordinated(
        dir: &FsPath,
        signer: LogSigner,
        options: LogOptions,
        coordination: Arc<dyn crate::Coordination>,
        guard: Option<SequencerGuard>,
    ) -> Result<Self, LogError> {
        let (store, lock) = Self::local_store(dir)?;
        let guard: SequencerGuard = Arc::new((lock, guard));
        Self::open_coordinated(store, Path::default(), signer, options, coordination, Some(guard)).await
    }

    /// The directory as an fsync'd store, and its lock, taken.
    fn local_store(dir: &FsPath) -> Result<(Arc<LocalFileSystem>, std::fs::File), LogError> {
        let io_error = |source| LogError::Io { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io_error)?;
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE)).map_err(io_error)?;
        lock.try_lock().map_err(|_| LogError::Locked { dir: dir.to_path_buf() })?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|source| LogError::Storage { path: Path::default(), source })?
            .with_fsync(true);
        Ok((Arc::new(store), lock))
    }
}
