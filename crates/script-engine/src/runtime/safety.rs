//! The safety scan of AI replies. Its findings are recorded in the message
//! metadata (`safety_check`); the output guard ([`super::guard`]) withdraws
//! replies with findings in the [`GUARDED_CATEGORIES`].

use serde_json::{json, Value};

struct Rule {
    category: &'static str,
    severity: &'static str,
    patterns: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        category: "diagnosis",
        severity: "high",
        patterns: &[
            "你患有",
            "你得了",
            "诊断为",
            "确诊为",
            "你有抑郁症",
            "你有焦虑症",
            "你是抑郁症",
        ],
    },
    Rule {
        category: "prescription",
        severity: "high",
        patterns: &[
            "建议服用",
            "服用药物",
            "开处方",
            "用药剂量",
            "每天吃药",
            "可以停药",
        ],
    },
    Rule {
        category: "guarantee",
        severity: "medium",
        patterns: &[
            "保证治好",
            "一定会好",
            "肯定能治愈",
            "百分之百",
            "包治",
            "保证你会",
        ],
    },
    Rule {
        category: "crisis",
        severity: "critical",
        patterns: &["自杀", "自残", "轻生", "不想活", "结束生命", "割腕"],
    },
];

/// The categories the output guard blocks. Crisis words are only recorded:
/// a counselor may name them, giving hotline information for one.
pub(crate) const GUARDED_CATEGORIES: &[&str] = &["diagnosis", "prescription", "guarantee"];

/// `{passed, violations[{category, matched_pattern, severity}]}`.
pub(crate) fn scan(text: &str) -> Value {
    let violations = violations(text);
    json!({ "passed": violations.is_empty(), "violations": violations })
}

/// The findings of the guarded categories, as [`scan`] reports them.
pub(crate) fn guarded_violations(text: &str) -> Vec<Value> {
    violations(text)
        .into_iter()
        .filter(|v| {
            v["category"]
                .as_str()
                .is_some_and(|c| GUARDED_CATEGORIES.contains(&c))
        })
        .collect()
}

fn violations(text: &str) -> Vec<Value> {
    RULES
        .iter()
        .flat_map(|rule| {
            rule.patterns
                .iter()
                .filter(|pattern| text.contains(**pattern))
                .map(|pattern| {
                    json!({
                        "category": rule.category,
                        "matched_pattern": pattern,
                        "severity": rule.severity,
                    })
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_passes() {
        let result = scan("我们慢慢来，你愿意多说一点吗？");
        assert_eq!(result["passed"], true);
        assert_eq!(result["violations"].as_array().map(Vec::len), Some(0));
    }

    #[test]
    fn each_category_is_reported() {
        let result = scan("你患有抑郁，建议服用这个，一定会好的。有人想自杀吗");
        assert_eq!(result["passed"], false);
        let categories: Vec<&str> = result["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["category"].as_str().unwrap())
            .collect();
        assert_eq!(
            categories,
            ["diagnosis", "prescription", "guarantee", "crisis"]
        );
        assert_eq!(result["violations"][3]["severity"], "critical");
    }

    #[test]
    fn the_guard_blocks_all_but_crisis_words() {
        let found = guarded_violations("你患有抑郁，建议服用这个，一定会好的。有人想自杀吗");
        let categories: Vec<&str> = found
            .iter()
            .map(|v| v["category"].as_str().unwrap())
            .collect();
        assert_eq!(categories, ["diagnosis", "prescription", "guarantee"]);
        assert!(guarded_violations("如果你有自杀的想法，请拨打热线。").is_empty());
    }
}
