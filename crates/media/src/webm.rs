//! Writing WebM without transcoding: packets that arrive already encoded (VP8 video, Opus audio) are copied into a
//! WebM (Matroska) container as they are.
//!
//! [`WebmSegmentWriter`] creates a new file (never overwriting one), writes the header once the streams are known,
//! takes one packet at a time with its timestamp in milliseconds, and on [`WebmSegmentWriter::finish`] writes the
//! trailer (cues, duration) and forces the file to disk. Like [`crate::probe`], FFmpeg never sees the path: it
//! writes through a Rust [`File`].

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use ffmpeg::codec::{self, Id};
use ffmpeg::format::context::{Output, StreamIo};
use ffmpeg::{ChannelLayout, Rational};
use ffmpeg_next as ffmpeg;

/// WebM's timestamp unit: every packet's time is given in milliseconds.
const MILLISECONDS: Rational = Rational(1, 1000);

/// One stream of a WebM file, as the writer is told about it up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebmTrack {
    /// VP8 video of the given picture size (from the first keyframe's header).
    Vp8 { width: u32, height: u32 },
    /// Opus audio at 48 kHz (Opus always decodes at 48 kHz) with the given number of channels.
    Opus { channels: u16 },
}

/// Why a WebM file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WebmError {
    #[error("could not create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("could not sync {path} to disk: {source}")]
    Sync { path: PathBuf, source: std::io::Error },
    #[error("FFmpeg could not {doing}: {source}")]
    Ffmpeg { doing: &'static str, source: ffmpeg::Error },
    #[error("no stream {0} in this file")]
    NoSuchTrack(usize),
    #[error("a WebM file needs at least one stream")]
    NoTracks,
    #[error("could not remove the unfinished {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
}

fn ff(doing: &'static str) -> impl FnOnce(ffmpeg::Error) -> WebmError {
    move |source| WebmError::Ffmpeg { doing, source }
}

/// A WebM file being written, one packet at a time. Blocking; use it from a blocking thread.
pub struct WebmSegmentWriter {
    path: PathBuf,
    output: Output,
    /// Per stream: the stream's time base after the header was written, and the last DTS written (in ms), so that
    /// timestamps handed to the muxer never go backwards.
    streams: Vec<(Rational, Option<i64>)>,
    packets: u64,
    clamped: u64,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

impl std::fmt::Debug for WebmSegmentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebmSegmentWriter").field("path", &self.path).field("packets", &self.packets).finish()
    }
}

/// What a finished file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebmSummary {
    pub path: PathBuf,
    /// Packets written.
    pub packets: u64,
    /// Packets whose timestamp was earlier than the one before on the same stream, written at that earlier
    /// packet's time instead (WebM needs timestamps that never decrease).
    pub clamped: u64,
    /// The first and last packet timestamps written, in milliseconds.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

impl WebmSegmentWriter {
    /// Creates `path` (which must not exist yet) and writes the WebM header for `tracks`, in that order (stream
    /// `i` is `tracks[i]`).
    pub fn new(path: &Path, tracks: &[WebmTrack]) -> Result<Self, WebmError> {
        crate::init();
        if tracks.is_empty() {
            return Err(WebmError::NoTracks);
        }
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(path)
            .map_err(|source| WebmError::Create { path: path.to_owned(), source })?;
        let io = StreamIo::from_write_seek(file).map_err(ff("set up writing"))?;
        let mut output = ffmpeg::format::output_to_stream(io, None, Some("webm")).map_err(ff("open the WebM muxer"))?;
        for track in tracks {
            match *track {
                WebmTrack::Vp8 { width, height } => {
                    let codec = codec::decoder::find(Id::VP8)
                        .ok_or(WebmError::Ffmpeg { doing: "find VP8", source: ffmpeg::Error::DecoderNotFound })?;
                    let mut video = codec::Context::new_with_codec(codec)
                        .encoder()
                        .video()
                        .map_err(ff("describe the video stream"))?;
                    video.set_width(width);
                    video.set_height(height);
                    video.set_format(ffmpeg::format::Pixel::YUV420P);
                    video.set_time_base(MILLISECONDS);
                    let context: &codec::Context = &video;
                    output.add_stream_with(context).map_err(ff("add a stream"))?.set_time_base(MILLISECONDS);
                }
                WebmTrack::Opus { channels } => {
                    let codec = codec::decoder::find(Id::OPUS)
                        .ok_or(WebmError::Ffmpeg { doing: "find Opus", source: ffmpeg::Error::DecoderNotFound })?;
                    let mut audio = codec::Context::new_with_codec(codec)
                        .encoder()
                        .audio()
                        .map_err(ff("describe the audio stream"))?;
                    audio.set_rate(48_000);
                    audio.set_channel_layout(ChannelLayout::default(i32::from(channels)));
                    audio.set_format(ffmpeg::format::Sample::F32(ffmpeg::format::sample::Type::Packed));
                    audio.set_time_base(MILLISECONDS);
                    let context: &codec::Context = &audio;
                    output.add_stream_with(context).map_err(ff("add a stream"))?.set_time_base(MILLISECONDS);
                }
            }
        }
        output.write_header().map_err(ff("write the WebM header"))?;
        // The muxer may choose its own time base (Matroska keeps milliseconds, but do not rely on it).
        let streams = output.streams().map(|s| (s.time_base(), None)).collect();
        Ok(WebmSegmentWriter {
            path: path.to_owned(),
            output,
            streams,
            packets: 0,
            clamped: 0,
            first_ms: None,
            last_ms: None,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one encoded frame of stream `track`, presented at `pts_ms` milliseconds, as it is. The muxer
    /// interleaves the streams itself.
    pub fn write_packet(&mut self, track: usize, pts_ms: i64, data: &[u8], keyframe: bool) -> Result<(), WebmError> {
        let (time_base, last) = self.streams.get_mut(track).ok_or(WebmError::NoSuchTrack(track))?;
        let ms = match *last {
            Some(previous) if pts_ms < previous => {
                self.clamped += 1;
                previous
            }
            _ => pts_ms,
        };
        *last = Some(ms);
        let ts = ms.rescale_to(*time_base);
        let mut packet = ffmpeg::Packet::copy(data);
        packet.set_stream(track);
        packet.set_pts(Some(ts));
        packet.set_dts(Some(ts));
        if keyframe {
            packet.set_flags(codec::packet::Flags::KEY);
        }
        packet.write_interleaved(&mut self.output).map_err(ff("write a packet"))?;
        self.packets += 1;
        self.first_ms = Some(self.first_ms.map_or(ms, |f| f.min(ms)));
        self.last_ms = Some(self.last_ms.map_or(ms, |l| l.max(ms)));
        Ok(())
    }

    /// Writes the trailer, closes the file and forces it to disk. After this the file is complete and no longer
    /// changes.
    pub fn finish(mut self) -> Result<WebmSummary, WebmError> {
        self.output.write_trailer().map_err(ff("write the WebM trailer"))?;
        let WebmSegmentWriter { path, output, packets, clamped, first_ms, last_ms, .. } = self;
        // Dropping the context flushes what FFmpeg still buffers into the file and closes it.
        drop(output);
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|source| WebmError::Sync { path: path.clone(), source })?;
        Ok(WebmSummary { path, packets, clamped, first_ms, last_ms })
    }

    /// Gives the file up unfinished: closes it without a trailer and removes it, so that no incomplete file is
    /// left behind to be taken for a whole one.
    pub fn abandon(self) -> Result<(), WebmError> {
        let WebmSegmentWriter { path, output, .. } = self;
        drop(output);
        std::fs::remove_file(&path).map_err(|source| WebmError::Remove { path, source })
    }
}

trait RescaleMs {
    fn rescale_to(self, time_base: Rational) -> i64;
}

impl RescaleMs for i64 {
    fn rescale_to(self, time_base: Rational) -> i64 {
        use ffmpeg::Rescale;
        self.rescale(MILLISECONDS, time_base)
    }
}
