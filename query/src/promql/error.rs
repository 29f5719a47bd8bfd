//! PromQL errors, answered as Prometheus's API does:
//! `{"status":"error","errorType":"bad_data","error":"…"}`.

use axum::http::StatusCode;

use crate::error::QueryError;

/// Prometheus's error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Invalid parameters or query (400).
    BadData,
    /// The query is valid but cannot be evaluated (422).
    Execution,
    /// The query ran out of time (503).
    Timeout,
    /// Something failed inside Periscope (500).
    Internal,
}

/// Why a Prometheus API call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PromError {
    /// The class, which sets `errorType` and the status.
    pub kind: ErrorKind,
    /// One clear sentence.
    pub message: String,
}

impl PromError {
    /// A 400 `bad_data` error.
    pub fn bad_data(message: impl Into<String>) -> Self {
        PromError {
            kind: ErrorKind::BadData,
            message: message.into(),
        }
    }

    /// A 422 `execution` error.
    pub fn execution(message: impl Into<String>) -> Self {
        PromError {
            kind: ErrorKind::Execution,
            message: message.into(),
        }
    }

    /// `errorType` as Prometheus spells it.
    pub fn error_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadData => "bad_data",
            ErrorKind::Execution => "execution",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status Prometheus uses for the class.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::BadData => StatusCode::BAD_REQUEST,
            ErrorKind::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<QueryError> for PromError {
    fn from(e: QueryError) -> Self {
        let kind = match &e {
            QueryError::Timeout(_) => ErrorKind::Timeout,
            QueryError::ResourcesExhausted(_) => ErrorKind::Execution,
            _ => ErrorKind::Internal,
        };
        PromError {
            kind,
            message: e.to_string(),
        }
    }
}
