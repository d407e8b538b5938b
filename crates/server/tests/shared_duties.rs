//! Partner transfers and witness cosigning with several gateways on one PostgreSQL database and one garage bucket
//! (the duties of `custodia_catalog::Duty`): one gateway at a time drives the transfers sent, takes the partners'
//! requests about transfers (the others answer 503 with `Retry-After`, and a test proxy routes partner traffic as
//! deploy/compose/Caddyfile does, to the gateway whose `/readyz/transfers` answers) and asks the witnesses; when it
//! dies, another takes the duty over and the work goes on, exactly once.
//!
//! Judged by what was sent, counted and recorded (the metrics each process keeps, the proxy's and the witness's
//! counts, the catalog, both public logs), never by timing: every wait has a generous bound, and the moments that
//! matter (a transfer between its last chunk and its completion, a chunk on its way) are held by the proxy until
//! the test lets them go.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custodia_catalog::Catalog;
use custodia_tests::garage::Garage;
use custodia_tests::postgres::TempPostgres;
use serde_json::{Value, json};
use support::{GatewayProcess, free_port, spawn_gateway_on};

/// Waits, with a generous bound, until `done` says so; `what` says what was waited for.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(150);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One gateway process's place: its data directory, its API and metrics ports, and the settings it starts with.
struct Place {
    data: tempfile::TempDir,
    port: u16,
    metrics: u16,
    env: Vec<(&'static str, std::ffi::OsString)>,
}

impl Place {
    fn new(env: Vec<(&'static str, std::ffi::OsString)>) -> Self {
        let (port, metrics) = (free_port(), free_port());
        let mut env = env;
        env.push(("CUSTODIA_METRICS_LISTEN", format!("127.0.0.1:{metrics}").into()));
        Self { data: tempfile::tempdir().unwrap(), port, metrics, env }
    }

    fn serve(&self) -> GatewayProcess {
        let env: Vec<(&str, &std::ffi::OsStr)> = self.env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        spawn_gateway_on(self.data.path(), &env, None, self.port)
    }

    /// `custodia partners card` for this place (its keys are made on first use).
    fn card(&self) -> Value {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
            .args(["partners", "card"])
            .env("CUSTODIA_DATA_DIR", self.data.path())
            .envs(self.env.iter().map(|(k, v)| (*k, v)))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Gives `other` this place's keys (the log's and the partner request key): two gateways of one log and one
    /// partner identity.
    fn share_keys_with(&self, other: &Place) {
        std::fs::create_dir_all(other.data.path().join("keys")).unwrap();
        for key in ["gateway.key", "partner-request.key"] {
            std::fs::copy(self.data.path().join("keys").join(key), other.data.path().join("keys").join(key)).unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn status(&self, path: &str) -> u16 {
        reqwest::get(self.url(path)).await.map_or(0, |answer| answer.status().as_u16())
    }

    async fn call(&self, cookie: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = reqwest::Client::new()
            .request(method, self.url(path))
            .header("cookie", cookie)
            .header("sec-fetch-site", "same-origin");
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn sign_in(&self, username: &str, password: &str) -> String {
        let answer = reqwest::Client::new()
            .post(self.url("/api/v1/session"))
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/json")
            .body(json!({ "username": username, "password": password }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
    }

    /// The first administrator's session, if this place made it.
    async fn admin(&self) -> String {
        let password = std::fs::read_to_string(self.data.path().join("keys/initial-admin-password")).unwrap();
        self.sign_in("admin", password.trim()).await
    }

    /// An account in `role` of `case` (made by `admin`), signed in.
    async fn member(&self, admin: &str, case: &str, username: &str, role: &str) -> String {
        let password = format!("{username}-correct-horse-battery");
        let account = json!({ "username": username, "display_name": username, "password": password,
            "jurisdiction": "XX" });
        let (status, created) = self.call(admin, "POST", "/api/v1/accounts", Some(account)).await;
        assert_eq!(status, 201, "{created}");
        let path = format!("/api/v1/cases/{case}/members/{}", created["id"].as_str().unwrap());
        let (status, answer) = self.call(admin, "PUT", &path, Some(json!({ "role": role }))).await;
        assert_eq!(status, 204, "{answer}");
        self.sign_in(username, &password).await
    }

    async fn upload(&self, cookie: &str, case: &str, bytes: Vec<u8>) -> String {
        let answer = reqwest::Client::new()
            .post(self.url(&format!("/api/v1/cases/{case}/artefacts?purpose=statement")))
            .header("cookie", cookie)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "video/webm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
        assert_eq!(status, 201, "{body}");
        body["artefact"].as_str().unwrap().to_owned()
    }

    /// Transfer `transfer` of `artefact` as this gateway shows it.
    async fn transfer(&self, cookie: &str, artefact: &str, transfer: &str) -> Value {
        let (status, transfers) =
            self.call(cookie, "GET", &format!("/api/v1/artefacts/{artefact}/transfers"), None).await;
        assert_eq!(status, 200, "{transfers}");
        transfers.as_array().unwrap().iter().find(|t| t["id"] == transfer).cloned().unwrap()
    }

    /// The value of the metric sample `sample` (name and labels as exposed), 0 if absent.
    async fn metric(&self, sample: &str) -> f64 {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics)).await.unwrap();
        let text = text.text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    async fn partner_requests(&self, request: &str) -> f64 {
        self.metric(&format!("custodia_partner_transfer_requests_total{{request=\"{request}\"}}")).await
    }
}

fn events(transfer: &Value) -> Vec<String> {
    transfer["evidences"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect()
}

/// The rungs of the `transfer_evidence` records on the log served at `port`, and how many `received_from` records.
async fn logged_rungs(port: u16) -> (Vec<String>, usize) {
    let records = support::served_records(port).await;
    let rungs = records
        .iter()
        .filter(|r| r["event"]["type"] == "transfer_evidence")
        .map(|r| r["event"]["rung"].as_str().unwrap().to_owned())
        .collect();
    (rungs, records.iter().filter(|r| r["event"]["type"] == "received_from").count())
}

/// The settings of a gateway on `postgres` and `garage`.
fn shared_env(postgres: &TempPostgres, garage: &Garage) -> Vec<(&'static str, std::ffi::OsString)> {
    let mut env: Vec<(&'static str, std::ffi::OsString)> =
        garage.gateway_env().into_iter().map(|(name, value)| (name, value.into())).collect();
    env.push(("CUSTODIA_DATABASE_URL", postgres.url.clone().into()));
    env
}

/// A partner gateway's settings: its name, jurisdiction, public URL and registry file.
fn partner_env(
    name: &str,
    jurisdiction: &str,
    public_port: u16,
    partners: &std::path::Path,
) -> Vec<(&'static str, std::ffi::OsString)> {
    vec![
        ("CUSTODIA_ORIGIN", format!("{name}.custodia.test/log").into()),
        ("CUSTODIA_PARTNER_NAME", name.into()),
        ("CUSTODIA_JURISDICTION", jurisdiction.into()),
        ("CUSTODIA_PUBLIC_URL", format!("http://127.0.0.1:{public_port}").into()),
        ("CUSTODIA_PARTNERS", partners.into()),
        ("CUSTODIA_TRANSFER_RETRY_SECONDS", "1".into()),
    ]
}

fn pin(file: &std::path::Path, cards: &[&Value]) {
    std::fs::write(file, json!({ "partners": cards }).to_string()).unwrap();
}

/// A request as the proxy saw it: the upstream port it went to (0: none answered), its path and its status.
#[derive(Debug, Clone)]
struct Passed {
    upstream: u16,
    method: String,
    path: String,
    status: u16,
}

/// A reverse proxy on loopback in front of one or more gateways, routing as deploy/compose/Caddyfile routes partner
/// traffic: every request to the first upstream whose `readiness` path answers 200 (asked every 250 ms; while
/// none does, the last that did). Requests that `hold` picks wait until [`Proxy::release`].
struct Proxy {
    port: u16,
    passed: Arc<Mutex<Vec<Passed>>>,
    held: Arc<std::sync::atomic::AtomicUsize>,
    gate: tokio::sync::watch::Sender<bool>,
}

type Hold = fn(&str, &str) -> bool;

/// What the proxy's handler shares: the upstream chosen, the client, what passed, how many were held, the gate.
type ProxyState = (
    Arc<Mutex<u16>>,
    reqwest::Client,
    Arc<Mutex<Vec<Passed>>>,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::sync::watch::Receiver<bool>,
    Hold,
);

/// What the witness's handler shares: its key, the log's, what it cosigned last, the sizes asked, the conflicts.
type WitnessState = (
    Arc<custodia_witness::CosignerKey>,
    custodia_ledger::LogVerifier,
    Arc<Mutex<custodia_witness::Known>>,
    Arc<Mutex<BTreeMap<u64, usize>>>,
    Arc<std::sync::atomic::AtomicUsize>,
);

impl Proxy {
    async fn start(upstreams: Vec<u16>, readiness: &'static str, hold: Hold) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let chosen = Arc::new(Mutex::new(upstreams[0]));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        {
            let (chosen, client, upstreams) = (chosen.clone(), client.clone(), upstreams.clone());
            tokio::spawn(async move {
                loop {
                    for upstream in &upstreams {
                        let asked = client
                            .get(format!("http://127.0.0.1:{upstream}{readiness}"))
                            .timeout(Duration::from_secs(3))
                            .send()
                            .await;
                        if asked.is_ok_and(|answer| answer.status() == 200) {
                            *chosen.lock().unwrap() = *upstream;
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            });
        }
        let passed = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (gate, opened) = tokio::sync::watch::channel(false);
        let state = (chosen, client, passed.clone(), held.clone(), opened, hold);
        let app = axum::Router::new().fallback(
            move |axum::extract::State((chosen, client, passed, held, mut opened, hold)): axum::extract::State<
                ProxyState,
            >,
                  request: axum::extract::Request| async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
                let (method, path) = (parts.method.to_string(), parts.uri.to_string());
                if hold(&method, &path) {
                    held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = opened.wait_for(|open| *open).await;
                }
                let upstream = *chosen.lock().unwrap();
                let mut forwarded = client.request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("http://127.0.0.1:{upstream}{path}"),
                );
                for (name, value) in &parts.headers {
                    if name != "host" && name != "content-length" {
                        forwarded = forwarded.header(name.as_str(), value.as_bytes());
                    }
                }
                let answer = forwarded.body(body).send().await;
                let (status, headers, body) = match answer {
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        let headers: Vec<(String, Vec<u8>)> = answer
                            .headers()
                            .iter()
                            .filter(|(name, _)| *name == "content-type" || *name == "retry-after")
                            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                            .collect();
                        (status, headers, answer.bytes().await.unwrap_or_default().to_vec())
                    }
                    Err(_) => (502, Vec::new(), b"bad gateway".to_vec()),
                };
                passed.lock().unwrap().push(Passed { upstream, method, path, status });
                let mut response = axum::response::Response::new(axum::body::Body::from(body));
                *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                for (name, value) in headers {
                    response.headers_mut().insert(
                        axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                        axum::http::HeaderValue::from_bytes(&value).unwrap(),
                    );
                }
                response
            },
        );
        let app = app.with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { port, passed, held, gate }
    }

    fn release(&self) {
        self.gate.send_replace(true);
    }

    fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn passed(&self) -> Vec<Passed> {
        self.passed.lock().unwrap().clone()
    }
}

/// Catania runs two gateways on one database and bucket, behind a proxy that sends partner traffic to the one whose
/// `/readyz/transfers` answers; Tunis sends them a statement. The other gateway refuses partner requests about
/// transfers (503, `Retry-After`, before reading a signature). The holder receives every chunk, syncs and counts
/// them, and dies before it can finish: the other takes the duty over, holds none of the staged bytes and says so
/// (not what the catalog counted on the dead one), is sent the whole payload again, verifies the whole bundle and
/// takes it in: one artefact, each evidence logged once on each side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_arriving_at_two_gateways_is_staged_by_the_duty_holder_and_finished_by_the_next() {
    let (postgres, garage) = (TempPostgres::start(), Garage::start());
    let (tunis_port, catania_port) = (free_port(), free_port());
    let registries = tempfile::tempdir().unwrap();
    let (tunis_pins, catania_pins) = (registries.path().join("tunis.json"), registries.path().join("catania.json"));
    let tunis = Place::new(partner_env("tn-tunis", "TN", tunis_port, &tunis_pins));
    let tunis = Place { port: tunis_port, ..tunis };
    let mut catania_env = partner_env("it-catania", "IT", catania_port, &catania_pins);
    catania_env.extend(shared_env(&postgres, &garage));
    let (first, second) = (Place::new(catania_env.clone()), Place::new(catania_env));
    let (tunis_card, catania_card) = (tunis.card(), first.card());
    first.share_keys_with(&second);
    pin(&tunis_pins, &[&catania_card]);
    pin(&catania_pins, &[&tunis_card]);
    let _tunis_process = tunis.serve();
    let mut first_process = first.serve();
    let mut second_process = second.serve();
    let catania_admin = first.admin().await;

    // Which of the two holds the duty of the transfers: it alone says it is ready for them.
    eventually("a Catania gateway holding the duty of the transfers", async || {
        first.status("/readyz/transfers").await == 200 || second.status("/readyz/transfers").await == 200
    })
    .await;
    let first_holds = first.status("/readyz/transfers").await == 200;
    let (holder, other) = if first_holds { (&first, &second) } else { (&second, &first) };
    assert_eq!(other.status("/readyz/transfers").await, 503);
    assert_eq!(other.status("/readyz").await, 200, "ready for everything else");
    assert_eq!(holder.metric("custodia_duty_held{duty=\"transfers\"}").await, 1.0);
    assert_eq!(other.metric("custodia_duty_held{duty=\"transfers\"}").await, 0.0);
    // The other refuses a partner's request about a transfer before anything else: retryable, with Retry-After.
    // The holder reads it, and refuses it as unsigned.
    let offer = |place: &Place| reqwest::Client::new().post(place.url("/partner/v1/transfers")).body("{}").send();
    let refused = offer(other).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"), "{:?}", refused.headers());
    let problem: Value = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/unavailable"), "{problem}");
    assert_eq!(offer(holder).await.unwrap().status(), 401);

    // The proxy, where Tunis's registry says Catania is; `complete` is held until the test lets it go.
    let proxy = Proxy::start(vec![holder.port, other.port], "/readyz/transfers", |method, path| {
        method == "POST" && path.ends_with("/complete")
    })
    .await;
    let listener_port = proxy.port;
    // Catania's card names the address Tunis reaches it at: the proxy's, by a forwarder on the card's port.
    forward(catania_port, listener_port).await;

    // Tunis sends a statement of three chunks.
    let tunis_admin = tunis.admin().await;
    let (status, _) =
        tunis.call(&tunis_admin, "POST", "/api/v1/cases", Some(json!({ "id": "tn-7", "title": "t" }))).await;
    assert_eq!(status, 201);
    let clerk = tunis.member(&tunis_admin, "tn-7", "clerk", "clerk").await;
    let statement = custodia_tests::pseudo_random_bytes(20 * 1024 * 1024 + 123, 1);
    let artefact = tunis.upload(&clerk, "tn-7", statement.clone()).await;
    let body = json!({ "partner": "it-catania", "purpose": "trial" });
    let (status, sent) =
        tunis.call(&clerk, "POST", &format!("/api/v1/artefacts/{artefact}/transfers"), Some(body)).await;
    assert_eq!(status, 202, "{sent}");
    let transfer = sent["id"].as_str().unwrap().to_owned();

    // Every chunk is durable on the holder and counted in the catalog; its completion waits at the proxy.
    let catalog = Catalog::connect(&postgres.url).await.unwrap();
    let size = statement.len() as i64;
    eventually("the holder holding every byte durably", async || {
        proxy.held() > 0
            && catalog.transfer_staging(&transfer).await.unwrap().is_some_and(|staging| staging.received == size)
    })
    .await;
    let staged_by_holder = catalog.transfer_staging(&transfer).await.unwrap().unwrap().staged_by;
    let staging_id = |place: &Place| std::fs::read_to_string(place.data.path().join("transfers/staging-id")).unwrap();
    assert_eq!(staged_by_holder, staging_id(holder));
    assert!(proxy.passed().iter().all(|passed| passed.upstream == holder.port), "only the holder took requests");

    // The holder dies before it can finish. The other takes the duty over, says it holds nothing of the payload,
    // and is sent all of it again.
    if first_holds {
        first_process.stop()
    } else {
        second_process.stop()
    }
    let survivor_port = other.port;
    proxy.release();
    let deadline = Instant::now() + Duration::from_secs(150);
    let delivered = loop {
        let found = tunis.transfer(&clerk, &artefact, &transfer).await;
        if found["stage"] == "delivered" {
            break found;
        }
        assert_ne!(found["stage"], "failed", "{found}");
        assert!(Instant::now() < deadline, "not delivered after the takeover: {found}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(events(&delivered), ["SubmissionAcceptance", "RelayAcceptance", "Delivery"]);
    assert_eq!(other.status("/readyz/transfers").await, 200, "the survivor holds the duty");
    let after_takeover: Vec<Passed> =
        proxy.passed().into_iter().filter(|passed| passed.upstream == survivor_port).collect();
    let chunks_at = |offset: u64| {
        after_takeover
            .iter()
            .filter(|passed| passed.method == "PUT" && passed.path.ends_with(&format!("/chunks/{offset}")))
            .filter(|passed| passed.status == 200)
            .count()
    };
    assert!(chunks_at(0) >= 1, "the survivor was sent the payload from its first byte: {after_takeover:?}");
    assert!(chunks_at(16 * 1024 * 1024) >= 1, "and to its end: {after_takeover:?}");
    let staging = catalog.transfer_staging(&transfer).await.unwrap().unwrap();
    assert_eq!((staging.staged_by, staging.received), (staging_id(other), size), "staged anew on the survivor");
    assert!(!other.data.path().join(format!("transfers/in/{transfer}.part")).exists(), "its staging file is gone");

    // One artefact in Catania, byte for byte the statement; each evidence once on each log.
    let judge = other.member(&catania_admin, "inbox-tn-tunis", "judge", "judge").await;
    let (status, listed) = other.call(&judge, "GET", "/api/v1/cases/inbox-tn-tunis/artefacts", None).await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed.as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "the statement once: {listed:?}");
    let received = listed[0]["id"].as_str().unwrap();
    let content = reqwest::Client::new()
        .get(other.url(&format!("/api/v1/artefacts/{received}/content?purpose=trial")))
        .header("cookie", &judge)
        .send()
        .await
        .unwrap();
    assert_eq!(content.status(), 200);
    assert!(content.bytes().await.unwrap() == statement, "the received artefact is the statement sent");
    // The judge's download was the retrieval.
    let rungs = ["SubmissionAcceptance", "RelayAcceptance", "Delivery", "Retrieval"].map(String::from).to_vec();
    assert_eq!(logged_rungs(other.port).await, (rungs.clone(), 1));
    assert_once_in_order(&logged_rungs(tunis.port).await.0, &rungs);
}

/// `logged` is `rungs`, or the first of them (the retrieval reaches the sender later): each once, in order.
fn assert_once_in_order(logged: &[String], rungs: &[String]) {
    assert!(logged.len() >= 3 && rungs.starts_with(logged), "{logged:?}, not {rungs:?}");
}

/// Tunis runs two gateways on one database and bucket. A member sends from the one that does not hold the duty of
/// the transfers: the holder drives it, the other sends nothing (its own counts say so). The holder dies with a
/// chunk on its way; the other takes the duty over and finishes the transfer from what Catania holds: one
/// artefact in Catania, each evidence logged once on each side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_sent_from_two_gateways_is_driven_by_the_duty_holder_and_finished_by_the_next() {
    let (postgres, garage) = (TempPostgres::start(), Garage::start());
    let (tunis_port, catania_port) = (free_port(), free_port());
    let registries = tempfile::tempdir().unwrap();
    let (tunis_pins, catania_pins) = (registries.path().join("tunis.json"), registries.path().join("catania.json"));
    let mut tunis_env = partner_env("tn-tunis", "TN", tunis_port, &tunis_pins);
    tunis_env.extend(shared_env(&postgres, &garage));
    let first = Place::new(tunis_env.clone());
    let first = Place { port: tunis_port, ..first };
    let second = Place::new(tunis_env);
    let catania = Place::new(partner_env("it-catania", "IT", catania_port, &catania_pins));
    let (tunis_card, catania_card) = (first.card(), catania.card());
    first.share_keys_with(&second);
    pin(&tunis_pins, &[&catania_card]);
    pin(&catania_pins, &[&tunis_card]);
    let _catania_process = catania.serve();
    // Catania behind a proxy on the port its card names: chunks after the first wait there until let go.
    let proxy = Proxy::start(vec![catania.port], "/readyz/transfers", |method, path| {
        method == "PUT" && path.contains("/chunks/") && !path.ends_with("/chunks/0")
    })
    .await;
    let proxy_port = proxy.port;
    forward(catania_port, proxy_port).await;
    let mut first_process = first.serve();
    let mut second_process = second.serve();
    let admin = first.admin().await;
    eventually("a Tunis gateway holding the duty of the transfers", async || {
        first.status("/readyz/transfers").await == 200 || second.status("/readyz/transfers").await == 200
    })
    .await;
    let first_holds = first.status("/readyz/transfers").await == 200;
    let (holder, other) = if first_holds { (&first, &second) } else { (&second, &first) };

    // Sent from the gateway without the duty: the holder drives it.
    let (status, _) = other.call(&admin, "POST", "/api/v1/cases", Some(json!({ "id": "tn-8", "title": "t" }))).await;
    assert_eq!(status, 201);
    let clerk = other.member(&admin, "tn-8", "clerk", "clerk").await;
    let statement = custodia_tests::pseudo_random_bytes(20 * 1024 * 1024 + 77, 2);
    let artefact = other.upload(&clerk, "tn-8", statement.clone()).await;
    let body = json!({ "partner": "it-catania", "purpose": "trial" });
    let (status, sent) =
        other.call(&clerk, "POST", &format!("/api/v1/artefacts/{artefact}/transfers"), Some(body)).await;
    assert_eq!(status, 202, "{sent}");
    let transfer = sent["id"].as_str().unwrap().to_owned();
    eventually("a chunk on its way from the holder", async || proxy.held() > 0).await;
    assert!(holder.partner_requests("chunk").await >= 2.0, "the holder sends the chunks");
    for request in ["offer", "chunk", "complete", "progress", "outbox"] {
        assert_eq!(other.partner_requests(request).await, 0.0, "the other sends no {request}");
    }
    assert_eq!(other.metric("custodia_duty_held{duty=\"transfers\"}").await, 0.0);

    // The holder dies with chunks on their way; the other takes the duty over and finishes from what Catania holds.
    if first_holds {
        first_process.stop()
    } else {
        second_process.stop()
    }
    proxy.release();
    let deadline = Instant::now() + Duration::from_secs(150);
    let delivered = loop {
        let found = other.transfer(&clerk, &artefact, &transfer).await;
        if found["stage"] == "delivered" {
            break found;
        }
        assert_ne!(found["stage"], "failed", "{found}");
        assert!(Instant::now() < deadline, "not delivered after the takeover: {found}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(events(&delivered), ["SubmissionAcceptance", "RelayAcceptance", "Delivery"]);
    assert!(other.partner_requests("offer").await >= 1.0, "the survivor drives it now");
    assert_eq!(other.metric("custodia_duty_held{duty=\"transfers\"}").await, 1.0);

    // In Catania: one artefact, byte for byte; each evidence once on each log.
    let catania_admin = catania.admin().await;
    let judge = catania.member(&catania_admin, "inbox-tn-tunis", "judge", "judge").await;
    let (_, listed) = catania.call(&judge, "GET", "/api/v1/cases/inbox-tn-tunis/artefacts", None).await;
    let listed = listed.as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "the statement once: {listed:?}");
    let content = reqwest::Client::new()
        .get(catania.url(&format!("/api/v1/artefacts/{}/content?purpose=trial", listed[0]["id"].as_str().unwrap())))
        .header("cookie", &judge)
        .send()
        .await
        .unwrap();
    assert!(content.bytes().await.unwrap() == statement);
    let rungs = ["SubmissionAcceptance", "RelayAcceptance", "Delivery", "Retrieval"].map(String::from).to_vec();
    assert_eq!(logged_rungs(catania.port).await, (rungs.clone(), 1));
    assert_once_in_order(&logged_rungs(other.port).await.0, &rungs);
    let offers =
        proxy.passed().iter().filter(|passed| passed.method == "POST" && passed.path.ends_with("/transfers")).count();
    assert!(offers >= 2, "offered by the holder, and again by the survivor: {offers}");
}

/// Tunis, and Catania on two gateways sharing a database and bucket, with a statement Tunis sent delivered there.
struct Delivered {
    tunis: Place,
    first: Place,
    second: Place,
    tunis_clerk: String,
    /// The statement, as Tunis sent it: its artefact there, and the transfer.
    statement: Vec<u8>,
    artefact: String,
    transfer: String,
    catania_admin: String,
    postgres: TempPostgres,
    _garage: Garage,
    _processes: Vec<GatewayProcess>,
}

impl Delivered {
    /// Catania's gateways retrieve-or-time-out after `retrieval` seconds (`CUSTODIA_TRANSFER_RETRIEVAL_SECONDS`).
    async fn start(retrieval: u64) -> Self {
        let (postgres, garage) = (TempPostgres::start(), Garage::start());
        let (tunis_port, catania_port) = (free_port(), free_port());
        let registries = tempfile::tempdir().unwrap();
        let (tunis_pins, catania_pins) = (registries.path().join("tunis.json"), registries.path().join("catania.json"));
        let tunis = Place::new(partner_env("tn-tunis", "TN", tunis_port, &tunis_pins));
        let tunis = Place { port: tunis_port, ..tunis };
        let mut catania_env = partner_env("it-catania", "IT", catania_port, &catania_pins);
        catania_env.extend(shared_env(&postgres, &garage));
        catania_env.push(("CUSTODIA_TRANSFER_RETRIEVAL_SECONDS", retrieval.to_string().into()));
        let (first, second) = (Place::new(catania_env.clone()), Place::new(catania_env));
        let (tunis_card, catania_card) = (tunis.card(), first.card());
        first.share_keys_with(&second);
        pin(&tunis_pins, &[&catania_card]);
        pin(&catania_pins, &[&tunis_card]);
        let processes = vec![tunis.serve(), first.serve(), second.serve()];
        let catania_admin = first.admin().await;
        // Partner traffic goes to the gateway that holds the duty of the transfers.
        let proxy = Proxy::start(vec![first.port, second.port], "/readyz/transfers", |_, _| false).await;
        forward(catania_port, proxy.port).await;

        let tunis_admin = tunis.admin().await;
        let (status, _) =
            tunis.call(&tunis_admin, "POST", "/api/v1/cases", Some(json!({ "id": "tn-9", "title": "t" }))).await;
        assert_eq!(status, 201);
        let tunis_clerk = tunis.member(&tunis_admin, "tn-9", "clerk", "clerk").await;
        let statement = custodia_tests::pseudo_random_bytes(256 * 1024 + 5, 3);
        let artefact = tunis.upload(&tunis_clerk, "tn-9", statement.clone()).await;
        let body = json!({ "partner": "it-catania", "purpose": "trial" });
        let path = format!("/api/v1/artefacts/{artefact}/transfers");
        let (status, sent) = tunis.call(&tunis_clerk, "POST", &path, Some(body)).await;
        assert_eq!(status, 202, "{sent}");
        let transfer = sent["id"].as_str().unwrap().to_owned();
        let delivered = Self {
            tunis,
            first,
            second,
            tunis_clerk,
            statement,
            artefact,
            transfer,
            catania_admin,
            postgres,
            _garage: garage,
            _processes: processes,
        };
        eventually("the statement delivered", async || delivered.catania_stage().await != "receiving").await;
        delivered
    }

    /// The transfer's stage in Catania's catalog.
    async fn catania_stage(&self) -> String {
        let catalog = Catalog::connect(&self.postgres.url).await.unwrap();
        catalog.transfer(&self.transfer).await.unwrap().map(|row| row.stage).unwrap_or_else(|| "receiving".into())
    }

    /// The transfer as Tunis shows it.
    async fn at_tunis(&self) -> Value {
        self.tunis.transfer(&self.tunis_clerk, &self.artefact, &self.transfer).await
    }

    /// Judges downloading the statement at once, `each` times through each of Catania's gateways: every download
    /// is served, byte for byte.
    async fn download_through_both(&self, each: usize) {
        let judges = [
            (&self.first, self.first.member(&self.catania_admin, "inbox-tn-tunis", "judge-a", "judge").await),
            (&self.second, self.second.member(&self.catania_admin, "inbox-tn-tunis", "judge-b", "judge").await),
        ];
        let (_, listed) = self.first.call(&judges[0].1, "GET", "/api/v1/cases/inbox-tn-tunis/artefacts", None).await;
        let received = listed[0]["id"].as_str().unwrap().to_owned();
        let downloads: Vec<_> = judges
            .iter()
            .flat_map(|(place, judge)| {
                let url = place.url(&format!("/api/v1/artefacts/{received}/content?purpose=trial"));
                (0..each).map(move |_| {
                    let (url, judge) = (url.clone(), judge.clone());
                    tokio::spawn(async move {
                        let answer = reqwest::Client::new().get(url).header("cookie", judge).send().await.unwrap();
                        (answer.status().as_u16(), answer.bytes().await.unwrap())
                    })
                })
            })
            .collect();
        for download in downloads {
            let (status, bytes) = download.await.unwrap();
            assert_eq!(status, 200, "every download is served");
            assert!(bytes == self.statement, "the statement sent");
        }
    }

    /// Each evidence of `rungs` once on Catania's log (as each of its gateways serves it) and, once it got there, on
    /// Tunis's; the transfer `stage` on both sides.
    async fn assert_closed(&self, rungs: &[&str], stage: &str) {
        let rungs: Vec<String> = rungs.iter().map(|rung| rung.to_string()).collect();
        for place in [&self.first, &self.second] {
            assert_eq!(logged_rungs(place.port).await, (rungs.clone(), 1), "each evidence once on Catania's log");
        }
        assert_eq!(self.catania_stage().await, stage);
        eventually("the closing evidence at Tunis", async || self.at_tunis().await["stage"] == stage).await;
        assert_eq!(events(&self.at_tunis().await), rungs);
        assert_eq!(logged_rungs(self.tunis.port).await.0, rungs, "each evidence once on Tunis's log");
    }
}

/// Catania runs two gateways on one database and bucket; Tunis sends them a statement. Once it is delivered, two
/// judges download it at once, three times each, one through each gateway: the first download to close the
/// transfer logs its `Retrieval`, in the transaction that moves the transfer on, and the others log nothing. One
/// `Retrieval` on Catania's log, and it reaches Tunis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_through_two_gateways_at_once_log_one_retrieval() {
    let delivered = Delivered::start(14 * 86_400).await;
    delivered.download_through_both(3).await;
    delivered.assert_closed(&["SubmissionAcceptance", "RelayAcceptance", "Delivery", "Retrieval"], "retrieved").await;
}

/// The same, with a retrieval timeout of a second and nobody downloading: the duty holder's sweep closes the
/// transfer with `NonRetrieval`, and the downloads that come after it, through either gateway, are served and
/// log nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_after_the_non_retrieval_log_nothing() {
    let delivered = Delivered::start(1).await;
    eventually("the sweep's NonRetrieval", async || delivered.catania_stage().await == "failed").await;
    delivered.download_through_both(2).await;
    let rungs = ["SubmissionAcceptance", "RelayAcceptance", "Delivery", "NonRetrieval"];
    delivered.assert_closed(&rungs, "failed").await;
}

/// A witness on loopback, played by the witness core: it cosigns what extends what it cosigned before and counts
/// every request by the checkpoint's size, and the 409s it answered.
struct CountingWitness {
    port: u16,
    /// The witness's verifier key, as a policy names it.
    vkey: String,
    asked: Arc<Mutex<BTreeMap<u64, usize>>>,
    conflicts: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingWitness {
    async fn start(log: custodia_ledger::LogVerifier) -> Self {
        let key = Arc::new(custodia_witness::CosignerKey::generate("w1").unwrap());
        let vkey = key.verifier().to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = Arc::new(Mutex::new(BTreeMap::new()));
        let conflicts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let known = Arc::new(Mutex::new(custodia_witness::Known::unseen()));
        let state = (key.clone(), log, known, asked.clone(), conflicts.clone());
        let app = axum::Router::new().route(
            "/witness/add-checkpoint",
            axum::routing::post(
                |axum::extract::State((key, log, known, asked, conflicts)): axum::extract::State<WitnessState>,
                 body: axum::body::Bytes| async move {
                    use axum::response::IntoResponse as _;
                    let Ok(request) = custodia_witness::AddCheckpoint::parse(&body) else {
                        return (axum::http::StatusCode::BAD_REQUEST, "malformed").into_response();
                    };
                    let mut known = known.lock().unwrap();
                    let decision = custodia_witness::decide(Some(std::slice::from_ref(&log)), &known, &request);
                    match decision {
                        custodia_witness::Decision::Cosign { checkpoint, .. } => {
                            *asked.lock().unwrap().entry(checkpoint.checkpoint.size).or_default() += 1;
                            *known = custodia_witness::Known {
                                size: checkpoint.checkpoint.size,
                                root: checkpoint.checkpoint.root,
                            };
                            let now =
                                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                            let line = key.cosign(checkpoint.checkpoint.body().as_bytes(), now).unwrap();
                            line.into_response()
                        }
                        custodia_witness::Decision::Conflict { known_size } => {
                            conflicts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            (
                                axum::http::StatusCode::CONFLICT,
                                [("content-type", "text/x.tlog.size")],
                                format!("{known_size}\n"),
                            )
                                .into_response()
                        }
                        custodia_witness::Decision::Refuse(refusal) => {
                            let status = axum::http::StatusCode::from_u16(refusal.status()).unwrap();
                            (status, "refused").into_response()
                        }
                    }
                },
            ),
        );
        let app = app.with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { port, vkey, asked, conflicts }
    }

    /// The checkpoint sizes asked, each with how often.
    fn asked(&self) -> BTreeMap<u64, usize> {
        self.asked.lock().unwrap().clone()
    }
}

/// Two gateways of one log on one database and bucket, and one witness: one gateway asks it (each checkpoint once,
/// never a size the witness is past), the other asks nothing and still publishes the cosigned checkpoint, kept up to
/// date from the catalog. When the one that asks dies, the other asks from where it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_asks_the_witnesses_and_every_gateway_publishes_the_cosigned_checkpoint() {
    let (postgres, garage) = (TempPostgres::start(), Garage::start());
    let origin = "shared.custodia.test/log";
    let signer = custodia_ledger::LogSigner::generate(origin).unwrap();
    let witness = CountingWitness::start(signer.verifier()).await;
    let config = tempfile::tempdir().unwrap();
    let policy = config.path().join("policy");
    std::fs::write(
        &policy,
        format!(
            "log {}\nwitness w1 {} http://127.0.0.1:{}/witness\nquorum w1\n",
            signer.verifier(),
            witness.vkey,
            witness.port
        ),
    )
    .unwrap();
    let mut env = shared_env(&postgres, &garage);
    env.push(("CUSTODIA_ORIGIN", origin.into()));
    env.push(("CUSTODIA_WITNESS_POLICY", policy.clone().into()));
    let (first, second) = (Place::new(env.clone()), Place::new(env));
    for place in [&first, &second] {
        use std::os::unix::fs::PermissionsExt as _;
        let keys = place.data.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::write(keys.join("gateway.key"), signer.expose_secret()).unwrap();
        std::fs::set_permissions(keys.join("gateway.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut first_process = first.serve();
    let mut second_process = second.serve();
    let admin = first.admin().await;
    let (status, _) = first.call(&admin, "POST", "/api/v1/cases", Some(json!({ "id": "c-1", "title": "t" }))).await;
    assert_eq!(status, 201);
    let clerk = first.member(&admin, "c-1", "clerk", "clerk").await;
    let report = async |place: &Place| {
        let answer = reqwest::get(place.url("/witness/cosignatures")).await.unwrap();
        serde_json::from_str::<Value>(&answer.text().await.unwrap()).unwrap()
    };
    let published_size = async |place: &Place| -> u64 {
        let answer = reqwest::get(place.url("/log/checkpoint")).await.unwrap();
        if answer.status() != 200 {
            return 0;
        }
        let note = answer.text().await.unwrap();
        assert!(note.contains("\u{2014} w1 "), "published with the witness's cosignature: {note}");
        note.lines().nth(1).unwrap().parse().unwrap()
    };
    let log_size = async |place: &Place| -> u64 { report(place).await["log_size"].as_u64().unwrap_or(0) };

    // Appends through both gateways: both publish the newest checkpoint the witness cosigned.
    for round in 0..3u8 {
        for place in [&first, &second] {
            place.upload(&clerk, "c-1", vec![round; 1000 + usize::from(round)]).await;
        }
    }
    eventually("both gateways publishing the log's newest checkpoint, cosigned", async || {
        let (a, b) = (log_size(&first).await, log_size(&second).await);
        a > 0 && a == b && published_size(&first).await == a && published_size(&second).await == a
    })
    .await;
    let (first_report, second_report) = (report(&first).await, report(&second).await);
    let first_asks = first_report["asking"] == true;
    assert_ne!(first_report["asking"], second_report["asking"], "one gateway asks: {first_report} {second_report}");
    let (asking, quiet) = if first_asks { (&first, &second) } else { (&second, &first) };
    let quiet_report = report(quiet).await;
    assert_eq!(quiet_report["witnesses"][0]["requests"], 0, "{quiet_report}");
    assert!(quiet_report["witnesses"][0]["cosigned_size"].as_u64().unwrap() > 0, "{quiet_report}");
    assert_eq!(quiet.metric("custodia_witness_requests_total{witness=\"w1\"}").await, 0.0);
    assert_eq!(quiet.metric("custodia_duty_held{duty=\"cosigning\"}").await, 0.0);
    assert_eq!(asking.metric("custodia_duty_held{duty=\"cosigning\"}").await, 1.0);
    let asked = witness.asked();
    assert!(asked.values().all(|times| *times == 1), "each checkpoint asked once: {asked:?}");
    assert_eq!(witness.conflicts.load(std::sync::atomic::Ordering::SeqCst), 0, "never asked from a stale size");
    let requests_by_asking = report(asking).await["witnesses"][0]["requests"].as_u64().unwrap();
    assert_eq!(requests_by_asking as usize, asked.values().sum::<usize>(), "every request the witness had is its");

    // The gateway that asks dies; the other takes the duty over and asks about what is appended from now on.
    let before = *asked.keys().last().unwrap();
    if first_asks {
        first_process.stop()
    } else {
        second_process.stop()
    }
    for round in 3..5u8 {
        quiet.upload(&clerk, "c-1", vec![round; 2000 + usize::from(round)]).await;
    }
    eventually("the survivor publishing its newest checkpoint, cosigned", async || {
        let size = log_size(quiet).await;
        size > before && published_size(quiet).await == size
    })
    .await;
    assert_eq!(report(quiet).await["asking"], true);
    let asked = witness.asked();
    assert!(asked.values().all(|times| *times == 1), "each checkpoint asked once: {asked:?}");
    assert_eq!(witness.conflicts.load(std::sync::atomic::Ordering::SeqCst), 0, "asked from where the other left");
}

/// Forwards every connection to loopback port `from` to port `to`, for as long as the test runs.
async fn forward(from: u16, to: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", from)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
}
