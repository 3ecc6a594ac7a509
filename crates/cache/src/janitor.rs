//! [`CacheJanitor`] on Redis: the cache side of the retention cleanup.
//!
//! Unlike the request-path caches it does not fail open: a cleanup that
//! could not reach Redis must say so, so every failure is returned.

use crate::cache::RedisCache;
use async_trait::async_trait;
use heartrule_domain::{CacheCleanupError, CacheJanitor, CacheScanPage, SessionId};
use redis::RedisResult;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

/// Bound of one cleanup command. An offline job can wait longer than a
/// request (whose bound is `op_timeout`), and SCAN/DEL pages are larger.
const CLEANUP_OP_TIMEOUT: Duration = Duration::from_secs(5);

/// The namespaces this crate writes under the prefix, every one of them
/// with an expiry. Keys under other namespaces are not ours and are left
/// alone.
const OWN_NAMESPACES: &[&str] = &["session", "script", "ratelimit"];

/// Deletes each key only while it still has no expiry (`PTTL` -1), so a key
/// rewritten with a TTL since the scan survives.
static DELETE_IF_NO_EXPIRY: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local deleted = 0
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) == -1 then
    deleted = deleted + redis.call('DEL', key)
  end
end
return deleted
",
    )
});

/// `prefix` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The namespace and the rest of a key under `prefix:`, when it is one of ours.
fn own_key<'k>(prefix: &str, key: &'k str) -> Option<(&'k str, &'k str)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(':')?;
    let (namespace, id) = rest.split_once(':')?;
    OWN_NAMESPACES
        .contains(&namespace)
        .then_some((namespace, id))
}

impl RedisCache {
    fn session_keys(&self, ids: &[SessionId]) -> Vec<String> {
        ids.iter().map(|id| self.session_key(*id)).collect()
    }

    async fn cleanup_op<T>(
        &self,
        operation: &'static str,
        op: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, CacheCleanupError> {
        match tokio::time::timeout(CLEANUP_OP_TIMEOUT, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(CacheCleanupError(format!(
                "Redis {operation} failed: {error}"
            ))),
            Err(_) => Err(CacheCleanupError(format!(
                "Redis {operation} timed out after {} s",
                CLEANUP_OP_TIMEOUT.as_secs()
            ))),
        }
    }
}

#[async_trait]
impl CacheJanitor for RedisCache {
    async fn evict_session_snapshots(&self, ids: &[SessionId]) -> Result<u64, CacheCleanupError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut connection = self.inner.connection.clone();
        let mut del = redis::cmd("DEL");
        del.arg(self.session_keys(ids));
        self.cleanup_op("DEL", del.query_async(&mut connection))
            .await
    }

    async fn count_session_snapshots(&self, ids: &[SessionId]) -> Result<u64, CacheCleanupError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut connection = self.inner.connection.clone();
        let mut exists = redis::cmd("EXISTS");
        exists.arg(self.session_keys(ids));
        self.cleanup_op("EXISTS", exists.query_async(&mut connection))
            .await
    }

    async fn scan(&self, cursor: u64, count: usize) -> Result<CacheScanPage, CacheCleanupError> {
        let prefix = &self.inner.config.key_prefix;
        let mut connection = self.inner.connection.clone();
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", glob_escape(prefix)))
            .arg("COUNT")
            .arg(count.max(1));
        let (next_cursor, keys): (u64, Vec<String>) = self
            .cleanup_op("SCAN", scan.query_async(&mut connection))
            .await?;
        let own: Vec<(&str, &str, &String)> = keys
            .iter()
            .filter_map(|key| own_key(prefix, key).map(|(ns, id)| (ns, id, key)))
            .collect();
        let mut page = CacheScanPage {
            next_cursor,
            ..CacheScanPage::default()
        };
        if own.is_empty() {
            return Ok(page);
        }
        let mut ttls = redis::pipe();
        for (_, _, key) in &own {
            ttls.cmd("PTTL").arg(*key);
        }
        let ttls: Vec<i64> = self
            .cleanup_op("PTTL", ttls.query_async(&mut connection))
            .await?;
        for ((namespace, id, key), ttl) in own.into_iter().zip(ttls) {
            if namespace == "session" {
                // A session key whose id does not parse is not a snapshot we
                // wrote; only its missing expiry can make it stale.
                if let Ok(session) = id.parse::<SessionId>() {
                    page.session_snapshots.push(session);
                }
            }
            if ttl == -1 {
                page.keys_without_expiry.push(key.clone());
            }
        }
        Ok(page)
    }

    async fn delete_keys_without_expiry(&self, keys: &[String]) -> Result<u64, CacheCleanupError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut connection = self.inner.connection.clone();
        let mut delete = DELETE_IF_NO_EXPIRY.prepare_invoke();
        for key in keys {
            delete.key(key);
        }
        self.cleanup_op("DEL", delete.invoke_async(&mut connection))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_of_the_prefix_are_escaped() {
        assert_eq!(glob_escape("heartrule"), "heartrule");
        assert_eq!(glob_escape("a*b?c[d]e\\f"), "a\\*b\\?c\\[d\\]e\\\\f");
    }

    #[test]
    fn only_our_namespaces_under_our_prefix_are_ours() {
        assert_eq!(own_key("hr", "hr:session:abc"), Some(("session", "abc")));
        assert_eq!(own_key("hr", "hr:script:x"), Some(("script", "x")));
        assert_eq!(
            own_key("hr", "hr:ratelimit:k:1"),
            Some(("ratelimit", "k:1"))
        );
        assert_eq!(own_key("hr", "hr:other:x"), None);
        assert_eq!(own_key("hr", "hrx:session:abc"), None);
        assert_eq!(own_key("hr", "hr:session"), None);
    }
}
