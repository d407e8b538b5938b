//! Our RFC 9421 profile against an implementation none of us wrote: pyauth's `http-message-signatures` (PyPI,
//! Apache-2.0; tests/requirements.txt), driven by `tests/peers/httpsig_peer.py`. Its signatures verify with ours,
//! ours verify with it, and a request changed after signing is refused by it, as by us. Its Content-Digest is
//! checked with ours too.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use custodia_core::Sha256;
use custodia_partners::digest;
use custodia_partners::signature::{self, RequestParts, SignatureParams};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/httpsig_peer.py");
const URL: &str = "https://it.example/partners/v1/transfers?resume=1";
const PATH: &str = "/partners/v1/transfers";
const DATE: &str = "Fri, 04 Dec 2026 15:00:00 GMT";

fn peer(mode: &str, job: &Value) -> Result<Value, String> {
    let mut child = Command::new("python3")
        .arg(PEER)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (./x test installs http-message-signatures from tests/requirements.txt)");
    child.stdin.take().expect("stdin").write_all(job.to_string().as_bytes()).expect("written");
    let output = child.wait_with_output().expect("the peer ran");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("the peer prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[test]
fn a_python_signature_verifies_with_ours_and_its_content_digest_checks() {
    let key = SigningKey::from_bytes(&[3; 32]);
    let body = br#"{"transfer": "t-1", "artefact": "art-0001"}"#;
    let created = now();
    let signed = peer(
        "sign",
        &json!({
            "method": "POST", "url": URL, "date": DATE, "body": base64::engine::general_purpose::STANDARD.encode(body),
            "private_key": b64url(&key.to_bytes()), "keyid": "tn-tunis", "nonce": "python-nonce-1", "created": created,
        }),
    )
    .expect("python signs");
    let text = |name: &str| signed[name].as_str().expect("a string").to_owned();
    let content_digest = text("content_digest");
    digest::check(&content_digest, &Sha256::of(body)).expect("its Content-Digest is ours");
    let request = RequestParts { method: "POST", path: PATH, content_digest: &content_digest, date: DATE };
    let presented = signature::parse(&text("signature_input"), &text("signature")).expect("our profile");
    assert_eq!(
        presented.params,
        SignatureParams { created, keyid: "tn-tunis".into(), nonce: "python-nonce-1".into() },
        "{signed}"
    );
    presented.verify(&request, &key.verifying_key(), now()).expect("its signature verifies with ours");
    let changed = RequestParts { date: "Fri, 04 Dec 2026 15:00:01 GMT", ..request };
    assert!(presented.verify(&changed, &key.verifying_key(), now()).is_err());
}

#[test]
fn our_signature_verifies_with_python_and_a_changed_request_does_not() {
    let key = SigningKey::from_bytes(&[4; 32]);
    let body = br#"{"evidence": "SubmissionAcceptance"}"#;
    let content_digest = digest::content_digest(&Sha256::of(body));
    let request = RequestParts { method: "POST", path: PATH, content_digest: &content_digest, date: DATE };
    let params = SignatureParams { created: now(), keyid: "it-catania".into(), nonce: signature::new_nonce([5; 16]) };
    let headers = signature::sign(&request, &key, &params);
    let job = |method: &str, date: &str, body: &[u8]| {
        json!({
            "method": method, "url": URL, "body": base64::engine::general_purpose::STANDARD.encode(body),
            "public_key": b64url(key.verifying_key().as_bytes()), "keyid": "it-catania",
            "headers": {
                "Date": date, "Content-Digest": content_digest,
                "Signature-Input": headers.input, "Signature": headers.signature,
            },
        })
    };
    let verified = peer("verify", &job("POST", DATE, body)).expect("python verifies ours");
    assert_eq!(verified["verified"], json!(true));
    assert_eq!(verified["params"]["nonce"], json!(params.nonce), "{verified}");
    assert!(peer("verify", &job("PUT", DATE, body)).is_err(), "another method");
    assert!(peer("verify", &job("POST", "Fri, 04 Dec 2026 15:00:01 GMT", body)).is_err(), "another date");
    assert!(peer("verify", &job("POST", DATE, b"{}")).is_err(), "another body than its digest");
}
