//! A linear pre-scan that bounds flow-collection nesting (`[`, `{`) before
//! libyaml sees the text: libyaml spends tokens × flow depth, so deep flow
//! nesting costs quadratic time although serde_yaml rejects it afterwards.
//!
//! The scan follows libyaml's tokenisation where it matters: brackets only
//! open at a token start, quoted scalars, plain scalars and comments are
//! skipped. It is built to err towards counting too deep, never too shallow:
//! a quoted region hides `[`/`{` only up to the end of its first line (a
//! misread quote cannot hide nesting on later lines), while it hides `]`/`}`
//! to its real end. Block scalars are scanned like other lines, so only text
//! with hundreds of unbalanced brackets at line starts could trip the limit.

use heartrule_domain::ScriptLoadError;

/// serde_yaml rejects more than 128 levels of any nesting; the margin covers
/// brackets in block-scalar text that the scan counts.
pub(super) const MAX_FLOW_DEPTH: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between tokens.
    TokenStart,
    Plain,
    /// Anchor, alias or tag name.
    Property,
    Comment,
    SingleQuoted {
        opened_on_line: usize,
    },
    DoubleQuoted {
        opened_on_line: usize,
    },
}

// Every character the scan reacts to is ASCII, and UTF-8 never uses ASCII
// byte values inside multi-byte characters, so the scan works on bytes.

fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_flow_indicator(byte: u8) -> bool {
    matches!(byte, b',' | b'[' | b']' | b'{' | b'}')
}

/// Rejects text whose flow collections nest deeper than [`MAX_FLOW_DEPTH`].
pub(super) fn check(text: &str) -> Result<(), ScriptLoadError> {
    let bytes = text.strip_prefix('\u{feff}').unwrap_or(text).as_bytes();
    let mut state = State::TokenStart;
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut column = 0usize;
    let mut index = 0usize;
    while index < bytes.len() {
        let byte = bytes[index];
        let next = bytes.get(index + 1).copied();
        let next_is_blank = next.is_none_or(is_blank);
        let at_line_start = column == 0;
        if byte == b'\n' {
            line += 1;
            column = 0;
        } else if byte & 0xC0 != 0x80 {
            // Columns count characters: skip UTF-8 continuation bytes.
            column += 1;
        }
        index += 1;
        let in_flow = depth > 0;

        let mut open = false;
        let mut close = false;
        state = match state {
            State::Comment if byte == b'\n' => State::TokenStart,
            State::Comment => State::Comment,
            State::SingleQuoted { opened_on_line } => {
                if byte == b'\'' && next == Some(b'\'') {
                    index += 1;
                    column += 1;
                    state
                } else if byte == b'\'' {
                    State::TokenStart
                } else {
                    open = matches!(byte, b'[' | b'{') && line > opened_on_line;
                    state
                }
            }
            State::DoubleQuoted { opened_on_line } => {
                if byte == b'\\' {
                    // The escaped byte is part of the scalar.
                    if next == Some(b'\n') {
                        line += 1;
                        column = 0;
                    } else {
                        column += 1;
                    }
                    index += 1;
                    state
                } else if byte == b'"' {
                    State::TokenStart
                } else {
                    open = matches!(byte, b'[' | b'{') && line > opened_on_line;
                    state
                }
            }
            State::Property if is_blank(byte) => State::TokenStart,
            State::Property if in_flow && is_flow_indicator(byte) => {
                open = matches!(byte, b'[' | b'{');
                close = matches!(byte, b']' | b'}');
                State::TokenStart
            }
            State::Property => State::Property,
            State::Plain => {
                if byte == b':'
                    && (next_is_blank || (in_flow && next.is_some_and(is_flow_indicator)))
                {
                    State::TokenStart
                } else if byte == b'#' && index >= 2 && is_blank(bytes[index - 2]) {
                    State::Comment
                } else if in_flow && is_flow_indicator(byte) {
                    open = matches!(byte, b'[' | b'{');
                    close = matches!(byte, b']' | b'}');
                    State::TokenStart
                } else if byte == b'\n' && !in_flow {
                    // Block plain scalars may continue on the next line;
                    // reading that line from a token start counts more, not less.
                    State::TokenStart
                } else {
                    State::Plain
                }
            }
            State::TokenStart => match byte {
                _ if is_blank(byte) => State::TokenStart,
                b'#' => State::Comment,
                b'%' if at_line_start => State::Comment,
                b'[' | b'{' => {
                    open = true;
                    State::TokenStart
                }
                b']' | b'}' => {
                    close = true;
                    State::TokenStart
                }
                b',' => State::TokenStart,
                b'\'' => State::SingleQuoted {
                    opened_on_line: line,
                },
                b'"' => State::DoubleQuoted {
                    opened_on_line: line,
                },
                b'-' | b'?' | b':' if next_is_blank => State::TokenStart,
                b':' if in_flow => State::TokenStart,
                b'-' | b'.'
                    if at_line_start
                        && bytes.get(index..index + 2) == Some(&[byte, byte][..])
                        && bytes.get(index + 2).is_none_or(|c| is_blank(*c)) =>
                {
                    // `---` / `...` document markers.
                    index += 2;
                    column += 2;
                    State::TokenStart
                }
                b'&' | b'*' | b'!' => State::Property,
                // Block scalar headers: the content lines that follow are
                // scanned as ordinary lines.
                b'|' | b'>' if !in_flow => State::Comment,
                _ => State::Plain,
            },
        };
        if open {
            depth += 1;
            if depth > MAX_FLOW_DEPTH {
                return Err(ScriptLoadError::Syntax {
                    message: format!(
                        "flow collections ([…] / {{…}}) nest deeper than {MAX_FLOW_DEPTH} levels"
                    ),
                    line,
                    column,
                });
            }
        } else if close {
            depth = depth.saturating_sub(1);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn too_deep(text: &str) -> bool {
        matches!(check(text), Err(ScriptLoadError::Syntax { .. }))
    }

    const DEEP: usize = MAX_FLOW_DEPTH + 10;

    #[test]
    fn deep_flow_nesting_is_rejected_with_its_location() {
        let text = format!("a: 1\nsession: {}{}", "[".repeat(DEEP), "]".repeat(DEEP));
        match check(&text) {
            Err(ScriptLoadError::Syntax { line, column, .. }) => {
                assert_eq!(line, 2);
                assert_eq!(column, "session: ".len() + MAX_FLOW_DEPTH + 1);
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        assert!(too_deep(&format!("x: {}", "{a: ".repeat(DEEP))));
        assert!(too_deep(&format!("x: {}", "[ &a !t ".repeat(DEEP))));
    }

    #[test]
    fn shallow_or_sequential_collections_pass() {
        let many = "- {get: x, define: [a, b]}\n".repeat(10_000);
        assert!(check(&many).is_ok());
        let nested = format!(
            "x: {}{}",
            "[".repeat(MAX_FLOW_DEPTH),
            "]".repeat(MAX_FLOW_DEPTH)
        );
        assert!(check(&nested).is_ok());
    }

    #[test]
    fn brackets_in_scalars_and_comments_do_not_count() {
        let brackets = "[".repeat(DEEP);
        assert!(check(&format!("a: '{brackets}'\n")).is_ok());
        assert!(check(&format!("a: \"{brackets}\"\n")).is_ok());
        assert!(check(&format!("a: text {brackets}\n")).is_ok());
        assert!(check(&format!("a: 1 # {brackets}\n")).is_ok());
        assert!(check(&format!("# {brackets}\n")).is_ok());
        assert!(check(&format!("a: [x{brackets}\n")).is_err());
    }

    #[test]
    fn quotes_do_not_hide_closers_from_the_count() {
        // Real nesting with `]` only inside quoted scalars.
        let text = format!("x: {}", "[ \"]]]\" , ']]' , ".repeat(DEEP));
        assert!(too_deep(&text));
        let escaped = format!("x: {}", "[ \"\\\"]]\" , 'it''s]' , ".repeat(DEEP));
        assert!(too_deep(&escaped));
    }

    #[test]
    fn misread_quotes_cannot_hide_nesting_on_later_lines() {
        // A quote in the middle of a plain scalar is text for libyaml.
        assert!(too_deep(&format!("x 'y: {}\n", "[".repeat(DEEP))));
        // A quote that opens a real multi-line scalar hides nothing after
        // its first line either: counting too deep is the safe side.
        assert!(too_deep(&format!("a: '\n{}\n", "[".repeat(DEEP))));
        assert!(too_deep(&format!(
            "a: |\n  don't\nb: {}\n",
            "[".repeat(DEEP)
        )));
    }

    #[test]
    fn multi_byte_text_keeps_columns_in_characters() {
        let text = format!("提示: {}", "[".repeat(DEEP));
        match check(&text) {
            Err(ScriptLoadError::Syntax { line, column, .. }) => {
                assert_eq!(line, 1);
                assert_eq!(column, "提示: ".chars().count() + MAX_FLOW_DEPTH + 1);
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        assert!(too_deep(&format!("\u{feff}{}", "[".repeat(DEEP))));
    }

    #[test]
    fn document_markers_and_flow_plain_scalars() {
        assert!(too_deep(&format!("--- {}", "[".repeat(DEEP))));
        // In flow context a plain scalar ends at a flow indicator, and a
        // quote inside it is text.
        assert!(too_deep(&format!("x: {}", "[it's ".repeat(DEEP))));
        assert!(check("x: {a:b, 'c': [d, \"e\"]}\n").is_ok());
    }
}
