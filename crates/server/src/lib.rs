//! The composition root: builds every adapter from configuration and runs
//! the HTTP server. The only crate that knows all the others.

pub mod config;
mod preload;
mod readiness;
mod wiring;

pub use wiring::{build_app, App, ServerPorts};

use anyhow::Context;
use config::AppConfig;
use secrecy::ExposeSecret;
use std::time::Instant;

/// Runs the server until SIGINT/SIGTERM, then drains in-flight requests
/// within `server.shutdown_grace_period` and flushes telemetry.
pub async fn serve(config: AppConfig) -> anyhow::Result<()> {
    let started_at = Instant::now();
    let telemetry = heartrule_telemetry::init(&config.telemetry).context("starting telemetry")?;
    let app = build_app(&config, telemetry.metrics_renderer(), started_at).await?;
    let server = app.http_server(&config)?;
    let address = server.addrs();
    tracing::info!(
        event = "server_started",
        addresses = ?address,
        store = app.store_kind(),
        cache = app.cache_kind(),
        llm = config.llm.provider.as_str(),
        "HeartRule is listening"
    );
    let result = server.run().await.context("HTTP server failed");
    tracing::info!(event = "server_stopped", "HeartRule stopped");
    app.shutdown().await;
    telemetry.shutdown();
    result
}

/// Applies pending migrations to `database.url`.
pub async fn migrate(config: &AppConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.database.url.expose_secret().is_empty(),
        "`database.url` (DATABASE_URL) is empty: there is no database to migrate"
    );
    let applied = heartrule_persistence::run_migrations(config.database.url.expose_secret())
        .await
        .context("running migrations")?;
    if applied.is_empty() {
        println!("database is up to date");
    } else {
        for version in applied {
            println!("applied {version}");
        }
    }
    Ok(())
}

/// One line per section, secrets left out.
#[must_use]
pub fn config_summary(config: &AppConfig) -> String {
    format!(
        "listen: {}:{}\nstore: {}\ncache: {}\nllm: {}\ntelemetry: logs {:?}, traces {}",
        config.server.host,
        config.server.port,
        if config.database.url.expose_secret().is_empty() {
            "in-memory (ephemeral)"
        } else {
            "postgresql"
        },
        if config.redis.url.expose_secret().is_empty() {
            "none"
        } else {
            "redis"
        },
        config.llm.provider.as_str(),
        config.telemetry.log.format,
        if config.telemetry.traces.enabled {
            "on"
        } else {
            "off"
        },
    )
}

#[cfg(test)]
mod tests {
    /// The README's metrics table is generated from the telemetry catalogue
    /// (`heartrule metrics-doc`); this keeps the two from drifting apart.
    #[test]
    fn readme_lists_the_metrics_catalogue() {
        let readme = include_str!("../../../README.md");
        let table = heartrule_telemetry::metrics_markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's metrics table is stale: regenerate it with `cargo run -p heartrule-server -- metrics-doc`"
        );
    }
}
