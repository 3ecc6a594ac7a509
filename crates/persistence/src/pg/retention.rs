//! [`RetentionStore`] on PostgreSQL: batched deletes for the retention
//! cleanup.
//!
//! Each batch is one statement (so one short implicit transaction) that
//! picks at most `limit` rows with `FOR UPDATE SKIP LOCKED` and deletes
//! them: rows a running turn has locked are skipped rather than waited for,
//! and the locks taken last only as long as the statement. Ages are measured
//! with the database's `now()`, the clock that also times turn leases.

use super::models::sql_limit;
use super::{map_diesel, PgStore};
use crate::observe::observed;
use async_trait::async_trait;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use heartrule_domain::{
    PurgedSessions, RepositoryError, RetentionAges, RetentionCounts, RetentionStore, SessionId,
};
use std::time::Duration;
use uuid::Uuid;

/// Sessions idle longer than `$1` seconds. A lease counts as activity: a
/// live one (`lease_expires_at > now()`) is a turn in progress, and one that
/// lapsed within the retention is a recent turn that crashed or overran, whose
/// owner may still try to record its failure. Either way the session stays.
///
/// `active_on` (indexed, the UTC day of the last change) narrows the
/// candidates without a table scan; `updated_at` decides. A row written by
/// an older version has no or an older `active_on`, never a newer one, so
/// the narrowing never hides an idle session.
const INACTIVE_SESSIONS: &str = "SELECT id FROM sessions \
     WHERE (active_on IS NULL \
            OR active_on <= ((now() - make_interval(secs => $1)) AT TIME ZONE 'UTC')::date) \
       AND updated_at < now() - make_interval(secs => $1) \
       AND (lease_expires_at IS NULL OR lease_expires_at < now() - make_interval(secs => $1))";

/// Deletes the sessions `doomed` selects (a `SELECT id FROM sessions …` with
/// its own filter, batch and locking clause) and every row of theirs, in one
/// statement, and counts what went. The children are deleted by the
/// statement itself (not left to `ON DELETE CASCADE`) so their counts can be
/// reported. The retention cleanup and the erasure of a user share it.
pub(super) fn delete_sessions_sql(doomed: &str) -> String {
    format!(
        "WITH doomed AS ({doomed}), \
         m AS (DELETE FROM messages WHERE session_id IN (SELECT id FROM doomed) RETURNING 1), \
         v AS (DELETE FROM variables WHERE session_id IN (SELECT id FROM doomed) RETURNING 1), \
         k AS (DELETE FROM idempotency_keys WHERE session_id IN (SELECT id FROM doomed) RETURNING 1), \
         f AS (DELETE FROM failed_turns WHERE session_id IN (SELECT id FROM doomed) RETURNING 1), \
         s AS (DELETE FROM sessions WHERE id IN (SELECT id FROM doomed) RETURNING id) \
         SELECT (SELECT array_agg(id) FROM s) AS sessions, \
                (SELECT count(*) FROM m) AS messages, \
                (SELECT count(*) FROM v) AS variable_snapshots, \
                (SELECT count(*) FROM k) AS idempotency_keys, \
                (SELECT count(*) FROM f) AS failed_turns"
    )
}

/// One batch of idle sessions and their rows.
fn purge_sessions_sql() -> String {
    delete_sessions_sql(&format!(
        "{INACTIVE_SESSIONS} ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    ))
}

const PURGE_IDEMPOTENCY_KEYS: &str = "DELETE FROM idempotency_keys \
     WHERE (session_id, idem_key) IN ( \
       SELECT session_id, idem_key FROM idempotency_keys \
       WHERE created_at < now() - make_interval(secs => $1) \
       LIMIT $2 FOR UPDATE SKIP LOCKED)";

const PURGE_FAILED_TURNS: &str = "DELETE FROM failed_turns \
     WHERE id IN ( \
       SELECT id FROM failed_turns \
       WHERE failed_at < now() - make_interval(secs => $1) \
       LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// What [`purge_sessions_sql`] and the two purges after it would delete:
/// keys and failed turns count once whether they go with their session or
/// for their own age.
fn count_expired_sql() -> String {
    format!(
        "WITH doomed AS ({INACTIVE_SESSIONS}) \
         SELECT (SELECT count(*) FROM doomed) AS sessions, \
                (SELECT count(*) FROM messages WHERE session_id IN (SELECT id FROM doomed)) AS messages, \
                (SELECT count(*) FROM variables WHERE session_id IN (SELECT id FROM doomed)) AS variable_snapshots, \
                (SELECT count(*) FROM idempotency_keys WHERE session_id IN (SELECT id FROM doomed) \
                    OR created_at < now() - make_interval(secs => $2)) AS idempotency_keys, \
                (SELECT count(*) FROM failed_turns WHERE session_id IN (SELECT id FROM doomed) \
                    OR failed_at < now() - make_interval(secs => $3)) AS failed_turns"
    )
}

/// What [`delete_sessions_sql`] returns.
#[derive(QueryableByName)]
pub(super) struct DeletedSessionsRow {
    #[diesel(sql_type = Nullable<Array<SqlUuid>>)]
    sessions: Option<Vec<Uuid>>,
    #[diesel(sql_type = BigInt)]
    messages: i64,
    #[diesel(sql_type = BigInt)]
    variable_snapshots: i64,
    #[diesel(sql_type = BigInt)]
    idempotency_keys: i64,
    #[diesel(sql_type = BigInt)]
    failed_turns: i64,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    sessions: i64,
    #[diesel(sql_type = BigInt)]
    messages: i64,
    #[diesel(sql_type = BigInt)]
    variable_snapshots: i64,
    #[diesel(sql_type = BigInt)]
    idempotency_keys: i64,
    #[diesel(sql_type = BigInt)]
    failed_turns: i64,
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// `count(*)` is never negative; the conversion only guards the type.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl DeletedSessionsRow {
    /// The deleted sessions and the counts of their rows.
    pub(super) fn into_domain(self) -> PurgedSessions {
        PurgedSessions {
            sessions: self
                .sessions
                .unwrap_or_default()
                .into_iter()
                .map(SessionId)
                .collect(),
            messages: count(self.messages),
            variable_snapshots: count(self.variable_snapshots),
            idempotency_keys: count(self.idempotency_keys),
            failed_turns: count(self.failed_turns),
        }
    }
}

/// A batch size of 0 would purge nothing forever; the caller validates it,
/// this keeps the adapter honest on its own.
fn batch_limit(limit: usize) -> Result<i64, RepositoryError> {
    if limit == 0 {
        return Err(RepositoryError::Query(
            "a purge batch must allow at least one row".into(),
        ));
    }
    Ok(sql_limit(limit))
}

impl PgStore {
    /// One batch of `purge` (a `DELETE` of rows older than `$1` seconds,
    /// at most `$2` of them); how many rows went.
    async fn purge_older_than(
        &self,
        purge: &str,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64, RepositoryError> {
        let limit = batch_limit(limit)?;
        let mut conn = self.acquire().await?;
        let deleted = diesel::sql_query(purge)
            .bind::<Double, _>(older_than.as_secs_f64())
            .bind::<BigInt, _>(limit)
            .execute(&mut *conn)
            .await
            .map_err(map_diesel);
        let deleted = conn.finish(deleted).await?;
        Ok(deleted as u64)
    }
}

#[async_trait]
impl RetentionStore for PgStore {
    async fn purge_inactive_sessions(
        &self,
        inactive_for: Duration,
        limit: usize,
    ) -> Result<PurgedSessions, RepositoryError> {
        observed!("purge", "sessions", async {
            let limit = batch_limit(limit)?;
            let mut conn = self.acquire().await?;
            let row = diesel::sql_query(purge_sessions_sql())
                .bind::<Double, _>(inactive_for.as_secs_f64())
                .bind::<BigInt, _>(limit)
                .get_result(&mut *conn)
                .await
                .map_err(map_diesel);
            let row: DeletedSessionsRow = conn.finish(row).await?;
            Ok(row.into_domain())
        })
        .await
    }

    async fn purge_idempotency_keys(
        &self,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64, RepositoryError> {
        observed!("purge", "idempotency_keys", async {
            self.purge_older_than(PURGE_IDEMPOTENCY_KEYS, older_than, limit)
                .await
        })
        .await
    }

    async fn purge_failed_turns(
        &self,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64, RepositoryError> {
        observed!("purge", "failed_turns", async {
            self.purge_older_than(PURGE_FAILED_TURNS, older_than, limit)
                .await
        })
        .await
    }

    async fn count_expired(
        &self,
        ages: &RetentionAges,
    ) -> Result<RetentionCounts, RepositoryError> {
        observed!("count", "sessions", async {
            let mut conn = self.acquire().await?;
            let row = diesel::sql_query(count_expired_sql())
                .bind::<Double, _>(ages.sessions.as_secs_f64())
                .bind::<Double, _>(ages.idempotency_keys.as_secs_f64())
                .bind::<Double, _>(ages.failed_turns.as_secs_f64())
                .get_result(&mut *conn)
                .await
                .map_err(map_diesel);
            let row: CountRow = conn.finish(row).await?;
            Ok(RetentionCounts {
                sessions: count(row.sessions),
                messages: count(row.messages),
                variable_snapshots: count(row.variable_snapshots),
                idempotency_keys: count(row.idempotency_keys),
                failed_turns: count(row.failed_turns),
                cache_keys: 0,
            })
        })
        .await
    }

    async fn existing_sessions(
        &self,
        ids: &[SessionId],
    ) -> Result<Vec<SessionId>, RepositoryError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        observed!("select", "sessions", async {
            let uuids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
            let mut conn = self.acquire().await?;
            let rows = diesel::sql_query("SELECT id FROM sessions WHERE id = ANY($1)")
                .bind::<Array<SqlUuid>, _>(&uuids)
                .load(&mut *conn)
                .await
                .map_err(map_diesel);
            let rows: Vec<IdRow> = conn.finish(rows).await?;
            Ok(rows.into_iter().map(|row| SessionId(row.id)).collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_purge_is_bounded_and_skips_locked_rows() {
        for sql in [
            purge_sessions_sql(),
            PURGE_IDEMPOTENCY_KEYS.to_owned(),
            PURGE_FAILED_TURNS.to_owned(),
        ] {
            assert!(sql.contains("LIMIT $2 FOR UPDATE SKIP LOCKED"), "{sql}");
        }
        // A lease newer than the retention (live ones included) keeps its
        // session, in the purge and in the dry run.
        assert!(INACTIVE_SESSIONS
            .contains("lease_expires_at IS NULL OR lease_expires_at < now() - make_interval"));
        assert!(count_expired_sql().contains(INACTIVE_SESSIONS));
    }

    #[test]
    fn a_zero_batch_is_refused() {
        assert!(batch_limit(0).is_err());
        assert_eq!(batch_limit(500).ok(), Some(500));
    }
}
