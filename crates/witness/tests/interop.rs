//! Our cosignatures checked by a verifier none of us wrote into Custodia: tests/peers/cosignature_v1.py, written
//! from the specification with Python's `cryptography`. It must accept what our witness signs and refuse it once
//! the checkpoint, the time or the key is changed. A golden vector pins the exact bytes.

use std::path::Path;
use std::process::Command;

use custodia_ledger::merkle::empty_root;
use custodia_ledger::{Checkpoint, LogSigner};
use custodia_witness::{CosignerKey, CosignerVerifier};
use ed25519_dalek::SigningKey;

const SETUP: &str = "run `scripts/setup-system.sh test` to install python3-cryptography";

/// Runs the Python verifier; `Ok(stdout)` when it accepts.
fn python_verifies(vkey: &str, note: &[u8]) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("note");
    std::fs::write(&file, note).expect("write note");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/cosignature_v1.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(vkey)
        .arg(&file)
        .output()
        .unwrap_or_else(|err| panic!("cannot run python3 ({err}); {SETUP}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("ModuleNotFoundError"), "{stderr}; {SETUP}");
    if output.status.success() { Ok(String::from_utf8_lossy(&output.stdout).into_owned()) } else { Err(stderr) }
}

#[test]
fn an_independent_verifier_accepts_our_cosignatures_and_refuses_tampered_ones() {
    let log = LogSigner::generate("custodia.test/interop").unwrap();
    let witness = CosignerKey::generate("witness.custodia.test/w1").unwrap();
    let vkey = witness.verifier().to_string();
    let checkpoint = log.sign(&Checkpoint::new("custodia.test/interop", 0, empty_root())).unwrap();
    let line = witness.cosign(checkpoint.checkpoint.body().as_bytes(), 1_767_225_600).unwrap();
    let note = [checkpoint.note(), line.as_bytes()].concat();

    assert_eq!(python_verifies(&vkey, &note).unwrap(), "witness.custodia.test/w1 1767225600\n");

    let other_size = String::from_utf8(note.clone()).unwrap().replacen("\n0\n", "\n1\n", 1);
    assert!(python_verifies(&vkey, other_size.as_bytes()).unwrap_err().contains("does not verify"));
    // Another time in the signature line than the one signed.
    let text = String::from_utf8(note.clone()).unwrap();
    let encoded = line.trim_end().rsplit(' ').next().unwrap();
    let mut raw = base64_decode(encoded);
    raw[11] ^= 1;
    let retimed = text.replace(encoded, &base64_encode(&raw));
    assert!(python_verifies(&vkey, retimed.as_bytes()).unwrap_err().contains("does not verify"));
    // Another key of the same name is not this witness.
    let stranger = CosignerKey::generate("witness.custodia.test/w1").unwrap();
    assert!(python_verifies(&stranger.verifier().to_string(), &note).unwrap_err().contains("no cosignature"));
}

/// The exact bytes of one cosignature, from a fixed key, time and checkpoint (Ed25519 is deterministic). If this
/// changes, every cosignature a partner holds would stop verifying.
#[test]
fn the_golden_cosignature_is_byte_for_byte_stable_and_independently_valid() {
    let golden = include_str!("vectors/cosignature-v1.txt");
    let field = |key: &str| {
        golden.lines().find_map(|line| line.strip_prefix(key)).unwrap_or_else(|| panic!("{key} missing")).to_owned()
    };
    let witness =
        CosignerKey::from_signing_key("witness.custodia.test/golden", SigningKey::from_bytes(&[0x42; 32])).unwrap();
    assert_eq!(witness.verifier().to_string(), field("vkey: "));
    assert_eq!(field("vkey: ").parse::<CosignerVerifier>().unwrap(), witness.verifier());
    let body = field("checkpoint: ").replace("\\n", "\n");
    let timestamp: u64 = field("time: ").parse().unwrap();
    let line = witness.cosign(body.as_bytes(), timestamp).unwrap();
    assert_eq!(line.trim_end(), field("cosignature: "));
    let note = format!("{body}\n{line}");
    assert_eq!(
        python_verifies(&field("vkey: "), note.as_bytes()).unwrap(),
        format!("witness.custodia.test/golden {timestamp}\n")
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
