//! A tracing layer that keeps every span field and event field as text.
//!
//! It is installed once as the global subscriber (thread-local defaults
//! race with callsite interest caching when tests run in parallel), and
//! every record carries the thread it happened on: each `#[tokio::test]`
//! runs on its own current-thread runtime, so a test sees only its own.

use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone)]
pub struct CapturedSpan {
    pub name: String,
    pub fields: Vec<(String, String)>,
    id: u64,
    thread: ThreadId,
    closed: bool,
}

impl CapturedSpan {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct Data {
    spans: Vec<CapturedSpan>,
    events: Vec<(ThreadId, Vec<(String, String)>)>,
}

fn global_data() -> &'static Arc<Mutex<Data>> {
    static DATA: OnceLock<Arc<Mutex<Data>>> = OnceLock::new();
    DATA.get_or_init(|| {
        let data = Arc::new(Mutex::new(Data::default()));
        let subscriber = tracing_subscriber::registry().with(CaptureLayer {
            data: Arc::clone(&data),
        });
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        data
    })
}

/// What the current test thread recorded.
pub struct Captured {
    thread: ThreadId,
}

impl Captured {
    /// Starts capturing for the calling test (its thread).
    pub fn start() -> Self {
        global_data();
        Self {
            thread: std::thread::current().id(),
        }
    }

    pub fn spans(&self, name: &str) -> Vec<CapturedSpan> {
        global_data()
            .lock()
            .unwrap()
            .spans
            .iter()
            .filter(|span| span.thread == self.thread && span.name == name)
            .cloned()
            .collect()
    }

    /// Every span field and event field of this test, for "never contains" checks.
    pub fn all_text(&self) -> String {
        let data = global_data().lock().unwrap();
        let mut text = String::new();
        for span in data.spans.iter().filter(|span| span.thread == self.thread) {
            text.push_str(&span.name);
            for (key, value) in &span.fields {
                text.push_str(&format!("\n{key}={value}"));
            }
        }
        for (_, event) in data
            .events
            .iter()
            .filter(|(thread, _)| *thread == self.thread)
        {
            for (key, value) in event {
                text.push_str(&format!("\n{key}={value}"));
            }
        }
        text
    }
}

struct CaptureLayer {
    data: Arc<Mutex<Data>>,
}

struct FieldVisitor<'a>(&'a mut Vec<(String, String)>);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        self.data.lock().unwrap().spans.push(CapturedSpan {
            name: attrs.metadata().name().to_owned(),
            fields,
            id: id.into_u64(),
            thread: std::thread::current().id(),
            closed: false,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut data = self.data.lock().unwrap();
        let open = data
            .spans
            .iter_mut()
            .rev()
            .find(|span| !span.closed && span.id == id.into_u64());
        if let Some(span) = open {
            values.record(&mut FieldVisitor(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        event.record(&mut FieldVisitor(&mut fields));
        self.data
            .lock()
            .unwrap()
            .events
            .push((std::thread::current().id(), fields));
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let mut data = self.data.lock().unwrap();
        let open = data
            .spans
            .iter_mut()
            .rev()
            .find(|span| !span.closed && span.id == id.into_u64());
        if let Some(span) = open {
            span.closed = true;
        }
    }
}
