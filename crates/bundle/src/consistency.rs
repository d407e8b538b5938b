//! The consistency-proof files a bag carries (`data/witness/consistency.proof`, `data/timestamp/consistency.proof`):
//! the RFC 9162 consistency proof from an older checkpoint of the log to the bag's own, one base64 hash a line. The
//! gateway writes them with [`proof_file`]; both kinds are checked by [`proves`], so a witnessed checkpoint and a
//! timestamped one are shown to be prefixes of the bag's log by the same code.

use custodia_ledger::merkle::{Hash, verify_consistency};

/// The most hashes a consistency proof needs: a tree of 2^63 entries needs no more.
const MAX_PROOF_HASHES: usize = 63;

/// The file of a consistency proof: one base64 hash a line.
pub fn proof_file(proof: &[Hash]) -> Vec<u8> {
    proof.iter().map(|hash| format!("{}\n", hash.to_base64())).collect::<String>().into_bytes()
}

/// The hashes of a consistency-proof file, if it is one: at most 63 lines, each a base64 hash, each ended by LF
/// (not CRLF: the browser's verifier and the by-hand step read it so too).
fn parse(bytes: &[u8]) -> Option<Vec<Hash>> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() {
        return Some(Vec::new());
    }
    let hashes: Vec<Hash> = text.strip_suffix('\n')?.split('\n').map(Hash::from_base64).collect::<Option<_>>()?;
    (hashes.len() <= MAX_PROOF_HASHES).then_some(hashes)
}

/// Whether `file` proves that the log of size `m` and root `root_m` is a prefix of the log of size `n` and root
/// `root_n` (the same log, with entries only added). Equal sizes need an empty proof and equal roots.
pub(crate) fn proves(file: &[u8], (m, root_m): (u64, &Hash), (n, root_n): (u64, &Hash)) -> bool {
    m <= n
        && parse(file).is_some_and(|proof| {
            m == n && proof.is_empty() && root_m == root_n || verify_consistency(m, n, &proof, root_m, root_n).is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_one_base64_hash_a_line_each_ended_by_lf() {
        let hash = Hash([1; 32]).to_base64();
        assert_eq!(parse(format!("{hash}\n{hash}\n").as_bytes()).map(|hashes| hashes.len()), Some(2));
        assert_eq!(parse(b"").map(|hashes| hashes.len()), Some(0));
        for bad in [format!("{hash}\r\n"), format!("{hash}\n\n"), format!("{hash} \n"), hash.clone()] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn garbage_proves_nothing_and_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let root = Hash([7; 32]);
            proptest::prop_assert!(!proves(&bytes, (3, &root), (9, &Hash([8; 32]))));
        }
    }

    #[test]
    fn a_file_reads_back_as_the_proof_it_holds() {
        let hashes = vec![Hash([1; 32]), Hash([2; 32])];
        let file = proof_file(&hashes);
        assert_eq!(parse(&file), Some(hashes));
        assert_eq!(parse(b""), Some(vec![]));
        assert_eq!(parse(&file[..file.len() - 1]), None, "the last line must end");
    }
}
