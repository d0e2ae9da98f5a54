-- SQLite dialect, version 3. Keep in step with migrations/postgres.
--
-- pack_versions.prerelease becomes a BOOLEAN, as it is on PostgreSQL: declared so
-- (sqlx reads and writes it as a bool) and checked to hold only 0 or 1. SQLite
-- cannot change a column's type in place, so the table is rebuilt: a new table,
-- the rows copied, the old table dropped (its indexes and triggers with it; nothing
-- refers to it), the new one renamed, then the indexes and triggers made again as
-- 0002 made them. The packs rows are left as they are: the copy changes no value.
--
-- The readers of every secondary index of the schema, since 0001 and 0002 could not
-- say (an applied migration cannot change):
--   repository_blobs_by_digest   the foreign key check when a `blobs` row is deleted,
--                                and garbage collection's "is this blob linked into
--                                any repository".
--   manifests_by_subject         the referrers listing (list_referrers).
--   manifest_references_by_child garbage collection and delete protection: "does any
--                                manifest of this repository still refer to this
--                                blob or manifest".
--   tags_by_manifest             ON DELETE CASCADE from manifests to their tags.
--   uploads_by_updated           the expiry sweep (stale_uploads).
--   pack_versions_by_precedence  list_pack_versions and the packs triggers' latest
--                                version.
--   pack_versions_by_tag         ON DELETE CASCADE from tags, and the manifest push
--                                dropping the row of a tag it moves.
--   pack_versions_by_manifest    ON DELETE CASCADE from manifests.
--   packs_by_type, packs_by_author  list_packs filtered by type or author.

CREATE TABLE pack_versions_v3 (
    pack_id             TEXT NOT NULL,
    version             TEXT NOT NULL,
    sort_key            TEXT NOT NULL,
    prerelease          BOOLEAN NOT NULL CHECK (prerelease IN (0, 1)),
    type                TEXT NOT NULL,
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    author              TEXT NOT NULL,
    search_text         TEXT NOT NULL,
    repository          TEXT NOT NULL,
    tag                 TEXT NOT NULL,
    manifest_digest     TEXT NOT NULL,
    content_digest      TEXT NOT NULL,
    content_media_type  TEXT NOT NULL,
    size                INTEGER NOT NULL,
    published_at        INTEGER NOT NULL,
    dependencies        TEXT NOT NULL,
    members             TEXT NOT NULL,
    metadata            TEXT NOT NULL,
    PRIMARY KEY (pack_id, version),
    FOREIGN KEY (repository, tag) REFERENCES tags (repo, name) ON DELETE CASCADE,
    FOREIGN KEY (repository, manifest_digest) REFERENCES manifests (repo, digest) ON DELETE CASCADE
);

INSERT INTO pack_versions_v3 (pack_id, version, sort_key, prerelease, type, name,
    description, author, search_text, repository, tag, manifest_digest, content_digest,
    content_media_type, size, published_at, dependencies, members, metadata)
SELECT pack_id, version, sort_key, prerelease <> 0, type, name, description, author,
    search_text, repository, tag, manifest_digest, content_digest, content_media_type,
    size, published_at, dependencies, members, metadata
FROM pack_versions;

DROP TABLE pack_versions;
ALTER TABLE pack_versions_v3 RENAME TO pack_versions;

CREATE UNIQUE INDEX pack_versions_by_precedence ON pack_versions (pack_id, sort_key, version);
CREATE UNIQUE INDEX pack_versions_by_tag ON pack_versions (repository, tag);
CREATE INDEX pack_versions_by_manifest ON pack_versions (repository, manifest_digest);

-- packs from pack_versions: the latest version's fields, the number of versions.
CREATE TRIGGER pack_versions_insert AFTER INSERT ON pack_versions BEGIN
    INSERT INTO packs (pack_id, type, name, description, author, latest_version, versions,
                       updated_at, search_text)
    SELECT pack_id, type, name, description, author, version,
           (SELECT COUNT(*) FROM pack_versions c WHERE c.pack_id = NEW.pack_id),
           CAST(unixepoch('subsec') * 1000 AS INTEGER), search_text
    FROM pack_versions WHERE pack_id = NEW.pack_id
    ORDER BY prerelease, sort_key DESC, version DESC LIMIT 1
    ON CONFLICT (pack_id) DO UPDATE SET
        type = excluded.type, name = excluded.name, description = excluded.description,
        author = excluded.author, latest_version = excluded.latest_version,
        versions = excluded.versions, updated_at = excluded.updated_at,
        search_text = excluded.search_text;
END;
CREATE TRIGGER pack_versions_update AFTER UPDATE ON pack_versions BEGIN
    INSERT INTO packs (pack_id, type, name, description, author, latest_version, versions,
                       updated_at, search_text)
    SELECT pack_id, type, name, description, author, version,
           (SELECT COUNT(*) FROM pack_versions c WHERE c.pack_id = NEW.pack_id),
           CAST(unixepoch('subsec') * 1000 AS INTEGER), search_text
    FROM pack_versions WHERE pack_id = NEW.pack_id
    ORDER BY prerelease, sort_key DESC, version DESC LIMIT 1
    ON CONFLICT (pack_id) DO UPDATE SET
        type = excluded.type, name = excluded.name, description = excluded.description,
        author = excluded.author, latest_version = excluded.latest_version,
        versions = excluded.versions, updated_at = excluded.updated_at,
        search_text = excluded.search_text;
END;
CREATE TRIGGER pack_versions_delete AFTER DELETE ON pack_versions BEGIN
    DELETE FROM packs WHERE pack_id = OLD.pack_id
        AND NOT EXISTS (SELECT 1 FROM pack_versions c WHERE c.pack_id = OLD.pack_id);
    INSERT INTO packs (pack_id, type, name, description, author, latest_version, versions,
                       updated_at, search_text)
    SELECT pack_id, type, name, description, author, version,
           (SELECT COUNT(*) FROM pack_versions c WHERE c.pack_id = OLD.pack_id),
           CAST(unixepoch('subsec') * 1000 AS INTEGER), search_text
    FROM pack_versions WHERE pack_id = OLD.pack_id
    ORDER BY prerelease, sort_key DESC, version DESC LIMIT 1
    ON CONFLICT (pack_id) DO UPDATE SET
        type = excluded.type, name = excluded.name, description = excluded.description,
        author = excluded.author, latest_version = excluded.latest_version,
        versions = excluded.versions, updated_at = excluded.updated_at,
        search_text = excluded.search_text;
END;
