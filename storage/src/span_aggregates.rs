//! The span aggregates beside each spans file (`_{file}.agg`, see the `periscope-spanagg`
//! crate and `docs/traces.md`): written with the file by flush and compaction, fsynced
//! before the catalog lists the file, deleted with it, and read back (or, for a file
//! written before aggregates existed, built from its rows) for the service graph and RED.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use periscope_spanagg::{Summary, SummaryBuilder};

use crate::catalog::FileEntry;
use crate::error::{Error, Result};

/// The columns the aggregates read.
pub const COLUMNS: [&str; 11] = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "service_name",
    "name",
    "kind",
    "start_time",
    "duration_ns",
    "status_code",
    "attributes",
    "resource_attributes",
];

/// The extension of the span aggregates beside a spans file.
const EXT: &str = "agg";

/// Where the aggregates of the spans file at `parquet` are (`_{stem}.agg`, see
/// [`crate::sidecar`]).
pub fn agg_path(parquet: &Path) -> PathBuf {
    crate::sidecar::path(parquet, EXT)
}

/// The spans file whose aggregates are at `agg` (the inverse of [`agg_path`]).
pub fn parquet_of_agg(agg: &Path) -> PathBuf {
    crate::sidecar::parquet_of(agg, EXT)
}

/// Writes `summary` beside `parquet` (durably, see [`crate::sidecar::write`]) and
/// returns its size; the caller fsyncs the directory.
pub(crate) fn write(parquet: &Path, summary: &Summary) -> Result<u64> {
    crate::sidecar::write(parquet, EXT, &summary.encode()?)
}

/// The aggregates of `file`: read from beside it or, when there are none (a file written
/// before they existed, or they were lost), built from its rows.
///
/// # Errors
/// When neither the aggregates nor the file can be read.
pub fn load(data_dir: &Path, file: &FileEntry) -> Result<Summary> {
    let parquet = data_dir.join(&file.path);
    let path = agg_path(&parquet);
    match fs::read(&path) {
        Ok(bytes) => match Summary::decode(&bytes) {
            Ok(s) => return Ok(s),
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "Span aggregates unreadable; rebuilding them from the file's rows.");
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read", &path)(e)),
    }
    from_rows(&parquet)
}

/// Builds the aggregates of a spans file from its rows.
pub(crate) fn from_rows(parquet: &Path) -> Result<Summary> {
    let f = fs::File::open(parquet).map_err(Error::io("open", parquet))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)?;
    let schema = builder.parquet_schema();
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| COLUMNS.contains(&field.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(schema, roots);
    let mut out = SummaryBuilder::new();
    for batch in builder.with_projection(mask).build()? {
        out.add_batch(&batch?);
    }
    Ok(out.finish())
}

/// Aggregates read so far, by file path (see [`crate::sidecar_cache`]).
#[derive(Default)]
pub(crate) struct Cache(crate::sidecar_cache::Cache<Summary>);

impl Cache {
    /// The aggregates of `files` (spans files), reading those not cached yet; entries of
    /// files no longer given are dropped.
    pub(crate) fn get(&self, data_dir: &Path, files: &[FileEntry]) -> Result<Vec<Arc<Summary>>> {
        self.0.get(files, |f| load(data_dir, f))
    }
}
