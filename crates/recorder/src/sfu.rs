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
//!
//! A member under a protective order ([`Room::set_protection`]) has each masked kind of their media split in two:
//! the original goes only to the members the order names, and everyone else in their place gets what a masking
//! pipeline ([`crate::masking`]) makes of it, or nothing while there is none (fail closed). Each receive track
//! admits exactly one source at a time, set under the room's lock when routing changes and checked before every
//! packet is written, so a change of order cannot let a packet of the original through to a track that has just
//! been switched to the masked feed. The recorder always takes the original.
//!
//! A listener of a simultaneous interpretation channel ([`Room::set_audio_from`]) hears the interpreter as they
//! speak and the floor ducked beneath: each floor voice reaches them through a pipeline that lowers its level (and
//! masks it too, if an order masks it for them). A pipeline's product is a [`Treatment`] of its source; receive
//! tracks admit it like any source, so what a track takes is always one source in one treatment.

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
use crate::masking::{MaskPipe, MaskedFrame, MaskerFactory, ToMasker, Treatment};
use crate::segmenter::{Recording, RecordingSummary};
use crate::timeline::ClockSync;
use crate::track::TrackMessage;

/// A 20 ms Opus frame of silence (CELT, full band, one frame). What the recorder writes while a member is muted,
/// so the muted period keeps its place on the timeline without what they said.
const OPUS_SILENCE: &[u8] = &[0xf8, 0xff, 0xfe];

/// Where a member's media flows: members with the same zone hear and see each other; `None` is nowhere.
pub type Zone = Option<u64>;

/// How a protected member's media reaches the others ([`Room::set_protection`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protection {
    /// The others get a masked picture, never the camera's.
    pub mask_video: bool,
    /// The others get an altered voice, never the microphone's.
    pub alter_voice: bool,
    /// The members who get the original (the court, and whom the order adds).
    pub original_to: BTreeSet<String>,
}

impl Protection {
    fn masks(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.alter_voice,
            MediaKind::Video => self.mask_video,
        }
    }
}

/// Whose audio a member hears ([`Room::set_audio_from`]); anyone in neither set is not heard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudioFrom {
    /// Heard as they speak.
    pub full: BTreeSet<String>,
    /// Heard through a ducking pipeline, beneath those heard in full.
    pub ducked: BTreeSet<String>,
}

/// The most frames waiting for a masking pipeline: past it, frames are dropped (and video waits for the next
/// keyframe), so a pipeline that falls behind costs its receivers frames, never memory or delay.
const MASK_QUEUE: usize = 8;

/// A masked frame older than this when it comes back (counted from when its original was handed over) is not
/// sent: a pipeline that falls this far behind shows nothing rather than the past.
const MASK_STALE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// A pipeline that has been handed frames and has made nothing for this long is taken for hung: it is stopped
/// (its process killed) and another started.
const MASK_HUNG_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// How long the room waits before starting a pipeline again after one stopped or could not start.
const MASK_RESTART_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// The RTP clock of an Opus packet of 20 ms, and of VP8 per millisecond.
const OPUS_FRAME_TICKS: u32 = 960;
const VP8_TICKS_PER_MS: i64 = 90;

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
    /// Starts the masking pipelines of protected members; with none, nobody but the privileged gets their media.
    maskers: Option<Arc<dyn MaskerFactory>>,
    /// What the room's log lines name it by (the hearing), so that an operator knows whose listeners a failing
    /// pipeline leaves without.
    label: Arc<str>,
    members: BTreeMap<String, Member>,
    next_connection: u64,
    /// Recordings being closed, with whose they were.
    closing: Vec<JoinHandle<(String, RecordingSummary)>>,
}

struct Member {
    slot: usize,
    zone: Zone,
    muted: Arc<AtomicBool>,
    /// The senders (by slot) whose video this member takes; `None`: everyone's.
    video_from: Option<BTreeSet<usize>>,
    /// The members whose audio this member hears, and how; `None`: everyone's, in full (an interpretation
    /// channel's listener hears its interpreter in full and the floor ducked).
    audio_from: Option<AudioFrom>,
    /// A protective order over this member's media.
    protection: Option<Protection>,
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
    /// The pipelines' versions of this track: masked while a protective order masks its kind, ducked while a
    /// listener of an interpretation channel hears it beneath the interpreter.
    derived: Mutex<BTreeMap<Treatment, Arc<DerivedFeed>>>,
    /// RTP packets that arrived on this track.
    arrived: AtomicU64,
}

/// One track a member receives on, and the rewriting that keeps it one stream when its source changes.
struct Output {
    track: Arc<OutgoingTrack>,
    rewrite: Mutex<Rewrite>,
    /// RTP packets forwarded on this track.
    forwarded: AtomicU64,
    /// Of those, packets of a masked feed.
    forwarded_masked: AtomicU64,
    /// Of those, packets of a ducked feed.
    forwarded_ducked: AtomicU64,
}

/// A source as a receive track knows it: an original track by its SSRC, a pipeline's feed by its own number
/// above every SSRC.
type SourceKey = u64;

/// Numbers of pipelines' feeds, above every SSRC.
static NEXT_DERIVED_FEED: AtomicU64 = AtomicU64::new(1 << 32);

#[derive(Default)]
struct Rewrite {
    /// The one source whose packets this track takes now; set by the routing, under the room's lock.
    admitted: Option<SourceKey>,
    /// A video track that has just been given another source sends nothing of it before a keyframe: what came
    /// before would be decoded on the last source's pictures (a masked one, or another sender's).
    awaiting_keyframe: bool,
    source: Option<SourceKey>,
    sequence_delta: u16,
    timestamp_delta: u32,
    last: Option<(u16, u32)>,
    /// The source was cut off and is forwarded again: its next packet follows the last one sent.
    resuming: bool,
}

impl Rewrite {
    fn map(&mut self, source: SourceKey, sequence: u16, timestamp: u32) -> (u16, u32) {
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
    fn new(track: Arc<OutgoingTrack>) -> Self {
        Output {
            track,
            rewrite: Mutex::default(),
            forwarded: AtomicU64::new(0),
            forwarded_masked: AtomicU64::new(0),
            forwarded_ducked: AtomicU64::new(0),
        }
    }

    /// Sends `packet` of `source` (in `treatment`), unless this track no longer admits that source (the routing
    /// changed since the packet's list of receivers was taken).
    async fn forward(&self, source: SourceKey, treatment: Treatment, packet: &RtpIn) {
        let (sequence, timestamp) = {
            let mut rewrite = self.rewrite.lock().unwrap_or_else(|p| p.into_inner());
            if rewrite.admitted != Some(source) {
                return;
            }
            if rewrite.awaiting_keyframe {
                if !crate::engine::vp8_starts_keyframe(&packet.payload) {
                    return;
                }
                rewrite.awaiting_keyframe = false;
            }
            rewrite.map(source, packet.sequence, packet.timestamp)
        };
        let out = RtpOut { sequence, timestamp, marker: packet.marker, payload: packet.payload.clone() };
        self.track.write(&out).await;
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        if treatment.mask {
            self.forwarded_masked.fetch_add(1, Ordering::Relaxed);
        }
        if treatment.duck {
            self.forwarded_ducked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lets this track take `source`'s packets, and no other's; a video track given another source than the
    /// last it took waits for that source's next keyframe.
    fn admit(&self, source: SourceKey) {
        let mut rewrite = self.rewrite.lock().unwrap_or_else(|p| p.into_inner());
        if self.track.kind() == MediaKind::Video && rewrite.source.is_some_and(|last| last != source) {
            rewrite.awaiting_keyframe = true;
        }
        rewrite.admitted = Some(source);
    }

    /// Marks this output as cut off from its source, which may come back later.
    fn pause(&self) {
        let mut rewrite = self.rewrite.lock().unwrap_or_else(|p| p.into_inner());
        rewrite.resuming = true;
        rewrite.admitted = None;
    }
}

/// A pipeline's version of one source track (masked, ducked or both): the room's copy of its packets goes through
/// a track reader (frames reassembled, losses answered with keyframe requests) to the pipeline, and what comes
/// back is packetized for the receivers who get that treatment. Dropping it stops everything (the pipeline with
/// it).
struct DerivedFeed {
    key: SourceKey,
    treatment: Treatment,
    outputs: RwLock<Vec<Arc<Output>>>,
    /// The copy of the source's packets.
    packets: mpsc::Sender<TrackEvent>,
    /// Receivers' keyframe requests, for the pipeline.
    keyframes: Arc<MaskedKeyframes>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DerivedFeed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A receiver of a masked feed asks for a keyframe: the pipeline makes one, spaced like the requests to a sender, so
/// that one receiver asking without end does not make every masked frame a keyframe.
#[derive(Debug, Default)]
struct MaskedKeyframes {
    wanted: Arc<tokio::sync::Notify>,
    spacing: crate::engine::SpacedRequests,
}

impl KeyframeRequester for MaskedKeyframes {
    fn request_keyframe(&self) {
        let wanted = self.wanted.clone();
        self.spacing.request(move || wanted.notify_one());
    }
}

impl DerivedFeed {
    fn start(source: &Source, treatment: Treatment, maskers: Arc<dyn MaskerFactory>, room: Arc<str>) -> Arc<Self> {
        let (packets, events) = crate::engine::track_queue();
        let (frames, frames_in) = mpsc::channel(MASK_QUEUE);
        let track = IncomingTrack {
            kind: source.kind,
            codec: source.codec,
            clock_rate: source.clock_rate,
            ssrc: source.ssrc,
            events,
            keyframes: source.keyframes.clone(),
        };
        let reader = tokio::spawn(crate::track::run(track, ClockSync::new(std::time::Instant::now()), frames));
        let keyframes = Arc::new(MaskedKeyframes::default());
        Arc::new_cyclic(|feed: &std::sync::Weak<DerivedFeed>| {
            let made_by = PipelineSpec { room, maskers, kind: source.kind, treatment };
            let masking = tokio::spawn(run_derived_feed(
                feed.clone(),
                made_by,
                frames_in,
                keyframes.clone(),
                source.keyframes.clone(),
            ));
            DerivedFeed {
                key: NEXT_DERIVED_FEED.fetch_add(1, Ordering::Relaxed),
                treatment,
                outputs: RwLock::default(),
                packets,
                keyframes,
                tasks: vec![reader, masking],
            }
        })
    }

    async fn send(&self, packet: &RtpIn) {
        let outputs = self.outputs.read().unwrap_or_else(|p| p.into_inner()).clone();
        for output in &outputs {
            output.forward(self.key, self.treatment, packet).await;
        }
    }
}

/// Feeds a source's frames to a masking pipeline and sends on what it makes, starting a new pipeline whenever one
/// stops. Frames that do not fit the pipeline's queue are dropped (video then waits for a keyframe, asked of the
/// sender); masked frames that come back too late are not sent.
async fn run_derived_feed(
    feed: std::sync::Weak<DerivedFeed>,
    made_by: PipelineSpec,
    mut frames: mpsc::Receiver<TrackMessage>,
    wanted: Arc<MaskedKeyframes>,
    source_keyframes: Arc<dyn KeyframeRequester>,
) {
    let PipelineSpec { room, maskers, kind, treatment } = made_by;
    let mut sequence: u16 = rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u16;
    let mut audio_timestamp: u32 = rand_core::RngCore::next_u32(&mut rand_core::OsRng);
    let has_receivers = |feed: &std::sync::Weak<DerivedFeed>| {
        feed.upgrade().is_some_and(|feed| !feed.outputs.read().unwrap_or_else(|p| p.into_inner()).is_empty())
    };
    loop {
        // A ducked feed nobody has received for a while has no pipeline: it starts one when a listener comes.
        if treatment.duck && !has_receivers(&feed) {
            loop {
                tokio::select! {
                    message = frames.recv() => if message.is_none() { return },
                    () = tokio::time::sleep(IDLE_POLL) => if has_receivers(&feed) { break },
                }
            }
        }
        let MaskPipe { input, mut output } = match maskers.start(kind, treatment) {
            Ok(pipe) => pipe,
            Err(error) => {
                tracing::warn!(
                    %room, ?kind, ?treatment, error = %crate::Chain(&error),
                    "a pipeline could not start; its receivers get nothing"
                );
                tokio::time::sleep(MASK_RESTART_DELAY).await;
                continue;
            }
        };
        // A new pipeline's decoder starts at a keyframe.
        let mut need_keyframe = kind == MediaKind::Video;
        if need_keyframe {
            source_keyframes.request_keyframe();
        }
        let mut handed: std::collections::VecDeque<(i64, std::time::Instant)> = std::collections::VecDeque::new();
        let mut last_made = std::time::Instant::now();
        let mut watchdog = tokio::time::interval(MASK_HUNG_AFTER / 3);
        let mut unreceived_since: Option<std::time::Instant> = None;
        let idle = loop {
            tokio::select! {
                _ = watchdog.tick() => {
                    let waiting = handed.back().is_some_and(|(_, at)| *at > last_made);
                    if waiting && last_made.elapsed() > MASK_HUNG_AFTER {
                        tracing::warn!(%room, ?kind, ?treatment, "a pipeline made nothing for 3 s and is stopped");
                        break false;
                    }
                    // A ducked feed keeps its pipeline a while after its last listener went (one switching back
                    // and forth costs no process each time), then lets it go.
                    if treatment.duck {
                        match (has_receivers(&feed), unreceived_since) {
                            (true, _) => unreceived_since = None,
                            (false, None) => unreceived_since = Some(std::time::Instant::now()),
                            (false, Some(since)) if since.elapsed() > DUCKED_IDLE_HOLD => break true,
                            (false, Some(_)) => {}
                        }
                    }
                }
                message = frames.recv() => {
                    let frame = match message {
                        None => return,
                        Some(TrackMessage::Frame(frame)) => frame,
                        Some(_) => continue,
                    };
                    if need_keyframe && !frame.keyframe {
                        continue;
                    }
                    match input.try_send(ToMasker::Frame { pts_ms: frame.pts_ms, data: frame.data }) {
                        Ok(()) => {
                            need_keyframe = false;
                            handed.push_back((frame.pts_ms, std::time::Instant::now()));
                            if handed.len() > 4 * MASK_QUEUE {
                                handed.pop_front();
                            }
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            if kind == MediaKind::Video {
                                need_keyframe = true;
                                source_keyframes.request_keyframe();
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break false,
                    }
                }
                () = wanted.wanted.notified() => {
                    let _ = input.try_send(ToMasker::Keyframe);
                }
                masked = output.recv() => {
                    let Some(masked) = masked else { break false };
                    last_made = std::time::Instant::now();
                    while handed.front().is_some_and(|(pts, _)| *pts < masked.pts_ms) {
                        handed.pop_front();
                    }
                    let stale = handed
                        .front()
                        .filter(|(pts, _)| *pts == masked.pts_ms)
                        .is_some_and(|(_, at)| at.elapsed() > MASK_STALE_AFTER);
                    if stale {
                        // What follows it may refer to it: start again from a keyframe.
                        let _ = input.try_send(ToMasker::Keyframe);
                        continue;
                    }
                    let Some(feed) = feed.upgrade() else { return };
                    send_masked(&feed, kind, masked, &mut sequence, &mut audio_timestamp).await;
                }
            }
        };
        // Letting go of both ends stops the pipeline, a hung one included.
        drop((input, output));
        if !idle {
            tracing::warn!(%room, ?kind, ?treatment, "a pipeline stopped; its receivers get nothing until another runs");
            tokio::time::sleep(MASK_RESTART_DELAY).await;
        }
    }
}

/// What a feed's pipelines are: which room's (for the log), started by whom, making what of which kind of track.
struct PipelineSpec {
    room: Arc<str>,
    maskers: Arc<dyn MaskerFactory>,
    kind: MediaKind,
    treatment: Treatment,
}

/// How long a ducked feed keeps its pipeline with no listener.
const DUCKED_IDLE_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// How often an idle ducked feed looks for a listener.
const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Packetizes one frame a pipeline made and sends it to the feed's receivers.
async fn send_masked(feed: &DerivedFeed, kind: MediaKind, masked: MaskedFrame, sequence: &mut u16, audio: &mut u32) {
    let arrived = std::time::Instant::now();
    let (timestamp, payloads) = match kind {
        MediaKind::Audio => {
            *audio = audio.wrapping_add(OPUS_FRAME_TICKS);
            (*audio, vec![masked.data])
        }
        // The 90 kHz clock, from the frame's time (it wraps as RTP's does).
        MediaKind::Video => {
            ((masked.pts_ms.wrapping_mul(VP8_TICKS_PER_MS)) as u32, crate::engine::vp8_payloads(&masked.data))
        }
    };
    let last = payloads.len().saturating_sub(1);
    for (index, payload) in payloads.into_iter().enumerate() {
        *sequence = sequence.wrapping_add(1);
        let packet = RtpIn {
            sequence: *sequence,
            timestamp,
            marker: kind == MediaKind::Video && index == last,
            payload,
            arrived,
        };
        feed.send(&packet).await;
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
                    output.forward(SourceKey::from(self.ssrc), Treatment::ORIGINAL, packet).await;
                }
            }
            if !muted {
                let derived: Vec<Arc<DerivedFeed>> =
                    self.derived.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
                for feed in derived {
                    crate::engine::enqueue(&feed.packets, event.clone());
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

    /// Stops this track's pipelines, if it has any (the track ended).
    fn stop_pipelines(&self) {
        self.derived.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Room {
    /// A room whose members each receive up to `slots` others.
    pub fn new(engine: Arc<WebRtcEngine>, slots: usize, recorders: Arc<dyn RecorderFactory>) -> Self {
        Room { engine, slots, recorders, state: Arc::default() }
    }

    /// The room masks protected members' media with the pipelines `maskers` starts. A room without gives those
    /// the order does not privilege nothing of a protected member's masked kinds.
    pub fn with_maskers(self, maskers: Arc<dyn MaskerFactory>) -> Self {
        self.lock().maskers = Some(maskers);
        self
    }

    /// Names the room in its log lines (a hearing's id: nothing personal).
    pub fn with_label(self, label: &str) -> Self {
        self.lock().label = Arc::from(label);
        self
    }

    /// Puts a member's media under a protective order (`None` lifts it): from the moment this returns, whoever is
    /// not in [`Protection::original_to`] gets of each masked kind only what a masking pipeline makes. (A packet
    /// whose forwarding had already begun, checked against the routing before the change, may still complete: at
    /// most one per receive track, within the time of one write.)
    pub fn set_protection(&self, member: &str, protection: Option<Protection>) {
        let mut state = self.lock();
        if let Some(entry) = state.members.get_mut(member) {
            entry.protection = protection;
        }
        route(&mut state);
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
            audio_from: None,
            protection: None,
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
                source.stop_pipelines();
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
            .map(|slot| [slot.audio, slot.video].map(|track| Arc::new(Output::new(track))))
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
            return Err(EngineError::Engine("not a member of this room"));
        };
        if let Some(old) = replaced {
            for source in &old.sources {
                source.stop_pipelines();
            }
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
            derived: Mutex::default(),
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

    /// Whose audio a member hears, by member, and whose ducked (`None`: everyone in their zone's, in full). It
    /// changes only what this member receives.
    pub fn set_audio_from(&self, member: &str, from: Option<AudioFrom>) {
        let mut state = self.lock();
        if let Some(entry) = state.members.get_mut(member) {
            entry.audio_from = from;
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
                source.stop_pipelines();
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
                    let key = (name.clone(), sender_name.clone(), kind);
                    counters.forwarded.insert(key.clone(), output.forwarded.load(Ordering::Relaxed));
                    counters.masked.insert(key.clone(), output.forwarded_masked.load(Ordering::Relaxed));
                    counters.ducked.insert(key, output.forwarded_ducked.load(Ordering::Relaxed));
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
                Err(e) => tracing::error!(error = %crate::Chain(&e), "a recording task failed"),
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
    /// Of those, by the same key: the packets of the sender's masked feed (so the others were the original, or
    /// only ducked).
    pub masked: BTreeMap<(String, String, MediaKind), u64>,
    /// Of those, by the same key: the packets of a ducked feed of the sender (masked too, or not).
    pub ducked: BTreeMap<(String, String, MediaKind), u64>,
}

/// Recomputes who receives whom: every source of a connected member with a zone goes to the matching receive
/// slot of every other connected member in the same zone who takes it, in the treatment each is due: of a
/// protected member's masked kinds, only those the order names get the original, and the others the masked feed;
/// a listener of an interpretation channel gets the floor's voices ducked. A treatment no pipeline makes (no
/// masking pipelines, or not the sender's first track of its kind) reaches nobody. New video receivers get a
/// keyframe asked for.
fn route(state: &mut RoomState) {
    let maskers = state.maskers.clone();
    let label = state.label.clone();
    let members: Vec<(&String, &Member)> = state.members.iter().collect();
    for (sender_name, sender) in &members {
        let Some(connection) = &sender.connection else { continue };
        // Only a member's first track of each kind goes through pipelines; any more of that kind (an offer with
        // many cameras) reach only those who get the original, so a hostile sender cannot start pipelines without
        // end.
        let mut kinds_seen = BTreeSet::new();
        for source in &connection.sources {
            let first_of_kind = kinds_seen.insert(source.kind);
            let protection = sender.protection.as_ref().filter(|protection| protection.masks(source.kind));
            let wanted = match sender.zone {
                None => BTreeMap::new(),
                Some(zone) => receivers(&members, sender_name, sender, zone, source.kind, protection),
            };
            let mut derived = source.derived.lock().unwrap_or_else(|p| p.into_inner());
            let mut before: Vec<Arc<Output>> = source.outputs.read().unwrap_or_else(|p| p.into_inner()).clone();
            for feed in derived.values() {
                before.extend(feed.outputs.read().unwrap_or_else(|p| p.into_inner()).iter().cloned());
            }
            // The pipelines kept: those someone receives, and the masked feed while the order masks this kind (so
            // that whoever comes back to it from a consultation gets pictures at once).
            let pipelines = maskers.as_ref().filter(|_| first_of_kind);
            // A ducked feed stays too (its pipeline stops by itself when nobody has listened for a while), so that a
            // listener switching back and forth does not start a process each time; unless it masks what is no
            // longer masked.
            derived.retain(|treatment, _| {
                pipelines.is_some()
                    && (wanted.contains_key(treatment)
                        || (protection.is_some() && *treatment == MASKED)
                        || (treatment.duck && (!treatment.mask || protection.is_some())))
            });
            if let Some(maskers) = pipelines {
                for treatment in wanted.keys().filter(|treatment| !treatment.is_original()) {
                    derived
                        .entry(*treatment)
                        .or_insert_with(|| DerivedFeed::start(source, *treatment, maskers.clone(), label.clone()));
                }
            }
            // Whatever no longer receives this source in any form is cut off first; then each receive track admits
            // the one source, in the one treatment, it now takes.
            let reached = |output: &Arc<Output>| {
                wanted
                    .iter()
                    .filter(|(treatment, _)| treatment.is_original() || derived.contains_key(*treatment))
                    .any(|(_, list)| list.iter().any(|kept| Arc::ptr_eq(kept, output)))
            };
            for removed in before.iter().filter(|output| !reached(output)) {
                removed.pause();
            }
            let empty = Vec::new();
            let original = wanted.get(&Treatment::ORIGINAL).unwrap_or(&empty);
            let key = SourceKey::from(source.ssrc);
            take(&source.outputs, original, key, &source.keyframes, source.kind);
            for (treatment, feed) in derived.iter() {
                let keyframes: Arc<dyn KeyframeRequester> = feed.keyframes.clone();
                take(&feed.outputs, wanted.get(treatment).unwrap_or(&empty), feed.key, &keyframes, source.kind);
            }
            for (_, list) in
                wanted.iter().filter(|(treatment, _)| !treatment.is_original() && !derived.contains_key(*treatment))
            {
                for output in list {
                    output.pause();
                    output.track.set_upstream(None);
                }
            }
        }
    }
}

/// The treatment of a protected member's media for those the order does not privilege.
const MASKED: Treatment = Treatment { mask: true, duck: false };

/// Who in `zone` receives `sender`'s track of `kind`, by the treatment each is due.
fn receivers(
    members: &[(&String, &Member)],
    sender_name: &str,
    sender: &Member,
    zone: u64,
    kind: MediaKind,
    protection: Option<&Protection>,
) -> BTreeMap<Treatment, Vec<Arc<Output>>> {
    let index = match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    };
    let mut wanted: BTreeMap<Treatment, Vec<Arc<Output>>> = BTreeMap::new();
    for (name, receiver) in members {
        if std::ptr::eq(*receiver, sender) || receiver.zone != Some(zone) {
            continue;
        }
        let duck = match (kind, &receiver.audio_from) {
            (MediaKind::Audio, None) => false,
            (MediaKind::Audio, Some(from)) if from.full.contains(sender_name) => false,
            (MediaKind::Audio, Some(from)) if from.ducked.contains(sender_name) => true,
            (MediaKind::Audio, Some(_)) => continue,
            (MediaKind::Video, _) if receiver.video_from.as_ref().is_none_or(|from| from.contains(&sender.slot)) => {
                false
            }
            (MediaKind::Video, _) => continue,
        };
        let Some(pair) = receiver.connection.as_ref().and_then(|connection| connection.receive.get(sender.slot)) else {
            continue;
        };
        let mask = protection.is_some_and(|protection| !protection.original_to.contains(*name));
        wanted.entry(Treatment { mask, duck }).or_default().push(pair[index].clone());
    }
    wanted
}

/// Makes `outputs` (a source's or a feed's list of receive tracks) exactly `wanted`, each admitting `key` and
/// sending its keyframe requests to `keyframes`; a video track new to the list gets a keyframe asked for.
fn take(
    outputs: &RwLock<Vec<Arc<Output>>>,
    wanted: &[Arc<Output>],
    key: SourceKey,
    keyframes: &Arc<dyn KeyframeRequester>,
    kind: MediaKind,
) {
    let mut outputs = outputs.write().unwrap_or_else(|p| p.into_inner());
    let added = wanted.iter().any(|w| !outputs.iter().any(|o| Arc::ptr_eq(o, w)));
    for output in wanted {
        output.admit(key);
        output.track.set_upstream(Some(keyframes.clone()));
    }
    *outputs = wanted.to_vec();
    if added && kind == MediaKind::Video {
        keyframes.request_keyframe();
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
