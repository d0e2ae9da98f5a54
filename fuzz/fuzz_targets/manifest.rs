//! Manifests and indexes as clients push them: validation never panics, whatever
//! the bytes and the `Content-Type`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packs_registry::registry::validate_manifest_bytes;

const TYPES: &[Option<&str>] = &[
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/json"),
];

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.split_first() {
        Some((&b, rest)) => (TYPES[usize::from(b) % TYPES.len()], rest),
        None => (None, data),
    };
    let _ = validate_manifest_bytes(content_type, body);
});
