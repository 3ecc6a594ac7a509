//! The metrics this crate records, declared once.

use heartrule_domain::{MetricDecl, MetricSet};

/// Counter of Redis failures (errors and timeouts), label `operation`.
pub const REDIS_ERRORS_TOTAL: &str = "heartrule_redis_errors_total";
/// Counter of cache lookups, labels `cache` (`script` | `session`) and
/// `result` (`hit` | `miss`). A lookup that failed counts as a miss.
pub const CACHE_REQUESTS_TOTAL: &str = "heartrule_cache_requests_total";
/// Counter of rate-limit decisions taken by the in-process buckets because
/// Redis failed (or was being skipped after a failure).
pub const RATE_LIMIT_FALLBACK_TOTAL: &str = "heartrule_rate_limit_fallback_total";

/// The metrics this crate records.
pub const METRICS: MetricSet = MetricSet {
    emitted_by: env!("CARGO_PKG_NAME"),
    metrics: &[
        MetricDecl::counter(
            CACHE_REQUESTS_TOTAL,
            &["cache", "result"],
            "Cache lookups by cache (script or session) and result (hit or miss).",
        ),
        MetricDecl::counter(
            REDIS_ERRORS_TOTAL,
            &["operation"],
            "Redis operations that failed or timed out (the cache failed open).",
        ),
        MetricDecl::counter(
            RATE_LIMIT_FALLBACK_TOTAL,
            &[],
            "Rate-limit decisions taken by this instance's own buckets because Redis failed.",
        ),
    ],
};

pub(crate) fn record_redis_error(operation: &'static str) {
    metrics::counter!(REDIS_ERRORS_TOTAL, "operation" => operation).increment(1);
}

pub(crate) fn record_rate_limit_fallback() {
    metrics::counter!(RATE_LIMIT_FALLBACK_TOTAL).increment(1);
}

pub(crate) fn record_lookup(cache: &'static str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!(CACHE_REQUESTS_TOTAL, "cache" => cache, "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn counters_carry_their_declared_labels() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            record_lookup("script", true);
            record_lookup("script", false);
            record_lookup("script", false);
            record_redis_error("session.get");
        });
        let mut series: Vec<(String, Vec<String>, u64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let DebugValue::Counter(count) = value else {
                    panic!("{key:?} is not a counter");
                };
                METRICS
                    .check_series(key.key().name(), key.key().labels().map(|l| l.key()))
                    .unwrap_or_else(|problem| panic!("{problem}"));
                let labels = key
                    .key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                (key.key().name().to_owned(), labels, count)
            })
            .collect();
        series.sort();
        let expected = [
            (
                CACHE_REQUESTS_TOTAL,
                ["cache=script", "result=hit"].as_slice(),
                1,
            ),
            (CACHE_REQUESTS_TOTAL, &["cache=script", "result=miss"], 2),
            (REDIS_ERRORS_TOTAL, &["operation=session.get"], 1),
        ];
        assert_eq!(series.len(), expected.len(), "{series:?}");
        for ((name, labels, count), (want_name, want_labels, want_count)) in
            series.iter().zip(expected)
        {
            assert_eq!(name, want_name);
            assert_eq!(labels, want_labels);
            assert_eq!(*count, want_count);
        }
    }
}
