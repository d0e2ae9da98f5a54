//! The read path: blobs (and parts of uploads) streamed out of their files in large
//! chunks, each read on a blocking thread straight into the buffer that the stream
//! yields, a few chunks ahead of the consumer.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use uuid::Uuid;

use super::{FsBlobStore, blocking, not_found_at, sys};
use crate::digest::Digest;
use crate::storage::{ByteStream, PartInfo, StorageError, StorageKey};

/// Size of one read when streaming a blob out, and of the chunks the stream yields.
///
/// Large, because every chunk costs a trip to a blocking thread and back and a pass
/// of the HTTP layer (64-256 KiB chunks held an actix-web server to 0.35-0.8x
/// Distribution's download speed on the benchmark machine, 256 KiB reads held 1 GiB
/// downloads to ~1.5 GB/s); 2 MiB rather than 4, because through a loopback socket
/// 4 MiB chunks cost more CPU per byte (0.76-1.23 s/GiB against 0.59-0.85, warm and
/// cold) and went no faster, and a buffer of 4 MiB is past the allocator's mmap
/// threshold that `main.rs` sets, so each download's buffers were mapped and faulted
/// in afresh (~4,100 faults a download; see docs/benchmarks.md).
pub(super) const READ_CHUNK: usize = 2 * 1024 * 1024;

/// Reads of one download in flight: they overlap the disk's work with the
/// consumer's. With four, a cold 1 GiB blob was read at ~1.2-1.3 GB/s, the disk's
/// speed (`dd` with `O_DIRECT`: 1.2-1.4 GB/s); in an earlier variant (4 MiB reads)
/// three and two in flight read cold 1 GiB blobs at 0.85 and 0.79 GB/s, four at 1.0.
const READS_IN_FLIGHT: usize = 4;

/// Largest blob whose cold reads fill the page cache (see [`ServedFile::read`]);
/// larger ones would push out many hotter blobs.
pub(super) const CACHE_BLOBS_UP_TO: u64 = 1024 * 1024 * 1024;

/// How far past the chunk being read a download asks the kernel to read ahead.
const READ_AHEAD: u64 = 4 * READ_CHUNK as u64;

impl FsBlobStore {
    /// A blob, whole or `range` of it.
    pub(super) async fn open_range(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        let path = self.path(&StorageKey::Blob(digest.clone()));
        // A hop to a blocking thread and back costs two thread wake-ups, 0.1-0.3 ms
        // on an idle machine, where the open itself takes microseconds.
        let inline = if self.opens_inline {
            ServedFile::open_cached(&path)
        } else {
            None
        };
        let file = match inline {
            Some(opened) => opened?,
            None => blocking(move || ServedFile::open(&path)).await?,
        };
        let size = file.size;
        let (start, len) = match range {
            None => (0, size),
            Some(r) if r.start < size && r.end <= size && r.start < r.end => {
                (r.start, r.end - r.start)
            }
            Some(_) => return Err(StorageError::RangeNotSatisfiable),
        };
        Ok(read_range(file, start, len))
    }

    /// A stored part of `upload`, read back from the upload's data file.
    pub(super) async fn open_part(
        &self,
        upload: Uuid,
        part: &PartInfo,
    ) -> Result<ByteStream, StorageError> {
        // The id is "<offset>+<size>" (see `write_part`).
        let offset = part
            .id
            .split_once('+')
            .and_then(|(o, n)| Some((o.parse::<u64>().ok()?, n.parse::<u64>().ok()?)))
            .filter(|&(_, n)| n == part.size)
            .map(|(o, _)| o)
            .ok_or_else(|| {
                StorageError::NotFound(format!("part {} of upload {upload}", part.id))
            })?;
        let path = self.data_path(upload);
        let size = part.size;
        let file = blocking(move || {
            let file = ServedFile::open(&path)?;
            if file.size < offset + size {
                return Err(StorageError::NotFound(format!(
                    "{} is short",
                    path.display()
                )));
            }
            Ok(file)
        })
        .await?;
        Ok(read_range(file, offset, size))
    }
}

/// A blob opened for serving: the usual handle, and (Linux, where the filesystem
/// allows it) an `O_DIRECT` one for the blobs too large to fill the page cache with.
pub(super) struct ServedFile {
    file: Arc<std::fs::File>,
    direct: Option<std::fs::File>,
    /// Length of the file when it was opened.
    size: u64,
}

impl ServedFile {
    /// Opens `path` for serving; a missing file is [`StorageError::NotFound`].
    pub(super) fn open(path: &Path) -> Result<Self, StorageError> {
        let not_found = not_found_at(path);
        let file = std::fs::File::open(path).map_err(not_found)?;
        let size = file.metadata()?.len();
        let direct = if size > CACHE_BLOBS_UP_TO {
            sys::open_direct(std::fs::OpenOptions::new().read(true), path).map_err(not_found)?
        } else {
            None
        };
        Ok(ServedFile {
            file: Arc::new(file),
            direct,
            size,
        })
    }

    /// [`open`](Self::open) without blocking: `None` unless the kernel can resolve
    /// `path` from its caches alone ([`sys::open_cached`]), so that nothing waits for
    /// the disk. Only for local filesystems, where opening and `fstat` then need
    /// nothing more.
    fn open_cached(path: &Path) -> Option<Result<Self, StorageError>> {
        let not_found = not_found_at(path);
        let file = match sys::open_cached(path, false)? {
            Ok(file) => file,
            Err(e) => return Some(Err(not_found(e))),
        };
        let size = match file.metadata() {
            Ok(meta) => meta.len(),
            Err(e) => return Some(Err(e.into())),
        };
        let direct = if size > CACHE_BLOBS_UP_TO {
            match sys::open_cached(path, true)? {
                Ok(file) => Some(file),
                Err(e) if sys::refuses_direct(&e) => None,
                Err(e) => return Some(Err(not_found(e))),
            }
        } else {
            None
        };
        Some(Ok(ServedFile {
            file: Arc::new(file),
            direct,
            size,
        }))
    }

    /// The `n` bytes at `offset`, read into `buf`, which becomes the chunk; `end` is
    /// where the download stops.
    ///
    /// Blobs are written with `O_DIRECT` (see [`BlobFile`](super::write::BlobFile)),
    /// so a blob is not in the page cache until its commit has read it back, and a
    /// pull right after the push may find it partly cached; a blob whose pages were
    /// evicted since is read from the disk again. Each read
    /// first asks the kernel for its chunk and the next [`READ_AHEAD`] bytes
    /// (`WILLNEED`, which starts disk reads for the pages not cached and returns), so
    /// a cold blob comes off the disk once, several chunks ahead of the consumer, and
    /// stays cached for the next download. On the benchmark machine that read cold
    /// 1 GiB blobs at ~1.3-1.5 GB/s (`dd` with `O_DIRECT`: 1.2 GB/s), where reading
    /// uncached chunks with `O_DIRECT` and then asking for them again to fill the
    /// cache read the disk twice, at ~0.74-1.0 GB/s; with the kernel's own
    /// readahead alone, a 5 GiB download after its upload ran at 584 MB/s.
    ///
    /// Blobs over [`CACHE_BLOBS_UP_TO`] would push hotter blobs out of the cache:
    /// what of them the cache does not hold (`cachestat`) is read with `O_DIRECT`
    /// and left uncached.
    fn read(&self, buf: Buffer, offset: u64, n: usize, end: u64) -> std::io::Result<Bytes> {
        if let Some(direct) = &self.direct
            && sys::all_cached(&self.file, offset, n as u64) == Some(false)
        {
            return read_direct(direct, buf, offset, n);
        }
        let ahead = (end - offset - n as u64).min(READ_AHEAD);
        sys::read_ahead(&self.file, offset, n as u64 + ahead);
        read_buffered(&self.file, buf, offset, n)
    }
}

/// The buffers one download reads into, each used again once the consumer has
/// dropped the chunk made of it. A fresh buffer is faulted in page by page as the
/// first read fills it; with a buffer per chunk that was 262,000 page faults per GiB
/// served (a 4 MiB buffer is an `mmap` of its own under the allocator settings
/// `main.rs` makes) and warm reads ran at ~1 GB/s.
struct Buffers {
    /// Length of every buffer.
    size: usize,
    free: Mutex<Vec<Vec<u8>>>,
    /// Buffers allocated so far.
    made: AtomicUsize,
}

/// Buffers one download keeps for reuse: those of the reads in flight, and of the
/// chunks the consumer holds.
const BUFFERS_KEPT: usize = READS_IN_FLIGHT + 2;

impl Buffers {
    fn new(size: usize) -> Arc<Self> {
        Arc::new(Buffers {
            size,
            free: Mutex::new(Vec::new()),
            made: AtomicUsize::new(0),
        })
    }

    /// A free buffer, or a new one.
    fn take(self: &Arc<Self>) -> Buffer {
        let reused = self.free.lock().expect("buffers lock").pop();
        let bytes = reused.unwrap_or_else(|| {
            self.made.fetch_add(1, Ordering::Relaxed);
            vec![0; self.size]
        });
        Buffer {
            bytes,
            home: self.clone(),
        }
    }
}

/// One buffer of [`Buffers`], back to them when dropped.
struct Buffer {
    bytes: Vec<u8>,
    home: Arc<Buffers>,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut free = self.home.free.lock().expect("buffers lock");
        if free.len() < BUFFERS_KEPT {
            free.push(std::mem::take(&mut self.bytes));
        }
    }
}

/// A chunk of a download: the bytes `at` of its buffer.
struct Chunk {
    buf: Buffer,
    at: Range<usize>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf.bytes[self.at.clone()]
    }
}

/// The `n` bytes at `offset` of `file`, read into `buf`, which becomes the chunk.
fn read_buffered(
    file: &std::fs::File,
    mut buf: Buffer,
    offset: u64,
    n: usize,
) -> std::io::Result<Bytes> {
    sys::read_exact_at(file, &mut buf.bytes[..n], offset)?;
    Ok(Bytes::from_owner(Chunk { buf, at: 0..n }))
}

/// The `n` bytes at `offset` through an `O_DIRECT` handle: whole aligned blocks into
/// the aligned part of `buf`, handed on as the slice that was asked for.
fn read_direct(
    direct: &std::fs::File,
    mut buf: Buffer,
    offset: u64,
    n: usize,
) -> std::io::Result<Bytes> {
    const ALIGN: usize = sys::DIRECT_ALIGN;
    let lead = (offset % ALIGN as u64) as usize;
    let from = offset - lead as u64;
    let want = lead + n;
    let span = want.next_multiple_of(ALIGN);
    let base = buf.bytes.as_ptr().align_offset(ALIGN);
    if base + span > buf.bytes.len() {
        return Err(std::io::Error::other("read buffer too small for O_DIRECT"));
    }
    let mut got = 0usize;
    while got < want {
        let into = &mut buf.bytes[base + got..base + span];
        match sys::read_at(direct, into, from + got as u64)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            k => got += k,
        }
        // A short read that is not block-aligned is the end of the file.
        if !got.is_multiple_of(ALIGN) && got < want {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    let at = base + lead..base + want;
    Ok(Bytes::from_owner(Chunk { buf, at }))
}

/// Streams `len` bytes of `file` from `start` in chunks of [`READ_CHUNK`], each read
/// on a blocking thread straight into the buffer that the stream yields (one copy,
/// page cache to buffer, or none with `O_DIRECT`), [`READS_IN_FLIGHT`] ahead of the
/// consumer. No thread is held while the consumer is slow.
fn read_range(file: ServedFile, start: u64, len: u64) -> ByteStream {
    read_chunks(file, start, len, Buffers::new(buffer_size(len)))
}

/// Room for a chunk of a `len`-byte download read with `O_DIRECT`: the block its
/// start falls in, the block its end falls in, and one more to find an aligned
/// address in.
fn buffer_size(len: u64) -> usize {
    usize::try_from(len).map_or(READ_CHUNK, |l| l.min(READ_CHUNK)) + 3 * sys::DIRECT_ALIGN
}

fn read_chunks(file: ServedFile, start: u64, len: u64, buffers: Arc<Buffers>) -> ByteStream {
    let file = Arc::new(file);
    let end = start + len;
    futures_util::stream::iter((start..end).step_by(READ_CHUNK))
        .map(move |offset| {
            let file = file.clone();
            let buf = buffers.take();
            async move {
                let n = (end - offset).min(READ_CHUNK as u64) as usize;
                tokio::task::spawn_blocking(move || file.read(buf, offset, n, end))
                    .await
                    .map_err(std::io::Error::other)?
            }
        })
        .buffered(READS_IN_FLIGHT)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::super::write::tests::write_parts;
    use super::*;

    /// A blob whose path the kernel has in memory opens on the calling thread (Linux
    /// 5.12 or later), whole and with its size; a missing one is never opened.
    #[cfg(target_os = "linux")]
    #[test]
    fn blobs_with_cached_paths_open_on_the_calling_thread() {
        assert!(
            !sys::is_local_filesystem(Path::new("/proc")),
            "procfs is no disk"
        );
        let dir = tempfile::tempdir().unwrap();
        if !sys::is_local_filesystem(dir.path()) {
            eprintln!("temporary directory on a network filesystem: nothing to test");
            return;
        }
        let path = dir.path().join("blob");
        std::fs::write(&path, b"twelve bytes").unwrap();
        let served = ServedFile::open_cached(&path)
            .expect("a path just written is cached")
            .unwrap();
        assert_eq!(served.size, 12);
        let mut buf = [0u8; 12];
        sys::read_exact_at(&served.file, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"twelve bytes");
        match ServedFile::open_cached(&dir.path().join("missing")) {
            None | Some(Err(StorageError::NotFound(_))) => {}
            Some(Ok(_)) => panic!("opened a file that does not exist"),
            Some(Err(e)) => panic!("{e:?}"),
        }
    }

    /// Reads at offsets and lengths on and off block boundaries give the bytes asked
    /// for, through the page cache and through O_DIRECT (explicitly, and as
    /// `ServedFile::read` picks it for the uncached chunks of a large blob).
    #[test]
    fn reads_exact_bytes_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let bytes: Vec<u8> = (0..(3 * READ_CHUNK + 123))
            .map(|i| (i * 11 % 241) as u8)
            .collect();
        write_parts(&path, &bytes, &[], true);
        let end = bytes.len() as u64;
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        let direct = || sys::open_direct(std::fs::OpenOptions::new().read(true), &path).unwrap();
        let cached = ServedFile {
            file: file.clone(),
            direct: None,
            size: end,
        };
        let uncached = ServedFile {
            file: file.clone(),
            direct: direct(),
            size: end,
        };
        let buffers = Buffers::new(buffer_size(end));
        let a = sys::DIRECT_ALIGN;
        let cases = [
            (0, 1),
            (0, a),
            (1, a),
            (a - 1, 2),
            (a - 1, a + 2),
            (5_000, READ_CHUNK),
            (1, READ_CHUNK),
            (READ_CHUNK - 1, READ_CHUNK),
            (bytes.len() - READ_CHUNK, READ_CHUNK),
            (bytes.len() - 123, 123),
            (bytes.len() - 1, 1),
        ];
        for (offset, n) in cases {
            let want = &bytes[offset..offset + n];
            let at = offset as u64;
            let got = read_buffered(&file, buffers.take(), at, n).unwrap();
            assert!(got[..] == *want, "buffered {offset}+{n}");
            assert!(cached.read(buffers.take(), at, n, end).unwrap()[..] == *want);
            if let Some(direct) = &uncached.direct {
                let got = read_direct(direct, buffers.take(), at, n).unwrap();
                assert!(got[..] == *want, "direct {offset}+{n}");
                sys::forget_cached(&file);
                let got = uncached.read(buffers.take(), at, n, end).unwrap();
                assert!(got[..] == *want, "uncached {offset}+{n}");
            }
        }
        if let Some(direct) = &uncached.direct {
            let past = read_direct(direct, buffers.take(), end - 10, 11);
            assert!(past.is_err(), "read past the end");
        }
    }

    /// A download reads into a few buffers over and over, not one per chunk (a fresh
    /// buffer is faulted in page by page), and yields every byte once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_download_reuses_its_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let bytes: Vec<u8> = (0..(16 * READ_CHUNK + 5))
            .map(|i| (i * 13 % 251) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let buffers = Buffers::new(buffer_size(bytes.len() as u64));
        let file = ServedFile::open(&path).unwrap();
        let start = 3u64;
        let mut stream = read_chunks(file, start, bytes.len() as u64 - start, buffers.clone());
        let mut at = start as usize;
        let mut chunks = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk[..] == bytes[at..at + chunk.len()], "chunk at {at}");
            assert!(chunk.len() <= READ_CHUNK);
            at += chunk.len();
            chunks += 1;
        }
        assert_eq!(at, bytes.len());
        assert_eq!(chunks, 17);
        let made = buffers.made.load(Ordering::Relaxed);
        assert!(
            made <= READS_IN_FLIGHT + 1,
            "{made} buffers for {chunks} chunks"
        );
    }
}
