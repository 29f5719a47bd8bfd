//! Error answers of both transports, mapped from [`IngestError`] in one place.
//!
//! OTLP/HTTP error bodies are a `google.rpc.Status` in the request's encoding; OTLP/gRPC
//! errors carry the same status, with a `google.rpc.RetryInfo` detail when the client
//! should retry.

use bytes::Bytes;
use prost::Message;

use crate::error::IngestError;

/// Seconds a client should wait before retrying an export refused for pressure.
pub const RETRY_AFTER_SECS: u64 = 1;

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RpcStatus {
    /// A `google.rpc.Code` value.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// A developer-facing message in English.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct ProtoAny {
    /// Type URL of the packed message.
    #[prost(string, tag = "1")]
    #[serde(rename = "@type")]
    pub type_url: String,
    /// The packed message.
    #[prost(bytes = "vec", tag = "2")]
    #[serde(skip)]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    /// How long to wait.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds past the seconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

fn retry_info() -> ProtoAny {
    ProtoAny {
        type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
        value: RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: RETRY_AFTER_SECS as i64,
                nanos: 0,
            }),
        }
        .encode_to_vec(),
    }
}

/// The gRPC status for an ingest error.
pub fn grpc_status(error: &IngestError) -> tonic::Status {
    match error {
        IngestError::Unavailable(message) => {
            let code = tonic::Code::Unavailable;
            let details = RpcStatus {
                code: code as i32,
                message: message.clone(),
                details: vec![retry_info()],
            };
            tonic::Status::with_details(code, message.clone(), Bytes::from(details.encode_to_vec()))
        }
        IngestError::TooLarge(message) => tonic::Status::resource_exhausted(message.clone()),
        IngestError::Invalid(message) => tonic::Status::invalid_argument(message.clone()),
        IngestError::Internal(message) => tonic::Status::internal(message.clone()),
    }
}

/// HTTP status code and `google.rpc.Status` for an ingest error.
pub fn http_status(error: &IngestError) -> (http::StatusCode, RpcStatus) {
    match error {
        IngestError::Unavailable(message) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            RpcStatus {
                code: tonic::Code::Unavailable as i32,
                message: message.clone(),
                details: vec![retry_info()],
            },
        ),
        IngestError::TooLarge(message) => (
            http::StatusCode::PAYLOAD_TOO_LARGE,
            RpcStatus {
                code: tonic::Code::ResourceExhausted as i32,
                message: message.clone(),
                details: Vec::new(),
            },
        ),
        IngestError::Invalid(message) => (
            http::StatusCode::BAD_REQUEST,
            RpcStatus {
                code: tonic::Code::InvalidArgument as i32,
                message: message.clone(),
                details: Vec::new(),
            },
        ),
        IngestError::Internal(message) => (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            RpcStatus {
                code: tonic::Code::Internal as i32,
                message: message.clone(),
                details: Vec::new(),
            },
        ),
    }
}
