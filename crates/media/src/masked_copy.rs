//! Masked copies of recorded segments, for disclosure or publication: a protected witness's recording as the
//! participants the order does not privilege saw and heard it live.
//!
//! The recorder writes each participant's media as WebM segments of about 10 s (VP8 video and/or Opus audio,
//! copied as received; see [`crate::webm`]). [`mask_segment`] reads one such segment and writes its masked copy
//! beside it: every video frame through a [`VideoMasker`] (the full-frame mosaic), every audio packet through a
//! [`VoiceMasker`] (formant warp and pitch change), each stream to the same place among the tracks, at the same
//! times. The masking is the live path's, packet for packet, so a published copy shows no more than the hearing did.
//!
//! # What may reach the output
//!
//! Only what the maskers made: the input's packets are never copied. A video frame the masker cannot show (one
//! before the input's first keyframe, one that does not decode, one over the maskers' limits) is left out and
//! counted in [`MaskedSegment::dropped`]. The output's first video frame is a keyframe, so the copy plays from
//! its start. An audio packet that cannot be decoded becomes 20 ms of masked silence, and a gap in the input's
//! audio timestamps is filled with silence, so the voice stays in step with the picture.
//!
//! If anything fails part-way, the unfinished output file is removed: a partial copy is never left to be taken
//! for a whole one. A truncated input (a recorder that stopped mid-write) is masked as far as it can be read; one
//! with nothing that could be masked is an error ([`MaskError::NothingMasked`]), not an empty copy.
//!
//! # Hostile input
//!
//! The segment holds a peer's media, so it is opened as [`crate::probe`] opens files (through a Rust `File`, no
//! protocols, bounded probing; see the crate documentation) and bounded further: at most [`MAX_SEGMENT_BYTES`],
//! [`MAX_SEGMENT_STREAMS`] streams, [`MAX_SEGMENT_DURATION_MS`] of timeline (the bound on silence filling) and
//! [`SEGMENT_TIME_LIMIT`] of work. Only the Matroska/WebM demuxer, and only VP8 and Opus streams, are accepted.
//!
//! # Timing
//!
//! Video frames keep their timestamps. Masked audio comes out in 20 ms packets, [`VoiceTransform::DELAY_SAMPLES`]
//! (24 ms) behind the input; each is stamped with the input time its sound came from, so the delay is taken back
//! out. The masked audio is mono.
//!
//! Blocks for as long as masking takes (well under the segment's own length with an optimised build); run it on
//! a blocking thread.
//!
//! [`VoiceTransform::DELAY_SAMPLES`]: crate::VoiceTransform::DELAY_SAMPLES

use std::path::Path;
use std::time::Instant;

use ffmpeg::format::context::Input;
use ffmpeg::{Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::mask::{MaskError, OPUS_FRAME_SAMPLES, VideoMasker, VoiceMasker};
use crate::voice::{SAMPLE_RATE, VoiceTransform};
use crate::webm::{WebmSegmentWriter, WebmTrack};
use crate::{OpenFailure, StreamKind, describe_stream, open_confined};

pub use crate::segment_limits::{MAX_SEGMENT_BYTES, MAX_SEGMENT_DURATION_MS, MAX_SEGMENT_STREAMS, SEGMENT_TIME_LIMIT};

/// The name of FFmpeg's demuxer for both Matroska and WebM (it cannot tell one from the other by name).
const WEBM_DEMUXER: &str = "matroska,webm";

/// WebM's timestamp unit.
const MILLISECONDS: Rational = Rational(1, 1000);

/// What [`mask_segment`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskedSegment {
    /// Masked video frames written (over all video streams).
    pub video_frames: u64,
    /// Masked 20 ms audio packets written (over all audio streams).
    pub audio_packets: u64,
    /// Input video frames left out because they could not be masked, and input audio packets over the Opus size
    /// limit (their time is filled with masked silence).
    pub dropped: u64,
    /// From the output's first packet to its last, in milliseconds.
    pub duration_ms: i64,
}

/// Reads the WebM recording segment at `input` (VP8 and/or Opus, as the recorder writes them) and writes its
/// masked copy to `output`, which must not exist yet: every video frame through a [`VideoMasker`], every audio
/// packet through a [`VoiceMasker`] seeded with `seed`, timestamps kept, one output track per input stream in the
/// same order. Nothing of the input's pictures or voice reaches the output unmasked: a frame that cannot be masked
/// is left out (counted), never copied. On an error no output file is left behind. See the module documentation.
pub fn mask_segment(input: &Path, output: &Path, seed: u64) -> Result<MaskedSegment, MaskError> {
    crate::init();
    let deadline = Instant::now() + SEGMENT_TIME_LIMIT;
    let path = || input.to_owned();
    let mut source = open_confined(input, MAX_SEGMENT_BYTES, deadline).map_err(|failure| match failure {
        OpenFailure::NotAFile => MaskError::NotAFile { path: path() },
        OpenFailure::Open(source) => MaskError::OpenSegment { path: path(), source },
        OpenFailure::TooLarge { bytes } => MaskError::SegmentTooLarge { path: path(), bytes },
        OpenFailure::Setup(source) | OpenFailure::NotMedia(source) => MaskError::NotMedia { path: path(), source },
        OpenFailure::TimedOut => MaskError::TimedOut { path: path() },
    })?;
    let format = source.format().name().to_owned();
    if format != WEBM_DEMUXER {
        return Err(MaskError::NotWebm { path: path(), format });
    }
    let (mut lanes, tracks) = plan(&source, input, seed)?;

    let mut writer = WebmSegmentWriter::new(output, &tracks)?;
    let mut copy = Copy { writer: &mut writer, counts: Counts::default(), first_ms: None };
    let copied = copy.run(&mut source, &mut lanes, input, deadline);
    let counts = copy.counts;
    let copied = copied.and_then(|()| {
        // A file with tracks but not one packet in them is no copy (and FFmpeg itself cannot read it back).
        if counts.video_frames + counts.audio_packets == 0 {
            return Err(MaskError::NothingMasked { path: path(), dropped: counts.dropped });
        }
        Ok(())
    });
    if let Err(e) = copied {
        // The error that stopped the copy matters more than one removing the unfinished file.
        let _ = writer.abandon();
        return Err(e);
    }
    let summary = match writer.finish() {
        Ok(summary) => summary,
        Err(e) => {
            // The trailer or the sync failed: the file is there but may be incomplete.
            let _ = std::fs::remove_file(output);
            return Err(e.into());
        }
    };
    Ok(MaskedSegment {
        video_frames: counts.video_frames,
        audio_packets: counts.audio_packets,
        dropped: counts.dropped,
        duration_ms: match (summary.first_ms, summary.last_ms) {
            (Some(first), Some(last)) => last - first,
            _ => 0,
        },
    })
}

/// One input stream on its way to the output track of the same index.
enum Lane {
    Video { masker: VideoMasker, time_base: Rational, written: bool },
    // Boxed: a voice masker is large, and a segment has few lanes.
    Audio { masker: Box<VoiceMasker>, time_base: Rational, timeline: Option<AudioTimeline> },
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lane::Video { masker, .. } => f.debug_tuple("Video").field(masker).finish(),
            Lane::Audio { masker, .. } => f.debug_tuple("Audio").field(masker).finish(),
        }
    }
}

/// Where an audio stream's masked packets go on the output's timeline.
#[derive(Debug, Clone, Copy)]
struct AudioTimeline {
    /// The input's first audio packet time, in milliseconds: where the masker's input sample 0 sits.
    first_ms: i64,
    /// Masked packets made so far (including the one left out at the start).
    made: u64,
}

/// Checks every stream and makes its masker and its output track.
fn plan(source: &Input, path: &Path, seed: u64) -> Result<(Vec<Lane>, Vec<WebmTrack>), MaskError> {
    let streams = source.streams().count();
    if streams == 0 || streams > MAX_SEGMENT_STREAMS {
        return Err(MaskError::StreamCount { path: path.to_owned(), streams });
    }
    let mut lanes = Vec::with_capacity(streams);
    let mut tracks = Vec::with_capacity(streams);
    for stream in source.streams() {
        let info = describe_stream(&stream);
        let index = stream.index();
        let unsupported = |what: String| MaskError::UnsupportedStream { path: path.to_owned(), index, what };
        let time_base = stream.time_base();
        if time_base.numerator() <= 0 || time_base.denominator() <= 0 {
            return Err(unsupported(format!("timed in units of {time_base}")));
        }
        match (info.kind, info.codec.as_str()) {
            (StreamKind::Video, "vp8") => {
                let (Some(width), Some(height)) = (info.width, info.height) else {
                    return Err(unsupported("VP8 video with no picture size".to_owned()));
                };
                crate::mask::check_picture_size(width, height)?;
                lanes.push(Lane::Video { masker: VideoMasker::new()?, time_base, written: false });
                tracks.push(WebmTrack::Vp8 { width, height });
            }
            (StreamKind::Audio, "opus") => {
                lanes.push(Lane::Audio { masker: Box::new(VoiceMasker::new(seed)?), time_base, timeline: None });
                tracks.push(WebmTrack::Opus { channels: 1 });
            }
            (kind, codec) => {
                let kind = format!("{kind:?}").to_lowercase();
                return Err(unsupported(format!("{kind} in {codec}")));
            }
        }
    }
    Ok((lanes, tracks))
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    video_frames: u64,
    audio_packets: u64,
    dropped: u64,
    /// Input packets read.
    read: u64,
}

/// The copy under way.
#[derive(Debug)]
struct Copy<'a> {
    writer: &'a mut WebmSegmentWriter,
    counts: Counts,
    /// The first input packet's time, in milliseconds, over all streams.
    first_ms: Option<i64>,
}

impl Copy<'_> {
    fn run(&mut self, source: &mut Input, lanes: &mut [Lane], path: &Path, deadline: Instant) -> Result<(), MaskError> {
        let mut packet = Packet::empty();
        loop {
            if Instant::now() >= deadline {
                return Err(MaskError::TimedOut { path: path.to_owned() });
            }
            match packet.read(source) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => break,
                // A damaged block: the demuxer resyncs past it on the next read, and the file's bounded size
                // bounds how often that can happen.
                Err(ffmpeg::Error::InvalidData) => continue,
                Err(ffmpeg::Error::Exit) => return Err(MaskError::TimedOut { path: path.to_owned() }),
                Err(source) => {
                    return Err(MaskError::Demux { path: path.to_owned(), packets: self.counts.read, source });
                }
            }
            self.counts.read += 1;
            let Some(lane) = lanes.get_mut(packet.stream()) else { continue };
            let time_base = match lane {
                Lane::Video { time_base, .. } | Lane::Audio { time_base, .. } => *time_base,
            };
            let pts_ms = packet.pts().or(packet.dts()).map(|ts| to_ms(ts, time_base));
            if let Some(ms) = pts_ms {
                let first = *self.first_ms.get_or_insert(ms);
                if ms.saturating_sub(first) > MAX_SEGMENT_DURATION_MS {
                    return Err(MaskError::SegmentTooLong { path: path.to_owned() });
                }
            }
            let data = packet.data().unwrap_or_default();
            match lane {
                Lane::Video { masker, written, .. } => self.video(masker, written, packet.stream(), pts_ms, data)?,
                Lane::Audio { masker, timeline, .. } => {
                    self.audio(masker, timeline, packet.stream(), pts_ms, Some(data))?;
                }
            }
        }
        // Push the voice masker's held-back tail through with silence, until the masked audio reaches the end
        // of the input's.
        for (track, lane) in lanes.iter_mut().enumerate() {
            if let Lane::Audio { masker, timeline: timeline @ Some(_), .. } = lane {
                let end = masker.input_samples() as i64;
                // At most (DELAY_SAMPLES + 960) / 960 + 1 = 3 pushes; the bound only makes that plain.
                for _ in 0..4 {
                    if !timeline.is_some_and(|t| made_until(t.made) < end) {
                        break;
                    }
                    self.audio(masker, timeline, track, None, None)?;
                }
            }
        }
        Ok(())
    }

    fn video(
        &mut self,
        masker: &mut VideoMasker,
        written: &mut bool,
        track: usize,
        pts_ms: Option<i64>,
        data: &[u8],
    ) -> Result<(), MaskError> {
        let masked = match masker.push(data) {
            Ok(masked) => masked,
            // Input the masker refuses: this frame is left out, the next may do.
            Err(
                MaskError::PacketTooLarge { .. }
                | MaskError::PictureTooLarge { .. }
                | MaskError::UnsupportedPixelFormat(_),
            ) => None,
            Err(e) => return Err(e),
        };
        let (Some(frame), Some(ms)) = (masked, pts_ms) else {
            self.counts.dropped += 1;
            return Ok(());
        };
        if !*written && !frame.keyframe {
            // The copy must start with a keyframe; the masker's first frame is one, but do not rely on it.
            masker.force_keyframe();
            self.counts.dropped += 1;
            return Ok(());
        }
        self.writer.write_packet(track, ms.max(0), &frame.data, frame.keyframe)?;
        *written = true;
        self.counts.video_frames += 1;
        Ok(())
    }

    /// Pushes one input packet (`None`: 20 ms of silence, to flush the masker) at `pts_ms` through `masker`,
    /// first filling any gap since the audio before it with silence, and writes what comes out.
    fn audio(
        &mut self,
        masker: &mut VoiceMasker,
        timeline: &mut Option<AudioTimeline>,
        track: usize,
        pts_ms: Option<i64>,
        data: Option<&[u8]>,
    ) -> Result<(), MaskError> {
        let expected_ms = |t: &AudioTimeline| t.first_ms + samples_to_ms(masker.input_samples() as i64);
        let line = *timeline.get_or_insert_with(|| AudioTimeline { first_ms: pts_ms.unwrap_or(0), made: 0 });
        let mut made = Vec::new();
        if let Some(ms) = pts_ms {
            // Whole 20 ms frames missing before this packet (lost, or never sent while the sender was silent).
            // Bounded: the packet is at most MAX_SEGMENT_DURATION_MS after the first.
            let missing = (ms - expected_ms(&line)) / 20;
            for _ in 0..missing.max(0) {
                made.extend(masker.push(&[])?);
            }
        }
        match masker.push(data.unwrap_or_default()) {
            Ok(packets) => made.extend(packets),
            Err(MaskError::PacketTooLarge { .. }) => {
                // Left out; its time is filled with silence when the next packet comes.
                self.counts.dropped += 1;
            }
            Err(e) => return Err(e),
        }
        for masked in made {
            let Some(line) = timeline.as_mut() else { break };
            let k = line.made;
            line.made += 1;
            let start = made_until(k) - OPUS_FRAME_SAMPLES as i64;
            if start + (OPUS_FRAME_SAMPLES as i64) <= 0 {
                // Wholly from before the input began: the transform's start-up, no sound of the input.
                continue;
            }
            let ms = (line.first_ms + samples_to_ms(start)).max(0);
            self.writer.write_packet(track, ms, &masked, true)?;
            self.counts.audio_packets += 1;
        }
        Ok(())
    }
}

/// Where, in input samples from the first audio packet, the sound in the first `made` masked packets ends.
fn made_until(made: u64) -> i64 {
    made as i64 * OPUS_FRAME_SAMPLES as i64 - VoiceTransform::DELAY_SAMPLES as i64
}

/// 48 kHz samples in whole milliseconds, rounded down (towards minus infinity).
fn samples_to_ms(samples: i64) -> i64 {
    (samples * 1000).div_euclid(i64::from(SAMPLE_RATE))
}

/// `ts` in `time_base` as milliseconds, rounded to the nearest and saturated to `i64`.
fn to_ms(ts: i64, time_base: Rational) -> i64 {
    if time_base == MILLISECONDS {
        return ts;
    }
    let (num, den) = (i128::from(time_base.numerator()), i128::from(time_base.denominator()));
    let ms = (i128::from(ts) * num * 1000 * 2 + den).div_euclid(2 * den);
    ms.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_to_milliseconds() {
        assert_eq!(to_ms(1234, MILLISECONDS), 1234);
        assert_eq!(to_ms(90_000, Rational::new(1, 90_000)), 1000);
        assert_eq!(to_ms(1_499, Rational::new(1, 1_000_000)), 1);
        assert_eq!(to_ms(1_500, Rational::new(1, 1_000_000)), 2);
        assert_eq!(to_ms(-48, Rational::new(1, 48_000)), -1);
        assert_eq!(to_ms(i64::MAX, Rational::new(i32::MAX, 1)), i64::MAX);
        assert_eq!(to_ms(i64::MIN, Rational::new(i32::MAX, 1)), i64::MIN);
    }

    #[test]
    fn masked_audio_is_stamped_where_its_sound_came_from() {
        // The transform holds back 1,152 samples (24 ms): the first masked packet is all start-up, the second
        // starts 4 ms before the input did, the third 16 ms after.
        assert_eq!(VoiceTransform::DELAY_SAMPLES, 1152);
        assert_eq!(made_until(1), -192);
        assert_eq!(samples_to_ms(made_until(1) - 960), -24);
        assert_eq!(samples_to_ms(made_until(2) - 960), -4);
        assert_eq!(samples_to_ms(made_until(3) - 960), 16);
        assert_eq!(samples_to_ms(47), 0);
        assert_eq!(samples_to_ms(-1), -1);
    }
}
