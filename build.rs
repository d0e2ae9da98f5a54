//! Decides which tests that need outside services run (see `tests/prod/mod.rs`).
//!
//! A test that needs PostgreSQL is compiled with `#[ignore]` unless
//! `PACKS_TEST_POSTGRES_URL` is set, and one that needs an S3-compatible server unless
//! `PACKS_TEST_S3_ENDPOINT` is, and the browser test unless `PACKS_TEST_CHROMEDRIVER`
//! (a running chromedriver) is: `cargo test`'s summary then says how many did not run
//! (and the ignore message says how to enable them) instead of reporting skipped
//! tests as passed. When `CI` is set they always run, and a missing service fails
//! them.

fn main() {
    println!("cargo::rerun-if-env-changed=PACKS_TEST_POSTGRES_URL");
    println!("cargo::rerun-if-env-changed=PACKS_TEST_S3_ENDPOINT");
    println!("cargo::rerun-if-env-changed=PACKS_TEST_CHROMEDRIVER");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rustc-check-cfg=cfg(packs_test_postgres)");
    println!("cargo::rustc-check-cfg=cfg(packs_test_s3)");
    println!("cargo::rustc-check-cfg=cfg(packs_test_chromedriver)");
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci || set("PACKS_TEST_POSTGRES_URL") {
        println!("cargo::rustc-cfg=packs_test_postgres");
    }
    if ci || set("PACKS_TEST_S3_ENDPOINT") {
        println!("cargo::rustc-cfg=packs_test_s3");
    }
    // The web UI in headless Chromium (tests/ui_browser.rs, tests/ui/install.sh).
    if ci || set("PACKS_TEST_CHROMEDRIVER") {
        println!("cargo::rustc-cfg=packs_test_chromedriver");
    }
    code_order();
}

/// Release builds of the server place the functions it runs at start-up and while
/// serving side by side, in the order `tools/code-order.txt` lists them (written by
/// `tools/code_order.py`). The kernel maps code 64 KiB around every page a process
/// runs; with the functions spread over the whole binary, that mapped most of the
/// code after start. Only where the linker is rustc's own lld, which takes the list:
/// x86_64 Linux (glibc) with rustc 1.90 or later and no linker of one's own.
/// `PACKS_CODE_ORDER=0` turns it off. A name the binary no longer has is skipped.
fn code_order() {
    const LIST: &str = "tools/code-order.txt";
    println!("cargo::rerun-if-changed={LIST}");
    println!("cargo::rerun-if-env-changed=PACKS_CODE_ORDER");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let lld = var("PROFILE") == "release"
        && var("PACKS_CODE_ORDER") != "0"
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && var("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty()
        && !var("CARGO_ENCODED_RUSTFLAGS").contains("link")
        && rustc_minor().is_some_and(|minor| minor >= 90);
    let list = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join(LIST);
    if lld && list.exists() {
        println!(
            "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={},--no-warn-symbol-ordering",
            list.display()
        );
    }
}

/// The minor version of the rustc that builds this crate (`1.95.0` gives 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc).arg("-V").output().ok()?;
    let version = String::from_utf8(out.stdout).ok()?;
    let mut parts = version.split_whitespace().nth(1)?.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
