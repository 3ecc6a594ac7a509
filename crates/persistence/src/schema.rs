// @generated automatically by Diesel CLI.

diesel::table! {
    audit_events (id) {
        id -> Uuid,
        occurred_at -> Timestamptz,
        actor_subject -> Text,
        actor_roles -> Jsonb,
        action -> Text,
        target_type -> Text,
        target_id -> Text,
        before_hash -> Nullable<Text>,
        after_hash -> Nullable<Text>,
        details -> Jsonb,
    }
}

diesel::table! {
    failed_turns (id) {
        id -> Uuid,
        session_id -> Uuid,
        user_input -> Nullable<Text>,
        error_code -> Text,
        error_message -> Text,
        position -> Jsonb,
        failed_at -> Timestamptz,
    }
}

diesel::table! {
    idempotency_keys (session_id, idem_key) {
        session_id -> Uuid,
        idem_key -> Text,
        request_hash -> Text,
        response -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    llm_exchanges (session_id, turn_number, call_index) {
        session_id -> Uuid,
        turn_number -> Int8,
        call_index -> Int4,
        turn_id -> Uuid,
        action_id -> Text,
        purpose -> Text,
        prompt_hash -> Text,
        prompt -> Nullable<Text>,
        response -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    messages (id) {
        id -> Uuid,
        session_id -> Uuid,
        seq -> Int8,
        turn_id -> Uuid,
        role -> Text,
        content -> Text,
        #[max_length = 255]
        action_id -> Nullable<Varchar>,
        action_type -> Nullable<Text>,
        metadata -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    safety_deliveries (alert_id, attempt) {
        alert_id -> Uuid,
        attempt -> Int8,
        session_id -> Uuid,
        outcome -> Text,
        http_status -> Nullable<Int8>,
        error -> Nullable<Text>,
        attempted_at -> Timestamptz,
    }
}

diesel::table! {
    scripts (id) {
        id -> Uuid,
        #[max_length = 255]
        script_name -> Varchar,
        script_type -> Text,
        status -> Text,
        script_content -> Text,
        content_hash -> Text,
        parsed_content -> Jsonb,
        technique_id -> Nullable<Text>,
        #[max_length = 50]
        version -> Varchar,
        author -> Text,
        description -> Text,
        tags -> Jsonb,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        current_version -> Nullable<Int4>,
        draft_content -> Nullable<Text>,
        draft_revision -> Int8,
        draft_updated_at -> Nullable<Timestamptz>,
        draft_updated_by -> Nullable<Text>,
        deprecated_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    script_versions (script_id, number) {
        script_id -> Uuid,
        number -> Int4,
        script_content -> Text,
        content_hash -> Text,
        parsed_content -> Jsonb,
        author -> Text,
        note -> Text,
        warnings -> Jsonb,
        created_at -> Timestamptz,
        files -> Jsonb,
    }
}

diesel::table! {
    script_files (script_id, path) {
        script_id -> Uuid,
        path -> Text,
        file_type -> Text,
        content -> Text,
        updated_at -> Timestamptz,
        updated_by -> Text,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        #[max_length = 255]
        user_id -> Varchar,
        script_id -> Uuid,
        script_hash -> Text,
        status -> Text,
        execution_status -> Text,
        position -> Jsonb,
        variables -> Jsonb,
        engine_state -> Jsonb,
        turn_count -> Int8,
        last_message_seq -> Int8,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
        lease_owner -> Nullable<Uuid>,
        lease_expires_at -> Nullable<Timestamptz>,
        active_on -> Nullable<Date>,
    }
}

diesel::table! {
    token_usage (session_id, hour) {
        session_id -> Uuid,
        hour -> Timestamptz,
        #[max_length = 255]
        user_id -> Varchar,
        prompt_tokens -> Int8,
        completion_tokens -> Int8,
        total_tokens -> Int8,
        llm_calls -> Int8,
    }
}

diesel::table! {
    variables (id) {
        id -> Int8,
        session_id -> Uuid,
        turn_id -> Uuid,
        #[max_length = 255]
        variable_name -> Varchar,
        scope -> Text,
        scope_key -> Nullable<Text>,
        value -> Jsonb,
        value_type -> Text,
        #[max_length = 255]
        source -> Varchar,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(failed_turns -> sessions (session_id));
diesel::joinable!(idempotency_keys -> sessions (session_id));
diesel::joinable!(llm_exchanges -> sessions (session_id));
diesel::joinable!(messages -> sessions (session_id));
diesel::joinable!(safety_deliveries -> sessions (session_id));
diesel::joinable!(script_files -> scripts (script_id));
diesel::joinable!(script_versions -> scripts (script_id));
diesel::joinable!(sessions -> scripts (script_id));
diesel::joinable!(token_usage -> sessions (session_id));
diesel::joinable!(variables -> sessions (session_id));

diesel::allow_tables_to_appear_in_same_query!(
    audit_events,
    failed_turns,
    idempotency_keys,
    llm_exchanges,
    messages,
    safety_deliveries,
    script_files,
    script_versions,
    scripts,
    sessions,
    token_usage,
    variables,
);
