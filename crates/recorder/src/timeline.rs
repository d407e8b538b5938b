//! One timeline for all of a publisher's tracks, in milliseconds since the recording began.
//!
//! Each track's 32-bit RTP timestamps are unwrapped into a 64-bit count of its clock. The first packet anchors
//! the track at the moment it arrived. The first RTCP sender report of a track re-anchors it to the sender's wall
//! clock: all tracks of one sender share that clock, so once each has had a report they are in sync with each
//! other (lip sync), whatever their network and encoder delays. The sender's clock is related to ours once, by the
//! first report of the whole recording ([`ClockSync`]), so that it need not agree with ours and the track that
//! reports first does not jump; a later track moves by its skew against the first (the reader keeps each track's
//! times from going backwards).

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// The most a sender report may move a track from where its packets' arrival put it. Lip sync corrects encoder and
/// network delays of a fraction of a second; a report that would move a track further speaks of a clock of its own
/// (a buggy or hostile sender's), and is ignored: the track keeps its arrival timing rather than put a recording's
/// frames hours or years away (which once gave a 25 s recording segments "12 billion seconds" long).
const MAX_SENDER_REPORT_SHIFT_MS: f64 = 5_000.0;

/// Relates a sender's NTP clock to the recording's timeline; shared by all tracks of one recording.
#[derive(Debug, Clone)]
pub struct ClockSync {
    origin: Instant,
    /// Timeline milliseconds minus sender NTP milliseconds, once known.
    offset_ms: Arc<Mutex<Option<f64>>>,
}

impl ClockSync {
    /// A timeline whose zero is `origin`.
    pub fn new(origin: Instant) -> Self {
        ClockSync { origin, offset_ms: Arc::new(Mutex::new(None)) }
    }

    /// Milliseconds since the timeline's zero at `at`.
    pub fn since_origin_ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.origin).as_secs_f64() * 1000.0
    }

    /// The timeline time of a sender wall-clock time. The first call fixes the relation so that `current` (where
    /// the reporting track already puts that instant) is kept: that track does not jump.
    fn ntp_to_timeline(&self, ntp_ms: f64, current: f64) -> f64 {
        let mut offset = self.offset_ms.lock().unwrap_or_else(|p| p.into_inner());
        let offset = *offset.get_or_insert(current - ntp_ms);
        ntp_ms + offset
    }
}

/// NTP 64-bit time (32.32 fixed point seconds since 1900) in milliseconds since the Unix epoch.
pub fn ntp_to_unix_ms(ntp: u64) -> f64 {
    let seconds = (ntp >> 32) as f64 - NTP_UNIX_OFFSET_S as f64;
    let fraction = (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0;
    (seconds + fraction) * 1000.0
}

/// Unwraps a track's 32-bit RTP timestamps.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unwrapper {
    last: Option<i64>,
}

impl Unwrapper {
    pub fn unwrap(&mut self, timestamp: u32) -> i64 {
        let extended = match self.last {
            None => i64::from(timestamp),
            Some(last) => last + i64::from(timestamp.wrapping_sub(last as u32) as i32),
        };
        if self.last.is_none_or(|last| extended > last) {
            self.last = Some(extended);
        }
        extended
    }
}

/// Maps one track's RTP timestamps to the recording's timeline.
#[derive(Debug)]
pub struct TrackTimeline {
    clock_rate: f64,
    sync: ClockSync,
    unwrapper: Unwrapper,
    /// An extended RTP time and the timeline milliseconds it maps to.
    anchor: Option<(i64, f64)>,
    from_sender_report: bool,
}

impl TrackTimeline {
    pub fn new(clock_rate: u32, sync: ClockSync) -> Self {
        TrackTimeline {
            clock_rate: f64::from(clock_rate.max(1)),
            sync,
            unwrapper: Unwrapper::default(),
            anchor: None,
            from_sender_report: false,
        }
    }

    /// Whether the track is on the sender's wall clock yet.
    pub fn synced(&self) -> bool {
        self.from_sender_report
    }

    /// The timeline time, in milliseconds, of a packet with RTP timestamp `timestamp` that arrived at `arrived`.
    pub fn map(&mut self, timestamp: u32, arrived: Instant) -> i64 {
        let extended = self.unwrapper.unwrap(timestamp);
        let (anchor_rtp, anchor_ms) = *self.anchor.get_or_insert((extended, self.sync.since_origin_ms(arrived)));
        (anchor_ms + (extended - anchor_rtp) as f64 * 1000.0 / self.clock_rate).round() as i64
    }

    /// Takes a sender report. Only the first one re-anchors the track: later ones would make its timestamps jump
    /// by the network's jitter. A report with NTP zero, or one that would move the track by more than
    /// 5 s (`MAX_SENDER_REPORT_SHIFT_MS`), is ignored (and a later one may still sync the track).
    pub fn sender_report(&mut self, ntp_time: u64, rtp_time: u32, arrived: Instant) {
        // NTP zero is a sender without a wall clock (RFC 3550, 6.4.1): nothing to sync to.
        if self.from_sender_report || ntp_time == 0 {
            return;
        }
        let extended = self.unwrapper.unwrap(rtp_time);
        let current = match self.anchor {
            Some((anchor_rtp, anchor_ms)) => anchor_ms + (extended - anchor_rtp) as f64 * 1000.0 / self.clock_rate,
            None => self.sync.since_origin_ms(arrived),
        };
        let ms = self.sync.ntp_to_timeline(ntp_to_unix_ms(ntp_time), current);
        if (ms - current).abs() > MAX_SENDER_REPORT_SHIFT_MS {
            return;
        }
        self.anchor = Some((extended, ms));
        self.from_sender_report = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unwraps_forwards_and_backwards() {
        let mut u = Unwrapper::default();
        assert_eq!(u.unwrap(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(u.unwrap(5), i64::from(u32::MAX) + 6);
        // A reordered packet from before the wrap.
        assert_eq!(u.unwrap(u32::MAX - 1), i64::from(u32::MAX - 1));
        assert_eq!(u.unwrap(100), i64::from(u32::MAX) + 101);
    }

    #[test]
    fn sender_reports_put_tracks_on_one_clock() {
        let t0 = Instant::now();
        let sync = ClockSync::new(t0);
        let mut audio = TrackTimeline::new(48_000, sync.clone());
        let mut video = TrackTimeline::new(90_000, sync);
        // Audio arrives promptly; video 40 ms late (say, a slow encoder), with unrelated RTP offsets.
        assert_eq!(audio.map(1_000, t0), 0);
        assert_eq!(video.map(7_000_000, t0 + Duration::from_millis(40)), 40);
        // Sender reports for the same sender instant (NTP 3_900_000_000 s) on both.
        let ntp = 3_900_000_000u64 << 32;
        audio.sender_report(ntp, 1_000 + 48_000, t0 + Duration::from_millis(1000));
        video.sender_report(ntp, 7_000_000 + 90_000, t0 + Duration::from_millis(1045));
        // One second of media after each track's start is now the same timeline time on both.
        assert_eq!(audio.map(1_000 + 48_000, t0), 1000);
        assert_eq!(video.map(7_000_000 + 90_000, t0), 1000);
        assert_eq!(video.map(7_000_000, t0), 0);
    }

    #[test]
    fn a_report_without_a_wall_clock_or_from_another_clock_leaves_the_track_where_it_arrived() {
        let t0 = Instant::now();
        let sync = ClockSync::new(t0);
        let mut audio = TrackTimeline::new(48_000, sync.clone());
        let mut video = TrackTimeline::new(90_000, sync);
        assert_eq!(audio.map(1_000, t0), 0);
        assert_eq!(video.map(7_000_000, t0), 0);
        // NTP zero first: ignored, and it does not fix the relation between the sender's clock and ours.
        audio.sender_report(0, 1_000 + 48_000, t0 + Duration::from_millis(1000));
        assert!(!audio.synced());
        let ntp = 3_900_000_000u64 << 32;
        audio.sender_report(ntp, 1_000 + 48_000, t0 + Duration::from_millis(1000));
        assert!(audio.synced());
        assert_eq!(audio.map(1_000 + 48_000, t0), 1000);
        // Video reports a wall clock a day away from the audio's for the same media time: ignored, video keeps its
        // arrival timing instead of jumping a day.
        let day_later = (3_900_000_000u64 + 86_400) << 32;
        video.sender_report(day_later, 7_000_000 + 90_000, t0 + Duration::from_millis(1000));
        assert!(!video.synced());
        assert_eq!(video.map(7_000_000 + 90_000, t0), 1000);
        // A sane report later still syncs it, by its small skew.
        video.sender_report(ntp + (1u64 << 31), 7_000_000 + 90_000 + 45_000, t0 + Duration::from_millis(1500));
        assert!(video.synced());
        assert_eq!(video.map(7_000_000 + 90_000 + 45_000, t0), 1500);
    }
}
