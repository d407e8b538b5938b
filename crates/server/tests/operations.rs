//! What an operator runs the gateway with, against the real binary: liveness (`/healthz`) and readiness
//! (`/readyz`), Prometheus metrics on their own listener (`CUSTODIA_METRICS_LISTEN`), JSON logs
//! (`--log-format json`), and logs free of terminal escape codes when they go to a file.
//!
//! The metrics test parses the exposition with the Prometheus project's Python parser (`prometheus-client`,
//! tests/requirements.txt; scripts/setup-system.sh test installs it).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A client of the gateway process, signed in or not.
struct Client {
    http: reqwest::Client,
    base: String,
    session: Option<String>,
}

/// An answer: status, headers and body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.body))
    }
}

impl Client {
    fn new(base: &str) -> Self {
        Self { http: reqwest::Client::new(), base: base.to_owned(), session: None }
    }

    async fn send(&self, method: reqwest::Method, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).body(body);
        request = request.header("content-type", content_type);
        if let Some(session) = &self.session {
            // A cookie client says where it comes from, as the gateway's own pages do (the CSRF rule).
            request =
                request.header("cookie", format!("custodia_session={session}")).header("sec-fetch-site", "same-origin");
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Answer { status, headers, body: response.text().await.unwrap() }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, "text/plain", Vec::new()).await
    }

    async fn json(&self, method: reqwest::Method, path: &str, body: Value) -> Answer {
        self.send(method, path, "application/json", body.to_string().into_bytes()).await
    }

    async fn signed_in(base: &str, username: &str, password: &str) -> Self {
        let mut client = Self::new(base);
        let answer = client
            .json(reqwest::Method::POST, "/api/v1/session", json!({"username": username, "password": password}))
            .await;
        assert!(answer.status < 300, "sign-in of {username}: {} {}", answer.status, answer.body);
        let cookie = answer
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|v| v.starts_with("custodia_session="));
        let cookie = cookie.unwrap_or_else(|| panic!("no session cookie: {:?}", answer.headers));
        client.session = Some(cookie.split_once('=').unwrap().1.split(';').next().unwrap().to_owned());
        client
    }
}

fn admin_password(data: &Path) -> String {
    std::fs::read_to_string(data.join("keys/initial-admin-password")).unwrap().trim().to_owned()
}

/// Waits until `check` holds, for at most 20 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_what_does_not_answer_while_liveness_holds() {
    let data = tempfile::tempdir().unwrap();
    let (_gateway, port) = support::spawn_gateway(data.path(), &[]);
    let client = Client::new(&format!("http://127.0.0.1:{port}"));
    let ready = client.get("/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready"));
    assert_eq!(client.get("/healthz").await.body, "ok");

    // The object store stops answering: its directory is a file now.
    let objects = data.path().join("objects");
    let aside = data.path().join("objects.aside");
    std::fs::rename(&objects, &aside).unwrap();
    std::fs::write(&objects, b"not a directory").unwrap();
    let not_ready = client.get("/readyz").await;
    assert_eq!(not_ready.status, 503, "{}", not_ready.body);
    assert_eq!(not_ready.headers["content-type"], "application/problem+json");
    assert_eq!(not_ready.headers["retry-after"], "5");
    let problem = not_ready.json();
    assert_eq!(problem["type"], "https://custodia.invalid/problems/not-ready");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("the object store does not answer"), "{detail}");
    assert!(!detail.contains("catalog") && !detail.contains("custody log"), "only what fails is named: {detail}");
    assert!(!detail.contains(data.path().to_str().unwrap()), "no path of the machine in the answer: {detail}");
    // Liveness reads no store: a restart would not bring the store back.
    assert_eq!(client.get("/healthz").await.status, 200);

    // Back again: ready again, with no restart.
    std::fs::remove_file(&objects).unwrap();
    std::fs::rename(&aside, &objects).unwrap();
    assert_eq!(client.get("/readyz").await.status, 200);
}

/// The samples of a Prometheus text exposition as the Prometheus project's Python parser reads them: each
/// sample's name and labels (sorted, `k=v` joined by `,`) to its value. Panics if it does not parse.
fn parse_exposition(text: &str) -> BTreeMap<(String, String), f64> {
    let parser = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        samples.append([sample.name, labels, sample.value])
json.dump(samples, sys.stdout)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", parser])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is missing; run scripts/setup-system.sh test");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the exposition does not parse (prometheus-client from tests/requirements.txt; scripts/setup-system.sh \
         test): {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<(String, String, f64)> = serde_json::from_slice(&output.stdout).unwrap();
    samples.into_iter().map(|(name, labels, value)| ((name, labels), value)).collect()
}

/// One sample's value, 0 when there is none.
fn sample(samples: &BTreeMap<(String, String), f64>, name: &str, labels: &str) -> f64 {
    samples.get(&(name.to_owned(), labels.to_owned())).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_an_upload_and_say_nothing_of_anyone() {
    let data = tempfile::tempdir().unwrap();
    let metrics_port = support::free_port();
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let (_gateway, port) =
        support::spawn_gateway(data.path(), &[("CUSTODIA_METRICS_LISTEN", metrics_address.as_ref())]);
    let base = format!("http://127.0.0.1:{port}");
    let scraper = Client::new(&format!("http://{metrics_address}"));
    eventually("the metrics listener", || async {
        reqwest::get(format!("http://{metrics_address}/metrics")).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    // The API's listener never serves them.
    let on_the_api = Client::new(&base).get("/metrics").await;
    assert_eq!(on_the_api.status, 404, "{}", on_the_api.body);
    assert!(!on_the_api.body.contains("custodia_"), "metrics on the API's address: {}", on_the_api.body);

    let admin = Client::signed_in(&base, "admin", &admin_password(data.path())).await;
    let clerk_password = "clerk-correct-horse-battery";
    let account = json!({"username": "clerk-amelia-rossi", "display_name": "Amelia Rossi", "password": clerk_password,
                         "jurisdiction": "IT"});
    let created = admin.json(reqwest::Method::POST, "/api/v1/accounts", account).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let case = json!({"id": "case-rossi-smuggling", "title": "R v Rossi"});
    assert_eq!(admin.json(reqwest::Method::POST, "/api/v1/cases", case).await.status, 201);
    let member = format!("/api/v1/cases/case-rossi-smuggling/members/{}", created.json()["id"].as_str().unwrap());
    assert_eq!(admin.json(reqwest::Method::PUT, &member, json!({"role": "clerk"})).await.status, 204);
    let clerk = Client::signed_in(&base, "clerk-amelia-rossi", clerk_password).await;

    let before = parse_exposition(&scraper.get("/metrics").await.body);
    let log_size = |samples: &BTreeMap<(String, String), f64>| sample(samples, "custodia_log_entries", "");
    let content = vec![7u8; 12_345];
    let uploaded = clerk
        .send(
            reqwest::Method::POST,
            "/api/v1/cases/case-rossi-smuggling/artefacts?purpose=statement",
            "video/webm",
            content.clone(),
        )
        .await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let artefact = uploaded.json()["artefact"].as_str().unwrap().to_owned();
    // A refusal: no session.
    assert_eq!(Client::new(&base).get("/api/v1/me").await.status, 401);
    let exposition = scraper.get("/metrics").await;
    assert_eq!(exposition.status, 200);
    assert!(exposition.headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let after = parse_exposition(&exposition.body);

    let moved = |name: &str, labels: &str| sample(&after, name, labels) - sample(&before, name, labels);
    assert_eq!(moved("custodia_ingest_bytes_total", ""), content.len() as f64);
    assert_eq!(moved("custodia_ingest_artefacts_total", ""), 1.0);
    // The log's own checkpoint says how many entries the upload appended; the counter says the same.
    let checkpoint = Client::new(&base).get("/log/checkpoint").await.body;
    let size: f64 = checkpoint.lines().nth(1).unwrap().parse().unwrap();
    assert_eq!(log_size(&after), size);
    assert!(size > log_size(&before), "the upload appended its registration record");
    assert_eq!(moved("custodia_log_appends_total", ""), size - log_size(&before));
    assert_eq!(sample(&after, "custodia_log_appending", ""), 1.0);
    assert_eq!(sample(&after, "custodia_log_appends_waiting", ""), 0.0);
    assert!(after.contains_key(&("custodia_transfer_evidences_pending".to_owned(), String::new())));
    assert_eq!(sample(&after, "custodia_transfer_evidences_pending", ""), 0.0);
    let published = sample(&after, "custodia_log_checkpoint_published_timestamp_seconds", "");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - 300.0..=now + 1.0).contains(&published), "published at {published}, now {now}");
    assert_eq!(moved("custodia_http_refusals_total", "reason=unauthenticated"), 1.0);
    // The upload's latency, under its route template: once.
    let upload_route = "method=POST,route=/api/v1/cases/{case}/artefacts,status=201";
    assert_eq!(moved("custodia_http_request_duration_seconds_count", upload_route), 1.0);
    assert!(moved("custodia_http_request_duration_seconds_sum", upload_route) > 0.0);
    assert_eq!(sample(&after, "custodia_witness_policy", ""), 0.0);
    assert_eq!(sample(&after, "custodia_hearings", "phase=in_session"), 0.0);
    assert_eq!(sample(&after, "custodia_hearing_participants_connected", ""), 0.0);

    // Nothing of anyone: no name, case, artefact, account, session or address, in any label or anywhere.
    let session = clerk.session.clone().unwrap();
    for secret in ["rossi", "Rossi", "amelia", "smuggling", artefact.as_str(), session.as_str(), "127.0.0.1"] {
        assert!(!exposition.body.contains(secret), "{secret:?} is in the metrics:\n{}", exposition.body);
    }
    // Routes are templates: a path full of made-up ids adds no series of its own.
    for probe in ["/api/v1/artefacts/made-up-id-1/timeline", "/no/such/page/secret-token-42"] {
        Client::new(&base).get(probe).await;
    }
    let later = scraper.get("/metrics").await.body;
    assert!(!later.contains("made-up-id-1") && !later.contains("secret-token-42"), "{later}");
    assert!(later.contains(r#"route="/api/v1/artefacts/{id}/timeline""#), "{later}");
    assert!(later.contains(r#"route="(unmatched)""#), "{later}");
}

/// Starts `custodia serve` with `args` and `env` beside the usual ones, its stderr to a file (never a terminal),
/// uploads nothing, asks `/healthz` and `/readyz` and a path that is refused, does `also` (given its port), stops
/// it, and returns its stderr.
fn serve_with_stderr_to_a_file(args: &[&str], env: &[(&str, &str)], also: impl FnOnce(u16)) -> Vec<u8> {
    let data = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let log = data.path().join("stderr.log");
    let mut gateway = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
        .args(args)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("CUSTODIA_DATA_DIR", data.path())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ask = |path: &str| -> Option<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        std::io::Write::write_all(&mut stream, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).ok()?;
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).ok()?;
        Some(answer)
    };
    while ask("/healthz").is_none() {
        if Instant::now() > deadline || gateway.try_wait().unwrap().is_some() {
            let _ = gateway.kill();
            panic!("the gateway did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for path in ["/readyz", "/api/v1/me", "/api/v1/artefacts/x/content"] {
        ask(path);
    }
    also(port);
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    std::fs::read(&log).unwrap()
}

#[test]
fn json_logs_are_one_object_a_line() {
    let logs = serve_with_stderr_to_a_file(&["--log-format", "json"], &[], |_| {});
    let text = String::from_utf8(logs).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    let events: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}")))
        .collect();
    for event in &events {
        assert!(event["timestamp"].is_string() && event["level"].is_string(), "{event}");
        assert!(event["message"].is_string(), "{event}");
    }
    assert!(events.iter().any(|event| event["message"] == "gateway listening"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in JSON logs: {text:?}");
    // The environment variable says the same as the flag.
    let from_env = serve_with_stderr_to_a_file(&[], &[("CUSTODIA_LOG_FORMAT", "json")], |_| {});
    for line in String::from_utf8(from_env).unwrap().lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}"));
    }
}

#[test]
fn text_logs_to_a_file_carry_no_escape_codes_even_where_a_terminal_is_announced() {
    // A terminal type, and colour asked of programs that honour CLICOLOR_FORCE: a file is still not a terminal.
    let logs = serve_with_stderr_to_a_file(&[], &[("TERM", "xterm-256color"), ("CLICOLOR_FORCE", "1")], |_| {});
    let text = String::from_utf8_lossy(&logs);
    assert!(text.contains("gateway listening"), "{text}");
    assert!(!logs.windows(2).any(|pair| pair == b"\x1b["), "escape codes in a log file: {text:?}");
}

/// An operator who turns the log up to `trace` to find a fault still writes down no client's address, cookie or
/// invite secret: the WebRTC engine's and the WebSocket protocol's crates are never logged, and HTTP's own no more
/// than `info`, whatever `RUST_LOG` asks (before, any `RUST_LOG` replaced the silencing, and `trace` logged every
/// room message in full).
#[test]
fn a_trace_log_holds_nothing_a_client_sent() {
    const INVITE: &str = "invite-secret-4a7c0e1d9b";
    const COOKIE: &str = "cookie-value-91b2f3a8";
    const FORWARDED: &str = "198.51.100.77";
    let logs = serve_with_stderr_to_a_file(&[], &[("RUST_LOG", "trace")], |port| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let request = format!(
            "GET /api/v1/me HTTP/1.1\r\nHost: localhost\r\nCookie: custodia_session={COOKIE}\r\n\
             X-Forwarded-For: {FORWARDED}\r\nConnection: close\r\n\r\n"
        );
        std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            use futures::{SinkExt as _, StreamExt as _};
            let url = format!("ws://127.0.0.1:{port}/api/v1/room");
            let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
            let join = json!({"type": "join", "invite": INVITE}).to_string();
            socket.send(tokio_tungstenite::tungstenite::Message::text(join)).await.unwrap();
            let refused = socket.next().await.unwrap().unwrap().into_text().unwrap();
            assert!(refused.contains("\"refused\""), "{refused}");
        });
    });
    let text = String::from_utf8_lossy(&logs);
    // Trace was on: the gateway's own crates and its database driver said more than at `info`.
    assert!(text.contains(" TRACE ") || text.contains(" DEBUG "), "{text}");
    for sent in [INVITE, COOKIE, FORWARDED, "127.0.0.1:"] {
        let line = text.lines().find(|line| line.contains(sent) && !line.contains("gateway listening"));
        assert!(line.is_none(), "the log holds {sent:?}: {line:?}");
    }
    for silenced in ["tungstenite", "webrtc", " h2::", " hyper"] {
        let line =
            text.lines().find(|line| line.contains(silenced) && (line.contains("DEBUG") || line.contains("TRACE")));
        assert!(line.is_none(), "{silenced} logs above info: {line:?}");
    }
}

#[test]
fn a_metrics_listener_that_cannot_bind_stops_the_start_and_says_why() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", &address])
        .env("CUSTODIA_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("CUSTODIA_METRICS_LISTEN") && said.contains(&address), "{said}");
}

/// deploy/k8s and deploy/compose.yaml (with deploy/compose/), checked without a cluster or a container engine.
#[test]
fn the_deployment_files_parse_and_agree_with_the_gateway() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check-deploy.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .output()
        .expect("python3 is missing; run scripts/setup-system.sh test");
    assert!(
        output.status.success(),
        "deploy/k8s or deploy/compose.yaml (python3-yaml from scripts/setup-system.sh test):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
