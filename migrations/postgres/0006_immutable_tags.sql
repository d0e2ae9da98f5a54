-- PostgreSQL dialect, version 6. Keep in step with migrations/sqlite.
--
-- Immutable tags: a tag written with `immutable` set (a pack version's tag, in a
-- repository `tags.immutable` covers) never moves to another manifest. The trigger
-- refuses the move inside the statement that tries it, so two pushes racing to
-- create the same tag with different manifests cannot both succeed: the second one's
-- upsert, having waited for the first one's row, updates it, and fails here.
-- Deleting the tag is still possible (with the delete grant), and so is pushing the
-- same manifest again.

ALTER TABLE tags ADD COLUMN immutable boolean NOT NULL DEFAULT false;

CREATE FUNCTION tags_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'immutable tag: %', NEW.name USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER tags_immutable BEFORE UPDATE OF manifest_digest ON tags
    FOR EACH ROW
    WHEN (NEW.manifest_digest <> OLD.manifest_digest AND (OLD.immutable OR NEW.immutable))
    EXECUTE FUNCTION tags_immutable();
