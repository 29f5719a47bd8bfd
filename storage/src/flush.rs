//! Flush: the frozen head of one table written as part files. The rows are taken a
//! chunk at a time (bounded memory whatever the size of the head), sorted and split by
//! hour as the Parquet layout says (see [`crate::layout`]), and each piece written by a
//! [`PartWriter`] under a temporary name, fsynced and renamed into place. The catalog
//! commit that makes them visible is the store's (see `store::maintenance`).

use std::path::Path;

use arrow::record_batch::RecordBatch;

use crate::catalog::FileEntry;
use crate::error::Result;
use crate::gather::gather_batch;
use crate::layout::{by_hour, partition_dir, sorted_rows};
use crate::logindex::LogFields;
use crate::part_writer::{PartWriter, WriteLimits};
use crate::schema::Signal;

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
pub(crate) fn write_parts(
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
        let order = sorted_rows(signal, chunk)?;
        let schema = signal.schema();
        for (hour, indices) in by_hour(signal, chunk, order)? {
            let part = gather_batch(&schema, chunk, &indices)?;
            drop(indices);
            let name = if n == 0 {
                format!("{flush_id:012}.parquet")
            } else {
                format!("{flush_id:012}-{n:03}.parquet")
            };
            let rel_dir = partition_dir(signal, hour);
            outputs.push(format!("{rel_dir}/{name}"));
            let mut file = PartWriter::create(
                data_dir,
                signal,
                &rel_dir,
                &name,
                part.num_rows(),
                log_fields,
                limits.write,
            )?;
            if signal == Signal::Spans && crate::derived::end_time_derivable(&part)? {
                file.leave_out_end_time()?;
            }
            file.write(&part)?;
            entries.push(file.finish()?);
        }
    }
    Ok(entries)
}

/// Deletes the files a failed flush started (see [`write_parts`]): each Parquet file, its
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
        let agg = crate::span_aggregates::agg_path(&path);
        let removed = [&path, &tmp, &agg]
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
    use crate::layout::NANOS_PER_HOUR;
    use arrow::array::AsArray;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use periscope_otlp as otlp;
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
        let entries = write_parts(
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
        // Sorted by trace id (op0's trace is 0x01…, op2's 0x03…), not by time.
        let names = rows[0].column_by_name("name").unwrap().as_string::<i32>();
        assert_eq!(names.value(0), "op0");
        assert_eq!(names.value(1), "op2");
    }
}
