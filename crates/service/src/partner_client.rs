//! What the transfers ([`crate::transfers`]) ask of a partner gateway, and how such a request fails: the
//! [`PartnerClient`] trait. The server implements it with signed HTTP requests (its `partner_client`); a test, with
//! a partner in memory. The engine decides what to send and when, and checks every answer; a client only carries
//! the request there and the answer back.

use bytes::Bytes;
use custodia_partners::Partner;
use custodia_partners::transfer::Progress;
use futures::future::BoxFuture;

/// The requests a gateway makes of a partner gateway about transfers, each signed as this gateway's and sent to the
/// partner the registry pins. Every answer about a transfer is the partner's [`Progress`] on it, unchecked: the
/// engine checks it.
pub trait PartnerClient: Send + Sync {
    /// Offers a transfer: `offer` is the [`custodia_partners::transfer::Offer`] as JSON, as it was kept.
    fn offer<'a>(&'a self, partner: &'a Partner, offer: String) -> BoxFuture<'a, Result<Progress, PartnerError>>;

    /// Sends the payload's `bytes` from `offset` (a whole chunk) of `transfer`.
    fn chunk<'a>(
        &'a self,
        partner: &'a Partner,
        transfer: &'a str,
        offset: u64,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Progress, PartnerError>>;

    /// Asks the partner to finish `transfer`, every chunk sent.
    fn complete<'a>(&'a self, partner: &'a Partner, transfer: &'a str)
    -> BoxFuture<'a, Result<Progress, PartnerError>>;

    /// Asks where `transfer` stands there.
    fn progress<'a>(&'a self, partner: &'a Partner, transfer: &'a str)
    -> BoxFuture<'a, Result<Progress, PartnerError>>;

    /// Posts what the partner outbox kept for the partner (an outcome report, a request to widen use, a decision on
    /// one): `body`, JSON, to the partner's route `path` (`/partner/v1/transfers/{id}/outcomes`,
    /// `.../widen-requests`, `.../widen-decisions`), as the outbox row holds both. `Ok` once the partner took it.
    fn post<'a>(&'a self, partner: &'a Partner, path: &'a str, body: String)
    -> BoxFuture<'a, Result<(), PartnerError>>;
}

/// Why a request to a partner gateway did not go through. The engine tries a failed step again at its next retry
/// interval, until the transfer's timeouts, whichever it was.
#[derive(Debug, thiserror::Error)]
pub enum PartnerError {
    /// The request did not reach the partner, or no answer came back (no connection, a timeout): it may pass if
    /// tried again.
    #[error("could not reach the partner")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The partner answered with a refusal: how ([`Refusal`]), its status (an HTTP status over the wire), and the
    /// detail of its problem, if it gave one.
    #[error("the partner answered {status}: {detail}")]
    Refused { refusal: Refusal, status: u16, detail: String },
    /// The partner's answer could not be read as what it should be (too large, not UTF-8, not a progress).
    #[error("what the partner sent does not check")]
    Unreadable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// How a partner gateway refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not now: it is busy, or another gateway of its own handles the transfers. The same request may pass later.
    NotNow,
    /// At odds with where the transfer stands there: a chunk out of order, or a transfer it knows as another.
    Conflict,
    /// Refused as it is.
    Refused,
}

impl PartnerError {
    /// Whether the same request may pass if tried again as it is: the partner was unreachable, or said not now.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Refused { refusal: Refusal::NotNow, .. })
    }
}
