//! The custody log served read-only at the c2sp.org/tlog-tiles paths below `/log/`, so that outside monitors can
//! follow it with any tlog client.

use axum::Router;
use axum::extract::State;

use crate::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use custodia_ledger::CHECKPOINT;
use custodia_ledger::tile::Tile;

use crate::cosigning::Published;
use crate::problem::{Chain, Problem};
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/readyz/hearings", get(ready_for_hearings))
        .route("/readyz/transfers", get(ready_for_transfers))
        // Metrics are served on their own listener only (crate::metrics); here, a GET is told so, and any other
        // method is one /metrics never takes (405).
        .route("/metrics", get(metrics_elsewhere))
        .route("/log/checkpoint", get(checkpoint))
        .route("/log/{*path}", get(tile))
        .with_state(state)
}

/// `ok` whenever the process answers: liveness, whether to restart it. It reads no database and no store, and a
/// custody log that takes no appends (its store failing) does not make it fail: the log recovers by itself once its
/// store does (`Log::is_appending`), and a restart would only cut the uploads, transfers and hearings under way (with
/// a shared store down, of every gateway at once). `/readyz` and the `custodia_log_appending` metric say that.
async fn health() -> &'static str {
    "ok"
}

/// How long each readiness check may take: a store or a database that does not answer within it is not ready.
const READINESS_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The `Retry-After` of a 503 from `/readyz`, in seconds.
const NOT_READY_RETRY_AFTER_SECONDS: u64 = 5;

/// Ready to take traffic: the catalog database answers a query, the object store answers a listing, and the
/// custody log takes appends. Where `/healthz` says whether to restart the process, this says whether to send it
/// requests: a database or a store that is away makes it not ready, and it is again once they are back. Checked
/// at once, each within [`READINESS_CHECK_TIMEOUT`]; the operator's log gets each failure's detail, the answer
/// only its name.
async fn ready(State(state): State<AppState>) -> Response {
    readiness(&state, Vec::new()).await
}

/// Ready for the live hearings' requests: [`ready`], and this gateway hosts the hearings
/// ([`custodia_hearings::live::Hearings::hosts_hearings`]). The load balancer sends every hearing's requests to the one
/// gateway that says so (deploy/compose/Caddyfile).
async fn ready_for_hearings(State(state): State<AppState>) -> Response {
    let hosts = state.hearings.hosts_hearings();
    readiness(&state, if hosts { Vec::new() } else { vec!["another gateway hosts the hearings"] }).await
}

/// Ready for partner gateways' requests about transfers: [`ready`], and this gateway holds the duty of the transfers
/// ([`custodia_service::transfers::Transfers::on_duty`]): it alone takes them, stages what arrives and drives what is sent. The
/// load balancer sends every `/partner/v1/transfers` request to the one gateway that says so
/// (deploy/compose/Caddyfile).
async fn ready_for_transfers(State(state): State<AppState>) -> Response {
    let holds = state.transfers.on_duty();
    readiness(&state, if holds { Vec::new() } else { vec!["another gateway handles the transfers with partners"] })
        .await
}

/// `ready`, or 503 naming what is `not_ready` besides what the checks find.
async fn readiness(state: &AppState, mut not_ready: Vec<&'static str>) -> Response {
    let gateway = &state.gateway;
    let (catalog, store) = tokio::join!(
        tokio::time::timeout(READINESS_CHECK_TIMEOUT, async {
            gateway.catalog().ping().await.map_err(|e| Chain(&e).to_string())
        }),
        tokio::time::timeout(READINESS_CHECK_TIMEOUT, async {
            gateway.artefacts().answers().await.map_err(|e| Chain(&e).to_string())
        }),
    );
    for (part, outcome) in
        [("the catalog database does not answer", catalog), ("the object store does not answer", store)]
    {
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => error,
            Err(_) => format!("no answer within {} s", READINESS_CHECK_TIMEOUT.as_secs()),
        };
        tracing::warn!(error = %failure, "not ready: {part}");
        not_ready.push(part);
    }
    if !gateway.log().is_appending() {
        not_ready.push("the custody log takes no appends");
    }
    if not_ready.is_empty() {
        return "ready".into_response();
    }
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
        "Not ready",
        format!("not ready for traffic: {}", not_ready.join("; ")),
    )
    .with_retry_after(NOT_READY_RETRY_AFTER_SECONDS)
    .into_response()
}

async fn metrics_elsewhere() -> Problem {
    Problem::not_found("no such endpoint here: metrics are served only on the address CUSTODIA_METRICS_LISTEN names")
}

async fn checkpoint(State(state): State<AppState>) -> Response {
    // Served from memory: the log's checkpoint is exactly what is durable in the store; with a witness policy, the
    // one published under it with its cosignatures (crate::cosigning).
    let note = match state.cosigning.published() {
        Published::NotCollecting => state.gateway.log().checkpoint().note().to_vec(),
        Published::Note(note) => note,
        Published::Nothing => return crate::cosigning::nothing_published(),
    };
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], note).into_response()
}

async fn tile(State(state): State<AppState>, Path(path): Path<String>) -> Result<Response, Problem> {
    let tile = Tile::parse_path(&path).ok_or_else(|| Problem::not_found("not a c2sp.org/tlog-tiles path"))?;
    let size = state.gateway.log().checkpoint().checkpoint.size;
    if !tile_published(tile, size) {
        return Err(Problem::not_found(format!("{path} is beyond the published checkpoint")));
    }
    let bytes = state
        .gateway
        .log()
        .storage()
        .get(&tile.path())
        .await
        .map_err(|err| crate::problem::Problem::from(custodia_service::gateway::GatewayError::from(err)))?
        .ok_or_else(|| Problem::not_found(format!("{path} has been superseded by its full tile")))?;
    debug_assert_ne!(tile.path(), CHECKPOINT);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response())
}

/// Whether the published tree of `size` covers all of `tile`: only then is it immutable and safe to serve.
fn tile_published(tile: Tile, size: u64) -> bool {
    use custodia_ledger::tile::{TILE_HEIGHT, TILE_WIDTH, TileKind};
    let level = match tile.kind {
        TileKind::Entries => 0,
        TileKind::Hashes { level } => level,
    };
    let stored = size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT)).unwrap_or(0);
    tile.index.saturating_mul(TILE_WIDTH).saturating_add(u64::from(tile.width)) <= stored
}
