//! The S3 backend: [`ObjectBlobStore`] over `object_store`'s `AmazonS3`, configured
//! for on-premise stores too (path-style addressing, plain HTTP) and to fail fast
//! when the store is unreachable, so requests answer 503 instead of hanging.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use secrecy::ExposeSecret;

use super::{ObjectBlobStore, StorageError};
use crate::config::S3Config;

impl ObjectBlobStore {
    /// Connects to the bucket described by `config` (no request is made yet).
    pub fn s3(config: &S3Config) -> Result<Self, StorageError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            // Client options carry allow_http too: set them as one, or one undoes the other.
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(config.allow_http || config.endpoint.starts_with("http://"))
                    .with_connect_timeout(Duration::from_secs(config.connect_timeout_secs))
                    .with_timeout(Duration::from_secs(config.request_timeout_secs)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: config.max_retries,
                retry_timeout: Duration::from_secs(config.retry_timeout_secs),
            });
        if !config.endpoint.is_empty() {
            builder = builder.with_endpoint(&config.endpoint);
        }
        if !config.access_key_id.is_empty() {
            builder = builder.with_access_key_id(&config.access_key_id);
        }
        let secret = config.secret_access_key.expose_secret();
        if !secret.is_empty() {
            builder = builder.with_secret_access_key(secret);
        }
        let s3 = builder
            .build()
            .map_err(|e| StorageError::Other(format!("S3 configuration: {e}")))?;
        let store: Arc<dyn ObjectStore> = if config.prefix.trim_matches('/').is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, config.prefix.trim_matches('/')))
        };
        Ok(ObjectBlobStore::new(store))
    }
}
