//! Live hearings: the adapter around `custodia-hearing`'s state machine.
//!
//! Every step, from the console or the room, becomes an [`Event`]; the state machine decides, and its effects are
//! carried out in its order: custody records into the ledger first, then the media plane ([`crate::media_plane`]; a
//! WebRTC room in production): who hears whom, who is muted, whom the recorder takes. Each participant's recording is cut into segments that
//! enter custody as artefacts of the case as they close; when the hearing ends and the last segment is sealed, the
//! minutes are signed and taken into custody too.
//!
//! Secrets never stay in clear: invite links and participants' reconnection credentials are kept as SHA-256
//! digests. Participants are opaque ids and roles; no name reaches a log, a record or another participant.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use custodia_core::{Action, ActorId, ArtefactId, CaseId, HearingId, Label, OnwardTransfer, Sha256, Tlp, UsePolicy};
use custodia_hearing::{
    Admission, CaseMember, CommitmentSalt, ConsultationId, DocumentType, Effect, Event, HeardAudio, Hearing,
    HearingError, HearingRole, IdentityVerification, InterpretationMode, Invite, InviteId, InviteState, LeaveCause,
    MediaProtection, OathForm, ParticipantId, PersonalName, Phase, Place, ProtectiveMeasures, Rules, Schedule,
    TechnicalReport, TextShown, TrackKind, Wording,
};
use custodia_recorder::engine::MediaKind;
use custodia_recorder::segmenter::{Recording, RecordingConfig};
use custodia_recorder::sfu::{RecorderFactory, Zone};
use custodia_recorder::{SealError, SealedSegment, SegmentSealer};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::media_plane::{MediaPlane, MediaPlanes};
use crate::people::{DisplayName, HearingContact, LanguageHint};
use crate::room_messages::{
    ChannelView, Checklist, HearingAsWelcomed, ParticipantView, PlaceName, RoomMessage, RoomState, ShownName, Welcome,
    Withheld, Words, You, YourProtection,
};
use crate::texts::{CourtText, CourtTexts};
use crate::turn::{IceServerJson, IceServers};
use custodia_service::budget::{Budget, retry_after_seconds};
use custodia_service::error::{Chain, ErrorClass, SERVED_ELSEWHERE};
use custodia_service::gateway::{Gateway, GatewayError, Registered, new_id};
use custodia_service::identity::{Channel, Principal};

/// How often a gateway renews the leases of the hearings it holds, and looks for hearings nobody holds (their
/// gateway died) to take over. A third of [`LEASE_EXPIRY`]: two renewals in a row may fail (a slow or briefly
/// unreachable database) before a healthy gateway's hearing could move.
pub const LEASE_RENEWAL: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a hearing's lease lasts unrenewed. Participants of a gateway that died wait this long, and up to one
/// [`LEASE_RENEWAL`] more, before another gateway takes the hearing over from its journal; their pages keep
/// reconnecting meanwhile. Longer would keep a court waiting, shorter would move hearings of a gateway that only
/// paused.
pub const LEASE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(15);

/// Now, in milliseconds since the Unix epoch, as hearing leases count time: the system clock (a lease is about this
/// process being alive, not about the gateway's clock for records), which the catalog shifts to the database's.
fn lease_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}

fn lease_until(now: i64) -> i64 {
    now + LEASE_EXPIRY.as_millis() as i64
}

/// Why a request for a hearing is not answered here: another gateway holds its lease.
#[derive(Debug, thiserror::Error)]
#[error("hearing {hearing} is held by another gateway")]
struct HeldElsewhere {
    hearing: String,
}

/// Why a gateway that does not host the hearings schedules none ([`Hearings::host`]).
#[derive(Debug, thiserror::Error)]
#[error("another gateway hosts the hearings")]
struct HostedElsewhere;

/// What is unavailable on a gateway that does not host the hearings ([`GatewayError::Unavailable`]).
const SCHEDULED_BY_THE_HOST: &str = "scheduling, done by the gateway that hosts the hearings,";

/// How many others each participant can see and hear at once: every seat of a hearing, with room to spare.
pub const RECEIVE_SLOTS: usize = 10;

/// How long a connected participant's peer connection may bring no packet at all before the court is told that
/// their media has stopped. A camera sends 15 to 30 frames a second and Opus 50 packets, so this is no lull.
const MEDIA_SILENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// How often the gateway looks at what arrives from each participant.
const MEDIA_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The messages waiting for one participant's WebSocket. It is bounded: a client that does not read what it is
/// sent (a slow link, or an attacker letting replies pile up) is disconnected once [`Outbox::CAPACITY`] messages
/// wait, instead of growing the gateway's memory. A disconnected participant rejoins and is sent the state afresh.
#[derive(Debug, Clone)]
pub struct Outbox {
    sender: mpsc::Sender<RoomMessage>,
    overflowed: std::sync::Arc<tokio::sync::Notify>,
}

impl Outbox {
    /// Messages that may wait for one socket.
    pub const CAPACITY: usize = 64;

    /// A new outbox, the receiving end for the socket's writer, and the signal that the outbox overflowed.
    pub fn channel() -> (Self, mpsc::Receiver<RoomMessage>, std::sync::Arc<tokio::sync::Notify>) {
        let (sender, receiver) = mpsc::channel(Self::CAPACITY);
        let overflowed = std::sync::Arc::new(tokio::sync::Notify::new());
        (Self { sender, overflowed: overflowed.clone() }, receiver, overflowed)
    }

    /// Queues `message`; when the outbox is full the socket is to be closed, and the message is dropped.
    pub fn send(&self, message: RoomMessage) -> Result<(), mpsc::error::TrySendError<RoomMessage>> {
        self.sender.try_send(message).inspect_err(|err| {
            if matches!(err, mpsc::error::TrySendError::Full(_)) {
                self.overflowed.notify_one();
            }
        })
    }

    /// Closes the socket (its writer stops, as for an outbox that overflowed): the page reconnects, through the
    /// load balancer, to whichever gateway holds the hearing now.
    pub fn close(&self) {
        self.overflowed.notify_one();
    }

    /// Completes once the socket's writer has stopped.
    pub async fn closed(&self) {
        self.sender.closed().await;
    }
}

/// Why someone was not let into a hearing's room. Said to them by its stable [`Self::key`] (the room's `problem`),
/// which their page words in their language; the text is for the operator and the API.
///
/// A failure of the gateway keeps its error, source and class with it: one that may pass
/// ([`ErrorClass::Retryable`]: the database or the custody log's storage unreachable, the hearing's lease just taken
/// by another gateway) is [`Self::Unavailable`], which a page tries again; any other is [`Self::Failed`], final.
#[derive(Debug, thiserror::Error)]
pub enum EnterRefusal {
    #[error("this invite link or credential is not valid")]
    Invalid,
    #[error("too many attempts to enter: try again in {retry_after_seconds} s")]
    TooManyAttempts { retry_after_seconds: u64 },
    #[error("this hearing has ended")]
    Ended,
    #[error("you were removed from this hearing")]
    Removed,
    #[error("this invite has already been used")]
    Used,
    #[error("this invite has been revoked")]
    Revoked,
    #[error("this invite has expired")]
    Expired,
    #[error("the hearing has not opened yet: try again when the court opens it")]
    NotOpen,
    /// Not known here while another gateway holds hearings whose leases have not run out, or while a hearing this
    /// gateway held is between its lapsed lease and its takeover: the secret may be of one of them, which this
    /// gateway takes over once its lease lapses (or which the load balancer sends elsewhere). Nothing was used up:
    /// the same join is tried again shortly.
    #[error("this hearing is served by another gateway just now: try again in a few seconds")]
    ServedElsewhere,
    /// The gateway could not let them in now, for a reason that may pass (its class is
    /// [`ErrorClass::Retryable`]): a backend it needs is unavailable, or the hearing's lease was just taken by
    /// another gateway. Nothing of the hearing changed and nothing was used up: the same join is tried again
    /// shortly. Made only by [`Self::from_gateway`].
    #[error(transparent)]
    Unavailable(GatewayError),
    /// The gateway failed, or a rule refused the entry, in a way that trying again does not mend. Its text says
    /// nothing internal ([`ErrorClass::Internal`]); the error, with its causes, is kept for the operator's log.
    #[error("{}", failed_text(.0))]
    Failed(#[source] GatewayError),
    /// The socket's first message was not a join or a rejoin (or never came): why.
    #[error("{0}")]
    NotAJoin(String),
}

/// What a [`EnterRefusal::Failed`] says: the error itself when it is the request's, nothing internal otherwise.
fn failed_text(err: &GatewayError) -> String {
    match err.class() {
        ErrorClass::Internal => "the gateway could not let you in; try again, or contact the court".to_owned(),
        ErrorClass::Refused | ErrorClass::Retryable => err.to_string(),
    }
}

impl EnterRefusal {
    /// The refusal for `err`, a failure of the gateway while letting someone in, by its class: one that may pass is
    /// [`Self::Unavailable`], a budget is [`Self::TooManyAttempts`], anything else [`Self::Failed`].
    pub fn from_gateway(err: GatewayError) -> Self {
        match err {
            GatewayError::TooManyAttempts { retry_after_seconds, .. } => Self::TooManyAttempts { retry_after_seconds },
            err if err.is_retryable() => Self::Unavailable(err),
            err => Self::Failed(err),
        }
    }

    /// The stable key a page translates (`enter.<key>` in web/static/i18n). `served_elsewhere` and `unavailable`
    /// say that nothing was used up and the same join is to be tried again ([`Self::is_retryable`]).
    pub fn key(&self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::Ended => "hearing_ended",
            Self::Removed => "removed",
            Self::Used => "used",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::NotOpen => "not_open",
            Self::ServedElsewhere => "served_elsewhere",
            // The hearing's lease was taken by another gateway while this one let someone in.
            Self::Unavailable(GatewayError::Unavailable { what, .. }) if *what == SERVED_ELSEWHERE => {
                "served_elsewhere"
            }
            Self::Unavailable(_) => "unavailable",
            Self::Failed(_) | Self::NotAJoin(_) => "other",
        }
    }

    /// Whether the same join, tried again shortly, may let them in: nothing was used up.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::ServedElsewhere | Self::Unavailable(_))
    }
}

impl From<RoomError> for EnterRefusal {
    fn from(err: RoomError) -> Self {
        match err {
            // Something of the join is on the record: final, whatever failed.
            RoomError::PartlyDone(_) => Self::Failed(err.into()),
            err => Self::from_gateway(err.into()),
        }
    }
}

/// Why a step in a hearing did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The hearing's rules said no.
    #[error(transparent)]
    Refused(#[from] HearingError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The step happened in part: some of its custody records were appended (durable, in the public log), then
    /// carrying out the rest failed. It is in the hearing's state and journal as taken, so it is not taken again,
    /// and trying it again does not mend what is missing: never retryable.
    #[error("the step was recorded only in part")]
    PartlyDone(#[source] GatewayError),
}

impl From<RoomError> for GatewayError {
    fn from(err: RoomError) -> Self {
        match err {
            // A case member whose role may not do it is forbidden; any other rule is a conflict with the hearing's state.
            RoomError::Refused(refusal) => match refusal.reason() {
                Some(custodia_hearing::Reason::CaseRoleNotAllowed { role, .. }) => {
                    GatewayError::RoleForbids { role: *role, action: refusal.to_string() }
                }
                _ => GatewayError::Conflict(refusal.to_string()),
            },
            RoomError::Gateway(err) => err,
            partly @ RoomError::PartlyDone(_) => GatewayError::internal("a hearing's step", partly),
        }
    }
}

/// Every live hearing of this gateway.
pub struct Hearings {
    gateway: Gateway,
    /// Opens each hearing's media plane ([`crate::media_plane`]).
    media: Arc<dyn MediaPlanes>,
    ice_servers: Arc<IceServers>,
    /// The rights notices and oaths, per language ([`crate::texts`]).
    texts: Arc<CourtTexts>,
    recordings_dir: PathBuf,
    /// Where output that could not enter custody is kept ([`crate::quarantine`]).
    quarantine_dir: PathBuf,
    live: Mutex<HashMap<HearingId, Arc<LiveHearing>>>,
    /// Digest of an invite's secret, or of a participant's credential, to its hearing.
    secrets: Mutex<HashMap<Sha256, HearingId>>,
    connections: AtomicU64,
    /// Console steps per account (the console steps of [`custodia_service::budget::Quotas`]).
    console_steps: Budget,
    /// Attempts to enter a room per secret (the room entries of [`custodia_service::budget::Quotas`]), and failed attempts
    /// per peer address ([`FAILED_JOINS_PER_PEER`]).
    joins_per_secret: Budget,
    failed_joins_per_peer: Budget,
    /// Taken by each WHIP publisher from its count against the caps to its entry ([`Self::enter_publisher`]).
    whip_turn: tokio::sync::Mutex<()>,
    /// The `custodia` binary that masks protected witnesses' media ([`crate::masking`]).
    mask_program: PathBuf,
    /// This gateway process's id in hearing leases: random per start, naming no host or address.
    node: String,
    /// Hearings whose journal could not be replayed here: not tried again by this process.
    unrestorable: Mutex<BTreeSet<String>>,
    /// The duty of hosting the hearings ([`custodia_catalog::Duty::HEARINGS`]).
    hosting: custodia_catalog::DutyHolder,
    /// Whether another gateway held a hearing's lease at the last look ([`Self::look_elsewhere`]), or this gateway
    /// has stopped a hearing since ([`Self::lose`]): a secret not known here may be of one of those hearings
    /// ([`EnterRefusal::ServedElsewhere`]).
    others_hold: std::sync::atomic::AtomicBool,
}

// Budgets (burst, then a minute) that keep one client from flooding a hearing and the public log with what it
// tries. Generous for a court at work: a participant takes a few steps a minute and comes back after a lost
// connection. (An account's console steps and a secret's room entries are among the gateway's quotas.)

/// Failed attempts to enter (a secret the gateway does not know, or one that can no longer let anyone in) per
/// client network. Only failures count: a valid secret is never turned away for its address's failures, since a
/// court or a household behind one address must not be locked out by guesses sent from it.
const FAILED_JOINS_PER_PEER: (u32, u32) = (60, 60);
const ROOM_STEPS: (u32, u32) = (40, 60);

impl std::fmt::Debug for Hearings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hearings").field("recordings_dir", &self.recordings_dir).finish_non_exhaustive()
    }
}

/// One hearing, and its media.
pub struct LiveHearing {
    id: HearingId,
    case: CaseId,
    /// The court account that scheduled it, bound to the hearing then: recordings and minutes enter custody in its
    /// name whatever its membership or tokens later ([`Gateway::ingest_hearing_output`]).
    court: Principal,
    gateway: Gateway,
    texts: Arc<CourtTexts>,
    /// Where this hearing's output that could not enter custody is kept.
    quarantine_dir: PathBuf,
    room: Arc<dyn MediaPlane>,
    /// The masking of protected participants' media: the room's pipelines, and masked copies of recordings, with
    /// one voice for the hearing.
    maskers: Arc<crate::masking::Maskers>,
    state: tokio::sync::Mutex<HearingState>,
    /// Room steps per participant ([`ROOM_STEPS`]).
    steps: Budget,
    /// Taken while masked copies of this hearing's recordings are made, so that two requests make each once.
    masking_turn: tokio::sync::Mutex<()>,
    /// The lease this gateway holds the hearing under; its `gateway` writes every record under it.
    fence: custodia_catalog::HearingFence,
    /// Until when (ms since the Unix epoch) the lease was last renewed.
    lease_until: std::sync::atomic::AtomicI64,
    /// Set once the lease is lost: the hearing is stopped here and writes nothing more.
    lost: std::sync::atomic::AtomicBool,
}

struct HearingState {
    machine: Hearing,
    invites: BTreeMap<InviteId, Timestamp>,
    /// The display names given on invites (private to the hearing; see [`DisplayName`]).
    names: BTreeMap<InviteId, DisplayName>,
    /// Whom participants call if their link fails (private to the hearing; see [`HearingContact`]).
    contact: Option<HearingContact>,
    invite_secrets: HashMap<Sha256, InviteId>,
    credentials: HashMap<Sha256, ParticipantId>,
    people: BTreeMap<ParticipantId, Person>,
    next_slot: usize,
    segments: Vec<SegmentView>,
    minutes_artefact: Option<ArtefactId>,
    /// The masked copies made so far, by their source segment.
    masked_copies: BTreeMap<ArtefactId, MaskedCopyView>,
    finishing: bool,
    /// The number of the next entry of the hearing's journal.
    journal: i64,
}

/// One entry of a hearing's private journal (catalog table `hearing_journal`): everything needed to rebuild the
/// hearing after a restart. Secrets appear only as digests; an identity check's event holds the officer's name,
/// as the access-controlled identity artefact does.
#[derive(Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
enum JournalEntry {
    Scheduled {
        at: Timestamp,
        schedule: Schedule,
        court: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contact: Option<HearingContact>,
    },
    Event {
        at: Timestamp,
        event: Event,
    },
    Invite {
        digest: Sha256,
        invite: InviteId,
        expires_at: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<DisplayName>,
    },
    Credential {
        digest: Sha256,
        participant: ParticipantId,
    },
    Member {
        participant: ParticipantId,
        slot: usize,
    },
    Segment {
        segment: SegmentView,
    },
    Minutes {
        artefact: ArtefactId,
    },
    /// The seed of the hearing's altered voice (`crate::masking`): private, like the rest of the journal.
    Voice {
        seed: u64,
    },
    /// A masked copy of a protected participant's segment is in custody, its derivation on the record.
    MaskedCopy {
        copy: MaskedCopyView,
    },
    /// The detail document of a refused step, whose digest is in the ledger.
    Refused {
        detail: String,
    },
}

/// Texts to show to someone once their new connection is attached: which words, named as the hearing recorded
/// them presented.
type HeldTexts = Vec<(Wording, TextShown)>;

struct Person {
    slot: usize,
    /// The number of the connection they are on now (a WebSocket, or a WHIP session).
    connection: Option<u64>,
    /// Where their room messages go (none for a WHIP publisher).
    outbox: Option<Outbox>,
    /// The language their page speaks, as it said when it entered: the rights notice's and the oath's, unless the
    /// judge chooses another.
    language: Option<LanguageHint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentView {
    pub index: u64,
    pub participant: ParticipantId,
    pub artefact: ArtefactId,
    pub sha256: Sha256,
    pub ledger_index: u64,
}

/// A masked copy of one recorded segment of a protected participant, for disclosure or publication: a new artefact
/// made from the sealed original, its derivation a custody record (`derivative_made`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaskedCopyView {
    pub participant: ParticipantId,
    /// The sealed original segment.
    pub source: ArtefactId,
    pub artefact: ArtefactId,
    pub sha256: Sha256,
    pub ledger_index: u64,
    pub summary: crate::masking::MaskedCopySummary,
}

/// A hearing as the console shows it ([`LiveHearing::view`]): to the court, its invites, the names on them and
/// who is where; to anyone else in the case, only which roles take part ([`SeenAs`]).
#[derive(Debug, Serialize)]
pub struct HearingView {
    pub id: HearingId,
    pub case: CaseId,
    pub phase: Phase,
    pub scheduled_for: Timestamp,
    /// Typed by the clerk: `Debug` withholds it.
    pub place: Withheld<Label>,
    /// Whom participants call if their link fails: for the court only, `null` for everyone else or if none.
    pub contact: Option<HearingContact>,
    pub recording: bool,
    /// For the court only; empty for everyone else.
    pub invites: Vec<InviteView>,
    pub participants: Vec<ListedParticipant>,
    pub segments: Vec<SegmentView>,
    pub minutes_artefact: Option<ArtefactId>,
    pub masked_copies: Vec<MaskedCopyView>,
}

/// An invite, as the court sees it in the console.
#[derive(Debug, Serialize)]
pub struct InviteView {
    pub id: InviteId,
    pub role: Option<HearingRole>,
    pub name: Option<DisplayName>,
    pub state: InviteState,
    pub expires_at: Timestamp,
    /// The protective order in force for the invite's witness, or `null`.
    pub protection: Option<Withheld<ProtectiveMeasures>>,
}

/// Someone in a hearing, as the console lists them.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ListedParticipant {
    /// To the court: as the room lists them, by the name on their invite.
    ToTheCourt(ParticipantView),
    /// To everyone else in the case: only their role.
    ToAMember { id: ParticipantId, role: Option<HearingRole> },
}

/// What a hearing put into custody ([`LiveHearing::output`]).
#[derive(Debug, Clone)]
pub struct HearingOutput {
    pub segments: Vec<ArtefactId>,
    pub minutes: ArtefactId,
    pub identity_documents: Vec<Sha256>,
}

impl HearingOutput {
    /// Whether an artefact of the hearing's case is part of this hearing's output.
    pub fn holds(&self, id: &str, sha256: &str) -> bool {
        self.minutes.as_str() == id
            || self.segments.iter().any(|segment| segment.as_str() == id)
            || self.identity_documents.iter().any(|digest| digest.to_hex() == sha256)
    }
}

/// What a clerk sends to schedule a hearing. `Debug` withholds the place, which the clerk typed (and the contact).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    pub scheduled_for: Timestamp,
    pub place: Label,
    #[serde(default = "yes")]
    pub identity_check_before_oath: bool,
    /// Whom participants call or write to if their link fails (the court registry's phone or e-mail); optional.
    #[serde(default)]
    pub contact: Option<HearingContact>,
}

impl std::fmt::Debug for ScheduleRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { scheduled_for, place: _, identity_check_before_oath, contact } = self;
        f.debug_struct("ScheduleRequest")
            .field("scheduled_for", scheduled_for)
            .field("place", &Withheld(()))
            .field("identity_check_before_oath", identity_check_before_oath)
            .field("contact", contact)
            .finish()
    }
}

fn yes() -> bool {
    true
}

/// What a clerk sends to invite someone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    pub role: HearingRole,
    /// The person's name, for the others in the room to tell them apart; optional.
    #[serde(default)]
    pub display_name: Option<DisplayName>,
    /// The person's language (an ISO 639-1 code such as `ar`), for their page to speak it from the start: carried
    /// in the link's fragment, never stored.
    #[serde(default)]
    pub language: Option<LanguageHint>,
    /// How long the invite may be used: from [`INVITE_VALIDITY`]'s least to its most.
    #[serde(default = "a_day")]
    pub expires_in_seconds: i64,
    #[serde(default)]
    pub admit_on_join: bool,
}

fn a_day() -> i64 {
    86_400
}

/// How long an invite may be valid, in seconds: five minutes to thirty days.
pub const INVITE_VALIDITY: std::ops::RangeInclusive<i64> = 300..=30 * 86_400;

/// An invite just issued: its secret is shown this once.
#[derive(Serialize)]
pub struct IssuedInvite {
    pub invite: InviteId,
    pub role: HearingRole,
    pub expires_at: Timestamp,
    pub secret: String,
    pub link: String,
}

impl std::fmt::Debug for IssuedInvite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret lets its holder into the hearing; never show it.
        f.debug_struct("IssuedInvite").field("invite", &self.invite).field("role", &self.role).finish_non_exhaustive()
    }
}

/// Someone in the room: who they are to the hearing, and the credential to come back with.
#[derive(Debug)]
pub struct Entered {
    pub hearing: Arc<LiveHearing>,
    pub participant: ParticipantId,
    pub connection: u64,
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn id<T, E: std::error::Error + Send + Sync + 'static>(made: Result<T, E>) -> Result<T, GatewayError> {
    made.map_err(|e| GatewayError::internal("making an id", e))
}

fn zone(place: Place) -> Zone {
    match place {
        Place::MainRoom => Some(0),
        Place::Consultation(consultation) => Some(u64::from(consultation.number())),
        Place::Lobby | Place::Away => None,
    }
}

impl Hearings {
    pub fn new(
        gateway: Gateway,
        media: Arc<dyn MediaPlanes>,
        ice_servers: Arc<IceServers>,
        texts: Arc<CourtTexts>,
        recordings_dir: PathBuf,
        quarantine_dir: PathBuf,
        mask_program: PathBuf,
    ) -> Self {
        let room_entries = gateway.quotas().room_entries_per_minute;
        let console_steps = gateway.quotas().console_steps_per_minute;
        // Kept for every gateway on the catalog: console steps make records in the one log, and a secret's
        // entries and a guesser's failures would otherwise get a budget per gateway. A room's steps are taken
        // in the gateway that holds its hearing, and stay in its memory.
        let budgets = gateway.budgets().clone();
        let node = new_id("node");
        Hearings {
            gateway,
            media,
            ice_servers,
            texts,
            recordings_dir,
            quarantine_dir,
            live: Mutex::default(),
            secrets: Mutex::default(),
            connections: AtomicU64::new(0),
            console_steps: Budget::new(console_steps.saturating_mul(2), console_steps)
                .kept_in("hearing_console_steps", &budgets),
            joins_per_secret: Budget::new(room_entries, room_entries).kept_in("room_entries", &budgets),
            failed_joins_per_peer: Budget::new(FAILED_JOINS_PER_PEER.0, FAILED_JOINS_PER_PEER.1)
                .kept_in("room_entries_failed", &budgets),
            whip_turn: tokio::sync::Mutex::const_new(()),
            mask_program,
            hosting: custodia_catalog::DutyHolder::new(custodia_catalog::Duty::HEARINGS, &node, "hosts the hearings"),
            node,
            unrestorable: Mutex::default(),
            others_hold: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// This gateway process's id in hearing leases.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<HearingId, Arc<LiveHearing>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember_secret(&self, digest: Sha256, hearing: &HearingId) {
        self.secrets.lock().unwrap_or_else(|p| p.into_inner()).insert(digest, hearing.clone());
    }

    fn by_secret(&self, secret: &str) -> Option<(Sha256, Arc<LiveHearing>)> {
        let digest = Sha256::of(secret.as_bytes());
        let hearing = self.secrets.lock().unwrap_or_else(|p| p.into_inner()).get(&digest)?.clone();
        Some((digest, self.live().get(&hearing)?.clone()))
    }

    /// The caller as a member of `case` whose role and token scope permit `action`; a refusal is recorded like
    /// every other. Every console step needs [`Action::RunHearings`] (a token, the `manage` scope); seeing the
    /// case's hearings needs only [`Action::ViewCase`].
    async fn member(&self, caller: &Principal, case: &CaseId, action: Action) -> Result<CaseMember, GatewayError> {
        if matches!(action, Action::RunHearings | Action::OrderProtection) {
            self.console_steps.take(caller.account_id()).await.map_err(|wait| GatewayError::TooManyAttempts {
                what: "hearing console steps",
                retry_after_seconds: retry_after_seconds(wait),
            })?;
        }
        let role = self.gateway.authorize(caller, case, action).await?;
        Ok(CaseMember { actor: caller.actor(), role })
    }

    /// A hearing of `case` the caller may see.
    pub async fn find(
        &self,
        caller: &Principal,
        case: &CaseId,
        hearing: &str,
    ) -> Result<Arc<LiveHearing>, GatewayError> {
        self.member(caller, case, Action::ViewCase).await?;
        self.of_case_by_id(case, hearing).await
    }

    /// The judge's protective order for the witness `invite` is for, made, changed or lifted (`measures: None`)
    /// from the console: on the record, and in force in the room at once. The hearing, to show the judge.
    pub async fn protect(
        &self,
        caller: &Principal,
        case: &CaseId,
        hearing: &str,
        invite: InviteId,
        measures: Option<ProtectiveMeasures>,
    ) -> Result<Arc<LiveHearing>, GatewayError> {
        if let Some(c) =
            measures.as_ref().and_then(|m| custodia_service::gateway::disguising_character(m.pseudonym.as_str()))
        {
            let reason = format!("the pseudonym holds the invisible format character U+{:04X}", u32::from(c));
            return Err(GatewayError::BadInput { field: "pseudonym", reason });
        }
        let by = self.member(caller, case, Action::OrderProtection).await?;
        let live = self.of_case_by_id(case, hearing).await?;
        {
            let mut state = live.state.lock().await;
            live.apply(&mut state, Event::OrderProtection { by, invite, measures }).await?;
        }
        Ok(live)
    }

    /// Masked copies of every recorded segment of the hearing's protected participants (those an order masked:
    /// [`Hearing::recording_privileges`]), for disclosure or publication: each made from the sealed original in a
    /// child process (`crate::masking::mask_segment`: the mosaic and the hearing's own altered voice), taken into
    /// custody as the hearing's output, with a `derivative_made` record naming its source. Once the hearing has
    /// ended and its minutes are in custody; copies already made are not made again. Returns every copy.
    pub async fn masked_copies(
        &self,
        caller: &Principal,
        case: &CaseId,
        hearing: &str,
    ) -> Result<Vec<MaskedCopyView>, GatewayError> {
        self.member(caller, case, Action::RunHearings).await?;
        let live = self.of_case_by_id(case, hearing).await?;
        // One request at a time per hearing: the lock is held while the copies are made.
        let _turn = live.masking_turn.lock().await;
        let wanted: Vec<SegmentView> = {
            let state = live.state.lock().await;
            if state.minutes_artefact.is_none() {
                return Err(GatewayError::Conflict(format!(
                    "hearing {} has no signed minutes in custody yet: masked copies are made once it has ended and \
                     its recordings are sealed",
                    live.id
                )));
            }
            state
                .segments
                .iter()
                .filter(|segment| state.machine.recording_privileges(&segment.participant).is_some())
                .filter(|segment| !state.masked_copies.contains_key(&segment.artefact))
                .cloned()
                .collect()
        };
        for segment in wanted {
            let copy = live.mask_copy(caller, &segment).await?;
            let mut state = live.state.lock().await;
            live.journal(&mut state, &JournalEntry::MaskedCopy { copy: copy.clone() }).await?;
            state.masked_copies.insert(segment.artefact.clone(), copy);
        }
        let state = live.state.lock().await;
        Ok(state.masked_copies.values().cloned().collect())
    }

    /// A hearing of `case` the caller may run from the console, and the caller as its court.
    pub async fn find_to_run(
        &self,
        caller: &Principal,
        case: &CaseId,
        hearing: &str,
    ) -> Result<(Arc<LiveHearing>, CaseMember), GatewayError> {
        let by = self.member(caller, case, Action::RunHearings).await?;
        Ok((self.of_case_by_id(case, hearing).await?, by))
    }

    /// A hearing of `case` this gateway holds. One that another gateway holds (or held, and another is about to
    /// take over) is not started here a second time: the answer is 503 with `Retry-After`, so that the caller
    /// tries again and the load balancer finds the holder.
    async fn of_case_by_id(&self, case: &CaseId, hearing: &str) -> Result<Arc<LiveHearing>, GatewayError> {
        let found = HearingId::new(hearing).ok().and_then(|hearing| self.live().get(&hearing).cloned());
        if let Some(live) = found {
            return if live.case == *case {
                Ok(live)
            } else {
                Err(GatewayError::NotFound(format!("no hearing {hearing} in this case")))
            };
        }
        match self.gateway.catalog().hearing_lease(hearing).await? {
            Some(lease) if lease.node != self.node => Err(GatewayError::Unavailable {
                what: custodia_service::gateway::SERVED_ELSEWHERE,
                source: Box::new(HeldElsewhere { hearing: hearing.to_owned() }),
            }),
            _ => Err(GatewayError::NotFound(format!("no hearing {hearing} in this case"))),
        }
    }

    pub async fn schedule(
        &self,
        caller: &Principal,
        case: &CaseId,
        request: ScheduleRequest,
    ) -> Result<Arc<LiveHearing>, GatewayError> {
        let by = self.member(caller, case, Action::RunHearings).await?;
        // A hearing lives where the load balancer sends its participants: on the gateway that hosts the hearings.
        if !self.hosts_hearings() {
            return Err(GatewayError::Unavailable { what: SCHEDULED_BY_THE_HOST, source: Box::new(HostedElsewhere) });
        }
        // Refused up front if its output could not enter custody: the scheduler's role and token must allow
        // uploading, and the recordings must have somewhere to wait.
        self.gateway.authorize(caller, case, Action::UploadArtefact).await?;
        if let Some(c) = custodia_service::gateway::disguising_character(request.place.as_str()) {
            let reason = format!("the place holds the invisible format character U+{:04X}", u32::from(c));
            return Err(GatewayError::BadInput { field: "place", reason });
        }
        let hearing = id(HearingId::new(new_id("h")))?;
        // The lease first: the hearing is this gateway's before anything of it is journalled.
        let now = lease_now();
        let epoch = self
            .gateway
            .catalog()
            .take_hearing_lease(hearing.as_str(), &self.node, now, lease_until(now))
            .await?
            .ok_or_else(|| GatewayError::internal_message("a new hearing's lease is held already"))?;
        let fence = custodia_catalog::HearingFence { hearing_id: hearing.to_string(), node: self.node.clone(), epoch };
        let dir = self.recordings_dir.join(case.as_str()).join(hearing.as_str());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|err| GatewayError::internal("the hearing's recordings have nowhere to wait", err))?;
        let schedule = Schedule {
            hearing: hearing.clone(),
            case: case.clone(),
            by,
            scheduled_for: request.scheduled_for,
            place: request.place,
            rules: Rules { identity_check_before_oath: request.identity_check_before_oath, ..Rules::default() },
        };
        let at = self.gateway.now();
        let (machine, effects) = match Hearing::schedule(at, schedule.clone()) {
            Ok(scheduled) => scheduled,
            Err(refusal) => {
                if let Some((step, detail)) = step_refusal(case, &hearing, at, &refusal)
                    && let (_, Some(over_budget)) = self.gateway.refuse_step(step, Sha256::of(&detail)).await?
                {
                    return Err(over_budget);
                }
                return Err(RoomError::from(refusal).into());
            }
        };
        // The court's identity is the account, bound now; the token it used (and its scopes and expiry) is not.
        let court = caller.signed_in();
        let live = self.hearing(court, machine, fence, lease_until(now));
        {
            let mut state = live.state.lock().await;
            live.carry_out(&mut state, effects, None).await.map_err(|not| not.error)?;
            let court = caller.account_id().to_owned();
            let contact = request.contact;
            live.journal(&mut state, &JournalEntry::Scheduled { at, schedule, court, contact: contact.clone() })
                .await?;
            live.journal(&mut state, &JournalEntry::Voice { seed: live.maskers.voice_seed() }).await?;
            state.contact = contact;
        }
        self.live().insert(hearing.clone(), live.clone());
        tracing::info!(case = %case, hearing = %hearing, "hearing scheduled");
        Ok(live)
    }

    /// A hearing's adapter around its state machine, with its room; not yet listed.
    fn hearing(
        &self,
        court: Principal,
        machine: Hearing,
        fence: custodia_catalog::HearingFence,
        lease_until: i64,
    ) -> Arc<LiveHearing> {
        let (id, case) = (machine.id().clone(), machine.case().clone());
        let dir = self.recordings_dir.join(case.as_str()).join(id.as_str());
        let maskers = Arc::new(crate::masking::Maskers::new(self.mask_program.clone()));
        let label = id.to_string();
        let live = Arc::new_cyclic(|weak: &Weak<LiveHearing>| {
            let recorders = Arc::new(SegmentsIntoCustody { hearing: weak.clone(), dir, runs: AtomicU32::new(0) });
            LiveHearing {
                quarantine_dir: crate::quarantine::hearing_dir(&self.quarantine_dir, &case, &id),
                id,
                case,
                court,
                gateway: self.gateway.fenced(fence.clone()),
                texts: self.texts.clone(),
                room: self.media.open(&label, RECEIVE_SLOTS, recorders, maskers.clone()),
                maskers,
                state: tokio::sync::Mutex::new(HearingState {
                    machine,
                    invites: BTreeMap::new(),
                    names: BTreeMap::new(),
                    contact: None,
                    invite_secrets: HashMap::new(),
                    credentials: HashMap::new(),
                    people: BTreeMap::new(),
                    next_slot: 0,
                    segments: Vec::new(),
                    minutes_artefact: None,
                    masked_copies: BTreeMap::new(),
                    finishing: false,
                    journal: 0,
                }),
                steps: Budget::new(ROOM_STEPS.0, ROOM_STEPS.1),
                masking_turn: tokio::sync::Mutex::const_new(()),
                fence,
                lease_until: std::sync::atomic::AtomicI64::new(lease_until),
                lost: std::sync::atomic::AtomicBool::new(false),
            }
        });
        tokio::spawn(watch_media(Arc::downgrade(&live)));
        live
    }

    /// At start-up: brings back, from their journals, every hearing nobody holds now ([`Self::take_over`]): those
    /// this gateway held before it stopped, unless another gateway took them over meanwhile.
    ///
    /// On an embedded (SQLite) catalog, which one gateway at a time uses, every lease another node left is that
    /// dead process's: its hearings are taken at once, without waiting for their leases to expire.
    pub async fn restore(&self) -> anyhow::Result<usize> {
        let expired_by = if self.gateway.catalog().is_embedded() { i64::MAX } else { lease_now() };
        Ok(self.take_over_expired_by(expired_by).await?)
    }

    /// Takes over every hearing that has a journal and whose lease has expired (its gateway died
    /// or stopped), or that never had one: takes its lease (epoch + 1) and replays its journal, as at start-up.
    /// Whoever was connected has lost their connection (recorded as such); they come back with their credentials,
    /// through the load balancer, and a hearing that was recording records them again. A hearing that ended
    /// before its minutes were signed gets them now. The number taken over.
    pub async fn take_over(&self) -> Result<usize, custodia_catalog::CatalogError> {
        self.take_over_expired_by(lease_now()).await
    }

    /// [`Self::take_over`], taking leases that expire by `expired_by` (ms since the Unix epoch).
    async fn take_over_expired_by(&self, expired_by: i64) -> Result<usize, custodia_catalog::CatalogError> {
        let catalog = &self.gateway.catalog();
        let mut restored = 0;
        for hearing in catalog.unheld_hearings(expired_by).await? {
            let held_here = HearingId::new(&hearing).is_ok_and(|id| self.live().contains_key(&id));
            if held_here || self.unrestorable.lock().unwrap_or_else(|p| p.into_inner()).contains(&hearing) {
                // One of ours whose renewal is late is renewed or given up by [`Self::renew_leases`].
                continue;
            }
            let now = lease_now();
            let taken = catalog.take_hearing_lease(&hearing, &self.node, expired_by.max(now), lease_until(now)).await?;
            let Some(epoch) = taken else {
                continue; // Another gateway was quicker.
            };
            let fence = custodia_catalog::HearingFence { hearing_id: hearing.clone(), node: self.node.clone(), epoch };
            let entries = catalog.hearing_journal(&hearing).await?;
            match self.replay(&entries, fence, lease_until(now)).await {
                Ok(live) => {
                    tracing::info!(hearing = %live.id, epoch, "hearing taken from its journal");
                    self.live().insert(live.id.clone(), live);
                    restored += 1;
                }
                Err(e) => {
                    tracing::error!(hearing = %hearing, error = format!("{e:#}"), "could not restore a hearing");
                    self.unrestorable.lock().unwrap_or_else(|p| p.into_inner()).insert(hearing);
                }
            }
        }
        Ok(restored)
    }

    /// Renews the lease of every hearing this gateway holds. One whose lease another gateway has taken, or whose
    /// lease lapsed unrenewed (the database unreachable for [`LEASE_EXPIRY`]), is stopped here at once
    /// ([`Self::lose`]).
    pub async fn renew_leases(&self) {
        let held: Vec<Arc<LiveHearing>> = self.live().values().cloned().collect();
        for live in held {
            let now = lease_now();
            match self.gateway.catalog().renew_hearing_lease(&live.fence, lease_until(now)).await {
                Ok(true) => live.lease_until.store(lease_until(now), Ordering::Relaxed),
                Ok(false) => self.lose(&live, "another gateway took its lease").await,
                Err(e) if now >= live.lease_until.load(Ordering::Relaxed) => {
                    tracing::error!(hearing = %live.id, error = %Chain(&e), "a hearing's lease lapsed unrenewed");
                    self.lose(&live, "its lease lapsed unrenewed").await;
                }
                Err(e) => tracing::warn!(hearing = %live.id, error = %Chain(&e), "renewing a hearing's lease"),
            }
        }
    }

    /// Stops a hearing whose lease this gateway no longer holds, failing closed: it leaves the registry and its
    /// secrets are forgotten here, every participant's socket and peer connection is closed, recording stops
    /// (segments stay on this gateway's disk, not taken into custody), and nothing more of it is written: its
    /// records and journal entries are fenced by the lost epoch anyway.
    pub async fn lose(&self, live: &Arc<LiveHearing>, why: &'static str) {
        live.lost.store(true, Ordering::SeqCst);
        {
            let mut registry = self.live();
            if registry.get(&live.id).is_some_and(|listed| Arc::ptr_eq(listed, live)) {
                registry.remove(&live.id);
            }
        }
        self.secrets.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, hearing| *hearing != live.id);
        // Its participants' secrets are unknown here now, yet still good: until a look finds no hearing held
        // elsewhere (after this gateway's next takeover, should the hearing come back here), such a secret is
        // answered "served elsewhere", which a page tries again, not "invalid", which ends its tries.
        self.others_hold.store(true, Ordering::Release);
        tracing::warn!(hearing = %live.id, epoch = live.fence.epoch, why, "hearing lost its lease: stopped here");
        live.stop_here().await;
    }

    /// Looks whether another gateway holds a hearing's unexpired lease ([`EnterRefusal::ServedElsewhere`]).
    pub async fn look_elsewhere(&self) {
        match self.gateway.catalog().hearings_leased_elsewhere(&self.node, lease_now()).await {
            Ok(count) => self.others_hold.store(count > 0, Ordering::Release),
            Err(e) => tracing::warn!(error = %Chain(&e), "looking for hearings other gateways hold"),
        }
    }

    /// Whether this gateway hosts the hearings (as of its last [`Self::host`]): the one gateway on a database that
    /// says it is ready for hearings (`/readyz/hearings`), so that the load balancer sends every hearing's requests
    /// to it, the one that schedules them, and the one that takes over the hearings of a gateway that died. The duty
    /// is a lease renewed every [`LEASE_RENEWAL`]; another gateway takes it over once its holder has not renewed it
    /// for [`custodia_catalog::DUTY_EXPIRY`] (dead, frozen or cut off), and keeps it when the old holder comes back,
    /// which then hands over what it still held ([`Self::host`]). A gateway on SQLite is alone, and hosts them.
    pub fn hosts_hearings(&self) -> bool {
        self.hosting.holds()
    }

    /// Takes the duty of hosting the hearings if no other gateway holds it, or renews it; returns whether this
    /// gateway hosts them ([`Self::hosts_hearings`]). A gateway that does not, and holds hearings (it lost the duty
    /// while frozen or cut off), hands them over: each is stopped here and its lease given up, so that the host,
    /// where the load balancer sends their participants, takes them over at its next look.
    pub async fn host(&self) -> bool {
        let hosts = self.hosting.keep(self.gateway.catalog()).await;
        if !hosts {
            let held: Vec<Arc<LiveHearing>> = self.live().values().cloned().collect();
            for live in held {
                self.lose(&live, "another gateway hosts the hearings").await;
                // Expired now, so that the host takes it over at once rather than when the lease would have run
                // out; a renewal that fails leaves it to expire by itself.
                if let Err(e) = self.gateway.catalog().renew_hearing_lease(&live.fence, 0).await {
                    tracing::warn!(hearing = %live.id, error = %Chain(&e), "giving up a hearing's lease");
                }
            }
        }
        hosts
    }

    /// Keeps this gateway's hearing leases ([`Self::renew_leases`]) and, while it hosts the hearings
    /// ([`Self::host`]), takes over hearings nobody holds ([`Self::take_over`]), every [`LEASE_RENEWAL`], for as
    /// long as the registry lives.
    pub fn keep_leases(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let hearings = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(LEASE_RENEWAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(hearings) = hearings.upgrade() else { return };
                hearings.renew_leases().await;
                if hearings.host().await {
                    match hearings.take_over().await {
                        Ok(0) => {}
                        Ok(count) => tracing::info!(count, "hearings taken over from another gateway"),
                        Err(e) => tracing::warn!(error = %Chain(&e), "looking for hearings to take over"),
                    }
                }
                hearings.look_elsewhere().await;
            }
        })
    }

    async fn replay(
        &self,
        entries: &[String],
        fence: custodia_catalog::HearingFence,
        lease_until: i64,
    ) -> anyhow::Result<Arc<LiveHearing>> {
        let mut entries = entries.iter().enumerate().map(|(number, text)| read_journal_entry(number, text));
        let Some(JournalEntry::Scheduled { at, schedule, court, contact }) = entries.next().transpose()? else {
            anyhow::bail!("the journal does not start with the schedule");
        };
        let account =
            self.gateway.catalog().account(&court).await?.ok_or_else(|| anyhow::anyhow!("no account {court}"))?;
        let (machine, _) = Hearing::schedule(at, schedule)?;
        let live = self.hearing(Principal::new(&account, Channel::Session), machine, fence, lease_until);
        let mut state = live.state.lock().await;
        state.journal = 1;
        state.contact = contact;
        for entry in entries {
            state.journal += 1;
            match entry? {
                JournalEntry::Event { at, event } => {
                    // Its effects were carried out before the restart.
                    if let Err(e) = state.machine.handle(at, event) {
                        tracing::warn!(hearing = %live.id, error = %Chain(&e), "a journalled event no longer applies");
                    }
                }
                JournalEntry::Invite { digest, invite, expires_at, name } => {
                    state.invites.insert(invite.clone(), expires_at);
                    if let Some(name) = name {
                        state.names.insert(invite.clone(), name);
                    }
                    state.invite_secrets.insert(digest, invite);
                    self.remember_secret(digest, &live.id);
                }
                JournalEntry::Credential { digest, participant } => {
                    state.credentials.insert(digest, participant);
                    self.remember_secret(digest, &live.id);
                }
                JournalEntry::Member { participant, slot } => {
                    live.room.add_member(participant.as_str(), slot);
                    state.people.insert(participant, Person { slot, connection: None, outbox: None, language: None });
                    state.next_slot = state.next_slot.max(slot + 1);
                }
                JournalEntry::Segment { segment } => state.segments.push(segment),
                JournalEntry::Minutes { artefact } => state.minutes_artefact = Some(artefact),
                JournalEntry::Voice { seed } => live.maskers.set_voice_seed(seed),
                JournalEntry::MaskedCopy { copy } => {
                    state.masked_copies.insert(copy.source.clone(), copy);
                }
                JournalEntry::Refused { .. } => {}
                JournalEntry::Scheduled { .. } => anyhow::bail!("a second schedule in the journal"),
            }
        }
        let people: Vec<ParticipantId> = state.people.keys().cloned().collect();
        for participant in &people {
            live.room.set_muted(participant.as_str(), state.machine.is_muted(participant));
            let protection = state.machine.media_protection(participant).map(room_protection);
            live.room.set_protection(participant.as_str(), protection);
            let hears = state.machine.hears_audio_from(participant);
            live.room.set_audio_from(participant.as_str(), hears.as_ref().map(room_audio));
        }
        if state.machine.phase() == Phase::Ended {
            if state.minutes_artefact.is_none() {
                state.finishing = true;
                tokio::spawn(live.clone().finish());
            }
        } else {
            for participant in people {
                if state.machine.place_of(&participant).is_some_and(|place| place != Place::Away) {
                    let lost = Event::Leave { participant, cause: LeaveCause::ConnectionLost };
                    live.apply(&mut state, lost).await?;
                }
            }
        }
        tracing::info!(hearing = %live.id, phase = %state.machine.phase(), "hearing restored");
        drop(state);
        Ok(live)
    }

    /// A WHIP publisher on its way in with `secret`: its hearing, within the budgets of attempts per peer and per
    /// secret, if the secret could let it in now. Nothing of the hearing changes yet: the publisher's offer is
    /// negotiated first, and only one the media engine takes enters ([`Self::enter_publisher`]).
    pub async fn whip_entry(
        &self,
        secret: &str,
        peer: Option<custodia_service::network::ClientNetwork>,
    ) -> Result<WhipEntry, EnterRefusal> {
        let (digest, live) = self.attempt(secret, peer).await?;
        let issuer = {
            let state = live.state.lock().await;
            entry(&state, &digest, live.gateway.now()).map(|entry| {
                let invite = match &entry {
                    Entry::Back(participant) => state.machine.invite_of(participant),
                    Entry::New(invite) => Some(invite),
                };
                invite.and_then(|invite| state.machine.invite_issuer(invite)).cloned()
            })
        };
        let issuer = match issuer {
            Ok(issuer) => issuer,
            Err(refusal) => return Err(self.counted(peer, refusal).await),
        };
        Ok(WhipEntry { digest, live, secret: secret.to_owned(), issuer })
    }

    /// Why one more WHIP publisher entering by `entry` would pass a cap, if it would: `caps.per_case`
    /// publishers at once in the live hearings of its case, or `caps.per_account` publishers at once, in all live
    /// hearings, whose invites one case member issued. A publisher already in (sending a new offer) takes no new
    /// place.
    pub async fn whip_full(&self, entry: &WhipEntry, caps: WhipCaps) -> Option<String> {
        {
            let state = entry.live.state.lock().await;
            if let Some(participant) = state.credentials.get(&entry.digest)
                && state.machine.place_of(participant).is_some_and(|place| place != Place::Away)
            {
                return None;
            }
        }
        let hearings: Vec<Arc<LiveHearing>> = self.live().values().cloned().collect();
        let (mut in_case, mut by_issuer) = (0, 0);
        for hearing in hearings {
            let (all, issued) = hearing.whip_publishers(entry.issuer.as_ref()).await;
            if hearing.case == entry.live.case {
                in_case += all;
            }
            by_issuer += issued;
        }
        if in_case >= caps.per_case {
            return Some(format!("this case's hearings have {} WHIP publishers already; end one first", caps.per_case));
        }
        if entry.issuer.is_some() && by_issuer >= caps.per_account {
            return Some(format!(
                "the invites of the one who invited this publisher already have {} WHIP publishers in; end one first",
                caps.per_account
            ));
        }
        None
    }

    /// Lets a WHIP publisher in ([`Self::enter`], with no outbox) unless that would pass a cap
    /// ([`Self::whip_full`]). Publishers enter one at a time, so that publishers at once cannot pass a cap
    /// together; one turned away leaves nothing in the hearing.
    pub async fn enter_publisher(&self, entry: WhipEntry, caps: WhipCaps) -> Result<Entered, WhipRefusal> {
        let _turn = self.whip_turn.lock().await;
        if let Some(full) = self.whip_full(&entry, caps).await {
            return Err(WhipRefusal::Full(full));
        }
        self.enter_now(&entry.digest, &entry.live, &entry.secret, None).await.map_err(WhipRefusal::Refused)
    }

    /// Each hearing held here: its phase and how many of its participants are connected now (counts only, for
    /// `/metrics`).
    pub async fn census(&self) -> Vec<(Phase, usize)> {
        let live: Vec<Arc<LiveHearing>> = self.live().values().cloned().collect();
        let mut census = Vec::with_capacity(live.len());
        for hearing in live {
            let state = hearing.state.lock().await;
            census.push((state.machine.phase(), state.people.values().filter(|p| p.connection.is_some()).count()));
        }
        census
    }

    pub fn of_case(&self, case: &CaseId) -> Vec<Arc<LiveHearing>> {
        let mut hearings: Vec<_> = self.live().values().filter(|live| live.case == *case).cloned().collect();
        hearings.sort_by(|a, b| b.id.as_str().cmp(a.id.as_str()));
        hearings
    }

    /// Issues an invite, for `by` as [`Self::find_to_run`] found them.
    pub async fn invite(
        &self,
        by: CaseMember,
        live: &Arc<LiveHearing>,
        request: InviteRequest,
    ) -> Result<IssuedInvite, GatewayError> {
        if !INVITE_VALIDITY.contains(&request.expires_in_seconds) {
            return Err(GatewayError::BadInput {
                field: "expires_in_seconds",
                reason: format!(
                    "an invite is valid for {} seconds (5 minutes) to {} seconds (30 days), not {}",
                    INVITE_VALIDITY.start(),
                    INVITE_VALIDITY.end(),
                    request.expires_in_seconds
                ),
            });
        }
        let now = self.gateway.now();
        let expires_at = now
            .checked_add(jiff::SignedDuration::from_secs(request.expires_in_seconds))
            .map_err(|_| GatewayError::BadInput { field: "expires_in_seconds", reason: "too far ahead".into() })?;
        let admission = if request.admit_on_join { Admission::OnJoin } else { Admission::Lobby };
        let invite = Invite { id: id(InviteId::new(new_id("inv")))?, role: request.role, expires_at, admission };
        let secret = random_secret();
        let digest = Sha256::of(secret.as_bytes());
        let mut state = live.state.lock().await;
        live.apply(&mut state, Event::IssueInvite { by, invite: invite.clone() }).await?;
        let entry =
            JournalEntry::Invite { digest, invite: invite.id.clone(), expires_at, name: request.display_name.clone() };
        live.journal(&mut state, &entry).await?;
        state.invites.insert(invite.id.clone(), expires_at);
        if let Some(name) = request.display_name {
            state.names.insert(invite.id.clone(), name);
        }
        state.invite_secrets.insert(digest, invite.id.clone());
        self.remember_secret(digest, &live.id);
        // Each role's own page: the court's room controls are in the console (signed in), everyone else's on /join.
        let link = match (invite.role.is_court(), &request.language) {
            (true, _) => format!("/?room#{secret}"),
            (false, None) => format!("/join#{secret}"),
            (false, Some(language)) => format!("/join#lang={}&invite={secret}", language.as_str()),
        };
        Ok(IssuedInvite { invite: invite.id, role: invite.role, expires_at, secret, link })
    }

    /// A console step on a hearing: revoke an invite, open the lobby, close the hearing; for `by` as
    /// [`Self::find_to_run`] found them.
    pub async fn console(
        &self,
        by: CaseMember,
        live: &Arc<LiveHearing>,
        step: ConsoleStep,
    ) -> Result<(), GatewayError> {
        let event = match step {
            ConsoleStep::Revoke(invite) => Event::RevokeInvite { by, invite },
            ConsoleStep::Open => Event::OpenLobby { by },
            ConsoleStep::Close => Event::Close { by },
        };
        let mut state = live.state.lock().await;
        live.apply(&mut state, event).await?;
        Ok(())
    }

    /// Someone opens the room: with an invite's secret, they join (into the lobby, or admitted for an
    /// admit-on-join invite); with a participant's credential, the same participant is back on a new connection.
    /// `outbox`, if any, receives their `welcome` and every `state`. A WHIP publisher has no outbox; its invite's
    /// secret becomes its credential too, since WHIP has no way to hand it a new one.
    ///
    /// A secret works only while it can still let someone in: not once the hearing has ended, nor an invite that
    /// was used, revoked or has expired, nor the credential of someone removed. Those, and attempts beyond the
    /// budgets per secret and per peer (`peer`, the client's address, when known), are turned away here, before
    /// the hearing's rules, so they change nothing and leave nothing on the record. A join that fails leaves no
    /// participant behind, in the hearing or in its room.
    pub async fn enter(
        &self,
        secret: &str,
        outbox: Option<Outbox>,
        peer: Option<custodia_service::network::ClientNetwork>,
    ) -> Result<Entered, EnterRefusal> {
        let (digest, live) = self.attempt(secret, peer).await?;
        match self.enter_now(&digest, &live, secret, outbox).await {
            Ok(entered) => Ok(entered),
            Err(refusal) => Err(self.counted(peer, refusal).await),
        }
    }

    /// The hearing `secret` belongs to, within the budget of attempts per secret. A secret the gateway does not
    /// know is a failure counted against the peer's budget ([`Self::counted`]); a known one is never held to its
    /// peer's failures, so made-up secrets sent from a court's address cannot lock the court's valid secret out
    /// (a 128-bit secret cannot be guessed: the budget bounds what a guesser costs and learns, not its luck).
    async fn attempt(
        &self,
        secret: &str,
        peer: Option<custodia_service::network::ClientNetwork>,
    ) -> Result<(Sha256, Arc<LiveHearing>), EnterRefusal> {
        let Some((digest, live)) = self.by_secret(secret) else {
            let unknown = if self.others_hold.load(Ordering::Acquire) {
                EnterRefusal::ServedElsewhere
            } else {
                EnterRefusal::Invalid
            };
            return Err(self.counted(peer, unknown).await);
        };
        self.joins_per_secret
            .take(&digest.to_hex())
            .await
            .map_err(|wait| EnterRefusal::TooManyAttempts { retry_after_seconds: retry_after_seconds(wait) })?;
        Ok((digest, live))
    }

    /// `refusal` of an attempt from `peer`, counted against the peer's budget of failed attempts when it is a
    /// failure (a secret unknown or spent): once that budget is spent, such failures are answered "too many
    /// attempts" instead, which no longer says whether a secret exists or how it was spent. A valid secret's
    /// entry is never counted, and never refused for it. Nor is "served elsewhere": no secret was checked here,
    /// and it says nothing of one, whereas the participants of a court behind one address, all trying again every
    /// few seconds while their hearing moves to another gateway, would spend the budget (shared with that gateway)
    /// that their own mistyped links need there.
    async fn counted(
        &self,
        peer: Option<custodia_service::network::ClientNetwork>,
        refusal: EnterRefusal,
    ) -> EnterRefusal {
        let failure = matches!(
            refusal,
            EnterRefusal::Invalid
                | EnterRefusal::Ended
                | EnterRefusal::Removed
                | EnterRefusal::Used
                | EnterRefusal::Revoked
                | EnterRefusal::Expired
        );
        let Some(peer) = peer.filter(|_| failure) else { return refusal };
        match self.failed_joins_per_peer.take(&peer.key()).await {
            Err(wait) => EnterRefusal::TooManyAttempts { retry_after_seconds: retry_after_seconds(wait) },
            Ok(()) => refusal,
        }
    }

    /// [`Self::enter`], past the budgets.
    async fn enter_now(
        &self,
        digest: &Sha256,
        live: &Arc<LiveHearing>,
        secret: &str,
        outbox: Option<Outbox>,
    ) -> Result<Entered, EnterRefusal> {
        const INVALID: EnterRefusal = EnterRefusal::Invalid;
        let digest = *digest;
        let mut state = live.state.lock().await;
        let mut held = HeldTexts::new();
        let (participant, credential) = match entry(&state, &digest, live.gateway.now())? {
            Entry::Back(participant) => {
                if state.machine.place_of(&participant).is_some_and(|place| place != Place::Away) {
                    // The old connection has not been noticed as lost yet: it is now.
                    let lost = Event::Leave { participant: participant.clone(), cause: LeaveCause::ConnectionLost };
                    live.apply(&mut state, lost).await?;
                }
                let back = Event::Reconnect { participant: participant.clone() };
                // The words still awaiting their step come back with the reconnection: shown after the welcome.
                held = live.apply_holding_texts(&mut state, back, Some(&participant)).await?;
                (participant, secret.to_owned())
            }
            Entry::New(invite) => {
                let participant = id(ParticipantId::new(new_id("p"))).map_err(EnterRefusal::from_gateway)?;
                let slot = state.next_slot;
                live.room.add_member(participant.as_str(), slot);
                state
                    .people
                    .insert(participant.clone(), Person { slot, connection: None, outbox: None, language: None });
                let joined = Event::Join { invite, participant: participant.clone() };
                if let Err(e) = live.apply(&mut state, joined).await {
                    state.people.remove(&participant);
                    live.room.remove_member(participant.as_str()).await;
                    return Err(e.into());
                }
                state.next_slot += 1;
                let member = JournalEntry::Member { participant: participant.clone(), slot };
                // The join is on the record and the invite used: what fails from here is final, not tried again.
                let recorded_in_part = |err| EnterRefusal::from(RoomError::PartlyDone(err));
                live.journal(&mut state, &member).await.map_err(recorded_in_part)?;
                let credential = random_secret();
                let mut credentials = vec![Sha256::of(credential.as_bytes())];
                if outbox.is_none() {
                    credentials.push(digest);
                }
                for digest in credentials {
                    let entry = JournalEntry::Credential { digest, participant: participant.clone() };
                    live.journal(&mut state, &entry).await.map_err(recorded_in_part)?;
                    state.credentials.insert(digest, participant.clone());
                    self.remember_secret(digest, &live.id);
                }
                tracing::info!(hearing = %live.id, participant = %participant, "joined");
                (participant, credential)
            }
        };
        let connection = self.connections.fetch_add(1, Ordering::Relaxed);
        let person = state.people.get_mut(&participant).ok_or(INVALID)?;
        if let Some(old) = person.outbox.take() {
            let _ = old.send(RoomMessage::Replaced);
        }
        person.connection = Some(connection);
        person.outbox = outbox.clone();
        if let Some(outbox) = outbox {
            let ice_servers = self.ice_servers.issue(live.gateway.now());
            let _ = outbox.send(live.welcome(&state, &participant, &credential, ice_servers));
        }
        for (wording, text) in held {
            live.show(&state, &participant, wording, &text);
        }
        live.broadcast(&state);
        drop(state);
        Ok(Entered { hearing: live.clone(), participant, connection })
    }

    /// The hearing and participant a credential (or a WHIP publisher's invite secret) belongs to.
    /// Like [`Self::enter`], a credential works only while its hearing has not ended and its holder was not
    /// removed.
    pub async fn by_credential(&self, credential: &str) -> Option<(Arc<LiveHearing>, ParticipantId)> {
        let (digest, live) = self.by_secret(credential)?;
        let state = live.state.lock().await;
        let participant = state.credentials.get(&digest).cloned()?;
        if state.machine.phase() == Phase::Ended || state.machine.is_removed(&participant) {
            return None;
        }
        drop(state);
        Some((live, participant))
    }

    /// Whether `secret` may have STUN/TURN servers: the credential of someone in a hearing that has not ended (a
    /// participant's, or a WHIP publisher's invite secret once it has published), or an invite that can let someone
    /// into an open hearing now (a WHIP publisher needs the servers before it makes its offer).
    pub async fn may_relay(&self, secret: &str) -> bool {
        if self.by_credential(secret).await.is_some() {
            return true;
        }
        let Some((digest, live)) = self.by_secret(secret) else { return false };
        let state = live.state.lock().await;
        let Some(invite) = state.invite_secrets.get(&digest) else { return false };
        !matches!(state.machine.phase(), Phase::Scheduled | Phase::Ended)
            && state.machine.invite_state(invite, live.gateway.now()) == Some(InviteState::Pending)
    }
}

/// What a secret would let in now: a participant back on a new connection (their credential), or someone new
/// (an invite).
enum Entry {
    Back(ParticipantId),
    New(InviteId),
}

/// Whether the secret whose digest is `digest` can let someone into the hearing at `now`, and whom. A secret works
/// only while it can: not once the hearing has ended, nor an invite that was used, revoked or has expired, nor the
/// credential of someone removed.
fn entry(state: &HearingState, digest: &Sha256, now: Timestamp) -> Result<Entry, EnterRefusal> {
    if state.machine.phase() == Phase::Ended {
        return Err(EnterRefusal::Ended);
    }
    if let Some(participant) = state.credentials.get(digest) {
        if state.machine.is_removed(participant) {
            return Err(EnterRefusal::Removed);
        }
        return Ok(Entry::Back(participant.clone()));
    }
    let invite = state.invite_secrets.get(digest).cloned().ok_or(EnterRefusal::Invalid)?;
    match state.machine.invite_state(&invite, now) {
        Some(InviteState::Pending) => {}
        Some(InviteState::Used) => return Err(EnterRefusal::Used),
        Some(InviteState::Revoked) => return Err(EnterRefusal::Revoked),
        Some(InviteState::Expired) | None => return Err(EnterRefusal::Expired),
    }
    if state.machine.phase() == Phase::Scheduled {
        return Err(EnterRefusal::NotOpen);
    }
    Ok(Entry::New(invite))
}

/// A WHIP publisher on its way in ([`Hearings::whip_entry`]): nothing of the hearing has changed for it yet.
pub struct WhipEntry {
    digest: Sha256,
    live: Arc<LiveHearing>,
    secret: String,
    /// Who issued the invite it comes in with.
    issuer: Option<custodia_core::ActorId>,
}

impl WhipEntry {
    /// The hearing it would enter.
    pub fn hearing(&self) -> &Arc<LiveHearing> {
        &self.live
    }
}

impl std::fmt::Debug for WhipEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipEntry").field("hearing", &self.live.id).finish_non_exhaustive()
    }
}

/// How many WHIP publishers may be in at once ([`custodia_service::budget::Quotas`]).
#[derive(Debug, Clone, Copy)]
pub struct WhipCaps {
    /// In the live hearings of one case.
    pub per_case: usize,
    /// With invites one case member issued, in all live hearings.
    pub per_account: usize,
}

/// Why a WHIP publisher was not let in.
#[derive(Debug)]
pub enum WhipRefusal {
    /// A cap on publishers at once: why.
    Full(String),
    Refused(EnterRefusal),
}

/// A refused step as the refusal windows know it ([`custodia_service::refusals::Refusal::Step`]: the case, the hearing, who
/// and the action, nothing the one who tried can vary), and its canonical detail document (with the rule, for the
/// record and the journal). `None` for what no one attempted.
fn step_refusal(
    case: &CaseId,
    hearing: &HearingId,
    at: Timestamp,
    refusal: &HearingError,
) -> Option<(custodia_service::refusals::Refusal, Vec<u8>)> {
    let action = refusal.action()?;
    let (record, detail) = refusal.refusal_record(at, hearing)?;
    let step = custodia_service::refusals::Refusal::Step {
        case: case.clone(),
        hearing: hearing.clone(),
        actor: record.actor,
        action,
    };
    Some((step, detail))
}

/// A step's effects not all carried out ([`LiveHearing::carry_out`]): why, and whether any was (a record appended
/// is durable, so the step happened at least in part).
struct NotCarriedOut {
    error: GatewayError,
    anything_done: bool,
}

/// Console steps on a hearing other than scheduling and inviting.
#[derive(Debug)]
pub enum ConsoleStep {
    Revoke(InviteId),
    Open,
    Close,
}

/// What a masked copy's derivation record commits to as its operation.
const MASKED_COPY_OPERATION: &str =
    "masked for disclosure: full-frame mosaic (VP8), voice altered (McAdams LPC warping and a pitch change)";

/// The seat in a hearing that a role in the case stands for, when there is one.
fn hearing_role_of(role: custodia_core::Role) -> Option<HearingRole> {
    use custodia_core::Role;
    match role {
        Role::Judge => Some(HearingRole::Judge),
        Role::Clerk => Some(HearingRole::Clerk),
        Role::Prosecutor => Some(HearingRole::Prosecutor),
        Role::Defence => Some(HearingRole::Defence),
        Role::Interpreter => Some(HearingRole::Interpreter),
        Role::Witness => Some(HearingRole::Witness),
        Role::RemoteSiteOfficer => Some(HearingRole::RemoteSiteOfficer),
        Role::Auditor => None,
    }
}

/// Participants as the room knows them: by their ids as member names.
fn room_members(participants: &BTreeSet<ParticipantId>) -> BTreeSet<String> {
    participants.iter().map(|participant| participant.as_str().to_owned()).collect()
}

/// The room's view of whose audio a participant hears, and whose ducked.
fn room_audio(heard: &HeardAudio) -> custodia_recorder::sfu::AudioFrom {
    custodia_recorder::sfu::AudioFrom { full: room_members(&heard.full), ducked: room_members(&heard.ducked) }
}

/// The room's view of a protective order: the members who get the original, by the names the room knows them by.
fn room_protection(protection: MediaProtection) -> custodia_recorder::sfu::Protection {
    custodia_recorder::sfu::Protection {
        mask_video: protection.mask_video,
        alter_voice: protection.alter_voice,
        original_to: room_members(&protection.original_to),
    }
}

/// What a participant may ask for in the room (docs/hearing-room.md). `Debug` shows only the step's name: an
/// identity check carries the officer's name.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RoomStep {
    Admit {
        participant: ParticipantId,
    },
    Remove {
        participant: ParticipantId,
    },
    Mute {
        participant: ParticipantId,
    },
    Unmute {
        participant: ParticipantId,
    },
    StartSession,
    StartRecording,
    StopRecording,
    StartConsultation {
        with: Vec<ParticipantId>,
    },
    EndConsultation {
        consultation: u32,
    },
    VerifyIdentity {
        person: ParticipantId,
        document: DocumentType,
        officer_name: String,
        site: Label,
    },
    /// The court's words of `wording` put on the person's screen (and the judge's), in `language` (by default
    /// their page's, else English), before the step they precede.
    PresentText {
        person: ParticipantId,
        wording: Wording,
        #[serde(default)]
        language: Option<LanguageHint>,
    },
    /// The rights notice has been given: the words presented last are the ones recorded.
    RightsNotice {
        person: ParticipantId,
    },
    /// The witness has sworn or affirmed, to the words presented last.
    Oath {
        witness: ParticipantId,
        form: OathForm,
        /// The court was warned that the witness's media has stopped, and goes on.
        #[serde(default)]
        despite_no_media: bool,
    },
    SwearInterpreter {
        interpreter: ParticipantId,
        languages: Label,
    },
    /// The court opens an interpretation channel into `language`, spoken by `interpreter`.
    OpenChannel {
        interpreter: ParticipantId,
        language: Label,
        mode: InterpretationMode,
    },
    CloseChannel {
        language: Label,
    },
    /// What this participant hears: the channel into `language`, or the floor (`null`).
    ChooseChannel {
        language: Option<Label>,
    },
    End,
    Leave,
}

impl std::fmt::Debug for RoomStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl RoomStep {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Admit { .. } => "admit",
            Self::Remove { .. } => "remove",
            Self::Mute { .. } => "mute",
            Self::Unmute { .. } => "unmute",
            Self::StartSession => "start_session",
            Self::StartRecording => "start_recording",
            Self::StopRecording => "stop_recording",
            Self::StartConsultation { .. } => "start_consultation",
            Self::EndConsultation { .. } => "end_consultation",
            Self::VerifyIdentity { .. } => "verify_identity",
            Self::PresentText { .. } => "present_text",
            Self::RightsNotice { .. } => "rights_notice",
            Self::Oath { .. } => "oath",
            Self::SwearInterpreter { .. } => "swear_interpreter",
            Self::OpenChannel { .. } => "open_channel",
            Self::CloseChannel { .. } => "close_channel",
            Self::ChooseChannel { .. } => "choose_channel",
            Self::End => "end",
            Self::Leave => "leave",
        }
    }
}

impl std::fmt::Debug for LiveHearing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHearing").field("id", &self.id).field("case", &self.case).finish_non_exhaustive()
    }
}

/// How a caller sees a hearing outside the room. The court (whoever may run hearings in the case, or order a
/// witness's protection: their role and their token's scopes) sees who is invited, by name, and who is where. Everyone else in the case (a witness,
/// counsel, an auditor, a leaked read-only token) sees only which roles take part, as the room's own rule has it
/// (`Hearing::shows`): a witness is not told that the accused waits in the lobby, nor anyone's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenAs {
    Court,
    Member,
}

impl SeenAs {
    /// How `caller`, a member of the case in `role`, sees its hearings.
    pub fn of(caller: &Principal, role: custodia_core::Role) -> Self {
        if caller.may(role, Action::RunHearings) || caller.may(role, Action::OrderProtection) {
            Self::Court
        } else {
            Self::Member
        }
    }
}

impl LiveHearing {
    pub fn id(&self) -> &HearingId {
        &self.id
    }

    /// The lease this gateway holds the hearing under.
    pub fn fence(&self) -> &custodia_catalog::HearingFence {
        &self.fence
    }

    /// Whether this gateway lost the hearing's lease, and stopped it ([`Hearings::lose`]).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Closes every participant's socket and peer connection and stops every recording, writing nothing.
    async fn stop_here(&self) {
        let mut state = self.state.lock().await;
        let members: Vec<ParticipantId> = state.people.keys().cloned().collect();
        for person in state.people.values_mut() {
            if let Some(outbox) = person.outbox.take() {
                outbox.close();
            }
            person.connection = None;
        }
        for member in members {
            self.room.set_recorded(member.as_str(), false);
            self.room.disconnect(member.as_str()).await;
        }
    }

    pub fn room(&self) -> &Arc<dyn MediaPlane> {
        &self.room
    }

    /// Participants in the hearing now who publish by WHIP (connected, with no room socket, not away or removed),
    /// and how many of them came in with an invite `issuer` issued.
    pub async fn whip_publishers(&self, issuer: Option<&custodia_core::ActorId>) -> (usize, usize) {
        let state = self.state.lock().await;
        let present = |participant: &ParticipantId| {
            state.machine.place_of(participant).is_some_and(|place| place != Place::Away)
                && !state.machine.is_removed(participant)
        };
        let issued_by = |participant: &ParticipantId| {
            let invite = state.machine.invite_of(participant);
            issuer.is_some() && invite.and_then(|invite| state.machine.invite_issuer(invite)) == issuer
        };
        let publishers: Vec<&ParticipantId> = state
            .people
            .iter()
            .filter(|(participant, person)| {
                person.connection.is_some() && person.outbox.is_none() && present(participant)
            })
            .map(|(participant, _)| participant)
            .collect();
        let issued = publishers.iter().filter(|&&participant| issued_by(participant)).count();
        (publishers.len(), issued)
    }

    /// Applies one event and carries out its effects, then tells everyone in the room.
    async fn step(&self, state: &mut HearingState, event: Event) -> Result<(), RoomError> {
        self.step_holding_texts(state, event, None).await.map(drop)
    }

    /// [`Self::step`], except that the texts to show to `entering` (someone whose new connection is not attached
    /// yet) are not shown but returned.
    async fn step_holding_texts(
        &self,
        state: &mut HearingState,
        event: Event,
        entering: Option<&ParticipantId>,
    ) -> Result<HeldTexts, RoomError> {
        let at = self.gateway.now();
        let before = state.machine.clone();
        let effects = match state.machine.handle(at, event.clone()) {
            Ok(effects) => effects,
            Err(refusal) => {
                if let Some(over_budget) = self.record_refusal(state, at, &refusal).await? {
                    return Err(over_budget.into());
                }
                return Err(refusal.into());
            }
        };
        let held = match self.carry_out(state, effects, entering).await {
            Ok(held) => held,
            Err(NotCarriedOut { error, anything_done: false }) => {
                // Not even the step's first record was appended: nothing it describes happened, so the hearing is
                // as it was, and the same step may be taken again (a join or a rejoin tried again once the
                // database is back, rather than an invite used up by a join that never was).
                state.machine = before;
                return Err(error.into());
            }
            Err(NotCarriedOut { error, .. }) => {
                // Its first records are in the log for good: the hearing keeps the step as taken, and so does its
                // journal if it can, so that a gateway restoring the hearing does not find it untaken (an invite
                // unused whose join is on the record, say) and let it be taken twice.
                if let Err(journal) = self.journal(state, &JournalEntry::Event { at, event }).await {
                    tracing::error!(
                        hearing = %self.id, error = %Chain(&journal),
                        "a step recorded in part could not be journalled; restored elsewhere, the hearing will not know it"
                    );
                }
                return Err(RoomError::PartlyDone(error));
            }
        };
        self.journal(state, &JournalEntry::Event { at, event }).await?;
        self.broadcast(state);
        Ok(held)
    }

    /// A refused attempt is on the record like any other refusal: the ledger gets the fact (who, when, the digest
    /// of what was tried and which rule said no) and the journal keeps the detail for the court. Repeats of the
    /// same action within the window are counted, and past the actor's budget of refusal records every refusal
    /// is counted into one record ([`Gateway::refuse_step`]); then the 429 to answer is returned.
    async fn record_refusal(
        &self,
        state: &mut HearingState,
        at: Timestamp,
        refusal: &HearingError,
    ) -> Result<Option<GatewayError>, GatewayError> {
        let Some((step, detail)) = step_refusal(&self.case, &self.id, at, refusal) else { return Ok(None) };
        let (recorded, over_budget) = self.gateway.refuse_step(step, Sha256::of(&detail)).await?;
        // Only a refusal recorded now has its detail journalled: a count's record carries a summary of its own.
        if recorded {
            let detail = String::from_utf8_lossy(&detail).into_owned();
            self.journal(state, &JournalEntry::Refused { detail }).await?;
        }
        Ok(over_budget)
    }

    /// Appends to the hearing's journal; durable when this returns.
    async fn journal(&self, state: &mut HearingState, entry: &JournalEntry) -> Result<(), GatewayError> {
        let text = serde_json::to_string(entry).map_err(|e| GatewayError::internal("journal", e))?;
        let fence = Some(&self.fence);
        self.gateway.catalog().append_hearing_journal(self.id.as_str(), state.journal, &text, fence).await?;
        state.journal += 1;
        Ok(())
    }

    /// [`Self::step`], and once the hearing has ended, the closing: everyone is told, and the minutes follow the
    /// last segment.
    async fn apply(self: &Arc<Self>, state: &mut HearingState, event: Event) -> Result<(), RoomError> {
        self.apply_holding_texts(state, event, None).await.map(drop)
    }

    /// [`Self::apply`], except that the texts to show to `entering` (someone whose new connection is not attached
    /// yet) are not shown but returned, to be shown once it is (after its `welcome`).
    async fn apply_holding_texts(
        self: &Arc<Self>,
        state: &mut HearingState,
        event: Event,
        entering: Option<&ParticipantId>,
    ) -> Result<HeldTexts, RoomError> {
        let held = self.step_holding_texts(state, event, entering).await?;
        if state.machine.phase() == Phase::Ended && !state.finishing {
            state.finishing = true;
            for person in state.people.values_mut() {
                if let Some(outbox) = person.outbox.take() {
                    let _ = outbox.send(RoomMessage::Ended);
                }
            }
            tokio::spawn(self.clone().finish());
        }
        Ok(held)
    }

    /// Carries out effects in their order, custody records first: a record that cannot be appended stops the step
    /// there. The texts to show to `entering`, if any, are returned instead.
    async fn carry_out(
        &self,
        state: &mut HearingState,
        effects: Vec<Effect>,
        entering: Option<&ParticipantId>,
    ) -> Result<HeldTexts, NotCarriedOut> {
        let mut held = HeldTexts::new();
        for (done, effect) in effects.into_iter().enumerate() {
            match effect {
                Effect::Record(record) => {
                    self.gateway
                        .record_hearing(&self.case, &self.id, &record)
                        .await
                        .map_err(|error| NotCarriedOut { error, anything_done: done > 0 })?;
                }
                Effect::RecorderUnsubscribe(participant) => self.room.set_recorded(participant.as_str(), false),
                Effect::RecorderSubscribe(participant) => self.room.set_recorded(participant.as_str(), true),
                Effect::Move { participant, to } => {
                    self.room.set_zone(participant.as_str(), zone(to));
                    if to == Place::Away {
                        if state.machine.is_removed(&participant)
                            && let Some(person) = state.people.get_mut(&participant)
                            && let Some(outbox) = person.outbox.take()
                        {
                            let _ = outbox.send(RoomMessage::Removed);
                        }
                        let room = self.room.clone();
                        tokio::spawn(async move { room.disconnect(participant.as_str()).await });
                    }
                }
                Effect::SetMuted { participant, muted } => self.room.set_muted(participant.as_str(), muted),
                Effect::HearAudioFrom { participant, from } => {
                    self.room.set_audio_from(participant.as_str(), from.as_ref().map(room_audio));
                }
                Effect::Protect { participant, protection } => {
                    self.room.set_protection(participant.as_str(), protection.map(room_protection));
                }
                Effect::StartRecorder | Effect::StopRecorder => {}
                Effect::ShowText { participant, wording, text } if entering == Some(&participant) => {
                    held.push((wording, text));
                }
                Effect::ShowText { participant, wording, text } => self.show(state, &participant, wording, &text),
                other => tracing::warn!(effect = ?other, "an effect this gateway does not carry out"),
            }
        }
        Ok(held)
    }

    /// A step from a participant in the room.
    pub async fn act(self: &Arc<Self>, by: &ParticipantId, step: RoomStep) -> Result<(), RoomError> {
        // Leaving is always possible; everything else is on the participant's budget of steps.
        if !matches!(step, RoomStep::Leave) {
            self.steps.take(by.as_str()).await.map_err(|wait| GatewayError::TooManyAttempts {
                what: "room steps",
                retry_after_seconds: retry_after_seconds(wait),
            })?;
        }
        let by = by.clone();
        let mut state = self.state.lock().await;
        let event = match step {
            RoomStep::Admit { participant } => Event::Admit { by, participant },
            RoomStep::Remove { participant } => Event::Remove { by, participant },
            RoomStep::Mute { participant } => Event::Mute { by, participant },
            RoomStep::Unmute { participant } => Event::Unmute { by, participant },
            RoomStep::StartSession => Event::StartSession { by },
            RoomStep::StartRecording => Event::StartRecording { by },
            RoomStep::StopRecording => Event::StopRecording { by },
            RoomStep::StartConsultation { with } => Event::StartConsultation { by, with },
            RoomStep::EndConsultation { consultation } => {
                Event::EndConsultation { by, consultation: ConsultationId::new(consultation) }
            }
            RoomStep::VerifyIdentity { person, document, officer_name, site } => {
                let officer_name = PersonalName::new(officer_name)
                    .map_err(|e| GatewayError::BadInput { field: "officer_name", reason: e.to_string() })?;
                let mut salt = [0u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
                let verification =
                    IdentityVerification { document, officer_name, site, salt: CommitmentSalt::from_bytes(salt) };
                // The detail document (with the officer's name) is evidence of the case, access-controlled like
                // any other; the public record holds only its salted digest.
                let detail = verification
                    .detail_document(&self.id, &person, &by)
                    .map_err(|e| GatewayError::internal("act", e))?;
                let event = Event::VerifyIdentity { by, person, verification };
                self.apply(&mut state, event).await?;
                drop(state);
                let name = format!("{}-identity-verification.json", self.id);
                self.take_into_custody("identity verification", "application/json", &name, detail, None, None).await?;
                return Ok(());
            }
            RoomStep::PresentText { person, wording, language } => {
                let text = self.text(&state, &person, language.as_ref(), wording)?;
                // Someone connected without a page (a WHIP publisher) could not read the words.
                if state
                    .people
                    .get(&person)
                    .is_some_and(|someone| someone.connection.is_some() && someone.outbox.is_none())
                {
                    return Err(GatewayError::Conflict(format!(
                        "{person} takes part without the hearing's page, so the words cannot be shown to them"
                    ))
                    .into());
                }
                Event::PresentText { by, person, wording, text: text.shown }
            }
            RoomStep::RightsNotice { person } => Event::GiveRightsNotice { by, person, text: None },
            RoomStep::Oath { witness, form, despite_no_media } => {
                Event::TakeOath { by, witness, form, despite_no_media, text: None }
            }
            RoomStep::SwearInterpreter { interpreter, languages } => {
                Event::SwearInterpreter { by, interpreter, languages }
            }
            RoomStep::OpenChannel { interpreter, language, mode } => {
                Event::OpenChannel { by, interpreter, language, mode }
            }
            RoomStep::CloseChannel { language } => Event::CloseChannel { by, language },
            RoomStep::ChooseChannel { language } => Event::ChooseChannel { participant: by, language },
            RoomStep::End => Event::End { by },
            RoomStep::Leave => Event::Leave { participant: by, cause: LeaveCause::Left },
        };
        self.apply(&mut state, event).await
    }

    /// The court's text of `kind` for `person`: in `language` if the judge chose one (refused if the court has no
    /// text in it), else in the language of the person's page if the court has texts in it, else in English.
    fn text(
        &self,
        state: &HearingState,
        person: &ParticipantId,
        language: Option<&LanguageHint>,
        kind: Wording,
    ) -> Result<CourtText, GatewayError> {
        if let Some(language) = language {
            return self.texts.get(language.as_str(), kind).cloned().ok_or_else(|| GatewayError::BadInput {
                field: "language",
                reason: format!(
                    "the court has no texts in {}; it has {}",
                    language.as_str(),
                    self.texts.languages().join(", ")
                ),
            });
        }
        let page = state.people.get(person).and_then(|someone| someone.language.as_ref());
        page.and_then(|language| self.texts.get(language.as_str(), kind))
            .or_else(|| self.texts.get("en", kind))
            .cloned()
            .ok_or_else(|| GatewayError::internal_message(format!("no {} text in English", kind.as_str())))
    }

    /// Puts the words `text` names on `participant`'s screen, as the hearing recorded them presented.
    fn show(&self, state: &HearingState, participant: &ParticipantId, kind: Wording, text: &TextShown) {
        // The texts do not change while the gateway runs, so the words named are the words held.
        let Some(held) = self.texts.get(text.language.as_str(), kind).filter(|held| held.shown == *text) else {
            tracing::error!(hearing = %self.id, text = kind.as_str(), "a text presented is not the one held");
            return;
        };
        let message = RoomMessage::Text(Words {
            kind,
            language: text.language.clone(),
            words: held.words.clone(),
            sha256: text.sha256,
        });
        if let Some(outbox) = state.people.get(participant).and_then(|person| person.outbox.as_ref()) {
            let _ = outbox.send(message);
        }
    }

    /// The language the participant's page speaks, as it said on entering.
    pub async fn set_page_language(&self, participant: &ParticipantId, language: Option<LanguageHint>) {
        let mut state = self.state.lock().await;
        if let Some(person) = state.people.get_mut(participant) {
            person.language = language;
        }
        self.broadcast(&state);
    }

    /// The participant's WebSocket closed. Only their current connection counts.
    pub async fn connection_closed(self: &Arc<Self>, participant: &ParticipantId, connection: u64) {
        let mut state = self.state.lock().await;
        let Some(person) = state.people.get_mut(participant) else { return };
        if person.connection != Some(connection) {
            return;
        }
        person.connection = None;
        person.outbox = None;
        if state.machine.place_of(participant).is_some_and(|place| place != Place::Away) {
            let event = Event::Leave { participant: participant.clone(), cause: LeaveCause::ConnectionLost };
            if let Err(e) = self.apply(&mut state, event).await {
                tracing::warn!(hearing = %self.id, error = %Chain(&e), "recording a lost connection");
            }
        }
    }

    /// Compares what has arrived from each connected participant with what the hearing knows: media silent for
    /// [`MEDIA_SILENCE`] has stopped, media arriving again has resumed; each change is a step of the hearing (on
    /// the record, in the minutes, shown to the court). `seen` is the watcher's memory: per participant, the
    /// packet count last seen and when it last changed. False once the hearing has ended.
    async fn check_media(self: &Arc<Self>, seen: &mut HashMap<ParticipantId, (u64, tokio::time::Instant)>) -> bool {
        if self.is_lost() {
            return false;
        }
        let mut state = self.state.lock().await;
        match state.machine.phase() {
            Phase::Ended => return false,
            Phase::Scheduled => return true,
            Phase::Open | Phase::InSession => {}
        }
        let now = tokio::time::Instant::now();
        let mut reports = Vec::new();
        for participant in state.people.keys() {
            let connected = state.machine.place_of(participant).is_some_and(|place| place != Place::Away)
                && !state.machine.is_removed(participant);
            // No peer connection yet (or one that sends nothing): nothing to judge.
            let Some(packets) = self.room.packets_received(participant.as_str()).filter(|_| connected) else {
                seen.remove(participant);
                continue;
            };
            // What this connection has brought, and when it last brought something. A new connection starts its
            // count afresh and gets the same grace as a first one; only packets arriving count as media resumed.
            let (count, last_arrival) = seen.entry(participant.clone()).or_insert((packets, now));
            let arrived = packets > *count;
            if arrived || packets < *count {
                *last_arrival = now;
            }
            *count = packets;
            let silent = now.duration_since(*last_arrival) >= MEDIA_SILENCE;
            let participant = participant.clone();
            match (state.machine.media_stopped(&participant), silent, arrived) {
                (false, true, _) => reports.push(Event::MediaStopped { participant }),
                (true, _, true) => reports.push(Event::MediaResumed { participant }),
                _ => {}
            }
        }
        for event in reports {
            if let Err(e) = self.apply(&mut state, event).await {
                tracing::warn!(hearing = %self.id, error = %Chain(&e), "reporting a participant's media");
            }
        }
        true
    }

    /// Whether this connection is the participant's current one.
    pub async fn is_current(&self, participant: &ParticipantId, connection: u64) -> bool {
        let state = self.state.lock().await;
        state.people.get(participant).is_some_and(|person| person.connection == Some(connection))
    }

    /// The first message to a participant: who they are, the credential to come back with, and the STUN/TURN
    /// servers (with fresh short-lived TURN credentials) their browser should use.
    fn welcome(
        &self,
        state: &HearingState,
        participant: &ParticipantId,
        credential: &str,
        ice_servers: Vec<IceServerJson>,
    ) -> RoomMessage {
        RoomMessage::Welcome(Box::new(Welcome {
            participant: participant.clone(),
            role: state.machine.role_of(participant),
            credential: Withheld(credential.to_owned()),
            hearing: HearingAsWelcomed {
                id: self.id.clone(),
                place: Withheld(state.machine.venue().clone()),
                scheduled_for: state.machine.scheduled_for(),
            },
            ice_servers,
            slots: self.room.slots(),
            contact: state.contact.clone(),
            text_languages: self.texts.languages().into_iter().map(str::to_owned).collect(),
        }))
    }

    /// Everyone in `state.people`, in its order, as the court sees them: by the name on their invite.
    fn participants(&self, state: &HearingState) -> Vec<ParticipantView> {
        state
            .people
            .iter()
            .map(|(participant, person)| {
                let place = state.machine.place_of(participant).unwrap_or(Place::Away);
                let (place_name, consultation) = match place {
                    Place::Lobby => (PlaceName::Lobby, None),
                    Place::MainRoom => (PlaceName::MainRoom, None),
                    Place::Consultation(c) => (PlaceName::Consultation, Some(c.number())),
                    Place::Away => (PlaceName::Away, None),
                };
                let name = state.machine.invite_of(participant).and_then(|invite| state.names.get(invite));
                ParticipantView {
                    id: participant.clone(),
                    role: state.machine.role_of(participant),
                    place: place_name,
                    consultation,
                    admitted: state.machine.is_admitted(participant),
                    muted: state.machine.is_muted(participant),
                    connected: place != Place::Away,
                    left: state.machine.has_left(participant),
                    media_stopped: state.machine.media_stopped(participant),
                    name: name.cloned().map(ShownName::Given),
                    language: person.language.clone(),
                    slot: person.slot,
                }
            })
            .collect()
    }

    /// The room's state as `you` are shown it: of `participants` ([`Self::participants`]) they get those the
    /// hearing's rules show them ([`Hearing::shows`]), each protected witness under their pseudonym unless the
    /// order privileges `you` ([`Hearing::pseudonym_for`]). A protected witness reads in `you.protection` which
    /// protection is active.
    fn state_message(
        &self,
        state: &HearingState,
        you: &ParticipantId,
        participants: &[ParticipantView],
    ) -> RoomMessage {
        let machine = &state.machine;
        let court = machine.role_of(you).is_some_and(HearingRole::is_court);
        let mine = participants.iter().find(|entry| entry.id == *you).cloned().map(|entry| You {
            entry,
            protection: machine.protection_of(you).map(YourProtection::from),
            listening: machine.listening_to(you).cloned(),
        });
        let participants = participants
            .iter()
            .filter(|entry| machine.shows(you, &entry.id))
            .map(|entry| {
                let mut entry = entry.clone();
                if let Some(pseudonym) = machine.pseudonym_for(Some(you), &entry.id) {
                    entry.name = Some(ShownName::Pseudonym(pseudonym.clone()));
                }
                entry
            })
            .collect();
        let in_main_room = machine.place_of(you) == Some(Place::MainRoom);
        let channels = machine
            .open_channels()
            .map(|channel| ChannelView {
                language: channel.language.clone(),
                interpreter: channel.interpreter.clone(),
                mode: channel.mode,
                // Whether its interpreter is in the main room: a channel without carries nothing, and its listeners
                // hear the floor. Only for the court and those in the main room (who see who is there anyway): it
                // would tell someone waiting in the lobby, or in a consultation, where the interpreter is.
                interpreting: (court || in_main_room)
                    .then(|| machine.place_of(&channel.interpreter) == Some(Place::MainRoom)),
                // The court sees who listens, to know the person heard is on the interpretation.
                listeners: court.then(|| machine.listeners(&channel.language).cloned().collect()),
            })
            .collect();
        RoomMessage::State(Box::new(RoomState {
            phase: machine.phase(),
            recording: machine.is_recording(),
            channels,
            you: mine,
            participants,
            checklist: court.then(|| Self::checklist(state)),
        }))
    }

    /// For the court: what the hearing has recorded of identity checks, rights notices, oaths and interpreters'
    /// oaths (the officer's name stays in the detail document; the site they gave is shown).
    fn checklist(state: &HearingState) -> Checklist {
        let machine = &state.machine;
        Checklist {
            identity_checks: machine.identity_checks().iter().map(Into::into).collect(),
            texts_presented: machine.texts_presented().iter().map(Into::into).collect(),
            rights_notices: machine.rights_notices().iter().map(Into::into).collect(),
            oaths: machine.oaths().iter().map(Into::into).collect(),
            interpreters: machine.interpreters_sworn().iter().map(Into::into).collect(),
        }
    }

    fn broadcast(&self, state: &HearingState) {
        let participants = self.participants(state);
        for (participant, person) in &state.people {
            if let Some(outbox) = &person.outbox {
                let _ = outbox.send(self.state_message(state, participant, &participants));
            }
        }
    }

    /// The console's view of the hearing, as `seen_as` may see it.
    pub async fn view(&self, seen_as: SeenAs) -> HearingView {
        let state = self.state.lock().await;
        let now = self.gateway.now();
        let court = seen_as == SeenAs::Court;
        let participants = if court {
            self.participants(&state).into_iter().map(ListedParticipant::ToTheCourt).collect()
        } else {
            let role = |id: &ParticipantId| state.machine.role_of(id);
            state.people.keys().map(|id| ListedParticipant::ToAMember { id: id.clone(), role: role(id) }).collect()
        };
        let invites = state
            .invites
            .iter()
            .filter(|_| court)
            .map(|(invite, expires_at)| InviteView {
                id: invite.clone(),
                role: state.machine.invite_role(invite),
                name: state.names.get(invite).cloned(),
                state: state.machine.invite_state(invite, now).unwrap_or(InviteState::Expired),
                expires_at: *expires_at,
                protection: state.machine.protection_for_invite(invite).cloned().map(Withheld),
            })
            .collect();
        HearingView {
            id: self.id.clone(),
            case: self.case.clone(),
            phase: state.machine.phase(),
            scheduled_for: state.machine.scheduled_for(),
            place: Withheld(state.machine.venue().clone()),
            contact: state.contact.clone().filter(|_| court),
            recording: state.machine.is_recording(),
            invites,
            participants,
            segments: state.segments.clone(),
            minutes_artefact: state.minutes_artefact.clone(),
            masked_copies: state.masked_copies.values().cloned().collect(),
        }
    }
    /// What the hearing put into custody, once it is final: its recording segments, its signed minutes, and the
    /// digests of its identity checks' detail documents (each such document is an artefact with that SHA-256).
    /// Before the hearing has ended and its minutes are in custody, a conflict: a hearing bundle is whole or is
    /// not made.
    pub async fn output(&self) -> Result<HearingOutput, GatewayError> {
        let state = self.state.lock().await;
        let Some(minutes) = state.minutes_artefact.clone() else {
            return Err(GatewayError::Conflict(format!(
                "hearing {} has no signed minutes in custody yet: it is exported once it has ended and its \
                 recordings and minutes are sealed",
                self.id
            )));
        };
        Ok(HearingOutput {
            segments: state.segments.iter().map(|segment| segment.artefact.clone()).collect(),
            minutes,
            identity_documents: state
                .machine
                .minutes()
                .identity_checks
                .iter()
                .map(|check| check.detail_sha256)
                .collect(),
        })
    }

    /// Takes bytes into custody as an artefact of the case, in the name of the court bound to the hearing. A
    /// failure is tried again; after [`crate::quarantine::INGEST_ATTEMPTS`] the bytes are quarantined (kept, and
    /// on the record) and the error returned. `source` is the staged file holding them, if any.
    async fn take_into_custody(
        &self,
        purpose: &str,
        media_type: &str,
        name: &str,
        bytes: Vec<u8>,
        source: Option<&std::path::Path>,
        policy: Option<&UsePolicy>,
    ) -> Result<Registered, GatewayError> {
        let output = crate::quarantine::Output {
            court: &self.court,
            case: &self.case,
            hearing: &self.id,
            purpose,
            media_type,
            name,
            policy,
        };
        output.into_custody(&self.gateway, bytes, source, &self.quarantine_dir.join(name)).await
    }

    /// The masked copy of one segment, into custody with its derivation on the record.
    async fn mask_copy(&self, caller: &Principal, segment: &SegmentView) -> Result<MaskedCopyView, GatewayError> {
        // Owner-only, locked while in use, and removed with everything in it when dropped.
        let staging = crate::masking::MaskingStaging::new()
            .map_err(|e| GatewayError::internal("a place for the masked copy", e))?;
        let source = match self.gateway.artefacts().local_path(&segment.sha256) {
            Some(source) => source,
            // A remote store's segment is masked from a copy beside the output.
            None => {
                let copy = staging.path().join("original.webm");
                self.gateway.artefacts().copy_to_file(&segment.sha256, &copy).await?;
                copy
            }
        };
        let output = staging.path().join("masked.webm");
        let summary = crate::masking::mask_segment(self.maskers.program(), &source, &output, self.maskers.voice_seed())
            .await
            .map_err(|err| GatewayError::internal(format!("masking segment {}", segment.artefact), err))?;
        let bytes = tokio::fs::read(&output).await.map_err(|e| GatewayError::internal("reading the masked copy", e))?;
        let name = format!("{}-{}-segment-{:05}-masked.webm", self.id, segment.participant, segment.index);
        let registered = self
            .take_into_custody("hearing recording, masked for disclosure", "video/webm", &name, bytes, None, None)
            .await?;
        self.gateway
            .record_derivative(caller, &self.case, &registered.artefact, &segment.artefact, MASKED_COPY_OPERATION)
            .await?;
        Ok(MaskedCopyView {
            participant: segment.participant.clone(),
            source: segment.artefact.clone(),
            artefact: registered.artefact,
            sha256: registered.sha256,
            ledger_index: registered.ledger_index,
            summary,
        })
    }

    /// The court's restriction on a participant's original recording, if a protective order masked their face or
    /// voice in this hearing: only the case members whose role the order privileges (the judge and the clerk, and
    /// those it adds) may use it, and the account that runs the hearing; the others get the masked copy. Kept
    /// inside the court (TLP:AMBER+STRICT), onward only with the court's consent. The judge may correct it.
    async fn recording_policy(&self, participant: &ParticipantId) -> Result<Option<UsePolicy>, GatewayError> {
        let (roles, venue) = {
            let state = self.state.lock().await;
            (state.machine.recording_privileges(participant), state.machine.venue().clone())
        };
        let Some(roles) = roles else { return Ok(None) };
        let mut recipients = vec![self.court.actor()];
        for member in self.gateway.catalog().members(self.case.as_str()).await? {
            let privileged = member
                .role
                .parse::<custodia_core::Role>()
                .ok()
                .and_then(hearing_role_of)
                .is_some_and(|role| roles.contains(&role));
            if privileged
                && let Ok(actor) = ActorId::new(member.account_id)
                && !recipients.contains(&actor)
            {
                recipients.push(actor);
            }
        }
        let mut policy = UsePolicy::new(Tlp::AmberStrict, venue, OnwardTransfer::WithConsent);
        policy.permitted_recipients = recipients;
        Ok(Some(policy))
    }

    /// A segment of a participant's recording is closed on disk: into custody, then onto the hearing's record.
    async fn seal(
        self: &Arc<Self>,
        participant: &ParticipantId,
        run: u32,
        segment: &SealedSegment,
    ) -> Result<(), SegmentNotSealed> {
        let bytes = tokio::fs::read(&segment.path).await.map_err(SegmentNotSealed::Read)?;
        let name = format!("{}-{participant}-run{run}-segment-{:05}.webm", self.id, segment.index);
        let policy = self.recording_policy(participant).await.map_err(SegmentNotSealed::Policy)?;
        let registered = self
            .take_into_custody("hearing recording", "video/webm", &name, bytes, Some(&segment.path), policy.as_ref())
            .await
            .map_err(SegmentNotSealed::Custody)?;
        let mut state = self.state.lock().await;
        let index = state.segments.len() as u64;
        let event = Event::SegmentSealed { index, sha256: registered.sha256, ledger_index: registered.ledger_index };
        self.apply(&mut state, event).await.map_err(SegmentNotSealed::Record)?;
        let view = SegmentView {
            index,
            participant: participant.clone(),
            artefact: registered.artefact.clone(),
            sha256: registered.sha256,
            ledger_index: registered.ledger_index,
        };
        let entry = JournalEntry::Segment { segment: view.clone() };
        self.journal(&mut state, &entry).await.map_err(SegmentNotSealed::Journal)?;
        state.segments.push(view);
        drop(state);
        tracing::info!(
            hearing = %self.id, participant = %participant, index, artefact = %registered.artefact,
            ledger_index = registered.ledger_index, "recording segment in custody"
        );
        if let Err(e) = tokio::fs::remove_file(&segment.path).await {
            tracing::warn!(
                hearing = %self.id, error = %Chain(&e),
                "could not remove a staged segment that is in custody"
            );
        }
        Ok(())
    }

    /// After the end: wait for the last segments, report the technical conditions, then sign the minutes and take
    /// them into custody.
    async fn finish(self: Arc<Self>) {
        let summaries = self.room.finish_recordings().await;
        let mut state = self.state.lock().await;
        for (member, summary) in summaries {
            let Ok(participant) = ParticipantId::new(member) else { continue };
            for track in summary.tracks {
                let (Some(kind), Some(codec)) = (track.kind, track.codec) else { continue };
                let Ok(codec) = Label::new(codec) else { continue };
                let report = TechnicalReport {
                    participant: participant.clone(),
                    track: match kind {
                        MediaKind::Audio => TrackKind::Audio,
                        MediaKind::Video => TrackKind::Video,
                    },
                    codec,
                    packets_received: track.packets,
                    packets_lost: track.lost,
                };
                if let Err(e) = self.step(&mut state, Event::TechnicalReport(report)).await {
                    tracing::warn!(hearing = %self.id, error = %Chain(&e), "reporting technical conditions");
                }
            }
            for error in &summary.errors {
                tracing::error!(
                    hearing = %self.id, participant = %participant, error = %Chain(error),
                    "recording error"
                );
            }
        }
        let minutes = state.machine.minutes();
        drop(state);
        let bytes = match custodia_core::to_canonical_vec(&minutes) {
            Ok(bytes) => bytes,
            Err(e) => {
                return tracing::error!(hearing = %self.id, error = %Chain(&e), "the minutes could not be written");
            }
        };
        let name = format!("{}-minutes.json", self.id);
        match self.take_into_custody("hearing minutes", "application/json", &name, bytes, None, None).await {
            Ok(registered) => {
                tracing::info!(hearing = %self.id, artefact = %registered.artefact, "minutes in custody");
                let mut state = self.state.lock().await;
                let entry = JournalEntry::Minutes { artefact: registered.artefact.clone() };
                if let Err(e) = self.journal(&mut state, &entry).await {
                    tracing::error!(hearing = %self.id, error = %Chain(&e), "journalling the minutes");
                }
                state.minutes_artefact = Some(registered.artefact);
            }
            Err(e) => {
                tracing::error!(hearing = %self.id, error = %Chain(&e), "the minutes could not be taken into custody");
            }
        }
    }
}

/// Watches a hearing's media until the hearing ends (or is dropped): see [`LiveHearing::check_media`].
async fn watch_media(hearing: Weak<LiveHearing>) {
    let mut seen = HashMap::new();
    let mut ticks = tokio::time::interval(MEDIA_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(live) = hearing.upgrade() else { return };
        if !live.check_media(&mut seen).await {
            return;
        }
    }
}

/// Starts each participant's recording runs in its own directory, and seals their segments into custody.
struct SegmentsIntoCustody {
    hearing: Weak<LiveHearing>,
    dir: PathBuf,
    runs: AtomicU32,
}

impl RecorderFactory for SegmentsIntoCustody {
    fn start_recording(&self, member: &str) -> Recording {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("{member}-run{run}"));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::error!(error = %Chain(&e), "could not create a recording directory");
        }
        let sealer = Arc::new(SealIntoHearing {
            hearing: self.hearing.clone(),
            participant: ParticipantId::new(member).ok(),
            run,
        });
        Recording::start(RecordingConfig::new(dir), sealer)
    }
}

struct SealIntoHearing {
    hearing: Weak<LiveHearing>,
    participant: Option<ParticipantId>,
    run: u32,
}

#[async_trait::async_trait]
impl SegmentSealer for SealIntoHearing {
    async fn on_segment_sealed(&self, segment: &SealedSegment) -> Result<(), SealError> {
        let hearing = self.hearing.upgrade().ok_or(SegmentNotSealed::HearingGone)?;
        if hearing.is_lost() {
            // Another gateway holds the hearing now: nothing more is written from here; the file stays on disk.
            return Err(SegmentNotSealed::HeldElsewhere.into());
        }
        let participant = self.participant.as_ref().ok_or(SegmentNotSealed::NotAParticipant)?;
        Ok(hearing.seal(participant, self.run, segment).await?)
    }
}

/// Why a recorded segment did not enter custody and the hearing's record ([`LiveHearing::seal`]): the step that
/// failed, with its cause. The recording stops there; the segment stays on disk, or in quarantine if custody
/// itself failed ([`crate::quarantine`]).
#[derive(Debug, thiserror::Error)]
enum SegmentNotSealed {
    #[error("the hearing is gone")]
    HearingGone,
    #[error("the hearing is held by another gateway now")]
    HeldElsewhere,
    #[error("the recording's member is not a participant id")]
    NotAParticipant,
    #[error("reading the segment")]
    Read(#[source] std::io::Error),
    #[error("finding who may use the recording")]
    Policy(#[source] GatewayError),
    #[error("taking the segment into custody")]
    Custody(#[source] GatewayError),
    #[error("putting the segment on the hearing's record")]
    Record(#[source] RoomError),
    #[error("journalling the segment")]
    Journal(#[source] GatewayError),
}

/// A hearing's journal entry that could not be read back ([`read_journal_entry`]): which one, how JSON failed and
/// where, when serde knows (not for a value inside a tagged entry, which it reads twice). Never serde's message,
/// which quotes the value it could not take, and the journal holds names, contacts and the officer's name of an
/// identity check: this error reaches the operator's log.
#[derive(Debug, thiserror::Error)]
#[error("journal entry {entry} cannot be read: {}{}", fault_of(.category), position(.line, .column))]
struct UnreadableJournalEntry {
    entry: usize,
    category: serde_json::error::Category,
    /// From 1; 0 where serde does not know.
    line: usize,
    column: usize,
}

/// Where in an entry JSON failed, if serde knows.
fn position(line: &usize, column: &usize) -> String {
    if *line == 0 { String::new() } else { format!(" at line {line}, column {column}") }
}

/// What kind of fault a JSON error is, in words.
fn fault_of(category: &serde_json::error::Category) -> &'static str {
    use serde_json::error::Category;
    match category {
        Category::Io => "an I/O error",
        Category::Syntax => "not JSON",
        Category::Data => "a value not of the form an entry takes",
        Category::Eof => "cut short",
    }
}

/// Entry number `entry` of a hearing's journal, from its `text`.
fn read_journal_entry(entry: usize, text: &str) -> Result<JournalEntry, UnreadableJournalEntry> {
    serde_json::from_str(text).map_err(|e| UnreadableJournalEntry {
        entry,
        category: e.classify(),
        line: e.line(),
        column: e.column(),
    })
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// A journal entry that does not read back says which entry, where and what kind of fault, never the value:
    /// serde's own message quotes it, and the journal holds names and contacts.
    #[test]
    fn an_unreadable_journal_entry_is_not_quoted_in_its_error() {
        let name = "Amina Haddad";
        let member = format!(r#"{{"entry":"member","participant":"p-1","slot":"{name}"}}"#);
        let quoted = serde_json::from_str::<JournalEntry>(&member).err().expect("a name is no slot").to_string();
        assert!(quoted.contains(name), "serde quotes the value, so its message must not be logged: {quoted}");
        let schedule = format!(r#"{{"entry":"scheduled","at":"2027-03-03T09:00:00Z","court":7,"contact":"{name}"}}"#);
        let texts = [member.as_str(), &schedule, r#"{"entry":"voice","seed":"#, r#"{"entry":"voice","seed":"Amina"}"#];
        for (number, text) in texts.into_iter().enumerate() {
            let err = read_journal_entry(number, text).err().expect("not an entry");
            let shown = format!("{} {err:?}", Chain(&err));
            let shown = format!("{shown} {:#}", anyhow::Error::from(err));
            assert!(!shown.contains("Amina") && !shown.contains("Haddad"), "{shown}");
            assert!(shown.contains(&format!("journal entry {number} cannot be read")), "{shown}");
        }
        let err = read_journal_entry(3, r#"{"entry":"voice","seed":"Amina"}"#).err().expect("not a seed");
        assert_eq!(err.to_string(), "journal entry 3 cannot be read: a value not of the form an entry takes");
        let cut = read_journal_entry(2, r#"{"entry":"voice","seed":"#).err().expect("cut short");
        assert_eq!(cut.to_string(), "journal entry 2 cannot be read: cut short at line 1, column 24");
        assert!(read_journal_entry(0, r#"{"entry":"voice","seed":7}"#).is_ok());
    }

    /// The place a clerk typed stays out of `Debug`, as the contact does.
    #[test]
    fn a_schedule_request_withholds_the_place_from_debug() {
        let request: ScheduleRequest = serde_json::from_value(serde_json::json!({
            "scheduled_for": "2027-03-03T09:00:00Z",
            "place": "Tribunale di Catania, aula 3",
            "contact": "Registry, +39 095 555 0101",
        }))
        .unwrap();
        let shown = format!("{request:?}");
        for private in ["Catania", "aula", "+39", "Registry"] {
            assert!(!shown.contains(private), "{private} in {shown}");
        }
        assert!(shown.contains("place: withheld") && shown.contains("2027-03-03"), "{shown}");
    }

    /// A segment that did not enter custody says which step failed, then each cause once.
    #[test]
    fn a_segment_not_sealed_keeps_each_cause_once() {
        let custody = SegmentNotSealed::Custody(GatewayError::internal("storing", std::io::Error::other("disk full")));
        assert_eq!(Chain(&custody).to_string(), "taking the segment into custody: internal error: storing: disk full");
        let boxed: SealError = custody.into();
        assert_eq!(
            Chain(&custodia_recorder::RecordingError::Seal { index: 4, source: boxed }).to_string(),
            "sealing segment 4: taking the segment into custody: internal error: storing: disk full"
        );
        let read = SegmentNotSealed::Read(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(Chain(&read).to_string(), "reading the segment: entity not found");
    }

    /// A refusal by the hearing's rules reads the same through [`Chain`] as by itself: said once, not twice.
    #[test]
    fn a_refused_step_is_said_once_in_its_chain() {
        let schedule = Schedule {
            hearing: HearingId::new("h-1").unwrap(),
            case: CaseId::new("case-7").unwrap(),
            by: CaseMember { actor: ActorId::new("acct-clerk").unwrap(), role: custodia_core::Role::Clerk },
            scheduled_for: "2027-03-03T09:00:00Z".parse().unwrap(),
            place: Label::new("Aula 3").unwrap(),
            rules: Rules::default(),
        };
        let at: Timestamp = "2027-03-03T08:00:00Z".parse().unwrap();
        let (mut machine, _) = Hearing::schedule(at, schedule).unwrap();
        let refusal = machine.handle(at, Event::StartSession { by: ParticipantId::new("p-x").unwrap() }).err().unwrap();
        let said = refusal.to_string();
        assert_eq!(Chain(&RoomError::from(refusal)).to_string(), said);
    }

    /// A failure while letting someone in keeps its error, and is said by its class: one that may pass is a refusal
    /// the page tries again (`served_elsewhere` for a lease another gateway took, `unavailable` for a backend),
    /// anything else is final and says nothing internal.
    #[test]
    fn a_refused_entry_keeps_its_error_and_says_whether_to_try_again() {
        let database = GatewayError::Unavailable { what: "the database", source: "connection refused".into() };
        let refusal = EnterRefusal::from_gateway(database);
        assert_eq!((refusal.key(), refusal.is_retryable()), ("unavailable", true));
        assert!(matches!(&refusal, EnterRefusal::Unavailable(e) if e.is_retryable()), "{refusal:?}");
        assert_eq!(refusal.to_string(), "the database is unavailable now; try again shortly");
        assert_eq!(refusal.source().map(ToString::to_string).as_deref(), Some("connection refused"));

        let taken = custodia_catalog::CatalogError::LeaseLost { hearing_id: "h-1".into(), epoch: 1 };
        let refusal = EnterRefusal::from(RoomError::Gateway(taken.into()));
        assert_eq!((refusal.key(), refusal.is_retryable()), ("served_elsewhere", true));
        assert!(refusal.source().is_some_and(|cause| cause.to_string().contains("epoch 1")), "{refusal:?}");

        let broken = GatewayError::internal("journal", std::io::Error::other("disk on fire"));
        let refusal = EnterRefusal::from_gateway(broken);
        assert_eq!((refusal.key(), refusal.is_retryable()), ("other", false));
        assert!(!refusal.to_string().contains("journal") && !refusal.to_string().contains("fire"), "{refusal}");
        let cause = refusal.source().expect("the internal error is kept");
        assert_eq!(cause.source().map(ToString::to_string).as_deref(), Some("disk on fire"));

        // A join recorded in part (its first record appended, then the database gone): the invite is used, so a
        // retry could only be refused; final, whatever the failure's own class.
        let database = GatewayError::Unavailable { what: "the database", source: "connection reset".into() };
        let refusal = EnterRefusal::from(RoomError::PartlyDone(database));
        assert_eq!((refusal.key(), refusal.is_retryable()), ("other", false));
        assert!(!GatewayError::from(RoomError::PartlyDone(GatewayError::Conflict("x".into()))).is_retryable());

        let conflict = EnterRefusal::from_gateway(GatewayError::Conflict("the hearing is full".into()));
        assert_eq!((conflict.key(), conflict.is_retryable()), ("other", false));
        assert_eq!(conflict.to_string(), "the hearing is full");

        let budget = GatewayError::TooManyAttempts { what: "refused hearing steps", retry_after_seconds: 7 };
        let refusal = EnterRefusal::from_gateway(budget);
        assert!(matches!(refusal, EnterRefusal::TooManyAttempts { retry_after_seconds: 7 }), "{refusal:?}");
        assert!(!refusal.is_retryable());

        for (refusal, key) in [
            (EnterRefusal::ServedElsewhere, "served_elsewhere"),
            (EnterRefusal::Used, "used"),
            (EnterRefusal::NotAJoin("no join message".into()), "other"),
        ] {
            assert_eq!(refusal.key(), key);
            assert_eq!(refusal.is_retryable(), key == "served_elsewhere");
        }
    }
}
