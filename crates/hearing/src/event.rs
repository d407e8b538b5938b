//! What the adapter tells the state machine: one [`Event`] at a time, each with the time it happened.

use std::collections::BTreeSet;

use custodia_core::{ActorId, CanonicalError, HearingId, Label, Role, Sha256};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{CommitmentSalt, ConsultationId, HearingRole, InviteId, ParticipantId, PersonalName};

/// Someone acting from the case console, outside the hearing room, whom the gateway has authenticated and found
/// to hold `role` in the hearing's case. The state machine trusts that finding and checks only that the role
/// may do what is asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseMember {
    pub actor: ActorId,
    pub role: Role,
}

/// What a clerk sets when scheduling a hearing. `Debug` withholds the place, which the clerk typed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub hearing: HearingId,
    pub case: custodia_core::CaseId,
    pub by: CaseMember,
    /// When the hearing is due to start, for the minutes.
    pub scheduled_for: Timestamp,
    /// The court and room that hear the testimony, in words, for the minutes ("date and place").
    pub place: Label,
    pub rules: Rules,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { hearing, case, by, scheduled_for, place: _, rules } = self;
        f.debug_struct("Schedule")
            .field("hearing", hearing)
            .field("case", case)
            .field("by", by)
            .field("scheduled_for", scheduled_for)
            .field("rules", rules)
            .finish_non_exhaustive()
    }
}

/// Rules a court may set per hearing. [`Rules::default`] is the strict set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// A witness may take the oath only after the remote-site officer has verified their identity (EU MLA
    /// Convention art. 10(5)(a), UNTOC art. 18(18)). Off for a domestic hearing with no remote site.
    pub identity_check_before_oath: bool,
    /// The rights notice, the oath or affirmation and the interpreter's oath are recorded only once the judge has
    /// put their exact words on the person's screen ([`Event::PresentText`]), and name the words presented. On for
    /// every hearing scheduled now; off only in journals of hearings scheduled before the words were presented
    /// first (their schedule lacks this rule), whose steps carried the wording themselves.
    #[serde(default)]
    pub texts_presented_first: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Self { identity_check_before_oath: true, texts_presented_first: true }
    }
}

/// How the holder of an invite gets past the lobby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// They wait in the lobby until a present judge or clerk admits them.
    Lobby,
    /// The clerk who issued the invite admitted its holder in advance, so they are admitted as they join. Only
    /// for a judge's or a clerk's invite: this is how the first court officer gets into an empty hearing.
    OnJoin,
}

/// A one-time, expiring invite to a hearing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub id: InviteId,
    pub role: HearingRole,
    /// The invite cannot be used at or after this time. Once used, expiry no longer matters: its holder may
    /// reconnect for as long as the hearing runs.
    pub expires_at: Timestamp,
    pub admission: Admission,
}

/// Protective measures the judge orders for a witness (an anonymity order, as under the UK's Coroners and Justice
/// Act 2009 s.86 or the ICC's protective measures): a pseudonym, their face masked, their voice altered. The
/// judge and the clerk always see and hear the original and read the name; `privileged` adds other roles. Everyone
/// else gets the masked feeds and the pseudonym. The recording keeps the original: the court keeps the true record.
/// `Debug` withholds the pseudonym.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectiveMeasures {
    /// What everyone but the privileged is shown in place of the witness's name. Shown to the parties, so not a
    /// secret; but typed by a person, so it reaches the record only inside the detail's digest.
    pub pseudonym: Label,
    /// Everyone but the privileged sees a masked picture, never the camera's.
    pub mask_face: bool,
    /// Everyone but the privileged hears an altered voice, never the microphone's.
    pub alter_voice: bool,
    /// Roles besides the judge and the clerk who see and hear the original and read the name: counsel, the
    /// accused, the interpreter or the remote-site officer. Never another witness or an observer (and the court,
    /// which always has it, is not named). A role named twice is refused, not merged: an order is read as written.
    #[serde(
        default,
        skip_serializing_if = "BTreeSet::is_empty",
        with = "serde_with::As::<serde_with::SetPreventDuplicates<serde_with::Same>>"
    )]
    pub privileged: BTreeSet<HearingRole>,
}

impl std::fmt::Debug for ProtectiveMeasures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { pseudonym: _, mask_face, alter_voice, privileged } = self;
        f.debug_struct("ProtectiveMeasures")
            .field("mask_face", mask_face)
            .field("alter_voice", alter_voice)
            .field("privileged", privileged)
            .finish_non_exhaustive()
    }
}

impl ProtectiveMeasures {
    /// Whether this order lets `role` see and hear the original and read the name.
    pub fn privileges(&self, role: HearingRole) -> bool {
        role.is_court() || self.privileged.contains(&role)
    }

    /// Whether the order changes what anyone receives (not only the name shown).
    pub fn masks_media(&self) -> bool {
        self.mask_face || self.alter_voice
    }
}

/// How an interpreter interprets on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterpretationMode {
    /// While the floor speaks: the interpreter is heard only on the channel, and its listeners hear the
    /// interpreter instead of the floor (the floor ducked out under the interpretation).
    Simultaneous,
    /// After the floor speaks: the interpreter speaks on the floor like anyone, as before channels.
    Consecutive,
}

/// Why someone is no longer connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveCause {
    /// They hung up.
    Left,
    /// Their connection dropped (ICE failed, the socket closed).
    ConnectionLost,
}

/// The words a person was shown for a rights notice or an oath: the text's language and the SHA-256 of its exact
/// UTF-8 bytes. The adapter holds the texts (the court edits them); the minutes say which one was shown, so the court
/// can prove what the person heard by the digest of the file it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextShown {
    /// The text's language, as the court's texts name it (`fr`, `ar`).
    pub language: Label,
    pub sha256: Sha256,
}

/// Which of the court's texts: the words a person is shown before the step that follows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wording {
    /// The rights notice, for a witness or the accused, before [`Event::GiveRightsNotice`].
    RightsNotice,
    /// The oath, for a witness, before [`Event::TakeOath`] in [`OathForm::Oath`].
    Oath,
    /// The solemn affirmation, for a witness, before [`Event::TakeOath`] in [`OathForm::Affirmation`].
    Affirmation,
    /// The interpreter's oath, before [`Event::SwearInterpreter`].
    InterpreterOath,
}

impl Wording {
    pub const ALL: [Self; 4] = [Self::RightsNotice, Self::Oath, Self::Affirmation, Self::InterpreterOath];

    /// Its name in messages and files (`interpreter_oath`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RightsNotice => "rights_notice",
            Self::Oath => "oath",
            Self::Affirmation => "affirmation",
            Self::InterpreterOath => "interpreter_oath",
        }
    }

    /// The words a witness swears or affirms to in `form`.
    pub const fn of_oath(form: OathForm) -> Self {
        match form {
            OathForm::Oath => Self::Oath,
            OathForm::Affirmation => Self::Affirmation,
        }
    }
}

impl std::fmt::Display for Wording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RightsNotice => "rights notice",
            Self::Oath => "oath",
            Self::Affirmation => "affirmation",
            Self::InterpreterOath => "interpreter's oath",
        })
    }
}

/// Sworn on oath, or a solemn affirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OathForm {
    Oath,
    Affirmation,
}

/// The identity document the remote-site officer inspected. `Debug` withholds the words of [`Self::Other`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentType {
    Passport,
    NationalIdentityCard,
    ResidencePermit,
    TravelDocument,
    DrivingLicence,
    /// Anything else, described in words. Never a document number: the minutes are not the place for it.
    Other(Label),
}

/// The kind of document; for [`DocumentType::Other`], not the words the officer typed, which can say more than a
/// kind.
impl std::fmt::Debug for DocumentType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Passport => "Passport",
            Self::NationalIdentityCard => "NationalIdentityCard",
            Self::ResidencePermit => "ResidencePermit",
            Self::TravelDocument => "TravelDocument",
            Self::DrivingLicence => "DrivingLicence",
            Self::Other(_) => "Other(withheld)",
        })
    }
}

/// The remote-site officer's account of an identity check.
///
/// The officer's name is personal data. It goes into the record only as the SHA-256 of a canonical detail
/// document ([`Self::detail_document`]) that also holds a random salt, so the public digest cannot be reversed by
/// guessing names. The adapter keeps that document privately (next to the scanned document, if one was ingested)
/// so that a court can check it against the ledger; the minutes carry the same digest as the reference. `Debug`
/// withholds the site, which can place a protected witness, as well as the name and the salt.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityVerification {
    pub document: DocumentType,
    pub officer_name: PersonalName,
    /// Where the remote site is, in words ("Tunis, Tribunal de première instance, room 4").
    pub site: Label,
    pub salt: CommitmentSalt,
}

impl std::fmt::Debug for IdentityVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { document, officer_name, site: _, salt } = self;
        f.debug_struct("IdentityVerification")
            .field("document", document)
            .field("officer_name", officer_name)
            .field("salt", salt)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct IdentityDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hearing: &'a HearingId,
    person: &'a ParticipantId,
    officer: &'a ParticipantId,
    document: &'a DocumentType,
    officer_name: &'a str,
    site: &'a Label,
    salt: String,
}

impl IdentityVerification {
    /// The RFC 8785 canonical detail document whose SHA-256 the custody record and the minutes carry.
    pub fn detail_document(
        &self,
        hearing: &HearingId,
        person: &ParticipantId,
        officer: &ParticipantId,
    ) -> Result<Vec<u8>, CanonicalError> {
        custodia_core::to_canonical_vec(&IdentityDetail {
            kind: "identity_verified",
            hearing,
            person,
            officer,
            document: &self.document,
            officer_name: self.officer_name.reveal(),
            site: &self.site,
            salt: self.salt.to_hex(),
        })
    }

    pub fn detail_sha256(
        &self,
        hearing: &HearingId,
        person: &ParticipantId,
        officer: &ParticipantId,
    ) -> Result<Sha256, CanonicalError> {
        self.detail_document(hearing, person, officer).map(|bytes| Sha256::of(&bytes))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

/// What the media plane saw of one participant's track since its previous report. The minutes add the reports up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TechnicalReport {
    pub participant: ParticipantId,
    pub track: TrackKind,
    /// As negotiated: "opus", "VP8", "H264".
    pub codec: Label,
    pub packets_received: u64,
    pub packets_lost: u64,
}

/// Everything that can happen to a hearing once it is scheduled.
///
/// Events named after a request (`Admit`, `Mute`…) are attempts: the state machine decides whether the rules
/// allow them. Events named after a fact (`Leave`, `SegmentSealed`…) report what already happened; they are
/// refused only when they make no sense (an unknown participant, a segment out of order).
///
/// Events serialize (as JSON tagged by `type`) so that an adapter can keep a private journal of a hearing and
/// replay it after a restart; an identity check's event holds the officer's name, so such a journal is private.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    // From the case console. The gateway has already authenticated the caller as a member of the case.
    /// Invite someone. Clerk only; not once the hearing has ended.
    IssueInvite {
        by: CaseMember,
        invite: Invite,
    },
    /// Withdraw an unused invite. Clerk only.
    RevokeInvite {
        by: CaseMember,
        invite: InviteId,
    },
    /// Open the lobby, so that invites can be used. Clerk only.
    OpenLobby {
        by: CaseMember,
    },
    /// The judge of the case orders protective measures for the person an invite is for (a witness), changes the
    /// order, or lifts it (`measures: None`). Made from the console, so that an order holds before the witness first
    /// connects; it may be changed at any time until the hearing ends.
    OrderProtection {
        by: CaseMember,
        invite: InviteId,
        measures: Option<ProtectiveMeasures>,
    },
    /// End the hearing from outside the room (a cancellation, or a hearing whose court has lost its connection
    /// for good). Clerk only.
    Close {
        by: CaseMember,
    },

    // From the hearing room. The adapter has authenticated the connection as `by` (or `participant`).
    /// Someone used an invite. `participant` is the id the adapter gives them; it must be new.
    Join {
        invite: InviteId,
        participant: ParticipantId,
    },
    /// The court lets someone out of the lobby into the hearing.
    Admit {
        by: ParticipantId,
        participant: ParticipantId,
    },
    /// The court removes someone, from the lobby or the hearing. They cannot come back.
    Remove {
        by: ParticipantId,
        participant: ParticipantId,
    },
    /// Someone's connection ended.
    Leave {
        participant: ParticipantId,
        cause: LeaveCause,
    },
    /// Someone who had joined is back, on a new connection. They keep their admission, and the texts presented to
    /// them (or by them) that still await their step are shown to them again.
    Reconnect {
        participant: ParticipantId,
    },
    Mute {
        by: ParticipantId,
        participant: ParticipantId,
    },
    Unmute {
        by: ParticipantId,
        participant: ParticipantId,
    },
    /// The judge opens the session: the hearing proper starts.
    StartSession {
        by: ParticipantId,
    },
    StartRecording {
        by: ParticipantId,
    },
    StopRecording {
        by: ParticipantId,
    },
    /// Counsel takes people into a private consultation, out of the recording.
    StartConsultation {
        by: ParticipantId,
        with: Vec<ParticipantId>,
    },
    /// Counsel, or the court, brings a consultation back to the hearing.
    EndConsultation {
        by: ParticipantId,
        consultation: ConsultationId,
    },
    /// The remote-site officer has verified the identity of the person heard.
    VerifyIdentity {
        by: ParticipantId,
        person: ParticipantId,
        verification: IdentityVerification,
    },
    /// The judge puts the court's words on the screen of the person they concern (the witness or the accused for
    /// the rights notice, the witness for the oath or affirmation, the interpreter for the interpreter's oath),
    /// before asking them to listen, swear or affirm. `text` names the words (their language and digest); the
    /// adapter shows them ([`crate::Effect::ShowText`]).
    PresentText {
        by: ParticipantId,
        person: ParticipantId,
        wording: Wording,
        text: TextShown,
    },
    /// The judge has told the person heard of their rights, including the right not to testify.
    GiveRightsNotice {
        by: ParticipantId,
        person: ParticipantId,
        /// Under [`Rules::texts_presented_first`], none, or the words last presented to the person (the record
        /// names those). Journals of hearings scheduled before carry the wording shown here, or none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<TextShown>,
    },
    /// The judge has taken the witness's oath or affirmation.
    TakeOath {
        by: ParticipantId,
        witness: ParticipantId,
        form: OathForm,
        /// The court has been warned that the gateway receives no media from the witness (nobody sees or hears
        /// them) and goes on all the same. Without it, an oath in that state is refused.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        despite_no_media: bool,
        /// As for [`Event::GiveRightsNotice`]: the words of the oath or affirmation presented, or none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<TextShown>,
    },
    /// The judge has sworn the interpreter in, for a pair of languages ("ar-TN / it").
    SwearInterpreter {
        by: ParticipantId,
        interpreter: ParticipantId,
        languages: Label,
    },
    /// The court opens an interpretation channel into `language` (`it`, `ar`), spoken by `interpreter`.
    OpenChannel {
        by: ParticipantId,
        interpreter: ParticipantId,
        language: Label,
        mode: InterpretationMode,
    },
    /// The court closes the channel into `language`; its listeners hear the floor again.
    CloseChannel {
        by: ParticipantId,
        language: Label,
    },
    /// A participant chooses what they hear: the channel into `language`, or the floor (`None`).
    ChooseChannel {
        participant: ParticipantId,
        language: Option<Label>,
    },
    /// The court ends the hearing.
    End {
        by: ParticipantId,
    },

    // From the adapter's media plane.
    /// The recorder closed a segment, stored it write-once and appended its SHA-256 to the ledger at
    /// `ledger_index`. Segments are numbered from 0 across the whole hearing.
    SegmentSealed {
        index: u64,
        sha256: Sha256,
        ledger_index: u64,
    },
    TechnicalReport(TechnicalReport),
    /// The gateway has received no packet from a connected participant for a while (their peer connection failed,
    /// or their camera and microphone stopped): nobody sees or hears them.
    MediaStopped {
        participant: ParticipantId,
    },
    /// Their media arrives again after [`Event::MediaStopped`].
    MediaResumed {
        participant: ParticipantId,
    },
}

impl Event {
    /// What is being attempted, for refusals.
    pub fn action(&self) -> crate::HearingAction {
        use crate::HearingAction as A;
        match self {
            Self::IssueInvite { .. } => A::IssueInvite,
            Self::RevokeInvite { .. } => A::RevokeInvite,
            Self::OpenLobby { .. } => A::OpenLobby,
            Self::Close { .. } => A::Close,
            Self::OrderProtection { .. } => A::OrderProtection,
            Self::Join { .. } => A::Join,
            Self::Admit { .. } => A::Admit,
            Self::Remove { .. } => A::Remove,
            Self::Leave { .. } => A::Leave,
            Self::Reconnect { .. } => A::Reconnect,
            Self::Mute { .. } => A::Mute,
            Self::Unmute { .. } => A::Unmute,
            Self::StartSession { .. } => A::StartSession,
            Self::StartRecording { .. } => A::StartRecording,
            Self::StopRecording { .. } => A::StopRecording,
            Self::StartConsultation { .. } => A::StartConsultation,
            Self::EndConsultation { .. } => A::EndConsultation,
            Self::VerifyIdentity { .. } => A::VerifyIdentity,
            Self::PresentText { .. } => A::PresentText,
            Self::GiveRightsNotice { .. } => A::GiveRightsNotice,
            Self::TakeOath { .. } => A::TakeOath,
            Self::SwearInterpreter { .. } => A::SwearInterpreter,
            Self::End { .. } => A::End,
            Self::OpenChannel { .. } => A::OpenChannel,
            Self::CloseChannel { .. } => A::CloseChannel,
            Self::ChooseChannel { .. } => A::ChooseChannel,
            Self::SegmentSealed { .. } => A::ReportSegment,
            Self::TechnicalReport(_) => A::ReportTechnicalConditions,
            Self::MediaStopped { .. } | Self::MediaResumed { .. } => A::ReportMedia,
        }
    }

    /// Who is acting, for refusals.
    pub fn actor(&self) -> crate::Actor {
        use crate::Actor;
        match self {
            Self::IssueInvite { by, .. }
            | Self::RevokeInvite { by, .. }
            | Self::OpenLobby { by }
            | Self::OrderProtection { by, .. }
            | Self::Close { by } => Actor::Member(by.actor.clone()),
            Self::Join { participant, .. }
            | Self::Leave { participant, .. }
            | Self::Reconnect { participant }
            | Self::Admit { by: participant, .. }
            | Self::Remove { by: participant, .. }
            | Self::Mute { by: participant, .. }
            | Self::Unmute { by: participant, .. }
            | Self::StartSession { by: participant }
            | Self::StartRecording { by: participant }
            | Self::StopRecording { by: participant }
            | Self::StartConsultation { by: participant, .. }
            | Self::EndConsultation { by: participant, .. }
            | Self::VerifyIdentity { by: participant, .. }
            | Self::PresentText { by: participant, .. }
            | Self::GiveRightsNotice { by: participant, .. }
            | Self::TakeOath { by: participant, .. }
            | Self::SwearInterpreter { by: participant, .. }
            | Self::End { by: participant }
            | Self::OpenChannel { by: participant, .. }
            | Self::CloseChannel { by: participant, .. }
            | Self::ChooseChannel { participant, .. } => Actor::Participant(participant.clone()),
            Self::SegmentSealed { .. }
            | Self::TechnicalReport(_)
            | Self::MediaStopped { .. }
            | Self::MediaResumed { .. } => Actor::Gateway,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_detail_is_salted_canonical_json_and_its_digest_commits_to_the_name() {
        let hearing = HearingId::new("h-1").unwrap();
        let person = ParticipantId::new("p-w").unwrap();
        let officer = ParticipantId::new("p-o").unwrap();
        let verification = IdentityVerification {
            document: DocumentType::Passport,
            officer_name: PersonalName::new("Leila Ben Salah").unwrap(),
            site: Label::new("Tunis, court of first instance").unwrap(),
            salt: CommitmentSalt::from_bytes([7; 32]),
        };
        let document = String::from_utf8(verification.detail_document(&hearing, &person, &officer).unwrap()).unwrap();
        assert_eq!(
            document,
            concat!(
                r#"{"document":"passport","hearing":"h-1","officer":"p-o","officer_name":"Leila Ben Salah","#,
                r#""person":"p-w","salt":"0707070707070707070707070707070707070707070707070707070707070707","#,
                r#""site":"Tunis, court of first instance","type":"identity_verified"}"#
            )
        );
        let digest = verification.detail_sha256(&hearing, &person, &officer).unwrap();
        assert_eq!(digest, Sha256::of(document.as_bytes()));
        let other_salt = IdentityVerification { salt: CommitmentSalt::from_bytes([8; 32]), ..verification.clone() };
        assert_ne!(other_salt.detail_sha256(&hearing, &person, &officer).unwrap(), digest);
        assert!(!format!("{verification:?}").contains("Leila"));
    }

    /// What a person typed (a site, a document described in words, a pseudonym, a place) stays out of `Debug`,
    /// and so out of any log line that prints an event or a schedule.
    #[test]
    fn debug_withholds_what_a_person_typed() {
        let verify = Event::VerifyIdentity {
            by: ParticipantId::new("p-o").unwrap(),
            person: ParticipantId::new("p-w").unwrap(),
            verification: IdentityVerification {
                document: DocumentType::Other(Label::new("consular card of Sfax").unwrap()),
                officer_name: PersonalName::new("Leila Ben Salah").unwrap(),
                site: Label::new("Tunis, court of first instance").unwrap(),
                salt: CommitmentSalt::from_bytes([7; 32]),
            },
        };
        let order = Event::OrderProtection {
            by: CaseMember { actor: ActorId::new("acct-judge").unwrap(), role: Role::Judge },
            invite: InviteId::new("i-w").unwrap(),
            measures: Some(ProtectiveMeasures {
                pseudonym: Label::new("Witness Seven").unwrap(),
                mask_face: true,
                alter_voice: false,
                privileged: BTreeSet::from([HearingRole::Defence]),
            }),
        };
        let schedule = Schedule {
            hearing: HearingId::new("h-1").unwrap(),
            case: custodia_core::CaseId::new("case-7").unwrap(),
            by: CaseMember { actor: ActorId::new("acct-clerk").unwrap(), role: Role::Clerk },
            scheduled_for: "2027-03-03T09:00:00Z".parse().unwrap(),
            place: Label::new("Tribunale di Catania, aula 3").unwrap(),
            rules: Rules::default(),
        };
        let shown = format!("{verify:?} {order:?} {schedule:?}");
        for private in ["Sfax", "consular", "Leila", "Tunis", "0707", "Witness Seven", "Catania"] {
            assert!(!shown.contains(private), "{private} in {shown}");
        }
        for kept in ["Other(withheld)", "p-w", "mask_face: true", "Defence", "h-1", "case-7"] {
            assert!(shown.contains(kept), "{kept} not in {shown}");
        }
        assert_eq!(format!("{:?}", DocumentType::Passport), "Passport");
    }

    #[test]
    fn a_protective_order_with_a_field_nobody_defined_is_refused() {
        let order = r#"{"pseudonym":"W1","mask_face":true,"alter_voice":false}"#;
        assert!(serde_json::from_str::<ProtectiveMeasures>(order).is_ok());
        let with_more = r#"{"pseudonym":"W1","mask_face":true,"alter_voice":false,"hide_name":true}"#;
        let refused = serde_json::from_str::<ProtectiveMeasures>(with_more).unwrap_err();
        assert!(refused.to_string().contains("unknown field `hide_name`"), "{refused}");
    }

    /// OpenAPI says `privileged` holds each role once; a request naming one twice is refused rather than merged,
    /// and what the gateway writes (the set) reads back.
    #[test]
    fn a_protective_order_naming_a_role_twice_is_refused() {
        let twice = r#"{"pseudonym":"W1","mask_face":true,"alter_voice":false,"privileged":["accused","accused"]}"#;
        let refused = serde_json::from_str::<ProtectiveMeasures>(twice).unwrap_err();
        assert!(refused.to_string().contains("duplicate"), "{refused}");
        let once = r#"{"pseudonym":"W1","mask_face":true,"alter_voice":false,"privileged":["defence","accused"]}"#;
        let order = serde_json::from_str::<ProtectiveMeasures>(once).unwrap();
        assert_eq!(order.privileged, BTreeSet::from([HearingRole::Defence, HearingRole::Accused]));
        let written = serde_json::to_string(&order).unwrap();
        assert_eq!(serde_json::from_str::<ProtectiveMeasures>(&written).unwrap(), order);
        let none = r#"{"pseudonym":"W1","mask_face":true,"alter_voice":false}"#;
        assert!(serde_json::from_str::<ProtectiveMeasures>(none).unwrap().privileged.is_empty());
        assert!(
            !serde_json::to_string(&ProtectiveMeasures { privileged: BTreeSet::new(), ..order })
                .unwrap()
                .contains("privileged")
        );
    }

    #[test]
    fn events_round_trip_through_json_for_the_adapter_journal() {
        let verification = IdentityVerification {
            document: DocumentType::Other(Label::new("consular card").unwrap()),
            officer_name: PersonalName::new("Leila Ben Salah").unwrap(),
            site: Label::new("Tunis").unwrap(),
            salt: CommitmentSalt::from_bytes([7; 32]),
        };
        let person = ParticipantId::new("p-w").unwrap();
        let events = [
            Event::VerifyIdentity { by: ParticipantId::new("p-o").unwrap(), person: person.clone(), verification },
            Event::TechnicalReport(TechnicalReport {
                participant: person.clone(),
                track: TrackKind::Video,
                codec: Label::new("VP8").unwrap(),
                packets_received: 10,
                packets_lost: 1,
            }),
            Event::MediaStopped { participant: person.clone() },
            Event::TakeOath {
                by: ParticipantId::new("p-j").unwrap(),
                witness: person.clone(),
                form: OathForm::Oath,
                despite_no_media: true,
                text: Some(TextShown { language: Label::new("fr").unwrap(), sha256: Sha256::of(b"Je le jure.") }),
            },
            Event::Leave { participant: person, cause: LeaveCause::ConnectionLost },
        ];
        for event in events {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event, "{json}");
        }
        // A journal written before the media warning existed still reads: no flag is no confirmation.
        let old = r#"{"type":"take_oath","by":"p-j","witness":"p-w","form":"oath"}"#;
        assert!(matches!(
            serde_json::from_str::<Event>(old).unwrap(),
            Event::TakeOath { despite_no_media: false, text: None, .. }
        ));
    }
}
