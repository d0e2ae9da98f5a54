-- PacksRegistry metadata, PostgreSQL dialect. Keep in step with migrations/sqlite.
-- Names compare with the "C" collation: byte order, as tag and catalog
-- listings require.

CREATE TABLE repositories (
    name        TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE repository_blobs (
    repo        TEXT NOT NULL REFERENCES repositories(name),
    digest      TEXT NOT NULL REFERENCES blobs(digest),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    repo            TEXT NOT NULL REFERENCES repositories(name),
    digest          TEXT COLLATE "C" NOT NULL,
    media_type      TEXT NOT NULL,
    artifact_type   TEXT,
    subject_digest  TEXT,
    annotations     TEXT,
    size            BIGINT NOT NULL,
    body            BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX manifests_by_subject ON manifests (repo, subject_digest, digest)
    WHERE subject_digest IS NOT NULL;

CREATE TABLE manifest_references (
    repo          TEXT NOT NULL,
    manifest      TEXT NOT NULL,
    child_digest  TEXT NOT NULL,
    kind          TEXT NOT NULL,
    PRIMARY KEY (repo, manifest, child_digest, kind),
    FOREIGN KEY (repo, manifest) REFERENCES manifests (repo, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_by_child ON manifest_references (repo, child_digest);

CREATE TABLE tags (
    repo             TEXT NOT NULL,
    name             TEXT COLLATE "C" NOT NULL,
    manifest_digest  TEXT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (repo, name),
    FOREIGN KEY (repo, manifest_digest) REFERENCES manifests (repo, digest) ON DELETE CASCADE
);
CREATE INDEX tags_by_manifest ON tags (repo, manifest_digest);

CREATE TABLE uploads (
    id          TEXT PRIMARY KEY NOT NULL,
    repo        TEXT NOT NULL,
    "offset"    BIGINT NOT NULL,
    hash_state  BYTEA NOT NULL,
    parts       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX uploads_by_updated ON uploads (updated_at);
