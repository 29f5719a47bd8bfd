//! What the pages read from.

use periscope_alerting::Alerting;
use periscope_query::QueryEngine;
use periscope_storage::Store;

/// Handles to the query engine, the store (log index) and the alerting engine.
#[derive(Clone, Debug)]
pub struct UiState {
    /// SQL, PromQL, traces.
    pub engine: QueryEngine,
    /// Log search.
    pub store: Store,
    /// Rules, alerts, notifications.
    pub alerting: Alerting,
}
