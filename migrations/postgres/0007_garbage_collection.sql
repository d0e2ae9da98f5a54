-- PostgreSQL dialect, version 7. Keep in step with migrations/sqlite.
--
-- What online garbage collection needs (src/registry/gc.rs):
--
-- * manifests.pushed_at: when the manifest was last pushed (a push of a digest already
--   stored moves it), the time its grace period counts from. repository_blobs.created_at
--   is now the time the blob was last linked (a re-upload or a mount moves it), for the
--   same reason.
-- * A manifest's references must be in its repository when they are recorded: a
--   trigger on manifest_references locks the blob's link, or the child manifest, with
--   FOR KEY SHARE, and refuses the row (SQLSTATE PKREF) when it is gone. The collector
--   locks what it deletes FOR UPDATE and then checks again, so of a manifest push and
--   a collection of something it refers to, one waits for the other: the push fails
--   cleanly (MANIFEST_BLOB_UNKNOWN) or the collector finds the reference and keeps it.
--   Not a foreign key, so that DELETE of a blob link stays what it was (an unlink).
-- * blob_deletions: a blob whose row the collector removed (or whose bytes it found
--   with no row), until its bytes are deleted (bytes_deleted false), and for a while
--   after (true). An upload that links the digest again deletes the entry in the
--   same transaction: a pending deletion is cancelled, and after a completed one the
--   uploader checks its bytes are there.
-- * storage_usage: blobs, bytes and manifests per repository ('' is the whole store,
--   each blob counted once), kept current by triggers that append changes to
--   storage_usage_changes (no row every push updates, so no lock they queue on),
--   folded into storage_usage when the figures are read.
-- * gc_runs: what each collection removed.

ALTER TABLE manifests ADD COLUMN pushed_at BIGINT;
UPDATE manifests SET pushed_at = created_at;
ALTER TABLE manifests ALTER COLUMN pushed_at SET NOT NULL;

CREATE FUNCTION manifest_reference_target() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'manifest' THEN
        PERFORM 1 FROM manifests WHERE repo = NEW.repo AND digest = NEW.child_digest
            FOR KEY SHARE;
    ELSE
        PERFORM 1 FROM repository_blobs WHERE repo = NEW.repo AND digest = NEW.child_digest
            FOR KEY SHARE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'manifest % in % refers to % (%), which is not in the repository',
            NEW.manifest, NEW.repo, NEW.child_digest, NEW.kind
            USING ERRCODE = 'PKREF';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER manifest_reference_target BEFORE INSERT ON manifest_references
    FOR EACH ROW EXECUTE FUNCTION manifest_reference_target();

CREATE TABLE blob_deletions (
    digest         TEXT PRIMARY KEY NOT NULL,
    bytes_deleted  BOOLEAN NOT NULL,
    at             BIGINT NOT NULL
);
CREATE INDEX blob_deletions_pending ON blob_deletions (at) WHERE NOT bytes_deleted;
COMMENT ON INDEX blob_deletions_pending IS
    'Garbage collection: the blobs whose bytes are still to be deleted.';

CREATE TABLE storage_usage (
    repo            TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    blobs           BIGINT NOT NULL,
    blob_bytes      BIGINT NOT NULL,
    manifests       BIGINT NOT NULL,
    manifest_bytes  BIGINT NOT NULL
);

CREATE TABLE storage_usage_changes (
    id              BIGSERIAL PRIMARY KEY,
    repo            TEXT NOT NULL,
    blobs           BIGINT NOT NULL,
    blob_bytes      BIGINT NOT NULL,
    manifests       BIGINT NOT NULL,
    manifest_bytes  BIGINT NOT NULL
);

INSERT INTO storage_usage (repo, blobs, blob_bytes, manifests, manifest_bytes)
SELECT '', (SELECT COUNT(*) FROM blobs), (SELECT COALESCE(SUM(size), 0) FROM blobs),
       (SELECT COUNT(*) FROM manifests), (SELECT COALESCE(SUM(size), 0) FROM manifests);
INSERT INTO storage_usage (repo, blobs, blob_bytes, manifests, manifest_bytes)
SELECT r.name,
       (SELECT COUNT(*) FROM repository_blobs rb WHERE rb.repo = r.name),
       (SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs rb
            JOIN blobs b ON b.digest = rb.digest WHERE rb.repo = r.name),
       (SELECT COUNT(*) FROM manifests m WHERE m.repo = r.name),
       (SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repo = r.name)
FROM repositories r;

CREATE FUNCTION storage_usage_blobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
        VALUES ('', 1, NEW.size, 0, 0);
    ELSE
        INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
        VALUES ('', -1, -OLD.size, 0, 0);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER storage_usage_blobs AFTER INSERT OR DELETE ON blobs
    FOR EACH ROW EXECUTE FUNCTION storage_usage_blobs();

CREATE FUNCTION storage_usage_links() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
        SELECT NEW.repo, 1, size, 0, 0 FROM blobs WHERE digest = NEW.digest;
    ELSE
        INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
        SELECT OLD.repo, -1, -size, 0, 0 FROM blobs WHERE digest = OLD.digest;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER storage_usage_links AFTER INSERT OR DELETE ON repository_blobs
    FOR EACH ROW EXECUTE FUNCTION storage_usage_links();

CREATE FUNCTION storage_usage_manifests() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
        VALUES (NEW.repo, 0, 0, 1, NEW.size), ('', 0, 0, 1, NEW.size);
    ELSE
        INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
        VALUES (OLD.repo, 0, 0, -1, -OLD.size), ('', 0, 0, -1, -OLD.size);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER storage_usage_manifests AFTER INSERT OR DELETE ON manifests
    FOR EACH ROW EXECUTE FUNCTION storage_usage_manifests();

-- One row per completed collection (dry runs not counted), whichever process ran it:
-- the garbage collection figures every replica's /metrics shows.
CREATE TABLE gc_runs (
    id               BIGSERIAL PRIMARY KEY,
    finished_at      BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    tags             BIGINT NOT NULL,
    manifests        BIGINT NOT NULL,
    links            BIGINT NOT NULL,
    blobs            BIGINT NOT NULL,
    stray            BIGINT NOT NULL,
    reclaimed_bytes  BIGINT NOT NULL,
    manifest_bytes   BIGINT NOT NULL
);
