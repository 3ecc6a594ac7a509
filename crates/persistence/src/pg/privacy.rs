//! [`UserDataStore`] on PostgreSQL: one user's sessions with every row that
//! belongs to them, read in one snapshot or deleted in one transaction.

use super::exchanges::ExchangeRow;
use super::models::{FailedTurnRow, MessageRow, SessionRow, VariableRow};
use super::retention::{delete_sessions_sql, DeletedSessionsRow};
use super::{map_diesel, PgStore};
use crate::observe::observed;
use crate::schema::{failed_turns, llm_exchanges, messages, sessions, variables};
use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use heartrule_domain::{
    ErasedCounts, ErasedUser, RepositoryError, SessionData, SessionId, UserData, UserDataStore,
};
use std::collections::HashMap;
use uuid::Uuid;

/// Every session of `$1` and every row that belongs to them. The sessions
/// are locked first, so a turn committing meanwhile either lands before (and
/// is deleted) or finds its session gone.
const USER_SESSIONS: &str = "SELECT id FROM sessions WHERE user_id = $1 FOR UPDATE";

/// Reads the user's sessions and their rows; runs inside the export's
/// snapshot transaction.
async fn read_user(
    conn: &mut AsyncPgConnection,
    user_id: &str,
) -> Result<UserData, RepositoryError> {
    let session_rows: Vec<SessionRow> = sessions::table
        .filter(sessions::user_id.eq(user_id))
        .order((sessions::created_at.asc(), sessions::id.asc()))
        .select(SessionRow::as_select())
        .load(conn)
        .await
        .map_err(map_diesel)?;
    let ids: Vec<Uuid> = session_rows.iter().map(SessionRow::id).collect();
    let message_rows: Vec<MessageRow> = messages::table
        .filter(messages::session_id.eq_any(&ids))
        .order((messages::session_id.asc(), messages::seq.asc()))
        .select(MessageRow::as_select())
        .load(conn)
        .await
        .map_err(map_diesel)?;
    let variable_rows: Vec<VariableRow> = variables::table
        .filter(variables::session_id.eq_any(&ids))
        .order(variables::id.asc())
        .select(VariableRow::as_select())
        .load(conn)
        .await
        .map_err(map_diesel)?;
    let failed_rows: Vec<FailedTurnRow> = failed_turns::table
        .filter(failed_turns::session_id.eq_any(&ids))
        .order((failed_turns::failed_at.asc(), failed_turns::id.asc()))
        .select(FailedTurnRow::as_select())
        .load(conn)
        .await
        .map_err(map_diesel)?;
    let exchange_rows: Vec<(Uuid, ExchangeRow)> = llm_exchanges::table
        .filter(llm_exchanges::session_id.eq_any(&ids))
        .order((
            llm_exchanges::session_id.asc(),
            llm_exchanges::turn_number.asc(),
            llm_exchanges::call_index.asc(),
        ))
        .select((llm_exchanges::session_id, ExchangeRow::as_select()))
        .load(conn)
        .await
        .map_err(map_diesel)?;

    let mut sessions = Vec::with_capacity(session_rows.len());
    let mut index: HashMap<SessionId, usize> = HashMap::new();
    for row in session_rows {
        let session = row.into_domain()?;
        index.insert(session.id, sessions.len());
        sessions.push(SessionData {
            session,
            messages: Vec::new(),
            variable_history: Vec::new(),
            failed_turns: Vec::new(),
            llm_exchanges: Vec::new(),
        });
    }
    let slot = |id: SessionId| {
        index.get(&id).copied().ok_or_else(|| {
            RepositoryError::Corrupt(format!("a row of session {id} has no session"))
        })
    };
    for row in message_rows {
        let message = row.into_domain()?;
        let at = slot(message.session_id)?;
        sessions[at].messages.push(message);
    }
    for row in variable_rows {
        let snapshot = row.into_domain()?;
        let at = slot(snapshot.session_id)?;
        sessions[at].variable_history.push(snapshot);
    }
    for row in failed_rows {
        let failed = row.into_domain()?;
        let at = slot(failed.session_id)?;
        sessions[at].failed_turns.push(failed);
    }
    for (session_id, row) in exchange_rows {
        let at = slot(session_id.into())?;
        sessions[at].llm_exchanges.push(row.into_domain()?);
    }
    Ok(UserData {
        user_id: user_id.to_owned(),
        sessions,
    })
}

#[async_trait]
impl UserDataStore for PgStore {
    async fn export_user(&self, user_id: &str) -> Result<UserData, RepositoryError> {
        observed!("export", "sessions", async {
            let mut conn = self.acquire().await?;
            let outcome = async {
                conn.begin().await?;
                // One snapshot for the five reads, so a turn committing
                // meanwhile is either wholly in the export or not at all.
                conn.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await
                    .map_err(map_diesel)?;
                read_user(&mut conn, user_id).await
            }
            .await;
            conn.finish(outcome).await
        })
        .await
    }

    async fn erase_user(&self, user_id: &str) -> Result<ErasedUser, RepositoryError> {
        observed!("erase", "sessions", async {
            let mut conn = self.acquire().await?;
            let outcome = async {
                conn.begin().await?;
                diesel::sql_query(delete_sessions_sql(USER_SESSIONS))
                    .bind::<Text, _>(user_id)
                    .get_result::<DeletedSessionsRow>(&mut *conn)
                    .await
                    .map_err(map_diesel)
            }
            .await;
            let deleted = conn.finish(outcome).await?.into_domain();
            Ok(ErasedUser {
                counts: ErasedCounts {
                    sessions: deleted.sessions.len() as u64,
                    messages: deleted.messages,
                    variable_snapshots: deleted.variable_snapshots,
                    idempotency_keys: deleted.idempotency_keys,
                    failed_turns: deleted.failed_turns,
                    cache_keys: 0,
                },
                sessions: deleted.sessions,
            })
        })
        .await
    }
}
