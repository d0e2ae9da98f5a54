//! `packs-registry gc`: one collection, what it removes printed as it goes (on
//! standard output), a progress bar on a terminal (standard error).

use std::io::IsTerminal;

use crate::config::Config;
use crate::registry::gc::{GcObserver, GcPhase, GcReport, Removed};
use crate::server;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// For tests of a crash between the deletion of rows and of their bytes: when
/// this names a file, the run writes it once the rows are deleted and then waits
/// forever, to be killed.
const PAUSE_BEFORE_BYTES: &str = "PACKS_TEST_GC_PAUSE_BEFORE_BYTES";

struct Cli {
    bar: Option<ProgressBar>,
    verb: &'static str,
    pause: Option<std::path::PathBuf>,
}

impl Cli {
    fn say(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }
}

impl GcObserver for Cli {
    fn phase(&self, phase: GcPhase, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(0);
            bar.set_length(total);
            bar.set_message(match phase {
                GcPhase::Retention => "retention",
                GcPhase::Repositories => "repositories",
                GcPhase::Blobs => "blobs",
                GcPhase::Bytes => "bytes",
                GcPhase::Storage => "stray bytes",
            });
        }
        if phase == GcPhase::Bytes
            && let Some(file) = &self.pause
        {
            let _ = std::fs::write(file, "rows deleted, bytes not yet\n");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }

    fn step(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn removed(&self, item: &Removed) {
        let verb = self.verb;
        self.say(match item {
            Removed::Tag { repo, tag } => format!("{verb} tag {repo}:{tag} (retention)"),
            Removed::Manifest { repo, digest, size } => {
                format!("{verb} manifest {repo}@{digest} ({})", HumanBytes(*size))
            }
            Removed::Link { repo, digest, size } => {
                format!("{verb} link {repo} -> {digest} ({})", HumanBytes(*size))
            }
            Removed::Blob { digest, size } => {
                format!("{verb} blob {digest} ({})", HumanBytes(*size))
            }
            Removed::StrayBytes { digest, size } => {
                format!("{verb} stray bytes {digest} ({})", HumanBytes(*size))
            }
        });
    }
}

/// Runs one collection over what `config` names (`dry_run`: plan only; `grace`
/// instead of `gc.grace_secs`), waiting for any other collector first, and prints
/// what it removes and the storage figures.
pub async fn run(
    config: Config,
    dry_run: bool,
    grace: Option<std::time::Duration>,
) -> Result<(), String> {
    let mut options = server::gc_options(&config)?;
    options.dry_run = dry_run;
    if let Some(grace) = grace {
        options.grace = grace;
    }
    let state = server::build_state(config)
        .await
        .map_err(|e| e.to_string())?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:>12} [{bar:30}] {pos}/{len}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let cli = Cli {
        bar,
        verb: if dry_run { "would remove" } else { "removed" },
        pause: std::env::var_os(PAUSE_BEFORE_BYTES).map(Into::into),
    };
    let mut report = state
        .registry
        .collect_garbage(&options, &cli, false)
        .await
        .map_err(|e| e.to_string())?;
    if report.is_none() {
        cli.say("waiting for the collector running elsewhere to finish".into());
        report = state
            .registry
            .collect_garbage(&options, &cli, true)
            .await
            .map_err(|e| e.to_string())?;
    }
    let report = report.ok_or("no collector lock")?;
    if let Some(bar) = &cli.bar {
        bar.finish_and_clear();
    }
    print_summary(&report);
    server::log_gc(&report);
    Ok(())
}

fn print_summary(report: &GcReport) {
    let c = report.counts();
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "{verb}: {} tags, {} manifests ({}), {} links, {} blobs, {} stray; {} of blob storage",
        c.tags,
        c.manifests,
        HumanBytes(report.manifest_bytes),
        c.links,
        c.blobs,
        c.stray,
        HumanBytes(report.reclaimed_bytes),
    );
    let u = &report.usage;
    println!(
        "storage{}: {} blobs ({}), {} manifests ({}) in {} repositories",
        if report.dry_run { " now" } else { " after" },
        u.total.blobs,
        HumanBytes(u.total.blob_bytes),
        u.total.manifests,
        HumanBytes(u.total.manifest_bytes),
        u.repository_count,
    );
    if !u.repositories.is_empty() {
        println!(
            "  {:<40} {:>8} {:>12} {:>10} {:>12}",
            "repository", "blobs", "blob bytes", "manifests", "bytes"
        );
        for r in &u.repositories {
            println!(
                "  {:<40} {:>8} {:>12} {:>10} {:>12}",
                r.repo,
                r.blobs,
                HumanBytes(r.blob_bytes).to_string(),
                r.manifests,
                HumanBytes(r.manifest_bytes).to_string()
            );
        }
    }
}
