//! Arrow schemas of the three tables (`spans`, `logs`, `metrics`), as docs/sql.md describes
//! them (where they sit on disk: docs/architecture.md).
//!
//! Each top-level attribute map has a sibling `*attribute_types` map that records the
//! OTLP type (`int`, `double`, `bool`, `bytes`, `array`, `kvlist`) of every value that is
//! not a string.
//!
//! Every column is nullable so that the in-memory head, the Parquet files and the query
//! engine agree on one schema without per-source adaptation.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, MapBuilder, MapFieldNames, StringBuilder};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// The three kinds of telemetry Periscope stores, each in its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Trace spans: the `spans` table.
    Spans,
    /// Log records: the `logs` table.
    Logs,
    /// Metric data points: the `metrics` table.
    Metrics,
}

impl Signal {
    /// All signals, in a fixed order.
    pub const ALL: [Signal; 3] = [Signal::Spans, Signal::Logs, Signal::Metrics];

    /// The table (and directory) name.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Spans => "spans",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }

    /// Parses a table name.
    pub fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }

    /// A stable small index (0..3), used for arrays indexed by signal.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The one-byte tag used in WAL records.
    pub(crate) fn tag(self) -> u8 {
        self as u8 + 1
    }

    /// Inverse of [`Signal::tag`].
    pub(crate) fn from_tag(tag: u8) -> Option<Signal> {
        Signal::ALL.get(usize::from(tag).checked_sub(1)?).copied()
    }

    /// The Arrow schema of this signal's table.
    pub fn schema(self) -> SchemaRef {
        match self {
            Signal::Spans => SPANS.clone(),
            Signal::Logs => LOGS.clone(),
            Signal::Metrics => METRICS.clone(),
        }
    }

    /// The column that holds each row's time; files are partitioned and pruned by it.
    pub fn time_column(self) -> &'static str {
        match self {
            Signal::Spans => "start_time",
            Signal::Logs | Signal::Metrics => "timestamp",
        }
    }

    /// Sort key of rows inside a Parquet file, so that row-group statistics prune well.
    /// Spans sort by trace: a trace's spans sit together (the trace view reads a page or
    /// two of each column, found by the page index) and its ids compress to almost
    /// nothing; the service graph and RED read per-minute aggregates, not rows.
    /// Log rows keep the order of their file index's documents, about their arrival
    /// order, so that a document number is a row number (see `logindex::export`); a sort
    /// by service would save under 2 % of their bytes.
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Signal::Spans => &["trace_id", "start_time"],
            Signal::Logs => &[],
            Signal::Metrics => &["metric_name", "service_name", "timestamp"],
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `Timestamp(Nanosecond, UTC)`, the type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Builder for attribute maps (`Map<Utf8, Utf8>`), with the field names of [`attributes_type`].
pub fn attributes_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(
        Some(attributes_field_names()),
        StringBuilder::new(),
        StringBuilder::new(),
    )
}

/// The field names of attribute maps.
fn attributes_field_names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    }
}

/// As [`attributes_builder`], sized for `rows` maps of `entries` pairs in all, whose keys
/// and values take `key_bytes` and `value_bytes`: no buffer grows while it is filled.
pub fn attributes_builder_with_capacity(
    rows: usize,
    entries: usize,
    key_bytes: usize,
    value_bytes: usize,
) -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::with_capacity(
        Some(attributes_field_names()),
        StringBuilder::with_capacity(entries, key_bytes),
        StringBuilder::with_capacity(entries, value_bytes),
        rows,
    )
}

/// The type of attribute map columns: exactly what [`attributes_builder`] produces.
pub fn attributes_type() -> DataType {
    static TYPE: LazyLock<DataType> =
        LazyLock::new(|| attributes_builder().finish().data_type().clone());
    TYPE.clone()
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn ts(name: &str) -> Field {
    Field::new(name, timestamp_type(), true)
}

fn attrs(name: &str) -> Field {
    Field::new(name, attributes_type(), true)
}

fn list_of(name: &str, item: DataType) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", item, true))),
        true,
    )
}

/// Fields of one span event.
pub fn event_fields() -> Fields {
    Fields::from(vec![ts("time"), utf8("name"), attrs("attributes")])
}

/// Fields of one span link.
pub fn link_fields() -> Fields {
    Fields::from(vec![
        utf8("trace_id"),
        utf8("span_id"),
        utf8("trace_state"),
        attrs("attributes"),
    ])
}

/// Fields of one metric exemplar.
pub fn exemplar_fields() -> Fields {
    Fields::from(vec![
        ts("time"),
        Field::new("value", DataType::Float64, true),
        utf8("trace_id"),
        utf8("span_id"),
        attrs("attributes"),
    ])
}

/// Fields of one summary quantile.
pub fn quantile_fields() -> Fields {
    Fields::from(vec![
        Field::new("quantile", DataType::Float64, true),
        Field::new("value", DataType::Float64, true),
    ])
}

static SPANS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("trace_id"),
        utf8("span_id"),
        utf8("parent_span_id"),
        utf8("trace_state"),
        utf8("service_name"),
        utf8("name"),
        utf8("kind"),
        ts("start_time"),
        ts("end_time"),
        Field::new("duration_ns", DataType::Int64, true),
        utf8("status_code"),
        utf8("status_message"),
        attrs("attributes"),
        attrs("resource_attributes"),
        utf8("scope_name"),
        utf8("scope_version"),
        list_of("events", DataType::Struct(event_fields())),
        list_of("links", DataType::Struct(link_fields())),
        Field::new("flags", DataType::UInt32, true),
        attrs("attribute_types"),
        attrs("resource_attribute_types"),
    ]))
});

static LOGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ts("timestamp"),
        ts("observed_timestamp"),
        utf8("trace_id"),
        utf8("span_id"),
        Field::new("severity_number", DataType::Int32, true),
        utf8("severity_text"),
        utf8("body"),
        utf8("service_name"),
        attrs("attributes"),
        attrs("resource_attributes"),
        utf8("scope_name"),
        utf8("scope_version"),
        utf8("event_name"),
        Field::new("flags", DataType::UInt32, true),
        attrs("attribute_types"),
        attrs("resource_attribute_types"),
        Field::new("log_id", DataType::UInt64, true),
    ]))
});

static METRICS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("metric_name"),
        utf8("metric_type"),
        utf8("unit"),
        utf8("description"),
        utf8("service_name"),
        ts("timestamp"),
        ts("start_timestamp"),
        attrs("attributes"),
        attrs("resource_attributes"),
        utf8("scope_name"),
        utf8("scope_version"),
        Field::new("value", DataType::Float64, true),
        Field::new("int_value", DataType::Int64, true),
        Field::new("is_monotonic", DataType::Boolean, true),
        utf8("temporality"),
        Field::new("count", DataType::UInt64, true),
        Field::new("sum", DataType::Float64, true),
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
        list_of("bucket_counts", DataType::UInt64),
        list_of("explicit_bounds", DataType::Float64),
        Field::new("scale", DataType::Int32, true),
        Field::new("zero_count", DataType::UInt64, true),
        Field::new("zero_threshold", DataType::Float64, true),
        Field::new("positive_offset", DataType::Int32, true),
        list_of("positive_bucket_counts", DataType::UInt64),
        Field::new("negative_offset", DataType::Int32, true),
        list_of("negative_bucket_counts", DataType::UInt64),
        list_of("quantile_values", DataType::Struct(quantile_fields())),
        list_of("exemplars", DataType::Struct(exemplar_fields())),
        Field::new("flags", DataType::UInt32, true),
        attrs("attribute_types"),
        attrs("resource_attribute_types"),
    ]))
});

/// Version of the three table schemas, written in every WAL segment's header. Bump it
/// when a column is added, removed or changes type; replay converts older rows with
/// [`conform`].
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// Bytes of memory the rows of `batch` occupy: the sizes of the slices of buffers its
/// columns use. Unlike [`RecordBatch::get_array_memory_size`], a buffer shared by several
/// columns (as in a batch decoded from one Arrow IPC message) is not counted once per
/// column, and an array's unused capacity is not counted.
pub(crate) fn batch_bytes(batch: &arrow::record_batch::RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size()) as u64
        })
        .sum()
}

/// `batch` with the columns of today's schema of `signal`'s table: columns are matched
/// by name, cast where their type changed, filled with nulls where they did not exist
/// yet; columns the table no longer has are dropped.
///
/// # Errors
/// When the time column is missing or a column cannot be cast.
pub(crate) fn conform(
    signal: Signal,
    batch: arrow::record_batch::RecordBatch,
) -> Result<arrow::record_batch::RecordBatch, String> {
    let schema = signal.schema();
    if batch.schema() == schema {
        return Ok(batch);
    }
    if batch.column_by_name(signal.time_column()).is_none() {
        return Err(format!("no time column `{}`", signal.time_column()));
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => arrow::compute::cast(column, field.data_type())
                .map_err(|e| format!("column `{}`: {e}", field.name())),
            None => Ok(arrow::array::new_null_array(
                field.data_type(),
                batch.num_rows(),
            )),
        })
        .collect::<Result<Vec<_>, String>>()?;
    arrow::record_batch::RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_tags_round_trip() {
        for s in Signal::ALL {
            assert_eq!(Signal::from_tag(s.tag()), Some(s));
            assert_eq!(Signal::from_name(s.name()), Some(s));
        }
        assert_eq!(Signal::from_tag(0), None);
        assert_eq!(Signal::from_tag(4), None);
    }

    #[test]
    fn every_signal_has_its_time_and_sort_columns() {
        for s in Signal::ALL {
            let schema = s.schema();
            assert!(schema.field_with_name(s.time_column()).is_ok());
            for c in s.sort_columns() {
                assert!(schema.field_with_name(c).is_ok(), "{s}: {c}");
            }
        }
    }
}
