//! The shared ingest path of both transports.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use periscope_storage::{Signal, Store};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::error::IngestError;
use crate::export::Export;
use crate::metrics::CollectorMetrics;

/// The arrival time of a request in Unix ns.
fn received_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Validates, converts and durably stores OTLP exports.
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Store,
    metrics: CollectorMetrics,
    /// Memory for requests being read and decoded, in KiB permits.
    decoding: Arc<Semaphore>,
    decoding_kib: u32,
}

/// Memory reserved for one request while it is read, decoded and stored; released on
/// drop, so a request whose client hangs up gives it back too.
#[derive(Debug)]
pub struct Admission {
    permit: OwnedSemaphorePermit,
}

impl Ingest {
    /// An ingest path writing into `store`, with no limit on requests being decoded.
    pub fn new(store: Store) -> Self {
        Ingest::with_decoding_limit(store, u64::from(u32::MAX) * 1024)
    }

    /// An ingest path writing into `store` that decodes requests worth at most
    /// `decoding_bytes` of memory at once (see [`Ingest::admit`]).
    pub fn with_decoding_limit(store: Store, decoding_bytes: u64) -> Self {
        let kib = u32::try_from(decoding_bytes / 1024)
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        Ingest {
            store,
            metrics: CollectorMetrics::default(),
            decoding: Arc::new(Semaphore::new(kib as usize)),
            decoding_kib: kib,
        }
    }

    /// Admits a request before its body is read: refused (retry later) while unflushed
    /// rows fill their budget. With `memory` (what reading and decoding this request may
    /// take), it is also refused while other requests being decoded hold the decoding
    /// memory; more than the whole decoding budget counts as all of it, so one request can
    /// always go through. Without it (gRPC, whose message length is not known before it
    /// is read) only the budget check applies.
    ///
    /// # Errors
    /// [`IngestError::Unavailable`], counted as a refused export of `signal`.
    pub fn admit(
        &self,
        signal: &'static str,
        memory: Option<u64>,
    ) -> Result<Option<Admission>, IngestError> {
        let refuse = |message: &str| {
            self.metrics
                .refused
                .get_or_create(&vec![("signal", signal)])
                .inc();
            Err(IngestError::Unavailable(message.to_string()))
        };
        if self.store.is_full() {
            return refuse(
                "the memory budget for unflushed rows is used up; retry after the next flush",
            );
        }
        let Some(memory) = memory else {
            return Ok(None);
        };
        let kib = u32::try_from(memory.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.decoding_kib);
        match Arc::clone(&self.decoding).try_acquire_many_owned(kib) {
            Ok(permit) => Ok(Some(Admission { permit })),
            Err(_) => refuse("too many requests are being decoded at once; retry shortly"),
        }
    }

    /// Admits decoding and storing a request estimated (see [`crate::decoded`]) to take
    /// `bytes` of memory at its peak, on top of what `held` already reserves.
    ///
    /// # Errors
    /// [`IngestError::TooLarge`] when `bytes` is more than the whole decoding budget
    /// (the request can never be taken whole); [`IngestError::Unavailable`] while other
    /// requests hold the memory it needs.
    pub fn admit_decoding(
        &self,
        signal: &'static str,
        bytes: u64,
        held: Option<Admission>,
    ) -> Result<Admission, IngestError> {
        let budget = u64::from(self.decoding_kib) * 1024;
        let refused = |e: IngestError| {
            self.metrics
                .refused
                .get_or_create(&vec![("signal", signal)])
                .inc();
            Err(e)
        };
        if bytes > budget {
            return refused(IngestError::TooLarge(format!(
                "this {signal} export would take about {bytes} bytes of memory to decode and store, more than the {budget} bytes one request may use; send it in smaller batches"
            )));
        }
        let want = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        let have = held.as_ref().map_or(0, |a| a.permit.num_permits() as u32);
        if want <= have
            && let Some(held) = held
        {
            return Ok(held);
        }
        match Arc::clone(&self.decoding).try_acquire_many_owned(want - have) {
            Ok(mut permit) => {
                if let Some(held) = held {
                    permit.merge(held.permit);
                }
                Ok(Admission { permit })
            }
            Err(_) => refused(IngestError::Unavailable(
                "too many requests are being decoded at once; retry shortly".to_string(),
            )),
        }
    }

    /// Reserves the memory of unflushed rows for a request of `signal` about to be
    /// converted into rows of about `row_bytes` (an estimate from [`crate::decoded`]):
    /// while flushes are behind, the request is refused now, before the work of
    /// converting it, instead of after. The rows are stored with it
    /// ([`Ingest::export_protobuf`], [`Ingest::store_metric_rows`]), which resizes it to
    /// what they hold.
    ///
    /// # Errors
    /// [`IngestError::Unavailable`] when the bytes do not fit, counted as a refused export
    /// of `signal`.
    pub fn reserve_rows(
        &self,
        signal: Signal,
        row_bytes: u64,
    ) -> Result<periscope_storage::Reservation, IngestError> {
        self.store.reserve_rows(signal, row_bytes).map_err(|e| {
            self.metrics
                .refused
                .get_or_create(&vec![("signal", signal.name())])
                .inc();
            IngestError::from(e)
        })
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
        let converted = request.convert(received_now())?;
        self.store::<E>(converted, None, None).await
    }

    /// As [`Ingest::export`], from the request's protobuf bytes.
    ///
    /// # Errors
    /// [`IngestError::Invalid`] when the bytes are not a valid export of the signal; the
    /// errors of [`Ingest::export`] otherwise.
    pub async fn export_protobuf<E: Export>(
        &self,
        bytes: &[u8],
        rows: Option<periscope_storage::Reservation>,
    ) -> Result<E::Response, IngestError> {
        let converted = E::convert_protobuf(bytes, received_now()).map_err(|e| {
            IngestError::Invalid(format!(
                "message is not a valid OTLP {} export: {e}",
                E::SIGNAL.name()
            ))
        })??;
        // Spans and metrics are logged as they arrived: replay converts the same bytes
        // into the same rows (see `replay_wire`).
        let framed;
        let wire = match E::SIGNAL {
            Signal::Spans => Some(bytes),
            Signal::Metrics => {
                framed = metrics_wire(MetricsWire::Otlp, bytes);
                Some(framed.as_slice())
            }
            Signal::Logs => None,
        };
        self.store::<E>(converted, wire, rows).await
    }

    /// Stores `metrics` rows converted from `wire`, a remote-write body as it arrived
    /// (snappy-compressed), counted and answered like an OTLP metrics export. The WAL
    /// logs `wire`, a fraction of the rows' bytes, and replay converts it again (see
    /// [`replay_wire`]).
    ///
    /// # Errors
    /// As [`Ingest::export`].
    pub async fn store_metric_rows(
        &self,
        converted: periscope_otlp::Converted,
        wire: &[u8],
        rows: Option<periscope_storage::Reservation>,
    ) -> Result<
        opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse,
        IngestError,
    > {
        let framed = metrics_wire(MetricsWire::RemoteWrite, wire);
        self.store::<opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest>(
            converted, Some(&framed), rows,
        )
        .await
    }

    async fn store<E: Export>(
        &self,
        converted: periscope_otlp::Converted,
        wire: Option<&[u8]>,
        rows: Option<periscope_storage::Reservation>,
    ) -> Result<E::Response, IngestError> {
        let signal = E::SIGNAL.name();
        let stored = match converted.batch {
            None => Ok(()),
            Some(batch) => {
                self.store
                    .append_reserved(E::SIGNAL, batch, wire, rows)
                    .await
            }
        };
        if let Err(e) = stored {
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

/// What a `metrics` WAL record logged as it arrived holds, in its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricsWire {
    /// An OTLP metrics export (protobuf).
    Otlp = 1,
    /// A remote-write body (snappy-compressed `WriteRequest`).
    RemoteWrite = 2,
}

/// `body` framed as a `metrics` wire record of `kind`.
pub(crate) fn metrics_wire(kind: MetricsWire, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(kind as u8);
    out.extend_from_slice(body);
    out
}

/// The rows of a `metrics` wire record (see [`metrics_wire`]).
fn replay_metrics(bytes: &[u8]) -> Result<arrow::record_batch::RecordBatch, String> {
    use prost::Message;
    let converted = match bytes.split_first() {
        Some((kind, body)) if *kind == MetricsWire::Otlp as u8 => {
            let request =
                opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::decode(body)
                    .map_err(|e| e.to_string())?;
            periscope_otlp::metrics(&request).map_err(|e| e.to_string())?
        }
        Some((kind, body)) if *kind == MetricsWire::RemoteWrite as u8 => {
            // Bodies were bounded when they arrived; this bound only refuses nonsense.
            let request =
                crate::remote_write::decode(body, u32::MAX as usize).map_err(|r| r.message)?;
            crate::remote_write_rows::to_rows(&request)?
        }
        _ => return Err("a metrics record of an unknown format".to_string()),
    };
    converted
        .batch
        .ok_or_else(|| "the logged export holds no valid point".to_string())
}

/// The store's [`periscope_storage::WireDecoder`]: turns a spans export logged as it
/// arrived back into the rows [`Ingest::export_protobuf`] stored, a metrics export or a
/// remote-write body (framed, see [`metrics_wire`]) into the rows it or
/// [`Ingest::store_metric_rows`] stored, with the same conversion
/// (invalid items are dropped again, exactly as they were then).
///
/// # Errors
/// When the bytes are not a spans export with valid spans or a remote-write body with
/// valid samples, or `signal` is not logged this way.
pub fn replay_wire(
    signal: Signal,
    bytes: &[u8],
) -> Result<arrow::record_batch::RecordBatch, String> {
    if signal == Signal::Metrics {
        return replay_metrics(bytes);
    }
    if signal != Signal::Spans {
        return Err(format!("{signal} exports are not logged as they arrived"));
    }
    periscope_otlp::spans_from_protobuf(bytes)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .batch
        .ok_or_else(|| "the logged export holds no valid span".to_string())
}
