//! What the output guard's sentence-by-sentence release costs in time to
//! first token: one ai_ask turn streamed from a fake LLM that emits one
//! character every `DELAY`, with the guard on and off. Prints the median
//! time from the start of the turn to the first text the sink receives,
//! and to the end of the turn. Run: `cargo bench -p
//! heartrule-script-engine --bench guard_ttft`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use chrono::Utc;
use heartrule_domain::{
    ContentSink, EngineState, LlmChunk, LlmError, LlmProvider, LlmRequest, LlmResponse, LlmStream,
    ScriptEngine, SessionScript, TokenUsage, TurnRequest, VariableStore,
};
use heartrule_script_engine::runtime::templates::EmbeddedTemplates;
use heartrule_script_engine::runtime::{EngineOptions, HeartRuleEngine};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time between two streamed characters (about 50 tokens per second).
const DELAY: Duration = Duration::from_millis(20);
const RUNS: usize = 5;

/// Streams `reply` one character at a time.
struct DripLlm {
    reply: String,
}

#[async_trait]
impl LlmProvider for DripLlm {
    fn name(&self) -> &str {
        "drip"
    }

    async fn complete(&self, _request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        Ok(LlmResponse {
            text: self.reply.clone(),
            model: "drip".into(),
            provider: "drip".into(),
            finish_reason: None,
            usage: TokenUsage::default(),
        })
    }

    async fn stream(&self, request: &LlmRequest) -> Result<LlmStream, LlmError> {
        let done = self.complete(request).await?;
        let chars: Vec<String> = self.reply.chars().map(String::from).collect();
        let deltas = futures::stream::unfold(chars.into_iter(), |mut chars| async move {
            let next = chars.next()?;
            tokio::time::sleep(DELAY).await;
            Some((Ok(LlmChunk::Delta(next)), chars))
        });
        let end = futures::stream::iter([Ok(LlmChunk::Done(done))]);
        Ok(Box::pin(futures::StreamExt::chain(deltas, end)))
    }
}

/// Notes when the first text arrives.
struct FirstText {
    start: Instant,
    first: Mutex<Option<Duration>>,
}

impl ContentSink for FirstText {
    fn delta(&self, _action_id: &str, _text: &str) {
        let mut first = self.first.lock().unwrap();
        if first.is_none() {
            *first = Some(self.start.elapsed());
        }
    }
}

const SCRIPT: &str = "
session_id: bench
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - {action_id: sleep, action_type: ai_ask, config: {content: 了解最近的睡眠}}
";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn measure(reply: &str, output_guard: bool) -> (Duration, Duration) {
    let engine = HeartRuleEngine::new(
        Arc::new(DripLlm {
            reply: reply.to_owned(),
        }),
        Arc::new(EmbeddedTemplates::new()),
        EngineOptions {
            output_guard,
            ..EngineOptions::default()
        },
    );
    let script: Arc<SessionScript> = Arc::new(serde_yaml::from_str(SCRIPT).expect("script"));
    let mut first_text = Vec::new();
    let mut whole = Vec::new();
    for _ in 0..RUNS {
        let sink = Arc::new(FirstText {
            start: Instant::now(),
            first: Mutex::new(None),
        });
        let request = TurnRequest {
            script: Arc::clone(&script),
            techniques: Arc::new(BTreeMap::new()),
            templates: Arc::new(BTreeMap::new()),
            state: EngineState::initial(VariableStore::default()),
            user_input: None,
            history: Vec::new(),
            now: Utc::now(),
            sink: Some(sink.clone()),
            intent: None,
            llm_intents: false,
            llm_withheld: false,
            recorded: None,
        };
        engine.run_turn(request).await.expect("turn");
        whole.push(sink.start.elapsed());
        first_text.push(sink.first.lock().unwrap().expect("some text was streamed"));
    }
    (median(first_text), median(whole))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let replies = [
        (
            "zh, first sentence 26 chars",
            r#"{"content": "谢谢你愿意和我分享这些，听起来这段时间你真的很辛苦。能和我说说最近一次睡不好的那个晚上吗？", "EXIT": "false"}"#,
        ),
        (
            "en, first sentence 36 chars",
            r#"{"content": "Thank you for telling me about this. Could you describe the last night you slept badly?", "EXIT": "false"}"#,
        ),
    ];
    println!(
        "output guard: time to first text (median of {RUNS} turns, one character every {DELAY:?})"
    );
    for (name, reply) in replies {
        let (off_first, off_whole) = runtime.block_on(measure(reply, false));
        let (on_first, on_whole) = runtime.block_on(measure(reply, true));
        println!(
            "{name}: guard off {} ms (turn {} ms); guard on {} ms (turn {} ms); +{} ms to first text",
            off_first.as_millis(),
            off_whole.as_millis(),
            on_first.as_millis(),
            on_whole.as_millis(),
            on_first.saturating_sub(off_first).as_millis()
        );
    }
}
