//! Trace spans: `ExportTraceServiceRequest` → rows of the `spans` table.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, MapBuilder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

use super::{
    AttrValue, Converted, Rejections, TypedAttributes, append_attributes, append_hex_id,
    empty_none, id_error, list_of_structs, push_offset, resource_attributes, scope_name_version,
    service_name, time,
};
use periscope_storage::{Signal, attributes_builder, event_fields, link_fields};

/// The name the `spans` table gives each `SpanKind` (docs/sql.md).
pub fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// The name the `spans` table gives each status code (docs/sql.md).
pub fn status_name(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

fn tz(b: TimestampNanosecondBuilder) -> TimestampNanosecondBuilder {
    b.with_timezone("UTC")
}

/// Column builders of the `spans` table.
pub(crate) struct Columns {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    service_name: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    attributes: TypedAttributes,
    resource_attributes: TypedAttributes,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    flags: UInt32Builder,
    events: Events,
    links: Links,
}

struct Events {
    offsets: Vec<i32>,
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
}

struct Links {
    offsets: Vec<i32>,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    trace_state: StringBuilder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
}

/// One span's fields, borrowed from a decoded request or read in place from its
/// protobuf bytes; `status_code` 0 and an empty message stand for no status.
#[derive(Default)]
pub(crate) struct SpanRow<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub trace_state: &'a str,
    pub name: &'a str,
    pub kind: i32,
    pub start: u64,
    pub end: u64,
    pub flags: u32,
    pub status_code: i32,
    pub status_message: &'a str,
    pub attributes: &'a [(&'a str, AttrValue<'a>)],
    pub events: &'a [Event],
    pub links: &'a [Link],
}

/// What one row copies from its resource and scope.
pub(crate) struct Context<'a> {
    pub resource: &'a [KeyValue],
    pub service: &'a str,
    pub scope_name: Option<&'a str>,
    pub scope_version: Option<&'a str>,
}

/// A span's times after validation.
struct Times {
    start: Option<i64>,
    end: Option<i64>,
}

fn missing(bytes: &[u8], what: &'static str) -> Result<(), String> {
    if bytes.is_empty() {
        return Err(format!("{what} is missing"));
    }
    Ok(())
}

fn validate(span: &SpanRow<'_>) -> Result<Times, String> {
    let check = |bytes: &[u8], n, what| id_error(bytes, n, what).map_or(Ok(()), Err);
    check(span.trace_id, 16, "trace_id")?;
    missing(span.trace_id, "trace_id")?;
    check(span.span_id, 8, "span_id")?;
    missing(span.span_id, "span_id")?;
    check(span.parent_span_id, 8, "parent_span_id")?;
    let start = time(span.start, "start_time_unix_nano")?;
    let end = time(span.end, "end_time_unix_nano")?;
    for e in span.events {
        time(e.time_unix_nano, "event time_unix_nano")?;
    }
    for l in span.links {
        check(&l.trace_id, 16, "link trace_id")?;
        missing(&l.trace_id, "link trace_id")?;
        check(&l.span_id, 8, "link span_id")?;
        missing(&l.span_id, "link span_id")?;
    }
    Ok(Times { start, end })
}

impl Columns {
    pub(crate) fn new() -> Self {
        Columns {
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent_span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            service_name: StringBuilder::new(),
            name: StringBuilder::new(),
            kind: StringBuilder::new(),
            start_time: tz(TimestampNanosecondBuilder::new()),
            end_time: tz(TimestampNanosecondBuilder::new()),
            duration_ns: Int64Builder::new(),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            attributes: TypedAttributes::new(),
            resource_attributes: TypedAttributes::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            flags: UInt32Builder::new(),
            events: Events {
                offsets: vec![0],
                time: tz(TimestampNanosecondBuilder::new()),
                name: StringBuilder::new(),
                attributes: attributes_builder(),
            },
            links: Links {
                offsets: vec![0],
                trace_id: StringBuilder::new(),
                span_id: StringBuilder::new(),
                trace_state: StringBuilder::new(),
                attributes: attributes_builder(),
            },
        }
    }

    /// Appends `span` as a row when it is valid; otherwise says why it is not.
    pub(crate) fn append(&mut self, span: &SpanRow<'_>, ctx: &Context<'_>) -> Result<(), String> {
        let times = validate(span)?;
        let c = self;
        append_hex_id(&mut c.trace_id, span.trace_id);
        append_hex_id(&mut c.span_id, span.span_id);
        append_hex_id(&mut c.parent_span_id, span.parent_span_id);
        c.trace_state.append_option(empty_none(span.trace_state));
        c.service_name.append_value(ctx.service);
        c.name.append_value(span.name);
        c.kind.append_value(kind_name(span.kind));
        c.start_time.append_option(times.start);
        c.end_time.append_option(times.end);
        c.duration_ns.append_option(match (times.start, times.end) {
            (Some(s), Some(e)) => Some(e.saturating_sub(s)),
            _ => None,
        });
        c.status_code.append_value(status_name(span.status_code));
        c.status_message
            .append_option(empty_none(span.status_message));
        c.attributes.append_refs(span.attributes);
        c.resource_attributes.append(ctx.resource);
        c.scope_name.append_option(ctx.scope_name);
        c.scope_version.append_option(ctx.scope_version);
        c.flags.append_value(span.flags);
        for event in span.events {
            // Validated above: the time fits.
            c.events
                .time
                .append_option(time(event.time_unix_nano, "").ok().flatten());
            c.events.name.append_value(&event.name);
            append_attributes(&mut c.events.attributes, &event.attributes);
        }
        push_offset(&mut c.events.offsets, span.events.len());
        for link in span.links {
            append_hex_id(&mut c.links.trace_id, &link.trace_id);
            append_hex_id(&mut c.links.span_id, &link.span_id);
            c.links
                .trace_state
                .append_option(empty_none(&link.trace_state));
            append_attributes(&mut c.links.attributes, &link.attributes);
        }
        push_offset(&mut c.links.offsets, span.links.len());
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let events = list_of_structs(
            event_fields(),
            vec![
                Arc::new(self.events.time.finish()),
                Arc::new(self.events.name.finish()),
                Arc::new(self.events.attributes.finish()),
            ],
            self.events.offsets,
        );
        let links = list_of_structs(
            link_fields(),
            vec![
                Arc::new(self.links.trace_id.finish()),
                Arc::new(self.links.span_id.finish()),
                Arc::new(self.links.trace_state.finish()),
                Arc::new(self.links.attributes.finish()),
            ],
            self.links.offsets,
        );
        let (attributes, attribute_types) = self.attributes.finish();
        let (resource_attributes, resource_attribute_types) = self.resource_attributes.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            attributes,
            resource_attributes,
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            events,
            links,
            Arc::new(self.flags.finish()),
            attribute_types,
            resource_attribute_types,
        ];
        RecordBatch::try_new(Signal::Spans.schema(), columns)
    }
}

/// Converts an export request into `spans` rows, rejecting invalid spans one by one.
///
/// # Errors
/// Only when Arrow cannot assemble the batch, which would be a bug in this module.
pub fn spans(request: &ExportTraceServiceRequest) -> Result<Converted, arrow::error::ArrowError> {
    let mut c = Columns::new();
    let mut rejected = Rejections::default();
    let mut accepted = 0u64;
    let mut attributes = Vec::new();
    for rs in &request.resource_spans {
        let resource = resource_attributes(rs.resource.as_ref());
        let service = service_name(resource);
        for ss in &rs.scope_spans {
            let (scope_name, scope_version) = scope_name_version(ss.scope.as_ref());
            let ctx = Context {
                resource,
                service: &service,
                scope_name,
                scope_version,
            };
            for span in &ss.spans {
                attributes.clear();
                attributes.extend(
                    span.attributes
                        .iter()
                        .map(|kv| (kv.key.as_str(), AttrValue::of(kv.value.as_ref()))),
                );
                let status = span.status.as_ref();
                let row = SpanRow {
                    trace_id: &span.trace_id,
                    span_id: &span.span_id,
                    parent_span_id: &span.parent_span_id,
                    trace_state: &span.trace_state,
                    name: &span.name,
                    kind: span.kind,
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                    flags: span.flags,
                    status_code: status.map_or(0, |s| s.code),
                    status_message: status.map_or("", |s| s.message.as_str()),
                    attributes: &attributes,
                    events: &span.events,
                    links: &span.links,
                };
                match c.append(&row, &ctx) {
                    Ok(()) => accepted += 1,
                    Err(why) => rejected.reject(|| format!("span {:?}: {why}", span.name)),
                }
            }
            attributes.clear();
        }
    }
    rejected.into_converted(accepted, || c.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key_strindex: 0,
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn span(trace: Vec<u8>) -> Span {
        Span {
            trace_id: trace,
            span_id: vec![2; 8],
            name: "GET /cart".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_001,
            end_time_unix_nano: 1_700_000_000_000_500_001,
            attributes: vec![
                kv("http.route", "/cart"),
                KeyValue {
                    key_strindex: 0,
                    key: "retries".into(),
                    value: Some(AnyValue {
                        value: Some(Value::IntValue(2)),
                    }),
                },
            ],
            events: vec![span::Event {
                time_unix_nano: 1_700_000_000_000_000_002,
                name: "retry".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn valid_spans_become_rows_and_invalid_ones_are_counted() {
        let req = request(vec![
            span(vec![1; 16]),
            span(vec![1; 15]),
            span(vec![3; 16]),
        ]);
        let out = spans(&req).unwrap();
        assert_eq!(out.accepted, 2);
        assert_eq!(out.rejected, 1);
        assert!(out.error.unwrap().contains("trace_id must be 16 bytes"));
        let batch = out.batch.unwrap();
        assert_eq!(batch.num_rows(), 2);
        let service = batch
            .column_by_name("service_name")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(service.value(0), "checkout");
        let kind = batch.column_by_name("kind").unwrap().as_string::<i32>();
        assert_eq!(kind.value(1), "server");
        let duration = batch
            .column_by_name("duration_ns")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(duration.value(0), 500_000);
        let events = batch.column_by_name("events").unwrap().as_list::<i32>();
        assert_eq!(events.value(1).len(), 1);
        assert!(batch.column_by_name("parent_span_id").unwrap().is_null(0));
        let types = batch.column_by_name("attribute_types").unwrap().as_map();
        let row = types.value(0);
        assert_eq!(
            row.len(),
            1,
            "only the non-string attribute has a type entry"
        );
        assert_eq!(row.column(0).as_string::<i32>().value(0), "retries");
        assert_eq!(row.column(1).as_string::<i32>().value(0), "int");
    }

    #[test]
    fn an_export_of_only_invalid_spans_has_no_batch() {
        let out = spans(&request(vec![span(vec![])])).unwrap();
        assert!(out.batch.is_none());
        assert_eq!(out.rejected, 1);
    }
}
