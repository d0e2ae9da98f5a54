//! The SQL backends of the metadata store (sqlx, runtime-checked queries): SQLite,
//! the embedded default, and PostgreSQL, what production replicas share.
//!
//! The statements both dialects run as they are live here, in [`Shared`], written
//! once with `$n` placeholders (which SQLite reads as PostgreSQL does); `rows.rs`
//! decodes rows for both. Each dialect file keeps its connections and only the SQL
//! it alone speaks: the manifest push, the missing-reference checks, tag listing,
//! pack search and the classification of its errors. Each dialect's schema lives in
//! `migrations/<dialect>/`.

mod postgres;
pub(crate) mod rows;
mod sqlite;

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{
    BlobBytes, GcRunRecord, GcTotals, LinkNode, ManifestNode, ManifestRecord, MetadataError,
    PackSummaryRecord, PackVersionRecord, Page, Referrer, RepositoryGraph, Result, SessionCap,
    SessionCaps, StorageUsage, UploadRecord, split_lines,
};
use crate::digest::Digest;
use crate::names::{RepoName, Tag};
use rows::{
    Columns, MANIFEST_COLUMNS, PACK_SUMMARY_COLUMNS, PACK_VERSION_COLUMNS, REFERRER_COLUMNS,
    UPLOAD_COLUMNS,
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Whether the database's error says the work was turned away for now and may
/// succeed if tried again (see [`MetadataError::Busy`]), in either dialect.
pub(super) fn busy(e: &dyn DatabaseError) -> bool {
    postgres::busy(e) || sqlite::busy(e)
}

/// Whether the database's error says a row the write refers to is gone (see
/// [`MetadataError::ReferenceGone`]), in either dialect: a foreign key violation, or
/// the refusal of the `manifest_reference_target` trigger.
pub(super) fn reference_gone(e: &dyn DatabaseError) -> bool {
    postgres::reference_gone(e) || sqlite::reference_gone(e)
}

/// Opens connections for a deadpool pool (PostgreSQL's, SQLite's readers), used
/// instead of sqlx's own pool, which pings every connection it takes back: a second
/// round trip for a one-query request. A connection that sat idle for
/// `ping_if_idle_for` is pinged before it is handed out again, and replaced if that
/// fails; one in steady use goes out as it is. One a query broke never comes back
/// (each dialect's `fail`).
#[derive(Debug)]
pub(super) struct Connector<C: sqlx::Connection> {
    pub options: C::Options,
    pub ping_if_idle_for: Option<Duration>,
}

impl<C: sqlx::Connection> deadpool::managed::Manager for Connector<C> {
    type Type = C;
    type Error = sqlx::Error;

    async fn create(&self) -> std::result::Result<C, sqlx::Error> {
        C::connect_with(&self.options).await
    }

    async fn recycle(
        &self,
        conn: &mut C,
        metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<sqlx::Error> {
        if self
            .ping_if_idle_for
            .is_some_and(|idle| metrics.last_used() >= idle)
        {
            conn.ping().await?;
        }
        Ok(())
    }
}

impl<C: sqlx::Connection> Connector<C> {
    /// A pool of at most `max_size` connections from this connector, where taking,
    /// opening or checking a connection waits at most `timeout`.
    fn pool(self, max_size: u32, timeout: Duration) -> Result<deadpool::managed::Pool<Self>> {
        deadpool::managed::Pool::builder(self)
            .max_size(max_size.max(1) as usize)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            // The connection used last goes out first: under light load one stays in
            // use (and unpinged) while the others idle, and a SQLite connection's
            // worker thread is then the one most likely still on a CPU.
            .queue_mode(deadpool::managed::QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| MetadataError::Database(format!("connection pool: {e}")))
    }
}

/// A connection from `pool`; `Unavailable` if none came within its timeout.
async fn take<C: sqlx::Connection>(
    pool: &deadpool::managed::Pool<Connector<C>>,
) -> Result<deadpool::managed::Object<Connector<C>>> {
    match pool.get().await {
        Ok(object) => Ok(object),
        Err(deadpool::managed::PoolError::Backend(e)) => Err(e.into()),
        Err(e) => Err(MetadataError::Unavailable(format!(
            "no database connection: {e}"
        ))),
    }
}

/// Whether the database answered `e` in the normal course (a constraint, a missing
/// row, a value that does not decode), leaving the connection fit for reuse; any
/// other failure (I/O, a crashed worker, the server going away) may have broken it.
fn answered(e: &sqlx::Error) -> bool {
    match e {
        // Answers read to the end, whose values did not decode.
        sqlx::Error::RowNotFound
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_) => true,
        sqlx::Error::Database(d) => !super::server_went_away(d.as_ref()),
        _ => false,
    }
}

/// How many times a write is tried again after it lost a race with a delete of a row
/// it refers to (see [`MetadataError::ReferenceGone`]) where trying again is right.
const REFERENCE_RETRIES: u32 = 3;

/// Garbage collection deletes in batches of at most this many rows.
pub(super) const GC_BATCH: usize = 256;

/// How many times a write is tried again after [`MetadataError::Busy`], by default.
const TRANSIENT_RETRIES: u32 = 3;

/// Runs `op` again while it fails with [`MetadataError::Busy`], at most `retries`
/// more times, then returns its last result. Each pause is about twice the one
/// before (4, 8, 16 ms, …), scaled by a random factor between 0.5 and 1.5, so
/// that transactions that collided once (a deadlock's two sides) do not collide
/// again in step. `op` runs a whole transaction (or one autocommitted statement):
/// whatever it did before failing has been rolled back.
async fn retry<T, F, Fut>(retries: u32, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(MetadataError::Busy(why)) if attempt < retries => {
                attempt += 1;
                let pause = backoff(attempt);
                tracing::debug!(attempt, ?pause, error = %why, "database busy; trying again");
                tokio::time::sleep(pause).await;
            }
            done => return done,
        }
    }
}

/// The pause before the `attempt`-th retry (see [`retry`]).
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(4).saturating_mul(1 << attempt.saturating_sub(1).min(8));
    base.mul_f64(0.5 + fastrand::f64())
}

/// A cap as SQL compares it (0: none; caps past `i64::MAX` are as good as none).
fn cap(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What a statement changed, as each driver reports it (an inherent method of each
/// driver's result type, which no sqlx trait names).
trait RowsAffected {
    /// Rows inserted, updated or deleted.
    fn rows(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

/// The statements both dialects share, for the database `DB`. Each takes the
/// executor to run on (a pool, a connection, a transaction), so that the dialect
/// decides where it runs (SQLite's writer or a reader, a PostgreSQL connection it can
/// drop if the query broke it), and returns sqlx's error for the dialect to map.
struct Shared<DB>(PhantomData<DB>);

impl<DB> Shared<DB>
where
    DB: Database,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Row: Columns,
    DB::QueryResult: RowsAffected,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Decode<'q, DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
    (Option<String>,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    // -----------------------------------------------------------------------------
    // Blobs and repositories

    /// Records a blob and links it into `repo`, creating the repository, inside the
    /// caller's transaction (see [`BlobIndex::link_blob`]): the repository, the blob
    /// row, the blob's recorded deletion taken back (its bytes checked with `bytes`
    /// when the deletion had completed), then the link, whose time is now.
    ///
    /// [`BlobIndex::link_blob`]: crate::metadata::BlobIndex::link_blob
    async fn link_blob(
        tx: &mut DB::Connection,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        now: i64,
        bytes: &dyn BlobBytes,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(digest.as_str())
        .bind(size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let taken_back =
            sqlx::query("DELETE FROM blob_deletions WHERE digest = $1 RETURNING bytes_deleted")
                .bind(digest.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(row) = taken_back
            && row.flag("bytes_deleted")?
            && !bytes.present(digest).await.map_err(MetadataError::Bytes)?
        {
            return Err(MetadataError::BytesGone);
        }
        sqlx::query(
            "INSERT INTO repository_blobs (repo, digest, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (repo, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Size of `digest` if linked into `repo`.
    async fn blob_in_repo<'e>(
        e: impl Executor<'e, Database = DB>,
        repo: &RepoName,
        digest: &Digest,
    ) -> sqlx::Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repo = $1 AND rb.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(e)
        .await?;
        size.map(rows::size).transpose()
    }

    /// Size of `digest` if known anywhere.
    async fn blob_size<'e>(
        e: impl Executor<'e, Database = DB>,
        digest: &Digest,
    ) -> sqlx::Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest.as_str())
            .fetch_optional(e)
            .await?;
        size.map(rows::size).transpose()
    }

    /// Removes `digest`'s link from `repo`; whether there was one.
    async fn unlink_blob<'e>(
        e: impl Executor<'e, Database = DB>,
        repo: &RepoName,
        digest: &Digest,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query("DELETE FROM repository_blobs WHERE repo = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.as_str())
            .execute(e)
            .await?;
        Ok(done.rows() > 0)
    }

    /// Whether `repo` exists.
    async fn repository_exists<'e>(
        e: impl Executor<'e, Database = DB>,
        repo: &RepoName,
    ) -> sqlx::Result<bool> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(e)
            .await?;
        Ok(row.is_some())
    }

    /// Repository names after `last`, at most `n`, as one aggregated row (see
    /// [`split_lines`]).
    async fn list_repositories<'e>(
        e: impl Executor<'e, Database = DB>,
        last: Option<&str>,
        n: u32,
    ) -> sqlx::Result<Page<String>> {
        let joined: Option<String> = sqlx::query_scalar(
            "SELECT string_agg(name, $3) FROM
               (SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2) s",
        )
        .bind(last.unwrap_or(""))
        .bind(i64::from(n) + 1)
        .bind("\n")
        .fetch_one(e)
        .await?;
        Ok(rows::page(split_lines(joined), n))
    }

    // -----------------------------------------------------------------------------
    // Manifests, tags and referrers

    /// A manifest by digest.
    async fn get_manifest<'e>(
        e: impl Executor<'e, Database = DB>,
        repo: &RepoName,
        digest: &Digest,
    ) -> sqlx::Result<Option<ManifestRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {MANIFEST_COLUMNS} FROM manifests m WHERE m.repo = $1 AND m.digest = $2"
        ))
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(e)
        .await?;
        row.as_ref().map(rows::manifest).transpose()
    }

    /// A manifest by tag.
    async fn get_manifest_by_tag<'e>(
        e: impl Executor<'e, Database = DB>,
        repo: &RepoName,
        tag: &Tag,
    ) -> sqlx::Result<Option<ManifestRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {MANIFEST_COLUMNS} FROM tags t
             JOIN manifests m ON m.repo = t.repo AND m.digest = t.manifest_digest
             WHERE t.repo = $1 AND t.name = $2"
        ))
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(e)
        .await?;
        row.as_ref().map(rows::manifest).transpose()
    }

    /// Deletes a manifest; its tags, references and pack rows go with it (`ON DELETE
    /// CASCADE`). Whether it existed.
    async fn delete_manifest<'e>(
        e: impl Executor<'e, Database = DB>,
        repo: &RepoName,
        digest: &Digest,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query("DELETE FROM manifests WHERE repo = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.as_str())
            .execute(e)
            .await?;
        Ok(done.rows() > 0)
    }

    /// Deletes a tag (and the pack row it names, by cascade). Whether it existed.
    async fn delete_tag<'e>(
        e: impl Executor<'e, Database = DB>,
        repo: &RepoName,
        tag: &Tag,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query("DELETE FROM tags WHERE repo = $1 AND name = $2")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .execute(e)
            .await?;
        Ok(done.rows() > 0)
    }

    /// Manifests of `repo` whose subject is `subject` (of `artifact_type`, if given),
    /// by digest after `last`, at most `n`.
    async fn list_referrers<'e>(
        e: impl Executor<'e, Database = DB>,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&str>,
        n: u32,
    ) -> sqlx::Result<Page<Referrer>> {
        let rows = sqlx::query(&format!(
            "SELECT {REFERRER_COLUMNS} FROM manifests
             WHERE repo = $1 AND subject_digest = $2 AND digest > $3
               AND ($4 IS NULL OR artifact_type = $4)
             ORDER BY digest LIMIT $5"
        ))
        .bind(repo.as_str())
        .bind(subject.as_str())
        .bind(last.unwrap_or(""))
        .bind(artifact_type)
        .bind(i64::from(n) + 1)
        .fetch_all(e)
        .await?;
        let items = rows
            .iter()
            .map(rows::referrer)
            .collect::<sqlx::Result<Vec<_>>>()?;
        Ok(rows::page(items, n))
    }

    // -----------------------------------------------------------------------------
    // Upload sessions

    /// Inserts a session unless `caps` are reached; whether it was inserted. Each
    /// count stops at its cap (`LIMIT`): the whole table's by its smallest index, a
    /// repository's by `uploads_by_repo`.
    async fn create_upload<'e>(
        e: impl Executor<'e, Database = DB>,
        u: &UploadRecord,
        caps: SessionCaps,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(&format!(
            "INSERT INTO uploads ({UPLOAD_COLUMNS})
             SELECT $1, $2, $3, $4, $5, $6, $7
             WHERE ($8 = 0 OR (SELECT COUNT(*) FROM (SELECT 1 FROM uploads LIMIT $8) a) < $8)
               AND ($9 = 0 OR (SELECT COUNT(*) FROM
                                 (SELECT 1 FROM uploads WHERE repo = $2 LIMIT $9) r) < $9)"
        ))
        .bind(u.id.to_string())
        .bind(u.repo.as_str())
        .bind(u.offset as i64)
        .bind(u.hash_state.as_slice())
        .bind(rows::parts_json(&u.parts))
        .bind(u.created_at)
        .bind(u.updated_at)
        .bind(cap(caps.total))
        .bind(cap(caps.per_repository))
        .execute(e)
        .await?;
        Ok(done.rows() == 1)
    }

    /// Which of `caps` refused a session in `repo` (see [`Self::create_upload`]): the
    /// repository's, if it is full, else the total.
    async fn session_cap_reached<'e>(
        e: impl Executor<'e, Database = DB>,
        repo: &RepoName,
        caps: SessionCaps,
    ) -> sqlx::Result<SessionCap> {
        if caps.per_repository == 0 {
            return Ok(SessionCap::Total);
        }
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM uploads WHERE repo = $1 LIMIT $2) r",
        )
        .bind(repo.as_str())
        .bind(cap(caps.per_repository))
        .fetch_one(e)
        .await?;
        Ok(if open >= cap(caps.per_repository) {
            SessionCap::PerRepository
        } else {
            SessionCap::Total
        })
    }

    /// A session of `repo` by id.
    async fn get_upload<'e>(
        e: impl Executor<'e, Database = DB>,
        repo: &RepoName,
        id: Uuid,
    ) -> sqlx::Result<Option<UploadRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1 AND repo = $2"
        ))
        .bind(id.to_string())
        .bind(repo.as_str())
        .fetch_optional(e)
        .await?;
        row.as_ref().map(rows::upload).transpose()
    }

    /// Saves a session's progress if its offset is still `expected_offset`; whether
    /// it was.
    async fn update_upload<'e>(
        e: impl Executor<'e, Database = DB>,
        u: &UploadRecord,
        expected_offset: u64,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE uploads SET \"offset\" = $1, hash_state = $2, parts = $3, updated_at = $4
             WHERE id = $5 AND \"offset\" = $6",
        )
        .bind(u.offset as i64)
        .bind(u.hash_state.as_slice())
        .bind(rows::parts_json(&u.parts))
        .bind(u.updated_at)
        .bind(u.id.to_string())
        .bind(expected_offset as i64)
        .execute(e)
        .await?;
        Ok(done.rows() == 1)
    }

    /// Deletes a session; whether it existed.
    async fn delete_upload<'e>(
        e: impl Executor<'e, Database = DB>,
        id: Uuid,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id.to_string())
            .execute(e)
            .await?;
        Ok(done.rows() > 0)
    }

    /// Ids of sessions not updated since `updated_before`, oldest first, at most
    /// `limit` (`uploads_by_updated`).
    async fn stale_uploads<'e>(
        e: impl Executor<'e, Database = DB>,
        updated_before: i64,
        limit: u32,
    ) -> sqlx::Result<Vec<Uuid>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM uploads WHERE updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(updated_before)
        .bind(i64::from(limit))
        .fetch_all(e)
        .await?;
        ids.iter().map(|id| rows::upload_id(id)).collect()
    }

    /// Whether a session with this id exists.
    async fn upload_exists<'e>(
        e: impl Executor<'e, Database = DB>,
        id: Uuid,
    ) -> sqlx::Result<bool> {
        let row = sqlx::query("SELECT 1 FROM uploads WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(e)
            .await?;
        Ok(row.is_some())
    }

    // -----------------------------------------------------------------------------
    // Packs

    /// Whether `p`'s version is indexed already or its tag exists: what a
    /// create-only publish refuses.
    async fn pack_version_taken<'e>(
        e: impl Executor<'e, Database = DB>,
        p: &PackVersionRecord,
    ) -> sqlx::Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM tags WHERE repo = $1 AND name = $2
             UNION ALL SELECT 1 FROM pack_versions WHERE pack_id = $3 AND version = $4",
        )
        .bind(p.repository.as_str())
        .bind(p.tag.as_str())
        .bind(&p.pack_id)
        .bind(&p.version)
        .fetch_optional(e)
        .await?;
        Ok(row.is_some())
    }

    /// Indexes `p`, replacing any row of the same version (the `packs` summary
    /// follows by trigger).
    async fn put_pack_version<'e>(
        e: impl Executor<'e, Database = DB>,
        p: &PackVersionRecord,
    ) -> sqlx::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO pack_versions ({PACK_VERSION_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     $17, $18, $19)
             ON CONFLICT (pack_id, version) DO UPDATE SET
                sort_key = excluded.sort_key, prerelease = excluded.prerelease,
                type = excluded.type, name = excluded.name,
                description = excluded.description, author = excluded.author,
                search_text = excluded.search_text, repository = excluded.repository,
                tag = excluded.tag, manifest_digest = excluded.manifest_digest,
                content_digest = excluded.content_digest,
                content_media_type = excluded.content_media_type, size = excluded.size,
                published_at = excluded.published_at, dependencies = excluded.dependencies,
                members = excluded.members, metadata = excluded.metadata"
        ))
        .bind(p.pack_id.as_str())
        .bind(p.version.as_str())
        .bind(p.sort_key.as_str())
        .bind(p.prerelease)
        .bind(p.pack_type.as_str())
        .bind(p.name.as_str())
        .bind(p.description.as_str())
        .bind(p.author.as_str())
        .bind(p.search_text.as_str())
        .bind(p.repository.as_str())
        .bind(p.tag.as_str())
        .bind(p.manifest_digest.as_str())
        .bind(p.content_digest.as_str())
        .bind(p.content_media_type.as_str())
        .bind(p.size as i64)
        .bind(p.published_at)
        .bind(p.dependencies.as_str())
        .bind(p.members.as_str())
        .bind(p.metadata.as_str())
        .execute(e)
        .await?;
        Ok(())
    }

    /// One pack's summary.
    async fn get_pack<'e>(
        e: impl Executor<'e, Database = DB>,
        pack_id: &str,
    ) -> sqlx::Result<Option<PackSummaryRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PACK_SUMMARY_COLUMNS} FROM packs WHERE pack_id = $1"
        ))
        .bind(pack_id)
        .fetch_optional(e)
        .await?;
        row.as_ref().map(rows::pack_summary).transpose()
    }

    /// Every version of a pack, highest precedence first (`pack_versions_by_precedence`).
    async fn list_pack_versions<'e>(
        e: impl Executor<'e, Database = DB>,
        pack_id: &str,
    ) -> sqlx::Result<Vec<PackVersionRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PACK_VERSION_COLUMNS} FROM pack_versions WHERE pack_id = $1
             ORDER BY sort_key DESC, version DESC"
        ))
        .bind(pack_id)
        .fetch_all(e)
        .await?;
        rows.iter().map(rows::pack_version).collect()
    }

    /// Packs using `pack_id` (dependency or member), by id, at most `n`.
    async fn pack_used_by<'e>(
        e: impl Executor<'e, Database = DB>,
        pack_id: &str,
        n: u32,
    ) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT pack_id FROM pack_edges WHERE target = $1 ORDER BY pack_id LIMIT $2",
        )
        .bind(pack_id)
        .bind(i64::from(n))
        .fetch_all(e)
        .await
    }

    /// One version of a pack.
    async fn get_pack_version<'e>(
        e: impl Executor<'e, Database = DB>,
        pack_id: &str,
        version: &str,
    ) -> sqlx::Result<Option<PackVersionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PACK_VERSION_COLUMNS} FROM pack_versions WHERE pack_id = $1 AND version = $2"
        ))
        .bind(pack_id)
        .bind(version)
        .fetch_optional(e)
        .await?;
        row.as_ref().map(rows::pack_version).transpose()
    }

    /// Deletes a version's tag, and with it (by cascade) its row; whether it was
    /// indexed.
    async fn delete_pack_version<'e>(
        e: impl Executor<'e, Database = DB>,
        pack_id: &str,
        version: &str,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "DELETE FROM tags WHERE (repo, name) IN
                (SELECT repository, tag FROM pack_versions WHERE pack_id = $1 AND version = $2)",
        )
        .bind(pack_id)
        .bind(version)
        .execute(e)
        .await?;
        Ok(done.rows() > 0)
    }

    // -----------------------------------------------------------------------------
    // Garbage collection and storage figures

    /// One repository's manifests, tags, references and links (see
    /// [`CollectIndex::repository_graph`](crate::metadata::CollectIndex::repository_graph)).
    async fn repository_graph(
        conn: &mut DB::Connection,
        repo: &RepoName,
    ) -> sqlx::Result<RepositoryGraph> {
        let manifests = sqlx::query(
            "SELECT digest, subject_digest, size, pushed_at FROM manifests WHERE repo = $1",
        )
        .bind(repo.as_str())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            Ok(ManifestNode {
                digest: rows::digest(row.text("digest")?)?,
                subject: row
                    .text_or_null("subject_digest")?
                    .map(rows::digest)
                    .transpose()?,
                size: rows::size(row.int("size")?)?,
                pushed_at: row.int("pushed_at")?,
            })
        })
        .collect::<sqlx::Result<Vec<_>>>()?;
        let tagged = sqlx::query("SELECT DISTINCT manifest_digest FROM tags WHERE repo = $1")
            .bind(repo.as_str())
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| rows::digest(row.text("manifest_digest")?))
            .collect::<sqlx::Result<Vec<_>>>()?;
        let mut children = Vec::new();
        let mut blob_refs = Vec::new();
        for row in sqlx::query(
            "SELECT manifest, child_digest, kind FROM manifest_references WHERE repo = $1",
        )
        .bind(repo.as_str())
        .fetch_all(&mut *conn)
        .await?
        {
            let pair = (
                rows::digest(row.text("manifest")?)?,
                rows::digest(row.text("child_digest")?)?,
            );
            if row.text("kind")? == "manifest" {
                children.push(pair);
            } else {
                blob_refs.push(pair);
            }
        }
        let links = sqlx::query(
            "SELECT rb.digest, b.size, rb.created_at FROM repository_blobs rb
             JOIN blobs b ON b.digest = rb.digest WHERE rb.repo = $1",
        )
        .bind(repo.as_str())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            Ok(LinkNode {
                digest: rows::digest(row.text("digest")?)?,
                size: rows::size(row.int("size")?)?,
                linked_at: row.int("created_at")?,
            })
        })
        .collect::<sqlx::Result<Vec<_>>>()?;
        Ok(RepositoryGraph {
            manifests,
            tagged,
            children,
            blob_refs,
            links,
        })
    }

    /// Blob rows no repository links, by digest after `after`, at most `n`.
    async fn unlinked_blobs<'e>(
        e: impl Executor<'e, Database = DB>,
        after: Option<&str>,
        n: u32,
    ) -> sqlx::Result<Vec<(Digest, u64)>> {
        sqlx::query(
            "SELECT digest, size FROM blobs b WHERE digest > $1
               AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
             ORDER BY digest LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(i64::from(n))
        .fetch_all(e)
        .await?
        .iter()
        .map(rows::digest_and_size)
        .collect()
    }

    /// Digests whose bytes are still to be deleted, oldest first, at most `n`
    /// (`blob_deletions_pending`).
    async fn pending_byte_deletions<'e>(
        e: impl Executor<'e, Database = DB>,
        n: u32,
    ) -> sqlx::Result<Vec<Digest>> {
        sqlx::query(
            "SELECT digest FROM blob_deletions WHERE NOT bytes_deleted ORDER BY at LIMIT $1",
        )
        .bind(i64::from(n))
        .fetch_all(e)
        .await?
        .iter()
        .map(|row| rows::digest(row.text("digest")?))
        .collect()
    }

    /// Forgets completed byte deletions recorded before `before`; how many.
    async fn forget_byte_deletions<'e>(
        e: impl Executor<'e, Database = DB>,
        before: i64,
    ) -> sqlx::Result<u64> {
        let done = sqlx::query("DELETE FROM blob_deletions WHERE bytes_deleted AND at < $1")
            .bind(before)
            .execute(e)
            .await?;
        Ok(done.rows())
    }

    /// The figures folded so far: the whole store and the `top` largest repositories.
    async fn read_usage(conn: &mut DB::Connection, top: u32) -> sqlx::Result<StorageUsage> {
        const COLUMNS: &str = "repo, blobs, blob_bytes, manifests, manifest_bytes";
        let total = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM storage_usage WHERE repo = ''"
        ))
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(rows::usage)
        .transpose()?
        .unwrap_or_default();
        let repositories = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM storage_usage WHERE repo <> ''
             ORDER BY blob_bytes DESC, repo LIMIT $1"
        ))
        .bind(i64::from(top))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(rows::usage)
        .collect::<sqlx::Result<Vec<_>>>()?;
        let count = sqlx::query("SELECT COUNT(*) AS n FROM storage_usage WHERE repo <> ''")
            .fetch_one(&mut *conn)
            .await?
            .int("n")?;
        Ok(StorageUsage {
            total,
            repositories,
            repository_count: rows::size(count)?,
        })
    }

    /// Records a completed collection.
    async fn record_gc_run<'e>(
        e: impl Executor<'e, Database = DB>,
        run: &GcRunRecord,
    ) -> sqlx::Result<()> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO gc_runs (finished_at, duration_ms, tags, manifests, links, blobs,
                                  stray, reclaimed_bytes, manifest_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(run.finished_at)
        .bind(run.duration_ms)
        .bind(n(run.tags))
        .bind(n(run.manifests))
        .bind(n(run.links))
        .bind(n(run.blobs))
        .bind(n(run.stray))
        .bind(n(run.reclaimed_bytes))
        .bind(n(run.manifest_bytes))
        .execute(e)
        .await?;
        Ok(())
    }

    /// Every recorded collection added up (sums as 64-bit integers on both dialects).
    async fn gc_totals<'e>(e: impl Executor<'e, Database = DB>) -> sqlx::Result<GcTotals> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS runs,
                    CAST(COALESCE(MAX(finished_at), 0) AS BIGINT) AS finished_at,
                    CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT) AS duration_ms,
                    CAST(COALESCE(SUM(tags), 0) AS BIGINT) AS tags,
                    CAST(COALESCE(SUM(manifests), 0) AS BIGINT) AS manifests,
                    CAST(COALESCE(SUM(links), 0) AS BIGINT) AS links,
                    CAST(COALESCE(SUM(blobs), 0) AS BIGINT) AS blobs,
                    CAST(COALESCE(SUM(stray), 0) AS BIGINT) AS stray,
                    CAST(COALESCE(SUM(reclaimed_bytes), 0) AS BIGINT) AS reclaimed_bytes,
                    CAST(COALESCE(SUM(manifest_bytes), 0) AS BIGINT) AS manifest_bytes
             FROM gc_runs",
        )
        .fetch_one(e)
        .await?;
        let n = |name: &str| row.int(name).map(|v| u64::try_from(v).unwrap_or(0));
        Ok(GcTotals {
            runs: n("runs")?,
            sums: GcRunRecord {
                finished_at: row.int("finished_at")?,
                duration_ms: row.int("duration_ms")?,
                tags: n("tags")?,
                manifests: n("manifests")?,
                links: n("links")?,
                blobs: n("blobs")?,
                stray: n("stray")?,
                reclaimed_bytes: n("reclaimed_bytes")?,
                manifest_bytes: n("manifest_bytes")?,
            },
        })
    }

    /// Checks the database answers.
    async fn ping<'e>(e: impl Executor<'e, Database = DB>) -> sqlx::Result<()> {
        sqlx::query("SELECT 1").execute(e).await?;
        Ok(())
    }
}
