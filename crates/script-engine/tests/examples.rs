//! Every example script under examples/scripts loads (compatible mode) and
//! runs from its first turn to `completed` with a fake LLM that answers each
//! prompt kind the way a cooperative model would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use heartrule_domain::{
    DegradedMode, EngineState, ExecutionStatus, HistoryEntry, LlmChunk, LlmError, LlmProvider,
    LlmRequest, LlmResponse, LlmStream, LoadMode, NewMessage, ScriptDocument, ScriptEngine,
    SessionScript, TechniqueScript, TokenUsage, TurnRequest, VariableStore, DEGRADED_METADATA_KEY,
    UNEXTRACTED_SOURCE,
};
use heartrule_script_engine::loader::load;
use heartrule_script_engine::runtime::templates::EmbeddedTemplates;
use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

const HELLO: &str = include_str!("../../../examples/scripts/hello.yaml");
const CBT_INTAKE: &str = include_str!("../../../examples/scripts/cbt_intake.yaml");
const DEPRECATED: &str = include_str!("../../../examples/scripts/deprecated_fields.yaml");
const SOCRATIC: &str =
    include_str!("../../../examples/scripts/techniques/socratic_questioning.yaml");

/// Answers by purpose: questions end after one answer, says are understood,
/// think steps fill every requested output key.
struct CooperativeLlm;

impl CooperativeLlm {
    fn reply(request: &LlmRequest) -> String {
        match request.purpose.as_str() {
            "ai_ask" => json!({"content": "Could you tell me more?", "EXIT": "true"}).to_string(),
            "ai_say" => json!({
                "content": "I hear you.",
                "EXIT": "false",
                "metadata": {"assessment": {"understanding_level": 95, "has_questions": false}}
            })
            .to_string(),
            "ai_think" => Value::Object(output_keys(&request.prompt)).to_string(),
            "extract" => "extracted value".to_owned(),
            purpose if purpose.contains("monitor") => {
                json!({"intervention_needed": false}).to_string()
            }
            _ => "Thank you for sharing that.".to_owned(),
        }
    }
}

/// Keys of the prompt's output list (`  "k": "提取的k"` lines).
fn output_keys(prompt: &str) -> Map<String, Value> {
    prompt
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('"')?;
            let (key, tail) = rest.split_once('"')?;
            tail.contains(&format!("\"提取的{key}\""))
                .then(|| (key.to_owned(), json!(format!("value of {key}"))))
        })
        .collect()
}

#[async_trait]
impl LlmProvider for CooperativeLlm {
    fn name(&self) -> &str {
        "cooperative-fake"
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        Ok(LlmResponse {
            text: Self::reply(request),
            model: "fake".into(),
            provider: "fake".into(),
            finish_reason: Some("stop".into()),
            usage: TokenUsage::default(),
        })
    }

    async fn stream(&self, request: &LlmRequest) -> Result<LlmStream, LlmError> {
        let response = self.complete(request).await?;
        let chunks = vec![
            Ok(LlmChunk::Delta(response.text.clone())),
            Ok(LlmChunk::Done(response)),
        ];
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

fn session_of(yaml: &str) -> SessionScript {
    match load(yaml, LoadMode::Compatible).unwrap().document {
        ScriptDocument::Session(session) => session,
        ScriptDocument::Technique(_) => panic!("expected a session script"),
    }
}

fn technique_of(yaml: &str) -> TechniqueScript {
    match load(yaml, LoadMode::Compatible).unwrap().document {
        ScriptDocument::Technique(technique) => technique,
        ScriptDocument::Session(_) => panic!("expected a technique script"),
    }
}

/// Runs the script with one answer per turn until it completes; returns the
/// final state and the number of turns.
async fn run_to_completion(
    script: SessionScript,
    techniques: BTreeMap<String, TechniqueScript>,
) -> (EngineState, usize) {
    let engine = HeartRuleEngine::new(
        Arc::new(CooperativeLlm),
        Arc::new(EmbeddedTemplates::new()),
        EngineOptions::default(),
    );
    let (state, turns, _) = run_with(&engine, script, techniques).await;
    (state, turns)
}

/// [`run_to_completion`] on a given engine; also returns every AI message.
async fn run_with(
    engine: &HeartRuleEngine,
    script: SessionScript,
    techniques: BTreeMap<String, TechniqueScript>,
) -> (EngineState, usize, Vec<NewMessage>) {
    let mut ai_messages = Vec::new();
    let script = Arc::new(script);
    let techniques = Arc::new(techniques);
    let mut state = EngineState::initial(VariableStore::default());
    let mut history: Vec<HistoryEntry> = Vec::new();
    for turn in 0..60 {
        let request = TurnRequest {
            script: Arc::clone(&script),
            techniques: Arc::clone(&techniques),
            templates: Arc::new(BTreeMap::new()),
            state: state.clone(),
            user_input: (turn > 0).then(|| format!("answer {turn}")),
            history: history.clone(),
            now: Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
            sink: None,
            intent: None,
            llm_intents: false,
            llm_withheld: false,
            recorded: None,
        };
        let outcome = engine.run_turn(request).await.unwrap();
        for message in outcome.user_message.iter().chain(&outcome.messages) {
            history.push(message.to_history());
        }
        ai_messages.extend(outcome.messages);
        state = outcome.state;
        if state.status == ExecutionStatus::Completed {
            return (state, turn + 1, ai_messages);
        }
        assert_eq!(state.status, ExecutionStatus::WaitingInput, "turn {turn}");
    }
    panic!("script did not complete within 60 turns");
}

#[tokio::test]
async fn hello_runs_to_completion() {
    let (state, turns) = run_to_completion(session_of(HELLO), BTreeMap::new()).await;
    assert_eq!(turns, 2);
    assert!(state.variables.session.contains_key("visitor_name"));
}

#[tokio::test]
async fn cbt_intake_runs_to_completion_through_its_technique() {
    let technique = technique_of(SOCRATIC);
    let techniques = BTreeMap::from([(technique.technique_id.clone(), technique)]);
    let (state, turns) = run_to_completion(session_of(CBT_INTAKE), techniques).await;
    assert!(turns > 5, "only {turns} turns");
    let flat = state.variables.flat();
    for name in [
        "user_name",
        "session_summary",
        "homework",
        "balanced_thought",
    ] {
        assert!(flat.contains_key(name), "missing {name}: {flat:?}");
    }
    assert!(state.skill_frames.is_empty());
}

/// Every call finds the breaker open, as behind an LLM that went down.
struct DownLlm(std::sync::atomic::AtomicUsize);

#[async_trait]
impl LlmProvider for DownLlm {
    fn name(&self) -> &str {
        "down"
    }

    async fn complete(&self, _: &LlmRequest) -> Result<LlmResponse, LlmError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(LlmError::CircuitOpen)
    }

    async fn stream(&self, _: &LlmRequest) -> Result<LlmStream, LlmError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(LlmError::CircuitOpen)
    }
}

#[tokio::test]
async fn cbt_intake_completes_on_scripted_texts_when_the_llm_is_down() {
    let llm = Arc::new(DownLlm(0.into()));
    let engine = HeartRuleEngine::new(
        llm.clone(),
        Arc::new(EmbeddedTemplates::new()),
        EngineOptions {
            degraded_mode: DegradedMode::Scripted,
            ..EngineOptions::default()
        },
    );
    let technique = technique_of(SOCRATIC);
    let techniques = BTreeMap::from([(technique.technique_id.clone(), technique)]);
    let (state, turns, messages) = run_with(&engine, session_of(CBT_INTAKE), techniques).await;
    assert_eq!(state.status, ExecutionStatus::Completed);
    // One call per turn at most: after the first unavailable answer the
    // turn runs on without calling.
    let calls = llm.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(calls <= turns, "{calls} calls in {turns} turns");

    let texts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        texts[0],
        "Hello, and thank you for coming today. I'm here to listen and to think things through with you.",
        "the greeting is the scripted text, unrewritten"
    );
    assert!(
        texts.contains(&"Ask how the client would like to be addressed during our conversations."),
        "{texts:?}"
    );
    assert!(messages
        .iter()
        .all(|m| m.metadata[DEGRADED_METADATA_KEY] == true));
    // The user's raw answers stand in for the extracted values, flagged.
    let name = &state.variables.session["user_name"];
    assert_eq!(name.source, UNEXTRACTED_SOURCE);
    assert!(name.value.as_str().unwrap().starts_with("answer "));
    assert_eq!(
        texts.last().copied(),
        Some(
            format!(
                "Thank you, {}. You did real work today. See you next time.",
                name.value.as_str().unwrap()
            )
            .as_str()
        )
    );
    // ai_think wrote nothing; the technique ran through under the same rules.
    let flat = state.variables.flat();
    assert!(!flat.contains_key("formulation"));
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Ask what makes the thought")),
        "{texts:?}"
    );
    assert!(state.skill_frames.is_empty());
    let degraded = state.metadata["degradedActions"].as_array().unwrap();
    assert!(degraded.iter().any(|d| d["actionType"] == "ai_think"));
}

#[tokio::test]
async fn deprecated_fields_script_runs_to_completion_in_compatible_mode() {
    assert!(load(DEPRECATED, LoadMode::Strict).is_err());
    let (state, _) = run_to_completion(session_of(DEPRECATED), BTreeMap::new()).await;
    assert_eq!(state.status, ExecutionStatus::Completed);
}
