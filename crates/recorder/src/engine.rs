//! The seam over the WebRTC engine. Everything webrtc-rs is confined to this module: the rest of the crate, and
//! the gateway, see only the types defined here, so the engine could be swapped without touching the recorder.

use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::sender_report::SenderReport as RtcpSenderReport;
use webrtc::rtp::header::Header as RtpHeader;
use webrtc::rtp::packet::Packet as RtpPacket;
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

/// How the engine is set up.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Which of this machine's own addresses answers announce as ICE host candidates.
    pub announce: Announce,
    /// Public addresses that stand for this machine's own (a 1:1 NAT, such as a cloud machine's public address):
    /// answers announce these instead, and never the private addresses behind them.
    pub public_ips: Vec<std::net::IpAddr>,
    /// STUN/TURN servers to gather candidates from, as `stun:` / `turn:` URLs with optional credentials.
    pub ice_servers: Vec<IceServer>,
}

/// Which of the machine's own addresses the engine announces as ICE host candidates. An SDP answer is read by
/// whoever made the offer, so by default it tells them nothing of the gateway's internal networks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Announce {
    /// Only publicly routable addresses (and, with [`EngineConfig::public_ips`], those instead of the private ones).
    #[default]
    Public,
    /// Public and private ones (RFC 1918, shared address space, unique local): a gateway and its clients on one
    /// internal network.
    Private,
    /// Every address, loopback included: tests, and a console on the same machine.
    Loopback,
}

/// Whether the engine announces (gathers a host candidate on) its own address `ip`. Link-local, multicast,
/// documentation and unspecified addresses are never announced. `behind_nat`: private addresses are gathered, to be
/// announced as the configured public ones.
pub fn announces(announce: Announce, behind_nat: bool, ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let (loopback, private, unusable) = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b);
            let documentation = matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113));
            let benchmarking = a == 198 && (18..20).contains(&b);
            (
                v4.is_loopback(),
                v4.is_private() || shared,
                v4.is_link_local()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4.is_unspecified()
                    || documentation
                    || benchmarking
                    || a == 0
                    || a >= 240,
            )
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (
                v6.is_loopback(),
                first & 0xfe00 == 0xfc00,
                v6.is_unspecified()
                    || v6.is_multicast()
                    || first & 0xffc0 == 0xfe80
                    || first == 0x2001 && v6.segments()[1] == 0x0db8,
            )
        }
    };
    if loopback {
        announce == Announce::Loopback
    } else if unusable {
        false
    } else if private {
        announce != Announce::Public || behind_nat
    } else {
        true
    }
}

/// A STUN or TURN server.
#[derive(Clone, Default)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credential is a secret; never show it.
        f.debug_struct("IceServer").field("urls", &self.urls).finish_non_exhaustive()
    }
}

/// What went wrong in the engine. webrtc-rs's own error, where there is one, is the source.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The offer is not one the engine can answer: why is the source.
    #[error("the offer is not an SDP offer the engine accepts")]
    BadOffer(#[source] webrtc::Error),
    /// webrtc-rs failed at `step` ("creating the answer").
    #[error("WebRTC engine: {step}")]
    WebRtc {
        step: &'static str,
        #[source]
        source: webrtc::Error,
    },
    /// The engine cannot go on, for a reason of its own, in words.
    #[error("WebRTC engine: {0}")]
    Engine(&'static str),
    #[error("the media server is at its limit of {0} connections; try again later")]
    Busy(usize),
}

/// Peer connections one engine holds at once (each holds UDP sockets, DTLS state and buffers); an offer beyond
/// it is refused before any WebRTC work.
pub const MAX_PEERS: usize = 256;

/// How long a peer connection may take to connect (ICE and DTLS). One that has not connected by then, like a
/// flood of offers that never follow up, is failed and closed.
pub const CONNECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// webrtc-rs's error at `step`, as an [`EngineError::WebRtc`].
fn engine_err(step: &'static str) -> impl FnOnce(webrtc::Error) -> EngineError {
    move |source| EngineError::WebRtc { step, source }
}

/// Media kinds the recorder takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MediaKind {
    Audio,
    Video,
}

/// Codecs the recorder takes, as negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Vp8,
    Opus,
}

/// One RTP packet as received, with the moment it arrived.
#[derive(Debug, Clone)]
pub struct RtpIn {
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
    pub arrived: Instant,
}

/// An RTCP sender report for a track: the sender's wall clock (64-bit NTP format) at the RTP time given.
#[derive(Debug, Clone, Copy)]
pub struct SenderReport {
    pub ntp_time: u64,
    pub rtp_time: u32,
    pub arrived: Instant,
}

/// What arrives on a track.
#[derive(Debug, Clone)]
pub enum TrackEvent {
    Rtp(RtpIn),
    SenderReport(SenderReport),
}

/// Asks the sender of a track for a keyframe.
pub trait KeyframeRequester: Send + Sync + std::fmt::Debug {
    fn request_keyframe(&self);
}

/// A track a publisher sends, as the engine hands it to the recorder. `events` ends when the track or the peer
/// connection does.
#[derive(Debug)]
pub struct IncomingTrack {
    pub kind: MediaKind,
    pub codec: Codec,
    pub clock_rate: u32,
    pub ssrc: u32,
    pub events: mpsc::Receiver<TrackEvent>,
    pub keyframes: Arc<dyn KeyframeRequester>,
}

/// Events that may wait for one track's reader: at 30 fps and a few packets a frame, several seconds of video.
/// A reader that falls further behind (a stalled relay, a flooding sender) loses packets, counted by
/// [`dropped_packets`], instead of growing memory; the jitter buffer then sees them as lost.
pub const TRACK_QUEUE: usize = 1024;

static DROPPED_PACKETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Track events dropped in this process because their reader's queue ([`TRACK_QUEUE`]) was full.
pub fn dropped_packets() -> u64 {
    DROPPED_PACKETS.load(std::sync::atomic::Ordering::Relaxed)
}

/// A bounded queue of track events ([`TRACK_QUEUE`]).
pub fn track_queue() -> (mpsc::Sender<TrackEvent>, mpsc::Receiver<TrackEvent>) {
    mpsc::channel(TRACK_QUEUE)
}

/// Offers `event` to a track's reader without waiting: `false` once the reader is gone; a full queue drops the
/// event and counts it.
pub fn enqueue(queue: &mpsc::Sender<TrackEvent>, event: TrackEvent) -> bool {
    match queue.try_send(event) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            DROPPED_PACKETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// The WebRTC engine: webrtc-rs set up to receive Opus audio and VP8 video.
pub struct WebRtcEngine {
    api: API,
    config: EngineConfig,
    peers: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for WebRtcEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcEngine").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A connected (or connecting) peer: the answer to its offer, and the peer connection behind it.
pub struct Peer {
    answer_sdp: String,
    pc: Arc<RTCPeerConnection>,
    failed: Option<tokio::sync::oneshot::Receiver<()>>,
    /// This peer's place among the engine's [`MAX_PEERS`], given back when the peer connection is gone.
    _place: Arc<tokio::sync::OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").finish_non_exhaustive()
    }
}

impl Peer {
    /// The SDP answer, with every ICE candidate gathered (clients need not trickle).
    pub fn answer_sdp(&self) -> &str {
        &self.answer_sdp
    }

    /// Resolves when the connection fails (ICE or DTLS lost for good, as when the peer vanishes without a
    /// goodbye); never, if it does not. Only the first call waits; later ones resolve at once.
    pub fn failed(&mut self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let failed = self.failed.take();
        async move {
            if let Some(failed) = failed
                && failed.await.is_err()
            {
                // The engine dropped the sender without a failure: the connection was closed, and never fails.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Closes the peer connection; every track's events then end.
    pub async fn close(&self) -> Result<(), EngineError> {
        self.pc.close().await.map_err(engine_err("closing the peer connection"))
    }
}

/// Whether an RTP payload of a VP8 track (RFC 7741) begins a keyframe: the first packet of a frame (`S` set,
/// partition 0) whose VP8 payload header says keyframe (bit `P` clear).
pub fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    use webrtc::rtp::packetizer::Depacketizer as _;
    let mut packet = webrtc::rtp::codecs::vp8::Vp8Packet::default();
    let Ok(frame) = packet.depacketize(&Bytes::copy_from_slice(payload)) else { return false };
    packet.s == 1 && packet.pid == 0 && frame.first().is_some_and(|header| header & 0x01 == 0)
}

/// The largest RTP payload the gateway makes when it packetizes media of its own (a masked feed): room for the RTP
/// header, SRTP's tag and a TURN relay's headers within a 1280-byte IPv6 minimum MTU.
pub const MAX_PAYLOAD: usize = 1_100;

/// Splits one VP8 frame into RTP payloads (RFC 7741), each at most [`MAX_PAYLOAD`] bytes; the last one's packet
/// carries the marker.
pub fn vp8_payloads(frame: &Bytes) -> Vec<Bytes> {
    use webrtc::rtp::packetizer::Payloader as _;
    webrtc::rtp::codecs::vp8::Vp8Payloader::default().payload(MAX_PAYLOAD, frame).unwrap_or_default()
}

/// One RTP packet to send on an [`OutgoingTrack`]. The engine sets the SSRC and payload type it negotiated.
#[derive(Debug, Clone)]
pub struct RtpOut {
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
}

/// A track the gateway sends to a participant: one receive slot of theirs, audio or video. What arrives is relayed
/// as it is (no transcoding); the participant's keyframe requests go to whichever source feeds the track now.
pub struct OutgoingTrack {
    kind: MediaKind,
    track: Arc<TrackLocalStaticRTP>,
    upstream: std::sync::Mutex<Option<Arc<dyn KeyframeRequester>>>,
}

impl std::fmt::Debug for OutgoingTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingTrack").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl OutgoingTrack {
    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// Sends one packet. A failure to one receiver is not an error for the others; it is logged at debug level.
    pub async fn write(&self, packet: &RtpOut) {
        let packet = RtpPacket {
            header: RtpHeader {
                version: 2,
                marker: packet.marker,
                sequence_number: packet.sequence,
                timestamp: packet.timestamp,
                ..Default::default()
            },
            payload: packet.payload.clone(),
        };
        if let Err(e) = self.track.write_rtp(&packet).await {
            tracing::debug!(error = %crate::Chain(&e), "relaying a packet");
        }
    }

    /// Where the receiver's keyframe requests go from now on (`None`: nowhere).
    pub fn set_upstream(&self, upstream: Option<Arc<dyn KeyframeRequester>>) {
        *self.upstream.lock().unwrap_or_else(|p| p.into_inner()) = upstream;
    }

    fn request_upstream_keyframe(&self) {
        let upstream = self.upstream.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(upstream) = upstream {
            upstream.request_keyframe();
        }
    }
}

/// The pair of tracks a participant receives one other participant on.
#[derive(Debug, Clone)]
pub struct ReceiveSlot {
    pub audio: Arc<OutgoingTrack>,
    pub video: Arc<OutgoingTrack>,
}

impl ReceiveSlot {
    pub fn track(&self, kind: MediaKind) -> &Arc<OutgoingTrack> {
        match kind {
            MediaKind::Audio => &self.audio,
            MediaKind::Video => &self.video,
        }
    }
}

/// A hearing participant's connection: what they send arrives as [`IncomingTrack`]s, and each of their receive
/// slots can carry another participant.
#[derive(Debug)]
pub struct ParticipantPeer {
    pub peer: Peer,
    pub slots: Vec<ReceiveSlot>,
}

/// The shortest time between two keyframe requests to one sender. Every receiver of a track, its recording and its
/// masked feed may ask; a sender that made a keyframe for each request (aiortc does) would spend its bit rate on
/// keyframes and send everyone a blurred picture. Requests that come sooner are put together into one, sent when
/// the spacing has passed, so that nobody who asked waits for a keyframe that never comes.
pub const KEYFRAME_REQUEST_SPACING: std::time::Duration = std::time::Duration::from_millis(500);

/// Keyframe requests to one source, spaced by [`KEYFRAME_REQUEST_SPACING`]: the first goes at once, those that come
/// sooner are put together into one that goes when the spacing has passed. One mechanism for every requester: a
/// sender's PLIs and a masking pipeline's keyframes.
#[derive(Debug, Clone, Default)]
pub struct SpacedRequests {
    /// When the last request went out, and whether one waits to go.
    state: Arc<std::sync::Mutex<(Option<Instant>, bool)>>,
}

impl SpacedRequests {
    /// Asks: `send` runs now, later (once, for every request meanwhile), or not at all if one already waits.
    pub fn request(&self, send: impl FnOnce() + Send + 'static) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let (last, waiting) = &mut *state;
            if *waiting {
                return;
            }
            match last.map(|at| at.elapsed()).filter(|since| *since < KEYFRAME_REQUEST_SPACING) {
                None => {
                    *last = Some(Instant::now());
                    None
                }
                Some(since) => {
                    *waiting = true;
                    Some(KEYFRAME_REQUEST_SPACING - since)
                }
            }
        };
        match wait {
            None => send(),
            Some(wait) => {
                let state = self.state.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    *state.lock().unwrap_or_else(|p| p.into_inner()) = (Some(Instant::now()), false);
                    send();
                });
            }
        }
    }
}

#[derive(Debug)]
struct PliSender {
    pc: Weak<RTCPeerConnection>,
    media_ssrc: u32,
    spacing: SpacedRequests,
}

impl PliSender {
    fn send_now(pc: Weak<RTCPeerConnection>, media_ssrc: u32) {
        let Some(pc) = pc.upgrade() else {
            tracing::debug!(media_ssrc, "PLI for a closed connection");
            return;
        };
        tracing::debug!(media_ssrc, "sending PLI");
        tokio::spawn(async move {
            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
            if let Err(e) = pc.write_rtcp(&[Box::new(pli)]).await {
                tracing::debug!(error = %crate::Chain(&e), "could not send a picture loss indication");
            }
        });
    }
}

impl KeyframeRequester for PliSender {
    fn request_keyframe(&self) {
        let (pc, media_ssrc) = (self.pc.clone(), self.media_ssrc);
        self.spacing.request(move || Self::send_now(pc, media_ssrc));
    }
}

impl WebRtcEngine {
    /// Sets up the engine. webrtc-rs's DTLS uses rustls, which needs a process-wide crypto back end; if the
    /// process has not installed one (the gateway installs aws-lc-rs at start-up), this installs ring, which
    /// webrtc-rs links anyway.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err only if another thread installed one meanwhile, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut media = MediaEngine::default();
        let codecs = [(opus_capability(), 111, RTPCodecType::Audio), (vp8_capability(), 96, RTPCodecType::Video)];
        for (capability, payload_type, kind) in codecs {
            media
                .register_codec(RTCRtpCodecParameters { capability, payload_type, ..Default::default() }, kind)
                .map_err(engine_err("registering a codec"))?;
        }
        // NACK generation (retransmission requests), RTCP receiver reports and the rest of the defaults.
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .map_err(engine_err("registering the interceptors"))?;
        let mut settings = SettingEngine::default();
        settings.set_include_loopback_candidate(config.announce == Announce::Loopback);
        let (announce, behind_nat) = (config.announce, !config.public_ips.is_empty());
        settings.set_ip_filter(Box::new(move |ip| announces(announce, behind_nat, ip)));
        if behind_nat {
            let public = config.public_ips.iter().map(ToString::to_string).collect();
            settings.set_nat_1to1_ips(public, RTCIceCandidateType::Host);
        }
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .build();
        Ok(WebRtcEngine { api, config, peers: Arc::new(tokio::sync::Semaphore::new(MAX_PEERS)) })
    }

    fn rtc_configuration(&self) -> RTCConfiguration {
        RTCConfiguration {
            ice_servers: self
                .config
                .ice_servers
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone(),
                    credential: s.credential.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Answers a publisher's SDP offer with a receive-only peer connection. Each track the publisher sends is
    /// handed to `tracks` once its first packet arrives. Returns once ICE gathering is complete, so the answer
    /// holds every candidate.
    pub async fn accept_publisher(
        &self,
        offer_sdp: &str,
        tracks: mpsc::UnboundedSender<IncomingTrack>,
    ) -> Result<Peer, EngineError> {
        // No local tracks are ever added, so every transceiver the offer creates only receives.
        self.accept(offer_sdp, tracks, |_| async { Ok(()) }).await
    }

    /// Answers a hearing participant's offer (see docs/hearing-room.md): the first audio and the first video
    /// m-line carry what the participant sends, handed to `tracks` like a publisher's; the m-lines after them, in
    /// (audio, video) pairs, are receive slots, at most `max_slots`, each given an [`OutgoingTrack`] of its own.
    pub async fn accept_participant(
        &self,
        offer_sdp: &str,
        max_slots: usize,
        tracks: mpsc::UnboundedSender<IncomingTrack>,
    ) -> Result<ParticipantPeer, EngineError> {
        let slots = Arc::new(std::sync::Mutex::new(Vec::new()));
        let filled = slots.clone();
        let count = receive_slots_offered(offer_sdp).min(max_slots);
        let peer = self
            .accept(offer_sdp, tracks, move |pc| async move {
                let made = add_receive_slots(&pc, count).await?;
                *filled.lock().unwrap_or_else(|p| p.into_inner()) = made;
                Ok(())
            })
            .await?;
        let slots = std::mem::take(&mut *slots.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(ParticipantPeer { peer, slots })
    }

    /// Sets up a peer connection for an offer: incoming tracks go to `tracks`; `prepare` runs before the offer is
    /// applied, to add what the gateway sends (the offer's m-lines are matched to those transceivers).
    async fn accept<F, Fut>(
        &self,
        offer_sdp: &str,
        tracks: mpsc::UnboundedSender<IncomingTrack>,
        prepare: F,
    ) -> Result<Peer, EngineError>
    where
        F: FnOnce(Arc<RTCPeerConnection>) -> Fut,
        Fut: std::future::Future<Output = Result<(), EngineError>>,
    {
        // An offer that does not parse costs no peer connection.
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned()).map_err(EngineError::BadOffer)?;
        let place = Arc::new(self.peers.clone().try_acquire_owned().map_err(|_| EngineError::Busy(MAX_PEERS))?);
        let pc = Arc::new(
            self.api
                .new_peer_connection(self.rtc_configuration())
                .await
                .map_err(engine_err("making a peer connection"))?,
        );
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
        let failed_tx = Arc::new(std::sync::Mutex::new(Some(failed_tx)));
        let fail = move |failed_tx: &std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>| {
            if let Some(tx) = failed_tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(());
            }
        };
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (on_change, ever_connected) = (failed_tx.clone(), connected.clone());
        // The place is held for as long as the peer connection's handlers live, which is until it is closed.
        let held = place.clone();
        pc.on_peer_connection_state_change(Box::new(move |state| {
            let _held = &held;
            match state {
                RTCPeerConnectionState::Connected => ever_connected.store(true, std::sync::atomic::Ordering::Relaxed),
                RTCPeerConnectionState::Failed => fail(&on_change),
                _ => {}
            }
            Box::pin(async {})
        }));
        let (deadline_tx, unfinished) = (failed_tx.clone(), Arc::downgrade(&pc));
        tokio::spawn(async move {
            tokio::time::sleep(CONNECT_DEADLINE).await;
            if !connected.load(std::sync::atomic::Ordering::Relaxed)
                && let Some(pc) = unfinished.upgrade()
            {
                tracing::info!("a peer connection did not connect in time; closing it");
                fail(&deadline_tx);
                let _ = pc.close().await;
            }
        });
        let weak = Arc::downgrade(&pc);
        pc.on_track(Box::new(move |track, receiver, _transceiver| {
            let tracks = tracks.clone();
            let weak = weak.clone();
            Box::pin(async move {
                let capability = track.codec().capability;
                let codec = if capability.mime_type.eq_ignore_ascii_case(MIME_TYPE_VP8) {
                    Codec::Vp8
                } else if capability.mime_type.eq_ignore_ascii_case(MIME_TYPE_OPUS) {
                    Codec::Opus
                } else {
                    tracing::warn!(mime = %capability.mime_type, "ignoring a track in a codec the recorder does not take");
                    return;
                };
                let kind = match codec {
                    Codec::Vp8 => MediaKind::Video,
                    Codec::Opus => MediaKind::Audio,
                };
                let (events, rx) = track_queue();
                let incoming = IncomingTrack {
                    kind,
                    codec,
                    clock_rate: capability.clock_rate,
                    ssrc: track.ssrc(),
                    events: rx,
                    keyframes: Arc::new(PliSender {
                        pc: weak,
                        media_ssrc: track.ssrc(),
                        spacing: SpacedRequests::default(),
                    }),
                };
                if tracks.send(incoming).is_err() {
                    return;
                }
                let rtcp_events = events.clone();
                tokio::spawn(async move {
                    while let Ok((packets, _)) = receiver.read_rtcp().await {
                        let arrived = Instant::now();
                        for packet in packets {
                            if let Some(sr) = packet.as_any().downcast_ref::<RtcpSenderReport>() {
                                let report = SenderReport { ntp_time: sr.ntp_time, rtp_time: sr.rtp_time, arrived };
                                if !enqueue(&rtcp_events, TrackEvent::SenderReport(report)) {
                                    return;
                                }
                            }
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Ok((packet, _)) = track.read_rtp().await {
                        let rtp = RtpIn {
                            sequence: packet.header.sequence_number,
                            timestamp: packet.header.timestamp,
                            marker: packet.header.marker,
                            payload: packet.payload,
                            arrived: Instant::now(),
                        };
                        if !enqueue(&events, TrackEvent::Rtp(rtp)) {
                            return;
                        }
                    }
                });
            })
        }));
        let result = async {
            prepare(pc.clone()).await?;
            pc.set_remote_description(offer).await.map_err(EngineError::BadOffer)?;
            let answer = pc.create_answer(None).await.map_err(engine_err("creating the answer"))?;
            let mut gathered = pc.gathering_complete_promise().await;
            pc.set_local_description(answer).await.map_err(engine_err("setting the answer"))?;
            let _ = gathered.recv().await;
            let local = pc.local_description().await.ok_or(EngineError::Engine("no local description"))?;
            Ok::<_, EngineError>(local.sdp)
        }
        .await;
        match result {
            Ok(answer_sdp) => Ok(Peer { answer_sdp, pc, failed: Some(failed_rx), _place: place }),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }
}

/// How many receive slots an offer has: the (audio, video) m-line pairs after the first audio and the first video.
fn receive_slots_offered(offer_sdp: &str) -> usize {
    let count = |media: &str| offer_sdp.lines().filter(|line| line.starts_with(media)).count();
    count("m=audio ").min(count("m=video ")).saturating_sub(1)
}

/// Adds `count` send-only (audio, video) transceivers, in order. Applying the offer then matches each to the next
/// receive-only m-line of its kind, so slot `n` is the `n`-th pair after the participant's own.
async fn add_receive_slots(pc: &RTCPeerConnection, count: usize) -> Result<Vec<ReceiveSlot>, EngineError> {
    let mut slots = Vec::with_capacity(count);
    for index in 0..count {
        let audio = outgoing(pc, MediaKind::Audio, index).await?;
        let video = outgoing(pc, MediaKind::Video, index).await?;
        slots.push(ReceiveSlot { audio, video });
    }
    Ok(slots)
}

/// A send-only transceiver carrying a track of the gateway's own.
async fn outgoing(pc: &RTCPeerConnection, kind: MediaKind, slot: usize) -> Result<Arc<OutgoingTrack>, EngineError> {
    let capability = match kind {
        MediaKind::Audio => opus_capability(),
        MediaKind::Video => vp8_capability(),
    };
    let name = match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    };
    let track = Arc::new(TrackLocalStaticRTP::new(capability, format!("slot-{slot}-{name}"), format!("slot-{slot}")));
    let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, send_encodings: vec![] };
    let transceiver =
        pc.add_transceiver_from_track(track.clone(), Some(init)).await.map_err(engine_err("adding a transceiver"))?;
    let sender = transceiver.sender().await;
    let outgoing = Arc::new(OutgoingTrack { kind, track, upstream: std::sync::Mutex::new(None) });
    // Read what the receiver says about this track: the interceptors (NACK responses, reports) need it read, and
    // its keyframe requests go to the source.
    let reader = sender.clone();
    let weak = Arc::downgrade(&outgoing);
    tokio::spawn(async move {
        while let Ok((packets, _)) = reader.read_rtcp().await {
            let Some(outgoing) = weak.upgrade() else { return };
            let wants_keyframe = packets.iter().any(|packet| {
                packet.as_any().is::<PictureLossIndication>() || packet.as_any().is::<FullIntraRequest>()
            });
            if wants_keyframe {
                outgoing.request_upstream_keyframe();
            }
        }
    });
    Ok(outgoing)
}

fn opus_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn vp8_capability() -> RTCRtpCodecCapability {
    let rtcp_feedback = ["goog-remb", "ccm", "nack", "nack"]
        .iter()
        .zip(["", "fir", "", "pli"])
        .map(|(typ, parameter)| RTCPFeedback { typ: (*typ).to_owned(), parameter: parameter.to_owned() })
        .collect();
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback,
    }
}

#[cfg(test)]
mod tests {
    use super::{Announce, announces};

    #[test]
    fn answers_announce_only_what_the_configuration_allows() {
        let public = ["193.204.114.1", "2a00:1450:4001:80b::200e"];
        let private = ["10.1.2.3", "172.20.0.5", "192.168.1.10", "100.64.0.1", "fd00::2"];
        let loopback = ["127.0.0.1", "::1"];
        let never = ["169.254.1.1", "fe80::1", "224.0.0.1", "0.0.0.0", "192.0.2.2", "2001:db8::1", "255.255.255.255"];
        let ip = |text: &str| text.parse().unwrap();
        for (announce, behind_nat, public_ok, private_ok, loopback_ok) in [
            (Announce::Public, false, true, false, false),
            (Announce::Public, true, true, true, false),
            (Announce::Private, false, true, true, false),
            (Announce::Loopback, false, true, true, true),
        ] {
            let case = format!("{announce:?}, behind NAT: {behind_nat}");
            assert!(public.iter().all(|a| announces(announce, behind_nat, ip(a)) == public_ok), "{case}");
            assert!(private.iter().all(|a| announces(announce, behind_nat, ip(a)) == private_ok), "{case}");
            assert!(loopback.iter().all(|a| announces(announce, behind_nat, ip(a)) == loopback_ok), "{case}");
            assert!(never.iter().all(|a| !announces(announce, behind_nat, ip(a))), "{case}");
        }
    }
}
