//! OTLP/HTTP: `POST /v1/traces`, `/v1/logs`, `/v1/metrics`, in binary protobuf
//! (`application/x-protobuf`) or the OTLP JSON mapping (`application/json`), optionally
//! gzip-compressed. The response uses the request's encoding.

use std::io::Read;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::export::Export;
use crate::ingest::Ingest;
use crate::status::{RETRY_AFTER_SECS, RpcStatus, http_status};

/// Longest a client may take to send a request body (it holds decoding memory meanwhile).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone)]
struct HttpState {
    ingest: Ingest,
    max_request_bytes: usize,
}

/// The body encodings OTLP/HTTP allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// A refusal, answered as a `google.rpc.Status` in the request's encoding.
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) rpc: Option<RpcStatus>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            rpc: None,
        }
    }

    fn respond(self, encoding: Encoding) -> Response {
        let code = match self.status {
            StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
            StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Code::InvalidArgument,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                tonic::Code::Unavailable
            }
            _ => tonic::Code::Internal,
        };
        let rpc = self.rpc.unwrap_or(RpcStatus {
            code: code as i32,
            message: self.message,
            details: Vec::new(),
        });
        let body = match encoding {
            Encoding::Protobuf => rpc.encode_to_vec(),
            Encoding::Json => serde_json::to_vec(&rpc).unwrap_or_default(),
        };
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(encoding.content_type()),
        );
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// The OTLP/HTTP routes. Bodies larger than `max_request_bytes`, before or after gzip
/// decompression, are refused with 413; decompression stops at the limit.
pub fn router(ingest: Ingest, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/v1/traces", post(handle::<ExportTraceServiceRequest>))
        .route("/v1/logs", post(handle::<ExportLogsServiceRequest>))
        .route("/v1/metrics", post(handle::<ExportMetricsServiceRequest>))
        .with_state(HttpState {
            ingest,
            max_request_bytes,
        })
}

fn request_encoding(headers: &HeaderMap) -> Result<Encoding, Refusal> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {raw:?} is not supported; send application/x-protobuf or application/json"
            ),
        )),
    }
}

fn is_gzip(headers: &HeaderMap) -> Result<bool, Refusal> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let value = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match value.as_str() {
        "" | "identity" => Ok(false),
        "gzip" | "x-gzip" => Ok(true),
        other => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content encoding {other:?} is not supported; send gzip or no encoding"),
        )),
    }
}

pub(crate) fn too_large(limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "request body is larger than the limit of {limit} bytes (after decompression); send smaller batches or raise --max-request-bytes"
        ),
    )
}

pub(crate) async fn read_body(body: Body, gzip: bool, limit: usize) -> Result<Vec<u8>, Refusal> {
    let mut body = body;
    let mut raw: Vec<u8> = Vec::new();
    let mut discarded = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("request body could not be read: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if raw.len() + data.len() <= limit && discarded == 0 {
            raw.extend_from_slice(&data);
            continue;
        }
        // Over the limit: keep reading (and dropping) up to one more limit's worth, so
        // the client has sent its body and reads the 413 instead of a reset connection.
        raw = Vec::new();
        discarded += data.len();
        if discarded > limit {
            break;
        }
    }
    if discarded > 0 {
        return Err(too_large(limit));
    }
    if !gzip {
        return Ok(raw);
    }
    gunzip(&raw, limit)
}

/// Reads and drops up to `limit` bytes of a body.
async fn drain(mut body: Body, limit: usize) {
    let mut read = 0;
    while read <= limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// Decompresses a gzip body, refusing more than `limit` bytes of output.
pub(crate) fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::with_capacity((raw.len() * 4).min(limit));
    let mut decoder = flate2::read::GzDecoder::new(raw).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("gzip body cannot be decompressed: {e}"),
        )
    })?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out)
}

pub(crate) fn decode<E: Export>(bytes: &[u8], encoding: Encoding) -> Result<E, Refusal> {
    match encoding {
        Encoding::Protobuf => E::decode(bytes).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "protobuf body is not a valid OTLP {} export: {e}",
                    E::SIGNAL
                ),
            )
        }),
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("JSON body is not a valid OTLP {} export: {e}", E::SIGNAL),
            )
        }),
    }
}

async fn handle<E: Export>(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let encoding = match request_encoding(&headers) {
        Ok(e) => e,
        Err(refusal) => return refusal.respond(Encoding::Json),
    };
    match receive::<E>(&state, &headers, body, encoding).await {
        Ok(response) => {
            let bytes = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                Encoding::Json => json_without_nulls(&response),
            };
            let mut r = (StatusCode::OK, bytes).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(encoding.content_type()),
            );
            r
        }
        Err(refusal) => refusal.respond(encoding),
    }
}

/// The JSON mapping omits unset fields: `{}` for a full success, not `{"partialSuccess":null}`.
fn json_without_nulls<T: serde::Serialize>(message: &T) -> Vec<u8> {
    let mut value = serde_json::to_value(message).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec())
}

async fn receive<E: Export>(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<E::Response, Refusal> {
    let gzip = is_gzip(headers)?;
    // Decoding takes a few times the body: protobuf structs, then Arrow rows and the WAL
    // record. A body of unknown length may be as large as the limit.
    let length = declared_length(headers, state.max_request_bytes);
    let admitted = state.ingest.admit(E::SIGNAL.name(), Some(length * 4));
    let admission = match admitted {
        Ok(admission) => admission,
        Err(e) => {
            // Read the body away without keeping it, so the client gets to read the
            // answer instead of a connection reset mid-upload.
            let _ = tokio::time::timeout(BODY_TIMEOUT, drain(body, state.max_request_bytes)).await;
            return Err(refusal(&e));
        }
    };
    // A client may not hold decoding memory for longer than this by sending slowly.
    let bytes = tokio::time::timeout(BODY_TIMEOUT, read_body(body, gzip, state.max_request_bytes))
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })??;
    // Reserve what decoding and storing really build before decoding: a few bytes of
    // protobuf or JSON can decode to gigabytes (see `decoded`).
    let signal = E::SIGNAL.name();
    let (upper, rows) = match encoding {
        Encoding::Protobuf => {
            let e = crate::decoded::protobuf(E::SIGNAL, &bytes).map_err(|m| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("protobuf body is not a valid OTLP {signal} export: {}", m.0),
                )
            })?;
            (e.total(), e.rows)
        }
        Encoding::Json => (crate::decoded::json_upper_bound(&bytes), 0),
    };
    let admission = state
        .ingest
        .admit_decoding(signal, upper, admission)
        .map_err(|e| refusal(&e))?;
    if encoding == Encoding::Protobuf {
        // The rows' room in the head, taken before the work of converting them.
        let reserved = state
            .ingest
            .reserve_rows(E::SIGNAL, rows)
            .map_err(|e| refusal(&e))?;
        return state
            .ingest
            .export_protobuf::<E>(&bytes, Some(reserved))
            .await
            .map_err(|e| refusal(&e));
    }
    let request: E = decode(&bytes, encoding)?;
    drop(bytes);
    // JSON gives no row count before decoding: now that it is decoded, reserve for its
    // rows too.
    let _admission = match encoding {
        Encoding::Protobuf => admission,
        Encoding::Json => {
            let rows = crate::decoded::protobuf(E::SIGNAL, &request.encode_to_vec())
                .map_err(|m| Refusal::new(StatusCode::BAD_REQUEST, m.0))?;
            state
                .ingest
                .admit_decoding(
                    signal,
                    upper.saturating_add(rows.rows.saturating_mul(2)),
                    Some(admission),
                )
                .map_err(|e| refusal(&e))?
        }
    };
    state.ingest.export(&request).await.map_err(|e| refusal(&e))
}

/// The body length a request declares, at most `limit`; `limit` when it declares none.
pub(crate) fn declared_length(headers: &HeaderMap, limit: usize) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(limit as u64)
        .min(limit as u64)
}

/// The answer to an ingest error.
fn refusal(e: &crate::IngestError) -> Refusal {
    let (status, rpc) = http_status(e);
    Refusal {
        status,
        message: rpc.message.clone(),
        rpc: Some(rpc),
    }
}
