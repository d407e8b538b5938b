//! The artefact store on a real S3 server, garage (tests/src/garage.rs): what garage does with create-only writes,
//! and evidence kept write-once there all the same.

use bytes::Bytes;
use custodia_core::Sha256;
use custodia_store::{ArtefactStore, CreateOnly, IngestOptions, StoreError, probe_create_only, put_once};
use custodia_tests::garage::Garage;
use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions};

fn body(data: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    let parts: Vec<Result<Bytes, std::io::Error>> =
        data.chunks(1 << 20).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(parts)
}

async fn read_all(store: &ArtefactStore, sha256: &Sha256, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let chunks: Vec<Bytes> = store.read(sha256, range).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_replaces_what_a_create_only_write_names_so_the_store_keeps_evidence_write_once_itself() {
    let garage = Garage::start();
    let s3 = garage.object_store();

    // What garage does: a second create-only put of one name succeeds and replaces the first's bytes.
    let name = Path::from("observed/create-only");
    let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
    s3.put_opts(&name, Bytes::from_static(b"first").into(), create()).await.unwrap();
    let second = s3.put_opts(&name, Bytes::from_static(b"second").into(), create()).await;
    let now = s3.get(&name).await.unwrap().bytes().await.unwrap();
    assert!(second.is_ok() && now.as_ref() == b"second", "garage refused or kept: {second:?}, {now:?}");
    // So the probe must not trust it.
    assert_eq!(probe_create_only(s3.as_ref(), &Path::from("probes")).await.unwrap(), CreateOnly::Ignored);
    let left: Vec<_> = s3.list(Some(&Path::from("probes"))).try_collect().await.unwrap();
    assert!(left.is_empty(), "the probe left {left:?}");

    let store = ArtefactStore::new(s3.clone(), Path::from("artefacts"), CreateOnly::Ignored);
    // 20 MiB: three multipart parts of 8 MiB.
    let data = custodia_tests::pseudo_random_bytes(20 << 20, 7);
    let sha256 = Sha256::of(&data);
    let options = IngestOptions { expected_sha256: Some(sha256), max_size: None };
    let stored = store.ingest(body(&data), options).await.unwrap();
    assert_eq!((stored.sha256, stored.size, stored.newly_stored), (sha256, data.len() as u64, true));
    assert!(read_all(&store, &sha256, None).await == data, "the bytes read back differ");
    assert_eq!(read_all(&store, &sha256, Some(1_000..9_000_000)).await, data[1_000..9_000_000]);
    let object = Path::from(format!("artefacts/objects/sha256/{}/{}", &sha256.to_hex()[..2], sha256.to_hex()));
    let before = s3.head(&object).await.unwrap();

    // The same bytes again: stored once, the object untouched (not even rewritten with the same bytes).
    let again = store.ingest(body(&data), options).await.unwrap();
    assert!(!again.newly_stored);
    let after = s3.head(&object).await.unwrap();
    assert_eq!((before.e_tag, before.last_modified), (after.e_tag, after.last_modified));

    // A wrong digest keeps nothing: no object, no staging.
    let other = custodia_tests::pseudo_random_bytes(3 << 20, 8);
    let wrong = IngestOptions { expected_sha256: Some(sha256), max_size: None };
    assert!(matches!(store.ingest(body(&other), wrong).await, Err(StoreError::DigestMismatch { .. })));
    assert!(matches!(store.size(&Sha256::of(&other)).await, Err(StoreError::NotFound(_))));
    // Bytes not yet stored, stated with a digest they do not have: streamed to the digest's address as a multipart
    // upload that is never completed, so no object appears there.
    let stated = Sha256::of(b"what the client claimed to send");
    let claimed = IngestOptions { expected_sha256: Some(stated), max_size: None };
    assert!(matches!(store.ingest(body(&other), claimed).await, Err(StoreError::DigestMismatch { .. })));
    assert!(matches!(store.size(&stated).await, Err(StoreError::NotFound(_))));
    // Cut off midway, with a digest stated: nothing at its address either.
    let mut cut: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from(other[..1 << 20].to_vec()))];
    cut.push(Err(std::io::Error::other("the client went away")));
    let interrupted = store.ingest(futures::stream::iter(cut), claimed).await;
    assert!(matches!(interrupted, Err(StoreError::Interrupted { .. })), "{interrupted:?}");
    assert!(matches!(store.size(&stated).await, Err(StoreError::NotFound(_))));
    // Cut off midway: nothing either.
    let mut cut: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from(other[..1 << 20].to_vec()))];
    cut.push(Err(std::io::Error::other("the client went away")));
    let interrupted = store.ingest(futures::stream::iter(cut), IngestOptions::default()).await;
    assert!(matches!(interrupted, Err(StoreError::Interrupted { .. })), "{interrupted:?}");
    let staging: Vec<_> = s3.list(Some(&Path::from("artefacts/staging"))).try_collect().await.unwrap();
    assert!(staging.is_empty(), "staging left behind: {staging:?}");
    assert_eq!(
        store.sweep_staging(std::time::SystemTime::now() + std::time::Duration::from_secs(3600)).await.unwrap(),
        0
    );

    // A write-once name (a manifest's) is never replaced, though garage itself would.
    let manifest = Path::from("artefacts/manifests/a-1.json");
    put_once(s3.as_ref(), CreateOnly::Ignored, &manifest, Bytes::from_static(b"signed")).await.unwrap();
    let refused = put_once(s3.as_ref(), CreateOnly::Ignored, &manifest, Bytes::from_static(b"forged")).await;
    assert!(matches!(refused, Err(object_store::Error::AlreadyExists { .. })), "{refused:?}");
    assert_eq!(s3.get(&manifest).await.unwrap().bytes().await.unwrap().as_ref(), b"signed");
}
