//! The store: the one handle through which rows are written and read.
//!
//! ```text
//! append(signal, rows) ──► WAL writer thread ──(group write + fdatasync)──► head ──► ack
//!                                                                             │
//!                        flusher task: rotate WAL, freeze head ──► Parquet files ──► catalog
//!                                                                             │
//! snapshot(signal) ◄── head batches + catalog files, taken under one lock ◄───┘
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::budget::{Budget, Reservation};
use crate::catalog::{Catalog, FileEntry};
use crate::compaction::{self, CompactionConfig, MergeTarget};
use crate::error::{Error, Result};
use crate::filewriter::WriteLimits;
use crate::head::Head;
use crate::logindex::{self, FileIndexes, HeadIndex, LogFields, LogView};
use crate::metrics::StorageMetrics;
use crate::reserve::{self, Reserve};
use crate::retention::{self, Retention};
use crate::schema::{self, Signal};
use crate::segment::{self, FlushLimits};
use crate::wal::{self, Log};

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

enum Command {
    Append {
        signal: Signal,
        batch: RecordBatch,
        /// Given back if the command is dropped before its rows reach the head.
        reservation: Reservation,
        record: Vec<u8>,
        done: oneshot::Sender<Result<()>>,
    },
    Rotate {
        done: oneshot::Sender<Result<u64>>,
    },
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
    /// Files dropped from the catalog by retention or compaction, deleted once their
    /// time comes.
    doomed: parking_lot::Mutex<Vec<(Instant, FileEntry)>>,
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
    /// Opens (or creates) the store in `config.data_dir`: loads the catalog, removes the
    /// orphans of an interrupted flush, replays the WAL into the head and starts the WAL
    /// writer thread.
    ///
    /// # Errors
    /// When the directory cannot be created or read, or the catalog is damaged.
    pub fn open(config: StoreConfig) -> Result<Store> {
        let data_dir = config.data_dir.clone();
        let wal_dir = data_dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(Error::io("create data directory", &wal_dir))?;
        let catalog = Catalog::load(&data_dir)?;
        for orphan in catalog.remove_orphans(&data_dir)? {
            info!(path = %orphan.display(), "Removed a file left by an interrupted flush.");
        }
        let log_fields = LogFields::new();
        build_missing_indexes(&data_dir, &catalog, &log_fields)?;
        let metrics = StorageMetrics::default();
        let head_index = HeadIndex::start(
            log_fields.clone(),
            config.write_limits().index_bytes,
            metrics.log_index_queue_bytes.clone(),
            metrics.log_index_queue_waits.clone(),
        )?;
        let budget = Budget::new(config.max_buffered_bytes, metrics.buffered_bytes.clone());
        let mut next_log_id = catalog.next_log_id;
        let mut head = Head::default();
        let mut last_segment = catalog.flushed_upto;
        let mut replayed_rows = 0usize;
        for id in wal::list_segments(&wal_dir)? {
            let path = wal::segment_path(&wal_dir, id);
            if id <= catalog.flushed_upto {
                std::fs::remove_file(&path)
                    .map_err(Error::io("remove flushed WAL segment", &path))?;
                continue;
            }
            last_segment = last_segment.max(id);
            let replayed = wal::replay_segment(&path)?;
            report_damage(&path, &replayed, &metrics);
            if replayed.format < wal::FORMAT {
                info!(path = %path.display(), format = replayed.format, "Replaying a WAL segment of an older format; its rows are converted and written in today's format.");
            }
            for (signal, batch) in replayed.batches {
                let bytes = held_bytes(signal, &batch);
                replayed_rows += batch.num_rows();
                budget.hold(bytes);
                if signal == Signal::Logs {
                    next_log_id = next_log_id.max(max_log_id(&batch).map_or(0, |id| id + 1));
                    let seq = head.push(signal, batch.clone(), bytes);
                    head_index.add(seq, batch);
                } else {
                    head.push(signal, batch, bytes);
                }
            }
        }
        if replayed_rows > 0 {
            info!(rows = replayed_rows, "Replayed the write-ahead log.");
        }
        let log = Log::new(&wal_dir, last_segment);
        let reserve = Reserve::new(&data_dir, reserve::RESERVE_BYTES);
        reserve.ensure();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let inner = Arc::new(Inner {
            config,
            wal_dir,
            state: RwLock::new(State { head, catalog }),
            commands: tx,
            budget,
            reserve,
            flush_lock: tokio::sync::Mutex::new(()),
            metrics,
            next_log_id: AtomicU64::new(next_log_id),
            log_fields,
            head_index,
            file_indexes: FileIndexes::default(),
            doomed: parking_lot::Mutex::new(Vec::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            compaction_lock: tokio::sync::Mutex::new(()),
            next_merge: AtomicU64::new(0),
        });
        let writer = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("periscope-wal".into())
            .spawn(move || wal_writer(writer, log, rx))
            .map_err(Error::io("start WAL writer thread", &data_dir))?;
        Ok(Store { inner })
    }

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
        let reservation = self.inner.budget.reserve(held_bytes(signal, &batch))?;
        let record = wal::encode_record(signal, &batch)?;
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

    /// The searcher of the log index of one `logs` file of a [`LogView`].
    ///
    /// # Errors
    /// When the index cannot be opened.
    pub fn log_file_searcher(&self, file: &FileEntry) -> Result<tantivy::Searcher> {
        self.inner
            .file_indexes
            .searcher(&self.inner.config.data_dir, file)
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

    /// Every file in the catalog.
    pub fn files(&self) -> Vec<FileEntry> {
        self.inner.state.read().catalog.files.clone()
    }

    /// Whether the head is due for a flush (by size or by age).
    fn flush_due(&self) -> bool {
        let state = self.inner.state.read();
        let cfg = &self.inner.config;
        state.head.active_bytes() >= cfg.flush_bytes
            // Under pressure, flush early so ingest is refused only while a flush runs.
            || self.buffered_bytes() >= cfg.max_buffered_bytes / 2
            || state
                .head
                .oldest_active()
                .is_some_and(|t| t.elapsed() >= cfg.flush_interval)
    }

    /// Writes everything in the head to Parquet files, commits them to the catalog and
    /// deletes the WAL segments they cover.
    ///
    /// # Errors
    /// When a file or the catalog cannot be written; the rows stay in the head and the
    /// WAL, and the next flush retries them.
    pub async fn flush(&self) -> Result<()> {
        let _guard = self.inner.flush_lock.lock().await;
        let started = Instant::now();
        let (done, wait) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Rotate { done })
            .await
            .map_err(|_| Error::Closed)?;
        let upto = wait.await.map_err(|_| Error::Closed)??;
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || inner.write_frozen(upto))
            .await
            .map_err(|_| Error::Closed)?;
        match result {
            Ok((rows, bytes)) => {
                self.inner.metrics.flushes.inc();
                self.inner.metrics.parquet_bytes.inc_by(bytes);
                if rows > 0 {
                    info!(
                        rows,
                        bytes,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "Flushed head to Parquet."
                    );
                }
                Ok(())
            }
            Err(error) => {
                self.inner.metrics.flush_errors.inc();
                Err(error)
            }
        }
    }

    /// Drops every file whose rows are all older than its table's retention from the
    /// catalog (one atomic catalog write), and schedules the files and their log indexes
    /// for deletion after the grace period. Returns the files and bytes dropped.
    ///
    /// # Errors
    /// When the catalog cannot be written; nothing is dropped then.
    pub async fn apply_retention(&self) -> Result<(usize, u64)> {
        let retention = self.inner.config.retention;
        if retention.is_off() {
            return Ok((0, 0));
        }
        // No flush may commit a catalog between our read and our write.
        let _guard = self.inner.flush_lock.lock().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let mut catalog = self.inner.state.read().catalog.clone();
        let (expired, kept): (Vec<FileEntry>, Vec<FileEntry>) = catalog
            .files
            .into_iter()
            .partition(|f| retention.expired(f, now));
        if expired.is_empty() {
            return Ok((0, 0));
        }
        catalog.files = kept;
        match self.commit_catalog(catalog.clone()).await {
            // A full disk: the catalog write needs the space it is meant to free.
            Err(error) if reserve::is_out_of_space(&error) && self.inner.reserve.release() => {
                warn!(%error, "The disk is full; retention uses the space reserve to drop files.");
                self.commit_catalog(catalog).await?;
            }
            result => result?,
        }
        let bytes: u64 = expired.iter().map(|f| f.bytes + f.index_bytes).sum();
        let files = expired.len();
        self.doom(expired);
        info!(
            files,
            bytes, "Retention dropped files older than their table's retention."
        );
        Ok((files, bytes))
    }

    /// Runs one round of compaction: merges the small files of every partition that
    /// has enough of them (see [`CompactionConfig`]), one partition at a time, one round
    /// at a time. A partition whose merge fails is logged, counted in
    /// `periscope_compaction_errors` and left as it was; the others go on. Returns the
    /// number of files merged away.
    pub async fn compact(&self) -> usize {
        let _round = self.inner.compaction_lock.lock().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let plans = {
            let state = self.inner.state.read();
            compaction::plan(&state.catalog.files, &self.inner.config.compaction, now)
        };
        let mut merged = 0;
        for inputs in plans {
            if self.inner.stopping.load(Ordering::Relaxed) {
                break;
            }
            let partition = compaction::partition_of(&inputs[0]).to_string();
            match self.compact_one(inputs).await {
                Ok(n) => merged += n,
                Err(error) => {
                    self.inner.metrics.compaction_errors.inc();
                    warn!(%error, partition, "Compacting a partition failed, will retry.");
                }
            }
        }
        merged
    }

    /// Merges `inputs` (files of one partition) and swaps the result in.
    async fn compact_one(&self, inputs: Vec<FileEntry>) -> Result<usize> {
        let Some(signal) = Signal::ALL
            .into_iter()
            .find(|s| inputs.first().is_some_and(|f| f.signal == s.name()))
        else {
            return Ok(0);
        };
        let started = Instant::now();
        let rel_dir = compaction::partition_of(&inputs[0]).to_string();
        let name = {
            let state = self.inner.state.read();
            let catalog = &state.catalog;
            let data_dir = &self.inner.config.data_dir;
            std::iter::repeat_with(|| self.inner.next_merge.fetch_add(1, Ordering::Relaxed))
                .map(|n| format!("c{:012}-{n:03}.parquet", catalog.flushed_upto))
                .find(|name| {
                    let rel = format!("{rel_dir}/{name}");
                    !catalog.files.iter().any(|f| f.path == rel)
                        && !data_dir.join(&rel).exists()
                        && !self.inner.doomed.lock().iter().any(|(_, f)| f.path == rel)
                })
                .unwrap_or_default()
        };
        let inner = Arc::clone(&self.inner);
        let merge_inputs = inputs.clone();
        let output = tokio::task::spawn_blocking(move || {
            let target = MergeTarget {
                rel_dir: &rel_dir,
                name: &name,
                log_fields: &inner.log_fields,
                limits: inner.config.write_limits(),
                read_bytes: (inner.config.work_bytes / 2) as usize,
                stop: &inner.stopping,
            };
            compaction::merge(&inner.config.data_dir, signal, &merge_inputs, &target)
        })
        .await
        .map_err(|_| Error::Closed)??;
        let Some(output) = output else {
            return Ok(0);
        };
        // No flush or retention may commit a catalog between our read and our write.
        let _guard = self.inner.flush_lock.lock().await;
        let mut catalog = self.inner.state.read().catalog.clone();
        if !inputs.iter().all(|i| catalog.files.contains(i)) {
            // Retention dropped an input meanwhile: give the merge up.
            let data_dir = &self.inner.config.data_dir;
            retention::delete(data_dir, &output)
                .map_err(Error::io("remove", data_dir.join(&output.path)))?;
            return Ok(0);
        }
        catalog.files.retain(|f| !inputs.contains(f));
        catalog.files.push(output.clone());
        self.commit_catalog(catalog).await?;
        let files = inputs.len();
        let input_bytes: u64 = inputs.iter().map(|f| f.bytes).sum();
        self.doom(inputs);
        self.inner.metrics.compactions.inc();
        self.inner
            .metrics
            .compaction_seconds
            .observe(started.elapsed().as_secs_f64());
        info!(
            files,
            rows = output.rows,
            input_bytes,
            output_bytes = output.bytes,
            path = %output.path,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Compacted small files into one."
        );
        Ok(files)
    }

    /// Runs compaction rounds every [`CompactionConfig::interval`] until `shutdown`
    /// resolves; a merge running then is given up.
    async fn run_compactor(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let interval = self.inner.config.compaction.interval;
        if interval.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            self.compact().await;
        }
    }

    /// Writes `catalog` (atomically, on a blocking thread) and makes it the one queries
    /// see. The caller holds the flush lock.
    async fn commit_catalog(&self, catalog: Catalog) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let stored = catalog.clone();
        tokio::task::spawn_blocking(move || stored.store(&inner.config.data_dir))
            .await
            .map_err(|_| Error::Closed)??;
        self.inner.state.write().catalog = catalog;
        Ok(())
    }

    /// Schedules files no longer in the catalog for deletion once queries that may have
    /// listed them are over (the grace period).
    fn doom(&self, files: Vec<FileEntry>) {
        let due = Instant::now() + self.inner.config.retention_grace;
        self.inner
            .doomed
            .lock()
            .extend(files.into_iter().map(|f| (due, f)));
    }

    /// Deletes the files dropped by retention or merged away by compaction whose grace
    /// period has passed.
    fn delete_doomed(&self) {
        let now = Instant::now();
        let due: Vec<FileEntry> = {
            let mut doomed = self.inner.doomed.lock();
            let (due, later): (Vec<_>, Vec<_>) = doomed.drain(..).partition(|(t, _)| *t <= now);
            *doomed = later;
            due.into_iter().map(|(_, f)| f).collect()
        };
        for f in due {
            if let Err(error) = retention::delete(&self.inner.config.data_dir, &f) {
                // Not in the catalog any more: the next start removes it as an orphan.
                warn!(%error, path = %f.path, "Could not delete a file dropped by retention or compaction.");
            }
        }
    }

    /// Runs flushes by size and age, and retention, until `shutdown` resolves, then
    /// flushes once more.
    pub async fn run_flusher(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let compactor = tokio::spawn(self.clone().run_compactor(shutdown.clone()));
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_retention: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            if self.flush_due()
                && let Err(error) = self.flush().await
            {
                warn!(%error, "Flush failed, will retry.");
            }
            if last_retention.is_none_or(|t| t.elapsed() >= self.inner.config.retention_interval) {
                last_retention = Some(Instant::now());
                if let Err(error) = self.apply_retention().await {
                    warn!(%error, "Applying retention failed, will retry.");
                }
                // Made again once what retention dropped is deleted; not more often,
                // since a try on a full disk holds its free space for a moment.
                if self.inner.doomed.lock().is_empty() {
                    self.inner.reserve.ensure();
                }
            }
            self.delete_doomed();
        }
        self.inner.stopping.store(true, Ordering::Relaxed);
        let _ = compactor.await;
        if let Err(error) = self.flush().await {
            warn!(%error, "Final flush at shutdown failed; the WAL keeps the rows for the next start.");
        }
    }
}

impl Inner {
    /// Writes the frozen head to files and commits them; returns rows and bytes written.
    /// A flush that fails deletes every file it wrote at once, so retries on a nearly
    /// full disk do not eat the space they wait for.
    fn write_frozen(&self, upto: u64) -> Result<(u64, u64)> {
        let data_dir = &self.config.data_dir;
        let mut outputs = Vec::new();
        let written = self.write_and_commit(upto, &mut outputs);
        if written.is_err() {
            segment::remove_outputs(data_dir, &outputs);
        }
        let (written, catalog) = written?;
        let released = {
            // One step: a query sees the rows either in the head or in the files.
            let mut state = self.state.write();
            state.catalog = catalog;
            let released = state.head.release_frozen();
            self.budget.release(released);
            state.head.min_seq(Signal::Logs)
        };
        self.head_index.release_below(released);
        for id in wal::list_segments(&self.wal_dir)? {
            if id <= upto {
                let path = wal::segment_path(&self.wal_dir, id);
                if let Err(error) = std::fs::remove_file(&path) {
                    warn!(%error, path = %path.display(), "Could not remove a flushed WAL segment.");
                }
            }
        }
        let rows = written.iter().map(|f| f.rows).sum();
        let bytes = written.iter().map(|f| f.bytes).sum();
        Ok((rows, bytes))
    }

    /// The work of [`Inner::write_frozen`] up to the catalog write; returns the files
    /// written and the new catalog. `outputs` collects every file it starts.
    fn write_and_commit(
        &self,
        upto: u64,
        outputs: &mut Vec<String>,
    ) -> Result<(Vec<FileEntry>, Catalog)> {
        let data_dir = &self.config.data_dir;
        let mut written = Vec::new();
        for signal in Signal::ALL {
            let frozen = self.state.read().head.frozen(signal);
            written.extend(segment::write_files(
                data_dir,
                signal,
                &frozen,
                upto,
                &self.log_fields,
                self.config.flush_limits(),
                outputs,
            )?);
        }
        let mut catalog = self.state.read().catalog.clone();
        catalog.files.extend(written.iter().cloned());
        catalog.flushed_upto = upto;
        catalog.next_log_id = self.next_log_id.load(Ordering::Relaxed);
        catalog.version = 1;
        catalog.store(data_dir)?;
        Ok((written, catalog))
    }
}

/// How many appends may wait for the WAL writer.
const COMMAND_QUEUE: usize = if cfg!(test) { 64 } else { 4096 };

/// Memory that holding `batch` in the head costs: its Arrow buffers (their slices: a
/// batch replayed from the WAL shares one buffer among its columns), and for `logs` as
/// much again for the head's search index (its in-memory segments), so the memory budget
/// covers the index too.
fn held_bytes(signal: Signal, batch: &RecordBatch) -> u64 {
    let bytes = schema::batch_bytes(batch);
    if signal == Signal::Logs {
        bytes * 2
    } else {
        bytes
    }
}

/// Counts, logs and quarantines what replaying one segment had to skip. A segment that
/// cannot be quarantined (a full disk) is logged as an error and replayed all the same:
/// refusing to start would keep every acknowledged row of the WAL from being served.
fn report_damage(path: &Path, replayed: &wal::Replayed, metrics: &StorageMetrics) {
    if replayed.skipped == 0 {
        return;
    }
    metrics.wal_corrupt_records.inc_by(replayed.corrupt as u64);
    metrics.wal_torn_tails.inc_by(u64::from(replayed.torn));
    match wal::quarantine(path) {
        Ok(kept) => {
            metrics.wal_quarantined_segments.inc();
            warn!(
                path = %path.display(),
                corrupt = replayed.corrupt,
                torn_tail = replayed.torn,
                recovered_records = replayed.recovered,
                replayed_batches = replayed.batches.len(),
                quarantine = %kept.display(),
                "WAL segment had damaged records; they were skipped, the intact ones replayed, and the segment kept in quarantine."
            );
        }
        Err(error) => tracing::error!(
            path = %path.display(),
            corrupt = replayed.corrupt,
            torn_tail = replayed.torn,
            recovered_records = replayed.recovered,
            %error,
            "WAL segment had damaged records and could not be quarantined; it will be deleted after the next flush. Copy it now to keep it."
        ),
    }
}

/// The WAL writer thread: group commit of every queued append, and rotation on request.
fn wal_writer(inner: Arc<Inner>, mut log: Log, mut rx: mpsc::Receiver<Command>) {
    let mut group: Vec<Command> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < 8192 {
            match rx.try_recv() {
                Ok(cmd) => group.push(cmd),
                Err(_) => break,
            }
        }
        let mut appends = Vec::new();
        for cmd in group.drain(..) {
            match cmd {
                Command::Append { .. } => appends.push(cmd),
                Command::Rotate { done } => {
                    commit(&inner, &mut log, std::mem::take(&mut appends));
                    let _ = done.send(Ok(rotate(&inner, &mut log)));
                }
            }
        }
        commit(&inner, &mut log, appends);
    }
    debug!("WAL writer stopped.");
}

/// Starts a new segment and freezes the head, atomically with respect to appends.
fn rotate(inner: &Inner, log: &mut Log) -> u64 {
    let upto = log.rotate();
    inner.state.write().head.freeze();
    upto
}

fn commit(inner: &Inner, log: &mut Log, appends: Vec<Command>) {
    if appends.is_empty() {
        return;
    }
    let total: usize = appends
        .iter()
        .map(|c| match c {
            Command::Append { record, .. } => record.len(),
            Command::Rotate { .. } => 0,
        })
        .sum();
    let mut buf = Vec::with_capacity(total);
    for c in &appends {
        if let Command::Append { record, .. } = c {
            buf.extend_from_slice(record);
        }
    }
    let started = Instant::now();
    let result = log.append(&buf);
    inner
        .metrics
        .wal_fsync_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            inner.metrics.wal_fsyncs.inc();
            inner.metrics.wal_bytes.inc_by(buf.len() as u64);
            let mut dones = Vec::with_capacity(appends.len());
            let mut to_index = Vec::new();
            {
                let mut state = inner.state.write();
                for c in appends {
                    if let Command::Append {
                        signal,
                        batch,
                        reservation,
                        done,
                        ..
                    } = c
                    {
                        inner
                            .metrics
                            .rows_written
                            .get_or_create(&vec![("signal", signal.name())])
                            .inc_by(batch.num_rows() as u64);
                        let bytes = reservation.into_head();
                        if signal == Signal::Logs {
                            let seq = state.head.push(signal, batch.clone(), bytes);
                            to_index.push((seq, batch));
                        } else {
                            state.head.push(signal, batch, bytes);
                        }
                        dones.push(done);
                    }
                }
            }
            // Outside the state lock: the index queue may make this thread wait.
            for (seq, batch) in to_index {
                inner.head_index.add(seq, batch);
            }
            for done in dones {
                let _ = done.send(Ok(()));
            }
        }
        Err(error) => {
            warn!(%error, "WAL write failed; the exports in this group are refused.");
            let message = error.to_string();
            let os = match &error {
                Error::Io { source, .. } => source.raw_os_error(),
                _ => None,
            };
            for c in appends {
                if let Command::Append { done, .. } = c {
                    let source = match os {
                        Some(code) => std::io::Error::from_raw_os_error(code),
                        None => std::io::Error::other(message.clone()),
                    };
                    let _ = done.send(Err(Error::Io {
                        op: "append to WAL",
                        path: inner.wal_dir.clone(),
                        source,
                    }));
                }
            }
        }
    }
}

/// `batch` with its `log_id` column set to `first`, `first + 1`, ….
fn with_log_ids(batch: RecordBatch, first: u64) -> Result<RecordBatch> {
    let schema = batch.schema();
    let Ok(index) = schema.index_of("log_id") else {
        return Err(Error::Schema("logs batch lacks column `log_id`".into()));
    };
    let ids = arrow::array::UInt64Array::from_iter_values(first..first + batch.num_rows() as u64);
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(ids);
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The largest `log_id` in a `logs` batch.
fn max_log_id(batch: &RecordBatch) -> Option<u64> {
    let ids = batch
        .column_by_name("log_id")?
        .as_any()
        .downcast_ref::<arrow::array::UInt64Array>()?;
    arrow::compute::max(ids)
}

/// Builds the log index of every `logs` file that has none (files written before the
/// index existed, or whose index was removed by hand).
fn build_missing_indexes(data_dir: &Path, catalog: &Catalog, fields: &LogFields) -> Result<()> {
    for file in catalog
        .files
        .iter()
        .filter(|f| f.signal == Signal::Logs.name())
    {
        let path = data_dir.join(&file.path);
        let dir = logindex::index_path(&path);
        if dir.join("meta.json").exists() {
            continue;
        }
        info!(path = %path.display(), "Building the missing log index of a file.");
        let reader = std::fs::File::open(&path).map_err(Error::io("open", &path))?;
        let batches: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(reader)?
                .build()?
                .collect::<std::result::Result<_, _>>()?;
        let all = arrow::compute::concat_batches(&Signal::Logs.schema(), &batches)?;
        logindex::build_file_index(&dir, fields, &all)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn spans(n: usize, seed: u8) -> RecordBatch {
        spans_at(n, seed, 1_700_000_000_000_000_000)
    }

    /// `n` spans of trace `seed` starting at `base` (Unix ns).
    fn spans_at(n: usize, seed: u8, base: u64) -> RecordBatch {
        let spans = (0..n)
            .map(|i| Span {
                trace_id: vec![seed; 16],
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                name: "op".into(),
                start_time_unix_nano: base + i as u64,
                end_time_unix_nano: base + 100 + i as u64,
                ..Default::default()
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        otlp::spans(&req).unwrap().batch.unwrap()
    }

    fn rows(s: &Snapshot) -> usize {
        s.batches.iter().map(|b| b.num_rows()).sum::<usize>()
            + s.files.iter().map(|f| f.rows as usize).sum::<usize>()
    }

    #[tokio::test]
    async fn acknowledged_rows_survive_a_reopen_without_flush() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            store.append(Signal::Spans, spans(3, 1)).await.unwrap();
            store.append(Signal::Spans, spans(2, 2)).await.unwrap();
            assert_eq!(rows(&store.snapshot(Signal::Spans)), 5);
        }
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 5);
        assert_eq!(rows(&store.snapshot(Signal::Logs)), 0);
    }

    #[tokio::test]
    async fn flushed_rows_are_in_files_once_and_the_wal_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.append(Signal::Spans, spans(4, 1)).await.unwrap();
        store.flush().await.unwrap();
        let snap = store.snapshot(Signal::Spans);
        assert!(snap.batches.is_empty());
        assert_eq!(rows(&snap), 4);
        assert_eq!(store.buffered_bytes(), 0);
        store.append(Signal::Spans, spans(1, 2)).await.unwrap();
        drop(store);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(
            rows(&store.snapshot(Signal::Spans)),
            5,
            "no row lost or doubled"
        );
        // Only the segment after the flush may remain (plus the new one).
        let segments = wal::list_segments(&dir.path().join("wal")).unwrap();
        assert!(segments.iter().all(|id| *id > 1), "{segments:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_during_a_flush_see_every_row_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        for seed in 1..=20 {
            store.append(Signal::Spans, spans(50, seed)).await.unwrap();
        }
        let watcher = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut seen = 0usize;
                loop {
                    let snapshot = store.snapshot(Signal::Spans);
                    assert_eq!(rows(&snapshot), 1000, "a row vanished or doubled mid-flush");
                    seen += 1;
                    if !snapshot.files.is_empty() {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        store.flush().await.unwrap();
        let snapshots = watcher.await.unwrap();
        assert!(snapshots > 0);
        let after = store.snapshot(Signal::Spans);
        assert!(after.batches.is_empty());
        assert_eq!(rows(&after), 1000);
    }

    #[tokio::test]
    async fn over_the_memory_budget_appends_are_refused_retryably() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.max_buffered_bytes = 1;
        let store = Store::open(cfg).unwrap();
        let err = store.append(Signal::Spans, spans(3, 1)).await.unwrap_err();
        assert!(matches!(err, Error::Overloaded { .. }));
        assert!(err.is_retryable());
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 0);
        assert_eq!(store.buffered_bytes(), 0);
    }

    #[tokio::test]
    async fn a_crash_between_files_and_catalog_leaves_no_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            store.append(Signal::Spans, spans(4, 1)).await.unwrap();
        }
        // Simulate a flush that wrote its file but crashed before the catalog commit.
        let replayed = wal::replay_segment(&wal::segment_path(&dir.path().join("wal"), 1)).unwrap();
        let batches: Vec<_> = replayed.batches.into_iter().map(|(_, b)| b).collect();
        segment::write_files(
            dir.path(),
            Signal::Spans,
            &batches,
            1,
            &LogFields::new(),
            segment::TEST_LIMITS,
            &mut Vec::new(),
        )
        .unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 4);
        assert!(store.snapshot(Signal::Spans).files.is_empty());
    }

    fn logs(bodies: &[&str]) -> RecordBatch {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let records = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| LogRecord {
                time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                body: Some(AnyValue {
                    value: Some(Value::StringValue((*b).into())),
                }),
                ..Default::default()
            })
            .collect();
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        otlp::logs(&req, 1).unwrap().batch.unwrap()
    }

    /// Matching documents in the view's head (skipping flushed batches) and files.
    fn indexed(store: &Store, word: &str) -> (u64, u64) {
        use tantivy::query::TermQuery;
        let view = store.log_view();
        let term = tantivy::Term::from_field_text(store.log_fields().body, word);
        let query = TermQuery::new(term, tantivy::schema::IndexRecordOption::Basic);
        let collect = |min_head_seq| logindex::Collect {
            start: i64::MIN,
            end: i64::MAX,
            limit: 10,
            before: None,
            histogram: None,
            min_head_seq,
        };
        let head = view
            .head_searcher
            .search(&query, &collect(Some(view.min_head_seq)))
            .unwrap()
            .total;
        let files = view
            .files
            .iter()
            .map(|f| {
                store
                    .log_file_searcher(f)
                    .unwrap()
                    .search(&query, &collect(None))
                    .unwrap()
                    .total
            })
            .sum();
        (head, files)
    }

    async fn until_indexed(store: &Store, word: &str, want: (u64, u64)) {
        for _ in 0..100 {
            if indexed(store, word) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{word}: {:?}, expected {want:?}", indexed(store, word));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_index_follows_rows_through_flush_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            store
                .append(Signal::Logs, logs(&["disk full", "disk ok"]))
                .await
                .unwrap();
            until_indexed(&store, "disk", (2, 0)).await;
            store.flush().await.unwrap();
            // At once after the flush: counted in the file, not again in the head.
            assert_eq!(indexed(&store, "disk"), (0, 2));
            store
                .append(Signal::Logs, logs(&["disk again"]))
                .await
                .unwrap();
            until_indexed(&store, "disk", (1, 2)).await;
        }
        // Restart: the head index is rebuilt from the WAL; a lost file index is rebuilt.
        let file = Catalog::load(dir.path()).unwrap().files[0].path.clone();
        std::fs::remove_dir_all(logindex::index_path(&dir.path().join(file))).unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        until_indexed(&store, "disk", (1, 2)).await;
        store.append(Signal::Logs, logs(&["next"])).await.unwrap();
        let ids: Vec<u64> = store
            .snapshot(Signal::Logs)
            .batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("log_id")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<arrow::array::UInt64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(ids, [2, 3], "log ids continue after a restart");
    }

    fn compacting(dir: &Path) -> StoreConfig {
        let mut config = StoreConfig::new(dir);
        config.compaction.interval = Duration::ZERO;
        config.compaction.min_files = 2;
        config.retention_grace = Duration::ZERO;
        config
    }

    /// A merge of `files`' partition into `name`, for calling `compaction::merge` directly.
    fn target<'a>(
        store: &'a Store,
        files: &'a [FileEntry],
        name: &'a str,
        stop: &'a std::sync::atomic::AtomicBool,
    ) -> MergeTarget<'a> {
        MergeTarget {
            rel_dir: compaction::partition_of(&files[0]),
            name,
            log_fields: store.log_fields(),
            limits: store.inner.config.write_limits(),
            read_bytes: 1 << 20,
            stop,
        }
    }

    fn read_file(dir: &Path, f: &FileEntry) -> RecordBatch {
        let file = std::fs::File::open(dir.join(&f.path)).unwrap();
        let batches: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .collect::<std::result::Result<_, _>>()
                .unwrap();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    /// (start time, trace id, span id) of every span in the table's files, in file order.
    fn file_spans(dir: &Path, store: &Store) -> Vec<Vec<(i64, String, String)>> {
        use arrow::array::AsArray;
        store
            .snapshot(Signal::Spans)
            .files
            .iter()
            .map(|f| {
                let b = read_file(dir, f);
                let t = b
                    .column_by_name("start_time")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                    .clone();
                let column = |name| b.column_by_name(name).unwrap().as_string::<i32>().clone();
                let (trace, span) = (column("trace_id"), column("span_id"));
                (0..b.num_rows())
                    .map(|i| {
                        (
                            t.value(i),
                            trace.value(i).to_string(),
                            span.value(i).to_string(),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_merges_small_files_into_one_file_of_sorted_row_groups_with_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = compacting(dir.path());
        // Small enough that one flush of 600 spans writes several chunk files.
        config.work_bytes = 64 << 10;
        let store = Store::open(config.clone()).unwrap();
        // Every span distinct (a trace per append), so a lost row and a doubled one cannot
        // cancel out.
        for flush in 0..4u8 {
            for k in 1..=3u8 {
                store
                    .append(Signal::Spans, spans(200, flush * 3 + k))
                    .await
                    .unwrap();
            }
            store.flush().await.unwrap();
        }
        let before = store.snapshot(Signal::Spans).files;
        assert!(before.len() > 4, "one file per chunk: {}", before.len());
        let mut rows_before: Vec<_> = file_spans(dir.path(), &store).concat();
        rows_before.sort();
        assert_eq!(rows_before.len(), 2400);
        assert!(
            rows_before.windows(2).all(|w| w[0] != w[1]),
            "distinct rows"
        );

        let merged = store.compact().await;
        assert_eq!(merged, before.len());
        let after = store.snapshot(Signal::Spans).files;
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(after[0].path.contains("/c"), "{}", after[0].path);
        assert_eq!(after[0].rows, 2400);
        let in_file = file_spans(dir.path(), &store).concat();
        // Every row group is sorted by the sort key (service, then start time).
        let file = std::fs::File::open(dir.path().join(&after[0].path)).unwrap();
        let builder =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let groups = builder.metadata().num_row_groups();
        assert!(groups > 1, "small work memory makes several row groups");
        for g in 0..groups {
            let file = std::fs::File::open(dir.path().join(&after[0].path)).unwrap();
            let times: Vec<i64> =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .with_row_groups(vec![g])
                    .build()
                    .unwrap()
                    .flat_map(|b| {
                        let b = b.unwrap();
                        let t = arrow::array::AsArray::as_primitive::<
                            arrow::datatypes::TimestampNanosecondType,
                        >(b.column_by_name("start_time").unwrap())
                        .clone();
                        t.values().to_vec()
                    })
                    .collect();
            assert!(times.is_sorted(), "row group {g} is not sorted by time");
        }
        let mut rows_after = in_file;
        rows_after.sort();
        assert_eq!(
            rows_after, rows_before,
            "the same rows, none lost or doubled"
        );

        // The inputs are deleted once their grace period is over, the output stays.
        store.delete_doomed();
        for f in &before {
            assert!(!dir.path().join(&f.path).exists(), "{} left", f.path);
        }
        assert!(dir.path().join(&after[0].path).exists());
        assert_eq!(store.compact().await, 0, "nothing more to merge");
        drop(store);
        let store = Store::open(config).unwrap();
        assert_eq!(store.snapshot(Signal::Spans).files, after);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compacted_logs_keep_a_working_index() {
        let dir = tempfile::tempdir().unwrap();
        let config = compacting(dir.path());
        let store = Store::open(config.clone()).unwrap();
        for words in [
            ["disk full", "cpu hot"],
            ["disk ok", "net down"],
            ["disk gone", "fan"],
        ] {
            store.append(Signal::Logs, logs(&words)).await.unwrap();
            store.flush().await.unwrap();
        }
        until_indexed(&store, "disk", (0, 3)).await;
        assert_eq!(store.compact().await, 3);
        assert_eq!(store.snapshot(Signal::Logs).files.len(), 1);
        until_indexed(&store, "disk", (0, 3)).await;
        until_indexed(&store, "fan", (0, 1)).await;
        // Every hit's locator points at a row with the word in its body.
        let view = store.log_view();
        let file = &view.files[0];
        let batch = read_file(dir.path(), file);
        let bodies =
            arrow::array::AsArray::as_string::<i32>(batch.column_by_name("body").unwrap()).clone();
        let term = tantivy::Term::from_field_text(store.log_fields().body, "disk");
        let query = tantivy::query::TermQuery::new(term, tantivy::schema::IndexRecordOption::Basic);
        let found = store
            .log_file_searcher(file)
            .unwrap()
            .search(
                &query,
                &logindex::Collect {
                    start: i64::MIN,
                    end: i64::MAX,
                    limit: 10,
                    before: None,
                    histogram: None,
                    min_head_seq: None,
                },
            )
            .unwrap();
        assert_eq!(found.hits.len(), 3);
        for hit in &found.hits {
            assert!(bodies.value(hit.locator as usize).contains("disk"));
        }
        drop(store);
        let store = Store::open(config).unwrap();
        until_indexed(&store, "disk", (0, 3)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_before_or_after_the_compaction_commit_loses_and_doubles_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = compacting(dir.path());
        config.retention_grace = Duration::from_secs(3600);
        {
            let store = Store::open(config.clone()).unwrap();
            for seed in 1..4u8 {
                store.append(Signal::Spans, spans(50, seed)).await.unwrap();
                store.flush().await.unwrap();
            }
            // A merge whose output was written but never committed: an orphan.
            let files = store.snapshot(Signal::Spans).files;
            let stop = std::sync::atomic::AtomicBool::new(false);
            let target = target(&store, &files, "c999999999999-000.parquet", &stop);
            let orphan = compaction::merge(dir.path(), Signal::Spans, &files, &target)
                .unwrap()
                .unwrap();
            assert!(dir.path().join(&orphan.path).exists());
        }
        let store = Store::open(config.clone()).unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 150);
        assert_eq!(store.snapshot(Signal::Spans).files.len(), 3);
        assert!(
            !dir.path()
                .join(compaction::partition_of(
                    &store.snapshot(Signal::Spans).files[0]
                ))
                .join("c999999999999-000.parquet")
                .exists(),
            "the uncommitted output was removed"
        );
        // A committed merge whose inputs were not deleted yet when the process died.
        let inputs = store.snapshot(Signal::Spans).files;
        assert_eq!(store.compact().await, 3);
        for f in &inputs {
            assert!(
                dir.path().join(&f.path).exists(),
                "inputs wait for their grace"
            );
        }
        drop(store);
        let store = Store::open(config).unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 150);
        assert_eq!(store.snapshot(Signal::Spans).files.len(), 1);
        for f in &inputs {
            assert!(
                !dir.path().join(&f.path).exists(),
                "{} was not removed",
                f.path
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_merge_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let config = compacting(dir.path());
        let store = Store::open(config.clone()).unwrap();
        for seed in 1..3u8 {
            store.append(Signal::Logs, logs(&["a", "b"])).await.unwrap();
            store.append(Signal::Spans, spans(10, seed)).await.unwrap();
            store.flush().await.unwrap();
        }
        let files = store.snapshot(Signal::Logs).files;
        let stop = std::sync::atomic::AtomicBool::new(true);
        let target = target(&store, &files, "c000000000001-000.parquet", &stop);
        let merged = compaction::merge(dir.path(), Signal::Logs, &files, &target).unwrap();
        assert!(merged.is_none());
        let left: Vec<_> = std::fs::read_dir(dir.path().join(target.rel_dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('c'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_that_fails_to_merge_leaves_the_others_merging() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(compacting(dir.path())).unwrap();
        let hour = 3_600_000_000_000u64;
        for seed in 1..=4u8 {
            // Two hours, two files each.
            let base = 1_700_000_000_000_000_000 + u64::from(seed % 2) * hour;
            store
                .append(Signal::Spans, spans_at(10, seed, base))
                .await
                .unwrap();
            store.flush().await.unwrap();
        }
        let files = store.snapshot(Signal::Spans).files;
        assert_eq!(files.len(), 4);
        // Damage one file of the first partition.
        let broken = &files[0];
        std::fs::write(dir.path().join(&broken.path), b"not parquet").unwrap();
        let errors_before = store.inner.metrics.compaction_errors.get();
        assert_eq!(store.compact().await, 2, "the healthy partition is merged");
        assert_eq!(
            store.inner.metrics.compaction_errors.get(),
            errors_before + 1
        );
        let after = store.snapshot(Signal::Spans).files;
        assert_eq!(after.len(), 3, "{after:?}");
        assert!(
            after.contains(broken),
            "the failed partition is left as it was"
        );
        let partition = dir.path().join(compaction::partition_of(broken));
        let partial: Vec<_> = std::fs::read_dir(&partition)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('c'))
            .collect();
        assert!(partial.is_empty(), "no partial output left: {partial:?}");
    }

    /// Every Parquet or temporary file under `dir`.
    fn data_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && path.extension().is_none_or(|e| e != "index") {
                out.extend(data_files(&path));
            } else if path
                .extension()
                .is_some_and(|e| e == "parquet" || e == "tmp" || e == "index")
            {
                out.push(path);
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_given_up_while_the_wal_is_slow_leave_no_budget_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        // A slow WAL: the writer stalls on the state lock after its first write.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (held, holding) = std::sync::mpsc::channel::<()>();
        let stall = {
            let store = store.clone();
            std::thread::spawn(move || {
                let _state = store.inner.state.read();
                held.send(()).unwrap();
                let _ = released.recv();
            })
        };
        holding.recv().unwrap();
        let tasks: Vec<_> = (0..300u32)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.append(Signal::Spans, spans(5, i as u8)).await })
            })
            .collect();
        // Until the writer's queue is full and appends wait to be queued.
        for _ in 0..3000 {
            if store.inner.commands.capacity() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store.inner.commands.capacity(), 0, "the queue filled up");
        // The clients hang up (deadline, closed connection).
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        release.send(()).unwrap();
        stall.join().unwrap();
        store.flush().await.unwrap();
        assert_eq!(
            store.buffered_bytes(),
            0,
            "a given-up append kept its budget"
        );
        assert_eq!(store.inner.metrics.buffered_bytes.get(), 0);
        store.append(Signal::Spans, spans(5, 1)).await.unwrap();
    }

    /// Flips a byte in the middle of the `n`th record (from 0) of a format-2 segment.
    fn damage_record(path: &Path, n: usize) {
        let mut data = std::fs::read(path).unwrap();
        let mut pos = 16;
        for _ in 0..n {
            let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
            pos += 12 + len;
        }
        let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
        data[pos + 12 + len / 2] ^= 0xff;
        std::fs::write(path, data).unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_record_mid_segment_is_counted_quarantined_and_the_rest_recovered() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            for seed in 1..=3 {
                store.append(Signal::Spans, spans(3, seed)).await.unwrap();
            }
        }
        let wal_dir = dir.path().join("wal");
        let segment = wal::segment_path(&wal_dir, 1);
        damage_record(&segment, 1);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(
            rows(&store.snapshot(Signal::Spans)),
            6,
            "the records after the bad one are back"
        );
        assert_eq!(store.metrics().wal_corrupt_records.get(), 1);
        assert_eq!(store.metrics().wal_quarantined_segments.get(), 1);
        let mut registry = prometheus_client::registry::Registry::default();
        store.metrics().register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("periscope_wal_corrupt_records_total 1"),
            "{text}"
        );
        // The flush that covers the segment deletes it from the WAL, not from quarantine.
        store.flush().await.unwrap();
        assert!(!segment.exists());
        let kept = wal_dir.join(wal::QUARANTINE).join("000000000001.wal");
        let replayed = wal::replay_segment(&kept).unwrap();
        assert_eq!((replayed.batches.len(), replayed.corrupt), (2, 1));
        drop(store);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 6);
        assert_eq!(
            store.metrics().wal_corrupt_records.get(),
            0,
            "reported once"
        );
    }

    #[tokio::test]
    async fn after_a_failed_wal_write_acknowledged_rows_never_land_after_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        {
            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            store.append(Signal::Spans, spans(3, 1)).await.unwrap();
            wal::inject_fault(&wal::segment_path(&wal_dir, 1));
            let error = store.append(Signal::Spans, spans(3, 2)).await.unwrap_err();
            assert!(matches!(error, Error::Io { .. }), "{error}");
            store.append(Signal::Spans, spans(4, 3)).await.unwrap();
            assert_eq!(wal::list_segments(&wal_dir).unwrap(), [1, 2]);
            let second = wal::replay_segment(&wal::segment_path(&wal_dir, 2)).unwrap();
            assert_eq!((second.batches.len(), second.skipped), (1, 0));
        }
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 7);
        assert_eq!(store.buffered_bytes(), {
            let s = store.snapshot(Signal::Spans);
            s.batches.iter().map(schema::batch_bytes).sum::<u64>()
        });
    }

    #[tokio::test]
    async fn a_segment_creation_that_failed_halfway_does_not_stop_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.append(Signal::Spans, spans(3, 1)).await.unwrap();
        // The next segment's file exists: its creation failed after the file was made.
        std::fs::write(wal::segment_path(&wal_dir, 2), b"PSC").unwrap();
        store.flush().await.unwrap();
        store.append(Signal::Spans, spans(2, 2)).await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 5);
        drop(store);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 5);
    }

    #[tokio::test]
    async fn a_failed_flush_deletes_the_files_it_wrote_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.append(Signal::Spans, spans(3, 1)).await.unwrap();
        store.append(Signal::Logs, logs(&["a", "b"])).await.unwrap();
        // The logs table's directory cannot be made: the spans files are written first.
        let blocker = dir.path().join("logs");
        std::fs::write(&blocker, b"").unwrap();
        store.flush().await.unwrap_err();
        assert_eq!(data_files(dir.path()), Vec::<PathBuf>::new());
        std::fs::remove_file(&blocker).unwrap();
        // The catalog cannot be written: every table's files are written first.
        let blocker = dir.path().join("catalog.json.tmp");
        std::fs::create_dir(&blocker).unwrap();
        store.flush().await.unwrap_err();
        assert_eq!(data_files(dir.path()), Vec::<PathBuf>::new());
        std::fs::remove_dir(&blocker).unwrap();
        store.flush().await.unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 3);
        assert_eq!(rows(&store.snapshot(Signal::Logs)), 2);
        assert_eq!(data_files(dir.path()).len(), 3, "two files and one index");
    }

    #[tokio::test]
    async fn replayed_rows_are_counted_at_their_real_size() {
        let dir = tempfile::tempdir().unwrap();
        let appended = {
            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            for seed in 1..=20 {
                store.append(Signal::Spans, spans(50, seed)).await.unwrap();
            }
            store.buffered_bytes()
        };
        let mut config = StoreConfig::new(dir.path());
        // Room for all of them in one sorted chunk, so one file.
        config.work_bytes = appended * 4;
        let store = Store::open(config).unwrap();
        let replayed = store.buffered_bytes();
        assert!(
            replayed <= appended + appended / 10,
            "replayed rows count {replayed} bytes, {appended} when appended"
        );
        store.flush().await.unwrap();
        assert_eq!(store.snapshot(Signal::Spans).files.len(), 1);
        assert_eq!(store.buffered_bytes(), 0);
    }

    #[tokio::test]
    async fn a_wal_of_the_old_format_is_replayed_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        std::fs::create_dir_all(&wal_dir).unwrap();
        let mut old = wal::legacy_record(Signal::Spans, &spans(3, 1));
        old.extend(wal::legacy_record(Signal::Logs, &logs(&["old format"])));
        std::fs::write(wal::segment_path(&wal_dir, 1), old).unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 3);
        store.flush().await.unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 3);
        assert_eq!(rows(&store.snapshot(Signal::Logs)), 1);
        assert!(!wal::segment_path(&wal_dir, 1).exists());

        // A newer format: a clear refusal, naming the segment.
        drop(store);
        let last = *wal::list_segments(&wal_dir).unwrap().last().unwrap();
        let path = wal::segment_path(&wal_dir, last);
        let mut newer = std::fs::read(&path).unwrap();
        newer[8] = 7;
        std::fs::write(&path, newer).unwrap();
        let error = Store::open(StoreConfig::new(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("{last:012}.wal")) && error.contains("format 7"),
            "{error}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_index_queue_is_counted_and_drains() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.append(Signal::Logs, logs(&["queued"])).await.unwrap();
        until_indexed(&store, "queued", (1, 0)).await;
        assert_eq!(store.metrics().log_index_queue_bytes.get(), 0);
    }
}
