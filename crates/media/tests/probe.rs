//! Probes real media made by the ffmpeg CLI, and things that are not media.
//!
//! The samples are made fresh by `ffmpeg` (Debian's package, installed by `scripts/setup-system.sh test`), and
//! what the probe says is checked both against what was asked of the encoder and against `ffprobe`'s own report.

use std::path::{Path, PathBuf};
use std::process::Command;

use custodia_media::{MediaInfo, MediaProbe, StreamInfo, StreamKind, probe};
use proptest::prelude::*;
use serde_json::Value;

const SETUP: &str = "run `scripts/setup-system.sh test` to install it";

/// Runs a Debian FFmpeg tool. A missing tool fails the test: these tests must never pass by skipping.
fn tool(name: &str, args: &[&str]) -> Vec<u8> {
    let out =
        Command::new(name).args(args).output().unwrap_or_else(|e| panic!("cannot run the `{name}` CLI ({e}); {SETUP}"));
    assert!(out.status.success(), "{name} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Makes `name` in `dir` with `ffmpeg -y <args> <file>`.
fn make(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut all = vec!["-hide_banner", "-loglevel", "error", "-nostdin", "-y"];
    all.extend_from_slice(args);
    all.push(path.to_str().unwrap());
    tool("ffmpeg", &all);
    path
}

const TESTSRC: [&str; 4] = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"];
const SINE: [&str; 4] = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"];

/// Two seconds of VP8 and Opus in WebM.
fn webm(dir: &Path) -> PathBuf {
    let mut args = TESTSRC.to_vec();
    args.extend(SINE);
    args.extend([
        "-t",
        "2",
        "-c:v",
        "libvpx",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-b:v",
        "200k",
        "-c:a",
        "libopus",
        "-metadata",
        "creation_time=2024-05-01T10:00:00Z",
    ]);
    make(dir, "sample.webm", &args)
}

fn probed(path: &Path) -> MediaInfo {
    match probe(path) {
        MediaProbe::Probed(info) => info,
        MediaProbe::Unprobed { reason } => panic!("{} was not probed: {reason}", path.display()),
    }
}

fn unprobed_reason(path: &Path) -> String {
    match probe(path) {
        MediaProbe::Unprobed { reason } => {
            assert!(!reason.is_empty());
            reason
        }
        MediaProbe::Probed(info) => panic!("{} should not probe, but gave {info:?}", path.display()),
    }
}

fn assert_near_ms(actual: Option<u64>, expected: u64) {
    let actual = actual.expect("a duration");
    assert!(actual.abs_diff(expected) <= 100, "duration {actual} ms is not within 100 ms of {expected} ms");
}

/// Checks a probe against `ffprobe`, which reads the file with the same libraries but its own code.
fn assert_agrees_with_ffprobe(path: &Path, info: &MediaInfo) {
    let json =
        tool("ffprobe", &["-v", "error", "-show_format", "-show_streams", "-of", "json", path.to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&json).unwrap();
    let format = &report["format"];
    assert_eq!(format["format_name"], info.format.as_str());
    let duration_s: f64 = format["duration"].as_str().unwrap().parse().unwrap();
    assert_near_ms(info.duration_ms, (duration_s * 1000.0).round() as u64);
    let streams = report["streams"].as_array().unwrap();
    assert_eq!(streams.len(), info.streams.len());
    for (theirs, ours) in streams.iter().zip(&info.streams) {
        assert_eq!(theirs["index"], ours.index);
        assert_eq!(theirs["codec_name"], ours.codec.as_str());
        assert_eq!(theirs["codec_type"], serde_json::to_value(ours.kind).unwrap());
        if ours.kind == StreamKind::Video {
            assert_eq!(theirs["width"], ours.width.unwrap());
            assert_eq!(theirs["height"], ours.height.unwrap());
            assert_eq!(theirs["avg_frame_rate"], ours.frame_rate.as_deref().unwrap());
        }
        if ours.kind == StreamKind::Audio {
            assert_eq!(theirs["sample_rate"], ours.sample_rate.unwrap().to_string());
            assert_eq!(theirs["channels"], ours.channels.unwrap());
        }
    }
}

/// The serialised probe is RFC 8785 canonical JSON with no floats and reads back to the same value.
fn assert_canonical_round_trip(probe: &MediaProbe) {
    let bytes = custodia_core::to_canonical_vec(probe).unwrap();
    let back: MediaProbe = custodia_core::from_canonical_slice(&bytes).unwrap();
    assert_eq!(&back, probe);
    fn no_floats(v: &Value) {
        match v {
            Value::Number(n) => assert!(n.is_u64(), "{n} is not an unsigned integer"),
            Value::Array(a) => a.iter().for_each(no_floats),
            Value::Object(o) => o.values().for_each(no_floats),
            _ => {}
        }
    }
    no_floats(&serde_json::from_slice(&bytes).unwrap());
}

#[test]
fn webm_vp8_opus() {
    let dir = tempfile::tempdir().unwrap();
    let path = webm(dir.path());
    let info = probed(&path);
    assert_eq!(info.format, "matroska,webm");
    assert_near_ms(info.duration_ms, 2000);
    assert!(info.bit_rate.is_some_and(|b| b > 0));
    assert_eq!(info.creation_time.as_deref(), Some("2024-05-01T10:00:00.000000Z"));
    assert_eq!(info.streams.len(), 2);
    let video = &info.streams[0];
    assert_eq!((video.index, video.kind, video.codec.as_str()), (0, StreamKind::Video, "vp8"));
    assert_eq!((video.width, video.height), (Some(320), Some(240)));
    assert_eq!(video.frame_rate.as_deref(), Some("25/1"));
    assert_eq!((video.sample_rate, video.channels), (None, None));
    let audio = &info.streams[1];
    assert_eq!((audio.index, audio.kind, audio.codec.as_str()), (1, StreamKind::Audio, "opus"));
    assert_eq!((audio.sample_rate, audio.channels), (Some(48000), Some(1)));
    assert_eq!((audio.width, audio.height, audio.frame_rate.as_deref()), (None, None, None));
    assert_agrees_with_ffprobe(&path, &info);
    assert_canonical_round_trip(&MediaProbe::Probed(info));
}

#[test]
fn mp4_h264_aac() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = TESTSRC.to_vec();
    args.extend(SINE);
    args.extend([
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-ac",
        "2",
        "-metadata",
        "creation_time=2024-05-01T10:00:00Z",
    ]);
    let path = make(dir.path(), "sample.mp4", &args);
    let info = probed(&path);
    assert_eq!(info.format, "mov,mp4,m4a,3gp,3g2,mj2");
    assert_near_ms(info.duration_ms, 2000);
    assert_eq!(info.creation_time.as_deref(), Some("2024-05-01T10:00:00.000000Z"));
    let kinds: Vec<_> = info.streams.iter().map(|s| (s.kind, s.codec.as_str())).collect();
    assert_eq!(kinds, [(StreamKind::Video, "h264"), (StreamKind::Audio, "aac")]);
    assert_eq!((info.streams[0].width, info.streams[0].height), (Some(320), Some(240)));
    assert_eq!(info.streams[0].frame_rate.as_deref(), Some("25/1"));
    assert_near_ms(info.streams[0].duration_ms, 2000);
    assert_eq!((info.streams[1].sample_rate, info.streams[1].channels), (Some(48000), Some(2)));
    assert_near_ms(info.streams[1].duration_ms, 2000);
    assert_agrees_with_ffprobe(&path, &info);
    assert_canonical_round_trip(&MediaProbe::Probed(info));
}

#[test]
fn wav_pcm() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(
        dir.path(),
        "sample.wav",
        &["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "1.5", "-ac", "2", "-c:a", "pcm_s16le"],
    );
    let info = probed(&path);
    assert_eq!(info.format, "wav");
    assert_near_ms(info.duration_ms, 1500);
    // FFmpeg works the overall bit rate out from the file's size, header included: a little over the PCM rate.
    let pcm = 44100 * 2 * 16;
    assert!(info.bit_rate.is_some_and(|b| (pcm..pcm + pcm / 100).contains(&b)), "{:?}", info.bit_rate);
    assert_eq!(info.creation_time, None);
    assert_eq!(
        info.streams,
        [StreamInfo {
            index: 0,
            kind: StreamKind::Audio,
            codec: "pcm_s16le".to_owned(),
            width: None,
            height: None,
            frame_rate: None,
            sample_rate: Some(44100),
            channels: Some(2),
            duration_ms: Some(1500),
        }]
    );
    assert_agrees_with_ffprobe(&path, &info);
    assert_canonical_round_trip(&MediaProbe::Probed(info));
}

/// The path never reaches FFmpeg (which needs UTF-8 and reads `name:` as a protocol), so any file name works.
#[cfg(unix)]
#[test]
fn file_names_do_not_matter() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let wav = make(dir.path(), "sample.wav", &["-f", "lavfi", "-i", "sine", "-t", "0.5"]);
    for name in [&b"not-utf8-\xff\xfe"[..], b"concat:evidence", b"http:x", b"no-extension"] {
        let renamed = dir.path().join(std::ffi::OsStr::from_bytes(name));
        std::fs::copy(&wav, &renamed).unwrap();
        assert_eq!(probed(&renamed).format, "wav", "{}", renamed.display());
    }
}

/// A list that names another file must not make FFmpeg open it. Through our custom I/O the file has no URL, so
/// FFmpeg resolves a relative name against the process's working directory: that is where the target is put, in a
/// folder that is removed again when the test ends. Without the empty protocol whitelist the `ffconcat` list below
/// is followed, and the probe reports the WAV it names.
#[test]
fn references_to_other_files_are_not_followed() {
    let target = tempfile::Builder::new().prefix("probe-target-").tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let wav = make(target.path(), "segment.wav", &["-f", "lavfi", "-i", "sine", "-t", "0.5"]);
    let relative = wav.strip_prefix(std::env::current_dir().unwrap()).unwrap().to_str().unwrap().to_owned();
    let absolute = wav.to_str().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let lists = [
        ("ffconcat-relative", format!("ffconcat version 1.0\nfile '{relative}'\n")),
        ("ffconcat-absolute", format!("ffconcat version 1.0\nfile '{absolute}'\n")),
        ("hls", format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.5,\n{absolute}\n#EXT-X-ENDLIST\n")),
        ("hls-file-url", format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.5,\nfile:{absolute}\n#EXT-X-ENDLIST\n")),
    ];
    for (name, text) in lists {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        match probe(&path) {
            MediaProbe::Unprobed { .. } => {}
            MediaProbe::Probed(info) => panic!("{name} was followed to the file it names: {info:?}"),
        }
    }
}

#[test]
fn garbage_is_unprobed() {
    let dir = tempfile::tempdir().unwrap();
    // Deterministic noise (xorshift), so a failure reproduces.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let cases: [(&str, &[u8]); 3] = [
        ("noise", &noise),
        ("empty", b""),
        ("text", b"Statement of the witness, taken on 1 May 2024.\nI saw nothing.\n"),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let reason = unprobed_reason(&path);
        assert!(reason.starts_with("not a media file FFmpeg can read: "), "{name}: {reason}");
        assert_canonical_round_trip(&probe(&path));
    }
}

/// A probe reports what a container claims. A WebM cut short after its header (tracks, declared duration) still
/// probes, as it does for ffprobe; only the overall bit rate, worked out from the size, gives the cut away. Cut
/// inside the header, it is unprobed.
#[test]
fn truncated_webm() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(webm(dir.path())).unwrap();
    let path = dir.path().join("truncated.webm");

    std::fs::write(&path, &whole[..1000]).unwrap();
    let info = probed(&path);
    assert_eq!(info.format, "matroska,webm");
    assert_near_ms(info.duration_ms, 2000);
    assert!(info.bit_rate.is_some_and(|b| b < 10_000), "{:?}", info.bit_rate);
    let codecs: Vec<_> = info.streams.iter().map(|s| s.codec.as_str()).collect();
    assert_eq!(codecs, ["vp8", "opus"]);
    assert_agrees_with_ffprobe(&path, &info);

    for cut in [16, 100] {
        std::fs::write(&path, &whole[..cut]).unwrap();
        let reason = unprobed_reason(&path);
        assert!(reason.starts_with("not a media file FFmpeg can read: "), "{cut} bytes: {reason}");
    }
}

#[test]
fn what_cannot_be_opened_is_unprobed() {
    let dir = tempfile::tempdir().unwrap();
    let missing = unprobed_reason(&dir.path().join("missing"));
    assert!(missing.starts_with("could not open file: "), "{missing}");
    assert_eq!(unprobed_reason(dir.path()), "not a regular file");
}

/// The documented serialised form, byte for byte.
#[test]
fn serialised_form_is_stable() {
    let probed = MediaProbe::Probed(MediaInfo {
        format: "matroska,webm".to_owned(),
        duration_ms: Some(2000),
        bit_rate: Some(233_600),
        creation_time: Some("2024-05-01T10:00:00.000000Z".to_owned()),
        streams: vec![
            StreamInfo {
                index: 0,
                kind: StreamKind::Video,
                codec: "vp8".to_owned(),
                width: Some(320),
                height: Some(240),
                frame_rate: Some("25/1".to_owned()),
                sample_rate: None,
                channels: None,
                duration_ms: None,
            },
            StreamInfo {
                index: 1,
                kind: StreamKind::Audio,
                codec: "opus".to_owned(),
                width: None,
                height: None,
                frame_rate: None,
                sample_rate: Some(48000),
                channels: Some(1),
                duration_ms: None,
            },
        ],
    });
    assert_eq!(
        String::from_utf8(custodia_core::to_canonical_vec(&probed).unwrap()).unwrap(),
        concat!(
            r#"{"bit_rate":233600,"creation_time":"2024-05-01T10:00:00.000000Z","duration_ms":2000,"#,
            r#""format":"matroska,webm","outcome":"probed","streams":["#,
            r#"{"codec":"vp8","frame_rate":"25/1","height":240,"index":0,"kind":"video","width":320},"#,
            r#"{"channels":1,"codec":"opus","index":1,"kind":"audio","sample_rate":48000}]}"#
        )
    );
    let unprobed = MediaProbe::Unprobed { reason: "not a regular file".to_owned() };
    assert_eq!(
        custodia_core::to_canonical_vec(&unprobed).unwrap(),
        br#"{"outcome":"unprobed","reason":"not a regular file"}"#
    );
    assert_canonical_round_trip(&probed);
    assert_canonical_round_trip(&unprobed);
}

#[test]
fn unknown_fields_are_refused() {
    for json in [
        r#"{"outcome":"unprobed","reason":"x","extra":1}"#,
        r#"{"outcome":"probed","format":"wav","streams":[],"extra":1}"#,
        r#"{"outcome":"probed","format":"wav","streams":[{"index":0,"kind":"audio","codec":"aac","extra":1}]}"#,
        r#"{"outcome":"maybe","reason":"x"}"#,
    ] {
        assert!(serde_json::from_str::<MediaProbe>(json).is_err(), "{json} was accepted");
    }
    let ok = r#"{"outcome":"probed","format":"wav","streams":[{"index":0,"kind":"audio","codec":"aac"}]}"#;
    serde_json::from_str::<MediaProbe>(ok).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any bytes at all: the probe returns, and what it returns serialises canonically.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..8192)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("random");
        std::fs::write(&path, &bytes).unwrap();
        let result = probe(&path);
        if let MediaProbe::Unprobed { reason } = &result {
            prop_assert!(!reason.is_empty());
        }
        assert_canonical_round_trip(&result);
    }

    /// Real media with its tail cut off, or a run of bytes overwritten: the probe returns either way.
    #[test]
    fn damaged_media_never_panics(cut in 0usize..40_000, at in 0usize..40_000, junk in proptest::collection::vec(any::<u8>(), 1..64)) {
        let whole = damaged_sample();
        let mut bytes = whole[..cut.min(whole.len())].to_vec();
        let at = at.min(bytes.len());
        let end = (at + junk.len()).min(bytes.len());
        bytes[at..end].copy_from_slice(&junk[..end - at]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged");
        std::fs::write(&path, &bytes).unwrap();
        assert_canonical_round_trip(&probe(&path));
    }
}

/// One WebM made once for every case of `damaged_media_never_panics`.
fn damaged_sample() -> &'static [u8] {
    static SAMPLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SAMPLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::read(webm(dir.path())).unwrap()
    })
}

/// The `creation_time` tag is the file's own text: kept when short, made valid UTF-8, left out when too long.
/// FFmpeg's metadata format carries tags and no streams, which makes it a handy way to write one.
#[test]
fn creation_time_tag_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tags");
    let cases: [(&[u8], Option<&str>); 3] = [
        (b"2024-05-01 10:00:00", Some("2024-05-01 10:00:00")),
        (b"2024-05-01 \xff\xfe", Some("2024-05-01 \u{fffd}\u{fffd}")),
        (&[b'9'; 65], None),
    ];
    for (tag, expected) in cases {
        std::fs::write(&path, [&b";FFMETADATA1\ncreation_time="[..], tag, b"\n"].concat()).unwrap();
        let info = probed(&path);
        assert_eq!(info.format, "ffmetadata");
        assert_eq!(info.creation_time.as_deref(), expected);
        assert_canonical_round_trip(&MediaProbe::Probed(info));
    }
}

/// Probes share nothing, so blocking threads may run them side by side.
#[test]
fn probes_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let path = webm(dir.path());
    let expected = probe(&path);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..4).map(|_| scope.spawn(|| (0..5).map(|_| probe(&path)).collect::<Vec<_>>())).collect();
        for handle in handles {
            for result in handle.join().unwrap() {
                assert_eq!(result, expected);
            }
        }
    });
}

/// A file may declare at most `MAX_STREAMS` streams; one with more is not probed.
#[test]
fn stream_count_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let limit = custodia_media::MAX_STREAMS as usize;
    for count in [limit, limit + 1] {
        let mut args = vec!["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "0.1", "-c:a", "pcm_s16le"];
        args.extend(std::iter::repeat_n(["-map", "0:a"], count).flatten());
        let path = make(dir.path(), &format!("{count}.mkv"), &args);
        match probe(&path) {
            MediaProbe::Probed(info) => assert_eq!((count, info.streams.len()), (limit, limit)),
            MediaProbe::Unprobed { reason } => assert_eq!(count, limit + 1, "{reason}"),
        }
    }
}
