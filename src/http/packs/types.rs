//! The JSON of the packs API (camelCase), with the OpenAPI schemas generated from it,
//! and the conversions from the domain's records.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::metadata::{PackSummaryRecord, PackVersionRecord};
use crate::registry::packs::{PackDependency, format_rfc3339};

/// The four pack types.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[allow(dead_code)] // documentation only: types travel as validated strings
#[serde(rename_all = "lowercase")]
pub enum PackTypeDoc {
    /// Policy rule pack.
    Policy,
    /// Scanner analyzer pack.
    Analyzer,
    /// TaskRunner task definitions.
    Task,
    /// A composite of other packs.
    Bundle,
}

/// Another pack and a semver requirement it must satisfy.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// The pack depended on.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub pack_id: String,
    /// A semver requirement (`^1.2`, `~2.1`, `>=1, <3`).
    pub version: String,
}

impl From<PackDependency> for Dependency {
    fn from(d: PackDependency) -> Self {
        Dependency {
            pack_id: d.pack_id,
            version: d.version,
        }
    }
}

fn dependencies(json: &str) -> Vec<Dependency> {
    serde_json::from_str::<Vec<PackDependency>>(json)
        .unwrap_or_default()
        .into_iter()
        .map(Dependency::from)
        .collect()
}

/// A pack in a listing: the fields of its latest version.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackSummary {
    /// The pack's id.
    pub pack_id: String,
    /// Its type.
    #[serde(rename = "type")]
    #[schema(value_type = PackTypeDoc)]
    pub pack_type: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Author.
    pub author: String,
    /// The latest version: the highest release, or the highest prerelease when there is
    /// no release.
    pub latest_version: String,
    /// How many versions are published.
    pub versions: u64,
    /// When a version was last published or deleted (RFC 3339).
    pub updated_at: String,
}

impl From<PackSummaryRecord> for PackSummary {
    fn from(r: PackSummaryRecord) -> Self {
        PackSummary {
            pack_id: r.pack_id,
            pack_type: r.pack_type,
            name: r.name,
            description: r.description,
            author: r.author,
            latest_version: r.latest_version,
            versions: r.versions,
            updated_at: format_rfc3339(r.updated_at),
        }
    }
}

/// One version of a pack, in full: the pack manifest of the design plus where it lives.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pack {
    /// The pack's id.
    pub pack_id: String,
    /// The version.
    pub version: String,
    /// The type.
    #[serde(rename = "type")]
    #[schema(value_type = PackTypeDoc)]
    pub pack_type: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Author.
    pub author: String,
    /// Digest of the content a download returns.
    pub digest: String,
    /// Size of the content in bytes.
    pub size: u64,
    /// Media type of the content.
    pub media_type: String,
    /// When the version was published (RFC 3339).
    pub published_at: String,
    /// Packs this version needs.
    pub dependencies: Vec<Dependency>,
    /// Packs a bundle groups (empty for other types).
    pub members: Vec<Dependency>,
    /// Free-form metadata (`minRunnerVersion`, …).
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Whether the version is a prerelease.
    pub prerelease: bool,
    /// Digest of the OCI manifest (`<prefix><packId>:<version>` in `/v2`).
    pub manifest_digest: String,
    /// The OCI repository holding it.
    pub repository: String,
}

impl From<PackVersionRecord> for Pack {
    fn from(r: PackVersionRecord) -> Self {
        Pack {
            dependencies: dependencies(&r.dependencies),
            members: dependencies(&r.members),
            metadata: serde_json::from_str(&r.metadata).unwrap_or_default(),
            published_at: format_rfc3339(r.published_at),
            digest: r.content_digest.to_string(),
            manifest_digest: r.manifest_digest.to_string(),
            repository: r.repository.to_string(),
            pack_id: r.pack_id,
            version: r.version,
            pack_type: r.pack_type,
            name: r.name,
            description: r.description,
            author: r.author,
            size: r.size,
            media_type: r.content_media_type,
            prerelease: r.prerelease,
        }
    }
}

/// One version in a version listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    /// The version.
    pub version: String,
    /// Digest of its content.
    pub digest: String,
    /// Size of its content in bytes.
    pub size: u64,
    /// When it was published (RFC 3339).
    pub published_at: String,
    /// Whether it is a prerelease.
    pub prerelease: bool,
    /// Digest of its OCI manifest.
    pub manifest_digest: String,
}

impl From<PackVersionRecord> for Version {
    fn from(r: PackVersionRecord) -> Self {
        Version {
            version: r.version,
            digest: r.content_digest.to_string(),
            size: r.size,
            published_at: format_rfc3339(r.published_at),
            prerelease: r.prerelease,
            manifest_digest: r.manifest_digest.to_string(),
        }
    }
}

/// `GET /packs`
#[derive(Debug, Serialize, ToSchema)]
pub struct PackList {
    /// One page of packs, ordered by id.
    pub packs: Vec<PackSummary>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// `GET /packs/{id}`
#[derive(Debug, Serialize, ToSchema)]
pub struct PackResponse {
    /// The latest version.
    pub pack: Pack,
}

/// `GET /packs/{id}/versions`
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    /// Every version, highest semver precedence first.
    pub versions: Vec<Version>,
}

/// `POST /packs`
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// The pack's id.
    pub pack_id: String,
    /// The version published.
    pub version: String,
    /// Digest of the content.
    pub digest: String,
    /// Digest of the OCI manifest.
    pub manifest_digest: String,
}

/// `DELETE /packs/{id}/{version}`
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// Whether a version was deleted.
    pub deleted: bool,
}

/// The pack manifest a publish sends (DESIGN §6), as documentation: the server parses
/// it with the domain's own type. `digest`, `size` and `publishedAt` are optional;
/// when `digest` or `size` is given the content must match it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackManifestInput {
    /// Lower-case DNS-label-like id, at most 63 characters.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub pack_id: String,
    /// Semver 2.0 version.
    #[schema(
        pattern = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
    )]
    pub version: String,
    /// Type.
    #[serde(rename = "type")]
    pub pack_type: PackTypeDoc,
    /// Display name.
    #[schema(min_length = 1, max_length = 256)]
    pub name: String,
    /// Description.
    #[schema(max_length = 4096)]
    pub description: Option<String>,
    /// Author.
    #[schema(max_length = 256)]
    pub author: Option<String>,
    /// Digest of the content (checked when given).
    pub digest: Option<String>,
    /// Size of the content (checked when given).
    pub size: Option<u64>,
    /// Packs this one needs; each must resolve to a published version.
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    /// A bundle's members (required for bundles, refused for other types).
    #[serde(default)]
    pub members: Vec<Dependency>,
    /// Free-form metadata; `minRunnerVersion`, when present, is a semver version.
    // Optional as the server reads it (`serde(default)`, like the domain's type), not
    // nullable: a bare `value_type = Object` on an `Option` had the document require
    // it.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// The multipart form of `POST /packs`: `manifest` (best first) and `content`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)] // no other parts (additionalProperties: false)
#[allow(dead_code)] // documentation only: the body is parsed as a stream
pub struct PublishForm {
    /// The pack manifest, as JSON.
    pub manifest: PackManifestInput,
    /// The pack's content (streamed; a `.tar.gz` by default). A part `Content-Type`
    /// of `application/vnd.*` becomes the layer's media type.
    #[schema(value_type = String, format = Binary)]
    pub content: Vec<u8>,
}

/// A pack of an imported bundle.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedPack {
    /// The pack's id.
    pub pack_id: String,
    /// Its version.
    pub version: String,
    /// Its type.
    #[serde(rename = "type")]
    #[schema(value_type = PackTypeDoc)]
    pub pack_type: String,
    /// Digest of its content.
    pub digest: String,
    /// Digest of its OCI manifest.
    pub manifest_digest: String,
    /// Its repository.
    pub repository: String,
    /// Whether this import added it (`false`: the registry had it already).
    pub added: bool,
}

/// What `POST /packs/import` did.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Imported {
    /// `true` when the registry already held everything in the bundle: nothing changed.
    pub nothing_new: bool,
    /// The packs in the bundle.
    pub packs: Vec<ImportedPack>,
    /// Referrers (signatures, SBOMs, attestations) in the bundle.
    pub referrers: usize,
    /// Manifests stored anew (per repository).
    pub manifests_added: usize,
    /// Manifests the registry already held.
    pub manifests_present: usize,
    /// Blobs linked anew into a repository.
    pub blobs_added: usize,
    /// Blobs the repositories already held.
    pub blobs_present: usize,
    /// Bytes of blobs stored anew.
    pub bytes_added: u64,
    /// Tags added.
    pub tags_added: usize,
    /// Repositories the bundle writes.
    pub repositories: Vec<String>,
}

impl From<crate::registry::bundle::ImportReport> for Imported {
    fn from(r: crate::registry::bundle::ImportReport) -> Self {
        Imported {
            nothing_new: r.nothing_new(),
            packs: r
                .packs
                .into_iter()
                .map(|(p, added)| ImportedPack {
                    pack_id: p.pack_id,
                    version: p.version,
                    pack_type: p.pack_type,
                    digest: p.digest,
                    manifest_digest: p.manifest_digest,
                    repository: p.repository,
                    added,
                })
                .collect(),
            referrers: r.referrers,
            manifests_added: r.manifests_added,
            manifests_present: r.manifests_present,
            blobs_added: r.blobs_added,
            blobs_present: r.blobs_present,
            bytes_added: r.bytes_added,
            tags_added: r.tags_added,
            repositories: r.repositories,
        }
    }
}

/// A pack as `GET /packs/export` names it: `<id>@<version or semver requirement>`.
#[derive(Debug, Clone, ToSchema)]
#[allow(dead_code)] // documentation only: the handler reads query text
#[schema(value_type = String, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?@.+$")]
pub struct PackSpecDoc(String);

/// An archive as a request body: the bytes of a `.tar` or `.tar.gz` file.
#[derive(Debug, Clone, ToSchema)]
#[allow(dead_code)] // documentation only: the handler streams the body
#[schema(value_type = String, format = Binary)]
pub struct ArchiveDoc(Vec<u8>);
