//! When the gateway asks for its next timestamp: for every new checkpoint, at most once every `min_interval`, and at
//! least once every `max_interval` even when nothing changed (so a silent log still shows that it was alive).
//!
//! Pure: the caller says how long ago its last attempt was and whether the log holds entries its last timestamp does
//! not cover (its own timestamp entries aside, or every timestamp would call for another).

use std::time::Duration;

/// The two settings.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Schedule {
    /// Never two attempts closer than this (a busy log is stamped in batches, not per entry).
    pub min_interval: Duration,
    /// Never longer than this without an attempt.
    pub max_interval: Duration,
}

/// What to do now.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Next {
    /// Ask the authorities now.
    Stamp,
    /// Ask again after this long, whatever happens meanwhile.
    Sleep(Duration),
    /// Ask after this long, or as soon as the log grows, whichever comes first (and then ask [`Schedule::next`]
    /// again).
    SleepUnlessGrows(Duration),
}

impl Schedule {
    /// The next step, `since_last_attempt` being `None` before the first attempt.
    pub fn next(&self, since_last_attempt: Option<Duration>, uncovered_entries: bool) -> Next {
        let Some(since) = since_last_attempt else { return Next::Stamp };
        if since >= self.max_interval || (uncovered_entries && since >= self.min_interval) {
            Next::Stamp
        } else if uncovered_entries {
            Next::Sleep(self.min_interval - since)
        } else {
            Next::SleepUnlessGrows(self.max_interval - since)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: Schedule =
        Schedule { min_interval: Duration::from_secs(10), max_interval: Duration::from_secs(600) };

    #[test]
    fn stamps_at_start_for_new_entries_after_the_minimum_and_after_the_maximum_regardless() {
        let secs = Duration::from_secs;
        assert_eq!(SCHEDULE.next(None, false), Next::Stamp);
        assert_eq!(SCHEDULE.next(None, true), Next::Stamp);
        assert_eq!(SCHEDULE.next(Some(secs(3)), true), Next::Sleep(secs(7)));
        assert_eq!(SCHEDULE.next(Some(secs(10)), true), Next::Stamp);
        assert_eq!(SCHEDULE.next(Some(secs(3)), false), Next::SleepUnlessGrows(secs(597)));
        assert_eq!(SCHEDULE.next(Some(secs(599)), false), Next::SleepUnlessGrows(secs(1)));
        assert_eq!(SCHEDULE.next(Some(secs(600)), false), Next::Stamp);
        assert_eq!(SCHEDULE.next(Some(secs(5000)), false), Next::Stamp);
    }
}
