#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The loader through its public API: the example scripts in both modes and
//! one case per validation rule.

use heartrule_domain::{
    ActionKind, ActionType, DomainError, ErrorKind, LoadMode, ParsedScript, ScriptDocument,
    ScriptLoadError, SessionScript, TechniqueScript, ValidationErrorType, ValidationIssue,
    VariableScope,
};
use heartrule_script_engine::loader::load;
use serde_yaml::Value;

const HELLO: &str = include_str!("../../../examples/scripts/hello.yaml");
const CBT_INTAKE: &str = include_str!("../../../examples/scripts/cbt_intake.yaml");
const DEPRECATED: &str = include_str!("../../../examples/scripts/deprecated_fields.yaml");
const SOCRATIC: &str =
    include_str!("../../../examples/scripts/techniques/socratic_questioning.yaml");

const BOTH_MODES: [LoadMode; 2] = [LoadMode::Strict, LoadMode::Compatible];

fn session(parsed: &ParsedScript) -> &SessionScript {
    match &parsed.document {
        ScriptDocument::Session(session) => session,
        ScriptDocument::Technique(_) => panic!("expected a session script"),
    }
}

fn technique(parsed: &ParsedScript) -> &TechniqueScript {
    match &parsed.document {
        ScriptDocument::Technique(technique) => technique,
        ScriptDocument::Session(_) => panic!("expected a technique script"),
    }
}

fn issues(yaml: &str, mode: LoadMode) -> Vec<ValidationIssue> {
    match load(yaml, mode) {
        Err(ScriptLoadError::Invalid { issues }) => issues,
        other => panic!("expected validation issues, got {other:?}"),
    }
}

fn actions(session: &SessionScript) -> impl Iterator<Item = &heartrule_domain::Action> {
    session
        .phases
        .iter()
        .flat_map(|phase| phase.topics.iter())
        .flat_map(|topic| topic.actions.iter())
}

// ---------------------------------------------------------------- examples

#[test]
fn hello_loads_cleanly_in_both_modes() {
    for mode in BOTH_MODES {
        let parsed = load(HELLO, mode).unwrap();
        assert!(
            parsed.warnings.is_empty(),
            "{mode:?}: {:?}",
            parsed.warnings
        );
        let session = session(&parsed);
        assert_eq!(session.phases.len(), 1);
        assert_eq!(session.phases[0].topics.len(), 1);
        let types: Vec<_> = actions(session)
            .map(heartrule_domain::Action::action_type)
            .collect();
        assert_eq!(
            types,
            vec![ActionType::AiSay, ActionType::AiAsk, ActionType::AiSay]
        );
        let ActionKind::Ask(ask) = &session.phases[0].topics[0].actions[1].kind else {
            panic!("second action is not an ask")
        };
        assert!(ask.is_multi_round());
        assert_eq!(ask.output[0].get, "visitor_name");
    }
}

#[test]
fn cbt_intake_is_valid_in_both_modes_with_identical_documents() {
    let strict = load(CBT_INTAKE, LoadMode::Strict).unwrap();
    let compatible = load(CBT_INTAKE, LoadMode::Compatible).unwrap();
    assert!(strict.warnings.is_empty(), "{:?}", strict.warnings);
    assert!(compatible.warnings.is_empty(), "{:?}", compatible.warnings);
    assert_eq!(strict.document, compatible.document);
}

#[test]
fn cbt_intake_shows_every_feature_it_promises() {
    let parsed = load(CBT_INTAKE, LoadMode::Strict).unwrap();
    let session = session(&parsed);
    assert!(session.phases.len() >= 3);

    let all: Vec<_> = actions(session).collect();
    let has = |predicate: &dyn Fn(&ActionKind) -> bool| all.iter().any(|a| predicate(&a.kind));
    assert!(
        has(&|k| matches!(k, ActionKind::Say(s) if !s.is_template_mode())),
        "legacy ai_say"
    );
    assert!(
        has(&|k| matches!(k, ActionKind::Say(s) if s.is_template_mode())),
        "template ai_say"
    );
    assert!(
        has(&|k| matches!(k, ActionKind::Ask(a) if !a.is_multi_round())),
        "simple ai_ask"
    );
    assert!(
        has(&|k| matches!(k, ActionKind::Ask(a) if a.is_multi_round() && !a.output.is_empty())),
        "multi-round ai_ask"
    );
    assert!(
        has(&|k| matches!(k, ActionKind::Think(t) if !t.output.is_empty())),
        "ai_think with output"
    );
    assert!(
        has(
            &|k| matches!(k, ActionKind::UseSkill(s) if s.skill == "socratic_questioning" && !s.input.is_empty() && !s.output.is_empty())
        ),
        "use_skill with input and output"
    );
    let topic_scoped = all.iter().any(|a| match &a.kind {
        ActionKind::Ask(ask) => ask
            .output
            .iter()
            .any(|o| o.scope == Some(VariableScope::Topic)),
        ActionKind::Think(think) => think
            .output
            .iter()
            .any(|o| o.scope == Some(VariableScope::Topic)),
        _ => false,
    });
    assert!(topic_scoped, "an output with scope: topic");
    assert_eq!(
        parsed.document.referenced_skills(),
        vec!["socratic_questioning".to_owned()]
    );

    // `user_name` is extracted in one topic and used in later topics.
    let topics: Vec<_> = session
        .phases
        .iter()
        .flat_map(|p| p.topics.iter())
        .collect();
    let extracting = topics
        .iter()
        .position(|topic| {
            topic.actions.iter().any(|a| {
                matches!(&a.kind, ActionKind::Ask(ask) if ask.output.iter().any(|o| o.get == "user_name"))
            })
        })
        .expect("a topic extracts user_name");
    let later_uses = topics[extracting + 1..]
        .iter()
        .filter(|topic| {
            topic.actions.iter().any(|a| match &a.kind {
                ActionKind::Say(say) => say.content.contains("${user_name}"),
                ActionKind::Ask(ask) => ask.content.contains("${user_name}"),
                ActionKind::Think(think) => think.content.contains("${user_name}"),
                ActionKind::UseSkill(_) => false,
            })
        })
        .count();
    assert!(
        later_uses >= 2,
        "user_name used in {later_uses} later topics"
    );
}

#[test]
fn cbt_intake_calls_the_example_technique_with_its_parameters() {
    let session_doc = load(CBT_INTAKE, LoadMode::Strict).unwrap();
    let technique_doc = load(SOCRATIC, LoadMode::Strict).unwrap();
    let technique = technique(&technique_doc);
    let call = actions(session(&session_doc))
        .find_map(|a| match &a.kind {
            ActionKind::UseSkill(skill) => Some(skill.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(call.skill, technique.technique_id);
    for parameter in technique.input_parameters.iter().filter(|p| p.required) {
        assert!(
            call.input.iter().any(|i| i.name == parameter.name),
            "{} not passed",
            parameter.name
        );
    }
    for binding in &call.output {
        assert!(
            technique.output_variables.contains(&binding.from),
            "{} not produced",
            binding.from
        );
    }
}

#[test]
fn socratic_technique_loads_in_both_modes() {
    for mode in BOTH_MODES {
        let parsed = load(SOCRATIC, mode).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let technique = technique(&parsed);
        assert_eq!(technique.technique_id, "socratic_questioning");
        assert!(technique.input_parameters.iter().any(|p| p.required));
        assert!(!technique.output_variables.is_empty());
        assert!(!technique.topic.actions.is_empty());
    }
}

#[test]
fn deprecated_example_normalises_in_compatible_mode() {
    let parsed = load(DEPRECATED, LoadMode::Compatible).unwrap();
    let session = session(&parsed);
    let all: Vec<_> = actions(session).collect();

    let ActionKind::Say(greeting) = &all[0].kind else {
        panic!("say")
    };
    assert!(greeting.content.starts_with("Good to see you"));
    assert!(!greeting.require_acknowledgment);

    let ActionKind::Ask(name) = &all[1].kind else {
        panic!("ask")
    };
    assert_eq!(name.content, "What should I call you?");
    assert_eq!(name.target_variable.as_deref(), Some("client_name"));
    assert!(!name.is_multi_round());

    let ActionKind::Say(explanation) = &all[2].kind else {
        panic!("say")
    };
    assert_eq!(explanation.max_rounds, Some(2));
    assert_eq!(
        explanation
            .exit_criteria
            .as_ref()
            .unwrap()
            .understanding_threshold,
        Some(70)
    );

    let ActionKind::Ask(feeling) = &all[3].kind else {
        panic!("ask")
    };
    assert!(feeling.content.starts_with("Ask how ${client_name}"));
    assert_eq!(feeling.target_variable.as_deref(), Some("current_feeling"));
    assert_eq!(feeling.max_rounds, Some(2));

    let ActionKind::Think(reflection) = &all[4].kind else {
        panic!("think")
    };
    assert!(reflection.content.starts_with("From the feeling"));
    assert_eq!(
        reflection.input_variables,
        vec!["current_feeling".to_owned()]
    );
    assert_eq!(reflection.output.len(), 1);
    assert_eq!(reflection.output[0].get, "main_emotion");

    let base = "session.phases[0].topics[0].actions";
    let warned: Vec<(String, Option<String>)> = parsed
        .warnings
        .iter()
        .map(|w| {
            (
                w.path.trim_start_matches(base).to_owned(),
                w.replacement.clone(),
            )
        })
        .collect();
    let expect = |path: &str, replacement: Option<&str>| {
        assert!(
            warned.contains(&(path.to_owned(), replacement.map(str::to_owned))),
            "missing warning {path} → {replacement:?} in {warned:#?}"
        );
    };
    expect("[0].config.content_template", Some("content"));
    expect("[0].config.say_goal", None);
    expect(
        "[0].config.requireAcknowledgment",
        Some("require_acknowledgment"),
    );
    expect("[1].config.question_template", Some("content"));
    expect("[1].config.target_variable", Some("output"));
    expect("[1].config.extraction_prompt", Some("output[].define"));
    expect("[1].config.required", None);
    expect("[2].max_rounds", Some("config.max_rounds"));
    expect("[2].config.contentTemplate", Some("content"));
    expect("[2].config.exitCriteria", Some("exit_criteria"));
    expect(
        "[2].config.exitCriteria.understandingThreshold",
        Some("understanding_threshold"),
    );
    expect("[3].config.prompt_template", Some("content"));
    expect("[3].config.extractTo", Some("target_variable"));
    expect("[3].config.input_variables", None);
    expect("[3].config.maxRounds", Some("max_rounds"));
    expect("[4].config.think_goal", None);
    expect("[4].config.prompt_template", Some("content"));
    expect("[4].config.inputVariables", Some("input_variables"));
    expect("[4].config.output_variables", Some("output"));
    assert!(parsed.warnings.iter().all(|w| !w.message.is_empty()));
}

#[test]
fn deprecated_example_fails_strict_mode_with_suggestions() {
    let found = issues(DEPRECATED, LoadMode::Strict);
    let base = "session.phases[0].topics[0].actions";
    let find = |path: &str| {
        let full = format!("{base}{path}");
        found
            .iter()
            .find(|issue| issue.path == full)
            .unwrap_or_else(|| panic!("no issue at {full} in {found:#?}"))
    };
    for (path, replacement) in [
        ("[0].config.content_template", "`content`"),
        ("[1].config.question_template", "`content`"),
        ("[1].config.target_variable", "`output`"),
        ("[1].config.extraction_prompt", "`output[].define`"),
        ("[2].config.contentTemplate", "`content`"),
        ("[3].config.prompt_template", "`content`"),
        ("[4].config.prompt_template", "`content`"),
        ("[4].config.output_variables", "`output`"),
        (
            "[0].config.requireAcknowledgment",
            "`require_acknowledgment`",
        ),
        ("[2].config.exitCriteria", "`exit_criteria`"),
        ("[3].config.maxRounds", "`max_rounds`"),
        ("[4].config.inputVariables", "`input_variables`"),
    ] {
        let issue = find(path);
        assert_eq!(
            issue.error_type,
            ValidationErrorType::StructureError,
            "{path}"
        );
        let suggestion = issue.suggestion.as_deref().unwrap();
        assert!(suggestion.contains(replacement), "{path}: {suggestion}");
    }
    for path in [
        "[0].config.say_goal",
        "[1].config.required",
        "[3].config.input_variables",
        "[4].config.think_goal",
    ] {
        let suggestion = find(path).suggestion.as_deref().unwrap();
        assert!(suggestion.starts_with("remove"), "{path}: {suggestion}");
    }
    assert_eq!(
        find("[2].max_rounds").suggestion.as_deref(),
        Some("move `max_rounds` into `config`")
    );
    // The content is still required: it is only spelled the old way.
    for index in 0..5 {
        assert_eq!(
            find(&format!("[{index}].config.content")).error_type,
            ValidationErrorType::RequiredFieldMissing
        );
    }
    assert!(found
        .iter()
        .all(|issue| issue.expected.is_some() && !issue.message.is_empty()));
}

// -------------------------------------------------------- document-level

#[test]
fn legacy_sessions_list_is_unsupported_in_both_modes() {
    let yaml = "sessions:\n  - session: \"ABC model\"\n    phases:\n      - phase: intro\n        steps:\n          - topic: basics\n            actions:\n              - type: ai_say\n                content: hello\n";
    for mode in BOTH_MODES {
        let error = load(yaml, mode).unwrap_err();
        assert_eq!(
            error,
            ScriptLoadError::UnsupportedLegacyFormat {
                path: "sessions".into()
            }
        );
        assert!(error.to_string().contains("unsupported legacy format"));
        let issue = &error.issues()[0];
        assert_eq!(issue.path, "sessions");
        assert_eq!(issue.error_type, ValidationErrorType::StructureError);
    }
}

#[test]
fn yaml_syntax_errors_carry_line_and_column() {
    let yaml = "session:\n  session_id: s\n  phases:\n    - phase_id: p\n   topics: []\n";
    for mode in BOTH_MODES {
        let error = load(yaml, mode).unwrap_err();
        let ScriptLoadError::Syntax {
            line,
            column,
            message,
        } = &error
        else {
            panic!("expected a syntax error, got {error:?}")
        };
        assert_eq!((*line, *column), (5, 4), "{message}");
        let issue = &error.issues()[0];
        assert_eq!(issue.error_type, ValidationErrorType::SyntaxError);
        assert_eq!((issue.line, issue.column), (Some(5), Some(4)));
    }
    let unclosed = "session: {session_id: s\n";
    let ScriptLoadError::Syntax { line, column, .. } =
        load(unclosed, LoadMode::Strict).unwrap_err()
    else {
        panic!("expected a syntax error")
    };
    assert_eq!(line, 2);
    assert!(column >= 1);
}

#[test]
fn load_errors_convert_to_typed_domain_errors() {
    let invalid: DomainError = load("session: {}\n", LoadMode::Strict).unwrap_err().into();
    assert!(matches!(invalid.kind, ErrorKind::ScriptValidation(ref issues) if issues.len() == 2));
    let syntax: DomainError = load("a: [\n", LoadMode::Strict).unwrap_err().into();
    assert!(matches!(
        syntax.kind,
        ErrorKind::ScriptParse(ScriptLoadError::Syntax { .. })
    ));
}

#[test]
fn neither_session_nor_topic_is_a_structure_error_at_root() {
    let found = issues("metadata:\n  name: x\nphases: []\n", LoadMode::Compatible);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "root");
    assert_eq!(found[0].error_type, ValidationErrorType::StructureError);
}

#[test]
fn duplicate_ids_are_constraint_violations_at_the_duplicate() {
    let yaml = HELLO.replace("action_id: ask_name", "action_id: welcome");
    for mode in BOTH_MODES {
        let found = issues(&yaml, mode);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].path,
            "session.phases[0].topics[0].actions[1].action_id"
        );
        assert_eq!(
            found[0].error_type,
            ValidationErrorType::ConstraintViolation
        );
    }
}

#[test]
fn unknown_action_type_fails_validation_in_both_modes() {
    let yaml = HELLO.replace("action_type: ai_ask", "action_type: ai_sing");
    for mode in BOTH_MODES {
        let found = issues(&yaml, mode);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].path,
            "session.phases[0].topics[0].actions[1].action_type"
        );
        assert_eq!(found[0].error_type, ValidationErrorType::EnumValueInvalid);
        assert_eq!(found[0].actual.as_deref(), Some("ai_sing"));
        assert!(found[0].expected.as_deref().unwrap().contains("use_skill"));
    }
}

// ------------------------------------------------ one case per field rule

/// A strict-valid session with one action of each type, edited per case.
const BASE: &str = r#"
session:
  session_id: base
  phases:
    - phase_id: p0
      topics:
        - topic_id: t0
          actions:
            - action_id: say
              action_type: ai_say
              config: {content: hello}
            - action_id: ask
              action_type: ai_ask
              config: {content: question, output: [{get: answer}]}
            - action_id: think
              action_type: ai_think
              config: {content: reason, output: [{get: result}]}
            - action_id: skill
              action_type: use_skill
              config: {skill: technique, input: [{name: a, from: b}], output: [{name: c, from: d}]}
"#;

const ACTIONS: &str = "session.phases[0].topics[0].actions";

/// BASE with the value at a dotted path (`session.phases.0.phase_id`)
/// replaced (or removed when `value` is None).
fn edited(path: &str, value: Option<Value>) -> String {
    let mut document: Value = serde_yaml::from_str(BASE).unwrap();
    let segments: Vec<&str> = path.split('.').collect();
    let (last, parents) = segments.split_last().unwrap();
    let mut node = &mut document;
    for segment in parents {
        node = match segment.parse::<usize>() {
            Ok(index) => &mut node[index],
            Err(_) => &mut node[*segment],
        };
    }
    match (node, value) {
        (Value::Mapping(map), Some(value)) => {
            map.insert(Value::from(*last), value);
        }
        (Value::Mapping(map), None) => {
            map.remove(*last).unwrap();
        }
        (Value::Sequence(items), Some(value)) => {
            let index: usize = last.parse().unwrap();
            items[index] = value;
        }
        (other, _) => panic!("cannot edit {path} in {other:?}"),
    }
    serde_yaml::to_string(&document).unwrap()
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn base_fixture_is_valid_in_both_modes() {
    for mode in BOTH_MODES {
        let parsed = load(BASE, mode).unwrap();
        assert!(parsed.warnings.is_empty());
    }
}

#[test]
fn every_field_rule_reports_its_path_and_type() {
    use ValidationErrorType::{
        ConstraintViolation as Constraint, EnumValueInvalid as Enum,
        RequiredFieldMissing as Missing, StructureError as Structure, TypeError as Type,
    };
    let a = |index: usize, rest: &str| format!("{ACTIONS}[{index}].{rest}");
    let e = |index: usize, rest: &str| format!("session.phases.0.topics.0.actions.{index}.{rest}");
    let long = |n: usize| Some(Value::from("x".repeat(n)));
    #[rustfmt::skip]
    let cases: Vec<(String, Option<Value>, String, ValidationErrorType)> = vec![
        // session
        ("session.session_id".into(), None, "session.session_id".into(), Missing),
        ("session.session_id".into(), Some(yaml("7")), "session.session_id".into(), Type),
        ("session.session_id".into(), Some(yaml("''")), "session.session_id".into(), Constraint),
        ("session.session_id".into(), long(101), "session.session_id".into(), Constraint),
        ("session.session_id".into(), Some(yaml("has-dash")), "session.session_id".into(), Constraint),
        ("session.session_name".into(), long(201), "session.session_name".into(), Constraint),
        ("session.template_scheme".into(), long(101), "session.template_scheme".into(), Constraint),
        ("session.template_scheme".into(), Some(yaml("a/b")), "session.template_scheme".into(), Constraint),
        ("session.description".into(), long(1001), "session.description".into(), Constraint),
        ("session.version".into(), long(51), "session.version".into(), Constraint),
        ("session.version".into(), Some(yaml("1.5")), "session.version".into(), Type),
        ("session.phases".into(), None, "session.phases".into(), Missing),
        ("session.phases".into(), Some(yaml("[]")), "session.phases".into(), Constraint),
        ("session.phases".into(), Some(yaml("{}")), "session.phases".into(), Type),
        ("session.extra".into(), Some(yaml("1")), "session.extra".into(), Structure),
        // phase
        ("session.phases.0".into(), Some(yaml("text")), "session.phases[0]".into(), Type),
        ("session.phases.0.phase_id".into(), None, "session.phases[0].phase_id".into(), Missing),
        ("session.phases.0.phase_id".into(), long(101), "session.phases[0].phase_id".into(), Constraint),
        ("session.phases.0.phase_name".into(), long(201), "session.phases[0].phase_name".into(), Constraint),
        ("session.phases.0.phase_goal".into(), long(501), "session.phases[0].phase_goal".into(), Constraint),
        ("session.phases.0.description".into(), long(1001), "session.phases[0].description".into(), Constraint),
        ("session.phases.0.entry_condition".into(), Some(yaml("[]")), "session.phases[0].entry_condition".into(), Type),
        ("session.phases.0.topics".into(), Some(yaml("[]")), "session.phases[0].topics".into(), Constraint),
        ("session.phases.0.topics".into(), None, "session.phases[0].topics".into(), Missing),
        ("session.phases.0.steps".into(), Some(yaml("[]")), "session.phases[0].steps".into(), Structure),
        // topic
        ("session.phases.0.topics.0.topic_id".into(), None, "session.phases[0].topics[0].topic_id".into(), Missing),
        ("session.phases.0.topics.0.topic_id".into(), long(101), "session.phases[0].topics[0].topic_id".into(), Constraint),
        ("session.phases.0.topics.0.topic_name".into(), long(201), "session.phases[0].topics[0].topic_name".into(), Constraint),
        ("session.phases.0.topics.0.topic_goal".into(), long(501), "session.phases[0].topics[0].topic_goal".into(), Constraint),
        ("session.phases.0.topics.0.description".into(), long(1001), "session.phases[0].topics[0].description".into(), Constraint),
        ("session.phases.0.topics.0.strategy".into(), long(2001), "session.phases[0].topics[0].strategy".into(), Constraint),
        ("session.phases.0.topics.0.actions".into(), Some(yaml("[]")), "session.phases[0].topics[0].actions".into(), Constraint),
        ("session.phases.0.topics.0.actions".into(), None, "session.phases[0].topics[0].actions".into(), Missing),
        // action envelope
        (e(0, "action_id"), None, a(0, "action_id"), Missing),
        (e(0, "action_id"), long(101), a(0, "action_id"), Constraint),
        (e(0, "action_type"), None, a(0, "action_type"), Missing),
        (e(0, "action_type"), Some(yaml("speak")), a(0, "action_type"), Enum),
        (e(0, "action_type"), Some(yaml("[ai_say]")), a(0, "action_type"), Type),
        (e(0, "condition"), Some(yaml("{a: 1}")), a(0, "condition"), Type),
        (e(0, "config"), Some(yaml("text")), a(0, "config"), Type),
        (e(0, "tone"), Some(yaml("calm")), a(0, "tone"), Structure),
        // ai_say
        (e(0, "config.content"), None, a(0, "config.content"), Missing),
        (e(0, "config.content"), Some(yaml("' '")), a(0, "config.content"), Constraint),
        (e(0, "config.content"), Some(yaml("[a]")), a(0, "config.content"), Type),
        (e(0, "config.tone"), Some(yaml("3")), a(0, "config.tone"), Type),
        (e(0, "config.max_rounds"), Some(yaml("0")), a(0, "config.max_rounds"), Constraint),
        (e(0, "config.max_rounds"), Some(yaml("11")), a(0, "config.max_rounds"), Constraint),
        (e(0, "config.max_rounds"), Some(yaml("two")), a(0, "config.max_rounds"), Type),
        (e(0, "config.require_acknowledgment"), Some(yaml("'yes'")), a(0, "config.require_acknowledgment"), Type),
        (e(0, "config.ai_role"), Some(yaml("[]")), a(0, "config.ai_role"), Type),
        (e(0, "config.exit"), Some(yaml("done")), a(0, "config.exit"), Structure),
        (e(0, "config.exit_criteria"), Some(yaml("5")), a(0, "config.exit_criteria"), Type),
        (e(0, "config.exit_criteria"), Some(yaml("{understanding_threshold: 101}")), a(0, "config.exit_criteria.understanding_threshold"), Constraint),
        (e(0, "config.exit_criteria"), Some(yaml("{understanding_threshold: -1}")), a(0, "config.exit_criteria.understanding_threshold"), Constraint),
        (e(0, "config.exit_criteria"), Some(yaml("{has_questions: maybe}")), a(0, "config.exit_criteria.has_questions"), Type),
        (e(0, "config.exit_criteria"), Some(yaml("{min_rounds: 0}")), a(0, "config.exit_criteria.min_rounds"), Constraint),
        (e(0, "config.exit_criteria"), Some(yaml("{speed: 1}")), a(0, "config.exit_criteria.speed"), Structure),
        (e(0, "config.exit_criteria"), Some(yaml("{custom_conditions: [{operator: '==', value: 1}]}")), a(0, "config.exit_criteria.custom_conditions[0].variable"), Missing),
        (e(0, "config.exit_criteria"), Some(yaml("{custom_conditions: [{variable: v, value: 1}]}")), a(0, "config.exit_criteria.custom_conditions[0].operator"), Missing),
        (e(0, "config.exit_criteria"), Some(yaml("{custom_conditions: [{variable: v, operator: '~', value: 1}]}")), a(0, "config.exit_criteria.custom_conditions[0].operator"), Enum),
        (e(0, "config.exit_criteria"), Some(yaml("{custom_conditions: [{variable: v, operator: '=='}]}")), a(0, "config.exit_criteria.custom_conditions[0].value"), Missing),
        // ai_ask
        (e(1, "config.content"), None, a(1, "config.content"), Missing),
        (e(1, "config.exit"), Some(yaml("[x]")), a(1, "config.exit"), Type),
        (e(1, "config.max_rounds"), Some(yaml("11")), a(1, "config.max_rounds"), Constraint),
        (e(1, "config.max_rounds"), Some(yaml("2.5")), a(1, "config.max_rounds"), Type),
        (e(1, "config.output"), Some(yaml("{get: x}")), a(1, "config.output"), Type),
        (e(1, "config.output"), Some(yaml("[x]")), a(1, "config.output[0]"), Type),
        (e(1, "config.output"), Some(yaml("[{define: d}]")), a(1, "config.output[0].get"), Missing),
        (e(1, "config.output"), Some(yaml("[{get: ''}]")), a(1, "config.output[0].get"), Constraint),
        (e(1, "config.output"), Some(yaml("[{get: x, scope: planet}]")), a(1, "config.output[0].scope"), Enum),
        (e(1, "config.output"), Some(yaml("[{get: x, set: 1}]")), a(1, "config.output[0].set"), Structure),
        (e(1, "config.target_variable"), Some(yaml("x")), a(1, "config.target_variable"), Structure),
        (e(1, "config.exit_criteria"), Some(yaml("{}")), a(1, "config.exit_criteria"), Structure),
        // ai_think
        (e(2, "config.content"), None, a(2, "config.content"), Missing),
        (e(2, "config.input_variables"), Some(yaml("x")), a(2, "config.input_variables"), Type),
        (e(2, "config.input_variables"), Some(yaml("[x, 3]")), a(2, "config.input_variables[1]"), Type),
        (e(2, "config.output"), Some(yaml("[{get: 5}]")), a(2, "config.output[0].get"), Type),
        (e(2, "config.tone"), Some(yaml("calm")), a(2, "config.tone"), Structure),
        // use_skill
        (e(3, "config.skill"), None, a(3, "config.skill"), Missing),
        (e(3, "config.skill"), long(101), a(3, "config.skill"), Constraint),
        (e(3, "config.input"), Some(yaml("[{from: b}]")), a(3, "config.input[0].name"), Missing),
        (e(3, "config.input"), Some(yaml("[{name: a}]")), a(3, "config.input[0].from"), Missing),
        (e(3, "config.input"), Some(yaml("[{name: a, from: b, scope: topic}]")), a(3, "config.input[0].scope"), Structure),
        (e(3, "config.output"), Some(yaml("[{name: c, from: d, scope: cosmos}]")), a(3, "config.output[0].scope"), Enum),
        (e(3, "config.output"), Some(yaml("[{name: c, from: [d]}]")), a(3, "config.output[0].from"), Type),
        (e(3, "config.content"), Some(yaml("x")), a(3, "config.content"), Structure),
    ];
    for (edit_path, value, expected_path, expected_type) in cases {
        let compatible_too = expected_type != Structure;
        let text = edited(&edit_path, value);
        let modes: &[LoadMode] = if compatible_too {
            &BOTH_MODES
        } else {
            &[LoadMode::Strict]
        };
        for &mode in modes {
            let found = issues(&text, mode);
            assert!(
                found.iter().any(|issue| issue.path == expected_path && issue.error_type == expected_type),
                "{mode:?} {edit_path}: expected {expected_type:?} at {expected_path}, got {found:#?}"
            );
            for issue in &found {
                assert!(!issue.message.is_empty(), "{issue:?}");
                assert!(
                    issue.expected.is_some() || issue.error_type == Missing,
                    "{issue:?}"
                );
            }
        }
        if !compatible_too {
            // Closed objects in strict mode are open with warnings in compatible mode.
            let parsed = load(&text, LoadMode::Compatible).unwrap_or_else(|error| {
                panic!("{edit_path} should load in compatible mode: {error:?}")
            });
            assert!(
                parsed.warnings.iter().any(|w| w.path == expected_path),
                "{edit_path}: no warning at {expected_path}: {:?}",
                parsed.warnings
            );
        }
    }
}

#[test]
fn config_is_required_in_strict_mode_only() {
    let text = edited("session.phases.0.topics.0.actions.0.config", None);
    let strict: Vec<_> = issues(&text, LoadMode::Strict)
        .into_iter()
        .map(|i| (i.path, i.error_type))
        .collect();
    let base = format!("{ACTIONS}[0]");
    assert_eq!(
        strict,
        vec![
            (
                format!("{base}.config"),
                ValidationErrorType::RequiredFieldMissing
            ),
            (
                format!("{base}.config.content"),
                ValidationErrorType::RequiredFieldMissing
            ),
        ]
    );
    // Compatible mode reads the envelope as the config, so only the content
    // is missing.
    let compatible: Vec<_> = issues(&text, LoadMode::Compatible)
        .into_iter()
        .map(|i| (i.path, i.error_type))
        .collect();
    assert_eq!(
        compatible,
        vec![(
            format!("{base}.config.content"),
            ValidationErrorType::RequiredFieldMissing
        )]
    );
}

#[test]
fn independent_problems_are_all_reported() {
    let mut document: Value = serde_yaml::from_str(BASE).unwrap();
    let actions = &mut document["session"]["phases"][0]["topics"][0]["actions"];
    actions[0]["config"]["max_rounds"] = yaml("12");
    actions[1]["config"]["output"] = yaml("[{scope: nowhere}]");
    actions[2]["action_type"] = yaml("ai_dream");
    actions[3]["config"] = yaml("{}");
    let found = issues(&serde_yaml::to_string(&document).unwrap(), LoadMode::Strict);
    let paths: Vec<_> = found
        .iter()
        .map(|i| i.path.trim_start_matches(ACTIONS))
        .collect();
    assert_eq!(
        paths,
        vec![
            "[0].config.max_rounds",
            "[1].config.output[0].get",
            "[1].config.output[0].scope",
            "[2].action_type",
            "[3].config.skill",
        ]
    );
}

#[test]
fn compatible_mode_treats_null_as_absent() {
    let text = edited(
        "session.phases.0.topics.0.actions.0.config.tone",
        Some(Value::Null),
    );
    let parsed = load(&text, LoadMode::Compatible).unwrap();
    let ActionKind::Say(say) = &session(&parsed).phases[0].topics[0].actions[0].kind else {
        panic!("say")
    };
    assert_eq!(say.tone, None);
    let found = issues(&text, LoadMode::Strict);
    assert_eq!(found[0].error_type, ValidationErrorType::TypeError);
    assert_eq!(found[0].actual.as_deref(), Some("null"));
}

#[test]
fn output_scopes_are_parsed() {
    for (spelling, scope) in [
        ("global", VariableScope::Global),
        ("session", VariableScope::Session),
        ("phase", VariableScope::Phase),
        ("topic", VariableScope::Topic),
    ] {
        let text = edited(
            "session.phases.0.topics.0.actions.1.config.output",
            Some(yaml(&format!(
                "[{{get: answer, define: the answer, scope: {spelling}}}]"
            ))),
        );
        let parsed = load(&text, LoadMode::Strict).unwrap();
        let ActionKind::Ask(ask) = &session(&parsed).phases[0].topics[0].actions[1].kind else {
            panic!("ask")
        };
        assert_eq!(ask.output[0].scope, Some(scope));
        assert_eq!(ask.output[0].define.as_deref(), Some("the answer"));
    }
}

#[test]
fn anchors_aliases_and_merge_keys_work() {
    let yaml = "session:\n  session_id: s\n  phases:\n    - phase_id: p\n      topics:\n        - topic_id: t\n          actions:\n            - action_id: a\n              action_type: ai_say\n              config: &say {content: hi, max_rounds: 2}\n            - action_id: b\n              action_type: ai_say\n              config:\n                <<: *say\n                max_rounds: 3\n";
    let parsed = load(yaml, LoadMode::Strict).unwrap();
    let rounds: Vec<_> = actions(session(&parsed))
        .map(|a| match &a.kind {
            ActionKind::Say(say) => say.max_rounds,
            _ => None,
        })
        .collect();
    assert_eq!(rounds, vec![Some(2), Some(3)]);
}

/// The `hello` script with a `safety:` section added after its id.
fn with_safety(section: &str) -> String {
    HELLO.replacen(
        "  session_id: hello\n",
        &format!("  session_id: hello\n  safety:\n{section}"),
        1,
    )
}

#[test]
fn the_safety_section_is_read_in_both_modes() {
    let yaml = with_safety(
        "    response: \"Please call {hotlines}\"\n    threshold: medium\n    continue_after_acknowledgement: true\n",
    );
    for mode in BOTH_MODES {
        let parsed = load(&yaml, mode).unwrap();
        let safety = session(&parsed).safety.clone().unwrap();
        assert_eq!(safety.response.as_deref(), Some("Please call {hotlines}"));
        assert_eq!(safety.threshold, Some(heartrule_domain::RiskLevel::Medium));
        assert!(safety.continue_after_acknowledgement);
    }
    let parsed = load(HELLO, LoadMode::Strict).unwrap();
    assert_eq!(session(&parsed).safety, None);
    let minimal = load(&with_safety("    threshold: imminent\n"), LoadMode::Strict).unwrap();
    let safety = session(&minimal).safety.clone().unwrap();
    assert!(!safety.continue_after_acknowledgement);
    assert_eq!(safety.response, None);
}

#[test]
fn a_bad_safety_section_is_located() {
    let found = issues(&with_safety("    threshold: severe\n"), LoadMode::Strict);
    assert_eq!(found[0].path, "session.safety.threshold");
    assert_eq!(found[0].error_type, ValidationErrorType::EnumValueInvalid);
    // `none` would switch the protocol off for the script: refused.
    let found = issues(&with_safety("    threshold: none\n"), LoadMode::Strict);
    assert_eq!(found[0].path, "session.safety.threshold");
    let found = issues(&with_safety("    hotline: 988\n"), LoadMode::Strict);
    assert_eq!(found[0].path, "session.safety.hotline");
    let found = issues(
        &with_safety("    continue_after_acknowledgement: maybe\n"),
        LoadMode::Strict,
    );
    assert_eq!(
        found[0].path,
        "session.safety.continue_after_acknowledgement"
    );
}
