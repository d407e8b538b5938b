//! The Custodia gateway: configuration, keys, authentication, the evidence service and its HTTP API, and the
//! wiring of every other crate.
//!
//! This is the only crate that knows all the others. Domain rules live in `custodia-core`, the log in
//! `custodia-ledger`, bytes in `custodia-store`, metadata in `custodia-catalog`, the evidence service that orders
//! their calls in `custodia-service`, and the live hearings in `custodia-hearings`; this crate turns them into
//! HTTP ([`api`], [`hearing_api`]) and a command line.

pub mod api;
pub mod auth;
pub mod config;
pub mod cosigning;
pub mod extract;
pub mod hearing_api;
pub mod keys;
pub mod listen;
pub mod log_routes;
pub mod metrics;
pub mod openapi;
pub mod outflow;
pub mod partner_api;
pub mod partner_client;
pub mod places;
pub mod problem;
pub mod request_metrics;
pub mod startup;
pub mod state;
pub mod timestamping;
pub mod tls;
pub mod transfer_api;
pub mod tus;
pub mod web;
pub mod whip;
pub mod witness_api;

/// What the gateway logs unless `RUST_LOG` says otherwise. The WebRTC engine's own crates are silenced: their
/// messages name ICE candidates, which are the participants' IP addresses (a witness's whereabouts), and the
/// gateway logs what matters of a connection itself, by opaque participant id.
pub const DEFAULT_LOG_FILTER: &str = "info,webrtc=off,webrtc_ice=off,webrtc_dtls=off,webrtc_srtp=off,\
     webrtc_sctp=off,webrtc_data=off,webrtc_mdns=off,webrtc_util=off,webrtc_media=off,turn=off,stun=off,\
     interceptor=off,rtp=off,rtcp=off,sdp=off";

/// The whole HTTP surface: the API, the hearings (WHIP publishing among them), the read-only log, and the browser pages (served from the
/// fallback, so that they never shadow a route). Every request is timed and every problem counted for `/metrics`
/// ([`request_metrics::track_requests`]), which itself is served on a listener of its own ([`metrics::router`]).
pub fn app(state: state::AppState) -> axum::Router {
    let metrics = state.metrics.clone();
    api::router(state.clone())
        .merge(tus::router().with_state(state.clone()))
        .merge(hearing_api::router(state.clone()))
        .merge(log_routes::router(state.clone()))
        .merge(witness_api::router(state.witness.clone()))
        .merge(partner_api::router(state.partnering.clone()))
        .merge(transfer_api::router(state.clone()))
        .merge(cosigning::router(state.cosigning.clone()))
        .fallback(web::fallback)
        .method_not_allowed_fallback(|| async {
            problem::Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this endpoint does not take that method; see /api/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn_with_state(metrics, request_metrics::track_requests))
}
