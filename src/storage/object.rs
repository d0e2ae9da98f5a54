//! Backend over any `object_store` implementation (in-memory today; the same code
//! serves S3-compatible stores). Parts are separate objects; commit streams them into
//! the blob's key through a multipart write, so memory stays bounded by one part buffer.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use uuid::Uuid;

use super::{BlobStore, ByteStream, PartInfo, StorageError, StorageKey};
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

fn key(k: &StorageKey) -> ObjectPath {
    ObjectPath::from(k.path())
}

fn map_err(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
        other => StorageError::Other(other.to_string()),
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn put_part(
        &self,
        upload: Uuid,
        number: u32,
        body: ByteStream,
    ) -> Result<PartInfo, StorageError> {
        let id = format!("{number:06}.{}", Uuid::new_v4().simple());
        let path = key(&StorageKey::UploadPart {
            upload,
            id: id.clone(),
        });
        let upload_handle = self.store.put_multipart(&path).await.map_err(map_err)?;
        let mut writer = WriteMultipart::new(upload_handle);
        let mut body = body;
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    size += chunk.len() as u64;
                    writer.wait_for_capacity(4).await.map_err(map_err)?;
                    writer.put(chunk);
                }
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(StorageError::Body(e));
                }
            }
        }
        writer.finish().await.map_err(map_err)?;
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
                [only] => {
                    self.store
                        .copy(&part_key(only), &target)
                        .await
                        .map_err(map_err)?;
                }
                many => {
                    let handle = self.store.put_multipart(&target).await.map_err(map_err)?;
                    let mut writer = WriteMultipart::new(handle);
                    for p in many {
                        let mut stream = self
                            .store
                            .get(&part_key(p))
                            .await
                            .map_err(map_err)?
                            .into_stream();
                        while let Some(chunk) = stream.try_next().await.map_err(map_err)? {
                            writer.wait_for_capacity(4).await.map_err(map_err)?;
                            writer.put(chunk);
                        }
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
        let opts = object_store::GetOptions {
            range: range.map(object_store::GetRange::Bounded),
            ..Default::default()
        };
        let result = self.store.get_opts(&path, opts).await.map_err(map_err)?;
        Ok(result
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed())
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        match self.store.head(&key(&StorageKey::Blob(digest.clone()))).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        match self.store.delete(&key(&StorageKey::Blob(digest.clone()))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
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
