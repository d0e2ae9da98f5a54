//! Manifests and indexes: validation on push (schema, media type, references that
//! must exist with the sizes their descriptors declare), exact-bytes storage, tag
//! moves, and deletion.
//!
//! A pushed document is read with `oci-spec`'s types (`ImageManifest`, `ImageIndex`,
//! `Descriptor`), after the checks that name what is wrong in the registry's own words
//! (schema version, media type against `Content-Type`, which fields a kind has). The
//! typed value is only read: the bytes stored and served are the client's.

use std::collections::BTreeMap;

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use serde_json::Value;

use super::{Error, Registry, Result};
use crate::digest::{Algorithm, Digest};
use crate::metadata::{ManifestRecord, MetadataError, ReferenceKind, now_millis};

/// How many times a manifest push is made when garbage collection keeps removing
/// what it writes under it.
const PUSH_ATTEMPTS: u32 = 4;
use crate::names::{Reference, RepoName, Tag};

/// Manifest media types as text, for headers and bodies the HTTP layer writes.
///
/// `oci-spec` names the OCI types as [`MediaType`] variants (the domain matches on
/// those) and Docker's only through its `ToDockerV2S2` conversion, neither usable where
/// a `&'static str` is needed; the unit test `media_types_are_oci_specs` ties these to
/// it.
pub mod media_types {
    /// OCI image manifest ([`MediaType::ImageManifest`](oci_spec::image::MediaType)).
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index ([`MediaType::ImageIndex`](oci_spec::image::MediaType)).
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// The empty config of artifacts (`{}`) ([`MediaType::EmptyJSON`](oci_spec::image::MediaType)).
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
}

use media_types::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Index,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match MediaType::from(media_type) {
        MediaType::ImageManifest => Some(Kind::Image),
        MediaType::ImageIndex => Some(Kind::Index),
        MediaType::Other(m) if m == DOCKER_MANIFEST => Some(Kind::Image),
        MediaType::Other(m) if m == DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// A pushed document, as `oci-spec` reads it.
pub(super) enum Parsed {
    /// An image manifest (OCI or Docker schema 2).
    Image(Box<ImageManifest>),
    /// An index (OCI image index or Docker manifest list).
    Index,
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

/// Something a manifest references that must exist in the repository.
#[derive(Debug, Clone)]
pub(super) struct Referenced {
    /// Where in the document (`config`, `layers[2]`, `manifests[0]`).
    pub field: String,
    /// Its digest.
    pub digest: Digest,
    /// The size its descriptor declares.
    pub size: u64,
    /// What it is to the manifest.
    pub kind: ReferenceKind,
}

/// A manifest parsed and checked, ready to store once its references are verified.
pub(super) struct Checked {
    pub record: ManifestRecord,
    /// The document as read.
    pub parsed: Parsed,
    /// Blobs (config, layers other than external ones).
    pub blobs: Vec<Referenced>,
    /// Child manifests of an index.
    pub children: Vec<Referenced>,
}

impl Checked {
    /// Every reference, as the metadata store records them.
    pub fn references(&self) -> Vec<(Digest, ReferenceKind)> {
        self.blobs
            .iter()
            .chain(&self.children)
            .map(|r| (r.digest.clone(), r.kind))
            .collect()
    }
}

/// A media type as RFC 6838 spells it: `type/subtype`, both of restricted-name
/// characters, optionally followed by `;` parameters of visible ASCII.
pub(super) fn valid_media_type(m: &str) -> bool {
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

fn invalid(message: impl Into<String>) -> Error {
    Error::ManifestInvalid(message.into())
}

/// The registry's own checks of a descriptor `oci-spec` has read: a media type per
/// RFC 6838, and a digest of an algorithm the registry supports (sha256, sha512).
fn descriptor_digest(d: &Descriptor, field: &str) -> Result<Digest> {
    let media_type = d.media_type().as_ref();
    if !valid_media_type(media_type) {
        return Err(invalid(format!(
            "{field}: mediaType {media_type:?} is not a media type"
        )));
    }
    Digest::parse(d.digest().as_ref()).map_err(|e| invalid(format!("{field}: {e}")))
}

fn referenced(d: &Descriptor, field: String, kind: ReferenceKind) -> Result<Referenced> {
    Ok(Referenced {
        digest: descriptor_digest(d, &field)?,
        size: d.size(),
        field,
        kind,
    })
}

/// Layers a registry is not expected to hold (Docker foreign layers, OCI
/// non-distributable layers with external `urls`).
fn is_external(d: &Descriptor) -> bool {
    let media_type = d.media_type().as_ref();
    d.urls().as_ref().is_some_and(|u| !u.is_empty())
        && (media_type.contains("foreign") || media_type.contains("nondistributable"))
}

/// Whether a top-level field is present (JSON `null` counting as absent).
fn present(doc: &serde_json::Map<String, Value>, key: &str) -> bool {
    doc.get(key).is_some_and(|v| !v.is_null())
}

/// Why `oci-spec` refused a document, in the registry's words where the fault is in a
/// descriptor (the first one at fault, named), else in `oci-spec`'s.
fn refused(doc: &serde_json::Map<String, Value>, kind: Kind, e: serde_json::Error) -> Error {
    let list = |key: &str| -> Vec<(String, &Value)> {
        match doc.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("{key}[{i}]"), d))
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut descriptors: Vec<(String, &Value)> = Vec::new();
    match kind {
        Kind::Image => {
            if let Some(c) = doc.get("config") {
                descriptors.push(("config".into(), c));
            }
            descriptors.extend(list("layers"));
        }
        Kind::Index => descriptors.extend(list("manifests")),
    }
    if let Some(s) = doc.get("subject").filter(|s| !s.is_null()) {
        descriptors.push(("subject".into(), s));
    }
    for (field, d) in descriptors {
        if let Some(why) = descriptor_fault(d) {
            return invalid(format!("{field}: {why}"));
        }
    }
    let what = match kind {
        Kind::Image => "an image manifest",
        Kind::Index => "an index",
    };
    invalid(format!("not {what}: {e}"))
}

/// What is wrong with the required fields of a descriptor as JSON, if anything.
fn descriptor_fault(d: &Value) -> Option<String> {
    let Some(d) = d.as_object() else {
        return Some("a descriptor is a JSON object".into());
    };
    match d.get("mediaType") {
        Some(Value::String(m)) if valid_media_type(m) => {}
        Some(Value::String(m)) => return Some(format!("mediaType {m:?} is not a media type")),
        _ => return Some("mediaType is required, as a string".into()),
    }
    match d.get("digest") {
        Some(Value::String(digest)) => {
            if let Err(e) = Digest::parse(digest) {
                return Some(e.to_string());
            }
        }
        _ => return Some("digest is required, as a string".into()),
    }
    match d.get("size") {
        Some(size) if size.as_i64().is_some_and(|s| s < 0) => Some("size is negative".into()),
        Some(size) if size.is_u64() => None,
        _ => Some("size is required, as a whole number of bytes".into()),
    }
}

pub(super) fn check(content_type: Option<&str>, body: Bytes, digest: Digest) -> Result<Checked> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("not a manifest JSON document: {e}")))?;
    let Some(doc) = value.as_object() else {
        return Err(invalid("not a manifest JSON document: not an object"));
    };
    if doc.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let body_media_type = match doc.get("mediaType") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => Some(m.as_str()),
        Some(_) => return Err(invalid("mediaType must be a string")),
    };
    // The media type: the body's own field wins; else the Content-Type; else by shape.
    let declared = content_type
        .map(|c| c.split(';').next().unwrap_or_default().trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (body_media_type, declared) {
        (Some(body_mt), Some(header)) if body_mt != header => {
            return Err(invalid(format!(
                "mediaType {body_mt} does not match Content-Type {header}"
            )));
        }
        (Some(mt), _) | (None, Some(mt)) => mt.to_owned(),
        (None, None) if present(doc, "manifests") => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    let kind = kind_of(&media_type)
        .ok_or_else(|| invalid(format!("unsupported manifest media type {media_type}")))?;

    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let (parsed, artifact_type, subject, annotations) = match kind {
        Kind::Image => {
            if present(doc, "manifests") {
                return Err(invalid("an image manifest has no manifests field"));
            }
            if !present(doc, "config") {
                return Err(invalid("config is required"));
            }
            if !present(doc, "layers") {
                return Err(invalid("layers is required"));
            }
            let m = ImageManifest::deserialize(&value).map_err(|e| refused(doc, kind, e))?;
            blobs.push(referenced(
                m.config(),
                "config".into(),
                ReferenceKind::Config,
            )?);
            for (i, layer) in m.layers().iter().enumerate() {
                let r = referenced(layer, format!("layers[{i}]"), ReferenceKind::Layer)?;
                if !is_external(layer) {
                    blobs.push(r);
                }
            }
            let artifact_type = m
                .artifact_type()
                .as_ref()
                .map(|a| a.to_string())
                .filter(|a| !a.is_empty())
                .or_else(|| Some(m.config().media_type().to_string()));
            let subject = m.subject().clone();
            let annotations = m.annotations().clone();
            (
                Parsed::Image(Box::new(m)),
                artifact_type,
                subject,
                annotations,
            )
        }
        Kind::Index => {
            if present(doc, "config") || present(doc, "layers") {
                return Err(invalid("an index has no config or layers"));
            }
            if !present(doc, "manifests") {
                return Err(invalid("manifests is required"));
            }
            let m = ImageIndex::deserialize(&value).map_err(|e| refused(doc, kind, e))?;
            for (i, child) in m.manifests().iter().enumerate() {
                children.push(referenced(
                    child,
                    format!("manifests[{i}]"),
                    ReferenceKind::Manifest,
                )?);
            }
            let artifact_type = m
                .artifact_type()
                .as_ref()
                .map(|a| a.to_string())
                .filter(|a| !a.is_empty());
            let subject = m.subject().clone();
            let annotations = m.annotations().clone();
            (Parsed::Index, artifact_type, subject, annotations)
        }
    };
    if let Some(a) = artifact_type.as_deref()
        && !valid_media_type(a)
    {
        return Err(invalid(format!("artifactType {a:?} is not a media type")));
    }
    let subject = subject
        .as_ref()
        .map(|s| descriptor_digest(s, "subject"))
        .transpose()?;
    // Sorted, so that equal annotations are stored as equal text.
    let annotations = annotations
        .filter(|a| !a.is_empty())
        .and_then(|a| serde_json::to_string(&a.into_iter().collect::<BTreeMap<_, _>>()).ok());
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
        parsed,
        blobs,
        children,
    })
}

/// Validates a manifest or index as a push would, without storing anything: the
/// JSON, its media type (from the body, else `content_type`), descriptors, digests.
/// (What it references is not looked up.)
pub fn validate_manifest_bytes(content_type: Option<&str>, body: &[u8]) -> Result<()> {
    let digest = Digest::of(Algorithm::Sha256, body);
    check(content_type, Bytes::copy_from_slice(body), digest).map(|_| ())
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

/// Checks that what a manifest references exists, with the sizes its descriptors
/// declare: `blob_sizes` and `child_sizes` hold the sizes found for `checked.blobs` and
/// `checked.children`, in order (`None`: not in the repository).
pub(super) fn verify_sizes(
    checked: &Checked,
    blob_sizes: &[Option<u64>],
    child_sizes: &[Option<u64>],
) -> Result<()> {
    let blobs = checked.blobs.iter().zip(blob_sizes);
    let children = checked.children.iter().zip(child_sizes);
    let missing: Vec<Digest> = blobs
        .clone()
        .chain(children.clone())
        .filter(|(_, found)| found.is_none())
        .map(|(r, _)| r.digest.clone())
        .collect();
    if !missing.is_empty() {
        return Err(Error::ManifestBlobUnknown(missing));
    }
    for ((r, found), what) in blobs
        .map(|b| (b, "blob"))
        .chain(children.map(|c| (c, "manifest")))
    {
        if let Some(actual) = *found
            && actual != r.size
        {
            return Err(Error::ManifestInvalid(format!(
                "{}: size {} does not match the {what}'s {actual} bytes",
                r.field, r.size
            )));
        }
    }
    Ok(())
}

impl Registry {
    /// Checks that the blobs and child manifests `checked` references are in `repo`
    /// with the sizes their descriptors declare (the subject is exempt: it may not
    /// exist). One query for the blobs, one for the children of an index.
    async fn verify_references(&self, repo: &RepoName, checked: &Checked) -> Result<()> {
        let digests =
            |refs: &[Referenced]| refs.iter().map(|r| r.digest.clone()).collect::<Vec<_>>();
        let blob_sizes = self
            .meta
            .linked_blob_sizes(repo, &digests(&checked.blobs))
            .await?;
        let child_sizes = self
            .meta
            .manifest_sizes(repo, &digests(&checked.children))
            .await?;
        verify_sizes(checked, &blob_sizes, &child_sizes)
    }

    /// Stores a manifest pushed to `reference`, tagging it with the reference (when
    /// a tag) and `extra_tags`. A pack pushed into a pack repository is indexed in the
    /// same transaction (see `packs/index.rs`).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: &[Tag],
    ) -> Result<ManifestPushed> {
        if extra_tags.len() > self.limits.max_tags_per_push {
            return Err(Error::TooManyTags {
                count: extra_tags.len(),
                limit: self.limits.max_tags_per_push,
            });
        }
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
        self.verify_references(repo, &checked).await?;
        let mut tags: Vec<Tag> = Vec::with_capacity(extra_tags.len() + 1);
        if let Reference::Tag(t) = reference {
            tags.push(t.clone());
        }
        for t in extra_tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        let references = checked.references();
        let immutable = self.immutable_tags(repo, &tags);
        let pack = match &checked.parsed {
            Parsed::Image(m) => {
                self.pack_for_manifest(repo, &checked.record, m, &tags, None)
                    .await?
            }
            Parsed::Index => None,
        };
        // The recovery journal first, as bytes go before the rows that name them.
        self.journal_push(repo, &checked.record, &tags).await?;
        // A reference collected after the check above makes the store refuse the push
        // as a whole (see `ManifestIndex::put_manifest`): checked again, a missing one
        // is the client's to push again; otherwise (the manifest itself was collected
        // under the push) the push is simply made again.
        let mut attempt = 0;
        loop {
            let stored = match &pack {
                Some(pack) => {
                    self.meta
                        .put_pack_manifest(
                            repo,
                            &checked.record,
                            &references,
                            &tags,
                            pack,
                            false,
                            &[],
                            &self.bytes(),
                            &immutable,
                        )
                        .await
                }
                None => {
                    self.meta
                        .put_manifest(repo, &checked.record, &references, &tags, &immutable)
                        .await
                }
            };
            match stored {
                Ok(()) => break,
                Err(MetadataError::ReferenceGone) => {
                    self.verify_references(repo, &checked).await?;
                    attempt += 1;
                    if attempt >= PUSH_ATTEMPTS {
                        return Err(Error::Busy {
                            detail: "a manifest push kept racing with garbage collection".into(),
                            retry_after_secs: 1,
                        });
                    }
                }
                Err(MetadataError::TagImmutable) => {
                    return Err(Error::TagImmutable(format!(
                        "tag {} of {repo} is immutable: it names a released version, and \
                         pointing it at other content would change what was released \
                         (delete the tag first to replace it)",
                        immutable
                            .iter()
                            .map(Tag::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(ManifestPushed {
            digest: checked.record.digest,
            subject: checked.record.subject,
            tags,
        })
    }

    /// Of `tags`, those that may never move once set: version tags (semver, `_` for
    /// `+`) in a repository `tags.immutable` covers.
    pub(super) fn immutable_tags(&self, repo: &RepoName, tags: &[Tag]) -> Vec<Tag> {
        let covered = self.limits.immutable_tags.iter().any(|p| {
            p == "*"
                || (p.ends_with('/') && repo.as_str().starts_with(p.as_str()))
                || p == repo.as_str()
        });
        if !covered {
            return Vec::new();
        }
        tags.iter()
            .filter(|t| super::packs::parse_version(&t.as_str().replace('_', "+")).is_some())
            .cloned()
            .collect()
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
        match reference {
            Reference::Tag(t) => self.journal_untag(repo, t.as_str()).await?,
            Reference::Digest(d) => self.journal_drop(repo, d, true).await?,
        }
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

    /// What clients push, in the shape each writes (field order, spacing, the fields it
    /// sets; `testdata/`): accepted as they are, their bytes kept exactly.
    #[test]
    fn client_manifests_go_in_unchanged() {
        struct Case {
            file: &'static str,
            content_type: Option<&'static str>,
            media_type: &'static str,
            artifact_type: Option<&'static str>,
            blobs: usize,
            children: usize,
            subject: bool,
        }
        let cases = [
            Case {
                file: "docker-image.json",
                content_type: Some(DOCKER_MANIFEST),
                media_type: DOCKER_MANIFEST,
                artifact_type: Some("application/vnd.docker.container.image.v1+json"),
                blobs: 4,
                children: 0,
                subject: false,
            },
            Case {
                file: "docker-list.json",
                content_type: Some(DOCKER_LIST),
                media_type: DOCKER_LIST,
                artifact_type: None,
                blobs: 0,
                children: 2,
                subject: false,
            },
            // The foreign layer lives elsewhere: only config and the second layer must exist.
            Case {
                file: "docker-foreign.json",
                content_type: Some(DOCKER_MANIFEST),
                media_type: DOCKER_MANIFEST,
                artifact_type: Some("application/vnd.docker.container.image.v1+json"),
                blobs: 2,
                children: 0,
                subject: false,
            },
            Case {
                file: "skopeo-oci.json",
                content_type: Some(OCI_MANIFEST),
                media_type: OCI_MANIFEST,
                artifact_type: Some("application/vnd.oci.image.config.v1+json"),
                blobs: 2,
                children: 0,
                subject: false,
            },
            Case {
                file: "skopeo-index.json",
                content_type: Some(OCI_INDEX),
                media_type: OCI_INDEX,
                artifact_type: None,
                blobs: 0,
                children: 3,
                subject: false,
            },
            Case {
                file: "oras-push.json",
                content_type: Some(OCI_MANIFEST),
                media_type: OCI_MANIFEST,
                artifact_type: Some("application/vnd.stellaops.pack.policy.v1"),
                blobs: 2,
                children: 0,
                subject: false,
            },
            Case {
                file: "oras-attach.json",
                content_type: Some(OCI_MANIFEST),
                media_type: OCI_MANIFEST,
                artifact_type: Some("application/spdx+json"),
                blobs: 2,
                children: 0,
                subject: true,
            },
            // Helm leaves mediaType out of the body and sends it as the Content-Type.
            Case {
                file: "helm-chart.json",
                content_type: Some(OCI_MANIFEST),
                media_type: OCI_MANIFEST,
                artifact_type: Some("application/vnd.cncf.helm.config.v1+json"),
                blobs: 2,
                children: 0,
                subject: false,
            },
            Case {
                file: "helm-chart.json",
                content_type: None,
                media_type: OCI_MANIFEST,
                artifact_type: Some("application/vnd.cncf.helm.config.v1+json"),
                blobs: 2,
                children: 0,
                subject: false,
            },
            // A non-distributable layer with urls, a sha512 layer, unknown fields.
            Case {
                file: "oci-nondistributable.json",
                content_type: Some(OCI_MANIFEST),
                media_type: OCI_MANIFEST,
                artifact_type: Some("application/vnd.oci.image.config.v1+json"),
                blobs: 2,
                children: 0,
                subject: false,
            },
        ];
        for case in cases {
            let path = format!(
                "{}/src/registry/testdata/{}",
                env!("CARGO_MANIFEST_DIR"),
                case.file
            );
            let body = Bytes::from(std::fs::read(&path).unwrap());
            let c = check(case.content_type, body.clone(), digest_of(&body))
                .unwrap_or_else(|e| panic!("{}: {e}", case.file));
            assert_eq!(c.record.body, body, "{}: the bytes as pushed", case.file);
            assert_eq!(c.record.media_type, case.media_type, "{}", case.file);
            assert_eq!(
                c.record.artifact_type.as_deref(),
                case.artifact_type,
                "{}",
                case.file
            );
            assert_eq!(c.blobs.len(), case.blobs, "{}", case.file);
            assert_eq!(c.children.len(), case.children, "{}", case.file);
            assert_eq!(c.record.subject.is_some(), case.subject, "{}", case.file);
            let raw: Value = serde_json::from_slice(&body).unwrap();
            for r in c.blobs.iter().chain(&c.children) {
                let d = field(&raw, &r.field);
                assert_eq!(d["digest"], r.digest.as_str(), "{}: {}", case.file, r.field);
                assert_eq!(d["size"], r.size, "{}: {}", case.file, r.field);
            }
            if let Some(a) = &c.record.annotations {
                let stored: Value = serde_json::from_str(a).unwrap();
                assert_eq!(stored, raw["annotations"], "{}", case.file);
            }
        }
    }

    /// The descriptor at `field` (`config`, `layers[1]`) of a raw document.
    fn field<'a>(doc: &'a Value, field: &str) -> &'a Value {
        match field.split_once('[') {
            Some((key, i)) => &doc[key][i.trim_end_matches(']').parse::<usize>().unwrap()],
            None => &doc[field],
        }
    }

    fn with_layer(layer: Value) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_EMPTY, "digest": digest_of(b"{}").as_str(), "size": 2},
                "layers": [layer],
            }))
            .unwrap(),
        )
    }

    fn refusal(body: Bytes) -> String {
        match check(Some(OCI_MANIFEST), body.clone(), digest_of(&body)) {
            Err(Error::ManifestInvalid(m)) => m,
            Err(e) => panic!("not MANIFEST_INVALID: {e}"),
            Ok(_) => panic!("accepted: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// Where `oci-spec` and the registry differ (ARCHITECTURE.md, "Differences"): the
    /// registry's rule holds, in its words.
    #[test]
    fn oci_spec_differences() {
        use std::str::FromStr;
        let hex96 = "a".repeat(96);
        // oci-spec reads any registered or unregistered algorithm; the registry stores
        // and verifies sha256 and sha512 only (DESIGN §8), so a descriptor naming
        // another cannot refer to anything it holds.
        for digest in [
            format!("sha384:{hex96}"),
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8".into(),
        ] {
            assert!(
                oci_spec::image::Digest::from_str(&digest).is_ok(),
                "{digest}"
            );
            let m = refusal(with_layer(
                serde_json::json!({"mediaType": OCI_EMPTY, "digest": digest, "size": 1}),
            ));
            assert!(m.starts_with("layers[0]: digest algorithm"), "{m}");
        }
        // Both refuse upper-case hex and short digests; the message is the registry's.
        let upper = digest_of(b"x")
            .as_str()
            .to_uppercase()
            .replace("SHA256", "sha256");
        assert!(oci_spec::image::Digest::from_str(&upper).is_err());
        assert_eq!(
            refusal(with_layer(
                serde_json::json!({"mediaType": OCI_EMPTY, "digest": upper, "size": 1})
            )),
            format!("layers[0]: digest {upper:?} has an invalid encoded part")
        );
        // A negative size: oci-spec's u64 refuses it; the registry names the field.
        assert_eq!(
            refusal(with_layer(
                serde_json::json!({"mediaType": OCI_EMPTY, "digest": digest_of(b"x").as_str(), "size": -1})
            )),
            "layers[0]: size is negative"
        );
        // oci-spec reads media types as any text; the registry holds them to RFC 6838.
        assert_eq!(
            refusal(with_layer(
                serde_json::json!({"mediaType": "application/vnd.acme~x", "digest": digest_of(b"x").as_str(), "size": 1})
            )),
            "layers[0]: mediaType \"application/vnd.acme~x\" is not a media type"
        );
        // Sizes past i64::MAX are read (u64); no stored blob has one, so the size check
        // against the blob refuses them later.
        let c = check(
            None,
            with_layer(
                serde_json::json!({"mediaType": OCI_EMPTY, "digest": digest_of(b"x").as_str(), "size": u64::MAX}),
            ),
            digest_of(b""),
        );
        assert_eq!(c.unwrap().blobs[1].size, u64::MAX);
        // oci-spec holds descriptors to the image spec where the old reading did not:
        // a platform without its required os, annotation values that are not strings.
        let index = |platform: Value| {
            Bytes::from(serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest_of(b"m").as_str(), "size": 1, "platform": platform}],
            })).unwrap())
        };
        let body = index(serde_json::json!({"architecture": "amd64"}));
        let Err(Error::ManifestInvalid(m)) = check(None, body.clone(), digest_of(&body)) else {
            panic!()
        };
        assert!(m.starts_with("not an index: missing field `os`"), "{m}");
        let m = refusal(with_layer(
            serde_json::json!({"mediaType": OCI_EMPTY, "digest": digest_of(b"x").as_str(), "size": 1, "annotations": {"n": 1}}),
        ));
        assert!(
            m.starts_with("not an image manifest: invalid type: integer `1`"),
            "{m}"
        );
    }

    #[test]
    fn media_types_are_oci_specs() {
        assert_eq!(MediaType::ImageManifest.as_ref(), OCI_MANIFEST);
        assert_eq!(MediaType::ImageIndex.as_ref(), OCI_INDEX);
        assert_eq!(MediaType::EmptyJSON.as_ref(), OCI_EMPTY);
        use oci_spec::image::ToDockerV2S2;
        assert_eq!(
            MediaType::ImageManifest.to_docker_v2s2().unwrap(),
            DOCKER_MANIFEST
        );
        assert_eq!(MediaType::ImageIndex.to_docker_v2s2().unwrap(), DOCKER_LIST);
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
