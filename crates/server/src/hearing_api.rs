//! The hearing's HTTP routes for the case console, and the room's WebSocket (docs/hearing-room.md).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use custodia_core::CaseId;
use custodia_hearing::InviteId;
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{ApiJson, AppState};
use crate::auth::Caller;
use crate::extract::Path;
use crate::gateway::bad_input;
use crate::hearings::{ConsoleStep, Entered, InviteRequest, RoomError, RoomStep, ScheduleRequest};
use crate::problem::Problem;

/// The largest room message taken: an SDP offer with every candidate is a few kilobytes.
const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// How long a new socket has to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);

pub fn router(state: AppState) -> Router {
    let hearing = "/api/v1/cases/{case}/hearings/{hearing}";
    Router::new()
        .route("/api/v1/cases/{case}/hearings", post(schedule).get(list))
        .route(hearing, get(view))
        .route(&format!("{hearing}/invites"), post(invite))
        .route(&format!("{hearing}/invites/{{invite}}"), delete(revoke))
        .route(&format!("{hearing}/open"), post(open))
        .route(&format!("{hearing}/close"), post(close))
        .route("/api/v1/room", any(room))
        .with_state(state)
}

fn case_id(text: &str) -> Result<CaseId, Problem> {
    CaseId::new(text).map_err(|err| Problem::from(bad_input("case", err)))
}

async fn schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(case): Path<String>,
    ApiJson(request): ApiJson<ScheduleRequest>,
) -> Result<Response, Problem> {
    let live = state.hearings.schedule(&caller, &case_id(&case)?, request).await?;
    Ok((StatusCode::CREATED, axum::Json(live.view().await)).into_response())
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(case): Path<String>,
) -> Result<axum::Json<Value>, Problem> {
    let case = case_id(&case)?;
    state.gateway.authorize(&caller, &case, custodia_core::Action::ViewCase).await?;
    let mut hearings = Vec::new();
    for live in state.hearings.of_case(&case) {
        hearings.push(live.view().await);
    }
    Ok(axum::Json(json!({ "hearings": hearings })))
}

async fn view(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing)): Path<(String, String)>,
) -> Result<axum::Json<Value>, Problem> {
    let live = state.hearings.find(&caller, &case_id(&case)?, &hearing).await?;
    Ok(axum::Json(live.view().await))
}

async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing)): Path<(String, String)>,
    ApiJson(request): ApiJson<InviteRequest>,
) -> Result<Response, Problem> {
    let live = state.hearings.find(&caller, &case_id(&case)?, &hearing).await?;
    let issued = state.hearings.invite(&caller, &live, request).await?;
    Ok((StatusCode::CREATED, axum::Json(issued)).into_response())
}

async fn console_step(
    state: &AppState,
    caller: &Caller,
    case: &str,
    hearing: &str,
    step: ConsoleStep,
) -> Result<axum::Json<Value>, Problem> {
    let live = state.hearings.find(caller, &case_id(case)?, hearing).await?;
    state.hearings.console(caller, &live, step).await?;
    Ok(axum::Json(live.view().await))
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

async fn open(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing)): Path<(String, String)>,
) -> Result<axum::Json<Value>, Problem> {
    console_step(&state, &caller, &case, &hearing, ConsoleStep::Open).await
}

async fn close(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing)): Path<(String, String)>,
) -> Result<axum::Json<Value>, Problem> {
    console_step(&state, &caller, &case, &hearing, ConsoleStep::Close).await
}

async fn room(State(state): State<AppState>, upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> Response {
    match upgrade {
        Ok(upgrade) => upgrade.max_message_size(MAX_MESSAGE_BYTES).on_upgrade(move |socket| run_room(state, socket)),
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
    Join { invite: String },
    Rejoin { credential: String },
}

async fn next_text(socket: &mut futures::stream::SplitStream<WebSocket>) -> Option<String> {
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Text(text) => return Some(text.to_string()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
    None
}

/// Messages after which the server closes the socket.
fn is_final(message: &Value) -> bool {
    matches!(message["type"].as_str(), Some("ended" | "removed" | "replaced" | "refused_hello"))
}

async fn run_room(state: AppState, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut outgoing) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let last = is_final(&message);
            let mut message = message;
            if message["type"] == "refused_hello" {
                message["type"] = json!("refused");
            }
            if sink.send(Message::Text(message.to_string().into())).await.is_err() || last {
                break;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });
    let hello = tokio::time::timeout(HELLO_TIMEOUT, next_text(&mut stream)).await.ok().flatten();
    let entered = match hello.as_deref().map(serde_json::from_str::<Hello>) {
        Some(Ok(Hello::Join { invite })) => state.hearings.join(&invite, outbox.clone()).await,
        Some(Ok(Hello::Rejoin { credential })) => state.hearings.rejoin(&credential, outbox.clone()).await,
        Some(Err(e)) => Err(format!("the first message must be join or rejoin: {e}")),
        None => Err("no join message".to_owned()),
    };
    let Entered { hearing, participant, connection } = match entered {
        Ok(entered) => entered,
        Err(reason) => {
            let _ = outbox.send(json!({"type": "refused_hello", "reason": reason}));
            drop(outbox);
            let _ = writer.await;
            return;
        }
    };
    while let Some(text) = next_text(&mut stream).await {
        if !hearing.is_current(&participant, connection).await {
            break;
        }
        let message: Value = match serde_json::from_str(&text) {
            Ok(message) => message,
            Err(e) => {
                let _ = outbox.send(json!({"type": "error", "detail": format!("not JSON: {e}")}));
                continue;
            }
        };
        if message["type"] == "offer" {
            let Some(sdp) = message["sdp"].as_str() else {
                let _ = outbox.send(json!({"type": "error", "detail": "an offer needs its sdp"}));
                continue;
            };
            let reply = match hearing.room().connect(participant.as_str(), sdp).await {
                Ok(answer) => json!({"type": "answer", "sdp": answer}),
                Err(e) => json!({"type": "error", "detail": format!("the offer was not accepted: {e}")}),
            };
            let _ = outbox.send(reply);
            continue;
        }
        let step: RoomStep = match serde_json::from_value(message) {
            Ok(step) => step,
            Err(e) => {
                let _ = outbox.send(json!({"type": "error", "detail": format!("not a room message: {e}")}));
                continue;
            }
        };
        let action = step.name();
        let leaving = matches!(step, RoomStep::Leave);
        match hearing.act(&participant, step).await {
            Ok(()) => {}
            Err(RoomError::Refused(refusal)) => {
                let _ = outbox.send(json!({"type": "refused", "action": action, "reason": refusal.to_string()}));
            }
            Err(RoomError::Gateway(e)) => {
                tracing::warn!(error = %e, action, "a room step failed");
                let _ = outbox.send(json!({"type": "error", "detail": e.to_string()}));
            }
        }
        if leaving {
            break;
        }
    }
    // Leaving takes the participant's media down with them (the hearing's move to Away).
    hearing.connection_closed(&participant, connection).await;
    drop(outbox);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}
