//! A [`BlobStore`] that reports on another: each operation runs in a `storage.<op>`
//! span (a child of the request's, so a slow pull shows whether the store was slow)
//! and is told to an [`Observer`] with its outcome and duration (Prometheus counts
//! them: `http::ops::Metrics`). The byte layer knows nothing of Prometheus: the
//! observer is a trait.
//!
//! A body stream (`get`, `read_part`) is timed up to the point it is opened, not
//! while the client reads it: the request span covers the transfer.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::Instrument;
use uuid::Uuid;

use bytes::Bytes;

use super::{BlobStore, ByteStream, DynBlobStore, PartInfo, StorageError, StoredBlob, UploadGuard};
use crate::digest::Digest;

/// Receives one report per storage operation.
pub trait Observer: Send + Sync + 'static {
    /// `op` finished (`ok`: without an error, a missing blob counting as one) after
    /// `elapsed`.
    fn storage_operation(&self, op: &'static str, ok: bool, elapsed: Duration);
}

/// `inner`, reporting to `observer`.
pub struct ObservedBlobStore {
    inner: DynBlobStore,
    observer: Arc<dyn Observer>,
}

impl ObservedBlobStore {
    /// Wraps `inner`.
    pub fn new(inner: DynBlobStore, observer: Arc<dyn Observer>) -> Self {
        ObservedBlobStore { inner, observer }
    }

    async fn run<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        let start = Instant::now();
        let result = f
            .instrument(tracing::info_span!("storage", otel.name = op, op))
            .await;
        let ok = match &result {
            Ok(_) | Err(StorageError::NotFound(_) | StorageError::RangeNotSatisfiable) => true,
            Err(_) => false,
        };
        self.observer.storage_operation(op, ok, start.elapsed());
        result
    }
}

#[async_trait]
impl BlobStore for ObservedBlobStore {
    fn min_part_size(&self) -> u64 {
        self.inner.min_part_size()
    }

    async fn put_part(
        &self,
        upload: Uuid,
        number: u32,
        offset: u64,
        body: ByteStream,
    ) -> Result<PartInfo, StorageError> {
        self.run(
            "storage.put_part",
            self.inner.put_part(upload, number, offset, body),
        )
        .await
    }

    async fn lock_upload(
        &self,
        upload: Uuid,
        create: bool,
    ) -> Result<Option<UploadGuard>, StorageError> {
        self.run(
            "storage.lock_upload",
            self.inner.lock_upload(upload, create),
        )
        .await
    }

    async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<u64, StorageError> {
        self.run("storage.put_blob", self.inner.put_blob(digest, body))
            .await
    }

    async fn commit(
        &self,
        upload: Uuid,
        parts: &[PartInfo],
        digest: &Digest,
    ) -> Result<(), StorageError> {
        self.run("storage.commit", self.inner.commit(upload, parts, digest))
            .await
    }

    async fn read_part(&self, upload: Uuid, part: &PartInfo) -> Result<ByteStream, StorageError> {
        self.run("storage.read_part", self.inner.read_part(upload, part))
            .await
    }

    async fn stale_uploads(
        &self,
        before: std::time::SystemTime,
        limit: usize,
    ) -> Result<Vec<Uuid>, StorageError> {
        self.run(
            "storage.stale_uploads",
            self.inner.stale_uploads(before, limit),
        )
        .await
    }

    async fn abort(&self, upload: Uuid) -> Result<(), StorageError> {
        self.run("storage.abort", self.inner.abort(upload)).await
    }

    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        self.run("storage.get", self.inner.get(digest, range)).await
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        self.run("storage.stat", self.inner.stat(digest)).await
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        self.run("storage.delete", self.inner.delete(digest)).await
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<StoredBlob>, StorageError> {
        self.run("storage.list_blobs", self.inner.list_blobs(after, limit))
            .await
    }

    async fn put_record(&self, name: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.run("storage.put_record", self.inner.put_record(name, bytes))
            .await
    }

    async fn get_record(&self, name: &str) -> Result<Option<Bytes>, StorageError> {
        self.run("storage.get_record", self.inner.get_record(name))
            .await
    }

    async fn delete_record(&self, name: &str) -> Result<(), StorageError> {
        self.run("storage.delete_record", self.inner.delete_record(name))
            .await
    }

    async fn list_records(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.run("storage.list_records", self.inner.list_records(prefix))
            .await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.run("storage.ping", self.inner.ping()).await
    }
}
