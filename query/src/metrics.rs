//! The query engine's own counters, exported on `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set `{outcome="ok"}`.
pub type OutcomeLabels = Vec<(&'static str, &'static str)>;

/// Query count by outcome and query latency.
#[derive(Debug, Clone)]
pub struct QueryMetrics {
    pub(crate) queries: Family<OutcomeLabels, Counter>,
    pub(crate) seconds: Histogram,
}

impl Default for QueryMetrics {
    fn default() -> Self {
        QueryMetrics {
            queries: Family::default(),
            seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl QueryMetrics {
    /// Registers every metric under the `periscope_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "periscope_queries",
            "SQL queries run, by outcome",
            self.queries.clone(),
        );
        registry.register(
            "periscope_query_seconds",
            "SQL query latency",
            self.seconds.clone(),
        );
    }
}
