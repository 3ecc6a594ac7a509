//! Sessions: one user walking one script.

use crate::engine::EngineState;
use crate::ids::{ScriptId, SessionId};
use crate::script::ActionType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Lifecycle of the session row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Active,
    Paused,
    Completed,
    Failed,
    /// Paused by the crisis protocol until an editor or admin releases it
    /// (or the configured cooldown has passed).
    Handoff,
}

impl SessionStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Handoff => "handoff",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            "handoff" => Some(Self::Handoff),
            _ => None,
        }
    }
}

/// Where the engine stands after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Running,
    WaitingInput,
    Paused,
    Completed,
    Error,
}

impl ExecutionStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::WaitingInput => "waiting_input",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Error => "error",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "running" => Some(Self::Running),
            "waiting_input" => Some(Self::WaitingInput),
            "paused" => Some(Self::Paused),
            "completed" => Some(Self::Completed),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// The engine's cursor: indices into the script plus the ids they name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    pub phase_index: usize,
    pub topic_index: usize,
    pub action_index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_type: Option<ActionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_round: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u32>,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: SessionId,
    pub user_id: String,
    pub script_id: ScriptId,
    /// Content hash of the script version the session last ran; keys the
    /// parsed-script cache so a stale cache entry can never be used.
    pub script_hash: String,
    pub status: SessionStatus,
    pub state: EngineState,
    /// Number of committed turns; the next turn's sequence number.
    pub turn_count: u64,
    /// Sequence number of the last stored message (0 when none).
    pub last_message_seq: i64,
    /// Code of the last failed turn, cleared by the next committed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

impl Session {
    #[must_use]
    pub fn execution_status(&self) -> ExecutionStatus {
        self.state.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_their_spelling() {
        for s in [
            ExecutionStatus::Running,
            ExecutionStatus::WaitingInput,
            ExecutionStatus::Paused,
            ExecutionStatus::Completed,
            ExecutionStatus::Error,
        ] {
            assert_eq!(ExecutionStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in [
            SessionStatus::Active,
            SessionStatus::Paused,
            SessionStatus::Completed,
            SessionStatus::Failed,
            SessionStatus::Handoff,
        ] {
            assert_eq!(SessionStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SessionStatus::parse("bogus"), None);
    }

    #[test]
    fn position_serializes_camel_case() {
        let p = Position {
            phase_index: 1,
            action_type: Some(ActionType::AiAsk),
            ..Position::default()
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["phaseIndex"], 1);
        assert_eq!(json["actionType"], "ai_ask");
        assert!(json.get("phaseId").is_none());
    }
}
