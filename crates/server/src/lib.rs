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

/// What the gateway logs unless `RUST_LOG` says otherwise. Whatever either says, [`safe_log_filter`] keeps out
/// what must never be logged.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Crates whose events may carry what the gateway must never log, at any level: the WebRTC engine's (its messages
/// name ICE candidates, which are the participants' IP addresses, a witness's whereabouts; at debug, their ICE
/// passwords) and the WebSocket protocol's (at trace, every room message in full: invite secrets, credentials,
/// names, contacts, SDP). The gateway logs what matters of a connection itself, by opaque ids.
/// A test checks that every crate of the engine's family in Cargo.lock is here or starts with `webrtc`.
const NEVER_LOGGED_CRATES: &[&str] =
    &["turn", "stun", "dtls", "interceptor", "rtp", "rtcp", "sdp", "tungstenite", "tokio_tungstenite"];

/// HTTP's own crates: above `info` they trace requests' frames and headers (cookies, tokens, forwarded addresses).
const HEADERS_ABOVE_INFO_CRATES: &[&str] = &["h2", "hyper", "hyper_util"];

/// Targets within other crates never logged: axum's rejections, traced with the text of what a request sent that
/// its extractors refused (a path segment, a query's value, a body's field). The gateway's own problem says it.
const NEVER_LOGGED_TARGETS: &[&str] = &["axum::rejection"];

/// Whether an event or span of `target` at `level` may reach the gateway's log, whatever `RUST_LOG` asks (an
/// operator turning on `trace` to find a fault must not write a witness's address or an invite secret down).
pub fn may_be_logged(target: &str, level: tracing::Level) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    if krate.starts_with("webrtc") || NEVER_LOGGED_CRATES.contains(&krate) {
        return false;
    }
    let within =
        |never: &&str| target.strip_prefix(*never).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"));
    if NEVER_LOGGED_TARGETS.iter().any(within) {
        return false;
    }
    !(HEADERS_ABOVE_INFO_CRATES.contains(&krate) && level > tracing::Level::INFO)
}

/// [`may_be_logged`] as a filter that sits beside `RUST_LOG`'s, not under it: a subscriber of the gateway's log
/// takes it as a layer (`SubscriberExt::with`).
pub fn safe_log_filter() -> tracing_subscriber::filter::FilterFn<fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::FilterFn::new(|metadata| may_be_logged(metadata.target(), *metadata.level()))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The WebRTC engine's crates are webrtc-rs's, each built on `webrtc-util`: every one in Cargo.lock is kept out
    /// of the log, at every level. (Its DTLS crate is named `dtls`: it was missed, and traced every handshake.)
    #[test]
    fn every_crate_of_the_webrtc_engine_is_never_logged() {
        let lock = include_str!("../../../Cargo.lock");
        let mut family = Vec::new();
        for package in lock.split("[[package]]").skip(1) {
            let name = package.lines().find_map(|line| line.strip_prefix("name = \"")?.strip_suffix('"'));
            let dependencies = package.split_once("dependencies = [").map_or("", |(_, rest)| rest);
            let dependencies = dependencies.split_once(']').map_or("", |(list, _)| list);
            let on_util = dependencies.lines().any(|line| {
                line.trim().trim_matches(|c| c == '"' || c == ',').split(' ').next() == Some("webrtc-util")
            });
            if let (Some(name), true) = (name, on_util) {
                family.push(name.replace('-', "_"));
            }
        }
        assert!(family.len() >= 10 && family.iter().any(|krate| krate == "dtls"), "{family:?}");
        for krate in &family {
            assert!(!may_be_logged(&format!("{krate}::conn"), tracing::Level::ERROR), "{krate} is logged");
        }
        assert!(may_be_logged("custodia_server::api", tracing::Level::TRACE));
    }

    /// axum traces each rejection with the text of what was refused; its other events may be logged.
    #[test]
    fn axums_rejections_are_never_logged() {
        assert!(!may_be_logged("axum::rejection", tracing::Level::ERROR));
        assert!(!may_be_logged("axum::rejection::path", tracing::Level::TRACE));
        assert!(may_be_logged("axum::serve", tracing::Level::TRACE));
        assert!(may_be_logged("axum_extra", tracing::Level::TRACE));
    }
}
