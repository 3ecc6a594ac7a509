//! Server configuration: `config/default.yaml`, then `config/{APP_ENV}.yaml`,
//! then environment variables `HEARTRULE__SECTION__KEY`, plus the original
//! engine's variables (`DATABASE_URL`, `REDIS_URL`, `API_PORT`, `API_HOST`,
//! `LLM_PROVIDER`). A `.env` file is read first when present.
//!
//! Every secret setting can also come from a file: `<VARIABLE>_FILE` names a
//! file (a mounted Kubernetes or Docker secret) whose trimmed content is the
//! value (see [`SECRET_VARIABLES`]). Secret values are [`SecretString`]s, so
//! `Debug` output and errors never show them.

use heartrule_http_adapter::auth::JwtSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub server: ServerSection,
    pub http: HttpSection,
    pub database: DatabaseSection,
    pub redis: RedisSection,
    pub rate_limits: RateLimitsSection,
    pub llm: heartrule_llm::LlmConfig,
    pub engine: EngineSection,
    /// Token budgets; absent or `null` limits are off.
    #[serde(default)]
    pub quotas: QuotasSection,
    pub scripts: ScriptsSection,
    pub retention: RetentionSection,
    pub auth: AuthSection,
    pub safety: SafetySection,
    pub repair_intents: RepairIntentsSection,
    pub telemetry: heartrule_telemetry::TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub host: String,
    pub port: u16,
    /// Worker threads of the HTTP server; 0 = one per core.
    pub workers: usize,
    /// How long in-flight requests may run after SIGINT/SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace_period: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub body_limit_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub ws_ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub ws_client_timeout: Duration,
    /// Return every LLM call of a turn (prompts included) as `debugInfo`.
    pub include_debug_info: bool,
    pub history_page_limit: usize,
    /// `Strict-Transport-Security` max-age on every response; `0s` sends
    /// none. Set it only when clients reach the server over TLS.
    #[serde(with = "humantime_serde")]
    pub hsts_max_age: Duration,
    pub cors: CorsSection,
}

/// Which browser origins may call the API (none listed: same origin only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// Exact origins; `*` alone allows any origin, never with credentials.
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    /// Response headers a page may read (`X-Request-Id`, `Retry-After`, …).
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl CorsSection {
    /// The HTTP adapter's form of this section.
    #[must_use]
    pub fn to_adapter(&self) -> heartrule_http_adapter::CorsConfig {
        heartrule_http_adapter::CorsConfig {
            allowed_origins: self.allowed_origins.clone(),
            allowed_methods: self.allowed_methods.clone(),
            allowed_headers: self.allowed_headers.clone(),
            expose_headers: self.expose_headers.clone(),
            allow_credentials: self.allow_credentials,
            max_age: (!self.max_age.is_zero()).then_some(self.max_age),
        }
    }
}

/// Request rate limits (token buckets; in Redis when it is configured,
/// shared by every instance, else per instance).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsSection {
    pub enabled: bool,
    /// `subject`: the token's subject, the client address when there is
    /// none; `ip`: always the client address.
    pub key: RateLimitKeySetting,
    /// General bucket of an authenticated subject.
    pub per_subject: BucketSection,
    /// General bucket of a client address.
    pub per_ip: BucketSection,
    /// Bucket of the LLM-calling routes, per subject or address.
    pub llm: BucketSection,
    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` is
    /// believed; empty: the peer address is the client's.
    pub trusted_proxies: Vec<String>,
    /// Most buckets the in-process limiter keeps (it decides without Redis
    /// and while Redis fails).
    pub local_max_keys: usize,
}

/// `rate_limits.key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKeySetting {
    Subject,
    Ip,
}

/// One token bucket: `rate` requests per second sustained, `burst` at once.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketSection {
    pub rate: f64,
    pub burst: u32,
}

impl BucketSection {
    /// The domain's form of this bucket.
    #[must_use]
    pub fn limit(&self) -> heartrule_domain::RateLimit {
        heartrule_domain::RateLimit {
            per_second: self.rate,
            burst: self.burst,
        }
    }
}

impl RateLimitsSection {
    /// The trusted proxies as networks (a plain address is its own /32 or /128).
    pub fn trusted_networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "`rate_limits.trusted_proxies` entry `{entry}` is neither an IP address nor a CIDR network"
                        ))
                    })
            })
            .collect()
    }

    /// The HTTP adapter's policy of this section.
    pub fn policy(&self) -> Result<heartrule_http_adapter::RateLimitPolicy, ConfigError> {
        Ok(heartrule_http_adapter::RateLimitPolicy {
            per_subject: self.per_subject.limit(),
            per_ip: self.per_ip.limit(),
            llm: self.llm.limit(),
            key: match self.key {
                RateLimitKeySetting::Subject => heartrule_http_adapter::RateLimitKey::Subject,
                RateLimitKeySetting::Ip => heartrule_http_adapter::RateLimitKey::Ip,
            },
            trusted_proxies: self.trusted_networks()?,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// Empty: the in-memory store (ephemeral, logged loudly). May carry a
    /// password, hence secret.
    pub url: SecretString,
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Ends a connection's transaction left idle this long (a bug: no code
    /// path holds a transaction across slow work).
    #[serde(with = "humantime_serde")]
    pub idle_in_transaction_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Apply pending migrations at start-up.
    pub run_migrations: bool,
    /// The server talks to PostgreSQL through a pooler in transaction
    /// pooling mode (PgBouncer `pool_mode = transaction`), which may run
    /// consecutive exchanges of one client connection on different server
    /// connections: every database operation then runs in one explicit
    /// transaction with the timeouts `SET LOCAL` in it, and no prepared
    /// statement or session setting outlives that transaction.
    pub transaction_pooling: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// Empty: no cache. May carry a password (`redis://:pw@host`), hence secret.
    pub url: SecretString,
    pub key_prefix: String,
    #[serde(with = "humantime_serde")]
    pub script_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub op_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub warn_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Recent messages a turn loads for its prompts.
    pub history_window: usize,
    /// A turn's lease on its session: must outlast the slowest turn (its
    /// LLM calls with every retry). A crashed instance's sessions are free
    /// again after it.
    #[serde(with = "humantime_serde")]
    pub turn_lease: Duration,
    /// How long turns reuse a parsed script and its resolved techniques; an
    /// edited technique is picked up within this time.
    #[serde(with = "humantime_serde")]
    pub script_memo_ttl: Duration,
    /// Run the topic-level monitor after incomplete ask/say rounds.
    pub monitors: bool,
    /// The output guard of AI replies.
    pub output_guard: OutputGuardSection,
    /// Prompt templates (`default/`, `custom/<scheme>/`); the built-in copies
    /// are used when the folder does not exist.
    pub prompts_dir: PathBuf,
}

/// The output guard: AI replies with diagnosis, prescription or guarantee
/// language (or a flagged `safety_risk`) are regenerated once, then replaced
/// by the action's scripted text; streamed text is released sentence by
/// sentence after it passed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputGuardSection {
    pub enabled: bool,
}

/// Token budgets, checked before a turn's LLM calls (README "Token budgets
/// and quotas"). Each limit is off when `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotasSection {
    /// Tokens one session may use over its lifetime.
    pub session_max_tokens: Option<u64>,
    /// Tokens one user may use per UTC day, over all their sessions.
    pub user_daily_tokens: Option<u64>,
    /// Tokens all users together may use per UTC hour.
    pub global_hourly_tokens: Option<u64>,
    /// What a turn over a limit gets: `refuse` (429 QUOTA_EXCEEDED) or
    /// `scripted` (the conversation goes on with the scripts' own texts,
    /// without the LLM).
    pub when_exceeded: heartrule_domain::QuotaAction,
}

impl QuotasSection {
    /// The domain's form of this section.
    #[must_use]
    pub fn to_domain(self) -> heartrule_domain::QuotaConfig {
        heartrule_domain::QuotaConfig {
            session_max_tokens: self.session_max_tokens,
            user_daily_tokens: self.user_daily_tokens,
            global_hourly_tokens: self.global_hourly_tokens,
            when_exceeded: self.when_exceeded,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptsSection {
    /// YAML scripts imported (upsert by file name) at start-up, if the folder
    /// exists; technique scripts in its `techniques/` subfolder.
    pub preload_dir: PathBuf,
    /// Publishing a draft first runs its conversation tests (the project's
    /// test files, deterministic mock LLM) and refuses with `TESTS_FAILED`
    /// unless they all pass; a draft without tests cannot be published.
    #[serde(default)]
    pub require_tests_to_publish: bool,
}

/// What `heartrule maintenance cleanup` deletes, and how gently.
/// Conversations are sensitive: keep them no longer than needed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// A session whose last activity (its last committed or failed turn) is
    /// older than this goes, with its messages, variable snapshots,
    /// idempotency keys, failed turns and cached snapshot.
    #[serde(with = "humantime_serde")]
    pub sessions: Duration,
    /// How long a stored response replays for a retried `Idempotency-Key`.
    #[serde(with = "humantime_serde")]
    pub idempotency_keys: Duration,
    /// How long a failed turn's record (with the user's words) is kept.
    #[serde(with = "humantime_serde")]
    pub failed_turns: Duration,
    /// Rows (or cache keys scanned) per delete statement.
    pub batch_size: usize,
    /// Pause between two batches, so the cleanup leaves room for turns.
    #[serde(with = "humantime_serde")]
    pub batch_pause: Duration,
}

impl RetentionSection {
    /// The ages the store purges by.
    #[must_use]
    pub fn ages(&self) -> heartrule_domain::RetentionAges {
        heartrule_domain::RetentionAges {
            sessions: self.sessions,
            idempotency_keys: self.idempotency_keys,
            failed_turns: self.failed_turns,
        }
    }
}

/// Whether requests must prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request is the local operator, holding every role: local use
    /// and trusted networks only (logged loudly at start-up).
    Off,
    /// Every `/api` request needs a valid bearer JWT.
    Jwt,
}

impl AuthMode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Jwt => "jwt",
        }
    }
}

/// Authentication of the API (`auth.mode: jwt`): which tokens are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub mode: AuthMode,
    /// Verifies (and `heartrule token` signs) HS256 tokens; empty: none.
    /// At least 32 bytes.
    pub hs256_secret: SecretString,
    /// PEM file of an RS256 public key; empty: none.
    pub rs256_public_key_file: String,
    /// JWKS file whose RSA keys verify RS256 tokens by `kid`; empty: none.
    pub jwks_file: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// The claim holding the roles (an array of strings); dots reach into
    /// objects (`realm_access.roles`).
    pub roles_claim: String,
}

impl AuthSection {
    /// The verifier's settings, with the key files read. Errors name the
    /// key and the path, never a key.
    pub fn jwt_settings(&self) -> Result<JwtSettings, ConfigError> {
        let read = |key: &str, path: &str| -> Result<Option<Vec<u8>>, ConfigError> {
            if path.trim().is_empty() {
                return Ok(None);
            }
            std::fs::read(path)
                .map(Some)
                .map_err(|e| ConfigError::Invalid(format!("`{key}`: cannot read {path}: {e}")))
        };
        let jwks = read("auth.jwks_file", &self.jwks_file)?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "`auth.jwks_file`: {} is not UTF-8 JSON",
                        self.jwks_file
                    ))
                })
            })
            .transpose()?;
        let secret = self.hs256_secret.expose_secret();
        Ok(JwtSettings {
            hs256_secret: (!secret.is_empty()).then(|| secret.as_bytes().to_vec()),
            rs256_public_key_pem: read("auth.rs256_public_key_file", &self.rs256_public_key_file)?,
            jwks_json: jwks,
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway: self.leeway,
            roles_claim: self.roles_claim.clone(),
        })
    }
}

/// The crisis protocol (`safety:`; README "Safety").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetySection {
    pub enabled: bool,
    /// `low`, `medium`, `high` or `imminent`: signals at or above it start
    /// the protocol.
    pub threshold: heartrule_domain::RiskLevel,
    /// The locale whose reply is used when the message's has none.
    pub default_locale: String,
    /// `0s`: only an editor or admin releases a session from handoff.
    #[serde(with = "humantime_serde")]
    pub handoff_cooldown: Duration,
    pub locales: std::collections::BTreeMap<String, heartrule_domain::LocaleResponse>,
    /// Extra weighted phrases of the local detector.
    #[serde(default)]
    pub patterns: Vec<heartrule_domain::safety::CrisisPattern>,
    /// Extra phrases that use crisis words in another sense.
    #[serde(default)]
    pub benign: Vec<String>,
    pub webhook: SafetyWebhookSection,
}

/// The on-call endpoint alerted by the crisis protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyWebhookSection {
    /// Empty: no webhook (the event and the metric remain).
    pub url: String,
    /// HMAC-SHA256 key of the `X-HeartRule-Signature` header.
    pub secret: SecretString,
    /// Attempts after the first.
    pub retries: u32,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Wait before the first retry, doubled before each further one.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
}

impl SafetySection {
    /// The domain's policy.
    #[must_use]
    pub fn policy(&self) -> heartrule_domain::SafetyPolicy {
        heartrule_domain::SafetyPolicy {
            enabled: self.enabled,
            threshold: self.threshold,
            default_locale: self.default_locale.clone(),
            locales: self.locales.clone(),
            handoff_cooldown: (!self.handoff_cooldown.is_zero()).then_some(self.handoff_cooldown),
            rules: heartrule_domain::safety::DetectorRules {
                patterns: self.patterns.clone(),
                benign: self.benign.clone(),
                levels: heartrule_domain::safety::ScoreLevels::default(),
            },
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, why: &str| Err(ConfigError::Invalid(format!("`{key}` {why}")));
        if !self.enabled {
            return Ok(());
        }
        if self.threshold == heartrule_domain::RiskLevel::None {
            return invalid("safety.threshold", "must be low, medium, high or imminent");
        }
        if !self.locales.contains_key(&self.default_locale) {
            return invalid("safety.default_locale", "must name one of safety.locales");
        }
        for (locale, settings) in &self.locales {
            if settings.response.trim().is_empty() || settings.holding_response.trim().is_empty() {
                return invalid(
                    &format!("safety.locales.{locale}"),
                    "needs a response and a holding_response",
                );
            }
            if settings.hotlines.is_empty() {
                return invalid(
                    &format!("safety.locales.{locale}.hotlines"),
                    "must list at least one hotline",
                );
            }
        }
        if let Some(pattern) = self
            .patterns
            .iter()
            .find(|p| p.id.trim().is_empty() || p.phrase.trim().is_empty() || p.weight == 0)
        {
            return invalid(
                "safety.patterns",
                &format!(
                    "entries need an id, a phrase and a weight > 0 (`{}`)",
                    pattern.id
                ),
            );
        }
        let hook = &self.webhook;
        if !hook.url.is_empty() {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return invalid("safety.webhook.url", "must be an http(s) URL");
            }
            if hook.secret.expose_secret().len() < 16 {
                return invalid(
                    "safety.webhook.secret (HEARTRULE__SAFETY__WEBHOOK__SECRET)",
                    "must be at least 16 bytes when safety.webhook.url is set",
                );
            }
            if hook.retries > 10 {
                return invalid("safety.webhook.retries", "must be at most 10");
            }
            if hook.timeout < Duration::from_millis(100) {
                return invalid("safety.webhook.timeout", "must be at least 100ms");
            }
        }
        Ok(())
    }
}

/// Repair intents in answers to questions (`repair_intents:`; README
/// "Repair intents").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairIntentsSection {
    pub enabled: bool,
    /// A request for a person also alerts `safety.webhook` (type
    /// `repair.human_request`).
    pub notify_on_human: bool,
    /// The locale whose replies are used when the message's has none.
    pub default_locale: String,
    pub locales: std::collections::BTreeMap<String, heartrule_domain::RepairReplies>,
    /// Extra phrases of the local detector.
    #[serde(default)]
    pub patterns: Vec<heartrule_domain::IntentPattern>,
}

impl RepairIntentsSection {
    /// The domain's policy.
    #[must_use]
    pub fn policy(&self) -> heartrule_domain::RepairPolicy {
        heartrule_domain::RepairPolicy {
            enabled: self.enabled,
            notify_on_human: self.notify_on_human,
            default_locale: self.default_locale.clone(),
            locales: self.locales.clone(),
            rules: heartrule_domain::IntentRules {
                patterns: self.patterns.clone(),
            },
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, why: &str| Err(ConfigError::Invalid(format!("`{key}` {why}")));
        if !self.enabled {
            return Ok(());
        }
        if !self.locales.contains_key(&self.default_locale) {
            return invalid(
                "repair_intents.default_locale",
                "must name one of repair_intents.locales",
            );
        }
        for (locale, replies) in &self.locales {
            if [&replies.stop, &replies.human, &replies.holding]
                .iter()
                .any(|text| text.trim().is_empty())
            {
                return invalid(
                    &format!("repair_intents.locales.{locale}"),
                    "needs a stop, a human and a holding reply",
                );
            }
        }
        if let Some(pattern) = self
            .patterns
            .iter()
            .find(|p| p.id.trim().is_empty() || p.phrase.trim().is_empty())
        {
            return invalid(
                "repair_intents.patterns",
                &format!("entries need an id and a phrase (`{}`)", pattern.id),
            );
        }
        Ok(())
    }
}

/// Largest `auth.leeway`: a token expired longer ago than this is expired.
pub const MAX_AUTH_LEEWAY: Duration = Duration::from_secs(300);

/// Largest `retention.batch_size`: one statement stays short.
pub const MAX_RETENTION_BATCH: usize = 10_000;

/// The smallest `llm.context_window_tokens`: below it the built-in prompt
/// templates alone would not fit.
pub const MIN_CONTEXT_WINDOW_TOKENS: u32 = 1_024;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The variables holding secrets. Each can instead be given as
/// `<VARIABLE>_FILE`, naming a file whose trimmed content is the value;
/// setting both is an error.
pub const SECRET_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "HEARTRULE__DATABASE__URL",
    "HEARTRULE__REDIS__URL",
    "HEARTRULE__LLM__OPENAI__API_KEY",
    "HEARTRULE__LLM__FALLBACK__OPENAI__API_KEY",
    "HEARTRULE__AUTH__HS256_SECRET",
    "HEARTRULE__SAFETY__WEBHOOK__SECRET",
];

/// Keys whose environment variable is a comma-separated list
/// (`HEARTRULE__HTTP__CORS__ALLOWED_ORIGINS=https://a.example,https://b.example`).
const LIST_KEYS: &[&str] = &[
    "http.cors.allowed_origins",
    "http.cors.allowed_methods",
    "http.cors.allowed_headers",
    "http.cors.expose_headers",
    "rate_limits.trusted_proxies",
];

/// Legacy variable → config key.
const LEGACY_ENV: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
    ("API_PORT", "server.port"),
    ("API_HOST", "server.host"),
    ("LLM_PROVIDER", "llm.provider"),
];

impl AppConfig {
    /// Loads the configuration from `dir` (normally `config/`) and the
    /// process environment.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(dir, &env)
    }

    /// As [`AppConfig::load`], with an explicit environment (for tests).
    pub fn load_from(dir: &Path, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let env = resolve_secret_files(env)?;
        let env = env.as_slice();
        let lookup = |name: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let app_env = lookup("APP_ENV").unwrap_or_else(|| "development".to_owned());
        let default_file = dir.join("default.yaml");
        let mut builder = config::Config::builder()
            .add_source(config::File::from(default_file.as_path()).required(true))
            .add_source(config::File::from(dir.join(format!("{app_env}.yaml"))).required(false));
        for (legacy, key) in LEGACY_ENV {
            if let Some(value) = lookup(legacy) {
                builder = builder.set_override(*key, value).map_err(invalid)?;
            }
        }
        let prefixed: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("HEARTRULE__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            LIST_KEYS
                .iter()
                .fold(
                    config::Environment::with_prefix("HEARTRULE")
                        .prefix_separator("__")
                        .separator("__")
                        .try_parsing(true)
                        .list_separator(","),
                    |environment, key| environment.with_list_parse_key(key),
                )
                .source(Some(prefixed)),
        );
        let raw = builder.build().map_err(|e| match e {
            config::ConfigError::FileParse { uri, cause } => ConfigError::File {
                path: uri.unwrap_or_else(|| default_file.display().to_string()),
                message: cause.to_string(),
            },
            config::ConfigError::NotFound(what) => ConfigError::File {
                path: default_file.display().to_string(),
                message: format!("not found: {what}"),
            },
            other => invalid(other),
        })?;
        let config: Self = raw.try_deserialize().map_err(invalid)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.safety.validate()?;
        self.repair_intents.validate()?;
        let check = |ok: bool, key: &str, why: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid(format!("`{key}` {why}")))
            }
        };
        check(
            !self.server.host.is_empty(),
            "server.host (API_HOST)",
            "must not be empty",
        )?;
        check(
            self.http.body_limit_bytes > 0,
            "http.body_limit_bytes",
            "must be greater than 0",
        )?;
        check(
            self.database.max_connections > 0,
            "database.max_connections",
            "must be greater than 0",
        )?;
        check(
            self.engine.history_window > 0,
            "engine.history_window",
            "must be greater than 0",
        )?;
        check(
            self.engine.turn_lease >= Duration::from_secs(1),
            "engine.turn_lease",
            "must be at least 1s",
        )?;
        for (key, limit) in [
            ("quotas.session_max_tokens", self.quotas.session_max_tokens),
            ("quotas.user_daily_tokens", self.quotas.user_daily_tokens),
            (
                "quotas.global_hourly_tokens",
                self.quotas.global_hourly_tokens,
            ),
        ] {
            check(
                limit.is_none_or(|tokens| tokens > 0),
                key,
                "must be greater than 0 (or null to turn the limit off)",
            )?;
        }
        check(
            self.llm.context_window_tokens >= MIN_CONTEXT_WINDOW_TOKENS,
            "llm.context_window_tokens",
            "must be at least 1024",
        )?;
        self.http
            .cors
            .to_adapter()
            .validate()
            .map_err(|why| ConfigError::Invalid(format!("`http.cors`: {why}")))?;
        for (key, bucket) in [
            ("rate_limits.per_subject", &self.rate_limits.per_subject),
            ("rate_limits.per_ip", &self.rate_limits.per_ip),
            ("rate_limits.llm", &self.rate_limits.llm),
        ] {
            bucket
                .limit()
                .validate()
                .map_err(|why| ConfigError::Invalid(format!("`{key}`: {why}")))?;
        }
        self.rate_limits.trusted_networks()?;
        check(
            self.rate_limits.local_max_keys > 0,
            "rate_limits.local_max_keys",
            "must be greater than 0",
        )?;
        check(
            self.http.ws_client_timeout > self.http.ws_ping_interval,
            "http.ws_client_timeout",
            "must be longer than http.ws_ping_interval",
        )?;
        let hour = Duration::from_secs(3600);
        check(
            self.retention.sessions >= hour,
            "retention.sessions",
            "must be at least 1h",
        )?;
        check(
            self.retention.sessions > self.engine.turn_lease,
            "retention.sessions",
            "must be longer than engine.turn_lease",
        )?;
        check(
            self.retention.idempotency_keys >= Duration::from_secs(60),
            "retention.idempotency_keys",
            "must be at least 1m (clients retry within it)",
        )?;
        check(
            self.retention.failed_turns >= hour,
            "retention.failed_turns",
            "must be at least 1h",
        )?;
        check(
            (1..=MAX_RETENTION_BATCH).contains(&self.retention.batch_size),
            "retention.batch_size",
            "must be between 1 and 10000",
        )?;
        check(
            self.retention.batch_pause <= Duration::from_secs(60),
            "retention.batch_pause",
            "must be at most 1m",
        )?;
        check(
            self.auth.leeway <= MAX_AUTH_LEEWAY,
            "auth.leeway",
            "must be at most 5m",
        )?;
        check(
            !self.auth.roles_claim.trim().is_empty(),
            "auth.roles_claim",
            "must not be empty",
        )?;
        let db = self.database.url.expose_secret();
        check(
            db.is_empty() || db.starts_with("postgres://") || db.starts_with("postgresql://"),
            "database.url (DATABASE_URL)",
            "must be empty or a postgres:// URL",
        )?;
        let redis = self.redis.url.expose_secret();
        check(
            redis.is_empty() || redis.starts_with("redis://") || redis.starts_with("rediss://"),
            "redis.url (REDIS_URL)",
            "must be empty or a redis:// URL",
        )
    }
}

/// Replaces every `<SECRET>_FILE` variable of [`SECRET_VARIABLES`] by
/// `<SECRET>` with the file's trimmed content. Errors name the variable and
/// the path, never the content.
fn resolve_secret_files(env: &[(String, String)]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut resolved: Vec<(String, String)> = env.to_vec();
    for name in SECRET_VARIABLES {
        let file_variable = format!("{name}_FILE");
        let Some(path) = last_value(env, &file_variable) else {
            continue;
        };
        if last_value(env, name).is_some() {
            return Err(ConfigError::Invalid(format!(
                "both {name} and {file_variable} are set; set only one of them"
            )));
        }
        if path.trim().is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{file_variable} is set but empty; it must name a file"
            )));
        }
        let content = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Invalid(format!("{file_variable}: cannot read {path}: {e}"))
        })?;
        let value = content.trim();
        if value.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{file_variable}: the file {path} is empty"
            )));
        }
        resolved.retain(|(k, _)| *k != file_variable);
        resolved.push(((*name).to_owned(), value.to_owned()));
    }
    Ok(resolved)
}

/// The value of `name` in `env`, the last one winning as in a process
/// environment built by appending.
fn last_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn invalid(error: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_run_without_services() {
        let config = AppConfig::load_from(&config_dir(), &[]).unwrap();
        assert!(config.database.url.expose_secret().is_empty());
        assert!(config.redis.url.expose_secret().is_empty());
        assert!(!config.database.transaction_pooling);
        assert_eq!(config.llm.provider, heartrule_llm::ProviderKind::Mock);
        assert_eq!(config.http.body_limit_bytes, 1024 * 1024);
        assert_eq!(config.server.port, 8000);
    }

    #[test]
    fn legacy_and_prefixed_variables_override_files() {
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("DATABASE_URL", "postgres://postgres@127.0.0.1/x"),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("API_PORT", "9100"),
                ("API_HOST", "0.0.0.0"),
                ("LLM_PROVIDER", "openai"),
                ("HEARTRULE__HTTP__BODY_LIMIT_BYTES", "2048"),
                ("HEARTRULE__ENGINE__HISTORY_WINDOW", "7"),
                ("HEARTRULE__LLM__OPENAI__API_KEY", "sk-test"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.database.url.expose_secret(),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(config.server.port, 9100);
        assert_eq!(config.server.host, "0.0.0.0");
        assert_eq!(config.llm.provider, heartrule_llm::ProviderKind::OpenAi);
        assert_eq!(config.http.body_limit_bytes, 2048);
        assert_eq!(config.engine.history_window, 7);
        assert_eq!(config.llm.openai.api_key.as_deref(), Some("sk-test"));
    }

    #[test]
    fn the_output_guard_is_on_by_default_and_can_be_turned_off() {
        let config = AppConfig::load_from(&config_dir(), &[]).unwrap();
        assert!(config.engine.output_guard.enabled);
        let off = AppConfig::load_from(
            &config_dir(),
            &env(&[("HEARTRULE__ENGINE__OUTPUT_GUARD__ENABLED", "false")]),
        )
        .unwrap();
        assert!(!off.engine.output_guard.enabled);
        let err = AppConfig::load_from(
            &config_dir(),
            &env(&[("HEARTRULE__ENGINE__OUTPUT_GUARD__ENABLED", "sometimes")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("output_guard"), "{err}");
    }

    #[test]
    fn production_file_switches_to_json_logs() {
        let config =
            AppConfig::load_from(&config_dir(), &env(&[("APP_ENV", "production")])).unwrap();
        assert_eq!(config.server.host, "0.0.0.0");
        assert_eq!(
            config.telemetry.log.format,
            heartrule_telemetry::LogFormat::Json
        );
    }

    #[test]
    fn invalid_values_name_the_key() {
        let err = AppConfig::load_from(&config_dir(), &env(&[("API_PORT", "not-a-port")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        let err = AppConfig::load_from(&config_dir(), &env(&[("DATABASE_URL", "mysql://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
        let err = AppConfig::load_from(
            &config_dir(),
            &env(&[("HEARTRULE__HTTP__BODY_LIMIT_BYTES", "0")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("http.body_limit_bytes"), "{err}");
    }

    #[test]
    fn degraded_mode_is_off_by_default_and_only_takes_its_two_words() {
        let config = AppConfig::load_from(&config_dir(), &[]).unwrap();
        assert_eq!(config.llm.degraded_mode, heartrule_llm::DegradedMode::Off);
        let production =
            AppConfig::load_from(&config_dir(), &env(&[("APP_ENV", "production")])).unwrap();
        assert_eq!(
            production.llm.degraded_mode,
            heartrule_llm::DegradedMode::Off
        );
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[("HEARTRULE__LLM__DEGRADED_MODE", "scripted")]),
        )
        .unwrap();
        assert_eq!(
            config.llm.degraded_mode,
            heartrule_llm::DegradedMode::Scripted
        );
        let err = AppConfig::load_from(
            &config_dir(),
            &env(&[("HEARTRULE__LLM__DEGRADED_MODE", "sometimes")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("degraded_mode"), "{err}");
    }

    #[test]
    fn retention_defaults_are_the_documented_ones() {
        let config = AppConfig::load_from(&config_dir(), &[]).unwrap();
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(config.retention.sessions, 90 * day);
        assert_eq!(config.retention.idempotency_keys, day);
        assert_eq!(config.retention.failed_turns, 30 * day);
        assert_eq!(config.retention.batch_size, 500);
        assert_eq!(config.retention.batch_pause, Duration::from_millis(100));
        let docs = include_str!("../../../docs/operations/retention.md");
        for documented in ["`90d`", "`24h`", "`30d`", "`500`", "`100ms`"] {
            assert!(docs.contains(documented), "retention.md lacks {documented}");
        }
        let changed = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("HEARTRULE__RETENTION__SESSIONS", "365d"),
                ("HEARTRULE__RETENTION__BATCH_SIZE", "50"),
            ]),
        )
        .unwrap();
        assert_eq!(changed.retention.sessions, 365 * day);
        assert_eq!(changed.retention.batch_size, 50);
    }

    #[test]
    fn quotas_are_off_by_default_and_set_and_checked_from_the_environment() {
        let config = AppConfig::load_from(&config_dir(), &[]).unwrap();
        assert_eq!(config.quotas, QuotasSection::default());
        assert!(!config.quotas.to_domain().is_enabled());
        assert_eq!(
            config.llm.context_window_tokens,
            heartrule_llm::DEFAULT_CONTEXT_WINDOW_TOKENS
        );
        let set = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("HEARTRULE__QUOTAS__USER_DAILY_TOKENS", "50000"),
                ("HEARTRULE__QUOTAS__GLOBAL_HOURLY_TOKENS", "2000000"),
                ("HEARTRULE__LLM__CONTEXT_WINDOW_TOKENS", "8192"),
                ("HEARTRULE__QUOTAS__WHEN_EXCEEDED", "scripted"),
            ]),
        )
        .unwrap();
        let quotas = set.quotas.to_domain();
        assert_eq!(
            quotas.when_exceeded,
            heartrule_domain::QuotaAction::Scripted
        );
        assert_eq!(
            config.quotas.to_domain().when_exceeded,
            heartrule_domain::QuotaAction::Refuse
        );
        assert_eq!(quotas.user_daily_tokens, Some(50_000));
        assert_eq!(quotas.global_hourly_tokens, Some(2_000_000));
        assert_eq!(quotas.session_max_tokens, None);
        assert_eq!(set.llm.context_window_tokens, 8_192);
        for (variable, value, key) in [
            (
                "HEARTRULE__QUOTAS__SESSION_MAX_TOKENS",
                "0",
                "quotas.session_max_tokens",
            ),
            (
                "HEARTRULE__QUOTAS__USER_DAILY_TOKENS",
                "0",
                "quotas.user_daily_tokens",
            ),
            (
                "HEARTRULE__QUOTAS__GLOBAL_HOURLY_TOKENS",
                "0",
                "quotas.global_hourly_tokens",
            ),
            (
                "HEARTRULE__LLM__CONTEXT_WINDOW_TOKENS",
                "100",
                "llm.context_window_tokens",
            ),
        ] {
            let err = AppConfig::load_from(&config_dir(), &env(&[(variable, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{variable}={value}: {err}");
        }
    }

    #[test]
    fn unsafe_retention_values_are_refused() {
        for (variable, value, key) in [
            (
                "HEARTRULE__RETENTION__SESSIONS",
                "10m",
                "retention.sessions",
            ),
            (
                "HEARTRULE__RETENTION__IDEMPOTENCY_KEYS",
                "5s",
                "retention.idempotency_keys",
            ),
            (
                "HEARTRULE__RETENTION__FAILED_TURNS",
                "30m",
                "retention.failed_turns",
            ),
            (
                "HEARTRULE__RETENTION__BATCH_SIZE",
                "0",
                "retention.batch_size",
            ),
            (
                "HEARTRULE__RETENTION__BATCH_SIZE",
                "10001",
                "retention.batch_size",
            ),
            (
                "HEARTRULE__RETENTION__BATCH_PAUSE",
                "2m",
                "retention.batch_pause",
            ),
        ] {
            let err = AppConfig::load_from(&config_dir(), &env(&[(variable, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{variable}={value}: {err}");
        }
        // A session must outlive the longest turn, or a slow turn's session
        // could go while its lease is about to lapse.
        let err = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("HEARTRULE__RETENTION__SESSIONS", "2h"),
                ("HEARTRULE__ENGINE__TURN_LEASE", "3h"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("engine.turn_lease"), "{err}");
    }

    #[test]
    fn missing_config_folder_is_reported() {
        let err = AppConfig::load_from(Path::new("/nonexistent-heartrule"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("default.yaml") || err.contains("nonexistent"),
            "{err}"
        );
    }

    /// A file in a fresh temporary folder, removed with the folder at drop.
    struct SecretFile {
        dir: PathBuf,
        path: PathBuf,
    }

    impl SecretFile {
        fn new(content: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "heartrule-config-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("secret");
            std::fs::write(&path, content).unwrap();
            Self { dir, path }
        }

        fn path(&self) -> &str {
            self.path.to_str().unwrap()
        }
    }

    impl Drop for SecretFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn every_secret_can_come_from_a_file_trimmed() {
        let db = SecretFile::new("postgres://app:db-pw@127.0.0.1/x\n");
        let redis = SecretFile::new("  redis://:redis-pw@127.0.0.1:6379\n");
        let key = SecretFile::new("sk-from-file\n");
        let fallback_key = SecretFile::new("sk-fallback-from-file");
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("DATABASE_URL_FILE", db.path()),
                ("REDIS_URL_FILE", redis.path()),
                ("HEARTRULE__LLM__OPENAI__API_KEY_FILE", key.path()),
                ("HEARTRULE__LLM__FALLBACK__PROVIDER", "openai"),
                (
                    "HEARTRULE__LLM__FALLBACK__OPENAI__API_KEY_FILE",
                    fallback_key.path(),
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.database.url.expose_secret(),
            "postgres://app:db-pw@127.0.0.1/x"
        );
        assert_eq!(
            config.redis.url.expose_secret(),
            "redis://:redis-pw@127.0.0.1:6379"
        );
        assert_eq!(config.llm.openai.api_key.as_deref(), Some("sk-from-file"));
        assert_eq!(
            config.llm.fallback.unwrap().openai.api_key.as_deref(),
            Some("sk-fallback-from-file")
        );
    }

    #[test]
    fn safety_defaults_protect_both_languages_and_the_webhook_secret_takes_a_file() {
        let config = AppConfig::load_from(&config_dir(), &[]).unwrap();
        let policy = config.safety.policy();
        assert!(policy.enabled);
        assert_eq!(policy.threshold, heartrule_domain::RiskLevel::High);
        assert_eq!(policy.default_locale, "zh");
        assert_eq!(policy.handoff_cooldown, None);
        assert!(policy.crisis_reply("zh", None).contains("400-161-9995"));
        assert!(policy.crisis_reply("en", None).contains("988"));
        assert!(config.safety.webhook.url.is_empty());

        let secret = SecretFile::new("a-webhook-secret-from-a-file\n");
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[
                (
                    "HEARTRULE__SAFETY__WEBHOOK__URL",
                    "https://oncall.example/hook",
                ),
                ("HEARTRULE__SAFETY__WEBHOOK__SECRET_FILE", secret.path()),
                ("HEARTRULE__SAFETY__HANDOFF_COOLDOWN", "30m"),
                ("HEARTRULE__SAFETY__THRESHOLD", "medium"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.safety.webhook.secret.expose_secret(),
            "a-webhook-secret-from-a-file"
        );
        let policy = config.safety.policy();
        assert_eq!(policy.handoff_cooldown, Some(Duration::from_secs(1800)));
        assert_eq!(policy.threshold, heartrule_domain::RiskLevel::Medium);
    }

    #[test]
    fn unsafe_safety_values_are_refused() {
        for (pairs, key) in [
            (
                vec![("HEARTRULE__SAFETY__THRESHOLD", "none")],
                "safety.threshold",
            ),
            (
                vec![("HEARTRULE__SAFETY__DEFAULT_LOCALE", "fr")],
                "safety.default_locale",
            ),
            (
                vec![("HEARTRULE__SAFETY__WEBHOOK__URL", "ftp://x")],
                "safety.webhook.url",
            ),
            (
                vec![(
                    "HEARTRULE__SAFETY__WEBHOOK__URL",
                    "https://oncall.example/hook",
                )],
                "safety.webhook.secret",
            ),
            (
                vec![
                    (
                        "HEARTRULE__SAFETY__WEBHOOK__URL",
                        "https://oncall.example/hook",
                    ),
                    ("HEARTRULE__SAFETY__WEBHOOK__SECRET", "0123456789abcdef"),
                    ("HEARTRULE__SAFETY__WEBHOOK__RETRIES", "50"),
                ],
                "safety.webhook.retries",
            ),
        ] {
            let err = AppConfig::load_from(&config_dir(), &env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{pairs:?}: {err}");
        }
        // Off, nothing else is checked.
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("HEARTRULE__SAFETY__ENABLED", "false"),
                ("HEARTRULE__SAFETY__DEFAULT_LOCALE", "fr"),
            ]),
        )
        .unwrap();
        assert!(!config.safety.policy().enabled);
    }

    #[test]
    fn repair_intents_default_on_in_both_languages_and_bad_values_are_refused() {
        let config = AppConfig::load_from(&config_dir(), &[]).unwrap();
        let policy = config.repair_intents.policy();
        assert!(policy.enabled);
        assert!(!policy.notify_on_human);
        assert_eq!(policy.default_locale, "zh");
        assert!(policy.human_reply("en").contains("person"));
        assert!(!policy.stop_reply("zh").is_empty());
        assert_ne!(policy.holding_reply("zh"), policy.holding_reply("en"));
        for (pairs, key) in [
            (
                vec![("HEARTRULE__REPAIR_INTENTS__DEFAULT_LOCALE", "fr")],
                "repair_intents.default_locale",
            ),
            (
                vec![("HEARTRULE__REPAIR_INTENTS__LOCALES__EN__STOP", " ")],
                "repair_intents.locales.en",
            ),
        ] {
            let err = AppConfig::load_from(&config_dir(), &env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{pairs:?}: {err}");
        }
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("HEARTRULE__REPAIR_INTENTS__ENABLED", "false"),
                ("HEARTRULE__REPAIR_INTENTS__DEFAULT_LOCALE", "fr"),
            ]),
        )
        .unwrap();
        assert!(!config.repair_intents.policy().enabled);
    }

    #[test]
    fn prefixed_secret_variables_take_files_too() {
        let db = SecretFile::new("postgres://app:pw@db/heartrule");
        let redis = SecretFile::new("rediss://:pw@cache:6380");
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("HEARTRULE__DATABASE__URL_FILE", db.path()),
                ("HEARTRULE__REDIS__URL_FILE", redis.path()),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.database.url.expose_secret(),
            "postgres://app:pw@db/heartrule"
        );
        assert_eq!(config.redis.url.expose_secret(), "rediss://:pw@cache:6380");
    }

    #[test]
    fn a_variable_and_its_file_together_are_refused() {
        let db = SecretFile::new("postgres://app:pw@db/heartrule");
        let err = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("DATABASE_URL", "postgres://other@db/heartrule"),
                ("DATABASE_URL_FILE", db.path()),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("both DATABASE_URL and DATABASE_URL_FILE"),
            "{err}"
        );
        assert!(!err.contains("pw@"), "{err}");
    }

    #[test]
    fn an_unreadable_or_empty_file_names_the_variable_and_path_not_the_content() {
        let missing = "/nonexistent-heartrule/db-url";
        let err = AppConfig::load_from(&config_dir(), &env(&[("DATABASE_URL_FILE", missing)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL_FILE"), "{err}");
        assert!(err.contains(missing), "{err}");

        let blank = SecretFile::new(" \n\t\n");
        let err = AppConfig::load_from(
            &config_dir(),
            &env(&[("HEARTRULE__LLM__OPENAI__API_KEY_FILE", blank.path())]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("HEARTRULE__LLM__OPENAI__API_KEY_FILE"),
            "{err}"
        );
        assert!(err.contains(blank.path()), "{err}");
        assert!(err.contains("empty"), "{err}");

        let err = AppConfig::load_from(&config_dir(), &env(&[("REDIS_URL_FILE", "")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("REDIS_URL_FILE"), "{err}");

        // A file whose content is invalid: the error names the key, not the value.
        let wrong = SecretFile::new("mysql://app:hunter2@db/x");
        let err = AppConfig::load_from(&config_dir(), &env(&[("DATABASE_URL_FILE", wrong.path())]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("DATABASE_URL", "postgres://app:db-hunter2@db/heartrule"),
                ("REDIS_URL", "redis://:redis-hunter2@cache:6379"),
                ("HEARTRULE__LLM__OPENAI__API_KEY", "sk-hunter2"),
            ]),
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn edge_defaults_are_same_origin_and_limited() {
        let config = AppConfig::load_from(&config_dir(), &[]).unwrap();
        assert!(config.http.cors.allowed_origins.is_empty());
        assert!(!config.http.cors.to_adapter().enabled());
        assert!(config.http.hsts_max_age.is_zero());
        assert!(config.rate_limits.enabled);
        assert_eq!(config.rate_limits.key, RateLimitKeySetting::Subject);
        assert!(config.rate_limits.trusted_proxies.is_empty());
        let production =
            AppConfig::load_from(&config_dir(), &env(&[("APP_ENV", "production")])).unwrap();
        let llm = production.rate_limits.llm.limit();
        assert_eq!((llm.per_second, llm.burst), (1.0, 10));
        assert!(
            production.rate_limits.per_subject.burst < config.rate_limits.per_subject.burst,
            "production is stricter than development"
        );
    }

    #[test]
    fn cors_and_proxies_take_comma_separated_lists_from_the_environment() {
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[
                (
                    "HEARTRULE__HTTP__CORS__ALLOWED_ORIGINS",
                    "https://a.example,https://b.example:8443",
                ),
                ("HEARTRULE__HTTP__CORS__ALLOW_CREDENTIALS", "true"),
                (
                    "HEARTRULE__RATE_LIMITS__TRUSTED_PROXIES",
                    "10.0.0.0/8,192.168.1.1",
                ),
                ("HEARTRULE__RATE_LIMITS__LLM__RATE", "0.5"),
                ("HEARTRULE__RATE_LIMITS__KEY", "ip"),
                ("HEARTRULE__HTTP__HSTS_MAX_AGE", "365d"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.http.cors.allowed_origins,
            ["https://a.example", "https://b.example:8443"]
        );
        assert!(config.http.cors.allow_credentials);
        let policy = config.rate_limits.policy().unwrap();
        assert_eq!(
            policy.trusted_proxies,
            [
                "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                "192.168.1.1/32".parse().unwrap()
            ]
        );
        assert_eq!(policy.llm.per_second, 0.5);
        assert_eq!(policy.key, heartrule_http_adapter::RateLimitKey::Ip);
        assert_eq!(config.http.hsts_max_age, Duration::from_secs(365 * 86_400));
    }

    #[test]
    fn unsafe_edge_settings_are_refused_naming_the_key() {
        for (pairs, key) in [
            (
                vec![
                    ("HEARTRULE__HTTP__CORS__ALLOWED_ORIGINS", "*"),
                    ("HEARTRULE__HTTP__CORS__ALLOW_CREDENTIALS", "true"),
                ],
                "http.cors",
            ),
            (
                vec![("HEARTRULE__HTTP__CORS__ALLOWED_ORIGINS", "app.example.com")],
                "http.cors",
            ),
            (
                vec![("HEARTRULE__RATE_LIMITS__PER_IP__BURST", "0")],
                "rate_limits.per_ip",
            ),
            (
                vec![("HEARTRULE__RATE_LIMITS__LLM__RATE", "0")],
                "rate_limits.llm",
            ),
            (
                vec![("HEARTRULE__RATE_LIMITS__TRUSTED_PROXIES", "the-ingress")],
                "rate_limits.trusted_proxies",
            ),
            (vec![("HEARTRULE__RATE_LIMITS__KEY", "cookie")], "key"),
        ] {
            let err = AppConfig::load_from(&config_dir(), &env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{pairs:?}: {err}");
        }
        let wildcard = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("HEARTRULE__HTTP__CORS__ALLOWED_ORIGINS", "*"),
                ("HEARTRULE__HTTP__CORS__ALLOW_CREDENTIALS", "true"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(wildcard.contains("allow_credentials"), "{wildcard}");
    }

    #[test]
    fn transaction_pooling_is_a_switch() {
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[("HEARTRULE__DATABASE__TRANSACTION_POOLING", "true")]),
        )
        .unwrap();
        assert!(config.database.transaction_pooling);
    }

    #[test]
    fn auth_is_off_by_default_and_on_in_production() {
        let config = AppConfig::load_from(&config_dir(), &[]).unwrap();
        assert_eq!(config.auth.mode, AuthMode::Off);
        assert_eq!(config.auth.issuer, "heartrule");
        assert_eq!(config.auth.audience, "heartrule-api");
        assert_eq!(config.auth.leeway, Duration::from_secs(30));
        assert_eq!(config.auth.roles_claim, "roles");
        let production =
            AppConfig::load_from(&config_dir(), &env(&[("APP_ENV", "production")])).unwrap();
        assert_eq!(production.auth.mode, AuthMode::Jwt);
        let off = AppConfig::load_from(
            &config_dir(),
            &env(&[("APP_ENV", "production"), ("HEARTRULE__AUTH__MODE", "off")]),
        )
        .unwrap();
        assert_eq!(off.auth.mode, AuthMode::Off);
    }

    #[test]
    fn the_hs256_secret_comes_from_the_environment_or_a_file_and_never_shows() {
        let file = SecretFile::new("a-secret-from-a-file-hunter2-0123456789\n");
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[("HEARTRULE__AUTH__HS256_SECRET_FILE", file.path())]),
        )
        .unwrap();
        assert_eq!(
            config.auth.hs256_secret.expose_secret(),
            "a-secret-from-a-file-hunter2-0123456789"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        let settings = config.auth.jwt_settings().unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert_eq!(
            settings.hs256_secret.as_deref(),
            Some(&b"a-secret-from-a-file-hunter2-0123456789"[..])
        );
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[("HEARTRULE__AUTH__HS256_SECRET", "from-the-environment")]),
        )
        .unwrap();
        assert_eq!(
            config.auth.hs256_secret.expose_secret(),
            "from-the-environment"
        );
    }

    #[test]
    fn key_files_are_read_and_unreadable_ones_named() {
        let pem = SecretFile::new("-----BEGIN PUBLIC KEY-----\n");
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[
                ("HEARTRULE__AUTH__RS256_PUBLIC_KEY_FILE", pem.path()),
                (
                    "HEARTRULE__AUTH__JWKS_FILE",
                    "/nonexistent-heartrule/jwks.json",
                ),
            ]),
        )
        .unwrap();
        let err = config.auth.jwt_settings().unwrap_err().to_string();
        assert!(err.contains("auth.jwks_file"), "{err}");
        assert!(err.contains("/nonexistent-heartrule/jwks.json"), "{err}");
        let config = AppConfig::load_from(
            &config_dir(),
            &env(&[("HEARTRULE__AUTH__RS256_PUBLIC_KEY_FILE", pem.path())]),
        )
        .unwrap();
        let settings = config.auth.jwt_settings().unwrap();
        assert_eq!(
            settings.rs256_public_key_pem.as_deref(),
            Some(&b"-----BEGIN PUBLIC KEY-----\n"[..])
        );
        assert!(settings.hs256_secret.is_none() && settings.jwks_json.is_none());
    }

    #[test]
    fn unsafe_auth_values_are_refused() {
        for (variable, value, key) in [
            ("HEARTRULE__AUTH__LEEWAY", "10m", "auth.leeway"),
            ("HEARTRULE__AUTH__ROLES_CLAIM", " ", "auth.roles_claim"),
            ("HEARTRULE__AUTH__MODE", "basic", "basic"),
        ] {
            let err = AppConfig::load_from(&config_dir(), &env(&[(variable, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{variable}={value}: {err}");
        }
    }
}
