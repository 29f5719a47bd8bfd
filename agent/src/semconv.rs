//! OpenTelemetry semantic-convention names the agent writes, and small builders for
//! OTLP attribute values.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// `http.request.method`
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
/// `http.request.method_original` (when the method is not a known one)
pub const HTTP_REQUEST_METHOD_ORIGINAL: &str = "http.request.method_original";
/// `http.response.status_code`
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
/// `http.route`
pub const HTTP_ROUTE: &str = "http.route";
/// `http.request.resend_count`
pub const HTTP_REQUEST_RESEND_COUNT: &str = "http.request.resend_count";
/// `url.path`
pub const URL_PATH: &str = "url.path";
/// `url.query`
pub const URL_QUERY: &str = "url.query";
/// `url.scheme`
pub const URL_SCHEME: &str = "url.scheme";
/// `url.full`
pub const URL_FULL: &str = "url.full";
/// `server.address`
pub const SERVER_ADDRESS: &str = "server.address";
/// `server.port`
pub const SERVER_PORT: &str = "server.port";
/// `client.address`
pub const CLIENT_ADDRESS: &str = "client.address";
/// `network.protocol.version`
pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
/// `user_agent.original`
pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
/// `error.type`
pub const ERROR_TYPE: &str = "error.type";
/// `http.response.body.size`
pub const HTTP_RESPONSE_BODY_SIZE: &str = "http.response.body.size";

/// An attribute with the value `value`.
fn kv_value(key: impl Into<String>, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// An attribute with a string value.
pub fn kv(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    kv_value(key, Value::StringValue(value.into()))
}

/// An attribute with an integer value.
pub fn kv_i64(key: impl Into<String>, value: i64) -> KeyValue {
    kv_value(key, Value::IntValue(value))
}

/// An attribute with a float value.
pub fn kv_f64(key: impl Into<String>, value: f64) -> KeyValue {
    kv_value(key, Value::DoubleValue(value))
}

/// An attribute with a boolean value.
pub fn kv_bool(key: impl Into<String>, value: bool) -> KeyValue {
    kv_value(key, Value::BoolValue(value))
}

/// The semantic-convention value of an HTTP method: the known methods as they are,
/// anything else `_OTHER` (the original goes in `http.request.method_original`).
pub fn method_name(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// `network.protocol.version` of an HTTP version.
pub fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}
