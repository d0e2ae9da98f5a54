-- PostgreSQL dialect, version 4. Keep in step with migrations/sqlite.
--
-- A tag moved to another manifest drops the pack_versions row it named, by trigger,
-- as a deleted tag drops it by cascade. The manifest push used to delete that row in
-- its own statement, whose snapshot is taken when it starts: a row a concurrent pack
-- push of the same version committed while this push waited for the tag's row lock
-- was not seen, and stayed, naming a manifest the tag no longer pointed at. The
-- trigger runs after the tag's row is updated (its lock held, the other push
-- committed), and its DELETE, a statement of its own, sees that row.
--
-- Lock order, the same on every path to the packs trigger: the tag's row, then the
-- pack_versions rows, then (packs_refresh) the pack's advisory lock.

CREATE FUNCTION tags_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pack_versions
    WHERE repository = NEW.repo AND tag = NEW.name AND manifest_digest <> NEW.manifest_digest;
    RETURN NULL;
END $$;

CREATE TRIGGER tags_moved AFTER UPDATE OF manifest_digest ON tags
    FOR EACH ROW WHEN (OLD.manifest_digest IS DISTINCT FROM NEW.manifest_digest)
    EXECUTE FUNCTION tags_moved();
