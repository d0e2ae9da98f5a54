//! Native TLS (`[server.tls]`): a rustls server configuration whose certificate is
//! read from PEM files and read again when they change, so a rotated certificate
//! (cert-manager, a renewal job) is served without a restart. A change that does not
//! load (a half-written file, a key that does not match) keeps the certificate in
//! service and is logged; the next check tries again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// The certificate in service, and where it came from.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingCert {
    fn load(&self) -> Result<Arc<CertifiedKey>, String> {
        load(&self.provider, &self.cert_path, &self.key_path)
    }

    fn stamp(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        (modified(&self.cert_path), modified(&self.key_path))
    }

    /// Loads the files again if they changed since the last load; `Ok(true)` when a
    /// new certificate is now served.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let stamp = self.stamp();
        if self
            .current
            .read()
            .map(|c| c.stamp == stamp)
            .unwrap_or(false)
        {
            return Ok(false);
        }
        let key = self.load()?;
        if let Ok(mut current) = self.current.write() {
            *current = Loaded { key, stamp };
        }
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.key.clone())
    }
}

/// Reads a certificate chain and its private key.
fn load(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("{} and {}: {e}", cert_path.display(), key_path.display()))?;
    Ok(Arc::new(key))
}

/// The rustls configuration of `[server.tls]` and the handle that reloads it.
pub fn server_config(
    tls: &TlsConfig,
) -> Result<(rustls::ServerConfig, Arc<ReloadingCert>), String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let stamp = (modified(&tls.cert), modified(&tls.key));
    let key = load(&provider, &tls.cert, &tls.key)?;
    let cert = Arc::new(ReloadingCert {
        cert_path: tls.cert.clone(),
        key_path: tls.key.clone(),
        provider: provider.clone(),
        current: RwLock::new(Loaded { key, stamp }),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, cert))
}

/// Checks the files every `interval` and swaps in a changed certificate.
pub fn spawn_reloader(cert: Arc<ReloadingCert>, interval: Duration) {
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match cert.reload_if_changed() {
                Ok(true) => tracing::info!(
                    cert = %cert.cert_path.display(),
                    "serving the renewed TLS certificate"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "the TLS certificate files changed but do not load; still serving the previous one"
                ),
            }
        }
    });
}
