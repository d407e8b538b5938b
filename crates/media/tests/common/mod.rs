//! Helpers shared by the integration tests: a detailed moving picture as VP8, a synthetic vowel as Opus (and the
//! voice tests' own measures of it), decoding both back, and the measures the masks are judged by.

// Each test file uses some of these, none uses all.
#![allow(dead_code)]

use std::path::Path;

use custodia_media::{WebmSegmentWriter, WebmTrack};
use ffmpeg::codec::{self, Id};
use ffmpeg::format::{Pixel, Sample, sample};
use ffmpeg::{ChannelLayout, Dictionary, Packet, Rational, frame, picture};
use ffmpeg_next as ffmpeg;

// What `voice_support` takes from its `super`: the same items it uses inside the crate, from the public API.
pub use custodia_media::voice::{ANALYSIS_RATE, SAMPLE_RATE, lpc_coefficients};

/// The synthetic vowel and the formant measure of the crate's own voice tests (one source file for both).
#[path = "../../src/voice/test_support.rs"]
pub mod voice_support;

/// A decoded picture's luma plane, rows packed (no stride padding).
pub struct Luma {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// A detailed, moving pattern: a fine checkerboard and a pseudo-random texture over gradients, shifted each frame,
/// with coloured chroma gradients. Hard to compress and full of edges a mosaic must destroy.
pub fn test_pattern(width: u32, height: u32, index: u32) -> frame::Video {
    let mut picture = frame::Video::new(Pixel::YUV420P, width, height);
    for plane in 0..3 {
        let stride = picture.stride(plane);
        let (plane_width, plane_height) = (picture.plane_width(plane) as usize, picture.plane_height(plane) as usize);
        let data = picture.data_mut(plane);
        for y in 0..plane_height {
            for x in 0..plane_width {
                let (xs, ys) = (x + 3 * index as usize, y + index as usize);
                let value = if plane == 0 {
                    let checker = if (xs / 6 + ys / 6) % 2 == 0 { 70 } else { 0 };
                    let hash = (xs.wrapping_mul(73_856_093) ^ ys.wrapping_mul(19_349_663)) % 61;
                    (40 + checker + hash + (xs + ys) * 60 / (plane_width + plane_height)) as u8
                } else if plane == 1 {
                    (64 + xs * 128 / plane_width.max(1) % 128) as u8
                } else {
                    (64 + ys * 128 / plane_height.max(1) % 128) as u8
                };
                data[y * stride + x] = value;
            }
        }
    }
    picture
}

/// `frames` frames of the test pattern as VP8 bitstream frames, first a keyframe, at a generous bit rate.
pub fn encode_pattern(width: u32, height: u32, frames: u32) -> Vec<Vec<u8>> {
    encode_pattern_with_keyframes(width, height, frames, &[])
}

/// As [`encode_pattern`], with keyframes forced at the frame indices `keyframes` as well as at the first.
pub fn encode_pattern_with_keyframes(width: u32, height: u32, frames: u32, keyframes: &[u32]) -> Vec<Vec<u8>> {
    ffmpeg::init().expect("FFmpeg initialises");
    let codec = codec::encoder::find_by_name("libvpx").expect("libvpx");
    let mut video = codec::Context::new_with_codec(codec).encoder().video().expect("video encoder");
    video.set_width(width);
    video.set_height(height);
    video.set_format(Pixel::YUV420P);
    video.set_time_base(Rational::new(1, 30));
    video.set_bit_rate(3_000_000);
    video.set_gop(1000);
    let mut options = Dictionary::new();
    options.set("deadline", "realtime");
    options.set("cpu-used", "8");
    options.set("lag-in-frames", "0");
    let mut encoder = video.open_as_with(codec, options).expect("open libvpx");
    let mut out = Vec::new();
    let mut packet = Packet::empty();
    for index in 0..frames {
        let mut picture = test_pattern(width, height, index);
        picture.set_pts(Some(i64::from(index)));
        if keyframes.contains(&index) {
            picture.set_kind(picture::Type::I);
        }
        encoder.send_frame(&picture).expect("encode");
        while encoder.receive_packet(&mut packet).is_ok() {
            out.push(packet.data().expect("data").to_vec());
        }
    }
    assert_eq!(out.len(), frames as usize, "one VP8 frame per picture");
    out
}

/// Decodes VP8 frames in order; one picture per frame, as luma.
pub fn decode(frames: &[Vec<u8>]) -> Vec<Luma> {
    let codec = codec::decoder::find(Id::VP8).expect("VP8 decoder");
    let mut decoder = codec::Context::new_with_codec(codec).decoder().open_as(codec).expect("open").video().expect("v");
    let mut picture = frame::Video::empty();
    frames
        .iter()
        .map(|data| {
            decoder.send_packet(&Packet::copy(data)).expect("decodes");
            decoder.receive_frame(&mut picture).expect("a picture");
            luma(&picture)
        })
        .collect()
}

/// A decoded picture's luma plane.
pub fn luma(picture: &frame::Video) -> Luma {
    let (width, height) = (picture.width() as usize, picture.height() as usize);
    let stride = picture.stride(0);
    let plane = picture.data(0);
    let pixels = (0..height).flat_map(|y| plane[y * stride..y * stride + width].iter().copied()).collect();
    Luma { width, height, pixels }
}

pub fn psnr(a: &Luma, b: &Luma) -> f64 {
    let squared: f64 = a.pixels.iter().zip(&b.pixels).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let mse = squared / a.pixels.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// The largest difference from the block's mean inside any mosaic block, 3 pixels in from its edges (VP8's
/// 4×4 transforms and loop filter blur block edges a little), and the mean over all blocks of the mean absolute
/// difference.
pub fn block_flatness(picture: &Luma, block: usize) -> (f64, f64) {
    let mut worst: f64 = 0.0;
    let mut deviations = Vec::new();
    for top in (0..picture.height).step_by(block) {
        for left in (0..picture.width).step_by(block) {
            let (bottom, right) = ((top + block).min(picture.height), (left + block).min(picture.width));
            if bottom - top <= 6 || right - left <= 6 {
                continue;
            }
            let values: Vec<f64> = (top + 3..bottom - 3)
                .flat_map(|y| (left + 3..right - 3).map(move |x| (y, x)))
                .map(|(y, x)| f64::from(picture.pixels[y * picture.width + x]))
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            worst = values.iter().map(|v| (v - mean).abs()).fold(worst, f64::max);
            deviations.push(values.iter().map(|v| (v - mean).abs()).sum::<f64>() / values.len() as f64);
        }
    }
    (worst, deviations.iter().sum::<f64>() / deviations.len() as f64)
}

/// SplitMix64, for reproducible garbage.
pub fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Samples in one 20 ms Opus frame at 48 kHz.
pub const OPUS_FRAME: usize = 960;

/// `samples` (mono, 48 kHz) as 20 ms Opus packets from libopus, each sample written to `channels` channels.
pub fn encode_opus(samples: &[f32], channels: u16) -> Vec<Vec<u8>> {
    ffmpeg::init().expect("FFmpeg initialises");
    let codec = codec::encoder::find_by_name("libopus").expect("libopus");
    let mut audio = codec::Context::new_with_codec(codec).encoder().audio().expect("audio");
    let layout = ChannelLayout::default(i32::from(channels));
    audio.set_rate(48_000);
    audio.set_channel_layout(layout);
    audio.set_channels(i32::from(channels));
    audio.set_format(Sample::F32(sample::Type::Packed));
    audio.set_bit_rate(64_000);
    audio.set_time_base(Rational::new(1, 48_000));
    let mut encoder = audio.open_as(codec).expect("open libopus");
    let mut packets = Vec::new();
    let mut packet = Packet::empty();
    for (index, chunk) in samples.chunks_exact(OPUS_FRAME).enumerate() {
        let mut input = frame::Audio::new(Sample::F32(sample::Type::Packed), OPUS_FRAME, layout);
        input.set_rate(48_000);
        let interleaved: Vec<f32> = chunk.iter().flat_map(|&v| std::iter::repeat_n(v, usize::from(channels))).collect();
        for (bytes, value) in input.data_mut(0).chunks_exact_mut(4).zip(interleaved) {
            bytes.copy_from_slice(&value.to_ne_bytes());
        }
        input.set_pts(Some((index * OPUS_FRAME) as i64));
        encoder.send_frame(&input).expect("encode");
        while encoder.receive_packet(&mut packet).is_ok() {
            packets.push(packet.data().expect("data").to_vec());
        }
    }
    packets
}

/// Decodes Opus packets (of any channel count) to mono 48 kHz samples.
pub fn decode_opus(packets: &[Vec<u8>]) -> Vec<f32> {
    ffmpeg::init().expect("FFmpeg initialises");
    let codec = codec::decoder::find(Id::OPUS).expect("Opus");
    let mut options = Dictionary::new();
    options.set("ch_layout", "mono");
    let mut decoder =
        codec::Context::new_with_codec(codec).decoder().open_as_with(codec, options).expect("open").audio().expect("a");
    let mut decoded = frame::Audio::empty();
    let mut samples = Vec::new();
    for packet in packets {
        decoder.send_packet(&Packet::copy(packet)).expect("decodes");
        while decoder.receive_frame(&mut decoded).is_ok() {
            assert_eq!(decoded.format(), Sample::F32(sample::Type::Planar), "FFmpeg's Opus decoder gives float");
            let plane = &decoded.data(0)[..decoded.samples() * 4];
            samples.extend(plane.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])));
        }
    }
    samples
}

/// One packet of a WebM file as FFmpeg's demuxer reads it.
#[derive(Debug, Clone)]
pub struct Demuxed {
    pub stream: usize,
    pub pts_ms: i64,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// A WebM file as FFmpeg reads it (trusted test files, opened by name).
#[derive(Debug)]
pub struct Webm {
    /// Per stream: kind and codec name, such as `(Video, "vp8")`.
    pub streams: Vec<(ffmpeg::media::Type, String)>,
    /// The container's duration in milliseconds.
    pub duration_ms: i64,
    pub packets: Vec<Demuxed>,
}

impl Webm {
    pub fn read(path: &Path) -> Webm {
        ffmpeg::init().expect("FFmpeg initialises");
        let mut input = ffmpeg::format::input(path).expect("a readable WebM file");
        let streams =
            input.streams().map(|s| (s.parameters().medium(), s.parameters().id().name().to_owned())).collect();
        let time_bases: Vec<Rational> = input.streams().map(|s| s.time_base()).collect();
        let duration_ms = input.duration() / 1000;
        let mut packets = Vec::new();
        for (stream, packet) in input.packets() {
            use ffmpeg::Rescale;
            let pts = packet.pts().expect("a timestamp");
            packets.push(Demuxed {
                stream: stream.index(),
                pts_ms: pts.rescale(time_bases[stream.index()], Rational::new(1, 1000)),
                keyframe: packet.is_key(),
                data: packet.data().expect("data").to_vec(),
            });
        }
        Webm { streams, duration_ms, packets }
    }

    /// The packets of the first stream of `kind`.
    pub fn of(&self, kind: ffmpeg::media::Type) -> Vec<&Demuxed> {
        let index = self.streams.iter().position(|(k, _)| *k == kind).expect("a stream of that kind");
        self.packets.iter().filter(|p| p.stream == index).collect()
    }

    pub fn video(&self) -> Vec<&Demuxed> {
        self.of(ffmpeg::media::Type::Video)
    }

    pub fn audio(&self) -> Vec<&Demuxed> {
        self.of(ffmpeg::media::Type::Audio)
    }
}

/// Decodes VP8 frames in order into a picture each, with their timestamps; frames that give no picture (before
/// a keyframe) are left out.
pub fn decode_timed(frames: &[&Demuxed]) -> Vec<(i64, Luma)> {
    let codec = codec::decoder::find(Id::VP8).expect("VP8 decoder");
    let mut decoder = codec::Context::new_with_codec(codec).decoder().open_as(codec).expect("open").video().expect("v");
    let mut picture = frame::Video::empty();
    let mut out = Vec::new();
    for frame in frames {
        if decoder.send_packet(&Packet::copy(&frame.data)).is_ok() && decoder.receive_frame(&mut picture).is_ok() {
            out.push((frame.pts_ms, luma(&picture)));
        }
    }
    out
}

/// A recorder-style WebM segment at `path`, written with `WebmSegmentWriter` as the recorder writes them: VP8
/// frames at 30 frames/s (times rounded to the millisecond) and/or 20 ms Opus packets of `channels` channels,
/// interleaved in time order.
pub fn write_segment(path: &Path, video: &[Vec<u8>], audio: &[Vec<u8>], size: (u32, u32), channels: u16) {
    let mut tracks = Vec::new();
    if !video.is_empty() {
        tracks.push(WebmTrack::Vp8 { width: size.0, height: size.1 });
    }
    if !audio.is_empty() {
        tracks.push(WebmTrack::Opus { channels });
    }
    let audio_track = tracks.len() - 1;
    let mut writer = WebmSegmentWriter::new(path, &tracks).expect("segment writer");
    let mut packets: Vec<(i64, usize, &[u8], bool)> = video
        .iter()
        .enumerate()
        .map(|(i, data)| ((i as i64 * 1000 + 15) / 30, 0, data.as_slice(), data[0] & 1 == 0))
        .chain(audio.iter().enumerate().map(|(i, data)| (i as i64 * 20, audio_track, data.as_slice(), true)))
        .collect();
    packets.sort_by_key(|&(ms, track, _, _)| (ms, track));
    for (ms, track, data, keyframe) in packets {
        writer.write_packet(track, ms, data, keyframe).expect("writes");
    }
    writer.finish().expect("finishes");
}
