//! Privacy operations on one user's data: exporting everything stored about
//! them and erasing it. The [`UserDataStore`] port reads and deletes the
//! rows; the administration service (see [`crate::usecases`]) adds the cache,
//! the masking of sensitive values and the audit record.

use crate::ids::SessionId;
use crate::message::Message;
use crate::ports::{FailedTurn, LlmExchange, RepositoryError, VariableSnapshot};
use crate::sensitive::{mask_store, SensitiveValues};
use crate::session::Session;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Everything stored for one session of a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionData {
    /// The session with its current state and variables.
    pub session: Session,
    /// Every message, oldest first.
    pub messages: Vec<Message>,
    /// Every variable value every turn wrote, oldest first.
    pub variable_history: Vec<VariableSnapshot>,
    /// Turns that failed, with the words the user sent, oldest first.
    pub failed_turns: Vec<FailedTurn>,
    /// The LLM exchanges recorded for replays, by turn and call.
    #[serde(default)]
    pub llm_exchanges: Vec<LlmExchange>,
}

impl SessionData {
    /// Masks the variables named in `names` wherever they are stored, and
    /// their values' texts wherever else they appear (messages, failed
    /// turns, recorded LLM exchanges, engine bookkeeping).
    pub fn mask_sensitive(&mut self, names: &BTreeSet<String>) {
        if names.is_empty() {
            return;
        }
        let state = &self.session.state;
        let mut values = SensitiveValues::of_store(&state.variables, names);
        for frame in &state.skill_frames {
            values.extend(&SensitiveValues::of_store(&frame.variables, names));
        }
        values.extend(&SensitiveValues::from_values(
            self.variable_history
                .iter()
                .filter(|s| names.contains(&s.name))
                .map(|s| &s.value),
        ));

        let state = &mut self.session.state;
        mask_store(&mut state.variables, names);
        for frame in &mut state.skill_frames {
            mask_store(&mut frame.variables, names);
        }
        for value in state.metadata.values_mut() {
            values.mask_json(value);
        }
        if let Some(pending) = &mut state.pending_action {
            values.mask_json(&mut pending.data);
        }
        for snapshot in &mut self.variable_history {
            if names.contains(&snapshot.name) {
                snapshot.value = serde_json::Value::String(crate::SENSITIVE_MASK.to_owned());
            } else {
                values.mask_json(&mut snapshot.value);
            }
        }
        for message in &mut self.messages {
            message.content = values.mask(&message.content);
            values.mask_json(&mut message.metadata);
        }
        for failed in &mut self.failed_turns {
            if let Some(input) = &mut failed.user_input {
                *input = values.mask(input);
            }
        }
        for exchange in &mut self.llm_exchanges {
            exchange.response = values.mask(&exchange.response);
            if let Some(prompt) = &mut exchange.prompt {
                *prompt = values.mask(prompt);
            }
        }
    }
}

/// Everything stored for one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserData {
    /// Whose data this is.
    pub user_id: String,
    /// Their sessions, oldest first.
    pub sessions: Vec<SessionData>,
}

/// An export of one user's data as handed to an administrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserExport {
    /// Whose data this is.
    pub user_id: String,
    /// When the export was taken.
    pub exported_at: DateTime<Utc>,
    /// Whether sensitive variable values are shown; masked otherwise.
    pub sensitive_included: bool,
    /// Their sessions, oldest first.
    pub sessions: Vec<SessionData>,
}

/// How many rows of each kind an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErasedCounts {
    /// Sessions removed.
    pub sessions: u64,
    /// Messages removed.
    pub messages: u64,
    /// Variable snapshots removed.
    pub variable_snapshots: u64,
    /// Stored idempotent responses removed.
    pub idempotency_keys: u64,
    /// Failed-turn records removed.
    pub failed_turns: u64,
    /// Cache entries removed.
    pub cache_keys: u64,
}

/// What [`UserDataStore::erase_user`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasedUser {
    /// The ids of the removed sessions (their cache entries are now stale).
    pub sessions: Vec<SessionId>,
    /// The row counts (`cache_keys` stays 0: the store has no cache).
    pub counts: ErasedCounts,
}

/// The store side of the privacy operations.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UserDataStore: Send + Sync {
    /// Everything stored for `user_id`, read consistently (one snapshot).
    /// A user with no data has an export with no sessions.
    async fn export_user(&self, user_id: &str) -> Result<UserData, RepositoryError>;
    /// Deletes every session of `user_id` with every row that belongs to
    /// them (messages, variable snapshots, idempotency keys, failed turns,
    /// token usage, recorded LLM exchanges),
    /// all or nothing. A turn running meanwhile loses its lease: its commit
    /// writes nothing.
    async fn erase_user(&self, user_id: &str) -> Result<ErasedUser, RepositoryError>;
}
