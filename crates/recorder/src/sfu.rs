//! Relaying media between the participants of a hearing room (a selective forwarding unit), and recording each
//! participant's tracks while the hearing says so.
//!
//! The room knows nothing of hearing rules: the gateway tells it where each member is ([`Room::set_zone`]), who is
//! muted ([`Room::set_muted`]) and whom to record ([`Room::set_recorded`]), as the hearing's effects say. It relays
//! a member's packets, as they are, to every other connected member in the same zone, each on the receive slot
//! that carries the sender; nothing reaches or leaves a member with no zone (the lobby). Keyframe requests from a
//! receiver go back to the sender.
//!
//! Each packet is copied once per receiver; nothing is decoded. Sequence numbers and timestamps are rewritten per
//! receive slot where the sender's stream changes (a reconnection), so each slot stays one continuous stream; and
//! when a receiver gets a sender back after a pause (a consultation, the lobby, a data saver), its sequence numbers
//! go on without a gap, so the receiver does not take the pause for thousands of lost packets to ask again for, and
//! shows the keyframe the room asks for at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::engine::{
    Codec, EngineError, IncomingTrack, KeyframeRequester, MediaKind, OutgoingTrack, Peer, RtpIn, RtpOut, TrackEvent,
    WebRtcEngine,
};
use crate::segmenter::{Recording, RecordingSummary};

/// A 20 ms Opus frame of silence (CELT, full band, one frame). What the recorder writes while a member is muted,
/// so the muted period keeps its place on the timeline without what they said.
const OPUS_SILENCE: &[u8] = &[0xf8, 0xff, 0xfe];

/// Where a member's media flows: members with the same zone hear and see each other; `None` is nowhere.
pub type Zone = Option<u64>;

/// Starts a recording of one member's tracks. The gateway decides where the files go and how each sealed segment
/// enters custody.
pub trait RecorderFactory: Send + Sync {
    fn start_recording(&self, member: &str) -> Recording;
}

/// A member's connection, as accepted.
pub struct Connected {
    /// The SDP answer, with every candidate.
    pub answer: String,
    /// Resolves if the connection fails for good (the peer vanished); never, if it does not.
    pub failed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").finish_non_exhaustive()
    }
}

/// A connection negotiated for an offer ([`Room::accept`]) that no member has yet ([`Room::attach`]).
pub struct Offered {
    accepted: crate::engine::ParticipantPeer,
    incoming: mpsc::UnboundedReceiver<IncomingTrack>,
    sends: bool,
}

impl Offered {
    /// Closes the connection, for an offer whose sender was not let in after all.
    pub async fn close(self) {
        let _ = self.accepted.peer.close().await;
    }
}

impl std::fmt::Debug for Offered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offered").field("sends", &self.sends).finish_non_exhaustive()
    }
}

/// A hearing room's media plane.
#[derive(Clone)]
pub struct Room {
    engine: Arc<WebRtcEngine>,
    slots: usize,
    recorders: Arc<dyn RecorderFactory>,
    state: Arc<Mutex<RoomState>>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("slots", &self.slots).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct RoomState {
    members: BTreeMap<String, Member>,
    next_connection: u64,
    /// Recordings being closed, with whose they were.
    closing: Vec<JoinHandle<(String, RecordingSummary)>>,
}

struct Member {
    slot: usize,
    zone: Zone,
    muted: Arc<AtomicBool>,
    /// The senders (by slot) whose video this member takes; `None`: everyone's. Audio always flows.
    video_from: Option<BTreeSet<usize>>,
    connection: Option<Connection>,
    recording: Option<Recording>,
    /// The packets that arrived on their earlier connections, by kind ([`Room::counters`]).
    arrived_before: BTreeMap<MediaKind, u64>,
}

impl Member {
    /// Keeps the count of what arrived on a connection that ends.
    fn keep_counts(&mut self, connection: &Connection) {
        for source in &connection.sources {
            *self.arrived_before.entry(source.kind).or_default() += source.arrived.load(Ordering::Relaxed);
        }
    }
}

struct Connection {
    id: u64,
    peer: Arc<Peer>,
    /// This member's receive slots, each track with its own stream rewriting.
    receive: Vec<[Arc<Output>; 2]>,
    sources: Vec<Arc<Source>>,
    /// Whether the offer sends anything (a microphone or a camera); a receive-only one brings no packets.
    sends: bool,
}

/// One incoming track of a member's current connection.
struct Source {
    kind: MediaKind,
    codec: Codec,
    clock_rate: u32,
    ssrc: u32,
    keyframes: Arc<dyn KeyframeRequester>,
    muted: Arc<AtomicBool>,
    outputs: RwLock<Vec<Arc<Output>>>,
    /// A copy of everything that arrives goes here while the member is recorded.
    recorder: Mutex<Option<mpsc::Sender<TrackEvent>>>,
    /// RTP packets that arrived on this track.
    arrived: AtomicU64,
}

/// One track a member receives on, and the rewriting that keeps it one stream when its source changes.
struct Output {
    track: Arc<OutgoingTrack>,
    rewrite: Mutex<Rewrite>,
    /// RTP packets forwarded on this track.
    forwarded: AtomicU64,
}

#[derive(Default)]
struct Rewrite {
    source: Option<u32>,
    sequence_delta: u16,
    timestamp_delta: u32,
    last: Option<(u16, u32)>,
    /// The source was cut off and is forwarded again: its next packet follows the last one sent.
    resuming: bool,
}

impl Rewrite {
    fn map(&mut self, source: u32, sequence: u16, timestamp: u32) -> (u16, u32) {
        if self.source != Some(source) {
            // A new stream continues where the last one stopped.
            (self.sequence_delta, self.timestamp_delta) = match self.last {
                Some((last_sequence, last_timestamp)) => (
                    last_sequence.wrapping_add(1).wrapping_sub(sequence),
                    last_timestamp.wrapping_add(1).wrapping_sub(timestamp),
                ),
                None => (0, 0),
            };
            self.source = Some(source);
        } else if self.resuming
            && let Some((last_sequence, _)) = self.last
        {
            // The same stream after a pause: no gap in the numbering, and its own clock, so the pause shows as
            // the time that passed.
            self.sequence_delta = last_sequence.wrapping_add(1).wrapping_sub(sequence);
        }
        self.resuming = false;
        let mapped = (sequence.wrapping_add(self.sequence_delta), timestamp.wrapping_add(self.timestamp_delta));
        self.last = Some(mapped);
        mapped
    }
}

impl Output {
    async fn forward(&self, source: u32, packet: &RtpIn) {
        let (sequence, timestamp) =
            self.rewrite.lock().unwrap_or_else(|p| p.into_inner()).map(source, packet.sequence, packet.timestamp);
        let out = RtpOut { sequence, timestamp, marker: packet.marker, payload: packet.payload.clone() };
        self.track.write(&out).await;
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks this output as cut off from its source, which may come back later.
    fn pause(&self) {
        self.rewrite.lock().unwrap_or_else(|p| p.into_inner()).resuming = true;
    }
}

impl Source {
    async fn relay(self: Arc<Self>, mut events: mpsc::Receiver<TrackEvent>) {
        while let Some(event) = events.recv().await {
            let muted = self.kind == MediaKind::Audio && self.muted.load(Ordering::Relaxed);
            if let TrackEvent::Rtp(_) = &event {
                self.arrived.fetch_add(1, Ordering::Relaxed);
            }
            if let TrackEvent::Rtp(packet) = &event
                && !muted
            {
                let outputs = self.outputs.read().unwrap_or_else(|p| p.into_inner()).clone();
                for output in &outputs {
                    output.forward(self.ssrc, packet).await;
                }
            }
            let recorder = self.recorder.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(recorder) = recorder {
                let event = match event {
                    TrackEvent::Rtp(packet) if muted => {
                        TrackEvent::Rtp(RtpIn { payload: Bytes::from_static(OPUS_SILENCE), ..packet })
                    }
                    event => event,
                };
                // The recording may have just been stopped; that is not this track's concern. A recording that
                // falls behind loses packets (counted), never the relay's pace.
                let _ = crate::engine::enqueue(&recorder, event);
            }
        }
    }

    /// Hands a copy of this track to a recording.
    fn record_into(&self, recording: &Recording) {
        let (events, rx) = crate::engine::track_queue();
        let track = IncomingTrack {
            kind: self.kind,
            codec: self.codec,
            clock_rate: self.clock_rate,
            ssrc: self.ssrc,
            events: rx,
            keyframes: self.keyframes.clone(),
        };
        if recording.track_sender().send(track).is_ok() {
            *self.recorder.lock().unwrap_or_else(|p| p.into_inner()) = Some(events);
        }
    }

    fn stop_recording(&self) {
        // Dropping the sender ends the recording's copy of the track.
        self.recorder.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl Room {
    /// A room whose members each receive up to `slots` others.
    pub fn new(engine: Arc<WebRtcEngine>, slots: usize, recorders: Arc<dyn RecorderFactory>) -> Self {
        Room { engine, slots, recorders, state: Arc::default() }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a member who will arrive on receive slot `slot` of everyone else. They start with no zone.
    pub fn add_member(&self, member: &str, slot: usize) {
        self.lock().members.entry(member.to_owned()).or_insert_with(|| Member {
            slot,
            zone: None,
            muted: Arc::default(),
            video_from: None,
            connection: None,
            recording: None,
            arrived_before: BTreeMap::new(),
        });
    }

    /// Forgets a member entirely (one whose arrival was refused), closing their connection if they had one.
    pub async fn remove_member(&self, member: &str) {
        let removed = {
            let mut state = self.lock();
            let removed = state.members.remove(member);
            route(&mut state);
            removed
        };
        if let Some(connection) = removed.and_then(|entry| entry.connection) {
            for source in &connection.sources {
                source.stop_recording();
            }
            let _ = connection.peer.close().await;
        }
    }

    /// How many members the room has, connected or not.
    pub fn member_count(&self) -> usize {
        self.lock().members.len()
    }

    /// Takes a member's offer (docs/hearing-room.md) and returns the answer, and a future that resolves if the
    /// connection fails. A member has one connection: a new one replaces the old, which is closed.
    pub async fn connect(&self, member: &str, offer_sdp: &str) -> Result<Connected, EngineError> {
        let offered = self.accept(offer_sdp).await?;
        self.attach(member, offered).await
    }

    /// Negotiates an offer with the media engine, for no member yet, so that a gateway can find out whether an
    /// offer is acceptable before it lets its sender into anything. [`Room::attach`] then gives the connection to
    /// a member; one that is not given must be closed ([`Offered::close`]).
    pub async fn accept(&self, offer_sdp: &str) -> Result<Offered, EngineError> {
        let (tracks, incoming) = mpsc::unbounded_channel();
        let sends = offer_sends(offer_sdp);
        let accepted = self.engine.accept_participant(offer_sdp, self.slots, tracks).await?;
        Ok(Offered { accepted, incoming, sends })
    }

    /// Gives a connection [`Room::accept`] made to `member`, replacing (and closing) theirs, if any. Fails, closing
    /// the connection, if `member` is not in the room.
    pub async fn attach(&self, member: &str, offered: Offered) -> Result<Connected, EngineError> {
        let Offered { mut accepted, mut incoming, sends } = offered;
        let answer = accepted.peer.answer_sdp().to_owned();
        let failed = Box::pin(accepted.peer.failed());
        let peer = Arc::new(accepted.peer);
        let receive = accepted
            .slots
            .into_iter()
            .map(|slot| {
                [slot.audio, slot.video]
                    .map(|track| Arc::new(Output { track, rewrite: Mutex::default(), forwarded: AtomicU64::new(0) }))
            })
            .collect();
        let connected = {
            let mut state = self.lock();
            let id = state.next_connection;
            state.next_connection += 1;
            let replaced = state.members.get_mut(member).map(|entry| {
                let replaced = entry.connection.replace(Connection {
                    id,
                    peer: peer.clone(),
                    receive,
                    sources: Vec::new(),
                    sends,
                });
                if let Some(old) = &replaced {
                    entry.keep_counts(old);
                }
                replaced
            });
            route(&mut state);
            replaced.map(|replaced| (id, replaced))
        };
        let Some((id, replaced)) = connected else {
            let _ = peer.close().await;
            return Err(EngineError::Engine("not a member of this room".to_owned()));
        };
        if let Some(old) = replaced {
            let _ = old.peer.close().await;
        }
        let room = self.clone();
        let member = member.to_owned();
        tokio::spawn(async move {
            while let Some(track) = incoming.recv().await {
                room.add_source(&member, id, track);
            }
        });
        Ok(Connected { answer, failed })
    }

    fn add_source(&self, member: &str, connection: u64, track: IncomingTrack) {
        let mut state = self.lock();
        let Some(entry) = state.members.get_mut(member) else { return };
        let Some(current) = entry.connection.as_mut().filter(|c| c.id == connection) else { return };
        let source = Arc::new(Source {
            kind: track.kind,
            codec: track.codec,
            clock_rate: track.clock_rate,
            ssrc: track.ssrc,
            keyframes: track.keyframes.clone(),
            muted: entry.muted.clone(),
            outputs: RwLock::default(),
            recorder: Mutex::new(None),
            arrived: AtomicU64::new(0),
        });
        if let Some(recording) = &entry.recording {
            source.record_into(recording);
        }
        current.sources.push(source.clone());
        route(&mut state);
        tokio::spawn(source.relay(track.events));
    }

    /// Moves a member: `None` stops their media both ways.
    pub fn set_zone(&self, member: &str, zone: Zone) {
        let mut state = self.lock();
        if let Some(entry) = state.members.get_mut(member) {
            entry.zone = zone;
        }
        route(&mut state);
    }

    /// Which senders' video a member takes, by their slots (`None`: everyone's): a participant on a poor network
    /// keeps the audio of all and the video of few. It changes only what this member receives.
    pub fn set_video_from(&self, member: &str, slots: Option<BTreeSet<usize>>) {
        let mut state = self.lock();
        if let Some(entry) = state.members.get_mut(member) {
            entry.video_from = slots;
        }
        route(&mut state);
    }

    /// A muted member's audio is not relayed; the recorder gets silence in its place.
    pub fn set_muted(&self, member: &str, muted: bool) {
        if let Some(entry) = self.lock().members.get(member) {
            entry.muted.store(muted, Ordering::Relaxed);
        }
    }

    /// Starts or stops recording a member's tracks. A stopped recording is sealed in the background; see
    /// [`Room::finish_recordings`].
    pub fn set_recorded(&self, member: &str, recorded: bool) {
        let mut state = self.lock();
        let Some(entry) = state.members.get_mut(member) else { return };
        let sources = entry.connection.iter().flat_map(|c| c.sources.iter());
        match (recorded, entry.recording.is_some()) {
            (true, false) => {
                let recording = self.recorders.start_recording(member);
                for source in sources {
                    source.record_into(&recording);
                }
                entry.recording = Some(recording);
            }
            (false, true) => {
                for source in sources {
                    source.stop_recording();
                }
                if let Some(recording) = entry.recording.take() {
                    let member = member.to_owned();
                    state.closing.push(tokio::spawn(async move { (member, recording.stop().await) }));
                }
            }
            _ => {}
        }
    }

    /// How many RTP packets have arrived from a member on their current connection, all tracks together; `None`
    /// while they have no connection, or one that sends nothing (no microphone, no camera). The gateway watches it
    /// to notice media that has stopped.
    pub fn packets_received(&self, member: &str) -> Option<u64> {
        let state = self.lock();
        let connection = state.members.get(member)?.connection.as_ref().filter(|connection| connection.sends)?;
        Some(connection.sources.iter().map(|source| source.arrived.load(Ordering::Relaxed)).sum())
    }

    /// Closes a member's connection (they left, were removed, or the hearing ended). They stay a member and may
    /// connect again.
    pub async fn disconnect(&self, member: &str) {
        let connection = {
            let mut state = self.lock();
            let connection = state.members.get_mut(member).and_then(|entry| {
                let connection = entry.connection.take();
                if let Some(connection) = &connection {
                    entry.keep_counts(connection);
                }
                connection
            });
            route(&mut state);
            connection
        };
        if let Some(connection) = connection {
            for source in &connection.sources {
                source.stop_recording();
            }
            let _ = connection.peer.close().await;
        }
    }

    /// What the room has relayed so far, counted in RTP packets: for monitoring, and for tests that judge the
    /// routing by what the gateway did rather than by what a busy peer managed to decode.
    pub fn counters(&self) -> RoomCounters {
        let state = self.lock();
        let mut counters = RoomCounters::default();
        for (name, member) in &state.members {
            for (kind, arrived) in &member.arrived_before {
                *counters.arrived.entry((name.clone(), *kind)).or_default() += arrived;
            }
            let Some(connection) = &member.connection else { continue };
            for source in &connection.sources {
                *counters.arrived.entry((name.clone(), source.kind)).or_default() +=
                    source.arrived.load(Ordering::Relaxed);
            }
            for (sender_name, sender) in &state.members {
                let Some(pair) = connection.receive.get(sender.slot).filter(|_| sender_name != name) else { continue };
                for (kind, output) in [MediaKind::Audio, MediaKind::Video].into_iter().zip(pair) {
                    counters
                        .forwarded
                        .insert((name.clone(), sender_name.clone(), kind), output.forwarded.load(Ordering::Relaxed));
                }
            }
        }
        counters
    }

    /// Waits for every stopped recording to be sealed and returns their summaries, by member.
    pub async fn finish_recordings(&self) -> Vec<(String, RecordingSummary)> {
        let closing = std::mem::take(&mut self.lock().closing);
        let mut summaries = Vec::new();
        for handle in closing {
            match handle.await {
                Ok(done) => summaries.push(done),
                Err(e) => tracing::error!(error = %e, "a recording task failed"),
            }
        }
        summaries
    }
}

/// Whether an SDP offer sends media: one of its media sections is `sendonly` or `sendrecv` (a section without a
/// direction is `sendrecv`, RFC 8866 6.7).
fn offer_sends(sdp: &str) -> bool {
    let mut sends = false;
    let mut in_media = false;
    let mut direction: Option<&str> = None;
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            sends |= in_media && matches!(direction, None | Some("sendonly" | "sendrecv"));
            in_media = !line.starts_with("m=application");
            direction = None;
        } else if let Some(value) = line.strip_prefix("a=")
            && matches!(value, "sendonly" | "sendrecv" | "recvonly" | "inactive")
        {
            direction = Some(value);
        }
    }
    sends || (in_media && matches!(direction, None | Some("sendonly" | "sendrecv")))
}

/// RTP packets counted by a [`Room`]: what arrived from each member over all their connections (so a member who
/// left is still counted), and what was forwarded on each member's current connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomCounters {
    /// By (member, kind): the packets that arrived from the member's tracks of that kind, on every connection.
    pub arrived: BTreeMap<(String, MediaKind), u64>,
    /// By (receiver, sender, kind): the packets of the sender's track forwarded to the receiver.
    pub forwarded: BTreeMap<(String, String, MediaKind), u64>,
}

/// Recomputes who receives whom: every source of a connected member with a zone goes to the matching receive
/// slot of every other connected member in the same zone. New video receivers get a keyframe asked for.
fn route(state: &mut RoomState) {
    let members: Vec<_> = state.members.values().collect();
    for sender in &members {
        let Some(connection) = &sender.connection else { continue };
        for source in &connection.sources {
            let index = match source.kind {
                MediaKind::Audio => 0,
                MediaKind::Video => 1,
            };
            let wanted: Vec<Arc<Output>> = match sender.zone {
                None => Vec::new(),
                Some(zone) => members
                    .iter()
                    .filter(|receiver| !std::ptr::eq(**receiver, *sender) && receiver.zone == Some(zone))
                    .filter(|receiver| {
                        source.kind == MediaKind::Audio
                            || receiver.video_from.as_ref().is_none_or(|from| from.contains(&sender.slot))
                    })
                    .filter_map(|receiver| receiver.connection.as_ref()?.receive.get(sender.slot))
                    .map(|pair| pair[index].clone())
                    .collect(),
            };
            let mut outputs = source.outputs.write().unwrap_or_else(|p| p.into_inner());
            let added = wanted.iter().any(|w| !outputs.iter().any(|o| Arc::ptr_eq(o, w)));
            for removed in outputs.iter().filter(|o| !wanted.iter().any(|w| Arc::ptr_eq(o, w))) {
                removed.pause();
            }
            for output in &wanted {
                output.track.set_upstream(Some(source.keyframes.clone()));
            }
            *outputs = wanted;
            if added && source.kind == MediaKind::Video {
                source.keyframes.request_keyframe();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_sends_when_one_of_its_media_sections_does() {
        let session = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n";
        let section =
            |kind: &str, direction: &str| format!("m={kind} 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:x\r\na={direction}\r\n");
        let receive_only = format!(
            "{session}{}{}{}",
            section("audio", "inactive"),
            section("video", "inactive"),
            section("audio", "recvonly")
        );
        assert!(!offer_sends(&receive_only));
        let microphone = format!(
            "{session}{}{}{}",
            section("audio", "sendonly"),
            section("video", "inactive"),
            section("video", "recvonly")
        );
        assert!(offer_sends(&microphone));
        let camera_last = format!("{session}{}{}", section("audio", "recvonly"), section("video", "sendrecv"));
        assert!(offer_sends(&camera_last));
        // No direction means sendrecv; a data channel sends no media.
        assert!(offer_sends(&format!("{session}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n")));
        assert!(!offer_sends(&format!("{session}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n")));
    }

    #[test]
    fn a_slot_stays_one_stream_across_a_change_of_source() {
        let mut rewrite = Rewrite::default();
        assert_eq!(rewrite.map(1, 100, 9_000), (100, 9_000));
        assert_eq!(rewrite.map(1, 101, 12_000), (101, 12_000));
        // The sender reconnects: a new SSRC, new random sequence and timestamp bases.
        assert_eq!(rewrite.map(2, 60_000, 5), (102, 12_001));
        assert_eq!(rewrite.map(2, 60_001, 3_005), (103, 15_001));
        // Wrapping is arithmetic modulo 2^16 and 2^32.
        assert_eq!(rewrite.map(3, 0, u32::MAX), (104, 15_002));
        assert_eq!(rewrite.map(3, 1, 2_999), (105, 18_002));
    }

    #[test]
    fn a_source_that_comes_back_after_a_pause_goes_on_without_a_gap() {
        let mut rewrite = Rewrite::default();
        assert_eq!(rewrite.map(1, 100, 9_000), (100, 9_000));
        assert_eq!(rewrite.map(1, 101, 12_000), (101, 12_000));
        // Cut off (a consultation) while the sender went on: 500 packets and 10 s of 90 kHz clock not forwarded.
        rewrite.resuming = true;
        assert_eq!(rewrite.map(1, 602, 912_000), (102, 912_000));
        assert_eq!(rewrite.map(1, 603, 915_000), (103, 915_000));
        // Without a pause, a gap is real loss and stays visible to the receiver.
        assert_eq!(rewrite.map(1, 610, 918_000), (110, 918_000));
    }
}
