//! What a manifest pushed into a pack repository indexes, whichever API pushed it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{
    MAX_CONFIG_BYTES, PACK_CONFIG, PackDependency, PackType, parse_rfc3339, sort_key,
    valid_pack_id, validate_manifest,
};
use crate::digest::Digest;
use crate::metadata::{PackVersionRecord, now_millis};
use crate::names::{RepoName, Tag};
use crate::registry::media_types::OCI_MANIFEST;
use crate::registry::{Error, Registry, Result};

/// The lower-cased text `q` searches.
pub fn search_text(pack_id: &str, name: &str, description: &str) -> String {
    format!("{pack_id}\n{name}\n{description}").to_lowercase()
}

// ---------------------------------------------------------------------------------
// The OCI side: what a pack manifest looks like, and reading one back

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciDescriptor {
    media_type: String,
    digest: String,
    size: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciManifest {
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<OciDescriptor>,
    #[serde(default)]
    layers: Vec<OciDescriptor>,
    subject: Option<serde_json::Value>,
    annotations: Option<BTreeMap<String, String>>,
}

/// Why a manifest in a pack repository is, or is not, indexed.
enum Indexing {
    /// Not a pack artifact at all: nothing to say.
    NotAPack,
    /// A pack, but not to index (with why, logged at debug).
    Skip(String),
    /// A pack artifact whose pack manifest is unusable (with why, logged as a warning).
    Malformed(String),
    /// Index this.
    Index(Box<PackVersionRecord>),
}

pub(super) fn dependencies_json(deps: &[PackDependency]) -> String {
    serde_json::to_string(deps).expect("dependencies serialize")
}
impl Registry {
    /// The pack id of a repository in the packs prefix (`<prefix><packId>`), if it is one.
    pub fn pack_id_of(&self, repo: &RepoName) -> Option<String> {
        let id = repo.as_str().strip_prefix(self.packs.prefix.as_str())?;
        valid_pack_id(id).then(|| id.to_owned())
    }

    pub(super) fn pack_repo(&self, pack_id: &str) -> Result<RepoName> {
        RepoName::parse(&format!("{}{pack_id}", self.packs.prefix))
            .map_err(|e| Error::PackInvalid(format!("packId {pack_id}: {e}")))
    }

    /// The index row for a manifest being pushed into `repo` under `tags`, if it is a
    /// pack to index. Called by `put_manifest` for every manifest; a pack artifact whose
    /// config is not a valid pack manifest is stored as a plain artifact and the reason
    /// logged. Fails only when storage cannot be read.
    pub(in crate::registry) async fn pack_for_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: &[u8],
        tags: &[Tag],
    ) -> Result<Option<PackVersionRecord>> {
        let Some(pack_id) = self.pack_id_of(repo) else {
            return Ok(None);
        };
        match self.classify(repo, &pack_id, digest, body, tags).await? {
            Indexing::NotAPack => Ok(None),
            Indexing::Skip(why) => {
                tracing::debug!(%repo, %digest, reason = %why, "pack manifest not indexed");
                Ok(None)
            }
            Indexing::Malformed(why) => {
                tracing::warn!(
                    %repo, %digest, reason = %why,
                    "malformed pack pushed: stored as a plain artifact, not indexed"
                );
                Ok(None)
            }
            Indexing::Index(record) => Ok(Some(*record)),
        }
    }

    async fn classify(
        &self,
        repo: &RepoName,
        pack_id: &str,
        digest: &Digest,
        body: &[u8],
        tags: &[Tag],
    ) -> Result<Indexing> {
        let Ok(doc) = serde_json::from_slice::<OciManifest>(body) else {
            return Ok(Indexing::NotAPack);
        };
        let Some(config) = &doc.config else {
            return Ok(Indexing::NotAPack); // an index: bundles as indexes are not indexed yet
        };
        let by_artifact = doc
            .artifact_type
            .as_deref()
            .and_then(PackType::from_artifact_type);
        if by_artifact.is_none() && config.media_type != PACK_CONFIG {
            return Ok(Indexing::NotAPack);
        }
        if doc.subject.is_some() {
            return Ok(Indexing::Skip("a referrer (has a subject)".into()));
        }
        if doc
            .media_type
            .as_deref()
            .is_some_and(|mt| mt != OCI_MANIFEST)
        {
            return Ok(Indexing::Malformed(format!(
                "a pack is an OCI image manifest, not {}",
                doc.media_type.as_deref().unwrap_or_default()
            )));
        }
        if config.media_type != PACK_CONFIG {
            return Ok(Indexing::Malformed(format!(
                "config media type is {}, not {PACK_CONFIG}",
                config.media_type
            )));
        }
        let Ok(config_digest) = Digest::parse(&config.digest) else {
            return Ok(Indexing::Malformed("config digest is invalid".into()));
        };
        if config.size < 0 || config.size as u64 > MAX_CONFIG_BYTES {
            return Ok(Indexing::Malformed(format!(
                "config is {} bytes; a pack manifest is at most {MAX_CONFIG_BYTES}",
                config.size
            )));
        }
        let config_bytes = self.read_small_blob(repo, &config_digest).await?;
        let pack = match validate_manifest(&config_bytes) {
            Ok(p) => p,
            Err(e) => return Ok(Indexing::Malformed(format!("pack manifest: {e}"))),
        };
        if pack.manifest.pack_id != pack_id {
            return Ok(Indexing::Malformed(format!(
                "packId {} does not match repository {repo}",
                pack.manifest.pack_id
            )));
        }
        if let Some(t) = by_artifact
            && t != pack.pack_type
        {
            return Ok(Indexing::Malformed(format!(
                "artifactType says {} but the pack manifest says {}",
                t.as_str(),
                pack.pack_type.as_str()
            )));
        }
        // The content: the layer the pack manifest names by digest, else the first.
        let layer = match &pack.manifest.digest {
            Some(d) => doc.layers.iter().find(|l| &l.digest == d),
            None => doc.layers.first(),
        };
        let Some(layer) = layer else {
            return Ok(Indexing::Malformed(match &pack.manifest.digest {
                Some(d) => format!("no layer has the content digest {d}"),
                None => "no content layer".into(),
            }));
        };
        let Ok(content_digest) = Digest::parse(&layer.digest) else {
            return Ok(Indexing::Malformed(
                "content layer digest is invalid".into(),
            ));
        };
        if layer.size < 0 || pack.manifest.size.is_some_and(|s| s != layer.size as u64) {
            return Ok(Indexing::Malformed(format!(
                "content size {:?} does not match the layer's {}",
                pack.manifest.size, layer.size
            )));
        }
        if !tags.contains(&pack.tag) {
            return Ok(Indexing::Skip(format!(
                "pushed without its version tag {}",
                pack.tag
            )));
        }
        let created = doc
            .annotations
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.created"))
            .and_then(|c| parse_rfc3339(c));
        let published_at = pack
            .manifest
            .published_at
            .as_deref()
            .and_then(parse_rfc3339)
            .or(created)
            .unwrap_or_else(now_millis);
        Ok(Indexing::Index(Box::new(PackVersionRecord {
            pack_id: pack_id.to_owned(),
            version: pack.manifest.version.clone(),
            sort_key: sort_key(&pack.version),
            prerelease: !pack.version.pre.is_empty(),
            pack_type: pack.pack_type.as_str().to_owned(),
            name: pack.manifest.name.clone(),
            description: pack.description().to_owned(),
            author: pack.author().to_owned(),
            search_text: search_text(pack_id, &pack.manifest.name, pack.description()),
            repository: repo.clone(),
            tag: pack.tag.clone(),
            manifest_digest: digest.clone(),
            content_digest,
            content_media_type: layer.media_type.clone(),
            size: layer.size as u64,
            published_at,
            dependencies: dependencies_json(&pack.manifest.dependencies),
            members: dependencies_json(&pack.manifest.members),
            metadata: Value::Object(pack.manifest.metadata.clone()).to_string(),
        })))
    }

    async fn read_small_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<u8>> {
        use futures_util::StreamExt;
        let read = self.read_blob(repo, digest, |_| Some(None), None).await?;
        let mut out = Vec::new();
        if let Some(mut body) = read.body {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::Internal(format!("reading blob: {e}")))?;
                out.extend_from_slice(&chunk);
                if out.len() as u64 > MAX_CONFIG_BYTES {
                    break;
                }
            }
        }
        Ok(out)
    }
}
