//! Periscope's agent: the telemetry side of an MSA's API gateways, mesh proxies and
//! services. Embedded in other programs, it depends on no other Periscope crate.
//!
//! - [`ServerLayer`] and [`ClientLayer`]: tower layers for HTTP services (hyper 1, axum,
//!   tonic). W3C trace context extracted and injected, a SERVER span per inbound request
//!   and a CLIENT span per upstream call with the OpenTelemetry HTTP semantic
//!   conventions, the `http.server.request.duration` / `http.client.request.duration`
//!   histograms, and an access log record per request carrying the trace id.
//! - [`TracingLayer`]: a `tracing` subscriber layer exporting a service's `tracing` spans
//!   and events as OTLP spans and logs, in the trace of the request being served.
//! - [`Telemetry`]: the exporter behind them: batching, OTLP/gRPC or OTLP/HTTP, gzip,
//!   retries with backoff honouring Retry-After and RetryInfo, and a bounded queue that
//!   drops (and counts the drops) instead of blocking or growing. The request path
//!   never waits for it.
//!
//! The `periscope gateway` reverse proxy is built on all of this in its own crate,
//! `periscope-gateway`.
//!
//! ```no_run
//! # async fn run() -> Result<(), periscope_agent::AgentError> {
//! use periscope_agent::{ComponentKind, ExporterConfig, ResourceInfo, ServerLayer, Telemetry};
//! let telemetry = Telemetry::start(
//!     ResourceInfo::new("checkout", ComponentKind::Service),
//!     ExporterConfig::default(), // OTLP/gRPC to 127.0.0.1:4317
//! )?;
//! let layer = ServerLayer::new(telemetry.clone());
//! // axum: Router::new().route(...).layer(layer)
//! # let _ = layer; Ok(()) }
//! ```

pub mod client;
pub mod context;
mod encode;
mod error;
mod error_type;
pub mod export;
pub mod layer;
pub mod metrics;
pub mod resource;
pub mod semconv;
mod telemetry;
mod tracing_layer;

pub use client::HttpClient;
pub use context::TraceContext;
pub use error::AgentError;
pub use export::{Compression, ExporterConfig, Protocol};
pub use layer::{ClientLayer, HttpRoute, PeerAddr, ResendCount, ServerLayer, TypedError};
pub use metrics::SignalCounts;
pub use resource::{ComponentKind, ResourceInfo};
pub use telemetry::Telemetry;
pub use tracing_layer::TracingLayer;
