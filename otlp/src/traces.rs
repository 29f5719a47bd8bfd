//! Trace spans: `ExportTraceServiceRequest` → rows of the `spans` table.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, MapBuilder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::{
    Converted, Rejections, TypedAttributes, append_attributes, empty_none, hex_id, list_of_structs,
    push_offset, resource_attributes, scope_name_version, service_name, time,
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
struct Columns {
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

/// A span's fields after validation, ready to append.
struct Valid {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    start: Option<i64>,
    end: Option<i64>,
    event_times: Vec<Option<i64>>,
    links: Vec<(String, String)>,
}

fn validate(span: &Span) -> Result<Valid, String> {
    let trace_id = hex_id(&span.trace_id, 16, "trace_id")?.ok_or("trace_id is missing")?;
    let span_id = hex_id(&span.span_id, 8, "span_id")?.ok_or("span_id is missing")?;
    let parent_span_id = hex_id(&span.parent_span_id, 8, "parent_span_id")?;
    let start = time(span.start_time_unix_nano, "start_time_unix_nano")?;
    let end = time(span.end_time_unix_nano, "end_time_unix_nano")?;
    let event_times = span
        .events
        .iter()
        .map(|e| time(e.time_unix_nano, "event time_unix_nano"))
        .collect::<Result<_, _>>()?;
    let links = span
        .links
        .iter()
        .map(|l| {
            let t = hex_id(&l.trace_id, 16, "link trace_id")?.ok_or("link trace_id is missing")?;
            let s = hex_id(&l.span_id, 8, "link span_id")?.ok_or("link span_id is missing")?;
            Ok::<_, String>((t, s))
        })
        .collect::<Result<_, _>>()?;
    Ok(Valid {
        trace_id,
        span_id,
        parent_span_id,
        start,
        end,
        event_times,
        links,
    })
}

impl Columns {
    fn new() -> Self {
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

    fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
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
    for rs in &request.resource_spans {
        let resource = resource_attributes(rs.resource.as_ref());
        let service = service_name(resource);
        for ss in &rs.scope_spans {
            let (scope_name, scope_version) = scope_name_version(ss.scope.as_ref());
            for span in &ss.spans {
                let valid = match validate(span) {
                    Ok(v) => v,
                    Err(why) => {
                        rejected.reject(|| format!("span {:?}: {why}", span.name));
                        continue;
                    }
                };
                accepted += 1;
                c.trace_id.append_value(&valid.trace_id);
                c.span_id.append_value(&valid.span_id);
                c.parent_span_id.append_option(valid.parent_span_id);
                c.trace_state.append_option(empty_none(&span.trace_state));
                c.service_name.append_value(&service);
                c.name.append_value(&span.name);
                c.kind.append_value(kind_name(span.kind));
                c.start_time.append_option(valid.start);
                c.end_time.append_option(valid.end);
                c.duration_ns.append_option(match (valid.start, valid.end) {
                    (Some(s), Some(e)) => Some(e.saturating_sub(s)),
                    _ => None,
                });
                let status = span.status.as_ref();
                c.status_code
                    .append_value(status_name(status.map(|s| s.code).unwrap_or(0)));
                c.status_message
                    .append_option(status.map(|s| s.message.as_str()).and_then(empty_none));
                c.attributes.append(&span.attributes);
                c.resource_attributes.append(resource);
                c.scope_name.append_option(scope_name);
                c.scope_version.append_option(scope_version);
                c.flags.append_value(span.flags);
                for (event, t) in span.events.iter().zip(valid.event_times) {
                    c.events.time.append_option(t);
                    c.events.name.append_value(&event.name);
                    append_attributes(&mut c.events.attributes, &event.attributes);
                }
                push_offset(&mut c.events.offsets, span.events.len());
                for (link, (t, s)) in span.links.iter().zip(valid.links) {
                    c.links.trace_id.append_value(t);
                    c.links.span_id.append_value(s);
                    c.links
                        .trace_state
                        .append_option(empty_none(&link.trace_state));
                    append_attributes(&mut c.links.attributes, &link.attributes);
                }
                push_offset(&mut c.links.offsets, span.links.len());
            }
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
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, span};

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
