//! The `packs-registry` binary: parse arguments, load configuration, start
//! telemetry, hand off to `server`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use packs_registry::telemetry::Telemetry;
use packs_registry::{auth, cli, config::Config, server};

#[derive(Parser)]
#[command(name = "packs-registry", version, about = "An OCI registry for packs")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry (the default).
    Serve(ServeArgs),
    /// Run the background work only (garbage collection, retention, expiry of
    /// abandoned uploads), for deployments that keep it apart from serving.
    Worker(DataArgs),
    /// Collect garbage now: retention, then manifests no tag reaches and blobs no
    /// manifest refers to, past the grace period. Safe while `serve` runs on the same
    /// data.
    Gc(GcArgs),
    /// Rebuild the metadata (repositories, blob links, manifests, tags, referrers,
    /// packs) from the blob store's recovery journal and blobs, into the configured
    /// (empty) database: disaster recovery.
    Reindex(DataArgs),
    /// Apply pending database migrations, then exit.
    Migrate {
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// User and robot accounts.
    User {
        #[command(subcommand)]
        command: auth::cli::UserCommand,
    },
    /// Tokens: keygen, mint, attenuate, verify.
    Token {
        #[command(subcommand)]
        command: auth::cli::TokenCommand,
    },
    /// Offline bundles: export packs from a registry, import them into another,
    /// verify an archive.
    Bundle {
        #[command(subcommand)]
        command: cli::bundle::BundleCommand,
    },
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Folder for the SQLite database and blobs [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Default)]
struct DataArgs {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder for the SQLite database and blobs [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Default)]
struct GcArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Print what would be removed, and the storage figures; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep what was pushed or linked less than this long ago (`30m`, `2h`, `0s`)
    /// [default: gc.grace_secs].
    #[arg(long, value_parser = humantime::parse_duration)]
    grace: Option<std::time::Duration>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file without starting anything.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

/// Installs logging (and trace export when configured) into `slot`, which `main`
/// flushes at exit.
fn init_telemetry(config: &Config, slot: &mut Option<Telemetry>) -> Result<(), String> {
    *slot = Some(Telemetry::init(config).map_err(|e| e.to_string())?);
    Ok(())
}

/// Fixed thresholds for glibc's allocator. By default it gives the free memory at the
/// top of a thread's heap back to the kernel (`madvise`) as soon as more than a small,
/// self-adjusting threshold is free. Request bodies stream through buffers of a few
/// hundred KiB that one thread allocates and another frees, so an upload handed its
/// heap back and faulted it in again over and over: 104 `madvise` calls per 1 GiB
/// upload, and page faults and page zeroing in ~6 % of its samples (`perf`). Now up to
/// 8 MiB of free heap stays with each arena (minor faults per 4 GiB uploaded: ~300k by
/// default, ~7-20k so; 32 MiB kept ~40 MiB more after a full regbench run), and only
/// blocks over 4 MiB get mappings of their own.
///
/// Arenas are held to one per CPU (glibc's default is eight per CPU): every thread
/// that allocates (workers, blocking threads, one per SQLite connection) otherwise
/// ends up with an arena of its own that keeps its freed memory. Embedded server,
/// 3-minute soak at 16 clients, idle RSS afterwards: 184 MiB by default, 152 MiB with
/// the idle trim (`memory::spawn_trimmer`), 101 MiB with both and two arenas on 2
/// CPUs, at the same request rate (44.3k and 44.9k requests).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    let arenas = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    // SAFETY: mallopt only sets allocator parameters; called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_ARENA_MAX, i32::try_from(arenas).unwrap_or(i32::MAX));
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // actix's system: this thread runs the background tasks; the HTTP server adds
    // its worker threads, each with a runtime of its own.
    let mut telemetry = None;
    let result = actix_web::rt::System::new().block_on(async {
        match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
            Command::Serve(args) => serve(args, &mut telemetry).await,
            Command::Migrate { config } => migrate(config, &mut telemetry).await,
            Command::Worker(args) => worker(args, &mut telemetry).await,
            Command::Gc(args) => gc(args, &mut telemetry).await,
            Command::Reindex(args) => reindex(args, &mut telemetry).await,
            Command::Config {
                command: ConfigCommand::Check { file },
            } => Config::load(Some(&file))
                .map(|_| println!("{}: ok", file.display()))
                .map_err(|e| format!("{}: {e}", file.display())),
            Command::User { command } => auth::cli::run_user(command),
            Command::Token { command } => auth::cli::run_token(command),
            Command::Bundle { command } => cli::bundle::run(command).await,
        }
    });
    // Off the runtimes now: flushing may block for the exporter's timeout.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs, telemetry: &mut Option<Telemetry>) -> Result<(), String> {
    let mut config = Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.server.data_dir = dir;
    }
    init_telemetry(&config, telemetry)?;
    let exposure = server::check_exposure(&config)?;
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let listen = config.server.listen;
    let metadata = packs_registry::config::redact_url(&config.metadata_url());
    let storage = match config.storage.backend {
        packs_registry::config::StorageBackend::Fs => config.storage_path().display().to_string(),
        packs_registry::config::StorageBackend::Memory => "memory (not persisted)".into(),
        packs_registry::config::StorageBackend::S3 => {
            let s3 = &config.storage.s3;
            let endpoint = if s3.endpoint.is_empty() {
                "AWS"
            } else {
                &s3.endpoint
            };
            format!(
                "s3://{}/{} at {endpoint}",
                s3.bucket,
                s3.prefix.trim_matches('/')
            )
        }
    };
    let state = server::build_state(config)
        .await
        .map_err(|e| e.to_string())?;
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    println!(
        "packs-registry {} listening on {scheme}://{bound}",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(warning) = exposure {
        eprintln!("WARNING: {warning}");
        tracing::warn!("{warning}");
    }
    println!("  metadata: {metadata}");
    println!("  blobs:    {storage}");
    tracing::info!(%bound, %metadata, %storage, "serving");
    server::spawn_background(&state);
    server::serve(listener, state)
        .await
        .map_err(|e| e.to_string())
}

/// The configuration `args` name, with `--data-dir` applied.
fn load_config(args: &DataArgs) -> Result<Config, String> {
    let mut config = Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(dir) = &args.data_dir {
        config.server.data_dir = dir.clone();
    }
    Ok(config)
}

async fn worker(args: DataArgs, telemetry: &mut Option<Telemetry>) -> Result<(), String> {
    let config = load_config(&args)?;
    init_telemetry(&config, telemetry)?;
    server::gc_options(&config)?;
    let state = server::build_state(config)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "packs-registry {} worker: background work only",
        env!("CARGO_PKG_VERSION")
    );
    server::work(state).await;
    Ok(())
}

async fn gc(args: GcArgs, telemetry: &mut Option<Telemetry>) -> Result<(), String> {
    let config = load_config(&args.data)?;
    init_telemetry(&config, telemetry)?;
    packs_registry::gc_cli::run(config, args.dry_run, args.grace).await
}

async fn reindex(args: DataArgs, telemetry: &mut Option<Telemetry>) -> Result<(), String> {
    let config = load_config(&args)?;
    init_telemetry(&config, telemetry)?;
    let state = server::build_state(config)
        .await
        .map_err(|e| e.to_string())?;
    let report = state.registry.reindex().await.map_err(|e| e.to_string())?;
    for skipped in &report.skipped {
        println!("not restored: {skipped}");
    }
    println!(
        "restored {} repositories, {} manifests, {} tags, {} blob links",
        report.repositories, report.manifests, report.tags, report.links
    );
    Ok(())
}

async fn migrate(config: Option<PathBuf>, telemetry: &mut Option<Telemetry>) -> Result<(), String> {
    let config = Config::load(config.as_deref()).map_err(|e| e.to_string())?;
    init_telemetry(&config, telemetry)?;
    let meta = server::open_metadata(&config)
        .await
        .map_err(|e| e.to_string())?;
    meta.migrate().await.map_err(|e| e.to_string())?;
    println!(
        "migrations applied to {}",
        packs_registry::config::redact_url(&config.metadata_url())
    );
    Ok(())
}
