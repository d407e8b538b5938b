//! The partner gateways as the transfers reach them ([`custodia_service::partner_client::PartnerClient`]): each
//! request signed as this gateway's ([`Partnering::signed`]) and sent over HTTPS to the partner's base URL, to the
//! routes its `transfer_api` serves, and its answer read up to [`crate::partner_api::PARTNER_ANSWER_LIMIT`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use custodia_partners::Partner;
use custodia_partners::transfer::Progress;
use custodia_service::partner_client::{PartnerClient, PartnerError, Refusal};
use futures::future::BoxFuture;

use crate::partner_api::Partnering;

/// Requests to partner gateways about transfers, signed with this gateway's request key.
pub struct HttpPartnerClient {
    partnering: Arc<Partnering>,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpPartnerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPartnerClient").finish_non_exhaustive()
    }
}

impl HttpPartnerClient {
    /// Requests signed as `partnering` signs them, each within 120 s.
    pub fn new(partnering: Arc<Partnering>) -> reqwest::Result<Self> {
        let client = crate::partner_api::partner_client(Duration::from_secs(120))?;
        Ok(Self { partnering, client })
    }

    async fn call(
        &self,
        partner: &Partner,
        method: reqwest::Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Progress, PartnerError> {
        answer(self.partnering.signed(&self.client, partner, method, path, body)).await
    }
}

/// Sends a signed request to a partner: the progress it answers, or why not.
async fn answer(request: reqwest::RequestBuilder) -> Result<Progress, PartnerError> {
    let answer = request.send().await.map_err(|err| PartnerError::Unreachable(Box::new(err)))?;
    let status = answer.status();
    let text = crate::partner_api::answer_text(answer).await.map_err(|err| PartnerError::Unreadable(Box::new(err)))?;
    if !status.is_success() {
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|problem| problem["detail"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(PartnerError::Refused { refusal: refusal(status), status: status.as_u16(), detail });
    }
    serde_json::from_str(&text).map_err(|source| PartnerError::Unreadable(Box::new(NotProgress(source))))
}

/// A partner's answer that is not a transfer's progress.
#[derive(Debug, thiserror::Error)]
#[error("not a transfer's progress")]
struct NotProgress(#[source] serde_json::Error);

/// How a partner's answer `status` refuses a request: 409 is a conflict with where the transfer stands there (a
/// chunk out of order); 429 and the 5xx (among them the 503 of a gateway without the duty of the transfers, and a
/// load balancer's 502) are for now; anything else is a refusal as sent.
fn refusal(status: reqwest::StatusCode) -> Refusal {
    match status {
        reqwest::StatusCode::CONFLICT => Refusal::Conflict,
        reqwest::StatusCode::TOO_MANY_REQUESTS => Refusal::NotNow,
        status if status.is_server_error() => Refusal::NotNow,
        _ => Refusal::Refused,
    }
}

impl PartnerClient for HttpPartnerClient {
    fn offer<'a>(&'a self, partner: &'a Partner, offer: String) -> BoxFuture<'a, Result<Progress, PartnerError>> {
        Box::pin(self.call(partner, reqwest::Method::POST, "/partner/v1/transfers", offer))
    }

    fn chunk<'a>(
        &'a self,
        partner: &'a Partner,
        transfer: &'a str,
        offset: u64,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Progress, PartnerError>> {
        Box::pin(async move {
            let path = format!("/partner/v1/transfers/{transfer}/chunks/{offset}");
            let (partnering, client, partner) = (self.partnering.clone(), self.client.clone(), partner.clone());
            // Signed in a blocking step: the signature covers the chunk's digest, a hash of up to 8 MiB.
            let request = tokio::task::spawn_blocking(move || {
                partnering.signed(&client, &partner, reqwest::Method::PUT, &path, bytes)
            })
            .await
            .map_err(|err| PartnerError::Unreachable(Box::new(err)))?;
            answer(request).await
        })
    }

    fn complete<'a>(
        &'a self,
        partner: &'a Partner,
        transfer: &'a str,
    ) -> BoxFuture<'a, Result<Progress, PartnerError>> {
        Box::pin(async move {
            let path = format!("/partner/v1/transfers/{transfer}/complete");
            self.call(partner, reqwest::Method::POST, &path, Vec::new()).await
        })
    }

    fn progress<'a>(
        &'a self,
        partner: &'a Partner,
        transfer: &'a str,
    ) -> BoxFuture<'a, Result<Progress, PartnerError>> {
        Box::pin(async move {
            let path = format!("/partner/v1/transfers/{transfer}");
            self.call(partner, reqwest::Method::GET, &path, Vec::new()).await
        })
    }

    fn post<'a>(
        &'a self,
        partner: &'a Partner,
        path: &'a str,
        body: String,
    ) -> BoxFuture<'a, Result<(), PartnerError>> {
        Box::pin(async move {
            let request = self.partnering.signed(&self.client, partner, reqwest::Method::POST, path, body);
            let answer = request.send().await.map_err(|err| PartnerError::Unreachable(Box::new(err)))?;
            // Taken once answered 2xx: the answer itself is not read.
            let status = answer.status();
            if status.is_success() {
                return Ok(());
            }
            Err(PartnerError::Refused { refusal: refusal(status), status: status.as_u16(), detail: String::new() })
        })
    }
}
