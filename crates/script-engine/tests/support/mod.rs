//! Test harness shared by the engine's integration tests: the scripted fake
//! LLM (from `heartrule-testkit`; a call with no reply queued panics), small
//! prompt templates, and a driver that carries state and history from turn
//! to turn the way the session manager does.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeZone, Utc};
use heartrule_domain::{
    ContentSink, DomainError, EngineState, HistoryEntry, SessionScript, TechniqueScript,
    TurnOutcome, TurnRequest, VariableScope, VariableStore, VariableValue,
};
use heartrule_domain::{RecordedExchanges, RepairIntent, ScriptEngine};
use heartrule_script_engine::runtime::templates::{MemoryTemplates, TemplateSource};
use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use heartrule_testkit::fake_llm::FakeLlm;

/// A plain reply that does not exit: `{"content":"x","EXIT":"false"}`.
pub fn j(content: &str) -> String {
    serde_json::json!({ "content": content, "EXIT": "false" }).to_string()
}

/// Collects streamed deltas per action, and the retractions in order.
#[derive(Default)]
pub struct CollectingSink {
    pub deltas: Mutex<Vec<(String, String)>>,
    /// Every call: `Some(text)` a delta, `None` a retraction.
    pub events: Mutex<Vec<(String, Option<String>)>>,
}

impl CollectingSink {
    /// What a client shows of the action's message: the deltas since the
    /// last retraction.
    pub fn shown_for(&self, action_id: &str) -> String {
        let mut shown = String::new();
        for (id, event) in self.events.lock().unwrap().iter() {
            match event {
                _ if id != action_id => {}
                Some(text) => shown.push_str(text),
                None => shown.clear(),
            }
        }
        shown
    }

    pub fn retractions_for(&self, action_id: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, event)| id == action_id && event.is_none())
            .count()
    }

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
        self.events
            .lock()
            .unwrap()
            .push((action_id.to_owned(), Some(text.to_owned())));
    }

    fn retract(&self, action_id: &str) {
        self.events
            .lock()
            .unwrap()
            .push((action_id.to_owned(), None));
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
    /// The repair intent of the next turn's input (the session manager's
    /// local detector); cleared after each turn.
    pub intent: Option<RepairIntent>,
    /// Whether the engine acts on the LLM's `user_intent`.
    pub llm_intents: bool,
    /// Whether the next turns run without the LLM (a spent token quota).
    pub llm_withheld: bool,
    /// Recorded responses the next turns reuse (a replay).
    pub recorded: Option<Arc<dyn RecordedExchanges>>,
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
            intent: None,
            llm_intents: false,
            llm_withheld: false,
            recorded: None,
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
            templates: Arc::new(BTreeMap::new()),
            state: self.state.clone(),
            user_input: input.map(str::to_owned),
            history: self.history.clone(),
            now: test_now(),
            sink: self.sink.clone(),
            intent: self.intent,
            llm_intents: self.llm_intents,
            llm_withheld: self.llm_withheld,
            recorded: self.recorded.clone(),
        }
    }

    /// Runs a turn; on success the state and history move forward.
    pub async fn try_turn(&mut self, input: Option<&str>) -> Result<TurnOutcome, DomainError> {
        let request = self.request(input);
        self.intent = None;
        let outcome = self.engine.run_turn(request).await?;
        self.state = outcome.state.clone();
        for message in outcome.user_message.iter().chain(outcome.messages.iter()) {
            self.history.push(message.to_history());
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
