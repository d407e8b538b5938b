//! The public log carries no personal data and no free text.
//!
//! A realistic flow runs against the real `custodia serve` process, over HTTP with curl: accounts with names, a
//! case with a telling id and title, uploads whose purpose names a witness (name, birth date, town, phone), file
//! names, a use policy whose permitted purpose names a person, refusals by role and by that policy, a request to
//! widen use and its approval, an outcome with a note, membership added, changed and removed (an administrator's
//! self-grant among them), a hearing scheduled at a named place with invites. Every text the test sent is
//! collected; then the log is read as any outsider reads it (`/log/checkpoint`, `/log/tile/entries/...`), and no
//! entry may contain any of them, nor the case id, nor an uploaded file's SHA-256, size or a manifest digest that
//! could be recomputed without the manifest's nonce, and no two entries share a case reference; while the members'
//! timeline opens every commitment.
//!
//! Also here: 200 refused downloads by one member add two records (the first, and one with the count), not 200.
//!
//! Needs curl (`scripts/setup-system.sh test`).

mod support;

use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};
use support::{As, TestGateway, spawn_gateway};

const CASE: &str = "case-lagos-ay-2026";
const WITNESS_PURPOSE: &str = "interview of witness A. Y., born 1994-03-02, returned to Lagos, phone +234 803 555 0101";
const NAMED_POLICY_PURPOSE: &str = "prosecution of Adebayo Yusuf";
const STATEMENT: &[u8] = b"a statement, not really a video";
const PASSPORT: &[u8] = b"jpeg bytes";

/// The forms in which a digest could be spotted in an entry: hex and standard base64.
fn digest_forms(digest: &custodia_core::Sha256) -> [String; 2] {
    [digest.to_hex(), base64::engine::general_purpose::STANDARD.encode(digest.as_bytes())]
}

/// Percent-encodes every byte but unreserved ASCII, for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The gateway over HTTP, as a client sees it, with every free text sent to it remembered.
struct Client {
    base: String,
    jar: tempfile::TempDir,
    sent: Vec<String>,
}

impl Client {
    fn said(&mut self, text: &str) -> String {
        self.sent.push(text.to_owned());
        text.to_owned()
    }

    /// One request as `who` (a cookie jar name); returns the status and the body.
    fn call(
        &self,
        who: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<u8>) {
        let jar = self.jar.path().join(who);
        let body_file = self.jar.path().join("body");
        let mut command = Command::new("curl");
        command.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method]).arg("-b").arg(&jar).arg("-c").arg(&jar);
        // As the gateway's own pages do: a cookie client says where it comes from (the CSRF rule).
        command.args(["-H", "Sec-Fetch-Site: same-origin"]);
        for (name, value) in headers {
            command.args(["-H", &format!("{name}: {value}")]);
        }
        if let Some(body) = body {
            std::fs::write(&body_file, body).unwrap();
            command.arg("--data-binary").arg(format!("@{}", body_file.display()));
        }
        let output =
            command.arg(format!("{}{path}", self.base)).output().expect("curl runs (scripts/setup-system.sh test)");
        assert!(output.status.success(), "curl {method} {path}: {}", String::from_utf8_lossy(&output.stderr));
        let split = output.stdout.iter().rposition(|b| *b == b'\n').unwrap();
        let status = String::from_utf8_lossy(&output.stdout[split + 1..]).parse().unwrap();
        (status, output.stdout[..split].to_vec())
    }

    fn json(&self, who: &str, method: &str, path: &str, body: &Value, expect: u16) -> Value {
        let bytes = body.to_string();
        let (status, reply) =
            self.call(who, method, path, Some(bytes.as_bytes()), &[("content-type", "application/json")]);
        assert_eq!(status, expect, "{method} {path}: {}", String::from_utf8_lossy(&reply));
        serde_json::from_slice(&reply).unwrap_or(Value::Null)
    }

    fn get(&self, who: &str, path: &str) -> (u16, Vec<u8>) {
        self.call(who, "GET", path, None, &[])
    }
}

/// Every entry of the served log, read as an outsider reads it: the checkpoint's size, then the entry tiles.
fn served_entries(client: &Client) -> Vec<Vec<u8>> {
    let (status, checkpoint) = client.get("outsider", "/log/checkpoint");
    assert_eq!(status, 200);
    let size: u64 = String::from_utf8(checkpoint).unwrap().lines().nth(1).unwrap().parse().unwrap();
    let mut entries = Vec::new();
    for tile in 0..size.div_ceil(256) {
        assert!(tile < 1000, "the test reads tile paths of one segment only");
        let width = (size - tile * 256).min(256);
        let path = if width == 256 {
            format!("/log/tile/entries/{tile:03}")
        } else {
            format!("/log/tile/entries/{tile:03}.p/{width}")
        };
        let (status, bundle) = client.get("outsider", &path);
        assert_eq!(status, 200, "{path}");
        let mut rest = bundle.as_slice();
        while let [high, low, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*high, *low]));
            entries.push(tail[..len].to_vec());
            rest = &tail[len..];
        }
    }
    assert_eq!(entries.len() as u64, size);
    entries
}

#[test]
fn no_text_anyone_sent_reaches_the_served_log() {
    let data = tempfile::tempdir().unwrap();
    let (_gateway, port) = spawn_gateway(data.path(), &[]);
    let mut c =
        Client { base: format!("http://127.0.0.1:{port}"), jar: tempfile::tempdir().unwrap(), sent: Vec::new() };
    let password = std::fs::read_to_string(data.path().join("keys/initial-admin-password")).unwrap();
    c.json("admin", "POST", "/api/v1/session", &json!({"username": "admin", "password": password.trim()}), 200);

    // People, named as people are.
    let mut ids = std::collections::BTreeMap::new();
    for (username, name, jurisdiction) in [
        ("ngozi.okafor", "Ngozi Okafor", "NG"),
        ("giulia.romano", "Giulia Romano", "IT"),
        ("adebayo.yusuf", "Adebayo Yusuf", "NG"),
        ("marco.bianchi", "Marco Bianchi", "IT"),
    ] {
        let (username, name) = (c.said(username), c.said(name));
        let body = json!({"username": username, "display_name": name, "password": "a long passphrase 42", "jurisdiction": jurisdiction});
        let account = c.json("admin", "POST", "/api/v1/accounts", &body, 201);
        ids.insert(username.clone(), account["id"].as_str().unwrap().to_owned());
        c.json(
            &username,
            "POST",
            "/api/v1/session",
            &json!({"username": username, "password": "a long passphrase 42"}),
            200,
        );
    }
    let title = c.said("Yusuf smuggling network, Lagos to Palermo");
    c.sent.push(CASE.to_owned());
    c.json("admin", "POST", "/api/v1/cases", &json!({"id": CASE, "title": title}), 201);
    let members = format!("/api/v1/cases/{CASE}/members");
    for (username, role) in [("giulia.romano", "prosecutor"), ("ngozi.okafor", "clerk"), ("adebayo.yusuf", "witness")] {
        c.json("admin", "PUT", &format!("{members}/{}", ids[username]), &json!({"role": role}), 204);
    }

    // Uploads: a purpose naming the witness, telling file names, a policy whose purpose names a person.
    let policy = json!({
        "tlp": "TLP:AMBER", "provider": c.said("NG: Office of the Attorney General, Lagos"),
        "permitted_purposes": [c.said(NAMED_POLICY_PURPOSE)], "permitted_recipients": [],
        "permitted_jurisdictions": [], "onward_transfer": "with_consent",
    });
    let policy_header = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
    let purpose = c.said(WITNESS_PURPOSE);
    let filename = c.said("yusuf-adebayo-statement-lagos.mp4");
    let uri = format!("/api/v1/cases/{CASE}/artefacts?purpose={}&filename={}", encode(&purpose), encode(&filename));
    let headers = [("content-type", "video/mp4"), ("custodia-use-policy", policy_header.as_str())];
    let (status, reply) = c.call("giulia.romano", "POST", &uri, Some(STATEMENT), &headers);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
    let artefact = serde_json::from_slice::<Value>(&reply).unwrap()["artefact"].as_str().unwrap().to_owned();
    let purpose2 = c.said("photo of A. Y.'s passport, Nigerian, A01234567");
    let filename2 = c.said("passport-A01234567.jpg");
    let uri = format!("/api/v1/cases/{CASE}/artefacts?purpose={}&filename={}", encode(&purpose2), encode(&filename2));
    let (status, _) = c.call("ngozi.okafor", "POST", &uri, Some(PASSPORT), &[("content-type", "image/jpeg")]);
    assert_eq!(status, 201);

    // Reads within and against the policy; a witness refused by role.
    let content = format!("/api/v1/artefacts/{artefact}/content");
    let (status, _) = c.get("giulia.romano", &format!("{content}?purpose={}", encode(NAMED_POLICY_PURPOSE)));
    assert_eq!(status, 200);
    let other_purpose = c.said("background check on Chidi Okonkwo");
    let (status, body) = c.get("giulia.romano", &format!("{content}?purpose={}", encode(&other_purpose)));
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains(NAMED_POLICY_PURPOSE), "the refused member is told the terms");
    let own = c.said("my own statement");
    let (status, _) = c.get("adebayo.yusuf", &format!("{content}?purpose={}", encode(&own)));
    assert_eq!(status, 403);

    // Wider use: requested by one member (the provider uploaded), approved; an outcome with a note.
    c.json("admin", "PUT", &format!("{members}/{}", ids["marco.bianchi"]), &json!({"role": "defence"}), 204);
    let widen = json!({"purposes": [c.said("appeal of Adebayo Yusuf before the Palermo court")]});
    let request = c.json("marco.bianchi", "POST", &format!("/api/v1/artefacts/{artefact}/widen-requests"), &widen, 201);
    let request_id = request["id"].as_str().unwrap();
    c.json(
        "giulia.romano",
        "POST",
        &format!("/api/v1/widen-requests/{request_id}/decision"),
        &json!({"approve": true}),
        200,
    );
    let note = c.said("Mr Yusuf testified from Lagos on 3 March; conviction of the organiser");
    let outcome = json!({"outcome": "conviction", "note": note});
    c.json("giulia.romano", "POST", &format!("/api/v1/artefacts/{artefact}/outcomes"), &outcome, 201);

    // Membership: a role changed, a member removed, an administrator granting themself the judge's seat.
    c.json("admin", "PUT", &format!("{members}/{}", ids["marco.bianchi"]), &json!({"role": "auditor"}), 204);
    let (status, _) = c.call("admin", "DELETE", &format!("{members}/{}", ids["marco.bianchi"]), None, &[]);
    assert_eq!(status, 204);
    let (status, me) = c.get("admin", "/api/v1/me");
    assert_eq!(status, 200);
    let admin_id = serde_json::from_slice::<Value>(&me).unwrap()["id"].as_str().unwrap().to_owned();
    c.json("admin", "PUT", &format!("{members}/{admin_id}"), &json!({"role": "judge"}), 204);
    let (status, _) = c.call("admin", "DELETE", &format!("{members}/{admin_id}"), None, &[]);
    assert_eq!(status, 204);

    // A hearing at a named place, with invites.
    let place = c.said("safe house, 12 Marina Road, Lagos Island");
    let schedule = json!({"scheduled_for": "2027-03-03T09:00:00Z", "place": place});
    let hearing = c.json("ngozi.okafor", "POST", &format!("/api/v1/cases/{CASE}/hearings"), &schedule, 201);
    let hearing = hearing["id"].as_str().or(hearing["hearing"].as_str()).unwrap().to_owned();
    for role in ["witness", "judge"] {
        let uri = format!("/api/v1/cases/{CASE}/hearings/{hearing}/invites");
        c.json("ngozi.okafor", "POST", &uri, &json!({"role": role}), 201);
    }

    // Case exports: one refused by the policy for a purpose that names someone, one made for the permitted purpose.
    let exports = format!("/api/v1/cases/{CASE}/exports");
    let disclosure = c.said("disclosure to defence counsel Amaka Eze, Palermo");
    let (status, body) =
        c.call("giulia.romano", "POST", &format!("{exports}?purpose={}", encode(&disclosure)), None, &[]);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let (status, bundle) =
        c.call("giulia.romano", "POST", &format!("{exports}?purpose={}", encode(NAMED_POLICY_PURPOSE)), None, &[]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bundle));

    // What an outsider reads.
    let entries = served_entries(&c);
    assert!(entries.len() >= 15, "the flow left {} records", entries.len());
    let mut leaks = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let text = String::from_utf8(entry.clone()).unwrap();
        let lower = text.to_lowercase();
        for sent in &c.sent {
            if lower.contains(&sent.to_lowercase()) {
                leaks.push(format!("entry {index} contains {sent:?}: {text}"));
            }
        }
        for word in ["lagos", "yusuf", "witness", "prosecution of", "passport", "marina"] {
            if lower.contains(word) {
                leaks.push(format!("entry {index} contains {word:?}: {text}"));
            }
        }
        let record: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(record["v"], 2, "{text}");
    }
    assert!(leaks.is_empty(), "the public log leaks:\n{}", leaks.join("\n"));

    // Whoever holds a copy of an uploaded file (the smuggler who has the video) cannot find it in the log: neither
    // its SHA-256 nor its size is in any entry, in any spelling.
    for (name, bytes) in [("statement", STATEMENT), ("passport", PASSPORT)] {
        for form in digest_forms(&custodia_core::Sha256::of(bytes)) {
            for (index, entry) in entries.iter().enumerate() {
                let text = String::from_utf8_lossy(entry);
                assert!(!text.contains(&form), "entry {index} holds the {name}'s SHA-256 ({form}): {text}");
            }
        }
        let size = format!("\"size\":{}", bytes.len());
        assert!(entries.iter().all(|entry| !String::from_utf8_lossy(entry).contains(&size)), "the {name}'s size");
    }
    for entry in &entries {
        let record: Value = serde_json::from_slice(entry).unwrap();
        assert!(record["event"].get("size").is_none() && record["event"].get("sha256").is_none(), "{record}");
    }
    // No two records share a case reference, so an outsider cannot even count one unnamed case's activity.
    let references: std::collections::BTreeSet<String> = entries
        .iter()
        .map(|e| serde_json::from_slice::<Value>(e).unwrap()["case"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(references.len(), entries.len(), "records share a case reference");
    // Nor a manifest digest that someone who guesses everything but the nonce could recompute: the manifest as
    // the members read it (its nonce included) is what the registration commits to, and the same manifest without
    // its nonce, or with any other, is nowhere.
    let registration = entries
        .iter()
        .map(|e| serde_json::from_slice::<Value>(e).unwrap())
        .find(|r| r["event"]["type"] == "artefact_registered" && r["event"]["artefact"] == artefact.as_str())
        .unwrap();
    let detail = format!("/api/v1/artefacts/{artefact}?purpose={}", encode(NAMED_POLICY_PURPOSE));
    let (status, detail) = c.get("giulia.romano", &detail);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&detail));
    let detail: Value = serde_json::from_slice(&detail).unwrap();
    let canonical =
        base64::engine::general_purpose::STANDARD.decode(detail["manifest_canonical"].as_str().unwrap()).unwrap();
    assert_eq!(registration["event"]["manifest_sha256"], custodia_core::Sha256::of(&canonical).to_hex());
    let manifest: Value = serde_json::from_slice(&canonical).unwrap();
    let nonce = manifest["nonce"].as_str().unwrap();
    assert!(nonce.len() == 64 && nonce.bytes().all(|b| b.is_ascii_hexdigit()), "{manifest}");
    let mut guesses = Vec::new();
    let mut guessed = manifest.clone();
    guessed.as_object_mut().unwrap().remove("nonce");
    guesses.push(guessed);
    for fill in ["00", "ff"] {
        let mut guessed = manifest.clone();
        guessed["nonce"] = Value::from(fill.repeat(32));
        guesses.push(guessed);
    }
    for guess in &guesses {
        let digest = custodia_core::Sha256::of(&custodia_core::to_canonical_vec(guess).unwrap());
        for form in digest_forms(&digest) {
            assert!(
                entries.iter().all(|entry| !String::from_utf8_lossy(entry).contains(&form)),
                "a guessable manifest digest is in the log: {guess}"
            );
        }
    }
    let kinds: Vec<String> = entries
        .iter()
        .map(|e| serde_json::from_slice::<Value>(e).unwrap()["event"]["type"].as_str().unwrap().to_owned())
        .collect();
    for kind in ["artefact_registered", "access_refused", "policy_changed", "wider_use_requested", "outcome_reported"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let grants = kinds.iter().filter(|k| *k == "membership_changed").count();
    assert_eq!(grants, 8, "every membership change is a record: {kinds:?}");

    // Those entitled read the words back: the timeline opens each commitment.
    let (status, timeline) = c.get("giulia.romano", &format!("/api/v1/artefacts/{artefact}/timeline"));
    assert_eq!(status, 200);
    let timeline: Value = serde_json::from_slice(&timeline).unwrap();
    let records = timeline["records"].as_array().unwrap();
    assert_eq!(records[0]["openings"]["purpose"]["text"], WITNESS_PURPOSE);
    assert!(records.iter().all(|r| r["openings"]["case"]["text"] == CASE));
    let refused = records.iter().find(|r| r["record"]["event"]["type"] == "access_refused").unwrap();
    assert_eq!(refused["record"]["event"]["code"], "policy_purpose", "{refused}");
    for entry in records {
        let openings: custodia_core::Openings = serde_json::from_value(entry["openings"].clone()).unwrap();
        let record: custodia_core::CustodyRecord = serde_json::from_value(entry["record"].clone()).unwrap();
        record.check_openings(&openings).unwrap();
    }

    // The log still audits clean, every entry a canonical record.
    let keygen =
        Command::new(env!("CARGO_BIN_EXE_custodia")).arg("keygen").env("CUSTODIA_DATA_DIR", data.path()).output();
    let vkey = String::from_utf8(keygen.unwrap().stdout).unwrap().trim().to_owned();
    let audit = Command::new(env!("CARGO_BIN_EXE_custodia"))
        .args(["log", "verify", &format!("{}/log", c.base), "--key", &vkey])
        .env("CUSTODIA_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_is_one_record_and_a_count() {
    let gw = TestGateway::start().await;
    let (provider, provider_session) = gw.person("provider1", "IT").await;
    let (witness, witness_session) = gw.person("witness1", "NG").await;
    gw.case("case-flood").await;
    gw.member("case-flood", &provider, "prosecutor").await;
    gw.member("case-flood", &witness, "witness").await;
    let reply = gw.upload("case-flood", "purpose=intake", As::Session(&provider_session), b"evidence".to_vec()).await;
    assert_eq!(reply.status.as_u16(), 201);
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();

    let before = gw.ledger_size();
    let uri = format!("/api/v1/artefacts/{artefact}/content?purpose=again");
    for _ in 0..200 {
        gw.get(&uri, Some(As::Session(&witness_session))).await.assert_problem(403, "role-forbidden", "");
    }
    let added = gw.ledger_size() - before;
    assert_eq!(added, 1, "200 identical refusals in a minute are recorded once, then counted");
    let first = gw.ledger_record(before).await;
    assert_eq!(first["event"]["code"], "role_forbids", "{first}");
    assert!(first.get("repeated").is_none(), "{first}");

    // Another refusal (another action) is not folded into the count.
    gw.call(
        "POST",
        &format!("/api/v1/artefacts/{artefact}/exports?purpose=x"),
        Some(As::Session(&witness_session)),
        json!({}),
    )
    .await
    .assert_problem(403, "role-forbidden", "");
    assert_eq!(gw.ledger_size() - before, 2);

    // When the window closes, one record stands for the 199 repeats.
    assert_eq!(gw.state.gateway.flush_refusals().await.unwrap(), 0, "the window is still open");
    assert_eq!(gw.ledger_size() - before, 2);
    gw.state.gateway.clock().advance(61);
    assert_eq!(gw.state.gateway.flush_refusals().await.unwrap(), 1);
    assert_eq!(gw.ledger_size() - before, 3);
    let count = gw.ledger_record(before + 2).await;
    assert_eq!(count["event"]["type"], "access_refused", "{count}");
    assert_eq!(gw.opened(before + 2, "action").await.as_deref(), Some("download_artefact"), "{count}");
    assert!(!count.to_string().contains("download_artefact"), "the refused action is committed: {count}");
    assert_eq!(count["repeated"]["count"], 199, "{count}");
    assert_eq!(count["actor"], witness.as_str());

    // The next attempt, in a new window, is recorded again.
    gw.get(&uri, Some(As::Session(&witness_session))).await.assert_problem(403, "role-forbidden", "");
    assert_eq!(gw.ledger_size() - before, 4);
}

/// A record as an observer compares it with another: who acted, when, and every commitment blanked out. Two
/// records whose shapes are equal tell the observer nothing that tells them apart but the actor and the time.
fn shape(record: &Value) -> Value {
    fn blank(value: &mut Value) {
        match value {
            Value::String(text) if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) => {
                *text = "COMMITTED".into();
            }
            Value::Object(map) => map.values_mut().for_each(blank),
            Value::Array(items) => items.iter_mut().for_each(blank),
            _ => {}
        }
    }
    let mut shape = record.clone();
    for (field, placeholder) in [("actor", "ACTOR"), ("at", "AT"), ("prior", "PRIOR")] {
        if let Some(value) = shape.get_mut(field) {
            *value = json!(placeholder);
        }
    }
    blank(&mut shape);
    shape
}

/// A witness's activity (opening their case as the console does, being refused, entering a hearing, taking the
/// oath) publishes nothing that says their role: every record it leaves has the shape of one any other role
/// leaves, no record names an action or a role in clear, and the oath names the witness only inside a
/// commitment that the court can open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_publishes_nothing_that_tells_their_role() {
    use custodia_core::{Action, Role};
    let gw = TestGateway::start().await;
    let case = "case-roles-unseen";
    gw.case(case).await;
    let mut people = std::collections::BTreeMap::new();
    for role in Role::ALL {
        let (id, session) = gw.person(&format!("{role}.person"), "IT").await;
        gw.member(case, &id, role.as_str()).await;
        people.insert(role, (id, session));
    }
    let session = |role: Role| As::Session(&people[&role].1);
    let reply = gw.upload(case, "purpose=intake", session(Role::Prosecutor), b"evidence".to_vec()).await;
    assert_eq!(reply.status.as_u16(), 201);
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();

    // Opening the case as the console does: the detail, the hearings, and the evidence only if `may` says so.
    // Nobody's opening writes a record, so opening a case says nothing about anyone.
    for role in Role::ALL {
        let before = gw.ledger_size();
        let detail = gw.get(&format!("/api/v1/cases/{case}"), Some(session(role))).await;
        assert_eq!(detail.status.as_u16(), 200);
        let may: Vec<String> =
            detail.json()["may"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
        let permitted: Vec<String> = Action::ALL
            .into_iter()
            .filter(|action| custodia_core::permits(role, *action))
            .map(|action| action.as_str().to_owned())
            .collect();
        assert_eq!(may, permitted, "{role}");
        assert_eq!(gw.get(&format!("/api/v1/cases/{case}/hearings"), Some(session(role))).await.status.as_u16(), 200);
        if may.iter().any(|action| action == "list_artefacts") {
            assert_eq!(gw.get(&format!("/api/v1/cases/{case}/artefacts"), Some(session(role))).await.status, 200);
        }
        assert_eq!(gw.ledger_size(), before, "{role} opening the case wrote a record");
    }
    let detail = gw.get(&format!("/api/v1/cases/{case}"), Some(session(Role::Witness))).await.json();
    assert!(!detail["may"].as_array().unwrap().contains(&json!("list_artefacts")), "{detail}");

    // Refusals: a witness's, of what only a witness (or a remote-site officer) is refused, against another
    // role's, about the case and about an artefact. In clear, `list_artefacts` refused would say "witness".
    let refused = |role: Role, method: &'static str, uri: String| {
        let gw = &gw;
        let auth = session(role);
        async move {
            let before = gw.ledger_size();
            let json = [("content-type", "application/json")];
            let reply = gw.send_bytes(method, &uri, Some(auth), &json, r#"{"purposes":["appeal"]}"#).await;
            reply.assert_problem(403, "role-forbidden", "");
            assert_eq!(gw.ledger_size(), before + 1, "{role} {method} {uri}");
            (gw.ledger_record(before).await, before)
        }
    };
    let (witness_listing, listing_index) =
        refused(Role::Witness, "GET", format!("/api/v1/cases/{case}/artefacts")).await;
    let (judge_upload, _) =
        refused(Role::Judge, "POST", format!("/api/v1/cases/{case}/artefacts?purpose=x&filename=x.txt")).await;
    assert_eq!(shape(&witness_listing), shape(&judge_upload), "{witness_listing}\n{judge_upload}");
    let (witness_view, _) = refused(Role::Witness, "GET", format!("/api/v1/artefacts/{artefact}?purpose=x")).await;
    let (clerk_widen, _) = refused(Role::Clerk, "POST", format!("/api/v1/artefacts/{artefact}/widen-requests")).await;
    assert_eq!(shape(&witness_view), shape(&clerk_widen), "{witness_view}\n{clerk_widen}");
    assert_eq!(witness_view["event"]["code"], "role_forbids");
    // Those entitled to the record read what was refused.
    assert_eq!(gw.opened(listing_index, "action").await.as_deref(), Some("list_artefacts"));

    // A hearing: the judge enters admitted, the witness through the lobby, is admitted and takes the oath.
    let clerk = session(Role::Clerk);
    let hearings = format!("/api/v1/cases/{case}/hearings");
    let schedule =
        json!({ "scheduled_for": "2027-03-03T09:00:00Z", "place": "Aula 3", "identity_check_before_oath": false });
    let hearing = gw.call("POST", &hearings, Some(clerk), schedule).await;
    assert_eq!(hearing.status.as_u16(), 201, "{}", String::from_utf8_lossy(&hearing.body));
    let hearing = format!("{hearings}/{}", hearing.json()["id"].as_str().unwrap());
    let invite = |role: &'static str, admit_on_join: bool| {
        let (gw, uri) = (&gw, format!("{hearing}/invites"));
        async move {
            let reply =
                gw.call("POST", &uri, Some(clerk), json!({ "role": role, "admit_on_join": admit_on_join })).await;
            assert_eq!(reply.status.as_u16(), 201, "{}", String::from_utf8_lossy(&reply.body));
            reply.json()["secret"].as_str().unwrap().to_owned()
        }
    };
    let (judge_secret, witness_secret) = (invite("judge", true).await, invite("witness", false).await);
    assert_eq!(gw.send_bytes("POST", &format!("{hearing}/open"), Some(clerk), &[], "").await.status.as_u16(), 200);
    let before = gw.ledger_size();
    let judge = gw.state.hearings.enter(&judge_secret, None, None).await.unwrap();
    // The witness has a page (an outbox), where the court's words are shown before they are asked to swear.
    let (page, _witness_sees, _) = custodia_hearings::live::Outbox::channel();
    let witness = gw.state.hearings.enter(&witness_secret, Some(page), None).await.unwrap();
    let step = |step: Value| serde_json::from_value::<custodia_hearings::live::RoomStep>(step).unwrap();
    let (live, by, w) = (&judge.hearing, &judge.participant, witness.participant.as_str());
    for action in [
        json!({ "type": "admit", "participant": w }),
        json!({ "type": "start_session" }),
        json!({ "type": "present_text", "person": w, "wording": "rights_notice" }),
        json!({ "type": "rights_notice", "person": w }),
        json!({ "type": "present_text", "person": w, "wording": "oath" }),
        json!({ "type": "oath", "witness": w, "form": "oath" }),
    ] {
        live.act(by, step(action)).await.unwrap();
    }
    let records: Vec<(u64, Value)> = {
        let mut records = Vec::new();
        for index in before..gw.ledger_size() {
            records.push((index, gw.ledger_record(index).await));
        }
        records
    };
    let kind_of = |record: &Value| record["event"]["kind"].as_str().unwrap_or_default().to_owned();
    let joined: Vec<&Value> =
        records.iter().map(|(_, record)| record).filter(|record| kind_of(record) == "joined_lobby").collect();
    let [judge_joined, witness_joined] = joined.as_slice() else { panic!("two joined the lobby: {records:?}") };
    assert_eq!(witness_joined["actor"], w, "a participant's own step names them by their random participant id");
    assert_eq!(shape(judge_joined), shape(witness_joined), "joining says nothing of the seat");
    let (oath_index, oath) = records.iter().find(|(_, record)| kind_of(record) == "oath_taken").unwrap();
    assert_eq!(oath["actor"], judge.participant.as_str(), "the judge administers the oath");
    for (_, record) in &records {
        let text = record.to_string();
        assert!(
            record["actor"] == w || !text.contains(w),
            "only the witness's own steps name their participant id, never as a subject: {text}"
        );
    }
    assert_eq!(gw.opened(*oath_index, "subject").await.as_deref(), Some(w), "the court can open whom it concerns");

    // Nowhere in the public log is an action or a role in clear.
    for index in 0..gw.ledger_size() {
        let text = gw.ledger_record(index).await.to_string();
        for word in Action::ALL.map(Action::as_str).into_iter().chain(Role::ALL.map(Role::as_str)) {
            assert!(!text.contains(&format!("\"{word}\"")), "record {index} says {word:?}: {text}");
        }
    }
}

/// The suite-wide check that every in-process test gateway makes when its test ends (`support::FreeTexts`)
/// remembers the free texts a request carries (a JSON body's typed fields, a query's purpose, tus upload metadata,
/// the use policy header, the case id in a path) and not the log's own vocabulary, and it finds a text that is in the
/// log: here an actor id, which records carry in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_wide_check_remembers_typed_text_and_finds_what_is_in_the_log() {
    use base64::Engine as _;
    let gateway = TestGateway::start().await;
    gateway.case("case-remembered-7").await;
    let (witness, session) = gateway.person("w.remembered", "TN").await;
    gateway.member("case-remembered-7", &witness, "witness").await;
    let metadata = format!(
        "case {},filename {},purpose {}",
        base64::engine::general_purpose::STANDARD.encode("case-remembered-7"),
        base64::engine::general_purpose::STANDARD.encode("tus file name.webm"),
        base64::engine::general_purpose::STANDARD.encode("a tus purpose typed")
    );
    let policy = json!({"tlp": "amber", "provider": "Procura di Catania", "permitted_purposes": ["a named purpose"]});
    gateway
        .send_bytes(
            "POST",
            "/api/v1/uploads",
            Some(As::Session(&session)),
            &[("tus-resumable", "1.0.0"), ("upload-length", "4"), ("upload-metadata", &metadata)],
            Vec::new(),
        )
        .await;
    gateway
        .send_bytes(
            "POST",
            "/api/v1/cases/case-remembered-7/artefacts?purpose=an%20upload%20purpose&filename=raw%20name.webm",
            Some(As::Session(&session)),
            &[("content-type", "video/webm"), ("custodia-use-policy", &policy.to_string())],
            b"webm".to_vec(),
        )
        .await;
    for typed in [
        "R v case-remembered-7",
        "case-remembered-7",
        "w.remembered",
        "w.remembered name",
        "tus file name.webm",
        "a tus purpose typed",
        "an upload purpose",
        "raw name.webm",
        "Procura di Catania",
        "a named purpose",
    ] {
        assert!(gateway.sent.holds(typed), "{typed:?} was not remembered");
    }
    for vocabulary in ["witness", "amber"] {
        assert!(!gateway.sent.holds(vocabulary), "{vocabulary:?} is the log's vocabulary, not typed text");
    }
    assert!(gateway.sent.found_in_log().is_empty(), "{:?}", gateway.sent.found_in_log());

    let last = gateway.ledger_record(gateway.ledger_size() - 1).await;
    let actor = last["actor"].as_str().unwrap().to_owned();
    gateway.sent.remember(&actor);
    let found = gateway.sent.found_in_log();
    assert!(found.iter().any(|(text, _)| *text == actor), "{found:?}");
    gateway.sent.forget(&actor);
}
