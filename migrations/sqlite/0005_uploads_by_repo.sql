-- SQLite dialect, version 5. Keep in step with migrations/postgres.
--
-- uploads_by_repo: the count of a repository's open upload sessions that a new
-- session is checked against (uploads.max_sessions_per_repository).

CREATE INDEX uploads_by_repo ON uploads (repo);
