//! Dependency resolution, requirement matching, listing and reading packs.

use std::collections::HashSet;
use std::ops::Range;

use super::{
    MAX_DEPENDENCY_NODES, MIN_QUERY_CHARS, PackDependency, ValidPack, parse_version, valid_pack_id,
};
use crate::metadata::{PackFilter, PackSummaryRecord, PackVersionRecord, Page};
use crate::registry::{BlobRead, Error, Registry, Result};

impl Registry {
    /// Every dependency and member resolves to a published version, and following them
    /// (each to its newest matching version, this one included) never comes back.
    pub(super) async fn check_dependencies(&self, pack: &ValidPack) -> Result<()> {
        let me = (pack.manifest.pack_id.clone(), pack.manifest.version.clone());
        let edges_of_me: Vec<PackDependency> = pack
            .manifest
            .dependencies
            .iter()
            .chain(&pack.manifest.members)
            .cloned()
            .collect();
        // Depth-first over (packId, version), with the path for cycle detection.
        let mut visited: HashSet<(String, String)> = HashSet::new();
        let mut stack: Vec<((String, String), Vec<PackDependency>, usize)> =
            vec![(me.clone(), edges_of_me, 0)];
        let mut on_path: Vec<(String, String)> = vec![me.clone()];
        while let Some((node, edges, next)) = stack.last_mut() {
            let Some(dep) = edges.get(*next).cloned() else {
                let node = node.clone();
                stack.pop();
                on_path.retain(|n| n != &node);
                visited.insert(node);
                continue;
            };
            *next += 1;
            let via = node.0.clone();
            let target = self.resolve_dependency(pack, &dep).await?.ok_or_else(|| {
                Error::PackInvalid(format!(
                    "{via} needs {} {}, and no published version matches",
                    dep.pack_id, dep.version
                ))
            })?;
            if on_path.contains(&target.0) {
                return Err(Error::PackInvalid(format!(
                    "dependency cycle: {} -> {}@{}",
                    on_path
                        .iter()
                        .map(|(p, v)| format!("{p}@{v}"))
                        .collect::<Vec<_>>()
                        .join(" -> "),
                    target.0.0,
                    target.0.1
                )));
            }
            if visited.contains(&target.0) {
                continue;
            }
            if visited.len() + stack.len() > MAX_DEPENDENCY_NODES {
                return Err(Error::PackInvalid(format!(
                    "more than {MAX_DEPENDENCY_NODES} packs in the dependency graph"
                )));
            }
            on_path.push(target.0.clone());
            stack.push((target.0, target.1, 0));
        }
        Ok(())
    }

    /// The newest version satisfying `dep` (the pack being published counting as
    /// published), with its own dependencies and members.
    #[allow(clippy::type_complexity)]
    async fn resolve_dependency(
        &self,
        publishing: &ValidPack,
        dep: &PackDependency,
    ) -> Result<Option<((String, String), Vec<PackDependency>)>> {
        let req = semver::VersionReq::parse(&dep.version)
            .map_err(|e| Error::PackInvalid(format!("{}: {e}", dep.version)))?;
        let mut best: Option<(semver::Version, (String, String), Vec<PackDependency>)> = None;
        if dep.pack_id == publishing.manifest.pack_id && req.matches(&publishing.version) {
            let edges = publishing
                .manifest
                .dependencies
                .iter()
                .chain(&publishing.manifest.members)
                .cloned()
                .collect();
            best = Some((
                publishing.version.clone(),
                (dep.pack_id.clone(), publishing.manifest.version.clone()),
                edges,
            ));
        }
        for v in self.meta.list_pack_versions(&dep.pack_id).await? {
            let Ok(parsed) = semver::Version::parse(&v.version) else {
                continue;
            };
            if !req.matches(&parsed) || best.as_ref().is_some_and(|(b, ..)| b >= &parsed) {
                continue;
            }
            let mut edges: Vec<PackDependency> =
                serde_json::from_str(&v.dependencies).unwrap_or_default();
            edges.extend(
                serde_json::from_str::<Vec<PackDependency>>(&v.members).unwrap_or_default(),
            );
            best = Some((parsed, (v.pack_id.clone(), v.version.clone()), edges));
        }
        Ok(best.map(|(_, node, edges)| (node, edges)))
    }

    // -----------------------------------------------------------------------------
    // Reading and deleting

    /// Packs matching `filter`, ordered by id, after the id `cursor`, at most `limit`
    /// (the configured default when `None`, capped at the configured maximum).
    pub async fn list_packs(
        &self,
        filter: &PackFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<PackSummaryRecord>> {
        // The cursor is the last id of the previous page: any text is a position. Ids
        // never hold a NUL (nor any character below '-'), so cutting the cursor at
        // one names the same position, in a form every database accepts.
        let cursor = cursor
            .map(|c| c.split('\0').next().unwrap_or_default())
            .filter(|c| !c.is_empty());
        // Nothing indexed can hold a NUL (PostgreSQL text refuses it, and so does the
        // facade when it stores a pack): a filter with one matches nothing.
        if [&filter.pack_type, &filter.author, &filter.q]
            .into_iter()
            .flatten()
            .any(|v| v.contains('\0'))
        {
            return Ok(Page {
                items: vec![],
                more: false,
            });
        }
        let n = limit
            .unwrap_or(self.packs.default_page)
            .clamp(1, self.packs.max_page);
        // Substring search is served by trigram indexes (SQLite FTS5, PostgreSQL
        // pg_trgm), which need three characters: shorter text could only be a scan.
        if let Some(q) = &filter.q
            && q.chars().count() < MIN_QUERY_CHARS
        {
            return Err(Error::PackMalformed(format!(
                "q {q:?} is too short: search text needs at least {MIN_QUERY_CHARS} characters"
            )));
        }
        let filter = PackFilter {
            q: filter.q.as_ref().map(|q| q.to_lowercase()),
            ..filter.clone()
        };
        Ok(self.meta.list_packs(&filter, cursor, n).await?)
    }

    /// A pack's summary and its latest version (the highest release, or the highest
    /// prerelease when there is no release).
    pub async fn get_pack(&self, pack_id: &str) -> Result<(PackSummaryRecord, PackVersionRecord)> {
        let unknown = || Error::PackUnknown(format!("pack {pack_id} is not known"));
        if !valid_pack_id(pack_id) {
            return Err(unknown());
        }
        let summary = self.meta.get_pack(pack_id).await?.ok_or_else(unknown)?;
        let latest = self
            .meta
            .get_pack_version(pack_id, &summary.latest_version)
            .await?
            .ok_or_else(unknown)?;
        Ok((summary, latest))
    }

    /// Every version of a pack, highest precedence first.
    pub async fn pack_versions(&self, pack_id: &str) -> Result<Vec<PackVersionRecord>> {
        let versions = if valid_pack_id(pack_id) {
            self.meta.list_pack_versions(pack_id).await?
        } else {
            vec![]
        };
        if versions.is_empty() {
            return Err(Error::PackUnknown(format!("pack {pack_id} is not known")));
        }
        Ok(versions)
    }

    /// The packs that depend on `pack_id` or hold it as a bundle member (any of their
    /// versions), by id, at most `n`.
    pub async fn pack_used_by(&self, pack_id: &str, n: u32) -> Result<Vec<String>> {
        if !valid_pack_id(pack_id) {
            return Ok(vec![]);
        }
        Ok(self.meta.pack_used_by(pack_id, n).await?)
    }

    /// The version `spec` names: an exact version (`_` may stand for `+`), or a semver
    /// requirement (`^2`, `~2.1`) resolved to the newest matching version. Text that is
    /// neither is [`Error::PackUnknown`], as is a spec nothing matches.
    pub async fn resolve_pack_version(
        &self,
        pack_id: &str,
        spec: &str,
    ) -> Result<PackVersionRecord> {
        let unknown = || Error::PackUnknown(format!("no version of {pack_id} matches {spec}"));
        if !valid_pack_id(pack_id) {
            return Err(unknown());
        }
        if let Some(exact) = parse_version(spec) {
            return self
                .meta
                .get_pack_version(pack_id, &exact.to_string())
                .await?
                .ok_or_else(unknown);
        }
        // Text that is neither names no version: not found, like any other.
        let req = semver::VersionReq::parse(spec).map_err(|e| {
            Error::PackUnknown(format!(
                "{spec:?} is neither a version of {pack_id} nor a semver requirement: {e}"
            ))
        })?;
        self.newest_matching(pack_id, &req)
            .await?
            .ok_or_else(unknown)
    }

    /// The newest version of `pack_id` that `req` matches, if any: how a dependency's
    /// requirement resolves (versions are read newest first, in `sort_key` order).
    pub(crate) async fn newest_matching(
        &self,
        pack_id: &str,
        req: &semver::VersionReq,
    ) -> Result<Option<PackVersionRecord>> {
        Ok(self
            .meta
            .list_pack_versions(pack_id)
            .await?
            .into_iter()
            .find(|v| semver::Version::parse(&v.version).is_ok_and(|p| req.matches(&p))))
    }

    /// Opens the content of the version `spec` names (see
    /// [`resolve_pack_version`](Self::resolve_pack_version)), whole or the range
    /// `resolve` picks from its size (`None`: unsatisfiable).
    pub async fn read_pack_content(
        &self,
        pack_id: &str,
        spec: &str,
        resolve: impl FnOnce(u64) -> Option<Option<Range<u64>>>,
    ) -> Result<(PackVersionRecord, BlobRead)> {
        let version = self.resolve_pack_version(pack_id, spec).await?;
        let read = self
            .read_blob(&version.repository, &version.content_digest, resolve)
            .await
            .map_err(|e| match e {
                Error::BlobUnknown => Error::Internal(format!(
                    "content of {pack_id} {spec} is indexed but missing"
                )),
                other => other,
            })?;
        Ok((version, read))
    }

    /// Deletes a version: its tag and its index row. Returns whether it existed.
    pub async fn delete_pack_version(&self, pack_id: &str, version: &str) -> Result<bool> {
        if !valid_pack_id(pack_id) {
            return Ok(false);
        }
        let Some(v) = parse_version(version) else {
            return Ok(false);
        };
        let Some(record) = self.meta.get_pack_version(pack_id, &v.to_string()).await? else {
            return Ok(false);
        };
        let deleted = self
            .meta
            .delete_pack_version(pack_id, &v.to_string())
            .await?;
        self.journal_untag(&record.repository, record.tag.as_str())
            .await?;
        Ok(deleted)
    }
}
