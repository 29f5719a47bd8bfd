//! Log records: `ExportLogsServiceRequest` → rows of the `logs` table.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::{
    Converted, Rejections, TypedAttributes, any_value_string, empty_none, hex_id,
    resource_attributes, scope_name_version, service_name, time,
};
use periscope_storage::Signal;

struct Columns {
    timestamp: TimestampNanosecondBuilder,
    observed_timestamp: TimestampNanosecondBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: StringBuilder,
    service_name: StringBuilder,
    attributes: TypedAttributes,
    resource_attributes: TypedAttributes,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    event_name: StringBuilder,
    flags: UInt32Builder,
}

struct Valid {
    timestamp: i64,
    observed: Option<i64>,
    trace_id: Option<String>,
    span_id: Option<String>,
}

/// A log's `timestamp` is its event time; when the sender left it unset (0) it falls back
/// to the observed time, then to the time Periscope received it, so that every row has a
/// time to be partitioned and searched by.
fn validate(log: &LogRecord, received: i64) -> Result<Valid, String> {
    let observed = time(log.observed_time_unix_nano, "observed_time_unix_nano")?;
    let timestamp = time(log.time_unix_nano, "time_unix_nano")?
        .or(observed)
        .unwrap_or(received);
    Ok(Valid {
        timestamp,
        observed,
        trace_id: hex_id(&log.trace_id, 16, "trace_id")?,
        span_id: hex_id(&log.span_id, 8, "span_id")?,
    })
}

/// The body as text: strings as they are, other scalars in the attribute string form,
/// structured bodies (maps, arrays) as JSON.
fn body_text(log: &LogRecord) -> Option<String> {
    let body = log.body.as_ref()?;
    match body.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        _ => any_value_string(body),
    }
}

impl Columns {
    fn new() -> Self {
        Columns {
            timestamp: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            observed_timestamp: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            severity_number: Int32Builder::new(),
            severity_text: StringBuilder::new(),
            body: StringBuilder::new(),
            service_name: StringBuilder::new(),
            attributes: TypedAttributes::new(),
            resource_attributes: TypedAttributes::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            event_name: StringBuilder::new(),
            flags: UInt32Builder::new(),
        }
    }

    fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let rows = arrow::array::ArrayBuilder::len(&self.timestamp);
        let (attributes, attribute_types) = self.attributes.finish();
        let (resource_attributes, resource_attribute_types) = self.resource_attributes.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.observed_timestamp.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.severity_number.finish()),
            Arc::new(self.severity_text.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.service_name.finish()),
            attributes,
            resource_attributes,
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.event_name.finish()),
            Arc::new(self.flags.finish()),
            attribute_types,
            resource_attribute_types,
            // Assigned by the store when it accepts the rows.
            arrow::array::new_null_array(&arrow::datatypes::DataType::UInt64, rows),
        ];
        RecordBatch::try_new(Signal::Logs.schema(), columns)
    }
}

/// Converts an export request into `logs` rows; `received` (Unix ns) stands in for a
/// record that carries no time at all.
///
/// # Errors
/// Only when Arrow cannot assemble the batch, which would be a bug in this module.
pub fn logs(
    request: &ExportLogsServiceRequest,
    received: i64,
) -> Result<Converted, arrow::error::ArrowError> {
    let mut c = Columns::new();
    let mut rejected = Rejections::default();
    let mut accepted = 0u64;
    for rl in &request.resource_logs {
        let resource = resource_attributes(rl.resource.as_ref());
        let service = service_name(resource);
        for sl in &rl.scope_logs {
            let (scope_name, scope_version) = scope_name_version(sl.scope.as_ref());
            for log in &sl.log_records {
                let valid = match validate(log, received) {
                    Ok(v) => v,
                    Err(why) => {
                        rejected.reject(|| format!("log record: {why}"));
                        continue;
                    }
                };
                accepted += 1;
                c.timestamp.append_value(valid.timestamp);
                c.observed_timestamp.append_option(valid.observed);
                c.trace_id.append_option(valid.trace_id);
                c.span_id.append_option(valid.span_id);
                c.severity_number.append_value(log.severity_number);
                c.severity_text
                    .append_option(empty_none(&log.severity_text));
                c.body.append_option(body_text(log));
                c.service_name.append_value(&service);
                c.attributes.append(&log.attributes);
                c.resource_attributes.append(resource);
                c.scope_name.append_option(scope_name);
                c.scope_version.append_option(scope_version);
                c.event_name.append_option(empty_none(&log.event_name));
                c.flags.append_value(log.flags);
            }
        }
    }
    rejected.into_converted(accepted, || c.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};

    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn structured_bodies_become_json_and_missing_times_fall_back() {
        let structured = LogRecord {
            body: Some(AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key_strindex: 0,
                        key: "user".into(),
                        value: Some(AnyValue {
                            value: Some(Value::IntValue(7)),
                        }),
                    }],
                })),
            }),
            observed_time_unix_nano: 99,
            ..Default::default()
        };
        let bad = LogRecord {
            trace_id: vec![1; 3],
            ..Default::default()
        };
        let out = logs(&request(vec![structured, bad]), 1234).unwrap();
        assert_eq!((out.accepted, out.rejected), (1, 1));
        let batch = out.batch.unwrap();
        let body = batch.column_by_name("body").unwrap().as_string::<i32>();
        assert_eq!(body.value(0), r#"{"user":7}"#);
        let ts = batch
            .column_by_name("timestamp")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        assert_eq!(ts.value(0), 99);
        let service = batch
            .column_by_name("service_name")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(service.value(0), "unknown_service");
        assert!(batch.column_by_name("trace_id").unwrap().is_null(0));
    }
}
