//! A gateway on its embedded defaults in a temporary directory, driven in-process with `oneshot`.

#![allow(dead_code)] // Each test binary uses a different part of this.

/// A real local Time-Stamp Authority made with the openssl CLI (shared with custodia-timestamp's tests).
#[path = "../../../timestamp/tests/support/mod.rs"]
pub mod authority;
pub mod tsa;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use custodia_ledger::LogVerifier;
use custodia_server::config::ServeConfig;
use custodia_server::state::AppState;
use custodia_service::clock::Clock;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

pub struct TestGateway {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub clock: Clock,
    pub admin: String,
    /// Every free text sent to this gateway, looked for in its log when the test ends.
    pub sent: FreeTexts,
}

/// The free texts a test sent to a gateway, in request bodies, query strings, upload metadata, use policies and
/// case paths: whatever a person could type (a title, a purpose, a note, a place, a name, a case id). When the
/// test ends without failing, none of them may be found in the bytes of any entry tile of the gateway's log, the
/// log that anyone can read and that nobody can change: so every test of the suite that drives an in-process
/// gateway is also a test that nothing typed reaches the public log. `tests/public_log.rs` does the same against
/// a real process over HTTP.
///
/// Words made only of lower-case letters and underscores (a role, a scope, a kind, `witness`) are the log's own
/// vocabulary and are not looked for, nor texts shorter than 6 characters or made only of hex digits.
pub struct FreeTexts {
    log_dir: std::path::PathBuf,
    texts: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// The JSON members and query parameters whose values a person types.
const FREE_TEXT_FIELDS: &[&str] = &[
    "title",
    "note",
    "place",
    "contact",
    "display_name",
    "username",
    "provider",
    "permitted_purposes",
    "permitted_recipients",
    "purposes",
    "recipients",
    "purpose",
    "filename",
    "reason",
    "text",
    "officer_name",
    "site",
];

impl FreeTexts {
    pub fn new(log_dir: std::path::PathBuf) -> Self {
        Self { log_dir, texts: Default::default() }
    }

    /// Remembers `text` if it is free text worth looking for.
    pub fn remember(&self, text: &str) {
        let vocabulary = text.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        let hex = text.chars().all(|c| c.is_ascii_hexdigit());
        if text.chars().count() >= 6 && !vocabulary && !hex {
            self.texts.lock().unwrap().insert(text.to_owned());
        }
    }

    /// Remembers the free texts of a JSON value: every string under a free-text member, at any depth.
    fn remember_json(&self, value: &Value, free: bool) {
        match value {
            Value::String(text) if free => self.remember(text),
            Value::Array(items) => items.iter().for_each(|item| self.remember_json(item, free)),
            Value::Object(members) => {
                for (name, member) in members {
                    self.remember_json(member, free || FREE_TEXT_FIELDS.contains(&name.as_str()));
                }
            }
            _ => {}
        }
    }

    /// Remembers what a request carries: its case id, free-text query parameters, upload metadata, a use policy
    /// header and, for JSON, its body.
    fn remember_request(&self, parts: &axum::http::request::Parts, body: Option<&[u8]>) {
        let path = parts.uri.path();
        if let Some(rest) = path.strip_prefix("/api/v1/cases/") {
            self.remember(rest.split('/').next().unwrap_or_default());
        }
        if let Ok(axum::extract::Query(pairs)) = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        {
            for (name, value) in pairs {
                if FREE_TEXT_FIELDS.contains(&name.as_str()) {
                    self.remember(&value);
                }
            }
        }
        if let Some(metadata) = parts.headers.get("upload-metadata").and_then(|value| value.to_str().ok()) {
            use base64::Engine as _;
            for pair in metadata.split(',') {
                let mut words = pair.trim().splitn(2, ' ');
                let (name, value) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
                let decoded = base64::engine::general_purpose::STANDARD.decode(value).unwrap_or_default();
                if FREE_TEXT_FIELDS.contains(&name) || name == "case" {
                    self.remember(&String::from_utf8_lossy(&decoded));
                }
            }
        }
        if let Some(policy) = parts.headers.get("custodia-use-policy").and_then(|value| value.to_str().ok())
            && let Ok(policy) = serde_json::from_str::<Value>(policy)
        {
            self.remember_json(&policy, false);
        }
        if let Some(body) = body
            && let Ok(value) = serde_json::from_slice::<Value>(body)
        {
            let creates_case = parts.method == axum::http::Method::POST && path == "/api/v1/cases";
            if creates_case && let Some(id) = value["id"].as_str() {
                self.remember(id);
            }
            self.remember_json(&value, false);
        }
    }

    /// Whether `text` was remembered.
    pub fn holds(&self, text: &str) -> bool {
        self.texts.lock().unwrap().contains(text)
    }

    /// Stops looking for `text`.
    pub fn forget(&self, text: &str) {
        self.texts.lock().unwrap().remove(text);
    }

    /// The remembered texts found in the log's entry tiles, with the tile each was found in.
    pub fn found_in_log(&self) -> Vec<(String, std::path::PathBuf)> {
        let texts = self.texts.lock().unwrap();
        let mut found = Vec::new();
        let mut pending = vec![self.log_dir.join("tile/entries")];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    for text in texts.iter() {
                        if bytes.windows(text.len()).any(|window| window == text.as_bytes()) {
                            found.push((text.clone(), path.clone()));
                        }
                    }
                }
            }
        }
        found
    }
}

impl Drop for FreeTexts {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let found = self.found_in_log();
        assert!(found.is_empty(), "free text the test sent is in the public log: {found:?}");
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Checks an RFC 9457 problem: status, stable type, and a detail that says what is wrong.
    pub fn assert_problem(&self, status: u16, kind: &str, detail_contains: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/problem+json");
        let problem = self.json();
        assert_eq!(problem["type"], format!("https://custodia.invalid/problems/{kind}"), "{problem}");
        assert_eq!(problem["status"], status);
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(detail_contains), "detail {detail:?} lacks {detail_contains:?}");
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum As<'a> {
    Session(&'a str),
    Token(&'a str),
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A gateway on the defaults as changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::default();
        let mut config = ServeConfig::with_data_dir(dir.path());
        // Peers in tests are on this machine: answers announce loopback, which production never does.
        config.media.addresses = custodia_server::config::MediaAddresses::Loopback;
        // This process is the test harness: media is probed by the custodia binary.
        config.probe.program = Some(env!("CARGO_BIN_EXE_custodia").into());
        configure(&mut config);
        let state = custodia_server::startup::open(&config, clock.clone()).await.unwrap();
        let password = std::fs::read_to_string(dir.path().join("keys/initial-admin-password")).unwrap();
        let mut gateway = Self::over(dir, state, clock, config.gateway.log_dir());
        gateway.admin = gateway.sign_in("admin", password.trim()).await;
        gateway
    }

    /// A gateway opened on `dir` (its log in `log_dir`), not yet signed in.
    pub fn over(dir: tempfile::TempDir, state: AppState, clock: Clock, log_dir: std::path::PathBuf) -> Self {
        Self { dir, state, clock, admin: String::new(), sent: FreeTexts::new(log_dir) }
    }

    pub fn verifier(&self) -> LogVerifier {
        let key = std::fs::read_to_string(self.dir.path().join("keys/gateway.key")).unwrap();
        custodia_ledger::LogSigner::from_skey(&key).unwrap().verifier()
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let (parts, body) = request.into_parts();
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/json") || value.contains("+json"));
        let body = if json {
            let bytes = body.collect().await.unwrap().to_bytes();
            self.sent.remember_request(&parts, Some(&bytes));
            Body::from(bytes)
        } else {
            self.sent.remember_request(&parts, None);
            body
        };
        let request = Request::from_parts(parts, body);
        let response = custodia_server::app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        Reply { status, headers, body }
    }

    pub fn request(method: &str, uri: &str, auth: Option<As<'_>>) -> axum::http::request::Builder {
        let builder = Request::builder().method(method).uri(uri);
        match auth {
            // As a browser on the gateway's own pages sends it (a cookie-authenticated change needs it).
            Some(As::Session(cookie)) => builder
                .header(header::COOKIE, format!("custodia_session={cookie}"))
                .header("sec-fetch-site", "same-origin"),
            Some(As::Token(token)) => builder.header(header::AUTHORIZATION, format!("Bearer {token}")),
            None => builder,
        }
    }

    pub async fn get(&self, uri: &str, auth: Option<As<'_>>) -> Reply {
        self.send(Self::request("GET", uri, auth).body(Body::empty()).unwrap()).await
    }

    pub async fn call(&self, method: &str, uri: &str, auth: Option<As<'_>>, body: Value) -> Reply {
        let request = Self::request(method, uri, auth)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    pub async fn upload(&self, case: &str, query: &str, auth: As<'_>, bytes: Vec<u8>) -> Reply {
        let uri = format!("/api/v1/cases/{case}/artefacts?{query}");
        let request = Self::request("POST", &uri, Some(auth))
            .header(header::CONTENT_TYPE, "video/webm")
            .body(Body::from(bytes))
            .unwrap();
        self.send(request).await
    }

    /// The authenticated caller behind a session, for calling the gateway's operations directly.
    pub async fn caller(&self, session: &str) -> custodia_server::auth::Caller {
        use axum::extract::FromRequestParts as _;
        let request = Self::request("GET", "/", Some(As::Session(session))).body(Body::empty()).unwrap();
        let (mut parts, _) = request.into_parts();
        custodia_server::auth::Caller::from_request_parts(&mut parts, &self.state).await.unwrap()
    }

    /// Signs in and returns the session cookie's value.
    pub async fn sign_in(&self, username: &str, password: &str) -> String {
        let reply =
            self.call("POST", "/api/v1/session", None, json!({ "username": username, "password": password })).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
        let cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
    }

    /// Creates an account through the API and signs it in. Returns (account id, session).
    pub async fn person(&self, username: &str, jurisdiction: &str) -> (String, String) {
        let password = format!("{username}-correct-horse-battery");
        let reply = self
            .call(
                "POST",
                "/api/v1/accounts",
                Some(As::Session(&self.admin)),
                json!({ "username": username, "display_name": format!("{username} name"), "password": password, "jurisdiction": jurisdiction }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
        let id = reply.json()["id"].as_str().unwrap().to_owned();
        (id, self.sign_in(username, &password).await)
    }

    pub async fn case(&self, id: &str) {
        let reply = self
            .call(
                "POST",
                "/api/v1/cases",
                Some(As::Session(&self.admin)),
                json!({ "id": id, "title": format!("R v {id}") }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    }

    pub async fn member(&self, case: &str, account: &str, role: &str) {
        let uri = format!("/api/v1/cases/{case}/members/{account}");
        let reply = self.call("PUT", &uri, Some(As::Session(&self.admin)), json!({ "role": role })).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));
    }
}

impl TestGateway {
    /// Sends raw bytes with extra headers: uploads that state a digest or a policy, bodies that are not JSON.
    pub async fn send_bytes(
        &self,
        method: &str,
        uri: &str,
        auth: Option<As<'_>>,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut request = Self::request(method, uri, auth);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    pub async fn delete(&self, uri: &str, auth: Option<As<'_>>) -> Reply {
        self.send(Self::request("DELETE", uri, auth).body(Body::empty()).unwrap()).await
    }

    /// How many entries the published checkpoint covers.
    pub fn ledger_size(&self) -> u64 {
        self.state.gateway.log().checkpoint().checkpoint.size
    }

    /// The custody record at `index`, as JSON.
    pub async fn ledger_record(&self, index: u64) -> Value {
        let entry = self.state.gateway.log().storage().entry(index, self.ledger_size()).await.unwrap();
        serde_json::from_slice(&entry).unwrap()
    }

    /// The opened text of field `field` of the custody record at `index`, as the catalog keeps it.
    pub async fn opened(&self, index: u64, field: &str) -> Option<String> {
        let entry = self.state.gateway.log().storage().entry(index, self.ledger_size()).await.unwrap();
        let openings = self.state.gateway.openings_of(&entry).await.unwrap();
        openings.text(field).map(str::to_owned)
    }

    /// Every file under `relative` in the data directory, recursively (none if it does not exist).
    pub fn files_under(&self, relative: &str) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() { walk(&path, found) } else { found.push(path) }
            }
        }
        let mut found = Vec::new();
        walk(&self.dir.path().join(relative), &mut found);
        found
    }
}

/// A `custodia serve` process of the real binary, killed on drop. Its stderr (the operator log) goes to
/// `gateway-stderr.log` beside its data directory's contents; when a test fails, the log's tail is printed. It is
/// recorded while it runs, so that if the test process is killed (a signal skips `Drop`), the next test process
/// stops it ([`custodia_tests::leftovers`]).
pub struct GatewayProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
    _recorded: custodia_tests::leftovers::Recorded,
}

/// How much of the gateway's log a failing test prints.
const LOG_TAIL_BYTES: usize = 24 * 1024;

impl GatewayProcess {
    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the gateway (as `kill -9` would) and waits until it has gone, so that another may start on its data.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The gateway's operator log so far.
    #[allow(dead_code)]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let mut start = log.len().saturating_sub(LOG_TAIL_BYTES);
            while !log.is_char_boundary(start) {
                start += 1;
            }
            eprintln!(
                "--- the gateway's log ({}), its last {} bytes:\n{}",
                self.log.display(),
                log.len() - start,
                &log[start..]
            );
        }
    }
}

/// Starts the real binary on a free loopback port with state in `data_dir` and the extra environment `env`,
/// and returns once it accepts connections.
pub fn spawn_gateway(data_dir: &std::path::Path, env: &[(&str, &std::ffi::OsStr)]) -> (GatewayProcess, u16) {
    spawn_gateway_within(data_dir, env, None)
}

/// [`spawn_gateway`], under an open-file limit of `open_files` (soft and hard, so the gateway cannot raise it).
pub fn spawn_gateway_within(
    data_dir: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
    open_files: Option<u64>,
) -> (GatewayProcess, u16) {
    let port = free_port();
    (spawn_gateway_on(data_dir, env, open_files, port), port)
}

/// A loopback port free now, for a gateway whose address others must know before it starts.
pub use custodia_tests::free_port;

/// [`spawn_gateway_within`] on a given port.
pub fn spawn_gateway_on(
    data_dir: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
    open_files: Option<u64>,
    port: u16,
) -> GatewayProcess {
    use std::time::{Duration, Instant};
    // Appended to: a test that restarts the gateway on the same data keeps both runs' logs.
    let log = data_dir.join("gateway-stderr.log");
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let mut command = match open_files {
        None => std::process::Command::new(env!("CARGO_BIN_EXE_custodia")),
        Some(limit) => {
            // `ulimit -n` in sh sets the soft and the hard limit.
            let mut command = std::process::Command::new("sh");
            command
                .arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_custodia"));
            command
        }
    };
    let child = command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("CUSTODIA_DATA_DIR", data_dir)
        // Peers in tests are on this machine: answers announce loopback, which production never does.
        .env("CUSTODIA_MEDIA_ADDRESSES", "loopback")
        .envs(env.iter().copied())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let recorded = custodia_tests::leftovers::record(child.id(), data_dir);
    let mut process = GatewayProcess { child, log, _recorded: recorded };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!("the gateway exited ({status}) before listening:\n{}", process.log());
        }
        assert!(Instant::now() < deadline, "gateway did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    process
}

/// Whether `program` runs with `args` and succeeds (a tool a test needs is installed).
#[allow(dead_code)]
pub fn installed(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What ffprobe reads of a recording segment: its codecs, sorted, and its duration in seconds.
/// Two seconds of VP8 and Opus in WebM (160×120 test pattern, a 440 Hz tone), made by the ffmpeg CLI.
#[allow(dead_code)]
pub fn webm_clip() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.webm");
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
        .args(["testsrc=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "2", "-c:v", "libvpx", "-c:a", "libopus"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs (scripts/setup-system.sh test)");
    assert!(status.success());
    std::fs::read(path).unwrap()
}

#[allow(dead_code)]
pub fn probe_media(path: &std::path::Path) -> (Vec<String>, f64) {
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_format", "-show_streams", "-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(probe.status.success(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&probe.stderr));
    let probe: Value = serde_json::from_slice(&probe.stdout).unwrap();
    let mut codecs: Vec<String> =
        probe["streams"].as_array().unwrap().iter().map(|s| s["codec_name"].as_str().unwrap().to_owned()).collect();
    codecs.sort();
    // A file with no packets has no duration (0 here; the caller says whether that is wrong).
    let duration = probe["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    (codecs, duration)
}

/// Serves the gateway on a loopback port, for peers in other processes; returns the port.
#[allow(dead_code)]
pub async fn serve_on_loopback(gateway: &TestGateway) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // As `custodia serve` does: with each client's address, which budgets per peer go by.
    let app = custodia_server::app(gateway.state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A write-scoped API token for `session`, valid for ten minutes.
#[allow(dead_code)]
pub async fn write_token(gateway: &TestGateway, session: &str) -> String {
    let reply = gateway
        .call(
            "POST",
            "/api/v1/tokens",
            Some(As::Session(session)),
            json!({ "scopes": ["write"], "expires_in_seconds": 600 }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()["token"].as_str().unwrap().to_owned()
}

/// Runs a command to completion with its output captured, or kills it and fails after `limit`; `setup` says how
/// to install what is missing when the command cannot be started.
#[allow(dead_code)]
pub fn run_for(command: &mut std::process::Command, limit: std::time::Duration, setup: &str) -> std::process::Output {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let program = format!("{:?}", command.get_program());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}; {setup}"));
    // Drain the pipes as the child writes, so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).ok();
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut buf).ok();
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (out.join().unwrap(), err.join().unwrap());
            panic!(
                "{program} did not finish within {limit:?}:\n{}{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Runs `npm ci` in `dir` (the versions its package-lock.json pins), unless `dir/installed` shows it has run.
#[allow(dead_code)]
pub fn npm_ci(dir: &std::path::Path, installed: &str, setup: &str) {
    if dir.join(installed).exists() {
        return;
    }
    let mut npm = std::process::Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    let output = run_for(&mut npm, std::time::Duration::from_secs(300), setup);
    assert!(output.status.success(), "npm ci in {} failed: {}", dir.display(), String::from_utf8_lossy(&output.stderr));
}

/// Each file in a tar: its path, where its bytes start, and its size.
#[allow(dead_code)]
pub fn tar_files(bundle: &[u8]) -> Vec<(String, u64, u64)> {
    let mut archive = tar::Archive::new(bundle);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.path().unwrap().display().to_string(), entry.raw_file_position(), entry.header().size().unwrap())
        })
        .collect()
}

/// A bundle rebuilt the way a forger would: unpacked, `edit` applied to the bag's directory, the BagIt manifests
/// made afresh with the Library of Congress `bagit` tool, and packed again with GNU tar.
pub fn rebagged(bundle: &[u8], edit: impl FnOnce(&std::path::Path)) -> Vec<u8> {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let unpacked = dir.path().join("bag");
    tar::Archive::new(bundle).unpack(&unpacked).unwrap();
    let top = std::fs::read_dir(&unpacked).unwrap().next().unwrap().unwrap().path();
    edit(&top);
    let script = "import sys, bagit; bagit.Bag(sys.argv[1]).save(manifests=True)";
    let run = Command::new("python3").args(["-c", script]).arg(&top).output().unwrap();
    assert!(
        run.status.success(),
        "bagit could not rebuild the bag (run scripts/setup-system.sh test): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = dir.path().join("forged.tar");
    let run = Command::new("tar").arg("-cf").arg(&out).arg("-C").arg(&unpacked).arg(top.file_name().unwrap()).output();
    let run = run.unwrap();
    assert!(run.status.success(), "tar: {}", String::from_utf8_lossy(&run.stderr));
    std::fs::read(out).unwrap()
}

/// A bundle whose tag files a forger edited: unpacked, `edit` applied to the bag's directory (its bag-info.txt,
/// say), only tagmanifest-sha256.txt made afresh with the `bagit` tool (so bag-info.txt is kept as edited), and
/// packed again with GNU tar.
pub fn retagged(bundle: &[u8], edit: impl FnOnce(&std::path::Path)) -> Vec<u8> {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let unpacked = dir.path().join("bag");
    tar::Archive::new(bundle).unpack(&unpacked).unwrap();
    let top = std::fs::read_dir(&unpacked).unwrap().next().unwrap().unwrap().path();
    edit(&top);
    let script = "import sys, bagit; bagit._make_tagmanifest_file('sha256', sys.argv[1])";
    let run = Command::new("python3").args(["-c", script]).arg(&top).output().unwrap();
    assert!(run.status.success(), "bagit: {}", String::from_utf8_lossy(&run.stderr));
    let out = dir.path().join("forged.tar");
    let run = Command::new("tar").arg("-cf").arg(&out).arg("-C").arg(&unpacked).arg(top.file_name().unwrap()).output();
    let run = run.unwrap();
    assert!(run.status.success(), "tar: {}", String::from_utf8_lossy(&run.stderr));
    std::fs::read(out).unwrap()
}

/// Drops every line of a bag's data/REPORT.txt that mentions `what`, as a forger tidying up would.
/// Copies the directory `from`, with all it holds, to `to` (which must not exist): an artefact bundle's directory
/// from one case bag into another.
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The artefacts whose bundles a case bundle holds, each unpacked in its directory under `data/bundles/`.
pub fn bundled_artefacts(bundle: &[u8]) -> std::collections::BTreeSet<String> {
    tar_files(bundle)
        .iter()
        .filter_map(|(path, _, _)| {
            path.split("/data/bundles/").nth(1)?.split_once('/').map(|(name, _)| name.to_owned())
        })
        .collect()
}

pub fn drop_report_lines(bag: &std::path::Path, what: &str) {
    let report = bag.join("data/REPORT.txt");
    let text = std::fs::read_to_string(&report).unwrap();
    let kept: String = text.lines().filter(|line| !line.contains(what)).map(|line| format!("{line}\n")).collect();
    assert_ne!(kept, text, "REPORT.txt does not mention {what}");
    std::fs::write(report, kept).unwrap();
}

/// The by-hand document's blocks: those for an artefact bundle (```sh) and those for a case bag (```sh case).
pub fn by_hand_blocks() -> (Vec<String>, Vec<String>) {
    let doc =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/verify-by-hand.md"))
            .unwrap();
    let blocks = |fence: &str| -> Vec<String> {
        doc.split(fence).skip(1).filter_map(|block| block.split("```").next()).map(str::to_owned).collect()
    };
    (blocks("```sh\n"), blocks("```sh case\n"))
}

/// The by-hand steps for a case bag: the artefact steps that apply (all but step 2's, about the evidence), then the
/// case steps.
pub fn by_hand_case_script() -> String {
    let (artefact_blocks, case_blocks) = by_hand_blocks();
    assert!(!case_blocks.is_empty());
    artefact_blocks
        .iter()
        .filter(|block| !block.contains("data/payload") && !block.contains("data/manifest"))
        .chain(&case_blocks)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a by-hand script with bash in `dir`, as docs/verify-by-hand.md asks (`set -euo pipefail`): whether it
/// succeeded, and what it said.
pub fn run_script(script: &str, dir: &std::path::Path) -> (bool, String) {
    by_hand(&["-euo", "pipefail", "-c"], script, dir)
}

/// Runs a by-hand script in `dir` with plain bash, as a reader who pasted it without `set -e` would.
pub fn run_script_plain(script: &str, dir: &std::path::Path) -> (bool, String) {
    by_hand(&["-c"], script, dir)
}

/// bash with `flags` on `script` in `dir`. The work directories the document's steps make (`mktemp -d`, left to
/// the reader) are made in a directory of this run's own, removed after it, rather than left in the machine's.
fn by_hand(flags: &[&str], script: &str, dir: &std::path::Path) -> (bool, String) {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let run = std::process::Command::new("bash")
        .args(flags)
        .arg(script)
        .current_dir(dir)
        .env("TMPDIR", scratch.path())
        .output()
        .expect("bash runs");
    (run.status.success(), format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr)))
}

/// An answer read off a raw connection: status, head and body.
pub struct RawAnswer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }

    /// The problem type's last word (`too-many`, ...), or "" if the body is no problem.
    pub fn problem(&self) -> String {
        let kind = self.json()["type"].as_str().unwrap_or_default().to_owned();
        kind.rsplit('/').next().unwrap_or_default().to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection to a gateway on `port` from the loopback address `source` (127.x.y.z), as another machine's.
pub async fn connect_from(source: std::net::Ipv4Addr, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((source, 0)))?;
    socket.connect(std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port))).await
}

/// Whether the server has closed `stream` (end of file or reset) within `wait`; whatever it sends is read and
/// dropped.
pub async fn closed_by_server(stream: &mut tokio::net::TcpStream, wait: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads an answer until the server closes the connection.
pub async fn read_answer(stream: &mut tokio::net::TcpStream) -> std::io::Result<RawAnswer> {
    use tokio::io::AsyncReadExt as _;
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(120), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 120 s"))??;
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no answer head in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    Ok(RawAnswer { status, head, body: raw[split + 4..].to_vec() })
}

/// One HTTP/1.1 request (`Connection: close`) from `source` to the gateway on `port`, with a `Content-Length` unless `headers` name a
/// `Transfer-Encoding`; the answer ends when the connection closes.
pub async fn http_from(
    source: std::net::Ipv4Addr,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<RawAnswer> {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = connect_from(source, port).await?;
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("transfer-encoding")) {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).await?;
    stream.write_all(body).await?;
    read_answer(&mut stream).await
}

/// Every record of the log a gateway on `port` serves, read as an outsider reads it: the checkpoint's size, then
/// the entry tiles (of the first 1,000 tiles).
pub async fn served_records(port: u16) -> Vec<Value> {
    let here = std::net::Ipv4Addr::LOCALHOST;
    let checkpoint = http_from(here, port, "GET", "/log/checkpoint", &[], b"").await.unwrap();
    assert_eq!(checkpoint.status, 200, "{}", checkpoint.text());
    let size: u64 = checkpoint.text().lines().nth(1).unwrap().parse().unwrap();
    let mut records = Vec::new();
    for tile in 0..size.div_ceil(256) {
        assert!(tile < 1000, "only tile paths of one segment are read");
        let width = (size - tile * 256).min(256);
        let path = if width == 256 {
            format!("/log/tile/entries/{tile:03}")
        } else {
            format!("/log/tile/entries/{tile:03}.p/{width}")
        };
        let bundle = http_from(here, port, "GET", &path, &[], b"").await.unwrap();
        assert_eq!(bundle.status, 200, "{path}");
        let mut rest = bundle.body.as_slice();
        while let [high, low, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*high, *low]));
            records.push(serde_json::from_slice(&tail[..len]).unwrap());
            rest = &tail[len..];
        }
    }
    assert_eq!(records.len() as u64, size);
    records
}

/// A signed-in client of a gateway process, through curl (scripts/setup-system.sh test installs it).
#[allow(dead_code)]
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub cookie: Option<String>,
}

impl Client {
    /// Sends a request; returns the status and the body.
    pub fn send(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut curl = std::process::Command::new("curl");
        curl.args(["-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", "--data-binary", "@-"])
            .args(["-H", &format!("Content-Type: {content_type}")]);
        if let Some(cookie) = &self.cookie {
            // The gateway's own pages say where they come from; a cookie client must too (the CSRF rule).
            curl.args(["-H", &format!("Cookie: custodia_session={cookie}"), "-H", "Sec-Fetch-Site: same-origin"]);
        }
        curl.arg(format!("{}{path}", self.base));
        let mut child = curl
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("curl is missing; run scripts/setup-system.sh test");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), body).unwrap();
        let output = child.wait_with_output().unwrap();
        let mut out = output.stdout;
        let Some(newline) = out.iter().rposition(|b| *b == b'\n') else { return (0, out) };
        let status = std::str::from_utf8(&out[newline + 1..]).unwrap().trim().parse().unwrap_or(0);
        out.truncate(newline);
        (status, out)
    }

    pub fn json(&self, method: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let (status, body) = self.send(method, path, "application/json", body.to_string().as_bytes());
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    pub fn sign_in(base: &str, username: &str, password: &str) -> Self {
        let output = std::process::Command::new("curl")
            .args(["-sS", "-D", "-", "-o", "/dev/null", "-H", "Content-Type: application/json", "--data-binary"])
            .arg(serde_json::json!({ "username": username, "password": password }).to_string())
            .arg(format!("{base}/api/v1/session"))
            .output()
            .unwrap();
        let headers = String::from_utf8_lossy(&output.stdout).into_owned();
        let cookie = headers
            .lines()
            .find_map(|line| line.to_ascii_lowercase().starts_with("set-cookie:").then(|| line.to_owned()))
            .unwrap_or_else(|| panic!("no session for {username}: {headers}"));
        let value = cookie.split_once('=').unwrap().1.split(';').next().unwrap().to_owned();
        Self { base: base.to_owned(), cookie: Some(value) }
    }

    /// A download of an artefact: one custody record about it.
    pub fn download(&self, artefact: &str) -> u16 {
        self.send("GET", &format!("/api/v1/artefacts/{artefact}/content?purpose=review"), "text/plain", b"").0
    }
}

/// A providing authority's use policy: Italy only, for trial preparation, onward with consent.
#[allow(dead_code)]
pub fn use_policy(provider: &str) -> Value {
    json!({
        "tlp": "TLP:AMBER", "provider": provider, "permitted_purposes": ["trial preparation"],
        "permitted_recipients": [], "permitted_jurisdictions": ["IT"], "onward_transfer": "with_consent",
    })
}

/// Uploads a recorded statement into `case` with `policy` attached (the `custodia-use-policy` header).
#[allow(dead_code)]
pub async fn upload_with_policy(gw: &TestGateway, case: &str, session: &str, policy: &Value) -> Reply {
    use base64::Engine as _;
    let request = TestGateway::request(
        "POST",
        &format!("/api/v1/cases/{case}/artefacts?purpose=statement"),
        Some(As::Session(session)),
    )
    .header("custodia-use-policy", base64::engine::general_purpose::STANDARD.encode(policy.to_string()))
    .body(Body::from(b"a recorded statement".to_vec()))
    .unwrap();
    gw.send(request).await
}

/// The gateway's settings for `garage`'s bucket.
#[allow(dead_code)]
pub fn on_garage(garage: &custodia_tests::garage::Garage, config: &mut ServeConfig) {
    config.s3.bucket = Some(garage.bucket.clone());
    config.s3.endpoint = Some(garage.endpoint.clone());
    config.s3.region = garage.region.clone();
    config.s3.access_key_id = Some(garage.key_id.clone());
    config.s3.secret_access_key = Some(garage.secret.clone());
}

/// One PostgreSQL and one garage bucket that several gateway processes share, as deployed, and the log's key that
/// each of them holds.
pub struct SharedBackends {
    pub postgres: custodia_tests::postgres::TempPostgres,
    pub garage: custodia_tests::garage::Garage,
    /// The log's signing key, for each gateway's data directory ([`data_dir_with_key`]).
    pub key: Vec<u8>,
}

impl SharedBackends {
    /// Starts both, and has `prepare` set them up (accounts, cases, artefacts) through an in-process gateway on
    /// them, which makes the log's key and then goes away; with what `prepare` returned.
    pub async fn start<T>(prepare: impl AsyncFnOnce(&TestGateway) -> T) -> (Self, T) {
        let postgres = custodia_tests::postgres::TempPostgres::start();
        let garage = custodia_tests::garage::Garage::start();
        let (prepared, key) = {
            let setup = TestGateway::start_with(|config| {
                on_garage(&garage, config);
                config.database_url = Some(postgres.url.clone());
            })
            .await;
            let prepared = prepare(&setup).await;
            (prepared, std::fs::read(setup.dir.path().join("keys/gateway.key")).unwrap())
        };
        (Self { postgres, garage, key }, prepared)
    }

    /// The settings of every gateway on them (the bucket's and the database's), then `more`.
    pub fn env(&self, more: &[(&'static str, &str)]) -> Vec<(&'static str, std::ffi::OsString)> {
        let mut env: Vec<(&'static str, std::ffi::OsString)> =
            self.garage.gateway_env().into_iter().map(|(name, value)| (name, value.into())).collect();
        env.push(("CUSTODIA_DATABASE_URL", self.postgres.url.clone().into()));
        env.extend(more.iter().map(|(name, value)| (*name, (*value).into())));
        env
    }
}

/// Settings as [`spawn_gateway`] takes them.
pub fn env_refs<'a>(env: &'a [(&'static str, std::ffi::OsString)]) -> Vec<(&'static str, &'a std::ffi::OsStr)> {
    env.iter().map(|(name, value)| (*name, value.as_os_str())).collect()
}

/// A data directory of its own holding the log's signing key `key` (owner-only), as every gateway of one log has.
#[allow(dead_code)]
pub fn data_dir_with_key(key: &[u8]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/gateway.key"), key).unwrap();
    std::fs::set_permissions(dir.path().join("keys/gateway.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

/// A hearing room's WebSocket, as a test's client holds it.
pub type RoomSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message on a room socket that is not a `state` broadcast.
pub async fn room_message(socket: &mut RoomSocket) -> Value {
    use futures::StreamExt as _;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(60), socket.next())
            .await
            .expect("a room message within a minute")
            .expect("the room is open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] != "state" {
                return value;
            }
        }
    }
}

/// Opens the room at `url` and says `hello`; returns the first answer (`welcome` or `refused`) and the socket.
pub async fn room_enter(url: &str, hello: Value) -> (Value, RoomSocket) {
    use futures::SinkExt as _;
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    socket.send(hello.to_string().into()).await.unwrap();
    (room_message(&mut socket).await, socket)
}

/// libfaketime's preload library (Debian's `libfaketime`, installed by scripts/setup-system.sh test).
pub fn libfaketime() -> std::path::PathBuf {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    let found = candidates.iter().map(std::path::PathBuf::from).find(|path| path.exists());
    found.expect("libfaketime (apt-get install faketime; scripts/setup-system.sh test installs it)")
}

/// An SDP offer from aiortc (an independent WebRTC peer) with an audio and a video track to send, its candidates
/// gathered, as a WHIP publisher sends it; or `None`, saying so, when aiortc is not installed.
pub fn aiortc_offer() -> Option<String> {
    const OFFER: &str = r#"
import asyncio
from aiortc import RTCPeerConnection

async def main():
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    print(pc.localDescription.sdp)
    await pc.close()

asyncio.run(main())
"#;
    if !installed("python3", &["-c", "import aiortc"]) {
        eprintln!("SKIPPED (the WHIP part): aiortc is not installed (scripts/setup-system.sh test)");
        return None;
    }
    let made = std::process::Command::new("python3").args(["-c", OFFER]).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    Some(String::from_utf8(made.stdout).unwrap().replace("\r\n", "\n").replace('\n', "\r\n"))
}

/// How many more tokens a budget of `per_minute` can have refilled since `started`, at most: budgets refill with
/// real time as well as with the test clock's moves, and a busy machine makes a test's steps take longer.
pub fn refilled_since(started: std::time::Instant, per_minute: u32) -> usize {
    (started.elapsed().as_secs_f64() * f64::from(per_minute) / 60.0).ceil() as usize
}
