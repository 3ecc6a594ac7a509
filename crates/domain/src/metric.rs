//! How a crate declares the metrics it emits: each crate that records a
//! metric declares it once (name, type, unit, labels, help, buckets) in a
//! `pub const METRICS: MetricSet`, uses the declared name constant where it
//! records, and the telemetry crate aggregates every set into the catalogue
//! behind `/metrics`, the README table and the checks on dashboards and
//! alert rules.
//!
//! The type lives here because every crate may depend on the domain, and the
//! domain on nothing of ours; it holds only data, so declaring a metric needs
//! no I/O library.

use metrics::Unit;

/// Bucket upper bounds (seconds) for HTTP, database and lock-wait durations
/// (OpenTelemetry's recommendation for HTTP durations).
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Bucket upper bounds (seconds) for GenAI operations and whole turns
/// (OpenTelemetry GenAI semantic conventions).
pub const GEN_AI_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Bucket upper bounds (tokens) for GenAI token usage (OpenTelemetry GenAI
/// semantic conventions): powers of four from 1 to 4^13.
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// How a metric behaves, as Prometheus shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only ever goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets.
    Histogram,
}

impl MetricKind {
    /// The Prometheus `# TYPE` word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One metric as its emitting crate declares it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDecl {
    /// The Prometheus name (`snake_case`, counters end in `_total`).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The unit registered with the recorder, when there is one.
    pub unit: Option<Unit>,
    /// Every label the metric carries (bounded values only).
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
    /// Histogram bucket upper bounds; `None` for counters and gauges.
    pub buckets: Option<&'static [f64]>,
}

impl MetricDecl {
    /// A counter (unit: count).
    #[must_use]
    pub const fn counter(
        name: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind: MetricKind::Counter,
            unit: Some(Unit::Count),
            labels,
            help,
            buckets: None,
        }
    }

    /// A gauge, with its unit when it has one.
    #[must_use]
    pub const fn gauge(
        name: &'static str,
        unit: Option<Unit>,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind: MetricKind::Gauge,
            unit,
            labels,
            help,
            buckets: None,
        }
    }

    /// A histogram with its bucket upper bounds.
    #[must_use]
    pub const fn histogram(
        name: &'static str,
        unit: Unit,
        labels: &'static [&'static str],
        buckets: &'static [f64],
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind: MetricKind::Histogram,
            unit: Some(unit),
            labels,
            help,
            buckets: Some(buckets),
        }
    }

    /// Why this declaration is malformed, if it is: a name or label that is
    /// not `snake_case`, a counter without `_total` (or a non-counter with
    /// it), an empty help text, a histogram without sorted buckets, a
    /// `_seconds`/`_bytes` name without that unit.
    ///
    /// # Errors
    /// The first problem found, naming the metric.
    pub fn check(&self) -> Result<(), String> {
        let name = self.name;
        let fail = |problem: &str| Err(format!("metric `{name}`: {problem}"));
        if !is_snake_case(name) {
            return fail("the name is not snake_case");
        }
        if let Some(label) = self.labels.iter().find(|label| !is_snake_case(label)) {
            return fail(&format!("label `{label}` is not snake_case"));
        }
        let mut labels = self.labels.to_vec();
        labels.sort_unstable();
        labels.dedup();
        if labels.len() != self.labels.len() {
            return fail("a label is listed twice");
        }
        if self.help.trim().is_empty() {
            return fail("the help text is empty");
        }
        if (self.kind == MetricKind::Counter) != name.ends_with("_total") {
            return fail("counters and only counters end in _total");
        }
        match (self.kind, self.buckets) {
            (MetricKind::Histogram, Some(buckets)) => {
                if buckets.is_empty() || !buckets.windows(2).all(|pair| pair[0] < pair[1]) {
                    return fail("histogram buckets must be non-empty and increasing");
                }
            }
            (MetricKind::Histogram, None) => return fail("a histogram needs buckets"),
            (_, Some(_)) => return fail("only histograms have buckets"),
            (_, None) => {}
        }
        if name.ends_with("_seconds") && self.unit != Some(Unit::Seconds) {
            return fail("a _seconds metric must have the unit seconds");
        }
        if name.ends_with("_bytes") && self.unit != Some(Unit::Bytes) {
            return fail("a _bytes metric must have the unit bytes");
        }
        Ok(())
    }
}

fn is_snake_case(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The metrics one crate emits, under the crate's package name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSet {
    /// The emitting crate: declare with `env!("CARGO_PKG_NAME")` so the
    /// catalogue's "emitted by" column is true by construction.
    pub emitted_by: &'static str,
    /// Its declarations.
    pub metrics: &'static [MetricDecl],
}

impl MetricSet {
    /// The declaration of `name` in this set.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&'static MetricDecl> {
        self.metrics.iter().find(|decl| decl.name == name)
    }

    /// Whether a series this crate recorded (its name and label keys, in any
    /// order) matches a declaration of the set exactly: the check a crate's
    /// tests run on what they captured with a debugging recorder, so an
    /// emission site cannot drift from its declaration.
    ///
    /// # Errors
    /// What does not match.
    pub fn check_series<'a>(
        &self,
        name: &str,
        label_keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let decl = self.get(name).ok_or_else(|| {
            format!(
                "`{name}` is recorded by {} but not declared",
                self.emitted_by
            )
        })?;
        let mut recorded: Vec<&str> = label_keys.into_iter().collect();
        recorded.sort_unstable();
        let mut declared = decl.labels.to_vec();
        declared.sort_unstable();
        if recorded == declared {
            Ok(())
        } else {
            Err(format!(
                "`{name}` is recorded with labels {recorded:?} but declared with {declared:?}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: MetricDecl = MetricDecl::counter("heartrule_things_total", &["kind"], "Things.");

    #[test]
    fn a_well_formed_declaration_passes() {
        assert_eq!(OK.check(), Ok(()));
        let histogram = MetricDecl::histogram(
            "heartrule_wait_seconds",
            Unit::Seconds,
            &[],
            DURATION_BUCKETS,
            "Waits.",
        );
        assert_eq!(histogram.check(), Ok(()));
    }

    #[test]
    fn malformed_declarations_are_named() {
        let cases = [
            MetricDecl::counter("heartrule_things", &[], "Things."),
            MetricDecl::gauge("heartrule_things_total", None, &[], "Things."),
            MetricDecl::counter("Heartrule_things_total", &[], "Things."),
            MetricDecl::counter("heartrule_things_total", &["Kind"], "Things."),
            MetricDecl::counter("heartrule_things_total", &["kind", "kind"], "Things."),
            MetricDecl::counter("heartrule_things_total", &[], " "),
            MetricDecl::histogram("heartrule_wait_seconds", Unit::Seconds, &[], &[], "W."),
            MetricDecl::histogram(
                "heartrule_wait_seconds",
                Unit::Seconds,
                &[],
                &[2.0, 1.0],
                "W.",
            ),
            MetricDecl::histogram("heartrule_wait_seconds", Unit::Count, &[], &[1.0], "W."),
            MetricDecl::gauge("heartrule_limit_bytes", None, &[], "Limit."),
        ];
        for decl in cases {
            let problem = decl.check().expect_err(decl.name);
            assert!(problem.contains(decl.name), "{problem}");
        }
    }

    #[test]
    fn recorded_series_must_match_their_declaration() {
        let set = MetricSet {
            emitted_by: "heartrule-test",
            metrics: &[OK],
        };
        assert_eq!(set.check_series("heartrule_things_total", ["kind"]), Ok(()));
        assert!(set.check_series("heartrule_things_total", []).is_err());
        assert!(set
            .check_series("heartrule_things_total", ["kind", "extra"])
            .is_err());
        assert!(set.check_series("heartrule_other_total", ["kind"]).is_err());
    }

    #[test]
    fn token_buckets_are_powers_of_four() {
        for (exponent, bound) in TOKEN_BUCKETS.iter().enumerate() {
            let expected = 4f64.powi(i32::try_from(exponent).unwrap_or_default());
            assert!((bound - expected).abs() < f64::EPSILON);
        }
        assert_eq!(DURATION_BUCKETS.len(), 14);
        assert_eq!(GEN_AI_DURATION_BUCKETS.len(), 14);
    }
}
