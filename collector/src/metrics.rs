//! The receivers' own counters, exported on `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Label set of the item counters.
pub type ItemLabels = Vec<(&'static str, &'static str)>;

/// Accepted and rejected items per signal, and exports refused for pressure.
#[derive(Debug, Clone, Default)]
pub struct CollectorMetrics {
    pub(crate) items: Family<ItemLabels, Counter>,
    pub(crate) refused: Family<ItemLabels, Counter>,
}

impl CollectorMetrics {
    /// Registers every metric under the `periscope_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "periscope_ingest_items",
            "Spans, log records and metric points received, by signal and outcome (accepted, rejected)",
            self.items.clone(),
        );
        registry.register(
            "periscope_ingest_refused_exports",
            "Exports refused with a retryable error (memory budget, disk), by signal",
            self.refused.clone(),
        );
    }
}
