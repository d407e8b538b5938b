//! The gateway as a witness of a partner's log (c2sp.org/tlog-witness v1.0.0), tried as the partner and as an
//! attacker would try it, against a real `custodia serve` process: it cosigns a growing log, tells a log that is
//! behind or ahead where it is, refuses a fork and says so, answers malformed, forged and oversized requests with
//! the spec's status, advances once under concurrent requests, and refuses to start if a witnessed log is dropped
//! from its configuration or re-keyed. Our cosignatures are also checked by a verifier written from the spec in
//! Python (crates/witness/tests/peers). Needs curl and python3-cryptography (scripts/setup-system.sh test).

mod support;

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use custodia_ledger::{Checkpoint, Log, LogOptions, LogSigner, SignedCheckpoint};
use custodia_witness::{AddCheckpoint, CosignerVerifier};
use serde_json::Value;
use support::{TestGateway, spawn_gateway};

const SETUP: &str = "run scripts/setup-system.sh test (curl, python3-cryptography)";

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// One request to the witness process, through curl.
fn send(port: u16, method: &str, path: &str, body: &[u8]) -> Answer {
    let mut child = Command::new("curl")
        .args(["-sS", "-X", method, "-o", "-", "-w", "\n%{http_code} %{content_type}", "--data-binary", "@-"])
        .args(["-H", "Content-Type: text/plain"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("curl: {err}; {SETUP}"));
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (status, content_type) = tail.split_once(' ').unwrap_or((tail, ""));
    Answer { status: status.parse().unwrap(), content_type: content_type.to_owned(), body: body.to_owned() }
}

fn add_checkpoint(port: u16, request: &AddCheckpoint) -> Answer {
    send(port, "POST", "/witness/add-checkpoint", &request.to_bytes())
}

fn report(port: u16) -> Value {
    let answer = send(port, "GET", "/witness/logs", b"");
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

/// The request a log makes to move the witness from `old` to its current checkpoint.
async fn request_from(log: &Log, old: u64) -> AddCheckpoint {
    let checkpoint = log.checkpoint();
    let size = checkpoint.checkpoint.size;
    let proof =
        if old == 0 || old == size { Vec::new() } else { log.storage().consistency_proof(old, size).await.unwrap() };
    AddCheckpoint { old_size: old, proof, checkpoint: checkpoint.note().to_vec() }
}

async fn grow(log: &Log, entries: usize, tag: &str) {
    for i in 0..entries {
        log.append(format!("{tag} entry {i}").into_bytes()).await.unwrap();
    }
}

fn python_accepts(vkey: &str, note: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("note");
    std::fs::write(&file, note).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../witness/tests/peers/cosignature_v1.py");
    let output = Command::new("python3").arg(script).arg(vkey).arg(&file).output().expect(SETUP);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("ModuleNotFoundError"), "{stderr}; {SETUP}");
    output.status.success()
}

fn write_log_list(dir: &Path, lines: &str) -> std::path::PathBuf {
    let path = dir.join("witnessed-logs");
    std::fs::write(&path, lines).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partner_log_is_witnessed_and_a_fork_is_refused_and_reported() {
    // The partner: a gateway whose log the witness follows.
    let partner = TestGateway::start_with(|config| config.gateway.origin = "a.custodia.test/log".into()).await;
    let log = &partner.state.gateway.log();
    let partner_vkey = partner.verifier().to_string();

    let witness_dir = tempfile::tempdir().unwrap();
    let list =
        write_log_list(witness_dir.path(), &format!("# partners\nlog {partner_vkey} https://a.custodia.test/log/\n"));
    let data = witness_dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let env = [("CUSTODIA_ORIGIN", "b.custodia.test/log".as_ref()), ("CUSTODIA_WITNESSED_LOGS", list.as_os_str())];
    let (process, port) = spawn_gateway(&data, &env);

    let start = report(port);
    let witness: CosignerVerifier = start["witness"].as_str().unwrap().parse().unwrap();
    assert_eq!(witness.name(), "b.custodia.test/witness");
    assert_eq!(start["logs"][0]["origin"], "a.custodia.test/log");
    assert_eq!(start["logs"][0]["size"], 0);

    // The first checkpoint, from size 0, then growth with consistency proofs.
    grow(log, 3, "first").await;
    let mut known = 0;
    for (entries, tag) in [(0, "none"), (5, "second"), (300, "third"), (1, "fourth")] {
        grow(log, entries, tag).await;
        let request = request_from(log, known).await;
        let answer = add_checkpoint(port, &request);
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.content_type.starts_with("text/plain"));
        let note = format!("{}{}", String::from_utf8(request.checkpoint.clone()).unwrap(), answer.body);
        let cosignature = witness.cosignature_on(note.as_bytes()).unwrap().expect("the witness's cosignature");
        assert!(cosignature.timestamp > 1_700_000_000);
        assert!(python_accepts(&witness.to_string(), &note), "the independent verifier refused {note}");
        // The log's own signature still verifies with the cosignature added.
        SignedCheckpoint::open(note.as_bytes(), &[partner.verifier()]).unwrap();
        known = log.checkpoint().checkpoint.size;
    }
    let state = report(port);
    assert_eq!(state["logs"][0]["size"], known);
    let cosigned = state["logs"][0]["cosigned_checkpoint"].as_str().unwrap();
    assert!(witness.cosignature_on(cosigned.as_bytes()).unwrap().is_some());

    // A log that is behind is told the witness's size, as text/x.tlog.size.
    let stale = request_from(log, 3).await;
    let answer = add_checkpoint(port, &stale);
    assert_eq!(
        (answer.status, answer.content_type.as_str(), answer.body.as_str()),
        (409, "text/x.tlog.size", &*format!("{known}\n"))
    );

    // A fork: the same key, another history. Longer, with a proof from its own history: 422, and reported.
    let fork_dir = tempfile::tempdir().unwrap();
    let skey = std::fs::read_to_string(partner.dir.path().join("keys/gateway.key")).unwrap();
    let fork =
        Log::open_local(fork_dir.path(), LogSigner::from_skey(&skey).unwrap(), LogOptions::default()).await.unwrap();
    grow(&fork, usize::try_from(known).unwrap() + 4, "forged").await;
    let mut forked = request_from(&fork, known).await;
    let answer = add_checkpoint(port, &forked);
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(answer.body.contains("consistency proof does not hold"), "{}", answer.body);
    // The same size as the witness's, another root.
    let same_size_fork = LogSigner::from_skey(&skey)
        .unwrap()
        .sign(&Checkpoint::new("a.custodia.test/log", known, custodia_ledger::Hash([7; 32])))
        .unwrap();
    let answer = add_checkpoint(
        port,
        &AddCheckpoint { old_size: known, proof: Vec::new(), checkpoint: same_size_fork.note().to_vec() },
    );
    assert_eq!(answer.status, 422, "{}", answer.body);
    let refused = &report(port)["logs"][0];
    assert_eq!(refused["size"], known, "a refused checkpoint moved the witness");
    assert_eq!(refused["refused"]["inconsistent"], 1);
    assert_eq!(refused["refused"]["root-conflict"], 1);
    assert!(process.log().contains("a split view"), "the fork is not in the operator log");
    assert_eq!(
        process.log().matches("a split view").count(),
        1,
        "an unsigned bad proof is no evidence of a split view"
    );

    // Forged, unknown, malformed and oversized requests.
    let text = String::from_utf8(forked.checkpoint.clone()).unwrap();
    forked.checkpoint = text.replacen(&format!("\n{}\n", known + 4), &format!("\n{}\n", known + 5), 1).into_bytes();
    assert_eq!(add_checkpoint(port, &forked).status, 403);
    let stranger = LogSigner::generate("c.custodia.test/log").unwrap();
    let unknown =
        stranger.sign(&Checkpoint::new("c.custodia.test/log", 0, custodia_ledger::merkle::empty_root())).unwrap();
    assert_eq!(
        add_checkpoint(port, &AddCheckpoint { old_size: 0, proof: Vec::new(), checkpoint: unknown.note().to_vec() })
            .status,
        404
    );
    assert_eq!(send(port, "POST", "/witness/add-checkpoint", b"old x\n\n").status, 400);
    // A stranger's text never reaches the operator log: not an unknown origin, not escape bytes.
    let typed = "old 0\n\n\u{1b}[31mFAKE ALERT\u{1b}[0m\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n\u{2014} x AAAAAAA=\n";
    assert_eq!(send(port, "POST", "/witness/add-checkpoint", typed.as_bytes()).status, 404);
    assert!(
        !process.log().contains("FAKE ALERT") && !process.log().contains('\u{1b}'),
        "typed text in the operator log"
    );
    let long = AddCheckpoint {
        old_size: 1,
        proof: vec![custodia_ledger::Hash([1; 32]); 64],
        checkpoint: log.checkpoint().note().to_vec(),
    };
    let answer = add_checkpoint(port, &long);
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("more than 63"), "{}", answer.body);
    assert_eq!(send(port, "POST", "/witness/add-checkpoint", &vec![b'x'; 70_000]).status, 413);
    assert_eq!(report(port)["logs"][0]["size"], known, "nothing refused may move the witness");

    // Eight identical requests at once: exactly one advances the witness; the others learn its new size.
    grow(log, 9, "fifth").await;
    let request = request_from(log, known).await;
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| add_checkpoint(port, &request).status)).collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    assert_eq!(answers.iter().filter(|&&status| status == 200).count(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|&&status| status == 409).count(), 7, "{answers:?}");
    known = log.checkpoint().checkpoint.size;
    drop(process);

    // A witnessed log cannot be dropped from the configuration, nor re-keyed: the witness will not start.
    for (lines, says) in [
        ("# nobody\n".to_owned(), "cannot be dropped"),
        (format!("log {}\n", LogSigner::generate("a.custodia.test/log").unwrap().verifier()), "cannot be re-keyed"),
    ] {
        write_log_list(witness_dir.path(), &lines);
        let output = Command::new(env!("CARGO_BIN_EXE_custodia"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("CUSTODIA_DATA_DIR", &data)
            .env("CUSTODIA_ORIGIN", "b.custodia.test/log")
            .env("CUSTODIA_WITNESSED_LOGS", &list)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(says), "{says}: {stderr}");
    }
    // Listed again as it was, the witness starts where it stopped.
    write_log_list(witness_dir.path(), &format!("log {partner_vkey}\n"));
    let (_process, port) = spawn_gateway(&data, &env);
    assert_eq!(report(port)["logs"][0]["size"], known);
}

/// One of three gateways that witness each other: its keys (made before it starts, so that the others' policies
/// can name them), its port, and its process once started.
struct Partner {
    name: &'static str,
    dir: tempfile::TempDir,
    port: u16,
    log: LogSigner,
    witness: custodia_witness::CosignerKey,
    process: Option<support::GatewayProcess>,
    /// `CUSTODIA_WITNESS_EXPORT_WAIT_SECONDS`: generous, so that a busy machine still exports witnessed bundles.
    export_wait: u64,
}

impl Partner {
    fn new(name: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = LogSigner::generate(&format!("{name}.custodia.test/log")).unwrap();
        let witness = custodia_witness::CosignerKey::generate(&format!("{name}.custodia.test/witness")).unwrap();
        let keys = dir.path().join("data/keys");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&keys).unwrap();
        for (file, secret) in
            [("gateway.key", log.expose_secret().to_owned()), ("witness.key", witness.expose_secret())]
        {
            let mut key =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(keys.join(file)).unwrap();
            writeln!(key, "{secret}").unwrap();
        }
        Self { name, dir, port: support::free_port(), log, witness, process: None, export_wait: 300 }
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Starts it witnessing `others`' logs and collecting cosignatures from `others`' witnesses, both required.
    fn start(&mut self, others: &[&Partner]) {
        let logs: String = others.iter().map(|other| format!("log {}\n", other.log.verifier())).collect();
        let mut policy = format!("# this gateway's own log, and who must cosign it\nlog {}\n", self.log.verifier());
        for other in others {
            let url = format!("http://127.0.0.1:{}/witness", other.port);
            policy.push_str(&format!("witness {} {} {url}\n", other.name, other.witness.verifier()));
        }
        let names: Vec<&str> = others.iter().map(|other| other.name).collect();
        policy.push_str(&format!("group partners all {}\nquorum partners\n", names.join(" ")));
        let (logs_file, policy_file) = (self.dir.path().join("witnessed-logs"), self.dir.path().join("policy"));
        std::fs::write(&logs_file, logs).unwrap();
        std::fs::write(&policy_file, policy).unwrap();
        let origin = format!("{}.custodia.test/log", self.name);
        let export_wait = self.export_wait.to_string();
        let env = [
            ("CUSTODIA_ORIGIN", origin.as_ref()),
            ("CUSTODIA_WITNESSED_LOGS", logs_file.as_os_str()),
            ("CUSTODIA_WITNESS_POLICY", policy_file.as_os_str()),
            ("CUSTODIA_WITNESS_EXPORT_WAIT_SECONDS", export_wait.as_ref()),
        ];
        self.process = Some(support::spawn_gateway_on(&self.data(), &env, None, self.port));
    }

    fn process(&self) -> &support::GatewayProcess {
        self.process.as_ref().unwrap()
    }

    /// `GET /witness/cosignatures`: what this gateway collected for its own log.
    fn collected(&self) -> Value {
        let answer = send(self.port, "GET", "/witness/cosignatures", b"");
        assert_eq!(answer.status, 200, "{}", answer.body);
        serde_json::from_str(&answer.body).unwrap()
    }

    /// `GET /log/checkpoint`: the status and the note.
    fn published(&self) -> (u16, String) {
        let answer = send(self.port, "GET", "/log/checkpoint", b"");
        (answer.status, answer.body)
    }

    /// Appends `count` custody records through the API: an account joins a case, then its role changes back and
    /// forth, each change on the record. Returns the case; its member is `member-<case>`.
    fn append_records(&self, count: usize) -> String {
        let password = std::fs::read_to_string(self.data().join("keys/initial-admin-password")).unwrap();
        let base = format!("http://127.0.0.1:{}", self.port);
        let curl = |method: &str, path: &str, cookie: Option<&str>, body: String| -> String {
            let mut command = Command::new("curl");
            command.args(["-sS", "-D", "-", "-X", method, "-H", "Content-Type: application/json"]);
            if let Some(cookie) = cookie {
                command.args([
                    "-H",
                    &format!("Cookie: custodia_session={cookie}"),
                    "-H",
                    "Sec-Fetch-Site: same-origin",
                ]);
            }
            let output = command.arg(format!("{base}{path}")).args(["--data-binary", &body]).output().expect(SETUP);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(text.starts_with("HTTP/1.1 2"), "{method} {path}: {text}");
            text
        };
        let signed_in = curl(
            "POST",
            "/api/v1/session",
            None,
            serde_json::json!({ "username": "admin", "password": password.trim() }).to_string(),
        );
        let cookie = signed_in
            .lines()
            .find_map(|line| line.to_ascii_lowercase().starts_with("set-cookie:").then(|| line.to_owned()))
            .and_then(|line| {
                line.split_once("custodia_session=").map(|(_, rest)| rest.split(';').next().unwrap().to_owned())
            })
            .expect("a session cookie");
        let case = format!("case-{}", self.collected()["log_size"]);
        curl(
            "POST",
            "/api/v1/cases",
            Some(&cookie),
            serde_json::json!({ "id": case, "title": "R v Test" }).to_string(),
        );
        let account = curl(
            "POST",
            "/api/v1/accounts",
            Some(&cookie),
            serde_json::json!({ "username": format!("member-{case}"), "display_name": "A member", "password": "correct-horse-battery-staple", "jurisdiction": "IT" }).to_string(),
        );
        let body = account.rsplit_once("\r\n\r\n").unwrap().1;
        let id = serde_json::from_str::<Value>(body).unwrap()["id"].as_str().unwrap().to_owned();
        for n in 0..count {
            let role = if n % 2 == 0 { "prosecutor" } else { "defence" };
            let path = format!("/api/v1/cases/{case}/members/{id}");
            curl("PUT", &path, Some(&cookie), serde_json::json!({ "role": role }).to_string());
        }
        case
    }

    /// A court bundle of a statement a member uploads to a new case, as the export API streams it; with the case
    /// and the member's session.
    fn export_bundle(&self) -> (String, String, Vec<u8>) {
        let case = self.append_records(1);
        let cookie = sign_in(self.port, &format!("member-{case}"), "correct-horse-battery-staple");
        let uploaded = format!("/api/v1/cases/{case}/artefacts?purpose=intake&filename=statement.webm");
        let (status, body) = api(self.port, "POST", &uploaded, &cookie, "video/webm", b"a witnessed statement");
        assert_eq!(status / 100, 2, "{}", String::from_utf8_lossy(&body));
        let artefact = serde_json::from_slice::<Value>(&body).unwrap()["artefact"].as_str().unwrap().to_owned();
        let export = format!("/api/v1/artefacts/{artefact}/exports?purpose=disclosure");
        let (status, bundle) = api(self.port, "POST", &export, &cookie, "application/json", b"{}");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bundle));
        (case, cookie, bundle)
    }

    /// Waits until the checkpoint published is the log's newest and carries both others' cosignatures (judged by
    /// what was published, with a generous bound that only stops a test that would never end), and returns it.
    fn published_cosigned(&self, others: &[&Partner]) -> SignedCheckpoint {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            let log_size = self.collected()["log_size"].as_u64();
            let (status, note) = self.published();
            if status == 200 {
                let checkpoint = SignedCheckpoint::open(note.as_bytes(), &[self.log.verifier()]).unwrap();
                let cosigned = others
                    .iter()
                    .all(|other| other.witness.verifier().cosignature_on(note.as_bytes()).unwrap().is_some());
                if cosigned && Some(checkpoint.checkpoint.size) == log_size {
                    return checkpoint;
                }
            }
            assert!(std::time::Instant::now() < deadline, "{}: never cosigned by both others: {note}", self.name);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_gateways_cosign_each_other_and_an_equivocating_log_is_refused_and_reported() {
    let mut partners = [Partner::new("a"), Partner::new("b"), Partner::new("c")];
    for i in 0..3 {
        let (before, rest) = partners.split_at_mut(i);
        let (this, after) = rest.split_first_mut().unwrap();
        let others: Vec<&Partner> = before.iter().chain(after.iter()).collect();
        this.start(&others);
    }
    let [a, b, c] = &partners;

    // Each publishes checkpoints cosigned by both others, as its log grows.
    for round in 0..2 {
        for (this, count) in [(a, 3 + round), (b, 1), (c, 2)] {
            this.append_records(count);
        }
        for (this, others) in [(a, [b, c]), (b, [a, c]), (c, [a, b])] {
            let checkpoint = this.published_cosigned(&others);
            assert!(checkpoint.checkpoint.size > 0);
            let (_, note) = this.published();
            // The log's own signature first, then one cosignature per witness; the policy's quorum is met.
            let signatures: Vec<&str> = note.trim_end().rsplit_once("\n\n").unwrap().1.lines().collect();
            assert!(signatures[0].starts_with(&format!("\u{2014} {}.custodia.test/log ", this.name)), "{note}");
            assert_eq!(signatures.len(), 3, "{note}");
            let policy = std::fs::read_to_string(this.dir.path().join("policy")).unwrap();
            let verdict = custodia_witness::Policy::parse(&policy).unwrap().evaluate(note.as_bytes()).unwrap();
            assert!(verdict.satisfied, "{verdict:?}");
            let collected = this.collected();
            for witness in collected["witnesses"].as_array().unwrap() {
                assert_eq!(witness["cosigned_size"], checkpoint.checkpoint.size, "{collected}");
                assert_eq!(witness["alarm"], Value::Null, "{collected}");
            }
            assert_eq!(collected["published"]["size"], checkpoint.checkpoint.size);
        }
    }

    // The equivocating log: a's key in another process's hands, with another history of the size a published.
    let genuine = a.published_cosigned(&[b, c]);
    let size = genuine.checkpoint.size;
    let fork_dir = tempfile::tempdir().unwrap();
    let fork =
        Log::open_local(fork_dir.path(), LogSigner::from_skey(a.log.expose_secret()).unwrap(), LogOptions::default())
            .await
            .unwrap();
    grow(&fork, usize::try_from(size).unwrap(), "equivocation").await;
    let forged = fork.checkpoint();
    assert_eq!(forged.checkpoint.size, size);
    assert_ne!(forged.checkpoint.root, genuine.checkpoint.root);
    // Two different checkpoints of one size, one to each witness, each from the size that witness holds: at most
    // one is cosigned; the other witness refuses, and so does the first when it is shown the other.
    let offer = |witness: &Partner, checkpoint: &SignedCheckpoint| {
        add_checkpoint(
            witness.port,
            &AddCheckpoint { old_size: size, proof: Vec::new(), checkpoint: checkpoint.note().to_vec() },
        )
    };
    let to_b = offer(b, &genuine);
    let to_c = offer(c, &forged);
    let forged_to_b = offer(b, &forged);
    assert_eq!((to_b.status, to_c.status, forged_to_b.status), (200, 422, 422), "{} {}", to_c.body, forged_to_b.body);
    assert!(to_c.body.contains("root-conflict"), "{}", to_c.body);
    // The refusals are visible: each witness's operator log and monitoring endpoint.
    for witness in [b, c] {
        let log_report = report(witness.port);
        let of_a =
            log_report["logs"].as_array().unwrap().iter().find(|log| log["origin"] == "a.custodia.test/log").unwrap();
        assert_eq!(of_a["refused"]["root-conflict"], 1, "{log_report}");
        assert_eq!(of_a["size"], size, "a refused checkpoint moved the witness");
        assert_eq!(witness.process().log().matches("a split view").count(), 1, "{}", witness.name);
    }

    // A subtler fork: a's first entries, then others of its own, shown to c alone (c cannot tell: it extends what
    // c cosigned). When a's own collector next asks c, c knows a size that a never reached: a raises the alarm,
    // and fails closed, publishing nothing c has not cosigned.
    let store = custodia_ledger::LogStore::new(
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(a.data().join("log")).unwrap()),
        object_store::path::Path::from(""),
    );
    let subtle_dir = tempfile::tempdir().unwrap();
    let subtle =
        Log::open_local(subtle_dir.path(), LogSigner::from_skey(a.log.expose_secret()).unwrap(), LogOptions::default())
            .await
            .unwrap();
    for index in 0..size {
        subtle.append(store.entry(index, size).await.unwrap()).await.unwrap();
    }
    assert_eq!(subtle.checkpoint().checkpoint.root, genuine.checkpoint.root);
    grow(&subtle, 5, "subtle").await;
    let answer = add_checkpoint(c.port, &request_from(&subtle, size).await);
    assert_eq!(answer.status, 200, "{}", answer.body);
    a.append_records(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let alarmed = loop {
        let collected = a.collected();
        let of_c = collected["witnesses"].as_array().unwrap().iter().find(|w| w["name"] == "c").unwrap().clone();
        if of_c["alarms"] == 1 {
            break collected;
        }
        assert!(std::time::Instant::now() < deadline, "no alarm: {collected}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let of_c = alarmed["witnesses"].as_array().unwrap().iter().find(|w| w["name"] == "c").unwrap();
    assert_eq!(of_c["alarm"], "witness-ahead-of-log", "{alarmed}");
    assert!(
        a.process().log().contains("refuses this log's checkpoint for good"),
        "the alarm is not in a's operator log"
    );
    assert!(a.process().log().contains("witness-ahead-of-log"));
    // Fail-closed: the checkpoint a publishes is still the one both cosigned.
    let (status, note) = a.published();
    assert_eq!(status, 200);
    assert_eq!(SignedCheckpoint::open(note.as_bytes(), &[a.log.verifier()]).unwrap().checkpoint.size, size);
    assert!(alarmed["log_size"].as_u64().unwrap() > size);
}

/// Signs in over HTTP and returns the session cookie's value.
fn sign_in(port: u16, username: &str, password: &str) -> String {
    let body = serde_json::json!({ "username": username, "password": password }).to_string();
    let output = Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "-X", "POST", "-H", "Content-Type: application/json"])
        .args(["--data-binary", &body])
        .arg(format!("http://127.0.0.1:{port}/api/v1/session"))
        .output()
        .expect(SETUP);
    let headers = String::from_utf8_lossy(&output.stdout).into_owned();
    headers
        .split_once("custodia_session=")
        .map(|(_, rest)| rest.split(';').next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no session: {headers}"))
}

/// One API call in a signed-in session, through curl: the status and the body.
fn api(port: u16, method: &str, path: &str, cookie: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (sent, received) = (dir.path().join("sent"), dir.path().join("received"));
    std::fs::write(&sent, body).unwrap();
    let output = Command::new("curl")
        .args(["-sS", "-X", method, "-o"])
        .arg(&received)
        .args(["-w", "%{http_code}", "-H", &format!("Content-Type: {content_type}")])
        .args(["-H", &format!("Cookie: custodia_session={cookie}"), "-H", "Sec-Fetch-Site: same-origin"])
        .arg("--data-binary")
        .arg(format!("@{}", sent.display()))
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect(SETUP);
    let status = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();
    (status, std::fs::read(received).unwrap_or_default())
}

/// The bytes of the bag file whose path ends with `suffix`.
fn bag_file(bundle: &[u8], suffix: &str) -> Vec<u8> {
    let mut archive = tar::Archive::new(bundle);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy().ends_with(suffix) {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            return bytes;
        }
    }
    panic!("no {suffix} in the bundle")
}

/// `custodia verify` on `bundle`: its exit code and what it printed.
fn cli_verify(bundle: &[u8], args: &[&std::ffi::OsStr]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.tar");
    std::fs::write(&path, bundle).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_custodia")).arg("verify").arg(&path).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// The bundle with every copy of `line` in its checkpoint (data/checkpoint and each proof's) replaced by
/// `replacement`, and its BagIt manifests made afresh, as a forger would.
fn with_checkpoint_line(bundle: &[u8], line: &str, replacement: &str) -> Vec<u8> {
    support::rebagged(bundle, |bag| {
        let mut edited = 0;
        let custody = std::fs::read_dir(bag.join("data/custody")).unwrap().map(|entry| entry.unwrap().path());
        for path in custody
            .filter(|path| path.extension().is_some_and(|ext| ext == "proof"))
            .chain([bag.join("data/checkpoint")])
        {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains(line), "{}: {text}", path.display());
            std::fs::write(&path, text.replace(line, replacement)).unwrap();
            edited += 1;
        }
        assert!(edited > 1);
    })
}

/// docs/verify-by-hand.md's step 3a as a reader runs it: plain `bash` (no `-e`), in the unpacked bag of `bundle`,
/// with `POLICY` set to `policy` (relative to the bag, or absolute): whether it ended with status 0, and what it
/// printed.
fn step_3a(bundle: &[u8], policy: &Path) -> (bool, String) {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/verify-by-hand.md")).unwrap();
    let step = doc.split("```sh witnessed\n").nth(1).and_then(|block| block.split("```").next()).unwrap();
    let placeholder = "POLICY=/path/to/the/witness/policy/you/trust.txt\n";
    assert!(step.starts_with(placeholder), "{step}");
    let step = step.replacen(placeholder, &format!("POLICY='{}'\n", policy.display()), 1);
    let unpacked = tempfile::tempdir().unwrap();
    tar::Archive::new(bundle).unpack(unpacked.path()).unwrap();
    let bag = std::fs::read_dir(unpacked.path()).unwrap().next().unwrap().unwrap().path();
    support::run_script_plain(&step, &bag)
}

/// A signature line of `key` on `body`, as a log signs a checkpoint (c2sp.org/signed-note).
fn log_line(key: &LogSigner, body: &str) -> String {
    use ed25519_dalek::Signer as _;
    let mut raw = key.verifier().key_id().to_be_bytes().to_vec();
    raw.extend_from_slice(&key.signing_key().sign(body.as_bytes()).to_bytes());
    format!("\u{2014} {} {}\n", key.name(), base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw))
}

/// Whether `text` holds a character that would act on a terminal or a page: a control character but the line
/// break, or an invisible format character (a right-to-left override).
fn acts_on_display(text: &str) -> bool {
    text.chars().any(|c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

/// Court bundles from a gateway witnessed by a partner carry its policy and a checkpoint the partner cosigned;
/// `custodia verify --policy` names the witness and when it cosigned, says whether the quorum is met, and counts no
/// forged, duplicated or wrong-key cosignature. Without `--policy`, the bundle's own policy is reported as the
/// bundle's. With the partner down, a bundle carries the last cosigned checkpoint and a consistency proof to its
/// own, and the records after it are named as not yet witnessed.
#[tokio::test(flavor = "multi_thread")]
async fn court_bundles_carry_the_policy_and_cosignatures_and_the_cli_judges_them() {
    let mut partners = [Partner::new("a"), Partner::new("b")];
    for i in 0..2 {
        let (before, rest) = partners.split_at_mut(i);
        let (this, after) = rest.split_first_mut().unwrap();
        let others: Vec<&Partner> = before.iter().chain(after.iter()).collect();
        this.start(&others);
    }
    let (case, cookie, bundle) = partners[0].export_bundle();
    let [a, b] = &partners;
    let policy_file = a.dir.path().join("policy");
    let vkey = a.log.verifier().to_string();
    assert_eq!(bag_file(&bundle, "data/witness/policy.txt"), std::fs::read(&policy_file).unwrap());
    let checkpoint = bag_file(&bundle, "data/checkpoint");
    let b_line = String::from_utf8(checkpoint.clone())
        .unwrap()
        .lines()
        .find(|line| line.starts_with("\u{2014} b.custodia.test/witness "))
        .expect("the bundle's checkpoint carries b's cosignature")
        .to_owned();
    let pinned = |bundle: &[u8], policy: &Path| {
        cli_verify(bundle, &["--trusted-key".as_ref(), vkey.as_ref(), "--policy".as_ref(), policy.as_os_str()])
    };

    let (code, said) = pinned(&bundle, &policy_file);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("ok   witness cosignatures: witness b (b.custodia.test/witness) cosigned the checkpoint"),
        "{said}"
    );
    assert!(said.contains("WITNESSES: witnessed under the policy you pinned: its quorum is met by b at 20"), "{said}");
    assert!(
        said.contains("VALID: the evidence and its custody history are exactly what the gateway recorded\n"),
        "{said}"
    );
    let (code, said) = cli_verify(&bundle, &["--trusted-key".as_ref(), vkey.as_ref()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("WITNESSES: witnessed under the bundle's policy, not one you pinned"), "{said}");
    assert!(said.contains("its witnesses are judged by the bundle's own policy, not one you pinned"), "{said}");
    // docs/verify-by-hand.md's step 3a, with standard tools and the policy the reader trusts, verifies b's
    // cosignature, tells its time, and counts it against the quorum.
    let (ok, said) = step_3a(&bundle, &policy_file);
    assert!(ok, "{said}");
    assert!(said.contains("Signature Verified Successfully") && said.contains("witness b cosigned "), "{said}");
    assert!(said.contains("WITNESSED: your policy's quorum (partners) cosigned the log up to "), "{said}");
    by_hand_refuses_forgeries(&bundle, &b_line, a, b, &policy_file);
    terminal_escapes_in_a_bundle_never_reach_the_cli_output(&bundle, a, &vkey);

    // A policy that wants a witness who never cosigned: not met, so not valid under it.
    let stranger = custodia_witness::CosignerKey::generate("c.custodia.test/witness").unwrap();
    let demanding = a.dir.path().join("demanding-policy");
    std::fs::write(
        &demanding,
        format!(
            "log {vkey}\nwitness b {}\nwitness c {}\ngroup both all b c\nquorum both\n",
            b.witness.verifier(),
            stranger.verifier()
        ),
    )
    .unwrap();
    let (code, said) = pinned(&bundle, &demanding);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("NOT witnessed under the policy you pinned: its quorum is not met (cosigned by b at"),
        "{said}"
    );
    assert!(said.contains("NOT VALID: witness cosignatures failed"), "{said}");
    // A case bundle: its own checkpoint and each artefact bundle's are witnessed.
    let (status, case_bundle) = api(
        a.port,
        "POST",
        &format!("/api/v1/cases/{case}/exports?purpose=disclosure"),
        &cookie,
        "application/json",
        b"{}",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&case_bundle));
    let (code, said) = pinned(&case_bundle, &policy_file);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.lines().any(|line| line.starts_with("ok   witness cosignatures: art-")
            && line.contains(": witness b (b.custodia.test/witness) cosigned the checkpoint")),
        "each artefact bundle's: {said}"
    );
    assert!(said.contains("WITNESSES: witnessed under the policy you pinned"), "the case bag's own: {said}");
    let garbled = a.dir.path().join("garbled-policy");
    std::fs::write(&garbled, "quorum everyone\n").unwrap();
    assert_eq!(pinned(&bundle, &garbled).0, 2);

    // Forged, duplicated and wrong-key cosignatures, with the bag's checksums made afresh: none counts.
    let (head, encoded) = b_line.rsplit_once(' ').unwrap();
    let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap();
    raw[40] ^= 1;
    let forged = format!("{head} {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw));
    let body = String::from_utf8(checkpoint).unwrap().split_once("\n\n").unwrap().0.to_owned() + "\n";
    let impostor = custodia_witness::CosignerKey::generate("b.custodia.test/witness").unwrap();
    let wrong_key = impostor.cosign(body.as_bytes(), 1_900_000_000).unwrap();
    for (replacement, named) in [
        (forged, "a cosignature line under witness b's key does not verify over this checkpoint: forged or altered"),
        (format!("{b_line}\n{b_line}"), "witness b cosigns twice"),
        (
            wrong_key.trim_end().to_owned(),
            "carries witness b's name but another key than the policy you pinned gives it",
        ),
    ] {
        let tampered = with_checkpoint_line(&bundle, &b_line, &replacement);
        let (code, said) = pinned(&tampered, &policy_file);
        assert_eq!(code, 1, "{said}");
        assert!(said.contains(named), "{named}: {said}");
        assert!(said.contains("NOT VALID: witness cosignatures failed\n"), "{said}");
        let report = custodia_bundle::verify(tampered.as_slice(), &[a.log.verifier()]).unwrap();
        assert_eq!(report.failed_parts(), [custodia_bundle::Part::Witnesses], "{report}");
        // By hand, each stops the step: OpenSSL refuses the forged line; the duplicate and the wrong key are
        // not the one line under b's key the step wants.
        let (ok, said) = step_3a(&tampered, &policy_file);
        if named.contains("forged") || named.contains("twice") {
            assert!(!ok && said.contains("NOT VALID") && !said.contains("WITNESSED"), "{named}: {said}");
        } else {
            assert!(!ok && said.contains("quorum (partners) is not met: NOT VALID"), "{named}: {said}");
        }
        assert!(!said.contains("witness b cosigned "), "{named}: {said}");
    }

    // The witness goes down, and a's exports stop waiting for it after a second: the last cosigned checkpoint
    // comes with a consistency proof, and the records after it are named as not yet witnessed.
    let [a, b] = &mut partners;
    b.process.take();
    a.process.take();
    a.export_wait = 1;
    a.start(&[&*b]);
    let (_, _, late) = a.export_bundle();
    let older = bag_file(&late, "data/witness/checkpoint");
    let cosigned = SignedCheckpoint::open(&older, &[a.log.verifier()]).unwrap().checkpoint.size;
    assert!(b.witness.verifier().cosignature_on(&older).unwrap().is_some());
    let (code, said) = cli_verify(&late, &["--trusted-key".as_ref(), vkey.as_ref()]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains(&format!("the cosigned checkpoint of size {cosigned} is a prefix of the bundle's checkpoint")),
        "{said}"
    );
    assert!(
        said.contains("WITNESSES: partly witnessed under the bundle's policy, not one you pinned: its quorum (b at"),
        "{said}"
    );
    assert!(said.contains(&format!("cosigned the log up to size {cosigned}; records ")), "{said}");
    let (code, said) = pinned(&late, &policy_file);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("are newer and NOT yet witnessed"), "{said}");
}

/// Step 3a by hand, run as a reader runs it (plain `bash`), stops with `NOT VALID` and a non-zero status, and
/// prints no success line, on each bundle the reviewer forged: a policy swapped for one naming the forger's key,
/// b's cosignature replayed from the log's empty checkpoint or from another log's, and an extension line re-signed
/// by the log's key. A replayed line under a policy that names the forger (the bundle's own) fails too.
fn by_hand_refuses_forgeries(bundle: &[u8], b_line: &str, a: &Partner, b: &Partner, trusted: &Path) {
    let checkpoint = String::from_utf8(bag_file(bundle, "data/checkpoint")).unwrap();
    let (body, _) = checkpoint.split_once("\n\n").unwrap();
    let body = format!("{body}\n");
    let vkey = a.log.verifier();
    let rogue = custodia_witness::CosignerKey::generate("rogue.example/witness").unwrap();
    let rogue_policy = format!("log {vkey}\nwitness b {}\nquorum b\n", rogue.verifier());
    let rogue_line = rogue.cosign(body.as_bytes(), 1_700_000_000).unwrap();
    let (head, encoded) = rogue_line.trim_end().rsplit_once(' ').unwrap();
    let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap();
    raw[50] ^= 1;
    let replayed = format!("{head} {}\n", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw));
    let with_policy = |policy: String, checkpoint: String| {
        support::rebagged(bundle, |bag| {
            std::fs::write(bag.join("data/witness/policy.txt"), &policy).unwrap();
            std::fs::write(bag.join("data/checkpoint"), &checkpoint).unwrap();
        })
    };
    // H1: the bundle's policy names a rogue witness r, whose line does not verify. Under the policy the reader
    // trusts, b's genuine line still witnesses the checkpoint; under the bundle's own, the step fails.
    let h1 = with_policy(rogue_policy.replace("witness b ", "witness r ").replace("quorum b", "quorum r"), {
        format!("{checkpoint}{replayed}")
    });
    let (ok, said) = step_3a(&h1, Path::new("data/witness/policy.txt"));
    assert!(!ok && said.contains("witness r's cosignature: NOT VALID") && !said.contains("cosigned"), "H1: {said}");
    let (ok, said) = step_3a(&h1, trusted);
    assert!(ok && said.contains("WITNESSED: your policy's quorum (partners)"), "H1 under the trusted policy: {said}");
    // A2: the policy swapped for one that names the forger's key as b, and the forger's valid line for b's.
    let a2 = with_policy(rogue_policy, checkpoint.replace(&format!("{b_line}\n"), &rogue_line));
    let empty = custodia_ledger::merkle::empty_root().to_base64();
    let origin = body.lines().next().unwrap();
    let other_log = body.replacen(origin, "b.custodia.test/log", 1);
    let extended = format!("{body}ext line\n");
    let signatures = checkpoint.split_once("\n\n").unwrap().1.lines().skip(1).collect::<Vec<_>>().join("\n");
    let a7 = support::rebagged(bundle, |bag| {
        let note = format!("{extended}\n{}{signatures}\n", log_line(&a.log, &extended));
        std::fs::write(bag.join("data/checkpoint"), note).unwrap();
    });
    for (name, forged) in [
        ("A2 (swapped policy)", a2),
        (
            "A3 (replayed from the empty log)",
            with_checkpoint_line(
                bundle,
                b_line,
                b.witness.cosign(format!("{origin}\n0\n{empty}\n").as_bytes(), 1_700_000_000).unwrap().trim_end(),
            ),
        ),
        (
            "A4 (replayed from another log)",
            with_checkpoint_line(
                bundle,
                b_line,
                b.witness.cosign(other_log.as_bytes(), 1_700_000_000).unwrap().trim_end(),
            ),
        ),
        ("A7 (an extension line)", a7),
    ] {
        let (ok, said) = step_3a(&forged, trusted);
        assert!(!ok, "{name}: {said}");
        assert!(said.contains(": NOT VALID"), "{name}: {said}");
        assert!(!said.contains("WITNESSED") && !said.contains(" cosigned "), "{name}: {said}");
    }
}

/// A bundle whose policy names a witness with terminal escapes (E1), and whose checkpoint carries a cosignature
/// under a key name with a right-to-left override (A11): `custodia verify` shows each escaped, so nothing it prints
/// moves the cursor, hides text or reorders the verdict.
fn terminal_escapes_in_a_bundle_never_reach_the_cli_output(bundle: &[u8], a: &Partner, vkey: &str) {
    let checkpoint = String::from_utf8(bag_file(bundle, "data/checkpoint")).unwrap();
    let body = format!("{}\n", checkpoint.split_once("\n\n").unwrap().0);
    let name = "\u{1b}[2K\u{1b}[1GVALID:\u{1b}[8m";
    let rogue = custodia_witness::CosignerKey::generate("rogue.example/witness").unwrap();
    let e1 = support::rebagged(bundle, |bag| {
        let policy = format!("log {}\nwitness {name} {}\nquorum {name}\n", a.log.verifier(), rogue.verifier());
        std::fs::write(bag.join("data/witness/policy.txt"), policy).unwrap();
        let line = rogue.cosign(body.as_bytes(), 1_700_000_000).unwrap();
        std::fs::write(bag.join("data/checkpoint"), format!("{checkpoint}{line}")).unwrap();
    });
    let bidi = custodia_witness::CosignerKey::generate("x\u{202e}DILAV").unwrap();
    let a11 = support::rebagged(bundle, |bag| {
        let line = bidi.cosign(body.as_bytes(), 1_700_000_000).unwrap();
        std::fs::write(bag.join("data/checkpoint"), format!("{checkpoint}{line}")).unwrap();
    });
    for (label, forged, shown) in [
        ("E1", e1, "witness \\u{1b}[2K\\u{1b}[1GVALID:\\u{1b}[8m ("),
        ("A11", a11, "a cosignature by x\\u{202e}DILAV,"),
    ] {
        let (_, said) = cli_verify(&forged, &["--trusted-key".as_ref(), vkey.as_ref()]);
        assert!(!acts_on_display(&said), "{label}: {said:?}");
        assert!(said.contains(shown), "{label}: {said}");
    }
}

/// A custody log cut back below the ledger indices its catalog holds (e.g. the log directory restored from an older
/// backup) is refused at start-up, with a message that says so (every other test starts on a log that agrees).
#[tokio::test(flavor = "multi_thread")]
async fn a_log_cut_back_below_its_catalog_is_refused_at_start_up() {
    let gw = TestGateway::start().await;
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    gw.case("case-cut").await;
    gw.member("case-cut", &prosecutor, "prosecutor").await;
    let reply = gw.upload("case-cut", "purpose=intake", support::As::Session(&session), b"a statement".to_vec()).await;
    assert!(reply.status.is_success(), "{}", String::from_utf8_lossy(&reply.body));
    let config = custodia_server::config::ServeConfig::with_data_dir(gw.dir.path());
    let dir = gw.dir;
    let log = gw.state.gateway.log().clone();
    drop(gw.state);
    log.close().await;
    // The log directory goes back to an empty backup; the catalog keeps its records.
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    let Err(err) = custodia_server::startup::open(&config, custodia_service::clock::Clock::default()).await else {
        panic!("a log behind its catalog must not start");
    };
    let message = format!("{err:#}");
    assert!(
        message.contains("checkpoint covers 0 entries") && message.contains("restored from an older copy"),
        "{message}"
    );
}
