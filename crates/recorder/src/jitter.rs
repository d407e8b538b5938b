//! A small jitter buffer: RTP packets back in sequence order, with losses reported.
//!
//! Packets are held until the next one in sequence is there, or until the oldest held packet has waited `delay`;
//! then whatever is missing before it is given up as lost. Late packets (behind what was already released) and
//! duplicates are dropped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::engine::RtpIn;

/// A packet released in order, with how many packets before it were given up as lost.
#[derive(Debug, Clone)]
pub struct Released {
    pub packet: RtpIn,
    /// Extended (unwrapped) sequence number.
    pub sequence: u64,
    pub lost_before: u64,
}

#[derive(Debug)]
pub struct JitterBuffer {
    delay: Duration,
    capacity: usize,
    held: BTreeMap<u64, RtpIn>,
    /// The highest extended sequence number seen, and its 16-bit form, for unwrapping.
    highest: Option<u64>,
    /// The next sequence number to release; `None` before the first release.
    next: Option<u64>,
    pub lost: u64,
    pub late: u64,
}

impl JitterBuffer {
    /// `delay` is how long a gap is waited for; `capacity` how many packets may be held before a gap is given up
    /// early.
    pub fn new(delay: Duration, capacity: usize) -> Self {
        JitterBuffer { delay, capacity, held: BTreeMap::new(), highest: None, next: None, lost: 0, late: 0 }
    }

    fn extend(&mut self, sequence: u16) -> u64 {
        match self.highest {
            None => {
                // Start well above zero so that a packet reordered before the first one does not go negative.
                let extended = (1 << 16) + u64::from(sequence);
                self.highest = Some(extended);
                extended
            }
            Some(highest) => {
                let delta = i64::from(sequence.wrapping_sub(highest as u16) as i16);
                let extended = (highest as i64 + delta).max(0) as u64;
                if extended > highest {
                    self.highest = Some(extended);
                }
                extended
            }
        }
    }

    pub fn push(&mut self, packet: RtpIn) {
        let sequence = self.extend(packet.sequence);
        if self.next.is_some_and(|next| sequence < next) || self.held.contains_key(&sequence) {
            self.late += 1;
            return;
        }
        self.held.insert(sequence, packet);
    }

    /// The next packet that can be released at `now`, if any.
    pub fn pop(&mut self, now: Instant) -> Option<Released> {
        let (&first, _) = self.held.first_key_value()?;
        let in_order = self.next == Some(first);
        let waited = self.deadline().is_some_and(|deadline| now >= deadline);
        if !in_order && !waited && self.held.len() < self.capacity {
            return None;
        }
        let packet = self.held.remove(&first)?;
        let lost_before = self.next.map_or(0, |next| first - next);
        self.lost += lost_before;
        self.next = Some(first + 1);
        Some(Released { packet, sequence: first, lost_before })
    }

    /// When the held packets must next be looked at again (the oldest one's deadline).
    pub fn deadline(&self) -> Option<Instant> {
        self.held.values().map(|p| p.arrived + self.delay).min()
    }

    /// Releases everything still held, in order (at the end of a track).
    pub fn drain(&mut self) -> Vec<Released> {
        let mut out = Vec::new();
        while let Some((first, packet)) = self.held.pop_first() {
            let lost_before = self.next.map_or(0, |next| first - next);
            self.lost += lost_before;
            self.next = Some(first + 1);
            out.push(Released { packet, sequence: first, lost_before });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(sequence: u16, arrived: Instant) -> RtpIn {
        RtpIn { sequence, timestamp: 0, marker: false, payload: Bytes::new(), arrived }
    }

    #[test]
    fn reorders_and_reports_losses_across_wrap() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(100), 64);
        for s in [65534u16, 65535, 1, 0, 3] {
            jb.push(packet(s, t0));
        }
        // Nothing released before the first packet has waited (the start is not known yet).
        assert!(jb.pop(t0).is_none());
        let later = t0 + Duration::from_millis(100);
        let order: Vec<(u16, u64)> =
            std::iter::from_fn(|| jb.pop(later)).map(|r| (r.packet.sequence, r.lost_before)).collect();
        assert_eq!(order, vec![(65534, 0), (65535, 0), (0, 0), (1, 0), (3, 1)]);
        assert_eq!(jb.lost, 1);
        // A packet behind what was released is late.
        jb.push(packet(2, later));
        assert_eq!(jb.late, 1);
        assert!(jb.pop(later).is_none());
    }

    #[test]
    fn waits_for_a_gap_then_gives_up() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(50), 64);
        jb.push(packet(10, t0));
        assert_eq!(jb.pop(t0 + Duration::from_millis(50)).map(|r| r.packet.sequence), Some(10));
        jb.push(packet(12, t0 + Duration::from_millis(60)));
        assert!(jb.pop(t0 + Duration::from_millis(70)).is_none());
        jb.push(packet(11, t0 + Duration::from_millis(80)));
        assert_eq!(jb.pop(t0 + Duration::from_millis(80)).map(|r| r.lost_before), Some(0));
        assert_eq!(jb.pop(t0 + Duration::from_millis(80)).map(|r| r.packet.sequence), Some(12));
        jb.push(packet(14, t0 + Duration::from_millis(90)));
        assert!(jb.pop(t0 + Duration::from_millis(100)).is_none());
        let r = jb.pop(t0 + Duration::from_millis(140)).expect("given up after the delay");
        assert_eq!((r.packet.sequence, r.lost_before), (14, 1));
    }
}
