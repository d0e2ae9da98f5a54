//! The metadata index: repositories, blob links, manifests, tags, referrers and
//! upload sessions. Readers trust it: a blob or manifest exists for the API exactly
//! when its row exists here.
//!
//! Owns the [`MetadataStore`] contract and its SQL backends. All SQL lives in `sql/`:
//! the statements both dialects share in `sql/mod.rs`, row decoding in `sql/rows.rs`,
//! what only one dialect speaks in `sql/sqlite.rs` and `sql/postgres.rs`, each with its
//! own `migrations/<dialect>/` folder. Must not import `oci`, `registry` or `storage`.

mod migrations;
mod sql;
#[cfg(test)]
pub(crate) mod suite;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::digest::Digest;
use crate::names::{RepoName, Tag};
use crate::storage::PartInfo;

pub use sql::{PostgresStore, SqliteStore};

/// Errors of the metadata layer.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A compare-and-swap lost: someone else changed the row first.
    #[error("conflicting concurrent update")]
    Conflict,
    /// The database could not be reached.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database turned the work away for now, and it was tried again a few
    /// times first: a deadlock, a serialization failure or a lock not available in
    /// time (PostgreSQL), or the database file locked by another connection past the
    /// busy timeout (SQLite). Worth retrying a moment later.
    #[error("database busy: {0}")]
    Busy(String),
    /// A new upload session was refused: this cap on open sessions is reached.
    #[error("too many upload sessions open ({0:?})")]
    CapReached(SessionCap),
    /// A push would have moved an immutable tag to another manifest; nothing of the
    /// push was stored.
    #[error("a tag of this push is immutable")]
    TagImmutable,
    /// A stored value could not be decoded.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// Something a write refers to was removed while it was being written (a blob
    /// link or a child manifest a manifest's references name, by garbage collection
    /// or a delete): nothing was stored. The caller checks the references again.
    #[error("a referenced blob or manifest was removed meanwhile")]
    ReferenceGone,
    /// The blob's bytes were deleted by garbage collection after they were stored
    /// for this link (a re-upload of a blob being collected): nothing was linked, and
    /// the blob has to be uploaded again.
    #[error("the blob's bytes were removed by garbage collection; upload it again")]
    BytesGone,
    /// The blob store failed during a step of the metadata layer that needs it (see
    /// [`BlobBytes`]).
    #[error("blob store: {0}")]
    Bytes(BoxError),
    /// Any other database failure.
    #[error("database: {0}")]
    Database(String),
}

/// An error of another layer, carried through this one (see [`BlobBytes`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl From<sqlx::Error> for MetadataError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => MetadataError::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                MetadataError::Unavailable(e.to_string())
            }
            sqlx::Error::Tls(_) => MetadataError::Unavailable(e.to_string()),
            sqlx::Error::Database(ref d) if server_went_away(d.as_ref()) => {
                MetadataError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(ref d) if sql::busy(d.as_ref()) => {
                MetadataError::Busy(e.to_string())
            }
            // Raised by the `tags_immutable` trigger of both dialects.
            sqlx::Error::Database(ref d) if d.message().contains("immutable tag") => {
                MetadataError::TagImmutable
            }
            sqlx::Error::Database(ref d) if sql::reference_gone(d.as_ref()) => {
                MetadataError::ReferenceGone
            }
            sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => {
                MetadataError::Corrupt(e.to_string())
            }
            other => MetadataError::Database(other.to_string()),
        }
    }
}

/// Whether the database's error says the server went away under an open connection:
/// the "connection exception" (08) and "operator intervention" (57, e.g. shutting
/// down) SQLSTATE classes.
pub(crate) fn server_went_away(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.code()
        .is_some_and(|c| c.starts_with("08") || c.starts_with("57"))
}

/// Result alias of the metadata layer.
pub type Result<T, E = MetadataError> = std::result::Result<T, E>;

/// A manifest as stored: its exact bytes and what was read out of them at push time.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestRecord {
    /// Digest of `body`.
    pub digest: Digest,
    /// Media type it was pushed with (and is served with).
    pub media_type: String,
    /// `artifactType`, or for an image manifest without one, its config media type.
    pub artifact_type: Option<String>,
    /// The `subject` it refers to, if any.
    pub subject: Option<Digest>,
    /// The manifest's `annotations`, as a JSON object text, if any.
    pub annotations: Option<String>,
    /// The exact bytes pushed.
    pub body: Bytes,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// What kind of thing a manifest points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceKind {
    /// The config blob.
    Config,
    /// A layer blob.
    Layer,
    /// A child manifest of an index.
    Manifest,
}

impl ReferenceKind {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            ReferenceKind::Config => "config",
            ReferenceKind::Layer => "layer",
            ReferenceKind::Manifest => "manifest",
        }
    }
}

/// A manifest referring to `subject`, as listed by the referrers API.
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    /// The referrer's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its artifact type (see [`ManifestRecord::artifact_type`]).
    pub artifact_type: Option<String>,
    /// Its annotations as JSON object text.
    pub annotations: Option<String>,
}

/// An upload session in progress. Everything a replica needs to continue it.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRecord {
    /// Session id (the UUID in the upload URL).
    pub id: Uuid,
    /// Repository the blob is being pushed to.
    pub repo: RepoName,
    /// Bytes received so far.
    pub offset: u64,
    /// Serialized running hash of the bytes received so far.
    pub hash_state: Vec<u8>,
    /// Stored parts, in order.
    pub parts: Vec<PartInfo>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

/// Caps on the upload sessions open at once; 0 is no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCaps {
    /// Sessions open in the whole registry.
    pub total: u64,
    /// Sessions open in one repository.
    pub per_repository: u64,
}

/// Which of the [`SessionCaps`] refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCap {
    /// [`SessionCaps::total`].
    Total,
    /// [`SessionCaps::per_repository`].
    PerRepository,
}

/// One page of a listing, plus whether more follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// Whether items exist after the last one returned.
    pub more: bool,
}

/// What the metadata layer asks of the blob store while it holds the locks that
/// order an upload and the garbage collector (see [`BlobIndex::link_blob`] and
/// [`CollectIndex::delete_bytes`]). The domain implements it over the `BlobStore`; the
/// metadata layer knows no storage.
#[async_trait]
pub trait BlobBytes: Send + Sync {
    /// Whether the bytes of `digest` are stored.
    async fn present(&self, digest: &Digest) -> Result<bool, BoxError>;

    /// Deletes the bytes of `digest`; deleting absent bytes is no error.
    async fn delete(&self, digest: &Digest) -> Result<(), BoxError>;
}

/// Repositories and the blobs linked into them.
#[async_trait]
pub trait BlobIndex: Send + Sync {
    /// Records a verified blob (global) and links it into `repo`, creating the
    /// repository if needed, and marks the link as made now (the grace period of
    /// garbage collection counts from the last link). Idempotent.
    ///
    /// The caller stored the bytes first. If garbage collection deleted the blob's
    /// row meanwhile, its pending byte deletion is cancelled; if it already deleted
    /// the bytes (maybe after the caller stored them), `bytes` is asked whether they
    /// are there, and when they are not nothing is linked:
    /// [`MetadataError::BytesGone`].
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        bytes: &dyn BlobBytes,
    ) -> Result<()>;

    /// Size of `digest` if it is linked into `repo`.
    async fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;

    /// Size of `digest` if the blob is known anywhere in the registry.
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Removes the link of `digest` from `repo`. Returns whether a link existed.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Whether the repository exists.
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool>;

    /// Repository names after `last`, in order, at most `n`.
    async fn list_repositories(&self, last: Option<&str>, n: u32) -> Result<Page<String>>;
}

/// Manifests, tags and referrers.
#[async_trait]
pub trait ManifestIndex: Send + Sync {
    /// For each of `digests`, in order, the size of that blob if it is linked into
    /// `repo`, else `None`; one round trip for the whole list.
    async fn linked_blob_sizes(
        &self,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<Vec<Option<u64>>>;

    /// For each of `digests`, in order, the length of that manifest if it is in `repo`,
    /// else `None`; one round trip for the whole list.
    async fn manifest_sizes(&self, repo: &RepoName, digests: &[Digest])
    -> Result<Vec<Option<u64>>>;

    /// Stores a manifest with what it references and points `tags` at it, in one
    /// transaction. Re-putting an existing digest is idempotent (tags still move, and
    /// its push time becomes `now`). A tag that moves away from a manifest takes its
    /// pack index row with it. Every blob reference must be linked into `repo`, and
    /// every child manifest be in it, as the write happens: if one is not (garbage
    /// collection removed it since the caller checked), nothing is stored and the
    /// answer is [`MetadataError::ReferenceGone`]. The tags also listed in
    /// `immutable` are marked so, and no push ever moves a marked tag (nor one of
    /// `immutable`) to another manifest: such a push stores nothing and is
    /// [`MetadataError::TagImmutable`], also when it races another push creating the
    /// tag. Deleting a marked tag is allowed.
    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        references: &[(Digest, ReferenceKind)],
        tags: &[Tag],
        immutable: &[Tag],
    ) -> Result<()>;

    /// A manifest by digest.
    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>>;

    /// A manifest by tag.
    async fn get_manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>>;

    /// Deletes a manifest and every tag pointing at it. Returns whether it existed.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Deletes one tag. Returns whether it existed.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool>;

    /// Tags of `repo` after `last`, in byte order, at most `n`.
    async fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: u32) -> Result<Page<String>>;

    /// Manifests in `repo` whose subject is `subject`, optionally only of
    /// `artifact_type`, ordered by digest, after `last`, at most `n`.
    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&str>,
        n: u32,
    ) -> Result<Page<Referrer>>;
}

/// Upload sessions.
#[async_trait]
pub trait UploadIndex: Send + Sync {
    /// Records a new session, unless one of `caps` is reached: then nothing is stored
    /// and the answer is [`MetadataError::CapReached`] naming it (the per-repository
    /// cap when both are). Counting walks an index for at most as many entries as
    /// the cap, in the insert's own statement; it is not serialized with other
    /// creations, so sessions created at the same moment may each find room and
    /// pass a cap by up to their number.
    async fn create_upload(&self, upload: &UploadRecord, caps: SessionCaps) -> Result<()>;

    /// A session by id, if it belongs to `repo`.
    async fn get_upload(&self, repo: &RepoName, id: Uuid) -> Result<Option<UploadRecord>>;

    /// Saves progress (offset, hash state, parts, `updated_at`), only if the stored
    /// offset is still `expected_offset`; otherwise, or when the session no longer
    /// exists, [`MetadataError::Conflict`]. Of concurrent updates from one offset,
    /// exactly one succeeds.
    async fn update_upload(&self, upload: &UploadRecord, expected_offset: u64) -> Result<()>;

    /// Removes a session. Returns whether it existed.
    async fn delete_upload(&self, id: Uuid) -> Result<bool>;

    /// Ids of sessions not updated since `updated_before` (ms since the epoch),
    /// oldest first, at most `limit`.
    async fn stale_uploads(&self, updated_before: i64, limit: u32) -> Result<Vec<Uuid>>;

    /// Whether a session with this id exists, in any repository.
    async fn upload_exists(&self, id: Uuid) -> Result<bool>;
}

/// One indexed pack version: a tag `tag` in `repository` whose manifest is a valid pack
/// (see `registry/packs.rs`), with what the `/packs` API lists and serves.
#[derive(Debug, Clone, PartialEq)]
pub struct PackVersionRecord {
    /// The pack's id (the repository's last segment).
    pub pack_id: String,
    /// The semver version, as written in the pack manifest.
    pub version: String,
    /// The version's semver precedence as text whose byte order is precedence order.
    pub sort_key: String,
    /// Whether the version has a prerelease part.
    pub prerelease: bool,
    /// `policy`, `analyzer`, `task` or `bundle`.
    pub pack_type: String,
    /// Display name.
    pub name: String,
    /// Description (may be empty).
    pub description: String,
    /// Author (may be empty).
    pub author: String,
    /// Lower-cased text `q` searches in (id, name, description).
    pub search_text: String,
    /// The repository holding the pack (`packs/<packId>`).
    pub repository: RepoName,
    /// The tag naming this version (the version, `+` written `_`).
    pub tag: Tag,
    /// The OCI manifest the tag points at.
    pub manifest_digest: Digest,
    /// Digest of the content a download returns.
    pub content_digest: Digest,
    /// Media type of the content layer.
    pub content_media_type: String,
    /// Size of the content in bytes.
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub published_at: i64,
    /// Dependencies as JSON array text (`[{"packId":…,"version":…}]`).
    pub dependencies: String,
    /// Members of a bundle as JSON array text, same shape (`[]` for other types).
    pub members: String,
    /// The pack's `metadata` object as JSON text.
    pub metadata: String,
}

/// One pack as listed: the fields of its latest version.
#[derive(Debug, Clone, PartialEq)]
pub struct PackSummaryRecord {
    /// The pack's id.
    pub pack_id: String,
    /// Type of the latest version.
    pub pack_type: String,
    /// Name of the latest version.
    pub name: String,
    /// Description of the latest version.
    pub description: String,
    /// Author of the latest version.
    pub author: String,
    /// Highest version by semver precedence; a prerelease only when no release exists.
    pub latest_version: String,
    /// Number of indexed versions.
    pub versions: u64,
    /// Milliseconds since the Unix epoch of the last change to the pack's versions.
    pub updated_at: i64,
}

/// Filters of a pack listing; every one given must match.
#[derive(Debug, Clone, Default)]
pub struct PackFilter {
    /// Exact type.
    pub pack_type: Option<String>,
    /// Exact author.
    pub author: Option<String>,
    /// Lower-cased text that must occur in the pack's `search_text`.
    pub q: Option<String>,
}

/// The packs index: pack versions and the per-pack summaries derived from them.
///
/// Rows exist exactly while their tag points at their manifest: deleting the tag or the
/// manifest (through any API) removes the row in the same transaction, and moving the
/// tag to another manifest drops it ([`ManifestIndex::put_manifest`] does). The summary
/// of a pack is maintained by the database from its versions.
#[async_trait]
pub trait PackIndex: Send + Sync {
    /// Does what [`ManifestIndex::put_manifest`] does and, in the same transaction,
    /// indexes `pack` (whose `repository`, `tag` and `manifest_digest` name that
    /// manifest and one of `tags`), replacing any row of the same version. With
    /// `create_only`, fails with [`MetadataError::Conflict`] (storing nothing) when the
    /// version is already indexed or its tag already exists.
    ///
    /// `immutable` as for [`ManifestIndex::put_manifest`].
    ///
    /// `link` lists blobs, `(digest, size)`, whose verified bytes are durable but which
    /// are not indexed yet (a publish's content and config): they are recorded and
    /// linked into `repo` (creating it) in the same transaction, so that a publish that
    /// fails leaves no repository and no link; `bytes` answers for them as for
    /// [`BlobIndex::link_blob`].
    #[allow(clippy::too_many_arguments)]
    async fn put_pack_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        references: &[(Digest, ReferenceKind)],
        tags: &[Tag],
        pack: &PackVersionRecord,
        create_only: bool,
        link: &[(Digest, u64)],
        bytes: &dyn BlobBytes,
        immutable: &[Tag],
    ) -> Result<()>;

    /// Packs matching `filter` whose id is after `after`, ordered by id, at most `n`.
    async fn list_packs(
        &self,
        filter: &PackFilter,
        after: Option<&str>,
        n: u32,
    ) -> Result<Page<PackSummaryRecord>>;

    /// One pack's summary.
    async fn get_pack(&self, pack_id: &str) -> Result<Option<PackSummaryRecord>>;

    /// Every version of a pack, highest precedence first (ties: version text, descending).
    async fn list_pack_versions(&self, pack_id: &str) -> Result<Vec<PackVersionRecord>>;

    /// The packs with a version that depends on `pack_id` or holds it as a bundle
    /// member, by id, at most `n`: an index lookup (`pack_edges`).
    async fn pack_used_by(&self, pack_id: &str, n: u32) -> Result<Vec<String>>;

    /// One version of a pack, by its exact version text.
    async fn get_pack_version(
        &self,
        pack_id: &str,
        version: &str,
    ) -> Result<Option<PackVersionRecord>>;

    /// Removes a version: deletes its tag, and with it the row. The manifest and blobs
    /// stay for garbage collection. Returns whether the version was indexed.
    async fn delete_pack_version(&self, pack_id: &str, version: &str) -> Result<bool>;
}

/// A manifest as garbage collection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestNode {
    /// Its digest.
    pub digest: Digest,
    /// Its `subject`, if any.
    pub subject: Option<Digest>,
    /// Its length in bytes.
    pub size: u64,
    /// When it was last pushed, in milliseconds since the Unix epoch.
    pub pushed_at: i64,
}

/// A blob link as garbage collection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkNode {
    /// The blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last linked (pushed or mounted), in milliseconds since the epoch.
    pub linked_at: i64,
}

/// One repository's manifests, tags, references and blob links, read at one moment
/// for garbage collection's mark phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepositoryGraph {
    /// Every manifest.
    pub manifests: Vec<ManifestNode>,
    /// The manifests tags point at (each once).
    pub tagged: Vec<Digest>,
    /// `(index, child manifest)` pairs.
    pub children: Vec<(Digest, Digest)>,
    /// `(manifest, blob)` pairs: configs and layers.
    pub blob_refs: Vec<(Digest, Digest)>,
    /// Every blob linked into the repository.
    pub links: Vec<LinkNode>,
}

/// Storage figures of one repository, or of the whole store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRecord {
    /// The repository; empty for the whole store.
    pub repo: String,
    /// Blobs linked (for the whole store: distinct blobs stored).
    pub blobs: u64,
    /// Their bytes (for the whole store, each blob counted once).
    pub blob_bytes: u64,
    /// Manifests.
    pub manifests: u64,
    /// Their bytes.
    pub manifest_bytes: u64,
}

/// Storage figures: the whole store and the largest repositories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageUsage {
    /// The whole store.
    pub total: UsageRecord,
    /// Repositories, largest (blob bytes) first.
    pub repositories: Vec<UsageRecord>,
    /// Number of repositories with figures (listed or not).
    pub repository_count: u64,
}

/// What one completed garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcRunRecord {
    /// When it finished, in milliseconds since the epoch.
    pub finished_at: i64,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
    /// Tags removed by retention.
    pub tags: u64,
    /// Manifests removed.
    pub manifests: u64,
    /// Blob links removed.
    pub links: u64,
    /// Blobs removed (rows and bytes).
    pub blobs: u64,
    /// Stray bytes removed.
    pub stray: u64,
    /// Bytes deleted from the blob store.
    pub reclaimed_bytes: u64,
    /// Manifest bytes deleted from the database.
    pub manifest_bytes: u64,
}

/// Every completed garbage collection added up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcTotals {
    /// Runs recorded.
    pub runs: u64,
    /// The sums of the runs' figures (`finished_at`: the latest run's; 0 when none).
    pub sums: GcRunRecord,
}

/// Held by the one garbage collector running (see [`CollectIndex::collector_lock`]);
/// released when dropped.
#[must_use = "the lock is released when this is dropped"]
pub struct CollectorLock {
    _held: Option<Box<dyn Send + Sync>>,
}

impl CollectorLock {
    /// A lock that holds nothing (the backend needs none).
    pub fn none() -> Self {
        CollectorLock { _held: None }
    }

    /// A lock kept by `held` until dropped.
    pub fn holding(held: impl Send + Sync + 'static) -> Self {
        CollectorLock {
            _held: Some(Box::new(held)),
        }
    }
}

impl std::fmt::Debug for CollectorLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CollectorLock")
    }
}

/// What garbage collection reads and deletes. Every delete re-checks, in the
/// statement that deletes (after locking the rows, on PostgreSQL), the condition the
/// collector decided on, so that a push racing with it either lands first (and the
/// row is kept) or fails cleanly (see [`MetadataError::ReferenceGone`]).
#[async_trait]
pub trait CollectIndex: Send + Sync {
    /// Makes this process the one collector: PostgreSQL takes a session advisory lock
    /// (waiting for it when `wait`, else `None` if another process holds it); SQLite,
    /// whose single writer orders every step anyway, takes nothing.
    async fn collector_lock(&self, wait: bool) -> Result<Option<CollectorLock>>;

    /// Repository names after `last`, in order, at most `n` (as the catalog).
    async fn repositories_after(&self, last: Option<&str>, n: u32) -> Result<Vec<String>>;

    /// One repository's manifests, tags, references and links.
    async fn repository_graph(&self, repo: &RepoName) -> Result<RepositoryGraph>;

    /// Deletes those of `digests` in `repo` that, as the delete runs, were pushed
    /// before `pushed_before`, have no tag, are no child of a manifest of the
    /// repository, and either have no subject or (unless `keep_orphaned_referrers`)
    /// one absent from the repository. Returns what was deleted, with sizes.
    async fn delete_manifests_if_unreachable(
        &self,
        repo: &RepoName,
        digests: &[Digest],
        pushed_before: i64,
        keep_orphaned_referrers: bool,
    ) -> Result<Vec<(Digest, u64)>>;

    /// Unlinks those of `digests` from `repo` that, as the delete runs, were last
    /// linked before `linked_before` and that no manifest of the repository refers
    /// to. Returns what was unlinked, with sizes.
    async fn delete_links_if_unreferenced(
        &self,
        repo: &RepoName,
        digests: &[Digest],
        linked_before: i64,
    ) -> Result<Vec<(Digest, u64)>>;

    /// Blob rows no repository links, by digest after `after`, at most `n`, with sizes.
    async fn unlinked_blobs(&self, after: Option<&str>, n: u32) -> Result<Vec<(Digest, u64)>>;

    /// How many repositories link each of `digests`, in order.
    async fn link_counts(&self, digests: &[Digest]) -> Result<Vec<u64>>;

    /// Deletes the rows of those of `digests` no repository links as the delete runs,
    /// and records each as a pending byte deletion, in one transaction. Returns what
    /// was deleted, with sizes.
    async fn delete_blobs_if_unlinked(&self, digests: &[Digest]) -> Result<Vec<(Digest, u64)>>;

    /// Records pending byte deletions for those of `digests` (bytes found in the
    /// store) that have no blob row and no deletion recorded. Returns how many.
    async fn quarantine_bytes(&self, digests: &[Digest]) -> Result<u64>;

    /// Which of `digests` have a blob row or a recorded deletion, in order.
    async fn blobs_known(&self, digests: &[Digest]) -> Result<Vec<bool>>;

    /// Digests whose bytes are to be deleted, oldest first, at most `n`.
    async fn pending_byte_deletions(&self, n: u32) -> Result<Vec<Digest>>;

    /// For each of `digests` still pending and with no blob row, deletes its bytes
    /// with `bytes` and marks the deletion done, holding what orders it against
    /// [`BlobIndex::link_blob`] throughout (the entries' row locks; SQLite's write
    /// lock). Returns the digests whose bytes were deleted.
    async fn delete_bytes(&self, digests: &[Digest], bytes: &dyn BlobBytes) -> Result<Vec<Digest>>;

    /// Forgets completed byte deletions recorded before `before`. Returns how many.
    async fn forget_byte_deletions(&self, before: i64) -> Result<u64>;

    /// Storage figures: the whole store and the `top` repositories with the most blob
    /// bytes. Folds the changes recorded since the last call first.
    async fn storage_usage(&self, top: u32) -> Result<StorageUsage>;

    /// Records a completed collection.
    async fn record_gc_run(&self, run: &GcRunRecord) -> Result<()>;

    /// Every recorded collection added up.
    async fn gc_totals(&self) -> Result<GcTotals>;
}

/// The whole metadata store: every narrow index plus health and migrations.
#[async_trait]
pub trait MetadataStore:
    BlobIndex + ManifestIndex + UploadIndex + PackIndex + CollectIndex
{
    /// Runs pending migrations.
    async fn migrate(&self) -> Result<()>;

    /// Checks the database answers.
    async fn ping(&self) -> Result<()>;

    /// The connection pool's figures, for `/metrics`.
    fn pool_stats(&self) -> PoolStats;
}

/// A connection pool's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    /// Connections open.
    pub size: u64,
    /// Of those, idle.
    pub idle: u64,
    /// Requests waiting for one.
    pub waiting: u64,
    /// Connections taken from the pool since start (0 where not counted).
    pub acquires: u64,
    /// Seconds spent waiting for them, in all.
    pub wait_seconds: f64,
}

/// A shared handle to the configured metadata backend.
pub type DynMetadataStore = Arc<dyn MetadataStore>;

/// Opens the backend named by the URL scheme (`sqlite:` or `postgres:`).
pub async fn connect(url: &str, options: &PoolOptions) -> Result<DynMetadataStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, options).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::connect(url, options).await?))
    } else {
        Err(MetadataError::Database(format!(
            "unsupported metadata URL scheme in {:?} (expected sqlite:// or postgres://)",
            url.split(':').next().unwrap_or_default()
        )))
    }
}

/// Connection pool settings shared by both dialects.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Largest number of open connections.
    pub max_connections: u32,
    /// How long to wait for a connection before failing.
    pub acquire_timeout: std::time::Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// The names of a listing aggregated into one newline-separated value (`string_agg`,
/// which both dialects have). Long listings are fetched
/// as one row: sqlx's SQLite driver hands every row from its worker thread to the
/// async task separately, a thread wake-up per row (a 10,000-tag list took ~19 ms end
/// to end that way, ~5 ms as one row), and on PostgreSQL every row is a message to
/// decode. Repository names and tags cannot contain a newline.
///
/// The aggregate has no `ORDER BY` of its own: the subquery's index scan already
/// yields the names in order, and an ordered aggregate sorted them again (on SQLite,
/// half the server's time on a 10,000-tag list, by `perf`). Neither database promises
/// an aggregate sees its input in order, so the order is checked here (`BINARY` and
/// `COLLATE "C"` are byte order, as `str`'s) and restored if ever needed.
pub(crate) fn split_lines(joined: Option<String>) -> Vec<String> {
    let mut names: Vec<String> = joined
        .map(|j| j.split('\n').map(str::to_owned).collect())
        .unwrap_or_default();
    if !names.is_sorted() {
        names.sort_unstable();
    }
    names
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod listing_tests {
    use super::split_lines;

    /// A listing comes back in byte order even if the aggregate ever saw its input out
    /// of order; an empty listing is no names.
    #[test]
    fn split_lines_restores_byte_order() {
        assert_eq!(
            split_lines(Some("b\nB\na1\na".into())),
            ["B", "a", "a1", "b"]
        );
        assert_eq!(split_lines(Some("a\nb".into())), ["a", "b"]);
        assert!(split_lines(None).is_empty());
    }
}
