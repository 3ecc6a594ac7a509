//! [`SessionRepository`] and its unit of work [`SessionTurn`] on PostgreSQL.

use super::models::{
    sql_limit, FailedTurnRow, IdempotencyRow, MessageRow, NewFailedTurnRow, NewIdempotencyRow,
    NewMessageRow, NewSessionRow, NewVariableRow, SessionRow, SessionTurnUpdate,
};
use super::{abort, begin, finish, map_diesel, PgStore, PooledConnection};
use crate::observe::observed;
use crate::schema::{failed_turns, idempotency_keys, messages, sessions, variables};
use crate::turn_check::check_turn_record;
use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use heartrule_domain::{
    FailedTurn, IdempotentResponse, Message, RepositoryError, Session, SessionId,
    SessionRepository, SessionTurn, TurnRecord,
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
            begin(&mut conn).await?;
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
            finish(conn, outcome).await
        })
        .await
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, RepositoryError> {
        observed!("select", "sessions", async {
            let mut conn = self.acquire().await?;
            sessions::table
                .find(id.as_uuid())
                .select(SessionRow::as_select())
                .first(&mut conn)
                .await
                .optional()
                .map_err(map_diesel)?
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
            let rows: Vec<SessionRow> = sessions::table
                .filter(sessions::user_id.eq(user_id))
                .order((sessions::created_at.desc(), sessions::id.desc()))
                .limit(sql_limit(limit))
                .select(SessionRow::as_select())
                .load(&mut conn)
                .await
                .map_err(map_diesel)?;
            rows.into_iter().map(SessionRow::into_domain).collect()
        })
        .await
    }

    async fn begin_turn(
        &self,
        id: SessionId,
    ) -> Result<Option<Box<dyn SessionTurn>>, RepositoryError> {
        observed!("select_for_update", "sessions", async {
            let mut conn = self.acquire().await?;
            begin(&mut conn).await?;
            let locked = sessions::table
                .find(id.as_uuid())
                .select(SessionRow::as_select())
                .for_update()
                .first(&mut *conn)
                .await
                .optional()
                .map_err(map_diesel)
                .and_then(|row| row.map(SessionRow::into_domain).transpose());
            match locked {
                Ok(Some(session)) => Ok(Some(Box::new(PgSessionTurn {
                    conn: Some(conn),
                    session,
                }) as Box<dyn SessionTurn>)),
                Ok(None) => finish(conn, Ok(None)).await,
                Err(e) => finish(conn, Err(e)).await,
            }
        })
        .await
    }

    async fn record_failure(&self, failure: &FailedTurn) -> Result<(), RepositoryError> {
        observed!("insert", "failed_turns", async {
            let row = NewFailedTurnRow::new(failure)?;
            let mut conn = self.acquire().await?;
            begin(&mut conn).await?;
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
                // Only the error marker: the engine state stays as the last
                // committed turn left it, so the client can simply retry.
                diesel::update(sessions::table.find(failure.session_id.as_uuid()))
                    .set((
                        sessions::last_error.eq(failure.error_code.as_str()),
                        sessions::updated_at.eq(failure.failed_at),
                    ))
                    .execute(&mut *conn)
                    .await
                    .map_err(map_diesel)?;
                Ok(())
            }
            .await;
            finish(conn, outcome).await
        })
        .await
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
            let rows: Vec<FailedTurnRow> = failed_turns::table
                .filter(failed_turns::session_id.eq(session_id.as_uuid()))
                .order((failed_turns::failed_at.asc(), failed_turns::id.asc()))
                .select(FailedTurnRow::as_select())
                .load(&mut conn)
                .await
                .map_err(map_diesel)?;
            rows.into_iter().map(FailedTurnRow::into_domain).collect()
        })
        .await
    }
}

/// Messages, variable snapshots and the idempotency row of a turn.
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
    Ok(())
}

/// An open turn: owns a pooled connection inside a transaction that holds
/// the session row's `FOR UPDATE` lock.
struct PgSessionTurn {
    /// `None` once committed or rolled back.
    conn: Option<PooledConnection>,
    session: Session,
}

impl PgSessionTurn {
    fn connection(&mut self) -> Result<&mut PooledConnection, RepositoryError> {
        self.conn.as_mut().ok_or_else(|| {
            RepositoryError::Query("the turn was already committed or rolled back".into())
        })
    }
}

#[async_trait]
impl SessionTurn for PgSessionTurn {
    fn session(&self) -> &Session {
        &self.session
    }

    async fn recent_messages(&mut self, limit: usize) -> Result<Vec<Message>, RepositoryError> {
        observed!("select", "messages", async {
            let session_id = self.session.id.as_uuid();
            let conn = self.connection()?;
            // Only the newest `limit` rows, read backwards along the
            // (session_id, seq) index, never the whole conversation.
            let mut rows: Vec<MessageRow> = messages::table
                .filter(messages::session_id.eq(session_id))
                .order(messages::seq.desc())
                .limit(sql_limit(limit))
                .select(MessageRow::as_select())
                .load(&mut **conn)
                .await
                .map_err(map_diesel)?;
            rows.reverse();
            rows.into_iter().map(MessageRow::into_domain).collect()
        })
        .await
    }

    async fn idempotent_response(
        &mut self,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, RepositoryError> {
        observed!("select", "idempotency_keys", async {
            let session_id = self.session.id.as_uuid();
            let conn = self.connection()?;
            let row: Option<IdempotencyRow> = idempotency_keys::table
                .find((session_id, key))
                .select(IdempotencyRow::as_select())
                .first(&mut **conn)
                .await
                .optional()
                .map_err(map_diesel)?;
            Ok(row.map(IdempotencyRow::into_domain))
        })
        .await
    }

    async fn commit(&mut self, record: &TurnRecord) -> Result<(), RepositoryError> {
        observed!("commit_turn", "sessions", async {
            // Checked before the connection is taken: a rejected record
            // leaves the turn open for the caller to roll back.
            check_turn_record(self.session.id, self.session.last_message_seq, record)?;
            let update = SessionTurnUpdate::new(&record.session)?;
            let mut conn = self.conn.take().ok_or_else(|| {
                RepositoryError::Query("the turn was already committed or rolled back".into())
            })?;
            let session_id = self.session.id;
            let outcome = async {
                insert_turn_rows(&mut conn, record).await?;
                let updated = diesel::update(sessions::table.find(session_id.as_uuid()))
                    .set(&update)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_diesel)?;
                if updated == 1 {
                    Ok(())
                } else {
                    Err(RepositoryError::NotFound(format!("session {session_id}")))
                }
            }
            .await;
            finish(conn, outcome).await?;
            let locked = &self.session;
            self.session = Session {
                id: locked.id,
                user_id: locked.user_id.clone(),
                script_id: locked.script_id,
                created_at: locked.created_at,
                last_error: None,
                ..record.session.clone()
            };
            Ok(())
        })
        .await
    }

    async fn rollback(&mut self) -> Result<(), RepositoryError> {
        observed!("rollback", "sessions", async {
            let Some(conn) = self.conn.take() else {
                return Ok(());
            };
            if abort(conn).await {
                Ok(())
            } else {
                Err(RepositoryError::Unavailable(
                    "rollback failed; the connection was closed, so PostgreSQL discards the turn"
                        .into(),
                ))
            }
        })
        .await
    }
}

impl Drop for PgSessionTurn {
    /// A turn dropped while open (a replayed idempotent request, a panic, a
    /// cancelled request) is rolled back off the caller's path; without a
    /// runtime to do that, the connection is closed instead. Either way it
    /// never goes back to the pool inside the transaction.
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    abort(conn).await;
                });
            }
            Err(_) => drop(Object::take(conn)),
        }
    }
}
