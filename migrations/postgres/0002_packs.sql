-- The packs index behind /packs, PostgreSQL dialect. Keep in step with migrations/sqlite
-- (which explains the tables). Differences: `q` uses a pg_trgm GIN index on
-- packs.search_text when the extension can be created (else it scans), and the packs
-- row is refreshed by a plpgsql trigger under a per-pack advisory lock (hashed into
-- 1024 buckets), so concurrent writes to one pack cannot leave a stale latest version.

CREATE TABLE pack_versions (
    pack_id             TEXT COLLATE "C" NOT NULL,
    version             TEXT COLLATE "C" NOT NULL,
    sort_key            TEXT COLLATE "C" NOT NULL,
    prerelease          BOOLEAN NOT NULL,
    type                TEXT NOT NULL,
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    author              TEXT NOT NULL,
    search_text         TEXT NOT NULL,
    repository          TEXT NOT NULL,
    tag                 TEXT COLLATE "C" NOT NULL,
    manifest_digest     TEXT NOT NULL,
    content_digest      TEXT NOT NULL,
    content_media_type  TEXT NOT NULL,
    size                BIGINT NOT NULL,
    published_at        BIGINT NOT NULL,
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
    pack_id         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    type            TEXT NOT NULL,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    author          TEXT COLLATE "C" NOT NULL,
    latest_version  TEXT NOT NULL,
    versions        BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    search_text     TEXT NOT NULL
);
CREATE INDEX packs_by_type ON packs (type, pack_id);
CREATE INDEX packs_by_author ON packs (author, pack_id);

-- pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may create it.
-- Where it cannot be created, `q` still works, by a scan.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm unavailable (%): /packs?q= will scan', SQLERRM;
END $$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        EXECUTE 'CREATE INDEX packs_search_trgm ON packs USING gin (search_text gin_trgm_ops)';
    END IF;
END $$;

CREATE FUNCTION packs_refresh(p TEXT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- One of 1024 locks per pack id (class 7243 = packs), so that a transaction
    -- touching many packs (a bulk import) holds a bounded number of locks.
    PERFORM pg_advisory_xact_lock(7243, mod(hashtext(p), 1024));
    IF NOT EXISTS (SELECT 1 FROM pack_versions WHERE pack_id = p) THEN
        DELETE FROM packs WHERE pack_id = p;
        RETURN;
    END IF;
    INSERT INTO packs (pack_id, type, name, description, author, latest_version, versions,
                       updated_at, search_text)
    SELECT v.pack_id, v.type, v.name, v.description, v.author, v.version,
           (SELECT COUNT(*) FROM pack_versions c WHERE c.pack_id = p),
           (extract(epoch FROM clock_timestamp()) * 1000)::bigint, v.search_text
    FROM pack_versions v WHERE v.pack_id = p
    ORDER BY v.prerelease, v.sort_key DESC, v.version DESC LIMIT 1
    ON CONFLICT (pack_id) DO UPDATE SET
        type = excluded.type, name = excluded.name, description = excluded.description,
        author = excluded.author, latest_version = excluded.latest_version,
        versions = excluded.versions, updated_at = excluded.updated_at,
        search_text = excluded.search_text;
END $$;

CREATE FUNCTION pack_versions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM packs_refresh(OLD.pack_id);
        RETURN OLD;
    END IF;
    PERFORM packs_refresh(NEW.pack_id);
    RETURN NEW;
END $$;

CREATE TRIGGER pack_versions_changed AFTER INSERT OR UPDATE OR DELETE ON pack_versions
    FOR EACH ROW EXECUTE FUNCTION pack_versions_changed();
