//! What the state machine asks of the adapter: media routing, the recorder, and custody records to append.

use std::collections::BTreeSet;
use std::fmt;

use custodia_core::{ActorId, Commitment, CustodyEvent, HearingId, Label, Repeated, Sha256};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{ConsultationId, ParticipantId, TextShown, Wording};

/// Where a participant's media goes. Media flows only between participants in the same place, and only from the
/// main room to the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// Waiting to be admitted: sends nothing to anyone and receives nothing from the hearing.
    Lobby,
    /// In the hearing.
    MainRoom,
    /// In a private consultation: media flows only among its members, never to the main room or the recorder.
    Consultation(ConsultationId),
    /// Not connected (left, lost, removed, or the hearing ended). The adapter closes any connection they still
    /// have; a removed participant's credential must not open a new one.
    Away,
}

/// One thing for the adapter to do. [`crate::Hearing::handle`] returns them in the order to apply them:
///
/// 1. `Record`s: append to the ledger, in order, before anything they describe takes effect;
///    then `Protect`: a protected person's media is split into original and masked before it can flow anywhere
///    new;
/// 2. `RecorderUnsubscribe`, then `StopRecorder`: the recorder lets go before anyone moves, so a participant
///    moving into a consultation is off the recording before their consultation media flows;
/// 3. `Move`, `SetMuted` and `HearAudioFrom`;
/// 4. `StartRecorder`, then `RecorderSubscribe`;
/// 5. `ShowText`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Append a custody record; see [`HearingEventRecord::to_custody_event`].
    Record(HearingEventRecord),
    /// Who receives this participant's original media and who a masked version of it, from now on (`None`: no
    /// masking, everyone in their place receives the original). Said when a protective order, or the set of
    /// those it privileges, changes, and for a protected person as soon as they join: before they can be admitted.
    /// The recorder always takes the original.
    Protect { participant: ParticipantId, protection: Option<MediaProtection> },
    /// Whose audio this participant hears from now on, of those in their place, and how loud (`None`: everyone's,
    /// as they speak): a listener of a simultaneous interpretation channel hears its interpreter, with the floor
    /// ducked beneath; the floor hears everyone but the interpreters speaking into channels.
    HearAudioFrom { participant: ParticipantId, from: Option<HeardAudio> },
    /// Stop writing this participant's tracks.
    RecorderUnsubscribe(ParticipantId),
    /// Close the open segment and stop the recorder (the sealed segment comes back as
    /// [`crate::Event::SegmentSealed`]).
    StopRecorder,
    /// Route the participant's media for their new place.
    Move { participant: ParticipantId, to: Place },
    /// Stop (or resume) forwarding the participant's audio to others. The recorder keeps their tracks and their
    /// place on the timeline, writing silence while they are muted: muted is not unsubscribed.
    SetMuted { participant: ParticipantId, muted: bool },
    /// Start a recording run; segments continue numbering across runs.
    StartRecorder,
    /// Start writing this participant's tracks.
    RecorderSubscribe(ParticipantId),
    /// Put the court's words on this participant's screen: the words of `wording` that `text` names (the adapter
    /// holds the texts). Said to the person they concern and to the judge who presents them, and said again to
    /// either of them who reconnects while the words still await their step (a reloaded page has lost them).
    ShowText { participant: ParticipantId, wording: Wording, text: TextShown },
}

/// How the media plane treats a protected person's media ([`Effect::Protect`]). Whoever is not in `original_to`
/// gets, of each masked kind, only what the masking made, or nothing while it cannot make it: never the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaProtection {
    pub mask_video: bool,
    pub alter_voice: bool,
    /// The participants whose role the order privileges (the court, and the roles it adds), the person excluded.
    pub original_to: BTreeSet<ParticipantId>,
}

/// Whose audio a participant hears ([`Effect::HearAudioFrom`]); anyone in neither set is not heard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeardAudio {
    /// Heard as they speak.
    pub full: BTreeSet<ParticipantId>,
    /// Heard quietly, under what is heard in full ([`DUCKED_GAIN`]): the floor, beneath a simultaneous
    /// interpretation, so that its listener still hears who is speaking and how.
    pub ducked: BTreeSet<ParticipantId>,
}

impl HeardAudio {
    /// Only `participants`, in full.
    pub fn only(participants: impl IntoIterator<Item = ParticipantId>) -> Self {
        HeardAudio { full: participants.into_iter().collect(), ducked: BTreeSet::new() }
    }
}

/// The level of the ducked floor under a simultaneous interpretation, as a linear factor on the floor's samples:
/// 0.2, about 14 dB down, the level video conferencing's interpretation channels play the original at by default.
pub const DUCKED_GAIN: f32 = 0.2;

/// What kind of hearing event a custody record reports. The spelling is the record's `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HearingEventKind {
    HearingScheduled,
    InviteIssued,
    InviteRevoked,
    LobbyOpened,
    JoinedLobby,
    Admitted,
    Removed,
    Left,
    ConnectionLost,
    Reconnected,
    /// The gateway stopped receiving a participant's media (nobody sees or hears them).
    MediaStopped,
    /// Their media arrives again.
    MediaResumed,
    Muted,
    Unmuted,
    SessionStarted,
    RecordingStarted,
    RecordingStopped,
    ConsultationStarted,
    ConsultationEnded,
    IdentityVerified,
    /// The judge put the words of a rights notice or an oath on the person's screen (the detail commits to which
    /// text, its language and digest).
    TextPresented,
    RightsNoticeGiven,
    OathTaken,
    AffirmationMade,
    InterpreterSworn,
    HearingEnded,
    /// Someone attempted a step the rules refused (the detail names the action and the rule).
    StepRefused,
    /// The judge ordered protective measures for a witness, or changed them (the detail commits to the order).
    ProtectionOrdered,
    /// The judge lifted a witness's protective measures.
    ProtectionLifted,
    /// The court opened an interpretation channel (the subject is its interpreter; the detail commits to the
    /// language and the mode).
    ChannelOpened,
    ChannelClosed,
    /// A recording segment or the minutes could not enter custody and were kept aside (the detail is their
    /// SHA-256). Reported by the gateway, not decided by the rules.
    OutputQuarantined,
}

impl HearingEventKind {
    pub const ALL: [Self; 32] = [
        Self::HearingScheduled,
        Self::InviteIssued,
        Self::InviteRevoked,
        Self::LobbyOpened,
        Self::JoinedLobby,
        Self::Admitted,
        Self::Removed,
        Self::Left,
        Self::ConnectionLost,
        Self::Reconnected,
        Self::MediaStopped,
        Self::MediaResumed,
        Self::Muted,
        Self::Unmuted,
        Self::SessionStarted,
        Self::RecordingStarted,
        Self::RecordingStopped,
        Self::ConsultationStarted,
        Self::ConsultationEnded,
        Self::IdentityVerified,
        Self::TextPresented,
        Self::RightsNoticeGiven,
        Self::OathTaken,
        Self::AffirmationMade,
        Self::InterpreterSworn,
        Self::HearingEnded,
        Self::StepRefused,
        Self::OutputQuarantined,
        Self::ProtectionOrdered,
        Self::ProtectionLifted,
        Self::ChannelOpened,
        Self::ChannelClosed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HearingScheduled => "hearing_scheduled",
            Self::InviteIssued => "invite_issued",
            Self::InviteRevoked => "invite_revoked",
            Self::LobbyOpened => "lobby_opened",
            Self::JoinedLobby => "joined_lobby",
            Self::Admitted => "admitted",
            Self::Removed => "removed",
            Self::Left => "left",
            Self::ConnectionLost => "connection_lost",
            Self::Reconnected => "reconnected",
            Self::MediaStopped => "media_stopped",
            Self::MediaResumed => "media_resumed",
            Self::Muted => "muted",
            Self::Unmuted => "unmuted",
            Self::SessionStarted => "session_started",
            Self::RecordingStarted => "recording_started",
            Self::RecordingStopped => "recording_stopped",
            Self::ConsultationStarted => "consultation_started",
            Self::ConsultationEnded => "consultation_ended",
            Self::IdentityVerified => "identity_verified",
            Self::TextPresented => "text_presented",
            Self::RightsNoticeGiven => "rights_notice_given",
            Self::OathTaken => "oath_taken",
            Self::AffirmationMade => "affirmation_made",
            Self::InterpreterSworn => "interpreter_sworn",
            Self::HearingEnded => "hearing_ended",
            Self::StepRefused => "step_refused",
            Self::OutputQuarantined => "output_quarantined",
            Self::ProtectionOrdered => "protection_ordered",
            Self::ProtectionLifted => "protection_lifted",
            Self::ChannelOpened => "channel_opened",
            Self::ChannelClosed => "channel_closed",
        }
    }

    /// The record's `kind` label.
    pub fn label(self) -> Label {
        // Every spelling above is a short printable ASCII word; a unit test checks them all.
        Label::new(self.as_str()).expect("hearing event kinds are valid labels")
    }
}

impl fmt::Display for HearingEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A custody event to append to the ledger. Only opaque ids and a digest: never a name, never content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HearingEventRecord {
    pub at: Timestamp,
    /// Who acted: a participant (as an [`ActorId`]) or the case member acting from the console.
    pub actor: ActorId,
    pub kind: HearingEventKind,
    /// Whom it concerns.
    pub subject: Option<ParticipantId>,
    /// The SHA-256 of an RFC 8785 canonical detail document, when the event has details worth committing to.
    /// It reaches the public record only inside a salted commitment (`detail`), which the adapter makes: a detail
    /// built from public ids and a closed list of words could otherwise be confirmed by guessing.
    pub detail_sha256: Option<Sha256>,
    /// For a count of records past the participant's budget of repeatable steps ([`crate::OWN_STEPS_PER_WINDOW`]):
    /// how many records of this kind about this subject the record stands for, from when. The adapter puts it in
    /// the custody record's `repeated`.
    pub repeated: Option<Repeated>,
}

impl HearingEventRecord {
    /// The custody event. `commit` is the adapter's salted commitment of a text as a field: the subject's
    /// participant id is committed as `subject` (an oath's subject is the witness: in clear, the kind would say
    /// which participant is the witness), the hex of [`Self::detail_sha256`] as `detail`.
    pub fn to_custody_event(
        &self,
        hearing: &HearingId,
        mut commit: impl FnMut(&'static str, String) -> Commitment,
    ) -> CustodyEvent {
        CustodyEvent::HearingEvent {
            hearing: hearing.clone(),
            kind: self.kind.label(),
            subject: self.subject.as_ref().map(|participant| commit("subject", participant.as_str().to_owned())),
            detail: self.detail_sha256.map(|digest| commit("detail", digest.to_hex())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_a_label_and_matches_serde() {
        for kind in HearingEventKind::ALL {
            assert_eq!(kind.label().as_str(), kind.as_str());
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
        let mut spellings: Vec<_> = HearingEventKind::ALL.iter().map(|kind| kind.as_str()).collect();
        spellings.sort_unstable();
        spellings.dedup();
        assert_eq!(spellings.len(), HearingEventKind::ALL.len());
    }

    #[test]
    fn a_record_becomes_a_canonical_custody_event() {
        let record = HearingEventRecord {
            at: "2026-03-02T09:00:00Z".parse().unwrap(),
            actor: ActorId::new("p-judge").unwrap(),
            kind: HearingEventKind::Admitted,
            subject: Some(ParticipantId::new("p-witness").unwrap()),
            detail_sha256: None,
            repeated: None,
        };
        let salt = custodia_core::Salt::from_bytes([6; 32]);
        let mut committed = Vec::new();
        let event = record.to_custody_event(&HearingId::new("h-1").unwrap(), |field, text| {
            committed.push((field, text.clone()));
            Commitment::new(&salt, field, &text)
        });
        let subject = Commitment::new(&salt, "subject", "p-witness").to_hex();
        let text = String::from_utf8(custodia_core::to_canonical_vec(&event).unwrap()).unwrap();
        assert_eq!(
            text,
            format!(r#"{{"hearing":"h-1","kind":"admitted","subject":"{subject}","type":"hearing_event"}}"#)
        );
        assert_eq!(committed, [("subject", "p-witness".to_owned())]);
    }
}
