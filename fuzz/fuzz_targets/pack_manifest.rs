//! The pack manifest of `POST /packs` and of `/v2`-pushed pack configs: validation
//! never panics (dates, semver, requirements, ids), and what validates keeps an id a
//! repository name can hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packs_registry::registry::packs::validate_manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(pack) = validate_manifest(data) {
        let id = &pack.manifest.pack_id;
        assert!(!id.is_empty() && id.len() <= 63, "{id:?}");
        assert!(packs_registry::names::RepoName::parse(&format!("packs/{id}")).is_ok());
    }
});
