//! Opening the store: load the catalog, remove the orphans of an interrupted flush or
//! merge, build missing log indexes, replay every WAL segment newer than the catalog's
//! `flushed_upto` into the head (exactly once; damaged records are counted and their
//! segment quarantined), and start the WAL writer thread.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::record_batch::RecordBatch;
use parking_lot::RwLock;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::log_ids::max_log_id;
use super::wal_writer::{self, COMMAND_QUEUE};
use super::{Inner, State, Store, StoreConfig, gc, held_bytes};
use crate::budget::Budget;
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::head::Head;
use crate::logindex::{self, FileIndexes, HeadIndex, LogFields};
use crate::metrics::StorageMetrics;
use crate::reserve::{self, Reserve};
use crate::schema::Signal;
use crate::wal::{self, Log};

impl Store {
    /// Opens (or creates) the store in `config.data_dir`: loads the catalog, removes the
    /// orphans of an interrupted flush, replays the WAL into the head and starts the WAL
    /// writer thread.
    ///
    /// # Errors
    /// When the directory cannot be created or read, or the catalog is damaged.
    pub fn open(mut config: StoreConfig) -> Result<Store> {
        // Absolute from here on: file paths handed to the query engine are resolved
        // from the file system's root, so a relative `--data-dir` (as `periscope serve
        // --data-dir data`) must not be read against `/`.
        config.data_dir = std::path::absolute(&config.data_dir)
            .map_err(Error::io("resolve data directory", &config.data_dir))?;
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
            let replayed = wal::replay_segment(&path, config.wire_decoder)?;
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
        let doomed = gc::DroppedFiles::new(config.retention_grace);
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
            span_aggregates: Default::default(),
            metric_files: Default::default(),
            doomed,
            stopping: std::sync::atomic::AtomicBool::new(false),
            compaction_lock: tokio::sync::Mutex::new(()),
            next_merge: AtomicU64::new(0),
        });
        let writer = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("periscope-wal".into())
            .spawn(move || wal_writer::run(writer, log, rx))
            .map_err(Error::io("start WAL writer thread", &data_dir))?;
        Ok(Store { inner })
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

/// Builds the log index of every `logs` file that has none (files written before the
/// index existed, or whose index was removed by hand) or one this build cannot read
/// (written by an older version with another term dictionary format).
fn build_missing_indexes(data_dir: &Path, catalog: &Catalog, fields: &LogFields) -> Result<()> {
    for file in catalog
        .files
        .iter()
        .filter(|f| f.signal == Signal::Logs.name())
    {
        let path = data_dir.join(&file.path);
        let dir = logindex::index_path(&path);
        if dir.join("meta.json").exists() {
            // A row-order index was written by this build's flush or compaction; only
            // the others may be of the older format.
            if logindex::rows_in_doc_order(&dir) || logindex::file::readable(&dir, fields) {
                continue;
            }
            info!(path = %path.display(), "Building again the log index of a file, written in an older format.");
        } else {
            info!(path = %path.display(), "Building the missing log index of a file.");
        }
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
