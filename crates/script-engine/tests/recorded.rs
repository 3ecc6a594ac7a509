//! Recorded responses (a replay): a call whose prompt hash was recorded gets
//! the recorded response without the provider, streamed to the sink like a
//! live reply; a call with a new prompt still goes to the provider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chrono::Utc;
use heartrule_domain::{LlmExchange, RecordedResponses, TurnId, TurnOutcome};
use serde_json::json;
use std::sync::Arc;
use support::*;

const SCRIPT: &str = "
session_id: s
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - {action_id: legacy, action_type: ai_say, config: {content: 欢迎, require_acknowledgment: false}}
          - {action_id: think, action_type: ai_think, config: {content: 想想, output: [{get: mood}]}}
          - {action_id: tmpl, action_type: ai_say, config: {content: 讲解, max_rounds: 1}}
";

/// The opening turn of [`SCRIPT`] run live: three LLM calls.
async fn live_turn() -> TurnOutcome {
    let mut h = Harness::new(SCRIPT);
    h.llm.replies([
        "欢迎来到这里。我们慢慢聊。".to_owned(),
        r#"{"mood": "平静"}"#.to_owned(),
        json!({"content": "第一行。第二行", "EXIT": "false"}).to_string(),
    ]);
    let out = h.turn(None).await;
    assert_eq!(h.llm.call_count(), 3);
    out
}

/// The exchanges a committed turn would record of `outcome`.
fn exchanges(outcome: &TurnOutcome) -> Vec<LlmExchange> {
    outcome
        .llm_calls
        .iter()
        .zip(0u32..)
        .map(|(call, call_index)| LlmExchange {
            turn_id: TurnId::new_random(),
            turn_number: 1,
            call_index,
            action_id: call.action_id.clone(),
            purpose: call.purpose.clone(),
            prompt_hash: call.prompt_hash.clone(),
            prompt: None,
            response: call.response.clone(),
            created_at: Utc::now(),
        })
        .collect()
}

#[tokio::test]
async fn recorded_responses_replace_the_provider_and_still_stream() {
    let live = live_turn().await;
    assert!(live
        .llm_calls
        .iter()
        .all(|c| !c.reused && c.prompt_hash.len() == 64));

    // The fake LLM panics at any call: none may reach it.
    let mut h = Harness::new(SCRIPT);
    let sink = Arc::new(CollectingSink::default());
    h.sink = Some(sink.clone());
    let recorded = Arc::new(RecordedResponses::new(&exchanges(&live)));
    h.recorded = Some(recorded.clone());
    let replayed = h.turn(None).await;

    assert_eq!(h.llm.call_count(), 0);
    assert_eq!(recorded.remaining(), 0, "each recorded response used once");
    assert_eq!(replayed.messages, live.messages);
    assert_eq!(replayed.variable_changes.len(), live.variable_changes.len());
    assert_eq!(h.session_var("mood"), Some(json!("平静")));
    assert!(replayed.llm_calls.iter().all(|c| c.reused));
    let hashes = |o: &TurnOutcome| {
        o.llm_calls
            .iter()
            .map(|c| c.prompt_hash.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(hashes(&replayed), hashes(&live));
    assert_eq!(
        heartrule_domain::TurnUsage::of_calls(&replayed.llm_calls).llm_calls,
        0,
        "reused responses cost no tokens"
    );
    // A streaming client sees the replayed messages as it would live ones.
    assert_eq!(sink.text_for("legacy"), replayed.messages[0].content);
    assert_eq!(sink.text_for("tmpl"), replayed.messages[1].content);
    assert_eq!(sink.text_for("think"), "");
}

#[tokio::test]
async fn a_call_whose_prompt_was_not_recorded_goes_to_the_provider() {
    let live = live_turn().await;
    let mut recorded = exchanges(&live);
    // The thinking call's prompt "changed": its recording does not match.
    recorded[1].prompt_hash = "0".repeat(64);

    let mut h = Harness::new(SCRIPT);
    h.recorded = Some(Arc::new(RecordedResponses::new(&recorded)));
    // The same answer, so the calls after it keep their prompts.
    h.llm.reply(r#"{"mood": "平静"}"#);
    let replayed = h.turn(None).await;

    assert_eq!(h.llm.call_count(), 1);
    assert_eq!(h.llm.last_call().purpose, live.llm_calls[1].purpose);
    let reused: Vec<bool> = replayed.llm_calls.iter().map(|c| c.reused).collect();
    assert_eq!(reused, [true, false, true]);
    assert_eq!(replayed.messages, live.messages);
}
