//! The in-memory head: rows that are in the WAL but not yet in Parquet files.
//!
//! Each table's head has an *active* part, which new rows join, and a *frozen* part:
//! the rows a running flush is writing out. Both stay visible to queries until the
//! flush has committed its files to the catalog; the store swaps them in one step under
//! its lock, so a query sees every row exactly once.

use std::time::Instant;

use arrow::record_batch::RecordBatch;

use crate::schema::Signal;

#[derive(Debug, Default)]
struct TableHead {
    active: Vec<RecordBatch>,
    active_bytes: u64,
    frozen: Vec<RecordBatch>,
    frozen_bytes: u64,
}

/// The heads of all three tables.
#[derive(Debug, Default)]
pub(crate) struct Head {
    tables: [TableHead; 3],
    oldest_active: Option<Instant>,
}

impl Head {
    /// Adds acknowledged rows.
    pub fn push(&mut self, signal: Signal, batch: RecordBatch, bytes: u64) {
        let t = &mut self.tables[signal.index()];
        t.active.push(batch);
        t.active_bytes += bytes;
        self.oldest_active.get_or_insert_with(Instant::now);
    }

    /// Moves every active row into the frozen part, for a flush to write out.
    pub fn freeze(&mut self) {
        for t in &mut self.tables {
            t.frozen.append(&mut t.active);
            t.frozen_bytes += std::mem::take(&mut t.active_bytes);
        }
        self.oldest_active = None;
    }

    /// The frozen rows of one table.
    pub fn frozen(&self, signal: Signal) -> Vec<RecordBatch> {
        self.tables[signal.index()].frozen.clone()
    }

    /// Drops the frozen rows (now in Parquet) and returns how many bytes that frees.
    pub fn release_frozen(&mut self) -> u64 {
        self.tables
            .iter_mut()
            .map(|t| {
                t.frozen.clear();
                std::mem::take(&mut t.frozen_bytes)
            })
            .sum()
    }

    /// Every row of one table in the head, frozen and active.
    pub fn batches(&self, signal: Signal) -> Vec<RecordBatch> {
        let t = &self.tables[signal.index()];
        t.frozen.iter().chain(t.active.iter()).cloned().collect()
    }

    /// Bytes of active rows, over all tables.
    pub fn active_bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.active_bytes).sum()
    }

    /// When the oldest active row arrived.
    pub fn oldest_active(&self) -> Option<Instant> {
        self.oldest_active
    }
}
