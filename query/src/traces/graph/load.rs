//! The graph of a time window, from the window's span aggregates.

use super::Graph;
use super::build::graph_of;
use crate::engine::QueryEngine;
use crate::traces::aggregate::window_aggregate;
use crate::traces::error::TraceError;
use crate::traces::fetch::Window;

/// The service graph of `window`.
pub async fn service_graph(engine: &QueryEngine, window: Window) -> Result<Graph, TraceError> {
    Ok(graph_of(&window_aggregate(engine, window).await?, window))
}
