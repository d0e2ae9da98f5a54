-- SQLite dialect, version 4. Keep in step with migrations/postgres.
--
-- A tag moved to another manifest drops the pack_versions row it named, by trigger,
-- as a deleted tag drops it by cascade (the manifest push used to delete it itself;
-- PostgreSQL's version 4 says why the trigger is the one place for it).

CREATE TRIGGER tags_moved AFTER UPDATE OF manifest_digest ON tags
WHEN OLD.manifest_digest IS NOT NEW.manifest_digest
BEGIN
    DELETE FROM pack_versions
    WHERE repository = NEW.repo AND tag = NEW.name AND manifest_digest <> NEW.manifest_digest;
END;
