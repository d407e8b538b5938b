//! The `custodia` binary as a user runs it: first start makes a key, the log is served over HTTP, and
//! `custodia log verify` audits it from a directory or a URL and names what is wrong when it is forged.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use custodia_catalog::Catalog;
use custodia_core::{ActorId, CaseId, CustodyEvent, CustodyRecord, Openings, Salt, Sha256};
use custodia_ledger::{Log, LogOptions, LogSigner};
use custodia_server::config::ServeConfig;
use custodia_service::clock::Clock;

mod support;

fn custodia(args: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custodia"))
        .args(args)
        .env("CUSTODIA_DATA_DIR", data_dir)
        .env("CUSTODIA_ORIGIN", "custodia.test/log")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Record `i` about case `case`, with the openings of its commitments (each under a salt of its own, the case
/// reference's too, as the gateway makes them).
fn record(i: u64, case: &str) -> (Vec<u8>, Openings) {
    let salt = |n: u8| Salt::from_bytes(*Sha256::of(&[&i.to_be_bytes()[..], &[n]].concat()).as_bytes());
    let mut openings = Openings::default();
    let case = openings.commit("case", salt(2), case);
    let purpose = openings.commit("purpose", salt(0), "disclosure to the defence");
    let site = openings.commit("site", salt(1), "defence chambers");
    let record = CustodyRecord::new(
        case,
        ActorId::new("acct-1").unwrap(),
        jiff::Timestamp::from_second(1_800_000_000 + i as i64).unwrap(),
        purpose,
        CustodyEvent::ArtefactAccessed {
            artefact: custodia_core::ArtefactId::new(format!("art-{i}")).unwrap(),
            access: custodia_core::AccessKind::Download,
            site,
        },
    );
    (record.to_entry().unwrap(), openings)
}

/// Appends custody records about `case` through the library, as the gateway does, while no server holds the log.
/// With the gateway's `catalog`, their openings are kept first, as the gateway keeps them; without, the log is
/// only audited, never served.
async fn append_records(data_dir: &Path, range: std::ops::Range<u64>, case: &str, catalog: Option<&Catalog>) {
    let key = std::fs::read_to_string(data_dir.join("keys/gateway.key")).unwrap();
    let log = Log::open_local(&data_dir.join("log"), LogSigner::from_skey(&key).unwrap(), LogOptions::default())
        .await
        .unwrap();
    for i in range {
        let (entry, openings) = record(i, case);
        if let Some(catalog) = catalog {
            let openings = String::from_utf8(openings.to_canonical()).unwrap();
            catalog.store_openings(&Sha256::of(&entry).to_hex(), &openings).await.unwrap();
        }
        log.append(entry).await.unwrap();
    }
    log.close().await;
}

/// Makes case `case` as an administrator does, through a gateway opened in-process on `data` and stopped again,
/// and returns its catalog. Every record a gateway writes has its openings in the catalog, and a gateway that
/// finds a record in its log whose case it cannot open when it starts refuses to start.
async fn case_known_to_the_gateway(data: tempfile::TempDir, case: &str) -> (tempfile::TempDir, Catalog) {
    let case = CaseId::new(case).unwrap();
    let data = std::thread::spawn(move || {
        // A runtime of its own: dropping it stops every task of that gateway, which releases the log.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let mut config = ServeConfig::with_data_dir(data.path());
            config.gateway.origin = "custodia.test/log".into();
            config.probe.program = Some(env!("CARGO_BIN_EXE_custodia").into());
            let state = custodia_server::startup::open(&config, Clock::default()).await.unwrap();
            let password = std::fs::read_to_string(data.path().join("keys/initial-admin-password")).unwrap();
            let mut gateway = support::TestGateway::over(data, state, Clock::default(), config.gateway.log_dir());
            gateway.admin = gateway.sign_in("admin", password.trim()).await;
            gateway.case(case.as_str()).await;
            let support::TestGateway { dir, .. } = gateway;
            dir
        })
    })
    .join()
    .unwrap();
    let catalog = Catalog::connect(&ServeConfig::with_data_dir(data.path()).database_url()).await.unwrap();
    (data, catalog)
}

fn serve(data_dir: &Path) -> (support::GatewayProcess, String) {
    let (process, port) = support::spawn_gateway(data_dir, &[("CUSTODIA_ORIGIN", "custodia.test/log".as_ref())]);
    (process, format!("http://127.0.0.1:{port}/log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_serve_and_verify_from_directory_and_url() {
    let data = tempfile::tempdir().unwrap();
    let keygen = custodia(&["keygen"], data.path());
    assert!(keygen.status.success(), "{}", text(&keygen));
    let vkey = String::from_utf8(keygen.stdout).unwrap().trim().to_owned();
    assert!(vkey.starts_with("custodia.test/log+"), "{vkey}");
    let again = custodia(&["keygen"], data.path());
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), vkey, "keygen never replaces a key");

    let (data, catalog) = case_known_to_the_gateway(data, "case-1").await;
    append_records(data.path(), 0..300, "case-1", Some(&catalog)).await;
    let state = data.path().join("seen-checkpoint");
    let state_arg = state.to_str().unwrap();
    let log_dir = data.path().join("log");
    let verified =
        custodia(&["log", "verify", log_dir.to_str().unwrap(), "--key", &vkey, "--state", state_arg], data.path());
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains("300 entries"), "{}", text(&verified));

    append_records(data.path(), 300..520, "case-1", Some(&catalog)).await;
    drop(catalog);
    let (_server, url) = serve(data.path());
    let verified = custodia(&["log", "verify", &url, "--key", &vkey, "--state", state_arg], data.path());
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains("extends the checkpoint of size 300"), "{}", text(&verified));
    assert!(text(&verified).contains("520 entries"), "{}", text(&verified));

    let stranger = LogSigner::generate("custodia.test/log").unwrap().verifier().to_string();
    let refused = custodia(&["log", "verify", &url, "--key", &stranger], data.path());
    assert!(!refused.status.success());
    assert!(text(&refused).contains("no signature from a trusted key"), "{}", text(&refused));
}

/// `custodia keygen` makes every key a gateway would make on first start (what several gateways of one log share, as
/// one Secret in deploy/k8s/scale-out), owner-only, never replacing one; the gateway's other commands then use them
/// as they are, the witness's name included.
#[test]
fn keygen_makes_every_shared_key_once_and_the_gateway_uses_them() {
    use std::os::unix::fs::PermissionsExt as _;
    const FILES: [&str; 4] = ["gateway.key", "witness.key", "partner-request.key", "device-cookie.key"];
    let data = tempfile::tempdir().unwrap();
    let keys = data.path().join("keys");
    let named = |args: &[&str], witness: &str| {
        Command::new(env!("CARGO_BIN_EXE_custodia"))
            .args(args)
            .env("CUSTODIA_DATA_DIR", data.path())
            .env("CUSTODIA_ORIGIN", "custodia.test/log")
            .env("CUSTODIA_WITNESS_NAME", witness)
            .output()
            .unwrap()
    };
    let made = named(&["keygen"], "court.test/witness");
    assert!(made.status.success(), "{}", text(&made));
    let vkey = String::from_utf8(made.stdout.clone()).unwrap().trim().to_owned();
    assert!(vkey.starts_with("custodia.test/log+"), "{vkey}");
    let said = String::from_utf8_lossy(&made.stderr);
    let contents: Vec<Vec<u8>> = FILES
        .iter()
        .map(|file| {
            let path = keys.join(file);
            assert!(said.contains(&format!("made key {}", path.display())), "{file}: {said}");
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
            std::fs::read(&path).unwrap()
        })
        .collect();
    assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::read_dir(&keys).unwrap().count(), FILES.len(), "nothing else is left in keys/");

    let again = named(&["keygen"], "court.test/witness");
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), vkey);
    assert_eq!(String::from_utf8_lossy(&again.stderr).matches("kept existing key").count(), FILES.len());

    // The card the gateway publishes is made of these keys, not of new ones.
    let card = named(&["partners", "card", "--jurisdiction", "IT"], "court.test/witness");
    assert!(card.status.success(), "{}", text(&card));
    let card: serde_json::Value = serde_json::from_slice(&card.stdout).unwrap();
    assert_eq!(card["log_vkey"], vkey.as_str());
    assert!(card["witness_vkey"].as_str().unwrap().starts_with("court.test/witness+"), "{card}");
    for (file, before) in FILES.iter().zip(&contents) {
        assert!(std::fs::read(keys.join(file)).unwrap() == *before, "{file} changed");
    }
    // A witness key is bound to its name: a gateway configured with another refuses it rather than make a second.
    let renamed = named(&["partners", "card", "--jurisdiction", "IT"], "other.test/witness");
    assert!(!renamed.status.success());
    assert!(text(&renamed).contains("set CUSTODIA_WITNESS_NAME to match"), "{}", text(&renamed));
}

/// Logs written to a pipe or a file, as a service manager, a container runtime or CI captures them, are plain text:
/// colours (ANSI escape sequences) are only for a person at a terminal.
#[test]
fn logs_captured_from_a_pipe_carry_no_colour_codes() {
    let data = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_custodia"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("CUSTODIA_DATA_DIR", data.path())
        .env("CUSTODIA_ORIGIN", "custodia.test/log")
        // Neither a log filter nor NO_COLOR: the gateway's own defaults decide.
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            // An answer from the server proves that it logged its start, which comes before serving.
            std::io::Write::write_all(&mut stream, b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
            let mut answer = String::new();
            std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
            break answer;
        }
        if Instant::now() > deadline || gateway.try_wait().unwrap().is_some() {
            let _ = gateway.kill();
            let output = gateway.wait_with_output().unwrap();
            panic!("the gateway did not start listening: {}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{answer}");
    gateway.kill().unwrap();
    let logs = gateway.wait_with_output().unwrap().stderr;
    let text = String::from_utf8_lossy(&logs);
    assert!(text.contains("gateway listening"), "{text}");
    assert!(!logs.contains(&0x1b), "escape codes in captured logs: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_forged_entry_and_a_non_record() {
    let data = tempfile::tempdir().unwrap();
    let vkey = String::from_utf8(custodia(&["keygen"], data.path()).stdout).unwrap().trim().to_owned();
    append_records(data.path(), 0..10, "case-1", None).await;
    let log_dir = data.path().join("log");

    let bundle = log_dir.join("tile/entries/000.p/10");
    let original = std::fs::read(&bundle).unwrap();
    let mut forged = original.clone();
    let at = forged.len() - 5;
    forged[at] ^= 0x20;
    std::fs::write(&bundle, &forged).unwrap();
    let refused = custodia(&["log", "verify", log_dir.to_str().unwrap(), "--key", &vkey], data.path());
    assert!(!refused.status.success());
    assert!(text(&refused).contains("FAILED verification"), "{}", text(&refused));
    assert!(text(&refused).contains("tile/0/000.p/10") || text(&refused).contains("entry 9"), "{}", text(&refused));
    std::fs::write(&bundle, &original).unwrap();

    // A well-signed log whose entries are not custody records is not a custody log.
    let other = tempfile::tempdir().unwrap();
    let key = std::fs::read_to_string(data.path().join("keys/gateway.key")).unwrap();
    let log = Log::open_local(other.path(), LogSigner::from_skey(&key).unwrap(), LogOptions::default()).await.unwrap();
    log.append(b"{\"not\":\"a record\"}".to_vec()).await.unwrap();
    log.close().await;
    let refused = custodia(&["log", "verify", other.path().to_str().unwrap(), "--key", &vkey], data.path());
    assert!(!refused.status.success());
    assert!(text(&refused).contains("entry 0 is not valid"), "{}", text(&refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_through_rustls_when_a_certificate_is_configured() {
    let data = tempfile::tempdir().unwrap();
    let (cert, key) = (data.path().join("cert.pem"), data.path().join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is missing; run scripts/setup-system.sh test");
    assert!(made.status.success(), "{}", text(&made));
    let env = [("CUSTODIA_TLS_CERT", cert.as_os_str()), ("CUSTODIA_TLS_KEY", key.as_os_str())];
    let (_server, port) = support::spawn_gateway(data.path(), &env);
    let url = format!("https://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&cert)
            .arg(&url)
            .output()
            .expect("curl is missing; run scripts/setup-system.sh test");
        if reply.status.success() {
            assert_eq!(String::from_utf8_lossy(&reply.stdout), "ok");
            break;
        }
        assert!(Instant::now() < deadline, "no HTTPS answer: {}", text(&reply));
        std::thread::sleep(Duration::from_millis(100));
    }
    let plain =
        Command::new("curl").args(["-sS", "--fail", &format!("http://127.0.0.1:{port}/healthz")]).output().unwrap();
    assert!(!plain.status.success(), "plain HTTP must not be served when TLS is configured");
}
