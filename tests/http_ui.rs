//! The web UI (`/ui/`), in process: every page, the filters and pages of the list,
//! the download, escaping, errors, and with auth on: sign-in and out, what each
//! caller sees, and deletes with and without the grant and the CSRF token.

mod common;

use common::*;
use packs_registry::auth::hash_password;
use packs_registry::config::{AccountConfig, AuthConfig, AuthMode, Config};
use serde_json::{Value, json};

fn pack(id: &str, version: &str, pack_type: &str, extra: Value) -> Value {
    let mut m = json!({
        "packId": id, "version": version, "type": pack_type,
        "name": format!("Pack {id}"), "description": format!("About {id}"),
        "author": "stellaops",
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

async fn publish(app: &TestApp, manifest: Value, content: &[u8]) {
    let r = app.publish_pack(&manifest, content).await;
    assert!(r.status.is_success(), "{}", r.text());
}

/// The example shape: a policy, an analyzer, a task depending on both, prereleases.
async fn seeded(app: &TestApp) {
    publish(
        app,
        pack("policy-baseline", "1.0.0", "policy", json!({})),
        b"policy one",
    )
    .await;
    publish(
        app,
        pack("policy-baseline", "1.2.0", "policy", json!({})),
        b"policy two",
    )
    .await;
    publish(
        app,
        pack("policy-baseline", "2.0.0-rc.1", "policy", json!({})),
        b"rc",
    )
    .await;
    publish(
        app,
        pack(
            "analyzer-secrets",
            "1.2.0",
            "analyzer",
            json!({"description": "Finds <script>alert(1)</script> secrets"}),
        ),
        b"analyzer",
    )
    .await;
    publish(
        app,
        pack(
            "task-scan-repo",
            "0.3.1",
            "task",
            json!({
                "dependencies": [
                    {"packId": "policy-baseline", "version": "^1"},
                    {"packId": "analyzer-secrets", "version": "^1.2"}
                ],
                "metadata": {"minRunnerVersion": "1.6.0"}
            }),
        ),
        b"task bytes",
    )
    .await;
}

fn html_of(r: &TestResponse, status: StatusCode) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    r.text()
}

#[actix_web::test]
async fn root_redirects_and_assets_are_served() {
    let app = TestApp::new().await;
    let r = app.get("/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/ui/"));
    let css = app.get("/ui/assets/style.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.text().contains("prefers-color-scheme: dark"));
    let js = app.get("/ui/assets/ui.js").await;
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let page = app.get("/ui/").await;
    let text = html_of(&page, StatusCode::OK);
    assert!(
        text.starts_with("<!DOCTYPE html><html lang=\"en\">"),
        "{text}"
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let missing = app.get("/ui/no/such/page").await;
    assert!(html_of(&missing, StatusCode::NOT_FOUND).contains("404 Not Found"));
}

#[actix_web::test]
async fn the_ui_can_be_switched_off() {
    let app = TestApp::build(Backend::Fs, |c| c.ui.enabled = false).await;
    assert_eq!(app.get("/ui/").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/").await.status, StatusCode::NOT_FOUND);
    // The APIs do not depend on it.
    assert_eq!(app.get("/packs").await.status, StatusCode::OK);
}

#[actix_web::test]
async fn list_filters_searches_and_escapes() {
    let app = TestApp::new().await;
    seeded(&app).await;
    let all = html_of(&app.get("/ui/").await, StatusCode::OK);
    for id in ["policy-baseline", "analyzer-secrets", "task-scan-repo"] {
        assert!(
            all.contains(&format!("href=\"/ui/packs/{id}\"")),
            "{id}: {all}"
        );
    }
    // Escaped, never markup.
    assert!(all.contains("Finds &lt;script&gt;alert(1)&lt;/script&gt; secrets"));
    assert!(!all.contains("<script>alert"));

    let tasks = html_of(&app.get("/ui/?type=task").await, StatusCode::OK);
    assert!(tasks.contains("/ui/packs/task-scan-repo"));
    assert!(!tasks.contains("/ui/packs/policy-baseline\""));
    assert!(tasks.contains("<option value=\"task\" selected>"));

    let found = html_of(&app.get("/ui/?q=SECRET").await, StatusCode::OK);
    assert!(found.contains("/ui/packs/analyzer-secrets"));
    assert!(!found.contains("/ui/packs/task-scan-repo\""));

    let short = html_of(&app.get("/ui/?q=ab").await, StatusCode::OK);
    assert!(short.contains("at least 3 characters"));

    let none = html_of(&app.get("/ui/?q=nothing-like-it").await, StatusCode::OK);
    assert!(none.contains("No packs match."));
}

#[actix_web::test]
async fn list_pages_with_a_cursor() {
    let app = TestApp::new().await;
    for i in 0..53 {
        publish(
            &app,
            pack(&format!("p{i:03}"), "1.0.0", "policy", json!({})),
            b"x",
        )
        .await;
    }
    let first = html_of(&app.get("/ui/?type=policy").await, StatusCode::OK);
    assert!(first.contains("/ui/packs/p049\""));
    assert!(!first.contains("/ui/packs/p050\""));
    let next = first
        .split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a next page link")
        .replace("&amp;", "&");
    assert_eq!(next, "/ui/?type=policy&cursor=p049");
    let second = html_of(&app.get(next).await, StatusCode::OK);
    assert!(second.contains("/ui/packs/p050\"") && second.contains("/ui/packs/p052\""));
    assert!(!second.contains("/ui/packs/p049\""));
    assert!(!second.contains("rel=\"next\""));
    assert!(second.contains(">First page</a>"));
}

#[actix_web::test]
async fn pack_page_shows_everything_about_a_version() {
    let app = TestApp::new().await;
    seeded(&app).await;
    let task = html_of(&app.get("/ui/packs/task-scan-repo").await, StatusCode::OK);
    for needle in [
        "<h1>Pack task-scan-repo <small>0.3.1</small></h1>",
        "<dt>minRunnerVersion</dt><dd>1.6.0</dd>",
        "<dt>Author</dt><dd>stellaops</dd>",
        "href=\"/ui/packs/policy-baseline\">policy-baseline</a> <code>^1</code>",
        "href=\"/ui/packs/analyzer-secrets\">analyzer-secrets</a> <code>^1.2</code>",
        "oras pull --plain-http localhost:8080/packs/task-scan-repo:0.3.1",
        "curl -fL -o task-scan-repo-0.3.1 http://localhost:8080/packs/task-scan-repo/0.3.1",
        "href=\"/ui/packs/task-scan-repo/0.3.1/download\"",
        &sha256(b"task bytes"),
        "10 B",
    ] {
        assert!(task.contains(needle), "{needle} not in {task}");
    }

    // The reverse of dependencies, as links.
    let analyzer = html_of(&app.get("/ui/packs/analyzer-secrets").await, StatusCode::OK);
    assert!(
        analyzer.contains(
            "<h2 id=\"used-by\">Used by</h2><ul><li><a href=\"/ui/packs/task-scan-repo\">"
        ),
        "{analyzer}"
    );
    assert!(!task.contains("Used by"));

    // Latest is the highest release; versions highest first, the prerelease marked.
    let policy = html_of(&app.get("/ui/packs/policy-baseline").await, StatusCode::OK);
    assert!(policy.contains("<small>1.2.0</small>"), "{policy}");
    let rc = policy
        .find(">2.0.0-rc.1</a> <span class=\"badge pre\">prerelease")
        .unwrap();
    let one = policy.find(">1.0.0</a>").unwrap();
    assert!(rc < one);
    let older = html_of(
        &app.get("/ui/packs/policy-baseline/1.0.0").await,
        StatusCode::OK,
    );
    assert!(older.contains("latest is 1.2.0"));

    // Unknown packs and versions are 404 pages.
    let r = app.get("/ui/packs/nope").await;
    assert!(html_of(&r, StatusCode::NOT_FOUND).contains("There is no pack nope."));
    let r = app.get("/ui/packs/policy-baseline/9.9.9").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.get("/ui/packs/policy-baseline/%5E1").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "a requirement is not a version page"
    );

    // The download is the content, as /packs serves it.
    let r = app.get("/ui/packs/task-scan-repo/0.3.1/download").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"task bytes");
    assert_eq!(
        r.header("etag").map(str::to_owned),
        Some(format!("\"{}\"", sha256(b"task bytes")))
    );
}

#[actix_web::test]
async fn referrers_and_repositories() {
    let app = TestApp::new().await;
    seeded(&app).await;
    let versions = app.get("/packs/task-scan-repo/versions").await.json();
    let manifest = versions["versions"][0]["manifestDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let size = app
        .get(format!("/v2/packs/task-scan-repo/manifests/{manifest}"))
        .await
        .body
        .len();
    let signature = app
        .push_referrer(
            "packs/task-scan-repo",
            &manifest,
            size,
            "application/vnd.dev.cosign.artifact.sig.v1+json",
            json!({}),
        )
        .await;
    let page = html_of(&app.get("/ui/packs/task-scan-repo").await, StatusCode::OK);
    assert!(page.contains("application/vnd.dev.cosign.artifact.sig.v1+json"));
    assert!(page.contains(&signature));

    // Any repository: its tags, a manifest by tag or digest, its referrers.
    let (_, body) = app.push_image("team/tool", "v1", b"layer").await;
    let repo = html_of(&app.get("/ui/repos/team/tool").await, StatusCode::OK);
    assert!(repo.contains("href=\"/ui/repos/team/tool?ref=v1\""));
    let shown = html_of(&app.get("/ui/repos/team/tool?ref=v1").await, StatusCode::OK);
    assert!(shown.contains(OCI_MANIFEST), "{shown}");
    assert!(
        shown.contains("&quot;schemaVersion&quot;: 2"),
        "pretty JSON, escaped"
    );
    let by_digest = app
        .get(format!("/ui/repos/team/tool?ref={}", sha256(&body)))
        .await;
    assert_eq!(by_digest.status, StatusCode::OK);
    let pack_repo = html_of(
        &app.get(format!("/ui/repos/packs/task-scan-repo?ref={manifest}"))
            .await,
        StatusCode::OK,
    );
    assert!(pack_repo.contains(&signature));

    assert_eq!(
        app.get("/ui/repos/team/none").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/ui/repos/team/tool?ref=v9").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/ui/repos/Bad..Name").await.status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn status_page() {
    let app = TestApp::new().await;
    seeded(&app).await;
    let page = html_of(&app.get("/ui/status").await, StatusCode::OK);
    assert!(
        page.contains("<span class=\"ok\">Ready</span> database"),
        "{page}"
    );
    assert!(page.contains("<span class=\"ok\">Ready</span> storage"));
    assert!(page.contains("<h2 id=\"storage\">Storage</h2>"));
    assert!(page.contains("No collection has run yet."));
}

/// Delete without auth: the confirmation sets a CSRF secret; the form needs its token.
#[actix_web::test]
async fn delete_needs_the_csrf_token() {
    let app = TestApp::new().await;
    seeded(&app).await;
    let confirm = app.get("/ui/packs/policy-baseline/1.0.0/delete").await;
    let page = html_of(&confirm, StatusCode::OK);
    let set = confirm.header("set-cookie").unwrap().to_owned();
    assert!(set.starts_with("packs_csrf=") && set.contains("HttpOnly"));
    assert!(set.contains("SameSite=Strict"));
    let cookie = set.split(';').next().unwrap().to_owned();
    let token = csrf_in(&page);
    assert_eq!(token.len(), 64);

    let post = |cookie: Option<String>, form: String| {
        let app = &app;
        async move {
            post_form(
                app,
                "/ui/packs/policy-baseline/1.0.0/delete",
                cookie.as_deref(),
                &form,
            )
            .await
        }
    };
    // No token, a wrong one, or the token without its cookie: refused, nothing gone.
    for (cookie, form) in [
        (Some(cookie.clone()), String::new()),
        (Some(cookie.clone()), format!("csrf={}", "0".repeat(64))),
        (None, format!("csrf={token}")),
    ] {
        let r = post(cookie, form).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    }
    assert_eq!(
        app.get("/packs/policy-baseline/1.0.0").await.status,
        StatusCode::OK
    );

    let r = post(Some(cookie), format!("csrf={token}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.header("location"), Some("/ui/packs/policy-baseline"));
    assert_eq!(
        app.get("/packs/policy-baseline/1.0.0").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/packs/policy-baseline/1.2.0").await.status,
        StatusCode::OK
    );
}

fn account(name: &str, password: &str, grants: &[&str]) -> AccountConfig {
    AccountConfig {
        name: name.into(),
        password_hash: hash_password(password).unwrap().into(),
        grants: grants.iter().map(|g| g.parse().unwrap()).collect(),
    }
}

/// alice may pull and delete under `packs/`; carol may pull only `packs/policy-baseline`;
/// anonymous callers may pull nothing.
fn token_mode(c: &mut Config) {
    let (root_key, _) = packs_registry::auth::generate_key();
    c.auth = AuthConfig {
        mode: AuthMode::Token,
        root_key,
        service: "registry.test".into(),
        users: vec![
            account("alice", "alice-password", &["packs/:*"]),
            account("carol", "carol-password", &["packs/policy-baseline:pull"]),
        ],
        ..AuthConfig::default()
    };
}

async fn sign_in(app: &TestApp, user: &str, password: &str) -> TestResponse {
    let form = format!("username={user}&password={password}");
    post_form(app, "/ui/login", None, &form).await
}

/// A form `POST` to `uri`, with the `Cookie` header `cookie` if given.
async fn post_form(app: &TestApp, uri: &str, cookie: Option<&str>, form: &str) -> TestResponse {
    let mut call = app
        .req(Method::POST, uri)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        call = call.header("cookie", c);
    }
    call.body(form.to_owned()).send().await
}

/// The CSRF token a page's form carries.
fn csrf_in(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a form with a CSRF token")
        .to_owned()
}

/// The `name=value` of a response's `Set-Cookie`.
fn cookie_of(r: &TestResponse) -> String {
    r.header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[actix_web::test]
async fn with_auth_pages_show_what_the_session_may_pull() {
    let app = TestApp::build(Backend::Fs, token_mode).await;
    // Publishing needs a push grant: alice's Basic credentials.
    for (id, t) in [("policy-baseline", "policy"), ("task-scan-repo", "task")] {
        let r = app
            .publish_request(&pack(id, "1.0.0", t, json!({})), b"bytes")
            .header("authorization", basic("alice", "alice-password"))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }

    // Anonymous: nothing listed, pack pages are 404, a sign-in link.
    let anon = html_of(&app.get("/ui/").await, StatusCode::OK);
    assert!(anon.contains("No packs match.") && anon.contains("href=\"/ui/login\""));
    let r = app.get("/ui/packs/policy-baseline").await;
    assert!(html_of(&r, StatusCode::NOT_FOUND).contains("Signing in may show more."));
    assert_eq!(
        app.get("/ui/packs/policy-baseline/1.0.0/download")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // A wrong password: 401, the form again, no cookie.
    let r = sign_in(&app, "alice", "wrong").await;
    assert!(html_of(&r, StatusCode::UNAUTHORIZED).contains("Wrong username or password."));
    assert!(r.header("set-cookie").is_none());

    // carol sees only what her grants cover.
    let r = sign_in(&app, "carol", "carol-password").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.starts_with("packs_session=") && set.contains("HttpOnly"),
        "{set}"
    );
    assert!(set.contains("SameSite=Strict") && set.contains("Path=/"));
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag");
    let carol = cookie_of(&r);
    let get = |cookie: &str, uri: &str| app.req(Method::GET, uri).header("cookie", cookie).send();
    let list = html_of(&get(&carol, "/ui/").await, StatusCode::OK);
    assert!(list.contains("Signed in as <strong>carol</strong>"));
    assert!(list.contains("/ui/packs/policy-baseline\""));
    assert!(!list.contains("/ui/packs/task-scan-repo\""));
    assert_eq!(
        get(&carol, "/ui/packs/task-scan-repo").await.status,
        StatusCode::NOT_FOUND
    );
    let page = html_of(
        &get(&carol, "/ui/packs/policy-baseline").await,
        StatusCode::OK,
    );
    assert!(
        !page.contains("Delete this version"),
        "carol may not delete"
    );
    assert!(page.contains("-H &quot;Authorization: Bearer $PACKS_TOKEN&quot;"));
    let r = get(&carol, "/ui/packs/policy-baseline/1.0.0/download").await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"bytes"[..]));
    // Without the grant, even with a valid CSRF token: 403, nothing deleted.
    let r = get(&carol, "/ui/packs/policy-baseline/1.0.0/delete").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A forged or expired cookie is no session.
    let forged = html_of(&get("packs_session=forged", "/ui/").await, StatusCode::OK);
    assert!(forged.contains("No packs match."));

    // alice sees both and may delete, with the CSRF token of her session.
    let alice = cookie_of(&sign_in(&app, "alice", "alice-password").await);
    let list = html_of(&get(&alice, "/ui/").await, StatusCode::OK);
    assert!(list.contains("/ui/packs/task-scan-repo\""));
    let confirm = html_of(
        &get(&alice, "/ui/packs/task-scan-repo/1.0.0/delete").await,
        StatusCode::OK,
    );
    let token = csrf_in(&confirm);
    let delete = |csrf: String| {
        let form = format!("csrf={csrf}");
        let alice = alice.clone();
        let app = &app;
        async move {
            post_form(
                app,
                "/ui/packs/task-scan-repo/1.0.0/delete",
                Some(&alice),
                &form,
            )
            .await
        }
    };
    assert_eq!(delete(String::new()).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&alice, "/ui/packs/task-scan-repo").await.status,
        StatusCode::OK
    );
    let r = delete(token.clone()).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("/ui/"),
        "the last version: back to the list"
    );
    assert_eq!(
        get(&alice, "/ui/packs/task-scan-repo").await.status,
        StatusCode::NOT_FOUND
    );

    // Sign-out needs the token too, and clears the cookie.
    let out = |csrf: String| {
        let form = format!("csrf={csrf}");
        let alice = alice.clone();
        let app = &app;
        async move { post_form(app, "/ui/logout", Some(&alice), &form).await }
    };
    assert_eq!(out(String::new()).await.status, StatusCode::FORBIDDEN);
    let r = out(token).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let cleared = r.header("set-cookie").unwrap();
    assert!(
        cleared.starts_with("packs_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
