//! The storage layer's own counters, exported on `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set `{signal="spans"}`.
pub type SignalLabels = Vec<(&'static str, &'static str)>;

/// Counters of the WAL, the head and flushes.
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    pub(crate) rows_written: Family<SignalLabels, Counter>,
    pub(crate) wal_bytes: Counter,
    pub(crate) wal_fsyncs: Counter,
    pub(crate) wal_fsync_seconds: Histogram,
    pub(crate) buffered_bytes: Gauge,
    pub(crate) flushes: Counter,
    pub(crate) flush_errors: Counter,
    pub(crate) parquet_bytes: Counter,
    pub(crate) compactions: Counter,
    pub(crate) compaction_errors: Counter,
    pub(crate) compaction_seconds: Histogram,
    pub(crate) wal_corrupt_records: Counter,
    pub(crate) wal_torn_tails: Counter,
    pub(crate) wal_quarantined_segments: Counter,
    pub(crate) log_index_queue_bytes: Gauge,
    pub(crate) log_index_queue_waits: Counter,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        StorageMetrics {
            rows_written: Family::default(),
            wal_bytes: Counter::default(),
            wal_fsyncs: Counter::default(),
            wal_fsync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            buffered_bytes: Gauge::default(),
            flushes: Counter::default(),
            flush_errors: Counter::default(),
            parquet_bytes: Counter::default(),
            compactions: Counter::default(),
            compaction_errors: Counter::default(),
            compaction_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            wal_corrupt_records: Counter::default(),
            wal_torn_tails: Counter::default(),
            wal_quarantined_segments: Counter::default(),
            log_index_queue_bytes: Gauge::default(),
            log_index_queue_waits: Counter::default(),
        }
    }
}

impl StorageMetrics {
    /// Registers every metric under the `periscope_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "periscope_wal_rows",
            "Rows acknowledged into the write-ahead log, by signal",
            self.rows_written.clone(),
        );
        registry.register(
            "periscope_wal_bytes",
            "Bytes appended to the write-ahead log",
            self.wal_bytes.clone(),
        );
        registry.register(
            "periscope_wal_fsyncs",
            "Group commits (fsyncs) of the write-ahead log",
            self.wal_fsyncs.clone(),
        );
        registry.register(
            "periscope_wal_fsync_seconds",
            "Latency of one WAL group commit (write + fdatasync)",
            self.wal_fsync_seconds.clone(),
        );
        registry.register(
            "periscope_buffered_bytes",
            "Bytes of acknowledged rows held in memory until flushed to Parquet",
            self.buffered_bytes.clone(),
        );
        registry.register(
            "periscope_flushes",
            "Flushes of the in-memory head to Parquet",
            self.flushes.clone(),
        );
        registry.register(
            "periscope_flush_errors",
            "Flushes that failed and will be retried",
            self.flush_errors.clone(),
        );
        registry.register(
            "periscope_parquet_bytes",
            "Bytes of Parquet files written",
            self.parquet_bytes.clone(),
        );
        registry.register(
            "periscope_compactions",
            "Merges of small Parquet files into one",
            self.compactions.clone(),
        );
        registry.register(
            "periscope_compaction_errors",
            "Compactions that failed and will be retried",
            self.compaction_errors.clone(),
        );
        registry.register(
            "periscope_compaction_seconds",
            "Duration of one merge of a partition's small files, commit included",
            self.compaction_seconds.clone(),
        );
        registry.register(
            "periscope_wal_corrupt_records",
            "Damaged WAL records found at start-up with intact records after them (skipped; the rest recovered)",
            self.wal_corrupt_records.clone(),
        );
        registry.register(
            "periscope_wal_torn_tails",
            "WAL segments found at start-up ending in a torn (never acknowledged) write",
            self.wal_torn_tails.clone(),
        );
        registry.register(
            "periscope_wal_quarantined_segments",
            "WAL segments with skipped records kept in wal/quarantine/",
            self.wal_quarantined_segments.clone(),
        );
        registry.register(
            "periscope_log_index_queue_bytes",
            "Bytes of acknowledged log rows waiting for the head log index",
            self.log_index_queue_bytes.clone(),
        );
        registry.register(
            "periscope_log_index_queue_waits",
            "Times the WAL writer waited because the head log index queue was full",
            self.log_index_queue_waits.clone(),
        );
    }
}
