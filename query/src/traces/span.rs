//! Spans decoded from `spans` record batches into plain Rust values, with attribute values
//! in their OTLP type.

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, MapArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampNanosecondType, UInt32Type};
use arrow::record_batch::RecordBatch;
use serde_json::Value;

/// An attribute value with its OTLP type.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    /// The key.
    pub key: String,
    /// The value in SQL's string form (docs/sql.md).
    pub text: String,
    /// `string`, `int`, `double`, `bool`, `bytes`, `array` or `kvlist`.
    pub kind: &'static str,
}

impl Attr {
    /// The value as JSON in its OTLP type: numbers and booleans as JSON numbers and
    /// booleans, arrays and maps as JSON, strings and bytes (base64) as strings.
    pub fn json(&self) -> Value {
        match self.kind {
            "int" | "double" | "bool" | "array" | "kvlist" => serde_json::from_str(&self.text)
                .unwrap_or_else(|_| Value::String(self.text.clone())),
            _ => Value::String(self.text.clone()),
        }
    }
}

/// One span event.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    /// Unix nanoseconds.
    pub time: i64,
    /// Event name.
    pub name: String,
    /// Attributes (string form; events keep no type column).
    pub attributes: Vec<Attr>,
}

/// One span link.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanLink {
    /// Linked trace id.
    pub trace_id: String,
    /// Linked span id.
    pub span_id: String,
    /// W3C trace state of the link.
    pub trace_state: Option<String>,
    /// Attributes (string form).
    pub attributes: Vec<Attr>,
}

/// One span, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Lowercase hex trace id.
    pub trace_id: String,
    /// Lowercase hex span id.
    pub span_id: String,
    /// Parent span id; `None` for a root.
    pub parent_span_id: Option<String>,
    /// W3C trace state.
    pub trace_state: Option<String>,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Operation name.
    pub name: String,
    /// `server`, `client`, `producer`, `consumer`, `internal` or `unspecified`.
    pub kind: String,
    /// Unix nanoseconds.
    pub start: i64,
    /// Unix nanoseconds.
    pub end: i64,
    /// `end - start`, nanoseconds.
    pub duration: i64,
    /// `unset`, `ok` or `error`.
    pub status_code: String,
    /// Status message.
    pub status_message: Option<String>,
    /// Span attributes.
    pub attributes: Vec<Attr>,
    /// Resource attributes.
    pub resource_attributes: Vec<Attr>,
    /// Instrumentation scope name.
    pub scope_name: Option<String>,
    /// Instrumentation scope version.
    pub scope_version: Option<String>,
    /// Events, in stored order.
    pub events: Vec<SpanEvent>,
    /// Links.
    pub links: Vec<SpanLink>,
    /// W3C trace flags.
    pub flags: Option<u32>,
}

impl Span {
    /// A span attribute by key.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.text.as_str())
    }

    /// A resource attribute by key.
    pub fn resource_attr(&self, key: &str) -> Option<&str> {
        self.resource_attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.text.as_str())
    }

    /// Whether the span's status is error.
    pub fn is_error(&self) -> bool {
        self.status_code == "error"
    }
}

/// A string cell (Utf8, LargeUtf8 or Utf8View); `None` for NULL or another type.
pub(crate) fn string_at(array: Option<&ArrayRef>, row: usize) -> Option<String> {
    let a = array?;
    if a.is_null(row) {
        return None;
    }
    match a.data_type() {
        DataType::Utf8 => Some(a.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Some(a.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Some(a.as_string_view().value(row).to_string()),
        _ => None,
    }
}

fn time_at(array: Option<&ArrayRef>, row: usize) -> i64 {
    match array {
        Some(a)
            if a.is_valid(row)
                && matches!(a.data_type(), DataType::Timestamp(TimeUnit::Nanosecond, _)) =>
        {
            a.as_primitive::<TimestampNanosecondType>().value(row)
        }
        _ => 0,
    }
}

/// The types recorded in a `*attribute_types` map cell.
fn type_map(array: Option<&ArrayRef>, row: usize) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(map) = array.and_then(|a| a.as_any().downcast_ref::<MapArray>()) else {
        return out;
    };
    if map.is_null(row) {
        return out;
    }
    let entries = map.value(row);
    let (k, v) = (
        entries.column(0).as_string::<i32>(),
        entries.column(1).as_string::<i32>(),
    );
    for i in 0..entries.len() {
        out.insert(k.value(i).to_string(), v.value(i).to_string());
    }
    out
}

fn kind_name(t: Option<&String>) -> &'static str {
    match t.map(String::as_str) {
        Some("int") => "int",
        Some("double") => "double",
        Some("bool") => "bool",
        Some("bytes") => "bytes",
        Some("array") => "array",
        Some("kvlist") => "kvlist",
        _ => "string",
    }
}

/// Attributes of one map cell; `types` gives the non-string types.
fn attrs_at(map: Option<&MapArray>, row: usize, types: &BTreeMap<String, String>) -> Vec<Attr> {
    let Some(map) = map else { return Vec::new() };
    if map.is_null(row) {
        return Vec::new();
    }
    let entries = map.value(row);
    let (k, v) = (
        entries.column(0).as_string::<i32>(),
        entries.column(1).as_string::<i32>(),
    );
    (0..entries.len())
        .map(|i| {
            let key = k.value(i).to_string();
            let kind = kind_name(types.get(&key));
            Attr {
                text: if v.is_valid(i) {
                    v.value(i).to_string()
                } else {
                    String::new()
                },
                key,
                kind,
            }
        })
        .collect()
}

/// The attributes of map column `name` at `row`, typed by its sibling `types` column.
pub(crate) fn typed_attrs(batch: &RecordBatch, name: &str, types: &str, row: usize) -> Vec<Attr> {
    attrs_at(
        as_map(batch.column_by_name(name)),
        row,
        &type_map(batch.column_by_name(types), row),
    )
}

fn as_map(array: Option<&ArrayRef>) -> Option<&MapArray> {
    array.and_then(|a| a.as_any().downcast_ref::<MapArray>())
}

fn events_at(list: Option<&ListArray>, row: usize) -> Vec<SpanEvent> {
    let Some(list) = list else { return Vec::new() };
    if list.is_null(row) {
        return Vec::new();
    }
    let values = list.value(row);
    let Some(s) = values.as_struct_opt() else {
        return Vec::new();
    };
    let none = BTreeMap::new();
    (0..s.len())
        .map(|i| SpanEvent {
            time: time_at(s.column_by_name("time"), i),
            name: string_at(s.column_by_name("name"), i).unwrap_or_default(),
            attributes: attrs_at(as_map(s.column_by_name("attributes")), i, &none),
        })
        .collect()
}

fn links_at(list: Option<&ListArray>, row: usize) -> Vec<SpanLink> {
    let Some(list) = list else { return Vec::new() };
    if list.is_null(row) {
        return Vec::new();
    }
    let values = list.value(row);
    let Some(s) = values.as_struct_opt() else {
        return Vec::new();
    };
    let none = BTreeMap::new();
    (0..s.len())
        .map(|i| SpanLink {
            trace_id: string_at(s.column_by_name("trace_id"), i).unwrap_or_default(),
            span_id: string_at(s.column_by_name("span_id"), i).unwrap_or_default(),
            trace_state: string_at(s.column_by_name("trace_state"), i),
            attributes: attrs_at(as_map(s.column_by_name("attributes")), i, &none),
        })
        .collect()
}

/// Decodes every row of `batches` (with the `spans` columns; missing columns read as
/// empty) into spans.
pub fn decode(batches: &[RecordBatch]) -> Vec<Span> {
    let mut out = Vec::new();
    for batch in batches {
        let col = |name: &str| batch.column_by_name(name);
        let events = col("events").and_then(|a| a.as_list_opt::<i32>());
        let links = col("links").and_then(|a| a.as_list_opt::<i32>());
        for row in 0..batch.num_rows() {
            let start = time_at(col("start_time"), row);
            let end = time_at(col("end_time"), row);
            let duration = match col("duration_ns") {
                Some(a) if a.is_valid(row) && a.data_type() == &DataType::Int64 => {
                    a.as_primitive::<Int64Type>().value(row)
                }
                _ => end.saturating_sub(start),
            };
            out.push(Span {
                trace_id: string_at(col("trace_id"), row).unwrap_or_default(),
                span_id: string_at(col("span_id"), row).unwrap_or_default(),
                parent_span_id: string_at(col("parent_span_id"), row).filter(|p| !p.is_empty()),
                trace_state: string_at(col("trace_state"), row),
                service_name: string_at(col("service_name"), row).unwrap_or_default(),
                name: string_at(col("name"), row).unwrap_or_default(),
                kind: string_at(col("kind"), row).unwrap_or_else(|| "unspecified".into()),
                start,
                end,
                duration,
                status_code: string_at(col("status_code"), row).unwrap_or_else(|| "unset".into()),
                status_message: string_at(col("status_message"), row).filter(|m| !m.is_empty()),
                attributes: typed_attrs(batch, "attributes", "attribute_types", row),
                resource_attributes: typed_attrs(
                    batch,
                    "resource_attributes",
                    "resource_attribute_types",
                    row,
                ),
                scope_name: string_at(col("scope_name"), row),
                scope_version: string_at(col("scope_version"), row),
                events: events_at(events, row),
                links: links_at(links, row),
                flags: match col("flags") {
                    Some(a) if a.is_valid(row) && a.data_type() == &DataType::UInt32 => {
                        Some(a.as_primitive::<UInt32Type>().value(row))
                    }
                    _ => None,
                },
            });
        }
    }
    out
}
