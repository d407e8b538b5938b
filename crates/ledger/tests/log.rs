//! The log through its public API: durability across reopen, proofs against signed checkpoints, failed writes
//! that change nothing, and an audit that names exactly what was tampered with.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use custodia_ledger::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use custodia_ledger::{AuditError, Log, LogError, LogOptions, LogSigner, LogStore, LogVerifier, audit_log};
use custodia_tests::failing_store::FailingStore;
use object_store::memory::InMemory;
use object_store::path::Path;

const ORIGIN: &str = "custodia.test/log";

fn entry(i: u64) -> Vec<u8> {
    format!("{{\"entry\":{i}}}").into_bytes()
}

async fn append_all(log: &Log, range: std::ops::Range<u64>) -> Vec<u64> {
    let appends = range.map(|i| {
        let log = log.clone();
        tokio::spawn(async move { log.append(entry(i)).await.unwrap() })
    });
    let mut indices = Vec::new();
    for handle in appends.collect::<Vec<_>>() {
        indices.push(handle.await.unwrap());
    }
    indices
}

fn local_storage(dir: &std::path::Path) -> LogStore {
    LogStore::new(Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap()), Path::default())
}

async fn audit(dir: &std::path::Path, verifier: &LogVerifier) -> Result<custodia_ledger::AuditReport, AuditError> {
    audit_log(&local_storage(dir), std::slice::from_ref(verifier), None, |_, _| Ok(())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_survive_reopen_and_prove_inclusion() {
    let dir = tempfile::tempdir().unwrap();
    let signer = LogSigner::generate(ORIGIN).unwrap();
    let skey = signer.expose_secret().to_owned();
    let verifier = signer.verifier();

    let log = Log::open_local(dir.path(), signer, LogOptions::default()).await.unwrap();
    let mut indices = append_all(&log, 0..600).await;
    indices.sort_unstable();
    assert_eq!(indices, (0..600).collect::<Vec<_>>(), "indices are unique and contiguous");
    let first = log.checkpoint();
    assert_eq!(first.checkpoint.size, 600);
    assert!(matches!(
        Log::open_local(dir.path(), LogSigner::from_skey(&skey).unwrap(), LogOptions::default()).await,
        Err(LogError::Locked { .. })
    ));
    log.close().await;

    let log = Log::open_local(dir.path(), LogSigner::from_skey(&skey).unwrap(), LogOptions::default()).await.unwrap();
    assert_eq!(log.checkpoint(), first, "reopening publishes nothing new");
    append_all(&log, 600..1000).await;
    let second = log.checkpoint().checkpoint;
    assert_eq!(second.size, 1000);

    for index in [0, 1, 255, 256, 511, 599, 999] {
        let stored = log.storage().entry(index, second.size).await.unwrap();
        let proof = log.storage().inclusion_proof(index, second.size).await.unwrap();
        verify_inclusion(index, second.size, &leaf_hash(&stored), &proof, &second.root).unwrap();
        let offline = log.tlog_proof(index).await.unwrap();
        offline.verify(&stored, std::slice::from_ref(&verifier)).unwrap();
        assert!(offline.verify(b"some other entry", std::slice::from_ref(&verifier)).is_err());
    }
    let proof = log.storage().consistency_proof(600, 1000).await.unwrap();
    verify_consistency(600, 1000, &proof, &first.checkpoint.root, &second.root).unwrap();

    let report = audit(dir.path(), &verifier).await.unwrap();
    assert_eq!(report.entries, 1000);
}

#[tokio::test]
async fn oversized_entries_are_refused_and_change_nothing() {
    let log = Log::open(
        Arc::new(InMemory::new()),
        Path::default(),
        LogSigner::generate(ORIGIN).unwrap(),
        LogOptions::default(),
    )
    .await
    .unwrap();
    log.append(entry(0)).await.unwrap();
    let before = log.checkpoint();
    assert!(matches!(log.append(vec![0u8; 65536]).await, Err(LogError::EntryTooLarge { len: 65536 })));
    assert_eq!(log.checkpoint(), before);
    assert_eq!(log.append(vec![0u8; 65535]).await.unwrap(), 1, "the largest entry a bundle holds is accepted");
}

#[tokio::test]
async fn a_failed_write_is_reported_and_never_half_applied() {
    let store = Arc::new(FailingStore::default());
    let log = Log::open(store.clone(), Path::default(), LogSigner::generate(ORIGIN).unwrap(), LogOptions::default())
        .await
        .unwrap();
    append_all(&log, 0..300).await;
    let before = log.checkpoint();

    store.fail_puts.store(true, Ordering::SeqCst);
    let err = log.append(entry(300)).await.unwrap_err();
    assert!(matches!(err, LogError::Batch(_)), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(log.checkpoint(), before, "nothing was published");
    assert_eq!(log.appended_here(), 300, "only acknowledged appends count as this process's");

    store.fail_puts.store(false, Ordering::SeqCst);
    assert_eq!(log.append(entry(301)).await.unwrap(), 300, "the failed entry's index was never used");
    assert_eq!(log.clone().appended_here(), 301, "every handle of this process counts into one figure");
    let storage = LogStore::new(store.clone(), Path::default());
    assert_eq!(storage.entry(300, 301).await.unwrap(), Bytes::from(entry(301)));
    let verifier = log.checkpoint();
    assert_eq!(verifier.checkpoint.size, 301);
}

/// A store that fails for a while, reads included (a full descriptor table), stops the log only as long as it
/// fails: appends meanwhile are refused with the reason, not left waiting, and once the store answers again the
/// log goes on from what the store holds.
#[tokio::test]
async fn the_log_recovers_once_a_failing_store_answers_again() {
    let store = Arc::new(FailingStore::default());
    let log = Log::open(store.clone(), Path::default(), LogSigner::generate(ORIGIN).unwrap(), LogOptions::default())
        .await
        .unwrap();
    append_all(&log, 0..10).await;
    store.fail_puts.store(true, Ordering::SeqCst);
    store.fail_gets.store(true, Ordering::SeqCst);
    assert!(log.is_appending());
    assert!(log.append(entry(10)).await.is_err(), "the failed batch");
    assert!(!log.is_appending(), "a health check sees it");
    for n in 11..14 {
        let refused = tokio::time::timeout(std::time::Duration::from_secs(30), log.append(entry(n))).await;
        assert!(refused.expect("refused, not left waiting").is_err(), "refused while the store fails");
    }
    store.fail_puts.store(false, Ordering::SeqCst);
    store.fail_gets.store(false, Ordering::SeqCst);
    let appended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if let Ok(index) = log.append(entry(20)).await {
                return index;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the log recovered");
    assert_eq!(appended, 10, "the failed entries' indices were never used");
    assert!(log.is_appending());
    assert_eq!(log.checkpoint().checkpoint.size, 11);
}

/// Builds a log of `n` entries in a fresh directory and returns it with its verifier.
async fn built_log(n: u64) -> (tempfile::TempDir, LogVerifier) {
    let dir = tempfile::tempdir().unwrap();
    let signer = LogSigner::generate(ORIGIN).unwrap();
    let verifier = signer.verifier();
    let log = Log::open_local(dir.path(), signer, LogOptions::default()).await.unwrap();
    append_all(&log, 0..n).await;
    (dir, verifier)
}

fn flip_byte(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at % bytes.len();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn audit_names_what_was_tampered_with() {
    let (dir, verifier) = built_log(600).await;
    audit(dir.path(), &verifier).await.unwrap();
    let copy = |name: &str| {
        let target = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", dir.path().display()))
            .arg(target.path())
            .status()
            .unwrap();
        assert!(status.success(), "{name}: copy failed");
        target
    };

    let t = copy("entry");
    flip_byte(&t.path().join("tile/entries/000"), 100);
    let err = audit(t.path(), &verifier).await.unwrap_err();
    assert!(matches!(err, AuditError::TileMismatch { ref path } if path == "tile/0/000"), "{err}");

    let t = copy("partial entry");
    flip_byte(&t.path().join("tile/entries/002.p/88"), 7);
    let err = audit(t.path(), &verifier).await.unwrap_err();
    assert!(matches!(err, AuditError::TileMismatch { ref path } if path == "tile/0/002.p/88"), "{err}");

    let t = copy("length prefix");
    flip_byte(&t.path().join("tile/entries/001"), 0);
    let err = audit(t.path(), &verifier).await.unwrap_err();
    assert!(err.to_string().contains("tile/entries/001"), "{err}");

    let t = copy("hash tile");
    flip_byte(&t.path().join("tile/0/001"), 40);
    let err = audit(t.path(), &verifier).await.unwrap_err();
    assert!(matches!(err, AuditError::TileMismatch { ref path } if path == "tile/0/001"), "{err}");

    let t = copy("missing bundle");
    std::fs::remove_file(t.path().join("tile/entries/001")).unwrap();
    let err = audit(t.path(), &verifier).await.unwrap_err();
    assert!(err.to_string().contains("tile/entries/001 is missing"), "{err}");

    let t = copy("checkpoint");
    let text = std::fs::read_to_string(t.path().join("checkpoint")).unwrap();
    std::fs::write(t.path().join("checkpoint"), text.replacen("\n600\n", "\n599\n", 1)).unwrap();
    let err = audit(t.path(), &verifier).await.unwrap_err();
    assert!(matches!(err, AuditError::Checkpoint(custodia_ledger::CheckpointError::BadSignature { .. })), "{err}");

    let stranger = LogSigner::generate(ORIGIN).unwrap().verifier();
    let err = audit(dir.path(), &stranger).await.unwrap_err();
    assert!(
        matches!(err, AuditError::Checkpoint(custodia_ledger::CheckpointError::NoTrustedSignature { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn audit_refuses_a_log_that_shrank_or_rewrote_history() {
    let signer = LogSigner::generate(ORIGIN).unwrap();
    let skey = signer.expose_secret().to_owned();
    let verifier = signer.verifier();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_local(dir.path(), signer, LogOptions::default()).await.unwrap();
    append_all(&log, 0..300).await;
    let seen = log.checkpoint().checkpoint;
    append_all(&log, 300..400).await;
    drop(log);
    let storage = local_storage(dir.path());
    let report = audit_log(&storage, std::slice::from_ref(&verifier), Some(&seen), |_, _| Ok(())).await.unwrap();
    assert_eq!(report.extends, Some(300));

    // The same key signs a different history: entry 5 differs.
    let forked_dir = tempfile::tempdir().unwrap();
    let forked =
        Log::open_local(forked_dir.path(), LogSigner::from_skey(&skey).unwrap(), LogOptions::default()).await.unwrap();
    for i in 0..350 {
        forked.append(if i == 5 { b"rewritten".to_vec() } else { entry(i) }).await.unwrap();
    }
    let err = audit_log(&local_storage(forked_dir.path()), std::slice::from_ref(&verifier), Some(&seen), |_, _| Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Inconsistent { size: 300, .. }), "{err}");

    // A shorter log under the same key: entries were dropped.
    let short_dir = tempfile::tempdir().unwrap();
    let short =
        Log::open_local(short_dir.path(), LogSigner::from_skey(&skey).unwrap(), LogOptions::default()).await.unwrap();
    append_all(&short, 0..10).await;
    let err = audit_log(&local_storage(short_dir.path()), std::slice::from_ref(&verifier), Some(&seen), |_, _| Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Shrank { size: 10, previous: 300 }), "{err}");

    let err = audit_log(&storage, std::slice::from_ref(&verifier), None, |index, _| {
        if index == 42 { Err("not a custody record".into()) } else { Ok(()) }
    })
    .await
    .unwrap_err();
    assert!(matches!(err, AuditError::BadEntry { index: 42, .. }), "{err}");
}
