//! Sensitive variables: a script marks an output field `sensitive: true`,
//! and the values such variables hold never leave the engine through logs,
//! span attributes, metric labels or `debugInfo`, and are masked in exports
//! unless the administrator asks for them.
//!
//! Masking works on names where the data is structured (variable stores,
//! snapshots) and on the values' text everywhere else (prompts, replies,
//! messages): a value found inside a text is replaced by [`SENSITIVE_MASK`].

use crate::script::{Action, ActionKind, ScriptDocument, SessionScript, TechniqueScript, Topic};
use crate::variables::{VariableMap, VariableStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What replaces a sensitive value.
pub const SENSITIVE_MASK: &str = "[sensitive]";

/// Names of the sensitive variables of a session script and of the
/// techniques it may run: the output fields marked `sensitive: true`, and the
/// caller variables a `use_skill` output binding fills from a sensitive
/// technique variable.
#[must_use]
pub fn sensitive_variable_names<'a>(
    script: &SessionScript,
    techniques: impl IntoIterator<Item = &'a TechniqueScript>,
) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let technique_names: BTreeMap<&str, BTreeSet<String>> = techniques
        .into_iter()
        .map(|t| {
            let mut own = BTreeSet::new();
            collect_topic(&t.topic, &mut own);
            (t.technique_id.as_str(), own)
        })
        .collect();
    for own in technique_names.values() {
        names.extend(own.iter().cloned());
    }
    for topic in script.phases.iter().flat_map(|p| p.topics.iter()) {
        collect_topic(topic, &mut names);
        for action in &topic.actions {
            if let ActionKind::UseSkill(skill) = &action.kind {
                let Some(own) = technique_names.get(skill.skill.as_str()) else {
                    continue;
                };
                for binding in &skill.output {
                    if own.contains(&binding.from) {
                        names.insert(binding.name.clone());
                    }
                }
            }
        }
    }
    names
}

/// Names of the sensitive variables a stored document declares itself
/// (without the techniques a session script may run).
#[must_use]
pub fn declared_sensitive_names(document: &ScriptDocument) -> BTreeSet<String> {
    match document {
        ScriptDocument::Session(script) => sensitive_variable_names(script, []),
        ScriptDocument::Technique(technique) => {
            let mut names = BTreeSet::new();
            collect_topic(&technique.topic, &mut names);
            names
        }
    }
}

/// Whether `action` writes a sensitive variable: its LLM calls see the
/// user's words that hold the value before the value is known.
#[must_use]
pub fn action_extracts_sensitive(action: &Action) -> bool {
    let mut names = BTreeSet::new();
    collect_action(action, &mut names);
    !names.is_empty()
}

fn collect_topic(topic: &Topic, names: &mut BTreeSet<String>) {
    for action in &topic.actions {
        collect_action(action, names);
    }
}

fn collect_action(action: &Action, names: &mut BTreeSet<String>) {
    let fields = match &action.kind {
        ActionKind::Ask(ask) => &ask.output,
        ActionKind::Think(think) => &think.output,
        ActionKind::Say(_) | ActionKind::UseSkill(_) => return,
    };
    names.extend(
        fields
            .iter()
            .filter(|f| f.sensitive)
            .map(|f| f.get.trim().to_owned())
            .filter(|name| !name.is_empty()),
    );
}

/// The texts of sensitive values, for masking them wherever they appear.
/// Built from the variables of a session; carried on an LLM request so the
/// LLM adapter's telemetry never records them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SensitiveValues {
    /// Longest first, so a value containing another is masked whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    texts: Vec<String>,
    /// The whole text must be withheld: it may hold a sensitive value that is
    /// not known yet (a call that extracts one from the user's words).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    withhold_all: bool,
}

impl SensitiveValues {
    /// No sensitive value: masking changes nothing.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Masks every text of `values` (strings and numbers, inside arrays and
    /// objects too; `true`, `false` and `null` cannot be told apart from
    /// ordinary words and are left alone).
    #[must_use]
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut texts = BTreeSet::new();
        for value in values {
            collect_texts(value, &mut texts);
        }
        let mut texts: Vec<String> = texts.into_iter().collect();
        texts.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Self {
            texts,
            withhold_all: false,
        }
    }

    /// The values of the variables named in `names`, in every scope of
    /// `store`.
    #[must_use]
    pub fn of_store(store: &VariableStore, names: &BTreeSet<String>) -> Self {
        Self::from_values(store_values(store, names))
    }

    /// Also withholds every text whole (see [`SensitiveValues::withholds_all`]).
    #[must_use]
    pub fn withholding_all(mut self, withhold: bool) -> Self {
        self.withhold_all |= withhold;
        self
    }

    /// Adds the texts of `other`.
    pub fn extend(&mut self, other: &SensitiveValues) {
        let mut texts: BTreeSet<String> = self.texts.drain(..).collect();
        texts.extend(other.texts.iter().cloned());
        self.texts = texts.into_iter().collect();
        self.texts
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.withhold_all |= other.withhold_all;
    }

    /// Whether every text is withheld whole, not only the known values.
    #[must_use]
    pub fn withholds_all(&self) -> bool {
        self.withhold_all
    }

    /// Whether masking changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty() && !self.withhold_all
    }

    /// `text` with every sensitive value replaced by [`SENSITIVE_MASK`], or
    /// only the mask when everything is withheld.
    #[must_use]
    pub fn mask(&self, text: &str) -> String {
        if self.withhold_all {
            return SENSITIVE_MASK.to_owned();
        }
        let mut out = text.to_owned();
        for value in &self.texts {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), SENSITIVE_MASK);
            }
        }
        out
    }

    /// Masks every string inside `value` in place (object keys stay).
    pub fn mask_json(&self, value: &mut Value) {
        match value {
            Value::String(text) => {
                let masked = self.mask(text);
                if masked != *text {
                    *text = masked;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.mask_json(item)),
            Value::Object(map) => map.values_mut().for_each(|item| self.mask_json(item)),
            Value::Number(_) if !self.texts.is_empty() || self.withhold_all => {
                let text = value.to_string();
                let masked = self.mask(&text);
                if masked != text {
                    *value = Value::String(masked);
                }
            }
            _ => {}
        }
    }
}

fn collect_texts(value: &Value, texts: &mut BTreeSet<String>) {
    match value {
        Value::String(text) if !text.is_empty() => {
            texts.insert(text.clone());
        }
        Value::Number(number) => {
            texts.insert(number.to_string());
        }
        Value::Array(items) => items.iter().for_each(|item| collect_texts(item, texts)),
        Value::Object(map) => map.values().for_each(|item| collect_texts(item, texts)),
        _ => {}
    }
}

fn maps(store: &VariableStore) -> impl Iterator<Item = &VariableMap> {
    [&store.global, &store.session]
        .into_iter()
        .chain(store.phase.values())
        .chain(store.topic.values())
}

fn store_values<'a>(
    store: &'a VariableStore,
    names: &'a BTreeSet<String>,
) -> impl Iterator<Item = &'a Value> {
    maps(store)
        .flat_map(|map| map.iter())
        .filter(|(name, _)| names.contains(name.as_str()))
        .map(|(_, var)| &var.value)
}

/// Replaces the value of every variable named in `names`, in every scope of
/// `store`, with [`SENSITIVE_MASK`] (its recorded type stays).
pub fn mask_store(store: &mut VariableStore, names: &BTreeSet<String>) {
    let maps = [&mut store.global, &mut store.session]
        .into_iter()
        .chain(store.phase.values_mut())
        .chain(store.topic.values_mut());
    for map in maps {
        for (name, var) in map.iter_mut() {
            if names.contains(name.as_str()) {
                var.value = Value::String(SENSITIVE_MASK.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::fixtures::{one_topic_script, topic};
    use crate::script::{AskConfig, OutputField, SkillBinding, SkillConfig, ThinkConfig};
    use crate::variables::{VariableScope, VariableValue};
    use chrono::Utc;
    use serde_json::json;

    fn field(get: &str, sensitive: bool) -> OutputField {
        OutputField {
            get: get.into(),
            define: None,
            scope: None,
            sensitive,
        }
    }

    fn ask(id: &str, output: Vec<OutputField>) -> Action {
        Action {
            action_id: id.into(),
            condition: None,
            kind: ActionKind::Ask(AskConfig {
                content: "q".into(),
                tone: None,
                exit: None,
                output,
                max_rounds: None,
                target_variable: None,
                ai_role: None,
            }),
        }
    }

    #[test]
    fn names_come_from_sensitive_fields_and_skill_bindings() {
        let technique = TechniqueScript {
            technique_id: "tech".into(),
            name: None,
            input_parameters: vec![],
            output_variables: vec!["secret".into(), "plain".into()],
            topic: topic(
                "tt",
                vec![Action {
                    action_id: "think".into(),
                    condition: None,
                    kind: ActionKind::Think(ThinkConfig {
                        content: "c".into(),
                        input_variables: vec![],
                        output: vec![field("secret", true), field("plain", false)],
                    }),
                }],
            ),
        };
        let session = one_topic_script(
            "s",
            vec![
                ask("a1", vec![field("ssn", true), field("name", false)]),
                Action {
                    action_id: "skill".into(),
                    condition: None,
                    kind: ActionKind::UseSkill(SkillConfig {
                        skill: "tech".into(),
                        input: vec![],
                        output: vec![
                            SkillBinding {
                                name: "caller_secret".into(),
                                from: "secret".into(),
                                scope: None,
                            },
                            SkillBinding {
                                name: "caller_plain".into(),
                                from: "plain".into(),
                                scope: None,
                            },
                        ],
                    }),
                },
            ],
        );
        let names = sensitive_variable_names(&session, [&technique]);
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec!["caller_secret", "secret", "ssn"]
        );
        let declared = declared_sensitive_names(&ScriptDocument::Session(session.clone()));
        assert_eq!(declared.into_iter().collect::<Vec<_>>(), vec!["ssn"]);
        assert!(action_extracts_sensitive(
            &session.phases[0].topics[0].actions[0]
        ));
        assert!(!action_extracts_sensitive(
            &session.phases[0].topics[0].actions[1]
        ));
    }

    #[test]
    fn known_values_are_masked_longest_first_in_text_and_json() {
        let values =
            SensitiveValues::from_values(&[json!("123-45"), json!("123-45-6789"), json!(42)]);
        assert_eq!(
            values.mask("id 123-45-6789, short 123-45, age 42"),
            "id [sensitive], short [sensitive], age [sensitive]"
        );
        let mut doc = json!({"a": ["x 123-45-6789"], "n": 42, "keep": true});
        values.mask_json(&mut doc);
        assert_eq!(
            doc,
            json!({"a": ["x [sensitive]"], "n": "[sensitive]", "keep": true})
        );
        assert!(SensitiveValues::none().is_empty());
        assert_eq!(SensitiveValues::none().mask("plain"), "plain");
    }

    #[test]
    fn withholding_replaces_the_whole_text() {
        let values = SensitiveValues::none().withholding_all(true);
        assert!(values.withholds_all());
        assert_eq!(values.mask("anything at all"), SENSITIVE_MASK);
        let mut merged = SensitiveValues::from_values(&[json!("abc")]);
        merged.extend(&values);
        assert_eq!(merged.mask("abc"), SENSITIVE_MASK);
    }

    #[test]
    fn stores_are_read_and_masked_by_name_in_every_scope() {
        let mut store = VariableStore::default();
        let value = |v: Value| VariableValue::new(v, "test", VariableScope::Session, Utc::now());
        store.set(
            "ssn",
            VariableScope::Topic,
            Some("t"),
            value(json!("999-88")),
        );
        store.set("name", VariableScope::Session, None, value(json!("Ann")));
        let names: BTreeSet<String> = ["ssn".to_owned()].into();
        let values = SensitiveValues::of_store(&store, &names);
        assert_eq!(values.mask("999-88 Ann"), "[sensitive] Ann");
        mask_store(&mut store, &names);
        assert_eq!(store.topic["t"]["ssn"].value, json!(SENSITIVE_MASK));
        assert_eq!(store.session["name"].value, json!("Ann"));
    }
}
