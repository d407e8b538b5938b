//! The hearing's HTTP routes for the case console, and the room's WebSocket (docs/hearing-room.md).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Extensions, HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use custodia_hearing::{InviteId, ProtectiveMeasures};
use futures::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};

use crate::api::{ApiJson, JSON_LIMIT, PurposeQuery, case_id};
use crate::auth::Caller;
use crate::extract::{Path, Query};
use crate::problem::Problem;
use crate::state::AppState;
use custodia_hearings::live::{
    ConsoleStep, EnterRefusal, Entered, HearingView, InviteRequest, MaskedCopyView, Outbox, RoomError, RoomStep,
    ScheduleRequest, SeenAs, WhipCaps, WhipRefusal,
};
use custodia_hearings::people::LanguageHint;
use custodia_hearings::room_messages::{RoomMessage, Withheld};
use custodia_hearings::turn::IceServerJson;
use custodia_service::error::ErrorClass;
use custodia_service::gateway::{GatewayError, bad_input};

/// The largest room message taken, and the largest frame: an SDP offer with every candidate is a few kilobytes.
const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// Bytes a socket's writer may buffer before the client is taken to be too slow and disconnected.
const MAX_WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// How long a new socket has to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Sockets that have not (yet) joined, at once, in this process ([`crate::places`]): past it, a new socket takes
/// the place of the oldest silent socket of the network holding the most places, or, when every one has spoken, is
/// answered 503 without an upgrade. Each may hold one incomplete message of at most `MAX_MESSAGE_BYTES` for at most `HELLO_TIMEOUT`.
pub const UNJOINED_SOCKETS: usize = 128;

/// Of [`UNJOINED_SOCKETS`], those one peer may hold at once, so that a stranger holding sockets open cannot stop
/// everyone else joining (a household or a court room behind one address joins a few at a time).
pub const UNJOINED_SOCKETS_PER_PEER: usize = 8;

/// Frames a socket may send (text, binary, ping, pong alike): a burst of [`MESSAGE_BURST`], refilled at
/// [`MESSAGES_PER_SECOND`]. A client over it is disconnected. A person in a hearing sends a few a minute.
const MESSAGE_BURST: f64 = 60.0;
/// See [`MESSAGE_BURST`].
const MESSAGES_PER_SECOND: f64 = 10.0;

/// How long one message may take to reach a client before it is taken to be gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

static UNJOINED: std::sync::LazyLock<Arc<crate::places::Places>> =
    std::sync::LazyLock::new(|| Arc::new(crate::places::Places::new(UNJOINED_SOCKETS, UNJOINED_SOCKETS_PER_PEER)));

/// A client that sends `ping` (every 5 s, docs/hearing-room.md) has lost its link once it is silent this long.
const KEEPALIVE_SILENCE: Duration = Duration::from_secs(15);
/// How long the gateway keeps reading, and discarding, what a client still sends after the gateway's close frame,
/// waiting for the client's own (RFC 6455 7.1.1). Dropping a socket with unread data in it makes the kernel answer
/// with a reset, which can discard the close frame before the client reads it, so the client never learns why.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/cases/{case}/hearings", post(schedule).get(list))
        .route("/api/v1/cases/{case}/hearings/{hearing}", get(view))
        .route("/api/v1/cases/{case}/hearings/{hearing}/invites", post(invite))
        .route("/api/v1/cases/{case}/hearings/{hearing}/invites/{invite}", delete(revoke))
        .route(
            "/api/v1/cases/{case}/hearings/{hearing}/invites/{invite}/protection",
            put(order_protection).delete(lift_protection),
        )
        .route("/api/v1/cases/{case}/hearings/{hearing}/open", post(open))
        .route("/api/v1/cases/{case}/hearings/{hearing}/masked-copies", post(masked_copies))
        .route("/api/v1/cases/{case}/hearings/{hearing}/close", post(close))
        .route("/api/v1/cases/{case}/hearings/{hearing}/exports", post(export))
        // The console's bodies are JSON, held to the API's limit (the 413 says so truthfully).
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .route("/api/v1/room", get(room))
        .route("/api/v1/room/whip", post(whip_publish))
        .route("/api/v1/room/whip/{participant}", delete(whip_end))
        .route("/api/v1/ice-servers", get(ice_servers))
        .with_state(state)
}

async fn schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(case): Path<String>,
    ApiJson(request): ApiJson<ScheduleRequest>,
) -> Result<Response, Problem> {
    let live = state.hearings.schedule(&caller, &case_id(&case)?, request).await?;
    Ok((StatusCode::CREATED, axum::Json(live.view(SeenAs::Court).await)).into_response())
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(case): Path<String>,
) -> Result<axum::Json<HearingList>, Problem> {
    let case = case_id(&case)?;
    let role = state.gateway.authorize(&caller, &case, custodia_core::Action::ViewCase).await?;
    let seen_as = SeenAs::of(&caller, role);
    let mut hearings = Vec::new();
    for live in state.hearings.of_case(&case) {
        hearings.push(live.view(seen_as).await);
    }
    Ok(axum::Json(HearingList { hearings }))
}

/// A case's hearings, as the caller may see them.
#[derive(Serialize)]
struct HearingList {
    hearings: Vec<HearingView>,
}

async fn view(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing)): Path<(String, String)>,
) -> Result<axum::Json<HearingView>, Problem> {
    let case = case_id(&case)?;
    let live = state.hearings.find(&caller, &case, &hearing).await?;
    let role = state.gateway.authorize(&caller, &case, custodia_core::Action::ViewCase).await?;
    Ok(axum::Json(live.view(SeenAs::of(&caller, role)).await))
}

async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing)): Path<(String, String)>,
    ApiJson(request): ApiJson<InviteRequest>,
) -> Result<Response, Problem> {
    let (live, by) = state.hearings.find_to_run(&caller, &case_id(&case)?, &hearing).await?;
    let issued = state.hearings.invite(by, &live, request).await?;
    Ok((StatusCode::CREATED, axum::Json(issued)).into_response())
}

async fn console_step(
    state: &AppState,
    caller: &Caller,
    case: &str,
    hearing: &str,
    step: ConsoleStep,
) -> Result<axum::Json<HearingView>, Problem> {
    let (live, by) = state.hearings.find_to_run(caller, &case_id(case)?, hearing).await?;
    state.hearings.console(by, &live, step).await?;
    Ok(axum::Json(live.view(SeenAs::Court).await))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing, invite)): Path<(String, String, String)>,
) -> Result<StatusCode, Problem> {
    let invite = InviteId::new(invite).map_err(|err| Problem::from(bad_input("invite", err)))?;
    let _view = console_step(&state, &caller, &case, &hearing, ConsoleStep::Revoke(invite)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The judge orders (or changes) protective measures for the witness an invite is for.
async fn order_protection(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing, invite)): Path<(String, String, String)>,
    ApiJson(measures): ApiJson<ProtectiveMeasures>,
) -> Result<axum::Json<HearingView>, Problem> {
    protection_step(&state, &caller, &case, &hearing, &invite, Some(measures)).await
}

/// The judge lifts a witness's protective measures.
async fn lift_protection(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing, invite)): Path<(String, String, String)>,
) -> Result<axum::Json<HearingView>, Problem> {
    protection_step(&state, &caller, &case, &hearing, &invite, None).await
}

async fn protection_step(
    state: &AppState,
    caller: &Caller,
    case: &str,
    hearing: &str,
    invite: &str,
    measures: Option<ProtectiveMeasures>,
) -> Result<axum::Json<HearingView>, Problem> {
    let invite = InviteId::new(invite).map_err(|err| Problem::from(bad_input("invite", err)))?;
    let live = state.hearings.protect(caller, &case_id(case)?, hearing, invite, measures).await?;
    Ok(axum::Json(live.view(SeenAs::Court).await))
}

/// Masked copies of the recordings of a hearing's protected witnesses, for disclosure.
async fn masked_copies(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing)): Path<(String, String)>,
) -> Result<axum::Json<MaskedCopies>, Problem> {
    let copies = state.hearings.masked_copies(&caller, &case_id(&case)?, &hearing).await?;
    Ok(axum::Json(MaskedCopies { masked_copies: copies }))
}

/// Every masked copy made of a hearing's recordings.
#[derive(Serialize)]
struct MaskedCopies {
    masked_copies: Vec<MaskedCopyView>,
}

async fn open(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing)): Path<(String, String)>,
) -> Result<axum::Json<HearingView>, Problem> {
    console_step(&state, &caller, &case, &hearing, ConsoleStep::Open).await
}

async fn close(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing)): Path<(String, String)>,
) -> Result<axum::Json<HearingView>, Problem> {
    console_step(&state, &caller, &case, &hearing, ConsoleStep::Close).await
}

/// Streams a hearing's bundle: a case bundle of its recording segments, its signed minutes and its identity
/// checks, made and recorded like a case export (`case_exported`, whose listing names exactly these bundles), and
/// named as this hearing's only, in the bundle and in its record. Only once the hearing has ended and its minutes
/// are in custody.
async fn export(
    State(state): State<AppState>,
    caller: Caller,
    connection: Option<axum::Extension<crate::listen::Connection>>,
    Path((case, hearing)): Path<(String, String)>,
    Query(query): Query<PurposeQuery>,
) -> Result<Response, Problem> {
    let case = case_id(&case)?;
    let purpose = query.purpose()?;
    let live = state.hearings.find(&caller, &case, &hearing).await?;
    let output = live.output().await?;
    let leave = || state.start_outflow(&caller, connection, crate::outflow::Stream::Case);
    let keep = |row: &custodia_catalog::ArtefactRow| output.holds(&row.id, &row.sha256);
    let (sources, outflowing) = state.gateway.export_case_part(&caller, &case, &purpose, keep, leave).await?;
    let filename = format!("custodia-hearing-{}.tar", live.id());
    let scope = custodia_bundle::ExportScope::Hearing { hearing: live.id().clone() };
    let export = crate::api::CaseExportRequest { caller, case, purpose, scope, outflowing };
    crate::api::stream_case_bundle(&state, export, sources, &filename)
}

async fn room(
    State(state): State<AppState>,
    extensions: Extensions,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let peer = crate::listen::client_network(&extensions);
    let connection = extensions.get::<crate::listen::Connection>().cloned();
    match upgrade {
        Ok(upgrade) => {
            // A socket without a known peer (in-process tests) counts only in the total.
            let Some(unjoined) = UNJOINED.admit(peer) else {
                return Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "Too many waiting sockets",
                    "too many room sockets have not joined yet; try again in a moment",
                )
                .with_retry_after(crate::problem::UNAVAILABLE_RETRY_AFTER_SECONDS)
                .into_response();
            };
            upgrade
                .max_message_size(MAX_MESSAGE_BYTES)
                .max_frame_size(MAX_MESSAGE_BYTES)
                .write_buffer_size(64 * 1024)
                .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
                .on_upgrade(move |socket| run_room(state, socket, peer, (unjoined, connection)))
        }
        Err(_) => Problem::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade-required",
            "WebSocket only",
            "the hearing room is a WebSocket: open it with an Upgrade request",
        )
        .into_response(),
    }
}

/// The first message on a room socket.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Hello {
    Join {
        invite: String,
        /// The language the page speaks (its rights notice and oath are in it, unless the judge chooses another).
        #[serde(default)]
        language: Option<LanguageHint>,
    },
    Rejoin {
        credential: String,
        #[serde(default)]
        language: Option<LanguageHint>,
    },
}

/// What a page sends about its own connection rather than the hearing: no hearing step, and never recorded.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Plumbing {
    /// Keeps the socket alive, answered `pong`: from then on a silent socket has lost its link.
    Ping,
    /// A new peer connection, answered `answer`.
    Offer { sdp: String },
    /// A receiving preference: which senders' video to take (by their slots; `null`: everyone's). Audio always
    /// flows.
    ReceiveVideo {
        #[serde(default)]
        slots: Option<std::collections::BTreeSet<usize>>,
    },
}

/// A socket's allowance of frames ([`MESSAGE_BURST`], [`MESSAGES_PER_SECOND`]).
struct Allowance {
    tokens: f64,
    refilled: tokio::time::Instant,
}

impl Allowance {
    fn new() -> Self {
        Self { tokens: MESSAGE_BURST, refilled: tokio::time::Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * MESSAGES_PER_SECOND;
        self.tokens = (self.tokens + earned).min(MESSAGE_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Why the gateway closes a room socket, for the close frame it sends (RFC 6455 7.4.1).
#[derive(Debug, Clone, Copy)]
enum Closing {
    /// A message or frame over [`MAX_MESSAGE_BYTES`]: 1009.
    TooBig,
    /// More frames than the socket's [`Allowance`]: 1008.
    TooManyFrames,
}

impl Closing {
    fn frame(self) -> CloseFrame {
        let (code, reason) = match self {
            Self::TooBig => (close_code::SIZE, "message too big"),
            Self::TooManyFrames => (close_code::POLICY, "too many messages"),
        };
        CloseFrame { code, reason: reason.into() }
    }
}

/// The next text message, or `None` when the socket closed, failed, or sent more frames than its allowance;
/// `closing` then says why, where the gateway is the one ending it.
async fn next_text(
    socket: &mut futures::stream::SplitStream<WebSocket>,
    allowance: &mut Allowance,
    closing: &OnceLock<Closing>,
) -> Option<String> {
    loop {
        let message = match socket.next().await? {
            Ok(message) => message,
            Err(e) => {
                let too_big = e
                    .into_inner()
                    .downcast_ref::<tungstenite::Error>()
                    .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
                if too_big {
                    tracing::info!("a room socket sent a message over {MAX_MESSAGE_BYTES} bytes; closing it");
                    let _ = closing.set(Closing::TooBig);
                }
                return None;
            }
        };
        if !allowance.take() {
            tracing::info!("a room socket sent too many messages; closing it");
            let _ = closing.set(Closing::TooManyFrames);
            return None;
        }
        match message {
            Message::Text(text) => return Some(text.to_string()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

async fn run_room(
    state: AppState,
    socket: WebSocket,
    peer: Option<custodia_service::network::ClientNetwork>,
    (unjoined, connection): (crate::places::Place, Option<crate::listen::Connection>),
) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut outgoing, overflowed) = Outbox::channel();
    let closing = Arc::new(OnceLock::new());
    let why = closing.clone();
    let writer = tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = outgoing.recv() => message,
                () = overflowed.notified() => {
                    tracing::info!("a room socket did not keep up with its messages; closing it");
                    break;
                }
            };
            let Some(message) = message else { break };
            let last = message.is_final();
            let text = match serde_json::to_string(&message) {
                Ok(text) => text,
                Err(e) => {
                    tracing::error!(error = %custodia_service::error::Chain(&e), "a room message could not be written as JSON; closing the socket");
                    break;
                }
            };
            let send = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(text.into())));
            if !matches!(send.await, Ok(Ok(()))) || last {
                break;
            }
        }
        let frame = why.get().map(|closing: &Closing| closing.frame());
        let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(frame))).await;
    });
    let mut allowance = Allowance::new();
    // A socket that says nothing gives its place up to a newer one when every place is held.
    let hello = tokio::select! {
        hello = tokio::time::timeout(HELLO_TIMEOUT, next_text(&mut stream, &mut allowance, &closing)) => {
            hello.ok().flatten().ok_or("no join message")
        }
        () = unjoined.given_up() => Err("no join message yet, and its place was wanted by a newer socket"),
    };
    unjoined.keep();
    let mut page_language = None;
    let entered = match hello.map(|hello| serde_json::from_str::<Hello>(&hello)) {
        Ok(Ok(Hello::Join { invite: secret, language } | Hello::Rejoin { credential: secret, language })) => {
            page_language = language;
            state.hearings.enter(&secret, Some(outbox.clone()), peer).await
        }
        Ok(Err(e)) => Err(EnterRefusal::NotAJoin(format!("the first message must be join or rejoin: {e}"))),
        Err(why) => Err(EnterRefusal::NotAJoin(why.to_owned())),
    };
    drop(unjoined);
    let Entered { hearing, participant, connection: room_connection } = match entered {
        Ok(entered) => {
            // Joined: a participant's live socket, whose connection is taken back last. Until now it weighed like
            // an idle stranger's (a flood of sockets that never join once outranked a court's keep-alives).
            if let Some(connection) = &connection {
                connection.mark_live();
            }
            entered
        }
        Err(reason) => {
            log_not_let_in(&reason);
            let _ = outbox.send(RoomMessage::NotLetIn { problem: reason.key(), reason: reason.to_string() });
            drop(outbox);
            let _ = tokio::time::timeout(SEND_TIMEOUT, writer).await;
            linger(stream).await;
            return;
        }
    };
    if page_language.is_some() {
        hearing.set_page_language(&participant, page_language).await;
    }
    let mut keepalive = false;
    // A participant whose refused steps passed their budget of refusal records is muted: this socket takes no step
    // of theirs (but leaving) until the budget's wait is over, answering each with that wait instead.
    let mut muted_until: Option<tokio::time::Instant> = None;
    loop {
        // The writer stops when the client is too slow for its outbox; then the reading stops too. A client that
        // pings and then falls silent has lost its link.
        let silence = if keepalive { KEEPALIVE_SILENCE } else { Duration::MAX };
        let text = tokio::select! {
            text = tokio::time::timeout(silence, next_text(&mut stream, &mut allowance, &closing)) => text.unwrap_or_default(),
            () = outbox.closed() => None,
        };
        let Some(text) = text else { break };
        if !hearing.is_current(&participant, room_connection).await {
            break;
        }
        let message: serde_json::Value = match serde_json::from_str(&text) {
            Ok(message) => message,
            Err(e) => {
                let _ = outbox.send(RoomMessage::Error { detail: format!("not JSON: {e}") });
                continue;
            }
        };
        let kind = message.get("type").and_then(serde_json::Value::as_str);
        let (plumbing, offer) = (matches!(kind, Some("ping" | "offer" | "receive_video")), kind == Some("offer"));
        if plumbing {
            let plumbing = match serde_json::from_value::<Plumbing>(message) {
                Ok(plumbing) => plumbing,
                Err(e) => {
                    // A ping cannot be malformed: only an offer's sdp or a choice of slots can.
                    let detail = if offer { "an offer needs its sdp".to_owned() } else { format!("slots: {e}") };
                    let _ = outbox.send(RoomMessage::Error { detail });
                    continue;
                }
            };
            match plumbing {
                Plumbing::Ping => {
                    // From now on this client's silence means its link is gone; it hears back, to know ours is alive.
                    keepalive = true;
                    let _ = outbox.send(RoomMessage::Pong);
                }
                Plumbing::Offer { sdp } => {
                    // A WebSocket participant's presence follows the socket, not the peer connection.
                    let reply = match hearing.room().connect(participant.as_str(), &sdp).await {
                        Ok(connected) => RoomMessage::Answer { sdp: Withheld(connected.answer) },
                        Err(e) => RoomMessage::Error { detail: format!("the offer was not accepted: {e}") },
                    };
                    let _ = outbox.send(reply);
                }
                Plumbing::ReceiveVideo { slots } => hearing.room().set_video_from(participant.as_str(), slots),
            }
            continue;
        }
        let step: RoomStep = match serde_json::from_value(message) {
            Ok(step) => step,
            Err(e) => {
                let _ = outbox.send(RoomMessage::Error { detail: format!("not a room message: {e}") });
                continue;
            }
        };
        let action = step.name();
        let leaving = matches!(step, RoomStep::Leave);
        if let Some(until) = muted_until.filter(|_| !leaving) {
            let wait = until.saturating_duration_since(tokio::time::Instant::now());
            if !wait.is_zero() {
                let muted = GatewayError::TooManyAttempts {
                    what: custodia_service::gateway::REFUSED_STEPS,
                    retry_after_seconds: custodia_service::budget::retry_after_seconds(wait),
                };
                let _ = outbox.send(RoomMessage::StepNotTaken { action, reason: muted.to_string() });
                continue;
            }
            muted_until = None;
        }
        match hearing.act(&participant, step).await {
            Ok(()) => {}
            Err(RoomError::Refused(refusal)) => {
                let problem = refusal.reason().map(custodia_hearing::Reason::key);
                let _ = outbox.send(RoomMessage::StepRefused { action, problem, reason: refusal.to_string() });
            }
            Err(RoomError::Gateway(e @ GatewayError::TooManyAttempts { what, retry_after_seconds })) => {
                if what == custodia_service::gateway::REFUSED_STEPS {
                    let wait = Duration::from_secs(retry_after_seconds);
                    muted_until = Some(tokio::time::Instant::now() + wait);
                }
                let _ = outbox.send(RoomMessage::StepNotTaken { action, reason: e.to_string() });
            }
            Err(RoomError::Gateway(e)) => {
                // A step refused for what it is (malformed, in conflict) is the participant's to hear, not the
                // operator's: its text may one day quote what they sent.
                match e.class() {
                    ErrorClass::Refused => {}
                    ErrorClass::Retryable => {
                        tracing::warn!(error = %custodia_service::error::Chain(&e), action, "a room step failed");
                    }
                    ErrorClass::Internal => {
                        tracing::error!(error = %custodia_service::error::Chain(&e), action, "a room step failed");
                    }
                }
                let _ = outbox.send(RoomMessage::Error { detail: e.to_string() });
            }
            Err(partly @ RoomError::PartlyDone(_)) => {
                tracing::error!(error = %custodia_service::error::Chain(&partly), action, "a room step failed");
                let _ = outbox.send(RoomMessage::Error { detail: partly.to_string() });
            }
        }
        if leaving {
            break;
        }
    }
    // Leaving takes the participant's media down with them (the hearing's move to Away).
    hearing.connection_closed(&participant, room_connection).await;
    drop(outbox);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    linger(stream).await;
}

/// Reads and discards what the client still sends after the gateway's close frame, until the client's close
/// frame, the end of the stream, or [`CLOSE_LINGER`], so that the close frame reaches it.
async fn linger(mut stream: futures::stream::SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
                // What cannot be read as frames (the rest of a message over the limit, after which the stream
                // ends) stays unread, and the socket is held to the end of the wait, so that the client reads the
                // close frame before the reset that dropping a socket with unread data sends.
                Some(Err(_)) | None => std::future::pending::<()>().await,
            }
        }
    })
    .await;
}

/// STUN and TURN servers, with TURN credentials made for this answer, for someone in a hearing
/// ([`custodia_hearings::live::Hearings::may_relay`]): a participant, by the credential the room gave them, or a WHIP
/// publisher, by its invite's secret. A relay is for a hearing's media, so an account in no hearing, or a secret
/// that no longer lets anyone in, gets none.
async fn ice_servers(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    if !state.hearings.may_relay(bearer(&headers)?).await {
        return Err(GatewayError::Unauthenticated.into());
    }
    let servers = state.ice_servers.issue(state.gateway.now());
    let mut response = axum::Json(IceServersAnswer { ice_servers: servers }).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The STUN and TURN servers a participant's browser should use.
#[derive(Serialize)]
struct IceServersAnswer {
    ice_servers: Vec<IceServerJson>,
}

/// The bearer token of a WHIP request: an invite's secret, which WHIP clients send as their token.
fn bearer(headers: &HeaderMap) -> Result<&str, Problem> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| Problem::from(GatewayError::Unauthenticated))
}

/// How long a WHIP publisher told that its hearing is moving waits before it tries again: a takeover takes a lease's
/// expiry (15 s) at most.
const SERVED_ELSEWHERE_RETRY_AFTER_SECONDS: u64 = 5;

/// Logs the gateway's own failure behind a refused entry, with its causes (the person is told only its key and
/// its text, which says nothing internal): a backend unavailable as a warning, since the page tries again; any other
/// failure as an error.
fn log_not_let_in(refusal: &EnterRefusal) {
    match refusal {
        EnterRefusal::Unavailable(e) => {
            tracing::warn!(error = %crate::problem::Chain(e), "not let into a hearing room for now; the page tries again");
        }
        EnterRefusal::Failed(e) if e.class() == ErrorClass::Internal => {
            tracing::error!(error = %crate::problem::Chain(e), "not let into a hearing room: the gateway failed");
        }
        _ => {}
    }
}

/// A WHIP publisher not let in: past the budgets of attempts to enter, 429 `too-many` with `Retry-After`, like every
/// other budget; while its hearing moves to another gateway or a backend is unavailable, 503 `unavailable` with
/// `Retry-After`, after which it tries again, as after any 503; a failure inside the gateway, 500 `internal`, which
/// says nothing of it; otherwise 403 `room-refused`, the detail saying why.
fn not_in_room(refusal: EnterRefusal) -> Problem {
    match refusal {
        EnterRefusal::TooManyAttempts { retry_after_seconds } => {
            GatewayError::TooManyAttempts { what: "attempts to enter", retry_after_seconds }.into()
        }
        EnterRefusal::ServedElsewhere => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable", refusal.to_string())
                .with_retry_after(SERVED_ELSEWHERE_RETRY_AFTER_SECONDS)
        }
        // Logged, with its causes, as every unavailable backend and every internal failure is (crate::problem).
        EnterRefusal::Unavailable(e) => e.into(),
        EnterRefusal::Failed(e) if e.class() == ErrorClass::Internal => e.into(),
        refusal => Problem::new(StatusCode::FORBIDDEN, "room-refused", "Not let into the hearing", refusal.to_string()),
    }
}

/// WHIP (RFC 9725) into a hearing room: a standard publisher (GStreamer, OBS, `simple-whip-client`) joins with an
/// invite's secret as its bearer token, waits in the lobby like anyone else, and once admitted its media reaches
/// the room and, while recording, the recorder. The same token ends the session (DELETE) or reconnects (POST again).
///
/// The offer is negotiated before the publisher enters the hearing: an offer the media engine refuses, like a
/// secret that cannot enter or a publisher over a cap, leaves nothing in the hearing and nothing on the record, so
/// posting refused offers again and again cannot grow the public log.
async fn whip_publish(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let secret = bearer(&headers)?;
    let offer = crate::whip::sdp_offer(&headers, &body)?;
    let entry =
        state.hearings.whip_entry(secret, crate::listen::client_network(&extensions)).await.map_err(not_in_room)?;
    // Publishers at once, per case and per inviting account, before the engine does any work for this one.
    let quotas = &state.gateway.quotas();
    let caps = WhipCaps { per_case: quotas.whip_sessions_per_case, per_account: quotas.whip_sessions_per_account };
    if let Some(full) = state.hearings.whip_full(&entry, caps).await {
        return Err(GatewayError::TooMany(full).into());
    }
    let offered = entry.hearing().room().accept(offer).await.map_err(engine_refused)?;
    let Entered { hearing, participant, connection } = match state.hearings.enter_publisher(entry, caps).await {
        Ok(entered) => entered,
        Err(refusal) => {
            offered.close().await;
            return Err(match refusal {
                WhipRefusal::Full(full) => GatewayError::TooMany(full).into(),
                WhipRefusal::Refused(e) => not_in_room(e),
            });
        }
    };
    let connected = match hearing.room().attach(participant.as_str(), offered).await {
        Ok(connected) => connected,
        Err(e) => {
            hearing.connection_closed(&participant, connection).await;
            return Err(engine_refused(e));
        }
    };
    // A publisher that vanishes without a DELETE has lost its connection.
    let watched = hearing.clone();
    let who = participant.clone();
    tokio::spawn(async move {
        connected.failed.await;
        watched.connection_closed(&who, connection).await;
    });
    crate::whip::created(&state, &format!("/api/v1/room/whip/{participant}"), connected.answer)
}

/// An offer the media engine did not take: busy (503, with `Retry-After`), or not an offer it can answer (400).
fn engine_refused(e: custodia_recorder::EngineError) -> Problem {
    match e {
        custodia_recorder::EngineError::Busy(_) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "Media server busy", e.to_string())
                .with_retry_after(crate::problem::UNAVAILABLE_RETRY_AFTER_SECONDS)
        }
        // With webrtc-rs's reason, the error's source.
        e => bad_input("offer", crate::problem::Chain(&e)).into(),
    }
}

async fn whip_end(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(participant): Path<String>,
) -> Result<StatusCode, Problem> {
    let secret = bearer(&headers)?;
    let not_found = || Problem::from(GatewayError::NotFound("no such WHIP session".to_owned()));
    let (hearing, owner) = state.hearings.by_credential(secret).await.ok_or_else(not_found)?;
    if owner.as_str() != participant {
        return Err(not_found());
    }
    match hearing.act(&owner, RoomStep::Leave).await {
        Ok(()) | Err(RoomError::Refused(_)) => Ok(StatusCode::OK),
        Err(err @ (RoomError::Gateway(_) | RoomError::PartlyDone(_))) => Err(GatewayError::from(err).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::Plumbing;

    fn read(text: &str) -> Result<Plumbing, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn a_page_says_what_it_takes_of_the_connection_as_before() {
        assert!(matches!(read(r#"{"type": "ping", "sent_at": 1}"#), Ok(Plumbing::Ping)));
        assert!(matches!(read(r#"{"type": "offer", "sdp": "v=0"}"#), Ok(Plumbing::Offer { sdp }) if sdp == "v=0"));
        assert!(read(r#"{"type": "offer", "sdp": 5}"#).is_err());
        assert!(read(r#"{"type": "offer"}"#).is_err());
        for everyone in [r#"{"type": "receive_video"}"#, r#"{"type": "receive_video", "slots": null}"#] {
            assert!(matches!(read(everyone), Ok(Plumbing::ReceiveVideo { slots: None })), "{everyone}");
        }
        let some = read(r#"{"type": "receive_video", "slots": [2, 0]}"#);
        assert!(matches!(some, Ok(Plumbing::ReceiveVideo { slots: Some(slots) }) if slots == [0, 2].into()));
        assert!(read(r#"{"type": "receive_video", "slots": [-1]}"#).is_err());
    }
}
