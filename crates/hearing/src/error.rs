//! Refusals: who tried what, and which rule said no.

use std::fmt;

use custodia_core::{ActorId, CanonicalError, HearingId, Label, Role};
use jiff::Timestamp;

use crate::{
    ConsultationId, HearingEventKind, HearingEventRecord, HearingRole, InviteId, ParticipantId, Phase, Wording,
};

/// Who attempted something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Someone in the hearing (or its lobby), on their connection.
    Participant(ParticipantId),
    /// A case member acting from the case console.
    Member(ActorId),
    /// The adapter itself, reporting what the media plane saw.
    Gateway,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Participant(participant) => write!(f, "participant {participant}"),
            Self::Member(actor) => write!(f, "case member {actor}"),
            Self::Gateway => f.write_str("the gateway"),
        }
    }
}

/// What was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HearingAction {
    Schedule,
    IssueInvite,
    RevokeInvite,
    OpenLobby,
    Close,
    Join,
    Admit,
    Remove,
    Leave,
    Reconnect,
    Mute,
    Unmute,
    StartSession,
    StartRecording,
    StopRecording,
    StartConsultation,
    EndConsultation,
    VerifyIdentity,
    PresentText,
    GiveRightsNotice,
    TakeOath,
    SwearInterpreter,
    End,
    ReportSegment,
    ReportTechnicalConditions,
    ReportMedia,
    OrderProtection,
    OpenChannel,
    CloseChannel,
    ChooseChannel,
}

impl HearingAction {
    /// The spelling used in refusal records.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule_hearing",
            Self::IssueInvite => "issue_invite",
            Self::RevokeInvite => "revoke_invite",
            Self::OpenLobby => "open_lobby",
            Self::Close => "close_hearing",
            Self::Join => "join",
            Self::Admit => "admit",
            Self::Remove => "remove",
            Self::Leave => "leave",
            Self::Reconnect => "reconnect",
            Self::Mute => "mute",
            Self::Unmute => "unmute",
            Self::StartSession => "start_session",
            Self::StartRecording => "start_recording",
            Self::StopRecording => "stop_recording",
            Self::StartConsultation => "start_consultation",
            Self::EndConsultation => "end_consultation",
            Self::VerifyIdentity => "verify_identity",
            Self::PresentText => "present_text",
            Self::GiveRightsNotice => "give_rights_notice",
            Self::TakeOath => "take_oath",
            Self::SwearInterpreter => "swear_interpreter",
            Self::End => "end_hearing",
            Self::ReportSegment => "report_segment",
            Self::ReportTechnicalConditions => "report_technical_conditions",
            Self::ReportMedia => "report_media",
            Self::OrderProtection => "order_protection",
            Self::OpenChannel => "open_channel",
            Self::CloseChannel => "close_channel",
            Self::ChooseChannel => "choose_channel",
        }
    }
}

impl fmt::Display for HearingAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule that refused an attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    #[error("the event is dated {at}, before the hearing's last event at {last}")]
    TimeWentBackwards { last: Timestamp, at: Timestamp },
    #[error("the hearing has ended")]
    HearingEnded,
    #[error("the hearing is {phase}; this needs it to be {needs}")]
    WrongPhase { phase: Phase, needs: &'static str },
    #[error("a case member with role {role} may not do this; only {allowed} may")]
    CaseRoleNotAllowed { role: Role, allowed: &'static str },
    #[error("{participant} is {} here; only {allowed} may do this", .role.with_article())]
    RoleNotAllowed { participant: ParticipantId, role: HearingRole, allowed: &'static str },
    #[error("{participant} is {}; this must be done to {expected}", .role.with_article())]
    WrongSubjectRole { participant: ParticipantId, role: HearingRole, expected: &'static str },

    #[error("invite {invite} is for {}; protective measures are ordered for a witness", .role.with_article())]
    ProtectionForWitnessOnly { invite: InviteId, role: HearingRole },
    #[error("a protective order may not let {} see or hear the original", .role.with_article())]
    ProtectionPrivilegeNotAllowed { role: HearingRole },
    #[error("the person invite {invite} is for has no protective order to lift")]
    NoProtectionToLift { invite: InviteId },
    #[error("{witness} is under a protective order that does not let {participant} see or hear them")]
    ProtectedWitnessInConsultation { witness: ParticipantId, participant: ParticipantId },
    #[error("the person invite {invite} is for is already protected by exactly this order")]
    ProtectionUnchanged { invite: InviteId },

    #[error("there is already a channel into {language}")]
    ChannelOpen { language: Label },
    #[error("{language:?} is not a language code (two or three lowercase letters, such as \"it\" or \"ar-TN\")")]
    NotALanguageCode { language: Label },
    #[error("there is no channel into {language}")]
    NoChannel { language: Label },
    #[error("{participant} has not been sworn in as an interpreter: a channel is opened only for a sworn interpreter")]
    InterpreterNotSworn { participant: ParticipantId },
    #[error("{participant} already interprets on the channel into {language}")]
    AlreadyInterpreting { participant: ParticipantId, language: Label },
    #[error("the hearing has opened {channels} interpretation channels, the most it may")]
    TooManyChannels { channels: usize },

    #[error("there is no invite {invite} for this hearing")]
    UnknownInvite { invite: InviteId },
    #[error("invite {invite} already exists")]
    InviteIdTaken { invite: InviteId },
    #[error("invite {invite} would expire at {expires_at}, which is not after it is issued")]
    InviteExpiresBeforeIssue { invite: InviteId, expires_at: Timestamp },
    #[error("invite {invite} is for {}; only a judge's or a clerk's invite may admit on join", .role.with_article())]
    AdmissionOnJoinNotAllowed { invite: InviteId, role: HearingRole },
    #[error("invite {invite} was revoked at {revoked_at}")]
    InviteRevoked { invite: InviteId, revoked_at: Timestamp },
    #[error("invite {invite} expired at {expired_at}")]
    InviteExpired { invite: InviteId, expired_at: Timestamp },
    #[error("invite {invite} was already used, by {participant}")]
    InviteUsed { invite: InviteId, participant: ParticipantId },

    #[error("there is no participant {participant} in this hearing")]
    UnknownParticipant { participant: ParticipantId },
    #[error("participant id {participant} is already taken in this hearing")]
    ParticipantIdTaken { participant: ParticipantId },
    #[error("{participant} was removed from the hearing")]
    Removed { participant: ParticipantId },
    #[error("{participant} is not connected")]
    NotPresent { participant: ParticipantId },
    #[error("{participant} is already connected")]
    AlreadyPresent { participant: ParticipantId },
    #[error("{participant} is waiting in the lobby and has not been admitted")]
    NotAdmitted { participant: ParticipantId },
    #[error("{participant} has already been admitted")]
    AlreadyAdmitted { participant: ParticipantId },
    #[error("{participant} is in {consultation}, not in the main room")]
    InConsultation { participant: ParticipantId, consultation: ConsultationId },
    #[error("{participant} cannot remove themself; they leave instead")]
    CannotRemoveSelf { participant: ParticipantId },
    #[error("{participant} is a judge; nobody may remove a judge")]
    CannotRemoveJudge { participant: ParticipantId },

    #[error("{participant} is already muted")]
    AlreadyMuted { participant: ParticipantId },
    #[error("{participant} is not muted")]
    NotMuted { participant: ParticipantId },
    #[error("{participant} was muted by the court; only the judge or the clerk may unmute them")]
    MutedByCourt { participant: ParticipantId },

    #[error("the recording is already running")]
    AlreadyRecording,
    #[error("the recording is not running")]
    NotRecording,
    #[error("no recording has been started in this hearing")]
    NoRecordingStarted,
    #[error("segment {got} reported; the next segment is {expected}")]
    SegmentOutOfOrder { expected: u64, got: u64 },

    #[error("a consultation needs at least one other person")]
    EmptyConsultation,
    #[error("{participant} cannot consult with themself")]
    ConsultationWithSelf { participant: ParticipantId },
    #[error("{participant} is listed twice")]
    DuplicateMember { participant: ParticipantId },
    #[error("a consultation needs counsel's witness or client (a witness or the accused)")]
    ConsultationWithoutClient,
    #[error("there is no {consultation} in this hearing")]
    UnknownConsultation { consultation: ConsultationId },
    #[error("{consultation} has already ended")]
    ConsultationEnded { consultation: ConsultationId },
    #[error("{participant} is not the counsel of {consultation}, nor the judge or the clerk")]
    NotConsultationCounsel { participant: ParticipantId, consultation: ConsultationId },

    #[error("{participant} has already been sworn in this hearing")]
    AlreadySworn { participant: ParticipantId },
    #[error("{participant} has not been told of their rights in this hearing")]
    RightsNoticeNotGiven { participant: ParticipantId },
    #[error("{participant}'s identity has not been verified by the remote-site officer")]
    IdentityNotVerified { participant: ParticipantId },
    #[error("{participant}'s identity has been checked {checks} times in this hearing, the most it may be")]
    TooManyIdentityChecks { participant: ParticipantId, checks: usize },
    #[error("{participant} has been given the {wording} {times} times in this hearing, the most it may be")]
    TooManyPresentations { participant: ParticipantId, wording: Wording, times: usize },
    #[error("the recording has been started {runs} times in this hearing, the most it may be")]
    TooManyRecordingRuns { runs: usize },
    #[error("{consultations} consultations have been held in this hearing, the most it may have")]
    TooManyConsultations { consultations: usize },
    #[error("{participant} has not been shown the words of the {wording} in this hearing")]
    TextNotPresented { participant: ParticipantId, wording: Wording },
    #[error("the words of the {wording} last shown to {participant} are not the ones named")]
    NotTheTextPresented { participant: ParticipantId, wording: Wording },

    #[error(
        "the gateway receives no video or sound from {participant}: nobody sees or hears them; the court must confirm to go on"
    )]
    NoMedia { participant: ParticipantId },
    #[error("{participant}'s media has already stopped")]
    MediaAlreadyStopped { participant: ParticipantId },
    #[error("{participant}'s media has not stopped")]
    MediaNotStopped { participant: ParticipantId },
}

impl Reason {
    /// The rule's stable name, for clients: a page shows the refusal in its reader's language by this key (the
    /// `Display` text is English, names participants by id, and is for the record).
    pub const fn key(&self) -> &'static str {
        match self {
            Self::TimeWentBackwards { .. } => "time_went_backwards",
            Self::HearingEnded => "hearing_ended",
            Self::WrongPhase { .. } => "wrong_phase",
            Self::CaseRoleNotAllowed { .. } => "case_role_not_allowed",
            Self::RoleNotAllowed { .. } => "role_not_allowed",
            Self::WrongSubjectRole { .. } => "wrong_subject_role",
            Self::UnknownInvite { .. } => "unknown_invite",
            Self::InviteIdTaken { .. } => "invite_id_taken",
            Self::InviteExpiresBeforeIssue { .. } => "invite_expires_before_issue",
            Self::AdmissionOnJoinNotAllowed { .. } => "admission_on_join_not_allowed",
            Self::InviteRevoked { .. } => "invite_revoked",
            Self::InviteExpired { .. } => "invite_expired",
            Self::InviteUsed { .. } => "invite_used",
            Self::UnknownParticipant { .. } => "unknown_participant",
            Self::ParticipantIdTaken { .. } => "participant_id_taken",
            Self::Removed { .. } => "removed",
            Self::NotPresent { .. } => "not_present",
            Self::AlreadyPresent { .. } => "already_present",
            Self::NotAdmitted { .. } => "not_admitted",
            Self::AlreadyAdmitted { .. } => "already_admitted",
            Self::InConsultation { .. } => "in_consultation",
            Self::CannotRemoveSelf { .. } => "cannot_remove_self",
            Self::CannotRemoveJudge { .. } => "cannot_remove_judge",
            Self::AlreadyMuted { .. } => "already_muted",
            Self::NotMuted { .. } => "not_muted",
            Self::MutedByCourt { .. } => "muted_by_court",
            Self::AlreadyRecording => "already_recording",
            Self::NotRecording => "not_recording",
            Self::NoRecordingStarted => "no_recording_started",
            Self::SegmentOutOfOrder { .. } => "segment_out_of_order",
            Self::EmptyConsultation => "empty_consultation",
            Self::ConsultationWithSelf { .. } => "consultation_with_self",
            Self::DuplicateMember { .. } => "duplicate_member",
            Self::ConsultationWithoutClient => "consultation_without_client",
            Self::UnknownConsultation { .. } => "unknown_consultation",
            Self::ConsultationEnded { .. } => "consultation_ended",
            Self::NotConsultationCounsel { .. } => "not_consultation_counsel",
            Self::AlreadySworn { .. } => "already_sworn",
            Self::RightsNoticeNotGiven { .. } => "rights_notice_not_given",
            Self::IdentityNotVerified { .. } => "identity_not_verified",
            Self::TooManyIdentityChecks { .. } => "too_many_identity_checks",
            Self::TooManyPresentations { .. } => "too_many_presentations",
            Self::TooManyRecordingRuns { .. } => "too_many_recording_runs",
            Self::TooManyConsultations { .. } => "too_many_consultations",
            Self::TextNotPresented { .. } => "text_not_presented",
            Self::NotTheTextPresented { .. } => "not_the_text_presented",
            Self::NoMedia { .. } => "no_media",
            Self::MediaAlreadyStopped { .. } => "media_already_stopped",
            Self::MediaNotStopped { .. } => "media_not_stopped",
            Self::ProtectionForWitnessOnly { .. } => "protection_for_witness_only",
            Self::ProtectionPrivilegeNotAllowed { .. } => "protection_privilege_not_allowed",
            Self::NoProtectionToLift { .. } => "no_protection_to_lift",
            Self::ProtectionUnchanged { .. } => "protection_unchanged",
            Self::ProtectedWitnessInConsultation { .. } => "protected_witness_in_consultation",
            Self::ChannelOpen { .. } => "channel_open",
            Self::NotALanguageCode { .. } => "not_a_language_code",
            Self::NoChannel { .. } => "no_channel",
            Self::InterpreterNotSworn { .. } => "interpreter_not_sworn",
            Self::AlreadyInterpreting { .. } => "already_interpreting",
            Self::TooManyChannels { .. } => "too_many_channels",
        }
    }
}

/// Why [`crate::Hearing::handle`] (or [`crate::Hearing::schedule`]) refused an event. The hearing is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HearingError {
    /// A rule of the hearing refused the attempt.
    #[error("{actor} may not {action}: {reason}")]
    Refused { actor: Actor, action: HearingAction, reason: Reason },
    /// A detail document could not be written as canonical JSON (it holds only ids and labels, so this is a bug).
    #[error("could not encode the detail of {action}")]
    Detail { action: HearingAction, source: CanonicalError },
}

#[derive(serde::Serialize)]
struct RefusalDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hearing: &'a HearingId,
    action: &'static str,
    reason: String,
}

/// The detail of a record that counts refused steps: the hearing and the actions tried, no rule and no words of
/// the steps (those differed between the refusals counted, and the first refusal's record carries its own).
#[derive(serde::Serialize)]
struct RefusedStepsDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hearing: &'a HearingId,
    actions: Vec<&'static str>,
}

/// The canonical detail document of a `step_refused` record that counts several refused steps of one actor (their
/// count is the record's `repeated`): the hearing and the actions tried, in order and each once. Made of public
/// ids and a closed list of words, it is what such a record's detail digest commits to, and anyone holding the
/// opening can make it again to read which actions were tried.
pub fn refused_steps_detail(
    hearing: &HearingId,
    actions: impl IntoIterator<Item = HearingAction>,
) -> Result<Vec<u8>, CanonicalError> {
    let actions: std::collections::BTreeSet<HearingAction> = actions.into_iter().collect();
    let actions = actions.into_iter().map(HearingAction::as_str).collect();
    custodia_core::to_canonical_vec(&RefusedStepsDetail { kind: "steps_refused", hearing, actions })
}

impl HearingError {
    /// The action that was refused, if a rule refused one.
    pub fn action(&self) -> Option<HearingAction> {
        match self {
            Self::Refused { action, .. } => Some(*action),
            Self::Detail { .. } => None,
        }
    }

    /// The refusal as a custody record and its canonical detail document (the action and the rule, in words that
    /// name participants by id only), for an adapter to append to the ledger and keep privately. `None` for what
    /// no one attempted: the gateway's own reports, and encoding failures.
    pub fn refusal_record(&self, at: Timestamp, hearing: &HearingId) -> Option<(HearingEventRecord, Vec<u8>)> {
        let Self::Refused { actor, action, reason } = self else { return None };
        let actor = match actor {
            Actor::Participant(participant) => participant.as_actor().clone(),
            Actor::Member(actor) => actor.clone(),
            Actor::Gateway => return None,
        };
        let detail =
            RefusalDetail { kind: "step_refused", hearing, action: action.as_str(), reason: reason.to_string() };
        let detail = custodia_core::to_canonical_vec(&detail).ok()?;
        let record = HearingEventRecord {
            at,
            actor,
            kind: HearingEventKind::StepRefused,
            subject: None,
            detail_sha256: Some(custodia_core::Sha256::of(&detail)),
            repeated: None,
        };
        Some((record, detail))
    }

    /// The rule that refused, if a rule did.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Self::Refused { reason, .. } => Some(reason),
            Self::Detail { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_of_refused_steps_names_the_actions_once_each_and_nothing_else() {
        let hearing = HearingId::new("h-1").unwrap();
        let actions = [HearingAction::EndConsultation, HearingAction::Admit, HearingAction::EndConsultation];
        let detail = refused_steps_detail(&hearing, actions).unwrap();
        assert_eq!(
            String::from_utf8(detail).unwrap(),
            r#"{"actions":["admit","end_consultation"],"hearing":"h-1","type":"steps_refused"}"#
        );
    }

    #[test]
    fn a_refusal_names_who_what_and_why() {
        let witness = ParticipantId::new("p-w").unwrap();
        let error = HearingError::Refused {
            actor: Actor::Participant(witness.clone()),
            action: HearingAction::StartRecording,
            reason: Reason::RoleNotAllowed {
                participant: witness,
                role: HearingRole::Witness,
                allowed: "the judge or the clerk",
            },
        };
        assert_eq!(
            error.to_string(),
            "participant p-w may not start_recording: p-w is a witness here; only the judge or the clerk may do this"
        );
    }
}
