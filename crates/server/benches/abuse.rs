//! How many attackers one gateway process holds, and what a legitimate client sees meanwhile.
//!
//! Runs `custodia serve` (the binary of this build) under the open-file limit of this shell, then from many loopback
//! addresses (127.0.1.x, as many machines): half-open requests (slowloris) up to each address's budget, and a flood
//! of wrong passwords. Prints, beside the machine's own limits (`ulimit -n`, and the loopback connect rate of a
//! bare tokio listener measured in the same run): the connections the gateway held, how many it closed at once, the
//! `/healthz` latency of a legitimate client with and without the attack, and the gateway's peak memory and files.
//!
//! `cargo bench -p custodia-server --bench abuse`; `ABUSE_ADDRESSES` (default 32) attacker addresses.
#![allow(clippy::print_stdout)]

mod gateway;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use custodia_benchkit::BoxError;

async fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
}

async fn get(source: Ipv4Addr, port: u16, request: &str) -> std::io::Result<u16> {
    let mut stream = connect_from(source, port).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .map_err(std::io::Error::other)??;
    let head = String::from_utf8_lossy(&raw);
    Ok(head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0))
}

/// `/healthz` `count` times in a row from 127.0.0.1: (p50, p99, failures).
async fn healthz(port: u16, count: usize) -> (Duration, Duration, usize) {
    let mut latencies = Vec::with_capacity(count);
    let mut failures = 0;
    for _ in 0..count {
        let started = Instant::now();
        match get(Ipv4Addr::LOCALHOST, port, "GET /healthz HTTP/1.0\r\nHost: bench\r\n\r\n").await {
            Ok(200) => latencies.push(started.elapsed()),
            _ => failures += 1,
        }
    }
    latencies.sort();
    let at = |p: f64| latencies.get(((latencies.len().max(1) - 1) as f64 * p) as usize).copied().unwrap_or_default();
    (at(0.5), at(0.99), failures)
}

fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let files = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    (rss_kib >> 10, files)
}

/// Connections a second that a bare tokio listener on loopback takes and closes: the machine's own ceiling.
async fn loopback_connect_rate() -> Result<f64, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let count = 5000;
    let started = Instant::now();
    for n in 0..count {
        drop(connect_from(Ipv4Addr::new(127, 0, 2, 1 + (n % 200) as u8), port).await?);
    }
    Ok(f64::from(count) / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let open_files = custodia_server::listen::raise_open_file_limit();
    let addresses: u8 = custodia_benchkit::env_or("ABUSE_ADDRESSES", 32)?;
    let connect_rate = loopback_connect_rate().await?;
    let data = tempfile::tempdir()?;
    let port = gateway::free_port();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_custodia"));
    let mut gateway = gateway::Server::start_on(binary, &data.path().join("gateway"), port, &[])?;
    let pid = gateway.pid();
    let (quiet_p50, quiet_p99, _) = healthz(port, 300).await;
    let (idle_rss, idle_files) = usage(pid);

    // Slowloris from every address, up to the configured per-peer default (256) each, all at once; the gateway
    // keeps each address to its share (at most a sixteenth of the connections it allows).
    let per_address = 256usize;
    let started = Instant::now();
    let mut held = Vec::new();
    let mut refused = 0usize;
    for n in 0..usize::from(addresses) * per_address {
        let source = Ipv4Addr::new(127, 0, 1, 1 + (n % usize::from(addresses)) as u8);
        match connect_from(source, port).await {
            Ok(mut stream) => {
                let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nX-Slow: ").await;
                held.push(stream);
            }
            Err(_) => refused += 1,
        }
    }
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut open = 0usize;
    let mut buffer = [0u8; 64];
    for stream in &mut held {
        if let Err(_elapsed) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await {
            open += 1;
        }
    }
    let (attacked_p50, attacked_p99, failures) = healthz(port, 300).await;
    let (held_rss, held_files) = usage(pid);
    drop(held);

    // A flood of wrong passwords from every address, 32 at a time each.
    let body = r#"{"username":"admin","password":"not-the-password"}"#;
    let sign_in = format!(
        "POST /api/v1/session HTTP/1.0\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let started = Instant::now();
    let flood = (0..usize::from(addresses) * 32).map(|n| {
        let request = sign_in.clone();
        async move { get(Ipv4Addr::new(127, 0, 3, 1 + (n % usize::from(addresses)) as u8), port, &request).await }
    });
    let answers = futures::future::join_all(flood).await;
    let flood_took = started.elapsed();
    let count = |status: u16| answers.iter().filter(|a| matches!(a, Ok(s) if *s == status)).count();
    let (signin_rss, _) = usage(pid);
    let _log = gateway.stop();

    let say = |line: String| println!("{line}");
    say(format!("machine: ulimit -n {open_files}; bare loopback connect+close {connect_rate:.0}/s"));
    say(format!(
        "gateway idle: {idle_rss} MiB resident, {idle_files} open files; /healthz p50 {quiet_p50:?} p99 {quiet_p99:?}"
    ));
    say(format!(
        "slowloris from {addresses} addresses: {} attempted in {opened_in:?}, {} connect errors; the gateway holds {open} \
         (at most 256 per address, within its file budget), {held_files} open files, {held_rss} MiB",
        usize::from(addresses) * per_address,
        refused
    ));
    say(format!("  meanwhile /healthz p50 {attacked_p50:?} p99 {attacked_p99:?}, {failures} failures of 300"));
    say(format!(
        "wrong-password flood: {} sign-ins in {flood_took:?}: {} checked (401), {} throttled (429), {} cut off; peak {signin_rss} MiB",
        answers.len(),
        count(401),
        count(429),
        answers.iter().filter(|a| a.is_err()).count()
    ));
    Ok(())
}
