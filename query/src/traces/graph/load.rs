//! The graph of a time window, loaded through SQL: spans streamed batch by batch into the
//! builder, and each service's `periscope.component.kind` from all three tables.

use std::collections::HashMap;

use super::{Graph, GraphBuilder};
use crate::engine::QueryEngine;
use crate::traces::error::TraceError;
use crate::traces::fetch::{Window, rows, str_at};

/// Service name → `periscope.component.kind`, from spans, logs and metrics of the window.
pub async fn component_kinds(
    engine: &QueryEngine,
    window: Window,
) -> Result<HashMap<String, String>, TraceError> {
    let mut out = HashMap::new();
    for (table, time) in [
        ("spans", "start_time"),
        ("logs", "timestamp"),
        ("metrics", "timestamp"),
    ] {
        let sql = format!(
            "SELECT service_name, resource_attributes['periscope.component.kind'] AS kind \
             FROM {table} WHERE {} GROUP BY 1, 2",
            window.sql(time)
        );
        for b in rows(engine, &sql).await? {
            for row in 0..b.num_rows() {
                if let (Some(s), Some(k)) =
                    (str_at(&b, "service_name", row), str_at(&b, "kind", row))
                {
                    out.insert(s, k);
                }
            }
        }
    }
    Ok(out)
}

/// The service graph of `window`.
pub async fn service_graph(engine: &QueryEngine, window: Window) -> Result<Graph, TraceError> {
    let mut builder = GraphBuilder::default();
    let sql = format!(
        "SELECT trace_id, span_id, parent_span_id, service_name, kind, duration_ns, \
           status_code, \
           CASE WHEN kind IN ('client', 'producer', 'consumer') THEN attributes END \
             AS peer_attributes \
         FROM spans WHERE {}",
        window.sql("start_time")
    );
    // The span index lives outside DataFusion's memory pool: hold it to the same limit.
    let limit = engine.config().memory_limit;
    let mut over = false;
    engine
        .for_each_batch(&sql, |b| {
            if !over {
                builder.add_batch(&b);
                over = builder.memory_bytes() > limit;
            }
        })
        .await?;
    if over {
        return Err(TraceError::Query(crate::QueryError::ResourcesExhausted(
            format!(
                "the service graph of this window indexes over {} spans, more than {limit} bytes",
                builder.spans.len()
            ),
        )));
    }
    let kinds = component_kinds(engine, window).await?;
    Ok(builder.build(window, &kinds))
}
