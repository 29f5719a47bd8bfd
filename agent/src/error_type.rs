//! The `error.type` of a failed outbound call: [`error_type`] walks the error's source
//! chain and names the first cause it knows, a [`TypedError`] (an error that names
//! itself), a deadline, an I/O error or a hyper connect error, in low-cardinality words
//! (`timeout`, `connection_refused`, `connection_error`, `_OTHER`).
//!
//! The agent knows only its own types and those of the stack it instruments; a service
//! with failures of its own to name (the gateway's upstream client) wraps them in a
//! [`TypedError`] rather than teaching the agent its types.

use std::fmt;

use crate::layer::BoxError;

/// A failure that names its own `error.type`: [`error_type`] takes the first one on a
/// source chain at its word and looks no further. A service under
/// [`ClientLayer`](crate::ClientLayer) returns its errors wrapped in one when it names
/// them better than the generic rules do.
///
/// It displays as the error it wraps and its source is that error's source, so wrapping
/// changes no log line.
///
/// ```
/// use periscope_agent::layer::{TypedError, error_type};
/// let e = TypedError::new("timeout", "no answer within 2s");
/// assert_eq!(error_type(&e), "timeout");
/// assert_eq!(e.to_string(), "no answer within 2s");
/// ```
#[derive(Debug)]
pub struct TypedError {
    error_type: &'static str,
    error: BoxError,
}

impl TypedError {
    /// `error` named `error_type` (low-cardinality, e.g. `timeout`).
    pub fn new(error_type: &'static str, error: impl Into<BoxError>) -> TypedError {
        TypedError {
            error_type,
            error: error.into(),
        }
    }

    /// The `error.type` it names.
    pub fn error_type(&self) -> &'static str {
        self.error_type
    }

    /// The wrapped error.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.error.as_ref()
    }
}

impl fmt::Display for TypedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for TypedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// A low-cardinality `error.type` for a failed call: `timeout`, `connection_refused`,
/// `connection_error`, or `_OTHER`.
pub fn error_type(error: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = e {
        if let Some(t) = err.downcast_ref::<TypedError>() {
            return t.error_type();
        }
        if err.is::<tokio::time::error::Elapsed>() {
            return "timeout";
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::TimedOut => "timeout",
                std::io::ErrorKind::ConnectionRefused => "connection_refused",
                _ => "connection_error",
            };
        }
        if let Some(h) = err.downcast_ref::<hyper_util::client::legacy::Error>()
            && h.is_connect()
            && err.source().is_none()
        {
            return "connection_error";
        }
        e = err.source();
    }
    "_OTHER"
}
