//! The offline `mock` provider: deterministic replies chosen by
//! `request.purpose` that satisfy the engine's JSON contracts, so every
//! script runs to its end without a network or an API key.
//!
//! Token usage is estimated as `ceil(characters / 4)` for the prompt and
//! for the reply (characters, not bytes, so Chinese text is not inflated).

use async_trait::async_trait;
use heartrule_domain::llm::{
    LlmChunk, LlmError, LlmProvider, LlmRequest, LlmResponse, LlmStream, TokenUsage,
};
use serde_json::{json, Map, Value};

/// Characters per streamed piece; small so streaming is visible in a UI.
const STREAM_CHUNK_CHARS: usize = 6;
const GENERIC_QUESTION: &str = "（模拟）能和我多说说你现在的想法吗？";
const GENERIC_REPLY: &str = "（模拟）这是离线模拟模型的回复。";
const NO_USER_ANSWER: &str = "（模拟）未找到用户回答";

/// Deterministic offline provider. Holds no state and uses no clock or randomness.
#[derive(Debug, Clone, Copy, Default)]
pub struct MockProvider;

impl MockProvider {
    pub const NAME: &'static str = "mock";
    pub const MODEL: &'static str = "mock";

    #[must_use]
    pub fn new() -> Self {
        Self
    }

    /// The reply text for a request (what `complete` returns as `text`).
    #[must_use]
    pub fn reply_text(request: &LlmRequest) -> String {
        let prompt = request.prompt.as_str();
        let purpose = request.purpose.as_str();
        if purpose.contains("monitor") {
            return monitor_reply();
        }
        match purpose {
            "ai_ask" => ai_ask_reply(prompt),
            "ai_say" => ai_say_reply(prompt),
            "rewrite" => rewrite_reply(prompt),
            "extract" => extract_reply(prompt),
            "ai_think" => ai_think_reply(prompt),
            _ => GENERIC_REPLY.to_owned(),
        }
    }

    fn response(request: &LlmRequest) -> LlmResponse {
        let text = Self::reply_text(request);
        let usage = estimate_usage(&request.prompt, &text);
        LlmResponse {
            text,
            model: Self::MODEL.to_owned(),
            provider: Self::NAME.to_owned(),
            finish_reason: Some("stop".to_owned()),
            usage,
        }
    }
}

#[async_trait]
impl LlmProvider for MockProvider {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        Ok(Self::response(request))
    }

    async fn stream(&self, request: &LlmRequest) -> Result<LlmStream, LlmError> {
        let response = Self::response(request);
        let mut items: Vec<Result<LlmChunk, LlmError>> =
            split_chars(&response.text, STREAM_CHUNK_CHARS)
                .into_iter()
                .map(|piece| Ok(LlmChunk::Delta(piece)))
                .collect();
        items.push(Ok(LlmChunk::Done(response)));
        Ok(Box::pin(futures::stream::iter(items)))
    }
}

/// `ceil(chars / 4)` for prompt and completion.
#[must_use]
pub fn estimate_usage(prompt: &str, completion: &str) -> TokenUsage {
    let prompt_tokens = estimate_tokens(prompt);
    let completion_tokens = estimate_tokens(completion);
    TokenUsage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens.saturating_add(completion_tokens),
    }
}

fn estimate_tokens(text: &str) -> u32 {
    let chars = text.chars().count();
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

fn split_chars(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|piece| piece.iter().collect())
        .collect()
}

/// Text between a line that is exactly `open` and the next line that is
/// exactly `close` (surrounding whitespace ignored), trimmed.
fn tagged_block(prompt: &str, open: &str, close: &str) -> Option<String> {
    let mut lines = prompt.lines();
    lines.by_ref().find(|line| line.trim() == open)?;
    let mut body = Vec::new();
    for line in lines {
        if line.trim() == close {
            let text = body.join("\n").trim().to_owned();
            return (!text.is_empty()).then_some(text);
        }
        body.push(line);
    }
    None
}

fn ai_ask_reply(prompt: &str) -> String {
    let question =
        tagged_block(prompt, "<task>", "</task>").unwrap_or_else(|| GENERIC_QUESTION.to_owned());
    json!({
        "content": question,
        "EXIT": "true",
        "BRIEF": "（模拟）已完成提问",
        "metrics": {
            "information_completeness": "（模拟）完整",
            "user_engagement": "（模拟）积极",
            "emotional_intensity": "（模拟）平稳",
            "reply_relevance": "（模拟）相关"
        },
        "progress_suggestion": "completed",
        "safety_risk": {"detected": false, "risk_type": null, "confidence": "high", "reason": ""}
    })
    .to_string()
}

fn ai_say_reply(prompt: &str) -> String {
    let content = tagged_block(prompt, "<topic_content>", "</topic_content>")
        .unwrap_or_else(|| GENERIC_REPLY.to_owned());
    json!({
        "content": content,
        "EXIT": "false",
        "BRIEF": "（模拟）已讲解",
        "metrics": {
            "user_engagement": "（模拟）积极",
            "emotional_intensity": "（模拟）平稳",
            "understanding_level": "90"
        },
        "progress_suggestion": "continue_needed",
        "safety_risk": {"detected": false, "risk_type": null, "confidence": "high", "reason": ""},
        "metadata": {
            "assessment": {
                "understanding_level": 90,
                "has_questions": false,
                "expressed_understanding": true,
                "reasoning": "（模拟）"
            }
        }
    })
    .to_string()
}

fn rewrite_reply(prompt: &str) -> String {
    const MARKER: &str = "请改写：";
    match prompt.rfind(MARKER) {
        Some(index) => prompt[index + MARKER.len()..].trim().to_owned(),
        None => GENERIC_REPLY.to_owned(),
    }
}

fn extract_reply(prompt: &str) -> String {
    prompt
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("user: "))
        .map(|answer| answer.trim().to_owned())
        .unwrap_or_else(|| NO_USER_ANSWER.to_owned())
}

fn ai_think_reply(prompt: &str) -> String {
    let object: Map<String, Value> = prompt
        .lines()
        .filter_map(output_list_key)
        .map(|key| {
            let value = Value::String(format!("（模拟）{key}"));
            (key.to_owned(), value)
        })
        .collect();
    Value::Object(object).to_string()
}

/// The key of an output-list line `  "k": "提取的k"` optionally followed by
/// `,` and/or ` // comment`.
fn output_list_key(line: &str) -> Option<&str> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let rest = line.strip_prefix("  \"")?;
    let (key, rest) = rest.split_once("\": \"提取的")?;
    if key.is_empty() || key.contains('"') {
        return None;
    }
    let rest = rest.strip_prefix(key)?.strip_prefix('"')?;
    let rest = rest.strip_prefix(',').unwrap_or(rest);
    (rest.is_empty() || rest.starts_with(" // ")).then_some(key)
}

fn monitor_reply() -> String {
    json!({
        "intervention_needed": false,
        "intervention_reason": "normal",
        "intervention_level": "action_feedback",
        "strategy_suggestion": "continue",
        "feedback_for_action": "",
        "orchestration_needed": false
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn request(purpose: &str, prompt: &str) -> LlmRequest {
        LlmRequest {
            prompt: prompt.to_owned(),
            temperature: 0.7,
            max_tokens: 800,
            purpose: purpose.to_owned(),
            sensitive: heartrule_domain::SensitiveValues::none(),
        }
    }

    fn reply_json(purpose: &str, prompt: &str) -> Map<String, Value> {
        let text = MockProvider::reply_text(&request(purpose, prompt));
        match serde_json::from_str::<Value>(&text).unwrap() {
            Value::Object(object) => object,
            other => panic!("expected an object, got {other}"),
        }
    }

    #[test]
    fn ai_ask_returns_the_task_text_and_exits() {
        let prompt = "你是咨询师。\n<task>\n请问你叫什么名字？\n</task>\n请输出JSON";
        let reply = reply_json("ai_ask", prompt);
        assert_eq!(reply["content"], "请问你叫什么名字？");
        assert_eq!(reply["EXIT"], "true");
        assert!(reply["BRIEF"]
            .as_str()
            .is_some_and(|brief| !brief.is_empty()));
    }

    #[test]
    fn ai_ask_without_a_task_asks_a_generic_question() {
        let reply = reply_json("ai_ask", "no tags here");
        assert_eq!(reply["content"], GENERIC_QUESTION);
        assert_eq!(reply["EXIT"], "true");
    }

    #[test]
    fn ai_say_returns_the_topic_content_with_a_passing_assessment() {
        let prompt = "head\n  <topic_content>  \n第一行\n第二行\n</topic_content>\ntail";
        let reply = reply_json("ai_say", prompt);
        assert_eq!(reply["content"], "第一行\n第二行");
        assert_eq!(reply["EXIT"], "false");
        let assessment = &reply["metadata"]["assessment"];
        assert_eq!(assessment["understanding_level"], 90);
        assert_eq!(assessment["has_questions"], false);
        assert_eq!(assessment["expressed_understanding"], true);
    }

    #[test]
    fn rewrite_returns_the_text_after_the_last_marker() {
        let prompt = "说明：请改写：不是这个\n\n请改写：欢迎来到今天的练习。";
        let text = MockProvider::reply_text(&request("rewrite", prompt));
        assert_eq!(text, "欢迎来到今天的练习。");
    }

    #[test]
    fn extract_returns_the_last_user_line() {
        let prompt = "【对话历史】\nassistant: 你叫什么？\nuser: 小明\nassistant: 多大了？\nuser: 二十岁\n【提取任务】\n变量名：年龄";
        let text = MockProvider::reply_text(&request("extract", prompt));
        assert_eq!(text, "二十岁");
        let none = MockProvider::reply_text(&request("extract", "no history"));
        assert_eq!(none, NO_USER_ANSWER);
    }

    #[test]
    fn ai_think_fills_every_output_list_key() {
        let prompt = concat!(
            "{\n",
            "  \"情绪\": \"提取的情绪\",\n",
            "  \"诉求\": \"提取的诉求\", // 用户想要什么\n",
            "  \"总结\": \"提取的总结\" // 一句话\n",
            "  \"last\": \"提取的last\"\r\n",
            "  \"bad\": \"提取的other\",\n",
            "   \"indent\": \"提取的indent\",\n",
            "  \"trail\": \"提取的trail\" extra\n",
            "}"
        );
        let reply = reply_json("ai_think", prompt);
        let mut keys: Vec<&str> = reply.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["last", "总结", "情绪", "诉求"]);
        assert_eq!(reply["情绪"], "（模拟）情绪");
        assert_eq!(reply["last"], "（模拟）last");
    }

    #[test]
    fn monitor_purposes_never_intervene() {
        for purpose in ["ai_ask_monitor", "ai_say_monitor", "monitor"] {
            let reply = reply_json(purpose, "anything");
            assert_eq!(reply["intervention_needed"], false);
            assert_eq!(reply["strategy_suggestion"], "continue");
        }
    }

    #[test]
    fn unknown_purposes_get_a_fixed_text() {
        let text = MockProvider::reply_text(&request("summary", "x"));
        assert_eq!(text, GENERIC_REPLY);
    }

    #[test]
    fn usage_counts_characters_divided_by_four_rounded_up() {
        assert_eq!(
            estimate_usage("12345", "一二三四"),
            TokenUsage {
                prompt_tokens: 2,
                completion_tokens: 1,
                total_tokens: 3
            }
        );
        assert_eq!(estimate_usage("", "").total_tokens, 0);
    }

    #[tokio::test]
    async fn complete_is_deterministic_and_stream_matches_it() {
        let provider = MockProvider::new();
        let req = request(
            "ai_say",
            "<topic_content>\n今天我们聊聊情绪和身体的关系。\n</topic_content>",
        );
        let first = provider.complete(&req).await.unwrap();
        let second = provider.complete(&req).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(first.provider, "mock");
        assert_eq!(first.usage, estimate_usage(&req.prompt, &first.text));

        let chunks: Vec<LlmChunk> = provider
            .stream(&req)
            .await
            .unwrap()
            .map(|item| item.unwrap())
            .collect()
            .await;
        assert!(
            chunks.len() > 2,
            "the reply should arrive in several pieces"
        );
        let (last, deltas) = chunks.split_last().unwrap();
        let joined: String = deltas
            .iter()
            .map(|chunk| match chunk {
                LlmChunk::Delta(text) => text.as_str(),
                LlmChunk::Done(_) => panic!("Done before the end"),
            })
            .collect();
        assert_eq!(joined, first.text);
        assert_eq!(last, &LlmChunk::Done(first));
    }
}
