//! The gateway as a witness of a partner's log (c2sp.org/tlog-witness v1.0.0), tried as the partner and as an
//! attacker would try it, against a real `custodia serve` process: it cosigns a growing log, tells a log that is
//! behind or ahead where it is, refuses a fork and says so, answers malformed, forged and oversized requests with
//! the spec's status, advances once under concurrent requests, and refuses to start if a witnessed log is dropped
//! from its configuration or re-keyed. Our cosignatures are also checked by a verifier written from the spec in
//! Python (crates/witness/tests/peers). Needs curl and python3-cryptography (scripts/setup-system.sh test).

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

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
    let log = &partner.state.gateway.log;
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
