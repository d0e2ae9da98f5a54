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
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use uuid::Uuid;

use super::{BlobStore, ByteStream, PartInfo, StorageError, StorageKey, StoredBlob, UploadGuard};
use crate::digest::Digest;

/// Name of an upload's data file in its directory.
const DATA_FILE: &str = "data";

/// How long a request waits for an upload another request is writing to, by
/// default, before it is answered [`StorageError::Busy`]. Parts of one upload come
/// one after another: a wait longer than a moment means that the other request's
/// body stalled, and its client is better told to retry than kept waiting on it.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// First pause between two tries of a held upload lock; it doubles up to
/// [`LOCK_RETRY_MAX`].
const LOCK_RETRY_FIRST: Duration = Duration::from_millis(2);

/// Longest pause between two tries of a held upload lock.
const LOCK_RETRY_MAX: Duration = Duration::from_millis(100);

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
    /// How long [`BlobStore::lock_upload`] waits for a held lock.
    lock_wait: Duration,
    /// Whether parts are written through the page cache rather than with `O_DIRECT`
    /// (`storage.cache_writes`; see [`write::BlobFile`]).
    cache_writes: bool,
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
            lock_wait: LOCK_WAIT,
            cache_writes: true,
        })
    }

    /// The same store, writing parts through the page cache if `cached` (the
    /// default), with `O_DIRECT` if not (see [`write::BlobFile`]): through the cache,
    /// the first pull after a push is served from memory, and uploads go at the pace
    /// of the kernel's writeback.
    pub fn with_cached_writes(mut self, cached: bool) -> Self {
        self.cache_writes = cached;
        self
    }

    /// The same store, waiting at most `wait` (instead of 3 s) for an upload another
    /// request is writing to.
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
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
        // Opening the directory and trying its lock are quick local system calls,
        // made on this thread: a hop to a blocking thread waited up to milliseconds
        // for a core while uploads kept both cores busy hashing and writing.
        let handle = match std::fs::File::open(&dir) {
            Ok(handle) => handle,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The session's first chunk.
                let made = dir.clone();
                blocking(move || Ok(std::fs::create_dir_all(&made)?)).await?;
                match std::fs::File::open(&dir) {
                    Ok(handle) => handle,
                    // Removed meanwhile: the upload was cancelled or expired.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        // Someone else holds it: try again after a pause (growing, to at most
        // LOCK_RETRY_MAX), until `lock_wait` has passed. A blocking `flock` on a
        // blocking thread instead kept waiting as long as the holder's client
        // stalled, and its waiters, a thread each, exhausted the blocking pool.
        let deadline = tokio::time::Instant::now() + self.lock_wait;
        let mut pause = LOCK_RETRY_FIRST;
        loop {
            if sys::lock_exclusive(&handle, false)? {
                // Unlocked when the handle is closed, with the guard.
                return Ok(Some(UploadGuard::holding(handle)));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(StorageError::Busy);
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(LOCK_RETRY_MAX);
        }
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

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<StoredBlob>, StorageError> {
        let root = self.root.join("blobs");
        let after = after.map(|d| (d.algorithm().as_str().to_owned(), d.hex().to_owned()));
        blocking(move || list_blob_files(&root, after.as_ref(), limit)).await
    }

    async fn put_record(&self, name: &str, bytes: bytes::Bytes) -> Result<(), StorageError> {
        let path = self.path(&StorageKey::Record(name.to_owned()));
        blocking(move || {
            let dir = path.parent().expect("a record has a folder");
            std::fs::create_dir_all(dir)?;
            // Written aside, then renamed over: a reader sees the old or the new.
            let temporary = dir.join(format!(".{}.tmp", Uuid::new_v4().simple()));
            std::fs::write(&temporary, &bytes)?;
            std::fs::rename(&temporary, &path)?;
            Ok(())
        })
        .await
    }

    async fn get_record(&self, name: &str) -> Result<Option<bytes::Bytes>, StorageError> {
        match tokio::fs::read(self.path(&StorageKey::Record(name.to_owned()))).await {
            Ok(bytes) => Ok(Some(bytes.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_record(&self, name: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path(&StorageKey::Record(name.to_owned()))).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list_records(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let records = self.root.join("records");
        let start = records.join(prefix.trim_end_matches('/'));
        blocking(move || {
            let mut names = Vec::new();
            let mut todo = vec![start];
            while let Some(dir) = todo.pop() {
                for name in sorted_names(&dir)? {
                    if name.starts_with('.') {
                        continue; // a record being written
                    }
                    let path = dir.join(&name);
                    if path.is_dir() {
                        todo.push(path);
                    } else if let Ok(relative) = path.strip_prefix(&records)
                        && let Some(relative) = relative.to_str()
                    {
                        names.push(relative.to_owned());
                    }
                }
            }
            names.sort_unstable();
            Ok(names)
        })
        .await
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

/// The names in `dir`, sorted; none when it does not exist.
fn sorted_names(dir: &Path) -> Result<Vec<String>, StorageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Some(name) = entry?.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// [`BlobStore::list_blobs`] over `blobs/<algorithm>/<2 hex>/<hex>` under `root`,
/// after `(algorithm, hex)`.
fn list_blob_files(
    root: &Path,
    after: Option<&(String, String)>,
    limit: usize,
) -> Result<Vec<StoredBlob>, StorageError> {
    let mut found = Vec::new();
    for algorithm in sorted_names(root)? {
        if after.is_some_and(|(a, _)| algorithm.as_str() < a.as_str()) {
            continue;
        }
        let same_algorithm = after.filter(|(a, _)| *a == algorithm);
        for prefix in sorted_names(&root.join(&algorithm))? {
            if same_algorithm.is_some_and(|(_, hex)| prefix.as_str() < &hex[..2]) {
                continue;
            }
            let dir = root.join(&algorithm).join(&prefix);
            for hex in sorted_names(&dir)? {
                if same_algorithm.is_some_and(|(_, after)| hex.as_str() <= after.as_str()) {
                    continue;
                }
                let Ok(digest) = Digest::parse(&format!("{algorithm}:{hex}")) else {
                    continue; // not a blob's key
                };
                let meta = match std::fs::metadata(dir.join(&hex)) {
                    Ok(meta) => meta,
                    // Deleted since the directory was read.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                found.push(StoredBlob {
                    digest,
                    size: meta.len(),
                    modified: meta.modified()?,
                });
                if found.len() >= limit {
                    return Ok(found);
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lock calls only create an upload's directory when asked; a held lock makes
    /// another taker wait a bounded time and then fail with `Busy`, without a
    /// blocking thread (the only one this runtime has is taken throughout); once let
    /// go, the lock is taken at once.
    #[test]
    fn upload_locks_create_only_when_asked_and_wait_boundedly() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = FsBlobStore::open(dir.path())
                .unwrap()
                .with_lock_wait(Duration::from_millis(200));
            let id = Uuid::new_v4();
            let upload_dir = store.path(&StorageKey::Upload(id));
            assert!(store.lock_upload(id, false).await.unwrap().is_none());
            assert!(!upload_dir.exists(), "a lock without create made storage");
            let held = store.lock_upload(id, true).await.unwrap().expect("created");
            assert!(upload_dir.is_dir());

            let (release, parked) = std::sync::mpsc::channel::<()>();
            let blocker = tokio::task::spawn_blocking(move || parked.recv());
            // A blocking flock would never return while `held` lives: the guard
            // turns that into a failure instead of a hung test.
            let second =
                tokio::time::timeout(Duration::from_secs(60), store.lock_upload(id, false))
                    .await
                    .expect("the wait for a held lock is bounded");
            assert!(matches!(second, Err(StorageError::Busy)), "{second:?}");
            release.send(()).unwrap();
            blocker.await.unwrap().unwrap();

            drop(held);
            assert!(store.lock_upload(id, false).await.unwrap().is_some());
        });
    }
}
