//! Storage figures and garbage collection results on `/metrics`: read from the
//! metadata database when `/metrics` is scraped (where the triggers keep them
//! current, and every collector records its runs), so every replica shows the same
//! figures, whichever process collected. Nothing here walks the blob store.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::metadata::{GcTotals, StorageUsage};

/// The figures of the last scrape, rendered by the Prometheus registry.
#[derive(Debug, Default)]
pub struct Figures {
    last: Mutex<Option<(StorageUsage, GcTotals)>>,
}

impl Figures {
    /// Replaces the figures rendered next.
    pub fn set(&self, usage: StorageUsage, totals: GcTotals) {
        *self.last.lock().expect("figures lock") = Some((usage, totals));
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for Figures {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let last = self.last.lock().expect("figures lock");
        let Some((usage, gc)) = last.as_ref() else {
            return Ok(());
        };
        let t = &usage.total;
        gauge(
            &mut e,
            "storage_blobs",
            "Blobs stored, each counted once",
            t.blobs,
        )?;
        gauge(
            &mut e,
            "storage_blob_bytes",
            "Bytes of the blobs stored, each counted once",
            t.blob_bytes,
        )?;
        gauge(
            &mut e,
            "storage_manifests",
            "Manifests stored, in all repositories",
            t.manifests,
        )?;
        gauge(
            &mut e,
            "storage_manifest_bytes",
            "Bytes of the manifests stored",
            t.manifest_bytes,
        )?;
        gauge(
            &mut e,
            "storage_repositories",
            "Repositories with storage figures",
            usage.repository_count,
        )?;
        type Row = fn(&crate::metadata::UsageRecord) -> u64;
        let per_repository: [(&str, &str, Row); 4] = [
            (
                "repository_blobs",
                "Blobs linked into the repository (the largest repositories)",
                |r| r.blobs,
            ),
            (
                "repository_blob_bytes",
                "Bytes of the blobs linked into the repository (the largest repositories)",
                |r| r.blob_bytes,
            ),
            (
                "repository_manifests",
                "Manifests in the repository (the largest repositories)",
                |r| r.manifests,
            ),
            (
                "repository_manifest_bytes",
                "Bytes of the manifests in the repository (the largest repositories)",
                |r| r.manifest_bytes,
            ),
        ];
        for (name, help, value) in per_repository {
            let mut family = e.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for r in &usage.repositories {
                let labels = [("repository", r.repo.as_str())];
                let g = ConstGauge::new(i64::try_from(value(r)).unwrap_or(i64::MAX));
                g.encode(family.encode_family(&labels)?)?;
            }
        }
        let s = &gc.sums;
        counter(
            &mut e,
            "gc_runs",
            "Garbage collections completed (by any process)",
            gc.runs,
        )?;
        counter(
            &mut e,
            "gc_reclaimed_bytes",
            "Blob store bytes garbage collection deleted",
            s.reclaimed_bytes,
        )?;
        counter(
            &mut e,
            "gc_manifest_bytes",
            "Manifest bytes garbage collection deleted from the database",
            s.manifest_bytes,
        )?;
        let mut family = e.encode_descriptor(
            "gc_removed",
            "What garbage collection removed, by kind",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (kind, n) in [
            ("tag", s.tags),
            ("manifest", s.manifests),
            ("link", s.links),
            ("blob", s.blobs),
            ("stray_bytes", s.stray),
        ] {
            ConstCounter::new(n).encode(family.encode_family(&[("kind", kind)])?)?;
        }
        gauge(
            &mut e,
            "gc_last_run_timestamp_seconds",
            "When the last garbage collection finished (0: never)",
            u64::try_from(s.finished_at / 1000).unwrap_or(0),
        )?;
        Ok(())
    }
}
