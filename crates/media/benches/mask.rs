//! What masking a witness's media costs on this machine, beside FFmpeg's own command-line tool doing the same work
//! in the same run.
//!
//! `cargo bench -p custodia-media --bench mask` needs the `ffmpeg` command (it makes the test streams and is the
//! peer). It measures:
//!
//! - **Video**, at 640×360 and 1280×720, 30 frames/s, about 10 s of `testsrc2` encoded as VP8 by `ffmpeg`:
//!   `VideoMasker` over every frame, in this process, as CPU seconds per second of video (cores per masked feed,
//!   from the process's CPU time); beside it `ffmpeg -benchmark` (user + system time) decoding the same file,
//!   pixelating with `scale=iw/N:ih/N,scale=iw*N:ih*N:flags=neighbor` (N the mosaic block) and encoding with
//!   libvpx in real-time mode at the same speed setting and bit rate, one thread each, like the masker.
//! - **Latency** per video frame at 360p: the time from `push` to the masked frame, p50 and p99 (goal under
//!   150 ms).
//! - **Voice**: `VoiceMasker` (Opus decode, McAdams warp and pitch change, libopus encode) over 10 s of 20 ms Opus
//!   packets, as cores per feed, beside `ffmpeg` transcoding the same Opus to Opus (no transform): what the transform
//!   adds.
//!
//! Tuning, by environment variable: `CUSTODIA_BENCH_SECONDS` (length of each stream, 10).
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use custodia_benchkit::{
    BoxError, Headline, Table, add_to_summary, env_or, ffmpeg_cpu_seconds, process_cpu_seconds, run_ffmpeg,
};
use custodia_media::mask::mosaic_block;
use custodia_media::{VideoMasker, VoiceMasker};
use ffmpeg_next as ffmpeg;

/// Every packet of the file's first stream, as FFmpeg's demuxer gives it.
fn read_packets(path: &Path) -> Result<Vec<Vec<u8>>, BoxError> {
    let mut input = ffmpeg::format::input(path)?;
    let mut packets = Vec::new();
    for (stream, packet) in input.packets() {
        if stream.index() == 0
            && let Some(data) = packet.data()
        {
            packets.push(data.to_vec());
        }
    }
    Ok(packets)
}

struct VideoFigures {
    masker_cores: f64,
    ffmpeg_cores: f64,
    latencies_ms: Vec<f64>,
}

fn bench_video(directory: &Path, width: u32, height: u32, seconds: u32) -> Result<VideoFigures, BoxError> {
    let path = directory.join(format!("testsrc2-{width}x{height}.ivf"));
    let bit_rate = format!("{}k", 400 * width * height / (640 * 360));
    let frames = (30 * seconds).to_string();
    let source = format!("testsrc2=size={width}x{height}:rate=30");
    let path_text = path.to_str().ok_or("path")?;
    run_ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &source,
        "-frames:v",
        &frames,
        "-c:v",
        "libvpx",
        "-b:v",
        &bit_rate,
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-f",
        "ivf",
        path_text,
    ])?;
    let packets = read_packets(&path)?;

    let mut masker = VideoMasker::new()?;
    let mut latencies_ms = Vec::with_capacity(packets.len());
    let cpu_before = process_cpu_seconds()?;
    for packet in &packets {
        let started = Instant::now();
        let masked = masker.push(packet)?;
        latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(masked);
    }
    let masker_cpu = process_cpu_seconds()? - cpu_before;
    let duration = packets.len() as f64 / 30.0;

    let block = mosaic_block(width);
    let filter = format!("scale=iw/{block}:ih/{block},scale=iw*{block}:ih*{block}:flags=neighbor");
    let stderr = run_ffmpeg(&[
        "-benchmark",
        "-threads",
        "1",
        "-i",
        path_text,
        "-filter_threads",
        "1",
        "-vf",
        &filter,
        "-c:v",
        "libvpx",
        "-threads",
        "1",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-lag-in-frames",
        "0",
        "-b:v",
        &bit_rate,
        "-f",
        "null",
        "-",
    ])?;
    let ffmpeg_cpu = ffmpeg_cpu_seconds(&stderr)?;
    Ok(VideoFigures { masker_cores: masker_cpu / duration, ffmpeg_cores: ffmpeg_cpu / duration, latencies_ms })
}

fn bench_voice(directory: &Path, seconds: u32) -> Result<(f64, f64), BoxError> {
    let path = directory.join("voice.ogg");
    let path_text = path.to_str().ok_or("path")?;
    // A vowel-like sound: a 120 Hz fundamental with harmonics weighted towards 700 and 1,220 Hz.
    let source = "aevalsrc=0.3*sin(2*PI*120*t)+0.2*sin(2*PI*720*t)+0.15*sin(2*PI*1200*t)+0.05*sin(2*PI*2640*t)\
                  :s=48000:c=mono";
    run_ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        source,
        "-t",
        &seconds.to_string(),
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        "-application",
        "voip",
        "-frame_duration",
        "20",
        path_text,
    ])?;
    let packets = read_packets(&path)?;
    let mut masker = VoiceMasker::new(0x5eed)?;
    let cpu_before = process_cpu_seconds()?;
    let mut out = 0;
    for packet in &packets {
        out += masker.push(packet)?.len();
    }
    let masker_cpu = process_cpu_seconds()? - cpu_before;
    if out + 2 != packets.len() {
        return Err(format!("{} packets in gave {out} out", packets.len()).into());
    }
    let duration = packets.len() as f64 * 0.020;
    let stderr = run_ffmpeg(&[
        "-benchmark",
        "-threads",
        "1",
        "-i",
        path_text,
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        "-application",
        "voip",
        "-frame_duration",
        "20",
        "-ac",
        "1",
        "-f",
        "null",
        "-",
    ])?;
    Ok((masker_cpu / duration, ffmpeg_cpu_seconds(&stderr)? / duration))
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn main() -> Result<(), BoxError> {
    ffmpeg::init()?;
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet);
    let seconds: u32 = env_or("CUSTODIA_BENCH_SECONDS", 10)?;
    let directory = tempfile::tempdir()?;
    let directory: PathBuf = directory.path().to_owned();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("mask benchmark: {seconds} s streams, {cores} cores on this machine");

    let mut table = Table::new(["measurement", "custodia-media", "ffmpeg CLI (same run)", "ratio"]);
    let mut headlines = Vec::new();
    let mut latency_360p = Vec::new();
    for (width, height) in [(640, 360), (1280, 720)] {
        let figures = bench_video(&directory, width, height, seconds)?;
        let ratio = figures.masker_cores / figures.ffmpeg_cores;
        let name = format!("video mask {width}×{height} 30 fps, cores per feed");
        table.row([
            name.clone(),
            format!("{:.3}", figures.masker_cores),
            format!("{:.3} (decode, scale mosaic, libvpx)", figures.ffmpeg_cores),
            format!("{ratio:.2}×"),
        ]);
        headlines.push(Headline {
            measurement: name,
            figure: format!("{:.3} cores", figures.masker_cores),
            against: format!("ffmpeg {:.3} cores", figures.ffmpeg_cores),
            ratio: format!("{ratio:.2}×"),
        });
        if width == 640 {
            latency_360p = figures.latencies_ms;
        }
    }
    latency_360p.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latency_360p, 0.5), percentile(&latency_360p, 0.99));
    table.row([
        "video mask latency per frame 640×360, p50 / p99".to_owned(),
        format!("{p50:.2} ms / {p99:.2} ms"),
        "goal: under 150 ms".to_owned(),
        format!("{:.3}× of goal (p99)", p99 / 150.0),
    ]);
    headlines.push(Headline {
        measurement: "video mask latency 640×360 p99".to_owned(),
        figure: format!("{p99:.2} ms"),
        against: "goal 150 ms".to_owned(),
        ratio: format!("{:.3}×", p99 / 150.0),
    });

    let (voice_cores, transcode_cores) = bench_voice(&directory, seconds)?;
    let ratio = voice_cores / transcode_cores;
    table.row([
        "voice mask (Opus → McAdams + pitch → Opus), cores per feed".to_owned(),
        format!("{voice_cores:.4}"),
        format!("{transcode_cores:.4} (plain Opus transcode)"),
        format!("{ratio:.2}×"),
    ]);
    headlines.push(Headline {
        measurement: "voice mask, cores per feed".to_owned(),
        figure: format!("{voice_cores:.4} cores"),
        against: format!("ffmpeg Opus transcode {transcode_cores:.4} cores"),
        ratio: format!("{ratio:.2}×"),
    });
    table.print();
    add_to_summary("mask", &headlines)?;
    Ok(())
}
