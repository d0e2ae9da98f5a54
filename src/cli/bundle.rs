//! `packs-registry bundle export|import|verify`: moving packs to and from sites
//! without a network path, as OCI image layout archives.
//!
//! `export` downloads `GET /packs/export` into a file and `import` uploads one to
//! `POST /packs/import`, both streamed (constant memory whatever the size), with a
//! progress bar when standard error is a terminal, and print the archive's SHA-256 and
//! a summary at the end. `verify` checks an archive offline exactly as an import
//! would (every blob against its digest, every manifest and its references, safe
//! entries, bounds), staging it in a temporary folder that is removed afterwards, and
//! lists its packs.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use crate::config::Config;
use crate::registry::bundle::BundlePack;

/// `packs-registry bundle …`
#[derive(clap::Subcommand)]
pub enum BundleCommand {
    /// Download packs from a registry as an OCI image layout archive.
    ///
    /// The archive holds the packs chosen, their dependencies and bundle members (each
    /// requirement resolved to its newest match), and their signatures, SBOMs and
    /// attestations. The same content always gives the same bytes.
    Export(ExportArgs),
    /// Upload an archive (`.tar` or `.tar.gz`) into a registry.
    ///
    /// The registry verifies everything before anything becomes visible, and refuses
    /// the whole archive otherwise. Importing the same archive again changes nothing.
    Import(ImportArgs),
    /// Check an archive offline, as an import would, and list its packs.
    Verify(VerifyArgs),
}

/// Where the registry is and who is asking.
#[derive(clap::Args)]
pub struct RegistryArgs {
    /// The registry's base URL (`https://registry.example`).
    #[arg(long)]
    pub registry: String,
    /// A token, sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "PACKS_REGISTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `bundle export`
#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    /// A pack as `<id>@<version or semver requirement>` (`policy-baseline@^2`);
    /// repeat for more.
    #[arg(long = "pack", value_name = "ID@VERSION")]
    packs: Vec<String>,
    /// Only packs of this type (alone: every pack of this type).
    #[arg(long = "type", value_name = "TYPE")]
    pack_type: Option<String>,
    /// Every version of every pack.
    #[arg(long)]
    all: bool,
    /// The archive to write.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
}

/// `bundle import`
#[derive(clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    /// The archive (`.tar` or `.tar.gz`).
    archive: PathBuf,
}

/// `bundle verify`
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The archive (`.tar` or `.tar.gz`).
    archive: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Configuration file whose `[bundles]` bounds and pack prefix apply.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Runs a `bundle` subcommand.
pub async fn run(command: BundleCommand) -> Result<(), String> {
    match command {
        BundleCommand::Export(args) => export(args).await,
        BundleCommand::Import(args) => import(args).await,
        BundleCommand::Verify(args) => verify(args).await,
    }
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

fn endpoint(args: &RegistryArgs, path: &str) -> Result<reqwest::Url, String> {
    let base = args.registry.trim_end_matches('/');
    reqwest::Url::parse(&format!("{base}{path}"))
        .map_err(|e| format!("--registry {}: {e}", args.registry))
}

fn authorized(request: reqwest::RequestBuilder, args: &RegistryArgs) -> reqwest::RequestBuilder {
    match &args.token {
        Some(t) => request.bearer_auth(t.trim()),
        None => request,
    }
}

/// The registry's refusal, in its words.
async fn refusal(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let said = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
        let e = &v["error"];
        Some(format!(
            "{}: {}",
            e["code"].as_str()?,
            e["message"].as_str()?
        ))
    });
    format!(
        "the registry answered {status}: {}",
        said.unwrap_or_else(|| text.trim().to_owned())
    )
}

/// A progress bar on standard error when it is a terminal; hidden otherwise.
fn progress(total: Option<u64>, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    let template = if total.is_some() {
        "{msg} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
    } else {
        "{msg} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

fn sha256_text(hasher: sha2::Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

async fn export(args: ExportArgs) -> Result<(), String> {
    let mut url = endpoint(&args.registry, "/packs/export")?;
    {
        let mut query = url.query_pairs_mut();
        for p in &args.packs {
            query.append_pair("pack", p);
        }
        if let Some(t) = &args.pack_type {
            query.append_pair("type", t);
        }
        if args.all {
            query.append_pair("all", "true");
        }
    }
    let response = authorized(client()?.get(url), &args.registry)
        .send()
        .await
        .map_err(|e| format!("GET /packs/export: {e}"))?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    let count = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned()
    };
    let (packs, manifests, referrers, blobs) = (
        count("bundle-packs"),
        count("bundle-manifests"),
        count("bundle-referrers"),
        count("bundle-blobs"),
    );
    let total = response.content_length();
    // Written beside the target and renamed into place once complete.
    let partial = partial_path(&args.output);
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    let bar = progress(total, "export");
    let mut hasher = sha2::Sha256::new();
    let mut written = 0u64;
    let mut body = response.bytes_stream();
    let outcome: Result<(), String> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("downloading the archive: {e}"))?;
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("{}: {e}", partial.display()))?;
            written += chunk.len() as u64;
            bar.set_position(written);
        }
        if total.is_some_and(|t| t != written) {
            return Err(format!(
                "the download stopped after {written} of {} bytes",
                total.unwrap_or_default()
            ));
        }
        file.sync_all()
            .await
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        tokio::fs::rename(&partial, &args.output)
            .await
            .map_err(|e| format!("{}: {e}", args.output.display()))
    }
    .await;
    bar.finish_and_clear();
    if let Err(e) = outcome {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    println!(
        "{}: {packs} packs, {referrers} referrers, {manifests} manifests, {blobs} blobs, {}",
        args.output.display(),
        human(written)
    );
    println!("sha256 {}", sha256_text(hasher));
    Ok(())
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

async fn import(args: ImportArgs) -> Result<(), String> {
    let path = &args.archive;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let bar = progress(Some(size), "import");
    let hasher = Arc::new(Mutex::new(sha2::Sha256::new()));
    let (tap, sent_bar) = (hasher.clone(), bar.clone());
    let stream =
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                tap.lock().expect("hasher lock").update(chunk);
                sent_bar.inc(chunk.len() as u64);
            }
        });
    let url = endpoint(&args.registry, "/packs/import")?;
    let response = authorized(client()?.post(url), &args.registry)
        .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    bar.finish_and_clear();
    let response = response.map_err(|e| format!("POST /packs/import: {e}"))?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    let report: Value = response
        .json()
        .await
        .map_err(|e| format!("reading the registry's answer: {e}"))?;
    let n = |key: &str| report[key].as_u64().unwrap_or_default();
    let packs = report["packs"].as_array().cloned().unwrap_or_default();
    if report["nothingNew"].as_bool() == Some(true) {
        println!(
            "{}: nothing new: the registry already holds its {} packs and everything they need",
            path.display(),
            packs.len()
        );
    } else {
        let added: Vec<String> = packs
            .iter()
            .filter(|p| p["added"].as_bool() == Some(true))
            .map(|p| {
                format!(
                    "{}@{}",
                    p["packId"].as_str().unwrap_or_default(),
                    p["version"].as_str().unwrap_or_default()
                )
            })
            .collect();
        println!(
            "{}: imported {} of {} packs ({}), {} manifests ({} already there), {} blobs \
             ({} stored), {} tags, {} referrers",
            path.display(),
            added.len(),
            packs.len(),
            added.join(", "),
            n("manifestsAdded"),
            n("manifestsPresent"),
            n("blobsAdded"),
            human(n("bytesAdded")),
            n("tagsAdded"),
            n("referrers"),
        );
    }
    let digest = std::mem::take(&mut *hasher.lock().expect("hasher lock"));
    println!("sha256 {}", sha256_text(digest));
    Ok(())
}

/// Reads a file, hashing it and advancing a progress bar.
struct Tapped {
    file: std::fs::File,
    hasher: Arc<Mutex<sha2::Sha256>>,
    bar: ProgressBar,
}

impl Read for Tapped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.lock().expect("hasher lock").update(&buf[..n]);
        self.bar.inc(n as u64);
        Ok(n)
    }
}

async fn verify(args: VerifyArgs) -> Result<(), String> {
    let path = &args.archive;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    // A registry of its own in a scratch folder: the archive is staged and checked
    // by the import's own code, then dropped with the folder.
    let scratch = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
    let mut config = match &args.config {
        Some(file) => Config::load(Some(file)).map_err(|e| format!("{}: {e}", file.display()))?,
        None => Config::default(),
    };
    config.server.data_dir = scratch.path().to_path_buf();
    config.metadata.url = String::new();
    config.metadata.migrate_on_start = true;
    config.storage.backend = crate::config::StorageBackend::Fs;
    config.storage.path = PathBuf::new();
    let state = crate::server::build_state(config)
        .await
        .map_err(|e| format!("a scratch registry: {e}"))?;
    let registry = state.registry;
    let bar = progress(Some(size), "verify");
    let hasher = Arc::new(Mutex::new(sha2::Sha256::new()));
    let reader = Tapped {
        file,
        hasher: hasher.clone(),
        bar: bar.clone(),
    };
    let staged = registry.stage_bundle_from(Box::new(reader)).await;
    bar.finish_and_clear();
    let staged = staged.map_err(|e| format!("{}: refused: {e}", path.display()))?;
    let digest = sha256_text(std::mem::take(&mut *hasher.lock().expect("hasher lock")));
    let (manifests, referrers, blobs) = (staged.manifests(), staged.referrers, staged.blobs());
    let packs: Vec<BundlePack> = staged.packs.clone();
    registry.discard_bundle(staged).await;
    if args.json {
        let doc = serde_json::json!({
            "archive": path.display().to_string(),
            "sha256": digest,
            "bytes": size,
            "packs": packs,
            "manifests": manifests,
            "referrers": referrers,
            "blobs": blobs,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    print_table(&packs);
    println!(
        "{}: verified: {} packs, {referrers} referrers, {manifests} manifests, {blobs} blobs, {}",
        path.display(),
        packs.len(),
        human(size)
    );
    println!("sha256 {digest}");
    Ok(())
}

fn print_table(packs: &[BundlePack]) {
    let rows: Vec<[String; 5]> = packs
        .iter()
        .map(|p| {
            let deps: Vec<String> = p
                .dependencies
                .iter()
                .chain(&p.members)
                .map(|d| format!("{} {}", d.pack_id, d.version))
                .collect();
            [
                p.pack_id.clone(),
                p.version.clone(),
                p.pack_type.clone(),
                p.digest.clone(),
                if deps.is_empty() {
                    "-".into()
                } else {
                    deps.join(", ")
                },
            ]
        })
        .collect();
    let header = ["PACK", "VERSION", "TYPE", "DIGEST", "DEPENDENCIES"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 4 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
}
