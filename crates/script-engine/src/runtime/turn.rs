//! The working context of one turn: the state being changed, the history the
//! prompts see, what the turn produced so far, and the helpers actions use
//! (variable lookup and writes, placeholder substitution, templates, LLM
//! calls with streaming and call records).

use super::degraded::DEGRADED_ACTIVE;
use super::engine::EngineOptions;
use super::llm_json::ContentStreamExtractor;
use super::monitor::MonitorRequest;
use super::placeholders::{substitute, value_to_text};
use super::prompts::beijing_time_text;
use super::templates::{ResolvedTemplate, TemplateSource};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use heartrule_domain::repair::{IntentReading, RepairIntent};
use heartrule_domain::sensitive::{self, SensitiveValues};
use heartrule_domain::{
    estimate_tokens, ContentSink, DegradedMode, DomainError, EngineState, ErrorKind, HistoryEntry,
    LlmCallRecord, LlmChunk, LlmError, LlmProvider, LlmRequest, LlmResponse, MessageRole,
    NewMessage, RecordedExchanges, SessionScript, TechniqueScript, VariableChange, VariableScope,
    VariableValue, DEGRADED_METADATA_KEY,
};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Where an action runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// Script-level phase and topic: they key the phase and topic scopes.
    pub phase_id: Option<String>,
    pub topic_id: Option<String>,
    /// How many skill frames are visible (0 = the session script itself);
    /// lookups see the innermost visible frame first.
    pub depth: usize,
}

/// How an LLM reply reaches the content sink while it is generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streaming {
    /// Not user-facing (think, extraction, monitors) or not worth streaming.
    Off,
    /// A JSON reply whose `content` field is the message.
    JsonContent,
    /// A plain-text reply that is the message (legacy rewrite).
    Raw,
}

/// A variable an action wants written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VariableWrite {
    pub name: String,
    pub scope: VariableScope,
    pub value: Value,
    /// The user's raw answer stored where the LLM was to extract a value
    /// but was unavailable (degraded mode): written with the source
    /// [`heartrule_domain::UNEXTRACTED_SOURCE`] instead of the action id.
    pub unextracted: bool,
}

/// How an action was invoked.
#[derive(Debug)]
pub(crate) struct ActionCall<'a> {
    pub loc: &'a Location,
    pub action_id: &'a str,
    /// The saved round when resuming, 0 on a fresh start.
    pub round: u32,
    /// The saved progress data when resuming, `Null` on a fresh start.
    pub data: Value,
    /// The user's input, for the first action of the turn only.
    pub input: Option<String>,
}

/// What an action produced. One code path ([`super::flow`]) turns this
/// into variables, messages, state metadata and the pending action.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ActionOutcome {
    pub completed: bool,
    /// The AI message; empty or absent means none.
    pub message: Option<String>,
    pub writes: Vec<VariableWrite>,
    /// Metadata of the AI message.
    pub metadata: Map<String, Value>,
    /// The round reported for this result; kept as the pending round when
    /// the action is incomplete.
    pub round: u32,
    pub max_rounds: u32,
    /// Progress data kept with the pending action.
    pub data: Value,
    pub exit_decision: Option<Value>,
    pub metrics: Option<Value>,
    /// Set when a monitor may review this (incomplete) result.
    pub monitor: Option<MonitorRequest>,
    /// Produced without the LLM (degraded mode); the message metadata says
    /// so too.
    pub degraded: bool,
    /// The source of the variables written, when not the action itself
    /// (declined answers).
    pub write_source: Option<&'static str>,
}

impl ActionOutcome {
    pub(crate) fn new(completed: bool, round: u32, max_rounds: u32) -> Self {
        Self {
            completed,
            message: None,
            writes: Vec::new(),
            metadata: Map::new(),
            round,
            max_rounds,
            data: Value::Null,
            exit_decision: None,
            metrics: None,
            monitor: None,
            degraded: false,
            write_source: None,
        }
    }

    /// Marks the result as produced without the LLM: flagged in the
    /// message metadata, never reviewed by a monitor.
    pub(crate) fn mark_degraded(&mut self) {
        self.degraded = true;
        self.monitor = None;
        self.metadata
            .insert(DEGRADED_METADATA_KEY.to_owned(), Value::Bool(true));
    }

    /// The message when there is one to show.
    pub(crate) fn visible_message(&self) -> Option<&str> {
        self.message.as_deref().filter(|m| !m.trim().is_empty())
    }
}

/// One turn in progress.
pub(crate) struct Turn {
    llm: Arc<dyn LlmProvider>,
    templates: Arc<dyn TemplateSource>,
    pub options: EngineOptions,
    pub script: Arc<SessionScript>,
    pub techniques: Arc<BTreeMap<String, TechniqueScript>>,
    pub state: EngineState,
    /// The history prompts see: the request's window plus this turn's messages.
    pub history: Vec<HistoryEntry>,
    pub now: DateTime<Utc>,
    sink: Option<Arc<dyn ContentSink>>,
    pub messages: Vec<NewMessage>,
    pub variable_changes: Vec<VariableChange>,
    pub llm_calls: Vec<LlmCallRecord>,
    /// Variables declared `sensitive: true` (in the script or its techniques).
    sensitive_names: BTreeSet<String>,
    /// Actions that extract a sensitive variable: their calls' text is
    /// withheld whole from telemetry and debug records.
    sensitive_actions: BTreeSet<String>,
    /// The LLM's safety reading of each action that gave one.
    pub safety_readings: Vec<Value>,
    /// History entries left out of this turn's prompts to fit the context
    /// window (summed over its calls).
    pub history_trimmed: usize,
    /// An LLM call of this turn found the LLM unavailable in degraded
    /// mode: the turn's later calls are not attempted (each could cost a
    /// full timeout with its retries); the next turn tries again.
    pub llm_unavailable: bool,
    /// The LLM was withheld from the whole turn (a spent token quota)
    /// rather than found unavailable.
    pub llm_withheld: bool,
    /// The local repair intent of the user's input, until the question it
    /// answers takes it.
    pub intent: Option<RepairIntent>,
    /// Whether the LLM's reading of an answer (`user_intent`) is acted on.
    pub llm_intents: bool,
    /// The repair intent the turn met (see [`heartrule_domain::TurnOutcome::repair`]).
    pub repair: Option<IntentReading>,
    /// The variables a skipped question left declined.
    pub declined: Vec<String>,
    /// A replay's recorded responses, used instead of the provider's.
    recorded: Option<Arc<dyn RecordedExchanges>>,
}

/// The `provider` of a call answered by a recorded response.
pub(crate) const RECORDED_PROVIDER: &str = "recorded";

/// An LLM call's response, and whether it is a recorded one a replay
/// reused rather than the provider's.
pub(crate) struct Answer {
    pub response: LlmResponse,
    pub reused: bool,
}

/// Why [`Turn::request_llm`] failed.
struct CallFailure {
    error: LlmError,
    /// Some of the reply had already reached the content sink, so the
    /// user saw part of an LLM message: too late to replace it.
    streamed: bool,
}

impl From<LlmError> for CallFailure {
    fn from(error: LlmError) -> Self {
        Self {
            error,
            streamed: false,
        }
    }
}

/// The state metadata key reporting how many history entries the last
/// turn's prompts left out to fit the model's context window.
pub const HISTORY_TRIMMED_KEY: &str = "historyTrimmed";

/// Everything [`Turn::new`] needs besides the ports.
pub(crate) struct TurnInput {
    pub script: Arc<SessionScript>,
    pub techniques: Arc<BTreeMap<String, TechniqueScript>>,
    pub state: EngineState,
    pub history: Vec<HistoryEntry>,
    pub now: DateTime<Utc>,
    pub sink: Option<Arc<dyn ContentSink>>,
    pub intent: Option<RepairIntent>,
    pub llm_intents: bool,
    /// The LLM is withheld from the whole turn (a spent token quota).
    pub llm_withheld: bool,
    /// A replay's recorded responses.
    pub recorded: Option<Arc<dyn RecordedExchanges>>,
}

/// An action failure that is not an LLM failure.
pub(crate) fn action_error(action_id: &str, message: impl Into<String>) -> DomainError {
    DomainError::new(ErrorKind::ActionExecution {
        action_id: action_id.to_owned(),
        message: message.into(),
    })
}

impl Turn {
    pub(crate) fn new(
        llm: Arc<dyn LlmProvider>,
        templates: Arc<dyn TemplateSource>,
        options: EngineOptions,
        input: TurnInput,
    ) -> Self {
        let mut history = input.history;
        let excess = history.len().saturating_sub(options.history_window);
        history.drain(..excess);
        let sensitive_names =
            sensitive::sensitive_variable_names(&input.script, input.techniques.values());
        let sensitive_actions = input
            .script
            .phases
            .iter()
            .flat_map(|p| p.topics.iter())
            .chain(input.techniques.values().map(|t| &t.topic))
            .flat_map(|t| t.actions.iter())
            .filter(|a| sensitive::action_extracts_sensitive(a))
            .map(|a| a.action_id.clone())
            .collect();
        Self {
            llm,
            templates,
            options,
            script: input.script,
            techniques: input.techniques,
            state: input.state,
            history,
            now: input.now,
            sink: input.sink,
            messages: Vec::new(),
            variable_changes: Vec::new(),
            llm_calls: Vec::new(),
            sensitive_names,
            sensitive_actions,
            safety_readings: Vec::new(),
            intent: input.intent,
            llm_intents: input.llm_intents,
            repair: None,
            declined: Vec::new(),
            // A withheld LLM is, for this turn, an unavailable one.
            llm_unavailable: input.llm_withheld,
            llm_withheld: input.llm_withheld,
            history_trimmed: 0,
            recorded: input.recorded,
        }
    }

    /// The prompt `build` makes from the newest `visible` conversation
    /// entries (system entries never reach a prompt), with the oldest of
    /// them dropped one by one while the prompt's estimated size leaves
    /// less than `max_tokens` of the context window. Never fails: a prompt
    /// that does not fit even without history is sent anyway, with a
    /// warning. The entries dropped are counted in `history_trimmed`.
    pub(crate) fn fit_prompt(
        &mut self,
        action_id: &str,
        visible: usize,
        max_tokens: u32,
        build: impl Fn(&Turn, &[HistoryEntry]) -> String,
    ) -> String {
        let budget = self
            .options
            .context_window_tokens
            .saturating_sub(max_tokens);
        let spoken: Vec<usize> = self
            .history
            .iter()
            .enumerate()
            .filter(|(_, e)| e.role != MessageRole::System)
            .map(|(i, _)| i)
            .collect();
        let shown = &spoken[spoken.len().saturating_sub(visible)..];
        let mut dropped = 0;
        loop {
            let start = shown.get(dropped).copied().unwrap_or(self.history.len());
            let prompt = build(self, &self.history[start..]);
            let fits = estimate_tokens(&prompt) <= budget;
            if fits || dropped == shown.len() {
                if !fits {
                    tracing::warn!(
                        action_id,
                        context_window_tokens = self.options.context_window_tokens,
                        max_tokens,
                        prompt_tokens = estimate_tokens(&prompt),
                        "prompt exceeds the context window even without history; sent anyway"
                    );
                }
                if dropped > 0 {
                    tracing::info!(
                        action_id,
                        history_trimmed = dropped,
                        "oldest history left out of the prompt to fit the context window"
                    );
                    self.history_trimmed += dropped;
                }
                return prompt;
            }
            dropped += 1;
        }
    }

    /// What an LLM call of `action_id` must keep out of telemetry and debug
    /// records: the current values of the sensitive variables, or the whole
    /// text when the action extracts one (its value is not known yet).
    pub(crate) fn sensitive_values(&self, action_id: &str) -> SensitiveValues {
        if self.sensitive_names.is_empty() {
            return SensitiveValues::none();
        }
        let mut values = SensitiveValues::of_store(&self.state.variables, &self.sensitive_names);
        for frame in &self.state.skill_frames {
            values.extend(&SensitiveValues::of_store(
                &frame.variables,
                &self.sensitive_names,
            ));
        }
        values.withholding_all(self.sensitive_actions.contains(action_id))
    }

    /// The location of an action running with `depth` skill frames visible.
    pub(crate) fn location(&self, depth: usize) -> Location {
        Location {
            phase_id: self.state.position.phase_id.clone(),
            topic_id: self.state.position.topic_id.clone(),
            depth,
        }
    }

    /// Scoped lookup: the visible skill frames innermost first, then
    /// topic → phase → session → global of the session.
    pub(crate) fn lookup(&self, loc: &Location, name: &str) -> Option<&Value> {
        let frames = &self.state.skill_frames[..loc.depth.min(self.state.skill_frames.len())];
        frames
            .iter()
            .rev()
            .find_map(|frame| {
                frame
                    .variables
                    .lookup(name, None, frame.position.topic_id.as_deref())
            })
            .or_else(|| {
                self.state
                    .variables
                    .lookup(name, loc.phase_id.as_deref(), loc.topic_id.as_deref())
            })
            .map(|v| &v.value)
    }

    pub(crate) fn lookup_text(&self, loc: &Location, name: &str) -> Option<String> {
        self.lookup(loc, name).map(value_to_text)
    }

    /// The user's name for prompts (`用户名`, else `来访者`).
    pub(crate) fn user_name(&self, loc: &Location) -> String {
        self.lookup_text(loc, "用户名")
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "来访者".to_owned())
    }

    /// The counsellor persona (`咨询师名`, else `fallback`).
    pub(crate) fn counselor_name(&self, loc: &Location, fallback: &str) -> String {
        self.lookup_text(loc, "咨询师名")
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| fallback.to_owned())
    }

    /// Action-level substitution of script text (task, topic content,
    /// skill inputs): system `{%time%}`/`{%user%}`/`{%who%}`, everything else
    /// from the scoped variables; unknown placeholders stay verbatim.
    pub(crate) fn substitute_text(&self, loc: &Location, text: &str) -> String {
        let system = |name: &str| match name {
            "time" => Some(beijing_time_text(self.now)),
            "user" => Some(self.user_name(loc)),
            "who" => Some(self.counselor_name(loc, "心理咨询师")),
            _ => None,
        };
        let script = |name: &str| self.lookup_text(loc, name);
        substitute(text, &system, &script)
    }

    /// Template-level substitution: `vars` are the template's system
    /// variables, the scoped variables fill the rest (profile fields such
    /// as `{{教育背景}}`).
    pub(crate) fn render(
        &self,
        loc: &Location,
        template: &str,
        vars: &BTreeMap<&str, String>,
    ) -> String {
        let system = |name: &str| vars.get(name).cloned();
        let script = |name: &str| self.lookup_text(loc, name);
        substitute(template, &system, &script)
    }

    /// Resolves a prompt template through the session's scheme.
    pub(crate) fn template(
        &self,
        action_id: &str,
        file: &str,
    ) -> Result<ResolvedTemplate, DomainError> {
        self.templates
            .resolve(self.state.template_scheme.as_deref(), file)
            .map_err(|e| action_error(action_id, format!("prompt template unavailable: {e}")))
    }

    /// Same as [`Self::template`] but keeps the template error (monitors
    /// treat a missing template as "no monitor").
    pub(crate) fn try_template(
        &self,
        file: &str,
    ) -> Result<ResolvedTemplate, super::templates::TemplateError> {
        self.templates
            .resolve(self.state.template_scheme.as_deref(), file)
    }

    /// One LLM call, recorded in the turn's call list. User-facing replies
    /// stream to the sink when the request has one. Any failure fails the
    /// action (the calls whose action cannot do without the LLM).
    pub(crate) async fn call_llm(
        &mut self,
        action_id: &str,
        purpose: &str,
        prompt: String,
        temperature: f32,
        max_tokens: u32,
        streaming: Streaming,
    ) -> Result<String, DomainError> {
        self.request_llm(
            action_id,
            purpose,
            prompt,
            temperature,
            max_tokens,
            streaming,
        )
        .await
        .map_err(|failure| DomainError::from(failure.error))
    }

    /// [`Self::call_llm`] for an action that can run on its scripted text:
    /// `Ok(None)` when the LLM is unavailable and the engine runs in
    /// [`DegradedMode::Scripted`] (the caller then degrades). Not when part
    /// of a streamed reply already reached the user: that turn fails as
    /// without degraded mode, rather than show two different messages.
    pub(crate) async fn call_llm_or_degrade(
        &mut self,
        action_id: &str,
        purpose: &str,
        prompt: String,
        temperature: f32,
        max_tokens: u32,
        streaming: Streaming,
    ) -> Result<Option<String>, DomainError> {
        if self.llm_unavailable {
            return Ok(None);
        }
        match self
            .request_llm(
                action_id,
                purpose,
                prompt,
                temperature,
                max_tokens,
                streaming,
            )
            .await
        {
            Ok(text) => Ok(Some(text)),
            Err(failure)
                if !failure.streamed && self.degrades_on(&failure.error, action_id, purpose) =>
            {
                Ok(None)
            }
            Err(failure) => Err(failure.error.into()),
        }
    }

    /// Whether a call that failed with `error` lets the action run on its
    /// scripted text: degraded mode is on and no provider could answer. When
    /// it does, the turn's later calls are not attempted.
    pub(crate) fn degrades_on(&mut self, error: &LlmError, action_id: &str, purpose: &str) -> bool {
        if self.options.degraded_mode != DegradedMode::Scripted || !error.means_unavailable() {
            return false;
        }
        tracing::warn!(
            action_id,
            purpose,
            error = %error,
            "LLM unavailable; degraded mode continues with the scripted text"
        );
        self.llm_unavailable = true;
        metrics::gauge!(DEGRADED_ACTIVE).set(1.0);
        true
    }

    /// Why this turn's actions ran without the LLM: `quota` when a spent
    /// token quota withheld it, else `llm_unavailable`.
    pub(crate) fn degraded_reason(&self) -> &'static str {
        if self.llm_withheld {
            "quota"
        } else {
            "llm_unavailable"
        }
    }

    /// Sends text the engine wrote itself (degraded mode) to the content
    /// sink, so a streaming client sees every message of the turn.
    pub(crate) fn emit(&self, action_id: &str, text: &str) {
        if let Some(sink) = &self.sink {
            if !text.is_empty() {
                sink.delta(action_id, text);
            }
        }
    }

    async fn request_llm(
        &mut self,
        action_id: &str,
        purpose: &str,
        prompt: String,
        temperature: f32,
        max_tokens: u32,
        streaming: Streaming,
    ) -> Result<String, CallFailure> {
        let request = self.llm_request(action_id, purpose, prompt, temperature, max_tokens);
        let answer = match self.sink_for(streaming) {
            Some(sink) => {
                let mut streamed = false;
                let response = self
                    .stream(&request, streaming, &mut |text| {
                        streamed = true;
                        sink.delta(action_id, text);
                    })
                    .await;
                response.map_err(|error| CallFailure { error, streamed })?
            }
            None => self.complete(&request).await?,
        };
        let text = answer.response.text.clone();
        self.record_call(action_id, request, answer);
        Ok(text)
    }

    /// The sink a call with `streaming` sends its text to, if any.
    pub(crate) fn sink_for(&self, streaming: Streaming) -> Option<Arc<dyn ContentSink>> {
        match streaming {
            Streaming::Off => None,
            Streaming::JsonContent | Streaming::Raw => self.sink.clone(),
        }
    }

    pub(crate) fn llm_request(
        &self,
        action_id: &str,
        purpose: &str,
        prompt: String,
        temperature: f32,
        max_tokens: u32,
    ) -> LlmRequest {
        LlmRequest {
            prompt,
            temperature,
            max_tokens,
            purpose: purpose.to_owned(),
            sensitive: self.sensitive_values(action_id),
        }
    }

    /// The provider's completion, or the response a replay recorded for
    /// the same prompt.
    pub(crate) async fn complete(&self, request: &LlmRequest) -> Result<Answer, LlmError> {
        if let Some(response) = self.recorded_response(request) {
            return Ok(Answer {
                response,
                reused: true,
            });
        }
        Ok(Answer {
            response: self.llm.complete(request).await?,
            reused: false,
        })
    }

    /// The response recorded for `request`'s prompt hash, when this turn
    /// replays a conversation that has one left.
    fn recorded_response(&self, request: &LlmRequest) -> Option<LlmResponse> {
        let text = self.recorded.as_ref()?.take(&request.prompt_hash())?;
        Some(LlmResponse {
            text,
            model: String::new(),
            provider: RECORDED_PROVIDER.to_owned(),
            finish_reason: None,
            usage: heartrule_domain::TokenUsage::default(),
        })
    }

    /// Adds an answered call to the turn's call list.
    pub(crate) fn record_call(&mut self, action_id: &str, request: LlmRequest, answer: Answer) {
        let Answer { response, reused } = answer;
        if self.options.degraded_mode == DegradedMode::Scripted && !reused {
            // The LLM answered: degraded mode is over (until the next failure).
            metrics::gauge!(DEGRADED_ACTIVE).set(0.0);
        }
        let prompt_hash = request.prompt_hash();
        // The debug record never holds a sensitive value.
        let masked_response = request.sensitive.mask(&response.text);
        self.llm_calls.push(LlmCallRecord {
            action_id: action_id.to_owned(),
            prompt: request.sensitive.mask(&request.prompt),
            response_masked: masked_response != response.text,
            response: masked_response,
            prompt_hash,
            reused,
            purpose: request.purpose,
            provider: response.provider,
            model: response.model,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            usage: response.usage,
            started_at: self.now,
        });
    }

    /// Streams one completion, handing message text to `visible` as it
    /// arrives (for a JSON reply, its `content` field only). The returned
    /// response carries the text assembled from the deltas, or the final
    /// chunk's text if no delta arrived. A response a replay recorded for
    /// the same prompt is handed over as one delta instead.
    pub(crate) async fn stream(
        &self,
        request: &LlmRequest,
        streaming: Streaming,
        visible: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Answer, LlmError> {
        let mut extractor =
            (streaming == Streaming::JsonContent).then(|| ContentStreamExtractor::new("content"));
        if let Some(response) = self.recorded_response(request) {
            let mut shown = match extractor.as_mut() {
                Some(extractor) => extractor.push(&response.text),
                None => response.text.clone(),
            };
            if let Some(rest) = extractor.as_mut().map(ContentStreamExtractor::finish) {
                shown.push_str(&rest);
            }
            if !shown.is_empty() {
                visible(&shown);
            }
            return Ok(Answer {
                response,
                reused: true,
            });
        }
        let mut stream = self.llm.stream(request).await?;
        let mut assembled = String::new();
        let mut done = None;
        while let Some(chunk) = stream.next().await {
            match chunk? {
                LlmChunk::Delta(text) => {
                    assembled.push_str(&text);
                    let shown = match extractor.as_mut() {
                        Some(extractor) => extractor.push(&text),
                        None => text,
                    };
                    if !shown.is_empty() {
                        visible(&shown);
                    }
                }
                LlmChunk::Done(response) => {
                    done = Some(response);
                    break;
                }
            }
        }
        if let Some(rest) = extractor.as_mut().map(ContentStreamExtractor::finish) {
            if !rest.is_empty() {
                visible(&rest);
            }
        }
        let mut response = done.ok_or_else(|| {
            LlmError::InvalidResponse("the stream ended without its final chunk".to_owned())
        })?;
        if !assembled.is_empty() {
            response.text = assembled;
        }
        Ok(Answer {
            response,
            reused: false,
        })
    }

    /// Writes a variable where `loc` sees it: the innermost visible skill
    /// frame, else the session's store (reported as a variable change).
    pub(crate) fn write_variable(
        &mut self,
        loc: &Location,
        name: &str,
        scope: VariableScope,
        value: Value,
        source: &str,
    ) {
        let record = VariableValue::new(value.clone(), source, scope, self.now);
        let depth = loc.depth.min(self.state.skill_frames.len());
        if let Some(frame) = depth
            .checked_sub(1)
            .and_then(|i| self.state.skill_frames.get_mut(i))
        {
            // Technique variables live in their frame until the output
            // mapping copies them out; they are not session variables.
            let key = match scope {
                VariableScope::Topic => frame.position.topic_id.clone(),
                _ => None,
            };
            frame.variables.set(name, scope, key.as_deref(), record);
            return;
        }
        let key = match scope {
            VariableScope::Topic => loc.topic_id.as_deref(),
            VariableScope::Phase => loc.phase_id.as_deref(),
            VariableScope::Session | VariableScope::Global => None,
        };
        let (scope, scope_key) = self.state.variables.set(name, scope, key, record);
        self.variable_changes.push(VariableChange {
            name: name.to_owned(),
            scope,
            scope_key,
            value,
            source: source.to_owned(),
        });
    }
}
