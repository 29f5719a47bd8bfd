//! Trace search: which traces have a span matching the filters, summarised.
//!
//! The span filters (service, operation, attributes, kind, and span duration for Jaeger)
//! select trace ids inside the window, most recent first; then the spans of those traces
//! are aggregated into summaries. When trace-level filters are given (an error somewhere
//! in the trace, trace duration), both steps are one statement whose `HAVING` applies
//! them, so no matching trace is missed however many fail them.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};

use super::error::TraceError;
use super::fetch::{Window, int_at, lit, rows, str_at};
use crate::engine::QueryEngine;

/// How far outside the search window a matching trace's other spans are looked for when
/// summarising it.
pub const SUMMARY_MARGIN_NS: i64 = 3_600_000_000_000;

/// What to search for.
#[derive(Debug, Clone)]
pub struct SearchFilter {
    /// Spans starting inside this window.
    pub window: Window,
    /// A span of this service ...
    pub service: Option<String>,
    /// ... with this operation name ...
    pub operation: Option<String>,
    /// ... with these attribute values (span or resource attributes) ...
    pub attributes: Vec<(String, String)>,
    /// ... of this kind.
    pub span_kind: Option<String>,
    /// Some span of the trace has status error.
    pub errors_only: bool,
    /// The matching span itself has status error (Jaeger's `error=true` tag).
    pub span_errors: bool,
    /// Minimum duration, ns (of the trace, or of the matching span when `span_durations`).
    pub min_duration: Option<i64>,
    /// Maximum duration, ns.
    pub max_duration: Option<i64>,
    /// Durations bound the matching span (Jaeger) rather than the whole trace.
    pub span_durations: bool,
    /// Most traces returned.
    pub limit: usize,
}

/// One trace found by a search.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    /// Trace id.
    pub trace_id: String,
    /// Service of the root span (or the earliest span when the root is missing).
    pub root_service: String,
    /// Operation of that span.
    pub root_name: String,
    /// Whether a span without parent was found.
    pub has_root: bool,
    /// Earliest span start, Unix ns.
    pub start: i64,
    /// Latest end minus earliest start, ns.
    pub duration: i64,
    /// Spans stored for the trace.
    pub span_count: u64,
    /// Spans with status error.
    pub error_count: u64,
    /// Services with spans in the trace, sorted.
    pub services: Vec<String>,
}

impl SearchFilter {
    fn span_conditions(&self) -> Vec<String> {
        let mut c = vec![self.window.sql("start_time")];
        if let Some(s) = &self.service {
            c.push(format!("service_name = {}", lit(s)));
        }
        if let Some(o) = &self.operation {
            c.push(format!("name = {}", lit(o)));
        }
        if let Some(k) = &self.span_kind {
            c.push(format!("kind = {}", lit(k)));
        }
        for (k, v) in &self.attributes {
            c.push(format!(
                "(attributes[{k}] = {v} OR resource_attributes[{k}] = {v})",
                k = lit(k),
                v = lit(v)
            ));
        }
        if self.span_durations {
            if let Some(d) = self.min_duration {
                c.push(format!("duration_ns >= {d}"));
            }
            if let Some(d) = self.max_duration {
                c.push(format!("duration_ns <= {d}"));
            }
        }
        if self.span_errors || (self.errors_only && !self.has_span_filter()) {
            c.push("status_code = 'error'".into());
        }
        c
    }

    fn has_span_filter(&self) -> bool {
        self.service.is_some()
            || self.operation.is_some()
            || self.span_kind.is_some()
            || !self.attributes.is_empty()
            || self.span_errors
            || (self.span_durations && (self.min_duration.is_some() || self.max_duration.is_some()))
    }

    /// Whether summaries must be checked after the span filters.
    fn has_trace_filter(&self) -> bool {
        (self.errors_only && self.has_span_filter())
            || (!self.span_durations
                && (self.min_duration.is_some() || self.max_duration.is_some()))
    }
}

/// Trace ids with a span matching the span filters, most recent first.
pub async fn matching_trace_ids(
    engine: &QueryEngine,
    filter: &SearchFilter,
    limit: usize,
    offset: usize,
) -> Result<Vec<String>, TraceError> {
    let sql = format!(
        "SELECT trace_id, max(start_time) AS last FROM spans WHERE {} \
         GROUP BY trace_id ORDER BY last DESC, trace_id LIMIT {limit} OFFSET {offset}",
        filter.span_conditions().join(" AND ")
    );
    let batches = rows(engine, &sql).await?;
    let mut out = Vec::new();
    for b in &batches {
        for row in 0..b.num_rows() {
            if let Some(t) = str_at(b, "trace_id", row) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// The aggregate columns of a trace summary, over `spans` grouped by `trace_id`.
const SUMMARY_COLUMNS: &str = "trace_id, min(start_time) AS first_start, max(end_time) AS last_end, \
    count(*) AS spans, \
    sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors, \
    first_value(service_name ORDER BY CASE WHEN parent_span_id IS NULL THEN 0 ELSE 1 END, start_time) AS root_service, \
    first_value(name ORDER BY CASE WHEN parent_span_id IS NULL THEN 0 ELSE 1 END, start_time) AS root_name, \
    sum(CASE WHEN parent_span_id IS NULL THEN 1 ELSE 0 END) AS roots, \
    array_agg(DISTINCT service_name) AS services";

/// A summary's duration in nanoseconds, over the columns of [`SUMMARY_COLUMNS`].
const DURATION: &str = "(CAST(last_end AS BIGINT) - CAST(first_start AS BIGINT))";

/// `window` widened by [`SUMMARY_MARGIN_NS`] on each side.
fn widened(window: Window) -> Window {
    Window {
        start: window.start.saturating_sub(SUMMARY_MARGIN_NS),
        end: window.end.saturating_add(SUMMARY_MARGIN_NS),
    }
}

fn decode_summaries(batches: &[arrow::array::RecordBatch]) -> Vec<TraceSummary> {
    let mut out = Vec::new();
    for b in batches {
        let services = b
            .column_by_name("services")
            .and_then(|c| c.as_list_opt::<i32>());
        for row in 0..b.num_rows() {
            let Some(trace_id) = str_at(b, "trace_id", row) else {
                continue;
            };
            let start = int_at(b, "first_start", row).unwrap_or(0);
            let end = int_at(b, "last_end", row).unwrap_or(start);
            let mut names: Vec<String> = Vec::new();
            if let Some(list) = services
                && list.is_valid(row)
            {
                let values = list.value(row);
                if let Some(values) = values.as_string_opt::<i32>() {
                    for i in 0..values.len() {
                        if values.is_valid(i) {
                            names.push(values.value(i).to_string());
                        }
                    }
                }
            }
            names.sort();
            out.push(TraceSummary {
                trace_id,
                root_service: str_at(b, "root_service", row).unwrap_or_default(),
                root_name: str_at(b, "root_name", row).unwrap_or_default(),
                has_root: int_at(b, "roots", row).unwrap_or(0) > 0,
                start,
                duration: (end - start).max(0),
                span_count: int_at(b, "spans", row).unwrap_or(0).max(0) as u64,
                error_count: int_at(b, "errors", row).unwrap_or(0).max(0) as u64,
                services: names,
            });
        }
    }
    out
}

/// Summaries of `trace_ids`, from their spans within `window` widened by
/// [`SUMMARY_MARGIN_NS`] on each side, in the order of `trace_ids`.
pub async fn summaries(
    engine: &QueryEngine,
    trace_ids: &[String],
    window: Window,
) -> Result<Vec<TraceSummary>, TraceError> {
    if trace_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = trace_ids.iter().map(|t| lit(t)).collect();
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM spans WHERE trace_id IN ({}) AND {} GROUP BY trace_id",
        ids.join(", "),
        widened(window).sql("start_time")
    );
    let mut by_id: HashMap<String, TraceSummary> = decode_summaries(&rows(engine, &sql).await?)
        .into_iter()
        .map(|s| (s.trace_id.clone(), s))
        .collect();
    Ok(trace_ids.iter().filter_map(|t| by_id.remove(t)).collect())
}

/// Traces with a span matching the span filters whose summary passes the trace-level
/// filters, in one statement: the conditions on the whole trace are SQL `HAVING`.
async fn search_checked(
    engine: &QueryEngine,
    filter: &SearchFilter,
) -> Result<Vec<TraceSummary>, TraceError> {
    let mut checks = vec!["TRUE".to_string()];
    if filter.errors_only {
        checks.push("errors > 0".into());
    }
    if !filter.span_durations {
        if let Some(d) = filter.min_duration {
            checks.push(format!("{DURATION} >= {d}"));
        }
        if let Some(d) = filter.max_duration {
            checks.push(format!("{DURATION} <= {d}"));
        }
    }
    let sql = format!(
        "SELECT * FROM (SELECT {SUMMARY_COLUMNS} FROM spans \
           WHERE trace_id IN (SELECT trace_id FROM spans WHERE {}) AND {} \
           GROUP BY trace_id) \
         WHERE {} ORDER BY first_start DESC, trace_id LIMIT {}",
        filter.span_conditions().join(" AND "),
        widened(filter.window).sql("start_time"),
        checks.join(" AND "),
        filter.limit.max(1)
    );
    Ok(decode_summaries(&rows(engine, &sql).await?))
}

/// Searches traces; most recent first.
pub async fn search(
    engine: &QueryEngine,
    filter: &SearchFilter,
) -> Result<Vec<TraceSummary>, TraceError> {
    if filter.has_trace_filter() {
        return search_checked(engine, filter).await;
    }
    let limit = filter.limit.max(1);
    let ids = matching_trace_ids(engine, filter, limit, 0).await?;
    let mut out = summaries(engine, &ids, filter.window).await?;
    out.sort_by(|a, b| {
        b.start
            .cmp(&a.start)
            .then_with(|| a.trace_id.cmp(&b.trace_id))
    });
    Ok(out)
}
