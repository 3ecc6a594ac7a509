//! The JSON lines format: one object per event, with the enclosing spans.
//!
//! Lines are written straight into one buffer (no intermediate JSON values):
//! a few lines are logged per request, and building `serde_json::Value`s
//! for them showed up in the load profile. Span fields, when
//! `log.span_fields` asks for them, are kept as JSON object *members* text
//! (`"a":1,"b":"x"`), rendered once when the span is created and appended
//! to when a field is recorded later, so neither step parses what is already
//! there (the stock `JsonFields` re-parses a span's fields on every record).

use super::TraceIdSource;
use chrono::{Datelike, Timelike};
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Keys this format writes itself; an event field with one of these names is
/// kept as `fields.<name>` instead of being lost.
const RESERVED_KEYS: &[&str] = &[
    "timestamp",
    "level",
    "target",
    "message",
    "trace_id",
    "span_id",
    "span",
    "spans",
];

/// One JSON object per line:
/// `{"timestamp", "level", "target", "message", "trace_id"?, "span_id"?,
/// <event fields as they were named, e.g. "event", "session.id", "error.code">,
/// "span"?: {"name", <fields>?} (the innermost span), "spans"?: [root … innermost]}`.
#[derive(Clone, Default)]
pub(crate) struct JsonLines {
    pub(crate) trace_ids: TraceIdSource,
}

impl<S> FormatEvent<S, JsonSpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonSpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut fields = MembersWriter::for_event();
        event.record(&mut fields);

        let mut line = String::with_capacity(320 + fields.members.len());
        line.push_str("{\"timestamp\":");
        push_timestamp(&mut line, chrono::Utc::now())?;
        line.push_str(",\"level\":");
        push_json_str(&mut line, metadata.level().as_str());
        line.push_str(",\"target\":");
        push_json_str(&mut line, metadata.target());
        if let Some(message) = &fields.message {
            line.push_str(",\"message\":");
            line.push_str(message);
        }
        if let Some((trace_id, span_id)) = self.trace_ids.of_event(event) {
            // Hex digits: nothing to escape.
            write!(
                line,
                ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
            )?;
        }
        if !fields.members.is_empty() {
            line.push(',');
            line.push_str(&fields.members);
        }
        if let Some(scope) = ctx.event_scope() {
            let mut spans = String::with_capacity(128);
            let mut innermost = 0..0;
            for span in scope.from_root() {
                if !spans.is_empty() {
                    spans.push(',');
                }
                let start = spans.len();
                let extensions = span.extensions();
                let members = extensions
                    .get::<FormattedFields<JsonSpanFields>>()
                    .map_or("", |fields| fields.fields.as_str());
                push_span_object(&mut spans, span.name(), members);
                innermost = start..spans.len();
            }
            if !innermost.is_empty() {
                line.push_str(",\"span\":");
                line.push_str(&spans[innermost]);
                line.push_str(",\"spans\":[");
                line.push_str(&spans);
                line.push(']');
            }
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// `{"name": <name>, <members…>}` from a span name and its fields as JSON
/// object members text (empty when the span has no fields or they are off).
fn push_span_object(out: &mut String, name: &str, members: &str) {
    out.push_str("{\"name\":");
    push_json_str(out, name);
    if !members.is_empty() {
        out.push(',');
        out.push_str(members);
    }
    out.push('}');
}

/// RFC 3339 in UTC with microseconds, as a JSON string.
fn push_timestamp(out: &mut String, now: chrono::DateTime<chrono::Utc>) -> fmt::Result {
    // A leap second shows as nanoseconds ≥ 1e9; keep six digits.
    let micros = (now.nanosecond() / 1_000).min(999_999);
    write!(
        out,
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z\"",
        now.year(),
        now.month(),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
    )
}

/// Appends `text` as a JSON string literal (RFC 8259 escapes).
fn push_json_str(out: &mut String, text: &str) {
    out.push('"');
    push_escaped(out, text);
    out.push('"');
}

/// Appends `text` escaped for the inside of a JSON string literal.
fn push_escaped(out: &mut String, text: &str) {
    let mut clean_from = 0;
    // Bytes below 0x80 never occur inside a multi-byte UTF-8 sequence, so
    // every index found here is a char boundary.
    for (index, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[clean_from..index]);
        if escape.is_empty() {
            // Other control characters: \u00XX. Writing to a String cannot fail.
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        clean_from = index + 1;
    }
    out.push_str(&text[clean_from..]);
}

/// A `fmt::Write` that escapes what it is given for a JSON string literal.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        push_escaped(self.0, text);
        Ok(())
    }
}

/// Span fields as JSON object members text, for [`JsonLines`]; nothing at
/// all unless `record` (`log.span_fields`), so spans cost no formatting.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonSpanFields {
    pub(crate) record: bool,
}

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        if !self.record {
            return Ok(());
        }
        let mut visitor = MembersWriter::for_span();
        fields.record(&mut visitor);
        writer.write_str(&visitor.members)
    }

    /// Appends the recorded fields; a field recorded a second time replaces
    /// its earlier value (the rare case that needs a re-parse).
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        if !self.record {
            return Ok(());
        }
        let mut visitor = MembersWriter::for_span();
        fields.record(&mut visitor);
        if visitor.members.is_empty() {
            return Ok(());
        }
        let already_present = visitor.names.iter().any(|name| {
            let mut key = String::with_capacity(name.len() + 3);
            push_json_str(&mut key, name);
            key.push(':');
            current.fields.contains(&key)
        });
        if already_present {
            let mut merged: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&format!("{{{}}}", current.fields)).map_err(|_| fmt::Error)?;
            let recorded: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&format!("{{{}}}", visitor.members))
                    .map_err(|_| fmt::Error)?;
            merged.extend(recorded);
            let object = serde_json::Value::Object(merged).to_string();
            // Strip the braces of the non-empty object.
            current.fields = object[1..object.len() - 1].to_owned();
        } else {
            if !current.fields.is_empty() {
                current.fields.push(',');
            }
            current.fields.push_str(&visitor.members);
        }
        Ok(())
    }
}

/// Writes recorded fields as JSON object members (`"a":1,"b":"x"`), in
/// the order they were recorded. For events, `message` is kept apart and
/// a field named like one of [`RESERVED_KEYS`] becomes `fields.<name>`;
/// spans keep every name as it is.
struct MembersWriter {
    members: String,
    message: Option<String>,
    is_event: bool,
    /// The field names written (spans only: to spot re-recorded fields).
    names: Vec<&'static str>,
}

impl MembersWriter {
    fn for_event() -> Self {
        Self {
            members: String::with_capacity(128),
            message: None,
            is_event: true,
            names: Vec::new(),
        }
    }

    fn for_span() -> Self {
        Self {
            members: String::with_capacity(64),
            message: None,
            is_event: false,
            names: Vec::new(),
        }
    }

    /// The buffer to write `field`'s JSON value to, its key already written.
    fn slot(&mut self, field: &Field) -> &mut String {
        let name = field.name();
        if self.is_event {
            if name == "message" {
                return self.message.insert(String::new());
            }
        } else {
            self.names.push(name);
        }
        if !self.members.is_empty() {
            self.members.push(',');
        }
        if self.is_event && RESERVED_KEYS.contains(&name) {
            self.members.push_str("\"fields.");
            push_escaped(&mut self.members, name);
            self.members.push('"');
        } else {
            push_json_str(&mut self.members, name);
        }
        self.members.push(':');
        &mut self.members
    }

    /// `text` as a JSON string, escaped while it is formatted.
    fn quoted(&mut self, field: &Field, text: fmt::Arguments<'_>) {
        let out = self.slot(field);
        out.push('"');
        // Writing to a String cannot fail.
        let _ = Escaping(out).write_fmt(text);
        out.push('"');
    }

    fn display_as_string(&mut self, field: &Field, value: &dyn fmt::Display) {
        self.quoted(field, format_args!("{value}"));
    }

    fn number(&mut self, field: &Field, value: &dyn fmt::Display) {
        let _ = write!(self.slot(field), "{value}");
    }
}

impl Visit for MembersWriter {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number form.
        match serde_json::Number::from_f64(value) {
            Some(number) => self.number(field, &number),
            None => self.display_as_string(field, &value),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, &value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        // Beyond 64 bits many JSON readers lose precision: a string then.
        if i64::try_from(value).is_ok() {
            self.number(field, &value);
        } else {
            self.display_as_string(field, &value);
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        if u64::try_from(value).is_ok() {
            self.number(field, &value);
        } else {
            self.display_as_string(field, &value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.slot(field)
            .push_str(if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        push_json_str(self.slot(field), value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.display_as_string(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.quoted(field, format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn splices_recorded_fields_after_the_name() {
        let mut text = String::new();
        push_span_object(&mut text, "db.select", r#""db.system":"postgresql","n":3"#);
        let object: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            object,
            json!({"name": "db.select", "db.system": "postgresql", "n": 3})
        );
    }

    #[test]
    fn spans_without_fields_and_odd_names_stay_valid_json() {
        let mut text = String::new();
        push_span_object(&mut text, "say \"hi\"\n", "");
        let object: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(object, json!({"name": "say \"hi\"\n"}));
    }

    /// The span's members text after creating it and recording into it.
    fn members_of(record: bool, build: impl FnOnce()) -> Vec<String> {
        let captured = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&captured);
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(JsonSpanFields { record })
            .event_format(JsonLines::default())
            .with_writer(std::io::sink);
        let subscriber = tracing_subscriber::registry()
            .with(layer)
            .with(SpanMembersProbe(sink));
        tracing::subscriber::with_default(subscriber, build);
        let members = captured.lock().unwrap().clone();
        members
    }

    /// Reads the span's formatted fields when it closes.
    struct SpanMembersProbe(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl<S> tracing_subscriber::Layer<S> for SpanMembersProbe
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
            let span = ctx.span(&id).unwrap();
            let extensions = span.extensions();
            let fields = extensions
                .get::<FormattedFields<JsonSpanFields>>()
                .map(|fields| fields.fields.clone())
                .unwrap_or_default();
            self.0.lock().unwrap().push(fields);
        }
    }

    fn parsed(members: &str) -> Value {
        serde_json::from_str(&format!("{{{members}}}")).unwrap()
    }

    #[test]
    fn span_fields_are_rendered_once_and_appended_when_recorded() {
        let members = members_of(true, || {
            let span = tracing::info_span!(
                "http.request",
                http.route = "/api/x",
                status = tracing::field::Empty,
                weird = "quote \" and \\ and \n"
            );
            span.record("status", 200_u16);
        });
        assert_eq!(members.len(), 1);
        assert_eq!(
            members[0],
            r#""http.route":"/api/x","weird":"quote \" and \\ and \n","status":200"#
        );
        assert_eq!(
            parsed(&members[0]),
            json!({"http.route": "/api/x", "weird": "quote \" and \\ and \n", "status": 200})
        );
    }

    #[test]
    fn a_field_recorded_twice_keeps_one_key_with_the_last_value() {
        let members = members_of(true, || {
            let span = tracing::info_span!("cache.get", hit = tracing::field::Empty, key = "k");
            span.record("hit", false);
            span.record("hit", true);
            span.record("hit", true);
        });
        let text = &members[0];
        assert_eq!(text.matches("\"hit\"").count(), 1, "{text}");
        assert_eq!(parsed(text), json!({"key": "k", "hit": true}));
    }

    #[test]
    fn spans_without_fields_have_empty_members() {
        let members = members_of(true, || {
            let _span = tracing::info_span!("bare");
        });
        assert_eq!(members, [""]);
    }

    #[test]
    fn span_fields_are_not_rendered_unless_asked_for() {
        let members = members_of(false, || {
            let span = tracing::info_span!(
                "db.select",
                db.system = "postgresql",
                n = tracing::field::Empty
            );
            span.record("n", 3);
        });
        assert_eq!(members, [""]);
    }

    #[test]
    fn strings_are_escaped_as_json_reads_them_back() {
        for text in [
            "plain",
            "",
            "quote \" backslash \\ slash /",
            "lines\nand\rreturns\tand tabs",
            "controls \u{0} \u{1} \u{8} \u{c} \u{1f} \u{7f}",
            "unicode: héllo — 日本語 🦀 \u{2028}",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, text);
            let back: String = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
            assert_eq!(back, text);
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        use chrono::TimeZone as _;
        let at = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::microseconds(42);
        let mut out = String::new();
        push_timestamp(&mut out, at).unwrap();
        assert_eq!(out, "\"2026-01-02T03:04:05.000042Z\"");
        let text: String = serde_json::from_str(&out).unwrap();
        assert_eq!(chrono::DateTime::parse_from_rfc3339(&text).unwrap(), at);
    }

    #[test]
    fn every_field_type_becomes_valid_json() {
        let logs = crate::testing::CapturedLogs::default();
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(JsonSpanFields::default())
            .event_format(JsonLines::default())
            .with_writer(logs.clone());
        let error = std::io::Error::other("disk \"full\"");
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!(
                small = -3_i64,
                big = u64::MAX,
                huge = u128::MAX,
                ratio = 0.25_f64,
                nan = f64::NAN,
                yes = true,
                debug = ?Some("a\nb"),
                error = &error as &(dyn std::error::Error + 'static),
                "text with \"quotes\""
            );
        });
        let line = &logs.json_lines().unwrap()[0];
        assert_eq!(line["message"], "text with \"quotes\"");
        assert_eq!(line["small"], -3);
        assert_eq!(line["big"], u64::MAX);
        assert_eq!(line["huge"], u128::MAX.to_string());
        assert_eq!(line["ratio"], 0.25);
        assert_eq!(line["nan"], "NaN");
        assert_eq!(line["yes"], true);
        assert_eq!(line["debug"], "Some(\"a\\nb\")");
        assert_eq!(line["error"], "disk \"full\"");
    }
}
