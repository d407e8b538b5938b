//! Token buckets shared by every gateway on one database (`budget_buckets`), so that a budget that protects
//! against abuse (custody records, uploads, refusal records, sign-ins, room entries, a witness's requests) holds
//! across all gateways behind a load balancer, not once per process.
//!
//! - A take is one statement: an upsert that refills the bucket by the time elapsed since it was last taken
//!   from, and takes `count` tokens only if the refilled level holds them (`INSERT … ON CONFLICT … DO UPDATE …
//!   WHERE … RETURNING`, which SQLite and PostgreSQL both run). No row back means too few; a read then says how
//!   long to wait. A bucket with no row is full, so a new key is inserted holding its burst less the take. On
//!   PostgreSQL the conflicting row is locked for the update and its `WHERE` re-read, so takes from two gateways
//!   at once are applied one after the other and never both spend the same tokens.
//! - Buckets are named by 32-byte digests the caller makes (a keyed hash under the database's salt,
//!   [`Catalog::budget_salt`]), never by a username, an address or a secret: nothing personal is stored in clear.
//! - A bucket that is full again is the same as no row, and is deleted: each row says when it will be full at the
//!   latest (`full_at`, indexed), and at most once a minute per process the take that finds the minute passed
//!   deletes every row past it ([`Catalog::prune_full_buckets`]). So the table holds only the keys taken from
//!   within their budget's refill time (at most an hour for the sign-in budgets), however many keys an attacker
//!   cycles through, at about 100 bytes a key.
//! - Times are given on each gateway's clock, in milliseconds since the Unix epoch, and shifted to the database's
//!   ([`Catalog::database_now_ms`]) before they are compared or stored: a gateway whose clock runs ahead neither
//!   refills buckets early nor prunes those still spent. A bucket's time (`at`) only grows.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::Row as _;

use crate::{Catalog, Result};

/// How often one process deletes the buckets that are full again ([`Catalog::prune_full_buckets`]).
pub const PRUNE_EVERY_MS: i64 = 60_000;

/// A bucket's rule: `burst` tokens when full, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketRule {
    pub burst: f64,
    pub per_second: f64,
}

impl BucketRule {
    fn per_ms(self) -> f64 {
        self.per_second / 1000.0
    }

    /// Milliseconds an empty bucket takes to fill.
    fn fill_ms(self) -> i64 {
        (self.burst / self.per_ms()).ceil() as i64
    }

    /// The level of a bucket that held `tokens` at `at`, at `now`.
    fn level(self, tokens: f64, at: i64, now: i64) -> f64 {
        let elapsed = now.saturating_sub(at).max(0) as f64;
        (tokens + elapsed * self.per_ms()).min(self.burst)
    }

    /// How long until a bucket at `level` holds `count`.
    fn wait(self, level: f64, count: f64) -> Duration {
        Duration::from_secs_f64(((count - level) / self.per_second).max(0.0))
    }
}

/// What a take found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Take {
    /// The tokens were there, and are taken.
    Taken,
    /// Too few: nothing was taken, and the bucket holds enough after `wait`.
    Short { wait: Duration },
}

/// The bucket's level at `now`, from its row (`$2`), as both databases compute it: refilled by the time since
/// `at` (never negative), at most the burst (`$3`). `$4` is the refill rate a millisecond.
macro_rules! level {
    () => {
        "(CASE WHEN budget_buckets.tokens + (CASE WHEN $2 > budget_buckets.at THEN $2 - budget_buckets.at ELSE 0 END) \
         * $4 < $3 THEN budget_buckets.tokens + (CASE WHEN $2 > budget_buckets.at THEN $2 - budget_buckets.at ELSE 0 \
         END) * $4 ELSE $3 END)"
    };
}

impl Catalog {
    /// Takes `count` tokens (at most the burst) from `bucket`, refilled under `rule` up to `now` (ms), if it holds
    /// them; otherwise takes nothing and says how long until it does. One statement (and, when short, one read).
    /// `bucket` is a keyed digest of the budget and its key, never the key itself.
    pub async fn take_tokens(&self, bucket: &[u8; 32], rule: BucketRule, count: f64, now: i64) -> Result<Take> {
        let now = self.on_database_clock(now).await;
        let count = count.clamp(0.0, rule.burst);
        let full_at = now.saturating_add(rule.fill_ms());
        let taken = sqlx::query(concat!(
            "INSERT INTO budget_buckets (bucket, tokens, at, full_at) VALUES ($1, $3 - $5, $2, $6) \
             ON CONFLICT (bucket) DO UPDATE SET tokens = ",
            level!(),
            " - $5, \
             at = CASE WHEN $2 > budget_buckets.at THEN $2 ELSE budget_buckets.at END, \
             full_at = CASE WHEN $6 > budget_buckets.full_at THEN $6 ELSE budget_buckets.full_at END \
             WHERE ",
            level!(),
            " >= $5 RETURNING tokens"
        ))
        .bind(&bucket[..])
        .bind(now)
        .bind(rule.burst)
        .bind(rule.per_ms())
        .bind(count)
        .bind(full_at)
        .fetch_optional(&self.pool)
        .await?
        .is_some();
        self.prune_now_and_then(now).await;
        if taken {
            return Ok(Take::Taken);
        }
        Ok(Take::Short { wait: rule.wait(self.tokens_at(bucket, rule, now).await?, count) })
    }

    /// The tokens `bucket` holds at `now` (ms) under `rule`, taking none: the burst if it has no row.
    pub async fn tokens_left(&self, bucket: &[u8; 32], rule: BucketRule, now: i64) -> Result<f64> {
        self.tokens_at(bucket, rule, self.on_database_clock(now).await).await
    }

    /// [`Catalog::tokens_left`] at `now` on the database's clock.
    async fn tokens_at(&self, bucket: &[u8; 32], rule: BucketRule, now: i64) -> Result<f64> {
        let row = sqlx::query("SELECT tokens, at FROM budget_buckets WHERE bucket = $1")
            .bind(&bucket[..])
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => rule.level(row.try_get("tokens")?, row.try_get("at")?, now),
            None => rule.burst,
        })
    }

    /// Fills `bucket` again at once, whatever it holds: its row is deleted, which is the same as full (a success
    /// that clears a count of failures, say). One statement, the same on SQLite and PostgreSQL; no time is compared.
    pub async fn refill_bucket(&self, bucket: &[u8; 32]) -> Result<()> {
        sqlx::query("DELETE FROM budget_buckets WHERE bucket = $1").bind(&bucket[..]).execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes every bucket that is full again by `now` (ms): it would start full anyway. Returns how many.
    pub async fn prune_full_buckets(&self, now: i64) -> Result<u64> {
        self.prune_full_buckets_at(self.on_database_clock(now).await).await
    }

    /// [`Catalog::prune_full_buckets`] at `now` on the database's clock.
    async fn prune_full_buckets_at(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM budget_buckets WHERE full_at <= $1").bind(now).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    /// How many buckets are stored (for tests and the operator: the table stays small).
    pub async fn budget_buckets(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM budget_buckets").fetch_one(&self.pool).await?.try_get("n")?)
    }

    /// The salt under which every gateway on this database hashes its budgets' keys: the one stored, or
    /// `candidate` (random, from the caller) if none is yet, stored now. Read once per process and kept
    /// ([`Catalog::budget_salt_cached`]).
    async fn stored_budget_salt(&self, candidate: [u8; 32]) -> Result<[u8; 32]> {
        sqlx::query("INSERT INTO budget_salt (id, salt) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(&candidate[..])
            .execute(&self.pool)
            .await?;
        let salt: Vec<u8> =
            sqlx::query("SELECT salt FROM budget_salt WHERE id = 1").fetch_one(&self.pool).await?.try_get("salt")?;
        salt.try_into()
            .map_err(|_| crate::CatalogError::Database(sqlx::Error::Decode("the budgets' salt is not 32 bytes".into())))
    }

    /// The salt of this database's budget keys (stored in `budget_salt`), read at the first call of this
    /// handle or its clones and then kept; `candidate` is stored if the database has none yet. The salt is in the
    /// database, beside the digests it salts: it is what every gateway on the database shares without being told,
    /// and it keeps a stolen table from being read against a table of hashes made in advance; it does not keep
    /// anyone who holds the whole database from hashing every IPv4 address or a list of usernames under it.
    pub async fn budget_salt(&self, candidate: impl FnOnce() -> [u8; 32]) -> Result<[u8; 32]> {
        self.budget_salt.get_or_try_init(|| self.stored_budget_salt(candidate())).await.copied()
    }

    /// Prunes the full buckets if this process has not for [`PRUNE_EVERY_MS`]; a failure is logged and changes
    /// nothing for the take (the next minute tries again).
    async fn prune_now_and_then(&self, now: i64) {
        let last = self.budgets_pruned_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PRUNE_EVERY_MS
            || self.budgets_pruned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        match self.prune_full_buckets_at(now).await {
            Ok(pruned) if pruned > 0 => tracing::debug!(pruned, "deleted budget buckets that were full again"),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %custodia_core::ErrorChain(&err), "could not delete budget buckets that were full again")
            }
        }
    }
}
