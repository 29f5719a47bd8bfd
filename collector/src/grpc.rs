//! OTLP/gRPC: the Trace, Logs and Metrics `Export` services (gzip-compressed requests
//! accepted).
//!
//! The services are served with tonic's own `Grpc` machinery, but with a codec of ours
//! instead of the generated servers' plain prost codec: before a message is decoded, the
//! codec estimates what decoding and storing it will build (`decoded`) and reserves that
//! from the decoding budget, or refuses the message (`RESOURCE_EXHAUSTED` when it could
//! never fit, `UNAVAILABLE` with `RetryInfo` while other requests hold the memory).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::Buf;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tonic_prost::ProstEncoder;

use crate::export::Export;
use crate::ingest::{Admission, Ingest};
use crate::status::grpc_status;

/// An export's protobuf bytes with the memory reserved for them, held until they are
/// stored; they are converted to rows by the method (see [`Export::convert_protobuf`]).
pub struct Admitted<E> {
    bytes: bytes::Bytes,
    rows: Option<periscope_storage::Reservation>,
    _admission: Admission,
    _export: PhantomData<fn() -> E>,
}

/// The codec: prost encoding of responses, admission-checked decoding of requests.
struct AdmittingCodec<E> {
    ingest: Ingest,
    _export: PhantomData<fn() -> E>,
}

impl<E: Export> Codec for AdmittingCodec<E> {
    type Encode = E::Response;
    type Decode = Admitted<E>;
    type Encoder = ProstEncoder<E::Response>;
    type Decoder = AdmittingDecoder<E>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        AdmittingDecoder {
            ingest: self.ingest.clone(),
            _export: PhantomData,
        }
    }
}

/// Reads one export after reserving what decoding it will build.
struct AdmittingDecoder<E> {
    ingest: Ingest,
    _export: PhantomData<fn() -> E>,
}

impl<E: Export> Decoder for AdmittingDecoder<E> {
    type Item = Admitted<E>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        let signal = E::SIGNAL.name();
        let estimate = crate::decoded::protobuf(E::SIGNAL, &bytes).map_err(|m| {
            Status::invalid_argument(format!(
                "message is not a valid OTLP {signal} export: {}",
                m.0
            ))
        })?;
        let admission = self
            .ingest
            .admit_decoding(signal, estimate.total(), None)
            .map_err(|e| grpc_status(&e))?;
        // The rows' room in the head, taken before the work of converting them.
        let rows = self
            .ingest
            .reserve_rows(E::SIGNAL, estimate.rows)
            .map_err(|e| grpc_status(&e))?;
        Ok(Some(Admitted {
            bytes,
            rows: Some(rows),
            _admission: admission,
            _export: PhantomData,
        }))
    }
}

/// The `Export` method of one signal's service.
struct ExportMethod<E> {
    ingest: Ingest,
    _export: PhantomData<fn() -> E>,
}

impl<E: Export> UnaryService<Admitted<E>> for ExportMethod<E> {
    type Response = E::Response;
    type Future = futures::future::BoxFuture<'static, Result<Response<E::Response>, Status>>;

    fn call(&mut self, request: Request<Admitted<E>>) -> Self::Future {
        let ingest = self.ingest.clone();
        Box::pin(async move {
            let mut admitted = request.into_inner();
            let rows = admitted.rows.take();
            let answer = ingest.export_protobuf::<E>(&admitted.bytes, rows).await;
            // The reservation is held until the rows are stored (or refused).
            drop(admitted);
            answer.map(Response::new).map_err(|e| grpc_status(&e))
        })
    }
}

/// One signal's OTLP service.
struct ExportService<E> {
    ingest: Ingest,
    max_request_bytes: usize,
    _export: PhantomData<fn() -> E>,
}

impl<E> Clone for ExportService<E> {
    fn clone(&self) -> Self {
        ExportService {
            ingest: self.ingest.clone(),
            max_request_bytes: self.max_request_bytes,
            _export: PhantomData,
        }
    }
}

impl<E: Export> NamedService for ExportService<E> {
    const NAME: &'static str = E::SERVICE;
}

impl<E, B> tower::Service<http::Request<B>> for ExportService<E>
where
    E: Export,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != E::PATH {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let mut gzip = EnabledCompressionEncodings::default();
        gzip.enable(CompressionEncoding::Gzip);
        let codec = AdmittingCodec::<E> {
            ingest: self.ingest.clone(),
            _export: PhantomData,
        };
        let method = ExportMethod::<E> {
            ingest: self.ingest.clone(),
            _export: PhantomData,
        };
        // tonic stops inflating a compressed message at the limit. Responses go out
        // uncompressed: an export's answer is a few bytes, and setting up a gzip stream
        // for each one cost more CPU than decoding the spans it answers.
        let mut grpc = Grpc::new(codec)
            .apply_compression_config(gzip, EnabledCompressionEncodings::default())
            .apply_max_message_size_config(Some(self.max_request_bytes), None);
        Box::pin(async move { Ok(grpc.unary(method, request).await) })
    }
}

fn service<E: Export>(ingest: &Ingest, max_request_bytes: usize) -> ExportService<E> {
    ExportService {
        ingest: ingest.clone(),
        max_request_bytes,
        _export: PhantomData,
    }
}

/// The three OTLP services as tonic routes. Messages larger than `max_request_bytes`
/// after decompression are refused.
pub fn services(ingest: Ingest, max_request_bytes: usize) -> Routes {
    let router = Routes::new(service::<ExportTraceServiceRequest>(
        &ingest,
        max_request_bytes,
    ))
    .add_service(service::<ExportLogsServiceRequest>(
        &ingest,
        max_request_bytes,
    ))
    .add_service(service::<ExportMetricsServiceRequest>(
        &ingest,
        max_request_bytes,
    ))
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
    // The message length is not known before it is read: only the budget check applies
    // here; the codec reserves what the message decodes to once it is read.
    match ingest.admit(signal, None) {
        Ok(_) => next.run(request).await,
        Err(e) => grpc_status(&e).into_http::<axum::body::Body>(),
    }
}
