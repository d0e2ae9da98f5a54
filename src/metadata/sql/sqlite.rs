//! SQLite dialect of the metadata store: the embedded default.
//!
//! WAL journal, one writer connection (SQLite serializes writers anyway; a single
//! writer avoids `SQLITE_BUSY` on lock upgrades) and a pool of readers.

use std::str::FromStr;

use async_trait::async_trait;
use deadpool::managed::{self, Object};
use sqlx::error::DatabaseError;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::rows::{self, Columns, PACK_SUMMARY_COLUMNS};
use super::{Connector, retry};
use crate::digest::Digest;
use crate::metadata::*;
use crate::names::{RepoName, Tag};

/// The statements SQLite shares with PostgreSQL.
type Sql = super::Shared<Sqlite>;

/// Whether `e` is SQLite turning work away for now (see [`MetadataError::Busy`]):
/// `SQLITE_BUSY` (5: the file is locked by another connection, or the snapshot a
/// transaction read is stale for writing) or `SQLITE_LOCKED` (6), with any of their
/// extended codes (the low byte is the primary code).
pub(super) fn busy(e: &dyn DatabaseError) -> bool {
    e.try_downcast_ref::<SqliteError>()
        .and_then(|e| e.code()?.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Whether `e` is SQLite refusing a row whose reference is gone (see
/// [`MetadataError::ReferenceGone`]): `SQLITE_CONSTRAINT_FOREIGNKEY` (787), or
/// `SQLITE_CONSTRAINT_TRIGGER` (1811), the `RAISE(ABORT)` of the
/// `manifest_reference_target` trigger, the only trigger that raises.
pub(super) fn reference_gone(e: &dyn DatabaseError) -> bool {
    e.try_downcast_ref::<SqliteError>()
        .and_then(|e| e.code()?.parse::<i32>().ok())
        .is_some_and(|code| matches!(code, 787 | 1811))
}

/// Metadata in a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: Readers,
    /// Retries of a write the database turned away for now (see `retry`).
    retries: u32,
}

/// The connections reads run on.
#[derive(Debug, Clone)]
enum Readers {
    /// Connections of their own, in a pool that does not ping them. sqlx's pool pings
    /// every connection it takes back, and with sqlx every SQLite statement, the ping
    /// included, is a round trip to the connection's worker thread: two more thread
    /// switches for a one-query request, and the connection out of use until they are
    /// done. sqlx's connections stay correct without it: the worker runs commands in
    /// order, so what an abandoned query or a dropped read transaction left (its
    /// queued `ROLLBACK`) is done before the next command.
    Own(managed::Pool<Connector<SqliteConnection>>),
    /// The writer's one connection (`sqlite::memory:`, whose database is the
    /// connection's own).
    Writer(SqlitePool),
}

/// A reader connection, back to its pool when dropped unless a failure on it may
/// have left it broken.
enum ReadConn {
    Own(Object<Connector<SqliteConnection>>),
    Writer(PoolConnection<Sqlite>),
    /// Dropped after a failure.
    Discarded,
}

impl ReadConn {
    /// The error `e` of a query on this connection; unless SQLite itself answered it
    /// (see `answered`), the connection is closed instead of going back to the pool.
    fn fail(&mut self, e: sqlx::Error) -> MetadataError {
        if !super::answered(&e) {
            match std::mem::replace(self, ReadConn::Discarded) {
                // Taken out of the pool, then closed by being dropped.
                ReadConn::Own(object) => drop(Object::take(object)),
                ReadConn::Writer(mut conn) => {
                    conn.close_on_drop();
                }
                ReadConn::Discarded => {}
            }
        }
        e.into()
    }
}

impl std::ops::Deref for ReadConn {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        match self {
            ReadConn::Own(object) => object,
            ReadConn::Writer(conn) => conn,
            ReadConn::Discarded => unreachable!("a discarded connection is not used again"),
        }
    }
}

impl std::ops::DerefMut for ReadConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            ReadConn::Own(object) => object,
            ReadConn::Writer(conn) => conn,
            ReadConn::Discarded => unreachable!("a discarded connection is not used again"),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`).
    pub async fn connect(url: &str, options: &PoolOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| MetadataError::Database(format!("invalid sqlite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Each attempt of a write waits this long for another process's lock
            // (`migrate`, a second `serve`); with the retries, about the acquire
            // timeout in all.
            .busy_timeout(options.acquire_timeout / (super::TRANSIENT_RETRIES + 1));
        if url.contains(":memory:") {
            // One connection, or every connection would see its own empty database;
            // and kept forever, for the database vanishes with its last connection.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await?;
            return Ok(SqliteStore {
                writer: pool.clone(),
                reader: Readers::Writer(pool),
                retries: super::TRANSIENT_RETRIES,
            });
        }
        // No liveness ping before handing out a connection (sqlx's default): a SQLite
        // connection is a local file handle that does not go stale, and with sqlx every
        // statement, the ping included, is a round trip to the connection's worker
        // thread (two context switches): one more per request for nothing.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        // Readers beyond a couple per core only add thread switches: each sqlx SQLite
        // connection runs on a thread of its own, and a query here takes microseconds.
        // regbench, manifest GET by tag at c=64 on 2 cores: 16 readers 15.9k req/s,
        // p99 9.8 ms; 4 readers 18.5k req/s, p99 8.8 ms.
        let per_cores = std::thread::available_parallelism()
            .map_or(4, |n| 2 * u32::try_from(n.get()).unwrap_or(u32::MAX / 2));
        let reader = Connector {
            options: connect,
            // A local file handle does not go stale.
            ping_if_idle_for: None,
        }
        .pool(
            options.max_connections.min(per_cores),
            options.acquire_timeout,
        )?;
        Ok(SqliteStore {
            writer,
            reader: Readers::Own(reader),
            retries: super::TRANSIENT_RETRIES,
        })
    }

    /// A reader connection.
    async fn read(&self) -> Result<ReadConn> {
        match &self.reader {
            Readers::Own(pool) => Ok(ReadConn::Own(super::take(pool).await?)),
            Readers::Writer(pool) => Ok(ReadConn::Writer(pool.acquire().await?)),
        }
    }

    /// The same store, trying a write the database turned away for now (the file
    /// locked by another process past the busy timeout) `retries` more times before
    /// it reports [`MetadataError::Busy`]; 3 unless set.
    pub fn with_transient_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Begins a write transaction on the writer, taking the database's write lock at
    /// once (`BEGIN IMMEDIATE`). A deferred `BEGIN` takes it at the first write, and
    /// if another process (`migrate`, a second `serve`) wrote since the transaction's
    /// first read, SQLite cannot let it write at all: `SQLITE_BUSY` at once, with no
    /// wait.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

impl SqliteStore {
    /// The size the query (`?1` a JSON array of `digests`, `?2` the repository) finds
    /// for each digest, `None` where it finds none: one statement for the whole list,
    /// in the list's order.
    async fn sizes(
        &self,
        sql: &str,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<Vec<Option<u64>>> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::Value::from(digests.iter().map(Digest::as_str).collect::<Vec<_>>())
            .to_string();
        let mut c = self.read().await?;
        let rows: Vec<Option<i64>> = sqlx::query_scalar(sql)
            .bind(list)
            .bind(repo.as_str())
            .fetch_all(&mut *c)
            .await
            .map_err(|e| c.fail(e))?;
        Ok(rows
            .into_iter()
            .map(|s| s.map(rows::size).transpose())
            .collect::<sqlx::Result<_>>()?)
    }
}

impl SqliteStore {
    /// The integer the query (`?1` a JSON array of `digests`) finds for each digest,
    /// `None` where it finds none, in the list's order, from the writer (what a
    /// collection just wrote must be seen).
    async fn per_digest(&self, sql: &str, digests: &[Digest]) -> Result<Vec<Option<i64>>> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar(sql)
            .bind(digest_list(digests))
            .fetch_all(&self.writer)
            .await?)
    }
}

/// Ends `tx` as `done` says: committed after success, rolled back after a failure.
/// Rolled back here rather than when the writer is next used (what dropping a sqlx
/// transaction does): until then the database's write lock stays taken, and other
/// processes on the file (`migrate`, another `serve`) wait for it.
async fn finish<T>(tx: sqlx::Transaction<'_, Sqlite>, done: Result<T>) -> Result<T> {
    match done {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %rollback, "rollback after a failed transaction");
            }
            Err(e)
        }
    }
}

#[async_trait]
impl BlobIndex for SqliteStore {
    #[tracing::instrument(name = "db.link_blob", skip_all)]
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        bytes: &dyn BlobBytes,
    ) -> Result<()> {
        retry(self.retries, || async {
            let mut tx = self.begin_write().await?;
            let linked = Sql::link_blob(&mut tx, repo, digest, size, now_millis(), bytes).await;
            finish(tx, linked).await
        })
        .await
    }

    #[tracing::instrument(name = "db.blob_in_repo", skip_all)]
    async fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let mut c = self.read().await?;
        Sql::blob_in_repo(&mut *c, repo, digest)
            .await
            .map_err(|e| c.fail(e))
    }

    #[tracing::instrument(name = "db.blob_size", skip_all)]
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let mut c = self.read().await?;
        Sql::blob_size(&mut *c, digest).await.map_err(|e| c.fail(e))
    }

    #[tracing::instrument(name = "db.unlink_blob", skip_all)]
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        retry(self.retries, || async {
            Ok(Sql::unlink_blob(&self.writer, repo, digest).await?)
        })
        .await
    }

    #[tracing::instrument(name = "db.repository_exists", skip_all)]
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        let mut c = self.read().await?;
        Sql::repository_exists(&mut *c, repo)
            .await
            .map_err(|e| c.fail(e))
    }

    #[tracing::instrument(name = "db.list_repositories", skip_all)]
    async fn list_repositories(&self, last: Option<&str>, n: u32) -> Result<Page<String>> {
        let mut c = self.read().await?;
        Sql::list_repositories(&mut *c, last, n)
            .await
            .map_err(|e| c.fail(e))
    }
}

/// The statements of a manifest push (see [`put_manifest_in`]); `?1` is
/// [`put_manifest_values`], `?2` the body.
const PUT_MANIFEST_SQL: &str = "INSERT INTO repositories (name, created_at)
         VALUES (?1 ->> '$.repo', ?1 ->> '$.now') ON CONFLICT DO NOTHING;

         INSERT INTO manifests (repo, digest, media_type, artifact_type, subject_digest,
                                annotations, size, body, created_at, pushed_at)
         VALUES (?1 ->> '$.repo', ?1 ->> '$.digest', ?1 ->> '$.media_type',
                 ?1 ->> '$.artifact_type', ?1 ->> '$.subject', ?1 ->> '$.annotations',
                 ?1 ->> '$.size', ?2, ?1 ->> '$.created_at', ?1 ->> '$.now')
         ON CONFLICT (repo, digest) DO UPDATE SET pushed_at = excluded.pushed_at;

         INSERT INTO manifest_references (repo, manifest, child_digest, kind)
         SELECT ?1 ->> '$.repo', ?1 ->> '$.digest', r.value ->> 0, r.value ->> 1
         FROM json_each(?1, '$.refs') r WHERE true
         ON CONFLICT DO NOTHING;

         INSERT INTO tags (repo, name, manifest_digest, updated_at, immutable)
         SELECT ?1 ->> '$.repo', t.value, ?1 ->> '$.digest', ?1 ->> '$.now',
                t.value IN (SELECT value FROM json_each(?1, '$.immutable'))
         FROM json_each(?1, '$.tags') t WHERE true
         ON CONFLICT (repo, name) DO UPDATE
         SET manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at,
             immutable = tags.immutable OR excluded.immutable;";

/// [`PUT_MANIFEST_SQL`] inside its own transaction, for one round trip in all.
static PUT_MANIFEST_TX_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("BEGIN IMMEDIATE; {PUT_MANIFEST_SQL} COMMIT;"));

/// The JSON object `?1` of [`PUT_MANIFEST_SQL`].
fn put_manifest_values(
    repo: &RepoName,
    m: &ManifestRecord,
    references: &[(Digest, ReferenceKind)],
    tags: &[Tag],
    immutable: &[Tag],
) -> String {
    let immutable: Vec<&str> = immutable.iter().map(Tag::as_str).collect();
    let refs: Vec<(&str, &str)> = references
        .iter()
        .map(|(d, k)| (d.as_str(), k.as_str()))
        .collect();
    let mut tags: Vec<&str> = tags.iter().map(Tag::as_str).collect();
    tags.sort_unstable();
    tags.dedup();
    serde_json::json!({
        "repo": repo.as_str(),
        "digest": m.digest.as_str(),
        "now": now_millis(),
        "media_type": m.media_type,
        "artifact_type": m.artifact_type,
        "subject": m.subject.as_ref().map(Digest::as_str),
        "annotations": m.annotations,
        "size": m.body.len(),
        "created_at": m.created_at,
        "refs": refs,
        "tags": tags,
        "immutable": immutable,
    })
    .to_string()
}

/// The statements of [`ManifestIndex::put_manifest`], inside the caller's transaction,
/// sent as one multi-statement query: with sqlx every statement is a round trip to
/// the connection's worker thread, and the single writer is held for all of them
/// (regbench, manifest PUT at c=16: the writer's round trips were the bottleneck).
///
/// The values travel as one JSON object (`?1`, read with `->>`, references and tags
/// as arrays for `json_each`) plus the body (`?2`): sqlx binds a multi-statement
/// query's numbered parameters statement by statement and stops binding once a
/// statement's unused lower numbers add up past the argument count, so every
/// statement here uses only `?1` or `?1, ?2`.
async fn put_manifest_in(
    tx: &mut sqlx::SqliteConnection,
    repo: &RepoName,
    m: &ManifestRecord,
    references: &[(Digest, ReferenceKind)],
    tags: &[Tag],
    immutable: &[Tag],
) -> Result<()> {
    sqlx::query(PUT_MANIFEST_SQL)
        .bind(put_manifest_values(repo, m, references, tags, immutable))
        .bind(m.body.as_ref())
        .execute(&mut *tx)
        .await?;
    // Re-inserting references for a manifest already stored changes nothing: a digest
    // names one content, hence one set of references. A tag moved away from a pack's
    // manifest no longer names that pack version: a trigger on `tags` drops the row.
    Ok(())
}

#[async_trait]
impl ManifestIndex for SqliteStore {
    #[tracing::instrument(name = "db.linked_blob_sizes", skip_all)]
    async fn linked_blob_sizes(
        &self,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<Vec<Option<u64>>> {
        self.sizes(
            "SELECT (SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                     WHERE rb.repo = ?2 AND rb.digest = l.value)
             FROM json_each(?1) l ORDER BY l.key",
            repo,
            digests,
        )
        .await
    }

    #[tracing::instrument(name = "db.manifest_sizes", skip_all)]
    async fn manifest_sizes(
        &self,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<Vec<Option<u64>>> {
        self.sizes(
            "SELECT (SELECT m.size FROM manifests m WHERE m.repo = ?2 AND m.digest = l.value)
             FROM json_each(?1) l ORDER BY l.key",
            repo,
            digests,
        )
        .await
    }

    #[tracing::instrument(name = "db.put_manifest", skip_all)]
    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &ManifestRecord,
        references: &[(Digest, ReferenceKind)],
        tags: &[Tag],
        immutable: &[Tag],
    ) -> Result<()> {
        // BEGIN, the statements and COMMIT in one round trip to the writer's thread;
        // on failure the transaction may still be open, and is rolled back. Run as a
        // task of its own: were this future dropped half-way (the client went away),
        // the writer connection could go back to the pool inside an open transaction.
        let writer = self.writer.clone();
        let values = put_manifest_values(repo, m, references, tags, immutable);
        let body = m.body.clone();
        let retries = self.retries;
        tokio::spawn(async move {
            retry(retries, || async {
                let mut conn = writer.acquire().await?;
                let done = sqlx::query(&PUT_MANIFEST_TX_SQL)
                    .bind(values.as_str())
                    .bind(body.as_ref())
                    .execute(&mut *conn)
                    .await;
                if let Err(e) = done {
                    if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                        // "no transaction is active" when the failure ended it already.
                        tracing::debug!(error = %rollback, "rollback after a failed manifest push");
                    }
                    return Err(e.into());
                }
                Ok(())
            })
            .await
        })
        .await
        .map_err(|e| MetadataError::Database(format!("manifest push task failed: {e}")))?
    }

    #[tracing::instrument(name = "db.get_manifest", skip_all)]
    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        let mut c = self.read().await?;
        Sql::get_manifest(&mut *c, repo, digest)
            .await
            .map_err(|e| c.fail(e))
    }

    #[tracing::instrument(name = "db.get_manifest_by_tag", skip_all)]
    async fn get_manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>> {
        let mut c = self.read().await?;
        Sql::get_manifest_by_tag(&mut *c, repo, tag)
            .await
            .map_err(|e| c.fail(e))
    }

    #[tracing::instrument(name = "db.delete_manifest", skip_all)]
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        retry(self.retries, || async {
            Ok(Sql::delete_manifest(&self.writer, repo, digest).await?)
        })
        .await
    }

    #[tracing::instrument(name = "db.delete_tag", skip_all)]
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        retry(self.retries, || async {
            Ok(Sql::delete_tag(&self.writer, repo, tag).await?)
        })
        .await
    }

    #[tracing::instrument(name = "db.list_tags", skip_all)]
    async fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: u32) -> Result<Page<String>> {
        let mut c = self.read().await?;
        let joined: Option<String> = sqlx::query_scalar(
            "SELECT string_agg(name, char(10)) FROM
               (SELECT name FROM tags WHERE repo = ? AND name > ? ORDER BY name LIMIT ?)",
        )
        .bind(repo.as_str())
        .bind(last.unwrap_or(""))
        .bind(i64::from(n) + 1)
        .fetch_one(&mut *c)
        .await
        .map_err(|e| c.fail(e))?;
        Ok(rows::page(split_lines(joined), n))
    }

    #[tracing::instrument(name = "db.list_referrers", skip_all)]
    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&str>,
        n: u32,
    ) -> Result<Page<Referrer>> {
        let mut c = self.read().await?;
        Sql::list_referrers(&mut *c, repo, subject, artifact_type, last, n)
            .await
            .map_err(|e| c.fail(e))
    }
}

// ---------------------------------------------------------------------------------
// Packs index

/// Above this many rows matching `q`, a listing walks the id index instead of sorting
/// the full-text matches (see `list_packs`).
const FTS_SORT_LIMIT: i64 = 2000;

/// An FTS5 phrase matching `text` as a substring (trigram tokenizer): the text in
/// double quotes, inner quotes doubled.
fn fts_phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[async_trait]
impl PackIndex for SqliteStore {
    #[tracing::instrument(name = "db.put_pack_manifest", skip_all)]
    async fn put_pack_manifest(
        &self,
        repo: &RepoName,
        m: &ManifestRecord,
        references: &[(Digest, ReferenceKind)],
        tags: &[Tag],
        p: &PackVersionRecord,
        create_only: bool,
        link: &[(Digest, u64)],
        bytes: &dyn BlobBytes,
        immutable: &[Tag],
    ) -> Result<()> {
        // One writer, holding the write lock from the start: the checks below and the
        // writes cannot interleave with another publish, in this process or another.
        retry(self.retries, || async {
            let mut tx = self.begin_write().await?;
            let put = async {
                if create_only && Sql::pack_version_taken(&mut *tx, p).await? {
                    return Err(MetadataError::Conflict);
                }
                let now = now_millis();
                for (digest, size) in link {
                    Sql::link_blob(&mut tx, repo, digest, *size, now, bytes).await?;
                }
                put_manifest_in(&mut tx, repo, m, references, tags, immutable).await?;
                Ok(Sql::put_pack_version(&mut *tx, p).await?)
            }
            .await;
            finish(tx, put).await
        })
        .await
    }

    #[tracing::instrument(name = "db.list_packs", skip_all)]
    async fn list_packs(
        &self,
        filter: &PackFilter,
        after: Option<&str>,
        n: u32,
    ) -> Result<Page<PackSummaryRecord>> {
        // Only the filters given appear in the SQL, so the planner can pick the index
        // that serves them ((type, pack_id), (author, pack_id), the FTS table, pack_id).
        let mut sql = format!("SELECT {PACK_SUMMARY_COLUMNS} FROM packs WHERE pack_id > ?");
        if filter.pack_type.is_some() {
            sql.push_str(" AND type = ?");
        }
        if filter.author.is_some() {
            sql.push_str(" AND author = ?");
        }
        // `q`: the FTS5 trigram index finds the rows holding the text, which are then
        // sorted by id: fast while they are few. When they are many (a common word),
        // walking the id index and testing each row finds a page sooner, so the index
        // is asked first how many rows match, up to a bound. The trigram index needs
        // three characters; shorter text is always looked for by the walk.
        let q = filter.q.as_deref().filter(|q| !q.is_empty());
        let mut c = self.read().await?;
        let mut indexed_q = q.filter(|q| q.chars().count() >= 3);
        if let Some(text) = indexed_q {
            let matches: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM
                    (SELECT 1 FROM packs_search WHERE packs_search MATCH ? LIMIT ?)",
            )
            .bind(fts_phrase(text))
            .bind(FTS_SORT_LIMIT + 1)
            .fetch_one(&mut *c)
            .await
            .map_err(|e| c.fail(e))?;
            if matches > FTS_SORT_LIMIT {
                indexed_q = None;
            }
        }
        match (q, indexed_q) {
            (_, Some(_)) => sql
                .push_str(" AND id IN (SELECT rowid FROM packs_search WHERE packs_search MATCH ?)"),
            (Some(_), None) => sql.push_str(" AND instr(search_text, ?) > 0"),
            (None, _) => {}
        }
        sql.push_str(" ORDER BY pack_id LIMIT ?");
        let mut query = sqlx::query(&sql).bind(after.unwrap_or(""));
        if let Some(t) = &filter.pack_type {
            query = query.bind(t);
        }
        if let Some(a) = &filter.author {
            query = query.bind(a);
        }
        match (q, indexed_q) {
            (_, Some(q)) => query = query.bind(fts_phrase(q)),
            (Some(q), None) => query = query.bind(q),
            (None, _) => {}
        }
        let rows = query
            .bind(i64::from(n) + 1)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| c.fail(e))?;
        let items = rows
            .iter()
            .map(rows::pack_summary)
            .collect::<sqlx::Result<Vec<_>>>()?;
        Ok(rows::page(items, n))
    }

    #[tracing::instrument(name = "db.get_pack", skip_all)]
    async fn get_pack(&self, pack_id: &str) -> Result<Option<PackSummaryRecord>> {
        let mut c = self.read().await?;
        Sql::get_pack(&mut *c, pack_id).await.map_err(|e| c.fail(e))
    }

    #[tracing::instrument(name = "db.list_pack_versions", skip_all)]
    async fn list_pack_versions(&self, pack_id: &str) -> Result<Vec<PackVersionRecord>> {
        let mut c = self.read().await?;
        Sql::list_pack_versions(&mut *c, pack_id)
            .await
            .map_err(|e| c.fail(e))
    }

    #[tracing::instrument(name = "db.pack_used_by", skip_all)]
    async fn pack_used_by(&self, pack_id: &str, n: u32) -> Result<Vec<String>> {
        let mut c = self.read().await?;
        Sql::pack_used_by(&mut *c, pack_id, n)
            .await
            .map_err(|e| c.fail(e))
    }

    #[tracing::instrument(name = "db.get_pack_version", skip_all)]
    async fn get_pack_version(
        &self,
        pack_id: &str,
        version: &str,
    ) -> Result<Option<PackVersionRecord>> {
        let mut c = self.read().await?;
        Sql::get_pack_version(&mut *c, pack_id, version)
            .await
            .map_err(|e| c.fail(e))
    }

    #[tracing::instrument(name = "db.delete_pack_version", skip_all)]
    async fn delete_pack_version(&self, pack_id: &str, version: &str) -> Result<bool> {
        retry(self.retries, || async {
            Ok(Sql::delete_pack_version(&self.writer, pack_id, version).await?)
        })
        .await
    }
}

// Sessions are read from the writer: a session's progress must be seen the moment
// it is saved.
#[async_trait]
impl UploadIndex for SqliteStore {
    #[tracing::instrument(name = "db.create_upload", skip_all)]
    async fn create_upload(&self, u: &UploadRecord, caps: SessionCaps) -> Result<()> {
        let created = retry(self.retries, || async {
            Ok(Sql::create_upload(&self.writer, u, caps).await?)
        })
        .await?;
        if created {
            return Ok(());
        }
        let cap = Sql::session_cap_reached(&self.writer, &u.repo, caps).await?;
        Err(MetadataError::CapReached(cap))
    }

    #[tracing::instrument(name = "db.get_upload", skip_all)]
    async fn get_upload(&self, repo: &RepoName, id: Uuid) -> Result<Option<UploadRecord>> {
        Ok(Sql::get_upload(&self.writer, repo, id).await?)
    }

    #[tracing::instrument(name = "db.update_upload", skip_all)]
    async fn update_upload(&self, u: &UploadRecord, expected_offset: u64) -> Result<()> {
        let updated = retry(self.retries, || async {
            Ok(Sql::update_upload(&self.writer, u, expected_offset).await?)
        })
        .await?;
        if updated {
            Ok(())
        } else {
            Err(MetadataError::Conflict)
        }
    }

    #[tracing::instrument(name = "db.delete_upload", skip_all)]
    async fn delete_upload(&self, id: Uuid) -> Result<bool> {
        retry(self.retries, || async {
            Ok(Sql::delete_upload(&self.writer, id).await?)
        })
        .await
    }

    #[tracing::instrument(name = "db.stale_uploads", skip_all)]
    async fn stale_uploads(&self, updated_before: i64, limit: u32) -> Result<Vec<Uuid>> {
        Ok(Sql::stale_uploads(&self.writer, updated_before, limit).await?)
    }

    #[tracing::instrument(name = "db.upload_exists", skip_all)]
    async fn upload_exists(&self, id: Uuid) -> Result<bool> {
        Ok(Sql::upload_exists(&self.writer, id).await?)
    }
}

/// A JSON array of `digests`, as the `json_each` of this dialect's list statements
/// reads it.
fn digest_list(digests: &[Digest]) -> String {
    serde_json::Value::from(digests.iter().map(Digest::as_str).collect::<Vec<_>>()).to_string()
}

// Garbage collection. Every delete is one statement (or one transaction) on the one
// writer: it re-checks its condition with no push able to interleave.
#[async_trait]
impl CollectIndex for SqliteStore {
    async fn collector_lock(&self, _wait: bool) -> Result<Option<CollectorLock>> {
        Ok(Some(CollectorLock::none()))
    }

    async fn repositories_after(&self, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        let mut c = self.read().await?;
        Ok(Sql::list_repositories(&mut *c, last, n)
            .await
            .map_err(|e| c.fail(e))?
            .items)
    }

    async fn repository_graph(&self, repo: &RepoName) -> Result<RepositoryGraph> {
        // One read transaction: the five reads see one moment.
        let mut c = self.read().await?;
        let read = async {
            let mut tx = c.begin().await?;
            let graph = Sql::repository_graph(&mut tx, repo).await?;
            tx.commit().await?;
            Ok(graph)
        }
        .await;
        read.map_err(|e| c.fail(e))
    }

    async fn delete_manifests_if_unreachable(
        &self,
        repo: &RepoName,
        digests: &[Digest],
        pushed_before: i64,
        keep_orphaned_referrers: bool,
    ) -> Result<Vec<(Digest, u64)>> {
        let mut deleted = Vec::new();
        for batch in digests.chunks(super::GC_BATCH) {
            let list = digest_list(batch);
            let rows = retry(self.retries, || async {
                Ok(sqlx::query(
                    "DELETE FROM manifests AS m
                     WHERE m.repo = $1 AND m.digest IN (SELECT value FROM json_each($2))
                       AND m.pushed_at < $3
                       AND NOT EXISTS (SELECT 1 FROM tags t
                                       WHERE t.repo = m.repo AND t.manifest_digest = m.digest)
                       AND NOT EXISTS (SELECT 1 FROM manifest_references r
                                       WHERE r.repo = m.repo AND r.child_digest = m.digest
                                         AND r.kind = 'manifest')
                       AND (m.subject_digest IS NULL
                            OR (NOT $4 AND NOT EXISTS (SELECT 1 FROM manifests s
                                WHERE s.repo = m.repo AND s.digest = m.subject_digest)))
                     RETURNING digest, size",
                )
                .bind(repo.as_str())
                .bind(&list)
                .bind(pushed_before)
                .bind(keep_orphaned_referrers)
                .fetch_all(&self.writer)
                .await?)
            })
            .await?;
            for row in &rows {
                deleted.push(rows::digest_and_size(row)?);
            }
        }
        Ok(deleted)
    }

    async fn delete_links_if_unreferenced(
        &self,
        repo: &RepoName,
        digests: &[Digest],
        linked_before: i64,
    ) -> Result<Vec<(Digest, u64)>> {
        let mut deleted = Vec::new();
        for batch in digests.chunks(super::GC_BATCH) {
            let list = digest_list(batch);
            let rows = retry(self.retries, || async {
                let mut tx = self.begin_write().await?;
                let done = async {
                    let sizes = sqlx::query(
                        "SELECT digest, size FROM blobs
                         WHERE digest IN (SELECT value FROM json_each($1))",
                    )
                    .bind(&list)
                    .fetch_all(&mut *tx)
                    .await?;
                    let gone = sqlx::query(
                        "DELETE FROM repository_blobs AS rb
                         WHERE rb.repo = $1 AND rb.digest IN (SELECT value FROM json_each($2))
                           AND rb.created_at < $3
                           AND NOT EXISTS (SELECT 1 FROM manifest_references r
                                           WHERE r.repo = rb.repo AND r.child_digest = rb.digest
                                             AND r.kind <> 'manifest')
                         RETURNING digest",
                    )
                    .bind(repo.as_str())
                    .bind(&list)
                    .bind(linked_before)
                    .fetch_all(&mut *tx)
                    .await?;
                    Ok::<_, MetadataError>((sizes, gone))
                }
                .await;
                finish(tx, done).await
            })
            .await?;
            let (sizes, gone) = rows;
            let sizes: std::collections::HashMap<Digest, u64> = sizes
                .iter()
                .map(rows::digest_and_size)
                .collect::<sqlx::Result<_>>()?;
            for row in &gone {
                let digest = rows::digest(row.text("digest")?)?;
                let size = sizes.get(&digest).copied().unwrap_or_default();
                deleted.push((digest, size));
            }
        }
        Ok(deleted)
    }

    async fn unlinked_blobs(&self, after: Option<&str>, n: u32) -> Result<Vec<(Digest, u64)>> {
        let mut c = self.read().await?;
        Sql::unlinked_blobs(&mut *c, after, n)
            .await
            .map_err(|e| c.fail(e))
    }

    async fn link_counts(&self, digests: &[Digest]) -> Result<Vec<u64>> {
        let counts = self
            .per_digest(
                "SELECT (SELECT COUNT(*) FROM repository_blobs rb WHERE rb.digest = l.value)
                 FROM json_each(?1) l ORDER BY l.key",
                digests,
            )
            .await?;
        Ok(counts
            .into_iter()
            .map(|c| c.and_then(|c| u64::try_from(c).ok()).unwrap_or_default())
            .collect())
    }

    async fn delete_blobs_if_unlinked(&self, digests: &[Digest]) -> Result<Vec<(Digest, u64)>> {
        let mut deleted = Vec::new();
        for batch in digests.chunks(super::GC_BATCH) {
            let list = digest_list(batch);
            let rows = retry(self.retries, || async {
                let mut tx = self.begin_write().await?;
                let done = async {
                    let gone = sqlx::query(
                        "DELETE FROM blobs AS b
                         WHERE b.digest IN (SELECT value FROM json_each($1))
                           AND NOT EXISTS (SELECT 1 FROM repository_blobs rb
                                           WHERE rb.digest = b.digest)
                         RETURNING digest, size",
                    )
                    .bind(&list)
                    .fetch_all(&mut *tx)
                    .await?;
                    for row in &gone {
                        sqlx::query(
                            "INSERT INTO blob_deletions (digest, bytes_deleted, at)
                             VALUES ($1, FALSE, $2)
                             ON CONFLICT (digest) DO UPDATE SET bytes_deleted = FALSE,
                                                                at = excluded.at",
                        )
                        .bind(row.text("digest")?)
                        .bind(now_millis())
                        .execute(&mut *tx)
                        .await?;
                    }
                    Ok::<_, MetadataError>(gone)
                }
                .await;
                finish(tx, done).await
            })
            .await?;
            for row in &rows {
                deleted.push(rows::digest_and_size(row)?);
            }
        }
        Ok(deleted)
    }

    async fn quarantine_bytes(&self, digests: &[Digest]) -> Result<u64> {
        let mut added = 0;
        for batch in digests.chunks(super::GC_BATCH) {
            let list = digest_list(batch);
            added += retry(self.retries, || async {
                let done = sqlx::query(
                    "INSERT INTO blob_deletions (digest, bytes_deleted, at)
                     SELECT l.value, FALSE, $2 FROM json_each($1) l
                     WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = l.value)
                     ON CONFLICT (digest) DO NOTHING",
                )
                .bind(&list)
                .bind(now_millis())
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected())
            })
            .await?;
        }
        Ok(added)
    }

    async fn blobs_known(&self, digests: &[Digest]) -> Result<Vec<bool>> {
        let known = self
            .per_digest(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM blobs b WHERE b.digest = l.value)
                               OR EXISTS (SELECT 1 FROM blob_deletions d
                                          WHERE d.digest = l.value)
                             THEN 1 END
                 FROM json_each(?1) l ORDER BY l.key",
                digests,
            )
            .await?;
        Ok(known.into_iter().map(|k| k.is_some()).collect())
    }

    async fn pending_byte_deletions(&self, n: u32) -> Result<Vec<Digest>> {
        Ok(Sql::pending_byte_deletions(&self.writer, n).await?)
    }

    async fn delete_bytes(&self, digests: &[Digest], bytes: &dyn BlobBytes) -> Result<Vec<Digest>> {
        let mut deleted = Vec::new();
        for batch in digests.chunks(32) {
            let list = digest_list(batch);
            // The write lock is held from the check to the mark: no link of these
            // digests can commit in between (see `Shared::link_blob`).
            let done = retry(self.retries, || async {
                let mut tx = self.begin_write().await?;
                let done = async {
                    let due = sqlx::query(
                        "SELECT d.digest FROM blob_deletions d
                         WHERE d.digest IN (SELECT value FROM json_each($1))
                           AND NOT d.bytes_deleted
                           AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = d.digest)",
                    )
                    .bind(&list)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|row| rows::digest(row.text("digest")?))
                    .collect::<sqlx::Result<Vec<_>>>()?;
                    for digest in &due {
                        bytes.delete(digest).await.map_err(MetadataError::Bytes)?;
                        sqlx::query(
                            "UPDATE blob_deletions SET bytes_deleted = TRUE, at = $2
                             WHERE digest = $1",
                        )
                        .bind(digest.as_str())
                        .bind(now_millis())
                        .execute(&mut *tx)
                        .await?;
                    }
                    Ok::<_, MetadataError>(due)
                }
                .await;
                finish(tx, done).await
            })
            .await?;
            deleted.extend(done);
        }
        Ok(deleted)
    }

    async fn forget_byte_deletions(&self, before: i64) -> Result<u64> {
        retry(self.retries, || async {
            Ok(Sql::forget_byte_deletions(&self.writer, before).await?)
        })
        .await
    }

    async fn storage_usage(&self, top: u32) -> Result<StorageUsage> {
        retry(self.retries, || async {
            let mut tx = self.begin_write().await?;
            let folded = sqlx::query(
                "INSERT INTO storage_usage (repo, blobs, blob_bytes, manifests, manifest_bytes)
                 SELECT repo, SUM(blobs), SUM(blob_bytes), SUM(manifests), SUM(manifest_bytes)
                 FROM storage_usage_changes WHERE true GROUP BY repo
                 ON CONFLICT (repo) DO UPDATE SET
                    blobs = blobs + excluded.blobs,
                    blob_bytes = blob_bytes + excluded.blob_bytes,
                    manifests = manifests + excluded.manifests,
                    manifest_bytes = manifest_bytes + excluded.manifest_bytes;
                 DELETE FROM storage_usage_changes;",
            )
            .execute(&mut *tx)
            .await
            .map(drop)
            .map_err(MetadataError::from);
            finish(tx, folded).await
        })
        .await?;
        let mut c = self.read().await?;
        Sql::read_usage(&mut c, top).await.map_err(|e| c.fail(e))
    }

    async fn record_gc_run(&self, run: &GcRunRecord) -> Result<()> {
        retry(self.retries, || async {
            Ok(Sql::record_gc_run(&self.writer, run).await?)
        })
        .await
    }

    async fn gc_totals(&self) -> Result<GcTotals> {
        let mut c = self.read().await?;
        Sql::gc_totals(&mut *c).await.map_err(|e| c.fail(e))
    }
}

#[async_trait]
impl MetadataStore for SqliteStore {
    #[tracing::instrument(name = "db.migrate", skip_all)]
    async fn migrate(&self) -> Result<()> {
        crate::metadata::migrations::sqlite()
            .await
            .run(&self.writer)
            .await
            .map_err(|e| MetadataError::Database(format!("migration failed: {e}")))
    }

    fn pool_stats(&self) -> crate::metadata::PoolStats {
        let (mut size, mut idle) = (u64::from(self.writer.size()), self.writer.num_idle() as u64);
        let mut waiting = 0;
        if let Readers::Own(readers) = &self.reader {
            let status = readers.status();
            size += status.size as u64;
            idle += status.available as u64;
            waiting = status.waiting as u64;
        }
        crate::metadata::PoolStats {
            size,
            idle,
            waiting,
            ..Default::default()
        }
    }

    #[tracing::instrument(name = "db.ping", skip_all)]
    async fn ping(&self) -> Result<()> {
        let ping = async {
            let mut c = self.read().await?;
            Sql::ping(&mut *c).await.map_err(|e| c.fail(e))
        };
        ping.await
            .map_err(|e| MetadataError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
#[async_trait]
impl crate::metadata::suite::Inspect for SqliteStore {
    async fn reference_rows(&self, repo: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM manifest_references WHERE repo = ?")
            .bind(repo)
            .fetch_one(&self.writer)
            .await
            .expect("count manifest references")
    }

    fn orders_collectors(&self) -> bool {
        false
    }

    async fn backdate(&self, repo: &str, at: i64) {
        for sql in [
            "UPDATE manifests SET pushed_at = $2 WHERE repo = $1",
            "UPDATE repository_blobs SET created_at = $2 WHERE repo = $1",
        ] {
            sqlx::query(sql)
                .bind(repo)
                .bind(at)
                .execute(&self.writer)
                .await
                .expect("backdate");
        }
    }

    async fn analyze(&self) {
        sqlx::query("ANALYZE")
            .execute(&self.writer)
            .await
            .expect("analyze");
    }
}

#[cfg(test)]
mod reader_tests {
    use std::time::Duration;

    use super::*;

    /// A store in `dir` with one reader connection.
    async fn one_reader(dir: &tempfile::TempDir) -> SqliteStore {
        let url = format!("sqlite://{}", dir.path().join("metadata.db").display());
        let options = PoolOptions {
            max_connections: 1,
            ..PoolOptions::default()
        };
        let store = SqliteStore::connect(&url, &options).await.expect("open");
        store.migrate().await.expect("migrate");
        store
    }

    fn open_readers(store: &SqliteStore) -> usize {
        match &store.reader {
            Readers::Own(pool) => pool.status().size,
            Readers::Writer(_) => panic!("a file database has readers of its own"),
        }
    }

    /// A read abandoned half-way (its request gone) leaves the connection fit for
    /// the next read, which finds what is there, with no ping between them.
    #[tokio::test]
    async fn an_abandoned_read_leaves_its_reader_usable() {
        let dir = tempfile::tempdir().unwrap();
        let store = one_reader(&dir).await;
        let repo = RepoName::parse("team/a").unwrap();
        let slow = async {
            let mut c = store.read().await?;
            sqlx::query_scalar::<_, i64>(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)
                 SELECT COUNT(*) FROM n",
            )
            .fetch_one(&mut *c)
            .await
            .map_err(|e| c.fail(e))
        };
        let abandoned = tokio::time::timeout(Duration::from_millis(20), slow).await;
        assert!(abandoned.is_err(), "the count outran the timeout");
        assert!(!store.repository_exists(&repo).await.unwrap());
        assert_eq!(
            store.list_tags(&repo, None, 10).await.unwrap().items.len(),
            0
        );
        assert_eq!(open_readers(&store), 1, "the same connection, reused");
    }

    /// A reader on which a query failed other than by SQLite's answer is closed, and
    /// the next read opens another; one SQLite answered goes back to the pool.
    #[tokio::test]
    async fn a_broken_reader_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = one_reader(&dir).await;
        let repo = RepoName::parse("team/a").unwrap();

        let mut c = store.read().await.unwrap();
        let answered = sqlx::query("SELECT no_such_column FROM manifests")
            .execute(&mut *c)
            .await
            .expect_err("no such column");
        assert!(matches!(c.fail(answered), MetadataError::Database(_)));
        drop(c);
        assert_eq!(open_readers(&store), 1, "kept after SQLite's answer");

        let mut c = store.read().await.unwrap();
        let broken = c.fail(sqlx::Error::WorkerCrashed);
        assert!(matches!(broken, MetadataError::Database(_)), "{broken:?}");
        drop(c);
        assert_eq!(open_readers(&store), 0, "closed after a broken connection");
        assert!(!store.repository_exists(&repo).await.unwrap());
        assert_eq!(open_readers(&store), 1);
    }
}
