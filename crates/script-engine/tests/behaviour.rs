//! The behavioural cases, numbered 1–31 as in the test names, run
//! against the engine with a deterministic fake LLM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use heartrule_domain::{
    estimate_tokens, ErrorKind, ExecutionStatus, HistoryEntry, LlmError, LoadMode, MessageRole,
    ScriptEngine, ScriptLoadError, ValidationErrorType, VariableScope,
};
use heartrule_script_engine::runtime::prompts::beijing_time_text;
use heartrule_script_engine::runtime::templates::MemoryTemplates;
use heartrule_script_engine::runtime::{EngineOptions, HISTORY_TRIMMED_KEY};
use serde_json::{json, Value};
use std::sync::Arc;
use support::{contents, j, test_now, test_templates, Harness};

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

const SAY_NO_ACK: &str = "
- action_id: say1
  action_type: ai_say
  config: {content: \"欢迎\", require_acknowledgment: false}";

// 1
#[tokio::test]
async fn case_01_empty_script_completes_without_calls() {
    let mut h = Harness::new("session_id: s\nphases: []\n");
    let out = h.turn(None).await;
    assert_eq!(out.state.status, ExecutionStatus::Completed);
    assert_eq!(h.llm.call_count(), 0);
    assert!(out.messages.is_empty());
    assert!(out.user_message.is_none());
    assert_eq!(out.state.position.phase_index, 0);
}

// 2
#[tokio::test]
async fn case_02_legacy_say_without_acknowledgment() {
    let mut h = Harness::new(&one_topic(SAY_NO_ACK));
    h.llm.reply("你好，欢迎");
    let out = h.turn(None).await;
    assert_eq!(out.state.status, ExecutionStatus::Completed);
    let call = h.llm.last_call();
    assert!(call.prompt.contains("请改写：欢迎"), "{}", call.prompt);
    assert_eq!((call.temperature, call.max_tokens), (0.7, 500));
    assert_eq!(call.purpose, "rewrite");
    assert_eq!(contents(&out), ["你好，欢迎"]);
    assert_eq!(out.messages[0].action_id.as_deref(), Some("say1"));
    assert_eq!(out.messages[0].role, MessageRole::Assistant);
    assert_eq!(out.llm_calls.len(), 1);
}

// 3
#[tokio::test]
async fn case_03_acknowledged_say_then_second_say() {
    let mut h = Harness::new(&one_topic(
        "
- action_id: a
  action_type: ai_say
  config: {content: \"第一段\"}
- action_id: b
  action_type: ai_say
  config: {content: \"第二段\", require_acknowledgment: false}",
    ));
    h.llm.replies(["A改写", "B改写"]);
    let t1 = h.turn(None).await;
    assert_eq!(h.llm.call_count(), 1);
    assert_eq!(t1.state.status, ExecutionStatus::WaitingInput);
    assert_eq!(t1.state.position.action_index, 0);
    let pending = t1.state.pending_action.as_ref().unwrap();
    assert_eq!((pending.action_id.as_str(), pending.round), ("a", 1));
    assert_eq!(t1.messages[0].metadata["waitingFor"], "acknowledgment");

    let t2 = h.turn(Some("我知道了")).await;
    assert_eq!(
        h.llm.call_count(),
        2,
        "A completes without a call, B makes one"
    );
    assert_eq!(t2.state.status, ExecutionStatus::Completed);
    assert_eq!(contents(&t2), ["B改写"]);
    let user = t2.user_message.unwrap();
    assert_eq!(user.content, "我知道了");
    assert_eq!(user.action_id.as_deref(), Some("a"));
}

// 4
#[tokio::test]
async fn case_04_two_says_in_one_turn() {
    let mut h = Harness::new(&one_topic(
        "
- action_id: say1
  action_type: ai_say
  config: {content: \"一\", require_acknowledgment: false}
- action_id: say2
  action_type: ai_say
  config: {content: \"二\", require_acknowledgment: false}",
    ));
    h.llm.replies(["一改", "二改"]);
    let out = h.turn(None).await;
    assert_eq!(h.llm.call_count(), 2);
    let ids: Vec<_> = out
        .messages
        .iter()
        .map(|m| m.action_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["say1", "say2"]);
    assert_eq!(out.state.status, ExecutionStatus::Completed);
}

// 5
#[tokio::test]
async fn case_05_legacy_say_substitutes_scoped_variables() {
    let mut h = Harness::new(&one_topic(
        "
- action_id: say1
  action_type: ai_say
  config: {content: \"你好{用户名}，我是{咨询师名}。\", require_acknowledgment: false}",
    ));
    h.set_session_var("用户名", json!("小明"));
    h.set_session_var("咨询师名", json!("Dr. Smith"));
    h.llm.reply("ok");
    h.turn(None).await;
    assert!(h
        .llm
        .last_call()
        .prompt
        .contains("你好小明，我是Dr. Smith。"));
}

// 6
#[tokio::test]
async fn case_06_template_say_one_round_twice() {
    let mut h = Harness::new(&one_topic(
        "
- action_id: s1
  action_type: ai_say
  config: {content: \"第一\", max_rounds: 1}
- action_id: s2
  action_type: ai_say
  config: {content: \"第二\", max_rounds: 1}",
    ));
    h.llm.replies([j("m1"), j("m2")]);
    let t1 = h.turn(None).await;
    assert_eq!(t1.state.status, ExecutionStatus::WaitingInput);
    assert_eq!(contents(&t1), ["m1"]);
    let t2 = h.turn(Some("")).await;
    assert_eq!(h.llm.call_count(), 2, "no call for action 1 in T2");
    assert_eq!(contents(&t2), ["m2"]);
    assert_eq!(t2.state.status, ExecutionStatus::WaitingInput);
    assert_eq!(t2.state.position.action_id.as_deref(), Some("s2"));
    assert_eq!(h.llm.last_call().purpose, "ai_say");
    assert_eq!(
        (h.llm.last_call().temperature, h.llm.last_call().max_tokens),
        (0.7, 1000)
    );
}

const SAY_TWO_ROUNDS: &str = "
- action_id: s1
  action_type: ai_say
  config: {content: \"讲解\", max_rounds: 2}";

// 7
#[tokio::test]
async fn case_07_template_say_two_rounds_completes_on_t3() {
    let mut h = Harness::new(&one_topic(SAY_TWO_ROUNDS));
    h.llm.replies([j("a"), j("b")]);
    let t1 = h.turn(None).await;
    assert_eq!(t1.state.status, ExecutionStatus::WaitingInput);
    assert_eq!(t1.messages[0].metadata["waitingFor"], "acknowledgment");
    assert_eq!(t1.state.position.current_round, Some(1));

    let t2 = h.turn(Some("x")).await;
    assert_eq!(contents(&t2), ["b"]);
    assert_eq!(t2.state.status, ExecutionStatus::WaitingInput);
    assert!(t2.state.pending_action.is_none(), "no current action");
    assert_eq!(
        t2.state.position.phase_index, 1,
        "the cursor moved past the action"
    );
    assert!(t2.state.position.action_id.is_none());

    let t3 = h.turn(Some("")).await;
    assert_eq!(t3.state.status, ExecutionStatus::Completed);
    assert!(t3.messages.is_empty());
    assert_eq!(h.llm.call_count(), 2);
}

fn say_with_criteria(criteria: &str) -> String {
    one_topic(&format!(
        "
- action_id: s1
  action_type: ai_say
  config: {{content: \"讲解\", max_rounds: 5, exit_criteria: {criteria}}}"
    ))
}

fn say_reply(content: &str, level: u32, has_questions: bool) -> String {
    json!({"content": content, "EXIT": "false",
        "metadata": {"assessment": {"understanding_level": level, "has_questions": has_questions}}})
    .to_string()
}

// 8
#[tokio::test]
async fn case_08_early_exit_via_exit_criteria() {
    let mut h = Harness::new(&say_with_criteria("{understanding_threshold: 80}"));
    h.llm
        .replies([say_reply("m1", 40, false), say_reply("m2", 85, false)]);
    h.turn(None).await;
    let t2 = h.turn(Some("懂了")).await;
    assert_eq!(contents(&t2), ["m2"]);
    assert!(t2.state.pending_action.is_none(), "the action completed");
    let decision = &t2.messages[0].metadata["exitDecision"];
    assert_eq!(decision["decision_source"], "exit_criteria");
    assert!(decision["reason"].as_str().unwrap().contains("理解度达标"));
    assert_eq!(t2.messages[0].metadata["exit_reason"], "exit_criteria_met");
    // Resumed and finished with a message: the user answers it first.
    assert_eq!(t2.state.status, ExecutionStatus::WaitingInput);
}

// 9
#[tokio::test]
async fn case_09_questions_block_the_exit() {
    let mut h = Harness::new(&say_with_criteria(
        "{understanding_threshold: 80, has_questions: false}",
    ));
    h.llm
        .replies([say_reply("m1", 40, false), say_reply("m2", 85, true)]);
    h.turn(None).await;
    let t2 = h.turn(Some("还有疑问")).await;
    assert_eq!(t2.state.pending_action.as_ref().unwrap().round, 2);
    assert_eq!(
        t2.messages[0].metadata["exitDecision"]["reason"],
        "用户仍有疑问，不允许退出"
    );
}

// 10
#[tokio::test]
async fn case_10_exit_flag_is_ignored_for_say() {
    let mut h = Harness::new(&one_topic(
        "
- action_id: s1
  action_type: ai_say
  config: {content: \"讲解\", max_rounds: 3}",
    ));
    h.llm.reply(r#"{"content":"m","EXIT":"true"}"#);
    let t1 = h.turn(None).await;
    assert_eq!(t1.state.status, ExecutionStatus::WaitingInput);
    assert_eq!(t1.state.pending_action.as_ref().unwrap().round, 1);
}

// 11 — the exit sources are unit-tested in runtime/exit.rs; this checks a
// custom condition end to end through the scoped variables.
#[tokio::test]
async fn case_11_custom_exit_condition_reads_session_variables() {
    let mut h = Harness::new(&say_with_criteria(
        "{custom_conditions: [{variable: 用户情绪, operator: \"==\", value: 平和}]}",
    ));
    h.set_session_var("用户情绪", json!("平和"));
    h.llm.reply(j("m1"));
    let t1 = h.turn(None).await;
    let decision = &t1.messages[0].metadata["exitDecision"];
    assert_eq!(decision["decision_source"], "exit_criteria");
    assert!(decision["reason"]
        .as_str()
        .unwrap()
        .contains("用户情绪 == 平和"));
    // A fresh action that completes continues the walk: the script ends.
    assert_eq!(t1.state.status, ExecutionStatus::Completed);
}

const SIMPLE_ASK_THEN_SAY: &str = "
- action_id: ask1
  action_type: ai_ask
  config: {content: \"怎么称呼？\", target_variable: user_name}
- action_id: say1
  action_type: ai_say
  config: {content: \"谢谢\", require_acknowledgment: false}";

// 12
#[tokio::test]
async fn case_12_simple_ask_passes_the_answer() {
    let mut h = Harness::new(&one_topic(SIMPLE_ASK_THEN_SAY));
    h.llm.replies([r#"{"content":"请问怎么称呼？"}"#, "好的"]);
    let t1 = h.turn(None).await;
    assert_eq!(t1.state.status, ExecutionStatus::WaitingInput);
    assert_eq!(contents(&t1), ["请问怎么称呼？"]);
    let prompt = &h.llm.calls()[0].prompt;
    assert!(prompt.contains("怎么称呼？") && prompt.contains("用户提供了足够的信息"));
    assert_eq!(
        (h.llm.calls()[0].temperature, h.llm.calls()[0].max_tokens),
        (0.7, 800)
    );

    let t2 = h.turn(Some("小李")).await;
    assert_eq!(h.session_var("user_name"), Some(json!("小李")));
    assert_eq!(h.state.variables.session["user_name"].source, "ask1");
    let change = &t2.variable_changes[0];
    assert_eq!(
        (change.name.as_str(), change.scope),
        ("user_name", VariableScope::Session)
    );
    assert_eq!(change.source, "ask1");
    assert_eq!(contents(&t2), ["好的"]);
    assert_eq!(t2.state.status, ExecutionStatus::Completed);
}

#[tokio::test]
async fn case_12_variant_plain_text_question_and_empty_answer() {
    let mut h = Harness::new(&one_topic(SIMPLE_ASK_THEN_SAY));
    h.llm.reply("请问您怎么称呼");
    let t1 = h.turn(None).await;
    assert_eq!(contents(&t1), ["请问您怎么称呼"]);
    let t2 = h.turn(Some("  ")).await;
    assert_eq!(contents(&t2), ["请提供您的回答。"]);
    assert_eq!(t2.state.pending_action.as_ref().unwrap().round, 1);
    assert_eq!(t2.state.status, ExecutionStatus::WaitingInput);
    assert_eq!(h.llm.call_count(), 1, "no call for an empty answer");
}

const MULTI_ASK: &str = "
- action_id: ask1
  action_type: ai_ask
  config: {content: \"称呼?\", output: [{get: 用户名}], max_rounds: 3}";

// 13
#[tokio::test]
async fn case_13_multi_round_ask() {
    let mut h = Harness::new(&one_topic(MULTI_ASK));
    h.llm.replies([
        j("q1"),
        r#"{"content":"q2","EXIT":"false","用户名":"小王"}"#.to_owned(),
        r#"{"content":"q3","EXIT":"true"}"#.to_owned(),
    ]);
    h.turn(None).await;
    let t2 = h.turn(Some("我姓王")).await;
    assert_eq!(contents(&t2), ["q2"]);
    assert_eq!(t2.state.pending_action.as_ref().unwrap().round, 2);
    assert_eq!(h.session_var("用户名"), Some(json!("小王")));
    // The answer is in the prompt's chat.
    assert!(h.llm.last_call().prompt.contains("我姓王"));

    let t3 = h.turn(Some("对")).await;
    assert_eq!(t3.state.status, ExecutionStatus::Completed);
    assert!(
        t3.messages.is_empty(),
        "the exit round's question is discarded"
    );
    assert_eq!(h.session_var("用户名"), Some(json!("小王")));
    assert_eq!(h.llm.call_count(), 3);
}

fn ask_x(define: &str) -> String {
    one_topic(&format!(
        "
- action_id: ask1
  action_type: ai_ask
  config: {{content: \"年龄?\", output: [{{get: x{define}}}], max_rounds: 2}}"
    ))
}

// 14
#[tokio::test]
async fn case_14_max_rounds_reached_uses_the_answer() {
    let mut h = Harness::new(&ask_x(""));
    h.llm.replies([j("q1"), j("q2"), j("q3")]);
    h.turn(None).await;
    h.turn(Some("a")).await;
    let t3 = h.turn(Some("b")).await;
    assert_eq!(t3.state.status, ExecutionStatus::Completed);
    assert_eq!(h.session_var("x"), Some(json!("b")));
    assert_eq!(h.llm.call_count(), 3);
    let decisions = h.state.metadata["exitDecisions"].as_array().unwrap();
    let last = decisions.last().unwrap();
    assert_eq!(last["exitReason"], "max_rounds_reached");
    assert_eq!(last["decision"]["decision_source"], "max_rounds");
}

// 15
#[tokio::test]
async fn case_15_finish_extraction_with_define() {
    let mut h = Harness::new(&ask_x(", define: 用户年龄"));
    h.llm
        .replies([j("q1"), j("q2"), j("q3"), " 28 ".to_owned()]);
    h.turn(None).await;
    h.turn(Some("a")).await;
    let t3 = h.turn(Some("我二十八")).await;
    assert_eq!(h.session_var("x"), Some(json!("28")));
    let purposes: Vec<&str> = t3.llm_calls.iter().map(|c| c.purpose.as_str()).collect();
    assert_eq!(
        purposes,
        ["ai_ask", "extract"],
        "every call of the turn is recorded"
    );
    let calls = h.llm.calls();
    assert_eq!(calls.len(), 4);
    let extraction = &calls[3];
    assert_eq!((extraction.temperature, extraction.max_tokens), (0.3, 500));
    assert_eq!(extraction.purpose, "extract");
    assert!(extraction.prompt.contains("用户年龄"));
    assert!(extraction.prompt.contains("我二十八"));
    assert!(!calls[2].streamed && !calls[3].streamed);
}

// 16
#[tokio::test]
async fn case_16_llm_suggestion_exits_without_reason() {
    let mut h = Harness::new(&one_topic(MULTI_ASK));
    h.llm
        .replies([j("q1"), r#"{"content":"q2","should_exit":true}"#.to_owned()]);
    h.turn(None).await;
    let t2 = h.turn(Some("好")).await;
    assert_eq!(t2.state.status, ExecutionStatus::Completed);
    let last = h.state.metadata["exitDecisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["decision"]["decision_source"], "llm_suggestion");
    assert!(last.get("exitReason").is_none());
    // No 用户名 anywhere: the answer is used.
    assert_eq!(h.session_var("用户名"), Some(json!("好")));
}

// 17
#[tokio::test]
async fn case_17_malformed_json_continues() {
    let mut h = Harness::new(&one_topic(MULTI_ASK));
    h.llm.replies(["not json", "bad"]);
    let t1 = h.turn(None).await;
    assert_eq!(contents(&t1), ["not json"]);
    assert_eq!(t1.messages[0].metadata["parseRetryCount"], 3);
    assert_eq!(t1.messages[0].metadata["parseError"], true);
    let t2 = h.turn(Some("答")).await;
    assert_eq!(contents(&t2), ["bad"]);
    assert_eq!(t2.state.status, ExecutionStatus::WaitingInput);
    assert_eq!(t2.state.pending_action.as_ref().unwrap().round, 2);
    assert_eq!(t2.messages[0].metadata["llmRawOutput"], "bad");
}

// 18
#[tokio::test]
async fn case_18_fenced_json_after_prose() {
    let mut h = Harness::new(&one_topic(MULTI_ASK));
    h.llm.reply("说明\n```json\n{\"content\":\"q\"}\n```");
    let t1 = h.turn(None).await;
    assert_eq!(contents(&t1), ["q"]);
    assert_eq!(t1.messages[0].metadata["parseError"], true);
    assert_eq!(t1.messages[0].metadata["parseRetryCount"], 3);
}

// 19
#[tokio::test]
async fn case_19_output_list_reaches_the_ask_prompt() {
    let mut h = Harness::new(&one_topic(
        "
- action_id: ask1
  action_type: ai_ask
  config: {content: \"基本信息\", output: [{get: 姓名, define: 用户的姓名}, {get: 年龄}]}",
    ));
    h.llm.reply(j("q"));
    h.turn(None).await;
    let prompt = h.llm.last_call().prompt;
    assert!(
        prompt.contains("  \"姓名\": \"提取的姓名\", // 用户的姓名\n  \"年龄\": \"提取的年龄\"\n}"),
        "{prompt}"
    );
}

// 20
#[tokio::test]
async fn case_20_substitution_is_literal_and_single_pass() {
    let mut h = Harness::new(&one_topic(
        "
- action_id: ask1
  action_type: ai_ask
  config: {content: \"{%time%}|{{time}}|{{a}}|{a}|${a}|{{未定义}}|{b}|{c}|{d}|{e}\"}",
    ));
    h.set_session_var("a", json!("甲"));
    h.set_session_var("b", json!("1+1"));
    h.set_session_var("c", json!("$&"));
    h.set_session_var("d", json!("{a}"));
    h.set_session_var("e", json!(["x", "y"]));
    h.llm.reply(j("q"));
    h.turn(None).await;
    let time = beijing_time_text(test_now());
    let expected = format!("{time}|{time}|甲|甲|甲|{{{{未定义}}}}|1+1|$&|{{a}}|x、y");
    assert!(
        h.llm.last_call().prompt.contains(&expected),
        "{}",
        h.llm.last_call().prompt
    );
}

const TWO_TOPICS_SCOPES: &str = "
session_id: s
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - action_id: ask_t1
            action_type: ai_ask
            config: {content: \"T1:{x}|{y}\", target_variable: user_name}
      - topic_id: t2
        actions:
          - action_id: ask_t2
            action_type: ai_ask
            config: {content: \"T2:{x}|{y}|${user_name}，说说…\"}
";

// 21 + 22
#[tokio::test]
async fn case_21_22_scope_lookup_and_cross_topic_placeholders() {
    let mut h = Harness::new(TWO_TOPICS_SCOPES);
    h.set_session_var("x", json!("会话值"));
    let at = test_now();
    for (name, value) in [("x", "话题值"), ("y", "仅话题")] {
        h.state.variables.set(
            name,
            VariableScope::Topic,
            Some("t1"),
            heartrule_domain::VariableValue::new(json!(value), "initial", VariableScope::Topic, at),
        );
    }
    h.llm.replies([j("q1"), j("q2")]);
    h.turn(None).await;
    assert!(h.llm.last_call().prompt.contains("T1:话题值|仅话题"));
    let t2 = h.turn(Some("小李")).await;
    assert_eq!(t2.state.position.topic_id.as_deref(), Some("t2"));
    let prompt = h.llm.last_call().prompt;
    // Topic scope is private to t1; session values resolve everywhere.
    assert!(prompt.contains("T2:会话值|{y}|小李，说说…"), "{prompt}");
}

// 23 — initial variables already sit, typed, in the session scope.
#[tokio::test]
async fn case_23_initial_variables_are_typed_session_variables() {
    let mut h = Harness::new(
        "session_id: s\nphases:\n  - phase_id: p1\n    topics:\n      - topic_id: t1\n        actions: []\n",
    );
    h.set_session_var("用户姓名", json!("李永"));
    h.set_session_var("用户年龄", json!(28));
    h.set_session_var("是否已婚", json!(true));
    let before = h.state.variables.clone();
    let out = h.turn(None).await;
    assert_eq!(out.state.status, ExecutionStatus::Completed);
    assert_eq!(out.state.variables, before, "the store is left unchanged");
    let types: Vec<&str> = ["用户姓名", "用户年龄", "是否已婚"]
        .iter()
        .map(|n| out.state.variables.session[*n].value_type.as_str())
        .collect();
    assert_eq!(types, ["string", "number", "boolean"]);
    assert!(out.variable_changes.is_empty());
}

// 24
#[tokio::test]
async fn case_24_ai_think_is_a_real_call() {
    let mut h = Harness::new(&one_topic(
        "
- action_id: think1
  action_type: ai_think
  config: {content: \"分析{用户名}的情绪\", input_variables: [用户名, 缺失], output: [{get: a}, {get: b}, {get: c}]}
- action_id: say1
  action_type: ai_say
  config: {content: \"继续\", require_acknowledgment: false}",
    ));
    h.set_session_var("用户名", json!("小明"));
    h.llm.replies([
        r#"```json
{"a": "平静", "b": 2, "unrelated": 1}
```"#,
        "继续吧",
    ]);
    let out = h.turn(None).await;
    let think = &h.llm.calls()[0];
    assert_eq!(think.purpose, "ai_think");
    assert!(think.prompt.contains("分析小明的情绪"));
    assert!(think.prompt.contains("用户名: 小明\n缺失: （未提供）"));
    assert!(think.prompt.contains("  \"a\": \"提取的a\","));
    assert_eq!(h.session_var("a"), Some(json!("平静")));
    assert_eq!(h.session_var("b"), Some(json!(2)));
    assert_eq!(h.session_var("c"), None);
    assert_eq!(contents(&out), ["继续吧"], "ai_think produces no message");
    assert_eq!(out.state.status, ExecutionStatus::Completed);
}

// 25
#[tokio::test]
async fn case_25_unknown_action_type_is_a_load_error() {
    let h = Harness::new("session_id: s\nphases: []\n");
    let yaml = "session:\n  session_id: s\n  phases:\n    - phase_id: p\n      topics:\n        - topic_id: t\n          actions:\n            - action_id: a\n              action_type: foo\n              config: {content: x}\n";
    for mode in [LoadMode::Strict, LoadMode::Compatible] {
        let error = h.engine.load(yaml, mode).unwrap_err();
        let ScriptLoadError::Invalid { issues } = error else {
            panic!("expected validation issues, got {error:?}");
        };
        assert!(
            issues
                .iter()
                .any(|i| i.error_type == ValidationErrorType::EnumValueInvalid
                    && i.path.ends_with("actions[0].action_type")),
            "{issues:?}"
        );
    }
    // use_skill runs a technique: covered in tests/flows.rs.
}

// 26
#[tokio::test]
async fn case_26_template_layers() {
    let ask = "
- action_id: ask1
  action_type: ai_ask
  config: {content: \"危机评估\"}";
    let custom = format!("template_scheme: crisis_intervention\n{}", one_topic(ask));
    let mut h = Harness::new(&custom);
    h.llm.reply(j("q"));
    let out = h.turn(None).await;
    assert!(h.llm.last_call().prompt.starts_with("[crisis-ask]"));
    assert_eq!(out.messages[0].metadata["template_layer"], "custom");
    assert_eq!(
        out.messages[0].metadata["template_scheme"],
        "crisis_intervention"
    );
    assert_eq!(
        out.state.template_scheme.as_deref(),
        Some("crisis_intervention")
    );

    let mut h = Harness::new(&format!("template_scheme: nope\n{}", one_topic(ask)));
    h.llm.reply(j("q"));
    let out = h.turn(None).await;
    assert!(h.llm.last_call().prompt.starts_with("[ask]"));
    assert_eq!(out.messages[0].metadata["template_layer"], "default");
    assert_eq!(
        out.messages[0].metadata["template_path"],
        "default/ai_ask_v1.md"
    );

    let only_say: Vec<_> = test_templates()
        .into_iter()
        .filter(|(path, _)| !path.ends_with("ai_ask_v1.md"))
        .collect();
    let mut h = Harness::build(
        &one_topic(ask),
        Arc::new(MemoryTemplates::new(only_say)),
        EngineOptions::default(),
    );
    let error = h.try_turn(None).await.unwrap_err();
    let ErrorKind::ActionExecution { action_id, message } = &error.kind else {
        panic!("expected an action error, got {error:?}");
    };
    assert_eq!(action_id, "ask1");
    assert!(message.contains("default/ai_ask_v1.md"), "{message}");
    assert_eq!(h.llm.call_count(), 0);
}

// 27
#[tokio::test]
async fn case_27_state_json_round_trip_gives_the_same_t2() {
    let mut h = Harness::new(&one_topic(SAY_TWO_ROUNDS));
    h.llm.replies([j("a"), j("b"), j("b")]);
    h.turn(None).await;
    let json = serde_json::to_string(&h.state).unwrap();
    let restored: heartrule_domain::EngineState = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, h.state);
    let pending = restored.pending_action.as_ref().unwrap();
    assert_eq!(
        (
            pending.action_id.as_str(),
            pending.round,
            pending.max_rounds
        ),
        ("s1", 1, 2)
    );

    let mut request = h.request(Some("x"));
    request.state = restored;
    let from_json = h.engine.run_turn(request).await.unwrap();
    let direct = h.turn(Some("x")).await;
    assert_eq!(from_json, direct);
}

// 28
#[tokio::test]
async fn case_28_result_handling_and_cursor_moves() {
    let yaml = "
session_id: s
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - action_id: hello
            action_type: ai_say
            config: {content: 你好}
      - topic_id: t2
        actions:
          - action_id: ask1
            action_type: ai_ask
            config: {content: 称呼, output: [{get: 用户名}], max_rounds: 3}
";
    let mut h = Harness::new(yaml);
    h.llm.replies(["你好呀".to_owned(), j("q1")]);
    h.turn(None).await;
    // End of a topic → next topic, index 0.
    let t2 = h.turn(Some("嗯")).await;
    let p = &t2.state.position;
    assert_eq!((p.phase_index, p.topic_index, p.action_index), (0, 1, 0));
    assert_eq!(
        (p.topic_id.as_deref(), p.action_id.as_deref()),
        (Some("t2"), Some("ask1"))
    );
    assert_eq!(
        t2.state.metadata["actionRoundInfo"]["ask1"]["currentRound"],
        1
    );

    h.llm.reply(
        json!({"content": "q2", "EXIT": "false", "metrics": {"user_engagement": "高"}}).to_string(),
    );
    let t3 = h.turn(Some("叫我小王")).await;
    let meta = &t3.state.metadata;
    assert_eq!(meta["actionRoundInfo"]["ask1"]["currentRound"], 2);
    assert_eq!(meta["actionRoundInfo"]["ask1"]["maxRounds"], 3);
    let decision = meta["exitDecisions"].as_array().unwrap().last().unwrap();
    assert_eq!(decision["actionId"], "ask1");
    assert_eq!(decision["decision"]["should_exit"], false);
    let metrics = meta["actionMetricsHistory"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(metrics["metrics"]["user_engagement"], "高");
    assert_eq!(metrics["actionType"], "ai_ask");
    assert_eq!(t3.llm_calls.len(), 1);
    assert_eq!(t3.llm_calls[0].action_id, "ask1");

    // The last action finishing → completed, ids cleared.
    h.llm.reply(r#"{"content":"q3","EXIT":"true"}"#);
    let t4 = h.turn(Some("好")).await;
    assert_eq!(t4.state.status, ExecutionStatus::Completed);
    let p = &t4.state.position;
    assert_eq!((p.phase_index, p.topic_index, p.action_index), (1, 0, 0));
    assert!(p.phase_id.is_none() && p.topic_id.is_none() && p.action_id.is_none());
}

// 29
#[tokio::test]
async fn case_29_llm_failure_keeps_the_position() {
    let yaml = "
session_id: s
phases:
  - phase_id: p1
    topics:
      - topic_id: t1
        actions:
          - {action_id: ok, action_type: ai_say, config: {content: 一, require_acknowledgment: false}}
      - topic_id: t2
        actions:
          - {action_id: broken, action_type: ai_say, config: {content: 二, require_acknowledgment: false}}
      - topic_id: t3
        actions:
          - {action_id: later, action_type: ai_say, config: {content: 三, require_acknowledgment: false}}
";
    let mut h = Harness::new(yaml);
    h.llm.reply("一改");
    h.llm.fail(LlmError::Unavailable("down".into()));
    let before = h.state.clone();
    let error = h.try_turn(None).await.unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Llm(LlmError::Unavailable("down".into()))
    );
    let position = error.context.position.unwrap();
    assert_eq!(
        (position.topic_index, position.action_id.as_deref()),
        (1, Some("broken"))
    );
    assert_eq!(h.llm.call_count(), 2, "later topics do not run");
    assert_eq!(h.state, before, "the caller keeps its state");
}

// 30
#[tokio::test]
async fn case_30_schema_validation_through_the_engine() {
    let h = Harness::new("session_id: s\nphases: []\n");
    let valid = "session:\n  session_id: s1\n  phases:\n    - phase_id: p\n      topics:\n        - topic_id: t\n          actions:\n            - action_id: a\n              action_type: ai_say\n              config: {content: 你好, max_rounds: 1}\n";
    assert!(h.engine.load(valid, LoadMode::Strict).is_ok());

    let issues = |yaml: &str, mode| match h.engine.load(yaml, mode) {
        Err(ScriptLoadError::Invalid { issues }) => issues,
        other => panic!("expected validation issues, got {other:?}"),
    };
    let deprecated = valid.replace("{content: 你好, max_rounds: 1}", "{content_template: 你好}");
    let found = issues(&deprecated, LoadMode::Strict);
    assert!(
        found.iter().any(
            |i| i.error_type == ValidationErrorType::RequiredFieldMissing
                && i.path == "session.phases[0].topics[0].actions[0].config.content"
        ),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.error_type == ValidationErrorType::StructureError
                && i.suggestion
                    .as_deref()
                    .is_some_and(|s| s.contains("content"))),
        "{found:?}"
    );

    let found = issues("metadata: {name: x}\n", LoadMode::Strict);
    assert!(found
        .iter()
        .any(|i| i.error_type == ValidationErrorType::StructureError && i.path == "root"));

    let found = issues(
        &valid.replace("max_rounds: 1", "max_rounds: 11"),
        LoadMode::Strict,
    );
    assert!(found
        .iter()
        .any(|i| i.error_type == ValidationErrorType::ConstraintViolation));

    let bad_indent = "session:\n  session_id: s\n phases: []\n";
    assert!(matches!(
        h.engine.load(bad_indent, LoadMode::Strict),
        Err(ScriptLoadError::Syntax { .. })
    ));
}

// 31 — parsing and feedback are unit-tested in runtime/monitor.rs; this runs
// a monitor end to end: awaited, its advice reaches the next prompt once.
#[tokio::test]
async fn case_31_monitor_feedback_reaches_the_next_prompt_once() {
    let options = EngineOptions {
        monitors: true,
        ..EngineOptions::default()
    };
    let mut h = Harness::build(&one_topic(MULTI_ASK), support::memory_templates(), options);
    h.llm.replies([
        j("q1"),
        json!({"intervention_needed": true, "intervention_reason": "insufficient",
               "strategy_suggestion": "rephrase", "feedback_for_action": "换个更具体的问法"})
        .to_string(),
        j("q2"),
        "garbage".to_owned(),
        j("q3"),
        "garbage".to_owned(),
    ]);
    let t1 = h.turn(None).await;
    let calls = h.llm.calls();
    assert_eq!(calls[1].purpose, "ai_ask_monitor");
    assert_eq!((calls[1].temperature, calls[1].max_tokens), (0.5, 800));
    assert!(
        calls[1].prompt.contains("轮次 1/3 目标 用户名"),
        "{}",
        calls[1].prompt
    );
    assert_eq!(t1.llm_calls.len(), 2);

    h.turn(Some("嗯")).await;
    let calls = h.llm.calls();
    assert!(calls[2]
        .prompt
        .contains("【Topic层策略建议】\n换个更具体的问法"));
    h.turn(Some("还是嗯")).await;
    let calls = h.llm.calls();
    assert!(
        !calls[4].prompt.contains("【Topic层策略建议】"),
        "advice is cleared after use"
    );
    let log = h.state.metadata["monitorFeedback"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[1]["analysis"]["parse_error"], true);
    assert_eq!(log[1]["analysis"]["intervention_needed"], false);
    let _: &Value = &log[0]["analysis"];
}

// Prompt-size guard: the oldest history leaves a prompt that would not
// leave room for the call's reply; the turn never fails for size.
fn long_history() -> Vec<HistoryEntry> {
    (0..5)
        .map(|i| HistoryEntry {
            role: if i % 2 == 0 {
                MessageRole::User
            } else {
                MessageRole::Assistant
            },
            // About 100 estimated tokens each.
            content: format!("marker-{i} {}", "a".repeat(400)),
            action_id: None,
            llm_raw_output: None,
        })
        .collect()
}

async fn first_ask_prompt(context_window_tokens: u32) -> (String, heartrule_domain::TurnOutcome) {
    let options = EngineOptions {
        context_window_tokens,
        ..EngineOptions::default()
    };
    let mut h = Harness::build(&one_topic(MULTI_ASK), support::memory_templates(), options);
    h.history = long_history();
    h.state
        .metadata
        .insert(HISTORY_TRIMMED_KEY.to_owned(), json!(99));
    h.llm.replies([j("q1")]);
    let outcome = h.turn(None).await;
    (h.llm.last_call().prompt, outcome)
}

#[tokio::test]
async fn the_oldest_history_is_trimmed_to_fit_the_context_window() {
    // A window that fits: everything shown, the old report cleared.
    let (full, outcome) = first_ask_prompt(128_000).await;
    for i in 0..5 {
        assert!(full.contains(&format!("marker-{i}")), "{full}");
    }
    assert!(!outcome.state.metadata.contains_key(HISTORY_TRIMMED_KEY));

    // 250 tokens short: the three oldest entries (~100 each) go.
    let window = estimate_tokens(&full) - 250 + 800;
    let (trimmed, outcome) = first_ask_prompt(window).await;
    assert!(estimate_tokens(&trimmed) + 800 <= window);
    for i in 0..3 {
        assert!(!trimmed.contains(&format!("marker-{i}")), "{trimmed}");
    }
    for i in 3..5 {
        assert!(trimmed.contains(&format!("marker-{i}")), "{trimmed}");
    }
    assert_eq!(outcome.state.metadata[HISTORY_TRIMMED_KEY], json!(3));
    assert_eq!(contents(&outcome), ["q1"]);

    // Not even the template fits: sent without history, the turn goes on.
    let (bare, outcome) = first_ask_prompt(900).await;
    assert!(!bare.contains("marker-"), "{bare}");
    assert_eq!(outcome.state.metadata[HISTORY_TRIMMED_KEY], json!(5));
    assert_eq!(contents(&outcome), ["q1"]);
}
