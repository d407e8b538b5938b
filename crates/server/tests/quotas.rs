//! Budgets per account and per address against a running `custodia serve` (issue 11, and the record flood of
//! issue 10): sign-in throttling that a stranger cannot turn into a lockout of the owner (the owner's device cookie
//! gets past an account ceiling that strangers keep spent, also after a restart, and through a flood from 2,000
//! IPv6 networks that also fills the hashing queue), connections per address under
//! a low open-file limit, storage quotas, direct uploads at once and their idle timeout, the rate of new uploads,
//! and a member's refusal flood. Each test counts what was accepted and what was refused; none judges by time.

mod support;

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use support::{RawAnswer, http_from};

const OWNER: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A gateway process with its administrator signed in from [`OWNER`].
struct Running {
    process: support::GatewayProcess,
    port: u16,
    data: tempfile::TempDir,
    admin: String,
    env: Vec<(String, String)>,
    open_files: Option<u64>,
}

impl Running {
    async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_within(env, None).await
    }

    /// Under an open-file limit of `open_files`.
    async fn start_within(env: &[(&str, &str)], open_files: Option<u64>) -> Self {
        let data = tempfile::tempdir().unwrap();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let (process, port) = Self::spawn(data.path(), &env, open_files);
        let password = std::fs::read_to_string(data.path().join("keys/initial-admin-password")).unwrap();
        let answer = sign_in(OWNER, port, "admin", password.trim()).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let admin = session_of(&answer);
        Self { process, port, data, admin, env, open_files }
    }

    fn spawn(
        data: &std::path::Path,
        env: &[(String, String)],
        open_files: Option<u64>,
    ) -> (support::GatewayProcess, u16) {
        let env: Vec<(&str, &std::ffi::OsStr)> =
            env.iter().map(|(k, v)| (k.as_str(), std::ffi::OsStr::new(v.as_str()))).collect();
        support::spawn_gateway_within(data, &env, open_files)
    }

    /// Kills the gateway and starts it again on the same data (on another port): what it kept only in memory is
    /// gone; its database and keys are not.
    fn restart(&mut self) {
        self.process.stop();
        let (process, port) = Self::spawn(self.data.path(), &self.env, self.open_files);
        self.process = process;
        self.port = port;
    }

    /// A JSON request as a signed-in person on the gateway's own pages.
    async fn api(&self, method: &str, path: &str, session: &str, body: Value) -> RawAnswer {
        let cookie = format!("custodia_session={session}");
        let headers =
            [("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "application/json")];
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        http_from(OWNER, self.port, method, path, &headers, &body).await.unwrap()
    }

    /// An account with the password `<username>-correct-horse-battery`; its id.
    async fn account(&self, username: &str) -> String {
        let body = json!({"username": username, "display_name": username, "jurisdiction": "IT",
            "password": format!("{username}-correct-horse-battery")});
        let answer = self.api("POST", "/api/v1/accounts", &self.admin, body).await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        answer.json()["id"].as_str().unwrap().to_owned()
    }

    /// A case with `members` (account id, role); the session of each member, signed in from [`OWNER`].
    async fn case(&self, id: &str, members: &[(&str, &str)]) -> Vec<String> {
        let answer = self.api("POST", "/api/v1/cases", &self.admin, json!({"id": id, "title": "R v Quota"})).await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        let mut sessions = Vec::new();
        for (username, role) in members {
            let account = self.account(username).await;
            let path = format!("/api/v1/cases/{id}/members/{account}");
            assert_eq!(self.api("PUT", &path, &self.admin, json!({"role": role})).await.status, 204);
            let password = format!("{username}-correct-horse-battery");
            sessions.push(session_of(&sign_in(OWNER, self.port, username, &password).await));
        }
        sessions
    }

    /// A direct upload of `bytes` by `session` (with its length declared).
    async fn upload(&self, session: &str, bytes: &[u8]) -> RawAnswer {
        let cookie = format!("custodia_session={session}");
        let headers = [("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "text/plain")];
        http_from(OWNER, self.port, "POST", UPLOAD, &headers, bytes).await.unwrap()
    }

    async fn log_size(&self) -> u64 {
        let answer = http_from(OWNER, self.port, "GET", "/log/checkpoint", &[], b"").await.unwrap();
        answer.text().lines().nth(1).unwrap().parse().unwrap()
    }

    /// Files in the object store's staging place: direct uploads' staging and resumable uploads' chunks.
    fn staged(&self) -> usize {
        fn files(dir: &std::path::Path) -> usize {
            let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
            entries.map(|entry| if entry.path().is_dir() { files(&entry.path()) } else { 1 }).sum()
        }
        files(&self.data.path().join("objects/staging"))
    }
}

const UPLOAD: &str = "/api/v1/cases/case-1/artefacts?purpose=statement&filename=note.txt";

async fn sign_in(source: Ipv4Addr, port: u16, username: &str, password: &str) -> RawAnswer {
    let body = json!({"username": username, "password": password}).to_string();
    let headers = [("Content-Type", "application/json")];
    http_from(source, port, "POST", "/api/v1/session", &headers, body.as_bytes()).await.unwrap()
}

/// A sign-in from a browser that holds the device cookie `device`.
async fn sign_in_on_device(source: Ipv4Addr, port: u16, username: &str, password: &str, device: &str) -> RawAnswer {
    let body = json!({"username": username, "password": password}).to_string();
    let cookie = format!("custodia_device={device}");
    let headers = [("Content-Type", "application/json"), ("Cookie", cookie.as_str())];
    http_from(source, port, "POST", "/api/v1/session", &headers, body.as_bytes()).await.unwrap()
}

/// Every `Set-Cookie` of an answer, in order.
fn set_cookies(answer: &RawAnswer) -> Vec<String> {
    let cookies = answer.head.lines().filter_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("set-cookie").then(|| value.trim().to_owned())
    });
    cookies.collect()
}

/// The value of the device cookie an answer sets.
fn device_of(answer: &RawAnswer) -> String {
    let cookies = set_cookies(answer);
    let cookie = cookies.iter().find(|cookie| cookie.starts_with("custodia_device="));
    let cookie = cookie.unwrap_or_else(|| panic!("no device cookie: {}", answer.head));
    cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

/// A guesser that polls an account's sign-in from a new address for every guess (127.2.x.y), so no address of
/// theirs is ever refused: only the account's ceiling holds them, and they keep it spent.
#[derive(Default)]
struct Guesser {
    guesses: u32,
}

impl Guesser {
    /// Guesses until the account's ceiling refuses a guess (429): it is spent now. How many were checked (401).
    async fn spend_ceiling(&mut self, port: u16, username: &str) -> u32 {
        let mut checked = 0;
        loop {
            self.guesses += 1;
            assert!(self.guesses < 2000, "the account's ceiling never refused a guess");
            let source = Ipv4Addr::new(127, 2, (self.guesses / 250) as u8, (self.guesses % 250 + 1) as u8);
            let answer = sign_in(source, port, username, &format!("polled-{}", self.guesses)).await;
            match answer.status {
                401 => checked += 1,
                429 => {
                    assert!(answer.text().contains("new addresses"), "{}", answer.text());
                    return checked;
                }
                status => panic!("a guess answered {status}: {}", answer.text()),
            }
        }
    }
}

/// Addresses the owner has never signed in from (127.3.0.x), one for each call.
#[derive(Default)]
struct NewDesks(u8);

impl NewDesks {
    fn next(&mut self) -> Ipv4Addr {
        self.0 += 1;
        Ipv4Addr::new(127, 3, 0, self.0)
    }
}

fn session_of(answer: &RawAnswer) -> String {
    let cookie = answer.header("set-cookie").unwrap_or_else(|| panic!("no cookie: {}", answer.head));
    cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

fn retry_after(answer: &RawAnswer) -> u64 {
    let value = answer.header("retry-after").unwrap_or_else(|| panic!("a 429 without Retry-After: {}", answer.head));
    value.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_wrong_passwords_do_not_lock_the_owner_out_and_a_distributed_guesser_is_slowed() {
    use custodia_service::identity::{ACCOUNT_CHECKS_BURST, ACCOUNT_CHECKS_PER_MINUTE, ACCOUNT_PEER_FAILURES};
    let started = std::time::Instant::now();
    let gateway = Running::start(&[]).await;
    let port = gateway.port;
    gateway.account("judge").await;
    let right = "judge-correct-horse-battery";
    // The judge signs in from their own address once: it becomes one the account is known from.
    assert_eq!(sign_in(OWNER, port, "judge", right).await.status, 200);
    let mut checks = 1u32;

    // A stranger who knows the username guesses from one address until that address is refused for the account.
    let stranger = Ipv4Addr::new(127, 0, 1, 1);
    for n in 0..ACCOUNT_PEER_FAILURES {
        let answer = sign_in(stranger, port, "judge", &format!("guess-{n}")).await;
        assert_eq!(answer.status, 401, "guess {n}: {}", answer.text());
        checks += 1;
    }
    let locked = sign_in(stranger, port, "judge", "one-more-guess").await;
    assert_eq!((locked.status, locked.problem().as_str()), (429, "too-many"), "{}", locked.text());
    assert!(locked.text().contains("from your address"), "{}", locked.text());
    assert_eq!(sign_in(stranger, port, "judge", right).await.status, 429, "the stranger's address stays refused");
    // The judge, from their own address, is not locked out.
    assert_eq!(sign_in(OWNER, port, "judge", right).await.status, 200, "the stranger locked the judge out");

    // A guesser with many addresses, one guess each: the account's ceiling holds them to a few checks and then
    // delays them by seconds (Retry-After), never by the 15 minutes of a lockout.
    let (mut checked, mut delayed) = (0u32, 0u32);
    for n in 1..=40u8 {
        let answer = sign_in(Ipv4Addr::new(127, 0, 2, n), port, "judge", &format!("spread-{n}")).await;
        match answer.status {
            401 => checked += 1,
            429 => {
                delayed += 1;
                assert!(retry_after(&answer) <= 60 / u64::from(ACCOUNT_CHECKS_PER_MINUTE) + 1, "{}", answer.head);
            }
            status => panic!("a guess answered {status}: {}", answer.text()),
        }
    }
    // The ceiling refills while the test runs: allow for every minute it has taken, and one more.
    let refilled = (started.elapsed().as_secs() / 60 + 1) as u32 * ACCOUNT_CHECKS_PER_MINUTE;
    eprintln!("distributed guessing: {checked} passwords checked, {delayed} delayed, {checks} checks before");
    assert!(checks + checked <= ACCOUNT_CHECKS_BURST + refilled, "{checked} distributed guesses were checked");
    assert!(delayed >= 40 - (ACCOUNT_CHECKS_BURST + refilled).saturating_sub(checks), "{delayed} delayed");
    // Meanwhile the judge, from an address they signed in from, still signs in.
    assert_eq!(sign_in(OWNER, port, "judge", right).await.status, 200, "the ceiling shut the owner out");

    // The operator's log says that lockouts began, never for whom or from where.
    let log = gateway.process.log();
    assert!(log.contains("locked out for one account from one address"), "the lockout is not in the log");
    for secret in ["judge", "127.0.1.1", "127.0.2.", "spread-", "guess-"] {
        assert!(!log.contains(secret), "the gateway's log names {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_device_cookie_gets_past_a_ceiling_strangers_keep_spent_also_after_a_restart() {
    use custodia_service::identity::{ACCOUNT_CHECKS_PER_MINUTE, ACCOUNT_PEER_FAILURES, DEVICE_COOKIE_SECONDS};
    let mut gateway = Running::start(&[]).await;
    gateway.account("judge").await;
    gateway.account("mallory").await;
    let right = "judge-correct-horse-battery";

    // Signing in sets the session cookie, then a long-lived device cookie, with the session cookie's rules.
    let signed_in = sign_in(OWNER, gateway.port, "judge", right).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text());
    let cookies = set_cookies(&signed_in);
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert!(cookies[0].starts_with("custodia_session="), "{cookies:?}");
    let device_cookie = &cookies[1];
    assert!(device_cookie.starts_with("custodia_device="), "{device_cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", &format!("Max-Age={DEVICE_COOKIE_SECONDS}")] {
        assert!(device_cookie.contains(attribute), "{device_cookie} lacks {attribute}");
    }
    assert!(!device_cookie.contains("Secure") && !device_cookie.contains("Domain"), "{device_cookie}");
    let device = device_of(&signed_in);
    assert!(!device.contains("judge"), "the device cookie names its account: {device}");
    let spare_device = device_of(&sign_in(OWNER, gateway.port, "judge", right).await);
    assert_ne!(device, spare_device, "each sign-in makes a device cookie of its own");
    let mallorys = device_of(&sign_in(OWNER, gateway.port, "mallory", "mallory-correct-horse-battery").await);
    // A forger's: the judge's cookie with one character of its MAC changed.
    let mut forged = device.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();

    let mut guesser = Guesser::default();
    let mut desks = NewDesks::default();
    // Without a cookie, or with one that is not a cookie of the judge's, a sign-in from an address the judge never
    // used is held to the spent ceiling. (A token may refill between the guesser's refusal and the attempt: each
    // is tried three times, and must be refused at least once.)
    for cookie in [None, Some(&forged), Some(&mallorys)] {
        let mut refused = 0;
        for _ in 0..3 {
            guesser.spend_ceiling(gateway.port, "judge").await;
            let answer = match cookie {
                None => sign_in(desks.next(), gateway.port, "judge", right).await,
                Some(cookie) => sign_in_on_device(desks.next(), gateway.port, "judge", right, cookie).await,
            };
            match answer.status {
                429 => refused += 1,
                200 => {}
                status => panic!("a right password answered {status}: {}", answer.text()),
            }
        }
        assert!(refused >= 1, "a sign-in with {cookie:?} passed the spent ceiling every time");
    }
    // With the judge's device cookie, from a new address, the judge signs in every time.
    for _ in 0..3 {
        guesser.spend_ceiling(gateway.port, "judge").await;
        let answer = sign_in_on_device(desks.next(), gateway.port, "judge", right, &device).await;
        assert_eq!(answer.status, 200, "the stranger's polling locked the judge out: {}", answer.text());
    }

    // The device is counted on its own: wrong passwords with the spare cookie are checked past the spent ceiling,
    // from new addresses each, until that device is refused; the other device is not.
    guesser.spend_ceiling(gateway.port, "judge").await;
    for n in 0..ACCOUNT_PEER_FAILURES {
        let answer = sign_in_on_device(desks.next(), gateway.port, "judge", &format!("typo-{n}"), &spare_device).await;
        assert_eq!(answer.status, 401, "typo {n}: {}", answer.text());
    }
    // Locked, the device is no exemption, and no lockout of its own either (a thief who locks it does not lock out
    // the owner's browser): its sign-ins follow the ordinary rules, which let the judge in from the address they
    // signed in from.
    let locked = sign_in_on_device(OWNER, gateway.port, "judge", right, &spare_device).await;
    assert_eq!(locked.status, 200, "a locked device answered: {}", locked.text());
    guesser.spend_ceiling(gateway.port, "judge").await;
    let spent = std::time::Instant::now();
    assert_eq!(sign_in_on_device(desks.next(), gateway.port, "judge", right, &device).await.status, 200);

    // After a restart the gateway remembers no address, but the ceiling is kept in the catalog (one over every
    // gateway on it, and over restarts: only what refilled meanwhile is checked), and its device cookie key is on
    // disk.
    gateway.restart();
    let checked = guesser.spend_ceiling(gateway.port, "judge").await;
    let refilled = support::refilled_since(spent, ACCOUNT_CHECKS_PER_MINUTE) as u32;
    assert!(checked <= refilled, "a restart gave the guesser {checked} checks; {refilled} refilled meanwhile");
    let mut refused = 0;
    for _ in 0..3 {
        guesser.spend_ceiling(gateway.port, "judge").await;
        if sign_in(desks.next(), gateway.port, "judge", right).await.status == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 1, "without a cookie the judge passed the spent ceiling every time");
    for source in [OWNER, desks.next(), desks.next()] {
        guesser.spend_ceiling(gateway.port, "judge").await;
        let answer = sign_in_on_device(source, gateway.port, "judge", right, &device).await;
        assert_eq!(answer.status, 200, "after a restart the judge's device was held to the ceiling: {}", answer.text());
    }
    eprintln!("device cookies: the guesser sent {} guesses from as many addresses", guesser.guesses);

    // The operator's log says that a device was locked out, never which, for whom or from where.
    let log = gateway.process.log();
    assert!(log.contains("locked out for one account from one device"), "the device's lockout is not in the log");
    for secret in ["judge", "mallory", &device, &spare_device, "127.2.", "127.3.", "polled-", "typo-"] {
        assert!(!log.contains(secret), "the gateway's log names {secret}");
    }
}

/// A sign-in through a trusted reverse proxy at [`PROXY`], which says the client's address (`X-Forwarded-For`),
/// from a browser holding the device cookie `device` if any.
async fn sign_in_via_proxy(port: u16, client: &str, username: &str, password: &str, device: Option<&str>) -> RawAnswer {
    let body = json!({"username": username, "password": password}).to_string();
    let cookie = device.map(|device| format!("custodia_device={device}"));
    let mut headers = vec![("Content-Type", "application/json"), ("X-Forwarded-For", client)];
    if let Some(cookie) = &cookie {
        headers.push(("Cookie", cookie.as_str()));
    }
    http_from(PROXY, port, "POST", "/api/v1/session", &headers, body.as_bytes()).await.unwrap()
}

/// The reverse proxy of [`sign_in_via_proxy`].
const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

/// A flood of 2,000 sign-ins without cookies from as many IPv6 networks (each its own /64 and /56, behind a trusted
/// proxy that names them), 64 at once: half of them wrong passwords for the owner's username, half for usernames
/// nobody has (which fill the hashing queue: each is a first guess for its name). Meanwhile the owner signs in with
/// their device cookie from networks the account never signed in from, and gets in every time (the owners' lane is
/// served first); the guesses at the owner's account have a few passwords checked, the rest are delayed (429)
/// before they reach the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_thousands_of_ipv6_networks_does_not_keep_out_the_owner_with_a_device_cookie() {
    use custodia_service::identity::{ACCOUNT_CHECKS_BURST, ACCOUNT_CHECKS_PER_MINUTE};
    use futures::StreamExt as _;
    use std::sync::atomic::{AtomicU32, Ordering};
    const FLOOD: u32 = 2000;
    const AT_ONCE: usize = 64;
    const OWNER_SIGN_INS: u32 = 5;
    let started = std::time::Instant::now();
    let gateway = Running::start(&[("CUSTODIA_TRUSTED_PROXIES", &PROXY.to_string())]).await;
    let port = gateway.port;
    gateway.account("judge").await;
    let right = "judge-correct-horse-battery";
    // The judge signs in once from the court's network; the browser keeps the device cookie.
    let signed_in = sign_in_via_proxy(port, "2001:db8:ffff::1", "judge", right, None).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text());
    let device = device_of(&signed_in);

    let answered = std::sync::Arc::new(AtomicU32::new(0));
    let counter = answered.clone();
    let flood = tokio::spawn(async move {
        let guesses = futures::stream::iter(0..FLOOD).map(move |n| {
            let counter = counter.clone();
            async move {
                let client = format!("2001:db8:{:x}::1", n + 1);
                let username = if n % 2 == 0 { "judge".to_owned() } else { format!("nobody-{n}") };
                let answer = sign_in_via_proxy(port, &client, &username, &format!("flood-{n}"), None).await;
                counter.fetch_add(1, Ordering::SeqCst);
                (n % 2 == 0, answer.status, answer.problem())
            }
        });
        guesses.buffer_unordered(AT_ONCE).collect::<Vec<_>>().await
    });
    while answered.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // While the flood runs, the judge signs in from one new network after another, with the device cookie.
    let mut during = 0;
    for k in 0..OWNER_SIGN_INS {
        let before = answered.load(Ordering::SeqCst);
        let client = format!("2001:db8:fffe:{k:x}::1");
        let answer = sign_in_via_proxy(port, &client, "judge", right, Some(&device)).await;
        assert_eq!(answer.status, 200, "the flood kept the owner out (sign-in {k}): {}", answer.text());
        during += u32::from(before < FLOOD);
    }
    let answers = flood.await.unwrap();
    let count = |judge: bool, status: u16| {
        let answered = answers.iter().filter(|(at_judge, answered, problem)| {
            *at_judge == judge && *answered == status && (status != 429 || problem == "too-many")
        });
        answered.count() as u32
    };
    let (checked, delayed) = (count(true, 401), count(true, 429));
    let (strangers_checked, strangers_refused) = (count(false, 401), count(false, 429));
    eprintln!(
        "{FLOOD} wrong passwords from as many networks: at the owner's account {checked} checked, {delayed} \
         delayed; at unused names {strangers_checked} checked, {strangers_refused} refused; the owner signed in \
         {OWNER_SIGN_INS} times, {during} of them while the flood ran"
    );
    assert!(during >= 1, "the owner's sign-ins all came after the flood");
    assert_eq!(checked + delayed, FLOOD / 2, "every guess at the owner's account is answered 401 or 429");
    assert_eq!(strangers_checked + strangers_refused, FLOOD / 2, "every other guess is answered 401 or 429");
    assert!(strangers_refused > 0, "the hashing queue was never full, so the owners' lane was never needed");
    // The account's ceiling: its burst, and what it refilled while the test ran (every minute, and one more).
    let refilled = (started.elapsed().as_secs() / 60 + 1) as u32 * ACCOUNT_CHECKS_PER_MINUTE;
    assert!(checked <= ACCOUNT_CHECKS_BURST + refilled, "{checked} of the flood's passwords were checked");

    // The operator's log names neither the account nor a network nor a password.
    let log = gateway.process.log();
    for secret in ["judge", "nobody-", "2001:db8", "flood-", &device] {
        assert!(!log.contains(secret), "the gateway's log names {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_addresses_holding_connections_leave_room_for_a_legitimate_client() {
    use custodia_server::listen::PEER_SHARE_OF_CONNECTIONS;
    // 512 open files: 256 kept in reserve and 256 connections, of which one address may hold a sixteenth.
    const OPEN_FILES: u64 = 512;
    const CONNECTIONS: usize = 256;
    const ADDRESSES: usize = 4;
    let share = CONNECTIONS / PEER_SHARE_OF_CONNECTIONS;
    // The attackers need more sockets than the gateway may have.
    custodia_server::listen::raise_open_file_limit();
    // A request head may take 5 minutes: nothing here is closed for being slow.
    let gateway = Running::start_within(&[("CUSTODIA_HEADER_TIMEOUT_SECONDS", "300")], Some(OPEN_FILES)).await;
    // Four addresses open 100 connections each, sending request heads that never end: with the configured 256 per
    // address, the first three would hold all 256.
    let mut held = Vec::new();
    for n in 0..ADDRESSES * 100 {
        let source = Ipv4Addr::new(127, 0, 4, 1 + (n % ADDRESSES) as u8);
        let Ok(mut stream) = support::connect_from(source, gateway.port).await else { continue };
        if tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .is_ok()
        {
            held.push(stream);
        }
    }
    // Meanwhile a legitimate client, from an address of its own, is served.
    let health = http_from(OWNER, gateway.port, "GET", "/healthz", &[], b"").await;
    let health = health.unwrap_or_else(|err| panic!("the legitimate client was turned away: {err}"));
    assert_eq!(health.status, 200, "{}", health.text());
    let me = gateway.api("GET", "/api/v1/me", &gateway.admin, Value::Null).await;
    assert_eq!(me.status, 200, "{}", me.text());

    // The attackers still hold their share each, no more: the rest were closed as soon as they were accepted.
    let checks = held.iter_mut().map(|stream| support::closed_by_server(stream, std::time::Duration::from_secs(2)));
    let closed = futures::future::join_all(checks).await;
    let open = closed.iter().filter(|closed| !**closed).count();
    eprintln!("{} connections opened from {ADDRESSES} addresses; {open} held, {share} allowed each", held.len());
    assert!(open <= ADDRESSES * share, "{open} connections held from {ADDRESSES} addresses");
    assert!(open >= ADDRESSES, "the attackers held no connections: {open}");

    // The gateway said at start-up what it allows, beside what was configured.
    let log = gateway.process.log();
    assert!(log.contains(&format!("max_connections={CONNECTIONS}")), "effective budget not logged: {log}");
    assert!(log.contains(&format!("max_connections_per_peer={share}")), "effective share not logged: {log}");
    assert!(log.contains("configured_max_connections_per_peer=256"), "configured share not logged: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stay_within_the_accounts_quota_and_places() {
    const QUOTA: u64 = 200_000;
    let gateway = Running::start(&[
        ("CUSTODIA_ACCOUNT_STORED_BYTES", &QUOTA.to_string()),
        ("CUSTODIA_DIRECT_UPLOADS_PER_ACCOUNT", "2"),
        ("CUSTODIA_BODY_IDLE_SECONDS", "2"),
    ])
    .await;
    let sessions = gateway.case("case-1", &[("clerk", "clerk"), ("prosecutor", "prosecutor")]).await;
    let (clerk, prosecutor) = (&sessions[0], &sessions[1]);
    let first = gateway.upload(clerk, &vec![b'a'; 150_000]).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let records = gateway.log_size().await;

    // Declared over what is left: refused before a byte is staged.
    let declared = gateway.upload(clerk, &vec![b'b'; 60_000]).await;
    assert_eq!((declared.status, declared.problem().as_str()), (507, "quota-exceeded"), "{}", declared.text());
    assert!(declared.text().contains("quota"), "{}", declared.text());
    // Undeclared (chunked), and passing the quota mid-stream: cut off, nothing kept.
    let cookie = format!("custodia_session={clerk}");
    let chunk = vec![b'c'; 10_000];
    let mut body = Vec::new();
    for _ in 0..6 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let headers = [
        ("Cookie", cookie.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
        ("Content-Type", "text/plain"),
        ("Transfer-Encoding", "chunked"),
    ];
    let streamed = http_from(OWNER, gateway.port, "POST", UPLOAD, &headers, &body).await.unwrap();
    assert_eq!((streamed.status, streamed.problem().as_str()), (507, "quota-exceeded"), "{}", streamed.text());
    // A resumable upload declaring more than is left is refused at creation.
    let metadata = "case Y2FzZS0x,purpose c3RhdGVtZW50";
    let tus = [
        ("Cookie", cookie.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
        ("Tus-Resumable", "1.0.0"),
        ("Upload-Length", "60000"),
        ("Upload-Metadata", metadata),
    ];
    let created = http_from(OWNER, gateway.port, "POST", "/api/v1/uploads", &tus, b"").await.unwrap();
    assert_eq!((created.status, created.problem().as_str()), (507, "quota-exceeded"), "{}", created.text());
    // Six creations at once, each within what is left but not two of them: the checks and the creation take
    // turns, so one is created and the others are refused.
    let tus_within = [
        ("Cookie", cookie.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
        ("Tus-Resumable", "1.0.0"),
        ("Upload-Length", "30000"),
        ("Upload-Metadata", metadata),
    ];
    let at_once = (0..6).map(|_| http_from(OWNER, gateway.port, "POST", "/api/v1/uploads", &tus_within, b""));
    let answers: Vec<RawAnswer> = futures::future::join_all(at_once).await.into_iter().map(Result::unwrap).collect();
    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    assert_eq!(statuses.iter().filter(|&&status| status == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|&status| status == 201 || status == 507), "{statuses:?}");
    let location =
        answers.iter().find(|answer| answer.status == 201).and_then(|answer| answer.header("location")).unwrap();
    let remove = [("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "same-origin"), ("Tus-Resumable", "1.0.0")];
    assert_eq!(http_from(OWNER, gateway.port, "DELETE", &location, &remove, b"").await.unwrap().status, 204);
    // Within what is left, the same account still uploads; another account has a quota of its own.
    assert_eq!(gateway.upload(clerk, &vec![b'd'; 40_000]).await.status, 201);
    assert_eq!(gateway.upload(prosecutor, &vec![b'e'; 150_000]).await.status, 201);
    assert_eq!(gateway.log_size().await, records + 2, "refused uploads reached the log");
    assert_eq!(gateway.staged(), 0, "refused uploads left staged bytes");

    // Direct uploads at once: two per account. Two that declare 1,000 bytes and send 10 hold both places; a third
    // is refused at once; the two are cut off when their body goes idle, and their places come back.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = support::connect_from(OWNER, gateway.port).await.unwrap();
        let head = format!(
            "POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: custodia_session={prosecutor}\r\n\
             Sec-Fetch-Site: same-origin\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n0123456789"
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes()).await.unwrap();
        held.push(stream);
    }
    // The two are under way once the gateway has staged their first bytes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while gateway.staged() < 2 {
        assert!(std::time::Instant::now() < deadline, "the held uploads never started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let third = gateway.upload(prosecutor, b"a third at once").await;
    assert_eq!((third.status, third.problem().as_str()), (429, "too-many"), "{}", third.text());
    assert!(third.text().contains("under way"), "{}", third.text());
    for stream in &mut held {
        let answer = support::read_answer(stream).await.unwrap();
        assert_eq!((answer.status, answer.problem().as_str()), (400, "upload-interrupted"), "{}", answer.text());
    }
    assert_eq!(gateway.staged(), 0, "a trickling upload left staged bytes");
    assert_eq!(gateway.upload(prosecutor, b"after the idle ones").await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_refusal_flood_costs_a_few_records_and_new_uploads_have_a_rate() {
    const REFUSALS: u32 = 5;
    const UPLOADS: u32 = 12;
    let gateway = Running::start(&[
        ("CUSTODIA_REFUSAL_RECORDS_PER_MINUTE", &REFUSALS.to_string()),
        ("CUSTODIA_UPLOADS_PER_MINUTE", &UPLOADS.to_string()),
    ])
    .await;
    let sessions = gateway.case("case-1", &[("clerk", "clerk"), ("witness", "witness")]).await;
    let (clerk, witness) = (&sessions[0], &sessions[1]);

    // New uploads: the rate's burst, then 429 with Retry-After (a slow run refills a few on the way).
    let mut artefacts = Vec::new();
    let mut limited = None;
    for n in 0..4 * UPLOADS {
        let answer = gateway.upload(clerk, format!("statement {n}").as_bytes()).await;
        match answer.status {
            201 => artefacts.push(answer.json()["artefact"].as_str().unwrap().to_owned()),
            429 => {
                limited = Some(answer);
                break;
            }
            status => panic!("an upload answered {status}: {}", answer.text()),
        }
    }
    let limited = limited.expect("the upload rate never ran out");
    assert!(retry_after(&limited) >= 1);
    assert!(artefacts.len() >= UPLOADS as usize, "{} uploads before the rate ran out", artefacts.len());

    // The witness asks for every artefact, twice: each is a refusal of its own (role_forbids, another artefact).
    let before = gateway.log_size().await;
    let flood_started = std::time::Instant::now();
    let (mut forbidden, mut too_many) = (0, 0);
    for _round in 0..2 {
        for artefact in &artefacts {
            let answer =
                gateway.api("GET", &format!("/api/v1/artefacts/{artefact}?purpose=review"), witness, Value::Null).await;
            match (answer.status, answer.problem().as_str()) {
                (403, "role-forbidden") => forbidden += 1,
                (429, "too-many") => {
                    assert!(retry_after(&answer) >= 1);
                    too_many += 1;
                }
                other => panic!("a refused view answered {other:?}: {}", answer.text()),
            }
        }
    }
    let recorded = gateway.log_size().await - before;
    eprintln!("refusal flood: {forbidden} refused (403), {too_many} over budget (429), {recorded} records");
    // The budget's burst is recorded, and what it refilled while the flood ran; repeats of recorded refusals are
    // counted in their window (403, no record); the rest are held for one aggregated record per minute.
    let elapsed = flood_started.elapsed().as_secs_f64();
    let slack = support::refilled_since(flood_started, REFUSALS) as u64 + (elapsed / 60.0) as u64 + 1;
    assert!(recorded >= u64::from(REFUSALS) && recorded <= u64::from(REFUSALS) + slack, "{recorded} records");
    assert!(too_many as u64 + u64::from(REFUSALS) + slack >= artefacts.len() as u64, "{too_many} answered 429");
    assert_eq!(forbidden + too_many, 2 * artefacts.len());

    // Evidence is never refused its record: the witness may still upload (a separate budget), and it is logged.
    let upload = gateway.upload(witness, b"the witness's own statement").await;
    assert_eq!(upload.status, 201, "{}", upload.text());
    assert!(gateway.log_size().await > before + recorded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_uploads_at_once_leave_the_descriptor_reserve_untouched() {
    // 512 open files: 256 kept in reserve, 256 places for connections; the uploads' staging files have a twelfth of
    // that of their own, from the reserve.
    const OPEN_FILES: u64 = 512;
    const PLACES: usize = 256;
    custodia_server::listen::raise_open_file_limit();
    let gateway = Running::start_within(
        &[
            ("CUSTODIA_DIRECT_UPLOADS_PER_ACCOUNT", "1000"),
            ("CUSTODIA_UPLOADS_PER_MINUTE", "1000"),
            ("CUSTODIA_BODY_IDLE_SECONDS", "20"),
        ],
        Some(OPEN_FILES),
    )
    .await;
    let sessions = gateway.case("case-1", &[("clerk", "clerk")]).await;
    let pid = gateway.process.pid();
    let open_files = || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count());

    // 300 uploads from four addresses, each declaring 100,000 bytes, sending ten and then nothing: with a staging
    // file each they would hold 300 sockets and 300 staging files, past the limit.
    let mut held = Vec::new();
    for n in 0..300u32 {
        let source = Ipv4Addr::new(127, 0, 3, 1 + (n % 4) as u8);
        let Ok(mut stream) = support::connect_from(source, gateway.port).await else { continue };
        let head = format!(
            "POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: custodia_session={}\r\n\
             Sec-Fetch-Site: same-origin\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n0123456789",
            sessions[0]
        );
        if tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes()).await.is_ok() {
            held.push(stream);
        }
    }
    // While they are held: the most staging files and open descriptors seen, sampled for a while.
    let (mut most_staged, mut most_files) = (0, 0);
    for _ in 0..100 {
        most_staged = most_staged.max(gateway.staged());
        most_files = most_files.max(open_files());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!("{} uploads sent; at most {most_staged} staged at once and {most_files} files open", held.len());
    let staging = PLACES / custodia_server::listen::STAGING_SHARE;
    assert!(most_staged >= staging / 2, "the attack never held uploads ({most_staged} staged)");
    assert!(most_staged <= staging, "{most_staged} uploads staged at once, past the {staging} staging descriptors");
    assert!((most_files as u64) < OPEN_FILES - 64, "{most_files} files open of {OPEN_FILES}: the reserve was used");
    drop(held);

    // Afterwards the gateway serves, and nothing ran out of descriptors.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while gateway.staged() > 0 {
        assert!(std::time::Instant::now() < deadline, "the abandoned uploads stayed staged");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(gateway.upload(&sessions[0], b"after the flood").await.status, 201);
    assert!(!gateway.process.log().contains("Too many open files"), "{}", gateway.process.log());
}

/// In-process, to move the clock past the window: what the diverted refusals become on the record.
#[tokio::test]
async fn refusals_past_the_budget_become_one_record_with_their_count_and_the_actions_tried() {
    use support::{As, TestGateway};
    let gateway = TestGateway::start_with(|config| config.quotas.refusal_records_per_minute = 2).await;
    gateway.case("case-1").await;
    let (clerk, clerk_session) = gateway.person("clerk", "IT").await;
    gateway.member("case-1", &clerk, "clerk").await;
    let (witness, witness_session) = gateway.person("witness", "NL").await;
    gateway.member("case-1", &witness, "witness").await;
    let mut artefacts = Vec::new();
    for n in 0..6 {
        let reply =
            gateway.upload("case-1", "purpose=statement", As::Session(&clerk_session), format!("s{n}").into()).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        artefacts.push(reply.json()["artefact"].as_str().unwrap().to_owned());
    }
    let before = gateway.ledger_size();
    let mut over_budget = 0;
    for artefact in &artefacts {
        for path in
            [format!("/api/v1/artefacts/{artefact}?purpose=review"), format!("/api/v1/artefacts/{artefact}/timeline")]
        {
            let reply = gateway.get(&path, Some(As::Session(&witness_session))).await;
            match reply.status.as_u16() {
                403 => {}
                429 => {
                    assert!(reply.headers.contains_key("retry-after"));
                    over_budget += 1;
                }
                status => panic!("{path} answered {status}"),
            }
        }
    }
    assert_eq!(gateway.ledger_size() - before, 2, "the budget's two refusals are recorded, no more");
    assert_eq!(over_budget, 2 * artefacts.len() - 2);

    // When the window has closed, the next activity writes one record for all of them.
    gateway.clock.advance(61);
    assert_eq!(gateway.state.gateway.flush_refusals().await.unwrap(), 1);
    let index = before + 2;
    assert_eq!(gateway.ledger_size(), index + 1);
    let record = gateway.ledger_record(index).await;
    assert_eq!(record["event"]["type"], "access_refused", "{record}");
    assert_eq!(record["event"]["code"], "role_forbids", "{record}");
    assert!(record["event"].get("artefact").is_none(), "one record for many artefacts names none: {record}");
    assert_eq!(record["repeated"]["count"], over_budget as u64, "{record}");
    assert_eq!(gateway.opened(index, "action").await.as_deref(), Some("view_artefact, view_timeline"));
    assert_eq!(gateway.opened(index, "case").await.as_deref(), Some("case-1"));
}

/// Uploads at once, direct and resumable, declared and undeclared, each within what is left of the quota but not
/// all together: only those that fit are accepted, and what the account holds never passes its quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_at_once_never_hold_more_than_the_quota_together() {
    const QUOTA: u64 = 100_000;
    const SIZE: usize = 40_000;
    let gateway = Running::start(&[
        ("CUSTODIA_ACCOUNT_STORED_BYTES", &QUOTA.to_string()),
        ("CUSTODIA_DIRECT_UPLOADS_PER_ACCOUNT", "10"),
        ("CUSTODIA_BODY_IDLE_SECONDS", "60"),
    ])
    .await;
    let sessions = gateway.case("case-1", &[("clerk", "clerk"), ("prosecutor", "prosecutor")]).await;
    let (clerk, prosecutor) = (&sessions[0], &sessions[1]);

    // Declared lengths at once: three direct uploads and three resumable creations of 40,000 bytes each.
    let cookie = format!("custodia_session={clerk}");
    let tus = [
        ("Cookie", cookie.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
        ("Tus-Resumable", "1.0.0"),
        ("Upload-Length", "40000"),
        ("Upload-Metadata", "case Y2FzZS0x,purpose c3RhdGVtZW50"),
    ];
    let body = vec![b'a'; SIZE];
    let direct = (0..3).map(|_| futures::future::Either::Left(gateway.upload(clerk, &body)));
    let resumable = (0..3).map(|_| {
        futures::future::Either::Right(async {
            http_from(OWNER, gateway.port, "POST", "/api/v1/uploads", &tus, b"").await.unwrap()
        })
    });
    let answers = futures::future::join_all(direct.chain(resumable)).await;
    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    let accepted = statuses.iter().filter(|&&status| status == 201).count();
    eprintln!("declared at once: {statuses:?}");
    assert!(statuses.iter().all(|&status| status == 201 || status == 507), "{statuses:?}");
    assert!(answers.iter().filter(|a| a.status == 507).all(|a| a.problem() == "quota-exceeded"));
    assert!((1..=2).contains(&accepted), "{accepted} of six uploads of {SIZE} bytes within a quota of {QUOTA}");
    let open_resumable = statuses[3..].iter().filter(|&&status| status == 201).count();

    // Undeclared (chunked) uploads at once: each sends its first chunk, and once all three are staged, the rest.
    let chunk = |bytes: &[u8]| {
        let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
        framed.extend_from_slice(bytes);
        framed.extend_from_slice(b"\r\n");
        framed
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = support::connect_from(OWNER, gateway.port).await.unwrap();
        let head = format!(
            "POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: custodia_session={prosecutor}\r\n\
             Sec-Fetch-Site: same-origin\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let mut first = head.into_bytes();
        first.extend_from_slice(&chunk(&[b'b'; 10_000]));
        tokio::io::AsyncWriteExt::write_all(&mut stream, &first).await.unwrap();
        held.push(stream);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while gateway.staged() < 3 {
        assert!(std::time::Instant::now() < deadline, "the chunked uploads never started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.extend_from_slice(&chunk(&[b'c'; 10_000]));
    }
    rest.extend_from_slice(b"0\r\n\r\n");
    let rest = &rest;
    let finish = held.iter_mut().map(|stream| async move {
        // A stream the gateway already cut off may refuse the rest; its answer is what counts.
        let _ = tokio::io::AsyncWriteExt::write_all(stream, rest).await;
        support::read_answer(stream).await.unwrap()
    });
    let answers = futures::future::join_all(finish).await;
    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    eprintln!("undeclared at once: {statuses:?}");
    assert!(statuses.iter().all(|&status| status == 201 || status == 507), "{statuses:?}");
    let accepted = statuses.iter().filter(|&&status| status == 201).count();
    assert!((1..=2).contains(&accepted), "{accepted} of three uploads of {SIZE} bytes within a quota of {QUOTA}");
    for answer in answers.iter().filter(|answer| answer.status == 201) {
        assert_eq!(answer.json()["size"], SIZE, "{}", answer.text());
    }
    // Whatever was refused is gone (the clerk's open resumable uploads stay staged); the prosecutor holds exactly
    // what was accepted: what is left of the quota fits, and one byte more does not.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while gateway.staged() > open_resumable {
        assert!(std::time::Instant::now() < deadline, "refused uploads stayed staged");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let left = QUOTA as usize - accepted * SIZE;
    let over = gateway.upload(prosecutor, &vec![b'd'; left + 1]).await;
    assert_eq!((over.status, over.problem().as_str()), (507, "quota-exceeded"), "{}", over.text());
    let within = gateway.upload(prosecutor, &vec![b'd'; left]).await;
    assert_eq!(within.status, 201, "{}", within.text());
}

/// A member's recorded steps have a rate of their own: each download (each range of a play) is a custody record,
/// public for good, so one member, or a leaked token used from any number of addresses, could otherwise fill the
/// log. Past the budget a download is answered 429 before anything is recorded or sent. A case export, which
/// makes a record for each artefact and one for itself, takes as many steps, or the whole budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_recorded_steps_have_a_rate_and_a_case_export_takes_a_step_per_record() {
    const STEPS: u32 = 6;
    let gateway = Running::start(&[("CUSTODIA_CUSTODY_RECORDS_PER_MINUTE", &STEPS.to_string())]).await;
    let sessions = gateway.case("case-1", &[("clerk", "clerk"), ("prosecutor", "prosecutor")]).await;
    let (clerk, prosecutor) = (&sessions[0], &sessions[1]);
    let mut artefacts = Vec::new();
    for n in 0..(STEPS + 2) {
        // Evidence entering custody is never refused its record: uploads have a budget of their own.
        let answer = gateway.upload(clerk, format!("statement {n}").as_bytes()).await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        artefacts.push(answer.json()["artefact"].as_str().unwrap().to_owned());
    }
    let settled = settled_log_size(&gateway).await;
    let downloads_started = std::time::Instant::now();
    let (mut sent, mut limited) = (0u64, None);
    for round in 0..4 {
        for artefact in &artefacts {
            let path = format!("/api/v1/artefacts/{artefact}/content?purpose=review&round={round}");
            let answer = gateway.api("GET", &path, prosecutor, Value::Null).await;
            match answer.status {
                200 => sent += 1,
                429 => {
                    assert_eq!(answer.problem(), "too-many", "{}", answer.text());
                    assert!(retry_after(&answer) >= 1);
                    let kind = answer.header("content-type").unwrap_or_default();
                    assert_eq!(kind, "application/problem+json", "a problem, not the evidence");
                    limited.get_or_insert(answer);
                }
                status => panic!("a download answered {status}: {}", answer.text()),
            }
        }
    }
    assert!(limited.is_some(), "the budget never ran out");
    // A slow run refills some on the way: one every tenth of a minute.
    let refilled = support::refilled_since(downloads_started, STEPS) as u64;
    assert!(sent >= u64::from(STEPS) && sent <= u64::from(STEPS) + refilled.max(2), "{sent} downloads sent");
    assert_eq!(settled_log_size(&gateway).await, settled + sent, "one record for each download sent, none for a 429");

    // The clerk's own budget: a case export of more artefacts than it holds takes it all, and is made whole.
    let export = gateway.api("POST", "/api/v1/cases/case-1/exports?purpose=review", clerk, Value::Null).await;
    assert_eq!(export.status, 200, "{}", export.text());
    let again = gateway.api("POST", "/api/v1/cases/case-1/exports?purpose=review", clerk, Value::Null).await;
    assert_eq!((again.status, again.problem().as_str()), (429, "too-many"), "{}", again.text());
    // It waits for the whole budget to come back: most of a minute.
    assert!(retry_after(&again) > 30, "{}", again.head);
}

/// The log's size once it stops growing (records are appended in tasks of their own, and checkpoints follow).
async fn settled_log_size(gateway: &Running) -> u64 {
    let mut size = gateway.log_size().await;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let now = gateway.log_size().await;
        if now == size {
            return size;
        }
        size = now;
    }
}

/// With every download place held, a request that will be refused (an artefact that does not exist, a case the
/// caller is no member of) takes no place, and so closes nobody's stream to make one (review 16, B2).
#[tokio::test]
async fn a_request_that_will_be_refused_never_takes_a_download_place() {
    use custodia_server::outflow::Stream;
    let gateway = support::TestGateway::start().await;
    let (_, outsider) = gateway.person("outsider", "IT").await;
    let holders = Stream::Artefact.in_all() / Stream::Artefact.per_account();
    let held: Vec<_> = (0..Stream::Artefact.in_all())
        .map(|n| gateway.state.outflow.start(&format!("holder-{}", n % holders), Stream::Artefact, None).unwrap())
        .collect();
    let outsider = Some(support::As::Session(&outsider));
    for _ in 0..5 {
        let reply = gateway.get("/api/v1/artefacts/art-ghost/content?purpose=trial", outsider).await;
        assert_eq!(reply.status, 404);
        let reply =
            gateway.send_bytes("POST", "/api/v1/cases/case-ghost/exports?purpose=trial", outsider, &[], "").await;
        assert_eq!(reply.status, 404);
    }
    // A member's requests refused after their membership is checked (by the provider's policy, or for a range
    // past the end) take no place either (review 17).
    let (clerk_id, clerk) = gateway.person("clerk.one", "IT").await;
    gateway.case("case-1").await;
    gateway.member("case-1", &clerk_id, "clerk").await;
    let clerk = support::As::Session(&clerk);
    let uploaded = gateway.upload("case-1", "purpose=intake", clerk, b"a statement".to_vec()).await;
    let artefact = uploaded.json()["artefact"].as_str().unwrap().to_owned();
    let policy = json!({ "tlp": "TLP:GREEN", "provider": "the court", "permitted_purposes": ["trial"],
        "permitted_recipients": [], "permitted_jurisdictions": [], "onward_transfer": "permitted" });
    let set = gateway.call("PUT", &format!("/api/v1/artefacts/{artefact}/policy"), Some(clerk), policy).await;
    assert_eq!(set.status, 200);
    for _ in 0..3 {
        let other = format!("/api/v1/artefacts/{artefact}/content?purpose=gossip");
        assert_eq!(gateway.get(&other, Some(clerk)).await.status, 403);
        let past = format!("/api/v1/artefacts/{artefact}/content?purpose=trial");
        let reply = gateway.send_bytes("GET", &past, Some(clerk), &[("range", "bytes=999999-")], "").await;
        assert_eq!(reply.status, 416);
        let export = format!("/api/v1/artefacts/{artefact}/exports?purpose=gossip");
        assert_eq!(gateway.send_bytes("POST", &export, Some(clerk), &[], "").await.status, 403);
        let case = "/api/v1/cases/case-1/exports?purpose=gossip";
        assert_eq!(gateway.send_bytes("POST", case, Some(clerk), &[], "").await.status, 403);
    }
    let cut = held.iter().filter(|leaving| leaving.meter().sent(1).is_err()).count();
    assert_eq!(cut, 0, "a refused request closed {cut} streams to make room for itself");
}
