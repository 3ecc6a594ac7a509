//! Typed failures of the Redis adapter.

use std::time::Duration;

/// Why a Redis operation did not produce a result.
///
/// The caches never return it (they fail open); the rate limiter and the
/// constructors do.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The configuration cannot work (malformed URL, empty key prefix, zero timeout).
    #[error("invalid Redis cache configuration: {0}")]
    InvalidConfig(String),
    /// The lazy connection spawns its reconnect task on Tokio, so it must be
    /// created inside a Tokio runtime.
    #[error("the Redis cache must be created inside a Tokio runtime")]
    NoRuntime,
    /// A caller passed arguments the operation cannot honour.
    #[error("invalid argument to {operation}: {reason}")]
    InvalidArgument {
        operation: &'static str,
        reason: String,
    },
    /// Redis refused the connection or answered with an error.
    #[error("Redis {operation} failed: {source}")]
    Redis {
        operation: &'static str,
        #[source]
        source: redis::RedisError,
    },
    /// Redis did not answer within the operation timeout.
    #[error("Redis {operation} timed out after {} ms", after.as_millis())]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    /// A value could not be encoded for storage.
    #[error("could not encode the value for {operation}: {source}")]
    Encode {
        operation: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Redis answered with something the adapter does not understand.
    #[error("unexpected Redis reply to {operation}: {reason}")]
    UnexpectedReply {
        operation: &'static str,
        reason: String,
    },
}

impl CacheError {
    /// Whether the failure came from Redis itself (unreachable, erroring,
    /// slow or answering nonsense), as opposed to a bad input.
    #[must_use]
    pub fn is_redis_failure(&self) -> bool {
        matches!(
            self,
            Self::Redis { .. } | Self::Timeout { .. } | Self::UnexpectedReply { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_operation() {
        let timeout = CacheError::Timeout {
            operation: "session.get",
            after: Duration::from_millis(50),
        };
        assert_eq!(
            timeout.to_string(),
            "Redis session.get timed out after 50 ms"
        );
        assert!(timeout.is_redis_failure());
        let invalid = CacheError::InvalidArgument {
            operation: "rate_limit",
            reason: "capacity must be positive".into(),
        };
        assert!(!invalid.is_redis_failure());
    }
}
