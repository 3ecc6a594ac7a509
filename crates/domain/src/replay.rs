//! Replays: a stored session's user messages run again, in memory, against
//! a version of its script, and compared turn by turn with the stored
//! conversation — the regression check for editing a script that is in use.
//!
//! Each committed turn records its LLM exchanges (prompt hash and response,
//! see [`crate::LlmExchange`]). A replay hands them to the engine as
//! [`RecordedResponses`]: a call whose prompt is unchanged gets its recorded
//! response, and only what the replayed version asks anew goes to the LLM.
//! Nothing of a replay is written to the store.
//! [`crate::SessionManager::replay`] runs one.

use crate::engine::RecordedExchanges;
use crate::ports::LlmExchange;
use crate::variables::VariableScope;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Recorded responses by prompt hash, each handed out once, in recording
/// order (the [`RecordedExchanges`] of a replay).
#[derive(Debug, Default)]
pub struct RecordedResponses {
    by_hash: Mutex<HashMap<String, VecDeque<String>>>,
}

impl RecordedResponses {
    /// The responses of `exchanges`, which are in recording order (turn
    /// number, then call index).
    #[must_use]
    pub fn new(exchanges: &[LlmExchange]) -> Self {
        let mut by_hash: HashMap<String, VecDeque<String>> = HashMap::new();
        for exchange in exchanges {
            by_hash
                .entry(exchange.prompt_hash.clone())
                .or_default()
                .push_back(exchange.response.clone());
        }
        Self {
            by_hash: Mutex::new(by_hash),
        }
    }

    /// How many responses are left unused.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.by_hash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(VecDeque::len)
            .sum()
    }
}

impl RecordedExchanges for RecordedResponses {
    fn take(&self, prompt_hash: &str) -> Option<String> {
        self.by_hash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(prompt_hash)
            .and_then(VecDeque::pop_front)
    }
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    /// The session replayed.
    pub session_id: crate::ids::SessionId,
    /// Its script.
    pub script_id: crate::ids::ScriptId,
    /// The version the session ran on (`None`: it started before versions
    /// were kept and no version has its content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_version: Option<u32>,
    /// The version replayed (`None` as for `stored_version` when the replay
    /// ran on the session's own content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<u32>,
    /// Content hash of the replayed version.
    pub target_hash: String,
    /// Engine turns of the stored conversation (the opening turn, then one
    /// per user message).
    pub turns_stored: usize,
    /// Turns replayed up to and including the first divergence.
    pub turns_replayed: usize,
    /// Whether the replayed conversation departs from the stored one.
    pub diverged: bool,
    /// Where it first departs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_divergence: Option<Divergence>,
    /// LLM calls answered by a recorded response.
    pub llm_calls_reused: usize,
    /// LLM calls that went to the provider.
    pub llm_calls_made: usize,
    /// LLM exchanges the session has recorded.
    pub recorded_exchanges: usize,
    /// Said when the session has no recorded exchange (it ran before
    /// recording existed, or made no LLM call): every LLM call of the replay
    /// went to the provider, so wording may differ without any edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What differs at the first turn that departs from the stored conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DivergenceAspect {
    /// The AI messages (their action ids or texts).
    Messages,
    /// The topic path reached ("phase/topic/action").
    Position,
    /// Variable values.
    Variables,
    /// The execution status after the last turn.
    Status,
    /// The replayed turn failed.
    Error,
}

/// The first turn at which the replay departs from the stored conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Divergence {
    /// 1 for the opening turn, then one more per user message.
    pub turn: usize,
    /// The user message the turn answered (none for the opening turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_message: Option<String>,
    /// What differs.
    pub aspects: Vec<DivergenceAspect>,
    /// The action of the first AI message that differs (the last one when
    /// the messages agree) in the stored conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_action_id: Option<String>,
    /// The same in the replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_action_id: Option<String>,
    /// "phase/topic/action" the stored conversation reached: of the turn's
    /// last AI message, and after the last turn the session's position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_topic_path: Option<String>,
    /// The same in the replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_topic_path: Option<String>,
    /// The variables whose values differ after the turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<VariableDifference>,
    /// The text of the stored AI message named by `stored_action_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_ai_text: Option<String>,
    /// The text of the replayed AI message named by `replayed_action_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_ai_text: Option<String>,
    /// Why the replayed turn failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A variable set differently (or on one side only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariableDifference {
    /// The variable's name.
    pub name: String,
    /// The scope it was written in.
    pub scope: VariableScope,
    /// The phase or topic id of those scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_key: Option<String>,
    /// Its value in the stored conversation (`None`: not set there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<Value>,
    /// Its value in the replay (`None`: not set there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TurnId;
    use chrono::Utc;

    fn exchange(hash: &str, response: &str) -> LlmExchange {
        LlmExchange {
            turn_id: TurnId::new_random(),
            turn_number: 1,
            call_index: 0,
            action_id: "a".into(),
            purpose: "ai_say".into(),
            prompt_hash: hash.into(),
            prompt: None,
            response: response.into(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn a_prompt_asked_twice_gets_its_answers_in_recording_order_once_each() {
        let recorded = RecordedResponses::new(&[
            exchange("h1", "one"),
            exchange("h2", "x"),
            exchange("h1", "two"),
        ]);
        assert_eq!(recorded.remaining(), 3);
        assert_eq!(recorded.take("h1").as_deref(), Some("one"));
        assert_eq!(recorded.take("h1").as_deref(), Some("two"));
        assert_eq!(recorded.take("h1"), None);
        assert_eq!(recorded.take("unknown"), None);
        assert_eq!(recorded.remaining(), 1);
    }
}
