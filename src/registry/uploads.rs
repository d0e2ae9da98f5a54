//! Blob uploads: monolithic, chunked, resumable across requests and replicas,
//! and cross-repository mounts. Every byte is hashed as it streams; a blob becomes
//! visible only after its bytes are verified, durable, and then indexed.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use uuid::Uuid;

use super::{Error, Registry, Result};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::metadata::{MetadataError, SessionCap, SessionCaps, UploadRecord, now_millis};
use crate::names::RepoName;
use crate::storage::{ByteBudget, ByteStream, PartInfo, StorageError, UploadGuard};

/// Where an upload session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadState {
    /// Session id.
    pub id: Uuid,
    /// Bytes received so far.
    pub offset: u64,
}

/// An inclusive byte range a chunk claims to cover (`Content-Range: start-end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// First byte offset.
    pub start: u64,
    /// Last byte offset (inclusive).
    pub end: u64,
}

impl ChunkRange {
    /// Number of bytes the range covers; `u64::MAX` for `0-18446744073709551615`,
    /// whose length (2^64) no `u64` holds and no request body reaches.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start).saturating_add(1)
    }

    /// Never true: an inclusive range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A blob whose bytes are stored and hashed but not yet visible (see
/// [`Registry::stage_blob`]).
#[derive(Debug)]
pub(super) struct StagedBlob {
    upload: Uuid,
    part: PartInfo,
    /// Digest of the bytes.
    pub digest: Digest,
    /// Number of bytes.
    pub size: u64,
}

/// Counts bytes as they pass, stopping the stream past a size limit; the bytes are
/// hashed on a thread of their own ([`HashWorker`]).
struct Tap {
    count: u64,
    exceeded: bool,
    /// The content's digest, when it turned out not to be the one expected.
    mismatch: Option<Digest>,
}

/// What the hashing thread is sent.
enum HashMsg {
    /// Bytes to hash, holding their share of the queue's budget until hashed.
    Bytes(Bytes, OwnedSemaphorePermit),
    /// The digest of everything sent so far.
    Digest(oneshot::Sender<Digest>),
}

/// A hasher running on a blocking thread, fed in stream order.
///
/// Hashing is the one step of an upload that cannot be split (SHA-256 is sequential)
/// and takes most of its CPU time; done inline it shared a core with reading the
/// request, and a monolithic upload used one core of two (see docs/benchmarks.md).
/// On a thread of its own it overlaps the socket reads and the file writes.
struct HashWorker {
    tx: mpsc::UnboundedSender<HashMsg>,
    budget: ByteBudget,
    done: tokio::task::JoinHandle<Hasher>,
}

/// Bytes queued for the hashing thread at most before the request stream waits.
const HASH_QUEUE_BYTES: usize = 8 * 1024 * 1024;

impl HashWorker {
    fn start(mut hasher: Hasher) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<HashMsg>();
        let done = tokio::task::spawn_blocking(move || {
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    HashMsg::Bytes(b, _permit) => hasher.update(&b),
                    HashMsg::Digest(reply) => {
                        let _ = reply.send(hasher.finish());
                    }
                }
            }
            hasher
        });
        HashWorker {
            tx,
            budget: ByteBudget::new(HASH_QUEUE_BYTES),
            done,
        }
    }

    /// The digest of everything fed so far, once it has all been hashed.
    async fn digest(tx: &mpsc::UnboundedSender<HashMsg>) -> Result<Digest> {
        let (reply, answer) = oneshot::channel();
        tx.send(HashMsg::Digest(reply))
            .map_err(|_| Error::Internal("hashing thread ended early".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("hashing thread ended early".into()))
    }

    /// The hasher, once every sender is gone and everything sent has been hashed.
    async fn finish(self) -> Result<Hasher> {
        drop(self.tx);
        self.done
            .await
            .map_err(|e| Error::Internal(format!("hashing thread failed: {e}")))
    }
}

/// Wraps `body` to count it against `limit` (with `already` bytes before it; 0: no
/// limit) and to feed it to a hashing thread starting from `hasher`.
fn tap(
    body: ByteStream,
    hasher: Hasher,
    already: u64,
    limit: u64,
) -> (ByteStream, Arc<Mutex<Tap>>, HashWorker) {
    let state = Arc::new(Mutex::new(Tap {
        count: 0,
        exceeded: false,
        mismatch: None,
    }));
    let worker = HashWorker::start(hasher);
    let inner = state.clone();
    let tx = worker.tx.clone();
    let budget = worker.budget.clone();
    let stream = body
        .then(move |chunk| {
            let inner = inner.clone();
            let tx = tx.clone();
            let budget = budget.clone();
            async move {
                let chunk = chunk?;
                {
                    let mut t = inner.lock().expect("tap lock");
                    t.count += chunk.len() as u64;
                    if limit > 0 && already + t.count > limit {
                        t.exceeded = true;
                        return Err(std::io::Error::other("blob size limit exceeded"));
                    }
                }
                let permit = budget.take(chunk.len()).await;
                tx.send(HashMsg::Bytes(chunk.clone(), permit))
                    .map_err(|_| std::io::Error::other("hashing thread ended early"))?;
                Ok(chunk)
            }
        })
        .boxed();
    (stream, state, worker)
}

impl Registry {
    /// Writes `body` as part `number` of `upload`, hashing it on the way.
    async fn write_part(
        &self,
        upload: Uuid,
        number: u32,
        hasher: Hasher,
        already: u64,
        body: ByteStream,
    ) -> Result<(PartInfo, Hasher)> {
        let limit = self.limits.max_blob_bytes;
        self.write_part_limited(upload, number, hasher, already, body, limit, "blob")
            .await
    }

    /// [`write_part`](Self::write_part) under a size limit of its own (0: none), named
    /// `what` in the error.
    #[allow(clippy::too_many_arguments)]
    async fn write_part_limited(
        &self,
        upload: Uuid,
        number: u32,
        hasher: Hasher,
        already: u64,
        body: ByteStream,
        limit: u64,
        what: &'static str,
    ) -> Result<(PartInfo, Hasher)> {
        let (stream, state, worker) = tap(body, hasher, already, limit);
        let written = self.blobs.put_part(upload, number, already, stream).await;
        // A store returning while it still holds the stream would leave the count
        // unsettled (and the hashing thread fed): an error, not a panic of the request.
        let Ok(tap) = Arc::try_unwrap(state) else {
            return Err(Error::Internal(
                "the blob store returned while holding the upload's stream".into(),
            ));
        };
        let tap = tap
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hasher = worker.finish().await?;
        if tap.exceeded {
            return Err(Error::TooLarge { what, limit });
        }
        let part = written?;
        if part.size != tap.count {
            return Err(Error::Internal(format!(
                "storage wrote {} bytes of {}",
                part.size, tap.count
            )));
        }
        Ok((part, hasher))
    }

    /// Makes the parts of `upload` the blob `expected`, if they hash to it.
    async fn seal(
        &self,
        repo: &RepoName,
        upload: Uuid,
        parts: &[PartInfo],
        hasher: Hasher,
        expected: &Digest,
    ) -> Result<u64> {
        let size: u64 = parts.iter().map(|p| p.size).sum();
        let actual = if hasher.algorithm() == expected.algorithm() {
            hasher.finish()
        } else {
            // The session hashed with another algorithm: read the parts back once.
            let mut h = expected.algorithm().hasher();
            for p in parts {
                let mut s = self.blobs.read_part(upload, p).await?;
                while let Some(chunk) = s.next().await {
                    h.update(&chunk.map_err(|e| Error::Internal(e.to_string()))?);
                }
            }
            h.finish()
        };
        if &actual != expected {
            return Err(Error::DigestInvalid(format!(
                "content digest {actual} does not match {expected}"
            )));
        }
        self.blobs.commit(upload, parts, expected).await?;
        self.meta
            .link_blob(repo, expected, size, &self.bytes())
            .await?;
        Ok(size)
    }

    /// Pushes a whole blob in one request (`POST ?digest=`).
    pub async fn push_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        let limit = self.limits.max_blob_bytes;
        let (stream, state, worker) = tap(body, digest.algorithm().hasher(), 0, limit);
        // Verify at the end of the stream, before the store sees a clean end: a wrong
        // digest then reaches the store as a body error and nothing becomes visible.
        let expected = digest.clone();
        let check = state.clone();
        let tx = worker.tx.clone();
        let verify = futures_util::stream::once(async move {
            match HashWorker::digest(&tx).await {
                Ok(actual) if actual == expected => None,
                Ok(actual) => {
                    check.lock().expect("tap lock").mismatch = Some(actual);
                    Some(Err(std::io::Error::other(
                        "content does not match its digest",
                    )))
                }
                Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
            }
        })
        .filter_map(std::future::ready);
        let written = self
            .blobs
            .put_blob(digest, stream.chain(verify).boxed())
            .await;
        // Its digest, when needed, came back through the verify step above.
        drop(worker);
        {
            let tap = state.lock().expect("tap lock");
            if tap.exceeded {
                return Err(Error::TooLarge {
                    what: "blob",
                    limit,
                });
            }
            if let Some(actual) = &tap.mismatch {
                return Err(Error::DigestInvalid(format!(
                    "content digest {actual} does not match {digest}"
                )));
            }
        }
        let size = written?;
        self.meta
            .link_blob(repo, digest, size, &self.bytes())
            .await?;
        Ok(size)
    }

    /// Streams `body` into a fresh upload area, hashing it with `algorithm`, without
    /// making it visible: the variant of [`push_blob`](Self::push_blob) for callers that
    /// learn the digest from the bytes. The caller then [`commit_staged`]s it into a
    /// repository or [`discard_staged`]s it; on error nothing is left behind.
    ///
    /// [`commit_staged`]: Self::commit_staged
    /// [`discard_staged`]: Self::discard_staged
    pub(super) async fn stage_blob(
        &self,
        algorithm: Algorithm,
        body: ByteStream,
        limit: u64,
        what: &'static str,
    ) -> Result<StagedBlob> {
        let upload = Uuid::new_v4();
        let written = self
            .write_part_limited(upload, 0, algorithm.hasher(), 0, body, limit, what)
            .await;
        match written {
            Ok((part, hasher)) => Ok(StagedBlob {
                upload,
                size: part.size,
                part,
                digest: hasher.finish(),
            }),
            Err(e) => {
                self.discard(upload).await;
                Err(e)
            }
        }
    }

    /// Makes a staged blob's bytes durable under its digest. Nothing is visible yet:
    /// the caller records and links the blob in metadata afterwards (or leaves the bytes,
    /// unreferenced, to garbage collection).
    pub(super) async fn commit_staged(&self, staged: &StagedBlob) -> Result<()> {
        let committed = self
            .blobs
            .commit(
                staged.upload,
                std::slice::from_ref(&staged.part),
                &staged.digest,
            )
            .await;
        if let Err(e) = committed {
            self.discard(staged.upload).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Reads a staged blob's bytes back (they are not visible: only its stager knows
    /// where they are).
    pub(super) async fn read_staged(&self, staged: &StagedBlob) -> Result<ByteStream> {
        Ok(self.blobs.read_part(staged.upload, &staged.part).await?)
    }

    /// Drops a staged blob's bytes.
    pub(super) async fn discard_staged(&self, staged: &StagedBlob) {
        self.discard(staged.upload).await;
    }

    /// Removes what a failed upload left in storage; failures are only logged.
    async fn discard(&self, upload: Uuid) {
        if let Err(e) = self.blobs.abort(upload).await {
            tracing::warn!(%upload, error = %e, "could not remove an abandoned upload's parts");
        }
    }

    /// Opens an upload session hashing with `algorithm`, unless the caps on open
    /// sessions ([`Limits`](super::Limits)) are reached: then
    /// [`Error::TooManyRequests`]. Sessions opened at the same moment may pass a cap
    /// by a few (see [`UploadIndex::create_upload`]).
    ///
    /// [`UploadIndex::create_upload`]: crate::metadata::UploadIndex::create_upload
    pub async fn start_upload(&self, repo: &RepoName, algorithm: Algorithm) -> Result<UploadState> {
        let now = now_millis();
        let record = UploadRecord {
            id: Uuid::new_v4(),
            repo: repo.clone(),
            offset: 0,
            hash_state: algorithm.hasher().to_state(),
            parts: vec![],
            created_at: now,
            updated_at: now,
        };
        let caps = SessionCaps {
            total: self.limits.max_upload_sessions,
            per_repository: self.limits.max_upload_sessions_per_repository,
        };
        match self.meta.create_upload(&record, caps).await {
            Ok(()) => {}
            Err(MetadataError::CapReached(cap)) => {
                let (scope, limit) = match cap {
                    SessionCap::PerRepository => ("in this repository", caps.per_repository),
                    SessionCap::Total => ("in the registry", caps.total),
                };
                return Err(Error::TooManyRequests {
                    message: format!(
                        "too many upload sessions are open {scope} (at most {limit}); \
                         finish or cancel some, or retry later"
                    ),
                    retry_after_secs: SESSION_CAP_RETRY_AFTER_SECS,
                });
            }
            Err(e) => return Err(e.into()),
        }
        Ok(UploadState {
            id: record.id,
            offset: 0,
        })
    }

    async fn load_upload(&self, repo: &RepoName, id: Uuid) -> Result<(UploadRecord, Hasher)> {
        let record = self
            .meta
            .get_upload(repo, id)
            .await?
            .ok_or(Error::BlobUploadUnknown)?;
        let hasher = Hasher::from_state(&record.hash_state)
            .ok_or_else(|| Error::Internal(format!("upload {id} has a corrupt hash state")))?;
        Ok((record, hasher))
    }

    /// Locks a session against other writers (see [`BlobStore::lock_upload`]) and
    /// reads it as it stands under the lock. Where taking the lock would create
    /// storage (the session's first chunk), the session is looked up first, so that
    /// unknown ids create nothing.
    ///
    /// [`BlobStore::lock_upload`]: crate::storage::BlobStore::lock_upload
    async fn lock_and_load(
        &self,
        repo: &RepoName,
        id: Uuid,
    ) -> Result<(UploadGuard, UploadRecord, Hasher)> {
        let lock = match self.blobs.lock_upload(id, false).await? {
            Some(lock) => lock,
            None => {
                self.load_upload(repo, id).await?;
                // None: its storage was removed meanwhile, with the session.
                self.blobs
                    .lock_upload(id, true)
                    .await?
                    .ok_or(Error::BlobUploadUnknown)?
            }
        };
        let (record, hasher) = self.load_upload(repo, id).await?;
        Ok((lock, record, hasher))
    }

    /// Where a session stands.
    pub async fn upload_status(&self, repo: &RepoName, id: Uuid) -> Result<UploadState> {
        let (record, _) = self.load_upload(repo, id).await?;
        Ok(UploadState {
            id,
            offset: record.offset,
        })
    }

    /// Appends a chunk. With a `range`, it must start where the upload stands and
    /// cover exactly the bytes sent.
    pub async fn append_chunk(
        &self,
        repo: &RepoName,
        id: Uuid,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<UploadState> {
        let (_lock, mut record, hasher) = self.lock_and_load(repo, id).await?;
        self.append(&mut record, hasher, range, body).await?;
        Ok(UploadState {
            id,
            offset: record.offset,
        })
    }

    async fn append(
        &self,
        record: &mut UploadRecord,
        hasher: Hasher,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<Hasher> {
        if let Some(r) = range
            && r.start != record.offset
        {
            return Err(Error::ChunkOutOfOrder {
                offset: record.offset,
            });
        }
        let number = u32::try_from(record.parts.len())
            .map_err(|_| Error::BlobUploadInvalid("too many chunks".into()))?;
        let (part, hasher) = self
            .write_part(record.id, number, hasher, record.offset, body)
            .await?;
        if let Some(r) = range
            && part.size != r.len()
        {
            return Err(Error::SizeInvalid(format!(
                "Content-Range covers {} bytes but {} were sent",
                r.len(),
                part.size
            )));
        }
        if part.size == 0 {
            return Ok(hasher);
        }
        let expected_offset = record.offset;
        record.offset += part.size;
        record.parts.push(part);
        record.hash_state = hasher.to_state();
        record.updated_at = now_millis();
        match self.meta.update_upload(record, expected_offset).await {
            Ok(()) => Ok(hasher),
            // Another request advanced the session first: this chunk lost the race.
            Err(MetadataError::Conflict) => {
                let current = self
                    .meta
                    .get_upload(&record.repo, record.id)
                    .await?
                    .ok_or(Error::BlobUploadUnknown)?;
                Err(Error::ChunkOutOfOrder {
                    offset: current.offset,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Closes a session: appends the final chunk if any, verifies the digest of the
    /// whole, and makes the blob visible. Returns the blob's size.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: Uuid,
        digest: &Digest,
        range: Option<ChunkRange>,
        body: Option<ByteStream>,
    ) -> Result<u64> {
        let (_lock, mut record, mut hasher) = self.lock_and_load(repo, id).await?;
        // A closing PUT without bytes (no Content-Length, or a chunked empty body)
        // writes no part: a commit interrupted after it made the blob (a crash
        // between the rename and the session's removal) is then finished by this
        // PUT, instead of a part write finding the upload's file gone.
        let body = match body {
            Some(body) if range.is_none() => {
                let mut body = body.peekable();
                let empty = std::pin::Pin::new(&mut body).peek().await.is_none();
                (!empty).then(|| body.boxed())
            }
            other => other,
        };
        if let Some(body) = body {
            hasher = self.append(&mut record, hasher, range, body).await?;
        }
        let size = self.seal(repo, id, &record.parts, hasher, digest).await;
        match size {
            Ok(size) => {
                self.meta.delete_upload(id).await?;
                Ok(size)
            }
            Err(e @ (Error::DigestInvalid(_) | Error::BlobUploadInvalid(_))) => {
                // Nothing is stored under a digest the bytes do not have (as sent, or
                // as a machine crash left them: StorageError::Lost); the session is
                // spent (as in Distribution) and its parts are removed.
                self.meta.delete_upload(id).await?;
                self.discard(id).await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Cancels a session and removes its parts.
    pub async fn cancel_upload(&self, repo: &RepoName, id: Uuid) -> Result<()> {
        self.meta
            .get_upload(repo, id)
            .await?
            .ok_or(Error::BlobUploadUnknown)?;
        self.meta.delete_upload(id).await?;
        self.discard(id).await;
        Ok(())
    }

    /// Links a blob of repository `from` into `repo` without copying bytes. Returns
    /// `false` when `from` does not hold the blob (the caller then opens a session).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<bool> {
        let Some(size) = self.meta.blob_in_repo(from, digest).await? else {
            return Ok(false);
        };
        match self.blobs.stat(digest).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(StorageError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match self.meta.link_blob(repo, digest, size, &self.bytes()).await {
            Ok(()) => Ok(true),
            // Collected meanwhile: the client uploads it instead.
            Err(MetadataError::BytesGone) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// What one sweep of abandoned uploads removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Sessions (rows and their parts) expired.
    pub sessions: usize,
    /// Stored parts left by uploads that have no session any more (a monolithic
    /// push or a replica that died mid-request).
    pub orphans: usize,
}

/// Seconds a client refused a session for a cap is told to wait. Sessions go as
/// uploads finish (seconds) or expire (`uploads.expire_after_secs`); a client at a
/// cap is most often one that opens sessions and never finishes them.
const SESSION_CAP_RETRY_AFTER_SECS: u64 = 30;

/// Most items a sweep looks at in one go; it then yields and takes the next batch.
const SWEEP_BATCH: u32 = 1000;

impl Registry {
    /// Removes upload sessions untouched for `max_age`, and any stored upload parts
    /// untouched for as long that no session owns, batch after batch until nothing
    /// is left that is old enough (yielding to other tasks between batches). Safe to
    /// run on every replica at once: each step is idempotent. An age further back
    /// than the clock can go expires nothing.
    pub async fn expire_uploads(&self, max_age: std::time::Duration) -> Result<ExpiryReport> {
        let mut report = ExpiryReport::default();
        let cutoff = i64::try_from(max_age.as_millis())
            .ok()
            .and_then(|age| now_millis().checked_sub(age));
        if let Some(cutoff) = cutoff {
            // Sessions older than the cutoff only go: each batch is the oldest left.
            loop {
                let stale = self.meta.stale_uploads(cutoff, SWEEP_BATCH).await?;
                for &id in &stale {
                    // Row first: once it is gone no request can add a part, then the
                    // bytes go.
                    if self.meta.delete_upload(id).await? {
                        report.sessions += 1;
                    }
                    self.blobs.abort(id).await?;
                }
                if stale.len() < SWEEP_BATCH as usize {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        if let Some(before) = std::time::SystemTime::now().checked_sub(max_age) {
            // The store lists stale upload areas, orphaned or not: the sweep goes on
            // while a full batch held orphans to remove (a batch of live sessions'
            // areas alone would come back the same).
            loop {
                let stale = self
                    .blobs
                    .stale_uploads(before, SWEEP_BATCH as usize)
                    .await?;
                let mut removed = 0;
                for &id in &stale {
                    if !self.meta.upload_exists(id).await? {
                        self.blobs.abort(id).await?;
                        removed += 1;
                    }
                }
                report.orphans += removed;
                if stale.len() < SWEEP_BATCH as usize || removed == 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt;

    use super::*;
    use crate::metadata::{self, PoolOptions};
    use crate::registry::Limits;
    use crate::storage::FsBlobStore;

    /// The widest range a client can write has a length no `u64` holds: it saturates
    /// instead of wrapping to 0 (which accepted an empty body as covering it).
    #[test]
    fn chunk_range_lengths_do_not_wrap() {
        assert_eq!(ChunkRange { start: 0, end: 0 }.len(), 1);
        assert_eq!(ChunkRange { start: 5, end: 10 }.len(), 6);
        assert_eq!(
            ChunkRange {
                start: 0,
                end: u64::MAX
            }
            .len(),
            u64::MAX
        );
        assert_eq!(
            ChunkRange {
                start: 1,
                end: u64::MAX
            }
            .len(),
            u64::MAX
        );
    }

    /// A registry over a filesystem store and a SQLite file in `dir`, whose upload
    /// locks are waited for at most `lock_wait`.
    async fn fs_registry(dir: &std::path::Path, lock_wait: Duration) -> Registry {
        let url = format!("sqlite://{}?mode=rwc", dir.join("meta.db").display());
        let meta = metadata::connect(&url, &PoolOptions::default())
            .await
            .unwrap();
        meta.migrate().await.unwrap();
        let blobs = FsBlobStore::open(dir.join("store"))
            .unwrap()
            .with_lock_wait(lock_wait);
        Registry::new(Arc::new(blobs), meta, Limits::default())
    }

    fn body(bytes: &[u8]) -> ByteStream {
        futures_util::stream::iter([Ok(Bytes::copy_from_slice(bytes))]).boxed()
    }

    fn sha256(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }

    async fn read_all(registry: &Registry, repo: &RepoName, digest: &Digest) -> Vec<u8> {
        let read = registry
            .read_blob(repo, digest, |_| Some(None))
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut s = read.body.unwrap();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    /// A PATCH whose body stalls holds its upload's lock; another PATCH of the same
    /// session is answered `UploadBusy` once the bounded wait is over, instead of
    /// waiting (on a blocking thread) for as long as the stall lasts; other uploads
    /// and blob reads go on meanwhile; and once the stalled request is gone the
    /// session resumes where it stood.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_patch_makes_others_busy_not_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let registry = fs_registry(dir.path(), Duration::from_millis(300)).await;
        let repo = RepoName::parse("packs/stall").unwrap();
        let kept = registry
            .push_blob(&repo, &sha256(b"kept"), body(b"kept"))
            .await
            .map(|_| sha256(b"kept"))
            .unwrap();
        let session = registry
            .start_upload(&repo, Algorithm::Sha256)
            .await
            .unwrap();
        registry
            .append_chunk(&repo, session.id, None, body(b"abc"))
            .await
            .unwrap();

        let (taken, started) = tokio::sync::oneshot::channel();
        let stalled_body = futures_util::stream::once(async move {
            let _ = taken.send(());
            Ok(Bytes::from_static(b"never finished"))
        })
        .chain(futures_util::stream::pending())
        .boxed();
        let stalled = {
            let (registry, repo) = (registry.clone(), repo.clone());
            tokio::spawn(async move {
                registry
                    .append_chunk(&repo, session.id, None, stalled_body)
                    .await
            })
        };
        started.await.unwrap();

        // The guard only turns a hang (the old blocking wait) into a failure.
        let busy = tokio::time::timeout(
            Duration::from_secs(60),
            registry.append_chunk(&repo, session.id, None, body(b"def")),
        )
        .await
        .expect("a PATCH of a busy upload is answered");
        assert!(matches!(busy, Err(Error::UploadBusy)), "{busy:?}");

        // Meanwhile: another chunked upload, a monolithic one, and a read.
        let other = registry
            .start_upload(&repo, Algorithm::Sha256)
            .await
            .unwrap();
        registry
            .append_chunk(&repo, other.id, None, body(b"other "))
            .await
            .unwrap();
        let digest = sha256(b"other upload");
        let size = registry
            .finish_upload(&repo, other.id, &digest, None, Some(body(b"upload")))
            .await
            .unwrap();
        assert_eq!(size, 12);
        registry
            .push_blob(&repo, &sha256(b"mono"), body(b"mono"))
            .await
            .unwrap();
        assert_eq!(read_all(&registry, &repo, &kept).await, b"kept");
        let status = registry.upload_status(&repo, session.id).await.unwrap();
        assert_eq!(status.offset, 3, "a part in progress moved the session");

        stalled.abort();
        assert!(stalled.await.unwrap_err().is_cancelled());
        let resumed = registry
            .append_chunk(
                &repo,
                session.id,
                Some(ChunkRange { start: 3, end: 5 }),
                body(b"def"),
            )
            .await
            .unwrap();
        assert_eq!(resumed.offset, 6);
        let whole = sha256(b"abcdef");
        registry
            .finish_upload(&repo, session.id, &whole, None, None)
            .await
            .unwrap();
        assert_eq!(read_all(&registry, &repo, &whole).await, b"abcdef");
    }

    /// A PATCH whose body fails mid-way is a body error; it releases the upload's
    /// lock, leaves the session at its previous offset with none of the failed
    /// part's bytes in the upload's file, and the client can resume from there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_patch_leaves_the_session_resumable() {
        let dir = tempfile::tempdir().unwrap();
        let registry = fs_registry(dir.path(), Duration::from_millis(300)).await;
        let repo = RepoName::parse("packs/fail").unwrap();
        let bytes: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        let session = registry
            .start_upload(&repo, Algorithm::Sha256)
            .await
            .unwrap();
        registry
            .append_chunk(&repo, session.id, None, body(&bytes[..1000]))
            .await
            .unwrap();

        let sent: Vec<std::io::Result<Bytes>> = bytes[1000..4_000_000]
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .chain([Err(std::io::Error::other("client went away"))])
            .collect();
        let failing = futures_util::stream::iter(sent).boxed();
        let failed = registry
            .append_chunk(&repo, session.id, None, failing)
            .await;
        assert!(matches!(failed, Err(Error::Body(_))), "{failed:?}");
        let status = registry.upload_status(&repo, session.id).await.unwrap();
        assert_eq!(status.offset, 1000);
        let data = dir
            .path()
            .join("store/uploads")
            .join(session.id.to_string())
            .join("data");
        assert_eq!(
            std::fs::metadata(&data).unwrap().len(),
            1000,
            "failed bytes kept"
        );

        // The lock is free again (a busy lock would be UploadBusy here).
        let range = ChunkRange {
            start: 1000,
            end: bytes.len() as u64 - 1,
        };
        registry
            .append_chunk(&repo, session.id, Some(range), body(&bytes[1000..]))
            .await
            .unwrap();
        let digest = sha256(&bytes);
        registry
            .finish_upload(&repo, session.id, &digest, None, None)
            .await
            .unwrap();
        assert!(read_all(&registry, &repo, &digest).await == bytes);
    }

    /// A crash between a commit's rename and the session's removal left the blob's
    /// bytes in place and the session open: the client's closing PUT again (no
    /// bytes) finishes the upload instead of failing on the upload's missing file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_cut_short_is_finished_by_the_closing_put_again() {
        let dir = tempfile::tempdir().unwrap();
        let registry = fs_registry(dir.path(), Duration::from_secs(3)).await;
        let repo = RepoName::parse("packs/crash").unwrap();
        let session = registry
            .start_upload(&repo, Algorithm::Sha256)
            .await
            .unwrap();
        let state = registry
            .append_chunk(&repo, session.id, None, body(b"all of it"))
            .await
            .unwrap();
        assert_eq!(state.offset, 9);
        // What the interrupted PUT got done: the bytes moved under the digest.
        let record = registry
            .meta
            .get_upload(&repo, session.id)
            .await
            .unwrap()
            .unwrap();
        let digest = sha256(b"all of it");
        registry
            .blobs
            .commit(session.id, &record.parts, &digest)
            .await
            .unwrap();
        // The client retries its PUT, without bytes (an empty chunked body).
        let empty = futures_util::stream::empty().boxed();
        let size = registry
            .finish_upload(&repo, session.id, &digest, None, Some(empty))
            .await
            .unwrap();
        assert_eq!(size, 9);
        assert_eq!(read_all(&registry, &repo, &digest).await, b"all of it");
        assert!(matches!(
            registry.upload_status(&repo, session.id).await,
            Err(Error::BlobUploadUnknown)
        ));
    }
}
