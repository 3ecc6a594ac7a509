//! [`SessionManager::replay`]: a stored session run again in memory against
//! a version of its script (see [`crate::replay`]).

use super::{RunnableScript, SessionManager};
use crate::actor::Actor;
use crate::audit::{AuditAction, AuditEvent, AuditLog};
use crate::engine::{EngineState, RecordedExchanges, ScriptEngine, TurnRequest};
use crate::error::{DomainError, ErrorKind};
use crate::ids::{SessionId, TurnId};
use crate::message::{HistoryEntry, Message, MessageRole, NewMessage};
use crate::ports::{
    Clock, IdGenerator, LlmExchange, MessageHistory, ScriptRepository, VariableSnapshot,
};
use crate::ports_bundle::Ports;
use crate::repair::RepairIntent;
use crate::replay::{
    Divergence, DivergenceAspect, RecordedResponses, ReplayReport, VariableDifference,
};
use crate::script::{ActionType, SessionScript};
use crate::session::{Position, Session};
use crate::variables::{VariableScope, VariableStore, VariableValue};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The source of the variables a session was created with.
const INITIAL_SOURCE: &str = "initial";

/// Said in a report when the session recorded no LLM exchange.
const NO_RECORDING_NOTE: &str = "The session has no recorded LLM exchanges (it ran before \
     recording existed, or made no LLM call): every LLM call of the replay went to the LLM, so \
     wording may differ even where the script did not change.";

/// One engine turn of the stored conversation.
struct StoredTurn {
    /// `None` for an opening turn that stored no message.
    turn_id: Option<TurnId>,
    user: Option<Message>,
    /// The AI messages, in order.
    replies: Vec<Message>,
}

/// Variable values by scope, scope key and name, as a conversation set them.
type Values = BTreeMap<(VariableScope, Option<String>, String), Value>;

/// What one side of a turn shows, for the comparison.
struct TurnView<'a> {
    /// `(action id, text)` of each AI message.
    replies: Vec<(Option<&'a str>, &'a str)>,
    topic_path: Option<String>,
}

impl<P: Ports> SessionManager<P> {
    /// [`Self::replay`] for `actor`, who needs the editor or admin role.
    pub(super) async fn replay_as(
        &self,
        actor: &Actor,
        id: SessionId,
        version: Option<u32>,
    ) -> Result<ReplayReport, DomainError> {
        if !actor.may_manage_scripts() {
            return Err(DomainError::new(ErrorKind::Forbidden(
                "replaying a session needs the editor or admin role".into(),
            ))
            .with_session(id));
        }
        let report = self.replay(id, version).await?;
        let a = &self.adapters;
        let event = AuditEvent::new(
            a.ids.audit_event_id(),
            a.clock.now(),
            actor,
            AuditAction::SessionReplay,
            id.to_string(),
        )
        .with_hashes(None, Some(report.target_hash.clone()))
        .with_details(json!({
            "scriptId": report.script_id,
            "storedVersion": report.stored_version,
            "targetVersion": report.target_version,
            "diverged": report.diverged,
            "turnsReplayed": report.turns_replayed,
            "llmCallsMade": report.llm_calls_made,
        }));
        // Recorded before the conversation's content is handed out.
        a.audit
            .record(&event)
            .await
            .map_err(|e| DomainError::from(e).with_session(id))?;
        event.log();
        Ok(report)
    }

    /// Replays session `id` against version `version` of its script (by
    /// default the version the session ran on): the opening turn, then each
    /// stored user message in order, each at the time its turn ran and on
    /// the replayed history, with the session's recorded LLM exchanges
    /// reused wherever the prompt is unchanged. The comparison stops at the
    /// first turn that departs from the stored conversation (AI messages,
    /// topic path, variables; the status after the last turn). Nothing is
    /// written. Acts for the system and checks no actor (the
    /// [`crate::Conversations`] port does).
    ///
    /// # Errors
    /// `SESSION_NOT_FOUND`, `VERSION_NOT_FOUND`, and storage errors. A
    /// replayed turn that fails is a divergence, not an error.
    pub async fn replay(
        &self,
        id: SessionId,
        version: Option<u32>,
    ) -> Result<ReplayReport, DomainError> {
        let a = &self.adapters;
        let session = self.get_session(id).await?;
        let script_id = session.script_id;
        let in_session = |e: DomainError| e.with_session(id);
        let stored_version = a
            .scripts
            .find_version_by_hash(script_id, &session.script_hash)
            .await
            .map_err(|e| in_session(e.into()))?;
        let (target_version, target_hash) = match version {
            Some(number) => {
                let found = a
                    .scripts
                    .get_version(script_id, number)
                    .await
                    .map_err(|e| in_session(e.into()))?
                    .ok_or_else(|| {
                        DomainError::new(ErrorKind::VersionNotFound { script_id, number })
                            .with_script(script_id, None)
                            .with_session(id)
                    })?;
                (Some(found.number), found.content_hash)
            }
            None => (
                stored_version.as_ref().map(|v| v.number),
                session.script_hash.clone(),
            ),
        };
        let stored_script = self
            .runnable_script(script_id, Some(&session.script_hash))
            .await
            .map_err(in_session)?;
        let target = self
            .runnable_script(script_id, Some(&target_hash))
            .await
            .map_err(in_session)?;
        let messages = a
            .history
            .list_messages(id, 0, usize::MAX)
            .await
            .map_err(|e| in_session(e.into()))?;
        let snapshots = a
            .history
            .list_variable_snapshots(id)
            .await
            .map_err(|e| in_session(e.into()))?;
        let exchanges = a
            .history
            .list_llm_exchanges(id)
            .await
            .map_err(|e| in_session(e.into()))?;

        let turns = stored_turns(messages);
        let mut run = Replay {
            manager: self,
            target: &target,
            stored_script: &stored_script.session,
            session: &session,
            recorded: Arc::new(RecordedResponses::new(&exchanges)),
            state: EngineState::initial(initial_variables(&session.state.variables)),
            history: Vec::new(),
            stored_values: Values::new(),
            replayed_values: Values::new(),
            reused: 0,
            made: 0,
        };
        let mut divergence = None;
        let mut replayed = 0;
        for (index, turn) in turns.iter().enumerate() {
            replayed += 1;
            let last = index + 1 == turns.len();
            let found = run
                .turn(index + 1, turn, last, &snapshots, &exchanges)
                .await;
            if found.is_some() {
                divergence = found;
                break;
            }
        }
        Ok(ReplayReport {
            session_id: id,
            script_id,
            stored_version: stored_version.map(|v| v.number),
            target_version,
            target_hash: target.content_hash.clone(),
            turns_stored: turns.len(),
            turns_replayed: replayed,
            diverged: divergence.is_some(),
            first_divergence: divergence,
            llm_calls_reused: run.reused,
            llm_calls_made: run.made,
            recorded_exchanges: exchanges.len(),
            note: exchanges.is_empty().then(|| NO_RECORDING_NOTE.to_owned()),
        })
    }
}

/// A replay in progress: the replayed conversation so far and what the
/// stored one had set at the same turn.
struct Replay<'a, P: Ports> {
    manager: &'a SessionManager<P>,
    target: &'a RunnableScript,
    stored_script: &'a SessionScript,
    session: &'a Session,
    recorded: Arc<RecordedResponses>,
    state: EngineState,
    history: Vec<HistoryEntry>,
    stored_values: Values,
    replayed_values: Values,
    reused: usize,
    made: usize,
}

impl<P: Ports> Replay<'_, P> {
    /// Replays stored turn `number` and compares it; the divergence found.
    async fn turn(
        &mut self,
        number: usize,
        stored: &StoredTurn,
        last: bool,
        snapshots: &[VariableSnapshot],
        exchanges: &[LlmExchange],
    ) -> Option<Divergence> {
        let user_input = stored.user.as_ref().map(|m| m.content.clone());
        let mut divergence = Divergence {
            turn: number,
            user_message: user_input.clone(),
            aspects: Vec::new(),
            stored_action_id: None,
            replayed_action_id: None,
            stored_topic_path: None,
            replayed_topic_path: None,
            variables: Vec::new(),
            stored_ai_text: None,
            replayed_ai_text: None,
            error: None,
        };
        // Repair intents are read as the live turn read them: only in
        // answers to a question, a local skip given to the engine.
        let repair = self.manager.repair().filter(|_| {
            self.state
                .pending_action
                .as_ref()
                .is_some_and(|p| p.action_type == ActionType::AiAsk)
        });
        let intent = match (&repair, &user_input) {
            (Some(r), Some(input)) => r
                .detector
                .detect(input)
                .map(|m| m.intent)
                .filter(|i| *i == RepairIntent::Skip),
            _ => None,
        };
        let window = self.manager.config.history_window;
        let request = TurnRequest {
            script: Arc::clone(&self.target.session),
            techniques: Arc::clone(&self.target.techniques),
            templates: Arc::clone(&self.target.templates),
            state: self.state.clone(),
            user_input,
            history: self.history[self.history.len().saturating_sub(window)..].to_vec(),
            now: turn_time(stored, exchanges, self.session),
            sink: None,
            intent,
            llm_intents: repair.is_some(),
            llm_withheld: false,
            recorded: Some(Arc::clone(&self.recorded) as Arc<dyn RecordedExchanges>),
        };
        let outcome = match self.manager.adapters.engine.run_turn(request).await {
            Ok(outcome) => outcome,
            Err(error) => {
                divergence.aspects.push(DivergenceAspect::Error);
                divergence.error = Some(error.to_string());
                return Some(divergence);
            }
        };
        let reused = outcome.llm_calls.iter().filter(|c| c.reused).count();
        self.reused += reused;
        self.made += outcome.llm_calls.len() - reused;
        let safety = std::mem::take(&mut self.state.safety);
        self.state = outcome.state.clone();
        self.state.safety = safety;
        self.history.extend(
            outcome
                .user_message
                .iter()
                .chain(&outcome.messages)
                .map(NewMessage::to_history),
        );

        if let Some(turn_id) = stored.turn_id {
            for snapshot in snapshots.iter().filter(|s| s.turn_id == turn_id) {
                self.stored_values.insert(
                    (
                        snapshot.scope,
                        snapshot.scope_key.clone(),
                        snapshot.name.clone(),
                    ),
                    snapshot.value.clone(),
                );
            }
        }
        for change in &outcome.variable_changes {
            self.replayed_values.insert(
                (change.scope, change.scope_key.clone(), change.name.clone()),
                change.value.clone(),
            );
        }

        let stored_view = TurnView {
            replies: stored
                .replies
                .iter()
                .map(|m| (m.action_id.as_deref(), m.content.as_str()))
                .collect(),
            topic_path: if last {
                Some(position_path(&self.session.state.position))
            } else {
                stored
                    .replies
                    .last()
                    .and_then(|m| m.action_id.as_deref())
                    .map(|action| topic_path(self.stored_script, action))
            },
        };
        let replayed_replies: Vec<&NewMessage> = outcome
            .messages
            .iter()
            .filter(|m| m.role != MessageRole::User)
            .collect();
        let replayed_view = TurnView {
            replies: replayed_replies
                .iter()
                .map(|m| (m.action_id.as_deref(), m.content.as_str()))
                .collect(),
            topic_path: if last {
                Some(position_path(&self.state.position))
            } else {
                replayed_replies
                    .last()
                    .and_then(|m| m.action_id.as_deref())
                    .map(|action| topic_path(&self.target.session, action))
            },
        };

        if stored_view.replies != replayed_view.replies {
            divergence.aspects.push(DivergenceAspect::Messages);
        }
        if stored_view.topic_path != replayed_view.topic_path {
            divergence.aspects.push(DivergenceAspect::Position);
        }
        divergence.variables = differences(&self.stored_values, &self.replayed_values);
        if !divergence.variables.is_empty() {
            divergence.aspects.push(DivergenceAspect::Variables);
        }
        if last && self.session.state.status != self.state.status {
            divergence.aspects.push(DivergenceAspect::Status);
        }
        if divergence.aspects.is_empty() {
            return None;
        }
        // The first message that differs, else the last of each side.
        let at = stored_view
            .replies
            .iter()
            .zip(&replayed_view.replies)
            .position(|(s, r)| s != r)
            .unwrap_or_else(|| stored_view.replies.len().min(replayed_view.replies.len()));
        let pick = |replies: &[(Option<&str>, &str)]| {
            replies
                .get(at)
                .or_else(|| replies.last())
                .map(|(action, text)| (action.map(str::to_owned), (*text).to_owned()))
        };
        if let Some((action, text)) = pick(&stored_view.replies) {
            divergence.stored_action_id = action;
            divergence.stored_ai_text = Some(text);
        }
        if let Some((action, text)) = pick(&replayed_view.replies) {
            divergence.replayed_action_id = action;
            divergence.replayed_ai_text = Some(text);
        }
        divergence.stored_topic_path = stored_view.topic_path;
        divergence.replayed_topic_path = replayed_view.topic_path;
        Some(divergence)
    }
}

/// The stored messages as engine turns: the opening turn, then one per
/// user message. Turns without a user message after the opening one (a
/// release from handoff) did not run the script and are left out.
fn stored_turns(messages: Vec<Message>) -> Vec<StoredTurn> {
    let mut turns: Vec<StoredTurn> = Vec::new();
    for message in messages {
        let same_turn = turns
            .last()
            .is_some_and(|t| t.turn_id == Some(message.turn_id));
        if !same_turn {
            turns.push(StoredTurn {
                turn_id: Some(message.turn_id),
                user: None,
                replies: Vec::new(),
            });
        }
        let Some(turn) = turns.last_mut() else {
            continue;
        };
        if message.role == MessageRole::User {
            turn.user = Some(message);
        } else {
            turn.replies.push(message);
        }
    }
    // An opening turn that said nothing stored no message.
    if turns.first().is_none_or(|t| t.user.is_some()) {
        turns.insert(
            0,
            StoredTurn {
                turn_id: None,
                user: None,
                replies: Vec::new(),
            },
        );
    }
    let mut turns = turns.into_iter();
    let opening = turns.next();
    opening
        .into_iter()
        .chain(turns.filter(|t| t.user.is_some()))
        .collect()
}

/// The clock reading a stored turn ran with: the one its LLM calls
/// recorded (prompts show it), else when its messages were stored.
fn turn_time(stored: &StoredTurn, exchanges: &[LlmExchange], session: &Session) -> DateTime<Utc> {
    stored
        .turn_id
        .and_then(|id| exchanges.iter().find(|e| e.turn_id == id))
        .map(|e| e.created_at)
        .or_else(|| stored.user.as_ref().map(|m| m.created_at))
        .or_else(|| stored.replies.first().map(|m| m.created_at))
        .unwrap_or(session.created_at)
}

/// The variables the session was created with (its `initialVariables`).
fn initial_variables(store: &VariableStore) -> VariableStore {
    let mut initial = VariableStore::default();
    for (name, value) in &store.session {
        if value.source == INITIAL_SOURCE {
            let var = VariableValue::new(
                value.value.clone(),
                INITIAL_SOURCE,
                VariableScope::Session,
                value.last_updated,
            );
            initial.set(name, VariableScope::Session, None, var);
        }
    }
    initial
}

/// "phase/topic/action" of `action_id` in `script` (the action id alone
/// when the script has no such action, e.g. one of a technique).
fn topic_path(script: &SessionScript, action_id: &str) -> String {
    script
        .phases
        .iter()
        .flat_map(|p| p.topics.iter().map(move |t| (p, t)))
        .find(|(_, t)| t.actions.iter().any(|a| a.action_id == action_id))
        .map_or_else(
            || action_id.to_owned(),
            |(p, t)| format!("{}/{}/{action_id}", p.phase_id, t.topic_id),
        )
}

/// "phase/topic/action" of a position.
fn position_path(position: &Position) -> String {
    format!(
        "{}/{}/{}",
        position.phase_id.as_deref().unwrap_or_default(),
        position.topic_id.as_deref().unwrap_or_default(),
        position.action_id.as_deref().unwrap_or_default()
    )
}

/// The variables set differently on the two sides, in key order.
fn differences(stored: &Values, replayed: &Values) -> Vec<VariableDifference> {
    let mut keys: Vec<_> = stored.keys().chain(replayed.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| stored.get(*key) != replayed.get(*key))
        .map(|key| VariableDifference {
            name: key.2.clone(),
            scope: key.0,
            scope_key: key.1.clone(),
            stored: stored.get(key).cloned(),
            replayed: replayed.get(key).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MessageId, SessionId};
    use serde_json::json;

    fn message(turn: TurnId, seq: i64, role: MessageRole, content: &str) -> Message {
        Message {
            id: MessageId::new_random(),
            session_id: SessionId::new_random(),
            seq,
            turn_id: turn,
            role,
            content: content.into(),
            action_id: (role == MessageRole::Assistant).then(|| format!("a{seq}")),
            action_type: None,
            metadata: json!({}),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn stored_messages_group_into_engine_turns() {
        let (t1, t2, release, t3) = (
            TurnId::new_random(),
            TurnId::new_random(),
            TurnId::new_random(),
            TurnId::new_random(),
        );
        let turns = stored_turns(vec![
            message(t1, 1, MessageRole::Assistant, "hello"),
            message(t1, 2, MessageRole::Assistant, "name?"),
            message(t2, 3, MessageRole::User, "Ann"),
            message(t2, 4, MessageRole::Assistant, "hi Ann"),
            message(release, 5, MessageRole::System, "released"),
            message(t3, 6, MessageRole::User, "ok"),
        ]);
        let shape: Vec<(Option<TurnId>, Option<&str>, usize)> = turns
            .iter()
            .map(|t| {
                (
                    t.turn_id,
                    t.user.as_ref().map(|m| m.content.as_str()),
                    t.replies.len(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (Some(t1), None, 2),
                (Some(t2), Some("Ann"), 1),
                (Some(t3), Some("ok"), 0),
            ],
            "the release from handoff ran no script"
        );

        // An opening turn that said nothing stored no message.
        let turns = stored_turns(vec![message(t2, 1, MessageRole::User, "Ann")]);
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0].turn_id, None);
        assert!(stored_turns(Vec::new()).len() == 1);
    }

    #[test]
    fn differences_name_each_variable_set_differently_or_on_one_side() {
        let key = |name: &str| (VariableScope::Session, None, name.to_owned());
        let stored = Values::from([
            (key("same"), json!(1)),
            (key("changed"), json!("a")),
            (key("gone"), json!(true)),
        ]);
        let replayed = Values::from([
            (key("same"), json!(1)),
            (key("changed"), json!("b")),
            (key("new"), json!([1])),
        ]);
        let found: Vec<(String, Option<Value>, Option<Value>)> = differences(&stored, &replayed)
            .into_iter()
            .map(|d| (d.name, d.stored, d.replayed))
            .collect();
        assert_eq!(
            found,
            [
                ("changed".to_owned(), Some(json!("a")), Some(json!("b"))),
                ("gone".to_owned(), Some(json!(true)), None),
                ("new".to_owned(), None, Some(json!([1]))),
            ]
        );
    }

    #[test]
    fn only_the_initial_variables_seed_a_replay() {
        let mut store = VariableStore::default();
        let at = Utc::now();
        for (name, source) in [("age", INITIAL_SOURCE), ("mood", "ask_mood")] {
            let value = VariableValue::new(json!(name), source, VariableScope::Session, at);
            store.set(name, VariableScope::Session, None, value);
        }
        let initial = initial_variables(&store);
        assert!(initial.session.contains_key("age"));
        assert!(!initial.session.contains_key("mood"));
    }

    #[test]
    fn a_turn_records_its_calls_but_not_masked_responses_and_prompts_only_when_allowed() {
        let call = |action: &str, masked: bool| crate::engine::LlmCallRecord {
            action_id: action.into(),
            purpose: "ai_say".into(),
            prompt: format!("prompt of {action}"),
            response: format!("reply of {action}"),
            provider: "mock".into(),
            model: "m".into(),
            temperature: 0.7,
            max_tokens: 100,
            usage: crate::llm::TokenUsage::default(),
            started_at: Utc::now(),
            prompt_hash: format!("hash of {action}"),
            reused: false,
            response_masked: masked,
        };
        let calls = [call("a", false), call("secret", true), call("b", false)];
        let turn = TurnId::new_random();
        let without = super::super::recorded_exchanges(&calls, turn, 3, false);
        let kept: Vec<(u32, &str, Option<&str>)> = without
            .iter()
            .map(|e| (e.call_index, e.action_id.as_str(), e.prompt.as_deref()))
            .collect();
        assert_eq!(kept, [(0, "a", None), (2, "b", None)]);
        assert!(without
            .iter()
            .all(|e| e.turn_number == 3 && e.turn_id == turn));
        assert_eq!(without[1].response, "reply of b");
        assert_eq!(without[1].prompt_hash, "hash of b");
        assert_eq!(without[0].created_at, calls[0].started_at);
        let with = super::super::recorded_exchanges(&calls, turn, 3, true);
        assert_eq!(with[0].prompt.as_deref(), Some("prompt of a"));
    }
}
