//! The custody ledger: an append-only, publicly verifiable log of custody records.
//!
//! Records are the leaves of an RFC 6962 Merkle tree, published as a static c2sp.org/tlog-tiles log with signed
//! c2sp.org/tlog-checkpoint checkpoints, so that any HTTP server or S3 bucket can serve it and any tlog client
//! can check it. The pure parts ([`merkle`], [`tile`], [`checkpoint`], [`proof_file`]) do no IO; [`Log`]
//! sequences appends over an `object_store`, and [`audit_log`] checks a published log end to end.
//!
//! Entries are opaque bytes here: this crate knows nothing of custody records, cases or people.

#[cfg(feature = "sequencer")]
pub mod audit;
pub mod checkpoint;
#[cfg(feature = "sequencer")]
pub mod coordinated;
#[cfg(feature = "sequencer")]
mod local;
#[cfg(feature = "sequencer")]
mod log;
pub mod merkle;
pub mod proof_file;
#[cfg(feature = "sequencer")]
mod storage;
pub mod tile;
#[cfg(feature = "sequencer")]
mod tree_state;

#[cfg(feature = "sequencer")]
use std::path::PathBuf;
#[cfg(feature = "sequencer")]
use std::sync::Arc;

#[cfg(feature = "sequencer")]
pub use audit::{AuditError, AuditReport, audit_log};
pub use checkpoint::{Checkpoint, CheckpointError, LogSigner, LogVerifier, SignedCheckpoint};
#[cfg(feature = "sequencer")]
pub use coordinated::{Coordination, CoordinationError, Integrated, IntegrationLock};
#[cfg(feature = "sequencer")]
pub use log::{Log, LogOptions, SequencerGuard};
pub use merkle::{Hash, NodeId, ProofError};
pub use proof_file::{ProofFileError, TlogProof};
#[cfg(feature = "sequencer")]
pub use storage::{CHECKPOINT, LogStore};

/// Everything that can go wrong reading or writing a log.
#[cfg(feature = "sequencer")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("storage failed at {path}: {source}")]
    Storage { path: object_store::path::Path, source: object_store::Error },
    #[error("{path} is missing from the log")]
    Missing { path: String },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    /// A tile or entry bundle whose bytes do not decode.
    #[error("{path} is corrupt: {source}")]
    Undecodable { path: String, source: crate::tile::TileDecodeError },
    #[error("node {node:?} is not complete in a tree of {tree_size} entries")]
    NodeOutsideTree { node: NodeId, tree_size: u64 },
    #[error("entry is {len} bytes; a log entry holds at most 65535")]
    EntryTooLarge { len: usize },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("append failed and was not committed: {0}")]
    Batch(Arc<LogError>),
    #[error("the log's coordination failed: {0}")]
    Coordination(#[source] coordinated::CoordinationError),
    #[error("entry {index} is sequenced and will be integrated, but no published checkpoint covers it yet{}",
        cause.as_ref().map(|cause| format!(": {cause}")).unwrap_or_default())]
    NotIntegrated { index: u64, cause: Option<Arc<LogError>> },
    #[error("entry {index} in the log's store is not the entry sequenced at that index")]
    Diverged { index: u64 },
    #[error("the log's sequencer has stopped")]
    Closed,
    #[error("another process is sequencing the log in {dir}")]
    Locked { dir: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}
