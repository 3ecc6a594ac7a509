//! Server configuration: `config/default.yaml`, then `config/{APP_ENV}.yaml`,
//! then environment variables `HEARTRULE__SECTION__KEY`, plus the original
//! engine's variables (`DATABASE_URL`, `REDIS_URL`, `API_PORT`, `API_HOST`,
//! `LLM_PROVIDER`). A `.env` file is read first when present.

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
    pub llm: heartrule_llm::LlmConfig,
    pub engine: EngineSection,
    pub scripts: ScriptsSection,
    pub retention: RetentionSection,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// Empty: the in-memory store (ephemeral, logged loudly).
    pub url: String,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// Empty: no cache.
    pub url: String,
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
    /// Prompt templates (`default/`, `custom/<scheme>/`); the built-in copies
    /// are used when the folder does not exist.
    pub prompts_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptsSection {
    /// YAML scripts imported (upsert by file name) at start-up, if the folder
    /// exists; technique scripts in its `techniques/` subfolder.
    pub preload_dir: PathBuf,
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

/// Largest `retention.batch_size`: one statement stays short.
pub const MAX_RETENTION_BATCH: usize = 10_000;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

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
            config::Environment::with_prefix("HEARTRULE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
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
        let db = &self.database.url;
        check(
            db.is_empty() || db.starts_with("postgres://") || db.starts_with("postgresql://"),
            "database.url (DATABASE_URL)",
            "must be empty or a postgres:// URL",
        )?;
        let redis = &self.redis.url;
        check(
            redis.is_empty() || redis.starts_with("redis://") || redis.starts_with("rediss://"),
            "redis.url (REDIS_URL)",
            "must be empty or a redis:// URL",
        )
    }
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
        assert!(config.database.url.is_empty());
        assert!(config.redis.url.is_empty());
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
        assert_eq!(config.database.url, "postgres://postgres@127.0.0.1/x");
        assert_eq!(config.server.port, 9100);
        assert_eq!(config.server.host, "0.0.0.0");
        assert_eq!(config.llm.provider, heartrule_llm::ProviderKind::OpenAi);
        assert_eq!(config.http.body_limit_bytes, 2048);
        assert_eq!(config.engine.history_window, 7);
        assert_eq!(config.llm.openai.api_key.as_deref(), Some("sk-test"));
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
}
