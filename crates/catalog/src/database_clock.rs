//! The database's clock, by which every time the catalog stores or compares to coordinate gateways is read: the
//! expiry of duties and hearing leases, the renewal of upload claims, the refill and pruning of shared budgets.
//! Gateways' clocks differ; one running ahead would otherwise take every lease from a healthy holder (and keep
//! them past its own death by its lead), or prune budget buckets still spent. Each process keeps the difference
//! between its system clock and PostgreSQL's (`clock_timestamp()`), measured again when it is older than
//! [`MEASURED_FOR`], and shifts the times it is given by it; so a gateway's times stay its own clock's (a test that
//! moves its clock moves them) while every gateway agrees with the database. A SQLite catalog has one gateway: no
//! shift.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::Catalog;

/// How long a measured difference is used before it is measured again.
const MEASURED_FOR_MS: i64 = 30_000;

/// The difference between this process's system clock and the database's, to the nearest second.
#[derive(Debug, Default)]
pub(crate) struct DatabaseClock {
    /// Milliseconds to add to this process's clock to read the database's.
    offset_ms: AtomicI64,
    /// When (system ms) it was last measured; 0: never.
    measured_at_ms: AtomicI64,
}

/// This process's system clock, in milliseconds since the Unix epoch.
pub(crate) fn system_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}

impl Catalog {
    /// The database's clock now, in milliseconds since the Unix epoch.
    pub async fn database_now_ms(&self) -> i64 {
        self.on_database_clock(system_ms()).await
    }

    /// `ms` (a time of this process's clock, in milliseconds since the Unix epoch) on the database's clock.
    pub async fn on_database_clock(&self, ms: i64) -> i64 {
        ms.saturating_add(self.database_offset_ms().await)
    }

    /// `seconds` (a time of this process's clock, in seconds since the Unix epoch) on the database's clock.
    pub async fn on_database_clock_seconds(&self, seconds: i64) -> i64 {
        seconds.saturating_add(self.database_offset_ms().await / 1000)
    }

    /// The milliseconds to add to this process's clock to read the database's: measured again once older than
    /// [`MEASURED_FOR_MS`]; while the database does not answer, the last measure (0 before any).
    async fn database_offset_ms(&self) -> i64 {
        let clock = &self.database_clock;
        if self.postgres_url.is_none() {
            return 0;
        }
        let now = system_ms();
        if now.saturating_sub(clock.measured_at_ms.load(Ordering::Acquire)) < MEASURED_FOR_MS {
            return clock.offset_ms.load(Ordering::Acquire);
        }
        let asked = system_ms();
        let answer: Result<i64, sqlx::Error> =
            sqlx::query_scalar("SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)")
                .fetch_one(&self.pool)
                .await;
        let answered = system_ms();
        match answer {
            Ok(database_ms) => {
                // The database read its clock somewhere between the question and the answer: in the middle, say. To
                // the nearest second, which leases and budgets need, so that gateways whose clocks agree (those on
                // one machine, say) shift by exactly the same, whatever each measure's jitter.
                let measured = database_ms - (asked + (answered - asked) / 2);
                let offset = (measured as f64 / 1000.0).round() as i64 * 1000;
                clock.offset_ms.store(offset, Ordering::Release);
                clock.measured_at_ms.store(answered, Ordering::Release);
                if offset != 0 {
                    tracing::warn!(
                        offset_ms = offset,
                        "this gateway's clock differs from the database's; leases and budgets follow the database's"
                    );
                }
                offset
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not read the database's clock; using the last difference measured");
                clock.offset_ms.load(Ordering::Acquire)
            }
        }
    }
}
