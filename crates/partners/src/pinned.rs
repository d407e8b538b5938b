//! The custody log's record of the partners a gateway pins: one entry each time the registry it starts with
//! differs from the one it last pinned, so that adding, changing or removing a partner (a key, a URL) is on the
//! record, in order with everything received from or sent to them.
//!
//! RFC 8785 canonical JSON, like custody records and the log's timestamps, told apart from them by its `type`:
//! `{"at":"2026-12-04T10:00:00Z","registry":"<commitment>","type":"partners_pinned","v":1}`. The registry is a
//! salted commitment ([`custodia_core::Commitment`], field `registry`) to its canonical form
//! ([`crate::Registry::canonical`]): the public log says that the partners changed, not who they are, how many,
//! or where. The opening stays with the gateway, access-controlled like every other.

use custodia_core::Commitment;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The entry format version this build writes and reads.
pub const PINNED_ENTRY_VERSION: u32 = 1;

/// The commitment's field name, for its opening.
pub const REGISTRY_FIELD: &str = "registry";

/// Why an entry could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinnedError {
    #[error("a partners_pinned entry is not canonical JSON of the expected shape: {0}")]
    Encoding(#[from] custodia_core::CanonicalError),
    #[error("partners_pinned entry version {found} is not supported (this build reads version {PINNED_ENTRY_VERSION})")]
    UnsupportedVersion { found: u32 },
}

#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    PartnersPinned,
}

#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    v: u32,
    #[serde(rename = "type")]
    kind: Kind,
    at: Timestamp,
    registry: Commitment,
}

/// The registry a gateway pinned from `at` on.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct PartnersPinned {
    pub at: Timestamp,
    /// A commitment to [`crate::Registry::canonical`], under the field [`REGISTRY_FIELD`].
    pub registry: Commitment,
}

impl PartnersPinned {
    /// The exact bytes that become a ledger entry.
    pub fn to_entry(&self) -> Result<Vec<u8>, PinnedError> {
        let document =
            Document { v: PINNED_ENTRY_VERSION, kind: Kind::PartnersPinned, at: self.at, registry: self.registry };
        Ok(custodia_core::to_canonical_vec(&document)?)
    }

    /// Reads a ledger entry back, refusing anything that is not byte for byte what [`Self::to_entry`] writes.
    pub fn from_entry(bytes: &[u8]) -> Result<Self, PinnedError> {
        let document: Document = custodia_core::from_canonical_slice(bytes)?;
        if document.v != PINNED_ENTRY_VERSION {
            return Err(PinnedError::UnsupportedVersion { found: document.v });
        }
        Ok(Self { at: document.at, registry: document.registry })
    }
}

#[cfg(test)]
mod tests {
    use custodia_core::{Openings, Salt};

    use super::*;

    #[test]
    fn golden_encoding_round_trips_opens_to_the_registry_and_nothing_else_is_read() {
        let mut openings = Openings::default();
        let registry = openings.commit(REGISTRY_FIELD, Salt::from_bytes([5; 32]), "[]");
        let pinned = PartnersPinned { at: "2026-12-04T10:00:00Z".parse().unwrap(), registry };
        let entry = pinned.to_entry().unwrap();
        let text = String::from_utf8(entry.clone()).unwrap();
        assert_eq!(
            text,
            format!(r#"{{"at":"2026-12-04T10:00:00Z","registry":"{registry}","type":"partners_pinned","v":1}}"#)
        );
        assert_eq!(PartnersPinned::from_entry(&entry).unwrap(), pinned);
        assert!(openings.check([(REGISTRY_FIELD, &pinned.registry)]).is_ok());
        for refused in [
            text.replacen(':', ": ", 1),
            text.replace(r#""v":1"#, r#""v":2"#),
            text.replace("partners_pinned", "checkpoint_timestamp"),
            text.replace(r#","type""#, r#","partners":2,"type""#),
        ] {
            assert!(PartnersPinned::from_entry(refused.as_bytes()).is_err(), "{refused}");
        }
    }
}
