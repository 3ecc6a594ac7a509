//! Builds the adapters named by the configuration and ties them to the
//! domain services and the HTTP adapter.

use crate::config::AppConfig;
use crate::config::{AuthMode, AuthSection};
use crate::conversation_tests::{ConversationTester, RunOptions};
use crate::preload;
use crate::readiness::ServerReadiness;
use anyhow::Context;
use heartrule_cache::{FailoverRateLimiter, LocalRateLimiter, RedisCache, RedisCacheConfig};
use heartrule_domain::ports::{
    MessageHistory, NoCache, RandomIds, ScriptCache, ScriptRepository, SessionCache,
    SessionRepository, SystemClock,
};
use heartrule_domain::{
    Adapters, AdminService, AuditLog, CacheJanitor, MetricDecl, MetricSet, NoNotifier, Ports,
    RateLimiter, RepairProtocol, SafetyDeliveryLog, SafetyNotifier, SafetyProtocol, ScriptCatalog,
    SessionManager, SessionManagerConfig, UserDataStore,
};
use heartrule_http_adapter::auth::{AuthenticationOff, Authenticator, JwtAuthenticator};
use heartrule_http_adapter::{AppState, HttpConfig, MetricsRenderer, RequestTracing};
use heartrule_llm::{BuildOptions, LlmStack};
use heartrule_notify::{WebhookConfig, WebhookNotifier};
use heartrule_persistence::{MemoryStore, PgConfig, PgStore};
use heartrule_script_engine::runtime::templates::{
    DirectoryTemplates, EmbeddedTemplates, TemplateSource,
};
use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
use metrics::Unit;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The adapter types of the server; storage and cache are chosen at run
/// time, hence trait objects.
pub struct ServerPorts;

impl Ports for ServerPorts {
    type Scripts = dyn ScriptRepository;
    type Sessions = dyn SessionRepository;
    type History = dyn MessageHistory;
    type ScriptCache = dyn ScriptCache;
    type SessionCache = dyn SessionCache;
    type Engine = HeartRuleEngine;
    type Clock = SystemClock;
    type Ids = RandomIds;
    type Audit = dyn AuditLog;
    type UserData = dyn UserDataStore;
    type CacheJanitor = dyn CacheJanitor;
}

/// The storage the server runs on.
#[derive(Clone)]
pub(crate) enum Store {
    Memory(Arc<MemoryStore>),
    Postgres(Arc<PgStore>),
}

/// Everything built from the configuration.
pub struct App {
    pub state: AppState,
    pub(crate) store: Store,
    pub(crate) cache: Option<Arc<RedisCache>>,
    pub llm: LlmStack,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Telemetry's W3C trace-context helpers behind the HTTP adapter's hook.
struct TelemetryTracing;

impl RequestTracing for TelemetryTracing {
    fn continue_trace(&self, header: &dyn Fn(&str) -> Option<String>, span: &tracing::Span) {
        heartrule_telemetry::continue_trace(header, span);
    }

    fn trace_id(&self, span: &tracing::Span) -> Option<String> {
        heartrule_telemetry::trace_id(span)
    }
}

/// Builds the whole application (without binding a socket).
pub async fn build_app(
    config: &AppConfig,
    metrics_renderer: Option<MetricsRenderer>,
    started_at: Instant,
) -> anyhow::Result<App> {
    // First: a server that cannot check tokens must not start at all.
    let authenticator = build_authenticator(&config.auth)?;
    let mut background = Vec::new();
    let StoreParts {
        scripts,
        sessions,
        history,
        audit,
        user_data,
        store,
    } = build_store(config, &mut background).await?;

    let cache = if config.redis.url.expose_secret().is_empty() {
        tracing::info!("no Redis configured (redis.url): caching is off");
        None
    } else {
        Some(Arc::new(
            RedisCache::connect_lazy(redis_cache_config(&config.redis))
                .context("configuring Redis (redis.url)")?,
        ))
    };
    let script_cache: Arc<dyn ScriptCache> = match &cache {
        Some(redis) => redis.clone(),
        None => Arc::new(NoCache),
    };
    let session_cache: Arc<dyn SessionCache> = match &cache {
        Some(redis) => redis.clone(),
        None => Arc::new(NoCache),
    };
    // Erasures remove the snapshots of a user's sessions and must hear of a
    // failure, which the fail-open session cache would swallow.
    let cache_janitor: Arc<dyn CacheJanitor> = match &cache {
        Some(redis) => redis.clone(),
        None => Arc::new(NoCache),
    };

    let injector: heartrule_llm::HeaderInjector = Arc::new(|headers| {
        heartrule_telemetry::inject_trace_headers(&tracing::Span::current(), &mut |name, value| {
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        });
    });
    let llm = heartrule_llm::build_with(
        &config.llm,
        &BuildOptions {
            header_injector: Some(injector),
            capture_content: config.telemetry.capture_content,
        },
    )
    .context("configuring the LLM (llm.*)")?;
    warn_if_lease_is_short(config);

    let templates = prompt_templates(config)?;
    let engine = HeartRuleEngine::new(
        Arc::clone(&llm.provider),
        Arc::clone(&templates),
        engine_options(config),
    );

    let adapters = Adapters::<ServerPorts> {
        scripts,
        sessions,
        history,
        script_cache,
        session_cache,
        engine: Arc::new(engine),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
        audit,
        user_data,
        cache_janitor,
    };
    let manager = SessionManager::new(
        adapters.clone(),
        SessionManagerConfig {
            history_window: config.engine.history_window,
            turn_lease: config.engine.turn_lease,
            script_memo_ttl: config.engine.script_memo_ttl,
            quotas: config.quotas.to_domain(),
            // Conversation text goes into the exchange records only where
            // it may go into logs and spans.
            record_prompts: config.telemetry.capture_content,
            ..SessionManagerConfig::default()
        },
    );
    let admin =
        Arc::new(AdminService::new(adapters.clone()).with_quotas(config.quotas.to_domain()));
    let manager = match safety_protocol(&config.safety, &store)? {
        Some(protocol) => manager.with_safety(protocol),
        None => manager,
    };
    // Kept when off too: a session already waiting for a person still gets
    // the configured holding reply.
    if !config.repair_intents.enabled {
        tracing::info!(
            event = "repair_intents_disabled",
            "repair intents are off (repair_intents.enabled): skip, stop and human requests are answers like any other"
        );
    }
    let manager = manager.with_repair(RepairProtocol::new(config.repair_intents.policy()));
    // Projects' conversation tests run on the mock LLM: reproducible, and
    // an editor's test run costs no provider tokens.
    let tester = ConversationTester::new(RunOptions {
        templates,
        engine: engine_options(config),
        ..RunOptions::mock()
    });
    let catalog = ScriptCatalog::new(adapters)
        .with_tester(Arc::new(tester), config.scripts.require_tests_to_publish);
    preload::import_dir(&catalog, &config.scripts.preload_dir).await?;

    let readiness = ServerReadiness::new(
        store.clone(),
        cache.clone(),
        Arc::clone(&llm.status),
        config.llm.degraded_mode,
    );
    let h = &config.http;
    let mut state = AppState::new(
        Arc::new(manager),
        Arc::new(catalog),
        admin,
        HttpConfig {
            body_limit_bytes: h.body_limit_bytes,
            ws_ping_interval: h.ws_ping_interval,
            ws_client_timeout: h.ws_client_timeout,
            include_debug_info: h.include_debug_info,
            history_page_limit: h.history_page_limit,
            cors: h.cors.to_adapter(),
            hsts_max_age: (!h.hsts_max_age.is_zero()).then_some(h.hsts_max_age),
        },
    )
    .with_authenticator(authenticator)
    .with_readiness(Arc::new(readiness))
    .with_tracing(Arc::new(TelemetryTracing))
    .with_started_at(started_at);
    if let Some(limiter) = rate_limiter(config, cache.as_deref()) {
        state = state.with_rate_limiter(limiter, config.rate_limits.policy()?);
    }
    if let Some(renderer) = metrics_renderer {
        state = state.with_metrics_renderer(renderer);
    }
    Ok(App {
        state,
        store,
        cache,
        llm,
        background,
    })
}

/// The crisis protocol of `safety:`, alerting the on-call webhook (when
/// one is configured) with every attempt recorded in the store.
fn safety_protocol(
    safety: &crate::config::SafetySection,
    store: &Store,
) -> anyhow::Result<Option<SafetyProtocol>> {
    if !safety.enabled {
        tracing::warn!(
            event = "safety_disabled",
            "the crisis protocol is off (safety.enabled): crisis messages follow the script"
        );
        return Ok(None);
    }
    let hook = &safety.webhook;
    let notifier: Arc<dyn SafetyNotifier> = if hook.url.is_empty() {
        tracing::warn!(
            event = "safety_webhook_missing",
            "no on-call webhook (safety.webhook.url): crisis alerts are logged and counted only"
        );
        Arc::new(NoNotifier)
    } else {
        let log: Arc<dyn SafetyDeliveryLog> = match store {
            Store::Memory(memory) => memory.clone(),
            Store::Postgres(pg) => pg.clone(),
        };
        Arc::new(
            WebhookNotifier::new(
                WebhookConfig {
                    url: hook.url.clone(),
                    secret: hook.secret.clone(),
                    retries: hook.retries,
                    timeout: hook.timeout,
                    backoff: hook.backoff,
                },
                log,
            )
            .context("configuring the safety webhook (safety.webhook.*)")?,
        )
    };
    Ok(Some(SafetyProtocol::new(safety.policy(), notifier)))
}

/// The authenticator of `auth.mode`. Off says so loudly, like the
/// in-memory store; jwt without a usable key refuses to start.
fn build_authenticator(auth: &AuthSection) -> anyhow::Result<Arc<dyn Authenticator>> {
    match auth.mode {
        AuthMode::Off => {
            tracing::warn!(
                event = "authentication_off",
                "AUTHENTICATION IS OFF (auth.mode: off): every request acts as the local operator \
                 with every role. Only for local use: set auth.mode: jwt (APP_ENV=production does) \
                 and a key (auth.hs256_secret, auth.rs256_public_key_file or auth.jwks_file)."
            );
            Ok(Arc::new(AuthenticationOff))
        }
        AuthMode::Jwt => {
            let settings = auth.jwt_settings()?;
            let authenticator = JwtAuthenticator::new(&settings).context(
                "auth.mode is jwt: set auth.hs256_secret (HEARTRULE__AUTH__HS256_SECRET or its \
                 _FILE), auth.rs256_public_key_file or auth.jwks_file",
            )?;
            tracing::info!(
                event = "authentication_on",
                issuer = %auth.issuer,
                audience = %auth.audience,
                hs256 = settings.hs256_secret.is_some(),
                rs256_key_file = settings.rs256_public_key_pem.is_some(),
                jwks_file = settings.jwks_json.is_some(),
                "bearer JWTs required on /api"
            );
            Ok(Arc::new(authenticator))
        }
    }
}

/// The buckets of `rate_limits`: in Redis (falling back to this instance's
/// own while Redis fails) when Redis is configured, else this instance's.
fn rate_limiter(config: &AppConfig, cache: Option<&RedisCache>) -> Option<Arc<dyn RateLimiter>> {
    let limits = &config.rate_limits;
    if !limits.enabled {
        tracing::warn!(
            event = "rate_limits_off",
            "rate limits are off (rate_limits.enabled): nothing stops one client from flooding the API"
        );
        return None;
    }
    let local = LocalRateLimiter::new(limits.local_max_keys);
    Some(match cache {
        Some(cache) => Arc::new(FailoverRateLimiter::new(
            cache.rate_limiter(),
            local,
            config.redis.warn_interval,
        )),
        None => {
            tracing::info!("no Redis configured (redis.url): rate limits are counted per instance");
            Arc::new(local)
        }
    })
}

/// The repositories of the configured store.
struct StoreParts {
    scripts: Arc<dyn ScriptRepository>,
    sessions: Arc<dyn SessionRepository>,
    history: Arc<dyn MessageHistory>,
    audit: Arc<dyn AuditLog>,
    user_data: Arc<dyn UserDataStore>,
    store: Store,
}

/// PostgreSQL when `database.url` is set (migrated first if configured),
/// the in-memory store otherwise.
async fn build_store(
    config: &AppConfig,
    background: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<StoreParts> {
    if config.database.url.expose_secret().is_empty() {
        tracing::warn!(
            event = "ephemeral_store",
            "NO DATABASE CONFIGURED: sessions, messages and scripts live in memory and are LOST on \
             restart. Set DATABASE_URL (database.url) for PostgreSQL."
        );
        let memory = Arc::new(MemoryStore::new());
        background.push(spawn_store_gauges(Store::Memory(Arc::clone(&memory))));
        return Ok(StoreParts {
            scripts: memory.clone(),
            sessions: memory.clone(),
            history: memory.clone(),
            audit: memory.clone(),
            user_data: memory.clone(),
            store: Store::Memory(memory),
        });
    }
    if config.database.run_migrations {
        let applied = heartrule_persistence::run_migrations(config.database.url.expose_secret())
            .await
            .context("running database migrations (database.run_migrations)")?;
        tracing::info!(event = "migrations_applied", count = applied.len(), versions = ?applied, "database migrated");
    }
    let pg = Arc::new(
        PgStore::connect(pg_config(&config.database))
            .await
            .context("connecting to PostgreSQL (database.url)")?,
    );
    background.push(spawn_store_gauges(Store::Postgres(Arc::clone(&pg))));
    Ok(StoreParts {
        scripts: pg.clone(),
        sessions: pg.clone(),
        history: pg.clone(),
        audit: pg.clone(),
        user_data: pg.clone(),
        store: Store::Postgres(pg),
    })
}

/// Gauge of pool connections, label `state` (`idle` | `in_use`).
pub const DB_POOL_CONNECTIONS: &str = "heartrule_db_pool_connections";
/// Gauge of the pool's maximum size.
pub const DB_POOL_MAX_CONNECTIONS: &str = "heartrule_db_pool_max_connections";
/// Gauge of callers waiting for a pooled connection.
pub const DB_POOL_WAITING: &str = "heartrule_db_pool_waiting";
/// Gauge of active sessions waiting for the user's next message.
pub const SESSIONS_WAITING: &str = "heartrule_sessions_waiting";

/// The metrics this crate records: the store's gauges, published from here
/// because only the composition root holds the pool and the store.
pub const METRICS: MetricSet = MetricSet {
    emitted_by: env!("CARGO_PKG_NAME"),
    metrics: &[
        MetricDecl::gauge(
            DB_POOL_CONNECTIONS,
            Some(Unit::Count),
            &["state"],
            "Database pool connections by state (idle or in_use).",
        ),
        MetricDecl::gauge(
            DB_POOL_MAX_CONNECTIONS,
            Some(Unit::Count),
            &[],
            "Maximum size of the database connection pool.",
        ),
        MetricDecl::gauge(
            DB_POOL_WAITING,
            Some(Unit::Count),
            &[],
            "Callers waiting for a pooled database connection.",
        ),
        MetricDecl::gauge(
            SESSIONS_WAITING,
            Some(Unit::Count),
            &[],
            "Active sessions waiting for the user's next message.",
        ),
    ],
};

/// The PostgreSQL pool settings of the `database` section.
pub(crate) fn pg_config(db: &crate::config::DatabaseSection) -> PgConfig {
    let mut pg = PgConfig::new(db.url.expose_secret());
    pg.max_connections = db.max_connections;
    pg.acquire_timeout = db.acquire_timeout;
    pg.statement_timeout = db.statement_timeout;
    pg.idle_in_transaction_timeout = db.idle_in_transaction_timeout;
    pg.connect_timeout = db.connect_timeout;
    pg.transaction_pooling = db.transaction_pooling;
    pg
}

/// The Redis cache settings of the `redis` section.
pub(crate) fn redis_cache_config(r: &crate::config::RedisSection) -> RedisCacheConfig {
    RedisCacheConfig {
        url: r.url.expose_secret().to_owned(),
        key_prefix: r.key_prefix.clone(),
        script_ttl: r.script_ttl,
        session_ttl: r.session_ttl,
        op_timeout: r.op_timeout,
        connect_timeout: r.connect_timeout,
        warn_interval: r.warn_interval,
    }
}

/// Publishes the store's gauges (pool state, waiting sessions) every few
/// seconds; a failed count is logged and retried at the next tick.
fn spawn_store_gauges(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let waiting = match &store {
                Store::Memory(memory) => Ok(memory.count_waiting_sessions()),
                Store::Postgres(pg) => {
                    let stats = pg.pool_stats();
                    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(stats.idle as f64);
                    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "in_use")
                        .set(stats.in_use as f64);
                    metrics::gauge!(DB_POOL_MAX_CONNECTIONS).set(stats.max_size as f64);
                    metrics::gauge!(DB_POOL_WAITING).set(stats.waiting as f64);
                    pg.count_waiting_sessions().await
                }
            };
            match waiting {
                Ok(count) => metrics::gauge!(SESSIONS_WAITING).set(count as f64),
                Err(e) => tracing::warn!(error = %e, "counting waiting sessions failed"),
            }
        }
    })
}

impl App {
    #[must_use]
    pub fn store_kind(&self) -> &'static str {
        match self.store {
            Store::Memory(_) => "memory",
            Store::Postgres(_) => "postgresql",
        }
    }

    #[must_use]
    pub fn cache_kind(&self) -> &'static str {
        if self.cache.is_some() {
            "redis"
        } else {
            "none"
        }
    }

    /// A handle that reads the PostgreSQL pool's state and acquisition
    /// counters (what the pool gauges publish) at any moment, from any
    /// thread; `None` on the in-memory store. For benchmarks that size the
    /// pool from measured use.
    #[must_use]
    pub fn pool_probe(&self) -> Option<PoolProbe> {
        match &self.store {
            Store::Memory(_) => None,
            Store::Postgres(pg) => Some(PoolProbe(Arc::clone(pg))),
        }
    }

    /// Binds the configured address; SIGINT/SIGTERM stop accepting and give
    /// in-flight requests `server.shutdown_grace_period` to finish.
    pub fn http_server(&self, config: &AppConfig) -> anyhow::Result<BoundServer> {
        let state = self.state.clone();
        let mut server = actix_web::HttpServer::new(move || {
            actix_web::App::new().configure(heartrule_http_adapter::configure(state.clone()))
        })
        .shutdown_timeout(config.server.shutdown_grace_period.as_secs().max(1));
        if config.server.workers > 0 {
            server = server.workers(config.server.workers);
        }
        let server = server
            .bind((config.server.host.as_str(), config.server.port))
            .with_context(|| {
                format!(
                    "binding {}:{} (server.host/server.port)",
                    config.server.host, config.server.port
                )
            })?;
        Ok(BoundServer {
            addrs: server.addrs(),
            server: server.run(),
        })
    }

    /// Stops background tasks.
    pub async fn shutdown(self) {
        for task in self.background {
            task.abort();
        }
    }
}

/// Reads the PostgreSQL pool's state; see [`App::pool_probe`].
#[derive(Clone)]
pub struct PoolProbe(Arc<PgStore>);

impl PoolProbe {
    /// The pool's current state and its acquisition counters so far.
    #[must_use]
    pub fn stats(&self) -> heartrule_persistence::PoolStats {
        self.0.pool_stats()
    }
}

/// A bound, not yet awaited, HTTP server.
pub struct BoundServer {
    addrs: Vec<std::net::SocketAddr>,
    server: actix_web::dev::Server,
}

impl BoundServer {
    #[must_use]
    pub fn addrs(&self) -> Vec<std::net::SocketAddr> {
        self.addrs.clone()
    }

    /// A handle to stop the server from elsewhere (tests).
    #[must_use]
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// The longest one LLM call can take with every retry: each attempt's
/// timeout plus the longest backoff between attempts.
fn slowest_llm_call(llm: &heartrule_llm::LlmConfig) -> std::time::Duration {
    let r = &llm.resilience;
    llm.openai.timeout * (r.max_retries + 1) + r.max_backoff * r.max_retries
}

/// A lease shorter than one LLM call's worst case lets a slow turn be taken
/// over and its commit refused; say so at start-up rather than in a
/// confusing `CONFLICT` later.
fn warn_if_lease_is_short(config: &AppConfig) {
    let slowest = slowest_llm_call(&config.llm);
    if config.llm.provider == heartrule_llm::ProviderKind::OpenAi
        && config.engine.turn_lease < slowest
    {
        tracing::warn!(
            turn_lease = ?config.engine.turn_lease,
            slowest_llm_call = ?slowest,
            "engine.turn_lease is shorter than one LLM call with all its retries: slow turns may lose their lease"
        );
    }
}

/// The prompt templates of `engine.prompts_dir`, or the built-in ones when
/// that folder does not exist.
pub(crate) fn prompt_templates(config: &AppConfig) -> anyhow::Result<Arc<dyn TemplateSource>> {
    if config.engine.prompts_dir.is_dir() {
        let templates =
            DirectoryTemplates::load(&config.engine.prompts_dir).with_context(|| {
                format!(
                    "loading prompt templates from {}",
                    config.engine.prompts_dir.display()
                )
            })?;
        return Ok(Arc::new(templates));
    }
    tracing::info!(
        dir = %config.engine.prompts_dir.display(),
        "prompt folder not found: using the built-in templates"
    );
    Ok(Arc::new(EmbeddedTemplates::new()))
}

/// The engine's options from `engine.*`.
pub(crate) fn engine_options(config: &AppConfig) -> EngineOptions {
    EngineOptions {
        monitors: config.engine.monitors,
        output_guard: config.engine.output_guard.enabled,
        history_window: config.engine.history_window,
        degraded_mode: config.llm.degraded_mode,
        context_window_tokens: config.llm.context_window_tokens,
    }
}
