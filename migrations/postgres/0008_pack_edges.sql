-- PostgreSQL dialect, version 8: the reverse of dependencies and bundle members, so
-- "which packs use X" is an index lookup (the web UI's "used by"), not a scan of
-- every version's JSON. One row per (version, target, kind); kept in step with
-- pack_versions by a trigger, whatever writes it (publish, import, reindex, delete).

CREATE TABLE pack_edges (
    pack_id  TEXT NOT NULL,
    version  TEXT NOT NULL,
    target   TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('dependency', 'member')),
    PRIMARY KEY (pack_id, version, target, kind)
);
CREATE INDEX pack_edges_by_target ON pack_edges (target, pack_id);

CREATE FUNCTION pack_edges_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM pack_edges WHERE pack_id = OLD.pack_id AND version = OLD.version;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO pack_edges (pack_id, version, target, kind)
        SELECT NEW.pack_id, NEW.version, e.value->>'packId', e.kind
        FROM (SELECT value, 'dependency' AS kind
                FROM jsonb_array_elements(NEW.dependencies::jsonb)
              UNION ALL
              SELECT value, 'member' FROM jsonb_array_elements(NEW.members::jsonb)) e
        WHERE e.value->>'packId' IS NOT NULL
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER pack_edges_sync AFTER INSERT OR UPDATE OR DELETE ON pack_versions
    FOR EACH ROW EXECUTE FUNCTION pack_edges_sync();

INSERT INTO pack_edges (pack_id, version, target, kind)
SELECT v.pack_id, v.version, e.value->>'packId', e.kind
FROM pack_versions v,
     LATERAL (SELECT value, 'dependency' AS kind
                FROM jsonb_array_elements(v.dependencies::jsonb)
              UNION ALL
              SELECT value, 'member' FROM jsonb_array_elements(v.members::jsonb)) e
WHERE e.value->>'packId' IS NOT NULL
ON CONFLICT DO NOTHING;
