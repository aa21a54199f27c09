//! Both adapters of every port, for the contract tests. The aws side runs
//! against the moto server named by `AWS_ENDPOINT_URL` (`make test` starts
//! one); without it these tests fail rather than skip.

use std::sync::Arc;

use hanul_shared::aws::{DynamoTable, bootstrap};
use hanul_shared::embedded::{EmbeddedStore, EmbeddedTable};
use hanul_shared::platform::Platform;
use hanul_shared::ports::{SystemClock, Table};

pub struct Guard {
    _dir: Option<tempfile::TempDir>,
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub async fn moto() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL is not set: the aws contract tests need a moto server (run `make test`)")
    });
    hanul_shared::aws::endpoint_config(&endpoint).await
}

pub async fn embedded_table() -> (Arc<dyn Table>, Guard) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("store");
    (
        Arc::new(EmbeddedTable::new(store, "contract")),
        Guard { _dir: Some(dir) },
    )
}

pub async fn aws_table() -> (Arc<dyn Table>, Guard) {
    let config = moto().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let name = unique("contract");
    bootstrap::ensure_table(&client, &name)
        .await
        .expect("create table on moto");
    (
        Arc::new(DynamoTable::new(client, name, Arc::new(SystemClock))),
        Guard { _dir: None },
    )
}

pub async fn embedded_platform() -> (Platform, Guard) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("store");
    (Platform::embedded(store), Guard { _dir: Some(dir) })
}

pub async fn aws_platform() -> (Platform, Guard) {
    let config = moto().await;
    (
        Platform::aws(&config, Some(format!("{}-", unique("t")))),
        Guard { _dir: None },
    )
}

/// Runs each named contract test against both adapters.
#[macro_export]
macro_rules! on_both_tables {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (table, _guard) = $crate::support::embedded_table().await;
                    super::$name(table).await;
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (table, _guard) = $crate::support::aws_table().await;
                    super::$name(table).await;
                }
            )*
        }
    };
}

#[macro_export]
macro_rules! on_both_platforms {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (platform, _guard) = $crate::support::embedded_platform().await;
                    super::$name(platform).await;
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (platform, _guard) = $crate::support::aws_platform().await;
                    super::$name(platform).await;
                }
            )*
        }
    };
}
