//! Salted commitments: how a custody record refers to what a person typed or chose without publishing it.
//!
//! The public log holds only the commitment, a SHA-256 over a domain-separated encoding of a random 32-byte salt,
//! the record field's name and the text:
//!
//! ```text
//! SHA-256( "custodia-commitment-v1" 0x00 || salt (32 bytes) || u32be(len(field)) || field || u32be(len(text)) || text )
//! ```
//!
//! Every part has a fixed length or a length prefix, so one byte string has one reading, and the field's name
//! stops a commitment being passed off as another field's. Without the salt, nobody can confirm a guess ("was the
//! purpose `interview of A. Y.`?"); with the [`Opening`] (salt and text), kept in the access-controlled catalog and
//! carried in court bundles, anyone can check it. `docs/verify-by-hand.md` recomputes one with standard tools.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{DigestParseError, Sha256};

/// The domain separator that starts every committed byte string.
pub const COMMITMENT_DOMAIN: &[u8] = b"custodia-commitment-v1\0";

/// A commitment to one field's text, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Commitment(Sha256);

impl Commitment {
    /// Commits to `text` as the value of `field`, under `salt`.
    pub fn new(salt: &Salt, field: &str, text: &str) -> Self {
        let mut hasher = crate::Sha256Hasher::default();
        hasher.update(COMMITMENT_DOMAIN);
        hasher.update(&salt.0);
        for part in [field.as_bytes(), text.as_bytes()] {
            // Fields and texts are labels, far below 4 GiB; a longer one would still be prefixed unambiguously
            // by its low 32 bits only, so refuse to pretend: saturate, which no real text reaches.
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            hasher.update(&len.to_be_bytes());
            hasher.update(part);
        }
        Self(hasher.finish())
    }

    pub fn to_hex(&self) -> String {
        self.0.to_hex()
    }
}

impl fmt::Display for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

impl fmt::Debug for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Commitment({})", self.0.to_hex())
    }
}

impl FromStr for Commitment {
    type Err = DigestParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(Self)
    }
}

impl Serialize for Commitment {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Commitment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Sha256::deserialize(deserializer).map(Self)
    }
}

/// 32 random bytes from the caller's CSPRNG. Secret while the text is: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Salt([u8; 32]);

impl Salt {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Salt(<hidden>)")
    }
}

impl Serialize for Salt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Sha256::from_bytes(self.0).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Salt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Sha256::deserialize(deserializer).map(|hex| Self(*hex.as_bytes()))
    }
}

/// What opens a commitment: the salt and the text. Personal data: `Debug` shows neither.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opening {
    pub salt: Salt,
    pub text: String,
}

impl Opening {
    /// The commitment this opening makes for `field`.
    pub fn commitment(&self, field: &str) -> Commitment {
        Commitment::new(&self.salt, field, &self.text)
    }
}

impl fmt::Debug for Opening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Opening(<hidden>)")
    }
}

/// The openings of one custody record's commitments, by field name. Serialised as RFC 8785 canonical JSON: the
/// catalog keeps it, a court bundle carries it beside the record.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Openings(BTreeMap<String, Opening>);

impl fmt::Debug for Openings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Why a record's openings do not open its commitments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpeningError {
    #[error("the opening of `{field}` is missing")]
    Missing { field: String },
    #[error("the opening of `{field}` does not match the record's commitment")]
    Mismatch { field: String },
    #[error("there is an opening of `{field}`, which the record does not commit to")]
    Unexpected { field: String },
}

impl Openings {
    /// Commits to `text` as `field` under `salt`, keeping the opening.
    pub fn commit(&mut self, field: &str, salt: Salt, text: impl Into<String>) -> Commitment {
        let opening = Opening { salt, text: text.into() };
        let commitment = opening.commitment(field);
        self.0.insert(field.to_owned(), opening);
        commitment
    }

    /// Keeps an opening made elsewhere (a case's reference, whose salt is the case's).
    pub fn insert(&mut self, field: &str, opening: Opening) {
        self.0.insert(field.to_owned(), opening);
    }

    pub fn get(&self, field: &str) -> Option<&Opening> {
        self.0.get(field)
    }

    /// The opened text of `field`.
    pub fn text(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(|opening| opening.text.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Opening)> {
        self.0.iter().map(|(field, opening)| (field.as_str(), opening))
    }

    /// Checks that these openings open exactly `commitments`: each one present and matching, none left over.
    pub fn check<'a>(
        &self,
        commitments: impl IntoIterator<Item = (&'a str, &'a Commitment)>,
    ) -> Result<(), OpeningError> {
        let mut seen = std::collections::BTreeSet::new();
        for (field, commitment) in commitments {
            let opening = self.0.get(field).ok_or_else(|| OpeningError::Missing { field: field.to_owned() })?;
            if opening.commitment(field) != *commitment {
                return Err(OpeningError::Mismatch { field: field.to_owned() });
            }
            seen.insert(field);
        }
        if let Some(field) = self.0.keys().find(|field| !seen.contains(field.as_str())) {
            return Err(OpeningError::Unexpected { field: field.clone() });
        }
        Ok(())
    }

    pub fn to_canonical(&self) -> Vec<u8> {
        crate::to_canonical_vec(self).unwrap_or_else(|_| unreachable!("openings are strings and hex"))
    }

    pub fn from_canonical(bytes: &[u8]) -> Result<Self, crate::CanonicalError> {
        crate::from_canonical_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_commitment_matches_the_documented_encoding() {
        let salt = Salt::from_bytes([7; 32]);
        let commitment = Commitment::new(&salt, "purpose", "trial preparation");
        let mut bytes = COMMITMENT_DOMAIN.to_vec();
        bytes.extend_from_slice(&[7; 32]);
        bytes.extend_from_slice(&7u32.to_be_bytes());
        bytes.extend_from_slice(b"purpose");
        bytes.extend_from_slice(&17u32.to_be_bytes());
        bytes.extend_from_slice(b"trial preparation");
        assert_eq!(commitment.to_hex(), Sha256::of(&bytes).to_hex());
        // Pinned so that the browser verifier and the by-hand document can be checked against it.
        assert_eq!(commitment.to_hex(), "88eaa46728f36016577e241ac31b3c3cd27975ff755bd4a3d24a60c495d5cc7e");
    }

    #[test]
    fn field_salt_and_text_all_matter_and_cannot_shift() {
        let salt = Salt::from_bytes([1; 32]);
        let base = Commitment::new(&salt, "purpose", "ab");
        assert_ne!(base, Commitment::new(&salt, "site", "ab"));
        assert_ne!(base, Commitment::new(&Salt::from_bytes([2; 32]), "purpose", "ab"));
        assert_ne!(base, Commitment::new(&salt, "purpose", "ac"));
        assert_ne!(Commitment::new(&salt, "ab", "c"), Commitment::new(&salt, "a", "bc"));
    }

    #[test]
    fn openings_check_every_commitment_and_name_the_field() {
        let mut openings = Openings::default();
        let purpose = openings.commit("purpose", Salt::from_bytes([3; 32]), "interview");
        let site = openings.commit("site", Salt::from_bytes([4; 32]), "IT, web session");
        assert_eq!(openings.check([("purpose", &purpose), ("site", &site)]), Ok(()));
        assert_eq!(
            openings.check([("purpose", &site), ("site", &site)]),
            Err(OpeningError::Mismatch { field: "purpose".into() })
        );
        assert_eq!(openings.check([("purpose", &purpose)]), Err(OpeningError::Unexpected { field: "site".into() }));
        let outcome = Commitment::new(&Salt::from_bytes([5; 32]), "outcome", "x");
        assert_eq!(
            openings.check([("purpose", &purpose), ("site", &site), ("outcome", &outcome)]),
            Err(OpeningError::Missing { field: "outcome".into() })
        );
        let bytes = openings.to_canonical();
        assert_eq!(Openings::from_canonical(&bytes).unwrap(), openings);
        assert!(!format!("{openings:?}").contains("interview"));
    }
}
