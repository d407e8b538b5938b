//! Why an operation was refused or failed ([`GatewayError`]), and whose the failure is ([`ErrorClass`]): the
//! caller's request, a backend unavailable for now, or something inside. Errors keep their sources.

use custodia_catalog::CatalogError;
use custodia_core::Role;
use custodia_store::StoreError;

/// An error with every cause after it, `: `-separated, for the operator's log (each cause once).
pub use custodia_core::ErrorChain as Chain;

/// Why an operation was refused or failed. Each maps to one RFC 9457 problem type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("sign in, or send an API token")]
    Unauthenticated,
    #[error("the username or password is wrong")]
    BadCredentials,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token has been revoked")]
    TokenRevoked,
    #[error("a request signed in by cookie must come from this site's own pages (Origin or Sec-Fetch-Site)")]
    CrossOrigin,
    #[error("{0}")]
    TooMany(String),
    #[error("the token does not carry the {0} scope")]
    MissingScope(&'static str),
    #[error("only an administrator may {0}")]
    AdminOnly(&'static str),
    #[error("only a signed-in person may {0}, not an API token")]
    SessionOnly(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("as {role} in this case you may not {action}")]
    RoleForbids { role: Role, action: String },
    #[error("only the providing authority may {0}")]
    ProviderOnly(&'static str),
    #[error("use restricted by the providing authority: {0}")]
    UseRestricted(String),
    /// The caller's access to a case was withdrawn while an operation of theirs was under way.
    #[error("{0}")]
    AccessWithdrawn(String),
    #[error("{field}: {reason}")]
    BadInput { field: &'static str, reason: String },
    #[error("{0}")]
    Conflict(String),
    /// The completion of a resumable upload is no longer this request's: its claim went stale (its gateway froze)
    /// and another request took the upload over, or the upload was removed. This request registered nothing.
    #[error("the upload's completion was taken over by another request")]
    CompletionTakenOver(#[source] CatalogError),
    /// Too many attempts in a short time; the caller may try again after the seconds given.
    #[error("too many {what}: try again in {retry_after_seconds} s")]
    TooManyAttempts { what: &'static str, retry_after_seconds: u64 },
    /// The account's stored bytes would exceed its quota ([`crate::budget::Quotas`]).
    #[error("{0}")]
    QuotaExceeded(String),
    /// An upload larger than the gateway takes, or than an account's open uploads may declare between them.
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A backend the gateway needs (object storage, the database, the custody log's store) is unreachable or
    /// failing now; the caller may try again shortly (503, `Retry-After`). Nothing half-done is left as evidence.
    #[error("{what} is unavailable now; try again shortly")]
    Unavailable {
        what: &'static str,
        #[source]
        source: BoxError,
    },
    /// Something failed that the caller cannot fix: the caller learns nothing more, the operator's log the whole
    /// chain of causes.
    #[error("internal error: {context}")]
    Internal {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
}

/// Whose a [`GatewayError`] is ([`GatewayError::class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request was refused for what it is or who sent it (not permitted, malformed, over a budget, a
    /// conflict): the same request fails the same way.
    Refused,
    /// A backend is unavailable now: the same request may succeed shortly.
    Retryable,
    /// Something failed inside the gateway, which the caller can do nothing about.
    Internal,
}

/// What is unavailable when a hearing is held by another gateway ([`GatewayError::Unavailable`]).
pub const SERVED_ELSEWHERE: &str = "this hearing, served by another gateway,";

/// The cause an error keeps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl GatewayError {
    /// An internal failure while `context`, caused by `source` (kept, for the operator's log).
    pub fn internal(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Internal { context: context.into(), source: Some(source.into()) }
    }

    /// An internal failure with no underlying error (an invariant the stored data broke).
    pub fn internal_message(context: impl Into<String>) -> Self {
        Self::Internal { context: context.into(), source: None }
    }

    /// A failure of object storage while `context`: unavailable if it may pass (the store unreachable, timing out,
    /// answering 5xx), internal otherwise.
    pub fn storage(context: impl Into<String>, err: object_store::Error) -> Self {
        if custodia_store::is_transient(&err) {
            Self::Unavailable { what: "object storage", source: Box::new(err) }
        } else {
            Self::internal(context, err)
        }
    }

    /// Whether trying again later may succeed: a backend is unavailable ([`GatewayError::Unavailable`], or object
    /// storage failing on its side).
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// Whose the failure is: the caller's request refused, a backend unavailable for now, or a failure inside.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Unavailable { .. } => ErrorClass::Retryable,
            Self::Store(store) if store.is_transient() => ErrorClass::Retryable,
            Self::Internal { .. } | Self::Store(StoreError::ChunkLost(_) | StoreError::Backend(_)) => {
                ErrorClass::Internal
            }
            _ => ErrorClass::Refused,
        }
    }
}

impl From<CatalogError> for GatewayError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Conflict { what } => Self::Conflict(format!("{what} already exists")),
            CatalogError::LastClerk => Self::Conflict(err.to_string()),
            // Another gateway took the hearing over: its participants retry, and the load balancer finds it.
            CatalogError::LeaseLost { .. } => Self::Unavailable { what: SERVED_ELSEWHERE, source: Box::new(err) },
            CatalogError::ClaimLost { .. } => Self::CompletionTakenOver(err),
            CatalogError::TransferMoved { .. } => Self::Conflict(err.to_string()),
            other if other.is_transient() => Self::Unavailable { what: "the database", source: Box::new(other) },
            other => Self::internal("the catalog", other),
        }
    }
}

impl From<custodia_ledger::LogError> for GatewayError {
    fn from(err: custodia_ledger::LogError) -> Self {
        if log_error_is_transient(&err) {
            Self::Unavailable { what: "the custody log's storage", source: Box::new(err) }
        } else {
            Self::internal("the custody log", err)
        }
    }
}

/// Whether the log failed because its store or its coordinating database did, in a way that may pass.
fn log_error_is_transient(err: &custodia_ledger::LogError) -> bool {
    match err {
        custodia_ledger::LogError::Storage { source, .. } => custodia_store::is_transient(source),
        custodia_ledger::LogError::Coordination(err) => err.transient,
        // Sequenced, durable, and integrated once the store and the database answer: the step may be retried.
        custodia_ledger::LogError::NotIntegrated { .. } => true,
        custodia_ledger::LogError::Batch(inner) => log_error_is_transient(inner),
        _ => false,
    }
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

pub fn bad_input(field: &'static str, reason: impl std::fmt::Display) -> GatewayError {
    GatewayError::BadInput { field, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_says_whose_it_is_without_http() {
        let refused = [
            GatewayError::Unauthenticated,
            GatewayError::BadInput { field: "purpose", reason: "empty".into() },
            GatewayError::QuotaExceeded("full".into()),
            GatewayError::TooLarge("big".into()),
            GatewayError::TooManyAttempts { what: "uploads", retry_after_seconds: 3 },
            GatewayError::Store(StoreError::TooLarge { limit: 1 }),
            GatewayError::Store(StoreError::Interrupted { received: 1, source: "cut".into() }),
        ];
        for err in refused {
            assert_eq!(err.class(), ErrorClass::Refused, "{err}");
            assert!(!err.is_retryable());
        }
        let down = object_store::Error::Generic { store: "S3", source: "connection refused".into() };
        for err in [
            GatewayError::Unavailable { what: "the database", source: "gone".into() },
            GatewayError::storage("writing", down),
        ] {
            assert_eq!(err.class(), ErrorClass::Retryable, "{err}");
            assert!(err.is_retryable());
        }
        let lost = object_store::Error::NotFound { path: "objects/x".into(), source: "gone".into() };
        for err in [GatewayError::internal_message("a broken invariant"), GatewayError::storage("copying", lost)] {
            assert_eq!(err.class(), ErrorClass::Internal, "{err}");
        }
    }
}
