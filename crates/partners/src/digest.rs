//! The `Content-Digest` field (RFC 9530) of a request's body, with SHA-256: `sha-256=:<base64>:`, a structured-field
//! dictionary. A request between gateways carries it, the signature covers it ([`crate::signature`]), and the
//! receiver compares it with the digest of the body it read.

use custodia_core::Sha256;
use sfv::{BareItem, Dictionary, Item, Key, ListEntry, Parser};

/// The only algorithm accepted.
pub const ALGORITHM: &str = "sha-256";

/// Why a `Content-Digest` is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    #[error("Content-Digest is not a structured-field dictionary: {0}")]
    Malformed(&'static str),
    #[error("Content-Digest is not a structured-field dictionary: {0}")]
    NotStructured(#[source] sfv::Error),
    #[error("Content-Digest has no sha-256 member")]
    NoSha256,
    #[error("the body's SHA-256 is not the one Content-Digest states")]
    Mismatch,
}

/// The `Content-Digest` value of a body whose SHA-256 is `sha256`.
pub fn content_digest(sha256: &Sha256) -> String {
    let mut dictionary = Dictionary::new();
    let name = Key::from_string(ALGORITHM.to_owned()).unwrap_or_else(|_| unreachable!("a valid key"));
    dictionary.insert(name, Item::new(BareItem::ByteSequence(sha256.as_bytes().to_vec())).into());
    crate::serialized(&dictionary)
}

/// The SHA-256 a `Content-Digest` value states (other algorithms beside it are ignored, as RFC 9530 allows).
pub fn stated_sha256(value: &str) -> Result<Sha256, DigestError> {
    let dictionary: Dictionary = Parser::new(value).parse_dictionary().map_err(DigestError::NotStructured)?;
    let name = Key::from_string(ALGORITHM.to_owned()).unwrap_or_else(|_| unreachable!("a valid key"));
    let Some(ListEntry::Item(item)) = dictionary.get(&name) else { return Err(DigestError::NoSha256) };
    let bytes =
        item.bare_item.as_byte_sequence().ok_or(DigestError::Malformed("the sha-256 member is not a byte sequence"))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| DigestError::Malformed("a SHA-256 digest is 32 bytes"))?;
    Ok(Sha256::from_bytes(bytes))
}

/// Checks that `value` states `body_sha256`.
pub fn check(value: &str, body_sha256: &Sha256) -> Result<(), DigestError> {
    if stated_sha256(value)? == *body_sha256 { Ok(()) } else { Err(DigestError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9530 section 2's example: the body `{"hello": "world"}` has
    /// `sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:`.
    #[test]
    fn the_rfc_9530_example_is_reproduced_and_checked() {
        let body = br#"{"hello": "world"}"#;
        let value = content_digest(&Sha256::of(body));
        assert_eq!(value, "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:");
        assert!(check(&value, &Sha256::of(body)).is_ok());
        assert!(matches!(check(&value, &Sha256::of(b"{}")), Err(DigestError::Mismatch)));
        let beside = format!("sha-512=:AAAA:, {value}");
        assert!(check(&beside, &Sha256::of(body)).is_ok(), "other algorithms are ignored");
        assert!(matches!(stated_sha256("sha-512=:AAAA:"), Err(DigestError::NoSha256)));
        assert!(matches!(stated_sha256("sha-256=:AAAA:"), Err(DigestError::Malformed(_))));
        assert!(matches!(stated_sha256("sha-256=X48E"), Err(DigestError::Malformed(_))));
        // The parser's own error is kept as the cause, and its words stay in the refusal.
        let unparsed = stated_sha256("sha-256=(").unwrap_err();
        let cause = std::error::Error::source(&unparsed).expect("the parser's error is kept");
        assert!(unparsed.to_string().ends_with(&cause.to_string()), "{unparsed}");
    }
}
