//! Every system call of the filesystem backend that `std` does not wrap, and every
//! `unsafe` block, each with a `// SAFETY:` line. Off Linux (or off Unix) each call
//! has a fallback that does without: nothing is cached, nothing is read ahead,
//! `O_DIRECT` is not used.

use std::path::Path;

/// Alignment of buffers, lengths and offsets for `O_DIRECT` (the largest logical block
/// size in common use).
pub(super) const DIRECT_ALIGN: usize = 4096;

/// Opens `path` as `options` say, with `O_DIRECT` added; `None` where the filesystem
/// (or the platform) does not do `O_DIRECT`.
pub(super) fn open_direct(
    options: &std::fs::OpenOptions,
    path: &Path,
) -> std::io::Result<Option<std::fs::File>> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match options.clone().custom_flags(libc::O_DIRECT).open(path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if refuses_direct(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (options, path);
        Ok(None)
    }
}

/// Opens `path` read-only (with `O_DIRECT` if `direct`) if every step of its path is
/// in the kernel's dentry cache (`openat2` with `RESOLVE_CACHED`, Linux 5.12), so that
/// nothing waits for the disk; `None` where one is not (`EAGAIN`) or `openat2` is
/// missing or refused (`ENOSYS`, `EPERM` under some seccomp filters).
#[cfg(target_os = "linux")]
pub(super) fn open_cached(path: &Path, direct: bool) -> Option<std::io::Result<std::fs::File>> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: open_how is plain integers, for which all zeros is valid (and what the
    // kernel expects of the fields not set).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    let flags = if direct {
        libc::O_RDONLY | libc::O_DIRECT
    } else {
        libc::O_RDONLY
    };
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

#[cfg(not(target_os = "linux"))]
pub(super) fn open_cached(_path: &Path, _direct: bool) -> Option<std::io::Result<std::fs::File>> {
    None
}

/// Whether opening with `O_DIRECT` failed because the filesystem does not do it.
pub(super) fn refuses_direct(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        e.raw_os_error() == Some(libc::EINVAL)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        true
    }
}

/// Whether `root` is on a filesystem kept on this machine's own disks or in its
/// memory (ext4, XFS, Btrfs, F2FS, ZFS, tmpfs, overlayfs), by `statfs`. Network
/// filesystems are not: opening a file there may ask the server.
#[cfg(target_os = "linux")]
pub(super) fn is_local_filesystem(root: &Path) -> bool {
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
pub(super) fn is_local_filesystem(_root: &Path) -> bool {
    false
}

/// Whether the page cache holds every page of `len` bytes of `file` at `offset`, by
/// the `cachestat` system call (Linux 6.5), which looks without reading anything;
/// `None` where the call is missing or fails. Reads then go through the page cache
/// (with readahead), as they would without `O_DIRECT`.
#[cfg(target_os = "linux")]
pub(super) fn all_cached(file: &std::fs::File, offset: u64, len: u64) -> Option<bool> {
    if len == 0 {
        return Some(true);
    }
    // SAFETY: sysconf only reads its argument.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => return None,
    };
    let pages = (offset + len).div_ceil(page) - offset / page;
    Some(cachestat(file, offset, len)?.nr_cache >= pages)
}

/// Pages of `len` bytes of `file` at `offset` that are dirty or being written back
/// (`cachestat`); `None` where the call is missing or fails.
#[cfg(all(test, target_os = "linux"))]
pub(super) fn dirty_pages(file: &std::fs::File, offset: u64, len: u64) -> Option<u64> {
    let stat = cachestat(file, offset, len)?;
    Some(stat.nr_dirty + stat.nr_writeback)
}

#[cfg(all(test, not(target_os = "linux")))]
pub(super) fn dirty_pages(_file: &std::fs::File, _offset: u64, _len: u64) -> Option<u64> {
    None
}

/// `struct cachestat` of <linux/mman.h>.
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct CacheStat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// The `cachestat` system call over `len` bytes of `file` at `offset`.
#[cfg(target_os = "linux")]
fn cachestat(file: &std::fs::File, offset: u64, len: u64) -> Option<CacheStat> {
    use std::os::fd::AsRawFd;
    /// `struct cachestat_range` of <linux/mman.h>.
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    /// Its number in the table shared by every architecture since Linux 5.1.
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range { off: offset, len };
    let mut stat = CacheStat::default();
    // SAFETY: both pointers are to live, properly laid out structs for the call's
    // duration; the descriptor is valid for as long as `file` is borrowed.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut CacheStat,
            0u32,
        )
    };
    (r == 0).then_some(stat)
}

#[cfg(not(target_os = "linux"))]
pub(super) fn all_cached(_file: &std::fs::File, _offset: u64, _len: u64) -> Option<bool> {
    None
}

/// Asks the kernel to start reading `len` bytes at `offset` into the page cache. Blobs
/// are written with `O_DIRECT` (see [`BlobFile`](super::write::BlobFile)), so the first download of one finds
/// nothing cached, and the default readahead window held such reads to ~300-500 MB/s on
/// the benchmark machine. Advice only: failures are ignored.
#[cfg(target_os = "linux")]
pub(super) fn read_ahead(file: &std::fs::File, offset: u64, len: u64) {
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
pub(super) fn read_ahead(_file: &std::fs::File, _offset: u64, _len: u64) {}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk now,
/// without waiting. Large writes followed by one `fsync` otherwise pile up dirty pages
/// until the kernel throttles the writer and the `fsync` flushes them all at the end:
/// on this project's benchmark machine that made a durable 1 GiB upload run at
/// ~250-500 MB/s where writing back as it goes sustains ~2 GB/s (see
/// docs/benchmarks.md). The `fsync` at the end still decides durability; this only
/// moves the work earlier. A failure here is harmless and ignored.
#[cfg(target_os = "linux")]
pub(super) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
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
pub(super) fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}

/// Writes `len` bytes at `offset` of `file` back to the disk and waits until they are
/// there: what an `O_DIRECT` write guarantees when it returns (the bytes left the
/// machine's memory; the file's metadata and the disk's own cache wait for the
/// `fsync` at commit). Elsewhere than on Linux, the file's data is synced.
#[cfg(target_os = "linux")]
pub(super) fn write_back(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return file.sync_data();
    };
    if len == 0 {
        return Ok(());
    }
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is
    // valid for as long as `file` is borrowed.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub(super) fn write_back(file: &std::fs::File, _offset: u64, _len: u64) -> std::io::Result<()> {
    file.sync_data()
}

/// Takes an exclusive `flock` on `file`: with `wait`, waiting for it (a blocking
/// call); without, only if no one holds it. Returns whether it was taken.
#[cfg(unix)]
pub(super) fn lock_exclusive(file: &std::fs::File, wait: bool) -> std::io::Result<bool> {
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
pub(super) fn lock_exclusive(_file: &std::fs::File, _wait: bool) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(unix)]
pub(super) fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
pub(super) fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(unix)]
pub(super) fn read_exact_at(
    file: &std::fs::File,
    buf: &mut [u8],
    offset: u64,
) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
pub(super) fn read_exact_at(
    file: &std::fs::File,
    mut buf: &mut [u8],
    mut offset: u64,
) -> std::io::Result<()> {
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

/// Drops the clean pages of `file` from the page cache (a test's way to make the
/// next read of it cold).
#[cfg(all(test, target_os = "linux"))]
pub(super) fn forget_cached(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is valid
    // for as long as `file` is borrowed.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

#[cfg(all(test, not(target_os = "linux")))]
pub(super) fn forget_cached(_file: &std::fs::File) {}
