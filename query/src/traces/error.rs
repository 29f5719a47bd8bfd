//! Errors of the trace APIs.

use crate::error::QueryError;

/// What can go wrong answering a trace request.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The request is invalid; the message says how to fix it.
    #[error("{0}")]
    BadRequest(String),
    /// The trace (or span) is not stored.
    #[error("{0}")]
    NotFound(String),
    /// The SQL engine failed or hit a limit.
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl TraceError {
    /// The HTTP status this error answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            TraceError::BadRequest(_) => 400,
            TraceError::NotFound(_) => 404,
            TraceError::Query(e) => e.http_status(),
        }
    }
}
