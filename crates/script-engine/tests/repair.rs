//! Repair intents in the engine: a skip (the session manager's local
//! reading, or the LLM's `user_intent`) completes the pending `ai_ask`
//! with its variables declined and moves on in the same turn; a stop or a
//! request for a person read by the LLM is reported for the manager.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use heartrule_domain::{
    ExecutionStatus, IntentReading, RepairIntent, SignalSource, DECLINED_SOURCE,
};
use serde_json::{json, Value};
use support::{contents, j, Harness};

/// A simple question (`target_variable`), then a question using its answer.
const SIMPLE: &str = "
session_id: s
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - {action_id: ask_name, action_type: ai_ask, config: {content: 怎么称呼你, target_variable: name}}
          - {action_id: ask_mood, action_type: ai_ask, config: {content: '[{name}]最近心情怎么样'}}
";

/// A multi-round question with two outputs, then a second question.
const MULTI: &str = "
session_id: s
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - {action_id: ask_work, action_type: ai_ask, config: {content: 工作情况, max_rounds: 3, output: [{get: job, define: 职业}, {get: stress, define: 压力, scope: topic}]}}
          - {action_id: ask_mood, action_type: ai_ask, config: {content: '[{job}]最近心情怎么样'}}
";

fn declined_value(h: &Harness, name: &str) -> (Value, String) {
    let value = h.state.variables.session.get(name).expect(name);
    (value.value.clone(), value.source.clone())
}

#[tokio::test]
async fn a_local_skip_declines_the_question_and_asks_the_next_one_in_the_same_turn() {
    let mut h = Harness::new(SIMPLE);
    h.llm.replies([j("怎么称呼你？"), j("最近心情怎么样？")]);
    h.turn(None).await;
    h.intent = Some(RepairIntent::Skip);
    let out = h.turn(Some("这个问题能不能跳过")).await;

    // The next question is this turn's message; nothing was extracted.
    assert_eq!(contents(&out), ["最近心情怎么样？"]);
    assert_eq!(out.state.status, ExecutionStatus::WaitingInput);
    assert_eq!(
        out.state
            .pending_action
            .as_ref()
            .map(|p| p.action_id.as_str()),
        Some("ask_mood")
    );
    assert_eq!(
        declined_value(&h, "name"),
        (Value::Null, DECLINED_SOURCE.to_owned())
    );
    let change = &out.variable_changes[0];
    assert_eq!(
        (change.name.as_str(), &change.value),
        ("name", &Value::Null)
    );
    assert_eq!(change.source, DECLINED_SOURCE);
    // A declined value substitutes as empty text.
    assert!(
        h.llm.last_call().prompt.contains("[]最近心情怎么样"),
        "{}",
        h.llm.last_call().prompt
    );
    assert_eq!(
        out.repair,
        Some(IntentReading {
            intent: RepairIntent::Skip,
            source: SignalSource::Local
        })
    );
    let user = out.user_message.unwrap();
    assert_eq!(user.action_id.as_deref(), Some("ask_name"));
    assert_eq!(
        user.metadata,
        json!({"repair": {"intent": "skip", "source": "local", "declined": ["name"]}})
    );
}

#[tokio::test]
async fn without_an_intent_the_same_answer_is_the_answer() {
    let mut h = Harness::new(SIMPLE);
    h.llm.replies([j("怎么称呼你？"), j("最近心情怎么样？")]);
    h.turn(None).await;
    let out = h.turn(Some("这个问题能不能跳过")).await;
    assert_eq!(h.session_var("name"), Some(json!("这个问题能不能跳过")));
    assert_eq!(out.repair, None);
    assert_eq!(out.user_message.unwrap().metadata, json!({}));
}

#[tokio::test]
async fn the_llms_skip_declines_every_output_of_a_multi_round_question() {
    let mut h = Harness::new(MULTI);
    h.llm_intents = true;
    h.llm.replies([
        j("你现在做什么工作？"),
        json!({"content": "好的", "EXIT": "false", "metadata": {"user_intent": "skip"}, "job": "教师"})
            .to_string(),
        j("最近心情怎么样？"),
    ]);
    h.turn(None).await;
    let out = h.turn(Some("I'd prefer we move along")).await;
    assert_eq!(contents(&out), ["最近心情怎么样？"]);
    assert_eq!(
        declined_value(&h, "job"),
        (Value::Null, DECLINED_SOURCE.to_owned())
    );
    let stress: Vec<_> = out
        .variable_changes
        .iter()
        .filter(|c| c.name == "stress")
        .collect();
    assert_eq!(stress.len(), 1);
    assert_eq!(stress[0].value, Value::Null);
    assert_eq!(stress[0].scope_key.as_deref(), Some("t1"));
    assert!(h.llm.last_call().prompt.contains("[]最近心情怎么样"));
    assert_eq!(
        out.repair,
        Some(IntentReading {
            intent: RepairIntent::Skip,
            source: SignalSource::Llm
        })
    );
}

#[tokio::test]
async fn the_llms_reading_is_ignored_unless_asked_for() {
    let mut h = Harness::new(MULTI);
    h.llm.replies([
        j("你现在做什么工作？"),
        json!({"content": "压力大吗？", "EXIT": "false", "metadata": {"user_intent": "skip"}})
            .to_string(),
    ]);
    h.turn(None).await;
    let out = h.turn(Some("我是老师")).await;
    assert_eq!(contents(&out), ["压力大吗？"]);
    assert_eq!(out.repair, None);
    assert!(!h.state.variables.session.contains_key("job"));
}

#[tokio::test]
async fn a_stop_or_person_read_by_the_llm_is_reported_for_the_manager() {
    for intent in ["stop", "human"] {
        let mut h = Harness::new(MULTI);
        h.llm_intents = true;
        h.llm.replies([
            j("你现在做什么工作？"),
            json!({"content": "还想聊聊吗？", "EXIT": "false", "metadata": {"user_intent": intent}})
                .to_string(),
        ]);
        h.turn(None).await;
        let out = h.turn(Some("whatever")).await;
        assert_eq!(
            out.repair,
            Some(IntentReading {
                intent: RepairIntent::parse(intent).unwrap(),
                source: SignalSource::Llm
            }),
            "{intent}"
        );
    }
}

#[tokio::test]
async fn a_skip_of_a_question_not_waiting_is_not_applied() {
    let mut h = Harness::new(SIMPLE);
    h.llm.replies([j("怎么称呼你？")]);
    // A skip intent on the first run (no question waiting) does nothing.
    h.intent = Some(RepairIntent::Skip);
    let out = h.turn(None).await;
    assert_eq!(contents(&out), ["怎么称呼你？"]);
    assert_eq!(out.repair, None);
}
