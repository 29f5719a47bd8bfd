//! The collector's error type.

/// Why an export was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The server cannot take more right now (memory budget or disk); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The request would take more memory to decode than the server ever gives one
    /// request; sending it again will not help, sending it in smaller parts will.
    #[error("{0}")]
    TooLarge(String),
    /// The request is not a well-formed export; sending it again will not help.
    #[error("{0}")]
    Invalid(String),
    /// Something inside the server failed; the export was not stored.
    #[error("{0}")]
    Internal(String),
}

impl From<periscope_storage::Error> for IngestError {
    fn from(e: periscope_storage::Error) -> Self {
        if e.is_retryable() {
            IngestError::Unavailable(format!("{e}"))
        } else {
            IngestError::Internal(format!("could not store the export: {e}"))
        }
    }
}

impl From<periscope_otlp::ArrowError> for IngestError {
    fn from(e: periscope_otlp::ArrowError) -> Self {
        IngestError::Internal(format!("could not convert the export to rows: {e}"))
    }
}
