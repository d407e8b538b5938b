//! Validated identifiers and short labels.
//!
//! Everything in a custody record is public once the log is served, so identifiers are opaque: never a name, a
//! phone number or an address. The constructors refuse anything that could smuggle path separators, control
//! characters or unbounded text into a record.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error("{kind} must be 1 to {max} characters of A-Z a-z 0-9 . _ : -, got {len} characters")]
    BadIdentifier { kind: &'static str, max: usize, len: usize },
    #[error("label must be 1 to {max} printable characters with no control characters")]
    BadLabel { max: usize },
}

fn check_identifier(kind: &'static str, text: &str) -> Result<(), IdError> {
    const MAX: usize = 64;
    let well_formed = !text.is_empty()
        && text.len() <= MAX
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        && !text.starts_with('.');
    if well_formed { Ok(()) } else { Err(IdError::BadIdentifier { kind, max: MAX, len: text.chars().count() }) }
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
                let text = text.into();
                check_identifier($kind, &text)?;
                Ok(Self(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier!(
    /// A piece of evidence: a file, a recording segment, a set of minutes.
    ArtefactId, "artefact id"
);
identifier!(
    /// A case file that evidence and hearings belong to.
    CaseId, "case id"
);
identifier!(
    /// A remote-testimony hearing.
    HearingId, "hearing id"
);
identifier!(
    /// An opaque account or service identifier. It names who acted without saying who they are.
    ActorId, "actor id"
);

/// A short free-text label: a purpose, a reason, a site description. Bounded, single-line and printable.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Label(String);

impl Label {
    pub const MAX_LEN: usize = 512;

    pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
        let text = text.into();
        let printable = !text.is_empty() && text.len() <= Self::MAX_LEN && !text.chars().any(char::is_control);
        if printable { Ok(Self(text)) } else { Err(IdError::BadLabel { max: Self::MAX_LEN }) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Label({:?})", self.0)
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_refuse_hostile_text() {
        for hostile in ["", "../etc/passwd", "a/b", "a b", ".hidden", "x\n", &"a".repeat(65), "é"] {
            assert!(ArtefactId::new(hostile).is_err(), "{hostile:?} was accepted");
        }
        assert!(CaseId::new("case-2026:0042_a.b").is_ok());
    }

    #[test]
    fn labels_are_single_line_and_bounded() {
        assert!(Label::new("trial preparation").is_ok());
        assert!(Label::new("two\nlines").is_err());
        assert!(Label::new("").is_err());
        assert!(Label::new("x".repeat(Label::MAX_LEN + 1)).is_err());
    }
}
