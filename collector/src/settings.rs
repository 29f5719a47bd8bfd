//! `[collector]` of the server's TOML file: where the OTLP receivers listen and how
//! large a request they take, with the defaults.
//!
//! The binary reads the section (addresses such as `"127.0.0.1:4317"`, sizes such as
//! `"16MiB"` through `bytesize`), lays the command-line flags over it and resolves it
//! here into [`CollectorSettings`], which it hands to [`crate::grpc::services`] and the
//! OTLP/HTTP router when it binds the ports.

use std::net::SocketAddr;

use bytesize::ByteSize;
use serde::Deserialize;

/// `[collector]`: the OTLP receivers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorSection {
    /// Address of the OTLP/gRPC receiver [default: 127.0.0.1:4317].
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// Address of the OTLP/HTTP receiver [default: 127.0.0.1:4318].
    pub otlp_http_addr: Option<SocketAddr>,
    /// Largest OTLP request body after decompression [default: 16MiB].
    pub max_request_bytes: Option<ByteSize>,
}

/// A collector setting that is out of range.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `max_request_bytes` is zero.
    #[error("max-request-bytes: must be more than 0")]
    NoRequestBytes,
}

/// The resolved `[collector]` values.
#[derive(Debug, Clone, Copy)]
pub struct CollectorSettings {
    /// Address of the OTLP/gRPC receiver.
    pub otlp_grpc_addr: SocketAddr,
    /// Address of the OTLP/HTTP receiver.
    pub otlp_http_addr: SocketAddr,
    /// Largest OTLP request body after decompression.
    pub max_request_bytes: u64,
}

impl CollectorSection {
    /// Fills in the defaults.
    ///
    /// # Errors
    ///
    /// [`SettingsError::NoRequestBytes`] when `max_request_bytes` is zero.
    pub fn resolve(self) -> Result<CollectorSettings, SettingsError> {
        let max_request_bytes = self.max_request_bytes.map_or(16 << 20, |b| b.as_u64());
        if max_request_bytes == 0 {
            return Err(SettingsError::NoRequestBytes);
        }
        Ok(CollectorSettings {
            otlp_grpc_addr: self
                .otlp_grpc_addr
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 4317))),
            otlp_http_addr: self
                .otlp_http_addr
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 4318))),
            max_request_bytes,
        })
    }
}
