//! Bundle archives as an air-gapped site receives them (`.tar` or `.tar.gz`, any
//! bytes): the reader refuses or reads them, never panics, never hangs, and never
//! reads past its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packs_registry::registry::bundle::{BundleLimits, read_archive};

fuzz_target!(|data: &[u8]| {
    // Small limits, so that the limit checks are reached as well as the format ones.
    let limits = BundleLimits {
        max_entry_bytes: 1 << 20,
        max_archive_bytes: 4 << 20,
        max_gzip_ratio: 100,
        max_entries: 64,
    };
    if let Ok(bytes) = read_archive(data.to_vec(), &limits) {
        assert!(bytes <= limits.max_archive_bytes);
    }
});
