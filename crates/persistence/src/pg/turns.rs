//! The two statements of a turn: the lease claim and the fenced commit.
//! diesel's query builder has no `WITH` (nor `UPDATE … WHERE NOT EXISTS`
//! over another table), so both are written as SQL with typed binds.

use super::exchanges::ExchangeColumns;
use super::models::{SessionRow, SessionTurnUpdate};
use super::usage::usage_binds;
use crate::turn_check::lease_length;
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{
    Array, BigInt, Date, Double, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::{QueryResult, QueryableByName};
use heartrule_domain::quota::hour_start;
use heartrule_domain::{ActionType, RepositoryError, TurnClaim, TurnLease, TurnRecord};
use serde_json::Value;
use uuid::Uuid;

/// The session columns a claim returns, in `SessionRow`'s order.
const SESSION_COLUMNS: &str = "id, user_id, script_id, script_hash, status, execution_status, \
     position, variables, engine_state, turn_count, last_message_seq, last_error, created_at, \
     updated_at, completed_at";

/// A claimed session row and its lease's expiry.
#[derive(QueryableByName)]
pub(crate) struct ClaimedRow {
    #[diesel(embed)]
    pub(crate) session: SessionRow,
    #[diesel(sql_type = Timestamptz)]
    pub(crate) lease_expires_at: DateTime<Utc>,
}

/// `UPDATE sessions SET lease … RETURNING …`: takes the lease when it is
/// free or lapsed and no committed turn answered the request's
/// `Idempotency-Key`, and, for a claim with an owner, when the session is
/// that user's; returns no row otherwise. The database's clock times
/// the lease, so instances with skewed clocks agree on it.
#[derive(Debug)]
pub(crate) struct ClaimTurn<'a> {
    session_id: Uuid,
    turn_id: Uuid,
    lease_seconds: f64,
    idempotency_key: Option<&'a str>,
    owner: Option<&'a str>,
}

impl<'a> ClaimTurn<'a> {
    pub(crate) fn new(claim: &'a TurnClaim) -> Result<Self, RepositoryError> {
        // Validates the length the same way the in-memory store does.
        lease_length(claim.lease_duration)?;
        Ok(Self {
            session_id: claim.session_id.as_uuid(),
            turn_id: claim.turn_id.as_uuid(),
            lease_seconds: claim.lease_duration.as_secs_f64(),
            idempotency_key: claim.idempotency_key.as_deref(),
            owner: claim.owner.as_deref(),
        })
    }
}

/// Not a static query id: the statement is cached by its SQL text.
impl QueryId for ClaimTurn<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for ClaimTurn<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for ClaimTurn<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE sessions SET lease_owner = ");
        out.push_bind_param::<SqlUuid, _>(&self.turn_id)?;
        out.push_sql(", lease_expires_at = now() + make_interval(secs => ");
        out.push_bind_param::<Double, _>(&self.lease_seconds)?;
        out.push_sql(") WHERE id = ");
        out.push_bind_param::<SqlUuid, _>(&self.session_id)?;
        out.push_sql(" AND (lease_owner IS NULL OR lease_expires_at <= now())");
        if let Some(owner) = self.owner {
            out.push_sql(" AND user_id = ");
            out.push_bind_param::<Text, _>(owner)?;
        }
        if let Some(key) = &self.idempotency_key {
            out.push_sql(" AND NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.session_id = ");
            out.push_bind_param::<SqlUuid, _>(&self.session_id)?;
            out.push_sql(" AND k.idem_key = ");
            out.push_bind_param::<Text, _>(key)?;
            out.push_sql(")");
        }
        out.push_sql(" RETURNING ");
        out.push_sql(SESSION_COLUMNS);
        out.push_sql(", lease_expires_at");
        Ok(())
    }
}

/// One statement that writes a whole turn, fenced on its lease:
///
/// ```sql
/// WITH fence AS (UPDATE sessions SET … , lease_owner = NULL
///                WHERE id = $session AND lease_owner = $turn AND turn_count = $read
///                RETURNING id),
///      m AS (INSERT INTO messages … SELECT … FROM fence, unnest(…)),
///      v AS (INSERT INTO variables … SELECT … FROM fence, unnest(…) WITH ORDINALITY …),
///      k AS (INSERT INTO idempotency_keys … SELECT … FROM fence),
///      u AS (INSERT INTO token_usage … SELECT … FROM fence ON CONFLICT … DO UPDATE …),
///      x AS (INSERT INTO llm_exchanges … SELECT … FROM fence, unnest(…))
/// SELECT count(*) FROM fence
/// ```
///
/// Every insert reads `fence`, so when the fence fails nothing is written
/// and the statement answers 0. A single statement is atomic on its own:
/// one round trip, no transaction to hold open.
pub(crate) struct CommitTurn<'a> {
    session_id: Uuid,
    lease_owner: Uuid,
    read_turn_count: i64,
    update: SessionTurnUpdate<'a>,
    messages: MessageColumns<'a>,
    variables: VariableColumns<'a>,
    idempotency: Option<IdempotencyColumns<'a>>,
    /// The turn's tokens `(prompt, completion, total, calls)` and their UTC
    /// hour, when it made LLM calls.
    usage: Option<([i64; 4], DateTime<Utc>)>,
    /// The turn's recorded LLM exchanges.
    exchanges: ExchangeColumns<'a>,
}

/// The turn's messages, one array per column, for `unnest`.
#[derive(Default)]
struct MessageColumns<'a> {
    id: Vec<Uuid>,
    seq: Vec<i64>,
    turn_id: Vec<Uuid>,
    role: Vec<&'static str>,
    content: Vec<&'a str>,
    action_id: Vec<Option<&'a str>>,
    action_type: Vec<Option<&'static str>>,
    metadata: Vec<&'a Value>,
    created_at: Vec<DateTime<Utc>>,
}

/// The turn's variable snapshots, one array per column, for `unnest`.
#[derive(Default)]
struct VariableColumns<'a> {
    turn_id: Vec<Uuid>,
    name: Vec<&'a str>,
    scope: Vec<&'static str>,
    scope_key: Vec<Option<&'a str>>,
    value: Vec<&'a Value>,
    value_type: Vec<&'static str>,
    source: Vec<&'a str>,
    created_at: Vec<DateTime<Utc>>,
}

struct IdempotencyColumns<'a> {
    key: &'a str,
    request_hash: &'a str,
    response: &'a Value,
    created_at: DateTime<Utc>,
}

impl<'a> CommitTurn<'a> {
    pub(crate) fn new(lease: &TurnLease, record: &'a TurnRecord) -> Result<Self, RepositoryError> {
        let mut messages = MessageColumns::default();
        for m in &record.messages {
            messages.id.push(m.id.as_uuid());
            messages.seq.push(m.seq);
            messages.turn_id.push(m.turn_id.as_uuid());
            messages.role.push(m.role.as_str());
            messages.content.push(&m.content);
            messages.action_id.push(m.action_id.as_deref());
            messages
                .action_type
                .push(m.action_type.map(ActionType::as_str));
            messages.metadata.push(&m.metadata);
            messages.created_at.push(m.created_at);
        }
        let mut variables = VariableColumns::default();
        for v in &record.variables {
            variables.turn_id.push(v.turn_id.as_uuid());
            variables.name.push(&v.name);
            variables.scope.push(v.scope.as_str());
            variables.scope_key.push(v.scope_key.as_deref());
            variables.value.push(&v.value);
            variables.value_type.push(v.value_type.as_str());
            variables.source.push(&v.source);
            variables.created_at.push(v.created_at);
        }
        let read_turn_count = i64::try_from(lease.turn_count).map_err(|_| {
            RepositoryError::Query(format!("turn_count {} is out of range", lease.turn_count))
        })?;
        Ok(Self {
            session_id: lease.session_id.as_uuid(),
            lease_owner: lease.turn_id.as_uuid(),
            read_turn_count,
            update: SessionTurnUpdate::new(&record.session)?,
            messages,
            variables,
            idempotency: record.idempotency.as_ref().map(|idem| IdempotencyColumns {
                key: &idem.key,
                request_hash: &idem.request_hash,
                response: &idem.response,
                created_at: record.session.updated_at,
            }),
            usage: if record.usage.is_empty() {
                None
            } else {
                Some((
                    usage_binds(&record.usage)?,
                    hour_start(record.session.updated_at),
                ))
            },
            exchanges: ExchangeColumns::new(record)?,
        })
    }
}

/// Not a static query id: the statement is cached by its SQL text (one per
/// combination of messages, variables and idempotency key present).
impl QueryId for CommitTurn<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for CommitTurn<'_> {
    type SqlType = BigInt;
}

impl QueryFragment<Pg> for CommitTurn<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let u = &self.update;
        out.push_sql("WITH fence AS (UPDATE sessions SET script_hash = ");
        out.push_bind_param::<Text, _>(&u.script_hash)?;
        out.push_sql(", status = ");
        out.push_bind_param::<Text, _>(&u.status)?;
        out.push_sql(", execution_status = ");
        out.push_bind_param::<Text, _>(&u.execution_status)?;
        out.push_sql(", position = ");
        out.push_bind_param::<Jsonb, _>(&u.position)?;
        out.push_sql(", variables = ");
        out.push_bind_param::<Jsonb, _>(&u.variables)?;
        out.push_sql(", engine_state = ");
        out.push_bind_param::<Jsonb, _>(&u.engine_state)?;
        out.push_sql(", turn_count = ");
        out.push_bind_param::<BigInt, _>(&u.turn_count)?;
        out.push_sql(", last_message_seq = ");
        out.push_bind_param::<BigInt, _>(&u.last_message_seq)?;
        out.push_sql(", last_error = NULL, updated_at = ");
        out.push_bind_param::<Timestamptz, _>(&u.updated_at)?;
        out.push_sql(", completed_at = ");
        out.push_bind_param::<Nullable<Timestamptz>, _>(&u.completed_at)?;
        out.push_sql(", active_on = ");
        out.push_bind_param::<Date, _>(&u.active_on)?;
        out.push_sql(", lease_owner = NULL, lease_expires_at = NULL WHERE id = ");
        out.push_bind_param::<SqlUuid, _>(&self.session_id)?;
        out.push_sql(" AND lease_owner = ");
        out.push_bind_param::<SqlUuid, _>(&self.lease_owner)?;
        out.push_sql(" AND turn_count = ");
        out.push_bind_param::<BigInt, _>(&self.read_turn_count)?;
        out.push_sql(" RETURNING id, user_id)");

        if !self.messages.id.is_empty() {
            let m = &self.messages;
            out.push_sql(
                ", new_messages AS (INSERT INTO messages (id, session_id, seq, turn_id, role, \
                 content, action_id, action_type, metadata, created_at) SELECT r.id, fence.id, \
                 r.seq, r.turn_id, r.role, r.content, r.action_id, r.action_type, r.metadata, \
                 r.created_at FROM fence, unnest(",
            );
            out.push_bind_param::<Array<SqlUuid>, _>(&m.id)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<BigInt>, _>(&m.seq)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<SqlUuid>, _>(&m.turn_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&m.role)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&m.content)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(&m.action_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(&m.action_type)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Jsonb>, _>(&m.metadata)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Timestamptz>, _>(&m.created_at)?;
            out.push_sql(
                ") AS r(id, seq, turn_id, role, content, action_id, action_type, metadata, \
                 created_at))",
            );
        }

        if !self.variables.name.is_empty() {
            let v = &self.variables;
            // WITH ORDINALITY keeps the snapshots in the turn's order: their
            // identity ids are that order.
            out.push_sql(
                ", new_variables AS (INSERT INTO variables (session_id, turn_id, variable_name, \
                 scope, scope_key, value, value_type, source, created_at) SELECT fence.id, \
                 r.turn_id, r.name, r.scope, r.scope_key, r.value, r.value_type, r.source, \
                 r.created_at FROM fence, unnest(",
            );
            out.push_bind_param::<Array<SqlUuid>, _>(&v.turn_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&v.name)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&v.scope)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(&v.scope_key)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Jsonb>, _>(&v.value)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&v.value_type)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&v.source)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Timestamptz>, _>(&v.created_at)?;
            out.push_sql(
                ") WITH ORDINALITY AS r(turn_id, name, scope, scope_key, value, value_type, \
                 source, created_at, n) ORDER BY r.n)",
            );
        }

        if let Some(idem) = &self.idempotency {
            out.push_sql(
                ", new_key AS (INSERT INTO idempotency_keys (session_id, idem_key, \
                 request_hash, response, created_at) SELECT fence.id, ",
            );
            out.push_bind_param::<Text, _>(&idem.key)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&idem.request_hash)?;
            out.push_sql(", ");
            out.push_bind_param::<Jsonb, _>(idem.response)?;
            out.push_sql(", ");
            out.push_bind_param::<Timestamptz, _>(&idem.created_at)?;
            out.push_sql(" FROM fence)");
        }
        if let Some(([prompt, completion, total, calls], hour)) = &self.usage {
            // Only this turn's lease holder writes the session's rows, so
            // the upsert never waits on another turn.
            out.push_sql(
                ", new_usage AS (INSERT INTO token_usage (session_id, hour, user_id, \
                 prompt_tokens, completion_tokens, total_tokens, llm_calls) SELECT fence.id, ",
            );
            out.push_bind_param::<Timestamptz, _>(hour)?;
            out.push_sql(", fence.user_id, ");
            out.push_bind_param::<BigInt, _>(prompt)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(completion)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(total)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(calls)?;
            out.push_sql(
                " FROM fence ON CONFLICT (session_id, hour) DO UPDATE SET \
                 prompt_tokens = token_usage.prompt_tokens + EXCLUDED.prompt_tokens, \
                 completion_tokens = token_usage.completion_tokens + EXCLUDED.completion_tokens, \
                 total_tokens = token_usage.total_tokens + EXCLUDED.total_tokens, \
                 llm_calls = token_usage.llm_calls + EXCLUDED.llm_calls)",
            );
        }
        if !self.exchanges.is_empty() {
            let x = &self.exchanges;
            out.push_sql(
                ", new_exchanges AS (INSERT INTO llm_exchanges (session_id, turn_number, \
                 call_index, turn_id, action_id, purpose, prompt_hash, prompt, response, \
                 created_at) SELECT fence.id, r.turn_number, r.call_index, r.turn_id, \
                 r.action_id, r.purpose, r.prompt_hash, r.prompt, r.response, r.created_at \
                 FROM fence, unnest(",
            );
            out.push_bind_param::<Array<BigInt>, _>(&x.turn_number)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Integer>, _>(&x.call_index)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<SqlUuid>, _>(&x.turn_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&x.action_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&x.purpose)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&x.prompt_hash)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(&x.prompt)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&x.response)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Timestamptz>, _>(&x.created_at)?;
            out.push_sql(
                ") AS r(turn_number, call_index, turn_id, action_id, purpose, prompt_hash, \
                 prompt, response, created_at))",
            );
        }
        out.push_sql(" SELECT count(*) FROM fence");
        Ok(())
    }
}
