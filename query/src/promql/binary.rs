//! PromQL's binary operators: arithmetic, comparisons (with and without `bool`) and the
//! set operators, between scalars and instant vectors, with Prometheus's vector matching
//! (`on`, `ignoring`, `group_left`, `group_right`) and its errors.

use std::collections::{HashMap, HashSet};

use promql_parser::label::Labels as LabelList;
use promql_parser::parser::{LabelModifier, VectorMatchCardinality};

use super::error::PromError;
use super::value::{Element, Labels, check_unique};

pub(super) fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

fn drops_name(op: &str) -> bool {
    matches!(op, "+" | "-" | "*" | "/" | "%" | "^" | "atan2")
}

/// One operation on two values: the value and whether to keep it (comparisons).
pub(super) fn elem_op(op: &str, l: f64, r: f64) -> Result<(f64, bool), PromError> {
    Ok(match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (l % r, true),
        "^" => (l.powf(r), true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        other => {
            return Err(PromError::bad_data(format!(
                "operator {other:?} is not allowed between these operands"
            )));
        }
    })
}

pub(super) fn vector_scalar(
    op: &str,
    vector: Vec<Element>,
    scalar: f64,
    scalar_left: bool,
    return_bool: bool,
    t: i64,
) -> Result<Vec<Element>, PromError> {
    let mut out = Vec::with_capacity(vector.len());
    for e in vector {
        let (l, r) = if scalar_left {
            (scalar, e.value)
        } else {
            (e.value, scalar)
        };
        let (mut value, mut keep) = elem_op(op, l, r)?;
        if is_comparison(op) && scalar_left {
            value = r;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            let labels = if drops_name(op) || return_bool {
                e.labels.without_name()
            } else {
                e.labels
            };
            out.push(Element {
                labels,
                value,
                ts: t,
            });
        }
    }
    if drops_name(op) || return_bool {
        check_unique(&out)?;
    }
    Ok(out)
}

/// The match signature of a label set under `on(…)` / `ignoring(…)`.
fn signature(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(ls)) => labels.keep(&ls.labels),
        Some(LabelModifier::Exclude(ls)) => labels.drop(&ls.labels),
        None => labels.drop(&[]),
    }
}

pub(super) fn set_op(
    op: &str,
    lhs: Vec<Element>,
    rhs: Vec<Element>,
    matching: &Option<LabelModifier>,
) -> Vec<Element> {
    let right: HashSet<Labels> = rhs.iter().map(|e| signature(&e.labels, matching)).collect();
    match op {
        "and" => lhs
            .into_iter()
            .filter(|e| right.contains(&signature(&e.labels, matching)))
            .collect(),
        "unless" => lhs
            .into_iter()
            .filter(|e| !right.contains(&signature(&e.labels, matching)))
            .collect(),
        _ => {
            let left: HashSet<Labels> =
                lhs.iter().map(|e| signature(&e.labels, matching)).collect();
            let mut out = lhs;
            out.extend(
                rhs.into_iter()
                    .filter(|e| !left.contains(&signature(&e.labels, matching))),
            );
            out
        }
    }
}

fn labels_text(l: &Labels) -> String {
    let inner: Vec<String> = l
        .pairs()
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

pub(super) fn vector_binop(
    op: &str,
    lhs: Vec<Element>,
    rhs: Vec<Element>,
    card: &VectorMatchCardinality,
    matching: &Option<LabelModifier>,
    return_bool: bool,
    t: i64,
) -> Result<Vec<Element>, PromError> {
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (lhs, rhs) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut right: HashMap<Labels, &Element> = HashMap::with_capacity(rhs.len());
    for e in &rhs {
        let sig = signature(&e.labels, matching);
        if let Some(previous) = right.get(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            return Err(PromError::execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                labels_text(&sig),
                labels_text(&previous.labels),
                labels_text(&e.labels)
            )));
        }
        right.insert(sig, e);
    }
    let include: &[String] = match card {
        VectorMatchCardinality::ManyToOne(LabelList { labels })
        | VectorMatchCardinality::OneToMany(LabelList { labels }) => labels,
        _ => &[],
    };
    let mut matched: HashMap<Labels, HashSet<Labels>> = HashMap::new();
    let mut out = Vec::new();
    for l in &lhs {
        let sig = signature(&l.labels, matching);
        let Some(r) = right.get(&sig) else { continue };
        let (vl, vr) = if one_to_many {
            (r.value, l.value)
        } else {
            (l.value, r.value)
        };
        let (mut value, keep) = elem_op(op, vl, vr)?;
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let mut metric = if drops_name(op) || return_bool {
            l.labels.without_name()
        } else {
            l.labels.clone()
        };
        if matches!(card, VectorMatchCardinality::OneToOne) {
            metric = match matching {
                Some(LabelModifier::Include(ls)) => metric.keep(&ls.labels),
                Some(LabelModifier::Exclude(ls)) => metric.remove(&ls.labels),
                None => metric,
            };
        }
        for name in include {
            metric.set(name, r.labels.get(name));
        }
        let inserted = matched.entry(sig.clone()).or_default();
        if matches!(card, VectorMatchCardinality::OneToOne) {
            if !inserted.is_empty() {
                return Err(PromError::execution(format!(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right); match group {}",
                    labels_text(&sig)
                )));
            }
            inserted.insert(Labels::default());
        } else if !inserted.insert(metric.clone()) {
            return Err(PromError::execution(
                "multiple matches for labels: grouping labels must ensure unique matches",
            ));
        }
        out.push(Element {
            labels: metric,
            value,
            ts: t,
        });
    }
    check_unique(&out)?;
    Ok(out)
}
