//! Request and response bodies of the API: the original camelCase shapes
//! plus a few added fields. Domain types are mapped
//! here so the wire format never changes by accident when the domain does.

use chrono::{DateTime, Utc};
use heartrule_domain::variables::VariableMap;
use heartrule_domain::{
    LlmCallRecord, LoadWarning, Message, MessageRole, Position, Script, Session, TurnResult,
    ValidationIssue, VariableStore,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

// ------------------------------------------------------------ stored text

/// Request text is stored in PostgreSQL, which cannot hold U+0000 in `text`
/// or `jsonb`: a NUL is refused when the body is read (400
/// `INVALID_REQUEST`), not by the database after the work is done. The
/// schemas say so with [`storable::STORABLE_TEXT`].
pub mod storable {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};
    use serde_json::{Map, Value};
    use utoipa::openapi::schema::{
        AdditionalProperties, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Ref, Schema, SchemaType,
        Type,
    };
    use utoipa::openapi::RefOr;
    use utoipa::{PartialSchema, ToSchema};

    /// The pattern of text without NUL characters.
    pub const STORABLE_TEXT: &str = "^[^\\u0000]*$";

    const REFUSED: &str = "text must not contain the NUL character (U+0000)";

    fn check<E: Error>(text: &str) -> Result<(), E> {
        if text.contains('\0') {
            Err(E::custom(REFUSED))
        } else {
            Ok(())
        }
    }

    fn check_value<E: Error>(value: &Value) -> Result<(), E> {
        match value {
            Value::String(text) => check(text),
            Value::Array(items) => items.iter().try_for_each(check_value),
            Value::Object(map) => map.iter().try_for_each(|(key, value)| {
                check(key)?;
                check_value(value)
            }),
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
        }
    }

    pub fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        let text = String::deserialize(deserializer)?;
        check(&text)?;
        Ok(text)
    }

    pub fn optional_text<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.as_deref().map(check).transpose()?;
        Ok(text)
    }

    pub fn optional_texts<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<String>>, D::Error> {
        let texts = Option::<Vec<String>>::deserialize(deserializer)?;
        texts.iter().flatten().try_for_each(|text| check(text))?;
        Ok(texts)
    }

    pub fn optional_object<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Map<String, Value>>, D::Error> {
        let map = Option::<Map<String, Value>>::deserialize(deserializer)?;
        map.iter().flatten().try_for_each(|(key, value)| {
            check(key)?;
            check_value(value)
        })?;
        Ok(map)
    }

    fn text_schema(min_length: Option<usize>) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(STORABLE_TEXT))
            .min_length(min_length)
    }

    /// `ty`, or `null` for the optional fields (`Option` with `#[serde(default)]`).
    fn or_null(ty: Type) -> SchemaType {
        SchemaType::from_iter([ty, Type::Null])
    }

    /// Text without NUL.
    #[must_use]
    pub fn text_schema_any() -> Schema {
        text_schema(None).into()
    }

    /// At least one character, without NUL.
    #[must_use]
    pub fn text_schema_nonempty() -> Schema {
        text_schema(Some(1)).into()
    }

    /// Text without NUL, or `null`.
    #[must_use]
    pub fn optional_text_schema() -> Schema {
        text_schema(None).schema_type(or_null(Type::String)).into()
    }

    /// A list of texts without NUL, or `null`.
    #[must_use]
    pub fn optional_texts_schema() -> Schema {
        ArrayBuilder::new()
            .schema_type(or_null(Type::Array))
            .items(text_schema(None))
            .into()
    }

    fn object_of_json() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(text_schema(None)))
            .additional_properties(Some(AdditionalProperties::from(RefOr::Ref(
                Ref::from_schema_name(StorableJson::name()),
            ))))
    }

    /// An object of any JSON values, with no NUL in any key or string, or `null`.
    #[must_use]
    pub fn optional_object_schema() -> Schema {
        object_of_json().schema_type(or_null(Type::Object)).into()
    }

    /// A path parameter stored or looked up as text (`{userId}`), refused
    /// when it holds a NUL; reads as the `str` it wraps.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StorableText(String);

    impl<'de> Deserialize<'de> for StorableText {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            text(deserializer).map(Self)
        }
    }

    impl std::ops::Deref for StorableText {
        type Target = str;

        fn deref(&self) -> &str {
            &self.0
        }
    }

    /// Any JSON value whose strings and keys contain no NUL character.
    pub struct StorableJson;

    impl PartialSchema for StorableJson {
        fn schema() -> RefOr<Schema> {
            AnyOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .item(ObjectBuilder::new().schema_type(Type::Boolean))
                .item(ObjectBuilder::new().schema_type(Type::Number))
                .item(text_schema(None))
                .item(ArrayBuilder::new().items(Ref::from_schema_name(Self::name())))
                .item(object_of_json())
                .description(Some(
                    "Any JSON value; no string or key contains the NUL character",
                ))
                .into()
        }
    }

    impl ToSchema for StorableJson {}

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        #[derive(Debug, Deserialize)]
        struct Probe {
            #[serde(default, deserialize_with = "optional_object")]
            variables: Option<Map<String, Value>>,
            #[serde(default, deserialize_with = "optional_texts")]
            tags: Option<Vec<String>>,
            #[serde(deserialize_with = "text")]
            name: String,
        }

        fn probe(value: Value) -> Result<Probe, serde_json::Error> {
            serde_json::from_value(value)
        }

        #[test]
        fn nul_is_refused_wherever_it_hides() {
            assert!(probe(json!({"name": "a\u{0}b"})).is_err());
            assert!(probe(json!({"name": "a", "tags": ["x", "\u{0}"]})).is_err());
            assert!(probe(json!({"name": "a", "variables": {"k\u{0}": 1}})).is_err());
            let nested = json!({"name": "a", "variables": {"k": [{"deep": ["\u{0}"]}]}});
            let error = probe(nested).unwrap_err().to_string();
            assert!(error.contains("U+0000"), "{error}");
        }

        #[test]
        fn a_path_text_reads_as_its_str() {
            let text: StorableText = serde_json::from_value(json!("user-1")).unwrap();
            assert_eq!(&*text, "user-1");
            assert!(serde_json::from_value::<StorableText>(json!("a\u{0}")).is_err());
        }

        #[test]
        fn everything_else_passes() {
            let ok = probe(json!({
                "name": "名前 \\u0000 is only text",
                "tags": ["a"],
                "variables": {"k": [null, true, 1.5, "s", {"x": {}}]}
            }))
            .unwrap();
            assert_eq!(ok.tags.unwrap(), ["a"]);
            assert!(ok.name.ends_with("is only text"));
            assert_eq!(ok.variables.unwrap()["k"][3], "s");
            assert!(probe(json!({"name": "", "variables": null})).is_ok());
        }
    }
}

// ---------------------------------------------------------------- requests

/// `POST /api/sessions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionRequest {
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_nonempty)]
    pub user_id: String,
    pub script_id: Uuid,
    /// Written to the session scope before the first turn.
    #[serde(default, deserialize_with = "storable::optional_object")]
    #[schema(schema_with = storable::optional_object_schema)]
    pub initial_variables: Option<Map<String, Value>>,
}

/// `POST /api/sessions/{id}/messages`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct PostMessageRequest {
    /// The user's words; `""` acknowledges an `ai_say`.
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_any)]
    pub content: String,
}

/// `POST /api/chat` and `POST /api/chat/stream`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatRequest {
    pub session_id: Uuid,
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_nonempty)]
    pub message: String,
}

/// The YAML of the request examples: the smallest script strict mode takes.
const EXAMPLE_SCRIPT: &str = "session:\n  session_id: example\n  session_name: Example\n  phases:\n    - phase_id: p\n      topics:\n        - topic_id: t\n          actions:\n            - action_id: ask\n              action_type: ai_ask\n              config:\n                content: How are you today?\n";

/// `POST /api/scripts`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "scriptName": "example",
    "scriptType": "session",
    "scriptContent": EXAMPLE_SCRIPT,
    "author": "docs",
    "tags": ["example"]
}))]
pub struct CreateScriptRequest {
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_nonempty)]
    pub script_name: String,
    /// Must match the YAML root.
    #[schema(value_type = ScriptTypeName)]
    pub script_type: String,
    /// The YAML source.
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_nonempty)]
    pub script_content: String,
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_any)]
    pub author: String,
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[schema(schema_with = storable::optional_text_schema)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "storable::optional_texts")]
    #[schema(schema_with = storable::optional_texts_schema)]
    pub tags: Option<Vec<String>>,
}

/// `POST /api/scripts/import`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"scriptName": "example_import", "yamlContent": EXAMPLE_SCRIPT}))]
pub struct ImportScriptRequest {
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_nonempty)]
    pub yaml_content: String,
    #[serde(deserialize_with = "storable::text")]
    #[schema(schema_with = storable::text_schema_nonempty)]
    pub script_name: String,
    #[serde(default, deserialize_with = "storable::optional_text")]
    #[schema(schema_with = storable::optional_text_schema)]
    pub description: Option<String>,
    /// Tags the script `project:<id>`.
    #[serde(default)]
    pub project_id: Option<Uuid>,
}

/// `?mode=strict|compatible`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ModeQuery {
    #[param(value_type = Option<LoadModeName>)]
    pub mode: Option<String>,
}

/// The `Idempotency-Key` header of the turn routes, as the document
/// declares it (the adapter's idempotency module enforces it).
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// Retrying with the same key and body returns the first result (with
    /// `Idempotent-Replayed: true`); the same key with another body is a
    /// `409 CONFLICT`. 1–255 visible ASCII characters.
    #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,255}$")]
    pub idempotency_key: Option<String>,
}

/// Paging of `GET /api/sessions/{id}/messages`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Only messages with a greater `seq` (default 0: from the start).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub after_seq: Option<i64>,
    /// Page size; larger values are cut to the configured `history_page_limit` (the default).
    #[param(minimum = 1, maximum = 4294967295_u32, format = Int64)]
    pub limit: Option<u32>,
}

/// `GET /api/sessions/{id}/variables`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VariablesQuery {
    /// `true` returns the whole scoped store instead of the flat map.
    pub scoped: Option<bool>,
}

/// Filters of `GET /api/scripts`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListScriptsQuery {
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<ScriptTypeName>)]
    pub script_type: Option<String>,
    #[param(value_type = Option<ScriptStatusName>)]
    pub status: Option<String>,
    /// Page size (default: every match).
    #[param(maximum = 4294967295_u32, format = Int64)]
    pub limit: Option<u32>,
    /// Matches to skip.
    #[param(maximum = 4294967295_u32, format = Int64)]
    pub offset: Option<u32>,
}

/// The words the handlers accept for a script type (the schema of
/// `scriptType` and `?type=`; the handlers parse them with the domain's
/// `ScriptType::parse`, a test keeps both in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScriptTypeName {
    Session,
    Technique,
    Awareness,
}

/// The words the handlers accept for a script status (`?status=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScriptStatusName {
    Draft,
    Published,
    Archived,
}

/// `?mode=`: `strict` applies the schema; `compatible` also accepts
/// deprecated fields and reports them as warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LoadModeName {
    Strict,
    Compatible,
}

/// One event of `POST /api/chat/stream`, as an SSE parser reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamEventBody {
    pub event: StreamEventName,
    /// JSON: `chunk` → `{"chunk","actionId"}`, `retract` → `{"actionId"}`
    /// (discard what was shown of that message), `state` → the body of
    /// `POST /api/sessions/{id}/messages`, `done` → `{"done":true}`,
    /// `error` → `{"error":{…}}`.
    pub data: String,
}

/// The events of `POST /api/chat/stream`, in order: (`chunk` | `retract`)*
/// → `state` → `done`, or `error`. `retract` withdraws the text sent so far
/// of one action's message (the output guard stopped it); the chunks after
/// it are its replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamEventName {
    Chunk,
    Retract,
    State,
    Done,
    Error,
}

// --------------------------------------------------------------- responses

/// The engine's cursor; every key is present (`null` when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PositionBody {
    pub phase_index: usize,
    pub phase_id: Option<String>,
    pub topic_index: usize,
    pub topic_id: Option<String>,
    pub action_index: usize,
    pub action_id: Option<String>,
    /// `ai_say`, `ai_ask`, `ai_think` or `use_skill`.
    pub action_type: Option<String>,
    pub current_round: Option<u32>,
    pub max_rounds: Option<u32>,
}

impl From<&Position> for PositionBody {
    fn from(p: &Position) -> Self {
        Self {
            phase_index: p.phase_index,
            phase_id: p.phase_id.clone(),
            topic_index: p.topic_index,
            topic_id: p.topic_id.clone(),
            action_index: p.action_index,
            action_id: p.action_id.clone(),
            action_type: p.action_type.map(|t| t.as_str().to_owned()),
            current_round: p.current_round,
            max_rounds: p.max_rounds,
        }
    }
}

/// A variable with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariableBody {
    /// Any JSON value.
    pub value: Value,
    /// JSON type: `null`, `string`, `number`, `boolean`, `array`, `object`.
    #[serde(rename = "type")]
    pub value_type: String,
    /// The action id that wrote it, or `initial`, `global`, `migrated`, `skill:<id>`,
    /// or `declined` (the user skipped the question: the value is null).
    pub source: String,
    pub scope: String,
    pub last_updated: DateTime<Utc>,
}

pub type VariableMapBody = BTreeMap<String, VariableBody>;

fn variable_map(map: &VariableMap) -> VariableMapBody {
    map.iter()
        .map(|(name, var)| {
            (
                name.clone(),
                VariableBody {
                    value: var.value.clone(),
                    value_type: var.value_type.as_str().to_owned(),
                    source: var.source.clone(),
                    scope: var.scope.as_str().to_owned(),
                    last_updated: var.last_updated,
                },
            )
        })
        .collect()
}

/// The variables visible at the current position, by scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PositionedStoreBody {
    pub global: VariableMapBody,
    pub session: VariableMapBody,
    /// The current phase's variables.
    pub phase: VariableMapBody,
    /// The current topic's variables.
    pub topic: VariableMapBody,
}

impl PositionedStoreBody {
    #[must_use]
    pub fn new(store: &VariableStore, position: &Position) -> Self {
        let scoped = |maps: &BTreeMap<String, VariableMap>, key: Option<&String>| {
            key.and_then(|k| maps.get(k))
                .map(variable_map)
                .unwrap_or_default()
        };
        Self {
            global: variable_map(&store.global),
            session: variable_map(&store.session),
            phase: scoped(&store.phase, position.phase_id.as_ref()),
            topic: scoped(&store.topic, position.topic_id.as_ref()),
        }
    }
}

/// Every variable of a session in its scope (`?scoped=true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScopedStoreBody {
    pub global: VariableMapBody,
    pub session: VariableMapBody,
    /// Keyed by phase id.
    pub phase: BTreeMap<String, VariableMapBody>,
    /// Keyed by topic id.
    pub topic: BTreeMap<String, VariableMapBody>,
}

impl From<&VariableStore> for ScopedStoreBody {
    fn from(store: &VariableStore) -> Self {
        let nested = |maps: &BTreeMap<String, VariableMap>| {
            maps.iter()
                .map(|(k, m)| (k.clone(), variable_map(m)))
                .collect()
        };
        Self {
            global: variable_map(&store.global),
            session: variable_map(&store.session),
            phase: nested(&store.phase),
            topic: nested(&store.topic),
        }
    }
}

fn global_values(store: &VariableStore) -> Map<String, Value> {
    store
        .global
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

/// An AI message produced by a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnMessageBody {
    pub message_id: Uuid,
    pub action_id: Option<String>,
    pub action_type: Option<String>,
    pub content: String,
    pub seq: i64,
}

impl From<&Message> for TurnMessageBody {
    fn from(m: &Message) -> Self {
        Self {
            message_id: m.id.as_uuid(),
            action_id: m.action_id.clone(),
            action_type: m.action_type.map(|t| t.as_str().to_owned()),
            content: m.content.clone(),
            seq: m.seq,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsageBody {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// One LLM call of a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmCallBody {
    pub action_id: String,
    pub purpose: String,
    pub prompt: String,
    pub response: String,
    pub provider: String,
    pub model: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub usage: TokenUsageBody,
    pub started_at: DateTime<Utc>,
}

impl From<&LlmCallRecord> for LlmCallBody {
    fn from(c: &LlmCallRecord) -> Self {
        Self {
            action_id: c.action_id.clone(),
            purpose: c.purpose.clone(),
            prompt: c.prompt.clone(),
            response: c.response.clone(),
            provider: c.provider.clone(),
            model: c.model.clone(),
            temperature: c.temperature,
            max_tokens: c.max_tokens,
            usage: TokenUsageBody {
                prompt_tokens: c.usage.prompt_tokens,
                completion_tokens: c.usage.completion_tokens,
                total_tokens: c.usage.total_tokens,
            },
            started_at: c.started_at,
        }
    }
}

/// The result of a turn (`POST /api/sessions/{id}/messages`, the WebSocket
/// `turn` frame and the SSE `state` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnBody {
    /// The last AI message of the turn (`""` when there is none).
    pub ai_message: String,
    /// Every AI message of the turn, in order.
    pub messages: Vec<TurnMessageBody>,
    /// `active`, `paused`, `completed` or `failed`.
    pub session_status: String,
    /// `running`, `waiting_input`, `paused`, `completed` or `error`.
    pub execution_status: String,
    /// All variables, flattened (inner scopes win).
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    #[schema(value_type = Object)]
    pub global_variables: Map<String, Value>,
    pub variable_store: PositionedStoreBody,
    pub position: PositionBody,
    /// Every LLM call of the turn, when the server includes debug info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_info: Option<Vec<LlmCallBody>>,
    pub turn_id: Uuid,
}

impl TurnBody {
    #[must_use]
    pub fn new(result: &TurnResult, include_debug_info: bool) -> Self {
        Self {
            ai_message: result.last_ai_message().to_owned(),
            messages: result.messages.iter().map(TurnMessageBody::from).collect(),
            session_status: result.session_status.as_str().to_owned(),
            execution_status: result.execution_status.as_str().to_owned(),
            variables: result.variables.flat(),
            global_variables: global_values(&result.variables),
            variable_store: PositionedStoreBody::new(&result.variables, &result.position),
            position: PositionBody::from(&result.position),
            debug_info: include_debug_info
                .then(|| result.llm_calls.iter().map(LlmCallBody::from).collect()),
            turn_id: result.turn_id.as_uuid(),
        }
    }
}

/// `POST /api/sessions`: the new session and its first turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionBody {
    pub session_id: Uuid,
    /// The session row's status (`active`, or `completed` for a script that ended at once).
    pub status: String,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub turn: TurnBody,
}

/// `POST /api/chat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatBody {
    pub ai_message: String,
    pub messages: Vec<TurnMessageBody>,
    pub session_status: String,
    pub execution_status: String,
    /// The flat variables after the turn.
    #[schema(value_type = Object)]
    pub extracted_variables: Map<String, Value>,
}

impl From<&TurnResult> for ChatBody {
    fn from(result: &TurnResult) -> Self {
        Self {
            ai_message: result.last_ai_message().to_owned(),
            messages: result.messages.iter().map(TurnMessageBody::from).collect(),
            session_status: result.session_status.as_str().to_owned(),
            execution_status: result.execution_status.as_str().to_owned(),
            extracted_variables: result.variables.flat(),
        }
    }
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionBody {
    pub session_id: Uuid,
    pub id: Uuid,
    pub user_id: String,
    pub script_id: Uuid,
    pub status: String,
    pub execution_status: String,
    pub position: PositionBody,
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    #[schema(value_type = Object)]
    pub global_variables: Map<String, Value>,
    pub variable_store: ScopedStoreBody,
    /// Committed turns so far.
    pub turn_count: u64,
    /// Code of the last failed turn, cleared by the next committed one.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Why the session ended before its script did: `user_request` when the
    /// user asked to stop (a repair intent); null otherwise.
    pub ended_by: Option<String>,
    /// Highest risk level detected so far: `none`, `low`, `medium`, `high`, `imminent`.
    pub risk_level: String,
    /// Every detection on the user's messages, oldest first, with its evidence.
    pub risk_events: Vec<RiskEventBody>,
    /// Set while the session waits in `handoff` (crisis protocol or the
    /// user's request for a person).
    pub handoff: Option<HandoffBody>,
}

/// One risk detection on a user message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiskEventBody {
    pub turn_id: Uuid,
    pub at: DateTime<Utc>,
    /// `local` (pattern detector) or `llm`.
    pub source: String,
    pub level: String,
    pub pattern_ids: Vec<String>,
    /// The user's message that was read.
    pub evidence: String,
    /// Whether the turn followed the crisis protocol.
    pub protocol: bool,
}

/// A session held by the crisis protocol, or waiting for a person the user
/// asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandoffBody {
    pub since: DateTime<Utc>,
    pub level: String,
    /// `crisis` (the crisis protocol) or `user_request` (the user asked to
    /// speak to a person; level `none`).
    #[schema(example = "crisis")]
    pub reason: String,
}

impl From<&Session> for SessionBody {
    fn from(s: &Session) -> Self {
        let store = &s.state.variables;
        Self {
            session_id: s.id.as_uuid(),
            id: s.id.as_uuid(),
            user_id: s.user_id.clone(),
            script_id: s.script_id.as_uuid(),
            status: s.status.as_str().to_owned(),
            execution_status: s.state.status.as_str().to_owned(),
            position: PositionBody::from(&s.state.position),
            variables: store.flat(),
            global_variables: global_values(store),
            variable_store: ScopedStoreBody::from(store),
            turn_count: s.turn_count,
            last_error: s.last_error.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            completed_at: s.completed_at,
            ended_by: s
                .state
                .metadata
                .get(heartrule_domain::repair::ENDED_BY_KEY)
                .and_then(Value::as_str)
                .map(str::to_owned),
            risk_level: s.state.safety.risk_level.as_str().to_owned(),
            risk_events: s
                .state
                .safety
                .risk_events
                .iter()
                .map(|e| RiskEventBody {
                    turn_id: e.turn_id.as_uuid(),
                    at: e.at,
                    source: e.source.as_str().to_owned(),
                    level: e.level.as_str().to_owned(),
                    pattern_ids: e.pattern_ids.clone(),
                    evidence: e.evidence.clone(),
                    protocol: e.protocol,
                })
                .collect(),
            handoff: s.state.safety.handoff.as_ref().map(|h| HandoffBody {
                since: h.since,
                level: h.level.as_str().to_owned(),
                reason: h.reason.as_str().to_owned(),
            }),
        }
    }
}

/// A stored message (`GET /api/sessions/{id}/messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageBody {
    pub message_id: Uuid,
    pub seq: i64,
    /// `user`, `ai` or `system`.
    pub role: String,
    pub content: String,
    pub timestamp: DateTime<Utc>,
    pub action_id: Option<String>,
    pub action_type: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl From<&Message> for MessageBody {
    fn from(m: &Message) -> Self {
        Self {
            message_id: m.id.as_uuid(),
            seq: m.seq,
            role: match m.role {
                MessageRole::Assistant => "ai".to_owned(),
                other => other.as_str().to_owned(),
            },
            content: m.content.clone(),
            timestamp: m.created_at,
            action_id: m.action_id.clone(),
            action_type: m.action_type.map(|t| t.as_str().to_owned()),
            metadata: m.metadata.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessagesBody {
    /// Always `true`.
    pub success: bool,
    pub data: Vec<MessageBody>,
}

/// A field compatible mode accepted and normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WarningBody {
    pub path: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

impl From<&LoadWarning> for WarningBody {
    fn from(w: &LoadWarning) -> Self {
        Self {
            path: w.path.clone(),
            message: w.message.clone(),
            replacement: w.replacement.clone(),
        }
    }
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssueBody {
    /// e.g. `session.phases[0].topics[1].actions[0].config.content`.
    pub path: String,
    /// `SYNTAX_ERROR`, `TYPE_ERROR`, `REQUIRED_FIELD_MISSING`,
    /// `ENUM_VALUE_INVALID`, `CONSTRAINT_VIOLATION` or `STRUCTURE_ERROR`.
    pub error_type: String,
    pub message: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
    pub suggestion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl From<&ValidationIssue> for IssueBody {
    fn from(i: &ValidationIssue) -> Self {
        // The domain type serializes the error type in its API spelling.
        let error_type = serde_json::to_value(i.error_type)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{:?}", i.error_type));
        Self {
            path: i.path.clone(),
            error_type,
            message: i.message.clone(),
            expected: i.expected.clone(),
            actual: i.actual.clone(),
            suggestion: i.suggestion.clone(),
            line: i.line,
            column: i.column,
        }
    }
}

/// A stored script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScriptBody {
    pub script_id: Uuid,
    pub id: Uuid,
    pub script_name: String,
    pub script_type: String,
    pub status: String,
    pub version: String,
    /// The number of the published version `scriptContent` is; new
    /// sessions start on it (see `/api/projects/{id}/versions`).
    pub current_version: u32,
    pub author: String,
    pub description: String,
    pub tags: Vec<String>,
    /// The YAML source of the current version.
    pub script_content: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What compatible mode normalised (create only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<WarningBody>>,
}

impl ScriptBody {
    #[must_use]
    pub fn new(script: &Script, warnings: Option<&[LoadWarning]>) -> Self {
        Self {
            script_id: script.id.as_uuid(),
            id: script.id.as_uuid(),
            script_name: script.name.clone(),
            script_type: script.script_type.as_str().to_owned(),
            status: script.status.as_str().to_owned(),
            version: script.version.clone(),
            current_version: script.current_version,
            author: script.author.clone(),
            description: script.description.clone(),
            tags: script.tags.clone(),
            script_content: script.content.clone(),
            created_at: script.created_at,
            updated_at: script.updated_at,
            warnings: warnings.map(|w| w.iter().map(WarningBody::from).collect()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScriptListBody {
    pub scripts: Vec<ScriptBody>,
    /// Scripts matching the filters, before `limit`/`offset`.
    pub total: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportDataBody {
    pub script_id: Uuid,
    pub warnings: Vec<WarningBody>,
    /// True when an existing script with that name was replaced.
    pub updated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportBody {
    /// Always `true`.
    pub success: bool,
    pub data: ImportDataBody,
}

/// `POST /api/scripts/{id}/validate` when the script is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ValidBody {
    /// Always `true`.
    pub valid: bool,
    pub message: String,
    pub warnings: Vec<WarningBody>,
}

/// `GET /`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InfoBody {
    pub name: String,
    pub version: String,
    pub status: String,
    pub docs: String,
    pub openapi: String,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    /// Always `ok`: the process answers.
    pub status: String,
    pub timestamp: DateTime<Utc>,
    /// Seconds since the process started.
    pub uptime: f64,
}

/// `GET /ready`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReadyBody {
    pub status: crate::hooks::ReadinessLevel,
    pub components: Vec<crate::hooks::ComponentStatus>,
    pub timestamp: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartrule_domain::{ActionType, ValidationErrorType, VariableScope, VariableValue};
    use serde_json::json;

    #[test]
    fn positioned_store_picks_the_current_phase_and_topic() {
        let now = Utc::now();
        let mut store = VariableStore::default();
        for (name, scope, key) in [
            ("g", VariableScope::Global, None),
            ("s", VariableScope::Session, None),
            ("p1", VariableScope::Phase, Some("p1")),
            ("p2", VariableScope::Phase, Some("p2")),
            ("t1", VariableScope::Topic, Some("t1")),
        ] {
            store.set(
                name,
                scope,
                key,
                VariableValue::new(json!(name), "a", scope, now),
            );
        }
        let position = Position {
            phase_id: Some("p1".into()),
            topic_id: Some("t1".into()),
            action_type: Some(ActionType::AiAsk),
            ..Position::default()
        };
        let body = PositionedStoreBody::new(&store, &position);
        assert_eq!(body.phase.keys().collect::<Vec<_>>(), ["p1"]);
        assert_eq!(body.topic.keys().collect::<Vec<_>>(), ["t1"]);
        assert_eq!(body.global["g"].value_type, "string");
        let full = ScopedStoreBody::from(&store);
        assert_eq!(full.phase.len(), 2);

        let position = PositionBody::from(&position);
        let json = serde_json::to_value(&position).unwrap();
        assert_eq!(json["actionType"], "ai_ask");
        assert!(json["actionId"].is_null(), "every key is kept");
    }

    #[test]
    fn issue_error_type_uses_the_api_spelling() {
        let issue = ValidationIssue {
            path: "root".into(),
            error_type: ValidationErrorType::RequiredFieldMissing,
            message: "m".into(),
            expected: None,
            actual: None,
            suggestion: None,
            line: Some(3),
            column: None,
        };
        let json = serde_json::to_value(IssueBody::from(&issue)).unwrap();
        assert_eq!(json["errorType"], "REQUIRED_FIELD_MISSING");
        assert_eq!(json["line"], 3);
        assert!(json.get("column").is_none());
        assert!(json["expected"].is_null());
    }
}
