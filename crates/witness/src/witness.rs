//! The witness's decision on one add-checkpoint request (c2sp.org/tlog-witness v1.0.0), from the logs it witnesses
//! and the last checkpoint it cosigned of each.
//!
//! The order of checks is the spec's: an unknown log is 404, a checkpoint its log did not sign is 403, an old size
//! beyond the new one is 400, an old size that is not the witness's is 409 (with the witness's size, so the log can
//! catch up), and a proof that does not hold, or two roots for one size, is 422. Only [`Decision::Cosign`] changes
//! anything, and the caller must persist its checkpoint with a compare-and-swap on the old size before it answers.

use custodia_ledger::merkle::{ProofError, empty_root, verify_consistency};
use custodia_ledger::{CheckpointError, Hash, LogVerifier, SignedCheckpoint};

use crate::request::AddCheckpoint;

/// What the witness last cosigned of one log. A log it has never seen is at size 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub size: u64,
    pub root: Hash,
}

impl Known {
    /// The state of a configured log whose first checkpoint has not come yet.
    pub fn unseen() -> Self {
        Self { size: 0, root: empty_root() }
    }
}

/// Why a request is refused, with the HTTP status the spec gives it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("this witness does not witness the log {origin:?}")]
    UnknownLog { origin: String },
    #[error("the checkpoint is not signed by the log's key: {0}")]
    NotSignedByLog(#[source] CheckpointError),
    #[error("the checkpoint is malformed: {0}")]
    MalformedCheckpoint(#[source] CheckpointError),
    #[error("the old size {old} is larger than the checkpoint's size {size}")]
    OldSizeTooLarge { old: u64, size: u64 },
    #[error("the checkpoint has extension lines; this witness cosigns only checkpoints without them")]
    ExtensionLines,
    #[error("a checkpoint of size 0 must have the empty tree's root")]
    EmptyTreeRoot,
    #[error("a consistency proof from size 0 must be empty")]
    ProofFromEmpty,
    #[error("the checkpoint's root differs from the root this witness cosigned for the same size")]
    RootConflict,
    #[error("the consistency proof does not hold: {0}")]
    Inconsistent(#[source] ProofError),
}

impl Refusal {
    /// A stable name for this kind of refusal, for counters and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownLog { .. } => "unknown-log",
            Self::NotSignedByLog(_) => "not-signed-by-log",
            Self::MalformedCheckpoint(_) => "malformed-checkpoint",
            Self::OldSizeTooLarge { .. } => "old-size-too-large",
            Self::ExtensionLines => "extension-lines",
            Self::EmptyTreeRoot => "empty-tree-root",
            Self::ProofFromEmpty => "proof-from-empty",
            Self::RootConflict => "root-conflict",
            Self::Inconsistent(_) => "inconsistent",
        }
    }

    /// Whether this refusal is evidence that the log showed two histories: two roots, both signed by the log, for
    /// one tree size. A proof that does not hold is not such evidence: proofs are unsigned, and anyone can send a
    /// genuine checkpoint with a wrong one.
    pub fn is_split_view(&self) -> bool {
        matches!(self, Self::RootConflict)
    }

    /// The HTTP status code for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownLog { .. } => 404,
            Self::NotSignedByLog(_) => 403,
            Self::MalformedCheckpoint(_) | Self::OldSizeTooLarge { .. } => 400,
            Self::ExtensionLines
            | Self::EmptyTreeRoot
            | Self::ProofFromEmpty
            | Self::RootConflict
            | Self::Inconsistent(_) => 422,
        }
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision {
    /// Persist `checkpoint` as the log's latest, if and only if the stored size is still `old_size`, then answer
    /// with a cosignature on it.
    Cosign {
        old_size: u64,
        checkpoint: SignedCheckpoint,
    },
    /// 409: the witness knows another size of this log (`text/x.tlog.size`).
    Conflict {
        known_size: u64,
    },
    Refuse(Refusal),
}

/// The checkpoint as its log signed it, with every other signature line dropped: what a witness keeps and shows
/// again must not carry lines a stranger appended (they would be republished under the witness's name).
pub fn with_only_log_signatures(checkpoint: &SignedCheckpoint, log: &LogVerifier) -> Vec<u8> {
    let note = checkpoint.note();
    let split = note.windows(2).rposition(|pair| pair == b"\n\n").map_or(note.len(), |at| at + 1);
    let mut kept = note[..split].to_vec();
    kept.push(b'\n');
    for line in note[(split + 1).min(note.len())..].split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
        if signed_note::Signature::from_bytes(line)
            .is_ok_and(|signature| signature.name() == log.name() && signature.id() == log.key_id())
        {
            kept.extend_from_slice(line);
            kept.push(b'\n');
        }
    }
    kept
}

/// The origin a signed checkpoint claims, read before anything is checked, to find the log's keys and state.
pub fn claimed_origin(note: &[u8]) -> Option<&str> {
    let end = note.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(&note[..end]).ok().filter(|origin| !origin.is_empty())
}

/// Decides on `request`, given the keys of the log it names (`None`: not a log this witness witnesses) and the
/// witness's latest checkpoint of it.
pub fn decide(log_keys: Option<&[LogVerifier]>, known: &Known, request: &AddCheckpoint) -> Decision {
    let origin = claimed_origin(&request.checkpoint).unwrap_or_default();
    let Some(log_keys) = log_keys else {
        return Decision::Refuse(Refusal::UnknownLog { origin: origin.to_owned() });
    };
    let checkpoint = match SignedCheckpoint::open(&request.checkpoint, log_keys) {
        Ok(checkpoint) => checkpoint,
        Err(err @ (CheckpointError::MalformedBody(_) | CheckpointError::MalformedNote)) => {
            return Decision::Refuse(Refusal::MalformedCheckpoint(err));
        }
        Err(err) => return Decision::Refuse(Refusal::NotSignedByLog(err)),
    };
    let body = &checkpoint.checkpoint;
    if request.old_size > body.size {
        return Decision::Refuse(Refusal::OldSizeTooLarge { old: request.old_size, size: body.size });
    }
    if request.old_size != known.size {
        return Decision::Conflict { known_size: known.size };
    }
    if !body.extensions.is_empty() {
        return Decision::Refuse(Refusal::ExtensionLines);
    }
    if body.size == 0 && body.root != empty_root() {
        return Decision::Refuse(Refusal::EmptyTreeRoot);
    }
    if request.old_size == 0 {
        if !request.proof.is_empty() {
            return Decision::Refuse(Refusal::ProofFromEmpty);
        }
    } else if request.old_size == body.size && body.root != known.root {
        return Decision::Refuse(Refusal::RootConflict);
    } else if let Err(err) = verify_consistency(request.old_size, body.size, &request.proof, &known.root, &body.root) {
        return Decision::Refuse(Refusal::Inconsistent(err));
    }
    Decision::Cosign { old_size: request.old_size, checkpoint }
}

#[cfg(test)]
mod tests {
    use custodia_ledger::merkle::{CompactRange, leaf_hash};
    use custodia_ledger::{Checkpoint, LogSigner};

    use super::*;

    /// A small in-memory log: its leaves, and proofs computed from them the slow, obvious way.
    struct TestLog {
        signer: LogSigner,
        leaves: Vec<Hash>,
    }

    impl TestLog {
        fn new() -> Self {
            Self { signer: LogSigner::generate("example.test/log").unwrap(), leaves: Vec::new() }
        }

        fn grow(&mut self, by: usize, salt: u8) {
            for _ in 0..by {
                let n = self.leaves.len();
                self.leaves.push(leaf_hash(&[salt, n as u8, (n >> 8) as u8]));
            }
        }

        fn root(leaves: &[Hash]) -> Hash {
            let mut range = CompactRange::from_parts(0, Vec::new()).unwrap();
            for leaf in leaves {
                range.append(*leaf, |_, _| {});
            }
            range.root()
        }

        /// RFC 9162 section 2.1.4.1 SUBPROOF.
        fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
            let n = leaves.len();
            if m == n {
                return if whole { Vec::new() } else { vec![Self::root(leaves)] };
            }
            // The largest power of two smaller than n.
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            if m <= k {
                let mut proof = Self::subproof(m, &leaves[..k], whole);
                proof.push(Self::root(&leaves[k..]));
                proof
            } else {
                let mut proof = Self::subproof(m - k, &leaves[k..], false);
                proof.push(Self::root(&leaves[..k]));
                proof
            }
        }

        fn checkpoint(&self, size: usize) -> SignedCheckpoint {
            let root = Self::root(&self.leaves[..size]);
            self.signer.sign(&Checkpoint::new("example.test/log", size as u64, root)).unwrap()
        }

        fn request(&self, old: usize, size: usize) -> AddCheckpoint {
            let proof =
                if old == 0 || old == size { Vec::new() } else { Self::subproof(old, &self.leaves[..size], true) };
            AddCheckpoint { old_size: old as u64, proof, checkpoint: self.checkpoint(size).note().to_vec() }
        }

        fn known(&self, size: usize) -> Known {
            Known { size: size as u64, root: Self::root(&self.leaves[..size]) }
        }
    }

    fn cosigned(decision: Decision) -> SignedCheckpoint {
        match decision {
            Decision::Cosign { checkpoint, .. } => checkpoint,
            other => panic!("expected a cosignature, got {other:?}"),
        }
    }

    fn refusal(decision: Decision) -> Refusal {
        match decision {
            Decision::Refuse(refusal) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_growing_log_is_cosigned_at_every_step() {
        let mut log = TestLog::new();
        let keys = [log.signer.verifier()];
        let mut known = Known::unseen();
        for (step, grow) in [1usize, 2, 5, 8, 1, 19, 64, 3].into_iter().enumerate() {
            let old = log.leaves.len();
            log.grow(grow, step as u8);
            let checkpoint = cosigned(decide(Some(&keys), &known, &log.request(old, log.leaves.len())));
            known = Known { size: checkpoint.checkpoint.size, root: checkpoint.checkpoint.root };
            assert_eq!(known, log.known(log.leaves.len()));
        }
        // The same checkpoint again is cosigned again (a fresh timestamp), with no proof.
        cosigned(decide(Some(&keys), &known, &log.request(log.leaves.len(), log.leaves.len())));
    }

    #[test]
    fn a_fork_is_refused_and_a_stale_old_size_is_told_the_known_size() {
        let mut log = TestLog::new();
        log.grow(10, 0);
        let keys = [log.signer.verifier()];
        let known = log.known(10);

        // The same size with another history: two roots for one size.
        let mut fork =
            TestLog { signer: LogSigner::from_skey(log.signer.expose_secret()).unwrap(), leaves: Vec::new() };
        fork.grow(10, 9);
        assert!(matches!(refusal(decide(Some(&keys), &known, &fork.request(10, 10))), Refusal::RootConflict));
        // A longer fork with a proof from its own history.
        fork.grow(5, 9);
        let forked = fork.request(10, 15);
        assert!(matches!(refusal(decide(Some(&keys), &known, &forked)), Refusal::Inconsistent(_)));
        assert_eq!(refusal(decide(Some(&keys), &known, &forked)).status(), 422);

        // A log that believes the witness is elsewhere is told where it is.
        log.grow(5, 0);
        assert!(matches!(decide(Some(&keys), &known, &log.request(4, 15)), Decision::Conflict { known_size: 10 }));
        // A rollback below the witness's size is a conflict too; an old size beyond the checkpoint is a 400.
        assert!(matches!(decide(Some(&keys), &known, &log.request(3, 5)), Decision::Conflict { known_size: 10 }));
        let mut backwards = log.request(10, 15);
        backwards.old_size = 16;
        assert_eq!(refusal(decide(Some(&keys), &known, &backwards)).status(), 400);
    }

    #[test]
    fn only_the_logs_own_signature_is_kept() {
        let mut log = TestLog::new();
        log.grow(2, 0);
        let keys = [log.signer.verifier()];
        let mut request = log.request(0, 2);
        let genuine = request.checkpoint.clone();
        let stranger = LogSigner::generate("evil.example/revoked").unwrap();
        let planted = stranger.sign(&Checkpoint::new("evil.example/revoked", 0, empty_root())).unwrap();
        let planted_line =
            String::from_utf8(planted.note().to_vec()).unwrap().rsplit_once("\n\n").unwrap().1.to_owned();
        request.checkpoint.extend_from_slice(planted_line.as_bytes());
        let checkpoint = cosigned(decide(Some(&keys), &Known::unseen(), &request));
        assert_ne!(checkpoint.note(), &genuine[..]);
        assert_eq!(with_only_log_signatures(&checkpoint, &keys[0]), genuine);
    }

    #[test]
    fn signatures_origins_and_shapes_are_checked() {
        let mut log = TestLog::new();
        log.grow(3, 0);
        let keys = [log.signer.verifier()];
        let stranger = LogSigner::generate("example.test/log").unwrap();
        let unknown = refusal(decide(None, &Known::unseen(), &log.request(0, 3)));
        assert_eq!(unknown.status(), 404);
        assert!(matches!(&unknown, Refusal::UnknownLog { origin } if origin == "example.test/log"), "{unknown:?}");
        assert_eq!(refusal(decide(Some(&[stranger.verifier()]), &Known::unseen(), &log.request(0, 3))).status(), 403);

        let mut forged = log.request(0, 3);
        let text = String::from_utf8(forged.checkpoint.clone()).unwrap();
        forged.checkpoint = text.replacen("\n3\n", "\n4\n", 1).into_bytes();
        let forged = refusal(decide(Some(&keys), &Known::unseen(), &forged));
        assert_eq!(forged.status(), 403);
        assert!(matches!(forged, Refusal::NotSignedByLog(CheckpointError::BadSignature { .. })), "{forged:?}");

        let mut with_proof = log.request(0, 3);
        with_proof.proof.push(Hash([0; 32]));
        assert!(matches!(refusal(decide(Some(&keys), &Known::unseen(), &with_proof)), Refusal::ProofFromEmpty));

        let mut extended = Checkpoint::new("example.test/log", 3, TestLog::root(&log.leaves));
        extended.extensions.push("an extension".into());
        let request = AddCheckpoint {
            old_size: 0,
            proof: Vec::new(),
            checkpoint: log.signer.sign(&extended).unwrap().note().to_vec(),
        };
        assert!(matches!(refusal(decide(Some(&keys), &Known::unseen(), &request)), Refusal::ExtensionLines));

        let bad_empty = log.signer.sign(&Checkpoint::new("example.test/log", 0, Hash([1; 32]))).unwrap();
        let request = AddCheckpoint { old_size: 0, proof: Vec::new(), checkpoint: bad_empty.note().to_vec() };
        assert!(matches!(refusal(decide(Some(&keys), &Known::unseen(), &request)), Refusal::EmptyTreeRoot));

        let garbage =
            AddCheckpoint { old_size: 0, proof: Vec::new(), checkpoint: b"example.test/log\nnot a note".to_vec() };
        assert_eq!(refusal(decide(Some(&keys), &Known::unseen(), &garbage)).status(), 400);
    }
}
