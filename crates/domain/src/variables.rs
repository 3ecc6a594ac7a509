//! The four-scope variable store: global, session, phase and topic.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariableScope {
    Global,
    Session,
    Phase,
    Topic,
}

impl VariableScope {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Session => "session",
            Self::Phase => "phase",
            Self::Topic => "topic",
        }
    }

    /// Parses the lowercase spelling used in scripts and the database.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "global" => Some(Self::Global),
            "session" => Some(Self::Session),
            "phase" => Some(Self::Phase),
            "topic" => Some(Self::Topic),
            _ => None,
        }
    }
}

/// JSON type of a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Null,
    String,
    Number,
    Boolean,
    Array,
    Object,
}

impl ValueType {
    #[must_use]
    pub fn of(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::String(_) => Self::String,
            Value::Number(_) => Self::Number,
            Value::Bool(_) => Self::Boolean,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Object,
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::String => "string",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Array => "array",
            Self::Object => "object",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "null" => Some(Self::Null),
            "string" => Some(Self::String),
            "number" => Some(Self::Number),
            "boolean" => Some(Self::Boolean),
            "array" => Some(Self::Array),
            "object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// One stored variable with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariableValue {
    pub value: Value,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// The action id that wrote it, or `initial`, `global`, `migrated`, `skill:<id>`.
    pub source: String,
    pub scope: VariableScope,
    pub last_updated: DateTime<Utc>,
}

impl VariableValue {
    #[must_use]
    pub fn new(
        value: Value,
        source: impl Into<String>,
        scope: VariableScope,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            value_type: ValueType::of(&value),
            value,
            source: source.into(),
            scope,
            last_updated: at,
        }
    }
}

pub type VariableMap = BTreeMap<String, VariableValue>;

/// Variables of one session in four scopes. Lookup order: topic → phase →
/// session → global.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VariableStore {
    #[serde(default)]
    pub global: VariableMap,
    #[serde(default)]
    pub session: VariableMap,
    /// Keyed by phase id.
    #[serde(default)]
    pub phase: BTreeMap<String, VariableMap>,
    /// Keyed by topic id.
    #[serde(default)]
    pub topic: BTreeMap<String, VariableMap>,
}

impl VariableStore {
    /// Resolves `name` from the innermost scope outwards.
    #[must_use]
    pub fn lookup(
        &self,
        name: &str,
        phase_id: Option<&str>,
        topic_id: Option<&str>,
    ) -> Option<&VariableValue> {
        topic_id
            .and_then(|t| self.topic.get(t))
            .and_then(|m| m.get(name))
            .or_else(|| {
                phase_id
                    .and_then(|p| self.phase.get(p))
                    .and_then(|m| m.get(name))
            })
            .or_else(|| self.session.get(name))
            .or_else(|| self.global.get(name))
    }

    /// Writes a value into `scope`. Phase and topic scopes need their key;
    /// without it the value goes to the session scope so it is never lost.
    /// Returns the scope and scope key actually written.
    pub fn set(
        &mut self,
        name: &str,
        scope: VariableScope,
        scope_key: Option<&str>,
        value: VariableValue,
    ) -> (VariableScope, Option<String>) {
        match (scope, scope_key) {
            (VariableScope::Topic, Some(key)) => {
                self.topic
                    .entry(key.to_owned())
                    .or_default()
                    .insert(name.to_owned(), value);
                (VariableScope::Topic, Some(key.to_owned()))
            }
            (VariableScope::Phase, Some(key)) => {
                self.phase
                    .entry(key.to_owned())
                    .or_default()
                    .insert(name.to_owned(), value);
                (VariableScope::Phase, Some(key.to_owned()))
            }
            (VariableScope::Global, _) => {
                self.global.insert(name.to_owned(), value);
                (VariableScope::Global, None)
            }
            _ => {
                let value = VariableValue {
                    scope: VariableScope::Session,
                    ..value
                };
                self.session.insert(name.to_owned(), value);
                (VariableScope::Session, None)
            }
        }
    }

    /// The flat compatibility map (`variables` in API responses): globals,
    /// then session, phase and topic values, later scopes overriding earlier.
    #[must_use]
    pub fn flat(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        let scoped = self
            .phase
            .values()
            .chain(self.topic.values())
            .flat_map(|m| m.iter());
        for (name, var) in self.global.iter().chain(self.session.iter()).chain(scoped) {
            out.insert(name.clone(), var.value.clone());
        }
        out
    }

    /// True when no scope holds any variable.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.global.is_empty()
            && self.session.is_empty()
            && self.phase.values().all(BTreeMap::is_empty)
            && self.topic.values().all(BTreeMap::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(value: Value, scope: VariableScope) -> VariableValue {
        VariableValue::new(value, "test", scope, Utc::now())
    }

    #[test]
    fn lookup_prefers_innermost_scope() {
        let mut store = VariableStore::default();
        store.set(
            "x",
            VariableScope::Global,
            None,
            v(json!("g"), VariableScope::Global),
        );
        store.set(
            "x",
            VariableScope::Session,
            None,
            v(json!("s"), VariableScope::Session),
        );
        store.set(
            "x",
            VariableScope::Topic,
            Some("t1"),
            v(json!("t"), VariableScope::Topic),
        );
        assert_eq!(
            store.lookup("x", Some("p1"), Some("t1")).unwrap().value,
            json!("t")
        );
        assert_eq!(
            store.lookup("x", Some("p1"), Some("t2")).unwrap().value,
            json!("s")
        );
        store.session.clear();
        assert_eq!(
            store.lookup("x", None, Some("t2")).unwrap().value,
            json!("g")
        );
        assert!(store.lookup("missing", None, None).is_none());
    }

    #[test]
    fn scoped_write_without_key_falls_back_to_session() {
        let mut store = VariableStore::default();
        let (scope, key) = store.set(
            "y",
            VariableScope::Topic,
            None,
            v(json!(1), VariableScope::Topic),
        );
        assert_eq!(scope, VariableScope::Session);
        assert!(key.is_none());
        assert_eq!(store.session["y"].scope, VariableScope::Session);
        assert_eq!(store.session["y"].value_type, ValueType::Number);
    }

    #[test]
    fn flat_map_merges_all_scopes() {
        let mut store = VariableStore::default();
        store.set(
            "a",
            VariableScope::Global,
            None,
            v(json!(true), VariableScope::Global),
        );
        store.set(
            "b",
            VariableScope::Phase,
            Some("p"),
            v(json!([1]), VariableScope::Phase),
        );
        let flat = store.flat();
        assert_eq!(flat["a"], json!(true));
        assert_eq!(flat["b"], json!([1]));
        assert!(!store.is_empty());
        assert!(VariableStore::default().is_empty());
    }
}
