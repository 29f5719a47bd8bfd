//! # periscope-storage
//!
//! Periscope's data model and durable storage. The path of a row:
//!
//! ```text
//! OTLP request ─► otlp::{spans,logs,metrics} ─► RecordBatch (schema::Signal::schema)
//!      ─► Store::append ─► wal (checksummed record, group fsync) ─► head (memory) ─► ack
//!      ─► flush: segment (sorted, hour-partitioned Parquet, zstd) ─► catalog.json
//!      ─► compaction: small files of a partition merged into one ─► catalog.json
//!      ─► Store::snapshot: head batches + catalog files, read by the query crate
//! ```
//!
//! Promises kept here: an append returns only after its rows are fsynced in the WAL, a
//! restart replays every acknowledged row exactly once (torn tail records are skipped; a
//! damaged record mid-segment costs only itself, and its segment is kept in
//! `wal/quarantine/`), and memory held by unflushed rows is bounded: past the budget,
//! appends fail with the retryable [`Error::Overloaded`], and an append whose caller
//! gave up gives its share back at once.
//!
//! ```no_run
//! # async fn demo(request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest) -> Result<(), Box<dyn std::error::Error>> {
//! use periscope_storage::{Signal, Store, StoreConfig, otlp};
//! let store = Store::open(StoreConfig::new("./periscope-data"))?;
//! let converted = otlp::spans(&request)?;
//! if let Some(rows) = converted.batch {
//!     store.append(Signal::Spans, rows).await?; // durable from here on
//! }
//! let view = store.snapshot(Signal::Spans); // head + files, for queries
//! # Ok(()) }
//! ```

mod budget;
mod catalog;
mod compaction;
mod error;
mod filewriter;
mod head;
pub mod logindex;
mod metrics;
pub mod otlp;
mod reserve;
mod retention;
mod schema;
mod segment;
pub mod settings;
mod store;
mod wal;

pub use catalog::{Catalog, FileEntry};
pub use compaction::CompactionConfig;
pub use error::{Error, Result};
pub use metrics::StorageMetrics;
pub use retention::Retention;
pub use schema::{Signal, attributes_type, timestamp_type};
pub use store::{Snapshot, Store, StoreConfig};
