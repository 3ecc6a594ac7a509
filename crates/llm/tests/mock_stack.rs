//! The default stack (`provider: mock`) answers every engine purpose with
//! replies that satisfy the engine's contracts, complete and streamed alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::StreamExt;
use heartrule_domain::llm::{LlmChunk, LlmRequest};
use heartrule_llm::{build, LlmConfig, LlmStack};
use serde_json::Value;

fn request(purpose: &str, prompt: &str) -> LlmRequest {
    LlmRequest {
        prompt: prompt.to_owned(),
        temperature: 0.7,
        max_tokens: 800,
        purpose: purpose.to_owned(),
        sensitive: heartrule_domain::SensitiveValues::none(),
    }
}

/// The reply of `complete`, checked to equal what `stream` assembles.
async fn reply(stack: &LlmStack, purpose: &str, prompt: &str) -> String {
    let request = request(purpose, prompt);
    let completed = stack.provider.complete(&request).await.unwrap();
    let items: Vec<LlmChunk> = stack
        .provider
        .stream(&request)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    let streamed: String = items
        .iter()
        .filter_map(|item| match item {
            LlmChunk::Delta(text) => Some(text.as_str()),
            LlmChunk::Done(_) => None,
        })
        .collect();
    assert_eq!(streamed, completed.text);
    assert_eq!(items.last(), Some(&LlmChunk::Done(completed.clone())));
    assert_eq!(completed.provider, "mock");
    assert!(completed.usage.prompt_tokens > 0);
    completed.text
}

fn object(text: &str) -> serde_json::Map<String, Value> {
    match serde_json::from_str::<Value>(text).unwrap() {
        Value::Object(object) => object,
        other => panic!("expected a JSON object, got {other}"),
    }
}

#[tokio::test]
async fn every_purpose_gets_a_reply_in_its_contract() {
    let stack = build(&LlmConfig::default()).unwrap();

    let ask_prompt = "你是一位心理咨询师。\n<task>\n你希望我怎么称呼你？\n</task>\n请按JSON输出：\n{\n  \"content\": \"…\",\n  \"称呼\": \"提取的称呼\"\n}";
    let ask = object(&reply(&stack, "ai_ask", ask_prompt).await);
    assert_eq!(ask["content"], "你希望我怎么称呼你？");
    assert_eq!(ask["EXIT"], "true");
    assert!(ask["BRIEF"].is_string());

    let say_prompt = "讲解以下内容：\n<topic_content>\n焦虑是身体对威胁的自然反应。\n</topic_content>\n理解阈值：80";
    let say = object(&reply(&stack, "ai_say", say_prompt).await);
    assert_eq!(say["content"], "焦虑是身体对威胁的自然反应。");
    assert_eq!(say["EXIT"], "false");
    assert_eq!(say["metadata"]["assessment"]["understanding_level"], 90);
    assert_eq!(say["metadata"]["assessment"]["has_questions"], false);
    assert_eq!(
        say["metadata"]["assessment"]["expressed_understanding"],
        true
    );

    let rewrite = reply(
        &stack,
        "rewrite",
        "请用温暖的语气改写，保持原意。\n\n请改写：欢迎你来到这里。",
    )
    .await;
    assert_eq!(rewrite, "欢迎你来到这里。");

    let extract_prompt = "【对话历史】\nassistant: 你希望我怎么称呼你？\nuser: 叫我小林就好\n【提取任务】\n变量名：称呼\n只输出内容。";
    assert_eq!(
        reply(&stack, "extract", extract_prompt).await,
        "叫我小林就好"
    );

    let think_prompt = "<task>\n分析用户状态\n</task>\n输出JSON：\n{\n  \"情绪\": \"提取的情绪\", // 主要情绪\n  \"风险\": \"提取的风险\"\n}";
    let think = object(&reply(&stack, "ai_think", think_prompt).await);
    assert_eq!(think.len(), 2);
    assert_eq!(think["情绪"], "（模拟）情绪");
    assert_eq!(think["风险"], "（模拟）风险");

    for purpose in ["ai_ask_monitor", "ai_say_monitor"] {
        let monitor = object(&reply(&stack, purpose, "指标：…").await);
        assert_eq!(monitor["intervention_needed"], false);
    }

    let other = reply(&stack, "summary", "anything").await;
    assert!(!other.is_empty());
}
