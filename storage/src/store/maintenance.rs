//! The store's maintenance operations: flush (head → part files), retention (drop
//! expired files) and the commit of a compaction merge. Each ends in one atomic catalog
//! write under the flush lock (see the lock order in [`super`]); files dropped from the
//! catalog go to [`super::gc`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::wal_writer::Command;
use super::{Inner, Store, gc};
use crate::catalog::{Catalog, FileEntry};
use crate::compaction::{self, MergeTarget};
use crate::error::{Error, Result};
use crate::flush;
use crate::layout;
use crate::reserve;
use crate::schema::Signal;
use crate::wal;

impl Store {
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
            let partition = layout::partition_of(&inputs[0]).to_string();
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
        let rel_dir = layout::partition_of(&inputs[0]).to_string();
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
                        && !self.inner.doomed.holds(&rel)
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
            gc::delete(data_dir, &output)
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
            flush::remove_outputs(data_dir, &outputs);
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
            let (frozen, seqs) = {
                let state = self.state.read();
                (state.head.frozen(signal), state.head.frozen_seqs(signal))
            };
            let head = flush::FromHead {
                index: &self.head_index,
                seqs: &seqs,
            };
            written.extend(flush::write_parts(
                data_dir,
                signal,
                &frozen,
                upto,
                &self.log_fields,
                Some(head),
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
