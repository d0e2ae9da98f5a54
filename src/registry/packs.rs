//! Packs (DESIGN §6): the pack manifest and its rules, publishing a pack as an OCI
//! artifact in `<prefix><packId>` under the tag `<version>`, and the packs index that
//! `/packs` reads.
//!
//! Whichever API a pack arrives through, one function decides what is indexed:
//! [`Registry::pack_for_manifest`], called by `put_manifest` for every manifest pushed
//! into a pack repository. `publish_pack` (the `/packs` POST) stores the content and
//! config blobs and then pushes its manifest through that same path, so a pack published
//! through `/packs` and one pushed with `oras` are indexed by the same code, and the
//! manifest, its tag and the index row become visible in one transaction.
//!
//! Deletes need no code here: index rows go with their tag or manifest in the database
//! (`ON DELETE CASCADE`), and the per-pack summary follows by trigger.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::manifests::media_types::OCI_MANIFEST;
use super::{BlobRead, Error, Registry, Result};
use crate::digest::{Algorithm, Digest};
use crate::metadata::{PackFilter, PackSummaryRecord, PackVersionRecord, Page, now_millis};
use crate::names::{Reference, RepoName, Tag};
use crate::storage::ByteStream;

/// Media type of the config blob: the pack manifest JSON.
pub const PACK_CONFIG: &str = "application/vnd.stellaops.pack.config.v1+json";
/// Default media type of the content layer.
pub const PACK_CONTENT: &str = "application/vnd.stellaops.pack.content.v1.tar+gzip";
/// Longest pack id (a DNS label).
pub const MAX_PACK_ID: usize = 63;
/// Largest pack config blob read back when indexing a push.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Shortest search text `list_packs` accepts.
pub const MIN_QUERY_CHARS: usize = 3;
/// Most packs a dependency check visits.
const MAX_DEPENDENCY_NODES: usize = 1000;

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

/// A dependency (or bundle member): another pack and a semver requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackDependency {
    /// The pack depended on.
    pub pack_id: String,
    /// A semver requirement (`^1.2`, `~2.1`, `>=1, <3`, `1.2.3`).
    pub version: String,
}

/// The pack manifest (DESIGN §6), camelCase, as published and as stored in the config
/// blob. `digest`, `size` and `publishedAt` are filled in by the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackManifest {
    /// Lower-case DNS-label-like id.
    pub pack_id: String,
    /// Semver 2.0 version.
    pub version: String,
    /// `policy`, `analyzer`, `task` or `bundle`.
    #[serde(rename = "type")]
    pub pack_type: String,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Digest of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Size of the content in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// When the version was published (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Packs this one needs.
    #[serde(default)]
    pub dependencies: Vec<PackDependency>,
    /// Packs a bundle groups (bundles only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<PackDependency>,
    /// Free-form metadata; `minRunnerVersion`, when present, is a semver version.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// A pack manifest that passed every rule.
#[derive(Debug, Clone)]
pub struct ValidPack {
    /// The manifest as given.
    pub manifest: PackManifest,
    /// Its type.
    pub pack_type: PackType,
    /// Its version.
    pub version: semver::Version,
    /// The tag of its version.
    pub tag: Tag,
}

impl ValidPack {
    fn description(&self) -> &str {
        self.manifest.description.as_deref().unwrap_or_default()
    }

    fn author(&self) -> &str {
        self.manifest.author.as_deref().unwrap_or_default()
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

/// Is `id` a pack id: a lower-case DNS label (`[a-z0-9]`, inner `-`, at most 63)?
pub fn valid_pack_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_PACK_ID
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The tag of a version: the version with `+` (build metadata) written `_`, as Helm does.
pub fn version_tag(version: &semver::Version) -> Result<Tag, String> {
    Tag::parse(&version.to_string().replace('+', "_"))
        .map_err(|e| format!("version {version} cannot be a tag: {e}"))
}

/// Parses a version as written in a path or tag (`_` standing for `+`).
pub fn parse_version(s: &str) -> Option<semver::Version> {
    semver::Version::parse(&s.replace('_', "+")).ok()
}

/// Text whose byte order is semver precedence order (build metadata ignored): the three
/// numbers zero-padded to 20 digits, then `1` for a release or `0` and the prerelease
/// identifiers for a prerelease, each `b` + (`0` + 3-digit length + digits for a
/// numeric one, `1` + text + `!` for an alphanumeric one), ended by `a`.
pub fn sort_key(v: &semver::Version) -> String {
    let mut key = format!("{:020}.{:020}.{:020}.", v.major, v.minor, v.patch);
    if v.pre.is_empty() {
        key.push('1');
        return key;
    }
    key.push('0');
    for ident in v.pre.as_str().split('.') {
        key.push('b');
        if !ident.is_empty() && ident.bytes().all(|c| c.is_ascii_digit()) {
            key.push_str(&format!("0{:03}{ident}", ident.len()));
        } else {
            key.push('1');
            key.push_str(ident);
            key.push('!');
        }
    }
    key.push('a');
    key
}

/// The lower-cased text `q` searches.
pub fn search_text(pack_id: &str, name: &str, description: &str) -> String {
    format!("{pack_id}\n{name}\n{description}").to_lowercase()
}

/// Parses and checks a pack manifest. `Err(PackMalformed)` when it is not a JSON
/// object of the right shape, `Err(PackInvalid)` when it breaks a rule.
pub fn validate_manifest(json: &[u8]) -> Result<ValidPack> {
    let manifest: PackManifest = serde_json::from_slice(json).map_err(|e| {
        if e.is_data() {
            Error::PackInvalid(format!("pack manifest: {e}"))
        } else {
            Error::PackMalformed(format!("pack manifest is not JSON: {e}"))
        }
    })?;
    validate(manifest).map_err(Error::PackInvalid)
}

fn check_requirement(field: &str, d: &PackDependency) -> Result<semver::VersionReq, String> {
    if !valid_pack_id(&d.pack_id) {
        return Err(format!("{field}: {:?} is not a valid packId", d.pack_id));
    }
    semver::VersionReq::parse(&d.version).map_err(|e| {
        format!(
            "{field}: {:?} of {} is not a semver requirement: {e}",
            d.version, d.pack_id
        )
    })
}

/// Checks the rules of a parsed pack manifest.
pub fn validate(manifest: PackManifest) -> Result<ValidPack, String> {
    let m = &manifest;
    if !valid_pack_id(&m.pack_id) {
        return Err(format!(
            "packId {:?} must be 1 to {MAX_PACK_ID} lower-case letters, digits and inner hyphens",
            m.pack_id
        ));
    }
    let version = semver::Version::parse(&m.version)
        .map_err(|e| format!("version {:?} is not semver 2.0: {e}", m.version))?;
    let tag = version_tag(&version)?;
    let pack_type = PackType::parse(&m.pack_type).ok_or_else(|| {
        format!(
            "type {:?} must be one of policy, analyzer, task, bundle",
            m.pack_type
        )
    })?;
    if m.name.trim().is_empty() {
        return Err("name must not be empty".into());
    }
    for (field, value, max) in [
        ("name", Some(&m.name), 256),
        ("description", m.description.as_ref(), 4096),
        ("author", m.author.as_ref(), 256),
    ] {
        if value.is_some_and(|v| v.chars().count() > max) {
            return Err(format!("{field} is longer than {max} characters"));
        }
        // PostgreSQL text cannot hold NUL, and no pack needs one.
        if value.is_some_and(|v| v.contains('\0')) {
            return Err(format!("{field} must not contain a NUL character"));
        }
    }
    let mut seen = HashSet::new();
    for d in &m.dependencies {
        check_requirement("dependencies", d)?;
        if d.pack_id == m.pack_id {
            return Err(format!("dependencies: {} depends on itself", m.pack_id));
        }
        if !seen.insert(d.pack_id.as_str()) {
            return Err(format!("dependencies: {} is listed twice", d.pack_id));
        }
    }
    let mut seen = HashSet::new();
    for d in &m.members {
        check_requirement("members", d)?;
        if d.pack_id == m.pack_id {
            return Err(format!("members: {} contains itself", m.pack_id));
        }
        if !seen.insert(d.pack_id.as_str()) {
            return Err(format!("members: {} is listed twice", d.pack_id));
        }
    }
    match (pack_type, m.members.is_empty()) {
        (PackType::Bundle, true) => {
            return Err("a bundle lists its member packs in members".into());
        }
        (t, false) if t != PackType::Bundle => {
            return Err(format!(
                "members: only a bundle has members, not a {}",
                t.as_str()
            ));
        }
        _ => {}
    }
    if let Some(v) = m.metadata.get("minRunnerVersion") {
        let ok = v
            .as_str()
            .is_some_and(|s| semver::Version::parse(s).is_ok());
        if !ok {
            return Err(format!(
                "metadata.minRunnerVersion {v} must be a semver version string"
            ));
        }
    }
    if let Some(d) = &m.digest {
        Digest::parse(d).map_err(|e| format!("digest: {e}"))?;
    }
    if let Some(p) = &m.published_at
        && parse_rfc3339(p).is_none()
    {
        return Err(format!("publishedAt {p:?} is not an RFC 3339 date-time"));
    }
    Ok(ValidPack {
        pack_type,
        version,
        tag,
        manifest,
    })
}

// ---------------------------------------------------------------------------------
// RFC 3339 (UTC), without a date library

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (`.mmm` when not whole).
pub fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let (h, mi, se) = (s / 3600, s % 3600 / 60, s % 60);
    let frac = ms.rem_euclid(1000);
    if frac == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}.{frac:03}Z")
    }
}

/// Parses an RFC 3339 date-time (`Z` or `±HH:MM`, optional fraction) to milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 3)];
        ms = digits.parse::<i64>().ok()? * 10_i64.pow(3 - digits.len() as u32);
    }
    let offset = match &s[i..] {
        "Z" | "z" => 0,
        rest if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let sign = if &rest[..1] == "-" { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    Some(secs * 1000 + ms)
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

fn dependencies_json(deps: &[PackDependency]) -> String {
    serde_json::to_string(deps).expect("dependencies serialize")
}

impl Registry {
    /// The pack id of a repository in the packs prefix (`<prefix><packId>`), if it is one.
    pub fn pack_id_of(&self, repo: &RepoName) -> Option<String> {
        let id = repo.as_str().strip_prefix(self.packs.prefix.as_str())?;
        valid_pack_id(id).then(|| id.to_owned())
    }

    fn pack_repo(&self, pack_id: &str) -> Result<RepoName> {
        RepoName::parse(&format!("{}{pack_id}", self.packs.prefix))
            .map_err(|e| Error::PackInvalid(format!("packId {pack_id}: {e}")))
    }

    /// The index row for a manifest being pushed into `repo` under `tags`, if it is a
    /// pack to index. Called by `put_manifest` for every manifest; a pack artifact whose
    /// config is not a valid pack manifest is stored as a plain artifact and the reason
    /// logged. Fails only when storage cannot be read.
    pub(super) async fn pack_for_manifest(
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
        staged: &super::uploads::StagedBlob,
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

    /// Every dependency and member resolves to a published version, and following them
    /// (each to its newest matching version, this one included) never comes back.
    async fn check_dependencies(&self, pack: &ValidPack) -> Result<()> {
        let me = (pack.manifest.pack_id.clone(), pack.manifest.version.clone());
        let edges_of_me: Vec<PackDependency> = pack
            .manifest
            .dependencies
            .iter()
            .chain(&pack.manifest.members)
            .cloned()
            .collect();
        // Depth-first over (packId, version), with the path for cycle detection.
        let mut visited: HashSet<(String, String)> = HashSet::new();
        let mut stack: Vec<((String, String), Vec<PackDependency>, usize)> =
            vec![(me.clone(), edges_of_me, 0)];
        let mut on_path: Vec<(String, String)> = vec![me.clone()];
        while let Some((node, edges, next)) = stack.last_mut() {
            let Some(dep) = edges.get(*next).cloned() else {
                let node = node.clone();
                stack.pop();
                on_path.retain(|n| n != &node);
                visited.insert(node);
                continue;
            };
            *next += 1;
            let via = node.0.clone();
            let target = self.resolve_dependency(pack, &dep).await?.ok_or_else(|| {
                Error::PackInvalid(format!(
                    "{via} needs {} {}, and no published version matches",
                    dep.pack_id, dep.version
                ))
            })?;
            if on_path.contains(&target.0) {
                return Err(Error::PackInvalid(format!(
                    "dependency cycle: {} -> {}@{}",
                    on_path
                        .iter()
                        .map(|(p, v)| format!("{p}@{v}"))
                        .collect::<Vec<_>>()
                        .join(" -> "),
                    target.0.0,
                    target.0.1
                )));
            }
            if visited.contains(&target.0) {
                continue;
            }
            if visited.len() + stack.len() > MAX_DEPENDENCY_NODES {
                return Err(Error::PackInvalid(format!(
                    "more than {MAX_DEPENDENCY_NODES} packs in the dependency graph"
                )));
            }
            on_path.push(target.0.clone());
            stack.push((target.0, target.1, 0));
        }
        Ok(())
    }

    /// The newest version satisfying `dep` (the pack being published counting as
    /// published), with its own dependencies and members.
    #[allow(clippy::type_complexity)]
    async fn resolve_dependency(
        &self,
        publishing: &ValidPack,
        dep: &PackDependency,
    ) -> Result<Option<((String, String), Vec<PackDependency>)>> {
        let req = semver::VersionReq::parse(&dep.version)
            .map_err(|e| Error::PackInvalid(format!("{}: {e}", dep.version)))?;
        let mut best: Option<(semver::Version, (String, String), Vec<PackDependency>)> = None;
        if dep.pack_id == publishing.manifest.pack_id && req.matches(&publishing.version) {
            let edges = publishing
                .manifest
                .dependencies
                .iter()
                .chain(&publishing.manifest.members)
                .cloned()
                .collect();
            best = Some((
                publishing.version.clone(),
                (dep.pack_id.clone(), publishing.manifest.version.clone()),
                edges,
            ));
        }
        for v in self.meta.list_pack_versions(&dep.pack_id).await? {
            let Ok(parsed) = semver::Version::parse(&v.version) else {
                continue;
            };
            if !req.matches(&parsed) || best.as_ref().is_some_and(|(b, ..)| b >= &parsed) {
                continue;
            }
            let mut edges: Vec<PackDependency> =
                serde_json::from_str(&v.dependencies).unwrap_or_default();
            edges.extend(
                serde_json::from_str::<Vec<PackDependency>>(&v.members).unwrap_or_default(),
            );
            best = Some((parsed, (v.pack_id.clone(), v.version.clone()), edges));
        }
        Ok(best.map(|(_, node, edges)| (node, edges)))
    }

    // -----------------------------------------------------------------------------
    // Reading and deleting

    /// Packs matching `filter`, ordered by id, after the id `cursor`, at most `limit`
    /// (the configured default when `None`, capped at the configured maximum).
    pub async fn list_packs(
        &self,
        filter: &PackFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<PackSummaryRecord>> {
        // The cursor is the last id of the previous page: any text is a position. Ids
        // never hold a NUL (nor any character below '-'), so cutting the cursor at
        // one names the same position, in a form every database accepts.
        let cursor = cursor
            .map(|c| c.split('\0').next().unwrap_or_default())
            .filter(|c| !c.is_empty());
        // Nothing indexed can hold a NUL (PostgreSQL text refuses it, and so does the
        // facade when it stores a pack): a filter with one matches nothing.
        if [&filter.pack_type, &filter.author, &filter.q]
            .into_iter()
            .flatten()
            .any(|v| v.contains('\0'))
        {
            return Ok(Page {
                items: vec![],
                more: false,
            });
        }
        let n = limit
            .unwrap_or(self.packs.default_page)
            .clamp(1, self.packs.max_page);
        // Substring search is served by trigram indexes (SQLite FTS5, PostgreSQL
        // pg_trgm), which need three characters: shorter text could only be a scan.
        if let Some(q) = &filter.q
            && q.chars().count() < MIN_QUERY_CHARS
        {
            return Err(Error::PackMalformed(format!(
                "q {q:?} is too short: search text needs at least {MIN_QUERY_CHARS} characters"
            )));
        }
        let filter = PackFilter {
            q: filter.q.as_ref().map(|q| q.to_lowercase()),
            ..filter.clone()
        };
        Ok(self.meta.list_packs(&filter, cursor, n).await?)
    }

    /// A pack's summary and its latest version (the highest release, or the highest
    /// prerelease when there is no release).
    pub async fn get_pack(&self, pack_id: &str) -> Result<(PackSummaryRecord, PackVersionRecord)> {
        let unknown = || Error::PackUnknown(format!("pack {pack_id} is not known"));
        if !valid_pack_id(pack_id) {
            return Err(unknown());
        }
        let summary = self.meta.get_pack(pack_id).await?.ok_or_else(unknown)?;
        let latest = self
            .meta
            .get_pack_version(pack_id, &summary.latest_version)
            .await?
            .ok_or_else(unknown)?;
        Ok((summary, latest))
    }

    /// Every version of a pack, highest precedence first.
    pub async fn pack_versions(&self, pack_id: &str) -> Result<Vec<PackVersionRecord>> {
        let versions = if valid_pack_id(pack_id) {
            self.meta.list_pack_versions(pack_id).await?
        } else {
            vec![]
        };
        if versions.is_empty() {
            return Err(Error::PackUnknown(format!("pack {pack_id} is not known")));
        }
        Ok(versions)
    }

    /// The version `spec` names: an exact version (`_` may stand for `+`), or a semver
    /// requirement (`^2`, `~2.1`) resolved to the newest matching version. Text that is
    /// neither is [`Error::PackUnknown`], as is a spec nothing matches.
    pub async fn resolve_pack_version(
        &self,
        pack_id: &str,
        spec: &str,
    ) -> Result<PackVersionRecord> {
        let unknown = || Error::PackUnknown(format!("no version of {pack_id} matches {spec}"));
        if !valid_pack_id(pack_id) {
            return Err(unknown());
        }
        if let Some(exact) = parse_version(spec) {
            return self
                .meta
                .get_pack_version(pack_id, &exact.to_string())
                .await?
                .ok_or_else(unknown);
        }
        // Text that is neither names no version: not found, like any other.
        let req = semver::VersionReq::parse(spec).map_err(|e| {
            Error::PackUnknown(format!(
                "{spec:?} is neither a version of {pack_id} nor a semver requirement: {e}"
            ))
        })?;
        self.meta
            .list_pack_versions(pack_id)
            .await?
            .into_iter()
            .find(|v| semver::Version::parse(&v.version).is_ok_and(|p| req.matches(&p)))
            .ok_or_else(unknown)
    }

    /// Opens the content of the version `spec` names (see
    /// [`resolve_pack_version`](Self::resolve_pack_version)), whole or the range
    /// `resolve` picks from its size (`None`: unsatisfiable).
    pub async fn read_pack_content(
        &self,
        pack_id: &str,
        spec: &str,
        resolve: impl FnOnce(u64) -> Option<Option<Range<u64>>>,
    ) -> Result<(PackVersionRecord, BlobRead)> {
        let version = self.resolve_pack_version(pack_id, spec).await?;
        let read = self
            .read_blob(&version.repository, &version.content_digest, resolve)
            .await
            .map_err(|e| match e {
                Error::BlobUnknown => Error::Internal(format!(
                    "content of {pack_id} {spec} is indexed but missing"
                )),
                other => other,
            })?;
        Ok((version, read))
    }

    /// Deletes a version: its tag and its index row. Returns whether it existed.
    pub async fn delete_pack_version(&self, pack_id: &str, version: &str) -> Result<bool> {
        if !valid_pack_id(pack_id) {
            return Ok(false);
        }
        let Some(v) = parse_version(version) else {
            return Ok(false);
        };
        Ok(self
            .meta
            .delete_pack_version(pack_id, &v.to_string())
            .await?)
    }
}

/// The OCI image manifest of a published pack (DESIGN §6).
fn oci_manifest(
    pack: &ValidPack,
    stored: &PackManifest,
    (config_digest, config_size): (&Digest, usize),
    content: &super::uploads::StagedBlob,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn sort_keys_follow_semver_precedence() {
        // The semver.org precedence example, then numbers past one digit.
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.9.0",
            "1.10.0",
            "2.0.0-0",
            "2.0.0-a-b",
            "2.0.0",
            "10.0.0",
            "18446744073709551615.0.0",
        ];
        for w in ordered.windows(2) {
            assert!(
                sort_key(&v(w[0])) < sort_key(&v(w[1])),
                "{} < {}",
                w[0],
                w[1]
            );
            assert!(
                v(w[0]) < v(w[1]),
                "the semver crate agrees: {} < {}",
                w[0],
                w[1]
            );
        }
        assert_eq!(sort_key(&v("1.0.0+build.1")), sort_key(&v("1.0.0")));
    }

    #[test]
    fn pack_ids() {
        for ok in ["a", "policy-baseline-v2", "x1", &"a".repeat(63)] {
            assert!(valid_pack_id(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "a/b",
            &"a".repeat(64),
            "é",
        ] {
            assert!(!valid_pack_id(bad), "{bad}");
        }
    }

    #[test]
    fn tags_of_versions() {
        assert_eq!(
            version_tag(&v("1.2.3+build.5")).unwrap().as_str(),
            "1.2.3_build.5"
        );
        assert_eq!(parse_version("1.2.3_build.5"), Some(v("1.2.3+build.5")));
        assert_eq!(parse_version("^1"), None);
    }

    #[test]
    fn rfc3339_round_trips() {
        for (text, ms) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2025-01-15T10:30:00Z", 1_736_937_000_000),
            ("2024-02-29T23:59:59.123Z", 1_709_251_199_123),
        ] {
            assert_eq!(parse_rfc3339(text), Some(ms), "{text}");
            assert_eq!(format_rfc3339(ms), text);
        }
        assert_eq!(
            parse_rfc3339("2025-01-15T12:30:00+02:00"),
            Some(1_736_937_000_000)
        );
        for bad in [
            "2025-01-15",
            "2025-13-01T00:00:00Z",
            "2025-01-15T10:30:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    fn manifest(extra: Value) -> Vec<u8> {
        let mut m = serde_json::json!({
            "packId": "p", "version": "1.0.0", "type": "policy", "name": "P",
        });
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn validation() {
        assert!(validate_manifest(&manifest(serde_json::json!({}))).is_ok());
        assert!(matches!(
            validate_manifest(b"{not json"),
            Err(Error::PackMalformed(_))
        ));
        for bad in [
            serde_json::json!({"packId": "Bad"}),
            serde_json::json!({"version": "1.0"}),
            serde_json::json!({"version": "v1.0.0"}),
            serde_json::json!({"type": "image"}),
            serde_json::json!({"name": ""}),
            serde_json::json!({"name": null}),
            serde_json::json!({"metadata": {"minRunnerVersion": "1.5"}}),
            serde_json::json!({"metadata": {"minRunnerVersion": 15}}),
            serde_json::json!({"dependencies": [{"packId": "q", "version": "not a req"}]}),
            serde_json::json!({"dependencies": [{"packId": "p", "version": "^1"}]}),
            serde_json::json!({"dependencies": [{"packId": "q", "version": "^1"}, {"packId": "q", "version": "^2"}]}),
            serde_json::json!({"members": [{"packId": "q", "version": "^1"}]}),
            serde_json::json!({"type": "bundle"}),
            serde_json::json!({"publishedAt": "yesterday"}),
            serde_json::json!({"digest": "sha256:abc"}),
        ] {
            assert!(
                matches!(
                    validate_manifest(&manifest(bad.clone())),
                    Err(Error::PackInvalid(_))
                ),
                "{bad}"
            );
        }
        let bundle = manifest(serde_json::json!({
            "type": "bundle", "members": [{"packId": "q", "version": "^1"}],
        }));
        assert_eq!(
            validate_manifest(&bundle).unwrap().pack_type,
            PackType::Bundle
        );
    }
}
