//! The minutes of a hearing (EIO directive art. 24(6), EU MLA Convention art. 10(6)): plain data, built from the
//! state machine's own state, for the adapter to sign (as RFC 8785 canonical JSON) and ingest as an artefact.
//!
//! People appear by participant id and role only; the adapter holds the link from an id to a name. The identity
//! check's officer name appears only as the digest of its salted detail document.

use custodia_core::{ActorId, CaseId, HearingId, Label, Sha256};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    ConsultationId, DocumentType, HearingRole, InterpretationMode, InviteId, LeaveCause, OathForm, ParticipantId,
    Phase, ProtectiveMeasures, Rules, TextShown, TrackKind, Wording,
};

/// `Debug` withholds the place, which the clerk typed; the rest is ids, roles, times and digests (an identity check
/// and a protective order withhold what was typed in them themselves).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minutes {
    pub hearing: HearingId,
    pub case: CaseId,
    /// The court and room, in words.
    pub place: Label,
    pub scheduled_by: ActorId,
    pub scheduled_for: Timestamp,
    pub rules: Rules,
    /// `ended` once the hearing is over; minutes taken earlier are a draft.
    pub phase: Phase,
    pub opened_at: Option<Timestamp>,
    pub session_started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// Everyone admitted to the hearing, in order of arrival, with the periods they were present.
    pub present: Vec<Attendee>,
    /// Everyone who joined the lobby but was never admitted.
    pub not_admitted: Vec<LobbyOnly>,
    pub identity_checks: Vec<IdentityCheck>,
    /// Every text the judge put on a person's screen, in order, before the step it precedes. Left out when there
    /// were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub texts_presented: Vec<TextPresentation>,
    pub rights_notices: Vec<RightsNotice>,
    pub oaths: Vec<Oath>,
    pub interpreters: Vec<InterpreterOath>,
    /// Every interpretation channel: its language, who interpreted, how, from when to when. Left out when there
    /// were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelMinute>,
    /// Every protective order, change and lifting, in order. Left out when there were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protection_orders: Vec<ProtectionOrder>,
    /// The fact of each private consultation: who and when. Never what was said.
    pub consultations: Vec<ConsultationMinute>,
    pub recording: Vec<RecordingRun>,
    pub segments: Vec<SealedSegment>,
    pub technical: TechnicalConditions,
}

impl std::fmt::Debug for Minutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            hearing,
            case,
            place: _,
            scheduled_by,
            scheduled_for,
            rules,
            phase,
            opened_at,
            session_started_at,
            ended_at,
            present,
            not_admitted,
            identity_checks,
            texts_presented,
            rights_notices,
            oaths,
            interpreters,
            channels,
            protection_orders,
            consultations,
            recording,
            segments,
            technical,
        } = self;
        f.debug_struct("Minutes")
            .field("hearing", hearing)
            .field("case", case)
            .field("scheduled_by", scheduled_by)
            .field("scheduled_for", scheduled_for)
            .field("rules", rules)
            .field("phase", phase)
            .field("opened_at", opened_at)
            .field("session_started_at", session_started_at)
            .field("ended_at", ended_at)
            .field("present", present)
            .field("not_admitted", not_admitted)
            .field("identity_checks", identity_checks)
            .field("texts_presented", texts_presented)
            .field("rights_notices", rights_notices)
            .field("oaths", oaths)
            .field("interpreters", interpreters)
            .field("channels", channels)
            .field("protection_orders", protection_orders)
            .field("consultations", consultations)
            .field("recording", recording)
            .field("segments", segments)
            .field("technical", technical)
            .finish_non_exhaustive()
    }
}

/// An interpretation channel, as the court opened (and closed) it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMinute {
    pub language: Label,
    pub interpreter: ParticipantId,
    pub mode: InterpretationMode,
    pub opened_by: ParticipantId,
    pub opened_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Timestamp>,
}

/// A protective order as the judge made, changed or lifted it (`measures: None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectionOrder {
    pub at: Timestamp,
    /// The judge of the case, acting from the console.
    pub by: ActorId,
    /// The invite of the person protected.
    pub invite: InviteId,
    /// The person, once they have used the invite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantId>,
    pub measures: Option<ProtectiveMeasures>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attendee {
    pub participant: ParticipantId,
    pub role: HearingRole,
    pub invite: InviteId,
    /// When they used their invite and entered the lobby.
    pub arrived_at: Timestamp,
    pub admitted_at: Timestamp,
    pub admitted_by: AdmittedBy,
    /// Each stretch of presence in the hearing, from admission or reconnection to leaving. Time in a private
    /// consultation counts as presence.
    pub periods: Vec<Period>,
    pub reconnections: u32,
    pub removed_at: Option<Timestamp>,
    /// Stretches during which the gateway received none of their media while they were connected: nobody saw or
    /// heard them. Left out when there were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media_gaps: Vec<MediaGap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaGap {
    pub from: Timestamp,
    /// When their media came back, or they left; `None` while it lasts.
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum AdmittedBy {
    /// The invite admitted on join, as the clerk who issued it decided.
    Invite { issued_by: ActorId },
    /// A judge or a clerk in the hearing admitted them from the lobby.
    Participant { participant: ParticipantId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub from: Timestamp,
    /// `None` while they are still present.
    pub until: Option<Timestamp>,
    pub ended_by: Option<PeriodEnd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodEnd {
    Left,
    ConnectionLost,
    Removed,
    HearingEnded,
}

impl From<LeaveCause> for PeriodEnd {
    fn from(cause: LeaveCause) -> Self {
        match cause {
            LeaveCause::Left => Self::Left,
            LeaveCause::ConnectionLost => Self::ConnectionLost,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LobbyOnly {
    pub participant: ParticipantId,
    pub role: HearingRole,
    pub invite: InviteId,
    pub arrived_at: Timestamp,
    pub removed_at: Option<Timestamp>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityCheck {
    pub at: Timestamp,
    pub person: ParticipantId,
    pub officer: ParticipantId,
    pub document: DocumentType,
    pub site: Label,
    /// The SHA-256 of the salted detail document that names the officer: the reference to their name.
    pub detail_sha256: Sha256,
}

/// Without the site, which can place a protected witness; the document only by its kind ([`DocumentType`]'s
/// `Debug` withholds the words an officer typed for another document).
impl std::fmt::Debug for IdentityCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityCheck")
            .field("at", &self.at)
            .field("person", &self.person)
            .field("officer", &self.officer)
            .field("document", &self.document)
            .field("detail_sha256", &self.detail_sha256)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextPresentation {
    pub at: Timestamp,
    pub person: ParticipantId,
    pub by: ParticipantId,
    pub wording: Wording,
    /// Which words: their language and digest.
    pub text: TextShown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RightsNotice {
    pub at: Timestamp,
    pub person: ParticipantId,
    pub by: ParticipantId,
    /// Which wording the person was shown (its language and digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextShown>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Oath {
    pub at: Timestamp,
    pub witness: ParticipantId,
    pub form: OathForm,
    pub by: ParticipantId,
    /// Which wording of the oath or affirmation the witness was shown and swore to (its language and digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextShown>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterpreterOath {
    pub at: Timestamp,
    pub interpreter: ParticipantId,
    pub languages: Label,
    pub by: ParticipantId,
    /// Which words of the interpreter's oath they were shown and swore to (its language and digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextShown>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsultationMinute {
    pub consultation: ConsultationId,
    pub counsel: ParticipantId,
    /// Everyone counsel took in, counsel excluded.
    pub members: Vec<ParticipantId>,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRun {
    pub started_at: Timestamp,
    pub started_by: ParticipantId,
    pub stopped_at: Option<Timestamp>,
    /// Who stopped it; for a run stopped by the end of the hearing, whoever ended it.
    pub stopped_by: Option<ActorId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSegment {
    pub index: u64,
    pub sha256: Sha256,
    pub ledger_index: u64,
    pub sealed_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TechnicalConditions {
    /// All reconnections in the hearing, everyone's added up.
    pub reconnections: u32,
    pub tracks: Vec<TrackConditions>,
}

/// One participant's track over the whole hearing, as the adapter reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackConditions {
    pub participant: ParticipantId,
    pub track: TrackKind,
    /// Every codec the track used, in the order first seen.
    pub codecs: Vec<Label>,
    pub packets_received: u64,
    pub packets_lost: u64,
}
