//! What the gateway sends into a hearing room's WebSocket (docs/hearing-room.md): one [`RoomMessage`] a JSON text
//! frame, named by its `type`. What participants send is read elsewhere: the join and rejoin by the server's room
//! socket, the steps as [`crate::live::RoomStep`].
//!
//! The room's state carries display names and pseudonyms, and the welcome a credential and the court's contact.
//! None of them reaches a log line: `Debug` withholds each ([`Withheld`], [`ShownName`], and the private types of
//! [`crate::people`]).

use std::fmt;

use custodia_core::{HearingId, Label, Sha256};
use custodia_hearing::minutes::{IdentityCheck, InterpreterOath, Oath, RightsNotice, TextPresentation};
use custodia_hearing::{
    DocumentType, HearingRole, InterpretationMode, OathForm, ParticipantId, Phase, ProtectiveMeasures, TextShown,
    Wording,
};
use jiff::Timestamp;
use serde::Serialize;

use crate::people::{DisplayName, HearingContact, LanguageHint};
use crate::turn::IceServerJson;

/// A message to one participant's page.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomMessage {
    /// The first message to someone let in.
    Welcome(Box<Welcome>),
    /// The room as this participant is shown it, sent to everyone on every change.
    State(Box<RoomState>),
    /// The court's words, as the judge presented them to this participant.
    Text(Words),
    /// The answer to a `ping`: the gateway still hears this socket.
    Pong,
    /// The gateway's answer to the page's offer.
    Answer { sdp: Withheld<String> },
    /// What the room could not do: a message that is not JSON or not a room message, an offer not accepted, a
    /// step that failed in the gateway.
    Error { detail: String },
    /// A step the hearing's rules refused: `problem` is the rule's stable key, or `null` when no rule refused
    /// (a step that could not be taken as it stood).
    #[serde(rename = "refused")]
    StepRefused { action: &'static str, problem: Option<&'static str>, reason: String },
    /// A step not taken, because its sender is past a budget (of room steps, or of refusal records); no `problem`.
    #[serde(rename = "refused")]
    StepNotTaken { action: &'static str, reason: String },
    /// The join or rejoin itself was refused ([`crate::live::EnterRefusal`]: `problem` is its key); the socket
    /// closes.
    #[serde(rename = "refused")]
    NotLetIn { problem: &'static str, reason: String },
    /// The same participant connected again elsewhere; this socket closes.
    Replaced,
    /// The hearing has ended; the socket closes.
    Ended,
    /// The court removed this participant; the socket closes.
    Removed,
}

impl RoomMessage {
    /// Whether the gateway closes the socket once this message is sent.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::NotLetIn { .. } | Self::Replaced | Self::Ended | Self::Removed)
    }
}

/// A value a message carries that no log may: a credential, a pseudonym, a session description. Serialized as
/// itself; `Debug` withholds it.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Withheld<T>(pub T);

impl<T> fmt::Debug for Withheld<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("withheld")
    }
}

/// Who someone is to the hearing, the credential to come back with, and what their page needs to join the media.
#[derive(Debug, Serialize)]
pub struct Welcome {
    pub participant: ParticipantId,
    pub role: Option<HearingRole>,
    /// Lets its holder back in as this participant.
    pub credential: Withheld<String>,
    pub hearing: HearingAsWelcomed,
    /// STUN and TURN servers, with fresh short-lived TURN credentials.
    pub ice_servers: Vec<IceServerJson>,
    /// The receive slots the page offers.
    pub slots: usize,
    /// Whom to call if the link fails (`null` if the clerk gave no one).
    pub contact: Option<HearingContact>,
    /// The languages the court has its texts in.
    pub text_languages: Vec<String>,
}

/// The hearing a welcome is into.
#[derive(Debug, Serialize)]
pub struct HearingAsWelcomed {
    pub id: HearingId,
    /// Typed by the clerk: `Debug` withholds it.
    pub place: Withheld<Label>,
    pub scheduled_for: Timestamp,
}

/// The court's words on a participant's screen: the text the hearing recorded presented, by its language and
/// digest.
#[derive(Debug, Serialize)]
pub struct Words {
    pub kind: Wording,
    pub language: Label,
    pub words: String,
    pub sha256: Sha256,
}

/// The room as one participant is shown it.
#[derive(Debug, Serialize)]
pub struct RoomState {
    pub phase: Phase,
    pub recording: bool,
    pub channels: Vec<ChannelView>,
    /// Their own entry (`null` only for someone not in the room's list, to whom no state is sent).
    pub you: Option<You>,
    /// Those the hearing's rules show them (`Hearing::shows`), protected witnesses under their pseudonym unless
    /// the order privileges the viewer.
    pub participants: Vec<ParticipantView>,
    /// For the court alone; `null` for everyone else.
    pub checklist: Option<Checklist>,
}

/// Someone in the room's list, as the court sees them (and the room, with a pseudonym in place of a protected
/// witness's name). The console's hearing view lists the same for the court.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantView {
    pub id: ParticipantId,
    pub role: Option<HearingRole>,
    pub place: PlaceName,
    /// The consultation's number while they are in one, `null` otherwise.
    pub consultation: Option<u32>,
    pub admitted: bool,
    pub muted: bool,
    pub connected: bool,
    /// Away by their own choice, rather than a lost connection.
    pub left: bool,
    pub media_stopped: bool,
    /// The name on their invite, or the pseudonym shown in its place (`null`: none).
    pub name: Option<ShownName>,
    /// The language their page speaks, as it said on entering.
    pub language: Option<LanguageHint>,
    /// The receive slot they arrive on.
    pub slot: usize,
}

/// Where someone is, as the room's state names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceName {
    Lobby,
    MainRoom,
    Consultation,
    Away,
}

/// The name shown for someone: the one on their invite, or the pseudonym a protective order gives them. Either
/// is written as the name itself; `Debug` withholds both.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ShownName {
    Given(DisplayName),
    Pseudonym(Label),
}

impl fmt::Debug for ShownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Given(_) => f.write_str("Given(withheld)"),
            Self::Pseudonym(_) => f.write_str("Pseudonym(withheld)"),
        }
    }
}

/// A participant's own entry: as the court sees them, with what concerns them alone.
#[derive(Debug, Serialize)]
pub struct You {
    #[serde(flatten)]
    pub entry: ParticipantView,
    /// A protected witness's order as it concerns them; absent for everyone else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection: Option<YourProtection>,
    /// The interpretation channel they listen to; absent while they hear the floor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listening: Option<Label>,
}

/// Which protection is active for the witness who reads it.
#[derive(Debug, Serialize)]
pub struct YourProtection {
    pub pseudonym: Withheld<Label>,
    pub mask_face: bool,
    pub alter_voice: bool,
}

impl From<&ProtectiveMeasures> for YourProtection {
    fn from(measures: &ProtectiveMeasures) -> Self {
        Self {
            pseudonym: Withheld(measures.pseudonym.clone()),
            mask_face: measures.mask_face,
            alter_voice: measures.alter_voice,
        }
    }
}

/// An open interpretation channel.
#[derive(Debug, Serialize)]
pub struct ChannelView {
    pub language: Label,
    pub interpreter: ParticipantId,
    pub mode: InterpretationMode,
    /// Whether its interpreter is in the main room; only for the court and those in the main room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreting: Option<bool>,
    /// Who listens to it; only for the court.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Vec<ParticipantId>>,
}

/// For the court: what the hearing has recorded of identity checks, texts presented, rights notices, oaths and
/// interpreters' oaths. The officer's name stays in the identity check's detail document.
#[derive(Debug, Serialize)]
pub struct Checklist {
    pub identity_checks: Vec<IdentityChecked>,
    pub texts_presented: Vec<TextPresented>,
    pub rights_notices: Vec<RightsNoticeGiven>,
    pub oaths: Vec<OathTaken>,
    pub interpreters: Vec<InterpreterSworn>,
}

/// An identity check as the court's checklist lists it. The site the officer gave can place a protected witness,
/// and a document described in words can say more than its kind: `Debug` withholds both (the words of the document
/// through [`DocumentType`]'s own).
#[derive(Serialize)]
pub struct IdentityChecked {
    pub person: ParticipantId,
    pub document: DocumentType,
    /// The site the officer gave.
    pub site: Label,
    pub at: Timestamp,
}

impl fmt::Debug for IdentityChecked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityChecked")
            .field("person", &self.person)
            .field("document", &self.document)
            .field("site", &Withheld(()))
            .field("at", &self.at)
            .finish()
    }
}

impl From<&IdentityCheck> for IdentityChecked {
    fn from(check: &IdentityCheck) -> Self {
        Self { person: check.person.clone(), document: check.document.clone(), site: check.site.clone(), at: check.at }
    }
}

#[derive(Debug, Serialize)]
pub struct TextPresented {
    pub person: ParticipantId,
    pub wording: Wording,
    pub text: TextShown,
    pub at: Timestamp,
}

impl From<&TextPresentation> for TextPresented {
    fn from(shown: &TextPresentation) -> Self {
        Self { person: shown.person.clone(), wording: shown.wording, text: shown.text.clone(), at: shown.at }
    }
}

#[derive(Debug, Serialize)]
pub struct RightsNoticeGiven {
    pub person: ParticipantId,
    pub at: Timestamp,
    /// The words given (`null` for a notice given before texts were presented).
    pub text: Option<TextShown>,
}

impl From<&RightsNotice> for RightsNoticeGiven {
    fn from(notice: &RightsNotice) -> Self {
        Self { person: notice.person.clone(), at: notice.at, text: notice.text.clone() }
    }
}

#[derive(Debug, Serialize)]
pub struct OathTaken {
    pub witness: ParticipantId,
    pub form: OathForm,
    pub at: Timestamp,
    pub text: Option<TextShown>,
}

impl From<&Oath> for OathTaken {
    fn from(oath: &Oath) -> Self {
        Self { witness: oath.witness.clone(), form: oath.form, at: oath.at, text: oath.text.clone() }
    }
}

#[derive(Debug, Serialize)]
pub struct InterpreterSworn {
    pub interpreter: ParticipantId,
    pub languages: Label,
    pub at: Timestamp,
    pub text: Option<TextShown>,
}

impl From<&InterpreterOath> for InterpreterSworn {
    fn from(sworn: &InterpreterOath) -> Self {
        Self {
            interpreter: sworn.interpreter.clone(),
            languages: sworn.languages.clone(),
            at: sworn.at,
            text: sworn.text.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn wire(message: &RoomMessage) -> serde_json::Value {
        serde_json::to_value(message).unwrap()
    }

    fn participant(id: &str) -> ParticipantId {
        ParticipantId::new(id).unwrap()
    }

    fn label(text: &str) -> Label {
        Label::new(text).unwrap()
    }

    fn entry(id: &str, name: Option<ShownName>) -> ParticipantView {
        ParticipantView {
            id: participant(id),
            role: Some(HearingRole::Witness),
            place: PlaceName::Consultation,
            consultation: Some(2),
            admitted: true,
            muted: false,
            connected: true,
            left: false,
            media_stopped: false,
            name,
            language: None,
            slot: 3,
        }
    }

    #[test]
    fn the_messages_without_a_body_are_their_type_alone() {
        assert_eq!(wire(&RoomMessage::Pong), json!({"type": "pong"}));
        assert_eq!(wire(&RoomMessage::Replaced), json!({"type": "replaced"}));
        assert_eq!(wire(&RoomMessage::Ended), json!({"type": "ended"}));
        assert_eq!(wire(&RoomMessage::Removed), json!({"type": "removed"}));
        assert_eq!(wire(&RoomMessage::Answer { sdp: Withheld("v=0".into()) }), json!({"type": "answer", "sdp": "v=0"}));
        assert_eq!(wire(&RoomMessage::Error { detail: "no".into() }), json!({"type": "error", "detail": "no"}));
    }

    /// Three refusals share the type `refused`: the page tells a refused join (no `action`, the socket closes) from
    /// a refused step, and a rule's refusal (`problem`, `null` when no rule refused) from a budget's (no `problem`).
    #[test]
    fn each_refusal_has_the_fields_the_page_reads_and_no_others() {
        let refused = RoomMessage::StepRefused { action: "admit", problem: Some("not_admitted"), reason: "r".into() };
        assert_eq!(
            wire(&refused),
            json!({"type": "refused", "action": "admit", "problem": "not_admitted", "reason": "r"})
        );
        let refused = RoomMessage::StepRefused { action: "admit", problem: None, reason: "r".into() };
        assert_eq!(wire(&refused), json!({"type": "refused", "action": "admit", "problem": null, "reason": "r"}));
        let not_taken = RoomMessage::StepNotTaken { action: "mute", reason: "too many".into() };
        assert_eq!(wire(&not_taken), json!({"type": "refused", "action": "mute", "reason": "too many"}));
        let not_let_in = RoomMessage::NotLetIn { problem: "used", reason: "used".into() };
        assert_eq!(wire(&not_let_in), json!({"type": "refused", "problem": "used", "reason": "used"}));
        assert!(not_let_in.is_final() && !refused.is_final() && !not_taken.is_final());
        assert!([RoomMessage::Replaced, RoomMessage::Ended, RoomMessage::Removed].iter().all(RoomMessage::is_final));
    }

    #[test]
    fn a_state_leaves_out_what_its_reader_is_not_told_and_says_null_where_there_is_nothing() {
        let channel = |interpreting, listeners| ChannelView {
            language: label("ar"),
            interpreter: participant("p-2"),
            mode: InterpretationMode::Simultaneous,
            interpreting,
            listeners,
        };
        let state = RoomState {
            phase: Phase::InSession,
            recording: true,
            channels: vec![channel(None, None), channel(Some(false), Some(vec![participant("p-1")]))],
            you: Some(You { entry: entry("p-1", None), protection: None, listening: None }),
            participants: vec![entry("p-1", Some(ShownName::Pseudonym(label("Witness A"))))],
            checklist: None,
        };
        let you = json!({
            "id": "p-1", "role": "witness", "place": "consultation", "consultation": 2, "admitted": true,
            "muted": false, "connected": true, "left": false, "media_stopped": false, "name": null,
            "language": null, "slot": 3,
        });
        let mut listed = you.clone();
        listed["name"] = json!("Witness A");
        assert_eq!(
            wire(&RoomMessage::State(Box::new(state))),
            json!({
                "type": "state", "phase": "in_session", "recording": true,
                "channels": [
                    {"language": "ar", "interpreter": "p-2", "mode": "simultaneous"},
                    {"language": "ar", "interpreter": "p-2", "mode": "simultaneous", "interpreting": false,
                     "listeners": ["p-1"]},
                ],
                "you": you, "participants": [listed], "checklist": null,
            })
        );
    }

    #[test]
    fn a_protected_witness_reads_their_protection_and_the_court_its_checklist() {
        let measures = ProtectiveMeasures {
            pseudonym: label("Witness A"),
            mask_face: true,
            alter_voice: false,
            privileged: Default::default(),
        };
        let you = You {
            entry: entry("p-1", Some(ShownName::Given(DisplayName::new("Amina Haddad").unwrap()))),
            protection: Some(YourProtection::from(&measures)),
            listening: Some(label("ar")),
        };
        let you = serde_json::to_value(&you).unwrap();
        assert_eq!(you["name"], "Amina Haddad");
        assert_eq!(you["protection"], json!({"pseudonym": "Witness A", "mask_face": true, "alter_voice": false}));
        assert_eq!(you["listening"], "ar");

        let at: Timestamp = "2027-03-03T09:00:00Z".parse().unwrap();
        let notice = RightsNotice { at, person: participant("p-1"), by: participant("p-0"), text: None };
        let checklist = Checklist {
            identity_checks: Vec::new(),
            texts_presented: Vec::new(),
            rights_notices: vec![RightsNoticeGiven::from(&notice)],
            oaths: Vec::new(),
            interpreters: Vec::new(),
        };
        // Who gave the notice is not the checklist's; a notice with no words recorded says `null`.
        assert_eq!(
            serde_json::to_value(&checklist).unwrap(),
            json!({
                "identity_checks": [], "texts_presented": [], "oaths": [], "interpreters": [],
                "rights_notices": [{"person": "p-1", "at": "2027-03-03T09:00:00Z", "text": null}],
            })
        );
    }

    #[test]
    fn no_name_pseudonym_credential_or_contact_reaches_debug() {
        let measures = ProtectiveMeasures {
            pseudonym: label("Witness A"),
            mask_face: true,
            alter_voice: true,
            privileged: Default::default(),
        };
        let state = RoomMessage::State(Box::new(RoomState {
            phase: Phase::Open,
            recording: false,
            channels: Vec::new(),
            you: Some(You {
                entry: entry("p-1", Some(ShownName::Given(DisplayName::new("Amina Haddad").unwrap()))),
                protection: Some(YourProtection::from(&measures)),
                listening: None,
            }),
            participants: vec![entry("p-2", Some(ShownName::Pseudonym(label("Witness B"))))],
            checklist: None,
        }));
        let welcome = RoomMessage::Welcome(Box::new(Welcome {
            participant: participant("p-1"),
            role: Some(HearingRole::Witness),
            credential: Withheld("c0ffee-credential".into()),
            hearing: HearingAsWelcomed {
                id: HearingId::new("h-1").unwrap(),
                place: Withheld(label("Aula 3")),
                scheduled_for: "2027-03-03T09:00:00Z".parse().unwrap(),
            },
            ice_servers: Vec::new(),
            slots: 10,
            contact: Some(HearingContact::new("Registry, +39 095 555 0101").unwrap()),
            text_languages: vec!["en".into()],
        }));
        let at: Timestamp = "2027-03-03T09:00:00Z".parse().unwrap();
        let check = |document| IdentityCheck {
            at,
            person: participant("p-1"),
            officer: participant("p-3"),
            document,
            site: label("Questura di Catania, via Manzoni 12"),
            detail_sha256: Sha256::of(b"detail"),
        };
        let checklist = RoomMessage::State(Box::new(RoomState {
            phase: Phase::InSession,
            recording: false,
            channels: Vec::new(),
            you: None,
            participants: Vec::new(),
            checklist: Some(Checklist {
                identity_checks: vec![
                    IdentityChecked::from(&check(DocumentType::Passport)),
                    IdentityChecked::from(&check(DocumentType::Other(label("refugee card of the Catania office")))),
                ],
                texts_presented: Vec::new(),
                rights_notices: Vec::new(),
                oaths: Vec::new(),
                interpreters: Vec::new(),
            }),
        }));
        let shown = format!("{state:?} {welcome:?} {checklist:?}");
        assert!(shown.contains("Passport") && shown.contains("Other(withheld)"), "{shown}");
        for private in ["Amina", "Witness A", "Witness B", "c0ffee", "+39", "Questura", "Manzoni", "refugee", "Aula 3"]
        {
            assert!(!shown.contains(private), "{private} in {shown}");
        }
        assert!(shown.contains("p-1") && shown.contains("h-1"), "{shown}");
    }
}
