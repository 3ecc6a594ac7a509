//! A `metrics` recorder that logs every operation, installed per test as the
//! thread's local recorder (tests run on a current-thread runtime).

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone)]
pub struct MetricEvent {
    pub kind: Kind,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Clone, Default)]
pub struct MetricsLog {
    events: Arc<Mutex<Vec<MetricEvent>>>,
}

impl MetricsLog {
    /// Values of `name` (in order) whose labels include all of `labels`.
    pub fn values(&self, kind: Kind, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|event| event.kind == kind && event.name == name)
            .filter(|event| {
                labels
                    .iter()
                    .all(|(key, value)| event.labels.iter().any(|(k, v)| k == key && v == value))
            })
            .map(|event| event.value)
            .collect()
    }

    pub fn events(&self, name: &str) -> Vec<MetricEvent> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|event| event.name == name)
            .cloned()
            .collect()
    }

    pub fn counter_total(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.values(Kind::Counter, name, labels).iter().sum()
    }

    pub fn last_gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.values(Kind::Gauge, name, labels).last().copied()
    }

    fn handle(&self, kind: Kind, key: &Key) -> Arc<Handle> {
        Arc::new(Handle {
            log: self.clone(),
            kind,
            name: key.name().to_owned(),
            labels: key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect(),
        })
    }
}

struct Handle {
    log: MetricsLog,
    kind: Kind,
    name: String,
    labels: Vec<(String, String)>,
}

impl Handle {
    fn push(&self, value: f64) {
        self.log.events.lock().unwrap().push(MetricEvent {
            kind: self.kind,
            name: self.name.clone(),
            labels: self.labels.clone(),
            value,
        });
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.push(value as f64);
    }

    fn absolute(&self, _value: u64) {
        panic!("the LLM crate never sets counters to absolute values");
    }
}

impl GaugeFn for Handle {
    fn increment(&self, _value: f64) {
        panic!("the LLM crate only sets gauges");
    }

    fn decrement(&self, _value: f64) {
        panic!("the LLM crate only sets gauges");
    }

    fn set(&self, value: f64) {
        self.push(value);
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        self.push(value);
    }
}

impl Recorder for MetricsLog {
    fn describe_counter(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}
    fn describe_gauge(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}
    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(Kind::Counter, key))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(Kind::Gauge, key))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(Kind::Histogram, key))
    }
}
