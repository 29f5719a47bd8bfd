//! Traces: the trace view, trace search, the service dependency graph, RED per service
//! and operation, the MSA component inventory, and Jaeger's query API.
//!
//! ```text
//! GET /api/v1/traces/{id} ─► fetch::trace_spans (SQL, trace-id bloom filters) ─► tree::assemble
//!       (depth-first order, orphans, clock skew) + the logs with that trace id
//! GET /api/v1/traces      ─► search (span filters → trace ids → summaries)
//! GET /api/v1/service-graph, /api/v1/components ─► graph (span aggregates → edges, nodes)
//! GET /api/v1/services    ─► red (span aggregates: per-operation tallies of the window)
//! GET /api/...            ─► jaeger (same data in Jaeger's JSON model)
//! ```
//!
//! Traces and search read through the SQL engine, so the head and the Parquet files are
//! one table and a trace split across a flush assembles whole; the graph and RED read
//! the span aggregates of the window (`aggregate`), the head's computed on the spot.

mod aggregate;
mod api;
mod components;
mod error;
pub(crate) mod fetch;
mod graph;
mod id;
mod jaeger;
mod red;
mod search;
mod span;
mod tree;

#[cfg(test)]
mod tests;

pub use api::{
    DEFAULT_SPAN_LIMIT, MAX_SPAN_LIMIT, components_json, operations_json, search_json,
    service_graph_json,
};
pub use error::TraceError;
pub use fetch::{Window, trace_spans};
pub use graph::{GraphBuilder, NodeKind, Peer};
pub use id::parse_trace_id;
pub use jaeger::jaeger_trace;
pub(crate) use span::typed_attrs;
pub use span::{Attr, Span, SpanEvent, SpanLink, decode};
pub use tree::{Placement, Tree, assemble};

/// The trace routes: Periscope's `/api/v1` ones and Jaeger's `/api` ones.
pub fn router(engine: crate::QueryEngine) -> axum::Router {
    api::router(engine.clone()).merge(jaeger::router(engine))
}
