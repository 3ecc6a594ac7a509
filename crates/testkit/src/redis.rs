//! A Redis key prefix of its own per test, on a real Redis.
//!
//! Redis is `redis://127.0.0.1:6379` unless `HEARTRULE_TEST_REDIS_URL`
//! says otherwise. An unreachable Redis fails the tests loudly; they never
//! skip. The cache writes every key as `<prefix>:…`, so a prefix's keys are
//! `<prefix>:*`.
//!
//! The clean-up uses Redis's blocking client, so it also runs from `Drop`
//! (inside or outside a runtime) without a thread of its own.

use anyhow::Context;
use std::time::Duration;
use tokio::sync::OnceCell;

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("HEARTRULE_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// A fresh key prefix (`heartrule-test-<uuid>`).
pub fn unique_prefix() -> String {
    format!("heartrule-test-{}", uuid::Uuid::new_v4().simple())
}

fn connect(url: &str) -> anyhow::Result<::redis::Connection> {
    let client = ::redis::Client::open(url).with_context(|| format!("the Redis URL {url}"))?;
    client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .with_context(|| format!("Redis is unreachable at {url}"))
}

/// Answers when `url`'s Redis answers `PING`.
pub fn ping(url: &str) -> anyhow::Result<()> {
    let mut connection = connect(url)?;
    let pong: String = ::redis::cmd("PING")
        .query(&mut connection)
        .with_context(|| format!("PING to Redis at {url}"))?;
    anyhow::ensure!(pong == "PONG", "Redis at {url} answered PING with {pong:?}");
    Ok(())
}

static REDIS_CHECKED: OnceCell<()> = OnceCell::const_new();

/// Fails loudly when the test Redis does not answer `PING` (checked once
/// per test binary).
pub async fn require_redis() {
    REDIS_CHECKED
        .get_or_init(|| async {
            let url = redis_url();
            if let Err(error) = ping(&url) {
                panic!(
                    "{error:#}. Start it (`bash scripts/services.sh start`), or point \
                     HEARTRULE_TEST_REDIS_URL at one. These tests never skip."
                );
            }
        })
        .await;
}

/// The keys under `prefix` (`<prefix>:*`), found with `SCAN`.
pub fn keys_under(url: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut connection = connect(url)?;
    scan(&mut connection, prefix)
}

fn scan(connection: &mut ::redis::Connection, prefix: &str) -> anyhow::Result<Vec<String>> {
    let pattern = format!("{prefix}:*");
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(connection)
            .with_context(|| format!("SCAN {pattern}"))?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// Every key under `prefix` with the bytes Redis holds for it (`MEMORY
/// USAGE <key> SAMPLES 0`: the value, the key and their overhead, every
/// element counted). A key that expired meanwhile is left out.
pub fn memory_usage_under(url: &str, prefix: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let mut connection = connect(url)?;
    let keys = scan(&mut connection, prefix)?;
    let mut usage = Vec::with_capacity(keys.len());
    for key in keys {
        let bytes: Option<u64> = ::redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query(&mut connection)
            .with_context(|| format!("MEMORY USAGE {key}"))?;
        if let Some(bytes) = bytes {
            usage.push((key, bytes));
        }
    }
    Ok(usage)
}

/// Deletes the keys under `prefix`; returns how many there were.
pub fn delete_keys_under(url: &str, prefix: &str) -> anyhow::Result<usize> {
    let mut connection = connect(url)?;
    let keys = scan(&mut connection, prefix)?;
    for batch in keys.chunks(1000) {
        let _deleted: i64 = ::redis::cmd("DEL")
            .arg(batch)
            .query(&mut connection)
            .with_context(|| format!("DEL of keys under {prefix}"))?;
    }
    Ok(keys.len())
}

/// A key prefix of one test (or tool run) on a reachable Redis; its keys
/// are deleted when this is dropped.
#[derive(Debug)]
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

impl TestRedis {
    /// A fresh prefix on the test Redis.
    pub async fn new() -> Self {
        require_redis().await;
        Self {
            url: redis_url(),
            prefix: unique_prefix(),
        }
    }

    /// A fresh prefix on `url`'s Redis, which must answer `PING`.
    pub fn try_on(url: &str) -> anyhow::Result<Self> {
        ping(url)?;
        Ok(Self {
            url: url.to_owned(),
            prefix: unique_prefix(),
        })
    }

    /// The keys under this prefix.
    pub fn keys(&self) -> Vec<String> {
        keys_under(&self.url, &self.prefix).unwrap_or_else(|e| panic!("{e:#}"))
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Err(error) = delete_keys_under(&self.url, &self.prefix) {
            eprintln!(
                "warning: Redis keys under {} were not deleted: {error:#}",
                self.prefix
            );
        }
    }
}
