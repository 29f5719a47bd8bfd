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
    active: Vec<(u64, RecordBatch)>,
    active_bytes: u64,
    frozen: Vec<(u64, RecordBatch)>,
    frozen_bytes: u64,
}

/// The heads of all three tables. Every batch gets a sequence number, increasing in the
/// order batches are acknowledged; the log index refers to head rows by it.
#[derive(Debug, Default)]
pub(crate) struct Head {
    tables: [TableHead; 3],
    oldest_active: Option<Instant>,
    next_seq: u64,
}

impl Head {
    /// Adds acknowledged rows and returns the batch's sequence number.
    pub fn push(&mut self, signal: Signal, batch: RecordBatch, bytes: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let t = &mut self.tables[signal.index()];
        t.active.push((seq, batch));
        t.active_bytes += bytes;
        self.oldest_active.get_or_insert_with(Instant::now);
        seq
    }

    /// The sequence number the next batch will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every batch of one table in the head with its sequence number, oldest first.
    pub fn batches_with_seq(&self, signal: Signal) -> Vec<(u64, RecordBatch)> {
        let t = &self.tables[signal.index()];
        t.frozen.iter().chain(t.active.iter()).cloned().collect()
    }

    /// The lowest sequence number of a batch of `signal` still in the head (the next one
    /// to be given out if there is none).
    pub fn min_seq(&self, signal: Signal) -> u64 {
        let t = &self.tables[signal.index()];
        t.frozen
            .first()
            .or(t.active.first())
            .map_or(self.next_seq, |(seq, _)| *seq)
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
        self.tables[signal.index()]
            .frozen
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// The sequence numbers of the frozen batches of `signal`, in the order of
    /// [`Self::frozen`].
    pub fn frozen_seqs(&self, signal: Signal) -> Vec<u64> {
        self.tables[signal.index()]
            .frozen
            .iter()
            .map(|(seq, _)| *seq)
            .collect()
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
        t.frozen
            .iter()
            .chain(t.active.iter())
            .map(|(_, b)| b.clone())
            .collect()
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
