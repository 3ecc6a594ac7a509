//! Test harness shared by the engine's integration tests: a scripted fake
//! LLM, small prompt templates, and a driver that carries state and history
//! from turn to turn the way the session manager does.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use heartrule_domain::ScriptEngine;
use heartrule_domain::{
    ContentSink, DomainError, EngineState, HistoryEntry, LlmChunk, LlmError, LlmProvider,
    LlmRequest, LlmResponse, LlmStream, SessionScript, TechniqueScript, TokenUsage, TurnOutcome,
    TurnRequest, VariableScope, VariableStore, VariableValue,
};
use heartrule_script_engine::runtime::templates::{MemoryTemplates, TemplateSource};
use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// `J(x)` of reference §9: `{"content":"x","EXIT":"false"}`.
pub fn j(content: &str) -> String {
    serde_json::json!({ "content": content, "EXIT": "false" }).to_string()
}

/// One call the fake LLM received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    pub prompt: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub purpose: String,
    pub streamed: bool,
}

/// A FIFO queue of scripted replies. An unexpected call (empty queue)
/// panics, failing the test loudly.
#[derive(Default)]
pub struct FakeLlm {
    replies: Mutex<VecDeque<Result<String, LlmError>>>,
    calls: Mutex<Vec<RecordedCall>>,
}

impl FakeLlm {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn reply(&self, text: impl Into<String>) {
        self.replies.lock().unwrap().push_back(Ok(text.into()));
    }

    pub fn replies<I, S>(&self, texts: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for text in texts {
            self.reply(text);
        }
    }

    pub fn fail(&self, error: LlmError) {
        self.replies.lock().unwrap().push_back(Err(error));
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.calls.lock().unwrap().clone()
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    pub fn last_call(&self) -> RecordedCall {
        self.calls().last().cloned().expect("no LLM call was made")
    }

    pub fn pending_replies(&self) -> usize {
        self.replies.lock().unwrap().len()
    }

    fn next(&self, request: &LlmRequest, streamed: bool) -> Result<LlmResponse, LlmError> {
        self.calls.lock().unwrap().push(RecordedCall {
            prompt: request.prompt.clone(),
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            purpose: request.purpose.clone(),
            streamed,
        });
        let next = self.replies.lock().unwrap().pop_front();
        let Some(next) = next else {
            panic!(
                "FakeLlm: unexpected `{}` call, no reply queued",
                request.purpose
            );
        };
        next.map(|text| LlmResponse {
            usage: TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15,
            },
            text,
            model: "fake-model".into(),
            provider: "fake".into(),
            finish_reason: Some("stop".into()),
        })
    }
}

#[async_trait]
impl LlmProvider for FakeLlm {
    fn name(&self) -> &str {
        "fake"
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        self.next(request, false)
    }

    /// Yields the reply in chunks of three characters, then `Done`.
    async fn stream(&self, request: &LlmRequest) -> Result<LlmStream, LlmError> {
        let response = self.next(request, true)?;
        let chars: Vec<char> = response.text.chars().collect();
        let mut items: Vec<Result<LlmChunk, LlmError>> = chars
            .chunks(3)
            .map(|c| Ok(LlmChunk::Delta(c.iter().collect())))
            .collect();
        items.push(Ok(LlmChunk::Done(response)));
        Ok(Box::pin(futures::stream::iter(items)))
    }
}

/// Collects streamed deltas per action.
#[derive(Default)]
pub struct CollectingSink {
    pub deltas: Mutex<Vec<(String, String)>>,
}

impl CollectingSink {
    pub fn text_for(&self, action_id: &str) -> String {
        self.deltas
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| id == action_id)
            .map(|(_, text)| text.as_str())
            .collect()
    }

    pub fn delta_count(&self) -> usize {
        self.deltas.lock().unwrap().len()
    }
}

impl ContentSink for CollectingSink {
    fn delta(&self, action_id: &str, text: &str) {
        self.deltas
            .lock()
            .unwrap()
            .push((action_id.to_owned(), text.to_owned()));
    }
}

pub const ASK_TEMPLATE: &str = "[ask]
时间：{{time}}
你是{{who}}，来访者是{{user}}，角色{{ai_role}}。
<task>
{{task}}
</task>
对话：
{{chat}}
语气：{{tone}}
退出条件：{{exit}}
请输出：
{
  \"content\": \"问题\",
  \"EXIT\": \"false\",
{{output_list}}
}";

pub const SAY_TEMPLATE: &str = "[say]
时间：{{time}} 咨询师：{{who}} 来访者：{{user}}
<topic_content>
{{topic_content}}
</topic_content>
历史：
{{chat_history}}
语气：{{tone}} 阈值：{{understanding_threshold}} 轮次：{{current_round}}/{{max_rounds}}";

pub const THINK_TEMPLATE: &str = "[think]
{{time}}
<task>
{{task}}
</task>
输入：
{{input_variables}}
对话：
{{chat}}
输出：
{
{{output_list}}
}";

pub const ASK_MONITOR_TEMPLATE: &str =
    "[ask-monitor] 轮次 {{current_round}}/{{max_rounds}} 目标 {{target_variables}} 投入 {{user_engagement}} 趋势 {{engagement_trend}}";

pub const CRISIS_ASK_TEMPLATE: &str = "[crisis-ask]
<task>
{{task}}
</task>
{{output_list}}";

/// The test templates: every default plus the `crisis_intervention` ask.
pub fn test_templates() -> Vec<(String, String)> {
    [
        ("default/ai_ask_v1.md", ASK_TEMPLATE),
        ("default/ai_say_v1.md", SAY_TEMPLATE),
        ("default/ai_think_v1.md", THINK_TEMPLATE),
        ("default/ai_ask_monitor_v1.md", ASK_MONITOR_TEMPLATE),
        (
            "custom/crisis_intervention/ai_ask_v1.md",
            CRISIS_ASK_TEMPLATE,
        ),
    ]
    .into_iter()
    .map(|(path, text)| (path.to_owned(), text.to_owned()))
    .collect()
}

pub fn memory_templates() -> Arc<dyn TemplateSource> {
    Arc::new(MemoryTemplates::new(test_templates()))
}

/// A session script in the domain's canonical serde format.
pub fn script(yaml: &str) -> SessionScript {
    serde_yaml::from_str(yaml).expect("test script YAML")
}

pub fn technique(yaml: &str) -> TechniqueScript {
    serde_yaml::from_str(yaml).expect("test technique YAML")
}

/// The fixed clock reading of every test turn.
pub fn test_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 59, 0).unwrap()
}

/// Drives an engine turn by turn, carrying state and history forward the
/// way the session manager does (only on success).
pub struct Harness {
    pub engine: HeartRuleEngine,
    pub llm: Arc<FakeLlm>,
    pub script: Arc<SessionScript>,
    pub techniques: Arc<BTreeMap<String, TechniqueScript>>,
    pub state: EngineState,
    pub history: Vec<HistoryEntry>,
    pub sink: Option<Arc<dyn ContentSink>>,
}

impl Harness {
    pub fn new(yaml: &str) -> Self {
        Self::build(yaml, memory_templates(), EngineOptions::default())
    }

    pub fn build(yaml: &str, templates: Arc<dyn TemplateSource>, options: EngineOptions) -> Self {
        let llm = FakeLlm::new();
        let engine = HeartRuleEngine::new(llm.clone(), templates, options);
        Self {
            engine,
            llm,
            script: Arc::new(script(yaml)),
            techniques: Arc::new(BTreeMap::new()),
            state: EngineState::initial(VariableStore::default()),
            history: Vec::new(),
            sink: None,
        }
    }

    pub fn with_technique(mut self, yaml: &str) -> Self {
        let technique = technique(yaml);
        let mut techniques = (*self.techniques).clone();
        techniques.insert(technique.technique_id.clone(), technique);
        self.techniques = Arc::new(techniques);
        self
    }

    /// Seeds a variable the way `initialVariables` arrive: session scope.
    pub fn set_session_var(&mut self, name: &str, value: Value) {
        self.state.variables.set(
            name,
            VariableScope::Session,
            None,
            VariableValue::new(value, "initial", VariableScope::Session, test_now()),
        );
    }

    pub fn request(&self, input: Option<&str>) -> TurnRequest {
        TurnRequest {
            script: self.script.clone(),
            techniques: self.techniques.clone(),
            state: self.state.clone(),
            user_input: input.map(str::to_owned),
            history: self.history.clone(),
            now: test_now(),
            sink: self.sink.clone(),
        }
    }

    /// Runs a turn; on success the state and history move forward.
    pub async fn try_turn(&mut self, input: Option<&str>) -> Result<TurnOutcome, DomainError> {
        let outcome = self.engine.run_turn(self.request(input)).await?;
        self.state = outcome.state.clone();
        for message in outcome.user_message.iter().chain(outcome.messages.iter()) {
            self.history.push(HistoryEntry {
                role: message.role,
                content: message.content.clone(),
                action_id: message.action_id.clone(),
                metadata: message.metadata.clone(),
            });
        }
        Ok(outcome)
    }

    pub async fn turn(&mut self, input: Option<&str>) -> TurnOutcome {
        match self.try_turn(input).await {
            Ok(outcome) => outcome,
            Err(error) => panic!("turn failed: {error} ({:?})", error.context),
        }
    }

    /// A variable as the engine's lookup sees it at script level.
    pub fn session_var(&self, name: &str) -> Option<Value> {
        self.state
            .variables
            .session
            .get(name)
            .map(|v| v.value.clone())
    }
}

/// The contents of the AI messages of an outcome.
pub fn contents(outcome: &TurnOutcome) -> Vec<String> {
    outcome.messages.iter().map(|m| m.content.clone()).collect()
}
