//! Errors of the agent crate.

/// What can go wrong setting up the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
