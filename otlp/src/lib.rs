//! # periscope-otlp
//!
//! OTLP protobuf → Arrow rows of Periscope's tables: the protocol mapping of the three
//! signals, one module per signal, sharing the value and id conversions here. A field
//! of OTLP is added in one file.
//!
//! ```text
//! ExportTraceServiceRequest   ─► spans()   ─► Converted { batch: rows of Signal::Spans, .. }
//! ExportLogsServiceRequest    ─► logs()    ─► Converted { batch: rows of Signal::Logs, .. }
//! ExportMetricsServiceRequest ─► metrics() ─► Converted { batch: rows of Signal::Metrics, .. }
//!                                                │
//!                                  periscope_storage::Store::append(signal, rows)
//! ```
//!
//! Each converter walks one export request, validates every item and appends the valid
//! ones as rows. Invalid items (a trace id that is not 16 bytes, a time past year 2262)
//! are counted and described in [`Converted`], so the receiver can answer with an OTLP
//! partial success instead of failing the whole export. The storage engine knows
//! nothing of OTLP: it takes the Arrow rows.
//!
//! ```
//! use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
//! use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
//! use periscope_storage::Signal;
//!
//! let span = Span {
//!     trace_id: vec![1; 16],
//!     span_id: vec![2; 8],
//!     name: "GET /".into(),
//!     start_time_unix_nano: 1_700_000_000_000_000_000,
//!     end_time_unix_nano: 1_700_000_000_000_001_000,
//!     ..Default::default()
//! };
//! let request = ExportTraceServiceRequest {
//!     resource_spans: vec![ResourceSpans {
//!         scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
//!         ..Default::default()
//!     }],
//! };
//! let converted = periscope_otlp::spans(&request)?;
//! assert_eq!((converted.accepted, converted.rejected), (1, 0));
//! let rows = converted.batch.expect("one valid span");
//! assert_eq!(rows.schema(), Signal::Spans.schema()); // ready for Store::append
//! # Ok::<(), periscope_otlp::ArrowError>(())
//! ```

mod logs;
mod metrics;
mod spans_wire;
mod traces;
mod wire;

/// Arrow's error type, returned by the converters.
pub use arrow::error::ArrowError;
pub use logs::logs;
pub use metrics::metrics;
pub use spans_wire::spans_from_protobuf;
pub use traces::spans;
pub use wire::WireError;

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{ArrayRef, ListArray, MapBuilder, StringBuilder, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields};
use arrow::record_batch::RecordBatch;
use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The rows made from one export request, and what was rejected from it.
#[derive(Debug)]
pub struct Converted {
    /// The accepted rows; `None` when nothing was accepted.
    pub batch: Option<RecordBatch>,
    /// How many items became rows.
    pub accepted: u64,
    /// How many items were invalid and dropped.
    pub rejected: u64,
    /// Why the first rejected item was rejected.
    pub error: Option<String>,
}

/// Collects rejections while a request is converted.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    pub count: u64,
    pub first: Option<String>,
}

impl Rejections {
    pub fn reject(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what());
        }
    }

    /// The result of a conversion: the rows `finish` assembles (only when something was
    /// accepted), the accepted count and these rejections.
    pub fn into_converted(
        self,
        accepted: u64,
        finish: impl FnOnce() -> Result<RecordBatch, ArrowError>,
    ) -> Result<Converted, ArrowError> {
        let batch = if accepted > 0 { Some(finish()?) } else { None };
        Ok(Converted {
            batch,
            accepted,
            rejected: self.count,
            error: self.first,
        })
    }
}

/// The attributes of a request's resource; none when the resource is unset.
pub(crate) fn resource_attributes(resource: Option<&Resource>) -> &[KeyValue] {
    resource.map(|r| &r.attributes[..]).unwrap_or(&[])
}

/// The name and version of an instrumentation scope, each NULL when empty or unset.
pub(crate) fn scope_name_version(
    scope: Option<&InstrumentationScope>,
) -> (Option<&str>, Option<&str>) {
    (
        scope.map(|s| s.name.as_str()).and_then(empty_none),
        scope.map(|s| s.version.as_str()).and_then(empty_none),
    )
}

/// Closes one row's entries of a list column: its end offset is the last one plus `len`.
pub(crate) fn push_offset(offsets: &mut Vec<i32>, len: usize) {
    let last = offsets.last().copied().unwrap_or(0);
    offsets.push(last + len as i32);
}

/// Why an id could not be used.
pub(crate) fn hex_id(bytes: &[u8], expected: usize, what: &str) -> Result<Option<String>, String> {
    if let Some(why) = id_error(bytes, expected, what) {
        return Err(why);
    }
    Ok((!bytes.is_empty()).then(|| to_hex(bytes)))
}

/// Checks an id as [`hex_id`] does and appends its hex form to `builder` (NULL when
/// empty) without allocating.
pub(crate) fn append_hex_id(builder: &mut StringBuilder, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    if bytes.is_empty() {
        builder.append_null();
        return;
    }
    let mut buf = [0u8; 64];
    let n = bytes.len().min(32);
    for (i, b) in bytes[..n].iter().enumerate() {
        buf[2 * i] = DIGITS[usize::from(b >> 4)];
        buf[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    // Hex digits are ASCII.
    builder.append_value(std::str::from_utf8(&buf[..2 * n]).unwrap_or_default());
}

/// Why an id is invalid, as [`hex_id`] says it; `None` when it is valid (or empty).
pub(crate) fn id_error(bytes: &[u8], expected: usize, what: &str) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    if bytes.len() != expected {
        return Some(format!(
            "{what} must be {expected} bytes ({} hex characters), got {} bytes",
            expected * 2,
            bytes.len()
        ));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Some(format!("{what} must not be all zeros"));
    }
    None
}

/// Lowercase hex, without the per-character iterator of `hex::encode`.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// An OTLP time in nanoseconds as an Arrow timestamp; 0 (unset) becomes NULL.
pub(crate) fn time(nanos: u64, what: &str) -> Result<Option<i64>, String> {
    if nanos == 0 {
        return Ok(None);
    }
    i64::try_from(nanos)
        .map(Some)
        .map_err(|_| format!("{what} {nanos} is past the year 2262 and cannot be stored"))
}

/// An OTLP string field as an optional column value: empty (unset) becomes NULL.
pub(crate) fn empty_none(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// `scope_name` of metric rows that came through Prometheus remote write: their names
/// and labels are Prometheus's already, so PromQL reads them as they are.
pub const PROMETHEUS_SCOPE: &str = "periscope.prometheus.remote_write";

/// `service.name` from resource attributes, or OpenTelemetry's `unknown_service`.
pub(crate) fn service_name(resource_attributes: &[KeyValue]) -> String {
    resource_attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(any_value_string)
        .unwrap_or_else(|| "unknown_service".to_string())
}

/// The one string form of an attribute value that SQL maps show (docs/sql.md): integers in
/// decimal, doubles in shortest round-trip form, booleans `true`/`false`, bytes as base64,
/// arrays and maps as JSON. `None` for an empty value.
pub fn any_value_string(value: &AnyValue) -> Option<String> {
    Some(match value.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BytesValue(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Value::StringValueStrindex(i) => i.to_string(),
        Value::ArrayValue(_) | Value::KvlistValue(_) => any_value_json(value).to_string(),
    })
}

/// An attribute value as JSON, used for arrays and maps.
pub fn any_value_json(value: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value.value.as_ref() {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .unwrap_or_else(|| J::String(d.to_string())),
        Some(Value::BytesValue(b)) => {
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Value::StringValueStrindex(i)) => J::from(*i),
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(any_value_json).collect()),
        Some(Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map(any_value_json).unwrap_or(J::Null);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
    }
}

/// Appends one attribute value in its string form, without allocating for scalars.
fn append_value_string(builder: &mut StringBuilder, value: Option<&AnyValue>) {
    AttrValue::of(value).append_string(builder);
}

/// Appends one attribute map (one row) to a map builder.
pub(crate) fn append_attributes(
    builder: &mut MapBuilder<StringBuilder, StringBuilder>,
    attributes: &[KeyValue],
) {
    for kv in attributes {
        builder.keys().append_value(&kv.key);
        append_value_string(builder.values(), kv.value.as_ref());
    }
    // A MapBuilder only fails when keys and values differ in length, which the loop above
    // rules out.
    builder
        .append(true)
        .expect("map keys and values are appended in pairs");
}

/// The OTLP type of a value whose string form alone would not say it, as stored in the
/// `*attribute_types` columns; `None` for strings and empty values.
pub fn value_type(value: Option<&AnyValue>) -> Option<&'static str> {
    match value?.value.as_ref()? {
        Value::StringValue(_) => None,
        Value::BoolValue(_) => Some("bool"),
        Value::IntValue(_) | Value::StringValueStrindex(_) => Some("int"),
        Value::DoubleValue(_) => Some("double"),
        Value::BytesValue(_) => Some("bytes"),
        Value::ArrayValue(_) => Some("array"),
        Value::KvlistValue(_) => Some("kvlist"),
    }
}

/// An attribute value borrowed from the request: the scalar kinds read in place, the
/// others (arrays, maps, bytes) as the prost value they decode to.
#[derive(Debug, Clone)]
pub(crate) enum AttrValue<'a> {
    None,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Other(Cow<'a, AnyValue>),
}

impl<'a> AttrValue<'a> {
    /// The value of a decoded attribute.
    pub fn of(value: Option<&'a AnyValue>) -> Self {
        match value.and_then(|v| v.value.as_ref()) {
            None => AttrValue::None,
            Some(Value::StringValue(s)) => AttrValue::Str(s),
            Some(Value::BoolValue(b)) => AttrValue::Bool(*b),
            Some(Value::IntValue(i)) => AttrValue::Int(*i),
            Some(Value::DoubleValue(d)) => AttrValue::Double(*d),
            Some(_) => value.map_or(AttrValue::None, |v| AttrValue::Other(Cow::Borrowed(v))),
        }
    }

    /// The same value, borrowing what `self` owns.
    fn borrowed(&self) -> AttrValue<'_> {
        match self {
            AttrValue::Other(v) => AttrValue::Other(Cow::Borrowed(v.as_ref())),
            AttrValue::None => AttrValue::None,
            AttrValue::Str(s) => AttrValue::Str(s),
            AttrValue::Bool(b) => AttrValue::Bool(*b),
            AttrValue::Int(i) => AttrValue::Int(*i),
            AttrValue::Double(d) => AttrValue::Double(*d),
        }
    }

    /// Appends the string form (as [`any_value_string`]) without allocating for scalars.
    fn append_string(&self, builder: &mut StringBuilder) {
        use std::fmt::Write;
        match self {
            AttrValue::None => builder.append_null(),
            AttrValue::Str(s) => builder.append_value(s),
            AttrValue::Bool(b) => builder.append_value(if *b { "true" } else { "false" }),
            AttrValue::Int(i) => {
                // Formatting integers and floats into a StringBuilder never fails.
                let _ = write!(builder, "{i}");
                builder.append_value("");
            }
            AttrValue::Double(d) => {
                let _ = write!(builder, "{d}");
                builder.append_value("");
            }
            AttrValue::Other(v) => builder.append_option(any_value_string(v)),
        }
    }

    /// The type column's entry (as [`value_type`]).
    fn type_name(&self) -> Option<&'static str> {
        match self {
            AttrValue::None | AttrValue::Str(_) => None,
            AttrValue::Bool(_) => Some("bool"),
            AttrValue::Int(_) => Some("int"),
            AttrValue::Double(_) => Some("double"),
            AttrValue::Other(v) => value_type(Some(v)),
        }
    }
}

/// An attribute map column and its sibling type column: the string forms SQL reads, and
/// the OTLP type of every value that is not a string, so APIs can give values back typed.
pub(crate) struct TypedAttributes {
    values: MapBuilder<StringBuilder, StringBuilder>,
    types: MapBuilder<StringBuilder, StringBuilder>,
}

impl TypedAttributes {
    pub fn new() -> Self {
        TypedAttributes {
            values: periscope_storage::attributes_builder(),
            types: periscope_storage::attributes_builder(),
        }
    }

    /// Appends one row.
    pub fn append(&mut self, attributes: &[KeyValue]) {
        self.append_pairs(
            attributes
                .iter()
                .map(|kv| (kv.key.as_str(), AttrValue::of(kv.value.as_ref()))),
        );
    }

    /// Appends one row of borrowed attributes (the same row [`TypedAttributes::append`]
    /// makes of their decoded form).
    pub fn append_refs(&mut self, attributes: &[(&str, AttrValue<'_>)]) {
        self.append_pairs(attributes.iter().map(|(k, v)| (*k, v.borrowed())));
    }

    fn append_pairs<'a>(
        &mut self,
        attributes: impl Iterator<Item = (&'a str, AttrValue<'a>)> + Clone,
    ) {
        for (key, value) in attributes.clone() {
            self.values.keys().append_value(key);
            value.append_string(self.values.values());
        }
        self.values
            .append(true)
            .expect("map keys and values are appended in pairs");
        for (key, value) in attributes {
            if let Some(t) = value.type_name() {
                self.types.keys().append_value(key);
                self.types.values().append_value(t);
            }
        }
        self.types
            .append(true)
            .expect("map keys and values are appended in pairs");
    }

    /// The value column and the type column.
    pub fn finish(&mut self) -> (ArrayRef, ArrayRef) {
        (
            Arc::new(self.values.finish()),
            Arc::new(self.types.finish()),
        )
    }
}

/// A `List<Struct>` column assembled from per-row offsets and flat child arrays.
pub(crate) fn list_of_structs(
    fields: Fields,
    children: Vec<ArrayRef>,
    offsets: Vec<i32>,
) -> ArrayRef {
    let values = StructArray::new(fields.clone(), children, None);
    let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
    Arc::new(ListArray::new(
        item,
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn v(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    #[test]
    fn attribute_values_have_one_string_form() {
        assert_eq!(
            any_value_string(&v(Value::IntValue(-42))).as_deref(),
            Some("-42")
        );
        assert_eq!(
            any_value_string(&v(Value::DoubleValue(0.1))).as_deref(),
            Some("0.1")
        );
        assert_eq!(
            any_value_string(&v(Value::DoubleValue(2.0))).as_deref(),
            Some("2")
        );
        assert_eq!(
            any_value_string(&v(Value::BoolValue(true))).as_deref(),
            Some("true")
        );
        assert_eq!(
            any_value_string(&v(Value::BytesValue(vec![1, 2, 3]))).as_deref(),
            Some("AQID")
        );
        let arr = v(Value::ArrayValue(ArrayValue {
            values: vec![v(Value::StringValue("a".into())), v(Value::IntValue(1))],
        }));
        assert_eq!(any_value_string(&arr).as_deref(), Some(r#"["a",1]"#));
        let map = v(Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key_strindex: 0,
                key: "k".into(),
                value: Some(v(Value::BoolValue(false))),
            }],
        }));
        assert_eq!(any_value_string(&map).as_deref(), Some(r#"{"k":false}"#));
        assert_eq!(any_value_string(&AnyValue { value: None }), None);
    }

    #[test]
    fn map_values_match_the_string_form() {
        let kvs: Vec<KeyValue> = [
            Value::IntValue(-7),
            Value::DoubleValue(1e-7),
            Value::BoolValue(false),
            Value::StringValue("s".into()),
            Value::BytesValue(vec![255]),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, value)| KeyValue {
            key_strindex: 0,
            key: format!("k{i}"),
            value: Some(v(value)),
        })
        .collect();
        let mut b = periscope_storage::attributes_builder();
        append_attributes(&mut b, &kvs);
        let map = b.finish();
        let values = map.values();
        let values = arrow::array::AsArray::as_string::<i32>(values);
        for (i, kv) in kvs.iter().enumerate() {
            let want = any_value_string(kv.value.as_ref().unwrap()).unwrap();
            assert_eq!(values.value(i), want);
        }
    }

    #[test]
    fn hex_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(to_hex(&bytes), hex::encode(&bytes));
    }

    #[test]
    fn ids_are_validated() {
        assert_eq!(hex_id(&[], 16, "trace_id"), Ok(None));
        assert_eq!(
            hex_id(&[0xab; 8], 8, "span_id"),
            Ok(Some("abababababababab".into()))
        );
        assert!(
            hex_id(&[1; 15], 16, "trace_id")
                .unwrap_err()
                .contains("16 bytes")
        );
        assert!(
            hex_id(&[0; 16], 16, "trace_id")
                .unwrap_err()
                .contains("zeros")
        );
    }

    #[test]
    fn times_past_2262_are_rejected() {
        assert_eq!(time(0, "t"), Ok(None));
        assert_eq!(time(5, "t"), Ok(Some(5)));
        assert!(time(u64::MAX, "t").is_err());
    }
}
