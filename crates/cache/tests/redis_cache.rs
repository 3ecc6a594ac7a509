#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tests against a real Redis (`HEARTRULE_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). An unreachable Redis fails every test: none of
//! them skips. Each test works under its own key prefix and deletes its keys.

use chrono::Utc;
use heartrule_cache::{
    CacheError, FailoverRateLimiter, LocalRateLimiter, RedisCache, RedisCacheConfig,
    CACHE_REQUESTS_TOTAL, RATE_LIMIT_FALLBACK_TOTAL, REDIS_ERRORS_TOTAL,
};
use heartrule_domain::{
    Action, ActionKind, EngineState, Phase, RateLimit, RateLimitError, RateLimiter, SayConfig,
    ScriptCache, ScriptDocument, ScriptId, Session, SessionCache, SessionId, SessionScript,
    SessionStatus, Topic, VariableStore, VersionBundle,
};
use heartrule_testkit::redis::{keys_under, redis_url, unique_prefix};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use redis::aio::MultiplexedConnection;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- harness

/// A cache under a fresh key prefix plus a raw connection to inspect Redis.
struct TestRedis {
    prefix: String,
    raw: MultiplexedConnection,
    cache: RedisCache,
}

impl TestRedis {
    async fn start() -> Self {
        Self::start_with(|config| config).await
    }

    async fn start_with(adjust: impl FnOnce(RedisCacheConfig) -> RedisCacheConfig) -> Self {
        let url = redis_url();
        let client =
            redis::Client::open(url.as_str()).expect("HEARTRULE_TEST_REDIS_URL is malformed");
        let raw = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("Redis at {url} did not answer within 5 s; these tests need a running Redis")
        })
        .unwrap_or_else(|error| {
            panic!("Redis at {url} is unreachable ({error}); these tests need a running Redis")
        });
        let prefix = unique_prefix();
        let config = adjust(RedisCacheConfig {
            url,
            key_prefix: prefix.clone(),
            // Generous: a loaded test machine must not turn hits into misses.
            op_timeout: Duration::from_secs(2),
            ..RedisCacheConfig::default()
        });
        let cache = RedisCache::connect(config).await.unwrap();
        let health = cache.health().await;
        assert!(
            health.reachable,
            "cache cannot reach Redis: {:?}",
            health.last_error
        );
        Self { prefix, raw, cache }
    }

    async fn command<T: redis::FromRedisValue>(&mut self, command: &mut redis::Cmd) -> T {
        command.query_async(&mut self.raw).await.unwrap()
    }

    async fn exists(&mut self, key: &str) -> bool {
        self.command::<i64>(redis::cmd("EXISTS").arg(key)).await == 1
    }

    async fn pttl(&mut self, key: &str) -> i64 {
        self.command(redis::cmd("PTTL").arg(key)).await
    }

    async fn keys(&mut self) -> Vec<String> {
        keys_under(&redis_url(), &self.prefix).unwrap()
    }

    /// Deletes every key of this test and checks none is left.
    async fn clean_up(mut self) {
        let keys = self.keys().await;
        if !keys.is_empty() {
            self.command::<i64>(redis::cmd("DEL").arg(&keys)).await;
        }
        assert!(
            self.keys().await.is_empty(),
            "keys left under {}",
            self.prefix
        );
    }
}

fn say(id: &str, content: &str) -> Action {
    Action {
        action_id: id.into(),
        condition: None,
        kind: ActionKind::Say(SayConfig {
            content: content.into(),
            tone: None,
            max_rounds: None,
            exit_criteria: None,
            require_acknowledgment: true,
            ai_role: None,
        }),
    }
}

/// A cached version: the document with a template file of its own.
fn sample_document(greeting: &str) -> VersionBundle {
    let mut bundle = VersionBundle::of_document(sample_script(greeting));
    bundle.templates.insert(
        "custom/warm/ai_say_v1.md".into(),
        format!("{greeting}, warmly"),
    );
    bundle
}

fn sample_script(greeting: &str) -> ScriptDocument {
    ScriptDocument::Session(SessionScript {
        session_id: "cache-test".into(),
        session_name: Some("Cache test".into()),
        description: None,
        version: Some("1.0".into()),
        template_scheme: None,
        safety: None,
        phases: vec![Phase {
            phase_id: "opening".into(),
            phase_name: None,
            phase_goal: None,
            description: None,
            topics: vec![Topic {
                topic_id: "welcome".into(),
                topic_name: None,
                topic_goal: None,
                description: None,
                strategy: None,
                actions: vec![say("greet", greeting)],
            }],
        }],
    })
}

fn sample_session(turn_count: u64) -> Session {
    let now = Utc::now();
    Session {
        id: SessionId::new_random(),
        user_id: "user-1".into(),
        script_id: ScriptId::new_random(),
        script_hash: "0f1e2d".into(),
        status: SessionStatus::Active,
        state: EngineState::initial(VariableStore::default()),
        turn_count,
        last_message_seq: 0,
        last_error: None,
        created_at: now,
        updated_at: now,
        completed_at: None,
    }
}

/// Counter values read at one instant (reading resets the debugging
/// recorder, so read once and query the copy).
struct Counters(Vec<CounterSeries>);

struct CounterSeries {
    name: String,
    labels: Vec<(String, String)>,
    count: u64,
}

impl Counters {
    fn read(snapshotter: &Snapshotter) -> Self {
        let counters = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let labels = key
                    .labels()
                    .map(|label| (label.key().to_owned(), label.value().to_owned()))
                    .collect();
                match value {
                    DebugValue::Counter(count) => CounterSeries {
                        name: key.name().to_owned(),
                        labels,
                        count,
                    },
                    other => panic!("{} is not a counter: {other:?}", key.name()),
                }
            })
            .collect();
        Self(counters)
    }

    /// Sum over the series of `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .iter()
            .filter(|series| {
                series.name == name
                    && labels.iter().all(|(key, value)| {
                        series.labels.iter().any(|(k, v)| k == key && v == value)
                    })
            })
            .map(|series| series.count)
            .sum()
    }
}

/// Records the WARN events of this crate (as field maps) while installed as
/// the thread's default subscriber.
#[derive(Clone, Default)]
struct WarnCapture {
    events: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    next_span: Arc<AtomicU64>,
}

impl WarnCapture {
    fn events(&self) -> Vec<BTreeMap<String, String>> {
        self.events.lock().unwrap().clone()
    }
}

struct FieldMap(BTreeMap<String, String>);

impl tracing::field::Visit for FieldMap {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl tracing::Subscriber for WarnCapture {
    fn enabled(&self, _metadata: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let metadata = event.metadata();
        if *metadata.level() == tracing::Level::WARN
            && metadata.target().starts_with("heartrule_cache")
        {
            let mut fields = FieldMap(BTreeMap::new());
            event.record(&mut fields);
            self.events.lock().unwrap().push(fields.0);
        }
    }
    fn enter(&self, _span: &tracing::span::Id) {}
    fn exit(&self, _span: &tracing::span::Id) {}
}

/// A URL on which nothing listens.
fn closed_port_url() -> String {
    format!("redis://127.0.0.1:{}", heartrule_testkit::closed_port())
}

// ----------------------------------------------------------- script cache

#[tokio::test]
async fn script_cache_round_trips_and_misses_on_another_hash() {
    let redis = TestRedis::start().await;
    let cache = &redis.cache;
    let id = ScriptId::new_random();
    let first = sample_document("Hello");

    assert_eq!(ScriptCache::get(cache, id, "hash-1").await, None);
    ScriptCache::put(cache, id, "hash-1", &first).await;
    assert_eq!(
        ScriptCache::get(cache, id, "hash-1").await,
        Some(first.clone())
    );
    assert_eq!(
        ScriptCache::get(cache, id, "hash-2").await,
        None,
        "another content hash is a miss"
    );
    assert_eq!(
        ScriptCache::get(cache, ScriptId::new_random(), "hash-1").await,
        None
    );

    // A new version replaces the old one.
    let second = sample_document("Welcome back");
    ScriptCache::put(cache, id, "hash-2", &second).await;
    assert_eq!(ScriptCache::get(cache, id, "hash-2").await, Some(second));
    assert_eq!(ScriptCache::get(cache, id, "hash-1").await, None);

    redis.clean_up().await;
}

#[tokio::test]
async fn a_document_cached_before_bundles_is_a_miss_and_evicted() {
    let mut redis = TestRedis::start().await;
    let id = ScriptId::new_random();
    let key = redis.cache.script_key(id);
    let legacy = serde_json::to_vec(&sample_script("Hi")).unwrap();
    redis
        .command::<()>(redis::cmd("HSET").arg(&key).arg("hash").arg(legacy))
        .await;
    assert_eq!(ScriptCache::get(&redis.cache, id, "hash").await, None);
    assert!(!redis.exists(&key).await, "the old-shape entry is evicted");
    redis.clean_up().await;
}

#[tokio::test]
async fn script_invalidate_removes_every_version() {
    let mut redis = TestRedis::start().await;
    let id = ScriptId::new_random();
    let other = ScriptId::new_random();
    ScriptCache::put(&redis.cache, id, "hash-1", &sample_document("Hi")).await;
    ScriptCache::put(&redis.cache, other, "hash-9", &sample_document("Hey")).await;

    ScriptCache::invalidate(&redis.cache, id).await;

    assert_eq!(ScriptCache::get(&redis.cache, id, "hash-1").await, None);
    let key = redis.cache.script_key(id);
    assert!(!redis.exists(&key).await);
    assert!(
        ScriptCache::get(&redis.cache, other, "hash-9")
            .await
            .is_some(),
        "other scripts stay cached"
    );
    redis.clean_up().await;
}

// ---------------------------------------------------------- session cache

#[tokio::test]
async fn session_cache_round_trips_and_invalidates() {
    let mut redis = TestRedis::start().await;
    let cache = &redis.cache;
    let mut session = sample_session(1);

    assert_eq!(SessionCache::get(cache, session.id).await, None);
    SessionCache::put(cache, &session).await;
    assert_eq!(
        SessionCache::get(cache, session.id).await,
        Some(session.clone())
    );

    session.turn_count = 2;
    session.status = SessionStatus::Completed;
    SessionCache::put(cache, &session).await;
    assert_eq!(
        SessionCache::get(cache, session.id).await,
        Some(session.clone())
    );

    SessionCache::invalidate(cache, session.id).await;
    assert_eq!(SessionCache::get(cache, session.id).await, None);
    let key = redis.cache.session_key(session.id);
    assert!(!redis.exists(&key).await);
    redis.clean_up().await;
}

#[tokio::test]
async fn session_snapshot_of_an_earlier_turn_does_not_overwrite_a_later_one() {
    let redis = TestRedis::start().await;
    let later = sample_session(7);
    let earlier = Session {
        turn_count: 6,
        last_message_seq: 3,
        ..later.clone()
    };
    SessionCache::put(&redis.cache, &later).await;
    SessionCache::put(&redis.cache, &earlier).await;
    assert_eq!(
        SessionCache::get(&redis.cache, later.id).await,
        Some(later.clone())
    );

    // The same turn may be rewritten (status change without a turn).
    let paused = Session {
        status: SessionStatus::Paused,
        ..later.clone()
    };
    SessionCache::put(&redis.cache, &paused).await;
    assert_eq!(
        SessionCache::get(&redis.cache, later.id).await,
        Some(paused)
    );
    redis.clean_up().await;
}

// --------------------------------------------------------------- TTLs

#[tokio::test]
async fn entries_expire_after_the_configured_ttls() {
    let mut redis = TestRedis::start_with(|config| RedisCacheConfig {
        script_ttl: Duration::from_secs(120),
        session_ttl: Duration::from_secs(45),
        ..config
    })
    .await;
    let script = ScriptId::new_random();
    let session = sample_session(1);
    ScriptCache::put(&redis.cache, script, "hash", &sample_document("Hi")).await;
    SessionCache::put(&redis.cache, &session).await;

    let script_key = redis.cache.script_key(script);
    let session_key = redis.cache.session_key(session.id);
    let script_pttl = redis.pttl(&script_key).await;
    let session_pttl = redis.pttl(&session_key).await;
    assert!(
        (110_000..=120_000).contains(&script_pttl),
        "script PTTL {script_pttl}"
    );
    assert!(
        (35_000..=45_000).contains(&session_pttl),
        "session PTTL {session_pttl}"
    );
    let session_ttl: i64 = redis.command(redis::cmd("TTL").arg(&session_key)).await;
    assert!(
        (35..=45).contains(&session_ttl),
        "session TTL {session_ttl}"
    );
    redis.clean_up().await;
}

// ------------------------------------------------------- corrupt values

#[tokio::test]
async fn corrupt_values_are_misses_and_get_deleted() {
    let mut redis = TestRedis::start().await;
    let session = sample_session(1);
    let session_key = redis.cache.session_key(session.id);
    redis
        .command::<()>(redis::cmd("SET").arg(&session_key).arg("{\"id\": not json"))
        .await;
    assert_eq!(SessionCache::get(&redis.cache, session.id).await, None);
    assert!(
        !redis.exists(&session_key).await,
        "corrupt session entry deleted"
    );

    let script = ScriptId::new_random();
    let script_key = redis.cache.script_key(script);
    redis
        .command::<()>(redis::cmd("HSET").arg(&script_key).arg("hash").arg("[1, 2"))
        .await;
    // Valid JSON of the wrong shape is just as unusable.
    redis
        .command::<()>(
            redis::cmd("HSET")
                .arg(&script_key)
                .arg("other")
                .arg("{\"kind\":\"poem\"}"),
        )
        .await;
    assert_eq!(ScriptCache::get(&redis.cache, script, "hash").await, None);
    assert_eq!(ScriptCache::get(&redis.cache, script, "other").await, None);
    assert!(
        !redis.exists(&script_key).await,
        "corrupt script entries deleted"
    );

    // The cache works again once a valid value is written.
    SessionCache::put(&redis.cache, &session).await;
    assert_eq!(
        SessionCache::get(&redis.cache, session.id).await,
        Some(session)
    );
    redis.clean_up().await;
}

// -------------------------------------------------------------- metrics

#[tokio::test]
async fn lookups_count_hits_and_misses_per_cache() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // current-thread runtime: every cache call runs on this thread.
    let _guard = metrics::set_default_local_recorder(&recorder);
    let redis = TestRedis::start().await;
    let script = ScriptId::new_random();
    let session = sample_session(1);

    ScriptCache::get(&redis.cache, script, "h").await;
    ScriptCache::put(&redis.cache, script, "h", &sample_document("Hi")).await;
    ScriptCache::get(&redis.cache, script, "h").await;
    ScriptCache::get(&redis.cache, script, "h").await;
    SessionCache::get(&redis.cache, session.id).await;
    SessionCache::put(&redis.cache, &session).await;
    SessionCache::get(&redis.cache, session.id).await;

    let counters = Counters::read(&snapshotter);
    let count = |cache: &str, result: &str| {
        counters.get(
            CACHE_REQUESTS_TOTAL,
            &[("cache", cache), ("result", result)],
        )
    };
    assert_eq!(count("script", "miss"), 1);
    assert_eq!(count("script", "hit"), 2);
    assert_eq!(count("session", "miss"), 1);
    assert_eq!(count("session", "hit"), 1);
    assert_eq!(counters.get(REDIS_ERRORS_TOTAL, &[]), 0);
    redis.clean_up().await;
}

// ------------------------------------------------------------ Redis down

#[tokio::test]
async fn unreachable_redis_fails_open_quickly_and_warns_once_per_interval() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _metrics_guard = metrics::set_default_local_recorder(&recorder);
    let capture = WarnCapture::default();
    let _tracing_guard = tracing::subscriber::set_default(capture.clone());

    let op_timeout = Duration::from_millis(50);
    let connect_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let cache = RedisCache::connect(RedisCacheConfig {
        url: closed_port_url(),
        key_prefix: unique_prefix(),
        op_timeout,
        connect_timeout,
        warn_interval: Duration::from_secs(3600),
        ..RedisCacheConfig::default()
    })
    .await
    .expect("an unreachable Redis must not fail the start");
    assert!(started.elapsed() < connect_timeout + Duration::from_millis(500));

    // Scheduling slack on a busy machine; a retrying client would take seconds.
    let bound = op_timeout + Duration::from_millis(250);
    let script = ScriptId::new_random();
    let session = sample_session(1);
    let document = sample_document("Hi");
    const ROUNDS: u64 = 5;
    for _ in 0..ROUNDS {
        let timer = Instant::now();
        assert_eq!(ScriptCache::get(&cache, script, "h").await, None);
        assert!(
            timer.elapsed() < bound,
            "script get took {:?}",
            timer.elapsed()
        );
        let timer = Instant::now();
        ScriptCache::put(&cache, script, "h", &document).await;
        assert!(
            timer.elapsed() < bound,
            "script put took {:?}",
            timer.elapsed()
        );
        let timer = Instant::now();
        assert_eq!(SessionCache::get(&cache, session.id).await, None);
        assert!(
            timer.elapsed() < bound,
            "session get took {:?}",
            timer.elapsed()
        );
        let timer = Instant::now();
        SessionCache::put(&cache, &session).await;
        SessionCache::invalidate(&cache, session.id).await;
        ScriptCache::invalidate(&cache, script).await;
        assert!(
            timer.elapsed() < bound * 3,
            "writes took {:?}",
            timer.elapsed()
        );
    }
    let health = cache.health().await;
    assert!(!health.reachable);
    assert!(health.last_error.is_some());

    let counters = Counters::read(&snapshotter);
    for operation in [
        "script.get",
        "script.put",
        "script.invalidate",
        "session.get",
        "session.put",
        "session.invalidate",
    ] {
        assert_eq!(
            counters.get(REDIS_ERRORS_TOTAL, &[("operation", operation)]),
            ROUNDS,
            "{operation}"
        );
    }
    assert_eq!(
        counters.get(REDIS_ERRORS_TOTAL, &[("operation", "connect")]),
        1
    );
    assert_eq!(
        counters.get(REDIS_ERRORS_TOTAL, &[("operation", "ping")]),
        1
    );
    assert_eq!(
        counters.get(CACHE_REQUESTS_TOTAL, &[("result", "miss")]),
        2 * ROUNDS,
        "failed lookups count as misses"
    );

    // 1 connect + 6 × ROUNDS operations + 1 ping failed, one warning got out.
    let warnings = capture.events();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["operation"], "\"connect\"");
    assert_eq!(warnings[0]["suppressed"], "0");
}

#[tokio::test]
async fn the_next_warning_reports_how_many_were_suppressed() {
    let capture = WarnCapture::default();
    let _tracing_guard = tracing::subscriber::set_default(capture.clone());
    let warn_interval = Duration::from_millis(700);
    let cache = RedisCache::connect_lazy(RedisCacheConfig {
        url: closed_port_url(),
        op_timeout: Duration::from_millis(20),
        warn_interval,
        ..RedisCacheConfig::default()
    })
    .unwrap();
    let session = SessionId::new_random();

    SessionCache::get(&cache, session).await; // warns
    for _ in 0..4 {
        SessionCache::get(&cache, session).await; // suppressed
    }
    tokio::time::sleep(warn_interval).await;
    SessionCache::get(&cache, session).await; // warns, reporting 4

    let warnings = capture.events();
    let suppressed: Vec<&str> = warnings.iter().map(|w| w["suppressed"].as_str()).collect();
    assert_eq!(suppressed, ["0", "4"], "{warnings:?}");
}

#[tokio::test]
async fn hung_redis_cannot_stall_a_request() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // Accepts connections (the kernel completes the handshake) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let op_timeout = Duration::from_millis(50);
    let cache = RedisCache::connect_lazy(RedisCacheConfig {
        url: format!("redis://{}", silent.local_addr().unwrap()),
        op_timeout,
        ..RedisCacheConfig::default()
    })
    .unwrap();

    let session = sample_session(1);
    let timer = Instant::now();
    assert_eq!(SessionCache::get(&cache, session.id).await, None);
    SessionCache::put(&cache, &session).await;
    let limited = cache.rate_limiter().try_acquire("user-1", 5, 1.0, 1).await;
    let elapsed = timer.elapsed();
    assert!(
        elapsed >= op_timeout * 3,
        "each call waited for its timeout: {elapsed:?}"
    );
    assert!(
        elapsed < op_timeout * 3 + Duration::from_millis(400),
        "took {elapsed:?}"
    );
    assert!(
        matches!(limited, Err(CacheError::Timeout { .. })),
        "{limited:?}"
    );
    let health = cache.health().await;
    assert!(!health.reachable);
    assert!(health.last_error.unwrap().contains("timed out"));

    let counters = Counters::read(&snapshotter);
    for operation in ["session.get", "session.put", "rate_limit", "ping"] {
        assert_eq!(
            counters.get(REDIS_ERRORS_TOTAL, &[("operation", operation)]),
            1,
            "{operation}"
        );
    }
    drop(silent);
}

#[tokio::test]
async fn rate_limiter_reports_an_unreachable_redis() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let cache = RedisCache::connect_lazy(RedisCacheConfig {
        url: closed_port_url(),
        op_timeout: Duration::from_millis(50),
        ..RedisCacheConfig::default()
    })
    .unwrap();
    let timer = Instant::now();
    let result = cache.rate_limiter().try_acquire("user-1", 5, 1.0, 1).await;
    assert!(
        timer.elapsed() < Duration::from_millis(300),
        "took {:?}",
        timer.elapsed()
    );
    let error = result.unwrap_err();
    assert!(
        matches!(error, CacheError::Timeout { .. } | CacheError::Redis { .. }),
        "{error:?}"
    );
    assert!(error.is_redis_failure());
    let counters = Counters::read(&snapshotter);
    assert_eq!(
        counters.get(REDIS_ERRORS_TOTAL, &[("operation", "rate_limit")]),
        1
    );
}

// --------------------------------------------------------- rate limiter

#[tokio::test]
async fn token_bucket_grants_up_to_capacity_then_refuses() {
    let mut redis = TestRedis::start().await;
    let limiter = redis.cache.rate_limiter();
    // Slow refill: nothing comes back during the test.
    let refill = 0.01;
    for expected_remaining in (0..5).rev() {
        let decision = limiter.try_acquire("user-a", 5, refill, 1).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.remaining, expected_remaining);
        assert_eq!(decision.retry_after, None);
    }
    let refused = limiter.try_acquire("user-a", 5, refill, 1).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    let retry_after = refused.retry_after.expect("a refusal says when to retry");
    assert!(
        retry_after > Duration::from_secs(90) && retry_after <= Duration::from_secs(100),
        "one token at 0.01/s takes about 100 s, got {retry_after:?}"
    );
    // Buckets are independent, and a cost takes several tokens at once.
    let other = limiter.try_acquire("user-b", 5, refill, 3).await.unwrap();
    assert!(other.allowed);
    assert_eq!(other.remaining, 2);
    assert!(
        !limiter
            .try_acquire("user-b", 5, refill, 3)
            .await
            .unwrap()
            .allowed
    );

    // The key lives until the bucket would be full again (5 tokens at 0.01/s).
    let key = limiter.bucket_key("user-a");
    let pttl = redis.pttl(&key).await;
    assert!((490_000..=500_000).contains(&pttl), "PTTL {pttl}");
    redis.clean_up().await;
}

#[tokio::test]
async fn token_bucket_refills_over_time_and_its_key_expires_when_full() {
    let mut redis = TestRedis::start().await;
    let limiter = redis.cache.rate_limiter();
    let key = limiter.bucket_key("refill");
    // 2 tokens, 10 per second: empty → full in 200 ms.
    assert!(
        limiter
            .try_acquire("refill", 2, 10.0, 2)
            .await
            .unwrap()
            .allowed
    );
    let refused = limiter.try_acquire("refill", 2, 10.0, 1).await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after.unwrap() <= Duration::from_millis(100));
    assert!(redis.exists(&key).await);

    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(!redis.exists(&key).await, "a full bucket needs no key");
    let refilled = limiter.try_acquire("refill", 2, 10.0, 2).await.unwrap();
    assert!(refilled.allowed, "the bucket refilled");

    // A zero-cost peek at a full bucket leaves no key behind.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let peek = limiter.try_acquire("refill", 2, 10.0, 0).await.unwrap();
    assert!(peek.allowed);
    assert_eq!(peek.remaining, 2);
    assert!(!redis.exists(&key).await);
    redis.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_acquirers_never_exceed_capacity() {
    let redis = TestRedis::start().await;
    let limiter = redis.cache.rate_limiter();
    const CAPACITY: u32 = 10;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut granted = 0_u32;
                for _ in 0..5 {
                    // 0.001 tokens/s: well under one token during the test.
                    if limiter
                        .try_acquire("shared", CAPACITY, 0.001, 1)
                        .await
                        .unwrap()
                        .allowed
                    {
                        granted += 1;
                    }
                }
                granted
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += task.await.unwrap();
    }
    assert_eq!(granted, CAPACITY, "100 attempts on a bucket of {CAPACITY}");
    redis.clean_up().await;
}

#[tokio::test]
async fn impossible_requests_are_rejected_before_reaching_redis() {
    let redis = TestRedis::start().await;
    let limiter = redis.cache.rate_limiter();
    let error = limiter.try_acquire("x", 3, 1.0, 4).await.unwrap_err();
    assert!(
        matches!(error, CacheError::InvalidArgument { .. }),
        "{error:?}"
    );
    assert!(!error.is_redis_failure());
    redis.clean_up().await;
}

// ------------------------------------------------- the rate-limiter port

/// Three requests, then refusals for about 100 s.
const THREE_SLOW: RateLimit = RateLimit {
    per_second: 0.01,
    burst: 3,
};

#[tokio::test]
async fn the_port_on_redis_shares_one_bucket_between_instances() {
    let redis = TestRedis::start().await;
    // Two limiters on two connections, as two server instances would be.
    let other = RedisCache::connect(redis.cache.config().clone())
        .await
        .unwrap();
    let first: Arc<dyn RateLimiter> = Arc::new(redis.cache.rate_limiter());
    let second: Arc<dyn RateLimiter> = Arc::new(other.rate_limiter());
    for limiter in [&first, &second, &first] {
        assert!(
            limiter
                .try_acquire("ip:1", 1, THREE_SLOW)
                .await
                .unwrap()
                .allowed
        );
    }
    let refused = second.try_acquire("ip:1", 1, THREE_SLOW).await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after.unwrap() > Duration::from_secs(90));
    let error = first.try_acquire("ip:1", 4, THREE_SLOW).await.unwrap_err();
    assert!(
        matches!(error, RateLimitError::InvalidLimit(_)),
        "{error:?}"
    );
    redis.clean_up().await;
}

#[tokio::test]
async fn with_redis_down_the_local_buckets_still_limit() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let down = RedisCache::connect_lazy(RedisCacheConfig {
        url: closed_port_url(),
        op_timeout: Duration::from_millis(50),
        ..RedisCacheConfig::default()
    })
    .unwrap();
    let limiter = FailoverRateLimiter::new(
        down.rate_limiter(),
        LocalRateLimiter::default(),
        Duration::from_secs(30),
    )
    .with_redis_pause(Duration::ZERO);
    for _ in 0..3 {
        let decision = limiter.try_acquire("ip:1", 1, THREE_SLOW).await.unwrap();
        assert!(decision.allowed, "fail open on Redis");
    }
    let refused = limiter.try_acquire("ip:1", 1, THREE_SLOW).await.unwrap();
    assert!(!refused.allowed, "but the local bucket still limits");
    assert!(refused.retry_after.unwrap() > Duration::from_secs(90));
    assert!(
        limiter
            .try_acquire("ip:2", 1, THREE_SLOW)
            .await
            .unwrap()
            .allowed
    );

    let counters = Counters::read(&snapshotter);
    assert_eq!(counters.get(RATE_LIMIT_FALLBACK_TOTAL, &[]), 5);
    assert_eq!(
        counters.get(REDIS_ERRORS_TOTAL, &[("operation", "rate_limit")]),
        5,
        "Redis was asked every time (no pause)"
    );
}

#[tokio::test]
async fn after_a_redis_failure_redis_is_skipped_for_a_while() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // Accepts connections and never answers: each Redis call costs its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let op_timeout = Duration::from_millis(100);
    let hung = RedisCache::connect_lazy(RedisCacheConfig {
        url: format!("redis://{}", silent.local_addr().unwrap()),
        op_timeout,
        ..RedisCacheConfig::default()
    })
    .unwrap();
    let limiter = FailoverRateLimiter::new(
        hung.rate_limiter(),
        LocalRateLimiter::default(),
        Duration::from_secs(30),
    )
    .with_redis_pause(Duration::from_secs(60));
    let timer = Instant::now();
    for _ in 0..3 {
        assert!(
            limiter
                .try_acquire("sub:a", 1, THREE_SLOW)
                .await
                .unwrap()
                .allowed
        );
    }
    assert!(
        !limiter
            .try_acquire("sub:a", 1, THREE_SLOW)
            .await
            .unwrap()
            .allowed
    );
    let elapsed = timer.elapsed();
    assert!(
        elapsed < op_timeout * 2 + Duration::from_millis(300),
        "only the first call waited for Redis: {elapsed:?}"
    );
    let counters = Counters::read(&snapshotter);
    assert_eq!(counters.get(RATE_LIMIT_FALLBACK_TOTAL, &[]), 4);
    assert_eq!(
        counters.get(REDIS_ERRORS_TOTAL, &[("operation", "rate_limit")]),
        1
    );
    drop(silent);
}

#[tokio::test]
async fn with_redis_up_the_failover_limiter_uses_the_shared_bucket() {
    let redis = TestRedis::start().await;
    let limiter = FailoverRateLimiter::new(
        redis.cache.rate_limiter(),
        LocalRateLimiter::default(),
        Duration::from_secs(30),
    );
    for _ in 0..3 {
        assert!(
            limiter
                .try_acquire("sub:b", 1, THREE_SLOW)
                .await
                .unwrap()
                .allowed
        );
    }
    assert!(
        !limiter
            .try_acquire("sub:b", 1, THREE_SLOW)
            .await
            .unwrap()
            .allowed
    );
    // The shared bucket is in Redis, under the prefix.
    let keys = keys_under(&redis_url(), &redis.prefix).unwrap();
    assert_eq!(keys, [format!("{}:ratelimit:sub:b", redis.prefix)]);
    redis.clean_up().await;
}
