//! The byte layer: where blob contents and in-progress uploads live.
//!
//! Owns the key layout and the [`BlobStore`] contract. It knows digests and upload ids,
//! never repositories, tags, HTTP or SQL: it must not import `metadata`, `registry`
//! or `oci`. Whether a blob is *visible* is decided by metadata, not here.
//!
//! Key layout, relative to the store's root:
//! ```text
//! blobs/<algorithm>/<2 hex>/<hex>    immutable content, written only after its digest was checked
//! uploads/<uuid>/<part>.<nonce>      one part of an upload in progress
//! records/<name>                     small records the domain names (`reindex`'s journal)
//! ```

mod fs;
mod object;
mod observed;
mod s3;
#[cfg(test)]
pub(crate) mod suite;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::digest::Digest;

pub use fs::FsBlobStore;
pub use object::ObjectBlobStore;
pub use observed::{ObservedBlobStore, Observer};

/// A stream of bytes in or out of the store.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Errors of the byte layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The blob or part does not exist.
    #[error("not found in storage: {0}")]
    NotFound(String),
    /// The requested range is empty or does not lie within the blob (it starts or
    /// ends past the blob's end).
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
    /// The request body failed while it was being read (client went away, bad framing).
    #[error("request body: {0}")]
    Body(std::io::Error),
    /// The backend could not be reached or failed.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// An upload's stored bytes no longer match what was written (a machine crash
    /// lost writes that had not been synced): the upload has to start again.
    #[error("upload lost: {0}")]
    Lost(String),
    /// The filesystem is out of space or over its quota (`ENOSPC`, `EDQUOT`). Nothing
    /// an object store answers maps to this.
    #[error("storage full: {0}")]
    Full(String),
    /// Another request is writing to this upload, and did not finish within the
    /// bounded wait of [`BlobStore::lock_upload`]: retry later.
    #[error("another request is writing to this upload")]
    Busy,
    /// Any other backend failure.
    #[error("storage: {0}")]
    Other(String),
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::NotFound => StorageError::NotFound(e.to_string()),
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => StorageError::Full(e.to_string()),
            _ => StorageError::Other(e.to_string()),
        }
    }
}

/// A typed storage key; the only place the layout above is spelled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKey {
    /// Verified content of a blob.
    Blob(Digest),
    /// Directory (prefix) holding the parts of one upload.
    Upload(Uuid),
    /// A small record, by a `/`-separated name the caller chooses.
    Record(String),
    /// One stored part of an upload.
    UploadPart {
        /// The upload.
        upload: Uuid,
        /// The part's id as returned by [`BlobStore::put_part`].
        id: String,
    },
}

impl StorageKey {
    /// The relative path of this key.
    pub fn path(&self) -> String {
        match self {
            StorageKey::Blob(d) => {
                let hex = d.hex();
                format!("blobs/{}/{}/{}", d.algorithm().as_str(), &hex[..2], hex)
            }
            StorageKey::Upload(u) => format!("uploads/{u}"),
            StorageKey::Record(name) => format!("records/{name}"),
            StorageKey::UploadPart { upload, id } => format!("uploads/{upload}/{id}"),
        }
    }
}

/// One stored part of an upload, as recorded in the upload's metadata row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// Backend-specific id of the part (a file name, or an S3 part's ETag).
    pub id: String,
    /// Bytes in the part.
    pub size: u64,
}

/// A blob's bytes as [`BlobStore::list_blobs`] finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// The blob's digest (from its key).
    pub digest: Digest,
    /// Bytes stored.
    pub size: u64,
    /// When the bytes were last written.
    pub modified: std::time::SystemTime,
}

/// A bound, in bytes, on what a request stream has handed to a worker thread (the
/// hasher, a file writer) and the thread has not yet consumed: each chunk travels
/// with a permit for its length, released when the thread drops it.
#[derive(Clone)]
pub(crate) struct ByteBudget {
    permits: Arc<tokio::sync::Semaphore>,
    bytes: usize,
}

impl ByteBudget {
    pub(crate) fn new(bytes: usize) -> Self {
        ByteBudget {
            permits: Arc::new(tokio::sync::Semaphore::new(bytes)),
            bytes,
        }
    }

    /// Waits until `len` more bytes fit; a chunk larger than the whole budget waits
    /// for all of it.
    pub(crate) async fn take(&self, len: usize) -> tokio::sync::OwnedSemaphorePermit {
        let n = u32::try_from(len.min(self.bytes)).unwrap_or(u32::MAX);
        self.permits
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the semaphore is never closed")
    }
}

/// Held while an upload is written to; see [`BlobStore::lock_upload`].
#[must_use = "the upload is unlocked when the guard is dropped"]
pub struct UploadGuard {
    _held: Option<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for UploadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadGuard")
            .field("holds_lock", &self._held.is_some())
            .finish()
    }
}

impl UploadGuard {
    /// A guard that holds nothing (no lock was needed).
    pub fn none() -> Self {
        UploadGuard { _held: None }
    }

    /// A guard that keeps `held` (whose drop releases the lock) until it is dropped.
    pub fn holding(held: impl Send + Sync + 'static) -> Self {
        UploadGuard {
            _held: Some(Box::new(held)),
        }
    }
}

/// The contract every blob backend honours.
///
/// Parts are written whole or not at all from the caller's point of view: when
/// [`put_part`](BlobStore::put_part) returns `Ok`, the part is stored (durable, or, on
/// the filesystem, surviving anything but a machine crash, which the commit then
/// detects: [`StorageError::Lost`]); when it returns
/// an error, the caller forgets the part (the backend may leave garbage under the
/// upload's prefix, which [`abort`](BlobStore::abort) removes).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Smallest size every part but the last must have, or 0 when there is no minimum.
    fn min_part_size(&self) -> u64 {
        0
    }

    /// Stores the next part (`number`, counting from 0) of `upload` from `body`; the
    /// parts before it hold `offset` bytes in all. Returns once the bytes are stored (see
    /// the trait's docs).
    /// A `body` that fails is [`StorageError::Body`], and nothing of it is ever
    /// readable as a blob. Parts of one upload are written one at a time, under
    /// [`lock_upload`](BlobStore::lock_upload) when the upload is shared.
    async fn put_part(
        &self,
        upload: Uuid,
        number: u32,
        offset: u64,
        body: ByteStream,
    ) -> Result<PartInfo, StorageError>;

    /// Holds off every other holder of `upload`'s lock, in any process using the same
    /// store, until the guard is dropped. A shared upload's session is read, a part
    /// written and the session saved under it. Waiting for the lock is bounded and
    /// holds no thread: a lock still held after a few seconds (a request whose body
    /// stalled) is [`StorageError::Busy`]. Taking the lock may need storage for
    /// the upload: with `create` false, an upload that has none yet is `None` (so that
    /// callers can check the session exists before creating any); with `create` true
    /// it is created. The default takes no lock and always answers: backends whose
    /// parts are independent objects need none (a racing part then loses the
    /// session's compare-and-set and is simply never committed).
    async fn lock_upload(
        &self,
        _upload: Uuid,
        _create: bool,
    ) -> Result<Option<UploadGuard>, StorageError> {
        Ok(Some(UploadGuard::none()))
    }

    /// Stores a whole blob from `body` under `digest` in one go. The caller's stream
    /// verifies the content as it flows: when the bytes do not hash to `digest` it
    /// ends with an error instead of a clean end, and the backend must then leave
    /// nothing readable under the blob's key. Returns the bytes stored.
    ///
    /// The default writes one part of a fresh upload and commits it.
    async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<u64, StorageError> {
        let upload = Uuid::new_v4();
        let result = async {
            let part = self.put_part(upload, 0, 0, body).await?;
            let size = part.size;
            self.commit(upload, &[part], digest).await?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = self.abort(upload).await;
        }
        result
    }

    /// Joins `parts`, in order, into the blob `digest` and removes the upload's parts
    /// (no parts at all make the empty blob). The caller has already verified that the
    /// parts hash to `digest`. If the blob already exists the parts are simply removed;
    /// concurrent commits of one digest from different uploads all succeed. After `Ok`,
    /// the blob is durable. Parts a machine crash may have lost are checked against
    /// `digest` first, and are [`StorageError::Lost`] if they no longer match it.
    async fn commit(
        &self,
        upload: Uuid,
        parts: &[PartInfo],
        digest: &Digest,
    ) -> Result<(), StorageError>;

    /// Reads back one stored part (used to re-hash an upload under another algorithm).
    async fn read_part(&self, upload: Uuid, part: &PartInfo) -> Result<ByteStream, StorageError>;

    /// Ids of uploads that have stored something but not been written to since
    /// `before`, at most `limit`. Used to sweep what abandoned uploads left behind.
    async fn stale_uploads(
        &self,
        before: std::time::SystemTime,
        limit: usize,
    ) -> Result<Vec<Uuid>, StorageError>;

    /// Removes everything stored for `upload`. Removing nothing is not an error.
    async fn abort(&self, upload: Uuid) -> Result<(), StorageError>;

    /// Opens a blob, whole or the byte `range` of it (end exclusive). A `range` that is
    /// empty or runs past the blob's end is [`StorageError::RangeNotSatisfiable`], never
    /// cut short; a missing blob is [`StorageError::NotFound`]. Both are reported here,
    /// not by the stream.
    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError>;

    /// Size of the blob's stored bytes, or `None` when they are absent.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError>;

    /// Removes a blob's bytes. Removing a missing blob is not an error.
    async fn delete(&self, digest: &Digest) -> Result<(), StorageError>;

    /// Blobs whose bytes are stored, in key order (algorithm name, then hex), after
    /// `after`, at most `limit`: how garbage collection finds bytes that no metadata
    /// row refers to (a crash between a row's deletion and its bytes'). Upload parts
    /// and anything that is not a blob's key are not listed.
    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<StoredBlob>, StorageError>;

    /// Writes the small record `name` (`/`-separated segments of letters, digits and
    /// `._-`), replacing any. Records are what `reindex` rebuilds metadata from; they
    /// are written without waiting for the disk (a machine crash may lose the last
    /// ones, as it may the database's last transactions).
    async fn put_record(&self, name: &str, bytes: Bytes) -> Result<(), StorageError>;

    /// The record `name`, or `None`.
    async fn get_record(&self, name: &str) -> Result<Option<Bytes>, StorageError>;

    /// Removes the record `name`; removing a missing one is not an error.
    async fn delete_record(&self, name: &str) -> Result<(), StorageError>;

    /// The names of every record whose name starts with `prefix` (a whole segment
    /// path ending in `/`, or empty), in byte order.
    async fn list_records(&self, prefix: &str) -> Result<Vec<String>, StorageError>;

    /// Checks that the backend is reachable and writable.
    async fn ping(&self) -> Result<(), StorageError>;
}

/// A shared handle to the configured backend.
pub type DynBlobStore = Arc<dyn BlobStore>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A full filesystem (out of space, or over a quota) is `Full`; other failures
    /// keep their kinds.
    #[cfg(unix)]
    #[test]
    fn io_errors_map_to_storage_errors() {
        let from = |errno| StorageError::from(std::io::Error::from_raw_os_error(errno));
        assert!(matches!(from(libc::ENOSPC), StorageError::Full(_)));
        assert!(matches!(from(libc::EDQUOT), StorageError::Full(_)));
        assert!(matches!(from(libc::ENOENT), StorageError::NotFound(_)));
        assert!(matches!(from(libc::EIO), StorageError::Other(_)));
    }
}
