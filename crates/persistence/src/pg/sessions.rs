//! [`SessionRepository`] on PostgreSQL: sessions, and turns run under a
//! lease on the session row (claim, then a fenced commit or a release), so
//! no connection, transaction or row lock is held while the engine works.

use super::exchanges::insert_first_exchanges;
use super::models::{
    active_on, sql_limit, FailedTurnRow, HistoryRow, IdempotencyRow, NewFailedTurnRow,
    NewIdempotencyRow, NewMessageRow, NewSessionRow, NewVariableRow, SessionRow,
};
use super::turns::{ClaimTurn, ClaimedRow, CommitTurn};
use super::usage::{day_end, insert_first_usage, TotalsRow, CLAIM_TOTALS_SQL};
use super::{map_diesel, PgStore};
use crate::observe::observed;
use crate::schema::{failed_turns, idempotency_keys, messages, sessions, variables};
use crate::turn_check::{check_failure_lease, check_turn_record, lease_lost};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use heartrule_domain::{
    ClaimOutcome, DailyUsage, FailedTurn, RepositoryError, Session, SessionId, SessionRepository,
    TurnClaim, TurnContext, TurnLease, TurnRecord, UsageTotals, UsageWindows, LLM_RAW_OUTPUT,
};

/// Rows per multi-row INSERT; keeps every statement far below PostgreSQL's
/// 65 535 bind parameters.
const INSERT_CHUNK: usize = 1_000;

#[async_trait]
impl SessionRepository for PgStore {
    async fn create(&self, first_turn: &TurnRecord) -> Result<(), RepositoryError> {
        observed!("insert", "sessions", async {
            let session = &first_turn.session;
            check_turn_record(session.id, 0, first_turn)?;
            let row = NewSessionRow::new(session)?;
            let mut conn = self.acquire().await?;
            conn.begin().await?;
            let outcome = async {
                diesel::insert_into(sessions::table)
                    .values(&row)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| match map_diesel(e) {
                        RepositoryError::NotFound(_) => {
                            RepositoryError::NotFound(format!("script {}", session.script_id))
                        }
                        other => other,
                    })?;
                insert_turn_rows(&mut conn, first_turn).await
            }
            .await;
            conn.finish(outcome).await
        })
        .await
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, RepositoryError> {
        observed!("select", "sessions", async {
            let mut conn = self.acquire().await?;
            let row = sessions::table
                .find(id.as_uuid())
                .select(SessionRow::as_select())
                .first(&mut *conn)
                .await
                .optional()
                .map_err(map_diesel);
            conn.finish(row)
                .await?
                .map(SessionRow::into_domain)
                .transpose()
        })
        .await
    }

    async fn list_for_user(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Session>, RepositoryError> {
        observed!("select", "sessions", async {
            let mut conn = self.acquire().await?;
            let rows = sessions::table
                .filter(sessions::user_id.eq(user_id))
                .order((sessions::created_at.desc(), sessions::id.desc()))
                .limit(sql_limit(limit))
                .select(SessionRow::as_select())
                .load(&mut *conn)
                .await
                .map_err(map_diesel);
            let rows: Vec<SessionRow> = conn.finish(rows).await?;
            rows.into_iter().map(SessionRow::into_domain).collect()
        })
        .await
    }

    async fn claim_turn(&self, claim: &TurnClaim) -> Result<ClaimOutcome, RepositoryError> {
        observed!("claim_turn", "sessions", async {
            let session_id = claim.session_id.as_uuid();
            let claim_query = ClaimTurn::new(claim)?;
            let conn = self.acquire().await?;
            let outcome = async {
                // One round trip: the claim, the history and the idempotency
                // lookup are pipelined on the connection and run in this order.
                let claimed = claim_query.get_result::<ClaimedRow>(&mut &*conn);
                let history = messages::table
                    .filter(messages::session_id.eq(session_id))
                    .order(messages::seq.desc())
                    .limit(sql_limit(claim.history_window))
                    .select((
                        messages::role,
                        messages::content,
                        messages::action_id,
                        // NULL where the key is missing, whatever diesel's type says.
                        messages::metadata
                            .retrieve_as_object(LLM_RAW_OUTPUT)
                            .nullable(),
                    ))
                    .load::<HistoryRow>(&mut &*conn);
                let stored_response = async {
                    match &claim.idempotency_key {
                        Some(key) => {
                            let mut stored = idempotency_keys::table
                                .find((session_id, key))
                                .select(IdempotencyRow::as_select())
                                .into_boxed();
                            if let Some(owner) = &claim.owner {
                                stored = stored.filter(diesel::dsl::exists(
                                    sessions::table
                                        .find(session_id)
                                        .filter(sessions::user_id.eq(owner)),
                                ));
                            }
                            stored.first::<IdempotencyRow>(&mut &*conn).await.optional()
                        }
                        None => Ok(None),
                    }
                };
                let usage = async {
                    match &claim.usage {
                        Some(windows) => diesel::sql_query(CLAIM_TOTALS_SQL)
                            .bind::<SqlUuid, _>(session_id)
                            .bind::<Timestamptz, _>(windows.day_start)
                            .bind::<Timestamptz, _>(day_end(windows))
                            .bind::<Timestamptz, _>(windows.hour_start)
                            .get_result::<TotalsRow>(&mut &*conn)
                            .await
                            .map(Some),
                        None => Ok(None),
                    }
                };
                let (claimed, history, stored_response, usage) =
                    futures::join!(claimed, history, stored_response, usage);
                let claimed = claimed.optional().map_err(map_diesel)?;
                let stored_response = stored_response.map_err(map_diesel)?;
                let Some(claimed) = claimed else {
                    if let Some(row) = stored_response {
                        return Ok(ClaimOutcome::Replay(row.into_domain()));
                    }
                    // Not claimed: held by another turn, or no such session
                    // (for this owner).
                    let mut lease_query = sessions::table
                        .find(session_id)
                        .select(sessions::lease_expires_at)
                        .into_boxed();
                    if let Some(owner) = &claim.owner {
                        lease_query = lease_query.filter(sessions::user_id.eq(owner));
                    }
                    let lease: Option<Option<DateTime<Utc>>> = lease_query
                        .first(&mut &*conn)
                        .await
                        .optional()
                        .map_err(map_diesel)?;
                    return Ok(match lease {
                        Some(lease_expires_at) => ClaimOutcome::Busy { lease_expires_at },
                        None => ClaimOutcome::NotFound,
                    });
                };
                let mut history = history.map_err(map_diesel)?;
                history.reverse();
                let history = history
                    .into_iter()
                    .map(HistoryRow::into_domain)
                    .collect::<Result<Vec<_>, _>>()?;
                let usage = usage
                    .map_err(map_diesel)?
                    .map(TotalsRow::into_domain)
                    .transpose()?;
                let session = claimed.session.into_domain()?;
                Ok(ClaimOutcome::Claimed(Box::new(TurnContext {
                    lease: TurnLease::claimed(claim, &session, claimed.lease_expires_at),
                    session,
                    history,
                    usage,
                })))
            }
            .await;
            conn.finish(outcome).await
        })
        .await
    }

    async fn commit_turn(
        &self,
        lease: &TurnLease,
        record: &TurnRecord,
    ) -> Result<(), RepositoryError> {
        observed!("commit_turn", "sessions", async {
            // Checked before a connection is taken: a rejected record costs
            // no round trip and leaves the lease for the caller to release.
            check_turn_record(lease.session_id, lease.last_message_seq, record)?;
            let query = CommitTurn::new(lease, record)?;
            let mut conn = self.acquire().await?;
            // One statement: the fenced session update and the inserts that
            // depend on it, atomic without an explicit transaction.
            let applied = query.get_result(&mut *conn).await.map_err(map_diesel);
            let applied: i64 = conn.finish(applied).await?;
            if applied == 1 {
                Ok(())
            } else {
                Err(lease_lost(lease))
            }
        })
        .await
    }

    async fn release_turn<'a>(
        &self,
        lease: &TurnLease,
        failure: Option<&'a FailedTurn>,
    ) -> Result<(), RepositoryError> {
        observed!("release_turn", "sessions", async {
            let session_id = lease.session_id.as_uuid();
            let owned = sessions::table
                .find(session_id)
                .filter(sessions::lease_owner.eq(lease.turn_id.as_uuid()));
            let Some(failure) = failure else {
                let mut conn = self.acquire().await?;
                let released = diesel::update(owned)
                    .set((
                        sessions::lease_owner.eq(None::<uuid::Uuid>),
                        sessions::lease_expires_at.eq(None::<DateTime<Utc>>),
                    ))
                    .execute(&mut *conn)
                    .await
                    .map_err(map_diesel);
                conn.finish(released).await?;
                return Ok(());
            };
            check_failure_lease(lease, failure)?;
            let row = NewFailedTurnRow::new(failure)?;
            let mut conn = self.acquire().await?;
            conn.begin().await?;
            let outcome = async {
                diesel::insert_into(failed_turns::table)
                    .values(&row)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| match map_diesel(e) {
                        RepositoryError::NotFound(_) => {
                            RepositoryError::NotFound(format!("session {}", failure.session_id))
                        }
                        other => other,
                    })?;
                // Only the error marker, and only while the session is still
                // this turn's: the engine state stays as the last committed
                // turn left it, so the client can simply retry.
                diesel::update(owned)
                    .set((
                        sessions::last_error.eq(failure.error_code.as_str()),
                        sessions::updated_at.eq(failure.failed_at),
                        sessions::active_on.eq(active_on(failure.failed_at)),
                        sessions::lease_owner.eq(None::<uuid::Uuid>),
                        sessions::lease_expires_at.eq(None::<DateTime<Utc>>),
                    ))
                    .execute(&mut *conn)
                    .await
                    .map_err(map_diesel)?;
                Ok(())
            }
            .await;
            conn.finish(outcome).await
        })
        .await
    }

    async fn usage_totals(
        &self,
        user_id: &str,
        windows: &UsageWindows,
    ) -> Result<UsageTotals, RepositoryError> {
        self.read_usage_totals(user_id, windows).await
    }

    async fn user_daily_usage(
        &self,
        user_id: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DailyUsage>, RepositoryError> {
        self.read_user_daily_usage(user_id, from, to).await
    }
}

impl PgStore {
    /// The failed turns recorded for a session, oldest first (the user's
    /// words of each are kept there).
    pub async fn failed_turns(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<FailedTurn>, RepositoryError> {
        observed!("select", "failed_turns", async {
            let mut conn = self.acquire().await?;
            let rows = failed_turns::table
                .filter(failed_turns::session_id.eq(session_id.as_uuid()))
                .order((failed_turns::failed_at.asc(), failed_turns::id.asc()))
                .select(FailedTurnRow::as_select())
                .load(&mut *conn)
                .await
                .map_err(map_diesel);
            let rows: Vec<FailedTurnRow> = conn.finish(rows).await?;
            rows.into_iter().map(FailedTurnRow::into_domain).collect()
        })
        .await
    }
}

/// Messages, variable snapshots, the idempotency row, the token usage and
/// the LLM exchanges of a session's opening turn.
async fn insert_turn_rows(
    conn: &mut AsyncPgConnection,
    record: &TurnRecord,
) -> Result<(), RepositoryError> {
    let messages: Vec<NewMessageRow<'_>> = record.messages.iter().map(NewMessageRow::new).collect();
    for chunk in messages.chunks(INSERT_CHUNK) {
        diesel::insert_into(messages::table)
            .values(chunk)
            .execute(conn)
            .await
            .map_err(map_diesel)?;
    }
    let snapshots: Vec<NewVariableRow<'_>> =
        record.variables.iter().map(NewVariableRow::new).collect();
    for chunk in snapshots.chunks(INSERT_CHUNK) {
        diesel::insert_into(variables::table)
            .values(chunk)
            .execute(conn)
            .await
            .map_err(map_diesel)?;
    }
    if let Some(row) = NewIdempotencyRow::new(record) {
        diesel::insert_into(idempotency_keys::table)
            .values(&row)
            .execute(conn)
            .await
            .map_err(map_diesel)?;
    }
    insert_first_usage(conn, record).await?;
    insert_first_exchanges(conn, record).await
}
