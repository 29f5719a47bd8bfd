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

/// `sum`, `avg`, `min`, `max`, `count`, `group`, `stddev`, `stdvar` per group.
pub fn simple_aggregate(
    op: &str,
    input: Vec<Element>,
    group_of: &dyn Fn(&Labels) -> Labels,
    t: i64,
) -> Result<Vec<Element>, PromError> {
    struct Group {
        labels: Labels,
        value: f64,
        mean: f64,
        count: f64,
    }
    let mut groups: Vec<Group> = Vec::new();
    // Groups are held while indexed, so their identities stay unique.
    let mut index = GroupIndex::default();
    for e in input {
        let g = group_of(&e.labels);
        let v = e.value;
        match index.find_or_insert(&g, groups.len()) {
            None => {
                groups.push(Group {
                    labels: g,
                    value: match op {
                        "stddev" | "stdvar" => 0.0,
                        _ => v,
                    },
                    mean: v,
                    count: 1.0,
                });
            }
            Some(i) => {
                let g = &mut groups[i];
                g.count += 1.0;
                match op {
                    "sum" => g.value += v,
                    "avg" => {
                        if g.mean.is_infinite() {
                            if v.is_infinite() && (g.mean > 0.0) == (v > 0.0) {
                                continue;
                            }
                            if !v.is_infinite() && !v.is_nan() {
                                continue;
                            }
                        }
                        g.mean += v / g.count - g.mean / g.count;
                    }
                    "max" => {
                        if g.value < v || g.value.is_nan() {
                            g.value = v;
                        }
                    }
                    "min" => {
                        if g.value > v || g.value.is_nan() {
                            g.value = v;
                        }
                    }
                    "stddev" | "stdvar" => {
                        let delta = v - g.mean;
                        g.mean += delta / g.count;
                        g.value += delta * (v - g.mean);
                    }
                    "count" | "group" => {}
                    other => {
                        return Err(PromError::bad_data(format!(
                            "aggregation {other:?} is not supported"
                        )));
                    }
                }
            }
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let value = match op {
            "sum" | "max" | "min" => g.value,
            "avg" => g.mean,
            "count" => g.count,
            "group" => 1.0,
            "stdvar" => g.value / g.count,
            "stddev" => (g.value / g.count).sqrt(),
            other => {
                return Err(PromError::bad_data(format!(
                    "aggregation {other:?} is not supported"
                )));
            }
        };
        out.push(Element {
            labels: g.labels,
            value,
            ts: t,
        });
    }
    Ok(out)
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
