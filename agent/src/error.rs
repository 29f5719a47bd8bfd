//! Errors of the agent crate.

/// What can go wrong setting up the agent or the gateway.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A gateway config file could not be read or parsed (the message names the line).
    #[error("{path}: {message}")]
    ConfigFile {
        /// The file.
        path: String,
        /// What is wrong and where.
        message: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
