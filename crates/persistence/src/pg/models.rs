//! Row types of the PostgreSQL schema and their conversions to and from the
//! domain. Enum columns are text: decoding an unknown spelling, or JSON of
//! the wrong shape, is [`RepositoryError::Corrupt`], never a panic.

use crate::schema::{failed_turns, idempotency_keys, messages, scripts, sessions, variables};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Jsonb;
use heartrule_domain::{
    ActionType, EngineState, ErrorCode, ExecutionStatus, FailedTurn, HistoryEntry,
    IdempotentResponse, Message, MessageRole, Position, RepositoryError, Script, ScriptStatus,
    ScriptType, Session, SessionStatus, TurnRecord, ValueType, VariableScope, VariableSnapshot,
    VariableStore,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Display;
use std::io::Write;
use uuid::Uuid;

pub(crate) fn corrupt(table: &str, column: &str, detail: impl Display) -> RepositoryError {
    RepositoryError::Corrupt(format!("{table}.{column}: {detail}"))
}

fn known<T>(
    parsed: Option<T>,
    table: &str,
    column: &str,
    text: &str,
) -> Result<T, RepositoryError> {
    parsed.ok_or_else(|| corrupt(table, column, format_args!("unknown value `{text}`")))
}

pub(crate) fn from_json<T: DeserializeOwned>(
    value: Value,
    table: &str,
    column: &str,
) -> Result<T, RepositoryError> {
    serde_json::from_value(value).map_err(|e| corrupt(table, column, e))
}

pub(crate) fn to_json<T: Serialize + ?Sized>(
    value: &T,
    what: &str,
) -> Result<Value, RepositoryError> {
    serde_json::to_value(value)
        .map_err(|e| RepositoryError::Query(format!("could not encode {what} as JSON: {e}")))
}

fn count_to_db(value: u64, what: &str) -> Result<i64, RepositoryError> {
    i64::try_from(value)
        .map_err(|_| RepositoryError::Query(format!("{what} {value} is out of range")))
}

/// A row limit for SQL; `usize` beyond `i64` means "no limit" in practice.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------- scripts

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = scripts, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ScriptRow {
    id: Uuid,
    script_name: String,
    script_type: String,
    status: String,
    script_content: String,
    content_hash: String,
    parsed_content: Value,
    version: String,
    author: String,
    description: String,
    tags: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    current_version: Option<i32>,
}

impl ScriptRow {
    pub(crate) fn id(&self) -> Uuid {
        self.id
    }

    pub(crate) fn into_domain(self) -> Result<Script, RepositoryError> {
        const T: &str = "scripts";
        Ok(Script {
            id: self.id.into(),
            script_type: known(
                ScriptType::parse(&self.script_type),
                T,
                "script_type",
                &self.script_type,
            )?,
            status: known(ScriptStatus::parse(&self.status), T, "status", &self.status)?,
            name: self.script_name,
            content: self.script_content,
            content_hash: self.content_hash,
            document: from_json(self.parsed_content, T, "parsed_content")?,
            current_version: version_from_db(self.current_version, T, "current_version")?,
            version: self.version,
            author: self.author,
            description: self.description,
            tags: from_json(self.tags, T, "tags")?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A version number as stored: a positive `integer`, never NULL once
/// written (the migration backfills it and a trigger keeps it set).
pub(crate) fn version_from_db(
    number: Option<i32>,
    table: &str,
    column: &str,
) -> Result<u32, RepositoryError> {
    number
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            corrupt(
                table,
                column,
                format_args!("not a version number: {number:?}"),
            )
        })
}

pub(crate) fn version_to_db(number: u32) -> Result<i32, RepositoryError> {
    i32::try_from(number)
        .map_err(|_| RepositoryError::Query(format!("version number {number} is out of range")))
}

/// The columns of a script that are not its content, for the metadata UPDATE.
#[derive(Debug, AsChangeset)]
#[diesel(table_name = scripts, treat_none_as_null = true)]
pub(crate) struct ScriptMetadataWrite<'a> {
    script_name: &'a str,
    status: &'static str,
    version: &'a str,
    author: &'a str,
    description: &'a str,
    tags: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<'a> ScriptMetadataWrite<'a> {
    pub(crate) fn new(script: &'a Script) -> Result<Self, RepositoryError> {
        Ok(Self {
            script_name: &script.name,
            status: script.status.as_str(),
            version: &script.version,
            author: &script.author,
            description: &script.description,
            tags: to_json(&script.tags, "the script tags")?,
            created_at: script.created_at,
            updated_at: script.updated_at,
        })
    }
}

/// Every column of a script, for INSERT and for the full-row UPDATE.
#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = scripts, treat_none_as_null = true)]
pub(crate) struct ScriptWrite<'a> {
    id: Uuid,
    script_name: &'a str,
    script_type: &'static str,
    status: &'static str,
    script_content: &'a str,
    content_hash: &'a str,
    parsed_content: Value,
    technique_id: Option<&'a str>,
    version: &'a str,
    author: &'a str,
    description: &'a str,
    tags: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    current_version: Option<i32>,
}

impl<'a> ScriptWrite<'a> {
    pub(crate) fn new(script: &'a Script) -> Result<Self, RepositoryError> {
        Ok(Self {
            id: script.id.as_uuid(),
            script_name: &script.name,
            script_type: script.script_type.as_str(),
            status: script.status.as_str(),
            script_content: &script.content,
            content_hash: &script.content_hash,
            parsed_content: to_json(&script.document, "the script document")?,
            technique_id: script.technique_id(),
            version: &script.version,
            author: &script.author,
            description: &script.description,
            tags: to_json(&script.tags, "the script tags")?,
            created_at: script.created_at,
            updated_at: script.updated_at,
            current_version: Some(version_to_db(script.current_version)?),
        })
    }
}

// ---------------------------------------------------------------- sessions

#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
pub(crate) struct SessionRow {
    id: Uuid,
    user_id: String,
    script_id: Uuid,
    script_hash: String,
    status: String,
    execution_status: String,
    position: RawJson,
    variables: RawJson,
    engine_state: RawJson,
    turn_count: i64,
    last_message_seq: i64,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl SessionRow {
    pub(crate) fn id(&self) -> Uuid {
        self.id
    }

    pub(crate) fn into_domain(self) -> Result<Session, RepositoryError> {
        const T: &str = "sessions";
        let status = known(
            SessionStatus::parse(&self.status),
            T,
            "status",
            &self.status,
        )?;
        let execution_status = known(
            ExecutionStatus::parse(&self.execution_status),
            T,
            "execution_status",
            &self.execution_status,
        )?;
        // The split-out columns are authoritative (see `EncodedState`): the
        // state's JSON is spliced back together from the column texts and
        // decoded once, straight into the typed state.
        let Some(rest) = self
            .engine_state
            .0
            .trim()
            .strip_prefix('{')
            .and_then(|inner| inner.strip_suffix('}'))
        else {
            return Err(corrupt(T, "engine_state", "not a JSON object"));
        };
        let rest = rest.trim();
        let mut text =
            String::with_capacity(64 + self.position.0.len() + self.variables.0.len() + rest.len());
        text.push_str("{\"status\":\"");
        text.push_str(execution_status.as_str());
        text.push_str("\",\"position\":");
        text.push_str(&self.position.0);
        text.push_str(",\"variables\":");
        text.push_str(&self.variables.0);
        if !rest.is_empty() {
            text.push(',');
            text.push_str(rest);
        }
        text.push('}');
        let state: EngineState =
            serde_json::from_str(&text).map_err(|e| corrupt(T, "engine_state", e))?;
        Ok(Session {
            id: self.id.into(),
            user_id: self.user_id,
            script_id: self.script_id.into(),
            script_hash: self.script_hash,
            status,
            state,
            turn_count: u64::try_from(self.turn_count)
                .map_err(|_| corrupt(T, "turn_count", self.turn_count))?,
            last_message_seq: self.last_message_seq,
            last_error: self.last_error,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
        })
    }
}

/// An [`EngineState`] split over the session columns: `execution_status`,
/// `position` and `variables` are stored once in their own (queryable)
/// columns and `engine_state` keeps the rest, so large variable values are
/// never written twice.
struct EncodedState {
    execution_status: &'static str,
    position: RawJson,
    variables: RawJson,
    rest: Value,
}

impl EncodedState {
    fn new(state: &EngineState) -> Result<Self, RepositoryError> {
        // The split-out parts are encoded straight to text; only the small
        // rest goes through a JSON tree. Listing every field (no `..`) makes
        // a new EngineState field a compile error here, not a silent loss.
        let rest_only = EngineState {
            version: state.version,
            status: state.status,
            position: Position::default(),
            variables: VariableStore::default(),
            pending_action: state.pending_action.clone(),
            template_scheme: state.template_scheme.clone(),
            skill_frames: state.skill_frames.clone(),
            metadata: state.metadata.clone(),
            safety: state.safety.clone(),
        };
        let mut rest = match to_json(&rest_only, "the engine state")? {
            Value::Object(map) => map,
            other => {
                return Err(RepositoryError::Query(format!(
                    "the engine state encoded as {other}, not an object"
                )))
            }
        };
        rest.remove("status");
        rest.remove("position");
        rest.remove("variables");
        Ok(Self {
            execution_status: state.status.as_str(),
            position: RawJson::encode(&state.position, "the position")?,
            variables: RawJson::encode(&state.variables, "the variables")?,
            rest: Value::Object(rest),
        })
    }
}

/// The text of a JSONB value, read or written without a `serde_json::Value`
/// tree: decoding goes straight from the text into the typed value.
#[derive(Debug, Clone, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Jsonb)]
pub(crate) struct RawJson(pub(crate) String);

impl RawJson {
    fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Self, RepositoryError> {
        serde_json::to_string(value)
            .map(Self)
            .map_err(|e| RepositoryError::Query(format!("could not encode {what} as JSON: {e}")))
    }
}

/// PostgreSQL's binary JSONB is a version byte (1) and the JSON text.
const JSONB_VERSION: u8 = 1;

impl FromSql<Jsonb, Pg> for RawJson {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        match value.as_bytes().split_first() {
            Some((&JSONB_VERSION, text)) => Ok(Self(std::str::from_utf8(text)?.to_owned())),
            _ => Err("unsupported binary JSONB format version".into()),
        }
    }
}

impl ToSql<Jsonb, Pg> for RawJson {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(&[JSONB_VERSION])?;
        out.write_all(self.0.as_bytes())?;
        Ok(IsNull::No)
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = sessions)]
pub(crate) struct NewSessionRow<'a> {
    id: Uuid,
    user_id: &'a str,
    script_id: Uuid,
    script_hash: &'a str,
    status: &'static str,
    execution_status: &'static str,
    position: RawJson,
    variables: RawJson,
    engine_state: Value,
    turn_count: i64,
    last_message_seq: i64,
    last_error: Option<&'a str>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    active_on: NaiveDate,
}

impl<'a> NewSessionRow<'a> {
    pub(crate) fn new(session: &'a Session) -> Result<Self, RepositoryError> {
        let state = EncodedState::new(&session.state)?;
        Ok(Self {
            id: session.id.as_uuid(),
            user_id: &session.user_id,
            script_id: session.script_id.as_uuid(),
            script_hash: &session.script_hash,
            status: session.status.as_str(),
            execution_status: state.execution_status,
            position: state.position,
            variables: state.variables,
            engine_state: state.rest,
            turn_count: count_to_db(session.turn_count, "turn_count")?,
            last_message_seq: session.last_message_seq,
            last_error: session.last_error.as_deref(),
            created_at: session.created_at,
            updated_at: session.updated_at,
            completed_at: session.completed_at,
            active_on: active_on(session.updated_at),
        })
    }
}

/// The `active_on` of a row last changed at `updated_at`: its UTC day.
pub(crate) fn active_on(updated_at: DateTime<Utc>) -> NaiveDate {
    updated_at.date_naive()
}

/// What a committed turn changes on the session row. `last_error` is always
/// cleared: a committed turn supersedes an earlier failure.
#[derive(Debug, AsChangeset)]
#[diesel(table_name = sessions, treat_none_as_null = true)]
pub(crate) struct SessionTurnUpdate<'a> {
    pub(crate) script_hash: &'a str,
    pub(crate) status: &'static str,
    pub(crate) execution_status: &'static str,
    pub(crate) position: RawJson,
    pub(crate) variables: RawJson,
    pub(crate) engine_state: Value,
    pub(crate) turn_count: i64,
    pub(crate) last_message_seq: i64,
    pub(crate) last_error: Option<&'a str>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
    pub(crate) active_on: NaiveDate,
}

impl<'a> SessionTurnUpdate<'a> {
    pub(crate) fn new(session: &'a Session) -> Result<Self, RepositoryError> {
        let state = EncodedState::new(&session.state)?;
        Ok(Self {
            script_hash: &session.script_hash,
            status: session.status.as_str(),
            execution_status: state.execution_status,
            position: state.position,
            variables: state.variables,
            engine_state: state.rest,
            turn_count: count_to_db(session.turn_count, "turn_count")?,
            last_message_seq: session.last_message_seq,
            last_error: None,
            updated_at: session.updated_at,
            completed_at: session.completed_at,
            active_on: active_on(session.updated_at),
        })
    }
}

// ---------------------------------------------------------------- messages

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = messages, check_for_backend(diesel::pg::Pg))]
pub(crate) struct MessageRow {
    id: Uuid,
    session_id: Uuid,
    seq: i64,
    turn_id: Uuid,
    role: String,
    content: String,
    action_id: Option<String>,
    action_type: Option<String>,
    metadata: Value,
    created_at: DateTime<Utc>,
}

impl MessageRow {
    pub(crate) fn into_domain(self) -> Result<Message, RepositoryError> {
        const T: &str = "messages";
        let action_type = match self.action_type {
            Some(text) => Some(known(ActionType::parse(&text), T, "action_type", &text)?),
            None => None,
        };
        Ok(Message {
            id: self.id.into(),
            session_id: self.session_id.into(),
            seq: self.seq,
            turn_id: self.turn_id.into(),
            role: known(MessageRole::parse(&self.role), T, "role", &self.role)?,
            content: self.content,
            action_id: self.action_id,
            action_type,
            metadata: self.metadata,
            created_at: self.created_at,
        })
    }
}

/// A message as a turn's history reads it: the columns the engine uses and,
/// of the metadata, only the raw LLM reply (selected with `->`), so the
/// rest of a stored message is neither sent nor decoded on every turn.
#[derive(Debug, Queryable)]
pub(crate) struct HistoryRow {
    role: String,
    content: String,
    action_id: Option<String>,
    llm_raw_output: Option<Value>,
}

impl HistoryRow {
    pub(crate) fn into_domain(self) -> Result<HistoryEntry, RepositoryError> {
        Ok(HistoryEntry {
            role: known(
                MessageRole::parse(&self.role),
                "messages",
                "role",
                &self.role,
            )?,
            content: self.content,
            action_id: self.action_id,
            llm_raw_output: self.llm_raw_output,
        })
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = messages)]
pub(crate) struct NewMessageRow<'a> {
    id: Uuid,
    session_id: Uuid,
    seq: i64,
    turn_id: Uuid,
    role: &'static str,
    content: &'a str,
    action_id: Option<&'a str>,
    action_type: Option<&'static str>,
    metadata: &'a Value,
    created_at: DateTime<Utc>,
}

impl<'a> NewMessageRow<'a> {
    pub(crate) fn new(message: &'a Message) -> Self {
        Self {
            id: message.id.as_uuid(),
            session_id: message.session_id.as_uuid(),
            seq: message.seq,
            turn_id: message.turn_id.as_uuid(),
            role: message.role.as_str(),
            content: &message.content,
            action_id: message.action_id.as_deref(),
            action_type: message.action_type.map(ActionType::as_str),
            metadata: &message.metadata,
            created_at: message.created_at,
        }
    }
}

// ---------------------------------------------------------------- variables

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = variables, check_for_backend(diesel::pg::Pg))]
pub(crate) struct VariableRow {
    session_id: Uuid,
    turn_id: Uuid,
    variable_name: String,
    scope: String,
    scope_key: Option<String>,
    value: Value,
    value_type: String,
    source: String,
    created_at: DateTime<Utc>,
}

impl VariableRow {
    pub(crate) fn into_domain(self) -> Result<VariableSnapshot, RepositoryError> {
        const T: &str = "variables";
        Ok(VariableSnapshot {
            session_id: self.session_id.into(),
            turn_id: self.turn_id.into(),
            name: self.variable_name,
            scope: known(VariableScope::parse(&self.scope), T, "scope", &self.scope)?,
            scope_key: self.scope_key,
            value: self.value,
            value_type: known(
                ValueType::parse(&self.value_type),
                T,
                "value_type",
                &self.value_type,
            )?,
            source: self.source,
            created_at: self.created_at,
        })
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = variables)]
pub(crate) struct NewVariableRow<'a> {
    session_id: Uuid,
    turn_id: Uuid,
    variable_name: &'a str,
    scope: &'static str,
    scope_key: Option<&'a str>,
    value: &'a Value,
    value_type: &'static str,
    source: &'a str,
    created_at: DateTime<Utc>,
}

impl<'a> NewVariableRow<'a> {
    pub(crate) fn new(snapshot: &'a VariableSnapshot) -> Self {
        Self {
            session_id: snapshot.session_id.as_uuid(),
            turn_id: snapshot.turn_id.as_uuid(),
            variable_name: &snapshot.name,
            scope: snapshot.scope.as_str(),
            scope_key: snapshot.scope_key.as_deref(),
            value: &snapshot.value,
            value_type: snapshot.value_type.as_str(),
            source: &snapshot.source,
            created_at: snapshot.created_at,
        }
    }
}

// ---------------------------------------------------------------- idempotency

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = idempotency_keys, check_for_backend(diesel::pg::Pg))]
pub(crate) struct IdempotencyRow {
    idem_key: String,
    request_hash: String,
    response: Value,
}

impl IdempotencyRow {
    pub(crate) fn into_domain(self) -> IdempotentResponse {
        IdempotentResponse {
            key: self.idem_key,
            request_hash: self.request_hash,
            response: self.response,
        }
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub(crate) struct NewIdempotencyRow<'a> {
    session_id: Uuid,
    idem_key: &'a str,
    request_hash: &'a str,
    response: &'a Value,
    created_at: DateTime<Utc>,
}

impl<'a> NewIdempotencyRow<'a> {
    /// The idempotency row of `record`, stamped with the turn's time.
    pub(crate) fn new(record: &'a TurnRecord) -> Option<Self> {
        record.idempotency.as_ref().map(|idem| Self {
            session_id: record.session.id.as_uuid(),
            idem_key: &idem.key,
            request_hash: &idem.request_hash,
            response: &idem.response,
            created_at: record.session.updated_at,
        })
    }
}

// ---------------------------------------------------------------- failed turns

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = failed_turns, check_for_backend(diesel::pg::Pg))]
pub(crate) struct FailedTurnRow {
    id: Uuid,
    session_id: Uuid,
    user_input: Option<String>,
    error_code: String,
    error_message: String,
    position: Value,
    failed_at: DateTime<Utc>,
}

impl FailedTurnRow {
    pub(crate) fn into_domain(self) -> Result<FailedTurn, RepositoryError> {
        const T: &str = "failed_turns";
        // ErrorCode has no parser; its serde spelling is its `as_str()`.
        let error_code: ErrorCode = serde_json::from_value(Value::String(self.error_code.clone()))
            .map_err(|_| {
                corrupt(
                    T,
                    "error_code",
                    format_args!("unknown value `{}`", self.error_code),
                )
            })?;
        Ok(FailedTurn {
            turn_id: self.id.into(),
            session_id: self.session_id.into(),
            user_input: self.user_input,
            error_code,
            error_message: self.error_message,
            position: from_json(self.position, T, "position")?,
            failed_at: self.failed_at,
        })
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = failed_turns)]
pub(crate) struct NewFailedTurnRow<'a> {
    id: Uuid,
    session_id: Uuid,
    user_input: Option<&'a str>,
    error_code: &'static str,
    error_message: &'a str,
    position: Value,
    failed_at: DateTime<Utc>,
}

impl<'a> NewFailedTurnRow<'a> {
    pub(crate) fn new(failure: &'a FailedTurn) -> Result<Self, RepositoryError> {
        Ok(Self {
            id: failure.turn_id.as_uuid(),
            session_id: failure.session_id.as_uuid(),
            user_input: failure.user_input.as_deref(),
            error_code: failure.error_code.as_str(),
            error_message: &failure.error_message,
            position: to_json(&failure.position, "the failure position")?,
            failed_at: failure.failed_at,
        })
    }
}

#[cfg(test)]
mod tests;
