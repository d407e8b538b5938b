//! Custody records: the leaves of the custody ledger.
//!
//! A record is a small, versioned, RFC 8785 canonical JSON document. It says who did what to which artefact of
//! which case, and when. An artefact's own bytes never enter a record, nor their SHA-256 or size in clear: the
//! registration commits to them through the signed manifest's digest (the manifest carries a random nonce), and
//! later records name the artefact by its opaque id. Because the log is public
//! forever, a record holds a closed vocabulary only: event types, codes, times, opaque identifiers and digests.
//! Everything a person typed or chose (a purpose, a site, an outcome, a policy change, a role, a hearing's detail)
//! and the case itself appear only as salted [`Commitment`]s, whose [`Openings`] stay in the access-controlled
//! catalog and travel in court bundles.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    ActorId, ArtefactId, CanonicalError, Commitment, DenyReason, HearingId, Label, ManifestSignature, OpeningError,
    Openings, Sha256,
};

/// The record format version this build writes and reads. Version 1 carried free text and case ids in clear;
/// version 2 carries them only as commitments.
pub const RECORD_VERSION: u32 = 2;

/// A ledger entry is length-prefixed with a big-endian u16 in an entry bundle (c2sp.org/tlog-tiles).
pub const MAX_RECORD_LEN: usize = u16::MAX as usize;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("custody record is {len} bytes; the most a ledger entry can hold is {MAX_RECORD_LEN}")]
    TooLarge { len: usize },
    #[error("custody record version {found} is not supported (this build reads version {RECORD_VERSION})")]
    UnsupportedVersion { found: u32 },
    #[error("custody record is not a valid canonical document: {0}")]
    Encoding(#[from] CanonicalError),
}

/// One custody record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustodyRecord {
    /// Format version; see [`RECORD_VERSION`].
    pub v: u32,
    /// The case's opaque reference: a commitment to the case id under a salt of this record's own, so that nobody
    /// who knows a case by name can find or confirm its records, nor tell which records are about one case.
    pub case: Commitment,
    pub actor: ActorId,
    pub at: Timestamp,
    /// The stated purpose, committed.
    pub purpose: Commitment,
    pub event: CustodyEvent,
    /// The ledger index of the previous record about the same artefact; absent on an artefact's first record.
    /// Chaining an artefact's records makes a history with a record left out, or put out of order, detectable
    /// from the records alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<u64>,
    /// On an aggregated refusal: the record stands for this many identical attempts (same actor, action,
    /// artefact and code) from `since` to `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<Repeated>,
}

/// How many identical refusals one record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeated {
    pub count: u64,
    pub since: Timestamp,
}

/// How an artefact was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessKind {
    View,
    Download,
    Play,
}

/// The form an export took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// A court bundle: BagIt in tar.
    CourtBundle,
}

/// How a case's membership changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipChange {
    Added,
    RoleChanged,
    Removed,
}

/// Why an attempt was refused, as a code: never the policy's terms, never text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefusalCode {
    /// The API token does not carry the scope the action needs.
    MissingScope,
    /// The caller's role in the case does not permit the action.
    RoleForbids,
    /// Only the providing authority may do this.
    ProviderOnly,
    /// The providing authority's permission lapsed.
    PolicyExpired,
    /// The TLP marking forbids the use.
    PolicyTlp,
    /// The stated purpose is not among those permitted.
    PolicyPurpose,
    /// The recipient is not among those permitted.
    PolicyRecipient,
    /// The jurisdiction is not among those permitted.
    PolicyJurisdiction,
    /// Onward transfer is prohibited, or needs consent first.
    PolicyOnwardTransfer,
}

impl RefusalCode {
    pub const ALL: [Self; 9] = [
        Self::MissingScope,
        Self::RoleForbids,
        Self::ProviderOnly,
        Self::PolicyExpired,
        Self::PolicyTlp,
        Self::PolicyPurpose,
        Self::PolicyRecipient,
        Self::PolicyJurisdiction,
        Self::PolicyOnwardTransfer,
    ];
}

impl From<&DenyReason> for RefusalCode {
    fn from(reason: &DenyReason) -> Self {
        match reason {
            DenyReason::Expired { .. } => Self::PolicyExpired,
            DenyReason::TlpForbids { .. } => Self::PolicyTlp,
            DenyReason::PurposeNotPermitted { .. } => Self::PolicyPurpose,
            DenyReason::RecipientNotPermitted { .. } => Self::PolicyRecipient,
            DenyReason::JurisdictionNotPermitted { .. } => Self::PolicyJurisdiction,
            DenyReason::OnwardTransferProhibited | DenyReason::OnwardTransferNeedsConsent { .. } => {
                Self::PolicyOnwardTransfer
            }
        }
    }
}

/// What happened. Serialised with a `type` tag so that records read well in a court report. Each field that a
/// person typed or chose is a [`Commitment`]; [`CustodyRecord::commitments`] names them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum CustodyEvent {
    /// An artefact entered custody. The signature covers the canonical signed manifest whose SHA-256 is given.
    /// The manifest names the artefact's SHA-256 and size and carries a random nonce, so `manifest_sha256` is a
    /// salted commitment to the content: the record publishes neither the content's digest nor its size, and
    /// whoever holds a copy of the file cannot tell from the log that the gateway holds it. The manifest (the
    /// opening) stays in the catalog and travels in court bundles, where verifiers check the bytes against it.
    ArtefactRegistered { artefact: ArtefactId, manifest_sha256: Sha256, manifest_signature: ManifestSignature },
    /// An artefact was viewed, downloaded or played. `site` says from where, in words, never as an address.
    ArtefactAccessed { artefact: ArtefactId, access: AccessKind, site: Commitment },
    /// An artefact left the gateway in an export (a court bundle, say), whose own digest is given when known.
    ArtefactExported {
        artefact: ArtefactId,
        format: ExportFormat,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        export_sha256: Option<Sha256>,
    },
    /// Custody passed to another authority.
    ArtefactTransferred { artefact: ArtefactId, recipient: ActorId, jurisdiction: Commitment },
    /// A new artefact was derived from another (a redaction, a transcode, a transcript). Both are named by their
    /// opaque ids; their contents are committed in their registrations' manifests.
    DerivativeMade { artefact: ArtefactId, source: ArtefactId, operation: Commitment },
    /// Something happened in a hearing: admission, an oath, recording started, a segment sealed. `kind` is one of
    /// the hearing's closed list of event kinds; `subject` commits to the participant id it concerns (an oath's
    /// subject is the witness, an interpreter's oath the interpreter's: in clear, the kind would tell everyone which
    /// participant holds that seat); `detail` commits to the SHA-256 (hex) of the canonical detail document the
    /// hearing's journal keeps.
    HearingEvent {
        hearing: HearingId,
        kind: Label,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<Commitment>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<Commitment>,
    },
    /// The use policy on a case or an artefact changed. `policy` commits to the SHA-256 (hex) of the canonical
    /// policy document, `change` to the words saying why.
    PolicyChanged {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        artefact: Option<ArtefactId>,
        policy: Commitment,
        change: Commitment,
    },
    /// A receiver asked the providing authority to widen the use policy; `request` commits to the SHA-256 (hex)
    /// of the canonical request. Access changes only with the provider's decision, a later `PolicyChanged`.
    WiderUseRequested { artefact: ArtefactId, request: Commitment },
    /// A receiving authority reported what the artefact achieved (UN paper para 17): used at a hearing, charges
    /// brought, a conviction. The provider sees these reports.
    OutcomeReported { artefact: ArtefactId, outcome: Commitment },
    /// An attempt was refused. Refusals are part of the custody history too. The refused action is committed
    /// (its opening is the [`crate::Action`]'s spelling): which actions a member is refused says which role they
    /// hold (only a witness or a remote-site officer is refused the artefact list), so in clear it would tell
    /// who the witness is. The code stays in clear; every role can be refused by its role.
    AccessRefused {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        artefact: Option<ArtefactId>,
        action: Commitment,
        code: RefusalCode,
    },
    /// Someone's access to the case changed: an account was added, given another role, or removed. The record's
    /// actor made the change (an administrator granting themself membership is actor and member at once); the
    /// new role is committed.
    MembershipChanged {
        member: ActorId,
        change: MembershipChange,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Commitment>,
    },
    /// A whole case left the gateway in one export (a case bundle). The listing, RFC 8785 canonical JSON inside
    /// the case bundle, names every artefact bundle in the export (each unpacked in its directory) by the SHA-256 of
    /// its tag manifest, which fixes every file of it; the record commits to it by digest and count, so a case bundle with an artefact left out, added or swapped is
    /// caught. No free text: the listing itself is salted and stays in the bundle. The listing names the export's
    /// scope (the whole case, or one hearing's output); `hearing` commits to the hearing's id when it is one
    /// hearing's, so the record says which part of the case left, and the public log says only that a part did.
    CaseExported {
        listing_sha256: Sha256,
        artefacts: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hearing: Option<Commitment>,
    },
    /// A receipt of a transfer between gateways went on the record: one evidence of the e-CODEX ladder
    /// (`SubmissionAcceptance` ... `NonRetrieval`, named in `rung`), issued by this gateway or by the partner, and
    /// kept by both. `evidence` commits to the SHA-256 (hex) of the evidence's canonical bytes: the same evidence
    /// is on both gateways' logs, each under a salt of its own, so the two public logs cannot be matched by
    /// content (their times can be close). About the artefact sent, or the one received once it is under custody; about none
    /// before that.
    TransferEvidence {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        artefact: Option<ArtefactId>,
        rung: Label,
        evidence: Commitment,
    },
    /// An artefact entered custody from a partner gateway (the record after its registration): `provider` commits
    /// to the partner's name, `provenance` to the canonical document naming the provider's artefact id, its
    /// registration's ledger index, the provider's checkpoint and the transfer, all verified before it was
    /// accepted.
    ReceivedFrom { artefact: ArtefactId, provider: Commitment, provenance: Commitment },
}

impl CustodyEvent {
    /// The artefact this event is about, if it is about one.
    pub fn artefact(&self) -> Option<&ArtefactId> {
        match self {
            Self::ArtefactRegistered { artefact, .. }
            | Self::ArtefactAccessed { artefact, .. }
            | Self::ArtefactExported { artefact, .. }
            | Self::ArtefactTransferred { artefact, .. }
            | Self::DerivativeMade { artefact, .. }
            | Self::OutcomeReported { artefact, .. }
            | Self::WiderUseRequested { artefact, .. }
            | Self::ReceivedFrom { artefact, .. } => Some(artefact),
            Self::PolicyChanged { artefact, .. }
            | Self::AccessRefused { artefact, .. }
            | Self::TransferEvidence { artefact, .. } => artefact.as_ref(),
            Self::HearingEvent { .. } | Self::MembershipChanged { .. } | Self::CaseExported { .. } => None,
        }
    }

    /// The event's commitments, by field name.
    fn commitments(&self) -> Vec<(&'static str, &Commitment)> {
        match self {
            Self::ArtefactRegistered { .. } | Self::ArtefactExported { .. } => Vec::new(),
            Self::CaseExported { hearing, .. } => hearing.iter().map(|hearing| ("hearing", hearing)).collect(),
            Self::AccessRefused { action, .. } => vec![("action", action)],
            Self::ArtefactAccessed { site, .. } => vec![("site", site)],
            Self::ArtefactTransferred { jurisdiction, .. } => vec![("jurisdiction", jurisdiction)],
            Self::DerivativeMade { operation, .. } => vec![("operation", operation)],
            Self::HearingEvent { subject, detail, .. } => {
                let subject = subject.iter().map(|subject| ("subject", subject));
                subject.chain(detail.iter().map(|detail| ("detail", detail))).collect()
            }
            Self::PolicyChanged { policy, change, .. } => vec![("policy", policy), ("change", change)],
            Self::WiderUseRequested { request, .. } => vec![("request", request)],
            Self::OutcomeReported { outcome, .. } => vec![("outcome", outcome)],
            Self::MembershipChanged { role, .. } => role.iter().map(|role| ("role", role)).collect(),
            Self::TransferEvidence { evidence, .. } => vec![("evidence", evidence)],
            Self::ReceivedFrom { provider, provenance, .. } => vec![("provider", provider), ("provenance", provenance)],
        }
    }
}

impl CustodyRecord {
    pub fn new(case: Commitment, actor: ActorId, at: Timestamp, purpose: Commitment, event: CustodyEvent) -> Self {
        Self { v: RECORD_VERSION, case, actor, at, purpose, event, prior: None, repeated: None }
    }

    /// Every commitment in the record, by the field name it was made for: `case`, `purpose`, then the event's.
    pub fn commitments(&self) -> Vec<(&'static str, &Commitment)> {
        let mut all = vec![("case", &self.case), ("purpose", &self.purpose)];
        all.extend(self.event.commitments());
        all
    }

    /// Checks that `openings` open exactly this record's commitments.
    pub fn check_openings(&self, openings: &Openings) -> Result<(), OpeningError> {
        openings.check(self.commitments())
    }

    /// The exact bytes that become a ledger entry.
    pub fn to_entry(&self) -> Result<Vec<u8>, RecordError> {
        if self.v != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion { found: self.v });
        }
        let bytes = crate::to_canonical_vec(self)?;
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLarge { len: bytes.len() });
        }
        Ok(bytes)
    }

    /// Reads a ledger entry back, refusing anything that is not byte-for-byte what [`Self::to_entry`] writes.
    pub fn from_entry(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLarge { len: bytes.len() });
        }
        let record: Self = crate::from_canonical_slice(bytes)?;
        if record.v != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion { found: record.v });
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Salt;

    fn sample() -> (CustodyRecord, Openings) {
        let mut openings = Openings::default();
        let case = openings.commit("case", Salt::from_bytes([1; 32]), "case-7");
        let purpose = openings.commit("purpose", Salt::from_bytes([2; 32]), "trial preparation");
        let site = openings.commit("site", Salt::from_bytes([3; 32]), "prosecution office, web");
        let record = CustodyRecord::new(
            case,
            ActorId::new("acct-19").unwrap(),
            "2026-11-29T08:20:26.5Z".parse().unwrap(),
            purpose,
            CustodyEvent::ArtefactAccessed {
                artefact: ArtefactId::new("art-1").unwrap(),
                access: AccessKind::Download,
                site,
            },
        );
        (record, openings)
    }

    /// The sample's openings of the fields every record has, for a record with another event.
    fn case_and_purpose(sampled: &Openings) -> Openings {
        let mut openings = Openings::default();
        for field in ["case", "purpose"] {
            openings.insert(field, sampled.get(field).unwrap().clone());
        }
        openings
    }

    #[test]
    fn golden_encoding_is_stable() {
        let (record, openings) = sample();
        let entry = record.to_entry().unwrap();
        let expected = concat!(
            r#"{"actor":"acct-19","at":"2026-11-29T08:20:26.5Z","#,
            r#""case":"CASE","event":{"access":"download","#,
            r#""artefact":"art-1","site":"SITE","type":"artefact_accessed"},"purpose":"PURPOSE","v":2}"#
        )
        .replace("CASE", &record.case.to_hex())
        .replace("SITE", &openings.get("site").unwrap().commitment("site").to_hex())
        .replace("PURPOSE", &openings.get("purpose").unwrap().commitment("purpose").to_hex());
        assert_eq!(String::from_utf8(entry.clone()).unwrap(), expected);
        assert_eq!(CustodyRecord::from_entry(&entry).unwrap(), record);
        assert_eq!(record.check_openings(&openings), Ok(()));
    }

    #[test]
    fn no_typed_text_reaches_the_entry() {
        let (record, _) = sample();
        let entry = String::from_utf8(record.to_entry().unwrap()).unwrap();
        for text in ["case-7", "trial preparation", "prosecution office"] {
            assert!(!entry.contains(text), "{text} is in {entry}");
        }
    }

    #[test]
    fn a_registration_publishes_neither_the_content_digest_nor_a_guessable_manifest_digest() {
        let content = Sha256::of(b"the smuggler's video");
        let manifest = |nonce| {
            crate::Manifest::new(
                ArtefactId::new("art-1").unwrap(),
                crate::CaseId::new("case-7").unwrap(),
                Salt::from_bytes(nonce),
                content,
                20,
                Label::new("video/mp4").unwrap(),
                "2026-11-29T08:00:00Z".parse().unwrap(),
                ActorId::new("acct-3").unwrap(),
            )
        };
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let signed = manifest([1; 32]).sign(&key).unwrap();
        let (mut record, _) = sample();
        record.event = CustodyEvent::ArtefactRegistered {
            artefact: ArtefactId::new("art-1").unwrap(),
            manifest_sha256: signed.sha256(),
            manifest_signature: signed.signature(),
        };
        let entry = String::from_utf8(record.to_entry().unwrap()).unwrap();
        assert!(!entry.contains(&content.to_hex()), "{entry}");
        assert!(!entry.contains("\"size\""), "{entry}");
        // Someone who guesses every field but the nonce makes another digest and another signature.
        let guess = manifest([2; 32]).sign(&key).unwrap();
        assert!(!entry.contains(&guess.sha256().to_hex()) && !entry.contains(&guess.signature().to_string()));
        assert_eq!(CustodyRecord::from_entry(entry.as_bytes()).unwrap(), record);
    }

    #[test]
    fn refusals_are_codes_with_the_action_committed_and_repeats_are_counted() {
        let (mut record, sampled) = sample();
        let mut openings = case_and_purpose(&sampled);
        let action = openings.commit("action", Salt::from_bytes([4; 32]), crate::Action::ListArtefacts.as_str());
        record.event = CustodyEvent::AccessRefused { artefact: None, action, code: RefusalCode::RoleForbids };
        record.repeated = Some(Repeated { count: 199, since: "2026-11-29T08:20:00Z".parse().unwrap() });
        let entry = String::from_utf8(record.to_entry().unwrap()).unwrap();
        let expected = format!(r#""action":"{}","code":"role_forbids","type":"access_refused""#, action.to_hex());
        assert!(entry.contains(&expected), "{entry}");
        assert!(!entry.contains("list_artefacts"), "the refused action says the role: {entry}");
        assert_eq!(record.check_openings(&openings), Ok(()));
        assert_eq!(openings.text("action"), Some("list_artefacts"));
        assert!(entry.contains(r#""repeated":{"count":199,"since":"2026-11-29T08:20:00Z"}"#), "{entry}");
        assert_eq!(CustodyRecord::from_entry(entry.as_bytes()).unwrap(), record);
        for code in RefusalCode::ALL {
            assert!(serde_json::to_string(&code).unwrap().chars().all(|c| c.is_ascii_lowercase() || "_\"".contains(c)));
        }
    }

    #[test]
    fn a_wrong_or_missing_opening_is_named() {
        let (record, openings) = sample();
        let mut wrong = openings.clone();
        wrong.commit("site", Salt::from_bytes([3; 32]), "somewhere else");
        assert_eq!(record.check_openings(&wrong), Err(OpeningError::Mismatch { field: "site".into() }));
        let mut partial = Openings::default();
        partial.insert("case", openings.get("case").unwrap().clone());
        assert_eq!(record.check_openings(&partial), Err(OpeningError::Missing { field: "purpose".into() }));
    }

    #[test]
    fn refuses_non_canonical_unknown_old_and_future_records() {
        let entry = String::from_utf8(sample().0.to_entry().unwrap()).unwrap();
        let spaced = entry.replacen(':', ": ", 1);
        assert!(matches!(
            CustodyRecord::from_entry(spaced.as_bytes()),
            Err(RecordError::Encoding(CanonicalError::NotCanonical))
        ));
        let future = entry.replace(r#""v":2"#, r#""v":3"#);
        assert!(matches!(CustodyRecord::from_entry(future.as_bytes()), Err(RecordError::UnsupportedVersion { .. })));
        let old = entry.replace(r#""v":2"#, r#""v":1"#);
        assert!(matches!(CustodyRecord::from_entry(old.as_bytes()), Err(RecordError::UnsupportedVersion { .. })));
        let extra = entry.replace(r#""v":2"#, r#""v":2,"zz":0"#);
        assert!(CustodyRecord::from_entry(extra.as_bytes()).is_err());
        let clear = entry.replacen(&sample().0.case.to_hex(), "case-7", 1);
        assert!(CustodyRecord::from_entry(clear.as_bytes()).is_err(), "a case id in clear is not a record");
    }

    #[test]
    fn refuses_records_too_large_for_an_entry_bundle() {
        assert!(matches!(
            CustodyRecord::from_entry(&vec![b' '; MAX_RECORD_LEN + 1]),
            Err(RecordError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_hearing_event_commits_to_its_subject() {
        let (mut record, sampled) = sample();
        let mut kept = case_and_purpose(&sampled);
        let subject = kept.commit("subject", Salt::from_bytes([5; 32]), "p-0a1b2c");
        record.event = CustodyEvent::HearingEvent {
            hearing: HearingId::new("h-1").unwrap(),
            kind: Label::new("oath_taken").unwrap(),
            subject: Some(subject),
            detail: None,
        };
        let entry = String::from_utf8(record.to_entry().unwrap()).unwrap();
        assert!(!entry.contains("p-0a1b2c"), "an oath's subject in clear says who the witness is: {entry}");
        assert!(entry.contains(&format!(r#""subject":"{}""#, subject.to_hex())), "{entry}");
        assert_eq!(record.check_openings(&kept), Ok(()));
        assert_eq!(CustodyRecord::from_entry(entry.as_bytes()).unwrap(), record);
        let clear = entry.replace(&subject.to_hex(), "p-0a1b2c");
        assert!(CustodyRecord::from_entry(clear.as_bytes()).is_err(), "a subject in clear is not a record");
    }

    #[test]
    fn a_case_export_record_holds_a_digest_and_a_count_only() {
        let (mut record, _) = sample();
        record.event =
            CustodyEvent::CaseExported { listing_sha256: Sha256::of(b"listing"), artefacts: 3, hearing: None };
        let entry = String::from_utf8(record.to_entry().unwrap()).unwrap();
        assert!(entry.contains(r#""event":{"artefacts":3,"listing_sha256":""#), "{entry}");
        assert!(entry.contains(r#""type":"case_exported"}"#), "{entry}");
        assert_eq!(CustodyRecord::from_entry(entry.as_bytes()).unwrap(), record);
        assert_eq!(record.event.artefact(), None);

        // One hearing's export commits to the hearing's id, which must be opened like any other commitment.
        let mut openings = case_and_purpose(&sample().1);
        let hearing = openings.commit("hearing", Salt::from_bytes([4; 32]), "h-1");
        record.event =
            CustodyEvent::CaseExported { listing_sha256: Sha256::of(b"listing"), artefacts: 3, hearing: Some(hearing) };
        let entry = String::from_utf8(record.to_entry().unwrap()).unwrap();
        assert!(entry.contains(&format!(r#""hearing":"{}""#, hearing.to_hex())), "{entry}");
        assert!(!entry.contains("h-1"), "{entry}");
        assert_eq!(CustodyRecord::from_entry(entry.as_bytes()).unwrap(), record);
        assert_eq!(record.check_openings(&openings), Ok(()));
        assert!(record.check_openings(&case_and_purpose(&sample().1)).is_err(), "the hearing's opening is required");
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = CustodyRecord::from_entry(&bytes);
        }
    }
}
