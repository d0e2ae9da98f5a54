//! `Range` of downloads and `Content-Range` of upload chunks: parsing never panics,
//! a resolved range always lies inside the content, and a chunk range's length and
//! end fit in 64 bits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packs_registry::http::oci::params::parse_content_range;
use packs_registry::http::range::RangeRequest;

fuzz_target!(|input: (&str, u64)| {
    let (text, size) = input;
    let request = RangeRequest::parse(Some(text));
    if let Ok(Some(range)) = request.resolve(size) {
        assert!(range.start < range.end, "{text:?} on {size}: {range:?}");
        assert!(range.end <= size, "{text:?} on {size}: {range:?}");
    }
    if let Ok(chunk) = parse_content_range(text) {
        assert!(chunk.start <= chunk.end);
        let len = chunk.len();
        assert!(len >= 1);
        assert!(chunk.start.checked_add(len).is_some());
    }
});
