//! The storage crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while storing or reading telemetry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server holds as much unflushed data as its memory budget allows; retry later.
    #[error(
        "ingest is over its memory budget ({used} of {limit} bytes buffered); retry after the next flush"
    )]
    Overloaded {
        /// Bytes currently buffered.
        used: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The store is shutting down or its writer thread has stopped.
    #[error("the store is shut down and accepts no more writes")]
    Closed,
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding or decoding Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Writing or reading a Parquet file failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The catalog file could not be read or written.
    #[error("catalog {path}: {message}")]
    Catalog {
        /// Catalog path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The log index could not be built, opened or searched.
    #[error("log index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// Span aggregates could not be encoded or decoded.
    #[error("{0}")]
    SpanAggregates(#[from] periscope_spanagg::Error),
    /// A batch does not have the columns its table must have.
    #[error("schema: {0}")]
    Schema(String),
    /// A WAL segment cannot be replayed by this version.
    #[error("WAL segment {path} {message}")]
    WalFormat {
        /// The segment.
        path: PathBuf,
        /// Why, and what to do.
        message: String,
    },
    /// A compaction found its inputs not as the catalog describes them; the partition
    /// is left as it was.
    #[error("compacting {partition}: {message}")]
    Compaction {
        /// The partition directory, relative to the data directory.
        partition: String,
        /// What was wrong.
        message: String,
    },
}

impl Error {
    /// Wraps an I/O error with the operation and path it happened on.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// True when the caller should retry later (pressure or a full disk), not give up.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Overloaded { .. } | Error::Closed => true,
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(28) // ENOSPC
                | Some(122) // EDQUOT
            ),
            _ => false,
        }
    }
}

/// Result with the storage [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
