//! The text report of `heartrule replay`.

use heartrule_domain::{Divergence, ReplayReport};
use std::fmt::Write;

fn version(number: Option<u32>) -> String {
    number.map_or_else(|| "unversioned".to_owned(), |n| format!("version {n}"))
}

fn or_none(text: Option<&str>) -> &str {
    text.unwrap_or("(none)")
}

/// The report as a few lines of text: the verdict, the LLM calls reused
/// and made, and the first divergence when there is one.
#[must_use]
pub fn render_replay(report: &ReplayReport) -> String {
    let mut out = String::new();
    let verdict = if report.diverged {
        "diverged"
    } else {
        "no divergence"
    };
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "session {} ({}) replayed on {}: {verdict} ({} of {} turns replayed)",
        report.session_id,
        version(report.stored_version),
        version(report.target_version),
        report.turns_replayed,
        report.turns_stored,
    );
    let _ = writeln!(
        out,
        "LLM calls: {} reused from {} recorded, {} made",
        report.llm_calls_reused, report.recorded_exchanges, report.llm_calls_made
    );
    if let Some(note) = &report.note {
        let _ = writeln!(out, "note: {note}");
    }
    if let Some(d) = &report.first_divergence {
        render_divergence(&mut out, d);
    }
    out
}

fn render_divergence(out: &mut String, d: &Divergence) {
    let aspects: Vec<String> = d
        .aspects
        .iter()
        .map(|a| {
            serde_json::to_value(a)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    let _ = writeln!(
        out,
        "first divergence at turn {}: {}",
        d.turn,
        aspects.join(", ")
    );
    if let Some(user) = &d.user_message {
        let _ = writeln!(out, "  user:     {user}");
    }
    let _ = writeln!(
        out,
        "  action:   stored {} / replayed {}",
        or_none(d.stored_action_id.as_deref()),
        or_none(d.replayed_action_id.as_deref())
    );
    let _ = writeln!(
        out,
        "  path:     stored {} / replayed {}",
        or_none(d.stored_topic_path.as_deref()),
        or_none(d.replayed_topic_path.as_deref())
    );
    for v in &d.variables {
        let show = |value: Option<&serde_json::Value>| {
            value.map_or_else(|| "(unset)".to_owned(), ToString::to_string)
        };
        let _ = writeln!(
            out,
            "  variable: {} stored {} / replayed {}",
            v.name,
            show(v.stored.as_ref()),
            show(v.replayed.as_ref())
        );
    }
    let _ = writeln!(out, "  stored:   {}", or_none(d.stored_ai_text.as_deref()));
    let _ = writeln!(
        out,
        "  replayed: {}",
        or_none(d.replayed_ai_text.as_deref())
    );
    if let Some(error) = &d.error {
        let _ = writeln!(out, "  error:    {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartrule_domain::{
        DivergenceAspect, ScriptId, SessionId, VariableDifference, VariableScope,
    };
    use serde_json::json;

    fn report() -> ReplayReport {
        ReplayReport {
            session_id: SessionId::new_random(),
            script_id: ScriptId::new_random(),
            stored_version: Some(1),
            target_version: Some(2),
            target_hash: "h".into(),
            turns_stored: 3,
            turns_replayed: 2,
            diverged: true,
            first_divergence: Some(Divergence {
                turn: 2,
                user_message: Some("小明".into()),
                aspects: vec![DivergenceAspect::Messages, DivergenceAspect::Variables],
                stored_action_id: Some("ask_mood".into()),
                replayed_action_id: Some("ask_sleep".into()),
                stored_topic_path: Some("p/t/ask_mood".into()),
                replayed_topic_path: Some("p/t/ask_sleep".into()),
                variables: vec![VariableDifference {
                    name: "mood".into(),
                    scope: VariableScope::Session,
                    scope_key: None,
                    stored: Some(json!("ok")),
                    replayed: None,
                }],
                stored_ai_text: Some("How are you?".into()),
                replayed_ai_text: Some("How do you sleep?".into()),
                error: None,
            }),
            llm_calls_reused: 2,
            llm_calls_made: 1,
            recorded_exchanges: 3,
            note: None,
        }
    }

    #[test]
    fn the_text_names_the_verdict_the_calls_and_the_divergence() {
        let text = render_replay(&report());
        assert!(
            text.contains("replayed on version 2: diverged (2 of 3 turns replayed)"),
            "{text}"
        );
        assert!(
            text.contains("LLM calls: 2 reused from 3 recorded, 1 made"),
            "{text}"
        );
        assert!(
            text.contains("first divergence at turn 2: messages, variables"),
            "{text}"
        );
        assert!(
            text.contains("action:   stored ask_mood / replayed ask_sleep"),
            "{text}"
        );
        assert!(
            text.contains("path:     stored p/t/ask_mood / replayed p/t/ask_sleep"),
            "{text}"
        );
        assert!(
            text.contains("variable: mood stored \"ok\" / replayed (unset)"),
            "{text}"
        );

        let mut same = report();
        same.diverged = false;
        same.first_divergence = None;
        same.note = Some("no recording".into());
        let text = render_replay(&same);
        assert!(text.contains(": no divergence ("), "{text}");
        assert!(text.contains("note: no recording"), "{text}");
        assert!(!text.contains("first divergence"), "{text}");
    }
}
