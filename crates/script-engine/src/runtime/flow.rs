//! The walk of one turn: phases → topics → actions from
//! the saved position, skill frames innermost first, one pause rule, one
//! result-handling path.

use super::cursor::{settle, settle_in_topic};
use super::degraded::DEGRADED_ACTIONS_TOTAL;
use super::turn::{action_error, ActionCall, ActionOutcome, Location, Turn, HISTORY_TRIMMED_KEY};
use super::{ask, monitor, say, think};
use heartrule_domain::{
    Action, ActionKind, DomainError, ErrorKind, ExecutionStatus, HistoryEntry, MessageRole,
    NewMessage, PendingAction, TurnOutcome, LLM_RAW_OUTPUT, UNEXTRACTED_SOURCE,
};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tracing::Instrument;

/// A runaway guard: no legitimate turn takes this many steps.
const STEP_LIMIT: usize = 10_000;
/// How many entries the bookkeeping lists of the state metadata keep.
const METADATA_LOG_LIMIT: usize = 50;

/// What the walk found at the cursor.
enum Step {
    /// The session script is finished.
    End,
    /// The innermost technique topic is finished.
    SkillEnd,
    /// An action to run at this depth.
    Run(Box<Action>, usize),
}

impl Turn {
    /// Runs the turn to its pause or end.
    pub(crate) async fn run(mut self, input: Option<String>) -> Result<TurnOutcome, DomainError> {
        let mut user_message = input.as_ref().map(|text| {
            let pending = self.state.pending_action.as_ref();
            NewMessage {
                role: MessageRole::User,
                content: text.clone(),
                action_id: pending.map(|p| p.action_id.clone()),
                action_type: pending.map(|p| p.action_type),
                metadata: Value::Object(Map::new()),
            }
        });
        if self.state.status == ExecutionStatus::Completed {
            return Ok(self.finish(user_message));
        }
        if let Some(message) = &user_message {
            self.history.push(HistoryEntry {
                role: MessageRole::User,
                content: message.content.clone(),
                action_id: message.action_id.clone(),
                llm_raw_output: None,
            });
        }
        self.state.status = ExecutionStatus::Running;
        if !self.state.metadata.contains_key("sessionConfig") {
            self.state.template_scheme = self.script.template_scheme.clone();
            self.state.metadata.insert(
                "sessionConfig".to_owned(),
                json!({ "template_scheme": self.state.template_scheme }),
            );
        }
        self.walk(input).await?;
        // The answer that skipped its question says so in the history.
        if let (Some(message), Some(reading)) = (user_message.as_mut(), self.repair) {
            message.metadata = json!({
                "repair": {
                    "intent": reading.intent,
                    "source": reading.source,
                    "declined": self.declined,
                }
            });
        }
        Ok(self.finish(user_message))
    }

    async fn walk(&mut self, mut input: Option<String>) -> Result<(), DomainError> {
        let mut pending = self.state.pending_action.take();
        for _ in 0..STEP_LIMIT {
            let (action, depth) = match self.step()? {
                Step::End => {
                    self.state.status = ExecutionStatus::Completed;
                    self.state.skill_frames.clear();
                    self.state.pending_action = None;
                    return Ok(());
                }
                Step::SkillEnd => {
                    self.finish_skill()?;
                    continue;
                }
                Step::Run(action, depth) => (*action, depth),
            };
            let loc = self.location(depth);
            let span = tracing::info_span!(
                "engine.action",
                "action.id" = %action.action_id,
                "action.type" = action.action_type().as_str(),
                "phase.id" = loc.phase_id.as_deref().unwrap_or(""),
                "topic.id" = self.topic_id_at(depth).unwrap_or(""),
                "script.session_id" = %self.script.session_id,
            );
            if let ActionKind::UseSkill(config) = &action.kind {
                span.in_scope(|| self.start_skill(&loc, &action, config))
                    .map_err(|e| self.at_position(e))?;
                continue;
            }

            // Only the first action of the turn can be the one that waited.
            let resumed = pending.take().filter(|p| {
                let matches =
                    p.action_id == action.action_id && p.action_type == action.action_type();
                if !matches {
                    tracing::warn!(
                        pending = %p.action_id,
                        found = %action.action_id,
                        "pending action no longer at the cursor; starting the action afresh"
                    );
                }
                matches
            });
            let was_resumed = resumed.is_some();
            let call = ActionCall {
                loc: &loc,
                action_id: &action.action_id,
                round: resumed.as_ref().map_or(0, |p| p.round),
                data: resumed.map_or(Value::Null, |p| p.data),
                input: input.take(),
            };
            let outcome = self
                .execute(&action, call)
                .instrument(span.clone())
                .await
                .map_err(|e| self.at_position(e))?;

            let completed = outcome.completed;
            let has_message = outcome.visible_message().is_some();
            self.apply(&loc, &action, outcome).instrument(span).await;
            if !completed {
                self.state.status = ExecutionStatus::WaitingInput;
                return Ok(());
            }
            self.advance(depth);
            // The pause rule: a waiting action that now completed with a
            // message gets the user's answer before the script moves on.
            if was_resumed && has_message {
                self.state.status = ExecutionStatus::WaitingInput;
                self.sync_ids(depth);
                return Ok(());
            }
        }
        Err(
            self.at_position(DomainError::new(ErrorKind::Internal(format!(
                "turn exceeded {STEP_LIMIT} steps"
            )))),
        )
    }

    /// Finds what runs next, syncing the cursor's ids with the script.
    fn step(&mut self) -> Result<Step, DomainError> {
        let script = Arc::clone(&self.script);
        let top = settle(&mut self.state.position, &script).cloned();
        let depth = self.state.skill_frames.len();
        let Some(frame_index) = depth.checked_sub(1) else {
            return Ok(top.map_or(Step::End, |action| Step::Run(Box::new(action), 0)));
        };
        let techniques = Arc::clone(&self.techniques);
        let frame = &mut self.state.skill_frames[frame_index];
        let Some(technique) = techniques.get(&frame.technique_id) else {
            let error = action_error(
                &frame.caller_action_id,
                format!("technique `{}` is not available", frame.technique_id),
            );
            return Err(self.at_position(error));
        };
        Ok(
            match settle_in_topic(&mut frame.position, &technique.topic) {
                Some(action) => Step::Run(Box::new(action.clone()), depth),
                None => Step::SkillEnd,
            },
        )
    }

    /// Syncs the ids of the cursor at `depth` (and the session cursor)
    /// after it moved, so a paused state names the next action.
    fn sync_ids(&mut self, depth: usize) {
        let script = Arc::clone(&self.script);
        settle(&mut self.state.position, &script);
        let techniques = Arc::clone(&self.techniques);
        if let Some(frame) = depth
            .checked_sub(1)
            .and_then(|i| self.state.skill_frames.get_mut(i))
        {
            if let Some(technique) = techniques.get(&frame.technique_id) {
                settle_in_topic(&mut frame.position, &technique.topic);
            }
        }
    }

    /// The topic id actions at `depth` run in (for spans).
    fn topic_id_at(&self, depth: usize) -> Option<&str> {
        match depth.checked_sub(1) {
            Some(i) => self
                .state
                .skill_frames
                .get(i)
                .and_then(|f| f.position.topic_id.as_deref()),
            None => self.state.position.topic_id.as_deref(),
        }
    }

    /// Moves the cursor at `depth` to the next action.
    pub(crate) fn advance(&mut self, depth: usize) {
        match depth.checked_sub(1) {
            Some(i) => {
                if let Some(frame) = self.state.skill_frames.get_mut(i) {
                    frame.position.action_index += 1;
                }
            }
            None => self.state.position.action_index += 1,
        }
    }

    /// Attaches the position of the failing action (bug 2: it is kept).
    pub(crate) fn at_position(&self, error: DomainError) -> DomainError {
        if error.context.position.is_some() {
            return error;
        }
        error.with_position(self.state.position.clone())
    }

    async fn execute(
        &mut self,
        action: &Action,
        call: ActionCall<'_>,
    ) -> Result<ActionOutcome, DomainError> {
        match &action.kind {
            ActionKind::Say(config) => say::run(self, call, config).await,
            ActionKind::Ask(config) => ask::run(self, call, config).await,
            ActionKind::Think(config) => think::run(self, call, config).await,
            ActionKind::UseSkill(_) => Err(action_error(
                &action.action_id,
                "use_skill is run by the turn walk, not as a single action",
            )),
        }
    }

    /// The one result-handling path (bug 5): variables, round info, exit
    /// decisions, metrics, message, monitor and pending action are written
    /// the same way whether the action was resumed or started this turn.
    async fn apply(&mut self, loc: &Location, action: &Action, outcome: ActionOutcome) {
        let action_id = action.action_id.as_str();
        let action_type = action.action_type();
        for write in &outcome.writes {
            let source = if write.unextracted {
                UNEXTRACTED_SOURCE
            } else {
                outcome.write_source.unwrap_or(action_id)
            };
            self.write_variable(loc, &write.name, write.scope, write.value.clone(), source);
        }

        let timestamp = self.now.to_rfc3339();
        if outcome.degraded {
            let reason = self.degraded_reason();
            metrics::counter!(
                DEGRADED_ACTIONS_TOTAL,
                "action_type" => action_type.as_str(),
                "reason" => reason,
            )
            .increment(1);
            // The state keeps the trace even for actions without a message
            // (ai_think, a finished ai_ask).
            push_capped(
                &mut self.state.metadata,
                "degradedActions",
                json!({
                    "actionId": action_id,
                    "actionType": action_type.as_str(),
                    "reason": reason,
                    "timestamp": timestamp,
                }),
            );
        }
        let round_info = json!({
            "currentRound": outcome.round,
            "maxRounds": outcome.max_rounds,
            "lastUpdated": timestamp,
        });
        let metadata = &mut self.state.metadata;
        let round_infos = metadata
            .entry("actionRoundInfo".to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !round_infos.is_object() {
            *round_infos = Value::Object(Map::new());
        }
        if let Some(map) = round_infos.as_object_mut() {
            map.insert(action_id.to_owned(), round_info);
        }
        metadata.insert(
            "lastActionRoundInfo".to_owned(),
            json!({
                "actionId": action_id,
                "currentRound": outcome.round,
                "maxRounds": outcome.max_rounds,
            }),
        );
        if let Some(decision) = &outcome.exit_decision {
            let mut entry =
                json!({ "actionId": action_id, "decision": decision, "timestamp": timestamp });
            // A finished ai_ask has no message to carry its exit reason.
            if let (Some(reason), Some(map)) =
                (outcome.metadata.get("exit_reason"), entry.as_object_mut())
            {
                map.insert("exitReason".to_owned(), reason.clone());
            }
            push_capped(metadata, "exitDecisions", entry);
        }
        if let Some(metrics) = &outcome.metrics {
            push_capped(
                metadata,
                "actionMetricsHistory",
                json!({
                    "actionId": action_id,
                    "actionType": action_type.as_str(),
                    "metrics": metrics,
                    "timestamp": timestamp,
                }),
            );
        }

        // Kept whether or not the action shows a message: the session
        // manager's crisis protocol reads them.
        self.safety_readings
            .extend(heartrule_domain::safety::safety_reading(&outcome.metadata));
        if let Some(message) = outcome.visible_message() {
            let metadata = Value::Object(outcome.metadata.clone());
            self.history.push(HistoryEntry {
                role: MessageRole::Assistant,
                content: message.to_owned(),
                action_id: Some(action_id.to_owned()),
                llm_raw_output: outcome.metadata.get(LLM_RAW_OUTPUT).cloned(),
            });
            self.messages.push(NewMessage {
                role: MessageRole::Assistant,
                content: message.to_owned(),
                action_id: Some(action_id.to_owned()),
                action_type: Some(action_type),
                metadata,
            });
        }

        if outcome.completed {
            self.state.pending_action = None;
            return;
        }
        let mut data = outcome.data.clone();
        // Without the LLM a monitor has nothing to call.
        if self.options.monitors && !self.llm_unavailable {
            if let Some(request) = &outcome.monitor {
                if let Some(feedback) = monitor::review(self, loc, action_id, request).await {
                    if !data.is_object() {
                        data = Value::Object(Map::new());
                    }
                    if let Some(map) = data.as_object_mut() {
                        map.insert(monitor::FEEDBACK_KEY.to_owned(), Value::String(feedback));
                    }
                }
            }
        }
        self.state.pending_action = Some(PendingAction {
            action_id: action_id.to_owned(),
            action_type,
            round: outcome.round,
            max_rounds: outcome.max_rounds,
            data,
        });
    }

    /// The outcome of the turn; the position reports the waiting round.
    fn finish(mut self, user_message: Option<NewMessage>) -> TurnOutcome {
        let pending = self.state.pending_action.as_ref();
        self.state.position.current_round = pending.map(|p| p.round);
        self.state.position.max_rounds = pending.map(|p| p.max_rounds);
        // Only this turn's trimming is reported; a later turn that fits
        // clears it.
        if self.history_trimmed > 0 {
            self.state
                .metadata
                .insert(HISTORY_TRIMMED_KEY.to_owned(), self.history_trimmed.into());
        } else {
            self.state.metadata.remove(HISTORY_TRIMMED_KEY);
        }
        TurnOutcome {
            state: self.state,
            user_message,
            messages: self.messages,
            variable_changes: self.variable_changes,
            llm_calls: self.llm_calls,
            safety_readings: self.safety_readings,
            repair: self.repair,
        }
    }
}

/// Appends to a bookkeeping list of the state metadata, keeping the newest
/// [`METADATA_LOG_LIMIT`] entries so the state stays bounded.
pub(crate) fn push_capped(
    metadata: &mut std::collections::BTreeMap<String, Value>,
    key: &str,
    entry: Value,
) {
    let list = metadata
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    if let Some(items) = list.as_array_mut() {
        items.push(entry);
        let excess = items.len().saturating_sub(METADATA_LOG_LIMIT);
        items.drain(..excess);
    }
}
