//! The right edge of the log's tree as a writer holds it ([`TreeState`]): what it needs to append a batch without
//! reading storage, and the tiles a batch writes. The single sequencer (`log`) and the coordinated integrator
//! (`coordinated`) both write through it.

use std::sync::Arc;

use bytes::Bytes;

use crate::LogError;
use crate::checkpoint::{Checkpoint, LogSigner, SignedCheckpoint};
use crate::merkle::{CompactRange, Hash, NodeId, leaf_hash, perfect_nodes};
use crate::storage::{CHECKPOINT, LogStore};
use crate::tile::{TILE_HEIGHT, TILE_WIDTH, Tile, TileKind, encode_bundle, encode_hashes};

/// Whatever keeps other processes out of the log (a directory lock, say), held by every handle.
pub type SequencerGuard = Arc<dyn std::any::Any + Send + Sync>;

/// The right edge of the tree: everything needed to append without reading storage.
#[derive(Debug, Clone, Default)]
pub(crate) struct TreeState {
    range: CompactRange,
    /// The filled slots of the last, partial tile at each tile level.
    hash_tiles: Vec<Vec<Hash>>,
    /// The entries of the last, partial entry bundle.
    entries: Vec<Bytes>,
}

impl TreeState {
    pub(crate) async fn open(storage: &LogStore, signer: &LogSigner) -> Result<(Self, SignedCheckpoint), LogError> {
        let Some(note) = storage.get(CHECKPOINT).await? else {
            let signed = signer.sign(&Checkpoint::new(signer.name(), 0, crate::merkle::empty_root()))?;
            storage.put(CHECKPOINT, Bytes::copy_from_slice(signed.note())).await?;
            return Ok((Self::default(), signed));
        };
        let signed = SignedCheckpoint::open(&note, &[signer.verifier()])?;
        let state = Self::open_at(storage, &signed.checkpoint).await?;
        Ok((state, signed))
    }

    pub(crate) fn size(&self) -> u64 {
        self.range.size()
    }

    pub(crate) fn root(&self) -> Hash {
        self.range.root()
    }

    /// Rebuilds the right edge of the tree that `checkpoint` describes, and checks it against the root.
    pub(crate) async fn open_at(storage: &LogStore, checkpoint: &Checkpoint) -> Result<Self, LogError> {
        let size = checkpoint.size;
        let edge_nodes: Vec<NodeId> = perfect_nodes(0..size);
        let edge = storage.node_hashes(&edge_nodes, size).await?;
        let range = CompactRange::from_parts(size, edge)
            .ok_or(LogError::Corrupt { path: CHECKPOINT.into(), reason: "tree edge has the wrong shape".into() })?;
        if range.root() != checkpoint.root {
            return Err(LogError::Corrupt {
                path: CHECKPOINT.into(),
                reason: format!("stored tiles give root {} but the checkpoint says {}", range.root(), checkpoint.root),
            });
        }
        let mut hash_tiles = Vec::new();
        for level in 0..levels_for(size) {
            let hashes = match Tile::partial(TileKind::Hashes { level }, size) {
                Some(tile) => storage.hash_tile(tile).await?.to_vec(),
                None => Vec::new(),
            };
            hash_tiles.push(hashes);
        }
        let entries = match Tile::partial(TileKind::Entries, size) {
            Some(tile) => storage.entry_bundle(tile).await?,
            None => Vec::new(),
        };
        let entry_leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        if hash_tiles.first().is_some_and(|leaves| *leaves != entry_leaves) {
            return Err(LogError::Corrupt {
                path: format!("tile/entries/{}", crate::tile::index_path(size / TILE_WIDTH)),
                reason: "partial entry bundle does not match the level-0 tile".into(),
            });
        }
        Ok(Self { range, hash_tiles, entries })
    }

    /// Appends `batch` to a copy of this state, returning the new state and the objects to write. Pure.
    pub(crate) fn apply(&self, batch: &[Bytes]) -> (Self, Vec<(String, Bytes)>) {
        let old_size = self.range.size();
        let Self { mut range, mut hash_tiles, mut entries } = self.clone();
        let mut writes = Vec::new();
        for entry in batch {
            let index = range.size();
            entries.push(entry.clone());
            if entries.len() as u64 == TILE_WIDTH {
                let tile = Tile { kind: TileKind::Entries, index: index / TILE_WIDTH, width: TILE_WIDTH as u16 };
                writes.push((tile.path(), Bytes::from(encode_bundle(&entries))));
                entries.clear();
            }
            range.append(leaf_hash(entry), |node, hash| {
                if node.level % TILE_HEIGHT != 0 {
                    return;
                }
                let level = node.level / TILE_HEIGHT;
                if hash_tiles.len() <= level.into() {
                    hash_tiles.resize(usize::from(level) + 1, Vec::new());
                }
                let slots = &mut hash_tiles[usize::from(level)];
                slots.push(*hash);
                if slots.len() as u64 == TILE_WIDTH {
                    let tile = Tile {
                        kind: TileKind::Hashes { level },
                        index: node.index / TILE_WIDTH,
                        width: TILE_WIDTH as u16,
                    };
                    writes.push((tile.path(), Bytes::from(encode_hashes(slots))));
                    slots.clear();
                }
            });
        }
        let new_size = range.size();
        let changed_partial =
            |kind| Tile::partial(kind, new_size).filter(|t| Some(*t) != Tile::partial(kind, old_size));
        if let Some(tile) = changed_partial(TileKind::Entries) {
            writes.push((tile.path(), Bytes::from(encode_bundle(&entries))));
        }
        for (level, slots) in hash_tiles.iter().enumerate() {
            if let Some(tile) = changed_partial(TileKind::Hashes { level: level as u8 }) {
                writes.push((tile.path(), Bytes::from(encode_hashes(slots))));
            }
        }
        (Self { range, hash_tiles, entries }, writes)
    }
}

/// How many tile levels a tree of `size` has.
fn levels_for(size: u64) -> u8 {
    (0u8..8).take_while(|level| size >> (u32::from(*level) * u32::from(TILE_HEIGHT)) > 0).count() as u8
}

/// Partial tiles are only for clients whose checkpoint predates the full tile; drop them in the background.
pub(crate) fn collect_superseded_partials(storage: &LogStore, full_tiles: Vec<String>) {
    if full_tiles.is_empty() {
        return;
    }
    let storage = storage.clone();
    tokio::spawn(async move {
        for path in full_tiles {
            if let Err(err) = storage.delete_below(&format!("{path}.p")).await {
                tracing::warn!(error = %err, "could not remove superseded partial tiles");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_writes_full_and_partial_tiles() {
        let batch: Vec<Bytes> = (0..300u32).map(|i| Bytes::from(i.to_be_bytes().to_vec())).collect();
        let (state, writes) = TreeState::default().apply(&batch);
        let paths: Vec<&str> = writes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["tile/entries/000", "tile/0/000", "tile/entries/001.p/44", "tile/0/001.p/44", "tile/1/000.p/1"]
        );
        assert_eq!(state.entries.len(), 44);

        let (_, writes) = state.apply(&batch[..1]);
        let paths: Vec<&str> = writes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["tile/entries/001.p/45", "tile/0/001.p/45"]);
    }
}
