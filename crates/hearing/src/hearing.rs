//! The state machine itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use custodia_core::{ActorId, CaseId, HearingId, Label, Repeated, Role, Sha256};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::minutes::{
    AdmittedBy, Attendee, ChannelMinute, ConsultationMinute, IdentityCheck, InterpreterOath, LobbyOnly, MediaGap,
    Minutes, Oath, Period, PeriodEnd, ProtectionOrder, RecordingRun, RightsNotice, SealedSegment, TechnicalConditions,
    TextPresentation, TrackConditions,
};
use crate::{
    Actor, Admission, CaseMember, ConsultationId, Effect, Event, HeardAudio, HearingAction, HearingError,
    HearingEventKind, HearingEventRecord, HearingRole, IdentityVerification, InterpretationMode, Invite, InviteId,
    LeaveCause, MediaProtection, OathForm, ParticipantId, Place, ProtectiveMeasures, Reason, Rules, Schedule,
    TechnicalReport, TextShown, TrackKind, Wording,
};

/// The steps and changes one participant can repeat on their own whose records go on the record one by one in an
/// [`OWN_STEPS_WINDOW`]: changes of their presence (leaving, a lost connection, reconnecting, their media stopped
/// or resumed), muting and unmuting themself, and starting or ending a consultation (each of its members'
/// `consultation_started` or `consultation_ended`, and those of a consultation that ends as they leave). Past
/// it, the window's further records are counted by kind and subject, and each kind and subject counted becomes
/// one record with its count (`repeated`) when the window closes (at the participant's next such step after it,
/// at any later event of the hearing, or at its end), so that a flapping link, a rejoin storm, a mute button
/// pressed again and again or consultations opened and closed in a loop add a few records a window to the
/// public log, not one per step. The state, the court's view and the minutes follow every step.
pub const OWN_STEPS_PER_WINDOW: u32 = 8;

/// A judge's or a clerk's budget of repeatable steps in an [`OWN_STEPS_WINDOW`], in place of
/// [`OWN_STEPS_PER_WINDOW`]: beside their own steps, it covers the court's steps that can be repeated at will,
/// muting and unmuting someone, starting and stopping the recording and presenting a text, so that a court
/// officer's connection in hostile hands (or a stuck button) cannot flood the public log either. It is larger,
/// since a busy hearing has the court muting and unmuting people often; past it, as for anyone, the records are
/// counted and the minutes keep every step.
pub const COURT_STEPS_PER_WINDOW: u32 = 32;

/// See [`OWN_STEPS_PER_WINDOW`].
pub const OWN_STEPS_WINDOW: SignedDuration = SignedDuration::from_secs(600);

/// Identity checks of one person in one hearing. Each stores a detail document as evidence of the case, so a
/// correction is possible (a wrong document type, a second document) and a flood is refused
/// ([`Reason::TooManyIdentityChecks`]).
pub const IDENTITY_CHECKS_PER_PERSON: usize = 3;

/// Times the judge may present one wording to one person, and give one person the rights notice, in a hearing
/// ([`Reason::TooManyPresentations`]): words read again when someone did not follow, not a flood. Each
/// presentation is kept (for the minutes) and each is a step within the judge's budget
/// ([`COURT_STEPS_PER_WINDOW`]).
pub const PRESENTATIONS_PER_PERSON: usize = 8;

/// Recording runs a hearing may have ([`Reason::TooManyRecordingRuns`]): a court stops and starts the recording for
/// its breaks, a few times a day, and each run's end seals a segment of everyone recorded, each an artefact of its
/// own on the record, so starting and stopping it at will must not grow the record without bound.
pub const RECORDING_RUNS_PER_HEARING: usize = 32;

/// Interpretation channels a hearing may open, closed ones included ([`Reason::TooManyChannels`]): each is in the
/// minutes and on the record, so opening and closing at will must not grow them without bound; a long hearing that
/// opens a channel per answer still has room.
pub const CHANNELS_PER_HEARING: usize = 256;

/// Consultations a hearing may have ([`Reason::TooManyConsultations`]): counsel steps out with their client a few
/// times a day, and each consultation's start and end, while recording, cut a segment of each member, each an
/// artefact of its own on the record.
pub const CONSULTATIONS_PER_HEARING: usize = 32;

/// Where the hearing is in its life. It only moves forward: Scheduled → Open → InSession → Ended, or straight to
/// Ended from any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Invites may be issued; nobody can join yet.
    Scheduled,
    /// The lobby accepts invites and the court may admit people; nothing is recorded.
    Open,
    /// The judge has opened the session: oaths, rights notices and recording happen here.
    InSession,
    /// Terminal. Nobody is present and nothing more happens, except the adapter's closing reports (the last
    /// sealed segments, technical conditions).
    Ended,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Scheduled => "scheduled",
            Self::Open => "open",
            Self::InSession => "in session",
            Self::Ended => "ended",
        })
    }
}

/// Where an invite stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteState {
    Pending,
    Used,
    Revoked,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InviteStatus {
    Pending,
    Used { participant: ParticipantId },
    Revoked { at: Timestamp },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct InviteEntry {
    invite: Invite,
    issued_by: ActorId,
    status: InviteStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Muted {
    ByThemself,
    ByCourt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Participant {
    role: HearingRole,
    invite: InviteId,
    arrived_at: Timestamp,
    admitted: Option<(Timestamp, AdmittedBy)>,
    present: bool,
    removed_at: Option<Timestamp>,
    consultation: Option<ConsultationId>,
    muted: Option<Muted>,
    reconnections: u32,
    periods: Vec<Period>,
    /// Stretches during which the gateway received none of their media; the last is open while it lasts.
    media_gaps: Vec<MediaGap>,
    /// They left by their own choice (not a lost connection), and have not come back.
    left: bool,
    /// The records of their own repeatable steps in the current window ([`OWN_STEPS_PER_WINDOW`]).
    own_steps: OwnSteps,
}

/// What a count of records stands for: their kind and whom they concern.
type Counted = (HearingEventKind, Option<ParticipantId>);

/// One participant's repeatable steps in the current [`OWN_STEPS_WINDOW`]: how many had their records recorded
/// one by one, and the records counted past [`OWN_STEPS_PER_WINDOW`], by kind and subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OwnSteps {
    window_from: Option<Timestamp>,
    recorded: u32,
    counted: BTreeMap<Counted, Repeated>,
}

impl OwnSteps {
    /// Closes the window if it has run its length by `at` (or in any case with `now`): the counts to record.
    fn close(&mut self, at: Timestamp, now: bool) -> BTreeMap<Counted, Repeated> {
        let over = self.window_from.is_some_and(|from| now || at.duration_since(from) >= OWN_STEPS_WINDOW);
        if !over {
            return BTreeMap::new();
        }
        self.window_from = None;
        self.recorded = 0;
        std::mem::take(&mut self.counted)
    }

    /// Whether a step at `at` gets its records of its own; if not, the caller counts them ([`Self::count`]).
    fn take(&mut self, at: Timestamp, budget: u32) -> bool {
        self.window_from.get_or_insert(at);
        if self.recorded < budget {
            self.recorded += 1;
            return true;
        }
        false
    }

    fn count(&mut self, record: &HearingEventRecord) {
        let key = (record.kind, record.subject.clone());
        let since = record.at;
        self.counted.entry(key).and_modify(|counted| counted.count += 1).or_insert(Repeated { count: 1, since });
    }
}

impl Participant {
    fn admit(&mut self, at: Timestamp, by: AdmittedBy) {
        self.admitted = Some((at, by));
        self.periods.push(Period { from: at, until: None, ended_by: None });
    }

    fn media_stopped(&self) -> bool {
        self.media_gaps.last().is_some_and(|gap| gap.until.is_none())
    }

    /// Closes an open gap in their media: it came back, or they are gone (a new connection starts afresh).
    fn close_media_gap(&mut self, at: Timestamp) {
        if let Some(gap) = self.media_gaps.last_mut()
            && gap.until.is_none()
        {
            gap.until = Some(at);
        }
    }

    fn close_period(&mut self, at: Timestamp, end: PeriodEnd) {
        if let Some(period) = self.periods.last_mut()
            && period.until.is_none()
        {
            period.until = Some(at);
            period.ended_by = Some(end);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Consultation {
    counsel: ParticipantId,
    /// Whom counsel took in, counsel excluded.
    members: Vec<ParticipantId>,
    /// Who is in it now, counsel included.
    current: BTreeSet<ParticipantId>,
    started_at: Timestamp,
    ended_at: Option<Timestamp>,
    detail_sha256: Sha256,
}

/// One hearing: the rules, and everything that has happened so far. See the crate documentation.
///
/// `Clone` and `PartialEq` so that a caller (or a test) can keep a snapshot; a refused event leaves the hearing
/// exactly as it was. `Debug` withholds the place, which the clerk typed, and which channel each participant
/// listens to, which tells their language; identity checks and protective orders withhold what was typed in them.
#[derive(Clone, PartialEq, Eq)]
pub struct Hearing {
    id: HearingId,
    case: CaseId,
    scheduled_by: ActorId,
    scheduled_for: Timestamp,
    place: Label,
    rules: Rules,
    phase: Phase,
    opened_at: Option<Timestamp>,
    session_started_at: Option<Timestamp>,
    ended_at: Option<Timestamp>,
    last_at: Timestamp,
    invites: BTreeMap<InviteId, InviteEntry>,
    participants: BTreeMap<ParticipantId, Participant>,
    /// Participant ids in the order they joined.
    arrivals: Vec<ParticipantId>,
    consultations: BTreeMap<ConsultationId, Consultation>,
    next_consultation: u32,
    /// Recording runs; the last is open while recording.
    recording: Vec<RecordingRun>,
    segments: Vec<SealedSegment>,
    identity_checks: Vec<IdentityCheck>,
    texts_presented: Vec<TextPresentation>,
    /// The presentations whose step has not been taken yet, in order: the last of each wording per person. Shown
    /// again to the person (and the judge who presented them) when they reconnect.
    awaiting_step: Vec<TextPresentation>,
    rights_notices: Vec<RightsNotice>,
    oaths: Vec<Oath>,
    interpreters: Vec<InterpreterOath>,
    tracks: BTreeMap<(ParticipantId, TrackKind), TrackConditions>,
    /// The interpretation channels, open and closed, in order (open ones have no `closed_at`).
    channels: Vec<ChannelMinute>,
    /// What each participant chose to hear: a channel's language, or the floor (absent).
    listening: BTreeMap<ParticipantId, Label>,
    /// The protective orders in force, by the invite of the person protected.
    protections: BTreeMap<InviteId, ProtectiveMeasures>,
    /// Every order, change and lifting, for the minutes.
    protection_orders: Vec<ProtectionOrder>,
}

impl fmt::Debug for Hearing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id,
            case,
            scheduled_by,
            scheduled_for,
            place: _,
            rules,
            phase,
            opened_at,
            session_started_at,
            ended_at,
            last_at,
            invites,
            participants,
            arrivals,
            consultations,
            next_consultation,
            recording,
            segments,
            identity_checks,
            texts_presented,
            awaiting_step,
            rights_notices,
            oaths,
            interpreters,
            tracks,
            channels,
            listening: _,
            protections,
            protection_orders,
        } = self;
        f.debug_struct("Hearing")
            .field("id", id)
            .field("case", case)
            .field("scheduled_by", scheduled_by)
            .field("scheduled_for", scheduled_for)
            .field("rules", rules)
            .field("phase", phase)
            .field("opened_at", opened_at)
            .field("session_started_at", session_started_at)
            .field("ended_at", ended_at)
            .field("last_at", last_at)
            .field("invites", invites)
            .field("participants", participants)
            .field("arrivals", arrivals)
            .field("consultations", consultations)
            .field("next_consultation", next_consultation)
            .field("recording", recording)
            .field("segments", segments)
            .field("identity_checks", identity_checks)
            .field("texts_presented", texts_presented)
            .field("awaiting_step", awaiting_step)
            .field("rights_notices", rights_notices)
            .field("oaths", oaths)
            .field("interpreters", interpreters)
            .field("tracks", tracks)
            .field("channels", channels)
            .field("protections", protections)
            .field("protection_orders", protection_orders)
            .finish_non_exhaustive()
    }
}

/// The context of one event being handled: for refusals and for the records it produces.
struct Step {
    at: Timestamp,
    actor: Actor,
    action: HearingAction,
    records: Vec<HearingEventRecord>,
    /// `ShowText` effects, after everything else.
    shown: Vec<Effect>,
    /// The participant whose repeatable step this is: its records are within their budget
    /// ([`OWN_STEPS_PER_WINDOW`]).
    charged_to: Option<ParticipantId>,
}

impl Step {
    fn refuse(&self, reason: Reason) -> HearingError {
        HearingError::Refused { actor: self.actor.clone(), action: self.action, reason }
    }

    fn record(
        &mut self,
        actor: &ActorId,
        kind: HearingEventKind,
        subject: Option<&ParticipantId>,
        detail_sha256: Option<Sha256>,
    ) {
        self.records.push(HearingEventRecord {
            at: self.at,
            actor: actor.clone(),
            kind,
            subject: subject.cloned(),
            detail_sha256,
            repeated: None,
        });
    }

    /// One record standing for `repeated` records of `kind` about `subject`, past `participant`'s budget.
    fn count_record(
        &self,
        participant: &ParticipantId,
        (kind, subject): Counted,
        repeated: Repeated,
    ) -> HearingEventRecord {
        HearingEventRecord {
            at: self.at,
            actor: participant.as_actor().clone(),
            kind,
            subject,
            detail_sha256: None,
            repeated: Some(repeated),
        }
    }

    /// The SHA-256 of a canonical detail document.
    fn digest<T: Serialize>(&self, detail: &T) -> Result<Sha256, HearingError> {
        custodia_core::to_canonical_vec(detail)
            .map(|bytes| Sha256::of(&bytes))
            .map_err(|source| HearingError::Detail { action: self.action, source })
    }
}

/// The media routing the state implies, compared before and after each event to make the effects.
struct Routing {
    places: BTreeMap<ParticipantId, Place>,
    muted: BTreeMap<ParticipantId, bool>,
    recording: bool,
    recorded: BTreeSet<ParticipantId>,
    protected: BTreeMap<ParticipantId, MediaProtection>,
    hears: BTreeMap<ParticipantId, Option<HeardAudio>>,
}

// Detail documents: what a record's `detail_sha256` is the digest of. Each names its kind and the hearing, so a
// digest cannot be passed off as another record's.

#[derive(Serialize)]
struct ScheduleDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hearing: &'a HearingId,
    case: &'a CaseId,
    scheduled_for: Timestamp,
    place: &'a Label,
    rules: Rules,
}

#[derive(Serialize)]
struct ChannelDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hearing: &'a HearingId,
    language: &'a Label,
    mode: InterpretationMode,
}

#[derive(Serialize)]
struct ProtectionDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hearing: &'a HearingId,
    invite: &'a InviteId,
    measures: Option<&'a ProtectiveMeasures>,
}

#[derive(Serialize)]
struct InviteDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hearing: &'a HearingId,
    invite: &'a Invite,
}

#[derive(Serialize)]
struct InviteRevokedDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hearing: &'a HearingId,
    invite: &'a InviteId,
}

#[derive(Serialize)]
struct ConsultationDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hearing: &'a HearingId,
    consultation: ConsultationId,
    counsel: &'a ParticipantId,
    members: &'a [ParticipantId],
}

#[derive(Serialize)]
struct InterpreterDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hearing: &'a HearingId,
    interpreter: &'a ParticipantId,
    languages: &'a Label,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a TextShown>,
}

#[derive(Serialize)]
struct PresentationDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hearing: &'a HearingId,
    person: &'a ParticipantId,
    wording: Wording,
    text: &'a TextShown,
}

const THE_COURT: &str = "the judge or the clerk";
const THE_JUDGE: &str = "the judge";

impl Hearing {
    /// A clerk of the case schedules a hearing. The one effect is the `hearing_scheduled` record.
    pub fn schedule(at: Timestamp, schedule: Schedule) -> Result<(Self, Vec<Effect>), HearingError> {
        let Schedule { hearing, case, by, scheduled_for, place, rules } = schedule;
        let mut step = Step {
            at,
            actor: Actor::Member(by.actor.clone()),
            action: HearingAction::Schedule,
            records: Vec::new(),
            shown: Vec::new(),
            charged_to: None,
        };
        require_clerk(&step, &by)?;
        let detail = step.digest(&ScheduleDetail {
            kind: "hearing_scheduled",
            hearing: &hearing,
            case: &case,
            scheduled_for,
            place: &place,
            rules,
        })?;
        step.record(&by.actor, HearingEventKind::HearingScheduled, None, Some(detail));
        let hearing = Self {
            id: hearing,
            case,
            scheduled_by: by.actor,
            scheduled_for,
            place,
            rules,
            phase: Phase::Scheduled,
            opened_at: None,
            session_started_at: None,
            ended_at: None,
            last_at: at,
            invites: BTreeMap::new(),
            participants: BTreeMap::new(),
            arrivals: Vec::new(),
            consultations: BTreeMap::new(),
            next_consultation: 1,
            recording: Vec::new(),
            segments: Vec::new(),
            identity_checks: Vec::new(),
            texts_presented: Vec::new(),
            awaiting_step: Vec::new(),
            rights_notices: Vec::new(),
            oaths: Vec::new(),
            interpreters: Vec::new(),
            tracks: BTreeMap::new(),
            channels: Vec::new(),
            listening: BTreeMap::new(),
            protections: BTreeMap::new(),
            protection_orders: Vec::new(),
        };
        Ok((hearing, step.records.into_iter().map(Effect::Record).collect()))
    }

    /// Applies one event that happened at `at`, which must not be before the previous event's time. On success,
    /// the effects to apply, in order (see [`Effect`]); on refusal, the hearing is unchanged.
    pub fn handle(&mut self, at: Timestamp, event: Event) -> Result<Vec<Effect>, HearingError> {
        let mut step = Step {
            at,
            actor: event.actor(),
            action: event.action(),
            records: Vec::new(),
            shown: Vec::new(),
            charged_to: None,
        };
        if at < self.last_at {
            return Err(step.refuse(Reason::TimeWentBackwards { last: self.last_at, at }));
        }
        let before = self.routing();
        match event {
            Event::IssueInvite { by, invite } => self.issue_invite(&mut step, &by, invite),
            Event::RevokeInvite { by, invite } => self.revoke_invite(&mut step, &by, &invite),
            Event::OpenLobby { by } => self.open_lobby(&mut step, &by),
            Event::OrderProtection { by, invite, measures } => self.order_protection(&mut step, &by, &invite, measures),
            Event::Close { by } => {
                self.require_not_ended(&step)?;
                require_clerk(&step, &by)?;
                self.end_now(&mut step, &by.actor);
                Ok(())
            }
            Event::Join { invite, participant } => self.join(&mut step, &invite, participant),
            Event::Admit { by, participant } => self.admit(&mut step, &by, &participant),
            Event::Remove { by, participant } => self.remove(&mut step, &by, &participant),
            Event::Leave { participant, cause } => self.leave(&mut step, &participant, cause),
            Event::Reconnect { participant } => self.reconnect(&mut step, &participant),
            Event::Mute { by, participant } => self.mute(&mut step, &by, &participant),
            Event::Unmute { by, participant } => self.unmute(&mut step, &by, &participant),
            Event::StartSession { by } => self.start_session(&mut step, &by),
            Event::StartRecording { by } => self.start_recording(&mut step, &by),
            Event::StopRecording { by } => self.stop_recording(&mut step, &by),
            Event::StartConsultation { by, with } => self.start_consultation(&mut step, &by, with),
            Event::EndConsultation { by, consultation } => self.end_consultation(&mut step, &by, consultation),
            Event::VerifyIdentity { by, person, verification } => {
                self.verify_identity(&mut step, &by, &person, &verification)
            }
            Event::PresentText { by, person, wording, text } => {
                self.present_text(&mut step, &by, &person, wording, text)
            }
            Event::GiveRightsNotice { by, person, text } => self.give_rights_notice(&mut step, &by, &person, text),
            Event::TakeOath { by, witness, form, despite_no_media, text } => {
                self.take_oath(&mut step, &by, &witness, form, despite_no_media, text)
            }
            Event::SwearInterpreter { by, interpreter, languages } => {
                self.swear_interpreter(&mut step, &by, &interpreter, languages)
            }
            Event::OpenChannel { by, interpreter, language, mode } => {
                self.open_channel(&mut step, &by, &interpreter, language, mode)
            }
            Event::CloseChannel { by, language } => self.close_channel(&mut step, &by, &language),
            Event::ChooseChannel { participant, language } => self.choose_channel(&step, &participant, language),
            Event::End { by } => {
                self.require_active(&step)?;
                self.court(&step, &by)?;
                self.end_now(&mut step, by.as_actor());
                Ok(())
            }
            Event::SegmentSealed { index, sha256, ledger_index } => {
                self.segment_sealed(&step, index, sha256, ledger_index)
            }
            Event::TechnicalReport(report) => self.technical_report(&step, report),
            Event::MediaStopped { participant } => self.media_report(&mut step, &participant, true),
            Event::MediaResumed { participant } => self.media_report(&mut step, &participant, false),
        }?;
        self.charge(&mut step);
        self.record_own_step_counts(&mut step, false);
        self.last_at = at;
        Ok(effects(step.records, step.shown, &before, &self.routing()))
    }

    // ---- Reading the state ----

    pub fn id(&self) -> &HearingId {
        &self.id
    }

    pub fn case(&self) -> &CaseId {
        &self.case
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// The court and room that hear the testimony, in words (the minutes' `place`).
    pub fn venue(&self) -> &Label {
        &self.place
    }

    pub fn scheduled_for(&self) -> Timestamp {
        self.scheduled_for
    }

    /// The time of the latest event accepted. An adapter whose wall clock steps back clamps to this.
    pub fn last_event_at(&self) -> Timestamp {
        self.last_at
    }

    /// Where invite `id` stands at time `at`, if it exists.
    pub fn invite_state(&self, id: &InviteId, at: Timestamp) -> Option<InviteState> {
        self.invites.get(id).map(|entry| match entry.status {
            InviteStatus::Used { .. } => InviteState::Used,
            InviteStatus::Revoked { .. } => InviteState::Revoked,
            InviteStatus::Pending if at >= entry.invite.expires_at => InviteState::Expired,
            InviteStatus::Pending => InviteState::Pending,
        })
    }

    /// Everyone who has joined, in order of arrival.
    pub fn participants(&self) -> impl Iterator<Item = &ParticipantId> {
        self.arrivals.iter()
    }

    pub fn role_of(&self, participant: &ParticipantId) -> Option<HearingRole> {
        self.participants.get(participant).map(|p| p.role)
    }

    pub fn is_admitted(&self, participant: &ParticipantId) -> bool {
        self.participants.get(participant).is_some_and(|p| p.admitted.is_some())
    }

    /// Whether the court removed them (for good).
    pub fn is_removed(&self, participant: &ParticipantId) -> bool {
        self.participants.get(participant).is_some_and(|p| p.removed_at.is_some())
    }

    /// Whether they left the hearing themselves (and have not come back), as against losing their connection.
    pub fn has_left(&self, participant: &ParticipantId) -> bool {
        self.participants.get(participant).is_some_and(|p| !p.present && p.left)
    }

    /// The identity checks recorded so far, in order.
    pub fn identity_checks(&self) -> &[IdentityCheck] {
        &self.identity_checks
    }

    /// The texts the judge has put on people's screens so far, in order.
    pub fn texts_presented(&self) -> &[TextPresentation] {
        &self.texts_presented
    }

    /// The texts presented whose step (the notice given, the oath or affirmation taken, the interpreter sworn) has
    /// not been taken yet, in the order presented: for each person and wording, the words last presented.
    pub fn texts_awaiting_step(&self) -> &[TextPresentation] {
        &self.awaiting_step
    }

    /// The rights notices given so far, in order.
    pub fn rights_notices(&self) -> &[RightsNotice] {
        &self.rights_notices
    }

    /// The oaths and affirmations taken so far, in order.
    pub fn oaths(&self) -> &[Oath] {
        &self.oaths
    }

    /// The interpreters sworn so far, in order.
    pub fn interpreters_sworn(&self) -> &[InterpreterOath] {
        &self.interpreters
    }

    /// Whether the room shows `other` to `viewer` (in its list of who is there). The court sees everyone. Anyone
    /// else sees themselves, the court, and those in the same place as them (the main room, or their
    /// consultation), whose video and sound they get anyway; not who waits in the lobby, who is in another
    /// consultation or who is away. So a witness waiting to be let in does not learn that the accused is there.
    pub fn shows(&self, viewer: &ParticipantId, other: &ParticipantId) -> bool {
        let (Some(seer), Some(seen)) = (self.participants.get(viewer), self.participants.get(other)) else {
            return false;
        };
        if viewer == other || seer.role.is_court() || seen.role.is_court() {
            return true;
        }
        match (self.place_of(viewer), self.place_of(other)) {
            (Some(here), Some(there)) => here == there && matches!(here, Place::MainRoom | Place::Consultation(_)),
            _ => false,
        }
    }

    /// The interpretation channels open now.
    pub fn open_channels(&self) -> impl Iterator<Item = &ChannelMinute> {
        self.channels.iter().filter(|channel| channel.closed_at.is_none())
    }

    /// The channel a participant chose to hear, if any (`None`: the floor).
    /// Who listens to the channel into `language` now.
    pub fn listeners(&self, language: &Label) -> impl Iterator<Item = &ParticipantId> {
        self.listening.iter().filter(move |(_, chosen)| *chosen == language).map(|(participant, _)| participant)
    }

    pub fn listening_to(&self, participant: &ParticipantId) -> Option<&Label> {
        self.listening.get(participant).filter(|language| self.open_channel_into(language).is_some())
    }

    fn open_channel_into(&self, language: &Label) -> Option<&ChannelMinute> {
        self.open_channels().find(|channel| channel.language == *language)
    }

    /// Whose audio a participant hears, of those in their place, and how (`None`: everyone's, in full). A listener
    /// of an open simultaneous channel hears its interpreter in full and the floor ducked beneath (everyone but the
    /// interpreters speaking into simultaneous channels); anyone else hears the floor in full, and no interpreter
    /// speaking into a simultaneous channel (whose voice is for their listeners), except that an interpreter hears
    /// the floor.
    pub fn hears_audio_from(&self, participant: &ParticipantId) -> Option<HeardAudio> {
        // Channels are the main room's: in a consultation, its members hear each other.
        if self.place_of(participant) != Some(Place::MainRoom) {
            return None;
        }
        // A channel whose interpreter is not in the main room (they left, lost their connection, or are in a
        // consultation) carries nothing: its listeners hear the floor rather than silence.
        let simultaneous: Vec<&ChannelMinute> = self
            .open_channels()
            .filter(|channel| channel.mode == InterpretationMode::Simultaneous)
            .filter(|channel| self.place_of(&channel.interpreter) == Some(Place::MainRoom))
            .collect();
        if simultaneous.is_empty() {
            return None;
        }
        let interpreters: BTreeSet<&ParticipantId> = simultaneous.iter().map(|channel| &channel.interpreter).collect();
        let floor = self.participants.keys().filter(|other| !interpreters.contains(other)).cloned();
        let channel = self
            .listening_to(participant)
            .and_then(|language| simultaneous.iter().find(|channel| channel.language == *language));
        Some(match channel {
            Some(channel) => {
                HeardAudio { full: BTreeSet::from([channel.interpreter.clone()]), ducked: floor.collect() }
            }
            None => HeardAudio::only(floor),
        })
    }

    /// The protective order in force for a participant, if any.
    pub fn protection_of(&self, participant: &ParticipantId) -> Option<&ProtectiveMeasures> {
        self.protections.get(&self.participants.get(participant)?.invite)
    }

    /// The protective order in force for the person an invite is for, if any.
    pub fn protection_for_invite(&self, invite: &InviteId) -> Option<&ProtectiveMeasures> {
        self.protections.get(invite)
    }

    /// The roles that may have a participant's original recording, if an order masked their face or voice at any
    /// time in this hearing: the court and the roles the order in force privileges (or, once lifted, the last order
    /// that masked anything). `None`: nothing restricts it. A lifted order does not open what was recorded under it.
    pub fn recording_privileges(&self, participant: &ParticipantId) -> Option<BTreeSet<HearingRole>> {
        let invite = &self.participants.get(participant)?.invite;
        let in_force = self.protections.get(invite).filter(|measures| measures.masks_media());
        let last_masking = || {
            self.protection_orders
                .iter()
                .rev()
                .filter(|order| order.invite == *invite)
                .find_map(|order| order.measures.as_ref().filter(|measures| measures.masks_media()))
        };
        let measures = in_force.or_else(last_masking)?;
        Some(HearingRole::ALL.into_iter().filter(|role| measures.privileges(*role)).collect())
    }

    /// How the media plane must treat a participant's media ([`Effect::Protect`]): `None` unless an order masks
    /// their face or their voice.
    pub fn media_protection(&self, participant: &ParticipantId) -> Option<MediaProtection> {
        let measures = self.protection_of(participant).filter(|measures| measures.masks_media())?;
        Some(MediaProtection {
            mask_video: measures.mask_face,
            alter_voice: measures.alter_voice,
            original_to: self
                .participants
                .iter()
                .filter(|(id, p)| *id != participant && measures.privileges(p.role))
                .map(|(id, _)| id.clone())
                .collect(),
        })
    }

    /// The name `viewer` is shown for `other` in place of the one their invite gave: the pseudonym of `other`'s
    /// protective order, unless `viewer` is `other` or holds a role the order privileges. `None`: the name.
    pub fn pseudonym_for(&self, viewer: Option<&ParticipantId>, other: &ParticipantId) -> Option<&Label> {
        let measures = self.protection_of(other)?;
        let privileged = viewer.is_some_and(|viewer| {
            viewer == other || self.role_of(viewer).is_some_and(|role| measures.privileges(role))
        });
        (!privileged).then_some(&measures.pseudonym)
    }

    /// The invite a participant came in with.
    pub fn invite_of(&self, participant: &ParticipantId) -> Option<&InviteId> {
        self.participants.get(participant).map(|p| &p.invite)
    }

    /// The case member who issued an invite.
    pub fn invite_issuer(&self, id: &InviteId) -> Option<&ActorId> {
        self.invites.get(id).map(|entry| &entry.issued_by)
    }

    /// The role an invite is for.
    pub fn invite_role(&self, id: &InviteId) -> Option<HearingRole> {
        self.invites.get(id).map(|entry| entry.invite.role)
    }

    /// Whether the gateway has stopped receiving their media (reported by [`Event::MediaStopped`]), while they are
    /// connected.
    pub fn media_stopped(&self, participant: &ParticipantId) -> bool {
        self.participants.get(participant).is_some_and(Participant::media_stopped)
    }

    pub fn is_muted(&self, participant: &ParticipantId) -> bool {
        self.participants.get(participant).is_some_and(|p| p.muted.is_some())
    }

    /// Where the participant's media goes now; `None` for someone who never joined.
    pub fn place_of(&self, participant: &ParticipantId) -> Option<Place> {
        self.participants.get(participant).map(|p| self.place(p))
    }

    /// Who is in a consultation now, counsel included; empty once it has ended.
    pub fn consultation_members(&self, consultation: ConsultationId) -> BTreeSet<ParticipantId> {
        self.consultations.get(&consultation).map(|c| c.current.clone()).unwrap_or_default()
    }

    pub fn is_recording(&self) -> bool {
        self.recording.last().is_some_and(|run| run.stopped_at.is_none())
    }

    /// Whose tracks the recorder writes now: while recording, every participant in the main room (admitted,
    /// connected, not removed, not in a consultation), muted or not. Nobody else, ever.
    pub fn recorded_participants(&self) -> BTreeSet<ParticipantId> {
        if !self.is_recording() {
            return BTreeSet::new();
        }
        self.participants.iter().filter(|(_, p)| self.place(p) == Place::MainRoom).map(|(id, _)| id.clone()).collect()
    }

    /// The minutes as they stand; final once the phase is [`Phase::Ended`] and the last segment is reported.
    pub fn minutes(&self) -> Minutes {
        let mut present = Vec::new();
        let mut not_admitted = Vec::new();
        for id in &self.arrivals {
            let Some(p) = self.participants.get(id) else { continue };
            match &p.admitted {
                Some((admitted_at, admitted_by)) => present.push(Attendee {
                    participant: id.clone(),
                    role: p.role,
                    invite: p.invite.clone(),
                    arrived_at: p.arrived_at,
                    admitted_at: *admitted_at,
                    admitted_by: admitted_by.clone(),
                    periods: p.periods.clone(),
                    reconnections: p.reconnections,
                    removed_at: p.removed_at,
                    media_gaps: p.media_gaps.clone(),
                }),
                None => not_admitted.push(LobbyOnly {
                    participant: id.clone(),
                    role: p.role,
                    invite: p.invite.clone(),
                    arrived_at: p.arrived_at,
                    removed_at: p.removed_at,
                }),
            }
        }
        let consultations = self
            .consultations
            .iter()
            .map(|(id, c)| ConsultationMinute {
                consultation: *id,
                counsel: c.counsel.clone(),
                members: c.members.clone(),
                started_at: c.started_at,
                ended_at: c.ended_at,
            })
            .collect();
        Minutes {
            hearing: self.id.clone(),
            case: self.case.clone(),
            place: self.place.clone(),
            scheduled_by: self.scheduled_by.clone(),
            scheduled_for: self.scheduled_for,
            rules: self.rules,
            phase: self.phase,
            opened_at: self.opened_at,
            session_started_at: self.session_started_at,
            ended_at: self.ended_at,
            present,
            not_admitted,
            identity_checks: self.identity_checks.clone(),
            texts_presented: self.texts_presented.clone(),
            rights_notices: self.rights_notices.clone(),
            oaths: self.oaths.clone(),
            interpreters: self.interpreters.clone(),
            channels: self.channels.clone(),
            protection_orders: self.protection_orders.clone(),
            consultations,
            recording: self.recording.clone(),
            segments: self.segments.clone(),
            technical: TechnicalConditions {
                reconnections: self.participants.values().fold(0, |sum, p| sum.saturating_add(p.reconnections)),
                tracks: self.tracks.values().cloned().collect(),
            },
        }
    }

    fn place(&self, p: &Participant) -> Place {
        if self.phase == Phase::Ended || p.removed_at.is_some() || !p.present {
            Place::Away
        } else if p.admitted.is_none() {
            Place::Lobby
        } else if let Some(consultation) = p.consultation {
            Place::Consultation(consultation)
        } else {
            Place::MainRoom
        }
    }

    fn routing(&self) -> Routing {
        Routing {
            places: self.participants.iter().map(|(id, p)| (id.clone(), self.place(p))).collect(),
            muted: self.participants.iter().map(|(id, p)| (id.clone(), p.muted.is_some())).collect(),
            recording: self.is_recording(),
            recorded: self.recorded_participants(),
            protected: self
                .participants
                .keys()
                .filter_map(|id| Some((id.clone(), self.media_protection(id)?)))
                .collect(),
            hears: self.participants.keys().map(|id| (id.clone(), self.hears_audio_from(id))).collect(),
        }
    }

    // ---- Checks. Each handler runs all its checks before it changes anything. ----

    fn require_not_ended(&self, step: &Step) -> Result<(), HearingError> {
        if self.phase == Phase::Ended { Err(step.refuse(Reason::HearingEnded)) } else { Ok(()) }
    }

    /// Open or in session: the room exists.
    fn require_active(&self, step: &Step) -> Result<(), HearingError> {
        match self.phase {
            Phase::Open | Phase::InSession => Ok(()),
            Phase::Ended => Err(step.refuse(Reason::HearingEnded)),
            Phase::Scheduled => Err(step.refuse(Reason::WrongPhase { phase: self.phase, needs: "open or in session" })),
        }
    }

    fn require_phase(&self, step: &Step, phase: Phase, needs: &'static str) -> Result<(), HearingError> {
        if self.phase == phase { Ok(()) } else { Err(step.refuse(Reason::WrongPhase { phase: self.phase, needs })) }
    }

    fn known(&self, step: &Step, id: &ParticipantId) -> Result<&Participant, HearingError> {
        self.participants.get(id).ok_or_else(|| step.refuse(Reason::UnknownParticipant { participant: id.clone() }))
    }

    /// Known and not removed.
    fn not_removed(&self, step: &Step, id: &ParticipantId) -> Result<&Participant, HearingError> {
        let p = self.known(step, id)?;
        if p.removed_at.is_some() {
            return Err(step.refuse(Reason::Removed { participant: id.clone() }));
        }
        Ok(p)
    }

    /// Connected and past the lobby: in the main room or a consultation.
    fn in_hearing(&self, step: &Step, id: &ParticipantId) -> Result<&Participant, HearingError> {
        let p = self.not_removed(step, id)?;
        if !p.present {
            return Err(step.refuse(Reason::NotPresent { participant: id.clone() }));
        }
        if p.admitted.is_none() {
            return Err(step.refuse(Reason::NotAdmitted { participant: id.clone() }));
        }
        Ok(p)
    }

    fn in_main_room(&self, step: &Step, id: &ParticipantId) -> Result<&Participant, HearingError> {
        let p = self.in_hearing(step, id)?;
        if let Some(consultation) = p.consultation {
            return Err(step.refuse(Reason::InConsultation { participant: id.clone(), consultation }));
        }
        Ok(p)
    }

    fn with_role(
        &self,
        step: &Step,
        id: &ParticipantId,
        allowed: &'static str,
        may: impl Fn(HearingRole) -> bool,
    ) -> Result<&Participant, HearingError> {
        let p = self.in_main_room(step, id)?;
        if !may(p.role) {
            return Err(step.refuse(Reason::RoleNotAllowed { participant: id.clone(), role: p.role, allowed }));
        }
        Ok(p)
    }

    /// A judge or clerk, in the main room.
    fn court(&self, step: &Step, id: &ParticipantId) -> Result<&Participant, HearingError> {
        self.with_role(step, id, THE_COURT, HearingRole::is_court)
    }

    fn judge(&self, step: &Step, id: &ParticipantId) -> Result<&Participant, HearingError> {
        self.with_role(step, id, THE_JUDGE, |role| role == HearingRole::Judge)
    }

    /// The person acted upon: in the main room, with a role that `expected` describes.
    fn subject(
        &self,
        step: &Step,
        id: &ParticipantId,
        expected: &'static str,
        fits: impl Fn(HearingRole) -> bool,
    ) -> Result<&Participant, HearingError> {
        let p = self.in_main_room(step, id)?;
        if !fits(p.role) {
            return Err(step.refuse(Reason::WrongSubjectRole { participant: id.clone(), role: p.role, expected }));
        }
        Ok(p)
    }

    fn participant_mut(&mut self, id: &ParticipantId) -> &mut Participant {
        // Handlers call this only for ids their checks have found.
        self.participants.get_mut(id).expect("checked participant")
    }

    // ---- The case console ----

    fn issue_invite(&mut self, step: &mut Step, by: &CaseMember, invite: Invite) -> Result<(), HearingError> {
        self.require_not_ended(step)?;
        require_clerk(step, by)?;
        if self.invites.contains_key(&invite.id) {
            return Err(step.refuse(Reason::InviteIdTaken { invite: invite.id }));
        }
        if invite.expires_at <= step.at {
            return Err(
                step.refuse(Reason::InviteExpiresBeforeIssue { invite: invite.id, expires_at: invite.expires_at })
            );
        }
        if invite.admission == Admission::OnJoin && !invite.role.is_court() {
            return Err(step.refuse(Reason::AdmissionOnJoinNotAllowed { invite: invite.id, role: invite.role }));
        }
        let detail = step.digest(&InviteDetail { kind: "invite_issued", hearing: &self.id, invite: &invite })?;
        step.record(&by.actor, HearingEventKind::InviteIssued, None, Some(detail));
        self.invites.insert(
            invite.id.clone(),
            InviteEntry { invite, issued_by: by.actor.clone(), status: InviteStatus::Pending },
        );
        Ok(())
    }

    fn revoke_invite(&mut self, step: &mut Step, by: &CaseMember, id: &InviteId) -> Result<(), HearingError> {
        self.require_not_ended(step)?;
        require_clerk(step, by)?;
        self.invite_to_use(step, id)?;
        let detail = step.digest(&InviteRevokedDetail { kind: "invite_revoked", hearing: &self.id, invite: id })?;
        step.record(&by.actor, HearingEventKind::InviteRevoked, None, Some(detail));
        if let Some(entry) = self.invites.get_mut(id) {
            entry.status = InviteStatus::Revoked { at: step.at };
        }
        Ok(())
    }

    /// An invite that is pending and unexpired at the step's time.
    fn invite_to_use(&self, step: &Step, id: &InviteId) -> Result<&InviteEntry, HearingError> {
        let entry = self.invites.get(id).ok_or_else(|| step.refuse(Reason::UnknownInvite { invite: id.clone() }))?;
        match &entry.status {
            InviteStatus::Used { participant } => {
                Err(step.refuse(Reason::InviteUsed { invite: id.clone(), participant: participant.clone() }))
            }
            InviteStatus::Revoked { at } => {
                Err(step.refuse(Reason::InviteRevoked { invite: id.clone(), revoked_at: *at }))
            }
            InviteStatus::Pending if step.at >= entry.invite.expires_at => {
                Err(step.refuse(Reason::InviteExpired { invite: id.clone(), expired_at: entry.invite.expires_at }))
            }
            InviteStatus::Pending => Ok(entry),
        }
    }

    /// Of `others`, one whom `witness`'s protective order does not privilege, if the order holds any measure.
    fn outside_protection<'a>(
        &self,
        witness: &ParticipantId,
        others: impl IntoIterator<Item = &'a ParticipantId>,
    ) -> Option<ParticipantId> {
        let measures = self.protection_of(witness)?;
        others
            .into_iter()
            .filter(|other| *other != witness)
            .find(|other| self.role_of(other).is_none_or(|role| !measures.privileges(role)))
            .cloned()
    }

    /// The judge's protective order for the person `invite` is for: made, changed or lifted (`None`).
    fn order_protection(
        &mut self,
        step: &mut Step,
        by: &CaseMember,
        invite: &InviteId,
        measures: Option<ProtectiveMeasures>,
    ) -> Result<(), HearingError> {
        self.require_not_ended(step)?;
        if by.role != Role::Judge {
            return Err(step.refuse(Reason::CaseRoleNotAllowed { role: by.role, allowed: "a judge of the case" }));
        }
        let entry =
            self.invites.get(invite).ok_or_else(|| step.refuse(Reason::UnknownInvite { invite: invite.clone() }))?;
        if entry.invite.role != HearingRole::Witness {
            return Err(
                step.refuse(Reason::ProtectionForWitnessOnly { invite: invite.clone(), role: entry.invite.role })
            );
        }
        if let Some(role) = measures.iter().flat_map(|m| &m.privileged).find(|role| !may_be_privileged(**role)) {
            return Err(step.refuse(Reason::ProtectionPrivilegeNotAllowed { role: *role }));
        }
        let current = self.protections.get(invite);
        match (&measures, current) {
            (None, None) => return Err(step.refuse(Reason::NoProtectionToLift { invite: invite.clone() })),
            (Some(new), Some(current)) if new == current => {
                return Err(step.refuse(Reason::ProtectionUnchanged { invite: invite.clone() }));
            }
            _ => {}
        }
        let participant = match &entry.status {
            InviteStatus::Used { participant } => Some(participant.clone()),
            InviteStatus::Pending | InviteStatus::Revoked { .. } => None,
        };
        let detail = step.digest(&ProtectionDetail {
            kind: "protection_order",
            hearing: &self.id,
            invite,
            measures: measures.as_ref(),
        })?;
        let kind = match measures {
            Some(_) => HearingEventKind::ProtectionOrdered,
            None => HearingEventKind::ProtectionLifted,
        };
        step.record(&by.actor, kind, participant.as_ref(), Some(detail));
        match &measures {
            Some(measures) => self.protections.insert(invite.clone(), measures.clone()),
            None => self.protections.remove(invite),
        };
        // An order made while the witness is in a consultation with someone it does not privilege ends it.
        let in_consultation =
            participant.as_ref().and_then(|p| Some((p.clone(), self.participants.get(p)?.consultation?)));
        if let Some((witness, consultation)) = in_consultation {
            let members = self.consultation_members(consultation);
            if self.outside_protection(&witness, &members).is_some() {
                self.end_consultation_now(step, consultation, &by.actor);
            }
        }
        self.protection_orders.push(ProtectionOrder {
            at: step.at,
            by: by.actor.clone(),
            invite: invite.clone(),
            participant,
            measures,
        });
        Ok(())
    }

    fn open_lobby(&mut self, step: &mut Step, by: &CaseMember) -> Result<(), HearingError> {
        self.require_not_ended(step)?;
        require_clerk(step, by)?;
        self.require_phase(step, Phase::Scheduled, "scheduled")?;
        self.phase = Phase::Open;
        self.opened_at = Some(step.at);
        step.record(&by.actor, HearingEventKind::LobbyOpened, None, None);
        Ok(())
    }

    // ---- Arriving, admission, leaving ----

    fn join(&mut self, step: &mut Step, invite: &InviteId, id: ParticipantId) -> Result<(), HearingError> {
        self.require_active(step)?;
        let entry = self.invite_to_use(step, invite)?;
        if self.participants.contains_key(&id) {
            return Err(step.refuse(Reason::ParticipantIdTaken { participant: id }));
        }
        let (role, admission, issued_by) = (entry.invite.role, entry.invite.admission, entry.issued_by.clone());
        if let Some(entry) = self.invites.get_mut(invite) {
            entry.status = InviteStatus::Used { participant: id.clone() };
        }
        let mut participant = Participant {
            role,
            invite: invite.clone(),
            arrived_at: step.at,
            admitted: None,
            present: true,
            removed_at: None,
            consultation: None,
            muted: None,
            reconnections: 0,
            periods: Vec::new(),
            media_gaps: Vec::new(),
            left: false,
            own_steps: OwnSteps::default(),
        };
        step.record(id.as_actor(), HearingEventKind::JoinedLobby, Some(&id), None);
        if admission == Admission::OnJoin {
            participant.admit(step.at, AdmittedBy::Invite { issued_by: issued_by.clone() });
            step.record(&issued_by, HearingEventKind::Admitted, Some(&id), None);
        }
        self.participants.insert(id.clone(), participant);
        self.arrivals.push(id);
        Ok(())
    }

    fn admit(&mut self, step: &mut Step, by: &ParticipantId, id: &ParticipantId) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.court(step, by)?;
        let target = self.not_removed(step, id)?;
        if target.admitted.is_some() {
            return Err(step.refuse(Reason::AlreadyAdmitted { participant: id.clone() }));
        }
        if !target.present {
            return Err(step.refuse(Reason::NotPresent { participant: id.clone() }));
        }
        let at = step.at;
        self.participant_mut(id).admit(at, AdmittedBy::Participant { participant: by.clone() });
        step.record(by.as_actor(), HearingEventKind::Admitted, Some(id), None);
        Ok(())
    }

    fn remove(&mut self, step: &mut Step, by: &ParticipantId, id: &ParticipantId) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.court(step, by)?;
        if id == by {
            return Err(step.refuse(Reason::CannotRemoveSelf { participant: id.clone() }));
        }
        let target = self.not_removed(step, id)?;
        if target.role == HearingRole::Judge {
            return Err(step.refuse(Reason::CannotRemoveJudge { participant: id.clone() }));
        }
        step.record(by.as_actor(), HearingEventKind::Removed, Some(id), None);
        self.depart(step, id, PeriodEnd::Removed);
        self.participant_mut(id).removed_at = Some(step.at);
        Ok(())
    }

    fn leave(&mut self, step: &mut Step, id: &ParticipantId, cause: LeaveCause) -> Result<(), HearingError> {
        self.require_active(step)?;
        let p = self.not_removed(step, id)?;
        if !p.present {
            return Err(step.refuse(Reason::NotPresent { participant: id.clone() }));
        }
        let kind = match cause {
            LeaveCause::Left => HearingEventKind::Left,
            LeaveCause::ConnectionLost => HearingEventKind::ConnectionLost,
        };
        step.record(id.as_actor(), kind, Some(id), None);
        step.charged_to = Some(id.clone());
        self.participant_mut(id).left = cause == LeaveCause::Left;
        self.depart(step, id, cause.into());
        Ok(())
    }

    fn reconnect(&mut self, step: &mut Step, id: &ParticipantId) -> Result<(), HearingError> {
        self.require_active(step)?;
        let p = self.not_removed(step, id)?;
        if p.present {
            return Err(step.refuse(Reason::AlreadyPresent { participant: id.clone() }));
        }
        let at = step.at;
        let p = self.participant_mut(id);
        p.present = true;
        p.left = false;
        p.reconnections = p.reconnections.saturating_add(1);
        if p.admitted.is_some() {
            p.periods.push(Period { from: at, until: None, ended_by: None });
        }
        step.record(id.as_actor(), HearingEventKind::Reconnected, Some(id), None);
        step.charged_to = Some(id.clone());
        // A page that reloaded, or a new tab, has lost the words on the screen: the texts still awaiting their step
        // are shown again, to the person they concern and to the judge who presented them.
        for shown in self.awaiting_step.iter().filter(|shown| shown.person == *id || shown.by == *id) {
            step.shown.push(Effect::ShowText {
                participant: id.clone(),
                wording: shown.wording,
                text: shown.text.clone(),
            });
        }
        Ok(())
    }

    /// Takes a participant out of the room: closes their period of presence and their place in a consultation
    /// (which ends if it loses its counsel or its last client). Cannot fail.
    fn depart(&mut self, step: &mut Step, id: &ParticipantId, end: PeriodEnd) {
        let at = step.at;
        let p = self.participant_mut(id);
        if p.present {
            p.present = false;
            p.close_period(at, end);
        }
        p.close_media_gap(at);
        let Some(consultation) = p.consultation.take() else { return };
        let Some(c) = self.consultations.get_mut(&consultation) else { return };
        c.current.remove(id);
        let counsel_gone = c.counsel == *id;
        let remaining: Vec<ParticipantId> = c.current.iter().cloned().collect();
        let client_left = remaining.iter().any(|m| self.participants.get(m).is_some_and(|p| p.role.is_heard()));
        if counsel_gone || !client_left {
            self.end_consultation_now(step, consultation, id.as_actor());
        }
    }

    // ---- Muting ----

    fn mute(&mut self, step: &mut Step, by: &ParticipantId, id: &ParticipantId) -> Result<(), HearingError> {
        self.require_active(step)?;
        let actor = self.in_hearing(step, by)?;
        let (target, how) = if by == id {
            (actor, Muted::ByThemself)
        } else {
            if !actor.role.is_court() || actor.consultation.is_some() {
                return Err(step.refuse(Reason::RoleNotAllowed {
                    participant: by.clone(),
                    role: actor.role,
                    allowed: "the judge or the clerk (anyone may mute themself)",
                }));
            }
            let target = self.not_removed(step, id)?;
            if target.admitted.is_none() {
                return Err(step.refuse(Reason::NotAdmitted { participant: id.clone() }));
            }
            (target, Muted::ByCourt)
        };
        match (target.muted, how) {
            (None, _) | (Some(Muted::ByThemself), Muted::ByCourt) => {}
            (Some(_), _) => return Err(step.refuse(Reason::AlreadyMuted { participant: id.clone() })),
        }
        self.participant_mut(id).muted = Some(how);
        step.record(by.as_actor(), HearingEventKind::Muted, Some(id), None);
        step.charged_to = Some(by.clone());
        Ok(())
    }

    fn unmute(&mut self, step: &mut Step, by: &ParticipantId, id: &ParticipantId) -> Result<(), HearingError> {
        self.require_active(step)?;
        let actor = self.in_hearing(step, by)?;
        if by == id {
            match actor.muted {
                None => return Err(step.refuse(Reason::NotMuted { participant: id.clone() })),
                Some(Muted::ByCourt) if !actor.role.is_court() => {
                    return Err(step.refuse(Reason::MutedByCourt { participant: id.clone() }));
                }
                Some(_) => {}
            }
        } else {
            if !actor.role.is_court() || actor.consultation.is_some() {
                return Err(step.refuse(Reason::RoleNotAllowed {
                    participant: by.clone(),
                    role: actor.role,
                    allowed: THE_COURT,
                }));
            }
            if self.not_removed(step, id)?.muted.is_none() {
                return Err(step.refuse(Reason::NotMuted { participant: id.clone() }));
            }
        }
        self.participant_mut(id).muted = None;
        step.record(by.as_actor(), HearingEventKind::Unmuted, Some(id), None);
        step.charged_to = Some(by.clone());
        Ok(())
    }

    // ---- Session and recording ----

    fn start_session(&mut self, step: &mut Step, by: &ParticipantId) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.judge(step, by)?;
        self.require_phase(step, Phase::Open, "open")?;
        self.phase = Phase::InSession;
        self.session_started_at = Some(step.at);
        step.record(by.as_actor(), HearingEventKind::SessionStarted, None, None);
        Ok(())
    }

    fn start_recording(&mut self, step: &mut Step, by: &ParticipantId) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.court(step, by)?;
        self.require_phase(step, Phase::InSession, "in session")?;
        if self.is_recording() {
            return Err(step.refuse(Reason::AlreadyRecording));
        }
        if self.recording.len() >= RECORDING_RUNS_PER_HEARING {
            return Err(step.refuse(Reason::TooManyRecordingRuns { runs: self.recording.len() }));
        }
        self.recording.push(RecordingRun {
            started_at: step.at,
            started_by: by.clone(),
            stopped_at: None,
            stopped_by: None,
        });
        step.record(by.as_actor(), HearingEventKind::RecordingStarted, None, None);
        step.charged_to = Some(by.clone());
        Ok(())
    }

    fn stop_recording(&mut self, step: &mut Step, by: &ParticipantId) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.court(step, by)?;
        if !self.is_recording() {
            return Err(step.refuse(Reason::NotRecording));
        }
        self.stop_recording_now(step, by.as_actor());
        step.charged_to = Some(by.clone());
        Ok(())
    }

    fn stop_recording_now(&mut self, step: &mut Step, actor: &ActorId) {
        if let Some(run) = self.recording.last_mut()
            && run.stopped_at.is_none()
        {
            run.stopped_at = Some(step.at);
            run.stopped_by = Some(actor.clone());
            step.record(actor, HearingEventKind::RecordingStopped, None, None);
        }
    }

    fn end_now(&mut self, step: &mut Step, actor: &ActorId) {
        self.stop_recording_now(step, actor);
        let open: Vec<ConsultationId> =
            self.consultations.iter().filter(|(_, c)| c.ended_at.is_none()).map(|(id, _)| *id).collect();
        for consultation in open {
            self.end_consultation_now(step, consultation, actor);
        }
        for p in self.participants.values_mut() {
            if p.present {
                p.present = false;
                p.close_period(step.at, PeriodEnd::HearingEnded);
            }
            p.close_media_gap(step.at);
        }
        self.record_own_step_counts(step, true);
        self.phase = Phase::Ended;
        self.ended_at = Some(step.at);
        step.record(actor, HearingEventKind::HearingEnded, None, None);
    }

    // ---- Private consultation ----

    fn start_consultation(
        &mut self,
        step: &mut Step,
        by: &ParticipantId,
        with: Vec<ParticipantId>,
    ) -> Result<(), HearingError> {
        self.require_active(step)?;
        let counsel = self.with_role(step, by, "prosecution or defence counsel", HearingRole::is_counsel)?.role;
        if with.is_empty() {
            return Err(step.refuse(Reason::EmptyConsultation));
        }
        if self.consultations.len() >= CONSULTATIONS_PER_HEARING {
            return Err(step.refuse(Reason::TooManyConsultations { consultations: self.consultations.len() }));
        }
        let expected = match counsel {
            HearingRole::Prosecutor => "a witness or the interpreter",
            _ => "a witness, the accused or the interpreter",
        };
        let mut seen = BTreeSet::new();
        let mut has_client = false;
        for member in &with {
            if member == by {
                return Err(step.refuse(Reason::ConsultationWithSelf { participant: member.clone() }));
            }
            if !seen.insert(member) {
                return Err(step.refuse(Reason::DuplicateMember { participant: member.clone() }));
            }
            has_client |= self.subject(step, member, expected, |role| counsel.may_consult_with(role))?.role.is_heard();
        }
        if !has_client {
            return Err(step.refuse(Reason::ConsultationWithoutClient));
        }
        // A protected witness meets in private only those the order lets see and hear them: never the accused or
        // counsel it does not name, away from the court.
        for member in &with {
            if let Some(outsider) = self.outside_protection(member, std::iter::once(by).chain(&with)) {
                return Err(step.refuse(Reason::ProtectedWitnessInConsultation {
                    witness: member.clone(),
                    participant: outsider,
                }));
            }
        }
        let id = ConsultationId::new(self.next_consultation);
        let detail = step.digest(&ConsultationDetail {
            kind: "consultation",
            hearing: &self.id,
            consultation: id,
            counsel: by,
            members: &with,
        })?;
        self.next_consultation = self.next_consultation.saturating_add(1);
        let mut current = BTreeSet::new();
        for member in std::iter::once(by).chain(&with) {
            self.participant_mut(member).consultation = Some(id);
            current.insert(member.clone());
            step.record(by.as_actor(), HearingEventKind::ConsultationStarted, Some(member), Some(detail));
        }
        step.charged_to = Some(by.clone());
        self.consultations.insert(
            id,
            Consultation {
                counsel: by.clone(),
                members: with,
                current,
                started_at: step.at,
                ended_at: None,
                detail_sha256: detail,
            },
        );
        Ok(())
    }

    fn end_consultation(
        &mut self,
        step: &mut Step,
        by: &ParticipantId,
        id: ConsultationId,
    ) -> Result<(), HearingError> {
        self.require_active(step)?;
        let actor = self.in_hearing(step, by)?;
        let consultation =
            self.consultations.get(&id).ok_or_else(|| step.refuse(Reason::UnknownConsultation { consultation: id }))?;
        if consultation.ended_at.is_some() {
            return Err(step.refuse(Reason::ConsultationEnded { consultation: id }));
        }
        let court_in_main_room = actor.role.is_court() && actor.consultation.is_none();
        if consultation.counsel != *by && !court_in_main_room {
            return Err(step.refuse(Reason::NotConsultationCounsel { participant: by.clone(), consultation: id }));
        }
        self.end_consultation_now(step, id, by.as_actor());
        step.charged_to = Some(by.clone());
        Ok(())
    }

    /// Ends a consultation: everyone still in it returns to the main room (and so, while recording, to the
    /// recorder). One `consultation_ended` record each.
    fn end_consultation_now(&mut self, step: &mut Step, id: ConsultationId, actor: &ActorId) {
        let Some(consultation) = self.consultations.get_mut(&id) else { return };
        consultation.ended_at = Some(step.at);
        let detail = consultation.detail_sha256;
        for member in std::mem::take(&mut consultation.current) {
            if let Some(p) = self.participants.get_mut(&member) {
                p.consultation = None;
            }
            step.record(actor, HearingEventKind::ConsultationEnded, Some(&member), Some(detail));
        }
    }

    // ---- Identity, rights, oaths ----

    fn verify_identity(
        &mut self,
        step: &mut Step,
        by: &ParticipantId,
        person: &ParticipantId,
        verification: &IdentityVerification,
    ) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.with_role(step, by, "the remote-site officer", |role| role == HearingRole::RemoteSiteOfficer)?;
        self.subject(step, person, "a witness or the accused", HearingRole::is_heard)?;
        let checks = self.identity_checks.iter().filter(|check| check.person == *person).count();
        if checks >= IDENTITY_CHECKS_PER_PERSON {
            return Err(step.refuse(Reason::TooManyIdentityChecks { participant: person.clone(), checks }));
        }
        let detail = verification
            .detail_sha256(&self.id, person, by)
            .map_err(|source| HearingError::Detail { action: step.action, source })?;
        self.identity_checks.push(IdentityCheck {
            at: step.at,
            person: person.clone(),
            officer: by.clone(),
            document: verification.document.clone(),
            site: verification.site.clone(),
            detail_sha256: detail,
        });
        step.record(by.as_actor(), HearingEventKind::IdentityVerified, Some(person), Some(detail));
        Ok(())
    }

    /// The judge puts the words of `wording` on the screen of the person they concern, and on their own.
    fn present_text(
        &mut self,
        step: &mut Step,
        by: &ParticipantId,
        person: &ParticipantId,
        wording: Wording,
        text: TextShown,
    ) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.judge(step, by)?;
        self.require_phase(step, Phase::InSession, "in session")?;
        match wording {
            Wording::RightsNotice => {
                self.subject(step, person, "a witness or the accused", HearingRole::is_heard)?;
            }
            Wording::Oath | Wording::Affirmation => {
                self.subject(step, person, "a witness", |role| role == HearingRole::Witness)?;
                if self.oaths.iter().any(|oath| oath.witness == *person) {
                    return Err(step.refuse(Reason::AlreadySworn { participant: person.clone() }));
                }
            }
            Wording::InterpreterOath => {
                self.subject(step, person, "the interpreter", |role| role == HearingRole::Interpreter)?;
                if self.interpreters.iter().any(|sworn| sworn.interpreter == *person) {
                    return Err(step.refuse(Reason::AlreadySworn { participant: person.clone() }));
                }
            }
        }
        let times =
            self.texts_presented.iter().filter(|shown| shown.person == *person && shown.wording == wording).count();
        if times >= PRESENTATIONS_PER_PERSON {
            return Err(step.refuse(Reason::TooManyPresentations { participant: person.clone(), wording, times }));
        }
        let detail = step.digest(&PresentationDetail {
            kind: "text_presented",
            hearing: &self.id,
            person,
            wording,
            text: &text,
        })?;
        step.record(by.as_actor(), HearingEventKind::TextPresented, Some(person), Some(detail));
        for participant in [person, by] {
            step.shown.push(Effect::ShowText { participant: participant.clone(), wording, text: text.clone() });
        }
        let presentation = TextPresentation { at: step.at, person: person.clone(), by: by.clone(), wording, text };
        self.step_taken(person, &[wording]);
        self.awaiting_step.push(presentation.clone());
        self.texts_presented.push(presentation);
        step.charged_to = Some(by.clone());
        Ok(())
    }

    /// The step that `wordings` were presented for has been taken for `person` (or they are presented anew): their
    /// words no longer await it.
    fn step_taken(&mut self, person: &ParticipantId, wordings: &[Wording]) {
        self.awaiting_step.retain(|shown| shown.person != *person || !wordings.contains(&shown.wording));
    }

    /// The words a step names: under [`Rules::texts_presented_first`], those of `wording` last presented to
    /// `person` (refused if none were, or if `named` is other words); in a hearing scheduled before, `named`.
    fn text_presented(
        &self,
        step: &Step,
        person: &ParticipantId,
        wording: Wording,
        named: Option<TextShown>,
    ) -> Result<Option<TextShown>, HearingError> {
        if !self.rules.texts_presented_first {
            return Ok(named);
        }
        let presented = self
            .texts_presented
            .iter()
            .rev()
            .find(|shown| shown.person == *person && shown.wording == wording)
            .map(|shown| shown.text.clone())
            .ok_or_else(|| step.refuse(Reason::TextNotPresented { participant: person.clone(), wording }))?;
        if named.is_some_and(|named| named != presented) {
            return Err(step.refuse(Reason::NotTheTextPresented { participant: person.clone(), wording }));
        }
        Ok(Some(presented))
    }

    fn give_rights_notice(
        &mut self,
        step: &mut Step,
        by: &ParticipantId,
        person: &ParticipantId,
        text: Option<TextShown>,
    ) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.judge(step, by)?;
        self.require_phase(step, Phase::InSession, "in session")?;
        self.subject(step, person, "a witness or the accused", HearingRole::is_heard)?;
        let times = self.rights_notices.iter().filter(|notice| notice.person == *person).count();
        if times >= PRESENTATIONS_PER_PERSON {
            let wording = Wording::RightsNotice;
            return Err(step.refuse(Reason::TooManyPresentations { participant: person.clone(), wording, times }));
        }
        let text = self.text_presented(step, person, Wording::RightsNotice, text)?;
        // The record's detail is the wording's digest: the ledger commits to which text was shown.
        let detail = text.as_ref().map(|text| text.sha256);
        self.rights_notices.push(RightsNotice { at: step.at, person: person.clone(), by: by.clone(), text });
        self.step_taken(person, &[Wording::RightsNotice]);
        step.record(by.as_actor(), HearingEventKind::RightsNoticeGiven, Some(person), detail);
        step.charged_to = Some(by.clone());
        Ok(())
    }

    fn take_oath(
        &mut self,
        step: &mut Step,
        by: &ParticipantId,
        witness: &ParticipantId,
        form: OathForm,
        despite_no_media: bool,
        text: Option<TextShown>,
    ) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.judge(step, by)?;
        self.require_phase(step, Phase::InSession, "in session")?;
        self.subject(step, witness, "a witness", |role| role == HearingRole::Witness)?;
        if self.oaths.iter().any(|oath| oath.witness == *witness) {
            return Err(step.refuse(Reason::AlreadySworn { participant: witness.clone() }));
        }
        if !self.rights_notices.iter().any(|notice| notice.person == *witness) {
            return Err(step.refuse(Reason::RightsNoticeNotGiven { participant: witness.clone() }));
        }
        if self.rules.identity_check_before_oath && !self.identity_checks.iter().any(|check| check.person == *witness) {
            return Err(step.refuse(Reason::IdentityNotVerified { participant: witness.clone() }));
        }
        let text = self.text_presented(step, witness, Wording::of_oath(form), text)?;
        if self.media_stopped(witness) && !despite_no_media {
            return Err(step.refuse(Reason::NoMedia { participant: witness.clone() }));
        }
        let detail = text.as_ref().map(|text| text.sha256);
        self.oaths.push(Oath { at: step.at, witness: witness.clone(), form, by: by.clone(), text });
        // Sworn in one form, the words of the other are not asked for any more.
        self.step_taken(witness, &[Wording::Oath, Wording::Affirmation]);
        let kind = match form {
            OathForm::Oath => HearingEventKind::OathTaken,
            OathForm::Affirmation => HearingEventKind::AffirmationMade,
        };
        step.record(by.as_actor(), kind, Some(witness), detail);
        Ok(())
    }

    fn swear_interpreter(
        &mut self,
        step: &mut Step,
        by: &ParticipantId,
        interpreter: &ParticipantId,
        languages: Label,
    ) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.judge(step, by)?;
        self.require_phase(step, Phase::InSession, "in session")?;
        self.subject(step, interpreter, "the interpreter", |role| role == HearingRole::Interpreter)?;
        if self.interpreters.iter().any(|sworn| sworn.interpreter == *interpreter) {
            return Err(step.refuse(Reason::AlreadySworn { participant: interpreter.clone() }));
        }
        let text = self.text_presented(step, interpreter, Wording::InterpreterOath, None)?;
        let detail = step.digest(&InterpreterDetail {
            kind: "interpreter_sworn",
            hearing: &self.id,
            interpreter,
            languages: &languages,
            text: text.as_ref(),
        })?;
        self.interpreters.push(InterpreterOath {
            at: step.at,
            interpreter: interpreter.clone(),
            languages,
            by: by.clone(),
            text,
        });
        self.step_taken(interpreter, &[Wording::InterpreterOath]);
        step.record(by.as_actor(), HearingEventKind::InterpreterSworn, Some(interpreter), Some(detail));
        Ok(())
    }

    // ---- Interpretation ----

    fn open_channel(
        &mut self,
        step: &mut Step,
        by: &ParticipantId,
        interpreter: &ParticipantId,
        language: Label,
        mode: InterpretationMode,
    ) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.court(step, by)?;
        self.subject(step, interpreter, "the interpreter", |role| role == HearingRole::Interpreter)?;
        if !is_language_code(language.as_str()) {
            return Err(step.refuse(Reason::NotALanguageCode { language }));
        }
        if self.open_channel_into(&language).is_some() {
            return Err(step.refuse(Reason::ChannelOpen { language }));
        }
        if !self.interpreters.iter().any(|sworn| sworn.interpreter == *interpreter) {
            return Err(step.refuse(Reason::InterpreterNotSworn { participant: interpreter.clone() }));
        }
        if let Some(busy) = self.open_channels().find(|channel| channel.interpreter == *interpreter) {
            let language = busy.language.clone();
            return Err(step.refuse(Reason::AlreadyInterpreting { participant: interpreter.clone(), language }));
        }
        if self.channels.len() >= CHANNELS_PER_HEARING {
            return Err(step.refuse(Reason::TooManyChannels { channels: CHANNELS_PER_HEARING }));
        }
        let detail = step.digest(&ChannelDetail { kind: "channel", hearing: &self.id, language: &language, mode })?;
        step.record(by.as_actor(), HearingEventKind::ChannelOpened, Some(interpreter), Some(detail));
        self.channels.push(ChannelMinute {
            language,
            interpreter: interpreter.clone(),
            mode,
            opened_by: by.clone(),
            opened_at: step.at,
            closed_at: None,
        });
        Ok(())
    }

    fn close_channel(&mut self, step: &mut Step, by: &ParticipantId, language: &Label) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.court(step, by)?;
        let at = step.at;
        let Some(channel) = self.channels.iter_mut().find(|c| c.closed_at.is_none() && c.language == *language) else {
            return Err(step.refuse(Reason::NoChannel { language: language.clone() }));
        };
        channel.closed_at = Some(at);
        let (interpreter, mode) = (channel.interpreter.clone(), channel.mode);
        // Its listeners are back on the floor: a channel opened again later starts with none.
        self.listening.retain(|_, chosen| chosen != language);
        let detail = step.digest(&ChannelDetail { kind: "channel", hearing: &self.id, language, mode })?;
        step.record(by.as_actor(), HearingEventKind::ChannelClosed, Some(&interpreter), Some(detail));
        Ok(())
    }

    /// A listening choice: no record (it changes nothing anyone else receives), but the routing follows it.
    fn choose_channel(
        &mut self,
        step: &Step,
        participant: &ParticipantId,
        language: Option<Label>,
    ) -> Result<(), HearingError> {
        self.require_active(step)?;
        self.not_removed(step, participant)?;
        match language {
            Some(language) => {
                if self.open_channel_into(&language).is_none() {
                    return Err(step.refuse(Reason::NoChannel { language }));
                }
                self.listening.insert(participant.clone(), language);
            }
            None => {
                self.listening.remove(participant);
            }
        }
        Ok(())
    }

    // ---- The adapter's reports ----

    fn segment_sealed(
        &mut self,
        step: &Step,
        index: u64,
        sha256: Sha256,
        ledger_index: u64,
    ) -> Result<(), HearingError> {
        if !matches!(self.phase, Phase::InSession | Phase::Ended) {
            return Err(step.refuse(Reason::WrongPhase { phase: self.phase, needs: "in session or ended" }));
        }
        if self.recording.is_empty() {
            return Err(step.refuse(Reason::NoRecordingStarted));
        }
        let expected = self.segments.len() as u64;
        if index != expected {
            return Err(step.refuse(Reason::SegmentOutOfOrder { expected, got: index }));
        }
        self.segments.push(SealedSegment { index, sha256, ledger_index, sealed_at: step.at });
        Ok(())
    }

    /// The gateway saw a connected participant's media stop (`stopped`) or come back. Each change is on the record
    /// and in the minutes; a report that changes nothing is refused.
    fn media_report(&mut self, step: &mut Step, id: &ParticipantId, stopped: bool) -> Result<(), HearingError> {
        self.require_active(step)?;
        let p = self.not_removed(step, id)?;
        if !p.present {
            return Err(step.refuse(Reason::NotPresent { participant: id.clone() }));
        }
        match (stopped, p.media_stopped()) {
            (true, true) => return Err(step.refuse(Reason::MediaAlreadyStopped { participant: id.clone() })),
            (false, false) => return Err(step.refuse(Reason::MediaNotStopped { participant: id.clone() })),
            _ => {}
        }
        let at = step.at;
        let p = self.participant_mut(id);
        let kind = if stopped {
            p.media_gaps.push(MediaGap { from: at, until: None });
            HearingEventKind::MediaStopped
        } else {
            p.close_media_gap(at);
            HearingEventKind::MediaResumed
        };
        step.record(id.as_actor(), kind, Some(id), None);
        step.charged_to = Some(id.clone());
        Ok(())
    }

    /// Puts the records of a repeatable step within its participant's budget ([`OWN_STEPS_PER_WINDOW`]): the
    /// counts of their window, if it has closed, first; then the step's records, recorded or counted.
    fn charge(&mut self, step: &mut Step) {
        let Some(id) = step.charged_to.take() else { return };
        let Some(participant) = self.participants.get_mut(&id) else { return };
        let closed = participant.own_steps.close(step.at, false);
        let mut records: Vec<HearingEventRecord> =
            closed.into_iter().map(|(counted, repeated)| step.count_record(&id, counted, repeated)).collect();
        let own = std::mem::take(&mut step.records);
        let budget = if participant.role.is_court() { COURT_STEPS_PER_WINDOW } else { OWN_STEPS_PER_WINDOW };
        if participant.own_steps.take(step.at, budget) {
            records.extend(own);
        } else {
            for record in &own {
                participant.own_steps.count(record);
            }
        }
        step.records = records;
    }

    /// Records the counts of every participant's window of repeatable steps that has closed by now (`all`: every
    /// window, since the hearing ends).
    fn record_own_step_counts(&mut self, step: &mut Step, all: bool) {
        for (id, participant) in &mut self.participants {
            for (counted, repeated) in participant.own_steps.close(step.at, all) {
                let record = step.count_record(id, counted, repeated);
                step.records.push(record);
            }
        }
    }

    fn technical_report(&mut self, step: &Step, report: TechnicalReport) -> Result<(), HearingError> {
        if self.phase == Phase::Scheduled {
            return Err(step.refuse(Reason::WrongPhase { phase: self.phase, needs: "open, in session or ended" }));
        }
        self.known(step, &report.participant)?;
        let TechnicalReport { participant, track, codec, packets_received, packets_lost } = report;
        let entry = self.tracks.entry((participant.clone(), track)).or_insert_with(|| TrackConditions {
            participant,
            track,
            codecs: Vec::new(),
            packets_received: 0,
            packets_lost: 0,
        });
        if !entry.codecs.contains(&codec) {
            entry.codecs.push(codec);
        }
        entry.packets_received = entry.packets_received.saturating_add(packets_received);
        entry.packets_lost = entry.packets_lost.saturating_add(packets_lost);
        Ok(())
    }
}

/// Whether `text` is a language tag as channels name them: a lowercase ISO 639 code of two or three letters,
/// optionally with subtags (`it`, `ar`, `ar-TN`, `fa-AF`), so that "it" and "Italian" cannot be two channels.
fn is_language_code(text: &str) -> bool {
    let mut parts = text.split('-');
    let primary = parts.next().unwrap_or_default();
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_lowercase())
        && parts.all(|part| (2..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether a protective order may name `role` among those who see and hear the original: counsel, the accused,
/// the interpreter and the remote-site officer may be added (the court always has it, so naming it is refused as
/// meaningless); another witness or an observer never.
fn may_be_privileged(role: HearingRole) -> bool {
    matches!(
        role,
        HearingRole::Prosecutor
            | HearingRole::Defence
            | HearingRole::Accused
            | HearingRole::Interpreter
            | HearingRole::RemoteSiteOfficer
    )
}

fn require_clerk(step: &Step, by: &CaseMember) -> Result<(), HearingError> {
    if by.role == Role::Clerk {
        Ok(())
    } else {
        Err(step.refuse(Reason::CaseRoleNotAllowed { role: by.role, allowed: "a clerk of the case" }))
    }
}

/// The effects of one event: its records, then the difference in routing, then the texts to show, ordered as
/// [`Effect`] explains.
fn effects(records: Vec<HearingEventRecord>, shown: Vec<Effect>, before: &Routing, after: &Routing) -> Vec<Effect> {
    let mut effects: Vec<Effect> = records.into_iter().map(Effect::Record).collect();
    for participant in before.protected.keys().chain(after.protected.keys()).collect::<BTreeSet<_>>() {
        let protection = after.protected.get(participant);
        if before.protected.get(participant) != protection {
            effects.push(Effect::Protect { participant: participant.clone(), protection: protection.cloned() });
        }
    }
    effects.extend(before.recorded.difference(&after.recorded).cloned().map(Effect::RecorderUnsubscribe));
    if before.recording && !after.recording {
        effects.push(Effect::StopRecorder);
    }
    for (participant, place) in &after.places {
        if before.places.get(participant) != Some(place) {
            effects.push(Effect::Move { participant: participant.clone(), to: *place });
        }
    }
    for (participant, from) in &after.hears {
        if before.hears.get(participant).cloned().unwrap_or(None) != *from {
            effects.push(Effect::HearAudioFrom { participant: participant.clone(), from: from.clone() });
        }
    }
    for (participant, muted) in &after.muted {
        if before.muted.get(participant).copied().unwrap_or(false) != *muted {
            effects.push(Effect::SetMuted { participant: participant.clone(), muted: *muted });
        }
    }
    if !before.recording && after.recording {
        effects.push(Effect::StartRecorder);
    }
    effects.extend(after.recorded.difference(&before.recorded).cloned().map(Effect::RecorderSubscribe));
    effects.extend(shown);
    effects
}
