//! Case roles and what each may do: need to know, as one table.
//!
//! A person takes part in a case in one role. [`permits`] says which of the evidence service's operations that
//! role may ever perform on the case. It is the first gate only: reading an artefact must also pass the use policy
//! its providing authority set ([`crate::decide`]), and deciding on wider use must come from that authority.
//! Administrators, who create cases and accounts, are an account flag and not a role; they are not in this table.

use serde::{Deserialize, Serialize};

/// A name that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{found:?} is not a {kind}; expected one of: {expected}")]
pub struct ParseNameError {
    kind: &'static str,
    found: String,
    expected: String,
}

/// `Display` and `FromStr` for an enum with `ALL` and `as_str`, so that its one spelling is written once.
macro_rules! named {
    ($type:ty, $kind:literal) => {
        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $type {
            type Err = $crate::role::ParseNameError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|value| value.as_str() == text)
                    .ok_or_else(|| $crate::role::ParseNameError::new($kind, text, Self::ALL.map(Self::as_str)))
            }
        }
    };
}
pub(crate) use named;

impl ParseNameError {
    /// `found` is cut to a few characters so that an error never echoes unbounded input.
    pub(crate) fn new<'a>(kind: &'static str, found: &str, expected: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            kind,
            found: found.chars().take(40).collect(),
            expected: expected.into_iter().collect::<Vec<_>>().join(", "),
        }
    }
}

/// The part a person plays in a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The court registry: administers the case, its members and its evidence.
    Clerk,
    Judge,
    Prosecutor,
    /// Defence counsel, and experts instructed by them.
    Defence,
    Interpreter,
    Witness,
    /// The requested State's judicial officer at the remote site, who verifies the witness's identity.
    RemoteSiteOfficer,
    /// An oversight body checking that the case was handled by the rules; never sees evidence itself.
    Auditor,
}

impl Role {
    pub const ALL: [Self; 8] = [
        Self::Clerk,
        Self::Judge,
        Self::Prosecutor,
        Self::Defence,
        Self::Interpreter,
        Self::Witness,
        Self::RemoteSiteOfficer,
        Self::Auditor,
    ];

    /// The spelling used in JSON, on the command line and in URLs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Clerk => "clerk",
            Self::Judge => "judge",
            Self::Prosecutor => "prosecutor",
            Self::Defence => "defence",
            Self::Interpreter => "interpreter",
            Self::Witness => "witness",
            Self::RemoteSiteOfficer => "remote_site_officer",
            Self::Auditor => "auditor",
        }
    }
}

named!(Role, "role");

/// An operation of the evidence service on a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// See the case: its reference, members and hearings.
    ViewCase,
    /// List the case's artefacts.
    ListArtefacts,
    /// Add an artefact to the case.
    UploadArtefact,
    /// See an artefact's metadata and signed manifest.
    ViewArtefact,
    /// Fetch an artefact's bytes, including playing a recording.
    DownloadArtefact,
    /// Put an artefact into a court bundle.
    ExportArtefact,
    /// See the custody history of the case and its proofs.
    ViewTimeline,
    /// Add or remove members and change their roles.
    ManageMembers,
    /// Attach or change a use policy. In practice done for the providing authority.
    SetPolicy,
    /// Ask the providing authority to allow wider use.
    RequestWiderUse,
    /// Record the providing authority's approval or refusal of wider use.
    DecideWiderUse,
    /// Tell the providing authority what its evidence achieved (UN paper para 17).
    FileOutcome,
    /// Read the outcomes filed.
    ViewOutcomes,
    /// Replace a use policy by the court's decision, say one attached in error; on the record like any policy
    /// change. Overriding what a providing State set is a judicial act: the judge's alone.
    CorrectPolicy,
    /// Run the case's hearings from the console: schedule them, issue and revoke invites, open and close them.
    RunHearings,
    /// Send an artefact to a partner gateway, another State's authority: the court's or the prosecution's act,
    /// under the artefact's use policy.
    TransferArtefact,
    /// Order, change or lift protective measures for a witness of a hearing (pseudonym, face masked, voice
    /// altered): a judicial decision, the judge's alone.
    OrderProtection,
}

impl Action {
    pub const ALL: [Self; 17] = [
        Self::ViewCase,
        Self::ListArtefacts,
        Self::UploadArtefact,
        Self::ViewArtefact,
        Self::DownloadArtefact,
        Self::ExportArtefact,
        Self::ViewTimeline,
        Self::ManageMembers,
        Self::SetPolicy,
        Self::RequestWiderUse,
        Self::DecideWiderUse,
        Self::FileOutcome,
        Self::ViewOutcomes,
        Self::CorrectPolicy,
        Self::RunHearings,
        Self::TransferArtefact,
        Self::OrderProtection,
    ];

    /// The spelling used in JSON and in refusal records.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ViewCase => "view_case",
            Self::ListArtefacts => "list_artefacts",
            Self::UploadArtefact => "upload_artefact",
            Self::ViewArtefact => "view_artefact",
            Self::DownloadArtefact => "download_artefact",
            Self::ExportArtefact => "export_artefact",
            Self::ViewTimeline => "view_timeline",
            Self::ManageMembers => "manage_members",
            Self::SetPolicy => "set_policy",
            Self::RequestWiderUse => "request_wider_use",
            Self::DecideWiderUse => "decide_wider_use",
            Self::FileOutcome => "file_outcome",
            Self::ViewOutcomes => "view_outcomes",
            Self::CorrectPolicy => "correct_policy",
            Self::RunHearings => "run_hearings",
            Self::TransferArtefact => "transfer_artefact",
            Self::OrderProtection => "order_protection",
        }
    }
}

named!(Action, "case action");

/// Whether `role` may ever perform `action` on a case it is a member of.
///
/// The defaults follow court practice and need to know (UN paper para 16):
///
/// - The **clerk** runs the case for the court: members, uploads, bundles, the custody timeline, and the hearings
///   (scheduling, invites, opening and closing; inside the room the hearing's own rules say who does what). The clerk also
///   enters the providing authority's restrictions and its answers to requests for wider use, as they arrive
///   through formal channels, and files the outcome of the case.
/// - The **judge** sees everything, evidence and custody included, and may export a bundle, but does not add
///   evidence or run the case's administration.
/// - **Prosecution and defence** have the same access to evidence (equality of arms: the defence must be able to
///   verify it independently): upload, view, download, export, the custody timeline, requests for wider use, and
///   outcomes. The prosecutor may also set a policy and decide on wider use, because the providing authority is
///   usually a prosecuting authority taking part in the case. Sending evidence to a partner gateway (another
///   State's authority) is the clerk's or the prosecutor's act, never the defence's.
/// - The **interpreter** sees the case and the artefacts' descriptions but takes no copies.
/// - The **witness** sees the case and may upload their own statement; nothing else, to protect them and the
///   evidence.
/// - The **remote-site officer** sees the case and uploads what the remote site produces (identity checks).
/// - The **auditor** sees the case, the artefact list, their descriptions and the custody timeline, never the
///   evidence itself.
///
/// `SetPolicy` and `DecideWiderUse` say only who may carry them out; the caller must also check that the actor
/// speaks for the providing authority named in the policy. `CorrectPolicy` replaces a policy that should not stand,
/// such as one attached in error that locks the artefact for everyone, whoever provided it. Overriding the
/// restriction a providing State set on its evidence is a judicial decision, so it is the judge's: the clerk enters
/// the provider's restrictions and answers as they arrive, but may not override one (a clerk alone could otherwise
/// lift a foreign State's restriction). The judge's correction is on the record under the judge's own account.
pub const fn permits(role: Role, action: Action) -> bool {
    use Action::*;
    // Every role lists what it may do, so an action added later is refused until someone decides otherwise.
    match role {
        Role::Clerk => matches!(
            action,
            ViewCase
                | ListArtefacts
                | UploadArtefact
                | ViewArtefact
                | DownloadArtefact
                | ExportArtefact
                | ViewTimeline
                | ManageMembers
                | SetPolicy
                | DecideWiderUse
                | FileOutcome
                | ViewOutcomes
                | RunHearings
                | TransferArtefact
        ),
        Role::Judge => matches!(
            action,
            ViewCase
                | ListArtefacts
                | ViewArtefact
                | DownloadArtefact
                | ExportArtefact
                | ViewTimeline
                | ViewOutcomes
                | CorrectPolicy
                | OrderProtection
        ),
        Role::Prosecutor => matches!(
            action,
            ViewCase
                | ListArtefacts
                | UploadArtefact
                | ViewArtefact
                | DownloadArtefact
                | ExportArtefact
                | ViewTimeline
                | SetPolicy
                | RequestWiderUse
                | DecideWiderUse
                | FileOutcome
                | ViewOutcomes
                | TransferArtefact
        ),
        Role::Defence => matches!(
            action,
            ViewCase
                | ListArtefacts
                | UploadArtefact
                | ViewArtefact
                | DownloadArtefact
                | ExportArtefact
                | ViewTimeline
                | RequestWiderUse
                | FileOutcome
                | ViewOutcomes
        ),
        Role::Interpreter => matches!(action, ViewCase | ListArtefacts | ViewArtefact),
        Role::Witness | Role::RemoteSiteOfficer => matches!(action, ViewCase | UploadArtefact),
        Role::Auditor => matches!(action, ViewCase | ListArtefacts | ViewArtefact | ViewTimeline),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole table, written out: a change to the rules must change this too. Columns follow [`Action::ALL`].
    const EXPECTED: [(Role, &str); 8] = [
        //                          VC LA UA VA DA EA VT MM SP RW DW FO VO CP RH TA OP
        (Role::Clerk, /*         */ "Y  Y  Y  Y  Y  Y  Y  Y  Y  .  Y  Y  Y  .  Y  Y  ."),
        (Role::Judge, /*         */ "Y  Y  .  Y  Y  Y  Y  .  .  .  .  .  Y  Y  .  .  Y"),
        (Role::Prosecutor, /*    */ "Y  Y  Y  Y  Y  Y  Y  .  Y  Y  Y  Y  Y  .  .  Y  ."),
        (Role::Defence, /*       */ "Y  Y  Y  Y  Y  Y  Y  .  .  Y  .  Y  Y  .  .  .  ."),
        (Role::Interpreter, /*   */ "Y  Y  .  Y  .  .  .  .  .  .  .  .  .  .  .  .  ."),
        (Role::Witness, /*       */ "Y  .  Y  .  .  .  .  .  .  .  .  .  .  .  .  .  ."),
        (Role::RemoteSiteOfficer, "Y  .  Y  .  .  .  .  .  .  .  .  .  .  .  .  .  ."),
        (Role::Auditor, /*       */ "Y  Y  .  Y  .  .  Y  .  .  .  .  .  .  .  .  .  ."),
    ];

    #[test]
    fn every_role_and_action_matches_the_written_matrix() {
        assert_eq!(EXPECTED.map(|(role, _)| role), Role::ALL);
        for (role, row) in EXPECTED {
            let cells: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cells.len(), Action::ALL.len(), "row for {role}");
            for (action, cell) in Action::ALL.into_iter().zip(cells) {
                let expected = match cell {
                    "Y" => true,
                    "." => false,
                    other => panic!("bad cell {other:?}"),
                };
                assert_eq!(permits(role, action), expected, "{role} / {action}");
            }
        }
    }

    /// Fails to compile when a variant is added, and fails when `ALL` misses one or repeats one.
    #[test]
    fn all_lists_every_variant_once_in_order() {
        let role_index = |role: Role| match role {
            Role::Clerk => 0,
            Role::Judge => 1,
            Role::Prosecutor => 2,
            Role::Defence => 3,
            Role::Interpreter => 4,
            Role::Witness => 5,
            Role::RemoteSiteOfficer => 6,
            Role::Auditor => 7,
        };
        let action_index = |action: Action| match action {
            Action::ViewCase => 0,
            Action::ListArtefacts => 1,
            Action::UploadArtefact => 2,
            Action::ViewArtefact => 3,
            Action::DownloadArtefact => 4,
            Action::ExportArtefact => 5,
            Action::ViewTimeline => 6,
            Action::ManageMembers => 7,
            Action::SetPolicy => 8,
            Action::RequestWiderUse => 9,
            Action::DecideWiderUse => 10,
            Action::FileOutcome => 11,
            Action::ViewOutcomes => 12,
            Action::CorrectPolicy => 13,
            Action::RunHearings => 14,
            Action::TransferArtefact => 15,
            Action::OrderProtection => 16,
        };
        assert!(Role::ALL.into_iter().enumerate().all(|(i, role)| role_index(role) == i));
        assert!(Action::ALL.into_iter().enumerate().all(|(i, action)| action_index(action) == i));
    }

    #[test]
    fn names_agree_across_serde_display_and_from_str() {
        for role in Role::ALL {
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{role}\""));
            assert_eq!(serde_json::from_str::<Role>(&format!("\"{role}\"")).unwrap(), role);
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
        }
        for action in Action::ALL {
            assert_eq!(serde_json::to_string(&action).unwrap(), format!("\"{action}\""));
            assert_eq!(serde_json::from_str::<Action>(&format!("\"{action}\"")).unwrap(), action);
            assert_eq!(action.to_string().parse::<Action>(), Ok(action));
        }
        assert_eq!(Role::RemoteSiteOfficer.to_string(), "remote_site_officer");
        let error = "Judge".parse::<Role>().unwrap_err();
        assert!(error.to_string().contains("clerk, judge, prosecutor"), "{error}");
        assert!("x".repeat(10_000).parse::<Action>().unwrap_err().to_string().len() < 400);
    }
}
