//! Placeholder substitution.
//!
//! Four syntaxes are recognised: script variables `${x}`, `{{x}}`, `{x}` and
//! system variables `{%x%}`. Substitution is one literal left-to-right pass:
//! text inserted for a placeholder is never scanned again (so user text that
//! happens to contain `{{x}}` cannot pull in other values), and values are
//! copied verbatim (`$&`, `$1`, `$$` mean nothing special).

use serde_json::Value;

/// Which lookups a placeholder syntax consults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// `{%x%}`: system variables only.
    System,
    /// `{{x}}`: system variables first, then script variables.
    Double,
    /// `${x}`: script variables only.
    Dollar,
    /// `{x}`: script variables only.
    Single,
}

/// One placeholder found in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placeholder<'a> {
    syntax: Syntax,
    /// The trimmed name.
    name: &'a str,
    /// Byte length of the whole placeholder, delimiters included.
    len: usize,
}

/// A name may hold any character except braces, line breaks and double
/// quotes, so JSON fragments in templates (`{ "a": 1 }`, multi-line
/// objects) are never mistaken for placeholders.
fn valid_name(raw: &str) -> Option<&str> {
    if raw.contains(['{', '}', '\n', '\r', '"']) {
        return None;
    }
    let name = raw.trim();
    (!name.is_empty()).then_some(name)
}

/// The name between `open` and the first `close` after it, if that forms a
/// valid placeholder at the start of `rest`.
fn delimited<'a>(rest: &'a str, open: &str, close: &str) -> Option<(&'a str, usize)> {
    let inner_and_tail = rest.strip_prefix(open)?;
    let end = inner_and_tail.find(close)?;
    let name = valid_name(&inner_and_tail[..end])?;
    Some((name, open.len() + end + close.len()))
}

/// The placeholder starting exactly at the beginning of `rest`, if any.
/// Longer delimiters are tried first so `{{x}}` is never read as `{x}`.
fn placeholder_at(rest: &str) -> Option<Placeholder<'_>> {
    let candidates: [(Syntax, &str, &str); 4] = [
        (Syntax::System, "{%", "%}"),
        (Syntax::Double, "{{", "}}"),
        (Syntax::Dollar, "${", "}"),
        (Syntax::Single, "{", "}"),
    ];
    candidates.iter().find_map(|&(syntax, open, close)| {
        delimited(rest, open, close).map(|(name, len)| Placeholder { syntax, name, len })
    })
}

/// Calls `visit` for every placeholder of `text` in order, passing the byte
/// offset where it starts.
fn scan<'a>(text: &'a str, mut visit: impl FnMut(usize, Placeholder<'a>)) {
    let mut index = 0;
    while let Some(offset) = text[index..].find(['{', '$']) {
        let start = index + offset;
        match placeholder_at(&text[start..]) {
            Some(placeholder) => {
                visit(start, placeholder);
                index = start + placeholder.len;
            }
            // Both trigger characters are one byte long.
            None => index = start + 1,
        }
    }
}

/// Substitutes every placeholder of `text` in one literal pass.
///
/// `{%x%}` resolves through `system`; `{{x}}` through `system` then
/// `script`; `{x}` and `${x}` through `script` only. Names are trimmed.
/// Unresolved placeholders are kept verbatim.
pub fn substitute(
    text: &str,
    system: &dyn Fn(&str) -> Option<String>,
    script: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied_up_to = 0;
    scan(text, |start, placeholder| {
        let value = match placeholder.syntax {
            Syntax::System => system(placeholder.name),
            Syntax::Double => system(placeholder.name).or_else(|| script(placeholder.name)),
            Syntax::Dollar | Syntax::Single => script(placeholder.name),
        };
        if let Some(value) = value {
            out.push_str(&text[copied_up_to..start]);
            out.push_str(&value);
            copied_up_to = start + placeholder.len;
        }
    });
    out.push_str(&text[copied_up_to..]);
    out
}

/// JSON value → prompt text: strings as-is, numbers and booleans via
/// `to_string`, arrays of scalars joined with `、`, `null` as the empty
/// string, objects and other arrays as compact JSON.
pub fn value_to_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Array(items) if items.iter().all(is_text_scalar) => items
            .iter()
            .map(value_to_text)
            .collect::<Vec<_>>()
            .join("、"),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

fn is_text_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Names referenced by the three script syntaxes (`{{x}}`, `{x}`, `${x}`),
/// trimmed, without duplicates, in order of first appearance.
pub fn referenced_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    scan(text, |_, placeholder| {
        if placeholder.syntax != Syntax::System && !names.iter().any(|n| n == placeholder.name) {
            names.push(placeholder.name.to_owned());
        }
    });
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn run(text: &str, system: &[(&str, &str)], script: &[(&str, &str)]) -> String {
        let system = lookup(system);
        let script = lookup(script);
        substitute(text, &|name| system.get(name).cloned(), &|name| {
            script.get(name).cloned()
        })
    }

    #[test]
    fn system_syntaxes_are_both_replaced() {
        // `{%time%}` and `{{time}}` both read the system map.
        let out = run("{%time%} / {{time}}", &[("time", "20:59")], &[]);
        assert_eq!(out, "20:59 / 20:59");
    }

    #[test]
    fn all_three_script_syntaxes_are_replaced() {
        let out = run("{{a}}-{a}-${a}", &[], &[("a", "甲")]);
        assert_eq!(out, "甲-甲-甲");
    }

    #[test]
    fn undefined_placeholders_stay_verbatim() {
        let out = run(
            "{{未定义}} {未定义} ${未定义} {%未定义%}",
            &[("x", "1")],
            &[("y", "2")],
        );
        assert_eq!(out, "{{未定义}} {未定义} ${未定义} {%未定义%}");
    }

    #[test]
    fn values_are_inserted_literally() {
        // `$&` and friends are replacement patterns in JS `replace`; here they are text.
        let out = run(
            "[{{a}}] [{b}] [${c}] [{d}]",
            &[],
            &[("a", "$&"), ("b", "1+1"), ("c", "2*2"), ("d", "$1$$")],
        );
        assert_eq!(out, "[$&] [1+1] [2*2] [$1$$]");
    }

    #[test]
    fn inserted_text_is_never_rescanned() {
        let out = run(
            "问：{{topic_content}}",
            &[("topic_content", "你好{{secret}} ${secret}")],
            &[("secret", "LEAKED")],
        );
        assert_eq!(out, "问：你好{{secret}} ${secret}");
    }

    #[test]
    fn lookup_order_follows_the_syntax() {
        let system = [("n", "sys")];
        let script = [("n", "scr")];
        assert_eq!(run("{{n}}", &system, &script), "sys");
        assert_eq!(run("{{n}}", &[], &script), "scr");
        assert_eq!(run("{n} ${n}", &system, &script), "scr scr");
        assert_eq!(run("{n} ${n}", &system, &[]), "{n} ${n}");
        assert_eq!(run("{%n%}", &system, &script), "sys");
        assert_eq!(run("{%n%}", &[], &script), "{%n%}");
    }

    #[test]
    fn names_are_trimmed() {
        let out = run("{{ a }}|{ a}|${a }|{% t %}", &[("t", "T")], &[("a", "A")]);
        assert_eq!(out, "A|A|A|T");
    }

    #[test]
    fn json_fragments_are_not_placeholders() {
        let text = "{\n  \"content\": \"x\"\n}\n{\"a\": 1} {} { }";
        assert_eq!(run(text, &[], &[("\"a\": 1", "no")]), text);
        assert!(referenced_names(text).is_empty());
    }

    #[test]
    fn malformed_delimiters_fall_back_to_inner_placeholders() {
        // `{{a}` is not a double placeholder, but `{a}` inside it is a single one.
        assert_eq!(run("{{a}", &[], &[("a", "A")]), "{A");
        assert_eq!(run("${{a}}", &[], &[("a", "A")]), "$A");
        assert_eq!(run("$ {a} $", &[], &[("a", "A")]), "$ A $");
        assert_eq!(run("{%a}", &[], &[("%a", "P")]), "P");
        assert_eq!(
            run("unclosed {a and ${b", &[], &[("a", "A")]),
            "unclosed {a and ${b"
        );
    }

    #[test]
    fn surrounding_text_including_multibyte_is_preserved() {
        let out = run(
            "你好{用户名}，我是{咨询师名}。",
            &[],
            &[("用户名", "小明"), ("咨询师名", "Dr. Smith")],
        );
        assert_eq!(out, "你好小明，我是Dr. Smith。");
    }

    #[test]
    fn value_to_text_renders_every_json_type() {
        assert_eq!(value_to_text(&json!("文本")), "文本");
        assert_eq!(value_to_text(&json!(28)), "28");
        assert_eq!(value_to_text(&json!(1.5)), "1.5");
        assert_eq!(value_to_text(&json!(true)), "true");
        assert_eq!(value_to_text(&Value::Null), "");
        assert_eq!(value_to_text(&json!(["焦虑", "失眠", 3])), "焦虑、失眠、3");
        assert_eq!(value_to_text(&json!([])), "");
        assert_eq!(value_to_text(&json!({"a": [1, 2]})), r#"{"a":[1,2]}"#);
        assert_eq!(value_to_text(&json!([{"a": 1}, 2])), r#"[{"a":1},2]"#);
        assert_eq!(value_to_text(&json!([null, 1])), "[null,1]");
    }

    #[test]
    fn referenced_names_lists_script_syntaxes_once_in_order() {
        let names = referenced_names("${b} {{ a }} {b} {%time%} {a} {{c}}");
        assert_eq!(names, vec!["b", "a", "c"]);
    }
}
