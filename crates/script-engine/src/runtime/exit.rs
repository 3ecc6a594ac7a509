//! The exit decision of multi-round actions.

use super::llm_json::flag;
use super::placeholders::value_to_text;
use heartrule_domain::ExitCriteria;
use serde_json::{json, Map, Value};

/// Where an exit decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitSource {
    /// `round >= max_rounds`.
    MaxRounds,
    /// The reply's `EXIT` flag (multi-round ai_ask only).
    ExitFlag,
    /// The action's `exit_criteria` (template ai_say only).
    ExitCriteria,
    /// The reply's `should_exit` suggestion.
    LlmSuggestion,
    /// A template ai_say resumed after its last round: no LLM call.
    ExceededMaxRounds,
}

impl ExitSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::MaxRounds => "max_rounds",
            Self::ExitFlag => "exit_flag",
            Self::ExitCriteria => "exit_criteria",
            Self::LlmSuggestion => "llm_suggestion",
            Self::ExceededMaxRounds => "exceeded_max_rounds",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExitDecision {
    pub should_exit: bool,
    pub reason: String,
    pub source: ExitSource,
}

impl ExitDecision {
    fn exit(reason: impl Into<String>, source: ExitSource) -> Self {
        Self {
            should_exit: true,
            reason: reason.into(),
            source,
        }
    }

    fn stay(reason: impl Into<String>, source: ExitSource) -> Self {
        Self {
            should_exit: false,
            reason: reason.into(),
            source,
        }
    }

    /// The decision forced by running out of rounds.
    pub(crate) fn max_rounds(max_rounds: u32, source: ExitSource) -> Self {
        Self::exit(format!("达到最大轮次限制 ({max_rounds})"), source)
    }

    /// The JSON form kept in message metadata and `exitDecisions`.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "should_exit": self.should_exit,
            "reason": self.reason,
            "decision_source": self.source.as_str(),
        })
    }
}

/// Everything the decision looks at.
pub(crate) struct ExitInput<'a> {
    pub supports_exit: bool,
    /// The enabled sources, checked in a fixed order: max rounds, EXIT flag,
    /// exit criteria, LLM suggestion.
    pub sources: &'a [ExitSource],
    /// Questions asked = answers received (ai_ask) or messages sent (ai_say).
    pub round: u32,
    pub max_rounds: u32,
    /// The parsed reply (or the action's fallback object).
    pub reply: &'a Map<String, Value>,
    pub criteria: Option<&'a ExitCriteria>,
    /// Scoped variable lookup for custom conditions.
    pub lookup: &'a dyn Fn(&str) -> Option<Value>,
}

/// Decides whether a multi-round action ends now.
pub(crate) fn evaluate(input: &ExitInput<'_>) -> ExitDecision {
    if !input.supports_exit {
        return ExitDecision::stay("该动作不支持退出判断", ExitSource::LlmSuggestion);
    }
    let enabled = |source: ExitSource| input.sources.contains(&source);

    if enabled(ExitSource::MaxRounds) && input.round >= input.max_rounds {
        return ExitDecision::max_rounds(input.max_rounds, ExitSource::MaxRounds);
    }
    if enabled(ExitSource::ExitFlag) && flag(input.reply, &["EXIT", "exit"]) == Some(true) {
        let reason = text_field(input.reply, &["exit_reason", "BRIEF"])
            .unwrap_or_else(|| "满足退出标志".to_owned());
        return ExitDecision::exit(reason, ExitSource::ExitFlag);
    }
    if enabled(ExitSource::ExitCriteria) {
        if let Some(criteria) = input.criteria {
            match check_criteria(criteria, input) {
                CriteriaOutcome::Blocked(reason) => {
                    return ExitDecision::stay(reason, ExitSource::ExitCriteria)
                }
                CriteriaOutcome::Met(conditions) => {
                    return ExitDecision::exit(
                        format!("满足退出条件: {}", conditions.join(", ")),
                        ExitSource::ExitCriteria,
                    )
                }
                // "退出条件不完整": nothing configured that could decide.
                CriteriaOutcome::Undecided => {}
            }
        }
    }
    if enabled(ExitSource::LlmSuggestion)
        && flag(input.reply, &["should_exit", "shouldExit"]) == Some(true)
    {
        let reason = text_field(input.reply, &["exit_reason", "exitReason"])
            .unwrap_or_else(|| "LLM 建议退出".to_owned());
        return ExitDecision::exit(reason, ExitSource::LlmSuggestion);
    }
    ExitDecision::stay("未满足退出条件，继续执行", ExitSource::LlmSuggestion)
}

enum CriteriaOutcome {
    /// A condition forbids the exit.
    Blocked(String),
    /// Every configured condition holds.
    Met(Vec<String>),
    Undecided,
}

fn check_criteria(criteria: &ExitCriteria, input: &ExitInput<'_>) -> CriteriaOutcome {
    let mut met = Vec::new();
    if let Some(min) = criteria.min_rounds {
        if input.round < min {
            return CriteriaOutcome::Blocked(format!("未达到最小轮次要求 ({}/{min})", input.round));
        }
    }
    let assessment = assessment(input.reply);
    if let Some(threshold) = criteria.understanding_threshold {
        let level = assessment
            .and_then(|a| a.get("understanding_level"))
            .and_then(number)
            .unwrap_or(0.0);
        let level_text = format_number(level);
        if level >= f64::from(threshold) {
            met.push(format!("理解度达标 ({level_text}>={threshold})"));
        } else {
            return CriteriaOutcome::Blocked(format!("理解度未达标 ({level_text}<{threshold})"));
        }
    }
    if let Some(allowed) = criteria.has_questions {
        let has_questions = assessment
            .map(|a| flag(a, &["has_questions"]) == Some(true))
            .unwrap_or(false);
        if !allowed && has_questions {
            return CriteriaOutcome::Blocked("用户仍有疑问，不允许退出".to_owned());
        }
        if !has_questions {
            met.push("无疑问".to_owned());
        }
    }
    for condition in &criteria.custom_conditions {
        let actual = (input.lookup)(&condition.variable);
        let expected = value_to_text(&condition.value);
        let description = format!("{} {} {expected}", condition.variable, condition.operator);
        if compare(actual.as_ref(), &condition.operator, &condition.value) {
            met.push(description);
        } else {
            let actual_text = actual
                .as_ref()
                .map_or_else(|| "未定义".to_owned(), value_to_text);
            return CriteriaOutcome::Blocked(format!(
                "自定义条件不满足: {actual_text} {} {expected}",
                condition.operator
            ));
        }
    }
    if met.is_empty() {
        CriteriaOutcome::Undecided
    } else {
        CriteriaOutcome::Met(met)
    }
}

/// `metadata.assessment`, else the legacy top-level `assessment`.
fn assessment(reply: &Map<String, Value>) -> Option<&Map<String, Value>> {
    reply
        .get("metadata")
        .and_then(|m| m.get("assessment"))
        .and_then(Value::as_object)
        .or_else(|| reply.get("assessment").and_then(Value::as_object))
}

/// Numbers and numeric strings.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        value.to_string()
    }
}

/// The first non-empty string (or scalar) of `keys`.
fn text_field(reply: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| reply.get(*k))
        .filter(|v| !v.is_null())
        .map(value_to_text)
        .find(|t| !t.trim().is_empty())
}

/// `==`/`!=` compare loosely (numbers numerically, everything else as text),
/// the ordering operators numerically, `contains` as substring or array
/// membership; unknown operators never hold.
fn compare(actual: Option<&Value>, operator: &str, expected: &Value) -> bool {
    let Some(actual) = actual else {
        return operator == "!=";
    };
    let loose_eq = |a: &Value, b: &Value| match (number(a), number(b)) {
        (Some(x), Some(y)) => (x - y).abs() < f64::EPSILON,
        _ => value_to_text(a) == value_to_text(b),
    };
    let numeric = |cmp: fn(f64, f64) -> bool| match (number(actual), number(expected)) {
        (Some(x), Some(y)) => cmp(x, y),
        _ => false,
    };
    match operator {
        "==" => loose_eq(actual, expected),
        "!=" => !loose_eq(actual, expected),
        ">" => numeric(|x, y| x > y),
        "<" => numeric(|x, y| x < y),
        ">=" => numeric(|x, y| x >= y),
        "<=" => numeric(|x, y| x <= y),
        "contains" => match actual {
            Value::Array(items) => items.iter().any(|item| loose_eq(item, expected)),
            other => value_to_text(other).contains(&value_to_text(expected)),
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartrule_domain::CustomCondition;

    const ALL: [ExitSource; 4] = [
        ExitSource::MaxRounds,
        ExitSource::ExitFlag,
        ExitSource::ExitCriteria,
        ExitSource::LlmSuggestion,
    ];

    fn reply(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn decide(
        round: u32,
        max_rounds: u32,
        reply: &Map<String, Value>,
        criteria: Option<&ExitCriteria>,
        lookup: &dyn Fn(&str) -> Option<Value>,
    ) -> ExitDecision {
        evaluate(&ExitInput {
            supports_exit: true,
            sources: &ALL,
            round,
            max_rounds,
            reply,
            criteria,
            lookup,
        })
    }

    fn nothing(_: &str) -> Option<Value> {
        None
    }

    // The last round exits even without an EXIT flag.
    #[test]
    fn last_round_exits_on_max_rounds() {
        let d = decide(3, 3, &reply(json!({})), None, &nothing);
        assert!(d.should_exit);
        assert_eq!(d.source, ExitSource::MaxRounds);
        assert_eq!(d.reason, "达到最大轮次限制 (3)");
    }

    #[test]
    fn exit_flag_wins_over_unmet_understanding() {
        let criteria = ExitCriteria {
            understanding_threshold: Some(90),
            ..ExitCriteria::default()
        };
        let r = reply(json!({"EXIT": "true", "exit_reason": "R",
            "metadata": {"assessment": {"understanding_level": 50}}}));
        let d = decide(1, 5, &r, Some(&criteria), &nothing);
        assert!(d.should_exit);
        assert_eq!(d.source, ExitSource::ExitFlag);
        assert_eq!(d.reason, "R");
    }

    #[test]
    fn exit_flag_reason_falls_back_to_brief_then_default() {
        let d = decide(
            1,
            5,
            &reply(json!({"EXIT": true, "BRIEF": "够了"})),
            None,
            &nothing,
        );
        assert_eq!(d.reason, "够了");
        let d = decide(1, 5, &reply(json!({"exit": "TRUE"})), None, &nothing);
        assert_eq!(d.reason, "满足退出标志");
    }

    #[test]
    fn should_exit_is_an_llm_suggestion() {
        let d = decide(1, 5, &reply(json!({"should_exit": true})), None, &nothing);
        assert!(d.should_exit);
        assert_eq!(d.source, ExitSource::LlmSuggestion);
        assert_eq!(d.reason, "LLM 建议退出");
    }

    #[test]
    fn min_rounds_blocks_an_early_exit() {
        let criteria = ExitCriteria {
            min_rounds: Some(3),
            understanding_threshold: Some(10),
            ..ExitCriteria::default()
        };
        let r = reply(json!({"should_exit": true,
            "metadata": {"assessment": {"understanding_level": 99}}}));
        let d = decide(1, 5, &r, Some(&criteria), &nothing);
        assert!(!d.should_exit);
        assert_eq!(d.reason, "未达到最小轮次要求 (1/3)");
    }

    #[test]
    fn custom_condition_uses_scoped_variables() {
        let criteria = ExitCriteria {
            custom_conditions: vec![CustomCondition {
                variable: "用户情绪".into(),
                operator: "==".into(),
                value: json!("平和"),
            }],
            ..ExitCriteria::default()
        };
        let calm = |name: &str| (name == "用户情绪").then(|| json!("平和"));
        let d = decide(1, 5, &reply(json!({})), Some(&criteria), &calm);
        assert!(d.should_exit);
        assert_eq!(d.source, ExitSource::ExitCriteria);
        assert!(d.reason.contains("用户情绪 == 平和"), "{}", d.reason);

        let d = decide(1, 5, &reply(json!({})), Some(&criteria), &nothing);
        assert!(!d.should_exit);
        assert!(d.reason.starts_with("自定义条件不满足"), "{}", d.reason);
    }

    #[test]
    fn unsupported_actions_never_exit() {
        let d = evaluate(&ExitInput {
            supports_exit: false,
            sources: &ALL,
            round: 9,
            max_rounds: 1,
            reply: &reply(json!({"EXIT": true})),
            criteria: None,
            lookup: &nothing,
        });
        assert!(!d.should_exit);
    }

    #[test]
    fn disabled_sources_are_ignored() {
        let d = evaluate(&ExitInput {
            supports_exit: true,
            sources: &[
                ExitSource::MaxRounds,
                ExitSource::ExitCriteria,
                ExitSource::LlmSuggestion,
            ],
            round: 1,
            max_rounds: 3,
            reply: &reply(json!({"EXIT": "true"})),
            criteria: None,
            lookup: &nothing,
        });
        assert!(!d.should_exit);
        assert_eq!(d.reason, "未满足退出条件，继续执行");
    }

    #[test]
    fn understanding_and_questions() {
        let criteria = ExitCriteria {
            understanding_threshold: Some(80),
            has_questions: Some(false),
            ..ExitCriteria::default()
        };
        let ok = reply(
            json!({"metadata": {"assessment": {"understanding_level": "85", "has_questions": false}}}),
        );
        let d = decide(1, 5, &ok, Some(&criteria), &nothing);
        assert!(d.should_exit);
        assert!(d.reason.contains("理解度达标 (85>=80)"), "{}", d.reason);
        assert!(d.reason.contains("无疑问"));

        let questions =
            reply(json!({"assessment": {"understanding_level": 85, "has_questions": true}}));
        let d = decide(1, 5, &questions, Some(&criteria), &nothing);
        assert!(!d.should_exit);
        assert_eq!(d.reason, "用户仍有疑问，不允许退出");

        let low = reply(json!({"metadata": {"assessment": {"understanding_level": 40}}}));
        let d = decide(1, 5, &low, Some(&criteria), &nothing);
        assert_eq!(d.reason, "理解度未达标 (40<80)");
    }

    #[test]
    fn empty_criteria_fall_through_to_the_suggestion() {
        let criteria = ExitCriteria::default();
        let d = decide(
            1,
            5,
            &reply(json!({"should_exit": true})),
            Some(&criteria),
            &nothing,
        );
        assert_eq!(d.source, ExitSource::LlmSuggestion);
        assert!(d.should_exit);
    }

    #[test]
    fn operators() {
        assert!(compare(Some(&json!(5)), ">", &json!("3")));
        assert!(compare(Some(&json!("5")), "==", &json!(5)));
        assert!(compare(Some(&json!("5.0")), "<=", &json!(5)));
        assert!(!compare(Some(&json!("abc")), ">", &json!(1)));
        assert!(compare(Some(&json!(["a", "b"])), "contains", &json!("b")));
        assert!(compare(
            Some(&json!("焦虑和失眠")),
            "contains",
            &json!("失眠")
        ));
        assert!(compare(None, "!=", &json!("x")));
        assert!(!compare(Some(&json!(1)), "~", &json!(1)));
    }
}
