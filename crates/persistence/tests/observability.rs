//! Every PostgreSQL repository call runs in a `db.<operation>` span with
//! OpenTelemetry database attributes and feeds the query-duration, pool-wait
//! and error metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use heartrule_domain::{RepositoryError, ScriptRepository, SessionRepository};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use support::fixtures::*;
use support::TestDb;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

type Fields = BTreeMap<String, String>;

/// Records the name and fields of every new span.
#[derive(Clone, Default)]
struct SpanLog(Arc<Mutex<Vec<(String, Fields)>>>);

struct FieldVisitor<'a>(&'a mut Fields);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber> Layer<S> for SpanLog {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_owned(), fields));
    }
}

#[test]
fn repository_calls_emit_spans_and_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let spans = SpanLog::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Local recorder and subscriber: both are per thread, and the
    // current-thread runtime runs every repository future on this one.
    tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let db = TestDb::new().await;
                let store = db.store().await;
                let script = session_script("observed");
                store.insert(&script).await.unwrap();
                assert!(matches!(
                    store.insert(&script).await,
                    Err(RepositoryError::Conflict(_))
                ));
                let record = first_turn(new_session(script.id, "user-1"));
                store.create(&record).await.unwrap();
                let turn = claim(&store, record.session.id).await;
                let next = next_turn(&turn.session, "hi", &["hello"]);
                store.commit_turn(&turn.lease, &next).await.unwrap();
            });
        });
    });

    let spans = spans.0.lock().unwrap().clone();
    let span = |name: &str| {
        spans
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, fields)| fields.clone())
            .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
    };
    let insert = span("db.insert");
    assert_eq!(insert["db.system"], "postgresql");
    assert_eq!(insert["db.operation"], "insert");
    assert_eq!(insert["db.collection.name"], "scripts");
    assert_eq!(span("db.claim_turn")["db.collection.name"], "sessions");
    assert_eq!(span("db.commit_turn")["db.operation"], "commit_turn");

    let metrics = snapshotter.snapshot().into_vec();
    let find = |name: &str, labels: &[(&str, &str)]| {
        metrics
            .iter()
            .find(|(key, _, _, _)| {
                let key = key.key();
                key.name() == name
                    && labels.iter().all(|(k, v)| {
                        key.labels()
                            .any(|label| label.key() == *k && label.value() == *v)
                    })
            })
            .map(|(_, _, _, value)| value)
            .unwrap_or_else(|| panic!("no metric {name} {labels:?}"))
    };
    let samples = |value: &DebugValue| match value {
        DebugValue::Histogram(samples) => samples.len(),
        other => panic!("expected a histogram, got {other:?}"),
    };
    let query = "heartrule_db_query_duration_seconds";
    assert_eq!(
        samples(find(
            query,
            &[("operation", "insert"), ("table", "scripts")]
        )),
        2
    );
    assert_eq!(
        samples(find(
            query,
            &[("operation", "claim_turn"), ("table", "sessions")]
        )),
        1
    );
    assert_eq!(
        samples(find(
            query,
            &[("operation", "commit_turn"), ("table", "sessions")]
        )),
        1
    );
    assert!(samples(find("heartrule_db_pool_acquire_duration_seconds", &[])) >= 4);
    assert!(matches!(
        find("heartrule_db_errors_total", &[("kind", "conflict")]),
        DebugValue::Counter(1)
    ));
}
