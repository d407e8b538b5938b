//! RFC 9457 problem details: the body of every HTTP error the gateway returns.
//!
//! A 4xx says what to fix. A 5xx says nothing internal; the detail goes to the log instead.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use custodia_store::StoreError;
use serde::Serialize;

use custodia_service::gateway::GatewayError;

/// An HTTP error with a stable `type` URI.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    /// Seconds for a `Retry-After` header (a 429 past a budget).
    retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, kind, title, detail: detail.into(), retry_after: None }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-input", "Bad input", detail)
    }

    /// Logs `err` with its chain of causes ([`Chain`]) and returns a 500 that reveals nothing about it.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %Chain(err), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the gateway could not complete the request",
        )
    }

    /// The same, answered with a `Retry-After` of `seconds`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

/// The `Retry-After` of a 503 while a backend (object storage, the database) is unavailable: long enough for a
/// restarted server to come back, short enough that a client resumes soon after.
pub const UNAVAILABLE_RETRY_AFTER_SECONDS: u64 = 5;

pub use custodia_service::error::Chain;

/// The `Retry-After` of a 429 for too many things at once (uploads under way, WHIP publishers): nobody knows when
/// one of them ends, so a client is asked to wait a few seconds rather than try again at once.
pub const AT_ONCE_RETRY_AFTER_SECONDS: u64 = 5;

impl From<GatewayError> for Problem {
    fn from(err: GatewayError) -> Self {
        use StatusCode as S;
        let detail = err.to_string();
        let retry_after = match &err {
            GatewayError::TooManyAttempts { retry_after_seconds, .. } => Some(*retry_after_seconds),
            GatewayError::TooMany(_) => Some(AT_ONCE_RETRY_AFTER_SECONDS),
            GatewayError::Unavailable { .. } => Some(UNAVAILABLE_RETRY_AFTER_SECONDS),
            GatewayError::Store(store) if store.is_transient() => Some(UNAVAILABLE_RETRY_AFTER_SECONDS),
            _ => None,
        };
        let (status, kind, title) = match &err {
            GatewayError::Unauthenticated => (S::UNAUTHORIZED, "unauthenticated", "Not signed in"),
            GatewayError::BadCredentials => (S::UNAUTHORIZED, "bad-credentials", "Wrong username or password"),
            GatewayError::TokenExpired => (S::UNAUTHORIZED, "token-expired", "Token expired"),
            GatewayError::TokenRevoked => (S::UNAUTHORIZED, "token-revoked", "Token revoked"),
            GatewayError::CrossOrigin => (S::FORBIDDEN, "cross-origin", "Cross-origin request refused"),
            GatewayError::TooMany(_) => (S::TOO_MANY_REQUESTS, "too-many", "Too many requests"),
            GatewayError::MissingScope(_) => (S::FORBIDDEN, "insufficient-scope", "Token scope too narrow"),
            GatewayError::AdminOnly(_) => (S::FORBIDDEN, "admin-only", "Administrators only"),
            GatewayError::SessionOnly(_) => (S::FORBIDDEN, "session-only", "Signed-in people only"),
            GatewayError::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
            GatewayError::RoleForbids { .. } => (S::FORBIDDEN, "role-forbidden", "Not permitted in your role"),
            GatewayError::ProviderOnly(_) => (S::FORBIDDEN, "provider-only", "Providing authority only"),
            GatewayError::UseRestricted(_) => (S::FORBIDDEN, "use-restricted", "Restricted by the providing authority"),
            GatewayError::AccessWithdrawn(_) => (S::FORBIDDEN, "access-withdrawn", "Access withdrawn meanwhile"),
            GatewayError::BadInput { .. } => (S::BAD_REQUEST, "bad-input", "Bad input"),
            GatewayError::Conflict(_) | GatewayError::CompletionTakenOver(_) => (S::CONFLICT, "conflict", "Conflict"),
            GatewayError::TooManyAttempts { .. } => (S::TOO_MANY_REQUESTS, "too-many", "Too many requests"),
            GatewayError::Store(StoreError::DigestMismatch { .. }) => {
                (S::UNPROCESSABLE_ENTITY, "digest-mismatch", "Digest mismatch")
            }
            GatewayError::Store(StoreError::Interrupted { .. }) => {
                (S::BAD_REQUEST, "upload-interrupted", "Upload cut off")
            }
            GatewayError::Store(StoreError::TooLarge { .. }) | GatewayError::TooLarge(_) => {
                (S::PAYLOAD_TOO_LARGE, "too-large", "Upload too large")
            }
            GatewayError::QuotaExceeded(_) => (S::INSUFFICIENT_STORAGE, "quota-exceeded", "Storage quota exceeded"),
            GatewayError::Store(StoreError::NotFound(_)) => (S::NOT_FOUND, "not-found", "Not found"),
            GatewayError::Store(StoreError::BadRange { .. }) => {
                (S::RANGE_NOT_SATISFIABLE, "bad-range", "Range not satisfiable")
            }
            GatewayError::Unavailable { what, .. } => {
                // The cause is the operator's to read; the caller learns what is down and when to try again.
                tracing::warn!(error = %Chain(&err), "a backend is unavailable");
                let detail = format!("{what} is unavailable now: nothing was registered; try again shortly");
                return Self::new(S::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable", detail)
                    .with_retry_after(UNAVAILABLE_RETRY_AFTER_SECONDS);
            }
            GatewayError::Store(store) if store.is_transient() => {
                tracing::warn!(error = %Chain(&err), "object storage is unavailable");
                let detail = "object storage is unavailable now: nothing was registered; try again shortly";
                return Self::new(S::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable", detail)
                    .with_retry_after(UNAVAILABLE_RETRY_AFTER_SECONDS);
            }
            _ => return Self::internal(&err),
        };
        Self { retry_after, ..Self::new(status, kind, title, detail) }
    }
}

/// The problem `type` of an answer, which [`Problem`] leaves in the response's extensions for `/metrics` to count
/// (`crate::metrics::track_requests`).
#[derive(Clone, Copy, Debug)]
pub struct ProblemType(pub &'static str);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: format!("https://custodia.invalid/problems/{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/problem+json")], json).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        // For /metrics, which counts refusals by their type (crate::metrics::track_requests).
        response.extensions_mut().insert(ProblemType(self.kind));
        response
    }
}
