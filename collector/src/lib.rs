//! # periscope-collector
//!
//! Periscope's OTLP receivers. Both transports decode a request, hand it to
//! [`Ingest`], which validates and converts it to rows (`periscope_otlp`) and
//! appends them to the store, and answer as the OTLP specification says:
//!
//! ```text
//! OTLP/gRPC (tonic, grpc::services) ──┐
//!                                     ├─► Ingest::export ─► Store::append (WAL fsync) ─► response
//! OTLP/HTTP (axum, http::router) ─────┘        │
//!                                              └─ invalid items ─► partial success (rejected_*)
//! ```
//!
//! Protobuf exports are converted from their bytes in place
//! ([`Ingest::export_protobuf`]); spans are then logged in the WAL as they arrived
//! ([`periscope_storage::Store::append_wire`]) and converted again by [`replay_wire`]
//! when the WAL is replayed.
//!
//! Prometheus remote write ([`remote_write`], `POST /api/v1/write` on the API port)
//! converts each `WriteRequest` straight to `metrics` rows (each series' labels laid out
//! once), stores them like an OTLP export, and logs the body as it arrived, which
//! [`replay_wire`] converts again.
//!
//! Errors map to statuses in one place ([`status`]): pressure (memory budget, disk full)
//! becomes HTTP 503 with `Retry-After` and gRPC `UNAVAILABLE` with a `RetryInfo`, so
//! exporters retry; an undecodable body is 400 / `INVALID_ARGUMENT`.

mod decoded;
mod error;
mod export;
pub mod fuzz;
pub mod grpc;
pub mod http;
mod ingest;
mod metrics;
pub mod remote_write;
mod remote_write_rows;
pub mod settings;
pub mod status;

pub use error::IngestError;
pub use ingest::{Admission, Ingest, replay_wire};
pub use metrics::CollectorMetrics;
