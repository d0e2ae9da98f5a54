//! Authentication and authorization through the whole application (`auth.mode =
//! "token"`): challenges, the token endpoint (Docker's GET and OAuth2's POST),
//! bearer tokens minted ahead of time and attenuated, and every refusal answered
//! with the right status and body while nothing is stored.

mod common;

use std::time::{Duration, SystemTime};

use base64::Engine;
use common::*;
use insta::assert_json_snapshot;
use packs_registry::auth::{Attenuation, Grant, Tokens, attenuate, generate_key, hash_password};
use packs_registry::config::{AccountConfig, AuthConfig, AuthMode, Config};
use secrecy::ExposeSecret;
use serde_json::json;

const ALICE: &str = "alice-password";
const BOB: &str = "bob-password";

fn account(name: &str, password: &str, grants: &[&str]) -> AccountConfig {
    AccountConfig {
        name: name.into(),
        password_hash: hash_password(password).unwrap().into(),
        grants: grants.iter().map(|g| g.parse().unwrap()).collect(),
    }
}

/// alice may push and pull under `packs/` and `team/`, and list the catalog; bob (a
/// robot) may only pull `packs/`; anyone may pull `public/`.
fn token_mode(c: &mut Config, root_key: &secrecy::SecretString) {
    c.auth = AuthConfig {
        mode: AuthMode::Token,
        root_key: root_key.clone(),
        service: "registry.test".into(),
        users: vec![account(
            "alice",
            ALICE,
            &["packs/:pull,push", "team/:*", "registry:catalog:*"],
        )],
        robots: vec![account("bob", BOB, &["packs/:pull"])],
        anonymous_pull: vec!["public/".parse().unwrap()],
        ..AuthConfig::default()
    };
}

struct Fixture {
    app: TestApp,
    tokens: Tokens,
}

async fn fixture() -> Fixture {
    let (root_key, _) = generate_key();
    let key = root_key.clone();
    let app = TestApp::build(Backend::Fs, move |c| token_mode(c, &key)).await;
    let mut auth = AuthConfig::default();
    token_mode_config(&mut auth, &root_key);
    Fixture {
        app,
        tokens: Tokens::from_config(&auth).unwrap(),
    }
}

fn token_mode_config(auth: &mut AuthConfig, root_key: &secrecy::SecretString) {
    auth.mode = AuthMode::Token;
    auth.root_key = root_key.clone();
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl Fixture {
    /// A token from `GET /token` for `scopes` with these credentials.
    async fn token(&self, credentials: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let query: Vec<String> = scopes
            .iter()
            .map(|s| format!("scope={}", urlencode(s)))
            .collect();
        let mut call = self.app.req(
            Method::GET,
            format!("/token?service=registry.test&{}", query.join("&")),
        );
        if let Some((u, p)) = credentials {
            call = call.header("authorization", basic(u, p));
        }
        let r = call.send().await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let body = r.json();
        assert_eq!(body["token"], body["access_token"]);
        assert!(body["expires_in"].as_u64().unwrap() >= 60);
        assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
        body["token"].as_str().unwrap().to_owned()
    }

    fn minted(&self, grants: &[&str], expires_in: Duration) -> String {
        let grants: Vec<Grant> = grants.iter().map(|g| g.parse().unwrap()).collect();
        self.tokens
            .mint("taskrunner-eu", &grants, SystemTime::now() + expires_in)
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    /// Pushes a one-layer image into `repo` as `tag` with `bearer`; the raw answer of
    /// the manifest PUT (blobs must go in first).
    async fn push(&self, bearer: &str, repo: &str, tag: &str) -> (TestResponse, Vec<u8>) {
        let auth = format!("Bearer {bearer}");
        let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
        let mut digests = Vec::new();
        for blob in [&cfg[..], b"layer bytes"] {
            let digest = sha256(blob);
            let r = self
                .app
                .req(
                    Method::POST,
                    format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                )
                .header("authorization", &auth)
                .body(blob.to_vec())
                .send()
                .await;
            if r.status != StatusCode::CREATED {
                return (r, Vec::new());
            }
            digests.push(digest);
        }
        let body = image_manifest(
            OCI_MANIFEST,
            (OCI_CONFIG, &digests[0], cfg.len()),
            &[(OCI_LAYER, &digests[1], 11)],
        );
        let r = self
            .app
            .req(Method::PUT, format!("/v2/{repo}/manifests/{tag}"))
            .header("authorization", &auth)
            .header("content-type", OCI_MANIFEST)
            .body(body.clone())
            .send()
            .await;
        (r, body)
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn challenge(r: &TestResponse) -> String {
    r.header("www-authenticate")
        .unwrap_or_else(|| panic!("no challenge: {} {}", r.status, r.text()))
        .to_owned()
}

#[actix_web::test]
async fn the_base_endpoint_challenges_and_the_token_flow_opens_it() {
    let f = fixture().await;
    let r = f.app.get("/v2/").await;
    assert_json_snapshot!(r.error(StatusCode::UNAUTHORIZED), @r#"
        {
          "errors": [
            {
              "code": "UNAUTHORIZED",
              "message": "authentication required"
            }
          ]
        }
    "#);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="http://127.0.0.1:5000/token",service="registry.test""#
    );
    // The realm follows the Host the client used.
    let r = f
        .app
        .req(Method::GET, "/v2/")
        .header("host", "registry.example:5000")
        .send()
        .await;
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="http://registry.example:5000/token",service="registry.test""#
    );
    let token = f.token(Some(("alice", ALICE)), &[]).await;
    let r = f
        .app
        .req(Method::GET, "/v2/")
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Open endpoints stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(f.app.get(path).await.status, StatusCode::OK, "{path}");
    }
}

#[actix_web::test]
async fn a_pull_needs_a_grant_and_the_challenge_names_it() {
    let f = fixture().await;
    let token = f
        .token(Some(("alice", ALICE)), &["repository:packs/a:pull,push"])
        .await;
    let (r, body) = f.push(&token, "packs/a", "v1").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // Anonymous: 401, with the exact scope this request needs.
    let r = f.app.get("/v2/packs/a/manifests/v1").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="http://127.0.0.1:5000/token",service="registry.test",scope="repository:packs/a:pull""#
    );
    // bob's robot token for that scope pulls.
    let bob = f
        .token(Some(("bob", BOB)), &["repository:packs/a:pull"])
        .await;
    let r = f
        .app
        .req(Method::GET, "/v2/packs/a/manifests/v1")
        .header("authorization", format!("Bearer {bob}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body == body);
    // A token for another repository: 403.
    let other = f
        .token(Some(("bob", BOB)), &["repository:packs/b:pull"])
        .await;
    let r = f
        .app
        .req(Method::GET, "/v2/packs/a/manifests/v1")
        .header("authorization", format!("Bearer {other}"))
        .send()
        .await;
    assert_json_snapshot!(r.error(StatusCode::FORBIDDEN), @r#"
        {
          "errors": [
            {
              "code": "DENIED",
              "message": "access denied"
            }
          ]
        }
    "#);
    // The challenge says the token lacks the scope (RFC 6750), so that a client
    // holding a token for another scope fetches one for this request.
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="http://127.0.0.1:5000/token",service="registry.test",scope="repository:packs/a:pull",error="insufficient_scope""#
    );
    // bob's fresh token for it pulls; for a push, his new token still lacks the
    // grant: 403 again.
    let bob = f
        .token(Some(("bob", BOB)), &["repository:packs/a:pull,push"])
        .await;
    let (r, _) = f.push(&bob, "packs/a", "v2").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(challenge(&r).ends_with(r#",error="insufficient_scope""#));
}

#[actix_web::test]
async fn scopes_beyond_the_grants_are_dropped_not_refused() {
    let f = fixture().await;
    // bob asks for push: he gets a token, without push in it.
    let bob = f
        .token(Some(("bob", BOB)), &["repository:packs/a:pull,push,delete"])
        .await;
    let (r, _) = f.push(&bob, "packs/a", "v1").await;
    assert_eq!(
        r.error(StatusCode::FORBIDDEN)["errors"][0]["code"],
        "DENIED"
    );
    // Nothing was stored.
    let alice = f
        .token(Some(("alice", ALICE)), &["repository:packs/a:pull"])
        .await;
    let r = f
        .app
        .req(Method::GET, "/v2/packs/a/tags/list")
        .header("authorization", format!("Bearer {alice}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    // alice may not delete under packs/: 403 on use.
    let alice = f
        .token(
            Some(("alice", ALICE)),
            &["repository:packs/a:pull,push,delete"],
        )
        .await;
    let (r, _) = f.push(&alice, "packs/a", "v1").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = f
        .app
        .req(Method::DELETE, "/v2/packs/a/manifests/v1")
        .header("authorization", format!("Bearer {alice}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn anonymous_pull_but_never_anonymous_push() {
    let f = fixture().await;
    // Anonymous pull of a public repository: no credentials needed at all.
    let r = f.app.get("/v2/public/x/tags/list").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "allowed through, and unknown"
    );
    // An anonymous token (GET /token without credentials) grants only that.
    let anon = f.token(None, &["repository:public/x:pull,push"]).await;
    let (r, _) = f.push(&anon, "public/x", "v1").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(challenge(&r).contains(r#"scope="repository:public/x:pull,push""#));
    // Anonymous push without any token: 401 with the challenge.
    let r = f
        .app
        .req(Method::POST, "/v2/public/x/blobs/uploads/")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn invalid_tokens_are_refused_with_a_challenge() {
    let f = fixture().await;
    let good = f.minted(&["packs/:pull"], Duration::from_secs(600));
    let expired = f.minted(&["packs/:pull"], Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1100));
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (other_key, _) = generate_key();
    let mut foreign = AuthConfig::default();
    token_mode_config(&mut foreign, &other_key);
    let foreign = Tokens::from_config(&foreign)
        .unwrap()
        .mint(
            "intruder",
            &["packs/:pull".parse().unwrap()],
            SystemTime::now() + Duration::from_secs(600),
        )
        .unwrap();
    for (what, token, message) in [
        ("expired", expired.as_str(), "token expired"),
        ("tampered", tampered.as_str(), "invalid token"),
        ("garbage", "not-a-biscuit", "invalid token"),
        ("unknown key", foreign.expose_secret(), "invalid token"),
    ] {
        let r = f
            .app
            .req(Method::GET, "/v2/packs/a/tags/list")
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await;
        let body = r.error(StatusCode::UNAUTHORIZED);
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{what}");
        let got = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            got == message || (what == "unknown key" && got.contains("unknown key")),
            "{what}: {got}"
        );
        assert!(challenge(&r).starts_with("Bearer realm="), "{what}");
    }
    // The good one works.
    let r = f
        .app
        .req(Method::GET, "/v2/packs/a/tags/list")
        .header("authorization", format!("Bearer {good}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
}

#[actix_web::test]
async fn a_pre_minted_token_works_and_its_attenuations_only_narrow() {
    let f = fixture().await;
    let runner = f.minted(&["packs/:pull,push"], Duration::from_secs(3600));
    let (r, _) = f.push(&runner, "packs/policy-a", "1.0.0").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // Narrowed offline to pulling one repository.
    let narrow = attenuate(
        &runner,
        &Attenuation {
            grants: Some(vec!["packs/policy-a:pull".parse().unwrap()]),
            expires: None,
        },
    )
    .unwrap();
    let narrow = narrow.expose_secret();
    let get = |token: String, path: &'static str| {
        f.app
            .req(Method::GET, path)
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    assert_eq!(
        get(narrow.to_owned(), "/v2/packs/policy-a/manifests/1.0.0")
            .await
            .status,
        StatusCode::OK
    );
    // It cannot do what it was narrowed away from, nor what the parent never had.
    assert_eq!(
        get(narrow.to_owned(), "/v2/packs/policy-b/tags/list")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let (r, _) = f.push(narrow, "packs/policy-a", "2.0.0").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let wider = attenuate(
        narrow,
        &Attenuation {
            grants: Some(vec!["*:*".parse().unwrap()]),
            expires: None,
        },
    )
    .unwrap();
    assert_eq!(
        get(wider.expose_secret().to_owned(), "/v2/other/tags/list")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let (r, _) = f
        .push(wider.expose_secret(), "packs/policy-a", "3.0.0")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The token endpoint narrows it too (a TaskRunner exchanging its long-lived
    // token for a short one): a scope beyond it is dropped.
    let r = f
        .app
        .req(
            Method::GET,
            "/token?scope=repository:packs/policy-a:pull,delete",
        )
        .header("authorization", format!("Bearer {runner}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let short = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        get(short.clone(), "/v2/packs/policy-a/manifests/1.0.0")
            .await
            .status,
        StatusCode::OK
    );
    let r = f
        .app
        .req(Method::DELETE, "/v2/packs/policy-a/manifests/1.0.0")
        .header("authorization", format!("Bearer {short}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn a_mount_needs_pull_on_its_source() {
    let f = fixture().await;
    let alice = f
        .token(Some(("alice", ALICE)), &["repository:team/src:pull,push"])
        .await;
    let (r, _) = f.push(&alice, "team/src", "v1").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let layer = sha256(b"layer bytes");
    // A token that may push packs/dst but not pull team/src.
    let dst_only = f.minted(&["packs/dst:push"], Duration::from_secs(600));
    let r = f
        .app
        .req(
            Method::POST,
            format!("/v2/packs/dst/blobs/uploads/?mount={layer}&from=team/src"),
        )
        .header("authorization", format!("Bearer {dst_only}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    // Nothing was linked.
    let both = f.minted(
        &["packs/dst:pull,push", "team/src:pull"],
        Duration::from_secs(600),
    );
    let r = f
        .app
        .req(Method::HEAD, format!("/v2/packs/dst/blobs/{layer}"))
        .header("authorization", format!("Bearer {both}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // With pull on the source too, it mounts.
    let r = f
        .app
        .req(
            Method::POST,
            format!("/v2/packs/dst/blobs/uploads/?mount={layer}&from=team/src"),
        )
        .header("authorization", format!("Bearer {both}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[actix_web::test]
async fn basic_credentials_and_the_oauth2_form() {
    let f = fixture().await;
    // Wrong password and unknown user look the same, and are counted.
    for (user, password) in [("alice", "wrong"), ("mallory", "x")] {
        let r = f
            .app
            .req(Method::GET, "/token?scope=repository:packs/a:pull")
            .header("authorization", basic(user, password))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.json(),
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]})
        );
    }
    let metrics = f.app.get("/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"packs_registry_auth_failures_total{reason="bad_credentials"} 2"#),
        "{metrics}"
    );
    // Basic straight on /v2 works too (slow, but some clients do it).
    let r = f
        .app
        .req(Method::GET, "/v2/_catalog")
        .header("authorization", basic("alice", ALICE))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = f
        .app
        .req(Method::GET, "/v2/_catalog")
        .header("authorization", basic("bob", BOB))
        .send()
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "the catalog is its own grant"
    );

    // POST /token, grant_type=password with a refresh token, then a refresh.
    let form = format!(
        "grant_type=password&username=alice&password={ALICE}&service=registry.test\
         &client_id=docker&access_type=offline&scope={}",
        urlencode("repository:packs/a:pull,push")
    );
    let r = f
        .app
        .req(Method::POST, "/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let (pushed, _) = f
        .push(r.json()["access_token"].as_str().unwrap(), "packs/a", "v1")
        .await;
    assert_eq!(pushed.status, StatusCode::CREATED);
    let form = format!(
        "grant_type=refresh_token&refresh_token={refresh}&service=registry.test&scope={}",
        urlencode("repository:packs/a:pull")
    );
    let r = f
        .app
        .req(Method::POST, "/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["refresh_token"], json!(refresh));
    let r = f
        .app
        .req(Method::POST, "/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f
        .app
        .req(Method::GET, "/token?scope=repository:Not%20A%20Name:pull")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// `/packs` asks the same authorizer: listings show only what the caller may pull,
/// a publish needs push on the pack's repository, a delete needs delete.
#[actix_web::test]
async fn packs_obey_the_same_grants() {
    let f = fixture().await;
    let publish = |bearer: Option<String>, id: &'static str| {
        let manifest = json!({"packId": id, "version": "1.0.0", "type": "policy", "name": id});
        let boundary = "XBOUNDARY";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\
             Content-Type: application/json\r\n\r\n{manifest}\r\n--{boundary}\r\n\
             Content-Disposition: form-data; name=\"content\"; filename=\"c.tar.gz\"\r\n\
             Content-Type: application/octet-stream\r\n\r\ncontent of {id}\r\n--{boundary}--\r\n"
        );
        let mut call = f
            .app
            .req(Method::POST, "/packs")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        if let Some(b) = bearer {
            call = call.header("authorization", format!("Bearer {b}"));
        }
        call.send()
    };
    let writer = f.minted(&["packs/:pull,push"], Duration::from_secs(600));
    for id in ["visible", "hidden"] {
        let r = publish(Some(writer.clone()), id).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    // Anonymous publish: 401 with a challenge, nothing stored.
    let r = publish(None, "sneaky").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "UNAUTHORIZED");
    assert!(challenge(&r).starts_with("Bearer "));
    // A pull-only token: 403 once the manifest names the repository.
    let reader = f.minted(&["packs/visible:pull"], Duration::from_secs(600));
    let r = publish(Some(reader.clone()), "sneaky").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "FORBIDDEN");
    let r = f
        .app
        .req(Method::GET, "/v2/packs/sneaky/tags/list")
        .header("authorization", format!("Bearer {writer}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing stored");
    // The listing shows only what the reader may pull.
    let r = f
        .app
        .req(Method::GET, "/packs")
        .header("authorization", format!("Bearer {reader}"))
        .send()
        .await;
    let ids: Vec<String> = r.json()["packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["packId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["visible"]);
    let r = f.app.get("/packs").await;
    assert_eq!(r.json()["packs"], json!([]), "anonymous sees nothing");
    // Reads and deletes of one pack.
    let get = |bearer: &str, path: &str| {
        f.app
            .req(Method::GET, path.to_owned())
            .header("authorization", format!("Bearer {bearer}"))
            .send()
    };
    assert_eq!(get(&reader, "/packs/visible").await.status, StatusCode::OK);
    assert_eq!(
        get(&reader, "/packs/hidden/1.0.0").await.status,
        StatusCode::FORBIDDEN
    );
    let r = f
        .app
        .req(Method::DELETE, "/packs/visible/1.0.0")
        .header("authorization", format!("Bearer {writer}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "push is not delete");
    let deleter = f.minted(&["packs/visible:delete"], Duration::from_secs(600));
    let r = f
        .app
        .req(Method::DELETE, "/packs/visible/1.0.0")
        .header("authorization", format!("Bearer {deleter}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// With `auth.protect_metrics`, scraping needs the catalog grant.
#[actix_web::test]
async fn metrics_can_require_a_grant() {
    let (root_key, _) = generate_key();
    let app = TestApp::build(Backend::Fs, move |c| {
        token_mode(c, &root_key);
        c.auth.protect_metrics = true;
    })
    .await;
    assert_eq!(app.get("/metrics").await.status, StatusCode::UNAUTHORIZED);
    let scrape = |user: &str, password: &str| {
        app.req(Method::GET, "/metrics")
            .header("authorization", basic(user, password))
            .send()
    };
    assert_eq!(scrape("bob", BOB).await.status, StatusCode::FORBIDDEN);
    assert_eq!(scrape("alice", ALICE).await.status, StatusCode::OK);
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
}

/// Bundles obey the same grants: an export is a pull of every repository in it, an
/// import a push to every repository it writes (refused before anything is stored).
#[actix_web::test]
async fn bundles_obey_the_same_grants() {
    let f = fixture().await;
    let writer = f.minted(&["packs/:pull,push"], Duration::from_secs(600));
    let manifest = json!({"packId": "exported", "version": "1.0.0", "type": "task", "name": "x"});
    let boundary = "XBOUNDARY";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\
         Content-Type: application/json\r\n\r\n{manifest}\r\n--{boundary}\r\n\
         Content-Disposition: form-data; name=\"content\"; filename=\"c\"\r\n\
         Content-Type: application/octet-stream\r\n\r\nbundle me\r\n--{boundary}--\r\n"
    );
    let r = f
        .app
        .req(Method::POST, "/packs")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("authorization", format!("Bearer {writer}"))
        .body(body)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let export = |bearer: Option<String>| {
        let mut call = f.app.req(Method::GET, "/packs/export?pack=exported@1.0.0");
        if let Some(b) = bearer {
            call = call.header("authorization", format!("Bearer {b}"));
        }
        call.send()
    };
    assert_eq!(export(None).await.status, StatusCode::UNAUTHORIZED);
    let other = f.minted(&["packs/other:pull"], Duration::from_secs(600));
    assert_eq!(export(Some(other)).await.status, StatusCode::FORBIDDEN);
    let archive = export(Some(writer.clone())).await;
    assert_eq!(archive.status, StatusCode::OK);
    let import = |bearer: Option<String>| {
        let mut call = f
            .app
            .req(Method::POST, "/packs/import")
            .header("content-type", "application/x-tar")
            .body(archive.body.clone());
        if let Some(b) = bearer {
            call = call.header("authorization", format!("Bearer {b}"));
        }
        call.send()
    };
    // Deleted, then imported back: only with push on its repository.
    let deleter = f.minted(&["packs/:delete"], Duration::from_secs(600));
    let r = f
        .app
        .req(Method::DELETE, "/packs/exported/1.0.0")
        .header("authorization", format!("Bearer {deleter}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(import(None).await.status, StatusCode::UNAUTHORIZED);
    let reader = f.minted(&["packs/:pull"], Duration::from_secs(600));
    assert_eq!(
        import(Some(reader.clone())).await.status,
        StatusCode::FORBIDDEN
    );
    let r = f
        .app
        .req(Method::GET, "/packs/exported")
        .header("authorization", format!("Bearer {reader}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing imported");
    let r = import(Some(writer)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}
