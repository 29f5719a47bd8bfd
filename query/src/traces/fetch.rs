//! Reading spans and logs for the trace APIs, through the SQL engine (so head and files,
//! time pruning and trace-id bloom filters all apply).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampNanosecondType, UInt64Type};

use super::error::TraceError;
use super::span::{Span, decode, string_at};
use crate::engine::QueryEngine;
use crate::json::rfc3339_text;

/// A SQL string literal.
pub(crate) fn lit(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A SQL literal for a Unix-nanosecond instant, typed by comparison with a time column.
pub(crate) fn ts_lit(nanos: i64) -> String {
    format!("'{}'", rfc3339_text(nanos))
}

/// A half-open time window `[start, end)` in Unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start.
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
}

impl Window {
    /// `column` inside the window, as SQL.
    pub(crate) fn sql(&self, column: &str) -> String {
        format!(
            "{column} >= {} AND {column} < {}",
            ts_lit(self.start),
            ts_lit(self.end)
        )
    }

    /// Length in seconds (at least one nanosecond).
    pub fn seconds(&self) -> f64 {
        (self.end - self.start).max(1) as f64 / 1e9
    }
}

/// Runs `sql` and returns its batches.
pub(crate) async fn rows(engine: &QueryEngine, sql: &str) -> Result<Vec<RecordBatch>, TraceError> {
    Ok(engine.execute(sql).await?.batches)
}

/// Every stored span of one trace (any time).
pub async fn trace_spans(engine: &QueryEngine, trace_id: &str) -> Result<Vec<Span>, TraceError> {
    let batches = rows(
        engine,
        &format!("SELECT * FROM spans WHERE trace_id = {}", lit(trace_id)),
    )
    .await?;
    Ok(decode(&batches))
}

/// Every stored span of the given traces, grouped by nothing (caller groups).
pub async fn spans_of_traces(
    engine: &QueryEngine,
    trace_ids: &[String],
) -> Result<Vec<Span>, TraceError> {
    if trace_ids.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = trace_ids.iter().map(|t| lit(t)).collect();
    let batches = rows(
        engine,
        &format!(
            "SELECT * FROM spans WHERE trace_id IN ({})",
            list.join(", ")
        ),
    )
    .await?;
    Ok(decode(&batches))
}

/// String column `name` of `batch` at `row`, if not NULL.
pub(crate) fn str_at(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
    string_at(batch.column_by_name(name), row)
}

/// Integer column `name` (Int64, UInt64 or nanosecond timestamp) at `row`.
pub(crate) fn int_at(batch: &RecordBatch, name: &str, row: usize) -> Option<i64> {
    let a = batch.column_by_name(name)?;
    if a.is_null(row) {
        return None;
    }
    match a.data_type() {
        arrow::datatypes::DataType::Int64 => Some(a.as_primitive::<Int64Type>().value(row)),
        arrow::datatypes::DataType::UInt64 => {
            i64::try_from(a.as_primitive::<UInt64Type>().value(row)).ok()
        }
        arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, _) => {
            Some(a.as_primitive::<TimestampNanosecondType>().value(row))
        }
        _ => None,
    }
}
