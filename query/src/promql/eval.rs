//! PromQL evaluation, as Prometheus 2.x's engine does it: every expression is evaluated at
//! one instant at a time (a range query evaluates each step), over series read up front
//! for the whole query window.
//!
//! Selection follows Prometheus 2.x: an instant selector takes each series' latest sample
//! in `[t - lookback, t]` (5 minutes by default) unless it is a staleness marker; a range
//! selector `[d]` takes the samples in `[t - d, t]`; `offset` and `@` move `t`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Call, Expr, LabelModifier, Offset,
    VectorMatchCardinality, VectorSelector,
};

use super::aggregate;
use super::binary::{elem_op, is_comparison, set_op, vector_binop, vector_scalar};
use super::error::{ErrorKind, PromError};
use super::functions::{self, Arg, Range};
use super::value::{Element, Labels, Series, Value, Window, check_unique, float_text, is_stale};
use crate::hash::IdMap;
use periscope_storage::names::is_label_name;

/// Unix ms of a `SystemTime` (negative before 1970).
pub fn system_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Milliseconds of a duration.
pub fn ms(d: &Duration) -> i64 {
    d.as_millis() as i64
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => ms(d),
        Some(Offset::Neg(d)) => -ms(d),
        None => 0,
    }
}

/// The key of a selector node: its address in the (unmoved) syntax tree.
fn key(vs: &VectorSelector) -> usize {
    vs as *const VectorSelector as usize
}

/// The default step of subqueries without one (Prometheus's default evaluation interval).
pub const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

/// A selector and the window `[lo, hi]` (unix ms) of samples the query needs from it.
pub struct Need<'a> {
    /// The selector.
    pub selector: &'a VectorSelector,
    /// First instant needed.
    pub lo: i64,
    /// Last instant needed.
    pub hi: i64,
}

/// The samples every selector of `expr` needs when it is evaluated at instants in
/// `[lo, hi]`; `start`/`end` are what `@ start()` and `@ end()` mean.
pub fn needs<'a>(
    expr: &'a Expr,
    lo: i64,
    hi: i64,
    range: (i64, i64),
    lookback: i64,
    out: &mut Vec<Need<'a>>,
) {
    let shift = |at: &Option<AtModifier>, offset: &Option<Offset>| {
        let (l, h) = match at {
            Some(AtModifier::Start) => (range.0, range.0),
            Some(AtModifier::End) => (range.1, range.1),
            Some(AtModifier::At(t)) => (system_ms(t), system_ms(t)),
            None => (lo, hi),
        };
        let o = offset_ms(offset);
        (l - o, h - o)
    };
    match expr {
        Expr::VectorSelector(vs) => {
            let (l, h) = shift(&vs.at, &vs.offset);
            out.push(Need {
                selector: vs,
                lo: l - lookback,
                hi: h,
            });
        }
        Expr::MatrixSelector(m) => {
            let (l, h) = shift(&m.vs.at, &m.vs.offset);
            out.push(Need {
                selector: &m.vs,
                lo: l - ms(&m.range),
                hi: h,
            });
        }
        Expr::Subquery(s) => {
            let (l, h) = shift(&s.at, &s.offset);
            needs(&s.expr, l - ms(&s.range), h, range, lookback, out);
        }
        Expr::Aggregate(a) => {
            needs(&a.expr, lo, hi, range, lookback, out);
            if let Some(p) = &a.param {
                needs(p, lo, hi, range, lookback, out);
            }
        }
        Expr::Unary(u) => needs(&u.expr, lo, hi, range, lookback, out),
        Expr::Paren(p) => needs(&p.expr, lo, hi, range, lookback, out),
        Expr::Binary(b) => {
            needs(&b.lhs, lo, hi, range, lookback, out);
            needs(&b.rhs, lo, hi, range, lookback, out);
        }
        Expr::Call(c) => {
            for a in &c.args.args {
                needs(a, lo, hi, range, lookback, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// A selector's loaded series, with their labels less the metric name (what most
/// functions return), computed once.
struct Loaded {
    series: Vec<Series>,
    bare: Vec<Labels>,
    /// No two series share their labels once the metric name is dropped.
    bare_unique: bool,
}

/// Evaluates expressions over preloaded series.
pub struct Evaluator {
    data: HashMap<usize, Loaded>,
    /// Query start (unix ms), for `@ start()`.
    pub start: i64,
    /// Query end (unix ms), for `@ end()`.
    pub end: i64,
    /// How far back an instant selector looks (ms).
    pub lookback: i64,
    deadline: Instant,
    timeout: Duration,
    /// Most points evaluation may produce (`--query-max-samples`).
    max_samples: usize,
    /// Points produced so far by range evaluations (range queries and subqueries).
    produced: std::cell::Cell<usize>,
    /// Grouping labels already computed: (aggregation node, input label set) → group.
    /// Each entry holds its input set, so the identity cannot be reused while cached.
    groups: RefCell<IdMap<(usize, usize), (Labels, Labels)>>,
    /// One shared label set per distinct group, so groups compare by identity.
    interned: RefCell<HashSet<Labels>>,
    /// Range-function results of a range query, computed series by series for every step
    /// at once (see [`Evaluator::precompute`]): call node → per step.
    steps: Option<(i64, i64, usize)>,
    precomputed: RefCell<HashMap<usize, Vec<Option<Vec<Element>>>>>,
}

/// Most entries the grouping memo keeps.
const GROUP_MEMO_LIMIT: usize = 1 << 20;

impl Evaluator {
    /// An evaluator over the series loaded for each selector.
    pub fn new(
        data: HashMap<usize, Vec<Series>>,
        start: i64,
        end: i64,
        lookback: i64,
        timeout: Duration,
        max_samples: usize,
    ) -> Evaluator {
        let data = data
            .into_iter()
            .map(|(k, series)| {
                let bare: Vec<Labels> = series.iter().map(|s| s.labels.without_name()).collect();
                let bare_unique = bare.iter().collect::<HashSet<_>>().len() == bare.len();
                (
                    k,
                    Loaded {
                        series,
                        bare,
                        bare_unique,
                    },
                )
            })
            .collect();
        Evaluator {
            data,
            start,
            end,
            lookback,
            deadline: Instant::now() + timeout,
            timeout,
            max_samples,
            produced: std::cell::Cell::new(0),
            groups: RefCell::new(IdMap::default()),
            interned: RefCell::new(HashSet::new()),
            steps: None,
            precomputed: RefCell::new(HashMap::new()),
        }
    }

    /// The key under which [`Evaluator::new`] expects a selector's series.
    pub fn key(vs: &VectorSelector) -> usize {
        key(vs)
    }

    fn series(&self, vs: &VectorSelector) -> &[Series] {
        self.data
            .get(&key(vs))
            .map(|l| l.series.as_slice())
            .unwrap_or(&[])
    }

    /// Whether `vs`'s series stay distinct without their metric names.
    pub fn unique_without_name(&self, vs: &VectorSelector) -> bool {
        self.data.get(&key(vs)).is_none_or(|l| l.bare_unique)
    }

    /// For a range query (`start..=end` every `step` ms): computes each range function
    /// applied directly to a selector (outside subqueries) for all steps at once, going
    /// through each series' samples once instead of searching them at every step.
    pub fn precompute(&mut self, expr: &Expr, start: i64, end: i64, step: i64) {
        if step <= 0 || end < start {
            return;
        }
        let count = ((end - start) / step + 1) as usize;
        self.steps = Some((start, step, count));
        let mut calls = Vec::new();
        direct_range_calls(expr, &mut calls);
        for c in calls {
            let Some(Expr::MatrixSelector(m)) = c.args.args.first().map(|a| a.as_ref()) else {
                continue;
            };
            let name = c.func.name;
            let Some(loaded) = self.data.get(&key(&m.vs)) else {
                continue;
            };
            if !loaded.bare_unique && name != "last_over_time" {
                continue;
            }
            let range = ms(&m.range);
            let mut out: Vec<Vec<Element>> = vec![Vec::new(); count];
            for (s, bare) in loaded.series.iter().zip(&loaded.bare) {
                let labels = if name == "last_over_time" {
                    &s.labels
                } else {
                    bare
                };
                self.each_step(s, &m.vs, name, range, (start, step, count), |i, value| {
                    out[i].push(Element {
                        labels: labels.clone(),
                        value,
                        ts: start + i as i64 * step,
                    });
                });
            }
            self.precomputed.borrow_mut().insert(
                c as *const Call as usize,
                out.into_iter().map(Some).collect(),
            );
        }
    }

    /// Range function `name` over series `s` read through selector `vs` with window
    /// `range` (ms), at each of `count` steps from `start` every `step` ms: calls `f`
    /// with the step number and value wherever there is one. One pass over the samples.
    fn each_step(
        &self,
        s: &Series,
        vs: &VectorSelector,
        name: &str,
        range: i64,
        (start, step, count): (i64, i64, usize),
        mut f: impl FnMut(usize, f64),
    ) {
        let samples: Cow<'_, [(i64, f64)]> = if s.samples.iter().any(|x| is_stale(x.1)) {
            Cow::Owned(
                s.samples
                    .iter()
                    .filter(|x| !is_stale(x.1))
                    .copied()
                    .collect(),
            )
        } else {
            Cow::Borrowed(&s.samples)
        };
        // For `rate` and `increase`: drops[j] counts the samples up to `j` that are below
        // the one before them, so a window without a counter reset is known at once.
        let drops: Vec<u32> = if matches!(name, "rate" | "increase") {
            let mut n = 0u32;
            let mut out = Vec::with_capacity(samples.len());
            for (j, x) in samples.iter().enumerate() {
                if j > 0 && x.1 < samples[j - 1].1 {
                    n += 1;
                }
                out.push(n);
            }
            out
        } else {
            Vec::new()
        };
        let (mut a, mut b) = (0, 0);
        for i in 0..count {
            let t = start + i as i64 * step;
            let eff = self.effective(t, &vs.at, &vs.offset);
            while b < samples.len() && samples[b].0 <= eff {
                b += 1;
            }
            while a < b && samples[a].0 < eff - range {
                a += 1;
            }
            if a == b {
                continue;
            }
            let window = &samples[a..b];
            let no_reset = !drops.is_empty()
                && drops[b - 1] == drops[a]
                && window[0].1.partial_cmp(&0.0) != Some(std::cmp::Ordering::Less);
            let value = if no_reset {
                functions::range_value_without_resets(name, window, eff, range)
            } else {
                functions::range_value(name, window, eff, range)
            };
            if let Some(value) = value {
                f(i, value);
            }
        }
    }

    /// For a range query (`start..=end` every `step` ms) whose expression is a simple
    /// aggregation (`sum`, `avg`, `count`, …, by or without labels) of a range function
    /// applied directly to a selector: the answer, computed series by series for every
    /// step at once into one accumulator per group and step, without building a vector
    /// at each step. `None` when `expr` is not of that shape.
    pub fn aggregate_range(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Option<Result<Vec<Series>, PromError>> {
        let Expr::Aggregate(a) = strip(expr) else {
            return None;
        };
        let op = a.op.to_string();
        if !aggregate::is_simple(&op) || a.param.is_some() || step <= 0 || end < start {
            return None;
        }
        let Expr::Call(c) = strip(&a.expr) else {
            return None;
        };
        let name = c.func.name;
        if !functions::is_range_function(name) || name == "last_over_time" || c.args.args.len() != 1
        {
            return None;
        }
        let Expr::MatrixSelector(m) = c.args.args[0].as_ref() else {
            return None;
        };
        let loaded = self.data.get(&key(&m.vs))?;
        if !loaded.bare_unique {
            return None;
        }
        Some(self.aggregate_steps(a, &op, name, m, loaded, (start, end, step)))
    }

    fn aggregate_steps(
        &self,
        a: &AggregateExpr,
        op: &str,
        name: &str,
        m: &promql_parser::parser::MatrixSelector,
        loaded: &Loaded,
        (start, end, step): (i64, i64, i64),
    ) -> Result<Vec<Series>, PromError> {
        let count = ((end - start) / step + 1) as usize;
        let mut groups: Vec<Labels> = Vec::new();
        let mut ids: HashMap<Labels, usize> = HashMap::new();
        let series_group: Vec<usize> = loaded
            .bare
            .iter()
            .map(|l| {
                let g = match &a.modifier {
                    Some(LabelModifier::Include(ls)) => l.keep(&ls.labels),
                    Some(LabelModifier::Exclude(ls)) => l.drop(&ls.labels),
                    None => Labels::default(),
                };
                *ids.entry(g).or_insert_with_key(|g| {
                    groups.push(g.clone());
                    groups.len() - 1
                })
            })
            .collect();
        let mut acc = vec![aggregate::Accumulator::default(); groups.len() * count];
        let range = ms(&m.range);
        for (n, (s, g)) in loaded.series.iter().zip(&series_group).enumerate() {
            if n % 1024 == 0 {
                self.check_deadline()?;
            }
            let row = &mut acc[g * count..(g + 1) * count];
            self.each_step(s, &m.vs, name, range, (start, step, count), |i, v| {
                row[i].add(op, v)
            });
        }
        let mut out = Vec::with_capacity(groups.len());
        for (g, labels) in groups.into_iter().enumerate() {
            let samples: Vec<(i64, f64)> = acc[g * count..(g + 1) * count]
                .iter()
                .enumerate()
                .filter(|(_, a)| !a.is_empty())
                .map(|(i, a)| (start + i as i64 * step, a.value(op)))
                .collect();
            self.produce(samples.len())?;
            if !samples.is_empty() {
                out.push(Series { labels, samples });
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// The precomputed result of range function `c` at step `t`, if any.
    pub fn precomputed(&self, c: &Call, t: i64) -> Option<Vec<Element>> {
        let (start, step, count) = self.steps?;
        if t < start || (t - start) % step != 0 {
            return None;
        }
        let i = ((t - start) / step) as usize;
        if i >= count {
            return None;
        }
        self.precomputed
            .borrow_mut()
            .get_mut(&(c as *const Call as usize))
            .and_then(|per_step| per_step[i].take())
    }

    /// The instant a selector reads at when evaluated at `t`.
    pub fn effective(&self, t: i64, at: &Option<AtModifier>, offset: &Option<Offset>) -> i64 {
        let base = match at {
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(time)) => system_ms(time),
            None => t,
        };
        base - offset_ms(offset)
    }

    /// A timeout error once the query's deadline has passed.
    fn check_deadline(&self) -> Result<(), PromError> {
        if Instant::now() > self.deadline {
            return Err(PromError {
                kind: ErrorKind::Timeout,
                message: format!(
                    "query timed out in expression evaluation (timeout {:?}); narrow the time range or raise --query-timeout",
                    self.timeout
                ),
            });
        }
        Ok(())
    }

    /// Evaluates `expr` at `t` (unix ms).
    ///
    /// # Errors
    /// Execution errors (matching conflicts, duplicate label sets) and the timeout.
    pub fn eval(&self, expr: &Expr, t: i64) -> Result<Value, PromError> {
        self.check_deadline()?;
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(v) => {
                    let out: Vec<Element> = v
                        .into_iter()
                        .map(|e| Element {
                            labels: e.labels.without_name(),
                            value: -e.value,
                            ts: t,
                        })
                        .collect();
                    check_unique(&out)?;
                    Ok(Value::Vector(out))
                }
                other => Err(PromError::bad_data(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant(vs, t))),
            Expr::MatrixSelector(m) => {
                let eff = self.effective(t, &m.vs.at, &m.vs.offset);
                Ok(Value::Matrix(self.range(&m.vs, eff - ms(&m.range), eff)))
            }
            Expr::Subquery(s) => {
                let eff = self.effective(t, &s.at, &s.offset);
                let step = s.step.as_ref().map(ms).unwrap_or(DEFAULT_SUBQUERY_STEP_MS);
                Ok(Value::Matrix(self.subquery(
                    &s.expr,
                    eff - ms(&s.range),
                    eff,
                    step,
                )?))
            }
            Expr::Aggregate(a) => self.aggregate(a, t),
            Expr::Binary(b) => self.binary(b, t),
            Expr::Call(c) => self.call(c, t),
            Expr::Extension(_) => Err(PromError::bad_data(
                "extension expressions are not supported",
            )),
        }
    }

    /// Evaluates a function call at `t`: refuses a function Periscope does not implement,
    /// takes a range function's result precomputed for the whole range query when there
    /// is one, else evaluates the arguments in order and hands their values to
    /// [`functions::call`].
    fn call(&self, c: &Call, t: i64) -> Result<Value, PromError> {
        let name = c.func.name;
        if !functions::is_supported(name) {
            return Err(functions::unsupported(name));
        }
        if functions::is_range_function(name)
            && let Some(v) = self.precomputed(c, t)
        {
            return Ok(Value::Vector(v));
        }
        let mut values = Vec::with_capacity(c.args.args.len());
        for a in &c.args.args {
            values.push(self.arg(a, t)?);
        }
        functions::call(c, values, t)
    }

    /// A function argument evaluated at `t`: a range-vector expression as windows of
    /// samples, any other as its value.
    fn arg(&self, arg: &Expr, t: i64) -> Result<Arg<'_>, PromError> {
        match self.range_arg(arg, t)? {
            Some(mut range) => {
                range.unique =
                    matches!(arg, Expr::MatrixSelector(m) if self.unique_without_name(&m.vs));
                Ok(Arg::Range(range))
            }
            None => self.eval(arg, t).map(Arg::Value),
        }
    }

    /// A range argument (a matrix selector or a subquery, maybe in parentheses): its
    /// series' windows, the instant it ends at and its length (not known to be unique);
    /// `None` for any other expression.
    fn range_arg(&self, arg: &Expr, t: i64) -> Result<Option<Range<'_>>, PromError> {
        match arg {
            Expr::Paren(p) => self.range_arg(&p.expr, t),
            Expr::MatrixSelector(m) => {
                let end = self.effective(t, &m.vs.at, &m.vs.offset);
                let range = ms(&m.range);
                Ok(Some(Range {
                    series: self.windows(&m.vs, end - range, end),
                    end,
                    range,
                    unique: false,
                }))
            }
            Expr::Subquery(s) => {
                let end = self.effective(t, &s.at, &s.offset);
                let range = ms(&s.range);
                let step = s.step.as_ref().map(ms).unwrap_or(DEFAULT_SUBQUERY_STEP_MS);
                let series = self.subquery(&s.expr, end - range, end, step)?;
                let windows = series
                    .into_iter()
                    .map(|s| Window {
                        bare: s.labels.without_name(),
                        labels: s.labels,
                        samples: Cow::Owned(s.samples),
                    })
                    .collect();
                Ok(Some(Range {
                    series: windows,
                    end,
                    range,
                    unique: false,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Evaluates `expr` at `t` and requires an instant vector.
    pub fn vector(&self, expr: &Expr, t: i64) -> Result<Vec<Element>, PromError> {
        match self.eval(expr, t)? {
            Value::Vector(v) => Ok(v),
            other => Err(PromError::bad_data(format!(
                "expected an instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `expr` at `t` and requires a scalar.
    pub fn scalar(&self, expr: &Expr, t: i64) -> Result<f64, PromError> {
        match self.eval(expr, t)? {
            Value::Scalar(v) => Ok(v),
            other => Err(PromError::bad_data(format!(
                "expected a scalar, got {}",
                other.type_name()
            ))),
        }
    }

    fn instant(&self, vs: &VectorSelector, t: i64) -> Vec<Element> {
        let eff = self.effective(t, &vs.at, &vs.offset);
        let mut out = Vec::new();
        for s in self.series(vs) {
            let i = s.samples.partition_point(|x| x.0 <= eff);
            if i == 0 {
                continue;
            }
            let (ts, v) = s.samples[i - 1];
            if ts < eff - self.lookback || is_stale(v) {
                continue;
            }
            out.push(Element {
                labels: s.labels.clone(),
                value: v,
                ts,
            });
        }
        out
    }

    /// The samples of `vs`'s series in `[lo, hi]`, staleness markers left out; series
    /// without samples there are left out. Samples are borrowed unless markers must go.
    pub fn windows(&self, vs: &VectorSelector, lo: i64, hi: i64) -> Vec<Window<'_>> {
        let Some(loaded) = self.data.get(&key(vs)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (s, bare) in loaded.series.iter().zip(&loaded.bare) {
            let a = s.samples.partition_point(|x| x.0 < lo);
            let b = s.samples.partition_point(|x| x.0 <= hi);
            let slice = &s.samples[a..b];
            let samples = if slice.iter().any(|x| is_stale(x.1)) {
                Cow::Owned(slice.iter().filter(|x| !is_stale(x.1)).copied().collect())
            } else {
                Cow::Borrowed(slice)
            };
            if !samples.is_empty() {
                out.push(Window {
                    labels: s.labels.clone(),
                    bare: bare.clone(),
                    samples,
                });
            }
        }
        out
    }

    /// As [`Evaluator::windows`], owned.
    pub fn range(&self, vs: &VectorSelector, lo: i64, hi: i64) -> Vec<Series> {
        self.windows(vs, lo, hi)
            .into_iter()
            .map(|w| Series {
                labels: w.labels,
                samples: w.samples.into_owned(),
            })
            .collect()
    }

    /// Counts `n` points produced against the samples limit, as Prometheus's
    /// `--query.max-samples` does.
    ///
    /// # Errors
    /// `execution` once the query has produced more than the limit.
    fn produce(&self, n: usize) -> Result<(), PromError> {
        let total = self.produced.get().saturating_add(n);
        self.produced.set(total);
        if total > self.max_samples {
            return Err(PromError::execution(format!(
                "query processing would load too many samples into memory in query execution (more than {}, --query-max-samples); narrow the range or raise the step",
                self.max_samples
            )));
        }
        Ok(())
    }

    /// `expr` evaluated at the multiples of `step` in `[lo, hi]`, as series.
    pub fn subquery(
        &self,
        expr: &Expr,
        lo: i64,
        hi: i64,
        step: i64,
    ) -> Result<Vec<Series>, PromError> {
        if step <= 0 {
            return Err(PromError::bad_data("subquery step must be positive"));
        }
        let mut first = lo.div_euclid(step) * step;
        if first < lo {
            first += step;
        }
        self.over_steps(expr, first, hi, step)
    }

    /// `expr` (a scalar or instant vector) evaluated at `first`, `first + step`, … up to
    /// `last`, as series in label order: what range queries and subqueries return.
    pub fn over_steps(
        &self,
        expr: &Expr,
        first: i64,
        last: i64,
        step: i64,
    ) -> Result<Vec<Series>, PromError> {
        let mut series: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        let mut t = first;
        while t <= last {
            match self.eval(expr, t)? {
                Value::Scalar(v) => {
                    self.produce(1)?;
                    series.entry(Labels::default()).or_default().push((t, v))
                }
                Value::Vector(v) => {
                    self.produce(v.len())?;
                    for e in v {
                        series.entry(e.labels).or_default().push((t, e.value));
                    }
                }
                other => {
                    return Err(PromError::bad_data(format!(
                        "expected a scalar or an instant vector at each step, got {}",
                        other.type_name()
                    )));
                }
            }
            t += step;
        }
        let mut out: Vec<Series> = series
            .into_iter()
            .map(|(labels, samples)| Series { labels, samples })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    fn aggregate(&self, a: &AggregateExpr, t: i64) -> Result<Value, PromError> {
        let op = a.op.to_string();
        let op = op.as_str();
        let input = self.vector(&a.expr, t)?;
        let node = a as *const AggregateExpr as usize;
        let group_of = |l: &Labels| -> Labels {
            if let Some((_, g)) = self.groups.borrow().get(&(node, l.id())) {
                return g.clone();
            }
            let g = match &a.modifier {
                Some(LabelModifier::Include(ls)) => l.keep(&ls.labels),
                Some(LabelModifier::Exclude(ls)) => l.drop(&ls.labels),
                None => Labels::default(),
            };
            let mut memo = self.groups.borrow_mut();
            if memo.len() >= GROUP_MEMO_LIMIT {
                return g;
            }
            let mut interned = self.interned.borrow_mut();
            let g = match interned.get(&g) {
                Some(shared) => shared.clone(),
                None => {
                    interned.insert(g.clone());
                    g
                }
            };
            memo.insert((node, l.id()), (l.clone(), g.clone()));
            g
        };
        let out = match op {
            "topk" | "bottomk" => {
                let k = match &a.param {
                    Some(p) => self.scalar(p, t)?,
                    None => return Err(PromError::bad_data(format!("{op} needs a parameter"))),
                };
                aggregate::top_k(input, k, op == "topk", &group_of, t)
            }
            "quantile" => {
                let q = match &a.param {
                    Some(p) => self.scalar(p, t)?,
                    None => return Err(PromError::bad_data("quantile needs a parameter")),
                };
                let mut groups: Vec<(Labels, Vec<f64>)> = Vec::new();
                let mut index: HashMap<Labels, usize> = HashMap::new();
                for e in input {
                    let g = group_of(&e.labels);
                    let i = *index.entry(g.clone()).or_insert_with(|| {
                        groups.push((g, Vec::new()));
                        groups.len() - 1
                    });
                    groups[i].1.push(e.value);
                }
                groups
                    .into_iter()
                    .map(|(labels, mut values)| Element {
                        labels,
                        value: aggregate::quantile(q, &mut values),
                        ts: t,
                    })
                    .collect()
            }
            "count_values" => {
                let label = match &a.param {
                    Some(p) => match self.eval(p, t)? {
                        Value::String(s) => s,
                        _ => {
                            return Err(PromError::bad_data(
                                "count_values needs a string parameter",
                            ));
                        }
                    },
                    None => return Err(PromError::bad_data("count_values needs a parameter")),
                };
                if !is_label_name(&label) {
                    return Err(PromError::bad_data(format!("invalid label name {label:?}")));
                }
                let mut counts: Vec<(Labels, f64)> = Vec::new();
                let mut index: HashMap<Labels, usize> = HashMap::new();
                for e in input {
                    let mut g = group_of(&e.labels);
                    g.set(&label, &float_text(e.value));
                    let i = *index.entry(g.clone()).or_insert_with(|| {
                        counts.push((g, 0.0));
                        counts.len() - 1
                    });
                    counts[i].1 += 1.0;
                }
                counts
                    .into_iter()
                    .map(|(labels, value)| Element {
                        labels,
                        value,
                        ts: t,
                    })
                    .collect()
            }
            _ => aggregate::simple_aggregate(op, input, &group_of, t)?,
        };
        Ok(Value::Vector(out))
    }

    fn binary(&self, b: &BinaryExpr, t: i64) -> Result<Value, PromError> {
        let op = b.op.to_string();
        let op = op.as_str();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => {
                let (v, keep) = elem_op(op, l, r)?;
                Ok(Value::Scalar(if is_comparison(op) {
                    if keep { 1.0 } else { 0.0 }
                } else {
                    v
                }))
            }
            (Value::Vector(v), Value::Scalar(s)) => Ok(Value::Vector(vector_scalar(
                op,
                v,
                s,
                false,
                return_bool,
                t,
            )?)),
            (Value::Scalar(s), Value::Vector(v)) => Ok(Value::Vector(vector_scalar(
                op,
                v,
                s,
                true,
                return_bool,
                t,
            )?)),
            (Value::Vector(l), Value::Vector(r)) => {
                let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
                let out = match op {
                    "and" | "or" | "unless" => set_op(op, l, r, &matching),
                    _ => {
                        let card = b
                            .modifier
                            .as_ref()
                            .map(|m| m.card.clone())
                            .unwrap_or(VectorMatchCardinality::OneToOne);
                        vector_binop(op, l, r, &card, &matching, return_bool, t)?
                    }
                };
                Ok(Value::Vector(out))
            }
            (l, r) => Err(PromError::bad_data(format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                l.type_name(),
                r.type_name()
            ))),
        }
    }
}

/// Range-function calls on a selector that are evaluated at the query's own steps (not
/// inside a subquery).
fn direct_range_calls<'a>(expr: &'a Expr, out: &mut Vec<&'a Call>) {
    match expr {
        Expr::Call(c) => {
            if functions::is_range_function(c.func.name)
                && c.args.args.len() == 1
                && matches!(c.args.args[0].as_ref(), Expr::MatrixSelector(_))
            {
                out.push(c);
            }
            for a in &c.args.args {
                direct_range_calls(a, out);
            }
        }
        Expr::Aggregate(a) => {
            direct_range_calls(&a.expr, out);
            if let Some(p) = &a.param {
                direct_range_calls(p, out);
            }
        }
        Expr::Unary(u) => direct_range_calls(&u.expr, out),
        Expr::Paren(p) => direct_range_calls(&p.expr, out),
        Expr::Binary(b) => {
            direct_range_calls(&b.lhs, out);
            direct_range_calls(&b.rhs, out);
        }
        _ => {}
    }
}

/// `expr` without enclosing parentheses.
fn strip(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(p) => strip(&p.expr),
        other => other,
    }
}
