//! The store: the one handle through which rows are written and read.
//!
//! ```text
//! append(signal, rows) ──► WAL writer thread ──(group write + fdatasync)──► head ──► ack
//!                                                                             │
//!                        flusher task: rotate WAL, freeze head ──► part files ──► catalog
//!                                                                             │
//! snapshot(signal) ◄── head batches + catalog files, taken under one lock ◄───┘
//! ```
//!
//! This module holds the handle and its public operations (append, the read views); the
//! rest of the store's life has one module each: [`recovery`] (opening: catalog, orphans,
//! WAL replay), [`wal_writer`] (the thread that group-commits appends and rotates the
//! WAL), [`log_ids`] (ids of `logs` rows), [`maintenance`] (flush, retention and the
//! compaction commit, each ending in one catalog write), [`background`] (the loops that
//! run them) and [`gc`] (deleting the files dropped from the catalog, after the grace
//! period).
//!
//! # Lock order
//!
//! The store has four locks. A task may skip any of them but takes them only in this
//! order, never one after a later one:
//!
//! 1. `compaction_lock` (tokio mutex): one compaction round at a time, held for the
//!    whole round.
//! 2. `flush_lock` (tokio mutex): one catalog writer at a time. Flush, retention and the
//!    commit of a merge read the catalog, write a new one and swap it in under it, so
//!    none of them loses another's change. A flush holds it while it waits for the WAL
//!    writer to rotate; the writer takes no tokio lock, so that wait always ends.
//! 3. `state` (a `parking_lot` read-write lock over the head and the catalog): what a
//!    query sees, changed in one step so that a row is either in the head or in the
//!    files. It is held only for short steps in memory, never across an `.await`, a file
//!    write or a wait on the log index queue (the WAL writer hands rows to the index
//!    after releasing it).
//! 4. the [`gc`] list of dropped files (a `parking_lot` mutex): a merge checks it, under
//!    `state`, for a free output name.
//!
//! The locks inside the parts (the log index's subscribers and readers) are taken last
//! and hold nothing else; the memory budget is atomic.

mod background;
mod gc;
mod log_ids;
mod maintenance;
mod recovery;
#[cfg(test)]
pub(crate) mod tests;
mod wal_writer;
#[cfg(test)]
mod wire_tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use crate::budget::{Budget, Reservation};
use crate::catalog::{Catalog, FileEntry};
use crate::compaction::CompactionConfig;
use crate::error::{Error, Result};
use crate::flush::FlushLimits;
use crate::head::Head;
use crate::logindex::{FileIndexes, HeadIndex, LogFields, LogView};
use crate::metrics::StorageMetrics;
use crate::part_writer::WriteLimits;
use crate::reserve::Reserve;
use crate::retention::Retention;
use crate::schema::{self, Signal};
use crate::wal;
use log_ids::with_log_ids;
use wal_writer::Command;

/// How the store is set up.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory holding the WAL, the Parquet files and the catalog.
    pub data_dir: PathBuf,
    /// Flush the head to Parquet once it holds this many bytes.
    pub flush_bytes: u64,
    /// Flush the head to Parquet once its oldest row is this old.
    pub flush_interval: Duration,
    /// Refuse new rows (retryably) while this many bytes are buffered in memory.
    pub max_buffered_bytes: u64,
    /// How long each table keeps its rows.
    pub retention: Retention,
    /// How often retention is applied.
    pub retention_interval: Duration,
    /// How long a file dropped by retention or merged by compaction stays on disk for
    /// queries that may still be reading it (at least the query timeout).
    pub retention_grace: Duration,
    /// Memory a flush or a compaction may use at work, besides the rows it writes: rows
    /// are sorted half of it at a time, row groups are closed at a quarter of it, and the
    /// log index writer gets half of it (at least 15 MB).
    pub work_bytes: u64,
    /// When and what to compact.
    pub compaction: CompactionConfig,
    /// Turns requests logged as they arrived back into rows on replay; without one,
    /// [`Store::append_wire`] logs rows as [`Store::append`] does.
    pub wire_decoder: Option<crate::WireDecoder>,
}

impl StoreConfig {
    /// A configuration with defaults suited to `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            flush_bytes: 128 * 1024 * 1024,
            flush_interval: Duration::from_secs(60),
            max_buffered_bytes: 1024 * 1024 * 1024,
            retention: Retention::default(),
            retention_interval: Duration::from_secs(60),
            retention_grace: Duration::from_secs(60),
            work_bytes: 64 * 1024 * 1024,
            compaction: CompactionConfig::default(),
            wire_decoder: None,
        }
    }

    /// The write limits that follow from [`StoreConfig::work_bytes`].
    fn write_limits(&self) -> WriteLimits {
        WriteLimits {
            row_group_bytes: (self.work_bytes / 4).clamp(64 << 10, 256 << 20) as usize,
            index_bytes: (self.work_bytes / 2) as usize,
        }
    }

    /// The flush limits that follow from [`StoreConfig::work_bytes`].
    fn flush_limits(&self) -> FlushLimits {
        FlushLimits {
            chunk_bytes: (self.work_bytes / 2).max(64 << 10),
            write: self.write_limits(),
        }
    }
}

/// A consistent view of one table: the head's rows and the files, taken at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Rows not yet in files.
    pub batches: Vec<RecordBatch>,
    /// Files of the table, with absolute paths.
    pub files: Vec<FileEntry>,
    /// The data directory the file paths are relative to.
    pub data_dir: PathBuf,
}
struct State {
    head: Head,
    catalog: Catalog,
}

struct Inner {
    config: StoreConfig,
    wal_dir: PathBuf,
    state: RwLock<State>,
    commands: mpsc::Sender<Command>,
    budget: Arc<Budget>,
    reserve: Reserve,
    flush_lock: tokio::sync::Mutex<()>,
    metrics: StorageMetrics,
    next_log_id: AtomicU64,
    log_fields: LogFields,
    head_index: HeadIndex,
    file_indexes: FileIndexes,
    /// Span aggregates of the `spans` files, read once each.
    span_aggregates: crate::span_aggregates::Cache,
    metric_files: crate::sidecar_cache::Cache<crate::series_index::IndexedFile>,
    /// Files dropped from the catalog by retention or compaction, deleted once their
    /// time comes.
    doomed: gc::DroppedFiles,
    /// Set when the flusher stops: a running merge gives up.
    stopping: std::sync::atomic::AtomicBool,
    /// One compaction round at a time.
    compaction_lock: tokio::sync::Mutex<()>,
    /// Numbers merged files; never reused while the process runs, so a file name never
    /// means two different files to the caches keyed by path.
    next_merge: AtomicU64,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.inner.config.data_dir)
            .finish()
    }
}

impl Store {
    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// How long each table keeps its rows.
    pub fn retention(&self) -> Retention {
        self.inner.config.retention
    }

    /// The store's metrics, for registration on `/metrics`.
    pub fn metrics(&self) -> &StorageMetrics {
        &self.inner.metrics
    }

    /// Bytes of acknowledged rows currently held in memory.
    pub fn buffered_bytes(&self) -> u64 {
        self.inner.budget.used()
    }

    /// Whether unflushed rows fill their memory budget, so that any append would be
    /// refused: receivers check this before reading a request's body.
    pub fn is_full(&self) -> bool {
        self.inner.budget.is_full()
    }

    /// Durably appends rows to a table. Returns once the rows are fsynced in the WAL and
    /// visible to [`Store::snapshot`].
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the memory budget for unflushed rows is used up (retry
    /// later); an I/O error when the WAL cannot be written (nothing was acknowledged).
    pub async fn append(&self, signal: Signal, batch: RecordBatch) -> Result<()> {
        self.append_reserved(signal, batch, None, None).await
    }

    /// As [`Store::append`], for rows converted from `wire`, an export request as it
    /// arrived: the WAL logs `wire` instead of the rows (a fraction of the bytes, and no
    /// encoding), and replay converts it again with the store's
    /// [`StoreConfig::wire_decoder`], which must give exactly `batch`. Without a decoder,
    /// and for logs (whose ids are given here), the rows are logged.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn append_wire(&self, signal: Signal, batch: RecordBatch, wire: &[u8]) -> Result<()> {
        self.append_reserved(signal, batch, Some(wire), None).await
    }

    /// Reserves the unflushed rows' memory for `signal` rows of about `row_bytes` that a
    /// receiver is about to convert (counted as [`Store::append`] counts them), so that
    /// a request is refused before it is converted rather than after. Hand it to
    /// [`Store::append_reserved`], which makes it exactly what the rows hold; dropped, it
    /// gives the bytes back.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the bytes do not fit (retry later).
    pub fn reserve_rows(&self, signal: Signal, row_bytes: u64) -> Result<Reservation> {
        self.inner.budget.reserve(held(signal, row_bytes))
    }

    /// As [`Store::append_wire`] (or [`Store::append`] without `wire`), with memory
    /// reserved beforehand by [`Store::reserve_rows`]: it is resized to what the rows
    /// hold (more is reserved only when the estimate was short).
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn append_reserved(
        &self,
        signal: Signal,
        batch: RecordBatch,
        wire: Option<&[u8]>,
        reserved: Option<Reservation>,
    ) -> Result<()> {
        let wire =
            wire.filter(|_| signal != Signal::Logs && self.inner.config.wire_decoder.is_some());
        let batch = if signal == Signal::Logs {
            let first = self
                .inner
                .next_log_id
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            with_log_ids(batch, first)?
        } else {
            batch
        };
        // Given back on every path that does not end with the rows in the head, a
        // caller that stops waiting (cancels this future) included.
        let bytes = held_bytes(signal, &batch);
        let reservation = match reserved {
            Some(mut r) => {
                r.resize(bytes)?;
                r
            }
            None => self.inner.budget.reserve(bytes)?,
        };
        let record = match wire {
            Some(wire) => wal::encode_wire_record(signal, wire)?,
            None => wal::encode_record(signal, &batch)?,
        };
        let (done, wait) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Append {
                signal,
                batch,
                reservation,
                record,
                done,
            })
            .await
            .map_err(|_| Error::Closed)?;
        wait.await.map_err(|_| Error::Closed)?
    }

    /// A consistent view of one table.
    pub fn snapshot(&self, signal: Signal) -> Snapshot {
        let state = self.inner.state.read();
        Snapshot {
            batches: state.head.batches(signal),
            files: state
                .catalog
                .files
                .iter()
                .filter(|f| f.signal == signal.name())
                .cloned()
                .collect(),
            data_dir: self.inner.config.data_dir.clone(),
        }
    }

    /// A consistent picture of the `logs` table and its index, for one search.
    pub fn log_view(&self) -> LogView {
        let state = self.inner.state.read();
        let files: Vec<FileEntry> = state
            .catalog
            .files
            .iter()
            .filter(|f| f.signal == Signal::Logs.name())
            .cloned()
            .collect();
        let view = LogView {
            head: state.head.batches_with_seq(Signal::Logs),
            min_head_seq: state.head.min_seq(Signal::Logs),
            head_searcher: self.inner.head_index.searcher(),
            files,
            data_dir: self.inner.config.data_dir.clone(),
        };
        drop(state);
        self.inner.file_indexes.retain(&view.files);
        view
    }

    /// The searcher of the log index of one `logs` file of a [`LogView`], and whether
    /// its document numbers are the file's rows (set [`crate::logindex::Collect`]'s
    /// `rows_are_docs` to it).
    ///
    /// # Errors
    /// When the index cannot be opened.
    pub fn log_file_searcher(&self, file: &FileEntry) -> Result<(tantivy::Searcher, bool)> {
        self.inner
            .file_indexes
            .searcher(&self.inner.config.data_dir, file)
    }

    /// The parsed footer, with page index, of one `logs` file of a [`LogView`]; kept
    /// while the file is listed.
    ///
    /// # Errors
    /// When the file cannot be read or its footer is damaged.
    pub fn log_file_footer(
        &self,
        file: &FileEntry,
    ) -> Result<std::sync::Arc<parquet::file::metadata::ParquetMetaData>> {
        self.inner
            .file_indexes
            .footer(&self.inner.config.data_dir, file)
    }

    /// The schema of the log indexes, for building queries.
    pub fn log_fields(&self) -> &LogFields {
        &self.inner.log_fields
    }

    /// Live tail: new acknowledged `logs` rows that `query` matches (see
    /// [`HeadIndex::subscribe`]).
    pub fn subscribe_logs(
        &self,
        query: Box<dyn tantivy::query::Query>,
        capacity: usize,
    ) -> tokio::sync::mpsc::Receiver<RecordBatch> {
        // Under the state lock, so that no batch is acknowledged in between.
        let state = self.inner.state.read();
        let from_seq = state.head.next_seq();
        let receiver = self.inner.head_index.subscribe(query, from_seq, capacity);
        drop(state);
        receiver
    }

    /// The span aggregates of the given `spans` files (of a [`Snapshot`]), read once
    /// and cached (files never change), in the same order.
    ///
    /// # Errors
    /// When a file's aggregates can neither be read nor rebuilt from its rows.
    pub fn span_aggregates(
        &self,
        files: &[FileEntry],
    ) -> Result<Vec<Arc<periscope_spanagg::Summary>>> {
        self.inner
            .span_aggregates
            .get(&self.inner.config.data_dir, files)
    }

    /// The given `metrics` files (of a [`Snapshot`]) opened with their series indexes
    /// (see [`crate::series_index`]), read once and cached, in the same order.
    ///
    /// # Errors
    /// When a file or its index cannot be read.
    pub fn metric_files(
        &self,
        files: &[FileEntry],
    ) -> Result<Vec<Arc<crate::series_index::IndexedFile>>> {
        let data_dir = &self.inner.config.data_dir;
        self.inner.metric_files.get(files, |f| {
            crate::series_index::IndexedFile::open(&data_dir.join(&f.path))
        })
    }

    /// Every file in the catalog.
    pub fn files(&self) -> Vec<FileEntry> {
        self.inner.state.read().catalog.files.clone()
    }
}

/// Memory that holding `batch` in the head costs: its Arrow buffers (their slices: a
/// batch replayed from the WAL shares one buffer among its columns), and for `logs` as
/// much again for the head's search index (its in-memory tantivy segments), so the memory budget
/// covers the index too.
fn held_bytes(signal: Signal, batch: &RecordBatch) -> u64 {
    held(signal, schema::batch_bytes(batch))
}

/// What rows of `bytes` hold in the head (see [`held_bytes`]).
fn held(signal: Signal, bytes: u64) -> u64 {
    if signal == Signal::Logs {
        bytes.saturating_mul(2)
    } else {
        bytes
    }
}
