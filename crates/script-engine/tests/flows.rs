//! Engine flows beyond the reference cases: several messages per turn,
//! streaming, use_skill sub-flows, completed sessions, failed turns,
//! declared scopes and the project's own embedded templates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use heartrule_domain::{
    ActionType, ErrorKind, ExecutionStatus, LlmError, ScriptEngine, VariableScope,
};
use heartrule_script_engine::runtime::templates::EmbeddedTemplates;
use heartrule_script_engine::runtime::EngineOptions;
use serde_json::json;
use std::sync::Arc;
use support::{contents, j, CollectingSink, Harness};

#[tokio::test]
async fn one_turn_can_produce_several_messages_in_order() {
    let mut h = Harness::new(
        "
session_id: s
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - {action_id: hello, action_type: ai_say, config: {content: 欢迎, require_acknowledgment: false}}
          - {action_id: intro, action_type: ai_say, config: {content: 介绍, max_rounds: 2, exit_criteria: {custom_conditions: [{variable: ready, operator: '==', value: true}]}}}
  - phase_id: p2
    topics:
      - topic_id: t2
        actions:
          - {action_id: ask1, action_type: ai_ask, config: {content: 最近怎么样}}
",
    );
    h.set_session_var("ready", json!(true));
    h.llm
        .replies(["欢迎你".to_owned(), j("这是介绍"), j("最近怎么样？")]);
    let out = h.turn(None).await;
    assert_eq!(contents(&out), ["欢迎你", "这是介绍", "最近怎么样？"]);
    let kinds: Vec<_> = out
        .messages
        .iter()
        .map(|m| (m.action_id.clone().unwrap(), m.action_type.unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("hello".to_owned(), ActionType::AiSay),
            ("intro".to_owned(), ActionType::AiSay),
            ("ask1".to_owned(), ActionType::AiAsk)
        ]
    );
    assert_eq!(out.state.status, ExecutionStatus::WaitingInput);
    assert_eq!(out.state.position.phase_id.as_deref(), Some("p2"));
    assert_eq!(out.llm_calls.len(), 3);
}

#[tokio::test]
async fn streamed_deltas_concatenate_to_the_final_messages() {
    let mut h = Harness::new(
        "
session_id: s
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - {action_id: legacy, action_type: ai_say, config: {content: 欢迎, require_acknowledgment: false}}
          - {action_id: think, action_type: ai_think, config: {content: 想想, output: [{get: mood}]}}
          - {action_id: tmpl, action_type: ai_say, config: {content: 讲解, max_rounds: 1}}
",
    );
    let sink = Arc::new(CollectingSink::default());
    h.sink = Some(sink.clone());
    let say_reply =
        json!({"content": "第一行\n他说：\"放松\" 😊", "EXIT": "false", "BRIEF": "不要流出"});
    h.llm.replies([
        "欢迎来到这里。我们慢慢聊。你好吗？".to_owned(),
        r#"{"mood": "平静"}"#.to_owned(),
        say_reply.to_string(),
    ]);
    let out = h.turn(None).await;
    assert_eq!(sink.text_for("legacy"), out.messages[0].content);
    assert_eq!(sink.text_for("tmpl"), out.messages[1].content);
    assert_eq!(out.messages[1].content, "第一行\n他说：\"放松\" 😊");
    assert_eq!(sink.text_for("think"), "", "ai_think is not user-facing");
    // The output guard releases text sentence by sentence.
    assert_eq!(sink.delta_count(), 5, "one delta per sentence");
    let streamed: Vec<bool> = h.llm.calls().iter().map(|c| c.streamed).collect();
    assert_eq!(streamed, [true, false, true]);
    assert_eq!(h.session_var("mood"), Some(json!("平静")));
}

#[tokio::test]
async fn without_a_sink_nothing_streams() {
    let mut h = Harness::new(
        "session_id: s\nphases:\n  - phase_id: p\n    topics:\n      - topic_id: t\n        actions:\n          - {action_id: a, action_type: ai_ask, config: {content: 问}}\n",
    );
    h.llm.reply(j("q"));
    h.turn(None).await;
    assert!(!h.llm.last_call().streamed);
}

const SOCRATIC: &str = "
technique_id: socratic
input_parameters:
  - {name: belief, required: true}
  - {name: context}
output_variables: [reframed]
topic:
  topic_id: socratic_topic
  actions:
    - action_id: evidence_q
      action_type: ai_ask
      config: {content: '关于{belief}（{context}），有什么证据？', output: [{get: evidence}], max_rounds: 2}
    - action_id: reframe
      action_type: ai_think
      config: {content: '重构{belief}，证据{evidence}，会话变量{user_name}', output: [{get: reframed}]}
";

const SKILL_SESSION: &str = "
session_id: s
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - {action_id: ask_belief, action_type: ai_ask, config: {content: 你有什么想法, target_variable: belief_text}}
          - action_id: run_socratic
            action_type: use_skill
            config:
              skill: socratic
              input:
                - {name: belief, from: '${belief_text}'}
                - {name: context, from: '在{place}'}
              output:
                - {name: new_belief, from: reframed}
                - {name: topic_copy, from: reframed, scope: topic}
          - {action_id: closing, action_type: ai_say, config: {content: '新的想法：{new_belief}', require_acknowledgment: false}}
";

#[tokio::test]
async fn use_skill_maps_inputs_and_outputs_and_pauses_inside_the_technique() {
    let mut h = Harness::new(SKILL_SESSION).with_technique(SOCRATIC);
    h.set_session_var("user_name", json!("小李"));
    h.set_session_var("place", json!("学校"));
    h.llm.reply(j("你有什么想法？"));
    h.turn(None).await;

    h.llm.reply(j("有什么证据？"));
    let t2 = h.turn(Some("我不够好")).await;
    assert_eq!(contents(&t2), ["有什么证据？"]);
    assert_eq!(t2.state.status, ExecutionStatus::WaitingInput);
    assert!(h
        .llm
        .last_call()
        .prompt
        .contains("关于我不够好（在学校），有什么证据？"));
    let frame = &t2.state.skill_frames[0];
    assert_eq!(frame.technique_id, "socratic");
    assert_eq!(frame.caller_action_id, "run_socratic");
    assert_eq!(frame.position.action_id.as_deref(), Some("evidence_q"));
    assert_eq!(frame.variables.session["belief"].value, json!("我不够好"));
    assert_eq!(
        t2.state.pending_action.as_ref().unwrap().action_id,
        "evidence_q"
    );
    assert_eq!(t2.state.position.action_id.as_deref(), Some("run_socratic"));
    assert_eq!(t2.messages[0].action_id.as_deref(), Some("evidence_q"));

    h.llm.replies([
        r#"{"content":"还有吗","EXIT":"true"}"#.to_owned(),
        r#"{"reframed":"我有时会失误，但不代表不够好"}"#.to_owned(),
        "新的想法很好".to_owned(),
    ]);
    let t3 = h.turn(Some("考试没过")).await;
    assert_eq!(
        t3.user_message.as_ref().unwrap().action_id.as_deref(),
        Some("evidence_q")
    );
    let think_prompt = &h.llm.calls()[3].prompt;
    assert!(
        think_prompt.contains("重构我不够好，证据考试没过，会话变量小李"),
        "technique lookups see the frame, then the caller: {think_prompt}"
    );
    assert!(h
        .llm
        .last_call()
        .prompt
        .contains("新的想法：我有时会失误，但不代表不够好"));
    assert_eq!(contents(&t3), ["新的想法很好"]);
    assert_eq!(t3.state.status, ExecutionStatus::Completed);
    assert!(t3.state.skill_frames.is_empty());

    assert_eq!(
        h.session_var("new_belief"),
        Some(json!("我有时会失误，但不代表不够好"))
    );
    assert_eq!(
        h.state.variables.topic["t1"]["topic_copy"].value,
        json!("我有时会失误，但不代表不够好")
    );
    assert_eq!(
        h.session_var("evidence"),
        None,
        "technique variables stay in the frame"
    );
    let changed: Vec<(&str, VariableScope, &str)> = t3
        .variable_changes
        .iter()
        .map(|c| (c.name.as_str(), c.scope, c.source.as_str()))
        .collect();
    assert_eq!(
        changed,
        [
            ("new_belief", VariableScope::Session, "run_socratic"),
            ("topic_copy", VariableScope::Topic, "run_socratic")
        ]
    );
}

#[tokio::test]
async fn use_skill_of_an_unknown_technique_fails_naming_it() {
    let mut h = Harness::new(SKILL_SESSION);
    h.set_session_var("belief_text", json!("x"));
    h.llm.reply(j("你有什么想法？"));
    h.turn(None).await;
    let error = h.try_turn(Some("我不够好")).await.unwrap_err();
    let ErrorKind::ActionExecution { action_id, message } = &error.kind else {
        panic!("expected an action error, got {error:?}");
    };
    assert_eq!(action_id, "run_socratic");
    assert!(message.contains("socratic"));
    assert_eq!(
        error.context.position.unwrap().action_id.as_deref(),
        Some("run_socratic")
    );
}

#[tokio::test]
async fn use_skill_requires_the_required_parameters() {
    let session = SKILL_SESSION.replace(
        "{name: belief, from: '${belief_text}'}",
        "{name: belief, from: '${nowhere}'}",
    );
    let mut h = Harness::new(&session).with_technique(SOCRATIC);
    h.llm.reply(j("你有什么想法？"));
    h.turn(None).await;
    let error = h.try_turn(Some("我不够好")).await.unwrap_err();
    let ErrorKind::ActionExecution { message, .. } = &error.kind else {
        panic!("expected an action error, got {error:?}");
    };
    assert!(message.contains("belief"), "{message}");
}

#[tokio::test]
async fn a_completed_session_runs_nothing() {
    let mut h = Harness::new(
        "session_id: s\nphases:\n  - phase_id: p\n    topics:\n      - topic_id: t\n        actions:\n          - {action_id: a, action_type: ai_say, config: {content: 再见, require_acknowledgment: false}}\n",
    );
    h.llm.reply("再见啦");
    let t1 = h.turn(None).await;
    assert_eq!(t1.state.status, ExecutionStatus::Completed);
    let t2 = h.turn(Some("还在吗")).await;
    assert_eq!(t2.state.status, ExecutionStatus::Completed);
    assert!(t2.messages.is_empty() && t2.llm_calls.is_empty());
    assert_eq!(t2.state, t1.state);
    let user = t2.user_message.unwrap();
    assert_eq!((user.content.as_str(), user.action_id), ("还在吗", None));
}

#[tokio::test]
async fn a_failed_turn_leaves_the_state_and_can_be_retried() {
    let mut h = Harness::new(
        "session_id: s\nphases:\n  - phase_id: p\n    topics:\n      - topic_id: t\n        actions:\n          - {action_id: ask1, action_type: ai_ask, config: {content: 称呼, output: [{get: 名字}], max_rounds: 3}}\n",
    );
    h.llm.reply(j("q1"));
    h.turn(None).await;
    let before = h.state.clone();
    let request = h.request(Some("我叫小王"));
    h.llm
        .fail(LlmError::Timeout(std::time::Duration::from_secs(60)));
    let error = h.engine.run_turn(request.clone()).await.unwrap_err();
    assert!(matches!(error.kind, ErrorKind::Llm(LlmError::Timeout(_))));
    assert_eq!(
        error.context.position.unwrap().action_id.as_deref(),
        Some("ask1")
    );
    assert_eq!(request.state, before, "the request's state is untouched");

    h.llm
        .reply(r#"{"content":"q2","EXIT":"false","名字":"小王"}"#);
    let retry = h.turn(Some("我叫小王")).await;
    assert_eq!(contents(&retry), ["q2"]);
    assert_eq!(h.session_var("名字"), Some(json!("小王")));
}

#[tokio::test]
async fn declared_scopes_are_honoured() {
    let mut h = Harness::new(
        "session_id: s\nphases:\n  - phase_id: p\n    topics:\n      - topic_id: t\n        actions:\n          - {action_id: ask1, action_type: ai_ask, config: {content: 心情, output: [{get: mood, scope: topic}, {get: goal, scope: phase}, {get: shared, scope: global}], max_rounds: 2}}\n",
    );
    h.llm
        .reply(r#"{"content":"q1","mood":"低落","goal":"睡好","shared":1}"#);
    let out = h.turn(None).await;
    assert_eq!(h.state.variables.topic["t"]["mood"].value, json!("低落"));
    assert_eq!(h.state.variables.phase["p"]["goal"].value, json!("睡好"));
    assert_eq!(h.state.variables.global["shared"].value, json!(1));
    let scopes: Vec<(VariableScope, Option<&str>)> = out
        .variable_changes
        .iter()
        .map(|c| (c.scope, c.scope_key.as_deref()))
        .collect();
    assert_eq!(
        scopes,
        [
            (VariableScope::Topic, Some("t")),
            (VariableScope::Phase, Some("p")),
            (VariableScope::Global, None)
        ]
    );
}

#[tokio::test]
async fn the_scheme_is_fixed_on_the_first_turn() {
    let mut h = Harness::new(
        "template_scheme: crisis_intervention\nsession_id: s\nphases:\n  - phase_id: p\n    topics:\n      - topic_id: t\n        actions:\n          - {action_id: a, action_type: ai_ask, config: {content: 问, output: [{get: x}]}}\n",
    );
    h.llm.replies([j("q1"), j("q2")]);
    h.turn(None).await;
    // A later edit of the script does not change a running session.
    let mut edited = (*h.script).clone();
    edited.template_scheme = None;
    h.script = Arc::new(edited);
    h.turn(Some("答")).await;
    assert!(h.llm.last_call().prompt.starts_with("[crisis-ask]"));
}

#[tokio::test]
async fn history_window_bounds_what_prompts_see() {
    let options = EngineOptions {
        history_window: 1,
        ..EngineOptions::default()
    };
    let mut h = Harness::build(
        "session_id: s\nphases:\n  - phase_id: p\n    topics:\n      - topic_id: t\n        actions:\n          - {action_id: a, action_type: ai_say, config: {content: 讲, max_rounds: 3}}\n",
        support::memory_templates(),
        options,
    );
    h.llm.replies([j("一"), j("二")]);
    h.turn(None).await;
    for old in ["很久以前的话", "较早的话"] {
        h.history.insert(
            0,
            heartrule_domain::HistoryEntry {
                role: heartrule_domain::MessageRole::User,
                content: old.into(),
                action_id: None,
                llm_raw_output: None,
            },
        );
    }
    h.turn(Some("最新的话")).await;
    let prompt = h.llm.last_call().prompt;
    assert!(prompt.contains("最新的话") && prompt.contains("AI: 一"));
    assert!(!prompt.contains("较早的话"), "{prompt}");
}

#[tokio::test]
async fn the_embedded_project_templates_fill_every_placeholder() {
    let mut h = Harness::build(
        "
session_id: s
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - {action_id: think, action_type: ai_think, config: {content: 评估状态, input_variables: [用户名], output: [{get: mood, define: 情绪}]}}
          - {action_id: say, action_type: ai_say, config: {content: 介绍一下流程, max_rounds: 1}}
          - {action_id: ask, action_type: ai_ask, config: {content: 你的名字, output: [{get: name}]}}
",
        Arc::new(EmbeddedTemplates::new()),
        EngineOptions { monitors: true, ..EngineOptions::default() },
    );
    h.set_session_var("用户名", json!("小明"));
    h.llm.replies([
        r#"{"mood":"平静"}"#.to_owned(),
        j("流程是这样的"),
        r#"{"intervention_needed":false}"#.to_owned(),
    ]);
    h.turn(None).await;
    h.llm.replies([
        j("你叫什么？"),
        r#"{"intervention_needed":false}"#.to_owned(),
    ]);
    h.turn(Some("好的")).await;
    let calls = h.llm.calls();
    let purposes: Vec<&str> = calls.iter().map(|c| c.purpose.as_str()).collect();
    assert_eq!(
        purposes,
        [
            "ai_think",
            "ai_say",
            "ai_say_monitor",
            "ai_ask",
            "ai_ask_monitor"
        ]
    );
    for call in &calls {
        for placeholder in [
            "{{task}}",
            "{{chat}}",
            "{{output_list}}",
            "{{topic_content}}",
            "{{chat_history}}",
            "{{time}}",
            "{{who}}",
            "{{user}}",
            "{{tone}}",
            "{{input_variables}}",
            "{{current_round}}",
            "{{max_rounds}}",
            "{{exit}}",
            "{{target_variables}}",
            "{{user_engagement}}",
        ] {
            assert!(
                !call.prompt.contains(placeholder),
                "{} left {placeholder}",
                call.purpose
            );
        }
    }
    assert!(calls[0].prompt.contains("<task>\n评估状态\n</task>"));
    assert!(calls[1]
        .prompt
        .contains("<topic_content>\n介绍一下流程\n</topic_content>"));
    assert!(calls[3].prompt.contains("  \"name\": \"提取的name\""));
}

#[tokio::test]
async fn the_engine_loads_through_the_loader() {
    let h = Harness::new("session_id: s\nphases: []\n");
    let parsed = h
        .engine
        .load(
            "session:\n  session_id: s\n  phases:\n    - phase_id: p\n      topics:\n        - topic_id: t\n          actions:\n            - action_id: a\n              action_type: ai_say\n              config: {content_template: 你好}\n",
            heartrule_domain::LoadMode::Compatible,
        )
        .unwrap();
    assert!(!parsed.warnings.is_empty());
}

#[tokio::test]
async fn the_llms_safety_reading_reaches_the_outcome_even_when_the_ask_ends_without_a_message() {
    let mut h = Harness::new(
        "
session_id: s
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - {action_id: ask1, action_type: ai_ask, config: {content: 叫你什么, max_rounds: 3, output: [{get: name, define: 称呼}]}}
",
    );
    h.llm.replies([
        j("怎么称呼你？"),
        json!({
            "content": "好的",
            "EXIT": "true",
            "metadata": {"crisis_signal": true},
            "safety_risk": {"detected": false, "confidence": "high"},
            "name": "小明"
        })
        .to_string(),
    ]);
    let first = h.turn(None).await;
    assert!(
        first.safety_readings.is_empty(),
        "{:?}",
        first.safety_readings
    );
    let out = h.turn(Some("叫我小明，我想把东西都送人")).await;
    // The finished ask shows no message, yet its reading is kept.
    assert!(out.messages.is_empty(), "{:?}", contents(&out));
    assert_eq!(
        out.safety_readings,
        [json!({
            "crisis_signal": true,
            "safety_risk": {"detected": false, "confidence": "high"}
        })]
    );
}
