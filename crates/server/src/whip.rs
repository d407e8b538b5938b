//! WHIP (RFC 9725) ingest into a hearing: a case member publishes audio and video with any WHIP client, and the
//! gateway records it as WebM segments that enter custody one by one as they close (see `custodia-recorder`).
//!
//! - `POST /api/v1/cases/{case}/hearings/{hearing}/whip`, `Content-Type: application/sdp`, the body an SDP offer:
//!   `201 Created`, the SDP answer, and `Location` of the session resource.
//!   With STUN/TURN servers configured, the answer carries them as RFC 9725 §4.4 `Link: <turn:...>;
//!   rel="ice-server"` headers, TURN ones with a fresh short-lived credential ([`crate::turn`]), so a publisher on a
//!   network that blocks UDP can relay through TURN over TCP or TLS.
//! - `DELETE` on that resource ends the session: the open segment is closed and enters custody.
//!
//! Each segment is ingested through [`Gateway::ingest_hearing_output`] as the publisher, bound when the session
//! began (authorised then to upload), so it is an artefact of the case like any other: stored write-once, its
//! SHA-256 in a registration record in the ledger, retrievable and bundleable. A segment that cannot enter custody
//! is tried again, then quarantined ([`crate::quarantine`]).
//! Segment files wait in `data/recordings/` until then, outside the object store; a file there is never evidence.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use custodia_core::{Action, CaseId, HearingId};
use custodia_recorder::segmenter::RecordingConfig;
use custodia_recorder::{EngineConfig, SealedSegment, SegmentSealer, WebRtcEngine, WhipIngest};
use tokio::sync::Mutex;

use crate::api::AppState;
use crate::auth::Caller;
use crate::gateway::{Gateway, GatewayError, bad_input};
use crate::problem::Problem;

/// The live WHIP sessions of this gateway, and who started each.
pub struct WhipSessions {
    ingest: WhipIngest,
    recordings_dir: PathBuf,
    quarantine_dir: PathBuf,
    /// Session id to (case, hearing, account that published).
    owners: Mutex<HashMap<String, (CaseId, HearingId, String)>>,
}

impl std::fmt::Debug for WhipSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipSessions").field("recordings_dir", &self.recordings_dir).finish_non_exhaustive()
    }
}

impl WhipSessions {
    /// Segment files are written under `recordings_dir` until they enter custody, or go to `quarantine_dir` if
    /// they cannot ([`crate::quarantine`]).
    pub fn new(recordings_dir: PathBuf, quarantine_dir: PathBuf) -> anyhow::Result<Self> {
        // Loopback candidates are offered so that a publisher on the same host can connect. The gateway gathers
        // host candidates only: publishers that cannot reach them over UDP come through the TURN servers they are
        // given (`Link` headers below), since webrtc-rs 0.17 cannot take ICE over TCP.
        let engine = WebRtcEngine::new(EngineConfig { include_loopback: true, ice_servers: vec![] })?;
        Ok(WhipSessions {
            ingest: WhipIngest::new(engine),
            recordings_dir,
            quarantine_dir,
            owners: Mutex::new(HashMap::new()),
        })
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/cases/{case}/hearings/{hearing}/whip", post(publish))
        .route("/api/v1/cases/{case}/hearings/{hearing}/whip/{session}", delete(unpublish))
        .with_state(state)
}

/// Ingests each sealed segment as an artefact of the case, as the publisher, then removes the staged file.
struct IngestSegments {
    gateway: Gateway,
    /// The publisher, bound when the session began and authorised then to upload.
    caller: Caller,
    case: CaseId,
    hearing: HearingId,
    /// Where segments that cannot enter custody are kept, and the prefix of their names there.
    quarantine_dir: PathBuf,
    tag: String,
}

#[async_trait::async_trait]
impl SegmentSealer for IngestSegments {
    async fn on_segment_sealed(&self, segment: &SealedSegment) -> Result<(), String> {
        let bytes = tokio::fs::read(&segment.path).await.map_err(|e| format!("reading the segment: {e}"))?;
        let name = format!("{}-segment-{:05}.webm", self.hearing, segment.index);
        let output = crate::quarantine::Output {
            court: &self.caller,
            case: &self.case,
            hearing: &self.hearing,
            purpose: "hearing recording",
            media_type: "video/webm",
            name: &name,
        };
        let destination = self.quarantine_dir.join(format!("{}-{name}", self.tag));
        let registered = output
            .into_custody(&self.gateway, bytes, Some(&segment.path), &destination)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            case = %self.case, hearing = %self.hearing, index = segment.index, artefact = %registered.artefact,
            sha256 = %registered.sha256, ledger_index = registered.ledger_index, "recording segment in custody"
        );
        if let Err(e) = tokio::fs::remove_file(&segment.path).await {
            tracing::warn!(error = %e, "could not remove a staged segment that is in custody");
        }
        Ok(())
    }
}

fn ids(case: &str, hearing: &str) -> Result<(CaseId, HearingId), Problem> {
    let case = CaseId::new(case).map_err(|err| Problem::from(bad_input("case", err)))?;
    let hearing = HearingId::new(hearing).map_err(|err| Problem::from(bad_input("hearing", err)))?;
    Ok((case, hearing))
}

async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let (case, hearing) = ids(&case, &hearing)?;
    state.gateway.authorize(&caller, &case, Action::UploadArtefact).await?;
    let offer = sdp_offer(&headers, &body)?;
    let whip = &state.whip;
    let dir = whip.recordings_dir.join(case.as_str()).join(hearing.as_str());
    let sealer = Arc::new(IngestSegments {
        gateway: state.gateway.clone(),
        caller: Caller { account: caller.account.clone(), channel: crate::auth::Channel::Session },
        case: case.clone(),
        hearing: hearing.clone(),
        quarantine_dir: crate::quarantine::hearing_dir(&whip.quarantine_dir, &case, &hearing),
        tag: crate::gateway::new_id("whip"),
    });
    let answer = whip.ingest.accept_whip_offer(offer, RecordingConfig::new(dir), sealer).await.map_err(|e| {
        tracing::info!(error = %e, "WHIP offer refused");
        Problem::from(bad_input("offer", e))
    })?;
    whip.owners.lock().await.insert(answer.session_id.clone(), (case.clone(), hearing.clone(), caller.account.id));
    let location = format!("/api/v1/cases/{case}/hearings/{hearing}/whip/{}", answer.session_id);
    created(&state, &location, answer.sdp)
}

/// The SDP offer of a WHIP POST: `Content-Type: application/sdp`, UTF-8.
pub(crate) fn sdp_offer<'a>(headers: &HeaderMap, body: &'a Bytes) -> Result<&'a str, Problem> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case("application/sdp")) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Wrong media type",
            "send the WHIP offer as Content-Type: application/sdp",
        ));
    }
    std::str::from_utf8(body).map_err(|_| Problem::from(bad_input("offer", "not UTF-8 text")))
}

/// A WHIP `201 Created`: the answer, the session resource, and the STUN/TURN servers as RFC 9725 §4.4 links.
pub(crate) fn created(state: &AppState, location: &str, answer_sdp: String) -> Result<Response, Problem> {
    let location = HeaderValue::from_str(location).map_err(|e| Problem::internal(&e))?;
    let content_type = HeaderValue::from_static("application/sdp");
    let mut response =
        (StatusCode::CREATED, [(header::LOCATION, location), (header::CONTENT_TYPE, content_type)], answer_sdp)
            .into_response();
    for link in state.ice_servers.link_headers(state.gateway.now()) {
        response.headers_mut().append(header::LINK, HeaderValue::from_str(&link).map_err(|e| Problem::internal(&e))?);
    }
    Ok(response)
}

async fn unpublish(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, hearing, session)): Path<(String, String, String)>,
) -> Result<StatusCode, Problem> {
    let (case, hearing) = ids(&case, &hearing)?;
    state.gateway.authorize(&caller, &case, Action::UploadArtefact).await?;
    let whip = &state.whip;
    {
        let mut owners = whip.owners.lock().await;
        // Only the publisher ends its session; anyone else is told there is no such session.
        match owners.get(&session) {
            Some((c, h, account)) if *c == case && *h == hearing && *account == caller.account.id => {
                owners.remove(&session);
            }
            _ => return Err(GatewayError::NotFound("no such WHIP session".to_owned()).into()),
        }
    }
    let summary =
        whip.ingest.teardown(&session).await.ok_or(GatewayError::NotFound("no such WHIP session".to_owned()))?;
    tracing::info!(
        case = %case, hearing = %hearing, segments = summary.segments.len(), errors = ?summary.errors,
        "WHIP session ended"
    );
    // A recording that could not be sealed completely must not look like a clean one to the court's client.
    if !summary.errors.is_empty() {
        return Err(Problem::internal(&format!(
            "WHIP session ended with {} sealed segments and {} errors: {:?}",
            summary.segments.len(),
            summary.errors.len(),
            summary.errors
        )));
    }
    Ok(StatusCode::OK)
}
