//! Who takes part, as the court wrote them down: a participant's display name ([`DisplayName`]), whom participants
//! call if their link fails ([`HearingContact`]), and the language an invite link or a page names
//! ([`LanguageHint`]).
//!
//! A leaf of this crate: the live hearings ([`crate::live`]) keep these in their private journal and the room's
//! messages ([`crate::room_messages`]) carry them, and both import them from here, never from each other. The
//! names and the contact are private to the hearing: `Debug` withholds them, so no log line carries them.

use custodia_service::gateway::GatewayError;
use serde::{Deserialize, Serialize};

/// A participant's name as the clerk wrote it on their invite, shown in the room and in the console so that two
/// witnesses do not look the same. It stays with the hearing's private state (the journal) and never reaches the
/// hearing's records, the public log or the minutes; `Debug` withholds it, so no log line carries it.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    /// The longest name taken, in characters.
    pub const MAX_CHARS: usize = 80;

    /// A name of 1 to [`Self::MAX_CHARS`] characters (trimmed), without control characters or the invisible format
    /// characters that make a name read as another ([`custodia_service::gateway::disguising_character`]).
    pub fn new(text: &str) -> Result<Self, GatewayError> {
        private_text("display_name", "a display name", text, Self::MAX_CHARS).map(Self)
    }
}

/// A line of 1 to `max_chars` characters (trimmed) that a person typed and others are shown, without control
/// characters or the invisible format characters that make one text read as another
/// ([`custodia_service::gateway::disguising_character`]).
fn private_text(field: &'static str, what: &str, text: &str, max_chars: usize) -> Result<String, GatewayError> {
    let text = text.trim();
    let reason = if text.is_empty() || text.chars().count() > max_chars {
        Some(format!("{what} has 1 to {max_chars} characters"))
    } else if text.chars().any(char::is_control) || custodia_service::gateway::disguising_character(text).is_some() {
        Some(format!("{what} may not hold control characters or invisible format characters"))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(GatewayError::BadInput { field, reason }),
        None => Ok(text.to_owned()),
    }
}

/// Whom a hearing's participants call or write to if their link fails, as the clerk gave it when scheduling (the
/// court registry's phone number or e-mail address). Shown to the hearing's participants on their page and to the
/// court; kept in the hearing's private journal; never in a record, the minutes, the public log or a log line
/// (`Debug` withholds it).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HearingContact(String);

impl HearingContact {
    /// The longest contact taken, in characters.
    pub const MAX_CHARS: usize = 200;

    pub fn new(text: &str) -> Result<Self, GatewayError> {
        private_text("contact", "a contact", text, Self::MAX_CHARS).map(Self)
    }
}

impl<'de> Deserialize<'de> for HearingContact {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Debug for HearingContact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HearingContact(withheld)")
    }
}

/// A two-letter language code (ISO 639-1, lowercase) put in an invite link; the page falls back to the person's
/// browser for a language it does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct LanguageHint(String);

impl LanguageHint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for LanguageHint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        if code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(Self(code))
        } else {
            Err(serde::de::Error::custom("a language is a two-letter ISO 639-1 code, such as \"ar\""))
        }
    }
}

impl<'de> Deserialize<'de> for DisplayName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Debug for DisplayName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DisplayName(withheld)")
    }
}
