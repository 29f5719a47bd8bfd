//! A read-only view of the store for pages that show what is stored (the web UI's
//! storage page) and search logs: the files of each table, the data directory, the bytes
//! not yet flushed, the retention, and log search, without handing out the [`Store`]
//! itself. The binary builds it from the store it opened.

use std::path::Path;
use std::time::{Duration, Instant};

use periscope_storage::Store;

pub use periscope_storage::Retention;

use crate::logsearch::{SearchError, SearchRequest, SearchResult, search_until};

/// One Parquet file of a table, as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// The table: `spans`, `logs` or `metrics`.
    pub signal: String,
    /// Number of rows.
    pub rows: u64,
    /// Size on disk in bytes.
    pub bytes: u64,
    /// Size of the file's log index (`logs` only), in bytes.
    pub index_bytes: u64,
    /// Oldest row, Unix nanoseconds.
    pub min_time: i64,
    /// Newest row, Unix nanoseconds.
    pub max_time: i64,
}

/// What the store holds, read-only.
#[derive(Clone)]
pub struct StoreView {
    store: Store,
}

impl std::fmt::Debug for StoreView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreView").finish_non_exhaustive()
    }
}

impl StoreView {
    /// A view of `store`.
    pub fn new(store: Store) -> StoreView {
        StoreView { store }
    }

    /// The files of every table, oldest first.
    pub fn files(&self) -> Vec<StoredFile> {
        self.store
            .files()
            .into_iter()
            .map(|f| StoredFile {
                signal: f.signal,
                rows: f.rows,
                bytes: f.bytes,
                index_bytes: f.index_bytes,
                min_time: f.min_time,
                max_time: f.max_time,
            })
            .collect()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.store.data_dir()
    }

    /// Bytes received and not yet flushed to Parquet.
    pub fn buffered_bytes(&self) -> u64 {
        self.store.buffered_bytes()
    }

    /// How long each table keeps its rows.
    pub fn retention(&self) -> Retention {
        self.store.retention()
    }

    /// Searches the logs, giving up at `deadline`, as [`search_until`] does.
    ///
    /// # Errors
    /// As [`search_until`]: past the deadline, or when an index cannot be read.
    pub fn search_logs(
        &self,
        request: &SearchRequest,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<SearchResult, SearchError> {
        search_until(&self.store, request, deadline)
    }
}
