//! Budgets for repeated attempts: a token bucket per key (a participant, an account, a peer's address), so that
//! one client cannot flood a hearing, or the public log that records what it tries, however fast it sends.
//!
//! A budget that protects against abuse is kept in the catalog ([`BudgetStore`], over
//! [`custodia_catalog::Catalog::take_tokens`]), so that it holds across every gateway on one database: N gateways
//! behind a load balancer give an attacker one budget, not N. These are the custody records of an account's steps,
//! its new uploads and refusal records ([`Quotas`]), the sign-in throttle's budgets
//! ([`crate::identity::SignInThrottle`]), hearing console steps and room entries (the hearings crate) and a
//! witness's requests per peer (the server). A budget for what lives in one process (its connections, its WHIP
//! sessions under way, the steps of a hearing room it holds) stays in memory ([`Budget::new`]). What direct uploads
//! under way hold of their accounts' quotas, and how many they are, is in the catalog too ([`DirectUpload`]), so
//! that an account's quota and its uploads at once hold across every gateway.
//!
//! The in-memory bucket is hand-written because no rate-limiting crate (governor) is in the project's registry
//! mirror; it is a few lines. Keys are kept only while their bucket is not full again, so memory stays bounded by
//! the clients active within one refill period, and at most `MAX_KEYS` of those.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custodia_catalog::{BucketRule, Catalog, HOLDING_MARGIN, Take, Turn};
use hmac::Mac as _;

use crate::clock::Clock;
use crate::error::GatewayError;

/// More keys than this and the fullest buckets are forgotten first (a forgotten key starts full).
const MAX_KEYS: usize = 100_000;

/// How long a budget check waits for the catalog before it holds the budget in this process instead.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// After the catalog failed a budget check, how long budgets are held in this process without asking it.
pub const STORE_PAUSE: Duration = Duration::from_secs(5);

/// Where the budgets that protect against abuse are kept: the catalog's token buckets, which every gateway on the
/// database shares. Cheap to clone; clones share whether the catalog is failing.
///
/// Keys (account ids, usernames' digests, client networks, secrets' digests) are stored as HMAC-SHA256 under the
/// database's one salt ([`Catalog::budget_salt`]), of the budget's name and the key: never in clear. The salt is in
/// the database so that every gateway on it hashes alike without being configured to (a key made per gateway
/// would give each gateway buckets of its own, and the budgets would silently be per process again).
///
/// When the catalog fails or does not answer within [`STORE_TIMEOUT`], a budget is held in this process for
/// [`STORE_PAUSE`] (and then the catalog is asked again): each gateway holds the whole budget on its own, from
/// what it has itself spent, as before budgets were shared. So a database that is down neither lets attackers
/// through unbudgeted (no silent pass-all) nor refuses everyone (no lockout); at worst, while it is down, N
/// gateways allow N budgets. The operator's log says when that starts and ends, never for which key.
#[derive(Clone)]
pub struct BudgetStore {
    catalog: Catalog,
    clock: Clock,
    failing_since: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for BudgetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetStore").finish_non_exhaustive()
    }
}

/// Why the catalog did not take: it failed or did not answer in time.
struct StoreFailed;

impl BudgetStore {
    pub fn new(catalog: Catalog, clock: Clock) -> Self {
        Self { catalog, clock, failing_since: Arc::default() }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }

    /// Whether budgets are held in this process now: the catalog failed within the last [`STORE_PAUSE`]. Once the
    /// pause is over, one request asks the catalog again, and the pause starts over for the others meanwhile, so
    /// that only that one waits for a catalog still failing, not every request that comes while it is asked.
    fn pausing(&self) -> bool {
        let mut failing = self.failing_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match *failing {
            Some(since) if since.elapsed() < STORE_PAUSE => true,
            Some(_) => {
                *failing = Some(Instant::now());
                false
            }
            None => false,
        }
    }

    /// Runs one request that takes or reads a bucket within [`STORE_TIMEOUT`], noting whether it failed, and that
    /// the catalog answers again if it had failed.
    async fn ask<T>(
        &self,
        request: impl std::future::Future<Output = custodia_catalog::Result<T>>,
    ) -> Result<T, StoreFailed> {
        let answer = self.timed(request).await?;
        let mut failing = self.failing_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failing.take().is_some() {
            tracing::info!("budgets are shared through the catalog again");
        }
        Ok(answer)
    }

    /// Runs one request to the catalog within [`STORE_TIMEOUT`], noting whether it failed. An answer says nothing
    /// of whether the catalog answers again: the salt is read once and kept, so its read succeeds while the
    /// database is down.
    async fn timed<T>(
        &self,
        request: impl std::future::Future<Output = custodia_catalog::Result<T>>,
    ) -> Result<T, StoreFailed> {
        let outcome = tokio::time::timeout(STORE_TIMEOUT, request).await;
        let failed = match outcome {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(err)) => Some(err),
            Err(_) => None,
        };
        let mut failing = self.failing_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failing.replace(Instant::now()).is_none() {
            match failed {
                Some(err) => {
                    tracing::warn!(error = %crate::error::Chain(&err), "budgets are held per process: the catalog failed")
                }
                None => {
                    tracing::warn!(waited = ?STORE_TIMEOUT, "budgets are held per process: the catalog did not answer")
                }
            }
        }
        Err(StoreFailed)
    }

    /// The bucket of `key` in the budget `name`: HMAC-SHA256 under the database's salt.
    async fn bucket(&self, name: &str, key: &str) -> Result<[u8; 32], StoreFailed> {
        let salt = self
            .timed(self.catalog.budget_salt(|| {
                let mut salt = [0u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
                salt
            }))
            .await?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&salt).unwrap_or_else(|_| unreachable!("any length"));
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(key.as_bytes());
        Ok(mac.finalize().into_bytes().into())
    }

    async fn take(&self, name: &str, key: &str, rule: BucketRule, count: f64) -> Result<Take, StoreFailed> {
        if self.pausing() {
            return Err(StoreFailed);
        }
        let bucket = self.bucket(name, key).await?;
        self.ask(self.catalog.take_tokens(&bucket, rule, count, self.now_ms())).await
    }

    async fn refill(&self, name: &str, key: &str) -> Result<(), StoreFailed> {
        if self.pausing() {
            return Err(StoreFailed);
        }
        let bucket = self.bucket(name, key).await?;
        self.ask(self.catalog.refill_bucket(&bucket)).await
    }

    async fn left(&self, name: &str, key: &str, rule: BucketRule) -> Result<f64, StoreFailed> {
        if self.pausing() {
            return Err(StoreFailed);
        }
        let bucket = self.bucket(name, key).await?;
        self.ask(self.catalog.tokens_left(&bucket, rule, self.now_ms())).await
    }
}

/// A token bucket per key: `burst` attempts at once, then `per_minute` a minute. Kept in memory ([`Budget::new`]),
/// or in a [`BudgetStore`] for every gateway on its catalog ([`Budget::kept_in`]), with the in-memory buckets
/// as what this process has spent, held to when the store fails. Its `Debug` shows how many keys it holds in
/// memory, never which (they are client networks, accounts).
pub struct Budget {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// The store and this budget's name in it, when it is shared.
    shared: Option<(&'static str, BudgetStore)>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len();
        f.debug_struct("Budget")
            .field("burst", &self.burst)
            .field("keys", &keys)
            .field("shared", &self.shared.as_ref().map(|(name, _)| name))
            .finish_non_exhaustive()
    }
}

impl Budget {
    /// A budget in this process's memory.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            buckets: Mutex::default(),
            shared: None,
        }
    }

    /// `burst` attempts at once, then `per_hour` an hour, in this process's memory.
    pub fn per_hour(burst: u32, per_hour: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_hour.max(1)) / 3600.0,
            buckets: Mutex::default(),
            shared: None,
        }
    }

    /// `burst` attempts, refilled evenly over `window` (full again `window` after it was emptied), in this
    /// process's memory: a count of failures that is forgotten over a window, say, where an empty budget is a
    /// lockout that lets one more attempt through each `window / burst`.
    pub fn refilled_over(burst: u32, window: Duration) -> Self {
        let burst = f64::from(burst.max(1));
        Self { burst, per_second: burst / window.as_secs_f64().max(1.0), buckets: Mutex::default(), shared: None }
    }

    /// This budget, kept in `store` under `name` for every gateway on its catalog ([`BudgetStore`] says what
    /// happens when the catalog fails). `name` tells its buckets from other budgets' with the same keys: one name
    /// per budget, the same in every gateway.
    pub fn kept_in(mut self, name: &'static str, store: &BudgetStore) -> Self {
        self.keep_in(name, store);
        self
    }

    /// Keeps this budget in `store` under `name` from now on ([`Self::kept_in`]).
    pub fn keep_in(&mut self, name: &'static str, store: &BudgetStore) {
        self.shared = Some((name, store.clone()));
    }

    fn rule(&self) -> BucketRule {
        BucketRule { burst: self.burst, per_second: self.per_second }
    }

    /// Whether `key`'s budget has an attempt left, without taking it: `Ok` if so, else how long until it has.
    pub async fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_many(key, 1).await
    }

    /// Whether `key`'s budget has `count` attempts left (or its whole burst, if `count` is more), without taking
    /// them, as [`Self::take_many`] would find.
    pub async fn check_many(&self, key: &str, count: u64) -> Result<(), Duration> {
        let wanted = (count.max(1) as f64).min(self.burst);
        if let Some((name, store)) = &self.shared
            && let Ok(tokens) = store.left(name, key, self.rule()).await
        {
            return if tokens >= wanted { Ok(()) } else { Err(self.wait(tokens, wanted)) };
        }
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let tokens = buckets.get(key).map_or(self.burst, |bucket| self.refilled(bucket, now));
        if tokens >= wanted { Ok(()) } else { Err(self.wait(tokens, wanted)) }
    }

    /// Takes one attempt from `key`'s budget: `Ok` if there was one, else how long until there is.
    pub async fn take(&self, key: &str) -> Result<(), Duration> {
        self.take_many(key, 1).await
    }

    /// Fills `key`'s budget again at once (a success that clears its failures): in the store, where every
    /// gateway sees it, and in this process's memory. Should the store fail, only this process's is filled.
    pub async fn refill(&self, key: &str) {
        if let Some((name, store)) = &self.shared {
            // A failure is noted by the store (budgets are then held per process for a while); nothing more to do.
            let _ = store.refill(name, key).await;
        }
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Takes `count` attempts at once from `key`'s budget, or its whole burst if `count` is more: `Ok` if they
    /// were there, else how long until they are. A step that makes many records at once (a case export) waits for
    /// as many, so that repeating it makes no more records a minute than the budget, or than one such step.
    pub async fn take_many(&self, key: &str, count: u64) -> Result<(), Duration> {
        let wanted = (count.max(1) as f64).min(self.burst);
        if let Some((name, store)) = &self.shared {
            match store.take(name, key, self.rule(), wanted).await {
                Ok(Take::Taken) => {
                    // Also spent here, so that if the store fails this process goes on from what it spent.
                    self.spend_local(key, wanted);
                    return Ok(());
                }
                Ok(Take::Short { wait }) => return Err(wait),
                Err(StoreFailed) => {}
            }
        }
        self.take_local(key, wanted)
    }

    /// Takes `wanted` from the bucket of `key` in memory if it holds them; else how long until it does.
    fn take_local(&self, key: &str, wanted: f64) -> Result<(), Duration> {
        self.with_local(key, |bucket| {
            if bucket.tokens >= wanted {
                bucket.tokens -= wanted;
                Ok(())
            } else {
                Err(self.wait(bucket.tokens, wanted))
            }
        })
    }

    /// Takes `wanted` from the bucket of `key` in memory, or all it holds if that is less: what the store let
    /// this process take.
    fn spend_local(&self, key: &str, wanted: f64) {
        self.with_local(key, |bucket| bucket.tokens = (bucket.tokens - wanted).max(0.0));
    }

    /// Runs `change` on the bucket of `key` in memory, refilled to now.
    fn with_local<T>(&self, key: &str, change: impl FnOnce(&mut Bucket) -> T) -> T {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            self.forget_full(&mut buckets, now);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.burst, at: now });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now;
        change(bucket)
    }

    fn wait(&self, tokens: f64, wanted: f64) -> Duration {
        Duration::from_secs_f64(((wanted - tokens) / self.per_second).max(0.0))
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }

    /// Drops every bucket that has refilled (it would start full anyway); if none has, the fullest half.
    fn forget_full(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| self.refilled(bucket, now) < self.burst);
        if buckets.len() >= MAX_KEYS {
            let mut levels: Vec<f64> = buckets.values().map(|bucket| self.refilled(bucket, now)).collect();
            levels.sort_by(f64::total_cmp);
            let median = levels[levels.len() / 2];
            buckets.retain(|_, bucket| self.refilled(bucket, now) < median);
        }
    }
}

/// What one account may put into custody, and how fast (the server's `config::QuotaConfig`). Counted per account,
/// never per address: an upload is made by someone signed in.
#[derive(Debug)]
pub struct Quotas {
    /// Bytes of evidence one account may have provided: its artefacts, the lengths its open resumable uploads
    /// declare, and what its direct uploads under way hold on every gateway (their declared lengths, or what an
    /// undeclared one has reserved as it grew: [`DirectUpload`]).
    pub stored_bytes: u64,
    /// Direct (non-resumable) uploads one account may have under way at once, on every gateway together.
    pub direct_uploads_at_once: usize,
    /// How long a direct upload's holding lasts unrenewed ([`DirectUpload`]): past it, the holding of a gateway
    /// that died is counted no more.
    pub direct_holding_expiry: Duration,
    /// New uploads (direct, or resumable ones created) per account.
    pub uploads: Budget,
    /// Custody records of refusals per account, and per hearing participant ([`crate::refusals`]).
    pub refusal_records: Budget,
    /// Custody records of what an account does (downloads, exports, changes of policy or membership, requests and
    /// reports): each is public for good, so one member, or one leaked token spread over many addresses, cannot
    /// fill the public log. Past it, the step is refused with 429 before it happens.
    pub custody_records: Budget,
    /// WHIP publishers at once in the live hearings of one case.
    pub whip_sessions_per_case: usize,
    /// WHIP publishers at once, in all live hearings, with the invites of one case member.
    pub whip_sessions_per_account: usize,
    /// Entries into a hearing room with one secret or credential, a minute (as many at once).
    pub room_entries_per_minute: u32,
    /// Hearing console steps (scheduling, inviting, revoking, opening, closing, protective orders, masked copies) one account may
    /// take a minute; twice as many at once.
    pub console_steps_per_minute: u32,
}

/// The default of [`Quotas::room_entries_per_minute`]: a participant whose link drops comes back a few times a
/// minute at most.
pub const ROOM_ENTRIES_PER_MINUTE: u32 = 10;

/// The default of [`Quotas::console_steps_per_minute`]: a clerk schedules and invites a few dozen at a time, and
/// comes back for more a minute later.
pub const CONSOLE_STEPS_PER_MINUTE: u32 = 30;

/// The default of [`Quotas::custody_records`]: a video played in the browser asks for a few dozen ranges, each a
/// recorded access; a prosecutor fetching a case's files one by one does a few hundred (a case export is one).
pub const CUSTODY_RECORDS_PER_MINUTE: u32 = 300;

/// The default of [`Quotas::stored_bytes`].
pub const ACCOUNT_STORED_BYTES: u64 = 50 << 30;
/// The default of [`Quotas::direct_uploads_at_once`].
pub const DIRECT_UPLOADS_PER_ACCOUNT: usize = 2;
/// The default of [`Quotas::direct_holding_expiry`]: a minute and a half. Long enough that a gateway still
/// uploading keeps its holdings through what a database may take to come back (a PostgreSQL restart or failover
/// takes tens of seconds; [`DirectUpload`] renews every fifth of it, and stops [`HOLDING_MARGIN`] short of it),
/// since a holding that lapses fails its upload, whose client must then send it all again; short enough that after
/// a crash the account's quota, and its places for direct uploads, come back within about as long as its client
/// takes to notice the crash and try again.
pub const DIRECT_HOLDING_EXPIRY: Duration = Duration::from_secs(90);
/// The shortest [`Quotas::direct_holding_expiry`]: twice [`HOLDING_MARGIN`], so that a holding is renewed at least
/// twice before it would stop being renewable.
pub const DIRECT_HOLDING_EXPIRY_MIN: Duration = Duration::from_secs(2 * HOLDING_MARGIN.as_secs());
/// The default of [`Quotas::uploads`], a minute.
pub const UPLOADS_PER_MINUTE: u32 = 30;
/// The default of [`Quotas::refusal_records`], a minute.
pub const REFUSAL_RECORDS_PER_MINUTE: u32 = 20;
/// The default of [`Quotas::whip_sessions_per_case`].
pub const WHIP_SESSIONS_PER_CASE: usize = 8;
/// The default of [`Quotas::whip_sessions_per_account`].
pub const WHIP_SESSIONS_PER_ACCOUNT: usize = 4;

impl Default for Quotas {
    fn default() -> Self {
        Self::new(
            ACCOUNT_STORED_BYTES,
            DIRECT_UPLOADS_PER_ACCOUNT,
            UPLOADS_PER_MINUTE,
            REFUSAL_RECORDS_PER_MINUTE,
            WHIP_SESSIONS_PER_CASE,
            WHIP_SESSIONS_PER_ACCOUNT,
        )
    }
}

impl Quotas {
    /// Entries into a hearing room with one secret or credential, `per_minute` a minute.
    pub fn with_room_entries(mut self, per_minute: u32) -> Self {
        self.room_entries_per_minute = per_minute.max(1);
        self
    }

    /// Hearing console steps by one account, `per_minute` a minute (twice as many at once).
    pub fn with_console_steps(mut self, per_minute: u32) -> Self {
        self.console_steps_per_minute = per_minute.max(1);
        self
    }

    /// Direct uploads' holdings lasting `expiry` unrenewed ([`Quotas::direct_holding_expiry`]), at least
    /// [`DIRECT_HOLDING_EXPIRY_MIN`].
    pub fn with_direct_holding_expiry(mut self, expiry: Duration) -> Self {
        self.direct_holding_expiry = expiry.max(DIRECT_HOLDING_EXPIRY_MIN);
        self
    }

    /// These quotas, with the budgets that guard the shared log and store (uploads, refusal records, custody
    /// records) kept in `store` for every gateway on its catalog. WHIP sessions are this process's own, and stay
    /// counted here; direct uploads under way are always in the catalog ([`DirectUpload`]).
    pub fn kept_in(self, store: &BudgetStore) -> Self {
        Self {
            uploads: self.uploads.kept_in("uploads", store),
            refusal_records: self.refusal_records.kept_in("refusal_records", store),
            custody_records: self.custody_records.kept_in("custody_records", store),
            ..self
        }
    }

    /// Custody records of one account's steps, `per_minute` a minute (as many at once).
    pub fn with_custody_records(mut self, per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        self.custody_records = Budget::new(per_minute, per_minute);
        self
    }

    pub fn new(
        stored_bytes: u64,
        direct_uploads_at_once: usize,
        uploads_per_minute: u32,
        refusals_per_minute: u32,
        whip_sessions_per_case: usize,
        whip_sessions_per_account: usize,
    ) -> Self {
        Self {
            whip_sessions_per_case: whip_sessions_per_case.max(1),
            whip_sessions_per_account: whip_sessions_per_account.max(1),
            stored_bytes,
            direct_uploads_at_once: direct_uploads_at_once.max(1),
            uploads: Budget::new(uploads_per_minute, uploads_per_minute),
            refusal_records: Budget::new(refusals_per_minute, refusals_per_minute),
            custody_records: Budget::new(CUSTODY_RECORDS_PER_MINUTE, CUSTODY_RECORDS_PER_MINUTE),
            room_entries_per_minute: ROOM_ENTRIES_PER_MINUTE,
            console_steps_per_minute: CONSOLE_STEPS_PER_MINUTE,
            direct_holding_expiry: DIRECT_HOLDING_EXPIRY,
        }
    }
}

/// A direct upload under way, and what it holds of its account's quota: a row of the catalog's
/// (`direct_holdings`), which every gateway on the database counts against the account's quota and its uploads at
/// once ([`custodia_catalog::Catalog::direct_holdings_of`]).
///
/// It is written ([`DirectUpload::start`]) and grown ([`DirectUpload::hold`]) under the account's quota turn
/// ([`crate::gateway::Gateway::quota_turn`]), by a caller that checked what is left; renewed by a task of its own
/// every fifth of [`Quotas::direct_holding_expiry`] (and by each growth) while it lives; and released when the
/// upload ends ([`DirectUpload::release`], or when dropped, as when the request is abandoned). A gateway that dies
/// leaves its holdings to expire: counted no more, then deleted. One that could not renew in time (cut off from the
/// database for about the expiry) finds its holding lapsed ([`DirectUpload::lapsed`]), and its upload fails,
/// retryably, rather than go on uncounted.
pub struct DirectUpload {
    catalog: Catalog,
    clock: Clock,
    id: String,
    expiry: Duration,
    /// The bytes the holding holds (its row's, once written).
    held: AtomicU64,
    /// Whether a renewal found the holding expired or gone.
    lapsed: Arc<AtomicBool>,
    /// Whether the holding was released.
    released: AtomicBool,
    renewing: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DirectUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectUpload").field("id", &self.id).field("held", &self.held()).finish_non_exhaustive()
    }
}

/// Milliseconds in `duration`, for the catalog's times.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The failure of an upload whose holding lapsed: retryable, as a database away is.
fn lapsed_holding() -> GatewayError {
    GatewayError::Unavailable {
        what: "the database",
        source: "this upload's holding of its account's quota lapsed before it could be renewed".into(),
    }
}

impl DirectUpload {
    /// Starts holding `bytes` of `account`'s quota for a new direct upload, lasting `quotas`' expiry unrenewed, and
    /// deletes the account's holdings that expired. The caller holds the account's quota turn, and has found that
    /// the account has fewer than [`Quotas::direct_uploads_at_once`] under way and `bytes` left.
    pub async fn start(
        catalog: &Catalog,
        clock: &Clock,
        quotas: &Quotas,
        account: &str,
        bytes: u64,
        turn: &Turn,
    ) -> Result<Self, GatewayError> {
        let id = crate::ids::new_id("hold");
        let expiry = quotas.direct_holding_expiry;
        let now = clock.now().as_millisecond();
        let stored = i64::try_from(bytes).unwrap_or(i64::MAX);
        let until = now.saturating_add(millis(expiry));
        catalog.within_turn(turn).hold_direct(&id, account, stored, now, until).await?;
        let lapsed = Arc::new(AtomicBool::new(false));
        let renewing = tokio::spawn(renew_holding(catalog.clone(), clock.clone(), id.clone(), expiry, lapsed.clone()));
        Ok(Self {
            catalog: catalog.clone(),
            clock: clock.clone(),
            id,
            expiry,
            held: AtomicU64::new(bytes),
            lapsed,
            released: AtomicBool::new(false),
            renewing,
        })
    }

    /// Holds `more` bytes of the account's quota for this upload, and renews the holding. The caller holds the
    /// account's quota turn, and has found them left. Fails if the catalog does, or the holding lapsed.
    pub async fn hold(&self, turn: &Turn, more: u64) -> Result<(), GatewayError> {
        if self.lapsed() {
            return Err(lapsed_holding());
        }
        let bytes = self.held().saturating_add(more);
        let now = self.clock.now().as_millisecond();
        let until = now.saturating_add(millis(self.expiry));
        let stored = i64::try_from(bytes).unwrap_or(i64::MAX);
        if !self.catalog.within_turn(turn).grow_direct_holding(&self.id, stored, now, until).await? {
            self.lapsed.store(true, Ordering::Release);
            return Err(lapsed_holding());
        }
        self.held.store(bytes, Ordering::Release);
        Ok(())
    }

    /// The holding's id: its registration consumes it ([`custodia_catalog::Registration::holding`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bytes this upload holds.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Whether the holding lapsed: a renewal found it expired or gone, so its bytes may no longer be counted.
    pub fn lapsed(&self) -> bool {
        self.lapsed.load(Ordering::Acquire)
    }

    /// The failure of an upload whose holding lapsed ([`DirectUpload::lapsed`]).
    pub fn lapsed_error(&self) -> GatewayError {
        lapsed_holding()
    }

    /// Releases the holding: the upload ended, and its bytes are the artefact's now, or nobody's. Should the
    /// catalog fail, the holding is left to expire (it is renewed no more).
    pub async fn release(&self) {
        if self.stop_holding() {
            release_holding(&self.catalog, &self.id).await;
        }
    }

    /// Stops renewing the holding; whether it was not released yet (and is now to be).
    fn stop_holding(&self) -> bool {
        self.renewing.abort();
        !self.released.swap(true, Ordering::AcqRel)
    }
}

/// Deletes holding `id`; should the catalog fail, it is left to expire, renewed no more.
async fn release_holding(catalog: &Catalog, id: &str) {
    if let Err(err) = catalog.release_direct_holding(id).await {
        tracing::warn!(error = %crate::error::Chain(&err), "could not release a direct upload's holding; it expires unrenewed");
    }
}

impl Drop for DirectUpload {
    /// A holding not released (its request abandoned, say) is released by a task of its own, or left to expire.
    fn drop(&mut self) {
        if !self.stop_holding() {
            return;
        }
        let (catalog, id) = (self.catalog.clone(), std::mem::take(&mut self.id));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release_holding(&catalog, &id).await });
        }
    }
}

/// Renews holding `id` every fifth of `expiry` until aborted; notes in `lapsed`, and stops, once a renewal finds it
/// expired or gone. A renewal that fails (the database away) is tried again at the next.
async fn renew_holding(catalog: Catalog, clock: Clock, id: String, expiry: Duration, lapsed: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(expiry / 5).await;
        let now = clock.now().as_millisecond();
        match catalog.renew_direct_holding(&id, now, now.saturating_add(millis(expiry))).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("a direct upload's holding of its account's quota lapsed before it was renewed");
                lapsed.store(true, Ordering::Release);
                return;
            }
            Err(err) => {
                tracing::warn!(error = %crate::error::Chain(&err), "could not renew a direct upload's holding; trying again")
            }
        }
    }
}

/// The seconds a client should wait, for a `Retry-After` header or a message: at least one.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_gets_its_burst_then_waits_and_other_keys_are_untouched() {
        let budget = Budget::new(3, 1);
        for _ in 0..3 {
            assert_eq!(budget.take("a").await, Ok(()));
        }
        let wait = budget.take("a").await.unwrap_err();
        // One a minute: most of a minute to wait (the bucket may have refilled a little since).
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60), "{wait:?}");
        assert_eq!(budget.take("b").await, Ok(()));
    }

    /// Direct uploads' holdings are rows of the catalog (here SQLite's; `crates/server/tests/shared_quota.rs` has
    /// two gateways on PostgreSQL): counted per account until released or dropped; one left unrenewed past its
    /// expiry is counted no more, cannot grow again, and goes at the account's next upload.
    #[tokio::test]
    async fn direct_uploads_hold_in_the_catalog_until_they_end_or_lapse() {
        use custodia_catalog::DirectHoldings;
        let dir = tempfile::tempdir().unwrap();
        let catalog =
            Catalog::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display())).await.unwrap();
        let clock = Clock::default();
        let quotas = Quotas::new(1000, 2, 10, 10, 1, 1);
        let held = |account: &'static str| {
            let (catalog, clock) = (catalog.clone(), clock.clone());
            async move { catalog.direct_holdings_of(account, clock.now().as_millisecond()).await.unwrap() }
        };
        // On SQLite a turn is this process's alone; on PostgreSQL the holdings are written only while it is held
        // (crates/catalog: a holding written under a lost turn is refused).
        let turn = catalog.take_turn(custodia_catalog::TurnKind::Quota, "quota of a").await.unwrap();
        let first = DirectUpload::start(&catalog, &clock, &quotas, "a", 100, &turn).await.unwrap();
        let second = DirectUpload::start(&catalog, &clock, &quotas, "a", 20, &turn).await.unwrap();
        second.hold(&turn, 30).await.unwrap();
        assert_eq!((held("a").await, second.held()), (DirectHoldings { uploads: 2, bytes: 150 }, 50));
        assert_eq!(held("b").await, DirectHoldings::default(), "another account holds nothing");
        first.release().await;
        assert_eq!(held("a").await, DirectHoldings { uploads: 1, bytes: 50 });
        drop(second);
        let deadline = Instant::now() + Duration::from_secs(10);
        while held("a").await != DirectHoldings::default() {
            assert!(Instant::now() < deadline, "a dropped upload kept its holding");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let unrenewed = DirectUpload::start(&catalog, &clock, &quotas, "a", 10, &turn).await.unwrap();
        assert_eq!(held("a").await, DirectHoldings { uploads: 1, bytes: 10 });
        clock.advance(i64::try_from(quotas.direct_holding_expiry.as_secs()).unwrap());
        assert_eq!(held("a").await, DirectHoldings::default(), "expired, counted no more");
        assert!(unrenewed.hold(&turn, 1).await.is_err() && unrenewed.lapsed(), "a lapsed holding does not grow");
        let next = DirectUpload::start(&catalog, &clock, &quotas, "a", 5, &turn).await.unwrap();
        let now = clock.now().as_millisecond();
        assert_eq!(catalog.remove_expired_direct_holdings(now).await.unwrap(), 0, "the next upload deleted it");
        assert_eq!(held("a").await, DirectHoldings { uploads: 1, bytes: 5 });
        next.release().await;
        assert_eq!(held("a").await, DirectHoldings::default());
    }

    #[tokio::test]
    async fn a_step_of_many_records_waits_for_as_many_or_the_whole_burst() {
        let budget = Budget::new(10, 10);
        assert_eq!(budget.take_many("a", 4).await, Ok(()));
        assert!(budget.take_many("a", 7).await.is_err(), "six left");
        assert_eq!(budget.take_many("a", 6).await, Ok(()));
        assert_eq!(budget.take_many("b", 500).await, Ok(()), "more than the burst takes the burst");
        let wait = budget.take("b").await.unwrap_err();
        assert!(wait > Duration::from_secs(5), "{wait:?}");
    }

    #[tokio::test]
    async fn a_spent_bucket_refills_at_its_rate() {
        let budget = Budget::new(1, 60);
        let mut buckets = HashMap::new();
        let earlier = Instant::now().checked_sub(Duration::from_secs(2)).unwrap();
        buckets.insert("a".to_owned(), Bucket { tokens: 0.0, at: earlier });
        *budget.buckets.lock().unwrap() = buckets;
        assert_eq!(budget.take("a").await, Ok(()), "two seconds at one a second refill the one-token bucket");
        assert!(budget.take("a").await.is_err());
    }

    #[tokio::test]
    async fn full_buckets_are_forgotten_when_there_are_too_many_keys() {
        let budget = Budget::new(2, 60);
        let now = Instant::now();
        let mut buckets = HashMap::new();
        for i in 0..MAX_KEYS {
            let tokens = if i % 2 == 0 { 2.0 } else { 0.0 };
            buckets.insert(format!("k{i}"), Bucket { tokens, at: now });
        }
        *budget.buckets.lock().unwrap() = buckets;
        assert_eq!(budget.take("new").await, Ok(()));
        let buckets = budget.buckets.lock().unwrap();
        assert!(buckets.len() <= MAX_KEYS / 2 + 1, "{}", buckets.len());
        assert!(!buckets.contains_key("k0") && buckets.contains_key("k1"));
    }
}
