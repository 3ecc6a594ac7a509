//! The real server, as `heartrule serve` builds it (`build_app`), listening
//! on the address of its configuration (port 0: a free one) and served by a
//! task of the calling runtime.

use anyhow::Context;
use heartrule_server::config::AppConfig;
use heartrule_server::{build_app, App};
use heartrule_telemetry::MetricsRendererFn;
use std::time::Instant;
use tokio::task::JoinHandle;

/// A running server; [`RunningServer::stop`] stops it gracefully.
pub struct RunningServer {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    handle: actix_web::dev::ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
    app: App,
}

impl RunningServer {
    /// Builds and starts the server; panics when it does not start.
    pub async fn start(config: &AppConfig, metrics: Option<MetricsRendererFn>) -> Self {
        Self::try_start(config, metrics)
            .await
            .unwrap_or_else(|e| panic!("the server does not start: {e:#}"))
    }

    /// Builds and starts the server.
    pub async fn try_start(
        config: &AppConfig,
        metrics: Option<MetricsRendererFn>,
    ) -> anyhow::Result<Self> {
        let app = build_app(config, metrics, Instant::now()).await?;
        let server = app.http_server(config)?;
        let address = *server
            .addrs()
            .first()
            .context("the server bound no address")?;
        let handle = server.handle();
        let task = tokio::spawn(server.run());
        Ok(Self {
            base_url: format!("http://{address}"),
            handle,
            task,
            app,
        })
    }

    /// `base_url` followed by `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Reads the server's PostgreSQL pool (`None` on the in-memory store).
    pub fn pool_probe(&self) -> Option<heartrule_server::PoolProbe> {
        self.app.pool_probe()
    }

    /// Stops accepting, lets in-flight requests finish, then stops the
    /// app's background tasks.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("warning: the server stopped with an error: {error}"),
            Err(error) => eprintln!("warning: the server task failed: {error}"),
        }
        self.app.shutdown().await;
    }
}
