//! Reading and deleting blobs. Metadata decides visibility; storage serves bytes.

use std::ops::Range;

use super::{Error, Registry, Result};
use crate::digest::Digest;
use crate::names::RepoName;
use crate::storage::{ByteStream, StorageError};

/// A blob opened for reading.
pub struct BlobRead {
    /// Size of the whole blob.
    pub size: u64,
    /// The bytes served (`None` for `HEAD`).
    pub body: Option<ByteStream>,
    /// The byte range served, when a range was asked for.
    pub range: Option<Range<u64>>,
}

impl Registry {
    /// Size of a blob linked into `repo`.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.meta
            .blob_in_repo(repo, digest)
            .await?
            .ok_or(Error::BlobUnknown)
    }

    /// Opens a blob, whole or the inclusive-exclusive `range` resolved by `resolve`
    /// against the blob's size (returning `None` for an unsatisfiable range).
    pub async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        resolve: impl FnOnce(u64) -> Option<Option<Range<u64>>>,
    ) -> Result<BlobRead> {
        let size = self.stat_blob(repo, digest).await?;
        let range = resolve(size).ok_or(Error::RangeNotSatisfiable { size })?;
        let body = match &range {
            Some(r) if r.start >= r.end => Box::pin(futures_util::stream::empty()) as ByteStream,
            _ => match self.blobs.get(digest, range.clone()).await {
                Ok(body) => body,
                Err(StorageError::NotFound(_)) => {
                    tracing::error!(%digest, "blob indexed but missing from storage");
                    return Err(Error::BlobUnknown);
                }
                Err(StorageError::RangeNotSatisfiable) => {
                    return Err(Error::RangeNotSatisfiable { size });
                }
                Err(e) => return Err(e.into()),
            },
        };
        Ok(BlobRead {
            size,
            body: Some(body),
            range,
        })
    }

    /// Unlinks a blob from `repo`. Its bytes stay until garbage collection finds no
    /// repository still linking it.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if self.meta.unlink_blob(repo, digest).await? {
            Ok(())
        } else {
            Err(Error::BlobUnknown)
        }
    }
}
