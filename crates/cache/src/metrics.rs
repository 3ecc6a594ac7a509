//! Names and help texts of the metrics this crate records.

/// Counter of Redis failures (errors and timeouts), label `operation`.
pub const REDIS_ERRORS_TOTAL: &str = "heartrule_redis_errors_total";
/// Counter of cache lookups, labels `cache` (`script` | `session`) and
/// `result` (`hit` | `miss`). A lookup that failed counts as a miss.
pub const CACHE_REQUESTS_TOTAL: &str = "heartrule_cache_requests_total";

/// Registers the help texts with the installed recorder; call once after
/// installing it.
pub fn describe_metrics() {
    metrics::describe_counter!(
        REDIS_ERRORS_TOTAL,
        "Redis operations that failed or timed out (the cache failed open)"
    );
    metrics::describe_counter!(
        CACHE_REQUESTS_TOTAL,
        "Cache lookups by cache and result (hit or miss)"
    );
}

pub(crate) fn record_redis_error(operation: &'static str) {
    metrics::counter!(REDIS_ERRORS_TOTAL, "operation" => operation).increment(1);
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
    fn counters_carry_their_labels_and_help_texts() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            describe_metrics();
            record_lookup("script", true);
            record_lookup("script", false);
            record_lookup("script", false);
            record_redis_error("session.get");
        });
        let mut series: Vec<(String, Vec<String>, bool, u64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, description, value)| {
                let DebugValue::Counter(count) = value else {
                    panic!("{key:?} is not a counter");
                };
                let labels = key
                    .key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                (
                    key.key().name().to_owned(),
                    labels,
                    description.is_some(),
                    count,
                )
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
        for ((name, labels, described, count), (want_name, want_labels, want_count)) in
            series.iter().zip(expected)
        {
            assert_eq!(name, want_name);
            assert_eq!(labels, want_labels);
            assert!(described, "{name} has a help text");
            assert_eq!(*count, want_count);
        }
    }
}
