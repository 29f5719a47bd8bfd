//! The full-text index of the `logs` table (tantivy).
//!
//! Every Parquet file of `logs` has an index beside it, built by the same flush and
//! listed by the same catalog entry, so the index and the data can never disagree and
//! go away together. Rows still in the head are in an in-memory index ([`HeadIndex`]).
//! Neither index stores the rows: they hold postings and three fast columns (time,
//! `log_id`, position of the row), and hits are read back from Parquet or the head.
//!
//! [`LogView`] is a consistent picture for one search, taken under the store's lock.

mod fields;
pub(crate) mod file;
mod head;
mod queue;
mod search;
mod tokenizer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use tantivy::{IndexReader, ReloadPolicy, Searcher};

pub use fields::LogFields;
pub(crate) use file::Builder as FileIndexBuilder;
pub use file::{build as build_file_index, dir_size, index_path};
pub use head::{COMMIT_EVERY, HeadIndex};
pub use search::{Collect, Found, Hit};
pub use tokenizer::{
    EXACT_TOKENIZER, MAX_TOKEN_BYTES, TEXT_TOKENIZER, TextTokenizer, is_cjk, tokenize,
};

use crate::catalog::FileEntry;
use crate::error::Result;

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

/// Open readers of file indexes, so a search does not reopen them.
#[derive(Default)]
pub(crate) struct FileIndexes {
    readers: Mutex<HashMap<String, IndexReader>>,
}

impl FileIndexes {
    /// The searcher of the index of `file`.
    pub fn searcher(&self, data_dir: &Path, file: &FileEntry) -> Result<Searcher> {
        if let Some(reader) = self.readers.lock().get(&file.path) {
            return Ok(reader.searcher());
        }
        let dir = index_path(&data_dir.join(&file.path));
        let index = file::open(&dir)?;
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        self.readers.lock().insert(file.path.clone(), reader);
        Ok(searcher)
    }

    /// Forgets readers of files no longer in `files`.
    pub fn retain(&self, files: &[FileEntry]) {
        let keep: std::collections::HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        self.readers
            .lock()
            .retain(|path, _| keep.contains(path.as_str()));
    }
}
