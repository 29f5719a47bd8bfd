//! Giving a flushed part of the `logs` head its own index without indexing its rows again:
//! the head index's documents of the part are copied into a new index by a tantivy merge
//! (postings and fast columns are copied; no text is tokenized), and the Parquet file is
//! then written in the document order of that index, so that document number = row
//! number. Compaction keeps the property by merging the indexes of its inputs in the
//! order it concatenates their rows.
//!
//! An index built this way is marked by a [`ROW_ORDER`] file. Indexes without it (built by
//! [`super::file::Builder`]) find their rows through the `locator` fast column instead.

use std::fs;
use std::ops::{Range, RangeInclusive};
use std::path::Path;

use tantivy::directory::{MmapDirectory, OwnedBytes};
use tantivy::fastfield::{AliveBitSet, write_alive_bitset};
use tantivy::indexer::merge_filtered_segments;
use tantivy::{BitSet, Index, Segment, SegmentReader};

use super::fields::{LOCATOR, TIMESTAMP};
use crate::error::{Error, Result};

/// The file that marks an index whose document numbers are the rows of its Parquet file.
pub const ROW_ORDER: &str = "rows-in-doc-order";

/// Whether the index in `dir` has documents in the row order of its Parquet file.
pub fn rows_in_doc_order(dir: &Path) -> bool {
    dir.join(ROW_ORDER).exists()
}

/// Copies the documents of `head` whose batch sequence is in `seqs` and whose time is in
/// `times` into a new one-segment index in `dir` (created; it must not exist), marks it
/// and returns the `locator` of each of its documents, in document order. A part with no
/// such document gets an empty index.
///
/// # Errors
/// When the head's segments cannot be read or the new index cannot be written.
pub(crate) fn export(
    head: &Index,
    dir: &Path,
    seqs: RangeInclusive<u64>,
    times: Range<i64>,
) -> Result<Vec<u64>> {
    let mut segments = Vec::new();
    let mut filters = Vec::new();
    for segment in head.searchable_segments()? {
        let reader = SegmentReader::open(&segment)?;
        let fast = reader.fast_fields();
        let locator = fast.u64(LOCATOR)?;
        let timestamp = fast.i64(TIMESTAMP)?;
        let max_doc = reader.max_doc();
        let mut keep = BitSet::with_max_value(max_doc);
        for doc in 0..max_doc {
            if reader.is_deleted(doc) {
                continue;
            }
            let (Some(l), Some(t)) = (locator.first(doc), timestamp.first(doc)) else {
                continue;
            };
            if seqs.contains(&(l >> 32)) && times.contains(&t) {
                keep.insert(doc);
            }
        }
        if keep.len() == 0 {
            continue;
        }
        let mut bytes = Vec::new();
        write_alive_bitset(&keep, &mut bytes).map_err(Error::io("build alive set", dir))?;
        segments.push(segment);
        filters.push(Some(AliveBitSet::open(OwnedBytes::new(bytes))));
    }
    let index = write(head, &segments, filters, dir)?;
    locators(&index)
}

/// Merges the indexes of `inputs` (each marked, in the order their rows are concatenated)
/// into a new marked index in `dir` (created; it must not exist), and returns its number
/// of documents.
///
/// # Errors
/// When an input cannot be read or the new index cannot be written.
pub(crate) fn merge(inputs: &[Index], dir: &Path) -> Result<u64> {
    let Some(first) = inputs.first() else {
        return Err(Error::Schema("no log index to merge".into()));
    };
    let mut segments = Vec::new();
    for input in inputs {
        segments.extend(input.searchable_segments()?);
    }
    let keep_all = segments.iter().map(|_| None).collect();
    let index = write(first, &segments, keep_all, dir)?;
    Ok(index
        .searchable_segment_metas()?
        .iter()
        .map(|m| u64::from(m.num_docs()))
        .sum())
}

/// Writes the documents of `segments` that `filters` keep (schema and settings of
/// `like`) as a new one-segment index in `dir`, or an empty index for no segments, and
/// marks it as having its documents in row order.
fn write(
    like: &Index,
    segments: &[Segment],
    filters: Vec<Option<AliveBitSet>>,
    dir: &Path,
) -> Result<Index> {
    fs::create_dir_all(dir).map_err(Error::io("create index directory", dir))?;
    let directory = MmapDirectory::open(dir).map_err(tantivy::TantivyError::from)?;
    let index = if segments.is_empty() {
        Index::create(directory, like.schema(), like.settings().clone())?
    } else {
        merge_filtered_segments(segments, like.settings().clone(), filters, directory)?
    };
    let marker = dir.join(ROW_ORDER);
    fs::write(&marker, b"").map_err(Error::io("write", &marker))?;
    Ok(index)
}

/// The `locator` of each document of `index`, in order.
fn locators(index: &Index) -> Result<Vec<u64>> {
    let mut locators = Vec::new();
    for segment in index.searchable_segments()? {
        let reader = SegmentReader::open(&segment)?;
        let locator = reader.fast_fields().u64(LOCATOR)?;
        for doc in 0..reader.max_doc() {
            if !reader.is_deleted(doc) {
                locators.push(locator.first(doc).unwrap_or(u64::MAX));
            }
        }
    }
    Ok(locators)
}
