//! One custody log appended to by several processes through the catalog's coordination rows
//! (`custodia_ledger::coordinated`), on PostgreSQL and on SQLite: each "process" here is a log handle of its own,
//! with its own database pool and integrator, over one store.

use std::sync::Arc;

use custodia_catalog::Catalog;
use custodia_ledger::{Log, LogOptions, LogSigner, LogStore, audit_log};
use custodia_tests::postgres::TempPostgres;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;

/// One signing key for every process of a test, as gateways sharing a log share its key.
fn signer() -> LogSigner {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| LogSigner::generate("custodia.test/log").unwrap().expose_secret().to_owned());
    LogSigner::from_skey(key).unwrap()
}

async fn open(url: &str, dir: &std::path::Path) -> (Catalog, Log) {
    let catalog = Catalog::connect(url).await.unwrap();
    let store = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap().with_fsync(true));
    let options = LogOptions { max_batch: 64, ..LogOptions::default() };
    let log = Log::open_coordinated(store, StorePath::default(), signer(), options, catalog.log_coordination(), None)
        .await
        .unwrap();
    (catalog, log)
}

fn entry(process: usize, n: usize) -> Vec<u8> {
    format!("{{\"process\":{process},\"n\":{n}}}").into_bytes()
}

/// Three processes append 150 entries each at once, custody records chaining per artefact among them: every entry
/// is acknowledged once, at an index that holds it, the indices are exactly 0..450, every chain links each record
/// to the one before it about the same artefact, and the log verifies as one tree.
async fn three_processes_make_one_log(url: &str, dir: &std::path::Path, processes: usize) {
    let mut handles = Vec::new();
    for _ in 0..processes {
        handles.push(open(url, dir).await);
    }
    let per_process = 150;
    let mut tasks = Vec::new();
    for (process, (catalog, log)) in handles.iter().enumerate() {
        let (catalog, log) = (catalog.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..per_process {
                if n % 3 == 0 {
                    // A plain entry, through the log.
                    let index = log.append(entry(process, n)).await.unwrap();
                    acknowledged.push((index, entry(process, n), None));
                } else {
                    // A record about one of three artefacts every process writes about, chained in the database.
                    let artefact = format!("artefact-{}", n % 3);
                    let sequenced = catalog
                        .sequence_custody("case", Some(&artefact), "{}", None, |prior| {
                            let text = format!("{{\"process\":{process},\"n\":{n},\"prior\":{prior:?}}}");
                            Ok::<_, std::convert::Infallible>((text.into_bytes(), format!("{process}-{n}")))
                        })
                        .await
                        .unwrap()
                        .unwrap();
                    log.integrated(sequenced.index).await.unwrap();
                    acknowledged.push((sequenced.index, sequenced.entry, Some(artefact)));
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    acknowledged.sort_by_key(|(index, ..)| *index);
    let total = (processes * per_process) as u64;
    let indices: Vec<u64> = acknowledged.iter().map(|(index, ..)| *index).collect();
    assert_eq!(indices, (0..total).collect::<Vec<_>>(), "every acknowledged index once, none skipped");

    let (_, log) = &handles[0];
    let size = log.wait_for_size(total).await.unwrap().checkpoint.size;
    assert_eq!(size, total);
    let store = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
    let storage = LogStore::new(store, StorePath::default());
    let verifier = signer().verifier();
    let report = audit_log(&storage, &[verifier], None, |_, _| Ok(())).await.unwrap();
    assert_eq!(report.entries, total, "one tree, as its checkpoint says");
    let mut last_about = std::collections::HashMap::new();
    for (index, bytes, artefact) in &acknowledged {
        assert_eq!(&storage.entry(*index, size).await.unwrap()[..], &bytes[..], "entry {index} as acknowledged");
        if let Some(artefact) = artefact {
            let prior = last_about.insert(artefact.clone(), *index);
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(text.ends_with(&format!("\"prior\":{prior:?}}}")), "entry {index} chains to {prior:?}: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_on_postgresql_append_to_one_log() {
    let server = TempPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    three_processes_make_one_log(&server.url, dir.path(), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_catalog_sequences_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("catalog.db").display());
    std::fs::create_dir(dir.path().join("log")).unwrap();
    three_processes_make_one_log(&url, &dir.path().join("log"), 1).await;
}

/// While one process appends steadily it integrates for all (the other leaves its appends to it while it hears it
/// publish); once it stops (its integrator gone, as a killed gateway's), the other's appends are integrated all the
/// same, by the other itself, and the log is one tree holding every acknowledged entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_process_integrating_for_all_stops_the_other_carries_on() {
    let server = TempPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (catalog_a, log_a) = open(&server.url, dir.path()).await;
    let (_catalog_b, log_b) = open(&server.url, dir.path()).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady: Vec<_> = (0..4)
        .map(|appender| {
            let (log, stop) = (log_a.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let entry = entry(appender, n);
                    acknowledged.push((log.append(entry.clone()).await.unwrap(), entry));
                    n += 1;
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let entry = entry(10, n);
        acknowledged.push((log_b.append(entry.clone()).await.unwrap(), entry));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in steady {
        acknowledged.extend(task.await.unwrap());
    }
    log_a.close().await;
    drop(catalog_a);
    // The process that integrated is gone; the other was following it until now. Its appends are integrated by its
    // own turns (each within about 50 ms of the last publication it heard), not only by the whole turn every
    // integrator takes every 5 s: twenty appends one after another take far less than the 100 s those would.
    let started = std::time::Instant::now();
    for n in 20..40 {
        let entry = entry(10, n);
        acknowledged.push((log_b.append(entry.clone()).await.unwrap(), entry));
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(40), "20 appends after the other process stopped took {took:?}");
    acknowledged.sort();
    let total = acknowledged.len() as u64;
    let indices: Vec<u64> = acknowledged.iter().map(|(index, _)| *index).collect();
    assert_eq!(indices, (0..total).collect::<Vec<_>>(), "every acknowledged index once, none skipped");
    let size = log_b.checkpoint().checkpoint.size;
    assert_eq!(size, total);
    let store = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let storage = LogStore::new(store, StorePath::default());
    let report = audit_log(&storage, &[signer().verifier()], None, |_, _| Ok(())).await.unwrap();
    assert_eq!(report.entries, total, "one tree, as its checkpoint says");
    for (index, bytes) in &acknowledged {
        assert_eq!(&storage.entry(*index, size).await.unwrap()[..], &bytes[..], "entry {index} as acknowledged");
    }
    log_b.close().await;
}

/// A checkpoint that reached the store before its row moved (the integrator died between the two) is adopted by
/// the next integrator, which checks it against what is sequenced; an older checkpoint written late over the
/// published one (by a gateway that had lost the lock) is put back; a store behind the row is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_ahead_of_the_row_is_adopted_a_late_checkpoint_put_back_and_an_old_store_refused() {
    let server = TempPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (catalog, log) = open(&server.url, dir.path()).await;
    for n in 0..5 {
        log.append(entry(0, n)).await.unwrap();
    }
    let published = std::fs::read(dir.path().join("checkpoint")).unwrap();
    for n in 5..9 {
        log.append(entry(0, n)).await.unwrap();
    }
    log.close().await;
    // The row says what was published at 5 entries, the store holds 9: as if the last batch's row never moved.
    let pool = sqlx::AnyPool::connect(&server.url).await.unwrap();
    sqlx::query("UPDATE log_integration SET size = 5, checkpoint = $1 WHERE id = 1")
        .bind(&published)
        .execute(&pool)
        .await
        .unwrap();
    drop(catalog);
    let copy_at_nine = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy_at_nine.path());
    let (_, log) = open(&server.url, dir.path()).await;
    assert_eq!(log.checkpoint().checkpoint.size, 9, "the store's extra entries are adopted");
    assert_eq!(log.append(entry(0, 9)).await.unwrap(), 9, "and sequencing carries on after them");
    log.close().await;

    // A checkpoint of 5 entries written over the published one of 10, the tiles all there: it is put back.
    std::fs::write(dir.path().join("checkpoint"), &published).unwrap();
    let (_, log) = open(&server.url, dir.path()).await;
    assert_eq!(log.checkpoint().checkpoint.size, 10, "the published checkpoint is back");
    let stored = std::fs::read(dir.path().join("checkpoint")).unwrap();
    assert_eq!(stored, log.checkpoint().note(), "and back in the store");
    log.close().await;

    // The store restored from a copy taken at 9 entries, while the database says 10 were published.
    let restored = copy_at_nine.path();
    let catalog = Catalog::connect(&server.url).await.unwrap();
    let store = Arc::new(LocalFileSystem::new_with_prefix(restored).unwrap());
    let refused = Log::open_coordinated(
        store,
        StorePath::default(),
        signer(),
        LogOptions::default(),
        catalog.log_coordination(),
        None,
    )
    .await
    .expect_err("a store behind the database is refused");
    assert!(refused.to_string().contains("restored from an older copy"), "{refused}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A process whose connection listening for publications is lost is told at once (the row says what it missed),
/// listens again on a new connection, and hears what is published from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listening_connection_is_told_and_made_again() {
    use sqlx::Connection as _;
    let server = TempPostgres::start();
    let listening_catalog = Catalog::connect(&server.url).await.unwrap();
    let publishing_catalog = Catalog::connect(&server.url).await.unwrap();
    let (listening, publishing) = (listening_catalog.log_coordination(), publishing_catalog.log_coordination());
    let mut heard = listening.publications();
    let publish = |note: &'static str| {
        let publishing = publishing.clone();
        async move {
            let lock = publishing.lock_integration().await.unwrap();
            lock.publish(0, bytes::Bytes::from_static(note.as_bytes())).await.unwrap();
        }
    };
    assert_eq!(next_heard(&mut heard).await, None, "listening: whatever was published before is looked at");
    publish("first").await;
    assert_eq!(next_heard(&mut heard).await.as_deref(), Some(&b"first"[..]));

    // The listening connection goes (the server ends its backend, as on a failover or a network cut).
    let mut admin = sqlx::postgres::PgConnection::connect(&server.url).await.unwrap();
    let listening_backends = "SELECT pid FROM pg_stat_activity \
                              WHERE query LIKE 'LISTEN%custodia_log_published%' AND state = 'idle'";
    let before: Vec<i32> = sqlx::query_scalar(listening_backends).fetch_all(&mut admin).await.unwrap();
    assert_eq!(before.len(), 1, "one listening connection");
    let ended: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(before[0]).fetch_one(&mut admin).await.unwrap();
    assert!(ended);
    assert_eq!(next_heard(&mut heard).await, None, "the loss is told: the row says what went unheard");

    // A new connection listens (its own `LISTEN`, done), and what is published from then on is heard again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let listening: Vec<i32> = sqlx::query_scalar(listening_backends).fetch_all(&mut admin).await.unwrap();
        if listening.len() == 1 && listening[0] != before[0] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no new listening connection");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    publish("second").await;
    let mut note = next_heard(&mut heard).await;
    if note.is_none() {
        // The new connection told that it listens after the look above saw it listening: the next change is the note.
        note = next_heard(&mut heard).await;
    }
    assert_eq!(note.as_deref(), Some(&b"second"[..]));
}

/// What a listener tells next (a note heard, or `None`: look at the row), within a bound no healthy run nears.
async fn next_heard(heard: &mut tokio::sync::watch::Receiver<Option<bytes::Bytes>>) -> Option<bytes::Bytes> {
    tokio::time::timeout(std::time::Duration::from_secs(20), heard.changed()).await.unwrap().unwrap();
    heard.borrow_and_update().clone()
}
