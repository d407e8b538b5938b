//! The part a person plays in one hearing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A participant's role in a hearing, fixed by their invite.
///
/// Not [`custodia_core::Role`]: that is membership of a case (who may see its evidence); this is a seat in one
/// hearing. An observer or the accused may attend a hearing without being a member of the case, and an auditor of
/// the case has no seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HearingRole {
    /// Presides: opens the session, gives the rights notice, takes oaths, swears the interpreter.
    Judge,
    /// Runs the hearing for the court: admits, removes, mutes, starts and stops the recording.
    Clerk,
    Prosecutor,
    /// Defence counsel.
    Defence,
    /// The suspected or accused person, when heard by video link (EIO directive art. 24(1)); defence counsel's
    /// client in a consultation.
    Accused,
    Interpreter,
    Witness,
    /// The requested State's judicial officer at the remote site, who verifies the identity of the person heard.
    RemoteSiteOfficer,
    /// Attends and is recorded, but may do nothing beyond muting themself and leaving.
    Observer,
}

impl HearingRole {
    pub const ALL: [Self; 9] = [
        Self::Judge,
        Self::Clerk,
        Self::Prosecutor,
        Self::Defence,
        Self::Accused,
        Self::Interpreter,
        Self::Witness,
        Self::RemoteSiteOfficer,
        Self::Observer,
    ];

    /// The spelling used in JSON and in the minutes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Judge => "judge",
            Self::Clerk => "clerk",
            Self::Prosecutor => "prosecutor",
            Self::Defence => "defence",
            Self::Accused => "accused",
            Self::Interpreter => "interpreter",
            Self::Witness => "witness",
            Self::RemoteSiteOfficer => "remote_site_officer",
            Self::Observer => "observer",
        }
    }

    /// The role with its indefinite article, for a sentence: "a judge", "an interpreter".
    pub const fn with_article(self) -> &'static str {
        match self {
            Self::Judge => "a judge",
            Self::Clerk => "a clerk",
            Self::Prosecutor => "a prosecutor",
            Self::Defence => "a defence",
            Self::Accused => "an accused",
            Self::Interpreter => "an interpreter",
            Self::Witness => "a witness",
            Self::RemoteSiteOfficer => "a remote_site_officer",
            Self::Observer => "an observer",
        }
    }

    /// The judge and the clerk: the court, who admit, remove, mute others and control the recording.
    pub const fn is_court(self) -> bool {
        matches!(self, Self::Judge | Self::Clerk)
    }

    /// Prosecution or defence counsel, who may take a client into a private consultation.
    pub const fn is_counsel(self) -> bool {
        matches!(self, Self::Prosecutor | Self::Defence)
    }

    /// The person heard: whose identity is verified and who is told of their rights.
    pub const fn is_heard(self) -> bool {
        matches!(self, Self::Witness | Self::Accused)
    }

    /// Whom this role may take into a private consultation, if it is counsel. The prosecutor may consult a
    /// witness; the defence a witness or the accused; either may bring the interpreter.
    pub const fn may_consult_with(self, other: Self) -> bool {
        match self {
            Self::Prosecutor => matches!(other, Self::Witness | Self::Interpreter),
            Self::Defence => matches!(other, Self::Witness | Self::Accused | Self::Interpreter),
            _ => false,
        }
    }
}

impl fmt::Display for HearingRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_between_serde_and_display() {
        for role in HearingRole::ALL {
            let json = format!("\"{role}\"");
            assert_eq!(serde_json::to_string(&role).unwrap(), json);
            assert_eq!(serde_json::from_str::<HearingRole>(&json).unwrap(), role);
        }
    }

    #[test]
    fn each_role_takes_its_article() {
        for role in HearingRole::ALL {
            let (article, name) = role.with_article().split_once(' ').unwrap();
            assert_eq!(name, role.as_str());
            let vowel = name.starts_with(['a', 'e', 'i', 'o', 'u']);
            assert_eq!(article, if vowel { "an" } else { "a" }, "{role}");
        }
    }

    #[test]
    fn only_counsel_consult_and_never_with_the_court() {
        for counsel in HearingRole::ALL {
            for other in HearingRole::ALL {
                if counsel.may_consult_with(other) {
                    assert!(counsel.is_counsel(), "{counsel} / {other}");
                    assert!(!other.is_court() && !other.is_counsel(), "{counsel} / {other}");
                }
            }
        }
        assert!(!HearingRole::Prosecutor.may_consult_with(HearingRole::Accused));
    }
}
