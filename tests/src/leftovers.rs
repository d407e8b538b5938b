//! The servers a test or benchmark process started (garage, PostgreSQL), recorded on disk while they run, so that
//! a process killed before it could stop them (a signal skips `Drop`) does not leave them running, and their
//! directories filling the disk: the next process that starts one stops those whose starter is gone, and removes
//! their directories.
//!
//! A record is a file named after the server's process id in `custodia-test-servers` under the temporary
//! directory, holding the starter's process id and the server's directory, a line each. A server is stopped only if
//! its command line or its environment still names that directory (a process id since given to another program is
//! left alone), and a directory is removed only if it lies under the temporary directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A server recorded as started by this process; the record goes when this is dropped (the server stopped).
#[derive(Debug)]
pub struct Recorded {
    record: PathBuf,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.record);
    }
}

fn records() -> PathBuf {
    std::env::temp_dir().join("custodia-test-servers")
}

/// Records that this process started server `pid`, whose files are under `dir` (which its command line or its
/// environment names),
/// having first stopped the servers whose starters are gone.
pub fn record(pid: u32, dir: &Path) -> Recorded {
    stop_leftovers();
    let records = records();
    let record = records.join(pid.to_string());
    // A test goes on without its record: it only helps a later run clean up after a killed one.
    let _ = std::fs::create_dir_all(&records)
        .and_then(|()| std::fs::write(&record, format!("{}\n{}\n", std::process::id(), dir.display())));
    Recorded { record }
}

/// Stops every recorded server whose starter no longer runs, and removes its directory and its record.
pub fn stop_leftovers() {
    let Ok(entries) = std::fs::read_dir(records()) else { return };
    for entry in entries.flatten() {
        let record = entry.path();
        let Ok(server) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(text) = std::fs::read_to_string(&record) else { continue };
        let mut lines = text.lines();
        let (Some(Ok(starter)), Some(dir)) = (lines.next().map(str::parse::<u32>), lines.next().map(PathBuf::from))
        else {
            continue;
        };
        if running(starter) {
            continue;
        }
        if names(server, &dir) {
            let _ = std::process::Command::new("kill").args(["-KILL", &server.to_string()]).status();
            let gone_by = Instant::now() + Duration::from_secs(5);
            while names(server, &dir) && Instant::now() < gone_by {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let temp = std::env::temp_dir();
        if dir.starts_with(&temp) && dir != temp {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = std::fs::remove_file(&record);
    }
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether process `pid` runs with `dir` in its command line or its environment (a zombie has neither).
fn names(pid: u32, dir: &Path) -> bool {
    let dir = dir.as_os_str().as_encoded_bytes();
    !dir.is_empty()
        && ["cmdline", "environ"].iter().any(|what| {
            std::fs::read(format!("/proc/{pid}/{what}"))
                .is_ok_and(|text| text.windows(dir.len()).any(|window| window == dir))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in server: a shell that sleeps a minute at most, killed when this is dropped (a failed assertion
    /// leaves nothing running).
    struct StandIn(std::process::Child);

    impl StandIn {
        /// One with `dir` in its command line (as garage has its configuration's path), or in its environment only
        /// (as a gateway has its data directory).
        fn naming(dir: &Path, in_environment: bool) -> Self {
            let mut command = std::process::Command::new("sh");
            command.args(["-c", "i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"]);
            if in_environment {
                command.env("CUSTODIA_DATA_DIR", dir);
            } else {
                command.arg(dir);
            }
            let child = command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("sh starts");
            Self(child)
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
        std::fs::create_dir_all(records()).expect("the records' directory");
        let record = records().join(server.to_string());
        std::fs::write(&record, format!("{starter}\n{}\n", dir.display())).expect("a record");
        record
    }

    #[test]
    fn a_server_whose_starter_is_gone_is_stopped_and_its_directory_removed_and_no_other() {
        let orphaned_dir = tempfile::tempdir().expect("a directory").keep();
        std::fs::write(orphaned_dir.join("data"), b"left behind").expect("a file");
        let mut orphan = StandIn::naming(&orphaned_dir, false);
        let orphan_record = write_record(orphan.id(), gone(), &orphaned_dir);
        let orphaned_gateway_dir = tempfile::tempdir().expect("a directory").keep();
        let mut orphaned_gateway = StandIn::naming(&orphaned_gateway_dir, true);
        let orphaned_gateway_record = write_record(orphaned_gateway.id(), gone(), &orphaned_gateway_dir);

        // Started by a process that still runs (this one): left alone.
        let kept_dir = tempfile::tempdir().expect("a directory");
        let mut kept = StandIn::naming(kept_dir.path(), false);
        let kept_record = record(kept.id(), kept_dir.path());

        // A record whose process id now belongs to a process that does not name its directory: that process is
        // left alone, the record goes.
        let mut stranger = StandIn::naming(Path::new("/nowhere-in-particular"), false);
        let unrelated_dir = tempfile::tempdir().expect("a directory").keep();
        let stranger_record = write_record(stranger.id(), gone(), &unrelated_dir);

        stop_leftovers();

        assert!(orphan.killed(), "the orphan was killed");
        assert!(!orphaned_dir.exists() && !orphan_record.exists());
        assert!(orphaned_gateway.killed(), "the orphaned gateway was killed");
        assert!(!orphaned_gateway_dir.exists() && !orphaned_gateway_record.exists());
        assert!(stranger.runs(), "the stranger runs on");
        assert!(!stranger_record.exists() && !unrelated_dir.exists());
        assert!(kept.runs(), "the kept server runs on");
        assert!(kept_dir.path().exists() && kept_record.record.exists());

        let kept_at = kept_record.record.clone();
        drop(kept_record);
        assert!(!kept_at.exists(), "a dropped record is removed");
    }
}
