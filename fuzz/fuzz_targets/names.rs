//! Repository names, tags, references and digests: parsing never panics, and what
//! parses prints back as the same text and parses again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packs_registry::digest::Digest;
use packs_registry::names::{Reference, RepoName, Tag};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = RepoName::parse(text) {
        assert_eq!(name.as_str(), text);
        assert!(name.as_str().len() <= 255);
    }
    if let Ok(tag) = Tag::parse(text) {
        assert_eq!(tag.as_str(), text);
        assert_eq!(Tag::parse(tag.as_str()).unwrap(), tag);
    }
    if let Ok(digest) = Digest::parse(text) {
        assert_eq!(digest.as_str(), text);
        assert_eq!(Digest::parse(digest.as_str()).unwrap(), digest);
        assert!(digest.hex().len() >= 64);
    }
    let _ = Reference::parse(text);
});
