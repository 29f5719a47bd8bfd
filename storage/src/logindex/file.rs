//! The index of one Parquet file of the `logs` table: a tantivy index in a directory next
//! to the file (`…/000000000042.parquet` → `…/000000000042.index/`), built by the flush
//! that writes the file, before the catalog lists it. Document `locator` = row number.

use std::fs;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use tantivy::indexer::NoMergePolicy;
use tantivy::{Index, IndexWriter, TantivyDocument};

use super::fields::{LogColumns, LogFields};
use crate::error::{Error, Result};

/// The most memory an indexing thread gets before it writes a segment.
const WRITER_MEMORY_MAX: usize = 64 * 1024 * 1024;
/// The least memory tantivy accepts for an indexing thread.
const WRITER_MEMORY_MIN: usize = 15_000_000;

/// The memory an indexing thread gets when `wanted` is asked for: between tantivy's
/// minimum and 64 MiB.
pub(crate) fn writer_memory(wanted: usize) -> usize {
    wanted.clamp(WRITER_MEMORY_MIN, WRITER_MEMORY_MAX)
}

/// The index directory of a Parquet file path.
pub fn index_path(parquet: &Path) -> PathBuf {
    parquet.with_extension("index")
}

/// Builds the index of `batch` (the rows of one Parquet file, in file order) in `dir`,
/// and returns its size in bytes.
///
/// # Errors
/// When the directory cannot be written or tantivy fails.
pub fn build(dir: &Path, fields: &LogFields, batch: &RecordBatch) -> Result<u64> {
    let mut builder = Builder::create(dir, fields, WRITER_MEMORY_MAX)?;
    builder.add(batch, 0)?;
    builder.finish()
}

/// Builds the index of one Parquet file batch by batch, as the file is written.
pub struct Builder {
    dir: PathBuf,
    fields: LogFields,
    writer: IndexWriter<TantivyDocument>,
}

impl Builder {
    /// Starts an empty index in `dir` (removing one left by an interrupted flush); the
    /// indexing thread uses at most `memory` bytes (at least tantivy's minimum, 15 MB).
    ///
    /// # Errors
    /// When the directory cannot be written or tantivy fails.
    pub fn create(dir: &Path, fields: &LogFields, memory: usize) -> Result<Builder> {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(Error::io("remove stale index", dir))?;
        }
        fs::create_dir_all(dir).map_err(Error::io("create index directory", dir))?;
        let index = Index::create_in_dir(dir, fields.schema.clone())?;
        LogFields::register_tokenizers(&index);
        let memory = writer_memory(memory);
        let writer: IndexWriter<TantivyDocument> = index.writer_with_num_threads(1, memory)?;
        writer.set_merge_policy(Box::new(NoMergePolicy));
        Ok(Builder {
            dir: dir.to_path_buf(),
            fields: fields.clone(),
            writer,
        })
    }

    /// Indexes the rows of `batch`, which sit in the file from row `first_row` on.
    ///
    /// # Errors
    /// When the batch is not a `logs` batch or tantivy fails.
    pub fn add(&mut self, batch: &RecordBatch, first_row: u64) -> Result<()> {
        let cols = LogColumns::of(batch)?;
        for row in 0..batch.num_rows() {
            self.writer
                .add_document(self.fields.document(&cols, row, first_row + row as u64))?;
        }
        Ok(())
    }

    /// Commits the index and returns its size in bytes.
    ///
    /// # Errors
    /// When tantivy cannot write its segments.
    pub fn finish(mut self) -> Result<u64> {
        // No merge to one segment afterwards: merging rebuilds every term dictionary, which
        // cost more CPU than the flush itself; searches read the few segments as one.
        self.writer.commit()?;
        self.writer.wait_merging_threads()?;
        dir_size(&self.dir)
    }
}

/// Opens the index in `dir`.
///
/// # Errors
/// When it is missing or damaged.
pub fn open(dir: &Path) -> Result<Index> {
    let index = Index::open_in_dir(dir)?;
    LogFields::register_tokenizers(&index);
    Ok(index)
}

/// Whether the index in `dir` opens and its term dictionaries are of the kind this build
/// reads (SSTable; indexes written by earlier builds hold FSTs and are built again).
pub fn readable(dir: &Path, fields: &LogFields) -> bool {
    let Ok(index) = open(dir) else {
        return false;
    };
    let Ok(segments) = index.searchable_segments() else {
        return false;
    };
    segments.iter().all(|segment| {
        tantivy::SegmentReader::open(segment).is_ok_and(|reader| {
            fields
                .schema
                .fields()
                .filter(|(_, entry)| entry.is_indexed())
                .all(|(field, _)| reader.inverted_index(field).is_ok())
        })
    })
}

/// Total size of the files in `dir`.
pub fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        total += entry.metadata().map_err(Error::io("stat", dir))?.len();
    }
    Ok(total)
}
