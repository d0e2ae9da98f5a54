//! Behaviour of the authorizer and its tokens: every way a token can be refused, and
//! that attenuation only ever narrows.

use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{BlockBuilder, fact, string};
use biscuit_auth::{Biscuit, KeyPair, UnverifiedBiscuit};
use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::config::{AccountConfig, AuthConfig, RunLimitsConfig, TrustedKeyConfig};
use crate::names::RepoName;

fn name(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn grants(list: &[&str]) -> Vec<Grant> {
    list.iter().map(|g| Grant::parse(g).unwrap()).collect()
}

fn hour() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

/// A token-mode configuration with a fresh root key under id 0.
fn config() -> AuthConfig {
    AuthConfig {
        mode: AuthMode::Token,
        root_key: generate_key().0,
        ..AuthConfig::default()
    }
}

fn authorizer(config: &AuthConfig) -> Authorizer {
    Authorizer::from_config(config).unwrap()
}

fn bearer(token: &SecretString) -> Credentials {
    Credentials::Bearer(token.clone())
}

fn mint(auth: &Authorizer, list: &[&str], expires: SystemTime) -> SecretString {
    auth.tokens()
        .unwrap()
        .mint("runner", &grants(list), expires)
        .unwrap()
}

/// `authorize` with a bearer token and these needs.
fn check(auth: &Authorizer, token: &SecretString, needs: &[Need<'_>]) -> Result<String, AuthError> {
    auth.authorize(Some(&bearer(token)), needs)
        .map(|p| p.name().to_owned())
}

fn narrow(
    token: &SecretString,
    list: Option<&[&str]>,
    expires: Option<SystemTime>,
) -> SecretString {
    attenuate(
        token.expose_secret(),
        &Attenuation {
            grants: list.map(grants),
            expires,
        },
    )
    .unwrap()
}

#[test]
fn a_minted_token_allows_its_grants_and_nothing_else() {
    let auth = authorizer(&config());
    let token = mint(&auth, &["packs/:pull,push", "other/x:delete"], hour());
    let (a, b, x, y) = (
        name("packs/a"),
        name("packs/team/b"),
        name("other/x"),
        name("other/y"),
    );
    let who = auth
        .authorize(Some(&bearer(&token)), &[Need::push(&a), Need::pull(&b)])
        .unwrap();
    assert_eq!(who.name(), "runner");
    assert_eq!(who.kind(), PrincipalKind::Token);
    assert_eq!(who.key_id(), Some(0));
    assert_eq!(check(&auth, &token, &[Need::delete(&x)]).unwrap(), "runner");
    // Another repository; an action not granted; the catalog not granted.
    assert_eq!(
        check(&auth, &token, &[Need::pull(&y)]),
        Err(AuthError::Denied)
    );
    assert_eq!(
        check(&auth, &token, &[Need::delete(&a)]),
        Err(AuthError::Denied)
    );
    assert_eq!(
        check(&auth, &token, &[Need::pull(&x)]),
        Err(AuthError::Denied)
    );
    assert_eq!(
        check(&auth, &token, &[Need::Catalog]),
        Err(AuthError::Denied)
    );
    // No needs: valid.
    assert_eq!(check(&auth, &token, &[]).unwrap(), "runner");
}

#[test]
fn push_needs_push() {
    let auth = authorizer(&config());
    let token = mint(&auth, &["packs/a:pull"], hour());
    let a = name("packs/a");
    assert!(check(&auth, &token, &[Need::pull(&a)]).is_ok());
    let refused = check(&auth, &token, &[Need::push(&a)]).unwrap_err();
    assert_eq!(refused, AuthError::Denied);
    assert!(refused.is_forbidden());
}

#[test]
fn catalog_is_its_own_grant() {
    let auth = authorizer(&config());
    let everything = mint(&auth, &["*:*"], hour());
    assert_eq!(
        check(&auth, &everything, &[Need::Catalog]),
        Err(AuthError::Denied)
    );
    let catalog = mint(&auth, &["registry:catalog:*"], hour());
    assert!(check(&auth, &catalog, &[Need::Catalog]).is_ok());
    assert_eq!(
        check(&auth, &catalog, &[Need::pull(&name("catalog"))]),
        Err(AuthError::Denied)
    );
}

#[test]
fn prefixes_stop_at_component_boundaries() {
    let auth = authorizer(&config());
    let token = mint(&auth, &["packs/team/:pull", "exact/team:pull"], hour());
    let ok = |n: &str| check(&auth, &token, &[Need::pull(&name(n))]).is_ok();
    assert!(ok("packs/team/x"));
    assert!(ok("packs/team/x/y"));
    assert!(!ok("packs/team"));
    assert!(!ok("packs/teammate"));
    assert!(!ok("packs/teammate/x"));
    assert!(ok("exact/team"));
    assert!(!ok("exact/teammate"));
    assert!(!ok("exact/team/x"));
}

#[test]
fn expired_tokens_are_refused_as_expired() {
    let auth = authorizer(&config());
    let token = mint(
        &auth,
        &["packs/:*"],
        SystemTime::now() - Duration::from_secs(60),
    );
    let a = name("packs/a");
    assert_eq!(
        check(&auth, &token, &[Need::pull(&a)]),
        Err(AuthError::Expired)
    );
    assert_eq!(check(&auth, &token, &[]), Err(AuthError::Expired));
    // Expired wins over not granted.
    assert_eq!(
        check(&auth, &token, &[Need::pull(&name("other"))]),
        Err(AuthError::Expired)
    );
    assert!(!AuthError::Expired.is_forbidden());
}

#[test]
fn tampered_and_malformed_tokens_are_refused() {
    let auth = authorizer(&config());
    let token = mint(&auth, &["packs/a:pull"], hour());
    let a = name("packs/a");
    let text = token.expose_secret();
    // Change one character in the middle (the signed payload).
    let mut bytes = text.as_bytes().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let tampered = SecretString::from(String::from_utf8(bytes).unwrap());
    assert_eq!(
        check(&auth, &tampered, &[Need::pull(&a)]),
        Err(AuthError::Malformed)
    );
    for junk in [
        "",
        "not a token",
        "eyJhbGciOiJIUzI1NiJ9.e30.x",
        &text[..text.len() / 2],
    ] {
        let junk = SecretString::from(junk.to_owned());
        assert_eq!(
            check(&auth, &junk, &[Need::pull(&a)]),
            Err(AuthError::Malformed)
        );
    }
}

#[test]
fn a_token_whose_grants_were_rewritten_and_resigned_by_another_key_is_refused() {
    // Same key id as the registry's, another key: the signature does not match.
    let auth = authorizer(&config());
    let impostor = authorizer(&config());
    let token = mint(&impostor, &["*:*"], hour());
    assert_eq!(
        check(&auth, &token, &[Need::pull(&name("packs/a"))]),
        Err(AuthError::Malformed)
    );
}

#[test]
fn unknown_key_ids_are_refused_as_unknown_key() {
    let auth = authorizer(&config());
    let other = authorizer(&AuthConfig {
        key_id: 7,
        ..config()
    });
    let token = mint(&other, &["*:*"], hour());
    assert_eq!(
        check(&auth, &token, &[Need::pull(&name("packs/a"))]),
        Err(AuthError::UnknownKey)
    );
    assert_eq!(check(&auth, &token, &[]), Err(AuthError::UnknownKey));
}

#[test]
fn rotation_keeps_old_tokens_valid_while_their_key_is_listed() {
    let old = config();
    let old_auth = authorizer(&AuthConfig {
        key_id: 1,
        ..old.clone()
    });
    let old_token = mint(&old_auth, &["packs/:pull"], hour());
    let old_public = old_auth.tokens().unwrap().public_key();
    let rotated = AuthConfig {
        key_id: 2,
        trusted_keys: vec![TrustedKeyConfig {
            key_id: 1,
            public_key: old_public,
            name: "previous root key".into(),
        }],
        ..config()
    };
    let auth = authorizer(&rotated);
    let a = name("packs/a");
    let who = auth
        .authorize(Some(&bearer(&old_token)), &[Need::pull(&a)])
        .unwrap();
    assert_eq!(who.key_id(), Some(1));
    let new_token = mint(&auth, &["packs/:pull"], hour());
    assert_eq!(
        auth.authorize(Some(&bearer(&new_token)), &[Need::pull(&a)])
            .unwrap()
            .key_id(),
        Some(2)
    );
    // Once the old key is dropped from the list, its tokens are refused.
    let dropped = authorizer(&AuthConfig {
        trusted_keys: vec![],
        ..rotated
    });
    assert_eq!(
        check(&dropped, &old_token, &[Need::pull(&a)]),
        Err(AuthError::UnknownKey)
    );
}

#[test]
fn another_issuers_tokens_are_accepted_when_its_key_is_trusted() {
    // The platform's authority service: its own key, the same vocabulary.
    let platform = KeyPair::new();
    let token = Biscuit::builder()
        .code(
            r#"principal("taskrunner-7");
               right("prefix", "packs/", "pull");
               check if time($t), $t <= 2100-01-01T00:00:00Z;"#,
        )
        .unwrap()
        .root_key_id(9)
        .build(&platform)
        .unwrap()
        .to_base64()
        .unwrap();
    let token = SecretString::from(token);
    let trusted = AuthConfig {
        trusted_keys: vec![TrustedKeyConfig {
            key_id: 9,
            public_key: platform.public().to_string(),
            name: "platform".into(),
        }],
        ..config()
    };
    let auth = authorizer(&trusted);
    let a = name("packs/a");
    assert_eq!(
        check(&auth, &token, &[Need::pull(&a)]).unwrap(),
        "taskrunner-7"
    );
    assert_eq!(
        check(&auth, &token, &[Need::push(&a)]),
        Err(AuthError::Denied)
    );
    // Not trusted: unknown key.
    assert_eq!(
        check(&authorizer(&config()), &token, &[Need::pull(&a)]),
        Err(AuthError::UnknownKey)
    );
}

#[test]
fn a_token_must_name_exactly_one_principal() {
    let config = config();
    let root = KeyPair::from(&token::parse_private_key(config.root_key.expose_secret()).unwrap());
    let auth = authorizer(&config);
    for code in [
        r#"right("prefix", "", "*");"#,
        r#"principal("a"); principal("b"); right("prefix", "", "*");"#,
    ] {
        let token = Biscuit::builder()
            .code(code)
            .unwrap()
            .root_key_id(0)
            .build(&root)
            .unwrap()
            .to_base64()
            .unwrap();
        let token = SecretString::from(token);
        assert_eq!(
            check(&auth, &token, &[]),
            Err(AuthError::Malformed),
            "{code}"
        );
        assert_eq!(
            check(&auth, &token, &[Need::pull(&name("a"))]),
            Err(AuthError::Malformed),
            "{code}"
        );
    }
}

#[test]
fn attenuation_narrows_repositories_actions_and_expiry() {
    let auth = authorizer(&config());
    let parent = mint(&auth, &["packs/:*", "registry:catalog:*"], hour());
    let (a, b, sub) = (name("packs/a"), name("packs/b"), name("packs/team/x"));
    let child = narrow(&parent, Some(&["packs/a:pull", "packs/team/:push"]), None);
    assert_eq!(check(&auth, &child, &[Need::pull(&a)]).unwrap(), "runner");
    assert!(check(&auth, &child, &[Need::push(&sub)]).is_ok());
    assert_eq!(
        check(&auth, &child, &[Need::push(&a)]),
        Err(AuthError::Denied)
    );
    assert_eq!(
        check(&auth, &child, &[Need::pull(&b)]),
        Err(AuthError::Denied)
    );
    assert_eq!(
        check(&auth, &child, &[Need::pull(&sub)]),
        Err(AuthError::Denied)
    );
    assert_eq!(
        check(&auth, &child, &[Need::Catalog]),
        Err(AuthError::Denied)
    );
    // The parent is untouched.
    assert_eq!(check(&auth, &parent, &[Need::push(&a)]).unwrap(), "runner");
    // An earlier expiry.
    let past = narrow(
        &parent,
        None,
        Some(SystemTime::now() - Duration::from_secs(5)),
    );
    assert_eq!(
        check(&auth, &past, &[Need::pull(&a)]),
        Err(AuthError::Expired)
    );
    // Nothing at all.
    let nothing = narrow(&parent, Some(&[]), None);
    assert_eq!(
        check(&auth, &nothing, &[Need::pull(&a)]),
        Err(AuthError::Denied)
    );
    assert!(check(&auth, &nothing, &[]).is_ok());
    // Attenuating twice keeps both restrictions.
    let twice = narrow(&child, Some(&["packs/:push"]), None);
    assert_eq!(
        check(&auth, &twice, &[Need::pull(&a)]),
        Err(AuthError::Denied)
    );
    assert!(check(&auth, &twice, &[Need::push(&sub)]).is_ok());
}

#[test]
fn an_attenuated_token_cannot_exceed_its_parent() {
    let auth = authorizer(&config());
    let parent = mint(&auth, &["packs/a:pull"], hour());
    let (a, b) = (name("packs/a"), name("packs/b"));
    // Asks for more repositories, more actions and a later expiry.
    let wider = narrow(
        &parent,
        Some(&["*:*", "registry:catalog:*"]),
        Some(SystemTime::now() + Duration::from_secs(30 * 86400)),
    );
    assert!(check(&auth, &wider, &[Need::pull(&a)]).is_ok());
    assert_eq!(
        check(&auth, &wider, &[Need::push(&a)]),
        Err(AuthError::Denied)
    );
    assert_eq!(
        check(&auth, &wider, &[Need::pull(&b)]),
        Err(AuthError::Denied)
    );
    assert_eq!(
        check(&auth, &wider, &[Need::Catalog]),
        Err(AuthError::Denied)
    );
    // A later expiry does not revive an expired parent.
    let expired = mint(
        &auth,
        &["packs/a:pull"],
        SystemTime::now() - Duration::from_secs(60),
    );
    let revived = narrow(&expired, None, Some(hour()));
    assert_eq!(
        check(&auth, &revived, &[Need::pull(&a)]),
        Err(AuthError::Expired)
    );
}

#[test]
fn facts_in_an_appended_block_grant_nothing() {
    // A hand-made block that tries to widen: rights for everything, another principal,
    // an old time.
    let auth = authorizer(&config());
    let parent = mint(
        &auth,
        &["packs/a:pull"],
        SystemTime::now() - Duration::from_secs(60),
    );
    let block = BlockBuilder::new()
        .fact(fact("right", &[string("prefix"), string(""), string("*")]))
        .unwrap()
        .fact(fact(
            "right",
            &[string("registry"), string("catalog"), string("*")],
        ))
        .unwrap()
        .fact(fact("principal", &[string("admin")]))
        .unwrap()
        .code("time(2000-01-01T00:00:00Z);")
        .unwrap();
    let forged = UnverifiedBiscuit::from_base64(parent.expose_secret())
        .unwrap()
        .append(block)
        .unwrap()
        .to_base64()
        .unwrap();
    let forged = SecretString::from(forged);
    let a = name("packs/a");
    assert_eq!(
        check(&auth, &forged, &[Need::pull(&a)]),
        Err(AuthError::Expired)
    );
    // Unexpired parent: the block's rights still count for nothing, its principal is
    // not the one reported.
    let parent = mint(&auth, &["packs/a:pull"], hour());
    let block = BlockBuilder::new()
        .fact(fact("right", &[string("prefix"), string(""), string("*")]))
        .unwrap()
        .fact(fact("principal", &[string("admin")]))
        .unwrap();
    let forged = SecretString::from(
        UnverifiedBiscuit::from_base64(parent.expose_secret())
            .unwrap()
            .append(block)
            .unwrap()
            .to_base64()
            .unwrap(),
    );
    assert_eq!(check(&auth, &forged, &[Need::pull(&a)]).unwrap(), "runner");
    assert_eq!(
        check(&auth, &forged, &[Need::push(&a)]),
        Err(AuthError::Denied)
    );
    assert_eq!(
        check(&auth, &forged, &[Need::Catalog]),
        Err(AuthError::Denied)
    );
}

#[test]
fn a_mount_needs_both_and_each_need_is_judged_alone() {
    // Parent may do everything under packs/; the child only pulls packs/src. A mount
    // into packs/dst from packs/src must not pass because one of its needs does.
    let auth = authorizer(&config());
    let parent = mint(&auth, &["packs/:*"], hour());
    let child = narrow(&parent, Some(&["packs/src:pull"]), None);
    let (src, dst) = (name("packs/src"), name("packs/dst"));
    let mount = [Need::push(&dst), Need::pull(&src)];
    assert!(check(&auth, &parent, &mount).is_ok());
    assert_eq!(check(&auth, &child, &mount), Err(AuthError::Denied));
    // And a token that can push to dst but not pull from src cannot mount either.
    let push_only = mint(&auth, &["packs/dst:push"], hour());
    assert_eq!(check(&auth, &push_only, &mount), Err(AuthError::Denied));
    assert_eq!(
        auth.challenge_scope(&mount),
        "repository:packs/dst:pull,push repository:packs/src:pull"
    );
}

#[test]
fn run_limits_bound_a_token() {
    // Limits count what rules derive: a block whose rule copies every right.
    let config = config();
    let private = token::parse_private_key(config.root_key.expose_secret()).unwrap();
    let tight = Tokens::new(
        &private,
        0,
        &RunLimitsConfig {
            max_facts: 15,
            ..RunLimitsConfig::default()
        },
    )
    .unwrap();
    let many: Vec<String> = (0..10).map(|i| format!("packs/p{i}:pull")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let parent = tight.mint("runner", &grants(&many), hour()).unwrap();
    let a = name("packs/p1");
    assert!(
        tight
            .verify(parent.expose_secret(), &[Need::pull(&a)])
            .is_ok()
    );
    let block = BlockBuilder::new()
        .code("copy($k, $n, $a) <- right($k, $n, $a);")
        .unwrap();
    let heavy = SecretString::from(
        UnverifiedBiscuit::from_base64(parent.expose_secret())
            .unwrap()
            .append(block)
            .unwrap()
            .to_base64()
            .unwrap(),
    );
    assert_eq!(
        tight.verify(heavy.expose_secret(), &[Need::pull(&a)]).err(),
        Some(AuthError::Limits)
    );
    assert!(!AuthError::Limits.is_forbidden());
    // The default limits are roomy enough for it.
    let auth = authorizer(&config);
    assert_eq!(check(&auth, &heavy, &[Need::pull(&a)]).unwrap(), "runner");
}

fn account(name: &str, password: &str, list: &[&str]) -> AccountConfig {
    AccountConfig {
        name: name.into(),
        password_hash: hash_password(password).unwrap().into(),
        grants: grants(list),
    }
}

#[test]
fn basic_credentials_and_anonymous_access() {
    let auth = authorizer(&AuthConfig {
        users: vec![account("alice", "wonderland", &["packs/:pull,push"])],
        robots: vec![account(
            "ci",
            "r0b0t",
            &["packs/ci/:*", "registry:catalog:*"],
        )],
        anonymous_pull: vec![RepoPattern::parse("public/").unwrap()],
        ..config()
    });
    let (a, pubx, ci) = (name("packs/a"), name("public/x"), name("packs/ci/x"));
    let basic = |u: &str, p: &str| Credentials::Basic {
        username: u.into(),
        password: SecretString::from(p.to_owned()),
    };
    let alice = auth
        .authorize(Some(&basic("alice", "wonderland")), &[Need::push(&a)])
        .unwrap();
    assert_eq!((alice.name(), alice.kind()), ("alice", PrincipalKind::User));
    assert_eq!(
        auth.authorize(Some(&basic("alice", "wonderland")), &[Need::delete(&a)])
            .unwrap_err(),
        AuthError::Denied
    );
    // Anonymous patterns count for everyone.
    assert!(
        auth.authorize(Some(&basic("alice", "wonderland")), &[Need::pull(&pubx)])
            .is_ok()
    );
    let robot = auth.authenticate_basic("ci", "r0b0t").unwrap();
    assert_eq!(robot.kind(), PrincipalKind::Robot);
    assert!(
        auth.check(&robot, &[Need::delete(&ci), Need::Catalog])
            .is_ok()
    );
    // Wrong password, unknown user, a user's password for another: the same error.
    for (u, p) in [
        ("alice", "wrong"),
        ("bob", "wonderland"),
        ("ci", "wonderland"),
        ("", ""),
    ] {
        assert_eq!(
            auth.authenticate_basic(u, p).unwrap_err(),
            AuthError::BadCredentials
        );
        assert_eq!(
            auth.authorize(Some(&basic(u, p)), &[Need::pull(&pubx)])
                .unwrap_err(),
            AuthError::BadCredentials
        );
    }
    // Anonymous: pulls under public/, nothing else, and the /v2/ check challenges.
    let anon = auth.authorize(None, &[Need::pull(&pubx)]).unwrap();
    assert!(anon.is_anonymous());
    assert_eq!(
        auth.authorize(None, &[Need::push(&pubx)]).unwrap_err(),
        AuthError::Missing
    );
    assert_eq!(
        auth.authorize(None, &[Need::pull(&a)]).unwrap_err(),
        AuthError::Missing
    );
    assert_eq!(auth.authorize(None, &[]).unwrap_err(), AuthError::Missing);
    assert_eq!(
        auth.authorize(None, &[Need::Catalog]).unwrap_err(),
        AuthError::Missing
    );
    let anon = auth.identify(None).unwrap();
    assert_eq!(anon.name(), ANONYMOUS);
    assert_eq!(
        auth.check(&anon, &[Need::pull(&a)]),
        Err(AuthError::Missing)
    );
    // An invalid token is refused even where anonymous access would do.
    let junk = Credentials::Bearer(SecretString::from("junk".to_owned()));
    assert_eq!(
        auth.authorize(Some(&junk), &[Need::pull(&pubx)])
            .unwrap_err(),
        AuthError::Malformed
    );
    // A valid token for something else still pulls public/.
    let token = mint(&auth, &["packs/a:pull"], hour());
    assert!(check(&auth, &token, &[Need::pull(&pubx)]).is_ok());
}

#[test]
fn issue_grants_the_intersection_of_asked_and_allowed() {
    let auth = authorizer(&AuthConfig {
        users: vec![account("alice", "wonderland", &["packs/:pull,push"])],
        anonymous_pull: vec![RepoPattern::parse("public/").unwrap()],
        token_ttl_secs: 120,
        ..config()
    });
    let alice = auth.authenticate_basic("alice", "wonderland").unwrap();
    let scopes = Scope::parse_list(
        "repository:packs/a:pull,push,delete repository:other/x:pull registry:catalog:* \
         repository:public/p:pull",
    )
    .unwrap();
    let issued = auth.issue(&alice, &scopes).unwrap();
    assert_eq!(issued.expires_in, 120);
    assert!(issued.issued_at_rfc3339().ends_with('Z'));
    let t = &issued.token;
    let (a, b, x, p) = (
        name("packs/a"),
        name("packs/b"),
        name("other/x"),
        name("public/p"),
    );
    assert_eq!(
        check(&auth, t, &[Need::push(&a), Need::pull(&a)]).unwrap(),
        "alice"
    );
    assert_eq!(check(&auth, t, &[Need::delete(&a)]), Err(AuthError::Denied));
    // Not asked for, though alice may.
    assert_eq!(check(&auth, t, &[Need::pull(&b)]), Err(AuthError::Denied));
    assert_eq!(check(&auth, t, &[Need::pull(&x)]), Err(AuthError::Denied));
    assert_eq!(check(&auth, t, &[Need::Catalog]), Err(AuthError::Denied));
    assert!(check(&auth, t, &[Need::pull(&p)]).is_ok());

    // Anonymous gets what the anonymous patterns allow, and its token beyond that
    // is "authenticate" (401), not "forbidden": anonymous push stays a challenge.
    let anon = auth.identify(None).unwrap();
    let scopes =
        Scope::parse_list("repository:public/p:pull,push repository:packs/a:pull").unwrap();
    let issued = auth.issue(&anon, &scopes).unwrap();
    assert_eq!(
        check(&auth, &issued.token, &[Need::pull(&p)]).unwrap(),
        ANONYMOUS
    );
    assert_eq!(
        check(&auth, &issued.token, &[Need::push(&p)]),
        Err(AuthError::Missing)
    );
    assert_eq!(
        check(&auth, &issued.token, &[Need::pull(&p), Need::pull(&a)]),
        Err(AuthError::Missing)
    );
    let holder = auth.identify(Some(&bearer(&issued.token))).unwrap();
    assert!(holder.is_anonymous());
    assert_eq!(
        auth.check(&holder, &[Need::push(&p)]),
        Err(AuthError::Missing)
    );
    let verified = auth.verify_token(issued.token.expose_secret(), &[Need::pull(&p)]);
    assert_eq!(verified.unwrap().name(), ANONYMOUS);
    // No scopes: a token for the /v2/ check only.
    let bare = auth.issue(&anon, &[]).unwrap();
    assert!(check(&auth, &bare.token, &[]).is_ok());
}

#[test]
fn issue_for_a_token_holder_narrows_the_presented_token() {
    let auth = authorizer(&config());
    let parent = mint(&auth, &["packs/:pull,push"], hour());
    let holder = auth.identify(Some(&bearer(&parent))).unwrap();
    assert_eq!(holder.name(), "runner");
    let scopes =
        Scope::parse_list("repository:packs/a:pull,delete repository:packs/b:push").unwrap();
    let issued = auth.issue(&holder, &scopes).unwrap();
    let t = &issued.token;
    let (a, b) = (name("packs/a"), name("packs/b"));
    assert_eq!(check(&auth, t, &[Need::pull(&a)]).unwrap(), "runner");
    assert!(check(&auth, t, &[Need::push(&b)]).is_ok());
    assert_eq!(check(&auth, t, &[Need::push(&a)]), Err(AuthError::Denied));
    assert_eq!(check(&auth, t, &[Need::pull(&b)]), Err(AuthError::Denied));
    // delete was asked for but the parent never had it.
    assert_eq!(check(&auth, t, &[Need::delete(&a)]), Err(AuthError::Denied));
}

#[test]
fn can_pull_filters_for_every_kind_of_principal() {
    let auth = authorizer(&AuthConfig {
        users: vec![account(
            "alice",
            "wonderland",
            &["packs/a:pull", "packs/b:push"],
        )],
        anonymous_pull: vec![RepoPattern::parse("public/").unwrap()],
        ..config()
    });
    let alice = auth.authenticate_basic("alice", "wonderland").unwrap();
    let anon = auth.identify(None).unwrap();
    let parent = mint(&auth, &["packs/:pull"], hour());
    let child = narrow(&parent, Some(&["packs/b:*"]), None);
    let holder = auth.identify(Some(&bearer(&child))).unwrap();
    let repos = ["packs/a", "packs/b", "public/x", "other"];
    let visible = |p: &Principal| -> Vec<&str> {
        repos
            .iter()
            .copied()
            .filter(|r| auth.can_pull(p, r))
            .collect()
    };
    assert_eq!(visible(&alice), ["packs/a", "public/x"]);
    assert_eq!(visible(&anon), ["public/x"]);
    assert_eq!(visible(&holder), ["packs/b", "public/x"]);
    let open = authorizer(&AuthConfig::default());
    let anyone = open.identify(None).unwrap();
    assert!(repos.iter().all(|r| open.can_pull(&anyone, r)));
}

#[test]
fn mode_none_allows_everything_and_issues_nothing() {
    let open = authorizer(&AuthConfig::default());
    assert_eq!(open.mode(), AuthMode::None);
    let a = name("packs/a");
    let p = open
        .authorize(None, &[Need::push(&a), Need::delete(&a), Need::Catalog])
        .unwrap();
    assert!(p.is_anonymous());
    assert!(open.authorize(None, &[]).is_ok());
    assert_eq!(open.issue(&p, &[]).unwrap_err(), AuthError::Disabled);
    assert!(open.tokens().is_none());
}

#[test]
fn users_file_adds_accounts_and_refuses_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    let hash = hash_password("pw").unwrap();
    std::fs::write(
        &path,
        format!(
            "[[users]]\nname = \"bob\"\npassword_hash = '{hash}'\ngrants = [\"packs/:pull\"]\n\
             [[robots]]\nname = \"deployer\"\npassword_hash = '{hash}'\n"
        ),
    )
    .unwrap();
    let with_file = AuthConfig {
        users_file: path.clone(),
        users: vec![account("alice", "wonderland", &[])],
        ..config()
    };
    let auth = authorizer(&with_file);
    assert_eq!(
        auth.authenticate_basic("bob", "pw").unwrap().kind(),
        PrincipalKind::User
    );
    assert_eq!(
        auth.authenticate_basic("deployer", "pw").unwrap().kind(),
        PrincipalKind::Robot
    );
    assert!(auth.authenticate_basic("alice", "wonderland").is_ok());
    let duplicate = AuthConfig {
        robots: vec![account("bob", "x", &[])],
        ..with_file.clone()
    };
    let e = Authorizer::from_config(&duplicate).err().unwrap();
    assert!(e.to_string().contains("defined twice"), "{e}");
    std::fs::write(
        &path,
        "[[users]]\nname = \"x\"\npassword_hash = \"plain\"\n",
    )
    .unwrap();
    let e = Authorizer::from_config(&with_file).err().unwrap();
    assert!(e.to_string().contains("\"x\""), "{e}");
    std::fs::write(&path, "[[user]]\nname = \"x\"\n").unwrap();
    assert!(Authorizer::from_config(&with_file).is_err());
    let missing = AuthConfig {
        users_file: dir.path().join("absent.toml"),
        ..config()
    };
    assert!(Authorizer::from_config(&missing).is_err());
}

#[test]
fn the_root_key_comes_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = generate_key();
    let path = dir.path().join("root.key");
    std::fs::write(
        &path,
        format!(
            "# made for a test\n\n{}\n# public key: {public}\n",
            private.expose_secret()
        ),
    )
    .unwrap();
    let auth = authorizer(&AuthConfig {
        root_key: SecretString::default(),
        root_key_file: path.clone(),
        ..config()
    });
    assert_eq!(auth.tokens().unwrap().public_key(), public);
    std::fs::write(&path, "# nothing\n").unwrap();
    let e = Authorizer::from_config(&AuthConfig {
        root_key: SecretString::default(),
        root_key_file: path,
        ..config()
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("holds no key"), "{e}");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let config = AuthConfig {
        users: vec![account("alice", "wonderland", &[])],
        ..config()
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains(config.root_key.expose_secret()), "{shown}");
    assert!(!shown.contains("$argon2id$"), "{shown}");
    let auth = authorizer(&config);
    let token = mint(&auth, &["*:*"], hour());
    let creds = [
        Credentials::Basic {
            username: "alice".into(),
            password: SecretString::from("wonderland".to_owned()),
        },
        bearer(&token),
    ];
    let shown = format!("{creds:?}");
    assert!(!shown.contains("wonderland") && !shown.contains(token.expose_secret()));
    let holder = auth.identify(Some(&bearer(&token))).unwrap();
    let issued = auth.issue(&holder, &[]).unwrap();
    let shown = format!("{holder:?} {issued:?}");
    assert!(!shown.contains(issued.token.expose_secret()), "{shown}");
    assert!(!shown.contains(token.expose_secret()), "{shown}");
}

#[test]
fn shareable_across_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Authorizer>();
    send_sync::<Principal>();
    send_sync::<Credentials>();
    send_sync::<IssuedToken>();
    send_sync::<AuthError>();
}
