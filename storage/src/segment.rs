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
use std::path::Path;
use std::sync::Arc;

use std::hash::{Hash, Hasher};

use arrow::array::{Array, ArrayRef, AsArray, MapArray, UInt32Array, UInt64Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::TimestampNanosecondType;
use arrow::record_batch::RecordBatch;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::catalog::FileEntry;
use crate::error::{Error, Result};
use crate::filewriter::{FileWriter, WriteLimits};
use crate::logindex::LogFields;
use crate::schema::Signal;

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
/// Most rows in one row group.
pub(crate) const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Writer settings; `rows` sizes the bloom filter (one per row group) so it stays small.
pub(crate) fn writer_properties(signal: Signal, rows: usize) -> Result<WriterProperties> {
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

/// The columns `batch` is sorted by, in order: the table's sort columns, with metric
/// points' series hash before the time.
///
/// # Errors
/// When `batch` lacks a sort column.
fn sort_key(signal: Signal, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    let mut columns = signal
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
    if signal == Signal::Metrics {
        let time = columns.len() - 1;
        columns.insert(time, Arc::new(series_hashes(batch)));
    }
    Ok(columns)
}

/// Sorts `batch` by the table's sort key.
pub(crate) fn sort(signal: Signal, batch: &RecordBatch) -> Result<RecordBatch> {
    let columns: Vec<SortColumn> = sort_key(signal, batch)?
        .into_iter()
        .map(|values| SortColumn {
            values,
            options: None,
        })
        .collect();
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

/// Directory of an hour partition, relative to the data directory.
pub(crate) fn partition_dir(signal: Signal, hour: i64) -> String {
    let secs = hour * 3600;
    let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    format!("{}/{}", signal.name(), dt.format("%Y-%m-%d/%H"))
}

/// How much memory a flush may use besides the rows it writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlushLimits {
    /// Rows are sorted and written this many (Arrow) bytes at a time; each chunk becomes
    /// its own files, which compaction later merges.
    pub chunk_bytes: u64,
    /// Limits of each file written.
    pub write: WriteLimits,
}

/// Splits `batches` into runs of about `chunk_bytes` each (a batch is never split).
fn chunks(batches: &[RecordBatch], chunk_bytes: u64) -> Vec<&[RecordBatch]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0u64);
    for (i, b) in batches.iter().enumerate() {
        let bytes = crate::schema::batch_bytes(b);
        if i > start && size + bytes > chunk_bytes {
            out.push(&batches[start..i]);
            (start, size) = (i, 0);
        }
        size += bytes;
    }
    if start < batches.len() {
        out.push(&batches[start..]);
    }
    out
}

/// Writes `batches` of one table as sorted, hour-partitioned Parquet files named after
/// `flush_id`, and returns their catalog entries. Nothing is written for no rows. The
/// rows are taken a chunk at a time, so the memory a flush needs besides its input is
/// bounded by `limits`, whatever the size of the head.
///
/// The path (relative to `data_dir`) of every file started is added to `outputs`, for
/// [`remove_outputs`] to delete if the flush fails.
///
/// # Errors
/// When sorting, encoding or any file operation fails.
pub(crate) fn write_files(
    data_dir: &Path,
    signal: Signal,
    batches: &[RecordBatch],
    flush_id: u64,
    log_fields: &LogFields,
    limits: FlushLimits,
    outputs: &mut Vec<String>,
) -> Result<Vec<FileEntry>> {
    let mut entries = Vec::new();
    for (n, chunk) in chunks(batches, limits.chunk_bytes).into_iter().enumerate() {
        let rows: usize = chunk.iter().map(|b| b.num_rows()).sum();
        if rows == 0 {
            continue;
        }
        let all = concat_batches(&signal.schema(), chunk)?;
        let sorted = sort(signal, &all)?;
        drop(all);
        let groups = by_hour(signal, &sorted)?;
        for (hour, indices) in groups {
            let part = if indices.len() == sorted.num_rows() {
                sorted.clone()
            } else {
                take_record_batch(&sorted, &UInt32Array::from(indices))?
            };
            let name = if n == 0 {
                format!("{flush_id:012}.parquet")
            } else {
                format!("{flush_id:012}-{n:03}.parquet")
            };
            let rel_dir = partition_dir(signal, hour);
            outputs.push(format!("{rel_dir}/{name}"));
            let mut file = FileWriter::create(
                data_dir,
                signal,
                &rel_dir,
                &name,
                part.num_rows(),
                log_fields,
                limits.write,
            )?;
            file.write(&part)?;
            entries.push(file.finish()?);
        }
    }
    Ok(entries)
}

/// Deletes the files a failed flush started (see [`write_files`]): each Parquet file, its
/// temporary file and its log index. Files that are not there are skipped; a file that
/// cannot be deleted is logged and left for the next start, which removes orphans.
pub(crate) fn remove_outputs(data_dir: &Path, outputs: &[String]) {
    for rel in outputs {
        let path = data_dir.join(rel);
        let tmp = path.with_file_name(format!(
            "{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let index = crate::logindex::index_path(&path);
        let removed = [&path, &tmp]
            .into_iter()
            .map(std::fs::remove_file)
            .chain([std::fs::remove_dir_all(&index)])
            .filter(|r| {
                r.as_ref()
                    .is_err_and(|e| e.kind() != std::io::ErrorKind::NotFound)
            })
            .collect::<Vec<_>>();
        if let Some(Err(error)) = removed.into_iter().next() {
            tracing::warn!(%error, path = %path.display(), "Could not delete the output of a failed flush.");
        }
    }
}

/// Limits large enough not to matter in unit tests.
#[cfg(test)]
pub(crate) const TEST_LIMITS: FlushLimits = FlushLimits {
    chunk_bytes: 1 << 30,
    write: WriteLimits {
        row_group_bytes: 1 << 30,
        index_bytes: 16 << 20,
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::fs;

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
        let entries = write_files(
            dir.path(),
            Signal::Spans,
            &[batch],
            9,
            &LogFields::new(),
            TEST_LIMITS,
            &mut Vec::new(),
        )
        .unwrap();
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
