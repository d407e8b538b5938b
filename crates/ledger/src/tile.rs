//! The c2sp.org/tlog-tiles layout: tile and entry-bundle paths, and their byte encodings. No IO.

use std::fmt;

use crate::merkle::{Hash, NodeId};

/// Each tile spans eight levels of the tree.
pub const TILE_HEIGHT: u8 = 8;
/// A full tile holds 256 hashes, a full entry bundle 256 entries.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// Writes a tile index as three-digit groups, all but the last prefixed with `x`: 1234067 is `x001/x234/067`.
pub fn index_path(mut index: u64) -> String {
    let mut groups = vec![format!("{:03}", index % 1000)];
    index /= 1000;
    while index > 0 {
        groups.push(format!("x{:03}", index % 1000));
        index /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// Which object a tile path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileKind {
    /// Hashes of tree level `8 * level`.
    Hashes { level: u8 },
    /// The entries themselves.
    Entries,
}

/// One tile or entry bundle: `width` of its 256 slots are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    pub kind: TileKind,
    pub index: u64,
    pub width: u16,
}

impl Tile {
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// The path below the log's prefix: `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        let kind = match self.kind {
            TileKind::Hashes { level } => level.to_string(),
            TileKind::Entries => "entries".to_owned(),
        };
        let mut path = format!("tile/{kind}/{}", index_path(self.index));
        if !self.is_full() {
            path.push_str(&format!(".p/{}", self.width));
        }
        path
    }

    /// Parses a tile path, accepting only the one canonical spelling of each tile.
    pub fn parse_path(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("tile/")?;
        let (kind, rest) = rest.split_once('/')?;
        let kind = match kind {
            "entries" => TileKind::Entries,
            level => TileKind::Hashes { level: level.parse().ok().filter(|l: &u8| *l < 64)? },
        };
        let (index_text, width) = match rest.split_once(".p/") {
            Some((index_text, width)) => (index_text, width.parse::<u16>().ok().filter(|w| (1..256).contains(w))?),
            None => (rest, TILE_WIDTH as u16),
        };
        let mut index: u64 = 0;
        for group in index_text.split('/') {
            let digits = group.strip_prefix('x').unwrap_or(group);
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            index = index.checked_mul(1000)?.checked_add(digits.parse::<u64>().ok()?)?;
        }
        let tile = Self { kind, index, width };
        (tile.path() == path).then_some(tile)
    }

    /// The tile holding the level-`8L` hashes that node `node` is built from, in a tree of `tree_size`, and the
    /// range of slots within it. `None` if the node is not complete in that tree.
    pub fn covering(node: NodeId, tree_size: u64) -> Option<(Self, std::ops::Range<usize>)> {
        let last_leaf = (node.index.checked_add(1)?).checked_shl(node.level.into())?;
        if last_leaf > tree_size || node.level >= 64 {
            return None;
        }
        let level = node.level / TILE_HEIGHT;
        let sublevel = node.level % TILE_HEIGHT;
        let first = node.index << sublevel;
        let index = first / TILE_WIDTH;
        let stored = tree_size >> (u32::from(level) * u32::from(TILE_HEIGHT));
        let width = (stored - index * TILE_WIDTH).min(TILE_WIDTH) as u16;
        let offset = (first % TILE_WIDTH) as usize;
        Some((Self { kind: TileKind::Hashes { level }, index, width }, offset..offset + (1 << sublevel)))
    }

    /// The tile at `level` (or the entry bundle) that holds the last, incomplete group in a tree of `tree_size`.
    pub fn partial(kind: TileKind, tree_size: u64) -> Option<Self> {
        let level = match kind {
            TileKind::Hashes { level } => level,
            TileKind::Entries => 0,
        };
        let stored = tree_size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT)).unwrap_or(0);
        let width = (stored % TILE_WIDTH) as u16;
        (width > 0).then_some(Self { kind, index: stored / TILE_WIDTH, width })
    }
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// Why tile or bundle bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TileDecodeError {
    #[error("hash tile is {len} bytes, not {want} ({width} hashes of 32 bytes)")]
    HashTileLength { len: usize, want: usize, width: u16 },
    #[error("entry bundle ends inside entry {entry}")]
    TruncatedEntry { entry: usize },
    #[error("entry bundle holds {found} entries, not {want}")]
    EntryCount { found: usize, want: u16 },
}

pub fn encode_hashes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|hash| hash.0).collect()
}

pub fn decode_hashes(bytes: &[u8], width: u16) -> Result<Vec<Hash>, TileDecodeError> {
    let want = usize::from(width) * 32;
    if bytes.len() != want {
        return Err(TileDecodeError::HashTileLength { len: bytes.len(), want, width });
    }
    Ok(bytes.chunks_exact(32).filter_map(Hash::from_slice).collect())
}

/// Encodes entries, each prefixed by its big-endian u16 length. Callers keep entries under 64 KiB.
pub fn encode_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.as_ref().len() + 2).sum());
    for entry in entries {
        let entry = entry.as_ref();
        debug_assert!(entry.len() <= usize::from(u16::MAX));
        out.extend_from_slice(&(entry.len() as u16).to_be_bytes());
        out.extend_from_slice(entry);
    }
    out
}

/// Splits an entry bundle that must hold exactly `width` entries.
pub fn decode_bundle(bytes: &[u8], width: u16) -> Result<Vec<&[u8]>, TileDecodeError> {
    let mut entries = Vec::with_capacity(width.into());
    let mut rest = bytes;
    while !rest.is_empty() {
        let entry = entries.len();
        let (len, tail) = rest.split_first_chunk::<2>().ok_or(TileDecodeError::TruncatedEntry { entry })?;
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(TileDecodeError::TruncatedEntry { entry });
        }
        let (body, tail) = tail.split_at(len);
        entries.push(body);
        rest = tail;
    }
    if entries.len() != usize::from(width) {
        return Err(TileDecodeError::EntryCount { found: entries.len(), want: width });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_paths_follow_the_spec() {
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(999), "999");
        assert_eq!(index_path(1000), "x001/000");
        assert_eq!(index_path(1234067), "x001/x234/067");
    }

    #[test]
    fn tile_paths_round_trip_and_refuse_other_spellings() {
        let cases = [
            (Tile { kind: TileKind::Hashes { level: 0 }, index: 1234067, width: 256 }, "tile/0/x001/x234/067"),
            (Tile { kind: TileKind::Hashes { level: 2 }, index: 5, width: 17 }, "tile/2/005.p/17"),
            (Tile { kind: TileKind::Entries, index: 1000, width: 3 }, "tile/entries/x001/000.p/3"),
        ];
        for (tile, path) in cases {
            assert_eq!(tile.path(), path);
            assert_eq!(Tile::parse_path(path), Some(tile));
        }
        for bad in [
            "tile/0/5",
            "tile/0/x000/005",
            "tile/0/005.p/256",
            "tile/0/005.p/0",
            "tile/0/005.p/017",
            "tile/8/0/000",
            "tile/0/../005",
            "tile/entries/-01",
            "tile/0/001/002",
        ] {
            assert_eq!(Tile::parse_path(bad), None, "{bad} parsed");
        }
    }

    #[test]
    fn covering_tile_for_nodes() {
        // Node at level 9 index 1 covers level-8 hashes 2..4 of tile 1/000 in a tree of 1024 leaves.
        let (tile, slots) = Tile::covering(NodeId { level: 9, index: 1 }, 1024).unwrap();
        assert_eq!(tile, Tile { kind: TileKind::Hashes { level: 1 }, index: 0, width: 4 });
        assert_eq!(slots, 2..4);
        assert_eq!(Tile::covering(NodeId { level: 9, index: 2 }, 1024), None);
        let (tile, slots) = Tile::covering(NodeId { level: 0, index: 300 }, 301).unwrap();
        assert_eq!((tile.index, tile.width, slots), (1, 45, 44..45));
    }

    #[test]
    fn bundles_round_trip_and_refuse_truncation() {
        let entries: Vec<&[u8]> = vec![b"", b"one", &[7u8; 300]];
        let bytes = encode_bundle(&entries);
        assert_eq!(decode_bundle(&bytes, 3).unwrap(), entries);
        assert!(matches!(decode_bundle(&bytes, 2), Err(TileDecodeError::EntryCount { found: 3, want: 2 })));
        assert!(matches!(
            decode_bundle(&bytes[..bytes.len() - 1], 3),
            Err(TileDecodeError::TruncatedEntry { entry: 2 })
        ));
        assert!(matches!(decode_bundle(&[0], 1), Err(TileDecodeError::TruncatedEntry { entry: 0 })));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), width in 0u16..300, path in ".{0,40}") {
            let _ = decode_bundle(&bytes, width);
            let _ = decode_hashes(&bytes, width);
            let _ = Tile::parse_path(&path);
        }
    }
}
