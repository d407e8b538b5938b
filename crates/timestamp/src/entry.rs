//! A timestamp in the custody log: one entry that binds an authority's token to the checkpoint it stamps.
//!
//! The token's imprint is the SHA-256 of the checkpoint's body (`<origin>\n<size>\n<base64 root>\n`, the text the
//! log signs), so the entry names the checkpoint by size and root, and its own index in the log (always at or after
//! that size) places it. Nothing personal: a size, a root, and a token that names only the authority.
//!
//! RFC 8785 canonical JSON, like custody records, and told apart from them by its `type`:
//! `{"checkpoint":{"root":"<base64>","size":42},"token":"<base64 DER>","type":"checkpoint_timestamp","v":1}`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::{Expectation, TimestampError, TrustAnchors, VerifiedToken, verify_token};

/// The entry format version this build writes and reads.
pub const TIMESTAMP_ENTRY_VERSION: u32 = 1;

/// The largest ledger entry (c2sp.org/tlog-tiles length-prefixes entries with a u16).
const MAX_ENTRY_LEN: usize = u16::MAX as usize;

/// Why an entry could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    #[error("a timestamp entry is not canonical JSON of the expected shape: {0}")]
    Encoding(#[from] custodia_core::CanonicalError),
    #[error("timestamp entry version {found} is not supported (this build reads version {TIMESTAMP_ENTRY_VERSION})")]
    UnsupportedVersion { found: u32 },
    #[error("a timestamp entry is {len} bytes; the most a ledger entry can hold is {MAX_ENTRY_LEN}")]
    TooLarge { len: usize },
    #[error("a timestamp entry's {what} is not base64 of the right length")]
    Base64 { what: &'static str },
}

/// The kind tag, so that a reader tells a timestamp from a custody record.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    CheckpointTimestamp,
}

/// The checkpoint a token stamps.
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StampedCheckpoint {
    size: u64,
    /// Standard base64 of the 32-byte root, as in the checkpoint body.
    root: String,
}

#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    v: u32,
    #[serde(rename = "type")]
    kind: Kind,
    checkpoint: StampedCheckpoint,
    /// Standard base64 of the token's DER.
    token: String,
}

/// One authority's token over one checkpoint of the log.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct CheckpointTimestamp {
    /// The checkpoint's size.
    pub size: u64,
    /// The checkpoint's root hash.
    pub root: [u8; 32],
    /// The token (a DER `TimeStampToken`).
    pub token: Vec<u8>,
}

impl CheckpointTimestamp {
    /// The checkpoint body the token's imprint is the SHA-256 of.
    pub fn checkpoint_body(origin: &str, size: u64, root: &[u8; 32]) -> String {
        format!("{origin}\n{size}\n{}\n", STANDARD.encode(root))
    }

    /// The exact bytes that become a ledger entry.
    pub fn to_entry(&self) -> Result<Vec<u8>, EntryError> {
        let document = Document {
            v: TIMESTAMP_ENTRY_VERSION,
            kind: Kind::CheckpointTimestamp,
            checkpoint: StampedCheckpoint { size: self.size, root: STANDARD.encode(self.root) },
            token: STANDARD.encode(&self.token),
        };
        let bytes = custodia_core::to_canonical_vec(&document)?;
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(EntryError::TooLarge { len: bytes.len() });
        }
        Ok(bytes)
    }

    /// Reads a ledger entry back, refusing anything that is not byte for byte what [`Self::to_entry`] writes.
    pub fn from_entry(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(EntryError::TooLarge { len: bytes.len() });
        }
        let document: Document = custodia_core::from_canonical_slice(bytes)?;
        if document.v != TIMESTAMP_ENTRY_VERSION {
            return Err(EntryError::UnsupportedVersion { found: document.v });
        }
        let root = STANDARD
            .decode(&document.checkpoint.root)
            .ok()
            .and_then(|root| <[u8; 32]>::try_from(root).ok())
            .ok_or(EntryError::Base64 { what: "root" })?;
        let token = STANDARD.decode(&document.token).map_err(|_| EntryError::Base64 { what: "token" })?;
        Ok(Self { size: document.checkpoint.size, root, token })
    }

    /// Verifies the token fully against `anchors`, and that it stamps this checkpoint of the log named `origin`.
    pub fn verify(&self, origin: &str, anchors: &TrustAnchors) -> Result<VerifiedToken, TimestampError> {
        let body = Self::checkpoint_body(origin, self.size, &self.root);
        verify_token(&self.token, &Expectation::for_message(body.as_bytes()), anchors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CheckpointTimestamp {
        CheckpointTimestamp { size: 42, root: [7; 32], token: vec![0x30, 0x03, 0x02, 0x01, 0x01] }
    }

    #[test]
    fn golden_encoding_round_trips_and_nothing_else_is_read() {
        let entry = sample().to_entry().unwrap();
        let text = String::from_utf8(entry.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"checkpoint":{"root":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=","size":42},"token":"MAMCAQE=","type":"checkpoint_timestamp","v":1}"#
        );
        assert_eq!(CheckpointTimestamp::from_entry(&entry).unwrap(), sample());
        for refused in [
            text.replacen(':', ": ", 1),
            text.replace(r#""v":1"#, r#""v":2"#),
            text.replace("checkpoint_timestamp", "artefact_accessed"),
            text.replace(r#""v":1"#, r#""v":1,"zz":0"#),
            text.replace("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", "Bwc="),
            text.replace("MAMCAQE=", "not base64"),
        ] {
            assert!(CheckpointTimestamp::from_entry(refused.as_bytes()).is_err(), "{refused}");
        }
    }

    #[test]
    fn the_checkpoint_body_is_the_log_s() {
        assert_eq!(
            CheckpointTimestamp::checkpoint_body("custodia.example/log", 42, &[7; 32]),
            "custodia.example/log\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"
        );
    }
}
