//! Reading number series (gauges, sums, remote-written samples) through the series index
//! of each `metrics` file (see `periscope_storage::series_index`): a selector resolves
//! against each file's series and label postings, and only the time and value columns of
//! the matching rows are decoded. The head's rows (not yet in files) are read directly.
//!
//! What the index gives per file is turned once into what PromQL needs (each series'
//! label set and postings by label) and kept while the file is listed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType, UInt32Type};
use parking_lot::Mutex;
use periscope_otlp::PROMETHEUS_SCOPE;
use periscope_storage::series_index::IndexedFile;
use periscope_storage::{FileEntry, Signal};
use promql_parser::label::MatchOp;

use super::error::{ErrorKind, PromError};
use super::load::{Collector, Listed, Selector, resource_labels, rows};
use super::naming::{Family, Shape, label_name};
use super::value::{Labels, NAME, STALE_NAN_BITS};
use crate::engine::QueryEngine;

/// The columns read for a number series.
const VALUE_COLUMNS: [&str; 4] = ["timestamp", "value", "int_value", "flags"];

/// One file's series as PromQL sees them.
pub(crate) struct View {
    /// Per family of the index: the family and its help text.
    families: Vec<Listed>,
    /// Per run: its label set, `__name__` included (number families only).
    labels: Vec<Option<Labels>>,
    /// Per run: delta temporality (its samples are summed into a running total).
    delta: Vec<bool>,
    /// Per family of the index: its runs, ascending.
    by_family: Vec<Vec<u32>>,
    /// Label name → value → runs (ascending), over number families' label sets.
    postings: HashMap<String, HashMap<String, Vec<u32>>>,
}

impl View {
    /// The view of `file`; label sets already in `interned` (those of other files) are
    /// shared, so that a series is one set whatever file it is read from.
    fn of(file: &IndexedFile, interned: &mut HashSet<Labels>) -> View {
        let index = &file.index;
        let families: Vec<Listed> = index
            .families
            .iter()
            .map(|f| Listed {
                family: Family::new(
                    index.string(f.name),
                    index.string(f.kind),
                    index.string(f.unit),
                    f.monotonic,
                    index.string(f.scope) == PROMETHEUS_SCOPE,
                ),
                help: index.string(f.description).to_string(),
            })
            .collect();
        let mut by_family = vec![Vec::new(); families.len()];
        let mut labels = Vec::with_capacity(index.len());
        let mut delta = Vec::with_capacity(index.len());
        let mut postings: HashMap<String, HashMap<String, Vec<u32>>> = HashMap::new();
        for run in 0..index.len() {
            let f = index.family[run] as usize;
            by_family[f].push(run as u32);
            delta.push(index.string(index.temporality[run]) == "delta");
            let family = &families[f].family;
            if family.shape != Shape::Number {
                labels.push(None);
                continue;
            }
            let mut pairs: Vec<(String, String)> = if family.prometheus {
                index
                    .attribute_pairs(run)
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            } else {
                let mut out: Vec<(String, String)> = index
                    .attribute_pairs(run)
                    .map(|(k, v)| (label_name(k), v.to_string()))
                    .collect();
                let resource: Vec<(&str, &str)> = index.resource_pairs(run).collect();
                let (job, instance, _) = resource_labels(&resource);
                out.extend(job.map(|j| ("job".to_string(), j)));
                out.extend(instance.map(|i| ("instance".to_string(), i)));
                out
            };
            pairs.push((NAME.to_string(), family.name.clone()));
            let set = Labels::from_pairs(pairs);
            let set = match interned.get(&set) {
                Some(shared) => shared.clone(),
                None => {
                    interned.insert(set.clone());
                    set
                }
            };
            for (k, v) in set.pairs() {
                postings
                    .entry(k.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_default()
                    .push(run as u32);
            }
            labels.push(Some(set));
        }
        View {
            families,
            labels,
            delta,
            by_family,
            postings,
        }
    }

    /// The runs of family `f` that `selector` matches.
    fn select(&self, f: usize, selector: &Selector) -> Vec<u32> {
        let mut candidates: &[u32] = &self.by_family[f];
        let narrowed;
        if selector.or_matchers.is_empty() {
            // The smallest posting list of the equality matchers bounds the candidates.
            let smallest = selector
                .matchers
                .iter()
                .filter(|m| m.name != NAME && matches!(m.op, MatchOp::Equal) && !m.value.is_empty())
                .map(|m| {
                    self.postings
                        .get(&m.name)
                        .and_then(|values| values.get(&m.value))
                        .map_or(&[][..], Vec::as_slice)
                })
                .min_by_key(|p| p.len());
            if let Some(p) = smallest
                && p.len() < candidates.len()
            {
                narrowed = p
                    .iter()
                    .copied()
                    .filter(|r| candidates.binary_search(r).is_ok())
                    .collect::<Vec<u32>>();
                candidates = &narrowed;
            }
        }
        // Every series of a number family is named after it: matchers of `__name__` are
        // decided once for the family, and only the others are tried on each series.
        let residual = selector.for_name(&self.families[f].family.name);
        candidates
            .iter()
            .copied()
            .filter(|&r| {
                self.labels[r as usize].as_ref().is_some_and(|l| {
                    residual
                        .iter()
                        .any(|g| g.iter().all(|m| m.is_match(l.get(&m.name))))
                })
            })
            .collect()
    }
}

/// The views of the files read so far, by file path, and their label sets (one per
/// series, shared by the views); entries of files no longer listed are dropped.
#[derive(Default)]
pub(crate) struct Views {
    views: Mutex<Cached>,
}

/// The views by file path, and the label sets they share.
type Cached = (HashMap<String, Arc<View>>, HashSet<Labels>);

impl Views {
    fn get(&self, files: &[FileEntry], opened: &[Arc<IndexedFile>]) -> Vec<Arc<View>> {
        let mut guard = self.views.lock();
        let (cache, interned) = &mut *guard;
        let live: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let before = cache.len();
        cache.retain(|p, _| live.contains(p.as_str()));
        if cache.len() < before {
            // Sets only the interning table still holds belong to no view.
            interned.retain(Labels::is_shared);
        }
        files
            .iter()
            .zip(opened)
            .map(|(f, o)| {
                cache
                    .entry(f.path.clone())
                    .or_insert_with(|| Arc::new(View::of(o, interned)))
                    .clone()
            })
            .collect()
    }
}

/// The files of a snapshot holding rows in `[lo, hi]` (unix ms), opened with their series
/// indexes, and their views.
async fn open_files(
    engine: &QueryEngine,
    files: Vec<FileEntry>,
    lo: i64,
    hi: i64,
) -> Result<Vec<(Arc<IndexedFile>, Arc<View>)>, PromError> {
    let (lo_ns, hi_ns) = window_ns(lo, hi);
    let mut files: Vec<FileEntry> = files
        .into_iter()
        .filter(|f| f.max_time >= lo_ns && f.min_time <= hi_ns)
        .collect();
    // Oldest first: a series' samples then arrive mostly in time order, and sorting
    // them is a pass over runs already in order.
    files.sort_by(|a, b| (a.min_time, a.max_time, &a.path).cmp(&(b.min_time, b.max_time, &b.path)));
    let store = engine.store().clone();
    let views = engine.series_views();
    tokio::task::spawn_blocking(move || {
        let opened = store
            .metric_files(&files)
            .map_err(|e| PromError::execution(format!("reading a metrics file: {e}")))?;
        let v = views.get(&files, &opened);
        Ok(opened.into_iter().zip(v).collect())
    })
    .await
    .map_err(|e| PromError {
        kind: ErrorKind::Internal,
        message: format!("reading series indexes failed: {e}"),
    })?
}

fn window_ns(lo: i64, hi: i64) -> (i64, i64) {
    (
        lo.saturating_mul(1_000_000),
        hi.saturating_mul(1_000_000).saturating_add(999_999),
    )
}

/// The families with rows in `[lo, hi]` (unix ms): those of the files' series indexes
/// whose series reach into the window, and those of the head's rows in it.
pub(crate) async fn families(
    engine: &QueryEngine,
    lo: i64,
    hi: i64,
) -> Result<Vec<Listed>, PromError> {
    let snapshot = engine.store().snapshot(Signal::Metrics);
    let (lo_ns, hi_ns) = window_ns(lo, hi);
    let mut found: HashMap<Family, String> = HashMap::new();
    let mut note = |l: &Listed| {
        let help = found.entry(l.family.clone()).or_default();
        if l.help > *help {
            help.clone_from(&l.help);
        }
    };
    for (file, view) in open_files(engine, snapshot.files, lo, hi).await? {
        let index = &file.index;
        let mut seen = vec![false; view.families.len()];
        for run in 0..index.len() {
            let f = index.family[run] as usize;
            if !seen[f] && index.max_time[run] >= lo_ns && index.min_time[run] <= hi_ns {
                seen[f] = true;
                note(&view.families[f]);
            }
        }
    }
    for batch in &snapshot.batches {
        for l in super::load::head_families(batch, lo_ns, hi_ns)? {
            note(&l);
        }
    }
    let mut out: Vec<Listed> = found
        .into_iter()
        .map(|(family, help)| Listed { family, help })
        .collect();
    out.sort_by(|a, b| {
        a.family
            .name
            .cmp(&b.family.name)
            .then_with(|| a.family.stored_name.cmp(&b.family.stored_name))
            .then_with(|| a.family.metric_type.cmp(&b.family.metric_type))
    });
    Ok(out)
}

/// Samples of one file read for the selected runs: per selected run, its slot, whether
/// it is a delta, and its samples in the window.
type FileSamples = Vec<(usize, bool, Vec<(i64, f64)>)>;

/// Reads the number series of `families` (all of shape `Number`) that `selector`
/// matches, with samples in `[lo, hi]` (unix ms), into `collector`.
pub(crate) async fn read_numbers(
    engine: &QueryEngine,
    families: &[&Family],
    selector: &Selector,
    lo: i64,
    hi: i64,
    collector: &mut Collector,
) -> Result<(), PromError> {
    let snapshot = engine.store().snapshot(Signal::Metrics);
    let (lo_ns, hi_ns) = window_ns(lo, hi);
    let mut reads = Vec::new();
    for (file, view) in open_files(engine, snapshot.files, lo, hi).await? {
        let index = &file.index;
        let mut runs: Vec<(u32, usize, bool)> = Vec::new();
        for (f, listed) in view.families.iter().enumerate() {
            if !families.contains(&&listed.family) {
                continue;
            }
            for run in view.select(f, selector) {
                let r = run as usize;
                if index.max_time[r] < lo_ns || index.min_time[r] > hi_ns {
                    continue;
                }
                if let Some(labels) = &view.labels[r] {
                    let slot = collector.shared_slot(labels);
                    collector.expect(slot, index.rows[r] as usize);
                    runs.push((run, slot, view.delta[r]));
                }
            }
        }
        if runs.is_empty() {
            continue;
        }
        runs.sort_unstable_by_key(|r| r.0);
        reads.push(tokio::task::spawn_blocking(move || {
            read_file(&file, &runs, lo_ns, hi_ns)
        }));
    }
    for read in reads {
        let samples = read.await.map_err(|e| PromError {
            kind: ErrorKind::Internal,
            message: format!("reading a metrics file failed: {e}"),
        })??;
        for (slot, delta, samples) in samples {
            collector.extend(slot, samples, delta)?;
        }
    }
    let (lo_ms, hi_ms) = (lo, hi);
    for batch in &snapshot.batches {
        rows(batch, families, selector, collector, Some((lo_ms, hi_ms)))?;
    }
    Ok(())
}

/// Decodes the time and value columns of `runs` (ascending) of one file.
fn read_file(
    file: &IndexedFile,
    runs: &[(u32, usize, bool)],
    lo_ns: i64,
    hi_ns: i64,
) -> Result<FileSamples, PromError> {
    let index = &file.index;
    let mut out: FileSamples = runs
        .iter()
        .map(|&(r, slot, delta)| {
            (
                slot,
                delta,
                Vec::with_capacity(index.rows[r as usize] as usize),
            )
        })
        .collect();
    let ids: Vec<usize> = runs.iter().map(|r| r.0 as usize).collect();
    // Position in the selected rows: run `current` has `left` rows still to come.
    let mut current = 0usize;
    let mut left = runs
        .first()
        .map_or(0, |r| index.rows[r.0 as usize] as usize);
    let mut failure = None;
    file.read_runs(&ids, &VALUE_COLUMNS, |batch: RecordBatch| {
        if failure.is_some() {
            return;
        }
        let time = batch
            .column_by_name("timestamp")
            .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>());
        let Some(time) = time else {
            failure = Some(PromError::execution(
                "timestamp column has an unexpected type",
            ));
            return;
        };
        let value = batch
            .column_by_name("value")
            .and_then(|c| c.as_primitive_opt::<Float64Type>());
        let int_value = batch
            .column_by_name("int_value")
            .and_then(|c| c.as_primitive_opt::<Int64Type>());
        let flags = batch
            .column_by_name("flags")
            .and_then(|c| c.as_primitive_opt::<UInt32Type>());
        let all_values = value.is_some_and(|v| v.null_count() == 0)
            && flags
                .is_none_or(|f| f.null_count() == f.len() || f.values().iter().all(|x| x & 1 == 0));
        let mut row = 0;
        let n = batch.num_rows();
        while row < n {
            while left == 0 && current + 1 < runs.len() {
                current += 1;
                left = index.rows[runs[current].0 as usize] as usize;
            }
            if left == 0 {
                failure = Some(PromError::execution(
                    "a metrics file has more rows than its series index",
                ));
                return;
            }
            let take = left.min(n - row);
            let samples = &mut out[current].2;
            for i in row..row + take {
                if !time.is_valid(i) {
                    continue;
                }
                let t = time.value(i);
                if t < lo_ns || t > hi_ns {
                    continue;
                }
                let v = match (all_values, value) {
                    (true, Some(v)) => v.value(i),
                    _ => {
                        let no_value = flags.is_some_and(|f| f.is_valid(i) && f.value(i) & 1 == 1);
                        if no_value {
                            f64::from_bits(STALE_NAN_BITS)
                        } else {
                            value
                                .filter(|v| v.is_valid(i))
                                .map(|v| v.value(i))
                                .or_else(|| {
                                    int_value
                                        .filter(|v| v.is_valid(i))
                                        .map(|v| v.value(i) as f64)
                                })
                                .unwrap_or(f64::NAN)
                        }
                    }
                };
                samples.push((t.div_euclid(1_000_000), v));
            }
            row += take;
            left -= take;
        }
    })
    .map_err(|e| PromError::execution(format!("reading a metrics file: {e}")))?;
    match failure {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
