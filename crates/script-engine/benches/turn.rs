//! One engine turn of a small script with an instant fake LLM: what the
//! engine itself costs per turn (prompt building, parsing, bookkeeping).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use heartrule_domain::{
    EngineState, LlmChunk, LlmError, LlmProvider, LlmRequest, LlmResponse, LlmStream, ScriptEngine,
    SessionScript, TokenUsage, TurnRequest, VariableScope, VariableStore, VariableValue,
};
use heartrule_script_engine::runtime::templates::EmbeddedTemplates;
use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Answers instantly with a fixed reply per purpose.
struct InstantLlm;

fn reply_for(purpose: &str) -> String {
    match purpose {
        "rewrite" => "你好，欢迎来到今天的咨询，我们可以慢慢聊。".to_owned(),
        "ai_ask" => r#"{"content":"最近睡得怎么样？","EXIT":"false","BRIEF":"询问睡眠","睡眠":"一般",
            "metrics":{"information_completeness":"中","user_engagement":"高","emotional_intensity":"低","reply_relevance":"高"},
            "progress_suggestion":"continue_needed"}"#
            .to_owned(),
        _ => r#"{"content":"好的"}"#.to_owned(),
    }
}

#[async_trait]
impl LlmProvider for InstantLlm {
    fn name(&self) -> &str {
        "instant"
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        Ok(LlmResponse {
            text: reply_for(&request.purpose),
            model: "instant".into(),
            provider: "instant".into(),
            finish_reason: None,
            usage: TokenUsage::default(),
        })
    }

    async fn stream(&self, request: &LlmRequest) -> Result<LlmStream, LlmError> {
        let response = self.complete(request).await?;
        Ok(Box::pin(futures::stream::iter([Ok(LlmChunk::Done(
            response,
        ))])))
    }
}

const SCRIPT: &str = "
session_id: bench
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - {action_id: hello, action_type: ai_say, config: {content: '你好{用户名}，欢迎。', require_acknowledgment: false}}
          - action_id: sleep
            action_type: ai_ask
            config:
              content: 了解{用户名}最近的睡眠
              output: [{get: 睡眠, define: 睡眠质量}, {get: 入睡时间}]
              max_rounds: 5
";

fn bench_turns(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let engine = HeartRuleEngine::new(
        Arc::new(InstantLlm),
        Arc::new(EmbeddedTemplates::new()),
        EngineOptions::default(),
    );
    let script: Arc<SessionScript> = Arc::new(serde_yaml::from_str(SCRIPT).expect("script"));
    let mut variables = VariableStore::default();
    variables.set(
        "用户名",
        VariableScope::Session,
        None,
        VariableValue::new("小明".into(), "initial", VariableScope::Session, Utc::now()),
    );
    let first = TurnRequest {
        script,
        techniques: Arc::new(BTreeMap::new()),
        templates: Arc::new(BTreeMap::new()),
        state: EngineState::initial(variables),
        user_input: None,
        history: Vec::new(),
        now: Utc::now(),
        sink: None,
        intent: None,
        llm_intents: false,
        llm_withheld: false,
        recorded: None,
    };

    c.bench_function("turn/first (legacy say + ask question)", |b| {
        b.to_async(&runtime)
            .iter(|| async { engine.run_turn(first.clone()).await.expect("turn") });
    });

    let after_first = runtime
        .block_on(engine.run_turn(first.clone()))
        .expect("turn");
    let mut answer = first.clone();
    answer.state = after_first.state;
    answer.user_input = Some("睡得不太好，常常两点才睡着".into());
    answer.history = after_first
        .messages
        .iter()
        .map(heartrule_domain::NewMessage::to_history)
        .collect();
    c.bench_function("turn/answer (multi-round ask continues)", |b| {
        b.to_async(&runtime)
            .iter(|| async { engine.run_turn(answer.clone()).await.expect("turn") });
    });
}

criterion_group!(benches, bench_turns);
criterion_main!(benches);
