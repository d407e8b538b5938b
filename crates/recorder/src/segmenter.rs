//! From frames of all of a publisher's tracks to sealed WebM segments.
//!
//! Frames from the tracks are merged in timeline order (held for [`RecordingConfig::reorder_window`], since the
//! tracks' pipelines differ in delay) and copied, as they are, into WebM files. A file opens at a video keyframe
//! (or, for a publisher with no video, at the first audio frame); once it has run for
//! [`RecordingConfig::segment_target`], it is closed at the next video keyframe (asked for from the sender once the
//! segment is due), forced to disk and handed to the [`SegmentSealer`] before the next one is sealed. Each file's own timestamps start at zero; where it sits on
//! the recording's timeline is in [`SealedSegment::start_ms`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custodia_media::{WebmError, WebmSegmentWriter, WebmTrack};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::engine::{IncomingTrack, KeyframeRequester, MediaKind};
use crate::timeline::ClockSync;
use crate::track::{self, Frame, TrackMessage, TrackStats};

/// Where and how a recording is written.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// The directory the segment files are written to; it must exist. Files are named `segment-00000.webm` and
    /// so on, and are never overwritten.
    pub dir: PathBuf,
    /// How long a segment runs before it is cut at the next video keyframe.
    pub segment_target: Duration,
    /// How long frames are held to be put in timeline order across tracks.
    pub reorder_window: Duration,
}

impl RecordingConfig {
    pub fn new(dir: PathBuf) -> Self {
        RecordingConfig { dir, segment_target: Duration::from_secs(10), reorder_window: Duration::from_millis(1000) }
    }
}

/// A closed segment, complete and on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    /// 0 for the first segment of a recording, then 1, 2, …
    pub index: u32,
    pub path: PathBuf,
    /// Where the segment starts on the recording's timeline, in milliseconds since the recording began.
    pub start_ms: i64,
    /// The last frame's time within the segment, in milliseconds.
    pub last_frame_ms: i64,
    pub tracks: Vec<MediaKind>,
    pub packets: u64,
}

/// Why a [`SegmentSealer`] could not take a segment: its own error, with its causes.
pub type SealError = Box<dyn std::error::Error + Send + Sync>;

/// Takes each segment as soon as it is closed: stores it write-once and records its digest. Segments are handed
/// over one at a time, in order; the next is not handed over before this returns. An error stops the recording
/// ([`RecordingError::Seal`]).
#[async_trait::async_trait]
pub trait SegmentSealer: Send + Sync {
    async fn on_segment_sealed(&self, segment: &SealedSegment) -> Result<(), SealError>;
}

/// What went wrong writing or sealing a recording; each keeps its cause. After any of them nothing more of the
/// recording is written, so that no segment holds a hole that looks whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    #[error("opening segment {index}")]
    Open {
        index: u32,
        #[source]
        source: WebmError,
    },
    #[error("writing segment {index}")]
    Write {
        index: u32,
        #[source]
        source: WebmError,
    },
    #[error("closing segment {index}")]
    Close {
        index: u32,
        #[source]
        source: WebmError,
    },
    /// The [`SegmentSealer`] did not take the segment (it stays on disk).
    #[error("sealing segment {index}")]
    Seal {
        index: u32,
        #[source]
        source: SealError,
    },
    /// The task that writes the segments panicked or was cancelled.
    #[error("the segment writer failed")]
    Writer(#[source] tokio::task::JoinError),
    /// The task that runs the recording panicked or was cancelled.
    #[error("the recording task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// What a finished recording holds, for the minutes.
#[derive(Debug, Default)]
pub struct RecordingSummary {
    pub segments: Vec<SealedSegment>,
    pub tracks: Vec<TrackStats>,
    /// Frames that came before the first video keyframe, or on a track that began after the open segment did
    /// (they have no stream in that file), and so are in no segment.
    pub frames_outside_segments: u64,
    /// Frames whose timestamp went backwards on their track and were written at the previous frame's time.
    pub frames_clamped: u64,
    /// What went wrong writing or sealing.
    pub errors: Vec<RecordingError>,
}

/// A recording in progress: give it tracks, then stop it.
#[derive(Debug)]
pub struct Recording {
    tracks: mpsc::UnboundedSender<IncomingTrack>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<RecordingSummary>,
}

impl Recording {
    /// Starts recording; the timeline's zero is now.
    pub fn start(config: RecordingConfig, sealer: Arc<dyn SegmentSealer>) -> Self {
        let (tracks, incoming) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let done = tokio::spawn(run(config, sealer, incoming, stopped));
        Recording { tracks, stop: Some(stop), done }
    }

    /// Where the engine hands this recording its tracks.
    pub fn track_sender(&self) -> mpsc::UnboundedSender<IncomingTrack> {
        self.tracks.clone()
    }

    /// Stops taking tracks, waits (briefly) for the tracks to end, seals the open segment and returns the
    /// summary. Close the peer connection first, so that the tracks end.
    pub async fn stop(mut self) -> RecordingSummary {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.done.await {
            Ok(summary) => summary,
            Err(e) => {
                let error = RecordingError::Task(e);
                tracing::error!(error = %crate::Chain(&error), "recording lost");
                RecordingSummary { errors: vec![error], ..Default::default() }
            }
        }
    }
}

/// Frames (and track news) waiting for the segment writer, over all of a recording's tracks: some twenty seconds of
/// audio and video. A writer that falls behind makes the track readers wait ([`crate::track::run`]).
pub const FRAME_QUEUE: usize = 2048;

/// How often, in timeline milliseconds, a keyframe is asked for while a due segment waits for one.
const CUT_REQUEST_INTERVAL_MS: i64 = 1000;

/// How long to wait for tracks to end after a stop before cutting them off.
const TRACK_END_GRACE: Duration = Duration::from_secs(3);

async fn run(
    config: RecordingConfig,
    sealer: Arc<dyn SegmentSealer>,
    mut incoming: mpsc::UnboundedReceiver<IncomingTrack>,
    mut stopped: oneshot::Receiver<()>,
) -> RecordingSummary {
    let sync = ClockSync::new(Instant::now());
    let (messages, frames) = mpsc::channel(FRAME_QUEUE);
    let handle = tokio::runtime::Handle::current();
    let mux = tokio::task::spawn_blocking(move || Segmenter::new(config, sealer, handle).run(frames));
    let mut readers = JoinSet::new();
    loop {
        tokio::select! {
            track = incoming.recv() => match track {
                Some(track) => { readers.spawn(track::run(track, sync.clone(), messages.clone())); }
                None => break,
            },
            _ = &mut stopped => break,
        }
    }
    let ended = tokio::time::timeout(TRACK_END_GRACE, async { while readers.join_next().await.is_some() {} }).await;
    if ended.is_err() {
        tracing::warn!("tracks did not end after the recording stopped; cutting them off");
        readers.shutdown().await;
    }
    drop(messages);
    match mux.await {
        Ok(summary) => summary,
        Err(e) => {
            let error = RecordingError::Writer(e);
            tracing::error!(error = %crate::Chain(&error), "recording lost");
            RecordingSummary { errors: vec![error], ..Default::default() }
        }
    }
}

struct OpenSegment {
    index: u32,
    start_ms: i64,
    writer: WebmSegmentWriter,
    streams: Vec<MediaKind>,
}

struct Segmenter {
    config: RecordingConfig,
    sealer: Arc<dyn SegmentSealer>,
    runtime: tokio::runtime::Handle,
    known: BTreeSet<MediaKind>,
    /// Asks the video tracks' senders for a keyframe, so that a segment that is due can be cut promptly.
    keyframes: Vec<Arc<dyn KeyframeRequester>>,
    /// When (timeline ms) a keyframe was last asked for to cut the open segment.
    cut_requested_ms: Option<i64>,
    /// Frames waiting to be put in order, by (timeline time, arrival order).
    held: BTreeMap<(i64, u64), Frame>,
    arrivals: u64,
    newest_ms: Option<i64>,
    open: Option<OpenSegment>,
    next_index: u32,
    /// Set after a failure to write: nothing more is written, so no segment holds a hole that looks whole.
    failed: bool,
    summary: RecordingSummary,
}

impl Segmenter {
    fn new(config: RecordingConfig, sealer: Arc<dyn SegmentSealer>, runtime: tokio::runtime::Handle) -> Self {
        Segmenter {
            config,
            sealer,
            runtime,
            known: BTreeSet::new(),
            keyframes: Vec::new(),
            cut_requested_ms: None,
            held: BTreeMap::new(),
            arrivals: 0,
            newest_ms: None,
            open: None,
            next_index: 0,
            failed: false,
            summary: RecordingSummary::default(),
        }
    }

    fn run(mut self, mut messages: mpsc::Receiver<TrackMessage>) -> RecordingSummary {
        while let Some(message) = messages.blocking_recv() {
            match message {
                TrackMessage::Started { kind, keyframes } => {
                    self.known.insert(kind);
                    if kind == MediaKind::Video {
                        self.keyframes.push(keyframes);
                    }
                }
                TrackMessage::Frame(frame) => {
                    self.newest_ms = Some(self.newest_ms.map_or(frame.pts_ms, |n| n.max(frame.pts_ms)));
                    self.held.insert((frame.pts_ms, self.arrivals), frame);
                    self.arrivals += 1;
                    let window = i64::try_from(self.config.reorder_window.as_millis()).unwrap_or(i64::MAX);
                    let until = self.newest_ms.unwrap_or(i64::MIN).saturating_sub(window);
                    while let Some(entry) = self.held.first_entry() {
                        if entry.key().0 > until {
                            break;
                        }
                        let frame = entry.remove();
                        self.place(frame);
                    }
                }
                TrackMessage::Ended(stats) => self.summary.tracks.push(stats),
            }
        }
        while let Some((_, frame)) = self.held.pop_first() {
            self.place(frame);
        }
        self.close();
        self.summary
    }

    fn place(&mut self, frame: Frame) {
        if self.failed {
            return;
        }
        let video_keyframe = frame.kind == MediaKind::Video && frame.keyframe;
        let start_here = match &self.open {
            None => video_keyframe || (frame.kind == MediaKind::Audio && !self.known.contains(&MediaKind::Video)),
            Some(open) => {
                let due = frame.pts_ms - open.start_ms >= self.target_ms();
                let has_video = open.streams.contains(&MediaKind::Video);
                if due && has_video && !video_keyframe {
                    self.request_cut(frame.pts_ms);
                }
                due && (video_keyframe || !has_video)
            }
        };
        if start_here {
            self.cut_requested_ms = None;
            self.close();
            if let Err(e) = self.open_at(&frame) {
                self.fail(e);
                return;
            }
        }
        let Some(open) = &mut self.open else {
            self.summary.frames_outside_segments += 1;
            return;
        };
        let Some(stream) = open.streams.iter().position(|k| *k == frame.kind) else {
            self.summary.frames_outside_segments += 1;
            return;
        };
        let pts = (frame.pts_ms - open.start_ms).max(0);
        if let Err(source) = open.writer.write_packet(stream, pts, &frame.data, frame.keyframe) {
            let index = open.index;
            self.fail(RecordingError::Write { index, source });
        }
    }

    /// Asks for a keyframe to cut a due segment at (again each [`CUT_REQUEST_INTERVAL_MS`] until one comes), so
    /// that segments stay near their target length even when the sender's keyframes are far apart.
    fn request_cut(&mut self, now_ms: i64) {
        if self.cut_requested_ms.is_some_and(|last| now_ms - last < CUT_REQUEST_INTERVAL_MS) {
            return;
        }
        self.cut_requested_ms = Some(now_ms);
        for keyframes in &self.keyframes {
            keyframes.request_keyframe();
        }
    }

    fn target_ms(&self) -> i64 {
        i64::try_from(self.config.segment_target.as_millis()).unwrap_or(i64::MAX)
    }

    fn open_at(&mut self, frame: &Frame) -> Result<(), RecordingError> {
        let index = self.next_index;
        self.next_index += 1;
        let mut streams = Vec::new();
        let mut tracks = Vec::new();
        if let Some((width, height)) = frame.size.filter(|_| frame.kind == MediaKind::Video) {
            streams.push(MediaKind::Video);
            tracks.push(WebmTrack::Vp8 { width, height });
        }
        if self.known.contains(&MediaKind::Audio) {
            streams.push(MediaKind::Audio);
            // WebRTC's Opus is always negotiated as two channels (RFC 7587).
            tracks.push(WebmTrack::Opus { channels: 2 });
        }
        let path = self.config.dir.join(format!("segment-{index:05}.webm"));
        let writer = WebmSegmentWriter::new(&path, &tracks).map_err(|source| RecordingError::Open { index, source })?;
        self.open = Some(OpenSegment { index, start_ms: frame.pts_ms, writer, streams });
        Ok(())
    }

    fn close(&mut self) {
        let Some(open) = self.open.take() else { return };
        let OpenSegment { index, start_ms, writer, streams } = open;
        let written = match writer.finish() {
            Ok(written) => written,
            Err(source) => return self.fail(RecordingError::Close { index, source }),
        };
        self.summary.frames_clamped += written.clamped;
        let segment = SealedSegment {
            index,
            path: written.path,
            start_ms,
            last_frame_ms: written.last_ms.unwrap_or(0),
            tracks: streams,
            packets: written.packets,
        };
        match self.runtime.block_on(self.sealer.on_segment_sealed(&segment)) {
            Ok(()) => {
                tracing::info!(index, start_ms, path = %segment.path.display(), "segment sealed");
                self.summary.segments.push(segment);
            }
            Err(source) => self.fail(RecordingError::Seal { index, source }),
        }
    }

    fn fail(&mut self, error: RecordingError) {
        tracing::error!(error = %crate::Chain(&error), "recording stopped");
        self.summary.errors.push(error);
        self.failed = true;
        self.open = None;
    }
}
