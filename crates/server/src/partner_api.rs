//! Requests between partner gateways ([`custodia_partners`]): the registry of partners this gateway pins
//! (`CUSTODIA_PARTNERS`), its own key for signing requests to them, the card it publishes for them to pin, and
//! [`FromPartner`], the check every request from a partner passes before anything reads it
//! ([`custodia_partners::request::authenticate`]): a body within [`PARTNER_BODY_LIMIT`] that matches its
//! `Content-Digest` (RFC 9530), an RFC 9421 signature by the key pinned for the partner it names, made within
//! 300 s, a `Date` within 300 s, and a nonce not seen in that time. A refusal is answered 401 (400 for a body
//! that does not match its digest, 503 while the replay window is full) and logged by its kind and the partner
//! named, never by address.
//!
//! Routes: `GET /partner/v1/card` (this gateway's card, for partners' registries) and `POST /partner/v1/handshake`
//! (a partner's signed request, answered with the entry pinned for it and this gateway's card: `custodia partners
//! check` proves with it, before any evidence moves, that both sides pin each other's keys as they are).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use custodia_core::Sha256;
use custodia_partners::evidence::{Evidence, EvidenceError, SignedEvidence};
use custodia_partners::replay::ReplayWindow;
use custodia_partners::request::{Presented, REPLAY_WINDOW_NONCES, Refused};
use custodia_partners::{Card, Partner, Registry};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use custodia_service::chunk_buffers::ChunkBuffers;
use custodia_service::transfers::Partnership;

use crate::problem::Problem;
use custodia_service::clock::Clock;

/// The largest body of a request from a partner: control messages (a handshake, receipts, requests to widen use
/// and their decisions) are a few KiB.
pub const PARTNER_BODY_LIMIT: usize = 64 * 1024;

/// This gateway among its partners: who it pins, and how it signs.
pub struct Partnering {
    registry: Registry,
    card: Card,
    key: SigningKey,
    /// The nonces seen, a window for each partner: one partner filling its own (or a stolen key filling it) shuts
    /// out no other.
    replay: Mutex<std::collections::HashMap<String, ReplayWindow>>,
    clock: Clock,
    /// Places for bodies larger than [`PARTNER_BODY_LIMIT`] (offers, chunks) being read and handled at once: in
    /// all, and for each partner ([`LARGE_BODIES_PER_PARTNER`]).
    large_bodies: Arc<tokio::sync::Semaphore>,
    partner_large_bodies: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Buffers for transfer chunks, sent and received.
    buffers: Arc<ChunkBuffers>,
}

/// How many partner requests with large bodies (an offer carries up to 11 MiB, a chunk 8 MiB) are read and handled
/// at once, from all partners together; one more is answered 503 and tried again later.
pub const LARGE_BODIES_AT_ONCE: usize = 8;
/// How many of those one partner may have at once: as many as a sending gateway sends to one partner at once
/// ([`custodia_service::transfers::CHUNKS_IN_FLIGHT`], for all its transfers together), so that two partners
/// sending at full speed fit, and no partner takes every place.
pub const LARGE_BODIES_PER_PARTNER: usize = custodia_service::transfers::CHUNKS_IN_FLIGHT;

impl std::fmt::Debug for Partnering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partnering").field("card", &self.card).field("registry", &self.registry).finish_non_exhaustive()
    }
}

/// The answer to a handshake: the partner as this gateway pins it, and this gateway's own card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    pub pinned: Card,
    pub card: Card,
}

impl Partnering {
    /// Partners as `registry` pins them; this gateway's `card`, whose request key is `key`'s.
    pub fn new(registry: Registry, card: Card, key: SigningKey, clock: Clock) -> Self {
        let large_bodies = Arc::new(tokio::sync::Semaphore::new(LARGE_BODIES_AT_ONCE));
        let buffers = Arc::default();
        let partner_large_bodies = Mutex::default();
        Self { registry, card, key, replay: Mutex::default(), clock, large_bodies, partner_large_bodies, buffers }
    }

    /// A place for a large body from partner `name`, one of its own and one of all, or a 503 saying why not.
    fn large_body_place(&self, name: &str) -> Result<LargeBodyPlace, Problem> {
        let busy = |what: String| {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "Busy", format!("{what}; try again"))
                .with_retry_after(5)
        };
        let own = {
            let mut places = self.partner_large_bodies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(
                places
                    .entry(name.to_owned())
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(LARGE_BODIES_PER_PARTNER))),
            )
        };
        let own = own.try_acquire_owned().map_err(|_| {
            busy(format!("{LARGE_BODIES_PER_PARTNER} large requests from this partner gateway are being handled"))
        })?;
        let all = Arc::clone(&self.large_bodies)
            .try_acquire_owned()
            .map_err(|_| busy(format!("{LARGE_BODIES_AT_ONCE} large requests from partners are being handled")))?;
        Ok(LargeBodyPlace { _own: own, _all: all })
    }

    /// Buffers for transfer chunks, used again from one chunk to the next.
    pub fn buffers(&self) -> &Arc<ChunkBuffers> {
        &self.buffers
    }

    pub fn card(&self) -> &Card {
        &self.card
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The headers that sign a request to a partner: `method` on `path` with a body whose SHA-256 is `body_sha256`.
    pub fn sign(&self, method: &str, path: &str, body_sha256: &Sha256) -> [(&'static str, String); 4] {
        let mut random = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
        let nonce = custodia_partners::signature::new_nonce(random);
        custodia_partners::request::sign(
            method,
            path,
            body_sha256,
            &self.key,
            &self.card.name,
            nonce,
            self.clock.unix_seconds(),
        )
    }

    /// This gateway's name among its partners.
    pub fn name(&self) -> &str {
        &self.card.name
    }

    /// The key that checks this gateway's own signatures (its requests' and its evidences').
    pub fn own_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs an evidence of a transfer as this gateway ([`custodia_partners::evidence`]), with the key that signs
    /// its requests, which its partners pin.
    pub fn sign_evidence(&self, evidence: &Evidence) -> Result<SignedEvidence, EvidenceError> {
        evidence.sign(&self.key)
    }

    /// This gateway among its partners as the transfers need it: the registry, its name, and its request key.
    pub fn partnership(&self) -> Partnership {
        Partnership::new(self.registry.clone(), self.card.name.clone(), self.key.clone())
    }

    /// The body-free checks of a partner's request ([`custodia_partners::request::check_headers`]); a refusal is
    /// logged by kind like any other.
    fn check_headers(&self, request: &Presented<'_>) -> Result<Partner, Refused> {
        let checked = custodia_partners::request::check_headers(&self.registry, request, self.clock.unix_seconds());
        checked.cloned().inspect_err(|refused| self.log_refusal(request, refused))
    }

    /// A request to `partner`, signed: `method` on `path` with the JSON `body`.
    pub fn signed(
        &self,
        client: &reqwest::Client,
        partner: &Partner,
        method: reqwest::Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> reqwest::RequestBuilder {
        let body: Bytes = body.into();
        let mut request = client.request(method.clone(), format!("{}{path}", partner.base_url));
        for (name, value) in self.sign(method.as_str(), path, &Sha256::of(&body)) {
            request = request.header(name, value);
        }
        request.header("content-type", "application/json").body(body)
    }

    /// The partner that sent `request` with a body of SHA-256 `body_sha256`, or why it is refused (logged by kind). `named` is the partner
    /// the headers' signature was found to name ([`Self::check_headers`], before the body was read): its own replay
    /// window holds the nonce, and the whole request is checked again with the body.
    fn authenticate(&self, named: &str, request: &Presented<'_>, body_sha256: &Sha256) -> Result<Partner, Refused> {
        let now = self.clock.unix_seconds();
        let mut windows = self.replay.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = windows.entry(named.to_owned()).or_insert_with(|| ReplayWindow::new(REPLAY_WINDOW_NONCES));
        let checked = custodia_partners::request::authenticate(&self.registry, window, request, body_sha256, now);
        drop(windows);
        checked.cloned().inspect_err(|refused| self.log_refusal(request, refused))
    }

    /// Logs a refused request by the kind of refusal and the pinned partner it names, never by address.
    fn log_refusal(&self, request: &Presented<'_>, refused: &Refused) {
        let named = match refused {
            Refused::Signature(_) | Refused::Replay(_) => request
                .signature_input
                .zip(request.signature)
                .and_then(|(input, signature)| custodia_partners::signature::parse(input, signature).ok())
                .map(|signature| signature.params.keyid)
                .filter(|keyid| self.registry.partner(keyid).is_some()),
            _ => None,
        };
        tracing::warn!(kind = refused.kind(), partner = named.as_deref().unwrap_or("-"), "refused a partner request");
    }
}

/// A request a partner signed, checked ([`Partnering`]), with its body of at most `LIMIT` bytes. Its signature
/// is checked before the body is read, so that only a partner can make the gateway hold a body.
#[derive(Debug)]
pub struct FromPartner<const LIMIT: usize = PARTNER_BODY_LIMIT> {
    pub partner: Partner,
    pub body: Bytes,
    /// A large body's place, held until the request is handled.
    _place: Option<LargeBodyPlace>,
}

/// A large body's place: one of its partner's, and one of all.
#[derive(Debug)]
struct LargeBodyPlace {
    _own: tokio::sync::OwnedSemaphorePermit,
    _all: tokio::sync::OwnedSemaphorePermit,
}

impl<const LIMIT: usize> FromPartner<LIMIT> {
    /// The body as the JSON document `what` names, or a 400 saying what it should be.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, Problem> {
        serde_json::from_slice(&self.body).map_err(|err| Problem::bad_request(format!("the body is {what}: {err}")))
    }
}

impl<S, const LIMIT: usize> FromRequest<S> for FromPartner<LIMIT>
where
    S: Send + Sync,
    Arc<Partnering>: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let partnering = Arc::<Partnering>::from_ref(state);
        let (parts, body) = request.into_parts();
        let header = |name: &str| parts.headers.get(name).and_then(|value| value.to_str().ok());
        let presented = Presented {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            content_digest: header("content-digest"),
            date: header("date"),
            signature_input: header("signature-input"),
            signature: header("signature"),
        };
        let named = partnering.check_headers(&presented).map_err(refusal)?;
        let place = match LIMIT > PARTNER_BODY_LIMIT {
            true => Some(partnering.large_body_place(&named.name)?),
            false => None,
        };
        let declared = header("content-length").and_then(|length| length.parse::<usize>().ok());
        // A large body (a chunk) is read into a chunk buffer, a small one into its own.
        let buffers = (LIMIT > PARTNER_BODY_LIMIT).then(|| partnering.buffers());
        let (body, sha256) = read_hashed(body, LIMIT, declared, buffers).await.map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Body too large",
                format!("this request from a partner gateway has at most {LIMIT} bytes"),
            )
        })?;
        let partner = partnering.authenticate(&named.name, &presented, &sha256).map_err(refusal)?;
        Ok(Self { partner, body, _place: place })
    }
}

/// A body of at most `limit` bytes, read whole and hashed frame by frame as it arrives (a transfer's 8 MiB chunk is
/// hashed while the rest of it is on its way); `declared` (Content-Length, if any) sizes the buffer up to the limit,
/// one of `buffers` if given.
async fn read_hashed(
    body: axum::body::Body,
    limit: usize,
    declared: Option<usize>,
    buffers: Option<&Arc<ChunkBuffers>>,
) -> Result<(Bytes, Sha256), ()> {
    use http_body_util::BodyExt as _;
    let mut body = std::pin::pin!(http_body_util::Limited::new(body, limit));
    let capacity = declared.unwrap_or(0).min(limit);
    let mut hasher = custodia_core::Sha256Hasher::default();
    let Some(buffers) = buffers else {
        let mut bytes = bytes::BytesMut::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(|_| ())?.into_data() {
                hasher.update(&data);
                bytes.extend_from_slice(&data);
            }
        }
        return Ok((bytes.freeze(), hasher.finish()));
    };
    let mut bytes = buffers.take(capacity);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|_| ())?.into_data() {
            hasher.update(&data);
            bytes.extend_from_slice(&data);
        }
    }
    Ok((bytes.into_bytes(), hasher.finish()))
}

/// The problem a refused partner request is answered with.
fn refusal(refused: Refused) -> Problem {
    match refused {
        Refused::Digest(err) => {
            Problem::new(StatusCode::BAD_REQUEST, "digest-mismatch", "Digest mismatch", err.to_string())
        }
        Refused::Replay(err @ custodia_partners::replay::ReplayError::Full(_)) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "Busy", err.to_string()).with_retry_after(5)
        }
        other => Problem::new(
            StatusCode::UNAUTHORIZED,
            "partner-unauthenticated",
            "Not a signed request from a partner",
            other.to_string(),
        ),
    }
}

pub fn router(partnering: Arc<Partnering>) -> Router {
    Router::new()
        .route("/partner/v1/card", get(card))
        .route("/partner/v1/handshake", post(handshake))
        .with_state(partnering)
}

async fn card(State(partnering): State<Arc<Partnering>>) -> Json<Card> {
    Json(partnering.card().clone())
}

/// A partner's signed handshake, whose body is the sender's own card: answered with the entry pinned here for it
/// and this gateway's card, so that the sender sees both ways whether the two sides pin each other as they are
/// (`custodia partners check`), before any evidence moves. A card that differs from the pinned entry is logged.
async fn handshake(
    State(partnering): State<Arc<Partnering>>,
    request: FromPartner,
) -> Result<Json<Handshake>, Problem> {
    let pinned = Card::of(&request.partner);
    let theirs: Card = request.json("the sender's partner card")?;
    if theirs != pinned {
        tracing::warn!(partner = %pinned.name, "a partner's card differs from the entry pinned for it");
    }
    Ok(Json(Handshake { pinned, card: partnering.card().clone() }))
}

/// This gateway's card and request key for `config` (every key made on first use), and the registry of its
/// partners.
pub fn open_for(config: &crate::config::ServeConfig, clock: Clock) -> anyhow::Result<Partnering> {
    use anyhow::Context as _;
    let registry = match &config.partners.registry_file {
        None => Registry::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the partner registry {}", path.display()))?;
            Registry::parse(&text).with_context(|| format!("the partner registry {}", path.display()))?
        }
    };
    let (card, key) = card_for(config)?;
    if let Some(itself) = registry.partner(&card.name) {
        anyhow::bail!("the partner registry lists this gateway's own name ({:?}) as a partner", itself.name);
    }
    tracing::info!(name = %card.name, partners = registry.partners().len(), "partner gateways");
    Ok(Partnering::new(registry, card, key, clock))
}

/// This gateway's card for `config`, and the key that signs its requests (made on first use, like every key it
/// names).
pub fn card_for(config: &crate::config::ServeConfig) -> anyhow::Result<(Card, SigningKey)> {
    use anyhow::Context as _;
    let gateway = &config.gateway;
    let host = gateway.origin.split('/').next().unwrap_or(&gateway.origin).to_owned();
    let (log_key, _) = crate::keys::load_or_create(&gateway.key_file(), &gateway.origin)?;
    let witness = crate::witness_api::witness_key(config)?;
    let (seed, created) = crate::keys::load_or_create_secret(&gateway.partner_request_key_file())?;
    if created {
        let path = crate::config::absolute(&gateway.partner_request_key_file());
        tracing::info!(key = %path.display(), "made a new key for requests to partner gateways");
    }
    let key = SigningKey::from_bytes(&seed);
    let partners = &config.partners;
    let card = Card {
        name: partners.partner_name.clone().unwrap_or_else(|| host.clone()),
        jurisdiction: partners.jurisdiction.clone(),
        base_url: partners.public_url.clone().unwrap_or_else(|| format!("https://{host}")),
        log_vkey: log_key.verifier().to_string(),
        witness_vkey: witness.verifier().to_string(),
        request_key: base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes()),
    };
    // The card must be one a partner's registry accepts: a registry file that lists it alone.
    #[derive(Serialize)]
    struct RegistryFile<'a> {
        partners: [&'a Card; 1],
    }
    let entry = serde_json::to_string(&RegistryFile { partners: [&card] })?;
    Registry::parse(&entry).context("this gateway's own partner card (CUSTODIA_PARTNER_NAME, CUSTODIA_PUBLIC_URL)")?;
    Ok((card, key))
}

/// What a handshake with one partner showed ([`check_partners`]).
#[derive(Debug)]
pub enum HandshakeOutcome {
    /// Each side pins the other as it is.
    Pinned,
    /// The partner answered, but one side pins the other differently: what differs, by field.
    Differs(Vec<String>),
    /// The partner refused the signed request, or could not be reached: why.
    Failed(HandshakeFailure),
}

/// Why a handshake with a partner did not go through.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeFailure {
    /// No HTTP client could be made (no TLS roots, say): no partner was asked.
    #[error("no HTTP client")]
    NoClient(#[source] std::sync::Arc<reqwest::Error>),
    #[error("this gateway's card could not be written")]
    Card(#[source] serde_json::Error),
    #[error("could not reach {base_url}")]
    Unreachable {
        base_url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("its answer could not be read")]
    Unreadable(#[source] AnswerError),
    /// The partner refused the request: its status, and the detail of its problem if it gave one.
    #[error("answered {status}: {detail}")]
    Refused { status: reqwest::StatusCode, detail: String },
    #[error("the answer is not a handshake")]
    NotHandshake(#[source] serde_json::Error),
}

/// Sends a signed handshake to every partner in the registry and compares, both ways, what each side pins: the
/// partner's entry for this gateway against this gateway's card, and the partner's card against its entry here.
/// One outcome per partner, in the registry's order.
pub async fn check_partners(partnering: &Partnering, timeout: std::time::Duration) -> Vec<(String, HandshakeOutcome)> {
    let client = match partner_client(timeout) {
        Ok(client) => client,
        Err(err) => {
            let err = std::sync::Arc::new(err);
            let failed = || HandshakeOutcome::Failed(HandshakeFailure::NoClient(err.clone()));
            return partnering.registry.partners().iter().map(|p| (p.name.clone(), failed())).collect();
        }
    };
    let mut outcomes = Vec::new();
    for partner in partnering.registry.partners() {
        outcomes.push((partner.name.clone(), handshake_with(partnering, &client, partner).await));
    }
    outcomes
}

/// The most bytes of a partner's answer read: a handshake or a transfer's progress (every evidence of its ladder,
/// each with its record and proof) is a few tens of KiB. A partner sending more is not read further.
pub const PARTNER_ANSWER_LIMIT: usize = 1 << 20;

/// A partner's answer as text, read up to [`PARTNER_ANSWER_LIMIT`]; past it, or not UTF-8, an error.
pub async fn answer_text(mut answer: reqwest::Response) -> Result<String, AnswerError> {
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(AnswerError::Reading)? {
        if body.len() + chunk.len() > PARTNER_ANSWER_LIMIT {
            return Err(AnswerError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(AnswerError::NotUtf8)
}

/// Why a partner's answer could not be read as text ([`answer_text`]).
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The connection failed, or the time ran out, while the answer came.
    #[error("reading the answer")]
    Reading(#[source] reqwest::Error),
    #[error("the answer is larger than {PARTNER_ANSWER_LIMIT} bytes")]
    TooLarge,
    #[error("the answer is not UTF-8")]
    NotUtf8(#[source] std::string::FromUtf8Error),
}

/// The HTTP client of requests to partner gateways: no redirects followed, every request within `timeout`.
pub fn partner_client(timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("custodia/", env!("CARGO_PKG_VERSION")))
        .build()
}

async fn handshake_with(partnering: &Partnering, client: &reqwest::Client, partner: &Partner) -> HandshakeOutcome {
    const PATH: &str = "/partner/v1/handshake";
    let body = match serde_json::to_vec(partnering.card()) {
        Ok(body) => body,
        Err(err) => return HandshakeOutcome::Failed(HandshakeFailure::Card(err)),
    };
    let answer = match partnering.signed(client, partner, reqwest::Method::POST, PATH, body).send().await {
        Ok(answer) => answer,
        Err(source) => {
            let base_url = partner.base_url.clone();
            return HandshakeOutcome::Failed(HandshakeFailure::Unreachable { base_url, source });
        }
    };
    let status = answer.status();
    let text = match answer_text(answer).await {
        Ok(text) => text,
        Err(err) => return HandshakeOutcome::Failed(HandshakeFailure::Unreadable(err)),
    };
    if !status.is_success() {
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|problem| problem["detail"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return HandshakeOutcome::Failed(HandshakeFailure::Refused { status, detail });
    }
    let handshake = match serde_json::from_str::<Handshake>(&text) {
        Ok(handshake) => handshake,
        Err(err) => return HandshakeOutcome::Failed(HandshakeFailure::NotHandshake(err)),
    };
    let mut differs = differences("it pins for us", &handshake.pinned, partnering.card());
    differs.extend(differences("its card", &handshake.card, &Card::of(partner)));
    if differs.is_empty() { HandshakeOutcome::Pinned } else { HandshakeOutcome::Differs(differs) }
}

/// The fields in which `seen` differs from `expected`, each named after `what`.
fn differences(what: &str, seen: &Card, expected: &Card) -> Vec<String> {
    let fields = [
        ("name", &seen.name, &expected.name),
        ("jurisdiction", &seen.jurisdiction, &expected.jurisdiction),
        ("base_url", &seen.base_url, &expected.base_url),
        ("log_vkey", &seen.log_vkey, &expected.log_vkey),
        ("witness_vkey", &seen.witness_vkey, &expected.witness_vkey),
        ("request_key", &seen.request_key, &expected.request_key),
    ];
    fields
        .into_iter()
        .filter(|(_, seen, expected)| seen != expected)
        .map(|(field, seen, expected)| format!("{what}: {field} is {seen:?}, not {expected:?}"))
        .collect()
}
