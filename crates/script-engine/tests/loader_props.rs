#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `load` is total and fast: arbitrary bytes and generated YAML-ish
//! documents never panic it in either mode, every call returns within a
//! bound, and hostile fixtures (alias bombs, deep nesting) fail quickly.

use heartrule_domain::{
    LoadMode, ParsedScript, ScriptDocument, ScriptLoadError, ValidationErrorType,
};
use heartrule_script_engine::loader::load;
use proptest::prelude::*;
use serde_yaml::{Mapping, Value};
use std::time::{Duration, Instant};

/// Generous for a debug build on a busy 2-core machine; a quadratic or
/// exponential path would blow far past it.
const TIME_BOUND: Duration = Duration::from_secs(2);
const FIXTURE_BOUND: Duration = Duration::from_secs(1);

fn timed_load(text: &str, mode: LoadMode) -> (Result<ParsedScript, ScriptLoadError>, Duration) {
    let started = Instant::now();
    let result = load(text, mode);
    (result, started.elapsed())
}

fn assert_total(text: &str) {
    for mode in [LoadMode::Strict, LoadMode::Compatible] {
        let (_, elapsed) = timed_load(text, mode);
        assert!(
            elapsed < TIME_BOUND,
            "{mode:?} took {elapsed:?} on {text:?}"
        );
    }
}

// ------------------------------------------------------------- generators

const KEYS: &[&str] = &[
    "session",
    "topic",
    "sessions",
    "metadata",
    "session_id",
    "session_name",
    "phases",
    "phase_id",
    "topics",
    "topic_id",
    "actions",
    "action_id",
    "action_type",
    "config",
    "content",
    "content_template",
    "question_template",
    "prompt_template",
    "max_rounds",
    "maxRounds",
    "exit",
    "exit_criteria",
    "understanding_threshold",
    "custom_conditions",
    "output",
    "get",
    "define",
    "scope",
    "target_variable",
    "skill",
    "input",
    "name",
    "from",
    "technique_id",
    "input_parameters",
    "output_variables",
    "require_acknowledgment",
    "template_scheme",
    "entry_condition",
    "<<",
];
const WORDS: &[&str] = &[
    "ai_say",
    "ai_ask",
    "ai_think",
    "use_skill",
    "ai_dance",
    "topic",
    "session",
    "global",
    "==",
    "contains",
    "",
    "${user_name}",
    "用户称呼",
    "p1",
    "t1",
    "a1",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-20i64..20).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

fn yaml_tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|entries| {
                let mut mapping = Mapping::new();
                for (key, value) in entries {
                    mapping.insert(Value::from(key), value);
                }
                Value::Mapping(mapping)
            }),
        ]
    })
}

/// Documents rooted where the loader dispatches, so validation runs deep.
fn rooted_document() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&["session", "topic", "sessions", "other"][..]),
        yaml_tree(),
    )
        .prop_map(|(root, body)| {
            let mut mapping = Mapping::new();
            mapping.insert(Value::from(root), body);
            Value::Mapping(mapping)
        })
}

/// Raw YAML-ish text: syntax tokens glued together (anchors, aliases,
/// flow brackets, indentation, tags, quotes) to reach parser error paths.
fn yamlish_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(KEYS).prop_map(|k| format!("{k}: ")),
        prop::sample::select(WORDS).prop_map(str::to_owned),
        prop::sample::select(
            &[
                "\n",
                "\n  ",
                "\n    ",
                "- ",
                "[",
                "]",
                "{",
                "}",
                ", ",
                ": ",
                "&a ",
                "*a",
                "&b ",
                "*b",
                "!tag ",
                "!!str ",
                "\"",
                "'",
                "|\n  ",
                ">-\n  ",
                "---\n",
                "...\n",
                "#c\n",
                "? ",
                "\t",
                "%YAML 1.2\n",
                "<<: *a\n",
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(token, 0..60).prop_map(|tokens| tokens.concat())
}

// ------------------------------------------------- valid script generator

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut mapping = Mapping::new();
    for (key, value) in entries {
        mapping.insert(Value::from(key), value);
    }
    Value::Mapping(mapping)
}

/// Text that needs quoting now and then: brackets, colons, hashes, quotes.
fn text() -> impl Strategy<Value = String> {
    "[a-z\u{4e00}-\u{4e10}][a-zA-Z0-9 ,.'\"\\[\\]{}#:$\u{4e00}-\u{4e10}-]{0,30}"
}

fn variable() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,10}"
}

fn outputs() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (
            variable(),
            prop::option::of(text()),
            prop::option::of(prop::sample::select(
                &["global", "session", "phase", "topic"][..],
            )),
        ),
        0..3,
    )
    .prop_map(|fields| {
        Value::Sequence(
            fields
                .into_iter()
                .map(|(get, define, scope)| {
                    let mut entries = vec![("get", Value::from(get))];
                    if let Some(define) = define {
                        entries.push(("define", Value::from(define)));
                    }
                    if let Some(scope) = scope {
                        entries.push(("scope", Value::from(scope)));
                    }
                    map(entries)
                })
                .collect(),
        )
    })
}

/// `(action_type, config)` of a valid action.
fn action_body() -> impl Strategy<Value = (&'static str, Value)> {
    prop_oneof![
        (
            text(),
            prop::option::of(1u32..=10),
            prop::option::of(any::<bool>()),
            prop::option::of(0u32..=100)
        )
            .prop_map(|(content, rounds, acknowledge, threshold)| {
                let mut entries = vec![("content", Value::from(content))];
                if let Some(rounds) = rounds {
                    entries.push(("max_rounds", Value::from(rounds)));
                }
                if let Some(acknowledge) = acknowledge {
                    entries.push(("require_acknowledgment", Value::from(acknowledge)));
                }
                if let Some(threshold) = threshold {
                    entries.push((
                        "exit_criteria",
                        map(vec![("understanding_threshold", Value::from(threshold))]),
                    ));
                }
                ("ai_say", map(entries))
            }),
        (
            text(),
            prop::option::of(1u32..=10),
            prop::option::of(text()),
            outputs()
        )
            .prop_map(|(content, rounds, exit, output)| {
                let mut entries = vec![("content", Value::from(content)), ("output", output)];
                if let Some(rounds) = rounds {
                    entries.push(("max_rounds", Value::from(rounds)));
                }
                if let Some(exit) = exit {
                    entries.push(("exit", Value::from(exit)));
                }
                ("ai_ask", map(entries))
            }),
        (text(), prop::collection::vec(variable(), 0..3), outputs()).prop_map(
            |(content, inputs, output)| {
                let inputs = Value::Sequence(inputs.into_iter().map(Value::from).collect());
                (
                    "ai_think",
                    map(vec![
                        ("content", Value::from(content)),
                        ("input_variables", inputs),
                        ("output", output),
                    ]),
                )
            }
        ),
        (
            variable(),
            prop::collection::vec((variable(), text()), 0..3)
        )
            .prop_map(|(skill, inputs)| {
                let input = Value::Sequence(
                    inputs
                        .into_iter()
                        .map(|(name, from)| {
                            map(vec![
                                ("name", Value::from(name)),
                                ("from", Value::from(from)),
                            ])
                        })
                        .collect(),
                );
                (
                    "use_skill",
                    map(vec![("skill", Value::from(skill)), ("input", input)]),
                )
            }),
    ]
}

/// A strict-valid session: 1–3 phases × 1–3 topics × 1–4 actions.
fn valid_session() -> impl Strategy<Value = Value> {
    let topic = prop::collection::vec(action_body(), 1..5);
    let phase = prop::collection::vec(topic, 1..4);
    (prop::collection::vec(phase, 1..4), prop::option::of(text())).prop_map(|(phases, name)| {
        let phases = phases
            .into_iter()
            .enumerate()
            .map(|(p, topics)| {
                let topics = topics
                    .into_iter()
                    .enumerate()
                    .map(|(t, actions)| {
                        let actions = actions
                            .into_iter()
                            .enumerate()
                            .map(|(a, (action_type, config))| {
                                map(vec![
                                    ("action_id", Value::from(format!("a{a}"))),
                                    ("action_type", Value::from(action_type)),
                                    ("config", config),
                                ])
                            })
                            .collect();
                        map(vec![
                            ("topic_id", Value::from(format!("t{t}"))),
                            ("actions", Value::Sequence(actions)),
                        ])
                    })
                    .collect();
                map(vec![
                    ("phase_id", Value::from(format!("p{p}"))),
                    ("topics", Value::Sequence(topics)),
                ])
            })
            .collect();
        let mut session = vec![
            ("session_id", Value::from("generated")),
            ("phases", Value::Sequence(phases)),
        ];
        if let Some(name) = name {
            session.push(("session_name", Value::from(name)));
        }
        map(vec![("session", map(session))])
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        assert_total(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn generated_documents_never_panic(document in rooted_document()) {
        let text = serde_yaml::to_string(&document).unwrap();
        assert_total(&text);
    }

    #[test]
    fn yamlish_text_never_panics(text in yamlish_text()) {
        assert_total(&text);
    }

    #[test]
    fn valid_scripts_load_identically_in_both_modes(script in valid_session()) {
        let text = serde_yaml::to_string(&script).unwrap();
        let strict = load(&text, LoadMode::Strict);
        prop_assert!(strict.is_ok(), "{:?}\n{}", strict, text);
        let strict = strict.unwrap();
        let compatible = load(&text, LoadMode::Compatible).unwrap();
        prop_assert!(strict.warnings.is_empty() && compatible.warnings.is_empty());
        prop_assert_eq!(&strict.document, &compatible.document);
        let ScriptDocument::Session(session) = strict.document else {
            panic!("not a session");
        };
        prop_assert_eq!(session.phases.len(), script["session"]["phases"].as_sequence().unwrap().len());
    }

    #[test]
    fn an_unknown_key_fails_strict_and_warns_compatible(script in valid_session(), target in 0usize..5) {
        let mut script = script;
        let action = &mut script["session"]["phases"][0]["topics"][0]["actions"][0];
        let (object, path) = match target {
            0 => (&mut script["session"], "session"),
            1 => (&mut script["session"]["phases"][0], "session.phases[0]"),
            2 => (&mut script["session"]["phases"][0]["topics"][0], "session.phases[0].topics[0]"),
            3 => (action, "session.phases[0].topics[0].actions[0]"),
            _ => (&mut action["config"], "session.phases[0].topics[0].actions[0].config"),
        };
        object.as_mapping_mut().unwrap().insert(Value::from("zz_unknown"), Value::from(1));
        let text = serde_yaml::to_string(&script).unwrap();
        let expected_path = format!("{path}.zz_unknown");
        match load(&text, LoadMode::Strict) {
            Err(ScriptLoadError::Invalid { issues }) => {
                prop_assert_eq!(issues.len(), 1);
                prop_assert_eq!(&issues[0].path, &expected_path);
                prop_assert_eq!(issues[0].error_type, ValidationErrorType::StructureError);
            }
            other => prop_assert!(false, "strict accepted an unknown key: {:?}", other),
        }
        let compatible = load(&text, LoadMode::Compatible).unwrap();
        prop_assert!(compatible.warnings.iter().any(|w| w.path == expected_path));
    }

    #[test]
    fn failures_always_explain_themselves(document in rooted_document()) {
        let text = serde_yaml::to_string(&document).unwrap();
        for mode in [LoadMode::Strict, LoadMode::Compatible] {
            match load(&text, mode) {
                Ok(_) => {}
                Err(ScriptLoadError::Invalid { issues }) => {
                    prop_assert!(!issues.is_empty());
                    for issue in issues {
                        prop_assert!(!issue.path.is_empty());
                        prop_assert!(!issue.message.is_empty());
                    }
                }
                Err(ScriptLoadError::Syntax { line, column, .. }) => {
                    prop_assert!(line >= 1 && column >= 1);
                }
                Err(ScriptLoadError::UnsupportedLegacyFormat { path }) => {
                    prop_assert_eq!(path, "sessions");
                }
            }
        }
    }
}

// ---------------------------------------------------- hostile fixtures

fn assert_fails_fast(text: &str) {
    for mode in [LoadMode::Strict, LoadMode::Compatible] {
        let (result, elapsed) = timed_load(text, mode);
        assert!(result.is_err(), "{mode:?} accepted a hostile document");
        assert!(elapsed < FIXTURE_BOUND, "{mode:?} took {elapsed:?}");
    }
}

#[test]
fn billion_laughs_fails_fast() {
    let mut text = String::from("a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
    for level in 1..10 {
        let previous = format!("*a{}", level - 1);
        let items = [previous.as_str(); 9].join(", ");
        text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    text.push_str("session: *a9\n");
    assert_fails_fast(&text);
    assert!(matches!(
        load(&text, LoadMode::Compatible),
        Err(ScriptLoadError::Syntax { .. })
    ));
}

#[test]
fn alias_fan_out_within_serde_yaml_limits_fails_fast() {
    // Few nesting levels, many references: serde_yaml alone would build
    // 400 000 nodes from this 12 KB text.
    let mut text = String::from("base: &base [");
    text.push_str(&vec!["x"; 200].join(","));
    text.push_str("]\nsession:\n  phases:\n");
    for _ in 0..2_000 {
        text.push_str("    - *base\n");
    }
    assert_fails_fast(&text);
}

#[test]
fn deeply_nested_flow_document_fails_fast() {
    let depth = 100_000;
    let text = format!("session: {}{}", "[".repeat(depth), "]".repeat(depth));
    assert_fails_fast(&text);
}

#[test]
fn deeply_nested_block_document_fails_fast() {
    let mut text = String::from("session:\n");
    for level in 1..300 {
        text.push_str(&" ".repeat(level));
        text.push_str("k:\n");
    }
    assert_fails_fast(&text);
}

#[test]
fn deeply_nested_mapping_in_a_valid_position_fails_fast() {
    // 100 levels pass the parser; the loader must still not recurse into
    // the value beyond what the schema asks for.
    let mut value = String::from("1");
    for _ in 0..100 {
        value = format!("{{v: {value}}}");
    }
    let text = format!(
        "session:\n  session_id: s\n  phases:\n    - phase_id: p\n      topics:\n        - topic_id: t\n          actions:\n            - action_id: a\n              action_type: ai_say\n              config:\n                content: hi\n                exit_criteria:\n                  custom_conditions:\n                    - {{variable: v, operator: '==', value: {value}}}\n"
    );
    for mode in [LoadMode::Strict, LoadMode::Compatible] {
        let (result, elapsed) = timed_load(&text, mode);
        assert!(elapsed < FIXTURE_BOUND, "{mode:?} took {elapsed:?}");
        // Deep but legal: a custom condition may compare with any value.
        assert!(result.is_ok(), "{mode:?}: {result:?}");
    }
}
