//! Video masking end to end: a detailed moving test pattern is encoded as VP8 (with libvpx, through ffmpeg-next),
//! pushed through `VideoMasker`, and the masked VP8 decoded again and compared with the unmasked pictures.

use custodia_media::mask::{MAX_HEIGHT, MAX_WIDTH, mosaic_block};
use custodia_media::{MaskError, VideoMasker};
use ffmpeg::codec::{self, Id};
use ffmpeg::format::Pixel;
use ffmpeg::{Dictionary, Packet, Rational, frame};
use ffmpeg_next as ffmpeg;

/// A decoded picture's luma plane, rows packed (no stride padding).
struct Luma {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

/// A detailed, moving pattern: a fine checkerboard and a pseudo-random texture over gradients, shifted each frame,
/// with coloured chroma gradients. Hard to compress and full of edges a mosaic must destroy.
fn test_pattern(width: u32, height: u32, index: u32) -> frame::Video {
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
fn encode_pattern(width: u32, height: u32, frames: u32) -> Vec<Vec<u8>> {
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
        encoder.send_frame(&picture).expect("encode");
        while encoder.receive_packet(&mut packet).is_ok() {
            out.push(packet.data().expect("data").to_vec());
        }
    }
    assert_eq!(out.len(), frames as usize, "one VP8 frame per picture");
    out
}

/// Decodes VP8 frames in order; one picture per frame, as luma.
fn decode(frames: &[Vec<u8>]) -> Vec<Luma> {
    let codec = codec::decoder::find(Id::VP8).expect("VP8 decoder");
    let mut decoder = codec::Context::new_with_codec(codec).decoder().open_as(codec).expect("open").video().expect("v");
    let mut picture = frame::Video::empty();
    frames
        .iter()
        .map(|data| {
            decoder.send_packet(&Packet::copy(data)).expect("decodes");
            decoder.receive_frame(&mut picture).expect("a picture");
            let (width, height) = (picture.width() as usize, picture.height() as usize);
            let stride = picture.stride(0);
            let plane = picture.data(0);
            let pixels = (0..height).flat_map(|y| plane[y * stride..y * stride + width].iter().copied()).collect();
            Luma { width, height, pixels }
        })
        .collect()
}

fn psnr(a: &Luma, b: &Luma) -> f64 {
    let squared: f64 = a.pixels.iter().zip(&b.pixels).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let mse = squared / a.pixels.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// The largest difference from the block's mean inside any mosaic block, 3 pixels in from its edges (VP8's
/// 4×4 transforms and loop filter blur block edges a little), and the mean over all blocks of the mean absolute
/// difference.
fn block_flatness(picture: &Luma, block: usize) -> (f64, f64) {
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

#[test]
fn masked_video_keeps_its_size_and_is_a_flat_mosaic_unlike_the_original() {
    let (width, height) = (640, 360);
    let input = encode_pattern(width, height, 30);
    let reference = decode(&input);
    let mut masker = VideoMasker::new().expect("masker");
    let mut masked = Vec::new();
    for (index, frame) in input.iter().enumerate() {
        let out = masker.push(frame).expect("masks").expect("every frame of a clean stream gives a picture");
        assert_eq!(out.keyframe, index == 0, "frame {index}: only the first is a keyframe unless asked");
        masked.push(out.data);
    }
    let decoded = decode(&masked);
    let block = mosaic_block(width) as usize;
    for (index, (masked, original)) in decoded.iter().zip(&reference).enumerate() {
        assert_eq!((masked.width, masked.height), (640, 360), "frame {index}");
        // A faithful re-encode is above 30 dB; the mosaic of this pattern measures about 16 dB. Under
        // 20 dB nothing of the fine detail is left.
        let quality = psnr(masked, original);
        assert!(quality < 20.0, "frame {index}: PSNR {quality:.1} dB against the unmasked picture");
        // Inside each block the luma is flat: within ±8 of the block's mean anywhere, ±1.5 on average (measured: ±5, ±0.8).
        let (worst, mean_deviation) = block_flatness(masked, block);
        assert!(worst <= 8.0 && mean_deviation <= 1.5, "frame {index}: worst {worst}, mean {mean_deviation:.2}");
        // The original is anything but flat over the same blocks (so this check can tell them apart).
        let (_, original_deviation) = block_flatness(original, block);
        assert!(original_deviation > 15.0, "frame {index}: pattern not detailed enough ({original_deviation:.1})");
    }
}

#[test]
fn a_keyframe_comes_when_forced() {
    let input = encode_pattern(320, 240, 12);
    let mut masker = VideoMasker::new().expect("masker");
    let mut keyframes = Vec::new();
    for (index, frame) in input.iter().enumerate() {
        if index == 5 || index == 9 {
            masker.force_keyframe();
        }
        keyframes.push(masker.push(frame).expect("masks").expect("a picture").keyframe);
    }
    let expected: Vec<bool> = (0..12).map(|index| [0, 5, 9].contains(&index)).collect();
    assert_eq!(keyframes, expected);
}

#[test]
fn the_encoder_follows_a_change_of_picture_size() {
    let mut masker = VideoMasker::new().expect("masker");
    let small = encode_pattern(320, 240, 3);
    let large = encode_pattern(480, 272, 3);
    let outputs: Vec<Vec<u8>> =
        small.iter().chain(&large).map(|frame| masker.push(frame).expect("masks").expect("picture").data).collect();
    let sizes: Vec<(usize, usize)> = decode(&outputs[..3])
        .iter()
        .chain(&decode(&outputs[3..]))
        .map(|picture| (picture.width, picture.height))
        .collect();
    assert_eq!(sizes, [(320, 240), (320, 240), (320, 240), (480, 272), (480, 272), (480, 272)]);
}

/// SplitMix64, for reproducible garbage.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn garbage_gives_nothing_or_an_error_never_a_panic_nor_unmasked_bytes() {
    let input = encode_pattern(320, 240, 4);
    let mut state = 7;
    let mut masker = VideoMasker::new().expect("masker");
    // Before any keyframe: pure garbage, and garbage behind a keyframe's tag and start code.
    for round in 0..300 {
        let length = (next_random(&mut state) % 3000) as usize;
        let mut bytes: Vec<u8> = (0..length).map(|_| next_random(&mut state) as u8).collect();
        if round % 2 == 0 && bytes.len() >= 10 {
            bytes[0] &= !1;
            bytes[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            // Sizes within the limit, so that the decoder, not the header check, has to cope.
            bytes[6..8].copy_from_slice(&(16 + (next_random(&mut state) % 600) as u16).to_le_bytes());
            bytes[8..10].copy_from_slice(&(16 + (next_random(&mut state) % 400) as u16).to_le_bytes());
        }
        match masker.push(&bytes) {
            Ok(None) | Err(_) => {}
            Ok(Some(out)) => assert_ne!(out.data, bytes, "garbage passed through"),
        }
    }
    // A real stream, with truncated and bit-flipped frames among its frames.
    let mut masker = VideoMasker::new().expect("masker");
    for round in 0..200 {
        let original = &input[round % input.len()];
        let mut bytes = original.clone();
        match round % 3 {
            0 => bytes.truncate((next_random(&mut state) as usize) % original.len()),
            1 => {
                for _ in 0..8 {
                    let at = (next_random(&mut state) as usize) % bytes.len();
                    bytes[at] ^= 1 << (next_random(&mut state) % 8);
                }
            }
            _ => {}
        }
        if let Ok(Some(out)) = masker.push(&bytes) {
            assert_ne!(out.data, bytes);
        }
    }
    // After all that, a clean keyframe still gives a picture.
    assert!(masker.push(&input[0]).expect("masks").is_some());
}

#[test]
fn oversized_pictures_are_refused() {
    let mut masker = VideoMasker::new().expect("masker");
    // A keyframe header claiming 3840 × 2160 and nothing behind it.
    let mut header = vec![0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a];
    header.extend_from_slice(&3840u16.to_le_bytes());
    header.extend_from_slice(&2160u16.to_le_bytes());
    header.resize(2000, 0x11);
    assert!(matches!(masker.push(&header), Err(MaskError::PictureTooLarge { width: 3840, height: 2160 })));
    // A real keyframe one pixel too wide.
    let too_wide = encode_pattern(MAX_WIDTH + 2, 64, 1);
    assert!(matches!(
        masker.push(&too_wide[0]),
        Err(MaskError::PictureTooLarge { width, height: 64 }) if width == MAX_WIDTH + 2
    ));
    // The largest allowed size is accepted.
    let largest = encode_pattern(MAX_WIDTH, MAX_HEIGHT, 1);
    let out = masker.push(&largest[0]).expect("masks").expect("a picture");
    assert!(out.keyframe);
    // Oversized input is refused whatever it holds.
    assert!(matches!(masker.push(&vec![0; 5 << 20]), Err(MaskError::PacketTooLarge { .. })));
}
