//! PacksRegistry: an OCI-distribution-compatible registry for policy, analyzer, task
//! and bundle packs. See `ARCHITECTURE.md` for the map.
//!
//! Layers, dependencies pointing one way:
//! `http` (`/v2`, `/packs`, operations) → `registry` (domain) → `storage`, `metadata`
//! (traits and backends), with `auth` (principals, grants, tokens; no HTTP) beside them.
//! `server` wires it all once at start-up. `cli` holds the subcommands that act on a
//! registry as an HTTP client (offline bundles).

#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod digest;
pub mod gc_cli;
pub mod http;
pub mod memory;
pub mod metadata;
pub mod names;
pub mod registry;
pub mod server;
pub mod storage;
pub mod telemetry;
