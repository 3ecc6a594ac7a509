//! Scripts, sessions and turns for the storage tests.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use heartrule_domain::{
    content_hash, Action, ActionKind, ActionType, ClaimOutcome, EngineState, ErrorCode,
    ExecutionStatus, FailedTurn, IdempotentResponse, LlmExchange, Message, MessageId, MessageRole,
    Phase, Position, SayConfig, Script, ScriptDocument, ScriptId, ScriptStatus, ScriptType,
    Session, SessionId, SessionRepository, SessionScript, SessionStatus, TechniqueScript, Topic,
    TurnClaim, TurnContext, TurnId, TurnRecord, TurnUsage, ValueType, VariableScope,
    VariableSnapshot, VariableStore, VariableValue, LLM_RAW_OUTPUT,
};
use serde_json::{json, Value};

/// Now, at the microsecond precision both stores keep.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn say(action_id: &str, content: &str) -> Action {
    Action {
        action_id: action_id.into(),
        condition: None,
        kind: ActionKind::Say(SayConfig {
            content: content.into(),
            tone: None,
            max_rounds: None,
            exit_criteria: None,
            require_acknowledgment: false,
            ai_role: None,
        }),
    }
}

fn topic(topic_id: &str) -> Topic {
    Topic {
        topic_id: topic_id.into(),
        topic_name: None,
        topic_goal: None,
        description: None,
        strategy: None,
        actions: vec![say("greet", "Welcome. How are you today?")],
    }
}

fn script(name: &str, document: ScriptDocument, created_at: DateTime<Utc>) -> Script {
    let content = format!("# {name}\n");
    Script {
        id: ScriptId::new_random(),
        name: name.into(),
        script_type: document.script_type(),
        status: ScriptStatus::Draft,
        content_hash: content_hash(&content),
        content,
        document,
        current_version: 1,
        version: "1.0.0".into(),
        author: "tests".into(),
        description: format!("{name} for storage tests"),
        tags: vec!["test".into()],
        created_at,
        updated_at: created_at,
    }
}

pub fn session_script(name: &str) -> Script {
    session_script_at(name, now())
}

pub fn session_script_at(name: &str, created_at: DateTime<Utc>) -> Script {
    let document = ScriptDocument::Session(SessionScript {
        session_id: name.into(),
        session_name: Some(name.into()),
        description: None,
        version: None,
        template_scheme: None,
        safety: None,
        phases: vec![Phase {
            phase_id: "opening".into(),
            phase_name: None,
            phase_goal: None,
            description: None,
            topics: vec![topic("welcome")],
        }],
    });
    script(name, document, created_at)
}

pub fn technique_script(name: &str, technique_id: &str) -> Script {
    let document = ScriptDocument::Technique(TechniqueScript {
        technique_id: technique_id.into(),
        name: Some(name.into()),
        input_parameters: vec![],
        output_variables: vec![],
        topic: topic("practice"),
    });
    let mut script = script(name, document, now());
    assert_eq!(script.script_type, ScriptType::Technique);
    script.status = ScriptStatus::Published;
    script
}

/// A session that has not run yet.
pub fn new_session(script_id: ScriptId, user_id: &str) -> Session {
    new_session_at(script_id, user_id, now())
}

pub fn new_session_at(script_id: ScriptId, user_id: &str, created_at: DateTime<Utc>) -> Session {
    let mut variables = VariableStore::default();
    variables.set(
        "name",
        VariableScope::Session,
        None,
        VariableValue::new(json!("Ada"), "initial", VariableScope::Session, created_at),
    );
    Session {
        id: SessionId::new_random(),
        user_id: user_id.into(),
        script_id,
        script_hash: "hash-v1".into(),
        status: SessionStatus::Active,
        state: EngineState::initial(variables),
        turn_count: 0,
        last_message_seq: 0,
        last_error: None,
        created_at,
        updated_at: created_at,
        completed_at: None,
    }
}

fn message(
    session: &Session,
    turn_id: TurnId,
    seq: i64,
    role: MessageRole,
    content: &str,
) -> Message {
    Message {
        id: MessageId::new_random(),
        session_id: session.id,
        seq,
        turn_id,
        role,
        content: content.into(),
        action_id: (role == MessageRole::Assistant).then(|| "greet".to_owned()),
        action_type: (role == MessageRole::Assistant).then_some(ActionType::AiSay),
        metadata: if role == MessageRole::Assistant {
            // More than the raw reply, as the engine stores: the history
            // a turn reads must carry only the raw reply.
            json!({LLM_RAW_OUTPUT: content, "actionType": "ai_say", "currentRound": 1})
        } else {
            Value::Null
        },
        created_at: session.updated_at,
    }
}

/// The first turn of `session`: one greeting, waiting for input.
pub fn first_turn(mut session: Session) -> TurnRecord {
    let turn_id = TurnId::new_random();
    session.state.status = ExecutionStatus::WaitingInput;
    session.turn_count = 1;
    session.last_message_seq = 1;
    let greeting = message(&session, turn_id, 1, MessageRole::Assistant, "Welcome.");
    TurnRecord {
        turn_id,
        messages: vec![greeting],
        variables: vec![],
        idempotency: None,
        session,
        usage: TurnUsage::default(),
        llm_exchanges: Vec::new(),
    }
}

/// A session whose first turn produced no message.
pub fn silent_first_turn(session: Session) -> TurnRecord {
    TurnRecord {
        turn_id: TurnId::new_random(),
        session,
        messages: vec![],
        variables: vec![],
        idempotency: None,
        usage: TurnUsage::default(),
        llm_exchanges: Vec::new(),
    }
}

/// The turn after `session`: the user's words, `ai_replies` answers, one
/// variable written, the counter in the engine metadata incremented.
pub fn next_turn(session: &Session, user_text: &str, ai_replies: &[&str]) -> TurnRecord {
    let turn_id = TurnId::new_random();
    let mut next = session.clone();
    next.updated_at = next.updated_at.max(now()) + Duration::microseconds(1);
    let mut seq = next.last_message_seq;
    let mut messages = Vec::new();
    seq += 1;
    messages.push(message(&next, turn_id, seq, MessageRole::User, user_text));
    for reply in ai_replies {
        seq += 1;
        messages.push(message(&next, turn_id, seq, MessageRole::Assistant, reply));
    }
    let counter = counter(session) + 1;
    next.state.metadata.insert("counter".into(), json!(counter));
    next.state.position.action_index += 1;
    let value = json!({"said": user_text, "turn": counter});
    next.state.variables.set(
        "last_answer",
        VariableScope::Topic,
        Some("welcome"),
        VariableValue::new(
            value.clone(),
            "greet",
            VariableScope::Topic,
            next.updated_at,
        ),
    );
    next.turn_count += 1;
    next.last_message_seq = seq;
    next.last_error = None;
    TurnRecord {
        turn_id,
        variables: vec![VariableSnapshot {
            session_id: next.id,
            turn_id,
            name: "last_answer".into(),
            scope: VariableScope::Topic,
            scope_key: Some("welcome".into()),
            value_type: ValueType::of(&value),
            value,
            source: "greet".into(),
            created_at: next.updated_at,
        }],
        messages,
        idempotency: None,
        session: next,
        usage: TurnUsage::default(),
        llm_exchanges: Vec::new(),
    }
}

/// The same turn, sent with an `Idempotency-Key`.
pub fn with_idempotency(mut record: TurnRecord, key: &str) -> TurnRecord {
    record.idempotency = Some(IdempotentResponse {
        key: key.into(),
        request_hash: format!("hash-of-{key}"),
        response: json!({"turnId": record.turn_id, "messages": record.messages.len()}),
    });
    record
}

/// The same turn, having used `prompt` and `completion` tokens in `calls`
/// LLM calls.
pub fn with_usage(mut record: TurnRecord, prompt: u64, completion: u64, calls: u64) -> TurnRecord {
    record.usage = TurnUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        llm_calls: calls,
    };
    record
}

/// The same turn, having recorded one LLM exchange per text of
/// `responses` (prompt hashes `hash-<turn>-<index>`; the prompt text kept
/// when `with_prompts`).
pub fn with_exchanges(
    mut record: TurnRecord,
    responses: &[&str],
    with_prompts: bool,
) -> TurnRecord {
    let turn_number = record.session.turn_count;
    record.llm_exchanges = responses
        .iter()
        .zip(0u32..)
        .map(|(response, call_index)| LlmExchange {
            turn_id: record.turn_id,
            turn_number,
            call_index,
            action_id: "greet".into(),
            purpose: "ai_say".into(),
            prompt_hash: format!("hash-{turn_number}-{call_index}"),
            prompt: with_prompts.then(|| format!("prompt {turn_number}.{call_index}")),
            response: (*response).to_owned(),
            created_at: record.session.updated_at,
        })
        .collect();
    record
}

/// The counter the concurrency tests increment (0 when unset).
pub fn counter(session: &Session) -> i64 {
    session
        .state
        .metadata
        .get("counter")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub fn failure(session: &Session, user_input: &str) -> FailedTurn {
    FailedTurn {
        turn_id: TurnId::new_random(),
        session_id: session.id,
        user_input: Some(user_input.into()),
        error_code: ErrorCode::LlmServiceError,
        error_message: "LLM service error: provider timed out".into(),
        position: Position {
            action_id: Some("greet".into()),
            ..session.state.position.clone()
        },
        failed_at: session.updated_at + Duration::seconds(1),
    }
}

/// A claim on `session_id` with a one-minute lease and `history_window`
/// messages of history.
pub fn turn_claim(session_id: SessionId, history_window: usize) -> TurnClaim {
    TurnClaim {
        session_id,
        turn_id: TurnId::new_random(),
        lease_duration: std::time::Duration::from_secs(60),
        history_window,
        idempotency_key: None,
        owner: None,
        usage: None,
    }
}

/// Claims the session, which must exist and be free.
pub async fn claim<S: SessionRepository + ?Sized>(store: &S, session_id: SessionId) -> TurnContext {
    claim_with(store, &turn_claim(session_id, 20)).await
}

/// Makes `claim`, which must succeed.
pub async fn claim_with<S: SessionRepository + ?Sized>(
    store: &S,
    claim: &TurnClaim,
) -> TurnContext {
    match store.claim_turn(claim).await.unwrap() {
        ClaimOutcome::Claimed(context) => *context,
        other => panic!("expected the claim to succeed, got {other:?}"),
    }
}
