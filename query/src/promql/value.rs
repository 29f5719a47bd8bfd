//! PromQL's values: label sets, series of samples, instant vectors, the windows of samples
//! range functions read, and how values are written in Prometheus's JSON.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::error::PromError;

/// The name of the label that holds the metric name.
pub const NAME: &str = "__name__";

/// The bit pattern Prometheus writes as a staleness marker (a NaN that is never produced
/// by arithmetic).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is Prometheus's staleness marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A label set, sorted by name, without empty values. Cloning is cheap (shared).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Arc<Vec<(String, String)>>);

impl Labels {
    /// Builds a sorted label set from pairs (later duplicates win; empty values dropped).
    pub fn from_pairs(mut pairs: Vec<(String, String)>) -> Labels {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        out.retain(|(_, v)| !v.is_empty());
        Labels(Arc::new(out))
    }

    /// Whether another clone of this set exists.
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }

    /// Identity of the shared set (equal for clones), for memoizing work on it.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// The pairs, sorted by name.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The value of `name`, or "" (PromQL treats a missing label as empty).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .map(|i| self.0[i].1.as_str())
            .unwrap_or("")
    }

    /// Sets `name` (an empty value removes it).
    pub fn set(&mut self, name: &str, value: &str) {
        let found = self.0.binary_search_by(|(k, _)| k.as_str().cmp(name));
        if found.is_err() && value.is_empty() {
            return;
        }
        let pairs = Arc::make_mut(&mut self.0);
        match found {
            Ok(i) if value.is_empty() => {
                pairs.remove(i);
            }
            Ok(i) => pairs[i].1 = value.to_string(),
            Err(i) => pairs.insert(i, (name.to_string(), value.to_string())),
        }
    }

    fn filtered(&self, keep: impl Fn(&str) -> bool) -> Labels {
        if self.0.iter().all(|(k, _)| keep(k)) {
            return self.clone();
        }
        Labels(Arc::new(
            self.0.iter().filter(|(k, _)| keep(k)).cloned().collect(),
        ))
    }

    /// The set without the metric name.
    pub fn without_name(&self) -> Labels {
        self.filtered(|k| k != NAME)
    }

    /// Only the labels named in `names`.
    pub fn keep(&self, names: &[String]) -> Labels {
        self.filtered(|k| names.iter().any(|n| n == k))
    }

    /// All labels except those named in `names` and the metric name.
    pub fn drop(&self, names: &[String]) -> Labels {
        self.filtered(|k| k != NAME && !names.iter().any(|n| n == k))
    }

    /// All labels except those named in `names` (the metric name is kept).
    pub fn remove(&self, names: &[String]) -> Labels {
        self.filtered(|k| !names.iter().any(|n| n == k))
    }

    /// Prometheus's JSON object of the labels.
    pub fn json(&self) -> Json {
        Json::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                .collect(),
        )
    }
}

/// Finds the group of a label set by its identity first (groups computed by the
/// evaluator's memo share one set per content) and by content otherwise.
#[derive(Default)]
pub struct GroupIndex {
    by_id: crate::hash::IdMap<usize, usize>,
    by_labels: std::collections::HashMap<Labels, usize>,
}

impl GroupIndex {
    /// The index of `g`'s group, or `None` after recording that it gets `next`.
    pub fn find_or_insert(&mut self, g: &Labels, next: usize) -> Option<usize> {
        if let Some(&i) = self.by_id.get(&g.id()) {
            return Some(i);
        }
        let found = self.by_labels.get(g).copied();
        let i = found.unwrap_or(next);
        if found.is_none() {
            self.by_labels.insert(g.clone(), i);
        }
        self.by_id.insert(g.id(), i);
        found
    }
}

/// A series: labels and samples `(unix ms, value)` in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: Labels,
    /// The samples.
    pub samples: Vec<(i64, f64)>,
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// The element's labels.
    pub labels: Labels,
    /// Its value.
    pub value: f64,
    /// The time of the sample it came from (what `timestamp()` returns), unix ms.
    pub ts: i64,
}

/// The value of a PromQL expression at one instant.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A string.
    String(String),
    /// An instant vector.
    Vector(Vec<Element>),
    /// A range vector.
    Matrix(Vec<Series>),
}

impl Value {
    /// The type's name as Prometheus writes it in `resultType` and errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// One series' samples inside a range, as range functions read them.
pub struct Window<'a> {
    /// The series' labels.
    pub labels: Labels,
    /// The labels without the metric name.
    pub bare: Labels,
    /// The samples, in time order.
    pub samples: Cow<'a, [(i64, f64)]>,
}

/// Fails when two elements share a label set, as Prometheus does after operations that
/// drop the metric name.
pub fn check_unique(vector: &[Element]) -> Result<(), PromError> {
    let mut seen = HashSet::with_capacity(vector.len());
    for e in vector {
        if !seen.insert(&e.labels) {
            return Err(PromError::execution(
                "vector cannot contain metrics with the same labelset",
            ));
        }
    }
    Ok(())
}

/// A float as Prometheus writes sample values: Go's `strconv.FormatFloat(v, 'f', -1, 64)`.
pub fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

/// A unix-ms instant as Prometheus writes it: seconds with up to three decimals.
pub fn time_json(ms: i64) -> Json {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

/// `[time, "value"]`.
pub fn point_json(ms: i64, v: f64) -> Json {
    json!([time_json(ms), float_text(v)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_like_go() {
        assert_eq!(float_text(1.0), "1");
        assert_eq!(float_text(0.1), "0.1");
        assert_eq!(float_text(1e21), "1000000000000000000000");
        assert_eq!(float_text(-2.5e-7), "-0.00000025");
        assert_eq!(float_text(f64::NAN), "NaN");
        assert_eq!(float_text(f64::NEG_INFINITY), "-Inf");
        assert_eq!(time_json(1_500), json!(1.5));
        assert_eq!(time_json(2_000), json!(2));
    }

    #[test]
    fn label_sets_stay_sorted_and_drop_empty_values() {
        let mut l = Labels::from_pairs(vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("c".into(), String::new()),
        ]);
        assert_eq!(
            l.pairs(),
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        l.set("aa", "x");
        l.set("a", "");
        assert_eq!(l.get("aa"), "x");
        assert_eq!(l.get("a"), "");
        assert_eq!(l.pairs().len(), 2);
    }
}
