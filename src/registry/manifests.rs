//! Manifests and indexes: validation on push (schema, media type, references that
//! must exist), exact-bytes storage, tag moves, and deletion.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;

use super::{Error, Registry, Result};
use crate::digest::{Algorithm, Digest};
use crate::metadata::{ManifestRecord, MetadataError, ReferenceKind, now_millis};
use crate::names::{Reference, RepoName, Tag};

/// Manifest media types the registry understands.
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// The empty config of artifacts (`{}`), as the image spec defines it.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
}

use media_types::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Index,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What a manifest push did.
#[derive(Debug, Clone)]
pub struct ManifestPushed {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its `subject`, if it has one.
    pub subject: Option<Digest>,
    /// The tags now pointing at it.
    pub tags: Vec<Tag>,
}

/// A manifest parsed and checked, ready to store.
struct Checked {
    record: ManifestRecord,
    blobs: Vec<(Digest, ReferenceKind)>,
    children: Vec<Digest>,
}

/// A media type as RFC 6838 spells it: `type/subtype`, both of restricted-name
/// characters, optionally followed by `;` parameters of visible ASCII.
fn valid_media_type(m: &str) -> bool {
    let (essence, params) = m.split_once(';').unwrap_or((m, ""));
    let restricted = |part: &str| {
        !part.is_empty()
            && part.len() <= 127
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    essence
        .split_once('/')
        .is_some_and(|(t, s)| restricted(t) && restricted(s))
        && params.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

fn descriptor_digest(d: &Descriptor, field: &str) -> Result<Digest> {
    if !valid_media_type(&d.media_type) {
        return Err(Error::ManifestInvalid(format!(
            "{field}: mediaType {:?} is not a media type",
            d.media_type
        )));
    }
    if d.size < 0 {
        return Err(Error::ManifestInvalid(format!("{field}: size is negative")));
    }
    Digest::parse(&d.digest).map_err(|e| Error::ManifestInvalid(format!("{field}: {e}")))
}

/// Layers a registry is not expected to hold (Docker foreign layers, OCI
/// non-distributable layers with external `urls`).
fn is_external(d: &Descriptor) -> bool {
    d.urls.as_ref().is_some_and(|u| !u.is_empty())
        && (d.media_type.contains("foreign") || d.media_type.contains("nondistributable"))
}

fn check(content_type: Option<&str>, body: Bytes, digest: Digest) -> Result<Checked> {
    let doc: Document = serde_json::from_slice(&body)
        .map_err(|e| Error::ManifestInvalid(format!("not a manifest JSON document: {e}")))?;
    if doc.schema_version != Some(2) {
        return Err(Error::ManifestInvalid("schemaVersion must be 2".into()));
    }
    // The media type: the body's own field wins; else the Content-Type; else by shape.
    let declared = content_type
        .map(|c| c.split(';').next().unwrap_or_default().trim().to_owned())
        .filter(|c| !c.is_empty() && c != "application/json" && c != "application/octet-stream");
    let media_type = match (&doc.media_type, &declared) {
        (Some(body_mt), Some(header)) if body_mt != header => {
            return Err(Error::ManifestInvalid(format!(
                "mediaType {body_mt} does not match Content-Type {header}"
            )));
        }
        (Some(mt), _) => mt.clone(),
        (None, Some(header)) => header.clone(),
        (None, None) if doc.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    let kind = kind_of(&media_type).ok_or_else(|| {
        Error::ManifestInvalid(format!("unsupported manifest media type {media_type}"))
    })?;

    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let artifact_type = match kind {
        Kind::Image => {
            if doc.manifests.is_some() {
                return Err(Error::ManifestInvalid(
                    "an image manifest has no manifests field".into(),
                ));
            }
            let config = doc
                .config
                .as_ref()
                .ok_or_else(|| Error::ManifestInvalid("config is required".into()))?;
            blobs.push((descriptor_digest(config, "config")?, ReferenceKind::Config));
            let layers = doc
                .layers
                .as_ref()
                .ok_or_else(|| Error::ManifestInvalid("layers is required".into()))?;
            for (i, layer) in layers.iter().enumerate() {
                let d = descriptor_digest(layer, &format!("layers[{i}]"))?;
                if !is_external(layer) {
                    blobs.push((d, ReferenceKind::Layer));
                }
            }
            doc.artifact_type
                .clone()
                .filter(|a| !a.is_empty())
                .or_else(|| Some(config.media_type.clone()))
        }
        Kind::Index => {
            if doc.config.is_some() || doc.layers.is_some() {
                return Err(Error::ManifestInvalid(
                    "an index has no config or layers".into(),
                ));
            }
            let manifests = doc
                .manifests
                .as_ref()
                .ok_or_else(|| Error::ManifestInvalid("manifests is required".into()))?;
            for (i, m) in manifests.iter().enumerate() {
                children.push(descriptor_digest(m, &format!("manifests[{i}]"))?);
            }
            doc.artifact_type.clone().filter(|a| !a.is_empty())
        }
    };
    if let Some(a) = artifact_type.as_deref()
        && !valid_media_type(a)
    {
        return Err(Error::ManifestInvalid(format!(
            "artifactType {a:?} is not a media type"
        )));
    }
    let subject = doc
        .subject
        .as_ref()
        .map(|s| descriptor_digest(s, "subject"))
        .transpose()?;
    let annotations = doc
        .annotations
        .as_ref()
        .filter(|a| !a.is_empty())
        .map(|a| serde_json::to_string(a).expect("annotations serialize"));
    Ok(Checked {
        record: ManifestRecord {
            digest,
            media_type,
            artifact_type,
            subject,
            annotations,
            body,
            created_at: now_millis(),
        },
        blobs,
        children,
    })
}

/// Does the client's `Accept` list admit `media_type`? No list admits everything.
fn acceptable(accept: &[String], media_type: &str) -> bool {
    let listed: Vec<&str> = accept
        .iter()
        .flat_map(|h| h.split(','))
        .map(|m| m.split(';').next().unwrap_or_default().trim())
        .filter(|m| !m.is_empty())
        .collect();
    listed.is_empty()
        || listed.iter().any(|m| {
            *m == media_type || *m == "*/*" || *m == "application/*" || *m == "application/json"
        })
}

impl Registry {
    /// Stores a manifest pushed to `reference`, tagging it with the reference (when
    /// a tag) and `extra_tags`. A pack pushed into a pack repository is indexed in the
    /// same transaction (see `packs.rs`).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: &[Tag],
    ) -> Result<ManifestPushed> {
        self.put_manifest_as(repo, reference, content_type, body, extra_tags, false)
            .await
    }

    /// [`put_manifest`](Self::put_manifest); with `create_pack`, the manifest must be a
    /// pack to index whose version and tag do not exist yet ([`Error::PackConflict`]
    /// otherwise, storing nothing).
    pub(super) async fn put_manifest_as(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: &[Tag],
        create_pack: bool,
    ) -> Result<ManifestPushed> {
        if body.len() as u64 > self.limits.max_manifest_bytes {
            return Err(Error::TooLarge {
                what: "manifest",
                limit: self.limits.max_manifest_bytes,
            });
        }
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &body);
                if &actual != expected {
                    return Err(Error::DigestInvalid(format!(
                        "manifest digest {actual} does not match {expected}"
                    )));
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
        };
        let checked = check(content_type, body, digest)?;
        let mut missing = self
            .meta
            .missing_blobs(
                repo,
                &checked
                    .blobs
                    .iter()
                    .map(|(d, _)| d.clone())
                    .collect::<Vec<_>>(),
            )
            .await?;
        missing.extend(self.meta.missing_manifests(repo, &checked.children).await?);
        if !missing.is_empty() {
            return Err(Error::ManifestBlobUnknown(missing));
        }
        let mut tags: Vec<Tag> = Vec::with_capacity(extra_tags.len() + 1);
        if let Reference::Tag(t) = reference {
            tags.push(t.clone());
        }
        for t in extra_tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        let mut references = checked.blobs.clone();
        references.extend(
            checked
                .children
                .iter()
                .map(|d| (d.clone(), ReferenceKind::Manifest)),
        );
        let pack = self
            .pack_for_manifest(repo, &checked.record.digest, &checked.record.body, &tags)
            .await?;
        match pack {
            Some(pack) => self
                .meta
                .put_pack_manifest(
                    repo,
                    &checked.record,
                    &references,
                    &tags,
                    &pack,
                    create_pack,
                )
                .await
                .map_err(|e| match e {
                    MetadataError::Conflict => Error::PackConflict(format!(
                        "version {} of {} exists already",
                        pack.version, pack.pack_id
                    )),
                    other => other.into(),
                })?,
            None if create_pack => {
                return Err(Error::Internal(
                    "a published pack manifest was not recognised as a pack".into(),
                ));
            }
            None => {
                self.meta
                    .put_manifest(repo, &checked.record, &references, &tags)
                    .await?
            }
        }
        Ok(ManifestPushed {
            digest: checked.record.digest,
            subject: checked.record.subject,
            tags,
        })
    }

    /// A manifest by tag or digest, if the client's `Accept` admits its media type.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &[String],
    ) -> Result<ManifestRecord> {
        let found = match reference {
            Reference::Digest(d) => self.meta.get_manifest(repo, d).await?,
            Reference::Tag(t) => self.meta.get_manifest_by_tag(repo, t).await?,
        };
        let record = found.ok_or(Error::ManifestUnknown)?;
        if !acceptable(accept, &record.media_type) {
            return Err(Error::ManifestNotAcceptable(record.media_type));
        }
        Ok(record)
    }

    /// Deletes a tag (the manifest stays), or a manifest and every tag on it.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let existed = match reference {
            Reference::Tag(t) => self.meta.delete_tag(repo, t).await?,
            Reference::Digest(d) => self.meta.delete_manifest(repo, d).await?,
        };
        if existed {
            Ok(())
        } else {
            Err(Error::ManifestUnknown)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(body: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, body)
    }

    #[test]
    fn media_type_comes_from_body_then_header_then_shape() {
        let body = Bytes::from_static(br#"{"schemaVersion":2,"manifests":[]}"#);
        let c = check(None, body.clone(), digest_of(&body)).unwrap();
        assert_eq!(c.record.media_type, OCI_INDEX);
        let c = check(Some(DOCKER_LIST), body.clone(), digest_of(&body)).unwrap();
        assert_eq!(c.record.media_type, DOCKER_LIST);
        let body = Bytes::from_static(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
        );
        assert!(matches!(
            check(Some(DOCKER_LIST), body.clone(), digest_of(&body)),
            Err(Error::ManifestInvalid(_))
        ));
    }

    #[test]
    fn artifact_type_falls_back_to_config_media_type() {
        let body = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/x-cfg","digest":"{}","size":2}},"layers":[]}}"#,
            digest_of(b"{}")
        ));
        let c = check(None, body.clone(), digest_of(&body)).unwrap();
        assert_eq!(c.record.artifact_type.as_deref(), Some("application/x-cfg"));
        assert_eq!(c.blobs.len(), 1);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"not json"[..],
            br#"{"schemaVersion":1}"#,
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#,
            br#"{"schemaVersion":2,"mediaType":"text/plain","manifests":[]}"#,
            br#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:nothex","size":1}]}"#,
        ] {
            let body = Bytes::copy_from_slice(bad);
            assert!(
                matches!(check(None, body.clone(), digest_of(&body)), Err(Error::ManifestInvalid(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn media_types_follow_rfc_6838() {
        for ok in [
            OCI_MANIFEST,
            "application/vnd.stellaops.pack.content.v1.tar+gzip",
            "text/plain; charset=utf-8",
            "application/x-cfg",
        ] {
            assert!(valid_media_type(ok), "{ok}");
        }
        for bad in [
            "", "plain", "a/", "/b", "a/b\0", "a b/c", "a/b/c", "\u{e9}/x",
        ] {
            assert!(!valid_media_type(bad), "{bad:?}");
        }
    }

    #[test]
    fn accept_lists() {
        assert!(acceptable(&[], OCI_MANIFEST));
        assert!(acceptable(
            &[format!("{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.5")],
            OCI_MANIFEST
        ));
        assert!(!acceptable(&[DOCKER_MANIFEST.to_owned()], OCI_MANIFEST));
        assert!(acceptable(&["*/*".to_owned()], OCI_INDEX));
    }
}
