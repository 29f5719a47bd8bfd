//! Errors of the span aggregates.

/// What can go wrong reading or writing span aggregates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stored bytes are not span aggregates this build reads.
    #[error("span aggregates: {0}")]
    Format(String),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;
