//! Reading series for PromQL from the `metrics` table, through the SQL engine (so the
//! head and the files, time pruning and `metric_name` statistics all apply).
//!
//! A selector is resolved in two steps: the families (distinct stored metrics) present
//! in the window are listed and named by [`super::naming`]; then only the rows of the
//! families whose exposed names can match are read and turned into series.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use arrow::array::{Array, ArrayRef, AsArray, MapArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimestampNanosecondType, UInt32Type, UInt64Type,
};
use periscope_otlp::PROMETHEUS_SCOPE;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::VectorSelector;

use super::error::PromError;
use super::naming::{Family, Shape, label_name};
use super::value::{Labels, NAME, STALE_NAN_BITS, Series};
use crate::engine::QueryEngine;
use crate::traces::fetch::{lit, ts_lit};

/// The most samples one query may read, as Prometheus's `--query.max-samples` default.
pub const MAX_SAMPLES: usize = 50_000_000;

/// The label matchers of a selector, its name included.
#[derive(Debug, Clone)]
pub struct Selector {
    /// All must match…
    pub matchers: Vec<Matcher>,
    /// …or, when present, all of any one group (`{a="1" or b="2"}`).
    pub or_matchers: Vec<Vec<Matcher>>,
}

impl Selector {
    /// The matchers of a vector selector.
    pub fn of(vs: &VectorSelector) -> Selector {
        let mut matchers = vs.matchers.matchers.clone();
        if let Some(name) = &vs.name {
            matchers.push(Matcher::new(MatchOp::Equal, NAME, name));
        }
        let or_matchers = vs
            .matchers
            .or_matchers
            .iter()
            .map(|group| {
                let mut g = group.clone();
                if let Some(name) = &vs.name {
                    g.push(Matcher::new(MatchOp::Equal, NAME, name));
                }
                g
            })
            .collect();
        Selector {
            matchers,
            or_matchers,
        }
    }

    fn groups(&self) -> Vec<&[Matcher]> {
        if self.or_matchers.is_empty() {
            vec![self.matchers.as_slice()]
        } else {
            self.or_matchers.iter().map(Vec::as_slice).collect()
        }
    }

    /// For series all named `name`: the matcher groups that can match such a series,
    /// each without its `__name__` matchers (decided here once). An empty group
    /// matches every such series; no group, none.
    pub fn for_name(&self, name: &str) -> Vec<Vec<&Matcher>> {
        self.groups()
            .into_iter()
            .filter(|g| {
                g.iter()
                    .filter(|m| m.name == NAME)
                    .all(|m| m.is_match(name))
            })
            .map(|g| g.iter().filter(|m| m.name != NAME).collect())
            .collect()
    }

    /// Whether a series with metric name `name` could match.
    pub fn name_may_match(&self, name: &str) -> bool {
        self.groups().iter().any(|g| {
            g.iter()
                .filter(|m| m.name == NAME)
                .all(|m| m.is_match(name))
        })
    }

    /// Whether `labels` match.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.groups()
            .iter()
            .any(|g| g.iter().all(|m| m.is_match(labels.get(&m.name))))
    }
}

/// A stored family and its help text.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The family.
    pub family: Family,
    /// `description` of its rows.
    pub help: String,
}

/// The families with rows in `[lo, hi]` (unix ms, inclusive), read from the files'
/// series indexes and the head (see [`super::indexed`]).
pub async fn families(engine: &QueryEngine, lo: i64, hi: i64) -> Result<Vec<Listed>, PromError> {
    super::indexed::families(engine, lo, hi).await
}

/// The distinct families of a head batch's rows with a time in `[lo_ns, hi_ns]`.
pub(super) fn head_families(
    batch: &RecordBatch,
    lo_ns: i64,
    hi_ns: i64,
) -> Result<Vec<Listed>, PromError> {
    let c = Columns::of(batch)?;
    let help = batch
        .column_by_name("description")
        .map(strings)
        .transpose()?;
    let mut out: Vec<Listed> = Vec::new();
    let mut previous: Option<usize> = None;
    for row in 0..batch.num_rows() {
        if !c.time.is_valid(row) {
            continue;
        }
        let t = c.time.value(row);
        if t < lo_ns || t > hi_ns {
            continue;
        }
        let same = previous.is_some_and(|p| c.same_family(p, row));
        if !same {
            let mono = c.mono.is_some_and(|m| m.is_valid(row) && m.value(row));
            let family = Family::new(
                text(&c.name, row),
                text(&c.kind, row),
                text(&c.unit, row),
                mono,
                text(&c.scope, row) == PROMETHEUS_SCOPE,
            );
            if !out.iter().any(|l| l.family == family) {
                out.push(Listed {
                    family,
                    help: String::new(),
                });
            }
        }
        previous = Some(row);
        let h = help.as_ref().map_or("", |h| text(h, row));
        let mono = c.mono.is_some_and(|m| m.is_valid(row) && m.value(row));
        if let Some(l) = out.iter_mut().find(|l| {
            l.family.stored_name == text(&c.name, row)
                && l.family.metric_type == text(&c.kind, row)
                && l.family.unit == text(&c.unit, row)
                && l.family.monotonic == mono
                && l.family.prometheus == (text(&c.scope, row) == PROMETHEUS_SCOPE)
        }) && h > l.help.as_str()
        {
            l.help = h.to_string();
        }
    }
    Ok(out)
}

fn window_sql(lo: i64, hi: i64) -> String {
    format!(
        "timestamp >= {} AND timestamp <= {}",
        ts_lit(lo.saturating_mul(1_000_000)),
        ts_lit(hi.saturating_mul(1_000_000).saturating_add(999_999))
    )
}

fn strings(a: &ArrayRef) -> Result<StringArray, PromError> {
    let c = cast(a, &DataType::Utf8)
        .map_err(|e| PromError::execution(format!("unexpected column type: {e}")))?;
    Ok(c.as_string::<i32>().clone())
}

fn text(a: &StringArray, row: usize) -> &str {
    if a.is_valid(row) { a.value(row) } else { "" }
}

/// Key/value pairs of a string map cell.
fn map_pairs(map: Option<&MapArray>, row: usize) -> Vec<(&str, &str)> {
    let Some(m) = map else { return Vec::new() };
    if m.is_null(row) {
        return Vec::new();
    }
    let (Some(keys), Some(values)) = (
        m.keys().as_string_opt::<i32>(),
        m.values().as_string_opt::<i32>(),
    ) else {
        return Vec::new();
    };
    let offsets = m.value_offsets();
    (offsets[row] as usize..offsets[row + 1] as usize)
        .filter(|&i| values.is_valid(i))
        .map(|i| (keys.value(i), values.value(i)))
        .collect()
}

/// `job` and `instance` from resource attributes, and the other resource attributes.
pub(super) fn resource_labels<'a>(
    resource: &[(&'a str, &'a str)],
) -> (Option<String>, Option<String>, Vec<(&'a str, &'a str)>) {
    let get = |k: &str| resource.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let job = match (get("service.namespace"), get("service.name")) {
        (Some(ns), Some(name)) if !ns.is_empty() => Some(format!("{ns}/{name}")),
        (_, Some(name)) => Some(name.to_string()),
        _ => None,
    };
    let instance = get("service.instance.id").map(str::to_string);
    let rest = resource
        .iter()
        .filter(|(k, _)| {
            !matches!(
                *k,
                "service.name" | "service.namespace" | "service.instance.id"
            )
        })
        .copied()
        .collect();
    (job, instance, rest)
}

/// A series being read: labels, samples, and whether any sample was a delta.
type Accumulating = (Labels, Vec<(i64, f64)>, bool);

/// Accumulates samples per label set.
#[derive(Default)]
pub(super) struct Collector {
    index: HashMap<Labels, usize>,
    /// Labels, samples, and whether any sample was a delta.
    series: Vec<Accumulating>,
    samples: usize,
    /// Rows already resolved to series: hash of (family, attributes, resource) → entries.
    rows: HashMap<u64, Vec<RowEntry>>,
    /// Slots of label sets by identity (sets shared across files, see `indexed`).
    by_id: crate::hash::IdMap<usize, usize>,
    /// Samples expected per slot (see [`Collector::expect`]), so that a series read
    /// from many files is allocated once.
    expected: Vec<usize>,
}

/// What one distinct row shape (family, attributes, resource attributes) resolved to.
struct RowEntry {
    family: usize,
    attributes: Vec<(String, String)>,
    resource: Vec<(String, String)>,
    /// Per point of the row, in order: its extra label and series slot (`None`: the
    /// selector does not match it).
    points: Vec<(Extra, Option<usize>)>,
}

impl Collector {
    /// Counts `n` more samples against [`MAX_SAMPLES`].
    fn over_budget(&mut self, n: usize) -> Result<(), PromError> {
        self.samples = self.samples.saturating_add(n);
        if self.samples > MAX_SAMPLES {
            return Err(PromError::execution(format!(
                "query processing would load too many samples into memory in query execution (more than {MAX_SAMPLES}); narrow the selector or the time range"
            )));
        }
        Ok(())
    }

    /// Adds samples read elsewhere to slot `slot`, within the samples limit.
    pub(super) fn extend(
        &mut self,
        slot: usize,
        samples: Vec<(i64, f64)>,
        delta: bool,
    ) -> Result<(), PromError> {
        self.over_budget(samples.len())?;
        let expected = self.expected.get(slot).copied().unwrap_or(0);
        let entry = &mut self.series[slot];
        if entry.1.is_empty() && samples.capacity() >= expected {
            entry.1 = samples;
        } else {
            if entry.1.is_empty() {
                entry.1.reserve_exact(expected.max(samples.len()));
            }
            entry.1.extend(samples);
        }
        entry.2 |= delta;
        Ok(())
    }

    /// Notes that up to `samples` more samples of `slot` are coming.
    pub(super) fn expect(&mut self, slot: usize, samples: usize) {
        if self.expected.len() <= slot {
            self.expected.resize(slot + 1, 0);
        }
        self.expected[slot] += samples;
    }

    /// The slot of a shared label set: found by identity after its first lookup, so a
    /// series met in many files is hashed once.
    pub(super) fn shared_slot(&mut self, labels: &Labels) -> usize {
        if let Some(&slot) = self.by_id.get(&labels.id()) {
            return slot;
        }
        let slot = self.slot(labels.clone());
        self.by_id.insert(labels.id(), slot);
        slot
    }

    /// The slot of a label set, created on first sight.
    pub(super) fn slot(&mut self, labels: Labels) -> usize {
        if let Some(&i) = self.index.get(&labels) {
            return i;
        }
        self.series.push((labels.clone(), Vec::new(), false));
        self.index.insert(labels, self.series.len() - 1);
        self.series.len() - 1
    }

    fn push(&mut self, slot: usize, t: i64, v: f64, delta: bool) -> Result<(), PromError> {
        self.over_budget(1)?;
        let entry = &mut self.series[slot];
        entry.1.push((t, v));
        entry.2 |= delta;
        Ok(())
    }

    /// Series in label order, samples in time order, one sample per instant, delta
    /// temporality summed into a running total (so it reads as a counter).
    fn finish(self) -> Vec<Series> {
        let mut out: Vec<Series> = self
            .series
            .into_iter()
            .filter(|s| !s.1.is_empty())
            .map(|(labels, mut samples, delta)| {
                samples.sort_by_key(|s| s.0);
                samples.dedup_by_key(|s| s.0);
                if delta {
                    let mut total = 0.0;
                    for s in &mut samples {
                        if !s.1.is_nan() {
                            total += s.1;
                            s.1 = total;
                        }
                    }
                }
                Series { labels, samples }
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

/// Prometheus's text of a bucket bound or quantile.
fn bound_text(v: f64) -> String {
    super::value::float_text(v)
}

/// Reads the series `selector` matches with samples in `[lo, hi]` (unix ms).
pub async fn load(
    engine: &QueryEngine,
    listed: &[Listed],
    selector: &Selector,
    lo: i64,
    hi: i64,
) -> Result<Vec<Series>, PromError> {
    let mut collector = Collector::default();
    let matching: Vec<&Family> = listed
        .iter()
        .map(|l| &l.family)
        .filter(|f| f.names().iter().any(|n| selector.name_may_match(n)))
        .collect();
    // Number series are read through the files' series indexes; the other shapes (a
    // few families of histograms and summaries) through SQL.
    let (numbers, matching): (Vec<&Family>, Vec<&Family>) =
        matching.into_iter().partition(|f| f.shape == Shape::Number);
    if !numbers.is_empty() {
        super::indexed::read_numbers(engine, &numbers, selector, lo, hi, &mut collector).await?;
    }
    if !matching.is_empty() {
        let shared_name = listed.iter().any(|l| {
            matching
                .iter()
                .any(|m| m.stored_name == l.family.stored_name)
                && !matching.contains(&&l.family)
        });
        read_families(
            engine,
            &matching,
            shared_name,
            selector,
            lo,
            hi,
            &mut collector,
        )
        .await?;
    }
    if selector.name_may_match("target_info") && listed.iter().any(|l| !l.family.prometheus) {
        read_target_info(engine, selector, lo, hi, &mut collector).await?;
    }
    Ok(collector.finish())
}

async fn read_families(
    engine: &QueryEngine,
    matching: &[&Family],
    shared_name: bool,
    selector: &Selector,
    lo: i64,
    hi: i64,
    collector: &mut Collector,
) -> Result<(), PromError> {
    let mut names: Vec<&str> = matching.iter().map(|f| f.stored_name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let needs = |shape: Shape| matching.iter().any(|f| f.shape == shape);
    let mut columns = vec![
        "metric_name",
        "metric_type",
        "unit",
        "is_monotonic",
        "scope_name",
        "temporality",
        "timestamp",
        "attributes",
        "resource_attributes",
        "flags",
    ];
    if needs(Shape::Number) {
        columns.extend(["value", "int_value"]);
    }
    if needs(Shape::Histogram) || needs(Shape::ExponentialHistogram) || needs(Shape::Summary) {
        columns.extend(["count", "sum"]);
    }
    if needs(Shape::Histogram) {
        columns.extend(["bucket_counts", "explicit_bounds"]);
    }
    if needs(Shape::Summary) {
        columns.push("quantile_values");
    }
    // Remote-written series keep their labels as attribute keys: equality matchers can
    // filter rows in the scan.
    let mut pushed = String::new();
    if selector.or_matchers.is_empty() && matching.iter().all(|f| f.prometheus) {
        for m in &selector.matchers {
            if m.name != NAME && matches!(m.op, MatchOp::Equal) && !m.value.is_empty() {
                pushed.push_str(&format!(
                    " AND attributes[{}] = {}",
                    lit(&m.name),
                    lit(&m.value)
                ));
            }
        }
    }
    // One family: its rows need not be told apart. When another family shares its stored
    // name (rare), select exactly its rows.
    if let [f] = matching
        && shared_name
    {
        pushed.push_str(&format!(
            " AND metric_type = {} AND coalesce(unit, '') = {} AND coalesce(is_monotonic, false) = {} AND {}",
            lit(&f.metric_type),
            lit(&f.unit),
            f.monotonic,
            if f.prometheus {
                format!("scope_name = {}", lit(PROMETHEUS_SCOPE))
            } else {
                format!("(scope_name IS NULL OR scope_name <> {})", lit(PROMETHEUS_SCOPE))
            }
        ));
    }
    let sql = format!(
        "SELECT {} FROM metrics WHERE metric_name IN ({}) AND {}{pushed}",
        columns.join(", "),
        names.iter().map(|n| lit(n)).collect::<Vec<_>>().join(", "),
        window_sql(lo, hi)
    );
    let mut failure = None;
    engine
        .for_each_batch(&sql, |batch| {
            if failure.is_none()
                && let Err(e) = rows(&batch, matching, selector, collector, None)
            {
                failure = Some(e);
            }
        })
        .await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The columns of one batch, typed.
struct Columns<'a> {
    name: StringArray,
    kind: StringArray,
    unit: StringArray,
    scope: StringArray,
    temporality: StringArray,
    mono: Option<&'a arrow::array::BooleanArray>,
    time: &'a arrow::array::PrimitiveArray<TimestampNanosecondType>,
    attributes: Option<&'a MapArray>,
    resource: Option<&'a MapArray>,
    flags: Option<&'a arrow::array::PrimitiveArray<UInt32Type>>,
    value: Option<&'a arrow::array::PrimitiveArray<Float64Type>>,
    int_value: Option<&'a arrow::array::PrimitiveArray<Int64Type>>,
    count: Option<&'a arrow::array::PrimitiveArray<UInt64Type>>,
    sum: Option<&'a arrow::array::PrimitiveArray<Float64Type>>,
    buckets: Option<&'a arrow::array::ListArray>,
    bounds: Option<&'a arrow::array::ListArray>,
    quantiles: Option<&'a arrow::array::ListArray>,
}

impl<'a> Columns<'a> {
    /// Whether rows `a` and `b` belong to the same family.
    fn same_family(&self, a: usize, b: usize) -> bool {
        text(&self.name, a) == text(&self.name, b)
            && text(&self.kind, a) == text(&self.kind, b)
            && text(&self.unit, a) == text(&self.unit, b)
            && text(&self.scope, a) == text(&self.scope, b)
            && self.mono.map(|m| m.is_valid(a) && m.value(a))
                == self.mono.map(|m| m.is_valid(b) && m.value(b))
    }

    fn of(batch: &'a RecordBatch) -> Result<Columns<'a>, PromError> {
        let col = |n: &str| batch.column_by_name(n);
        let s = |n: &str| match col(n) {
            Some(c) => strings(c),
            None => Err(PromError::execution(format!("column {n} is missing"))),
        };
        let time = col("timestamp")
            .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
            .ok_or_else(|| PromError::execution("timestamp column has an unexpected type"))?;
        Ok(Columns {
            name: s("metric_name")?,
            kind: s("metric_type")?,
            unit: s("unit")?,
            scope: s("scope_name")?,
            temporality: s("temporality")?,
            mono: col("is_monotonic").and_then(|c| c.as_boolean_opt()),
            time,
            attributes: col("attributes").and_then(|c| c.as_any().downcast_ref::<MapArray>()),
            resource: col("resource_attributes")
                .and_then(|c| c.as_any().downcast_ref::<MapArray>()),
            flags: col("flags").and_then(|c| c.as_primitive_opt::<UInt32Type>()),
            value: col("value").and_then(|c| c.as_primitive_opt::<Float64Type>()),
            int_value: col("int_value").and_then(|c| c.as_primitive_opt::<Int64Type>()),
            count: col("count").and_then(|c| c.as_primitive_opt::<UInt64Type>()),
            sum: col("sum").and_then(|c| c.as_primitive_opt::<Float64Type>()),
            buckets: col("bucket_counts").and_then(|c| c.as_list_opt::<i32>()),
            bounds: col("explicit_bounds").and_then(|c| c.as_list_opt::<i32>()),
            quantiles: col("quantile_values").and_then(|c| c.as_list_opt::<i32>()),
        })
    }
}

fn opt<T: arrow::datatypes::ArrowPrimitiveType>(
    a: Option<&arrow::array::PrimitiveArray<T>>,
    row: usize,
) -> Option<T::Native> {
    a.filter(|a| a.is_valid(row)).map(|a| a.value(row))
}

fn f64_list(list: Option<&arrow::array::ListArray>, row: usize) -> Vec<f64> {
    match list {
        Some(l) if l.is_valid(row) => {
            let v = l.value(row);
            if let Some(f) = v.as_primitive_opt::<Float64Type>() {
                f.iter().map(|x| x.unwrap_or(0.0)).collect()
            } else if let Some(u) = v.as_primitive_opt::<UInt64Type>() {
                u.iter().map(|x| x.unwrap_or(0) as f64).collect()
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

/// `(quantile, value)` pairs of a summary point.
fn quantile_pairs(list: Option<&arrow::array::ListArray>, row: usize) -> Vec<(f64, f64)> {
    let Some(l) = list.filter(|l| l.is_valid(row)) else {
        return Vec::new();
    };
    let v = l.value(row);
    let Some(s) = v.as_struct_opt() else {
        return Vec::new();
    };
    let (Some(q), Some(val)) = (
        s.column_by_name("quantile")
            .and_then(|c| c.as_primitive_opt::<Float64Type>()),
        s.column_by_name("value")
            .and_then(|c| c.as_primitive_opt::<Float64Type>()),
    ) else {
        return Vec::new();
    };
    (0..s.len()).map(|i| (q.value(i), val.value(i))).collect()
}

/// The labels of one row, without the metric name.
fn row_labels(c: &Columns<'_>, family: &Family, row: usize) -> Vec<(String, String)> {
    let attributes = map_pairs(c.attributes, row);
    if family.prometheus {
        return attributes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
    let mut out: Vec<(String, String)> = attributes
        .into_iter()
        .map(|(k, v)| (label_name(k), v.to_string()))
        .collect();
    let resource = map_pairs(c.resource, row);
    let (job, instance, _) = resource_labels(&resource);
    if let Some(job) = job {
        out.push(("job".to_string(), job));
    }
    if let Some(instance) = instance {
        out.push(("instance".to_string(), instance));
    }
    out
}

/// Which series of a family a point belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    /// The base name (numbers, summary quantiles).
    Base,
    /// `_bucket`.
    Bucket,
    /// `_sum`.
    Sum,
    /// `_count`.
    Count,
}

/// The extra label of a point.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Extra {
    None,
    Le(f64),
    Quantile(f64),
}

/// The points of one row, in a fixed order: part, extra label, value.
fn row_points(c: &Columns<'_>, family: &Family, row: usize, out: &mut Vec<(Part, Extra, f64)>) {
    out.clear();
    // OTLP's "no recorded value" flag is Prometheus's staleness marker.
    let no_value = opt(c.flags, row).is_some_and(|f| f & 1 == 1);
    let pick = |v: f64| {
        if no_value {
            f64::from_bits(STALE_NAN_BITS)
        } else {
            v
        }
    };
    match family.shape {
        Shape::Number => {
            let v = opt(c.value, row)
                .or_else(|| opt(c.int_value, row).map(|i| i as f64))
                .unwrap_or(f64::NAN);
            out.push((Part::Base, Extra::None, pick(v)));
        }
        Shape::Histogram | Shape::ExponentialHistogram | Shape::Summary => {
            let count = opt(c.count, row).map(|x| x as f64).unwrap_or(0.0);
            if family.shape == Shape::Histogram {
                let counts = f64_list(c.buckets, row);
                let bounds = f64_list(c.bounds, row);
                let mut cumulative = 0.0;
                for (i, b) in bounds.iter().enumerate() {
                    cumulative += counts.get(i).copied().unwrap_or(0.0);
                    out.push((Part::Bucket, Extra::Le(*b), pick(cumulative)));
                }
                out.push((Part::Bucket, Extra::Le(f64::INFINITY), pick(count)));
            }
            if family.shape == Shape::Summary {
                for (q, v) in quantile_pairs(c.quantiles, row) {
                    out.push((Part::Base, Extra::Quantile(q), pick(v)));
                }
            }
            if let Some(sum) = opt(c.sum, row) {
                out.push((Part::Sum, Extra::None, pick(sum)));
            }
            out.push((Part::Count, Extra::None, pick(count)));
        }
    }
}

fn part_name(family: &Family, part: Part) -> String {
    let n = &family.name;
    match part {
        Part::Base => n.clone(),
        Part::Bucket => format!("{n}_bucket"),
        Part::Sum => format!("{n}_sum"),
        Part::Count => format!("{n}_count"),
    }
}

fn row_hash(family: usize, attributes: &[(&str, &str)], resource: &[(&str, &str)]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    family.hash(&mut h);
    attributes.hash(&mut h);
    0xffu8.hash(&mut h);
    resource.hash(&mut h);
    h.finish()
}

fn same_pairs(stored: &[(String, String)], row: &[(&str, &str)]) -> bool {
    stored.len() == row.len()
        && stored
            .iter()
            .zip(row)
            .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
}

/// Resolves one row shape to series slots.
fn resolve(
    c: &Columns<'_>,
    family: &Family,
    row: usize,
    points: &[(Part, Extra, f64)],
    selector: &Selector,
    collector: &mut Collector,
) -> Vec<(Extra, Option<usize>)> {
    let mut base: Option<Vec<(String, String)>> = None;
    points
        .iter()
        .map(|&(part, extra, _)| {
            let name = part_name(family, part);
            if !selector.name_may_match(&name) {
                return (extra, None);
            }
            let mut pairs = base
                .get_or_insert_with(|| row_labels(c, family, row))
                .clone();
            match extra {
                Extra::None => {}
                Extra::Le(b) => pairs.push(("le".to_string(), bound_text(b))),
                Extra::Quantile(q) => pairs.push(("quantile".to_string(), bound_text(q))),
            }
            pairs.push((NAME.to_string(), name));
            let labels = Labels::from_pairs(pairs);
            if selector.matches(&labels) {
                (extra, Some(collector.slot(labels)))
            } else {
                (extra, None)
            }
        })
        .collect()
}

/// The previous row of a batch: family, attributes, resource attributes, point labels
/// and the series slots they resolved to.
type LastRow<'a> = (
    usize,
    Vec<(&'a str, &'a str)>,
    Vec<(&'a str, &'a str)>,
    Vec<Extra>,
    Vec<Option<usize>>,
);

/// Resolves the rows of `batch` to series of `families` and collects their samples.
/// Without `window` the rows are those a scan selected for exactly these families in the
/// query's window; with `window` (unix ms, inclusive: rows of the head, unfiltered) rows
/// of other families or outside it are skipped.
pub(super) fn rows(
    batch: &RecordBatch,
    families: &[&Family],
    selector: &Selector,
    collector: &mut Collector,
    window: Option<(i64, i64)>,
) -> Result<(), PromError> {
    let c = Columns::of(batch)?;
    let mut previous: Option<(usize, usize)> = None; // (row, family index)
    let mut points = Vec::new();
    let mut last: Option<LastRow<'_>> = None;
    for row in 0..batch.num_rows() {
        let same_as = |other: usize| {
            text(&c.name, row) == text(&c.name, other)
                && text(&c.kind, row) == text(&c.kind, other)
                && text(&c.unit, row) == text(&c.unit, other)
                && text(&c.scope, row) == text(&c.scope, other)
                && c.mono.map(|m| m.is_valid(row) && m.value(row))
                    == c.mono.map(|m| m.is_valid(other) && m.value(other))
        };
        if let Some((lo, hi)) = window {
            let inside = c.time.is_valid(row) && {
                let t = c.time.value(row).div_euclid(1_000_000);
                t >= lo && t <= hi
            };
            if !inside {
                continue;
            }
        }
        let index = match previous {
            // The scan selected exactly this family's rows.
            _ if families.len() == 1 && window.is_none() => Some(0),
            Some((other, f)) if same_as(other) => Some(f),
            _ => {
                let mono = c.mono.is_some_and(|m| m.is_valid(row) && m.value(row));
                let prometheus = text(&c.scope, row) == PROMETHEUS_SCOPE;
                families.iter().position(|f| {
                    f.stored_name == text(&c.name, row)
                        && f.metric_type == text(&c.kind, row)
                        && f.unit == text(&c.unit, row)
                        && f.monotonic == mono
                        && f.prometheus == prometheus
                })
            }
        };
        let Some(index) = index else {
            previous = None;
            continue;
        };
        previous = Some((row, index));
        if !c.time.is_valid(row) {
            continue;
        }
        let family = families[index];
        let t = c.time.value(row).div_euclid(1_000_000);
        let delta = text(&c.temporality, row) == "delta";
        row_points(&c, family, row, &mut points);
        let attributes = map_pairs(c.attributes, row);
        let resource = if family.prometheus {
            Vec::new()
        } else {
            map_pairs(c.resource, row)
        };
        // Rows of a series are adjacent in files (sorted by series): reuse the previous
        // row's resolution without hashing when it is the same series.
        if let Some((f, a, r, extras, slots)) = &last
            && *f == index
            && *a == attributes
            && *r == resource
            && extras.len() == points.len()
            && extras.iter().zip(&points).all(|(e, p)| *e == p.1)
        {
            for (slot, (_, extra, v)) in slots.iter().zip(&points) {
                if let Some(slot) = slot {
                    let accumulate = delta && !matches!(extra, Extra::Quantile(_));
                    collector.push(*slot, t, *v, accumulate)?;
                }
            }
            continue;
        }
        let hash = row_hash(index, &attributes, &resource);
        let cached = collector.rows.get(&hash).and_then(|entries| {
            entries.iter().position(|e| {
                e.family == index
                    && same_pairs(&e.attributes, &attributes)
                    && same_pairs(&e.resource, &resource)
                    && e.points.len() == points.len()
                    && e.points.iter().zip(&points).all(|(a, b)| a.0 == b.1)
            })
        });
        let slots: Vec<Option<usize>> = match cached {
            Some(i) => collector.rows[&hash][i]
                .points
                .iter()
                .map(|p| p.1)
                .collect(),
            None => {
                let resolved = resolve(&c, family, row, &points, selector, collector);
                let slots = resolved.iter().map(|p| p.1).collect();
                let owned = |pairs: &[(&str, &str)]| {
                    pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                };
                collector.rows.entry(hash).or_default().push(RowEntry {
                    family: index,
                    attributes: owned(&attributes),
                    resource: owned(&resource),
                    points: resolved,
                });
                slots
            }
        };
        for (slot, (_, extra, v)) in slots.iter().zip(&points) {
            if let Some(slot) = slot {
                // Summaries' quantiles are not sums: they are never accumulated.
                let accumulate = delta && !matches!(extra, Extra::Quantile(_));
                collector.push(*slot, t, *v, accumulate)?;
            }
        }
        let extras = points.iter().map(|p| p.1).collect();
        last = Some((index, attributes, resource, extras, slots));
    }
    Ok(())
}

async fn read_target_info(
    engine: &QueryEngine,
    selector: &Selector,
    lo: i64,
    hi: i64,
    collector: &mut Collector,
) -> Result<(), PromError> {
    let sql = format!(
        "SELECT timestamp, resource_attributes FROM metrics WHERE (scope_name IS NULL OR scope_name <> {}) AND {}",
        lit(PROMETHEUS_SCOPE),
        window_sql(lo, hi)
    );
    let mut failure = None;
    engine
        .for_each_batch(&sql, |batch| {
            if failure.is_some() {
                return;
            }
            let time = batch
                .column(0)
                .as_primitive_opt::<TimestampNanosecondType>();
            let resource = batch.column(1).as_any().downcast_ref::<MapArray>();
            let Some(time) = time else { return };
            for row in 0..batch.num_rows() {
                let pairs = map_pairs(resource, row);
                let (job, instance, rest) = resource_labels(&pairs);
                if rest.is_empty() || !time.is_valid(row) {
                    continue;
                }
                let mut labels: Vec<(String, String)> = rest
                    .iter()
                    .map(|(k, v)| (label_name(k), v.to_string()))
                    .collect();
                labels.extend(job.map(|j| ("job".to_string(), j)));
                labels.extend(instance.map(|i| ("instance".to_string(), i)));
                labels.push((NAME.to_string(), "target_info".to_string()));
                let labels = Labels::from_pairs(labels);
                if !selector.matches(&labels) {
                    continue;
                }
                let slot = collector.slot(labels);
                if let Err(e) =
                    collector.push(slot, time.value(row).div_euclid(1_000_000), 1.0, false)
                {
                    failure = Some(e);
                    return;
                }
            }
        })
        .await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
