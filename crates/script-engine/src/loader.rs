//! YAML → typed [`heartrule_domain::ScriptDocument`], in two modes.
//!
//! - [`LoadMode::Strict`] (editors): the closed schema made of exactly the
//!   fields of the typed model; deprecated and runtime-only fields are
//!   `STRUCTURE_ERROR`s whose suggestion names the replacement.
//! - [`LoadMode::Compatible`]: what the old runtime accepted — deprecated
//!   spellings, camelCase, envelope-level action keys, `target_variable`,
//!   `output_variables` — normalised into the same typed config, each
//!   reported as a [`heartrule_domain::LoadWarning`].
//!
//! Validation collects every issue, each located by a path such as
//! `session.phases[0].topics[1].actions[0].config.content`.
//! Defaults the runtime applies (tones, round counts) are not filled in here.

mod actions;
mod diagnostics;
mod flow_depth;
mod object;
mod structure;
mod yaml;

use diagnostics::{Diagnostics, Field, Issue};
use heartrule_domain::{
    LoadMode, ParsedScript, ScriptDocument, ScriptLoadError, ValidationErrorType,
};
use serde_yaml::Value;

/// Parses and validates a script.
///
/// # Errors
/// - [`ScriptLoadError::Syntax`] for YAML that does not parse (1-based
///   line and column), including documents that expand beyond a size budget
///   through aliases;
/// - [`ScriptLoadError::UnsupportedLegacyFormat`] for the old `sessions:` list;
/// - [`ScriptLoadError::Invalid`] with every validation issue found.
pub fn load(yaml: &str, mode: LoadMode) -> Result<ParsedScript, ScriptLoadError> {
    let root = yaml::parse_document(yaml)?;
    let mut diag = Diagnostics::new(mode);
    let document = match &root {
        Value::Mapping(mapping) if structure::has_root_key(mapping, "session") => {
            let field = root_field(&root, "session");
            field
                .and_then(|field| structure::session(&mut diag, &field))
                .map(ScriptDocument::Session)
        }
        Value::Mapping(mapping) if structure::has_root_key(mapping, "topic") => {
            structure::technique(&mut diag, mapping).map(ScriptDocument::Technique)
        }
        Value::Mapping(mapping) if structure::has_root_key(mapping, "sessions") => {
            return Err(ScriptLoadError::UnsupportedLegacyFormat {
                path: "sessions".to_owned(),
            });
        }
        other => {
            diag.report(
                Issue::new(
                    "root",
                    ValidationErrorType::StructureError,
                    "a script needs a `session` root (session script) or a `topic` root (technique script)",
                )
                .expected("a mapping with a `session` or `topic` key")
                .actual(diagnostics::describe(other))
                .suggestion("start the script with `session:`"),
            );
            None
        }
    };
    let (issues, warnings) = diag.into_parts();
    if !issues.is_empty() {
        return Err(ScriptLoadError::Invalid { issues });
    }
    // Readers record an issue whenever they return nothing; this guards that
    // invariant instead of ever returning a partial document.
    document
        .map(|document| ParsedScript { document, warnings })
        .ok_or_else(|| ScriptLoadError::Invalid {
            issues: vec![internal_issue()],
        })
}

fn root_field<'v>(root: &'v Value, key: &str) -> Option<Field<'v>> {
    root.get(key).map(|value| Field {
        key: key.to_owned(),
        value,
        path: key.to_owned(),
    })
}

fn internal_issue() -> heartrule_domain::ValidationIssue {
    heartrule_domain::ValidationIssue {
        path: "root".to_owned(),
        error_type: ValidationErrorType::StructureError,
        message: "the script could not be read".to_owned(),
        expected: None,
        actual: None,
        suggestion: None,
        line: None,
        column: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartrule_domain::{ActionKind, ValidationIssue};

    const MINIMAL: &str = "session:\n  session_id: s1\n  phases:\n    - phase_id: p\n      topics:\n        - topic_id: t\n          actions:\n            - action_id: a\n              action_type: ai_say\n              config: {content: hi}\n";

    fn issues(yaml: &str, mode: LoadMode) -> Vec<ValidationIssue> {
        match load(yaml, mode) {
            Err(ScriptLoadError::Invalid { issues }) => issues,
            other => panic!("expected validation issues, got {other:?}"),
        }
    }

    fn summary(issues: &[ValidationIssue]) -> Vec<(&str, ValidationErrorType)> {
        issues
            .iter()
            .map(|i| (i.path.as_str(), i.error_type))
            .collect()
    }

    #[test]
    fn minimal_session_loads_in_both_modes() {
        for mode in [LoadMode::Strict, LoadMode::Compatible] {
            let parsed = load(MINIMAL, mode).unwrap();
            assert!(parsed.warnings.is_empty());
            let ScriptDocument::Session(session) = parsed.document else {
                panic!("not a session")
            };
            assert_eq!(session.session_id, "s1");
            let action = &session.phases[0].topics[0].actions[0];
            assert!(matches!(&action.kind, ActionKind::Say(say) if say.content == "hi"));
        }
    }

    #[test]
    fn root_without_session_or_topic_is_one_structure_error() {
        for yaml in ["metadata: {name: x}\n", "- a\n- b\n", "", "42\n"] {
            let found = issues(yaml, LoadMode::Compatible);
            assert_eq!(
                summary(&found),
                vec![("root", ValidationErrorType::StructureError)],
                "{yaml:?}"
            );
        }
    }

    #[test]
    fn legacy_sessions_list_is_unsupported() {
        let error = load("sessions:\n  - session: x\n", LoadMode::Compatible).unwrap_err();
        assert_eq!(
            error,
            ScriptLoadError::UnsupportedLegacyFormat {
                path: "sessions".into()
            }
        );
    }

    #[test]
    fn metadata_beside_session_is_ignored() {
        let yaml = format!("metadata: {{name: x, whatever: [1]}}\n{MINIMAL}");
        assert!(load(&yaml, LoadMode::Strict).unwrap().warnings.is_empty());
    }

    #[test]
    fn session_must_be_a_mapping() {
        let found = issues("session: [1]\n", LoadMode::Strict);
        assert_eq!(
            summary(&found),
            vec![("session", ValidationErrorType::TypeError)]
        );
    }

    #[test]
    fn session_field_constraints() {
        let yaml = format!(
            "session:\n  session_id: 'bad id!'\n  session_name: {}\n  description: {}\n  version: {}\n  template_scheme: '../etc'\n  phases: []\n",
            "n".repeat(201),
            "d".repeat(1001),
            "v".repeat(51),
        );
        let found = issues(&yaml, LoadMode::Compatible);
        assert_eq!(
            summary(&found),
            vec![
                (
                    "session.session_id",
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    "session.session_name",
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    "session.description",
                    ValidationErrorType::ConstraintViolation
                ),
                ("session.version", ValidationErrorType::ConstraintViolation),
                (
                    "session.template_scheme",
                    ValidationErrorType::ConstraintViolation
                ),
                ("session.phases", ValidationErrorType::ConstraintViolation),
            ]
        );
        assert_eq!(
            found[0].expected.as_deref(),
            Some("a string matching ^[a-zA-Z0-9_]+$")
        );
    }

    #[test]
    fn missing_required_fields_name_the_property() {
        let found = issues(
            "session:\n  phases:\n    - topics:\n        - actions:\n            - config: {}\n",
            LoadMode::Strict,
        );
        assert_eq!(
            summary(&found),
            vec![
                (
                    "session.session_id",
                    ValidationErrorType::RequiredFieldMissing
                ),
                (
                    "session.phases[0].phase_id",
                    ValidationErrorType::RequiredFieldMissing
                ),
                (
                    "session.phases[0].topics[0].topic_id",
                    ValidationErrorType::RequiredFieldMissing
                ),
                (
                    "session.phases[0].topics[0].actions[0].action_id",
                    ValidationErrorType::RequiredFieldMissing
                ),
                (
                    "session.phases[0].topics[0].actions[0].action_type",
                    ValidationErrorType::RequiredFieldMissing
                ),
            ]
        );
    }

    #[test]
    fn phase_and_topic_lengths_and_min_items() {
        let yaml = format!(
            "session:\n  session_id: s\n  phases:\n    - phase_id: p\n      phase_goal: {}\n      entry_condition: 5\n      topics:\n        - topic_id: t\n          strategy: {}\n          actions: []\n    - phase_id: q\n      topics: []\n",
            "g".repeat(501),
            "s".repeat(2001),
        );
        let found = issues(&yaml, LoadMode::Strict);
        assert_eq!(
            summary(&found),
            vec![
                (
                    "session.phases[0].phase_goal",
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    "session.phases[0].entry_condition",
                    ValidationErrorType::TypeError
                ),
                (
                    "session.phases[0].topics[0].strategy",
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    "session.phases[0].topics[0].actions",
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    "session.phases[1].topics",
                    ValidationErrorType::ConstraintViolation
                ),
            ]
        );
    }

    #[test]
    fn entry_condition_is_accepted_and_dropped() {
        let yaml = MINIMAL.replace(
            "    - phase_id: p\n",
            "    - phase_id: p\n      entry_condition: {when: always}\n",
        );
        for mode in [LoadMode::Strict, LoadMode::Compatible] {
            let parsed = load(&yaml, mode).unwrap();
            assert_eq!(parsed.warnings.len(), 1);
            assert_eq!(parsed.warnings[0].path, "session.phases[0].entry_condition");
        }
    }

    #[test]
    fn unknown_keys_fail_strict_and_warn_compatible() {
        let yaml = MINIMAL.replace("  session_id: s1\n", "  session_id: s1\n  colour: blue\n");
        let found = issues(&yaml, LoadMode::Strict);
        assert_eq!(
            summary(&found),
            vec![("session.colour", ValidationErrorType::StructureError)]
        );
        let parsed = load(&yaml, LoadMode::Compatible).unwrap();
        assert_eq!(parsed.warnings[0].path, "session.colour");
    }

    #[test]
    fn technique_root_loads() {
        let yaml = "technique_id: reframe\nname: Reframe\nversion: '2'\ninput_parameters:\n  - {name: belief, description: the belief, required: true}\n  - {name: context}\noutput_variables: [new_belief]\ntopic:\n  topic_id: reframe_topic\n  actions:\n    - {action_id: a, action_type: ai_say, config: {content: '${belief}'}}\n";
        for mode in [LoadMode::Strict, LoadMode::Compatible] {
            let parsed = load(yaml, mode).unwrap();
            let ScriptDocument::Technique(technique) = parsed.document else {
                panic!("not a technique")
            };
            assert_eq!(technique.technique_id, "reframe");
            assert_eq!(technique.name.as_deref(), Some("Reframe"));
            assert!(technique.input_parameters[0].required);
            assert!(!technique.input_parameters[1].required);
            assert_eq!(technique.output_variables, vec!["new_belief".to_owned()]);
            assert_eq!(technique.topic.topic_id, "reframe_topic");
        }
    }

    #[test]
    fn technique_id_is_derived_only_in_compatible_mode() {
        let yaml = "topic:\n  topic_id: derived_id\n  actions:\n    - {action_id: a, action_type: ai_say, config: {content: x}}\n";
        let found = issues(yaml, LoadMode::Strict);
        assert_eq!(
            summary(&found),
            vec![("technique_id", ValidationErrorType::RequiredFieldMissing)]
        );
        let parsed = load(yaml, LoadMode::Compatible).unwrap();
        let ScriptDocument::Technique(technique) = parsed.document else {
            panic!("not a technique")
        };
        assert_eq!(technique.technique_id, "derived_id");
        assert_eq!(parsed.warnings[0].path, "technique_id");
    }

    #[test]
    fn technique_paths_start_at_topic_and_parameters_are_unique() {
        let yaml = "technique_id: t\ninput_parameters: [{name: a}, {name: a, kind: x}]\ntopic:\n  topic_id: x\n  actions:\n    - {action_id: a, action_type: ai_ask, config: {}}\n";
        let found = issues(yaml, LoadMode::Strict);
        assert_eq!(
            summary(&found),
            vec![
                (
                    "input_parameters[1].name",
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    "input_parameters[1].kind",
                    ValidationErrorType::StructureError
                ),
                (
                    "topic.actions[0].config.content",
                    ValidationErrorType::RequiredFieldMissing
                ),
            ]
        );
    }

    #[test]
    fn duplicate_ids_are_reported_within_their_parent_only() {
        let yaml = "session:\n  session_id: s\n  phases:\n    - phase_id: p\n      topics:\n        - topic_id: t\n          actions:\n            - {action_id: a, action_type: ai_say, config: {content: x}}\n            - {action_id: a, action_type: ai_say, config: {content: x}}\n        - topic_id: t\n          actions:\n            - {action_id: a, action_type: ai_say, config: {content: x}}\n    - phase_id: p\n      topics:\n        - topic_id: t\n          actions:\n            - {action_id: a, action_type: ai_say, config: {content: x}}\n";
        let found = issues(yaml, LoadMode::Compatible);
        assert_eq!(
            summary(&found),
            vec![
                (
                    "session.phases[0].topics[0].actions[1].action_id",
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    "session.phases[0].topics[1].topic_id",
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    "session.phases[1].phase_id",
                    ValidationErrorType::ConstraintViolation
                ),
            ]
        );
    }

    #[test]
    fn all_issues_are_collected() {
        let yaml = "session:\n  session_id: s\n  phases:\n    - phase_id: p\n      topics:\n        - topic_id: t\n          actions:\n            - {action_id: a, action_type: ai_say, config: {content_template: x}}\n            - {action_id: b, action_type: ai_ask, config: {content: q, max_rounds: 11}}\n            - {action_id: c, action_type: nope, config: {}}\n";
        let found = issues(yaml, LoadMode::Strict);
        let base = "session.phases[0].topics[0].actions";
        let expected_paths = [
            format!("{base}[0].config.content"),
            format!("{base}[0].config.content_template"),
            format!("{base}[1].config.max_rounds"),
            format!("{base}[2].action_type"),
        ];
        let paths: Vec<_> = found.iter().map(|i| i.path.clone()).collect();
        assert_eq!(paths, expected_paths);
        assert_eq!(
            found[1].suggestion.as_deref(),
            Some("`content_template` is deprecated: use `content` instead")
        );
    }
}
