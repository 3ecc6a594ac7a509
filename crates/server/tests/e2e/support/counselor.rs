//! A scripted LLM behind the fake OpenAI server: it recognises which of the
//! engine's prompts it got (legacy rewrite, ai_say, ai_ask, ai_think,
//! extraction) and answers with that prompt's JSON contract, filling every
//! requested variable from [`scripted_value`].

use super::fake_llm::{completion, stream_events, FakeServer, RecordedRequest, Reply};
use serde_json::{json, Map, Value};

/// What the fake "client" said, by variable name.
pub fn scripted_value(name: &str) -> String {
    match name {
        "user_name" | "visitor_name" => "小明".into(),
        "presenting_problem" => "最近工作压力很大，晚上睡不着".into(),
        "problem_duration" => "三个月".into(),
        "recent_situation" => "周一的部门例会上".into(),
        "hot_thought" => "我什么都做不好".into(),
        "emotion_intensity" => "焦虑 80".into(),
        "formulation" => "例会上被提问时想到自己什么都做不好，随之焦虑并回避发言。".into(),
        "thinking_trap" => "以偏概全".into(),
        "supporting_evidence" => "上周的报告被退回".into(),
        "contrary_evidence" => "上个月的项目按时完成并受到表扬".into(),
        "balanced_thought" => "我有些事没做好，但也有很多事做得不错".into(),
        "session_summary" => "我们梳理了压力和那个自动思维。".into(),
        "homework" => "每天记录一次自动思维和替代想法".into(),
        other => format!("（脚本）{other}"),
    }
}

const REWRITE_MARKER: &str = "请改写：";
const EXTRACT_MARKER: &str = "请从下面的咨询对话中提取指定的信息";
const THINK_MARKER: &str = "内部分析助手";

/// The text between a line `open` and the next line `close`.
fn block(prompt: &str, open: &str, close: &str) -> Option<String> {
    let start = prompt.find(open)? + open.len();
    let end = prompt[start..].find(close)? + start;
    Some(prompt[start..end].trim().to_owned())
}

/// Keys of the `{{output_list}}` lines (`  "key": "提取的key"`).
fn output_keys(prompt: &str) -> Vec<String> {
    prompt
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("  \"")?;
            let (key, rest) = rest.split_once("\": \"提取的")?;
            rest.starts_with(key).then(|| key.to_owned())
        })
        .collect()
}

fn with_outputs(mut object: Map<String, Value>, prompt: &str) -> String {
    for key in output_keys(prompt) {
        let value = scripted_value(&key);
        object.insert(key, Value::String(value));
    }
    Value::Object(object).to_string()
}

/// `safety_risk` of a reply that found nothing.
fn safe() -> Value {
    json!({"detected": false, "risk_type": null, "confidence": "high", "reason": null})
}

/// The reply text for one engine prompt.
pub fn reply_text(prompt: &str) -> String {
    if let Some(index) = prompt.rfind(REWRITE_MARKER) {
        return prompt[index + REWRITE_MARKER.len()..].trim().to_owned();
    }
    if prompt.contains(EXTRACT_MARKER) {
        let name = prompt
            .lines()
            .find_map(|line| line.strip_prefix("变量名："))
            .unwrap_or_default()
            .trim();
        return scripted_value(name);
    }
    if prompt.contains(THINK_MARKER) {
        return with_outputs(Map::new(), prompt);
    }
    if let Some(topic) = block(prompt, "<topic_content>", "</topic_content>") {
        let object = json!({
            "content": topic,
            "EXIT": "false",
            "BRIEF": "讲解",
            "progress_suggestion": "continue_needed",
            "safety_risk": safe(),
            "metadata": {"assessment": {
                "understanding_level": 90,
                "has_questions": false,
                "expressed_understanding": true,
                "reasoning": "scripted"
            }}
        });
        return object.to_string();
    }
    if let Some(task) = block(prompt, "<task>", "</task>") {
        let object = json!({
            "content": task,
            "EXIT": "true",
            "BRIEF": "提问",
            "progress_suggestion": "completed",
            "safety_risk": safe()
        });
        return with_outputs(object.as_object().cloned().unwrap(), prompt);
    }
    panic!("the scripted LLM does not know this prompt:\n{prompt}");
}

/// The prompt (the single user message) of a chat-completions request.
pub fn prompt_of(request: &RecordedRequest) -> String {
    request.json()["messages"][0]["content"]
        .as_str()
        .expect("a chat request with one message")
        .to_owned()
}

pub fn is_stream(request: &RecordedRequest) -> bool {
    request.json()["stream"] == true
}

/// Splits `text` into pieces of `size` characters.
pub fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// A chat-completions answer carrying `text`, streamed when asked.
pub fn answer(request: &RecordedRequest, text: &str) -> Reply {
    if is_stream(request) {
        let pieces = pieces(text, 7);
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        Reply::sse(&stream_events(&refs, 40, 20))
    } else {
        Reply::json(200, &completion(text, 40, 20))
    }
}

/// The scripted counselor's answer to one request.
pub fn counselor(request: &RecordedRequest) -> Reply {
    answer(request, &reply_text(&prompt_of(request)))
}

/// A fake OpenAI server that is the scripted counselor.
pub async fn counselor_server() -> FakeServer {
    FakeServer::start(|_, request| counselor(request)).await
}
