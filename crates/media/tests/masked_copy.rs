//! Masked copies of recorded segments: a recorder-style WebM segment (VP8 of a detailed moving picture, Opus of a
//! synthetic vowel) goes through `mask_segment`, and both files are decoded with FFmpeg and compared: the copy
//! must keep the streams and the timing and show and sound masked throughout. Damaged, foreign and hostile inputs
//! must give errors or shorter copies, never a panic, never an unmasked picture.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::voice_support::{VOWEL_A, strongest_formants, vowel};
use common::{
    Luma, Webm, block_flatness, decode_opus, decode_timed, encode_opus, encode_pattern, encode_pattern_with_keyframes,
    next_random, psnr, write_segment,
};
use custodia_media::mask::mosaic_block;
use custodia_media::masked_copy::MAX_SEGMENT_STREAMS;
use custodia_media::{MaskError, MaskedSegment, mask_segment};
use ffmpeg::media::Type;
use ffmpeg_next as ffmpeg;

const SIZE: (u32, u32) = (640, 360);
/// One video frame at 30 frames/s, in whole milliseconds (rounded up): the tolerance on durations.
const FRAME_MS: i64 = 34;

/// A 2 s segment: 60 VP8 frames of the test pattern and 100 Opus packets of the vowel (`channels` channels).
fn segment(dir: &Path, name: &str, channels: u16) -> PathBuf {
    let path = dir.join(name);
    let video = encode_pattern(SIZE.0, SIZE.1, 60);
    let audio = encode_opus(&vowel(120.0, &VOWEL_A, 2.0), channels);
    write_segment(&path, &video, &audio, SIZE, channels);
    path
}

/// Checks every decoded picture of a masked copy: a flat mosaic (within ±8 of each block's mean, ±1.5 on
/// average; the live masker's test measures ±5 and ±0.8), and, where the input has a picture at the same time,
/// far from it (PSNR under 20 dB; a faithful re-encode is over 30 dB). Returns the worst (highest) PSNR.
fn assert_all_masked(output: &[(i64, Luma)], input: &[(i64, Luma)]) -> f64 {
    let block = mosaic_block(SIZE.0) as usize;
    let mut worst_psnr = f64::NEG_INFINITY;
    for (ms, masked) in output {
        assert_eq!((masked.width, masked.height), (SIZE.0 as usize, SIZE.1 as usize), "frame at {ms} ms");
        let (worst, mean) = block_flatness(masked, block);
        assert!(worst <= 8.0 && mean <= 1.5, "frame at {ms} ms is not a flat mosaic: worst {worst}, mean {mean:.2}");
        let (_, original) = input.iter().find(|(at, _)| at == ms).expect("an input picture at the same time");
        let quality = psnr(masked, original);
        assert!(quality < 20.0, "frame at {ms} ms: PSNR {quality:.1} dB against the unmasked picture");
        worst_psnr = worst_psnr.max(quality);
    }
    worst_psnr
}

#[test]
fn a_masked_copy_keeps_streams_and_timing_and_masks_every_frame_and_the_voice() {
    let dir = tempfile::tempdir().unwrap();
    for channels in [2, 1] {
        let input_path = segment(dir.path(), &format!("in-{channels}.webm"), channels);
        let output_path = dir.path().join(format!("out-{channels}.webm"));
        let summary = mask_segment(&input_path, &output_path, 11).expect("masks");
        let (input, output) = (Webm::read(&input_path), Webm::read(&output_path));

        // Same stream kinds and codecs, in the same order.
        assert_eq!(output.streams, input.streams);
        assert_eq!(
            output.streams.iter().map(|(kind, codec)| (*kind, codec.as_str())).collect::<Vec<_>>(),
            [(Type::Video, "vp8"), (Type::Audio, "opus")]
        );

        // Every video frame, at the same time, the first a keyframe (by the container's flag and by the VP8
        // frame tag); every 20 ms of audio.
        let (in_video, out_video) = (input.video(), output.video());
        assert_eq!(summary.video_frames, 60);
        assert_eq!(summary.dropped, 0);
        assert_eq!(out_video.len(), 60);
        assert_eq!(
            out_video.iter().map(|p| p.pts_ms).collect::<Vec<_>>(),
            in_video.iter().map(|p| p.pts_ms).collect::<Vec<_>>()
        );
        assert!(out_video[0].keyframe && out_video[0].data[0] & 1 == 0, "the first video frame is a keyframe");
        let (in_audio, out_audio) = (input.audio(), output.audio());
        assert_eq!(summary.audio_packets, out_audio.len() as u64);
        // The 100 input packets cover 2,000 ms; the copy covers the same span to within one 20 ms packet.
        let in_end = in_audio.last().unwrap().pts_ms + 20;
        let out_end = out_audio.last().unwrap().pts_ms + 20;
        assert!((out_end - in_end).abs() <= 20, "audio ends at {out_end} ms, the input's at {in_end} ms");
        assert!(out_audio[0].pts_ms <= 20, "audio starts at {} ms", out_audio[0].pts_ms);
        // 20 ms apart (to the millisecond), but for the first, whose sound begins 4 ms before the input's (the
        // transform's 24 ms delay less a 20 ms packet) and is put at the start.
        let steps: Vec<i64> = out_audio.windows(2).map(|w| w[1].pts_ms - w[0].pts_ms).collect();
        assert!(steps[0] == 16 && steps[1..].iter().all(|step| (19..=21).contains(step)), "{steps:?}");

        // Same duration, container and summary, to within one video frame.
        assert!(
            (output.duration_ms - input.duration_ms).abs() <= FRAME_MS,
            "durations {} and {} ms",
            output.duration_ms,
            input.duration_ms
        );
        let in_span = input.packets.iter().map(|p| p.pts_ms).max().unwrap();
        assert!((summary.duration_ms - in_span).abs() <= FRAME_MS, "{summary:?} against a span of {in_span} ms");

        // Every picture a flat mosaic, far from the original.
        let (in_pictures, out_pictures) = (decode_timed(&in_video), decode_timed(&out_video));
        assert_eq!(out_pictures.len(), 60);
        let worst_psnr = assert_all_masked(&out_pictures, &in_pictures);
        eprintln!("{channels} ch: {summary:?}, highest luma PSNR {worst_psnr:.1} dB");

        // The voice's formants moved (as the live masker's test requires: F1 by over 100 Hz, F2 by over 75 Hz),
        // past the first 200 ms of each.
        let in_samples = decode_opus(&in_audio.iter().map(|p| p.data.clone()).collect::<Vec<_>>());
        let out_samples = decode_opus(&out_audio.iter().map(|p| p.data.clone()).collect::<Vec<_>>());
        let [in_f1, in_f2] = strongest_formants(&in_samples[9600..]);
        let [out_f1, out_f2] = strongest_formants(&out_samples[9600..]);
        eprintln!("{channels} ch: F1 {in_f1} → {out_f1} Hz, F2 {in_f2} → {out_f2} Hz");
        assert!(out_f1 - in_f1 > 100.0, "F1 {in_f1} → {out_f1}");
        assert!(out_f2 - in_f2 > 75.0, "F2 {in_f2} → {out_f2}");
        // And never the input's bytes.
        assert!(out_audio.iter().all(|p| in_audio.iter().all(|q| q.data != p.data)));

        // FFmpeg's own command-line reader takes the copy without complaint.
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-show_streams"])
            .arg(&output_path)
            .output()
            .expect("the ffprobe CLI (scripts/setup-system.sh test installs it)");
        let (stdout, stderr) = (String::from_utf8_lossy(&probe.stdout), String::from_utf8_lossy(&probe.stderr));
        assert!(probe.status.success() && stderr.is_empty(), "ffprobe: {stderr}");
        assert!(stdout.contains("codec_name=vp8") && stdout.contains("codec_name=opus"), "{stdout}");
    }
}

#[test]
fn frames_before_the_first_keyframe_are_left_out_and_the_copy_starts_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late-keyframe.webm");
    // A segment that begins mid-stream: frames 1–9 refer to a keyframe it does not hold; frame 10 is one.
    let video = encode_pattern_with_keyframes(SIZE.0, SIZE.1, 30, &[10]);
    write_segment(&path, &video[1..], &[], SIZE, 1);
    let output_path = dir.path().join("out.webm");
    let summary = mask_segment(&path, &output_path, 5).expect("masks");
    assert_eq!(summary, MaskedSegment { video_frames: 20, audio_packets: 0, dropped: 9, duration_ms: 633 });
    let (input, output) = (Webm::read(&path), Webm::read(&output_path));
    assert_eq!(output.streams, [(Type::Video, "vp8".to_owned())]);
    let out_video = output.video();
    assert!(out_video[0].keyframe && out_video[0].data[0] & 1 == 0);
    assert_eq!(out_video[0].pts_ms, input.video()[9].pts_ms, "the copy starts at the input's keyframe's time");
    assert_all_masked(&decode_timed(&out_video), &decode_timed(&input.video()));
}

#[test]
fn a_truncated_segment_gives_a_shorter_masked_copy_or_an_error_never_an_unmasked_frame() {
    let dir = tempfile::tempdir().unwrap();
    let whole = segment(dir.path(), "whole.webm", 2);
    let bytes = std::fs::read(&whole).unwrap();
    let reference = decode_timed(&Webm::read(&whole).video());
    let mut state = 3;
    let mut cuts: Vec<usize> = [1, 40, 200, bytes.len() / 10, bytes.len() / 2, bytes.len() - 1].to_vec();
    cuts.extend((0..6).map(|_| (next_random(&mut state) as usize) % bytes.len()));
    let (mut copies, mut errors) = (0, 0);
    for (round, cut) in cuts.into_iter().enumerate() {
        let input = dir.path().join(format!("cut-{round}.webm"));
        std::fs::write(&input, &bytes[..cut]).unwrap();
        let output = dir.path().join(format!("cut-{round}-masked.webm"));
        match mask_segment(&input, &output, 1) {
            Ok(summary) => {
                copies += 1;
                eprintln!("cut at {cut} of {}: {summary:?}", bytes.len());
                let copy = Webm::read(&output);
                assert!(summary.video_frames <= 60 && summary.duration_ms <= 2000, "cut at {cut}: {summary:?}");
                if summary.video_frames > 0 {
                    assert!(copy.video()[0].keyframe);
                    assert_all_masked(&decode_timed(&copy.video()), &reference);
                }
            }
            Err(e) => {
                errors += 1;
                eprintln!("cut at {cut}: {e}");
                assert!(
                    matches!(e, MaskError::NotMedia { .. } | MaskError::NothingMasked { .. } | MaskError::Demux { .. }),
                    "cut at {cut}: {e:?}"
                );
                assert!(!output.exists(), "cut at {cut}: {e}, yet an output file is left");
            }
        }
    }
    eprintln!("truncated: {copies} shorter copies, {errors} errors");
    // Cut at half its length, the segment still has a second of media to mask.
    assert!(copies >= 1);
}

#[test]
fn what_is_not_a_webm_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.webm");
    let mut state = 9;
    let garbage = dir.path().join("garbage.webm");
    std::fs::write(&garbage, (0..100_000).map(|_| next_random(&mut state) as u8).collect::<Vec<u8>>()).unwrap();
    assert!(matches!(mask_segment(&garbage, &output, 1), Err(MaskError::NotMedia { .. })));
    let text = dir.path().join("notes.webm");
    std::fs::write(&text, "the witness said nothing of note\n".repeat(100)).unwrap();
    assert!(matches!(mask_segment(&text, &output, 1), Err(MaskError::NotMedia { .. })));
    let empty = dir.path().join("empty.webm");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(mask_segment(&empty, &output, 1), Err(MaskError::NotMedia { .. })));
    assert!(matches!(mask_segment(dir.path(), &output, 1), Err(MaskError::NotAFile { .. })));
    assert!(matches!(mask_segment(&dir.path().join("absent.webm"), &output, 1), Err(MaskError::OpenSegment { .. })));
    assert!(!output.exists());
}

/// Makes `name` in `dir` with the ffmpeg CLI from a test source and a sine, with the given output arguments.
fn ffmpeg_file(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "1",
        ])
        .args(args)
        .arg(&path)
        .status()
        .expect("the ffmpeg CLI (scripts/setup-system.sh test installs it)");
    assert!(status.success());
    path
}

#[test]
fn other_codecs_and_containers_are_refused_and_ffmpegs_own_webm_is_masked() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.webm");
    // H.264 in Matroska: the WebM demuxer reads it, but only VP8 and Opus are masked.
    let h264 = ffmpeg_file(dir.path(), "h264.mkv", &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "libopus"]);
    let refused = mask_segment(&h264, &output, 1);
    assert!(
        matches!(&refused, Err(MaskError::UnsupportedStream { index: 0, what, .. }) if what == "video in h264"),
        "{refused:?}"
    );
    // Vorbis beside VP8 in WebM.
    let vorbis =
        ffmpeg_file(dir.path(), "vorbis.webm", &["-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libvorbis"]);
    let refused = mask_segment(&vorbis, &output, 1);
    assert!(
        matches!(&refused, Err(MaskError::UnsupportedStream { index: 1, what, .. }) if what == "audio in vorbis"),
        "{refused:?}"
    );
    // VP8 and Opus, but in Ogg and MP4 rather than WebM.
    let ogg = ffmpeg_file(dir.path(), "voice.ogg", &["-vn", "-c:a", "libopus"]);
    assert!(matches!(mask_segment(&ogg, &output, 1), Err(MaskError::NotWebm { format, .. }) if format == "ogg"));
    assert!(!output.exists());

    // The ffmpeg CLI's own WebM (with Opus's header in the track, stereo at 25 frames/s) masks as well.
    let webm = ffmpeg_file(
        dir.path(),
        "cli.webm",
        &["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "1M", "-c:a", "libopus"],
    );
    let summary = mask_segment(&webm, &output, 1).expect("masks");
    assert_eq!((summary.video_frames, summary.dropped), (25, 0), "{summary:?}");
    let (input, copy) = (Webm::read(&webm), Webm::read(&output));
    assert_eq!(copy.streams, input.streams);
    assert!((copy.duration_ms - input.duration_ms).abs() <= 40, "{} against {}", copy.duration_ms, input.duration_ms);
    // An existing file is never overwritten.
    assert!(matches!(mask_segment(&webm, &output, 1), Err(MaskError::Write(_))));
}

#[test]
fn too_many_streams_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.webm");
    let audio = encode_opus(&vowel(120.0, &VOWEL_A, 0.2), 1);
    let tracks = vec![custodia_media::WebmTrack::Opus { channels: 1 }; MAX_SEGMENT_STREAMS + 1];
    let mut writer = custodia_media::WebmSegmentWriter::new(&path, &tracks).unwrap();
    for (index, packet) in audio.iter().enumerate() {
        for track in 0..tracks.len() {
            writer.write_packet(track, index as i64 * 20, packet, true).unwrap();
        }
    }
    writer.finish().unwrap();
    let output = dir.path().join("out.webm");
    assert!(matches!(mask_segment(&path, &output, 1), Err(MaskError::StreamCount { streams: 5, .. })));
    assert!(!output.exists());
}
