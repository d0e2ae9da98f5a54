//! Packs (DESIGN §6): the pack manifest and its rules, publishing a pack as an OCI
//! artifact in `<prefix><packId>` under the tag `<version>`, and the packs index that
//! `/packs` reads.
//!
//! Whichever API a pack arrives through, one function decides what is indexed:
//! [`Registry::pack_for_manifest`](super::Registry), called by `put_manifest` for every
//! manifest pushed into a pack repository. `publish_pack` (the `/packs` POST) validates
//! everything and builds its OCI manifest before anything is stored, then makes the
//! content and config bytes durable and stores links, manifest, tag and index row in
//! one transaction, so a pack published through `/packs` and one pushed with `oras` are
//! indexed by the same code, and a publish that fails leaves nothing visible.
//!
//! One file per concern: `manifest.rs` (the pack manifest schema, its rules, RFC 3339
//! dates), `version.rs` (semver, tags of versions, sort keys), `index.rs` (what a
//! pushed manifest indexes), `publish.rs` (`POST /packs`), `resolve.rs` (dependency
//! resolution, requirement matching, listing and reads).
//!
//! Deletes need no code here: index rows go with their tag or manifest in the database
//! (`ON DELETE CASCADE`), and the per-pack summary follows by trigger.

mod index;
mod manifest;
mod publish;
mod resolve;
mod version;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::metadata::PackVersionRecord;

pub use index::search_text;
pub use manifest::{
    PackDependency, PackManifest, ValidPack, format_rfc3339, parse_rfc3339, valid_pack_id,
    validate, validate_manifest,
};
pub use version::{parse_version, sort_key, version_tag};

/// Media type of the config blob: the pack manifest JSON.
pub const PACK_CONFIG: &str = "application/vnd.stellaops.pack.config.v1+json";
/// Default media type of the content layer.
pub const PACK_CONTENT: &str = "application/vnd.stellaops.pack.content.v1.tar+gzip";
/// Longest pack id (a DNS label).
pub const MAX_PACK_ID: usize = 63;
/// Largest pack config blob read back when indexing a push.
pub(crate) const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Shortest search text `list_packs` accepts.
pub const MIN_QUERY_CHARS: usize = 3;
/// Most packs a dependency check visits.
pub(crate) const MAX_DEPENDENCY_NODES: usize = 1000;

/// Settings of the packs facade and index.
#[derive(Debug, Clone)]
pub struct PackSettings {
    /// Repository prefix of packs: pack `x` lives in `<prefix>x`.
    pub prefix: String,
    /// Largest pack content accepted by `publish_pack`, in bytes (0: no limit).
    pub max_content_bytes: u64,
    /// Default page size of pack listings.
    pub default_page: u32,
    /// Largest page size of pack listings.
    pub max_page: u32,
}

impl Default for PackSettings {
    fn default() -> Self {
        PackSettings {
            prefix: "packs/".into(),
            max_content_bytes: 1024 * 1024 * 1024,
            default_page: 100,
            max_page: 1000,
        }
    }
}

/// The four kinds of pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackType {
    /// Policy rule pack.
    Policy,
    /// Scanner analyzer pack.
    Analyzer,
    /// TaskRunner task definitions.
    Task,
    /// A composite of other packs (its `members`).
    Bundle,
}

impl PackType {
    /// Every type, in documentation order.
    pub const ALL: [PackType; 4] = [
        PackType::Policy,
        PackType::Analyzer,
        PackType::Task,
        PackType::Bundle,
    ];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PackType::Policy => "policy",
            PackType::Analyzer => "analyzer",
            PackType::Task => "task",
            PackType::Bundle => "bundle",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(s: &str) -> Option<PackType> {
        PackType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The manifest `artifactType` of packs of this type.
    pub fn artifact_type(self) -> String {
        format!("application/vnd.stellaops.pack.{}.v1", self.as_str())
    }

    /// The type named by a pack `artifactType`.
    pub fn from_artifact_type(artifact_type: &str) -> Option<PackType> {
        artifact_type
            .strip_prefix("application/vnd.stellaops.pack.")
            .and_then(|rest| rest.strip_suffix(".v1"))
            .and_then(PackType::parse)
    }
}

/// Pack content streamed, hashed and stored in a staging area, not yet visible.
#[derive(Debug)]
pub struct PackContent(super::uploads::StagedBlob);

impl PackContent {
    /// Digest of the content.
    pub fn digest(&self) -> &Digest {
        &self.0.digest
    }
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct PublishedPack {
    /// `false` when the same version with the same content was already published.
    pub created: bool,
    /// The indexed version.
    pub record: PackVersionRecord,
}
