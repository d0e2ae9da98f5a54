//! The web UI in a real browser: headless Chromium driven over WebDriver
//! (`fantoccini`) against the release-shaped binary serving `examples/packs`.
//!
//! Needs a running chromedriver at `PACKS_TEST_CHROMEDRIVER` (and axe-core at
//! `PACKS_TEST_AXE`); `tests/ui/install.sh` installs both, `.ci/run` starts the
//! driver. Without `PACKS_TEST_CHROMEDRIVER` the tests are ignored (see `build.rs`),
//! never passed. Screenshots at desktop and phone widths go to
//! `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// A `packs-registry serve` process on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary with `config` (TOML) and publishes the example packs.
    fn start(config: &str, credentials: Option<&str>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config_path = dir.path().join("registry.toml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_packs-registry"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("PACKS__LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start packs-registry");
        let base = format!("http://127.0.0.1:{port}");
        let server = Server {
            child,
            base,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !curl_ok(&format!("{}/readyz", server.base)) {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let publish = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/packs/publish.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(publish).arg(&server.base);
        if let Some(c) = credentials {
            cmd.env("PACKS_CREDENTIALS", c);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "publish: {out:?}");
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn curl_ok(url: &str) -> bool {
    Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", url])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A headless Chromium session.
async fn browser() -> Client {
    let driver =
        std::env::var("PACKS_TEST_CHROMEDRIVER").unwrap_or_else(|_| "http://127.0.0.1:9515".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"]
        }),
    );
    ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(caps)
        .connect(&driver)
        .await
        .unwrap_or_else(|e| panic!("chromedriver at {driver}: {e}"))
}

/// Clicks `css` and waits for the page it leads to (a new document whose address
/// contains `to`; a form may answer on its own address).
async fn click_to(c: &Client, css: &str, to: &str) {
    c.execute("window.packsOldPage = true;", vec![])
        .await
        .unwrap();
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = c.current_url().await.unwrap();
        let here = format!("{}?{}", now.path(), now.query().unwrap_or_default());
        let loaded = c
            .execute(
                "return window.packsOldPage === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await
            .is_ok_and(|s| s == json!(true));
        if loaded && here.contains(to) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "clicking {css} did not lead to {to}: at {here}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Presses and releases `key`.
async fn press(c: &Client, key: Key) {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key.into() })
        .then(KeyAction::Up { value: key.into() });
    c.perform_actions(keys).await.unwrap();
}

/// The class of the focused element.
async fn active(c: &Client) -> Value {
    c.execute("return document.activeElement.className;", vec![])
        .await
        .unwrap()
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn body_text(c: &Client) -> String {
    text_of(c, "body").await
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves the page at desktop and phone widths.
async fn screenshot(c: &Client, name: &str) {
    for (label, width, height) in [("desktop", 1280, 900), ("phone", 390, 844)] {
        c.set_window_size(width, height).await.unwrap();
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(screenshots().join(format!("{name}-{label}.png")), png).unwrap();
    }
    c.set_window_size(1280, 900).await.unwrap();
}

/// axe-core in the page: no serious or critical violation.
async fn accessible(c: &Client, page: &str) {
    let axe = std::env::var("PACKS_TEST_AXE").expect("PACKS_TEST_AXE: run tests/ui/install.sh");
    let source = std::fs::read_to_string(&axe).unwrap_or_else(|e| panic!("{axe}: {e}"));
    c.execute(&source, vec![]).await.expect("inject axe-core");
    let result = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']})
               .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact,
                                                       nodes: v.nodes.map(n => n.html)}))))
               .catch(e => done({error: String(e)}));",
            vec![],
        )
        .await
        .unwrap();
    let violations = result.as_array().unwrap_or_else(|| panic!("axe: {result}"));
    let bad: Vec<&Value> = violations
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    assert!(bad.is_empty(), "{page}: accessibility violations {bad:#?}");
}

/// SHA-256 (hex) of what `fetch(url)` returns in the page.
async fn fetched_sha256(c: &Client, url: &str) -> String {
    c.execute_async(
        "const [url, done] = arguments;
         fetch(url).then(r => r.arrayBuffer()).then(b => crypto.subtle.digest('SHA-256', b))
           .then(h => done(Array.from(new Uint8Array(h))
                              .map(x => x.toString(16).padStart(2, '0')).join('')))
           .catch(e => done('error: ' + e));",
        vec![json!(url)],
    )
    .await
    .unwrap()
    .as_str()
    .unwrap()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(packs_test_chromedriver),
    ignore = "needs chromedriver: run tests/ui/install.sh, start chromedriver, set PACKS_TEST_CHROMEDRIVER"
)]
async fn browse_search_open_download_and_delete() {
    let server = Server::start("", None);
    let c = browser().await;

    // The list, its filter and its search.
    c.goto(&server.url("/")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/");
    let list = body_text(&c).await;
    for name in [
        "policy-baseline",
        "analyzer-secrets",
        "task-scan-repo",
        "bundle-baseline",
    ] {
        assert!(list.contains(name), "{name} in {list}");
    }
    accessible(&c, "pack list").await;
    screenshot(&c, "packs").await;

    // The keyboard: the first Tab reaches the skip link, which leads to the content.
    press(&c, Key::Tab).await;
    assert_eq!(active(&c).await, json!("skip"));
    press(&c, Key::Enter).await;
    assert_eq!(c.current_url().await.unwrap().fragment(), Some("main"));
    press(&c, Key::Tab).await;
    let focused = c
        .execute("return document.activeElement.id;", vec![])
        .await
        .unwrap();
    assert_eq!(
        focused,
        json!("q"),
        "from the content, Tab reaches the search field"
    );

    c.find(Locator::Css("#type"))
        .await
        .unwrap()
        .select_by_value("task")
        .await
        .unwrap();
    click_to(&c, "form.filters button", "type=task").await;
    let tasks = text_of(&c, "table.packs").await;
    assert!(
        tasks.contains("task-scan-repo") && !tasks.contains("policy-baseline"),
        "{tasks}"
    );

    c.goto(&server.url("/ui/")).await.unwrap();
    let q = c.find(Locator::Css("#q")).await.unwrap();
    q.send_keys("leaked").await.unwrap();
    click_to(&c, "form.filters button", "q=leaked").await;
    let found = text_of(&c, "table.packs").await;
    assert!(
        found.contains("analyzer-secrets") && !found.contains("bundle-baseline"),
        "{found}"
    );

    // Open a pack, follow a dependency link, read a command, download.
    c.goto(&server.url("/ui/")).await.unwrap();
    click_to(
        &c,
        "a[href='/ui/packs/task-scan-repo']",
        "/ui/packs/task-scan-repo",
    )
    .await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/ui/packs/task-scan-repo"
    );
    let page = body_text(&c).await;
    assert!(page.contains("minRunnerVersion"), "{page}");
    accessible(&c, "pack page").await;
    screenshot(&c, "pack").await;
    let oras = text_of(&c, "#cmd-0").await;
    let host = server.base.trim_start_matches("http://");
    assert_eq!(
        oras,
        format!("oras pull --plain-http {host}/packs/task-scan-repo:0.3.1")
    );
    // With JavaScript on, the copy buttons show.
    assert!(
        c.find(Locator::Css("button.copy"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );

    let href = c
        .find(Locator::Css("a.button[download]"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let expected = Command::new("curl")
        .args(["-fsS", &server.url("/packs/task-scan-repo/0.3.1")])
        .output()
        .unwrap()
        .stdout;
    let expected = hex_sha256(&expected);
    assert_eq!(fetched_sha256(&c, &href).await, expected);

    click_to(
        &c,
        "a[href='/ui/packs/policy-baseline']",
        "/ui/packs/policy-baseline",
    )
    .await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/ui/packs/policy-baseline"
    );
    assert!(
        text_of(&c, "#used-by + ul")
            .await
            .contains("task-scan-repo")
    );

    // The status page.
    c.goto(&server.url("/ui/status")).await.unwrap();
    assert!(body_text(&c).await.contains("Ready database"));
    accessible(&c, "status page").await;
    screenshot(&c, "status").await;

    // Delete with a forged CSRF token: refused, the version stays.
    c.goto(&server.url("/ui/packs/analyzer-secrets/1.2.0/delete"))
        .await
        .unwrap();
    accessible(&c, "delete confirmation").await;
    c.execute(
        "document.querySelector('input[name=csrf]').value = '0'.repeat(64);",
        vec![],
    )
    .await
    .unwrap();
    click_to(&c, "button.danger", "/delete").await;
    assert!(body_text(&c).await.contains("403 Forbidden"));
    assert!(curl_ok(&server.url("/packs/analyzer-secrets/1.2.0")));
    // With the page's own token: deleted.
    c.goto(&server.url("/ui/packs/analyzer-secrets/1.2.0/delete"))
        .await
        .unwrap();
    click_to(&c, "button.danger", "/ui/?").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/");
    assert!(!curl_ok(&server.url("/packs/analyzer-secrets/1.2.0")));

    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(packs_test_chromedriver),
    ignore = "needs chromedriver: run tests/ui/install.sh, start chromedriver, set PACKS_TEST_CHROMEDRIVER"
)]
async fn sign_in_and_out_with_auth_on() {
    let (root_key, _) = packs_registry::auth::generate_key();
    let hash = packs_registry::auth::hash_password("alice-password").unwrap();
    let config = format!(
        "[auth]\nmode = \"token\"\nroot_key = \"{}\"\n\n\
         [[auth.users]]\nname = \"alice\"\npassword_hash = \"{}\"\ngrants = [\"packs/:*\"]\n",
        secrecy::ExposeSecret::expose_secret(&root_key),
        hash,
    );
    let server = Server::start(&config, Some("alice:alice-password"));
    let c = browser().await;

    // Anonymous: nothing to see.
    c.goto(&server.url("/ui/")).await.unwrap();
    assert!(body_text(&c).await.contains("No packs match."));
    click_to(&c, "a[href='/ui/login']", "/ui/login").await;
    accessible(&c, "sign-in form").await;
    screenshot(&c, "sign-in").await;

    // A wrong password, then the right one.
    c.find(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys("nope")
        .await
        .unwrap();
    click_to(&c, "form.login button", "/ui/login").await;
    assert!(body_text(&c).await.contains("Wrong username or password."));
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys("alice-password")
        .await
        .unwrap();
    click_to(&c, "form.login button", "/ui/?").await;
    let list = body_text(&c).await;
    assert!(
        list.contains("Signed in as alice") && list.contains("policy-baseline"),
        "{list}"
    );
    // The session cookie is out of the page's reach.
    let cookies = c.execute("return document.cookie;", vec![]).await.unwrap();
    assert_eq!(cookies, json!(""));

    // Signed in, the download works from the page.
    c.goto(&server.url("/ui/packs/policy-baseline"))
        .await
        .unwrap();
    let href = c
        .find(Locator::Css("a.button[download]"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched_sha256(&c, &href).await.len(), 64);

    click_to(&c, "header form button", "/ui/?").await;
    let after = body_text(&c).await;
    assert!(
        after.contains("Sign in") && after.contains("No packs match."),
        "{after}"
    );
    c.close().await.unwrap();
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
