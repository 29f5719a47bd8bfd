//! Sending one OTLP export request over gRPC (tonic) or HTTP (hyper, protobuf body),
//! and telling retryable failures (with the server's requested delay) from final ones.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flate2::Compression as GzLevel;
use flate2::write::GzEncoder;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use super::{Compression, ExporterConfig, Protocol};
use crate::error::AgentError;

/// Why an export failed.
#[derive(Debug)]
pub struct ExportFailure {
    /// Whether trying again may succeed (unavailable, throttled, timed out).
    pub retryable: bool,
    /// The delay the server asked for (Retry-After or gRPC RetryInfo).
    pub retry_after: Option<Duration>,
    /// What happened.
    pub message: String,
}

/// One encoded export request to send.
pub enum Request {
    /// An `ExportTraceServiceRequest`.
    Traces(Bytes),
    /// An `ExportLogsServiceRequest`.
    Logs(Bytes),
    /// An `ExportMetricsServiceRequest`.
    Metrics(Bytes),
}

impl Request {
    fn parts(self) -> (&'static str, &'static str, Bytes) {
        match self {
            Request::Traces(b) => (
                "/v1/traces",
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                b,
            ),
            Request::Logs(b) => (
                "/v1/logs",
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                b,
            ),
            Request::Metrics(b) => (
                "/v1/metrics",
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                b,
            ),
        }
    }
}

/// A gRPC codec that sends already-encoded protobuf and ignores the (empty or
/// partial-success) answer.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        use bytes::Buf;
        let n = src.remaining();
        src.advance(n);
        Ok(Some(()))
    }
}

/// A connection to the collector.
// One per exporter, made once: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc {
        /// The lazily connected channel (reconnects by itself).
        channel: Channel,
        /// Headers added to every call (e.g. `authorization`).
        headers: Vec<(
            tonic::metadata::AsciiMetadataKey,
            tonic::metadata::AsciiMetadataValue,
        )>,
        /// gzip on or off.
        gzip: bool,
    },
    /// OTLP/HTTP with protobuf bodies.
    Http {
        /// The pooled client.
        client: Client<HttpConnector, Full<Bytes>>,
        /// Base endpoint, e.g. `http://127.0.0.1:4318`.
        endpoint: String,
        /// Headers added to every request.
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        /// gzip on or off.
        gzip: bool,
    },
}

impl Transport {
    /// Builds the transport for `config` (no connection is made yet).
    pub fn new(config: &ExporterConfig) -> Result<Transport, AgentError> {
        let gzip = config.compression == Compression::Gzip;
        match config.protocol {
            Protocol::Grpc => {
                let channel = Channel::from_shared(config.endpoint.clone())
                    .map_err(|e| {
                        AgentError::Config(format!("endpoint {:?}: {e}", config.endpoint))
                    })?
                    .connect_timeout(config.timeout)
                    .connect_lazy();
                let mut headers = Vec::new();
                for (k, v) in &config.headers {
                    let key = k
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|_| AgentError::Config(format!("header name {k:?}")))?;
                    let value = v
                        .parse()
                        .map_err(|_| AgentError::Config(format!("header {k:?} value")))?;
                    headers.push((key, value));
                }
                Ok(Transport::Grpc {
                    channel,
                    headers,
                    gzip,
                })
            }
            Protocol::HttpProtobuf => {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(config.timeout));
                connector.set_nodelay(true);
                let client = Client::builder(TokioExecutor::new()).build(connector);
                let mut headers = Vec::new();
                for (k, v) in &config.headers {
                    let key = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| AgentError::Config(format!("header name {k:?}")))?;
                    let value = http::HeaderValue::from_str(v)
                        .map_err(|_| AgentError::Config(format!("header {k:?} value")))?;
                    headers.push((key, value));
                }
                Ok(Transport::Http {
                    client,
                    endpoint: config.endpoint.trim_end_matches('/').to_string(),
                    headers,
                    gzip,
                })
            }
        }
    }

    /// The `otel.component.type` prefix of this exporter.
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Grpc { .. } => "otlp_grpc",
            Transport::Http { .. } => "otlp_http",
        }
    }

    /// Sends one request, within `timeout`.
    pub async fn send(&self, request: Request, timeout: Duration) -> Result<(), ExportFailure> {
        match tokio::time::timeout(timeout, self.send_inner(request)).await {
            Ok(r) => r,
            Err(_) => Err(ExportFailure {
                retryable: true,
                retry_after: None,
                message: format!("no answer within {timeout:?}"),
            }),
        }
    }

    async fn send_inner(&self, request: Request) -> Result<(), ExportFailure> {
        let (http_path, grpc_path, body) = request.parts();
        match self {
            Transport::Grpc {
                channel,
                headers,
                gzip,
            } => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                if *gzip {
                    grpc = grpc.send_compressed(CompressionEncoding::Gzip);
                }
                grpc.ready().await.map_err(|e| ExportFailure {
                    retryable: true,
                    retry_after: None,
                    message: format!("connecting: {e}"),
                })?;
                grpc.unary(
                    grpc_request(body, headers),
                    http::uri::PathAndQuery::from_static(grpc_path),
                    RawCodec,
                )
                .await
                .map(|_| ())
                .map_err(|s| grpc_failure(&s))
            }
            Transport::Http {
                client,
                endpoint,
                headers,
                gzip,
            } => {
                let mut builder = http::Request::post(format!("{endpoint}{http_path}"))
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf");
                for (k, v) in headers {
                    builder = builder.header(k, v);
                }
                let body = if *gzip {
                    builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
                    Bytes::from(gzip_bytes(&body))
                } else {
                    body
                };
                let req = builder.body(Full::new(body)).map_err(|e| ExportFailure {
                    retryable: false,
                    retry_after: None,
                    message: format!("building the request: {e}"),
                })?;
                let resp = client.request(req).await.map_err(|e| ExportFailure {
                    retryable: true,
                    retry_after: None,
                    message: format!("sending: {e}"),
                })?;
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                // Read the body so the connection goes back to the pool.
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                if status.is_success() {
                    return Ok(());
                }
                // OTLP/HTTP: 429, 502, 503 and 504 are retryable; everything else is not.
                let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                Err(ExportFailure {
                    retryable,
                    retry_after,
                    message: format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ),
                })
            }
        }
    }
}

fn grpc_request<T>(
    message: T,
    headers: &[(
        tonic::metadata::AsciiMetadataKey,
        tonic::metadata::AsciiMetadataValue,
    )],
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    for (k, v) in headers {
        r.metadata_mut().insert(k.clone(), v.clone());
    }
    r
}

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 4 + 64), GzLevel::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// A `Retry-After` value: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// `google.rpc.Status`, enough of it to find a `RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types_any::Any>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<prost_types_any::ProtoDuration>,
}

/// `google.protobuf.Any` and `google.protobuf.Duration`, derived here to keep the
/// dependency list short.
mod prost_types_any {
    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `google.protobuf.Duration`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProtoDuration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// The delay in a gRPC status's `RetryInfo` detail, if any.
fn retry_info(status: &tonic::Status) -> Option<Duration> {
    let details = status.details();
    if details.is_empty() {
        return None;
    }
    let rpc = RpcStatus::decode(details).ok()?;
    rpc.details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))
        .and_then(|a| RetryInfo::decode(a.value.as_slice()).ok())
        .and_then(|r| r.retry_delay)
        .map(|d| {
            Duration::from_secs(d.seconds.max(0) as u64)
                + Duration::from_nanos(d.nanos.max(0) as u64)
        })
}

fn grpc_failure(status: &tonic::Status) -> ExportFailure {
    use tonic::Code;
    let retry_after = retry_info(status);
    // The OTLP specification's retryable codes; RESOURCE_EXHAUSTED only with RetryInfo.
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => retry_after.is_some(),
        _ => false,
    };
    ExportFailure {
        retryable,
        retry_after,
        message: format!("gRPC {:?}: {}", status.code(), status.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).expect("date");
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn grpc_retry_info_is_read() {
        let info = RetryInfo {
            retry_delay: Some(prost_types_any::ProtoDuration {
                seconds: 3,
                nanos: 500_000_000,
            }),
        };
        let rpc = RpcStatus {
            code: 8,
            message: "slow down".into(),
            details: vec![prost_types_any::Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info.encode_to_vec(),
            }],
        };
        let status = tonic::Status::with_details(
            tonic::Code::ResourceExhausted,
            "slow down",
            rpc.encode_to_vec().into(),
        );
        let f = grpc_failure(&status);
        assert!(f.retryable);
        assert_eq!(f.retry_after, Some(Duration::from_millis(3500)));
        let plain = grpc_failure(&tonic::Status::resource_exhausted("full"));
        assert!(
            !plain.retryable,
            "RESOURCE_EXHAUSTED without RetryInfo is final"
        );
        assert!(grpc_failure(&tonic::Status::unavailable("down")).retryable);
        assert!(!grpc_failure(&tonic::Status::invalid_argument("bad")).retryable);
    }
}
