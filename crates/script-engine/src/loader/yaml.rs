//! YAML text → [`serde_yaml::Value`] with bounded cost.
//!
//! serde_yaml bounds nesting depth (128) and alias replays, but two hostile
//! shapes remain expensive:
//! - libyaml scans flow collections in time proportional to tokens × flow
//!   depth, and serde_yaml only checks depth after scanning the whole text, so
//!   `[[[[…]]]]` 100 000 deep takes minutes. [`flow_depth`] rejects such
//!   text in one linear pass first.
//! - an anchor of many items referenced many times stays within serde_yaml's
//!   limits yet expands to a huge tree. Building the value through a counting
//!   visitor caps the expanded size relative to the input.

use heartrule_domain::ScriptLoadError;
use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess};
use serde::de::{VariantAccess, Visitor};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};
use std::cell::Cell;
use std::fmt;

/// Nodes allowed on top of the input length (every node needs about one byte
/// of input unless aliases repeat it).
const BASE_NODE_BUDGET: usize = 10_000;
/// Scalar text bytes allowed on top of the input length.
const BASE_TEXT_BUDGET: usize = 1 << 20;

/// Parses one YAML document. Syntax errors (and documents that expand
/// beyond the budget) become [`ScriptLoadError::Syntax`] with a 1-based
/// location; errors serde_yaml reports without one are placed at 1:1.
pub(super) fn parse_document(text: &str) -> Result<Value, ScriptLoadError> {
    super::flow_depth::check(text)?;
    let budget = Budget {
        nodes: Cell::new(BASE_NODE_BUDGET.saturating_add(text.len().saturating_mul(2))),
        text_bytes: Cell::new(BASE_TEXT_BUDGET.saturating_add(text.len().saturating_mul(4))),
    };
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let mut value = BoundedValue(&budget)
        .deserialize(deserializer)
        .map_err(|error| syntax_error(&error))?;
    // Merge keys (`<<: *base`) are part of YAML as editors write it.
    value.apply_merge().map_err(|error| syntax_error(&error))?;
    Ok(value)
}

fn syntax_error(error: &serde_yaml::Error) -> ScriptLoadError {
    let (line, column) = error
        .location()
        .map_or((1, 1), |location| (location.line(), location.column()));
    // serde_yaml appends the location to its message; the error carries it
    // in fields already.
    let text = error.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
    ScriptLoadError::Syntax {
        message,
        line,
        column,
    }
}

struct Budget {
    nodes: Cell<usize>,
    text_bytes: Cell<usize>,
}

impl Budget {
    fn charge_node<E: de::Error>(&self) -> Result<(), E> {
        let remaining = self.nodes.get();
        if remaining == 0 {
            return Err(E::custom(
                "the document expands to too many nodes (alias amplification?)",
            ));
        }
        self.nodes.set(remaining - 1);
        Ok(())
    }

    fn charge_text<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        self.charge_node()?;
        let remaining = self.text_bytes.get();
        if bytes > remaining {
            return Err(E::custom(
                "the document expands to too much text (alias amplification?)",
            ));
        }
        self.text_bytes.set(remaining - bytes);
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct BoundedValue<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for BoundedValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedValue<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        self.0.charge_node()?;
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        self.0.charge_node()?;
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        self.0.charge_node()?;
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        self.0.charge_node()?;
        Ok(Value::Number(value.into()))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        self.0.charge_text(value.len())?;
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        self.0.charge_text(value.len())?;
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.charge_node()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        self.0.charge_node()?;
        let mut items = Vec::new();
        while let Some(item) = access.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        self.0.charge_node()?;
        let mut mapping = Mapping::new();
        while let Some(key) = access.next_key_seed(self)? {
            if mapping.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate entry with key {}",
                    key_text(&key)
                )));
            }
            let value = access.next_value_seed(self)?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, access: A) -> Result<Value, A::Error> {
        self.0.charge_node()?;
        let (tag, contents): (String, _) = access.variant()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag"));
        }
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => format!("\"{text}\""),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Null => "null".to_owned(),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => {
            "of a complex value".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax_location(text: &str) -> (usize, usize) {
        match parse_document(text) {
            Err(ScriptLoadError::Syntax { line, column, .. }) => (line, column),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_same_value_as_serde_yaml() {
        let text = "a: [1, -2, 3.5, true, null, \"x\"]\nb: {c: !custom d}\n";
        let expected: Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(parse_document(text).unwrap(), expected);
    }

    #[test]
    fn bad_indentation_is_located() {
        let (line, column) = syntax_location("session:\n  a: 1\n b: 2\n");
        assert_eq!(line, 3);
        assert!(column >= 1);
    }

    #[test]
    fn messages_do_not_repeat_the_location() {
        match parse_document("a: 1\na: 2\n") {
            Err(ScriptLoadError::Syntax { message, .. }) => {
                assert_eq!(message, "duplicate entry with key \"a\"");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        let (line, _) = syntax_location("a: 1\na: 2\n");
        assert!(line >= 1);
    }

    #[test]
    fn merge_keys_are_applied() {
        let value = parse_document("base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n").unwrap();
        assert_eq!(value["use"]["x"], Value::from(1));
        assert_eq!(value["use"]["y"], Value::from(2));
    }

    #[test]
    fn invalid_merge_is_a_syntax_error() {
        assert!(matches!(
            parse_document("a:\n  <<: 5\n"),
            Err(ScriptLoadError::Syntax {
                line: 1,
                column: 1,
                ..
            })
        ));
    }

    #[test]
    fn several_documents_are_rejected() {
        assert!(matches!(
            parse_document("a: 1\n---\nb: 2\n"),
            Err(ScriptLoadError::Syntax { .. })
        ));
    }

    #[test]
    fn wide_alias_fan_out_hits_the_node_budget() {
        // One anchor of 200 items referenced 5 000 times: 1 000 000 nodes
        // from about 30 KB of text — well within serde_yaml's own limits.
        let mut text = String::from("base: &b [");
        text.push_str(&vec!["1"; 200].join(","));
        text.push_str("]\nrefs:\n");
        for _ in 0..5_000 {
            text.push_str("- *b\n");
        }
        let error = parse_document(&text).unwrap_err();
        assert!(error.to_string().contains("too many nodes"), "{error}");
    }

    #[test]
    fn long_string_fan_out_hits_the_text_budget() {
        let mut text = format!("base: &b \"{}\"\nrefs:\n", "x".repeat(100_000));
        for _ in 0..200 {
            text.push_str("- *b\n");
        }
        let error = parse_document(&text).unwrap_err();
        assert!(error.to_string().contains("too much text"), "{error}");
    }
}
