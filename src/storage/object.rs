//! Backend over any `object_store` implementation (in-memory today; the same code
//! serves S3-compatible stores). Parts are separate objects; commit streams them into
//! the blob's key through a multipart write, so memory stays bounded by one part buffer.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt, PutMode, PutPayload,
    WriteMultipart,
};
use uuid::Uuid;

use super::{BlobStore, ByteStream, PartInfo, StorageError, StorageKey, StoredBlob};
use crate::digest::Digest;

/// Blobs kept in an [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
}

impl ObjectBlobStore {
    /// Wraps an object store.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ObjectBlobStore { store }
    }

    /// A store that keeps everything in process memory (tests, throwaway instances).
    pub fn in_memory() -> Self {
        Self::new(Arc::new(object_store::memory::InMemory::new()))
    }
}

impl ObjectBlobStore {
    /// Opens `range` of the object at `path`, which must lie within it.
    async fn get_range(
        &self,
        path: &ObjectPath,
        range: Range<u64>,
    ) -> Result<GetResult, StorageError> {
        if range.start >= range.end {
            return Err(StorageError::RangeNotSatisfiable);
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..Default::default()
        };
        match self.store.get_opts(path, opts).await {
            // Stores cut a range running past the end at the end; the contract refuses it.
            Ok(result) if result.range != range => Err(StorageError::RangeNotSatisfiable),
            Ok(result) => Ok(result),
            Err(e @ object_store::Error::NotFound { .. }) => Err(map_err(e)),
            // A range starting past the end is only a generic error (S3 answers 416):
            // look at the object's size to tell it from a real failure.
            Err(e) => match self.store.head(path).await {
                Ok(meta) if range.start >= meta.size => Err(StorageError::RangeNotSatisfiable),
                Err(missing @ object_store::Error::NotFound { .. }) => Err(map_err(missing)),
                _ => Err(map_err(e)),
            },
        }
    }
}

fn key(k: &StorageKey) -> ObjectPath {
    ObjectPath::from(k.path())
}

fn map_err(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
        other if unreachable(&other) => StorageError::Unavailable(other.to_string()),
        other => StorageError::Other(other.to_string()),
    }
}

/// Whether the error says the store could not be reached (connection refused,
/// timed out, dropped), rather than that it refused the request.
fn unreachable(e: &(dyn std::error::Error + 'static)) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(http) = err.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
        }
        source = err.source();
    }
    false
}

/// Size of the parts of a multipart write, and of the buffer below which an object
/// goes up in one `PUT` instead (S3 wants parts of at least 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Largest object S3 copies server-side in one CopyObject.
const MAX_COPY_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// Parts in flight at once per write: memory stays under `PART_SIZE` times this.
const PARTS_IN_FLIGHT: usize = 2;

impl ObjectBlobStore {
    /// Streams `body` into the object `path`: one `PUT` when it is small, a multipart
    /// upload otherwise, in bounded memory. The object appears only if the stream
    /// ends cleanly; on any error the multipart upload is aborted. With
    /// `create_only`, a small object that already exists is left as it is (the
    /// `PUT` is conditional), which is right for content-addressed keys.
    async fn write_object(
        &self,
        path: &ObjectPath,
        mut body: ByteStream,
        create_only: bool,
    ) -> Result<u64, StorageError> {
        let mut size = 0u64;
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_len = 0usize;
        while head_len < PART_SIZE {
            match body.next().await {
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    head_len += chunk.len();
                    head.push(chunk);
                }
                Some(Err(e)) => return Err(StorageError::Body(e)),
                None => {
                    let mode = if create_only {
                        PutMode::Create
                    } else {
                        PutMode::Overwrite
                    };
                    let payload: PutPayload = head.into_iter().collect();
                    return match self.store.put_opts(path, payload, mode.into()).await {
                        Ok(_) => Ok(size),
                        Err(object_store::Error::AlreadyExists { .. }) if create_only => Ok(size),
                        Err(e) => Err(map_err(e)),
                    };
                }
            }
        }
        let upload = self.store.put_multipart(path).await.map_err(map_err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        for chunk in head {
            writer.put(chunk);
        }
        while let Some(chunk) = body.next().await {
            let failed = match chunk {
                Ok(chunk) => match writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    Ok(()) => {
                        size += chunk.len() as u64;
                        writer.put(chunk);
                        continue;
                    }
                    Err(e) => map_err(e),
                },
                Err(e) => StorageError::Body(e),
            };
            // Abort, or an S3 multipart upload would linger (and be billed).
            let _ = writer.abort().await;
            return Err(failed);
        }
        // A completion that fails cannot be aborted any more; the bucket's lifecycle
        // rule for incomplete multipart uploads collects it.
        writer.finish().await.map_err(map_err)?;
        Ok(size)
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<u64, StorageError> {
        // Straight to the blob's key: completing the upload is what makes it visible,
        // and the caller's stream fails before its end when the digest is wrong. No
        // copy afterwards, so no 5 GiB CopyObject limit either.
        let path = key(&StorageKey::Blob(digest.clone()));
        if self.stat(digest).await?.is_some() {
            // Already stored: take (and so verify) the bytes, write nothing.
            let mut body = body;
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                size += chunk.map_err(StorageError::Body)?.len() as u64;
            }
            return Ok(size);
        }
        self.write_object(&path, body, true).await
    }

    async fn put_part(
        &self,
        upload: Uuid,
        number: u32,
        _offset: u64,
        body: ByteStream,
    ) -> Result<PartInfo, StorageError> {
        let id = format!("{number:06}.{}", Uuid::new_v4().simple());
        let path = key(&StorageKey::UploadPart {
            upload,
            id: id.clone(),
        });
        let size = self.write_object(&path, body, false).await?;
        Ok(PartInfo { id, size })
    }

    async fn commit(
        &self,
        upload: Uuid,
        parts: &[PartInfo],
        digest: &Digest,
    ) -> Result<(), StorageError> {
        let target = key(&StorageKey::Blob(digest.clone()));
        let exists = match self.store.head(&target).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(map_err(e)),
        };
        if !exists {
            let part_key = |p: &PartInfo| {
                key(&StorageKey::UploadPart {
                    upload,
                    id: p.id.clone(),
                })
            };
            match parts {
                [] => {
                    self.store
                        .put(&target, PutPayload::default())
                        .await
                        .map_err(map_err)?;
                }
                // Server-side copy, which S3 allows up to 5 GiB; larger parts are
                // streamed like several would be.
                [only] if only.size <= MAX_COPY_BYTES => {
                    self.store
                        .copy(&part_key(only), &target)
                        .await
                        .map_err(map_err)?;
                }
                many => {
                    let handle = self.store.put_multipart(&target).await.map_err(map_err)?;
                    let mut writer = WriteMultipart::new(handle);
                    let copied: Result<(), object_store::Error> = async {
                        for p in many {
                            let mut stream = self.store.get(&part_key(p)).await?.into_stream();
                            while let Some(chunk) = stream.try_next().await? {
                                writer.wait_for_capacity(4).await?;
                                writer.put(chunk);
                            }
                        }
                        Ok(())
                    }
                    .await;
                    if let Err(e) = copied {
                        // Abort, or an S3 multipart upload would linger (and be billed).
                        let _ = writer.abort().await;
                        return Err(map_err(e));
                    }
                    writer.finish().await.map_err(map_err)?;
                }
            }
        }
        self.abort(upload).await
    }

    async fn read_part(&self, upload: Uuid, part: &PartInfo) -> Result<ByteStream, StorageError> {
        let path = key(&StorageKey::UploadPart {
            upload,
            id: part.id.clone(),
        });
        let result = self.store.get(&path).await.map_err(map_err)?;
        Ok(result
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed())
    }

    async fn stale_uploads(
        &self,
        before: std::time::SystemTime,
        limit: usize,
    ) -> Result<Vec<Uuid>, StorageError> {
        let before = before
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let mut newest: std::collections::BTreeMap<Uuid, i64> = Default::default();
        let prefix = ObjectPath::from("uploads");
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.try_next().await.map_err(map_err)? {
            let Some(id) = meta
                .location
                .parts()
                .nth(1)
                .and_then(|p| Uuid::parse_str(p.as_ref()).ok())
            else {
                continue; // the readiness probe, or anything that is not an upload
            };
            let modified = meta.last_modified.timestamp_millis();
            let entry = newest.entry(id).or_insert(modified);
            *entry = (*entry).max(modified);
        }
        Ok(newest
            .into_iter()
            .filter(|(_, t)| *t < before)
            .map(|(id, _)| id)
            .take(limit)
            .collect())
    }

    async fn abort(&self, upload: Uuid) -> Result<(), StorageError> {
        let prefix = key(&StorageKey::Upload(upload));
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.try_next().await.map_err(map_err)? {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(())
    }

    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        let path = key(&StorageKey::Blob(digest.clone()));
        let result = match range {
            None => self.store.get(&path).await.map_err(map_err)?,
            Some(range) => self.get_range(&path, range).await?,
        };
        Ok(result
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed())
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        match self
            .store
            .head(&key(&StorageKey::Blob(digest.clone())))
            .await
        {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        match self
            .store
            .delete(&key(&StorageKey::Blob(digest.clone())))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<StoredBlob>, StorageError> {
        // S3 lists keys in byte order, as the in-memory store does: the page ends at
        // the last key listed, and the next starts after it.
        let prefix = ObjectPath::from("blobs");
        let mut listing = match after {
            Some(d) => self
                .store
                .list_with_offset(Some(&prefix), &key(&StorageKey::Blob(d.clone()))),
            None => self.store.list(Some(&prefix)),
        };
        let mut found = Vec::new();
        while let Some(meta) = listing.try_next().await.map_err(map_err)? {
            let parts: Vec<String> = meta
                .location
                .parts()
                .map(|p| p.as_ref().to_owned())
                .collect();
            let [_, algorithm, _, hex] = parts.as_slice() else {
                continue;
            };
            let Ok(digest) = Digest::parse(&format!("{algorithm}:{hex}")) else {
                continue;
            };
            found.push(StoredBlob {
                digest,
                size: meta.size,
                modified: meta.last_modified.into(),
            });
            if found.len() >= limit {
                break;
            }
        }
        Ok(found)
    }

    async fn put_record(&self, name: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.store
            .put(&key(&StorageKey::Record(name.to_owned())), bytes.into())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn get_record(&self, name: &str) -> Result<Option<Bytes>, StorageError> {
        match self
            .store
            .get(&key(&StorageKey::Record(name.to_owned())))
            .await
        {
            Ok(result) => Ok(Some(result.bytes().await.map_err(map_err)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn delete_record(&self, name: &str) -> Result<(), StorageError> {
        match self
            .store
            .delete(&key(&StorageKey::Record(name.to_owned())))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn list_records(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let root = key(&StorageKey::Record(prefix.trim_end_matches('/').to_owned()));
        let mut listing = self.store.list(Some(&root));
        let mut names = Vec::new();
        while let Some(meta) = listing.try_next().await.map_err(map_err)? {
            if let Some(name) = meta.location.as_ref().strip_prefix("records/") {
                names.push(name.to_owned());
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    async fn ping(&self) -> Result<(), StorageError> {
        let probe = ObjectPath::from("uploads/.ready-probe");
        self.store
            .put(&probe, PutPayload::from_static(b"ok"))
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        Ok(())
    }
}
