//! The shared ingest path of both transports.

use std::time::{SystemTime, UNIX_EPOCH};

use periscope_storage::Store;
use tracing::debug;

use crate::error::IngestError;
use crate::export::Export;
use crate::metrics::CollectorMetrics;

/// Validates, converts and durably stores OTLP exports.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Store,
    metrics: CollectorMetrics,
}

impl Ingest {
    /// An ingest path writing into `store`.
    pub fn new(store: Store) -> Self {
        Ingest {
            store,
            metrics: CollectorMetrics::default(),
        }
    }

    /// The receivers' metrics, for registration on `/metrics`.
    pub fn metrics(&self) -> &CollectorMetrics {
        &self.metrics
    }

    /// Stores the valid items of `request` and returns the OTLP response, which carries a
    /// partial success when some items were invalid.
    ///
    /// # Errors
    /// [`IngestError::Unavailable`] when the store refuses for pressure (nothing stored);
    /// [`IngestError::Internal`] when storing failed otherwise (nothing acknowledged).
    pub async fn export<E: Export>(&self, request: &E) -> Result<E::Response, IngestError> {
        let received = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let converted = request.convert(received)?;
        let signal = E::SIGNAL.name();
        if let Some(batch) = converted.batch
            && let Err(e) = self.store.append(E::SIGNAL, batch).await
        {
            let e = IngestError::from(e);
            if matches!(e, IngestError::Unavailable(_)) {
                self.metrics
                    .refused
                    .get_or_create(&vec![("signal", signal)])
                    .inc();
            }
            return Err(e);
        }
        self.metrics
            .items
            .get_or_create(&vec![("signal", signal), ("outcome", "accepted")])
            .inc_by(converted.accepted);
        if converted.rejected > 0 {
            self.metrics
                .items
                .get_or_create(&vec![("signal", signal), ("outcome", "rejected")])
                .inc_by(converted.rejected);
            debug!(signal, rejected = converted.rejected, error = ?converted.error, "Rejected invalid items.");
        }
        let message = converted
            .error
            .map(|first| format!("{} {signal} rejected; first: {first}", converted.rejected));
        Ok(E::response(converted.rejected, message))
    }
}
