//! Reading and writing a tile log in any `object_store`: a local directory, an S3 bucket, or (read-only) a
//! plain HTTP server. Everything here is the static layout of c2sp.org/tlog-tiles below one prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, path::Path};

use crate::LogError;
use crate::merkle::{Hash, NodeId, perfect_root};
use crate::tile::{Tile, TileKind, decode_hashes};

/// The name of the checkpoint object below the prefix.
pub const CHECKPOINT: &str = "checkpoint";

/// How many tile reads or writes are in flight at once.
const CONCURRENCY: usize = 16;

/// A tile log's objects below `prefix` in `store`, with a cache of the hash tiles already read. Tiles are
/// immutable once a checkpoint covers them, so the cache never needs invalidating.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    hash_tiles: Arc<quick_cache::sync::Cache<Tile, Arc<Vec<Hash>>>>,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore").field("store", &self.store.to_string()).field("prefix", &self.prefix).finish()
    }
}

impl LogStore {
    /// Keeps up to 8192 hash tiles (64 MiB) in memory.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        Self { store, prefix, hash_tiles: Arc::new(quick_cache::sync::Cache::new(8192)) }
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn path(&self, relative: &str) -> Path {
        relative.split('/').fold(self.prefix.clone(), |path, part| path.clone().join(part))
    }

    /// Reads an object, `None` if it does not exist.
    pub async fn get(&self, relative: &str) -> Result<Option<Bytes>, LogError> {
        let path = self.path(relative);
        match self.store.get(&path).await {
            Ok(result) => result.bytes().await.map(Some).map_err(|source| LogError::Storage { path, source }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(LogError::Storage { path, source }),
        }
    }

    /// Reads an object that must exist.
    pub async fn get_required(&self, relative: &str) -> Result<Bytes, LogError> {
        self.get(relative).await?.ok_or_else(|| LogError::Missing { path: relative.to_owned() })
    }

    /// Writes (or replaces) an object. Returns once the store says it is durable.
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), LogError> {
        let path = self.path(relative);
        let options = PutOptions { mode: PutMode::Overwrite, ..Default::default() };
        self.store
            .put_opts(&path, PutPayload::from_bytes(bytes), options)
            .await
            .map(drop)
            .map_err(|source| LogError::Storage { path, source })
    }

    pub async fn put_all(&self, objects: Vec<(String, Bytes)>) -> Result<(), LogError> {
        futures::stream::iter(objects)
            .map(|(path, bytes)| self.put_owned(path, bytes))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    async fn put_owned(&self, path: String, bytes: Bytes) -> Result<(), LogError> {
        self.put(&path, bytes).await
    }

    /// Deletes every object below `relative`. Used to drop partial tiles once their full tile is published.
    pub async fn delete_below(&self, relative: &str) -> Result<(), LogError> {
        let prefix = self.path(relative);
        let listed: Vec<_> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|source| LogError::Storage { path: prefix.clone(), source })?;
        for path in listed {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => return Err(LogError::Storage { path, source }),
            }
        }
        Ok(())
    }

    /// The hashes of a hash tile. A partial tile that has been superseded by its full tile is read from the
    /// full tile, as c2sp.org/tlog-tiles asks clients to do.
    pub async fn hash_tile(&self, tile: Tile) -> Result<Arc<Vec<Hash>>, LogError> {
        if let Some(hashes) = self.hash_tiles.get(&tile) {
            return Ok(hashes);
        }
        let hashes = match self.get(&tile.path()).await? {
            Some(bytes) => decode_hashes(&bytes, tile.width)
                .map_err(|source| LogError::Undecodable { path: tile.path(), source })?,
            None if !tile.is_full() => {
                let full = Tile { width: crate::tile::TILE_WIDTH as u16, ..tile };
                let mut hashes = Box::pin(self.hash_tile(full)).await.map_err(|err| match err {
                    LogError::Missing { .. } => LogError::Missing { path: tile.path() },
                    other => other,
                })?;
                Arc::make_mut(&mut hashes).truncate(tile.width.into());
                hashes.to_vec()
            }
            None => return Err(LogError::Missing { path: tile.path() }),
        };
        let hashes = Arc::new(hashes);
        self.hash_tiles.insert(tile, hashes.clone());
        Ok(hashes)
    }

    /// The hashes of perfect subtrees of the tree of `tree_size`, each computed from the tile that stores it.
    pub async fn node_hashes(&self, nodes: &[NodeId], tree_size: u64) -> Result<Vec<Hash>, LogError> {
        let mut located = Vec::with_capacity(nodes.len());
        let mut tiles = BTreeSet::new();
        for &node in nodes {
            let (tile, slots) = Tile::covering(node, tree_size).ok_or(LogError::NodeOutsideTree { node, tree_size })?;
            tiles.insert(tile);
            located.push((tile, slots));
        }
        let fetched: BTreeMap<Tile, Arc<Vec<Hash>>> = futures::stream::iter(tiles)
            .map(|tile| async move { self.hash_tile(tile).await.map(|hashes| (tile, hashes)) })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        located
            .into_iter()
            .map(|(tile, slots)| {
                fetched[&tile]
                    .get(slots)
                    .and_then(perfect_root)
                    .ok_or_else(|| LogError::Corrupt { path: tile.path(), reason: "tile is too short".into() })
            })
            .collect()
    }

    /// The entries of an entry bundle, which must hold exactly `tile.width` of them.
    pub async fn entry_bundle(&self, tile: Tile) -> Result<Vec<Bytes>, LogError> {
        debug_assert_eq!(tile.kind, TileKind::Entries);
        let bytes = match self.get(&tile.path()).await? {
            Some(bytes) => bytes,
            None if !tile.is_full() => {
                // Superseded partial bundle: read the full one and keep the first `width` entries.
                let full = Tile { width: crate::tile::TILE_WIDTH as u16, ..tile };
                let entries = Box::pin(self.entry_bundle(full)).await?;
                return Ok(entries.into_iter().take(tile.width.into()).collect());
            }
            None => return Err(LogError::Missing { path: tile.path() }),
        };
        let entries = crate::tile::decode_bundle(&bytes, tile.width)
            .map_err(|source| LogError::Undecodable { path: tile.path(), source })?;
        Ok(entries.into_iter().map(|entry| bytes.slice_ref(entry)).collect())
    }
}

impl LogStore {
    async fn ranges_hashes(&self, ranges: Vec<std::ops::Range<u64>>, tree_size: u64) -> Result<Vec<Hash>, LogError> {
        let per_range: Vec<Vec<NodeId>> = ranges.into_iter().map(crate::merkle::perfect_nodes).collect();
        let all: Vec<NodeId> = per_range.iter().flatten().copied().collect();
        let mut hashes = self.node_hashes(&all, tree_size).await?.into_iter();
        Ok(per_range
            .iter()
            .filter_map(|nodes| crate::merkle::fold_range(&hashes.by_ref().take(nodes.len()).collect::<Vec<_>>()))
            .collect())
    }

    /// The inclusion proof of entry `index` in the tree of `tree_size`, leaf's sibling first.
    pub async fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, LogError> {
        self.ranges_hashes(crate::merkle::inclusion_ranges(index, tree_size)?, tree_size).await
    }

    /// The consistency proof from the tree of `old` to the tree of `new`.
    pub async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        self.ranges_hashes(crate::merkle::consistency_ranges(old, new)?, new).await
    }

    /// Entry `index` of the tree of `tree_size`.
    pub async fn entry(&self, index: u64, tree_size: u64) -> Result<Bytes, LogError> {
        if index >= tree_size {
            return Err(crate::merkle::ProofError::IndexOutOfRange { index, size: tree_size }.into());
        }
        let bundle = index / crate::tile::TILE_WIDTH;
        let width = (tree_size - bundle * crate::tile::TILE_WIDTH).min(crate::tile::TILE_WIDTH) as u16;
        let entries = self.entry_bundle(Tile { kind: TileKind::Entries, index: bundle, width }).await?;
        entries
            .into_iter()
            .nth((index % crate::tile::TILE_WIDTH) as usize)
            .ok_or_else(|| LogError::Missing { path: format!("entry {index}") })
    }
}
