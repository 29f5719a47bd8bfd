//! The query crate's error type.

use std::time::Duration;

/// Why a query produced no result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL is invalid or refers to something that does not exist.
    #[error("{0}")]
    Invalid(String),
    /// The statement would change something; the SQL endpoint only reads.
    #[error(
        "the SQL endpoint is read-only and refuses this statement ({0}); use SELECT, WITH, EXPLAIN or SHOW"
    )]
    ReadOnly(String),
    /// The query ran longer than the configured timeout and was cancelled.
    #[error(
        "query exceeded the timeout of {0:?} and was cancelled; narrow the time range or raise --query-timeout"
    )]
    Timeout(Duration),
    /// The query needed more memory than the configured limit.
    #[error(
        "query exceeded its memory limit ({0}); narrow the time range, aggregate more, or raise --query-memory-limit"
    )]
    ResourcesExhausted(String),
    /// Execution failed inside the engine.
    #[error("query failed: {0}")]
    Execution(String),
}

impl QueryError {
    /// Classifies a DataFusion error.
    pub(crate) fn from_datafusion(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        let root = e.find_root();
        match root {
            E::ResourcesExhausted(m) => QueryError::ResourcesExhausted(m.clone()),
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => {
                let text = root.to_string();
                if text.contains("DDL not supported")
                    || text.contains("DML not supported")
                    || text.contains("Statement not supported")
                {
                    QueryError::ReadOnly(text)
                } else {
                    QueryError::Invalid(text)
                }
            }
            _ => QueryError::Execution(e.to_string()),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            QueryError::Invalid(_) => 400,
            QueryError::ReadOnly(_) => 403,
            QueryError::Timeout(_) => 504,
            QueryError::ResourcesExhausted(_) => 422,
            QueryError::Execution(_) => 500,
        }
    }
}
