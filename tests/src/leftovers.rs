//! The servers a test or benchmark process started (garage, PostgreSQL), recorded on disk while they run, so that
//! a process killed before it could stop them (a signal skips `Drop`) does not leave them running, and their
//! directories filling the disk: the next process that starts one stops those whose starter is gone, and removes
//! their directories.
//!
//! A record is a file named after the server's process id in `custodia-test-servers` (owner-only) under the
//! temporary directory, holding the starter's process id and the server's directory, a line each. Only this user's
//! records are followed. A server is stopped only if its command line or its environment still names that
//! directory, whole (a process id since given to another program is left alone), and a directory is removed only if
//! it is this user's, directly in the temporary directory (as `tempfile` makes them), named without a link or `..`
//! (a benchmark's gateways keep their data in cargo's target directory: they are stopped, their data left to
//! `cargo clean`). Each test process looks for leftovers once, at its first server.

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// A server recorded as started by this process; the record goes when this is dropped (the server stopped).
#[derive(Debug)]
pub struct Recorded {
    record: PathBuf,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        // Only this process's own record: a file of the same name may since record another process's server.
        if read_record(&self.record).is_some_and(|(starter, _)| starter == std::process::id()) {
            let _ = std::fs::remove_file(&self.record);
        }
    }
}

fn records() -> PathBuf {
    std::env::temp_dir().join("custodia-test-servers")
}

/// The records' directory, made owner-only if it is not there; `None` unless it is a directory of this user's
/// (another user's could hold records naming anything).
fn own_records() -> Option<PathBuf> {
    let records = records();
    let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&records);
    let meta = std::fs::symlink_metadata(&records).ok()?;
    (meta.is_dir() && meta.uid() == current_uid()?).then_some(records)
}

fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|meta| meta.uid())
}

/// Records that this process started server `pid`, whose files are under `dir` (which its command line or its
/// environment names). The first record of a process first stops the servers whose starters are gone.
pub fn record(pid: u32, dir: &Path) -> Recorded {
    static STOPPED_LEFTOVERS: std::sync::Once = std::sync::Once::new();
    STOPPED_LEFTOVERS.call_once(stop_leftovers);
    let record = records().join(pid.to_string());
    // A test goes on without its record: it only helps a later run clean up after a killed one.
    if own_records().is_some() {
        let _ = std::fs::write(&record, format!("{}\n{}\n", std::process::id(), dir.display()));
    }
    Recorded { record }
}

/// The starter and the directory a record names.
fn read_record(record: &Path) -> Option<(u32, PathBuf)> {
    let text = std::fs::read_to_string(record).ok()?;
    let mut lines = text.lines();
    Some((lines.next()?.parse().ok()?, PathBuf::from(lines.next()?)))
}

/// Stops every recorded server whose starter no longer runs, and removes its directory (if it is one of the
/// temporary directory's own) and then its record. A record stays while its server still runs or its directory
/// could not be removed, for the next try.
pub fn stop_leftovers() {
    let Some(records) = own_records() else { return };
    let Ok(entries) = std::fs::read_dir(records) else { return };
    let Some(uid) = current_uid() else { return };
    for entry in entries.flatten() {
        let record = entry.path();
        let Ok(server) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if !entry.metadata().is_ok_and(|meta| meta.is_file() && meta.uid() == uid) {
            continue;
        }
        let Some((starter, dir)) = read_record(&record) else { continue };
        if running(starter) {
            continue;
        }
        if names(server, &dir) {
            let _ = std::process::Command::new("kill").args(["-KILL", &server.to_string()]).status();
            let gone_by = Instant::now() + Duration::from_secs(5);
            while names(server, &dir) && Instant::now() < gone_by {
                std::thread::sleep(Duration::from_millis(20));
            }
            if names(server, &dir) {
                continue;
            }
        }
        if removable(&dir, uid) && std::fs::remove_dir_all(&dir).is_err() && dir.exists() {
            continue;
        }
        let _ = std::fs::remove_file(&record);
    }
}

/// Whether `dir` is a directory of this user's directly in the temporary directory (as `tempfile` makes them), named
/// without a link or `..` on the way.
fn removable(dir: &Path, uid: u32) -> bool {
    let Ok(temp) = std::env::temp_dir().canonicalize() else { return false };
    let plain =
        dir.is_absolute() && dir.components().all(|part| matches!(part, Component::RootDir | Component::Normal(_)));
    let meta = std::fs::symlink_metadata(dir);
    plain
        && meta.is_ok_and(|meta| meta.is_dir() && meta.uid() == uid)
        && dir.parent().is_some_and(|parent| parent == temp)
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether process `pid` runs with `dir` in its command line or its environment, whole (followed by the end of an
/// argument or a value, or by `/`): a zombie has neither.
fn names(pid: u32, dir: &Path) -> bool {
    let dir = dir.as_os_str().as_encoded_bytes();
    let whole = |text: &[u8]| {
        (0..text.len().saturating_sub(dir.len() - 1))
            .any(|at| text[at..].starts_with(dir) && matches!(text.get(at + dir.len()), None | Some(b'\0' | b'/')))
    };
    !dir.is_empty()
        && ["cmdline", "environ"]
            .iter()
            .any(|what| std::fs::read(format!("/proc/{pid}/{what}")).is_ok_and(|text| whole(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;

    /// A stand-in server: `sleep` for a minute at most, killed when this is dropped (a failed assertion leaves
    /// nothing running).
    struct StandIn(std::process::Child);

    impl StandIn {
        /// One with `dir` in its command line (as garage has its configuration's path), or in its environment only
        /// (as a gateway has its data directory).
        fn naming(dir: &Path, in_environment: bool) -> Self {
            let mut command = std::process::Command::new("sleep");
            if in_environment {
                command.env("CUSTODIA_DATA_DIR", dir);
            } else {
                command.arg0(dir);
            }
            Self(command.arg("60").spawn().expect("sleep starts"))
        }

        fn id(&self) -> u32 {
            self.0.id()
        }

        /// Whether it was ended by a signal within 10 s.
        fn killed(&mut self) -> bool {
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if let Some(status) = self.0.try_wait().expect("the child's state") {
                    return std::os::unix::process::ExitStatusExt::signal(&status).is_some();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        }

        fn runs(&mut self) -> bool {
            self.0.try_wait().expect("the child's state").is_none()
        }
    }

    impl Drop for StandIn {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A process id that ran and is gone.
    fn gone() -> u32 {
        let mut child = std::process::Command::new("true").spawn().expect("true starts");
        child.wait().expect("true ends");
        child.id()
    }

    fn write_record(server: u32, starter: u32, dir: &Path) -> PathBuf {
        let record = own_records().expect("the records' directory").join(server.to_string());
        std::fs::write(&record, format!("{starter}\n{}\n", dir.display())).expect("a record");
        record
    }

    /// A directory directly in the temporary directory, removed when the test ends if it is still there.
    fn temporary() -> tempfile::TempDir {
        tempfile::tempdir_in(std::env::temp_dir().canonicalize().expect("the temporary directory"))
            .expect("a directory")
    }

    /// (This also stops what earlier runs on this machine left behind, as the harness's first server would.)
    #[test]
    fn a_server_whose_starter_is_gone_is_stopped_and_its_directory_removed_and_no_other() {
        let orphaned = temporary();
        std::fs::write(orphaned.path().join("data"), b"left behind").expect("a file");
        let mut orphan = StandIn::naming(orphaned.path(), false);
        let orphan_record = write_record(orphan.id(), gone(), orphaned.path());
        let orphaned_gateway = temporary();
        let mut orphaned_gateway_server = StandIn::naming(orphaned_gateway.path(), true);
        let orphaned_gateway_record = write_record(orphaned_gateway_server.id(), gone(), orphaned_gateway.path());

        // Started by a process that still runs (this one): left alone.
        let kept = temporary();
        let mut kept_server = StandIn::naming(kept.path(), false);
        let kept_record = record(kept_server.id(), kept.path());

        // A record whose process id now belongs to a process that names its directory only as the start of a longer
        // name: that process is left alone; the record goes, and the directory.
        let unrelated = temporary();
        let mut stranger = StandIn::naming(Path::new(&format!("{}-other", unrelated.path().display())), false);
        let stranger_record = write_record(stranger.id(), gone(), unrelated.path());

        // Directories not directly in the temporary directory, or named through `..`, stay; their records go.
        let nested = temporary();
        let inner = nested.path().join("inner");
        std::fs::create_dir(&inner).expect("a directory");
        let nested_record = write_record(gone(), gone(), &inner);
        let dotted = nested.path().join("inner/..");
        let dotted_record = write_record(gone() + 1, gone(), &dotted);

        stop_leftovers();

        assert!(orphan.killed(), "the orphan was killed");
        assert!(!orphaned.path().exists() && !orphan_record.exists());
        assert!(orphaned_gateway_server.killed(), "the orphaned gateway was killed");
        assert!(!orphaned_gateway.path().exists() && !orphaned_gateway_record.exists());
        assert!(stranger.runs(), "the stranger runs on");
        assert!(!stranger_record.exists() && !unrelated.path().exists());
        assert!(kept_server.runs(), "the kept server runs on");
        assert!(kept.path().exists() && kept_record.record.exists());
        assert!(inner.exists() && nested.path().exists() && !nested_record.exists() && !dotted_record.exists());

        let kept_at = kept_record.record.clone();
        drop(kept_record);
        assert!(!kept_at.exists(), "a dropped record is removed");
    }
}
