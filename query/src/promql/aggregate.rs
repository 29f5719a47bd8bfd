//! PromQL's aggregation operators over one instant vector, per group: `sum`, `avg`,
//! `min`, `max`, `count`, `group`, `stddev`, `stdvar`, `topk`, `bottomk`, and the
//! `quantile` arithmetic shared with `quantile_over_time`.

use std::collections::HashMap;

use super::error::PromError;
use super::value::{Element, GroupIndex, Labels};

/// Prometheus's `quantile` over values (sorts them).
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Whether `op` is one of the aggregations [`Accumulator`] computes.
pub fn is_simple(op: &str) -> bool {
    matches!(
        op,
        "sum" | "avg" | "min" | "max" | "count" | "group" | "stddev" | "stdvar"
    )
}

/// The running state of one group of a simple aggregation (`sum`, `avg`, `min`, `max`,
/// `count`, `group`, `stddev`, `stdvar`), fed values in input order as Prometheus does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accumulator {
    value: f64,
    mean: f64,
    count: f64,
}

impl Accumulator {
    /// Whether no value was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0.0
    }

    /// Adds `v`.
    pub fn add(&mut self, op: &str, v: f64) {
        if self.count == 0.0 {
            *self = Accumulator {
                value: match op {
                    "stddev" | "stdvar" => 0.0,
                    _ => v,
                },
                mean: v,
                count: 1.0,
            };
            return;
        }
        self.count += 1.0;
        match op {
            "sum" => self.value += v,
            "avg" => {
                if self.mean.is_infinite() {
                    if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                        return;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        return;
                    }
                }
                self.mean += v / self.count - self.mean / self.count;
            }
            "max" if self.value < v || self.value.is_nan() => self.value = v,
            "min" if self.value > v || self.value.is_nan() => self.value = v,
            "stddev" | "stdvar" => {
                let delta = v - self.mean;
                self.mean += delta / self.count;
                self.value += delta * (v - self.mean);
            }
            _ => {}
        }
    }

    /// The aggregate of the values added.
    pub fn value(&self, op: &str) -> f64 {
        match op {
            "avg" => self.mean,
            "count" => self.count,
            "group" => 1.0,
            "stdvar" => self.value / self.count,
            "stddev" => (self.value / self.count).sqrt(),
            _ => self.value,
        }
    }
}

/// `sum`, `avg`, `min`, `max`, `count`, `group`, `stddev`, `stdvar` per group.
pub fn simple_aggregate(
    op: &str,
    input: Vec<Element>,
    group_of: &dyn Fn(&Labels) -> Labels,
    t: i64,
) -> Result<Vec<Element>, PromError> {
    if !is_simple(op) {
        return Err(PromError::bad_data(format!(
            "aggregation {op:?} is not supported"
        )));
    }
    let mut groups: Vec<(Labels, Accumulator)> = Vec::new();
    // Groups are held while indexed, so their identities stay unique.
    let mut index = GroupIndex::default();
    for e in input {
        let g = group_of(&e.labels);
        match index.find_or_insert(&g, groups.len()) {
            None => {
                let mut acc = Accumulator::default();
                acc.add(op, e.value);
                groups.push((g, acc));
            }
            Some(i) => groups[i].1.add(op, e.value),
        }
    }
    Ok(groups
        .into_iter()
        .map(|(labels, acc)| Element {
            labels,
            value: acc.value(op),
            ts: t,
        })
        .collect())
}

/// `topk` / `bottomk`: the `k` largest (smallest) elements of each group, labels kept.
pub fn top_k(
    input: Vec<Element>,
    k: f64,
    top: bool,
    group_of: &dyn Fn(&Labels) -> Labels,
    t: i64,
) -> Vec<Element> {
    if k.is_nan() || k < 1.0 {
        return Vec::new();
    }
    let k = k.min(usize::MAX as f64) as usize;
    let mut groups: Vec<Vec<Element>> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for e in input {
        let g = group_of(&e.labels);
        let i = *index.entry(g).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(e);
    }
    let mut out = Vec::new();
    for mut g in groups {
        sort_by_value(&mut g, top);
        out.extend(g.into_iter().take(k).map(|e| Element { ts: t, ..e }));
    }
    out
}

/// Sorts elements by value, descending or ascending, NaN last either way (as `sort`,
/// `sort_desc`, `topk` and `bottomk` order them).
pub fn sort_by_value(v: &mut [Element], descending: bool) {
    v.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ if descending => b.value.total_cmp(&a.value),
        _ => a.value.total_cmp(&b.value),
    });
}
