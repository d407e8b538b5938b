//! TURN credentials against a real coturn (`use-auth-secret`), a TURN server none of us wrote.
//!
//! - coturn accepts the credential `GET /api/v1/ice-servers` issues, over TCP and over UDP, and refuses a forged one
//!   and one the gateway issued that has since expired (`turnutils_uclient`, which exits non-zero when it cannot
//!   complete the allocation). Only someone in a hearing gets one (an invite's secret, a participant's credential):
//!   not a signed-in account as such, and no one once the hearing has ended.
//! - A WHIP publisher invited to a hearing, that may only use relayed candidates and knows only TURN over TCP,
//!   reaches the hearing room through coturn (recording in the room is tests/hearing.rs's). This is how a phone on a network that blocks UDP gets through: the
//!   gateway's WebRTC engine (webrtc-rs 0.17) cannot take ICE over TCP itself.
//!
//! Needs coturn (scripts/test-packages.txt); the publish also needs aiortc (tests/requirements.txt).
//! Each part is skipped, saying so, without them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{As, TestGateway};

fn installed(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn have_coturn() -> bool {
    // `turnserver -h` exits non-zero; finding the programs is enough.
    let found = |program: &str| std::process::Command::new(program).arg("-h").output().is_ok();
    found("turnserver") && found("turnutils_uclient")
}

/// A loopback port free for both TCP and UDP.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// coturn on loopback with a shared secret, killed when dropped.
struct Coturn {
    _child: tokio::process::Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Coturn {
    async fn start(secret: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("turnserver.conf");
        std::fs::write(
            &config,
            format!(
                "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\nuse-auth-secret\n\
                 static-auth-secret={secret}\nrealm=custodia.test\nallow-loopback-peers\nno-cli\nno-tls\nno-dtls\n\
                 fingerprint\nverbose\nlog-file=stdout\nsimple-log\npidfile={}\nuserdb={}\n",
                dir.path().join("turnserver.pid").display(),
                dir.path().join("turndb").display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("turnserver.log");
        let child = tokio::process::Command::new("turnserver")
            .arg("-c")
            .arg(&config)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("turnserver starts");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Self { _child: child, port, log, _dir: dir };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("coturn did not listen on {port}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Allocates a relay with `turnutils_uclient` and sends a few messages through it to itself; whether that
    /// worked, and what the client said.
    fn allocate(&self, tcp: bool, username: &str, credential: &str) -> (bool, String) {
        let mut command = std::process::Command::new("timeout");
        command.args(["30", "turnutils_uclient"]);
        if tcp {
            command.arg("-t");
        }
        let port = self.port.to_string();
        let output = command
            .args(["-y", "-n", "5", "-u", username, "-w", credential, "-p", port.as_str(), "127.0.0.1"])
            .output()
            .expect("turnutils_uclient runs");
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), said)
    }
}

/// A hearing in `case`, opened by its clerk, with an invite for `role`: (the clerk's session, the hearing's console
/// path, the invite's secret). While the invite can let someone in, its secret may have STUN/TURN servers.
async fn open_hearing(gateway: &TestGateway, case: &str, role: &str) -> (String, String, String) {
    gateway.case(case).await;
    let (clerk, clerk_session) = gateway.person("clerk", "IT").await;
    gateway.member(case, &clerk, "clerk").await;
    let clerk_auth = Some(As::Session(&clerk_session));
    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2"});
    let reply = gateway.call("POST", &format!("/api/v1/cases/{case}/hearings"), clerk_auth, schedule).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let hearing = format!("/api/v1/cases/{case}/hearings/{}", reply.json()["id"].as_str().unwrap());
    let reply = gateway.call("POST", &format!("{hearing}/invites"), clerk_auth, json!({"role": role})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let secret = reply.json()["secret"].as_str().unwrap().to_owned();
    let reply = gateway.call("POST", &format!("{hearing}/open"), clerk_auth, json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    (clerk_session, hearing, secret)
}

async fn ice_servers(gateway: &TestGateway, secret: &str) -> Value {
    let reply = gateway.get("/api/v1/ice-servers", Some(As::Token(secret))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.headers["cache-control"], "no-store");
    reply.json()["ice_servers"].clone()
}

fn turn_gateway_config(coturn: &Coturn, secret: &str) -> impl FnOnce(&mut custodia_server::config::ServeConfig) {
    let port = coturn.port;
    let secret = secret.to_owned();
    move |config| {
        config.ice.stun_urls = vec![format!("stun:127.0.0.1:{port}")];
        config.ice.turn_urls =
            vec![format!("turn:127.0.0.1:{port}?transport=tcp"), format!("turn:127.0.0.1:{port}?transport=udp")];
        config.ice.turn_secret = Some(secret);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_accepts_issued_credentials_and_refuses_forged_and_expired_ones() {
    if !have_coturn() {
        eprintln!("SKIPPED: coturn is not installed (scripts/setup-system.sh test)");
        return;
    }
    let secret = custodia_service::identity::new_secret();
    let coturn = Coturn::start(&secret).await;
    let gateway = TestGateway::start_with(turn_gateway_config(&coturn, &secret)).await;
    let (clerk_session, hearing, secret) = open_hearing(&gateway, "case-1", "witness").await;

    // TURN relays are for people in a hearing: not for a stranger, nor for a signed-in account as such.
    let unauthenticated = gateway.get("/api/v1/ice-servers", None).await;
    unauthenticated.assert_problem(401, "unauthenticated", "");
    let account = gateway.get("/api/v1/ice-servers", Some(As::Session(&clerk_session))).await;
    account.assert_problem(401, "unauthenticated", "");

    let servers = ice_servers(&gateway, &secret).await;
    let port = coturn.port;
    assert_eq!(servers[0], json!({ "urls": [format!("stun:127.0.0.1:{port}")] }));
    let turn = &servers[1];
    assert_eq!(
        turn["urls"],
        json!([format!("turn:127.0.0.1:{port}?transport=tcp"), format!("turn:127.0.0.1:{port}?transport=udp")])
    );
    let username = turn["username"].as_str().unwrap();
    let credential = turn["credential"].as_str().unwrap();
    let (expiry, id) = username.split_once(':').unwrap();
    let expiry: i64 = expiry.parse().unwrap();
    let now = gateway.clock.unix_seconds();
    assert!((now + 3590..=now + 3610).contains(&expiry), "expiry {expiry}, now {now}");
    assert!(!username.contains(&secret) && !username.contains("witness") && id.len() == 32, "{username}");

    // Accepted, over TCP and over UDP.
    for tcp in [true, false] {
        let (ok, said) = coturn.allocate(tcp, username, credential);
        assert!(ok, "coturn refused the issued credential (tcp: {tcp}):\n{said}\n{}", coturn.log());
    }
    // A credential made with another secret.
    let forged = custodia_hearings::turn::credential(b"not the static-auth-secret at all", username);
    let (ok, said) = coturn.allocate(true, username, &forged);
    assert!(!ok && said.contains("Cannot complete Allocation"), "coturn took a forged credential:\n{said}");
    // A credential the gateway issued two hours ago, valid for one.
    gateway.clock.advance(-7200);
    let old = ice_servers(&gateway, &secret).await;
    gateway.clock.advance(7200);
    let (old_username, old_credential) = (old[1]["username"].as_str().unwrap(), old[1]["credential"].as_str().unwrap());
    assert!(old_username.split_once(':').unwrap().0.parse::<i64>().unwrap() < now);
    for tcp in [true, false] {
        let (ok, said) = coturn.allocate(tcp, old_username, old_credential);
        assert!(!ok && said.contains("Cannot complete Allocation"), "coturn took an expired credential:\n{said}");
    }
    // coturn says why it refused: it checked the expiry and the HMAC, it did not just fail to connect.
    let log = coturn.log();
    assert!(log.contains(&format!("user <{old_username}>")), "{log}");

    // Once the hearing has ended, its secrets get no more relays.
    let reply = gateway.call("POST", &format!("{hearing}/close"), Some(As::Session(&clerk_session)), json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    gateway.get("/api/v1/ice-servers", Some(As::Token(&secret))).await.assert_problem(401, "unauthenticated", "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_publisher_reaches_the_gateway_through_turn_over_tcp() {
    if !have_coturn() {
        eprintln!("SKIPPED: coturn is not installed (scripts/setup-system.sh test)");
        return;
    }
    if !installed("python3", &["-c", "import aiortc"]) {
        eprintln!("SKIPPED: aiortc is not installed (scripts/setup-system.sh test)");
        return;
    }
    let secret = custodia_service::identity::new_secret();
    let coturn = Coturn::start(&secret).await;
    let gateway = TestGateway::start_with(turn_gateway_config(&coturn, &secret)).await;
    let (_, _, camera_secret) = open_hearing(&gateway, "case-2", "remote_site_officer").await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = custodia_server::app(gateway.state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Only the TURN server over TCP, and only relayed candidates: nothing but TURN/TCP can carry the media.
    let servers = ice_servers(&gateway, &camera_secret).await;
    let turn = &servers[1];
    let tcp_url = format!("turn:127.0.0.1:{}?transport=tcp", coturn.port);
    let only_tcp = json!([{ "urls": [tcp_url], "username": turn["username"], "credential": turn["credential"] }]);
    let url = format!("http://127.0.0.1:{port}/api/v1/room/whip");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recorder/tests/peers/whip_publish.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .args([url.as_str(), "6", camera_secret.as_str()])
        .env("WHIP_ICE_SERVERS", only_tcp.to_string())
        .env("WHIP_ICE_TRANSPORT_POLICY", "relay")
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the relay-only aiortc publisher failed:\n{said}\n{}", coturn.log());
    let report: Value = serde_json::from_str(said.lines().find(|l| l.starts_with('{')).expect("its report")).unwrap();
    eprintln!("publisher: {report}");
    let pairs = report["chosen_pairs"].as_array().unwrap();
    assert!(!pairs.is_empty() && pairs.iter().all(|p| p[0] == "relay"), "not relayed: {report}");
    // The WHIP answer offered the same servers as RFC 9725 Link headers.
    let links: Vec<&str> = report["links"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(links.iter().any(|l| l.starts_with("<turn:127.0.0.1:") && l.contains("username=")), "{links:?}");
    let log = coturn.log();
    assert!(log.contains("ALLOCATE processed, success"), "{log}");
}
