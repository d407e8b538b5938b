//! Media probing: what container and streams an artefact holds, as FFmpeg sees them; [`webm`], writing
//! already-encoded VP8 and Opus into WebM files without transcoding (the recorder's segments); and [`mask`],
//! masking a protected witness's live VP8 video (a full-frame mosaic) and Opus voice (the McAdams formant warp
//! and pitch change of [`voice`], which is pure Rust) for the participants of a hearing who may not see or hear
//! them as they are; and [`masked_copy`], the same masking applied to a recorded segment, for disclosure or
//! publication.
//!
//! [`probe`] opens a file with FFmpeg (through `ffmpeg-next`) and describes it: container format, duration, bit
//! rate, the container's `creation_time` tag and each stream's codec, picture size, sample rate and channels. A
//! file FFmpeg cannot read is still evidence, so probing never fails: such a file gets
//! [`MediaProbe::Unprobed`] with the reason. [`probe_source`] describes the bytes of a file kept elsewhere (an object
//! in a remote store) read through any [`Read`] + [`Seek`], alike.
//!
//! This is the only crate in the workspace with FFI: FFmpeg's C libraries are linked here and nowhere else. The
//! crate itself holds no `unsafe` code; all of it is inside `ffmpeg-next`.
//!
//! # Hostile files
//!
//! Artefacts come from outside, so a probe is bounded and confined:
//!
//! - FFmpeg reads the file through a Rust [`std::fs::File`] (or the [`probe_source`] reader), never by name, through
//!   one opening (`open_source`) with the bounds below. The path never reaches FFmpeg, so it
//!   cannot be taken for a URL or protocol (`concat:`, `http:`, `subfile,,`), and the format is detected from the
//!   bytes alone, never from the file's extension.
//! - No protocol is allowed for anything the file itself refers to, so a playlist (HLS, `ffconcat`, an image
//!   sequence) cannot make FFmpeg open another file or a network address.
//! - FFmpeg reads at most [`PROBE_SIZE`] bytes and [`ANALYZE_DURATION_US`] of media to find the streams, accepts
//!   at most [`MAX_STREAMS`] streams, and is interrupted once [`TIME_LIMIT`] has passed. The one piece of the
//!   file's own text kept, the `creation_time` tag, is at most [`MAX_CREATION_TIME_LEN`] bytes.
//! - [`mask_segment`] opens a recorded segment through the same code, reads no more than
//!   [`masked_copy::MAX_SEGMENT_BYTES`] of it (even if it grows while being read) and is interrupted once
//!   [`masked_copy::SEGMENT_TIME_LIMIT`] has passed; see [`masked_copy`] for its other bounds.
//!
//! # Threads
//!
//! [`probe`] blocks: it reads the file and decodes a little of each stream on the calling thread. Async callers
//! should run it on a blocking thread (`tokio::task::spawn_blocking`). It keeps no state between calls and shares
//! nothing but FFmpeg's process-wide setup ([`init`]), so any number of probes may run at once on different
//! threads.
//!
//! # Serialised form
//!
//! A [`MediaProbe`] serialises to JSON holding only strings, integers and arrays (no floats), so it can sit inside
//! an RFC 8785 canonical document. Absent values are left out rather than written as `null`. The form is stable;
//! a change to it is a format change for everything that stores it. Shown here in field order (RFC 8785 sorts
//! the keys):
//!
//! ```json
//! {"outcome":"probed","format":"matroska,webm","duration_ms":2008,"bit_rate":229537,
//!  "creation_time":"2024-05-01T10:00:00.000000Z","streams":[
//!   {"index":0,"kind":"video","codec":"vp8","width":320,"height":240,"frame_rate":"25/1"},
//!   {"index":1,"kind":"audio","codec":"opus","sample_rate":48000,"channels":1}]}
//!
//! {"outcome":"unprobed","reason":"not a media file FFmpeg can read: Invalid data found when processing input"}
//! ```
//!
//! Integers are kept within JSON's exact range (at most 2^53 − 1); a larger value a file claims is treated as
//! unknown and left out.

pub mod mask;
pub mod masked_copy;
mod segment_limits;
pub mod voice;
pub mod webm;

pub use mask::{MaskError, MaskedFrame, VideoMasker, VoiceMasker};
pub use masked_copy::{MaskedSegment, mask_segment};
pub use voice::{VoiceError, VoiceTransform};
pub use webm::{WebmError, WebmSegmentWriter, WebmSummary, WebmTrack};

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ffmpeg::format::context::StreamIo;
use ffmpeg::media::Type;
use ffmpeg::{Dictionary, Rational};
use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

/// The most bytes FFmpeg reads to detect the format and find the streams (its `probesize`; FFmpeg's default).
pub const PROBE_SIZE: u64 = 5_000_000;

/// The most media time, in microseconds, FFmpeg analyses to find the streams (its `analyzeduration`; FFmpeg's
/// default).
pub const ANALYZE_DURATION_US: u64 = 5_000_000;

/// The most streams a file may declare (FFmpeg's `max_streams`, lowered from its default of 1,000). A file with
/// more is not probed, which also keeps a description small.
pub const MAX_STREAMS: u32 = 100;

/// How long a probe may take before FFmpeg is interrupted and the file reported as unprobed.
pub const TIME_LIMIT: Duration = Duration::from_secs(10);

/// The longest `creation_time` tag kept. Containers write an ISO 8601 timestamp there; anything longer is not one,
/// and is left out.
pub const MAX_CREATION_TIME_LEN: usize = 64;

/// JSON's exact integer range: RFC 8785 writes numbers as IEEE 754 doubles.
const MAX_JSON_INT: u64 = (1 << 53) - 1;

/// What probing a file found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum MediaProbe {
    /// FFmpeg read the file as media.
    Probed(MediaInfo),
    /// FFmpeg could not read the file as media, or could not open it at all. The file is evidence all the same.
    Unprobed {
        /// Why, in words, for a person to read; not meant to be parsed.
        reason: String,
    },
}

/// A media file as FFmpeg describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaInfo {
    /// FFmpeg's name for the container format (demuxer), such as `matroska,webm`, `mov,mp4,m4a,3gp,3g2,mj2` or
    /// `wav`.
    pub format: String,
    /// The container's duration in milliseconds, rounded to the nearest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The overall bit rate in bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_rate: Option<u64>,
    /// The container's `creation_time` tag as FFmpeg gives it (usually ISO 8601, such as
    /// `2024-05-01T10:00:00.000000Z`). It is what the file claims, not a fact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    /// The streams, in the file's order.
    pub streams: Vec<StreamInfo>,
}

/// One stream of a media file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamInfo {
    /// The stream's index in the file, from 0.
    pub index: u32,
    pub kind: StreamKind,
    /// FFmpeg's short codec name, such as `h264`, `vp8`, `opus`, `aac` or `pcm_s16le`.
    pub codec: String,
    /// Picture width in pixels (video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Picture height in pixels (video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Average frames per second as a fraction, `numerator/denominator` (such as `25/1` or `30000/1001`), as
    /// ffprobe's `avg_frame_rate` gives it (video; left out where FFmpeg could not work it out, as for cover art).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<String>,
    /// Samples per second (audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// Number of channels (audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    /// The stream's own duration in milliseconds, where the container gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Video,
    Audio,
    Subtitle,
    Data,
    /// Attachments (fonts in Matroska, say) and anything FFmpeg cannot classify.
    Other,
}

static INIT: Once = Once::new();

/// Sets FFmpeg up for this process: registers its components and silences its logging, which would otherwise go
/// straight to stderr (what went wrong is in [`MediaProbe::Unprobed`]'s reason instead). Idempotent and cheap
/// after the first call; [`probe`] calls it itself.
pub fn init() {
    INIT.call_once(|| {
        // ffmpeg-next's init cannot fail (it returns Ok unconditionally); there is nothing to do if it ever did.
        let _ = ffmpeg::init();
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet);
    });
}

/// Describes the media file at `path`. Never fails and never panics: a file that is missing, unreadable, not a
/// regular file or not media FFmpeg can read gives [`MediaProbe::Unprobed`] with the reason.
///
/// Blocks; see the crate documentation on threads and on the bounds that hold for hostile files.
pub fn probe(path: &Path) -> MediaProbe {
    init();
    // The FFmpeg side cannot unwind into us (a panic in a callback aborts), but the Rust side should never panic
    // either; if it ever does, the file is still reported rather than the caller's thread lost.
    std::panic::catch_unwind(|| probe_file(path)).unwrap_or_else(|_| stopped_on_internal_error())
}

/// Describes media that `source` reads: the bytes of a file kept elsewhere (an object in a remote store, read in
/// ranges), which [`probe`] would describe alike, under the same bounds. `source` reads as the file does, from 0 to
/// its end; a read or seek that fails makes FFmpeg give up as it would on a damaged file. `waited` says how long
/// `source` has spent so far waiting for bytes from elsewhere: that time is not counted against [`TIME_LIMIT`], so
/// that a slow store does not change what a probe finds (whoever serves the bytes bounds it). Never fails and never
/// panics.
///
/// Blocks, as [`probe`] does.
pub fn probe_source<S, W>(source: S, waited: W) -> MediaProbe
where
    S: Read + Seek + Send + 'static,
    W: Fn() -> Duration + Send + 'static,
{
    init();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        describe_opened(open_source(source, Instant::now() + TIME_LIMIT, waited))
    }))
    .unwrap_or_else(|_| stopped_on_internal_error())
}

fn stopped_on_internal_error() -> MediaProbe {
    MediaProbe::Unprobed { reason: "probing stopped on an internal error".to_owned() }
}

fn unprobed(reason: String) -> MediaProbe {
    MediaProbe::Unprobed { reason }
}

fn probe_file(path: &Path) -> MediaProbe {
    // No size limit: a probe reads at most PROBE_SIZE bytes whatever the file's size.
    describe_opened(open_confined(path, u64::MAX, Instant::now() + TIME_LIMIT))
}

/// What a probe reports of an opening.
fn describe_opened(opened: Result<ffmpeg::format::context::Input, OpenFailure>) -> MediaProbe {
    match opened {
        Ok(input) => MediaProbe::Probed(describe(&input)),
        Err(OpenFailure::NotAFile) => unprobed("not a regular file".to_owned()),
        Err(OpenFailure::Open(e)) => unprobed(format!("could not open file: {e}")),
        Err(OpenFailure::TooLarge { bytes }) => unprobed(format!("the file is too large ({bytes} bytes)")),
        Err(OpenFailure::Setup(e)) => unprobed(format!("could not set up FFmpeg input: {e}")),
        Err(OpenFailure::TimedOut) => {
            unprobed(format!("FFmpeg took longer than {} s to read the file", TIME_LIMIT.as_secs()))
        }
        Err(OpenFailure::NotMedia(e)) => unprobed(format!("not a media file FFmpeg can read: {e}")),
    }
}

/// Why [`open_confined`] could not open a file.
#[derive(Debug)]
pub(crate) enum OpenFailure {
    /// The path names something other than a regular file.
    NotAFile,
    /// The file could not be opened or its size read.
    Open(std::io::Error),
    /// The file is larger than the caller allows.
    TooLarge { bytes: u64 },
    /// FFmpeg's custom I/O could not be set up.
    Setup(ffmpeg::Error),
    /// The deadline passed while FFmpeg was opening the file.
    TimedOut,
    /// FFmpeg could not read the file as media.
    NotMedia(ffmpeg::Error),
}

/// Opens the file at `path` for FFmpeg to demux, confined as the crate documentation ("Hostile files") says:
/// through a Rust [`File`], with no protocol allowed and the probing bounds of [`options`]. A file larger than
/// `max_bytes` is refused, and FFmpeg never reads past `max_bytes` into it even if it grows. FFmpeg is interrupted
/// once `deadline` has passed, both while opening and on every later read (which then fails with
/// [`ffmpeg::Error::Exit`]). The one place files from outside are opened: [`probe`] and [`crate::mask_segment`]
/// both come through here ([`probe_source`] comes to `open_source` with a reader of its own).
pub(crate) fn open_confined(
    path: &Path,
    max_bytes: u64,
    deadline: Instant,
) -> Result<ffmpeg::format::context::Input, OpenFailure> {
    // Refuse anything but a regular file before opening it: opening a FIFO would block until a writer came.
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(OpenFailure::NotAFile),
        Err(e) => return Err(OpenFailure::Open(e)),
    }
    let file = File::open(path).map_err(OpenFailure::Open)?;
    // The size of the file opened, not of whatever the path names by now.
    let bytes = file.metadata().map_err(OpenFailure::Open)?.len();
    if bytes > max_bytes {
        return Err(OpenFailure::TooLarge { bytes });
    }
    open_source(BoundedFile { file, position: 0, limit: max_bytes }, deadline, || Duration::ZERO)
}

/// Opens what `source` reads for FFmpeg to demux, through custom I/O, with no protocol allowed and the probing
/// bounds of [`options`], interrupted once `deadline` has passed (see [`open_confined`]), put off by the time
/// `waited` says the source spent waiting for bytes from elsewhere.
fn open_source<S, W>(source: S, deadline: Instant, waited: W) -> Result<ffmpeg::format::context::Input, OpenFailure>
where
    S: Read + Seek + Send + 'static,
    W: Fn() -> Duration + Send + 'static,
{
    let io = StreamIo::from_read_seek(source).map_err(OpenFailure::Setup)?;
    let timed_out = Arc::new(AtomicBool::new(false));
    let interrupt = {
        let timed_out = Arc::clone(&timed_out);
        move || {
            let late = Instant::now() >= deadline + waited();
            if late {
                timed_out.store(true, Ordering::Relaxed);
            }
            late
        }
    };

    // No file name: FFmpeg detects the format from the bytes alone.
    let opened = ffmpeg::format::input_from_stream_with_interrupt(io, None, Some(options()), interrupt);
    if timed_out.load(Ordering::Relaxed) {
        return Err(OpenFailure::TimedOut);
    }
    opened.map_err(OpenFailure::NotMedia)
}

/// A file that reads as ending at `limit` bytes, however long it is or grows to be.
#[derive(Debug)]
struct BoundedFile {
    file: File,
    /// Where the next read starts (kept from each read and seek, so no system call is needed to know it).
    position: u64,
    limit: u64,
}

impl Read for BoundedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.limit.saturating_sub(self.position);
        let wanted = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        let read = self.file.read(&mut buf[..wanted])?;
        self.position += read as u64;
        Ok(read)
    }
}

impl Seek for BoundedFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.position = self.file.seek(to)?;
        Ok(self.position)
    }
}

/// The format-context options that bound and confine a probe; see the crate documentation.
fn options() -> Dictionary<'static> {
    let mut options = Dictionary::new();
    options.set("probesize", &PROBE_SIZE.to_string());
    options.set("analyzeduration", &ANALYZE_DURATION_US.to_string());
    options.set("max_streams", &MAX_STREAMS.to_string());
    // An empty whitelist matches no protocol: whatever the file refers to (playlist entries, image sequences,
    // concat lists) is never opened. Our own reads go through the custom I/O above, not through a protocol.
    options.set("protocol_whitelist", "");
    options
}

fn describe(input: &ffmpeg::format::context::Input) -> MediaInfo {
    MediaInfo {
        format: input.format().name().to_owned(),
        duration_ms: scaled_ms(input.duration(), Rational::new(1, ffmpeg::ffi::AV_TIME_BASE)),
        bit_rate: json_int(input.bit_rate()),
        creation_time: input
            .metadata()
            .get("creation_time")
            // ffmpeg-next hands tags over as &str without checking that they are UTF-8, and a file's tags need not
            // be: read the bytes and replace what is not.
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .filter(|v| v.len() <= MAX_CREATION_TIME_LEN),
        streams: input.streams().map(|s| describe_stream(&s)).collect(),
    }
}

fn describe_stream(stream: &ffmpeg::format::stream::Stream<'_>) -> StreamInfo {
    let parameters = stream.parameters();
    let medium = parameters.medium();
    let mut info = StreamInfo {
        index: u32::try_from(stream.index()).unwrap_or(u32::MAX),
        kind: match medium {
            Type::Video => StreamKind::Video,
            Type::Audio => StreamKind::Audio,
            Type::Subtitle => StreamKind::Subtitle,
            Type::Data => StreamKind::Data,
            Type::Unknown | Type::Attachment => StreamKind::Other,
        },
        codec: parameters.id().name().to_owned(),
        width: None,
        height: None,
        frame_rate: None,
        sample_rate: None,
        channels: None,
        duration_ms: scaled_ms(stream.duration(), stream.time_base()),
    };
    // The sizes and rates live in the codec parameters, which ffmpeg-next exposes only on a codec context. Copying
    // them into one (avcodec_parameters_to_context) reads no data; the decoder is never opened.
    let Ok(context) = ffmpeg::codec::Context::from_parameters(parameters) else { return info };
    let unopened = ffmpeg::codec::decoder::Opened(context.decoder());
    match medium {
        Type::Video => {
            let video = ffmpeg::codec::decoder::Video(unopened);
            info.width = positive(video.width());
            info.height = positive(video.height());
            info.frame_rate = fraction(stream.avg_frame_rate());
        }
        Type::Audio => {
            let audio = ffmpeg::codec::decoder::Audio(unopened);
            info.sample_rate = positive(audio.rate());
            info.channels = positive(u32::from(audio.channels()));
        }
        _ => {}
    }
    info
}

fn positive(v: u32) -> Option<u32> {
    (v > 0).then_some(v)
}

/// A non-negative integer FFmpeg reports (where 0 or less means unknown) that fits JSON's exact range.
fn json_int(v: i64) -> Option<u64> {
    u64::try_from(v).ok().filter(|&v| v > 0 && v <= MAX_JSON_INT)
}

/// `ticks` of `time_base` in milliseconds, rounded to the nearest; `None` when unknown (FFmpeg's `AV_NOPTS_VALUE`
/// is negative) or out of range.
fn scaled_ms(ticks: i64, time_base: Rational) -> Option<u64> {
    let (num, den) = (i128::from(time_base.numerator()), i128::from(time_base.denominator()));
    if ticks < 0 || num <= 0 || den <= 0 {
        return None;
    }
    let ms = (i128::from(ticks) * num * 1000 + den / 2) / den;
    u64::try_from(ms).ok().filter(|&ms| ms <= MAX_JSON_INT)
}

fn fraction(r: Rational) -> Option<String> {
    (r.numerator() > 0 && r.denominator() > 0).then(|| format!("{}/{}", r.numerator(), r.denominator()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_ms_rounds_and_rejects_unknown() {
        assert_eq!(scaled_ms(2_000_499, Rational::new(1, 1_000_000)), Some(2000));
        assert_eq!(scaled_ms(2_000_500, Rational::new(1, 1_000_000)), Some(2001));
        assert_eq!(scaled_ms(90_000, Rational::new(1, 90_000)), Some(1000));
        assert_eq!(scaled_ms(i64::MIN, Rational::new(1, 1000)), None);
        assert_eq!(scaled_ms(5, Rational::new(0, 0)), None);
        assert_eq!(scaled_ms(i64::MAX, Rational::new(i32::MAX, 1)), None);
    }

    #[test]
    fn integers_stay_in_json_range() {
        assert_eq!(json_int(0), None);
        assert_eq!(json_int(-1), None);
        assert_eq!(json_int(128_000), Some(128_000));
        assert_eq!(json_int(i64::MAX), None);
        assert_eq!(json_int(1 << 53), None);
    }

    #[test]
    fn a_bounded_file_ends_at_its_limit_wherever_it_is_read_from() {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"0123456789").unwrap();
        let mut bounded = BoundedFile { file: file.reopen().unwrap(), position: 0, limit: 6 };
        let mut all = Vec::new();
        bounded.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"012345");
        assert_eq!(bounded.seek(SeekFrom::Start(4)).unwrap(), 4);
        let mut rest = Vec::new();
        bounded.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"45");
        // Seeking past the limit (FFmpeg may, to find the size) reads nothing there.
        assert_eq!(bounded.seek(SeekFrom::End(-2)).unwrap(), 8);
        assert_eq!(bounded.read(&mut [0; 4]).unwrap(), 0);
        // The file growing does not move the limit.
        file.write_all(b"abcdef").unwrap();
        bounded.seek(SeekFrom::Start(0)).unwrap();
        let mut again = Vec::new();
        bounded.read_to_end(&mut again).unwrap();
        assert_eq!(again, b"012345");
    }

    #[test]
    fn fractions() {
        assert_eq!(fraction(Rational::new(30000, 1001)).as_deref(), Some("30000/1001"));
        assert_eq!(fraction(Rational::new(0, 1)), None);
        assert_eq!(fraction(Rational::new(25, 0)), None);
    }
}
