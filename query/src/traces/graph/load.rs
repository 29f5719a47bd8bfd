//! The graph of a time window, from the window's span aggregates.

use periscope_spanagg::Aggregate;

use super::Graph;
use super::build::graph_of;
use crate::engine::QueryEngine;
use crate::traces::aggregate::{component_kinds, window_aggregate};
use crate::traces::error::TraceError;
use crate::traces::fetch::Window;

/// The service graph of `window`.
pub async fn service_graph(engine: &QueryEngine, window: Window) -> Result<Graph, TraceError> {
    let aggregate = window_aggregate(engine, window).await?;
    service_graph_of(engine, &aggregate, window).await
}

/// The service graph of `window` from its aggregates (already read).
pub async fn service_graph_of(
    engine: &QueryEngine,
    aggregate: &Aggregate,
    window: Window,
) -> Result<Graph, TraceError> {
    let kinds = component_kinds(engine, window).await?;
    Ok(graph_of(aggregate, &kinds, window))
}
