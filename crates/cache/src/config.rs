//! Settings of the Redis adapter.

use std::fmt;
use std::time::Duration;

/// How to reach Redis and how long cached values live. `Debug` hides the
/// URL's credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisCacheConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prepended to every key (`<prefix>:script:<id>`), so several
    /// deployments or test runs can share one Redis.
    pub key_prefix: String,
    /// Lifetime of a parsed-script entry.
    pub script_ttl: Duration,
    /// Lifetime of a session snapshot.
    pub session_ttl: Duration,
    /// Upper bound of every single Redis operation; a hung Redis must not
    /// stall a request for longer than this.
    pub op_timeout: Duration,
    /// Bound of one connection attempt (also of the start-up PING of
    /// [`crate::RedisCache::connect`]).
    pub connect_timeout: Duration,
    /// At most one "Redis failed" warning per interval; the others are
    /// counted and reported with the next one.
    pub warn_interval: Duration,
}

impl RedisCacheConfig {
    pub const DEFAULT_URL: &'static str = "redis://127.0.0.1:6379";
    pub const DEFAULT_KEY_PREFIX: &'static str = "heartrule";
    pub const DEFAULT_SCRIPT_TTL: Duration = Duration::from_secs(60 * 60);
    pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30 * 60);
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(50);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_WARN_INTERVAL: Duration = Duration::from_secs(30);

    /// The defaults with another URL.
    #[must_use]
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl fmt::Debug for RedisCacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCacheConfig")
            .field("url", &redact_userinfo(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("script_ttl", &self.script_ttl)
            .field("session_ttl", &self.session_ttl)
            .field("op_timeout", &self.op_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("warn_interval", &self.warn_interval)
            .finish()
    }
}

/// `redis://user:secret@host:6379` → `redis://***@host:6379`: Redis puts
/// the password in the user part too (`redis://:secret@host`), so the whole
/// user information goes.
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

impl Default for RedisCacheConfig {
    fn default() -> Self {
        Self {
            url: Self::DEFAULT_URL.to_owned(),
            key_prefix: Self::DEFAULT_KEY_PREFIX.to_owned(),
            script_ttl: Self::DEFAULT_SCRIPT_TTL,
            session_ttl: Self::DEFAULT_SESSION_TTL,
            op_timeout: Self::DEFAULT_OP_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            warn_interval: Self::DEFAULT_WARN_INTERVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_credentials() {
        let config = RedisCacheConfig::with_url("redis://app:s3cret@cache:6380/2");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://***@cache:6380/2"), "{shown}");
        assert_eq!(redact_userinfo("rediss://:pw@c:1"), "rediss://***@c:1");
        assert_eq!(
            redact_userinfo("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn defaults_follow_the_brief() {
        let config = RedisCacheConfig::with_url("redis://cache:6380");
        assert_eq!(config.url, "redis://cache:6380");
        assert_eq!(config.key_prefix, "heartrule");
        assert_eq!(config.op_timeout, Duration::from_millis(50));
        assert_eq!(RedisCacheConfig::default().url, "redis://127.0.0.1:6379");
    }
}
