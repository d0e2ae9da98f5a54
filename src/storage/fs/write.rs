//! The write path: upload parts written into one data file per upload, with
//! `O_DIRECT` from an aligned buffer where the filesystem allows it, and the commit
//! that makes an upload's file a blob (sync, check where a crash may have lost writes,
//! atomic rename).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use uuid::Uuid;

use super::read::{CACHE_BLOBS_UP_TO, READ_CHUNK};
use super::{FsBlobStore, blocking, sys};
use crate::digest::Digest;
use crate::storage::{ByteBudget, ByteStream, PartInfo, StorageError, StorageKey};

/// How the parts in an upload's data file were made to last, from when the file was
/// created (its birth time) and when the machine booted.
///
/// A part written with `O_DIRECT` has left the machine's memory when the write
/// returns: it survives the process, and only a crash of the machine can lose it from
/// the disk's own write cache. So such parts of a file created since this boot need
/// no `fsync` each: [`FsBlobStore::commit_upload`] syncs the file once before the rename. On
/// one benchmark machine a flush took 10-14 ms, and an `fsync` per 8 MiB PATCH held
/// chunked uploads to 77-83 % of monolithic ones (docs/benchmarks.md). A file created
/// before this boot may have lost unsynced parts in the crash, so the commit reads it
/// back and checks it against the digest. Parts written through the page cache by
/// choice (`storage.cache_writes`, local filesystems only) wait for their writeback
/// instead, which gives the same guarantee ([`sys::write_back`]). Where either time is
/// unknown, and for parts written through the page cache of a filesystem without
/// `O_DIRECT` (whose volume could be moved to another machine after a crash), every
/// part is synced as it is written, as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    /// Every part was synced when written.
    Synced,
    /// Unsynced parts, all written since this boot.
    SinceBoot,
    /// Created before this boot: may hold unsynced parts a crash lost.
    BeforeBoot,
}

/// See [`Written`]. A file born less than [`BOOT_MARGIN`] after the recorded boot time
/// counts as older: the boot time is whole seconds, and nothing of ours runs that soon.
pub(super) fn written(created: Option<SystemTime>, booted: Option<SystemTime>) -> Written {
    match (created, booted) {
        (Some(created), Some(booted)) if created >= booted + BOOT_MARGIN => Written::SinceBoot,
        (Some(_), Some(_)) => Written::BeforeBoot,
        _ => Written::Synced,
    }
}

/// See [`written`].
const BOOT_MARGIN: Duration = Duration::from_secs(2);

/// When this machine booted: `btime` of `/proc/stat` (Linux), `None` elsewhere. The
/// kernel keeps it in step with changes to the wall clock, which file birth times are
/// also taken from.
pub(super) fn boot_time() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Bytes of a request body queued for the writing thread at most.
const WRITE_QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// Bytes written to a file between two [`sys::start_writeback`] calls.
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

/// Bytes gathered before one `O_DIRECT` write.
const DIRECT_CHUNK: usize = 2 * 1024 * 1024;

impl FsBlobStore {
    /// Writes `body` into `upload`'s data file at `offset` (see
    /// [`BlobStore::put_part`](crate::storage::BlobStore::put_part)).
    pub(super) async fn write_part(
        &self,
        upload: Uuid,
        offset: u64,
        mut body: ByteStream,
    ) -> Result<PartInfo, StorageError> {
        // Every part goes into the upload's one data file at its offset, so that the
        // commit is a rename: joining part files meant writing every byte twice (a
        // chunked 1 GiB upload ran at 40 % of a monolithic one). Writers of a shared
        // upload hold lock_upload, so no two requests write the file at once; the
        // writing thread also locks the file itself (see `BlobFile::open_locked`).
        let path = self.data_path(upload);
        // Writes happen on a blocking thread while this task keeps reading the request
        // body (and the caller's thread hashes it). The queue holds up to
        // WRITE_QUEUE_BYTES, enough to keep reading the socket while an O_DIRECT
        // write of DIRECT_CHUNK waits for the disk (a queue of 32 chunks stalled it:
        // 64 MiB uploads 720 -> 809 MB/s), and bounded in bytes, not chunks, so that
        // memory stays flat whatever the chunk sizes.
        let budget = ByteBudget::new(WRITE_QUEUE_BYTES);
        let (tx, mut rx) = mpsc::unbounded_channel::<Feed>();
        let booted = self.booted;
        // Only on local filesystems: on a network one, waiting for writeback may not
        // mean the bytes left the machine, and every part is synced instead.
        let cached = self.cache_writes && self.opens_inline;
        let gone = Gone::default();
        let request_gone = gone.0.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<u64, StorageError> {
            std::fs::create_dir_all(path.parent().expect("part has a parent"))?;
            let (file, direct) = BlobFile::open_locked(&path, cached)?;
            if request_gone.load(Ordering::Acquire) {
                // Dropped before this thread got the file: a later request may have
                // written to it since, so leave it alone.
                return Err(StorageError::Other("the part's request is gone".into()));
            }
            let mut file = BlobFile::start(file, offset, direct, cached)?;
            let written = file.fill(&mut rx, booted);
            if written.is_err() {
                file.put_back();
            }
            written
        });
        let mut body_error = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    let permit = budget.take(chunk.len()).await;
                    if tx.send(Feed::Bytes(chunk, permit)).is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        if body_error.is_none() {
            // Without this the writer puts the file back as it was: the body failed,
            // or this future was dropped before the body's end.
            let _ = tx.send(Feed::End);
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| StorageError::Other(format!("writer task failed: {e}")))?;
        drop(gone);
        if let Some(e) = body_error {
            return Err(StorageError::Body(e));
        }
        let size = written?;
        Ok(PartInfo {
            id: format!("{offset}+{size}"),
            size,
        })
    }

    /// Makes `upload`'s data file the blob `digest` (see
    /// [`BlobStore::commit`](crate::storage::BlobStore::commit)).
    pub(super) async fn commit_upload(
        &self,
        upload: Uuid,
        parts: &[PartInfo],
        digest: &Digest,
    ) -> Result<(), StorageError> {
        let target = self.path(&StorageKey::Blob(digest.clone()));
        let upload_dir = self.path(&StorageKey::Upload(upload));
        let data = self.data_path(upload);
        let total: u64 = parts.iter().map(|p| p.size).sum();
        let booted = self.booted;
        let digest = digest.clone();
        let read_back = !(self.cache_writes && self.opens_inline);
        let warm = blocking(move || {
            let mut warm = None;
            if !target.exists() {
                let dir = target.parent().expect("blob has a parent");
                create_dir_durable(dir)?;
                // No part was ever stored (the empty blob): the directory may not exist.
                std::fs::create_dir_all(&upload_dir)?;
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&data)?;
                // After the writer of a part whose request was dropped (see
                // `BlobFile::open_locked`).
                sys::lock_exclusive(&file, true)?;
                let meta = file.metadata()?;
                let len = meta.len();
                if len < total {
                    return Err(StorageError::Other(format!(
                        "upload {upload} holds {len} bytes where its parts add up to {total}"
                    )));
                }
                // Past the parts: what a failed write left, never part of the blob.
                if len > total {
                    file.set_len(total)?;
                }
                // The parts written since boot become durable here (see Written).
                file.sync_all()?;
                if written(meta.created().ok(), booted) == Written::BeforeBoot {
                    check_digest(&file, total, &digest)?;
                }
                std::fs::rename(&data, &target)?;
                sync_dir(dir)?;
                if read_back && total > 0 && total <= CACHE_BLOBS_UP_TO {
                    warm = Some(file);
                }
            }
            match std::fs::remove_dir_all(&upload_dir) {
                Ok(()) => Ok(warm),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(warm),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        if let Some(file) = warm {
            // The parts went to the disk with O_DIRECT, around the page cache, so the
            // first pull of a new blob (a publish fanning out to its consumers) would
            // read it off the disk; Distribution's buffered writes leave it cached.
            // Reading it back into the cache now, off the request's path, makes a pull
            // that comes a little later (after the manifest push) a warm one; one that
            // comes at once still reads the disk. Nothing waits for this.
            tokio::task::spawn_blocking(move || sys::read_ahead(&file, 0, total));
        }
        Ok(())
    }
}

/// A file being written from start to end, either through the page cache or with
/// `O_DIRECT` (Linux).
///
/// Through the page cache by default (`storage.cache_writes`): the first pull after a
/// push, what every publish fanning out to its consumers does, then reads memory, as
/// it does from Distribution, whose buffered writes leave a new blob cached. Each
/// part waits for its writeback before it is acknowledged ([`sys::write_back`]).
///
/// Why `O_DIRECT` can be asked for (`cache_writes = false`): on one benchmark machine
/// (docs/benchmarks.md) writing a blob through the page cache and then `fsync`ing it
/// ran at ~220 MB/s (~720 MB/s with early writeback), with two thirds of the server's
/// CPU time in the kernel copying into page-cache folios; the same bytes written with
/// `O_DIRECT` from an aligned buffer, then `fsync`ed, ran at ~1.2-1.5 GB/s. On the
/// machine of 2026-12-05, uploads through the cache ran at 0.73-1.31x those with
/// `O_DIRECT`. With `O_DIRECT`, a new blob is read back into the cache after its
/// commit, off the request's path (see `FsBlobStore::commit_upload`); a pull that
/// comes at once still reads the disk. Filesystems that refuse `O_DIRECT` (tmpfs,
/// some network filesystems) get the buffered path.
pub(super) struct BlobFile {
    file: std::fs::File,
    /// Aligned staging buffer, when the file was opened with `O_DIRECT`.
    direct: Option<AlignedBuf>,
    /// Where this writer started, and the end of what it was given so far.
    start: u64,
    end: u64,
    /// End of what early writeback was started for (page-cache path).
    handed: u64,
    /// Written through the page cache by choice (`storage.cache_writes`) on a
    /// filesystem that does `O_DIRECT`: a part then waits for its pages to be written
    /// back, which leaves the machine's memory as an `O_DIRECT` write would, instead
    /// of syncing the file (see [`Written`]).
    waits_writeback: bool,
}

/// A heap buffer of [`DIRECT_CHUNK`] bytes whose start is [`sys::DIRECT_ALIGN`]-aligned.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    filled: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        let raw = vec![0u8; DIRECT_CHUNK + sys::DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(sys::DIRECT_ALIGN);
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
        let len = self.filled.next_multiple_of(sys::DIRECT_ALIGN);
        self.raw[self.start + self.filled..self.start + len].fill(0);
        &self.raw[self.start..self.start + len]
    }
}

/// Set when a part write's future is done or dropped: its writing thread, if it only
/// now gets the upload's file, must not touch it.
#[derive(Default)]
struct Gone(Arc<AtomicBool>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What the request side of a part write hands its writing thread.
enum Feed {
    /// Bytes to write, holding their share of the queue's budget until written.
    Bytes(Bytes, OwnedSemaphorePermit),
    /// The body ended cleanly: finish the part. A writer whose queue closes without
    /// this puts the file back as it was before the part.
    End,
}

impl BlobFile {
    /// Opens (creating) `path` to write from `offset` on: what lies past `offset` is
    /// cut off first, what lies before it is kept.
    #[cfg(test)]
    pub(super) fn open_at(path: &Path, offset: u64) -> std::io::Result<Self> {
        let (file, direct) = Self::open_locked(path, false)?;
        Self::start(file, offset, direct, false)
    }

    /// Opens (creating) `path` for writing, with `O_DIRECT` where the filesystem
    /// does it and `cached` does not ask for the page cache (and then a staging
    /// buffer), and locks it (`flock`, waiting) until the
    /// file is closed.
    ///
    /// Writers of one upload already serialize on the upload's lock, but a request
    /// dropped mid-part (its client went away) releases that lock while its writing
    /// thread still drains its queue and puts the file back; the next writer, or the
    /// commit, waits here for that, which takes no longer than writing the queue (no
    /// network wait). A writing thread that only gets here after its request was
    /// dropped must leave the file alone (see `Gone`).
    fn open_locked(
        path: &Path,
        cached: bool,
    ) -> std::io::Result<(std::fs::File, Option<AlignedBuf>)> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        let direct = if cached {
            None
        } else {
            sys::open_direct(&options, path)?
        };
        let (file, direct) = match direct {
            Some(file) => (file, Some(AlignedBuf::new())),
            // Asked for, or the filesystem does not do O_DIRECT: through the page cache.
            None => (options.open(path)?, None),
        };
        sys::lock_exclusive(&file, true)?;
        Ok((file, direct))
    }

    /// Writes what `rx` brings until [`Feed::End`], then finishes (see [`Written`]
    /// for whether it syncs). Returns the bytes written, or the first failure; on a
    /// failure the caller puts the file back ([`put_back`](Self::put_back)).
    fn fill(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Feed>,
        booted: Option<SystemTime>,
    ) -> Result<u64, StorageError> {
        let created = self.file.metadata()?.created().ok();
        let unsynced = self.direct.is_some() || self.waits_writeback;
        let sync = !unsynced || written(created, booted) != Written::SinceBoot;
        while let Some(feed) = rx.blocking_recv() {
            match feed {
                Feed::Bytes(chunk, _permit) => self.write(&chunk)?,
                Feed::End => return Ok(self.finish(sync)?),
            }
        }
        Err(StorageError::Other(
            "the part's request ended before its body did".into(),
        ))
    }

    /// Cuts the file back to where this writer started, dropping what it wrote: a
    /// failed part leaves no bytes behind (they would fill a full disk further, and
    /// they are not the upload's). Failing to is only logged: the next part's writer
    /// and the commit cut the file to the upload's length anyway.
    pub(super) fn put_back(&mut self) {
        if let Some(buf) = self.direct.as_mut() {
            buf.filled = 0;
        }
        if let Err(e) = self.file.set_len(self.start) {
            tracing::warn!(error = %e, "could not cut an upload's file back after a failed part");
        }
    }

    /// Starts writing at `offset` of `file` as [`open_locked`](Self::open_locked)
    /// opened it; `cached`: through the page cache by choice.
    fn start(
        mut file: std::fs::File,
        offset: u64,
        mut direct: Option<AlignedBuf>,
        cached: bool,
    ) -> std::io::Result<Self> {
        use std::io::Seek;
        // Shorter than the parts recorded before this one: bytes were lost (every
        // part is fsync'd before it is recorded, so only outside hands do this).
        // Extending the file would fill the gap with zeros; refuse instead.
        let len = file.metadata()?.len();
        if len < offset {
            return Err(std::io::Error::other(format!(
                "upload file holds {len} bytes, the parts before this one {offset}"
            )));
        }
        if len > offset {
            file.set_len(offset)?;
        }
        let mut at = offset;
        let waits_writeback = cached && direct.is_none();
        if let Some(buf) = direct.as_mut() {
            // O_DIRECT writes whole aligned blocks: start at the block holding `offset`,
            // with the bytes of it that are already there.
            let head = (offset % sys::DIRECT_ALIGN as u64) as usize;
            at = offset - head as u64;
            if head > 0 {
                let n = sys::read_at(&file, &mut buf.space()[..sys::DIRECT_ALIGN], at)?;
                if n != head {
                    return Err(std::io::Error::other(format!(
                        "read {n} bytes of the last block, expected {head}"
                    )));
                }
                buf.filled = head;
            }
        }
        file.seek(std::io::SeekFrom::Start(at))?;
        Ok(BlobFile {
            file,
            direct,
            start: offset,
            end: offset,
            handed: offset,
            waits_writeback,
        })
    }

    pub(super) fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        self.end += bytes.len() as u64;
        let Some(buf) = self.direct.as_mut() else {
            self.file.write_all(bytes)?;
            if self.end - self.handed >= WRITEBACK_STEP {
                sys::start_writeback(&self.file, self.handed, self.end - self.handed);
                self.handed = self.end;
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

    /// Writes what is left, makes the file durable if `sync` says so (see [`Written`]),
    /// and returns the bytes this writer was given.
    pub(super) fn finish(&mut self, sync: bool) -> std::io::Result<u64> {
        if let Some(buf) = self.direct.as_mut()
            && buf.filled > 0
        {
            // The last block goes out padded with zeros, then the file is cut to size.
            let padded = buf.filled % sys::DIRECT_ALIGN != 0;
            self.file.write_all(buf.padded())?;
            if padded {
                self.file.set_len(self.end)?;
            }
        }
        if sync {
            self.file.sync_all()?;
        } else if self.waits_writeback {
            sys::write_back(&self.file, self.start, self.end - self.start)?;
        }
        Ok(self.end - self.start)
    }
}

/// Reads back the first `len` bytes of an upload's data `file` and checks that they
/// hash to `digest`: [`StorageError::Lost`] if not (see [`Written::BeforeBoot`]).
fn check_digest(file: &std::fs::File, len: u64, digest: &Digest) -> Result<(), StorageError> {
    let mut hasher = digest.algorithm().hasher();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(READ_CHUNK as u64) as usize;
        sys::read_exact_at(file, &mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    let actual = hasher.finish();
    if &actual != digest {
        return Err(StorageError::Lost(format!(
            "the upload's file, written before the machine restarted, now hashes to \
             {actual}, not {digest}: writes were lost; push the blob again"
        )));
    }
    Ok(())
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

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use futures_util::StreamExt;
    use uuid::Uuid;

    use super::*;
    use crate::digest::Algorithm;
    use crate::storage::BlobStore;

    fn one_chunk(bytes: &[u8]) -> ByteStream {
        futures_util::stream::iter([Ok(Bytes::copy_from_slice(bytes))]).boxed()
    }

    /// The whole of blob `digest`, read back through the store.
    async fn read_blob(store: &FsBlobStore, digest: &Digest) -> Vec<u8> {
        let mut back = Vec::new();
        let mut s = store.get(digest, None).await.unwrap();
        while let Some(chunk) = s.next().await {
            back.extend_from_slice(&chunk.unwrap());
        }
        back
    }

    /// A store that takes the machine to have booted at `booted`; `None` where the
    /// temporary directory's filesystem keeps no birth times (nothing to test there).
    fn store_booted_at(dir: &Path, booted: SystemTime, cached: bool) -> Option<FsBlobStore> {
        std::fs::metadata(dir).ok()?.created().ok()?;
        let mut store = FsBlobStore::open(dir).unwrap().with_cached_writes(cached);
        store.booted = Some(booted);
        Some(store)
    }

    /// Two chunked parts, then one byte of the upload's file changed under the store,
    /// as a crash that lost a write would leave it.
    async fn upload_then_damage(store: &FsBlobStore, bytes: &[u8]) -> (Uuid, Vec<PartInfo>) {
        let id = Uuid::new_v4();
        let half = bytes.len() / 2;
        let first = store.put_part(id, 0, 0, one_chunk(&bytes[..half])).await;
        let second = store.put_part(id, 1, half as u64, one_chunk(&bytes[half..]));
        let parts = vec![first.unwrap(), second.await.unwrap()];
        let data = std::fs::OpenOptions::new()
            .write(true)
            .open(store.data_path(id))
            .unwrap();
        std::os::unix::fs::FileExt::write_at(&data, &[bytes[half] ^ 1], half as u64).unwrap();
        (id, parts)
    }

    #[test]
    fn parts_go_unsynced_only_in_files_born_since_boot() {
        let boot = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |s: u64| Some(boot + Duration::from_secs(s));
        assert_eq!(written(at(60), Some(boot)), Written::SinceBoot);
        assert_eq!(written(at(1), Some(boot)), Written::BeforeBoot);
        assert_eq!(
            written(Some(boot - Duration::from_secs(60)), Some(boot)),
            Written::BeforeBoot
        );
        assert_eq!(written(None, Some(boot)), Written::Synced);
        assert_eq!(written(at(60), None), Written::Synced);
    }

    /// An upload file from before the machine's boot is read back at commit, and one
    /// that lost bytes never becomes a blob; an intact one does.
    #[tokio::test]
    async fn a_commit_checks_an_upload_written_before_boot() {
        for cached in [true, false] {
            a_commit_checks_an_upload_written_before_boot_with(cached).await;
        }
    }

    async fn a_commit_checks_an_upload_written_before_boot_with(cached: bool) {
        let dir = tempfile::tempdir().unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        let Some(store) = store_booted_at(dir.path(), later, cached) else {
            eprintln!("no file birth times here: every part is synced, nothing to check");
            return;
        };
        let bytes: Vec<u8> = (0..3 * DIRECT_CHUNK as u32 + 5)
            .map(|i| (i % 253) as u8)
            .collect();
        let digest = Digest::of(Algorithm::Sha256, &bytes);

        let (id, parts) = upload_then_damage(&store, &bytes).await;
        let err = store.commit(id, &parts, &digest).await.unwrap_err();
        assert!(matches!(err, StorageError::Lost(_)), "{err:?}");
        assert_eq!(
            store.stat(&digest).await.unwrap(),
            None,
            "a damaged blob became visible"
        );

        let id = Uuid::new_v4();
        let part = store.put_part(id, 0, 0, one_chunk(&bytes)).await.unwrap();
        store.commit(id, &[part], &digest).await.unwrap();
        let stored = read_blob(&store, &digest).await;
        assert!(stored == bytes, "the intact upload was stored as written");
    }

    /// The counterpart: a file born since boot is not read back (a process that dies
    /// loses none of its written parts; only a machine crash could, which a later boot
    /// time shows), so the commit costs one sync and no second pass over the bytes.
    #[tokio::test]
    async fn a_commit_trusts_an_upload_written_since_boot() {
        for cached in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let earlier = SystemTime::now() - Duration::from_secs(3600);
            let Some(store) = store_booted_at(dir.path(), earlier, cached) else {
                return;
            };
            a_commit_trusts_with(&store).await;
        }
    }

    async fn a_commit_trusts_with(store: &FsBlobStore) {
        let bytes: Vec<u8> = (0..DIRECT_CHUNK as u32 + 5)
            .map(|i| (i % 251) as u8)
            .collect();
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let (id, parts) = upload_then_damage(store, &bytes).await;
        store.commit(id, &parts, &digest).await.unwrap();
        assert_eq!(store.stat(&digest).await.unwrap(), Some(bytes.len() as u64));
    }

    /// A new blob is read back into the page cache after its commit, so that the
    /// first pull after a push is served from memory, as it would be had the parts
    /// gone through the cache: where the parts went around it (`O_DIRECT`), nothing
    /// of the blob is cached before the commit.
    #[tokio::test]
    async fn a_committed_blob_comes_into_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path())
            .unwrap()
            .with_cached_writes(false);
        let bytes: Vec<u8> = (0..4 * DIRECT_CHUNK as u32 + 11)
            .map(|i| (i % 241) as u8)
            .collect();
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let id = Uuid::new_v4();
        let part = store.put_part(id, 0, 0, one_chunk(&bytes)).await.unwrap();
        let len = bytes.len() as u64;
        let data = std::fs::File::open(store.data_path(id)).unwrap();
        let Some(cached) = sys::all_cached(&data, 0, len) else {
            eprintln!("no cachestat here: nothing to check");
            return;
        };
        if cached {
            eprintln!("the parts went through the page cache here: nothing to check");
            return;
        }
        drop(data);
        store.commit(id, &[part], &digest).await.unwrap();
        let blob = std::fs::File::open(store.path(&StorageKey::Blob(digest))).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while sys::all_cached(&blob, 0, len) != Some(true) {
            assert!(
                std::time::Instant::now() < deadline,
                "the new blob was not read into the page cache"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// With `storage.cache_writes`, a blob is in the page cache as soon as its commit
    /// returns, with no read of the disk, and a part has been written back when it
    /// returns (nothing of it is dirty).
    #[tokio::test]
    async fn cached_writes_leave_the_blob_in_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path())
            .unwrap()
            .with_cached_writes(true);
        let bytes: Vec<u8> = (0..3 * DIRECT_CHUNK as u32 + 7)
            .map(|i| (i % 239) as u8)
            .collect();
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let id = Uuid::new_v4();
        let half = bytes.len() / 2;
        let first = store.put_part(id, 0, 0, one_chunk(&bytes[..half])).await;
        let first = first.unwrap();
        let data = std::fs::File::open(store.data_path(id)).unwrap();
        if let Some(dirty) = sys::dirty_pages(&data, 0, half as u64) {
            assert_eq!(
                dirty, 0,
                "a part returned before its pages were written back"
            );
        }
        drop(data);
        let second = store.put_part(id, 1, half as u64, one_chunk(&bytes[half..]));
        let parts = [first, second.await.unwrap()];
        store.commit(id, &parts, &digest).await.unwrap();
        let blob = std::fs::File::open(store.path(&StorageKey::Blob(digest.clone()))).unwrap();
        let len = bytes.len() as u64;
        if let Some(cached) = sys::all_cached(&blob, 0, len) {
            assert!(cached, "the blob was written around the page cache");
        }
        let stored = read_blob(&store, &digest).await;
        assert!(stored == bytes, "the blob was stored as written");
    }

    /// `bytes` in chunks of 64 KiB, then a failure, as when the client goes away.
    fn failing_after(bytes: &[u8]) -> ByteStream {
        let mut chunks: Vec<std::io::Result<Bytes>> = bytes
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        chunks.push(Err(std::io::Error::other("client went away")));
        futures_util::stream::iter(chunks).boxed()
    }

    /// A part whose body fails leaves the upload's file as it was before the part,
    /// on and off block boundaries and past whole O_DIRECT buffers, written through
    /// the page cache or around it: nothing of it stays on the disk (which may be
    /// full), and the upload resumes from there.
    #[tokio::test]
    async fn a_failed_part_leaves_the_file_as_it_was() {
        for cached in [true, false] {
            a_failed_part_leaves_the_file_as_it_was_with(cached).await;
        }
    }

    async fn a_failed_part_leaves_the_file_as_it_was_with(cached: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path())
            .unwrap()
            .with_cached_writes(cached);
        let bytes: Vec<u8> = (0..3 * DIRECT_CHUNK as u32 + 77)
            .map(|i| (i % 249) as u8)
            .collect();
        for first in [0, 1, sys::DIRECT_ALIGN, 5_000] {
            let id = Uuid::new_v4();
            let data = store.data_path(id);
            let part = store.put_part(id, 0, 0, one_chunk(&bytes[..first])).await;
            let mut parts = vec![part.unwrap()];
            for sent in [1, sys::DIRECT_ALIGN + 3, 2 * DIRECT_CHUNK + 9] {
                let failed = store
                    .put_part(
                        id,
                        1,
                        first as u64,
                        failing_after(&bytes[first..first + sent]),
                    )
                    .await;
                assert!(matches!(failed, Err(StorageError::Body(_))), "{failed:?}");
                let len = std::fs::metadata(&data).map_or(0, |m| m.len());
                assert_eq!(
                    len, first as u64,
                    "after {first} bytes and {sent} more failed"
                );
            }
            parts.push(
                store
                    .put_part(id, 1, first as u64, one_chunk(&bytes[first..]))
                    .await
                    .unwrap(),
            );
            let digest = Digest::of(Algorithm::Sha256, &bytes);
            store.commit(id, &parts, &digest).await.unwrap();
            let back = read_blob(&store, &digest).await;
            assert!(back == bytes, "resumed after {first} bytes");
            store.delete(&digest).await.unwrap();
        }
    }

    /// A part whose request is dropped mid-body (its client went away) has its
    /// file put back too, before the next part of the upload is written: the next
    /// writer waits for the dropped one's thread, which holds the file's lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_part_is_put_back_before_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..DIRECT_CHUNK as u32 + 4099)
            .map(|i| (i % 241) as u8)
            .collect();
        let id = Uuid::new_v4();
        let head = 10;
        let first = store
            .put_part(id, 0, 0, one_chunk(&bytes[..head]))
            .await
            .unwrap();
        let (taken, started) = tokio::sync::oneshot::channel();
        let stalled = futures_util::stream::once(async move {
            let _ = taken.send(());
            Ok(Bytes::from(vec![0xAB; DIRECT_CHUNK + 1]))
        })
        .chain(futures_util::stream::pending())
        .boxed();
        let dropped = {
            let store = store.clone();
            tokio::spawn(async move { store.put_part(id, 1, head as u64, stalled).await })
        };
        started.await.unwrap();
        dropped.abort();
        assert!(dropped.await.unwrap_err().is_cancelled());
        let second = store
            .put_part(id, 1, head as u64, one_chunk(&bytes[head..]))
            .await
            .unwrap();
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        store.commit(id, &[first, second], &digest).await.unwrap();
        let back = read_blob(&store, &digest).await;
        assert!(back == bytes, "the dropped part's bytes got into the blob");
    }

    /// Writes `bytes` to `path` as parts cut at `cuts`, each part fed in uneven pieces,
    /// through O_DIRECT (where the temp directory's filesystem allows it) or forced
    /// through the page cache; leaves a stale tail after each part first, as a failed
    /// write would.
    pub(in crate::storage::fs) fn write_parts(
        path: &Path,
        bytes: &[u8],
        cuts: &[usize],
        direct: bool,
    ) {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(bytes.len());
        for w in bounds.windows(2) {
            let (from, to) = (w[0], w[1]);
            if std::fs::metadata(path).is_ok() {
                let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                f.set_len(from as u64 + 777).unwrap(); // garbage past the offset
            }
            let mut file = BlobFile::open_at(path, from as u64).unwrap();
            if !direct {
                let plain = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .unwrap();
                file = BlobFile::start(plain, from as u64, None, false).unwrap();
            }
            for piece in bytes[from..to].chunks(3_001) {
                file.write(piece).unwrap();
            }
            assert_eq!(file.finish(true).unwrap(), (to - from) as u64);
        }
    }

    /// Both write paths, at offsets on and off block and buffer boundaries, leave
    /// exactly the bytes given.
    #[test]
    fn blob_file_writes_exact_bytes_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(2 * DIRECT_CHUNK + 5_000))
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        let cut_sets: [&[usize]; 5] = [
            &[],
            &[1],
            &[
                sys::DIRECT_ALIGN,
                sys::DIRECT_ALIGN + 1,
                3 * sys::DIRECT_ALIGN - 1,
            ],
            &[DIRECT_CHUNK - 1, DIRECT_CHUNK + 4_097],
            &[10, 10, 2 * DIRECT_CHUNK],
        ];
        for direct in [true, false] {
            for (k, cuts) in cut_sets.iter().enumerate() {
                for len in [0, 1, sys::DIRECT_ALIGN + 3, bytes.len()] {
                    let cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c <= len).collect();
                    let path = dir.path().join(format!("{direct}-{k}-{len}"));
                    write_parts(&path, &bytes[..len], &cuts, direct);
                    let back = std::fs::read(&path).unwrap();
                    assert!(
                        back == bytes[..len],
                        "direct {direct} cuts {cuts:?} len {len}"
                    );
                }
            }
        }
    }
}
