//! PromQL functions and aggregation operators, with Prometheus 2.x's arithmetic
//! (extrapolated rates, Kahan-compensated sums over time, bucket interpolation).
//!
//! A function gets its arguments already evaluated ([`Arg`]: a value, or a range vector
//! as windows of samples) from the evaluator, which also refuses unsupported functions
//! ([`is_supported`]) before it evaluates anything.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};
use regex::Regex;

use super::aggregate::{quantile, sort_by_value};
use super::error::PromError;
use super::value::{Element, Labels, NAME, Value, Window, check_unique};
use periscope_storage::names::is_label_name;

/// Go's `math.Max`: NaN wins.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN wins.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Neumaier's compensated addition, as Prometheus's `kahanSumInc`.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Prometheus's `extrapolatedRate` for `rate`, `increase` and `delta`.
fn extrapolated_rate(
    samples: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    extrapolated(
        samples,
        (range_start, range_end, range_ms),
        counter,
        rate,
        counter,
    )
}

/// [`extrapolated_rate`], told whether the window may hold a counter reset: without
/// one, the pass that adds resets back would add nothing and is skipped.
fn extrapolated(
    samples: &[(i64, f64)],
    (range_start, range_end, range_ms): (i64, i64, i64),
    counter: bool,
    rate: bool,
    may_reset: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let mut result = last.1 - first.1;
    if counter && may_reset {
        let mut previous = 0.0;
        for s in samples {
            if s.1 < previous {
                result += previous;
            }
            previous = s.1;
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let average = sampled / (samples.len() - 1) as f64;
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    result *= interval / sampled;
    if rate {
        result /= range_ms as f64 / 1000.0;
    }
    Some(result)
}

/// `irate` / `idelta` from the last two samples.
fn instant_value(samples: &[(i64, f64)], rate: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (prev, last) = (samples[samples.len() - 2], samples[samples.len() - 1]);
    let mut result = if rate && last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    let interval = last.0 - prev.0;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares slope and intercept at `intercept_time`, as Prometheus computes them.
fn linear_regression(samples: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = samples[0].1;
    let mut const_y = true;
    for (i, s) in samples.iter().enumerate() {
        if const_y && i > 0 && s.1 != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (s.0 - intercept_time) as f64 / 1e3;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(s.1, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * s.1, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

fn over_time(name: &str, samples: &[(i64, f64)], q: f64) -> Option<f64> {
    let values = || samples.iter().map(|s| s.1);
    Some(match name {
        "avg_over_time" => {
            let (mut mean, mut count, mut c) = (0.0_f64, 0.0, 0.0);
            for v in values() {
                count += 1.0;
                if mean.is_infinite() {
                    if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                (mean, c) = kahan_inc(v / count - mean / count, mean, c);
            }
            if mean.is_infinite() { mean } else { mean + c }
        }
        "sum_over_time" => {
            let (mut sum, mut c) = (0.0_f64, 0.0);
            for v in values() {
                (sum, c) = kahan_inc(v, sum, c);
            }
            if sum.is_infinite() { sum } else { sum + c }
        }
        "count_over_time" => samples.len() as f64,
        "min_over_time" => values().fold(f64::NAN, |m, v| if v < m || m.is_nan() { v } else { m }),
        "max_over_time" => values().fold(f64::NAN, |m, v| if v > m || m.is_nan() { v } else { m }),
        "last_over_time" => samples.last()?.1,
        "present_over_time" => 1.0,
        "quantile_over_time" => quantile(q, &mut values().collect::<Vec<_>>()),
        "stddev_over_time" | "stdvar_over_time" => {
            let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for v in values() {
                count += 1.0;
                let delta = v - (mean + c_mean);
                (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
                (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
            }
            let var = (aux + c_aux) / count;
            if name == "stddev_over_time" {
                var.sqrt()
            } else {
                var
            }
        }
        "changes" => {
            let mut changes = 0.0;
            for w in samples.windows(2) {
                if w[1].1 != w[0].1 && !(w[1].1.is_nan() && w[0].1.is_nan()) {
                    changes += 1.0;
                }
            }
            changes
        }
        "resets" => {
            let mut resets = 0.0;
            for w in samples.windows(2) {
                if w[1].1 < w[0].1 {
                    resets += 1.0;
                }
            }
            resets
        }
        _ => return None,
    })
}

/// Functions of one range argument that give one value per series.
pub fn is_range_function(name: &str) -> bool {
    matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "deriv"
            | "changes"
            | "resets"
            | "avg_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "min_over_time"
            | "max_over_time"
            | "last_over_time"
            | "present_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
    )
}

/// The value of range function `name` over one series' samples in the window ending at
/// `end` of length `range` (ms); `None` when the function gives nothing (too few samples).
pub fn range_value(name: &str, samples: &[(i64, f64)], end: i64, range: i64) -> Option<f64> {
    match name {
        "rate" | "increase" | "delta" => extrapolated_rate(
            samples,
            end - range,
            end,
            range,
            name != "delta",
            name == "rate",
        ),
        "irate" => instant_value(samples, true),
        "idelta" => instant_value(samples, false),
        "deriv" if samples.len() >= 2 => Some(linear_regression(samples, samples[0].0).0),
        "deriv" => None,
        _ => over_time(name, samples, 0.0),
    }
}

/// As [`range_value`], for a window in which the caller knows no counter reset happens
/// (no sample below the one before it, the first not below zero): `rate` and
/// `increase` then skip looking for resets. The same value as [`range_value`].
pub fn range_value_without_resets(
    name: &str,
    samples: &[(i64, f64)],
    end: i64,
    range: i64,
) -> Option<f64> {
    match name {
        "rate" | "increase" => extrapolated(
            samples,
            (end - range, end, range),
            true,
            name == "rate",
            false,
        ),
        _ => range_value(name, samples, end, range),
    }
}

/// A function's argument, evaluated by the evaluator before the call (as Prometheus's
/// `FunctionCall` receives its values): a range-vector argument (a matrix selector or a
/// subquery) as windows of samples, any other as its value.
pub enum Arg<'a> {
    /// A scalar, string or instant-vector argument.
    Value(Value),
    /// A range-vector argument.
    Range(Range<'a>),
}

impl Arg<'_> {
    /// The type name in errors, as [`Value::type_name`] (a range vector is a `matrix`).
    fn type_name(&self) -> &'static str {
        match self {
            Arg::Value(v) => v.type_name(),
            Arg::Range(_) => "matrix",
        }
    }
}

/// A range-vector argument: its series' windows, the instant they end at and their length.
pub struct Range<'a> {
    /// Each series' samples in the range, staleness markers left out.
    pub series: Vec<Window<'a>>,
    /// The instant the range ends at (unix ms).
    pub end: i64,
    /// The length of the range (ms).
    pub range: i64,
    /// The series are known to stay distinct without their metric names (a selector
    /// whose series do), so results need no uniqueness check.
    pub unique: bool,
}

/// A call's evaluated arguments, taken one at a time by position.
struct Args<'a> {
    name: &'a str,
    values: Vec<Option<Arg<'a>>>,
}

impl<'a> Args<'a> {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn take(&mut self, i: usize) -> Result<Arg<'a>, PromError> {
        self.values
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| {
                PromError::bad_data(format!("{} is missing argument {}", self.name, i + 1))
            })
    }

    fn vector(&mut self, i: usize) -> Result<Vec<Element>, PromError> {
        match self.take(i)? {
            Arg::Value(Value::Vector(v)) => Ok(v),
            other => Err(PromError::bad_data(format!(
                "expected an instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    fn scalar(&mut self, i: usize) -> Result<f64, PromError> {
        match self.take(i)? {
            Arg::Value(Value::Scalar(v)) => Ok(v),
            other => Err(PromError::bad_data(format!(
                "expected a scalar, got {}",
                other.type_name()
            ))),
        }
    }

    fn string(&mut self, i: usize) -> Result<String, PromError> {
        match self.take(i)? {
            Arg::Value(Value::String(s)) => Ok(s),
            other => Err(PromError::bad_data(format!(
                "expected a string argument, got {}",
                other.type_name()
            ))),
        }
    }

    fn range(&mut self, i: usize) -> Result<Range<'a>, PromError> {
        match self.take(i)? {
            Arg::Range(r) => Ok(r),
            Arg::Value(_) => Err(PromError::bad_data("expected a range vector argument")),
        }
    }
}

/// Labels `absent` gives: the equality matchers of a selector argument.
fn absent_labels(arg: &Expr) -> Labels {
    let vs = match arg {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(m) => &m.vs,
        _ => return Labels::default(),
    };
    let mut seen: HashMap<&str, Option<&str>> = HashMap::new();
    for m in &vs.matchers.matchers {
        if m.name == NAME {
            continue;
        }
        let v = match m.op {
            MatchOp::Equal => Some(m.value.as_str()),
            _ => None,
        };
        seen.entry(m.name.as_str())
            .and_modify(|e| *e = None)
            .or_insert(v);
    }
    Labels::from_pairs(
        seen.into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string())))
            .collect(),
    )
}

fn map_values(v: Vec<Element>, t: i64, f: impl Fn(f64) -> f64) -> Vec<Element> {
    v.into_iter()
        .map(|e| Element {
            labels: e.labels.without_name(),
            value: f(e.value),
            ts: t,
        })
        .collect()
}

fn date_part(name: &str, seconds: f64) -> f64 {
    if !seconds.is_finite() {
        return f64::NAN;
    }
    let Some(d) = DateTime::from_timestamp(seconds.floor() as i64, 0) else {
        return f64::NAN;
    };
    match name {
        "minute" => d.minute() as f64,
        "hour" => d.hour() as f64,
        "day_of_week" => d.weekday().num_days_from_sunday() as f64,
        "day_of_month" => d.day() as f64,
        "day_of_year" => d.ordinal() as f64,
        "month" => d.month() as f64,
        "year" => d.year() as f64,
        _ => {
            // days_in_month
            let (y, m) = (d.year(), d.month());
            let next = if m == 12 {
                chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
            } else {
                chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
            };
            match (next, chrono::NaiveDate::from_ymd_opt(y, m, 1)) {
                (Some(n), Some(f)) => (n - f).num_days() as f64,
                _ => f64::NAN,
            }
        }
    }
}

/// Prometheus's `histogram_quantile` over classic `le` buckets of one group.
fn classic_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Coalesce equal bounds, then force the cumulative counts monotonic.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (le, c) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += c,
            _ => merged.push((le, c)),
        }
    }
    if merged.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let mut counts = Vec::with_capacity(merged.len());
    let mut previous = 0.0;
    for b in &merged {
        counts.push(b.1 - previous);
        previous = b.1;
    }
    let bounds: Vec<f64> = merged[..merged.len() - 1].iter().map(|b| b.0).collect();
    crate::udf::bucket_quantile(q, &counts, &bounds).unwrap_or(f64::NAN)
}

fn arity(c: &Call, min: usize, max: usize) -> Result<(), PromError> {
    let n = c.args.args.len();
    if n < min || n > max {
        return Err(PromError::bad_data(format!(
            "wrong number of arguments for {}: {n}",
            c.func.name
        )));
    }
    Ok(())
}

/// Whether Periscope implements function `name`; the evaluator refuses the others before
/// it evaluates their arguments.
pub fn is_supported(name: &str) -> bool {
    is_range_function(name) || SUPPORTED.contains(&name)
}

/// The functions [`call`] implements, besides the range functions.
const SUPPORTED: &[&str] = &[
    "time",
    "pi",
    "scalar",
    "vector",
    "quantile_over_time",
    "predict_linear",
    "absent",
    "absent_over_time",
    "abs",
    "ceil",
    "floor",
    "exp",
    "ln",
    "log2",
    "log10",
    "sqrt",
    "sgn",
    "deg",
    "rad",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "sinh",
    "cosh",
    "tanh",
    "asinh",
    "acosh",
    "atanh",
    "round",
    "clamp",
    "clamp_min",
    "clamp_max",
    "timestamp",
    "sort",
    "sort_desc",
    "minute",
    "hour",
    "day_of_week",
    "day_of_month",
    "day_of_year",
    "days_in_month",
    "month",
    "year",
    "label_replace",
    "label_join",
    "histogram_quantile",
];

/// The error for a function Periscope does not implement.
pub fn unsupported(name: &str) -> PromError {
    PromError::bad_data(format!("function {name:?} is not supported by Periscope"))
}

/// Applies function `c` at `t` to its arguments `values`, evaluated by the evaluator in
/// the order of `c.args` (the syntax is there for what needs it, such as `absent`'s
/// labels).
pub fn call(c: &Call, values: Vec<Arg<'_>>, t: i64) -> Result<Value, PromError> {
    let name = c.func.name;
    let arg = |i: usize| -> Result<&Expr, PromError> {
        c.args
            .args
            .get(i)
            .map(|b| b.as_ref())
            .ok_or_else(|| PromError::bad_data(format!("{name} is missing argument {}", i + 1)))
    };
    let mut args = Args {
        name,
        values: values.into_iter().map(Some).collect(),
    };
    let out: Vec<Element> = match name {
        "time" => return Ok(Value::Scalar(t as f64 / 1000.0)),
        "pi" => return Ok(Value::Scalar(std::f64::consts::PI)),
        "scalar" => {
            let v = args.vector(0)?;
            return Ok(Value::Scalar(if v.len() == 1 {
                v[0].value
            } else {
                f64::NAN
            }));
        }
        "vector" => vec![Element {
            labels: Labels::default(),
            value: args.scalar(0)?,
            ts: t,
        }],
        name if is_range_function(name) => {
            arity(c, 1, 1)?;
            let Range {
                series,
                end,
                range,
                unique,
            } = args.range(0)?;
            let mut out = Vec::with_capacity(series.len());
            for s in series {
                if let Some(value) = range_value(name, &s.samples, end, range) {
                    let labels = if name == "last_over_time" {
                        s.labels
                    } else {
                        s.bare
                    };
                    out.push(Element {
                        labels,
                        value,
                        ts: t,
                    });
                }
            }
            if !unique {
                check_unique(&out)?;
            }
            return Ok(Value::Vector(out));
        }
        "quantile_over_time" => {
            let q = args.scalar(0)?;
            let series = args.range(1)?.series;
            series
                .into_iter()
                .filter_map(|s| {
                    over_time(name, &s.samples, q).map(|value| Element {
                        labels: s.bare,
                        value,
                        ts: t,
                    })
                })
                .collect()
        }
        "predict_linear" => {
            let series = args.range(0)?.series;
            let duration = args.scalar(1)?;
            series
                .into_iter()
                .filter(|s| s.samples.len() >= 2)
                .map(|s| {
                    let (slope, intercept) = linear_regression(&s.samples, t);
                    Element {
                        labels: s.bare,
                        value: slope * duration + intercept,
                        ts: t,
                    }
                })
                .collect()
        }
        "absent" | "absent_over_time" => {
            let present = if name == "absent" {
                !args.vector(0)?.is_empty()
            } else {
                !args.range(0)?.series.is_empty()
            };
            if !present {
                vec![Element {
                    labels: absent_labels(arg(0)?),
                    value: 1.0,
                    ts: t,
                }]
            } else {
                Vec::new()
            }
        }
        "abs" | "ceil" | "floor" | "exp" | "ln" | "log2" | "log10" | "sqrt" | "sgn" | "deg"
        | "rad" | "sin" | "cos" | "tan" | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh"
        | "asinh" | "acosh" | "atanh" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sqrt" => f64::sqrt,
                "sgn" => |v: f64| {
                    if v > 0.0 {
                        1.0
                    } else if v < 0.0 {
                        -1.0
                    } else {
                        v
                    }
                },
                "deg" => f64::to_degrees,
                "rad" => f64::to_radians,
                "sin" => f64::sin,
                "cos" => f64::cos,
                "tan" => f64::tan,
                "asin" => f64::asin,
                "acos" => f64::acos,
                "atan" => f64::atan,
                "sinh" => f64::sinh,
                "cosh" => f64::cosh,
                "tanh" => f64::tanh,
                "asinh" => f64::asinh,
                "acosh" => f64::acosh,
                _ => f64::atanh,
            };
            map_values(args.vector(0)?, t, f)
        }
        "round" => {
            let v = args.vector(0)?;
            let to = if args.len() > 1 { args.scalar(1)? } else { 1.0 };
            let inverse = 1.0 / to;
            map_values(v, t, |x| (x * inverse + 0.5).floor() / inverse)
        }
        "clamp" => {
            let v = args.vector(0)?;
            let (lo, hi) = (args.scalar(1)?, args.scalar(2)?);
            if hi < lo {
                Vec::new()
            } else {
                map_values(v, t, |x| go_max(lo, go_min(hi, x)))
            }
        }
        "clamp_min" => {
            let v = args.vector(0)?;
            let lo = args.scalar(1)?;
            map_values(v, t, |x| go_max(lo, x))
        }
        "clamp_max" => {
            let v = args.vector(0)?;
            let hi = args.scalar(1)?;
            map_values(v, t, |x| go_min(hi, x))
        }
        "timestamp" => args
            .vector(0)?
            .into_iter()
            .map(|e| Element {
                labels: e.labels.without_name(),
                value: e.ts as f64 / 1000.0,
                ts: t,
            })
            .collect(),
        "sort" | "sort_desc" => {
            let mut v = args.vector(0)?;
            sort_by_value(&mut v, name == "sort_desc");
            return Ok(Value::Vector(v));
        }
        "minute" | "hour" | "day_of_week" | "day_of_month" | "day_of_year" | "days_in_month"
        | "month" | "year" => {
            let v = if args.len() > 0 {
                args.vector(0)?
            } else {
                vec![Element {
                    labels: Labels::default(),
                    value: t as f64 / 1000.0,
                    ts: t,
                }]
            };
            map_values(v, t, |s| date_part(name, s))
        }
        "label_replace" => {
            let v = args.vector(0)?;
            let dst = args.string(1)?;
            let replacement = args.string(2)?;
            let src = args.string(3)?;
            let pattern = args.string(4)?;
            let re = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                PromError::bad_data(format!(
                    "invalid regular expression in label_replace(): {e}"
                ))
            })?;
            if !is_label_name(&dst) {
                return Err(PromError::bad_data(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            v.into_iter()
                .map(|mut e| {
                    let value = e.labels.get(&src).to_string();
                    if let Some(caps) = re.captures(&value) {
                        let mut out = String::new();
                        caps.expand(&replacement, &mut out);
                        e.labels.set(&dst, &out);
                    }
                    e
                })
                .collect()
        }
        "label_join" => {
            let v = args.vector(0)?;
            let dst = args.string(1)?;
            let sep = args.string(2)?;
            let mut sources = Vec::new();
            for i in 3..args.len() {
                sources.push(args.string(i)?);
            }
            if !is_label_name(&dst) {
                return Err(PromError::bad_data(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            v.into_iter()
                .map(|mut e| {
                    let joined: Vec<&str> = sources.iter().map(|s| e.labels.get(s)).collect();
                    let joined = joined.join(&sep);
                    e.labels.set(&dst, &joined);
                    e
                })
                .collect()
        }
        "histogram_quantile" => {
            let q = args.scalar(0)?;
            let v = args.vector(1)?;
            let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
            let mut index: HashMap<Labels, usize> = HashMap::new();
            for e in v {
                let Ok(le) = parse_le(e.labels.get("le")) else {
                    continue;
                };
                let g = e.labels.drop(&["le".to_string()]);
                let i = *index.entry(g.clone()).or_insert_with(|| {
                    groups.push((g, Vec::new()));
                    groups.len() - 1
                });
                groups[i].1.push((le, e.value));
            }
            groups
                .into_iter()
                .map(|(labels, buckets)| Element {
                    labels,
                    value: classic_quantile(q, buckets),
                    ts: t,
                })
                .collect()
        }
        other => return Err(unsupported(other)),
    };
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

/// An `le` label as Go's `strconv.ParseFloat` reads it.
fn parse_le(text: &str) -> Result<f64, ()> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse::<f64>().map_err(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_without_resets_give_the_same_rates_without_looking_for_them() {
        let samples: Vec<(i64, f64)> = (0..20)
            .map(|i| (i * 15_000 + 700, 3.5 * i as f64 + (i % 3) as f64))
            .collect();
        for name in ["rate", "increase", "delta", "irate", "avg_over_time"] {
            assert_eq!(
                range_value_without_resets(name, &samples, 300_000, 300_000),
                range_value(name, &samples, 300_000, 300_000),
                "{name}"
            );
        }
        // With a reset, only the full pass adds it back: the caller must not skip it.
        let reset = [(0, 10.0), (15_000, 2.0), (30_000, 6.0)];
        assert_ne!(
            range_value_without_resets("increase", &reset, 30_000, 30_000),
            range_value("increase", &reset, 30_000, 30_000)
        );
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // A counter growing 1/s sampled every 15 s inside a 60 s window ending at 60 s.
        let samples: Vec<(i64, f64)> = (1..=4).map(|i| (i * 15_000, 15.0 * i as f64)).collect();
        let r = extrapolated_rate(&samples, 0, 60_000, 60_000, true, true).unwrap();
        assert!((r - 1.0).abs() < 1e-12, "{r}");
        // A reset adds the value before it.
        let reset = [(0, 10.0), (15_000, 20.0), (30_000, 5.0)];
        let inc = extrapolated_rate(&reset, 0, 30_000, 30_000, true, false).unwrap();
        assert!((inc - 15.0).abs() < 1e-9, "{inc}");
        assert_eq!(extrapolated_rate(&[(0, 1.0)], 0, 1, 1, true, true), None);
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0]), 2.0);
        assert_eq!(quantile(0.25, &mut [1.0, 2.0, 3.0, 4.0, 5.0]), 2.0);
        assert!(quantile(2.0, &mut [1.0]).is_infinite());
        let b = vec![(0.1, 1.0), (0.5, 3.0), (f64::INFINITY, 4.0)];
        assert!((classic_quantile(0.5, b) - 0.3).abs() < 1e-12);
        assert!(
            classic_quantile(0.5, vec![(1.0, 1.0)]).is_nan(),
            "no +Inf bucket"
        );
    }

    #[test]
    fn every_supported_function_is_implemented() {
        use promql_parser::parser::value::ValueType;
        use promql_parser::parser::{Function, FunctionArgs};
        let names = SUPPORTED
            .iter()
            .chain(["rate", "irate", "deriv", "resets"].iter());
        for &name in names {
            assert!(is_supported(name), "{name}");
            let c = Call {
                func: Function {
                    name,
                    arg_types: Vec::new(),
                    variadic: 0,
                    return_type: ValueType::Vector,
                    experimental: false,
                },
                args: FunctionArgs::empty_args(),
            };
            // Without arguments an implemented function fails for a missing argument
            // (or answers), never as unsupported.
            let unsupported = unsupported(name).message;
            if let Err(e) = call(&c, Vec::new(), 0) {
                assert_ne!(e.message, unsupported, "{name}");
            }
        }
        assert!(!is_supported("holt_winters"));
    }

    #[test]
    fn date_parts_are_utc() {
        // 2024-02-29T13:45:00Z, a Thursday.
        let t = 1_709_214_300.0;
        assert_eq!(date_part("hour", t), 13.0);
        assert_eq!(date_part("minute", t), 45.0);
        assert_eq!(date_part("day_of_week", t), 4.0);
        assert_eq!(date_part("days_in_month", t), 29.0);
        assert_eq!(date_part("year", t), 2024.0);
    }
}
