//! One track, from RTP packets to timed frames: jitter buffer, timeline, depacketizing, keyframe requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use webrtc::rtp::codecs::vp8::Vp8Packet;
use webrtc::rtp::packetizer::Depacketizer;

use crate::engine::{Codec, IncomingTrack, KeyframeRequester, MediaKind, RtpIn, TrackEvent};
use crate::jitter::JitterBuffer;
use crate::timeline::{ClockSync, TrackTimeline};

/// How long the jitter buffer waits for a missing packet (retransmissions included) before giving it up.
pub const JITTER_DELAY: Duration = Duration::from_millis(200);
/// The most packets the jitter buffer holds.
const JITTER_CAPACITY: usize = 512;
/// Keyframe requests are sent at most this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// One encoded frame, on the recording's timeline.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: MediaKind,
    pub pts_ms: i64,
    pub data: Bytes,
    pub keyframe: bool,
    /// Picture size, from a VP8 keyframe's header.
    pub size: Option<(u32, u32)>,
}

/// What a track's reader tells the segmenter.
#[derive(Debug)]
pub enum TrackMessage {
    /// A track began; `keyframes` asks its sender for a keyframe.
    Started {
        kind: MediaKind,
        keyframes: Arc<dyn KeyframeRequester>,
    },
    Frame(Frame),
    Ended(TrackStats),
}

/// What happened on a track, for the minutes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackStats {
    pub kind: Option<MediaKind>,
    pub codec: Option<String>,
    pub packets: u64,
    pub lost: u64,
    pub late: u64,
    pub frames: u64,
    /// Frames dropped because they were damaged by loss or could not be decoded without a missing keyframe.
    pub frames_dropped: u64,
    pub keyframe_requests: u64,
    /// Frames whose time was earlier than the frame before (after a sender report moved the track back), given
    /// that frame's time instead.
    pub held_back: u64,
    /// Whether RTCP sender reports put the track on the sender's wall clock.
    pub synced: bool,
}

/// Reads a track until it ends, sending its frames to `out`. `out` is bounded: when the segment writer falls
/// behind, the reader waits for it, and the track's own queue of packets, bounded too, drops and counts what
/// arrives meanwhile (`custodia_recorder::engine`), so a slow disk costs frames, never unbounded memory.
pub async fn run(mut track: IncomingTrack, sync: ClockSync, out: mpsc::Sender<TrackMessage>) {
    let mut reader = TrackReader::new(&track, sync);
    // What the reader has made and not yet handed over: at most what one packet, or one jitter release, makes.
    let mut made = vec![TrackMessage::Started { kind: track.kind, keyframes: track.keyframes.clone() }];
    if track.codec == Codec::Vp8 {
        reader.request_keyframe(&track, Instant::now());
    }
    loop {
        if !hand_over(&mut made, &out).await {
            return;
        }
        let deadline = reader.jitter.deadline();
        let event = match deadline {
            Some(deadline) => {
                match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), track.events.recv()).await {
                    Ok(event) => event,
                    Err(_) => {
                        reader.release(&track, Instant::now(), &mut made);
                        continue;
                    }
                }
            }
            None => track.events.recv().await,
        };
        match event {
            Some(TrackEvent::Rtp(packet)) => {
                reader.stats.packets += 1;
                reader.jitter.push(packet);
                reader.release(&track, Instant::now(), &mut made);
            }
            Some(TrackEvent::SenderReport(sr)) => reader.timeline.sender_report(sr.ntp_time, sr.rtp_time, sr.arrived),
            None => break,
        }
    }
    for released in reader.jitter.drain() {
        reader.take(&track, released.packet, released.lost_before, Instant::now(), &mut made);
    }
    reader.flush_frame(&mut made);
    reader.stats.lost = reader.jitter.lost;
    reader.stats.late = reader.jitter.late;
    reader.stats.synced = reader.timeline.synced();
    made.push(TrackMessage::Ended(reader.stats));
    hand_over(&mut made, &out).await;
}

/// Sends what the reader made, waiting while the writer is behind. False when the writer has gone.
async fn hand_over(made: &mut Vec<TrackMessage>, out: &mpsc::Sender<TrackMessage>) -> bool {
    for message in made.drain(..) {
        if out.send(message).await.is_err() {
            return false;
        }
    }
    true
}

struct TrackReader {
    kind: MediaKind,
    codec: Codec,
    jitter: JitterBuffer,
    timeline: TrackTimeline,
    vp8: Vp8Packet,
    /// The VP8 frame being assembled: its RTP timestamp, arrival of its first packet, and bytes so far.
    partial: Option<(u32, Instant, BytesMut)>,
    /// Frames are dropped until a keyframe comes (at the start, and after a loss).
    need_keyframe: bool,
    last_request: Option<Instant>,
    last_pts_ms: Option<i64>,
    stats: TrackStats,
}

impl TrackReader {
    fn new(track: &IncomingTrack, sync: ClockSync) -> Self {
        TrackReader {
            kind: track.kind,
            codec: track.codec,
            jitter: JitterBuffer::new(JITTER_DELAY, JITTER_CAPACITY),
            timeline: TrackTimeline::new(track.clock_rate, sync),
            vp8: Vp8Packet::default(),
            partial: None,
            need_keyframe: true,
            last_request: None,
            last_pts_ms: None,
            stats: TrackStats {
                kind: Some(track.kind),
                codec: Some(match track.codec {
                    Codec::Vp8 => "vp8".to_owned(),
                    Codec::Opus => "opus".to_owned(),
                }),
                ..TrackStats::default()
            },
        }
    }

    fn request_keyframe(&mut self, track: &IncomingTrack, now: Instant) {
        if self.last_request.is_some_and(|last| now.saturating_duration_since(last) < KEYFRAME_REQUEST_INTERVAL) {
            return;
        }
        self.last_request = Some(now);
        self.stats.keyframe_requests += 1;
        track.keyframes.request_keyframe();
    }

    fn release(&mut self, track: &IncomingTrack, now: Instant, out: &mut Vec<TrackMessage>) {
        while let Some(released) = self.jitter.pop(now) {
            self.take(track, released.packet, released.lost_before, now, out);
        }
    }

    fn take(
        &mut self,
        track: &IncomingTrack,
        packet: RtpIn,
        lost_before: u64,
        now: Instant,
        out: &mut Vec<TrackMessage>,
    ) {
        match self.codec {
            Codec::Opus => {
                if packet.payload.is_empty() {
                    return;
                }
                let pts_ms = self.timeline.map(packet.timestamp, packet.arrived);
                self.emit(Frame { kind: self.kind, pts_ms, data: packet.payload, keyframe: true, size: None }, out);
            }
            Codec::Vp8 => {
                if lost_before > 0 {
                    // The frame being assembled may have lost a piece, and later frames may refer to a lost one:
                    // drop it, and drop everything until a new keyframe.
                    if self.partial.take().is_some() {
                        self.stats.frames_dropped += 1;
                    }
                    self.need_keyframe = true;
                    self.request_keyframe(track, now);
                }
                if self.partial.as_ref().is_some_and(|(ts, _, _)| *ts != packet.timestamp) {
                    // A new timestamp with no sequence gap: the previous frame is complete even if its last
                    // packet lacked the marker.
                    self.flush_frame(out);
                }
                let Ok(data) = self.vp8.depacketize(&packet.payload) else {
                    self.partial = None;
                    self.stats.frames_dropped += 1;
                    self.need_keyframe = true;
                    self.request_keyframe(track, now);
                    return;
                };
                let starts_frame = self.vp8.s == 1 && self.vp8.pid == 0;
                match &mut self.partial {
                    Some((_, _, bytes)) => bytes.extend_from_slice(&data),
                    None if starts_frame => {
                        self.partial = Some((packet.timestamp, packet.arrived, BytesMut::from(&data[..])));
                    }
                    // The middle of a frame whose start was lost.
                    None => return,
                }
                if packet.marker {
                    self.flush_frame(out);
                }
                if self.need_keyframe {
                    self.request_keyframe(track, now);
                }
            }
        }
    }

    fn flush_frame(&mut self, out: &mut Vec<TrackMessage>) {
        let Some((timestamp, arrived, bytes)) = self.partial.take() else { return };
        let data = bytes.freeze();
        let Some(&first) = data.first() else { return };
        // VP8 frame tag: bit 0 of the first byte is 0 for a keyframe (RFC 6386, section 9.1).
        let keyframe = first & 0x01 == 0;
        let size = if keyframe { vp8_keyframe_size(&data) } else { None };
        if keyframe && size.is_none() {
            self.stats.frames_dropped += 1;
            return;
        }
        if self.need_keyframe && !keyframe {
            self.stats.frames_dropped += 1;
            return;
        }
        self.need_keyframe = false;
        let pts_ms = self.timeline.map(timestamp, arrived);
        self.emit(Frame { kind: self.kind, pts_ms, data, keyframe, size }, out);
    }

    fn emit(&mut self, mut frame: Frame, out: &mut Vec<TrackMessage>) {
        // A track's frames stay in order: when a sender report moves the track back in time, the frames that follow
        // are held at the last time until they catch up, rather than being placed before frames already taken.
        if let Some(last) = self.last_pts_ms
            && frame.pts_ms < last
        {
            frame.pts_ms = last;
            self.stats.held_back += 1;
        }
        self.last_pts_ms = Some(frame.pts_ms);
        self.stats.frames += 1;
        out.push(TrackMessage::Frame(frame));
    }
}

/// The picture size a VP8 keyframe declares: after the 3-byte frame tag, the start code `9d 01 2a`, then width
/// and height as 14-bit little-endian values (the top two bits are scaling).
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.len() < 10 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff);
    (width > 0 && height > 0).then_some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(packets: u64) -> TrackMessage {
        TrackMessage::Ended(TrackStats { packets, ..TrackStats::default() })
    }

    #[test]
    fn a_reader_holds_no_more_than_the_queue_while_the_writer_is_behind() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let (out, mut frames) = mpsc::channel(2);
            let mut made: Vec<TrackMessage> = (0..5).map(ended).collect();
            let handing = tokio::spawn(async move { (hand_over(&mut made, &out).await, out) });
            tokio::task::yield_now().await;
            // The writer has taken nothing: the channel holds its two places and no more.
            assert_eq!(frames.len(), 2);
            for n in 0..5 {
                let Some(TrackMessage::Ended(stats)) = frames.recv().await else { panic!("message {n}") };
                assert_eq!(stats.packets, n, "in order");
            }
            let (handed, out) = handing.await.unwrap();
            assert!(handed);
            drop(frames);
            assert!(!hand_over(&mut vec![ended(9)], &out).await, "the writer has gone");
        });
    }

    #[test]
    fn reads_the_size_of_a_keyframe() {
        let frame = [0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0x00];
        assert_eq!(vp8_keyframe_size(&frame), Some((320, 240)));
        assert_eq!(vp8_keyframe_size(&frame[..9]), None);
        assert_eq!(vp8_keyframe_size(&[0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2b, 0x40, 0x01, 0xf0, 0x00]), None);
    }
}
