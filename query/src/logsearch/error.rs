//! Errors of log search.

/// What can go wrong in a log search.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The request is invalid; the message says how to fix it.
    #[error("{0}")]
    BadRequest(String),
    /// The index could not be read.
    #[error("log index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The store failed.
    #[error("{0}")]
    Storage(#[from] periscope_storage::Error),
    /// A Parquet file could not be read.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The search ran past the query timeout and was stopped.
    #[error(
        "log search exceeded the timeout of {0:?} and was stopped; narrow the time range or the query, or raise --query-timeout"
    )]
    Timeout(std::time::Duration),
    /// A bug: a search thread panicked.
    #[error("internal error: {0}")]
    Internal(String),
    /// A file could not be opened.
    #[error("open {0}: {1}")]
    Io(String, std::io::Error),
}

impl SearchError {
    /// The HTTP status this error answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            SearchError::BadRequest(_) => 400,
            SearchError::Timeout(_) => 504,
            _ => 500,
        }
    }
}
