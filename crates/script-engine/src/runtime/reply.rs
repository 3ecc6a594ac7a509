//! Reading the JSON replies of ai_say / ai_ask:
//! one lenient parse, the action's fallback object on failure, and the
//! fields every action reads the same way.

use super::llm_json::parse_reply;
use super::placeholders::value_to_text;
use super::templates::ResolvedTemplate;
use serde_json::{json, Map, Value};

/// Filled in for every metric the reply does not provide.
pub(crate) const METRIC_UNAVAILABLE: &str = "LLM输出JSON解析失败，无法评估";
/// Legacy count kept in metadata for clients of the old engine, which
/// reported three parse attempts on failure.
const LEGACY_PARSE_ATTEMPTS: u32 = 3;
const PROGRESS_VALUES: [&str; 4] = ["continue_needed", "completed", "blocked", "off_topic"];

/// A reply as the action sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    /// The parsed object, or the action's fallback built from the raw text.
    pub object: Map<String, Value>,
    /// True when the reply was not a bare JSON object.
    pub parse_error: bool,
    pub error_detail: Option<String>,
    /// True when no object could be read and the fallback is in use.
    pub fallback: bool,
    /// What `llmRawOutput` records: the parsed object, or the raw text.
    pub raw_output: Value,
}

/// Parses `raw` once; on failure uses `fallback(raw)`.
pub(crate) fn read(raw: &str, fallback: impl FnOnce(&str) -> Map<String, Value>) -> Reply {
    let parsed = parse_reply(raw);
    match parsed.object {
        Some(object) => Reply {
            raw_output: Value::Object(object.clone()),
            object,
            parse_error: parsed.parse_error,
            error_detail: parsed.error_detail,
            fallback: false,
        },
        None => Reply {
            object: fallback(raw),
            parse_error: true,
            error_detail: parsed.error_detail,
            fallback: true,
            raw_output: Value::String(raw.to_owned()),
        },
    }
}

/// A non-empty text field (strings as they are, other scalars as text).
pub(crate) fn text(object: &Map<String, Value>, key: &str) -> Option<String> {
    object
        .get(key)
        .filter(|v| !v.is_null() && !v.is_object() && !v.is_array())
        .map(value_to_text)
        .filter(|t| !t.trim().is_empty())
}

/// A value worth extracting: not null and not a blank string.
pub(crate) fn non_empty(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        _ => true,
    }
}

/// The metrics object with every expected key present.
pub(crate) fn metrics(object: &Map<String, Value>, keys: &[&str]) -> Value {
    let mut metrics = object
        .get("metrics")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for key in keys {
        let missing = metrics.get(*key).is_none_or(|v| !non_empty(v));
        if missing {
            metrics.insert(
                (*key).to_owned(),
                Value::String(METRIC_UNAVAILABLE.to_owned()),
            );
        }
    }
    Value::Object(metrics)
}

/// `progress_suggestion` normalised to its four values, plus the original
/// text when it was something else (kept visible instead of silently
/// coerced).
pub(crate) fn progress_suggestion(object: &Map<String, Value>) -> (String, Option<String>) {
    match text(object, "progress_suggestion") {
        Some(value) if PROGRESS_VALUES.contains(&value.trim()) => (value.trim().to_owned(), None),
        Some(other) => ("continue_needed".to_owned(), Some(other)),
        None => ("continue_needed".to_owned(), None),
    }
}

/// The reply's own `metadata` object.
pub(crate) fn llm_metadata(object: &Map<String, Value>) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

/// Records `parseError`, `parseRetryCount` and `parseErrorDetails`.
pub(crate) fn parse_metadata(reply: &Reply, metadata: &mut Map<String, Value>) {
    metadata.insert("parseError".to_owned(), json!(reply.parse_error));
    let attempts = if reply.parse_error {
        LEGACY_PARSE_ATTEMPTS
    } else {
        1
    };
    metadata.insert("parseRetryCount".to_owned(), json!(attempts));
    if let Some(detail) = &reply.error_detail {
        metadata.insert("parseErrorDetails".to_owned(), json!(detail));
    }
}

/// Records where the prompt template came from.
pub(crate) fn template_metadata(template: &ResolvedTemplate, metadata: &mut Map<String, Value>) {
    metadata.insert("template_path".to_owned(), json!(template.path));
    metadata.insert("template_layer".to_owned(), json!(template.layer.as_str()));
    metadata.insert("template_scheme".to_owned(), json!(template.scheme));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fallback(raw: &str) -> Map<String, Value> {
        json!({ "content": raw.trim() })
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn a_bare_object_is_used_as_is() {
        let reply = read(r#"{"content":"q","EXIT":"false"}"#, fallback);
        assert!(!reply.parse_error);
        assert!(!reply.fallback);
        assert_eq!(reply.raw_output["content"], "q");
    }

    #[test]
    fn prose_falls_back_to_the_raw_text() {
        let reply = read("  not json ", fallback);
        assert!(reply.parse_error && reply.fallback);
        assert_eq!(reply.object["content"], "not json");
        assert_eq!(reply.raw_output, json!("  not json "));
        let mut metadata = Map::new();
        parse_metadata(&reply, &mut metadata);
        assert_eq!(metadata["parseRetryCount"], 3);
        assert!(metadata.contains_key("parseErrorDetails"));
    }

    #[test]
    fn metrics_are_completed() {
        let object = json!({"metrics": {"user_engagement": "高", "emotional_intensity": ""}});
        let metrics = metrics(
            object.as_object().unwrap(),
            &["user_engagement", "emotional_intensity"],
        );
        assert_eq!(metrics["user_engagement"], "高");
        assert_eq!(metrics["emotional_intensity"], METRIC_UNAVAILABLE);
    }

    #[test]
    fn progress_is_normalised_but_unknown_values_are_kept() {
        let object = |v: &str| {
            json!({ "progress_suggestion": v })
                .as_object()
                .cloned()
                .unwrap()
        };
        assert_eq!(
            progress_suggestion(&object("blocked")),
            ("blocked".into(), None)
        );
        assert_eq!(
            progress_suggestion(&object("maybe")),
            ("continue_needed".into(), Some("maybe".into()))
        );
        assert_eq!(
            progress_suggestion(&Map::new()),
            ("continue_needed".into(), None)
        );
    }

    #[test]
    fn text_skips_blank_and_structured_values() {
        let object = json!({"a": " ", "b": {"x": 1}, "c": 3, "d": "ok"});
        let object = object.as_object().unwrap();
        assert_eq!(text(object, "a"), None);
        assert_eq!(text(object, "b"), None);
        assert_eq!(text(object, "c").as_deref(), Some("3"));
        assert_eq!(text(object, "d").as_deref(), Some("ok"));
    }
}
