//! Masking a protected witness's media, and ducking the floor under a simultaneous interpretation, in child
//! processes (the room's [`MaskerFactory`]).
//!
//! A protective order sends everyone it does not privilege a masked picture (a coarse full-frame mosaic) and an
//! altered voice (McAdams-coefficient LPC warping and a pitch change, both drawn per hearing), made by
//! `custodia_media::mask` from what the witness sends.
//! A listener of a simultaneous interpretation channel hears each floor voice ducked to [`DUCKED_GAIN`] of its
//! level (masked as well, for a protected witness whose order does not privilege the listener).
//! FFmpeg decodes what a peer sent, so each pipeline runs as `custodia mask <treatment> <address space bytes>` (a
//! hidden subcommand, like `custodia probe`; the treatment is `video`, `voice`, `ducked-voice` (altered and ducked)
//! or `ducked` (ducked only)): a child with a cleared environment, under the same limits as the
//! probe (no new privileges, no core files, no file it may write, few open files, an address space, death with its
//! parent) but no CPU limit, since it runs as long as the hearing. A parser bug a hostile peer reaches, a crash, a
//! hang or a kill takes only that pipeline down: the room then sends its receivers nothing until a new one runs,
//! never the original (`custodia_recorder::sfu`).
//!
//! The voice transform's coefficient is drawn per hearing from a random seed, so that one hearing's voice cannot
//! be undone with another's. The seed goes to the child on its standard input, never on its command line (which
//! any local user may read).
//!
//! # The pipe
//!
//! The parent writes the seed (8 bytes, big-endian), then messages; the child answers with messages. A message is
//! a tag byte, the body's length (4 bytes, big-endian, at most [`MAX_MESSAGE`]) and the body:
//!
//! | tag | direction | body |
//! |---|---|---|
//! | 1 | to the child | a frame: its `pts_ms` (8 bytes, big-endian, signed), then a VP8 frame or one Opus packet |
//! | 2 | to the child | none: make the next video frame a keyframe |
//! | 1 | from the child | a masked frame: the `pts_ms` it was made from, a keyframe flag byte, then the frame |

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use custodia_hearing::DUCKED_GAIN;
use custodia_recorder::engine::MediaKind;
use custodia_recorder::masking::{MaskPipe, MaskedFrame, MaskerFactory, ToMasker, Treatment};
use custodia_service::error::Chain;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "mask";

/// The largest message either side accepts: far above any VP8 frame up to 1080p or any Opus packet.
pub const MAX_MESSAGE: usize = 4 << 20;

/// The address space a masking child may take: FFmpeg's decoder and encoder for one 1080p stream, with room.
pub const ADDRESS_SPACE_BYTES: u64 = 2 << 30;

/// Messages waiting to go into a child, or to come out of one; the room drops what does not fit.
const PIPE_QUEUE: usize = 4;

const TAG_FRAME: u8 = 1;
const TAG_KEYFRAME: u8 = 2;

/// Starts masking pipelines in child processes of the `custodia` binary.
pub struct Maskers {
    program: PathBuf,
    /// The seed of this hearing's voice transform (kept in the hearing's private journal, so the voice survives a
    /// restart).
    voice_seed: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Maskers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed would help undo the voice transform: never shown.
        f.debug_struct("Maskers").field("program", &self.program).finish_non_exhaustive()
    }
}

impl Maskers {
    /// Pipelines for one hearing, with a fresh random voice; `program` is the `custodia` binary.
    pub fn new(program: PathBuf) -> Self {
        let voice_seed = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
        Self { program, voice_seed: std::sync::atomic::AtomicU64::new(voice_seed) }
    }
}

impl Maskers {
    /// The `custodia` binary the children run.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The seed of this hearing's voice transform, for a masked copy of its recordings to speak with the voice the
    /// hearing heard.
    pub(crate) fn voice_seed(&self) -> u64 {
        self.voice_seed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The hearing's voice as its journal kept it, when it is restored.
    pub(crate) fn set_voice_seed(&self, seed: u64) {
        self.voice_seed.store(seed, std::sync::atomic::Ordering::Relaxed);
    }
}

impl MaskerFactory for Maskers {
    fn start(&self, kind: MediaKind, treatment: Treatment) -> std::io::Result<MaskPipe> {
        let Some(pipeline) = Pipeline::of(kind, treatment) else {
            return Err(std::io::Error::other(format!("no pipeline makes {treatment:?} of {kind:?}")));
        };
        let place = ChildPlace::take(pipeline.pool())?;
        let mut child = tokio::process::Command::new(&self.program)
            .arg(SUBCOMMAND)
            .arg(pipeline.name())
            .arg(ADDRESS_SPACE_BYTES.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the masking child has no pipes"));
        };
        let (input, mut to_child) = mpsc::channel::<ToMasker>(PIPE_QUEUE);
        let (from_child, output) = mpsc::channel::<MaskedFrame>(PIPE_QUEUE);
        let seed = self.voice_seed();
        tokio::spawn(async move {
            let mut message = Vec::new();
            if stdin.write_all(&seed.to_be_bytes()).await.is_err() {
                return;
            }
            while let Some(next) = to_child.recv().await {
                message.clear();
                match next {
                    ToMasker::Frame { pts_ms, data } => {
                        if data.len() + 8 > MAX_MESSAGE {
                            continue;
                        }
                        put_header(&mut message, TAG_FRAME, data.len() + 8);
                        message.extend_from_slice(&pts_ms.to_be_bytes());
                        message.extend_from_slice(&data);
                    }
                    ToMasker::Keyframe => put_header(&mut message, TAG_KEYFRAME, 0),
                }
                if stdin.write_all(&message).await.is_err() {
                    return;
                }
            }
            // The room let go of the pipeline: the child sees the end of its input and exits.
        });
        tokio::spawn(async move {
            let _place = place;
            loop {
                // The room letting go ends this at once: a hung child (one that writes nothing, never the end of its
                // output either) is killed all the same.
                let read = tokio::select! {
                    read = read_masked(&mut stdout) => read,
                    () = from_child.closed() => break,
                };
                let masked = match read {
                    Ok(Some(masked)) => masked,
                    Ok(None) | Err(_) => break,
                };
                if from_child.send(masked).await.is_err() {
                    break;
                }
            }
            // The child ended or said something wrong, or the room let go: it goes, whatever state it is in.
            let _ = child.kill().await;
        });
        Ok(MaskPipe { input, output })
    }
}

/// Masking children this process runs at most, over all its hearings: each may take [`ADDRESS_SPACE_BYTES`] and a
/// core's share. Past it a pipeline does not start, and its receivers get nothing (fail closed) until one ends.
pub const MAX_MASKING_CHILDREN: usize = 32;

/// Children that only duck a voice, at most, over all hearings: a few percent of a core each (one per floor voice
/// of a hearing with a simultaneous channel). Counted apart from the masking children, so that many interpreted
/// hearings cannot keep a protected witness's masked feed from starting. Past it a floor voice does not reach the
/// channels' listeners (they still hear the interpreter).
pub const MAX_DUCKING_CHILDREN: usize = 128;

/// Running children, by pool: masking (anything masked), then ducking only.
static RUNNING_CHILDREN: [std::sync::atomic::AtomicUsize; 2] =
    [std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicUsize::new(0)];

/// What a child does: the room's treatments that a pipeline makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pipeline {
    MaskedVideo,
    AlteredVoice,
    AlteredDuckedVoice,
    DuckedVoice,
}

impl Pipeline {
    const ALL: [Pipeline; 4] = [Self::MaskedVideo, Self::AlteredVoice, Self::AlteredDuckedVoice, Self::DuckedVoice];

    /// The pipeline that makes `treatment` of a track of `kind`; `None` for the original, and for a ducked video.
    fn of(kind: MediaKind, treatment: Treatment) -> Option<Self> {
        match (kind, treatment.mask, treatment.duck) {
            (MediaKind::Video, true, false) => Some(Self::MaskedVideo),
            (MediaKind::Audio, true, false) => Some(Self::AlteredVoice),
            (MediaKind::Audio, true, true) => Some(Self::AlteredDuckedVoice),
            (MediaKind::Audio, false, true) => Some(Self::DuckedVoice),
            _ => None,
        }
    }

    /// Its name on the child's command line.
    fn name(self) -> &'static str {
        match self {
            Self::MaskedVideo => "video",
            Self::AlteredVoice => "voice",
            Self::AlteredDuckedVoice => "ducked-voice",
            Self::DuckedVoice => "ducked",
        }
    }

    fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|pipeline| pipeline.name() == name)
    }

    /// Which pool of children it counts in: 0 for masking, 1 for ducking only.
    fn pool(self) -> usize {
        usize::from(self == Self::DuckedVoice)
    }
}

/// A place in one of the pools of children ([`MAX_MASKING_CHILDREN`], [`MAX_DUCKING_CHILDREN`]), held while a
/// child runs.
#[derive(Debug)]
struct ChildPlace {
    pool: usize,
}

impl ChildPlace {
    fn take(pool: usize) -> std::io::Result<Self> {
        use std::sync::atomic::Ordering;
        let limit = [MAX_MASKING_CHILDREN, MAX_DUCKING_CHILDREN][pool];
        let taken = RUNNING_CHILDREN[pool]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| (running < limit).then_some(running + 1));
        match taken {
            Ok(_) => Ok(ChildPlace { pool }),
            Err(_) => Err(std::io::Error::other(format!(
                "{limit} {} pipelines are running, the most this gateway runs at once",
                ["masking", "ducking"][pool]
            ))),
        }
    }
}

impl Drop for ChildPlace {
    fn drop(&mut self) {
        RUNNING_CHILDREN[self.pool].fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn put_header(message: &mut Vec<u8>, tag: u8, length: usize) {
    message.push(tag);
    // `length` is at most MAX_MESSAGE, within u32.
    message.extend_from_slice(&(length as u32).to_be_bytes());
}

/// One masked frame from a child; `None` at the end of its output.
async fn read_masked(stdout: &mut tokio::process::ChildStdout) -> std::io::Result<Option<MaskedFrame>> {
    let mut header = [0u8; 5];
    match stdout.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if header[0] != TAG_FRAME || !(9..=MAX_MESSAGE).contains(&length) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a masked frame"));
    }
    let mut body = vec![0u8; length];
    stdout.read_exact(&mut body).await?;
    let pts_ms = i64::from_be_bytes(body[..8].try_into().unwrap_or_default());
    let keyframe = body[8] != 0;
    Ok(Some(MaskedFrame { pts_ms, keyframe, data: Bytes::from(body).slice(9..) }))
}

/// One message to a child, read by the child; `None` at the end of its input.
fn read_message(input: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; 5];
    match input.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if length > MAX_MESSAGE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a message longer than the limit"));
    }
    let mut body = vec![0u8; length];
    input.read_exact(&mut body)?;
    Ok(Some((header[0], body)))
}

/// The child's side, `custodia mask <video|voice> <address space bytes>`: sets its limits, reads the seed, then
/// masks every frame it is given until its input ends. A frame it cannot mask is skipped; nothing unmasked is ever
/// written out. Returns the exit code.
pub fn child_main(mut args: impl Iterator<Item = OsString>) -> std::process::ExitCode {
    let usage = || {
        eprintln!(
            "usage: custodia {SUBCOMMAND} <video|voice|ducked-voice|ducked> <address space bytes>\n       custodia \
             {SUBCOMMAND} {SEGMENT} <address space bytes> <input> <output>"
        );
        std::process::ExitCode::from(2)
    };
    let kind = args.next();
    let address_space = args.next().and_then(|a| a.to_str().and_then(|s| s.parse::<u64>().ok()));
    let (Some(kind), Some(address_space)) = (kind, address_space) else { return usage() };
    let pipeline = match kind.to_str() {
        Some(SEGMENT) => return segment_child(address_space, args),
        Some(name) => match Pipeline::named(name) {
            Some(pipeline) => pipeline,
            None => return usage(),
        },
        None => return usage(),
    };
    if let Err(err) = custodia_service::probe::confine(address_space, None, 0) {
        eprintln!("custodia {SUBCOMMAND}: could not set the limits: {}", Chain(&err));
        return std::process::ExitCode::FAILURE;
    }
    match run_child(pipeline, &mut std::io::stdin().lock(), &mut std::io::stdout().lock()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("custodia {SUBCOMMAND}: {}", Chain(&*err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The masked copy of one recorded segment, `custodia mask segment <address space> <input> <output>`: the seed on
/// standard input, the summary as JSON on standard output. The child may write at most [`SEGMENT_OUTPUT_BYTES`]
/// and use [`SEGMENT_CPU_SECONDS`].
fn segment_child(address_space: u64, mut args: impl Iterator<Item = OsString>) -> std::process::ExitCode {
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        eprintln!("usage: custodia {SUBCOMMAND} {SEGMENT} <address space bytes> <input> <output>");
        return std::process::ExitCode::from(2);
    };
    if let Err(err) = custodia_service::probe::confine(address_space, Some(SEGMENT_CPU_SECONDS), SEGMENT_OUTPUT_BYTES) {
        eprintln!("custodia {SUBCOMMAND}: could not set the limits: {}", Chain(&err));
        return std::process::ExitCode::FAILURE;
    }
    let mut seed = [0u8; 8];
    if let Err(err) = std::io::stdin().read_exact(&mut seed) {
        eprintln!("custodia {SUBCOMMAND}: no seed: {}", Chain(&err));
        return std::process::ExitCode::FAILURE;
    }
    let masked = custodia_media::mask_segment(Path::new(&input), Path::new(&output), u64::from_be_bytes(seed));
    match masked {
        Ok(summary) => {
            let answer = serde_json::json!({
                "video_frames": summary.video_frames,
                "audio_packets": summary.audio_packets,
                "dropped": summary.dropped,
                "duration_ms": summary.duration_ms,
            });
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(answer.to_string().as_bytes()).and_then(|()| stdout.flush()).is_err() {
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("custodia {SUBCOMMAND}: {}", Chain(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// What the name of each temporary directory a masked copy is made in begins with (in the system's temporary
/// directory): the copy, and on a remote store the original it is made from, are there until the copy is in custody.
pub const STAGING_PREFIX: &str = "custodia-masked-";

/// A temporary directory a masked copy is made in ([`STAGING_PREFIX`]), owner-only, removed with everything in it
/// when dropped. It is locked (`flock`) while it lives, so that [`sweep_abandoned_staging`] tells one in use, by
/// this gateway or another on the machine, from one whose process died: the kernel drops a dead process's locks.
#[derive(Debug)]
pub struct MaskingStaging {
    // Declared first, so removed first: its lock is let go only once it is gone.
    dir: tempfile::TempDir,
    _lock: std::fs::File,
}

impl MaskingStaging {
    /// A new one, locked.
    pub fn new() -> std::io::Result<Self> {
        // A sweep may find a directory between its making and its locking, take it for abandoned and remove it:
        // the lock is then had only once it is gone, and another is made.
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix(STAGING_PREFIX).tempdir()?;
            let lock = std::fs::File::open(dir.path())?;
            lock.lock()?;
            if dir.path().is_dir() {
                return Ok(Self { dir, _lock: lock });
            }
        }
        Err(std::io::Error::other("every masking directory made was swept away at once"))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the masking directories ([`STAGING_PREFIX`]) in `dir` that no process holds: those a crash or a kill
/// left, holding a masked copy and, on a remote store, the unmasked original of a protected witness's recording,
/// outside custody. One in use is locked ([`MaskingStaging`]) and left alone, whatever gateway on the machine holds
/// it; so are links (nobody's masking directory) and what cannot be removed (another user's, in a shared temporary
/// directory: logged). Returns how many were removed.
pub fn sweep_abandoned_staging(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(STAGING_PREFIX)) {
            continue;
        }
        let removal = path.symlink_metadata().and_then(|metadata| {
            if !metadata.is_dir() {
                return Ok(());
            }
            let lock = std::fs::File::open(&path)?;
            match lock.try_lock() {
                // Held until it is gone, so that a gateway that made it just now makes another.
                Ok(()) => {
                    std::fs::remove_dir_all(&path)?;
                    removed += 1;
                    Ok(())
                }
                Err(std::fs::TryLockError::WouldBlock) => Ok(()),
                Err(std::fs::TryLockError::Error(err)) => Err(err),
            }
        });
        if let Err(err) = removal {
            tracing::warn!(
                error = %Chain(&err), dir = %path.display(),
                "could not remove an abandoned masking directory"
            );
        }
    }
    Ok(removed)
}

/// Why a masked copy of a segment was not made ([`mask_segment`]): the step that failed, with its cause, or what
/// the child said.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaskSegmentError {
    #[error("the masking could not start")]
    Start(#[source] std::io::Error),
    #[error("the masking took no seed")]
    Seed(#[source] std::io::Error),
    #[error("masking took longer than {} s and was stopped", SEGMENT_WALL.as_secs())]
    TimedOut,
    #[error("the masking could not be waited for")]
    Wait(#[source] std::io::Error),
    /// The child failed: how it ended, and the start of what it said (printable characters only).
    #[error("the masking failed ({status}): {said}")]
    Failed { status: std::process::ExitStatus, said: String },
    #[error("the masking's answer was not understood")]
    Answer(#[source] serde_json::Error),
}

/// The masked copy of a recorded segment, made by a child process (`custodia mask segment`) under limits: `output` is
/// written only if it succeeds.
pub async fn mask_segment(
    program: &Path,
    input: &Path,
    output: &Path,
    seed: u64,
) -> Result<MaskedCopySummary, MaskSegmentError> {
    let mut child = tokio::process::Command::new(program)
        .arg(SUBCOMMAND)
        .arg(SEGMENT)
        .arg(ADDRESS_SPACE_BYTES.to_string())
        .arg(input)
        .arg(output)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(MaskSegmentError::Start)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&seed.to_be_bytes()).await.map_err(MaskSegmentError::Seed)?;
    }
    let ended = tokio::time::timeout(SEGMENT_WALL, child.wait_with_output()).await;
    let output_of_child = match ended {
        Err(_) => return Err(MaskSegmentError::TimedOut),
        Ok(Err(e)) => return Err(MaskSegmentError::Wait(e)),
        Ok(Ok(done)) => done,
    };
    if !output_of_child.status.success() {
        let said = String::from_utf8_lossy(&output_of_child.stderr);
        let said: String = said.chars().filter(|c| !c.is_control()).take(300).collect();
        let _ = tokio::fs::remove_file(output).await;
        return Err(MaskSegmentError::Failed { status: output_of_child.status, said });
    }
    serde_json::from_slice(&output_of_child.stdout).map_err(MaskSegmentError::Answer)
}

/// What a masked copy of a segment holds, as the child reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaskedCopySummary {
    pub video_frames: u64,
    pub audio_packets: u64,
    /// Frames of the original left out because they could not be masked.
    pub dropped: u64,
    pub duration_ms: i64,
}

/// The masked-copy form of the subcommand.
const SEGMENT: &str = "segment";

/// What a masked copy's child may write: a masked segment is smaller than its original (a mosaic compresses well),
/// which the recorder cuts at about ten seconds.
const SEGMENT_OUTPUT_BYTES: u64 = 256 << 20;

/// CPU seconds a masked copy of one segment may take (about a second of CPU for ten seconds of 360p here).
const SEGMENT_CPU_SECONDS: u64 = 120;

/// How long a masked copy of one segment may take before its child is killed.
const SEGMENT_WALL: std::time::Duration = std::time::Duration::from_secs(300);

/// What a child masks with.
enum Masker {
    Video(custodia_media::mask::VideoMasker),
    Voice(Box<custodia_media::mask::VoiceMasker>),
}

fn run_child(
    pipeline: Pipeline,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error>> {
    use custodia_media::mask::{VideoMasker, VoiceMasker};
    let mut seed = [0u8; 8];
    input.read_exact(&mut seed)?;
    let seed = u64::from_be_bytes(seed);
    let mut masker = match pipeline {
        Pipeline::MaskedVideo => Masker::Video(VideoMasker::new()?),
        Pipeline::AlteredVoice => Masker::Voice(Box::new(VoiceMasker::new(seed)?)),
        Pipeline::AlteredDuckedVoice => Masker::Voice(Box::new(VoiceMasker::new(seed)?.with_gain(DUCKED_GAIN))),
        Pipeline::DuckedVoice => Masker::Voice(Box::new(VoiceMasker::ducking(DUCKED_GAIN)?)),
    };
    let mut message = Vec::new();
    while let Some((tag, body)) = read_message(input)? {
        let made: Vec<(Vec<u8>, bool)> = match (tag, &mut masker) {
            (TAG_KEYFRAME, Masker::Video(masker)) => {
                masker.force_keyframe();
                continue;
            }
            (TAG_FRAME, _) if body.len() < 8 => continue,
            (TAG_FRAME, Masker::Video(masker)) => match masker.push(&body[8..]) {
                Ok(Some(frame)) => vec![(frame.data, frame.keyframe)],
                Ok(None) | Err(_) => continue,
            },
            (TAG_FRAME, Masker::Voice(masker)) => match masker.push(&body[8..]) {
                Ok(packets) => packets.into_iter().map(|packet| (packet, true)).collect(),
                Err(_) => continue,
            },
            _ => continue,
        };
        for (data, keyframe) in made {
            message.clear();
            put_header(&mut message, TAG_FRAME, data.len() + 9);
            message.extend_from_slice(&body[..8]);
            message.push(u8::from(keyframe));
            message.extend_from_slice(&data);
            output.write_all(&message)?;
        }
        output.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masking that cannot start says so, and keeps the operating system's reason as its cause.
    #[tokio::test]
    async fn a_masking_that_cannot_start_keeps_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-program");
        let output = dir.path().join("masked.webm");
        let err = mask_segment(&missing, &dir.path().join("in.webm"), &output, 1).await.expect_err("no program");
        assert!(matches!(err, MaskSegmentError::Start(_)), "{err:?}");
        let cause = std::error::Error::source(&err).and_then(|cause| cause.downcast_ref::<std::io::Error>());
        assert_eq!(cause.map(std::io::Error::kind), Some(std::io::ErrorKind::NotFound));
        assert!(Chain(&err).to_string().starts_with("the masking could not start: "), "{}", Chain(&err));
    }

    /// Only masking directories that no process holds go, with what they hold, however young: one in use (here
    /// held by this test, as by another gateway's masking) stays, as do other names and a link named like one.
    #[test]
    fn the_sweep_removes_masking_directories_nobody_holds_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let abandoned = dir.path().join(format!("{STAGING_PREFIX}abandoned"));
        std::fs::create_dir(&abandoned).unwrap();
        std::fs::write(abandoned.join("original.webm"), b"a protected witness").unwrap();
        let in_use = dir.path().join(format!("{STAGING_PREFIX}in-use"));
        std::fs::create_dir(&in_use).unwrap();
        let held = std::fs::File::open(&in_use).unwrap();
        held.lock().unwrap();
        let other = dir.path().join("other-directory");
        std::fs::create_dir(&other).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join(format!("{STAGING_PREFIX}link"))).unwrap();

        assert_eq!(sweep_abandoned_staging(dir.path()).unwrap(), 1);
        assert!(!abandoned.exists());
        assert!(in_use.exists() && other.exists() && elsewhere.path().exists());
        drop(held);
        assert_eq!(sweep_abandoned_staging(dir.path()).unwrap(), 1);
        assert!(!in_use.exists());
    }

    /// A directory made for masking is held while it lives, and gone once dropped.
    #[test]
    fn a_masking_directory_is_held_while_it_lives() {
        let staging = MaskingStaging::new().unwrap();
        let path = staging.path().to_path_buf();
        let parent = path.parent().unwrap();
        let before = sweep_abandoned_staging(parent).unwrap();
        assert!(path.is_dir(), "the sweep removed a masking directory in use ({before} others removed)");
        drop(staging);
        assert!(!path.exists());
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut message = Vec::new();
        put_header(&mut message, tag, body.len());
        message.extend_from_slice(body);
        message
    }

    fn frame(pts_ms: i64, data: &[u8]) -> Vec<u8> {
        message(TAG_FRAME, &[&pts_ms.to_be_bytes()[..], data].concat())
    }

    #[test]
    fn a_child_writes_nothing_of_what_it_cannot_mask_and_ends_with_its_input() {
        for pipeline in Pipeline::ALL {
            let mut input = 7u64.to_be_bytes().to_vec();
            input.extend(frame(0, b"not a frame at all"));
            input.extend(frame(20, &[0xff; 3000]));
            input.extend(message(TAG_KEYFRAME, &[]));
            input.extend(message(9, b"a tag nobody sends"));
            input.extend(message(TAG_FRAME, b"short"));
            let mut output = Vec::new();
            run_child(pipeline, &mut input.as_slice(), &mut output).unwrap();
            if pipeline == Pipeline::DuckedVoice {
                // No transform delay: each packet it cannot decode is 20 ms of silence, encoded (a small Opus
                // packet each), never the bytes that came in.
                assert!(output.len() < 200, "{pipeline:?}: {} bytes written", output.len());
                assert!(!output.windows(18).any(|w| w == b"not a frame at all"), "{output:?}");
                assert!(!output.windows(32).any(|w| w.iter().all(|b| *b == 0xff)), "{output:?}");
            } else {
                // The others hold back their first 24 ms (the voice transform) or start at a keyframe (video).
                assert!(output.is_empty(), "{pipeline:?}: {} bytes written", output.len());
            }
        }
    }

    #[test]
    fn a_child_refuses_a_message_over_the_limit_and_a_cut_off_one() {
        let mut input = 7u64.to_be_bytes().to_vec();
        input.push(TAG_FRAME);
        input.extend_from_slice(&(MAX_MESSAGE as u32 + 1).to_be_bytes());
        assert!(run_child(Pipeline::MaskedVideo, &mut input.as_slice(), &mut Vec::new()).is_err());
        let mut input = 7u64.to_be_bytes().to_vec();
        input.extend(&frame(0, &[1; 100])[..50]);
        assert!(run_child(Pipeline::DuckedVoice, &mut input.as_slice(), &mut Vec::new()).is_err());
    }

    #[test]
    fn every_treatment_but_the_original_has_one_pipeline_and_its_name_reads_back() {
        use custodia_recorder::masking::Treatment;
        for pipeline in Pipeline::ALL {
            assert_eq!(Pipeline::named(pipeline.name()), Some(pipeline));
        }
        let video = |mask, duck| Pipeline::of(MediaKind::Video, Treatment { mask, duck });
        let audio = |mask, duck| Pipeline::of(MediaKind::Audio, Treatment { mask, duck });
        assert_eq!((video(false, false), audio(false, false), video(false, true)), (None, None, None));
        assert_eq!(audio(false, true).map(Pipeline::pool), Some(1), "ducking alone counts apart");
        assert_eq!(audio(true, true).map(Pipeline::pool), Some(0), "anything masked counts as masking");
    }
}
