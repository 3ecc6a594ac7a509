//! Issue and warning collection, paths, and typed reads of YAML values.
//!
//! Every reader returns `None` only after recording an issue, so a document
//! is returned exactly when no issue was recorded.

use heartrule_domain::{LoadMode, LoadWarning, ValidationErrorType, ValidationIssue};
use serde_yaml::{Sequence, Value};

/// A located YAML value: what a reader consumed, and where it sits.
#[derive(Debug, Clone)]
pub(super) struct Field<'v> {
    /// The key as written (it may be an alias of the canonical name).
    pub(super) key: String,
    pub(super) value: &'v Value,
    pub(super) path: String,
}

/// `parent.key`, or `key` at the root.
pub(super) fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

pub(super) fn item_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// A short description of a value for `actual`.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => format!("boolean {flag}"),
        Value::Number(number) if number.is_f64() => format!("number {number}"),
        Value::Number(number) => format!("integer {number}"),
        Value::String(text) => {
            const SHOWN: usize = 40;
            if text.chars().count() > SHOWN {
                let head: String = text.chars().take(SHOWN).collect();
                format!("string \"{head}…\"")
            } else {
                format!("string \"{text}\"")
            }
        }
        Value::Sequence(items) => format!("list of {} item(s)", items.len()),
        Value::Mapping(_) => "mapping".to_owned(),
        Value::Tagged(tagged) => format!("value tagged {}", tagged.tag),
    }
}

/// A validation issue under construction.
pub(super) struct Issue(ValidationIssue);

impl Issue {
    pub(super) fn new(
        path: impl Into<String>,
        error_type: ValidationErrorType,
        message: impl Into<String>,
    ) -> Self {
        Self(ValidationIssue {
            path: path.into(),
            error_type,
            message: message.into(),
            expected: None,
            actual: None,
            suggestion: None,
            line: None,
            column: None,
        })
    }

    pub(super) fn expected(mut self, expected: impl Into<String>) -> Self {
        self.0.expected = Some(expected.into());
        self
    }

    pub(super) fn actual(mut self, actual: impl Into<String>) -> Self {
        self.0.actual = Some(actual.into());
        self
    }

    pub(super) fn suggestion(mut self, suggestion: impl Into<String>) -> Self {
        self.0.suggestion = Some(suggestion.into());
        self
    }
}

/// Collects every issue and warning of one load.
pub(super) struct Diagnostics {
    pub(super) mode: LoadMode,
    issues: Vec<ValidationIssue>,
    warnings: Vec<LoadWarning>,
}

impl Diagnostics {
    pub(super) fn new(mode: LoadMode) -> Self {
        Self {
            mode,
            issues: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn is_compatible(&self) -> bool {
        self.mode == LoadMode::Compatible
    }

    pub(super) fn report(&mut self, issue: Issue) {
        self.issues.push(issue.0);
    }

    pub(super) fn warn(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        replacement: Option<String>,
    ) {
        self.warnings.push(LoadWarning {
            path: path.into(),
            message: message.into(),
            replacement,
        });
    }

    pub(super) fn into_parts(self) -> (Vec<ValidationIssue>, Vec<LoadWarning>) {
        (self.issues, self.warnings)
    }

    pub(super) fn missing(&mut self, object_path: &str, name: &str, expected: &str) {
        self.report(
            Issue::new(
                child_path(object_path, name),
                ValidationErrorType::RequiredFieldMissing,
                format!("required field `{name}` is missing"),
            )
            .expected(expected)
            .suggestion(format!("add `{name}`")),
        );
    }

    pub(super) fn type_error(&mut self, field: &Field<'_>, expected: &str) {
        self.report(
            Issue::new(
                field.path.clone(),
                ValidationErrorType::TypeError,
                format!("`{}` must be {expected}", field.key),
            )
            .expected(expected)
            .actual(describe(field.value)),
        );
    }

    pub(super) fn constraint(
        &mut self,
        path: &str,
        message: String,
        expected: String,
        actual: String,
    ) {
        self.report(
            Issue::new(path, ValidationErrorType::ConstraintViolation, message)
                .expected(expected)
                .actual(actual),
        );
    }

    pub(super) fn string(&mut self, field: &Field<'_>) -> Option<String> {
        match field.value {
            Value::String(text) => Some(text.clone()),
            _ => {
                self.type_error(field, "a string");
                None
            }
        }
    }

    /// A string of `min..=max` characters (JSON-schema lengths count characters).
    pub(super) fn text(&mut self, field: &Field<'_>, min: usize, max: usize) -> Option<String> {
        let text = self.string(field)?;
        let length = text.chars().count();
        if length < min || length > max {
            let expected = if min == 0 {
                format!("at most {max} characters")
            } else {
                format!("{min} to {max} characters")
            };
            self.constraint(
                &field.path,
                format!("`{}` must have {expected}", field.key),
                expected,
                format!("{length} characters"),
            );
            return None;
        }
        Some(text)
    }

    /// A string that is not blank.
    pub(super) fn non_blank(&mut self, field: &Field<'_>) -> Option<String> {
        let text = self.string(field)?;
        if text.trim().is_empty() {
            self.constraint(
                &field.path,
                format!("`{}` must not be empty", field.key),
                "a non-empty string".to_owned(),
                describe(field.value),
            );
            return None;
        }
        Some(text)
    }

    pub(super) fn integer(&mut self, field: &Field<'_>, min: u32, max: u32) -> Option<u32> {
        let Value::Number(number) = field.value else {
            self.type_error(field, "an integer");
            return None;
        };
        let Some(integer) = number
            .as_i64()
            .map(i128::from)
            .or_else(|| number.as_u64().map(i128::from))
        else {
            self.type_error(field, "an integer");
            return None;
        };
        if integer < i128::from(min) || integer > i128::from(max) {
            let expected = if max == u32::MAX {
                format!("an integer of at least {min}")
            } else {
                format!("an integer from {min} to {max}")
            };
            self.constraint(
                &field.path,
                format!("`{}` must be {expected}", field.key),
                expected,
                integer.to_string(),
            );
            return None;
        }
        u32::try_from(integer).ok()
    }

    pub(super) fn boolean(&mut self, field: &Field<'_>) -> Option<bool> {
        match field.value {
            Value::Bool(flag) => Some(*flag),
            _ => {
                self.type_error(field, "a boolean");
                None
            }
        }
    }

    pub(super) fn sequence<'v>(&mut self, field: &Field<'v>) -> Option<&'v Sequence> {
        match field.value {
            Value::Sequence(items) => Some(items),
            _ => {
                self.type_error(field, "a list");
                None
            }
        }
    }

    pub(super) fn mapping<'v>(&mut self, field: &Field<'v>) -> Option<&'v serde_yaml::Mapping> {
        match field.value {
            Value::Mapping(mapping) => Some(mapping),
            _ => {
                self.type_error(field, "a mapping");
                None
            }
        }
    }

    /// One of the spellings `parse` accepts; ENUM_VALUE_INVALID otherwise.
    pub(super) fn one_of<T>(
        &mut self,
        field: &Field<'_>,
        allowed: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let text = self.string(field)?;
        let parsed = parse(&text);
        if parsed.is_none() {
            self.report(
                Issue::new(
                    field.path.clone(),
                    ValidationErrorType::EnumValueInvalid,
                    format!("`{}` has an unknown value `{text}`", field.key),
                )
                .expected(format!("one of {allowed}"))
                .actual(text)
                .suggestion(format!("use one of {allowed}")),
            );
        }
        parsed
    }

    /// A list with at least `min` items, as located items.
    pub(super) fn items<'v>(&mut self, field: &Field<'v>, min: usize) -> Option<Vec<Field<'v>>> {
        let items = self.sequence(field)?;
        if items.len() < min {
            self.constraint(
                &field.path,
                format!("`{}` must contain at least {min} item(s)", field.key),
                format!("at least {min} item(s)"),
                format!("{} item(s)", items.len()),
            );
            return None;
        }
        Some(
            items
                .iter()
                .enumerate()
                .map(|(index, value)| Field {
                    key: item_path(&field.key, index),
                    value,
                    path: item_path(&field.path, index),
                })
                .collect(),
        )
    }

    /// A list of non-empty strings.
    pub(super) fn string_list(&mut self, field: &Field<'_>) -> Option<Vec<String>> {
        let items = self.items(field, 0)?;
        let mut strings = Vec::with_capacity(items.len());
        let mut valid = true;
        for item in &items {
            match self.non_blank(item) {
                Some(text) => strings.push(text),
                None => valid = false,
            }
        }
        valid.then_some(strings)
    }
}

/// Reports ids repeated within one parent (phase ids in a session, …).
pub(super) struct UniqueIds {
    what: &'static str,
    first_paths: std::collections::HashMap<String, String>,
}

impl UniqueIds {
    pub(super) fn new(what: &'static str) -> Self {
        Self {
            what,
            first_paths: std::collections::HashMap::new(),
        }
    }

    pub(super) fn register(&mut self, diag: &mut Diagnostics, id: &str, path: &str) {
        if let Some(first) = self.first_paths.get(id) {
            diag.report(
                Issue::new(
                    path,
                    ValidationErrorType::ConstraintViolation,
                    format!("duplicate {} `{id}`: already used at {first}", self.what),
                )
                .expected(format!("a {} unique within its parent", self.what))
                .actual(id)
                .suggestion(format!("rename this {}", self.what)),
            );
        } else {
            self.first_paths.insert(id.to_owned(), path.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(value: &Value) -> Field<'_> {
        Field {
            key: "max_rounds".into(),
            value,
            path: "session.x.max_rounds".into(),
        }
    }

    #[test]
    fn paths_join_keys_and_indices() {
        assert_eq!(child_path("", "session"), "session");
        assert_eq!(child_path("session", "phases"), "session.phases");
        assert_eq!(item_path("session.phases", 2), "session.phases[2]");
    }

    #[test]
    fn integers_are_range_checked() {
        let mut diag = Diagnostics::new(LoadMode::Strict);
        assert_eq!(diag.integer(&field(&Value::from(3)), 1, 10), Some(3));
        assert_eq!(diag.integer(&field(&Value::from(11)), 1, 10), None);
        assert_eq!(diag.integer(&field(&Value::from(-1)), 1, 10), None);
        assert_eq!(diag.integer(&field(&Value::from(2.5)), 1, 10), None);
        assert_eq!(
            diag.integer(&field(&Value::from(u64::MAX)), 1, u32::MAX),
            None
        );
        let (issues, _) = diag.into_parts();
        let types: Vec<_> = issues.iter().map(|i| i.error_type).collect();
        assert_eq!(
            types,
            vec![
                ValidationErrorType::ConstraintViolation,
                ValidationErrorType::ConstraintViolation,
                ValidationErrorType::TypeError,
                ValidationErrorType::ConstraintViolation,
            ]
        );
        assert_eq!(issues[0].actual.as_deref(), Some("11"));
        assert_eq!(
            issues[0].expected.as_deref(),
            Some("an integer from 1 to 10")
        );
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let mut diag = Diagnostics::new(LoadMode::Strict);
        let chinese = Value::from("用户称呼");
        assert!(diag.text(&field(&chinese), 1, 4).is_some());
        assert!(diag.text(&field(&chinese), 1, 3).is_none());
        assert!(diag.text(&field(&Value::from("")), 1, 3).is_none());
        let (issues, _) = diag.into_parts();
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[0].actual.as_deref(), Some("4 characters"));
    }

    #[test]
    fn descriptions_name_the_type() {
        assert_eq!(describe(&Value::Null), "null");
        assert_eq!(describe(&Value::from(1)), "integer 1");
        assert_eq!(describe(&Value::from(1.5)), "number 1.5");
        assert_eq!(
            describe(&Value::from("x".repeat(50))),
            format!("string \"{}…\"", "x".repeat(40))
        );
        assert_eq!(
            describe(&Value::Sequence(vec![Value::Null])),
            "list of 1 item(s)"
        );
    }

    #[test]
    fn duplicate_ids_point_at_the_repeat() {
        let mut diag = Diagnostics::new(LoadMode::Compatible);
        let mut ids = UniqueIds::new("phase_id");
        ids.register(&mut diag, "p", "s.phases[0].phase_id");
        ids.register(&mut diag, "q", "s.phases[1].phase_id");
        ids.register(&mut diag, "p", "s.phases[2].phase_id");
        let (issues, _) = diag.into_parts();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "s.phases[2].phase_id");
        assert_eq!(
            issues[0].error_type,
            ValidationErrorType::ConstraintViolation
        );
        assert!(issues[0].message.contains("s.phases[0].phase_id"));
    }

    #[test]
    fn string_lists_reject_non_strings_by_index() {
        let mut diag = Diagnostics::new(LoadMode::Strict);
        let list: Value = serde_yaml::from_str("[a, 1, '']").unwrap();
        let located = Field {
            key: "input_variables".into(),
            value: &list,
            path: "x.input_variables".into(),
        };
        assert_eq!(diag.string_list(&located), None);
        let (issues, _) = diag.into_parts();
        let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, vec!["x.input_variables[1]", "x.input_variables[2]"]);
    }
}
