//! How much the hearing room's media plane (`custodia_recorder::sfu::Room`) costs on this machine, printed beside
//! the machine's own limits measured in the same run.
//!
//! `cargo bench -p custodia-recorder --bench sfu` runs the SFU in a process of its own (this program, re-executed
//! with `CUSTODIA_BENCH_ROLE=sfu`), so that its CPU time is its own: one `Room` per hearing, each participant
//! recorded through a sealer that reads each sealed segment, SHA-256-hashes it and deletes it, as the gateway's
//! ingest would read it. The parent drives it over stdin/stdout (one JSON object a line) and runs every client peer
//! itself with webrtc-rs: six participants per hearing, each publishing synthetic 720p-like VP8 (about 1.5 Mbit/s,
//! 30 frames/s, a keyframe every 2.5 s ten times the size of a delta frame, and on a keyframe request) and Opus
//! (50 packets/s of 100 bytes), and receiving the five others. Payloads are not real video: each packet carries a
//! valid VP8 payload descriptor and a first packet with a valid frame tag (a keyframe's with start code and 1280×720
//! size), which is all the SFU (nothing) and the recorder (descriptor, keyframe bit, size) read.
//!
//! For N = 1, 2, 3… hearings at once it measures, over a window with everyone in zone 0 and recorded, after a
//! warm-up: the SFU process's CPU time (user + system, recording and hashing included), the forwarded tracks the
//! receivers saw, the packets the senders published against those the recorder took and lost (sequence gaps its
//! jitter buffer gave up on), and the receivers' loss (sequence gaps after retransmissions). Published and recorded
//! counts differ by the packets in flight when the recording starts and stops, which the window's bounds cut
//! differently; loss is the gaps. It stops at the first N with a lost packet, or once the SFU uses the core budget,
//! or once the SFU and the clients together use nearly every core.
//!
//! Where loss comes from, it says: the datagrams the kernel dropped at the SFU's sockets and at the clients' (full
//! receive buffers, from /proc/net/udp), and how busy the machine's other processes were during the window (from
//! /proc/stat), since a shared machine's other load starves both.
//!
//! Every packet carries its send time (microseconds on this process's monotonic clock, bytes 11..19 of the payload);
//! receivers take `now - sent`. Beside the hearings, the same process runs one direct peer-to-peer pair (no SFU)
//! publishing the same media, so that the latency the SFU adds is SFU path minus direct path under the same load.
//!
//! Beside them it measures what the machine itself can do: `openssl speed -evp aes-128-gcm` (the SRTP cipher's work
//! per 1 KiB packet) and how many 1200-byte datagrams one thread can send to another over UDP loopback.
//!
//! Compared with LiveKit's published figure (about 100 forwarded tracks per core) and mediasoup's (about 500
//! consumers per worker, one worker per core).
//!
//! Tuning, by environment variable: `CUSTODIA_BENCH_SECONDS` (measured window per N, 15), `CUSTODIA_BENCH_WARMUP`
//! (seconds before it, 3), `CUSTODIA_BENCH_MAX_HEARINGS` (largest N, 8), `CUSTODIA_BENCH_CORE_BUDGET` (cores the SFU
//! may use before the run stops, half the machine's), `CUSTODIA_BENCH_PACE` (video packets a sender writes per
//! millisecond, as a browser's pacer spreads a keyframe; 0 sends each frame at once; 2).
#![allow(clippy::print_stdout)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, Write as _};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use custodia_benchkit::{
    BoxError, Headline, SplitMix, Table, add_to_summary, clock_ticks_per_second, env_or, openssl_rate, openssl_speed,
    process_cpu_seconds,
};
use custodia_recorder::segmenter::{Recording, RecordingConfig};
use custodia_recorder::sfu::{RecorderFactory, Room};
use custodia_recorder::{EngineConfig, SealError, SealedSegment, SegmentSealer, WebRtcEngine};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::header::Header as RtpHeader;
use webrtc::rtp::packet::Packet as RtpPacket;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::{RTCPFeedback, RTCRtpTransceiverInit};
use webrtc::track::track_local::TrackLocalWriter as _;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_remote::TrackRemote;

const ROLE: &str = "CUSTODIA_BENCH_ROLE";
const PARTICIPANTS: usize = 6;
/// Tracks each participant sends (audio, video), each relayed to every other participant of the hearing.
const FORWARDED_PER_HEARING: usize = PARTICIPANTS * 2 * (PARTICIPANTS - 1);

const VIDEO_BITRATE: f64 = 1_500_000.0;
const FPS: f64 = 30.0;
/// A keyframe every 75 frames (2.5 s), ten times the size of a delta frame.
const KEYFRAME_INTERVAL: u64 = 75;
const KEYFRAME_RATIO: usize = 10;
const MAX_PAYLOAD: usize = 1200;
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const AUDIO_PAYLOAD: usize = 100;
/// Where each packet's send time (microseconds since [`epoch`], little-endian u64) sits in its payload: after the
/// one-byte VP8 payload descriptor and the ten bytes of a keyframe's header.
const STAMP_AT: usize = 11;
/// A forced keyframe (on a keyframe request) at most this often.
const FORCED_KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// What LiveKit and mediasoup publish about themselves.
const LIVEKIT_TRACKS_PER_CORE: f64 = 100.0;
const MEDIASOUP_CONSUMERS_PER_WORKER: f64 = 500.0;

fn main() -> Result<(), BoxError> {
    // The client peers' DTLS uses rustls, which cannot choose a crypto back end by itself when the workspace's
    // benchmarks are built together (the server's aws-lc-rs and webrtc-rs's ring are both linked): ring, as the
    // engine installs it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if std::env::var(ROLE).as_deref() == Ok("sfu") {
        return runtime.block_on(sfu_process());
    }
    runtime.block_on(bench())
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_micros() -> u64 {
    epoch().elapsed().as_micros() as u64
}

// ---------------------------------------------------------------------------------------------------------------
// The SFU process

/// Reads each sealed segment, hashes it and deletes it, as the gateway's ingest reads a segment into custody.
#[derive(Default)]
struct HashingSealer {
    segments: AtomicU64,
    bytes: AtomicU64,
}

#[async_trait::async_trait]
impl SegmentSealer for HashingSealer {
    async fn on_segment_sealed(&self, segment: &SealedSegment) -> Result<(), SealError> {
        let data = tokio::fs::read(&segment.path).await?;
        std::hint::black_box(Sha256::digest(&data));
        tokio::fs::remove_file(&segment.path).await?;
        self.segments.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

struct Recorders {
    dir: PathBuf,
    sealer: Arc<HashingSealer>,
    started: AtomicU64,
}

impl RecorderFactory for Recorders {
    fn start_recording(&self, member: &str) -> Recording {
        let number = self.started.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("{member}-{number}"));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("sfu: cannot create {}: {e}", dir.display());
        }
        Recording::start(RecordingConfig::new(dir), self.sealer.clone())
    }
}

struct Sfu {
    engine: Arc<WebRtcEngine>,
    recorders: Arc<Recorders>,
    /// Each hearing's room and its members.
    rooms: Mutex<HashMap<u64, (Room, Vec<String>)>>,
}

impl Sfu {
    fn room(&self, hearing: u64) -> Room {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let recorders: Arc<dyn RecorderFactory> = self.recorders.clone();
        rooms
            .entry(hearing)
            .or_insert_with(|| (Room::new(self.engine.clone(), PARTICIPANTS, recorders), Vec::new()))
            .0
            .clone()
    }

    fn all_members(&self) -> Vec<(Room, String)> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.values().flat_map(|(room, members)| members.iter().map(|m| (room.clone(), m.clone()))).collect()
    }

    async fn handle(&self, request: &Value) -> Result<Value, BoxError> {
        let hearing = request["hearing"].as_u64().unwrap_or(0);
        let member = request["member"].as_str().unwrap_or_default();
        match request["op"].as_str().unwrap_or_default() {
            "add" => {
                let room = self.room(hearing);
                room.add_member(member, request["slot"].as_u64().unwrap_or(0) as usize);
                let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((_, members)) = rooms.get_mut(&hearing) {
                    members.push(member.to_owned());
                }
                Ok(json!({}))
            }
            "connect" => {
                let offer = request["offer"].as_str().unwrap_or_default();
                let connected = self.room(hearing).connect(member, offer).await?;
                Ok(json!({ "answer": connected.answer }))
            }
            "zone" => {
                self.room(hearing).set_zone(member, Some(0));
                Ok(json!({}))
            }
            "record" => {
                for (room, member) in self.all_members() {
                    room.set_recorded(&member, true);
                }
                Ok(json!({ "cpu": process_cpu_seconds()? }))
            }
            "stop" => {
                let cpu = process_cpu_seconds()?;
                let members = self.all_members();
                for (room, member) in &members {
                    room.set_recorded(member, false);
                }
                let rooms: Vec<Room> = {
                    let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
                    rooms.values().map(|(room, _)| room.clone()).collect()
                };
                let mut total = json!({"recordings": 0, "packets": 0, "lost": 0, "late": 0, "frames": 0,
                    "frames_dropped": 0, "errors": 0});
                for room in rooms {
                    for (_, summary) in room.finish_recordings().await {
                        let add = |total: &mut Value, key: &str, value: u64| {
                            total[key] = json!(total[key].as_u64().unwrap_or(0) + value);
                        };
                        add(&mut total, "recordings", 1);
                        add(&mut total, "errors", summary.errors.len() as u64);
                        for track in &summary.tracks {
                            add(&mut total, "packets", track.packets);
                            add(&mut total, "lost", track.lost);
                            add(&mut total, "late", track.late);
                            add(&mut total, "frames", track.frames);
                            add(&mut total, "frames_dropped", track.frames_dropped);
                        }
                        for error in &summary.errors {
                            // Debug, for the causes under it.
                            eprintln!("sfu: recording error: {error:?}");
                        }
                    }
                }
                total["cpu"] = json!(cpu);
                total["segments"] = json!(self.recorders.sealer.segments.load(Ordering::Relaxed));
                total["segment_bytes"] = json!(self.recorders.sealer.bytes.load(Ordering::Relaxed));
                Ok(total)
            }
            "cpu" => Ok(json!({ "cpu": process_cpu_seconds()? })),
            other => Err(format!("unknown request {other:?}").into()),
        }
    }
}

async fn sfu_process() -> Result<(), BoxError> {
    let dir = tempfile::Builder::new().prefix("sfu-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let engine = Arc::new(WebRtcEngine::new(EngineConfig {
        announce: custodia_recorder::Announce::Loopback,
        ..Default::default()
    })?);
    let recorders = Arc::new(Recorders {
        dir: dir.path().to_owned(),
        sealer: Arc::new(HashingSealer::default()),
        started: AtomicU64::new(0),
    });
    let sfu = Arc::new(Sfu { engine, recorders, rooms: Mutex::default() });
    // Standard input and output through threads of their own (tokio's io-std feature is not enabled here).
    let (replies, outgoing) = std::sync::mpsc::channel::<String>();
    let writer = std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        for line in outgoing {
            if stdout.write_all(line.as_bytes()).is_err() || stdout.flush().is_err() {
                return;
            }
        }
    });
    let (requests, mut incoming) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if requests.send(line).is_err() {
                return;
            }
        }
    });
    while let Some(line) = incoming.recv().await {
        let request: Value = serde_json::from_str(&line)?;
        let sfu = sfu.clone();
        let replies = replies.clone();
        tokio::spawn(async move {
            let mut reply = match sfu.handle(&request).await {
                Ok(reply) => reply,
                Err(e) => json!({ "error": e.to_string() }),
            };
            reply["id"] = request["id"].clone();
            let _ = replies.send(format!("{reply}\n"));
        });
    }
    // The parent closed stdin: done.
    drop(replies);
    drop(sfu);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    Ok(())
}

/// The parent's handle on the SFU process.
struct SfuChild {
    child: tokio::sync::Mutex<tokio::process::Child>,
    stdin: tokio::sync::Mutex<Option<tokio::process::ChildStdin>>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    next: AtomicU64,
}

impl SfuChild {
    fn spawn() -> Result<Self, BoxError> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .env(ROLE, "sfu")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
        let waiting = pending.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(reply) = serde_json::from_str::<Value>(&line) else { continue };
                let id = reply["id"].as_u64().unwrap_or(u64::MAX);
                if let Some(tx) = waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                    let _ = tx.send(reply);
                }
            }
        });
        Ok(SfuChild {
            child: tokio::sync::Mutex::new(child),
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            next: AtomicU64::new(0),
        })
    }

    async fn call(&self, mut request: Value) -> Result<Value, BoxError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        request["id"] = json!(id);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        {
            let mut stdin = self.stdin.lock().await;
            let stdin = stdin.as_mut().ok_or("the SFU process was finished")?;
            stdin.write_all(format!("{request}\n").as_bytes()).await?;
            stdin.flush().await?;
        }
        let reply = tokio::time::timeout(Duration::from_secs(60), rx).await??;
        match reply["error"].as_str() {
            Some(error) => Err(format!("sfu: {error}").into()),
            None => Ok(reply),
        }
    }

    async fn pid(&self) -> Option<u32> {
        self.child.lock().await.id()
    }

    async fn finish(&self) {
        self.stdin.lock().await.take();
        let mut child = self.child.lock().await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Client peers

/// What the receivers of one path (through the SFU, or direct) saw during the window.
#[derive(Default)]
struct PathStats {
    latencies_us: Mutex<Vec<u32>>,
    received: AtomicU64,
    lost: AtomicU64,
    /// Receive tracks that had at least one packet in the window.
    tracks: AtomicU64,
}

/// What the senders published during the window.
#[derive(Default)]
struct Published {
    packets: AtomicU64,
    bytes: AtomicU64,
}

struct Shared {
    measuring: AtomicBool,
    running: AtomicBool,
    filler: Bytes,
    /// Video packets a sender writes per millisecond; 0: a whole frame at once.
    pace: usize,
}

fn client_api() -> Result<API, BoxError> {
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters { capability: opus(), payload_type: 111, ..Default::default() },
        RTPCodecType::Audio,
    )?;
    media.register_codec(
        RTCRtpCodecParameters { capability: vp8(), payload_type: 96, ..Default::default() },
        RTPCodecType::Video,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    settings.set_network_types(vec![NetworkType::Udp4]);
    Ok(APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build())
}

fn opus() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn vp8() -> RTCRtpCodecCapability {
    // What a browser offers: retransmissions (NACK), keyframe requests (PLI, FIR) and bandwidth estimates.
    let rtcp_feedback = [("goog-remb", ""), ("ccm", "fir"), ("nack", ""), ("nack", "pli")]
        .iter()
        .map(|(typ, parameter)| RTCPFeedback { typ: (*typ).to_owned(), parameter: (*parameter).to_owned() })
        .collect();
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        rtcp_feedback,
        ..Default::default()
    }
}

/// A client's send side: its two tracks, and a flag its keyframe requests set.
struct Sender {
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
    keyframe_wanted: Arc<AtomicBool>,
}

/// Adds the two send-only transceivers of a publisher, reading their RTCP (the interceptors need it read; keyframe
/// requests force a keyframe).
async fn add_sender(pc: &RTCPeerConnection, name: &str) -> Result<Sender, BoxError> {
    let audio = Arc::new(TrackLocalStaticRTP::new(opus(), "audio".to_owned(), name.to_owned()));
    let video = Arc::new(TrackLocalStaticRTP::new(vp8(), "video".to_owned(), name.to_owned()));
    let keyframe_wanted = Arc::new(AtomicBool::new(false));
    for track in [audio.clone(), video.clone()] {
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, send_encodings: vec![] };
        let transceiver = pc.add_transceiver_from_track(track, Some(init)).await?;
        let sender = transceiver.sender().await;
        let wanted = keyframe_wanted.clone();
        tokio::spawn(async move {
            while let Ok((packets, _)) = sender.read_rtcp().await {
                if packets
                    .iter()
                    .any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
                {
                    wanted.store(true, Ordering::Relaxed);
                }
            }
        });
    }
    Ok(Sender { audio, video, keyframe_wanted })
}

fn add_receivers(pc: &RTCPeerConnection, shared: Arc<Shared>, stats: Arc<PathStats>) {
    pc.on_track(Box::new(move |track, _, _| {
        let shared = shared.clone();
        let stats = stats.clone();
        Box::pin(async move {
            tokio::spawn(receive(track, shared, stats));
        })
    }));
}

/// Reads a track until it ends: latency of every packet, and loss from sequence-number gaps, while measuring.
async fn receive(track: Arc<TrackRemote>, shared: Arc<Shared>, stats: Arc<PathStats>) {
    let mut first: Option<u64> = None;
    let mut highest = 0u64;
    let mut received = 0u64;
    let mut latencies = Vec::new();
    let mut last_extended: Option<u64> = None;
    let settle = |first: &mut Option<u64>, highest: u64, received: &mut u64, latencies: &mut Vec<u32>| {
        if let Some(start) = first.take() {
            let expected = highest - start + 1;
            stats.received.fetch_add(*received, Ordering::Relaxed);
            stats.lost.fetch_add(expected.saturating_sub(*received), Ordering::Relaxed);
            stats.tracks.fetch_add(1, Ordering::Relaxed);
            stats.latencies_us.lock().unwrap_or_else(|p| p.into_inner()).append(latencies);
        }
        *received = 0;
    };
    while let Ok((packet, _)) = track.read_rtp().await {
        let now = now_micros();
        let sequence = packet.header.sequence_number;
        // Extend the 16-bit sequence number, nearest to the last one.
        let extended = match last_extended {
            None => u64::from(sequence) + (1 << 32),
            Some(last) => {
                let delta = sequence.wrapping_sub(last as u16) as i16;
                last.wrapping_add_signed(i64::from(delta))
            }
        };
        last_extended = Some(extended);
        if !shared.measuring.load(Ordering::Relaxed) {
            settle(&mut first, highest, &mut received, &mut latencies);
            continue;
        }
        let start = *first.get_or_insert(extended);
        if extended < start {
            continue;
        }
        highest = highest.max(extended);
        received += 1;
        if let Some(stamp) = packet.payload.get(STAMP_AT..STAMP_AT + 8) {
            let sent = u64::from_le_bytes(stamp.try_into().unwrap_or_default());
            latencies.push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
        }
    }
    settle(&mut first, highest, &mut received, &mut latencies);
}

/// Publishes synthetic VP8 and Opus until the run ends, each from a task of its own.
fn publish(sender: Sender, shared: Arc<Shared>, published: Arc<Published>, seed: u64) -> [JoinHandle<()>; 2] {
    let audio = tokio::spawn(publish_audio(sender.audio, shared.clone(), published.clone(), seed));
    let video = tokio::spawn(publish_video(sender.video, sender.keyframe_wanted, shared, published, seed));
    [audio, video]
}

async fn publish_audio(track: Arc<TrackLocalStaticRTP>, shared: Arc<Shared>, published: Arc<Published>, seed: u64) {
    let mut rng = SplitMix(seed ^ 0xa0d1_0000);
    let mut clock = tokio::time::interval(AUDIO_INTERVAL);
    let (mut sequence, base) = (rng.next_u64() as u16, rng.next_u64() as u32);
    let started = Instant::now();
    while shared.running.load(Ordering::Relaxed) {
        clock.tick().await;
        let timestamp = base.wrapping_add((started.elapsed().as_secs_f64() * 48_000.0) as u32);
        let offset = (rng.next_u64() as usize) % (shared.filler.len() - AUDIO_PAYLOAD);
        let mut payload = BytesMut::from(&shared.filler[offset..offset + AUDIO_PAYLOAD]);
        payload[0] = 0xfc; // Opus TOC: SILK wideband 20 ms, one frame; nothing decodes it.
        write(&track, &mut sequence, timestamp, false, payload, &shared, &published).await;
    }
}

/// Frames at 30 per second, each cut into packets of at most [`MAX_PAYLOAD`] bytes, sent `pace` packets a
/// millisecond (as a browser's pacer spreads a keyframe out), or all at once where `pace` is 0.
async fn publish_video(
    track: Arc<TrackLocalStaticRTP>,
    keyframe_wanted: Arc<AtomicBool>,
    shared: Arc<Shared>,
    published: Arc<Published>,
    seed: u64,
) {
    let mut rng = SplitMix(seed);
    let mut clock = tokio::time::interval(Duration::from_secs_f64(1.0 / FPS));
    let frame_bytes = VIDEO_BITRATE / 8.0 / FPS * KEYFRAME_INTERVAL as f64;
    let delta_size = (frame_bytes / (KEYFRAME_INTERVAL as f64 - 1.0 + KEYFRAME_RATIO as f64)) as usize;
    let (mut sequence, base) = (rng.next_u64() as u16, rng.next_u64() as u32);
    let started = Instant::now();
    let mut frame = 0u64;
    let mut last_keyframe: Option<Instant> = None;
    while shared.running.load(Ordering::Relaxed) {
        clock.tick().await;
        let now = Instant::now();
        let requested = keyframe_wanted.load(Ordering::Relaxed)
            && last_keyframe.is_none_or(|last| now - last >= FORCED_KEYFRAME_INTERVAL);
        let keyframe = frame.is_multiple_of(KEYFRAME_INTERVAL) || requested;
        if keyframe {
            keyframe_wanted.store(false, Ordering::Relaxed);
            last_keyframe = Some(now);
        }
        frame += 1;
        let size = if keyframe { delta_size * KEYFRAME_RATIO } else { delta_size };
        let timestamp = base.wrapping_add((started.elapsed().as_secs_f64() * 90_000.0) as u32);
        let offset = (rng.next_u64() as usize) % (shared.filler.len() - size);
        let data = &shared.filler[offset..offset + size];
        let chunks = size.div_ceil(MAX_PAYLOAD - 1);
        for (index, chunk) in data.chunks(size.div_ceil(chunks)).enumerate() {
            if shared.pace > 0 && index > 0 && index % shared.pace == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut payload = BytesMut::with_capacity(1 + chunk.len());
            // VP8 payload descriptor: S (start of partition 0) on the frame's first packet.
            payload.put_u8(if index == 0 { 0x10 } else { 0x00 });
            payload.put_slice(chunk);
            if index == 0 {
                // Frame tag (keyframe bit, show_frame); a keyframe's start code and 1280×720.
                payload[1] = if keyframe { 0x10 } else { 0x11 };
                payload[4..11].copy_from_slice(&[0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02]);
            }
            let marker = index + 1 == chunks;
            write(&track, &mut sequence, timestamp, marker, payload, &shared, &published).await;
        }
    }
}

async fn write(
    track: &TrackLocalStaticRTP,
    sequence: &mut u16,
    timestamp: u32,
    marker: bool,
    mut payload: BytesMut,
    shared: &Shared,
    published: &Published,
) {
    payload[STAMP_AT..STAMP_AT + 8].copy_from_slice(&now_micros().to_le_bytes());
    let packet = RtpPacket {
        header: RtpHeader { version: 2, marker, sequence_number: *sequence, timestamp, ..Default::default() },
        payload: payload.freeze(),
    };
    *sequence = sequence.wrapping_add(1);
    let length = packet.payload.len() as u64;
    if track.write_rtp(&packet).await.is_ok() && shared.measuring.load(Ordering::Relaxed) {
        published.packets.fetch_add(1, Ordering::Relaxed);
        published.bytes.fetch_add(length, Ordering::Relaxed);
    }
}

/// Sets the local description and waits for ICE gathering, so the description holds every candidate.
async fn local_sdp(pc: &RTCPeerConnection, description: RTCSessionDescription) -> Result<String, BoxError> {
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(description).await?;
    let _ = gathered.recv().await;
    Ok(pc.local_description().await.ok_or("no local description")?.sdp)
}

fn connected_signal(pc: &RTCPeerConnection) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    let tx = Mutex::new(Some(tx));
    pc.on_peer_connection_state_change(Box::new(move |state| {
        if state == RTCPeerConnectionState::Connected
            && let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            let _ = tx.send(());
        }
        Box::pin(async {})
    }));
    rx
}

/// One hearing participant's client: sends audio and video, receives one pair per slot.
async fn join(
    api: Arc<API>,
    sfu: Arc<SfuChild>,
    hearing: u64,
    slot: usize,
    shared: Arc<Shared>,
    stats: Arc<PathStats>,
) -> Result<(Arc<RTCPeerConnection>, Sender, oneshot::Receiver<()>), BoxError> {
    let member = format!("h{hearing}-p{slot}");
    sfu.call(json!({"op": "add", "hearing": hearing, "member": member, "slot": slot})).await?;
    let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    let sender = add_sender(&pc, &member).await?;
    for _ in 0..PARTICIPANTS {
        for kind in [RTPCodecType::Audio, RTPCodecType::Video] {
            let init =
                RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, send_encodings: vec![] };
            pc.add_transceiver_from_kind(kind, Some(init)).await?;
        }
    }
    add_receivers(&pc, shared, stats);
    let connected = connected_signal(&pc);
    let offer = pc.create_offer(None).await?;
    let offer = local_sdp(&pc, offer).await?;
    let reply = sfu.call(json!({"op": "connect", "hearing": hearing, "member": member, "offer": offer})).await?;
    let answer = reply["answer"].as_str().ok_or("no answer")?.to_owned();
    pc.set_remote_description(RTCSessionDescription::answer(answer)?).await?;
    Ok((pc, sender, connected))
}

/// Two clients connected to each other with no SFU: the first publishes, the second receives.
async fn direct_pair(
    api: &API,
    shared: &Arc<Shared>,
    stats: &Arc<PathStats>,
) -> Result<([Arc<RTCPeerConnection>; 2], Sender, oneshot::Receiver<()>), BoxError> {
    let publisher = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    let receiver = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    let sender = add_sender(&publisher, "direct").await?;
    add_receivers(&receiver, shared.clone(), stats.clone());
    let connected = connected_signal(&receiver);
    let offer = publisher.create_offer(None).await?;
    let offer = local_sdp(&publisher, offer).await?;
    receiver.set_remote_description(RTCSessionDescription::offer(offer)?).await?;
    let answer = receiver.create_answer(None).await?;
    let answer = local_sdp(&receiver, answer).await?;
    publisher.set_remote_description(RTCSessionDescription::answer(answer)?).await?;
    Ok(([publisher, receiver], sender, connected))
}

// ---------------------------------------------------------------------------------------------------------------
// One run: N hearings at once

struct Config {
    seconds: f64,
    warmup: f64,
    max_hearings: u64,
    core_budget: f64,
    pace: usize,
}

struct RunResult {
    hearings: u64,
    window: f64,
    sfu_cpu: f64,
    clients_cpu: f64,
    forwarded: u64,
    published: u64,
    published_bytes: u64,
    recorder: Value,
    sfu_path: Percentiles,
    direct_path: Percentiles,
    sfu_received: u64,
    sfu_lost: u64,
    direct_lost: u64,
    direct_received: u64,
    /// Datagrams the kernel dropped during the window because a socket's receive buffer was full, at the SFU's
    /// sockets and at the clients'.
    socket_drops: [u64; 2],
    /// CPU seconds the whole machine spent busy during the window (every process, ours included).
    machine_busy: Option<f64>,
}

struct Percentiles {
    samples: usize,
    p50_us: f64,
    p99_us: f64,
}

fn percentiles(stats: &PathStats) -> Percentiles {
    let mut samples = std::mem::take(&mut *stats.latencies_us.lock().unwrap_or_else(|p| p.into_inner()));
    samples.sort_unstable();
    let at = |q: f64| match samples.len() {
        0 => f64::NAN,
        n => f64::from(samples[((n as f64 * q) as usize).min(n - 1)]),
    };
    Percentiles { samples: samples.len(), p50_us: at(0.50), p99_us: at(0.99) }
}

async fn run_hearings(api: &Arc<API>, config: &Config, hearings: u64, filler: &Bytes) -> Result<RunResult, BoxError> {
    let sfu = Arc::new(SfuChild::spawn()?);
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        running: AtomicBool::new(true),
        filler: filler.clone(),
        pace: config.pace,
    });
    let (through, direct) = (Arc::new(PathStats::default()), Arc::new(PathStats::default()));
    let published = Arc::new(Published::default());
    let unpublished = Arc::new(Published::default());

    // Everyone joins at once.
    let joins: Vec<_> = (0..hearings)
        .flat_map(|h| (0..PARTICIPANTS).map(move |slot| (h, slot)))
        .map(|(h, slot)| tokio::spawn(join(api.clone(), sfu.clone(), h, slot, shared.clone(), through.clone())))
        .collect();
    let mut peers = Vec::new();
    let mut publishers = Vec::new();
    let mut connected = Vec::new();
    for (index, joined) in joins.into_iter().enumerate() {
        let (pc, sender, up) = joined.await??;
        peers.push(pc);
        connected.push(up);
        publishers.extend(publish(sender, shared.clone(), published.clone(), index as u64));
    }
    let (pair, sender, up) = direct_pair(api, &shared, &direct).await?;
    connected.push(up);
    publishers.extend(publish(sender, shared.clone(), unpublished.clone(), u64::MAX));
    for up in connected {
        tokio::time::timeout(Duration::from_secs(30), up).await.map_err(|_| "a client did not connect in 30 s")??;
    }
    for h in 0..hearings {
        for slot in 0..PARTICIPANTS {
            sfu.call(json!({"op": "zone", "hearing": h, "member": format!("h{h}-p{slot}")})).await?;
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(config.warmup)).await;

    let cpu_start = sfu.call(json!({"op": "record"})).await?["cpu"].as_f64().unwrap_or(0.0);
    let clients_start = process_cpu_seconds()?;
    let sfu_pid = sfu.pid().await.ok_or("the SFU process has no pid")?.to_string();
    let drops_start = [socket_drops(&sfu_pid), socket_drops("self")];
    let busy_start = machine_busy_seconds();
    let started = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(config.seconds)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let window = started.elapsed().as_secs_f64();
    let busy = machine_busy_seconds().zip(busy_start).map(|(end, start)| end - start);
    let drops_end = [socket_drops(&sfu_pid), socket_drops("self")];
    let socket_drops = [0, 1].map(|at| drops_end[at].saturating_sub(drops_start[at]));
    let clients_cpu = process_cpu_seconds()? - clients_start;
    let recorder = sfu.call(json!({"op": "stop"})).await?;
    let sfu_cpu = recorder["cpu"].as_f64().unwrap_or(0.0) - cpu_start;

    shared.running.store(false, Ordering::Relaxed);
    for publisher in publishers {
        let _ = publisher.await;
    }
    for pc in peers.iter().chain(pair.iter()) {
        let _ = pc.close().await;
    }
    sfu.finish().await;
    // The readers settle their counts when their tracks end.
    tokio::time::sleep(Duration::from_millis(500)).await;

    Ok(RunResult {
        hearings,
        window,
        sfu_cpu,
        clients_cpu,
        forwarded: through.tracks.load(Ordering::Relaxed),
        published: published.packets.load(Ordering::Relaxed),
        published_bytes: published.bytes.load(Ordering::Relaxed),
        recorder,
        sfu_path: percentiles(&through),
        direct_path: percentiles(&direct),
        sfu_received: through.received.load(Ordering::Relaxed),
        sfu_lost: through.lost.load(Ordering::Relaxed),
        direct_received: direct.received.load(Ordering::Relaxed),
        direct_lost: direct.lost.load(Ordering::Relaxed),
        socket_drops,
        machine_busy: busy,
    })
}

/// Datagrams the kernel dropped (receive buffer full) at the UDP sockets process `pid` (or `self`) holds, from the
/// `drops` column of /proc/net/udp and udp6.
fn socket_drops(pid: &str) -> u64 {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect();
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let inode: u64 = fields.get(9)?.parse().ok()?;
                    if !inodes.contains(&inode) {
                        return None;
                    }
                    fields.get(12)?.parse::<u64>().ok()
                })
                .sum::<u64>()
        })
        .sum()
}

/// CPU seconds all cores have spent busy (not idle, not waiting for I/O) since boot, from /proc/stat.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|field| field.parse().ok()).collect();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((fields.iter().sum::<u64>() - idle) as f64 / clock_ticks_per_second())
}

// ---------------------------------------------------------------------------------------------------------------
// The machine's own limits

struct Machine {
    /// OpenSSL AES-128-GCM over 1024-byte blocks, bytes per second (one core).
    aes_gcm: Option<f64>,
    /// 1200-byte UDP datagrams one thread sends and another receives over loopback, per second.
    udp_packets: f64,
}

fn measure_machine() -> Result<Machine, BoxError> {
    let aes_gcm =
        openssl_speed(&["-seconds", "2", "-evp", "aes-128-gcm"], |stdout| openssl_rate(stdout, "AES-128-GCM", 1024));
    if let Some(rate) = aes_gcm {
        println!("openssl aes-128-gcm, 1024-byte blocks: {:.0} MB/s = {:.0}k packets/s", rate / 1e6, rate / 1024e3);
    }
    let udp_packets = udp_loopback(Duration::from_secs(2))?;
    println!("UDP loopback, 1200-byte datagrams, one thread to another: {:.0}k packets/s", udp_packets / 1e3);
    Ok(Machine { aes_gcm, udp_packets })
}

fn udp_loopback(duration: Duration) -> Result<f64, BoxError> {
    let receiver = UdpSocket::bind("127.0.0.1:0")?;
    receiver.set_read_timeout(Some(Duration::from_millis(200)))?;
    let address = receiver.local_addr()?;
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    sender.connect(address)?;
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let counting = std::thread::spawn(move || {
        let mut buffer = [0u8; 1500];
        let mut count = 0u64;
        let mut started = None;
        while receiver.recv(&mut buffer).is_ok() {
            started.get_or_insert_with(Instant::now);
            count += 1;
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        (count, started.map(|s| s.elapsed()))
    });
    let datagram = [0x5au8; 1200];
    let started = Instant::now();
    while started.elapsed() < duration {
        // A full socket buffer drops; what counts is what arrives.
        let _ = sender.send(&datagram);
    }
    done.store(true, Ordering::Relaxed);
    let (count, elapsed) = counting.join().map_err(|_| "the UDP receiver panicked")?;
    Ok(count as f64 / elapsed.unwrap_or(duration).as_secs_f64().max(duration.as_secs_f64()))
}

// ---------------------------------------------------------------------------------------------------------------

async fn bench() -> Result<(), BoxError> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let config = Config {
        seconds: env_or("CUSTODIA_BENCH_SECONDS", 15.0)?,
        warmup: env_or("CUSTODIA_BENCH_WARMUP", 3.0)?,
        max_hearings: env_or("CUSTODIA_BENCH_MAX_HEARINGS", 8)?,
        core_budget: env_or("CUSTODIA_BENCH_CORE_BUDGET", (cores as f64 / 2.0).max(1.0))?,
        pace: env_or("CUSTODIA_BENCH_PACE", 2)?,
    };
    epoch();
    println!(
        "custodia-recorder SFU benchmark: {cores} cores; {PARTICIPANTS} participants per hearing, each VP8 \
         {:.1} Mbit/s {FPS} fps + Opus 50 packets/s; {} s window after {} s warm-up; SFU core budget {}; video paced at {} packets/ms (0: unpaced)",
        VIDEO_BITRATE / 1e6,
        config.seconds,
        config.warmup,
        config.core_budget,
        config.pace
    );

    println!("\n-- machine limits --");
    let machine = measure_machine()?;

    let api = Arc::new(client_api()?);
    let mut filler = vec![0u8; 4 << 20];
    SplitMix(0x5f_5eed).fill(&mut filler);
    let filler = Bytes::from(filler);

    println!("\n-- hearings relayed and recorded at once --");
    let mut results = Vec::new();
    let mut stopped = format!("reached CUSTODIA_BENCH_MAX_HEARINGS={}", config.max_hearings);
    for hearings in 1..=config.max_hearings {
        let result = run_hearings(&api, &config, hearings, &filler).await?;
        let sfu_cores = result.sfu_cpu / result.window;
        let clients_cores = result.clients_cpu / result.window;
        let recorder_lost = result.recorder["lost"].as_u64().unwrap_or(0);
        println!(
            "N={hearings}: SFU {:.0}% CPU, clients {:.0}%, {} forwarded tracks, recorder lost {recorder_lost}, \
             receivers lost {}, UDP drops at the SFU's sockets {} and at the clients' {}",
            sfu_cores * 100.0,
            clients_cores * 100.0,
            result.forwarded,
            result.sfu_lost,
            result.socket_drops[0],
            result.socket_drops[1]
        );
        let reason = if recorder_lost > 0 || result.sfu_lost > 0 {
            Some(format!("packets lost at N={hearings}"))
        } else if sfu_cores >= 0.9 * config.core_budget {
            Some(format!(
                "the SFU used {:.0}% of its core budget at N={hearings}",
                100.0 * sfu_cores / config.core_budget
            ))
        } else if sfu_cores + clients_cores >= 0.9 * cores as f64 {
            Some(format!(
                "the machine's CPU was {:.0}% busy at N={hearings}",
                100.0 * (sfu_cores + clients_cores) / cores as f64
            ))
        } else {
            None
        };
        results.push(result);
        if let Some(reason) = reason {
            stopped = reason;
            break;
        }
    }
    print_summary(&results, &machine, cores, &stopped);
    Ok(())
}

/// The SFU's figures for `./x bench`'s summary: the capacity (the best loss-free run), its tracks per core beside
/// LiveKit's, and the latency it adds beside a direct pair under the same load.
fn add_headlines(clean: Option<&RunResult>, stopped: &str) {
    let headlines = match clean {
        Some(best) => {
            let sfu_cores = best.sfu_cpu / best.window;
            let per_core = best.forwarded as f64 / sfu_cores;
            let ms = |us: f64| us / 1000.0;
            let added = ms(best.sfu_path.p99_us - best.direct_path.p99_us);
            vec![
                Headline {
                    measurement: "hearings: six-person, relayed and recorded, no packet lost".into(),
                    figure: format!("{} hearings, {} forwarded tracks", best.hearings, best.forwarded),
                    against: format!("stopped: {stopped}"),
                    ratio: String::new(),
                },
                Headline {
                    measurement: "SFU: forwarded tracks per core".into(),
                    figure: format!("{per_core:.0}"),
                    against: format!("LiveKit's published ~{LIVEKIT_TRACKS_PER_CORE:.0}"),
                    ratio: format!("{:.2}", per_core / LIVEKIT_TRACKS_PER_CORE),
                },
                Headline {
                    measurement: "SFU: added latency, p99".into(),
                    figure: format!("{added:.2} ms"),
                    against: format!("direct pair, same run: p99 {:.2} ms", ms(best.direct_path.p99_us)),
                    ratio: format!("{:.2}", best.sfu_path.p99_us / best.direct_path.p99_us.max(1.0)),
                },
            ]
        }
        None => vec![Headline {
            measurement: "hearings: six-person, relayed and recorded, no packet lost".into(),
            figure: "none free of loss".into(),
            against: format!("stopped: {stopped}"),
            ratio: String::new(),
        }],
    };
    if let Err(err) = add_to_summary("sfu", &headlines) {
        println!("could not add to the summary: {err}");
    }
}

fn print_summary(results: &[RunResult], machine: &Machine, cores: usize, stopped: &str) {
    println!("\n-- summary ({cores} cores; stopped: {stopped}) --\n");
    let mut table = Table::new([
        "hearings",
        "forwarded tracks",
        "SFU CPU",
        "clients CPU",
        "SFU CPU ms/s per track",
        "tracks per core",
        "published pkts (Mbit/s)",
        "recorder took / lost",
        "receivers got / lost",
        "other processes CPU",
        "UDP drops at SFU / clients",
        "segments sealed",
        "SFU path p50 / p99",
        "direct p50 / p99",
        "added p50 / p99",
    ]);
    for r in results {
        let sfu_cores = r.sfu_cpu / r.window;
        let ms = |us: f64| format!("{:.2} ms", us / 1000.0);
        table.row([
            r.hearings.to_string(),
            format!("{} (of {})", r.forwarded, r.hearings as usize * FORWARDED_PER_HEARING),
            format!("{:.0}%", sfu_cores * 100.0),
            format!("{:.0}%", r.clients_cpu / r.window * 100.0),
            format!("{:.2}", sfu_cores * 1000.0 / r.forwarded.max(1) as f64),
            format!("{:.0}", r.forwarded as f64 / sfu_cores),
            format!("{} ({:.1})", r.published, r.published_bytes as f64 * 8.0 / r.window / 1e6),
            format!("{} / {}", r.recorder["packets"].as_u64().unwrap_or(0), r.recorder["lost"].as_u64().unwrap_or(0)),
            format!("{} / {}", r.sfu_received, r.sfu_lost),
            r.machine_busy.map_or("?".to_owned(), |busy| {
                format!("{:.0}%", (busy - r.sfu_cpu - r.clients_cpu).max(0.0) / r.window * 100.0)
            }),
            format!("{} / {}", r.socket_drops[0], r.socket_drops[1]),
            r.recorder["segments"].as_u64().unwrap_or(0).to_string(),
            format!("{} / {}", ms(r.sfu_path.p50_us), ms(r.sfu_path.p99_us)),
            format!("{} / {}", ms(r.direct_path.p50_us), ms(r.direct_path.p99_us)),
            format!(
                "{} / {}",
                ms(r.sfu_path.p50_us - r.direct_path.p50_us),
                ms(r.sfu_path.p99_us - r.direct_path.p99_us)
            ),
        ]);
    }
    table.print();
    for r in results {
        let errors = r.recorder["errors"].as_u64().unwrap_or(0);
        println!(
            "N={}: {:.1} s window; latency samples {} through the SFU, {} direct (direct pair got {} packets, lost \
             {}); recorder: {} recordings, {} frames, {} dropped, {} late, {} errors, {:.1} MB sealed and hashed",
            r.hearings,
            r.window,
            r.sfu_path.samples,
            r.direct_path.samples,
            r.direct_received,
            r.direct_lost,
            r.recorder["recordings"].as_u64().unwrap_or(0),
            r.recorder["frames"].as_u64().unwrap_or(0),
            r.recorder["frames_dropped"].as_u64().unwrap_or(0),
            r.recorder["late"].as_u64().unwrap_or(0),
            errors,
            r.recorder["segment_bytes"].as_u64().unwrap_or(0) as f64 / 1e6,
        );
    }

    // The best loss-free run is the capacity.
    let clean = results
        .iter()
        .filter(|r| r.sfu_lost == 0 && r.recorder["lost"].as_u64().unwrap_or(1) == 0)
        .max_by_key(|r| r.hearings);
    println!();
    match clean {
        Some(best) => {
            let sfu_cores = best.sfu_cpu / best.window;
            let per_core = best.forwarded as f64 / sfu_cores;
            let packets = (best.sfu_received + best.published) as f64 / best.window;
            println!(
                "Capacity: {} six-participant hearings relayed and recorded with no packet lost, {} forwarded tracks, \
                 on {:.2} cores of SFU CPU: {per_core:.0} forwarded tracks per core ({:.2} ms CPU per track per \
                 second).",
                best.hearings,
                best.forwarded,
                sfu_cores,
                sfu_cores * 1000.0 / best.forwarded as f64
            );
            println!(
                "Against LiveKit (~{LIVEKIT_TRACKS_PER_CORE:.0} forwarded tracks per core): {:.2}×; against mediasoup \
                 (~{MEDIASOUP_CONSUMERS_PER_WORKER:.0} consumers per worker/core): {:.2}×.",
                per_core / LIVEKIT_TRACKS_PER_CORE,
                per_core / MEDIASOUP_CONSUMERS_PER_WORKER
            );
            println!(
                "Machine: the SFU moved {:.0}k packets/s in and out ({:.0}k per SFU core); UDP loopback alone \
                 carries {:.0}k/s one thread to another{}.",
                packets / 1e3,
                packets / sfu_cores / 1e3,
                machine.udp_packets / 1e3,
                machine
                    .aes_gcm
                    .map(|rate| format!(", and one core seals {:.0}k 1 KiB packets/s with AES-128-GCM", rate / 1024e3))
                    .unwrap_or_default()
            );
        }
        None => println!("No run was free of loss: no capacity to report."),
    }
    add_headlines(clean, stopped);
    // Where the first loss came from, as far as the kernel's counters tell.
    if let Some(lossy) = results.iter().find(|r| r.sfu_lost > 0 || r.recorder["lost"].as_u64().unwrap_or(0) > 0) {
        let others = lossy.machine_busy.map(|busy| (busy - lossy.sfu_cpu - lossy.clients_cpu).max(0.0) / lossy.window);
        println!(
            "Loss at N={}: the recorder lost {} packets (the gateway-to-recorder path), the receivers {}; the kernel \
             dropped {} datagrams at the SFU's sockets and {} at the clients' (full receive buffers){}.",
            lossy.hearings,
            lossy.recorder["lost"].as_u64().unwrap_or(0),
            lossy.sfu_lost,
            lossy.socket_drops[0],
            lossy.socket_drops[1],
            others.map_or(String::new(), |others| format!(
                "; other processes used {:.0}% of a core meanwhile (SFU {:.0}%, clients {:.0}%)",
                others * 100.0,
                lossy.sfu_cpu / lossy.window * 100.0,
                lossy.clients_cpu / lossy.window * 100.0
            ))
        );
        if lossy.socket_drops[0] == 0 && lossy.socket_drops[1] > 0 && lossy.recorder["lost"].as_u64() == Some(0) {
            println!(
                "  The SFU's sockets dropped nothing and the recorder lost nothing: the loss is at this bench's own \
                 clients, whose receive buffers overflowed (they share this machine's cores with the SFU and \
                 whatever else runs), not in the gateway."
            );
        }
    }
}
