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
    #[error(
        "label holds U+{code:04X}, a line or paragraph separator or an invisible format character, which can make \
         the text read as something else where it is shown (a line of its own, or text reversed); write it without"
    )]
    ActsOnDisplay { code: u32 },
}

/// Whether `c` would act on a terminal or a page instead of showing as itself: a control character (an escape
/// sequence starts with ESC and can move the cursor up over a line and rewrite it; a line break starts a line of the
/// writer's own), a line or paragraph separator (U+2028, U+2029: a line break to many viewers), or an invisible
/// format character (Unicode category Cf: a right-to-left override reorders what follows it). The zero-width
/// (non-)joiners are not: Persian and Indic names need them. One rule for what the gateway takes and for what a
/// verifier shows.
pub fn acts_on_display(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
    match c.general_category() {
        GeneralCategory::Control | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => true,
        GeneralCategory::Format => !matches!(c, '\u{200C}' | '\u{200D}'),
        _ => false,
    }
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

/// A short free-text label: a purpose, a reason, a site description. Bounded, single-line and printable: no control
/// character, line or paragraph separator, or invisible format character but the zero-width joiners
/// ([`acts_on_display`]), so that a label shown in a certificate or a page is one line that reads as it is.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Label(String);

impl Label {
    pub const MAX_LEN: usize = 512;

    pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
        let text = text.into();
        if text.is_empty() || text.len() > Self::MAX_LEN || text.chars().any(char::is_control) {
            return Err(IdError::BadLabel { max: Self::MAX_LEN });
        }
        match text.chars().find(|&c| acts_on_display(c)) {
            Some(c) => Err(IdError::ActsOnDisplay { code: u32::from(c) }),
            None => Ok(Self(text)),
        }
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

/// Withheld: a label is what someone typed (a purpose, a file's name), which may name people.
impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Label(withheld)")
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
        // A line or paragraph separator, a bidi control, an invisible format character: each is refused by name.
        for (hostile, code) in [
            ("trial\u{2028}12:00 exported by judge", 0x2028),
            ("a\u{2029}b", 0x2029),
            ("fdp\u{202E}exe", 0x202E),
            ("x\u{202A}y", 0x202A),
            ("x\u{2066}y\u{2069}", 0x2066),
            ("Am\u{200B}ina", 0x200B),
            ("\u{FEFF}bom", 0xFEFF),
        ] {
            assert_eq!(Label::new(hostile), Err(IdError::ActsOnDisplay { code }), "{hostile:?}");
        }
        assert!(IdError::ActsOnDisplay { code: 0x2028 }.to_string().contains("U+2028"));
        // Persian with a zero-width non-joiner, and Indic with a zero-width joiner, stay as they are.
        for kept in ["می\u{200C}خواهم", "क्\u{200D}ष", "Amélie Ødegård", "证据"] {
            assert!(Label::new(kept).is_ok(), "{kept:?}");
        }
    }

    #[test]
    fn a_label_is_withheld_from_debug() {
        let purpose = Label::new("statement of Maria Rossi").unwrap();
        assert_eq!(format!("{purpose:?}"), "Label(withheld)");
        assert_eq!(purpose.to_string(), "statement of Maria Rossi", "shown as itself where it is meant to be");
    }
}
