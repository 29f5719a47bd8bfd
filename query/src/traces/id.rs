//! Trace and span ids: hex text parsed into numbers (from the span aggregates' crate) and
//! trace ids as the routes accept them.

use super::error::TraceError;

/// A trace id as Jaeger takes it: up to 32 hex digits, any case, zero-padded on the left
/// (64-bit ids are 16 digits).
pub fn parse_trace_id(text: &str) -> Result<String, TraceError> {
    let t = text.trim();
    if t.is_empty() || t.len() > 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TraceError::BadRequest(format!(
            "invalid trace id {t:?}: expected 32 hexadecimal digits"
        )));
    }
    Ok(format!("{:0>32}", t.to_ascii_lowercase()))
}

/// A trace id of the `/api/v1` routes: exactly 32 hex digits (or 16, zero-padded),
/// any case, not all zero (OTLP calls that invalid).
pub fn parse_v1_trace_id(text: &str) -> Result<String, TraceError> {
    let t = text.trim();
    if !(t.len() == 32 || t.len() == 16) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TraceError::BadRequest(format!(
            "invalid trace id {t:?}: expected 32 hexadecimal digits"
        )));
    }
    if t.bytes().all(|b| b == b'0') {
        return Err(TraceError::BadRequest(
            "invalid trace id: an all-zero trace id is not valid".into(),
        ));
    }
    parse_trace_id(t)
}
