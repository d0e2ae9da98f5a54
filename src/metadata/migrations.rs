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
        "immutable tags",
        include_str!("../../migrations/sqlite/0006_immutable_tags.sql"),
    ),
    (
        7,
        "garbage collection",
        include_str!("../../migrations/sqlite/0007_garbage_collection.sql"),
    ),
    (
        8,
        "pack edges",
        include_str!("../../migrations/sqlite/0008_pack_edges.sql"),
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
        "immutable tags",
        include_str!("../../migrations/postgres/0006_immutable_tags.sql"),
    ),
    (
        7,
        "garbage collection",
        include_str!("../../migrations/postgres/0007_garbage_collection.sql"),
    ),
    (
        8,
        "pack edges",
        include_str!("../../migrations/postgres/0008_pack_edges.sql"),
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

    /// A migration that has landed never changes: a database that ran it records its
    /// checksum, and sqlx refuses to start against an edited or renumbered one. New
    /// schema goes into a new version; add its sum here when it lands.
    #[test]
    fn landed_migrations_never_change() {
        use sha2::{Digest, Sha256};
        let sums = |m: &[(i64, &str, &str)]| {
            m.iter()
                .map(|m| {
                    Sha256::digest(m.2.as_bytes())
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
        };
        let sqlite = [
            "ef615be2763281b9cb73831b16771aaab43fdca655deb19ee482a7180a689516",
            "9c6f807337dc9cd776911efdea11998acc67359517e79c0c50206b216ff33c34",
            "e766c9dcafd3763227e0bd57be2dd6ed63a2bb002c5257d0f8f3387275d58559",
            "af001d40eeeeebd20af85930977847ae7cc0269ca78ab75a0a37f12f3c4a59ac",
            "fa2e7479cf037c0bb341e4043905314e2916820dfe28097d6f6e3dd7abdb5120",
            "6ac6a1709dd91608c3ff7777908f1e05cc2efc521e53a422e3554983e1fccf18",
            "21a76e237d0703d217e7462f5f81ff0d1eb49894d661a136f29485b9cba8e8a3",
            "990799b37668df56246e045dbaf5692076bf0f21ded441930606b8b24fcb87c6",
        ];
        let postgres = [
            "df8cfd0b59896b5db17d057a22de95990cc764c19f320c3111e1131f3647c076",
            "0155399f91239f29db51643b1c24ac9165c8e08f4a069a620dc73694c22c6095",
            "eebdc29d89f7c0ff060557faa15110b7bea744df8b489f0057f3ae894387469b",
            "7af9522caf0baf88d651930fef4ffc2ecb29fc3249c2f92e1f45aafab03ca39b",
            "b534377120def8e37f0939b18029009dcdaf26d64c051805e3c6df1a95f72487",
            "26926c0edb85a8ac5950c7387e96447bfb0c227c1d8f04e4f52dbe464af87cf1",
            "ec4853862d647aa4a71e1ffa1e66d6246fc2fdafccde40f29c5c2be454fcebac",
            "a2a0dd37e94468edf479862b9b3d12f0236c21dd289097a3747938374123010c",
        ];
        assert_eq!(sums(SQLITE)[..sqlite.len()], sqlite);
        assert_eq!(sums(POSTGRES)[..postgres.len()], postgres);
    }
}
