//! The composition root: builds every adapter from configuration and runs
//! the HTTP server. The only crate that knows all the others.

pub mod config;
pub mod conversation_tests;
pub mod maintenance;
mod preload;
mod readiness;
mod replay_text;
mod wiring;

pub use heartrule_persistence::PoolStats;
pub use replay_text::render_replay;
pub use wiring::{build_app, App, PoolProbe, ServerPorts, METRICS};

use anyhow::Context;
use config::AppConfig;
use secrecy::ExposeSecret;
use std::time::Instant;

/// Every metric the service emits: the set each crate declares, in the
/// order of the README table, gathered by the telemetry crate (which adds
/// its own).
///
/// # Errors
/// A malformed declaration or a name two crates declare.
pub fn metrics_catalogue(
) -> Result<heartrule_telemetry::Catalogue, heartrule_telemetry::TelemetryError> {
    heartrule_telemetry::Catalogue::new([
        heartrule_http_adapter::METRICS,
        heartrule_domain::METRICS,
        heartrule_script_engine::METRICS,
        heartrule_llm::METRICS,
        heartrule_persistence::METRICS,
        METRICS,
        heartrule_cache::METRICS,
        heartrule_notify::METRICS,
    ])
}

/// Runs the server until SIGINT/SIGTERM, then drains in-flight requests
/// within `server.shutdown_grace_period` and flushes telemetry.
pub async fn serve(config: AppConfig) -> anyhow::Result<()> {
    let started_at = Instant::now();
    let catalogue = metrics_catalogue().context("building the metrics catalogue")?;
    let telemetry =
        heartrule_telemetry::init(&config.telemetry, &catalogue).context("starting telemetry")?;
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

/// `heartrule token`: a development token signed with `auth.hs256_secret`,
/// carrying the configured issuer and audience.
pub fn issue_token(
    config: &AppConfig,
    subject: &str,
    roles: &[heartrule_domain::Role],
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    let auth = &config.auth;
    let secret = auth.hs256_secret.expose_secret();
    anyhow::ensure!(
        !secret.is_empty(),
        "`auth.hs256_secret` (HEARTRULE__AUTH__HS256_SECRET or its _FILE) is not set: \
         development tokens are signed with it"
    );
    anyhow::ensure!(!roles.is_empty(), "give at least one --role");
    Ok(heartrule_http_adapter::auth::issue_hs256(
        secret.as_bytes(),
        &heartrule_http_adapter::auth::TokenRequest {
            subject,
            roles,
            issuer: &auth.issuer,
            audience: &auth.audience,
            roles_claim: &auth.roles_claim,
            ttl,
        },
    )?)
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

/// `heartrule replay`: replays stored session `session_id` against version
/// `version` of its script (the version it ran on when `None`) with the
/// configured store and LLM, as the local operator (audited as
/// `session.replay`). Nothing else is written: no script is preloaded.
pub async fn replay(
    config: &AppConfig,
    session_id: heartrule_domain::SessionId,
    version: Option<u32>,
) -> anyhow::Result<heartrule_domain::ReplayReport> {
    anyhow::ensure!(
        !config.database.url.expose_secret().is_empty(),
        "`database.url` (DATABASE_URL) is empty: stored sessions live in the database"
    );
    let mut config = config.clone();
    // A replay only reads conversations: the example scripts are not imported.
    config.scripts.preload_dir = std::path::PathBuf::new();
    let app = build_app(&config, None, Instant::now()).await?;
    let report = app
        .state
        .conversations
        .replay(
            &heartrule_domain::Actor::local_operator(),
            session_id,
            version,
        )
        .await;
    app.shutdown().await;
    report.with_context(|| format!("replaying session {session_id}"))
}

/// Conversation-test options of `config`: its LLM stack, prompt templates and
/// engine options. Wording is checked only when the configured provider is
/// the deterministic mock.
pub fn conversation_test_options(
    config: &AppConfig,
) -> anyhow::Result<conversation_tests::RunOptions> {
    let llm = heartrule_llm::build(&config.llm).context("configuring the LLM (llm.*)")?;
    Ok(conversation_tests::RunOptions {
        llm: llm.provider,
        templates: wiring::prompt_templates(config)?,
        engine: wiring::engine_options(config),
        check_wording: config.llm.provider == heartrule_llm::ProviderKind::Mock
            && config.llm.fallback.is_none(),
    })
}

/// One line per section, secrets left out.
#[must_use]
pub fn config_summary(config: &AppConfig) -> String {
    format!(
        "listen: {}:{}\nstore: {}\ncache: {}\nllm: {}\nauth: {}\ntelemetry: logs {:?}, traces {}",
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
        config.auth.mode.as_str(),
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
    use super::metrics_catalogue;

    /// Every crate's declarations fit together (well-formed, no name twice),
    /// and the metrics the product is known by are there.
    #[test]
    fn the_catalogue_gathers_every_crate() {
        let catalogue = metrics_catalogue().unwrap();
        let emitted_by = |name: &str| {
            catalogue
                .iter()
                .find(|(_, decl)| decl.name == name)
                .map(|(by, _)| by)
        };
        for (name, by) in [
            (
                "http_server_request_duration_seconds",
                "heartrule-http-adapter",
            ),
            ("heartrule_turns_total", "heartrule-domain"),
            ("heartrule_sessions_created_total", "heartrule-domain"),
            ("heartrule_session_lock_wait_seconds", "heartrule-domain"),
            ("heartrule_llm_fallback_total", "heartrule-llm"),
            ("heartrule_db_errors_total", "heartrule-persistence"),
            ("heartrule_db_pool_waiting", "heartrule-server"),
            ("heartrule_sessions_waiting", "heartrule-server"),
            ("heartrule_redis_errors_total", "heartrule-cache"),
            (
                "heartrule_process_memory_limit_bytes",
                "heartrule-telemetry",
            ),
            ("process_resident_memory_bytes", "heartrule-telemetry"),
        ] {
            assert_eq!(emitted_by(name), Some(by), "{name}");
        }
    }

    /// The README's metrics table is generated from the telemetry catalogue
    /// (`heartrule metrics-doc`); this keeps the two from drifting apart.
    #[test]
    fn readme_lists_the_metrics_catalogue() {
        let readme = include_str!("../../../README.md");
        let table = metrics_catalogue().unwrap().markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's metrics table is stale: regenerate it with `cargo run -p heartrule-server -- metrics-doc`"
        );
    }
}
