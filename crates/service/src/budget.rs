//! Budgets for repeated attempts: a token bucket per key (a participant, an account, a peer's address), so that
//! one client cannot flood a hearing, or the public log that records what it tries, however fast it sends.
//!
//! A budget that protects against abuse is kept in the catalog ([`BudgetStore`], over
//! [`custodia_catalog::Catalog::take_tokens`]), so that it holds across every gateway on one database: N gateways
//! behind a load balancer give an attacker one budget, not N. These are the custody records of an account's steps,
//! its new uploads and refusal records ([`Quotas`]), the sign-in throttle's budgets
//! ([`crate::identity::SignInThrottle`]), hearing console steps and room entries (the hearings crate) and a
//! witness's requests per peer (the server). A budget for what lives in one process (its connections, its uploads
//! and WHIP sessions under way, the steps of a hearing room it holds) stays in memory ([`Budget::new`]).
//!
//! The in-memory bucket is hand-written because no rate-limiting crate (governor) is in the project's registry
//! mirror; it is a few lines. Keys are kept only while their bucket is not full again, so memory stays bounded by
//! the clients active within one refill period, and at most `MAX_KEYS` of those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custodia_catalog::{BucketRule, Catalog, Take};
use hmac::Mac as _;

use crate::clock::Clock;

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
                Some(err) => tracing::warn!(error = %err, "budgets are held per process: the catalog failed"),
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
    /// declare, and what its direct uploads under way hold (their declared lengths, or what an undeclared one
    /// has reserved as it grew).
    pub stored_bytes: u64,
    /// Direct (non-resumable) uploads one account may have under way at once.
    pub direct_uploads_at_once: usize,
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
    /// Direct uploads under way, by account: how many, and the bytes they hold.
    direct: Arc<Mutex<HashMap<String, (usize, u64)>>>,
}

/// The default of [`Quotas::room_entries_per_minute`]: a participant whose link drops comes back a few times a
/// minute at most.
pub const ROOM_ENTRIES_PER_MINUTE: u32 = 10;

/// The default of [`Quotas::custody_records`]: a video played in the browser asks for a few dozen ranges, each a
/// recorded access; a prosecutor fetching a case's files one by one does a few hundred (a case export is one).
pub const CUSTODY_RECORDS_PER_MINUTE: u32 = 300;

/// The default of [`Quotas::stored_bytes`].
pub const ACCOUNT_STORED_BYTES: u64 = 50 << 30;
/// The default of [`Quotas::direct_uploads_at_once`].
pub const DIRECT_UPLOADS_PER_ACCOUNT: usize = 2;
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

    /// These quotas, with the budgets that guard the shared log and store (uploads, refusal records, custody
    /// records) kept in `store` for every gateway on its catalog. Direct uploads under way and WHIP sessions are
    /// this process's own, and stay counted here.
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
            direct: Arc::default(),
        }
    }

    /// Bytes the account's direct uploads under way hold.
    pub fn direct_bytes(&self, account: &str) -> u64 {
        let direct = self.direct.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        direct.get(account).map_or(0, |(_, bytes)| *bytes)
    }

    /// A place for one more direct upload of `account`, holding no bytes yet ([`DirectUpload::hold`]), or `None`
    /// when the account has [`Quotas::direct_uploads_at_once`] under way.
    pub fn start_direct(&self, account: &str) -> Option<DirectUpload> {
        let mut direct = self.direct.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = direct.entry(account.to_owned()).or_insert((0, 0));
        if entry.0 >= self.direct_uploads_at_once {
            return None;
        }
        entry.0 += 1;
        Some(DirectUpload { direct: self.direct.clone(), account: account.to_owned(), held: 0 })
    }
}

/// A direct upload under way, counted against its account, with the bytes it holds of the account's quota, until
/// dropped.
#[derive(Debug)]
pub struct DirectUpload {
    direct: Arc<Mutex<HashMap<String, (usize, u64)>>>,
    account: String,
    held: u64,
}

impl DirectUpload {
    /// Holds `more` bytes of the account's quota for this upload. The caller has checked, under the account's
    /// quota turn ([`crate::gateway::Gateway::quota_turn`]), that they are left.
    pub fn hold(&mut self, more: u64) {
        let mut direct = self.direct.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = direct.get_mut(&self.account) {
            entry.1 += more;
            self.held += more;
        }
    }

    /// The bytes this upload holds.
    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for DirectUpload {
    fn drop(&mut self) {
        let mut direct = self.direct.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = direct.get_mut(&self.account) {
            entry.0 -= 1;
            entry.1 -= self.held;
            if entry.0 == 0 {
                direct.remove(&self.account);
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

    #[test]
    fn direct_uploads_are_counted_per_account_until_they_end() {
        let quotas = Quotas::new(1000, 2, 10, 10, 1, 1);
        let mut first = quotas.start_direct("a").unwrap();
        first.hold(100);
        let mut second = quotas.start_direct("a").unwrap();
        second.hold(20);
        second.hold(30);
        assert!(quotas.start_direct("a").is_none(), "a third at once");
        assert_eq!((quotas.direct_bytes("a"), second.held()), (150, 50));
        assert!(quotas.start_direct("b").is_some(), "another account has places of its own");
        drop(first);
        assert_eq!(quotas.direct_bytes("a"), 50);
        assert!(quotas.start_direct("a").is_some());
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
