//! Topic-layer monitors: after an incomplete ai_ask or
//! template ai_say result, a second LLM call reviews the action's
//! self-reported metrics. The call is awaited; its advice is appended to the
//! next prompt of that action and then cleared. A monitor never fails a turn.

use super::flow::push_capped;
use super::llm_json::{flag, parse_reply};
use super::placeholders::value_to_text;
use super::prompts::{AI_ASK_MONITOR_TEMPLATE, AI_SAY_MONITOR_TEMPLATE};
use super::templates::TemplateError;
use super::turn::{Location, Streaming, Turn};
use heartrule_domain::ActionType;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Key of the pending action's data holding advice for its next prompt.
pub(crate) const FEEDBACK_KEY: &str = "monitorFeedback";

/// Metrics each monitored action reports about itself, per action type.
pub(crate) const ASK_METRICS: [&str; 4] = [
    "information_completeness",
    "user_engagement",
    "emotional_intensity",
    "reply_relevance",
];
pub(crate) const SAY_METRICS: [&str; 3] = [
    "user_engagement",
    "emotional_intensity",
    "understanding_level",
];

/// What the monitor is told about the result under review.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MonitorRequest {
    pub action_type: ActionType,
    pub round: u32,
    pub max_rounds: u32,
    pub metrics: Value,
    pub progress_suggestion: String,
    /// The variables the action extracts (ai_ask).
    pub target_variables: Vec<String>,
    /// The AI message under review (ai_say).
    pub topic_content: Option<String>,
}

/// The monitor's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct MonitorAnalysis {
    pub intervention_needed: bool,
    /// `blocked|off_topic|insufficient|normal`
    pub intervention_reason: String,
    /// `action_feedback|topic_orchestration`
    pub intervention_level: String,
    /// `rephrase|comfort|accept_partial|skip|continue`
    pub strategy_suggestion: String,
    pub feedback_for_action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_approach: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example_suggestion: Option<String>,
    pub orchestration_needed: bool,
    pub parse_error: bool,
}

impl MonitorAnalysis {
    /// "No intervention": used when the reply could not be read.
    fn none(parse_error: bool) -> Self {
        Self {
            intervention_needed: false,
            intervention_reason: "normal".to_owned(),
            intervention_level: "action_feedback".to_owned(),
            strategy_suggestion: "continue".to_owned(),
            feedback_for_action: String::new(),
            modified_approach: None,
            example_suggestion: None,
            orchestration_needed: false,
            parse_error,
        }
    }
}

/// Reads a monitor reply leniently; garbage means "no intervention".
pub(crate) fn parse_analysis(raw: &str) -> MonitorAnalysis {
    let parsed = parse_reply(raw);
    let Some(object) = parsed.object else {
        return MonitorAnalysis::none(true);
    };
    let text = |key: &str| {
        object
            .get(key)
            .filter(|v| !v.is_null())
            .map(value_to_text)
            .filter(|t| !t.trim().is_empty())
    };
    let defaults = MonitorAnalysis::none(parsed.parse_error);
    MonitorAnalysis {
        intervention_needed: flag(&object, &["intervention_needed"]).unwrap_or(false),
        intervention_reason: text("intervention_reason").unwrap_or(defaults.intervention_reason),
        intervention_level: text("intervention_level").unwrap_or(defaults.intervention_level),
        strategy_suggestion: text("strategy_suggestion").unwrap_or(defaults.strategy_suggestion),
        feedback_for_action: text("feedback_for_action").unwrap_or_default(),
        modified_approach: text("modified_approach"),
        example_suggestion: text("example_suggestion"),
        // Topic orchestration is not part of the engine.
        orchestration_needed: false,
        parse_error: parsed.parse_error,
    }
}

/// The advice appended to the action's next prompt, when there is any.
pub(crate) fn feedback_text(analysis: &MonitorAnalysis) -> Option<String> {
    if !analysis.intervention_needed || analysis.feedback_for_action.trim().is_empty() {
        return None;
    }
    let mut text = format!(
        "【Topic层策略建议】\n{}",
        analysis.feedback_for_action.trim()
    );
    if let Some(approach) = &analysis.modified_approach {
        text.push_str(&format!("\n\n【建议调整方式】\n{}", approach.trim()));
    }
    if let Some(example) = &analysis.example_suggestion {
        text.push_str(&format!("\n\n【具体例子】\n{}", example.trim()));
    }
    text.push_str("\n\n请在生成下一轮回复时参考以上建议。");
    Some(text)
}

/// Runs the monitor for `request`; returns advice for the next prompt.
pub(crate) async fn review(
    turn: &mut Turn,
    loc: &Location,
    action_id: &str,
    request: &MonitorRequest,
) -> Option<String> {
    let file = match request.action_type {
        ActionType::AiSay => AI_SAY_MONITOR_TEMPLATE,
        _ => AI_ASK_MONITOR_TEMPLATE,
    };
    let template = match turn.try_template(file) {
        Ok(template) => template,
        Err(TemplateError::NotFound { path }) => {
            tracing::debug!(%path, "no monitor template; monitor skipped");
            return None;
        }
        Err(error) => {
            tracing::warn!(%error, "monitor template unavailable; monitor skipped");
            return None;
        }
    };
    let vars = monitor_vars(turn, loc, action_id, request);
    let prompt = turn.render(loc, &template.text, &vars);
    let purpose = format!("{}_monitor", request.action_type.as_str());
    let timestamp = turn.now.to_rfc3339();
    let reply = match turn
        .call_llm(action_id, &purpose, prompt, 0.5, 800, Streaming::Off)
        .await
    {
        Ok(reply) => reply,
        Err(error) => {
            tracing::warn!(%error, "monitor call failed; the action continues without advice");
            push_capped(
                &mut turn.state.metadata,
                "monitorFeedback",
                json!({ "actionId": action_id, "error": error.to_string(), "timestamp": timestamp }),
            );
            return None;
        }
    };
    let analysis = parse_analysis(&reply);
    let feedback = feedback_text(&analysis);
    push_capped(
        &mut turn.state.metadata,
        "monitorFeedback",
        json!({ "actionId": action_id, "analysis": analysis, "timestamp": timestamp }),
    );
    feedback
}

fn monitor_vars(
    turn: &Turn,
    loc: &Location,
    action_id: &str,
    request: &MonitorRequest,
) -> BTreeMap<&'static str, String> {
    let metric = |key: &str| {
        request
            .metrics
            .get(key)
            .map(value_to_text)
            .unwrap_or_else(|| "未知".to_owned())
    };
    let profile = |name: &str| {
        turn.lookup_text(loc, name)
            .unwrap_or_else(|| "未知".to_owned())
    };
    let targets = if request.target_variables.is_empty() {
        "未指定".to_owned()
    } else {
        request.target_variables.join("、")
    };
    let mut vars = BTreeMap::new();
    vars.insert("current_round", request.round.to_string());
    vars.insert("max_rounds", request.max_rounds.to_string());
    vars.insert("max_retry_count", request.max_rounds.to_string());
    vars.insert("target_variables", targets);
    vars.insert("progress_suggestion", request.progress_suggestion.clone());
    vars.insert("min_completeness_requirement", "关键信息齐全".to_owned());
    vars.insert("retry_strategy", "换一种问法，或提供选项与例子".to_owned());
    for key in ASK_METRICS.iter().chain(SAY_METRICS.iter()) {
        vars.insert(key, metric(key));
    }
    let history = metrics_history(&turn.state.metadata, action_id);
    vars.insert("engagement_trend", trend(&history, "user_engagement"));
    vars.insert("emotion_trend", trend(&history, "emotional_intensity"));
    vars.insert(
        "understanding_trend",
        trend(&history, "understanding_level"),
    );
    vars.insert("question_frequency", format!("第{}轮", request.round));
    vars.insert(
        "topic_content",
        request.topic_content.clone().unwrap_or_default(),
    );
    vars.insert("education_background", profile("教育背景"));
    vars.insert("psychology_knowledge", profile("心理学知识"));
    vars.insert("learning_style", profile("学习风格"));
    vars
}

/// This action's metric snapshots, oldest first.
fn metrics_history(metadata: &BTreeMap<String, Value>, action_id: &str) -> Vec<Map<String, Value>> {
    metadata
        .get("actionMetricsHistory")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e.get("actionId").and_then(Value::as_str) == Some(action_id))
                .filter_map(|e| e.get("metrics").and_then(Value::as_object).cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// The last three values of a metric, e.g. `低 → 中 → 高`.
fn trend(history: &[Map<String, Value>], key: &str) -> String {
    let values: Vec<String> = history
        .iter()
        .filter_map(|m| m.get(key))
        .map(value_to_text)
        .collect();
    if values.is_empty() {
        return "暂无数据".to_owned();
    }
    let start = values.len().saturating_sub(3);
    values[start..].join(" → ")
}

#[cfg(test)]
mod tests {
    use super::*;

    // A well-formed reply is used as is and turned into feedback text.
    #[test]
    fn valid_json_is_used() {
        let analysis = parse_analysis(
            r#"{"intervention_needed": true, "intervention_reason": "blocked",
                "strategy_suggestion": "rephrase", "feedback_for_action": "换个问法",
                "modified_approach": "先共情", "example_suggestion": "比如……"}"#,
        );
        assert!(analysis.intervention_needed);
        assert_eq!(analysis.intervention_reason, "blocked");
        assert_eq!(analysis.strategy_suggestion, "rephrase");
        assert!(!analysis.parse_error);
        let text = feedback_text(&analysis).unwrap();
        assert!(text.starts_with("【Topic层策略建议】\n换个问法"));
        assert!(text.contains("【建议调整方式】\n先共情"));
        assert!(text.contains("【具体例子】\n比如……"));
    }

    #[test]
    fn fenced_json_is_used_and_flagged() {
        let analysis = parse_analysis(
            "分析如下\n```json\n{\"intervention_needed\": \"true\", \"feedback_for_action\": \"放慢节奏\"}\n```",
        );
        assert!(analysis.intervention_needed);
        assert!(analysis.parse_error);
        assert_eq!(analysis.feedback_for_action, "放慢节奏");
    }

    #[test]
    fn garbage_means_no_intervention() {
        let analysis = parse_analysis("I cannot help with that");
        assert_eq!(analysis, MonitorAnalysis::none(true));
        assert!(feedback_text(&analysis).is_none());
    }

    #[test]
    fn feedback_needs_an_intervention_and_text() {
        let mut analysis =
            parse_analysis(r#"{"intervention_needed": false, "feedback_for_action": "x"}"#);
        assert!(feedback_text(&analysis).is_none());
        analysis.intervention_needed = true;
        analysis.feedback_for_action = "  ".into();
        assert!(feedback_text(&analysis).is_none());
        analysis.feedback_for_action = "x".into();
        assert!(feedback_text(&analysis)
            .unwrap()
            .contains("【Topic层策略建议】"));
    }

    #[test]
    fn trends_show_the_last_three_values() {
        let history: Vec<Map<String, Value>> = ["低", "中", "中", "高"]
            .iter()
            .map(|v| {
                json!({ "user_engagement": v })
                    .as_object()
                    .cloned()
                    .unwrap()
            })
            .collect();
        assert_eq!(trend(&history, "user_engagement"), "中 → 中 → 高");
        assert_eq!(trend(&history, "missing"), "暂无数据");
    }
}
