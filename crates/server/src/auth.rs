//! Who is calling: people sign in with a password (argon2id) and get a session cookie; machines send scoped,
//! expiring, revocable API tokens. Secrets are random 256-bit values, stored only as their SHA-256, and never
//! logged or printed by `Debug`.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use custodia_catalog::{Account, ApiToken};
use custodia_core::{Action, ActorId, Label, Sha256};

use crate::api::AppState;
use crate::gateway::{Gateway, GatewayError, Result, actor_of};
use crate::problem::Problem;

/// The session cookie over plain HTTP (loopback, tests, a private network).
pub const SESSION_COOKIE: &str = "custodia_session";
/// The session cookie over HTTPS: `__Host-` binds it to this origin (`Secure`, `Path=/`, no `Domain`), so that no
/// sibling subdomain can set or shadow it.
pub const HOST_SESSION_COOKIE: &str = "__Host-custodia_session";
pub const SESSION_SECONDS: i64 = 12 * 3600;
const TOKEN_PREFIX: &str = "cst_";

/// What a token may be used for. A session may do everything its roles allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read cases, artefacts, timelines and outcome reports.
    Read,
    /// Upload artefacts, file outcome reports, request wider use.
    Write,
    /// Manage members, set use policies, decide on wider use, run hearings (schedule, invite, revoke, open, close).
    Manage,
}

impl Scope {
    pub fn needed_for(action: Action) -> Self {
        match action {
            Action::ViewCase
            | Action::ListArtefacts
            | Action::ViewArtefact
            | Action::DownloadArtefact
            | Action::ViewTimeline
            | Action::ViewOutcomes => Self::Read,
            Action::UploadArtefact | Action::ExportArtefact | Action::RequestWiderUse | Action::FileOutcome => {
                Self::Write
            }
            Action::ManageMembers
            | Action::SetPolicy
            | Action::DecideWiderUse
            | Action::CorrectPolicy
            | Action::RunHearings => Self::Manage,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Manage => "manage",
        }
    }
}

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    Session,
    Token { id: String, scopes: Vec<Scope> },
}

/// An authenticated caller.
#[derive(Clone)]
pub struct Caller {
    pub account: Account,
    pub channel: Channel,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller").field("account", &self.account.id).field("channel", &self.channel).finish()
    }
}

impl Caller {
    pub fn actor(&self) -> ActorId {
        actor_of(&self.account)
    }

    pub fn jurisdiction(&self) -> Label {
        Label::new(self.account.jurisdiction.clone()).unwrap_or_else(|_| fallback_label())
    }

    /// From where, in words fit for a public record: the jurisdiction and the channel, never an address.
    pub fn site(&self) -> Label {
        let channel = match &self.channel {
            Channel::Session => "web session".to_owned(),
            Channel::Token { id, .. } => format!("API token {id}"),
        };
        Label::new(format!("{}, {channel}", self.account.jurisdiction)).unwrap_or_else(|_| fallback_label())
    }

    /// Whether this caller, a member in `role`, may take `action`: the role allows it and so does a token's scope.
    /// Asked without a refusal on the record, to leave out what a caller may not use.
    pub fn may(&self, role: custodia_core::Role, action: Action) -> bool {
        custodia_core::permits(role, action) && self.require_scope(action).is_ok()
    }

    pub fn require_scope(&self, action: Action) -> Result<()> {
        match &self.channel {
            Channel::Session => Ok(()),
            Channel::Token { scopes, .. } => {
                let needed = Scope::needed_for(action);
                if scopes.contains(&needed) { Ok(()) } else { Err(GatewayError::MissingScope(needed.name())) }
            }
        }
    }

    pub fn require_admin(&self, what: &'static str) -> Result<()> {
        if self.account.is_admin && self.channel == Channel::Session {
            Ok(())
        } else {
            Err(GatewayError::AdminOnly(what))
        }
    }
}

fn fallback_label() -> Label {
    Label::new("unknown").unwrap_or_else(|_| unreachable!("a constant label is valid"))
}

/// A fresh 256-bit secret, base64url.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn secret_digest(secret: &str) -> String {
    Sha256::of(secret.as_bytes()).to_hex()
}

pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| GatewayError::Internal(format!("hashing a password: {err}")))
}

/// Password guessing is throttled so that it cannot be turned against the owner of an account. Within
/// [`THROTTLE_WINDOW`]:
/// - one address that has sent [`ACCOUNT_PEER_FAILURES`] wrong passwords for one account is refused for that
///   account ("locked" for that address only: a stranger who knows a judge's username cannot lock the judge out
///   from the judge's own address);
/// - one address that has sent [`PEER_FAILURES`] wrong passwords, for any accounts, is refused for all;
/// - an account is guessed at from many addresses at most [`ACCOUNT_CHECKS_BURST`] times at once and then
///   [`ACCOUNT_CHECKS_PER_MINUTE`] a minute, over all addresses: past that a sign-in is delayed (429 with
///   `Retry-After` of seconds), never locked. Addresses from which the account has signed in before are not held
///   to this ceiling, so a distributed guesser slows only strangers.
///
/// Hashing itself is budgeted: [`HASHING_AT_ONCE`] argon2id runs at a time (19 MiB each), on as many threads of
/// their own (so the allocator reuses those threads' 19 MiB instead of keeping one per thread of the blocking pool:
/// 128 sign-ins once took a fresh gateway from 44 to 556 MB), and at most [`HASHING_QUEUE`] sign-ins waiting; any
/// more are told to come back later instead of queueing without limit.
pub const ACCOUNT_PEER_FAILURES: u32 = 10;
/// See [`ACCOUNT_PEER_FAILURES`].
pub const PEER_FAILURES: u32 = 30;
/// See [`ACCOUNT_PEER_FAILURES`].
pub const ACCOUNT_CHECKS_BURST: u32 = 20;
/// See [`ACCOUNT_PEER_FAILURES`]: at 2 a minute, a guesser with any number of addresses tries under 3,000
/// passwords a day against one account.
pub const ACCOUNT_CHECKS_PER_MINUTE: u32 = 2;
/// See [`ACCOUNT_PEER_FAILURES`].
pub const THROTTLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// How long an address from which an account signed in stays exempt from the account's ceiling.
const KNOWN_ADDRESS_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// See [`ACCOUNT_PEER_FAILURES`].
pub const HASHING_AT_ONCE: usize = 2;
/// See [`ACCOUNT_PEER_FAILURES`].
pub const HASHING_QUEUE: usize = 32;
/// Sign-ins from one address waiting or hashing at once, so that one address cannot fill [`HASHING_QUEUE`].
pub const PEER_SIGN_INS_AT_ONCE: usize = 4;
/// Throttle entries kept at most (usernames and addresses tried); beyond that, expired ones are dropped first.
const THROTTLE_ENTRIES: usize = 100_000;

/// Recent failed sign-ins, by username and client address together and by address alone, the addresses each
/// account signed in from, and each account's ceiling. In memory: a restart forgets them, which costs an
/// attacker a restart they cannot cause. Usernames and addresses stay here: the operator's log says only that a
/// lockout began, never for whom or from where.
#[derive(Debug)]
pub struct SignInThrottle {
    failures: std::sync::Mutex<std::collections::HashMap<ThrottleKey, (u32, std::time::Instant)>>,
    known: std::sync::Mutex<std::collections::HashMap<(String, std::net::IpAddr), std::time::Instant>>,
    account_checks: crate::budget::Budget,
    hashers: std::sync::mpsc::SyncSender<HashJob>,
    in_flight: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    AccountFromPeer(String, std::net::IpAddr),
    Peer(std::net::IpAddr),
}

impl Default for SignInThrottle {
    fn default() -> Self {
        Self {
            failures: std::sync::Mutex::new(std::collections::HashMap::new()),
            known: std::sync::Mutex::new(std::collections::HashMap::new()),
            account_checks: crate::budget::Budget::new(ACCOUNT_CHECKS_BURST, ACCOUNT_CHECKS_PER_MINUTE),
            hashers: start_hashers(),
            in_flight: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl SignInThrottle {
    fn recent(&self, key: &ThrottleKey) -> u32 {
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.get(key).filter(|(_, since)| since.elapsed() < THROTTLE_WINDOW).map_or(0, |(count, _)| *count)
    }

    fn known(&self, username: &str, peer: std::net::IpAddr) -> bool {
        let known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        known.get(&(username.to_owned(), peer)).is_some_and(|at| at.elapsed() < KNOWN_ADDRESS_FOR)
    }

    fn check(&self, username: &str, peer: std::net::IpAddr) -> Result<()> {
        if self.recent(&ThrottleKey::AccountFromPeer(username.to_owned(), peer)) >= ACCOUNT_PEER_FAILURES {
            return Err(GatewayError::TooMany(
                "too many wrong passwords for this account from your address; try again later".into(),
            ));
        }
        if self.recent(&ThrottleKey::Peer(peer)) >= PEER_FAILURES {
            return Err(GatewayError::TooMany("too many wrong passwords from your network; try again later".into()));
        }
        if !self.known(username, peer) {
            self.account_checks.take(username).map_err(|wait| GatewayError::TooManyAttempts {
                what: "sign-ins to this account from new addresses",
                retry_after_seconds: crate::budget::retry_after_seconds(wait),
            })?;
        }
        Ok(())
    }

    fn failed(&self, username: &str, peer: std::net::IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= THROTTLE_ENTRIES {
            failures.retain(|_, (_, since)| since.elapsed() < THROTTLE_WINDOW);
        }
        for (key, limit) in [
            (ThrottleKey::AccountFromPeer(username.to_owned(), peer), ACCOUNT_PEER_FAILURES),
            (ThrottleKey::Peer(peer), PEER_FAILURES),
        ] {
            if failures.len() >= THROTTLE_ENTRIES && !failures.contains_key(&key) {
                continue;
            }
            let locks_an_account = matches!(key, ThrottleKey::AccountFromPeer(..));
            let entry = failures.entry(key).or_insert((0, std::time::Instant::now()));
            if entry.1.elapsed() >= THROTTLE_WINDOW {
                *entry = (0, std::time::Instant::now());
            }
            entry.0 += 1;
            if entry.0 == limit {
                // Neither the username nor the address: the operator's log is no place for either.
                if locks_an_account {
                    tracing::warn!("sign-in locked out for one account from one address, for 15 minutes");
                } else {
                    tracing::warn!("sign-in locked out for one address, for 15 minutes");
                }
            }
        }
    }

    fn succeeded(&self, username: &str, peer: std::net::IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.remove(&ThrottleKey::AccountFromPeer(username.to_owned(), peer));
        drop(failures);
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= THROTTLE_ENTRIES {
            known.retain(|_, at| at.elapsed() < KNOWN_ADDRESS_FOR);
        }
        if known.len() < THROTTLE_ENTRIES {
            known.insert((username.to_owned(), peer), std::time::Instant::now());
        }
    }

    /// Runs `check` on a hashing thread within the budget, or refuses when too many already wait, in all
    /// or from `peer`.
    async fn hash<T: Send + 'static>(
        &self,
        peer: std::net::IpAddr,
        check: impl FnOnce(&mut Vec<argon2::Block>) -> T + Send + 'static,
    ) -> Result<T> {
        struct FromPeer<'a>(&'a SignInThrottle, std::net::IpAddr);
        impl Drop for FromPeer<'_> {
            fn drop(&mut self) {
                let mut in_flight = self.0.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(count) = in_flight.get_mut(&self.1) {
                    *count -= 1;
                    if *count == 0 {
                        in_flight.remove(&self.1);
                    }
                }
            }
        }
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = in_flight.entry(peer).or_insert(0);
            if *count >= PEER_SIGN_INS_AT_ONCE {
                return Err(GatewayError::TooMany("too many sign-ins at once from your network; try again".into()));
            }
            *count += 1;
        }
        let _from_peer = FromPeer(self, peer);
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: HashJob = Box::new(move |memory| {
            let _ = answer.send(check(memory));
        });
        match self.hashers.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                return Err(GatewayError::TooMany(
                    "the gateway is busy signing people in; try again in a moment".into(),
                ));
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(GatewayError::Internal("the password checkers have stopped".into()));
            }
        }
        answered.await.map_err(|_| GatewayError::Internal("a password check did not finish".into()))
    }
}

/// A password check for one of the hashing threads, given that thread's argon2 memory.
type HashJob = Box<dyn FnOnce(&mut Vec<argon2::Block>) + Send>;

/// A PHC string with the parameters of [`hash_password`] and a hash no password produces.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lzYWx0ZGVjb3lzYQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Checks `password` against the PHC string `stored`, working in `memory`, which the hashing thread keeps from one
/// check to the next: argon2's 19 MiB are allocated once per thread, never again (freed and allocated anew for every
/// check, glibc kept each: 128 sign-ins took a fresh gateway from 44 to 556 MB).
fn verify_in(memory: &mut Vec<argon2::Block>, stored: &str, password: &[u8]) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else { return false };
    let (Ok(params), Some(expected), Some(salt)) = (argon2::Params::try_from(&hash), hash.hash, hash.salt) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(hash.algorithm) else { return false };
    let version = match hash.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    memory.resize(params.block_count(), argon2::Block::default());
    let mut computed = vec![0u8; expected.len()];
    argon2::Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut computed, &mut memory[..])
        .is_ok()
        // Output's comparison takes constant time.
        && argon2::password_hash::Output::new(&computed).is_ok_and(|computed| computed == expected)
}

/// [`HASHING_AT_ONCE`] threads that run password checks from a queue of [`HASHING_QUEUE`]; they end when the
/// queue's sender is dropped.
fn start_hashers() -> std::sync::mpsc::SyncSender<HashJob> {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<HashJob>(HASHING_QUEUE);
    let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
    for n in 0..HASHING_AT_ONCE {
        let receiver = receiver.clone();
        let started = std::thread::Builder::new().name(format!("argon2-{n}")).spawn(move || {
            let mut memory = Vec::new();
            loop {
                let job = receiver.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                match job {
                    Ok(job) => job(&mut memory),
                    Err(_) => return,
                }
            }
        });
        if let Err(err) = started {
            tracing::error!(error = %err, "could not start a password-checking thread");
        }
    }
    sender
}

/// Checks a password, within the throttle. An unknown user costs the same as a wrong password, so timing does not
/// reveal usernames. `peer` is the client's address (see [`crate::listen::Site`]), used only for throttling.
pub async fn check_password(
    gateway: &Gateway,
    throttle: &SignInThrottle,
    username: &str,
    password: &str,
    peer: std::net::IpAddr,
) -> Result<Account> {
    throttle.check(username, peer)?;
    let account = gateway.catalog.account_by_username(username).await?;
    // An unknown username is checked against a decoy with the same parameters, so that it takes as long and as
    // much memory as a wrong password, within the same budget.
    let stored = account.as_ref().map_or_else(|| DECOY_HASH.to_owned(), |account| account.password_hash.clone());
    let password = password.to_owned();
    let matches = throttle.hash(peer, move |memory| verify_in(memory, &stored, password.as_bytes())).await?;
    match account {
        Some(account) if matches => {
            throttle.succeeded(username, peer);
            Ok(account)
        }
        _ => {
            throttle.failed(username, peer);
            Err(GatewayError::BadCredentials)
        }
    }
}

pub async fn start_session(gateway: &Gateway, account: &Account) -> Result<String> {
    let secret = new_secret();
    gateway
        .catalog
        .create_session(&secret_digest(&secret), &account.id, gateway.clock.unix_seconds() + SESSION_SECONDS)
        .await?;
    Ok(secret)
}

pub async fn issue_token(
    gateway: &Gateway,
    caller: &Caller,
    scopes: Vec<Scope>,
    ttl_seconds: i64,
) -> Result<(ApiToken, String)> {
    if caller.channel != Channel::Session {
        return Err(GatewayError::SessionOnly("make API tokens"));
    }
    if scopes.is_empty() || !(60..=366 * 24 * 3600).contains(&ttl_seconds) {
        return Err(GatewayError::BadInput {
            field: "token",
            reason: "name at least one scope, and a lifetime between 60 seconds and a year".into(),
        });
    }
    let secret = format!("{TOKEN_PREFIX}{}", new_secret());
    let token = ApiToken {
        id: crate::gateway::new_id("tok"),
        account_id: caller.account.id.clone(),
        scopes: scopes.iter().map(|s| s.name()).collect::<Vec<_>>().join(" "),
        expires_at: gateway.clock.unix_seconds() + ttl_seconds,
        revoked: false,
    };
    gateway.catalog.create_api_token(&token, &secret_digest(&secret)).await?;
    Ok((token, secret))
}

async fn caller_from_token(gateway: &Gateway, secret: &str) -> Result<Caller> {
    let token = gateway.catalog.api_token(&secret_digest(secret)).await?.ok_or(GatewayError::Unauthenticated)?;
    if token.revoked {
        return Err(GatewayError::TokenRevoked);
    }
    if token.expires_at <= gateway.clock.unix_seconds() {
        return Err(GatewayError::TokenExpired);
    }
    let account = gateway.catalog.active_account(&token.account_id).await?.ok_or(GatewayError::Unauthenticated)?;
    let scopes = token
        .scopes
        .split(' ')
        .filter_map(|name| serde_json::from_value(serde_json::Value::String(name.to_owned())).ok())
        .collect();
    Ok(Caller { account, channel: Channel::Token { id: token.id, scopes } })
}

async fn caller_from_session(gateway: &Gateway, secret: &str) -> Result<Caller> {
    let account_id = gateway
        .catalog
        .session_account(&secret_digest(secret), gateway.clock.unix_seconds())
        .await?
        .ok_or(GatewayError::Unauthenticated)?;
    let account = gateway.catalog.active_account(&account_id).await?.ok_or(GatewayError::Unauthenticated)?;
    Ok(Caller { account, channel: Channel::Session })
}

/// How often expired sessions are deleted.
pub const SESSION_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Deletes expired sessions now, and then every [`SESSION_PURGE_INTERVAL`] while the runtime runs.
pub fn purge_expired_sessions(gateway: Gateway) {
    tokio::spawn(async move {
        loop {
            match gateway.catalog.purge_expired_sessions(gateway.clock.unix_seconds()).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "expired sessions deleted"),
                Err(err) => tracing::warn!(error = %err, "could not delete expired sessions"),
            }
            tokio::time::sleep(SESSION_PURGE_INTERVAL).await;
        }
    });
}

/// Whether the client reached the gateway over HTTPS: its own TLS, or a trusted proxy's ([`crate::listen::Site`]);
/// a request served in-process has no site and follows the configuration.
pub fn reached_over_https(parts: &Parts, state: &AppState) -> bool {
    parts.extensions.get::<crate::listen::Site>().map_or(state.secure_cookies, |site| site.https)
}

/// The session cookie's name for a request: `__Host-` over HTTPS.
pub fn session_cookie_name(https: bool) -> &'static str {
    if https { HOST_SESSION_COOKIE } else { SESSION_COOKIE }
}

/// The `Set-Cookie` value for a session secret (empty, with `Max-Age=0`, to end one).
pub fn session_cookie(https: bool, secret: &str, max_age: i64) -> String {
    let name = session_cookie_name(https);
    let secure = if https { "; Secure" } else { "" };
    format!("{name}={secret}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}")
}

/// The session cookie's value, if the request carries one. Over HTTPS only the `__Host-` cookie counts.
pub fn session_secret(parts: &Parts, https: bool) -> Option<String> {
    let wanted = session_cookie_name(https);
    parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
        |pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == wanted).then(|| value.to_owned())
        },
    )
}

/// A cookie rides along on any request the browser sends, whoever's page made it. So an unsafe request
/// authenticated by the cookie must say it comes from our own pages: `Sec-Fetch-Site: same-origin`, or, from a
/// browser that does not send that, an `Origin` equal to ours. A request that says neither is refused too.
pub fn same_origin(parts: &Parts, https: bool) -> bool {
    if parts.method.is_safe() {
        return true;
    }
    if let Some(site) = parts.headers.get("sec-fetch-site") {
        return site.as_bytes().eq_ignore_ascii_case(b"same-origin");
    }
    let Some(origin) = parts.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host =
        parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).or(parts.uri.authority().map(|a| a.as_str()));
    let scheme = if https { "https://" } else { "http://" };
    match (origin.strip_prefix(scheme), host) {
        (Some(origin_host), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

/// Whether this request reached the gateway over HTTPS ([`reached_over_https`]).
#[derive(Debug, Clone, Copy)]
pub struct Https(pub bool);

impl FromRequestParts<AppState> for Https {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> std::result::Result<Self, Self::Rejection> {
        Ok(Self(reached_over_https(parts, state)))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> std::result::Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let https = reached_over_https(parts, state);
        let caller = match (bearer, session_secret(parts, https)) {
            (Some(token), _) => caller_from_token(&state.gateway, token).await,
            (None, Some(_)) if !same_origin(parts, https) => Err(GatewayError::CrossOrigin),
            (None, Some(session)) => caller_from_session(&state.gateway, &session).await,
            (None, None) => Err(GatewayError::Unauthenticated),
        };
        caller.map_err(|err| {
            tracing::info!(reason = %err, "unauthenticated request refused");
            Problem::from(err)
        })
    }
}
