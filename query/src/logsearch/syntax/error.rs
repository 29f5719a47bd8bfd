//! Why a log search query could not be parsed, and where.

/// Why a query could not be parsed, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at column {column}")]
pub struct ParseError {
    /// What is wrong, in a sentence a user can act on.
    pub message: String,
    /// Where, as a 1-based position in characters (not bytes) of the query.
    pub column: usize,
}

impl ParseError {
    pub(super) fn new(message: impl Into<String>, column: usize) -> Self {
        ParseError {
            message: message.into(),
            column,
        }
    }
}
