//! Media probing in a child process. FFmpeg parses whatever a client uploaded, so a parser bug a hostile file
//! reaches must not run in the process that holds the signing key, nor take the gateway down, nor eat its memory.
//!
//! The gateway runs its own binary again as `custodia probe <limits> <path>` (a hidden subcommand, dispatched
//! before anything else starts) with a cleared environment. Before it opens the file, the child sets its own
//! limits: address space, CPU time, no core files, no file it may write (file size 0), few open files, no new
//! privileges, and death with its parent. (The workspace forbids `unsafe`, so the limits are not set between fork
//! and exec; nothing of the file is read before they hold.) It writes the [`MediaProbe`] as JSON (the `wire` module) and
//! exits. The parent waits a bounded time and kills it after that, and kills at once a child that says what the
//! protocol does not. Whatever happens to the child, the answer is a [`MediaProbe`]: `Unprobed` with the reason,
//! never an error, so the upload goes on and nothing is lost. At most [`PROBES_AT_ONCE`] children run at once;
//! further probes wait their turn.
//!
//! An object of a remote store (S3) is probed where it is, in ranges, never copied to disk whole: the child runs as
//! `custodia probe <limits> --object <size>` and reads the object through the gateway (the `wire` module). It asks for a
//! range on its standard output; the gateway fetches the 1 MiB block that holds it from the store (keeping the
//! [`CACHED_BLOCKS`] last used, and asking again, twice, when the store fails in a way that may pass) and answers on
//! the child's standard input. FFmpeg reads what it needs to probe: a few megabytes for a whole recording, a few
//! tens for a damaged one whose end it searches (an MPEG-TS with a garbled tail took 37 blocks). A probe that needs
//! more than [`OBJECT_READ_BUDGET`] fetched from the store, or reads more than [`OBJECT_SERVE_BUDGET`] through its
//! pipe, gets no more and is left unprobed, saying so. The time the child waits for the store is not counted against
//! FFmpeg's own limit ([`custodia_media::probe_source`]), so that a slow store does not change what a probe finds;
//! the gateway's wall-clock limit covers both. The child still has no file, socket or store of its own: only its
//! two pipes.
//!
//! Not done: a seccomp filter. No well-kept seccomp crate is among this workspace's dependencies; the limits
//! above and no-new-privileges are what the child runs under.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use custodia_core::Sha256;
use custodia_media::MediaProbe;
use custodia_store::{ArtefactStore, StoreError};

/// The hidden subcommand: `custodia probe <limits> <path>` (or `--object <size>` in place of the path).
pub const SUBCOMMAND: &str = "probe";

/// How much a probe may take.
#[derive(Debug, Clone, Copy)]
pub struct ProbeLimits {
    /// Address space (virtual memory), in bytes: the binary's own mappings count too.
    pub address_space_bytes: u64,
    /// CPU time, in seconds; past it the kernel stops the child (SIGXCPU, then SIGKILL).
    pub cpu_seconds: u64,
    /// Wall-clock time before the child is killed.
    pub wall: Duration,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        Self { address_space_bytes: 2 << 30, cpu_seconds: 30, wall: Duration::from_secs(60) }
    }
}

/// Runs probes in child processes.
#[derive(Debug, Clone)]
pub struct Prober {
    program: PathBuf,
    limits: ProbeLimits,
    /// One for each child that may run at once.
    children: Arc<tokio::sync::Semaphore>,
    /// One for each MiB that uploads may keep for their probes ([`KEPT_BYTES_BUDGET`]).
    kept: Arc<tokio::sync::Semaphore>,
}

/// How many probe children may run at once (each holds up to [`CACHED_BLOCKS`] of an object in the gateway, and
/// FFmpeg's memory in its own); further probes wait their turn.
pub const PROBES_AT_ONCE: usize = 8;

/// How long a child that has answered has to exit before it is killed (and its answer not taken).
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Open files the child may hold: standard streams, the file, FFmpeg's own.
const CHILD_OPEN_FILES: u64 = 32;

const MIB: u64 = 1 << 20;

/// The blocks in which an object of a remote store is fetched for a probe.
pub const OBJECT_BLOCK_BYTES: u64 = 1 << 20;
/// How many of the blocks last used a probe keeps (FFmpeg reads on from where it is, seeks back a little, and goes
/// back again and again over the end of a file whose duration it estimates).
pub const CACHED_BLOCKS: usize = 8;
/// The most a probe may have fetched of an object from the store in all: many times what FFmpeg reads to probe
/// ([`custodia_media::PROBE_SIZE`]), and more than the damaged files we tried needed (37 blocks at most).
pub const OBJECT_READ_BUDGET: u64 = 64 * OBJECT_BLOCK_BYTES;
/// The most a probe may read of an object through its pipe, from blocks kept or fetched: a child that asks for the
/// same kept block again and again costs the gateway this much at most.
pub const OBJECT_SERVE_BUDGET: u64 = 4 * OBJECT_READ_BUDGET;
/// How much of an upload's beginning and end is kept as it streams into a remote store ([`Seen`]): the beginning
/// holds what FFmpeg reads to probe ([`custodia_media::PROBE_SIZE`], 5 MB) with room to spare; the end, the index
/// some formats keep there (an MP4's `moov`, whose size grows with the duration) and what FFmpeg reads to estimate
/// a duration.
pub const SEEN_HEAD_BYTES: u64 = 6 * OBJECT_BLOCK_BYTES;
pub const SEEN_TAIL_BYTES: u64 = 2 * OBJECT_BLOCK_BYTES;
/// The least an answer counts against [`OBJECT_SERVE_BUDGET`], however little it gives: at most 65,536 answers a
/// probe (FFmpeg reads through a buffer of 32 KiB; a probe asks a few hundred times).
const ANSWER_CHARGE: u64 = 4096;
/// How many bytes all uploads being probed may keep at once ([`Seen`]: 32 uploads' worth); an upload that finds it
/// spent keeps nothing, and its probe reads from the store.
pub const KEPT_BYTES_BUDGET: u64 = 32 * (SEEN_HEAD_BYTES + SEEN_TAIL_BYTES);
/// How many times a block is asked for again when the store fails in a way that may pass, and the first pause.
const FETCH_RETRIES: u32 = 2;
const FETCH_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Where the bytes a child asks for come from: none (it reads a file of its own), or a stored artefact.
enum Source<'a> {
    File,
    Object { artefacts: &'a ArtefactStore, sha256: &'a Sha256, blocks: Blocks },
}

impl Prober {
    /// `program` is the `custodia` binary; `None` is this process's own executable.
    pub fn new(program: Option<PathBuf>, limits: ProbeLimits) -> std::io::Result<Self> {
        let program = match program {
            Some(program) => program,
            None => std::env::current_exe()?,
        };
        let kept = tokio::sync::Semaphore::new(usize::try_from(KEPT_BYTES_BUDGET / MIB).unwrap_or(0));
        Ok(Self {
            program,
            limits,
            children: Arc::new(tokio::sync::Semaphore::new(PROBES_AT_ONCE)),
            kept: Arc::new(kept),
        })
    }

    /// Something to keep the beginning and end of an upload in as it streams into a remote store, for its probe
    /// ([`Self::probe_stored`]); `None` while uploads already keep [`KEPT_BYTES_BUDGET`] between them.
    pub fn watch_upload(&self) -> Option<Seen> {
        let share = u32::try_from((SEEN_HEAD_BYTES + SEEN_TAIL_BYTES) / MIB).ok()?;
        let permit = self.kept.clone().try_acquire_many_owned(share).ok()?;
        Some(Seen { _budget: Some(permit), ..Seen::default() })
    }

    /// The `custodia` binary the children run.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Describes the media file at `path`, in a child process under the limits. Never fails.
    pub async fn probe(&self, path: &Path) -> MediaProbe {
        self.run(&[path.as_os_str()], Source::File).await
    }

    /// Describes the artefact `sha256` of `size` bytes in `artefacts` (a remote store), read in ranges by a child
    /// process under the limits; nothing of it is written to disk. Never fails.
    /// A block that lies within what `seen` kept of the object as it streamed in is served from there, not fetched.
    pub async fn probe_stored(
        &self,
        artefacts: &ArtefactStore,
        sha256: &Sha256,
        size: u64,
        seen: Option<Seen>,
    ) -> MediaProbe {
        let size_arg = size.to_string();
        let blocks = Blocks::new(size).with_seen(seen);
        self.run(&[OBJECT_FLAG.as_ref(), size_arg.as_ref()], Source::Object { artefacts, sha256, blocks }).await
    }

    /// Runs a child with `args` after its limits (once fewer than [`PROBES_AT_ONCE`] run), answers what it asks of
    /// `source`, and reads its answer.
    async fn run(&self, args: &[&std::ffi::OsStr], mut source: Source<'_>) -> MediaProbe {
        let Ok(_turn) = self.children.acquire().await else {
            return unprobed("the prober is closed".to_owned());
        };
        let limits = self.limits;
        let child = tokio::process::Command::new(&self.program)
            .arg(SUBCOMMAND)
            .arg(limits.address_space_bytes.to_string())
            .arg(limits.cpu_seconds.to_string())
            .args(args)
            .env_clear()
            .stdin(match source {
                Source::File => Stdio::null(),
                Source::Object { .. } => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(err) => return unprobed(format!("the probe could not start: {err}")),
        };
        // Dropping the child on a return kills it (kill_on_drop).
        let Ok(answer) = tokio::time::timeout(limits.wall, wire::serve(&mut child, &mut source)).await else {
            return unprobed(format!("probing took longer than {} s and was stopped", limits.wall.as_secs_f64()));
        };
        // A child that ended (its pipe closed) is judged by how it ended; one that said what the protocol does not
        // is stopped now.
        let ended =
            matches!(&answer, Err(err) if matches!(err.kind(), ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe));
        if let Err(err) = &answer
            && !ended
        {
            return unprobed(format!("the probe's answer was not understood: {err}"));
        }
        // A probe refused more of its object is unprobed for that, whatever it says or does next (it is killed).
        if let Source::Object { blocks, .. } = &source
            && let Some(refused) = &blocks.refused
        {
            return unprobed(refused.clone());
        }
        let status = match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            Err(_) => return unprobed("the probe did not end after it answered".to_owned()),
            Ok(Err(err)) => return unprobed(format!("the probe could not be waited for: {err}")),
            Ok(Ok(status)) => status,
        };
        if !status.success() {
            use std::os::unix::process::ExitStatusExt as _;
            return unprobed(match status.signal() {
                Some(signal) => format!("the probe was stopped by signal {signal}: it went past its limits"),
                None => format!("the probe failed ({status})"),
            });
        }
        match answer {
            Ok(json) => serde_json::from_slice(&json)
                .unwrap_or_else(|err| unprobed(format!("the probe's answer was not understood: {err}"))),
            Err(err) => unprobed(format!("the probe's answer was not understood: {err}")),
        }
    }
}

fn unprobed(reason: String) -> MediaProbe {
    MediaProbe::Unprobed { reason }
}

/// The first [`SEEN_HEAD_BYTES`] and the last [`SEEN_TAIL_BYTES`] (or a little more) of an object, kept as they
/// streamed past on their way into the store, so that a probe reads them from memory rather than from the store:
/// most probes read nothing else. They are the bytes stored: the store hashed the same stream, and keeps it under
/// that digest. The chunks should come regrouped (`custodia_store::regrouped`), so that the end is kept in a few
/// dozen pieces however the client split its body; the beginning is copied into one buffer. What it holds counts
/// against the prober's budget for kept bytes ([`KEPT_BYTES_BUDGET`], [`Prober::watch_upload`]) until the probe ends.
#[derive(Default)]
pub struct Seen {
    head: bytes::BytesMut,
    tail: std::collections::VecDeque<Bytes>,
    tail_size: u64,
    size: u64,
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Sizes only: the bytes are evidence.
impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("head_size", &self.head.len())
            .field("tail_size", &self.tail_size)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Seen {
    /// Takes note of the next chunk of the stream.
    pub fn observe(&mut self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        let len = chunk.len() as u64;
        let head_bytes = usize::try_from(SEEN_HEAD_BYTES).unwrap_or(usize::MAX);
        if self.head.capacity() == 0 {
            // Once, whole: grown by doubling, it would hold a third more than it counts for (a large allocation is
            // mapped as its pages are touched, so a small upload pays only for what it fills).
            self.head = bytes::BytesMut::with_capacity(head_bytes);
        }
        let room = head_bytes.saturating_sub(self.head.len());
        self.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        self.tail.push_back(chunk.clone());
        self.tail_size += len;
        while let Some(front) = self.tail.front()
            && self.tail_size - front.len() as u64 >= SEEN_TAIL_BYTES
        {
            self.tail_size -= front.len() as u64;
            self.tail.pop_front();
        }
        self.size += len;
    }

    /// How many bytes streamed past.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What was kept, each part in one piece, to be sliced without copying.
    fn kept(self) -> Kept {
        let mut tail = bytes::BytesMut::with_capacity(usize::try_from(self.tail_size).unwrap_or(0));
        for chunk in &self.tail {
            tail.extend_from_slice(chunk);
        }
        Kept {
            head: self.head.freeze(),
            tail: tail.freeze(),
            tail_start: self.size - self.tail_size,
            size: self.size,
            _budget: self._budget,
        }
    }
}

/// What [`Seen`] kept, once the object is stored.
struct Kept {
    head: Bytes,
    tail: Bytes,
    tail_start: u64,
    size: u64,
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Kept {
    /// The bytes of `range`, if they all lie within the beginning or the end kept.
    fn slice(&self, range: std::ops::Range<u64>) -> Option<Bytes> {
        let (part, from) = if range.end <= self.head.len() as u64 {
            (&self.head, 0)
        } else if range.start >= self.tail_start && range.end <= self.size {
            (&self.tail, self.tail_start)
        } else {
            return None;
        };
        let (start, end) = (usize::try_from(range.start - from).ok()?, usize::try_from(range.end - from).ok()?);
        (start <= end).then(|| part.slice(start..end))
    }
}

/// The blocks of an object a probe has used: the [`CACHED_BLOCKS`] last used, and how much was fetched and served.
struct Blocks {
    size: u64,
    /// What was kept of the object as it streamed in, if anything.
    kept: Option<Kept>,
    /// The least recently used first.
    cached: std::collections::VecDeque<(u64, Bytes)>,
    fetched: u64,
    served: u64,
    /// Why the probe was refused more of the object, once it was.
    refused: Option<String>,
}

impl Blocks {
    fn new(size: u64) -> Self {
        Self { size, kept: None, cached: std::collections::VecDeque::new(), fetched: 0, served: 0, refused: None }
    }

    /// Serving what lies within `seen` from there (if it is of this object's size).
    fn with_seen(self, seen: Option<Seen>) -> Self {
        Self { kept: seen.filter(|seen| seen.size == self.size).map(Seen::kept), ..self }
    }

    /// Up to `len` bytes of the object from `offset` (fewer where a block ends), fetching the block that holds
    /// them if it is not kept. Empty at or past the end; `None` once a budget is spent or the store failed.
    async fn read(&mut self, artefacts: &ArtefactStore, sha256: &Sha256, offset: u64, len: u32) -> Option<Bytes> {
        if self.refused.is_some() {
            return None;
        }
        if offset >= self.size || len == 0 {
            return self.charge(0).then(Bytes::new);
        }
        let start = offset - offset % OBJECT_BLOCK_BYTES;
        let block = match self.cached.iter().position(|(at, _)| *at == start) {
            Some(kept) => {
                let entry = self.cached.remove(kept)?;
                self.cached.push_back(entry);
                self.cached.back()?.1.clone()
            }
            None => {
                let end = (start + OBJECT_BLOCK_BYTES).min(self.size);
                let block = match self.kept.as_ref().and_then(|kept| kept.slice(start..end)) {
                    Some(block) => block,
                    None => self.fetch(artefacts, sha256, start).await?,
                };
                if self.cached.len() == CACHED_BLOCKS {
                    self.cached.pop_front();
                }
                self.cached.push_back((start, block.clone()));
                block
            }
        };
        let from = usize::try_from(offset - start).ok()?;
        let to = from.saturating_add(len as usize).min(block.len());
        self.charge((to - from) as u64).then(|| block.slice(from..to))
    }

    /// Counts an answer of `given` bytes against [`OBJECT_SERVE_BUDGET`], as at least [`ANSWER_CHARGE`] (an empty
    /// one too): a child cannot ask for a byte, or nothing, at a time without end. False, and refused for good,
    /// once the budget is spent.
    fn charge(&mut self, given: u64) -> bool {
        self.served += given.max(ANSWER_CHARGE);
        if self.served > OBJECT_SERVE_BUDGET {
            self.refuse(format!("the probe read more than {} MiB of the object", OBJECT_SERVE_BUDGET / MIB));
            return false;
        }
        true
    }

    /// The block of the object from `start`, from the store, within the budget.
    async fn fetch(&mut self, artefacts: &ArtefactStore, sha256: &Sha256, start: u64) -> Option<Bytes> {
        let end = (start + OBJECT_BLOCK_BYTES).min(self.size);
        if self.fetched + (end - start) > OBJECT_READ_BUDGET {
            return self.refuse(format!(
                "the probe needed more than {} MiB fetched from the store",
                OBJECT_READ_BUDGET / OBJECT_BLOCK_BYTES
            ));
        }
        let mut pause = FETCH_RETRY_PAUSE;
        let mut retries = 0;
        let fetched = loop {
            match fetch(artefacts, sha256, start..end).await {
                Err(err) if err.is_transient() && retries < FETCH_RETRIES => {
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                    retries += 1;
                }
                fetched => break fetched,
            }
        };
        self.fetched += end - start;
        match fetched {
            Ok(block) if block.len() as u64 == end - start => Some(block),
            Ok(block) => {
                tracing::warn!(asked = end - start, given = block.len(), "the store gave a probe a short block");
                self.refuse("the object could not be read from the store to be probed".to_owned())
            }
            Err(err) => {
                // The store's own words (its endpoint, its bucket) stay in the log, out of the signed manifest.
                tracing::warn!(error = %crate::error::Chain(&err), "a probe could not read its object from the store");
                self.refuse("the object could not be read from the store to be probed".to_owned())
            }
        }
    }

    fn refuse(&mut self, reason: String) -> Option<Bytes> {
        self.refused = Some(reason);
        None
    }
}

/// The bytes `range` of a stored artefact, in one piece.
async fn fetch(artefacts: &ArtefactStore, sha256: &Sha256, range: std::ops::Range<u64>) -> Result<Bytes, StoreError> {
    use futures::TryStreamExt as _;
    let mut block = bytes::BytesMut::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
    let mut stream = std::pin::pin!(artefacts.read(sha256, Some(range)).await?);
    while let Some(chunk) = stream.try_next().await? {
        block.extend_from_slice(&chunk);
    }
    Ok(block.freeze())
}

/// The limits a child sets on itself before it reads anything a client sent: death with its parent, no new
/// privileges, no core files, no file it may write beyond `file_bytes` (0: none), few open files, an address
/// space, and (with `cpu_seconds`) CPU time. Shared with the masking children (the server's `masking`).
pub fn confine(address_space_bytes: u64, cpu_seconds: Option<u64>, file_bytes: u64) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let limit = |resource, value: u64| setrlimit(resource, Rlimit { current: Some(value), maximum: Some(value) });
    // Death with the parent first, so that a child the gateway no longer waits for does not run on.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    rustix::thread::set_no_new_privs(true)?;
    limit(Resource::Core, 0)?;
    limit(Resource::Fsize, file_bytes)?;
    limit(Resource::Nofile, CHILD_OPEN_FILES)?;
    // The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL.
    if let Some(cpu_seconds) = cpu_seconds {
        setrlimit(Resource::Cpu, Rlimit { current: Some(cpu_seconds), maximum: Some(cpu_seconds + 1) })?;
    }
    limit(Resource::As, address_space_bytes)?;
    Ok(())
}

/// The argument that tells a child to read an object through its pipes, followed by the object's size.
const OBJECT_FLAG: &str = "--object";

/// The child's side, `custodia probe <address space bytes> <cpu seconds> <path>` (or `--object <size>` in place
/// of the path: an object read through the pipes): sets its limits, probes the file or object and writes the
/// result as JSON (the `wire` module). Returns the exit code.
pub fn child_main(mut args: impl Iterator<Item = OsString>) -> std::process::ExitCode {
    let number = |arg: Option<OsString>| arg.and_then(|a| a.to_str().and_then(|s| s.parse::<u64>().ok()));
    let usage = || {
        eprintln!("usage: custodia {SUBCOMMAND} <address space bytes> <cpu seconds> <path | {OBJECT_FLAG} <size>>");
        std::process::ExitCode::from(2)
    };
    let (Some(address_space), Some(cpu_seconds), Some(target)) =
        (number(args.next()), number(args.next()), args.next())
    else {
        return usage();
    };
    let object_size = if target == OBJECT_FLAG {
        match number(args.next()) {
            Some(size) => Some(size),
            None => return usage(),
        }
    } else {
        None
    };
    if let Err(err) = confine(address_space, Some(cpu_seconds), 0) {
        eprintln!("custodia {SUBCOMMAND}: could not set the limits: {err}");
        return std::process::ExitCode::FAILURE;
    }
    let probe = match object_size {
        Some(size) => {
            let object = wire::ParentObject::new(size);
            let waited = object.waited();
            custodia_media::probe_source(object, waited)
        }
        None => custodia_media::probe(Path::new(&target)),
    };
    let json = serde_json::to_vec(&probe).unwrap_or_default();
    match wire::answer(&json) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

/// What a probe child and the gateway say to each other on the child's pipes. All numbers are big-endian.
///
/// - The child, on its standard output: `R`, offset (u64), length (u32): "the object's bytes from offset"; and,
///   last, `J`, length (u32), that many bytes of JSON: its [`MediaProbe`].
/// - The gateway, on the child's standard input, to each `R`: length (u32), then that many bytes, at most the
///   length asked for. Zero bytes before the object's end means no more will be given: the read fails.
mod wire {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::Source;

    const READ: u8 = b'R';
    const ANSWER: u8 = b'J';
    /// The most one read asks for (FFmpeg's own reads are 32 KiB).
    const MAX_READ: u32 = 1 << 20;
    /// The longest answer the gateway takes: a [`super::MediaProbe`] is a few kilobytes.
    const MAX_ANSWER: u32 = 1 << 20;

    /// The child's view of an object the gateway holds: read through the pipes, seeks kept here.
    pub(super) struct ParentObject {
        size: u64,
        position: u64,
        /// Nanoseconds spent waiting for the gateway's answers, shared with FFmpeg's time limit.
        waited: Arc<AtomicU64>,
        /// Set once the gateway gave more than was asked: the pipe is out of step, so nothing more is read.
        broken: bool,
    }

    impl ParentObject {
        pub(super) fn new(size: u64) -> Self {
            Self { size, position: 0, waited: Arc::new(AtomicU64::new(0)), broken: false }
        }

        /// How long this reader has waited for the gateway so far.
        pub(super) fn waited(&self) -> impl Fn() -> Duration + Send + 'static {
            let waited = Arc::clone(&self.waited);
            move || Duration::from_nanos(waited.load(Ordering::Relaxed))
        }

        /// Asks the gateway for `wanted` bytes from the position, and reads the answer into `buf`.
        fn ask(&mut self, buf: &mut [u8], wanted: u32) -> std::io::Result<usize> {
            let mut request = [0u8; 13];
            request[0] = READ;
            request[1..9].copy_from_slice(&self.position.to_be_bytes());
            request[9..].copy_from_slice(&wanted.to_be_bytes());
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&request)?;
            stdout.flush()?;
            let mut stdin = std::io::stdin().lock();
            let mut given = [0u8; 4];
            stdin.read_exact(&mut given)?;
            let given = u32::from_be_bytes(given);
            if given == 0 {
                return Err(std::io::Error::other("the gateway gave no more of the object"));
            }
            if given > wanted {
                self.broken = true;
                return Err(std::io::Error::other("the gateway gave more of the object than was asked for"));
            }
            let given = given as usize;
            stdin.read_exact(&mut buf[..given])?;
            Ok(given)
        }
    }

    impl Read for ParentObject {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.broken {
                return Err(std::io::Error::other("the pipe from the gateway is out of step"));
            }
            let left = self.size.saturating_sub(self.position);
            let wanted = u32::try_from(left.min(buf.len() as u64)).unwrap_or(MAX_READ).min(MAX_READ);
            if wanted == 0 {
                return Ok(0);
            }
            let asked = Instant::now();
            let answered = self.ask(buf, wanted);
            let waited = u64::try_from(asked.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.waited.fetch_add(waited, Ordering::Relaxed);
            let given = answered?;
            self.position += given as u64;
            Ok(given)
        }
    }

    impl Seek for ParentObject {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            let target = match to {
                SeekFrom::Start(at) => Some(at),
                SeekFrom::End(by) => self.size.checked_add_signed(by),
                SeekFrom::Current(by) => self.position.checked_add_signed(by),
            };
            self.position = target.ok_or_else(|| std::io::Error::other("a seek outside the object's range"))?;
            Ok(self.position)
        }
    }

    /// The child's last word: its answer, as JSON.
    pub(super) fn answer(json: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(json.len()).map_err(std::io::Error::other)?;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&[ANSWER])?;
        stdout.write_all(&len.to_be_bytes())?;
        stdout.write_all(json)?;
        stdout.flush()
    }

    /// The gateway's side: answers the child's reads from `source` until it gives its answer, which is returned.
    pub(super) async fn serve(child: &mut tokio::process::Child, source: &mut Source<'_>) -> std::io::Result<Vec<u8>> {
        let requests = child.stdout.take().ok_or_else(|| std::io::Error::other("the probe has no output"))?;
        let mut requests = tokio::io::BufReader::new(requests);
        let mut answers = child.stdin.take();
        loop {
            match requests.read_u8().await? {
                READ => {
                    let offset = requests.read_u64().await?;
                    let len = requests.read_u32().await?.min(MAX_READ);
                    let (Source::Object { artefacts, sha256, blocks }, Some(answers)) = (&mut *source, &mut answers)
                    else {
                        return Err(std::io::Error::other("the probe asked for bytes of no object"));
                    };
                    if blocks.refused.is_some() {
                        // Told once (an empty answer) that it gets no more; asking again ends the serving.
                        let kind = std::io::ErrorKind::UnexpectedEof;
                        return Err(std::io::Error::new(kind, "the probe asked after its refusal"));
                    }
                    let bytes = blocks.read(artefacts, sha256, offset, len).await.unwrap_or_default();
                    let given = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
                    answers.write_all(&given.to_be_bytes()).await?;
                    answers.write_all(&bytes).await?;
                    answers.flush().await?;
                }
                ANSWER => {
                    let len = requests.read_u32().await?;
                    if len > MAX_ANSWER {
                        return Err(std::io::Error::other("the probe's answer is too long"));
                    }
                    let mut json = vec![0; len as usize];
                    requests.read_exact(&mut json).await?;
                    return Ok(json);
                }
                other => return Err(std::io::Error::other(format!("the probe said {other:#04x}, not a request"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use custodia_store::IngestOptions;

    use super::*;

    /// `size` bytes of a pattern, stored in a local store in `dir`.
    async fn stored(dir: &Path, size: u64) -> (ArtefactStore, Sha256, Vec<u8>) {
        let artefacts = ArtefactStore::local(dir).unwrap();
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes.clone()))]);
        let stored = artefacts.ingest(body, IngestOptions::default()).await.unwrap();
        (artefacts, stored.sha256, bytes)
    }

    fn at(offset: u64) -> usize {
        usize::try_from(offset).unwrap()
    }

    #[test]
    fn what_streamed_past_is_kept_at_its_beginning_and_end() {
        let size = SEEN_HEAD_BYTES + SEEN_TAIL_BYTES + 3 * OBJECT_BLOCK_BYTES + 5;
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let seen = || {
            let mut seen = Seen::default();
            for chunk in bytes.chunks(100_003) {
                seen.observe(&Bytes::copy_from_slice(chunk));
                seen.observe(&Bytes::new());
            }
            seen
        };
        let seen = seen();
        assert_eq!(seen.size(), size);
        // At most a chunk more than the end is held, and the beginning in a buffer no larger than it.
        assert!(seen.tail_size < SEEN_TAIL_BYTES + 100_003, "{}", seen.tail_size);
        assert_eq!(seen.head.capacity() as u64, SEEN_HEAD_BYTES);
        let kept = seen.kept();
        assert_eq!(kept.head.len() as u64, SEEN_HEAD_BYTES);
        let tail_start = size - SEEN_TAIL_BYTES;
        // Ranges across chunks, within the beginning or the end, are given whole.
        for range in [0..10, 99_990..200_010, 0..SEEN_HEAD_BYTES, tail_start..size, size - 7..size, size..size] {
            let given = kept.slice(range.clone()).unwrap();
            assert_eq!(given[..], bytes[at(range.start)..at(range.end)], "{range:?}");
        }
        // The middle, a range that reaches past what was kept, and past the end, are not.
        for range in [SEEN_HEAD_BYTES..SEEN_HEAD_BYTES + 1, SEEN_HEAD_BYTES - 1..SEEN_HEAD_BYTES + 1, size..size + 1] {
            assert!(kept.slice(range.clone()).is_none(), "{range:?}");
        }
    }

    #[tokio::test]
    async fn what_an_object_of_another_size_kept_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let (artefacts, sha256, bytes) = stored(dir.path(), 1000).await;
        let mut seen = Seen::default();
        seen.observe(&Bytes::from(vec![7u8; 999]));
        let mut blocks = Blocks::new(1000).with_seen(Some(seen));
        assert!(blocks.kept.is_none());
        assert_eq!(blocks.read(&artefacts, &sha256, 0, 1000).await.unwrap()[..], bytes[..]);
    }

    #[tokio::test]
    async fn a_probe_asking_a_byte_at_a_time_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (artefacts, sha256, _) = stored(dir.path(), 1000).await;
        let mut blocks = Blocks::new(1000);
        let mut answers = 0;
        // A byte, then nothing, again and again: each answer counts.
        while blocks.read(&artefacts, &sha256, answers % 1000, u32::from(answers % 2 == 0)).await.is_some() {
            answers += 1;
        }
        assert_eq!(answers, OBJECT_SERVE_BUDGET / ANSWER_CHARGE, "answers before the budget was spent");
        assert!(blocks.refused.unwrap().contains("read more than 256 MiB"));
    }

    #[test]
    fn uploads_keep_at_most_the_budget_between_them() {
        let prober = Prober::new(Some(PathBuf::from("/nonexistent")), ProbeLimits::default()).unwrap();
        let per_upload = SEEN_HEAD_BYTES + SEEN_TAIL_BYTES;
        let watching: Vec<Seen> = std::iter::from_fn(|| prober.watch_upload()).take(1000).collect();
        assert_eq!(watching.len() as u64, KEPT_BYTES_BUDGET / per_upload);
        drop(watching);
        assert!(prober.watch_upload().is_some(), "given back when the probes end");
    }

    #[tokio::test]
    async fn a_probe_is_given_at_most_its_budget_of_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let size = OBJECT_READ_BUDGET + 3 * OBJECT_BLOCK_BYTES + 17;
        let (artefacts, sha256, bytes) = stored(dir.path(), size).await;
        let mut blocks = Blocks::new(size);

        // A read is answered from the block that holds it, and ends where that block ends.
        let read = blocks.read(&artefacts, &sha256, 10, 100).await.unwrap();
        assert_eq!(read[..], bytes[10..110]);
        let read = blocks.read(&artefacts, &sha256, OBJECT_BLOCK_BYTES - 5, 100).await.unwrap();
        assert_eq!(read[..], bytes[at(OBJECT_BLOCK_BYTES - 5)..at(OBJECT_BLOCK_BYTES)]);
        assert_eq!(blocks.fetched, OBJECT_BLOCK_BYTES, "a block kept is not fetched again");
        // At or past the end: nothing, and no fetch.
        assert!(blocks.read(&artefacts, &sha256, size, 10).await.unwrap().is_empty());
        let last = size - 7;
        let read = blocks.read(&artefacts, &sha256, last, 100).await.unwrap();
        assert_eq!(read[..], bytes[at(last)..]);
        assert_eq!(blocks.fetched, OBJECT_BLOCK_BYTES + 17, "the last block is 17 bytes");

        // Walking on through the object spends the budget a block at a time, then the next block is refused.
        let mut offset = OBJECT_BLOCK_BYTES;
        while blocks.fetched + OBJECT_BLOCK_BYTES <= OBJECT_READ_BUDGET {
            let read = blocks.read(&artefacts, &sha256, offset, 4).await.unwrap();
            assert_eq!(read[..], bytes[at(offset)..at(offset + 4)]);
            offset += OBJECT_BLOCK_BYTES;
        }
        assert!(blocks.read(&artefacts, &sha256, offset, 4).await.is_none());
        let refused = blocks.refused.clone().unwrap();
        assert!(refused.contains("more than 64 MiB fetched from the store"), "{refused}");
        // Refused once, refused for good, even what is kept.
        assert!(blocks.read(&artefacts, &sha256, offset - OBJECT_BLOCK_BYTES, 4).await.is_none());
    }

    #[tokio::test]
    async fn the_blocks_last_used_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let blocks_in_object = CACHED_BLOCKS as u64 + 4;
        let (artefacts, sha256, bytes) = stored(dir.path(), blocks_in_object * OBJECT_BLOCK_BYTES).await;
        let mut blocks = Blocks::new(blocks_in_object * OBJECT_BLOCK_BYTES);
        // Going round as many blocks as are kept, again and again, fetches each once.
        for _ in 0..10 {
            for block in 0..CACHED_BLOCKS as u64 {
                let offset = block * OBJECT_BLOCK_BYTES + 3;
                let read = blocks.read(&artefacts, &sha256, offset, 8).await.unwrap();
                assert_eq!(read[..], bytes[at(offset)..at(offset + 8)]);
            }
        }
        assert_eq!(blocks.fetched, CACHED_BLOCKS as u64 * OBJECT_BLOCK_BYTES);
        // The first block, used again now, stays when a new one comes; the second, used least lately, goes.
        blocks.read(&artefacts, &sha256, 0, 8).await.unwrap();
        blocks.read(&artefacts, &sha256, CACHED_BLOCKS as u64 * OBJECT_BLOCK_BYTES, 8).await.unwrap();
        let fetched = blocks.fetched;
        blocks.read(&artefacts, &sha256, 0, 8).await.unwrap();
        assert_eq!(blocks.fetched, fetched, "the block used last was evicted");
        blocks.read(&artefacts, &sha256, OBJECT_BLOCK_BYTES, 8).await.unwrap();
        assert_eq!(blocks.fetched, fetched + OBJECT_BLOCK_BYTES, "the block used least lately was kept");
    }

    #[tokio::test]
    async fn a_probe_that_reads_a_kept_block_again_and_again_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (artefacts, sha256, _) = stored(dir.path(), OBJECT_BLOCK_BYTES).await;
        let mut blocks = Blocks::new(OBJECT_BLOCK_BYTES);
        let len = u32::try_from(OBJECT_BLOCK_BYTES).unwrap();
        for _ in 0..OBJECT_SERVE_BUDGET / OBJECT_BLOCK_BYTES {
            assert_eq!(blocks.read(&artefacts, &sha256, 0, len).await.unwrap().len() as u64, OBJECT_BLOCK_BYTES);
        }
        assert!(blocks.read(&artefacts, &sha256, 0, 1).await.is_none());
        let refused = blocks.refused.unwrap();
        assert!(refused.contains("read more than 256 MiB"), "{refused}");
        assert_eq!(blocks.fetched, OBJECT_BLOCK_BYTES);
    }

    #[tokio::test]
    async fn an_object_the_store_cannot_give_is_refused_in_words_of_our_own() {
        let dir = tempfile::tempdir().unwrap();
        let artefacts = ArtefactStore::local(dir.path()).unwrap();
        let missing = Sha256::of(b"never stored");
        let mut blocks = Blocks::new(1000);
        assert!(blocks.read(&artefacts, &missing, 0, 10).await.is_none());
        assert_eq!(blocks.refused.unwrap(), "the object could not be read from the store to be probed");
    }
}
