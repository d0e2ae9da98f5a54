//! The `user` and `token` subcommands, run as the real binary: a root key from
//! `token keygen`, a token minted from it, attenuated offline without any key, and
//! verified with the configuration, as an operator would.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `packs-registry ARGS` with `stdin`, without any `PACKS__` environment.
fn run(args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_packs-registry"));
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("PACKS__") {
            command.env_remove(k);
        }
    }
    let mut child = command.spawn().expect("start packs-registry");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs and expects success; returns standard output.
fn ok(args: &[&str], stdin: &str) -> String {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects failure; returns standard error.
fn refused(args: &[&str], stdin: &str) -> String {
    let out = run(args, stdin);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// A root key file and a configuration naming it, with this key id.
fn setup(dir: &Path, key_id: u32) -> (String, String) {
    let keygen = ok(&["token", "keygen"], "");
    let mut lines = keygen.lines();
    assert!(lines.next().unwrap().starts_with("ed25519-private/"));
    let public = lines
        .next()
        .unwrap()
        .strip_prefix("# public key: ")
        .unwrap();
    assert!(public.starts_with("ed25519/"), "{public}");
    let key_file = dir.join(format!("root-{key_id}.key"));
    std::fs::write(&key_file, &keygen).unwrap();
    let config = dir.join(format!("registry-{key_id}.toml"));
    std::fs::write(
        &config,
        format!(
            "[auth]\nroot_key_file = {:?}\nkey_id = {key_id}\n",
            key_file.display().to_string()
        ),
    )
    .unwrap();
    (config.display().to_string(), public.to_owned())
}

#[test]
fn mint_attenuate_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = setup(dir.path(), 3);
    let token = ok(
        &[
            "token",
            "mint",
            "--config",
            &config,
            "--principal",
            "runner-1",
            "--grant",
            "packs/:pull,push",
            "--grant",
            "registry:catalog:*",
            "--expires",
            "30d",
        ],
        "",
    );
    let token = token.trim();
    let verify = |token: &str, scope: &str| {
        run(
            &[
                "token", "verify", "--config", &config, "--token", "-", "--scope", scope,
            ],
            token,
        )
    };
    let out = verify(token, "repository:packs/team/a:pull,push");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "allowed: principal runner-1"
    );
    assert!(verify(token, "registry:catalog:*").status.success());
    let denied = verify(token, "repository:packs/a:delete");
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("access denied"));

    // Attenuate with no key and no configuration: pull-only on packs/a, one hour.
    let child = ok(
        &[
            "token",
            "attenuate",
            "--token",
            "-",
            "--repository",
            "packs/a",
            "--actions",
            "pull",
            "--expires",
            "1h",
        ],
        token,
    );
    let child = child.trim();
    assert_ne!(child, token);
    assert!(verify(child, "repository:packs/a:pull").status.success());
    for scope in [
        "repository:packs/a:push",
        "repository:packs/b:pull",
        "registry:catalog:*",
    ] {
        let out = verify(child, scope);
        assert!(!out.status.success(), "{scope}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("access denied"));
    }

    // Attenuating the child "wider" gives it nothing more.
    let wider = ok(
        &[
            "token",
            "attenuate",
            "--token",
            child,
            "--repository",
            "packs/",
            "--actions",
            "pull,push",
            "--catalog",
        ],
        "",
    );
    let wider = wider.trim();
    assert!(verify(wider, "repository:packs/a:pull").status.success());
    assert!(!verify(wider, "repository:packs/a:push").status.success());
    assert!(!verify(wider, "repository:packs/b:pull").status.success());
    assert!(!verify(wider, "registry:catalog:*").status.success());
}

#[test]
fn verify_refuses_tampered_and_foreign_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (config, public) = setup(dir.path(), 1);
    let (other, _) = setup(dir.path(), 2);
    let mint = |config: &str| {
        ok(
            &[
                "token",
                "mint",
                "--config",
                config,
                "--principal",
                "p",
                "--grant",
                "*:pull",
                "--expires",
                "1h",
            ],
            "",
        )
        .trim()
        .to_owned()
    };
    let token = mint(&config);
    let scope = ["--scope", "repository:x:pull"];
    let verify_with = |config: &str, token: &str| {
        refused(
            &[
                "token", "verify", "--config", config, "--token", token, scope[0], scope[1],
            ],
            "",
        )
    };
    let mut tampered = token.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(verify_with(&config, &tampered).contains("invalid token"));
    // Key id 1 is unknown to a registry whose key is id 2 ...
    assert!(verify_with(&other, &token).contains("unknown key"));
    // ... until it lists key 1 as trusted (rotation).
    let rotated = dir.path().join("rotated.toml");
    let base = std::fs::read_to_string(&other).unwrap();
    std::fs::write(
        &rotated,
        format!("{base}[[auth.trusted_keys]]\nkey_id = 1\npublic_key = \"{public}\"\n"),
    )
    .unwrap();
    let rotated = rotated.display().to_string();
    ok(
        &[
            "token", "verify", "--config", &rotated, "--token", &token, scope[0], scope[1],
        ],
        "",
    );
}

#[test]
fn mint_needs_a_root_key_and_attenuate_something_to_narrow() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let e = refused(
        &[
            "token",
            "mint",
            "--config",
            empty.to_str().unwrap(),
            "--principal",
            "p",
            "--expires",
            "1h",
        ],
        "",
    );
    assert!(e.contains("root key"), "{e}");
    let e = refused(&["token", "attenuate", "--token", "x"], "");
    assert!(e.contains("nothing to narrow"), "{e}");
    let e = refused(
        &["token", "attenuate", "--token", "x", "--actions", "pull"],
        "",
    );
    assert!(e.contains("invalid token"), "{e}");
    let e = refused(
        &[
            "token",
            "mint",
            "--principal",
            "p",
            "--grant",
            "packs/team*:pull",
            "--expires",
            "1h",
        ],
        "",
    );
    assert!(e.contains("packs/team*"), "{e}");
}

#[test]
fn user_hash_reads_the_password_from_stdin() {
    let hash = ok(&["user", "hash"], "correct horse battery\n");
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(packs_registry::auth::verify_password(
        "correct horse battery",
        hash
    ));
    assert!(!packs_registry::auth::verify_password(
        "correct horse",
        hash
    ));
    let e = refused(&["user", "hash"], "\n");
    assert!(e.contains("empty password"), "{e}");
}
