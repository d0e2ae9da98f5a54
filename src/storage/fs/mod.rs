//! Filesystem backend: blobs and upload parts as files under one root directory.
//!
//! Written directly on `std::fs` rather than `object_store::LocalFileSystem`, because a
//! registry needs what that driver lacks: `fsync` before a blob is declared durable,
//! atomic `rename` into place, positioned writes of an upload's parts into one file,
//! `O_DIRECT`, and plain file handles for serving ranges.
//!
//! `mod.rs` holds the store and its [`BlobStore`] implementation; `write.rs` the
//! upload and blob write path; `read.rs` the read path; `sys.rs` every system call
//! `std` does not wrap and every `unsafe` block.

mod read;
mod sys;
mod write;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use uuid::Uuid;

use super::{BlobStore, ByteStream, PartInfo, StorageError, StorageKey, UploadGuard};
use crate::digest::Digest;

/// Name of an upload's data file in its directory.
const DATA_FILE: &str = "data";

/// Blobs stored as files under `root`.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
    /// When this machine booted (see [`write::Written`]); `None` where that is unknown.
    booted: Option<SystemTime>,
    /// Whether blobs may be opened for serving on the request's thread when the kernel
    /// has their path in memory (see `read::ServedFile::open_cached`): only on local
    /// filesystems, where opening a file whose path is cached cannot wait.
    opens_inline: bool,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("uploads"))?;
        let opens_inline = sys::is_local_filesystem(&root);
        Ok(FsBlobStore {
            root,
            booted: write::boot_time(),
            opens_inline,
        })
    }

    fn path(&self, key: &StorageKey) -> PathBuf {
        self.root.join(key.path())
    }

    /// The one file an upload's parts are written into, each at its offset.
    fn data_path(&self, upload: Uuid) -> PathBuf {
        self.path(&StorageKey::UploadPart {
            upload,
            id: DATA_FILE.to_owned(),
        })
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Other(format!("blocking task failed: {e}")))?
}

/// Maps an error opening `path`: a missing file is [`StorageError::NotFound`].
fn not_found_at(path: &Path) -> impl Fn(std::io::Error) -> StorageError + Copy + '_ {
    move |e| match e.kind() {
        std::io::ErrorKind::NotFound => StorageError::NotFound(path.display().to_string()),
        _ => e.into(),
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put_part(
        &self,
        upload: Uuid,
        _number: u32,
        offset: u64,
        body: ByteStream,
    ) -> Result<PartInfo, StorageError> {
        self.write_part(upload, offset, body).await
    }

    async fn lock_upload(
        &self,
        upload: Uuid,
        create: bool,
    ) -> Result<Option<UploadGuard>, StorageError> {
        let dir = self.path(&StorageKey::Upload(upload));
        // The usual case, an upload that has its directory and that no one else
        // holds, is two quick local system calls, made on this thread: a hop to a
        // blocking thread waited up to milliseconds for a core while uploads kept
        // both cores busy hashing and writing.
        match std::fs::File::open(&dir) {
            Ok(handle) => {
                if sys::lock_exclusive(&handle, false)? {
                    // Unlocked when the handle is closed, with the guard.
                    return Ok(Some(UploadGuard::holding(handle)));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        blocking(move || {
            if create {
                std::fs::create_dir_all(&dir)?;
            }
            let handle = match std::fs::File::open(&dir) {
                Ok(handle) => handle,
                // Removed meanwhile: the upload was cancelled or expired.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            sys::lock_exclusive(&handle, true)?;
            Ok(Some(UploadGuard::holding(handle)))
        })
        .await
    }

    async fn commit(
        &self,
        upload: Uuid,
        parts: &[PartInfo],
        digest: &Digest,
    ) -> Result<(), StorageError> {
        self.commit_upload(upload, parts, digest).await
    }

    async fn read_part(&self, upload: Uuid, part: &PartInfo) -> Result<ByteStream, StorageError> {
        self.open_part(upload, part).await
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
                // The data file's mtime moves with every part; the directory's when it
                // is created.
                let mut modified = entry.metadata()?.modified()?;
                if let Ok(data) = std::fs::metadata(entry.path().join(DATA_FILE)) {
                    modified = modified.max(data.modified()?);
                }
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
        self.open_range(digest, range).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upload_locks_create_only_when_asked_and_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let id = Uuid::new_v4();
        let upload_dir = store.path(&StorageKey::Upload(id));
        assert!(store.lock_upload(id, false).await.unwrap().is_none());
        assert!(!upload_dir.exists(), "a lock without create made storage");
        let held = store.lock_upload(id, true).await.unwrap().expect("created");
        assert!(upload_dir.is_dir());
        // A second holder waits (on a blocking thread) until the first lets go.
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.lock_upload(id, false).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "took a lock someone holds");
        drop(held);
        let again = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the lock was let go")
            .unwrap()
            .unwrap();
        assert!(again.is_some());
    }
}
