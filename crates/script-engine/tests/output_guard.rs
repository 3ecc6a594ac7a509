//! The output guard: AI replies with diagnosis, prescription or guarantee
//! language (or a flagged `safety_risk`) are regenerated once, then replaced
//! by the action's scripted text; streamed text is released sentence by
//! sentence, and withdrawn text is retracted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use heartrule_domain::LlmError;
use heartrule_script_engine::runtime::EngineOptions;
use heartrule_script_engine::{METRICS, OUTPUT_GUARD_TOTAL};
use serde_json::{json, Value};
use std::sync::Arc;
use support::{contents, j, memory_templates, CollectingSink, Harness};

const ASK_SCRIPT: &str = "
session_id: s
phases:
  - phase_id: p
    topics:
      - topic_id: t
        actions:
          - {action_id: ask, action_type: ai_ask, config: {content: '${名字}，最近睡得怎么样？'}}
";

const LEGACY_SAY_SCRIPT: &str = "
session_id: s
phases:
  - phase_id: p
    topics:
      - topic_id: t
        actions:
          - {action_id: hello, action_type: ai_say, config: {content: 欢迎你来到这里。, require_acknowledgment: false}}
          - {action_id: ask, action_type: ai_ask, config: {content: 问}}
";

const DIAGNOSIS: &str = "我听到了你的困扰。你患有抑郁症，需要治疗。";
const CLEAN: &str = "我听到了你的困扰。能多说说最近的睡眠吗？";

fn ask_harness() -> Harness {
    let mut h = Harness::new(ASK_SCRIPT);
    h.set_session_var("名字", json!("小林"));
    h
}

fn guard_record(outcome: &heartrule_domain::TurnOutcome, index: usize) -> Value {
    outcome.messages[index].metadata["outputGuard"].clone()
}

fn purposes(outcome: &heartrule_domain::TurnOutcome) -> Vec<String> {
    outcome
        .llm_calls
        .iter()
        .map(|c| c.purpose.clone())
        .collect()
}

#[tokio::test]
async fn a_diagnosis_once_then_a_clean_reply_is_regenerated() {
    let mut h = ask_harness();
    h.llm.replies([j(DIAGNOSIS), j(CLEAN)]);
    let out = h.turn(None).await;

    assert_eq!(contents(&out), [CLEAN]);
    let record = guard_record(&out, 0);
    assert_eq!(record["verdict"], "regenerated");
    assert_eq!(record["violations"][0]["category"], "diagnosis");
    assert_eq!(record["violations"][0]["matched_pattern"], "你患有");
    assert!(record.get("retryViolations").is_none());
    assert_eq!(purposes(&out), ["ai_ask", "guard_retry"]);
    // The retry is the same prompt plus the correction naming the problem.
    let calls = h.llm.calls();
    assert!(calls[1].prompt.starts_with(&calls[0].prompt));
    let correction = &calls[1].prompt[calls[0].prompt.len()..];
    assert!(correction.contains("诊断（“你患有”）"), "{correction}");
    // What was recorded is the reply in use.
    assert_eq!(out.messages[0].metadata["safety_check"]["passed"], true);
}

#[tokio::test]
async fn a_reply_that_fails_twice_is_replaced_by_the_scripted_text() {
    let mut h = ask_harness();
    h.llm.replies([
        j(DIAGNOSIS),
        j("别担心，我保证你会好起来，建议服用一些助眠药。"),
    ]);
    let out = h.turn(None).await;

    assert_eq!(
        contents(&out),
        ["小林，最近睡得怎么样？"],
        "the action's content, placeholders substituted"
    );
    let record = guard_record(&out, 0);
    assert_eq!(record["verdict"], "replaced");
    assert_eq!(record["violations"][0]["category"], "diagnosis");
    let retry: Vec<&str> = record["retryViolations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["category"].as_str().unwrap())
        .collect();
    assert_eq!(retry, ["prescription", "guarantee"]);
    assert_eq!(purposes(&out), ["ai_ask", "guard_retry"]);
    // The session goes on: it waits for the answer.
    assert_eq!(
        out.state.status,
        heartrule_domain::ExecutionStatus::WaitingInput
    );
}

#[tokio::test]
async fn a_failed_regeneration_call_falls_back_to_the_scripted_text() {
    let mut h = ask_harness();
    h.llm.reply(j(DIAGNOSIS));
    h.llm.fail(LlmError::Unavailable("down".into()));
    let out = h.turn(None).await;
    assert_eq!(contents(&out), ["小林，最近睡得怎么样？"]);
    let record = guard_record(&out, 0);
    assert_eq!(record["verdict"], "replaced");
    assert!(record["retryError"].as_str().unwrap().contains("down"));
}

#[tokio::test]
async fn a_flagged_self_check_is_regenerated_but_a_crisis_type_is_left_to_the_protocol() {
    let mut h = ask_harness();
    let flagged = json!({"content": "也许你该试试这个方法。", "EXIT": "false",
        "safety_risk": {"detected": true, "risk_type": "inappropriate_advice", "confidence": "high"}});
    h.llm.replies([flagged.to_string(), j(CLEAN)]);
    let out = h.turn(None).await;
    assert_eq!(contents(&out), [CLEAN]);
    let record = guard_record(&out, 0);
    assert_eq!(record["verdict"], "regenerated");
    assert_eq!(record["violations"][0]["category"], "safety_risk");
    assert_eq!(record["violations"][0]["risk_type"], "inappropriate_advice");

    // A crisis risk type reads the user, not the reply: it passes, and
    // its reading still reaches the crisis protocol.
    let mut h = ask_harness();
    let crisis = json!({"content": "你现在安全吗？如果有自杀的念头，请拨打热线。", "EXIT": "false",
        "safety_risk": {"detected": true, "risk_type": "suicide", "confidence": "high"}});
    h.llm.reply(crisis.to_string());
    let out = h.turn(None).await;
    assert_eq!(guard_record(&out, 0)["verdict"], "passed");
    assert_eq!(out.llm_calls.len(), 1);
    assert_eq!(
        out.messages[0].metadata["safety_check"]["violations"][0]["category"], "crisis",
        "crisis words are still recorded"
    );
    assert_eq!(out.safety_readings.len(), 1);
}

#[tokio::test]
async fn a_withdrawn_reply_still_reports_its_crisis_signal() {
    let mut h = ask_harness();
    let withdrawn =
        json!({"content": DIAGNOSIS, "EXIT": "false", "metadata": {"crisis_signal": true}});
    h.llm.replies([withdrawn.to_string(), j(CLEAN)]);
    let out = h.turn(None).await;
    assert_eq!(guard_record(&out, 0)["verdict"], "regenerated");
    assert!(
        out.safety_readings
            .iter()
            .any(|r| r["crisis_signal"] == json!(true)),
        "{:?}",
        out.safety_readings
    );
}

#[tokio::test]
async fn legacy_say_falls_back_to_its_scripted_text() {
    let mut h = Harness::new(LEGACY_SAY_SCRIPT);
    h.llm.replies([
        "欢迎！我们的方法百分之百有效。".to_owned(),
        "欢迎！这个方法一定会好。".to_owned(),
        j("你好吗？"),
    ]);
    let out = h.turn(None).await;
    assert_eq!(contents(&out), ["欢迎你来到这里。", "你好吗？"]);
    assert_eq!(guard_record(&out, 0)["verdict"], "replaced");
    assert_eq!(guard_record(&out, 1)["verdict"], "passed");
    assert_eq!(purposes(&out), ["rewrite", "guard_retry", "ai_ask"]);
}

#[tokio::test]
async fn template_say_is_guarded() {
    let mut h = Harness::new(
        "
session_id: s
phases:
  - phase_id: p
    topics:
      - topic_id: t
        actions:
          - {action_id: say, action_type: ai_say, config: {content: 讲解睡眠卫生, max_rounds: 2}}
",
    );
    h.llm
        .replies([j("你得了失眠症。"), j("我们来聊聊睡眠的习惯。")]);
    let out = h.turn(None).await;
    assert_eq!(contents(&out), ["我们来聊聊睡眠的习惯。"]);
    assert_eq!(guard_record(&out, 0)["verdict"], "regenerated");
    assert_eq!(purposes(&out), ["ai_say", "guard_retry"]);
}

#[tokio::test]
async fn streamed_text_is_released_by_sentence_and_withdrawn_text_retracted() {
    let mut h = ask_harness();
    let sink = Arc::new(CollectingSink::default());
    h.sink = Some(sink.clone());
    h.llm.replies([j(DIAGNOSIS), j(CLEAN)]);
    let out = h.turn(None).await;

    let sent: String = sink
        .deltas
        .lock()
        .unwrap()
        .iter()
        .map(|(_, text)| text.as_str())
        .collect();
    assert!(!sent.contains("你患有"), "the diagnosis never left: {sent}");
    assert_eq!(
        sent,
        format!("我听到了你的困扰。{CLEAN}"),
        "the clean sentence, then the regenerated reply"
    );
    assert_eq!(sink.retractions_for("ask"), 1);
    assert_eq!(sink.shown_for("ask"), CLEAN);
    assert_eq!(sink.shown_for("ask"), out.messages[0].content);
}

#[tokio::test]
async fn streamed_replacement_is_sent_after_the_retraction() {
    let mut h = ask_harness();
    let sink = Arc::new(CollectingSink::default());
    h.sink = Some(sink.clone());
    // The first reply fails in its first sentence: nothing was shown, so
    // nothing is retracted; the second fails after a clean sentence.
    h.llm.replies([
        j("你得了焦虑症。别担心。"),
        j("谢谢你告诉我。这个一定会好的。"),
    ]);
    let out = h.turn(None).await;
    let events = sink.events.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            ("ask".to_owned(), Some("谢谢你告诉我。".to_owned())),
            ("ask".to_owned(), None),
            ("ask".to_owned(), Some("小林，最近睡得怎么样？".to_owned())),
        ]
    );
    assert_eq!(out.messages[0].content, "小林，最近睡得怎么样？");
}

#[tokio::test]
async fn with_the_guard_off_replies_pass_unchecked() {
    let mut h = Harness::build(
        ASK_SCRIPT,
        memory_templates(),
        EngineOptions {
            output_guard: false,
            ..EngineOptions::default()
        },
    );
    let sink = Arc::new(CollectingSink::default());
    h.sink = Some(sink.clone());
    h.llm.reply(j(DIAGNOSIS));
    let out = h.turn(None).await;
    assert_eq!(contents(&out), [DIAGNOSIS]);
    assert!(out.messages[0].metadata.get("outputGuard").is_none());
    assert_eq!(out.messages[0].metadata["safety_check"]["passed"], false);
    assert_eq!(sink.text_for("ask"), DIAGNOSIS);
}

/// Every guarded reply is counted as declared, by action type and outcome.
#[tokio::test(flavor = "current_thread")]
async fn outcomes_are_counted_as_declared() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Thread-local, and a current-thread test runtime polls on this thread.
    let _recording = metrics::set_default_local_recorder(&recorder);

    let mut h = ask_harness();
    h.llm.replies([j(DIAGNOSIS), j(CLEAN)]);
    h.turn(None).await;
    let mut h = ask_harness();
    h.llm.reply(j(CLEAN));
    h.turn(None).await;

    let mut counted = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        METRICS
            .check_series(key.name(), key.labels().map(metrics::Label::key))
            .unwrap_or_else(|problem| panic!("{problem}"));
        assert_eq!(key.name(), OUTPUT_GUARD_TOTAL);
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let DebugValue::Counter(count) = value else {
            panic!("a counter")
        };
        counted.push((labels.join(","), count));
    }
    counted.sort();
    assert_eq!(
        counted,
        [
            ("action_type=ai_ask,outcome=passed".to_owned(), 1),
            ("action_type=ai_ask,outcome=regenerated".to_owned(), 1),
        ]
    );
}
