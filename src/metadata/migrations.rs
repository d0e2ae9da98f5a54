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

/// SQLite migrations (`migrations/sqlite`).
pub async fn sqlite() -> Migrator {
    migrator(&[
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
    ])
    .await
}

/// PostgreSQL migrations (`migrations/postgres`). `Migrator` takes an advisory lock,
/// so replicas starting together migrate once.
pub async fn postgres() -> Migrator {
    migrator(&[
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
    ])
    .await
}
