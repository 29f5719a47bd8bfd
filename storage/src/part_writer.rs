//! Writing one part file (a Parquet file of a table, and for `logs` its index) batch by
//! batch, in bounded memory: row groups are closed once their encoded size reaches a
//! limit, and the log index is built as rows arrive. The file is written under a
//! temporary name, fsynced and renamed into place by [`PartWriter::finish`]; until the
//! catalog lists it, it is an orphan that the next start removes. A spans file gets its
//! span aggregates (`_{file}.agg`) the same way, built from the same rows, and a metrics
//! file its series index (`_{file}.series`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::AsArray;

use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::catalog::FileEntry;
use crate::derived;
use crate::durability::sync_dir;
use crate::error::{Error, Result};
use crate::layout::writer_properties;
use crate::logindex::{self, FileIndexBuilder, LogFields};
use crate::schema::Signal;
use crate::series_index::{self, SeriesIndexBuilder};
use crate::span_aggregates;
use periscope_spanagg::{Summary, SummaryBuilder};

/// Rows handed to the Parquet writer at a time, so that a row group is closed soon after
/// it reaches its size limit.
const SLICE_ROWS: usize = 1024;

/// How much memory one file being written may use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteLimits {
    /// Close a row group once its encoded, unwritten size reaches this.
    pub row_group_bytes: usize,
    /// Memory of the log index's indexing thread.
    pub index_bytes: usize,
}

/// How a `logs` file gets its index.
#[derive(Clone, Copy)]
pub(crate) enum LogIndex<'a> {
    /// Built from the rows written, by tokenizing them.
    Build(&'a LogFields),
    /// Put in place by the caller (copied from the head index or merged from the
    /// inputs' indexes, see [`logindex::export`]) before [`PartWriter::finish`], in
    /// [`PartWriter::index_dir`], which [`PartWriter::create`] leaves empty.
    Given,
}

/// One Parquet file being written.
pub(crate) struct PartWriter {
    signal: Signal,
    rel: String,
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
    writer: ArrowWriter<fs::File>,
    /// The columns of the file (the table's, or without derived ones).
    schema: SchemaRef,
    expected_rows: usize,
    index: Option<FileIndexBuilder>,
    /// Whether the file has an index (built here or given).
    indexed: bool,
    limits: WriteLimits,
    /// Span aggregates being built (`spans` only).
    spans: Option<SummaryBuilder>,
    /// Series index being built (`metrics` only).
    series: Option<SeriesIndexBuilder>,
    /// Service → component kind of the rows written.
    components: BTreeMap<String, String>,
    rows: u64,
    min_time: Option<i64>,
    max_time: Option<i64>,
}

impl PartWriter {
    /// Starts `{data_dir}/{rel_dir}/{name}`; `expected_rows` sizes the bloom filter.
    ///
    /// # Errors
    /// When the directory or file cannot be created.
    pub fn create(
        data_dir: &Path,
        signal: Signal,
        rel_dir: &str,
        name: &str,
        expected_rows: usize,
        log_index: LogIndex<'_>,
        limits: WriteLimits,
    ) -> Result<PartWriter> {
        let dir = data_dir.join(rel_dir);
        fs::create_dir_all(&dir).map_err(Error::io("create partition directory", &dir))?;
        let rel = format!("{rel_dir}/{name}");
        let path = data_dir.join(&rel);
        let tmp = dir.join(format!("{name}.tmp"));
        let file = fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
        let props = writer_properties(signal, expected_rows)?;
        let schema = signal.schema();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        let index = match log_index {
            LogIndex::Build(fields) if signal == Signal::Logs => Some(FileIndexBuilder::create(
                &logindex::index_path(&path),
                fields,
                limits.index_bytes,
            )?),
            LogIndex::Given => {
                // The caller writes the index into an empty directory: clear one left by
                // an interrupted flush or merge, as the builder does.
                let stale = logindex::index_path(&path);
                if stale.exists() {
                    fs::remove_dir_all(&stale).map_err(Error::io("remove stale index", &stale))?;
                }
                None
            }
            LogIndex::Build(_) => None,
        };
        Ok(PartWriter {
            signal,
            rel,
            path,
            tmp,
            dir,
            writer,
            schema,
            expected_rows,
            index,
            indexed: signal == Signal::Logs,
            limits,
            spans: (signal == Signal::Spans).then(SummaryBuilder::new),
            series: (signal == Signal::Metrics).then(SeriesIndexBuilder::new),
            components: BTreeMap::new(),
            rows: 0,
            min_time: None,
            max_time: None,
        })
    }

    /// Builds this file's span aggregates by merging those of the files it merges
    /// (compaction) instead of from its rows alone: the rows written then only resolve
    /// the spans those aggregates deferred.
    pub fn merging_span_aggregates(&mut self, inputs: &[Summary]) {
        if self.spans.is_some() {
            self.spans = Some(SummaryBuilder::merging(inputs, None));
        }
    }

    /// Leaves `end_time` out of this spans file: readers derive it as `start_time +
    /// duration_ns` (see [`crate::derived`]). Only the caller knows that holds for every
    /// row it will write; only before the first rows.
    ///
    /// # Errors
    /// When the file cannot be created again.
    pub fn leave_out_end_time(&mut self) -> Result<()> {
        if self.signal != Signal::Spans || self.rows > 0 {
            return Ok(());
        }
        let schema = derived::without_end_time(&self.signal.schema());
        let file = fs::File::create(&self.tmp).map_err(Error::io("create", &self.tmp))?;
        let props = writer_properties(self.signal, self.expected_rows)?;
        self.writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        self.schema = schema;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends rows, sorted by the table's sort key, to the row group being written.
    ///
    /// # Errors
    /// When encoding or writing fails.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = &derived::conform(batch, &self.schema)?;
        if let Some(index) = &mut self.index {
            index.add(batch, self.rows)?;
        }
        if let Some(spans) = &mut self.spans {
            spans.add_batch(batch);
        }
        if let Some(series) = &mut self.series {
            series.add(batch)?;
        }
        periscope_spanagg::facts::components(batch, &mut self.components);
        let times = batch
            .column_by_name(self.signal.time_column())
            .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
            .ok_or_else(|| {
                Error::Schema(format!(
                    "{} rows lack their time column `{}`",
                    self.signal,
                    self.signal.time_column()
                ))
            })?;
        if let Some(min) = arrow::compute::min(times) {
            self.min_time = Some(self.min_time.map_or(min, |m| m.min(min)));
        }
        if let Some(max) = arrow::compute::max(times) {
            self.max_time = Some(self.max_time.map_or(max, |m| m.max(max)));
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = SLICE_ROWS.min(batch.num_rows() - offset);
            self.writer.write(&batch.slice(offset, len))?;
            offset += len;
            if self.writer.in_progress_size() >= self.limits.row_group_bytes {
                self.writer.flush()?;
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes the row group being written, so that the next rows start a new one.
    ///
    /// # Errors
    /// When encoding or writing fails.
    pub fn end_row_group(&mut self) -> Result<()> {
        Ok(self.writer.flush()?)
    }

    /// The index directory of the file (for a given index, see [`LogIndex::Given`]).
    pub fn index_dir(&self) -> PathBuf {
        logindex::index_path(&self.path)
    }

    /// Closes the file, fsyncs it and its index, renames it into place and returns its
    /// catalog entry.
    ///
    /// # Errors
    /// When any file operation fails.
    pub fn finish(self) -> Result<FileEntry> {
        let file = self.writer.into_inner()?;
        file.sync_all().map_err(Error::io("fsync", &self.tmp))?;
        let bytes = file.metadata().map_err(Error::io("stat", &self.tmp))?.len();
        drop(file);
        fs::rename(&self.tmp, &self.path).map_err(Error::io("rename", &self.path))?;
        let index_dir = logindex::index_path(&self.path);
        let mut index_bytes = match self.index {
            Some(index) => index.finish()?,
            None if self.indexed => logindex::dir_size(&index_dir)?,
            None => 0,
        };
        if self.indexed {
            sync_dir(&index_dir)?;
        }
        if let Some(spans) = self.spans {
            index_bytes += span_aggregates::write(&self.path, &spans.finish())?;
        }
        if let Some(series) = self.series {
            index_bytes += series_index::write(&self.path, &series.finish())?;
        }
        sync_dir(&self.dir)?;
        Ok(FileEntry {
            signal: self.signal.name().to_string(),
            path: self.rel,
            rows: self.rows,
            bytes,
            min_time: self.min_time.unwrap_or(0),
            max_time: self.max_time.unwrap_or(0),
            index_bytes,
            components: Some(self.components),
        })
    }
}
