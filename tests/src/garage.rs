//! A real garage S3 server on loopback, for the tests that need an S3-compatible object store: one node, its own
//! directory, a bucket and a key, stopped (and its directory removed) when dropped.
//!
//! The binary is garage 2.5.0 from crates.io, built once by `scripts/garage.sh` into the user's cache
//! (`~/.cache/custodia/garage-2.5.0/bin/garage`; `./x test` runs the script and passes the path in `CUSTODIA_GARAGE`).
//! A test that needs it fails, saying how to get it, rather than passing without it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;

use crate::free_port;
use crate::leftovers::Recorded;

/// The garage binary: `CUSTODIA_GARAGE`, else the cache `scripts/garage.sh` builds into.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CUSTODIA_GARAGE") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let path = cache.join("custodia/garage-2.5.0/bin/garage");
    assert!(
        path.exists(),
        "garage is not built: run scripts/garage.sh (./x test does), or set CUSTODIA_GARAGE; looked at {}",
        path.display()
    );
    path
}

/// A running single-node garage with one bucket.
pub struct Garage {
    /// The server while it runs, with its record (see [`crate::leftovers`]).
    child: std::sync::Mutex<Option<(Child, Recorded)>>,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// `http://127.0.0.1:<port>`, the S3 API.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for Garage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Garage").field("endpoint", &self.endpoint).field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom(buffer: &mut [u8]) {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buffer)).expect("/dev/urandom");
}

impl Garage {
    /// Starts garage, lays out its one node, and makes a bucket with a key that may read and write it.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory for garage");
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let root = dir.path().display();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{root}/meta\"\ndata_dir = \"{root}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{}\"\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"{}\"\n",
                random_hex(32),
                random_hex(16)
            ),
        )
        .expect("garage's configuration");
        let mut garage = Garage {
            child: std::sync::Mutex::new(None),
            dir,
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: "garage".to_owned(),
            bucket: "custodia".to_owned(),
            key_id: String::new(),
            secret: String::new(),
        };
        garage.run_server();
        // `node id` reads the node's key from disk and answers before the server listens; `status` asks the server.
        garage.cli_until_ok(&["status"]);
        let node = garage.cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap_or_default().to_owned();
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        let key = garage.cli(&["key", "create", "custodia-test"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in garage's answer: {key}"))
        };
        garage.key_id = field("Key ID:");
        garage.secret = field("Secret key:");
        garage.cli(&["bucket", "create", &garage.bucket.clone()]);
        garage.cli(&["bucket", "allow", "--read", "--write", "--owner", "custodia", "--key", "custodia-test"]);
        garage
    }

    fn run_server(&self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("garage's log");
        let child = Command::new(binary())
            .args(["-c", self.config.to_str().expect("a UTF-8 path"), "server"])
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("garage starts");
        let recorded = crate::leftovers::record(child.id(), self.dir.path());
        *self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((child, recorded));
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(|(child, _)| child.id())
    }

    /// Stops the server (as a crash would: SIGKILL), keeping its data.
    pub fn kill(&self) {
        if let Some((mut child, _recorded)) =
            self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data and ports, and waits until it answers.
    pub fn restart(&self) {
        self.kill();
        self.run_server();
        self.cli_until_ok(&["status"]);
    }

    /// Runs the garage CLI against this server; panics, with what it said, if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        match self.try_cli(args) {
            Ok(out) => out,
            Err(said) => panic!("garage {args:?} failed: {said}\n{}", self.server_log()),
        }
    }

    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(binary())
            .args(["-c", self.config.to_str().expect("a UTF-8 path")])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// The CLI, retried for up to 30 s while the server starts.
    fn cli_until_ok(&self, args: &[&str]) -> String {
        let start = Instant::now();
        loop {
            match self.try_cli(args) {
                Ok(out) => return out,
                Err(said) if start.elapsed() > Duration::from_secs(30) => {
                    panic!("garage {args:?} still failing after 30 s: {said}\n{}", self.server_log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Where garage keeps its data.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// An `object_store` client for the bucket, asking for create-only writes the way S3 does (as the gateway does).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region(&self.region)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
            .with_copy_if_not_exists(object_store::aws::S3CopyIfNotExists::Multipart)
            .build()
            .expect("an S3 client for garage");
        Arc::new(store)
    }

    /// The gateway's settings for this bucket, as environment variables.
    pub fn gateway_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CUSTODIA_S3_BUCKET", self.bucket.clone()),
            ("CUSTODIA_S3_ENDPOINT", self.endpoint.clone()),
            ("CUSTODIA_S3_REGION", self.region.clone()),
            ("CUSTODIA_S3_ACCESS_KEY_ID", self.key_id.clone()),
            ("CUSTODIA_S3_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
    }
}
