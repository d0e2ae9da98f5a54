-- SQLite dialect, version 6. Keep in step with migrations/postgres.
--
-- Immutable tags: a tag written with `immutable` set (a pack version's tag, in a
-- repository `tags.immutable` covers) never moves to another manifest. The trigger
-- refuses the move inside the statement that tries it, so two pushes racing to
-- create the same tag with different manifests cannot both succeed: the second one's
-- upsert updates the first one's row, and fails here. Deleting the tag is still
-- possible (with the delete grant), and so is pushing the same manifest again.

ALTER TABLE tags ADD COLUMN immutable BOOLEAN NOT NULL DEFAULT 0 CHECK (immutable IN (0, 1));

CREATE TRIGGER tags_immutable BEFORE UPDATE OF manifest_digest ON tags
WHEN NEW.manifest_digest <> OLD.manifest_digest AND (OLD.immutable OR NEW.immutable)
BEGIN
    SELECT RAISE(ABORT, 'immutable tag');
END;
