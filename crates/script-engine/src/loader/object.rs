//! Reading one YAML mapping as a schema object.
//!
//! A reader hands out fields by canonical name and remembers which keys were
//! consumed; [`ObjectReader::finish`] then deals with the rest — errors in
//! strict mode (objects are closed), warnings in compatible mode. Compatible
//! mode also answers camelCase spellings and the aliases a caller names,
//! with the first non-null value winning, and treats null as absent.

use super::diagnostics::{child_path, describe, Diagnostics, Field, Issue};
use heartrule_domain::ValidationErrorType;
use serde_yaml::{Mapping, Value};

/// What to tell the author about a key the schema does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyAdvice {
    /// A deprecated field whose meaning lives on in `replacement`.
    Replaced { replacement: &'static str },
    /// A field without effect.
    NoEffect { reason: &'static str },
    /// A config field written beside `action_id`/`action_type`.
    MoveIntoConfig,
}

struct Entry<'v> {
    key: String,
    value: &'v Value,
    path: String,
    consumed: bool,
}

pub(super) struct ObjectReader<'v> {
    path: String,
    entries: Vec<Entry<'v>>,
    /// Canonical names asked for, for the `expected` of unknown-key errors.
    known: Vec<&'static str>,
}

impl<'v> ObjectReader<'v> {
    pub(super) fn new(diag: &mut Diagnostics, mapping: &'v Mapping, path: &str) -> Self {
        let mut reader = Self::empty(path);
        reader.extend(diag, mapping, path);
        reader
    }

    pub(super) fn empty(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            entries: Vec::new(),
            known: Vec::new(),
        }
    }

    /// Adds the entries of `mapping`, located under `path`.
    pub(super) fn extend(&mut self, diag: &mut Diagnostics, mapping: &'v Mapping, path: &str) {
        for (key, value) in mapping {
            let key = match key {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                Value::Null => "null".to_owned(),
                Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => {
                    diag.report(
                        Issue::new(
                            path,
                            ValidationErrorType::StructureError,
                            "mapping keys must be plain names",
                        )
                        .expected("a field name")
                        .actual(describe(key)),
                    );
                    continue;
                }
            };
            let entry_path = child_path(path, &key);
            self.entries.push(Entry {
                key,
                value,
                path: entry_path,
                consumed: false,
            });
        }
    }

    /// Adds fields taken from another object (envelope keys moved into config).
    pub(super) fn adopt(&mut self, fields: Vec<Field<'v>>) {
        self.entries.extend(fields.into_iter().map(|field| Entry {
            key: field.key,
            value: field.value,
            path: field.path,
            consumed: false,
        }));
    }

    pub(super) fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn has_key(&self, key: &str) -> bool {
        self.entries.iter().any(|entry| entry.key == key)
    }

    /// The optional field `name` (compatible mode: or its camelCase spelling).
    pub(super) fn optional(
        &mut self,
        diag: &mut Diagnostics,
        name: &'static str,
    ) -> Option<Field<'v>> {
        self.optional_any(diag, name, &[])
    }

    /// The optional field `name`; compatible mode also accepts its camelCase
    /// spelling and `aliases` (and their camelCase spellings), in that order,
    /// warning about each alias present.
    pub(super) fn optional_any(
        &mut self,
        diag: &mut Diagnostics,
        name: &'static str,
        aliases: &[&'static str],
    ) -> Option<Field<'v>> {
        self.known.push(name);
        if !diag.is_compatible() {
            return self.take(name);
        }
        // Present spellings, best first: each name before its camelCase form,
        // the canonical name before the aliases.
        let mut present: Vec<(usize, usize)> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| !entry.consumed)
            .filter_map(|(index, entry)| {
                spelling_rank(&entry.key, name, aliases).map(|rank| (rank, index))
            })
            .collect();
        present.sort_unstable();
        let mut chosen: Option<Field<'v>> = None;
        for (_, index) in present {
            let entry = &mut self.entries[index];
            entry.consumed = true;
            let field = Field {
                key: entry.key.clone(),
                value: entry.value,
                path: entry.path.clone(),
            };
            let is_alias = field.key != name;
            match (&chosen, field.value) {
                // Compatible mode: null counts as absent.
                (_, Value::Null) => {}
                (None, _) => {
                    if is_alias {
                        diag.warn(
                            field.path.clone(),
                            format!("`{}` is read as `{name}`", field.key),
                            Some(name.to_owned()),
                        );
                    }
                    chosen = Some(field);
                }
                (Some(winner), _) => diag.warn(
                    field.path.clone(),
                    format!("`{}` is ignored because `{}` is set", field.key, winner.key),
                    Some(name.to_owned()),
                ),
            }
        }
        chosen
    }

    /// The required field `name`; a missing one is reported.
    pub(super) fn required(
        &mut self,
        diag: &mut Diagnostics,
        name: &'static str,
        expected: &str,
    ) -> Option<Field<'v>> {
        self.required_any(diag, name, &[], expected)
    }

    pub(super) fn required_any(
        &mut self,
        diag: &mut Diagnostics,
        name: &'static str,
        aliases: &[&'static str],
        expected: &str,
    ) -> Option<Field<'v>> {
        let field = self.optional_any(diag, name, aliases);
        if field.is_none() {
            diag.missing(&self.path, name, expected);
        }
        field
    }

    /// The field `name` exactly as written, null included (for values of any type).
    pub(super) fn raw(&mut self, name: &'static str) -> Option<Field<'v>> {
        self.known.push(name);
        self.take(name)
    }

    /// Takes every key not consumed yet.
    pub(super) fn take_rest(&mut self) -> Vec<Field<'v>> {
        self.entries
            .iter_mut()
            .filter(|entry| !entry.consumed)
            .map(|entry| {
                entry.consumed = true;
                Field {
                    key: entry.key.clone(),
                    value: entry.value,
                    path: entry.path.clone(),
                }
            })
            .collect()
    }

    /// Marks `key` as handled by the caller.
    pub(super) fn take(&mut self, key: &str) -> Option<Field<'v>> {
        let entry = self
            .entries
            .iter_mut()
            .find(|entry| !entry.consumed && entry.key == key)?;
        entry.consumed = true;
        Some(Field {
            key: entry.key.clone(),
            value: entry.value,
            path: entry.path.clone(),
        })
    }

    /// Reports the keys nobody asked for: strict mode → STRUCTURE_ERROR,
    /// compatible mode → a warning (the key is ignored). `advice` knows the
    /// deprecated spellings of this kind of object.
    pub(super) fn finish(self, diag: &mut Diagnostics, advice: impl Fn(&str) -> Option<KeyAdvice>) {
        let Self { entries, known, .. } = self;
        for entry in entries.into_iter().filter(|entry| !entry.consumed) {
            let key = entry.key.as_str();
            let spelling = snake_case(key);
            let advice = advice(key);
            if diag.is_compatible() {
                let (message, replacement) = match advice {
                    Some(KeyAdvice::Replaced { replacement }) => (
                        format!("deprecated field `{key}` is ignored; use `{replacement}`"),
                        Some(replacement.to_owned()),
                    ),
                    Some(KeyAdvice::NoEffect { reason }) => {
                        (format!("field `{key}` is ignored: {reason}"), None)
                    }
                    // Compatible mode moves envelope keys itself; the advice
                    // only matters in strict mode.
                    Some(KeyAdvice::MoveIntoConfig) | None => {
                        (format!("unknown field `{key}` is ignored"), None)
                    }
                };
                diag.warn(entry.path, message, replacement);
                continue;
            }
            let suggestion = match advice {
                Some(KeyAdvice::Replaced { replacement }) => {
                    format!("`{key}` is deprecated: use `{replacement}` instead")
                }
                Some(KeyAdvice::NoEffect { reason }) => format!("remove `{key}`: {reason}"),
                Some(KeyAdvice::MoveIntoConfig) => format!("move `{key}` into `config`"),
                None if spelling != key && known.contains(&spelling.as_str()) => {
                    format!("write `{spelling}` (snake_case)")
                }
                None => format!("remove `{key}`"),
            };
            let mut expected: Vec<&str> = known.clone();
            expected.sort_unstable();
            expected.dedup();
            diag.report(
                Issue::new(
                    entry.path,
                    ValidationErrorType::StructureError,
                    format!("unknown field `{key}`"),
                )
                .expected(format!("only the fields {}", expected.join(", ")))
                .actual(key)
                .suggestion(suggestion),
            );
        }
    }
}

/// Where `key` ranks among the spellings of `name` and its aliases: each
/// as written, then its camelCase form (`max_rounds` → `maxRounds`).
fn spelling_rank(key: &str, name: &str, aliases: &[&str]) -> Option<usize> {
    std::iter::once(name)
        .chain(aliases.iter().copied())
        .enumerate()
        .find_map(|(position, spelling)| {
            if key == spelling {
                Some(2 * position)
            } else if is_camel_case_of(key, spelling) {
                Some(2 * position + 1)
            } else {
                None
            }
        })
}

/// Whether `key` is the camelCase form of the snake_case `snake`.
fn is_camel_case_of(key: &str, snake: &str) -> bool {
    let mut key_chars = key.chars();
    let mut uppercase_next = false;
    let mut had_underscore = false;
    for character in snake.chars() {
        if character == '_' {
            uppercase_next = true;
            had_underscore = true;
            continue;
        }
        let expected = if uppercase_next {
            character.to_ascii_uppercase()
        } else {
            character
        };
        uppercase_next = false;
        if key_chars.next() != Some(expected) {
            return false;
        }
    }
    had_underscore && key_chars.next().is_none()
}

/// `maxRounds` → `max_rounds`.
pub(super) fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for character in camel.chars() {
        if character.is_ascii_uppercase() {
            out.push('_');
            out.push(character.to_ascii_lowercase());
        } else {
            out.push(character);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartrule_domain::{LoadMode, LoadWarning, ValidationIssue};

    fn mapping(text: &str) -> Mapping {
        serde_yaml::from_str(text).unwrap()
    }

    fn run(
        mode: LoadMode,
        text: &str,
        read: impl FnOnce(&mut Diagnostics, &mut ObjectReader<'_>) -> Option<String>,
    ) -> (Option<String>, Vec<ValidationIssue>, Vec<LoadWarning>) {
        let map = mapping(text);
        let mut diag = Diagnostics::new(mode);
        let mut reader = ObjectReader::new(&mut diag, &map, "obj");
        let value = read(&mut diag, &mut reader);
        reader.finish(&mut diag, |key| {
            (key == "old").then_some(KeyAdvice::Replaced {
                replacement: "content",
            })
        });
        let (issues, warnings) = diag.into_parts();
        (value, issues, warnings)
    }

    fn read_content(diag: &mut Diagnostics, reader: &mut ObjectReader<'_>) -> Option<String> {
        let field = reader.required_any(diag, "content", &["old"], "a string")?;
        diag.string(&field)
    }

    #[test]
    fn case_spellings_are_recognised() {
        assert!(is_camel_case_of(
            "requireAcknowledgment",
            "require_acknowledgment"
        ));
        assert!(!is_camel_case_of(
            "requireacknowledgment",
            "require_acknowledgment"
        ));
        assert!(!is_camel_case_of("content", "content"));
        assert!(!is_camel_case_of("maxRoundsX", "max_rounds"));
        assert_eq!(
            snake_case("requireAcknowledgment"),
            "require_acknowledgment"
        );
        assert_eq!(
            spelling_rank("content", "content", &["content_template"]),
            Some(0)
        );
        assert_eq!(
            spelling_rank("contentTemplate", "content", &["content_template"]),
            Some(3)
        );
        assert_eq!(
            spelling_rank("tone", "content", &["content_template"]),
            None
        );
    }

    #[test]
    fn strict_rejects_aliases_with_advice() {
        let (value, issues, warnings) = run(LoadMode::Strict, "old: x\nmaxRounds: 2", |d, r| {
            let content = read_content(d, r);
            r.optional(d, "max_rounds");
            content
        });
        assert_eq!(value, None);
        assert!(warnings.is_empty());
        let summary: Vec<_> = issues
            .iter()
            .map(|i| {
                (
                    i.path.as_str(),
                    i.error_type,
                    i.suggestion.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "obj.content",
                    ValidationErrorType::RequiredFieldMissing,
                    "add `content`".to_owned()
                ),
                (
                    "obj.old",
                    ValidationErrorType::StructureError,
                    "`old` is deprecated: use `content` instead".to_owned()
                ),
                (
                    "obj.maxRounds",
                    ValidationErrorType::StructureError,
                    "write `max_rounds` (snake_case)".to_owned()
                ),
            ]
        );
        assert_eq!(
            issues[1].expected.as_deref(),
            Some("only the fields content, max_rounds")
        );
    }

    #[test]
    fn compatible_takes_the_first_non_null_spelling() {
        let (value, issues, warnings) = run(
            LoadMode::Compatible,
            "content: null\nold: a\noldCamel: b",
            read_content,
        );
        assert_eq!(value.as_deref(), Some("a"));
        assert!(issues.is_empty());
        let messages: Vec<_> = warnings
            .iter()
            .map(|w| (w.path.as_str(), w.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            vec![
                ("obj.old", "`old` is read as `content`"),
                ("obj.oldCamel", "unknown field `oldCamel` is ignored"),
            ]
        );
    }

    #[test]
    fn compatible_warns_about_losing_spellings() {
        let (value, _, warnings) = run(LoadMode::Compatible, "content: c\nold: a", read_content);
        assert_eq!(value.as_deref(), Some("c"));
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            warnings[0].message,
            "`old` is ignored because `content` is set"
        );
        assert_eq!(warnings[0].replacement.as_deref(), Some("content"));
    }

    #[test]
    fn compatible_accepts_camel_case() {
        let (value, issues, warnings) =
            run(LoadMode::Compatible, "maxRounds: 2\ncontent: c", |d, r| {
                let rounds = r
                    .optional(d, "max_rounds")
                    .and_then(|f| d.integer(&f, 1, 10));
                read_content(d, r)?;
                rounds.map(|n| n.to_string())
            });
        assert_eq!(value.as_deref(), Some("2"));
        assert!(issues.is_empty());
        assert_eq!(warnings[0].path, "obj.maxRounds");
        assert_eq!(warnings[0].replacement.as_deref(), Some("max_rounds"));
    }

    #[test]
    fn null_is_absent_in_compatible_and_a_type_error_in_strict() {
        let read = |d: &mut Diagnostics, r: &mut ObjectReader<'_>| read_content(d, r);
        let (_, compatible, _) = run(LoadMode::Compatible, "content: null", read);
        assert_eq!(
            compatible[0].error_type,
            ValidationErrorType::RequiredFieldMissing
        );
        let (_, strict, _) = run(LoadMode::Strict, "content: null", read);
        assert_eq!(strict[0].error_type, ValidationErrorType::TypeError);
        assert_eq!(strict[0].actual.as_deref(), Some("null"));
    }

    #[test]
    fn complex_keys_are_structure_errors() {
        let (_, issues, _) = run(
            LoadMode::Compatible,
            "? [a, b]\n: 1\ncontent: c",
            read_content,
        );
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "obj");
        assert_eq!(issues[0].error_type, ValidationErrorType::StructureError);
    }
}
