//! PostgreSQL dialect of the metadata store: what production replicas share.

use std::str::FromStr;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::*;

/// Metadata in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`).
    pub async fn connect(url: &str, options: &PoolOptions) -> Result<Self> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| MetadataError::Database(format!("invalid postgres URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            // Start without a connection: a replica comes up (and reports itself not
            // ready) while the database is still unreachable.
            .min_connections(0)
            .connect_lazy_with(connect);
        Ok(PostgresStore { pool })
    }
}

fn digest(s: String) -> Result<Digest> {
    Digest::parse(&s).map_err(|e| MetadataError::Corrupt(e.to_string()))
}

fn manifest_from_row(row: &sqlx::postgres::PgRow) -> Result<ManifestRecord> {
    Ok(ManifestRecord {
        digest: digest(row.try_get("digest")?)?,
        media_type: row.try_get("media_type")?,
        artifact_type: row.try_get("artifact_type")?,
        subject: row
            .try_get::<Option<String>, _>("subject_digest")?
            .map(digest)
            .transpose()?,
        annotations: row.try_get("annotations")?,
        body: Bytes::from(row.try_get::<Vec<u8>, _>("body")?),
        created_at: row.try_get("created_at")?,
    })
}

const MANIFEST_COLUMNS: &str = "m.digest, m.media_type, m.artifact_type, m.subject_digest, m.annotations, m.body, m.created_at";

fn page<T>(mut items: Vec<T>, n: u32) -> Page<T> {
    let more = items.len() > n as usize;
    items.truncate(n as usize);
    Page { items, more }
}

#[async_trait]
impl BlobIndex for PostgresStore {
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(digest.as_str())
            .bind(size as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO repository_blobs (repo, digest, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repo = $1 AND rb.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let done = sqlx::query("DELETE FROM repository_blobs WHERE repo = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1::int8 FROM repositories WHERE name = $1")
                .bind(repo.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn list_repositories(&self, last: Option<&str>, n: u32) -> Result<Page<String>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(i64::from(n) + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(page(names, n))
    }
}

#[async_trait]
impl ManifestIndex for PostgresStore {
    async fn missing_blobs(&self, repo: &RepoName, digests: &[Digest]) -> Result<Vec<Digest>> {
        let mut missing = Vec::new();
        let mut conn = self.pool.acquire().await?;
        for d in digests {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT 1::int8 FROM repository_blobs WHERE repo = $1 AND digest = $2",
            )
            .bind(repo.as_str())
            .bind(d.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            if found.is_none() {
                missing.push(d.clone());
            }
        }
        Ok(missing)
    }

    async fn missing_manifests(&self, repo: &RepoName, digests: &[Digest]) -> Result<Vec<Digest>> {
        let mut missing = Vec::new();
        let mut conn = self.pool.acquire().await?;
        for d in digests {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT 1::int8 FROM manifests WHERE repo = $1 AND digest = $2")
                    .bind(repo.as_str())
                    .bind(d.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
            if found.is_none() {
                missing.push(d.clone());
            }
        }
        Ok(missing)
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &ManifestRecord,
        references: &[(Digest, ReferenceKind)],
        tags: &[Tag],
    ) -> Result<()> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO manifests (repo, digest, media_type, artifact_type, subject_digest,
                                    annotations, size, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(m.digest.as_str())
        .bind(&m.media_type)
        .bind(&m.artifact_type)
        .bind(m.subject.as_ref().map(Digest::as_str))
        .bind(&m.annotations)
        .bind(m.body.len() as i64)
        .bind(m.body.as_ref())
        .bind(m.created_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() > 0 {
            for (child, kind) in references {
                sqlx::query(
                    "INSERT INTO manifest_references (repo, manifest, child_digest, kind)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(repo.as_str())
                .bind(m.digest.as_str())
                .bind(child.as_str())
                .bind(kind.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        // Upserted in one order, so that pushes sharing tags cannot deadlock on them.
        let mut tags: Vec<&Tag> = tags.iter().collect();
        tags.sort_unstable();
        tags.dedup();
        for tag in tags {
            sqlx::query(
                "INSERT INTO tags (repo, name, manifest_digest, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (repo, name) DO UPDATE
                 SET manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at",
            )
            .bind(repo.as_str())
            .bind(tag.as_str())
            .bind(m.digest.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {MANIFEST_COLUMNS} FROM manifests m WHERE m.repo = $1 AND m.digest = $2"
        ))
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(manifest_from_row).transpose()
    }

    async fn get_manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {MANIFEST_COLUMNS} FROM tags t
             JOIN manifests m ON m.repo = t.repo AND m.digest = t.manifest_digest
             WHERE t.repo = $1 AND t.name = $2"
        ))
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(manifest_from_row).transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        // Tags and references go with it (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM manifests WHERE repo = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let done = sqlx::query("DELETE FROM tags WHERE repo = $1 AND name = $2")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: u32) -> Result<Page<String>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM tags WHERE repo = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(repo.as_str())
        .bind(last.unwrap_or(""))
        .bind(i64::from(n) + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(page(names, n))
    }

    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&str>,
        n: u32,
    ) -> Result<Page<Referrer>> {
        let rows = sqlx::query(
            "SELECT digest, media_type, size, artifact_type, annotations FROM manifests
             WHERE repo = $1 AND subject_digest = $2 AND digest > $3
               AND ($4::text IS NULL OR artifact_type = $5)
             ORDER BY digest LIMIT $6",
        )
        .bind(repo.as_str())
        .bind(subject.as_str())
        .bind(last.unwrap_or(""))
        .bind(artifact_type)
        .bind(artifact_type)
        .bind(i64::from(n) + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(Referrer {
                    digest: digest(row.try_get("digest")?)?,
                    media_type: row.try_get("media_type")?,
                    size: row.try_get::<i64, _>("size")? as u64,
                    artifact_type: row.try_get("artifact_type")?,
                    annotations: row.try_get("annotations")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(page(items, n))
    }
}

fn upload_from_row(row: &sqlx::postgres::PgRow) -> Result<UploadRecord> {
    let id: String = row.try_get("id")?;
    let repo: String = row.try_get("repo")?;
    let parts: String = row.try_get("parts")?;
    Ok(UploadRecord {
        id: Uuid::parse_str(&id).map_err(|e| MetadataError::Corrupt(e.to_string()))?,
        repo: RepoName::parse(&repo).map_err(|e| MetadataError::Corrupt(e.to_string()))?,
        offset: row.try_get::<i64, _>("offset")? as u64,
        hash_state: row.try_get("hash_state")?,
        parts: serde_json::from_str(&parts).map_err(|e| MetadataError::Corrupt(e.to_string()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn parts_json(parts: &[PartInfo]) -> String {
    serde_json::to_string(parts).expect("parts serialize")
}

#[async_trait]
impl UploadIndex for PostgresStore {
    async fn create_upload(&self, u: &UploadRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO uploads (id, repo, \"offset\", hash_state, parts, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(u.id.to_string())
        .bind(u.repo.as_str())
        .bind(u.offset as i64)
        .bind(&u.hash_state)
        .bind(parts_json(&u.parts))
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_upload(&self, repo: &RepoName, id: Uuid) -> Result<Option<UploadRecord>> {
        let row = sqlx::query(
            "SELECT id, repo, \"offset\", hash_state, parts, created_at, updated_at
             FROM uploads WHERE id = $1 AND repo = $2",
        )
        .bind(id.to_string())
        .bind(repo.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(upload_from_row).transpose()
    }

    async fn update_upload(&self, u: &UploadRecord, expected_offset: u64) -> Result<()> {
        let done = sqlx::query(
            "UPDATE uploads SET \"offset\" = $1, hash_state = $2, parts = $3, updated_at = $4
             WHERE id = $5 AND \"offset\" = $6",
        )
        .bind(u.offset as i64)
        .bind(&u.hash_state)
        .bind(parts_json(&u.parts))
        .bind(u.updated_at)
        .bind(u.id.to_string())
        .bind(expected_offset as i64)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(MetadataError::Conflict)
        }
    }

    async fn delete_upload(&self, id: Uuid) -> Result<bool> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn stale_uploads(&self, updated_before: i64, limit: u32) -> Result<Vec<Uuid>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM uploads WHERE updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(updated_before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|id| Uuid::parse_str(id).map_err(|e| MetadataError::Corrupt(e.to_string())))
            .collect()
    }

    async fn upload_exists(&self, id: Uuid) -> Result<bool> {
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM uploads WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }
}

#[async_trait]
impl MetadataStore for PostgresStore {
    async fn migrate(&self) -> Result<()> {
        super::migrations::postgres()
            .await
            .run(&self.pool)
            .await
            .map_err(|e| MetadataError::Database(format!("migration failed: {e}")))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| MetadataError::Unavailable(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
#[async_trait]
impl super::suite::Inspect for PostgresStore {
    async fn reference_rows(&self, repo: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM manifest_references WHERE repo = $1")
            .bind(repo)
            .fetch_one(&self.pool)
            .await
            .expect("count manifest references")
    }
}
