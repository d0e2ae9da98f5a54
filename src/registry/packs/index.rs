//! What a manifest pushed into a pack repository indexes, whichever API pushed it.

use oci_spec::image::{ANNOTATION_CREATED, ImageManifest, MediaType};
use serde_json::Value;

use super::{
    MAX_CONFIG_BYTES, PACK_CONFIG, PackDependency, PackType, parse_rfc3339, sort_key,
    valid_pack_id, validate_manifest,
};
use crate::digest::Digest;
use crate::metadata::{ManifestRecord, PackVersionRecord, now_millis};
use crate::names::{RepoName, Tag};
use crate::registry::{Error, Registry, Result};

/// The lower-cased text `q` searches.
pub fn search_text(pack_id: &str, name: &str, description: &str) -> String {
    format!("{pack_id}\n{name}\n{description}").to_lowercase()
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

/// Dependencies (or members) as the JSON array text the index stores.
pub(super) fn dependencies_json(deps: &[PackDependency]) -> String {
    // A list of two-string records always serializes.
    serde_json::to_string(deps).unwrap_or_else(|_| "[]".into())
}

impl Registry {
    /// The pack id of a repository in the packs prefix (`<prefix><packId>`), if it is one.
    pub fn pack_id_of(&self, repo: &RepoName) -> Option<String> {
        let id = repo.as_str().strip_prefix(self.packs.prefix.as_str())?;
        valid_pack_id(id).then(|| id.to_owned())
    }

    pub(crate) fn pack_repo(&self, pack_id: &str) -> Result<RepoName> {
        RepoName::parse(&format!("{}{pack_id}", self.packs.prefix))
            .map_err(|e| Error::PackInvalid(format!("packId {pack_id}: {e}")))
    }

    /// The index row for an image manifest (`record`, read as `doc`) being pushed into
    /// `repo` under `tags`, if it is a pack to index. Called for every image manifest
    /// pushed; a pack artifact whose config is not a valid pack manifest is stored as a
    /// plain artifact and the reason logged. The config is read from the repository,
    /// unless given (a publish, whose config is not stored yet). Fails only when
    /// storage cannot be read.
    pub(in crate::registry) async fn pack_for_manifest(
        &self,
        repo: &RepoName,
        record: &ManifestRecord,
        doc: &ImageManifest,
        tags: &[Tag],
        config: Option<&[u8]>,
    ) -> Result<Option<PackVersionRecord>> {
        let Some(pack_id) = self.pack_id_of(repo) else {
            return Ok(None);
        };
        let digest = &record.digest;
        let indexing = self
            .classify(repo, &pack_id, record, doc, tags, config)
            .await?;
        match indexing {
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
        record: &ManifestRecord,
        doc: &ImageManifest,
        tags: &[Tag],
        config_given: Option<&[u8]>,
    ) -> Result<Indexing> {
        let config = doc.config();
        let config_media_type = config.media_type().as_ref();
        let by_artifact = doc
            .artifact_type()
            .as_ref()
            .and_then(|a| PackType::from_artifact_type(a.as_ref()));
        if by_artifact.is_none() && config_media_type != PACK_CONFIG {
            return Ok(Indexing::NotAPack);
        }
        if doc.subject().is_some() {
            return Ok(Indexing::Skip("a referrer (has a subject)".into()));
        }
        if MediaType::from(record.media_type.as_str()) != MediaType::ImageManifest {
            return Ok(Indexing::Malformed(format!(
                "a pack is an OCI image manifest, not {}",
                record.media_type
            )));
        }
        if config_media_type != PACK_CONFIG {
            return Ok(Indexing::Malformed(format!(
                "config media type is {config_media_type}, not {PACK_CONFIG}"
            )));
        }
        let Ok(config_digest) = Digest::parse(config.digest().as_ref()) else {
            return Ok(Indexing::Malformed("config digest is invalid".into()));
        };
        if config.size() > MAX_CONFIG_BYTES {
            return Ok(Indexing::Malformed(format!(
                "config is {} bytes; a pack manifest is at most {MAX_CONFIG_BYTES}",
                config.size()
            )));
        }
        let config_bytes = match config_given {
            Some(given) => given.to_vec(),
            None => self.read_small_blob(repo, &config_digest).await?,
        };
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
            Some(d) => doc.layers().iter().find(|l| l.digest().as_ref() == d),
            None => doc.layers().first(),
        };
        let Some(layer) = layer else {
            return Ok(Indexing::Malformed(match &pack.manifest.digest {
                Some(d) => format!("no layer has the content digest {d}"),
                None => "no content layer".into(),
            }));
        };
        let Ok(content_digest) = Digest::parse(layer.digest().as_ref()) else {
            return Ok(Indexing::Malformed(
                "content layer digest is invalid".into(),
            ));
        };
        if pack.manifest.size.is_some_and(|s| s != layer.size()) {
            return Ok(Indexing::Malformed(format!(
                "content size {:?} does not match the layer's {}",
                pack.manifest.size,
                layer.size()
            )));
        }
        if !tags.contains(&pack.tag) {
            return Ok(Indexing::Skip(format!(
                "pushed without its version tag {}",
                pack.tag
            )));
        }
        let created = doc
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_CREATED))
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
            manifest_digest: record.digest.clone(),
            content_digest,
            content_media_type: layer.media_type().to_string(),
            size: layer.size(),
            published_at,
            dependencies: dependencies_json(&pack.manifest.dependencies),
            members: dependencies_json(&pack.manifest.members),
            metadata: Value::Object(pack.manifest.metadata.clone()).to_string(),
        })))
    }

    async fn read_small_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<u8>> {
        use futures_util::StreamExt;
        let read = self.read_blob(repo, digest, |_| Some(None)).await?;
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
