//! Session → phases → topics, and technique scripts.

use super::actions::action;
use super::diagnostics::{Diagnostics, Field, Issue, UniqueIds};
use super::object::ObjectReader;
use heartrule_domain::{
    Phase, RiskLevel, ScriptSafety, SessionScript, TechniqueParameter, TechniqueScript, Topic,
    ValidationErrorType,
};
use serde_yaml::{Mapping, Value};

fn optional_text(
    diag: &mut Diagnostics,
    reader: &mut ObjectReader<'_>,
    name: &'static str,
    max: usize,
) -> Option<String> {
    let field = reader.optional(diag, name)?;
    diag.text(&field, 0, max)
}

/// An id of 1–100 characters, unique among its siblings.
fn unique_id(
    diag: &mut Diagnostics,
    reader: &mut ObjectReader<'_>,
    name: &'static str,
    ids: &mut UniqueIds,
) -> Option<String> {
    let field = reader.required(diag, name, "a string of 1 to 100 characters")?;
    let id = diag.text(&field, 1, 100)?;
    ids.register(diag, &id, &field.path);
    Some(id)
}

fn is_identifier(text: &str) -> bool {
    text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `session` root value.
pub(super) fn session(diag: &mut Diagnostics, field: &Field<'_>) -> Option<SessionScript> {
    let mapping = diag.mapping(field)?;
    let mut reader = ObjectReader::new(diag, mapping, &field.path);
    let session_id = reader
        .required(diag, "session_id", "a string of 1 to 100 characters")
        .and_then(|field| {
            let id = diag.text(&field, 1, 100)?;
            if !is_identifier(&id) {
                diag.report(
                    Issue::new(
                        field.path.clone(),
                        ValidationErrorType::ConstraintViolation,
                        "`session_id` may only contain letters, digits and underscores",
                    )
                    .expected("a string matching ^[a-zA-Z0-9_]+$")
                    .actual(id)
                    .suggestion("replace other characters with `_`"),
                );
                return None;
            }
            Some(id)
        });
    let session_name = optional_text(diag, &mut reader, "session_name", 200);
    let description = optional_text(diag, &mut reader, "description", 1000);
    let version = optional_text(diag, &mut reader, "version", 50);
    let template_scheme = reader.optional(diag, "template_scheme").and_then(|field| {
        let scheme = diag.text(&field, 1, 100)?;
        // The scheme names a template directory: keep it a plain name.
        if !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            diag.report(
                Issue::new(
                    field.path.clone(),
                    ValidationErrorType::ConstraintViolation,
                    "`template_scheme` may only contain letters, digits, `_` and `-`",
                )
                .expected("a string matching ^[a-zA-Z0-9_-]+$")
                .actual(scheme),
            );
            return None;
        }
        Some(scheme)
    });
    let safety = reader
        .optional(diag, "safety")
        .and_then(|field| script_safety(diag, &field));
    let phases = reader
        .required(diag, "phases", "a list of at least 1 phase")
        .and_then(|field| {
            let items = diag.items(&field, 1)?;
            let mut ids = UniqueIds::new("phase_id");
            collect_all(items.iter().map(|item| phase(diag, item, &mut ids)))
        });
    reader.finish(diag, |_| None);
    Some(SessionScript {
        session_id: session_id?,
        session_name,
        description,
        version,
        template_scheme,
        safety,
        phases: phases?,
    })
}

const RISK_LEVELS: &str = "`low`, `medium`, `high`, `imminent`";

/// The optional `safety` section: the script's own crisis reply, threshold
/// and whether the script continues after the user acknowledges the reply.
fn script_safety(diag: &mut Diagnostics, field: &Field<'_>) -> Option<ScriptSafety> {
    let mapping = diag.mapping(field)?;
    let mut reader = ObjectReader::new(diag, mapping, &field.path);
    let response = reader
        .optional(diag, "response")
        .and_then(|field| diag.text(&field, 1, 2000));
    let threshold = reader.optional(diag, "threshold").and_then(|field| {
        diag.one_of(&field, RISK_LEVELS, |text| {
            RiskLevel::parse(text).filter(|level| *level != RiskLevel::None)
        })
    });
    let continue_after_acknowledgement = reader
        .optional(diag, "continue_after_acknowledgement")
        .and_then(|field| diag.boolean(&field))
        .unwrap_or(false);
    reader.finish(diag, |_| None);
    Some(ScriptSafety {
        response,
        threshold,
        continue_after_acknowledgement,
    })
}

/// All items, or `None` if any failed (each failure recorded an issue).
fn collect_all<T>(items: impl Iterator<Item = Option<T>>) -> Option<Vec<T>> {
    let mut collected = Vec::new();
    let mut valid = true;
    for item in items {
        match item {
            Some(item) => collected.push(item),
            None => valid = false,
        }
    }
    valid.then_some(collected)
}

fn phase(diag: &mut Diagnostics, item: &Field<'_>, ids: &mut UniqueIds) -> Option<Phase> {
    let mapping = diag.mapping(item)?;
    let mut reader = ObjectReader::new(diag, mapping, &item.path);
    let phase_id = unique_id(diag, &mut reader, "phase_id", ids);
    let phase_name = optional_text(diag, &mut reader, "phase_name", 200);
    let phase_goal = optional_text(diag, &mut reader, "phase_goal", 500);
    let description = optional_text(diag, &mut reader, "description", 1000);
    if let Some(field) = reader.optional(diag, "entry_condition") {
        // Part of the schema but never evaluated, and the typed model has no
        // place for it: accept it and say that it is dropped.
        if diag.mapping(&field).is_some() {
            diag.warn(
                field.path,
                "`entry_condition` is never evaluated; it is dropped",
                None,
            );
        }
    }
    let topics = reader
        .required(diag, "topics", "a list of at least 1 topic")
        .and_then(|field| {
            let items = diag.items(&field, 1)?;
            let mut ids = UniqueIds::new("topic_id");
            collect_all(items.iter().map(|item| topic(diag, item, &mut ids)))
        });
    reader.finish(diag, |_| None);
    Some(Phase {
        phase_id: phase_id?,
        phase_name,
        phase_goal,
        description,
        topics: topics?,
    })
}

fn topic(diag: &mut Diagnostics, item: &Field<'_>, ids: &mut UniqueIds) -> Option<Topic> {
    let mapping = diag.mapping(item)?;
    topic_from(diag, mapping, &item.path, ids)
}

fn topic_from(
    diag: &mut Diagnostics,
    mapping: &Mapping,
    path: &str,
    ids: &mut UniqueIds,
) -> Option<Topic> {
    let mut reader = ObjectReader::new(diag, mapping, path);
    let topic_id = unique_id(diag, &mut reader, "topic_id", ids);
    let topic_name = optional_text(diag, &mut reader, "topic_name", 200);
    let topic_goal = optional_text(diag, &mut reader, "topic_goal", 500);
    let description = optional_text(diag, &mut reader, "description", 1000);
    let strategy = optional_text(diag, &mut reader, "strategy", 2000);
    let actions = reader
        .required(diag, "actions", "a list of at least 1 action")
        .and_then(|field| {
            let items = diag.items(&field, 1)?;
            let mut ids = UniqueIds::new("action_id");
            collect_all(items.iter().map(|item| action(diag, item, &mut ids)))
        });
    reader.finish(diag, |_| None);
    Some(Topic {
        topic_id: topic_id?,
        topic_name,
        topic_goal,
        description,
        strategy,
        actions: actions?,
    })
}

/// A technique script: the root mapping holds `topic` and the technique's
/// fields; other root keys (`version`, `author`, …) are ignored.
pub(super) fn technique(diag: &mut Diagnostics, root: &Mapping) -> Option<TechniqueScript> {
    let mut reader = ObjectReader::new(diag, root, "");
    let technique_id = reader.optional(diag, "technique_id");
    let name = optional_text(diag, &mut reader, "name", 200);
    let input_parameters = reader
        .optional(diag, "input_parameters")
        .and_then(|field| input_parameters(diag, &field))
        .unwrap_or_default();
    let output_variables = reader
        .optional(diag, "output_variables")
        .and_then(|field| diag.string_list(&field))
        .unwrap_or_default();
    let topic = reader.take("topic").and_then(|field| {
        let mapping = diag.mapping(&field)?;
        topic_from(diag, mapping, &field.path, &mut UniqueIds::new("topic_id"))
    });
    // The root is open: no `finish`.

    let technique_id = match technique_id {
        Some(field) => diag.text(&field, 1, 100),
        None if diag.is_compatible() => {
            let derived = topic.as_ref().map(|topic| topic.topic_id.clone());
            if let Some(id) = &derived {
                diag.warn(
                    "technique_id",
                    format!("`technique_id` is missing; the topic id `{id}` is used"),
                    Some("technique_id".to_owned()),
                );
            }
            derived
        }
        None => {
            diag.missing(
                "",
                "technique_id",
                "the id `use_skill` calls the technique by",
            );
            None
        }
    };
    Some(TechniqueScript {
        technique_id: technique_id?,
        name,
        input_parameters,
        output_variables,
        topic: topic?,
    })
}

fn input_parameters(diag: &mut Diagnostics, field: &Field<'_>) -> Option<Vec<TechniqueParameter>> {
    let items = diag.items(field, 0)?;
    let mut names = UniqueIds::new("input parameter name");
    let parameters = items.iter().map(|item| {
        let mapping = diag.mapping(item)?;
        let mut reader = ObjectReader::new(diag, mapping, &item.path);
        let name = reader
            .required(diag, "name", "a parameter name")
            .and_then(|field| {
                let name = diag.text(&field, 1, 100)?;
                names.register(diag, &name, &field.path);
                Some(name)
            });
        let description = optional_text(diag, &mut reader, "description", 1000);
        let required = reader
            .optional(diag, "required")
            .and_then(|field| diag.boolean(&field));
        reader.finish(diag, |_| None);
        Some(TechniqueParameter {
            name: name?,
            description,
            required: required.unwrap_or(false),
        })
    });
    let parameters: Vec<_> = parameters.collect();
    collect_all(parameters.into_iter())
}

/// Whether the root mapping has `key`.
pub(super) fn has_root_key(root: &Mapping, key: &str) -> bool {
    root.contains_key(Value::from(key))
}
