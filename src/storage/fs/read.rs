//! The read path: blobs (and parts of uploads) streamed out of their files in large
//! chunks read on blocking threads, from the page cache or, for what it does not hold,
//! with `O_DIRECT`.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use uuid::Uuid;

use super::{FsBlobStore, blocking, not_found_at, sys};
use crate::digest::Digest;
use crate::storage::{ByteStream, PartInfo, StorageError, StorageKey};

/// Reads of one download in flight: O_DIRECT reads wait for the disk, and with two
/// of READ_CHUNK a cold 256 MiB blob came at ~1.2 GB/s.
const READS_IN_FLIGHT: usize = 4;

/// Size of one read when streaming a blob out (READS_IN_FLIGHT at a time).
/// (256 KiB reads held 1 GiB downloads to ~1.5 GB/s, 2 MiB reads reach loopback speed.)
pub(super) const READ_CHUNK: usize = 2 * 1024 * 1024;

/// Largest blob whose cold reads also fill the page cache (see [`ServedFile::read`]).
const CACHE_BLOBS_UP_TO: u64 = 1024 * 1024 * 1024;

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
/// allows it) an `O_DIRECT` one for what the page cache does not hold.
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
        let direct =
            sys::open_direct(std::fs::OpenOptions::new().read(true), path).map_err(not_found)?;
        let size = file.metadata()?.len();
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
        let direct = match sys::open_cached(path, true)? {
            Ok(file) => Some(file),
            Err(e) if sys::refuses_direct(&e) => None,
            Err(e) => return Some(Err(not_found(e))),
        };
        let size = match file.metadata() {
            Ok(meta) => meta.len(),
            Err(e) => return Some(Err(e.into())),
        };
        Some(Ok(ServedFile {
            file: Arc::new(file),
            direct,
            size,
        }))
    }

    /// The `n` bytes at `offset`: from the page cache when it holds them all, else
    /// (`cached`, from [`sys::all_cached`], is `Some(false)`) read from disk with `O_DIRECT`. Blobs are written with `O_DIRECT` (see
    /// [`BlobFile`](super::write::BlobFile)), so a blob pushed and then pulled is not cached, and buffered
    /// reads of it went at readahead speed: a 5 GiB download after its upload ran at
    /// 584 MB/s where Distribution, whose upload had filled the cache, did 1.4 GB/s.
    /// (Asking with `preadv2(RWF_NOWAIT)` instead of `cachestat` started readahead on
    /// every miss, and the disk then read everything twice.)
    fn read(
        &self,
        offset: u64,
        n: usize,
        end: u64,
        cached: Option<bool>,
    ) -> std::io::Result<Bytes> {
        if let Some(direct) = &self.direct
            && cached == Some(false)
        {
            let bytes = read_direct(direct, offset, n)?;
            // And into the cache behind it, asynchronously, for the next download
            // (cold reads go at ~0.7-0.9 GB/s instead of ~1.3, cached ones at ~2);
            // not for the largest blobs, which would push out many hotter ones.
            if self.size <= CACHE_BLOBS_UP_TO {
                sys::read_ahead(&self.file, offset, n as u64);
            }
            return Ok(bytes);
        }
        sys::read_ahead(
            &self.file,
            offset + n as u64,
            (end - offset - n as u64).min(READ_AHEAD),
        );
        let mut buf = vec![0u8; n];
        sys::read_exact_at(&self.file, &mut buf, offset)?;
        Ok(Bytes::from(buf))
    }
}

/// The `n` bytes at `offset` through an `O_DIRECT` handle: whole aligned blocks into
/// an aligned buffer, handed on as the slice that was asked for (no copy).
fn read_direct(direct: &std::fs::File, offset: u64, n: usize) -> std::io::Result<Bytes> {
    let lead = (offset % sys::DIRECT_ALIGN as u64) as usize;
    let from = offset - lead as u64;
    let want = lead + n;
    let span = want.next_multiple_of(sys::DIRECT_ALIGN);
    let mut raw = vec![0u8; span + sys::DIRECT_ALIGN];
    let base = raw.as_ptr().align_offset(sys::DIRECT_ALIGN);
    let mut got = 0usize;
    while got < want {
        match sys::read_at(direct, &mut raw[base + got..base + span], from + got as u64)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            k => got += k,
        }
        // A short read that is not block-aligned is the end of the file.
        if !got.is_multiple_of(sys::DIRECT_ALIGN) && got < want {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(Bytes::from(raw).slice(base + lead..base + want))
}

/// Streams `len` bytes of `file` from `start`. Every chunk is read on a blocking
/// thread straight into the buffer handed to the HTTP layer, a few chunks ahead of the
/// socket. (`tokio::fs::File` behind a `ReaderStream` read into its own buffer and then
/// copied into the stream's: one more pass over every byte, which kept downloads at
/// ~0.65x; see docs/benchmarks.md.)
fn read_range(file: ServedFile, start: u64, len: u64) -> ByteStream {
    let file = Arc::new(file);
    let end = start + len;
    futures_util::stream::iter((start..end).step_by(READ_CHUNK))
        .map(move |offset| {
            let file = file.clone();
            async move {
                let n = (end - offset).min(READ_CHUNK as u64) as usize;
                let cached = sys::all_cached(&file.file, offset, n as u64);
                tokio::task::spawn_blocking(move || file.read(offset, n, end, cached))
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
    /// for, through O_DIRECT (explicitly, and as ServedFile picks it for what is not
    /// cached) and through the page cache.
    #[test]
    fn reads_exact_bytes_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let bytes: Vec<u8> = (0..(3 * READ_CHUNK + 123))
            .map(|i| (i * 11 % 241) as u8)
            .collect();
        write_parts(&path, &bytes, &[], true);
        let served = ServedFile::open(&path).unwrap();
        let end = bytes.len() as u64;
        let cases = [
            (0, 1),
            (0, sys::DIRECT_ALIGN),
            (1, sys::DIRECT_ALIGN),
            (sys::DIRECT_ALIGN - 1, 2),
            (5_000, READ_CHUNK),
            (bytes.len() - 123, 123),
            (bytes.len() - 1, 1),
            (0, bytes.len()),
        ];
        for (offset, n) in cases {
            let want = &bytes[offset..offset + n];
            let cached = sys::all_cached(&served.file, offset as u64, n as u64);
            let got = served.read(offset as u64, n, end, cached).unwrap();
            assert!(got[..] == *want, "served {offset}+{n}");
            if let Some(direct) = &served.direct {
                let got = read_direct(direct, offset as u64, n).unwrap();
                assert!(got[..] == *want, "direct {offset}+{n}");
            }
            let plain = ServedFile {
                file: Arc::new(std::fs::File::open(&path).unwrap()),
                direct: None,
                size: end,
            };
            assert!(plain.read(offset as u64, n, end, cached).unwrap()[..] == *want);
        }
        if let Some(direct) = &served.direct {
            assert!(read_direct(direct, end - 10, 11).is_err(), "past the end");
        }
    }
}
