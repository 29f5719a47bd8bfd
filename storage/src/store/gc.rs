//! Garbage collection of dropped files: the one place that deletes part files (and their
//! log indexes) that left the catalog. Retention and compaction drop files from the
//! catalog first; the files stay on disk for a grace period (at least the query timeout)
//! for queries that listed them before, and are deleted by the flusher once it is over.
//! A crash before that leaves files the catalog does not list, which the next start
//! removes as orphans.

use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::warn;

use super::Store;
use crate::catalog::FileEntry;
use crate::logindex::file::index_path;

/// Files no longer in the catalog, each with the instant it may be deleted.
pub(super) struct DroppedFiles {
    grace: Duration,
    doomed: Mutex<Vec<(Instant, FileEntry)>>,
}

impl DroppedFiles {
    /// An empty list whose files wait `grace` before they are deleted.
    pub(super) fn new(grace: Duration) -> DroppedFiles {
        DroppedFiles {
            grace,
            doomed: Mutex::new(Vec::new()),
        }
    }

    /// Whether no file waits for deletion.
    pub(super) fn is_empty(&self) -> bool {
        self.doomed.lock().is_empty()
    }

    /// Whether a file at `rel` (relative to the data directory) waits for deletion.
    pub(super) fn holds(&self, rel: &str) -> bool {
        self.doomed.lock().iter().any(|(_, f)| f.path == rel)
    }
}

impl Store {
    /// Schedules files no longer in the catalog for deletion once queries that may have
    /// listed them are over (the grace period).
    pub(super) fn doom(&self, files: Vec<FileEntry>) {
        let dropped = &self.inner.doomed;
        let due = Instant::now() + dropped.grace;
        dropped
            .doomed
            .lock()
            .extend(files.into_iter().map(|f| (due, f)));
    }

    /// Deletes the files dropped by retention or merged away by compaction whose grace
    /// period has passed.
    pub(super) fn delete_doomed(&self) {
        let now = Instant::now();
        let due: Vec<FileEntry> = {
            let mut doomed = self.inner.doomed.doomed.lock();
            let (due, later): (Vec<_>, Vec<_>) = doomed.drain(..).partition(|(t, _)| *t <= now);
            *doomed = later;
            due.into_iter().map(|(_, f)| f).collect()
        };
        for f in due {
            if let Err(error) = delete(&self.inner.config.data_dir, &f) {
                // Not in the catalog any more: the next start removes it as an orphan.
                warn!(%error, path = %f.path, "Could not delete a file dropped by retention or compaction.");
            }
        }
    }
}

/// Deletes a file, its span aggregates or series index and its log index directory (if any). Missing ones are not an error.
pub(super) fn delete(data_dir: &Path, file: &FileEntry) -> std::io::Result<()> {
    let path = data_dir.join(&file.path);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for sidecar in [
        crate::span_aggregates::agg_path(&path),
        crate::series_index::series_path(&path),
    ] {
        match std::fs::remove_file(sidecar) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let index = index_path(&path);
    match std::fs::remove_dir_all(&index) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
