//! OTLP/gRPC: the Trace, Logs and Metrics `Export` services (gzip accepted and sent).

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::ingest::Ingest;
use crate::status::grpc_status;

/// One handler for all three services.
#[derive(Debug, Clone)]
struct Receiver(Ingest);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0
            .export(request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| grpc_status(&e))
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.0
            .export(request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| grpc_status(&e))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0
            .export(request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| grpc_status(&e))
    }
}

/// The three OTLP services as tonic routes. Messages larger than `max_request_bytes`
/// after decompression are refused (tonic stops inflating at the limit).
pub fn services(ingest: Ingest, max_request_bytes: usize) -> Routes {
    let r = Receiver(ingest.clone());
    let gz = CompressionEncoding::Gzip;
    let traces = TraceServiceServer::new(r.clone())
        .accept_compressed(gz)
        .send_compressed(gz)
        .max_decoding_message_size(max_request_bytes);
    let logs = LogsServiceServer::new(r.clone())
        .accept_compressed(gz)
        .send_compressed(gz)
        .max_decoding_message_size(max_request_bytes);
    let metrics = MetricsServiceServer::new(r)
        .accept_compressed(gz)
        .send_compressed(gz)
        .max_decoding_message_size(max_request_bytes);
    let router = Routes::new(traces)
        .add_service(logs)
        .add_service(metrics)
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(ingest, admit));
    Routes::from(router)
}

/// Refuses an export with `UNAVAILABLE` (and `RetryInfo`) before its message is read
/// while unflushed rows fill their memory budget, so that a server under overload does
/// not decode what it would refuse anyway.
async fn admit(
    axum::extract::State(ingest): axum::extract::State<Ingest>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    let signal = if path.contains(".trace.") {
        "spans"
    } else if path.contains(".logs.") {
        "logs"
    } else {
        "metrics"
    };
    // The message length is not known before it is read: only the budget check applies.
    match ingest.admit(signal, None) {
        Ok(_) => next.run(request).await,
        Err(e) => grpc_status(&e).into_http::<axum::body::Body>(),
    }
}
