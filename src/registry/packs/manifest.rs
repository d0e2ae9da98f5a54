//! The pack manifest (DESIGN §6): its JSON schema, its rules, and the RFC 3339 dates
//! it and pack artifacts carry.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{MAX_PACK_ID, PackType, version_tag};
use crate::digest::Digest;
use crate::names::Tag;
use crate::registry::{Error, Result};

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
    /// The description, empty when none.
    pub fn description(&self) -> &str {
        self.manifest.description.as_deref().unwrap_or_default()
    }

    /// The author, empty when none.
    pub fn author(&self) -> &str {
        self.manifest.author.as_deref().unwrap_or_default()
    }
}

/// Ids no pack may take: `/packs/export` and `/packs/import` are the offline bundle
/// endpoints.
pub const RESERVED_PACK_IDS: [&str; 2] = ["export", "import"];

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
    if RESERVED_PACK_IDS.contains(&m.pack_id.as_str()) {
        return Err(format!(
            "packId {:?} is reserved: /packs/{} is the bundle endpoint",
            m.pack_id, m.pack_id
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
// RFC 3339 dates

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (`.mmm` when not whole).
pub fn format_rfc3339(ms: i64) -> String {
    // Out of chrono's range (some 262,000 years either way) only through a corrupt row:
    // the epoch then, rather than a failed listing.
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 date-time (`Z` or `±HH:MM`, optional fraction) to milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            // Bytes past a multi-byte character, where an offset is looked for.
            "2024-01-01T00:00:00\u{e9}1234",
            "2024-01-01T00:00:00+\u{e9}:00",
            "2024-01-01T00:00:00.\u{e9}",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            "2025-02-30T00:00:00Z",
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
            serde_json::json!({"publishedAt": "2024-01-01T00:00:00\u{e9}1234"}),
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
