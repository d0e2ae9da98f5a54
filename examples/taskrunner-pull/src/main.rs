//! taskrunner-pull: what a TaskRunner does to get a pack from PacksRegistry.
//!
//! 1. Resolve `<packId>@<semver requirement>` through `GET /packs/<id>/versions`
//!    (newest first): the first version the requirement matches.
//! 2. Look in the cache, keyed by the version's manifest digest: if the pack is
//!    there, done, nothing is downloaded.
//! 3. Otherwise pull the OCI manifest by digest with `oci-client` and check its
//!    digest; pull the config (the pack manifest) and the content layer, checking
//!    each digest, and the content's against the one `/packs` announced.
//! 4. Unpack the tar.gz into a staging folder and rename it into the cache, so a
//!    cache entry is complete or absent.
//!
//! `--token` sends a bearer token, for registries with auth turned on.

use std::error::Error;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use clap::Parser;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest, Sha256};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Artifact types of packs: `application/vnd.stellaops.pack.<type>.v1`.
const PACK_ARTIFACT_PREFIX: &str = "application/vnd.stellaops.pack.";

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The pack and a semver requirement: `policy-baseline@^1`, `task-scan-repo@~0.3`,
    /// `analyzer-secrets@1.2.0`. Without `@…`: the newest release.
    pack: String,
    /// The registry's base URL.
    #[arg(long, env = "PACKS_REGISTRY", default_value = "http://127.0.0.1:5000")]
    registry: String,
    /// A bearer token (when the registry's auth is on): sent to `/packs` and `/v2`.
    #[arg(long, env = "PACKS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The registry's `packs.repository_prefix`: pack `X` is the repository `<prefix>X`.
    #[arg(long, default_value = "packs/")]
    repository_prefix: String,
    /// The cache: one folder per pack version, named by its manifest digest.
    #[arg(long, env = "PACKS_CACHE", default_value = ".packs-cache")]
    cache: PathBuf,
}

/// One entry of `GET /packs/<id>/versions`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Version {
    version: String,
    digest: String,
    size: u64,
    manifest_digest: String,
}

#[derive(Deserialize)]
struct VersionList {
    versions: Vec<Version>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("taskrunner-pull: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let (pack_id, requirement) = match args.pack.split_once('@') {
        Some((id, req)) => (id, semver::VersionReq::parse(req)?),
        None => (args.pack.as_str(), semver::VersionReq::STAR),
    };
    let base = args.registry.trim_end_matches('/');
    let version = resolve(base, args.token.as_deref(), pack_id, &requirement).await?;
    println!(
        "resolved {pack_id}@{requirement} -> {} (manifest {})",
        version.version, version.manifest_digest
    );

    let entry = args
        .cache
        .join(digest_path(&version.manifest_digest)?)
        .join("content");
    if entry.is_dir() {
        println!("cached {}", entry.display());
    } else {
        let bytes = download(&args, base, pack_id, &version).await?;
        println!("downloaded {bytes} bytes -> {}", entry.display());
    }
    println!(
        "{pack_id} {} {} {}",
        version.version,
        version.digest,
        entry.display()
    );
    Ok(())
}

/// The newest version of `pack_id` that `requirement` matches.
async fn resolve(
    base: &str,
    token: Option<&str>,
    pack_id: &str,
    requirement: &semver::VersionReq,
) -> Result<Version> {
    let mut request = reqwest::Client::new().get(format!("{base}/packs/{pack_id}/versions"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        return Err(format!(
            "GET /packs/{pack_id}/versions: {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let list: VersionList = serde_json::from_slice(&body)?;
    // The list is newest first (semver precedence), so the first match is the answer.
    for version in list.versions {
        if requirement.matches(&semver::Version::parse(&version.version)?) {
            return Ok(version);
        }
    }
    Err(format!("no version of {pack_id} matches {requirement}").into())
}

/// Pulls, verifies and unpacks one version into the cache; the content's size.
async fn download(args: &Args, base: &str, pack_id: &str, version: &Version) -> Result<u64> {
    let (protocol, host) = match base.split_once("://") {
        Some(("http", host)) => (ClientProtocol::Http, host),
        Some(("https", host)) => (ClientProtocol::Https, host),
        _ => return Err(format!("--registry {base}: expected http:// or https://").into()),
    };
    let client = Client::new(ClientConfig {
        protocol,
        ..Default::default()
    });
    let auth = match &args.token {
        Some(token) => RegistryAuth::Bearer(token.clone()),
        None => RegistryAuth::Anonymous,
    };
    let repository = format!("{}{pack_id}", args.repository_prefix);
    let reference =
        Reference::with_digest(host.to_owned(), repository, version.manifest_digest.clone());

    // The manifest, by digest: its bytes must hash to that digest.
    let (raw, _) = client
        .pull_manifest_raw(&reference, &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await?;
    check_digest("manifest", &sha256_of(&raw), &version.manifest_digest)?;
    let manifest: OciImageManifest = serde_json::from_slice(&raw)?;
    let artifact_type = manifest.artifact_type.as_deref().unwrap_or_default();
    if !artifact_type.starts_with(PACK_ARTIFACT_PREFIX) {
        return Err(format!("{reference} is not a pack (artifactType {artifact_type:?})").into());
    }
    let layer = manifest
        .layers
        .first()
        .ok_or("the pack manifest has no layer")?;
    // The content /packs announced is the layer the manifest names.
    check_digest("content", &layer.digest, &version.digest)?;

    let digest_dir = args.cache.join(digest_path(&version.manifest_digest)?);
    let staging = args.cache.join(format!(
        "staging-{}-{}",
        std::process::id(),
        &version.manifest_digest[7..19]
    ));
    std::fs::create_dir_all(&staging)?;
    let result = async {
        // The pack manifest (dependencies, minRunnerVersion, …), for the runner to read.
        pull_verified(
            &client,
            &reference,
            &manifest.config,
            &staging.join("pack.json"),
        )
        .await?;
        let tarball = staging.join("content.tar.gz");
        let size = pull_verified(&client, &reference, layer, &tarball).await?;
        if size != version.size {
            return Err(format!("content is {size} bytes, /packs said {}", version.size).into());
        }
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(
            File::open(&tarball)?,
        )));
        // `unpack` writes nothing outside the folder it is given.
        archive.unpack(staging.join("content"))?;
        std::fs::remove_file(&tarball)?;
        std::fs::write(staging.join("manifest.json"), &raw)?;
        // Complete: into place in one rename.
        std::fs::create_dir_all(digest_dir.parent().expect("digest dir has a parent"))?;
        std::fs::rename(&staging, &digest_dir)?;
        Ok::<u64, Box<dyn Error>>(size)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Pulls one blob to `path` and checks it hashes to its descriptor's digest; its size.
async fn pull_verified(
    client: &Client,
    reference: &Reference,
    descriptor: &OciDescriptor,
    path: &Path,
) -> Result<u64> {
    let mut file = tokio::fs::File::create(path).await?;
    client.pull_blob(reference, descriptor, &mut file).await?;
    file.sync_all().await?;
    drop(file);
    let (digest, size) = sha256_of_file(path)?;
    check_digest(&descriptor.media_type, &digest, &descriptor.digest)?;
    if i64::try_from(size)? != descriptor.size {
        return Err(format!(
            "{}: {size} bytes, expected {}",
            descriptor.digest, descriptor.size
        )
        .into());
    }
    Ok(size)
}

fn check_digest(what: &str, got: &str, want: &str) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: digest {got}, expected {want}").into())
    }
}

fn sha256_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn sha256_of_file(path: &Path) -> Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// `sha256:<hex>` as the cache path `sha256/<hex>`, refusing anything else.
fn digest_path(digest: &str) -> Result<PathBuf> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Path::new("sha256").join(hex))
        }
        _ => Err(format!("unsupported digest {digest:?}").into()),
    }
}
