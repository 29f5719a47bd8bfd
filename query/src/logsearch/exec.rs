//! Running a log search: the head index and every file index whose time range overlaps
//! the request, one collector pass each; then the newest hits are read back from the
//! head batches and, with a row selection, from the Parquet files.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::file::metadata::ParquetMetaData;
use periscope_storage::Store;
use periscope_storage::logindex::{Collect, Found, Hit, TextTokenizer};
use serde_json::{Map, Value, json};
use tantivy::query::Query;
use tantivy::tokenizer::{TokenStream, Tokenizer};

use super::compile::compile;
use super::error::SearchError;
use super::syntax::{Expr, Field, MatchKind};
use crate::json::value_json;
use crate::traces::typed_attrs;

/// Largest page of hits; a larger `limit` is cut to this.
pub const MAX_LIMIT: usize = 10_000;
/// Most histogram buckets.
pub const MAX_BUCKETS: usize = 1_000;

/// A search request, parsed.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The query.
    pub expr: Expr,
    /// First time included, Unix ns.
    pub start: i64,
    /// First time excluded, Unix ns.
    pub end: i64,
    /// Hits per page (at most [`MAX_LIMIT`]).
    pub limit: usize,
    /// Continue after this hit.
    pub cursor: Option<Cursor>,
    /// About how many histogram buckets to draw.
    pub buckets: usize,
}

/// Position in a newest-first listing: the last hit returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Its timestamp, Unix ns.
    pub timestamp: i64,
    /// Its `log_id`.
    pub log_id: u64,
}

impl Cursor {
    /// The opaque text form given to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.timestamp, self.log_id))
    }

    /// Reads the text form back.
    ///
    /// # Errors
    /// When `text` is not a cursor this API gave out.
    pub fn decode(text: &str) -> Result<Cursor, SearchError> {
        let bad = || {
            SearchError::BadRequest(format!(
                "invalid cursor {text:?}: pass next_cursor from a previous answer unchanged"
            ))
        };
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (ts, id) = raw.split_once(':').ok_or_else(bad)?;
        Ok(Cursor {
            timestamp: ts.parse().map_err(|_| bad())?,
            log_id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// What a search found.
#[derive(Debug, Clone)]
pub struct SearchResult {
    /// Hits as JSON objects, newest first.
    pub hits: Vec<Value>,
    /// Matching lines in the time range.
    pub total: u64,
    /// Cursor for the next page, when this page is full.
    pub next_cursor: Option<String>,
    /// `(bucket start, count)`, oldest first.
    pub histogram: Vec<(i64, u64)>,
    /// Width of a histogram bucket, ns.
    pub step: i64,
}

const STEPS_SECS: [i64; 22] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    172_800, 604_800, 2_592_000, 31_536_000,
];

/// The histogram's bucket width: the smallest round step giving at most `buckets`.
pub fn histogram_step(start: i64, end: i64, buckets: usize) -> i64 {
    let span = end.saturating_sub(start).max(1);
    let want = span / buckets.clamp(1, MAX_BUCKETS) as i64;
    STEPS_SECS
        .iter()
        .map(|s| s * 1_000_000_000)
        .find(|s| *s >= want)
        .unwrap_or(STEPS_SECS[STEPS_SECS.len() - 1] * 1_000_000_000)
        .max(ceil_div(span, MAX_BUCKETS as i64))
}

/// `a / b` rounded up, for `a >= 0`, `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    a / b + i64::from(a % b != 0)
}

/// What one search thread found in its share of the files.
type FilePart = (Found, Vec<(Hit, Source)>);

enum Source {
    Head,
    File(usize),
}

/// Runs a search over `store`.
///
/// # Errors
/// When an index or file cannot be read.
pub fn search(store: &Store, req: &SearchRequest) -> Result<SearchResult, SearchError> {
    search_until(store, req, None)
}

/// Runs a search over `store` that gives up at `deadline` (checked before each file is
/// searched and read), so that no search outlives the query timeout, and with it the
/// grace period after which dropped files are deleted.
///
/// # Errors
/// [`SearchError::Timeout`] past the deadline; as [`search`] otherwise.
pub fn search_until(
    store: &Store,
    req: &SearchRequest,
    deadline: Option<(Instant, Duration)>,
) -> Result<SearchResult, SearchError> {
    let check = || match deadline {
        Some((at, timeout)) if Instant::now() > at => Err(SearchError::Timeout(timeout)),
        _ => Ok(()),
    };
    check()?;
    let view = store.log_view();
    let query = compile(&req.expr, store.log_fields());
    let step = histogram_step(req.start, req.end, req.buckets);
    let origin = req.start.saturating_sub(req.start.rem_euclid(step));
    let buckets = usize::try_from(ceil_div(req.end.saturating_sub(origin), step))
        .unwrap_or(0)
        .max(1);
    let collect = Collect {
        start: req.start,
        end: req.end,
        limit: req.limit,
        before: req.cursor.map(|c| (c.timestamp, c.log_id)),
        histogram: Some((origin, step, buckets)),
        min_head_seq: Some(view.min_head_seq),
        rows_are_docs: false,
    };
    let mut found = Found {
        histogram: vec![0; buckets],
        ..Found::default()
    };
    let mut sourced: Vec<(Hit, Source)> = Vec::new();
    let head = view.head_searcher.search(query.as_ref(), &collect)?;
    sourced.extend(head.hits.iter().map(|h| (*h, Source::Head)));
    found.merge(head, 0);
    let file_collect = Collect {
        min_head_seq: None,
        ..collect.clone()
    };
    // Files overlapping the range, searched by as many threads as there are cores.
    let candidates: Vec<usize> = (0..view.files.len())
        .filter(|i| {
            let f = &view.files[*i];
            f.max_time >= req.start && f.min_time < req.end
        })
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(candidates.len())
        .max(1);
    let parts: Vec<Result<FilePart, SearchError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (candidates, view, query, file_collect) =
                    (&candidates, &view, &query, &file_collect);
                scope.spawn(move || {
                    let mut found = Found::default();
                    let mut hits: Vec<(Hit, Source)> = Vec::new();
                    for i in candidates.iter().skip(w).step_by(workers) {
                        check()?;
                        let (searcher, rows_are_docs) = store.log_file_searcher(&view.files[*i])?;
                        let collect = Collect {
                            rows_are_docs,
                            ..file_collect.clone()
                        };
                        let part = searcher.search(query.as_ref(), &collect)?;
                        hits.extend(part.hits.iter().map(|h| (*h, Source::File(*i))));
                        found.merge(part, 0);
                        hits.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
                        hits.truncate(file_collect.limit);
                    }
                    Ok((found, hits))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(SearchError::Internal("a search thread panicked".into()))
                })
            })
            .collect()
    });
    for part in parts {
        let (part_found, part_hits) = part?;
        found.merge(part_found, 0);
        sourced.extend(part_hits);
    }
    sourced.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
    sourced.truncate(req.limit);

    let highlight = Highlight::of(&req.expr);
    let mut hits = vec![Value::Null; sourced.len()];
    let mut by_file: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for (out, (hit, source)) in sourced.iter().enumerate() {
        match source {
            Source::Head => {
                let seq = hit.locator >> 32;
                let row = (hit.locator & 0xFFFF_FFFF) as usize;
                let at = view.head.partition_point(|(s, _)| *s < seq);
                if let Some((s, batch)) = view.head.get(at)
                    && *s == seq
                    && row < batch.num_rows()
                {
                    hits[out] = hit_json(batch, row, &highlight);
                }
            }
            Source::File(i) => by_file
                .entry(*i)
                .or_default()
                .push((hit.locator as usize, out)),
        }
    }
    for (i, rows) in by_file {
        check()?;
        let path = view.data_dir.join(&view.files[i].path);
        let footer = store.log_file_footer(&view.files[i])?;
        for (batch, row, out) in read_rows(&path, footer, rows)? {
            hits[out] = hit_json(&batch, row, &highlight);
        }
    }
    let next_cursor = (req.limit > 0 && sourced.len() == req.limit)
        .then(|| sourced.last())
        .flatten()
        .map(|(h, _)| {
            Cursor {
                timestamp: h.timestamp,
                log_id: h.log_id,
            }
            .encode()
        });
    Ok(SearchResult {
        hits,
        total: found.total,
        next_cursor,
        histogram: found
            .histogram
            .iter()
            .enumerate()
            .map(|(i, c)| (origin + i as i64 * step, *c))
            .collect(),
        step,
    })
}

/// Reads the given rows (row number, output slot) of a Parquet file whose parsed footer
/// (with its offset index, so that only the pages holding the rows are read and decoded)
/// is `footer`; returns for each the batch holding it and its index there.
fn read_rows(
    path: &Path,
    footer: Arc<ParquetMetaData>,
    mut rows: Vec<(usize, usize)>,
) -> Result<Vec<(RecordBatch, usize, usize)>, SearchError> {
    rows.sort_unstable();
    let file = File::open(path).map_err(|e| SearchError::Io(path.display().to_string(), e))?;
    let metadata = ArrowReaderMetadata::try_new(footer, ArrowReaderOptions::new())?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
    let total = builder.metadata().file_metadata().num_rows() as usize;
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for (row, _) in &rows {
        match ranges.last_mut() {
            Some(r) if r.end == *row => r.end += 1,
            Some(r) if r.end > *row => {}
            _ => ranges.push(*row..*row + 1),
        }
    }
    let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), total);
    let reader = builder
        .with_row_selection(selection)
        .with_batch_size(rows.len().max(1))
        .build()?;
    let mut out = Vec::with_capacity(rows.len());
    let mut next = rows.iter().peekable();
    for batch in reader {
        let batch = batch?;
        for i in 0..batch.num_rows() {
            // Rows come back in file order, one per distinct requested row.
            let Some((row, slot)) = next.next() else {
                break;
            };
            out.push((batch.clone(), i, *slot));
            while let Some((r, s)) = next.peek()
                && r == row
            {
                out.push((batch.clone(), i, *s));
                next.next();
            }
        }
    }
    Ok(out)
}

/// The query's positive body terms, to mark in hits.
#[derive(Debug, Default)]
struct Highlight {
    exact: std::collections::HashSet<String>,
    prefixes: Vec<String>,
}

impl Highlight {
    fn of(expr: &Expr) -> Highlight {
        let mut h = Highlight::default();
        h.walk(expr);
        h
    }

    fn walk(&mut self, expr: &Expr) {
        match expr {
            Expr::And(parts) | Expr::Or(parts) => parts.iter().for_each(|p| self.walk(p)),
            Expr::Match {
                field: Field::Body,
                text,
                kind,
            } => {
                let mut tokens = periscope_storage::logindex::tokenize(text);
                if *kind == MatchKind::Prefix
                    && let Some(last) = tokens.pop()
                {
                    self.prefixes.push(last);
                }
                self.exact.extend(tokens);
            }
            _ => {}
        }
    }

    /// Byte ranges of `text` to mark.
    fn ranges(&self, text: &str) -> Vec<[usize; 2]> {
        if self.exact.is_empty() && self.prefixes.is_empty() {
            return Vec::new();
        }
        let mut tokenizer = TextTokenizer::default();
        let mut stream = tokenizer.token_stream(text);
        let mut out: Vec<[usize; 2]> = Vec::new();
        while stream.advance() {
            let t = stream.token();
            if self.exact.contains(&t.text)
                || self.prefixes.iter().any(|p| t.text.starts_with(p.as_str()))
            {
                match out.last_mut() {
                    Some(last) if last[1] >= t.offset_from => last[1] = last[1].max(t.offset_to),
                    _ => out.push([t.offset_from, t.offset_to]),
                }
            }
        }
        out
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a ArrayRef> {
    batch.column_by_name(name)
}

fn cell(batch: &RecordBatch, name: &str, row: usize) -> Value {
    column(batch, name).map_or(Value::Null, |c| value_json(c, row))
}

/// An attribute map with values in their OTLP type (from the sibling types column).
fn typed_attributes(batch: &RecordBatch, name: &str, types: &str, row: usize) -> Value {
    Value::Object(
        typed_attrs(batch, name, types, row)
            .iter()
            .map(|a| (a.key.clone(), a.json()))
            .collect::<Map<_, _>>(),
    )
}

/// One hit as the API returns it.
fn hit_json(batch: &RecordBatch, row: usize, highlight: &Highlight) -> Value {
    let body = cell(batch, "body", row);
    let marks = body
        .as_str()
        .map(|b| highlight.ranges(b))
        .unwrap_or_default();
    json!({
        "log_id": cell(batch, "log_id", row),
        "timestamp": cell(batch, "timestamp", row),
        "observed_timestamp": cell(batch, "observed_timestamp", row),
        "service_name": cell(batch, "service_name", row),
        "severity_text": cell(batch, "severity_text", row),
        "severity_number": cell(batch, "severity_number", row),
        "body": body,
        "trace_id": cell(batch, "trace_id", row),
        "span_id": cell(batch, "span_id", row),
        "attributes": typed_attributes(batch, "attributes", "attribute_types", row),
        "resource_attributes": typed_attributes(batch, "resource_attributes", "resource_attribute_types", row),
        "scope_name": cell(batch, "scope_name", row),
        "event_name": cell(batch, "event_name", row),
        "highlights": { "body": marks },
    })
}

/// A tantivy query for live tail.
pub fn tail_query(expr: &Expr, store: &Store) -> Box<dyn Query> {
    compile(expr, store.log_fields())
}

/// Every row of a tail batch as a hit.
pub fn tail_hits(batch: &RecordBatch, expr: &Expr) -> Vec<Value> {
    let highlight = Highlight::of(expr);
    (0..batch.num_rows())
        .map(|row| hit_json(batch, row, &highlight))
        .collect()
}

/// One log row as the search API returns it, without highlights (for trace views).
pub fn log_json(batch: &RecordBatch, row: usize) -> Value {
    hit_json(batch, row, &Highlight::default())
}
