//! The domain: uploads, blobs, manifests, tags, referrers, the catalog and the packs
//! index, with the rules that keep them consistent (verify before visible, references
//! must exist, bytes first then metadata, a pack indexed whichever API pushed it).
//!
//! Knows neither HTTP nor JSON error envelopes: `oci/` and `packs/` translate.
//! Talks to storage and metadata only through their traits.

mod blobs;
pub mod bundle;
pub mod gc;
pub mod journal;
mod manifests;
pub mod packs;
pub mod retention;
mod uploads;

use std::sync::Arc;

use crate::digest::{Digest, DigestError};
use crate::metadata::{DynMetadataStore, MetadataError, Page, Referrer};
use crate::names::{NameError, RepoName};
use crate::storage::{DynBlobStore, StorageError};

pub use blobs::BlobRead;
pub use manifests::{ManifestPushed, media_types, validate_manifest_bytes};
pub use packs::{PackSettings, PackType, PublishedPack};
pub use uploads::{ChunkRange, ExpiryReport, UploadState};

/// Everything that can go wrong in the domain, as the API layers need to tell it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The blob is not in this repository.
    #[error("blob unknown to registry")]
    BlobUnknown,
    /// No such upload session in this repository.
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    /// The upload request is malformed.
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    /// A chunk did not start where the upload stands.
    #[error("chunk out of order: the upload is at offset {offset}")]
    ChunkOutOfOrder {
        /// Bytes received so far.
        offset: u64,
    },
    /// The content did not hash to the digest given, or the digest is malformed.
    #[error("digest invalid: {0}")]
    DigestInvalid(String),
    /// A declared length did not match the content.
    #[error("size invalid: {0}")]
    SizeInvalid(String),
    /// The content exceeds a configured limit.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The limit in bytes.
        limit: u64,
    },
    /// The manifest is malformed or of an unsupported type.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// A manifest push names more tags (`?tag=`) than the configured limit.
    #[error("{count} tags in one manifest push; at most {limit} are accepted")]
    TooManyTags {
        /// Tags named.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// No such manifest or tag.
    #[error("manifest unknown")]
    ManifestUnknown,
    /// The stored manifest is of a type the client's `Accept` excludes.
    #[error("manifest of type {0} is not acceptable to the client")]
    ManifestNotAcceptable(String),
    /// The manifest refers to blobs or manifests not in the repository.
    #[error("manifest references unknown blobs or manifests")]
    ManifestBlobUnknown(Vec<Digest>),
    /// The repository name is invalid.
    #[error("{0}")]
    NameInvalid(NameError),
    /// The repository does not exist.
    #[error("repository name not known to registry")]
    NameUnknown,
    /// A tag or reference is invalid.
    #[error("{0}")]
    ReferenceInvalid(NameError),
    /// A byte range outside the blob.
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// Size of the blob.
        size: u64,
    },
    /// The operation is not supported.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A dependency (database, object store) is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// The database turned the work away for now (lock conflicts that outlasted the
    /// metadata layer's retries); the same request may succeed a moment later.
    #[error("busy: {detail}")]
    Busy {
        /// What the database said (for the log, not the client).
        detail: String,
        /// Seconds the client should wait before trying again.
        retry_after_secs: u64,
    },
    /// A cap on something clients open (upload sessions) is reached; retry later.
    #[error("{message}")]
    TooManyRequests {
        /// What is at its cap, for the client.
        message: String,
        /// Seconds the client should wait before trying again.
        retry_after_secs: u64,
    },
    /// Another request is writing to this upload (its body may have stalled); the
    /// session is unchanged, and the client may retry.
    #[error("another request is writing to this upload; retry later")]
    UploadBusy,
    /// The blob store is out of space (or over its quota): nothing was stored, and an
    /// upload session stays where it was. Holds the store's detail, for the log.
    #[error("storage is full: {0}")]
    InsufficientStorage(String),
    /// The request body could not be read to the end.
    #[error("request body: {0}")]
    Body(String),
    /// A pack manifest that is not a JSON object of the expected shape, or a request
    /// to the packs API that cannot be understood.
    #[error("{0}")]
    PackMalformed(String),
    /// A pack manifest that breaks a rule (identifier, semver, type, dependencies).
    #[error("{0}")]
    PackInvalid(String),
    /// The pack version exists with other content, or its tag is taken.
    #[error("{0}")]
    PackConflict(String),
    /// A push would move an immutable tag (a released version's) to other content.
    #[error("{0}")]
    TagImmutable(String),
    /// No such pack, or no version of it matches.
    #[error("{0}")]
    PackUnknown(String),
    /// An offline bundle refused: not an OCI image layout archive, or one whose
    /// content is corrupted, incomplete or unsafe to unpack. Nothing was stored.
    #[error("{0}")]
    BundleInvalid(String),
    /// An offline bundle over one of its bounds (an entry, the whole, or its
    /// decompression ratio). Nothing was stored.
    #[error("{0}")]
    BundleTooLarge(String),
    /// Anything else: a bug or a backend failure.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(_) => Error::BlobUnknown,
            StorageError::RangeNotSatisfiable => Error::RangeNotSatisfiable { size: 0 },
            StorageError::Body(e) => Error::Body(e.to_string()),
            StorageError::Unavailable(m) => Error::Unavailable(format!("object store: {m}")),
            StorageError::Lost(m) => Error::BlobUploadInvalid(m),
            StorageError::Full(m) => Error::InsufficientStorage(m),
            StorageError::Busy => Error::UploadBusy,
            StorageError::Other(m) => Error::Internal(format!("storage: {m}")),
        }
    }
}

impl From<MetadataError> for Error {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::Unavailable(m) => Error::Unavailable(format!("database: {m}")),
            // The metadata layer already retried; a second is plenty for the locks
            // involved (held for one transaction each) to be gone.
            MetadataError::Busy(m) => Error::Busy {
                detail: format!("database: {m}"),
                retry_after_secs: 1,
            },
            MetadataError::TagImmutable => {
                Error::TagImmutable("a tag this push would move is immutable".into())
            }
            MetadataError::BytesGone => Error::BlobUploadInvalid(
                "the blob's bytes were removed by garbage collection while it was uploaded; \
                 upload it again"
                    .into(),
            ),
            MetadataError::Bytes(e) => match e.downcast::<StorageError>() {
                Ok(storage) => Error::from(*storage),
                Err(other) => Error::Internal(format!("storage: {other}")),
            },
            other => Error::Internal(format!("metadata: {other}")),
        }
    }
}

impl From<DigestError> for Error {
    fn from(e: DigestError) -> Self {
        Error::DigestInvalid(e.to_string())
    }
}

/// A listing's `last` position as every database accepts it. Names, tags and digests
/// hold no character below '-', so text cut at a NUL names the same position (and
/// PostgreSQL refuses NUL in text).
fn position(last: Option<&str>) -> Option<&str> {
    last.map(|l| l.split('\0').next().unwrap_or_default())
}

/// Result alias of the domain.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Limits the domain enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest blob accepted, in bytes (0: no limit).
    pub max_blob_bytes: u64,
    /// Page size of tag and catalog listings when the client gives no `n`, and the
    /// largest `n` honoured.
    pub max_page: u32,
    /// Page size of referrer listings.
    pub referrers_page: u32,
    /// Most `?tag=` values one manifest push may name.
    pub max_tags_per_push: usize,
    /// Most upload sessions open at once in the registry (0: no cap).
    pub max_upload_sessions: u64,
    /// Most upload sessions open at once in one repository (0: no cap).
    pub max_upload_sessions_per_repository: u64,
    /// Repositories whose version tags never move (`tags.immutable`): a name, a
    /// prefix ending in `/`, or `*`.
    pub immutable_tags: Vec<String>,
    /// Bounds on the bundle archives read.
    pub bundles: bundle::BundleLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_blob_bytes: 0,
            max_page: 10_000,
            referrers_page: 500,
            max_tags_per_push: 100,
            max_upload_sessions: 100_000,
            max_upload_sessions_per_repository: 1_000,
            immutable_tags: vec!["packs/".into()],
            bundles: bundle::BundleLimits::default(),
        }
    }
}

/// The registry: the one domain service every HTTP layer calls.
#[derive(Clone)]
pub struct Registry {
    blobs: DynBlobStore,
    meta: DynMetadataStore,
    limits: Arc<Limits>,
    packs: Arc<PackSettings>,
}

/// The state of one dependency, as `/readyz` reports it.
#[derive(Debug, Clone)]
pub struct DependencyStatus {
    /// `database` or `storage`.
    pub name: &'static str,
    /// `None` when healthy, else why not.
    pub error: Option<String>,
}

impl Registry {
    /// Builds the registry over its two backends.
    pub fn new(blobs: DynBlobStore, meta: DynMetadataStore, limits: Limits) -> Self {
        Registry {
            blobs,
            meta,
            limits: Arc::new(limits),
            packs: Arc::new(PackSettings::default()),
        }
    }

    /// The same registry with these packs settings (repository prefix, content limit).
    pub fn with_pack_settings(mut self, settings: PackSettings) -> Self {
        self.packs = Arc::new(settings);
        self
    }

    /// The packs settings in force.
    pub fn pack_settings(&self) -> &PackSettings {
        &self.packs
    }

    /// What the metadata layer may ask of this registry's blob store (see
    /// [`BlobBytes`](crate::metadata::BlobBytes)).
    pub(crate) fn bytes(&self) -> gc::StoreBytes<'_> {
        gc::StoreBytes(self.blobs.as_ref())
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The smallest chunk the blob backend accepts (0: any).
    pub fn min_chunk(&self) -> u64 {
        self.blobs.min_part_size()
    }

    /// The database pool's figures (for `/metrics`).
    pub fn pool_stats(&self) -> crate::metadata::PoolStats {
        self.meta.pool_stats()
    }

    /// Checks both dependencies.
    pub async fn readiness(&self) -> Vec<DependencyStatus> {
        let (db, store) = tokio::join!(self.meta.ping(), self.blobs.ping());
        vec![
            DependencyStatus {
                name: "database",
                error: db.err().map(|e| e.to_string()),
            },
            DependencyStatus {
                name: "storage",
                error: store.err().map(|e| e.to_string()),
            },
        ]
    }

    /// Tags of a repository, in byte order, after `last`, at most `n`.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<u32>,
    ) -> Result<Page<String>> {
        if !self.meta.repository_exists(repo).await? {
            return Err(Error::NameUnknown);
        }
        let n = n.unwrap_or(self.limits.max_page).min(self.limits.max_page);
        if n == 0 {
            return Ok(Page {
                items: vec![],
                more: false,
            });
        }
        Ok(self.meta.list_tags(repo, position(last), n).await?)
    }

    /// Repository names after `last`, at most `n`.
    pub async fn catalog(&self, last: Option<&str>, n: Option<u32>) -> Result<Page<String>> {
        let n = n.unwrap_or(self.limits.max_page).min(self.limits.max_page);
        if n == 0 {
            return Ok(Page {
                items: vec![],
                more: false,
            });
        }
        Ok(self.meta.list_repositories(position(last), n).await?)
    }

    /// Manifests in `repo` whose `subject` is `subject`. Never fails for an unknown
    /// subject or repository: the answer is then empty.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&str>,
    ) -> Result<Page<Referrer>> {
        if artifact_type.is_some_and(|a| a.contains('\0')) {
            // No stored artifact type holds a NUL (PostgreSQL text cannot).
            return Ok(Page {
                items: vec![],
                more: false,
            });
        }
        Ok(self
            .meta
            .list_referrers(
                repo,
                subject,
                artifact_type,
                position(last),
                self.limits.referrers_page,
            )
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full store and a busy upload reach the API layers as their own errors (507
    /// and 503 there), not as internal ones.
    #[test]
    fn storage_errors_map_to_domain_errors() {
        let full = Error::from(StorageError::Full("No space left on device".into()));
        assert!(matches!(full, Error::InsufficientStorage(_)), "{full:?}");
        assert!(matches!(Error::from(StorageError::Busy), Error::UploadBusy));
    }
}
