//! `POST /packs`: publishing a pack through the facade.

use std::collections::HashMap;
use std::str::FromStr;

use bytes::Bytes;
use oci_spec::image::{
    ANNOTATION_AUTHORS, ANNOTATION_CREATED, ANNOTATION_DESCRIPTION, ANNOTATION_TITLE,
    ANNOTATION_VERSION, DescriptorBuilder, ImageManifestBuilder, MediaType,
};
use serde_json::Value;

use super::index::dependencies_json;
use super::{
    PACK_CONFIG, PACK_CONTENT, PackContent, PackManifest, PublishedPack, ValidPack, format_rfc3339,
    validate_manifest,
};
use crate::digest::{Algorithm, Digest};
use crate::metadata::{MetadataError, PackVersionRecord, now_millis};
use crate::names::RepoName;
use crate::registry::manifests::{Parsed, check, valid_media_type, verify_sizes};
use crate::registry::media_types::OCI_MANIFEST;
use crate::registry::uploads::StagedBlob;
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

    /// The repository a pack manifest publishes into, from the manifest alone (no
    /// lookup): what the publisher must be allowed to push to.
    pub fn pack_repository_for(&self, manifest_json: &[u8]) -> Result<RepoName> {
        let pack = validate_manifest(manifest_json)?;
        self.pack_repo(&pack.manifest.pack_id)
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
    /// [`publish_pack`](Self::publish_pack).
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

    /// Publishes a pack: checks the pack manifest (`manifest_json`), its dependencies
    /// and the content's media type, builds the config blob and the OCI manifest and
    /// validates it like any push, and only then stores: the content (staged beforehand
    /// by [`stage_pack_content`](Self::stage_pack_content), which hashed it up to the
    /// configured limit) and config bytes, then in one transaction their links into
    /// `<prefix><packId>`, the manifest, the version's tag and the index row. The
    /// content is consumed: published or discarded.
    ///
    /// The same version again with the same content and fields is `created: false`;
    /// with anything different it is [`Error::PackConflict`]. When anything fails,
    /// nothing is visible: no repository, link, tag or row, and no staged bytes (bytes
    /// made durable for a transaction that then lost a race stay, unreferenced, for
    /// garbage collection).
    pub async fn publish_pack(
        &self,
        manifest_json: &[u8],
        content: PackContent,
        content_media_type: Option<&str>,
    ) -> Result<PublishedPack> {
        let staged = content.0;
        let outcome = match self.checked_pack(manifest_json).await {
            Ok((pack, repo)) => {
                self.publish_staged(&pack, &repo, &staged, content_media_type)
                    .await
            }
            Err(e) => Err(e),
        };
        // A commit moved the content out of the staging area; this removes the rest.
        self.discard_staged(&staged).await;
        outcome
    }

    async fn publish_staged(
        &self,
        pack: &ValidPack,
        repo: &RepoName,
        staged: &StagedBlob,
        content_media_type: Option<&str>,
    ) -> Result<PublishedPack> {
        let media_type = content_media_type.unwrap_or(PACK_CONTENT);
        if !valid_media_type(media_type) {
            return Err(Error::PackInvalid(format!(
                "the content's media type {media_type:?} is not a media type (RFC 6838)"
            )));
        }
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

        // Everything is built and checked before anything is stored.
        let mut stored = pack.manifest.clone();
        stored.digest = Some(staged.digest.to_string());
        stored.size = Some(staged.size);
        stored.published_at = Some(format_rfc3339(now_millis()));
        let config = serde_json::to_vec(&stored)
            .map(Bytes::from)
            .map_err(|e| Error::Internal(format!("pack manifest: {e}")))?;
        let config_digest = Digest::of(Algorithm::Sha256, &config);
        let body = oci_manifest(
            pack,
            &stored,
            (&config_digest, config.len()),
            staged,
            media_type,
        )?;
        let digest = Digest::of(Algorithm::Sha256, &body);
        // Anything wrong in the built manifest came from the request: a 4xx.
        let checked = check(Some(OCI_MANIFEST), body, digest).map_err(|e| match e {
            Error::ManifestInvalid(m) => Error::PackInvalid(m),
            other => other,
        })?;
        let link = [
            (staged.digest.clone(), staged.size),
            (config_digest.clone(), config.len() as u64),
        ];
        let sizes: Vec<Option<u64>> = checked
            .blobs
            .iter()
            .map(|r| link.iter().find(|(d, _)| d == &r.digest).map(|(_, s)| *s))
            .collect();
        verify_sizes(&checked, &sizes, &[])?;
        let Parsed::Image(doc) = &checked.parsed else {
            return Err(Error::Internal("a pack manifest read as an index".into()));
        };
        let tags = [pack.tag.clone()];
        let record = self
            .pack_for_manifest(repo, &checked.record, doc, &tags, Some(&config))
            .await?
            .ok_or_else(|| {
                Error::Internal("a published pack manifest was not recognised as a pack".into())
            })?;

        // The bytes, durable but not visible (no metadata row refers to them yet)...
        self.commit_staged(staged).await?;
        let config_len = config.len() as u64;
        let config_stream: ByteStream = Box::pin(futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(config)
        }));
        let written = self.blobs.put_blob(&config_digest, config_stream).await?;
        if written != config_len {
            return Err(Error::Internal(format!(
                "storage wrote {written} bytes of a {config_len}-byte pack config"
            )));
        }
        self.journal_push(repo, &checked.record, &tags).await?;
        // ...then links, manifest, tag and index row in one transaction.
        let immutable = self.immutable_tags(repo, &tags);
        let stored = self
            .meta
            .put_pack_manifest(
                repo,
                &checked.record,
                &checked.references(),
                &tags,
                &record,
                true,
                &link,
                &self.bytes(),
                &immutable,
            )
            .await;
        match stored {
            Ok(()) => Ok(PublishedPack {
                created: true,
                record,
            }),
            // Lost a race with an identical or conflicting publish of this version, or
            // the tag is taken by something else.
            Err(MetadataError::Conflict) => {
                match self
                    .meta
                    .get_pack_version(&pack.manifest.pack_id, &pack.manifest.version)
                    .await?
                {
                    Some(existing) => self.republished(pack, existing, &staged.digest),
                    None => Err(Error::PackConflict(format!(
                        "tag {} of {repo} is taken by an artifact that is not this pack",
                        pack.tag
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
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

/// The OCI image manifest of a published pack (DESIGN §6), built with `oci-spec` and
/// written with its keys in byte order (as JSON objects are here), so that the same
/// pack always gives the same bytes.
fn oci_manifest(
    pack: &ValidPack,
    stored: &PackManifest,
    (config_digest, config_size): (&Digest, usize),
    content: &StagedBlob,
    content_media_type: &str,
) -> Result<Bytes> {
    let built = || -> std::result::Result<Vec<u8>, String> {
        let digest =
            |d: &Digest| oci_spec::image::Digest::from_str(d.as_str()).map_err(|e| e.to_string());
        let title = if content_media_type.ends_with("tar+gzip") {
            format!("{}-{}.tar.gz", stored.pack_id, stored.version)
        } else {
            format!("{}-{}", stored.pack_id, stored.version)
        };
        let mut annotations = HashMap::new();
        for (key, value) in [
            (ANNOTATION_VERSION, stored.version.as_str()),
            (
                ANNOTATION_CREATED,
                stored.published_at.as_deref().unwrap_or_default(),
            ),
            (ANNOTATION_AUTHORS, pack.author()),
            (ANNOTATION_DESCRIPTION, pack.description()),
            (ANNOTATION_TITLE, stored.name.as_str()),
        ] {
            if !value.is_empty() {
                annotations.insert(key.to_owned(), value.to_owned());
            }
        }
        let config = DescriptorBuilder::default()
            .media_type(MediaType::from(PACK_CONFIG))
            .digest(digest(config_digest)?)
            .size(config_size as u64)
            .build()
            .map_err(|e| e.to_string())?;
        let layer = DescriptorBuilder::default()
            .media_type(MediaType::from(content_media_type))
            .digest(digest(&content.digest)?)
            .size(content.size)
            .annotations(HashMap::from([(ANNOTATION_TITLE.to_owned(), title)]))
            .build()
            .map_err(|e| e.to_string())?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::from(pack.pack_type.artifact_type().as_str()))
            .config(config)
            .layers(vec![layer])
            .annotations(annotations)
            .build()
            .map_err(|e| e.to_string())?;
        let sorted: Value = serde_json::to_value(&manifest).map_err(|e| e.to_string())?;
        serde_json::to_vec(&sorted).map_err(|e| e.to_string())
    };
    built()
        .map(Bytes::from)
        .map_err(|e| Error::Internal(format!("building a pack's OCI manifest: {e}")))
}
