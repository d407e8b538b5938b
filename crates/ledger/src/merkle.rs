//! The RFC 6962 / RFC 9162 Merkle tree: hashing, proof shapes and proof verification. No IO.
//!
//! Proof generation is split in two so that this module never touches storage: [`inclusion_ranges`] and
//! [`consistency_ranges`] say which subtrees a proof needs, [`perfect_nodes`] breaks each into stored nodes,
//! and the caller fetches those and folds them with [`fold_range`]. Verification follows the algorithms of
//! transparency-dev/merkle (RFC 9162 section 2.1.3.2 and 2.1.4.2) exactly.

use std::fmt;
use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};

/// A Merkle tree node hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn from_base64(text: &str) -> Option<Self> {
        BASE64.decode(text).ok().and_then(|bytes| Self::from_slice(&bytes))
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_base64())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// SHA-256(0x00 || entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(entry);
    Hash(hasher.finalize().into())
}

/// SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {new} is smaller than the earlier size {old}")]
    SizesReversed { old: u64, new: u64 },
    #[error("proof has {got} hashes where {want} are needed")]
    WrongLength { got: usize, want: usize },
    #[error("proof is empty where hashes are needed")]
    Empty,
    #[error("recomputed root {computed} does not match the expected root {expected}")]
    RootMismatch { computed: Hash, expected: Hash },
    #[error("roots of two trees of the same size differ")]
    BytesMismatch,
    #[error("a hash is {len} bytes, not 32")]
    BadHashLength { len: usize },
    #[error("a consistency proof from the empty tree proves nothing; pin a non-empty earlier checkpoint")]
    FromEmptyTree,
}

fn check_root(computed: Hash, expected: &Hash) -> Result<(), ProofError> {
    if computed == *expected { Ok(()) } else { Err(ProofError::RootMismatch { computed, expected: *expected }) }
}

/// Bits of a u64 needed to write `value`.
fn bit_len(value: u64) -> u32 {
    u64::BITS - value.leading_zeros()
}

/// The number of inner and border hashes in an inclusion proof for `index` in a tree of `size`.
fn inclusion_shape(index: u64, size: u64) -> (usize, usize) {
    let inner = bit_len(index ^ (size - 1)) as usize;
    let border = (index >> inner).count_ones() as usize;
    (inner, border)
}

fn chain_inner(seed: Hash, proof: &[Hash], index: u64) -> Hash {
    proof.iter().enumerate().fold(seed, |acc, (i, sibling)| {
        if (index >> i) & 1 == 0 { node_hash(&acc, sibling) } else { node_hash(sibling, &acc) }
    })
}

fn chain_inner_right(seed: Hash, proof: &[Hash], index: u64) -> Hash {
    proof
        .iter()
        .enumerate()
        .fold(seed, |acc, (i, sibling)| if (index >> i) & 1 == 1 { node_hash(sibling, &acc) } else { acc })
}

fn chain_border_right(seed: Hash, proof: &[Hash]) -> Hash {
    proof.iter().fold(seed, |acc, sibling| node_hash(sibling, &acc))
}

/// The root that an inclusion proof implies for `leaf` at `index` in a tree of `size`.
pub fn root_from_inclusion_proof(index: u64, size: u64, leaf: &Hash, proof: &[Hash]) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (inner, border) = inclusion_shape(index, size);
    if proof.len() != inner + border {
        return Err(ProofError::WrongLength { got: proof.len(), want: inner + border });
    }
    let (inner_proof, border_proof) = proof.split_at(inner);
    Ok(chain_border_right(chain_inner(*leaf, inner_proof, index), border_proof))
}

/// Checks that `leaf` sits at `index` of the tree of `size` whose root is `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    check_root(root_from_inclusion_proof(index, size, leaf, proof)?, root)
}

/// Checks that the tree of `size1` with `root1` is a prefix of the tree of `size2` with `root2`.
///
/// A proof from the empty tree is refused: it would prove nothing, and accepting it would let a caller who
/// forgot to pin an earlier checkpoint believe that they had checked consistency.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size1 == size2 && size1 > 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { got: proof.len(), want: 0 });
        }
        return check_root(*root2, root1);
    }
    verify_consistency_growth(size1, size2, proof, root1, root2)
}

/// [`verify_consistency`] over untrusted wire bytes, as the reference verifier takes them: roots of equal
/// trees are only compared, so they need not be 32 bytes; every hash that is hashed must be.
pub fn verify_consistency_bytes(
    size1: u64,
    size2: u64,
    proof: &[&[u8]],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), ProofError> {
    if size1 == size2 && size1 > 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { got: proof.len(), want: 0 });
        }
        return if root1 == root2 { Ok(()) } else { Err(ProofError::BytesMismatch) };
    }
    let hash = |bytes: &[u8]| Hash::from_slice(bytes).ok_or(ProofError::BadHashLength { len: bytes.len() });
    let proof = proof.iter().map(|bytes| hash(bytes)).collect::<Result<Vec<_>, _>>()?;
    verify_consistency_growth(size1, size2, &proof, &hash(root1)?, &hash(root2)?)
}

fn verify_consistency_growth(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size2 < size1 {
        return Err(ProofError::SizesReversed { old: size1, new: size2 });
    }
    if size1 == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    if proof.is_empty() {
        return Err(ProofError::Empty);
    }

    let (inner, border) = inclusion_shape(size1 - 1, size2);
    let shift = size1.trailing_zeros() as usize;
    let inner = inner - shift;
    // The proof starts with the root of the largest perfect subtree ending at size1, unless that is root1 itself.
    let (seed, rest) = if size1 == 1 << shift { (*root1, proof) } else { (proof[0], &proof[1..]) };
    let want = proof.len() - rest.len() + inner + border;
    if proof.len() != want {
        return Err(ProofError::WrongLength { got: proof.len(), want });
    }
    let (inner_proof, border_proof) = rest.split_at(inner);
    let mask = (size1 - 1) >> shift;

    let hash1 = chain_border_right(chain_inner_right(seed, inner_proof, mask), border_proof);
    check_root(hash1, root1)?;
    let hash2 = chain_border_right(chain_inner(seed, inner_proof, mask), border_proof);
    check_root(hash2, root2)
}

/// The largest power of two strictly smaller than `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    1 << (bit_len(n - 1) - 1)
}

/// The leaf ranges whose subtree hashes make up the inclusion proof of `index` in a tree of `size`, in proof
/// order (the leaf's sibling first). RFC 9162 section 2.1.3.1.
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<Range<u64>>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut lo, mut hi) = (0, size);
    let mut ranges = Vec::new();
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            ranges.push(mid..hi);
            hi = mid;
        } else {
            ranges.push(lo..mid);
            lo = mid;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// The leaf ranges whose subtree hashes make up the consistency proof from `old` to `new`, in proof order.
/// RFC 9162 section 2.1.4.1.
pub fn consistency_ranges(old: u64, new: u64) -> Result<Vec<Range<u64>>, ProofError> {
    if old > new {
        return Err(ProofError::SizesReversed { old, new });
    }
    let mut ranges = Vec::new();
    if old == 0 || old == new {
        return Ok(ranges);
    }
    let (mut lo, mut hi, mut m, mut whole_old_tree) = (0, new, old, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !whole_old_tree {
                ranges.push(lo..hi);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            ranges.push(lo + k..hi);
            hi = lo + k;
        } else {
            ranges.push(lo..lo + k);
            lo += k;
            m -= k;
            whole_old_tree = false;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// A perfect subtree: the 2^level leaves starting at `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

/// Breaks a leaf range into the perfect subtrees that RFC 6962 hashes it from, left to right.
pub fn perfect_nodes(range: Range<u64>) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let remaining_level = bit_len(range.end - start) - 1;
        let alignment_level = if start == 0 { u64::BITS } else { start.trailing_zeros() };
        let level = remaining_level.min(alignment_level);
        nodes.push(NodeId { level: level as u8, index: start >> level });
        start += 1 << level;
    }
    nodes
}

/// The RFC 6962 hash of a range, given the hashes of its [`perfect_nodes`] in order.
pub fn fold_range(node_hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = node_hashes.split_last()?;
    Some(rest.iter().rev().fold(*last, |acc, left| node_hash(left, &acc)))
}

/// The root of a perfect subtree from its 2^k leaves or level hashes.
pub fn perfect_root(hashes: &[Hash]) -> Option<Hash> {
    if hashes.is_empty() || !hashes.len().is_power_of_two() {
        return None;
    }
    let mut level = hashes.to_vec();
    while level.len() > 1 {
        level = level.chunks_exact(2).map(|pair| node_hash(&pair[0], &pair[1])).collect();
    }
    level.first().copied()
}

/// The right edge of a growing tree: one hash per set bit of its size. Appending is amortised O(1), and every
/// perfect subtree completed along the way is reported, which is how tiles are filled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// Perfect subtree roots, largest (leftmost) first.
    edge: Vec<Hash>,
}

impl CompactRange {
    /// Builds the range of a tree of `size` from the hashes of `perfect_nodes(0..size)`.
    pub fn from_parts(size: u64, edge: Vec<Hash>) -> Option<Self> {
        (edge.len() == size.count_ones() as usize).then_some(Self { size, edge })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash. `completed` sees every node this completes, the leaf (level 0) included.
    pub fn append(&mut self, leaf: Hash, mut completed: impl FnMut(NodeId, &Hash)) {
        let mut node = NodeId { level: 0, index: self.size };
        let mut hash = leaf;
        completed(node, &hash);
        while node.index & 1 == 1 {
            let Some(left) = self.edge.pop() else { break };
            hash = node_hash(&left, &hash);
            node = NodeId { level: node.level + 1, index: node.index >> 1 };
            completed(node, &hash);
        }
        self.edge.push(hash);
        self.size += 1;
    }

    pub fn root(&self) -> Hash {
        fold_range(&self.edge).unwrap_or_else(empty_root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook recursive definition, to check the fast paths against.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn range_hash(all: &[Hash], range: Range<u64>) -> Hash {
        reference_root(&all[range.start as usize..range.end as usize])
    }

    #[test]
    fn compact_range_root_matches_reference() {
        let all = leaves(300);
        let mut compact = CompactRange::default();
        assert_eq!(compact.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            compact.append(*leaf, |_, _| {});
            assert_eq!(compact.root(), reference_root(&all[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn perfect_nodes_fold_to_the_range_hash() {
        let all = leaves(70);
        for end in 1..=70u64 {
            let nodes = perfect_nodes(0..end);
            let hashes: Vec<Hash> =
                nodes.iter().map(|n| range_hash(&all, (n.index << n.level)..((n.index + 1) << n.level))).collect();
            assert_eq!(fold_range(&hashes), Some(reference_root(&all[..end as usize])));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn every_inclusion_and_consistency_proof_verifies(size in 1u64..200) {
            let all = leaves(size);
            let proof_of = |ranges: Vec<Range<u64>>| -> Vec<Hash> {
                ranges.into_iter().map(|r| range_hash(&all, r)).collect()
            };
            let root = reference_root(&all);
            for index in 0..size {
                let proof = proof_of(inclusion_ranges(index, size).unwrap());
                verify_inclusion(index, size, &all[index as usize], &proof, &root).unwrap();
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = leaf_hash(&first.0);
                    proptest::prop_assert!(verify_inclusion(index, size, &all[index as usize], &bad, &root).is_err());
                }
            }
            proptest::prop_assert_eq!(verify_consistency(0, size, &[], &empty_root(), &root), Err(ProofError::FromEmptyTree));
            for old in 1..=size {
                let proof = proof_of(consistency_ranges(old, size).unwrap());
                let old_root = reference_root(&all[..old as usize]);
                verify_consistency(old, size, &proof, &old_root, &root).unwrap();
                if old < size {
                    proptest::prop_assert!(verify_consistency(old, size, &proof, &root, &root).is_err());
                }
            }
        }
    }
}
