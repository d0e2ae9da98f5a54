//! Filesystem backend: blobs and upload parts as files under one root directory.
//!
//! Written directly on `std::fs` rather than `object_store::LocalFileSystem`, because a
//! registry needs what that driver lacks: `fsync` before a blob is declared durable,
//! atomic `rename` into place, in-kernel concatenation of parts (`copy_file_range`),
//! and plain file handles for serving ranges.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::{BlobStore, ByteStream, PartInfo, StorageError, StorageKey};
use crate::digest::Digest;

/// Size of one read when streaming a blob out; two are in flight per download.
/// (256 KiB reads held 1 GiB downloads to ~1.5 GB/s, 2 MiB reads reach loopback speed.)
const READ_CHUNK: usize = 2 * 1024 * 1024;

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

/// Bytes written to a file between two [`start_writeback`] calls.
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk now,
/// without waiting. Large writes followed by one `fsync` otherwise pile up dirty pages
/// until the kernel throttles the writer and the `fsync` flushes them all at the end:
/// on this project's benchmark machine that made a durable 1 GiB upload run at
/// ~250-500 MB/s where writing back as it goes sustains ~2 GB/s (see
/// docs/benchmarks.md). The `fsync` at the end still decides durability; this only
/// moves the work earlier. A failure here is harmless and ignored.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is
    // valid for as long as `file` is borrowed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}

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

/// Streams `len` bytes of `file` from `start`: each chunk is read (`pread`) on a
/// blocking thread straight into the buffer handed to the HTTP layer, one chunk ahead
/// of the socket. (`tokio::fs::File` behind a `ReaderStream` read into its own buffer
/// and then copied into the stream's: one more pass over every byte, which kept
/// downloads at ~0.65x Distribution's; see docs/benchmarks.md.)
fn read_range(file: std::fs::File, start: u64, len: u64) -> ByteStream {
    let file = std::sync::Arc::new(file);
    let end = start + len;
    futures_util::stream::iter((start..end).step_by(READ_CHUNK))
        .map(move |offset| {
            let file = file.clone();
            async move {
                let n = (end - offset).min(READ_CHUNK as u64) as usize;
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    read_exact_at(&file, &mut buf, offset)?;
                    Ok(Bytes::from(buf))
                })
                .await
                .map_err(std::io::Error::other)?
            }
        })
        .buffered(2)
        .boxed()
}

#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &std::fs::File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
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
            let mut handed = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
                size += chunk.len() as u64;
                if size - handed >= WRITEBACK_STEP {
                    start_writeback(&file, handed, size - handed);
                    handed = size;
                }
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
                        let mut copied = 0;
                        for p in parts {
                            let mut f = std::fs::File::open(p)?;
                            // std::io::copy uses copy_file_range on Linux: no bytes through user space.
                            let n = std::io::copy(&mut f, &mut out)?;
                            start_writeback(&out, copied, n);
                            copied += n;
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
        let (file, start, len) = blocking(move || {
            let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
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
            Ok((file, start, len))
        })
        .await?;
        Ok(read_range(file, start, len))
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
