//! Filesystem backend: blobs and upload parts as files under one root directory.
//!
//! Written directly on `std::fs` rather than `object_store::LocalFileSystem`, because a
//! registry needs what that driver lacks: `fsync` before a blob is declared durable,
//! atomic `rename` into place, in-kernel concatenation of parts (`copy_file_range`),
//! and plain file handles for serving ranges.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use uuid::Uuid;

use super::{BlobStore, ByteBudget, ByteStream, PartInfo, StorageError, StorageKey, UploadGuard};
use crate::digest::Digest;

/// How the parts in an upload's data file were made to last, from when the file was
/// created (its birth time) and when the machine booted.
///
/// A part written with `O_DIRECT` has left the machine's memory when the write
/// returns: it survives the process, and only a crash of the machine can lose it from
/// the disk's own write cache. So such parts of a file created since this boot need
/// no `fsync` each: [`FsBlobStore::commit`] syncs the file once before the rename. On
/// one benchmark machine a flush took 10-14 ms, and an `fsync` per 8 MiB PATCH held
/// chunked uploads to 77-83 % of monolithic ones (docs/benchmarks.md). A file created
/// before this boot may have lost unsynced parts in the crash, so the commit reads it
/// back and checks it against the digest. Where either time is unknown, and for
/// parts written through the page cache (a filesystem without `O_DIRECT`, whose volume
/// could be moved to another machine after a crash), every part is synced as it is
/// written, as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Every part was synced when written.
    Synced,
    /// Unsynced parts, all written since this boot.
    SinceBoot,
    /// Created before this boot: may hold unsynced parts a crash lost.
    BeforeBoot,
}

/// See [`Written`]. A file born less than [`BOOT_MARGIN`] after the recorded boot time
/// counts as older: the boot time is whole seconds, and nothing of ours runs that soon.
fn written(created: Option<SystemTime>, booted: Option<SystemTime>) -> Written {
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
fn boot_time() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Reads of one download in flight: O_DIRECT reads wait for the disk, and with two
/// of READ_CHUNK a cold 256 MiB blob came at ~1.2 GB/s.
const READS_IN_FLIGHT: usize = 4;

/// Size of one read when streaming a blob out (READS_IN_FLIGHT at a time).
/// (256 KiB reads held 1 GiB downloads to ~1.5 GB/s, 2 MiB reads reach loopback speed.)
const READ_CHUNK: usize = 2 * 1024 * 1024;

/// Name of an upload's data file in its directory.
const DATA_FILE: &str = "data";

/// Blobs stored as files under `root`.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
    /// When this machine booted (see [`Written`]); `None` where that is unknown.
    booted: Option<SystemTime>,
    /// Whether blobs may be opened for serving on the request's thread when the kernel
    /// has their path in memory (see [`ServedFile::open_cached`]): only on local
    /// filesystems, where opening a file whose path is cached cannot wait.
    opens_inline: bool,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("uploads"))?;
        let opens_inline = is_local_filesystem(&root);
        Ok(FsBlobStore {
            root,
            booted: boot_time(),
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

    /// A blob, whole or `range` of it.
    async fn open_range(
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
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Other(format!("blocking task failed: {e}")))?
}

/// Bytes of a request body queued for the writing thread at most.
const WRITE_QUEUE_BYTES: usize = 8 * 1024 * 1024;

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
    /// Where this writer started, and the end of what it was given so far.
    start: u64,
    end: u64,
    /// End of what early writeback was started for (page-cache path).
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

/// Opens `path` as `options` say, with `O_DIRECT` added; `None` where the filesystem
/// (or the platform) does not do `O_DIRECT`.
fn open_direct(
    options: &std::fs::OpenOptions,
    path: &Path,
) -> std::io::Result<Option<std::fs::File>> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match options.clone().custom_flags(libc::O_DIRECT).open(path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (options, path);
        Ok(None)
    }
}

impl BlobFile {
    /// Opens (creating) `path` to write from `offset` on: what lies past `offset` is
    /// cut off first, what lies before it is kept.
    fn open_at(path: &Path, offset: u64) -> std::io::Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        match open_direct(&options, path)? {
            Some(file) => Self::start(file, offset, Some(AlignedBuf::new())),
            // The filesystem does not do O_DIRECT: write through the page cache.
            None => Self::start(options.open(path)?, offset, None),
        }
    }

    fn start(
        mut file: std::fs::File,
        offset: u64,
        mut direct: Option<AlignedBuf>,
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
        if let Some(buf) = direct.as_mut() {
            // O_DIRECT writes whole aligned blocks: start at the block holding `offset`,
            // with the bytes of it that are already there.
            let head = (offset % DIRECT_ALIGN as u64) as usize;
            at = offset - head as u64;
            if head > 0 {
                let n = read_at(&file, &mut buf.space()[..DIRECT_ALIGN], at)?;
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
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        self.end += bytes.len() as u64;
        let Some(buf) = self.direct.as_mut() else {
            self.file.write_all(bytes)?;
            if self.end - self.handed >= WRITEBACK_STEP {
                start_writeback(&self.file, self.handed, self.end - self.handed);
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
    fn finish(mut self, sync: bool) -> std::io::Result<u64> {
        if let Some(buf) = self.direct.as_mut()
            && buf.filled > 0
        {
            // The last block goes out padded with zeros, then the file is cut to size.
            let padded = buf.filled % DIRECT_ALIGN != 0;
            self.file.write_all(buf.padded())?;
            if padded {
                self.file.set_len(self.end)?;
            }
        }
        if sync {
            self.file.sync_all()?;
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
        read_exact_at(file, &mut buf[..n], at)?;
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

/// Takes an exclusive `flock` on `file`: with `wait`, waiting for it (a blocking
/// call); without, only if no one holds it. Returns whether it was taken.
#[cfg(unix)]
fn lock_exclusive(file: &std::fs::File, wait: bool) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock only reads its integer arguments; the descriptor is valid for
        // as long as `file` is borrowed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Without `flock`, one process per data directory is assumed and nothing is locked.
#[cfg(not(unix))]
fn lock_exclusive(_file: &std::fs::File, _wait: bool) -> std::io::Result<bool> {
    Ok(true)
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

/// Maps an error opening `path`: a missing file is [`StorageError::NotFound`].
fn not_found_at(path: &Path) -> impl Fn(std::io::Error) -> StorageError + Copy + '_ {
    move |e| match e.kind() {
        std::io::ErrorKind::NotFound => StorageError::NotFound(path.display().to_string()),
        _ => e.into(),
    }
}

/// A blob opened for serving: the usual handle, and (Linux, where the filesystem
/// allows it) an `O_DIRECT` one for what the page cache does not hold.
struct ServedFile {
    file: Arc<std::fs::File>,
    direct: Option<std::fs::File>,
    /// Length of the file when it was opened.
    size: u64,
}

impl ServedFile {
    /// Opens `path` for serving; a missing file is [`StorageError::NotFound`].
    fn open(path: &Path) -> Result<Self, StorageError> {
        let not_found = not_found_at(path);
        let file = std::fs::File::open(path).map_err(not_found)?;
        let direct =
            open_direct(std::fs::OpenOptions::new().read(true), path).map_err(not_found)?;
        let size = file.metadata()?.len();
        Ok(ServedFile {
            file: Arc::new(file),
            direct,
            size,
        })
    }

    /// [`open`](Self::open) without blocking: `None` unless the kernel can resolve
    /// `path` from its caches alone (`openat2` with `RESOLVE_CACHED`, Linux 5.12),
    /// so that nothing waits for the disk. Only for local filesystems, where opening
    /// and `fstat` then need nothing more.
    #[cfg(target_os = "linux")]
    fn open_cached(path: &Path) -> Option<Result<Self, StorageError>> {
        let not_found = not_found_at(path);
        let file = match open_cached(path, libc::O_RDONLY)? {
            Ok(file) => file,
            Err(e) => return Some(Err(not_found(e))),
        };
        let direct = match open_cached(path, libc::O_RDONLY | libc::O_DIRECT)? {
            Ok(file) => Some(file),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
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

    #[cfg(not(target_os = "linux"))]
    fn open_cached(_path: &Path) -> Option<Result<Self, StorageError>> {
        None
    }

    /// The `n` bytes at `offset`: from the page cache when it holds them all, else
    /// (`cached`, from [`all_cached`], is `Some(false)`) read from disk with `O_DIRECT`. Blobs are written with `O_DIRECT` (see
    /// [`BlobFile`]), so a blob pushed and then pulled is not cached, and buffered
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
                read_ahead(&self.file, offset, n as u64);
            }
            return Ok(bytes);
        }
        read_ahead(
            &self.file,
            offset + n as u64,
            (end - offset - n as u64).min(READ_AHEAD),
        );
        let mut buf = vec![0u8; n];
        read_exact_at(&self.file, &mut buf, offset)?;
        Ok(Bytes::from(buf))
    }
}

/// Opens `path` (read-only, with `flags` added) if every step of its path is in the
/// kernel's dentry cache; `None` where one is not (`EAGAIN`) or `openat2` is missing
/// or refused (`ENOSYS`, `EPERM` under some seccomp filters).
#[cfg(target_os = "linux")]
fn open_cached(path: &Path, flags: libc::c_int) -> Option<std::io::Result<std::fs::File>> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: open_how is plain integers, for which all zeros is valid (and what the
    // kernel expects of the fields not set).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_CACHED;
    // SAFETY: the path is a live NUL-terminated string and `how` a live open_how of
    // the size passed, both for the call's duration.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just opened for us and no one else owns.
        return Some(Ok(unsafe { std::fs::File::from_raw_fd(fd as libc::c_int) }));
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::ENOSYS | libc::EPERM) => None,
        _ => Some(Err(e)),
    }
}

/// Whether `root` is on a filesystem kept on this machine's own disks or in its
/// memory (ext4, XFS, Btrfs, F2FS, ZFS, tmpfs, overlayfs), by `statfs`. Network
/// filesystems are not: opening a file there may ask the server.
#[cfg(target_os = "linux")]
fn is_local_filesystem(root: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const LOCAL: [i64; 7] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // XFS
        0x9123_683E, // Btrfs
        0xF2F5_2010, // F2FS
        0x2FC1_2FC1, // ZFS
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs
    ];
    let Ok(path) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain integers, for which all zeros is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a live NUL-terminated path and a live statfs to fill, for the call.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    LOCAL.contains(&(st.f_type as i64))
}

#[cfg(not(target_os = "linux"))]
fn is_local_filesystem(_root: &Path) -> bool {
    false
}

/// Whether the page cache holds every page of `len` bytes of `file` at `offset`, by
/// the `cachestat` system call (Linux 6.5), which looks without reading anything;
/// `None` where the call is missing or fails. Reads then go through the page cache
/// (with readahead), as they would without `O_DIRECT`.
#[cfg(target_os = "linux")]
fn all_cached(file: &std::fs::File, offset: u64, len: u64) -> Option<bool> {
    use std::os::fd::AsRawFd;
    /// `struct cachestat_range` of <linux/mman.h>.
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    /// `struct cachestat` of <linux/mman.h>.
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    /// Its number in the table shared by every architecture since Linux 5.1.
    const SYS_CACHESTAT: libc::c_long = 451;
    if len == 0 {
        return Some(true);
    }
    // SAFETY: sysconf only reads its argument.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => return None,
    };
    let range = Range { off: offset, len };
    let mut stat = Stat::default();
    // SAFETY: both pointers are to live, properly laid out structs for the call's
    // duration; the descriptor is valid for as long as `file` is borrowed.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    if r != 0 {
        return None;
    }
    let pages = (offset + len).div_ceil(page) - offset / page;
    Some(stat.nr_cache >= pages)
}

#[cfg(not(target_os = "linux"))]
fn all_cached(_file: &std::fs::File, _offset: u64, _len: u64) -> Option<bool> {
    None
}

/// The `n` bytes at `offset` through an `O_DIRECT` handle: whole aligned blocks into
/// an aligned buffer, handed on as the slice that was asked for (no copy).
fn read_direct(direct: &std::fs::File, offset: u64, n: usize) -> std::io::Result<Bytes> {
    let lead = (offset % DIRECT_ALIGN as u64) as usize;
    let from = offset - lead as u64;
    let want = lead + n;
    let span = want.next_multiple_of(DIRECT_ALIGN);
    let mut raw = vec![0u8; span + DIRECT_ALIGN];
    let base = raw.as_ptr().align_offset(DIRECT_ALIGN);
    let mut got = 0usize;
    while got < want {
        match read_at(direct, &mut raw[base + got..base + span], from + got as u64)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            k => got += k,
        }
        // A short read that is not block-aligned is the end of the file.
        if !got.is_multiple_of(DIRECT_ALIGN) && got < want {
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
                let cached = all_cached(&file.file, offset, n as u64);
                tokio::task::spawn_blocking(move || file.read(offset, n, end, cached))
                    .await
                    .map_err(std::io::Error::other)?
            }
        })
        .buffered(READS_IN_FLIGHT)
        .boxed()
}

/// Largest blob whose cold reads also fill the page cache (see [`ServedFile::read`]).
const CACHE_BLOBS_UP_TO: u64 = 1024 * 1024 * 1024;

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
        match read_at(file, buf, offset)? {
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
        _number: u32,
        offset: u64,
        mut body: ByteStream,
    ) -> Result<PartInfo, StorageError> {
        // Every part goes into the upload's one data file at its offset, so that the
        // commit is a rename: joining part files meant writing every byte twice (a
        // chunked 1 GiB upload ran at 40 % of a monolithic one). Writers of a shared
        // upload hold lock_upload, so no two write the file at once.
        let path = self.data_path(upload);
        // Writes happen on a blocking thread while this task keeps reading the request
        // body (and the caller's thread hashes it). The queue holds up to
        // WRITE_QUEUE_BYTES, enough to keep reading the socket while an O_DIRECT
        // write of DIRECT_CHUNK waits for the disk (a queue of 32 chunks stalled it:
        // 64 MiB uploads 720 -> 809 MB/s), and bounded in bytes, not chunks, so that
        // memory stays flat whatever the chunk sizes.
        let budget = ByteBudget::new(WRITE_QUEUE_BYTES);
        let (tx, mut rx) = mpsc::unbounded_channel::<(Bytes, OwnedSemaphorePermit)>();
        let booted = self.booted;
        let writer = tokio::task::spawn_blocking(move || -> Result<u64, StorageError> {
            std::fs::create_dir_all(path.parent().expect("part has a parent"))?;
            let mut file = BlobFile::open_at(&path, offset)?;
            let created = file.file.metadata()?.created().ok();
            let sync = file.direct.is_none() || written(created, booted) != Written::SinceBoot;
            while let Some((chunk, _permit)) = rx.blocking_recv() {
                file.write(&chunk)?;
            }
            Ok(file.finish(sync)?)
        });
        let mut body_error = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    let permit = budget.take(chunk.len()).await;
                    if tx.send((chunk, permit)).is_err() {
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
        let size = written?;
        Ok(PartInfo {
            id: format!("{offset}+{size}"),
            size,
        })
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
                if lock_exclusive(&handle, false)? {
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
            lock_exclusive(&handle, true)?;
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
        let target = self.path(&StorageKey::Blob(digest.clone()));
        let upload_dir = self.path(&StorageKey::Upload(upload));
        let data = self.data_path(upload);
        let total: u64 = parts.iter().map(|p| p.size).sum();
        let booted = self.booted;
        let digest = digest.clone();
        blocking(move || {
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
        // The id is "<offset>+<size>" (see put_part).
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
    use crate::digest::Algorithm;

    fn one_chunk(bytes: &[u8]) -> ByteStream {
        futures_util::stream::iter([Ok(Bytes::copy_from_slice(bytes))]).boxed()
    }

    /// A store that takes the machine to have booted at `booted`; `None` where the
    /// temporary directory's filesystem keeps no birth times (nothing to test there).
    fn store_booted_at(dir: &Path, booted: SystemTime) -> Option<FsBlobStore> {
        std::fs::metadata(dir).ok()?.created().ok()?;
        let mut store = FsBlobStore::open(dir).unwrap();
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

    /// A blob whose path the kernel has in memory opens on the calling thread (Linux
    /// 5.12 or later), whole and with its size; a missing one is never opened.
    #[cfg(target_os = "linux")]
    #[test]
    fn blobs_with_cached_paths_open_on_the_calling_thread() {
        assert!(
            !is_local_filesystem(Path::new("/proc")),
            "procfs is no disk"
        );
        let dir = tempfile::tempdir().unwrap();
        if !is_local_filesystem(dir.path()) {
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
        read_exact_at(&served.file, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"twelve bytes");
        match ServedFile::open_cached(&dir.path().join("missing")) {
            None | Some(Err(StorageError::NotFound(_))) => {}
            Some(Ok(_)) => panic!("opened a file that does not exist"),
            Some(Err(e)) => panic!("{e:?}"),
        }
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
        let dir = tempfile::tempdir().unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        let Some(store) = store_booted_at(dir.path(), later) else {
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
        let mut stored = Vec::new();
        let mut s = store.get(&digest, None).await.unwrap();
        while let Some(chunk) = s.next().await {
            stored.extend_from_slice(&chunk.unwrap());
        }
        assert!(stored == bytes, "the intact upload was stored as written");
    }

    /// The counterpart: a file born since boot is not read back (a process that dies
    /// loses none of its written parts; only a machine crash could, which a later boot
    /// time shows), so the commit costs one sync and no second pass over the bytes.
    #[tokio::test]
    async fn a_commit_trusts_an_upload_written_since_boot() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = SystemTime::now() - Duration::from_secs(3600);
        let Some(store) = store_booted_at(dir.path(), earlier) else {
            return;
        };
        let bytes: Vec<u8> = (0..DIRECT_CHUNK as u32 + 5)
            .map(|i| (i % 251) as u8)
            .collect();
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let (id, parts) = upload_then_damage(&store, &bytes).await;
        store.commit(id, &parts, &digest).await.unwrap();
        assert_eq!(store.stat(&digest).await.unwrap(), Some(bytes.len() as u64));
    }

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

    /// Writes `bytes` to `path` as parts cut at `cuts`, each part fed in uneven pieces,
    /// through O_DIRECT (where the temp directory's filesystem allows it) or forced
    /// through the page cache; leaves a stale tail after each part first, as a failed
    /// write would.
    fn write_parts(path: &Path, bytes: &[u8], cuts: &[usize], direct: bool) {
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
                file = BlobFile::start(plain, from as u64, None).unwrap();
            }
            for piece in bytes[from..to].chunks(3_001) {
                file.write(piece).unwrap();
            }
            assert_eq!(file.finish(true).unwrap(), (to - from) as u64);
        }
    }

    /// Reads at offsets and lengths on and off block boundaries give the bytes asked
    /// for, through O_DIRECT (explicitly, and as ServedFile picks it for what is not
    /// cached) and through the page cache.
    #[test]
    fn reads_exact_bytes_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let bytes: Vec<u8> = (0..(3 * DIRECT_CHUNK + 123))
            .map(|i| (i * 11 % 241) as u8)
            .collect();
        write_parts(&path, &bytes, &[], true);
        let served = ServedFile::open(&path).unwrap();
        let end = bytes.len() as u64;
        let cases = [
            (0, 1),
            (0, DIRECT_ALIGN),
            (1, DIRECT_ALIGN),
            (DIRECT_ALIGN - 1, 2),
            (5_000, DIRECT_CHUNK),
            (bytes.len() - 123, 123),
            (bytes.len() - 1, 1),
            (0, bytes.len()),
        ];
        for (offset, n) in cases {
            let want = &bytes[offset..offset + n];
            let cached = all_cached(&served.file, offset as u64, n as u64);
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
            &[DIRECT_ALIGN, DIRECT_ALIGN + 1, 3 * DIRECT_ALIGN - 1],
            &[DIRECT_CHUNK - 1, DIRECT_CHUNK + 4_097],
            &[10, 10, 2 * DIRECT_CHUNK],
        ];
        for direct in [true, false] {
            for (k, cuts) in cut_sets.iter().enumerate() {
                for len in [0, 1, DIRECT_ALIGN + 3, bytes.len()] {
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
