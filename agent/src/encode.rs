//! Protobuf written by hand for the hot path: the HTTP layers encode their spans and
//! log records straight to OTLP bytes (no intermediate structs, one allocation per item),
//! and the exporter frames queued items into export requests by concatenation (a repeated
//! message field is a sequence of length-delimited records).
//!
//! Field numbers are those of `opentelemetry/proto` (trace, logs, common, collector); the
//! tests decode the output with the generated prost types.

/// Wire type of varints.
const VARINT: u8 = 0;
/// Wire type of fixed 64-bit values.
const FIXED64: u8 = 1;
/// Wire type of length-delimited values.
const LEN: u8 = 2;
/// Wire type of fixed 32-bit values.
const FIXED32: u8 = 5;

/// `Span` field numbers.
pub mod span {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
    /// `Status.code`.
    pub const STATUS_CODE: u32 = 3;
}

/// `LogRecord` field numbers.
pub mod log {
    pub const TIME: u32 = 1;
    pub const SEVERITY_NUMBER: u32 = 2;
    pub const SEVERITY_TEXT: u32 = 3;
    pub const BODY: u32 = 5;
    pub const ATTRIBUTES: u32 = 6;
    pub const FLAGS: u32 = 8;
    pub const TRACE_ID: u32 = 9;
    pub const SPAN_ID: u32 = 10;
    pub const OBSERVED_TIME: u32 = 11;
}

/// Bytes a varint takes.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends protobuf fields to a buffer.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field << 3 | u32::from(wire)));
    }

    /// A length-delimited field (bytes, string or an encoded message).
    pub fn bytes(&mut self, field: u32, data: &[u8]) {
        self.tag(field, LEN);
        self.varint(data.len() as u64);
        self.0.extend_from_slice(data);
    }

    /// A string field, skipped when empty (proto3 default).
    pub fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    /// A string field made of `parts` joined (no intermediate allocation).
    pub fn string_parts(&mut self, field: u32, parts: &[&str]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.header(field, len);
        for p in parts {
            self.0.extend_from_slice(p.as_bytes());
        }
    }

    /// A varint field (uint, enum), skipped when zero.
    pub fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, VARINT);
            self.varint(v);
        }
    }

    /// A fixed64 field, skipped when zero.
    pub fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, FIXED64);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A fixed32 field, skipped when zero.
    pub fn fixed32(&mut self, field: u32, v: u32) {
        if v != 0 {
            self.tag(field, FIXED32);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// The header of a length-delimited field whose `len` bytes follow.
    pub fn header(&mut self, field: u32, len: usize) {
        self.tag(field, LEN);
        self.varint(len as u64);
    }

    /// A `KeyValue` with a string value, as field `field`.
    pub fn kv_str(&mut self, field: u32, key: &str, value: &str) {
        // AnyValue { string_value = 1 }
        let any = 1 + varint_len(value.len() as u64) + value.len();
        let kv = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any as u64) + any;
        self.header(field, kv);
        self.bytes(1, key.as_bytes());
        self.header(2, any);
        self.bytes(1, value.as_bytes());
    }

    /// A `KeyValue` with an integer value, as field `field`.
    pub fn kv_i64(&mut self, field: u32, key: &str, value: i64) {
        // AnyValue { int_value = 3 } (int64: negative numbers take ten bytes)
        let any = 1 + varint_len(value as u64);
        let kv = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any as u64) + any;
        self.header(field, kv);
        self.bytes(1, key.as_bytes());
        self.header(2, any);
        self.tag(3, VARINT);
        self.varint(value as u64);
    }

    /// A `KeyValue` with a double value, as field `field`.
    pub fn kv_f64(&mut self, field: u32, key: &str, value: f64) {
        // AnyValue { double_value = 4 }
        let any = 1 + 8;
        let kv = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any as u64) + any;
        self.header(field, kv);
        self.bytes(1, key.as_bytes());
        self.header(2, any);
        self.tag(4, FIXED64);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// An `AnyValue` with a string, as field `field`.
    pub fn any_str(&mut self, field: u32, value: &str) {
        self.header(field, 1 + varint_len(value.len() as u64) + value.len());
        self.bytes(1, value.as_bytes());
    }
}

/// Frames encoded items into a message's repeated field: `outer` fields (already encoded,
/// e.g. the resource) then each item as field `field`.
fn framed_len(prefix: usize, field_items: &[&[u8]]) -> usize {
    prefix
        + field_items
            .iter()
            .map(|i| 1 + varint_len(i.len() as u64) + i.len())
            .sum::<usize>()
}

/// `Export{Trace,Logs}ServiceRequest` bytes: one resource (encoded `Resource`), one scope
/// group per `(scope, items)` (encoded `InstrumentationScope`, encoded spans or log
/// records). Spans, `ScopeSpans` and `ResourceSpans` have the same field numbers as their
/// log counterparts, so one function frames both.
pub fn export_request(resource: &[u8], groups: &[(&[u8], Vec<&[u8]>)]) -> Vec<u8> {
    // ScopeX { scope = 1, items = 2 }
    let scope_lens: Vec<usize> = groups
        .iter()
        .map(|(scope, items)| framed_len(1 + varint_len(scope.len() as u64) + scope.len(), items))
        .collect();
    // ResourceX { resource = 1, scope_x = 2 }
    let resource_len = 1
        + varint_len(resource.len() as u64)
        + resource.len()
        + scope_lens
            .iter()
            .map(|l| 1 + varint_len(*l as u64) + l)
            .sum::<usize>();
    // Export request { resource_x = 1 }
    let total = 1 + varint_len(resource_len as u64) + resource_len;
    let mut out = Vec::with_capacity(total);
    let mut w = Writer(&mut out);
    w.header(1, resource_len);
    w.bytes(1, resource);
    for ((scope, items), len) in groups.iter().zip(scope_lens) {
        w.header(2, len);
        w.bytes(1, scope);
        for item in items {
            w.bytes(2, item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut b = Vec::new();
            Writer(&mut b).varint(v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn hand_encoded_spans_decode_with_prost() {
        let mut b = Vec::new();
        let mut w = Writer(&mut b);
        w.bytes(span::TRACE_ID, &[7; 16]);
        w.bytes(span::SPAN_ID, &[8; 8]);
        w.bytes(span::PARENT_SPAN_ID, &[9; 8]);
        w.fixed32(span::FLAGS, 0x301);
        w.string(span::NAME, "GET /api");
        w.uint(span::KIND, 2);
        w.fixed64(span::START, 1_700_000_000_000_000_000);
        w.fixed64(span::END, 1_700_000_000_000_100_000);
        w.kv_str(span::ATTRIBUTES, "http.request.method", "GET");
        w.kv_i64(span::ATTRIBUTES, "http.response.status_code", 503);
        w.kv_i64(span::ATTRIBUTES, "negative", -5);
        w.kv_f64(span::ATTRIBUTES, "ratio", 0.25);
        let long = "x".repeat(300);
        w.kv_str(span::ATTRIBUTES, "long", &long);
        let mut status = Vec::new();
        Writer(&mut status).uint(span::STATUS_CODE, 2);
        w.bytes(span::STATUS, &status);
        let s = Span::decode(b.as_slice()).expect("valid protobuf");
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.parent_span_id, vec![9; 8]);
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.name, "GET /api");
        assert_eq!(s.kind, 2);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 100_000);
        let attr = |k: &str| {
            s.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            attr("http.request.method"),
            Some(Value::StringValue("GET".into()))
        );
        assert_eq!(
            attr("http.response.status_code"),
            Some(Value::IntValue(503))
        );
        assert_eq!(attr("negative"), Some(Value::IntValue(-5)));
        assert_eq!(attr("ratio"), Some(Value::DoubleValue(0.25)));
        assert_eq!(attr("long"), Some(Value::StringValue(long)));
        assert_eq!(s.status.expect("status").code, 2);

        // Framed into a request with a resource and two scopes.
        let resource = Resource {
            attributes: vec![crate::semconv::kv("service.name", "edge")],
            ..Default::default()
        }
        .encode_to_vec();
        let scope_a = InstrumentationScope {
            name: "a".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let scope_b = InstrumentationScope {
            name: "b".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let req = export_request(&resource, &[(&scope_a, vec![&b, &b]), (&scope_b, vec![&b])]);
        let r = ExportTraceServiceRequest::decode(req.as_slice()).expect("request");
        assert_eq!(r.resource_spans.len(), 1);
        let rs = &r.resource_spans[0];
        assert_eq!(rs.scope_spans.len(), 2);
        assert_eq!(rs.scope_spans[0].spans.len(), 2);
        assert_eq!(rs.scope_spans[1].scope.as_ref().expect("scope").name, "b");
        assert_eq!(rs.scope_spans[1].spans[0].name, "GET /api");
    }
}
