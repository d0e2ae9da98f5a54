//! PacksRegistry: an OCI-distribution-compatible registry for policy, analyzer, task
//! and bundle packs. See `ARCHITECTURE.md` for the map.
//!
//! Layers, dependencies pointing one way:
//! `oci`, `packs` (HTTP) → `registry` (domain) → `storage`, `metadata` (traits and backends).
//! `ops` serves health and metrics; `app` wires it all once at start-up.

#![warn(missing_docs)]

pub mod app;
pub mod config;
pub mod digest;
pub mod metadata;
pub mod names;
pub mod oci;
pub mod ops;
pub mod packs;
pub mod registry;
pub mod storage;
