//! `POST /packs`: publishing a pack through the facade.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::index::dependencies_json;
use super::{
    PACK_CONFIG, PACK_CONTENT, PackContent, PackManifest, PublishedPack, ValidPack, format_rfc3339,
    validate_manifest,
};
use crate::digest::{Algorithm, Digest};
use crate::metadata::{PackVersionRecord, now_millis};
use crate::names::{Reference, RepoName};
use crate::registry::media_types::OCI_MANIFEST;
use crate::registry::{Error, Registry, Result};
use crate::storage::ByteStream;

impl Registry {
    // -----------------------------------------------------------------------------
    // Publishing

    /// Checks a pack manifest before its content is sent: its rules, that the pack
    /// keeps its type, and that its dependencies and members resolve without a cycle.
    pub async fn check_pack_manifest(&self, manifest_json: &[u8]) -> Result<()> {
        self.checked_pack(manifest_json).await.map(|_| ())
    }

    async fn checked_pack(&self, manifest_json: &[u8]) -> Result<(ValidPack, RepoName)> {
        let pack = validate_manifest(manifest_json)?;
        let repo = self.pack_repo(&pack.manifest.pack_id)?;
        if let Some(existing) = self.meta.get_pack(&pack.manifest.pack_id).await?
            && existing.pack_type != pack.pack_type.as_str()
        {
            return Err(Error::PackConflict(format!(
                "pack {} is a {} pack, not a {}",
                existing.pack_id,
                existing.pack_type,
                pack.pack_type.as_str()
            )));
        }
        self.check_dependencies(&pack).await?;
        Ok((pack, repo))
    }

    /// Streams pack content into a staging area, hashing it, up to the configured
    /// limit ([`Error::TooLarge`] beyond, leaving nothing). Nothing is visible until
    /// [`publish_staged_pack`](Self::publish_staged_pack).
    pub async fn stage_pack_content(&self, content: ByteStream) -> Result<PackContent> {
        let staged = self
            .stage_blob(
                Algorithm::Sha256,
                content,
                self.packs.max_content_bytes,
                "pack content",
            )
            .await?;
        Ok(PackContent(staged))
    }

    /// Drops staged content that will not be published.
    pub async fn discard_pack_content(&self, content: PackContent) {
        self.discard_staged(&content.0).await;
    }

    /// Publishes a pack: checks the pack manifest (`manifest_json`) and its
    /// dependencies, and stores the content blob (staged beforehand by
    /// [`stage_pack_content`](Self::stage_pack_content), which hashed it up to the
    /// configured limit), the config blob and the OCI manifest in `<prefix><packId>`
    /// under the version's tag, indexed, in one final transaction. The content is
    /// consumed: published or discarded.
    ///
    /// The same version again with the same content and fields is `created: false`;
    /// with anything different it is [`Error::PackConflict`]. When anything fails,
    /// nothing new is visible (blobs already written are left to garbage collection).
    pub async fn publish_pack(
        &self,
        manifest_json: &[u8],
        content: PackContent,
        content_media_type: Option<&str>,
    ) -> Result<PublishedPack> {
        match self.checked_pack(manifest_json).await {
            Ok((pack, repo)) => {
                self.publish_checked(&pack, &repo, content, content_media_type)
                    .await
            }
            Err(e) => {
                self.discard_pack_content(content).await;
                Err(e)
            }
        }
    }

    async fn publish_checked(
        &self,
        pack: &ValidPack,
        repo: &RepoName,
        content: PackContent,
        content_media_type: Option<&str>,
    ) -> Result<PublishedPack> {
        let staged = content.0;
        let outcome = self
            .publish_staged(pack, repo, &staged, content_media_type)
            .await;
        if !matches!(outcome, Ok(PublishedPack { created: true, .. })) {
            // Committed blobs were moved out of the staging area; this removes the rest.
            self.discard_staged(&staged).await;
        }
        outcome
    }

    async fn publish_staged(
        &self,
        pack: &ValidPack,
        repo: &RepoName,
        staged: &crate::registry::uploads::StagedBlob,
        content_media_type: Option<&str>,
    ) -> Result<PublishedPack> {
        if let Some(d) = &pack.manifest.digest
            && d != staged.digest.as_str()
        {
            return Err(Error::PackInvalid(format!(
                "the content's digest is {}, not the manifest's {d}",
                staged.digest
            )));
        }
        if let Some(s) = pack.manifest.size
            && s != staged.size
        {
            return Err(Error::PackInvalid(format!(
                "the content is {} bytes, not the manifest's {s}",
                staged.size
            )));
        }
        if let Some(existing) = self
            .meta
            .get_pack_version(&pack.manifest.pack_id, &pack.manifest.version)
            .await?
        {
            return self.republished(pack, existing, &staged.digest);
        }

        self.commit_staged(repo, staged).await?;
        let media_type = content_media_type.unwrap_or(PACK_CONTENT).to_owned();
        let published_at = now_millis();
        let mut stored = pack.manifest.clone();
        stored.digest = Some(staged.digest.to_string());
        stored.size = Some(staged.size);
        stored.published_at = Some(format_rfc3339(published_at));
        let config = Bytes::from(serde_json::to_vec(&stored).expect("pack manifest serializes"));
        let config_digest = Digest::of(Algorithm::Sha256, &config);
        let config_size = config.len();
        let config_stream: ByteStream = Box::pin(futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(config)
        }));
        self.push_blob(repo, &config_digest, config_stream).await?;

        let body = oci_manifest(
            pack,
            &stored,
            (&config_digest, config_size),
            staged,
            &media_type,
        );
        let pushed = self
            .put_manifest_as(
                repo,
                &Reference::Tag(pack.tag.clone()),
                Some(OCI_MANIFEST),
                body,
                &[],
                true,
            )
            .await;
        match pushed {
            Ok(_) => {}
            // Lost a race with an identical or conflicting publish of this version.
            Err(Error::PackConflict(_)) => {
                return match self
                    .meta
                    .get_pack_version(&pack.manifest.pack_id, &pack.manifest.version)
                    .await?
                {
                    Some(existing) => self.republished(pack, existing, &staged.digest),
                    None => Err(Error::PackConflict(format!(
                        "tag {} of {repo} is taken by an artifact that is not this pack",
                        pack.tag
                    ))),
                };
            }
            Err(e) => return Err(e),
        }
        let record = self
            .meta
            .get_pack_version(&pack.manifest.pack_id, &pack.manifest.version)
            .await?
            .ok_or_else(|| Error::Internal("published pack version is not indexed".into()))?;
        Ok(PublishedPack {
            created: true,
            record,
        })
    }

    /// A publish of a version that exists: idempotent when nothing differs.
    fn republished(
        &self,
        pack: &ValidPack,
        existing: PackVersionRecord,
        content: &Digest,
    ) -> Result<PublishedPack> {
        let json = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
        let mut differs = Vec::new();
        if &existing.content_digest != content {
            differs.push("content");
        }
        if existing.pack_type != pack.pack_type.as_str() {
            differs.push("type");
        }
        if existing.name != pack.manifest.name {
            differs.push("name");
        }
        if existing.description != pack.description() {
            differs.push("description");
        }
        if existing.author != pack.author() {
            differs.push("author");
        }
        if json(&existing.dependencies) != json(&dependencies_json(&pack.manifest.dependencies)) {
            differs.push("dependencies");
        }
        if json(&existing.members) != json(&dependencies_json(&pack.manifest.members)) {
            differs.push("members");
        }
        if json(&existing.metadata) != Value::Object(pack.manifest.metadata.clone()) {
            differs.push("metadata");
        }
        if differs.is_empty() {
            return Ok(PublishedPack {
                created: false,
                record: existing,
            });
        }
        Err(Error::PackConflict(format!(
            "version {} of {} is already published with a different {}",
            existing.version,
            existing.pack_id,
            differs.join(", ")
        )))
    }
}

/// The OCI image manifest of a published pack (DESIGN §6).
fn oci_manifest(
    pack: &ValidPack,
    stored: &PackManifest,
    (config_digest, config_size): (&Digest, usize),
    content: &crate::registry::uploads::StagedBlob,
    content_media_type: &str,
) -> Bytes {
    let title = if content_media_type.ends_with("tar+gzip") {
        format!("{}-{}.tar.gz", stored.pack_id, stored.version)
    } else {
        format!("{}-{}", stored.pack_id, stored.version)
    };
    let mut annotations = Map::new();
    let mut annotate = |k: &str, v: &str| {
        if !v.is_empty() {
            annotations.insert(format!("org.opencontainers.image.{k}"), v.into());
        }
    };
    annotate("version", &stored.version);
    annotate(
        "created",
        stored.published_at.as_deref().unwrap_or_default(),
    );
    annotate("authors", pack.author());
    annotate("description", pack.description());
    annotate("title", &stored.name);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": pack.pack_type.artifact_type(),
        "config": { "mediaType": PACK_CONFIG, "digest": config_digest.as_str(), "size": config_size },
        "layers": [{
            "mediaType": content_media_type,
            "digest": content.digest.as_str(),
            "size": content.size,
            "annotations": { "org.opencontainers.image.title": title },
        }],
        "annotations": annotations,
    });
    Bytes::from(serde_json::to_vec(&manifest).expect("manifest serializes"))
}
