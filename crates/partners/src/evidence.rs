//! The evidences of a transfer between gateways: e-CODEX's ladder, in its names and order, each a canonical JSON
//! document (RFC 8785) with the fields of ETSI EN 319 522-1 (event, time, sender, recipient, the transfer, the
//! payload's digest and its algorithm, the digest of the evidence before it), signed with Ed25519 by the gateway
//! that issues it.
//!
//! The ladder: `SubmissionAcceptance` or `SubmissionRejection` (the sending gateway took the member's submission
//! in, or refused it), `RelayAcceptance` or `RelayFailure` (the receiving gateway received the payload and verified
//! it against the provider's pinned keys, or could not), `Delivery` or `NonDelivery` (it is under the receiving
//! gateway's custody, or could not be put there in time), `Retrieval` or `NonRetrieval` (a member there retrieved
//! it, or not in time). Each step follows a positive one; a negative one ends the ladder. The sending gateway
//! issues the first, the receiving gateway the others, except that the sending gateway issues `RelayFailure` or
//! `NonDelivery` itself when the receiving gateway did not answer in time (e-CODEX's connector timeouts). Each names the digest of the one before it, so that none
//! can be dropped or reordered without the chain breaking.
//!
//! An evidence names no person: partner gateways by their registry names, the transfer by its random id, a
//! negative one's reason by a code from a fixed list. What enters a public log about it is its digest.

use custodia_core::{CanonicalError, Sha256};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The `type` of every evidence document.
pub const EVIDENCE_TYPE: &str = "custodia.evidence/v1";
/// The digest algorithm of the payload, as ETSI EN 319 522 names it in the evidence.
pub const DIGEST_ALGORITHM: &str = "sha-256";

/// One rung of the ladder, positive or negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvidenceEvent {
    SubmissionAcceptance,
    SubmissionRejection,
    RelayAcceptance,
    RelayFailure,
    Delivery,
    NonDelivery,
    Retrieval,
    NonRetrieval,
}

impl EvidenceEvent {
    /// The rung: 1 submission, 2 relay, 3 delivery, 4 retrieval.
    pub fn rung(self) -> u8 {
        match self {
            Self::SubmissionAcceptance | Self::SubmissionRejection => 1,
            Self::RelayAcceptance | Self::RelayFailure => 2,
            Self::Delivery | Self::NonDelivery => 3,
            Self::Retrieval | Self::NonRetrieval => 4,
        }
    }

    /// Its name in e-CODEX's ladder, as the evidence spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::SubmissionAcceptance => "SubmissionAcceptance",
            Self::SubmissionRejection => "SubmissionRejection",
            Self::RelayAcceptance => "RelayAcceptance",
            Self::RelayFailure => "RelayFailure",
            Self::Delivery => "Delivery",
            Self::NonDelivery => "NonDelivery",
            Self::Retrieval => "Retrieval",
            Self::NonRetrieval => "NonRetrieval",
        }
    }

    /// Whether the step succeeded (the ladder may go on).
    pub fn is_positive(self) -> bool {
        matches!(self, Self::SubmissionAcceptance | Self::RelayAcceptance | Self::Delivery | Self::Retrieval)
    }

    /// Whether the sending gateway issues it (the first rung); the receiving gateway issues the rest.
    pub fn issued_by_sender(self) -> bool {
        self.rung() == 1
    }
}

/// Why a negative evidence was issued: a code, never text someone typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeReason {
    /// The payload did not match its digest, or its manifest, records or checkpoint did not verify.
    PayloadInvalid,
    /// The request was not signed by the partner it claimed to come from.
    NotAuthenticated,
    /// The provider's use policy forbids it (an onward transfer without consent, an expired permission).
    PolicyRefused,
    /// The step did not happen within its configured time.
    TimedOut,
    /// The receiving gateway could not store it.
    StorageFailed,
}

/// One evidence, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    #[serde(rename = "type")]
    pub kind: String,
    pub event: EvidenceEvent,
    /// When the event happened, RFC 3339 in UTC.
    pub time: String,
    /// The gateway that issues this evidence, by its registry name.
    pub issuer: String,
    /// The sending and receiving gateways, by their registry names.
    pub sender: String,
    pub recipient: String,
    /// The transfer's id, random, the same on every rung.
    pub transfer: String,
    pub payload_digest: Sha256,
    pub digest_algorithm: String,
    /// The SHA-256 of the canonical bytes of the evidence before this one; none on the first rung.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Sha256>,
    /// Why, on a negative rung.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<NegativeReason>,
}

impl Evidence {
    /// Whether its issuer is one that may issue it: the sending gateway the first rung, the receiving gateway the
    /// others; and the sending gateway a relay or delivery rung that timed out (`RelayFailure` or `NonDelivery`
    /// with [`NegativeReason::TimedOut`]), as e-CODEX's sending connector does when the other side stays silent.
    pub fn issued_by_its_issuer(&self) -> bool {
        let by_sender = self.issuer == self.sender;
        if self.event.issued_by_sender() {
            return by_sender;
        }
        let sender_timed_out = by_sender
            && self.reason == Some(NegativeReason::TimedOut)
            && matches!(self.event, EvidenceEvent::RelayFailure | EvidenceEvent::NonDelivery);
        self.issuer == self.recipient || sender_timed_out
    }
}

/// Why an evidence, or a ladder of them, is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    #[error("evidence type {0:?} is not {EVIDENCE_TYPE:?}")]
    WrongType(String),
    #[error("the evidence is not a valid canonical document")]
    Encoding(#[from] CanonicalError),
    #[error("the evidence's signature does not verify with the key of {0}")]
    BadSignature(String),
    #[error("rung {rung} of the ladder: {problem}")]
    Ladder { rung: usize, problem: String },
}

impl Evidence {
    /// Signs its canonical bytes as `issuer`'s gateway.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedEvidence, EvidenceError> {
        if self.kind != EVIDENCE_TYPE {
            return Err(EvidenceError::WrongType(self.kind.clone()));
        }
        let bytes = custodia_core::to_canonical_vec(self)?;
        let signature = key.sign(&bytes).to_bytes();
        Ok(SignedEvidence { evidence: self.clone(), bytes, signature })
    }
}

/// An evidence with its canonical bytes and its issuer's signature over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEvidence {
    evidence: Evidence,
    bytes: Vec<u8>,
    signature: [u8; 64],
}

impl SignedEvidence {
    /// Checks `bytes` (which must be canonical) against `signature` with `key`, the issuer's pinned key, and
    /// parses them.
    pub fn verify(bytes: &[u8], signature: [u8; 64], key: &VerifyingKey) -> Result<Self, EvidenceError> {
        let evidence: Evidence = custodia_core::from_canonical_slice(bytes)?;
        if evidence.kind != EVIDENCE_TYPE {
            return Err(EvidenceError::WrongType(evidence.kind));
        }
        if key.verify_strict(bytes, &ed25519_dalek::Signature::from_bytes(&signature)).is_err() {
            return Err(EvidenceError::BadSignature(evidence.issuer));
        }
        Ok(Self { evidence, bytes: bytes.to_vec(), signature })
    }

    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// Its canonical bytes, as signed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn signature(&self) -> [u8; 64] {
        self.signature
    }

    /// The SHA-256 of its canonical bytes: what the next rung names, and what a log records.
    pub fn sha256(&self) -> Sha256 {
        Sha256::of(&self.bytes)
    }
}

/// Checks that `ladder` is one transfer's evidences in order: rung after rung, each after a positive one, each
/// naming the one before, all of one transfer, payload, sender and recipient, each issued by the gateway whose
/// rung it is. Signatures were checked when each was verified ([`SignedEvidence::verify`]).
pub fn check_ladder(ladder: &[SignedEvidence]) -> Result<(), EvidenceError> {
    let problem = |rung: usize, problem: String| EvidenceError::Ladder { rung: rung + 1, problem };
    let Some(first) = ladder.first() else { return Ok(()) };
    let first = first.evidence();
    let mut previous: Option<&SignedEvidence> = None;
    for (index, signed) in ladder.iter().enumerate() {
        let evidence = signed.evidence();
        if usize::from(evidence.event.rung()) != index + 1 {
            return Err(problem(index, format!("{:?} is not rung {}", evidence.event, index + 1)));
        }
        if let Some(before) = previous
            && !before.evidence().event.is_positive()
        {
            return Err(problem(index, format!("it follows {:?}, which ends the ladder", before.evidence().event)));
        }
        if evidence.previous != previous.map(SignedEvidence::sha256) {
            return Err(problem(index, "it does not name the evidence before it".into()));
        }
        let same = evidence.transfer == first.transfer
            && evidence.payload_digest == first.payload_digest
            && evidence.digest_algorithm == DIGEST_ALGORITHM
            && evidence.sender == first.sender
            && evidence.recipient == first.recipient;
        if !same {
            return Err(problem(
                index,
                "its transfer, payload, sender or recipient differs from the first rung's".into(),
            ));
        }
        if !evidence.issued_by_its_issuer() {
            return Err(problem(index, format!("{:?} is not {}'s to issue", evidence.event, evidence.issuer)));
        }
        if evidence.event.is_positive() == evidence.reason.is_some() {
            return Err(problem(index, "a reason is given on negative rungs only, and on each of them".into()));
        }
        previous = Some(signed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(event: EvidenceEvent, previous: Option<&SignedEvidence>) -> Evidence {
        Evidence {
            kind: EVIDENCE_TYPE.into(),
            event,
            time: "2026-12-04T15:00:00Z".into(),
            issuer: if event.issued_by_sender() { "tn-tunis" } else { "it-catania" }.into(),
            sender: "tn-tunis".into(),
            recipient: "it-catania".into(),
            transfer: "xfer-5f2c9a".into(),
            payload_digest: Sha256::of(b"payload"),
            digest_algorithm: DIGEST_ALGORITHM.into(),
            previous: previous.map(SignedEvidence::sha256),
            reason: (!event.is_positive()).then_some(NegativeReason::TimedOut),
        }
    }

    fn keys() -> (SigningKey, SigningKey) {
        (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]))
    }

    fn ladder(events: &[EvidenceEvent]) -> Vec<SignedEvidence> {
        let (sender, recipient) = keys();
        let mut signed: Vec<SignedEvidence> = Vec::new();
        for event in events {
            let key = if event.issued_by_sender() { &sender } else { &recipient };
            let next = rung(*event, signed.last()).sign(key).expect("signed");
            signed.push(next);
        }
        signed
    }

    #[test]
    fn a_whole_ladder_signs_verifies_and_chains() {
        use EvidenceEvent::*;
        let signed = ladder(&[SubmissionAcceptance, RelayAcceptance, Delivery, Retrieval]);
        check_ladder(&signed).expect("a whole ladder");
        let (sender, recipient) = keys();
        let first = &signed[0];
        let verified = SignedEvidence::verify(first.bytes(), first.signature(), &sender.verifying_key()).expect("ok");
        assert_eq!(verified, *first);
        assert!(matches!(
            SignedEvidence::verify(first.bytes(), first.signature(), &recipient.verifying_key()),
            Err(EvidenceError::BadSignature(_))
        ));
        let text = String::from_utf8(first.bytes().to_vec()).expect("UTF-8");
        assert!(
            text.starts_with(r#"{"digest_algorithm":"sha-256","event":"SubmissionAcceptance","issuer":"tn-tunis""#)
        );
        // Re-spaced, the same document is not canonical and is refused before its signature is looked at.
        let respaced = text.replacen(',', ", ", 1);
        assert!(matches!(
            SignedEvidence::verify(respaced.as_bytes(), first.signature(), &sender.verifying_key()),
            Err(EvidenceError::Encoding(_))
        ));
        check_ladder(&ladder(&[SubmissionAcceptance, RelayAcceptance, NonDelivery])).expect("a negative ends it");
        check_ladder(&ladder(&[SubmissionRejection])).expect("refused at once");
        // The sending gateway closes a ladder the other side left open: a relay or delivery that timed out.
        let whole = ladder(&[SubmissionAcceptance, RelayAcceptance]);
        let mut timed_out = rung(NonDelivery, whole.last());
        timed_out.issuer = "tn-tunis".into();
        let (sender, _) = keys();
        check_ladder(&[whole[0].clone(), whole[1].clone(), timed_out.sign(&sender).expect("signed")])
            .expect("the sender's timeout");
    }

    #[test]
    fn a_ladder_with_a_rung_dropped_reordered_or_misissued_is_refused() {
        use EvidenceEvent::*;
        let whole = ladder(&[SubmissionAcceptance, RelayAcceptance, Delivery, Retrieval]);
        let refused = |ladder: &[SignedEvidence]| matches!(check_ladder(ladder), Err(EvidenceError::Ladder { .. }));
        assert!(refused(&[whole[0].clone(), whole[2].clone()]), "a rung dropped");
        assert!(refused(&[whole[1].clone(), whole[0].clone()]), "reordered");
        assert!(refused(&ladder(&[SubmissionAcceptance, RelayFailure, Delivery])), "a rung after a negative one");
        let (sender, recipient) = keys();
        let mut stray = rung(RelayAcceptance, Some(&whole[0]));
        stray.transfer = "xfer-other".into();
        assert!(refused(&[whole[0].clone(), stray.sign(&recipient).expect("signed")]), "another transfer");
        let mut by_sender = rung(RelayAcceptance, Some(&whole[0]));
        by_sender.issuer = "tn-tunis".into();
        assert!(refused(&[whole[0].clone(), by_sender.sign(&sender).expect("signed")]), "the wrong issuer");
        let mut unchained = rung(RelayAcceptance, None);
        unchained.previous = Some(Sha256::of(b"another evidence"));
        assert!(refused(&[whole[0].clone(), unchained.sign(&recipient).expect("signed")]), "not chained");
        let mut not_a_timeout = rung(RelayFailure, Some(&whole[0]));
        not_a_timeout.issuer = "tn-tunis".into();
        not_a_timeout.reason = Some(NegativeReason::PayloadInvalid);
        assert!(refused(&[whole[0].clone(), not_a_timeout.sign(&sender).expect("signed")]), "the sender's verdict");
        let mut no_reason = rung(RelayFailure, Some(&whole[0]));
        no_reason.reason = None;
        assert!(refused(&[whole[0].clone(), no_reason.sign(&recipient).expect("signed")]), "a negative without reason");
    }
}
