//! What the pages read from.

use periscope_alerting::Alerting;
use periscope_query::QueryEngine;
use periscope_query::storage::StoreView;

/// Handles to the query engine, a read-only view of the store (log search, the storage
/// page) and the alerting engine.
#[derive(Clone)]
pub struct UiState {
    /// SQL, PromQL, traces.
    pub engine: QueryEngine,
    /// Log search and what is stored.
    pub store: StoreView,
    /// Rules, alerts, notifications.
    pub alerting: Alerting,
    /// Periscope's own metrics in Prometheus text (what `/metrics` serves), for the
    /// storage page's ingest counters.
    pub ops_metrics: Option<std::sync::Arc<dyn Fn() -> String + Send + Sync>>,
}

impl std::fmt::Debug for UiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiState").finish_non_exhaustive()
    }
}
