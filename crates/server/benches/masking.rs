//! What a protected witness's masked video costs through the gateway's own pipeline: the `custodia mask video`
//! child process the room starts (`custodia_hearings::masking::Maskers`), fed over its pipe at the camera's pace.
//!
//! `cargo bench -p custodia-server --bench masking` needs the `ffmpeg` command (it makes the test stream and is the
//! peer). For 640×360 and 1280×720 at 30 frames/s (`testsrc2`, VP8 as a browser would send it), it measures:
//!
//! - **Latency added**: from a frame handed to the pipe to its masked frame back from the child, p50 and p99, at the
//!   camera's pace (one frame every 33 ms). Goal: under 150 ms at 360p.
//! - **CPU per masked feed**: the child's user + system time per second of video (cores per feed), beside
//!   `ffmpeg -benchmark` (one thread) decoding the same file, pixelating it with `scale` down and up by the mosaic's
//!   block and encoding it with libvpx in real-time mode: the same work by FFmpeg's own tool, in the same run.
//!
//! - **Audio mixing cost per interpretation channel**: a simultaneous channel's listeners hear every floor voice
//!   ducked, each through a `custodia mask ducked` child (Opus decoded, scaled to a fifth, encoded again); the
//!   browser mixes the tracks it receives, as it does for every voice. The pipelines are per floor voice and shared
//!   by every channel, so the figure is measured with four floor voices fed at once at the microphone's pace (one
//!   20 ms packet every 20 ms each), and divided by the channels a hearing has. Beside it, `ffmpeg -benchmark` (one
//!   thread) decoding the same Opus stream, applying `volume=0.2` and encoding it with libopus as the child does.
//!
//! Tuning, by environment variable: `CUSTODIA_BENCH_SECONDS` (length of each stream, 10).
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use custodia_benchkit::{
    BoxError, Headline, Table, add_to_summary, clock_ticks_per_second, cpu_ticks, env_or, ffmpeg_cpu_seconds,
    run_ffmpeg,
};
use custodia_hearings::masking::Maskers;
use custodia_recorder::engine::MediaKind;
use custodia_recorder::masking::{MaskerFactory, ToMasker, Treatment};

const FRAME_INTERVAL: Duration = Duration::from_micros(33_333);

/// The frames of an IVF file: a 32-byte file header, then per frame a 12-byte header (size, u32 little-endian, and
/// a 64-bit timestamp) and the frame.
fn ivf_frames(path: &Path) -> Result<Vec<Bytes>, BoxError> {
    let file = std::fs::read(path)?;
    let mut frames = Vec::new();
    let mut at = 32;
    while at + 12 <= file.len() {
        let size = u32::from_le_bytes(file[at..at + 4].try_into()?) as usize;
        let start = at + 12;
        let frame = file.get(start..start + size).ok_or("a cut-off IVF frame")?;
        frames.push(Bytes::copy_from_slice(frame));
        at = start + size;
    }
    Ok(frames)
}

/// The children's CPU seconds this process has waited for so far.
fn children_cpu_seconds() -> Result<f64, BoxError> {
    Ok(cpu_ticks("/proc/self/stat", 16)? as f64 / clock_ticks_per_second())
}

struct Measured {
    p50_ms: f64,
    p99_ms: f64,
    cores: f64,
    frames_out: usize,
}

/// Feeds `frames` to one fresh pipeline making `treatment` of a `kind` track, one every `interval` (frame `n`
/// stamped `n × interval`), and returns the milliseconds each took to come back. The pipe is never waited on: the
/// room drops a frame the pipe cannot take, so a full pipe, which waiting would hide, fails the measurement.
async fn at_pace(
    maskers: &Maskers,
    kind: MediaKind,
    treatment: Treatment,
    frames: &[Bytes],
    interval: Duration,
) -> Result<Vec<f64>, BoxError> {
    let pipe = maskers.start(kind, treatment)?;
    let (input, mut output) = (pipe.input, pipe.output);
    let mut handed: HashMap<i64, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next = 0usize;
    loop {
        tokio::select! {
            _ = ticker.tick(), if next < frames.len() => {
                let pts_ms = (next as f64 * interval.as_secs_f64() * 1000.0) as i64;
                handed.insert(pts_ms, Instant::now());
                input.try_send(ToMasker::Frame { pts_ms, data: frames[next].clone() }).map_err(|_| "the pipe was full")?;
                next += 1;
            }
            made = output.recv() => {
                let Some(made) = made else { break };
                if let Some(at) = handed.remove(&made.pts_ms) {
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                }
                if next == frames.len() && handed.is_empty() {
                    break;
                }
            }
            () = tokio::time::sleep(Duration::from_secs(5)), if next == frames.len() => break,
        }
    }
    drop(input);
    // The child ends with its input; the pipe's reader reaps it once its output ends.
    while output.recv().await.is_some() {}
    Ok(latencies)
}

/// What came back of `latencies`, and the children's CPU since `cpu_before` per second of `media_seconds`.
fn measured(mut latencies: Vec<f64>, cpu_before: f64, media_seconds: f64) -> Result<Measured, BoxError> {
    let cores = (children_cpu_seconds()? - cpu_before) / media_seconds;
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    Ok(Measured { p50_ms: at(0.5), p99_ms: at(0.99), cores, frames_out: latencies.len() })
}

/// Feeds every frame to a fresh `custodia mask video` child at the camera's pace and times what comes back.
async fn through_the_pipeline(maskers: &Maskers, frames: &[Bytes]) -> Result<Measured, BoxError> {
    let cpu_before = children_cpu_seconds()?;
    let masked = Treatment { mask: true, duck: false };
    let latencies = at_pace(maskers, MediaKind::Video, masked, frames, FRAME_INTERVAL).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    measured(latencies, cpu_before, frames.len() as f64 / 30.0)
}

/// The packets of an Ogg Opus file (RFC 7845) after its two header packets: each page's segment table gives the
/// lengths of its lacing values, a packet ending at the first value under 255.
fn ogg_opus_packets(path: &Path) -> Result<Vec<Bytes>, BoxError> {
    let file = std::fs::read(path)?;
    let (mut packets, mut packet, mut at) = (Vec::new(), Vec::new(), 0);
    while at + 27 <= file.len() {
        if &file[at..at + 4] != b"OggS" {
            return Err("not an Ogg page".into());
        }
        let segments = usize::from(file[at + 26]);
        let table = file.get(at + 27..at + 27 + segments).ok_or("a cut-off Ogg page")?;
        let mut body = at + 27 + segments;
        for &lacing in table {
            let length = usize::from(lacing);
            packet.extend_from_slice(file.get(body..body + length).ok_or("a cut-off Ogg page")?);
            body += length;
            if lacing < 255 {
                packets.push(Bytes::from(std::mem::take(&mut packet)));
            }
        }
        at = body;
    }
    Ok(packets.into_iter().skip(2).collect())
}

/// Feeds `voices` fresh `custodia mask ducked` children at once, each every packet at the microphone's pace, and
/// times what comes back; `cores` is all their CPU per second of audio.
async fn ducking(maskers: &std::sync::Arc<Maskers>, packets: &[Bytes], voices: usize) -> Result<Measured, BoxError> {
    let cpu_before = children_cpu_seconds()?;
    let ducked = Treatment { mask: false, duck: true };
    let feeds: Vec<_> = (0..voices)
        .map(|_| {
            let (maskers, packets) = (maskers.clone(), packets.to_vec());
            tokio::spawn(async move {
                at_pace(&maskers, MediaKind::Audio, ducked, &packets, Duration::from_millis(20)).await
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for feed in feeds {
        latencies.extend(feed.await??);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    measured(latencies, cpu_before, packets.len() as f64 * 0.020)
}

/// Floor voices in the ducking measurement: a judge, a witness, and counsel on both sides.
const FLOOR_VOICES: usize = 4;

fn main() -> Result<(), BoxError> {
    let seconds: u64 = env_or("CUSTODIA_BENCH_SECONDS", 10)?;
    let dir = tempfile::tempdir()?;
    let maskers = std::sync::Arc::new(Maskers::new(PathBuf::from(env!("CARGO_BIN_EXE_custodia"))));
    let runtime = tokio::runtime::Runtime::new()?;
    let mut table = Table::new(["measurement", "custodia mask (child process)", "ffmpeg CLI (same run)", "ratio"]);
    let mut headlines = Vec::new();
    for (width, height, bitrate) in [(640u32, 360u32, "600k"), (1280, 720, "1500k")] {
        let size = format!("{width}x{height}");
        let stream = dir.path().join(format!("{size}.ivf"));
        let source = format!("testsrc2=size={size}:rate=30");
        let length = seconds.to_string();
        let stream_text = stream.to_string_lossy().into_owned();
        run_ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &source,
            "-t",
            &length,
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            bitrate,
            "-g",
            "100",
            "-f",
            "ivf",
            &stream_text,
        ])?;
        let frames = ivf_frames(&stream)?;
        let measured = runtime.block_on(through_the_pipeline(&maskers, &frames))?;
        // FFmpeg's tool doing the same: decode, a mosaic of the masker's block, re-encode, one thread.
        let block = custodia_media::mask::mosaic_block(width);
        let filter = format!("scale=iw/{block}:ih/{block},scale=iw*{block}:ih*{block}:flags=neighbor");
        let peer = run_ffmpeg(&[
            "-benchmark",
            "-threads",
            "1",
            "-i",
            &stream_text,
            "-vf",
            &filter,
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            bitrate,
            "-threads",
            "1",
            "-f",
            "null",
            "-",
        ])?;
        let peer_cores = ffmpeg_cpu_seconds(&peer)? / seconds as f64;
        println!(
            "{size}: {} of {} frames back; latency p50 {:.2} ms, p99 {:.2} ms; {:.3} cores per feed (ffmpeg {:.3})",
            measured.frames_out,
            frames.len(),
            measured.p50_ms,
            measured.p99_ms,
            measured.cores,
            peer_cores
        );
        let ratio = measured.cores / peer_cores;
        table.row([
            format!("CPU per masked feed, {size} 30 fps"),
            format!("{:.3} cores", measured.cores),
            format!("{peer_cores:.3} cores"),
            format!("{ratio:.2}x"),
        ]);
        headlines.push(Headline {
            measurement: format!("masked feed CPU, {size}"),
            figure: format!("{:.3} cores", measured.cores),
            against: format!("ffmpeg CLI {peer_cores:.3} cores"),
            ratio: format!("{ratio:.2}x"),
        });
        table.row([
            format!("latency added, {size}, p50 / p99"),
            format!("{:.1} / {:.1} ms", measured.p50_ms, measured.p99_ms),
            "goal: under 150 ms at 360p".to_owned(),
            format!("{:.2}x of the goal (p99)", measured.p99_ms / 150.0),
        ]);
        if width == 640 {
            headlines.push(Headline {
                measurement: "masking latency p99, 360p".to_owned(),
                figure: format!("{:.1} ms", measured.p99_ms),
                against: "goal 150 ms".to_owned(),
                ratio: format!("{:.2}x", measured.p99_ms / 150.0),
            });
        }
    }

    // Ducking the floor for interpretation channels.
    let voice = dir.path().join("voice.ogg");
    let voice_text = voice.to_string_lossy().into_owned();
    let source = "aevalsrc=0.3*sin(2*PI*120*t)+0.2*sin(2*PI*720*t)+0.15*sin(2*PI*1200*t):s=48000:c=mono";
    let opus = ["-c:a", "libopus", "-b:a", "32k", "-application", "voip", "-frame_duration", "20"];
    let length = seconds.to_string();
    let mut make = vec!["-f", "lavfi", "-i", source, "-t", &length];
    make.extend(opus);
    make.push(&voice_text);
    run_ffmpeg(&make)?;
    let packets = ogg_opus_packets(&voice)?;
    let measured = runtime.block_on(ducking(&maskers, &packets, FLOOR_VOICES))?;
    let mut peer = vec!["-benchmark", "-threads", "1", "-i", &voice_text, "-af", "volume=0.2", "-ac", "1"];
    peer.extend(opus);
    peer.extend(["-f", "null", "-"]);
    let peer_cores = ffmpeg_cpu_seconds(&run_ffmpeg(&peer)?)? / (packets.len() as f64 * 0.020);
    let per_voice = measured.cores / FLOOR_VOICES as f64;
    println!(
        "ducking: {} of {} packets back; latency p50 {:.2} ms, p99 {:.2} ms; {:.4} cores per floor voice (ffmpeg {:.4})",
        measured.frames_out,
        packets.len() * FLOOR_VOICES,
        measured.p50_ms,
        measured.p99_ms,
        per_voice,
        peer_cores
    );
    let ratio = per_voice / peer_cores;
    table.row([
        "CPU per ducked floor voice (Opus → ×0.2 → Opus)".to_owned(),
        format!("{per_voice:.4} cores"),
        format!("{peer_cores:.4} cores"),
        format!("{ratio:.2}x"),
    ]);
    for channels in [1, 2, 4] {
        table.row([
            format!("audio mixing per channel, {FLOOR_VOICES} floor voices, {channels} channel(s)"),
            format!("{:.4} cores", measured.cores / channels as f64),
            format!("{:.4} cores", peer_cores * FLOOR_VOICES as f64 / channels as f64),
            format!("{ratio:.2}x"),
        ]);
    }
    table.row([
        "latency added by ducking, p50 / p99".to_owned(),
        format!("{:.1} / {:.1} ms", measured.p50_ms, measured.p99_ms),
        "goal: under 150 ms".to_owned(),
        format!("{:.2}x of the goal (p99)", measured.p99_ms / 150.0),
    ]);
    headlines.push(Headline {
        measurement: format!("audio mixing per channel ({FLOOR_VOICES} floor voices, 1 channel)"),
        figure: format!("{:.4} cores", measured.cores),
        against: format!("ffmpeg CLI {:.4} cores", peer_cores * FLOOR_VOICES as f64),
        ratio: format!("{ratio:.2}x"),
    });
    table.print();
    add_to_summary("masking", &headlines)?;
    Ok(())
}
