//! Maps diesel and pool errors to the domain's [`RepositoryError`].

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::PoolError;
use diesel_async::pooled_connection::PoolError as ManagerError;
use heartrule_domain::RepositoryError;

/// Classifies a diesel error.
///
/// diesel only keeps the SQLSTATE for a few error classes (unique, foreign
/// key, check, …); statement timeouts (57014) and terminated backends
/// (57P01..57P03) arrive as `Unknown`, so those two are recognised by
/// PostgreSQL's message text.
pub(crate) fn map_diesel(error: DieselError) -> RepositoryError {
    match error {
        DieselError::NotFound => RepositoryError::NotFound("row not found".into()),
        DieselError::DatabaseError(kind, info) => map_database_error(kind, info.as_ref()),
        DieselError::DeserializationError(e) => {
            RepositoryError::Corrupt(format!("could not decode a stored value: {e}"))
        }
        DieselError::SerializationError(e) => {
            RepositoryError::Query(format!("could not encode a value: {e}"))
        }
        DieselError::BrokenTransactionManager => {
            RepositoryError::Unavailable("the connection's transaction state is broken".into())
        }
        DieselError::RollbackErrorOnCommit {
            rollback_error,
            commit_error,
        } => RepositoryError::Unavailable(format!(
            "commit failed ({commit_error}) and so did the rollback ({rollback_error})"
        )),
        other => RepositoryError::Query(other.to_string()),
    }
}

fn map_database_error(
    kind: DatabaseErrorKind,
    info: &(dyn DatabaseErrorInformation + Send + Sync),
) -> RepositoryError {
    let detail = describe(info);
    match kind {
        DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::SerializationFailure => {
            RepositoryError::Conflict(detail)
        }
        DatabaseErrorKind::ForeignKeyViolation => RepositoryError::NotFound(detail),
        DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
            RepositoryError::Unavailable(detail)
        }
        _ if is_timeout(info.message()) => RepositoryError::Timeout(detail),
        _ if is_connection_loss(info.message()) => RepositoryError::Unavailable(detail),
        _ => RepositoryError::Query(detail),
    }
}

fn describe(info: &(dyn DatabaseErrorInformation + Send + Sync)) -> String {
    match (info.constraint_name(), info.details()) {
        (Some(constraint), _) => format!("{} (constraint {constraint})", info.message()),
        (None, Some(details)) => format!("{} ({details})", info.message()),
        (None, None) => info.message().to_owned(),
    }
}

/// `canceling statement due to statement timeout` / `… lock timeout`.
fn is_timeout(message: &str) -> bool {
    message.contains("statement timeout") || message.contains("lock timeout")
}

/// `terminating connection due to administrator command` and its siblings.
fn is_connection_loss(message: &str) -> bool {
    message.starts_with("terminating connection") || message.contains("connection closed")
}

/// Classifies a failure to get a pooled connection.
pub(crate) fn map_pool(error: PoolError) -> RepositoryError {
    match error {
        PoolError::Timeout(kind) => RepositoryError::Timeout(format!(
            "no database connection available in time ({kind:?} timeout)"
        )),
        PoolError::Backend(ManagerError::ConnectionError(e)) => {
            RepositoryError::Unavailable(format!("could not connect: {e}"))
        }
        PoolError::Backend(ManagerError::QueryError(e)) => {
            RepositoryError::Unavailable(format!("pooled connection failed its check: {e}"))
        }
        PoolError::Closed => RepositoryError::Unavailable("the connection pool is closed".into()),
        PoolError::NoRuntimeSpecified => {
            RepositoryError::Unavailable("the connection pool has no runtime".into())
        }
        PoolError::PostCreateHook(e) => {
            RepositoryError::Unavailable(format!("connection setup failed: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Info(&'static str, Option<&'static str>);

    impl DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            self.0
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            self.1
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn db(kind: DatabaseErrorKind, message: &'static str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(Info(message, Some("c"))))
    }

    #[test]
    fn constraint_violations_map_to_conflict_and_not_found() {
        assert_eq!(
            map_diesel(db(DatabaseErrorKind::UniqueViolation, "duplicate key")),
            RepositoryError::Conflict("duplicate key (constraint c)".into())
        );
        assert!(matches!(
            map_diesel(db(DatabaseErrorKind::ForeignKeyViolation, "fk")),
            RepositoryError::NotFound(_)
        ));
        assert!(matches!(
            map_diesel(db(DatabaseErrorKind::CheckViolation, "check")),
            RepositoryError::Query(_)
        ));
    }

    #[test]
    fn timeouts_and_lost_connections_are_recognised() {
        assert!(matches!(
            map_diesel(db(
                DatabaseErrorKind::Unknown,
                "canceling statement due to statement timeout"
            )),
            RepositoryError::Timeout(_)
        ));
        assert!(matches!(
            map_diesel(db(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command"
            )),
            RepositoryError::Unavailable(_)
        ));
        assert!(matches!(
            map_diesel(db(
                DatabaseErrorKind::UnableToSendCommand,
                "connection closed"
            )),
            RepositoryError::Unavailable(_)
        ));
        assert!(matches!(
            map_diesel(db(DatabaseErrorKind::Unknown, "syntax error")),
            RepositoryError::Query(_)
        ));
    }

    #[test]
    fn decode_failures_are_corrupt_and_pool_timeouts_are_timeouts() {
        let decode = DieselError::DeserializationError("bad bytes".into());
        assert!(matches!(map_diesel(decode), RepositoryError::Corrupt(_)));
        assert!(matches!(
            map_pool(PoolError::Timeout(deadpool::managed::TimeoutType::Wait)),
            RepositoryError::Timeout(_)
        ));
        assert!(matches!(
            map_pool(PoolError::Closed),
            RepositoryError::Unavailable(_)
        ));
    }
}
