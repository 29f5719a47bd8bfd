//! The full-text index of the `logs` table (tantivy).
//!
//! Every Parquet file of `logs` has an index beside it, built by the same flush and
//! listed by the same catalog entry, so the index and the data can never disagree and
//! go away together. Rows still in the head are in an in-memory index ([`HeadIndex`]).
//! Neither index stores the rows: they hold postings and three fast columns (time,
//! `log_id`, position of the row), and hits are read back from Parquet or the head.
//!
//! [`LogView`] is a consistent picture for one search, taken under the store's lock.

pub(crate) mod export;
mod fields;
pub(crate) mod file;
mod head;
mod queue;
mod search;
mod tokenizer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use tantivy::{IndexReader, ReloadPolicy, Searcher};

pub use export::{ROW_ORDER, rows_in_doc_order};
pub use fields::LogFields;
pub(crate) use file::Builder as FileIndexBuilder;
pub use file::{build as build_file_index, dir_size, index_path};
pub use head::{COMMIT_EVERY, HeadIndex};
pub use search::{Collect, Found, Hit};
pub use tokenizer::{
    EXACT_TOKENIZER, MAX_TOKEN_BYTES, TEXT_TOKENIZER, TextTokenizer, is_cjk, tokenize,
};

use crate::catalog::FileEntry;
use crate::error::{Error, Result};

/// A consistent picture of the `logs` table for one search.
#[derive(Clone)]
pub struct LogView {
    /// The table's files.
    pub files: Vec<FileEntry>,
    /// The head's batches with their sequence numbers, oldest first.
    pub head: Vec<(u64, RecordBatch)>,
    /// Head index documents of batches below this sequence are in files: skip them.
    pub min_head_seq: u64,
    /// Searcher over the head index.
    pub head_searcher: Searcher,
    /// The data directory file paths are relative to.
    pub data_dir: PathBuf,
}

impl std::fmt::Debug for LogView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogView")
            .field("files", &self.files.len())
            .field("head_batches", &self.head.len())
            .field("min_head_seq", &self.min_head_seq)
            .finish()
    }
}

/// Open readers of file indexes and the parsed footers (with page indexes) of their
/// Parquet files, so a search neither reopens an index nor re-parses a footer.
#[derive(Default)]
pub(crate) struct FileIndexes {
    /// Each file's index reader, and whether its documents are in row order.
    readers: Mutex<HashMap<String, (IndexReader, bool)>>,
    footers: Mutex<HashMap<String, Arc<ParquetMetaData>>>,
}

impl FileIndexes {
    /// The searcher of the index of `file`, and whether its document numbers are the
    /// file's rows (see [`export::ROW_ORDER`]; otherwise its `locator` column says).
    pub fn searcher(&self, data_dir: &Path, file: &FileEntry) -> Result<(Searcher, bool)> {
        if let Some((reader, rows)) = self.readers.lock().get(&file.path) {
            return Ok((reader.searcher(), *rows));
        }
        let dir = index_path(&data_dir.join(&file.path));
        let index = file::open(&dir)?;
        let rows = rows_in_doc_order(&dir);
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        self.readers
            .lock()
            .insert(file.path.clone(), (reader, rows));
        Ok((searcher, rows))
    }

    /// The footer of the Parquet file of `file`, with its page index (the offset index
    /// lets a row selection read only the pages that hold the selected rows).
    pub fn footer(&self, data_dir: &Path, file: &FileEntry) -> Result<Arc<ParquetMetaData>> {
        if let Some(footer) = self.footers.lock().get(&file.path) {
            return Ok(Arc::clone(footer));
        }
        let path = data_dir.join(&file.path);
        let handle = std::fs::File::open(&path).map_err(Error::io("open", &path))?;
        let footer = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&handle)?;
        let footer = Arc::new(footer);
        self.footers
            .lock()
            .insert(file.path.clone(), Arc::clone(&footer));
        Ok(footer)
    }

    /// Forgets readers of files no longer in `files`.
    pub fn retain(&self, files: &[FileEntry]) {
        let keep: std::collections::HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        self.readers
            .lock()
            .retain(|path, _| keep.contains(path.as_str()));
        self.footers
            .lock()
            .retain(|path, _| keep.contains(path.as_str()));
    }
}
