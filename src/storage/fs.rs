//! Filesystem backend: blobs and upload parts as files under one root directory.
//!
//! Written directly on `std::fs` rather than `object_store::LocalFileSystem`, because a
//! registry needs what that driver lacks: `fsync` before a blob is declared durable,
//! atomic `rename` into place, in-kernel concatenation of parts (`copy_file_range`),
//! and plain file handles for serving ranges.

use std::io::{Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::{BlobStore, ByteStream, PartInfo, StorageError, StorageKey};
use crate::digest::Digest;

/// Size of the read buffer when streaming a blob out.
const READ_CHUNK: usize = 256 * 1024;

/// Blobs stored as files under `root`.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("uploads"))?;
        Ok(FsBlobStore { root })
    }

    fn path(&self, key: &StorageKey) -> PathBuf {
        self.root.join(key.path())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Other(format!("blocking task failed: {e}")))?
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing ancestors, syncing the parent of each one created so
/// the new entries survive a crash along with the file renamed into `dir`.
fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().expect("a blob directory has a parent");
    create_dir_durable(parent)?;
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put_part(
        &self,
        upload: Uuid,
        number: u32,
        mut body: ByteStream,
    ) -> Result<PartInfo, StorageError> {
        let id = format!("{number:06}.{}", Uuid::new_v4().simple());
        let path = self.path(&StorageKey::UploadPart {
            upload,
            id: id.clone(),
        });
        // Writes happen on a blocking thread while this task keeps reading (and the
        // caller keeps hashing) the request body: the two overlap on two cores.
        let (tx, mut rx) = mpsc::channel::<Bytes>(32);
        let writer = tokio::task::spawn_blocking(move || -> Result<u64, StorageError> {
            std::fs::create_dir_all(path.parent().expect("part has a parent"))?;
            let mut file = std::fs::File::create(&path)?;
            let mut size = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
                size += chunk.len() as u64;
            }
            file.sync_all()?;
            Ok(size)
        });
        let mut body_error = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| StorageError::Other(format!("writer task failed: {e}")))?;
        if let Some(e) = body_error {
            return Err(StorageError::Body(e));
        }
        Ok(PartInfo { id, size: written? })
    }

    async fn commit(
        &self,
        upload: Uuid,
        parts: &[PartInfo],
        digest: &Digest,
    ) -> Result<(), StorageError> {
        let target = self.path(&StorageKey::Blob(digest.clone()));
        let upload_dir = self.path(&StorageKey::Upload(upload));
        let part_paths: Vec<PathBuf> = parts
            .iter()
            .map(|p| {
                self.path(&StorageKey::UploadPart {
                    upload,
                    id: p.id.clone(),
                })
            })
            .collect();
        blocking(move || {
            if !target.exists() {
                let dir = target.parent().expect("blob has a parent");
                create_dir_durable(dir)?;
                // Parts stay untouched until the blob is in place, so a commit that
                // fails half-way can simply be retried.
                let joined = match part_paths.as_slice() {
                    // A single part is already durable (put_part fsyncs it): rename it.
                    [only] => only.clone(),
                    parts => {
                        // No part was ever stored, so the upload's directory may not exist.
                        std::fs::create_dir_all(&upload_dir)?;
                        let joined = upload_dir.join(format!("joined.{}", Uuid::new_v4().simple()));
                        // Not O_APPEND: copy_file_range refuses appending descriptors, and
                        // std::io::copy would then copy through user space.
                        let mut out = std::fs::File::create(&joined)?;
                        for p in parts {
                            let mut f = std::fs::File::open(p)?;
                            // std::io::copy uses copy_file_range on Linux: no bytes through user space.
                            std::io::copy(&mut f, &mut out)?;
                        }
                        out.sync_all()?;
                        joined
                    }
                };
                std::fs::rename(&joined, &target)?;
                sync_dir(dir)?;
            }
            match std::fs::remove_dir_all(&upload_dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn read_part(&self, upload: Uuid, part: &PartInfo) -> Result<ByteStream, StorageError> {
        let path = self.path(&StorageKey::UploadPart {
            upload,
            id: part.id.clone(),
        });
        let file = tokio::fs::File::open(&path).await?;
        Ok(ReaderStream::with_capacity(file, READ_CHUNK).boxed())
    }

    async fn stale_uploads(
        &self,
        before: std::time::SystemTime,
        limit: usize,
    ) -> Result<Vec<Uuid>, StorageError> {
        let dir = self.root.join("uploads");
        blocking(move || {
            let mut stale = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| Uuid::parse_str(n).ok())
                else {
                    continue; // the readiness probe, or anything that is not an upload
                };
                // A directory's mtime moves whenever a part is added to it.
                let modified = entry.metadata()?.modified()?;
                if modified < before {
                    stale.push(id);
                    if stale.len() >= limit {
                        break;
                    }
                }
            }
            Ok(stale)
        })
        .await
    }

    async fn abort(&self, upload: Uuid) -> Result<(), StorageError> {
        let dir = self.path(&StorageKey::Upload(upload));
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        let path = self.path(&StorageKey::Blob(digest.clone()));
        let (file, len) = blocking(move || {
            let mut file = std::fs::File::open(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StorageError::NotFound(path.display().to_string()),
                _ => e.into(),
            })?;
            let size = file.metadata()?.len();
            let (start, len) = match range {
                None => (0, size),
                Some(r) if r.start < size && r.end <= size && r.start < r.end => {
                    (r.start, r.end - r.start)
                }
                Some(_) => return Err(StorageError::RangeNotSatisfiable),
            };
            if start > 0 {
                file.seek(SeekFrom::Start(start))?;
            }
            Ok((file, len))
        })
        .await?;
        let reader = tokio::fs::File::from_std(file).take(len);
        Ok(ReaderStream::with_capacity(reader, READ_CHUNK).boxed())
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        match tokio::fs::metadata(self.path(&StorageKey::Blob(digest.clone()))).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path(&StorageKey::Blob(digest.clone()))).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn ping(&self) -> Result<(), StorageError> {
        // A name of its own, so that concurrent probes do not remove each other's file.
        let probe = self
            .root
            .join("uploads")
            .join(format!(".ready-probe.{}", Uuid::new_v4().simple()));
        blocking(move || {
            std::fs::write(&probe, b"ok")
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(|e| StorageError::Unavailable(format!("{}: {e}", probe.display())))
        })
        .await
    }
}
