//! Row decoding, written once for both dialects: the columns each record is read
//! from, and the conversion of their values into the metadata layer's types. A
//! value that does not decode (a digest, name, id or JSON text that does not parse)
//! is a [`sqlx::Error::Decode`], which the metadata layer reports as
//! [`MetadataError::Corrupt`](crate::metadata::MetadataError::Corrupt).

use bytes::Bytes;
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use crate::digest::Digest;
use crate::metadata::{
    ManifestRecord, PackSummaryRecord, PackVersionRecord, Page, Referrer, UploadRecord, UsageRecord,
};
use crate::names::{RepoName, Tag};
use crate::storage::PartInfo;

/// The columns of a manifest row (`m` the table's alias), as [`manifest`] reads them.
pub(super) const MANIFEST_COLUMNS: &str = "m.digest, m.media_type, m.artifact_type, \
    m.subject_digest, m.annotations, m.body, m.created_at";

/// The columns of a referrer, as [`referrer`] reads them.
pub(super) const REFERRER_COLUMNS: &str = "digest, media_type, size, artifact_type, annotations";

/// The columns of an upload session, as [`upload`] reads them.
pub(super) const UPLOAD_COLUMNS: &str =
    "id, repo, \"offset\", hash_state, parts, created_at, updated_at";

/// The columns of a pack version, as [`pack_version`] reads them and in the order
/// `Shared::put_pack_version` binds them.
pub(crate) const PACK_VERSION_COLUMNS: &str = "pack_id, version, sort_key, prerelease, type, \
    name, description, author, search_text, repository, tag, manifest_digest, content_digest, \
    content_media_type, size, published_at, dependencies, members, metadata";

/// The columns of a pack summary, as [`pack_summary`] reads them.
pub(super) const PACK_SUMMARY_COLUMNS: &str =
    "pack_id, type, name, description, author, latest_version, versions, updated_at";

/// A row's columns by name, in the handful of types the schema uses. Implemented for
/// the rows of every sqlx driver that decodes those types, so that the decoding below
/// is written once.
pub(super) trait Columns {
    /// A `TEXT` column.
    fn text(&self, name: &str) -> sqlx::Result<String>;
    /// A nullable `TEXT` column.
    fn text_or_null(&self, name: &str) -> sqlx::Result<Option<String>>;
    /// An integer column (`INTEGER`, `BIGINT`).
    fn int(&self, name: &str) -> sqlx::Result<i64>;
    /// A `BLOB` / `BYTEA` column.
    fn bytes(&self, name: &str) -> sqlx::Result<Vec<u8>>;
    /// A `BOOLEAN` column.
    fn flag(&self, name: &str) -> sqlx::Result<bool>;
}

impl<R> Columns for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    bool: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, name: &str) -> sqlx::Result<String> {
        self.try_get(name)
    }
    fn text_or_null(&self, name: &str) -> sqlx::Result<Option<String>> {
        self.try_get(name)
    }
    fn int(&self, name: &str) -> sqlx::Result<i64> {
        self.try_get(name)
    }
    fn bytes(&self, name: &str) -> sqlx::Result<Vec<u8>> {
        self.try_get(name)
    }
    fn flag(&self, name: &str) -> sqlx::Result<bool> {
        self.try_get(name)
    }
}

/// A stored value that does not decode into its type.
pub(super) fn corrupt(e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(e.to_string().into())
}

/// A stored digest.
pub(super) fn digest(s: String) -> sqlx::Result<Digest> {
    Digest::parse(&s).map_err(corrupt)
}

/// A stored size or offset (never negative: written from a `u64`).
pub(super) fn size(n: i64) -> sqlx::Result<u64> {
    u64::try_from(n).map_err(corrupt)
}

/// A `digest, size` row.
pub(super) fn digest_and_size(row: &impl Columns) -> sqlx::Result<(Digest, u64)> {
    Ok((digest(row.text("digest")?)?, size(row.int("size")?)?))
}

/// A `storage_usage` row. A figure the changes took below zero (they never should)
/// reads as zero.
pub(super) fn usage(row: &impl Columns) -> sqlx::Result<UsageRecord> {
    let n = |name: &str| row.int(name).map(|v| u64::try_from(v).unwrap_or(0));
    Ok(UsageRecord {
        repo: row.text("repo")?,
        blobs: n("blobs")?,
        blob_bytes: n("blob_bytes")?,
        manifests: n("manifests")?,
        manifest_bytes: n("manifest_bytes")?,
    })
}

/// The first `n` of `items` (read `n + 1` at most), and whether more followed.
pub(super) fn page<T>(mut items: Vec<T>, n: u32) -> Page<T> {
    let more = items.len() > n as usize;
    items.truncate(n as usize);
    Page { items, more }
}

/// An upload's parts as stored: JSON text.
pub(super) fn parts_json(parts: &[PartInfo]) -> String {
    serde_json::to_string(parts).expect("parts serialize")
}

/// A manifest from [`MANIFEST_COLUMNS`].
pub(super) fn manifest(row: &impl Columns) -> sqlx::Result<ManifestRecord> {
    Ok(ManifestRecord {
        digest: digest(row.text("digest")?)?,
        media_type: row.text("media_type")?,
        artifact_type: row.text_or_null("artifact_type")?,
        subject: row
            .text_or_null("subject_digest")?
            .map(digest)
            .transpose()?,
        annotations: row.text_or_null("annotations")?,
        body: Bytes::from(row.bytes("body")?),
        created_at: row.int("created_at")?,
    })
}

/// A referrer from [`REFERRER_COLUMNS`].
pub(super) fn referrer(row: &impl Columns) -> sqlx::Result<Referrer> {
    Ok(Referrer {
        digest: digest(row.text("digest")?)?,
        media_type: row.text("media_type")?,
        size: size(row.int("size")?)?,
        artifact_type: row.text_or_null("artifact_type")?,
        annotations: row.text_or_null("annotations")?,
    })
}

/// An upload session from [`UPLOAD_COLUMNS`].
pub(super) fn upload(row: &impl Columns) -> sqlx::Result<UploadRecord> {
    Ok(UploadRecord {
        id: Uuid::parse_str(&row.text("id")?).map_err(corrupt)?,
        repo: RepoName::parse(&row.text("repo")?).map_err(corrupt)?,
        offset: size(row.int("offset")?)?,
        hash_state: row.bytes("hash_state")?,
        parts: serde_json::from_str(&row.text("parts")?).map_err(corrupt)?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

/// An upload session's id, as stored.
pub(super) fn upload_id(id: &str) -> sqlx::Result<Uuid> {
    Uuid::parse_str(id).map_err(corrupt)
}

/// A pack version from [`PACK_VERSION_COLUMNS`].
pub(super) fn pack_version(row: &impl Columns) -> sqlx::Result<PackVersionRecord> {
    Ok(PackVersionRecord {
        pack_id: row.text("pack_id")?,
        version: row.text("version")?,
        sort_key: row.text("sort_key")?,
        prerelease: row.flag("prerelease")?,
        pack_type: row.text("type")?,
        name: row.text("name")?,
        description: row.text("description")?,
        author: row.text("author")?,
        search_text: row.text("search_text")?,
        repository: RepoName::parse(&row.text("repository")?).map_err(corrupt)?,
        tag: Tag::parse(&row.text("tag")?).map_err(corrupt)?,
        manifest_digest: digest(row.text("manifest_digest")?)?,
        content_digest: digest(row.text("content_digest")?)?,
        content_media_type: row.text("content_media_type")?,
        size: size(row.int("size")?)?,
        published_at: row.int("published_at")?,
        dependencies: row.text("dependencies")?,
        members: row.text("members")?,
        metadata: row.text("metadata")?,
    })
}

/// A pack summary from [`PACK_SUMMARY_COLUMNS`].
pub(super) fn pack_summary(row: &impl Columns) -> sqlx::Result<PackSummaryRecord> {
    Ok(PackSummaryRecord {
        pack_id: row.text("pack_id")?,
        pack_type: row.text("type")?,
        name: row.text("name")?,
        description: row.text("description")?,
        author: row.text("author")?,
        latest_version: row.text("latest_version")?,
        versions: size(row.int("versions")?)?,
        updated_at: row.int("updated_at")?,
    })
}
