//! Resumable uploads (tus 1.0). Being written.

use axum::Router;

use crate::api::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
