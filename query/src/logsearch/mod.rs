//! Log search: the query language ([`syntax`]) compiled to tantivy queries over
//! the store's log indexes, results read back from the head and Parquet, and the HTTP
//! endpoints `GET /api/v1/logs` and `GET /api/v1/logs/tail`.

mod api;
mod compile;
mod error;
mod exec;
pub mod syntax;

pub use api::{DEFAULT_BUCKETS, DEFAULT_LIMIT, router};
pub use compile::compile;
pub use error::SearchError;
pub use exec::{
    Cursor, MAX_LIMIT, SearchRequest, SearchResult, histogram_step, log_json, search, search_until,
};
#[cfg(test)]
mod tests;
