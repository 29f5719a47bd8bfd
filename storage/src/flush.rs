//! Flush: the frozen head of one table written as part files. The rows are taken a
//! chunk at a time (bounded memory whatever the size of the head), sorted and split by
//! hour as the Parquet layout says (see [`crate::layout`]), and each piece written by a
//! [`PartWriter`] under a temporary name, fsynced and renamed into place. The catalog
//! commit that makes them visible is the store's (see `store::maintenance`).

use std::fs;
use std::ops::Range;
use std::path::Path;

use arrow::record_batch::RecordBatch;

use crate::catalog::FileEntry;
use crate::error::{Error, Result};
use crate::gather::gather_batch;
use crate::layout::{NANOS_PER_HOUR, by_hour, partition_dir, sorted_rows};
use crate::logindex::{self, HeadIndex, LogFields};
use crate::part_writer::{LogIndex, PartWriter, WriteLimits};
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

/// Splits `batches` into runs of about `chunk_bytes` each (a batch is never split), as
/// index ranges.
fn chunks(batches: &[RecordBatch], chunk_bytes: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0u64);
    for (i, b) in batches.iter().enumerate() {
        let bytes = crate::schema::batch_bytes(b);
        if i > start && size + bytes > chunk_bytes {
            out.push(start..i);
            (start, size) = (i, 0);
        }
        size += bytes;
    }
    if start < batches.len() {
        out.push(start..batches.len());
    }
    out
}

/// The head's log index, for `logs` files to take their documents from instead of
/// indexing their rows again (see [`logindex::export`]).
#[derive(Clone, Copy)]
pub(crate) struct FromHead<'a> {
    /// The head index.
    pub index: &'a HeadIndex,
    /// The sequence number of each batch written, in order.
    pub seqs: &'a [u64],
}

/// Writes `batches` of one table as sorted, hour-partitioned Parquet files named after
/// `flush_id`, and returns their catalog entries. Nothing is written for no rows. The
/// rows are taken a chunk at a time, so the memory a flush needs besides its input is
/// bounded by `limits`, whatever the size of the head. A `logs` file copies its index
/// from `head` when given (and the head index holds all of its rows), and indexes its
/// rows otherwise.
///
/// The path (relative to `data_dir`) of every file started is added to `outputs`, for
/// [`remove_outputs`] to delete if the flush fails.
///
/// # Errors
/// When sorting, encoding or any file operation fails.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_parts(
    data_dir: &Path,
    signal: Signal,
    batches: &[RecordBatch],
    flush_id: u64,
    log_fields: &LogFields,
    head: Option<FromHead<'_>>,
    limits: FlushLimits,
    outputs: &mut Vec<String>,
) -> Result<Vec<FileEntry>> {
    let mut entries = Vec::new();
    for (n, range) in chunks(batches, limits.chunk_bytes).into_iter().enumerate() {
        let chunk = &batches[range.clone()];
        let rows: usize = chunk.iter().map(|b| b.num_rows()).sum();
        if rows == 0 {
            continue;
        }
        let name = if n == 0 {
            format!("{flush_id:012}.parquet")
        } else {
            format!("{flush_id:012}-{n:03}.parquet")
        };
        let seqs = head
            .filter(|_| signal == Signal::Logs)
            .and_then(|h| h.seqs.get(range.clone()).map(|seqs| (h.index, seqs)))
            .filter(|(index, seqs)| match (seqs.first(), seqs.last()) {
                (Some(lo), Some(hi)) => index.sync(*lo..=*hi),
                _ => false,
            });
        let order = sorted_rows(signal, chunk)?;
        let schema = signal.schema();
        for (hour, indices) in by_hour(signal, chunk, order)? {
            let rel_dir = partition_dir(signal, hour);
            outputs.push(format!("{rel_dir}/{name}"));
            let part = Part {
                data_dir,
                signal,
                rel_dir: &rel_dir,
                name: &name,
                limits: limits.write,
            };
            let copied = match seqs {
                Some((index, seqs)) => {
                    part.copy_head_index(index, seqs, chunk, hour, indices.len())?
                }
                None => None,
            };
            entries.push(match copied {
                Some((file, order)) => {
                    drop(indices);
                    let rows = gather_batch(&schema, chunk, &order)?;
                    drop(order);
                    part.write(file, &rows)?
                }
                None => {
                    let rows = gather_batch(&schema, chunk, &indices)?;
                    drop(indices);
                    let file = part.create(LogIndex::Build(log_fields), rows.num_rows())?;
                    part.write(file, &rows)?
                }
            });
        }
    }
    Ok(entries)
}

/// Rows of a chunk, (batch, row), in the order they are written.
type Rows = Vec<(usize, usize)>;

/// One file of a flush.
struct Part<'a> {
    data_dir: &'a Path,
    signal: Signal,
    rel_dir: &'a str,
    name: &'a str,
    limits: WriteLimits,
}

impl Part<'_> {
    fn create(&self, index: LogIndex<'_>, rows: usize) -> Result<PartWriter> {
        PartWriter::create(
            self.data_dir,
            self.signal,
            self.rel_dir,
            self.name,
            rows,
            index,
            self.limits,
        )
    }

    fn write(&self, mut file: PartWriter, rows: &RecordBatch) -> Result<FileEntry> {
        if self.signal == Signal::Spans && crate::derived::end_time_derivable(rows)? {
            file.leave_out_end_time()?;
        }
        file.write(rows)?;
        file.finish()
    }

    /// Starts the file with the head index's documents of its rows (the `expected` rows
    /// of `chunk`, batches `seqs`, in `hour`) as its index, and returns it with the rows
    /// in the order of those documents; `None` (and no index left behind) when the head
    /// index does not hold exactly those rows.
    fn copy_head_index(
        &self,
        head: &HeadIndex,
        seqs: &[u64],
        chunk: &[RecordBatch],
        hour: i64,
        expected: usize,
    ) -> Result<Option<(PartWriter, Rows)>> {
        let (Some(lo), Some(hi)) = (seqs.first(), seqs.last()) else {
            return Ok(None);
        };
        let file = self.create(LogIndex::Given, expected)?;
        let dir = file.index_dir();
        let start = hour.saturating_mul(NANOS_PER_HOUR);
        let locators = logindex::export::export(
            head.index(),
            &dir,
            *lo..=*hi,
            start..start.saturating_add(NANOS_PER_HOUR),
        )?;
        let order = (locators.len() == expected)
            .then(|| {
                locators
                    .iter()
                    .map(|l| {
                        let batch = seqs.binary_search(&(l >> 32)).ok()?;
                        let row = (l & 0xFFFF_FFFF) as usize;
                        (row < chunk[batch].num_rows()).then_some((batch, row))
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .flatten();
        match order {
            Some(order) => Ok(Some((file, order))),
            None => {
                tracing::warn!(
                    file = %dir.display(),
                    expected,
                    found = locators.len(),
                    "The head log index lacks rows of a flushed file; indexing them again."
                );
                drop(file);
                fs::remove_dir_all(&dir).map_err(Error::io("remove", &dir))?;
                Ok(None)
            }
        }
    }
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
        let series = crate::series_index::series_path(&path);
        let removed = [&path, &tmp, &agg, &series]
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
            None,
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

    /// Writes `batch` as logs batch `seq` with `head` as the head index; returns whether
    /// the file's index was copied from the head and how many rows hold "disk".
    fn flush_logs(head: &HeadIndex, seq: u64, batch: RecordBatch) -> (bool, u64) {
        let dir = tempfile::tempdir().unwrap();
        let entries = write_parts(
            dir.path(),
            Signal::Logs,
            &[batch],
            3,
            &LogFields::new(),
            Some(FromHead {
                index: head,
                seqs: &[seq],
            }),
            TEST_LIMITS,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(entries.len(), 1);
        let index_dir = logindex::index_path(&dir.path().join(&entries[0].path));
        let copied = logindex::rows_in_doc_order(&index_dir);
        let index = logindex::file::open(&index_dir).unwrap();
        let searcher = index.reader().unwrap().searcher();
        let fields = LogFields::new();
        let term = tantivy::Term::from_field_text(fields.body, "disk");
        let query = tantivy::query::TermQuery::new(term, tantivy::schema::IndexRecordOption::Basic);
        let found = searcher
            .search(&query, &logindex::Collect::any_time(10, copied))
            .unwrap();
        // Every hit points at a row holding the word.
        let file = fs::File::open(dir.path().join(&entries[0].path)).unwrap();
        let rows: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        let bodies = rows[0].column_by_name("body").unwrap().as_string::<i32>();
        for hit in &found.hits {
            assert!(bodies.value(hit.locator as usize).contains("disk"));
        }
        (copied, found.total)
    }

    #[test]
    fn a_logs_file_copies_the_head_index_only_when_it_holds_exactly_its_rows() {
        use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
        let head = HeadIndex::start(
            LogFields::new(),
            15_000_000,
            Gauge::default(),
            Counter::default(),
        )
        .unwrap();
        let indexed = crate::store::tests::logs(&["disk full", "cpu hot", "disk ok"]);
        head.add(7, indexed.clone());
        assert_eq!(flush_logs(&head, 7, indexed), (true, 2));
        // The head index holds other rows under that number: the file indexes its own.
        let other = crate::store::tests::logs(&["fan", "disk gone", "disk ok", "disk", "net"]);
        assert_eq!(flush_logs(&head, 7, other), (false, 3));
    }
}
