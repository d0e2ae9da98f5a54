//! Versions: semver parsing, the tag form of a version, and sort keys whose byte order
//! is semver precedence.

use crate::names::Tag;

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
    fn tags_of_versions() {
        assert_eq!(
            version_tag(&v("1.2.3+build.5")).unwrap().as_str(),
            "1.2.3_build.5"
        );
        assert_eq!(parse_version("1.2.3_build.5"), Some(v("1.2.3+build.5")));
        assert_eq!(parse_version("^1"), None);
    }
}
