//! Bearer tokens as clients present them: verification of arbitrary text never
//! panics and never lets anything through (no token but one sealed by the key is
//! valid).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use packs_registry::auth::{Authorizer, Need, generate_key};
use packs_registry::config::{AuthConfig, AuthMode};
use packs_registry::names::RepoName;

fn authorizer() -> &'static Authorizer {
    static AUTH: OnceLock<Authorizer> = OnceLock::new();
    AUTH.get_or_init(|| {
        let (root_key, _) = generate_key();
        Authorizer::from_config(&AuthConfig {
            mode: AuthMode::Token,
            root_key,
            ..AuthConfig::default()
        })
        .expect("authorizer")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let repo = RepoName::parse("packs/a").unwrap();
    assert!(authorizer().verify_token(text, &[Need::pull(&repo)]).is_err());
    assert!(authorizer().verify_token(text, &[]).is_err());
});
