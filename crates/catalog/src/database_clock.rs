//! The database's clock, by which the catalog reads and stores the times that coordinate gateways: the expiry of
//! duties and hearing leases, the refill and pruning of shared budgets. (Upload claims, sessions and tokens are
//! still on each gateway's own clock.)
//! Gateways' clocks differ; one running ahead would otherwise take every lease from a healthy holder (and keep
//! them past its own death by its lead), or prune budget buckets still spent. Each process keeps the difference
//! between its system clock and PostgreSQL's (`clock_timestamp()`), measured again when it is older than
//! [`MEASURED_FOR_MS`] by the monotonic clock, or at once when the system clock has stepped since (an NTP correction,
//! a restored virtual machine), and shifts the times it is given by it; so a gateway's times stay its own clock's (a test that
//! moves its clock moves them) while every gateway agrees with the database. A SQLite catalog has one gateway: no
//! shift.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::Catalog;

/// How long a measured difference is used before it is measured again.
const MEASURED_FOR_MS: i64 = 30_000;
/// How far the system clock may move apart from the monotonic clock before the difference is measured again at once.
const STEP_MS: i64 = 1_000;

/// The difference between this process's system clock and the database's, to the nearest second.
#[derive(Debug, Default)]
pub(crate) struct DatabaseClock {
    /// Milliseconds to add to this process's clock to read the database's.
    offset_ms: AtomicI64,
    /// When it was last measured, by the monotonic clock and by the system clock (ms); `None`: never.
    measured: Mutex<Option<(Instant, i64)>>,
}

impl DatabaseClock {
    /// Whether the difference is still good at `system` (ms): measured less than [`MEASURED_FOR_MS`] ago, and the
    /// system clock has not stepped since.
    fn current(&self, system: i64) -> bool {
        let measured = *self.measured.lock().unwrap_or_else(PoisonError::into_inner);
        measured.is_some_and(|(at, system_then)| {
            let elapsed = i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX);
            elapsed < MEASURED_FOR_MS && (system.saturating_sub(system_then) - elapsed).abs() < STEP_MS
        })
    }
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
        if clock.current(system_ms()) {
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
                *clock.measured.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), answered));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_is_measured_again_once_old_or_once_the_system_clock_steps() {
        let clock = DatabaseClock::default();
        let system = system_ms();
        assert!(!clock.current(system), "never measured");
        *clock.measured.lock().unwrap() = Some((Instant::now(), system));
        assert!(clock.current(system), "just measured");
        assert!(clock.current(system + 200), "the clocks moving on together");
        assert!(!clock.current(system - 20 * 60_000), "a step back of 20 minutes");
        assert!(!clock.current(system + 20 * 60_000), "a step forward of 20 minutes");
        let long_ago = Instant::now().checked_sub(std::time::Duration::from_secs(31)).unwrap();
        *clock.measured.lock().unwrap() = Some((long_ago, system - 31_000));
        assert!(!clock.current(system), "measured 31 s ago");
    }
}
