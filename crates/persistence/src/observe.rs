//! Tracing spans and metrics around every PostgreSQL repository call.

use heartrule_domain::metric::DURATION_BUCKETS;
use heartrule_domain::{MetricDecl, MetricSet, RepositoryError};
use metrics::Unit;
use std::future::Future;
use std::time::Instant;
use tracing::Instrument;

/// Histogram of one repository call's duration, by `operation` and `table`.
pub const QUERY_DURATION: &str = "heartrule_db_query_duration_seconds";
/// Histogram of the time spent waiting for a pooled connection.
pub const POOL_ACQUIRE_DURATION: &str = "heartrule_db_pool_acquire_duration_seconds";
/// Counter of failed repository calls, by error `kind`.
pub const ERRORS_TOTAL: &str = "heartrule_db_errors_total";

/// The metrics this crate records.
pub const METRICS: MetricSet = MetricSet {
    emitted_by: env!("CARGO_PKG_NAME"),
    metrics: &[
        MetricDecl::histogram(
            QUERY_DURATION,
            Unit::Seconds,
            &["operation", "table"],
            DURATION_BUCKETS,
            "Duration of database queries, by operation and table.",
        ),
        MetricDecl::histogram(
            POOL_ACQUIRE_DURATION,
            Unit::Seconds,
            &[],
            DURATION_BUCKETS,
            "Time spent waiting for a database connection from the pool.",
        ),
        MetricDecl::counter(
            ERRORS_TOTAL,
            &["kind"],
            "Database operations that failed, by error kind.",
        ),
    ],
};

/// Runs `$body` (a future yielding `Result<_, RepositoryError>`) inside the
/// `db.<operation>` span with OpenTelemetry database attributes, and records
/// its duration and failure. Span names must be static, hence a macro.
macro_rules! observed {
    ($operation:literal, $table:literal, $body:expr) => {
        $crate::observe::observe(
            tracing::info_span!(
                concat!("db.", $operation),
                db.system = "postgresql",
                db.operation = $operation,
                db.collection.name = $table,
                error.type = tracing::field::Empty,
            ),
            $operation,
            $table,
            $body,
        )
    };
}
pub(crate) use observed;

pub(crate) async fn observe<T, F>(
    span: tracing::Span,
    operation: &'static str,
    table: &'static str,
    body: F,
) -> Result<T, RepositoryError>
where
    F: Future<Output = Result<T, RepositoryError>>,
{
    let started = Instant::now();
    let result = body.instrument(span.clone()).await;
    metrics::histogram!(QUERY_DURATION, "operation" => operation, "table" => table)
        .record(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        let kind = error_kind(error);
        metrics::counter!(ERRORS_TOTAL, "kind" => kind).increment(1);
        span.record("error.type", kind);
        span.in_scope(|| tracing::debug!(error = %error, "database call failed"));
    }
    result
}

/// The metric label of an error.
pub(crate) fn error_kind(error: &RepositoryError) -> &'static str {
    match error {
        RepositoryError::NotFound(_) => "not_found",
        RepositoryError::Conflict(_) => "conflict",
        RepositoryError::Unavailable(_) => "unavailable",
        RepositoryError::Timeout(_) => "timeout",
        RepositoryError::Query(_) => "query",
        RepositoryError::Corrupt(_) => "corrupt",
        RepositoryError::LeaseLost(_) => "lease_lost",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_are_distinct_snake_case_labels() {
        let kinds = [
            error_kind(&RepositoryError::NotFound(String::new())),
            error_kind(&RepositoryError::Conflict(String::new())),
            error_kind(&RepositoryError::Unavailable(String::new())),
            error_kind(&RepositoryError::Timeout(String::new())),
            error_kind(&RepositoryError::Query(String::new())),
            error_kind(&RepositoryError::Corrupt(String::new())),
            error_kind(&RepositoryError::LeaseLost(String::new())),
        ];
        let mut unique = kinds.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), kinds.len());
        assert!(kinds
            .iter()
            .all(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }
}
