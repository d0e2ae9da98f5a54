-- SQLite dialect, version 8. Keep in step with migrations/postgres, whose version 8
-- says what it is for: the reverse of dependencies and bundle members.

CREATE TABLE pack_edges (
    pack_id  TEXT NOT NULL,
    version  TEXT NOT NULL,
    target   TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('dependency', 'member')),
    PRIMARY KEY (pack_id, version, target, kind)
) WITHOUT ROWID;
CREATE INDEX pack_edges_by_target ON pack_edges (target, pack_id);

CREATE TRIGGER pack_edges_insert AFTER INSERT ON pack_versions BEGIN
    INSERT OR IGNORE INTO pack_edges (pack_id, version, target, kind)
    SELECT NEW.pack_id, NEW.version, json_extract(value, '$.packId'), 'dependency'
    FROM json_each(NEW.dependencies) WHERE json_extract(value, '$.packId') IS NOT NULL;
    INSERT OR IGNORE INTO pack_edges (pack_id, version, target, kind)
    SELECT NEW.pack_id, NEW.version, json_extract(value, '$.packId'), 'member'
    FROM json_each(NEW.members) WHERE json_extract(value, '$.packId') IS NOT NULL;
END;

CREATE TRIGGER pack_edges_update AFTER UPDATE ON pack_versions BEGIN
    DELETE FROM pack_edges WHERE pack_id = OLD.pack_id AND version = OLD.version;
    INSERT OR IGNORE INTO pack_edges (pack_id, version, target, kind)
    SELECT NEW.pack_id, NEW.version, json_extract(value, '$.packId'), 'dependency'
    FROM json_each(NEW.dependencies) WHERE json_extract(value, '$.packId') IS NOT NULL;
    INSERT OR IGNORE INTO pack_edges (pack_id, version, target, kind)
    SELECT NEW.pack_id, NEW.version, json_extract(value, '$.packId'), 'member'
    FROM json_each(NEW.members) WHERE json_extract(value, '$.packId') IS NOT NULL;
END;

CREATE TRIGGER pack_edges_delete AFTER DELETE ON pack_versions BEGIN
    DELETE FROM pack_edges WHERE pack_id = OLD.pack_id AND version = OLD.version;
END;

INSERT OR IGNORE INTO pack_edges (pack_id, version, target, kind)
SELECT v.pack_id, v.version, json_extract(d.value, '$.packId'), 'dependency'
FROM pack_versions v, json_each(v.dependencies) d
WHERE json_extract(d.value, '$.packId') IS NOT NULL;
INSERT OR IGNORE INTO pack_edges (pack_id, version, target, kind)
SELECT v.pack_id, v.version, json_extract(m.value, '$.packId'), 'member'
FROM pack_versions v, json_each(v.members) m
WHERE json_extract(m.value, '$.packId') IS NOT NULL;
