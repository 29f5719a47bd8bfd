//! What the three OTLP export requests have in common, so each receiver is written once.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use periscope_otlp::{self as otlp, ArrowError, Converted};
use periscope_storage::Signal;

/// An OTLP export request of one signal.
pub trait Export:
    prost::Message + Default + serde::de::DeserializeOwned + Send + Sync + 'static
{
    /// The matching response message.
    type Response: prost::Message + serde::Serialize + Default + Send + 'static;
    /// The table the rows go to.
    const SIGNAL: Signal;
    /// The gRPC service that takes it.
    const SERVICE: &'static str;
    /// The gRPC method's path.
    const PATH: &'static str;
    /// Validates and converts the request; `received` is the arrival time in Unix ns.
    fn convert(&self, received: i64) -> Result<Converted, ArrowError>;
    /// Validates and converts a request from its protobuf bytes: decoded, then converted,
    /// unless the signal reads its bytes in place.
    ///
    /// # Errors
    /// The outer error says why the bytes are not a valid export.
    fn convert_protobuf(
        bytes: &[u8],
        received: i64,
    ) -> Result<Result<Converted, ArrowError>, String> {
        let request = Self::decode(bytes).map_err(|e| e.to_string())?;
        Ok(request.convert(received))
    }
    /// A response, with a partial success when anything was rejected.
    fn response(rejected: u64, message: Option<String>) -> Self::Response;
}

impl Export for ExportTraceServiceRequest {
    type Response = ExportTraceServiceResponse;
    const SIGNAL: Signal = Signal::Spans;
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    fn convert(&self, _received: i64) -> Result<Converted, ArrowError> {
        otlp::spans(self)
    }
    /// Spans, the bulk of ingest, go to Arrow straight from the request bytes.
    fn convert_protobuf(
        bytes: &[u8],
        _received: i64,
    ) -> Result<Result<Converted, ArrowError>, String> {
        otlp::spans_from_protobuf(bytes).map_err(|e| e.to_string())
    }
    fn response(rejected: u64, message: Option<String>) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: (rejected > 0 || message.is_some()).then(|| {
                ExportTracePartialSuccess {
                    rejected_spans: rejected as i64,
                    error_message: message.unwrap_or_default(),
                }
            }),
        }
    }
}

impl Export for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;
    const SIGNAL: Signal = Signal::Logs;
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    fn convert(&self, received: i64) -> Result<Converted, ArrowError> {
        otlp::logs(self, received)
    }
    fn response(rejected: u64, message: Option<String>) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: (rejected > 0 || message.is_some()).then(|| {
                ExportLogsPartialSuccess {
                    rejected_log_records: rejected as i64,
                    error_message: message.unwrap_or_default(),
                }
            }),
        }
    }
}

impl Export for ExportMetricsServiceRequest {
    type Response = ExportMetricsServiceResponse;
    const SIGNAL: Signal = Signal::Metrics;
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    fn convert(&self, _received: i64) -> Result<Converted, ArrowError> {
        otlp::metrics(self)
    }
    fn response(rejected: u64, message: Option<String>) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: (rejected > 0 || message.is_some()).then(|| {
                ExportMetricsPartialSuccess {
                    rejected_data_points: rejected as i64,
                    error_message: message.unwrap_or_default(),
                }
            }),
        }
    }
}
