//! The database's clock, by which the catalog reads and stores every time that another gateway compares: the
//! expiry of duties and hearing leases, the refill and pruning of shared budgets, the renewal of upload completion
//! claims, the expiry of resumable uploads, sessions and API tokens.
//! Gateways' clocks differ; one running ahead would otherwise take every lease from a healthy holder (and keep
//! them past its own death by its lead), prune budget buckets still spent, release another gateway's live upload
//! claim as stale, or take a fresh session, token or upload of another gateway's for expired (and one running
//! behind would honour them past their time). Each process keeps the difference
//! between its system clock and PostgreSQL's (`clock_timestamp()`), measured again when it is older than
//! [`MEASURED_FOR_MS`] by the monotonic clock, or at once when the system clock has stepped since (an NTP correction,
//! a restored virtual machine). The catalog is the one place that shifts: every operation is given and answers times
//! on this process's clock (the service's `Clock`, with a test's offset, or the system clock), and shifts them by
//! the difference as it binds them ([`Catalog::on_database_clock`], [`Shift`] for seconds) and back as it reads them.
//! So a gateway's times stay its own clock's (a test that moves its clock moves them) while every gateway agrees
//! with the database. A SQLite catalog has one gateway: no shift. Times kept outside the catalog stay on the clock
//! of whoever made them (a device cookie's expiry, a hearing journal's invites).

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

/// How far the database's clock is ahead of this process's, in whole seconds ([`Catalog::shift`]): what the
/// catalog adds to a time in seconds (a session's, a token's or an upload's expiry, a claim's renewal) before it is
/// stored or compared, and takes away from one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shift(i64);

impl Shift {
    /// `seconds` of this process's clock on the database's. `i64::MAX` ("whatever the time") stays far past any.
    pub(crate) fn on_database(self, seconds: i64) -> i64 {
        seconds.saturating_add(self.0)
    }

    /// `seconds` of the database's clock (as stored) on this process's.
    pub(crate) fn on_this_clock(self, seconds: i64) -> i64 {
        seconds.saturating_sub(self.0)
    }
}

/// This process's system clock, in milliseconds since the Unix epoch.
pub(crate) fn system_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}

/// The longest round trip of a reading of the database's clock that is kept ([`Catalog::database_offset_ms`]): the
/// reading is placed in its middle, so this bounds the error at half of it, well within the second it is rounded
/// to.
const MEASURE_ROUND_TRIP_MS: i64 = 400;

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
        self.shift().await.on_database(seconds)
    }

    /// The difference between this process's clock and the database's, in seconds, for one operation to shift
    /// the times it binds and reads with (each with the same measure).
    pub(crate) async fn shift(&self) -> Shift {
        // The difference is measured to the whole second.
        Shift(self.database_offset_ms().await / 1000)
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
        // Timed from a connection in hand, so that a wait for one (a pool busy, a database just back) is not taken
        // for the clocks' difference; and a measure whose round trip was too long to place the database's reading
        // within the second it is rounded to is not kept.
        let measure = async {
            let mut connection = self.pool.acquire().await?;
            let asked = system_ms();
            let database_ms: i64 =
                sqlx::query_scalar("SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)")
                    .fetch_one(&mut *connection)
                    .await?;
            Ok::<_, sqlx::Error>((asked, database_ms, system_ms()))
        };
        match measure.await {
            Ok((asked, _, answered)) if answered - asked > MEASURE_ROUND_TRIP_MS => {
                tracing::debug!(round_trip_ms = answered - asked, "the database's clock was read too slowly to keep");
                clock.offset_ms.load(Ordering::Acquire)
            }
            Ok((asked, database_ms, answered)) => {
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
                        "this gateway's clock differs from the database's; the times gateways compare follow the database's"
                    );
                }
                offset
            }
            Err(err) => {
                tracing::warn!(error = %custodia_core::ErrorChain(&err), "could not read the database's clock; using the last difference measured");
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
