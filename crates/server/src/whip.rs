//! What WHIP (RFC 9725) ingest needs in HTTP terms: the SDP offer of a POST, and the `201 Created` answer with the
//! STUN/TURN servers as RFC 9725 §4.4 `Link: <turn:...>; rel="ice-server"` headers, TURN ones with a fresh
//! short-lived credential ([`custodia_hearings::turn`]), so a publisher on a network that blocks UDP can relay through TURN over
//! TCP or TLS.
//!
//! WHIP publishes only into a live hearing, with an invite's secret, under the hearing's rules (lobby, admission,
//! recording runs): `POST /api/v1/room/whip` ([`crate::hearing_api`]). The older route by which any case member
//! could publish into an arbitrary hearing id, recorded outside any hearing, is gone: it let one witness open
//! hundreds of recording sessions into hearings that did not exist.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;
use crate::state::AppState;
use custodia_service::gateway::bad_input;

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
