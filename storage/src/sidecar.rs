//! Files beside a data file (`_{stem}.agg` span aggregates, `_{stem}.series` series
//! indexes): where they are, which data file they belong to, and writing one durably.
//! Their names start with `_`, which directory readers (pyarrow datasets, Spark, Hive)
//! skip as metadata, so that pointing one at a table's directory reads only Parquet.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the sidecar with extension `ext` of the data file at `parquet` is.
pub fn path(parquet: &Path, ext: &str) -> PathBuf {
    let stem = parquet
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parquet.with_file_name(format!("_{stem}.{ext}"))
}

/// The data file whose sidecar (extension `ext`) is at `sidecar`: the inverse of [`path`].
pub fn parquet_of(sidecar: &Path, ext: &str) -> PathBuf {
    let name = sidecar
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .trim_start_matches('_')
        .trim_end_matches(ext)
        .trim_end_matches('.');
    sidecar.with_file_name(format!("{stem}.parquet"))
}

/// Writes `bytes` as the sidecar `ext` of `parquet` (through a temporary file, fsynced,
/// renamed) and returns its size; the caller fsyncs the directory.
pub(crate) fn write(parquet: &Path, ext: &str, bytes: &[u8]) -> Result<u64> {
    let path = path(parquet, ext);
    let tmp = path.with_extension(format!("{ext}.tmp"));
    fs::write(&tmp, bytes).map_err(Error::io("write", &tmp))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("fsync", &tmp))?;
    fs::rename(&tmp, &path).map_err(Error::io("rename", &path))?;
    Ok(bytes.len() as u64)
}
