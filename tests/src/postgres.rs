//! A throwaway PostgreSQL server from Debian's binaries (`postgresql` in scripts/test-packages.txt), on a free
//! loopback port, with its own data directory; stopped on drop. It can be stopped as a crash would and started
//! again on the same data and port.

use std::path::PathBuf;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// PostgreSQL refuses to run as root; as root, run it as the `postgres` user that Debian's package creates.
fn as_postgres(program: &str) -> std::process::Command {
    let program = format!("{PG_BIN}/{program}");
    let running_as_root = std::process::Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout == b"0\n");
    if running_as_root {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--", &program]);
        command
    } else {
        std::process::Command::new(program)
    }
}

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct TempPostgres {
    dir: tempfile::TempDir,
    options: String,
    /// The running server's record (see [`crate::leftovers`]).
    recorded: std::sync::Mutex<Option<crate::leftovers::Recorded>>,
    /// `postgres://custodia@127.0.0.1:<port>/postgres`, trusted on loopback.
    pub url: String,
}

impl TempPostgres {
    /// Makes a database cluster and starts a server on it.
    pub fn start() -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        assert!(
            std::path::Path::new(PG_BIN).join("initdb").exists(),
            "PostgreSQL 15 server binaries are missing; run scripts/setup-system.sh test"
        );
        let dir = tempfile::tempdir().expect("a directory for PostgreSQL");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("permissions");
        let data = dir.path().join("data");
        let status = as_postgres("initdb")
            .args(["-D", data.to_str().expect("a UTF-8 path"), "-U", "custodia", "--auth=trust", "-E", "UTF8"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        let port = crate::free_port();
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on", dir.path().display());
        let url = format!("postgres://custodia@127.0.0.1:{port}/postgres");
        let server = TempPostgres { url, dir, options, recorded: std::sync::Mutex::default() };
        server.run();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self) {
        let log = self.dir.path().join("server.log");
        let status = as_postgres("pg_ctl")
            .args(["-D", self.data().to_str().expect("a UTF-8 path"), "-o", &self.options])
            .args(["-l", log.to_str().expect("a UTF-8 path"), "-w", "start"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl start failed: {}", std::fs::read_to_string(&log).unwrap_or_default());
        let recorded = self.pid().map(|pid| crate::leftovers::record(pid, self.dir.path()));
        *self.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = recorded;
    }

    /// The server's process id (the postmaster's, from its `postmaster.pid`), while it runs: its backends are its
    /// children.
    pub fn pid(&self) -> Option<u32> {
        let file = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        file.lines().next()?.trim().parse().ok()
    }

    /// Stops the server at once, as a crash would (`-m immediate`): no clean shutdown.
    pub fn stop(&self) {
        let _ = as_postgres("pg_ctl")
            .args(["-D", self.data().to_str().expect("a UTF-8 path"), "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
        self.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }

    /// Starts it again on the same data and port, once it answers.
    pub fn restart(&self) {
        self.stop();
        self.run();
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
