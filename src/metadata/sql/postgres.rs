//! PostgreSQL dialect of the metadata store: what production replicas share.

use std::str::FromStr;

use async_trait::async_trait;
use deadpool::managed::{self, Object};
use sqlx::error::DatabaseError;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError};
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use super::rows::{self, PACK_SUMMARY_COLUMNS};
use super::{Connector, retry};
use crate::digest::Digest;
use crate::metadata::*;
use crate::names::{RepoName, Tag};

/// The statements PostgreSQL shares with SQLite.
type Sql = super::Shared<Postgres>;

/// Whether `e` is PostgreSQL turning work away for now (see [`MetadataError::Busy`]):
/// a deadlock (SQLSTATE 40P01), a serialization failure (40001), or a lock not
/// available (55P03: past `lock_timeout`, or `NOWAIT`).
pub(super) fn busy(e: &dyn DatabaseError) -> bool {
    e.try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|e| matches!(e.code(), "40P01" | "40001" | "55P03"))
}

/// Whether `e` is PostgreSQL refusing a row whose reference is gone (see
/// [`MetadataError::ReferenceGone`]): a foreign key violation (23503), or `PKREF`,
/// raised by the `manifest_reference_target` trigger (migration 7).
pub(super) fn reference_gone(e: &dyn DatabaseError) -> bool {
    e.try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|e| matches!(e.code(), "23503" | "PKREF"))
}

/// Advisory lock classes (the first key of `pg_advisory_lock(int, int)`). 7243 is the
/// packs trigger's (migration 2).
mod lock_class {
    /// The one garbage collector across replicas (second key 0).
    pub const COLLECTOR: i32 = 7244;
    /// One blob's bytes (second key `hashtext(digest)`): shared by a link, exclusive
    /// while the collector records or carries out the deletion of bytes with no row.
    pub const BLOB_BYTES: i32 = 7245;
    /// Folding the storage figures' changes (second key 0).
    pub const USAGE_FOLD: i32 = 7246;
}

/// Takes the shared lock of each of `digests`' bytes (see [`lock_class::BLOB_BYTES`])
/// for the rest of the transaction, in digest order.
async fn lock_blob_bytes_shared(tx: &mut PgConnection, digests: &[&str]) -> sqlx::Result<()> {
    let mut sorted = digests.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sqlx::query(
        "SELECT pg_advisory_xact_lock_shared($1, hashtext(d)) FROM unnest($2::text[]) AS d",
    )
    .bind(lock_class::BLOB_BYTES)
    .bind(sorted)
    .execute(tx)
    .await?;
    Ok(())
}

/// Takes the exclusive lock of each of `digests`' bytes, in digest order.
async fn lock_blob_bytes(tx: &mut PgConnection, digests: &[&str]) -> sqlx::Result<()> {
    let mut sorted = digests.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(d)) FROM unnest($2::text[]) AS d")
        .bind(lock_class::BLOB_BYTES)
        .bind(sorted)
        .execute(tx)
        .await?;
    Ok(())
}

/// From this page size on, tags are first read in no order (see `list_tags`). For a
/// long listing PostgreSQL reads the rows in the order they lie in the table (a
/// bitmap scan) and then sorts them, and that sort is slowest when the rows lie in
/// another order than their names, as tags pushed concurrently do: 10,000 such tags
/// took 7.0 ms sorted there and 3.0-4.0 ms read unsorted and sorted here (psql;
/// split_lines sorts 10,000 names in well under a millisecond; regbench's production
/// tags/list of 10,000 tags, p50: 4.40 and 5.83 ms before, 4.11 and 4.22 ms after).
/// Smaller pages come from an ordered index scan that stops after the page.
const UNORDERED_TAGS_FROM: u32 = 1000;

/// How long a pooled connection may sit idle before it is pinged on its way out of
/// the pool.
const PING_IF_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Metadata in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Retries of a write the database turned away for now (see `retry`).
    retries: u32,
    /// Connections taken, and nanoseconds spent waiting for them (`/metrics`).
    acquires: std::sync::Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
}

/// The connection pool. Not sqlx's own: sqlx (0.8, and 0.9 alike) pings every
/// connection it takes back, a second round trip to a PostgreSQL backend for every
/// one-query request. On the benchmark machine that ping held production manifest
/// GETs and blob HEADs at c=64 to 21-24k req/s (8.7-9.1× Distribution), against
/// 29-31k (12.2-13.5×) without it (docs/benchmarks.md). sqlx's connections stay
/// correct without it: each command first drains what an abandoned one left
/// (`wait_until_ready`), and a dropped transaction queues its ROLLBACK.
type Pool = managed::Pool<Connector<PgConnection>>;

/// A connection taken from the pool, that goes back when dropped unless a failure
/// on it may have left it broken, or it is dropped inside a transaction.
struct Conn {
    object: Option<Object<Connector<PgConnection>>>,
    /// Between [`begin`](Self::begin) and [`end`](Self::end).
    in_transaction: bool,
}

impl Conn {
    /// The error `e` of a query on this connection; unless it is one the database
    /// answered in the normal course (a constraint, a missing row), the connection
    /// is dropped instead of going back to the pool.
    fn fail(&mut self, e: sqlx::Error) -> MetadataError {
        if !super::answered(&e) {
            self.discard();
        }
        e.into()
    }

    /// Opens a transaction. Until [`end`](Self::end) has closed it, dropping this
    /// connection (a request abandoned half-way) closes it instead of handing it back
    /// to the pool, and the server rolls the transaction back. (sqlx's own
    /// `Transaction`, dropped, only queues its `ROLLBACK` for the connection's next
    /// use: a connection back in the pool then held the transaction's locks until
    /// some later request took it, and a refused publish kept every other publish of
    /// its pack waiting.)
    async fn begin(&mut self) -> Result<()> {
        self.in_transaction = true;
        sqlx::query("BEGIN")
            .execute(&mut **self)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Closes the transaction [`begin`](Self::begin) opened as `done` says: committed
    /// after success, rolled back after a failure, before the connection can go back
    /// to the pool. Returns `done`, or the commit's failure.
    async fn end<T>(&mut self, done: Result<T>) -> Result<T> {
        if self.object.is_none() {
            return done;
        }
        let end = if done.is_ok() { "COMMIT" } else { "ROLLBACK" };
        match sqlx::query(end).execute(&mut **self).await {
            Ok(_) => self.in_transaction = false,
            Err(e) => {
                let e = self.fail(e);
                // A connection whose transaction could not be closed is not reused.
                self.discard();
                if done.is_ok() {
                    return Err(e);
                }
                tracing::debug!(error = %e, "rollback after a failed transaction");
            }
        }
        done
    }

    /// `result` as it is, dropping the connection first if it failed for want of
    /// the database (see [`fail`](Self::fail)).
    fn settle<T>(&mut self, result: Result<T>) -> Result<T> {
        if matches!(
            result,
            Err(MetadataError::Unavailable(_) | MetadataError::Database(_))
        ) {
            self.discard();
        }
        result
    }

    fn discard(&mut self) {
        if let Some(object) = self.object.take() {
            // Taken out of the pool, then closed by being dropped.
            drop(Object::take(object));
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.in_transaction {
            self.discard();
        }
    }
}

impl std::ops::Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.object
            .as_ref()
            .expect("a discarded connection is not used again")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.object
            .as_mut()
            .expect("a discarded connection is not used again")
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`). No
    /// connection is opened yet: a replica comes up (and reports itself not ready)
    /// while the database is still unreachable.
    pub async fn connect(url: &str, options: &PoolOptions) -> Result<Self> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| MetadataError::Database(format!("invalid postgres URL: {e}")))?;
        let pool = Connector {
            options: connect,
            // A connection that sat idle may have been cut (a database restart, a
            // proxy's idle timeout).
            ping_if_idle_for: Some(PING_IF_IDLE_FOR),
        }
        .pool(options.max_connections, options.acquire_timeout)?;
        Ok(PostgresStore {
            pool,
            retries: super::TRANSIENT_RETRIES,
            acquires: Default::default(),
        })
    }

    /// The same store, trying a write the database turned away for now (a deadlock,
    /// a serialization failure, a lock not available) `retries` more times before it
    /// reports [`MetadataError::Busy`]; 3 unless set.
    pub fn with_transient_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// A connection from the pool.
    async fn conn(&self) -> Result<Conn> {
        let start = std::time::Instant::now();
        let got = super::take(&self.pool).await;
        let (count, waited) = &*self.acquires;
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        waited.fetch_add(
            u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(Conn {
            object: Some(got?),
            in_transaction: false,
        })
    }
}

impl PostgresStore {
    /// The size the query (`$1` the array of `digests`, `$2` the repository) finds for
    /// each digest, `None` where it finds none: one round trip for the whole list, in
    /// the list's order.
    async fn sizes(
        &self,
        sql: &str,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<Vec<Option<u64>>> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let list: Vec<&str> = digests.iter().map(Digest::as_str).collect();
        let rows: Vec<Option<i64>> = sqlx::query_scalar(sql)
            .bind(list)
            .bind(repo.as_str())
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| conn.fail(e))?;
        Ok(rows
            .into_iter()
            .map(|s| s.map(rows::size).transpose())
            .collect::<sqlx::Result<_>>()?)
    }
}

#[async_trait]
impl BlobIndex for PostgresStore {
    #[tracing::instrument(name = "db.link_blob", skip_all)]
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        bytes: &dyn BlobBytes,
    ) -> Result<()> {
        // A blob row the collector deletes between this link's insert of it (which
        // found it) and the link's own insert fails the link's foreign key: the link
        // is simply tried again, and then makes the row anew.
        let mut attempt = 0;
        loop {
            let linked = retry(self.retries, || async {
                let mut conn = self.conn().await?;
                conn.begin().await?;
                let linked = async {
                    lock_blob_bytes_shared(&mut conn, &[digest.as_str()]).await?;
                    Sql::link_blob(&mut conn, repo, digest, size, now_millis(), bytes).await
                }
                .await;
                let linked = conn.settle(linked);
                conn.end(linked).await
            })
            .await;
            match linked {
                Err(MetadataError::ReferenceGone) if attempt < super::REFERENCE_RETRIES => {
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    #[tracing::instrument(name = "db.blob_in_repo", skip_all)]
    async fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let mut conn = self.conn().await?;
        Sql::blob_in_repo(&mut *conn, repo, digest)
            .await
            .map_err(|e| conn.fail(e))
    }

    #[tracing::instrument(name = "db.blob_size", skip_all)]
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let mut conn = self.conn().await?;
        Sql::blob_size(&mut *conn, digest)
            .await
            .map_err(|e| conn.fail(e))
    }

    #[tracing::instrument(name = "db.unlink_blob", skip_all)]
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        retry(self.retries, || async {
            let mut conn = self.conn().await?;
            Sql::unlink_blob(&mut *conn, repo, digest)
                .await
                .map_err(|e| conn.fail(e))
        })
        .await
    }

    #[tracing::instrument(name = "db.repository_exists", skip_all)]
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        let mut conn = self.conn().await?;
        Sql::repository_exists(&mut *conn, repo)
            .await
            .map_err(|e| conn.fail(e))
    }

    #[tracing::instrument(name = "db.list_repositories", skip_all)]
    async fn list_repositories(&self, last: Option<&str>, n: u32) -> Result<Page<String>> {
        let mut conn = self.conn().await?;
        Sql::list_repositories(&mut *conn, last, n)
            .await
            .map_err(|e| conn.fail(e))
    }
}

/// The statements of a manifest push as one statement of data-modifying CTEs: with
/// sqlx every statement is a round trip, and a push with a tag took five of them plus
/// two per reference and tag (production manifest PUT ran at 2.5x Distribution).
/// Foreign keys are checked at the end of the statement, when the repository and
/// manifest rows inserted by the earlier CTEs exist. References are added only with a
/// newly inserted manifest (the `manifest_reference_target` trigger locks each one's
/// target, and refuses the row if it is gone); a manifest already stored has its push
/// time moved instead (`touched`, which waits for a collector holding the row). Tags
/// are upserted in sorted order, so that pushes sharing
/// tags cannot deadlock on them; with `$14` (create only), a tag that exists is
/// locked but left as it is. The statement answers the number of tags written, and
/// whether the manifest is there (inserted or touched: a manifest the collector
/// deleted between this statement's snapshot and its update is neither). A tag moved
/// away from a pack's manifest no longer names that pack version: a trigger on `tags`
/// deletes its row (migration 4). Tags in `$15` are marked immutable;
/// moving a marked one fails the statement (migration 6).
const PUT_MANIFEST_SQL: &str = "
    WITH repo AS (
        INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING
    ), manifest AS (
        INSERT INTO manifests (repo, digest, media_type, artifact_type, subject_digest,
                               annotations, size, body, created_at, pushed_at)
        VALUES ($1, $3, $4, $5, $6, $7, $8, $9, $10, $2) ON CONFLICT DO NOTHING
        RETURNING 1
    ), touched AS (
        UPDATE manifests SET pushed_at = $2
        WHERE repo = $1 AND digest = $3 AND NOT EXISTS (SELECT 1 FROM manifest)
        RETURNING 1
    ), refs AS (
        INSERT INTO manifest_references (repo, manifest, child_digest, kind)
        SELECT $1, $3, r.child, r.kind FROM unnest($11::text[], $12::text[]) AS r(child, kind)
        WHERE EXISTS (SELECT 1 FROM manifest)
        ON CONFLICT DO NOTHING
    ), tagged AS (
        INSERT INTO tags (repo, name, manifest_digest, updated_at, immutable)
        SELECT $1, t.name, $3, $2, t.name = ANY($15::text[])
        FROM unnest($13::text[]) WITH ORDINALITY AS t(name, i)
        ORDER BY t.i
        ON CONFLICT (repo, name) DO UPDATE
        SET manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at,
            immutable = tags.immutable OR excluded.immutable
        WHERE NOT $14::boolean
        RETURNING 1
    )
    SELECT (SELECT COUNT(*) FROM tagged) AS tagged,
           EXISTS (SELECT 1 FROM manifest) OR EXISTS (SELECT 1 FROM touched) AS present";

/// Runs [`PUT_MANIFEST_SQL`] on `conn`: alone it is atomic, and inside a caller's
/// transaction it is part of that. With `create_only`, tags that exist already are
/// left alone; returns whether every tag was written. A manifest that vanished under
/// the push (see [`PUT_MANIFEST_SQL`]) is [`MetadataError::ReferenceGone`]: pushed
/// again, it is inserted anew.
async fn put_manifest_in(
    conn: &mut sqlx::PgConnection,
    repo: &RepoName,
    m: &ManifestRecord,
    references: &[(Digest, ReferenceKind)],
    tags: &[Tag],
    create_only: bool,
    immutable: &[Tag],
) -> Result<bool> {
    let immutable: Vec<&str> = immutable.iter().map(Tag::as_str).collect();
    let mut tags: Vec<&str> = tags.iter().map(Tag::as_str).collect();
    tags.sort_unstable();
    tags.dedup();
    // In digest order, as the collector locks what it deletes: a push and a
    // collection that share several targets cannot deadlock on them.
    let mut references: Vec<(&str, &str)> = references
        .iter()
        .map(|(d, k)| (d.as_str(), k.as_str()))
        .collect();
    references.sort_unstable();
    let (children, kinds): (Vec<&str>, Vec<&str>) = references.into_iter().unzip();
    let wanted = tags.len();
    let row = sqlx::query(PUT_MANIFEST_SQL)
        .bind(repo.as_str())
        .bind(now_millis())
        .bind(m.digest.as_str())
        .bind(&m.media_type)
        .bind(&m.artifact_type)
        .bind(m.subject.as_ref().map(Digest::as_str))
        .bind(&m.annotations)
        .bind(m.body.len() as i64)
        .bind(m.body.as_ref())
        .bind(m.created_at)
        .bind(children)
        .bind(kinds)
        .bind(tags)
        .bind(create_only)
        .bind(immutable)
        .fetch_one(conn)
        .await?;
    if !rows::Columns::flag(&row, "present")? {
        return Err(MetadataError::ReferenceGone);
    }
    let written = rows::Columns::int(&row, "tagged")?;
    Ok(usize::try_from(written).is_ok_and(|w| w == wanted))
}

#[async_trait]
impl ManifestIndex for PostgresStore {
    #[tracing::instrument(name = "db.linked_blob_sizes", skip_all)]
    async fn linked_blob_sizes(
        &self,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<Vec<Option<u64>>> {
        self.sizes(
            "SELECT (SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                     WHERE rb.repo = $2 AND rb.digest = l.d)
             FROM unnest($1::text[]) WITH ORDINALITY AS l(d, i) ORDER BY i",
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
            "SELECT (SELECT m.size FROM manifests m WHERE m.repo = $2 AND m.digest = l.d)
             FROM unnest($1::text[]) WITH ORDINALITY AS l(d, i) ORDER BY i",
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
        // One statement, atomic by itself: no BEGIN and COMMIT round trips.
        retry(self.retries, || async {
            let mut conn = self.conn().await?;
            let put = put_manifest_in(&mut conn, repo, m, references, tags, false, immutable).await;
            conn.settle(put.map(drop))
        })
        .await
    }

    #[tracing::instrument(name = "db.get_manifest", skip_all)]
    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        let mut conn = self.conn().await?;
        Sql::get_manifest(&mut *conn, repo, digest)
            .await
            .map_err(|e| conn.fail(e))
    }

    #[tracing::instrument(name = "db.get_manifest_by_tag", skip_all)]
    async fn get_manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>> {
        let mut conn = self.conn().await?;
        Sql::get_manifest_by_tag(&mut *conn, repo, tag)
            .await
            .map_err(|e| conn.fail(e))
    }

    #[tracing::instrument(name = "db.delete_manifest", skip_all)]
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        // Tags, references and pack rows go with it (ON DELETE CASCADE).
        retry(self.retries, || async {
            let mut conn = self.conn().await?;
            Sql::delete_manifest(&mut *conn, repo, digest)
                .await
                .map_err(|e| conn.fail(e))
        })
        .await
    }

    #[tracing::instrument(name = "db.delete_tag", skip_all)]
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        retry(self.retries, || async {
            let mut conn = self.conn().await?;
            Sql::delete_tag(&mut *conn, repo, tag)
                .await
                .map_err(|e| conn.fail(e))
        })
        .await
    }

    #[tracing::instrument(name = "db.list_tags", skip_all)]
    async fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: u32) -> Result<Page<String>> {
        let mut conn = self.conn().await?;
        let mut ordered = n < UNORDERED_TAGS_FROM;
        loop {
            let sql = if ordered {
                "SELECT string_agg(name, E'\\n') FROM
                   (SELECT name FROM tags WHERE repo = $1 AND name > $2 ORDER BY name LIMIT $3) s"
            } else {
                "SELECT string_agg(name, E'\\n') FROM
                   (SELECT name FROM tags WHERE repo = $1 AND name > $2 LIMIT $3) s"
            };
            let joined: Option<String> = sqlx::query_scalar(sql)
                .bind(repo.as_str())
                .bind(last.unwrap_or(""))
                .bind(i64::from(n) + 1)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| conn.fail(e))?;
            let names = split_lines(joined);
            // Read in no order (and sorted by split_lines), the names are the page
            // only if they are every tag that remains; else the ordered query reads it.
            if ordered || names.len() <= n as usize {
                return Ok(rows::page(names, n));
            }
            ordered = true;
        }
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
        let mut conn = self.conn().await?;
        Sql::list_referrers(&mut *conn, repo, subject, artifact_type, last, n)
            .await
            .map_err(|e| conn.fail(e))
    }
}

// ---------------------------------------------------------------------------------
// Packs index

/// A `LIKE` pattern matching `text` anywhere (`\` is PostgreSQL's default escape).
fn like_substring(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// [`PackIndex::put_pack_manifest`] on `conn`, inside the caller's transaction.
///
/// Locks are taken in one order on every path that reaches the packs trigger: the
/// tag's row, then the version's `pack_versions` row (deleted by the cascade from
/// `tags` or the `tags_moved` trigger, or upserted here), then (in the packs trigger)
/// the pack's advisory lock. A tag delete or move, a manifest delete and this push
/// all lock the tag first; the packs trigger runs last. (This push once took the advisory lock
/// first, to hold its create-only check until commit, and deadlocked with a tag
/// delete holding the tag's row and waiting, through the cascade and trigger, for
/// that lock.) A create-only push instead claims the version's tag in the manifest
/// push itself: an existing tag, or one a concurrent push is creating (waited for),
/// is left alone and the push refused.
#[allow(clippy::too_many_arguments)]
async fn put_pack_manifest_in(
    tx: &mut PgConnection,
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
    if create_only && Sql::pack_version_taken(&mut *tx, p).await? {
        return Err(MetadataError::Conflict);
    }
    let now = now_millis();
    let mut link = link.to_vec();
    link.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let digests: Vec<&str> = link.iter().map(|(d, _)| d.as_str()).collect();
    if !digests.is_empty() {
        lock_blob_bytes_shared(tx, &digests).await?;
    }
    for (digest, size) in &link {
        Sql::link_blob(tx, repo, digest, *size, now, bytes).await?;
    }
    let claimed = put_manifest_in(tx, repo, m, references, tags, create_only, immutable).await?;
    if !claimed {
        return Err(MetadataError::Conflict);
    }
    Sql::put_pack_version(&mut *tx, p).await?;
    Ok(())
}

#[async_trait]
impl PackIndex for PostgresStore {
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
        retry(self.retries, || async {
            let mut conn = self.conn().await?;
            conn.begin().await?;
            let put = put_pack_manifest_in(
                &mut conn,
                repo,
                m,
                references,
                tags,
                p,
                create_only,
                link,
                bytes,
                immutable,
            )
            .await;
            let put = conn.settle(put);
            conn.end(put).await
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
        let mut conn = self.conn().await?;
        // Only the filters given appear in the SQL, so the planner can pick the index
        // that serves them ((type, pack_id), (author, pack_id), the trigram index, pack_id).
        let mut sql = format!("SELECT {PACK_SUMMARY_COLUMNS} FROM packs WHERE pack_id > $1");
        let mut next = 2;
        let mut param = |sql: &mut String, clause: &str| {
            sql.push_str(&clause.replace('?', &format!("${next}")));
            next += 1;
        };
        if filter.pack_type.is_some() {
            param(&mut sql, " AND type = ?");
        }
        if filter.author.is_some() {
            param(&mut sql, " AND author = ?");
        }
        let q = filter.q.as_deref().filter(|q| !q.is_empty());
        if q.is_some() {
            param(&mut sql, " AND search_text LIKE ?");
        }
        param(&mut sql, " ORDER BY pack_id LIMIT ?");
        let mut query = sqlx::query(&sql).bind(after.unwrap_or(""));
        if let Some(t) = &filter.pack_type {
            query = query.bind(t);
        }
        if let Some(a) = &filter.author {
            query = query.bind(a);
        }
        if let Some(q) = q {
            // Planned afresh for each pattern, never as a prepared statement: after five
            // runs PostgreSQL may settle on a generic plan, blind to the pattern, and the
            // plan that suits a common word (walk pack_id, filter) then scanned all
            // 100,000 packs for a rare one (160 ms instead of under 1 with the trigram
            // index, regbench).
            query = query.bind(like_substring(q)).persistent(false);
        }
        let rows = query
            .bind(i64::from(n) + 1)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| conn.fail(e))?;
        let items = rows
            .iter()
            .map(rows::pack_summary)
            .collect::<sqlx::Result<Vec<_>>>()?;
        Ok(rows::page(items, n))
    }

    #[tracing::instrument(name = "db.get_pack", skip_all)]
    async fn get_pack(&self, pack_id: &str) -> Result<Option<PackSummaryRecord>> {
        let mut conn = self.conn().await?;
        Sql::get_pack(&mut *conn, pack_id)
            .await
            .map_err(|e| conn.fail(e))
    }

    #[tracing::instrument(name = "db.list_pack_versions", skip_all)]
    async fn list_pack_versions(&self, pack_id: &str) -> Result<Vec<PackVersionRecord>> {
        let mut conn = self.conn().await?;
        Sql::list_pack_versions(&mut *conn, pack_id)
            .await
            .map_err(|e| conn.fail(e))
    }

    #[tracing::instrument(name = "db.pack_used_by", skip_all)]
    async fn pack_used_by(&self, pack_id: &str, n: u32) -> Result<Vec<String>> {
        let mut conn = self.conn().await?;
        Sql::pack_used_by(&mut *conn, pack_id, n)
            .await
            .map_err(|e| conn.fail(e))
    }

    #[tracing::instrument(name = "db.get_pack_version", skip_all)]
    async fn get_pack_version(
        &self,
        pack_id: &str,
        version: &str,
    ) -> Result<Option<PackVersionRecord>> {
        let mut conn = self.conn().await?;
        Sql::get_pack_version(&mut *conn, pack_id, version)
            .await
            .map_err(|e| conn.fail(e))
    }

    #[tracing::instrument(name = "db.delete_pack_version", skip_all)]
    async fn delete_pack_version(&self, pack_id: &str, version: &str) -> Result<bool> {
        // The version's row goes with its tag (ON DELETE CASCADE); the packs row follows
        // by trigger.
        retry(self.retries, || async {
            let mut conn = self.conn().await?;
            Sql::delete_pack_version(&mut *conn, pack_id, version)
                .await
                .map_err(|e| conn.fail(e))
        })
        .await
    }
}

#[async_trait]
impl UploadIndex for PostgresStore {
    #[tracing::instrument(name = "db.create_upload", skip_all)]
    async fn create_upload(&self, u: &UploadRecord, caps: SessionCaps) -> Result<()> {
        let created = retry(self.retries, || async {
            let mut conn = self.conn().await?;
            Sql::create_upload(&mut *conn, u, caps)
                .await
                .map_err(|e| conn.fail(e))
        })
        .await?;
        if created {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let cap = Sql::session_cap_reached(&mut *conn, &u.repo, caps)
            .await
            .map_err(|e| conn.fail(e))?;
        Err(MetadataError::CapReached(cap))
    }

    #[tracing::instrument(name = "db.get_upload", skip_all)]
    async fn get_upload(&self, repo: &RepoName, id: Uuid) -> Result<Option<UploadRecord>> {
        let mut conn = self.conn().await?;
        Sql::get_upload(&mut *conn, repo, id)
            .await
            .map_err(|e| conn.fail(e))
    }

    #[tracing::instrument(name = "db.update_upload", skip_all)]
    async fn update_upload(&self, u: &UploadRecord, expected_offset: u64) -> Result<()> {
        let updated = retry(self.retries, || async {
            let mut conn = self.conn().await?;
            Sql::update_upload(&mut *conn, u, expected_offset)
                .await
                .map_err(|e| conn.fail(e))
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
            let mut conn = self.conn().await?;
            Sql::delete_upload(&mut *conn, id)
                .await
                .map_err(|e| conn.fail(e))
        })
        .await
    }

    #[tracing::instrument(name = "db.stale_uploads", skip_all)]
    async fn stale_uploads(&self, updated_before: i64, limit: u32) -> Result<Vec<Uuid>> {
        let mut conn = self.conn().await?;
        Sql::stale_uploads(&mut *conn, updated_before, limit)
            .await
            .map_err(|e| conn.fail(e))
    }

    #[tracing::instrument(name = "db.upload_exists", skip_all)]
    async fn upload_exists(&self, id: Uuid) -> Result<bool> {
        let mut conn = self.conn().await?;
        Sql::upload_exists(&mut *conn, id)
            .await
            .map_err(|e| conn.fail(e))
    }
}

/// `digests` as text, for a `$n::text[]` parameter.
fn texts(digests: &[Digest]) -> Vec<&str> {
    digests.iter().map(Digest::as_str).collect()
}

/// `$body` (an expression using `$tx: &mut PgConnection`, which may `return` or use
/// `?` with [`MetadataError`]s) in a transaction on a connection of `$store`'s pool,
/// tried again as the other writes are (see `retry`).
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {
        retry($store.retries, || async {
            let mut conn = $store.conn().await?;
            conn.begin().await?;
            let done: Result<_> = async {
                let $tx: &mut PgConnection = &mut conn;
                $body
            }
            .await;
            let done = conn.settle(done);
            conn.end(done).await
        })
    };
}

impl PostgresStore {
    /// The integer the query (`$1` the array of `digests`) finds for each digest, in
    /// the list's order.
    async fn per_digest(&self, sql: &str, digests: &[Digest]) -> Result<Vec<Option<i64>>> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        sqlx::query_scalar(sql)
            .bind(texts(digests))
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| conn.fail(e))
    }
}

// Garbage collection. What a delete decides on is re-checked by the deleting statement
// after the rows are locked (FOR UPDATE), in a statement of its own, so that it sees
// every push that locked them first (tags' foreign keys and the references trigger
// take FOR KEY SHARE); a push that comes after waits, then finds them gone.
#[async_trait]
impl CollectIndex for PostgresStore {
    async fn collector_lock(&self, wait: bool) -> Result<Option<CollectorLock>> {
        let mut conn = self.conn().await?;
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, 0)")
                .bind(lock_class::COLLECTOR)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| conn.fail(e))?;
            if got {
                // The connection leaves the pool with the lock: closing it (when the
                // guard is dropped, or the process dies) releases the lock.
                let object = conn.object.take().expect("a live connection");
                let held = Object::take(object);
                return Ok(Some(CollectorLock::holding(std::sync::Mutex::new(held))));
            }
            if !wait {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    async fn repositories_after(&self, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        Ok(self.list_repositories(last, n).await?.items)
    }

    async fn repository_graph(&self, repo: &RepoName) -> Result<RepositoryGraph> {
        let mut conn = self.conn().await?;
        conn.begin().await?;
        let graph = async {
            // One snapshot for the five reads.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *conn)
                .await?;
            Ok(Sql::repository_graph(&mut conn, repo).await?)
        }
        .await;
        let graph = conn.settle(graph);
        conn.end(graph).await
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
            let list = texts(batch);
            let list = &list;
            let rows = in_transaction!(self, |tx| {
                let locked: Vec<String> = sqlx::query_scalar(
                    "SELECT digest FROM manifests
                             WHERE repo = $1 AND digest = ANY($2::text[]) AND pushed_at < $3
                             ORDER BY digest FOR UPDATE",
                )
                .bind(repo.as_str())
                .bind(list)
                .bind(pushed_before)
                .fetch_all(&mut *tx)
                .await?;
                if locked.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(sqlx::query(
                    "DELETE FROM manifests m
                             WHERE m.repo = $1 AND m.digest = ANY($2::text[])
                               AND m.pushed_at < $3
                               AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = m.repo
                                               AND t.manifest_digest = m.digest)
                               AND NOT EXISTS (SELECT 1 FROM manifest_references r
                                               WHERE r.repo = m.repo
                                                 AND r.child_digest = m.digest
                                                 AND r.kind = 'manifest')
                               AND (m.subject_digest IS NULL
                                    OR (NOT $4 AND NOT EXISTS (SELECT 1 FROM manifests s
                                        WHERE s.repo = m.repo
                                          AND s.digest = m.subject_digest)))
                             RETURNING digest, size",
                )
                .bind(repo.as_str())
                .bind(locked)
                .bind(pushed_before)
                .bind(keep_orphaned_referrers)
                .fetch_all(&mut *tx)
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
            let list = texts(batch);
            let list = &list;
            let rows = in_transaction!(self, |tx| {
                        let locked: Vec<String> = sqlx::query_scalar(
                            "SELECT digest FROM repository_blobs
                             WHERE repo = $1 AND digest = ANY($2::text[]) AND created_at < $3
                             ORDER BY digest FOR UPDATE",
                        )
                        .bind(repo.as_str())
                        .bind(list)
                        .bind(linked_before)
                        .fetch_all(&mut *tx)
                        .await?;
                        if locked.is_empty() {
                            return Ok(Vec::new());
                        }
                        Ok(sqlx::query(
                            "WITH gone AS (
                                DELETE FROM repository_blobs rb
                                WHERE rb.repo = $1 AND rb.digest = ANY($2::text[])
                                  AND rb.created_at < $3
                                  AND NOT EXISTS (SELECT 1 FROM manifest_references r
                                                  WHERE r.repo = rb.repo
                                                    AND r.child_digest = rb.digest
                                                    AND r.kind <> 'manifest')
                                RETURNING digest
                             )
                             SELECT g.digest, b.size FROM gone g JOIN blobs b ON b.digest = g.digest",
                        )
                        .bind(repo.as_str())
                        .bind(locked)
                        .bind(linked_before)
                        .fetch_all(&mut *tx)
                        .await?)
            })
            .await?;
            for row in &rows {
                deleted.push(rows::digest_and_size(row)?);
            }
        }
        Ok(deleted)
    }

    async fn unlinked_blobs(&self, after: Option<&str>, n: u32) -> Result<Vec<(Digest, u64)>> {
        let mut conn = self.conn().await?;
        Sql::unlinked_blobs(&mut *conn, after, n)
            .await
            .map_err(|e| conn.fail(e))
    }

    async fn link_counts(&self, digests: &[Digest]) -> Result<Vec<u64>> {
        let counts = self
            .per_digest(
                "SELECT (SELECT COUNT(*) FROM repository_blobs rb WHERE rb.digest = l.d)
                 FROM unnest($1::text[]) WITH ORDINALITY AS l(d, i) ORDER BY i",
                digests,
            )
            .await?;
        Ok(counts
            .into_iter()
            .map(|c| c.and_then(|c| u64::try_from(c).ok()).unwrap_or_default())
            .collect())
    }

    async fn delete_blobs_if_unlinked(&self, digests: &[Digest]) -> Result<Vec<(Digest, u64)>> {
        const SQL: &str = "
            WITH gone AS (
                DELETE FROM blobs b WHERE b.digest = ANY($1::text[])
                  AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
                RETURNING digest, size
            ), marked AS (
                INSERT INTO blob_deletions (digest, bytes_deleted, at)
                SELECT digest, FALSE, $2 FROM gone
                ON CONFLICT (digest) DO UPDATE SET bytes_deleted = FALSE, at = excluded.at
            )
            SELECT digest, size FROM gone";
        let delete = async |list: Vec<&str>| {
            retry(self.retries, || async {
                let mut conn = self.conn().await?;
                let rows = sqlx::query(SQL)
                    .bind(&list)
                    .bind(now_millis())
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| conn.fail(e))?;
                rows.iter()
                    .map(|row| Ok(rows::digest_and_size(row)?))
                    .collect::<Result<Vec<_>>>()
            })
            .await
        };
        let mut deleted = Vec::new();
        for batch in digests.chunks(super::GC_BATCH) {
            match delete(texts(batch)).await {
                Ok(rows) => deleted.extend(rows),
                // A link made meanwhile (its foreign key then refuses the delete):
                // one at a time, keeping the linked ones.
                Err(MetadataError::ReferenceGone) => {
                    for digest in batch {
                        match delete(vec![digest.as_str()]).await {
                            Ok(rows) => deleted.extend(rows),
                            Err(MetadataError::ReferenceGone) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    async fn quarantine_bytes(&self, digests: &[Digest]) -> Result<u64> {
        let mut added = 0;
        for batch in digests.chunks(super::GC_BATCH) {
            let list = texts(batch);
            added += retry(self.retries, || async {
                let mut conn = self.conn().await?;
                let done = sqlx::query(
                    "INSERT INTO blob_deletions (digest, bytes_deleted, at)
                     SELECT d, FALSE, $2 FROM unnest($1::text[]) AS d
                     WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = d)
                     ON CONFLICT (digest) DO NOTHING",
                )
                .bind(&list)
                .bind(now_millis())
                .execute(&mut *conn)
                .await
                .map_err(|e| conn.fail(e))?;
                Ok(done.rows_affected())
            })
            .await?;
        }
        Ok(added)
    }

    async fn blobs_known(&self, digests: &[Digest]) -> Result<Vec<bool>> {
        let known = self
            .per_digest(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM blobs b WHERE b.digest = l.d)
                               OR EXISTS (SELECT 1 FROM blob_deletions x WHERE x.digest = l.d)
                             THEN 1::bigint END
                 FROM unnest($1::text[]) WITH ORDINALITY AS l(d, i) ORDER BY i",
                digests,
            )
            .await?;
        Ok(known.into_iter().map(|k| k.is_some()).collect())
    }

    async fn pending_byte_deletions(&self, n: u32) -> Result<Vec<Digest>> {
        let mut conn = self.conn().await?;
        Sql::pending_byte_deletions(&mut *conn, n)
            .await
            .map_err(|e| conn.fail(e))
    }

    async fn delete_bytes(&self, digests: &[Digest], bytes: &dyn BlobBytes) -> Result<Vec<Digest>> {
        let mut deleted = Vec::new();
        for batch in digests.chunks(32) {
            let list = texts(batch);
            let list = &list;
            // Each digest's exclusive bytes lock is held from the check to the mark:
            // a link of one of them (which takes it shared) comes wholly before or
            // after, and after, it finds the deletion done and checks the bytes.
            let done = in_transaction!(self, |tx| {
                lock_blob_bytes(tx, list).await?;
                // A deletion recorded for bytes whose row is back (recorded
                // while a link was committing) is void.
                sqlx::query(
                    "DELETE FROM blob_deletions d
                             WHERE d.digest = ANY($1::text[]) AND NOT d.bytes_deleted
                               AND EXISTS (SELECT 1 FROM blobs b WHERE b.digest = d.digest)",
                )
                .bind(list)
                .execute(&mut *tx)
                .await?;
                let due: Vec<String> = sqlx::query_scalar(
                    "SELECT digest FROM blob_deletions
                             WHERE digest = ANY($1::text[]) AND NOT bytes_deleted",
                )
                .bind(list)
                .fetch_all(&mut *tx)
                .await?;
                let due = due
                    .into_iter()
                    .map(|d| Ok(rows::digest(d)?))
                    .collect::<Result<Vec<_>>>()?;
                for digest in &due {
                    bytes.delete(digest).await.map_err(MetadataError::Bytes)?;
                }
                sqlx::query(
                    "UPDATE blob_deletions SET bytes_deleted = TRUE, at = $2
                             WHERE digest = ANY($1::text[])",
                )
                .bind(texts(&due))
                .bind(now_millis())
                .execute(&mut *tx)
                .await?;
                Ok(due)
            })
            .await?;
            deleted.extend(done);
        }
        Ok(deleted)
    }

    async fn forget_byte_deletions(&self, before: i64) -> Result<u64> {
        retry(self.retries, || async {
            let mut conn = self.conn().await?;
            Sql::forget_byte_deletions(&mut *conn, before)
                .await
                .map_err(|e| conn.fail(e))
        })
        .await
    }

    async fn storage_usage(&self, top: u32) -> Result<StorageUsage> {
        // One folder at a time (the others read what is folded so far): two folds
        // of the same changes could deadlock on their rows.
        in_transaction!(self, |tx| {
            let folding: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, 0)")
                .bind(lock_class::USAGE_FOLD)
                .fetch_one(&mut *tx)
                .await?;
            if folding {
                sqlx::query(
                    "WITH moved AS (
                            DELETE FROM storage_usage_changes
                            RETURNING repo, blobs, blob_bytes, manifests, manifest_bytes
                         )
                         INSERT INTO storage_usage AS u
                            (repo, blobs, blob_bytes, manifests, manifest_bytes)
                         SELECT repo, SUM(blobs), SUM(blob_bytes), SUM(manifests),
                                SUM(manifest_bytes)
                         FROM moved GROUP BY repo
                         ON CONFLICT (repo) DO UPDATE SET
                            blobs = u.blobs + excluded.blobs,
                            blob_bytes = u.blob_bytes + excluded.blob_bytes,
                            manifests = u.manifests + excluded.manifests,
                            manifest_bytes = u.manifest_bytes + excluded.manifest_bytes",
                )
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
        .await?;
        let mut conn = self.conn().await?;
        let usage = Sql::read_usage(&mut conn, top).await;
        usage.map_err(|e| conn.fail(e))
    }

    async fn record_gc_run(&self, run: &GcRunRecord) -> Result<()> {
        retry(self.retries, || async {
            let mut conn = self.conn().await?;
            Sql::record_gc_run(&mut *conn, run)
                .await
                .map_err(|e| conn.fail(e))
        })
        .await
    }

    async fn gc_totals(&self) -> Result<GcTotals> {
        let mut conn = self.conn().await?;
        Sql::gc_totals(&mut *conn).await.map_err(|e| conn.fail(e))
    }
}

#[async_trait]
impl MetadataStore for PostgresStore {
    #[tracing::instrument(name = "db.migrate", skip_all)]
    async fn migrate(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let migrated = crate::metadata::migrations::postgres()
            .await
            .run_direct(&mut *conn)
            .await
            .map_err(|e| MetadataError::Database(format!("migration failed: {e}")));
        conn.settle(migrated)
    }

    fn pool_stats(&self) -> crate::metadata::PoolStats {
        let status = self.pool.status();
        let (count, waited) = &*self.acquires;
        crate::metadata::PoolStats {
            size: status.size as u64,
            idle: status.available as u64,
            waiting: status.waiting as u64,
            acquires: count.load(std::sync::atomic::Ordering::Relaxed),
            wait_seconds: waited.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9,
        }
    }

    #[tracing::instrument(name = "db.ping", skip_all)]
    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        Sql::ping(&mut *conn)
            .await
            .map_err(|e| match conn.fail(e) {
                unavailable @ MetadataError::Unavailable(_) => unavailable,
                other => MetadataError::Unavailable(other.to_string()),
            })?;
        Ok(())
    }
}

#[cfg(test)]
#[async_trait]
impl crate::metadata::suite::Inspect for PostgresStore {
    async fn reference_rows(&self, repo: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM manifest_references WHERE repo = $1")
            .bind(repo)
            .fetch_one(&mut *self.conn().await.expect("a connection"))
            .await
            .expect("count manifest references")
    }

    fn orders_collectors(&self) -> bool {
        true
    }

    async fn backdate(&self, repo: &str, at: i64) {
        for sql in [
            "UPDATE manifests SET pushed_at = $2 WHERE repo = $1",
            "UPDATE repository_blobs SET created_at = $2 WHERE repo = $1",
        ] {
            sqlx::query(sql)
                .bind(repo)
                .bind(at)
                .execute(&mut *self.conn().await.expect("a connection"))
                .await
                .expect("backdate");
        }
    }

    async fn analyze(&self) {
        sqlx::query("ANALYZE")
            .execute(&mut *self.conn().await.expect("a connection"))
            .await
            .expect("analyze");
    }
}
