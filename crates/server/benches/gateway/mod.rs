//! What the gateway benchmarks share: a release gateway started on loopback with a fresh data directory, set up
//! through its HTTP API with curl as a client would, an upload as a provider makes it, and the process's memory
//! and CPU time read from `/proc`.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use custodia_benchkit::{BoxError, clock_ticks_per_second, cpu_ticks};
use serde_json::{Value, json};

/// The case every benchmark sets up and uploads into.
pub const CASE: &str = "bench";
/// The password of the account [`set_up`] makes.
pub const PASSWORD: &str = "bench-password-0123456789";

pub fn sha256sum(path: &Path) -> Result<String, BoxError> {
    let output = Command::new("sha256sum").arg(path).output()?;
    if !output.status.success() {
        return Err(format!("sha256sum failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let stdout = String::from_utf8(output.stdout)?;
    let digest = stdout.split_whitespace().next().ok_or("sha256sum printed nothing")?;
    Ok(digest.to_owned())
}

// The gateway

pub struct Server {
    pub child: Child,
    /// The gateway's record while it runs, so that a bench killed before it could stop it has the next one stop it
    /// (`custodia_tests::leftovers`).
    _recorded: custodia_tests::leftovers::Recorded,
    pub base: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// A loopback port free now and not handed out before in this process, for a gateway whose address must be known
/// before it starts.
pub use custodia_tests::free_port;

impl Server {
    pub fn start(binary: &Path, data_dir: &Path) -> Result<Self, BoxError> {
        Self::start_on(binary, data_dir, free_port(), &[])
    }

    /// [`Self::start`] on `port`, with the extra environment `env`.
    pub fn start_on(binary: &Path, data_dir: &Path, port: u16, env: &[(&str, String)]) -> Result<Self, BoxError> {
        fs::create_dir_all(data_dir)?;
        let log = data_dir.with_extension("log");
        let output = File::create(&log)?;
        let child = Command::new(binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("CUSTODIA_DATA_DIR", data_dir)
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()?;
        let _recorded = custodia_tests::leftovers::record(child.id(), data_dir);
        let base = format!("http://127.0.0.1:{port}");
        let mut server = Self { child, _recorded, base, data_dir: data_dir.into(), log };
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("the gateway exited at start ({status}):\n{}", server.log_text()).into());
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("the gateway did not listen within 60 s:\n{}", server.log_text()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "gateway {} listening on {} after {:.2} s",
            server.child.id(),
            server.base,
            started.elapsed().as_secs_f64()
        );
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the gateway and returns its log.
    pub fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log_text()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl with `args`, returning the HTTP status and the response body.
pub fn curl(args: &[&str]) -> Result<(u16, String), BoxError> {
    let output = Command::new("curl").args(["-sS", "-w", "\n%{http_code}"]).args(args).output()?;
    if !output.status.success() {
        return Err(
            format!("curl {args:?} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr)).into()
        );
    }
    let text = String::from_utf8(output.stdout)?;
    let (body, status) = text.rsplit_once('\n').ok_or("curl printed no status")?;
    Ok((status.trim().parse()?, body.to_owned()))
}

/// Sends `body` as JSON with `method` and returns the response's JSON, insisting on `expected` status.
pub fn call(method: &str, url: &str, body: &Value, extra: &[&str], expected: u16) -> Result<Value, BoxError> {
    let body = body.to_string();
    // Signed in by cookie, as the gateway's own pages are (it refuses cross-site requests that change something).
    let mut args = vec![
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
        "-H",
        "Sec-Fetch-Site: same-origin",
        "--data-binary",
        &body,
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let (status, text) = curl(&args)?;
    if status != expected {
        return Err(format!("{method} {url}: {status}, not {expected}: {text}").into());
    }
    if text.trim().is_empty() { Ok(Value::Null) } else { Ok(serde_json::from_str(&text)?) }
}

pub fn text_field(value: &Value, field: &str) -> Result<String, BoxError> {
    value.get(field).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| format!("no {field} in {value}").into())
}

/// Signs the administrator in, makes a prosecutor on a new case, and mints the prosecutor a read+write token.
pub fn set_up(server: &Server, dir: &Path) -> Result<String, BoxError> {
    let base = &server.base;
    let admin_password = fs::read_to_string(server.data_dir.join("keys").join("initial-admin-password"))?;
    let admin_jar = dir.join("admin.cookies").display().to_string();
    let user_jar = dir.join("user.cookies").display().to_string();
    let session = format!("{base}/api/v1/session");
    call("POST", &session, &json!({"username": "admin", "password": admin_password.trim()}), &["-c", &admin_jar], 200)?;
    let admin = ["-b", admin_jar.as_str()];
    let account = call(
        "POST",
        &format!("{base}/api/v1/accounts"),
        &json!({"username": "provider", "display_name": "Bench Provider", "password": PASSWORD, "jurisdiction": "NL"}),
        &admin,
        201,
    )?;
    let account = text_field(&account, "id")?;
    call("POST", &format!("{base}/api/v1/cases"), &json!({"id": CASE, "title": "Benchmark"}), &admin, 201)?;
    let member = format!("{base}/api/v1/cases/{CASE}/members/{account}");
    call("PUT", &member, &json!({"role": "prosecutor"}), &admin, 204)?;
    call("POST", &session, &json!({"username": "provider", "password": PASSWORD}), &["-c", &user_jar], 200)?;
    let token = call(
        "POST",
        &format!("{base}/api/v1/tokens"),
        &json!({"scopes": ["read", "write"], "expires_in_seconds": 3600}),
        &["-b", &user_jar],
        201,
    )?;
    text_field(&token, "token")
}

// The upload

/// What one process looked like at one moment, from `/proc`.
#[derive(Clone, Copy, Default)]
pub struct ProcSample {
    /// Peak resident set since the process started.
    pub hwm: u64,
    pub rss: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    /// Bytes the process passed to write(2) and friends.
    pub wchar: u64,
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    let io = fs::read_to_string(format!("/proc/{pid}/io"))?;
    let wchar =
        io.lines().find_map(|line| line.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    Ok(ProcSample {
        hwm: kib("VmHWM:"),
        rss: kib("VmRSS:"),
        rss_anon: kib("RssAnon:"),
        rss_file: kib("RssFile:"),
        wchar,
        cpu_ticks: cpu_ticks(&format!("/proc/{pid}/stat"), 14)?,
    })
}

/// One upload.
pub struct Run {
    /// The SHA-256 of what was uploaded, in hex.
    pub digest: String,
    pub wall: Duration,
    /// From the start until the gateway had written every byte of the body (to its staging object).
    pub streamed: Option<Duration>,
    pub gateway_cpu: f64,
    pub curl_cpu: f64,
}

/// Uploads `input` once, returning what it took and the highest VmRSS sampled meanwhile.
pub fn upload(
    server: &Server,
    dir: &Path,
    input: &Path,
    digest: &str,
    bytes: u64,
    token: &str,
) -> Result<(Run, u64), BoxError> {
    let pid = server.pid();
    let ticks = clock_ticks_per_second();
    let url = format!(
        "{}/api/v1/cases/{CASE}/artefacts?purpose=ingest%20benchmark&filename=evidence.webm&sha256={digest}",
        server.base
    );
    let authorization = format!("Authorization: Bearer {token}");
    let input = input.display().to_string();
    let response_file = dir.join("response.json");
    let response_path = response_file.display().to_string();

    let before = sample(pid)?;
    let children_before = cpu_ticks("/proc/self/stat", 16)?;
    let running = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let sampler = {
        let running = Arc::clone(&running);
        std::thread::spawn(move || {
            let mut peak = before.rss;
            let mut streamed = None;
            while running.load(Ordering::Relaxed) {
                if let Ok(now) = sample(pid) {
                    peak = peak.max(now.rss);
                    if streamed.is_none() && now.wchar >= before.wchar + bytes {
                        streamed = Some(started.elapsed());
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (peak, streamed)
        })
    };
    let output = Command::new("curl")
        .args(["-sS", "-X", "POST", "-T", &input, "-H", "Content-Type: video/webm", "-H", "Expect:"])
        .args(["-H", &authorization, "-o", &response_path, "-w", "%{http_code}", &url])
        .output();
    let wall = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let (peak, streamed) = sampler.join().map_err(|_| "the sampler panicked")?;
    let output = output?;
    let after = sample(pid)?;
    let children_after = cpu_ticks("/proc/self/stat", 16)?;

    let status = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let body = fs::read_to_string(&response_file).unwrap_or_default();
    if !output.status.success() || status != "201" {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("upload: curl {}, HTTP {status}: {body}{stderr}", output.status).into());
    }
    let response: Value = serde_json::from_str(&body)?;
    if response.get("sha256").and_then(Value::as_str) != Some(digest) || response.get("size") != Some(&json!(bytes)) {
        return Err(format!("the gateway registered something else: {response}").into());
    }
    let run = Run {
        digest: digest.to_owned(),
        wall,
        streamed,
        gateway_cpu: after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / ticks,
        curl_cpu: children_after.saturating_sub(children_before) as f64 / ticks,
    };
    Ok((run, peak))
}
