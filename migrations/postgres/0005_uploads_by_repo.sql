-- PostgreSQL dialect, version 5. Keep in step with migrations/sqlite.

CREATE INDEX uploads_by_repo ON uploads (repo);
COMMENT ON INDEX uploads_by_repo IS
    'The count of a repository''s open upload sessions that a new session is checked '
    'against (uploads.max_sessions_per_repository).';
