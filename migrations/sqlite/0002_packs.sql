-- The packs index behind /packs, SQLite dialect. Keep in step with migrations/postgres.
--
-- pack_versions: one row per published pack version, that is per tag <version> in
-- repository <prefix><packId> whose manifest is a valid pack. A row goes with its tag
-- or its manifest (ON DELETE CASCADE), so deleting either through /v2 removes it in
-- the same transaction; a tag moved to another manifest drops the row too (see
-- put_manifest in sqlite.rs). sort_key is the version's semver precedence written so
-- that byte order is precedence order (registry/packs.rs, `sort_key`).
--
-- packs: one row per pack, derived from its latest version (highest precedence,
-- prereleases only when nothing else exists) by the triggers below, so it can never
-- disagree with pack_versions. Listing is a keyset scan on pack_id (or on
-- (type, pack_id), (author, pack_id)); `q` goes through packs_search, an FTS5 trigram
-- index over search_text (lower-cased "id name description", computed in Rust).

CREATE TABLE pack_versions (
    pack_id             TEXT NOT NULL,
    version             TEXT NOT NULL,
    sort_key            TEXT NOT NULL,
    prerelease          INTEGER NOT NULL,
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
CREATE UNIQUE INDEX pack_versions_by_precedence ON pack_versions (pack_id, sort_key, version);
CREATE UNIQUE INDEX pack_versions_by_tag ON pack_versions (repository, tag);
CREATE INDEX pack_versions_by_manifest ON pack_versions (repository, manifest_digest);

CREATE TABLE packs (
    -- An INTEGER PRIMARY KEY keeps rowids stable across VACUUM, as the external-content
    -- FTS table needs.
    id              INTEGER PRIMARY KEY,
    pack_id         TEXT NOT NULL UNIQUE,
    type            TEXT NOT NULL,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    author          TEXT NOT NULL,
    latest_version  TEXT NOT NULL,
    versions        INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    search_text     TEXT NOT NULL
);
CREATE INDEX packs_by_type ON packs (type, pack_id);
CREATE INDEX packs_by_author ON packs (author, pack_id);

CREATE VIRTUAL TABLE packs_search USING fts5(
    search_text, content = 'packs', content_rowid = 'id', tokenize = 'trigram'
);

CREATE TRIGGER packs_search_insert AFTER INSERT ON packs BEGIN
    INSERT INTO packs_search (rowid, search_text) VALUES (NEW.id, NEW.search_text);
END;
CREATE TRIGGER packs_search_delete AFTER DELETE ON packs BEGIN
    INSERT INTO packs_search (packs_search, rowid, search_text)
    VALUES ('delete', OLD.id, OLD.search_text);
END;
CREATE TRIGGER packs_search_update AFTER UPDATE OF search_text ON packs BEGIN
    INSERT INTO packs_search (packs_search, rowid, search_text)
    VALUES ('delete', OLD.id, OLD.search_text);
    INSERT INTO packs_search (rowid, search_text) VALUES (NEW.id, NEW.search_text);
END;

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
