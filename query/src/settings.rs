//! `[query]` of the server's TOML file: the limits every query runs under, with their
//! defaults.
//!
//! The binary reads the section (durations such as `"30s"` through `humantime-serde`,
//! sizes such as `"64MiB"` through `bytesize`), lays the command-line flags over it and
//! resolves it here into [`QueryLimits`], from which each engine's [`QueryConfig`] is
//! made. Out-of-range values are refused with the flag's name, so the message reads the
//! same whether the value came from the flag or the file.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::QueryConfig;

/// `[query]`: time, memory and answer-size limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySection {
    /// Longest a query may run [default: 30s].
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Memory for running queries [default: 25% of the memory budget].
    pub memory_limit: Option<ByteSize>,
    /// Most rows a SQL answer carries [default: 100000].
    pub max_rows: Option<usize>,
    /// Most encoded bytes a SQL answer carries [default: 64MiB].
    pub max_bytes: Option<ByteSize>,
    /// Most points a PromQL query may produce while it is evaluated [default: 50000000,
    /// at most the query memory / 16 bytes].
    pub max_samples: Option<usize>,
}

/// A query limit that is out of range.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `max_rows` is zero.
    #[error("query-max-rows: give at least 1")]
    NoRows,
    /// `max_bytes` is zero.
    #[error("query-max-bytes: give at least 1KiB")]
    NoBytes,
    /// `max_samples` is zero.
    #[error("query-max-samples: give at least 1")]
    NoSamples,
}

/// The resolved `[query]` limits.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// A query running longer is cancelled.
    pub timeout: Duration,
    /// Memory all running queries may use together.
    pub memory_limit: u64,
    /// Most rows an answer carries.
    pub max_rows: usize,
    /// Most encoded bytes an answer carries.
    pub max_bytes: u64,
    /// Most points a PromQL query may load or produce.
    pub max_samples: usize,
}

impl QuerySection {
    /// Fills in the defaults; `memory_budget` is the process's memory budget.
    ///
    /// # Errors
    ///
    /// A [`SettingsError`] when `max_rows`, `max_bytes` or `max_samples` is zero.
    pub fn resolve(self, memory_budget: u64) -> Result<QueryLimits, SettingsError> {
        let memory_limit = self.memory_limit.map_or(memory_budget / 4, |b| b.as_u64());
        Ok(QueryLimits {
            timeout: self.timeout.unwrap_or(Duration::from_secs(30)),
            memory_limit,
            max_rows: match self.max_rows {
                Some(0) => return Err(SettingsError::NoRows),
                Some(n) => n,
                None => 100_000,
            },
            max_bytes: match self.max_bytes.map_or(64 << 20, |b| b.as_u64()) {
                0 => return Err(SettingsError::NoBytes),
                n => n,
            },
            max_samples: match self.max_samples {
                Some(0) => return Err(SettingsError::NoSamples),
                Some(n) => n,
                // A point held during evaluation takes about 16 bytes.
                None => usize::try_from(memory_limit / 16)
                    .unwrap_or(usize::MAX)
                    .min(50_000_000),
            },
        })
    }
}

impl QueryLimits {
    /// The engine configuration for a pool of `memory_limit` bytes under these limits.
    pub fn config(&self, memory_limit: u64) -> QueryConfig {
        QueryConfig {
            timeout: self.timeout,
            memory_limit: usize::try_from(memory_limit).unwrap_or(usize::MAX),
            max_rows: self.max_rows,
            max_bytes: usize::try_from(self.max_bytes).unwrap_or(usize::MAX),
            max_samples: self.max_samples,
        }
    }
}
