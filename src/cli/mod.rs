//! Subcommands that act on a registry from outside: they talk to a running
//! registry over its HTTP API (with `reqwest`), as any client would, never to its
//! database or storage.
//!
//! - [`bundle`]: `packs-registry bundle export|import|verify`, offline bundles.

pub mod bundle;
