//! Offline bundles (DESIGN §10): packs moved between registries as a file, for sites
//! without a network path between them.
//!
//! A bundle is an OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`)
//! in a tar archive, which other tools read as it is (`skopeo copy oci-archive:…`).
//! `index.json` lists every pack manifest of the bundle, each annotated with
//! `org.opencontainers.image.ref.name` (`<repository>:<tag>`) and the pack's id,
//! version and type, and the referrers (signatures, SBOMs, attestations) that travel
//! with them.
//!
//! - `archive.rs`: the tar format both ways: deterministic headers written around
//!   streamed content, and the bounded, streamed reading of an archive (plain or
//!   gzip) that refuses unsafe entries.
//! - `export.rs`: the closure of a selection (the packs chosen, their dependencies
//!   and bundle members resolved as publishing resolves them, every manifest, blob
//!   and referrer they reach) and the archive streamed from it, byte for byte the
//!   same for the same content.
//! - `import.rs`: an archive staged and verified (every blob against its digest,
//!   every manifest parsed and its references present, where each manifest goes, no
//!   tag moved) before anything is visible, then pushed through the registry's own
//!   blob and manifest paths, so `/v2` and `/packs` see the result as if pushed.
//!
//! Both export and import are two steps, so that a caller can authorize between
//! them: [`Registry::plan_export`](super::Registry::plan_export) then
//! [`Registry::export_stream`](super::Registry::export_stream), and
//! [`Registry::stage_bundle`](super::Registry::stage_bundle) then
//! [`Registry::import_staged`](super::Registry::import_staged). Each plan names the
//! repositories it reads or writes.
//!
//! Knows no HTTP; reads and writes only through the registry's domain paths.

mod archive;
mod export;
mod import;

use serde::Serialize;

use crate::registry::packs::PackDependency;

pub use export::{BundleSelection, ExportPlan};
pub use import::{ImportReport, StagedBundle};

/// Annotation of a pack's id on its `index.json` descriptor.
pub const ANNOTATION_PACK_ID: &str = "com.stellaops.pack.id";
/// Annotation of a pack's version on its `index.json` descriptor.
pub const ANNOTATION_PACK_VERSION: &str = "com.stellaops.pack.version";
/// Annotation of a pack's type on its `index.json` descriptor.
pub const ANNOTATION_PACK_TYPE: &str = "com.stellaops.pack.type";

/// Bounds on the archives read (`[bundles]` in the configuration).
#[derive(Debug, Clone)]
pub struct BundleLimits {
    /// Largest entry (one blob), in bytes.
    pub max_entry_bytes: u64,
    /// Largest archive, in uncompressed bytes.
    pub max_archive_bytes: u64,
    /// Most uncompressed bytes per compressed byte of a gzip archive, past its first
    /// [`GZIP_RATIO_GRACE`] bytes.
    pub max_gzip_ratio: u64,
    /// Most entries.
    pub max_entries: u64,
}

/// Uncompressed bytes of a gzip archive read before its ratio is held to the limit
/// (the first blocks of any archive compress far better than the rest).
pub const GZIP_RATIO_GRACE: u64 = 64 * 1024 * 1024;

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits {
            max_entry_bytes: 16 * 1024 * 1024 * 1024,
            max_archive_bytes: 64 * 1024 * 1024 * 1024,
            max_gzip_ratio: 100,
            max_entries: 100_000,
        }
    }
}

/// Reads a whole archive the way an import does (layout files, every blob's bytes,
/// every refusal), without staging anything, and returns the uncompressed bytes read.
/// The entry point of the `bundle_archive` fuzz target.
#[doc(hidden)]
pub fn read_archive(data: Vec<u8>, limits: &BundleLimits) -> crate::registry::Result<u64> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let limits = limits.clone();
    let reader = std::thread::spawn(move || {
        archive::read(
            Box::new(std::io::Cursor::new(data)),
            &limits,
            4 * 1024 * 1024,
            &tx,
        )
    });
    let mut read = Err(crate::registry::Error::Body(
        "the archive reader stopped without an end".into(),
    ));
    while let Some(event) = rx.blocking_recv() {
        match event {
            Ok(archive::Event::Blob { mut data, .. }) => {
                while let Some(chunk) = data.blocking_recv() {
                    if chunk.is_err() {
                        break;
                    }
                }
            }
            Ok(archive::Event::End { bytes }) => read = Ok(bytes),
            Ok(archive::Event::Layout(_) | archive::Event::Index(_)) => {}
            Err(e) => {
                read = Err(e);
                break;
            }
        }
    }
    drop(rx);
    let _ = reader.join();
    read
}

/// One pack of a bundle, as `bundle verify` lists it and an import reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundlePack {
    /// The pack's id.
    pub pack_id: String,
    /// Its version.
    pub version: String,
    /// `policy`, `analyzer`, `task` or `bundle`.
    #[serde(rename = "type")]
    pub pack_type: String,
    /// Digest of its content (what `/packs/{id}/{version}` serves).
    pub digest: String,
    /// Digest of its OCI manifest.
    pub manifest_digest: String,
    /// The repository it goes to.
    pub repository: String,
    /// Packs it needs.
    pub dependencies: Vec<PackDependency>,
    /// Packs it groups (bundles).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<PackDependency>,
}
