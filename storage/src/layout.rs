//! The Parquet layout of part files, which flush and compaction both write: the writer
//! properties, the sort key, the row-group size and the partition paths.
//!
//! Rows are sorted by the table's sort key (trace id for spans; metric points grouped by
//! series, see `series_order`; log rows keep the order of their index's documents, see
//! `logindex::export`), split by
//! the hour of their time column into `{table}/{YYYY-MM-DD}/{HH}/` directories, and
//! written with zstd, page statistics, the sort order in the footer and a bloom filter
//! on `trace_id`, so that DataFusion prunes by time, by service and by trace id.

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::{SortColumn, lexsort_to_indices};
use arrow::datatypes::TimestampNanosecondType;
use arrow::record_batch::RecordBatch;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::catalog::FileEntry;
use crate::error::{Error, Result};
use crate::schema::Signal;

pub(crate) const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
/// Most rows in one row group.
pub(crate) const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Most rows in one data page of a spans file.
const SPAN_PAGE_ROWS: usize = 4096;
/// Most rows in one data page of a logs file: a search reads its newest hits back row
/// by row, and each hit decodes one page of every column.
const LOG_PAGE_ROWS: usize = 1024;

/// Writer settings; `rows` sizes the bloom filter (one per row group) so it stays small.
pub(crate) fn writer_properties(signal: Signal, rows: usize) -> Result<WriterProperties> {
    let schema = signal.schema();
    // Metric points are ordered by series inside a service, so only the prefix of their
    // key before the time is sorted across the file.
    let sorted_columns = match signal {
        Signal::Metrics => &signal.sort_columns()[..2],
        _ => signal.sort_columns(),
    };
    let sorting: Vec<SortingColumn> = sorted_columns
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: true,
        })
        .collect();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Trace ids and per-request attribute values repeat a few times each: keep them in
        // the dictionary for a whole row group instead of falling back to plain at 1 MiB.
        .set_dictionary_page_size_limit(16 << 20)
        // Row-group statistics everywhere; page-level statistics (the page index) only on
        // the columns queries prune by, since on attribute maps they cost more bytes than
        // they save reads.
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_sorting_columns((!sorting.is_empty()).then_some(sorting));
    // Times and durations are close to their neighbours once sorted: delta encoding
    // stores them in a few bits. Span ids are unique: a dictionary would only be dropped.
    for column in [
        "start_time",
        "end_time",
        "timestamp",
        "observed_timestamp",
        "start_timestamp",
        "duration_ns",
    ] {
        if schema.index_of(column).is_ok() {
            props = props
                .set_column_dictionary_enabled(ColumnPath::from(column), false)
                .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
        }
    }
    // Sample values change a little from one to the next inside a series: split into byte
    // streams, their exponents and high mantissa bytes compress well; a dictionary of
    // mostly distinct values would not.
    if signal == Signal::Metrics {
        props = props
            .set_column_dictionary_enabled(ColumnPath::from("value"), false)
            .set_column_encoding(ColumnPath::from("value"), Encoding::BYTE_STREAM_SPLIT);
        // No query prunes by a label map's entries (PromQL finds series through the
        // series index), and their min/max cost two string comparisons per label of
        // every sample at flush: a tenth of the ingest CPU at 100,000 series.
        let path = |c: &str| ColumnPath::new(c.split('.').map(str::to_string).collect());
        for map in [
            "attributes",
            "resource_attributes",
            "attribute_types",
            "resource_attribute_types",
        ] {
            for part in ["key", "value"] {
                props = props.set_column_statistics_enabled(
                    path(&format!("{map}.entries.{part}")),
                    EnabledStatistics::None,
                );
            }
        }
    }
    for column in ["span_id", "parent_span_id"] {
        if schema.index_of(column).is_ok() {
            props = props.set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
    }
    if signal == Signal::Logs {
        // A search reads its hits back a few rows at a time: a row group's dictionary of
        // mostly distinct lines or trace ids (megabytes) would be decoded for each, and
        // zstd compresses those pages as well without it (under 1 % more bytes). Log
        // ids count up in arrival order: deltas of one.
        for column in ["body", "trace_id"] {
            props = props.set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
        props = props
            .set_column_dictionary_enabled(ColumnPath::from("log_id"), false)
            .set_column_encoding(ColumnPath::from("log_id"), Encoding::DELTA_BINARY_PACKED);
        // Reading a hit back opens every column chunk of its row group, and each zstd
        // column chunk costs a compression and a decompression context: the bulk of a
        // rare-term search. zstd stays on the text (body and ids); the attribute maps,
        // whose repetition levels compress very well, get LZ4 (no context to make); the
        // rest is delta- or dictionary-encoded already and gains nothing from either.
        let path = |c: &str| ColumnPath::new(c.split('.').map(str::to_string).collect());
        for column in [
            "attributes.entries.key",
            "attributes.entries.value",
            "resource_attributes.entries.key",
            "resource_attributes.entries.value",
        ] {
            props = props.set_column_compression(path(column), Compression::LZ4_RAW);
        }
        for column in [
            "timestamp",
            "observed_timestamp",
            "severity_number",
            "severity_text",
            "service_name",
            "scope_name",
            "scope_version",
            "event_name",
            "flags",
            "log_id",
            "attribute_types.entries.key",
            "attribute_types.entries.value",
            "resource_attribute_types.entries.key",
            "resource_attribute_types.entries.value",
        ] {
            props = props.set_column_compression(path(column), Compression::UNCOMPRESSED);
        }
    }
    let pruned: &[&str] = match signal {
        // Log searches and SQL on logs prune by time and trace id.
        Signal::Logs => &["timestamp", "trace_id"],
        _ => &["trace_id"],
    };
    for column in signal.sort_columns().iter().chain(pruned.iter()) {
        if schema.index_of(column).is_ok() {
            props = props
                .set_column_statistics_enabled(ColumnPath::from(*column), EnabledStatistics::Page);
        }
    }
    if signal == Signal::Spans {
        // Pages of a few thousand rows: the trace view decodes the pages that hold its
        // trace, not a row group's worth of every column.
        props = props.set_data_page_row_count_limit(SPAN_PAGE_ROWS);
    }
    if signal == Signal::Logs {
        // The limit is checked after each write batch: keep batches no larger.
        props = props
            .set_data_page_row_count_limit(LOG_PAGE_ROWS)
            .set_write_batch_size(LOG_PAGE_ROWS);
    }
    if schema.index_of("trace_id").is_ok() && signal != Signal::Metrics {
        props = props
            .set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true)
            .set_column_bloom_filter_max_ndv(
                ColumnPath::from("trace_id"),
                rows.clamp(1, ROW_GROUP_ROWS) as u64,
            )
            .set_column_bloom_filter_fpp(ColumnPath::from("trace_id"), 0.01);
    }
    Ok(props.build())
}

/// The columns `batch` is sorted by, in order: the table's sort columns.
///
/// # Errors
/// When `batch` lacks a sort column.
fn sort_key(signal: Signal, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    let columns = signal
        .sort_columns()
        .iter()
        .map(|name| {
            batch.column_by_name(name).cloned().ok_or_else(|| {
                Error::from(arrow::error::ArrowError::SchemaError(format!(
                    "no column {name}"
                )))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(columns)
}

/// The rows of `batches` (batch, row) in the order of the table's sort key. Only the key
/// columns are concatenated; the rows themselves are gathered once, in this order, by
/// [`crate::gather::gather_batch`].
///
/// # Errors
/// When a batch lacks a sort column.
pub(crate) fn sorted_rows(signal: Signal, batches: &[RecordBatch]) -> Result<Vec<(usize, usize)>> {
    if signal == Signal::Metrics {
        return crate::series_order::metric_rows(batches);
    }
    let keys = batches
        .iter()
        .map(|b| sort_key(signal, b))
        .collect::<Result<Vec<_>>>()?;
    let width = keys.first().map_or(0, Vec::len);
    let columns = (0..width)
        .map(|i| {
            let parts: Vec<&dyn arrow::array::Array> = keys.iter().map(|k| k[i].as_ref()).collect();
            Ok(SortColumn {
                values: arrow::compute::concat(&parts)?,
                options: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut starts = Vec::with_capacity(batches.len());
    let mut total = 0usize;
    for b in batches {
        starts.push(total);
        total += b.num_rows();
    }
    let position = |global: usize| {
        let batch = starts.partition_point(|s| *s <= global) - 1;
        (batch, global - starts[batch])
    };
    if columns.is_empty() {
        return Ok((0..total).map(position).collect());
    }
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(indices
        .values()
        .iter()
        .map(|i| position(*i as usize))
        .collect())
}

/// The rows `order` (batch, row) of `batches` grouped by the hour of the time column
/// (NULL times go to hour 0), each group keeping the order it has in `order`.
pub(crate) fn by_hour(
    signal: Signal,
    batches: &[RecordBatch],
    order: Vec<(usize, usize)>,
) -> Result<BTreeMap<i64, Vec<(usize, usize)>>> {
    let times = batches
        .iter()
        .map(|b| {
            b.column_by_name(signal.time_column())
                .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
                .ok_or_else(|| arrow::error::ArrowError::SchemaError("no time column".into()))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let hour = |&(b, r): &(usize, usize)| {
        let t = if times[b].is_null(r) {
            0
        } else {
            times[b].value(r)
        };
        t.div_euclid(NANOS_PER_HOUR)
    };
    let mut groups: BTreeMap<i64, Vec<(usize, usize)>> = BTreeMap::new();
    match order.first().map(hour) {
        Some(first) if order.iter().all(|i| hour(i) == first) => {
            groups.insert(first, order);
        }
        _ => {
            for i in order {
                groups.entry(hour(&i)).or_default().push(i);
            }
        }
    }
    Ok(groups)
}

/// Directory of an hour partition, relative to the data directory.
pub(crate) fn partition_dir(signal: Signal, hour: i64) -> String {
    let secs = hour * 3600;
    let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    format!("{}/{}", signal.name(), dt.format("%Y-%m-%d/%H"))
}

/// The partition directory of a file, relative to the data directory.
pub(crate) fn partition_of(file: &FileEntry) -> &str {
    file.path.rsplit_once('/').map_or("", |(dir, _)| dir)
}
