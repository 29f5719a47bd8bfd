//! The span aggregates of a query window: every spans file's stored aggregates (see the
//! `periscope-spanagg` crate), the head's rows aggregated on the spot, and the few rows
//! their deferred spans wait for, looked up by trace id. The service graph and RED read
//! this instead of scanning spans. Minutes are the unit: a window counts the spans that
//! start in the minutes it touches (see `docs/traces.md`).

use std::collections::BTreeMap;
use std::sync::Arc;

use periscope_spanagg::{Aggregate, NANOS_PER_MINUTE, Summary, SummaryBuilder, facts};
use periscope_storage::{FileEntry, Signal};

use super::error::TraceError;
use super::fetch::{Window, lit, rows, str_at};
use crate::QueryError;
use crate::engine::QueryEngine;

/// Trace ids looked up per query, so that one SQL text stays small.
const LOOKUP_CHUNK: usize = 256;

/// The Unix minutes `[from, to)` a window touches.
pub fn minutes(window: Window) -> (i64, i64) {
    (
        window.start.div_euclid(NANOS_PER_MINUTE),
        (window.end + NANOS_PER_MINUTE - 1).div_euclid(NANOS_PER_MINUTE),
    )
}

/// The window's aggregates.
///
/// # Errors
/// When files' aggregates cannot be read, a lookup fails, or what deferred spans wait
/// for exceeds the query memory limit.
pub async fn window_aggregate(
    engine: &QueryEngine,
    window: Window,
) -> Result<Aggregate, TraceError> {
    let store = engine.store().clone();
    let span_window = minutes(window);
    let mut builder = tokio::task::spawn_blocking(move || {
        let snapshot = store.snapshot(Signal::Spans);
        let mut summaries: Vec<Arc<Summary>> = store
            .span_aggregates(&snapshot.files)
            .map_err(|e| TraceError::Query(QueryError::Execution(e.to_string())))?;
        let mut head = SummaryBuilder::new();
        for b in &snapshot.batches {
            head.add_batch(b);
        }
        summaries.push(Arc::new(head.finish()));
        Ok::<_, TraceError>(SummaryBuilder::merging(
            summaries.iter().map(|s| s.as_ref()),
            Some(span_window),
        ))
    })
    .await
    .map_err(|e| TraceError::Query(QueryError::Execution(e.to_string())))??;
    let limit = engine.config().memory_limit;
    let columns = periscope_storage::span_aggregates::COLUMNS.join(", ");
    for chunk in builder.wanted_traces().chunks(LOOKUP_CHUNK) {
        let list: Vec<String> = chunk.iter().map(|t| lit(t)).collect();
        let sql = format!(
            "SELECT {columns} FROM spans WHERE trace_id IN ({})",
            list.join(", ")
        );
        engine
            .for_each_batch(&sql, |b| builder.add_batch(&b))
            .await?;
        if builder.memory_bytes() > limit {
            return Err(TraceError::Query(QueryError::ResourcesExhausted(format!(
                "the spans this window's aggregates wait for take more than {limit} bytes"
            ))));
        }
    }
    Ok(builder.finish_window())
}

/// Service → `periscope.component.kind` from all three tables over the window: recorded
/// per file when it was written, read from the head's rows, and (for files written
/// before that was recorded) through SQL.
pub async fn component_kinds(
    engine: &QueryEngine,
    window: Window,
) -> Result<BTreeMap<String, String>, TraceError> {
    let mut out = BTreeMap::new();
    for signal in Signal::ALL {
        let time = signal.time_column();
        let snapshot = engine.store().snapshot(signal);
        let overlapping = |f: &&FileEntry| f.max_time >= window.start && f.min_time < window.end;
        let mut legacy = false;
        for f in snapshot.files.iter().filter(overlapping) {
            match &f.components {
                Some(kinds) => {
                    for (s, k) in kinds {
                        facts::note_component(&mut out, s, k);
                    }
                }
                None => legacy = true,
            }
        }
        for b in &snapshot.batches {
            facts::components(b, &mut out);
        }
        if legacy {
            let sql = format!(
                "SELECT service_name, resource_attributes['periscope.component.kind'] AS kind \
                 FROM {} WHERE {} GROUP BY 1, 2",
                signal.name(),
                window.sql(time)
            );
            for b in rows(engine, &sql).await? {
                for row in 0..b.num_rows() {
                    if let (Some(s), Some(k)) =
                        (str_at(&b, "service_name", row), str_at(&b, "kind", row))
                    {
                        facts::note_component(&mut out, &s, &k);
                    }
                }
            }
        }
    }
    Ok(out)
}
