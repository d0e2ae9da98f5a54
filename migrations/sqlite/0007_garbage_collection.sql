-- SQLite dialect, version 7. Keep in step with migrations/postgres, whose version 7
-- says what each part is for. Here the database's single writer orders a manifest
-- push and the collector's deletes, so the reference check is a plain trigger (its
-- RAISE is SQLITE_CONSTRAINT_TRIGGER), and nothing needs locking.

ALTER TABLE manifests ADD COLUMN pushed_at INTEGER NOT NULL DEFAULT 0;
UPDATE manifests SET pushed_at = created_at;

CREATE TRIGGER manifest_reference_target BEFORE INSERT ON manifest_references
WHEN (NEW.kind = 'manifest' AND NOT EXISTS
        (SELECT 1 FROM manifests WHERE repo = NEW.repo AND digest = NEW.child_digest))
  OR (NEW.kind <> 'manifest' AND NOT EXISTS
        (SELECT 1 FROM repository_blobs WHERE repo = NEW.repo AND digest = NEW.child_digest))
BEGIN
    SELECT RAISE(ABORT, 'a manifest refers to something not in its repository');
END;

CREATE TABLE blob_deletions (
    digest         TEXT PRIMARY KEY NOT NULL,
    bytes_deleted  BOOLEAN NOT NULL CHECK (bytes_deleted IN (0, 1)),
    at             INTEGER NOT NULL
);
CREATE INDEX blob_deletions_pending ON blob_deletions (at) WHERE NOT bytes_deleted;

CREATE TABLE storage_usage (
    repo            TEXT PRIMARY KEY NOT NULL,
    blobs           INTEGER NOT NULL,
    blob_bytes      INTEGER NOT NULL,
    manifests       INTEGER NOT NULL,
    manifest_bytes  INTEGER NOT NULL
);

CREATE TABLE storage_usage_changes (
    id              INTEGER PRIMARY KEY,
    repo            TEXT NOT NULL,
    blobs           INTEGER NOT NULL,
    blob_bytes      INTEGER NOT NULL,
    manifests       INTEGER NOT NULL,
    manifest_bytes  INTEGER NOT NULL
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

CREATE TRIGGER storage_usage_blob_insert AFTER INSERT ON blobs BEGIN
    INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
    VALUES ('', 1, NEW.size, 0, 0);
END;
CREATE TRIGGER storage_usage_blob_delete AFTER DELETE ON blobs BEGIN
    INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
    VALUES ('', -1, -OLD.size, 0, 0);
END;
CREATE TRIGGER storage_usage_link_insert AFTER INSERT ON repository_blobs BEGIN
    INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
    SELECT NEW.repo, 1, size, 0, 0 FROM blobs WHERE digest = NEW.digest;
END;
CREATE TRIGGER storage_usage_link_delete AFTER DELETE ON repository_blobs BEGIN
    INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
    SELECT OLD.repo, -1, -size, 0, 0 FROM blobs WHERE digest = OLD.digest;
END;
CREATE TRIGGER storage_usage_manifest_insert AFTER INSERT ON manifests BEGIN
    INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
    VALUES (NEW.repo, 0, 0, 1, NEW.size), ('', 0, 0, 1, NEW.size);
END;
CREATE TRIGGER storage_usage_manifest_delete AFTER DELETE ON manifests BEGIN
    INSERT INTO storage_usage_changes (repo, blobs, blob_bytes, manifests, manifest_bytes)
    VALUES (OLD.repo, 0, 0, -1, -OLD.size), ('', 0, 0, -1, -OLD.size);
END;

-- One row per completed collection (dry runs not counted), whichever process ran it:
-- the garbage collection figures every replica's /metrics shows.
CREATE TABLE gc_runs (
    id               INTEGER PRIMARY KEY,
    finished_at      INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    tags             INTEGER NOT NULL,
    manifests        INTEGER NOT NULL,
    links            INTEGER NOT NULL,
    blobs            INTEGER NOT NULL,
    stray            INTEGER NOT NULL,
    reclaimed_bytes  INTEGER NOT NULL,
    manifest_bytes   INTEGER NOT NULL
);
