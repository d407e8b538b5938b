//! A transfer between gateways on the wire, and the checks each side makes of what the other sends, no IO.
//!
//! The sending gateway makes the artefact's court bundle and opens the transfer with an [`Offer`]: the payload's
//! size and SHA-256, the rest of the bundle (its chain: manifest, custody records with proofs, checkpoint), the
//! chunk size, its own `SubmissionAcceptance`, and the provider's use policy. It then sends the payload in chunks
//! (each request's `Content-Digest` is signed, so each chunk is checked as it arrives), resuming from the offset the
//! receiving gateway reports ([`Progress`]), and asks the receiving gateway to finish: to verify the whole bundle
//! with the provider's pinned keys and take the artefact into its custody.
//!
//! Each evidence of the ladder ([`crate::evidence`]) travels as a [`Logged`]: the signed evidence, the custody record
//! by which the gateway that sent it put it on its own log, that record's openings, and the record's inclusion
//! proof against that gateway's signed checkpoint. [`check_logged`] checks all of it against the keys pinned for
//! the partner, so that neither side can later withdraw a receipt it gave: it is on its own public log.

use base64::Engine as _;
use custodia_core::{CustodyEvent, CustodyRecord, Openings, Sha256};
use custodia_ledger::{LogVerifier, TlogProof};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::evidence::{EvidenceError, SignedEvidence};

/// The most bytes one chunk of a transfer holds.
pub const MAX_CHUNK_BYTES: u64 = 8 * 1024 * 1024;

/// The most bytes of a bundle sent between gateways (the largest artefact the receiving gateway takes, with room
/// for the bundle's records; each gateway may set less).
pub const MAX_TRANSFER_BYTES: u64 = 1 << 40;

/// A transfer's id: `xfer-` and 32 lowercase hex digits, random, made by the sending gateway.
pub fn is_transfer_id(text: &str) -> bool {
    text.strip_prefix("xfer-")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// An evidence as it travels: its canonical bytes and its issuer's signature, each in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvidence {
    pub evidence: String,
    pub signature: String,
}

impl From<&SignedEvidence> for WireEvidence {
    fn from(signed: &SignedEvidence) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        Self { evidence: b64.encode(signed.bytes()), signature: b64.encode(signed.signature()) }
    }
}

impl WireEvidence {
    /// The evidence, checked against its issuer's pinned `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<SignedEvidence, TransferError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let bytes = b64.decode(&self.evidence).map_err(|_| TransferError::Malformed("evidence is not base64"))?;
        let signature: [u8; 64] = b64
            .decode(&self.signature)
            .ok()
            .and_then(|signature| signature.try_into().ok())
            .ok_or(TransferError::Malformed("signature is not 64 bytes of base64"))?;
        Ok(SignedEvidence::verify(&bytes, signature, key)?)
    }
}

/// An evidence as the gateway that sends it keeps it on its own log: the evidence, the custody record that put it
/// there (base64 of the ledger entry), the record's openings (canonical JSON), and the record's inclusion proof
/// (c2sp.org/tlog-proof@v1, base64) against that gateway's signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logged {
    #[serde(flatten)]
    pub signed: WireEvidence,
    pub entry: String,
    pub openings: String,
    pub proof: String,
}

/// What [`check_logged`] found: the evidence, and where it is on the sending gateway's log.
#[derive(Debug, Clone)]
pub struct Proven {
    pub evidence: SignedEvidence,
    /// The ledger index of the record that holds it on the log of the gateway that sent it.
    pub index: u64,
    /// The size of that gateway's signed checkpoint the record is proved against.
    pub checkpoint_size: u64,
}

/// Checks a [`Logged`] evidence that a partner sent: its signature by `issuer_key` (the issuer's pinned request
/// key), and that it is on the log of the gateway that sent it (`log`, as pinned): the record is a
/// `transfer_evidence` record of this rung, its `evidence` commitment opens to this evidence's SHA-256, and its
/// inclusion proof verifies against a checkpoint signed by that log's key.
pub fn check_logged(logged: &Logged, issuer_key: &VerifyingKey, log: &LogVerifier) -> Result<Proven, TransferError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let evidence = logged.signed.verify(issuer_key)?;
    let entry = b64.decode(&logged.entry).map_err(|_| TransferError::Malformed("entry is not base64"))?;
    let record = CustodyRecord::from_entry(&entry).map_err(|_| TransferError::Malformed("entry is not a record"))?;
    let CustodyEvent::TransferEvidence { rung, .. } = &record.event else {
        return Err(TransferError::NotOnLog("the record is not a transfer_evidence record".into()));
    };
    if rung.as_str() != evidence.evidence().event.name() {
        return Err(TransferError::NotOnLog(format!(
            "the record is of {rung}, the evidence {}",
            evidence.evidence().event.name()
        )));
    }
    let openings =
        Openings::from_canonical(logged.openings.as_bytes()).map_err(|_| TransferError::Malformed("openings"))?;
    record.check_openings(&openings).map_err(TransferError::Openings)?;
    if openings.text(EVIDENCE_FIELD) != Some(evidence.sha256().to_hex().as_str()) {
        return Err(TransferError::NotOnLog("the record commits to another evidence".into()));
    }
    let proof = b64.decode(&logged.proof).map_err(|_| TransferError::Malformed("proof is not base64"))?;
    let proof = TlogProof::parse(&proof).map_err(|source| TransferError::Proof { what: "proof", source })?;
    let checkpoint = proof
        .verify(&entry, std::slice::from_ref(log))
        .map_err(|source| TransferError::Proof { what: "inclusion proof", source })?;
    Ok(Proven { evidence, index: proof.index, checkpoint_size: checkpoint.checkpoint.size })
}

/// The field of a `transfer_evidence` record's commitment: it opens to the evidence's SHA-256 in hex.
pub const EVIDENCE_FIELD: &str = "evidence";

/// The offer that opens a transfer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    pub transfer: String,
    /// The artefact's size and SHA-256: the payload the evidences name, and the bytes the chunks carry.
    pub size: u64,
    pub sha256: Sha256,
    /// The rest of the provider's court bundle, in base64: the tar bytes before the payload's (every other file
    /// of the bag, then the payload's header). The bundle is this, the payload, then the tar padding and
    /// end-of-archive marker; the receiving gateway verifies it whole with the provider's pinned keys.
    pub chain: String,
    /// Every chunk but the last holds this many bytes.
    pub chunk_size: u64,
    /// The sending gateway's `SubmissionAcceptance`, logged there.
    pub submission: Logged,
    /// The provider's use policy (custodia's `UsePolicy`), which the receiving gateway enforces from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<serde_json::Value>,
    /// Why it is sent (the member's stated purpose): kept by the receiving gateway, only ever as a commitment on
    /// its log.
    pub purpose: String,
}

/// Without the purpose, the policy (its purposes) or the bundle's head (its manifest and certificate name the file
/// and the purposes): what people typed.
impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer")
            .field("transfer", &self.transfer)
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .field("chunk_size", &self.chunk_size)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Offer {
    /// Checks the offer's numbers: a size within `max_size`, a chunk size within [`MAX_CHUNK_BYTES`], a well-formed
    /// id.
    pub fn check(&self, max_size: u64) -> Result<(), TransferError> {
        if !is_transfer_id(&self.transfer) {
            return Err(TransferError::Malformed("the transfer id is not xfer- and 32 hex digits"));
        }
        if self.size == 0 || self.size > max_size.min(MAX_TRANSFER_BYTES) {
            return Err(TransferError::TooLarge { size: self.size, limit: max_size.min(MAX_TRANSFER_BYTES) });
        }
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_BYTES {
            return Err(TransferError::Malformed("the chunk size is 1 byte to 8 MiB"));
        }
        Ok(())
    }

    /// The bundle's head ([`Self::chain`]) as bytes.
    pub fn chain_bytes(&self) -> Result<Vec<u8>, TransferError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.chain)
            .map_err(|_| TransferError::Malformed("the chain is not base64"))
    }

    /// The byte range chunk `number` covers, if the transfer has that chunk.
    pub fn chunk(&self, number: u64) -> Option<std::ops::Range<u64>> {
        let start = number.checked_mul(self.chunk_size)?;
        (start < self.size).then(|| start..(start + self.chunk_size).min(self.size))
    }
}

/// Where a transfer stands at the receiving gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Chunks are arriving.
    Receiving,
    /// Verified and under the receiving gateway's custody.
    Delivered,
    /// Retrieved by a member there.
    Retrieved,
    /// Ended by a negative evidence.
    Failed,
}

/// What the receiving gateway reports of a transfer: how many bytes it holds durably (`received`), how many it has
/// written (`written`, those and the ones not yet synced: the next chunk starts there), and every evidence it
/// issued or logged, in ladder order after the submission. A sender runs ahead of the durable bytes by at most
/// what the receiver syncs at once; after any failure it goes on from what the receiver then reports, which after a
/// restart is the durable bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub transfer: String,
    pub stage: Stage,
    pub received: u64,
    pub written: u64,
    pub evidences: Vec<Logged>,
}

/// Why what a partner sent about a transfer is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("a transfer of {size} bytes is over the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    #[error("the evidence is not shown on the sending gateway's log: {0}")]
    NotOnLog(String),
    #[error("the evidence is not shown on the sending gateway's log: its openings: {0}")]
    Openings(#[source] custodia_core::OpeningError),
    /// Its proof does not parse (`what`: "proof"), or does not verify against the log's pinned key ("inclusion
    /// proof").
    #[error("the evidence is not shown on the sending gateway's log: its {what}: {source}")]
    Proof { what: &'static str, source: custodia_ledger::ProofFileError },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_ids_and_chunks() {
        assert!(is_transfer_id("xfer-0123456789abcdef0123456789abcdef"));
        for bad in ["xfer-0123456789ABCDEF0123456789abcdef", "xfer-01", "file-0123456789abcdef0123456789abcdef", ""] {
            assert!(!is_transfer_id(bad), "{bad}");
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let logged = Logged {
            signed: WireEvidence { evidence: b64.encode(b"{}"), signature: b64.encode([0u8; 64]) },
            entry: String::new(),
            openings: String::new(),
            proof: String::new(),
        };
        let offer = Offer {
            transfer: "xfer-0123456789abcdef0123456789abcdef".into(),
            size: 10,
            sha256: Sha256::of(b"x"),
            chain: String::new(),
            chunk_size: 4,
            submission: logged,
            policy: None,
            purpose: "trial".into(),
        };
        offer.check(100).expect("fits");
        assert_eq!(offer.chunk(0), Some(0..4));
        assert_eq!(offer.chunk(2), Some(8..10));
        assert_eq!(offer.chunk(3), None);
        assert_eq!(offer.chunk(u64::MAX), None);
        assert!(matches!(offer.check(9), Err(TransferError::TooLarge { .. })));
        let typed = "the statement of Maria Rossi";
        let shown = format!(
            "{:?}",
            Offer {
                purpose: typed.into(),
                policy: Some(serde_json::json!({ "permitted_purposes": [typed] })),
                chain: typed.into(),
                ..offer.clone()
            }
        );
        assert!(
            !shown.contains(typed) && shown.contains("xfer-0123"),
            "the offer's Debug withholds what people typed: {shown}"
        );
        let big_chunks = Offer { chunk_size: MAX_CHUNK_BYTES + 1, ..offer };
        assert!(matches!(big_chunks.check(100), Err(TransferError::Malformed(_))));
    }
}
