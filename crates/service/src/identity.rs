//! Who is calling: people sign in with a password (argon2id) and get a session; machines send scoped, expiring,
//! revocable API tokens. Secrets are random 256-bit values, stored only as their SHA-256, and never
//! logged or printed by `Debug`. A browser that has signed in to an account also keeps a device cookie, which lets
//! it past the account's sign-in ceiling ([`SignInThrottle`]).

use std::fmt;

use argon2::password_hash::{PasswordHash, SaltString};
use base64::Engine as _;
use custodia_catalog::{Account, Catalog};
use custodia_core::{Action, ActorId, Label, Sha256};
use hmac::{Hmac, Mac as _};

use crate::clock::Clock;
use crate::error::{GatewayError, Result};
use crate::network::ClientNetwork;

/// How long a session lasts.
pub const SESSION_SECONDS: i64 = 12 * 3600;
/// How long a device cookie lets its device past the account's ceiling: 180 days from the sign-in that set it
/// (each sign-in sets a fresh one).
pub const DEVICE_COOKIE_SECONDS: i64 = 180 * 24 * 3600;
/// What an API token's secret starts with, so that a leaked one is recognised (by a secret scanner, say).
pub const TOKEN_PREFIX: &str = "cst_";

/// What a token may be used for. A session may do everything its roles allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read cases, artefacts, timelines and outcome reports.
    Read,
    /// Upload artefacts, file outcome reports, request wider use.
    Write,
    /// Manage members, set use policies, decide on wider use, run hearings (schedule, invite, revoke, open, close),
    /// order a witness's protection.
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
            | Action::RunHearings
            | Action::TransferArtefact
            | Action::OrderProtection => Self::Manage,
        }
    }

    /// The scope's name, as a token lists it.
    pub fn name(self) -> &'static str {
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
    Token {
        id: String,
        scopes: Vec<Scope>,
    },
    /// A partner gateway, by its signed request (the server's `partner_api::FromPartner`): it acts here only as the
    /// provider of what it transfers, and is never a case member.
    Partner,
}

/// An authenticated caller: an active account, and how it authenticated. It carries no secret (not the password's
/// hash, not the token), and its `Debug` shows only the account's id and the channel.
#[derive(Clone)]
pub struct Principal {
    account_id: String,
    username: String,
    display_name: String,
    is_admin: bool,
    jurisdiction: String,
    channel: Channel,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal").field("account", &self.account_id).field("channel", &self.channel).finish()
    }
}

impl Principal {
    /// `account`, authenticated over `channel`.
    pub fn new(account: &Account, channel: Channel) -> Self {
        Self {
            account_id: account.id.clone(),
            username: account.username.clone(),
            display_name: account.display_name.clone(),
            is_admin: account.is_admin,
            jurisdiction: account.jurisdiction.clone(),
            channel,
        }
    }

    /// The same account, signed in: how the court's own steps are taken on its behalf.
    pub fn signed_in(&self) -> Self {
        Self { channel: Channel::Session, ..self.clone() }
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// The account's jurisdiction as the account holds it ([`Principal::jurisdiction`] as a label).
    pub fn jurisdiction_name(&self) -> &str {
        &self.jurisdiction
    }

    pub fn is_admin(&self) -> bool {
        self.is_admin
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    pub fn actor(&self) -> ActorId {
        actor_of(&self.account_id)
    }

    pub fn jurisdiction(&self) -> Label {
        Label::new(self.jurisdiction.clone()).unwrap_or_else(|_| fallback_label())
    }

    /// From where, in words fit for a public record: the jurisdiction and the channel, never an address.
    pub fn site(&self) -> Label {
        let channel = match &self.channel {
            Channel::Session => "web session".to_owned(),
            Channel::Token { id, .. } => format!("API token {id}"),
            Channel::Partner => "partner gateway".to_owned(),
        };
        Label::new(format!("{}, {channel}", self.jurisdiction)).unwrap_or_else(|_| fallback_label())
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
            Channel::Partner => Err(GatewayError::MissingScope(Scope::needed_for(action).name())),
        }
    }

    /// An administrator, signed in: administration is never done with an API token (a leaked one would hand out
    /// the gateway), and an administrator's token is told so rather than that they are not one.
    pub fn require_admin(&self, what: &'static str) -> Result<()> {
        match (self.is_admin, &self.channel) {
            (true, Channel::Session) => Ok(()),
            (true, Channel::Token { .. } | Channel::Partner) => Err(GatewayError::SessionOnly(what)),
            (false, _) => Err(GatewayError::AdminOnly(what)),
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

/// Password guessing is throttled so that it cannot be turned against the owner of an account. "An address" is a
/// client network ([`ClientNetwork`]: an IPv4 address, an IPv6 /64). Wrong passwords are counted over
/// [`THROTTLE_WINDOW`], on every gateway on the database together:
/// - one address that has sent [`ACCOUNT_PEER_FAILURES`] wrong passwords for one account is refused for that
///   account ("locked" for that address only: a stranger who knows a judge's username cannot lock the judge out
///   from the judge's own address);
/// - one address that has sent [`PEER_FAILURES`] wrong passwords, for any accounts, is refused for all;
/// - a lockout lets one more try through each [`THROTTLE_WINDOW`] divided by its limit (90 s for ten), and is
///   gone once a whole window passes without a wrong password: over time, a guesser gets the limit a window;
/// - an account is guessed at from many addresses at most [`ACCOUNT_CHECKS_BURST`] times at once and then
///   [`ACCOUNT_CHECKS_PER_MINUTE`] a minute, over all addresses: past that a sign-in is delayed (429 with
///   `Retry-After` of seconds), never locked. Addresses from which the account has signed in before are not held
///   to this ceiling, so a distributed guesser slows only strangers.
///
/// A guesser who polls from many addresses takes every token of the ceiling as it refills (a 429 costs them
/// nothing), so the ceiling alone would shut out the owner from any address the gateway does not remember, and
/// from every address after a restart. So a sign-in that carries a valid device cookie for the account (OWASP's
/// "device cookies": [`DeviceKey`], set on every successful sign-in, kept by the browser) is held to none of the
/// rules above: that device is counted on its own instead, and refused after [`ACCOUNT_PEER_FAILURES`] wrong
/// passwords as an address is. A cookie that is forged, expired, or another account's is ignored, and
/// the rules above apply.
///
/// Hashing itself is budgeted: [`HASHING_AT_ONCE`] argon2id runs at a time (19 MiB each), on as many threads of
/// their own (so the allocator reuses those threads' 19 MiB instead of keeping one per thread of the blocking pool:
/// 128 sign-ins once took a fresh gateway from 44 to 556 MB), and at most [`HASHING_QUEUE`] sign-ins waiting; any
/// more are told to come back later instead of queueing without limit. Anyone can fill that queue (wrong passwords
/// for unused usernames cost nothing), so sign-ins with a valid device cookie wait in a lane of their own
/// ([`OWNER_QUEUE`]), which the hashing threads always serve first: strangers are refused before owners are.
/// An owner's device has one sign-in under way at a time, an account [`OWNER_SIGN_INS_AT_ONCE`] in that lane; a
/// device that is locked, or already has a sign-in under way, is no exemption, and its sign-in follows the rules for
/// sign-ins without one. Other sign-ins are held to [`PEER_SIGN_INS_AT_ONCE`] per client network and
/// [`WIDER_SIGN_INS_AT_ONCE`] per IPv6 /56, and successful sign-ins are budgeted too, per account
/// ([`ACCOUNT_SIGN_INS_PER_HOUR`]) and, without a device cookie, per network ([`NETWORK_SIGN_INS_PER_HOUR`]): an
/// insider who knows a password cannot keep the queue full with it.
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
/// Sign-ins with a valid device cookie waiting at once, in a lane of their own (see [`ACCOUNT_PEER_FAILURES`]).
pub const OWNER_QUEUE: usize = 16;
/// Sign-ins to one account with a valid device cookie at once (see [`ACCOUNT_PEER_FAILURES`]).
pub const OWNER_SIGN_INS_AT_ONCE: usize = 2;
/// Sign-ins from one address waiting or hashing at once, so that one address cannot fill [`HASHING_QUEUE`].
pub const PEER_SIGN_INS_AT_ONCE: usize = 4;
/// Sign-ins from one IPv6 /56 (a household's or a small site's whole allocation) waiting or hashing at once.
pub const WIDER_SIGN_INS_AT_ONCE: usize = 8;
/// Successful sign-ins to one account: this many at once, then as many an hour (see [`ACCOUNT_PEER_FAILURES`]).
pub const ACCOUNT_SIGN_INS_PER_HOUR: u32 = 20;
/// Successful sign-ins without a device cookie from one network: this many at once, then as many an hour.
pub const NETWORK_SIGN_INS_PER_HOUR: u32 = 60;
/// The longest username, in characters (as the API document's `maxLength` counts; 512 bytes at most); a longer
/// one is refused before any throttle counts it.
pub const MAX_USERNAME_CHARS: usize = 128;
/// Device cookies read from one request at most (a planted one must not hide the real one, nor many cost much).
pub const DEVICE_COOKIES_READ: usize = 4;
/// Addresses an account signed in from, kept at most; beyond that, expired ones are dropped first.
const THROTTLE_ENTRIES: usize = 100_000;

/// A username as the throttle keeps it: its SHA-256, so that an entry costs 32 bytes whatever was sent.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct UserKey([u8; 32]);

impl UserKey {
    /// The key of `username`, or bad input if it is longer than [`MAX_USERNAME_CHARS`].
    fn of(username: &str) -> Result<Self> {
        if username.chars().count() > MAX_USERNAME_CHARS {
            return Err(GatewayError::BadInput {
                field: "username",
                reason: format!("at most {MAX_USERNAME_CHARS} characters"),
            });
        }
        use sha2::Digest as _;
        Ok(Self(sha2::Sha256::digest(username.as_bytes()).into()))
    }

    fn budget_key(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The sign-in throttle ([`ACCOUNT_PEER_FAILURES`] says its rules). Wrong passwords are counted in budgets
/// ([`crate::budget::Budget::refilled_over`]), by username and client address together, by address alone and by
/// device: each holds its limit of failures and refills over [`THROTTLE_WINDOW`], and an empty one is a lockout. A
/// successful sign-in fills the username-and-address's budget again, and its device's. Once
/// [`SignInThrottle::kept_in`] is called (the server does), these budgets, each account's ceiling and the budgets
/// of successful sign-ins are kept in the catalog's shared store ([`crate::budget::BudgetStore`]): one over every
/// gateway on the database and over restarts, so N gateways give a guesser the tries of one, not N, and a success
/// through one gateway clears what another counted. There the keys are HMACs under the database's salt: no
/// username, address or device is stored in clear. While the catalog fails, each process counts on its own
/// meanwhile, from what it has counted itself.
///
/// What stays in this process: the addresses each account signed in from (`known`), which only spare a sign-in from
/// them the account's ceiling; another gateway, or a restart, does not know them, which costs the owner at worst a
/// delay there (the device cookie, whose key is on disk, is what gets them past a spent ceiling anywhere) and gives
/// an attacker nothing. Also sign-ins under way and the hashing queues, which hold this process's own threads.
/// Usernames (as their SHA-256), addresses and devices stay out of `Debug` and the log: the operator's log says
/// only that a lockout began, never for whom or from where.
pub struct SignInThrottle {
    /// Wrong passwords for one account from one address ([`ACCOUNT_PEER_FAILURES`] over [`THROTTLE_WINDOW`]).
    account_peer_failures: crate::budget::Budget,
    /// Wrong passwords from one address, for any accounts ([`PEER_FAILURES`] over [`THROTTLE_WINDOW`]).
    peer_failures: crate::budget::Budget,
    /// Wrong passwords with one device's valid cookie ([`ACCOUNT_PEER_FAILURES`] over [`THROTTLE_WINDOW`]).
    device_failures: crate::budget::Budget,
    known: std::sync::Mutex<std::collections::HashMap<(UserKey, ClientNetwork), std::time::Instant>>,
    account_checks: crate::budget::Budget,
    account_sign_ins: crate::budget::Budget,
    network_sign_ins: crate::budget::Budget,
    hashers: std::sync::Arc<Hashers>,
    in_flight: std::sync::Mutex<std::collections::HashMap<Flight, usize>>,
    devices: DeviceKey,
}

impl fmt::Debug for SignInThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignInThrottle").finish_non_exhaustive()
    }
}

impl Drop for SignInThrottle {
    fn drop(&mut self) {
        self.hashers.close();
    }
}

/// What wrong passwords are counted against.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum ThrottleKey {
    AccountFromPeer(UserKey, ClientNetwork),
    Peer(ClientNetwork),
    Device(Device),
}

impl ThrottleKey {
    /// What the operator's log says when this key's lockout begins: neither the username nor the address nor the
    /// device, which the log is no place for.
    fn lockout(&self) -> &'static str {
        match self {
            Self::AccountFromPeer(..) => {
                "sign-in locked out for one account from one address; its tries come back over 15 minutes"
            }
            Self::Peer(_) => "sign-in locked out for one address; its tries come back over 15 minutes",
            Self::Device(_) => {
                "sign-in locked out for one account from one device; its tries come back over 15 minutes"
            }
        }
    }
}

/// What a sign-in under way is counted against.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Flight {
    Network(ClientNetwork),
    Wider(ClientNetwork),
    Device(Device),
    Account(String),
}

/// Places taken by one sign-in under way, given back when dropped.
struct Flights<'a> {
    throttle: &'a SignInThrottle,
    keys: Vec<Flight>,
}

impl Drop for Flights<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.throttle.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in &self.keys {
            if let Some(count) = in_flight.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    in_flight.remove(key);
                }
            }
        }
    }
}

/// Which queue a password check waits in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lane {
    /// Sign-ins with a valid device cookie for the account named, served first.
    Owners,
    /// Every other sign-in.
    Others,
}

impl SignInThrottle {
    /// A throttle with nothing recorded yet, whose device cookies are made and checked with `devices`.
    pub fn new(devices: DeviceKey) -> Self {
        let failures = |limit| crate::budget::Budget::refilled_over(limit, THROTTLE_WINDOW);
        Self {
            account_peer_failures: failures(ACCOUNT_PEER_FAILURES),
            peer_failures: failures(PEER_FAILURES),
            device_failures: failures(ACCOUNT_PEER_FAILURES),
            known: std::sync::Mutex::new(std::collections::HashMap::new()),
            account_checks: crate::budget::Budget::new(ACCOUNT_CHECKS_BURST, ACCOUNT_CHECKS_PER_MINUTE),
            account_sign_ins: crate::budget::Budget::per_hour(ACCOUNT_SIGN_INS_PER_HOUR, ACCOUNT_SIGN_INS_PER_HOUR),
            network_sign_ins: crate::budget::Budget::per_hour(NETWORK_SIGN_INS_PER_HOUR, NETWORK_SIGN_INS_PER_HOUR),
            hashers: Hashers::start(),
            in_flight: std::sync::Mutex::new(std::collections::HashMap::new()),
            devices,
        }
    }

    /// This throttle, with its budgets (wrong passwords per account and address, per address and per device,
    /// password checks per account, successful sign-ins per account and per network) kept in `store` for every
    /// gateway on its catalog: a guesser who spreads tries over N gateways gets one budget, not N. The addresses
    /// each account signed in from and sign-ins under way stay in this process (see [`SignInThrottle`]).
    pub fn kept_in(mut self, store: &crate::budget::BudgetStore) -> Self {
        self.account_peer_failures.keep_in("sign_in.account_peer_failures", store);
        self.peer_failures.keep_in("sign_in.peer_failures", store);
        self.device_failures.keep_in("sign_in.device_failures", store);
        self.account_checks.keep_in("sign_in.account_checks", store);
        self.account_sign_ins.keep_in("sign_in.account_sign_ins", store);
        self.network_sign_ins.keep_in("sign_in.network_sign_ins", store);
        self
    }

    /// The value of a new device cookie for `account_id`, made at `now` (unix seconds), good for
    /// [`DEVICE_COOKIE_SECONDS`].
    pub fn device_cookie_value(&self, account_id: &str, now: i64) -> String {
        self.devices.issue(account_id, now)
    }

    /// The budget that counts wrong passwords against `key`, and `key` as that budget keeps it.
    fn failures(&self, key: &ThrottleKey) -> (&crate::budget::Budget, String) {
        match key {
            ThrottleKey::AccountFromPeer(user, peer) => {
                (&self.account_peer_failures, format!("{} {}", user.budget_key(), peer.key()))
            }
            ThrottleKey::Peer(peer) => (&self.peer_failures, peer.key()),
            ThrottleKey::Device(device) => (&self.device_failures, device.budget_key()),
        }
    }

    /// Whether `key` is locked out: its budget of wrong passwords is spent.
    async fn locked(&self, key: &ThrottleKey) -> bool {
        let (budget, key) = self.failures(key);
        budget.check(&key).await.is_err()
    }

    fn known(&self, user: UserKey, peer: ClientNetwork) -> bool {
        let known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        known.get(&(user, peer)).is_some_and(|at| at.elapsed() < KNOWN_ADDRESS_FOR)
    }

    /// Places for one sign-in under way against each of `wanted` (a key and its most at once), or none if any is
    /// full.
    fn fly(&self, wanted: &[(Flight, usize)]) -> Option<Flights<'_>> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if wanted.iter().any(|(key, most)| in_flight.get(key).is_some_and(|count| count >= most)) {
            return None;
        }
        for (key, _) in wanted {
            *in_flight.entry(key.clone()).or_insert(0) += 1;
        }
        Some(Flights { throttle: self, keys: wanted.iter().map(|(key, _)| key.clone()).collect() })
    }

    /// The first of `cookies` valid at `now` for the account `account_id` whose device is not locked and has no
    /// sign-in under way, with its places in the owners' lane; `None` if there is none (the ordinary rules apply).
    async fn owner<'a>(
        &'a self,
        cookies: &[DeviceCookie],
        account_id: &str,
        now: i64,
    ) -> Option<(Device, Flights<'a>)> {
        for device in cookies.iter().filter_map(|cookie| self.devices.verify(cookie, account_id, now)) {
            // The place first, then the lock: with one sign-in under way per device (in this process), no two can
            // both pass the check before either is counted.
            let Some(flights) = self
                .fly(&[(Flight::Device(device), 1), (Flight::Account(account_id.to_owned()), OWNER_SIGN_INS_AT_ONCE)])
            else {
                continue;
            };
            if !self.locked(&ThrottleKey::Device(device)).await {
                return Some((device, flights));
            }
        }
        None
    }

    /// Whether a sign-in to `user` from `peer` may have its password checked; `device`, when its cookie is valid
    /// for the account (and the device neither locked nor busy, [`SignInThrottle::owner`]).
    async fn check(&self, user: UserKey, peer: ClientNetwork, device: Option<Device>) -> Result<()> {
        let spent = |wait| GatewayError::TooManyAttempts {
            what: "sign-ins to this account",
            retry_after_seconds: crate::budget::retry_after_seconds(wait),
        };
        self.account_sign_ins.check(&user.budget_key()).await.map_err(spent)?;
        if device.is_some() {
            return Ok(());
        }
        if self.locked(&ThrottleKey::AccountFromPeer(user, peer)).await {
            return Err(GatewayError::TooMany(
                "too many wrong passwords for this account from your address; try again later".into(),
            ));
        }
        if self.locked(&ThrottleKey::Peer(peer)).await {
            return Err(GatewayError::TooMany("too many wrong passwords from your network; try again later".into()));
        }
        self.network_sign_ins.check(&peer.key()).await.map_err(|wait| GatewayError::TooManyAttempts {
            what: "sign-ins from your network",
            retry_after_seconds: crate::budget::retry_after_seconds(wait),
        })?;
        if !self.known(user, peer) {
            self.account_checks.take(&user.budget_key()).await.map_err(|wait| GatewayError::TooManyAttempts {
                what: "sign-ins to this account from new addresses",
                retry_after_seconds: crate::budget::retry_after_seconds(wait),
            })?;
        }
        Ok(())
    }

    /// Counts a wrong password: against the device alone when it came with a valid device cookie, else against the
    /// account from that address and the address. A count that spends its budget begins a lockout, which the
    /// operator's log notes.
    async fn failed(&self, user: UserKey, peer: ClientNetwork, device: Option<Device>) {
        let counted = match device {
            Some(device) => vec![ThrottleKey::Device(device)],
            None => vec![ThrottleKey::AccountFromPeer(user, peer), ThrottleKey::Peer(peer)],
        };
        for key in counted {
            let (budget, name) = self.failures(&key);
            // A budget already spent takes nothing (sign-ins checked at once, before any was counted): the lockout
            // is under way.
            if budget.take(&name).await.is_ok() && budget.check(&name).await.is_err() {
                tracing::warn!("{}", key.lockout());
            }
        }
    }

    async fn succeeded(&self, user: UserKey, peer: ClientNetwork, device: Option<Device>) {
        // Spent after the fact: a sign-in already checked is not refused for the budget it used.
        let _ = self.account_sign_ins.take(&user.budget_key()).await;
        if device.is_none() {
            let _ = self.network_sign_ins.take(&peer.key()).await;
        }
        let mut cleared = vec![ThrottleKey::AccountFromPeer(user, peer)];
        cleared.extend(device.map(ThrottleKey::Device));
        for key in cleared {
            let (budget, key) = self.failures(&key);
            budget.refill(&key).await;
        }
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= THROTTLE_ENTRIES {
            known.retain(|_, at| at.elapsed() < KNOWN_ADDRESS_FOR);
        }
        if known.len() < THROTTLE_ENTRIES {
            known.insert((user, peer), std::time::Instant::now());
        }
    }

    /// The PHC string of a new password, hashed on a hashing thread in the owners' lane, in that thread's memory:
    /// an account made costs no 19 MiB more, and holds up none of the runtime's threads.
    pub async fn hash_new_password(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        self.hash(Lane::Owners, move |memory| hash_in(memory, password.as_bytes())).await?
    }

    /// Runs `check` on a hashing thread, waiting in `lane`, or refuses when that lane is full.
    async fn hash<T: Send + 'static>(
        &self,
        lane: Lane,
        check: impl FnOnce(&mut Vec<argon2::Block>) -> T + Send + 'static,
    ) -> Result<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: HashJob = Box::new(move |memory| {
            let _ = answer.send(check(memory));
        });
        if !self.hashers.submit(lane, job) {
            return Err(GatewayError::TooMany("the gateway is busy signing people in; try again in a moment".into()));
        }
        answered.await.map_err(|err| GatewayError::internal("a password check did not finish", err))
    }
}

/// The hashing threads' two queues ([`Lane`]): owners' sign-ins first.
struct Hashers {
    lanes: std::sync::Mutex<Lanes>,
    ready: std::sync::Condvar,
}

#[derive(Default)]
struct Lanes {
    owners: std::collections::VecDeque<HashJob>,
    others: std::collections::VecDeque<HashJob>,
    closed: bool,
}

impl Hashers {
    /// [`HASHING_AT_ONCE`] threads that run password checks from the queues; they end when closed.
    fn start() -> std::sync::Arc<Self> {
        let hashers =
            std::sync::Arc::new(Self { lanes: std::sync::Mutex::default(), ready: std::sync::Condvar::new() });
        for n in 0..HASHING_AT_ONCE {
            let hashers = hashers.clone();
            let started = std::thread::Builder::new().name(format!("argon2-{n}")).spawn(move || {
                let mut memory = Vec::new();
                while let Some(job) = hashers.next() {
                    job(&mut memory);
                }
            });
            if let Err(err) = started {
                tracing::error!(error = %crate::error::Chain(&err), "could not start a password-checking thread");
            }
        }
        hashers
    }

    /// The next job, owners' first; `None` once closed.
    fn next(&self) -> Option<HashJob> {
        let mut lanes = self.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if lanes.closed {
                return None;
            }
            if let Some(job) = lanes.owners.pop_front().or_else(|| lanes.others.pop_front()) {
                return Some(job);
            }
            lanes = self.ready.wait(lanes).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Queues `job` in `lane`, or `false` if that lane is full.
    fn submit(&self, lane: Lane, job: HashJob) -> bool {
        let mut lanes = self.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (queue, most) = match lane {
            Lane::Owners => (&mut lanes.owners, OWNER_QUEUE),
            Lane::Others => (&mut lanes.others, HASHING_QUEUE),
        };
        if queue.len() >= most {
            return false;
        }
        queue.push_back(job);
        drop(lanes);
        self.ready.notify_one();
        true
    }

    fn close(&self) {
        let mut lanes = self.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        lanes.closed = true;
        lanes.owners.clear();
        lanes.others.clear();
        drop(lanes);
        self.ready.notify_all();
    }
}

/// The key of the device cookies' MAC (HMAC-SHA256), kept in `keys/device-cookie.key` (owner-only,
/// the server's `keys::load_or_create_secret`) so that a device cookie outlives a restart. Its `Debug` withholds it.
///
/// A device cookie's value is base64url of its expiry (8 bytes, unix seconds), a random nonce (16 bytes, the
/// device's identity for counting its failures) and the MAC over the account's id, the expiry and the nonce (32
/// bytes): it names no account (the account is only inside the MAC, and the sign-in names it), it cannot be made
/// for another account or another expiry without the key, and it is good for one account only.
pub struct DeviceKey([u8; 32]);

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(withheld)")
    }
}

const DEVICE_NONCE_BYTES: usize = 16;
const DEVICE_TAG_BYTES: usize = 32;
const DEVICE_COOKIE_BYTES: usize = 8 + DEVICE_NONCE_BYTES + DEVICE_TAG_BYTES;

/// A device that has signed in to an account: the nonce of its valid cookie. Never logged.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Device([u8; DEVICE_NONCE_BYTES]);

impl Device {
    /// The key of this device in a [`crate::budget::Budget`] (which keeps it in the catalog only as an HMAC).
    fn budget_key(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A device cookie's parts, read but not yet checked.
struct DeviceCookie {
    expires_at: i64,
    nonce: [u8; DEVICE_NONCE_BYTES],
    tag: [u8; DEVICE_TAG_BYTES],
}

impl DeviceCookie {
    /// The parts of `value`, if it has a device cookie's form.
    fn parse(value: &str) -> Option<Self> {
        // Base64 of 56 bytes is 75 characters: anything much longer is not worth decoding.
        if value.len() > 2 * DEVICE_COOKIE_BYTES {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).ok()?;
        let bytes = <[u8; DEVICE_COOKIE_BYTES]>::try_from(bytes).ok()?;
        let (expires_at, rest) = bytes.split_at(8);
        let (nonce, tag) = rest.split_at(DEVICE_NONCE_BYTES);
        Some(Self {
            expires_at: i64::from_be_bytes(expires_at.try_into().ok()?),
            nonce: nonce.try_into().ok()?,
            tag: tag.try_into().ok()?,
        })
    }
}

impl DeviceKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn mac(&self, account_id: &str, expires_at: i64, nonce: &[u8; DEVICE_NONCE_BYTES]) -> Hmac<sha2::Sha256> {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(b"custodia device cookie v1\0");
        mac.update(&(account_id.len() as u64).to_be_bytes());
        mac.update(account_id.as_bytes());
        mac.update(&expires_at.to_be_bytes());
        mac.update(nonce);
        mac
    }

    /// A new device cookie's value for the account `account_id`, made at `now` (unix seconds).
    pub fn issue(&self, account_id: &str, now: i64) -> String {
        let mut nonce = [0u8; DEVICE_NONCE_BYTES];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let expires_at = now.saturating_add(DEVICE_COOKIE_SECONDS);
        let tag = self.mac(account_id, expires_at, &nonce).finalize().into_bytes();
        let mut bytes = Vec::with_capacity(DEVICE_COOKIE_BYTES);
        bytes.extend_from_slice(&expires_at.to_be_bytes());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&tag);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The device `cookie` names, if this key made it for the account `account_id` and it has not expired at `now`.
    fn verify(&self, cookie: &DeviceCookie, account_id: &str, now: i64) -> Option<Device> {
        if cookie.expires_at <= now {
            return None;
        }
        // verify_slice compares in constant time.
        self.mac(account_id, cookie.expires_at, &cookie.nonce).verify_slice(&cookie.tag).ok()?;
        Some(Device(cookie.nonce))
    }
}

/// A password check for one of the hashing threads, given that thread's argon2 memory.
type HashJob = Box<dyn FnOnce(&mut Vec<argon2::Block>) + Send>;

/// A PHC string with the parameters of [`hash_in`] and a hash no password produces.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lzYWx0ZGVjb3lzYQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The PHC string of `password` hashed with argon2id's default parameters (19 MiB, two passes) and a new salt,
/// working in `memory`, a hashing thread's ([`verify_in`]).
fn hash_in(memory: &mut Vec<argon2::Block>, password: &[u8]) -> Result<String> {
    let failed = |err: argon2::password_hash::Error| GatewayError::internal("hashing a password", err);
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let params = argon2::Params::default();
    let argon2 = argon2::Argon2::from(&params);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.as_salt().decode_b64(&mut salt_bytes).map_err(failed)?;
    memory.resize(params.block_count(), argon2::Block::default());
    let mut output = [0u8; argon2::Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(password, raw_salt, &mut output, &mut memory[..])
        .map_err(|err| failed(err.into()))?;
    let hash = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(&params).map_err(failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&output).map_err(failed)?),
    };
    Ok(hash.to_string())
}

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

/// Checks a password, within the throttle. An unknown user costs the same as a wrong password, so timing does not
/// reveal usernames. `peer` is the client's network and `device_cookies` the values of the request's
/// device cookies (at most [`DEVICE_COOKIES_READ`] are read), both used only for throttling.
pub async fn check_password(
    catalog: &Catalog,
    clock: &Clock,
    throttle: &SignInThrottle,
    username: &str,
    password: &str,
    peer: ClientNetwork,
    device_cookies: &[String],
) -> Result<Account> {
    let user = UserKey::of(username)?;
    // Which account a device cookie is for is known only by checking its MAC for the account named: the account is
    // looked up first for a sign-in that carries one, and after the throttle's other checks for any other.
    let cookies: Vec<DeviceCookie> =
        device_cookies.iter().take(DEVICE_COOKIES_READ).filter_map(|value| DeviceCookie::parse(value)).collect();
    let mut looked_up = None;
    let mut owner = None;
    if !cookies.is_empty() {
        let account = catalog.account_by_username(username).await?;
        let now = clock.unix_seconds();
        if let Some(account) = &account {
            owner = throttle.owner(&cookies, &account.id, now).await;
        }
        looked_up = Some(account);
    }
    let device = owner.as_ref().map(|(device, _)| *device);
    throttle.check(user, peer, device).await?;
    let (lane, _flights) = match owner {
        Some((_, flights)) => (Lane::Owners, flights),
        None => {
            let flights = throttle
                .fly(&[
                    (Flight::Network(peer), PEER_SIGN_INS_AT_ONCE),
                    (Flight::Wider(peer.wider()), WIDER_SIGN_INS_AT_ONCE),
                ])
                .ok_or_else(|| {
                    GatewayError::TooMany("too many sign-ins at once from your network; try again".into())
                })?;
            (Lane::Others, flights)
        }
    };
    let account = match looked_up {
        Some(account) => account,
        None => catalog.account_by_username(username).await?,
    };
    // An unknown username is checked against a decoy with the same parameters, so that it takes as long and as
    // much memory as a wrong password, within the same budget.
    let stored = account.as_ref().map_or_else(|| DECOY_HASH.to_owned(), |account| account.password_hash.clone());
    let password = password.to_owned();
    let matches = throttle.hash(lane, move |memory| verify_in(memory, &stored, password.as_bytes())).await?;
    match account {
        Some(account) if matches => {
            throttle.succeeded(user, peer, device).await;
            Ok(account)
        }
        _ => {
            throttle.failed(user, peer, device).await;
            Err(GatewayError::BadCredentials)
        }
    }
}

/// Accounts are referred to in records by their opaque id only.
pub fn actor_of(account_id: &str) -> ActorId {
    ActorId::new(account_id.to_owned()).unwrap_or_else(|_| unreachable!("account ids are generated well-formed"))
}

/// How often expired sessions are deleted.
pub const SESSION_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Deletes expired sessions now, and then every [`SESSION_PURGE_INTERVAL`] while the runtime runs. It holds the
/// catalog only, never the gateway: the custody log closes once the gateway's last handle is gone.
pub fn purge_expired_sessions(catalog: Catalog, clock: Clock) {
    tokio::spawn(async move {
        loop {
            match catalog.purge_expired_sessions(clock.unix_seconds()).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "expired sessions deleted"),
                Err(err) => tracing::warn!(error = %crate::error::Chain(&err), "could not delete expired sessions"),
            }
            tokio::time::sleep(SESSION_PURGE_INTERVAL).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new password's hash is a standard argon2id PHC string (the argon2 crate's own verifier accepts it), and
    /// the check the gateway uses accepts the password and refuses another.
    #[test]
    fn a_new_password_hash_is_standard_argon2id_and_checks() {
        use argon2::password_hash::PasswordVerifier as _;
        let mut memory = Vec::new();
        let stored = hash_in(&mut memory, b"correct horse battery").expect("hashed");
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        let parsed = PasswordHash::new(&stored).expect("a PHC string");
        assert!(argon2::Argon2::default().verify_password(b"correct horse battery", &parsed).is_ok());
        assert!(verify_in(&mut memory, &stored, b"correct horse battery"));
        assert!(!verify_in(&mut memory, &stored, b"correct horse battery!"));
        assert_ne!(stored, hash_in(&mut memory, b"correct horse battery").expect("hashed"), "a new salt each time");
    }

    const NOW: i64 = 1_800_000_000;

    fn network(address: &str) -> ClientNetwork {
        ClientNetwork::of(address.parse().unwrap())
    }

    fn user(name: &str) -> UserKey {
        UserKey::of(name).unwrap()
    }

    #[test]
    fn a_device_cookie_is_good_for_its_account_until_it_expires_and_names_no_one() {
        let key = DeviceKey::new([7; 32]);
        let value = key.issue("acc-judge", NOW);
        let cookie = DeviceCookie::parse(&value).unwrap();
        let device = key.verify(&cookie, "acc-judge", NOW).unwrap();
        assert!(key.verify(&cookie, "acc-judge", NOW + DEVICE_COOKIE_SECONDS - 1).is_some());
        assert!(key.verify(&cookie, "acc-judge", NOW + DEVICE_COOKIE_SECONDS).is_none(), "an expired cookie");
        assert!(key.verify(&cookie, "acc-mallory", NOW).is_none(), "another account's cookie");
        assert!(DeviceKey::new([8; 32]).verify(&cookie, "acc-judge", NOW).is_none(), "another key's cookie");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&value).unwrap();
        // The expiry, the nonce and the MAC: changing any of them spoils the cookie.
        for at in [0, 7, 8, 23, 24, DEVICE_COOKIE_BYTES - 1] {
            let mut forged = bytes.clone();
            forged[at] ^= 1;
            let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged);
            let forged = DeviceCookie::parse(&forged).unwrap();
            assert!(key.verify(&forged, "acc-judge", NOW).is_none(), "byte {at} changed");
        }
        for malformed in ["", "not base64!", &value[..value.len() - 4], &format!("{value}AAAA"), &"A".repeat(4096)] {
            assert!(DeviceCookie::parse(malformed).is_none(), "{malformed:?}");
        }
        let second = DeviceCookie::parse(&key.issue("acc-judge", NOW)).unwrap();
        assert!(key.verify(&second, "acc-judge", NOW).is_some_and(|other| other != device), "two devices");
        assert!(!value.contains("judge") && !String::from_utf8_lossy(&bytes).contains("judge"));
        assert_eq!(format!("{key:?}"), "DeviceKey(withheld)");
    }

    #[tokio::test]
    async fn a_valid_device_is_counted_on_its_own_and_held_to_no_other_rule() {
        let throttle = SignInThrottle::new(DeviceKey::new([1; 32]));
        let judges_desk = network("192.0.2.1");
        // Strangers spend the account's ceiling, one address each.
        for n in 0..ACCOUNT_CHECKS_BURST {
            throttle.check(user("judge"), network(&format!("198.51.100.{n}")), None).await.unwrap();
        }
        assert!(throttle.check(user("judge"), judges_desk, None).await.is_err(), "the ceiling is spent");
        let device = Device([3; DEVICE_NONCE_BYTES]);
        assert!(throttle.check(user("judge"), judges_desk, Some(device)).await.is_ok(), "a device of the account");
        // Someone at the judge's address guesses at every account until the address is refused: not the device.
        for _ in 0..PEER_FAILURES {
            throttle.failed(user("clerk"), judges_desk, None).await;
        }
        assert!(throttle.check(user("clerk"), judges_desk, None).await.is_err());
        assert!(throttle.check(user("judge"), judges_desk, Some(device)).await.is_ok());
        // Wrong passwords with the device's cookie are counted against that device alone, not the address.
        for _ in 0..ACCOUNT_PEER_FAILURES {
            assert!(!throttle.locked(&ThrottleKey::Device(device)).await);
            throttle.check(user("judge"), judges_desk, Some(device)).await.unwrap();
            throttle.failed(user("judge"), judges_desk, Some(device)).await;
        }
        assert!(throttle.locked(&ThrottleKey::Device(device)).await);
        assert!(!throttle.locked(&ThrottleKey::AccountFromPeer(user("judge"), judges_desk)).await);
        assert!(throttle.check(user("judge"), judges_desk, Some(Device([4; DEVICE_NONCE_BYTES]))).await.is_ok());
        assert_eq!(format!("{throttle:?}"), "SignInThrottle { .. }");
    }

    #[test]
    fn owners_are_served_before_strangers_and_have_room_when_strangers_fill_the_queue() {
        let hashers = Hashers::start();
        let (started, running) = std::sync::mpsc::channel();
        let mut releases = Vec::new();
        // Strangers' checks that do not end until released take every hashing thread...
        for _ in 0..HASHING_AT_ONCE {
            let (release, released) = std::sync::mpsc::channel::<()>();
            releases.push(release);
            let started = started.clone();
            assert!(hashers.submit(
                Lane::Others,
                Box::new(move |_| {
                    started.send(()).unwrap();
                    let _ = released.recv();
                })
            ));
        }
        for _ in 0..HASHING_AT_ONCE {
            running.recv().unwrap();
        }
        // ...and fill the strangers' queue: one more stranger is refused. Each stranger notes, as it starts, how
        // many owners were still waiting for a thread.
        let owners_waiting_when_strangers_ran = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for _ in 0..HASHING_QUEUE {
            let noted = owners_waiting_when_strangers_ran.clone();
            let queues = hashers.clone();
            assert!(hashers.submit(
                Lane::Others,
                Box::new(move |_| {
                    let waiting = queues.lanes.lock().unwrap().owners.len();
                    noted.lock().unwrap().push(waiting);
                })
            ));
        }
        assert!(!hashers.submit(Lane::Others, Box::new(|_| {})), "the strangers' queue is full");
        // An owner still gets a place, and is served before every stranger waiting.
        let (done, finished) = std::sync::mpsc::channel();
        for _ in 0..OWNER_QUEUE {
            let done = done.clone();
            assert!(hashers.submit(Lane::Owners, Box::new(move |_| done.send(()).unwrap())));
        }
        assert!(!hashers.submit(Lane::Owners, Box::new(|_| {})), "the owners' lane has a limit of its own");
        drop(releases);
        for _ in 0..OWNER_QUEUE {
            finished.recv().unwrap();
        }
        // Threads take jobs in order but may run them in any interleaving, so the rule is checked where it is made:
        // no stranger's check began while an owner's waited.
        while owners_waiting_when_strangers_ran.lock().unwrap().len() < HASHING_QUEUE {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let waiting = owners_waiting_when_strangers_ran.lock().unwrap().clone();
        assert!(waiting.iter().all(|&owners| owners == 0), "{waiting:?}");
        hashers.close();
    }

    #[tokio::test]
    async fn successful_sign_ins_are_budgeted_per_account_and_per_network() {
        let throttle = SignInThrottle::new(DeviceKey::new([1; 32]));
        let insider = user("insider");
        let device = Some(Device([5; DEVICE_NONCE_BYTES]));
        for n in 0..ACCOUNT_SIGN_INS_PER_HOUR {
            let desk = network(&format!("198.51.100.{n}"));
            throttle.check(insider, desk, None).await.unwrap();
            throttle.succeeded(insider, desk, None).await;
        }
        let spent = throttle.check(insider, network("203.0.113.1"), None).await.unwrap_err();
        assert!(spent.to_string().contains("sign-ins to this account"), "{spent}");
        assert!(throttle.check(insider, network("203.0.113.1"), device).await.is_err(), "a device of it too");
        assert!(throttle.check(user("judge"), network("203.0.113.1"), device).await.is_ok(), "another account");
        // One network signing in to many accounts, each within its own budget, spends the network's.
        let office = network("192.0.2.7");
        for n in 0..NETWORK_SIGN_INS_PER_HOUR {
            let someone = user(&format!("clerk{n}"));
            throttle.check(someone, office, None).await.unwrap();
            throttle.succeeded(someone, office, None).await;
        }
        let spent = throttle.check(user("clerk-late"), office, None).await.unwrap_err();
        assert!(spent.to_string().contains("from your network"), "{spent}");
        assert!(throttle.check(user("judge"), office, device).await.is_ok(), "an owner's device is not held to it");
    }

    #[tokio::test]
    async fn a_success_fills_again_its_account_from_its_address_and_its_device_not_the_address() {
        let throttle = SignInThrottle::new(DeviceKey::new([4; 32]));
        let (judge, desk, device) = (user("judge"), network("192.0.2.1"), Device([6; DEVICE_NONCE_BYTES]));
        let fail_short_of_the_limit = async || {
            for _ in 1..ACCOUNT_PEER_FAILURES {
                throttle.failed(judge, desk, None).await;
                throttle.failed(judge, desk, Some(device)).await;
            }
        };
        fail_short_of_the_limit().await;
        throttle.succeeded(judge, desk, Some(device)).await;
        fail_short_of_the_limit().await;
        assert!(!throttle.locked(&ThrottleKey::AccountFromPeer(judge, desk)).await, "cleared by the success");
        assert!(!throttle.locked(&ThrottleKey::Device(device)).await, "cleared by the success");
        throttle.failed(judge, desk, None).await;
        throttle.failed(judge, desk, Some(device)).await;
        assert!(throttle.locked(&ThrottleKey::AccountFromPeer(judge, desk)).await);
        assert!(throttle.locked(&ThrottleKey::Device(device)).await);
        assert!(throttle.check(judge, desk, None).await.is_err());
        // The address's own count goes on: a success is no licence to guess at other accounts.
        for _ in 2 * ACCOUNT_PEER_FAILURES - 1..PEER_FAILURES {
            throttle.failed(user("clerk"), desk, None).await;
        }
        assert!(throttle.locked(&ThrottleKey::Peer(desk)).await);
    }

    #[test]
    fn sign_ins_at_once_are_held_per_network_and_per_ipv6_56() {
        let throttle = SignInThrottle::new(DeviceKey::new([1; 32]));
        let places = |address: &str| {
            let peer = network(address);
            [(Flight::Network(peer), PEER_SIGN_INS_AT_ONCE), (Flight::Wider(peer.wider()), WIDER_SIGN_INS_AT_ONCE)]
        };
        let mut held = Vec::new();
        for _ in 0..PEER_SIGN_INS_AT_ONCE {
            held.push(throttle.fly(&places("2001:db8:0:100::1")).unwrap());
        }
        assert!(throttle.fly(&places("2001:db8:0:100::2")).is_none(), "the /64 is full");
        for n in 0..(WIDER_SIGN_INS_AT_ONCE - PEER_SIGN_INS_AT_ONCE) {
            held.push(throttle.fly(&places(&format!("2001:db8:0:1{:02x}::1", n + 1))).unwrap());
        }
        assert!(throttle.fly(&places("2001:db8:0:1ff::1")).is_none(), "another /64 of the same /56");
        assert!(throttle.fly(&places("2001:db8:0:200::1")).is_some(), "another /56");
        held.pop();
        assert!(throttle.fly(&places("2001:db8:0:1ff::1")).is_some(), "a place given back");
    }

    #[tokio::test]
    async fn a_device_has_one_sign_in_under_way_and_a_locked_or_busy_one_is_no_exemption() {
        let throttle = SignInThrottle::new(DeviceKey::new([2; 32]));
        let value = throttle.devices.issue("acc-judge", NOW);
        let cookie = || vec![DeviceCookie::parse(&value).unwrap()];
        let (device, first) = throttle.owner(&cookie(), "acc-judge", NOW).await.unwrap();
        // Forty guesses at once with one stolen cookie: none but the first is counted as the device's.
        for _ in 0..40 {
            assert!(throttle.owner(&cookie(), "acc-judge", NOW).await.is_none());
        }
        throttle.failed(user("judge"), network("192.0.2.1"), Some(device)).await;
        drop(first);
        for _ in 1..ACCOUNT_PEER_FAILURES {
            let (device, _under_way) = throttle.owner(&cookie(), "acc-judge", NOW).await.unwrap();
            throttle.failed(user("judge"), network("192.0.2.1"), Some(device)).await;
        }
        // Locked: its sign-ins follow the ordinary rules (which a known address passes) instead of a 429.
        assert!(throttle.owner(&cookie(), "acc-judge", NOW).await.is_none(), "a locked device");
        throttle.succeeded(user("judge"), network("192.0.2.9"), None).await;
        assert!(throttle.check(user("judge"), network("192.0.2.9"), None).await.is_ok());
        // An account has OWNER_SIGN_INS_AT_ONCE in the owners' lane, whatever its devices.
        let devices: Vec<_> = (0..=OWNER_SIGN_INS_AT_ONCE).map(|_| throttle.devices.issue("acc-clerk", NOW)).collect();
        let mut held = Vec::new();
        for value in &devices[..OWNER_SIGN_INS_AT_ONCE] {
            held.push(throttle.owner(&[DeviceCookie::parse(value).unwrap()], "acc-clerk", NOW).await.unwrap());
        }
        let last = DeviceCookie::parse(&devices[OWNER_SIGN_INS_AT_ONCE]).unwrap();
        assert!(throttle.owner(&[last], "acc-clerk", NOW).await.is_none());
    }

    #[tokio::test]
    async fn the_valid_device_cookie_counts_among_planted_ones() {
        let throttle = SignInThrottle::new(DeviceKey::new([3; 32]));
        let real = throttle.devices.issue("acc-judge", NOW);
        let planted = DeviceKey::new([9; 32]).issue("acc-judge", NOW);
        let values = ["x".to_owned(), planted, real];
        let cookies: Vec<_> = values.iter().filter_map(|value| DeviceCookie::parse(value)).collect();
        assert!(throttle.owner(&cookies, "acc-judge", NOW).await.is_some(), "the real cookie, read after two planted");
        assert!(throttle.owner(&cookies[..1], "acc-judge", NOW).await.is_none(), "a planted one alone");
    }

    #[tokio::test]
    async fn a_username_is_kept_as_its_digest_and_a_long_one_is_refused() {
        let longest = "u".repeat(MAX_USERNAME_CHARS);
        assert!(UserKey::of(&longest).is_ok());
        assert!(UserKey::of(&"\u{1e70}".repeat(MAX_USERNAME_CHARS)).is_ok(), "characters, not bytes, are counted");
        assert!(UserKey::of(&"u".repeat(MAX_USERNAME_CHARS + 1)).is_err());
        let refused = UserKey::of(&"u".repeat(60_000)).err().unwrap();
        assert!(matches!(refused, GatewayError::BadInput { field: "username", .. }), "{refused}");
        assert_eq!(std::mem::size_of::<UserKey>(), 32);
        assert!(user("judge") != user("Judge"));
        let budget = crate::budget::Budget::new(1, 1);
        budget.take(&user("judge").budget_key()).await.unwrap();
        let shown = format!("{budget:?}");
        assert!(shown.contains("keys: 1") && !shown.contains(&user("judge").budget_key()), "{shown}");
    }
}
