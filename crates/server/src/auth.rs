//! Who is calling: people sign in with a password (argon2id) and get a session cookie; machines send scoped,
//! expiring, revocable API tokens. Secrets are random 256-bit values, stored only as their SHA-256, and never
//! logged or printed by `Debug`.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use custodia_catalog::{Account, ApiToken};
use custodia_core::{Action, ActorId, Label, Sha256};

use crate::api::AppState;
use crate::gateway::{Gateway, GatewayError, Result, actor_of};
use crate::problem::Problem;

pub const SESSION_COOKIE: &str = "custodia_session";
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

/// Checks a password. An unknown user costs the same as a wrong password, so timing does not reveal usernames.
pub async fn check_password(gateway: &Gateway, username: &str, password: &str) -> Result<Account> {
    let account = gateway.catalog.account_by_username(username).await?;
    let stored = match &account {
        Some(account) => account.password_hash.clone(),
        None => decoy_hash()?,
    };
    let password = password.to_owned();
    // argon2id takes 19 MiB per hash. Two at a time bound that memory (and slow a password-guessing flood),
    // however many sign-ins arrive at once.
    static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _permit = HASHING.acquire().await.map_err(|err| GatewayError::Internal(err.to_string()))?;
    let matches = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored)
            .is_ok_and(|hash| argon2::Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
    })
    .await
    .map_err(|err| GatewayError::Internal(err.to_string()))?;
    match account {
        Some(account) if matches => Ok(account),
        _ => Err(GatewayError::BadCredentials),
    }
}

/// An argon2id hash of a random password, checked against when the username is unknown.
fn decoy_hash() -> Result<String> {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(hash) = DECOY.get() {
        return Ok(hash.clone());
    }
    let hash = hash_password(&new_secret())?;
    Ok(DECOY.get_or_init(|| hash).clone())
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
    let account = gateway.catalog.account(&token.account_id).await?.ok_or(GatewayError::Unauthenticated)?;
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
    let account = gateway.catalog.account(&account_id).await?.ok_or(GatewayError::Unauthenticated)?;
    Ok(Caller { account, channel: Channel::Session })
}

/// The session cookie's value, if the request carries one.
pub fn session_secret(parts: &Parts) -> Option<String> {
    parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
        |pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then(|| value.to_owned())
        },
    )
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
        let caller = match (bearer, session_secret(parts)) {
            (Some(token), _) => caller_from_token(&state.gateway, token).await,
            (None, Some(session)) => caller_from_session(&state.gateway, &session).await,
            (None, None) => Err(GatewayError::Unauthenticated),
        };
        caller.map_err(|err| {
            tracing::info!(reason = %err, "unauthenticated request refused");
            Problem::from(err)
        })
    }
}
