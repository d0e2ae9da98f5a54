-- PostgreSQL dialect, version 3. Keep in step with migrations/sqlite (whose version 3
-- makes pack_versions.prerelease the BOOLEAN it already is here).
--
-- Names the readers of every secondary index of the schema, where psql's `\di+`
-- shows them (0001 and 0002 could not say: an applied migration cannot change).

COMMENT ON INDEX repository_blobs_by_digest IS
    'The foreign key check when a blobs row is deleted, and garbage collection''s '
    '"is this blob linked into any repository".';
COMMENT ON INDEX manifests_by_subject IS 'The referrers listing (list_referrers).';
COMMENT ON INDEX manifest_references_by_child IS
    'Garbage collection and delete protection: "does any manifest of this repository '
    'still refer to this blob or manifest".';
COMMENT ON INDEX tags_by_manifest IS 'ON DELETE CASCADE from manifests to their tags.';
COMMENT ON INDEX uploads_by_updated IS 'The expiry sweep (stale_uploads).';
COMMENT ON INDEX pack_versions_by_precedence IS
    'list_pack_versions and packs_refresh''s latest version.';
COMMENT ON INDEX pack_versions_by_tag IS
    'ON DELETE CASCADE from tags, and the manifest push dropping the row of a tag it moves.';
COMMENT ON INDEX pack_versions_by_manifest IS 'ON DELETE CASCADE from manifests.';
COMMENT ON INDEX packs_by_type IS 'list_packs filtered by type.';
COMMENT ON INDEX packs_by_author IS 'list_packs filtered by author.';
DO $$
BEGIN
    -- Made by 0002 only where pg_trgm could be created.
    IF to_regclass('packs_search_trgm') IS NOT NULL THEN
        EXECUTE 'COMMENT ON INDEX packs_search_trgm IS ''list_packs with q (search_text LIKE).''';
    END IF;
END $$;
