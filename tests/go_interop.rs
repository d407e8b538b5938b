//! Custodia's log checked by an implementation that none of us wrote: Go's golang.org/x/mod/sumdb/note and
//! golang.org/x/mod/sumdb/tlog, driven through tests/go/tlogcheck. Go must accept our signed checkpoints (also as
//! the witness collector publishes them, with cosignatures appended), inclusion and consistency proofs, tlog-proof
//! files and entry bundles, and refuse each of them once tampered.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use custodia_ledger::tile::{TILE_WIDTH, index_path};
use custodia_ledger::{Hash, Log, LogOptions, LogSigner, SignedCheckpoint, TlogProof};
use custodia_tests::{copy_dir_all, sample_record};
use custodia_witness::CosignerKey;
use custodia_witness::collector::{Answer, Collector, Event, Settings};
use tempfile::TempDir;

const ORIGIN: &str = "custodia.test/go-interop";

/// Tree sizes to check: one and two entries, both sides of the first full tile, and a partial third tile.
const SIZES: [u64; 6] = [1, 2, 255, 256, 257, 700];

const SETUP: &str = "run `scripts/setup-system.sh test` to install golang-go and golang-golang-x-mod-dev";

/// tests/go/tlogcheck, built from source for this run.
struct GoChecker {
    binary: PathBuf,
    _build_dir: TempDir,
}

impl GoChecker {
    fn build() -> Self {
        let build_dir = tempfile::tempdir().expect("temp dir");
        let binary = build_dir.path().join("tlogcheck");
        let output = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("go/tlogcheck"))
            // Debian's golang-golang-x-mod-dev puts x/mod in this GOPATH: no modules, no proxy, no network.
            .env("GOPATH", "/usr/share/gocode")
            .env("GO111MODULE", "off")
            .env("GOCACHE", build_dir.path().join("cache"))
            .output()
            .unwrap_or_else(|err| panic!("cannot run `go` ({err}); {SETUP}"));
        assert!(output.status.success(), "go build failed; {SETUP}\n{}", String::from_utf8_lossy(&output.stderr));
        Self { binary, _build_dir: build_dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.binary).args(args).output().expect("run tlogcheck")
    }

    /// Runs a check that must pass, and returns what it printed.
    fn accepts(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "Go refused `tlogcheck {}`: {stderr}", args.join(" "));
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Runs a check that must fail, saying `reason`.
    fn rejects(&self, args: &[&str], reason: &str) {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "Go did not refuse `tlogcheck {}`: {stderr}", args.join(" "));
        assert!(stderr.contains(reason), "Go refused `tlogcheck {}`, but not for {reason:?}: {stderr}", args.join(" "));
    }
}

/// `signed` as the witness collector publishes it (`/log/checkpoint` with a witness policy): the log's note with
/// the cosignatures of two witnesses appended.
fn as_published_cosigned(signed: &SignedCheckpoint, vkey: &str) -> Vec<u8> {
    let witnesses =
        [("w1", CosignerKey::generate("w1.test/witness")), ("w2", CosignerKey::generate("w2.test/witness"))]
            .map(|(name, key)| (name, key.expect("cosigner key")));
    let mut policy = format!("log {vkey}\n");
    for (name, key) in &witnesses {
        policy.push_str(&format!("witness {name} {} http://{name}.test/witness\n", key.verifier()));
    }
    policy.push_str("group both all w1 w2\nquorum both\n");
    let policy = custodia_witness::Policy::parse(&policy).expect("policy");
    let log = vkey.parse().expect("log vkey");
    let mut collector = Collector::new(&log, policy, Settings::default(), Vec::new()).expect("collector");
    collector.handle(Event::Checkpoint(signed.clone()));
    let body = signed.checkpoint.body();
    // The witnesses' clocks and ours agree: the collector refuses a cosignature dated ahead of its clock's skew.
    let now = 1_800_000_000;
    for (name, key) in &witnesses {
        let line = key.cosign(body.as_bytes(), now).expect("cosign");
        let answer = Answer::Cosigned(line);
        collector.handle(Event::Answered { witness: (*name).to_owned(), size: signed.checkpoint.size, answer, now });
    }
    let published = collector.published().expect("published with both cosignatures").to_vec();
    assert!(published.starts_with(signed.note()) && published.len() > signed.note().len());
    published
}

/// The checker takes paths on its command line; temp paths are UTF-8.
fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// One base64 hash per line, as tlogcheck reads proofs.
fn proof_lines(hashes: &[Hash]) -> String {
    hashes.iter().map(|hash| format!("{hash}\n")).collect()
}

fn flip_bit(hash: Hash) -> Hash {
    let mut bytes = hash.0;
    bytes[7] ^= 0x10;
    Hash(bytes)
}

fn with_flipped_bit(proof: &[Hash], at: usize) -> Vec<Hash> {
    let mut proof = proof.to_vec();
    proof[at] = flip_bit(proof[at]);
    proof
}

/// Indices worth proving in a tree of `size`: both ends, the middle, and both sides of the first tile boundary.
fn sample_indices(size: u64) -> BTreeSet<u64> {
    [0, size / 2, size.saturating_sub(1), TILE_WIDTH - 1, TILE_WIDTH].into_iter().filter(|&i| i < size).collect()
}

/// Changes the bytes of an entry bundle on disk.
type BundleTamper<'a> = &'a dyn Fn(&mut Vec<u8>);

/// A log in a temp dir, the entries appended to it (by index), and the files handed to the Go checker.
struct Fixture {
    go: GoChecker,
    scratch: TempDir,
    log: Log,
    log_dir: PathBuf,
    vkey: String,
    skey_file: PathBuf,
    entries: Vec<Vec<u8>>,
    /// Every checkpoint taken so far, with the file that holds it.
    checkpoints: Vec<(SignedCheckpoint, PathBuf)>,
}

impl Fixture {
    async fn new() -> Self {
        let go = GoChecker::build();
        let scratch = tempfile::tempdir().expect("temp dir");
        let signer = LogSigner::generate(ORIGIN).expect("signer");
        let vkey = signer.verifier().to_string();
        let skey_file = scratch.path().join("log.skey");
        std::fs::write(&skey_file, signer.expose_secret()).expect("write signer key");
        let log_dir = scratch.path().join("log");
        let log = Log::open_local(&log_dir, signer, LogOptions::default()).await.expect("open log");
        Self { go, scratch, log, log_dir, vkey, skey_file, entries: Vec::new(), checkpoints: Vec::new() }
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.scratch.path().join(name);
        std::fs::write(&path, bytes).expect("write scratch file");
        path
    }

    fn entry_file(&self, index: u64) -> PathBuf {
        self.write(&format!("entry-{index}"), &self.entries[index as usize])
    }

    fn latest(&self) -> &(SignedCheckpoint, PathBuf) {
        self.checkpoints.last().expect("a checkpoint")
    }

    /// Appends real custody records, concurrently so that they are batched, until the log holds `size`.
    async fn grow_to(&mut self, size: u64) {
        let appends: Vec<_> = (self.entries.len() as u64..size)
            .map(|seed| {
                let log = self.log.clone();
                let entry = sample_record(seed, 100 + (seed % 300) as usize);
                tokio::spawn(async move { (log.append(entry.clone()).await.expect("append"), entry) })
            })
            .collect();
        // Concurrent appends get their indices in any order: put each entry where the log put it.
        self.entries.resize(size as usize, Vec::new());
        for append in appends {
            let (index, entry) = append.await.expect("append task");
            self.entries[index as usize] = entry;
        }
        assert_eq!(self.log.checkpoint().checkpoint.size, size);
    }

    /// Go accepts the latest checkpoint, the entries under it, and its consistency with every earlier one.
    async fn accepts_latest_checkpoint(&mut self) {
        let signed = self.log.checkpoint();
        let (size, vkey) = (signed.checkpoint.size, self.vkey.as_str());
        let file = self.write(&format!("checkpoint-{size}"), signed.note());
        let summary = format!("{size} {}\n", signed.checkpoint.root);
        assert_eq!(self.go.accepts(&["note", vkey, arg(&file)]), summary);
        // Cosigned, as published: Go still verifies the log's own signature and ignores the cosignatures.
        let cosigned = self.write(&format!("cosigned-{size}"), as_published_cosigned(&signed, vkey));
        assert_eq!(self.go.accepts(&["note", vkey, arg(&cosigned)]), summary);
        // Run while this checkpoint is the latest, so that its partial entry bundle is the one read.
        assert_eq!(self.go.accepts(&["treehash", vkey, arg(&file), arg(&self.log_dir)]), summary);
        // Ed25519 is deterministic: Go, signing our body with our key file, must write our note byte for byte.
        let body = self.write("body", signed.checkpoint.body());
        assert_eq!(self.go.accepts(&["sign", arg(&self.skey_file), arg(&body)]).as_bytes(), signed.note());

        for index in sample_indices(size) {
            let entry = self.entry_file(index);
            let path = self.log.storage().inclusion_proof(index, size).await.expect("inclusion proof");
            let proof = self.write("inclusion", proof_lines(&path));
            self.go.accepts(&["inclusion", vkey, arg(&file), &index.to_string(), arg(&entry), arg(&proof)]);

            let tlog_proof = self.log.tlog_proof(index).await.expect("tlog proof");
            assert_eq!(tlog_proof.path, path);
            let with_extra = TlogProof { extra: Some(b"custodia".to_vec()), ..tlog_proof.clone() };
            for tlog_proof in [tlog_proof, with_extra] {
                let proof_file = self.write("entry.tlog-proof", tlog_proof.to_bytes());
                self.go.accepts(&["tlogproof", vkey, arg(&proof_file), arg(&entry)]);
            }
        }

        self.checkpoints.push((signed, file));
        let (_, new_file) = self.latest();
        // sumdb, like RFC 9162, has no consistency proof from the empty tree.
        for (old, old_file) in self.checkpoints.iter().filter(|(old, _)| old.checkpoint.size > 0) {
            let proof = self.log.storage().consistency_proof(old.checkpoint.size, size).await.expect("consistency");
            let proof = self.write("consistency", proof_lines(&proof));
            self.go.accepts(&["consistency", vkey, arg(old_file), arg(new_file), arg(&proof)]);
        }
    }

    /// A checkpoint with its size or root changed, or signed by another key with our log's name.
    fn refuses_tampered_checkpoints(&self) {
        let (signed, _) = self.latest();
        let note = std::str::from_utf8(signed.note()).expect("UTF-8 note");
        let (size, root) = (signed.checkpoint.size, signed.checkpoint.root);
        let other_size = note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1);
        let other_root = note.replacen(&root.to_base64(), &flip_bit(root).to_base64(), 1);
        let cosigned = String::from_utf8(as_published_cosigned(signed, &self.vkey)).expect("UTF-8 note");
        let cosigned_other_root = cosigned.replacen(&root.to_base64(), &flip_bit(root).to_base64(), 1);
        for forged in [other_size, other_root, cosigned_other_root] {
            assert_ne!(forged, note);
            let forged = self.write("forged-checkpoint", forged);
            self.go.rejects(&["note", &self.vkey, arg(&forged)], "invalid signature");
        }

        let stranger = LogSigner::generate(ORIGIN).expect("signer");
        let stranger_note = stranger.sign(&signed.checkpoint).expect("sign");
        let stranger_file = self.write("stranger-checkpoint", stranger_note.note());
        self.go.accepts(&["note", &stranger.verifier().to_string(), arg(&stranger_file)]);
        self.go.rejects(&["note", &self.vkey, arg(&stranger_file)], "no verifiable signatures");
    }

    /// Proofs with a bit flipped, for the wrong entry or index, or under a forged checkpoint.
    async fn refuses_tampered_proofs(&self) {
        const REFUSED: &str = "invalid transparency proof";
        let (signed, file) = self.latest();
        let (size, vkey, file) = (signed.checkpoint.size, self.vkey.as_str(), arg(file));
        let index = size / 2;
        let (entry, next_entry) = (self.entry_file(index), self.entry_file(index + 1));
        let path = self.log.storage().inclusion_proof(index, size).await.expect("inclusion proof");
        let proof = self.write("inclusion", proof_lines(&path));
        let flipped = self.write("inclusion-flipped", proof_lines(&with_flipped_bit(&path, path.len() / 2)));
        let index_text = index.to_string();
        self.go.accepts(&["inclusion", vkey, file, &index_text, arg(&entry), arg(&proof)]);
        self.go.rejects(&["inclusion", vkey, file, &index_text, arg(&entry), arg(&flipped)], REFUSED);
        self.go.rejects(&["inclusion", vkey, file, &index_text, arg(&next_entry), arg(&proof)], REFUSED);
        self.go.rejects(&["inclusion", vkey, file, &(index + 1).to_string(), arg(&entry), arg(&proof)], REFUSED);

        let tlog_proof = self.log.tlog_proof(index).await.expect("tlog proof");
        let forged_note = String::from_utf8(signed.note().to_vec()).expect("UTF-8 note").replacen(
            &format!("\n{size}\n"),
            &format!("\n{}\n", size - 1),
            1,
        );
        let forgeries = [
            (TlogProof { path: with_flipped_bit(&path, 0), ..tlog_proof.clone() }, &entry, REFUSED),
            (tlog_proof.clone(), &next_entry, REFUSED),
            (TlogProof { checkpoint_note: forged_note.into_bytes(), ..tlog_proof }, &entry, "invalid signature"),
        ];
        for (forged, entry, reason) in forgeries {
            let proof_file = self.write("forged.tlog-proof", forged.to_bytes());
            self.go.rejects(&["tlogproof", vkey, arg(&proof_file), arg(entry)], reason);
        }

        let (old, old_file) = &self.checkpoints[self.checkpoints.len() - 2];
        let path = self.log.storage().consistency_proof(old.checkpoint.size, size).await.expect("consistency");
        let flipped = self.write("consistency-flipped", proof_lines(&with_flipped_bit(&path, 0)));
        self.go.rejects(&["consistency", vkey, arg(old_file), file, arg(&flipped)], REFUSED);
    }

    /// Copies of the log with an entry bundle truncated, short of an entry, or with an entry altered.
    fn refuses_tampered_bundles(&self) {
        let (signed, file) = self.latest();
        let size = signed.checkpoint.size;
        assert!(size % TILE_WIDTH > 0 && size > 2 * TILE_WIDTH, "the log ends in a partial bundle after two full ones");
        let partial = format!("tile/entries/{}.p/{}", index_path(size / TILE_WIDTH), size % TILE_WIDTH);
        let last_of_second = self.entries[2 * TILE_WIDTH as usize - 1].len();
        let truncate = |by: usize| move |bundle: &mut Vec<u8>| bundle.truncate(bundle.len() - by);
        let tamperings: [(&str, BundleTamper, &str); 4] = [
            (&partial, &truncate(1), "truncated"),
            ("tile/entries/000", &truncate(1), "truncated"),
            ("tile/entries/001", &truncate(2 + last_of_second), "holds 255 entries"),
            ("tile/entries/000", &|bundle| *bundle.last_mut().expect("non-empty") ^= 1, "hash to root"),
        ];
        for (n, (bundle, tamper, reason)) in tamperings.into_iter().enumerate() {
            let copy = self.scratch.path().join(format!("tampered-log-{n}"));
            copy_dir_all(&self.log_dir, &copy).expect("copy log");
            let mut bytes = std::fs::read(copy.join(bundle)).expect("read bundle");
            tamper(&mut bytes);
            std::fs::write(copy.join(bundle), bytes).expect("write bundle");
            self.go.rejects(&["treehash", &self.vkey, arg(file), arg(&copy)], reason);
        }
    }
}

#[tokio::test]
async fn go_sumdb_accepts_our_log_and_refuses_it_tampered() {
    let mut fixture = Fixture::new().await;
    fixture.accepts_latest_checkpoint().await;
    for size in SIZES {
        fixture.grow_to(size).await;
        fixture.accepts_latest_checkpoint().await;
    }
    fixture.refuses_tampered_checkpoints();
    fixture.refuses_tampered_proofs().await;
    fixture.refuses_tampered_bundles();
}
