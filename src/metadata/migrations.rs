//! Migrations, embedded in the binary so `packs-registry migrate` needs no files
//! beside it. Both dialects carry the same versions.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// Migration files compiled into the binary: `(version, description, sql)`.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

async fn migrator(files: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::new(Embedded(files))
        .await
        .expect("embedded migrations resolve")
}

/// The SQLite migrations, `migrations/sqlite`.
const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "packs",
        include_str!("../../migrations/sqlite/0002_packs.sql"),
    ),
    (
        3,
        "prerelease boolean",
        include_str!("../../migrations/sqlite/0003_prerelease_boolean.sql"),
    ),
    (
        4,
        "tag moves drop pack rows",
        include_str!("../../migrations/sqlite/0004_tag_moves_drop_pack_rows.sql"),
    ),
    (
        5,
        "uploads by repo",
        include_str!("../../migrations/sqlite/0005_uploads_by_repo.sql"),
    ),
    (
        6,
        "garbage collection",
        include_str!("../../migrations/sqlite/0006_garbage_collection.sql"),
    ),
    (
        7,
        "immutable tags",
        include_str!("../../migrations/sqlite/0007_immutable_tags.sql"),
    ),
];

/// The PostgreSQL migrations, `migrations/postgres`.
const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "packs",
        include_str!("../../migrations/postgres/0002_packs.sql"),
    ),
    (
        3,
        "index comments",
        include_str!("../../migrations/postgres/0003_index_comments.sql"),
    ),
    (
        4,
        "tag moves drop pack rows",
        include_str!("../../migrations/postgres/0004_tag_moves_drop_pack_rows.sql"),
    ),
    (
        5,
        "uploads by repo",
        include_str!("../../migrations/postgres/0005_uploads_by_repo.sql"),
    ),
    (
        6,
        "garbage collection",
        include_str!("../../migrations/postgres/0006_garbage_collection.sql"),
    ),
    (
        7,
        "immutable tags",
        include_str!("../../migrations/postgres/0007_immutable_tags.sql"),
    ),
];

/// SQLite migrations (`migrations/sqlite`).
pub async fn sqlite() -> Migrator {
    migrator(SQLITE).await
}

/// The SQLite migrations up to `version` only: a database as an older release left
/// it, to test the migrations after it.
#[cfg(test)]
pub async fn sqlite_up_to(version: i64) -> Migrator {
    let upto = SQLITE.iter().take_while(|m| m.0 <= version).count();
    migrator(&SQLITE[..upto]).await
}

/// PostgreSQL migrations (`migrations/postgres`). `Migrator` takes an advisory lock,
/// so replicas starting together migrate once.
pub async fn postgres() -> Migrator {
    migrator(POSTGRES).await
}

#[cfg(test)]
mod tests {
    use super::{POSTGRES, SQLITE};

    /// Both dialects carry the same versions, in order.
    #[test]
    fn dialects_carry_the_same_versions() {
        let versions = |m: &[(i64, &str, &str)]| m.iter().map(|m| m.0).collect::<Vec<_>>();
        assert_eq!(versions(SQLITE), versions(POSTGRES));
        assert!(versions(SQLITE).is_sorted());
    }
}
