//! Conversation messages.

use crate::ids::{MessageId, SessionId, TurnId};
use crate::script::ActionType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
    System,
}

impl MessageRole {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::System => "system",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            "system" => Some(Self::System),
            _ => None,
        }
    }
}

/// A message as stored: `seq` is contiguous per session, starting at 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: MessageId,
    pub session_id: SessionId,
    pub seq: i64,
    pub turn_id: TurnId,
    pub role: MessageRole,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_type: Option<ActionType>,
    /// Action result metadata (e.g. `llmRawOutput`, template layer).
    #[serde(default)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

impl Message {
    /// The engine's view of this message.
    #[must_use]
    pub fn to_history(&self) -> HistoryEntry {
        HistoryEntry::of(self.role, &self.content, &self.action_id, &self.metadata)
    }
}

/// A message the engine produced during a turn (not yet stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewMessage {
    pub role: MessageRole,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_type: Option<ActionType>,
    #[serde(default)]
    pub metadata: Value,
}

impl NewMessage {
    /// The engine's view of this message once it is stored.
    #[must_use]
    pub fn to_history(&self) -> HistoryEntry {
        HistoryEntry::of(self.role, &self.content, &self.action_id, &self.metadata)
    }
}

impl HistoryEntry {
    /// The entry of a message with this role, content, action and metadata
    /// (of which only [`LLM_RAW_OUTPUT`] is kept).
    fn of(role: MessageRole, content: &str, action_id: &Option<String>, metadata: &Value) -> Self {
        Self {
            role,
            content: content.to_owned(),
            action_id: action_id.clone(),
            llm_raw_output: metadata.get(LLM_RAW_OUTPUT).cloned(),
        }
    }
}

/// The metadata key under which an AI message keeps the LLM's raw reply.
pub const LLM_RAW_OUTPUT: &str = "llmRawOutput";

/// An entry of the conversation history handed to the engine: what a prompt
/// quotes and what a later round of the same action reads back. The rest of
/// a stored message (ids, timestamps, other metadata) stays out of it, so a
/// turn neither reads nor copies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub role: MessageRole,
    pub content: String,
    /// The action that produced (or asked for) this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// The raw LLM reply behind an AI message (its metadata's
    /// [`LLM_RAW_OUTPUT`]): a multi-round question finds the answers its
    /// earlier rounds extracted there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_raw_output: Option<Value>,
}
