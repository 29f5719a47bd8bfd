//! Compaction of `metrics` files in series order: the merged file holds each series'
//! points from all its inputs as one run (in time order), series after series, instead
//! of a slice of time per row group with every series cut into it.
//!
//! A flush holds a few samples of each series, so at 100,000 series the files it leaves
//! have runs of a handful of rows. Merged a slice of time at a time, a 128 Ki-row row
//! group would again hold one or two samples per series: labels repeat, timestamps do
//! not delta-encode, and a query reads a run per series per row group. Merged by series,
//! an hour's file has one run per series: what a query reads is one stretch per series,
//! and it compresses as well as one big flush would.
//!
//! The merge is planned from the inputs' series indexes alone (no row is read to find
//! a series): every distinct series of the inputs gets its place in the output order,
//! then the output is written a row group at a time. For each row group, each input's
//! rows of the series it holds are read (a row selection: with the inputs in the same
//! order, one stretch per input) and gathered in output order. Memory holds one row
//! group's rows, as for the other tables.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, AsArray, RecordBatch, TimestampNanosecondArray as TimestampArray};
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};

use crate::catalog::FileEntry;
use crate::error::Result;
use crate::gather::gather_batch;
use crate::layout::ROW_GROUP_ROWS;
use crate::part_writer::PartWriter;
use crate::series_index::{IndexedFile, RunKey, SeriesIndex};
use crate::series_order::CLUSTER_LABELS;

/// The identity of a series across files (every field of a run of the index but its
/// rows and times), led by what orders the output: metric, service, the labels
/// dashboards filter by (see `series_order`), then the rest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    name: String,
    service: String,
    cluster: [String; 3],
    run: RunKey,
}

impl SeriesKey {
    /// The key of run `i` of `index`.
    fn of(index: &SeriesIndex, i: usize) -> SeriesKey {
        let run = RunKey::of_run(index, i);
        let mut cluster: [String; 3] = Default::default();
        for (k, v) in &run.attributes {
            if let Some(c) = CLUSTER_LABELS.iter().position(|c| c == k) {
                cluster[c] = v.clone();
            }
        }
        let service = run
            .resource
            .iter()
            .find(|(k, _)| k == "service.name")
            .map_or_else(String::new, |(_, v)| v.clone());
        SeriesKey {
            name: run.name.clone(),
            service,
            cluster,
            run,
        }
    }
}

/// A run of one input, in output order.
#[derive(Debug, Clone, Copy)]
struct Piece {
    input: usize,
    start: usize,
    rows: usize,
    min_time: i64,
    max_time: i64,
}

/// The output order: for each series (in key order), its runs in all inputs, oldest
/// first, and whether they overlap in time (their rows then need sorting).
fn plan(files: &[IndexedFile]) -> Vec<(Vec<Piece>, bool)> {
    let mut ids: HashMap<SeriesKey, usize> = HashMap::new();
    let mut series: Vec<(SeriesKey, Vec<Piece>)> = Vec::new();
    for (input, file) in files.iter().enumerate() {
        let index = &file.index;
        for run in 0..index.len() {
            let key = SeriesKey::of(index, run);
            let piece = Piece {
                input,
                start: index.start(run) as usize,
                rows: index.rows[run] as usize,
                min_time: index.min_time[run],
                max_time: index.max_time[run],
            };
            match ids.get(&key) {
                Some(&id) => series[id].1.push(piece),
                None => {
                    ids.insert(key.clone(), series.len());
                    series.push((key, vec![piece]));
                }
            }
        }
    }
    drop(ids);
    series.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    series
        .into_iter()
        .map(|(_, mut pieces)| {
            pieces.sort_by_key(|p| (p.min_time, p.input, p.start));
            let overlap = pieces.windows(2).any(|w| w[1].min_time < w[0].max_time);
            (pieces, overlap)
        })
        .collect()
}

/// What a series-ordered merge needs besides its inputs and output.
pub(crate) struct SeriesMerge<'a> {
    /// Memory for the rows of one output row group.
    pub read_bytes: usize,
    /// Set when the server is stopping: the merge gives up.
    pub stop: &'a AtomicBool,
}

/// Writes the rows of `inputs` (metrics files, each with its series index) to `out` in
/// series order. Returns `false` when stopped before the end.
///
/// # Errors
/// When an input or its index cannot be read, or the output cannot be written.
pub(crate) fn merge(
    data_dir: &Path,
    inputs: &[&FileEntry],
    schema: &SchemaRef,
    out: &mut PartWriter,
    limits: &SeriesMerge<'_>,
) -> Result<bool> {
    let files = inputs
        .iter()
        .map(|f| IndexedFile::open(&data_dir.join(&f.path)))
        .collect::<Result<Vec<_>>>()?;
    // Bytes of one decoded row, from the inputs' footers (twice their uncompressed
    // size: Arrow's buffers of a batch read from Parquet are larger).
    let rows: u64 = inputs.iter().map(|f| f.rows).sum();
    let bytes: u64 = files.iter().map(IndexedFile::uncompressed_bytes).sum();
    let row_bytes = ((bytes * 2) / rows.max(1)).max(1) as usize;
    let group_rows = (limits.read_bytes / row_bytes).clamp(1024, ROW_GROUP_ROWS);
    let plan = plan(&files);
    let mut chunk: Vec<(Vec<Piece>, bool)> = Vec::new();
    let mut chunk_rows = 0;
    for (pieces, overlap) in plan {
        // A series longer than a row group alone is cut into row groups of its own.
        let series_rows: usize = pieces.iter().map(|p| p.rows).sum();
        if chunk_rows > 0 && chunk_rows + series_rows > group_rows {
            if !write_chunk(&files, schema, out, std::mem::take(&mut chunk), limits)? {
                return Ok(false);
            }
            chunk_rows = 0;
        }
        if series_rows > group_rows {
            for part in split(&pieces, group_rows) {
                if !write_chunk(&files, schema, out, vec![(part, false)], limits)? {
                    return Ok(false);
                }
            }
            continue;
        }
        chunk_rows += series_rows;
        chunk.push((pieces, overlap));
    }
    write_chunk(&files, schema, out, chunk, limits)
}

/// `pieces` cut into lists of at most `rows` rows, in order.
fn split(pieces: &[Piece], rows: usize) -> Vec<Vec<Piece>> {
    let mut parts = Vec::new();
    let mut part: Vec<Piece> = Vec::new();
    let mut part_rows = 0;
    for p in pieces {
        let mut p = *p;
        while p.rows > 0 {
            let take = p.rows.min(rows - part_rows);
            part.push(Piece { rows: take, ..p });
            part_rows += take;
            p.start += take;
            p.rows -= take;
            if part_rows == rows {
                parts.push(std::mem::take(&mut part));
                part_rows = 0;
            }
        }
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

/// The rows read from one input for a row group: their places among the batches read,
/// (batch, row) in file order, and for each range read (by its first row in the file)
/// where its rows start among them.
#[derive(Default)]
struct Read {
    positions: Vec<(usize, usize)>,
    ranges: Vec<(usize, usize)>,
}

impl Read {
    /// The places of the `rows` rows from row `start` of the file.
    fn rows(&self, start: usize, rows: usize) -> Result<&[(usize, usize)]> {
        let at = self
            .ranges
            .binary_search_by_key(&start, |(s, _)| *s)
            .map_err(|_| crate::error::Error::Schema("series merge lost a run".into()))?;
        let from = self.ranges[at].1;
        Ok(&self.positions[from..from + rows])
    }
}

/// Reads the rows of `chunk`'s series from every input and writes them, in output
/// order, as one row group. Returns `false` when stopped.
fn write_chunk(
    files: &[IndexedFile],
    schema: &SchemaRef,
    out: &mut PartWriter,
    chunk: Vec<(Vec<Piece>, bool)>,
    limits: &SeriesMerge<'_>,
) -> Result<bool> {
    if chunk.is_empty() {
        return Ok(true);
    }
    if limits.stop.load(Ordering::Relaxed) {
        return Ok(false);
    }
    // Each input's row ranges, read in file order.
    let mut wanted: Vec<Vec<Range<usize>>> = vec![Vec::new(); files.len()];
    for (pieces, _) in &chunk {
        for p in pieces {
            wanted[p.input].push(p.start..p.start + p.rows);
        }
    }
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut reads: Vec<Read> = Vec::with_capacity(files.len());
    for (input, ranges) in wanted.iter_mut().enumerate() {
        let mut read = Read::default();
        if !ranges.is_empty() {
            ranges.sort_by_key(|r| r.start);
            let first = batches.len();
            for b in files[input].read_ranges(merge_ranges(ranges), ROW_GROUP_ROWS)? {
                batches.push(crate::derived::conform(&b, schema)?);
            }
            for (bi, b) in batches.iter().enumerate().skip(first) {
                read.positions.extend((0..b.num_rows()).map(|r| (bi, r)));
            }
            let mut next = 0;
            for r in ranges.iter() {
                read.ranges.push((r.start, next));
                next += r.len();
            }
        }
        reads.push(read);
    }
    let times: Vec<Option<&TimestampArray>> = batches
        .iter()
        .map(|b| {
            b.column_by_name("timestamp")
                .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        })
        .collect();
    let mut order: Vec<(usize, usize)> = Vec::new();
    for (pieces, overlap) in &chunk {
        let from = order.len();
        for p in pieces {
            order.extend_from_slice(reads[p.input].rows(p.start, p.rows)?);
        }
        if *overlap {
            // Runs of one series from inputs whose times overlap: by time, stable.
            order[from..].sort_by_key(|&(b, r)| {
                times[b].map_or(
                    i64::MIN,
                    |t| if t.is_valid(r) { t.value(r) } else { i64::MIN },
                )
            });
        }
    }
    let gathered = gather_batch(schema, &batches, &order)?;
    drop(batches);
    out.write(&gathered)?;
    out.end_row_group()?;
    Ok(true)
}

/// Consecutive or touching ranges joined.
fn merge_ranges(sorted: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match merged.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => merged.push(r.clone()),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(input: usize, start: usize, rows: usize) -> Piece {
        Piece {
            input,
            start,
            rows,
            min_time: 0,
            max_time: 0,
        }
    }

    #[test]
    fn a_long_series_is_cut_into_row_groups_of_the_limit() {
        let parts = split(&[piece(0, 10, 5), piece(1, 0, 4)], 3);
        let shape: Vec<Vec<(usize, usize, usize)>> = parts
            .iter()
            .map(|p| p.iter().map(|p| (p.input, p.start, p.rows)).collect())
            .collect();
        assert_eq!(
            shape,
            vec![
                vec![(0, 10, 3)],
                vec![(0, 13, 2), (1, 0, 1)],
                vec![(1, 1, 3)],
            ]
        );
    }

    #[test]
    fn touching_ranges_are_read_as_one() {
        assert_eq!(merge_ranges(&[0..3, 3..5, 7..9]), vec![0..5, 7..9]);
    }
}
