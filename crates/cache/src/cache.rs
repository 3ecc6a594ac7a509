//! The fail-open script and session caches.

use crate::config::RedisCacheConfig;
use crate::error::CacheError;
use crate::metrics::{record_lookup, record_redis_error};
use crate::warn_limiter::WarnLimiter;
use async_trait::async_trait;
use heartrule_domain::{ScriptCache, ScriptId, Session, SessionCache, SessionId, VersionBundle};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tracing::field::Empty;
use tracing::{Instrument, Span};

const SCRIPT_CACHE: &str = "script";
const SESSION_CACHE: &str = "session";

/// Deletes a plain key only while it still holds the value found corrupt, so
/// a valid value written meanwhile survives.
static DELETE_IF_UNCHANGED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// Hash-field twin of [`DELETE_IF_UNCHANGED`].
static HDEL_IF_UNCHANGED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
",
    )
});

/// Writes a session snapshot unless the cached one is from a later turn:
/// snapshots of two turns committed back to back may reach Redis out of
/// order, and the older one must not win.
/// KEYS[1] = session key; ARGV = snapshot JSON, its turn count, TTL in ms.
static PUT_SESSION_UNLESS_NEWER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, cached = pcall(cjson.decode, current)
  if ok and type(cached) == 'table' and type(cached.turnCount) == 'number'
     and cached.turnCount > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
",
    )
});

/// Result of [`RedisCache::health`], for the readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHealth {
    /// Redis answered PING within the operation timeout.
    pub reachable: bool,
    /// Why the PING failed; `None` when it succeeded.
    pub last_error: Option<String>,
}

/// Redis-backed [`ScriptCache`] and [`SessionCache`]. Cheap to clone; clones
/// share the connection.
///
/// Layout (all keys under `<key_prefix>:`):
/// * `script:<script id>`: a hash from version hash to the JSON of the
///   parsed [`VersionBundle`] (document, technique and template files). A
///   put replaces every older version of the script, so at most the newest
///   parsed version is kept.
/// * `session:<session id>`: the JSON of the [`Session`].
/// * `ratelimit:<key>`: token buckets of [`crate::RedisRateLimiter`].
#[derive(Clone)]
pub struct RedisCache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) connection: ConnectionManager,
    pub(crate) config: RedisCacheConfig,
    warn_limiter: WarnLimiter,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is left out: it may carry a password.
        f.debug_struct("RedisCache")
            .field("key_prefix", &self.inner.config.key_prefix)
            .field("op_timeout", &self.inner.config.op_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Creates the cache and checks that Redis answers (bounded by
    /// `connect_timeout`). An unreachable Redis does **not** fail: it is
    /// logged and counted, the cache serves misses, and the connection keeps
    /// being retried. Fails only on an unusable configuration.
    ///
    /// # Errors
    /// [`CacheError::InvalidConfig`] for a malformed URL, an empty key prefix or
    /// a zero timeout/TTL; [`CacheError::NoRuntime`] outside a Tokio runtime.
    pub async fn connect(config: RedisCacheConfig) -> Result<Self, CacheError> {
        let cache = Self::connect_lazy(config)?;
        let connect_timeout = cache.inner.config.connect_timeout;
        let outcome = cache.inner.ping("connect", connect_timeout).await;
        if let Err(error) = outcome {
            cache.fail_open("connect", &error);
        }
        Ok(cache)
    }

    /// Creates the cache without touching the network; the connection is
    /// made on first use. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// Same as [`RedisCache::connect`].
    pub fn connect_lazy(config: RedisCacheConfig) -> Result<Self, CacheError> {
        validate(&config)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(CacheError::NoRuntime);
        }
        let client = redis::Client::open(config.url.as_str())
            .map_err(|error| CacheError::InvalidConfig(format!("Redis URL: {error}")))?;
        // Few, short reconnect attempts: while Redis is down each request
        // gives up after `op_timeout` anyway, and a short backoff brings the
        // cache back soon after Redis returns.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|error| CacheError::InvalidConfig(format!("Redis connection: {error}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                warn_limiter: WarnLimiter::new(config.warn_interval),
                config,
            }),
        })
    }

    /// The settings the cache runs with.
    #[must_use]
    pub fn config(&self) -> &RedisCacheConfig {
        &self.inner.config
    }

    /// Pings Redis (bounded by `op_timeout`), for the readiness probe.
    pub async fn health(&self) -> CacheHealth {
        let span = tracing::info_span!("cache.ping", db.system = "redis", error = Empty);
        async {
            match self.inner.ping("ping", self.inner.config.op_timeout).await {
                Ok(_) => CacheHealth {
                    reachable: true,
                    last_error: None,
                },
                Err(error) => {
                    self.fail_open("ping", &error);
                    CacheHealth {
                        reachable: false,
                        last_error: Some(error.to_string()),
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The Redis key of a script's cached documents.
    #[must_use]
    pub fn script_key(&self, id: ScriptId) -> String {
        format!("{}:script:{id}", self.inner.config.key_prefix)
    }

    /// The Redis key of a session snapshot.
    #[must_use]
    pub fn session_key(&self, id: SessionId) -> String {
        format!("{}:session:{id}", self.inner.config.key_prefix)
    }

    /// Counts a failure and logs it, at most once per `warn_interval`.
    fn fail_open(&self, operation: &'static str, error: &CacheError) {
        Span::current().record("error", tracing::field::display(error));
        if error.is_redis_failure() {
            record_redis_error(operation);
        }
        if let Some(suppressed) = self.inner.warn_limiter.permit(Instant::now()) {
            tracing::warn!(
                operation,
                error = %error,
                suppressed,
                "Redis cache operation failed; continuing without the cache"
            );
        }
    }

    /// Runs a Redis operation whose failure only costs the cache.
    async fn fail_open_op<T>(
        &self,
        operation: &'static str,
        op: impl Future<Output = RedisResult<T>>,
    ) -> Option<T> {
        match self.inner.bounded(operation, op).await {
            Ok(value) => Some(value),
            Err(error) => {
                self.fail_open(operation, &error);
                None
            }
        }
    }

    /// Decodes a cached value; a value that does not decode is logged and
    /// `None` is returned, so the caller evicts it and reads the source.
    fn decode<T: serde::de::DeserializeOwned>(
        cache: &'static str,
        key: &str,
        bytes: &[u8],
    ) -> Option<T> {
        match serde_json::from_slice(bytes) {
            Ok(value) => Some(value),
            Err(error) => {
                // Only where decoding failed is logged: serde's message may quote
                // the value, and cached values hold conversation data.
                tracing::warn!(
                    cache,
                    key,
                    error_category = ?error.classify(),
                    line = error.line(),
                    column = error.column(),
                    "corrupt cache entry; treating it as a miss and deleting it"
                );
                None
            }
        }
    }

    fn encode<T: serde::Serialize>(&self, operation: &'static str, value: &T) -> Option<String> {
        match serde_json::to_string(value) {
            Ok(json) => Some(json),
            Err(source) => {
                self.fail_open(operation, &CacheError::Encode { operation, source });
                None
            }
        }
    }
}

impl Inner {
    /// Bounds `op` by the operation timeout and types its failure.
    pub(crate) async fn bounded<T>(
        &self,
        operation: &'static str,
        op: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, CacheError> {
        self.within(self.config.op_timeout, operation, op).await
    }

    async fn within<T>(
        &self,
        after: Duration,
        operation: &'static str,
        op: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(after, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(CacheError::Redis { operation, source }),
            Err(_) => Err(CacheError::Timeout { operation, after }),
        }
    }
}

impl Inner {
    async fn ping(&self, operation: &'static str, after: Duration) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        let reply: String = self
            .within(after, operation, ping.query_async(&mut connection))
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(CacheError::UnexpectedReply {
                operation,
                reason: format!("PING answered `{reply}`"),
            })
        }
    }
}

fn validate(config: &RedisCacheConfig) -> Result<(), CacheError> {
    let invalid = |reason: &str| Err(CacheError::InvalidConfig(reason.to_owned()));
    if config.key_prefix.is_empty() {
        return invalid("key_prefix must not be empty");
    }
    if config.op_timeout.is_zero() || config.connect_timeout.is_zero() {
        return invalid("op_timeout and connect_timeout must be positive");
    }
    if ttl_millis(config.script_ttl) == 0 || ttl_millis(config.session_ttl) == 0 {
        return invalid("script_ttl and session_ttl must be at least one millisecond");
    }
    Ok(())
}

/// A TTL in whole milliseconds, as PEXPIRE and SET PX take it.
fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl ScriptCache for RedisCache {
    async fn get(&self, id: ScriptId, content_hash: &str) -> Option<VersionBundle> {
        let span = tracing::info_span!(
            "cache.get",
            cache.name = SCRIPT_CACHE,
            cache.hit = Empty,
            db.system = "redis",
            error = Empty,
        );
        async {
            let key = self.script_key(id);
            let mut connection = self.inner.connection.clone();
            let mut hget = redis::cmd("HGET");
            hget.arg(&key).arg(content_hash);
            let stored: Option<Vec<u8>> = self
                .fail_open_op("script.get", hget.query_async(&mut connection))
                .await
                .flatten();
            let document = match stored {
                None => None,
                Some(bytes) => {
                    // An entry of another shape (a document alone, as
                    // written before versions carried files) is corrupt to
                    // this reader: evicted, then refilled from the store.
                    let decoded = Self::decode::<VersionBundle>(SCRIPT_CACHE, &key, &bytes);
                    if decoded.is_none() {
                        let mut evict = HDEL_IF_UNCHANGED.prepare_invoke();
                        evict.key(&key).arg(content_hash).arg(&bytes);
                        self.fail_open_op(
                            "script.evict_corrupt",
                            evict.invoke_async::<i64>(&mut connection),
                        )
                        .await;
                    }
                    decoded
                }
            };
            let hit = document.is_some();
            Span::current().record("cache.hit", hit);
            record_lookup(SCRIPT_CACHE, hit);
            document
        }
        .instrument(span)
        .await
    }

    async fn put(&self, id: ScriptId, content_hash: &str, bundle: &VersionBundle) {
        let span = tracing::info_span!(
            "cache.put",
            cache.name = SCRIPT_CACHE,
            db.system = "redis",
            error = Empty,
        );
        async {
            let Some(json) = self.encode("script.put", bundle) else {
                return;
            };
            let key = self.script_key(id);
            let mut connection = self.inner.connection.clone();
            let mut replace = redis::pipe();
            replace
                .atomic()
                .cmd("DEL")
                .arg(&key)
                .ignore()
                .cmd("HSET")
                .arg(&key)
                .arg(content_hash)
                .arg(json)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl_millis(self.inner.config.script_ttl))
                .ignore();
            self.fail_open_op("script.put", replace.exec_async(&mut connection))
                .await;
        }
        .instrument(span)
        .await;
    }

    async fn invalidate(&self, id: ScriptId) {
        let span = tracing::info_span!(
            "cache.invalidate",
            cache.name = SCRIPT_CACHE,
            db.system = "redis",
            error = Empty,
        );
        async {
            let mut connection = self.inner.connection.clone();
            let mut del = redis::cmd("DEL");
            del.arg(self.script_key(id));
            self.fail_open_op("script.invalidate", del.exec_async(&mut connection))
                .await;
        }
        .instrument(span)
        .await;
    }
}

#[async_trait]
impl SessionCache for RedisCache {
    async fn get(&self, id: SessionId) -> Option<Session> {
        let span = tracing::info_span!(
            "cache.get",
            cache.name = SESSION_CACHE,
            cache.hit = Empty,
            db.system = "redis",
            error = Empty,
        );
        async {
            let key = self.session_key(id);
            let mut connection = self.inner.connection.clone();
            let mut get = redis::cmd("GET");
            get.arg(&key);
            let stored: Option<Vec<u8>> = self
                .fail_open_op("session.get", get.query_async(&mut connection))
                .await
                .flatten();
            let session = match stored {
                None => None,
                Some(bytes) => {
                    let decoded = Self::decode::<Session>(SESSION_CACHE, &key, &bytes);
                    if decoded.is_none() {
                        let mut evict = DELETE_IF_UNCHANGED.prepare_invoke();
                        evict.key(&key).arg(&bytes);
                        self.fail_open_op(
                            "session.evict_corrupt",
                            evict.invoke_async::<i64>(&mut connection),
                        )
                        .await;
                    }
                    decoded
                }
            };
            let hit = session.is_some();
            Span::current().record("cache.hit", hit);
            record_lookup(SESSION_CACHE, hit);
            session
        }
        .instrument(span)
        .await
    }

    async fn put(&self, session: &Session) {
        let span = tracing::info_span!(
            "cache.put",
            cache.name = SESSION_CACHE,
            db.system = "redis",
            error = Empty,
        );
        async {
            let Some(json) = self.encode("session.put", session) else {
                return;
            };
            let mut connection = self.inner.connection.clone();
            let mut put = PUT_SESSION_UNLESS_NEWER.prepare_invoke();
            put.key(self.session_key(session.id))
                .arg(json)
                .arg(session.turn_count)
                .arg(ttl_millis(self.inner.config.session_ttl));
            self.fail_open_op("session.put", put.invoke_async::<i64>(&mut connection))
                .await;
        }
        .instrument(span)
        .await;
    }

    async fn invalidate(&self, id: SessionId) {
        let span = tracing::info_span!(
            "cache.invalidate",
            cache.name = SESSION_CACHE,
            db.system = "redis",
            error = Empty,
        );
        async {
            let mut connection = self.inner.connection.clone();
            let mut del = redis::cmd("DEL");
            del.arg(self.session_key(id));
            self.fail_open_op("session.invalidate", del.exec_async(&mut connection))
                .await;
        }
        .instrument(span)
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RedisCacheConfig {
        RedisCacheConfig {
            key_prefix: "unit".into(),
            ..RedisCacheConfig::default()
        }
    }

    #[test]
    fn validation_rejects_unusable_settings() {
        assert!(validate(&config()).is_ok());
        let cases = [
            RedisCacheConfig {
                key_prefix: String::new(),
                ..config()
            },
            RedisCacheConfig {
                op_timeout: Duration::ZERO,
                ..config()
            },
            RedisCacheConfig {
                session_ttl: Duration::from_micros(999),
                ..config()
            },
        ];
        for case in cases {
            assert!(matches!(validate(&case), Err(CacheError::InvalidConfig(_))));
        }
    }

    #[test]
    fn ttl_is_whole_milliseconds() {
        assert_eq!(ttl_millis(Duration::from_secs(2)), 2_000);
        assert_eq!(ttl_millis(Duration::from_micros(1_999)), 1);
        assert_eq!(ttl_millis(Duration::MAX), u64::MAX);
    }

    #[tokio::test]
    async fn keys_carry_the_prefix_and_the_id() {
        let cache = RedisCache::connect_lazy(config()).unwrap();
        let script = ScriptId::new_random();
        let session = SessionId::new_random();
        assert_eq!(cache.script_key(script), format!("unit:script:{script}"));
        assert_eq!(
            cache.session_key(session),
            format!("unit:session:{session}")
        );
        assert!(!format!("{cache:?}").contains("redis://"));
    }

    #[tokio::test]
    async fn malformed_url_is_a_config_error() {
        let result = RedisCache::connect_lazy(RedisCacheConfig::with_url("http://not-redis"));
        assert!(matches!(result, Err(CacheError::InvalidConfig(_))));
    }

    #[test]
    fn lazy_connect_outside_a_runtime_is_an_error() {
        assert!(matches!(
            RedisCache::connect_lazy(config()),
            Err(CacheError::NoRuntime)
        ));
    }
}
