//! # periscope-query
//!
//! SQL over Periscope's store, through DataFusion. The path of a query:
//!
//! ```text
//! POST /api/v1/sql {"query"} ─► api::router ─► QueryEngine::answer
//!   ─► SessionContext::sql_with_options (read-only: no DDL, DML, COPY or statements)
//!   ─► table::StoreTable::scan ─► Store::snapshot (head batches + catalog files, one instant)
//!        ├─ MemorySourceConfig over the head
//!        └─ ParquetSource over the files (time-pruned by the catalog, row groups pruned
//!           by statistics and trace_id bloom filters)
//!   ─► record batches, one at a time ─► AnswerWriter (JSON, CSV, the UI's table),
//!      under a memory pool, a timeout and a row and byte cap
//! ```
//!
//! Built-in functions whose output size comes from an argument (`repeat`, `lpad`,
//! `array_repeat`, `generate_series`, ...) are wrapped by `bounded`, which refuses a call
//! that would build more than the memory limit before it allocates.
//!
//! Tables: `spans`, `logs`, `metrics`, with the columns docs/sql.md lists.
//!
//! Built on the same engine: [`traces`] (trace view, search, service graph, RED,
//! components, Jaeger's API), [`promql`] (PromQL and the Prometheus HTTP API over the
//! `metrics` table) and, on the tantivy log indexes, [`logsearch`]. [`storage`] is a
//! read-only view of the store for pages that show what is stored.

mod api;
mod bounded;
mod deadline;
mod engine;
mod error;
use periscope_spanagg::hash;
mod json;
pub mod logsearch;
mod metrics;
pub mod promql;
pub mod settings;
pub mod storage;
mod table;
pub mod time;
pub mod traces;
mod udf;

pub use api::{csv_answer, error_response, json_answer, router};
pub use deadline::deadline;
pub use engine::{AnswerWriter, Answered, QueryConfig, QueryEngine, QueryResult};
pub use error::QueryError;
pub use json::{cell_text, rfc3339_text, value_json};
pub use metrics::QueryMetrics;
pub use udf::{HistogramQuantile, bucket_quantile};

#[cfg(test)]
mod fuzz_tests;
