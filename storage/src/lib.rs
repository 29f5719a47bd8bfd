//! # periscope-storage
//!
//! Periscope's data model and durable storage. The path of a row:
//!
//! ```text
//! RecordBatch (schema::Signal::schema; periscope-otlp makes them from OTLP requests)
//!      ─► Store::append ─► wal (checksummed record, group fsync) ─► head (memory) ─► ack
//!      ─► flush: part files (sorted, hour-partitioned Parquet, zstd) ─► catalog.json
//!      ─► compaction: small part files of a partition merged into one ─► catalog.json
//!      ─► Store::snapshot: head batches + catalog files, read by the query crate
//! ```
//!
//! Two kinds of file hold rows: a *WAL segment* (`wal/{id}.wal`, the write-ahead log,
//! deleted once flushed) and a *part file* (`{table}/{YYYY-MM-DD}/{HH}/*.parquet`, listed
//! in the catalog). The storage engine takes Arrow rows, not protocol messages.
//!
//! Promises kept here: an append returns only after its rows are fsynced in the WAL, a
//! restart replays every acknowledged row exactly once (torn tail records are skipped; a
//! damaged record mid-segment costs only itself, and its segment is kept in
//! `wal/quarantine/`), and memory held by unflushed rows is bounded: past the budget,
//! appends fail with the retryable [`Error::Overloaded`], and an append whose caller
//! gave up gives its share back at once.
//!
//! ```no_run
//! # async fn demo(rows: arrow::record_batch::RecordBatch) -> Result<(), Box<dyn std::error::Error>> {
//! use periscope_storage::{Signal, Store, StoreConfig};
//! let store = Store::open(StoreConfig::new("./periscope-data"))?;
//! // `rows` follow `Signal::Spans.schema()`, e.g. from `periscope_otlp::spans`.
//! store.append(Signal::Spans, rows).await?; // durable from here on
//! let view = store.snapshot(Signal::Spans); // head + files, for queries
//! # Ok(()) }
//! ```

mod budget;
mod catalog;
mod compaction;
pub mod derived;
mod durability;
mod error;
mod flush;
mod gather;
mod head;
mod layout;
pub mod logindex;
mod metric_columns;
mod metrics;
pub mod names;
mod part_writer;
mod reserve;
mod retention;
mod schema;
pub mod series_index;
mod series_merge;
mod series_order;
pub mod settings;
mod sidecar;
mod sidecar_cache;
pub mod span_aggregates;
mod store;
mod wal;

pub use budget::Reservation;
pub use catalog::{Catalog, FileEntry};
pub use compaction::CompactionConfig;
pub use error::{Error, Result};
pub use metrics::StorageMetrics;
pub use retention::Retention;
pub use schema::{
    Signal, attributes_builder, attributes_builder_with_capacity, attributes_type, event_fields,
    exemplar_fields, link_fields, quantile_fields, timestamp_type,
};
pub use store::{Snapshot, Store, StoreConfig};

/// Turns an export request logged as it arrived (see [`Store::append_wire`]) back into
/// the rows it was stored as, on replay of the WAL: the receivers' own conversion.
pub type WireDecoder =
    fn(Signal, &[u8]) -> std::result::Result<arrow::record_batch::RecordBatch, String>;
