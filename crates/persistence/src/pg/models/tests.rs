use super::*;
use heartrule_domain::{Position, ScriptId, SessionId, VariableStore, VariableValue};
use serde_json::json;

const MIGRATION_SQL: [&str; 8] = [
    include_str!("../../../../../migrations/2026-11-27-000001_create_scripts/up.sql"),
    include_str!("../../../../../migrations/2026-11-27-000002_create_sessions/up.sql"),
    include_str!("../../../../../migrations/2026-11-27-000003_create_messages/up.sql"),
    include_str!("../../../../../migrations/2026-11-27-000004_create_variables/up.sql"),
    include_str!("../../../../../migrations/2026-11-27-000005_create_idempotency_keys/up.sql"),
    include_str!("../../../../../migrations/2026-11-27-000006_create_failed_turns/up.sql"),
    include_str!("../../../../../migrations/2026-12-04-000001_session_turn_leases/up.sql"),
    include_str!("../../../../../migrations/2026-12-04-500001_safety_handoff/up.sql"),
];

/// The text of the CHECK constraint `name` as the newest migration that
/// defines it leaves it, up to the end of its clause.
fn check_clause(name: &str) -> &'static str {
    MIGRATION_SQL
        .iter()
        .rev()
        .find_map(|sql| {
            let needle = format!("CONSTRAINT {name}");
            // The last definition in the file (a DROP CONSTRAINT has no CHECK).
            let (start, _) = sql
                .rmatch_indices(&needle)
                .find(|(at, _)| sql[at + needle.len()..].trim_start().starts_with("CHECK"))?;
            let rest = &sql[start..];
            let end = rest.find("))").map_or(rest.len(), |i| i + 2);
            Some(&rest[..end])
        })
        .unwrap_or_else(|| panic!("no constraint {name} in the migrations"))
}

fn assert_allowed(constraint: &str, spellings: &[&str]) {
    let clause = check_clause(constraint);
    for spelling in spellings {
        assert!(
            clause.contains(&format!("'{spelling}'")),
            "{constraint} does not allow `{spelling}`: {clause}"
        );
    }
}

// Each list is checked by an exhaustive match: a new domain variant breaks
// the build here until the migration's CHECK constraint is extended too.

#[test]
fn check_constraints_allow_every_domain_enum_spelling() {
    let script_types = [
        ScriptType::Session,
        ScriptType::Technique,
        ScriptType::Awareness,
    ];
    for t in script_types {
        match t {
            ScriptType::Session | ScriptType::Technique | ScriptType::Awareness => {}
        }
    }
    assert_allowed(
        "scripts_script_type_check",
        &script_types.map(ScriptType::as_str),
    );

    let script_statuses = [
        ScriptStatus::Draft,
        ScriptStatus::Published,
        ScriptStatus::Archived,
    ];
    for s in script_statuses {
        match s {
            ScriptStatus::Draft | ScriptStatus::Published | ScriptStatus::Archived => {}
        }
    }
    assert_allowed(
        "scripts_status_check",
        &script_statuses.map(ScriptStatus::as_str),
    );

    let session_statuses = [
        SessionStatus::Active,
        SessionStatus::Paused,
        SessionStatus::Completed,
        SessionStatus::Failed,
        SessionStatus::Handoff,
    ];
    for s in session_statuses {
        match s {
            SessionStatus::Active
            | SessionStatus::Paused
            | SessionStatus::Completed
            | SessionStatus::Failed
            | SessionStatus::Handoff => {}
        }
    }
    assert_allowed(
        "sessions_status_check",
        &session_statuses.map(SessionStatus::as_str),
    );

    let execution_statuses = [
        ExecutionStatus::Running,
        ExecutionStatus::WaitingInput,
        ExecutionStatus::Paused,
        ExecutionStatus::Completed,
        ExecutionStatus::Error,
    ];
    for s in execution_statuses {
        match s {
            ExecutionStatus::Running
            | ExecutionStatus::WaitingInput
            | ExecutionStatus::Paused
            | ExecutionStatus::Completed
            | ExecutionStatus::Error => {}
        }
    }
    assert_allowed(
        "sessions_execution_status_check",
        &execution_statuses.map(ExecutionStatus::as_str),
    );

    let roles = [
        MessageRole::User,
        MessageRole::Assistant,
        MessageRole::System,
    ];
    for r in roles {
        match r {
            MessageRole::User | MessageRole::Assistant | MessageRole::System => {}
        }
    }
    assert_allowed("messages_role_check", &roles.map(MessageRole::as_str));

    let action_types = [
        ActionType::AiSay,
        ActionType::AiAsk,
        ActionType::AiThink,
        ActionType::UseSkill,
    ];
    for a in action_types {
        match a {
            ActionType::AiSay | ActionType::AiAsk | ActionType::AiThink | ActionType::UseSkill => {}
        }
    }
    assert_allowed(
        "messages_action_type_check",
        &action_types.map(ActionType::as_str),
    );

    let scopes = [
        VariableScope::Global,
        VariableScope::Session,
        VariableScope::Phase,
        VariableScope::Topic,
    ];
    for s in scopes {
        match s {
            VariableScope::Global
            | VariableScope::Session
            | VariableScope::Phase
            | VariableScope::Topic => {}
        }
    }
    assert_allowed("variables_scope_check", &scopes.map(VariableScope::as_str));

    let value_types = [
        ValueType::Null,
        ValueType::String,
        ValueType::Number,
        ValueType::Boolean,
        ValueType::Array,
        ValueType::Object,
    ];
    for v in value_types {
        match v {
            ValueType::Null
            | ValueType::String
            | ValueType::Number
            | ValueType::Boolean
            | ValueType::Array
            | ValueType::Object => {}
        }
    }
    assert_allowed(
        "variables_value_type_check",
        &value_types.map(ValueType::as_str),
    );

    let codes = [
        ErrorCode::ScriptNotFound,
        ErrorCode::ScriptParseError,
        ErrorCode::ScriptValidationError,
        ErrorCode::SessionNotFound,
        ErrorCode::SessionExecutionError,
        ErrorCode::ActionExecutionError,
        ErrorCode::LlmServiceError,
        ErrorCode::VariableExtractionError,
        ErrorCode::DatabaseError,
        ErrorCode::InternalServerError,
        ErrorCode::Conflict,
        ErrorCode::TurnInProgress,
    ];
    for c in codes {
        match c {
            ErrorCode::ScriptNotFound
            | ErrorCode::ScriptParseError
            | ErrorCode::ScriptValidationError
            | ErrorCode::SessionNotFound
            | ErrorCode::SessionExecutionError
            | ErrorCode::ActionExecutionError
            | ErrorCode::LlmServiceError
            | ErrorCode::VariableExtractionError
            | ErrorCode::DatabaseError
            | ErrorCode::InternalServerError
            | ErrorCode::Conflict
            | ErrorCode::TurnInProgress => {}
            // Refused before any turn starts, so never stored as a failed turn.
            ErrorCode::Forbidden | ErrorCode::QuotaExceeded => {}
            // Script editor errors: no turn ever fails with them.
            ErrorCode::VersionNotFound | ErrorCode::DraftInvalid | ErrorCode::TestsFailed => {}
        }
        // The failed_turns decoder relies on serde spelling == as_str().
        assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
    }
    assert_allowed(
        "failed_turns_error_code_check",
        &codes.map(ErrorCode::as_str),
    );
}

fn session() -> Session {
    let now = Utc::now();
    let mut variables = VariableStore::default();
    variables.set(
        "mood",
        VariableScope::Topic,
        Some("t1"),
        VariableValue::new(json!({"score": 3}), "ask_1", VariableScope::Topic, now),
    );
    let mut state = EngineState::initial(variables);
    state.status = ExecutionStatus::WaitingInput;
    state.position = Position {
        phase_index: 1,
        topic_index: 2,
        action_index: 3,
        action_id: Some("ask_1".into()),
        ..Position::default()
    };
    state.metadata.insert("counter".into(), json!(7));
    Session {
        id: SessionId::new_random(),
        user_id: "user-1".into(),
        script_id: ScriptId::new_random(),
        script_hash: "abc".into(),
        status: SessionStatus::Active,
        state,
        turn_count: 4,
        last_message_seq: 9,
        last_error: Some("LLM_SERVICE_ERROR".into()),
        created_at: now,
        updated_at: now,
        completed_at: None,
    }
}

/// The row PostgreSQL would return for what `NewSessionRow` wrote.
fn stored(session: &Session) -> SessionRow {
    let new = NewSessionRow::new(session).unwrap();
    SessionRow {
        id: new.id,
        user_id: new.user_id.into(),
        script_id: new.script_id,
        script_hash: new.script_hash.into(),
        status: new.status.into(),
        execution_status: new.execution_status.into(),
        position: new.position,
        variables: new.variables,
        engine_state: RawJson(new.engine_state.to_string()),
        turn_count: new.turn_count,
        last_message_seq: new.last_message_seq,
        last_error: new.last_error.map(str::to_owned),
        created_at: new.created_at,
        updated_at: new.updated_at,
        completed_at: new.completed_at,
    }
}

#[test]
fn session_round_trips_through_its_split_columns() {
    let session = session();
    let row = stored(&session);
    assert_eq!(row.execution_status, "waiting_input");
    let json = |raw: &RawJson| serde_json::from_str::<Value>(&raw.0).unwrap();
    assert_eq!(json(&row.position)["actionId"], "ask_1");
    assert!(json(&row.variables)["topic"]["t1"]["mood"].is_object());
    // status, position and variables are stored once, in their own columns.
    let rest = json(&row.engine_state);
    for key in ["status", "position", "variables"] {
        assert!(rest.get(key).is_none(), "{key} duplicated");
    }
    assert_eq!(rest["metadata"]["counter"], 7);
    assert_eq!(row.into_domain().unwrap(), session);

    // A state with nothing beyond the split-out parts splices too.
    let mut bare = stored(&session);
    bare.engine_state = RawJson("{ }".into());
    let decoded = bare.into_domain();
    assert!(
        matches!(decoded, Err(RepositoryError::Corrupt(ref m)) if m.contains("version")),
        "the version is required: {decoded:?}"
    );
}

#[test]
fn unknown_enum_text_and_bad_json_are_corrupt() {
    let mut row = stored(&session());
    row.status = "zombie".into();
    assert!(matches!(row.into_domain(), Err(RepositoryError::Corrupt(m)) if m.contains("zombie")));

    let mut row = stored(&session());
    row.engine_state = RawJson("[1, 2]".into());
    assert!(matches!(
        row.into_domain(),
        Err(RepositoryError::Corrupt(_))
    ));

    let mut row = stored(&session());
    row.engine_state = RawJson(r#"{"version": "one"}"#.into());
    assert!(matches!(
        row.into_domain(),
        Err(RepositoryError::Corrupt(_))
    ));

    let mut row = stored(&session());
    row.position = RawJson(r#""start""#.into());
    assert!(matches!(
        row.into_domain(),
        Err(RepositoryError::Corrupt(_))
    ));

    let mut row = stored(&session());
    row.turn_count = -1;
    assert!(matches!(
        row.into_domain(),
        Err(RepositoryError::Corrupt(_))
    ));

    let failed = FailedTurnRow {
        id: Uuid::new_v4(),
        session_id: Uuid::new_v4(),
        user_input: None,
        error_code: "NOT_A_CODE".into(),
        error_message: String::new(),
        position: json!({"phaseIndex": 0, "topicIndex": 0, "actionIndex": 0}),
        failed_at: Utc::now(),
    };
    assert!(matches!(
        failed.into_domain(),
        Err(RepositoryError::Corrupt(_))
    ));
}

#[test]
fn turn_update_always_clears_the_last_error() {
    let session = session();
    assert!(session.last_error.is_some());
    let update = SessionTurnUpdate::new(&session).unwrap();
    assert_eq!(update.last_error, None);
    assert_eq!(update.turn_count, 4);
}
