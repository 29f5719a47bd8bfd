//! Errors of the gateway crate: a config file that cannot be read or parsed, a listener
//! that cannot be bound, and the embedded agent's own setup errors.

use periscope_agent::AgentError;

/// What can go wrong setting up the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
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
    /// The embedded agent could not start (its exporter settings are invalid).
    #[error(transparent)]
    Agent(#[from] AgentError),
}
