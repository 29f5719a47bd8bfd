//! PromQL over the `metrics` table, and the Prometheus HTTP API Grafana's Prometheus data
//! source calls (`/api/v1/query`, `query_range`, `series`, `labels`,
//! `label/{name}/values`, `metadata`, `status/buildinfo`).
//!
//! The path of a query:
//!
//! ```text
//! query text ─► promql_parser::parser::parse ─► eval::needs (each selector's window)
//!   ─► load::families (stored metrics in the window, from the files' series indexes
//!      and the head, named by naming.rs)
//!   ─► load::load per selector: number series through each file's series index
//!      (indexed.rs: postings → runs → time and value columns only) and the head;
//!      histograms and summaries through SQL ─► series in memory
//!   ─► eval::Evaluator at each step (functions.rs), or series by series for every step
//!      at once for an aggregation of a range function ─► Prometheus JSON (api.rs)
//! ```
//!
//! The evaluator evaluates a call's arguments and hands their values to
//! `functions::call` (as Prometheus's `FunctionCall` gets `vals`), so functions never
//! drive evaluation and `functions` does not depend on `eval`.
//!
//! Semantics follow Prometheus 2.x, which the end-to-end test compares against side by
//! side: 5-minute lookback, closed range windows, staleness markers, extrapolated rates.

mod aggregate;
mod api;
mod binary;
mod error;
mod eval;
mod functions;
mod indexed;
mod load;
pub mod naming;
mod value;

use std::collections::HashMap;

use promql_parser::parser::Expr;
use promql_parser::parser::value::ValueType;
use serde_json::{Value as Json, json};

pub use api::router;
pub use error::{ErrorKind, PromError};
pub(crate) use indexed::Views as SeriesViews;
pub use value::{Element, Labels, Series, Value, float_text};

use crate::engine::QueryEngine;
use eval::{Evaluator, Need};

/// How far back an instant selector looks for a sample (Prometheus's default).
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// The most points a range query may return per series, as Prometheus.
pub const MAX_POINTS: i64 = 11_000;

/// Parses PromQL, answering parse errors as Prometheus does.
///
/// # Errors
/// `bad_data` with the parser's message.
pub fn parse(query: &str) -> Result<Box<Expr>, PromError> {
    promql_parser::parser::parse(query)
        .map(Box::new)
        .map_err(|e| PromError::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// Reads what `expr` needs for evaluations at instants in `[start, end]` and returns an
/// evaluator over it.
async fn prepare(
    engine: &QueryEngine,
    expr: &Expr,
    start: i64,
    end: i64,
) -> Result<Evaluator, PromError> {
    let mut list: Vec<Need<'_>> = Vec::new();
    eval::needs(expr, start, end, (start, end), LOOKBACK_MS, &mut list);
    let mut data = HashMap::new();
    if let (Some(lo), Some(hi)) = (
        list.iter().map(|n| n.lo).min(),
        list.iter().map(|n| n.hi).max(),
    ) {
        let families = load::families(engine, lo, hi).await?;
        for need in &list {
            let selector = load::Selector::of(need.selector);
            let series = load::load(engine, &families, &selector, need.lo, need.hi).await?;
            data.insert(Evaluator::key(need.selector), series);
        }
    }
    Ok(Evaluator::new(
        data,
        start,
        end,
        LOOKBACK_MS,
        engine.config().timeout,
        engine.config().max_samples,
    ))
}

/// Runs CPU-bound evaluation off the async workers.
async fn blocking<T: Send + 'static>(
    run: impl FnOnce() -> Result<T, PromError> + Send + 'static,
) -> Result<T, PromError> {
    tokio::task::spawn_blocking(run)
        .await
        .map_err(|e| PromError {
            kind: ErrorKind::Internal,
            message: format!("evaluation failed: {e}"),
        })?
}

/// An instant query at `t` (unix ms): Prometheus's `data` object.
///
/// # Errors
/// As Prometheus: `bad_data` for invalid queries, `execution` for evaluation errors,
/// `timeout`.
pub async fn instant_query(engine: &QueryEngine, query: &str, t: i64) -> Result<Json, PromError> {
    let expr = parse(query)?;
    let evaluator = prepare(engine, &expr, t, t).await?;
    blocking(move || {
        let value = evaluator.eval(&expr, t)?;
        Ok(match value {
            Value::Scalar(v) => json!({"resultType": "scalar", "result": value::point_json(t, v)}),
            Value::String(s) => {
                json!({"resultType": "string", "result": [value::time_json(t), s]})
            }
            Value::Vector(v) => json!({
                "resultType": "vector",
                "result": v.iter().map(|e| json!({
                    "metric": e.labels.json(),
                    "value": value::point_json(t, e.value),
                })).collect::<Vec<_>>(),
            }),
            Value::Matrix(m) => json!({"resultType": "matrix", "result": matrix_json(&m)}),
        })
    })
    .await
}

/// An instant query at `t` (unix ms) as samples: each element's labels (with
/// `__name__` when it has one) and value. A scalar is one sample without labels, as
/// Prometheus's rule evaluation reads it.
///
/// # Errors
/// As [`instant_query`], and `bad_data` when the query returns a range vector or a
/// string.
pub async fn instant_samples(
    engine: &QueryEngine,
    query: &str,
    t: i64,
) -> Result<Vec<(Vec<(String, String)>, f64)>, PromError> {
    let expr = parse(query)?;
    let evaluator = prepare(engine, &expr, t, t).await?;
    blocking(move || match evaluator.eval(&expr, t)? {
        Value::Scalar(v) => Ok(vec![(Vec::new(), v)]),
        Value::Vector(v) => Ok(v
            .into_iter()
            .map(|e| (e.labels.pairs().to_vec(), e.value))
            .collect()),
        _ => Err(PromError::bad_data(
            "the query must return an instant vector or a scalar",
        )),
    })
    .await
}

fn matrix_json(m: &[Series]) -> Vec<Json> {
    m.iter()
        .map(|s| {
            json!({
                "metric": s.labels.json(),
                "values": s.samples.iter().map(|(t, v)| value::point_json(*t, *v)).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// A range query: every `step` ms from `start` to `end` (unix ms, inclusive).
///
/// # Errors
/// As [`instant_query`], plus `bad_data` for a step that is not positive, a range that
/// ends before it starts, or more than [`MAX_POINTS`] steps.
pub async fn range_query(
    engine: &QueryEngine,
    query: &str,
    start: i64,
    end: i64,
    step: i64,
) -> Result<Json, PromError> {
    if end < start {
        return Err(PromError::bad_data(
            "end timestamp must not be before start time",
        ));
    }
    if step <= 0 {
        return Err(PromError::bad_data(
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step >= MAX_POINTS {
        return Err(PromError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let expr = parse(query)?;
    match expr.value_type() {
        ValueType::Scalar | ValueType::Vector => {}
        other => {
            return Err(PromError::bad_data(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                if other == ValueType::Matrix {
                    "range vector".to_string()
                } else {
                    other.to_string()
                }
            )));
        }
    }
    let mut evaluator = prepare(engine, &expr, start, end).await?;
    blocking(move || {
        let m = match evaluator.aggregate_range(&expr, start, end, step) {
            Some(m) => m?,
            None => {
                evaluator.precompute(&expr, start, end, step);
                evaluator.over_steps(&expr, start, end, step)?
            }
        };
        Ok(json!({"resultType": "matrix", "result": matrix_json(&m)}))
    })
    .await
}

/// The series that `matchers` (selectors such as `up{job="api"}`) select with samples in
/// `[start, end]` (unix ms). No matcher means every series.
///
/// # Errors
/// `bad_data` for a matcher that is not a selector.
pub async fn series(
    engine: &QueryEngine,
    matchers: &[String],
    start: i64,
    end: i64,
) -> Result<Vec<Series>, PromError> {
    let selectors: Vec<load::Selector> = if matchers.is_empty() {
        vec![load::Selector::of(&everything())]
    } else {
        let mut out = Vec::new();
        for m in matchers {
            match *parse(m)? {
                Expr::VectorSelector(vs) => out.push(load::Selector::of(&vs)),
                _ => {
                    return Err(PromError::bad_data(format!(
                        "invalid parameter \"match[]\": {m:?} is not a series selector"
                    )));
                }
            }
        }
        out
    };
    let families = load::families(engine, start, end).await?;
    let mut all: HashMap<Labels, Series> = HashMap::new();
    for selector in &selectors {
        for s in load::load(engine, &families, selector, start, end).await? {
            if s.samples.iter().any(|x| !value::is_stale(x.1)) {
                all.entry(s.labels.clone()).or_insert(s);
            }
        }
    }
    let mut out: Vec<Series> = all.into_values().collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

fn everything() -> promql_parser::parser::VectorSelector {
    use promql_parser::label::{MatchOp, Matcher, Matchers};
    let any = regex::Regex::new("^(?:.+)$").ok();
    let matchers = match any {
        Some(re) => Matchers::new(vec![Matcher::new(MatchOp::Re(re), value::NAME, ".+")]),
        None => Matchers::empty(),
    };
    promql_parser::parser::VectorSelector::new(None, matchers)
}

/// Stored families with rows in `[start, end]` (unix ms), for `/api/v1/metadata`.
///
/// # Errors
/// When the table cannot be read.
pub async fn metadata(
    engine: &QueryEngine,
    start: i64,
    end: i64,
) -> Result<Vec<(String, &'static str, String, String)>, PromError> {
    Ok(load::families(engine, start, end)
        .await?
        .into_iter()
        .map(|l| {
            let kind = l.family.prometheus_type();
            let unit = if l.family.prometheus {
                l.family.unit.clone()
            } else {
                String::new()
            };
            (l.family.name, kind, l.help, unit)
        })
        .collect())
}

/// The names of all series of stored families with rows in `[start, end]`.
///
/// # Errors
/// When the table cannot be read.
pub async fn metric_names(
    engine: &QueryEngine,
    start: i64,
    end: i64,
) -> Result<Vec<String>, PromError> {
    let families = load::families(engine, start, end).await?;
    let mut names: Vec<String> = families.iter().flat_map(|l| l.family.names()).collect();
    if families.iter().any(|l| !l.family.prometheus) {
        names.push("target_info".to_string());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Parses a Prometheus API duration: float seconds or a PromQL duration (`5m`, `1h30m`).
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_step(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.trim().parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 9.2e12 {
            return Err(format!("cannot parse {text:?} to a valid duration"));
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(text.trim())
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("cannot parse {text:?} to a valid duration"))
}

/// Parses a Prometheus API time into unix ms: float seconds (rounded to the millisecond
/// as Prometheus does), RFC 3339, or Periscope's relative forms (`now-15m`).
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_time_ms(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(secs) = text.trim().parse::<f64>()
        && secs.is_finite()
        && secs.abs() < 9.2e12
    {
        return Ok((secs * 1000.0).round() as i64);
    }
    crate::time::parse_time(text, now_ms.saturating_mul(1_000_000))
        .map(|ns| ns.div_euclid(1_000_000))
        .map_err(|_| format!("cannot parse {text:?} to a valid timestamp"))
}
