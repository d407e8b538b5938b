//! Media probing in a child process. FFmpeg parses whatever a client uploaded, so a parser bug a hostile file
//! reaches must not run in the process that holds the signing key, nor take the gateway down, nor eat its memory.
//!
//! The gateway runs its own binary again as `custodia probe <limits> <path>` (a hidden subcommand, dispatched
//! before anything else starts) with a cleared environment and no standard input. Before it opens the file, the
//! child sets its own limits: address space, CPU time, no core files, no file it may write (file size 0), few
//! open files, no new privileges, and death with its parent. (The workspace forbids `unsafe`, so the limits are
//! not set between fork and exec; nothing of the file is read before they hold.) It prints the [`MediaProbe`] as
//! JSON and exits. The parent waits a bounded time and kills it after that. Whatever happens to the child, the
//! answer is a [`MediaProbe`]: `Unprobed` with the reason, never an error, so the upload goes on and nothing is
//! lost.
//!
//! Not done: a seccomp filter. No well-kept seccomp crate is among this workspace's dependencies; the limits
//! above and no-new-privileges are what the child runs under.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use custodia_media::MediaProbe;

/// The hidden subcommand: `custodia probe <path>`.
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
    /// Where an object from a remote store (S3) is copied to be probed, owner-only, removed after.
    scratch: Option<PathBuf>,
}

/// Open files the child may hold: standard streams, the file, FFmpeg's own.
const CHILD_OPEN_FILES: u64 = 32;

impl Prober {
    /// `program` is the `custodia` binary; `None` is this process's own executable.
    pub fn new(program: Option<PathBuf>, limits: ProbeLimits) -> std::io::Result<Self> {
        let program = match program {
            Some(program) => program,
            None => std::env::current_exe()?,
        };
        Ok(Self { program, limits, scratch: None })
    }

    /// Probes objects of a remote store from copies in `dir` (made, owner-only, if it does not exist; copies a
    /// crash left there are removed, since nothing else writes there). Without, they are kept unprobed.
    pub fn with_scratch(mut self, dir: PathBuf) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        for left in std::fs::read_dir(&dir)? {
            let left = left?;
            if left.file_type()?.is_file() {
                std::fs::remove_file(left.path())?;
            }
        }
        self.scratch = Some(dir);
        Ok(self)
    }

    /// Where remote objects are copied to be probed.
    pub fn scratch(&self) -> Option<&Path> {
        self.scratch.as_deref()
    }

    /// The `custodia` binary the children run.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Describes the media file at `path`, in a child process under the limits. Never fails.
    pub async fn probe(&self, path: &Path) -> MediaProbe {
        let unprobed = |reason: String| MediaProbe::Unprobed { reason };
        let limits = self.limits;
        let child = tokio::process::Command::new(&self.program)
            .arg(SUBCOMMAND)
            .arg(limits.address_space_bytes.to_string())
            .arg(limits.cpu_seconds.to_string())
            .arg(path)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) => return unprobed(format!("the probe could not start: {err}")),
        };
        let output = match tokio::time::timeout(limits.wall, child.wait_with_output()).await {
            // Dropping the future kills the child (kill_on_drop).
            Err(_) => {
                return unprobed(format!("probing took longer than {} s and was stopped", limits.wall.as_secs_f64()));
            }
            Ok(Err(err)) => return unprobed(format!("the probe could not be waited for: {err}")),
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            use std::os::unix::process::ExitStatusExt as _;
            return unprobed(match output.status.signal() {
                Some(signal) => format!("the probe was stopped by signal {signal}: it went past its limits"),
                None => format!("the probe failed ({})", output.status),
            });
        }
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| unprobed(format!("the probe's answer was not understood: {err}")))
    }
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

/// The child's side, `custodia probe <address space bytes> <cpu seconds> <path>`: sets its limits, probes the file
/// and prints the result as JSON. Returns the exit code.
pub fn child_main(mut args: impl Iterator<Item = OsString>) -> std::process::ExitCode {
    use std::io::Write as _;
    let number = |arg: Option<OsString>| arg.and_then(|a| a.to_str().and_then(|s| s.parse::<u64>().ok()));
    let (Some(address_space), Some(cpu_seconds), Some(path)) = (number(args.next()), number(args.next()), args.next())
    else {
        eprintln!("usage: custodia {SUBCOMMAND} <address space bytes> <cpu seconds> <path>");
        return std::process::ExitCode::from(2);
    };
    if let Err(err) = confine(address_space, Some(cpu_seconds), 0) {
        eprintln!("custodia {SUBCOMMAND}: could not set the limits: {err}");
        return std::process::ExitCode::FAILURE;
    }
    let probe = custodia_media::probe(Path::new(&path));
    let json = serde_json::to_vec(&probe).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(&json).and_then(|()| stdout.flush()).is_err() {
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
