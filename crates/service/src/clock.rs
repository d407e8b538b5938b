//! The gateway's clock. The system clock, plus an offset that tests move forward to expire tokens and
//! policies without sleeping. The times other gateways compare (sessions', tokens' and uploads' expiry, upload
//! claims, budgets) are given to the catalog on this clock, and the catalog shifts them to the database's
//! (`custodia_catalog`'s `database_clock`), so that gateways whose clocks differ agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_seconds: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        let offset = SignedDuration::from_secs(self.offset_seconds.load(Ordering::Relaxed));
        Timestamp::now().checked_add(offset).unwrap_or_else(|_| Timestamp::now())
    }

    pub fn unix_seconds(&self) -> i64 {
        self.now().as_second()
    }

    /// Moves this clock (and every clone) forward.
    pub fn advance(&self, seconds: i64) {
        self.offset_seconds.fetch_add(seconds, Ordering::Relaxed);
    }
}
