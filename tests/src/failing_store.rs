//! An object store whose writes and reads can be made to fail, as a full disk, a lost bucket or a store that
//! stopped answering would: an in-memory store underneath, the failures switched on and off by the test.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};

/// An in-memory store whose single-part writes fail while `fail_puts` is set (with the error `failure` names),
/// whose reads fail while `fail_gets` is set (and the next `fail_next_gets` reads), and whose next read answers
/// only after `next_get_delay_ms`.
#[derive(Debug, Default)]
pub struct FailingStore {
    inner: InMemory,
    /// Whether writes fail now.
    pub fail_puts: AtomicBool,
    /// Whether reads fail now.
    pub fail_gets: AtomicBool,
    /// How many of the next reads fail (one less after each).
    pub fail_next_gets: AtomicU64,
    /// How long the next read waits before it answers, in milliseconds (a store slow for a moment); 0 after it.
    pub next_get_delay_ms: AtomicU64,
}

impl FailingStore {
    fn refused(&self, failing: &AtomicBool, why: &'static str) -> object_store::Result<()> {
        match failing.load(Ordering::SeqCst) {
            true => Err(object_store::Error::Generic { store: "failing", source: why.into() }),
            false => Ok(()),
        }
    }
}

impl std::fmt::Display for FailingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailingStore")
    }
}

#[async_trait::async_trait]
impl ObjectStore for FailingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.refused(&self.fail_puts, "disk full: the store does not take writes")?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.refused(&self.fail_gets, "too many open files")?;
        if self.fail_next_gets.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)).is_ok() {
            return Err(object_store::Error::Generic { store: "failing", source: "connection reset".into() });
        }
        let delay = self.next_get_delay_ms.swap(0, Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
