//! Degraded mode: with `degraded_mode: scripted` an unavailable LLM lets
//! every action type run on the script's own texts, flagged as degraded;
//! any other LLM failure, or degraded mode off, still fails the turn.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use async_trait::async_trait;
use heartrule_domain::{
    DegradedMode, ErrorKind, ExecutionStatus, LlmChunk, LlmError, LlmProvider, LlmRequest,
    LlmResponse, LlmStream, ScriptEngine, DEGRADED_METADATA_KEY, UNEXTRACTED_SOURCE,
};
use heartrule_script_engine::runtime::{
    EngineOptions, HeartRuleEngine, DEGRADED_ACTIONS_TOTAL, DEGRADED_ACTIVE, METRICS,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::{json, Value};
use std::sync::Arc;
use support::{contents, j, memory_templates, CollectingSink, Harness};

fn scripted() -> EngineOptions {
    EngineOptions {
        degraded_mode: DegradedMode::Scripted,
        ..EngineOptions::default()
    }
}

fn harness(actions: &str) -> Harness {
    Harness::build(&one_topic(actions), memory_templates(), scripted())
}

fn one_topic(actions: &str) -> String {
    let mut yaml = String::from(
        "session_id: s\nphases:\n  - phase_id: p1\n    topics:\n      - topic_id: t1\n        actions:\n",
    );
    for line in actions.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str("          ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

const TWO_SAYS: &str = "
- {action_id: say1, action_type: ai_say, config: {content: \"你好，{{name}}\", require_acknowledgment: false}}
- {action_id: say2, action_type: ai_say, config: {content: 第二段, require_acknowledgment: false}}";

#[tokio::test]
async fn legacy_say_sends_its_substituted_text_and_the_turn_stops_calling() {
    let mut h = harness(TWO_SAYS);
    h.set_session_var("name", json!("小明"));
    let sink = Arc::new(CollectingSink::default());
    h.sink = Some(sink.clone());
    h.llm.fail(LlmError::CircuitOpen);
    let out = h.turn(None).await;
    assert_eq!(out.state.status, ExecutionStatus::Completed);
    assert_eq!(contents(&out), ["你好，小明", "第二段"]);
    for message in &out.messages {
        assert_eq!(message.metadata[DEGRADED_METADATA_KEY], true);
    }
    assert_eq!(
        h.llm.call_count(),
        1,
        "after one unavailable answer the turn calls no more"
    );
    assert!(out.llm_calls.is_empty());
    assert_eq!(sink.text_for("say1"), "你好，小明", "streams see it too");
    assert_eq!(sink.text_for("say2"), "第二段");
}

#[tokio::test]
async fn every_unavailability_error_degrades_and_the_next_turn_calls_again() {
    let acknowledged = "
- {action_id: a, action_type: ai_say, config: {content: 第一段}}
- {action_id: b, action_type: ai_say, config: {content: 第二段, require_acknowledgment: false}}";
    for error in [
        LlmError::CircuitOpen,
        LlmError::Timeout(std::time::Duration::from_secs(60)),
        LlmError::RateLimited { retry_after: None },
        LlmError::Unavailable("503".into()),
    ] {
        let mut h = harness(acknowledged);
        h.llm.fail(error.clone());
        let t1 = h.turn(None).await;
        assert_eq!(contents(&t1), ["第一段"], "{error:?}");
        assert_eq!(t1.messages[0].metadata[DEGRADED_METADATA_KEY], true);
        // The LLM is back: the next call uses it, unflagged.
        h.llm.reply("改写后的第二段");
        let t2 = h.turn(Some("好")).await;
        assert_eq!(contents(&t2), ["改写后的第二段"]);
        assert!(t2.messages[0].metadata.get(DEGRADED_METADATA_KEY).is_none());
        assert_eq!(h.llm.call_count(), 2);
    }
}

#[tokio::test]
async fn errors_that_are_not_unavailability_still_fail_the_turn() {
    for error in [
        LlmError::Rejected("400".into()),
        LlmError::InvalidResponse("garbage".into()),
        LlmError::NotConfigured("no key".into()),
    ] {
        let mut h = harness(TWO_SAYS);
        h.llm.fail(error.clone());
        let failed = h.try_turn(None).await.unwrap_err();
        assert_eq!(failed.kind, ErrorKind::Llm(error));
    }
}

#[tokio::test]
async fn with_degraded_mode_off_an_open_breaker_fails_the_turn() {
    let mut h = Harness::new(&one_topic(TWO_SAYS));
    h.llm.fail(LlmError::CircuitOpen);
    let failed = h.try_turn(None).await.unwrap_err();
    assert_eq!(failed.kind, ErrorKind::Llm(LlmError::CircuitOpen));
}

#[tokio::test]
async fn template_say_sends_its_content_and_ends_as_if_its_rounds_were_used() {
    let mut h = harness(
        "
- {action_id: intro, action_type: ai_say, config: {content: 介绍保密原则, max_rounds: 3}}
- {action_id: bye, action_type: ai_say, config: {content: 再见, require_acknowledgment: false}}",
    );
    h.llm.fail(LlmError::CircuitOpen);
    let out = h.turn(None).await;
    assert_eq!(contents(&out), ["介绍保密原则", "再见"]);
    let metadata = &out.messages[0].metadata;
    assert_eq!(metadata[DEGRADED_METADATA_KEY], true);
    assert_eq!(metadata["exit_reason"], "llm_unavailable");
    assert_eq!(metadata["mode"], "template");
    assert_eq!(out.state.status, ExecutionStatus::Completed);
}

#[tokio::test]
async fn simple_ask_asks_its_scripted_question_and_stores_the_answer() {
    let mut h = harness(
        "
- {action_id: ask1, action_type: ai_ask, config: {content: 请问怎么称呼？, target_variable: user_name}}",
    );
    h.llm.fail(LlmError::Unavailable("down".into()));
    let t1 = h.turn(None).await;
    assert_eq!(contents(&t1), ["请问怎么称呼？"]);
    assert_eq!(t1.state.status, ExecutionStatus::WaitingInput);
    let metadata = &t1.messages[0].metadata;
    assert_eq!(metadata[DEGRADED_METADATA_KEY], true);
    assert_eq!(metadata["waitingFor"], "answer");
    assert_eq!(metadata["extractTo"], "user_name");

    let t2 = h.turn(Some("小李")).await;
    assert_eq!(t2.state.status, ExecutionStatus::Completed);
    // No extraction was needed: the answer is the value, as always.
    assert_eq!(h.session_var("user_name"), Some(json!("小李")));
    assert_eq!(h.state.variables.session["user_name"].source, "ask1");
    assert_eq!(h.llm.call_count(), 1);
}

const MULTI_ASK: &str = "
- {action_id: ask1, action_type: ai_ask, config: {content: '${who_asks}想了解您的困扰', max_rounds: 3, output: [{get: problem, define: 主要困扰}, {get: duration, define: 持续时间, scope: topic}]}}
- {action_id: bye, action_type: ai_say, config: {content: '谢谢，您说的是：${problem}', require_acknowledgment: false}}";

#[tokio::test]
async fn multi_round_ask_stores_the_raw_answer_in_every_output_flagged_unextracted() {
    let mut h = harness(MULTI_ASK);
    h.set_session_var("who_asks", json!("咨询师"));
    h.llm.fail(LlmError::CircuitOpen);
    let t1 = h.turn(None).await;
    assert_eq!(contents(&t1), ["咨询师想了解您的困扰"]);
    assert_eq!(t1.state.pending_action.as_ref().unwrap().round, 1);

    h.llm.fail(LlmError::CircuitOpen);
    let t2 = h.turn(Some("失眠三个月了")).await;
    assert_eq!(t2.state.status, ExecutionStatus::Completed);
    assert_eq!(contents(&t2), ["谢谢，您说的是：失眠三个月了"]);
    let changes: Vec<(&str, &Value, &str)> = t2
        .variable_changes
        .iter()
        .map(|c| (c.name.as_str(), &c.value, c.source.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            ("problem", &json!("失眠三个月了"), UNEXTRACTED_SOURCE),
            ("duration", &json!("失眠三个月了"), UNEXTRACTED_SOURCE),
        ]
    );
    let degraded = h.state.metadata["degradedActions"].as_array().unwrap();
    let ids: Vec<&Value> = degraded.iter().map(|d| &d["actionId"]).collect();
    assert_eq!(ids, [&json!("ask1"), &json!("ask1"), &json!("bye")]);
    assert_eq!(h.llm.call_count(), 2);
}

#[tokio::test]
async fn an_answer_an_earlier_reply_already_carried_is_kept_over_the_raw_answer() {
    let mut h = harness(MULTI_ASK);
    h.llm.replies([
        j("q1"),
        json!({"content": "q2", "EXIT": "false", "problem": "失眠"}).to_string(),
    ]);
    h.turn(None).await;
    h.turn(Some("睡不着")).await;
    h.llm.fail(LlmError::CircuitOpen);
    let t3 = h.turn(Some("三个月")).await;
    let problem = &h.state.variables.session["problem"];
    assert_eq!(
        (&problem.value, problem.source.as_str()),
        (&json!("失眠"), "ask1")
    );
    let duration = t3
        .variable_changes
        .iter()
        .find(|c| c.name == "duration")
        .unwrap();
    assert_eq!(
        (&duration.value, duration.source.as_str()),
        (&json!("三个月"), UNEXTRACTED_SOURCE)
    );
}

#[tokio::test]
async fn a_failed_finish_extraction_falls_back_to_the_raw_answer_flagged() {
    let mut h = harness(
        "
- {action_id: ask1, action_type: ai_ask, config: {content: 年龄?, max_rounds: 1, output: [{get: age, define: 用户年龄}]}}",
    );
    h.llm.reply(j("q1"));
    h.turn(None).await;
    // The last round's reply arrives; the extraction finds the LLM gone.
    h.llm.reply(j("q2"));
    h.llm
        .fail(LlmError::Timeout(std::time::Duration::from_secs(60)));
    let t2 = h.turn(Some("我二十八")).await;
    assert_eq!(t2.state.status, ExecutionStatus::Completed);
    let age = &h.state.variables.session["age"];
    assert_eq!(
        (&age.value, age.source.as_str()),
        (&json!("我二十八"), UNEXTRACTED_SOURCE)
    );
    assert_eq!(h.state.metadata["degradedActions"][0]["actionId"], "ask1");
}

#[tokio::test]
async fn ai_think_writes_nothing_and_the_script_moves_on() {
    let mut h = harness(
        "
- {action_id: think1, action_type: ai_think, config: {content: 分析, output: [{get: insight}]}}
- {action_id: say1, action_type: ai_say, config: {content: '结论：{insight}', require_acknowledgment: false}}",
    );
    h.llm.fail(LlmError::CircuitOpen);
    let out = h.turn(None).await;
    assert_eq!(out.state.status, ExecutionStatus::Completed);
    assert!(out.variable_changes.is_empty());
    // Unknown placeholders stay verbatim, as in every substitution.
    assert_eq!(contents(&out), ["结论：{insight}"]);
    let degraded = h.state.metadata["degradedActions"].as_array().unwrap();
    assert_eq!(degraded[0]["actionId"], "think1");
    assert_eq!(degraded[0]["actionType"], "ai_think");
}

#[tokio::test]
async fn use_skill_runs_its_technique_under_the_same_rules() {
    let mut h = harness(
        "
- {action_id: run, action_type: use_skill, config: {skill: probe, input: [{name: topic, from: 睡眠}], output: [{name: detail, from: detail}]}}",
    )
    .with_technique(
        "
technique_id: probe
topic:
  topic_id: probe_topic
  actions:
    - {action_id: probe_ask, action_type: ai_ask, config: {content: '说说{topic}', output: [{get: detail, define: 细节}]}}
",
    );
    h.llm.fail(LlmError::CircuitOpen);
    let t1 = h.turn(None).await;
    assert_eq!(contents(&t1), ["说说睡眠"]);
    assert_eq!(t1.messages[0].metadata[DEGRADED_METADATA_KEY], true);
    h.llm.fail(LlmError::CircuitOpen);
    let t2 = h.turn(Some("总是半夜醒")).await;
    assert_eq!(t2.state.status, ExecutionStatus::Completed);
    assert_eq!(h.session_var("detail"), Some(json!("总是半夜醒")));
}

#[tokio::test]
async fn monitors_are_skipped_for_degraded_results() {
    let options = EngineOptions {
        monitors: true,
        ..scripted()
    };
    let mut h = Harness::build(
        &one_topic(
            "
- {action_id: ask1, action_type: ai_ask, config: {content: 称呼?, output: [{get: name}], max_rounds: 3}}",
        ),
        memory_templates(),
        options,
    );
    h.llm.fail(LlmError::CircuitOpen);
    // A monitor call would find no reply queued and panic.
    let out = h.turn(None).await;
    assert_eq!(contents(&out), ["称呼?"]);
    assert_eq!(h.llm.call_count(), 1);
    assert!(!h.state.metadata.contains_key("monitorFeedback"));
}

/// Streams one sentence of the reply, then fails as a connection would.
struct BreaksMidStream;

#[async_trait]
impl LlmProvider for BreaksMidStream {
    fn name(&self) -> &str {
        "breaks"
    }

    async fn complete(&self, _: &LlmRequest) -> Result<LlmResponse, LlmError> {
        Err(LlmError::Unavailable("connection reset".into()))
    }

    async fn stream(&self, _: &LlmRequest) -> Result<LlmStream, LlmError> {
        let chunks = vec![
            Ok(LlmChunk::Delta("您好。".to_owned())),
            Err(LlmError::Unavailable("connection reset".into())),
        ];
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

#[tokio::test]
async fn without_the_guard_a_reply_that_broke_after_the_user_saw_part_of_it_fails_the_turn() {
    let unguarded = EngineOptions {
        output_guard: false,
        ..scripted()
    };
    let mut h = harness(TWO_SAYS);
    h.engine = HeartRuleEngine::new(Arc::new(BreaksMidStream), memory_templates(), unguarded);
    let sink = Arc::new(CollectingSink::default());
    h.sink = Some(sink.clone());
    let failed = h.try_turn(None).await.unwrap_err();
    assert!(matches!(
        failed.kind,
        ErrorKind::Llm(LlmError::Unavailable(_))
    ));
    assert_eq!(sink.text_for("say1"), "您好。");

    // Without a sink nothing was shown yet, so the same failure degrades.
    let mut h = harness(TWO_SAYS);
    h.engine = HeartRuleEngine::new(Arc::new(BreaksMidStream), memory_templates(), unguarded);
    let out = h.engine.run_turn(h.request(None)).await.unwrap();
    assert_eq!(out.messages[0].metadata[DEGRADED_METADATA_KEY], true);
}

#[tokio::test]
async fn with_the_guard_a_broken_reply_is_retracted_and_the_scripted_text_replaces_it() {
    let mut h = harness(TWO_SAYS);
    h.set_session_var("name", json!("小明"));
    h.engine = HeartRuleEngine::new(Arc::new(BreaksMidStream), memory_templates(), scripted());
    let sink = Arc::new(CollectingSink::default());
    h.sink = Some(sink.clone());
    let out = h.turn(None).await;
    assert_eq!(contents(&out), ["你好，小明", "第二段"]);
    assert_eq!(out.messages[0].metadata[DEGRADED_METADATA_KEY], true);
    // The sentence the client saw was withdrawn before the scripted text.
    assert_eq!(sink.retractions_for("say1"), 1);
    assert_eq!(sink.shown_for("say1"), "你好，小明");
}

type Series = Vec<(String, Vec<String>, DebugValue)>;

/// Runs `f` with a fresh thread-local recorder and returns what it
/// recorded, each series checked against the declarations.
async fn recorded<F: std::future::Future<Output = ()>>(f: F) -> Series {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    {
        // Thread-local, and a current-thread test runtime polls on this thread.
        let _recording = metrics::set_default_local_recorder(&recorder);
        f.await;
    }
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            METRICS
                .check_series(key.name(), key.labels().map(metrics::Label::key))
                .unwrap_or_else(|problem| panic!("{problem}"));
            let labels = key.labels().map(|l| l.value().to_owned()).collect();
            (key.name().to_owned(), labels, value)
        })
        .collect()
}

fn series<'a>(recorded: &'a Series, name: &str) -> Vec<(&'a [String], &'a DebugValue)> {
    recorded
        .iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, labels, value)| (labels.as_slice(), value))
        .collect()
}

/// What the engine records matches its declarations: a count per degraded
/// action by type, and the active gauge going to 1 and back to 0.
#[tokio::test]
async fn degraded_actions_are_counted_and_the_gauge_follows_the_llm() {
    let mut h = harness(
        "
- {action_id: a, action_type: ai_say, config: {content: 第一段}}
- {action_id: t, action_type: ai_think, config: {content: 分析, output: [{get: x}]}}
- {action_id: b, action_type: ai_say, config: {content: 第二段}}",
    );
    h.llm.fail(LlmError::CircuitOpen);
    let first = recorded(async {
        h.turn(None).await;
    })
    .await;
    assert_eq!(
        series(&first, DEGRADED_ACTIVE),
        [(&[][..], &DebugValue::Gauge(1.0.into()))]
    );
    let say = ["ai_say".to_owned(), "llm_unavailable".to_owned()];
    assert_eq!(
        series(&first, DEGRADED_ACTIONS_TOTAL),
        [(&say[..], &DebugValue::Counter(1))]
    );

    // The LLM answers the next turn's think and say.
    h.llm.replies([r#"{"x": "y"}"#, "改写"]);
    let second = recorded(async {
        h.turn(Some("好")).await;
    })
    .await;
    assert_eq!(
        series(&second, DEGRADED_ACTIVE),
        [(&[][..], &DebugValue::Gauge(0.0.into()))]
    );
    assert!(series(&second, DEGRADED_ACTIONS_TOTAL).is_empty());
}

#[test]
fn the_declared_metrics_are_well_formed() {
    for decl in METRICS.metrics {
        decl.check().unwrap();
    }
}

#[tokio::test]
async fn a_withheld_llm_runs_the_turn_on_scripted_texts_without_a_single_call() {
    // Degraded mode off: a spent token quota withholds the LLM anyway.
    let mut h = Harness::build(
        &one_topic(TWO_SAYS),
        memory_templates(),
        EngineOptions::default(),
    );
    h.set_session_var("name", json!("小明"));
    h.llm_withheld = true;
    let mut out = None;
    let recorded_series = recorded(async {
        out = Some(h.turn(None).await);
    })
    .await;
    let out = out.unwrap();
    // Counted apart from an unavailable LLM, so the LlmDegradedMode alert
    // does not fire for a spent quota.
    let say = ["ai_say".to_owned(), "quota".to_owned()];
    assert_eq!(
        series(&recorded_series, DEGRADED_ACTIONS_TOTAL),
        [(&say[..], &DebugValue::Counter(2))]
    );
    assert_eq!(out.state.status, ExecutionStatus::Completed);
    assert_eq!(contents(&out), ["你好，小明", "第二段"]);
    for message in &out.messages {
        assert_eq!(message.metadata[DEGRADED_METADATA_KEY], true);
    }
    assert_eq!(h.llm.call_count(), 0);
    assert!(out.llm_calls.is_empty());
}
