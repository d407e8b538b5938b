//! Masking a protected witness's encoded WebRTC media for the participants of a hearing who may not see or hear
//! them as they are: VP8 video is decoded, pixelated over the whole picture and re-encoded; Opus audio is decoded,
//! passed through the voice transform ([`crate::voice`]: McAdams formant warp and pitch change) and re-encoded.
//!
//! # Why a full-frame mosaic
//!
//! A face detector can miss a face (profile, poor light, a hand in front, a second person in the room) and one
//! missed frame identifies a witness. The mask here needs no detector and cannot miss: every block of every plane
//! of every frame is replaced by its average. Blocks are coarse ([`MOSAIC_COLUMNS`] across the picture, square,
//! never under [`MIN_MOSAIC_BLOCK`] pixels), so a face is a handful of flat blocks at most: the participants see
//! that someone is there and moving, and hear what they say, not who they are.
//!
//! FFmpeg 5.1 (Debian 12) has no `pixelize` filter, and libswscale is not among the build's system packages, so
//! the averaging is done here in Rust on the decoded planes, and the decoder's output must be YUV 4:2:0 planar,
//! which is all FFmpeg's VP8 decoder produces.
//!
//! # What may leave the masker
//!
//! [`VideoMasker::push`] only ever returns a frame it encoded itself from block averages it computed itself: never
//! the input bytes, never a decoded picture. When there is nothing to show (no keyframe decoded yet, a frame that
//! could not be decoded), it returns `None`. [`VoiceMasker::push`] only returns Opus packets it encoded from the
//! transform's output; a packet it cannot decode counts as 20 ms of silence, so the output keeps pace.
//!
//! # Hostile input
//!
//! The media comes from a peer the gateway does not trust. A VP8 keyframe larger than [`MAX_WIDTH`] ×
//! [`MAX_HEIGHT`] is refused from its header, before decoding (and the decoder itself is told the same limit);
//! input packets are bounded ([`MAX_VP8_FRAME_BYTES`], [`MAX_OPUS_PACKET_BYTES`]); each push decodes one packet
//! and encodes at most one frame, so memory is bounded by the largest picture.
//!
//! # Latency and threads
//!
//! Both maskers work one packet at a time with no look-ahead: libvpx runs in real-time mode with no lag frames
//! and no alternate reference frames, so a video frame in gives at most one masked frame out at once. The voice
//! path delays audio by [`crate::VoiceTransform::DELAY_SAMPLES`] (24 ms) plus the Opus framing. Each masker is
//! single-threaded and blocks; run it on a blocking thread. Maskers are `Send`, so one per feed may live on any
//! thread.

use ffmpeg::codec::{self, Id};
use ffmpeg::format::{Pixel, Sample, sample};
use ffmpeg::util::error::EAGAIN;
use ffmpeg::{ChannelLayout, Dictionary, Packet, Rational, frame, picture};
use ffmpeg_next as ffmpeg;

use std::path::PathBuf;

use crate::segment_limits::{MAX_SEGMENT_BYTES, MAX_SEGMENT_DURATION_MS, MAX_SEGMENT_STREAMS, SEGMENT_TIME_LIMIT};
use crate::voice::{SAMPLE_RATE, VoiceTransform};
use crate::webm::WebmError;

/// The widest picture accepted.
pub const MAX_WIDTH: u32 = 1920;

/// The tallest picture accepted.
pub const MAX_HEIGHT: u32 = 1080;

/// The largest VP8 frame accepted, in bytes (a 1080p keyframe at a high bit rate is well under 1 MiB).
pub const MAX_VP8_FRAME_BYTES: usize = 4 << 20;

/// The largest Opus packet accepted, in bytes: RFC 6716 allows 1,275 bytes a frame and up to 120 ms a packet;
/// WebRTC sends 20 ms packets of a few hundred bytes at most.
pub const MAX_OPUS_PACKET_BYTES: usize = 4_000;

/// Mosaic blocks across the picture's width.
pub const MOSAIC_COLUMNS: u32 = 12;

/// The smallest mosaic block side, in luma pixels.
pub const MIN_MOSAIC_BLOCK: u32 = 24;

/// A keyframe at least this often, in frames (about 3.3 s at 30 frames/s), besides those asked for.
pub const KEYFRAME_INTERVAL: u32 = 100;

/// The masked video's bit rate at 640×360, scaled with the picture's area (a mosaic compresses very well).
const BIT_RATE_AT_360P: u64 = 400_000;
const MIN_VIDEO_BIT_RATE: u64 = 100_000;
const MAX_VIDEO_BIT_RATE: u64 = 2_000_000;

/// The frame rate the encoder's rate control assumes; WebRTC cameras send 30 frames/s or fewer.
const NOMINAL_FRAME_RATE: i32 = 30;

/// The masked voice's Opus bit rate.
const VOICE_BIT_RATE: usize = 32_000;

/// Samples in one 20 ms Opus frame at 48 kHz.
pub(crate) const OPUS_FRAME_SAMPLES: usize = 960;

/// Why media could not be masked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaskError {
    #[error("FFmpeg has no {0} codec (is it built with libvpx and libopus?)")]
    CodecMissing(&'static str),
    #[error("FFmpeg could not {doing}: {source}")]
    Ffmpeg { doing: &'static str, source: ffmpeg::Error },
    #[error("a {width}×{height} picture is larger than the {MAX_WIDTH}×{MAX_HEIGHT} allowed")]
    PictureTooLarge { width: u32, height: u32 },
    #[error("a packet of {bytes} bytes is larger than the {limit} allowed")]
    PacketTooLarge { bytes: usize, limit: usize },
    #[error("the decoder gave pixel format {0:?}, not planar YUV 4:2:0")]
    UnsupportedPixelFormat(Pixel),
    #[error("the decoder gave sample format {0:?}, not 32-bit float or 16-bit integer")]
    UnsupportedSampleFormat(Sample),
    // What `crate::mask_segment` may refuse or fail on, besides the above.
    #[error("could not open {path}: {source}")]
    OpenSegment { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is {bytes} bytes, more than the {MAX_SEGMENT_BYTES} allowed for a segment")]
    SegmentTooLarge { path: PathBuf, bytes: u64 },
    #[error("{path} is not media FFmpeg can read: {source}")]
    NotMedia { path: PathBuf, source: ffmpeg::Error },
    #[error("{path} is {format}, not WebM")]
    NotWebm { path: PathBuf, format: String },
    #[error("{path} has {streams} streams; a segment has 1 to {MAX_SEGMENT_STREAMS}")]
    StreamCount { path: PathBuf, streams: usize },
    #[error("stream {index} of {path} is {what}; only VP8 video and Opus audio can be masked")]
    UnsupportedStream { path: PathBuf, index: usize, what: String },
    #[error("{path} runs on past {MAX_SEGMENT_DURATION_MS} ms from its first packet")]
    SegmentTooLong { path: PathBuf },
    #[error("masking {path} took longer than {} s", SEGMENT_TIME_LIMIT.as_secs())]
    TimedOut { path: PathBuf },
    #[error("nothing in {path} could be masked ({dropped} video frames left out)")]
    NothingMasked { path: PathBuf, dropped: u64 },
    #[error("could not read {path} after {packets} packets: {source}")]
    Demux { path: PathBuf, packets: u64, source: ffmpeg::Error },
    #[error("could not write the masked copy: {0}")]
    Write(#[from] WebmError),
}

fn ff(doing: &'static str) -> impl FnOnce(ffmpeg::Error) -> MaskError {
    move |source| MaskError::Ffmpeg { doing, source }
}

/// One masked VP8 frame.
#[derive(Clone, PartialEq, Eq)]
pub struct MaskedFrame {
    /// The VP8 bitstream frame, to be packetised for RTP (RFC 7741).
    pub data: Vec<u8>,
    pub keyframe: bool,
}

impl std::fmt::Debug for MaskedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskedFrame").field("bytes", &self.data.len()).field("keyframe", &self.keyframe).finish()
    }
}

/// Masks one VP8 video feed; see the module documentation.
pub struct VideoMasker {
    decoder: codec::decoder::Video,
    /// The encoder for the current picture size, with that size; made on the first decoded frame and again when
    /// the size changes.
    encoder: Option<(codec::encoder::video::Encoder, u32, u32)>,
    /// The last decoded picture.
    decoded: frame::Video,
    /// Where the decoder puts the next one.
    receiving: frame::Video,
    keyframe_requested: bool,
    frames_encoded: i64,
}

impl std::fmt::Debug for VideoMasker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoMasker")
            .field("size", &self.encoder.as_ref().map(|(_, width, height)| (*width, *height)))
            .field("frames_encoded", &self.frames_encoded)
            .field("keyframe_requested", &self.keyframe_requested)
            .finish_non_exhaustive()
    }
}

impl VideoMasker {
    /// A masker with FFmpeg's VP8 decoder and a libvpx encoder (made once the first picture's size is known).
    pub fn new() -> Result<Self, MaskError> {
        crate::init();
        let codec = codec::decoder::find(Id::VP8).ok_or(MaskError::CodecMissing("VP8 decoder"))?;
        let mut options = Dictionary::new();
        // The decoder refuses pictures with more pixels than the largest allowed, whatever the header says.
        options.set("max_pixels", &(MAX_WIDTH * MAX_HEIGHT).to_string());
        let decoder = codec::Context::new_with_codec(codec)
            .decoder()
            .open_as_with(codec, options)
            .map_err(ff("open the VP8 decoder"))?
            .video()
            .map_err(ff("open the VP8 decoder"))?;
        Ok(VideoMasker {
            decoder,
            encoder: None,
            decoded: frame::Video::empty(),
            receiving: frame::Video::empty(),
            keyframe_requested: false,
            frames_encoded: 0,
        })
    }

    /// Takes one complete VP8 frame (the bitstream frame as reassembled from RTP, RFC 7741) and returns it
    /// masked and re-encoded as VP8, or `None` while there is nothing to show (the decoder waits for a keyframe,
    /// or could not decode this frame). Errors: a picture or packet over the limits, or an encoder failure.
    pub fn push(&mut self, vp8_frame: &[u8]) -> Result<Option<MaskedFrame>, MaskError> {
        if vp8_frame.len() > MAX_VP8_FRAME_BYTES {
            return Err(MaskError::PacketTooLarge { bytes: vp8_frame.len(), limit: MAX_VP8_FRAME_BYTES });
        }
        if let Some((width, height)) = vp8_keyframe_size(vp8_frame) {
            check_picture_size(width, height)?;
        }
        if !self.decode(vp8_frame) {
            return Ok(None);
        }
        let (width, height) = (self.decoded.width(), self.decoded.height());
        check_picture_size(width, height)?;
        if width == 0 || height == 0 {
            return Ok(None);
        }
        let format = self.decoded.format();
        if !matches!(format, Pixel::YUV420P | Pixel::YUVJ420P) {
            return Err(MaskError::UnsupportedPixelFormat(format));
        }
        let mut masked = frame::Video::new(Pixel::YUV420P, width, height);
        pixelate(&self.decoded, &mut masked, mosaic_block(width));
        self.encode(masked, width, height)
    }

    /// Makes the next masked frame a keyframe (a receiver asked for one).
    pub fn force_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Decodes one frame into `self.decoded`; false if it gave no picture.
    fn decode(&mut self, vp8_frame: &[u8]) -> bool {
        if vp8_frame.is_empty() || self.decoder.send_packet(&Packet::copy(vp8_frame)).is_err() {
            return false;
        }
        // VP8 gives at most one picture per frame; take the last, should there be more. A failed receive_frame
        // empties the frame it is given, hence the second one.
        let mut got_picture = false;
        while self.decoder.receive_frame(&mut self.receiving).is_ok() {
            std::mem::swap(&mut self.decoded, &mut self.receiving);
            got_picture = true;
        }
        got_picture
    }

    fn encode(&mut self, mut masked: frame::Video, width: u32, height: u32) -> Result<Option<MaskedFrame>, MaskError> {
        let same_size = matches!(&self.encoder, Some((_, w, h)) if (*w, *h) == (width, height));
        if !same_size {
            self.encoder = Some((open_vp8_encoder(width, height)?, width, height));
            self.frames_encoded = 0;
        }
        let Some((encoder, _, _)) = self.encoder.as_mut() else { return Ok(None) };
        let forced = std::mem::take(&mut self.keyframe_requested);
        masked.set_kind(if forced { picture::Type::I } else { picture::Type::None });
        masked.set_pts(Some(self.frames_encoded));
        self.frames_encoded += 1;
        encoder.send_frame(&masked).map_err(ff("encode a masked frame"))?;
        let mut packet = Packet::empty();
        let mut out = None;
        loop {
            match encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    let data = packet.data().unwrap_or_default().to_vec();
                    out = Some(MaskedFrame { data, keyframe: packet.is_key() });
                }
                Err(ffmpeg::Error::Other { errno: EAGAIN } | ffmpeg::Error::Eof) => break,
                Err(source) => return Err(MaskError::Ffmpeg { doing: "encode a masked frame", source }),
            }
        }
        if forced && !out.as_ref().is_some_and(|frame| frame.keyframe) {
            // The encoder dropped the frame (libvpx may, under rate pressure): ask again with the next one.
            self.keyframe_requested = true;
        }
        Ok(out)
    }
}

pub(crate) fn check_picture_size(width: u32, height: u32) -> Result<(), MaskError> {
    if width > MAX_WIDTH || height > MAX_HEIGHT {
        return Err(MaskError::PictureTooLarge { width, height });
    }
    Ok(())
}

/// A VP8 keyframe's picture size from its header (RFC 6386, 9.1: a 3-byte frame tag whose lowest bit is 0 for a
/// keyframe, the start code 9d 01 2a, then 14-bit width and height, little-endian, under 2-bit scaling codes);
/// `None` for an interframe or anything too short to tell.
fn vp8_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    let header = frame.get(..10)?;
    if header[0] & 1 != 0 || header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([header[6], header[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([header[8], header[9]]) & 0x3fff);
    Some((width, height))
}

/// The mosaic's block side in luma pixels for a picture `width` wide: [`MOSAIC_COLUMNS`] blocks across, at least
/// [`MIN_MOSAIC_BLOCK`], and even, so that chroma blocks (half the side at 4:2:0) cover exactly the same area.
pub fn mosaic_block(width: u32) -> u32 {
    let block = width.div_ceil(MOSAIC_COLUMNS).max(MIN_MOSAIC_BLOCK);
    block + block % 2
}

/// Writes into `masked` (YUV 4:2:0, same size) the mosaic of `decoded`: each `block`-sided square of the luma
/// plane, and the matching half-sided square of each chroma plane, filled with its rounded average. Rows are
/// read through each plane's stride (line size), which may exceed its width.
fn pixelate(decoded: &frame::Video, masked: &mut frame::Video, block: u32) {
    for plane in 0..3 {
        let side = (if plane == 0 { block } else { block / 2 }) as usize;
        let width = decoded.plane_width(plane) as usize;
        let height = decoded.plane_height(plane) as usize;
        let (source_stride, target_stride) = (decoded.stride(plane), masked.stride(plane));
        let source = decoded.data(plane);
        let target = masked.data_mut(plane);
        for top in (0..height).step_by(side) {
            let bottom = (top + side).min(height);
            for left in (0..width).step_by(side) {
                let right = (left + side).min(width);
                let sum: u64 = (top..bottom)
                    .map(|row| {
                        let start = row * source_stride;
                        source[start + left..start + right].iter().map(|&v| u64::from(v)).sum::<u64>()
                    })
                    .sum();
                let count = ((bottom - top) * (right - left)) as u64;
                let average = ((sum + count / 2) / count) as u8;
                for row in top..bottom {
                    let start = row * target_stride;
                    target[start + left..start + right].fill(average);
                }
            }
        }
    }
}

/// The masked video's bit rate for a picture size: [`BIT_RATE_AT_360P`] scaled by area, within bounds.
fn video_bit_rate(width: u32, height: u32) -> usize {
    let rate = BIT_RATE_AT_360P * u64::from(width) * u64::from(height) / (640 * 360);
    rate.clamp(MIN_VIDEO_BIT_RATE, MAX_VIDEO_BIT_RATE) as usize
}

fn open_vp8_encoder(width: u32, height: u32) -> Result<codec::encoder::video::Encoder, MaskError> {
    let codec = codec::encoder::find_by_name("libvpx").ok_or(MaskError::CodecMissing("libvpx VP8 encoder"))?;
    let mut video = codec::Context::new_with_codec(codec).encoder().video().map_err(ff("set up the VP8 encoder"))?;
    video.set_width(width);
    video.set_height(height);
    video.set_format(Pixel::YUV420P);
    video.set_time_base(Rational::new(1, NOMINAL_FRAME_RATE));
    video.set_frame_rate(Some(Rational::new(NOMINAL_FRAME_RATE, 1)));
    video.set_bit_rate(video_bit_rate(width, height));
    video.set_gop(KEYFRAME_INTERVAL);
    video.set_max_b_frames(0);
    let mut options = Dictionary::new();
    // Real-time mode, fastest speed, no look-ahead and no alternate reference frames: one frame in, at most one
    // out, at once. Error resilience for a lossy network path.
    options.set("deadline", "realtime");
    options.set("cpu-used", "8");
    options.set("lag-in-frames", "0");
    options.set("auto-alt-ref", "0");
    options.set("error-resilient", "default");
    video.open_as_with(codec, options).map_err(ff("open the libvpx VP8 encoder"))
}

/// Masks one Opus voice feed: Opus decoding at 48 kHz (a stereo packet mixed to mono), the voice transform
/// ([`VoiceTransform::from_seed`]: McAdams formant warp and pitch change), a gain ([`VoiceMasker::with_gain`]: 1
/// unless the voice is ducked under an interpretation), libopus encoding (48 kHz mono, 20 ms frames, VoIP
/// application, 32 kb/s). [`VoiceMasker::ducking`] makes one that only lowers the level, for a voice nobody
/// protects.
pub struct VoiceMasker {
    decoder: codec::decoder::Audio,
    encoder: codec::encoder::audio::Encoder,
    /// `None`: the voice is kept as it is (only its level changes).
    transform: Option<VoiceTransform>,
    /// The factor on every sample, after the transform.
    gain: f32,
    decoded: frame::Audio,
    mono: Vec<f32>,
    /// Transformed samples not yet encoded (fewer than one Opus frame between pushes).
    transformed: Vec<f32>,
    /// Samples taken in so far (decoded, or silence for what could not be decoded).
    samples_in: u64,
    samples_encoded: i64,
}

impl std::fmt::Debug for VoiceMasker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceMasker")
            .field("transform", &self.transform)
            .field("gain", &self.gain)
            .field("samples_in", &self.samples_in)
            .field("samples_encoded", &self.samples_encoded)
            .finish_non_exhaustive()
    }
}

impl VoiceMasker {
    /// A masker whose voice transform's McAdams coefficient and pitch factor are drawn from `seed` (one seed per
    /// hearing and witness).
    pub fn new(seed: u64) -> Result<Self, MaskError> {
        Self::open(Some(VoiceTransform::from_seed(seed)))
    }

    /// A pipeline that keeps the voice and multiplies its level by `gain` (the floor ducked under a simultaneous
    /// interpretation): decoded and encoded again like a masked voice, with no delay of its own.
    pub fn ducking(gain: f32) -> Result<Self, MaskError> {
        Ok(Self::open(None)?.with_gain(gain))
    }

    /// The same, with every sample multiplied by `gain` (in [0, 1]; anything else is taken as its nearest bound)
    /// after the transform.
    pub fn with_gain(mut self, gain: f32) -> Self {
        self.gain = if gain.is_finite() { gain.clamp(0.0, 1.0) } else { 1.0 };
        self
    }

    fn open(transform: Option<VoiceTransform>) -> Result<Self, MaskError> {
        crate::init();
        let codec = codec::decoder::find(Id::OPUS).ok_or(MaskError::CodecMissing("Opus decoder"))?;
        let mut options = Dictionary::new();
        // Decode every packet to stereo: a mono packet then has two equal channels, and both are mixed the same way.
        options.set("ch_layout", "stereo");
        options.set("ar", &SAMPLE_RATE.to_string());
        let decoder = codec::Context::new_with_codec(codec)
            .decoder()
            .open_as_with(codec, options)
            .map_err(ff("open the Opus decoder"))?
            .audio()
            .map_err(ff("open the Opus decoder"))?;

        let codec = codec::encoder::find_by_name("libopus").ok_or(MaskError::CodecMissing("libopus encoder"))?;
        let mut audio = codec::Context::new_with_codec(codec).encoder().audio().map_err(ff("set up libopus"))?;
        audio.set_rate(SAMPLE_RATE as i32);
        audio.set_channel_layout(ChannelLayout::default(1));
        audio.set_channels(1);
        audio.set_format(Sample::F32(sample::Type::Packed));
        audio.set_bit_rate(VOICE_BIT_RATE);
        audio.set_time_base(Rational::new(1, SAMPLE_RATE as i32));
        let mut options = Dictionary::new();
        options.set("application", "voip");
        options.set("frame_duration", "20");
        let encoder = audio.open_as_with(codec, options).map_err(ff("open the libopus encoder"))?;

        Ok(VoiceMasker {
            decoder,
            encoder,
            transform,
            gain: 1.0,
            decoded: frame::Audio::empty(),
            mono: Vec::with_capacity(OPUS_FRAME_SAMPLES * 6),
            transformed: Vec::with_capacity(OPUS_FRAME_SAMPLES * 8),
            samples_in: 0,
            samples_encoded: 0,
        })
    }

    /// The McAdams coefficient this feed is masked with (1, which changes nothing, when it only ducks).
    pub fn mcadams(&self) -> f64 {
        self.transform.as_ref().map_or(1.0, VoiceTransform::mcadams)
    }

    /// The pitch factor this feed is masked with: the masked voice's fundamental frequency is this times the
    /// witness's (1 when it only ducks).
    pub fn pitch_factor(&self) -> f64 {
        self.transform.as_ref().map_or(1.0, VoiceTransform::pitch_factor)
    }

    /// The factor on the voice's level.
    pub fn gain(&self) -> f32 {
        self.gain
    }

    /// How much audio has been pushed so far, in 48 kHz samples: what each packet decoded to, or 20 ms for one
    /// that could not be decoded. Masked packet `k` (from 0) holds what came from input samples
    /// `960·k − DELAY_SAMPLES` onwards ([`VoiceTransform::DELAY_SAMPLES`]; from `960·k` when it only ducks).
    pub fn input_samples(&self) -> u64 {
        self.samples_in
    }

    /// Takes one Opus packet (one RTP payload) and returns the masked 20 ms Opus packets ready so far: none at
    /// the start (the transform's delay), then in steady state one per 20 ms of input. A packet that cannot be
    /// decoded counts as 20 ms of silence.
    pub fn push(&mut self, opus_packet: &[u8]) -> Result<Vec<Vec<u8>>, MaskError> {
        if opus_packet.len() > MAX_OPUS_PACKET_BYTES {
            return Err(MaskError::PacketTooLarge { bytes: opus_packet.len(), limit: MAX_OPUS_PACKET_BYTES });
        }
        self.mono.clear();
        if !self.decode(opus_packet)? {
            self.mono.resize(OPUS_FRAME_SAMPLES, 0.0);
        }
        self.samples_in += self.mono.len() as u64;
        let start = self.transformed.len();
        match &mut self.transform {
            Some(transform) => transform.process(&self.mono, &mut self.transformed),
            None => self.transformed.extend_from_slice(&self.mono),
        }
        if self.gain != 1.0 {
            for sample in &mut self.transformed[start..] {
                *sample *= self.gain;
            }
        }
        let mut packets = Vec::new();
        let whole_frames = self.transformed.len() / OPUS_FRAME_SAMPLES * OPUS_FRAME_SAMPLES;
        for samples in self.transformed[..whole_frames].chunks_exact(OPUS_FRAME_SAMPLES) {
            let mut input =
                frame::Audio::new(Sample::F32(sample::Type::Packed), samples.len(), ChannelLayout::default(1));
            input.set_rate(SAMPLE_RATE);
            for (bytes, &value) in input.data_mut(0).chunks_exact_mut(4).zip(samples) {
                bytes.copy_from_slice(&value.to_ne_bytes());
            }
            input.set_pts(Some(self.samples_encoded));
            self.samples_encoded += samples.len() as i64;
            self.encoder.send_frame(&input).map_err(ff("encode masked voice"))?;
            let mut packet = Packet::empty();
            loop {
                match self.encoder.receive_packet(&mut packet) {
                    Ok(()) => packets.push(packet.data().unwrap_or_default().to_vec()),
                    Err(ffmpeg::Error::Other { errno: EAGAIN } | ffmpeg::Error::Eof) => break,
                    Err(source) => return Err(MaskError::Ffmpeg { doing: "encode masked voice", source }),
                }
            }
        }
        self.transformed.drain(..whole_frames);
        Ok(packets)
    }

    /// Decodes one packet and appends its samples, mixed to mono, to `self.mono`; false if it gave none.
    fn decode(&mut self, opus_packet: &[u8]) -> Result<bool, MaskError> {
        if opus_packet.is_empty() || self.decoder.send_packet(&Packet::copy(opus_packet)).is_err() {
            return Ok(false);
        }
        let mut decoded_any = false;
        while self.decoder.receive_frame(&mut self.decoded).is_ok() {
            mix_to_mono(&self.decoded, &mut self.mono)?;
            decoded_any = true;
        }
        Ok(decoded_any)
    }
}

/// Appends `frame`'s samples, the mean of its channels, to `mono`.
fn mix_to_mono(frame: &frame::Audio, mono: &mut Vec<f32>) -> Result<(), MaskError> {
    let samples = frame.samples();
    let channels = usize::from(frame.channels()).max(1);
    let format = frame.format();
    let (bytes_per_sample, planar) = match format {
        Sample::F32(kind) => (4, kind == sample::Type::Planar),
        Sample::I16(kind) => (2, kind == sample::Type::Planar),
        other => return Err(MaskError::UnsupportedSampleFormat(other)),
    };
    let read = |bytes: &[u8]| -> f32 {
        match bytes_per_sample {
            4 => f32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            _ => f32::from(i16::from_ne_bytes([bytes[0], bytes[1]])) / 32_768.0,
        }
    };
    let start = mono.len();
    mono.resize(start + samples, 0.0);
    let scale = 1.0 / channels as f32;
    if planar {
        for channel in 0..channels.min(frame.planes()) {
            let plane = frame.data(channel);
            let Some(plane) = plane.get(..samples * bytes_per_sample) else { continue };
            for (out, bytes) in mono[start..].iter_mut().zip(plane.chunks_exact(bytes_per_sample)) {
                *out += scale * read(bytes);
            }
        }
    } else if frame.planes() > 0 {
        let frame_bytes = channels * bytes_per_sample;
        if let Some(interleaved) = frame.data(0).get(..samples * frame_bytes) {
            for (out, group) in mono[start..].iter_mut().zip(interleaved.chunks_exact(frame_bytes)) {
                *out = scale * group.chunks_exact(bytes_per_sample).map(read).sum::<f32>();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_sizes_are_read_from_the_header() {
        // A keyframe tag (lowest bit 0), start code, 640 × 360 with scaling bits set (ignored).
        let frame = [0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x42, 0x68, 0x81, 0x00];
        assert_eq!(vp8_keyframe_size(&frame), Some((640, 360)));
        let mut interframe = frame;
        interframe[0] |= 1;
        assert_eq!(vp8_keyframe_size(&interframe), None);
        assert_eq!(vp8_keyframe_size(&frame[..9]), None);
        let mut no_start_code = frame;
        no_start_code[4] = 0;
        assert_eq!(vp8_keyframe_size(&no_start_code), None);
    }

    #[test]
    fn mosaic_blocks_are_coarse_and_even() {
        assert_eq!(mosaic_block(640), 54);
        assert_eq!(mosaic_block(1280), 108);
        assert_eq!(mosaic_block(1920), 160);
        assert_eq!(mosaic_block(160), 24);
        assert_eq!(mosaic_block(2), 24);
        for width in 1..=MAX_WIDTH {
            let block = mosaic_block(width);
            assert!(block >= MIN_MOSAIC_BLOCK && block.is_multiple_of(2) && width.div_ceil(block) <= MOSAIC_COLUMNS);
        }
    }

    #[test]
    fn bit_rate_scales_with_area_within_bounds() {
        assert_eq!(video_bit_rate(640, 360), 400_000);
        assert_eq!(video_bit_rate(1280, 720), 1_600_000);
        assert_eq!(video_bit_rate(1920, 1080), 2_000_000);
        assert_eq!(video_bit_rate(160, 120), 100_000);
    }
}
