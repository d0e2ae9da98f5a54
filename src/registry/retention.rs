//! Retention: rules that let old pack versions go, applied by the garbage collector
//! before it collects. A version let go loses its tag (and so its index row); its
//! manifest and blobs are then collected like any other untagged ones.
//!
//! A rule covers the packs of one type, or under one repository prefix, or both (a
//! rule with neither covers every pack); the first rule that covers a pack applies
//! to all its versions. Within a pack, versions are ordered by semver precedence,
//! newest first. A version goes when the rule lets it go and nothing keeps it:
//!
//! - it is let go when it is past the `keep_newest` newest and older than
//!   `keep_days` (each of the two, when given, keeps; a rule with neither lets no
//!   version go by age), or when it is a prerelease older than
//!   `drop_prereleases_after_days`;
//! - it is kept when its version matches a `protect` pattern (a glob: `1.*`,
//!   `*-lts`), or when a version that stays depends on it or has it as a bundle
//!   member: the version a dependency resolves to (the newest matching one) stays,
//!   and so on through its own dependencies.

use std::collections::{HashMap, HashSet};

use globset::{Glob, GlobMatcher};

use super::packs::PackDependency;
use super::{Registry, Result};
use crate::metadata::{PackFilter, PackVersionRecord, now_millis};

/// One retention rule (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct RetentionRule {
    /// Covers packs of this type only (`policy`, `analyzer`, `task`, `bundle`).
    pub pack_type: Option<String>,
    /// Covers packs whose repository starts with this only.
    pub repository_prefix: Option<String>,
    /// Keeps the newest this many versions.
    pub keep_newest: Option<u32>,
    /// Keeps versions published less than this many days ago.
    pub keep_days: Option<u32>,
    /// Versions matching any of these globs are never let go.
    pub protect: Vec<GlobMatcher>,
    /// Lets prereleases published more than this many days ago go, whatever keeps
    /// them by age or rank.
    pub drop_prereleases_after_days: Option<u32>,
}

impl RetentionRule {
    /// Compiles `patterns` as the rule's `protect` globs.
    pub fn protecting(mut self, patterns: &[String]) -> std::result::Result<Self, String> {
        self.protect = patterns
            .iter()
            .map(|p| {
                Glob::new(p)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| format!("retention pattern {p:?}: {e}"))
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(self)
    }

    fn covers(&self, version: &PackVersionRecord) -> bool {
        self.pack_type
            .as_deref()
            .is_none_or(|t| t == version.pack_type)
            && self
                .repository_prefix
                .as_deref()
                .is_none_or(|p| version.repository.as_str().starts_with(p))
    }

    /// Whether the rule lets `version` go, the `rank`-th newest of its pack (from 0),
    /// at `now` (ms since the epoch), before what keeps versions is considered.
    fn lets_go(&self, version: &PackVersionRecord, rank: usize, now: i64) -> bool {
        let days = |d: u32| i64::from(d) * 86_400_000;
        let ages = self.keep_newest.is_some() || self.keep_days.is_some();
        let ranked = self.keep_newest.is_some_and(|n| rank < n as usize);
        let recent = self
            .keep_days
            .is_some_and(|d| version.published_at > now - days(d));
        let stale_prerelease = version.prerelease
            && self
                .drop_prereleases_after_days
                .is_some_and(|d| version.published_at < now - days(d));
        (ages && !ranked && !recent) || stale_prerelease
    }

    fn protects(&self, version: &str) -> bool {
        self.protect.iter().any(|g| g.is_match(version))
    }
}

/// The dependencies and members of a version.
fn edges(v: &PackVersionRecord) -> Vec<PackDependency> {
    let mut edges: Vec<PackDependency> = serde_json::from_str(&v.dependencies).unwrap_or_default();
    edges.extend(serde_json::from_str::<Vec<PackDependency>>(&v.members).unwrap_or_default());
    edges
}

impl Registry {
    /// Applies `rules` to the packs index: the tags of the versions they let go are
    /// deleted (nothing, with `dry_run`). Returns them, as `(repository, tag)`.
    pub(super) async fn apply_retention(
        &self,
        rules: &[RetentionRule],
        dry_run: bool,
    ) -> Result<Vec<(String, String)>> {
        let now = now_millis();
        // Every pack's versions, newest first.
        let mut packs: HashMap<String, Vec<PackVersionRecord>> = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .meta
                .list_packs(&PackFilter::default(), after.as_deref(), 1000)
                .await?;
            for summary in &page.items {
                let versions = self.meta.list_pack_versions(&summary.pack_id).await?;
                packs.insert(summary.pack_id.clone(), versions);
            }
            after = page.items.last().map(|p| p.pack_id.clone());
            if !page.more {
                break;
            }
        }
        // What the rules let go.
        let mut doomed: HashSet<(String, String)> = HashSet::new();
        for (pack_id, versions) in &packs {
            let Some(rule) = versions
                .first()
                .and_then(|v| rules.iter().find(|r| r.covers(v)))
            else {
                continue;
            };
            for (rank, v) in versions.iter().enumerate() {
                if rule.lets_go(v, rank, now) && !rule.protects(&v.version) {
                    doomed.insert((pack_id.clone(), v.version.clone()));
                }
            }
        }
        // What stays keeps what it needs: the version each dependency resolves to.
        let mut todo: Vec<(String, String)> = packs
            .iter()
            .flat_map(|(id, vs)| vs.iter().map(move |v| (id.clone(), v.version.clone())))
            .filter(|key| !doomed.contains(key))
            .collect();
        let mut seen: HashSet<(String, String)> = todo.iter().cloned().collect();
        while let Some((pack_id, version)) = todo.pop() {
            let Some(record) = packs
                .get(&pack_id)
                .and_then(|vs| vs.iter().find(|v| v.version == version))
            else {
                continue;
            };
            for dep in edges(record) {
                let Ok(req) = semver::VersionReq::parse(&dep.version) else {
                    continue;
                };
                let resolved = packs.get(&dep.pack_id).and_then(|vs| {
                    vs.iter().find(|v| {
                        semver::Version::parse(&v.version).is_ok_and(|parsed| req.matches(&parsed))
                    })
                });
                if let Some(target) = resolved {
                    let key = (dep.pack_id.clone(), target.version.clone());
                    doomed.remove(&key);
                    if seen.insert(key.clone()) {
                        todo.push(key);
                    }
                }
            }
        }
        let mut removed = Vec::new();
        let mut doomed: Vec<(String, String)> = doomed.into_iter().collect();
        doomed.sort_unstable();
        for (pack_id, version) in doomed {
            let Some(record) = packs
                .get(&pack_id)
                .and_then(|vs| vs.iter().find(|v| v.version == version))
            else {
                continue;
            };
            if dry_run || self.meta.delete_pack_version(&pack_id, &version).await? {
                if !dry_run {
                    self.journal_untag(&record.repository, record.tag.as_str())
                        .await?;
                }
                removed.push((
                    record.repository.as_str().to_owned(),
                    record.tag.as_str().to_owned(),
                ));
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{Algorithm, Digest};
    use crate::names::{RepoName, Tag};

    fn version(v: &str, published_days_ago: i64, now: i64) -> PackVersionRecord {
        let d = Digest::of(Algorithm::Sha256, v.as_bytes());
        PackVersionRecord {
            pack_id: "p".into(),
            version: v.into(),
            sort_key: String::new(),
            prerelease: v.contains('-'),
            pack_type: "policy".into(),
            name: "p".into(),
            description: String::new(),
            author: String::new(),
            search_text: "p".into(),
            repository: RepoName::parse("packs/p").unwrap(),
            tag: Tag::parse(v).unwrap(),
            manifest_digest: d.clone(),
            content_digest: d,
            content_media_type: "x/y".into(),
            size: 1,
            published_at: now - published_days_ago * 86_400_000,
            dependencies: "[]".into(),
            members: "[]".into(),
            metadata: "{}".into(),
        }
    }

    /// Rank and age each keep; prereleases past their age go whatever keeps them;
    /// protected versions never go; a rule selecting by nothing lets nothing go.
    #[test]
    fn rules_let_versions_go_by_rank_age_and_prerelease() {
        let now = 1_000 * 86_400_000;
        let rule = RetentionRule {
            keep_newest: Some(2),
            keep_days: Some(30),
            drop_prereleases_after_days: Some(7),
            ..Default::default()
        }
        .protecting(&["1.*".into()])
        .unwrap();
        let newest_pre = version("3.0.0-rc.1", 10, now);
        assert!(rule.lets_go(&newest_pre, 0, now), "an old prerelease goes");
        let second = version("2.1.0", 100, now);
        assert!(!rule.lets_go(&second, 1, now), "among the newest two");
        let recent = version("2.0.0", 5, now);
        assert!(!rule.lets_go(&recent, 2, now), "recent");
        let old = version("1.9.0", 100, now);
        assert!(rule.lets_go(&old, 3, now));
        assert!(rule.protects(&old.version));
        assert!(!rule.protects("2.0.0"));
        let fresh_pre = version("4.0.0-beta", 1, now);
        assert!(!rule.lets_go(&fresh_pre, 0, now));

        let nothing = RetentionRule::default();
        assert!(!nothing.lets_go(&old, 10, now));
    }
}
