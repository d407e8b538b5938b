//! A log in a local directory: fsync'd writes and an exclusive lock, so that exactly one process sequences it.

use std::fs::{File, OpenOptions};
use std::ops::Deref;
use std::path::Path as FsPath;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::{LogError, LogOptions, LogSigner, log::Log};

/// The lock file, inside the log directory but outside the served `checkpoint` and `tile/` paths.
const LOCK_FILE: &str = ".sequencer.lock";

/// A [`Log`] stored in a local directory, held open by this process alone.
#[derive(Debug)]
pub struct LocalLog {
    log: Log,
    _lock: File,
}

impl LocalLog {
    pub async fn open(dir: &FsPath, signer: LogSigner, options: LogOptions) -> Result<Self, LogError> {
        let io_error = |source| LogError::Io { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io_error)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE)).map_err(io_error)?;
        lock.try_lock().map_err(|_| LogError::Locked { dir: dir.to_path_buf() })?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|source| LogError::Storage { path: Path::default(), source })?
            .with_fsync(true);
        let log = Log::open(Arc::new(store), Path::default(), signer, options).await?;
        Ok(Self { log, _lock: lock })
    }
}

impl Deref for LocalLog {
    type Target = Log;

    fn deref(&self) -> &Log {
        &self.log
    }
}
