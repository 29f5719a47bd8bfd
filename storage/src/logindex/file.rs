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

/// Memory the indexing thread may use before it writes a segment.
const WRITER_MEMORY: usize = 64 * 1024 * 1024;

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
    if dir.exists() {
        // Left by an interrupted flush that reused this flush id.
        fs::remove_dir_all(dir).map_err(Error::io("remove stale index", dir))?;
    }
    fs::create_dir_all(dir).map_err(Error::io("create index directory", dir))?;
    let index = Index::create_in_dir(dir, fields.schema.clone())?;
    LogFields::register_tokenizers(&index);
    let mut writer: IndexWriter<TantivyDocument> =
        index.writer_with_num_threads(1, WRITER_MEMORY)?;
    writer.set_merge_policy(Box::new(NoMergePolicy));
    let cols = LogColumns::of(batch)?;
    for row in 0..batch.num_rows() {
        writer.add_document(fields.document(&cols, row, row as u64))?;
    }
    // No merge to one segment afterwards: merging rebuilds every term dictionary, which
    // cost more CPU than the flush itself; searches read the few segments as one.
    writer.commit()?;
    writer.wait_merging_threads()?;
    dir_size(dir)
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

/// Total size of the files in `dir`.
pub fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        total += entry.metadata().map_err(Error::io("stat", dir))?.len();
    }
    Ok(total)
}
