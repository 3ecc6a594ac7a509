//! The `llm_exchanges` rows of committed turns (kept for replays): their
//! columns for the commit statement, the opening turn's insert, and the
//! read back as domain values.

use super::map_diesel;
use crate::schema::llm_exchanges;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use heartrule_domain::{LlmExchange, RepositoryError, TurnRecord};
use uuid::Uuid;

/// Rows per multi-row INSERT of the opening turn; far below PostgreSQL's
/// 65 535 bind parameters.
const INSERT_CHUNK: usize = 1_000;

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = llm_exchanges, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ExchangeRow {
    turn_number: i64,
    call_index: i32,
    turn_id: Uuid,
    action_id: String,
    purpose: String,
    prompt_hash: String,
    prompt: Option<String>,
    response: String,
    created_at: DateTime<Utc>,
}

impl ExchangeRow {
    pub(crate) fn into_domain(self) -> Result<LlmExchange, RepositoryError> {
        let corrupt = |column: &str, value: i64| {
            RepositoryError::Corrupt(format!("llm_exchanges.{column}: {value} is out of range"))
        };
        Ok(LlmExchange {
            turn_id: self.turn_id.into(),
            turn_number: u64::try_from(self.turn_number)
                .map_err(|_| corrupt("turn_number", self.turn_number))?,
            call_index: u32::try_from(self.call_index)
                .map_err(|_| corrupt("call_index", self.call_index.into()))?,
            action_id: self.action_id,
            purpose: self.purpose,
            prompt_hash: self.prompt_hash,
            prompt: self.prompt,
            response: self.response,
            created_at: self.created_at,
        })
    }
}

/// The numbers of an exchange as stored.
fn numbers(exchange: &LlmExchange) -> Result<(i64, i32), RepositoryError> {
    let turn_number = i64::try_from(exchange.turn_number).map_err(|_| {
        RepositoryError::Query(format!(
            "turn number {} is out of range",
            exchange.turn_number
        ))
    })?;
    let call_index = i32::try_from(exchange.call_index).map_err(|_| {
        RepositoryError::Query(format!(
            "call index {} is out of range",
            exchange.call_index
        ))
    })?;
    Ok((turn_number, call_index))
}

#[derive(Debug, Insertable)]
#[diesel(table_name = llm_exchanges)]
struct NewExchangeRow<'a> {
    session_id: Uuid,
    turn_number: i64,
    call_index: i32,
    turn_id: Uuid,
    action_id: &'a str,
    purpose: &'a str,
    prompt_hash: &'a str,
    prompt: Option<&'a str>,
    response: &'a str,
    created_at: DateTime<Utc>,
}

/// A turn's exchanges, one array per column, for `unnest` in the commit
/// statement.
#[derive(Default)]
pub(crate) struct ExchangeColumns<'a> {
    pub(crate) turn_number: Vec<i64>,
    pub(crate) call_index: Vec<i32>,
    pub(crate) turn_id: Vec<Uuid>,
    pub(crate) action_id: Vec<&'a str>,
    pub(crate) purpose: Vec<&'a str>,
    pub(crate) prompt_hash: Vec<&'a str>,
    pub(crate) prompt: Vec<Option<&'a str>>,
    pub(crate) response: Vec<&'a str>,
    pub(crate) created_at: Vec<DateTime<Utc>>,
}

impl<'a> ExchangeColumns<'a> {
    pub(crate) fn new(record: &'a TurnRecord) -> Result<Self, RepositoryError> {
        let mut columns = Self::default();
        for e in &record.llm_exchanges {
            let (turn_number, call_index) = numbers(e)?;
            columns.turn_number.push(turn_number);
            columns.call_index.push(call_index);
            columns.turn_id.push(e.turn_id.as_uuid());
            columns.action_id.push(&e.action_id);
            columns.purpose.push(&e.purpose);
            columns.prompt_hash.push(&e.prompt_hash);
            columns.prompt.push(e.prompt.as_deref());
            columns.response.push(&e.response);
            columns.created_at.push(e.created_at);
        }
        Ok(columns)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.turn_number.is_empty()
    }
}

/// The opening turn's exchanges (inside the new session's transaction).
pub(crate) async fn insert_first_exchanges(
    conn: &mut AsyncPgConnection,
    record: &TurnRecord,
) -> Result<(), RepositoryError> {
    let session_id = record.session.id.as_uuid();
    let rows = record
        .llm_exchanges
        .iter()
        .map(|e| {
            let (turn_number, call_index) = numbers(e)?;
            Ok(NewExchangeRow {
                session_id,
                turn_number,
                call_index,
                turn_id: e.turn_id.as_uuid(),
                action_id: &e.action_id,
                purpose: &e.purpose,
                prompt_hash: &e.prompt_hash,
                prompt: e.prompt.as_deref(),
                response: &e.response,
                created_at: e.created_at,
            })
        })
        .collect::<Result<Vec<_>, RepositoryError>>()?;
    for chunk in rows.chunks(INSERT_CHUNK) {
        diesel::insert_into(llm_exchanges::table)
            .values(chunk)
            .execute(conn)
            .await
            .map_err(map_diesel)?;
    }
    Ok(())
}
