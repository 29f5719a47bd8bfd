//! The OpenTelemetry-to-Prometheus compatibility rules: which series PromQL sees for
//! each stored OTLP metric (as Prometheus's own OTLP receiver translates them).
//!
//! - Metric names: characters other than letters and digits separate words, which are
//!   joined by `_`; the unit is appended (`s` → `_seconds`, `By` → `_bytes`,
//!   `By/s` → `_bytes_per_second`, `{annotations}` dropped) unless the name has it already;
//!   monotonic sums end in `_total`; gauges of unit `1` end in `_ratio`.
//! - Histograms give `<name>_bucket{le=…}` (cumulative), `<name>_sum`, `<name>_count`;
//!   summaries give `<name>{quantile=…}`, `<name>_sum`, `<name>_count`; exponential
//!   histograms give `<name>_sum` and `<name>_count` (their buckets stay in SQL).
//! - Labels: attribute keys with other characters than letters, digits and `_` get `_`
//!   there; a leading digit gets a `key_` prefix. Resource attributes give `job`
//!   (`service.namespace/service.name`) and `instance` (`service.instance.id`); the other
//!   resource attributes are labels of `target_info`.
//! - Series written by Prometheus remote write keep their names and labels.

/// How a family's rows become series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// One series per row: `value` (gauges, sums, remote-written samples).
    Number,
    /// `_bucket{le}`, `_sum`, `_count`.
    Histogram,
    /// `_sum`, `_count` only.
    ExponentialHistogram,
    /// `{quantile}`, `_sum`, `_count`.
    Summary,
}

/// One stored metric as PromQL sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Family {
    /// `metric_name` in the table.
    pub stored_name: String,
    /// `metric_type` in the table.
    pub metric_type: String,
    /// `unit` in the table.
    pub unit: String,
    /// `is_monotonic` in the table.
    pub monotonic: bool,
    /// Written by remote write: names and labels are used as they are.
    pub prometheus: bool,
    /// The Prometheus base name.
    pub name: String,
    /// How rows become series.
    pub shape: Shape,
}

impl Family {
    /// The family of a stored metric.
    pub fn new(
        stored_name: &str,
        metric_type: &str,
        unit: &str,
        monotonic: bool,
        prometheus: bool,
    ) -> Family {
        let shape = if prometheus {
            Shape::Number
        } else {
            match metric_type {
                "histogram" => Shape::Histogram,
                "exponential_histogram" => Shape::ExponentialHistogram,
                "summary" => Shape::Summary,
                _ => Shape::Number,
            }
        };
        let name = if prometheus {
            stored_name.to_string()
        } else {
            metric_name(stored_name, unit, metric_type, monotonic)
        };
        Family {
            stored_name: stored_name.to_string(),
            metric_type: metric_type.to_string(),
            unit: unit.to_string(),
            monotonic,
            prometheus,
            name,
            shape,
        }
    }

    /// Every metric name the family exposes.
    pub fn names(&self) -> Vec<String> {
        let n = &self.name;
        match self.shape {
            Shape::Number => vec![n.clone()],
            Shape::Histogram => vec![
                format!("{n}_bucket"),
                format!("{n}_sum"),
                format!("{n}_count"),
            ],
            Shape::ExponentialHistogram => vec![format!("{n}_sum"), format!("{n}_count")],
            Shape::Summary => vec![n.clone(), format!("{n}_sum"), format!("{n}_count")],
        }
    }

    /// Prometheus's metadata type of the family.
    pub fn prometheus_type(&self) -> &'static str {
        match (self.metric_type.as_str(), self.monotonic) {
            ("sum", true) => "counter",
            ("histogram" | "exponential_histogram", _) => "histogram",
            ("summary", _) => "summary",
            _ => "gauge",
        }
    }
}

fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// Words of `text`: runs of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// A unit as name words: mapped when known, else its own letters and digits.
fn unit_words(unit: &str, map: fn(&str) -> Option<&'static str>) -> Vec<String> {
    match map(unit) {
        Some(w) => vec![w.to_string()],
        None => words(unit),
    }
}

/// The Prometheus name of an OTLP metric.
pub fn metric_name(name: &str, unit: &str, metric_type: &str, monotonic: bool) -> String {
    let mut tokens = words(name);
    // Annotations in braces are not units.
    let mut unit = unit.to_string();
    while let (Some(open), Some(close)) = (unit.find('{'), unit.find('}')) {
        if close < open {
            break;
        }
        unit.replace_range(open..=close, "");
    }
    let unit = unit.trim();
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), p.trim()),
        None => (unit, ""),
    };
    if !main.is_empty() && main != "1" {
        let w = unit_words(main, unit_word).join("_");
        if !w.is_empty() && !tokens.contains(&w) {
            tokens.push(w);
        }
    }
    if !per.is_empty() {
        let w = unit_words(per, per_unit_word).join("_");
        let suffix = format!("per_{w}");
        if !w.is_empty() && !tokens.join("_").ends_with(&suffix) {
            tokens.push("per".to_string());
            tokens.push(w);
        }
    }
    if metric_type == "sum" && monotonic {
        tokens.retain(|t| t != "total");
        tokens.push("total".to_string());
    }
    if metric_type == "gauge" && unit == "1" {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".to_string());
    }
    let joined = tokens.join("_");
    if joined.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{joined}")
    } else {
        joined
    }
}

/// The Prometheus label name of an attribute key.
pub fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_rules() {
        for (name, unit, kind, mono, expected) in [
            (
                "http.server.request.duration",
                "s",
                "histogram",
                false,
                "http_server_request_duration_seconds",
            ),
            (
                "http.requests",
                "{request}",
                "sum",
                true,
                "http_requests_total",
            ),
            ("requests.total", "1", "sum", true, "requests_total"),
            (
                "system.memory.usage",
                "By",
                "sum",
                false,
                "system_memory_usage_bytes",
            ),
            (
                "cpu.utilization",
                "1",
                "gauge",
                false,
                "cpu_utilization_ratio",
            ),
            (
                "network.io",
                "By/s",
                "gauge",
                false,
                "network_io_bytes_per_second",
            ),
            ("latency_seconds", "s", "gauge", false, "latency_seconds"),
            ("queue..depth", "", "gauge", false, "queue_depth"),
            ("2xx.count", "", "gauge", false, "_2xx_count"),
            ("temp", "Cel", "gauge", false, "temp_celsius"),
        ] {
            assert_eq!(
                metric_name(name, unit, kind, mono),
                expected,
                "{name} {unit}"
            );
        }
    }

    #[test]
    fn labels_are_sanitized() {
        assert_eq!(label_name("http.route"), "http_route");
        assert_eq!(label_name("k8s.pod-name"), "k8s_pod_name");
        assert_eq!(label_name("2fa"), "key_2fa");
        assert_eq!(label_name("plain"), "plain");
    }

    #[test]
    fn families_expose_their_series_names() {
        let h = Family::new("rpc.duration", "histogram", "ms", false, false);
        assert_eq!(
            h.names(),
            [
                "rpc_duration_milliseconds_bucket",
                "rpc_duration_milliseconds_sum",
                "rpc_duration_milliseconds_count"
            ]
        );
        let p = Family::new("up", "gauge", "", false, true);
        assert_eq!(p.names(), ["up"]);
        assert_eq!(
            Family::new("x", "sum", "", true, false).prometheus_type(),
            "counter"
        );
    }
}
