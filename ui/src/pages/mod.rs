//! One module per page: its handler (reads the data) and its view.

pub mod alerts;
pub mod logs;
pub mod map;
pub mod metrics;
pub mod overview;
pub mod sql;
pub mod storage;
pub mod traces;
