//! A strict parser of the Prometheus text exposition format (0.0.4), for
//! asserting on `/metrics` output. Unlike lenient scrapers it rejects any
//! line it cannot read, and it handles label values with `{`, `,`, `=` or
//! escapes (route templates such as `/api/sessions/{id}`).

use std::collections::BTreeMap;

/// A line of the exposition that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: `{text}`")]
pub struct ExpositionError {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl ExposedSample {
    /// Whether every `(name, value)` pair is among the sample's labels.
    #[must_use]
    pub fn has_labels(&self, wanted: &[(&str, &str)]) -> bool {
        wanted
            .iter()
            .all(|(name, value)| self.labels.get(*name).is_some_and(|actual| actual == value))
    }
}

/// A parsed exposition: `# HELP` and `# TYPE` per family, and the samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub help: BTreeMap<String, String>,
    pub types: BTreeMap<String, String>,
    pub samples: Vec<ExposedSample>,
}

impl Exposition {
    /// Parses `text`, rejecting the first line that is not valid.
    ///
    /// # Errors
    /// The offending line, its number and why.
    pub fn parse(text: &str) -> Result<Self, ExpositionError> {
        let mut exposition = Self::default();
        for (index, line) in text.lines().enumerate() {
            let error = |reason: &str| ExpositionError {
                line: index + 1,
                text: line.to_owned(),
                reason: reason.to_owned(),
            };
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                exposition
                    .comment(comment.trim_start())
                    .map_err(|reason| error(&reason))?;
                continue;
            }
            let sample = parse_sample(line).map_err(|reason| error(&reason))?;
            exposition.samples.push(sample);
        }
        Ok(exposition)
    }

    fn comment(&mut self, comment: &str) -> Result<(), String> {
        let mut words = comment.splitn(3, ' ');
        let keyword = words.next().unwrap_or_default();
        if keyword != "HELP" && keyword != "TYPE" {
            return Ok(()); // any other comment is allowed
        }
        let name = words.next().unwrap_or_default();
        if !is_metric_name(name) {
            return Err(format!("`{name}` is not a metric name"));
        }
        let rest = words.next().unwrap_or_default().to_owned();
        if keyword == "HELP" {
            if self
                .help
                .insert(name.to_owned(), unescape_help(&rest))
                .is_some()
            {
                return Err(format!("second HELP for {name}"));
            }
        } else {
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest.as_str()) {
                return Err(format!("unknown type `{rest}`"));
            }
            if self.types.insert(name.to_owned(), rest).is_some() {
                return Err(format!("second TYPE for {name}"));
            }
        }
        Ok(())
    }

    /// The samples of metric `name` (for a histogram, the name of the series,
    /// e.g. `x_bucket`, `x_sum`, `x_count`).
    #[must_use]
    pub fn samples_named(&self, name: &str) -> Vec<&ExposedSample> {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .collect()
    }

    /// The first sample of `name` having all `labels`.
    #[must_use]
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&ExposedSample> {
        self.samples
            .iter()
            .find(|sample| sample.name == name && sample.has_labels(labels))
    }

    /// The value of the first sample of `name` having all `labels`.
    #[must_use]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.find(name, labels).map(|sample| sample.value)
    }

    /// `(le, cumulative count)` of histogram `name`'s series having all
    /// `labels`, by increasing bound (`+Inf` last, as infinity).
    #[must_use]
    pub fn histogram_buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let series = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|sample| sample.name == series && sample.has_labels(labels))
            .filter_map(|sample| {
                let bound = sample.labels.get("le")?;
                Some((parse_value(bound).ok()?, sample.value))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("`{text}` is not a sample value")),
    }
}

fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_sample(line: &str) -> Result<ExposedSample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("`{name}` is not a metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = parse_value(fields.next().ok_or("a sample needs a value")?)?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("`{timestamp}` is not a timestamp"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".to_owned());
    }
    Ok(ExposedSample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads `name="value",…}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut text: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok(after);
        }
        let (name, after_name) = text.split_once('=').ok_or("a label needs `=`")?;
        let name = name.trim();
        if !is_label_name(name) {
            return Err(format!("`{name}` is not a label name"));
        }
        let mut chars = after_name
            .strip_prefix('"')
            .ok_or("a label value must be quoted")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".to_owned()),
                Some((index, '"')) => break index,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                    _ => return Err("bad escape in a label value".to_owned()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label `{name}` given twice"));
        }
        // Skip the closing quote, then an optional comma.
        text = &after_name[1 + end + 1..];
        text = text.trim_start();
        if let Some(after_comma) = text.strip_prefix(',') {
            text = after_comma;
        } else if !text.starts_with('}') {
            return Err("labels must be separated by `,`".to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_families_samples_and_tricky_label_values() {
        let text = "# HELP http_x Requests, by \\\"route\\\".\n# TYPE http_x histogram\n\
            http_x_bucket{route=\"/api/s/{id}\",le=\"0.5\"} 1\n\
            http_x_bucket{route=\"/api/s/{id}\",le=\"+Inf\"} 2\n\
            http_x_sum{route=\"/api/s/{id}\"} 0.7\n\
            build{v=\"a,b=c \\\"q\\\"\"} 1 1700000000000\n";
        let exposition = Exposition::parse(text).unwrap();
        assert_eq!(exposition.help["http_x"], "Requests, by \"route\".");
        assert_eq!(exposition.types["http_x"], "histogram");
        assert_eq!(
            exposition.histogram_buckets("http_x", &[("route", "/api/s/{id}")]),
            [(0.5, 1.0), (f64::INFINITY, 2.0)]
        );
        assert_eq!(exposition.value("http_x_sum", &[]), Some(0.7));
        assert_eq!(
            exposition.samples_named("build")[0].labels["v"],
            "a,b=c \"q\""
        );
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in [
            "x{a=\"1\"",
            "x{a=1} 1",
            "x{a=\"1\" b=\"2\"} 1",
            "x 1 2 3",
            "x one",
            "1x 1",
            "x{a=\"1\",a=\"2\"} 1",
            "# TYPE x nonsense",
            "x",
        ] {
            assert!(Exposition::parse(bad).is_err(), "{bad}");
        }
        let error = Exposition::parse("ok 1\nbad{").unwrap_err();
        assert_eq!(error.line, 2);
    }
}
