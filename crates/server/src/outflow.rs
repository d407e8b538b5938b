//! Evidence leaving at once over HTTP: downloads and artefact exports, and case exports ([`crate::api`]), each held
//! to a place among the streams leaving, and the connection of one that reads too slowly closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Evidence leaving at once: downloads and artefact exports, and case exports ([`crate::api`]), per account and in
/// all. A client that reads slowly holds its
/// place, with its buffers, for as long as it reads: without these, members reading a few hundred answers a byte
/// at a time took the gateway from 150 MB to 1.5 GB. And so that a few members reading slowly (but never stalling,
/// which [`crate::listen`] cuts off) cannot hold every place: when all are held, a newcomer takes the place of the
/// slowest stream of an account holding at least two more than the newcomer's (the places are shared out evenly),
/// or else of the slowest reader going below [`SLOWEST_KEPT_PACE`] over the last minute or so ([`PACE_WINDOWS`] of
/// [`PACE_WINDOW`]); that stream's connection is closed.
#[derive(Debug, Default)]
pub struct Outflow {
    state: Arc<Mutex<OutflowState>>,
}

#[derive(Debug, Default)]
struct OutflowState {
    by_account: HashMap<(String, Stream), usize>,
    /// The streams leaving, by kind, by the id each was given.
    leaving: HashMap<Stream, HashMap<u64, Arc<Leaving>>>,
    next_id: u64,
}

/// A reader slower than this (bytes a second) gives its place to a newcomer when every place is held
/// ([`Outflow`]): 256 kbit/s, slower than any link a court or a prosecutor works on, while a member holding
/// places by reading a little at a time must pay for it with their bandwidth.
pub const SLOWEST_KEPT_PACE: u64 = 32 * 1024;

/// The pace of a stream is measured over the last [`PACE_WINDOWS`] `- 1` windows of this length and the one under
/// way; a stream younger than that, over its life so far.
pub const PACE_WINDOW: Duration = Duration::from_secs(15);

/// How many windows a pace is measured over, the one under way included: 45 to 60 s. A reader on a modest link
/// takes what it is sent in bursts, as its window opens, and a review measured bursts of about 1 MB 12 to 23 s
/// apart for a client reading 48 KiB/s: over one window and a bit, a gap between bursts made it look slower than
/// the floor, and it was closed. Over three windows and a bit, such a reader always shows two bursts or more.
pub const PACE_WINDOWS: usize = 4;

/// A stream younger than this keeps its place whatever its pace: a new download's first bytes fill the buffers on
/// the way and tell nothing yet. Short, so that readers who open new streams as the old ones are measured (a
/// review held every place so, reopening each 25 s) are measured too.
pub const PACE_UNMEASURED: Duration = Duration::from_secs(5);

/// What leaves: a download or an artefact's bundle, or a case's bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Artefact,
    Case,
}

impl Stream {
    /// At most this many of one account's at once.
    pub fn per_account(self) -> usize {
        match self {
            Self::Artefact => 16,
            Self::Case => 3,
        }
    }

    /// At most this many at once in all.
    pub fn in_all(self) -> usize {
        match self {
            Self::Artefact => 128,
            Self::Case => 8,
        }
    }
}

impl Outflow {
    /// A place for one more `stream` of `account`'s, held until dropped, sent over `connection` (closed if the
    /// place is given to another); or why there is none.
    pub fn start(
        &self,
        account: &str,
        stream: Stream,
        connection: Option<crate::listen::Connection>,
    ) -> Result<Outflowing, String> {
        self.start_at(account, stream, connection, Instant::now())
    }

    fn start_at(
        &self,
        account: &str,
        stream: Stream,
        connection: Option<crate::listen::Connection>,
        now: Instant,
    ) -> Result<Outflowing, String> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (account.to_owned(), stream);
        let (what, of) = match stream {
            Stream::Artefact => ("downloads and exports", "artefacts"),
            Stream::Case => ("case exports", "cases"),
        };
        if state.by_account.get(&key).copied().unwrap_or(0) >= stream.per_account() {
            return Err(format!(
                "you have {} {what} under way, the most one account may have at once; try again when one ends",
                stream.per_account()
            ));
        }
        if state.leaving.get(&stream).map_or(0, HashMap::len) >= stream.in_all() {
            let held = state.by_account.get(&key).copied().unwrap_or(0);
            let taken = state.fair_share_over(stream, held, now);
            let Some(taken) = taken.or_else(|| state.slowest_below_the_pace(stream, held, now)) else {
                return Err(format!("the gateway is sending as many {of} as it can at once; try again shortly"));
            };
            state.give_back(stream, taken);
        }
        *state.by_account.entry(key.clone()).or_insert(0) += 1;
        let id = state.next_id;
        state.next_id += 1;
        let leaving = Arc::new(Leaving {
            key,
            pace: Mutex::new(Pace::new(now)),
            given_back: std::sync::atomic::AtomicBool::new(false),
            connection,
        });
        state.leaving.entry(stream).or_default().insert(id, leaving.clone());
        Ok(Outflowing { state: self.state.clone(), id, leaving })
    }
}

impl OutflowState {
    /// When every place is held, a newcomer whose account holds `held` of them takes one from an account holding
    /// at least two more: the places are shared out evenly among the accounts that want them, so a few accounts
    /// (however they read) cannot keep a member with fewer out. Of those accounts' streams, the slowest goes (one
    /// too young to measure counts as fast), and among equals the newest, which has sent least.
    fn fair_share_over(&self, stream: Stream, held: usize, now: Instant) -> Option<u64> {
        self.leaving
            .get(&stream)?
            .iter()
            .filter(|(_, leaving)| self.by_account.get(&leaving.key).copied().unwrap_or(0) >= held + 2)
            .map(|(id, leaving)| {
                let pace = leaving.pace.lock().unwrap_or_else(std::sync::PoisonError::into_inner).per_second(now);
                (pace.unwrap_or(u64::MAX), std::cmp::Reverse(*id))
            })
            .min()
            .map(|(_, std::cmp::Reverse(id))| id)
    }

    /// The id of the `stream` reading slowest, below [`SLOWEST_KEPT_PACE`], of those measured, of accounts holding
    /// more than the newcomer's `held`: an account whose streams were taken cannot take back, in turn, the one
    /// stream of a member reading slowly.
    fn slowest_below_the_pace(&self, stream: Stream, held: usize, now: Instant) -> Option<u64> {
        self.leaving
            .get(&stream)?
            .iter()
            .filter(|(_, leaving)| self.by_account.get(&leaving.key).copied().unwrap_or(0) > held)
            .filter_map(|(id, leaving)| {
                let pace = leaving.pace.lock().unwrap_or_else(std::sync::PoisonError::into_inner).per_second(now)?;
                (pace < SLOWEST_KEPT_PACE).then_some((pace, *id))
            })
            .min()
            .map(|(_, id)| id)
    }

    /// Takes the place of stream `id` back: it is no longer counted, it fails at its next bytes, and its
    /// connection is closed.
    fn give_back(&mut self, stream: Stream, id: u64) {
        let Some(leaving) = self.leaving.get_mut(&stream).and_then(|leaving| leaving.remove(&id)) else { return };
        self.uncount(&leaving.key);
        leaving.given_back.store(true, std::sync::atomic::Ordering::Release);
        if let Some(connection) = &leaving.connection {
            connection.close_now();
        }
    }

    fn uncount(&mut self, key: &(String, Stream)) {
        if let Some(count) = self.by_account.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.by_account.remove(key);
            }
        }
    }
}

/// One stream leaving, as the outflow watches it.
#[derive(Debug)]
struct Leaving {
    key: (String, Stream),
    pace: Mutex<Pace>,
    /// Its place was given to another ([`OutflowState::give_back`]).
    given_back: std::sync::atomic::AtomicBool,
    connection: Option<crate::listen::Connection>,
}

/// Bytes sent in the window under way and the ones before it ([`PACE_WINDOWS`] of [`PACE_WINDOW`]).
#[derive(Debug)]
struct Pace {
    /// When its first bytes left: a case export may take seconds to start, and is not slow for that.
    started: Option<Instant>,
    window_started: Instant,
    /// Bytes by window, a ring: `windows[current]` is the window under way.
    windows: [u64; PACE_WINDOWS],
    current: usize,
}

impl Pace {
    fn new(now: Instant) -> Self {
        Self { started: None, window_started: now, windows: [0; PACE_WINDOWS], current: 0 }
    }

    fn roll(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.window_started);
        if since >= PACE_WINDOW {
            let passed = since.as_millis() / PACE_WINDOW.as_millis();
            for _ in 0..passed.min(PACE_WINDOWS as u128) {
                self.current = (self.current + 1) % PACE_WINDOWS;
                self.windows[self.current] = 0;
            }
            self.window_started += PACE_WINDOW * u32::try_from(passed).unwrap_or(u32::MAX);
        }
    }

    fn sent(&mut self, bytes: u64, now: Instant) {
        if self.started.is_none() {
            self.started = Some(now);
            self.window_started = now;
        }
        self.roll(now);
        self.windows[self.current] += bytes;
    }

    /// Bytes a second over the windows kept, or over its life while younger than they cover; `None` before its
    /// first bytes and while they are younger than [`PACE_UNMEASURED`].
    fn per_second(&mut self, now: Instant) -> Option<u64> {
        let age = now.saturating_duration_since(self.started?);
        if age < PACE_UNMEASURED {
            return None;
        }
        self.roll(now);
        let full = PACE_WINDOW * (PACE_WINDOWS as u32 - 1);
        let over = if age < full { age } else { full + now.saturating_duration_since(self.window_started) };
        let bytes: u128 = self.windows.iter().map(|&bytes| u128::from(bytes)).sum();
        Some(u64::try_from(bytes * 1000 / over.as_millis().max(1)).unwrap_or(u64::MAX))
    }
}

/// One stream of evidence leaving, counted until dropped ([`Outflow`]).
#[derive(Debug)]
pub struct Outflowing {
    state: Arc<Mutex<OutflowState>>,
    id: u64,
    leaving: Arc<Leaving>,
}

impl Outflowing {
    /// What counts the bytes of this stream as they leave ([`Meter::sent`]).
    pub fn meter(&self) -> Meter {
        Meter(self.leaving.clone())
    }
}

impl Drop for Outflowing {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stream = self.leaving.key.1;
        if state.leaving.get_mut(&stream).and_then(|leaving| leaving.remove(&self.id)).is_some() {
            state.uncount(&self.leaving.key);
        }
    }
}

/// Counts the bytes of one stream leaving ([`Outflowing::meter`]).
#[derive(Debug, Clone)]
pub struct Meter(Arc<Leaving>);

impl Meter {
    /// Counts `bytes` about to leave; an error if the stream's place was given to another, which ends it.
    pub fn sent(&self, bytes: usize) -> std::io::Result<()> {
        if self.0.given_back.load(std::sync::atomic::Ordering::Acquire) {
            return Err(std::io::Error::other(
                "the client read too slowly while others waited to be sent evidence; its place was given to another",
            ));
        }
        let mut pace = self.0.pace.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pace.sent(bytes as u64, Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_leaving_at_once_is_bounded_per_account_and_in_all() {
        let outflow = Outflow::default();
        let start = |account: &str, stream| outflow.start(account, stream, None);
        let mine: Vec<Outflowing> =
            (0..Stream::Case.per_account()).map(|_| start("a", Stream::Case).expect("room")).collect();
        assert!(start("a", Stream::Case).is_err(), "the account's case exports at once");
        assert!(start("a", Stream::Artefact).is_ok(), "downloads are counted apart");
        let others: Vec<Outflowing> = (0..Stream::Case.in_all() - mine.len())
            .map(|n| start(&format!("other-{n}"), Stream::Case).expect("room"))
            .collect();
        // Full: a newcomer takes a place of the account holding two more than it does, while there is one.
        let newcomers: Vec<Outflowing> =
            (0..Stream::Case.per_account()).filter_map(|n| start(&format!("b-{n}"), Stream::Case).ok()).collect();
        assert_eq!(newcomers.len(), 2, "'a' held three, the others one: two went, until 'a' held one like everyone");
        assert!(mine.iter().filter(|leaving| leaving.meter().sent(1).is_err()).count() == 2);
        drop(mine);
        assert!(start("c", Stream::Case).is_ok(), "a place given back is taken again");
        drop((others, newcomers));
        let state = outflow.state.lock().unwrap();
        assert!(state.by_account.values().all(|count| *count <= 1), "{state:?}");
    }

    /// With every place held, the slowest reader under the pace gives its place to a newcomer, and fails at its
    /// next bytes; a reader above the pace, or one too young to tell, keeps its place.
    #[test]
    fn the_slowest_reader_under_the_pace_gives_its_place_when_all_are_held() {
        let outflow = Outflow::default();
        let began = Instant::now();
        let held: Vec<(Outflowing, Meter)> = (0..Stream::Case.in_all())
            .map(|n| {
                let leaving = outflow.start_at(&format!("member-{n}"), Stream::Case, None, began).expect("room");
                let meter = leaving.meter();
                (leaving, meter)
            })
            .collect();
        // Over the first window: all fast but two, one of them slower than the other.
        let window = PACE_WINDOW.as_secs();
        for (n, (leaving, _)) in held.iter().enumerate() {
            let per_second = match n {
                0 => SLOWEST_KEPT_PACE / 2,
                1 => SLOWEST_KEPT_PACE / 8,
                _ => SLOWEST_KEPT_PACE * 4,
            };
            leaving.leaving.pace.lock().unwrap().sent(per_second * window, began + Duration::from_secs(1));
        }
        let young = began + PACE_UNMEASURED / 2;
        assert!(outflow.start_at("newcomer", Stream::Case, None, young).is_err(), "nobody measured yet");
        let later = began + PACE_WINDOW + Duration::from_secs(1);
        let newcomer = outflow.start_at("newcomer", Stream::Case, None, later).expect("the slowest's place");
        assert!(held[1].1.sent(1).is_err(), "the slowest fails at its next bytes");
        assert!(held[0].1.sent(1).is_ok(), "the other slow one goes on, until a newcomer needs its place");
        let second = outflow.start_at("second", Stream::Case, None, later).expect("the next slowest's place");
        assert!(held[0].1.sent(1).is_err());
        assert!(outflow.start_at("third", Stream::Case, None, later).is_err(), "the rest read fast enough");
        drop((held, newcomer, second));
        let state = outflow.state.lock().unwrap();
        assert!(state.by_account.is_empty() && state.leaving.values().all(HashMap::is_empty), "{state:?}");
    }

    /// Accounts holding every place, however fast they read, give one to a member holding fewer: the slowest
    /// stream of the accounts holding the most, and among equals the newest.
    #[test]
    fn places_are_shared_out_evenly_among_the_accounts_that_want_them() {
        let outflow = Outflow::default();
        let began = Instant::now();
        let holders = Stream::Artefact.in_all() / Stream::Artefact.per_account();
        let held: Vec<Outflowing> = (0..Stream::Artefact.in_all())
            .map(|n| outflow.start_at(&format!("holder-{}", n % holders), Stream::Artefact, None, began).expect("room"))
            .collect();
        for (n, leaving) in held.iter().enumerate() {
            let per_second = if n == 5 { SLOWEST_KEPT_PACE * 2 } else { SLOWEST_KEPT_PACE * 8 };
            leaving.leaving.pace.lock().unwrap().sent(per_second * 20, began);
        }
        let later = began + PACE_WINDOW + Duration::from_secs(5);
        let member = outflow.start_at("member", Stream::Artefact, None, later).expect("a place of its own");
        assert!(held[5].meter().sent(1).is_err(), "the slowest of the holders' streams gave its place");
        let second = outflow.start_at("member", Stream::Artefact, None, later).expect("a second: 1 against 16");
        let newest = held.len() - 1;
        assert!(held[newest].meter().sent(1).is_err(), "of equals, the newest");
        assert!(held[..newest].iter().enumerate().filter(|(n, _)| *n != 5).all(|(_, l)| l.meter().sent(1).is_ok()));
        drop((held, member, second));
        let state = outflow.state.lock().unwrap();
        assert!(state.by_account.is_empty() && state.leaving.values().all(HashMap::is_empty));
    }

    /// The slow-reader fallback takes only from accounts holding more than the newcomer: attackers whose streams
    /// were shared out cannot, in turn, take the one slow stream of a member.
    #[test]
    fn a_member_reading_slowly_keeps_its_one_stream_against_accounts_holding_more() {
        let outflow = Outflow::default();
        let began = Instant::now();
        let accounts = ["a1", "a1", "a2", "a2", "a3", "a3", "member", "x"];
        let held: Vec<Outflowing> = accounts
            .iter()
            .map(|account| outflow.start_at(account, Stream::Case, None, began).expect("room"))
            .collect();
        for (leaving, account) in held.iter().zip(accounts) {
            let per_second = if account == "member" { SLOWEST_KEPT_PACE / 4 } else { SLOWEST_KEPT_PACE * 8 };
            leaving.leaving.pace.lock().unwrap().sent(per_second * 20, began);
        }
        let later = began + PACE_WINDOW + Duration::from_secs(5);
        assert!(outflow.start_at("a1", Stream::Case, None, later).is_err(), "no account holds more than a1");
        assert!(held[6].meter().sent(1).is_ok(), "the member's slow stream goes on");
        let newcomer = outflow.start_at("newcomer", Stream::Case, None, later).expect("a place");
        assert!(held[6].meter().sent(1).is_ok(), "a newcomer holding none takes from an account holding two");
        assert!(held[5].meter().sent(1).is_err(), "of equals, the newest");
        drop((held, newcomer));
    }

    #[test]
    fn a_pace_is_measured_over_the_last_windows_and_the_one_under_way() {
        let began = Instant::now();
        let mut silent = Pace::new(began);
        assert_eq!(silent.per_second(began + Duration::from_secs(60)), None, "nothing sent yet: not slow for that");
        let mut pace = Pace::new(began);
        pace.sent(45 * 1000, began);
        assert_eq!(pace.per_second(began + Duration::from_secs(4)), None, "too young to tell");
        assert_eq!(pace.per_second(began + Duration::from_secs(10)), Some(4500), "over its life so far");
        assert_eq!(pace.per_second(began + 3 * PACE_WINDOW), Some(1000));
        // A reader that stops: its pace falls as time passes, and is none once the windows kept have passed.
        assert_eq!(pace.per_second(began + 3 * PACE_WINDOW + PACE_WINDOW / 2), Some(857));
        assert_eq!(pace.per_second(began + PACE_WINDOWS as u32 * PACE_WINDOW), Some(0));
    }

    /// A reader on a modest link takes its bytes in bursts (1 MB every 20 s is 51 KiB/s): measured at the worst
    /// moment, just before a burst, it is never taken for one slower than the floor.
    #[test]
    fn a_reader_that_takes_its_bytes_in_bursts_is_judged_by_its_average() {
        let began = Instant::now();
        let mut pace = Pace::new(began);
        for burst in 0..12u32 {
            let at = began + Duration::from_secs(20) * burst;
            pace.sent(1 << 20, at);
            let just_before_the_next = at + Duration::from_millis(19_900);
            let measured = pace.per_second(just_before_the_next).expect("measured");
            assert!(measured >= SLOWEST_KEPT_PACE, "burst {burst}: {measured} B/s");
        }
    }
}
