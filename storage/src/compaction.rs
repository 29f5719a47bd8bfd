//! Compaction: the small files that frequent flushes leave in an hour partition are
//! merged into one large sorted file in the background.
//!
//! Each input file is sorted by the table's sort key, so a merge streams them: one batch
//! per input in memory, a k-way merge on Arrow's row format, written through a
//! [`FileWriter`] with bounded row groups. The output becomes visible in the same atomic
//! catalog write that removes the inputs (see `Store::compact`), so a query sees every
//! row once, before or after; the inputs are deleted after a grace period for queries
//! still reading them. A crash before that catalog write leaves an orphan output, after
//! it orphan inputs: either way the next start removes the orphans and no row is lost or
//! doubled.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::compute::concat_batches;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::catalog::FileEntry;
use crate::error::{Error, Result};
use crate::filewriter::{FileWriter, WriteLimits};
use crate::logindex::{self, LogFields};
use crate::schema::Signal;
use crate::segment::sort_key;

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
/// Rows the merge collects before handing them to the writer.
const OUT_ROWS: usize = 8192;

/// When and what to compact.
#[derive(Debug, Clone, Copy)]
pub struct CompactionConfig {
    /// How often partitions are checked; zero turns compaction off.
    pub interval: Duration,
    /// A partition of the current or last hour is compacted once it has this many small
    /// files; an older one as soon as it has two.
    pub min_files: usize,
    /// Files from this size on are left alone; merging stops adding inputs once their
    /// total reaches it.
    pub target_bytes: u64,
    /// Most files merged at once (each costs one batch of memory).
    pub max_inputs: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            interval: Duration::from_secs(60),
            min_files: 8,
            target_bytes: 256 << 20,
            max_inputs: 32,
        }
    }
}

/// The partition directory of a file, relative to the data directory.
pub(crate) fn partition_of(file: &FileEntry) -> &str {
    file.path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The merges worth doing among `files`, each a list of files of one partition.
pub(crate) fn plan(
    files: &[FileEntry],
    config: &CompactionConfig,
    now: i64,
) -> Vec<Vec<FileEntry>> {
    let mut partitions: BTreeMap<(&str, &str), Vec<&FileEntry>> = BTreeMap::new();
    for f in files {
        if f.bytes < config.target_bytes / 2 {
            partitions
                .entry((f.signal.as_str(), partition_of(f)))
                .or_default()
                .push(f);
        }
    }
    let mut plans = Vec::new();
    for (_, small) in partitions {
        let hour_end = (small[0].min_time.div_euclid(NANOS_PER_HOUR) + 1) * NANOS_PER_HOUR;
        let cold = hour_end + NANOS_PER_HOUR < now;
        let needed = if cold { 2 } else { config.min_files.max(2) };
        if small.len() < needed {
            continue;
        }
        let mut chosen = Vec::new();
        let mut total = 0;
        for f in small {
            if chosen.len() >= config.max_inputs.max(2)
                || (chosen.len() >= 2 && total >= config.target_bytes)
            {
                break;
            }
            total += f.bytes;
            chosen.push(f.clone());
        }
        plans.push(chosen);
    }
    plans
}

/// One input of a merge: its reader and the batch being merged.
struct Cursor {
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    rows: Rows,
    pos: usize,
}

impl Cursor {
    /// Opens `path`, reading batches of about `batch_bytes`; `None` when it has no rows.
    fn open(
        path: &Path,
        signal: Signal,
        converter: &RowConverter,
        batch_bytes: usize,
    ) -> Result<Option<Cursor>> {
        let file = fs::File::open(path).map_err(Error::io("open", path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let meta = builder.metadata();
        let rows: i64 = meta.row_groups().iter().map(|g| g.num_rows()).sum();
        let bytes: i64 = meta.row_groups().iter().map(|g| g.total_byte_size()).sum();
        let row_bytes = (bytes / rows.max(1)).max(1) as usize;
        let batch_rows = (batch_bytes / row_bytes).clamp(16, OUT_ROWS);
        let reader = builder.with_batch_size(batch_rows).build()?;
        let mut cursor = Cursor {
            reader,
            batch: RecordBatch::new_empty(signal.schema()),
            rows: converter.empty_rows(0, 0),
            pos: 0,
        };
        Ok(cursor.next_batch(signal, converter)?.then_some(cursor))
    }

    /// Loads the next non-empty batch; false at the end of the file.
    fn next_batch(&mut self, signal: Signal, converter: &RowConverter) -> Result<bool> {
        for batch in self.reader.by_ref() {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            self.rows = converter.convert_columns(&sort_key(signal, &batch)?)?;
            self.batch = batch;
            self.pos = 0;
            return Ok(true);
        }
        Ok(false)
    }
}

/// What a merge needs besides its inputs.
pub(crate) struct MergeTarget<'a> {
    /// Partition directory of the output, relative to the data directory.
    pub rel_dir: &'a str,
    /// File name of the output.
    pub name: &'a str,
    /// Schema of the `logs` index.
    pub log_fields: &'a LogFields,
    /// Limits of the file written.
    pub limits: WriteLimits,
    /// Memory for the batches read, over all inputs.
    pub read_bytes: usize,
    /// Set when the server is stopping: the merge gives up and removes its output.
    pub stop: &'a AtomicBool,
}

/// Merges `inputs` (sorted files of one partition of `signal`) into one sorted file.
/// Returns `None` when stopped before the end (nothing is left behind then).
///
/// # Errors
/// When an input cannot be read or the output cannot be written; the partial output is
/// an orphan that the next start removes.
pub(crate) fn merge(
    data_dir: &Path,
    signal: Signal,
    inputs: &[FileEntry],
    target: &MergeTarget<'_>,
) -> Result<Option<FileEntry>> {
    let schema = signal.schema();
    let mut fields: Vec<SortField> = signal
        .sort_columns()
        .iter()
        .map(|name| {
            schema
                .field_with_name(name)
                .map(|f| SortField::new(f.data_type().clone()))
        })
        .collect::<std::result::Result<_, _>>()?;
    if signal == Signal::Metrics {
        let time = fields.len() - 1;
        fields.insert(time, SortField::new(DataType::UInt64));
    }
    let converter = RowConverter::new(fields)?;
    let batch_bytes = target.read_bytes / (inputs.len() + 1);
    let mut cursors = Vec::with_capacity(inputs.len());
    for input in inputs {
        let path = data_dir.join(&input.path);
        if let Some(c) = Cursor::open(&path, signal, &converter, batch_bytes)? {
            cursors.push(c);
        }
    }
    let expected: u64 = inputs.iter().map(|f| f.rows).sum();
    let mut out = FileWriter::create(
        data_dir,
        signal,
        target.rel_dir,
        target.name,
        expected as usize,
        target.log_fields,
        target.limits,
    )?;
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    while !cursors.is_empty() {
        if target.stop.load(Ordering::Relaxed) {
            drop(out);
            remove_output(data_dir, target)?;
            return Ok(None);
        }
        // The cursor with the smallest current row, and the runner-up's row as a bound.
        let mut min = 0;
        let mut second: Option<usize> = None;
        for i in 1..cursors.len() {
            let row = cursors[i].rows.row(cursors[i].pos);
            if row < cursors[min].rows.row(cursors[min].pos) {
                second = Some(min);
                min = i;
            } else if second.is_none_or(|s| row < cursors[s].rows.row(cursors[s].pos)) {
                second = Some(i);
            }
        }
        let bound: Option<OwnedRow> = second.map(|s| cursors[s].rows.row(cursors[s].pos).owned());
        let c = &mut cursors[min];
        let start = c.pos;
        let end = match &bound {
            None => c.batch.num_rows(),
            Some(bound) => {
                // Every row up to the runner-up's comes next: the input is sorted.
                let (mut lo, mut hi) = (start + 1, c.batch.num_rows());
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if c.rows.row(mid) <= bound.row() {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                lo
            }
        };
        pending.push(c.batch.slice(start, end - start));
        pending_rows += end - start;
        c.pos = end;
        if c.pos == c.batch.num_rows() && !c.next_batch(signal, &converter)? {
            cursors.swap_remove(min);
        }
        if pending_rows >= OUT_ROWS {
            out.write(&concat_batches(&schema, &pending)?)?;
            pending.clear();
            pending_rows = 0;
        }
    }
    if !pending.is_empty() {
        out.write(&concat_batches(&schema, &pending)?)?;
    }
    if out.rows() != expected {
        return Err(Error::Schema(format!(
            "compaction read {} rows from files that the catalog says hold {expected}",
            out.rows()
        )));
    }
    Ok(Some(out.finish()?))
}

/// Removes the output of a merge that was given up (temporary file and index).
fn remove_output(data_dir: &Path, target: &MergeTarget<'_>) -> Result<()> {
    let path = data_dir.join(target.rel_dir).join(target.name);
    let tmp = data_dir
        .join(target.rel_dir)
        .join(format!("{}.tmp", target.name));
    for file in [&path, &tmp] {
        match fs::remove_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", file)(e)),
        }
    }
    let index = logindex::index_path(&path);
    if index.exists() {
        fs::remove_dir_all(&index).map_err(Error::io("remove", &index))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &str, n: u32, bytes: u64, hour: i64) -> FileEntry {
        FileEntry {
            signal: "spans".into(),
            path: format!("spans/{dir}/{n:012}.parquet"),
            rows: 10,
            bytes,
            min_time: hour * NANOS_PER_HOUR,
            max_time: hour * NANOS_PER_HOUR + 5,
            index_bytes: 0,
        }
    }

    #[test]
    fn plans_merge_small_files_of_busy_or_cold_partitions_only() {
        let config = CompactionConfig {
            min_files: 3,
            target_bytes: 1000,
            max_inputs: 4,
            ..CompactionConfig::default()
        };
        let now = 100 * NANOS_PER_HOUR + 1;
        let files = vec![
            // The current hour: two small files are not enough yet, a big one never counts.
            file("h100", 1, 10, 100),
            file("h100", 2, 10, 100),
            file("h100", 3, 900, 100),
            // Hour 97 is cold: two small files are enough.
            file("h97", 1, 10, 97),
            file("h97", 2, 10, 97),
            // Hour 99: six small files, at most four merged at once.
            file("h99", 1, 100, 99),
            file("h99", 2, 100, 99),
            file("h99", 3, 100, 99),
            file("h99", 4, 100, 99),
            file("h99", 5, 100, 99),
            file("h99", 6, 100, 99),
        ];
        let plans = plan(&files, &config, now);
        let names: Vec<Vec<&str>> = plans
            .iter()
            .map(|p| p.iter().map(|f| f.path.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            vec![
                vec![
                    "spans/h97/000000000001.parquet",
                    "spans/h97/000000000002.parquet"
                ],
                vec![
                    "spans/h99/000000000001.parquet",
                    "spans/h99/000000000002.parquet",
                    "spans/h99/000000000003.parquet",
                    "spans/h99/000000000004.parquet"
                ],
            ]
        );
        // Inputs stop once their total reaches the target size.
        let config = CompactionConfig {
            target_bytes: 200,
            ..config
        };
        let plans = plan(&files[5..], &config, now);
        assert_eq!(plans.len(), 0, "100-byte files are not small against 200");
        let config = CompactionConfig {
            target_bytes: 300,
            ..config
        };
        let plans = plan(&files[5..], &config, now);
        assert_eq!(plans[0].len(), 3);
    }
}
