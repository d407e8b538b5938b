//! `kill -9` at random moments while a process appends in a loop. After every kill the log must reopen
//! consistent: a valid checkpoint, every acknowledged entry at its index with its exact bytes, proofs that
//! check, and a history that extends what was seen before the kill.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use custodia_core::CustodyRecord;
use custodia_ledger::merkle::{leaf_hash, verify_inclusion};
use custodia_ledger::tile::{TILE_WIDTH, Tile, TileKind};
use custodia_ledger::{Checkpoint, Log, LogOptions, LogSigner, LogStore, audit_log};

const ROUNDS: u64 = 8;

/// A small deterministic generator, so a failing run can be replayed from the printed seed.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let key_file = dir.path().join("key");
    let signer = LogSigner::generate("custodia.test/crash").unwrap();
    std::fs::write(&key_file, signer.expose_secret()).unwrap();
    let verifier = signer.verifier();
    let storage = LogStore::new(
        Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(
                std::fs::create_dir_all(&log_dir).map(|()| &log_dir).unwrap(),
            )
            .unwrap(),
        ),
        object_store::path::Path::default(),
    );

    let mut random = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("crash test random seed: {random}");
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let mut seen: Option<Checkpoint> = None;

    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_append_loop"))
            .arg(&log_dir)
            .arg(&key_file)
            .arg((round * 1_000_000_000).to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            // Only complete lines count: a line cut by the kill was never fully reported.
            BufReader::new(stdout).split(b'\n').map_while(Result::ok).collect::<Vec<_>>()
        });
        // Let it get going (the first acknowledgement), then kill it at a random moment.
        let started = Instant::now();
        let delay = Duration::from_millis(50 + next_random(&mut random) % 700);
        tokio::time::sleep(delay).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let before = acked.len();
        for line in lines {
            let line = String::from_utf8(line).unwrap();
            if let Some((index, seed)) = line.split_once(' ') {
                acked.push((index.parse().unwrap(), seed.parse().unwrap()));
            }
        }
        eprintln!("round {round}: killed after {:?}, {} new acknowledgements", started.elapsed(), acked.len() - before);

        let report = audit_log(&storage, std::slice::from_ref(&verifier), seen.as_ref(), |_, entry| {
            CustodyRecord::from_entry(entry).map(drop).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|err| panic!("round {round}: log does not verify after kill -9: {err}"));
        let checkpoint = report.checkpoint.checkpoint;
        let mut bundles = std::collections::BTreeMap::new();
        for &(index, seed) in &acked {
            assert!(index < checkpoint.size, "round {round}: acknowledged entry {index} is beyond the checkpoint");
            let bundle = index / TILE_WIDTH;
            if let std::collections::btree_map::Entry::Vacant(slot) = bundles.entry(bundle) {
                let width = (checkpoint.size - bundle * TILE_WIDTH).min(TILE_WIDTH) as u16;
                let tile = Tile { kind: TileKind::Entries, index: bundle, width };
                slot.insert(storage.entry_bundle(tile).await.unwrap());
            }
            let stored = &bundles[&bundle][(index % TILE_WIDTH) as usize];
            assert_eq!(*stored, custodia_tests::sample_record(seed, 600), "round {round}: entry {index} changed");
        }
        for _ in 0..20.min(checkpoint.size) {
            let index = next_random(&mut random) % checkpoint.size;
            let entry = storage.entry(index, checkpoint.size).await.unwrap();
            let proof = storage.inclusion_proof(index, checkpoint.size).await.unwrap();
            verify_inclusion(index, checkpoint.size, &leaf_hash(&entry), &proof, &checkpoint.root).unwrap();
        }
        seen = Some(checkpoint);
    }
    assert!(acked.len() > 100, "the appender barely ran ({} acknowledgements); the test proved nothing", acked.len());

    // The gateway's own open path (which rebuilds the tree edge and checks it against the checkpoint) accepts
    // the log and carries on from where it was.
    let seen = seen.unwrap();
    let log = Log::open_local(&log_dir, LogSigner::from_skey(signer.expose_secret()).unwrap(), LogOptions::default())
        .await
        .unwrap();
    assert_eq!(log.checkpoint().checkpoint, seen);
    assert_eq!(log.append(custodia_tests::sample_record(7, 600)).await.unwrap(), seen.size);
}
