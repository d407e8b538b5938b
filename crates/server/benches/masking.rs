//! What a protected witness's masked video costs through the gateway's own pipeline: the `custodia mask video`
//! child process the room starts (`custodia_server::masking::Maskers`), fed over its pipe at the camera's pace.
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
use custodia_recorder::engine::MediaKind;
use custodia_recorder::masking::{MaskerFactory, ToMasker};
use custodia_server::masking::Maskers;

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

/// Feeds every frame to a fresh `custodia mask video` child at the camera's pace and times what comes back.
async fn through_the_pipeline(maskers: &Maskers, frames: &[Bytes]) -> Result<Measured, BoxError> {
    let cpu_before = children_cpu_seconds()?;
    let pipe = maskers.start(MediaKind::Video, custodia_recorder::masking::Treatment { mask: true, duck: false })?;
    let (input, mut output) = (pipe.input, pipe.output);
    let mut handed: HashMap<i64, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    let start = tokio::time::Instant::now();
    let mut next = 0usize;
    let mut ticker = tokio::time::interval_at(start, FRAME_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        tokio::select! {
            _ = ticker.tick(), if next < frames.len() => {
                let pts_ms = (next as f64 * 1000.0 / 30.0) as i64;
                handed.insert(pts_ms, Instant::now());
                // The room drops a frame the pipe cannot take; here, waiting would hide a pipeline that falls
                // behind, so a full pipe is a failure of the measurement.
                input.try_send(ToMasker::Frame { pts_ms, data: frames[next].clone() }).map_err(|_| "the pipe was full")?;
                next += 1;
            }
            masked = output.recv() => {
                let Some(masked) = masked else { break };
                if let Some(at) = handed.remove(&masked.pts_ms) {
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                }
                if next == frames.len() && handed.is_empty() {
                    break;
                }
            }
            () = tokio::time::sleep(Duration::from_secs(5)), if next == frames.len() => break,
        }
    }
    let frames_out = latencies.len();
    drop(input);
    // The child ends with its input; the pipe's reader reaps it once its output ends.
    while output.recv().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cores = (children_cpu_seconds()? - cpu_before) / (frames.len() as f64 / 30.0);
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    Ok(Measured { p50_ms: at(0.5), p99_ms: at(0.99), cores, frames_out })
}

fn main() -> Result<(), BoxError> {
    let seconds: u64 = env_or("CUSTODIA_BENCH_SECONDS", 10)?;
    let dir = tempfile::tempdir()?;
    let maskers = Maskers::new(PathBuf::from(env!("CARGO_BIN_EXE_custodia")));
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
    table.print();
    add_to_summary("masking", &headlines)?;
    Ok(())
}
