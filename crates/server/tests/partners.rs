//! Two gateways on loopback that pin each other as partners (issue 14): each prints its card
//! (`custodia partners card`), each registry lists the other's, and `custodia partners check` finds both sides
//! pinned as they are; each registry is on the record once, and again only when it changes. Then signed requests
//! are played against one of them as an attacker would: a replay, no signature, a partner it does not pin, a body
//! changed in transit, a stale date, a forged key, a path changed. Each is refused with its own answer and logged
//! by kind; none of them is let through. A request signed by pyauth's `http-message-signatures` (an implementation
//! none of us wrote) passes the same check.

mod support;

use std::net::Ipv4Addr;
use std::path::Path;

use base64::Engine as _;
use custodia_core::Sha256;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use support::{GatewayProcess, RawAnswer, free_port, http_from, spawn_gateway_on};

const HANDSHAKE: &str = "/partner/v1/handshake";

/// One gateway's naming and where it listens.
struct Side {
    name: &'static str,
    jurisdiction: &'static str,
    data: tempfile::TempDir,
    port: u16,
}

impl Side {
    fn new(name: &'static str, jurisdiction: &'static str) -> Self {
        Self { name, jurisdiction, data: tempfile::tempdir().unwrap(), port: free_port() }
    }

    fn env(&self, registry: Option<&Path>) -> Vec<(&'static str, std::ffi::OsString)> {
        let mut env = vec![
            ("CUSTODIA_DATA_DIR", self.data.path().as_os_str().to_owned()),
            ("CUSTODIA_ORIGIN", format!("{}.custodia.test/log", self.name).into()),
            ("CUSTODIA_PARTNER_NAME", self.name.into()),
            ("CUSTODIA_JURISDICTION", self.jurisdiction.into()),
            ("CUSTODIA_PUBLIC_URL", format!("http://127.0.0.1:{}", self.port).into()),
        ];
        if let Some(registry) = registry {
            env.push(("CUSTODIA_PARTNERS", registry.as_os_str().to_owned()));
        }
        env
    }

    /// `custodia partners <command>` with this side's settings: its exit status and standard output.
    fn cli(&self, command: &str, registry: Option<&Path>) -> (bool, String) {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
            .args(["partners", command])
            .envs(self.env(registry))
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn card(&self) -> Value {
        let (ok, card) = self.cli("card", None);
        assert!(ok, "custodia partners card failed");
        serde_json::from_str(&card).unwrap()
    }

    /// A registry file, in this side's data directory, listing `partners`' cards.
    fn registry(&self, file: &str, partners: &[&Value]) -> std::path::PathBuf {
        let path = self.data.path().join(file);
        std::fs::write(&path, serde_json::json!({ "partners": partners }).to_string()).unwrap();
        path
    }

    fn serve(&self, registry: &Path) -> GatewayProcess {
        let env = self.env(Some(registry));
        let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        spawn_gateway_on(self.data.path(), &env, None, self.port)
    }

    /// The key that signs this side's requests, as its data directory keeps it.
    fn request_key(&self) -> SigningKey {
        let text = std::fs::read_to_string(self.data.path().join("keys/partner-request.key")).unwrap();
        let seed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim()).unwrap();
        SigningKey::from_bytes(&seed.try_into().unwrap())
    }
}

/// A request to `port` with `headers` (as [`custodia_partners::request::sign`] makes them) and `body`.
async fn send(port: u16, path: &str, headers: &[(&str, String)], body: &[u8]) -> RawAnswer {
    let mut all: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
    all.push(("Content-Type", "application/json"));
    http_from(Ipv4Addr::LOCALHOST, port, "POST", path, &all, body).await.unwrap()
}

fn signed(path: &str, body: &[u8], key: &SigningKey, keyid: &str, nonce: &str, at: i64) -> Vec<(&'static str, String)> {
    custodia_partners::request::sign("POST", path, &Sha256::of(body), key, keyid, nonce.into(), at).to_vec()
}

/// The `partners_pinned` entries of the log a gateway on `port` serves.
async fn pinned_entries(port: u16) -> Vec<Value> {
    let records = support::served_records(port).await;
    records.into_iter().filter(|record| record["type"] == "partners_pinned").collect()
}

/// pyauth's signer, run by the peer script the partners crate's own interoperability test uses.
fn python_signed(job: &Value) -> Value {
    use std::io::Write as _;
    const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../partners/tests/peers/httpsig_peer.py");
    let mut child = std::process::Command::new("python3")
        .args([PEER, "sign"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (./x test installs http-message-signatures from tests/requirements.txt)");
    child.stdin.take().unwrap().write_all(job.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "python could not sign: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_pin_each_other_and_every_unsigned_replayed_or_forged_request_is_refused() {
    let (italy, tunisia) = (Side::new("it-catania", "IT"), Side::new("tn-tunis", "TN"));
    let (italy_card, tunisia_card) = (italy.card(), tunisia.card());
    assert_eq!(italy_card["name"], "it-catania");
    assert_eq!(italy.card(), italy_card, "the card is kept, keys and all");
    let italy_registry = italy.registry("partners.json", &[&tunisia_card]);
    let tunisia_registry = tunisia.registry("partners.json", &[&italy_card]);
    let (_italy, mut tunisia_process) = (italy.serve(&italy_registry), tunisia.serve(&tunisia_registry));
    // Each pinned its registry on the record, as a commitment that names no partner.
    let pinned = pinned_entries(tunisia.port).await;
    assert_eq!(pinned.len(), 1, "{pinned:?}");
    let entry = pinned[0].to_string();
    assert!(!entry.contains("it-catania") && !entry.contains("IT") && !entry.contains("127.0.0.1"), "{entry}");

    // Each side's check: both pin each other as they are.
    let (ok, said) = italy.cli("check", Some(&italy_registry));
    assert!(ok && said.contains("tn-tunis: ok"), "{said}");
    let (ok, said) = tunisia.cli("check", Some(&tunisia_registry));
    assert!(ok && said.contains("it-catania: ok"), "{said}");
    // A registry that pins Tunisia's witness under another key: the check says so, field by field, and fails.
    let mut drifted = tunisia_card.clone();
    drifted["witness_vkey"] = italy_card["witness_vkey"].clone();
    let (ok, said) = italy.cli("check", Some(&italy.registry("drifted.json", &[&drifted])));
    assert!(!ok && said.contains("PINNED DIFFERENTLY") && said.contains("witness_vkey"), "{said}");
    // The card is public; the handshake is not.
    let card = http_from(Ipv4Addr::LOCALHOST, tunisia.port, "GET", "/partner/v1/card", &[], b"").await.unwrap();
    assert_eq!(card.json(), tunisia_card);

    // Requests to Tunisia, signed (or not) as Italy.
    let key = italy.request_key();
    let body = serde_json::to_vec(&italy_card).unwrap();
    let headers = signed(HANDSHAKE, &body, &key, "it-catania", "first", now());
    let accepted = send(tunisia.port, HANDSHAKE, &headers, &body).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(accepted.json()["pinned"], italy_card);
    assert_eq!(accepted.json()["card"], tunisia_card);

    let refused = |answer: &RawAnswer, status: u16, kind: &str, why: &str| {
        assert_eq!((answer.status, answer.problem()), (status, kind.to_owned()), "{why}: {}", answer.text());
    };
    let replayed = send(tunisia.port, HANDSHAKE, &headers, &body).await;
    refused(&replayed, 401, "partner-unauthenticated", "a replay");
    assert!(replayed.text().contains("replay"), "{}", replayed.text());
    let unsigned: Vec<(&str, String)> = headers.iter().filter(|(name, _)| *name != "signature").cloned().collect();
    refused(&send(tunisia.port, HANDSHAKE, &unsigned, &body).await, 401, "partner-unauthenticated", "no signature");
    let stranger = signed(HANDSHAKE, &body, &key, "xx-nowhere", "stranger", now());
    refused(&send(tunisia.port, HANDSHAKE, &stranger, &body).await, 401, "partner-unauthenticated", "not a partner");
    let fresh = signed(HANDSHAKE, &body, &key, "it-catania", "tampered", now());
    let mut tampered = body.clone();
    tampered[1] ^= 1;
    refused(
        &send(tunisia.port, HANDSHAKE, &fresh, &tampered).await,
        400,
        "digest-mismatch",
        "a body changed in transit",
    );
    let stale = signed(HANDSHAKE, &body, &key, "it-catania", "stale", now() - 600);
    refused(&send(tunisia.port, HANDSHAKE, &stale, &body).await, 401, "partner-unauthenticated", "ten minutes old");
    let forged = signed(HANDSHAKE, &body, &SigningKey::from_bytes(&[9; 32]), "it-catania", "forged", now());
    refused(&send(tunisia.port, HANDSHAKE, &forged, &body).await, 401, "partner-unauthenticated", "another key");
    let elsewhere = signed("/partner/v1/other", &body, &key, "it-catania", "moved", now());
    refused(&send(tunisia.port, HANDSHAKE, &elsewhere, &body).await, 401, "partner-unauthenticated", "another path");
    // The request that was never accepted can still be sent once, untouched: refusals take no nonce's place.
    let untouched = send(tunisia.port, HANDSHAKE, &fresh, &body).await;
    assert_eq!(untouched.status, 200, "{}", untouched.text());

    // A request signed by an implementation none of us wrote (pyauth's http-message-signatures, with Italy's
    // key) is accepted as it stands; the same one again is a replay.
    let date = custodia_partners::signature::http_date(now());
    let job = serde_json::json!({
        "method": "POST", "url": format!("http://127.0.0.1:{}{HANDSHAKE}", tunisia.port), "date": date,
        "body": base64::engine::general_purpose::STANDARD.encode(&body),
        "private_key": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.to_bytes()),
        "keyid": "it-catania", "nonce": "signed-in-python", "created": now(),
    });
    let python = python_signed(&job);
    let text = |name: &str| python[name].as_str().unwrap().to_owned();
    let headers = vec![
        ("date", date.clone()),
        ("content-digest", text("content_digest")),
        ("signature-input", text("signature_input")),
        ("signature", text("signature")),
    ];
    let accepted = send(tunisia.port, HANDSHAKE, &headers, &body).await;
    assert_eq!(accepted.status, 200, "a request python signed: {}", accepted.text());
    refused(
        &send(tunisia.port, HANDSHAKE, &headers, &body).await,
        401,
        "partner-unauthenticated",
        "python's, replayed",
    );

    // Restarted with the same partners, listed in another order and spacing: nothing new on the record. With a
    // partner's URL changed: a new entry.
    let log = std::fs::read_to_string(tunisia.data.path().join("gateway-stderr.log")).unwrap();
    tunisia_process.stop();
    let respaced = tunisia.data.path().join("respaced.json");
    std::fs::write(&respaced, serde_json::to_string_pretty(&serde_json::json!({ "partners": [&italy_card] })).unwrap())
        .unwrap();
    tunisia_process = tunisia.serve(&respaced);
    assert_eq!(pinned_entries(tunisia.port).await.len(), 1, "the same registry is not pinned again");
    tunisia_process.stop();
    let mut moved = italy_card.clone();
    moved["base_url"] = Value::from("http://127.0.0.1:9");
    let _tunisia = tunisia.serve(&tunisia.registry("moved.json", &[&moved]));
    assert_eq!(pinned_entries(tunisia.port).await.len(), 2, "a partner's new URL is on the record");
    // An auditor's check of the whole log reads them as the log's own entries.
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
        .args(["log", "verify"])
        .arg(tunisia.data.path().join("log"))
        .args(["--key", tunisia_card["log_vkey"].as_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success() && said.contains("partners pinned"),
        "{said}{}",
        String::from_utf8_lossy(&audit.stderr)
    );

    // The operator log names each refusal's kind and the partner named, never an address.
    let refusals: Vec<&str> = log.lines().filter(|line| line.contains("refused a partner request")).collect();
    for kind in ["replayed", "unsigned", "unknown-partner", "digest", "stale", "forged"] {
        assert!(refusals.iter().any(|line| line.contains(&format!("kind=\"{kind}\""))), "{kind}: {refusals:#?}");
    }
    assert!(refusals.iter().all(|line| !line.contains("127.0.0")), "an address in the operator log: {refusals:#?}");
}
