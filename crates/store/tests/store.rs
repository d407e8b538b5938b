//! Ingest against a real local directory: one-pass hashing, write-once content addressing, and bad uploads
//! that leave nothing behind.

use std::sync::Arc;

use bytes::Bytes;
use custodia_core::Sha256;
use custodia_store::{ArtefactStore, CreateOnly, IngestOptions, StoreError};
use futures::TryStreamExt as _;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

/// Every way in: a generic object store (multipart upload) that enforces create-only writes, the same taken as one
/// that does not (publication checks the name first, as on garage), and a local directory (its own writer).
fn stores(dir: &std::path::Path) -> [(&'static str, ArtefactStore, std::path::PathBuf); 3] {
    let generic = dir.join("generic");
    let unenforced = dir.join("unenforced");
    let local = dir.join("local");
    let object_store = |root: &std::path::Path, create_only| {
        std::fs::create_dir_all(root).unwrap();
        let store = Arc::new(LocalFileSystem::new_with_prefix(root).unwrap().with_fsync(true));
        ArtefactStore::new(store, Path::default(), create_only)
    };
    [
        ("object store", object_store(&generic, CreateOnly::Enforced), generic),
        ("object store, names checked", object_store(&unenforced, CreateOnly::Ignored), unenforced),
        ("local directory", ArtefactStore::local(&local).unwrap(), local),
    ]
}

fn chunks(data: &[u8], size: usize) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    let parts: Vec<Result<Bytes, std::io::Error>> = data.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(parts)
}

/// Every file below `dir`, relative, sorted.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn ingest_hashes_in_one_pass_and_dedupes() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, store, root) in stores(dir.path()) {
        eprintln!("through a {kind}");
        // One PUT for what fits in a part; larger than the interval at which a local writer syncs, and not a
        // multiple of any part size.
        for len in [1024 + 17, 40 * 1024 * 1024 + 17] {
            ingest_and_dedupe(&store, &root, &data(len)).await;
        }
    }
}

async fn ingest_and_dedupe(store: &ArtefactStore, root: &std::path::Path, bytes: &[u8]) {
    let digest = Sha256::of(bytes);

    let stored_before = files(root).len();
    let stored = store
        .ingest(chunks(bytes, 64 * 1024), IngestOptions { expected_sha256: Some(digest), max_size: None })
        .await
        .unwrap();
    assert_eq!((stored.sha256, stored.size, stored.newly_stored), (digest, bytes.len() as u64, true));
    let hex = digest.to_hex();
    assert!(files(root).contains(&format!("objects/sha256/{}/{hex}", &hex[..2])));
    assert_eq!(files(root).len(), stored_before + 1, "one object, nothing staged");

    let again = store.ingest(chunks(bytes, 1000), IngestOptions::default()).await.unwrap();
    assert_eq!((again.sha256, again.newly_stored), (digest, false), "same bytes, one object");
    assert_eq!(files(root).len(), stored_before + 1);

    let read: Vec<Bytes> = store.read(&digest, None).await.unwrap().try_collect().await.unwrap();
    assert_eq!(read.concat(), bytes);
    let range: Vec<Bytes> = store.read(&digest, Some(100..200)).await.unwrap().try_collect().await.unwrap();
    assert_eq!(range.concat(), &bytes[100..200]);
    assert_eq!(store.size(&digest).await.unwrap(), bytes.len() as u64);
}

#[tokio::test]
async fn bad_uploads_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, store, root) in stores(dir.path()) {
        eprintln!("through a {kind}");
        // Within one part (a single PUT, never made) and past it (a multipart upload, aborted).
        for len in [3 * 1024 * 1024, 9 * 1024 * 1024 + 5] {
            bad_uploads(&store, &root, &data(len)).await;
        }
    }
}

async fn bad_uploads(store: &ArtefactStore, root: &std::path::Path, bytes: &[u8]) {
    let wrong = Sha256::of(b"something else");
    let err = store
        .ingest(chunks(bytes, 65536), IngestOptions { expected_sha256: Some(wrong), max_size: None })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { expected, .. } if expected == wrong), "{err}");

    let received = bytes.len() - 1000;
    let cut = futures::stream::iter(vec![
        Ok(Bytes::copy_from_slice(&bytes[..received])),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset")),
    ]);
    let err = store.ingest(cut, IngestOptions::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Interrupted { received: r, .. } if r == received as u64), "{err}");

    let err = store
        .ingest(chunks(bytes, 65536), IngestOptions { expected_sha256: None, max_size: Some(1024 * 1024) })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");

    assert_eq!(files(root), Vec::<String>::new(), "no object and no staging left behind");
    assert!(matches!(store.read(&Sha256::of(bytes), None).await, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn an_abandoned_local_upload_leaves_nothing() {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    let store = ArtefactStore::local(dir.path()).unwrap();
    // A client that sends 3 MiB and then goes quiet, until the server gives up on it (drops the upload).
    let stalled = chunks(&data(3 * 1024 * 1024), 65536).chain(futures::stream::pending());
    let upload = store.ingest(stalled, IngestOptions::default());
    assert!(tokio::time::timeout(std::time::Duration::from_millis(300), upload).await.is_err());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !files(dir.path()).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(files(dir.path()), Vec::<String>::new(), "the writer removed its staging file");
}

/// Reads give the same bytes both ways (the generic store's, and the local one's large reads in place), whole and
/// in ranges that start, end and cross [`custodia_store::LOCAL_READ_CHUNK`] boundaries; a range beyond the end
/// is refused, and an artefact not stored is not found.
#[tokio::test]
async fn reads_give_back_exactly_the_bytes_and_ranges_stored() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = custodia_store::LOCAL_READ_CHUNK;
    let body = data(3 * chunk + 1234);
    let size = body.len() as u64;
    for (name, store, _) in stores(dir.path()) {
        let stored = store.ingest(chunks(&body, 65_536), IngestOptions::default()).await.unwrap();
        let whole: Vec<u8> =
            store.read(&stored.sha256, None).await.unwrap().map_ok(|bytes| bytes.to_vec()).try_concat().await.unwrap();
        assert!(whole == body, "{name}: the whole artefact");
        let chunk = chunk as u64;
        for range in [0..1, 0..chunk, chunk - 1..chunk + 1, 5..size, chunk..3 * chunk, size - 1..size] {
            let read: Vec<u8> = store
                .read(&stored.sha256, Some(range.clone()))
                .await
                .unwrap()
                .map_ok(|bytes| bytes.to_vec())
                .try_concat()
                .await
                .unwrap();
            assert!(read == body[range.start as usize..range.end as usize], "{name}: range {range:?}");
        }
        let past = store.read(&stored.sha256, Some(size..size + 1)).await;
        assert!(past.is_err(), "{name}: a range past the end is refused");
        let missing = store.read(&Sha256::of(b"never stored"), None).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))), "{name}: not stored");
    }
}

/// A resumable upload's chunks, every way in: written whole or not at all, read back exactly, listed with when
/// they were written, deleted (twice is no error); and left alone by the sweep of staging, which removes only
/// direct uploads' leftovers older than its bound.
#[tokio::test]
async fn chunks_are_written_whole_or_not_at_all_and_left_to_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, store, root) in stores(dir.path()) {
        eprintln!("through a {kind}");
        let before = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        // Past one part of a remote store's multipart upload, and less than one.
        let (large, small) = (data(9 * 1024 * 1024 + 5), data(70_000));
        assert_eq!(store.write_chunk("upl-1.0.a", chunks(&large, 65_536)).await.unwrap(), large.len() as u64);
        assert_eq!(store.write_chunk("upl-1.9437189.b", chunks(&small, 65_536)).await.unwrap(), 70_000);
        let read = |name: &'static str| {
            let store = store.clone();
            async move {
                let stream = store.read_chunk(name).await?;
                stream.map_ok(|bytes| bytes.to_vec()).try_concat().await
            }
        };
        assert!(read("upl-1.0.a").await.unwrap() == large, "{kind}: the large chunk");
        assert!(read("upl-1.9437189.b").await.unwrap() == small, "{kind}: the small chunk");
        assert!(matches!(read("upl-1.0.c").await, Err(StoreError::ChunkLost(name)) if name == "upl-1.0.c"));

        // A body that ends in an error leaves no chunk.
        let cut = futures::stream::iter(vec![
            Ok(Bytes::from(small.clone())),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset")),
        ]);
        let err = store.write_chunk("upl-1.0.d", cut).await.unwrap_err();
        assert!(matches!(err, StoreError::Interrupted { received: 70_000, .. }), "{kind}: {err}");
        let mut listed: Vec<_> = store.staged_chunks().try_collect().await.unwrap();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<&str> = listed.iter().map(|chunk| chunk.name.as_str()).collect();
        assert_eq!(names, ["upl-1.0.a", "upl-1.9437189.b"], "{kind}");
        assert!(listed.iter().all(|chunk| chunk.written > before), "{kind}: {listed:?}");

        // The sweep of staging leaves chunks to their owner, however old, and fresh leftovers to their writers.
        let in_a_day = std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600);
        assert_eq!(store.sweep_staging(in_a_day).await.unwrap(), 0, "{kind}");
        assert_eq!(store.staged_chunks().try_collect::<Vec<_>>().await.unwrap().len(), 2, "{kind}");
        let leftover = root.join("staging/left-by-a-crash");
        std::fs::write(&leftover, b"half an upload").unwrap();
        assert_eq!(store.sweep_staging(before).await.unwrap(), 0, "{kind}: a fresh leftover may be under way");
        assert_eq!(store.sweep_staging(in_a_day).await.unwrap(), 1, "{kind}");
        assert!(!leftover.exists());

        store.delete_chunk("upl-1.0.a").await.unwrap();
        store.delete_chunk("upl-1.0.a").await.unwrap();
        store.delete_chunk("upl-1.9437189.b").await.unwrap();
        assert!(store.staged_chunks().try_collect::<Vec<_>>().await.unwrap().is_empty(), "{kind}");
        assert!(files(&root).is_empty(), "{kind}: {:?}", files(&root));
    }
}

/// However a client splits its body, what goes on is in chunks of at least `MIN_CHUNK` (but the last), the same bytes
/// in the same order; empty chunks vanish, large ones pass as they are, and an error comes after the bytes before it.
#[tokio::test]
async fn a_body_in_tiny_chunks_is_regrouped() {
    use custodia_store::{MIN_CHUNK, regrouped};
    let bytes = data(3 * MIN_CHUNK + 11);
    let tiny = futures::stream::iter(
        bytes.chunks(1).flat_map(|c| [Ok::<_, std::io::Error>(Bytes::new()), Ok(Bytes::copy_from_slice(c))]),
    );
    let chunks: Vec<Bytes> = regrouped(tiny).try_collect().await.unwrap();
    assert_eq!(chunks.iter().map(Bytes::len).collect::<Vec<_>>(), [MIN_CHUNK, MIN_CHUNK, MIN_CHUNK, 11]);
    assert_eq!(chunks.concat(), bytes);

    let large = Bytes::from(data(2 * MIN_CHUNK));
    let passed: Vec<Bytes> =
        regrouped(futures::stream::iter([Ok::<_, std::io::Error>(large.clone())])).try_collect().await.unwrap();
    assert_eq!(passed, std::slice::from_ref(&large));
    assert_eq!(passed[0].as_ptr(), large.as_ptr(), "a large chunk is not copied");

    let cut = futures::stream::iter([
        Ok(Bytes::from_static(b"before")),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset")),
        Ok(Bytes::from_static(b"never")),
    ]);
    let items: Vec<Result<Bytes, custodia_store::BodyError>> = futures::StreamExt::collect(regrouped(cut)).await;
    let items: Vec<Result<Bytes, String>> = items.into_iter().map(|item| item.map_err(|err| err.to_string())).collect();
    assert_eq!(items, [Ok(Bytes::from_static(b"before")), Err("connection reset".to_owned())]);

    // A body cut off in tiny chunks is counted to its last byte.
    let store =
        ArtefactStore::new(Arc::new(object_store::memory::InMemory::new()), Path::default(), CreateOnly::Ignored);
    let cut = futures::stream::iter(
        bytes[..1000]
            .chunks(1)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .chain([Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"))]),
    );
    let err = store.ingest(cut, IngestOptions::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Interrupted { received: 1000, .. }), "{err}");
    // The body's own error is kept as the cause, not only its words.
    let cause = std::error::Error::source(&err).and_then(|cause| cause.downcast_ref::<std::io::Error>());
    assert_eq!(cause.map(std::io::Error::kind), Some(std::io::ErrorKind::ConnectionReset), "{err:?}");
}
