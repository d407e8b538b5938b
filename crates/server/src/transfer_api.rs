//! The routes of transfers between partner gateways ([`custodia_service::transfers`]; requests to partners go
//! through [`crate::partner_client`]).
//!
//! For members: `POST /api/v1/artefacts/{id}/transfers` sends an artefact to a partner (`{"partner", "purpose"}`;
//! 202, the transfer goes on in the background), `GET /api/v1/artefacts/{id}/transfers` lists an artefact's
//! transfers with their evidences, and `GET /api/v1/partners` names the partners one may send to.
//!
//! For partner gateways, each request signed ([`crate::partner_api::FromPartner`]): `POST /partner/v1/transfers`
//! (an offer), `PUT /partner/v1/transfers/{id}/chunks/{offset}` (a chunk of at most 8 MiB), `POST
//! /partner/v1/transfers/{id}/complete`, and `GET /partner/v1/transfers/{id}`, each answered with the transfer's
//! progress; `POST /partner/v1/transfers/{id}/outcomes` and `.../widen-requests`, an outcome report or a request to
//! widen use from the receiving gateway about what it was sent, and `.../widen-decisions`, the provider's decision
//! coming back (each 204).
//!
//! Of the gateways on one database, the one that holds the duty of the transfers takes the partners' requests (the
//! load balancer sends them to the gateway whose `/readyz/transfers` answers); another answers them 503
//! `unavailable` with `Retry-After` before it reads a body or checks a signature ([`OnTransferDuty`]), and the
//! partner tries again.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use custodia_partners::transfer::{MAX_CHUNK_BYTES, Offer, Progress};
use serde::{Deserialize, Serialize};

use crate::api::{ApiJson, artefact_id, json, label};
use crate::auth::Caller;
use crate::partner_api::FromPartner;
use crate::problem::Problem;
use crate::state::AppState;

/// A chunk's body: at most [`MAX_CHUNK_BYTES`].
const CHUNK_LIMIT: usize = MAX_CHUNK_BYTES as usize;
/// An offer's body: the provider's chain in base64 (at most [`custodia_bundle::layout_paths::MAX_PROVIDER_CHAIN_BYTES`]),
/// with the rest of the offer.
const OFFER_LIMIT: usize = (custodia_bundle::layout_paths::MAX_PROVIDER_CHAIN_BYTES as usize).div_ceil(3) * 4
    + crate::partner_api::PARTNER_BODY_LIMIT;

/// How long a partner told that another gateway handles the transfers waits before it tries again: the load
/// balancer looks every 5 s, and a takeover takes a lease's expiry (15 s) at most.
const ELSEWHERE_RETRY_AFTER_SECONDS: u64 = 5;

/// A partner's request about a transfer, on the gateway that holds the duty of the transfers
/// ([`custodia_service::transfers::Transfers::on_duty`]); elsewhere, 503 with `Retry-After`, before anything else is read.
#[derive(Debug)]
pub struct OnTransferDuty;

impl FromRequestParts<AppState> for OnTransferDuty {
    type Rejection = Problem;

    async fn from_request_parts(_parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        if state.transfers.on_duty() {
            return Ok(Self);
        }
        Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
            format!("{} is unavailable here now; try again shortly", custodia_service::transfers::TRANSFERS_ELSEWHERE),
        )
        .with_retry_after(ELSEWHERE_RETRY_AFTER_SECONDS))
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/partners", get(partners))
        .route("/api/v1/admin/partners/pinned", get(pinned))
        .route("/api/v1/artefacts/{id}/transfers", post(send).get(list))
        .route("/partner/v1/transfers", post(offered))
        .route("/partner/v1/transfers/{id}", get(progress))
        .route("/partner/v1/transfers/{id}/chunks/{offset}", put(chunk))
        .route("/partner/v1/transfers/{id}/complete", post(complete))
        .route("/partner/v1/transfers/{id}/outcomes", post(outcome))
        .route("/partner/v1/transfers/{id}/widen-requests", post(widen_request))
        .route("/partner/v1/transfers/{id}/widen-decisions", post(widen_decision))
        .with_state(state)
}

/// A partner one may send to, as the console lists it.
#[derive(Debug, Serialize)]
struct PartnerListed {
    name: String,
    jurisdiction: String,
}

/// How many registries an auditor is shown, newest first: far more than a gateway's partners change.
const PINNED_SHOWN: usize = 1000;

/// A partner registry this gateway pinned on the record, with what opens it.
#[derive(Debug, Serialize)]
struct PinnedListed {
    /// The `partners_pinned` entry's ledger index.
    index: u64,
    /// The entry, byte for byte (base64), whose `registry` commitment the openings open.
    entry: String,
    /// The canonical openings (`{"registry":{"salt","text"}}`): `text` is the canonical registry.
    openings: String,
}

/// The partner registries this gateway pinned on its log, newest first, opened: an administrator (or an auditor
/// signed in as one) sees which partners, keys and URLs were pinned from when, and checks each against the public
/// log (the entry's commitment, and its inclusion proof from `/api/v1/log/...`).
async fn pinned(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<PinnedListed>>, Problem> {
    use base64::Engine as _;
    caller.require_admin("read the partner registries pinned on the record")?;
    let pinned = state.gateway.pinned_partner_registries(PINNED_SHOWN).await?;
    let listed = pinned
        .into_iter()
        .map(|pinned| PinnedListed {
            index: pinned.index,
            entry: base64::engine::general_purpose::STANDARD.encode(&pinned.entry),
            openings: String::from_utf8_lossy(&pinned.openings.to_canonical()).into_owned(),
        })
        .collect();
    Ok(Json(listed))
}

async fn partners(State(state): State<AppState>, _caller: Caller) -> Json<Vec<PartnerListed>> {
    let listed = state
        .partnering
        .registry()
        .partners()
        .iter()
        .map(|partner| PartnerListed { name: partner.name.clone(), jurisdiction: partner.jurisdiction.clone() })
        .collect();
    Json(listed)
}

/// No `Debug`: a purpose is typed text, which may name people.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTransfer {
    partner: String,
    purpose: String,
}

async fn send(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewTransfer>,
) -> Result<Response, Problem> {
    let id = artefact_id(&id)?;
    let purpose = label("purpose", &body.purpose)?;
    let view = state.transfers.send(&caller, &id, &body.partner, &purpose).await?;
    Ok(json(StatusCode::ACCEPTED, view))
}

async fn list(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = artefact_id(&id)?;
    Ok(json(StatusCode::OK, state.transfers.of_artefact(&caller, &id).await?))
}

async fn offered(
    State(state): State<AppState>,
    _on_duty: OnTransferDuty,
    request: FromPartner<OFFER_LIMIT>,
) -> Result<Json<Progress>, Problem> {
    let offer: Offer = request.json("a transfer's offer")?;
    Ok(Json(state.transfers.offered(&request.partner, offer).await?))
}

async fn progress(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _on_duty: OnTransferDuty,
    request: FromPartner,
) -> Result<Json<Progress>, Problem> {
    Ok(Json(state.transfers.progress_of(&request.partner, &id).await?))
}

async fn chunk(
    State(state): State<AppState>,
    Path((id, offset)): Path<(String, String)>,
    _on_duty: OnTransferDuty,
    request: FromPartner<CHUNK_LIMIT>,
) -> Result<Json<Progress>, Problem> {
    // Read after the signature is checked, and as a problem when it is not a byte offset.
    let offset = offset
        .parse::<u64>()
        .ok()
        .filter(|offset| *offset <= custodia_partners::transfer::MAX_TRANSFER_BYTES)
        .ok_or_else(|| Problem::bad_request(format!("offset: {offset:?} is not a byte offset of a transfer")))?;
    Ok(Json(state.transfers.chunk(&request.partner, &id, offset, request.body).await?))
}

async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _on_duty: OnTransferDuty,
    request: FromPartner,
) -> Result<Json<Progress>, Problem> {
    Ok(Json(state.transfers.complete(&request.partner, &id).await?))
}

async fn outcome(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _on_duty: OnTransferDuty,
    request: FromPartner,
) -> Result<StatusCode, Problem> {
    let report: custodia_service::transfers::OutcomeReport = request.json("an outcome report")?;
    state.transfers.outcome_reported(&request.partner, &id, report).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn widen_request(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _on_duty: OnTransferDuty,
    request: FromPartner,
) -> Result<StatusCode, Problem> {
    let widen: custodia_service::transfers::WidenRequest = request.json("a request to widen use")?;
    state.transfers.widen_requested(&request.partner, &id, widen).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn widen_decision(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _on_duty: OnTransferDuty,
    request: FromPartner,
) -> Result<StatusCode, Problem> {
    let decision: custodia_service::transfers::WidenDecision = request.json("a decision on wider use")?;
    state.transfers.widen_decided(&request.partner, &id, decision).await?;
    Ok(StatusCode::NO_CONTENT)
}
