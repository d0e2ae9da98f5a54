//! Online garbage collection: what no tag keeps any more goes, after a grace period,
//! while pushes go on.
//!
//! A run, repository by repository:
//!
//! 1. **Retention** (`retention.rs`): pack versions the rules let go lose their tags.
//! 2. **Mark**: the manifests kept are those reachable from the roots (tagged ones,
//!    ones pushed within the grace period, and with `keep_orphaned_referrers` the
//!    referrers whose subject is absent) through index children and referrers of
//!    kept subjects; the blob links kept are those a kept manifest refers to, or
//!    made within the grace period.
//! 3. **Sweep rows**: the other manifests, then the other links, are deleted by
//!    statements that re-check, as they delete, that the row is still unreachable
//!    ([`CollectIndex`]): a manifest push or a tag racing with the run either lands
//!    first and keeps its targets, or finds them gone and fails cleanly
//!    (`MANIFEST_BLOB_UNKNOWN`). Then blob rows no repository links are deleted, each
//!    recorded as a pending byte deletion in the same transaction.
//! 4. **Bytes**: pending deletions are carried out ([`CollectIndex::delete_bytes`]),
//!    each under the lock that orders it against an upload of the same digest (which
//!    cancels a pending deletion, or checks its bytes after a completed one). Rows go
//!    first, bytes second: a crash in between leaves deletions pending, which the next
//!    run completes.
//! 5. **Stray bytes**: with `sweep_storage`, the blob store is listed, and bytes older
//!    than the grace period with no row (an upload that died between its bytes and its
//!    row, a refused publish) are recorded and deleted the same way.
//!
//! One collector runs at a time across replicas ([`CollectIndex::collector_lock`]);
//! every step is idempotent, so a second one (a `gc` run beside a `serve` on SQLite)
//! only repeats work. A dry run reads and plans the same way and deletes nothing.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::retention::RetentionRule;
use super::{Registry, Result};
use crate::digest::Digest;
use crate::metadata::{
    BlobBytes, BoxError, GcRunRecord, GcTotals, RepositoryGraph, StorageUsage, now_millis,
};
use crate::names::RepoName;
use crate::storage::BlobStore;

/// The blob store as the metadata layer asks it (see [`BlobBytes`]).
pub struct StoreBytes<'a>(pub(crate) &'a dyn BlobStore);

#[async_trait]
impl BlobBytes for StoreBytes<'_> {
    async fn present(&self, digest: &Digest) -> Result<bool, BoxError> {
        Ok(self.0.stat(digest).await?.is_some())
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BoxError> {
        Ok(self.0.delete(digest).await?)
    }
}

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Manifests pushed and blobs linked less than this long ago are kept, as are
    /// stray bytes written less than this long ago: what a push in flight has stored
    /// but not yet referred to.
    pub grace: Duration,
    /// Plan and report, delete nothing.
    pub dry_run: bool,
    /// Keep referrers (signatures, attestations) whose subject is absent.
    pub keep_orphaned_referrers: bool,
    /// List the blob store for bytes no row refers to.
    pub sweep_storage: bool,
    /// Retention rules, applied before collecting (see `retention.rs`).
    pub retention: Vec<RetentionRule>,
    /// Repositories listed in the storage figures of the report.
    pub usage_top: u32,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            dry_run: false,
            keep_orphaned_referrers: false,
            sweep_storage: true,
            retention: Vec::new(),
            usage_top: 100,
        }
    }
}

/// One thing a collection removed (or, dry, would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// A pack version's tag, by a retention rule.
    Tag {
        /// The repository.
        repo: String,
        /// The tag.
        tag: String,
    },
    /// A manifest no tag reaches.
    Manifest {
        /// The repository.
        repo: String,
        /// The manifest.
        digest: Digest,
        /// Its length.
        size: u64,
    },
    /// A blob's link into a repository no manifest of which refers to it.
    Link {
        /// The repository.
        repo: String,
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// A blob no repository links (its row; its bytes follow).
    Blob {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// Bytes in the store that no row refers to.
    StrayBytes {
        /// Their digest.
        digest: Digest,
        /// Their size.
        size: u64,
    },
}

/// What a collection did.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Whether nothing was deleted (a dry run).
    pub dry_run: bool,
    /// Everything removed, in the order it was.
    pub removed: Vec<Removed>,
    /// Bytes deleted from the blob store (rows' bytes and stray bytes); in a dry
    /// run, what would be.
    pub reclaimed_bytes: u64,
    /// Manifest bytes deleted from the database.
    pub manifest_bytes: u64,
    /// Byte deletions carried out (including ones a crashed run left pending).
    pub byte_deletions: u64,
    /// Repositories visited.
    pub repositories: u64,
    /// Storage figures after the run (before it, in a dry run).
    pub usage: StorageUsage,
}

impl GcReport {
    /// How many removals of each kind: tags, manifests, links, blobs, stray bytes.
    pub fn counts(&self) -> GcCounts {
        let mut c = GcCounts::default();
        for r in &self.removed {
            match r {
                Removed::Tag { .. } => c.tags += 1,
                Removed::Manifest { .. } => c.manifests += 1,
                Removed::Link { .. } => c.links += 1,
                Removed::Blob { .. } => c.blobs += 1,
                Removed::StrayBytes { .. } => c.stray += 1,
            }
        }
        c
    }
}

/// Removals by kind (see [`GcReport::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcCounts {
    /// Tags removed by retention.
    pub tags: u64,
    /// Manifests.
    pub manifests: u64,
    /// Blob links.
    pub links: u64,
    /// Blob rows (with their bytes).
    pub blobs: u64,
    /// Stray bytes.
    pub stray: u64,
}

/// The steps of a run, as an observer sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcPhase {
    /// Retention rules over the packs index.
    Retention,
    /// Manifests and links, repository by repository (`total`: an estimate of the
    /// repositories).
    Repositories,
    /// Blob rows no repository links.
    Blobs,
    /// Deleting the bytes of blobs whose rows are gone: rows are committed, bytes not
    /// yet touched.
    Bytes,
    /// Listing the blob store for stray bytes.
    Storage,
}

/// Watches a run: progress, and what it removes.
pub trait GcObserver: Send + Sync {
    /// A phase begins, with how many steps it expects (0: unknown).
    fn phase(&self, _phase: GcPhase, _total: u64) {}
    /// One step of the current phase is done.
    fn step(&self) {}
    /// Something was removed (or would be, in a dry run).
    fn removed(&self, _item: &Removed) {}
}

/// An observer that watches nothing.
pub struct Unobserved;

impl GcObserver for Unobserved {}

/// Repositories read per page while collecting.
const REPOSITORY_PAGE: u32 = 100;
/// Blob rows and stray bytes looked at per batch.
const BLOB_PAGE: u32 = 1000;
/// How long completed byte deletions are remembered: an upload whose bytes were
/// stored longer ago than this before its row is linked would not learn that they
/// were deleted meanwhile. Uploads link right after storing.
const DELETIONS_REMEMBERED: Duration = Duration::from_secs(24 * 3600);

/// What the mark phase decided for one repository.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Plan {
    /// Manifests to delete, with sizes, parents and subjects before what they keep
    /// (index before child, subject before referrer).
    pub manifests: Vec<(Digest, u64)>,
    /// Links to delete, with sizes.
    pub links: Vec<(Digest, u64)>,
}

/// The mark phase over one repository's graph (see the module docs): what is
/// unreachable from the roots, given the grace `cutoff` (milliseconds since the
/// epoch).
pub(crate) fn plan(graph: &RepositoryGraph, cutoff: i64, keep_orphaned_referrers: bool) -> Plan {
    let mut children: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for (parent, child) in &graph.children {
        children.entry(parent).or_default().push(child);
    }
    let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for m in &graph.manifests {
        if let Some(subject) = &m.subject {
            referrers.entry(subject).or_default().push(&m.digest);
        }
    }
    let mut kept: HashSet<&Digest> = HashSet::new();
    let mut todo: Vec<&Digest> = graph.tagged.iter().collect();
    for m in &graph.manifests {
        let recent = m.pushed_at >= cutoff;
        // With orphaned referrers kept, a referrer is kept whatever becomes of its
        // subject: kept with it, or an orphan once it is gone.
        let referrer = keep_orphaned_referrers && m.subject.is_some();
        if recent || referrer {
            todo.push(&m.digest);
        }
    }
    while let Some(d) = todo.pop() {
        if !kept.insert(d) {
            continue;
        }
        todo.extend(children.get(d).into_iter().flatten().copied());
        todo.extend(referrers.get(d).into_iter().flatten().copied());
    }
    // Deletion order: a manifest's depth is the longest chain of parents and subjects
    // above it among those to delete; shallower first, so that what keeps another
    // (an index its child, a subject its referrer) goes before it.
    let doomed: HashMap<&Digest, &crate::metadata::ManifestNode> = graph
        .manifests
        .iter()
        .filter(|m| !kept.contains(&m.digest))
        .map(|m| (&m.digest, m))
        .collect();
    let mut above: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for (parent, child) in &graph.children {
        if doomed.contains_key(parent) && doomed.contains_key(child) {
            above.entry(child).or_default().push(parent);
        }
    }
    for m in doomed.values() {
        if let Some(s) = &m.subject
            && doomed.contains_key(s)
        {
            above.entry(&m.digest).or_default().push(s);
        }
    }
    let mut depth: HashMap<&Digest, usize> = HashMap::new();
    fn depth_of<'a>(
        d: &'a Digest,
        above: &HashMap<&'a Digest, Vec<&'a Digest>>,
        depth: &mut HashMap<&'a Digest, usize>,
        guard: usize,
    ) -> usize {
        if let Some(&known) = depth.get(d) {
            return known;
        }
        // Digests make cycles impossible; the guard only bounds a corrupt graph.
        let own = if guard == 0 {
            0
        } else {
            above
                .get(d)
                .into_iter()
                .flatten()
                .map(|p| depth_of(p, above, depth, guard - 1) + 1)
                .max()
                .unwrap_or(0)
        };
        depth.insert(d, own);
        own
    }
    let mut manifests: Vec<(usize, Digest, u64)> = doomed
        .values()
        .map(|m| {
            (
                depth_of(&m.digest, &above, &mut depth, 64),
                m.digest.clone(),
                m.size,
            )
        })
        .collect();
    manifests.sort_unstable_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())));
    let kept_blobs: HashSet<&Digest> = graph
        .blob_refs
        .iter()
        .filter(|(m, _)| kept.contains(m))
        .map(|(_, b)| b)
        .collect();
    let mut links: Vec<(Digest, u64)> = graph
        .links
        .iter()
        .filter(|l| l.linked_at < cutoff && !kept_blobs.contains(&l.digest))
        .map(|l| (l.digest.clone(), l.size))
        .collect();
    links.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    Plan {
        manifests: manifests.into_iter().map(|(_, d, s)| (d, s)).collect(),
        links,
    }
}

/// Milliseconds since the epoch `grace` ago (everything, for a grace past the epoch).
fn cutoff(grace: Duration) -> i64 {
    now_millis().saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX))
}

impl Registry {
    /// One garbage collection run (see the module docs), holding the collector lock
    /// (`wait_for_lock`: wait for another collector to finish; else `None` when one
    /// is running). Retention applies first.
    pub async fn collect_garbage(
        &self,
        options: &GcOptions,
        observer: &dyn GcObserver,
        wait_for_lock: bool,
    ) -> Result<Option<GcReport>> {
        let Some(_lock) = self.meta.collector_lock(wait_for_lock).await? else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let mut report = GcReport {
            dry_run: options.dry_run,
            ..GcReport::default()
        };
        let note = |report: &mut GcReport, item: Removed| {
            observer.removed(&item);
            report.removed.push(item);
        };
        let grace_cutoff = cutoff(options.grace);

        // 1. Retention.
        if !options.retention.is_empty() {
            observer.phase(GcPhase::Retention, 0);
            for (repo, tag) in self
                .apply_retention(&options.retention, options.dry_run)
                .await?
            {
                note(&mut report, Removed::Tag { repo, tag });
            }
        }

        // 2 and 3. Manifests and links, repository by repository.
        let estimate = self.meta.storage_usage(0).await?.repository_count;
        observer.phase(GcPhase::Repositories, estimate);
        // Dry run: links planned away, by digest, to tell which blobs would go.
        let mut planned_links: HashMap<Digest, (u64, u64)> = HashMap::new();
        let mut last: Option<String> = None;
        loop {
            let names = self
                .meta
                .repositories_after(last.as_deref(), REPOSITORY_PAGE)
                .await?;
            for name in &names {
                let Ok(repo) = RepoName::parse(name) else {
                    continue;
                };
                report.repositories += 1;
                let graph = self.meta.repository_graph(&repo).await?;
                let plan = plan(&graph, grace_cutoff, options.keep_orphaned_referrers);
                if options.dry_run {
                    for (digest, size) in plan.manifests {
                        report.manifest_bytes += size;
                        note(
                            &mut report,
                            Removed::Manifest {
                                repo: name.clone(),
                                digest,
                                size,
                            },
                        );
                    }
                    for (digest, size) in plan.links {
                        planned_links.entry(digest.clone()).or_insert((0, size)).0 += 1;
                        note(
                            &mut report,
                            Removed::Link {
                                repo: name.clone(),
                                digest,
                                size,
                            },
                        );
                    }
                } else {
                    self.sweep_repository(&repo, plan, grace_cutoff, options, &mut |item| {
                        if let Removed::Manifest { size, .. } = &item {
                            report.manifest_bytes += size;
                        }
                        note(&mut report, item)
                    })
                    .await?;
                }
                observer.step();
            }
            if names.len() < REPOSITORY_PAGE as usize {
                break;
            }
            last = names.last().cloned();
        }

        // Blob rows no repository links (or, dry, would link).
        observer.phase(GcPhase::Blobs, 0);
        if options.dry_run {
            let planned: Vec<Digest> = planned_links.keys().cloned().collect();
            for batch in planned.chunks(BLOB_PAGE as usize) {
                let counts = self.meta.link_counts(batch).await?;
                for (digest, count) in batch.iter().zip(counts) {
                    let (unlinked, size) = planned_links[digest];
                    if count <= unlinked {
                        report.reclaimed_bytes += size;
                        note(
                            &mut report,
                            Removed::Blob {
                                digest: digest.clone(),
                                size,
                            },
                        );
                    }
                }
            }
        }
        let mut after: Option<String> = None;
        loop {
            let unlinked = self
                .meta
                .unlinked_blobs(after.as_deref(), BLOB_PAGE)
                .await?;
            after = unlinked.last().map(|(d, _)| d.as_str().to_owned());
            if options.dry_run {
                for (digest, size) in &unlinked {
                    report.reclaimed_bytes += size;
                    note(
                        &mut report,
                        Removed::Blob {
                            digest: digest.clone(),
                            size: *size,
                        },
                    );
                }
            } else {
                let digests: Vec<Digest> = unlinked.iter().map(|(d, _)| d.clone()).collect();
                for (digest, size) in self.meta.delete_blobs_if_unlinked(&digests).await? {
                    report.reclaimed_bytes += size;
                    note(&mut report, Removed::Blob { digest, size });
                }
            }
            if unlinked.len() < BLOB_PAGE as usize {
                break;
            }
        }

        // 4. Bytes of deleted rows (and of any run that stopped before them).
        if !options.dry_run {
            observer.phase(GcPhase::Bytes, 0);
            report.byte_deletions += self.delete_pending_bytes().await?;
            self.meta
                .forget_byte_deletions(cutoff(DELETIONS_REMEMBERED))
                .await?;
        }

        // 5. Stray bytes.
        if options.sweep_storage {
            observer.phase(GcPhase::Storage, 0);
            self.sweep_stray_bytes(options, &mut report, observer)
                .await?;
        }

        report.usage = self.meta.storage_usage(options.usage_top).await?;
        if !options.dry_run {
            let c = report.counts();
            self.meta
                .record_gc_run(&GcRunRecord {
                    finished_at: now_millis(),
                    duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
                    tags: c.tags,
                    manifests: c.manifests,
                    links: c.links,
                    blobs: c.blobs,
                    stray: c.stray,
                    reclaimed_bytes: report.reclaimed_bytes,
                    manifest_bytes: report.manifest_bytes,
                })
                .await?;
        }
        Ok(Some(report))
    }

    /// Deletes what `plan` found unreachable in `repo`: manifests (pass after pass,
    /// as each pass frees the children and referrers of the one before), then links.
    async fn sweep_repository(
        &self,
        repo: &RepoName,
        plan: Plan,
        grace_cutoff: i64,
        options: &GcOptions,
        note: &mut (dyn FnMut(Removed) + Send),
    ) -> Result<()> {
        let mut left: Vec<Digest> = plan.manifests.into_iter().map(|(d, _)| d).collect();
        while !left.is_empty() {
            let deleted = self
                .meta
                .delete_manifests_if_unreachable(
                    repo,
                    &left,
                    grace_cutoff,
                    options.keep_orphaned_referrers,
                )
                .await?;
            if deleted.is_empty() {
                break;
            }
            let gone: HashSet<&Digest> = deleted.iter().map(|(d, _)| d).collect();
            left.retain(|d| !gone.contains(d));
            for (digest, size) in deleted {
                self.journal_drop(repo, &digest, false).await?;
                note(Removed::Manifest {
                    repo: repo.as_str().to_owned(),
                    digest,
                    size,
                });
            }
        }
        let links: Vec<Digest> = plan.links.into_iter().map(|(d, _)| d).collect();
        for (digest, size) in self
            .meta
            .delete_links_if_unreferenced(repo, &links, grace_cutoff)
            .await?
        {
            note(Removed::Link {
                repo: repo.as_str().to_owned(),
                digest,
                size,
            });
        }
        Ok(())
    }

    /// Carries out every pending byte deletion; how many were.
    async fn delete_pending_bytes(&self) -> Result<u64> {
        let mut done = 0;
        loop {
            let pending = self.meta.pending_byte_deletions(BLOB_PAGE).await?;
            if pending.is_empty() {
                return Ok(done);
            }
            let deleted = self.meta.delete_bytes(&pending, &self.bytes()).await?;
            done += deleted.len() as u64;
            if pending.len() < BLOB_PAGE as usize {
                return Ok(done);
            }
        }
    }

    /// Lists the blob store for bytes with no row and no recorded deletion, written
    /// before the grace period, and deletes them (records their deletion, then
    /// carries it out, as for rows).
    async fn sweep_stray_bytes(
        &self,
        options: &GcOptions,
        report: &mut GcReport,
        observer: &dyn GcObserver,
    ) -> Result<()> {
        let before = SystemTime::now()
            .checked_sub(options.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut after: Option<Digest> = None;
        loop {
            let stored = self
                .blobs
                .list_blobs(after.as_ref(), BLOB_PAGE as usize)
                .await?;
            after = stored.last().map(|b| b.digest.clone());
            let digests: Vec<Digest> = stored.iter().map(|b| b.digest.clone()).collect();
            let known = self.meta.blobs_known(&digests).await?;
            let stray: Vec<(Digest, u64)> = stored
                .iter()
                .zip(known)
                .filter(|(b, known)| !known && b.modified < before)
                .map(|(b, _)| (b.digest.clone(), b.size))
                .collect();
            if options.dry_run {
                for (digest, size) in stray {
                    report.reclaimed_bytes += size;
                    let item = Removed::StrayBytes { digest, size };
                    observer.removed(&item);
                    report.removed.push(item);
                }
            } else if !stray.is_empty() {
                let digests: Vec<Digest> = stray.iter().map(|(d, _)| d.clone()).collect();
                self.meta.quarantine_bytes(&digests).await?;
                let deleted: HashSet<Digest> = self
                    .meta
                    .delete_bytes(&digests, &self.bytes())
                    .await?
                    .into_iter()
                    .collect();
                report.byte_deletions += deleted.len() as u64;
                for (digest, size) in stray {
                    if deleted.contains(&digest) {
                        report.reclaimed_bytes += size;
                        let item = Removed::StrayBytes { digest, size };
                        observer.removed(&item);
                        report.removed.push(item);
                    }
                }
            }
            if stored.len() < BLOB_PAGE as usize {
                return Ok(());
            }
        }
    }

    /// Storage figures: the whole store and the `top` largest repositories.
    pub async fn storage_usage(&self, top: u32) -> Result<StorageUsage> {
        Ok(self.meta.storage_usage(top).await?)
    }

    /// Every completed collection, added up (whichever process ran it).
    pub async fn gc_totals(&self) -> Result<GcTotals> {
        Ok(self.meta.gc_totals().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use crate::metadata::{LinkNode, ManifestNode};

    fn d(s: &str) -> Digest {
        Digest::of(Algorithm::Sha256, s.as_bytes())
    }

    fn node(s: &str, subject: Option<&str>, pushed_at: i64) -> ManifestNode {
        ManifestNode {
            digest: d(s),
            subject: subject.map(d),
            size: s.len() as u64,
            pushed_at,
        }
    }

    fn link(s: &str, linked_at: i64) -> LinkNode {
        LinkNode {
            digest: d(s),
            size: 10,
            linked_at,
        }
    }

    fn names(p: &Plan) -> (Vec<Digest>, Vec<Digest>) {
        (
            p.manifests.iter().map(|(d, _)| d.clone()).collect(),
            p.links.iter().map(|(d, _)| d.clone()).collect(),
        )
    }

    /// Tags keep their manifests, index children and the referrers of kept subjects,
    /// and the blobs those refer to; what nothing keeps goes, parents and subjects
    /// before what they kept, unless it is within the grace period.
    #[test]
    fn marks_from_tags_through_children_and_referrers() {
        let old = 1_000;
        let cutoff = 5_000;
        let graph = RepositoryGraph {
            manifests: vec![
                node("tagged", None, old),
                node("child", None, old),
                node("index", None, old),
                node("sig", Some("tagged"), old),
                node("lost", None, old),
                node("lost-sig", Some("lost"), old),
                node("lost-index", None, old),
                node("lost-child", None, old),
                node("fresh", None, cutoff + 1),
                node("orphan-sig", Some("never-pushed"), old),
            ],
            tagged: vec![d("tagged"), d("index")],
            children: vec![(d("index"), d("child")), (d("lost-index"), d("lost-child"))],
            blob_refs: vec![
                (d("tagged"), d("layer")),
                (d("lost"), d("lost-layer")),
                (d("fresh"), d("fresh-layer")),
            ],
            links: vec![
                link("layer", old),
                link("lost-layer", old),
                link("fresh-layer", old),
                link("unreferenced", old),
                link("just-uploaded", cutoff),
            ],
        };
        let (manifests, links) = names(&plan(&graph, cutoff, false));
        let pos = |s: &str| manifests.iter().position(|m| m == &d(s)).unwrap();
        let mut sorted = manifests.clone();
        sorted.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        let mut expected = vec![
            d("lost"),
            d("lost-sig"),
            d("lost-index"),
            d("lost-child"),
            d("orphan-sig"),
        ];
        expected.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(sorted, expected);
        assert!(pos("lost") < pos("lost-sig"));
        assert!(pos("lost-index") < pos("lost-child"));
        let mut links = links;
        links.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        let mut expected = vec![d("lost-layer"), d("unreferenced")];
        expected.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(links, expected);

        // Orphaned referrers kept on request: those already orphaned, and those whose
        // subject goes now.
        let (manifests, _) = names(&plan(&graph, cutoff, true));
        assert!(!manifests.contains(&d("orphan-sig")));
        assert!(!manifests.contains(&d("lost-sig")));
        assert!(manifests.contains(&d("lost")));
    }
}
