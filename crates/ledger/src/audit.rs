//! Auditing a published log end to end, as an outside monitor would: check the checkpoint's signature, read
//! every entry, recompute every tile and the root, and check that the log still extends a checkpoint seen
//! earlier. Works over any `object_store`, so over a directory, a bucket, or a plain HTTP server alike.

use futures::{StreamExt as _, TryStreamExt as _};

use crate::LogError;
use crate::checkpoint::{Checkpoint, CheckpointError, LogVerifier, SignedCheckpoint};
use crate::merkle::{CompactRange, Hash, empty_root, leaf_hash};
use crate::storage::{CHECKPOINT, LogStore};
use crate::tile::{TILE_HEIGHT, TILE_WIDTH, Tile, TileKind};

/// What an audit found, when it found nothing wrong.
#[derive(Debug, Clone)]
pub struct AuditReport {
    pub checkpoint: SignedCheckpoint,
    pub entries: u64,
    pub hash_tiles_checked: u64,
    /// The size of the earlier checkpoint the log was shown to extend.
    pub extends: Option<u64>,
}

/// Exactly what is wrong with a log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("the log has no checkpoint")]
    NoCheckpoint,
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Storage(#[from] LogError),
    #[error("entry {index} is not valid: {reason}")]
    BadEntry { index: u64, reason: String },
    #[error("{path} does not hold the hashes recomputed from the entries")]
    TileMismatch { path: String },
    #[error("the {size} entries hash to root {computed}, but the checkpoint says {expected}")]
    RootMismatch { size: u64, computed: Hash, expected: Hash },
    #[error("the log has {size} entries but a checkpoint seen earlier had {previous}: entries were removed")]
    Shrank { size: u64, previous: u64 },
    #[error(
        "the first {size} entries now hash to {computed}, but a checkpoint seen earlier said {expected}: history was rewritten"
    )]
    Inconsistent { size: u64, computed: Hash, expected: Hash },
    #[error("the checkpoint seen earlier is for log {previous:?}, not {origin:?}")]
    OriginMismatch { origin: String, previous: String },
}

/// Audits the log in `storage`. `previous` is a checkpoint seen earlier (already verified by the caller) that
/// the log must extend. `check_entry` sees every entry in order and may refuse it.
pub async fn audit_log(
    storage: &LogStore,
    trusted: &[LogVerifier],
    previous: Option<&Checkpoint>,
    mut check_entry: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<AuditReport, AuditError> {
    let note = storage.get(CHECKPOINT).await?.ok_or(AuditError::NoCheckpoint)?;
    let signed = SignedCheckpoint::open(&note, trusted)?;
    let Checkpoint { size, root, .. } = signed.checkpoint.clone();
    if let Some(previous) = previous {
        if previous.origin != signed.checkpoint.origin {
            return Err(AuditError::OriginMismatch {
                origin: signed.checkpoint.origin.clone(),
                previous: previous.origin.clone(),
            });
        }
        if previous.size > size {
            return Err(AuditError::Shrank { size, previous: previous.size });
        }
        if previous.size == 0 && previous.root != empty_root() {
            return Err(AuditError::Inconsistent { size: 0, computed: empty_root(), expected: previous.root });
        }
    }

    let mut range = CompactRange::default();
    let mut pending: Vec<Vec<Hash>> = Vec::new();
    let mut tiles_checked = 0;
    let bundle_count = size.div_ceil(TILE_WIDTH);
    let mut bundles = futures::stream::iter(0..bundle_count)
        .map(|index| {
            let width = (size - index * TILE_WIDTH).min(TILE_WIDTH) as u16;
            storage.entry_bundle(Tile { kind: TileKind::Entries, index, width })
        })
        .buffered(8);
    while let Some(entries) = bundles.try_next().await? {
        let mut completed = Vec::new();
        for entry in &entries {
            let index = range.size();
            check_entry(index, entry).map_err(|reason| AuditError::BadEntry { index, reason })?;
            range.append(leaf_hash(entry), |node, hash| {
                if node.level % TILE_HEIGHT != 0 {
                    return;
                }
                let level = node.level / TILE_HEIGHT;
                if pending.len() <= level.into() {
                    pending.resize(usize::from(level) + 1, Vec::new());
                }
                let slots = &mut pending[usize::from(level)];
                slots.push(*hash);
                if slots.len() as u64 == TILE_WIDTH {
                    let tile = Tile {
                        kind: TileKind::Hashes { level },
                        index: node.index / TILE_WIDTH,
                        width: TILE_WIDTH as u16,
                    };
                    completed.push((tile, std::mem::take(slots)));
                }
            });
            if let Some(previous) = previous.filter(|p| p.size == range.size() && range.root() != p.root) {
                return Err(AuditError::Inconsistent {
                    size: previous.size,
                    computed: range.root(),
                    expected: previous.root,
                });
            }
        }
        for (tile, expected) in completed {
            check_tile(storage, tile, &expected).await?;
            tiles_checked += 1;
        }
    }
    for (level, slots) in pending.iter().enumerate() {
        if let Some(tile) = Tile::partial(TileKind::Hashes { level: level as u8 }, size) {
            check_tile(storage, tile, slots).await?;
            tiles_checked += 1;
        }
    }
    if range.root() != root {
        return Err(AuditError::RootMismatch { size, computed: range.root(), expected: root });
    }
    Ok(AuditReport {
        checkpoint: signed,
        entries: size,
        hash_tiles_checked: tiles_checked,
        extends: previous.map(|p| p.size),
    })
}

async fn check_tile(storage: &LogStore, tile: Tile, expected: &[Hash]) -> Result<(), AuditError> {
    let stored = storage.hash_tile(tile).await?;
    if stored.as_slice() == expected { Ok(()) } else { Err(AuditError::TileMismatch { path: tile.path() }) }
}
