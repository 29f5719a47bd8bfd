//! One pass over the documents a query matches: count, histogram and the newest hits.
//!
//! Hits are ordered newest first by `(timestamp, log_id)`, both descending; `log_id` is
//! unique and stable (the same in the head and in Parquet), so a cursor made of the last
//! hit's pair continues a listing exactly, even when the rows moved into a file between
//! two pages.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

use super::fields::{LOCATOR, LOG_ID, TIMESTAMP};

/// What to collect.
#[derive(Debug, Clone)]
pub struct Collect {
    /// First time included, Unix ns.
    pub start: i64,
    /// First time excluded, Unix ns.
    pub end: i64,
    /// How many hits to keep.
    pub limit: usize,
    /// Keep only hits older than this `(timestamp, log_id)` (a page cursor).
    pub before: Option<(i64, u64)>,
    /// Histogram: bucket `i` counts times in `[origin + i·step, origin + (i+1)·step)`.
    pub histogram: Option<(i64, i64, usize)>,
    /// For the head index: skip documents of batches below this sequence (already in
    /// files).
    pub min_head_seq: Option<u64>,
    /// For a file index whose document numbers are its rows (see
    /// [`super::export::ROW_ORDER`]): hits carry the document number as their locator.
    pub rows_are_docs: bool,
}

#[cfg(test)]
impl Collect {
    /// Every match at any time, the newest `limit` of them, from a file index.
    pub(crate) fn any_time(limit: usize, rows_are_docs: bool) -> Collect {
        Collect {
            start: i64::MIN,
            end: i64::MAX,
            limit,
            before: None,
            histogram: None,
            min_head_seq: None,
            rows_are_docs,
        }
    }
}

/// A matching row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hit {
    /// Unix ns.
    pub timestamp: i64,
    /// The row's `log_id`.
    pub log_id: u64,
    /// Where the row is (see [`super::fields`]).
    pub locator: u64,
}

/// What a search found in one index, or merged over several.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Matching rows in the time range (the cursor does not reduce it).
    pub total: u64,
    /// Up to `limit` hits, newest first.
    pub hits: Vec<Hit>,
    /// Counts per histogram bucket.
    pub histogram: Vec<u64>,
}

impl Found {
    /// Adds another index's result, keeping the newest `limit` hits.
    pub fn merge(&mut self, other: Found, limit: usize) {
        self.total += other.total;
        if self.histogram.len() < other.histogram.len() {
            self.histogram.resize(other.histogram.len(), 0);
        }
        for (a, b) in self.histogram.iter_mut().zip(other.histogram) {
            *a += b;
        }
        self.hits.extend(other.hits);
        self.hits.sort_unstable_by(|a, b| b.cmp(a));
        self.hits.truncate(limit);
    }
}

impl Collector for Collect {
    type Fruit = Found;
    type Child = SegmentCollect;

    fn for_segment(
        &self,
        ordinal: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SegmentCollect> {
        if self.rows_are_docs && ordinal > 0 {
            return Err(tantivy::TantivyError::InternalError(
                "a log index in row order has more than one segment".into(),
            ));
        }
        let fast = segment.fast_fields();
        Ok(SegmentCollect {
            params: self.clone(),
            timestamp: fast.i64(TIMESTAMP)?,
            log_id: fast.u64(LOG_ID)?,
            locator: fast.u64(LOCATOR)?,
            found: Found {
                histogram: vec![0; self.histogram.map_or(0, |h| h.2)],
                ..Found::default()
            },
            heap: BinaryHeap::with_capacity(self.limit + 1),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Found>) -> tantivy::Result<Found> {
        let mut all = Found {
            histogram: vec![0; self.histogram.map_or(0, |h| h.2)],
            ..Found::default()
        };
        for fruit in fruits {
            all.merge(fruit, self.limit);
        }
        Ok(all)
    }
}

/// Per-segment state of [`Collect`].
pub struct SegmentCollect {
    params: Collect,
    timestamp: Column<i64>,
    log_id: Column<u64>,
    locator: Column<u64>,
    found: Found,
    heap: BinaryHeap<Reverse<Hit>>,
}

impl SegmentCollector for SegmentCollect {
    type Fruit = Found;

    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(ts) = self.timestamp.first(doc) else {
            return;
        };
        let p = &self.params;
        if ts < p.start || ts >= p.end {
            return;
        }
        let locator = if p.rows_are_docs {
            u64::from(doc)
        } else {
            self.locator.first(doc).unwrap_or(0)
        };
        if let Some(min) = p.min_head_seq
            && (locator >> 32) < min
        {
            return;
        }
        self.found.total += 1;
        if let Some((origin, step, n)) = p.histogram {
            let bucket = ts.saturating_sub(origin).div_euclid(step.max(1));
            if bucket >= 0 && (bucket as usize) < n {
                self.found.histogram[bucket as usize] += 1;
            }
        }
        if p.limit == 0 {
            return;
        }
        let log_id = self.log_id.first(doc).unwrap_or(0);
        if let Some(before) = p.before
            && (ts, log_id) >= before
        {
            return;
        }
        let hit = Hit {
            timestamp: ts,
            log_id,
            locator,
        };
        if self.heap.len() < p.limit {
            self.heap.push(Reverse(hit));
        } else if let Some(Reverse(lowest)) = self.heap.peek()
            && hit > *lowest
        {
            self.heap.pop();
            self.heap.push(Reverse(hit));
        }
    }

    fn harvest(mut self) -> Found {
        let mut hits: Vec<Hit> = self.heap.into_iter().map(|Reverse(h)| h).collect();
        hits.sort_unstable_by(|a, b| b.cmp(a));
        self.found.hits = hits;
        self.found
    }
}
