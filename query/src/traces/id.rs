//! Trace and span ids: hex text parsed into numbers (the service graph's compact span
//! index) and trace ids as the routes accept them.

use super::error::TraceError;

/// Value of each byte as a hex digit; 0xff for bytes that are not one.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Parses at most 16 hex digits; `None` when a byte is not one.
fn hex64(bytes: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    let mut bad = 0u8;
    for &b in bytes {
        let d = HEX[b as usize];
        bad |= d;
        v = (v << 4) | u64::from(d & 0x0f);
    }
    (bad & 0xf0 == 0).then_some(v)
}

/// A trace id (up to 32 hex digits); 0 when it is not hex.
pub(crate) fn parse_u128(hex: &str) -> u128 {
    let b = hex.as_bytes();
    if b.len() > 32 {
        return 0;
    }
    let split = b.len().saturating_sub(16);
    match (hex64(&b[..split]), hex64(&b[split..])) {
        (Some(hi), Some(lo)) => (u128::from(hi) << 64) | u128::from(lo),
        _ => 0,
    }
}

/// A span id (up to 16 hex digits); 0 when it is not hex.
pub(crate) fn parse_u64(hex: &str) -> u64 {
    if hex.len() > 16 {
        return 0;
    }
    hex64(hex.as_bytes()).unwrap_or(0)
}

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
