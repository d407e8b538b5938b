//! An account's storage quota, and its direct uploads at once, hold across every gateway on one database, not per
//! process (`custodia_service::budget::DirectUpload`, `custodia_catalog`'s holdings): two gateway processes on one
//! PostgreSQL and one bucket, an account's direct uploads held open on one, its uploads on the other. What an
//! upload under way holds on one gateway is counted by the other; and what a gateway killed with `kill -9` held
//! comes back once its holding expires. Judged by answers over HTTP alone; the only time waited for is the
//! holding's expiry.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::{RawAnswer, http_from};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const CLIENT: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// The account's storage quota, on both gateways.
const QUOTA: u64 = 100_000;
const UPLOAD: &str = "/api/v1/cases/case-q/artefacts?purpose=statement&filename=note.txt";
/// How long a holding lasts unrenewed in the test of a killed gateway: the shortest the setting takes.
const HOLDING_SECONDS: u64 = 20;

/// Two gateway processes on one PostgreSQL and one bucket, and the session of a clerk of `case-q`.
struct TwoGateways {
    _backends: support::SharedBackends,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    processes: (support::GatewayProcess, support::GatewayProcess),
    ports: [u16; 2],
    session: String,
}

impl TwoGateways {
    /// With `settings` besides the quota, on both.
    async fn start(settings: &[(&'static str, &str)]) -> Self {
        let (backends, session) = support::SharedBackends::start(async |setup| {
            let (clerk, session) = setup.person("clerk1", "IT").await;
            setup.case("case-q").await;
            setup.member("case-q", &clerk, "clerk").await;
            session
        })
        .await;
        let quota = QUOTA.to_string();
        let mut more = vec![
            ("CUSTODIA_ACCOUNT_STORED_BYTES", quota.as_str()),
            // Refused attempts take from the rate of new uploads too; this test is not about the rate.
            ("CUSTODIA_UPLOADS_PER_MINUTE", "1000"),
            // An upload held open is not cut off for its silence while the test needs it.
            ("CUSTODIA_BODY_IDLE_SECONDS", "120"),
        ];
        more.extend_from_slice(settings);
        let env = backends.env(&more);
        let env = support::env_refs(&env);
        let (dir_a, dir_b) = (support::data_dir_with_key(&backends.key), support::data_dir_with_key(&backends.key));
        let (process_a, port_a) = support::spawn_gateway(dir_a.path(), &env);
        let (process_b, port_b) = support::spawn_gateway(dir_b.path(), &env);
        Self {
            _backends: backends,
            _dirs: (dir_a, dir_b),
            processes: (process_a, process_b),
            ports: [port_a, port_b],
            session,
        }
    }

    fn cookie(&self) -> String {
        format!("custodia_session={}", self.session)
    }

    /// A direct upload of `bytes` (its length declared) through the gateway on `port`.
    async fn upload(&self, port: u16, bytes: &[u8]) -> RawAnswer {
        let cookie = self.cookie();
        let headers = [("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "text/plain")];
        http_from(CLIENT, port, "POST", UPLOAD, &headers, bytes).await.unwrap()
    }

    /// A direct upload through the gateway on `port` that is held open: its head (with `length` declared, or
    /// chunked without one) and `first` bytes of its body sent, once the gateway asked for the body (`100
    /// Continue`, which it sends as it starts reading the body: after it checked the quota and took its holding).
    async fn held_open(&self, port: u16, length: Option<usize>, first: &[u8]) -> TcpStream {
        let mut stream = support::connect_from(CLIENT, port).await.unwrap();
        let framing = match length {
            Some(length) => format!("Content-Length: {length}"),
            None => "Transfer-Encoding: chunked".to_owned(),
        };
        let head = format!(
            "POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {}\r\nSec-Fetch-Site: same-origin\r\n\
             Content-Type: text/plain\r\nExpect: 100-continue\r\n{framing}\r\n\r\n",
            self.cookie()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut byte)).await;
            assert_eq!(read.expect("no answer to the head in 60 s").unwrap(), 1, "closed: {answer:?}");
            answer.push(byte[0]);
        }
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(answer.starts_with("HTTP/1.1 100"), "the upload was not let in: {answer}");
        let first = if length.is_some() { first.to_vec() } else { chunk(first) };
        stream.write_all(&first).await.unwrap();
        stream
    }
}

/// `bytes` as one chunk of a chunked body.
fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
    framed.extend_from_slice(bytes);
    framed.extend_from_slice(b"\r\n");
    framed
}

/// Sends the rest of a held upload's body and reads its answer.
async fn finish(stream: &mut TcpStream, rest: &[u8]) -> RawAnswer {
    // A body the gateway already cut off may refuse the rest; its answer is what counts.
    let _ = stream.write_all(rest).await;
    support::read_answer(stream).await.unwrap()
}

fn assert_refused(answer: &RawAnswer, status: u16, problem: &str, says: &str) {
    assert_eq!((answer.status, answer.problem().as_str()), (status, problem), "{}", answer.text());
    assert!(answer.text().contains(says), "{}", answer.text());
}

/// What a direct upload under way on gateway A holds counts on gateway B, declared or growing, and so does its
/// place among the account's uploads at once: B refuses an upload that would pass the quota with A's holding
/// counted (507), cuts off an undeclared body that passes what A's holding leaves, and A refuses a third upload at
/// once. Once the uploads end, their holdings count no more: what is left is exactly the quota less the artefacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_upload_under_way_on_one_gateway_holds_the_quota_on_the_other() {
    let gateways = TwoGateways::start(&[("CUSTODIA_DIRECT_UPLOADS_PER_ACCOUNT", "2")]).await;
    let [a, b] = gateways.ports;

    // A holds 60,000 bytes of a declared length, of which it has 10.
    let mut on_a = gateways.held_open(a, Some(60_000), &[b'a'; 10]).await;
    let over = gateways.upload(b, &vec![b'b'; 40_001]).await;
    assert_refused(&over, 507, "quota-exceeded", "40000 bytes left");

    // An undeclared body on B, under way beside A's: the account's two uploads at once, on two gateways.
    let mut on_b = gateways.held_open(b, None, &[b'c'; 10_000]).await;
    let third = gateways.upload(a, b"a third at once").await;
    assert_refused(&third, 429, "too-many", "under way");
    // B's body grows past the 40,000 bytes A's holding leaves: cut off, nothing kept.
    let mut rest = Vec::new();
    for _ in 0..4 {
        rest.extend_from_slice(&chunk(&[b'c'; 10_000]));
    }
    rest.extend_from_slice(b"0\r\n\r\n");
    assert_refused(&finish(&mut on_b, &rest).await, 507, "quota-exceeded", "quota");

    // A's upload ends: its 60,000 bytes are an artefact now, and its holding is gone, as is B's.
    let done = finish(&mut on_a, &[b'a'; 59_990]).await;
    assert_eq!((done.status, done.json()["size"].as_u64()), (201, Some(60_000)), "{}", done.text());
    assert_refused(&gateways.upload(b, &vec![b'd'; 40_001]).await, 507, "quota-exceeded", "40000 bytes left");
    let within = gateways.upload(b, &vec![b'd'; 40_000]).await;
    assert_eq!(within.status, 201, "{}", within.text());
    assert_refused(&gateways.upload(a, b"one byte more").await, 507, "quota-exceeded", "0 bytes left");
}

/// A gateway killed (`kill -9`) with a direct upload under way cannot release its holding: the other gateway
/// keeps counting it, then, once it expires unrenewed, no more, so the account's quota is whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holding_of_a_killed_gateway_expires_and_the_quota_comes_back() {
    let holding = HOLDING_SECONDS.to_string();
    // A's upload stays idle past its holding's expiry: longer than the default 30 s a body may be idle, on a slow
    // machine, would cut it off (and release its holding) before the test kills A.
    let mut gateways = TwoGateways::start(&[
        ("CUSTODIA_DIRECT_UPLOADS_PER_ACCOUNT", "2"),
        ("CUSTODIA_DIRECT_UPLOAD_HOLDING_SECONDS", holding.as_str()),
        ("CUSTODIA_BODY_IDLE_SECONDS", "300"),
    ])
    .await;
    let [a, b] = gateways.ports;
    let _on_a = gateways.held_open(a, Some(80_000), &[b'a'; 10]).await;
    assert_refused(&gateways.upload(b, &vec![b'b'; 20_001]).await, 507, "quota-exceeded", "20000 bytes left");
    // Held past its first expiry: A renews its holding (every fifth of the expiry) while the upload runs.
    tokio::time::sleep(Duration::from_secs(HOLDING_SECONDS + 2)).await;
    assert_refused(&gateways.upload(b, &vec![b'b'; 20_001]).await, 507, "quota-exceeded", "20000 bytes left");

    gateways.processes.0.stop();
    let killed = Instant::now();
    // Nobody released it: B still counts it.
    assert_refused(&gateways.upload(b, &vec![b'b'; 20_001]).await, 507, "quota-exceeded", "20000 bytes left");
    // Once it has expired, the whole quota is B's to use: asked again each second, a whole quota's upload passes.
    let whole = vec![b'w'; QUOTA as usize];
    let deadline = killed + Duration::from_secs(3 * HOLDING_SECONDS);
    let accepted = loop {
        let answer = gateways.upload(b, &whole).await;
        match answer.status {
            201 => break answer,
            507 => assert!(Instant::now() < deadline, "the killed gateway's holding never expired: {}", answer.text()),
            other => panic!("an upload was answered {other}: {}", answer.text()),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!("the quota came back {:?} after the kill", killed.elapsed());
    assert_eq!(accepted.json()["size"].as_u64(), Some(QUOTA), "{}", accepted.text());
}

/// A gateway frozen (`SIGSTOP`, as a paused VM or a machine swapping would be) past its upload's holding's expiry
/// cannot renew it, and the other gateway counts the quota as free and uses it. The frozen gateway, once it runs
/// again and the body's last byte arrives, must not register the upload as well: its registration needs its
/// holding to last (`Registration::holding`), so it answers 503, retryable, and the account stays within its quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_holding_lapsed_while_its_gateway_was_frozen_is_not_registered() {
    let holding = HOLDING_SECONDS.to_string();
    let gateways = TwoGateways::start(&[
        ("CUSTODIA_DIRECT_UPLOADS_PER_ACCOUNT", "2"),
        ("CUSTODIA_DIRECT_UPLOAD_HOLDING_SECONDS", holding.as_str()),
    ])
    .await;
    let [a, b] = gateways.ports;
    // Over 64 KiB: a smaller body must arrive whole within 15 s (listen::SMALL_BODY_WITHIN), the freeze included.
    let size = 66_000;
    assert!(size > 64 * 1024 && 2 * size as u64 > QUOTA);
    let mut on_a = gateways.held_open(a, Some(size), &vec![b'a'; size - 1]).await;
    let frozen = gateways.processes.0.pid().to_string();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill").args([name, &frozen]).status().unwrap();
        assert!(sent.success(), "kill {name}");
    };
    signal("-STOP");
    // Past the expiry, unrenewed: B counts A's holding out, and takes the quota for an upload of its own.
    tokio::time::sleep(Duration::from_secs(HOLDING_SECONDS + 3)).await;
    let on_b = gateways.upload(b, &vec![b'b'; size]).await;
    signal("-CONT");
    assert_eq!(on_b.status, 201, "{}", on_b.text());
    let late = finish(&mut on_a, b"a").await;
    assert_eq!((late.status, late.problem().as_str()), (503, "unavailable"), "{}", late.text());
    assert!(late.head.to_ascii_lowercase().contains("\r\nretry-after:"), "{}", late.head);
    // The quota holds: exactly B's upload is stored.
    let left = QUOTA - size as u64;
    let over = gateways.upload(a, &vec![b'c'; left as usize + 1]).await;
    assert_refused(&over, 507, "quota-exceeded", &format!("{left} bytes left"));
}
