//! Custody records: the leaves of the custody ledger.
//!
//! A record is a small, versioned, RFC 8785 canonical JSON document. It says who did what to which artefact of
//! which case, when, and for what stated purpose. An artefact's own bytes never enter a record; its SHA-256 does.
//! Because the log is public, records carry opaque identifiers only, never names, contacts or addresses.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{ActorId, ArtefactId, CanonicalError, CaseId, HearingId, Label, ManifestSignature, Sha256};

/// The record format version this build writes and reads.
pub const RECORD_VERSION: u32 = 1;

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
    pub case: CaseId,
    pub actor: ActorId,
    pub at: Timestamp,
    pub purpose: Label,
    pub event: CustodyEvent,
    /// The ledger index of the previous record about the same artefact; absent on an artefact's first record.
    /// Chaining an artefact's records makes a history with a record left out, or put out of order, detectable
    /// from the records alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<u64>,
}

/// How an artefact was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessKind {
    View,
    Download,
    Play,
}

/// What happened. Serialised with a `type` tag so that records read well in a court report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum CustodyEvent {
    /// An artefact entered custody. The signature covers the canonical manifest whose SHA-256 is given.
    ArtefactRegistered {
        artefact: ArtefactId,
        sha256: Sha256,
        size: u64,
        manifest_sha256: Sha256,
        manifest_signature: ManifestSignature,
    },
    /// An artefact was viewed, downloaded or played. `site` says from where, in words, never as an address.
    ArtefactAccessed { artefact: ArtefactId, sha256: Sha256, access: AccessKind, site: Label },
    /// An artefact left the gateway in an export (a court bundle, say), whose own digest is given when known.
    ArtefactExported {
        artefact: ArtefactId,
        sha256: Sha256,
        format: Label,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        export_sha256: Option<Sha256>,
    },
    /// Custody passed to another authority.
    ArtefactTransferred { artefact: ArtefactId, sha256: Sha256, recipient: ActorId, jurisdiction: Label },
    /// A new artefact was derived from another (a redaction, a transcode, a transcript).
    DerivativeMade { artefact: ArtefactId, sha256: Sha256, source: ArtefactId, source_sha256: Sha256, operation: Label },
    /// Something happened in a hearing: admission, an oath, recording started, a segment sealed.
    HearingEvent {
        hearing: HearingId,
        kind: Label,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<ActorId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail_sha256: Option<Sha256>,
    },
    /// The use policy on a case or an artefact changed; the canonical policy document has the given digest.
    PolicyChanged {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        artefact: Option<ArtefactId>,
        policy_sha256: Sha256,
        change: Label,
    },
    /// A receiver asked the providing authority to widen the use policy; the canonical request has the given
    /// digest. Access changes only with the provider's decision, a later `PolicyChanged`.
    WiderUseRequested { artefact: ArtefactId, request_sha256: Sha256 },
    /// A receiving authority reported what the artefact achieved (UN paper para 17): used at a hearing, charges
    /// brought, a conviction. The provider sees these reports.
    OutcomeReported { artefact: ArtefactId, outcome: Label },
    /// An attempt was refused. Refusals are part of the custody history too.
    AccessRefused {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        artefact: Option<ArtefactId>,
        action: Label,
        reason: Label,
    },
    /// A whole case left the gateway in one export (a case bundle). The listing, RFC 8785 canonical JSON inside
    /// the case bundle, names every artefact bundle in the export with the SHA-256 of that bundle's bytes; the
    /// record commits to it by digest and count, so a case bundle with an artefact left out, added or swapped is
    /// caught. No free text: the listing itself is salted and stays in the bundle.
    CaseExported { listing_sha256: Sha256, artefacts: u64 },
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
            | Self::WiderUseRequested { artefact, .. } => Some(artefact),
            Self::PolicyChanged { artefact, .. } | Self::AccessRefused { artefact, .. } => artefact.as_ref(),
            Self::HearingEvent { .. } | Self::CaseExported { .. } => None,
        }
    }
}

impl CustodyRecord {
    pub fn new(case: CaseId, actor: ActorId, at: Timestamp, purpose: Label, event: CustodyEvent) -> Self {
        Self { v: RECORD_VERSION, case, actor, at, purpose, event, prior: None }
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

    fn sample() -> CustodyRecord {
        CustodyRecord::new(
            CaseId::new("case-7").unwrap(),
            ActorId::new("acct-19").unwrap(),
            "2026-11-29T08:20:26.5Z".parse().unwrap(),
            Label::new("trial preparation").unwrap(),
            CustodyEvent::ArtefactAccessed {
                artefact: ArtefactId::new("art-1").unwrap(),
                sha256: Sha256::of(b"x"),
                access: AccessKind::Download,
                site: Label::new("prosecution office, web").unwrap(),
            },
        )
    }

    #[test]
    fn golden_encoding_is_stable() {
        let entry = sample().to_entry().unwrap();
        let expected = concat!(
            r#"{"actor":"acct-19","at":"2026-11-29T08:20:26.5Z","case":"case-7","event":{"access":"download","#,
            r#""artefact":"art-1","sha256":"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881","#,
            r#""site":"prosecution office, web","type":"artefact_accessed"},"purpose":"trial preparation","v":1}"#
        );
        assert_eq!(String::from_utf8(entry.clone()).unwrap(), expected);
        assert_eq!(CustodyRecord::from_entry(&entry).unwrap(), sample());
    }

    #[test]
    fn refuses_non_canonical_unknown_and_future_records() {
        let entry = String::from_utf8(sample().to_entry().unwrap()).unwrap();
        let spaced = entry.replacen(':', ": ", 1);
        assert!(matches!(
            CustodyRecord::from_entry(spaced.as_bytes()),
            Err(RecordError::Encoding(CanonicalError::NotCanonical))
        ));
        let future = entry.replace(r#""v":1"#, r#""v":2"#);
        assert!(matches!(CustodyRecord::from_entry(future.as_bytes()), Err(RecordError::UnsupportedVersion { .. })));
        let extra = entry.replace(r#""v":1"#, r#""v":1,"zz":0"#);
        assert!(CustodyRecord::from_entry(extra.as_bytes()).is_err());
    }

    #[test]
    fn refuses_records_too_large_for_an_entry_bundle() {
        let mut record = sample();
        record.purpose = Label::new("p".repeat(Label::MAX_LEN)).unwrap();
        assert!(record.to_entry().is_ok());
        assert!(matches!(
            CustodyRecord::from_entry(&vec![b' '; MAX_RECORD_LEN + 1]),
            Err(RecordError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_case_export_record_holds_a_digest_and_a_count_only() {
        let mut record = sample();
        record.event = CustodyEvent::CaseExported { listing_sha256: Sha256::of(b"listing"), artefacts: 3 };
        let entry = String::from_utf8(record.to_entry().unwrap()).unwrap();
        assert!(entry.contains(r#""event":{"artefacts":3,"listing_sha256":""#), "{entry}");
        assert!(entry.contains(r#""type":"case_exported"}"#), "{entry}");
        assert_eq!(CustodyRecord::from_entry(entry.as_bytes()).unwrap(), record);
        assert_eq!(record.event.artefact(), None);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = CustodyRecord::from_entry(&bytes);
        }
    }
}
