//! Parquet segment files: what a flush of the head writes.
//!
//! Rows are sorted by the table's sort key (service or metric name, then time; metric
//! points by metric, service, then series — a hash of their attribute maps — then time, so
//! each series' samples sit together and delta-encode), split by
//! the hour of their time column into `{table}/{YYYY-MM-DD}/{HH}/` directories, and
//! written with zstd, page statistics, the sort order in the footer and a bloom filter
//! on `trace_id`, so that DataFusion prunes by time, by service and by trace id. Each
//! file is written under a temporary name, fsynced and renamed into place.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use std::hash::{Hash, Hasher};

use arrow::array::{Array, AsArray, MapArray, UInt32Array, UInt64Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::TimestampNanosecondType;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::catalog::FileEntry;
use crate::error::{Error, Result};
use crate::logindex::{self, LogFields};
use crate::schema::Signal;
use crate::wal::sync_dir;

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Writer settings; `rows` sizes the bloom filter (one per row group) so it stays small.
fn writer_properties(signal: Signal, rows: usize) -> Result<WriterProperties> {
    let schema = signal.schema();
    // Metric points are ordered by series inside a service, so only the prefix of their
    // key before the time is sorted across the file.
    let sorted_columns = match signal {
        Signal::Metrics => &signal.sort_columns()[..2],
        _ => signal.sort_columns(),
    };
    let sorting = sorted_columns
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
        .set_sorting_columns(Some(sorting));
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
    }
    for column in ["span_id", "parent_span_id"] {
        if schema.index_of(column).is_ok() {
            props = props.set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
    }
    for column in signal.sort_columns().iter().chain(["trace_id"].iter()) {
        if schema.index_of(column).is_ok() {
            props = props
                .set_column_statistics_enabled(ColumnPath::from(*column), EnabledStatistics::Page);
        }
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

/// A hash of each row's attribute and resource attribute maps: rows of one series share it.
fn series_hashes(batch: &RecordBatch) -> UInt64Array {
    let maps: Vec<&MapArray> = ["attributes", "resource_attributes"]
        .iter()
        .filter_map(|n| batch.column_by_name(n))
        .filter_map(|c| c.as_any().downcast_ref::<MapArray>())
        .collect();
    (0..batch.num_rows())
        .map(|row| {
            let mut h = std::hash::DefaultHasher::new();
            for map in &maps {
                if map.is_valid(row) {
                    let entries = map.value(row);
                    if let (Some(k), Some(v)) = (
                        entries.column(0).as_string_opt::<i32>(),
                        entries.column(1).as_string_opt::<i32>(),
                    ) {
                        for i in 0..entries.len() {
                            k.value(i).hash(&mut h);
                            v.is_valid(i).then(|| v.value(i)).hash(&mut h);
                        }
                    }
                }
                0xffu8.hash(&mut h);
            }
            h.finish()
        })
        .collect()
}

/// Sorts `batch` by the table's sort key.
fn sort(signal: Signal, batch: &RecordBatch) -> Result<RecordBatch> {
    let mut columns = signal
        .sort_columns()
        .iter()
        .map(|name| {
            let values = batch.column_by_name(name).cloned().ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!("no column {name}"))
            })?;
            Ok(SortColumn {
                values,
                options: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if signal == Signal::Metrics {
        let time = columns.len() - 1;
        columns.insert(
            time,
            SortColumn {
                values: Arc::new(series_hashes(batch)),
                options: None,
            },
        );
    }
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// Row indices of `batch` grouped by the hour of the time column (NULL times go to hour 0).
fn by_hour(signal: Signal, batch: &RecordBatch) -> Result<BTreeMap<i64, Vec<u32>>> {
    let times = batch
        .column_by_name(signal.time_column())
        .ok_or_else(|| arrow::error::ArrowError::SchemaError("no time column".into()))?
        .as_primitive::<TimestampNanosecondType>();
    let mut groups: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for i in 0..times.len() {
        let t = if times.is_null(i) { 0 } else { times.value(i) };
        groups
            .entry(t.div_euclid(NANOS_PER_HOUR))
            .or_default()
            .push(i as u32);
    }
    Ok(groups)
}

fn time_range(signal: Signal, batch: &RecordBatch) -> (i64, i64) {
    let times = batch
        .column_by_name(signal.time_column())
        .map(|c| c.as_primitive::<TimestampNanosecondType>().clone());
    let Some(times) = times else { return (0, 0) };
    let min = arrow::compute::min(&times).unwrap_or(0);
    let max = arrow::compute::max(&times).unwrap_or(0);
    (min, max)
}

/// Directory of an hour partition, relative to the data directory.
fn partition_dir(signal: Signal, hour: i64) -> String {
    let secs = hour * 3600;
    let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    format!("{}/{}", signal.name(), dt.format("%Y-%m-%d/%H"))
}

/// Writes `batches` of one table as sorted, hour-partitioned Parquet files named after
/// `flush_id`, and returns their catalog entries. Nothing is written for no rows.
///
/// # Errors
/// When sorting, encoding or any file operation fails; files already written by this
/// call are then orphans that the next start-up removes.
pub fn write_files(
    data_dir: &Path,
    signal: Signal,
    batches: &[RecordBatch],
    flush_id: u64,
    log_fields: &LogFields,
) -> Result<Vec<FileEntry>> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows == 0 {
        return Ok(Vec::new());
    }
    let all = concat_batches(&signal.schema(), batches)?;
    let sorted = sort(signal, &all)?;
    drop(all);
    let groups = by_hour(signal, &sorted)?;
    let mut entries = Vec::new();
    for (hour, indices) in groups {
        let part = if indices.len() == sorted.num_rows() {
            sorted.clone()
        } else {
            take_record_batch(&sorted, &UInt32Array::from(indices))?
        };
        let props = writer_properties(signal, part.num_rows())?;
        let rel_dir = partition_dir(signal, hour);
        let dir = data_dir.join(&rel_dir);
        fs::create_dir_all(&dir).map_err(Error::io("create partition directory", &dir))?;
        let name = format!("{flush_id:012}.parquet");
        let rel = format!("{rel_dir}/{name}");
        let path = data_dir.join(&rel);
        let tmp = dir.join(format!("{name}.tmp"));
        let file = fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
        let mut writer = ArrowWriter::try_new(file, Arc::clone(&part.schema()), Some(props))?;
        writer.write(&part)?;
        let file = writer.into_inner()?;
        file.sync_all().map_err(Error::io("fsync", &tmp))?;
        let bytes = file.metadata().map_err(Error::io("stat", &tmp))?.len();
        fs::rename(&tmp, &path).map_err(Error::io("rename", &path))?;
        let index_bytes = if signal == Signal::Logs {
            let dir = logindex::index_path(&path);
            let size = logindex::build_file_index(&dir, log_fields, &part)?;
            sync_dir(&dir)?;
            size
        } else {
            0
        };
        sync_dir(&dir)?;
        let (min_time, max_time) = time_range(signal, &part);
        entries.push(FileEntry {
            signal: signal.name().to_string(),
            path: rel,
            rows: part.num_rows() as u64,
            bytes,
            min_time,
            max_time,
            index_bytes,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn rows_are_split_by_hour_sorted_and_readable() {
        let hour = NANOS_PER_HOUR as u64;
        let base = 490_000 * hour;
        let spans = [base + 5, base + hour + 1, base + 1]
            .iter()
            .enumerate()
            .map(|(i, t)| Span {
                trace_id: vec![i as u8 + 1; 16],
                span_id: vec![1; 8],
                name: format!("op{i}"),
                start_time_unix_nano: *t,
                end_time_unix_nano: *t + 10,
                ..Default::default()
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let batch = otlp::spans(&req).unwrap().batch.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let entries =
            write_files(dir.path(), Signal::Spans, &[batch], 9, &LogFields::new()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].rows, 2);
        assert_eq!(entries[0].min_time, (base + 1) as i64);
        assert_eq!(entries[0].max_time, (base + 5) as i64);
        assert!(
            entries[0].path.starts_with("spans/2025-"),
            "{}",
            entries[0].path
        );
        assert!(entries[0].path.ends_with("000000000009.parquet"));
        let file = fs::File::open(dir.path().join(&entries[0].path)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let rows: Vec<RecordBatch> = reader.collect::<std::result::Result<_, _>>().unwrap();
        let names = rows[0].column_by_name("name").unwrap().as_string::<i32>();
        assert_eq!(names.value(0), "op2");
        assert_eq!(names.value(1), "op0");
    }
}
