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
}
