//! The remote-testimony hearing as a sans-IO state machine: lobby, admission, private consultation, recording
//! state, identity check, oaths and minutes.
//!
//! This crate holds the rules and nothing else. It does no IO, reads no clock and draws no random numbers: the
//! time of each event, every participant id and every salt come in from the caller, so tests drive it through
//! every rule deterministically and faster than real time. It must never depend on tokio, webrtc, axum or any
//! storage. The WebRTC adapter and the recorder are built around it and drive it like this:
//!
//! ```text
//!            Event (+ its time)                      Vec<Effect>
//! adapter ───────────────────────▶ Hearing::handle ─────────────▶ adapter
//!   signalling, console, recorder                      Record      → custody ledger (before anything else)
//!                                                      Recorder*   → the recorder's subscriptions
//!                                                      Move, SetMuted → SFU routing
//! ```
//!
//! A refused event returns a [`HearingError`] naming who tried what and which rule said no, and leaves the
//! hearing unchanged; the adapter records the refusal like any other.
//!
//! # The model
//!
//! - A clerk of the case **schedules** a [`Hearing`] ([`Hearing::schedule`]) and issues one-time, expiring
//!   [`Invite`]s, each for one [`HearingRole`]. The invite link's secret never comes here: the adapter keeps its
//!   hash and tells the state machine which invite id was used. An invite is pending, used, revoked or expired
//!   ([`Hearing::invite_state`]); only a pending, unexpired invite lets someone join, once.
//! - **Lifecycle** ([`Phase`]): Scheduled → Open (the clerk opens the lobby) → InSession (the judge opens the
//!   session) → Ended (the court ends it, or the clerk closes it from the console). Ended is terminal.
//! - **Lobby.** Joining puts a participant in the lobby, where no media reaches them or leaves them. Only a judge
//!   or a clerk who is admitted, connected and in the main room may admit them. How the first court officer gets
//!   in: the clerk may issue a judge's or a clerk's invite with [`Admission::OnJoin`], admitting its holder in
//!   advance; the record names that clerk as the one who admitted. No other invite may admit on join.
//! - **Leaving and reconnecting.** A connection that ends ([`Event::Leave`], hung up or lost) ends a period of
//!   presence; [`Event::Reconnect`] brings the same participant back with their admission (and their mute), into
//!   the main room, never back into a consultation, and counts a reconnection. Removal by the court is final.
//!   Each participant's presence changes (leaving, a lost connection, reconnecting, media stopped or resumed),
//!   and the other steps they can repeat on their own (muting and unmuting themself, starting and ending a
//!   consultation), are recorded one by one up to [`OWN_STEPS_PER_WINDOW`] an [`OWN_STEPS_WINDOW`]; past that
//!   their records are counted, one record per kind and subject with its count when the window closes, while
//!   the state and the minutes follow every step. A judge or clerk has [`COURT_STEPS_PER_WINDOW`], which also
//!   covers the court's repeatable steps on others (muting, unmuting, recording, presenting a text, giving
//!   the rights notice).
//! - **Muting.** The court (judge or clerk) mutes and unmutes anyone; anyone may mute themself and unmute
//!   themself, unless the court muted them. Muted is not unsubscribed: the recorder keeps a muted participant's
//!   tracks and their place on the timeline.
//! - **Private consultation.** Prosecution or defence counsel takes people out of the main room: the prosecutor a
//!   witness, the defence a witness or the accused, either with the interpreter, and at least one witness or
//!   accused. Members' media flows only among themselves and is **never** routed to the recorder; only the fact
//!   (who, start, end) is recorded. Counsel or the court ends it; it also ends when counsel or the last client
//!   leaves the room.
//! - **Recording.** The court starts and stops it, only in session. While it runs, the recorder takes exactly
//!   [`Hearing::recorded_participants`]: everyone admitted, connected and in the main room.
//! - **Identity, rights, oaths.** The remote-site officer records that the person heard (a witness or the
//!   accused) was identified: the document type, the site, and the officer's name, which is personal data: it is
//!   a [`PersonalName`] (hidden from `Debug`), and the record and the minutes carry only the SHA-256 of a salted
//!   detail document ([`IdentityVerification::detail_document`]) that the adapter keeps privately; a person is
//!   checked at most [`IDENTITY_CHECKS_PER_PERSON`] times a hearing (a correction, not a flood). The judge
//!   gives the rights notice, takes the oath or affirmation (only after the rights notice and, under the default
//!   [`Rules`], after the identity check) and swears the interpreter. Each of these the judge first **presents**
//!   ([`Event::PresentText`]): the court's exact words ([`Wording`], named by [`TextShown`]: language and SHA-256)
//!   go on the screen of the person they concern and the judge's ([`Effect::ShowText`]), on the record as
//!   `text_presented`, before the person is asked to listen or swear; one wording at most
//!   [`PRESENTATIONS_PER_PERSON`] times to one person, and the rights notice as often. The step then names the words presented
//!   (refused if none were): the minutes keep them and the record's detail digest commits to them. Until the step
//!   is taken the words await it ([`Hearing::texts_awaiting_step`]), and a reconnection shows them again.
//! - **Protective measures.** The judge of the case orders, from the console, measures for the witness an invite
//!   is for ([`Event::OrderProtection`], [`ProtectiveMeasures`]): a pseudonym, the face masked, the voice altered,
//!   and which roles besides the court see and hear the original. The order holds from before the witness first
//!   connects; every order, change and lifting is a record (`protection_ordered`, `protection_lifted`, the detail
//!   committing to the order) and in the minutes. [`Effect::Protect`] tells the media plane who gets the original
//!   and who the masked media; [`Hearing::pseudonym_for`] tells the adapter whom to show the pseudonym instead of
//!   the name. The recorder always takes the original.
//! - **Interpretation channels.** The court opens a channel into a language spoken by an interpreter sworn in
//!   this hearing ([`Event::OpenChannel`], simultaneous or consecutive) and closes it; each participant chooses the
//!   floor or a channel ([`Event::ChooseChannel`]). In simultaneous mode the interpreter is heard only on the
//!   channel, and its listeners hear the interpreter in full with the floor ducked beneath it
//!   ([`Effect::HearAudioFrom`], [`HeardAudio`], [`DUCKED_GAIN`]); in consecutive mode the
//!   interpreter speaks on the floor as before. The interpreter's tracks are recorded like anyone's in the main
//!   room, so each channel is its own sealed track; the minutes list the channels and who interpreted.
//! - **Minutes** ([`Hearing::minutes`]): date and place, everyone admitted with role and periods of presence,
//!   who waited and was never admitted, identity checks, the texts presented, rights notices, oaths, the
//!   interpreter, consultations, recording runs, the sealed segments the adapter reports
//!   ([`Event::SegmentSealed`]) and the technical conditions (reconnections counted here; codecs and packet loss
//!   from [`Event::TechnicalReport`]).
//!
//! # Effects
//!
//! Media effects are not decided case by case: after every event the state machine compares where everyone is
//! ([`Place`]), who is muted and whom the recorder takes, before and after, and emits the differences. So the
//! adapter's view cannot drift from the rules, and one invariant covers every path: the recorder's subscriptions
//! are always exactly [`Hearing::recorded_participants`]. The order of effects puts records first and takes
//! people off the recorder before it moves anyone, so a participant going into a consultation is unsubscribed
//! before their consultation media flows.
//!
//! # Architecture invariants
//!
//! - Nobody is recorded who is not admitted, connected and in the main room.
//! - Nothing in a custody record is a name, a place or free text: participant ids (opaque), a kind label, and
//!   SHA-256 digests of canonical detail documents.
//! - A refused event changes nothing.

mod effect;
mod error;
mod event;
mod hearing;
mod ids;
pub mod minutes;
mod role;

pub use effect::{DUCKED_GAIN, Effect, HeardAudio, HearingEventKind, HearingEventRecord, MediaProtection, Place};
pub use error::{Actor, HearingAction, HearingError, Reason, refused_steps_detail};
pub use event::{
    Admission, CaseMember, DocumentType, Event, IdentityVerification, InterpretationMode, Invite, LeaveCause, OathForm,
    ProtectiveMeasures, Rules, Schedule, TechnicalReport, TextShown, TrackKind, Wording,
};
pub use hearing::{
    CHANNELS_PER_HEARING, CONSULTATIONS_PER_HEARING, COURT_STEPS_PER_WINDOW, Hearing, IDENTITY_CHECKS_PER_PERSON,
    InviteState, OWN_STEPS_PER_WINDOW, OWN_STEPS_WINDOW, PRESENTATIONS_PER_PERSON, Phase, RECORDING_RUNS_PER_HEARING,
};
pub use ids::{CommitmentSalt, ConsultationId, InviteId, ParticipantId, PersonalName};
pub use minutes::Minutes;
pub use role::HearingRole;
