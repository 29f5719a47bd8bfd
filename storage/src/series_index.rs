//! The series index beside each metrics file (`_{file}.series`): the file's rows are
//! grouped by series (see `layout`), so the index lists each run of rows of one series —
//! its family (name, type, unit, monotonicity, scope), temporality, attribute and
//! resource attribute pairs, row count and time range — with every string stored once.
//! PromQL resolves selectors against it and then decodes only the time and value columns
//! of the matching rows, instead of reading every row's attribute maps.
//!
//! It is written with the file by flush and compaction (fsynced before the catalog lists
//! the file), deleted with it, and, for a file written before it existed or whose index
//! is unreadable, rebuilt from the file's rows on first use.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{Array, BooleanArray, MapArray, StringArray};
use arrow::datatypes::TimestampNanosecondType;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::file::metadata::PageIndexPolicy;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metric_columns::{entries as map_pairs, text};

/// Version of the stored form; another version is rebuilt from the rows.
const VERSION: u32 = 2;

/// The columns the index is built from.
pub const COLUMNS: [&str; 10] = [
    "metric_name",
    "metric_type",
    "unit",
    "description",
    "is_monotonic",
    "scope_name",
    "temporality",
    "timestamp",
    "attributes",
    "resource_attributes",
];

/// One stored metric family: what tells its rows apart from another family's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FamilyEntry {
    /// `metric_name` (string id).
    pub name: u32,
    /// `metric_type` (string id).
    pub kind: u32,
    /// `unit` (string id; null is "").
    pub unit: u32,
    /// `scope_name` (string id; null is "").
    pub scope: u32,
    /// `is_monotonic` (null is false).
    pub monotonic: bool,
    /// The largest `description` of its rows (string id).
    pub description: u32,
}

/// The series index of one metrics file. Runs partition the file's rows in order: run
/// `i` holds rows `start(i) .. start(i) + rows[i]`.
#[derive(Debug, Clone, Default)]
pub struct SeriesIndex {
    /// Every distinct string, referred to by position.
    pub strings: Vec<String>,
    /// The distinct families.
    pub families: Vec<FamilyEntry>,
    /// Per run: its family.
    pub family: Vec<u32>,
    /// Per run: `temporality` (string id).
    pub temporality: Vec<u32>,
    /// Attribute pairs of all runs, flattened (key id, value id, …).
    pub attributes: Vec<u32>,
    /// Per run: the end of its pairs in `attributes` (in ids, not pairs).
    pub attribute_ends: Vec<u32>,
    /// Resource attribute pairs of all runs, flattened like `attributes`.
    pub resource: Vec<u32>,
    /// Per run: the end of its pairs in `resource`.
    pub resource_ends: Vec<u32>,
    /// Per run: its number of rows.
    pub rows: Vec<u32>,
    /// Per run: its oldest row, Unix nanoseconds.
    pub min_time: Vec<i64>,
    /// Per run: its newest row, Unix nanoseconds.
    pub max_time: Vec<i64>,
    /// Per run: its first row (derived from `rows`, not stored).
    starts: Vec<u64>,
}

/// The stored form: ends stored as counts and times as milliseconds from the file's
/// first, which compress to almost nothing (a run's counts repeat, its times are the
/// file's).
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    strings: Vec<String>,
    families: Vec<FamilyEntry>,
    family: Vec<u32>,
    temporality: Vec<u32>,
    attributes: Vec<u32>,
    attribute_counts: Vec<u32>,
    resource: Vec<u32>,
    resource_counts: Vec<u32>,
    rows: Vec<u32>,
    /// The oldest row's time, Unix nanoseconds.
    base_time: i64,
    /// Per run: its oldest row, milliseconds after `base_time` (rounded down).
    min_ms: Vec<u64>,
    /// Per run: its newest row, milliseconds after `base_time` (rounded up).
    max_ms: Vec<u64>,
}

/// Counts of consecutive ends.
fn counts(ends: &[u32]) -> Vec<u32> {
    let mut last = 0;
    ends.iter()
        .map(|e| {
            let c = e.saturating_sub(last) / 2;
            last = *e;
            c
        })
        .collect()
}

/// Ends of consecutive counts, `None` when they overflow.
fn ends(counts: &[u32]) -> Option<Vec<u32>> {
    let mut end = 0u32;
    counts
        .iter()
        .map(|c| {
            end = end.checked_add(c.checked_mul(2)?)?;
            Some(end)
        })
        .collect()
}

impl SeriesIndex {
    /// Number of runs.
    pub fn len(&self) -> usize {
        self.family.len()
    }

    /// Whether the file has no rows.
    pub fn is_empty(&self) -> bool {
        self.family.is_empty()
    }

    /// The string with id `id`.
    pub fn string(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("", String::as_str)
    }

    /// The first row of run `i`.
    pub fn start(&self, i: usize) -> u64 {
        self.starts[i]
    }

    /// The attribute pairs of run `i`.
    pub fn attribute_pairs(&self, i: usize) -> impl Iterator<Item = (&str, &str)> {
        pairs(self, &self.attributes, &self.attribute_ends, i)
    }

    /// The resource attribute pairs of run `i`.
    pub fn resource_pairs(&self, i: usize) -> impl Iterator<Item = (&str, &str)> {
        pairs(self, &self.resource, &self.resource_ends, i)
    }

    /// The stored form: JSON, zstd-compressed.
    ///
    /// # Errors
    /// When encoding fails.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let base_time = self.min_time.iter().copied().min().unwrap_or(0);
        let ms = |t: i64, up: bool| {
            let d = t.saturating_sub(base_time).max(0) as u64;
            if up {
                d.div_ceil(1_000_000)
            } else {
                d / 1_000_000
            }
        };
        let stored = Stored {
            version: VERSION,
            strings: self.strings.clone(),
            families: self.families.clone(),
            family: self.family.clone(),
            temporality: self.temporality.clone(),
            attributes: self.attributes.clone(),
            attribute_counts: counts(&self.attribute_ends),
            resource: self.resource.clone(),
            resource_counts: counts(&self.resource_ends),
            rows: self.rows.clone(),
            base_time,
            min_ms: self.min_time.iter().map(|t| ms(*t, false)).collect(),
            max_ms: self.max_time.iter().map(|t| ms(*t, true)).collect(),
        };
        let json = serde_json::to_vec(&stored).map_err(|e| Error::Schema(e.to_string()))?;
        zstd::bulk::compress(&json, 3).map_err(|e| Error::Schema(e.to_string()))
    }

    /// Reads the stored form, checking that it is consistent.
    ///
    /// # Errors
    /// When the bytes are not an index of this version or do not hold together.
    pub fn decode(bytes: &[u8]) -> Result<SeriesIndex> {
        let bad = |m: String| Error::Schema(format!("series index: {m}"));
        let json = zstd::stream::decode_all(bytes).map_err(|e| bad(e.to_string()))?;
        let stored: Stored = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
        if stored.version != VERSION {
            return Err(bad(format!(
                "version {}, this build reads {VERSION}",
                stored.version
            )));
        }
        let time = |ms: &[u64], up: bool| -> Vec<i64> {
            ms.iter()
                .map(|m| {
                    let ns = (*m as i64).saturating_mul(1_000_000);
                    let t = stored.base_time.saturating_add(ns);
                    if up { t.saturating_add(999_999) } else { t }
                })
                .collect()
        };
        let (Some(attribute_ends), Some(resource_ends)) = (
            ends(&stored.attribute_counts),
            ends(&stored.resource_counts),
        ) else {
            return Err(bad("pair counts overflow".into()));
        };
        let mut index = SeriesIndex {
            min_time: time(&stored.min_ms, false),
            max_time: time(&stored.max_ms, true),
            strings: stored.strings,
            families: stored.families,
            family: stored.family,
            temporality: stored.temporality,
            attributes: stored.attributes,
            attribute_ends,
            resource: stored.resource,
            resource_ends,
            rows: stored.rows,
            starts: Vec::new(),
        };
        index.check().map_err(bad)?;
        index.derive();
        Ok(index)
    }

    /// Checks every id and length, so that reading never indexes out of bounds.
    fn check(&self) -> std::result::Result<(), String> {
        let n = self.family.len();
        let lengths = [
            self.temporality.len(),
            self.attribute_ends.len(),
            self.resource_ends.len(),
            self.rows.len(),
            self.min_time.len(),
            self.max_time.len(),
        ];
        if lengths.iter().any(|l| *l != n) {
            return Err("columns of different lengths".into());
        }
        let strings = self.strings.len() as u32;
        let string_ok = |id: &u32| *id < strings;
        if !self.families.iter().all(|f| {
            [f.name, f.kind, f.unit, f.scope, f.description]
                .iter()
                .all(string_ok)
        }) || !self.temporality.iter().all(string_ok)
            || !self.attributes.iter().all(string_ok)
            || !self.resource.iter().all(string_ok)
            || !self
                .family
                .iter()
                .all(|f| (*f as usize) < self.families.len())
        {
            return Err("an id out of range".into());
        }
        for (ends, flat) in [
            (&self.attribute_ends, &self.attributes),
            (&self.resource_ends, &self.resource),
        ] {
            let mut last = 0;
            for end in ends {
                if *end < last || *end as usize > flat.len() || end % 2 != 0 {
                    return Err("pair offsets out of order".into());
                }
                last = *end;
            }
        }
        Ok(())
    }

    fn derive(&mut self) {
        let mut start = 0u64;
        self.starts = self
            .rows
            .iter()
            .map(|r| {
                let s = start;
                start += u64::from(*r);
                s
            })
            .collect();
    }

    /// Total rows of the runs.
    pub fn total_rows(&self) -> u64 {
        self.rows.iter().map(|r| u64::from(*r)).sum()
    }
}

fn pairs<'a>(
    index: &'a SeriesIndex,
    flat: &'a [u32],
    ends: &'a [u32],
    i: usize,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    let end = ends[i] as usize;
    flat[start..end]
        .chunks_exact(2)
        .map(|p| (index.string(p[0]), index.string(p[1])))
}

/// The typed columns of a batch the builder reads.
struct Columns<'a> {
    name: &'a StringArray,
    kind: &'a StringArray,
    unit: &'a StringArray,
    description: &'a StringArray,
    monotonic: &'a BooleanArray,
    scope: &'a StringArray,
    temporality: &'a StringArray,
    time: &'a arrow::array::PrimitiveArray<TimestampNanosecondType>,
    attributes: &'a MapArray,
    resource: &'a MapArray,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Columns<'a>> {
        use crate::metric_columns::{booleans, map, strings, times};
        Ok(Columns {
            name: strings(batch, "metric_name")?,
            kind: strings(batch, "metric_type")?,
            unit: strings(batch, "unit")?,
            description: strings(batch, "description")?,
            monotonic: booleans(batch, "is_monotonic")?,
            scope: strings(batch, "scope_name")?,
            temporality: strings(batch, "temporality")?,
            time: times(batch)?,
            attributes: map(batch, "attributes")?,
            resource: map(batch, "resource_attributes")?,
        })
    }
}

impl Columns<'_> {
    /// Whether rows `a` and `b` have the same [`RunKey`].
    fn same_row(&self, a: usize, b: usize) -> bool {
        use crate::metric_columns::same_entries;
        let same_text = |s: &StringArray| text(s, a) == text(s, b);
        let monotonic = |r: usize| self.monotonic.is_valid(r) && self.monotonic.value(r);
        same_text(self.name)
            && same_text(self.kind)
            && same_text(self.unit)
            && same_text(self.scope)
            && monotonic(a) == monotonic(b)
            && same_text(self.temporality)
            && same_entries(self.attributes, a, b)
            && same_entries(self.resource, a, b)
    }
}

/// What makes a run: the row's family fields, temporality and label pairs.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RunKey {
    pub name: String,
    pub kind: String,
    pub unit: String,
    pub scope: String,
    pub monotonic: bool,
    pub temporality: String,
    pub attributes: Vec<(String, String)>,
    pub resource: Vec<(String, String)>,
}

impl RunKey {
    /// The key of run `i` of `index`.
    pub(crate) fn of_run(index: &SeriesIndex, i: usize) -> RunKey {
        let family = &index.families[index.family[i] as usize];
        let owned = |it: &mut dyn Iterator<Item = (&str, &str)>| -> Vec<(String, String)> {
            it.map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        RunKey {
            name: index.string(family.name).to_string(),
            kind: index.string(family.kind).to_string(),
            unit: index.string(family.unit).to_string(),
            scope: index.string(family.scope).to_string(),
            monotonic: family.monotonic,
            temporality: index.string(index.temporality[i]).to_string(),
            attributes: owned(&mut index.attribute_pairs(i)),
            resource: owned(&mut index.resource_pairs(i)),
        }
    }

    fn same(&self, c: &Columns<'_>, row: usize) -> bool {
        text(c.name, row) == self.name
            && text(c.kind, row) == self.kind
            && text(c.unit, row) == self.unit
            && text(c.scope, row) == self.scope
            && (c.monotonic.is_valid(row) && c.monotonic.value(row)) == self.monotonic
            && text(c.temporality, row) == self.temporality
            && same_pairs(&self.attributes, map_pairs(c.attributes, row))
            && same_pairs(&self.resource, map_pairs(c.resource, row))
    }

    fn of(c: &Columns<'_>, row: usize) -> RunKey {
        let owned = |m| {
            map_pairs(m, row)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        RunKey {
            name: text(c.name, row).to_string(),
            kind: text(c.kind, row).to_string(),
            unit: text(c.unit, row).to_string(),
            scope: text(c.scope, row).to_string(),
            monotonic: c.monotonic.is_valid(row) && c.monotonic.value(row),
            temporality: text(c.temporality, row).to_string(),
            attributes: owned(c.attributes),
            resource: owned(c.resource),
        }
    }
}

fn same_pairs<'a>(
    stored: &[(String, String)],
    mut row: impl Iterator<Item = (&'a str, &'a str)>,
) -> bool {
    for (k, v) in stored {
        match row.next() {
            Some((rk, rv)) if rk == k && rv == v => {}
            _ => return false,
        }
    }
    row.next().is_none()
}

/// Builds the index of a file from its rows, in the order they are written.
#[derive(Default)]
pub struct SeriesIndexBuilder {
    index: SeriesIndex,
    ids: HashMap<String, u32>,
    families: HashMap<(u32, u32, u32, u32, bool), u32>,
    current: Option<RunKey>,
}

impl SeriesIndexBuilder {
    /// An empty builder.
    pub fn new() -> SeriesIndexBuilder {
        SeriesIndexBuilder::default()
    }

    fn id(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = self.index.strings.len() as u32;
        self.index.strings.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        id
    }

    /// Adds the rows of `batch`, which follow the rows added before in the file.
    ///
    /// # Errors
    /// When the batch lacks a column the index reads, or has it with another type.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let c = Columns::of(batch)?;
        for row in 0..batch.num_rows() {
            let time = if c.time.is_valid(row) {
                c.time.value(row)
            } else {
                0
            };
            // Inside a batch, the row before is compared (byte ranges); the first row
            // of a batch is compared with the run's key.
            let continues = if row > 0 {
                c.same_row(row - 1, row)
            } else {
                self.current.as_ref().is_some_and(|k| k.same(&c, row))
            };
            if !continues {
                self.start_run(&c, row, time);
            }
            let i = self.index.rows.len() - 1;
            self.index.rows[i] += 1;
            self.index.min_time[i] = self.index.min_time[i].min(time);
            self.index.max_time[i] = self.index.max_time[i].max(time);
            let description = text(c.description, row);
            let family = self.index.family[i] as usize;
            if description > self.index.string(self.index.families[family].description) {
                let id = self.id(description);
                self.index.families[family].description = id;
            }
        }
        Ok(())
    }

    fn start_run(&mut self, c: &Columns<'_>, row: usize, time: i64) {
        let key = RunKey::of(c, row);
        let family = (
            self.id(&key.name),
            self.id(&key.kind),
            self.id(&key.unit),
            self.id(&key.scope),
            key.monotonic,
        );
        let family = match self.families.get(&family) {
            Some(f) => *f,
            None => {
                let description = self.id("");
                let f = self.index.families.len() as u32;
                self.index.families.push(FamilyEntry {
                    name: family.0,
                    kind: family.1,
                    unit: family.2,
                    scope: family.3,
                    monotonic: family.4,
                    description,
                });
                self.families.insert(family, f);
                f
            }
        };
        let temporality = self.id(&key.temporality);
        self.index.family.push(family);
        self.index.temporality.push(temporality);
        for (k, v) in &key.attributes {
            let (k, v) = (self.id(k), self.id(v));
            self.index.attributes.extend([k, v]);
        }
        self.index
            .attribute_ends
            .push(self.index.attributes.len() as u32);
        for (k, v) in &key.resource {
            let (k, v) = (self.id(k), self.id(v));
            self.index.resource.extend([k, v]);
        }
        self.index
            .resource_ends
            .push(self.index.resource.len() as u32);
        self.index.rows.push(0);
        self.index.min_time.push(time);
        self.index.max_time.push(time);
        self.current = Some(key);
    }

    /// The finished index.
    pub fn finish(mut self) -> SeriesIndex {
        self.index.derive();
        self.index
    }
}

/// The extension of the series index beside a metrics file.
const EXT: &str = "series";

/// Where the series index of the metrics file at `parquet` is (`_{stem}.series`, see
/// [`crate::sidecar`]).
pub fn series_path(parquet: &Path) -> PathBuf {
    crate::sidecar::path(parquet, EXT)
}

/// The metrics file whose index is at `series` (the inverse of [`series_path`]).
pub fn parquet_of_series(series: &Path) -> PathBuf {
    crate::sidecar::parquet_of(series, EXT)
}

/// Writes `index` beside `parquet` (durably, see [`crate::sidecar::write`]) and returns
/// its size; the caller fsyncs the directory.
pub(crate) fn write(parquet: &Path, index: &SeriesIndex) -> Result<u64> {
    crate::sidecar::write(parquet, EXT, &index.encode()?)
}

/// The index of the metrics file at `parquet`: read from beside it or, when there is
/// none (a file written before indexes existed, or it was lost or damaged), built from
/// the file's rows.
///
/// # Errors
/// When neither the index nor the file can be read.
pub fn load(parquet: &Path) -> Result<SeriesIndex> {
    let path = series_path(parquet);
    match fs::read(&path) {
        Ok(bytes) => match SeriesIndex::decode(&bytes) {
            Ok(index) => return Ok(index),
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "Series index unreadable; rebuilding it from the file's rows.");
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read", &path)(e)),
    }
    from_rows(parquet)
}

/// Builds the index of a metrics file from its rows.
pub(crate) fn from_rows(parquet: &Path) -> Result<SeriesIndex> {
    let f = fs::File::open(parquet).map_err(Error::io("open", parquet))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)?;
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| COLUMNS.contains(&field.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let mut out = SeriesIndexBuilder::new();
    for batch in builder.with_projection(mask).build()? {
        out.add(&batch?)?;
    }
    Ok(out.finish())
}

/// A metrics file opened for PromQL: its series index and its Parquet footer with the
/// page index, both read once (see [`crate::Store::metric_files`]).
pub struct IndexedFile {
    /// The series index.
    pub index: SeriesIndex,
    path: PathBuf,
    metadata: ArrowReaderMetadata,
}

impl std::fmt::Debug for IndexedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedFile")
            .field("path", &self.path)
            .field("runs", &self.index.len())
            .finish()
    }
}

impl IndexedFile {
    /// Opens the metrics file at `parquet`: reads its footer and its series index (built
    /// from its rows when missing).
    ///
    /// # Errors
    /// When the file or its index cannot be read, or they disagree on its rows.
    pub fn open(parquet: &Path) -> Result<IndexedFile> {
        let file = fs::File::open(parquet).map_err(Error::io("open", parquet))?;
        let metadata = ArrowReaderMetadata::load(
            &file,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )?;
        let mut index = load(parquet)?;
        let rows = metadata.metadata().file_metadata().num_rows() as u64;
        if index.total_rows() != rows {
            tracing::warn!(path = %parquet.display(), "Series index does not cover the file's rows; rebuilding it.");
            index = from_rows(parquet)?;
        }
        Ok(IndexedFile {
            index,
            path: parquet.to_path_buf(),
            metadata,
        })
    }

    /// The uncompressed bytes of the file's row groups, from its footer.
    pub(crate) fn uncompressed_bytes(&self) -> u64 {
        self.metadata
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.total_byte_size().max(0) as u64)
            .sum()
    }

    /// Every column of the rows in `ranges` (ascending, not overlapping), in row order.
    ///
    /// # Errors
    /// When the file cannot be read or decoded.
    pub(crate) fn read_ranges(
        &self,
        ranges: Vec<std::ops::Range<usize>>,
        batch_rows: usize,
    ) -> Result<Vec<RecordBatch>> {
        let file = fs::File::open(&self.path).map_err(Error::io("open", &self.path))?;
        let total = self.index.total_rows() as usize;
        let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), total);
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
                .with_row_selection(selection)
                .with_batch_size(batch_rows.max(1))
                .build()?;
        Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// Reads `columns` of the rows of `runs` (ascending run numbers), in row order, and
    /// hands each batch to `each`; columns the file lacks are left out.
    ///
    /// # Errors
    /// When the file cannot be read or decoded.
    pub fn read_runs(
        &self,
        runs: &[usize],
        columns: &[&str],
        mut each: impl FnMut(RecordBatch),
    ) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let file = fs::File::open(&self.path).map_err(Error::io("open", &self.path))?;
        let builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone());
        let roots: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| columns.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let total = self.index.total_rows() as usize;
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::with_capacity(runs.len());
        for &r in runs {
            let start = self.index.start(r) as usize;
            let end = start + self.index.rows[r] as usize;
            match ranges.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => ranges.push(start..end),
            }
        }
        let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), total);
        let reader = builder
            .with_projection(mask)
            .with_row_selection(selection)
            .with_batch_size(16 * 1024)
            .build()?;
        for batch in reader {
            each(batch?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Signal, attributes_builder, conform};
    use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampNanosecondArray};
    use std::sync::Arc;

    /// A row of a gauge: name, attribute pairs, time (ns).
    type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], i64);

    fn batch(rows: &[Row<'_>]) -> RecordBatch {
        let mut attributes = attributes_builder();
        for (_, pairs, _) in rows {
            for (k, v) in *pairs {
                attributes.keys().append_value(k);
                attributes.values().append_value(v);
            }
            attributes.append(true).unwrap();
        }
        let n = rows.len();
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "metric_name",
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            ),
            (
                "metric_type",
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    "gauge", n,
                ))),
            ),
            (
                "timestamp",
                Arc::new(
                    TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                        .with_timezone("UTC"),
                ),
            ),
            ("attributes", Arc::new(attributes.finish())),
            (
                "value",
                Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
            ),
        ];
        conform(
            Signal::Metrics,
            RecordBatch::try_from_iter(columns).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn runs_follow_the_rows_and_the_stored_form_round_trips() {
        let x1: &[(&str, &str)] = &[("x", "1")];
        let x2: &[(&str, &str)] = &[("x", "2")];
        let mut b = SeriesIndexBuilder::new();
        let ms = |n: i64| 1_700_000_000_000_000_000 + n * 1_000_000;
        b.add(&batch(&[
            ("a", x1, ms(10)),
            ("a", x1, ms(20)),
            ("a", x2, ms(10)),
        ]))
        .unwrap();
        // A run continues across batches; the same series later is a run of its own.
        b.add(&batch(&[
            ("a", x2, ms(5)),
            ("b", x1, ms(30)),
            ("a", x1, ms(40)),
        ]))
        .unwrap();
        let index = b.finish();
        assert_eq!(index.rows, vec![2, 2, 1, 1]);
        assert_eq!(index.min_time, vec![ms(10), ms(5), ms(30), ms(40)]);
        assert_eq!(index.max_time, vec![ms(20), ms(10), ms(30), ms(40)]);
        assert_eq!(index.families.len(), 2);
        assert_eq!(index.family, vec![0, 0, 1, 0]);
        assert_eq!((index.start(2), index.start(3)), (4, 5));
        let pairs: Vec<(&str, &str)> = index.attribute_pairs(1).collect();
        assert_eq!(pairs, vec![("x", "2")]);
        assert_eq!(index.resource_pairs(1).count(), 0);
        let decoded = SeriesIndex::decode(&index.encode().unwrap()).unwrap();
        assert_eq!(decoded.rows, index.rows);
        assert_eq!(decoded.strings, index.strings);
        assert_eq!(decoded.start(3), 5);
        assert_eq!(decoded.attribute_pairs(1).collect::<Vec<_>>(), pairs);
        // Stored times are whole milliseconds, rounded outwards.
        assert_eq!(decoded.min_time, index.min_time);
        assert_eq!(decoded.max_time[2], ms(30) + 999_999);
    }

    #[test]
    fn damaged_or_inconsistent_indexes_are_refused() {
        assert!(SeriesIndex::decode(b"garbage").is_err());
        let mut b = SeriesIndexBuilder::new();
        b.add(&batch(&[("a", &[("x", "1")], 10)])).unwrap();
        let good = b.finish();
        let mut bad = good.clone();
        bad.attributes[0] = 999;
        assert!(SeriesIndex::decode(&bad.encode().unwrap()).is_err());
        let mut bad = good.clone();
        bad.rows.push(3);
        assert!(SeriesIndex::decode(&bad.encode().unwrap()).is_err());
        let mut bad = good;
        bad.attributes.push(3);
        bad.attribute_ends[0] = 4;
        assert!(SeriesIndex::decode(&bad.encode().unwrap()).is_err());
    }
}
