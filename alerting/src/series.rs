//! The series the engine writes (`ALERTS`, `ALERTS_FOR_STATE`, recorded series and
//! their staleness markers) and the sink they go to.

use std::sync::Arc;

use async_trait::async_trait;

use crate::state::LabelSet;

/// Prometheus's staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// One sample the engine writes: labels (with `__name__`), time (Unix ms), value.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSample {
    /// Labels, `__name__` included.
    pub labels: LabelSet,
    /// Unix ms.
    pub timestamp_ms: i64,
    /// The value (a staleness marker is [`STALE_NAN`]'s bits).
    pub value: f64,
}

/// Where `ALERTS`, `ALERTS_FOR_STATE` and recorded series go (the binary wires it to
/// the ingest path, so they are stored like remote-written series).
#[async_trait]
pub trait SeriesSink: Send + Sync {
    /// Stores the samples durably.
    async fn write(&self, samples: Vec<SeriesSample>) -> Result<(), String>;
}

/// Writes `series` at `ts` to `sink`, if there is one; a failure is logged (the next
/// evaluation writes again).
pub(crate) async fn write(sink: Option<&Arc<dyn SeriesSink>>, series: &[(LabelSet, f64)], ts: i64) {
    let Some(sink) = sink else { return };
    let samples = series
        .iter()
        .map(|(labels, value)| SeriesSample {
            labels: labels.clone(),
            timestamp_ms: ts,
            value: *value,
        })
        .collect();
    if let Err(e) = sink.write(samples).await {
        tracing::warn!(error = %e, "Could not store ALERTS or recorded series.");
    }
}

/// Staleness markers for `series`.
pub(crate) fn stale(series: impl IntoIterator<Item = LabelSet>) -> Vec<(LabelSet, f64)> {
    series
        .into_iter()
        .map(|l| (l, f64::from_bits(STALE_NAN)))
        .collect()
}
