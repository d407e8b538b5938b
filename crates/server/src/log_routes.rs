//! The custody log served read-only at the c2sp.org/tlog-tiles paths below `/log/`, so that outside monitors can
//! follow it with any tlog client.

use axum::Router;
use axum::extract::State;

use crate::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use custodia_ledger::CHECKPOINT;
use custodia_ledger::tile::Tile;

use crate::api::AppState;
use crate::cosigning::Published;
use crate::problem::Problem;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/log/checkpoint", get(checkpoint))
        .route("/log/{*path}", get(tile))
        .with_state(state)
}

/// `ok` while the gateway can do its work, 503 while its custody log takes no appends (its store failing, say):
/// every operation that leaves a record fails then, and a monitor must see it.
async fn health(State(state): State<AppState>) -> Response {
    if state.gateway.log.is_appending() {
        "ok".into_response()
    } else {
        Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "log-failing",
            "Custody log failing",
            "the custody log takes no appends: its store is failing; every operation that leaves a custody record \
             fails until it recovers",
        )
        .into_response()
    }
}

async fn checkpoint(State(state): State<AppState>) -> Response {
    // Served from memory: the log's checkpoint is exactly what is durable in the store; with a witness policy, the
    // one published under it with its cosignatures (crate::cosigning).
    let note = match state.cosigning.published() {
        Published::NotCollecting => state.gateway.log.checkpoint().note().to_vec(),
        Published::Note(note) => note,
        Published::Nothing => return crate::cosigning::nothing_published(),
    };
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], note).into_response()
}

async fn tile(State(state): State<AppState>, Path(path): Path<String>) -> Result<Response, Problem> {
    let tile = Tile::parse_path(&path).ok_or_else(|| Problem::not_found("not a c2sp.org/tlog-tiles path"))?;
    let size = state.gateway.log.checkpoint().checkpoint.size;
    if !tile_published(tile, size) {
        return Err(Problem::not_found(format!("{path} is beyond the published checkpoint")));
    }
    let bytes = state
        .gateway
        .log
        .storage()
        .get(&tile.path())
        .await
        .map_err(|err| Problem::internal(&err))?
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
