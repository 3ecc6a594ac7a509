//! Lenient reading of the JSON objects LLMs reply with.
//!
//! Models wrap JSON in Markdown fences or put prose around it. The reply is
//! reduced to one candidate object — the first fenced block if there is one,
//! then the first balanced `{…}` that looks like a JSON object — and that
//! candidate, cleared of `//` comments and trailing commas, is parsed
//! exactly once.

use serde_json::{Map, Value};

/// The outcome of reading one LLM reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedReply {
    /// The JSON object found in the reply, if any.
    pub object: Option<Map<String, Value>>,
    /// True when the reply was not a bare, valid JSON object: it was
    /// fenced, surrounded by prose, carried comments or trailing commas, or
    /// no object could be read at all.
    pub parse_error: bool,
    /// Why the reply was not a bare object (for `parseErrorDetails`).
    pub error_detail: Option<String>,
}

/// Reads the JSON object of an LLM reply. Never fails: a reply without a
/// readable object gives `object: None` and `parse_error: true`.
///
/// `//` comments and trailing commas (which models copy from annotated
/// prompt examples) are removed before the single parse.
pub fn parse_reply(raw: &str) -> ParsedReply {
    let trimmed = raw.trim();
    // A reply that starts like an object is read as one even if a string
    // inside it contains a fence; otherwise the first fenced block wins.
    let fenced = (!trimmed.starts_with('{'))
        .then(|| first_fenced_block(trimmed))
        .flatten();
    let candidate = fenced
        .and_then(first_object)
        .or_else(|| first_object(trimmed));

    let Some(candidate) = candidate else {
        return ParsedReply {
            object: None,
            parse_error: true,
            error_detail: Some("no complete JSON object in the reply".to_owned()),
        };
    };
    let mut problems = Vec::new();
    if candidate.len() != trimmed.len() {
        problems.push(if fenced.is_some() {
            "JSON object was wrapped in a Markdown code fence"
        } else {
            "JSON object was surrounded by other text"
        });
    }
    let cleaned = strip_comments_and_trailing_commas(candidate);
    if cleaned != candidate {
        problems.push("JSON object contained comments or trailing commas");
    }
    match serde_json::from_str::<Map<String, Value>>(&cleaned) {
        Ok(object) => ParsedReply {
            object: Some(object),
            parse_error: !problems.is_empty(),
            error_detail: (!problems.is_empty()).then(|| problems.join("; ")),
        },
        Err(error) => ParsedReply {
            object: None,
            parse_error: true,
            error_detail: Some(format!("invalid JSON object: {error}")),
        },
    }
}

/// Removes `//` line comments and commas directly before `}` or `]`,
/// outside strings. Valid JSON comes back unchanged.
fn strip_comments_and_trailing_commas(text: &str) -> String {
    let mut without_comments = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        if in_string {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if ch == '/' && chars.peek() == Some(&'/') {
            while chars.next_if(|&c| c != '\n').is_some() {}
            continue;
        } else if ch == '"' {
            in_string = true;
        }
        without_comments.push(ch);
    }

    let mut out = String::with_capacity(without_comments.len());
    in_string = false;
    escaped = false;
    for (index, ch) in without_comments.char_indices() {
        if in_string {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if ch == '"' {
            in_string = true;
        } else if ch == ',' {
            let next = without_comments[index + 1..].trim_start().chars().next();
            if matches!(next, Some('}' | ']')) {
                continue;
            }
        }
        out.push(ch);
    }
    out
}

/// The inside of the first Markdown code fence (```` ``` ```` or
/// ```` ```json ````), up to its closing fence or the end of the text.
fn first_fenced_block(text: &str) -> Option<&str> {
    let open = text.find("```")?;
    let after_marker = &text[open + 3..];
    // The rest of the opening line is the language tag (`json`, empty, …).
    let body_start = after_marker
        .find('\n')
        .map_or(after_marker.len(), |i| i + 1);
    let body = &after_marker[body_start..];
    Some(body.find("```").map_or(body, |close| &body[..close]))
}

fn first_object(text: &str) -> Option<&str> {
    first_object_span(text).map(|span| &text[span])
}

/// Byte range of the first balanced object in `text` whose first token
/// after `{` is a string or `}`, so prose braces like `{x}` are skipped.
/// String- and escape-aware.
fn first_object_span(text: &str) -> Option<std::ops::Range<usize>> {
    let mut search_from = 0;
    while let Some(offset) = text[search_from..].find('{') {
        let start = search_from + offset;
        let after_brace = text[start + 1..].trim_start();
        if after_brace.starts_with('"') || after_brace.starts_with('}') {
            if let Some(end) = balanced_end(&text[start..]) {
                return Some(start..start + end);
            }
            // Unbalanced from here on: every later `{` is nested inside it.
            return None;
        }
        search_from = start + 1;
    }
    None
}

/// Length of the balanced `{…}` at the start of `text`, if it closes.
fn balanced_end(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // `//` never occurs outside strings in JSON, so it can only be a comment.
    let mut in_comment = false;
    for (index, ch) in text.char_indices() {
        if in_comment {
            in_comment = ch != '\n';
            continue;
        }
        if in_string {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if ch == '/' && text[index + 1..].starts_with('/') {
            in_comment = true;
            continue;
        }
        match ch {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(index + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Reads the first of `keys` present in `object` as a flag: a JSON bool, or
/// a string that is (case-insensitively, trimmed) `true`/`false`/`yes`/`no`.
/// A key holding anything else is skipped.
pub fn flag(object: &Map<String, Value>, keys: &[&str]) -> Option<bool> {
    keys.iter()
        .filter_map(|key| object.get(*key))
        .find_map(|value| match value {
            Value::Bool(flag) => Some(*flag),
            Value::String(text) => {
                let text = text.trim();
                if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("yes") {
                    Some(true)
                } else if text.eq_ignore_ascii_case("false") || text.eq_ignore_ascii_case("no") {
                    Some(false)
                } else {
                    None
                }
            }
            _ => None,
        })
}

/// What the extractor has decided about the stream so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Only whitespace and possibly the start of a fence seen; `pending`
    /// holds the non-space text not yet classified.
    Undecided { pending: String },
    /// Inside the opening fence line (language tag); JSON starts after it.
    FenceLine,
    /// After the fence line, before the object's `{` (whitespace skipped).
    AwaitingObject,
    /// After the opening `{`, before the first key: `pending` holds the text
    /// read since, in case the brace starts prose rather than JSON.
    ObjectStart { pending: String },
    /// Reading the top-level JSON object.
    Object(ObjectReader),
    /// Not JSON: everything is passed through.
    Raw,
    /// The object ended; nothing more is emitted.
    Done,
}

/// Where the object reader stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    /// At depth 1, expecting a key (after `{` or `,`).
    ExpectKey,
    /// Reading a key string at depth 1.
    Key { text: String, escaped: bool },
    /// After a key, expecting `:`.
    ExpectColon { is_target: bool },
    /// After `:`, expecting the value.
    ExpectValue { is_target: bool },
    /// Inside the target string value, decoding it.
    Target(Decoder),
    /// Inside a nested value or a non-target value; strings are skipped.
    Skipping {
        depth: usize,
        in_string: bool,
        escaped: bool,
    },
    /// After a value at depth 1, expecting `,` or `}`.
    AfterValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ObjectReader {
    position: Position,
    /// The target field was already read; later occurrences are ignored.
    target_done: bool,
}

/// Decodes a JSON string body incrementally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Decoder {
    /// After a backslash.
    escaped: bool,
    /// Hex digits of a `\u` escape read so far.
    unicode: Option<String>,
    /// A high surrogate waiting for its low half.
    high_surrogate: Option<u16>,
    /// Saw `\` right after a high surrogate (a possible low half follows).
    after_surrogate_backslash: bool,
}

/// What one character did to a string being decoded.
enum Decoded {
    /// The string continues.
    Continue,
    /// The closing quote was read.
    End,
}

impl Decoder {
    fn push(&mut self, ch: char, out: &mut String) -> Decoded {
        if let Some(hex) = self.unicode.as_mut() {
            hex.push(ch);
            if hex.chars().count() < 4 {
                return Decoded::Continue;
            }
            let code = u16::from_str_radix(hex, 16).ok();
            self.unicode = None;
            match code {
                Some(code) => self.unit(code, out),
                // Not hex: mark the broken escape instead of dropping it silently.
                None => {
                    self.flush_surrogate(out);
                    out.push(char::REPLACEMENT_CHARACTER);
                }
            }
            return Decoded::Continue;
        }
        if self.after_surrogate_backslash {
            self.after_surrogate_backslash = false;
            if ch == 'u' {
                self.unicode = Some(String::new());
                return Decoded::Continue;
            }
            // A high surrogate followed by another escape: it stays unpaired.
            self.flush_surrogate(out);
            self.escaped = true;
        }
        if self.escaped {
            self.escaped = false;
            match ch {
                'u' => self.unicode = Some(String::new()),
                other => {
                    self.flush_surrogate(out);
                    out.push(match other {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        // `\"`, `\\`, `\/` and anything unknown: the character itself.
                        literal => literal,
                    });
                }
            }
            return Decoded::Continue;
        }
        match ch {
            '\\' if self.high_surrogate.is_some() => self.after_surrogate_backslash = true,
            '\\' => self.escaped = true,
            '"' => {
                self.flush_surrogate(out);
                return Decoded::End;
            }
            other => {
                self.flush_surrogate(out);
                out.push(other);
            }
        }
        Decoded::Continue
    }

    /// Handles one UTF-16 code unit from a `\u` escape.
    fn unit(&mut self, code: u16, out: &mut String) {
        match (self.high_surrogate.take(), code) {
            (Some(high), 0xDC00..=0xDFFF) => {
                let scalar =
                    0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(code) - 0xDC00);
                out.push(char::from_u32(scalar).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            (previous, 0xD800..=0xDBFF) => {
                if previous.is_some() {
                    out.push(char::REPLACEMENT_CHARACTER);
                }
                self.high_surrogate = Some(code);
            }
            (previous, other) => {
                if previous.is_some() {
                    out.push(char::REPLACEMENT_CHARACTER);
                }
                out.push(char::from_u32(u32::from(other)).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
        }
    }

    fn flush_surrogate(&mut self, out: &mut String) {
        if self.high_surrogate.take().is_some() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// Incremental extractor for streamed LLM replies: feed raw text chunks and
/// get back the newly decoded characters of one top-level JSON string field
/// (usually `content`). Escapes split across chunks are handled. When the
/// stream is not JSON (its first non-space character is neither `{` nor a
/// code fence) the raw text is passed through instead.
#[derive(Debug, Clone)]
pub struct ContentStreamExtractor {
    field: String,
    mode: Mode,
}

impl ContentStreamExtractor {
    pub fn new(field: &str) -> Self {
        Self {
            field: field.to_owned(),
            mode: Mode::Undecided {
                pending: String::new(),
            },
        }
    }

    /// Feeds one chunk; returns the text that became available with it
    /// (possibly empty).
    pub fn push(&mut self, chunk: &str) -> String {
        let mut out = String::new();
        for ch in chunk.chars() {
            self.step(ch, &mut out);
        }
        out
    }

    /// Ends the stream; returns text held back while the stream's kind was
    /// still undecided (e.g. a reply consisting of a lone backtick).
    pub fn finish(&mut self) -> String {
        match std::mem::replace(&mut self.mode, Mode::Done) {
            Mode::Undecided { pending } | Mode::ObjectStart { pending } => pending,
            _ => String::new(),
        }
    }

    /// True once the stream was recognised as plain text.
    pub fn is_raw(&self) -> bool {
        self.mode == Mode::Raw
    }

    fn step(&mut self, ch: char, out: &mut String) {
        match &mut self.mode {
            Mode::Undecided { pending } => {
                if pending.is_empty() && ch.is_whitespace() {
                    return;
                }
                pending.push(ch);
                if pending == "{" {
                    self.mode = Mode::ObjectStart {
                        pending: std::mem::take(pending),
                    };
                } else if pending == "```" {
                    self.mode = Mode::FenceLine;
                } else if !"```".starts_with(pending.as_str()) {
                    out.push_str(pending);
                    self.mode = Mode::Raw;
                }
            }
            Mode::FenceLine => {
                if ch == '\n' {
                    self.mode = Mode::AwaitingObject;
                }
            }
            Mode::AwaitingObject => {
                if ch == '{' {
                    self.mode = Mode::ObjectStart {
                        pending: ch.to_string(),
                    };
                } else if !ch.is_whitespace() {
                    // Fenced plain text: show it from its first visible character.
                    out.push(ch);
                    self.mode = Mode::Raw;
                }
            }
            Mode::ObjectStart { pending } => match ch {
                '"' => {
                    self.mode = Mode::Object(ObjectReader {
                        position: Position::Key {
                            text: String::new(),
                            escaped: false,
                        },
                        target_done: false,
                    });
                }
                '}' => self.mode = Mode::Done,
                space if space.is_whitespace() => pending.push(space),
                // `{x} …` is prose that starts with a brace, not JSON.
                other => {
                    out.push_str(pending);
                    out.push(other);
                    self.mode = Mode::Raw;
                }
            },
            Mode::Raw => out.push(ch),
            Mode::Done => {}
            Mode::Object(reader) => {
                if reader.step(ch, &self.field, out) {
                    self.mode = Mode::Done;
                }
            }
        }
    }
}

impl ObjectReader {
    /// Advances by one character; true when the top-level object closed.
    fn step(&mut self, ch: char, field: &str, out: &mut String) -> bool {
        match &mut self.position {
            Position::ExpectKey => match ch {
                '"' => {
                    self.position = Position::Key {
                        text: String::new(),
                        escaped: false,
                    }
                }
                '}' => return true,
                _ => {}
            },
            Position::Key { text, escaped } => {
                if *escaped {
                    *escaped = false;
                    text.push(ch);
                } else if ch == '\\' {
                    *escaped = true;
                } else if ch == '"' {
                    let is_target = !self.target_done && text == field;
                    self.position = Position::ExpectColon { is_target };
                } else {
                    text.push(ch);
                }
            }
            Position::ExpectColon { is_target } => {
                if ch == ':' {
                    self.position = Position::ExpectValue {
                        is_target: *is_target,
                    };
                }
            }
            Position::ExpectValue { is_target } => {
                if ch.is_whitespace() {
                    return false;
                }
                let is_target = *is_target;
                return self.begin_value(ch, is_target);
            }
            Position::Target(decoder) => {
                if let Decoded::End = decoder.push(ch, out) {
                    self.target_done = true;
                    self.position = Position::AfterValue;
                }
            }
            Position::Skipping {
                depth,
                in_string,
                escaped,
            } => {
                if *in_string {
                    if *escaped {
                        *escaped = false;
                    } else if ch == '\\' {
                        *escaped = true;
                    } else if ch == '"' {
                        *in_string = false;
                        if *depth == 0 {
                            self.position = Position::AfterValue;
                        }
                    }
                } else {
                    match ch {
                        '"' => *in_string = true,
                        '{' | '[' => *depth += 1,
                        '}' | ']' if *depth > 0 => {
                            *depth -= 1;
                            if *depth == 0 {
                                self.position = Position::AfterValue;
                            }
                        }
                        // A scalar ended by the object's own delimiters.
                        ',' if *depth == 0 => self.position = Position::ExpectKey,
                        '}' => return true,
                        _ => {}
                    }
                }
            }
            Position::AfterValue => match ch {
                ',' => self.position = Position::ExpectKey,
                '}' => return true,
                _ => {}
            },
        }
        false
    }

    /// Starts reading a value at depth 1 with its first character.
    fn begin_value(&mut self, ch: char, is_target: bool) -> bool {
        self.position = match ch {
            '"' if is_target => Position::Target(Decoder::default()),
            '"' => Position::Skipping {
                depth: 0,
                in_string: true,
                escaped: false,
            },
            '{' | '[' => Position::Skipping {
                depth: 1,
                in_string: false,
                escaped: false,
            },
            // A number, bool or null: skipped until `,` or `}`.
            _ => Position::Skipping {
                depth: 0,
                in_string: false,
                escaped: false,
            },
        };
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bare_object_parses_cleanly() {
        let reply = parse_reply("  {\"content\":\"你好\",\"EXIT\":\"false\"}\n");
        assert_eq!(reply.object.unwrap()["content"], json!("你好"));
        assert!(!reply.parse_error);
        assert!(reply.error_detail.is_none());
    }

    #[test]
    fn non_json_reply_gives_no_object() {
        // A reply without JSON gives no object and flags the parse error.
        let reply = parse_reply("not json");
        assert!(reply.object.is_none());
        assert!(reply.parse_error);
        assert!(reply.error_detail.is_some());
    }

    #[test]
    fn fenced_json_after_prose_is_found() {
        // JSON fenced after prose is found; the wrapping is still flagged.
        let reply = parse_reply("说明\n```json\n{\"content\":\"q\"}\n```");
        assert_eq!(reply.object.unwrap()["content"], json!("q"));
        assert!(reply.parse_error);
        assert!(reply.error_detail.unwrap().contains("fence"));
    }

    #[test]
    fn plain_fence_and_unclosed_fence_are_read() {
        let reply = parse_reply("```\n{\"a\":1}\n```");
        assert_eq!(reply.object.unwrap()["a"], json!(1));
        let reply = parse_reply("```json\n{\"a\":2}");
        assert_eq!(reply.object.unwrap()["a"], json!(2));
        assert!(reply.parse_error);
    }

    #[test]
    fn object_in_prose_is_found_past_prose_braces() {
        let reply = parse_reply(
            "好的 {x} 如下：{\"content\":\"带}括号{的\\\"文本\",\"n\":{\"m\":[1]}} 结束",
        );
        let object = reply.object.unwrap();
        assert_eq!(object["content"], json!("带}括号{的\"文本"));
        assert_eq!(object["n"], json!({"m": [1]}));
        assert!(reply.parse_error);
        assert!(reply.error_detail.unwrap().contains("surrounded"));
    }

    #[test]
    fn fence_inside_a_bare_object_string_is_just_text() {
        let raw = "{\"content\":\"示例：```json\\n{\\\"k\\\": 1}\\n```\"}";
        let reply = parse_reply(raw);
        assert_eq!(
            reply.object.unwrap()["content"],
            json!("示例：```json\n{\"k\": 1}\n```")
        );
        assert!(!reply.parse_error);
    }

    #[test]
    fn comments_and_trailing_commas_are_tolerated() {
        let raw = "{\n  \"content\": \"看 http://x.cn/a\", // 问题 {\"\n  \"年龄\": \"28\", // 用户年龄\n  \"list\": [1, 2,],\n}";
        let reply = parse_reply(raw);
        let object = reply.object.unwrap();
        assert_eq!(object["content"], json!("看 http://x.cn/a"));
        assert_eq!(object["年龄"], json!("28"));
        assert_eq!(object["list"], json!([1, 2]));
        assert!(reply.parse_error);
        assert!(reply.error_detail.unwrap().contains("comments"));

        let valid = r#"{"a": "x, }", "b": "//not a comment", "c": [1,2]}"#;
        assert_eq!(strip_comments_and_trailing_commas(valid), valid);
        assert!(!parse_reply(valid).parse_error);
    }

    #[test]
    fn broken_or_truncated_objects_fail_softly() {
        for raw in [
            "{\"content\": \"unterminated",
            "{\"a\": tru}",
            "",
            "[1,2]",
            "\"text\"",
        ] {
            let reply = parse_reply(raw);
            assert!(reply.object.is_none(), "{raw}");
            assert!(reply.parse_error, "{raw}");
            assert!(reply.error_detail.is_some(), "{raw}");
        }
    }

    #[test]
    fn exit_flag_variants() {
        let read = |value: Value| {
            let object = json!({ "EXIT": value });
            flag(object.as_object().unwrap(), &["EXIT", "exit"])
        };
        assert_eq!(read(json!(true)), Some(true));
        assert_eq!(read(json!(false)), Some(false));
        assert_eq!(read(json!("true")), Some(true));
        assert_eq!(read(json!(" TRUE ")), Some(true));
        assert_eq!(read(json!("Yes")), Some(true));
        assert_eq!(read(json!("false")), Some(false));
        assert_eq!(read(json!("NO")), Some(false));
        assert_eq!(read(json!("maybe")), None);
        assert_eq!(read(json!(1)), None);
        assert_eq!(read(Value::Null), None);

        let lower = json!({"exit": "true"});
        assert_eq!(
            flag(lower.as_object().unwrap(), &["EXIT", "exit"]),
            Some(true)
        );
        let both = json!({"EXIT": "bogus", "exit": false});
        assert_eq!(
            flag(both.as_object().unwrap(), &["EXIT", "exit"]),
            Some(false)
        );
        let none = json!({"content": "x"});
        assert_eq!(flag(none.as_object().unwrap(), &["EXIT", "exit"]), None);
    }

    fn stream(field: &str, chunks: &[&str]) -> String {
        let mut extractor = ContentStreamExtractor::new(field);
        let mut out: String = chunks.iter().map(|c| extractor.push(c)).collect();
        out.push_str(&extractor.finish());
        out
    }

    /// Every way of cutting `text` into two or three chunks.
    fn all_splits(text: &str) -> Vec<Vec<&str>> {
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let mut splits = Vec::new();
        for (n, &a) in bounds.iter().enumerate() {
            splits.push(vec![&text[..a], &text[a..]]);
            for &b in &bounds[n..] {
                splits.push(vec![&text[..a], &text[a..b], &text[b..]]);
            }
        }
        splits
    }

    #[test]
    fn streamed_content_survives_every_chunk_boundary() {
        let reply = r#"{"BRIEF":"x\"y","metadata":{"content":"nested"},"n":12,"content":"A\n\"B\"\\C\u4f60\ud83d\ude00D\/","EXIT":"false"}"#;
        let expected = "A\n\"B\"\\C你😀D/";
        let parsed = parse_reply(reply).object.unwrap();
        assert_eq!(parsed["content"], json!(expected));
        for chunks in all_splits(reply) {
            assert_eq!(stream("content", &chunks), expected, "{chunks:?}");
        }
    }

    #[test]
    fn streamed_fenced_content_survives_every_chunk_boundary() {
        let reply = "  ```json\n{\"content\": \"第一行\\n第二行\"}\n```";
        for chunks in all_splits(reply) {
            assert_eq!(stream("content", &chunks), "第一行\n第二行", "{chunks:?}");
        }
    }

    #[test]
    fn one_character_chunks() {
        let reply = r#"{"content":"\u00e9\ud83d\ude00!"}"#;
        let chunks: Vec<String> = reply.chars().map(String::from).collect();
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        assert_eq!(stream("content", &chunks), "é😀!");
    }

    #[test]
    fn non_json_stream_passes_through() {
        for chunks in all_splits("  你好，欢迎 {来访}") {
            assert_eq!(
                stream("content", &chunks),
                "你好，欢迎 {来访}",
                "{chunks:?}"
            );
        }
        let mut extractor = ContentStreamExtractor::new("content");
        assert_eq!(extractor.push("`x"), "`x");
        assert!(extractor.is_raw());
        assert_eq!(stream("content", &["``"]), "``");
        assert_eq!(stream("content", &["```\n纯文本"]), "纯文本");
        for chunks in all_splits("{x} 你好") {
            assert_eq!(stream("content", &chunks), "{x} 你好", "{chunks:?}");
        }
        assert_eq!(stream("content", &["{ "]), "{ ");
        assert_eq!(stream("content", &["{ }"]), "");
    }

    #[test]
    fn field_is_read_only_at_top_level_and_once() {
        assert_eq!(
            stream("content", &[r#"{"a":{"content":"no"},"b":["content"]}"#]),
            ""
        );
        assert_eq!(
            stream("content", &[r#"{"content":"first","content":"second"}"#]),
            "first"
        );
        assert_eq!(stream("content", &[r#"{"content":null,"x":1}"#]), "");
        assert_eq!(
            stream("content", &[r#"{"con\"tent":"x","content":"y"}"#]),
            "y"
        );
        assert_eq!(stream("content", &[r#"{"content":"x"} trailing"#]), "x");
    }

    #[test]
    fn lone_and_mismatched_surrogates_become_replacement_characters() {
        assert_eq!(stream("c", &[r#"{"c":"\ud83dX"}"#]), "\u{fffd}X");
        assert_eq!(stream("c", &[r#"{"c":"\ude00X"}"#]), "\u{fffd}X");
        assert_eq!(stream("c", &[r#"{"c":"\ud83d\n"}"#]), "\u{fffd}\n");
        assert_eq!(stream("c", &[r#"{"c":"\ud83d\u0041"}"#]), "\u{fffd}A");
        assert_eq!(stream("c", &[r#"{"c":"\ud83d"}"#]), "\u{fffd}");
        assert_eq!(stream("c", &[r#"{"c":"\uzzzzA"}"#]), "\u{fffd}A");
    }
}
