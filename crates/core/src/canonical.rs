//! RFC 8785 (JCS) canonical JSON: the only byte form in which Custodia signs or logs JSON.

use serde::{Serialize, de::DeserializeOwned};

/// Why bytes were refused as canonical JSON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    #[error("not valid JSON for this document: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("JSON is valid but not in RFC 8785 canonical form")]
    NotCanonical,
    #[error("could not serialise: {0}")]
    Serialise(#[source] serde_json::Error),
}

/// Serialises `value` as RFC 8785 canonical JSON.
pub fn to_canonical_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    serde_json_canonicalizer::to_vec(value).map_err(CanonicalError::Serialise)
}

/// Parses `bytes` and insists that they are already canonical, so that one document has exactly one byte form
/// and a signature or a leaf hash over it cannot be dodged by re-spacing or re-ordering keys.
pub fn from_canonical_slice<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, CanonicalError> {
    let value: T = serde_json::from_slice(bytes).map_err(CanonicalError::Malformed)?;
    if to_canonical_vec(&value)? != bytes {
        return Err(CanonicalError::NotCanonical);
    }
    Ok(value)
}
