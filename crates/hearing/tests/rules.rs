//! The hearing's rules, driven through the public API the adapter uses.
//!
//! Every event goes through [`Court`], a stand-in for the adapter: it applies the effects to its own copy of the
//! routing and the recorder's subscriptions, and after every event, accepted or refused, it checks the
//! invariants (the recorder takes only admitted people in the main room, never a consultation; the adapter's
//! view equals the state machine's; a refusal changes nothing; Ended is terminal).

use std::collections::{BTreeMap, BTreeSet};

use custodia_core::{ActorId, CaseId, CustodyEvent, HearingId, Label, Role, Sha256};
use custodia_hearing::minutes::{AdmittedBy, Period, PeriodEnd};
use custodia_hearing::{
    Admission, CONSULTATIONS_PER_HEARING, COURT_STEPS_PER_WINDOW, CaseMember, CommitmentSalt, ConsultationId,
    DocumentType, Effect, Event, HeardAudio, Hearing, HearingError, HearingEventKind, HearingEventRecord, HearingRole,
    IDENTITY_CHECKS_PER_PERSON, IdentityVerification, InterpretationMode, Invite, InviteId, InviteState, LeaveCause,
    MediaProtection, OWN_STEPS_PER_WINDOW, OWN_STEPS_WINDOW, OathForm, PRESENTATIONS_PER_PERSON, ParticipantId,
    PersonalName, Phase, Place, ProtectiveMeasures, RECORDING_RUNS_PER_HEARING, Reason, Rules, Schedule,
    TechnicalReport, TextShown, TrackKind, Wording,
};
use jiff::Timestamp;
use proptest::prelude::*;

const BASE: i64 = 1_772_442_000; // 2026-03-02T09:00:00Z
const OFFICER_NAME: &str = "Leila Ben Salah";

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(BASE + seconds).unwrap()
}

fn pid(role: HearingRole) -> ParticipantId {
    ParticipantId::new(format!("p-{role}")).unwrap()
}

fn iid(role: HearingRole) -> InviteId {
    InviteId::new(format!("i-{role}")).unwrap()
}

fn id(text: &str) -> ParticipantId {
    ParticipantId::new(text).unwrap()
}

/// The name of `text` in `language`, as the adapter would make it from its file.
fn words(language: &str, text: &str) -> TextShown {
    TextShown { language: Label::new(language).unwrap(), sha256: Sha256::of(text.as_bytes()) }
}

fn clerk_member() -> CaseMember {
    CaseMember { actor: ActorId::new("acct-clerk").unwrap(), role: Role::Clerk }
}

fn invite(invite: InviteId, role: HearingRole, expires_at: Timestamp) -> Invite {
    let admission = if role == HearingRole::Clerk { Admission::OnJoin } else { Admission::Lobby };
    Invite { id: invite, role, expires_at, admission }
}

fn verification() -> IdentityVerification {
    IdentityVerification {
        document: DocumentType::Passport,
        officer_name: PersonalName::new(OFFICER_NAME).unwrap(),
        site: Label::new("Tunis, court of first instance, room 4").unwrap(),
        salt: CommitmentSalt::from_bytes([42; 32]),
    }
}

const JUDGE: HearingRole = HearingRole::Judge;
const CLERK: HearingRole = HearingRole::Clerk;
const PROSECUTOR: HearingRole = HearingRole::Prosecutor;
const DEFENCE: HearingRole = HearingRole::Defence;
const ACCUSED: HearingRole = HearingRole::Accused;
const INTERPRETER: HearingRole = HearingRole::Interpreter;
const WITNESS: HearingRole = HearingRole::Witness;
const OFFICER: HearingRole = HearingRole::RemoteSiteOfficer;
const OBSERVER: HearingRole = HearingRole::Observer;

/// The adapter's side: what it has been told to do, checked against the state machine after every event.
struct Court {
    hearing: Hearing,
    now: i64,
    subscribed: BTreeSet<ParticipantId>,
    places: BTreeMap<ParticipantId, Place>,
    muted: BTreeSet<ParticipantId>,
    recorder_running: bool,
    records: Vec<HearingEventRecord>,
    /// Every text put on a screen: to whom, which, and the words' name.
    shown: Vec<(ParticipantId, Wording, TextShown)>,
    /// Whose media the media plane splits into original and masked, and how.
    protected: BTreeMap<ParticipantId, MediaProtection>,
    /// Whose audio each participant hears (absent: everyone's).
    hears: BTreeMap<ParticipantId, HeardAudio>,
    ended: bool,
}

impl Court {
    fn scheduled(rules: Rules) -> Self {
        let schedule = Schedule {
            hearing: HearingId::new("h-1").unwrap(),
            case: CaseId::new("case-7").unwrap(),
            by: clerk_member(),
            scheduled_for: t(3_600),
            place: Label::new("Tribunale di Catania, aula 3").unwrap(),
            rules,
        };
        let (hearing, effects) = Hearing::schedule(t(0), schedule).unwrap();
        let mut court = Self {
            hearing,
            now: 0,
            subscribed: BTreeSet::new(),
            places: BTreeMap::new(),
            muted: BTreeSet::new(),
            recorder_running: false,
            records: Vec::new(),
            shown: Vec::new(),
            protected: BTreeMap::new(),
            hears: BTreeMap::new(),
            ended: false,
        };
        court.apply_effects(effects);
        for role in HearingRole::ALL {
            court.ok(Event::IssueInvite { by: clerk_member(), invite: invite(iid(role), role, t(7_200)) });
        }
        court
    }

    /// Lobby open; nobody in yet.
    fn open() -> Self {
        let mut court = Self::scheduled(Rules::default());
        court.ok(Event::OpenLobby { by: clerk_member() });
        court
    }

    /// Everyone has joined with their own invite and been admitted (the clerk on join, the others by the clerk).
    fn seated() -> Self {
        let mut court = Self::open();
        court.join(CLERK);
        for role in HearingRole::ALL.into_iter().filter(|&role| role != CLERK) {
            court.join(role);
            court.ok(Event::Admit { by: pid(CLERK), participant: pid(role) });
        }
        court
    }

    fn in_session() -> Self {
        let mut court = Self::seated();
        court.ok(Event::StartSession { by: pid(JUDGE) });
        court
    }

    fn recording() -> Self {
        let mut court = Self::in_session();
        court.ok(Event::StartRecording { by: pid(CLERK) });
        court
    }

    /// Recording, with the interpreter sworn (so that channels can be opened).
    fn interpreted() -> Self {
        let mut court = Self::recording();
        court.present(INTERPRETER, Wording::InterpreterOath);
        let languages = Label::new("fr / it").unwrap();
        court.ok(Event::SwearInterpreter { by: pid(JUDGE), interpreter: pid(INTERPRETER), languages });
        court
    }

    /// The judge presents the words of `wording` (in English) to the participant in `role`; their name.
    fn present(&mut self, role: HearingRole, wording: Wording) -> TextShown {
        let text = words("en", &format!("The court's {wording}."));
        self.ok(Event::PresentText { by: pid(JUDGE), person: pid(role), wording, text: text.clone() });
        text
    }

    fn join(&mut self, role: HearingRole) {
        self.ok(Event::Join { invite: iid(role), participant: pid(role) });
    }

    /// Applies `event` one second after the previous one.
    fn try_event(&mut self, event: Event) -> Result<Vec<Effect>, HearingError> {
        self.try_at(self.now + 1, event)
    }

    fn try_at(&mut self, seconds: i64, event: Event) -> Result<Vec<Effect>, HearingError> {
        let before = self.hearing.clone();
        let result = self.hearing.handle(t(seconds), event.clone());
        match &result {
            Ok(effects) => {
                self.now = seconds;
                self.apply_effects(effects.clone());
            }
            Err(_) => assert_eq!(self.hearing, before, "a refused {event:?} changed the hearing"),
        }
        self.check_invariants();
        result
    }

    fn ok(&mut self, event: Event) -> Vec<Effect> {
        let description = format!("{event:?}");
        self.try_event(event).unwrap_or_else(|error| panic!("{description} refused: {error}"))
    }

    fn ok_at(&mut self, seconds: i64, event: Event) -> Vec<Effect> {
        let description = format!("{event:?}");
        self.try_at(seconds, event).unwrap_or_else(|error| panic!("{description} refused: {error}"))
    }

    fn refused(&mut self, event: Event) -> Reason {
        self.refused_at(self.now + 1, event)
    }

    fn refused_at(&mut self, seconds: i64, event: Event) -> Reason {
        let description = format!("{event:?}");
        match self.try_at(seconds, event) {
            Ok(effects) => panic!("{description} was accepted: {effects:?}"),
            Err(HearingError::Refused { reason, .. }) => reason,
            Err(other) => panic!("{description}: unexpected error {other}"),
        }
    }

    /// Applies effects as the adapter would, insisting on their order.
    fn apply_effects(&mut self, effects: Vec<Effect>) {
        let mut seen_media = false;
        let mut seen_protect = false;
        let mut seen_text = false;
        for effect in effects {
            assert!(!seen_text || matches!(effect, Effect::ShowText { .. }), "texts are shown last: {effect:?}");
            match effect {
                Effect::Record(record) => {
                    assert!(!seen_media && !seen_protect, "records come before media effects");
                    self.records.push(record);
                }
                Effect::Protect { participant, protection } => {
                    assert!(!seen_media, "protection comes before anyone moves: {participant}");
                    seen_protect = true;
                    match protection {
                        Some(protection) => self.protected.insert(participant, protection),
                        None => self.protected.remove(&participant),
                    };
                }
                Effect::RecorderUnsubscribe(participant) => {
                    seen_media = true;
                    assert!(self.subscribed.remove(&participant), "unsubscribed {participant} was not subscribed");
                }
                Effect::StopRecorder => {
                    seen_media = true;
                    assert!(self.recorder_running, "stopped a recorder that was not running");
                    assert!(self.subscribed.is_empty(), "recorder stopped with subscriptions left");
                    self.recorder_running = false;
                }
                Effect::Move { participant, to } => {
                    seen_media = true;
                    if matches!(to, Place::Consultation(_) | Place::Lobby | Place::Away) {
                        assert!(
                            !self.subscribed.contains(&participant),
                            "{participant} moved to {to:?} while the recorder still took them"
                        );
                    }
                    self.places.insert(participant, to);
                }
                Effect::HearAudioFrom { participant, from } => {
                    seen_media = true;
                    match from {
                        Some(from) => self.hears.insert(participant, from),
                        None => self.hears.remove(&participant),
                    };
                }
                Effect::SetMuted { participant, muted } => {
                    seen_media = true;
                    if muted {
                        assert!(self.muted.insert(participant));
                    } else {
                        assert!(self.muted.remove(&participant));
                    }
                }
                Effect::StartRecorder => {
                    seen_media = true;
                    assert!(!self.recorder_running);
                    self.recorder_running = true;
                }
                Effect::RecorderSubscribe(participant) => {
                    seen_media = true;
                    assert!(self.recorder_running, "subscribed {participant} with no recorder running");
                    assert_eq!(self.places.get(&participant), Some(&Place::MainRoom), "subscribed before moving");
                    assert!(self.subscribed.insert(participant));
                }
                Effect::ShowText { participant, wording, text } => {
                    seen_text = true;
                    assert_eq!(self.places.get(&participant), Some(&Place::MainRoom), "shown outside the room");
                    self.shown.push((participant, wording, text));
                }
                other => panic!("unknown effect {other:?}"),
            }
        }
    }

    fn check_invariants(&mut self) {
        let hearing = &self.hearing;
        let recorded = hearing.recorded_participants();
        assert_eq!(self.subscribed, recorded, "the adapter's subscriptions drifted from the rules");
        assert_eq!(self.recorder_running, hearing.is_recording());
        for participant in hearing.participants() {
            let place = hearing.place_of(participant).unwrap();
            assert_eq!(self.places.get(participant), Some(&place), "the adapter's routing drifted for {participant}");
            assert_eq!(self.muted.contains(participant), hearing.is_muted(participant));
            assert_eq!(
                self.hears.get(participant),
                hearing.hears_audio_from(participant).as_ref(),
                "the audio routing drifted for {participant}"
            );
            assert_eq!(
                self.protected.get(participant),
                hearing.media_protection(participant).as_ref(),
                "the media plane's protection drifted for {participant}"
            );
            if hearing.media_stopped(participant) {
                assert_ne!(place, Place::Away, "{participant} is away with a media gap left open");
            }
            if matches!(place, Place::MainRoom | Place::Consultation(_)) {
                assert!(hearing.is_admitted(participant), "{participant} is in {place:?} without being admitted");
            }
            if let Place::Consultation(consultation) = place {
                assert!(!recorded.contains(participant), "{participant} is recorded in {consultation}");
                assert!(hearing.consultation_members(consultation).contains(participant));
            }
        }
        // Cross-check against the consultations' own member lists, which the routing is not derived from.
        let consultations = u32::try_from(hearing.minutes().consultations.len()).unwrap();
        for consultation in (1..=consultations).map(ConsultationId::new) {
            for member in hearing.consultation_members(consultation) {
                assert!(!recorded.contains(&member), "{member} of {consultation} is recorded");
                assert_eq!(hearing.place_of(&member), Some(Place::Consultation(consultation)));
            }
        }
        for participant in &recorded {
            assert!(hearing.is_admitted(participant), "unadmitted {participant} is recorded");
            assert_eq!(hearing.place_of(participant), Some(Place::MainRoom), "{participant} recorded outside the room");
        }
        if !recorded.is_empty() {
            assert_eq!(hearing.phase(), Phase::InSession, "recording outside the session");
        }
        if self.ended {
            assert_eq!(hearing.phase(), Phase::Ended, "the hearing left Ended");
        }
        if hearing.phase() == Phase::Ended {
            self.ended = true;
            assert!(recorded.is_empty() && !hearing.is_recording());
            assert!(hearing.participants().all(|p| hearing.place_of(p) == Some(Place::Away)));
        }
        for record in &self.records {
            if let Some(subject) = &record.subject {
                assert!(hearing.role_of(subject).is_some(), "a record names unknown {subject}");
            }
        }
    }

    fn kinds_since(&self, from: usize) -> Vec<HearingEventKind> {
        self.records[from..].iter().map(|record| record.kind).collect()
    }
}

// ---- The lobby ----

#[test]
fn nobody_gets_past_the_lobby_unadmitted() {
    let mut court = Court::open();
    court.join(CLERK);
    court.join(JUDGE);
    court.ok(Event::Admit { by: pid(CLERK), participant: pid(JUDGE) });
    court.ok(Event::StartSession { by: pid(JUDGE) });
    court.ok(Event::StartRecording { by: pid(CLERK) });
    for role in [PROSECUTOR, DEFENCE, ACCUSED, INTERPRETER, WITNESS, OFFICER, OBSERVER] {
        court.join(role);
        assert_eq!(court.hearing.place_of(&pid(role)), Some(Place::Lobby));
        assert!(!court.hearing.is_admitted(&pid(role)));
        assert!(!court.hearing.recorded_participants().contains(&pid(role)));
    }
    court.ok(Event::Admit { by: pid(CLERK), participant: pid(DEFENCE) });
    // A waiting participant can do nothing that needs the hearing, and nothing can be done to them but admission
    // or removal.
    let waiting = pid(WITNESS);
    let not_admitted = |court: &mut Court, event: Event| {
        let reason = court.refused(event);
        assert!(matches!(&reason, Reason::NotAdmitted { participant } if participant == &waiting), "{reason}");
    };
    not_admitted(&mut court, Event::Mute { by: waiting.clone(), participant: waiting.clone() });
    not_admitted(&mut court, Event::Admit { by: waiting.clone(), participant: pid(OBSERVER) });
    not_admitted(&mut court, Event::Mute { by: pid(JUDGE), participant: waiting.clone() });
    not_admitted(&mut court, Event::GiveRightsNotice { by: pid(JUDGE), person: waiting.clone(), text: None });
    not_admitted(&mut court, Event::StartConsultation { by: pid(DEFENCE), with: vec![waiting.clone()] });
    // Leaving and coming back does not admit anyone.
    court.ok(Event::Leave { participant: waiting.clone(), cause: LeaveCause::ConnectionLost });
    court.ok(Event::Reconnect { participant: waiting.clone() });
    assert_eq!(court.hearing.place_of(&waiting), Some(Place::Lobby));
    // Admission, and only admission, brings them in, and onto the recording.
    court.ok(Event::Admit { by: pid(JUDGE), participant: waiting.clone() });
    assert_eq!(court.hearing.place_of(&waiting), Some(Place::MainRoom));
    assert!(court.hearing.recorded_participants().contains(&waiting));
    let minutes = court.hearing.minutes();
    assert_eq!(minutes.not_admitted.len(), 5);
    assert!(minutes.present.iter().all(|attendee| attendee.role != OBSERVER));
}

#[test]
fn admission_needs_a_court_officer_in_the_room_and_a_waiting_participant() {
    let mut court = Court::open();
    court.join(JUDGE);
    court.join(WITNESS);
    // Nobody is admitted yet: the judge waits too, so nobody can admit anyone.
    assert!(matches!(
        court.refused(Event::Admit { by: pid(JUDGE), participant: pid(WITNESS) }),
        Reason::NotAdmitted { .. }
    ));
    court.join(CLERK); // admitted on join: the clerk decided so when issuing the invite
    assert!(court.hearing.is_admitted(&pid(CLERK)));
    let admitted = court.records.last().unwrap();
    assert_eq!((admitted.kind, admitted.actor.as_str()), (HearingEventKind::Admitted, "acct-clerk"));
    court.ok(Event::Admit { by: pid(CLERK), participant: pid(JUDGE) });
    assert!(matches!(
        court.refused(Event::Admit { by: pid(CLERK), participant: pid(JUDGE) }),
        Reason::AlreadyAdmitted { .. }
    ));
    // A witness who has dropped out of the lobby cannot be admitted in their absence.
    court.ok(Event::Leave { participant: pid(WITNESS), cause: LeaveCause::Left });
    assert!(matches!(
        court.refused(Event::Admit { by: pid(JUDGE), participant: pid(WITNESS) }),
        Reason::NotPresent { .. }
    ));
    // A court officer who is not connected cannot admit either.
    court.ok(Event::Reconnect { participant: pid(WITNESS) });
    court.ok(Event::Leave { participant: pid(CLERK), cause: LeaveCause::ConnectionLost });
    assert!(matches!(
        court.refused(Event::Admit { by: pid(CLERK), participant: pid(WITNESS) }),
        Reason::NotPresent { .. }
    ));
    assert!(matches!(
        court.refused(Event::Admit { by: pid(JUDGE), participant: id("p-nobody") }),
        Reason::UnknownParticipant { .. }
    ));
    court.ok(Event::Admit { by: pid(JUDGE), participant: pid(WITNESS) });
}

#[test]
fn only_a_judges_or_a_clerks_invite_may_admit_on_join() {
    let mut court = Court::open();
    for role in HearingRole::ALL {
        let invite_id = InviteId::new(format!("i-onjoin-{role}")).unwrap();
        let event = Event::IssueInvite {
            by: clerk_member(),
            invite: Invite { id: invite_id, role, expires_at: t(7_200), admission: Admission::OnJoin },
        };
        if role.is_court() {
            court.ok(event);
        } else {
            assert!(
                matches!(court.refused(event), Reason::AdmissionOnJoinNotAllowed { role: refused, .. } if refused == role)
            );
        }
    }
}

// ---- Who may do what ----

#[derive(Debug, Clone, Copy)]
enum CourtAction {
    Admit,
    Remove,
    MuteOther,
    UnmuteOther,
    StartRecording,
    StopRecording,
    End,
}

/// Builds a hearing in session where `action` is possible for a court officer, and the event by `actor`.
fn court_action(action: CourtAction, actor: HearingRole) -> (Court, Event) {
    let mut court = Court::in_session();
    let target = if actor == OBSERVER { pid(WITNESS) } else { pid(OBSERVER) };
    let by = pid(actor);
    let event = match action {
        CourtAction::Admit => {
            let late = id("p-late");
            court.ok(Event::IssueInvite {
                by: clerk_member(),
                invite: invite(InviteId::new("i-late").unwrap(), WITNESS, t(7_200)),
            });
            court.ok(Event::Join { invite: InviteId::new("i-late").unwrap(), participant: late.clone() });
            Event::Admit { by, participant: late }
        }
        CourtAction::Remove => Event::Remove { by, participant: target },
        CourtAction::MuteOther => Event::Mute { by, participant: target },
        CourtAction::UnmuteOther => {
            court.ok(Event::Mute { by: pid(CLERK), participant: target.clone() });
            Event::Unmute { by, participant: target }
        }
        CourtAction::StartRecording => Event::StartRecording { by },
        CourtAction::StopRecording => {
            court.ok(Event::StartRecording { by: pid(CLERK) });
            Event::StopRecording { by }
        }
        CourtAction::End => Event::End { by },
    };
    (court, event)
}

#[test]
fn only_the_judge_or_the_clerk_admit_remove_mute_others_and_control_the_recording() {
    let actions = [
        CourtAction::Admit,
        CourtAction::Remove,
        CourtAction::MuteOther,
        CourtAction::UnmuteOther,
        CourtAction::StartRecording,
        CourtAction::StopRecording,
        CourtAction::End,
    ];
    for action in actions {
        for actor in HearingRole::ALL {
            let (mut court, event) = court_action(action, actor);
            let result = court.try_event(event);
            match (actor.is_court(), result) {
                (true, Ok(_)) => {}
                (false, Err(HearingError::Refused { reason: Reason::RoleNotAllowed { role, .. }, .. })) => {
                    assert_eq!(role, actor);
                }
                (_, other) => panic!("{action:?} by {actor}: {other:?}"),
            }
        }
    }
}

#[test]
fn only_the_judge_opens_the_session_and_takes_oaths() {
    for actor in HearingRole::ALL {
        let mut court = Court::seated();
        let result = court.try_event(Event::StartSession { by: pid(actor) });
        assert_eq!(result.is_ok(), actor == JUDGE, "{actor} starting the session: {result:?}");
        let mut court = Court::in_session();
        let text = words("en", "You may stay silent.");
        let wording = Wording::RightsNotice;
        let result =
            court.try_event(Event::PresentText { by: pid(actor), person: pid(WITNESS), wording, text: text.clone() });
        assert_eq!(result.is_ok(), actor == JUDGE, "{actor} presenting the rights notice: {result:?}");
        court.present(WITNESS, Wording::RightsNotice);
        let result = court.try_event(Event::GiveRightsNotice { by: pid(actor), person: pid(WITNESS), text: None });
        assert_eq!(result.is_ok(), actor == JUDGE, "{actor} giving the rights notice: {result:?}");
        court.present(INTERPRETER, Wording::InterpreterOath);
        let result = court.try_event(Event::SwearInterpreter {
            by: pid(actor),
            interpreter: pid(INTERPRETER),
            languages: Label::new("ar-TN / it").unwrap(),
        });
        assert_eq!(result.is_ok(), actor == JUDGE, "{actor} swearing the interpreter: {result:?}");
    }
}

#[test]
fn console_actions_are_for_a_clerk_of_the_case() {
    for role in Role::ALL {
        let member = CaseMember { actor: ActorId::new(format!("acct-{role}")).unwrap(), role };
        let events = [
            Event::IssueInvite { by: member.clone(), invite: invite(InviteId::new("i-x").unwrap(), WITNESS, t(7_200)) },
            Event::RevokeInvite { by: member.clone(), invite: iid(WITNESS) },
            Event::OpenLobby { by: member.clone() },
            Event::Close { by: member.clone() },
        ];
        for event in events {
            let mut court = Court::scheduled(Rules::default());
            let result = court.try_event(event.clone());
            match (role, result) {
                (Role::Clerk, Ok(_)) => {}
                (_, Err(HearingError::Refused { reason: Reason::CaseRoleNotAllowed { role: refused, .. }, .. })) => {
                    assert_eq!(refused, role);
                }
                (_, other) => panic!("{event:?}: {other:?}"),
            }
        }
        let schedule = Schedule {
            hearing: HearingId::new("h-2").unwrap(),
            case: CaseId::new("case-7").unwrap(),
            by: CaseMember { actor: ActorId::new("acct-x").unwrap(), role },
            scheduled_for: t(0),
            place: Label::new("court").unwrap(),
            rules: Rules::default(),
        };
        assert_eq!(Hearing::schedule(t(0), schedule).is_ok(), role == Role::Clerk, "{role} scheduling");
    }
}

// ---- Invites ----

#[test]
fn a_revoked_expired_used_or_unknown_invite_cannot_join() {
    type Setup = fn(&mut Court);
    type Check = fn(&Reason) -> bool;
    let cases: [(&str, Setup, &str, i64, Check); 6] = [
        (
            "revoked",
            |court| {
                court.ok(Event::RevokeInvite { by: clerk_member(), invite: iid(WITNESS) });
            },
            "i-witness",
            100,
            |reason| matches!(reason, Reason::InviteRevoked { .. }),
        ),
        ("expired at its expiry", |_| {}, "i-witness", 7_200, |reason| matches!(reason, Reason::InviteExpired { .. })),
        ("expired long ago", |_| {}, "i-witness", 90_000, |reason| matches!(reason, Reason::InviteExpired { .. })),
        (
            "used by someone else",
            |court| {
                court.ok(Event::Join { invite: iid(WITNESS), participant: id("p-first") });
            },
            "i-witness",
            100,
            |reason| matches!(reason, Reason::InviteUsed { participant, .. } if participant.as_str() == "p-first"),
        ),
        (
            "used by the holder, who left and must reconnect instead",
            |court| {
                court.join(WITNESS);
                court.ok(Event::Leave { participant: pid(WITNESS), cause: LeaveCause::Left });
            },
            "i-witness",
            100,
            |reason| matches!(reason, Reason::InviteUsed { .. }),
        ),
        ("never issued", |_| {}, "i-forged", 100, |reason| matches!(reason, Reason::UnknownInvite { .. })),
    ];
    for (name, setup, invite, at, check) in cases {
        let mut court = Court::open();
        setup(&mut court);
        let event = Event::Join { invite: InviteId::new(invite).unwrap(), participant: id("p-someone") };
        let reason = court.refused_at(at.max(court.now), event);
        assert!(check(&reason), "{name}: {reason}");
        assert!(court.hearing.place_of(&id("p-someone")).is_none(), "{name}");
    }
}

#[test]
fn an_invite_works_until_the_second_it_expires_and_is_then_spent() {
    let mut court = Court::open();
    assert_eq!(court.hearing.invite_state(&iid(WITNESS), t(7_199)), Some(InviteState::Pending));
    assert_eq!(court.hearing.invite_state(&iid(WITNESS), t(7_200)), Some(InviteState::Expired));
    court.ok_at(7_199, Event::Join { invite: iid(WITNESS), participant: pid(WITNESS) });
    assert_eq!(court.hearing.invite_state(&iid(WITNESS), t(7_199)), Some(InviteState::Used));
    // Once used, expiry does not throw the holder out, and they may reconnect after it.
    court.ok_at(8_000, Event::Leave { participant: pid(WITNESS), cause: LeaveCause::ConnectionLost });
    court.ok_at(8_001, Event::Reconnect { participant: pid(WITNESS) });
    // A used invite cannot be revoked (remove the participant instead), nor a revoked one twice.
    assert!(matches!(
        court.refused(Event::RevokeInvite { by: clerk_member(), invite: iid(WITNESS) }),
        Reason::InviteUsed { .. }
    ));
    assert!(matches!(
        court.refused(Event::RevokeInvite { by: clerk_member(), invite: iid(OBSERVER) }),
        Reason::InviteExpired { .. }
    ));
    assert_eq!(court.hearing.invite_state(&InviteId::new("i-none").unwrap(), t(0)), None);
}

#[test]
fn invites_are_checked_when_issued() {
    let mut court = Court::open();
    let issue = |invite| Event::IssueInvite { by: clerk_member(), invite };
    assert!(matches!(court.refused(issue(invite(iid(WITNESS), WITNESS, t(7_200)))), Reason::InviteIdTaken { .. }));
    let now = court.now;
    let stale = invite(InviteId::new("i-stale").unwrap(), WITNESS, t(now + 1));
    assert!(matches!(court.refused(issue(stale)), Reason::InviteExpiresBeforeIssue { .. }));
}

#[test]
fn participant_ids_are_unique() {
    let mut court = Court::open();
    court.join(WITNESS);
    assert!(matches!(
        court.refused(Event::Join { invite: iid(OBSERVER), participant: pid(WITNESS) }),
        Reason::ParticipantIdTaken { .. }
    ));
    // The refusal left the observer's invite unused.
    assert_eq!(court.hearing.invite_state(&iid(OBSERVER), t(court.now)), Some(InviteState::Pending));
}

#[test]
fn nobody_joins_before_the_lobby_opens_or_after_the_end() {
    let mut court = Court::scheduled(Rules::default());
    assert!(matches!(
        court.refused(Event::Join { invite: iid(WITNESS), participant: pid(WITNESS) }),
        Reason::WrongPhase { phase: Phase::Scheduled, .. }
    ));
    court.ok(Event::OpenLobby { by: clerk_member() });
    assert!(matches!(court.refused(Event::OpenLobby { by: clerk_member() }), Reason::WrongPhase { .. }));
    court.ok(Event::Close { by: clerk_member() });
    assert!(matches!(
        court.refused(Event::Join { invite: iid(WITNESS), participant: pid(WITNESS) }),
        Reason::HearingEnded
    ));
}

// ---- Leaving, reconnecting, removal ----

#[test]
fn the_room_shows_others_only_what_their_place_lets_them_see() {
    let mut court = Court::open();
    court.join(CLERK);
    court.join(ACCUSED);
    court.join(WITNESS);
    let (clerk, accused, witness) = (pid(CLERK), pid(ACCUSED), pid(WITNESS));
    // In the lobby, the witness sees the court and themselves, not the accused waiting beside them.
    assert!(court.hearing.shows(&witness, &clerk) && court.hearing.shows(&witness, &witness));
    assert!(!court.hearing.shows(&witness, &accused) && !court.hearing.shows(&accused, &witness));
    assert!(court.hearing.shows(&clerk, &accused) && court.hearing.shows(&clerk, &witness));
    // The accused is admitted: still not shown to the witness in the lobby.
    court.ok(Event::Admit { by: clerk.clone(), participant: accused.clone() });
    assert!(!court.hearing.shows(&witness, &accused));
    assert!(!court.hearing.shows(&accused, &witness), "nor who waits in the lobby to the accused");
    // Both in the main room: they see and hear each other anyway.
    court.ok(Event::Admit { by: clerk.clone(), participant: witness.clone() });
    assert!(court.hearing.shows(&witness, &accused) && court.hearing.shows(&accused, &witness));
    // Someone who is away is shown to the court only.
    court.ok(Event::Leave { participant: accused.clone(), cause: LeaveCause::ConnectionLost });
    assert!(!court.hearing.shows(&witness, &accused) && court.hearing.shows(&clerk, &accused));
    assert!(!court.hearing.shows(&witness, &pid(OBSERVER)), "nobody unknown");
}

#[test]
fn reconnects_keep_admission_and_are_counted() {
    let mut court = Court::recording();
    let witness = pid(WITNESS);
    for round in 1..=3 {
        court.ok(Event::Leave { participant: witness.clone(), cause: LeaveCause::ConnectionLost });
        assert_eq!(court.hearing.place_of(&witness), Some(Place::Away));
        assert!(!court.hearing.recorded_participants().contains(&witness));
        assert!(matches!(
            court.refused(Event::Leave { participant: witness.clone(), cause: LeaveCause::Left }),
            Reason::NotPresent { .. }
        ));
        let effects = court.ok(Event::Reconnect { participant: witness.clone() });
        assert!(effects.contains(&Effect::RecorderSubscribe(witness.clone())), "round {round}: {effects:?}");
        assert_eq!(court.hearing.place_of(&witness), Some(Place::MainRoom), "no second trip through the lobby");
        let attendee = court.hearing.minutes().present.into_iter().find(|a| a.participant == witness).unwrap();
        assert_eq!(attendee.reconnections, round);
        assert_eq!(attendee.periods.len(), round as usize + 1);
    }
    assert!(matches!(court.refused(Event::Reconnect { participant: witness.clone() }), Reason::AlreadyPresent { .. }));
    assert!(!court.hearing.has_left(&witness), "a lost connection is not leaving");
    // A voluntary leave may be followed by a reconnection too; it counts the same. While it lasts, the others are
    // told they left, not that their connection was lost.
    court.ok(Event::Leave { participant: pid(OBSERVER), cause: LeaveCause::Left });
    assert!(court.hearing.has_left(&pid(OBSERVER)));
    court.ok(Event::Reconnect { participant: pid(OBSERVER) });
    assert!(!court.hearing.has_left(&pid(OBSERVER)));
    assert_eq!(court.hearing.minutes().technical.reconnections, 4);
    // A mute survives a reconnection.
    court.ok(Event::Mute { by: pid(JUDGE), participant: witness.clone() });
    court.ok(Event::Leave { participant: witness.clone(), cause: LeaveCause::ConnectionLost });
    court.ok(Event::Reconnect { participant: witness.clone() });
    assert!(court.hearing.is_muted(&witness));
}

#[test]
fn a_removed_participant_is_gone_for_good() {
    let mut court = Court::recording();
    let effects = court.ok(Event::Remove { by: pid(JUDGE), participant: pid(OBSERVER) });
    assert!(effects.contains(&Effect::RecorderUnsubscribe(pid(OBSERVER))));
    assert!(effects.contains(&Effect::Move { participant: pid(OBSERVER), to: Place::Away }));
    for event in [
        Event::Reconnect { participant: pid(OBSERVER) },
        Event::Leave { participant: pid(OBSERVER), cause: LeaveCause::Left },
        Event::Mute { by: pid(OBSERVER), participant: pid(OBSERVER) },
        Event::Remove { by: pid(CLERK), participant: pid(OBSERVER) },
        Event::Admit { by: pid(CLERK), participant: pid(OBSERVER) },
    ] {
        assert!(matches!(court.refused(event), Reason::Removed { .. }));
    }
    // Nobody removes a judge, and nobody removes themself.
    assert!(matches!(
        court.refused(Event::Remove { by: pid(CLERK), participant: pid(JUDGE) }),
        Reason::CannotRemoveJudge { .. }
    ));
    assert!(matches!(
        court.refused(Event::Remove { by: pid(CLERK), participant: pid(CLERK) }),
        Reason::CannotRemoveSelf { .. }
    ));
    // Someone in the lobby can be turned away; someone absent can be removed so they cannot come back.
    court.ok(Event::IssueInvite {
        by: clerk_member(),
        invite: invite(InviteId::new("i-late").unwrap(), OBSERVER, t(7_200)),
    });
    court.ok(Event::Join { invite: InviteId::new("i-late").unwrap(), participant: id("p-late") });
    court.ok(Event::Remove { by: pid(CLERK), participant: id("p-late") });
    court.ok(Event::Leave { participant: pid(PROSECUTOR), cause: LeaveCause::ConnectionLost });
    court.ok(Event::Remove { by: pid(CLERK), participant: pid(PROSECUTOR) });
    assert!(matches!(court.refused(Event::Reconnect { participant: pid(PROSECUTOR) }), Reason::Removed { .. }));
    let minutes = court.hearing.minutes();
    assert!(minutes.not_admitted.iter().any(|w| w.participant.as_str() == "p-late" && w.removed_at.is_some()));
}

// ---- Muting ----

#[test]
fn muting_rules() {
    let mut court = Court::recording();
    let witness = pid(WITNESS);
    // Anyone may mute themself, and unmute themself.
    court.ok(Event::Mute { by: witness.clone(), participant: witness.clone() });
    assert!(matches!(
        court.refused(Event::Mute { by: witness.clone(), participant: witness.clone() }),
        Reason::AlreadyMuted { .. }
    ));
    court.ok(Event::Unmute { by: witness.clone(), participant: witness.clone() });
    assert!(matches!(
        court.refused(Event::Unmute { by: witness.clone(), participant: witness.clone() }),
        Reason::NotMuted { .. }
    ));
    // Nobody but the court mutes or unmutes anyone else.
    for role in HearingRole::ALL.into_iter().filter(|role| !role.is_court() && *role != WITNESS) {
        assert!(matches!(
            court.refused(Event::Mute { by: pid(role), participant: witness.clone() }),
            Reason::RoleNotAllowed { .. }
        ));
    }
    // The court's mute outranks a self-mute, and the participant cannot lift it.
    court.ok(Event::Mute { by: witness.clone(), participant: witness.clone() });
    court.ok(Event::Mute { by: pid(CLERK), participant: witness.clone() });
    assert!(matches!(
        court.refused(Event::Unmute { by: witness.clone(), participant: witness.clone() }),
        Reason::MutedByCourt { .. }
    ));
    assert!(matches!(
        court.refused(Event::Unmute { by: pid(DEFENCE), participant: witness.clone() }),
        Reason::RoleNotAllowed { .. }
    ));
    // Muted is not unsubscribed: the recorder keeps the witness on the timeline.
    assert!(court.hearing.recorded_participants().contains(&witness));
    let effects = court.ok(Event::Unmute { by: pid(JUDGE), participant: witness.clone() });
    assert_eq!(effects.iter().filter(|e| matches!(e, Effect::SetMuted { .. })).count(), 1);
    assert!(!effects.iter().any(|e| matches!(e, Effect::RecorderSubscribe(_) | Effect::RecorderUnsubscribe(_))));
}

// ---- Recording ----

#[test]
fn recording_only_in_session() {
    let mut court = Court::seated();
    assert!(matches!(
        court.refused(Event::StartRecording { by: pid(CLERK) }),
        Reason::WrongPhase { phase: Phase::Open, .. }
    ));
    assert!(matches!(court.refused(Event::StopRecording { by: pid(CLERK) }), Reason::NotRecording));
    court.ok(Event::StartSession { by: pid(JUDGE) });
    let effects = court.ok(Event::StartRecording { by: pid(CLERK) });
    let subscribed: BTreeSet<_> = effects
        .iter()
        .filter_map(|e| if let Effect::RecorderSubscribe(p) = e { Some(p.clone()) } else { None })
        .collect();
    assert_eq!(subscribed, HearingRole::ALL.into_iter().map(pid).collect());
    assert!(matches!(court.refused(Event::StartRecording { by: pid(JUDGE) }), Reason::AlreadyRecording));
    let effects = court.ok(Event::StopRecording { by: pid(JUDGE) });
    assert_eq!(effects.last(), Some(&Effect::StopRecorder));
    // Runs may restart; ending the hearing stops the recorder.
    court.ok(Event::StartRecording { by: pid(JUDGE) });
    let from = court.records.len();
    court.ok(Event::End { by: pid(JUDGE) });
    assert_eq!(court.kinds_since(from), [HearingEventKind::RecordingStopped, HearingEventKind::HearingEnded]);
    assert_eq!(court.hearing.minutes().recording.len(), 2);
}

#[test]
fn segments_arrive_in_order_and_may_follow_the_end() {
    let mut court = Court::in_session();
    let segment = |index: u64| Event::SegmentSealed {
        index,
        sha256: Sha256::of(&index.to_be_bytes()),
        ledger_index: 100 + index,
    };
    assert!(matches!(court.refused(segment(0)), Reason::NoRecordingStarted));
    court.ok(Event::StartRecording { by: pid(CLERK) });
    court.ok(segment(0));
    assert!(matches!(court.refused(segment(0)), Reason::SegmentOutOfOrder { expected: 1, got: 0 }));
    assert!(matches!(court.refused(segment(2)), Reason::SegmentOutOfOrder { expected: 1, got: 2 }));
    court.ok(segment(1));
    court.ok(Event::End { by: pid(CLERK) });
    court.ok(segment(2)); // the segment open at the end is sealed afterwards
    let segments = court.hearing.minutes().segments;
    assert_eq!(segments.iter().map(|s| (s.index, s.ledger_index)).collect::<Vec<_>>(), [(0, 100), (1, 101), (2, 102)]);
    assert_eq!(segments[2].sha256, Sha256::of(&2u64.to_be_bytes()));
}

// ---- Private consultation ----

#[test]
fn the_consultation_room_never_reaches_the_recorder() {
    // A long hearing; `Court` checks the recorder's subscriptions against the rules after every single event.
    let mut court = Court::recording();
    let (defence, accused, witness, interpreter, prosecutor) =
        (pid(DEFENCE), pid(ACCUSED), pid(WITNESS), pid(INTERPRETER), pid(PROSECUTOR));
    let consultation_1 = ConsultationId::new(1);

    let effects =
        court.ok(Event::StartConsultation { by: defence.clone(), with: vec![accused.clone(), interpreter.clone()] });
    let first_move = effects.iter().position(|e| matches!(e, Effect::Move { .. })).unwrap();
    for member in [&defence, &accused, &interpreter] {
        let unsubscribed = effects.iter().position(|e| e == &Effect::RecorderUnsubscribe(member.clone())).unwrap();
        assert!(unsubscribed < first_move, "{member} left the recorder after moving");
        assert_eq!(court.hearing.place_of(member), Some(Place::Consultation(consultation_1)));
    }
    let recorded = court.hearing.recorded_participants();
    assert!(recorded.contains(&witness) && recorded.contains(&prosecutor));
    assert_eq!(court.hearing.consultation_members(consultation_1).len(), 3);

    // Nothing done in the hearing brings a consultation member onto the recording.
    court.ok(Event::StopRecording { by: pid(CLERK) });
    court.ok(Event::StartRecording { by: pid(JUDGE) });
    court.ok(Event::Mute { by: accused.clone(), participant: accused.clone() });
    court.ok(Event::Mute { by: pid(CLERK), participant: interpreter.clone() });
    court.ok(Event::Leave { participant: interpreter.clone(), cause: LeaveCause::ConnectionLost });
    court.ok(Event::Reconnect { participant: interpreter.clone() }); // back in the main room, not the consultation
    assert!(court.hearing.recorded_participants().contains(&interpreter));
    assert!(!court.hearing.recorded_participants().contains(&accused));
    // Members of a consultation cannot be the subject of the hearing's formal acts meanwhile.
    assert!(matches!(
        court.refused(Event::GiveRightsNotice { by: pid(JUDGE), person: accused.clone(), text: None }),
        Reason::InConsultation { .. }
    ));
    assert!(matches!(
        court.refused(Event::StartConsultation { by: defence.clone(), with: vec![witness.clone()] }),
        Reason::InConsultation { .. }
    ));

    // The prosecution consults its witness at the same time.
    court.ok(Event::StartConsultation { by: prosecutor.clone(), with: vec![witness.clone(), interpreter.clone()] });
    assert_eq!(court.hearing.recorded_participants(), [pid(JUDGE), pid(CLERK), pid(OFFICER), pid(OBSERVER)].into());
    // Only its counsel or the court ends a consultation.
    let consultation_2 = ConsultationId::new(2);
    assert_eq!(court.hearing.place_of(&witness), Some(Place::Consultation(consultation_2)));
    assert!(matches!(
        court.refused(Event::EndConsultation { by: defence.clone(), consultation: consultation_2 }),
        Reason::NotConsultationCounsel { .. }
    ));
    assert!(matches!(
        court.refused(Event::EndConsultation { by: witness.clone(), consultation: consultation_2 }),
        Reason::NotConsultationCounsel { .. }
    ));
    let effects = court.ok(Event::EndConsultation { by: pid(JUDGE), consultation: consultation_2 });
    assert!(effects.contains(&Effect::RecorderSubscribe(witness.clone())));
    assert!(matches!(
        court.refused(Event::EndConsultation { by: pid(JUDGE), consultation: consultation_2 }),
        Reason::ConsultationEnded { .. }
    ));

    // The defence ends its own; everyone comes back onto the recording.
    court.ok(Event::EndConsultation { by: defence.clone(), consultation: consultation_1 });
    assert_eq!(court.hearing.recorded_participants().len(), HearingRole::ALL.len());

    // A consultation ends by itself when its counsel leaves the room...
    court.ok(Event::StartConsultation { by: defence.clone(), with: vec![witness.clone()] });
    court.ok(Event::Leave { participant: defence.clone(), cause: LeaveCause::ConnectionLost });
    assert_eq!(court.hearing.place_of(&witness), Some(Place::MainRoom));
    court.ok(Event::Reconnect { participant: defence.clone() });
    // ...or its last client is removed; the interpreter does not stay alone with counsel.
    court.ok(Event::StartConsultation { by: defence.clone(), with: vec![accused.clone(), interpreter.clone()] });
    court.ok(Event::Remove { by: pid(CLERK), participant: accused.clone() });
    assert_eq!(court.hearing.place_of(&defence), Some(Place::MainRoom));
    assert_eq!(court.hearing.place_of(&interpreter), Some(Place::MainRoom));
    // Ending the hearing ends any consultation.
    court.ok(Event::StartConsultation { by: prosecutor.clone(), with: vec![witness.clone()] });
    court.ok(Event::End { by: pid(JUDGE) });

    // The ledger learns who consulted and when, never anything else; the minutes say the same.
    let consultation_records: Vec<_> = court
        .records
        .iter()
        .filter(|r| matches!(r.kind, HearingEventKind::ConsultationStarted | HearingEventKind::ConsultationEnded))
        .collect();
    assert!(consultation_records.iter().all(|r| r.subject.is_some() && r.detail_sha256.is_some()));
    let minutes = court.hearing.minutes();
    assert_eq!(minutes.consultations.len(), 5);
    assert!(minutes.consultations.iter().all(|c| c.ended_at.is_some()));
    assert_eq!(minutes.consultations[0].members, [accused.clone(), interpreter.clone()]);
}

#[test]
fn who_may_consult_with_whom() {
    type Check = fn(&Reason) -> bool;
    let cases: [(HearingRole, &[HearingRole], Option<Check>); 10] = [
        (DEFENCE, &[ACCUSED], None),
        (DEFENCE, &[WITNESS, INTERPRETER], None),
        (PROSECUTOR, &[WITNESS, INTERPRETER], None),
        (PROSECUTOR, &[ACCUSED], Some(|r| matches!(r, Reason::WrongSubjectRole { role: ACCUSED, .. }))),
        (DEFENCE, &[INTERPRETER], Some(|r| matches!(r, Reason::ConsultationWithoutClient))),
        (DEFENCE, &[], Some(|r| matches!(r, Reason::EmptyConsultation))),
        (DEFENCE, &[ACCUSED, ACCUSED], Some(|r| matches!(r, Reason::DuplicateMember { .. }))),
        (DEFENCE, &[DEFENCE], Some(|r| matches!(r, Reason::ConsultationWithSelf { .. }))),
        (DEFENCE, &[ACCUSED, JUDGE], Some(|r| matches!(r, Reason::WrongSubjectRole { role: JUDGE, .. }))),
        (WITNESS, &[ACCUSED], Some(|r| matches!(r, Reason::RoleNotAllowed { role: WITNESS, .. }))),
    ];
    for (counsel, members, refusal) in cases {
        let mut court = Court::seated();
        let event = Event::StartConsultation { by: pid(counsel), with: members.iter().copied().map(pid).collect() };
        match refusal {
            None => {
                court.ok(event);
            }
            Some(check) => {
                let reason = court.refused(event);
                assert!(check(&reason), "{counsel} with {members:?}: {reason}");
            }
        }
    }
}

// ---- Identity, rights, oaths ----

#[test]
fn the_oath_follows_the_rights_notice_and_the_identity_check() {
    let mut court = Court::in_session();
    let (judge, witness) = (pid(JUDGE), pid(WITNESS));
    let oath =
        |form| Event::TakeOath { by: pid(JUDGE), witness: pid(WITNESS), form, despite_no_media: false, text: None };
    assert!(matches!(court.refused(oath(OathForm::Oath)), Reason::RightsNoticeNotGiven { .. }));
    court.present(WITNESS, Wording::RightsNotice);
    court.ok(Event::GiveRightsNotice { by: judge.clone(), person: witness.clone(), text: None });
    assert!(matches!(court.refused(oath(OathForm::Oath)), Reason::IdentityNotVerified { .. }));
    // Only the remote-site officer verifies identity, and only of the person heard.
    for role in HearingRole::ALL.into_iter().filter(|&role| role != OFFICER && role != WITNESS) {
        let reason = court.refused(Event::VerifyIdentity {
            by: pid(role),
            person: witness.clone(),
            verification: verification(),
        });
        assert!(matches!(reason, Reason::RoleNotAllowed { .. }), "{role}: {reason}");
    }
    assert!(matches!(
        court.refused(Event::VerifyIdentity { by: pid(OFFICER), person: pid(OBSERVER), verification: verification() }),
        Reason::WrongSubjectRole { .. }
    ));
    let effects =
        court.ok(Event::VerifyIdentity { by: pid(OFFICER), person: witness.clone(), verification: verification() });
    let Some(Effect::Record(record)) = effects.first() else { panic!("{effects:?}") };
    let expected = verification().detail_sha256(court.hearing.id(), &witness, &pid(OFFICER)).unwrap();
    assert_eq!((record.kind, record.detail_sha256), (HearingEventKind::IdentityVerified, Some(expected)));
    court.present(WITNESS, Wording::Affirmation);
    court.ok(oath(OathForm::Affirmation));
    assert!(matches!(court.refused(oath(OathForm::Oath)), Reason::AlreadySworn { .. }));
    assert_eq!(court.records.last().unwrap().kind, HearingEventKind::AffirmationMade);
    // The accused is told of their rights but takes no oath.
    court.present(ACCUSED, Wording::RightsNotice);
    court.ok(Event::GiveRightsNotice { by: judge.clone(), person: pid(ACCUSED), text: None });
    assert!(matches!(
        court.refused(Event::TakeOath {
            by: judge.clone(),
            witness: pid(ACCUSED),
            form: OathForm::Oath,
            despite_no_media: false,
            text: None,
        }),
        Reason::WrongSubjectRole { .. }
    ));
    // The interpreter is sworn once.
    let swear = || Event::SwearInterpreter {
        by: pid(JUDGE),
        interpreter: pid(INTERPRETER),
        languages: Label::new("ar-TN / it").unwrap(),
    };
    court.present(INTERPRETER, Wording::InterpreterOath);
    court.ok(swear());
    assert!(matches!(court.refused(swear()), Reason::AlreadySworn { .. }));
    let minutes = court.hearing.minutes();
    assert_eq!(minutes.identity_checks.len(), 1);
    assert_eq!(minutes.identity_checks[0].detail_sha256, expected);
    assert_eq!(minutes.oaths[0].form, OathForm::Affirmation);
    assert_eq!(minutes.interpreters[0].languages.as_str(), "ar-TN / it");
    assert_eq!(minutes.rights_notices.len(), 2);
}

#[test]
fn a_witness_nobody_sees_or_hears_is_on_the_record_and_their_oath_needs_the_courts_confirmation() {
    let mut court = Court::recording();
    let (judge, witness) = (pid(JUDGE), pid(WITNESS));
    court.present(WITNESS, Wording::RightsNotice);
    court.ok(Event::GiveRightsNotice { by: judge.clone(), person: witness.clone(), text: None });
    court.present(WITNESS, Wording::Oath);
    court.ok(Event::VerifyIdentity { by: pid(OFFICER), person: witness.clone(), verification: verification() });
    assert!(!court.hearing.media_stopped(&witness));
    // A media report that changes nothing is refused; one that does is on the record, about the witness.
    assert!(matches!(
        court.refused(Event::MediaResumed { participant: witness.clone() }),
        Reason::MediaNotStopped { .. }
    ));
    let stopped_at = court.now + 1;
    let effects = court.ok(Event::MediaStopped { participant: witness.clone() });
    let [Effect::Record(record)] = effects.as_slice() else { panic!("{effects:?}") };
    assert_eq!((record.kind, record.subject.as_ref()), (HearingEventKind::MediaStopped, Some(&witness)));
    assert!(court.hearing.media_stopped(&witness));
    assert!(matches!(
        court.refused(Event::MediaStopped { participant: witness.clone() }),
        Reason::MediaAlreadyStopped { .. }
    ));
    // Routing and recording are unchanged: the gap is a fact about what arrives, not a move.
    assert_eq!(court.hearing.place_of(&witness), Some(Place::MainRoom));
    assert!(court.hearing.recorded_participants().contains(&witness));

    // The court is warned before the oath: without its confirmation, no oath; with it, the oath is recorded.
    let oath = |despite_no_media| Event::TakeOath {
        by: pid(JUDGE),
        witness: pid(WITNESS),
        form: OathForm::Oath,
        despite_no_media,
        text: None,
    };
    let reason = court.refused(oath(false));
    assert!(matches!(reason, Reason::NoMedia { .. }), "{reason}");
    assert_eq!(reason.key(), "no_media");

    // Media back: the gap closes; a second gap ends with the witness's departure.
    let resumed_at = court.now + 1;
    court.ok(Event::MediaResumed { participant: witness.clone() });
    assert!(!court.hearing.media_stopped(&witness));
    court.ok(Event::MediaStopped { participant: witness.clone() });
    court.ok(oath(true));
    assert_eq!(court.records.last().unwrap().kind, HearingEventKind::OathTaken);
    let lost_at = court.now + 1;
    court.ok(Event::Leave { participant: witness.clone(), cause: LeaveCause::ConnectionLost });
    assert!(!court.hearing.media_stopped(&witness), "a new connection starts afresh");
    assert!(matches!(court.refused(Event::MediaStopped { participant: witness.clone() }), Reason::NotPresent { .. }));
    court.ok(Event::Reconnect { participant: witness.clone() });
    assert!(!court.hearing.media_stopped(&witness));

    let minutes = court.hearing.minutes();
    let attendee = minutes.present.iter().find(|a| a.participant == witness).unwrap();
    let gaps: Vec<_> = attendee.media_gaps.iter().map(|gap| (gap.from, gap.until)).collect();
    assert_eq!(gaps, [(t(stopped_at), Some(t(resumed_at))), (t(resumed_at + 1), Some(t(lost_at)))]);
    // Nobody else had a gap, and an attendee without one carries no `media_gaps` in the minutes at all.
    let judge_minutes = minutes.present.iter().find(|a| a.participant == judge).unwrap();
    assert!(judge_minutes.media_gaps.is_empty());
    let json = serde_json::to_value(&minutes).unwrap();
    let judge_json = json["present"].as_array().unwrap().iter().find(|a| a["participant"] == "p-judge").unwrap();
    assert!(judge_json.get("media_gaps").is_none(), "{judge_json}");
    // A gap open when the hearing ends closes with it.
    court.ok(Event::MediaStopped { participant: judge.clone() });
    court.ok(Event::End { by: pid(CLERK) });
    let minutes = court.hearing.minutes();
    let judge_minutes = minutes.present.iter().find(|a| a.participant == judge).unwrap();
    assert_eq!(judge_minutes.media_gaps.last().unwrap().until, Some(t(court.now)));
}

/// A flapping link (media stopping and resuming, a connection lost and back, 300 changes of each) adds a few
/// records a window, not one per change: past the participant's budget a window's changes are counted by kind,
/// one record each with its count once the window closes, so every change is accounted for; the state (what the
/// court is warned of) and the minutes follow every change.
#[test]
fn a_flapping_link_is_counted_into_a_few_records_while_the_state_and_the_minutes_keep_every_change() {
    const PRESENCE: [HearingEventKind; 5] = [
        HearingEventKind::Left,
        HearingEventKind::ConnectionLost,
        HearingEventKind::Reconnected,
        HearingEventKind::MediaStopped,
        HearingEventKind::MediaResumed,
    ];
    let mut court = Court::recording();
    let witness = pid(WITNESS);
    court.present(WITNESS, Wording::RightsNotice);
    court.ok(Event::GiveRightsNotice { by: pid(JUDGE), person: witness.clone(), text: None });
    court.present(WITNESS, Wording::Oath);
    court.ok(Event::VerifyIdentity { by: pid(OFFICER), person: witness.clone(), verification: verification() });
    let presence = |court: &Court, from: usize| -> Vec<(HearingEventKind, Option<u64>)> {
        let records = court.records[from..].iter().filter(|r| r.subject.as_ref() == Some(&witness));
        records.filter(|r| PRESENCE.contains(&r.kind)).map(|r| (r.kind, r.repeated.map(|r| r.count))).collect()
    };
    let start = court.records.len();
    for _ in 0..150 {
        court.ok(Event::MediaStopped { participant: witness.clone() });
        court.ok(Event::MediaResumed { participant: witness.clone() });
    }
    // 300 changes within one window: the budget's records, one by one; the rest wait, counted.
    let budget = OWN_STEPS_PER_WINDOW as usize;
    assert_eq!(presence(&court, start).len(), budget, "{:?}", presence(&court, start));
    assert!(!court.hearing.media_stopped(&witness));

    // The media stops once more after the window: the window's counts are recorded, one per kind, then this
    // change on its own; and the court is warned that the witness has no media.
    let from = court.records.len();
    court.ok_at(court.now + OWN_STEPS_WINDOW.as_secs(), Event::MediaStopped { participant: witness.clone() });
    let counted = 150 - budget as u64 / 2;
    assert_eq!(
        presence(&court, from),
        [
            (HearingEventKind::MediaStopped, Some(counted)),
            (HearingEventKind::MediaResumed, Some(counted)),
            (HearingEventKind::MediaStopped, None),
        ]
    );
    assert!(court.hearing.media_stopped(&witness));
    let oath = Event::TakeOath {
        by: pid(JUDGE),
        witness: witness.clone(),
        form: OathForm::Oath,
        despite_no_media: false,
        text: None,
    };
    assert!(matches!(court.refused(oath), Reason::NoMedia { .. }));
    court.ok(Event::MediaResumed { participant: witness.clone() });

    // A rejoin storm in the new window, then the end of the hearing, which closes every window.
    for _ in 0..150 {
        court.ok(Event::Leave { participant: witness.clone(), cause: LeaveCause::ConnectionLost });
        court.ok(Event::Reconnect { participant: witness.clone() });
    }
    assert_eq!(court.hearing.place_of(&witness), Some(Place::MainRoom), "back in the room after the storm");
    court.ok(Event::End { by: pid(CLERK) });
    let records = presence(&court, start);
    let changes: u64 = records.iter().map(|(_, count)| count.unwrap_or(1)).sum();
    assert_eq!(changes, 300 + 2 + 300, "every change is accounted for: {records:?}");
    assert!(records.len() <= 2 * (budget + PRESENCE.len()), "{} records: {records:?}", records.len());
    let minutes = court.hearing.minutes();
    let attendee = minutes.present.iter().find(|a| a.participant == witness).unwrap();
    assert_eq!((attendee.media_gaps.len(), attendee.reconnections), (151, 150));
}

/// The other steps a participant can repeat on their own cost the public log a few records a window too: a
/// participant muting and unmuting themself 300 times, counsel opening and closing a consultation 100 times. Past
/// their budget a window's records are counted by kind and subject, one record each with its count once the window
/// closes, so that every step is accounted for; the state and the minutes keep every step. The court muting someone
/// else is charged to the court's own, larger budget, and costs the one muted nothing.
#[test]
fn steps_a_participant_repeats_on_their_own_are_counted_into_a_few_records() {
    let mut court = Court::seated();
    let (witness, defence, accused) = (pid(WITNESS), pid(DEFENCE), pid(ACCUSED));
    let budget = OWN_STEPS_PER_WINDOW as u64;
    let by = |court: &Court, actor: &ParticipantId, from: usize| -> Vec<(HearingEventKind, Option<u64>)> {
        let records = court.records[from..].iter().filter(|r| r.actor == *actor.as_actor());
        records.map(|r| (r.kind, r.repeated.map(|r| r.count))).collect()
    };
    let start = court.records.len();
    for _ in 0..150 {
        court.ok(Event::Mute { by: witness.clone(), participant: witness.clone() });
        court.ok(Event::Unmute { by: witness.clone(), participant: witness.clone() });
    }
    court.ok(Event::Mute { by: witness.clone(), participant: witness.clone() });
    // 301 steps within one window: the budget's records, one by one; the rest wait, counted. The state follows
    // every step: the witness is muted.
    assert_eq!(by(&court, &witness, start).len() as u64, budget, "{:?}", by(&court, &witness, start));
    assert!(court.hearing.is_muted(&witness));

    // The court mutes and unmutes the accused again and again: the court's larger budget one by one, the rest
    // counted, charged to the judge and not to the one muted.
    let court_from = court.records.len();
    for _ in 0..20 {
        court.ok(Event::Mute { by: pid(JUDGE), participant: accused.clone() });
        court.ok(Event::Unmute { by: pid(JUDGE), participant: accused.clone() });
    }
    assert_eq!(by(&court, &pid(JUDGE), court_from).len(), COURT_STEPS_PER_WINDOW as usize);
    assert!(court.records[court_from..].iter().all(|r| r.repeated.is_none() && r.subject.as_ref() == Some(&accused)));
    assert!(!court.hearing.is_muted(&accused));

    // Counsel takes the accused into a consultation and back as often as a hearing allows: each step with a record
    // per member; the next consultation is refused.
    let from = court.records.len();
    let most = CONSULTATIONS_PER_HEARING as u32;
    for n in 1..=most {
        court.ok(Event::StartConsultation { by: defence.clone(), with: vec![accused.clone()] });
        court.ok(Event::EndConsultation { by: defence.clone(), consultation: ConsultationId::new(n) });
    }
    let reason = court.refused(Event::StartConsultation { by: defence.clone(), with: vec![accused.clone()] });
    assert_eq!(reason, Reason::TooManyConsultations { consultations: CONSULTATIONS_PER_HEARING });
    assert_eq!(reason.key(), "too_many_consultations");
    assert_eq!(by(&court, &defence, from).len() as u64, 2 * budget);
    assert_eq!(court.hearing.place_of(&accused), Some(Place::MainRoom));

    // The witness unmutes after the window: the window's counts are recorded, one per kind, then this step.
    let from = court.records.len();
    court.ok_at(
        court.now + OWN_STEPS_WINDOW.as_secs(),
        Event::Unmute { by: witness.clone(), participant: witness.clone() },
    );
    let muted = 151 - budget / 2;
    let unmuted = 150 - budget / 2;
    assert_eq!(
        by(&court, &witness, from),
        [
            (HearingEventKind::Muted, Some(muted)),
            (HearingEventKind::Unmuted, Some(unmuted)),
            (HearingEventKind::Unmuted, None),
        ]
    );
    assert!(court.records[from..from + 2].iter().all(|r| r.subject.as_ref() == Some(&witness)));
    assert!(!court.hearing.is_muted(&witness));
    // The judge's window closed at the same event: the 40 steps are all accounted for.
    let judge = by(&court, &pid(JUDGE), court_from);
    assert_eq!(judge.iter().map(|(_, count)| count.unwrap_or(1)).sum::<u64>(), 40, "{judge:?}");
    assert_eq!(judge.len(), COURT_STEPS_PER_WINDOW as usize + 2, "{judge:?}");

    // Counsel's window has closed by then too (at any later event of the hearing, or at its end): one count per
    // kind and member.
    court.ok(Event::End { by: pid(CLERK) });
    let consultations = by(&court, &defence, start);
    let steps: u64 = consultations.iter().map(|(_, count)| count.unwrap_or(1)).sum();
    assert_eq!(steps, 2 * 2 * u64::from(most), "every member's start and end is accounted for: {consultations:?}");
    assert_eq!(consultations.len() as u64, 2 * budget + 4, "{consultations:?}");
    let counted: Vec<_> =
        court.records.iter().filter(|r| r.actor == *defence.as_actor() && r.repeated.is_some()).collect();
    let subjects: BTreeSet<_> = counted.iter().map(|r| (r.kind, r.subject.clone().unwrap())).collect();
    assert_eq!(
        subjects,
        [
            (HearingEventKind::ConsultationStarted, defence.clone()),
            (HearingEventKind::ConsultationStarted, accused.clone()),
            (HearingEventKind::ConsultationEnded, defence.clone()),
            (HearingEventKind::ConsultationEnded, accused.clone()),
        ]
        .into()
    );
    // The minutes know every consultation.
    let minutes = court.hearing.minutes();
    assert_eq!(minutes.consultations.len(), CONSULTATIONS_PER_HEARING);
    assert!(minutes.consultations.iter().all(|c| c.counsel == defence && c.members == [accused.clone()]));
}

/// The court's steps that can be repeated at will, in hostile hands: the judge presenting and giving the rights
/// notice as often as allowed and muting and unmuting the witness, 100 steps, and the clerk starting and stopping
/// the recording as often as a hearing allows. Each of them gets the court's budget of records a window; the rest
/// are counted, one record per kind and subject with its count, and every step is accounted for; the witness is
/// shown the text every time, and the recording runs are all in the state.
#[test]
fn the_courts_repeatable_steps_are_counted_past_its_budget() {
    let mut court = Court::in_session();
    let (judge, clerk, witness) = (pid(JUDGE), pid(CLERK), pid(WITNESS));
    let budget = COURT_STEPS_PER_WINDOW as usize;
    let mine = |court: &Court, actor: &ParticipantId, from: usize| -> Vec<(HearingEventKind, Option<u64>)> {
        let records = court.records[from..].iter().filter(|r| r.actor == *actor.as_actor());
        records.map(|r| (r.kind, r.repeated.map(|r| r.count))).collect()
    };
    let start = court.records.len();
    let mut shown = 0;
    // The judge's 100 steps: each text presented and each rights notice given as often as they may be, to the
    // witness and to the accused, then muting and unmuting the witness.
    let accused = pid(ACCUSED);
    for person in [&witness, &accused] {
        for _ in 0..PRESENTATIONS_PER_PERSON {
            let text = words("en", "The court's rights notice.");
            let wording = Wording::RightsNotice;
            let effects = court.ok(Event::PresentText { by: judge.clone(), person: person.clone(), wording, text });
            shown += effects
                .iter()
                .filter(|e| matches!(e, Effect::ShowText { participant, .. } if *participant == witness))
                .count();
            court.ok(Event::GiveRightsNotice { by: judge.clone(), person: person.clone(), text: None });
        }
    }
    let muting = 100 - 4 * PRESENTATIONS_PER_PERSON;
    for n in 0..muting {
        let participant = witness.clone();
        court.ok(if n % 2 == 0 {
            Event::Mute { by: judge.clone(), participant }
        } else {
            Event::Unmute { by: judge.clone(), participant }
        });
    }
    for _ in 0..RECORDING_RUNS_PER_HEARING {
        court.ok(Event::StartRecording { by: clerk.clone() });
        court.ok(Event::StopRecording { by: clerk.clone() });
    }
    // Each run's end seals everyone's segments: the runs of a hearing are bounded.
    let reason = court.refused(Event::StartRecording { by: clerk.clone() });
    assert_eq!(reason, Reason::TooManyRecordingRuns { runs: RECORDING_RUNS_PER_HEARING });
    assert_eq!(reason.key(), "too_many_recording_runs");
    assert_eq!(shown, PRESENTATIONS_PER_PERSON, "the witness sees the text every time");
    assert_eq!(mine(&court, &judge, start).len(), budget);
    assert_eq!(mine(&court, &clerk, start).len(), budget);

    court.ok(Event::End { by: clerk.clone() });
    let judged = mine(&court, &judge, start);
    assert_eq!(judged.iter().map(|(_, count)| count.unwrap_or(1)).sum::<u64>(), 100, "{judged:?}");
    // The budget's records, then one count for the mutes and one for the unmutes past it.
    assert_eq!(judged.len(), budget + 2, "{judged:?}");
    let recording = mine(&court, &clerk, start);
    let runs = |kind| recording.iter().filter(|(k, _)| *k == kind).map(|(_, count)| count.unwrap_or(1)).sum::<u64>();
    let most = RECORDING_RUNS_PER_HEARING as u64;
    assert_eq!((runs(HearingEventKind::RecordingStarted), runs(HearingEventKind::RecordingStopped)), (most, most));
    assert_eq!(court.hearing.minutes().recording.len(), RECORDING_RUNS_PER_HEARING);
}

/// A wording is presented to one person, and the rights notice given to them, at most
/// `PRESENTATIONS_PER_PERSON` times in a hearing: the next is refused with its own key, and the hearing's state
/// grows no further.
#[test]
fn the_judge_presents_a_text_to_a_person_a_few_times_a_hearing_and_no_more() {
    let mut court = Court::in_session();
    for _ in 0..PRESENTATIONS_PER_PERSON {
        court.present(WITNESS, Wording::RightsNotice);
        court.ok(Event::GiveRightsNotice { by: pid(JUDGE), person: pid(WITNESS), text: None });
    }
    let text = words("en", "The court's rights notice.");
    let present = Event::PresentText { by: pid(JUDGE), person: pid(WITNESS), wording: Wording::RightsNotice, text };
    let reason = court.refused(present);
    let times = PRESENTATIONS_PER_PERSON;
    let wording = Wording::RightsNotice;
    assert_eq!(reason, Reason::TooManyPresentations { participant: pid(WITNESS), wording, times });
    assert_eq!(reason.key(), "too_many_presentations");
    let give = Event::GiveRightsNotice { by: pid(JUDGE), person: pid(WITNESS), text: None };
    assert!(matches!(court.refused(give), Reason::TooManyPresentations { .. }));
    assert_eq!(court.hearing.rights_notices().len(), PRESENTATIONS_PER_PERSON);
    // Another person, and another wording for the same person, are counted on their own.
    court.present(ACCUSED, Wording::RightsNotice);
    court.present(WITNESS, Wording::Oath);
}

/// Each identity check stores a document, so a person is checked at most `IDENTITY_CHECKS_PER_PERSON` times in a
/// hearing (a correction, not a flood): the next is refused with its own key and changes nothing.
#[test]
fn a_persons_identity_is_checked_a_few_times_a_hearing_and_no_more() {
    let mut court = Court::seated();
    let check = |person: HearingRole| Event::VerifyIdentity {
        by: pid(OFFICER),
        person: pid(person),
        verification: verification(),
    };
    for _ in 0..IDENTITY_CHECKS_PER_PERSON {
        court.ok(check(WITNESS));
    }
    let reason = court.refused(check(WITNESS));
    assert_eq!(reason, Reason::TooManyIdentityChecks { participant: pid(WITNESS), checks: IDENTITY_CHECKS_PER_PERSON });
    assert_eq!(reason.key(), "too_many_identity_checks");
    // Another person's checks are their own.
    court.ok(check(ACCUSED));
    assert!(matches!(court.refused(check(WITNESS)), Reason::TooManyIdentityChecks { .. }));
    assert_eq!(court.hearing.identity_checks().len(), IDENTITY_CHECKS_PER_PERSON + 1);
    let records = court.records.iter().filter(|r| r.kind == HearingEventKind::IdentityVerified).count();
    assert_eq!(records, IDENTITY_CHECKS_PER_PERSON + 1);
}

#[test]
fn a_domestic_hearing_may_waive_the_identity_check_before_the_oath() {
    let mut court = Court::scheduled(Rules { identity_check_before_oath: false, ..Rules::default() });
    court.ok(Event::OpenLobby { by: clerk_member() });
    court.join(CLERK);
    for role in [JUDGE, WITNESS] {
        court.join(role);
        court.ok(Event::Admit { by: pid(CLERK), participant: pid(role) });
    }
    assert!(matches!(
        court.refused(Event::GiveRightsNotice { by: pid(JUDGE), person: pid(WITNESS), text: None }),
        Reason::WrongPhase { phase: Phase::Open, .. }
    ));
    court.ok(Event::StartSession { by: pid(JUDGE) });
    court.present(WITNESS, Wording::RightsNotice);
    court.ok(Event::GiveRightsNotice { by: pid(JUDGE), person: pid(WITNESS), text: None });
    court.present(WITNESS, Wording::Oath);
    court.ok(Event::TakeOath {
        by: pid(JUDGE),
        witness: pid(WITNESS),
        form: OathForm::Oath,
        despite_no_media: false,
        text: None,
    });
}

#[test]
fn the_words_are_presented_before_they_are_spoken_and_the_step_names_them() {
    let mut court = Court::in_session();
    court.ok(Event::VerifyIdentity { by: pid(OFFICER), person: pid(WITNESS), verification: verification() });
    let (judge, witness) = (pid(JUDGE), pid(WITNESS));
    let notice = words("ar", "لك الحق في التزام الصمت.");
    let present = |person: &ParticipantId, wording, text: &TextShown| Event::PresentText {
        by: pid(JUDGE),
        person: person.clone(),
        wording,
        text: text.clone(),
    };
    let oath =
        |form, text| Event::TakeOath { by: pid(JUDGE), witness: pid(WITNESS), form, despite_no_media: false, text };

    // Nothing is recorded as given or sworn before its words were on the person's screen.
    let reason = court.refused(Event::GiveRightsNotice { by: judge.clone(), person: witness.clone(), text: None });
    assert!(matches!(reason, Reason::TextNotPresented { wording: Wording::RightsNotice, .. }), "{reason}");
    assert_eq!(reason.key(), "text_not_presented");
    // Only the judge presents, only in session, and only the words that fit the person.
    let reason = court.refused(Event::PresentText {
        by: pid(CLERK),
        person: witness.clone(),
        wording: Wording::RightsNotice,
        text: notice.clone(),
    });
    assert!(matches!(reason, Reason::RoleNotAllowed { .. }), "{reason}");
    for (person, wording) in [
        (ACCUSED, Wording::Oath),
        (ACCUSED, Wording::Affirmation),
        (WITNESS, Wording::InterpreterOath),
        (INTERPRETER, Wording::RightsNotice),
        (OBSERVER, Wording::RightsNotice),
    ] {
        let reason = court.refused(present(&pid(person), wording, &notice));
        assert!(matches!(reason, Reason::WrongSubjectRole { .. }), "{wording} to the {person}: {reason}");
    }

    // Presenting: on the record (the person committed, the detail a digest), then shown to the person and the judge.
    let before = court.records.len();
    let effects = court.ok(present(&witness, Wording::RightsNotice, &notice));
    let [Effect::Record(record), Effect::ShowText { .. }, Effect::ShowText { .. }] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!((record.kind, record.subject.as_ref()), (HearingEventKind::TextPresented, Some(&witness)));
    assert_ne!(record.detail_sha256, Some(notice.sha256), "the detail names the wording and the person too");
    let shown: Vec<_> = court.shown.iter().map(|(to, wording, text)| (to.clone(), *wording, text.clone())).collect();
    assert_eq!(
        shown,
        [
            (witness.clone(), Wording::RightsNotice, notice.clone()),
            (judge.clone(), Wording::RightsNotice, notice.clone())
        ]
    );
    // A step naming other words than those presented is refused; naming none, it names those presented.
    let other = words("fr", "Vous pouvez garder le silence.");
    let reason =
        court.refused(Event::GiveRightsNotice { by: judge.clone(), person: witness.clone(), text: Some(other) });
    assert!(matches!(reason, Reason::NotTheTextPresented { .. }), "{reason}");
    court.ok(Event::GiveRightsNotice { by: judge.clone(), person: witness.clone(), text: None });
    assert_eq!(court.records.last().unwrap().detail_sha256, Some(notice.sha256));

    // The oath's words were presented, but the witness affirms: the affirmation's words must be presented too.
    let sworn = words("ar", "أقسم بالله العظيم أن أقول الحق.");
    court.ok(present(&witness, Wording::Oath, &sworn));
    let reason = court.refused(oath(OathForm::Affirmation, None));
    assert!(matches!(reason, Reason::TextNotPresented { wording: Wording::Affirmation, .. }), "{reason}");
    // Presented again in another language: the last words presented are the ones sworn to.
    let affirmation_it = words("it", "Affermo solennemente.");
    let affirmation_ar = words("ar", "أؤكد رسميا.");
    court.ok(present(&witness, Wording::Affirmation, &affirmation_it));
    court.ok(present(&witness, Wording::Affirmation, &affirmation_ar));
    court.ok(oath(OathForm::Affirmation, Some(affirmation_ar.clone())));
    assert_eq!(court.records.last().unwrap().detail_sha256, Some(affirmation_ar.sha256));
    // Once sworn, no oath's words are presented to them again.
    let reason = court.refused(present(&witness, Wording::Oath, &sworn));
    assert!(matches!(reason, Reason::AlreadySworn { .. }), "{reason}");

    // The interpreter is shown their own oath, in their language, and sworn to it.
    let swear = || Event::SwearInterpreter {
        by: pid(JUDGE),
        interpreter: pid(INTERPRETER),
        languages: Label::new("ar-TN / it").unwrap(),
    };
    let reason = court.refused(swear());
    assert!(matches!(reason, Reason::TextNotPresented { wording: Wording::InterpreterOath, .. }), "{reason}");
    let interpreter_oath = words("it", "Giuro di tradurre fedelmente.");
    court.ok(present(&pid(INTERPRETER), Wording::InterpreterOath, &interpreter_oath));
    assert_eq!(court.shown.last().map(|(to, ..)| to), Some(&judge));
    assert!(court.shown.iter().any(|(to, wording, _)| *to == pid(INTERPRETER) && *wording == Wording::InterpreterOath));
    court.ok(swear());

    // The minutes list every presentation, and each step names the words presented.
    let minutes = court.hearing.minutes();
    let presented: Vec<_> =
        minutes.texts_presented.iter().map(|p| (p.person.clone(), p.wording, p.text.clone())).collect();
    assert_eq!(
        presented,
        [
            (witness.clone(), Wording::RightsNotice, notice.clone()),
            (witness.clone(), Wording::Oath, sworn),
            (witness.clone(), Wording::Affirmation, affirmation_it),
            (witness.clone(), Wording::Affirmation, affirmation_ar.clone()),
            (pid(INTERPRETER), Wording::InterpreterOath, interpreter_oath.clone()),
        ]
    );
    assert!(minutes.texts_presented.iter().all(|p| p.by == judge));
    assert_eq!(minutes.rights_notices[0].text.as_ref(), Some(&notice));
    assert_eq!((minutes.oaths[0].form, minutes.oaths[0].text.as_ref()), (OathForm::Affirmation, Some(&affirmation_ar)));
    assert_eq!(minutes.interpreters[0].text.as_ref(), Some(&interpreter_oath));
    let json = serde_json::to_value(&minutes).unwrap();
    assert_eq!(json["texts_presented"][0]["wording"], "rights_notice");
    assert_eq!(json["texts_presented"][4]["text"]["language"], "it");
    assert_eq!(json["oaths"][0]["text"]["sha256"], affirmation_ar.sha256.to_hex());
    // Minutes read back from their JSON keep it; minutes of a journal from before texts were recorded have none.
    let mut old = json.clone();
    old["oaths"][0].as_object_mut().unwrap().remove("text");
    old.as_object_mut().unwrap().remove("texts_presented");
    let old: custodia_hearing::Minutes = serde_json::from_value(old).unwrap();
    assert_eq!(old.oaths[0].text, None);
    assert!(old.texts_presented.is_empty());

    // The public record of a presentation holds no words, no language and no digest in clear.
    let hearing = court.hearing.id().clone();
    for record in court.records[before..].iter().filter(|r| r.kind == HearingEventKind::TextPresented) {
        let salt = custodia_core::Salt::from_bytes([3; 32]);
        let event =
            record.to_custody_event(&hearing, |field, text| custodia_core::Commitment::new(&salt, field, &text));
        let entry = String::from_utf8(custodia_core::to_canonical_vec(&event).unwrap()).unwrap();
        assert!(entry.contains(r#""kind":"text_presented""#), "{entry}");
        let digests = [notice.sha256.to_hex(), affirmation_ar.sha256.to_hex()];
        for secret in [witness.as_str(), "\"ar\"", "\"it\"", digests[0].as_str(), digests[1].as_str()] {
            assert!(!entry.contains(secret), "{secret} in {entry}");
        }
    }
}

#[test]
fn words_awaiting_their_step_are_shown_again_to_whoever_reconnects_and_no_longer_once_it_is_taken() {
    let mut court = Court::in_session();
    court.ok(Event::VerifyIdentity { by: pid(OFFICER), person: pid(WITNESS), verification: verification() });
    let (judge, witness, interpreter) = (pid(JUDGE), pid(WITNESS), pid(INTERPRETER));
    let lose = |participant: &ParticipantId| Event::Leave {
        participant: participant.clone(),
        cause: LeaveCause::ConnectionLost,
    };
    let back = |participant: &ParticipantId| Event::Reconnect { participant: participant.clone() };
    /// The texts an event's effects put on screens: to whom, and which.
    fn shown(effects: &[Effect]) -> Vec<(ParticipantId, Wording, TextShown)> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::ShowText { participant, wording, text } => Some((participant.clone(), *wording, text.clone())),
                _ => None,
            })
            .collect()
    }

    // Nothing presented: a reconnection shows nothing.
    court.ok(lose(&witness));
    assert_eq!(shown(&court.ok(back(&witness))), []);

    // The notice, presented and not yet given, is shown again to the witness on their new connection, to them only.
    let notice = court.present(WITNESS, Wording::RightsNotice);
    assert_eq!(court.hearing.texts_awaiting_step().len(), 1);
    court.ok(lose(&witness));
    assert_eq!(shown(&court.ok(back(&witness))), [(witness.clone(), Wording::RightsNotice, notice.clone())]);
    // Leaving by their own choice and coming back is the same.
    court.ok(Event::Leave { participant: witness.clone(), cause: LeaveCause::Left });
    assert_eq!(shown(&court.ok(back(&witness))), [(witness.clone(), Wording::RightsNotice, notice.clone())]);
    // The judge who presented it gets it again on theirs; nobody else does.
    court.ok(lose(&judge));
    assert_eq!(shown(&court.ok(back(&judge))), [(judge.clone(), Wording::RightsNotice, notice.clone())]);
    court.ok(lose(&interpreter));
    assert_eq!(shown(&court.ok(back(&interpreter))), []);
    // Presented again in other words: only the last words are shown, as only they may be named by the step.
    let notice_fr = words("fr", "Vous pouvez garder le silence.");
    court.ok(Event::PresentText {
        by: judge.clone(),
        person: witness.clone(),
        wording: Wording::RightsNotice,
        text: notice_fr.clone(),
    });
    court.ok(lose(&witness));
    assert_eq!(shown(&court.ok(back(&witness))), [(witness.clone(), Wording::RightsNotice, notice_fr)]);

    // Given: no longer shown. The oath and the affirmation, both presented, are both shown until one is taken.
    court.ok(Event::GiveRightsNotice { by: judge.clone(), person: witness.clone(), text: None });
    assert!(court.hearing.texts_awaiting_step().is_empty());
    court.ok(lose(&witness));
    assert_eq!(shown(&court.ok(back(&witness))), []);
    let oath = court.present(WITNESS, Wording::Oath);
    let affirmation = court.present(WITNESS, Wording::Affirmation);
    let interpreter_oath = court.present(INTERPRETER, Wording::InterpreterOath);
    court.ok(lose(&witness));
    assert_eq!(
        shown(&court.ok(back(&witness))),
        [(witness.clone(), Wording::Oath, oath), (witness.clone(), Wording::Affirmation, affirmation.clone())]
    );
    court.ok(lose(&judge));
    assert_eq!(shown(&court.ok(back(&judge))).len(), 3, "the judge gets every text awaiting a step they presented");
    court.ok(Event::TakeOath {
        by: judge.clone(),
        witness: witness.clone(),
        form: OathForm::Affirmation,
        despite_no_media: false,
        text: None,
    });
    court.ok(lose(&witness));
    assert_eq!(shown(&court.ok(back(&witness))), [], "sworn in one form, neither form's words are asked for");
    court.ok(lose(&interpreter));
    assert_eq!(
        shown(&court.ok(back(&interpreter))),
        [(interpreter.clone(), Wording::InterpreterOath, interpreter_oath)]
    );
    court.ok(Event::SwearInterpreter {
        by: judge.clone(),
        interpreter: interpreter.clone(),
        languages: Label::new("ar-TN / it").unwrap(),
    });
    assert!(court.hearing.texts_awaiting_step().is_empty());
    court.ok(lose(&judge));
    assert_eq!(shown(&court.ok(back(&judge))), []);
    // The minutes still list every presentation; awaiting is not part of them.
    assert_eq!(court.hearing.minutes().texts_presented.len(), 5);
}

#[test]
fn a_hearing_scheduled_before_texts_were_presented_keeps_the_wording_its_steps_carried() {
    // Its journal's rules lack the rule: it reads as off, and the steps name their wording themselves.
    let legacy: Rules = serde_json::from_str(r#"{"identity_check_before_oath":false}"#).unwrap();
    assert!(!legacy.texts_presented_first);
    assert!(Rules::default().texts_presented_first, "every hearing scheduled now presents its texts first");
    let mut court = Court::scheduled(legacy);
    court.ok(Event::OpenLobby { by: clerk_member() });
    court.join(CLERK);
    for role in [JUDGE, WITNESS] {
        court.join(role);
        court.ok(Event::Admit { by: pid(CLERK), participant: pid(role) });
    }
    court.ok(Event::StartSession { by: pid(JUDGE) });
    let notice = words("ar", "لك الحق في التزام الصمت.");
    let oath = words("ar", "أقسم بالله العظيم أن أقول الحق.");
    let before = court.records.len();
    court.ok(Event::GiveRightsNotice { by: pid(JUDGE), person: pid(WITNESS), text: Some(notice.clone()) });
    court.ok(Event::TakeOath {
        by: pid(JUDGE),
        witness: pid(WITNESS),
        form: OathForm::Affirmation,
        despite_no_media: false,
        text: Some(oath.clone()),
    });
    let minutes = court.hearing.minutes();
    assert_eq!(minutes.rights_notices[0].text.as_ref(), Some(&notice));
    assert_eq!(minutes.oaths[0].text.as_ref(), Some(&oath));
    assert!(minutes.texts_presented.is_empty());
    // The public records commit (inside their detail commitment) to the digest of the very words.
    let details: Vec<Option<Sha256>> = court.records[before..].iter().map(|record| record.detail_sha256).collect();
    assert_eq!(details, [Some(notice.sha256), Some(oath.sha256)]);
}

#[test]
fn no_custody_record_carries_personal_data() {
    let mut court = Court::recording();
    court.ok(Event::VerifyIdentity { by: pid(OFFICER), person: pid(WITNESS), verification: verification() });
    court.ok(Event::PresentText {
        by: pid(JUDGE),
        person: pid(INTERPRETER),
        wording: Wording::InterpreterOath,
        text: words("ar", "Tunis"),
    });
    court.ok(Event::SwearInterpreter {
        by: pid(JUDGE),
        interpreter: pid(INTERPRETER),
        languages: Label::new("ar-TN / it").unwrap(),
    });
    court.ok(Event::End { by: pid(JUDGE) });
    let hearing = court.hearing.id().clone();
    for record in &court.records {
        let salt = custodia_core::Salt::from_bytes([9; 32]);
        let event =
            record.to_custody_event(&hearing, |field, text| custodia_core::Commitment::new(&salt, field, &text));
        let text = String::from_utf8(custodia_core::to_canonical_vec(&event).unwrap()).unwrap();
        for secret in [OFFICER_NAME, "Tunis", "Catania", "ar-TN", "passport"] {
            assert!(!text.contains(secret), "{secret:?} in {text}");
        }
        if let Some(digest) = record.detail_sha256 {
            assert!(!text.contains(&digest.to_hex()), "the detail digest is public only inside a commitment");
        }
        if let Some(subject) = &record.subject {
            assert!(
                !text.contains(subject.as_str()),
                "whom a hearing event concerns is public only inside a commitment"
            );
        }
        assert!(matches!(event, CustodyEvent::HearingEvent { .. }));
    }
    let minutes = serde_json::to_string(&court.hearing.minutes()).unwrap();
    assert!(!minutes.contains(OFFICER_NAME), "the minutes name the officer only by reference");
    assert!(!format!("{:?}", court.hearing).contains(OFFICER_NAME));
}

/// What a person typed stays out of the `Debug` of the hearing and of its minutes, and so out of any log line that
/// prints them: the place, the remote site, a document described in words, a witness's pseudonym, and which
/// channel each participant listens to.
#[test]
fn the_hearing_and_its_minutes_withhold_from_debug_what_a_person_typed() {
    let mut court = Court::interpreted();
    court.ok(order(Some(measures(&[]))));
    let described = IdentityVerification {
        document: DocumentType::Other(Label::new("consular card of Sfax").unwrap()),
        ..verification()
    };
    court.ok(Event::VerifyIdentity { by: pid(OFFICER), person: pid(WITNESS), verification: described });
    let italian = Label::new("it").unwrap();
    court.ok(Event::OpenChannel {
        by: pid(CLERK),
        interpreter: pid(INTERPRETER),
        language: italian.clone(),
        mode: InterpretationMode::Simultaneous,
    });
    court.ok(Event::ChooseChannel { participant: pid(ACCUSED), language: Some(italian) });
    let shown = format!("{:?} {:?}", court.hearing, court.hearing.minutes());
    for private in [OFFICER_NAME, "Catania", "Tunis", "Sfax", "Witness A", "listening"] {
        assert!(!shown.contains(private), "{private} in {shown}");
    }
    for kept in ["Other(withheld)", "mask_face: true", "p-witness", "case-7"] {
        assert!(shown.contains(kept), "{kept} not in {shown}");
    }
}

// ---- Minutes ----

#[test]
fn minutes_list_everyone_with_their_join_and_leave_times() {
    let mut court = Court::open(); // lobby opened at t(10) by `Court::open`'s clock
    let opened = court.now;
    court.ok_at(100, Event::Join { invite: iid(CLERK), participant: pid(CLERK) });
    court.ok_at(110, Event::Join { invite: iid(JUDGE), participant: pid(JUDGE) });
    court.ok_at(120, Event::Admit { by: pid(CLERK), participant: pid(JUDGE) });
    court.ok_at(130, Event::Join { invite: iid(WITNESS), participant: pid(WITNESS) });
    court.ok_at(140, Event::Join { invite: iid(OBSERVER), participant: pid(OBSERVER) });
    court.ok_at(150, Event::Admit { by: pid(JUDGE), participant: pid(WITNESS) });
    court.ok_at(160, Event::StartSession { by: pid(JUDGE) });
    court.ok_at(170, Event::StartRecording { by: pid(CLERK) });
    court.ok_at(200, Event::Leave { participant: pid(WITNESS), cause: LeaveCause::ConnectionLost });
    court.ok_at(230, Event::Reconnect { participant: pid(WITNESS) });
    court.ok_at(300, Event::Leave { participant: pid(WITNESS), cause: LeaveCause::Left });
    court.ok_at(310, Event::Leave { participant: pid(OBSERVER), cause: LeaveCause::Left });
    court.ok_at(
        320,
        Event::TechnicalReport(TechnicalReport {
            participant: pid(WITNESS),
            track: TrackKind::Audio,
            codec: Label::new("opus").unwrap(),
            packets_received: 9_000,
            packets_lost: 90,
        }),
    );
    court.ok_at(
        330,
        Event::TechnicalReport(TechnicalReport {
            participant: pid(WITNESS),
            track: TrackKind::Audio,
            codec: Label::new("opus").unwrap(),
            packets_received: 1_000,
            packets_lost: 10,
        }),
    );
    court.ok_at(400, Event::End { by: pid(JUDGE) });
    court.ok_at(401, Event::SegmentSealed { index: 0, sha256: Sha256::of(b"segment 0"), ledger_index: 7 });

    let minutes = court.hearing.minutes();
    assert_eq!(minutes.phase, Phase::Ended);
    assert_eq!(minutes.place.as_str(), "Tribunale di Catania, aula 3");
    assert_eq!(
        (minutes.opened_at, minutes.session_started_at, minutes.ended_at),
        (Some(t(opened)), Some(t(160)), Some(t(400)))
    );
    let period = |from, until, end| Period { from: t(from), until: Some(t(until)), ended_by: Some(end) };
    let summary: Vec<_> = minutes
        .present
        .iter()
        .map(|a| (a.participant.clone(), a.role, a.arrived_at, a.admitted_at, a.periods.clone(), a.reconnections))
        .collect();
    assert_eq!(
        summary,
        [
            (pid(CLERK), CLERK, t(100), t(100), vec![period(100, 400, PeriodEnd::HearingEnded)], 0),
            (pid(JUDGE), JUDGE, t(110), t(120), vec![period(120, 400, PeriodEnd::HearingEnded)], 0),
            (
                pid(WITNESS),
                WITNESS,
                t(130),
                t(150),
                vec![period(150, 200, PeriodEnd::ConnectionLost), period(230, 300, PeriodEnd::Left)],
                1
            ),
        ]
    );
    assert_eq!(minutes.present[0].admitted_by, AdmittedBy::Invite { issued_by: ActorId::new("acct-clerk").unwrap() });
    assert_eq!(minutes.present[2].admitted_by, AdmittedBy::Participant { participant: pid(JUDGE) });
    assert_eq!(minutes.not_admitted.len(), 1);
    assert_eq!(
        (minutes.not_admitted[0].participant.clone(), minutes.not_admitted[0].arrived_at),
        (pid(OBSERVER), t(140))
    );
    assert_eq!(minutes.technical.reconnections, 1);
    let track = &minutes.technical.tracks[0];
    assert_eq!((track.packets_received, track.packets_lost, track.codecs.len()), (10_000, 100, 1));
    assert_eq!(minutes.recording[0].started_at, t(170));
    assert_eq!(minutes.recording[0].stopped_at, Some(t(400)));
    assert_eq!(minutes.segments[0].ledger_index, 7);
    // The minutes are plain data that round-trip through JSON, for signing as canonical JSON.
    let json = serde_json::to_string(&minutes).unwrap();
    assert_eq!(serde_json::from_str::<custodia_hearing::Minutes>(&json).unwrap(), minutes);
    assert!(custodia_core::to_canonical_vec(&minutes).is_ok());
}

#[test]
fn ended_is_terminal_and_time_only_moves_forward() {
    let mut court = Court::recording();
    let now = court.now;
    assert!(matches!(
        court.refused_at(now - 1, Event::Mute { by: pid(WITNESS), participant: pid(WITNESS) }),
        Reason::TimeWentBackwards { .. }
    ));
    court.ok_at(now, Event::Mute { by: pid(WITNESS), participant: pid(WITNESS) }); // the same second is fine
    let effects = court.ok(Event::End { by: pid(CLERK) });
    assert!(effects.contains(&Effect::StopRecorder));
    for event in [
        Event::Reconnect { participant: pid(WITNESS) },
        Event::StartRecording { by: pid(JUDGE) },
        Event::OpenLobby { by: clerk_member() },
        Event::Close { by: clerk_member() },
        Event::End { by: pid(JUDGE) },
        Event::IssueInvite { by: clerk_member(), invite: invite(InviteId::new("i-new").unwrap(), WITNESS, t(7_200)) },
        Event::Join { invite: iid(WITNESS), participant: id("p-new") },
    ] {
        let reason = court.refused(event);
        assert!(matches!(reason, Reason::HearingEnded), "{reason}");
    }
    assert_eq!(court.hearing.phase(), Phase::Ended);
}

#[test]
fn refusals_name_who_tried_what_and_why() {
    let mut court = Court::recording();
    let error = court.try_event(Event::StopRecording { by: pid(WITNESS) }).unwrap_err();
    assert_eq!(
        error.to_string(),
        "participant p-witness may not stop_recording: p-witness is a witness here; only the judge or the clerk may do this"
    );
    let error = court.try_event(Event::Join { invite: iid(WITNESS), participant: id("p-again") }).unwrap_err();
    assert_eq!(error.to_string(), "participant p-again may not join: invite i-witness was already used, by p-witness");
}

// ---- Random sequences ----

/// One random step, as indices into the pool of nine participants (one per role, `HearingRole::ALL` order) so
/// that sequences hit real participants often. `bias` below 6 steers an action to the role that may do it, so
/// that random sequences get past the lobby, into session, recording and consultations.
#[derive(Debug, Clone)]
struct Step {
    op: u16,
    a: usize,
    b: usize,
    bias: usize,
    dt: i64,
}

fn step() -> impl Strategy<Value = Step> {
    (0u16..1000, 0usize..9, 0usize..9, 0usize..9, 0i64..120).prop_map(|(op, a, b, bias, dt)| Step {
        op,
        a,
        b,
        bias,
        dt,
    })
}

fn event_for(court: &Court, step: &Step) -> Event {
    let role = |i: usize| HearingRole::ALL[i % HearingRole::ALL.len()];
    let p = |i: usize| pid(role(i));
    let Step { op, a, b, bias, .. } = *step;
    let steered = bias < 6;
    // Judge or clerk, usually.
    let court_officer = if steered { p(bias % 2) } else { p(a) };
    let judge = if steered { p(0) } else { p(a) };
    let counsel = if steered { p(2 + bias % 2) } else { p(a) };
    // Accused, interpreter or witness, usually.
    let client = |i: usize| if steered { p(4 + i % 3) } else { p(i) };
    let in_consultation = |i: usize| match court.hearing.place_of(&p(i)) {
        Some(Place::Consultation(id)) => id,
        _ => ConsultationId::new(i as u32),
    };
    match op {
        0..=99 => Event::Join { invite: iid(role(a)), participant: p(a) },
        100..=119 => Event::Join { invite: iid(role(a)), participant: p(b) },
        120..=239 => Event::Admit { by: court_officer, participant: p(b) },
        240..=269 => Event::Remove { by: court_officer, participant: p(b) },
        270..=329 => Event::Leave {
            participant: p(a),
            cause: if b % 2 == 0 { LeaveCause::Left } else { LeaveCause::ConnectionLost },
        },
        330..=409 => Event::Reconnect { participant: p(a) },
        410..=449 => Event::Mute { by: if bias % 3 == 0 { p(b) } else { court_officer }, participant: p(b) },
        450..=489 => Event::Unmute { by: if bias % 3 == 0 { p(b) } else { court_officer }, participant: p(b) },
        490..=519 => Event::StartSession { by: judge },
        520..=569 => Event::StartRecording { by: court_officer },
        570..=599 => Event::StopRecording { by: court_officer },
        600..=699 => Event::StartConsultation {
            by: counsel,
            with: if a % 2 == 0 { vec![client(b)] } else { vec![client(b), client(a)] },
        },
        700..=749 => Event::EndConsultation {
            by: if bias % 3 == 0 { court_officer } else { p(a) },
            consultation: in_consultation(b),
        },
        750..=779 => Event::VerifyIdentity {
            by: if steered { pid(OFFICER) } else { p(a) },
            person: client(b),
            verification: verification(),
        },
        780..=794 => Event::PresentText {
            by: judge,
            person: client(b),
            // The interpreter's oath, often: a channel opens only for a sworn interpreter.
            wording: if steered && a % 2 == 0 {
                Wording::InterpreterOath
            } else {
                Wording::ALL[a % Wording::ALL.len()]
            },
            text: words(if bias % 2 == 0 { "fr" } else { "ar" }, "Les mots de la cour."),
        },
        795..=809 => Event::GiveRightsNotice { by: judge, person: client(b), text: None },
        810..=839 => Event::TakeOath {
            by: judge,
            witness: if steered { pid(WITNESS) } else { p(b) },
            form: OathForm::Oath,
            despite_no_media: bias % 2 == 0,
            text: None,
        },
        840..=859 => {
            let interpreter = if steered && a % 2 == 0 { pid(INTERPRETER) } else { client(b) };
            Event::SwearInterpreter { by: judge, interpreter, languages: Label::new("fa / de").unwrap() }
        }
        860..=889 => Event::SegmentSealed {
            index: if steered { court.hearing.minutes().segments.len() as u64 } else { b as u64 },
            sha256: Sha256::of(&[b as u8]),
            ledger_index: 1_000 + a as u64,
        },
        890..=899 => Event::MediaStopped { participant: if steered { client(b) } else { p(a) } },
        900..=909 => Event::MediaResumed { participant: if steered { client(b) } else { p(a) } },
        910..=919 => Event::TechnicalReport(TechnicalReport {
            participant: p(a),
            track: if b % 2 == 0 { TrackKind::Audio } else { TrackKind::Video },
            codec: Label::new(if bias % 2 == 0 { "VP8" } else { "opus" }).unwrap(),
            packets_received: 100,
            packets_lost: b as u64,
        }),
        920..=939 => Event::OpenLobby { by: clerk_member() },
        940..=954 => Event::RevokeInvite { by: clerk_member(), invite: iid(role(a)) },
        955..=969 => Event::IssueInvite {
            by: clerk_member(),
            invite: Invite {
                id: InviteId::new(format!("i-extra-{b}")).unwrap(),
                role: role(a),
                expires_at: t(court.now + 600),
                admission: if steered { Admission::Lobby } else { Admission::OnJoin },
            },
        },
        970..=979 => Event::Join { invite: InviteId::new(format!("i-extra-{b}")).unwrap(), participant: p(a) },
        980..=987 => Event::OrderProtection {
            by: if steered { judge_member() } else { clerk_member() },
            invite: if steered { iid(WITNESS) } else { iid(role(a)) },
            measures: (b % 4 != 0).then(|| ProtectiveMeasures {
                mask_face: bias % 2 == 0,
                alter_voice: b % 2 == 0,
                ..measures(
                    &[role(a), role(b)].into_iter().filter(|r| !matches!(*r, WITNESS | OBSERVER)).collect::<Vec<_>>(),
                )
            }),
        },
        988..=991 => Event::OpenChannel {
            by: court_officer,
            interpreter: if steered { pid(INTERPRETER) } else { p(b) },
            language: Label::new(if a % 2 == 0 { "it" } else { "ar" }).unwrap(),
            mode: if bias % 2 == 0 { InterpretationMode::Simultaneous } else { InterpretationMode::Consecutive },
        },
        992..=993 => Event::CloseChannel {
            by: court_officer,
            language: Label::new(if a % 2 == 0 { "it" } else { "ar" }).unwrap(),
        },
        994..=996 => Event::ChooseChannel {
            participant: p(b),
            language: (a % 3 != 0).then(|| Label::new(if a % 2 == 0 { "it" } else { "ar" }).unwrap()),
        },
        997..=998 => Event::End { by: court_officer },
        _ => Event::Close { by: clerk_member() },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random sequences of events, accepted or refused, never break an invariant (`Court::check_invariants`
    /// runs after each: nobody unadmitted or in consultation is recorded, only the admitted are in the main
    /// room, the adapter's routing matches the rules, a refusal changes nothing, Ended stays Ended), and the
    /// minutes stay coherent.
    #[test]
    fn invariants_hold_after_every_event(start in 0u8..5, steps in proptest::collection::vec(step(), 1..150)) {
        let mut court = match start {
            0 => Court::scheduled(Rules::default()),
            1 => Court::open(),
            2 => Court::seated(),
            3 => Court::recording(),
            _ => Court::interpreted(),
        };
        for step in &steps {
            let event = event_for(&court, step);
            let _ = court.try_at(court.now + step.dt, event);
        }
        let minutes = court.hearing.minutes();
        for attendee in &minutes.present {
            prop_assert!(attendee.admitted_at >= attendee.arrived_at);
            prop_assert_eq!(attendee.periods.first().map(|p| p.from), Some(attendee.admitted_at));
            for pair in attendee.periods.windows(2) {
                prop_assert!(pair[0].until.is_some_and(|until| until <= pair[1].from));
            }
            let open_periods = attendee.periods.iter().filter(|p| p.until.is_none()).count();
            let present = !matches!(court.hearing.place_of(&attendee.participant), Some(Place::Away) | None);
            prop_assert_eq!(open_periods, usize::from(present));
            prop_assert_eq!(
                attendee.periods.len(),
                attendee.reconnections as usize + 1 - reconnects_in_lobby(&court, &attendee.participant)
            );
        }
        for attendee in &minutes.present {
            // Media gaps are in order, and only the last may be open, and only while its owner is connected.
            for pair in attendee.media_gaps.windows(2) {
                prop_assert!(pair[0].until.is_some_and(|until| until <= pair[1].from));
            }
            let open_gap = attendee.media_gaps.last().is_some_and(|gap| gap.until.is_none());
            prop_assert_eq!(open_gap, court.hearing.media_stopped(&attendee.participant));
        }
        for consultation in &minutes.consultations {
            prop_assert!(!consultation.members.contains(&consultation.counsel));
            prop_assert!(consultation.ended_at.is_some() || court.hearing.phase() != Phase::Ended);
        }
        prop_assert_eq!(minutes.segments.iter().map(|s| s.index).collect::<Vec<_>>(), (0..minutes.segments.len() as u64).collect::<Vec<_>>());
    }
}

/// Reconnections made before admission open no period in the hearing.
fn reconnects_in_lobby(court: &Court, participant: &ParticipantId) -> usize {
    let mut admitted = false;
    let mut count = 0;
    for record in court.records.iter().filter(|r| r.subject.as_ref() == Some(participant)) {
        match record.kind {
            HearingEventKind::Admitted => admitted = true,
            HearingEventKind::Reconnected if !admitted => count += 1,
            _ => {}
        }
    }
    count
}

fn judge_member() -> CaseMember {
    CaseMember { actor: ActorId::new("acct-judge").unwrap(), role: Role::Judge }
}

fn measures(privileged: &[HearingRole]) -> ProtectiveMeasures {
    ProtectiveMeasures {
        pseudonym: Label::new("Witness A").unwrap(),
        mask_face: true,
        alter_voice: true,
        privileged: privileged.iter().copied().collect(),
    }
}

fn order(measures: Option<ProtectiveMeasures>) -> Event {
    Event::OrderProtection { by: judge_member(), invite: iid(WITNESS), measures }
}

#[test]
fn a_protective_order_holds_before_the_witness_connects_and_splits_their_media_before_it_flows() {
    let mut court = Court::open();
    court.join(CLERK);
    court.join(JUDGE);
    court.ok(Event::Admit { by: pid(CLERK), participant: pid(JUDGE) });
    court.join(DEFENCE);
    court.ok(Event::Admit { by: pid(CLERK), participant: pid(DEFENCE) });
    let effects = court.ok(order(Some(measures(&[]))));
    // Nobody to protect yet: the order is on the record, with no subject, and nothing moves.
    assert!(matches!(effects.as_slice(), [Effect::Record(record)]
        if record.kind == HearingEventKind::ProtectionOrdered && record.subject.is_none() && record.detail_sha256.is_some()));
    // The witness joins: their media is split before anything else happens to it.
    let effects = court.ok(Event::Join { invite: iid(WITNESS), participant: pid(WITNESS) });
    let protection = effects.iter().find_map(|effect| match effect {
        Effect::Protect { participant, protection: Some(protection) } if *participant == pid(WITNESS) => {
            Some(protection.clone())
        }
        _ => None,
    });
    let protection = protection.expect("joining gives the witness's protection");
    assert!(protection.mask_video && protection.alter_voice);
    assert_eq!(protection.original_to, BTreeSet::from([pid(CLERK), pid(JUDGE)]));
    court.ok(Event::Admit { by: pid(CLERK), participant: pid(WITNESS) });
    // A new privileged participant gets the original; a new observer does not.
    let effects = court.ok(Event::Join { invite: iid(OBSERVER), participant: pid(OBSERVER) });
    assert!(!effects.iter().any(|effect| matches!(effect, Effect::Protect { .. })), "{effects:?}");
    // The judge changes the order: the defence now sees the original. One record, the protection follows.
    let effects = court.ok(order(Some(measures(&[DEFENCE]))));
    assert!(matches!(&effects[0], Effect::Record(record)
        if record.kind == HearingEventKind::ProtectionOrdered && record.subject == Some(pid(WITNESS))));
    assert_eq!(court.protected[&pid(WITNESS)].original_to, BTreeSet::from([pid(CLERK), pid(JUDGE), pid(DEFENCE)]));
    // Lifting the order: everyone gets the original.
    let effects = court.ok(order(None));
    assert!(matches!(&effects[0], Effect::Record(record) if record.kind == HearingEventKind::ProtectionLifted));
    assert!(court.protected.is_empty());
    // A pseudonym alone splits nothing.
    let pseudonym_only = ProtectiveMeasures { mask_face: false, alter_voice: false, ..measures(&[]) };
    court.ok(order(Some(pseudonym_only)));
    assert!(court.protected.is_empty());
    // What was recorded under an order stays the court's (and the defence's, as the last order that masked said).
    assert_eq!(court.hearing.recording_privileges(&pid(WITNESS)), Some(BTreeSet::from([JUDGE, CLERK, DEFENCE])));
    assert_eq!(court.hearing.recording_privileges(&pid(DEFENCE)), None);
    let minutes = court.hearing.minutes();
    assert_eq!(minutes.protection_orders.len(), 4);
    assert_eq!(minutes.protection_orders[0].participant, None);
    assert_eq!(minutes.protection_orders[1].participant, Some(pid(WITNESS)));
    assert_eq!(minutes.protection_orders[2].measures, None);
}

#[test]
fn only_the_judge_orders_protection_for_a_witness_and_never_privileges_another_witness_or_an_observer() {
    let mut court = Court::open();
    let clerk_order =
        Event::OrderProtection { by: clerk_member(), invite: iid(WITNESS), measures: Some(measures(&[])) };
    assert!(matches!(court.refused(clerk_order), Reason::CaseRoleNotAllowed { role: Role::Clerk, .. }));
    let for_accused =
        Event::OrderProtection { by: judge_member(), invite: iid(ACCUSED), measures: Some(measures(&[])) };
    assert!(matches!(court.refused(for_accused), Reason::ProtectionForWitnessOnly { role: ACCUSED, .. }));
    let unknown = Event::OrderProtection {
        by: judge_member(),
        invite: InviteId::new("i-nobody").unwrap(),
        measures: Some(measures(&[])),
    };
    assert!(matches!(court.refused(unknown), Reason::UnknownInvite { .. }));
    for role in [OBSERVER, WITNESS, JUDGE, CLERK] {
        assert_eq!(court.refused(order(Some(measures(&[role])))), Reason::ProtectionPrivilegeNotAllowed { role });
    }
    assert!(matches!(court.refused(order(None)), Reason::NoProtectionToLift { .. }));
    court.ok(order(Some(measures(&[PROSECUTOR, DEFENCE, ACCUSED, INTERPRETER, OFFICER]))));
    let same = measures(&[PROSECUTOR, DEFENCE, ACCUSED, INTERPRETER, OFFICER]);
    assert!(matches!(court.refused(order(Some(same))), Reason::ProtectionUnchanged { .. }));
    court.ok(Event::Close { by: clerk_member() });
    assert_eq!(court.refused(order(None)), Reason::HearingEnded);
}

#[test]
fn the_pseudonym_replaces_the_name_for_everyone_the_order_does_not_privilege() {
    let mut court = Court::seated();
    court.ok(order(Some(measures(&[DEFENCE]))));
    let witness = pid(WITNESS);
    let pseudonym = Label::new("Witness A").unwrap();
    for role in [JUDGE, CLERK, DEFENCE, WITNESS] {
        assert_eq!(court.hearing.pseudonym_for(Some(&pid(role)), &witness), None, "{role}");
    }
    for role in [PROSECUTOR, ACCUSED, INTERPRETER, OFFICER, OBSERVER] {
        assert_eq!(court.hearing.pseudonym_for(Some(&pid(role)), &witness), Some(&pseudonym), "{role}");
    }
    // Someone outside the room (a public copy) reads the pseudonym; nobody else is renamed.
    assert_eq!(court.hearing.pseudonym_for(None, &witness), Some(&pseudonym));
    assert_eq!(court.hearing.pseudonym_for(Some(&pid(OBSERVER)), &pid(DEFENCE)), None);
    // The record commits to the order; the custody event carries no word of it.
    let record = court.records.iter().rev().find(|r| r.kind == HearingEventKind::ProtectionOrdered).unwrap();
    let salt = custodia_core::Salt::from_bytes([3; 32]);
    let event =
        record.to_custody_event(court.hearing.id(), |field, text| custodia_core::Commitment::new(&salt, field, &text));
    let text = String::from_utf8(custodia_core::to_canonical_vec(&event).unwrap()).unwrap();
    assert!(!text.contains("Witness A") && !text.contains("defence"), "{text}");
    assert!(matches!(event, CustodyEvent::HearingEvent { .. }));
}

#[test]
fn a_protected_witness_consults_only_with_those_the_order_privileges() {
    let mut court = Court::seated();
    court.ok(Event::StartSession { by: pid(JUDGE) });
    court.ok(order(Some(measures(&[DEFENCE]))));
    // The accused is not privileged: the defence may not bring them to the witness, away from the court.
    let with_accused = Event::StartConsultation { by: pid(DEFENCE), with: vec![pid(WITNESS), pid(ACCUSED)] };
    assert_eq!(
        court.refused(with_accused),
        Reason::ProtectedWitnessInConsultation { witness: pid(WITNESS), participant: pid(ACCUSED) }
    );
    // The prosecutor is not privileged either.
    let prosecution = Event::StartConsultation { by: pid(PROSECUTOR), with: vec![pid(WITNESS)] };
    assert!(matches!(court.refused(prosecution), Reason::ProtectedWitnessInConsultation { .. }));
    // Privileged counsel alone may.
    court.ok(Event::StartConsultation { by: pid(DEFENCE), with: vec![pid(WITNESS)] });
    assert!(matches!(court.hearing.place_of(&pid(WITNESS)), Some(Place::Consultation(_))));
    // The judge changes the order: the defence no longer sees the original, so the consultation ends at once.
    let effects = court.ok(order(Some(measures(&[]))));
    assert!(effects.iter().any(|e| matches!(e, Effect::Record(r) if r.kind == HearingEventKind::ConsultationEnded)));
    assert_eq!(court.hearing.place_of(&pid(WITNESS)), Some(Place::MainRoom));
    assert_eq!(court.hearing.place_of(&pid(DEFENCE)), Some(Place::MainRoom));
}

#[test]
fn a_simultaneous_channel_carries_its_interpreter_to_its_listeners_and_off_the_floor() {
    let mut court = Court::in_session();
    let it = Label::new("it").unwrap();
    let open = |mode| Event::OpenChannel { by: pid(CLERK), interpreter: pid(INTERPRETER), language: it.clone(), mode };
    // Only the court opens a channel, and only for the interpreter.
    let by_defence = Event::OpenChannel {
        by: pid(DEFENCE),
        interpreter: pid(INTERPRETER),
        language: it.clone(),
        mode: InterpretationMode::Simultaneous,
    };
    assert!(matches!(court.refused(by_defence), Reason::RoleNotAllowed { .. }));
    let to_witness = Event::OpenChannel {
        by: pid(CLERK),
        interpreter: pid(WITNESS),
        language: it.clone(),
        mode: InterpretationMode::Simultaneous,
    };
    assert!(matches!(court.refused(to_witness), Reason::WrongSubjectRole { .. }));
    // Only for an interpreter sworn in this hearing.
    assert_eq!(
        court.refused(open(InterpretationMode::Simultaneous)),
        Reason::InterpreterNotSworn { participant: pid(INTERPRETER) }
    );
    court = Court::interpreted();
    let effects = court.ok(open(InterpretationMode::Simultaneous));
    assert!(
        matches!(&effects[0], Effect::Record(r) if r.kind == HearingEventKind::ChannelOpened && r.subject == Some(pid(INTERPRETER)))
    );
    assert!(matches!(court.refused(open(InterpretationMode::Consecutive)), Reason::ChannelOpen { .. }));
    // The floor no longer hears the interpreter; nobody listens to the channel yet.
    let floor = court.hearing.hears_audio_from(&pid(JUDGE)).unwrap();
    assert!(!floor.full.contains(&pid(INTERPRETER)) && floor.full.contains(&pid(WITNESS)) && floor.ducked.is_empty());
    // The accused chooses Italian: they hear the interpreter in full, and the floor ducked beneath.
    court.ok(Event::ChooseChannel { participant: pid(ACCUSED), language: Some(it.clone()) });
    let interpreted = court.hearing.hears_audio_from(&pid(ACCUSED)).unwrap();
    assert_eq!(interpreted.full, BTreeSet::from([pid(INTERPRETER)]));
    assert_eq!(interpreted.ducked, floor.full);
    assert_eq!(court.hears[&pid(ACCUSED)], interpreted);
    // The interpreter hears the floor, in full.
    let interpreter = court.hearing.hears_audio_from(&pid(INTERPRETER)).unwrap();
    assert!(interpreter.full.contains(&pid(WITNESS)) && interpreter.ducked.is_empty());
    let arabic = Event::ChooseChannel { participant: pid(ACCUSED), language: Some(Label::new("ar").unwrap()) };
    assert!(matches!(court.refused(arabic), Reason::NoChannel { .. }));
    // The interpreter's connection drops: the channel carries nothing, so its listeners hear the floor, not silence.
    court.ok(Event::Leave { participant: pid(INTERPRETER), cause: LeaveCause::ConnectionLost });
    assert!(!court.hears.contains_key(&pid(ACCUSED)), "{:?}", court.hears);
    court.ok(Event::Reconnect { participant: pid(INTERPRETER) });
    assert_eq!(court.hears[&pid(ACCUSED)], interpreted);
    // In a consultation, its members hear each other, whatever they chose for the main room.
    court.ok(Event::StartConsultation { by: pid(DEFENCE), with: vec![pid(ACCUSED)] });
    assert_eq!(court.hearing.hears_audio_from(&pid(ACCUSED)), None);
    let consultation = match court.hearing.place_of(&pid(ACCUSED)) {
        Some(Place::Consultation(id)) => id,
        other => panic!("{other:?}"),
    };
    court.ok(Event::EndConsultation { by: pid(DEFENCE), consultation });
    assert_eq!(court.hears[&pid(ACCUSED)], interpreted);
    // Closed, everyone hears everyone again; the minutes keep the channel and who interpreted.
    court.ok(Event::CloseChannel { by: pid(JUDGE), language: it.clone() });
    assert!(court.hears.is_empty(), "{:?}", court.hears);
    assert_eq!(court.hearing.listeners(&it).count(), 0, "a closed channel keeps no listeners");
    let name = Event::OpenChannel {
        by: pid(CLERK),
        interpreter: pid(INTERPRETER),
        language: Label::new("Italian").unwrap(),
        mode: InterpretationMode::Simultaneous,
    };
    assert!(matches!(court.refused(name), Reason::NotALanguageCode { .. }));
    let minutes = court.hearing.minutes();
    assert_eq!(minutes.channels.len(), 1);
    assert_eq!(minutes.channels[0].interpreter, pid(INTERPRETER));
    assert!(minutes.channels[0].closed_at.is_some());
    // Consecutive interpretation changes nobody's hearing.
    court.ok(open(InterpretationMode::Consecutive));
    court.ok(Event::ChooseChannel { participant: pid(ACCUSED), language: Some(it.clone()) });
    assert!(court.hears.is_empty());
}
