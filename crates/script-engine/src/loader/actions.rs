//! Actions: the envelope (`action_id`, `action_type`, `condition`, `config`)
//! and the per-type configs.
//!
//! Strict mode reads exactly the fields of the typed configs in
//! `heartrule_domain::script`. Compatible mode reads what the old runtime
//! read: deprecated spellings, camelCase, envelope-level keys overlaid by
//! `config`, and the legacy `target_variable` / `output_variables` forms.

use super::diagnostics::{child_path, Diagnostics, Field, Issue, UniqueIds};
use super::object::{KeyAdvice, ObjectReader};
use heartrule_domain::{
    Action, ActionKind, ActionType, AskConfig, CustomCondition, ExitCriteria, OutputField,
    SayConfig, SkillBinding, SkillConfig, ThinkConfig, ValidationErrorType, VariableScope,
};

const ACTION_TYPES: &str = "ai_say | ai_ask | ai_think | use_skill";
const SCOPES: &str = "global | session | phase | topic";
const OPERATORS: &str = "== | != | > | < | >= | <= | contains";
/// Older spellings of `content`, in the order the old runtime tried them.
const CONTENT_ALIASES: &[&str] = &["content_template", "question_template", "prompt_template"];
const TARGET_VARIABLE_ALIASES: &[&str] = &["extract_to"];

/// The canonical config fields of each action type (strict mode's schema).
fn canonical_fields(action_type: ActionType) -> &'static [&'static str] {
    match action_type {
        ActionType::AiSay => &[
            "content",
            "tone",
            "max_rounds",
            "exit_criteria",
            "require_acknowledgment",
            "ai_role",
        ],
        ActionType::AiAsk => &["content", "tone", "exit", "output", "max_rounds", "ai_role"],
        ActionType::AiThink => &["content", "input_variables", "output"],
        ActionType::UseSkill => &["skill", "input", "output"],
    }
}

/// Advice for a config key outside the canonical schema (deprecated
/// spellings plus the runtime-only fields).
pub(super) fn config_key_advice(action_type: ActionType, key: &str) -> Option<KeyAdvice> {
    use ActionType::{AiAsk, AiSay, AiThink, UseSkill};
    let advice = match (action_type, key) {
        (
            AiSay | AiAsk | AiThink,
            "content_template" | "contentTemplate" | "question_template" | "questionTemplate"
            | "prompt_template" | "promptTemplate",
        ) => KeyAdvice::Replaced {
            replacement: "content",
        },
        (AiAsk, "target_variable" | "targetVariable" | "extract_to" | "extractTo")
        | (AiAsk | AiThink, "output_variables" | "outputVariables") => KeyAdvice::Replaced {
            replacement: "output",
        },
        (AiAsk, "extraction_prompt" | "extractionPrompt") => KeyAdvice::Replaced {
            replacement: "output[].define",
        },
        (_, "required") => KeyAdvice::NoEffect {
            reason: "deprecated and never read",
        },
        (_, "say_goal" | "sayGoal" | "think_goal" | "thinkGoal") => KeyAdvice::NoEffect {
            reason: "deprecated; goals are never read (describe the goal in `content`)",
        },
        (AiSay | AiAsk | UseSkill, "input_variables" | "inputVariables") => KeyAdvice::NoEffect {
            reason: "only ai_think reads input_variables",
        },
        (AiSay, "exit") => KeyAdvice::NoEffect {
            reason: "ai_say never reads `exit`; use `exit_criteria`",
        },
        _ => return None,
    };
    Some(advice)
}

/// Whether `key` belongs in `config` rather than beside `action_type`.
fn is_config_key(action_type: Option<ActionType>, key: &str) -> bool {
    let types = match action_type {
        Some(known) => vec![known],
        None => vec![
            ActionType::AiSay,
            ActionType::AiAsk,
            ActionType::AiThink,
            ActionType::UseSkill,
        ],
    };
    types.into_iter().any(|action_type| {
        canonical_fields(action_type).contains(&key)
            || config_key_advice(action_type, key).is_some()
    })
}

/// One action of a topic; `ids` holds the action ids of that topic.
pub(super) fn action(
    diag: &mut Diagnostics,
    item: &Field<'_>,
    ids: &mut UniqueIds,
) -> Option<Action> {
    let envelope_map = diag.mapping(item)?;
    let mut envelope = ObjectReader::new(diag, envelope_map, &item.path);

    let action_id = envelope
        .required(diag, "action_id", "a string of 1 to 100 characters")
        .and_then(|field| {
            let id = diag.text(&field, 1, 100)?;
            ids.register(diag, &id, &field.path);
            Some(id)
        });
    let action_type = envelope
        .required(diag, "action_type", ACTION_TYPES)
        .and_then(|field| diag.one_of(&field, ACTION_TYPES, ActionType::parse));
    let condition = envelope
        .optional(diag, "condition")
        .and_then(|field| diag.string(&field));

    let config_path = child_path(&item.path, "config");
    let config_field = if diag.is_compatible() {
        envelope.optional(diag, "config")
    } else {
        envelope.required(diag, "config", "a mapping")
    };
    let mut config = ObjectReader::empty(&config_path);
    if let Some(field) = &config_field {
        if let Some(mapping) = diag.mapping(field) {
            config.extend(diag, mapping, &config_path);
        }
    }

    if diag.is_compatible() {
        // The old runtime handed the action one flat map: the envelope
        // overlaid by `config`.
        for extra in envelope.take_rest() {
            let target = child_path("config", &extra.key);
            if config.has_key(&extra.key) {
                diag.warn(
                    extra.path.clone(),
                    format!(
                        "`{}` beside action_type is overridden by `{target}`",
                        extra.key
                    ),
                    Some(target),
                );
            } else {
                diag.warn(
                    extra.path.clone(),
                    format!("`{}` beside action_type is read as `{target}`", extra.key),
                    Some(target),
                );
                config.adopt(vec![extra]);
            }
        }
    }
    envelope.finish(diag, |key| {
        is_config_key(action_type, key).then_some(KeyAdvice::MoveIntoConfig)
    });

    // An unknown action type has no schema to check its config against.
    let action_type = action_type?;
    let kind = match action_type {
        ActionType::AiSay => say_config(diag, &mut config).map(ActionKind::Say),
        ActionType::AiAsk => ask_config(diag, &mut config).map(ActionKind::Ask),
        ActionType::AiThink => think_config(diag, &mut config).map(ActionKind::Think),
        ActionType::UseSkill => skill_config(diag, &mut config).map(ActionKind::UseSkill),
    };
    config.finish(diag, |key| config_key_advice(action_type, key));
    Some(Action {
        action_id: action_id?,
        condition,
        kind: kind?,
    })
}

/// `content` (compatible mode: or its older spellings), not blank.
fn content(diag: &mut Diagnostics, config: &mut ObjectReader<'_>) -> Option<String> {
    let field = config.required_any(diag, "content", CONTENT_ALIASES, "a non-empty string")?;
    diag.non_blank(&field)
}

fn max_rounds(diag: &mut Diagnostics, config: &mut ObjectReader<'_>) -> Option<u32> {
    let field = config.optional(diag, "max_rounds")?;
    diag.integer(&field, 1, 10)
}

fn optional_string(
    diag: &mut Diagnostics,
    config: &mut ObjectReader<'_>,
    name: &'static str,
) -> Option<String> {
    let field = config.optional(diag, name)?;
    diag.string(&field)
}

fn say_config(diag: &mut Diagnostics, config: &mut ObjectReader<'_>) -> Option<SayConfig> {
    let content = content(diag, config);
    let tone = optional_string(diag, config, "tone");
    let max_rounds = max_rounds(diag, config);
    let exit_criteria = config
        .optional(diag, "exit_criteria")
        .and_then(|field| exit_criteria(diag, &field));
    let require_acknowledgment = config
        .optional(diag, "require_acknowledgment")
        .and_then(|field| diag.boolean(&field));
    let ai_role = optional_string(diag, config, "ai_role");
    Some(SayConfig {
        content: content?,
        tone,
        max_rounds,
        exit_criteria,
        // Legacy mode acknowledges by default.
        require_acknowledgment: require_acknowledgment.unwrap_or(true),
        ai_role,
    })
}

fn ask_config(diag: &mut Diagnostics, config: &mut ObjectReader<'_>) -> Option<AskConfig> {
    let content = content(diag, config);
    let tone = optional_string(diag, config, "tone");
    let exit = optional_string(diag, config, "exit");
    let mut output = config
        .optional(diag, "output")
        .and_then(|field| output_fields(diag, &field))
        .unwrap_or_default();
    let max_rounds = max_rounds(diag, config);
    let ai_role = optional_string(diag, config, "ai_role");
    let mut target_variable = None;
    if diag.is_compatible() {
        legacy_output_variables(diag, config, &mut output);
        if let Some(field) = config.optional_any(diag, "target_variable", TARGET_VARIABLE_ALIASES) {
            if field.key == "target_variable" {
                diag.warn(
                    field.path.clone(),
                    "`target_variable` is deprecated; it is kept as the simple-mode target",
                    Some("output".to_owned()),
                );
            }
            target_variable = diag.non_blank(&field);
        }
    }
    Some(AskConfig {
        content: content?,
        tone,
        exit,
        output,
        max_rounds,
        target_variable,
        ai_role,
    })
}

fn think_config(diag: &mut Diagnostics, config: &mut ObjectReader<'_>) -> Option<ThinkConfig> {
    let content = content(diag, config);
    let input_variables = config
        .optional(diag, "input_variables")
        .and_then(|field| diag.string_list(&field))
        .unwrap_or_default();
    let mut output = config
        .optional(diag, "output")
        .and_then(|field| output_fields(diag, &field))
        .unwrap_or_default();
    if diag.is_compatible() {
        legacy_output_variables(diag, config, &mut output);
    }
    Some(ThinkConfig {
        content: content?,
        input_variables,
        output,
    })
}

/// Compatible mode: `output_variables: [a, b]` → `output: [{get: a}, {get: b}]`.
fn legacy_output_variables(
    diag: &mut Diagnostics,
    config: &mut ObjectReader<'_>,
    output: &mut Vec<OutputField>,
) {
    let Some(field) = config.optional(diag, "output_variables") else {
        return;
    };
    diag.warn(
        field.path.clone(),
        format!("deprecated `{}` is converted to output[{{get}}]", field.key),
        Some("output".to_owned()),
    );
    for name in diag.string_list(&field).unwrap_or_default() {
        if !output.iter().any(|existing| existing.get == name) {
            output.push(OutputField {
                get: name,
                define: None,
                scope: None,
                sensitive: false,
            });
        }
    }
}

fn skill_config(diag: &mut Diagnostics, config: &mut ObjectReader<'_>) -> Option<SkillConfig> {
    let skill = config
        .required(diag, "skill", "a technique id")
        .and_then(|field| diag.text(&field, 1, 100));
    let input = config
        .optional(diag, "input")
        .and_then(|field| bindings(diag, &field, false))
        .unwrap_or_default();
    let output = config
        .optional(diag, "output")
        .and_then(|field| bindings(diag, &field, true))
        .unwrap_or_default();
    Some(SkillConfig {
        skill: skill?,
        input,
        output,
    })
}

/// `use_skill` mappings; only outputs choose a scope.
fn bindings(
    diag: &mut Diagnostics,
    field: &Field<'_>,
    with_scope: bool,
) -> Option<Vec<SkillBinding>> {
    object_list(diag, field, |diag, mut reader| {
        let name = reader
            .required(diag, "name", "a variable name")
            .and_then(|field| diag.text(&field, 1, 100));
        let from = reader
            .required(diag, "from", "a variable name or a text with placeholders")
            .and_then(|field| diag.string(&field));
        let scope = if with_scope {
            scope(diag, &mut reader)
        } else {
            None
        };
        reader.finish(diag, |_| None);
        Some(SkillBinding {
            name: name?,
            from: from?,
            scope,
        })
    })
}

/// Reads a list of objects with `read`. A non-mapping entry, or one `read`
/// rejects, makes the list invalid, but every entry is still read so all of
/// its problems are reported.
fn object_list<'v, T>(
    diag: &mut Diagnostics,
    field: &Field<'v>,
    mut read: impl FnMut(&mut Diagnostics, ObjectReader<'v>) -> Option<T>,
) -> Option<Vec<T>> {
    let items = diag.items(field, 0)?;
    let mut values = Vec::with_capacity(items.len());
    let mut valid = true;
    for item in &items {
        let Some(mapping) = diag.mapping(item) else {
            valid = false;
            continue;
        };
        let reader = ObjectReader::new(diag, mapping, &item.path);
        match read(diag, reader) {
            Some(value) => values.push(value),
            None => valid = false,
        }
    }
    valid.then_some(values)
}

fn scope(diag: &mut Diagnostics, reader: &mut ObjectReader<'_>) -> Option<VariableScope> {
    let field = reader.optional(diag, "scope")?;
    diag.one_of(&field, SCOPES, VariableScope::parse)
}

fn output_fields(diag: &mut Diagnostics, field: &Field<'_>) -> Option<Vec<OutputField>> {
    object_list(diag, field, |diag, mut reader| {
        let get = reader
            .required(diag, "get", "a variable name")
            .and_then(|field| diag.text(&field, 1, 100));
        let define = reader
            .optional(diag, "define")
            .and_then(|field| diag.string(&field));
        let scope = scope(diag, &mut reader);
        let sensitive = reader
            .optional(diag, "sensitive")
            .and_then(|field| diag.boolean(&field));
        reader.finish(diag, |key| {
            matches!(key, "set" | "value").then_some(KeyAdvice::NoEffect {
                reason: "output entries only read `get`, `define`, `scope` and `sensitive`",
            })
        });
        Some(OutputField {
            get: get?,
            define,
            scope,
            sensitive: sensitive.unwrap_or(false),
        })
    })
}

fn exit_criteria(diag: &mut Diagnostics, field: &Field<'_>) -> Option<ExitCriteria> {
    let mapping = diag.mapping(field)?;
    let mut reader = ObjectReader::new(diag, mapping, &field.path);
    let understanding_threshold = reader
        .optional(diag, "understanding_threshold")
        .and_then(|field| diag.integer(&field, 0, 100));
    let has_questions = reader
        .optional(diag, "has_questions")
        .and_then(|field| diag.boolean(&field));
    let min_rounds = reader
        .optional(diag, "min_rounds")
        .and_then(|field| diag.integer(&field, 1, u32::MAX));
    let custom_conditions = reader
        .optional(diag, "custom_conditions")
        .and_then(|field| custom_conditions(diag, &field))
        .unwrap_or_default();
    reader.finish(diag, |_| None);
    Some(ExitCriteria {
        understanding_threshold,
        has_questions,
        min_rounds,
        custom_conditions,
    })
}

fn custom_conditions(diag: &mut Diagnostics, field: &Field<'_>) -> Option<Vec<CustomCondition>> {
    const OPERATOR_SPELLINGS: [&str; 7] = ["==", "!=", ">", "<", ">=", "<=", "contains"];
    object_list(diag, field, |diag, mut reader| {
        let variable = reader
            .required(diag, "variable", "a variable name")
            .and_then(|field| diag.non_blank(&field));
        let operator = reader
            .required(diag, "operator", OPERATORS)
            .and_then(|field| {
                diag.one_of(&field, OPERATORS, |text| {
                    OPERATOR_SPELLINGS.contains(&text).then(|| text.to_owned())
                })
            });
        // Any value is fine here, null included: it is compared, not read.
        let value = match reader.raw("value") {
            Some(field) => json_value(diag, &field),
            None => {
                diag.missing(reader.path(), "value", "the value to compare with");
                None
            }
        };
        reader.finish(diag, |_| None);
        Some(CustomCondition {
            variable: variable?,
            operator: operator?,
            value: value?,
        })
    })
}

fn json_value(diag: &mut Diagnostics, field: &Field<'_>) -> Option<serde_json::Value> {
    match serde_json::to_value(field.value) {
        Ok(value) => Some(value),
        Err(error) => {
            diag.report(
                Issue::new(
                    field.path.clone(),
                    ValidationErrorType::TypeError,
                    format!("`{}` cannot be represented as JSON: {error}", field.key),
                )
                .expected("a JSON-compatible value")
                .actual(super::diagnostics::describe(field.value)),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartrule_domain::{LoadMode, LoadWarning, ValidationIssue};
    use serde_yaml::Value;

    fn parse(
        mode: LoadMode,
        text: &str,
    ) -> (Option<Action>, Vec<ValidationIssue>, Vec<LoadWarning>) {
        let value: Value = serde_yaml::from_str(text).unwrap();
        let mut diag = Diagnostics::new(mode);
        let mut ids = UniqueIds::new("action_id");
        let item = Field {
            key: "actions[0]".into(),
            value: &value,
            path: "t.actions[0]".into(),
        };
        let action = action(&mut diag, &item, &mut ids);
        let (issues, warnings) = diag.into_parts();
        (action, issues, warnings)
    }

    fn issue_summary(issues: &[ValidationIssue]) -> Vec<(String, ValidationErrorType)> {
        issues
            .iter()
            .map(|i| (i.path.clone(), i.error_type))
            .collect()
    }

    #[test]
    fn strict_say_reads_every_typed_field() {
        let (action, issues, warnings) = parse(
            LoadMode::Strict,
            "action_id: a\naction_type: ai_say\ncondition: never\nconfig:\n  content: hi\n  tone: calm\n  max_rounds: 3\n  require_acknowledgment: false\n  ai_role: coach\n  exit_criteria:\n    understanding_threshold: 80\n    has_questions: false\n    min_rounds: 2\n    custom_conditions:\n      - {variable: mood, operator: '==', value: calm}\n",
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert!(warnings.is_empty());
        let action = action.unwrap();
        assert_eq!(action.condition.as_deref(), Some("never"));
        let ActionKind::Say(say) = action.kind else {
            panic!("not a say: {action:?}")
        };
        assert_eq!(say.tone.as_deref(), Some("calm"));
        assert_eq!(say.max_rounds, Some(3));
        assert!(!say.require_acknowledgment);
        let criteria = say.exit_criteria.unwrap();
        assert_eq!(criteria.understanding_threshold, Some(80));
        assert_eq!(criteria.has_questions, Some(false));
        assert_eq!(criteria.min_rounds, Some(2));
        assert_eq!(
            criteria.custom_conditions[0].value,
            serde_json::json!("calm")
        );
    }

    #[test]
    fn acknowledgment_defaults_to_true_and_tone_is_not_filled() {
        for mode in [LoadMode::Strict, LoadMode::Compatible] {
            let (action, _, _) = parse(
                mode,
                "action_id: a\naction_type: ai_say\nconfig: {content: hi}\n",
            );
            let ActionKind::Say(say) = action.unwrap().kind else {
                panic!("not a say")
            };
            assert!(say.require_acknowledgment);
            assert_eq!(say.tone, None);
            assert_eq!(say.max_rounds, None);
        }
    }

    #[test]
    fn exit_criteria_ranges_and_operators_are_checked() {
        let (_, issues, _) = parse(
            LoadMode::Compatible,
            "action_id: a\naction_type: ai_say\nconfig:\n  content: hi\n  exit_criteria:\n    understanding_threshold: 101\n    min_rounds: 0\n    custom_conditions:\n      - {variable: x, operator: '=~', value: 1}\n      - {variable: x, operator: '>'}\n",
        );
        let base = "t.actions[0].config.exit_criteria";
        assert_eq!(
            issue_summary(&issues),
            vec![
                (
                    format!("{base}.understanding_threshold"),
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    format!("{base}.min_rounds"),
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    format!("{base}.custom_conditions[0].operator"),
                    ValidationErrorType::EnumValueInvalid
                ),
                (
                    format!("{base}.custom_conditions[1].value"),
                    ValidationErrorType::RequiredFieldMissing
                ),
            ]
        );
    }

    #[test]
    fn strict_ask_rejects_target_variable_with_output_suggestion() {
        let (_, issues, _) = parse(
            LoadMode::Strict,
            "action_id: a\naction_type: ai_ask\nconfig: {content: q, target_variable: name}\n",
        );
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "t.actions[0].config.target_variable");
        assert_eq!(issues[0].error_type, ValidationErrorType::StructureError);
        assert!(issues[0]
            .suggestion
            .as_deref()
            .unwrap()
            .contains("`output`"));
    }

    #[test]
    fn compatible_ask_keeps_target_variable_from_any_alias() {
        for key in [
            "target_variable",
            "targetVariable",
            "extract_to",
            "extractTo",
        ] {
            let text = format!("action_id: a\naction_type: ai_ask\nconfig: {{question_template: q, {key}: name}}\n");
            let (action, issues, warnings) = parse(LoadMode::Compatible, &text);
            assert!(issues.is_empty(), "{key}: {issues:?}");
            let ActionKind::Ask(ask) = action.unwrap().kind else {
                panic!("not an ask")
            };
            assert_eq!(ask.content, "q");
            assert_eq!(ask.target_variable.as_deref(), Some("name"), "{key}");
            assert!(!ask.is_multi_round());
            assert!(warnings
                .iter()
                .any(|w| w.path == format!("t.actions[0].config.{key}")));
        }
    }

    #[test]
    fn output_fields_may_be_marked_sensitive() {
        let (action, issues, _) = parse(
            LoadMode::Strict,
            "action_id: a\naction_type: ai_ask\nconfig: {content: q, output: [{get: ssn, sensitive: true}, {get: name}]}\n",
        );
        assert!(issues.is_empty(), "{issues:?}");
        let ActionKind::Ask(ask) = action.unwrap().kind else {
            panic!("not an ask")
        };
        let flags: Vec<_> = ask
            .output
            .iter()
            .map(|o| (o.get.as_str(), o.sensitive))
            .collect();
        assert_eq!(flags, vec![("ssn", true), ("name", false)]);
        let (_, issues, _) = parse(
            LoadMode::Strict,
            "action_id: a\naction_type: ai_ask\nconfig: {content: q, output: [{get: ssn, sensitive: maybe}]}\n",
        );
        assert_eq!(issues.len(), 1, "{issues:?}");
    }

    #[test]
    fn compatible_envelope_keys_are_overlaid_by_config() {
        let (action, issues, warnings) = parse(
            LoadMode::Compatible,
            "action_id: a\naction_type: ai_ask\nmax_rounds: 9\ntone: loud\nconfig: {content: q, max_rounds: 2, output: [{get: x}]}\n",
        );
        assert!(issues.is_empty(), "{issues:?}");
        let ActionKind::Ask(ask) = action.unwrap().kind else {
            panic!("not an ask")
        };
        assert_eq!(ask.max_rounds, Some(2));
        assert_eq!(ask.tone.as_deref(), Some("loud"));
        let replacements: Vec<_> = warnings
            .iter()
            .map(|w| (w.path.as_str(), w.replacement.as_deref()))
            .collect();
        assert_eq!(
            replacements,
            vec![
                ("t.actions[0].max_rounds", Some("config.max_rounds")),
                ("t.actions[0].tone", Some("config.tone")),
            ]
        );
    }

    #[test]
    fn compatible_reads_a_config_less_action_from_its_envelope() {
        let (action, issues, _) = parse(
            LoadMode::Compatible,
            "action_id: a\naction_type: ai_say\ncontent: hello\nrequire_acknowledgment: false\n",
        );
        assert!(issues.is_empty(), "{issues:?}");
        let ActionKind::Say(say) = action.unwrap().kind else {
            panic!("not a say")
        };
        assert_eq!(say.content, "hello");
        assert!(!say.require_acknowledgment);
    }

    #[test]
    fn strict_envelope_keys_suggest_moving_into_config() {
        let (_, issues, _) = parse(
            LoadMode::Strict,
            "action_id: a\naction_type: ai_say\nmax_rounds: 2\nconfig: {content: hi}\n",
        );
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "t.actions[0].max_rounds");
        assert_eq!(
            issues[0].suggestion.as_deref(),
            Some("move `max_rounds` into `config`")
        );
    }

    #[test]
    fn strict_requires_config() {
        let (_, issues, _) = parse(LoadMode::Strict, "action_id: a\naction_type: ai_say\n");
        assert_eq!(
            issue_summary(&issues),
            vec![
                (
                    "t.actions[0].config".to_owned(),
                    ValidationErrorType::RequiredFieldMissing
                ),
                (
                    "t.actions[0].config.content".to_owned(),
                    ValidationErrorType::RequiredFieldMissing
                ),
            ]
        );
    }

    #[test]
    fn compatible_think_converts_output_variables_and_prompt_template() {
        let (action, issues, warnings) = parse(
            LoadMode::Compatible,
            "action_id: a\naction_type: ai_think\nconfig:\n  think_goal: g\n  prompt_template: p\n  input_variables: [x]\n  output: [{get: a}]\n  output_variables: [a, b]\n",
        );
        assert!(issues.is_empty(), "{issues:?}");
        let ActionKind::Think(think) = action.unwrap().kind else {
            panic!("not a think")
        };
        assert_eq!(think.content, "p");
        assert_eq!(think.input_variables, vec!["x".to_owned()]);
        let gets: Vec<_> = think.output.iter().map(|o| o.get.as_str()).collect();
        assert_eq!(gets, vec!["a", "b"]);
        let paths: Vec<_> = warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "t.actions[0].config.prompt_template",
                "t.actions[0].config.output_variables",
                "t.actions[0].config.think_goal",
            ]
        );
    }

    #[test]
    fn compatible_drops_runtime_noise_with_warnings() {
        let (action, issues, warnings) = parse(
            LoadMode::Compatible,
            "action_id: a\naction_type: ai_ask\nconfig:\n  content: q\n  say_goal: g\n  extraction_prompt: e\n  required: true\n  input_variables: [x]\n  frobnicate: 1\n  output: [{get: a, set: 1}]\n",
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert!(action.is_some());
        let found: Vec<_> = warnings
            .iter()
            .map(|w| {
                (
                    w.path.trim_start_matches("t.actions[0].config."),
                    w.replacement.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("output[0].set", None),
                ("say_goal", None),
                ("extraction_prompt", Some("output[].define")),
                ("required", None),
                ("input_variables", None),
                ("frobnicate", None),
            ]
        );
    }

    #[test]
    fn skill_bindings_are_closed_and_scoped() {
        let (action, issues, _) = parse(
            LoadMode::Strict,
            "action_id: a\naction_type: use_skill\nconfig:\n  skill: socratic\n  input: [{name: belief, from: '${thought}'}]\n  output: [{name: reframed, from: reframed_belief, scope: topic}]\n",
        );
        assert!(issues.is_empty(), "{issues:?}");
        let ActionKind::UseSkill(skill) = action.unwrap().kind else {
            panic!("not a skill")
        };
        assert_eq!(skill.skill, "socratic");
        assert_eq!(skill.input[0].from, "${thought}");
        assert_eq!(skill.output[0].scope, Some(VariableScope::Topic));

        let (_, issues, _) = parse(
            LoadMode::Strict,
            "action_id: a\naction_type: use_skill\nconfig:\n  input: [{name: b, from: c, scope: topic}]\n  output: [{name: r, scope: planet}]\n",
        );
        assert_eq!(
            issue_summary(&issues),
            vec![
                (
                    "t.actions[0].config.skill".to_owned(),
                    ValidationErrorType::RequiredFieldMissing
                ),
                (
                    "t.actions[0].config.input[0].scope".to_owned(),
                    ValidationErrorType::StructureError
                ),
                (
                    "t.actions[0].config.output[0].from".to_owned(),
                    ValidationErrorType::RequiredFieldMissing
                ),
                (
                    "t.actions[0].config.output[0].scope".to_owned(),
                    ValidationErrorType::EnumValueInvalid
                ),
            ]
        );
    }

    #[test]
    fn unknown_action_type_is_an_enum_error() {
        let (action, issues, _) = parse(
            LoadMode::Compatible,
            "action_id: a\naction_type: ai_dance\nconfig: {content: x}\n",
        );
        assert!(action.is_none());
        assert_eq!(
            issue_summary(&issues),
            vec![(
                "t.actions[0].action_type".to_owned(),
                ValidationErrorType::EnumValueInvalid
            )]
        );
        assert_eq!(issues[0].actual.as_deref(), Some("ai_dance"));
    }

    #[test]
    fn blank_content_and_wrong_types_are_reported() {
        let (_, issues, _) = parse(
            LoadMode::Strict,
            "action_id: ''\naction_type: ai_ask\nconfig: {content: '  ', max_rounds: '3', output: {get: x}}\n",
        );
        assert_eq!(
            issue_summary(&issues),
            vec![
                (
                    "t.actions[0].action_id".to_owned(),
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    "t.actions[0].config.content".to_owned(),
                    ValidationErrorType::ConstraintViolation
                ),
                (
                    "t.actions[0].config.output".to_owned(),
                    ValidationErrorType::TypeError
                ),
                (
                    "t.actions[0].config.max_rounds".to_owned(),
                    ValidationErrorType::TypeError
                ),
            ]
        );
    }

    #[test]
    fn every_deprecated_key_has_strict_advice() {
        for (action_type, key) in [
            (ActionType::AiSay, "content_template"),
            (ActionType::AiAsk, "question_template"),
            (ActionType::AiAsk, "target_variable"),
            (ActionType::AiAsk, "extraction_prompt"),
            (ActionType::AiAsk, "required"),
            (ActionType::AiThink, "prompt_template"),
            (ActionType::AiThink, "output_variables"),
            (ActionType::AiSay, "say_goal"),
            (ActionType::AiThink, "think_goal"),
        ] {
            assert!(config_key_advice(action_type, key).is_some(), "{key}");
        }
        assert_eq!(
            config_key_advice(ActionType::AiThink, "input_variables"),
            None
        );
        assert!(is_config_key(None, "skill"));
        assert!(!is_config_key(Some(ActionType::AiSay), "skill"));
    }
}
