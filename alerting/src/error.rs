//! The alerting crate's errors.

use crate::rules::Problems;

/// Why alerting could not start or be configured.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    /// A bad `[alerting]` setting; the message names the key.
    #[error("{0}")]
    Config(String),
    /// Problems in the rule files, each with file, line and column.
    #[error("the rule files have problems:\n{0}")]
    Rules(Problems),
    /// The state directory or journal cannot be used.
    #[error("{0}")]
    Io(String),
}
