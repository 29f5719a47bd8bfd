//! Compaction: the small files that frequent flushes leave in an hour partition are
//! merged into one large sorted file in the background.
//!
//! A merge reads the inputs oldest first, a batch at a time, and writes them through a
//! [`PartWriter`] as row groups of consecutive rows, each sorted by the table's sort key:
//! memory holds one row group's rows. Metrics files are merged series by series instead
//! (see `series_merge`). The output becomes visible in the same atomic
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

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::catalog::FileEntry;
use crate::error::{Error, Result};
use crate::layout::{NANOS_PER_HOUR, ROW_GROUP_ROWS, partition_of, sorted_rows};
use crate::logindex::{self, LogFields};
use crate::part_writer::{LogIndex, PartWriter, WriteLimits};
use crate::schema::Signal;

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
    /// Memory for the rows of one output row group before they are sorted.
    pub read_bytes: usize,
    /// Set when the server is stopping: the merge gives up and removes its output.
    pub stop: &'a AtomicBool,
}

/// Merges `inputs` (files of one partition of `signal`) into one file. The inputs are
/// read oldest first and their rows gathered into row groups of up to
/// [`ROW_GROUP_ROWS`] rows (or `read_bytes` of memory), each sorted by the table's sort key
/// before it is written: every row group then covers a slice of time and is sorted
/// inside, as a flushed file is. (A sort of the whole partition by service would split
/// each trace's spans over many row groups, and trace and span ids then compress a fifth
/// worse.) Returns `None` when stopped before the end (nothing is left behind then).
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
    let merged = write_merged(data_dir, signal, inputs, target);
    if !matches!(merged, Ok(Some(_))) {
        // Given up or failed: leave no partial output behind.
        remove_output(data_dir, target)?;
    }
    merged
}

/// The work of [`merge`], which cleans up after it.
fn write_merged(
    data_dir: &Path,
    signal: Signal,
    inputs: &[FileEntry],
    target: &MergeTarget<'_>,
) -> Result<Option<FileEntry>> {
    let schema = signal.schema();
    let mut ordered: Vec<&FileEntry> = inputs.iter().collect();
    ordered.sort_by(|a, b| (a.min_time, &a.path).cmp(&(b.min_time, &b.path)));
    let expected: u64 = inputs.iter().map(|f| f.rows).sum();
    // Log files whose rows are in the order of their index's documents: the output
    // concatenates their rows and merges their indexes in the same order, instead of
    // indexing the rows again.
    let input_indexes: Vec<_> = ordered
        .iter()
        .map(|f| logindex::index_path(&data_dir.join(&f.path)))
        .collect();
    let merge_indexes =
        signal == Signal::Logs && input_indexes.iter().all(|d| logindex::rows_in_doc_order(d));
    let mut out = PartWriter::create(
        data_dir,
        signal,
        target.rel_dir,
        target.name,
        (expected as usize).min(ROW_GROUP_ROWS),
        if merge_indexes {
            LogIndex::Given
        } else {
            LogIndex::Build(target.log_fields)
        },
        target.limits,
    )?;
    if merge_indexes {
        let dir = out.index_dir();
        let indexes = input_indexes
            .iter()
            .map(|d| logindex::file::open(d))
            .collect::<Result<Vec<_>>>()?;
        let docs = logindex::export::merge(&indexes, &dir)?;
        if docs != expected {
            return Err(Error::Compaction {
                partition: target.rel_dir.to_string(),
                message: format!(
                    "the indexes of files holding {expected} rows hold {docs} documents; check the files of the partition"
                ),
            });
        }
    }
    if signal == Signal::Spans && !inputs_store_end_time(data_dir, inputs)? {
        // No input stores `end_time`: nor does the output (it is derived on read).
        out.leave_out_end_time()?;
    }
    if signal == Signal::Spans {
        // The output's span aggregates: the inputs' summed, plus what their deferred
        // spans find among each other's rows.
        let summaries = inputs
            .iter()
            .map(|f| crate::span_aggregates::load(data_dir, f))
            .collect::<Result<Vec<_>>>()?;
        out.merging_span_aggregates(&summaries);
    }
    if signal == Signal::Metrics {
        // Metric points are merged series by series (see `series_merge`).
        let limits = crate::series_merge::SeriesMerge {
            read_bytes: target.read_bytes,
            stop: target.stop,
        };
        if !crate::series_merge::merge(data_dir, &ordered, &schema, &mut out, &limits)? {
            return Ok(None);
        }
        return finish_checked(out, expected, target);
    }
    let mut group: Vec<RecordBatch> = Vec::new();
    let (mut group_rows, mut group_bytes) = (0usize, 0usize);
    for input in ordered {
        let path = data_dir.join(&input.path);
        let file = fs::File::open(&path).map_err(Error::io("open", &path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let meta = builder.metadata();
        let bytes: i64 = meta.row_groups().iter().map(|g| g.total_byte_size()).sum();
        let row_bytes = (bytes / (input.rows.max(1) as i64)).max(1) as usize;
        let batch_rows = (target.read_bytes / 8 / row_bytes).clamp(16, 8192);
        for batch in builder.with_batch_size(batch_rows).build()? {
            if target.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            // Inputs with and without `end_time` meet here: each batch takes the table's
            // columns (the output leaves derived ones out again when it may).
            let mut batch = crate::derived::conform(&batch?, &schema)?;
            while batch.num_rows() > 0 {
                // Fill the row group up to its row limit exactly: the writer would split a
                // larger one and leave a sliver of a row group behind.
                let take = batch.num_rows().min(ROW_GROUP_ROWS - group_rows);
                group.push(batch.slice(0, take));
                batch = batch.slice(take, batch.num_rows() - take);
                group_rows += take;
                // Arrow's own size of a batch read from Parquet counts buffers it shares
                // with the rest of the row group; twice the encoded size is the better
                // estimate.
                group_bytes += take * row_bytes * 2;
                if group_rows >= ROW_GROUP_ROWS || group_bytes >= target.read_bytes {
                    write_group(&mut out, signal, &schema, std::mem::take(&mut group))?;
                    (group_rows, group_bytes) = (0, 0);
                }
            }
        }
    }
    write_group(&mut out, signal, &schema, group)?;
    finish_checked(out, expected, target)
}

/// Finishes the output of a merge once it holds every row of its inputs.
fn finish_checked(
    out: PartWriter,
    expected: u64,
    target: &MergeTarget<'_>,
) -> Result<Option<FileEntry>> {
    if out.rows() != expected {
        return Err(Error::Compaction {
            partition: target.rel_dir.to_string(),
            message: format!(
                "read {} rows from files that the catalog says hold {expected}; check the files of the partition",
                out.rows()
            ),
        });
    }
    Ok(Some(out.finish()?))
}

/// Whether any of `inputs` (spans files) stores `end_time`.
fn inputs_store_end_time(data_dir: &Path, inputs: &[FileEntry]) -> Result<bool> {
    for input in inputs {
        let path = data_dir.join(&input.path);
        let file = fs::File::open(&path).map_err(Error::io("open", &path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        if builder
            .schema()
            .column_with_name(crate::derived::END_TIME)
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Sorts the rows of one output row group and writes them as a row group of their own.
fn write_group(
    out: &mut PartWriter,
    signal: Signal,
    schema: &SchemaRef,
    group: Vec<RecordBatch>,
) -> Result<()> {
    if group.is_empty() {
        return Ok(());
    }
    let order = sorted_rows(signal, &group)?;
    let sorted = crate::gather::gather_batch(schema, &group, &order)?;
    drop(group);
    out.write(&sorted)?;
    out.end_row_group()
}

/// Removes the output of a merge that was given up (temporary file, span aggregates and
/// index).
fn remove_output(data_dir: &Path, target: &MergeTarget<'_>) -> Result<()> {
    let path = data_dir.join(target.rel_dir).join(target.name);
    let tmp = data_dir
        .join(target.rel_dir)
        .join(format!("{}.tmp", target.name));
    let agg = crate::span_aggregates::agg_path(&path);
    let series = crate::series_index::series_path(&path);
    for file in [&path, &tmp, &agg, &series] {
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
            components: Default::default(),
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
