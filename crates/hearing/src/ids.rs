//! Identifiers that come in with events, and the two pieces of personal or secret data the state machine touches.
//!
//! Participant and invite ids are opaque (the adapter makes them up; never a name, a phone number or an address),
//! because they end up in the public custody log as a record's subject. Consultation ids are numbered by the state
//! machine itself, in order.

use std::fmt;

use custodia_core::{ActorId, IdError, Label};
use serde::{Deserialize, Serialize};

/// Gives an [`IdError`] from core's validation this crate's name for the thing being validated.
fn named(kind: &'static str, error: IdError) -> IdError {
    match error {
        IdError::BadIdentifier { max, len, .. } => IdError::BadIdentifier { kind, max, len },
        other => other,
    }
}

/// One person's presence in one hearing, from the moment they use their invite.
///
/// Opaque: the adapter assigns it (a random id, say) and keeps the link to an account or a name on its side. It
/// becomes the `subject` of custody records, so it shares [`ActorId`]'s rules.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(ActorId);

impl ParticipantId {
    pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
        ActorId::new(text).map(Self).map_err(|error| named("participant id", error))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The same identifier as a custody record's actor or subject.
    pub fn as_actor(&self) -> &ActorId {
        &self.0
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParticipantId({:?})", self.as_str())
    }
}

/// A one-time invite. The link's secret is not here: the adapter keeps only its hash and maps it to this id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InviteId(ActorId);

impl InviteId {
    pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
        ActorId::new(text).map(Self).map_err(|error| named("invite id", error))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for InviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for InviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InviteId({:?})", self.as_str())
    }
}

/// A private consultation, numbered from 1 in the order they start within a hearing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConsultationId(u32);

impl ConsultationId {
    /// The consultation with this number, as a client names it ("end consultation 2"). Whether it exists is for
    /// the hearing to say.
    pub const fn new(number: u32) -> Self {
        Self(number)
    }

    pub const fn number(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ConsultationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "consultation {}", self.0)
    }
}

/// A person's name: personal data. `Debug` hides it, it has no `Display`, and it never enters the hearing's
/// state, its minutes or a custody record; only a salted digest of it does (see [`crate::IdentityVerification`]).
/// It serializes only as part of an [`crate::Event`], for the adapter's private journal. Read it with
/// [`Self::reveal`], where the adapter stores it privately.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PersonalName(Label);

impl PersonalName {
    /// Bounded, single-line and printable, like any [`Label`].
    pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
        Label::new(text).map(Self)
    }

    pub fn reveal(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for PersonalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalName(<hidden>)")
    }
}

/// 32 random bytes from the adapter's CSPRNG, mixed into the digest of a detail that holds personal data, so that
/// the public digest cannot be reversed by guessing likely names. Secret while the name is: `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommitmentSalt([u8; 32]);

impl CommitmentSalt {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn to_hex(&self) -> String {
        use fmt::Write as _;
        self.0.iter().fold(String::with_capacity(64), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
    }
}

impl fmt::Debug for CommitmentSalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CommitmentSalt(<hidden>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_hostile_text_and_say_what_they_are() {
        let error = ParticipantId::new("a/b").unwrap_err();
        assert!(error.to_string().starts_with("participant id"), "{error}");
        let error = InviteId::new("").unwrap_err();
        assert!(error.to_string().starts_with("invite id"), "{error}");
        assert_eq!(ParticipantId::new("p-1").unwrap().as_actor().as_str(), "p-1");
    }

    #[test]
    fn personal_data_never_reaches_debug() {
        let name = PersonalName::new("Amira Haddad").unwrap();
        assert_eq!(format!("{name:?}"), "PersonalName(<hidden>)");
        assert_eq!(name.reveal(), "Amira Haddad");
        let salt = CommitmentSalt::from_bytes([0xab; 32]);
        assert!(!format!("{salt:?}").contains("ab"));
        assert!(PersonalName::new("two\nlines").is_err());
    }
}
