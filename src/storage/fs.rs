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

/// Alignment of buffers, lengths and offsets for `O_DIRECT` (the largest logical block
/// size in common use).
const DIRECT_ALIGN: usize = 4096;

/// Bytes gathered before one `O_DIRECT` write.
const DIRECT_CHUNK: usize = 2 * 1024 * 1024;

/// A file being written from start to end, either through the page cache or with
/// `O_DIRECT` (Linux).
///
/// Why `O_DIRECT`: on the benchmark machine (docs/benchmarks.md) writing a blob through
/// the page cache and then `fsync`ing it ran at ~220 MB/s (~720 MB/s with early
/// writeback), with two thirds of the server's CPU time in the kernel copying into
/// page-cache folios; the same bytes written with `O_DIRECT` from an aligned buffer,
/// then `fsync`ed, ran at ~1.2-1.5 GB/s. A registry rarely reads a blob right after
/// writing it, so the page cache bought nothing there. Filesystems that refuse
/// `O_DIRECT` (tmpfs, some network filesystems) get the buffered path.
struct BlobFile {
    file: std::fs::File,
    /// Aligned staging buffer, when the file was opened with `O_DIRECT`.
    direct: Option<AlignedBuf>,
    written: u64,
    handed: u64,
}

/// A heap buffer of [`DIRECT_CHUNK`] bytes whose start is [`DIRECT_ALIGN`]-aligned.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    filled: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        let raw = vec![0u8; DIRECT_CHUNK + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf {
            raw,
            start,
            filled: 0,
        }
    }

    fn space(&mut self) -> &mut [u8] {
        &mut self.raw[self.start + self.filled..self.start + DIRECT_CHUNK]
    }

    /// The filled bytes, zero-padded to the alignment.
    fn padded(&mut self) -> &[u8] {
        let len = self.filled.next_multiple_of(DIRECT_ALIGN);
        self.raw[self.start + self.filled..self.start + len].fill(0);
        &self.raw[self.start..self.start + len]
    }
}

impl BlobFile {
    /// Creates (truncating) `path` for writing.
    fn create(path: &Path) -> std::io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
            {
                Ok(file) => {
                    return Ok(BlobFile {
                        file,
                        direct: Some(AlignedBuf::new()),
                        written: 0,
                        handed: 0,
                    });
                }
                // The filesystem does not do O_DIRECT: write through the page cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(BlobFile {
            file: std::fs::File::create(path)?,
            direct: None,
            written: 0,
            handed: 0,
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        self.written += bytes.len() as u64;
        let Some(buf) = self.direct.as_mut() else {
            self.file.write_all(bytes)?;
            if self.written - self.handed >= WRITEBACK_STEP {
                start_writeback(&self.file, self.handed, self.written - self.handed);
                self.handed = self.written;
            }
            return Ok(());
        };
        while !bytes.is_empty() {
            let space = buf.space();
            let n = space.len().min(bytes.len());
            space[..n].copy_from_slice(&bytes[..n]);
            buf.filled += n;
            bytes = &bytes[n..];
            if buf.filled == DIRECT_CHUNK {
                self.file.write_all(buf.padded())?;
                buf.filled = 0;
            }
        }
        Ok(())
    }

    /// Writes what is left, makes the file durable and returns its length.
    fn finish(mut self) -> std::io::Result<u64> {
        if let Some(buf) = self.direct.as_mut()
            && buf.filled > 0
        {
            // The last block goes out padded with zeros, then the file is cut to size.
            let padded = buf.filled % DIRECT_ALIGN != 0;
            self.file.write_all(buf.padded())?;
            if padded {
                self.file.set_len(self.written)?;
            }
        }
        self.file.sync_all()?;
        Ok(self.written)
    }
}

/// Opens `path` for reading with `O_DIRECT` when the filesystem allows it (see
/// [`BlobFile`]); `None` when it does not.
#[cfg(target_os = "linux")]
fn open_direct_read(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct_read(_path: &Path) -> std::io::Result<Option<std::fs::File>> {
    Ok(None)
}

/// Appends all of `part` to `out`, reading with `O_DIRECT` when possible (a part written
/// moments ago with `O_DIRECT` is not in the page cache, and buffered reads of it crawl
/// at readahead speed).
fn append_part(out: &mut BlobFile, part: &Path) -> std::io::Result<()> {
    let Some(direct) = open_direct_read(part)? else {
        let mut f = std::fs::File::open(part)?;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match std::io::Read::read(&mut f, &mut buf)? {
                0 => return Ok(()),
                n => out.write(&buf[..n])?,
            }
        }
    };
    let mut buf = AlignedBuf::new();
    let mut offset = 0u64;
    loop {
        // Whole aligned blocks from an aligned offset; the last read comes back short.
        let n = read_at(&direct, buf.space(), offset)?;
        if n == 0 {
            return Ok(());
        }
        out.write(&buf.space()[..n])?;
        offset += n as u64;
        if n % DIRECT_ALIGN != 0 {
            return Ok(());
        }
    }
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
                    read_ahead(
                        &file,
                        offset + n as u64,
                        (end - offset - n as u64).min(READ_AHEAD),
                    );
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

/// How far past the chunk being read a download asks the kernel to read ahead.
const READ_AHEAD: u64 = 4 * READ_CHUNK as u64;

/// Asks the kernel to start reading `len` bytes at `offset` into the page cache. Blobs
/// are written with `O_DIRECT` (see [`BlobFile`]), so the first download of one finds
/// nothing cached, and the default readahead window held such reads to ~300-500 MB/s on
/// the benchmark machine. Advice only: failures are ignored.
#[cfg(target_os = "linux")]
fn read_ahead(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    if len > 0 {
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is
        // valid for as long as `file` is borrowed.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn read_ahead(_file: &std::fs::File, _offset: u64, _len: u64) {}

#[cfg(unix)]
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
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
            let mut file = BlobFile::create(&path)?;
            while let Some(chunk) = rx.blocking_recv() {
                file.write(&chunk)?;
            }
            Ok(file.finish()?)
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
                        // Through user space with O_DIRECT on both sides: copy_file_range
                        // would go through the page cache, which is what makes writes
                        // slow here (see BlobFile).
                        let mut out = BlobFile::create(&joined)?;
                        for p in parts {
                            append_part(&mut out, p)?;
                        }
                        out.finish()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Both write paths (O_DIRECT where the temp directory's filesystem allows it, and
    /// the page cache), fed in uneven pieces across buffer and block boundaries, leave
    /// exactly the bytes given; so does joining such files.
    #[test]
    fn blob_file_writes_exact_bytes_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(2 * DIRECT_CHUNK + 5_000))
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        for (name, direct) in [("direct", true), ("buffered", false)] {
            for len in [
                0,
                1,
                DIRECT_ALIGN,
                DIRECT_CHUNK - 1,
                DIRECT_CHUNK,
                bytes.len(),
            ] {
                let path = dir.path().join(format!("{name}-{len}"));
                let mut file = BlobFile::create(&path).unwrap();
                if !direct {
                    file = BlobFile {
                        file: std::fs::File::create(&path).unwrap(),
                        direct: None,
                        written: 0,
                        handed: 0,
                    };
                }
                for piece in bytes[..len].chunks(3_001) {
                    file.write(piece).unwrap();
                }
                assert_eq!(file.finish().unwrap(), len as u64);
                assert!(
                    std::fs::read(&path).unwrap() == bytes[..len],
                    "{name} {len}"
                );
            }
        }
        let joined = dir.path().join("joined");
        let mut out = BlobFile::create(&joined).unwrap();
        let parts = [
            "direct-1",
            "buffered-4096",
            &format!("direct-{}", bytes.len()),
        ];
        for p in parts {
            append_part(&mut out, &dir.path().join(p)).unwrap();
        }
        out.finish().unwrap();
        let want = [&bytes[..1], &bytes[..DIRECT_ALIGN], &bytes[..]].concat();
        assert!(std::fs::read(&joined).unwrap() == want);
    }
}
