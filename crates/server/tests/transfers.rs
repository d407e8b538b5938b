//! Evidence crossing a border (issue 14): two gateways on loopback, Tunis (`tn-tunis`) and Catania (`it-catania`),
//! pin each other. A clerk in Tunis sends an artefact: it is bundled, submitted, offered, sent in chunks, verified
//! in Catania with Tunis's pinned keys, taken into Catania's custody with Tunis's use policy and a `received_from`
//! record, and retrieved by a member there. Both gateways keep e-CODEX's whole ladder (SubmissionAcceptance,
//! RelayAcceptance, Delivery, Retrieval), each evidence signed by its issuer and proved on both logs. Then the
//! failures: the receiving gateway killed (`kill -9`) mid-transfer and restarted (the transfer resumes and
//! finishes), a bundle altered on the way (NonDelivery, nothing stored), the receiving gateway down past the relay
//! timeout (RelayFailure issued by the sender), and a defence member who may not send.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{GatewayProcess, free_port, spawn_gateway_on};

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

    fn env(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, std::ffi::OsString)> {
        let mut env = vec![
            ("CUSTODIA_ORIGIN", format!("{}.custodia.test/log", self.name).into()),
            ("CUSTODIA_PARTNER_NAME", self.name.into()),
            ("CUSTODIA_JURISDICTION", self.jurisdiction.into()),
            ("CUSTODIA_PUBLIC_URL", format!("http://127.0.0.1:{}", self.port).into()),
            ("CUSTODIA_PARTNERS", self.data.path().join("partners.json").into()),
            ("CUSTODIA_TRANSFER_RETRY_SECONDS", "1".into()),
        ];
        env.extend(extra.iter().map(|(name, value)| (*name, std::ffi::OsString::from(value))));
        env
    }

    fn card(&self) -> Value {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
            .args(["partners", "card"])
            .env("CUSTODIA_DATA_DIR", self.data.path())
            .envs(self.env(&[]))
            .output()
            .unwrap();
        assert!(output.status.success());
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn pin(&self, partners: &[&Value]) {
        std::fs::write(self.data.path().join("partners.json"), json!({ "partners": partners }).to_string()).unwrap();
    }

    fn serve(&self, extra: &[(&'static str, &str)]) -> GatewayProcess {
        let env = self.env(extra);
        let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        spawn_gateway_on(self.data.path(), &env, None, self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The first administrator's session cookie.
    async fn admin(&self) -> String {
        let password = std::fs::read_to_string(self.data.path().join("keys/initial-admin-password")).unwrap();
        self.sign_in("admin", password.trim()).await
    }

    async fn sign_in(&self, username: &str, password: &str) -> String {
        let answer = reqwest::Client::new()
            .post(self.url("/api/v1/session"))
            .header("origin", self.url(""))
            .header("content-type", "application/json")
            .body(json!({ "username": username, "password": password }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
    }

    async fn call(&self, cookie: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = reqwest::Client::new()
            .request(method, self.url(path))
            .header("cookie", cookie)
            .header("origin", self.url(""));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn bytes(&self, cookie: &str, path: &str) -> (u16, Vec<u8>) {
        let answer = reqwest::Client::new().get(self.url(path)).header("cookie", cookie).send().await.unwrap();
        (answer.status().as_u16(), answer.bytes().await.unwrap().to_vec())
    }

    /// The court bundle of `artefact`, exported by the member of `cookie`.
    async fn export(&self, cookie: &str, artefact: &str) -> Vec<u8> {
        let answer = reqwest::Client::new()
            .post(self.url(&format!("/api/v1/artefacts/{artefact}/exports?purpose=trial")))
            .header("cookie", cookie)
            .header("origin", self.url(""))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.bytes().await.unwrap().to_vec()
    }

    async fn upload(&self, cookie: &str, case: &str, bytes: Vec<u8>, policy: Option<&Value>) -> String {
        let mut request = reqwest::Client::new()
            .post(self.url(&format!("/api/v1/cases/{case}/artefacts?purpose=statement")))
            .header("cookie", cookie)
            .header("origin", self.url(""))
            .header("content-type", "video/webm");
        if let Some(policy) = policy {
            use base64::Engine as _;
            let policy = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
            request = request.header("custodia-use-policy", policy);
        }
        let answer = request.body(bytes).send().await.unwrap();
        let status = answer.status().as_u16();
        let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
        assert_eq!(status, 201, "{body}");
        body["artefact"].as_str().unwrap().to_owned()
    }

    /// An account in `role` of `case`, signed in: (account id, cookie).
    async fn member(&self, admin: &str, case: &str, username: &str, role: &str) -> (String, String) {
        let password = format!("{username}-correct-horse-battery");
        let account = json!({ "username": username, "display_name": username, "password": password,
            "jurisdiction": self.jurisdiction });
        let (status, created) = self.call(admin, "POST", "/api/v1/accounts", Some(account)).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/cases/{case}/members/{id}");
        let (status, answer) = self.call(admin, "PUT", &path, Some(json!({ "role": role }))).await;
        assert_eq!(status, 204, "{answer}");
        (id, self.sign_in(username, &password).await)
    }

    /// Waits until the transfers of `artefact` here show `transfer` in `stage`; the transfer.
    async fn wait_for(&self, cookie: &str, artefact: &str, transfer: &str, stage: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, transfers) =
                self.call(cookie, "GET", &format!("/api/v1/artefacts/{artefact}/transfers"), None).await;
            assert_eq!(status, 200, "{transfers}");
            let found = transfers.as_array().unwrap().iter().find(|t| t["id"] == transfer).cloned().unwrap();
            if found["stage"] == stage {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "transfer {transfer} is {} after {within:?}, not {stage}: {found}",
                found["stage"]
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Every file below `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walkdir(&path)) } else { files.push(path) }
    }
    files
}

fn events(transfer: &Value) -> Vec<String> {
    transfer["evidences"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artefact_crosses_the_border_with_its_ladder_on_both_logs_and_survives_a_killed_receiver() {
    let (tunis, catania) = (Side::new("tn-tunis", "TN"), Side::new("it-catania", "IT"));
    let (tunis_card, catania_card) = (tunis.card(), catania.card());
    tunis.pin(&[&catania_card]);
    catania.pin(&[&tunis_card]);
    let _tunis_process = tunis.serve(&[]);
    let mut catania_process = catania.serve(&[]);
    let tn_admin = tunis.admin().await;
    let (status, _) =
        tunis.call(&tn_admin, "POST", "/api/v1/cases", Some(json!({ "id": "tn-7", "title": "Smuggling ring" }))).await;
    assert_eq!(status, 201);
    let (_, clerk) = tunis.member(&tn_admin, "tn-7", "clerk", "clerk").await;
    let (_, defence) = tunis.member(&tn_admin, "tn-7", "counsel", "defence").await;
    let (status, partners) = tunis.call(&clerk, "GET", "/api/v1/partners", None).await;
    assert_eq!((status, partners), (200, json!([{ "name": "it-catania", "jurisdiction": "IT" }])));

    // A statement of three chunks (8 MiB each), under the providing authority's policy.
    let statement = custodia_tests::pseudo_random_bytes(20 * 1024 * 1024 + 123, 1);
    let policy = json!({ "tlp": "TLP:GREEN", "provider": "Procureur de Tunis", "permitted_purposes": ["trial"],
        "permitted_recipients": [], "permitted_jurisdictions": [], "onward_transfer": "permitted" });
    let artefact = tunis.upload(&clerk, "tn-7", statement.clone(), Some(&policy)).await;
    let send = |who: String| {
        let (tunis, artefact) = (&tunis, artefact.clone());
        async move {
            let body = json!({ "partner": "it-catania", "purpose": "trial of the smuggling ring" });
            tunis.call(&who, "POST", &format!("/api/v1/artefacts/{artefact}/transfers"), Some(body)).await
        }
    };
    let (status, refused) = send(defence.clone()).await;
    assert_eq!(status, 403, "the defence may not send evidence abroad: {refused}");
    let (status, unknown) = tunis
        .call(
            &clerk,
            "POST",
            &format!("/api/v1/artefacts/{artefact}/transfers"),
            Some(json!({ "partner": "fr-paris", "purpose": "x" })),
        )
        .await;
    assert_eq!(status, 404, "{unknown}");

    // Sent, with the receiving gateway killed once a chunk is durable there, and started again.
    let (status, sent) = send(clerk.clone()).await;
    assert_eq!(status, 202, "{sent}");
    let transfer = sent["id"].as_str().unwrap().to_owned();
    assert_eq!(events(&sent), ["SubmissionAcceptance"]);
    let staged = catania.data.path().join(format!("transfers/in/{transfer}.part"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&staged).map(|m| m.len()).unwrap_or(0) < 8 * 1024 * 1024 {
        assert!(Instant::now() < deadline, "no chunk reached Catania");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    catania_process.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _catania_process = catania.serve(&[]);
    let delivered = tunis.wait_for(&clerk, &artefact, &transfer, "delivered", Duration::from_secs(90)).await;
    assert_eq!(events(&delivered), ["SubmissionAcceptance", "RelayAcceptance", "Delivery"]);
    for evidence in delivered["evidences"].as_array().unwrap() {
        assert!(evidence["own"].is_object() && evidence["partner"].is_object(), "kept on both logs: {evidence}");
    }

    // In Catania: in the inbox of Tunis's gateway, under Tunis's policy, byte for byte what was sent.
    let it_admin = catania.admin().await;
    let (_, judge) = catania.member(&it_admin, "inbox-tn-tunis", "judge", "judge").await;
    let (status, listed) = catania.call(&judge, "GET", "/api/v1/cases/inbox-tn-tunis/artefacts", None).await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed.as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "the statement once, however often chunks were sent: {listed:?}");
    let received = listed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["media_type"], "video/webm");
    let (status, bytes) = catania.bytes(&judge, &format!("/api/v1/artefacts/{received}/content?purpose=trial")).await;
    assert_eq!(status, 200);
    assert!(bytes == statement, "the received artefact is the statement sent");
    let (status, detail) =
        catania.call(&judge, "GET", &format!("/api/v1/artefacts/{received}?purpose=trial"), None).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["policy"]["provider"], "Procureur de Tunis", "{detail}");

    // Catania's court bundle of it carries both chains: with both gateways' keys trusted it verifies, Tunis's
    // history (ending with its transfer) checked as Tunis's bag; with Catania's key alone, Tunis's chain is named.
    let bundle = catania.export(&judge, &received).await;
    let tunis_key: custodia_ledger::LogVerifier = tunis_card["log_vkey"].as_str().unwrap().parse().unwrap();
    let catania_key: custodia_ledger::LogVerifier = catania_card["log_vkey"].as_str().unwrap().parse().unwrap();
    let both = [catania_key.clone(), tunis_key.clone()];
    let verification = custodia_bundle::verify(&bundle[..], &both).unwrap();
    let failed = |v: &custodia_bundle::Verification| v.checks.iter().filter(|c| !c.passed).cloned().collect::<Vec<_>>();
    assert!(verification.is_valid(), "{:?}", failed(&verification));
    assert_eq!(verification.artefact.as_deref(), Some(received.as_str()));
    let provider_checks: Vec<&str> =
        verification.checks.iter().filter_map(|check| check.detail.strip_prefix("provider's chain: ")).collect();
    assert!(provider_checks.iter().any(|detail| detail.contains("signed by trusted key")), "{provider_checks:?}");
    assert!(
        verification.checks.iter().any(|c| c.part == custodia_bundle::Part::ProviderChain && c.passed),
        "{:?}",
        verification.checks
    );
    let catania_only = custodia_bundle::verify(&bundle[..], std::slice::from_ref(&catania_key)).unwrap();
    assert!(!catania_only.is_valid());
    assert!(
        failed(&catania_only)
            .iter()
            .all(|c| c.part == custodia_bundle::Part::TrustedKey && c.detail.starts_with("provider's chain: ")),
        "{:?}",
        failed(&catania_only)
    );
    // The command line says the same, with both keys given.
    let work = tempfile::tempdir().unwrap();
    let verify_cli = |bundle: &[u8], keys: &[&custodia_ledger::LogVerifier]| {
        let file = work.path().join("bundle.tar");
        std::fs::write(&file, bundle).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"));
        command.arg("verify").arg(&file);
        for key in keys {
            command.arg("--trusted-key").arg(key.to_string());
        }
        let output = command.output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, said) = verify_cli(&bundle, &[&catania_key, &tunis_key]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("provider's chain: "), "{said}");
    let (code, said) = verify_cli(&bundle, &[&catania_key]);
    assert_eq!(code, Some(1), "{said}");
    // A provider's record altered in the bundle: Catania's bag and Tunis's chain both say so.
    let at = bundle
        .windows(b"\"type\":\"artefact_transferred\"".len())
        .position(|window| window == b"\"type\":\"artefact_transferred\"")
        .expect("Tunis's transfer record is in the bundle");
    let mut tampered = bundle.clone();
    tampered[at + 9] = b'X';
    let verification = custodia_bundle::verify(&tampered[..], &both).unwrap();
    let failed = failed(&verification);
    assert!(!verification.is_valid());
    assert!(failed.iter().any(|c| c.part == custodia_bundle::Part::Bag), "{failed:?}");
    assert!(
        failed.iter().any(|c| c.detail.starts_with("provider's chain: ") && c.part != custodia_bundle::Part::Bag),
        "{failed:?}"
    );
    let (code, said) = verify_cli(&tampered, &[&catania_key, &tunis_key]);
    assert_eq!(code, Some(1), "{said}");

    // The retrieval reaches Tunis, and the ladder is whole on both sides.
    let retrieved = tunis.wait_for(&clerk, &artefact, &transfer, "retrieved", Duration::from_secs(60)).await;
    assert_eq!(events(&retrieved), ["SubmissionAcceptance", "RelayAcceptance", "Delivery", "Retrieval"]);
    let (status, theirs) = catania.call(&judge, "GET", &format!("/api/v1/artefacts/{received}/transfers"), None).await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(events(&theirs[0]), ["SubmissionAcceptance", "RelayAcceptance", "Delivery", "Retrieval"]);

    // Catania's clerk reports what the statement achieved; the report reaches Tunis, where the provider sees it.
    let (_, it_clerk) = catania.member(&it_admin, "inbox-tn-tunis", "cancelliere", "clerk").await;
    let report = json!({ "outcome": "used_at_hearing", "note": "heard on 3 December" });
    let (status, filed) =
        catania.call(&it_clerk, "POST", &format!("/api/v1/artefacts/{received}/outcomes"), Some(report)).await;
    assert_eq!(status, 201, "{filed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let reported = loop {
        let (status, outcomes) =
            tunis.call(&clerk, "GET", &format!("/api/v1/artefacts/{artefact}/outcomes"), None).await;
        assert_eq!(status, 200, "{outcomes}");
        if let Some(first) = outcomes.as_array().unwrap().first() {
            break first.clone();
        }
        assert!(Instant::now() < deadline, "the outcome report did not reach Tunis");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        (&reported["id"], &reported["outcome"], &reported["note"]),
        (&filed["id"], &json!("used_at_hearing"), &json!("heard on 3 December"))
    );

    // A Catania prosecutor asks to use the statement for an appeal too; only Tunis decides, and access in Catania
    // changes only when Tunis's decision arrives.
    let (_, it_prosecutor) = catania.member(&it_admin, "inbox-tn-tunis", "pm.catania", "prosecutor").await;
    let path = format!("/api/v1/artefacts/{received}/widen-requests");
    let (status, asked) = catania.call(&it_prosecutor, "POST", &path, Some(json!({ "purposes": ["appeal"] }))).await;
    assert_eq!(status, 201, "{asked}");
    let decide = format!("/api/v1/widen-requests/{}/decision", asked["id"].as_str().unwrap());
    let (status, refused) = catania.call(&it_clerk, "POST", &decide, Some(json!({ "approve": true }))).await;
    assert_eq!(status, 403, "only the providing State decides: {refused}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let arrived = loop {
        let (_, requests) =
            tunis.call(&clerk, "GET", &format!("/api/v1/artefacts/{artefact}/widen-requests"), None).await;
        if let Some(first) = requests.as_array().and_then(|list| list.first()) {
            break first.clone();
        }
        assert!(Instant::now() < deadline, "the request did not reach Tunis");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(arrived["id"], asked["id"], "{arrived}");
    let (status, decided) = tunis.call(&clerk, "POST", &decide, Some(json!({ "approve": true }))).await;
    assert_eq!((status, &decided["status"]), (200, &json!("approved")), "{decided}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, requests) = catania.call(&it_prosecutor, "GET", &path, None).await;
        if requests[0]["status"] == "approved" {
            break;
        }
        assert!(Instant::now() < deadline, "the decision did not reach Catania: {requests}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, detail) = catania.call(&judge, "GET", &format!("/api/v1/artefacts/{received}?purpose=trial"), None).await;
    assert!(detail["policy"]["permitted_purposes"].as_array().unwrap().contains(&json!("appeal")), "{detail}");

    // An auditor (an administrator there) opens Catania's pinned registry: the entry on the public log commits to
    // it, and it names Tunis with the keys Catania checked everything against.
    let (status, pinned) = catania.call(&it_admin, "GET", "/api/v1/admin/partners/pinned", None).await;
    assert_eq!(status, 200, "{pinned}");
    let b64 = base64::engine::general_purpose::STANDARD;
    let entry = base64::Engine::decode(&b64, pinned[0]["entry"].as_str().unwrap()).unwrap();
    let entry = custodia_partners::pinned::PartnersPinned::from_entry(&entry).unwrap();
    let openings = custodia_core::Openings::from_canonical(pinned[0]["openings"].as_str().unwrap().as_bytes()).unwrap();
    openings.check([("registry", &entry.registry)]).expect("the opening opens the public entry's commitment");
    let registry: Value = serde_json::from_str(openings.text("registry").unwrap()).unwrap();
    assert_eq!(registry[0]["log_vkey"], tunis_card["log_vkey"], "{registry}");
    let (status, _) = catania.call(&judge, "GET", "/api/v1/admin/partners/pinned", None).await;
    assert_eq!(status, 403, "a member is not an auditor");

    // Both public logs: a transfer_evidence record per rung, and a received_from record, none naming a partner.
    let tunis_records = support::served_records(tunis.port).await;
    let catania_records = support::served_records(catania.port).await;
    let rungs = |records: &[Value]| {
        records
            .iter()
            .filter(|r| r["event"]["type"] == "transfer_evidence")
            .map(|r| r["event"]["rung"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(rungs(&tunis_records), ["SubmissionAcceptance", "RelayAcceptance", "Delivery", "Retrieval"]);
    assert_eq!(rungs(&catania_records), ["SubmissionAcceptance", "RelayAcceptance", "Delivery", "Retrieval"]);
    let received_from = catania_records.iter().filter(|r| r["event"]["type"] == "received_from").count();
    assert_eq!(received_from, 1, "the statement, once");
    assert_eq!(tunis_records.iter().filter(|r| r["event"]["type"] == "outcome_reported").count(), 1);
    for record in tunis_records.iter().chain(&catania_records) {
        let text = record.to_string();
        assert!(!text.contains("tunis") && !text.contains("catania") && !text.contains(&transfer), "{text}");
    }
    // The same evidence is on both logs under different salts: the logs cannot be matched.
    let commitments = |records: &[Value]| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["event"]["type"] == "transfer_evidence")
            .map(|r| r["event"]["evidence"].as_str().unwrap().to_owned())
            .collect()
    };
    let theirs = commitments(&catania_records);
    assert!(commitments(&tunis_records).iter().all(|c| !theirs.contains(c)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_altered_on_the_way_is_refused_and_a_silent_receiver_times_out() {
    let (tunis, catania) = (Side::new("tn-tunis", "TN"), Side::new("it-catania", "IT"));
    let (tunis_card, catania_card) = (tunis.card(), catania.card());
    tunis.pin(&[&catania_card]);
    catania.pin(&[&tunis_card]);
    let mut tunis_process = tunis.serve(&[]);
    let tn_admin = tunis.admin().await;
    let (status, _) = tunis.call(&tn_admin, "POST", "/api/v1/cases", Some(json!({ "id": "tn-8", "title": "t" }))).await;
    assert_eq!(status, 201);
    let (_, clerk) = tunis.member(&tn_admin, "tn-8", "clerk", "clerk").await;
    let body = json!({ "partner": "it-catania", "purpose": "trial" });

    // Catania is down: the sender retries. A byte of the payload is changed meanwhile, below the signatures (as a
    // failing disk or a hostile host could): every chunk is sent as signed, and only the whole bundle, checked
    // against the provider's signed manifest, shows it.
    let payload = custodia_tests::pseudo_random_bytes(3 * 1024 * 1024, 2);
    let artefact = tunis.upload(&clerk, "tn-8", payload.clone(), None).await;
    let path = format!("/api/v1/artefacts/{artefact}/transfers");
    let (status, sent) = tunis.call(&clerk, "POST", &path, Some(body.clone())).await;
    assert_eq!(status, 202, "{sent}");
    let transfer = sent["id"].as_str().unwrap().to_owned();
    let digest = custodia_core::Sha256::of(&payload).to_hex();
    let stored =
        walkdir(tunis.data.path()).into_iter().find(|path| path.ends_with(&digest)).expect("the stored payload");
    let mut altered = payload.clone();
    altered[payload.len() / 2] ^= 1;
    std::fs::write(&stored, &altered).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _catania_process = catania.serve(&[]);
    let refused = tunis.wait_for(&clerk, &artefact, &transfer, "failed", Duration::from_secs(60)).await;
    assert_eq!(events(&refused), ["SubmissionAcceptance", "RelayAcceptance", "NonDelivery"]);
    let it_admin = catania.admin().await;
    let (status, cases) = catania.call(&it_admin, "GET", "/api/v1/admin/cases", None).await;
    assert_eq!(status, 200);
    let (_, judge) = catania.member(&it_admin, "inbox-tn-tunis", "judge", "judge").await;
    let (_, listed) = catania.call(&judge, "GET", "/api/v1/cases/inbox-tn-tunis/artefacts", None).await;
    assert_eq!(listed, json!([]), "nothing was stored: {cases}");

    // Catania is gone for good: past the relay timeout, Tunis issues RelayFailure itself.
    drop(_catania_process);
    tunis_process.stop();
    let _tunis_process = tunis.serve(&[("CUSTODIA_TRANSFER_RELAY_SECONDS", "3")]);
    let artefact = tunis.upload(&clerk, "tn-8", custodia_tests::pseudo_random_bytes(1024, 3), None).await;
    let path = format!("/api/v1/artefacts/{artefact}/transfers");
    let (status, sent) = tunis.call(&clerk, "POST", &path, Some(body)).await;
    assert_eq!(status, 202, "{sent}");
    let transfer = sent["id"].as_str().unwrap().to_owned();
    let timed_out = tunis.wait_for(&clerk, &artefact, &transfer, "failed", Duration::from_secs(60)).await;
    assert_eq!(events(&timed_out), ["SubmissionAcceptance", "RelayFailure"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_restrictions_bind_the_receiver_and_a_third_gateway_gets_nothing_onward() {
    let (tunis, catania, madrid) =
        (Side::new("tn-tunis", "TN"), Side::new("it-catania", "IT"), Side::new("es-madrid", "ES"));
    let (tunis_card, catania_card, madrid_card) = (tunis.card(), catania.card(), madrid.card());
    tunis.pin(&[&catania_card]);
    catania.pin(&[&tunis_card, &madrid_card]);
    madrid.pin(&[&catania_card]);
    let (_tunis, _catania, _madrid) = (tunis.serve(&[]), catania.serve(&[]), madrid.serve(&[]));
    let tn_admin = tunis.admin().await;
    let (status, _) = tunis.call(&tn_admin, "POST", "/api/v1/cases", Some(json!({ "id": "tn-9", "title": "t" }))).await;
    assert_eq!(status, 201);
    let (_, clerk) = tunis.member(&tn_admin, "tn-9", "clerk", "clerk").await;
    let (_, prosecutor) = tunis.member(&tn_admin, "tn-9", "prosecutor", "prosecutor").await;
    // For the trial in Italy only: no onward transfer.
    let policy = json!({ "tlp": "TLP:GREEN", "provider": "Procureur de Tunis", "permitted_purposes": [],
        "permitted_recipients": [], "permitted_jurisdictions": [], "onward_transfer": "prohibited" });
    let artefact = tunis.upload(&clerk, "tn-9", custodia_tests::pseudo_random_bytes(2048, 4), Some(&policy)).await;
    let path = format!("/api/v1/artefacts/{artefact}/transfers");
    let body = json!({ "partner": "it-catania", "purpose": "trial in Catania" });
    // Another member of the providing side sends onward, which the provider prohibited; the provider itself
    // provides it, and its policy travels with it.
    let (status, refused) = tunis.call(&prosecutor, "POST", &path, Some(body.clone())).await;
    assert_eq!(status, 403, "{refused}");
    let (status, sent) = tunis.call(&clerk, "POST", &path, Some(body)).await;
    assert_eq!(status, 202, "{sent}");
    let transfer = sent["id"].as_str().unwrap().to_owned();
    tunis.wait_for(&clerk, &artefact, &transfer, "delivered", Duration::from_secs(60)).await;

    // In Catania, the policy binds: the statement does not go on to Madrid.
    let it_admin = catania.admin().await;
    let (_, it_clerk) = catania.member(&it_admin, "inbox-tn-tunis", "clerk", "clerk").await;
    let (_, listed) = catania.call(&it_clerk, "GET", "/api/v1/cases/inbox-tn-tunis/artefacts", None).await;
    let listed = listed.as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "the statement: {listed:?}");
    let statement = listed[0]["id"].as_str().unwrap();
    let body = json!({ "partner": "es-madrid", "purpose": "another trial" });
    let (status, refused) =
        catania.call(&it_clerk, "POST", &format!("/api/v1/artefacts/{statement}/transfers"), Some(body)).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["type"], "https://custodia.invalid/problems/use-restricted", "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("onward"), "{refused}");
    // Nor may a judge in Catania correct the providing State's restrictions away: only Tunis widens them.
    let (_, it_judge) = catania.member(&it_admin, "inbox-tn-tunis", "giudice", "judge").await;
    let mut loosened = policy.clone();
    loosened["onward_transfer"] = json!("permitted");
    let path = format!("/api/v1/artefacts/{statement}/policy/correction");
    let (status, refused) = catania.call(&it_judge, "PUT", &path, Some(loosened)).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["type"], "https://custodia.invalid/problems/provider-only", "{refused}");
    let refusals = support::served_records(catania.port).await;
    let refusals = refusals.iter().filter(|r| r["event"]["code"] == "policy_onward_transfer").count();
    assert_eq!(refusals, 1, "the refusal is on Catania's record");
    let offered_to_madrid = std::fs::read_dir(madrid.data.path().join("transfers/in")).unwrap().count();
    assert_eq!(offered_to_madrid, 0, "Madrid was offered nothing");

    // What Tunis lets go on does: Catania forwards it to Madrid, which pins Catania's keys only. Madrid's court
    // bundle of it carries Catania's chain, which carries Tunis's: with the three keys trusted it verifies whole.
    let open = json!({ "tlp": "TLP:GREEN", "provider": "Procureur de Tunis", "permitted_purposes": [],
        "permitted_recipients": [], "permitted_jurisdictions": [], "onward_transfer": "permitted" });
    let shared = tunis.upload(&clerk, "tn-9", custodia_tests::pseudo_random_bytes(5000, 5), Some(&open)).await;
    let body = json!({ "partner": "it-catania", "purpose": "trial in Catania" });
    let (status, sent) = tunis.call(&clerk, "POST", &format!("/api/v1/artefacts/{shared}/transfers"), Some(body)).await;
    assert_eq!(status, 202, "{sent}");
    tunis.wait_for(&clerk, &shared, sent["id"].as_str().unwrap(), "delivered", Duration::from_secs(60)).await;
    let (_, listed) = catania.call(&it_clerk, "GET", "/api/v1/cases/inbox-tn-tunis/artefacts", None).await;
    let in_catania = listed.as_array().unwrap().iter().find(|a| a["id"] != statement).unwrap()["id"].clone();
    let in_catania = in_catania.as_str().unwrap();
    let body = json!({ "partner": "es-madrid", "purpose": "another trial" });
    let path = format!("/api/v1/artefacts/{in_catania}/transfers");
    let (status, sent) = catania.call(&it_clerk, "POST", &path, Some(body)).await;
    assert_eq!(status, 202, "{sent}");
    let onward = sent["id"].as_str().unwrap();
    let delivered = catania.wait_for(&it_clerk, in_catania, onward, "delivered", Duration::from_secs(60)).await;
    assert_eq!(events(&delivered), ["SubmissionAcceptance", "RelayAcceptance", "Delivery"]);
    let es_admin = madrid.admin().await;
    let (_, es_judge) = madrid.member(&es_admin, "inbox-it-catania", "juez", "judge").await;
    let (_, listed) = madrid.call(&es_judge, "GET", "/api/v1/cases/inbox-it-catania/artefacts", None).await;
    let in_madrid = listed[0]["id"].as_str().unwrap().to_owned();
    let bundle = madrid.export(&es_judge, &in_madrid).await;
    let key = |card: &Value| -> custodia_ledger::LogVerifier { card["log_vkey"].as_str().unwrap().parse().unwrap() };
    let all = [key(&madrid_card), key(&catania_card), key(&tunis_card)];
    let verification = custodia_bundle::verify(&bundle[..], &all).unwrap();
    let failed = |v: &custodia_bundle::Verification| v.checks.iter().filter(|c| !c.passed).cloned().collect::<Vec<_>>();
    assert!(verification.is_valid(), "{:?}", failed(&verification));
    let chains = verification.checks.iter().filter(|c| c.part == custodia_bundle::Part::ProviderChain).count();
    assert_eq!(chains, 2, "Catania's chain, and Tunis's within it: {:?}", verification.checks);
    let without_tunis = custodia_bundle::verify(&bundle[..], &all[..2]).unwrap();
    let failed = failed(&without_tunis);
    assert!(!without_tunis.is_valid());
    assert!(
        failed.iter().all(|c| c.part == custodia_bundle::Part::TrustedKey
            && c.detail.starts_with("provider's chain: provider's chain: ")),
        "{failed:?}"
    );
}

/// A hostile receiver answering the sender with 300 MiB: the sender reads at most 1 MiB of any answer, stays
/// within its memory, and keeps the transfer under way (review of issue 14: unbounded answers took a sender to
/// 4.9 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_answers_without_end_is_not_read_to_the_end() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const ANSWER: u64 = 300 << 20;
    let (tunis, catania) = (Side::new("tn-tunis", "TN"), Side::new("it-catania", "IT"));
    let catania_card = catania.card();
    tunis.pin(&[&catania_card]);
    // The hostile receiver listens where Catania's card says Catania is.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", catania.port)).await.unwrap();
    let (answers, most_written) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (counted, written) = (answers.clone(), most_written.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let (counted, written) = (counted.clone(), written.clone());
            tokio::spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut request).await;
                let head =
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {ANSWER}\r\n\r\n");
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                counted.fetch_add(1, Ordering::Relaxed);
                let piece = vec![b' '; 64 * 1024];
                let mut sent = 0u64;
                while sent < ANSWER && socket.write_all(&piece).await.is_ok() {
                    sent += piece.len() as u64;
                }
                written.fetch_max(sent, Ordering::Relaxed);
            });
        }
    });
    let tunis_process = tunis.serve(&[]);
    let tn_admin = tunis.admin().await;
    let (status, _) =
        tunis.call(&tn_admin, "POST", "/api/v1/cases", Some(json!({ "id": "tn-10", "title": "t" }))).await;
    assert_eq!(status, 201);
    let (_, clerk) = tunis.member(&tn_admin, "tn-10", "clerk", "clerk").await;
    let artefact = tunis.upload(&clerk, "tn-10", custodia_tests::pseudo_random_bytes(4096, 6), None).await;
    let path = format!("/api/v1/artefacts/{artefact}/transfers");
    let (status, sent) =
        tunis.call(&clerk, "POST", &path, Some(json!({ "partner": "it-catania", "purpose": "x" }))).await;
    assert_eq!(status, 202, "{sent}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while answers.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "the sender did not try three times");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let most = most_written.load(Ordering::Relaxed);
    assert!(most < ANSWER / 4, "the sender read {most} bytes of an answer; it reads at most 1 MiB");
    let status = std::fs::read_to_string(format!("/proc/{}/status", tunis_process.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    assert!(rss_kib < 250 * 1024, "the sender holds {rss_kib} KiB");
    let (_, transfers) = tunis.call(&clerk, "GET", &path, None).await;
    assert_eq!(transfers[0]["stage"], "sending", "{transfers}");
}
