//! The JSON lines format: one object per event, with the fields of the
//! enclosing spans.
//!
//! Span fields are kept as JSON object *members* text (`"a":1,"b":"x"`),
//! rendered once when the span is created and appended to when a field is
//! recorded later, so neither step parses what is already there (the stock
//! `JsonFields` re-parses and re-serializes a span's fields on every
//! `Span::record`, which showed up in the load profile).

use super::TraceIdSource;
use serde::ser::{SerializeMap, Serializer as _};
use serde_json::Value;
use std::fmt;
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
/// "span"?: {"name", <fields>} (the innermost span), "spans"?: [root … innermost]}`.
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
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);

        let mut entries: Vec<(String, Value)> = Vec::with_capacity(visitor.fields.len() + 8);
        entries.push((
            "timestamp".to_owned(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        ));
        entries.push((
            "level".to_owned(),
            Value::String(metadata.level().as_str().to_owned()),
        ));
        entries.push((
            "target".to_owned(),
            Value::String(metadata.target().to_owned()),
        ));
        if let Some(message) = visitor.message.take() {
            entries.push(("message".to_owned(), message));
        }
        if let Some((trace_id, span_id)) = self.trace_ids.of_event(event) {
            entries.push(("trace_id".to_owned(), Value::String(trace_id.to_string())));
            entries.push(("span_id".to_owned(), Value::String(span_id.to_string())));
        }
        for (name, value) in visitor.fields {
            let key = if RESERVED_KEYS.contains(&name.as_str()) {
                format!("fields.{name}")
            } else {
                name
            };
            entries.push((key, value));
        }

        let mut line = ordered_json_object(&entries).map_err(|_| fmt::Error)?;
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<String> = scope
                .from_root()
                .map(|span| {
                    let extensions = span.extensions();
                    let members = extensions
                        .get::<FormattedFields<JsonSpanFields>>()
                        .map_or("", |fields| fields.fields.as_str());
                    span_object(span.name(), members)
                })
                .collect();
            if let Some(innermost) = spans.last() {
                // `line` is a non-empty object: replace its closing brace.
                line.pop();
                line.push_str(",\"span\":");
                line.push_str(innermost);
                line.push_str(",\"spans\":[");
                line.push_str(&spans.join(","));
                line.push_str("]}");
            }
        }
        writeln!(writer, "{line}")
    }
}

/// `{"name": <name>, <members…>}` from a span name and its fields as JSON
/// object members text (empty when the span has no fields).
fn span_object(name: &str, members: &str) -> String {
    let name = Value::String(name.to_owned()).to_string();
    if members.is_empty() {
        format!("{{\"name\":{name}}}")
    } else {
        format!("{{\"name\":{name},{members}}}")
    }
}

/// Serializes the entries as one JSON object, keeping their order (the
/// common keys first is easier to read than alphabetical).
fn ordered_json_object(entries: &[(String, Value)]) -> Result<String, serde_json::Error> {
    let mut buffer = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut buffer);
    let mut map = serializer.serialize_map(Some(entries.len()))?;
    for (key, value) in entries {
        map.serialize_entry(key, value)?;
    }
    map.end()?;
    // serde_json writes UTF-8 only.
    String::from_utf8(buffer).map_err(|error| serde::ser::Error::custom(error.to_string()))
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
        let mut visitor = JsonVisitor::default();
        fields.record(&mut visitor);
        writer.write_str(&members(visitor.all())?)
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
        let mut visitor = JsonVisitor::default();
        fields.record(&mut visitor);
        let recorded = visitor.all();
        if recorded.is_empty() {
            return Ok(());
        }
        let already_present = recorded.iter().any(|(name, _)| {
            current
                .fields
                .contains(&format!("{}:", Value::String(name.clone())))
        });
        if already_present {
            let mut merged: serde_json::Map<String, Value> =
                serde_json::from_str(&format!("{{{}}}", current.fields)).map_err(|_| fmt::Error)?;
            merged.extend(recorded);
            let merged: Vec<(String, Value)> = merged.into_iter().collect();
            current.fields = members(merged)?;
        } else {
            if !current.fields.is_empty() {
                current.fields.push(',');
            }
            current.fields.push_str(&members(recorded)?);
        }
        Ok(())
    }
}

/// `"a":1,"b":"x"`: the entries as JSON object members, in order.
fn members(entries: Vec<(String, Value)>) -> Result<String, fmt::Error> {
    if entries.is_empty() {
        return Ok(String::new());
    }
    let object = ordered_json_object(&entries).map_err(|_| fmt::Error)?;
    // Strip the braces of the non-empty object.
    Ok(object[1..object.len() - 1].to_owned())
}

/// Event or span fields as JSON values, in the order they were recorded.
#[derive(Default)]
struct JsonVisitor {
    message: Option<Value>,
    fields: Vec<(String, Value)>,
}

impl JsonVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(value);
        } else {
            self.fields.push((field.name().to_owned(), value));
        }
    }

    /// Every field, `message` included (spans keep it as a plain field).
    fn all(self) -> Vec<(String, Value)> {
        let mut fields = self.fields;
        if let Some(message) = self.message {
            fields.push(("message".to_owned(), message));
        }
        fields
    }
}

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number form.
        let json = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, json);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let json =
            i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, json);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let json =
            u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, json);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn splices_recorded_fields_after_the_name() {
        let object: Value = serde_json::from_str(&span_object(
            "db.select",
            r#""db.system":"postgresql","n":3"#,
        ))
        .unwrap();
        assert_eq!(
            object,
            json!({"name": "db.select", "db.system": "postgresql", "n": 3})
        );
    }

    #[test]
    fn spans_without_fields_and_odd_names_stay_valid_json() {
        let object: Value = serde_json::from_str(&span_object("say \"hi\"\n", "")).unwrap();
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
}
