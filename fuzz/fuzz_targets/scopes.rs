//! Docker token scopes (`/token?scope=`) and grants: parsing never panics, and what
//! parses prints back to text that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packs_registry::auth::{Grant, Scope};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scopes) = Scope::parse_list(text) {
        for scope in scopes {
            let again = Scope::parse(&scope.to_string()).expect("a printed scope parses");
            assert_eq!(again.to_string(), scope.to_string());
        }
    }
    if let Ok(grant) = text.parse::<Grant>() {
        let printed = grant.to_string();
        let again: Grant = printed.parse().expect("a printed grant parses");
        assert_eq!(again.to_string(), printed);
    }
});
