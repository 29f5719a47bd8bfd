//! What decoding an OTLP export will build in memory, estimated from its protobuf bytes
//! before it is decoded, so that a request is admitted by what it really costs.
//!
//! A small body can decode to far more than its size: an empty log record is two bytes
//! on the wire and a few hundred as a decoded struct, and a resource's attributes are
//! encoded once but copied into every row of the batch the export becomes. The walk
//! below reads only tags and lengths (no allocation), following the OTLP message tree,
//! and adds up:
//! - `decoded`: the prost structs and their strings, as `prost::Message::decode` builds
//!   them;
//! - `rows`: each row (span, log record, data point) with the resource, scope and metric
//!   fields copied into it, as the conversion to Arrow builds them.
//!
//! The receivers reserve `decoded + 2 × rows` (the rows exist twice while the WAL record
//! is encoded) and refuse a request whose estimate exceeds the whole decoding budget.

use std::mem::size_of;

use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::logs::v1 as logs;
use opentelemetry_proto::tonic::metrics::v1 as metrics;
use opentelemetry_proto::tonic::resource::v1 as resource;
use opentelemetry_proto::tonic::trace::v1 as trace;
use periscope_storage::Signal;

/// What decoding and converting a request builds, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// The decoded request.
    pub decoded: u64,
    /// The rows it becomes.
    pub rows: u64,
}

impl Estimate {
    /// Memory the request holds at its peak: the decoded request, and its rows twice
    /// (the batch and its WAL record).
    pub fn total(self) -> u64 {
        self.decoded.saturating_add(self.rows.saturating_mul(2))
    }
}

/// The bytes are not a protobuf message of the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Estimates what decoding `bytes`, an export of `signal` in protobuf, builds.
///
/// # Errors
/// [`Malformed`] when the bytes are not a well-formed protobuf message (the decoder
/// would refuse them too).
pub fn protobuf(signal: Signal, bytes: &[u8]) -> Result<Estimate, Malformed> {
    let root = match signal {
        Signal::Spans => M::TraceRequest,
        Signal::Logs => M::LogsRequest,
        Signal::Metrics => M::MetricsRequest,
    };
    walk(root, bytes, 0, 0)
}

/// Estimates what decoding `bytes`, a Prometheus remote write `WriteRequest` (after
/// snappy), builds: each sample becomes a row that copies its series' labels.
///
/// # Errors
/// [`Malformed`] when the bytes are not a well-formed protobuf message.
pub fn remote_write(bytes: &[u8]) -> Result<Estimate, Malformed> {
    walk(M::WriteRequest, bytes, 0, 0)
}

/// An upper bound of what decoding `bytes`, an export in OTLP JSON, builds before it is
/// decoded: every object may become the largest OTLP struct.
pub fn json_upper_bound(bytes: &[u8]) -> u64 {
    let objects = bytes.iter().filter(|b| **b == b'{').count() as u64;
    let largest = [
        size_of::<trace::Span>(),
        size_of::<logs::LogRecord>(),
        size_of::<metrics::HistogramDataPoint>(),
        size_of::<metrics::ExponentialHistogramDataPoint>(),
        size_of::<metrics::Metric>(),
    ]
    .into_iter()
    .max()
    .unwrap_or(256) as u64;
    objects
        .saturating_mul(largest)
        .saturating_add(bytes.len() as u64)
}

/// The OTLP messages the walk knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum M {
    TraceRequest,
    LogsRequest,
    MetricsRequest,
    ResourceSpans,
    ResourceLogs,
    ResourceMetrics,
    ScopeSpans,
    ScopeLogs,
    ScopeMetrics,
    Resource,
    Scope,
    EntityRef,
    Span,
    Event,
    Link,
    Status,
    LogRecord,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExpHistogram,
    Summary,
    NumberPoint,
    HistogramPoint,
    ExpHistogramPoint,
    Buckets,
    SummaryPoint,
    Quantile,
    Exemplar,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    WriteRequest,
    TimeSeries,
    Label,
    Sample,
    MetricMetadata,
}

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum F {
    /// A nested message.
    Msg(M),
    /// A string or bytes: its length on the heap.
    Heap,
    /// Repeated fixed-width numbers, packed: as long as on the wire.
    PackedFixed,
    /// Repeated varints, packed: up to 8 bytes each decoded from 1 on the wire.
    PackedVarint,
    /// A number, held inside the struct; or a field the decoder skips.
    Inline,
}

fn field(m: M, n: u32) -> F {
    use F::{Heap, Inline, Msg, PackedFixed, PackedVarint};
    match (m, n) {
        (M::TraceRequest, 1) => Msg(M::ResourceSpans),
        (M::LogsRequest, 1) => Msg(M::ResourceLogs),
        (M::MetricsRequest, 1) => Msg(M::ResourceMetrics),
        (M::ResourceSpans | M::ResourceLogs | M::ResourceMetrics, 1) => Msg(M::Resource),
        (M::ResourceSpans, 2) => Msg(M::ScopeSpans),
        (M::ResourceLogs, 2) => Msg(M::ScopeLogs),
        (M::ResourceMetrics, 2) => Msg(M::ScopeMetrics),
        (M::ScopeSpans | M::ScopeLogs | M::ScopeMetrics, 1) => Msg(M::Scope),
        (M::ScopeSpans, 2) => Msg(M::Span),
        (M::ScopeLogs, 2) => Msg(M::LogRecord),
        (M::ScopeMetrics, 2) => Msg(M::Metric),
        (
            M::ResourceSpans
            | M::ResourceLogs
            | M::ResourceMetrics
            | M::ScopeSpans
            | M::ScopeLogs
            | M::ScopeMetrics,
            3,
        ) => Heap,
        (M::Resource, 1) | (M::Scope, 3) => Msg(M::KeyValue),
        (M::Resource, 3) => Msg(M::EntityRef),
        (M::EntityRef, 1..=4) | (M::Scope, 1 | 2) => Heap,
        (M::Span, 1..=5) => Heap,
        (M::Span, 9) => Msg(M::KeyValue),
        (M::Span, 11) => Msg(M::Event),
        (M::Span, 13) => Msg(M::Link),
        (M::Span, 15) => Msg(M::Status),
        (M::Event, 2) => Heap,
        (M::Event, 3) => Msg(M::KeyValue),
        (M::Link, 1..=3) => Heap,
        (M::Link, 4) => Msg(M::KeyValue),
        (M::Status, 2) => Heap,
        (M::LogRecord, 3 | 9 | 10 | 12) => Heap,
        (M::LogRecord, 5) => Msg(M::AnyValue),
        (M::LogRecord, 6) => Msg(M::KeyValue),
        (M::Metric, 1..=3) => Heap,
        (M::Metric, 5) => Msg(M::Gauge),
        (M::Metric, 7) => Msg(M::Sum),
        (M::Metric, 9) => Msg(M::Histogram),
        (M::Metric, 10) => Msg(M::ExpHistogram),
        (M::Metric, 11) => Msg(M::Summary),
        (M::Metric, 12) => Msg(M::KeyValue),
        (M::Gauge | M::Sum, 1) => Msg(M::NumberPoint),
        (M::Histogram, 1) => Msg(M::HistogramPoint),
        (M::ExpHistogram, 1) => Msg(M::ExpHistogramPoint),
        (M::Summary, 1) => Msg(M::SummaryPoint),
        (M::NumberPoint, 7) | (M::HistogramPoint, 9) | (M::ExpHistogramPoint, 1) => {
            Msg(M::KeyValue)
        }
        (M::SummaryPoint, 7) | (M::Exemplar, 7) => Msg(M::KeyValue),
        (M::NumberPoint, 5) | (M::HistogramPoint, 8) | (M::ExpHistogramPoint, 11) => {
            Msg(M::Exemplar)
        }
        (M::HistogramPoint, 6 | 7) => PackedFixed,
        (M::ExpHistogramPoint, 8 | 9) => Msg(M::Buckets),
        (M::Buckets, 2) => PackedVarint,
        (M::SummaryPoint, 6) => Msg(M::Quantile),
        (M::Exemplar, 4 | 5) => Heap,
        (M::KeyValue, 1) => Heap,
        (M::KeyValue, 2) => Msg(M::AnyValue),
        (M::AnyValue, 1 | 7) => Heap,
        (M::AnyValue, 5) => Msg(M::ArrayValue),
        (M::AnyValue, 6) => Msg(M::KeyValueList),
        (M::ArrayValue, 1) => Msg(M::AnyValue),
        (M::KeyValueList, 1) => Msg(M::KeyValue),
        (M::WriteRequest, 1) => Msg(M::TimeSeries),
        (M::WriteRequest, 3) => Msg(M::MetricMetadata),
        (M::TimeSeries, 1) => Msg(M::Label),
        (M::TimeSeries, 2) => Msg(M::Sample),
        (M::TimeSeries, 3 | 4) | (M::Label, 1 | 2) | (M::MetricMetadata, 2 | 4 | 5) => Heap,
        _ => Inline,
    }
}

/// The size of the decoded struct.
fn size(m: M) -> u64 {
    (match m {
        M::TraceRequest | M::LogsRequest | M::MetricsRequest => 32,
        M::ResourceSpans => size_of::<trace::ResourceSpans>(),
        M::ResourceLogs => size_of::<logs::ResourceLogs>(),
        M::ResourceMetrics => size_of::<metrics::ResourceMetrics>(),
        M::ScopeSpans => size_of::<trace::ScopeSpans>(),
        M::ScopeLogs => size_of::<logs::ScopeLogs>(),
        M::ScopeMetrics => size_of::<metrics::ScopeMetrics>(),
        M::Resource => size_of::<resource::Resource>(),
        M::Scope => size_of::<common::InstrumentationScope>(),
        M::EntityRef => 4 * size_of::<String>(),
        M::Span => size_of::<trace::Span>(),
        M::Event => size_of::<trace::span::Event>(),
        M::Link => size_of::<trace::span::Link>(),
        M::Status => size_of::<trace::Status>(),
        M::LogRecord => size_of::<logs::LogRecord>(),
        M::Metric => size_of::<metrics::Metric>(),
        M::Gauge => size_of::<metrics::Gauge>(),
        M::Sum => size_of::<metrics::Sum>(),
        M::Histogram => size_of::<metrics::Histogram>(),
        M::ExpHistogram => size_of::<metrics::ExponentialHistogram>(),
        M::Summary => size_of::<metrics::Summary>(),
        M::NumberPoint => size_of::<metrics::NumberDataPoint>(),
        M::HistogramPoint => size_of::<metrics::HistogramDataPoint>(),
        M::ExpHistogramPoint => size_of::<metrics::ExponentialHistogramDataPoint>(),
        M::Buckets => size_of::<metrics::exponential_histogram_data_point::Buckets>(),
        M::SummaryPoint => size_of::<metrics::SummaryDataPoint>(),
        M::Quantile => size_of::<metrics::summary_data_point::ValueAtQuantile>(),
        M::Exemplar => size_of::<metrics::Exemplar>(),
        M::KeyValue => size_of::<common::KeyValue>(),
        M::AnyValue => size_of::<common::AnyValue>(),
        M::ArrayValue => size_of::<common::ArrayValue>(),
        M::KeyValueList => size_of::<common::KeyValueList>(),
        M::WriteRequest => size_of::<crate::remote_write::WriteRequest>(),
        M::TimeSeries => size_of::<crate::remote_write::TimeSeries>(),
        // A label is decoded once, and becomes an OTLP attribute on each sample.
        M::Label => size_of::<crate::remote_write::Label>() + size_of::<common::KeyValue>(),
        // A sample is decoded, then becomes an OTLP data point.
        M::Sample => {
            size_of::<crate::remote_write::Sample>() + size_of::<metrics::NumberDataPoint>()
        }
        M::MetricMetadata => size_of::<crate::remote_write::MetricMetadata>(),
    }) as u64
}

/// A message that becomes one row.
fn is_row(m: M) -> bool {
    matches!(
        m,
        M::Span
            | M::LogRecord
            | M::NumberPoint
            | M::HistogramPoint
            | M::ExpHistogramPoint
            | M::SummaryPoint
            | M::Sample
    )
}

/// A message whose rows are below it; its other fields are copied into each of them.
fn holds_rows(m: M) -> bool {
    matches!(
        m,
        M::TraceRequest
            | M::LogsRequest
            | M::MetricsRequest
            | M::ResourceSpans
            | M::ResourceLogs
            | M::ResourceMetrics
            | M::ScopeSpans
            | M::ScopeLogs
            | M::ScopeMetrics
            | M::Metric
            | M::Gauge
            | M::Sum
            | M::Histogram
            | M::ExpHistogram
            | M::Summary
            | M::WriteRequest
            | M::TimeSeries
    )
}

/// Deepest nesting walked, as prost's recursion limit.
const MAX_DEPTH: u32 = 100;

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, Malformed> {
    let mut value = 0u64;
    for shift in 0..10 {
        let Some(&b) = bytes.get(*at) else {
            return Err(Malformed("truncated varint"));
        };
        *at += 1;
        value |= u64::from(b & 0x7f) << (7 * shift);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed("varint longer than 10 bytes"))
}

/// One field of a message: its number, and its bytes when length-delimited.
struct Field<'a> {
    number: u32,
    payload: Option<&'a [u8]>,
}

/// The fields of a message, in wire order.
fn fields(bytes: &[u8]) -> impl Iterator<Item = Result<Field<'_>, Malformed>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let result = (|| {
            let key = varint(bytes, &mut at)?;
            let number =
                u32::try_from(key >> 3).map_err(|_| Malformed("field number too large"))?;
            if number == 0 {
                return Err(Malformed("field number 0"));
            }
            let payload = match key & 7 {
                0 => {
                    varint(bytes, &mut at)?;
                    None
                }
                1 => {
                    at = at.checked_add(8).ok_or(Malformed("overflow"))?;
                    None
                }
                5 => {
                    at = at.checked_add(4).ok_or(Malformed("overflow"))?;
                    None
                }
                2 => {
                    let len = usize::try_from(varint(bytes, &mut at)?)
                        .map_err(|_| Malformed("length too large"))?;
                    let end = at.checked_add(len).ok_or(Malformed("overflow"))?;
                    let slice = bytes.get(at..end).ok_or(Malformed("truncated field"))?;
                    at = end;
                    Some(slice)
                }
                _ => return Err(Malformed("unsupported wire type (groups)")),
            };
            if at > bytes.len() {
                return Err(Malformed("truncated field"));
            }
            Ok(Field { number, payload })
        })();
        if result.is_err() {
            at = bytes.len();
        }
        Some(result)
    })
}

/// Walks message `m` in `bytes`; `context` is what each row below copies from its
/// ancestors.
fn walk(m: M, bytes: &[u8], context: u64, depth: u32) -> Result<Estimate, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed("message nested too deeply"));
    }
    let mut own = size(m);
    let mut below = Estimate::default();
    // Fields that are not containers of rows: decoded once here, copied into each row.
    for f in fields(bytes) {
        let f = f?;
        let kind = field(m, f.number);
        let Some(payload) = f.payload else {
            continue;
        };
        match kind {
            F::Msg(child) if holds_rows(m) && (holds_rows(child) || is_row(child)) => {}
            F::Msg(child) => own = own.saturating_add(walk(child, payload, 0, depth + 1)?.decoded),
            F::Heap | F::PackedFixed => own = own.saturating_add(payload.len() as u64),
            F::PackedVarint => own = own.saturating_add(payload.len() as u64 * 8),
            F::Inline => {}
        }
    }
    if holds_rows(m) {
        let context = context.saturating_add(own);
        for f in fields(bytes) {
            let f = f?;
            let (F::Msg(child), Some(payload)) = (field(m, f.number), f.payload) else {
                continue;
            };
            if holds_rows(child) || is_row(child) {
                let e = walk(child, payload, context, depth + 1)?;
                below.decoded = below.decoded.saturating_add(e.decoded);
                below.rows = below.rows.saturating_add(e.rows);
            }
        }
    }
    let decoded = own.saturating_add(below.decoded);
    let rows = if is_row(m) {
        decoded.saturating_add(context)
    } else {
        below.rows
    };
    Ok(Estimate { decoded, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    fn kv(key: &str, value: &str) -> common::KeyValue {
        common::KeyValue {
            key: key.into(),
            value: Some(common::AnyValue {
                value: Some(common::any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn logs(resource_value: usize, records: usize) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![logs::ResourceLogs {
                resource: Some(resource::Resource {
                    attributes: vec![kv("big", &"x".repeat(resource_value))],
                    ..Default::default()
                }),
                scope_logs: vec![logs::ScopeLogs {
                    log_records: vec![logs::LogRecord::default(); records],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_resource_copied_into_many_rows_counts_once_per_row() {
        let request = logs(1 << 20, 1000);
        let bytes = request.encode_to_vec();
        let e = protobuf(Signal::Logs, &bytes).expect("well formed");
        // Encoded: about 1 MiB. Rows: a thousand copies of the 1 MiB attribute.
        assert!(bytes.len() < (1 << 20) + 4096);
        assert!(e.rows >= 1000 * (1 << 20), "{e:?}");
        assert!(e.decoded >= (1 << 20) + 1000 * size(M::LogRecord), "{e:?}");
        assert!(
            e.decoded < (1 << 20) + 1000 * size(M::LogRecord) + 4096,
            "{e:?}"
        );
    }

    #[test]
    fn empty_records_count_their_structs() {
        let bytes = logs(0, 100_000).encode_to_vec();
        let e = protobuf(Signal::Logs, &bytes).expect("well formed");
        assert!(bytes.len() < 300_000);
        assert!(e.decoded >= 100_000 * size(M::LogRecord), "{e:?}");
    }

    #[test]
    fn a_typical_export_is_estimated_near_its_real_size() {
        let spans: Vec<trace::Span> = (0..100)
            .map(|i| trace::Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: format!("GET /items/{i}"),
                attributes: vec![kv("http.method", "GET"), kv("http.route", "/items/{id}")],
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![trace::ResourceSpans {
                resource: Some(resource::Resource {
                    attributes: vec![kv("service.name", "cart")],
                    ..Default::default()
                }),
                scope_spans: vec![trace::ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = request.encode_to_vec();
        let e = protobuf(Signal::Spans, &bytes).expect("well formed");
        let span = size(M::Span) + 16 + 8 + 2 * size(M::KeyValue) + 2 * size(M::AnyValue);
        assert!(e.decoded > 100 * span, "{e:?}");
        assert!(e.decoded < 100 * (span + 100) + 1000, "{e:?}");
        assert!(
            e.total() < 40 * bytes.len() as u64,
            "{e:?} for {} bytes",
            bytes.len()
        );
    }

    #[test]
    fn remote_write_samples_copy_their_labels() {
        use crate::remote_write::{Label, Sample, TimeSeries, WriteRequest};
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "big".into(),
                    value: "x".repeat(64 << 10),
                }],
                samples: vec![Sample::default(); 10_000],
                exemplars: Vec::new(),
                histograms: Vec::new(),
            }],
            metadata: Vec::new(),
        };
        let bytes = request.encode_to_vec();
        assert!(bytes.len() < 100_000);
        let e = remote_write(&bytes).expect("well formed");
        assert!(e.rows >= 10_000 * (64 << 10), "{e:?}");
    }

    #[test]
    fn malformed_bytes_are_refused_without_panicking() {
        for bytes in [
            &[0x0a, 0xff][..],
            &[0x0a, 0x05, 0x01][..],
            &[0x0b][..],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ][..],
        ] {
            assert!(protobuf(Signal::Spans, bytes).is_err(), "{bytes:?}");
        }
        assert_eq!(
            protobuf(Signal::Logs, &[]),
            Ok(Estimate {
                decoded: 32,
                rows: 0
            })
        );
    }

    #[test]
    fn nesting_deeper_than_prost_allows_is_refused() {
        let mut value = common::AnyValue::default();
        for _ in 0..120 {
            value = common::AnyValue {
                value: Some(common::any_value::Value::ArrayValue(common::ArrayValue {
                    values: vec![value],
                })),
            };
        }
        let record = logs::LogRecord {
            body: Some(value),
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![logs::ResourceLogs {
                scope_logs: vec![logs::ScopeLogs {
                    log_records: vec![record],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert!(protobuf(Signal::Logs, &request.encode_to_vec()).is_err());
    }
}
