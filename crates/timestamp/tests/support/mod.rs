//! A real local Time-Stamp Authority: keys and certificates made with the openssl CLI in a temporary directory, and
//! `openssl ts -reply` answering queries. Also `openssl ts -verify` and `openssl cms -sign` for the cross-checks.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use custodia_timestamp::TrustAnchors;
use tempfile::TempDir;

pub const DEFAULT_POLICY: &str = "1.3.6.1.4.1.99999.1";
pub const OTHER_POLICY: &str = "1.3.6.1.4.1.99999.2";

/// The authority's key type.
#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Rsa,
}

/// The extended key usage of a certificate made for the authority.
#[derive(Clone, Copy, Debug)]
pub enum Eku {
    CriticalTimestamping,
    NonCriticalTimestamping,
    None,
}

impl Eku {
    /// Its section in [`EXTENSIONS`].
    fn section(self) -> &'static str {
        match self {
            Eku::CriticalTimestamping => "tsa_critical",
            Eku::NonCriticalTimestamping => "tsa_noncritical",
            Eku::None => "tsa_none",
        }
    }
}

const EXTENSIONS: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[tsa_critical]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[tsa_noncritical]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[tsa_none]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Runs openssl in `dir` and returns its stdout; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn generate_key(dir: &Path, kind: KeyKind, out: &str) {
    let mut args = vec!["genpkey", "-out", out];
    match kind {
        KeyKind::EcdsaP256 => args.extend(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        KeyKind::EcdsaP384 => args.extend(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]),
        KeyKind::Rsa => args.extend(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
    }
    openssl(dir, &args);
}

/// A CA (self-signed) and a TSA certificate it issued, and the TSA configuration for `openssl ts -reply`.
#[derive(Debug)]
pub struct Authority {
    dir: TempDir,
    kind: KeyKind,
}

impl Authority {
    /// A CA named `ca_name` and a TSA under it with the critical timeStamping EKU.
    pub fn new(kind: KeyKind) -> Self {
        Self::with(kind, "Custodia Test CA", Eku::CriticalTimestamping, "sha256")
    }

    /// A CA named `ca_name`, a TSA certificate with `eku`, and ESSCertID(v2) made with `ess_cert_id_alg`.
    pub fn with(kind: KeyKind, ca_name: &str, eku: Eku, ess_cert_id_alg: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path();
        std::fs::write(path.join("ext.cnf"), EXTENSIONS).expect("write ext.cnf");
        generate_key(path, kind, "ca.key");
        let ca_subject = format!("/CN={ca_name}/O=Custodia tests");
        openssl(
            path,
            &[
                "req",
                "-x509",
                "-new",
                "-config",
                "ext.cnf",
                "-extensions",
                "ca_ext",
                "-key",
                "ca.key",
                "-subj",
                &ca_subject,
                "-days",
                "3650",
                "-out",
                "ca.crt",
            ],
        );
        generate_key(path, kind, "tsa.key");
        openssl(
            path,
            &[
                "req",
                "-new",
                "-config",
                "ext.cnf",
                "-key",
                "tsa.key",
                "-subj",
                "/CN=Custodia Test TSA/O=Custodia tests",
                "-out",
                "tsa.csr",
            ],
        );
        sign_tsa_certificate(path, eku, "tsa.crt");
        std::fs::write(path.join("serial"), "01\n").expect("write serial");
        let config = format!(
            "[tsa]\n\
             default_tsa = tsa_config1\n\
             [tsa_config1]\n\
             dir = {dir}\n\
             serial = $dir/serial\n\
             crypto_device = builtin\n\
             signer_cert = $dir/tsa.crt\n\
             certs = $dir/ca.crt\n\
             signer_key = $dir/tsa.key\n\
             signer_digest = sha256\n\
             default_policy = {DEFAULT_POLICY}\n\
             other_policies = {OTHER_POLICY}\n\
             digests = sha256, sha384, sha512\n\
             accuracy = secs:1\n\
             ordering = yes\n\
             tsa_name = yes\n\
             ess_cert_id_chain = no\n\
             ess_cert_id_alg = {ess_cert_id_alg}\n",
            dir = path.display()
        );
        std::fs::write(path.join("tsa.cnf"), config).expect("write tsa.cnf");
        Self { dir, kind }
    }

    /// Makes `openssl ts -reply` give genTime with up to `digits` digits of fractions of a second.
    /// Tokens that carry the authority's certificate alone, not its CA's too (`certs` left out of the config).
    pub fn without_chain_certificates(self) -> Self {
        let config = std::fs::read_to_string(self.path("tsa.cnf")).expect("read tsa.cnf");
        let config: String =
            config.lines().filter(|line| !line.starts_with("certs =")).map(|line| line.to_owned() + "\n").collect();
        std::fs::write(self.path("tsa.cnf"), config).expect("write tsa.cnf");
        self
    }

    pub fn with_clock_precision_digits(self, digits: u8) -> Self {
        let mut config = std::fs::read_to_string(self.path("tsa.cnf")).expect("read tsa.cnf");
        config.push_str(&format!("clock_precision_digits = {digits}\n"));
        std::fs::write(self.path("tsa.cnf"), config).expect("write tsa.cnf");
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA as the one trust anchor.
    pub fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_pem(&std::fs::read(self.path("ca.crt")).expect("read ca.crt")).expect("anchors")
    }

    /// `openssl ts -reply` to a DER query.
    pub fn reply(&self, query: &[u8]) -> Vec<u8> {
        let name = format!("query-{}.tsq", unique());
        std::fs::write(self.path(&name), query).expect("write query");
        let out = format!("{name}.tsr");
        openssl(self.dir(), &["ts", "-reply", "-config", "tsa.cnf", "-queryfile", &name, "-out", &out]);
        std::fs::read(self.path(&out)).expect("read reply")
    }

    /// Whether `openssl ts -verify` accepts `response` as an answer to `query`, with this CA as the anchor.
    pub fn openssl_verifies(&self, query: &[u8], response: &[u8]) -> bool {
        let name = format!("check-{}", unique());
        std::fs::write(self.path(&format!("{name}.tsq")), query).expect("write query");
        std::fs::write(self.path(&format!("{name}.tsr")), response).expect("write response");
        Command::new("openssl")
            .args(["ts", "-verify", "-queryfile", &format!("{name}.tsq"), "-in", &format!("{name}.tsr")])
            .args(["-CAfile", "ca.crt", "-untrusted", "tsa.crt"])
            .current_dir(self.dir())
            .output()
            .expect("run openssl ts -verify")
            .status
            .success()
    }

    /// Whether PyPI's `rfc3161-client` (Trail of Bits' verifier, tests/requirements.txt) accepts `response` as an
    /// answer to `query` over `message`, with this CA as its one root: imprint, nonce, policy, CMS signature,
    /// ESSCertID(v2), EKU and chain, checked by code none of us wrote. `None` when it is not installed.
    pub fn rfc3161_client_verifies(&self, query: &[u8], response: &[u8], message: &[u8]) -> Option<bool> {
        const VERIFY: &str = r#"
import sys
from cryptography import x509
from rfc3161_client import VerificationError, VerifierBuilder, decode_timestamp_response
from rfc3161_client._rust import parse_timestamp_request
query, response, message, root = (open(path, "rb").read() for path in sys.argv[1:5])
request = parse_timestamp_request(query)
try:
    verifier = VerifierBuilder.from_request(request).add_root_certificate(x509.load_pem_x509_certificate(root)).build()
    verifier.verify_message(decode_timestamp_response(response), message)
except (VerificationError, ValueError) as refused:
    print("refused:", refused)
    sys.exit(1)
print("accepted")
"#;
        let installed = Command::new("python3").args(["-c", "import rfc3161_client"]).output().ok()?;
        if !installed.status.success() {
            eprintln!("SKIPPED: rfc3161-client is not installed (scripts/setup-system.sh test)");
            return None;
        }
        let name = format!("client-{}", unique());
        for (suffix, bytes) in [("tsq", query), ("tsr", response), ("txt", message)] {
            std::fs::write(self.path(&format!("{name}.{suffix}")), bytes).expect("write");
        }
        let answer = Command::new("python3")
            .args(["-c", VERIFY])
            .args([format!("{name}.tsq"), format!("{name}.tsr"), format!("{name}.txt"), "ca.crt".to_owned()])
            .current_dir(self.dir())
            .output()
            .expect("run python3");
        let said = String::from_utf8_lossy(&answer.stdout).trim().to_owned();
        assert!(
            said == "accepted" || said.starts_with("refused:"),
            "rfc3161-client failed: {said} {}",
            String::from_utf8_lossy(&answer.stderr)
        );
        if !answer.status.success() {
            eprintln!("rfc3161-client: {said}");
        }
        Some(answer.status.success())
    }

    /// A token made with `openssl cms -sign -cades` (content-type, message-digest, signing-certificate-v2 signed) over
    /// `tst_info`, signed with this authority's key under the certificate file `certificate`.
    pub fn cms_sign(&self, tst_info: &[u8], certificate: &str) -> Vec<u8> {
        let name = format!("tst-{}", unique());
        std::fs::write(self.path(&format!("{name}.der")), tst_info).expect("write TSTInfo");
        openssl(
            self.dir(),
            &[
                "cms",
                "-sign",
                "-binary",
                "-nodetach",
                "-in",
                &format!("{name}.der"),
                "-econtent_type",
                "1.2.840.113549.1.9.16.1.4",
                "-signer",
                certificate,
                "-inkey",
                "tsa.key",
                "-certfile",
                "ca.crt",
                "-md",
                "sha256",
                "-nosmimecap",
                "-cades",
                "-outform",
                "DER",
                "-out",
                &format!("{name}.p7"),
            ],
        );
        std::fs::read(self.path(&format!("{name}.p7"))).expect("read token")
    }

    /// Issues another TSA certificate for the same key under the same CA, with `eku`, into `file`.
    pub fn issue_tsa_certificate(&self, eku: Eku, file: &str) {
        sign_tsa_certificate(self.dir(), eku, file);
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The CA in `dir` signs the TSA's request (`tsa.csr`) into the certificate `file`, with the extensions of `eku`.
fn sign_tsa_certificate(dir: &Path, eku: Eku, file: &str) {
    let section = eku.section();
    let args =
        ["x509", "-req", "-in", "tsa.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "365"];
    let mut args = args.to_vec();
    args.extend(["-extfile", "ext.cnf", "-extensions", section, "-out", file]);
    openssl(dir, &args);
}
