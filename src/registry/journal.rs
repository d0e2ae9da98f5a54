//! The recovery journal, and `reindex`, which rebuilds the metadata from it and the
//! blobs.
//!
//! Manifests live in the database (DESIGN §5), so the blob store alone cannot give
//! them back. Every manifest push therefore also writes a record into the blob store
//! (before the database write), and every tag write or delete keeps a record per tag:
//!
//! ```text
//! records/repositories/<repo>/_manifests/<algorithm>-<hex>   {"mediaType", "body"}
//! records/repositories/<repo>/_tags/<tag>                     {"digest"}
//! ```
//!
//! A repository name never has a component starting with `_`, so these names cannot
//! collide. Deletes remove the records after the rows. `reindex` replays the records
//! through the ordinary push path: the blobs a manifest refers to are linked (sizes
//! from the store), manifests are pushed (images, then indexes), then tags, which
//! index packs and recover referrers as a push would.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::manifests::{Parsed, check};
use super::{Error, Registry, Result};
use crate::digest::Digest;
use crate::metadata::ManifestRecord;
use crate::names::{Reference, RepoName, Tag};

#[derive(Serialize, Deserialize)]
struct ManifestEntry {
    #[serde(rename = "mediaType")]
    media_type: String,
    body: String,
}

#[derive(Serialize, Deserialize)]
struct TagEntry {
    digest: String,
}

fn manifest_name(repo: &RepoName, digest: &Digest) -> String {
    format!(
        "repositories/{repo}/_manifests/{}-{}",
        digest.algorithm().as_str(),
        digest.hex()
    )
}

fn tag_name(repo: &RepoName, tag: &str) -> String {
    format!("repositories/{repo}/_tags/{tag}")
}

/// What `reindex` rebuilt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReindexReport {
    /// Repositories with at least one manifest restored.
    pub repositories: u64,
    /// Manifests restored.
    pub manifests: u64,
    /// Tags restored.
    pub tags: u64,
    /// Blob links made.
    pub links: u64,
    /// What could not be restored, and why.
    pub skipped: Vec<String>,
}

impl Registry {
    /// Records a manifest push (its bytes and media type, and each of `tags`).
    pub(super) async fn journal_push(
        &self,
        repo: &RepoName,
        record: &ManifestRecord,
        tags: &[Tag],
    ) -> Result<()> {
        let entry = ManifestEntry {
            media_type: record.media_type.clone(),
            body: String::from_utf8_lossy(&record.body).into_owned(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| Error::Internal(e.to_string()))?;
        self.blobs
            .put_record(&manifest_name(repo, &record.digest), Bytes::from(bytes))
            .await?;
        let tag = serde_json::to_vec(&TagEntry {
            digest: record.digest.to_string(),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        for t in tags {
            self.blobs
                .put_record(&tag_name(repo, t.as_str()), Bytes::from(tag.clone()))
                .await?;
        }
        Ok(())
    }

    /// Forgets a deleted tag.
    pub(super) async fn journal_untag(&self, repo: &RepoName, tag: &str) -> Result<()> {
        Ok(self.blobs.delete_record(&tag_name(repo, tag)).await?)
    }

    /// Forgets a deleted manifest and, with `tags`, the tags that pointed at it.
    pub(super) async fn journal_drop(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: bool,
    ) -> Result<()> {
        self.blobs
            .delete_record(&manifest_name(repo, digest))
            .await?;
        if tags {
            let prefix = format!("repositories/{repo}/_tags/");
            for name in self.blobs.list_records(&prefix).await? {
                if let Some(entry) = self.blobs.get_record(&name).await?
                    && serde_json::from_slice::<TagEntry>(&entry)
                        .is_ok_and(|e| e.digest == digest.as_str())
                {
                    self.blobs.delete_record(&name).await?;
                }
            }
        }
        Ok(())
    }

    /// Rebuilds repositories, blob links, manifests, tags, referrers and the packs
    /// index from the journal and the blobs (see the module docs). Meant for an empty
    /// database; on a full one it changes nothing but push and link times.
    pub async fn reindex(&self) -> Result<ReindexReport> {
        let mut report = ReindexReport::default();
        let names = self.blobs.list_records("repositories/").await?;
        // repository -> (manifests, tags), from the record names.
        let mut repos: std::collections::BTreeMap<String, (Vec<String>, Vec<String>)> =
            Default::default();
        for name in names {
            let rest = &name["repositories/".len()..];
            if let Some((repo, _)) = rest.split_once("/_manifests/") {
                repos
                    .entry(repo.to_owned())
                    .or_default()
                    .0
                    .push(name.clone());
            } else if let Some((repo, _)) = rest.split_once("/_tags/") {
                repos
                    .entry(repo.to_owned())
                    .or_default()
                    .1
                    .push(name.clone());
            }
        }
        for (repo_name, (manifest_names, tag_names)) in repos {
            let Ok(repo) = RepoName::parse(&repo_name) else {
                report
                    .skipped
                    .push(format!("{repo_name}: not a repository name"));
                continue;
            };
            // Read and check every manifest; link the blobs they refer to.
            let mut images = Vec::new();
            let mut indexes = Vec::new();
            for name in &manifest_names {
                let Some(raw) = self.blobs.get_record(name).await? else {
                    continue;
                };
                let Ok(entry) = serde_json::from_slice::<ManifestEntry>(&raw) else {
                    report.skipped.push(format!("{name}: unreadable record"));
                    continue;
                };
                let body = Bytes::from(entry.body.into_bytes());
                let digest = Digest::of(crate::digest::Algorithm::Sha256, &body);
                let digest = match name.rsplit_once('/').and_then(|(_, d)| d.split_once('-')) {
                    Some((alg, hex)) => Digest::parse(&format!("{alg}:{hex}")).unwrap_or(digest),
                    None => digest,
                };
                let checked = match check(Some(&entry.media_type), body.clone(), digest.clone()) {
                    Ok(c) => c,
                    Err(e) => {
                        report.skipped.push(format!("{repo}@{digest}: {e}"));
                        continue;
                    }
                };
                for r in &checked.blobs {
                    match self.blobs.stat(&r.digest).await? {
                        Some(size) => {
                            self.meta
                                .link_blob(&repo, &r.digest, size, &self.bytes())
                                .await?;
                            report.links += 1;
                        }
                        None => report
                            .skipped
                            .push(format!("{repo}@{digest}: blob {} is gone", r.digest)),
                    }
                }
                let item = (digest, entry.media_type, body);
                match checked.parsed {
                    Parsed::Image(_) => images.push(item),
                    Parsed::Index => indexes.push(item),
                }
            }
            // Images, then indexes, pass after pass (an index may hold indexes).
            let mut restored: std::collections::HashMap<Digest, (String, Bytes)> =
                Default::default();
            let mut todo: Vec<(Digest, String, Bytes)> =
                images.into_iter().chain(indexes).collect();
            loop {
                let before = todo.len();
                let mut left = Vec::new();
                for (digest, media_type, body) in todo {
                    let pushed = self
                        .put_manifest(
                            &repo,
                            &Reference::Digest(digest.clone()),
                            Some(&media_type),
                            body.clone(),
                            &[],
                        )
                        .await;
                    match pushed {
                        Ok(_) => {
                            report.manifests += 1;
                            restored.insert(digest, (media_type, body));
                        }
                        Err(Error::ManifestBlobUnknown(_)) => left.push((digest, media_type, body)),
                        Err(e) => report.skipped.push(format!("{repo}@{digest}: {e}")),
                    }
                }
                if left.is_empty() || left.len() == before {
                    for (digest, ..) in left {
                        report.skipped.push(format!(
                            "{repo}@{digest}: refers to blobs or manifests that are gone"
                        ));
                    }
                    break;
                }
                todo = left;
            }
            if !restored.is_empty() {
                report.repositories += 1;
            }
            for name in &tag_names {
                let tag_text = name.rsplit('/').next().unwrap_or_default();
                let Ok(tag) = Tag::parse(tag_text) else {
                    continue;
                };
                let Some(raw) = self.blobs.get_record(name).await? else {
                    continue;
                };
                let Some((media_type, body)) = serde_json::from_slice::<TagEntry>(&raw)
                    .ok()
                    .and_then(|e| Digest::parse(&e.digest).ok())
                    .and_then(|d| restored.get(&d))
                else {
                    report
                        .skipped
                        .push(format!("{repo}:{tag}: its manifest was not restored"));
                    continue;
                };
                match self
                    .put_manifest(
                        &repo,
                        &Reference::Tag(tag.clone()),
                        Some(media_type),
                        body.clone(),
                        &[],
                    )
                    .await
                {
                    Ok(_) => report.tags += 1,
                    Err(e) => report.skipped.push(format!("{repo}:{tag}: {e}")),
                }
            }
        }
        Ok(report)
    }
}
