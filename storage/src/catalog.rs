//! The file catalog: which Parquet files make up each table, and how much of the WAL they
//! cover. Kept as `catalog.json` in the data directory and replaced atomically (write a
//! temporary file, fsync, rename, fsync the directory), so a crash leaves either the old
//! or the new catalog, never a mix. A Parquet file that the catalog does not list is an
//! orphan of an interrupted flush and is deleted at start-up.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durability::sync_dir;
use crate::error::{Error, Result};
use crate::schema::Signal;

const FILE_NAME: &str = "catalog.json";

/// One Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The table the file belongs to, by name (`spans`, `logs`, `metrics`).
    pub signal: String,
    /// Path relative to the data directory.
    pub path: String,
    /// Number of rows.
    pub rows: u64,
    /// Size on disk in bytes.
    pub bytes: u64,
    /// Smallest value of the table's time column, Unix nanoseconds.
    pub min_time: i64,
    /// Largest value of the table's time column, Unix nanoseconds.
    pub max_time: i64,
    /// Size of what sits beside the file: the log index directory (`logs`), the span
    /// aggregates (`spans`) or the series index (`metrics`), in bytes.
    #[serde(default)]
    pub index_bytes: u64,
    /// Service → `periscope.component.kind` of the file's rows (the service graph's node
    /// kinds).
    /// `None` for files written before this was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<BTreeMap<String, String>>,
}

/// The catalog's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// Format version of this file.
    #[serde(default)]
    pub version: u32,
    /// Every WAL segment with an id up to this one is entirely in the files below.
    pub flushed_upto: u64,
    /// The files, oldest first.
    pub files: Vec<FileEntry>,
    /// Every `log_id` handed out before the last flush is below this.
    #[serde(default)]
    pub next_log_id: u64,
}

impl Catalog {
    /// Loads the catalog of `data_dir`, or an empty one if there is none yet.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn load(data_dir: &Path) -> Result<Catalog> {
        let path = data_dir.join(FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Catalog {
                path,
                message: format!("cannot be parsed ({e}); restore it from a backup or move it away to start empty"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog {
                version: 1,
                ..Default::default()
            }),
            Err(e) => Err(Error::io("read catalog", path)(e)),
        }
    }

    /// Replaces the catalog file atomically.
    ///
    /// # Errors
    /// When the file cannot be written, synced or renamed.
    pub fn store(&self, data_dir: &Path) -> Result<()> {
        let path = data_dir.join(FILE_NAME);
        let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Catalog {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(Error::io("write catalog", &path))?;
        sync_dir(data_dir)
    }

    /// Deletes Parquet files, log index directories and temporary files under the table
    /// directories that this catalog does not list: the leftovers of a flush that a crash
    /// interrupted.
    ///
    /// # Errors
    /// When a table directory cannot be listed.
    pub fn remove_orphans(&self, data_dir: &Path) -> Result<Vec<PathBuf>> {
        let known: std::collections::HashSet<&str> =
            self.files.iter().map(|f| f.path.as_str()).collect();
        let mut removed = Vec::new();
        for signal in Signal::ALL {
            let dir = data_dir.join(signal.name());
            if dir.exists() {
                walk(&dir, &mut |p, is_dir| {
                    let ext = p.extension().and_then(|e| e.to_str());
                    let data = if ext == Some("agg") {
                        crate::span_aggregates::parquet_of_agg(p)
                    } else if ext == Some("series") {
                        crate::series_index::parquet_of_series(p)
                    } else if ext == Some("index") {
                        p.with_extension("parquet")
                    } else {
                        p.to_path_buf()
                    };
                    let rel = data
                        .strip_prefix(data_dir)
                        .unwrap_or(&data)
                        .to_string_lossy()
                        .to_string();
                    let orphan = matches!(
                        ext,
                        Some("parquet")
                            | Some("tmp")
                            | Some("index")
                            | Some("agg")
                            | Some("series")
                    ) && !known.contains(rel.as_str());
                    let gone = orphan
                        && if is_dir {
                            fs::remove_dir_all(p).is_ok()
                        } else {
                            fs::remove_file(p).is_ok()
                        };
                    if gone {
                        removed.push(p.to_path_buf());
                    }
                })?;
            }
        }
        Ok(removed)
    }
}

/// Calls `f(path, is_dir)` for every file under `dir`, and for index directories
/// (`*.index`) without descending into them.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, bool)) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && path.extension().and_then(|e| e.to_str()) != Some("index") {
            walk(&path, f)?;
        } else {
            f(&path, is_dir);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_round_trips_and_orphans_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let empty = Catalog::load(dir.path()).unwrap();
        assert!(empty.files.is_empty());
        let part = dir.path().join("spans/2026-11-25/13");
        fs::create_dir_all(&part).unwrap();
        fs::write(part.join("a.parquet"), b"x").unwrap();
        fs::write(part.join("b.parquet"), b"y").unwrap();
        fs::write(part.join("c.parquet.tmp"), b"z").unwrap();
        fs::write(part.join("_a.agg"), b"kept").unwrap();
        fs::write(part.join("_b.agg"), b"orphan").unwrap();
        fs::write(part.join("_a.series"), b"kept").unwrap();
        fs::write(part.join("_b.series"), b"orphan").unwrap();
        fs::create_dir_all(part.join("a.index")).unwrap();
        fs::create_dir_all(part.join("b.index")).unwrap();
        fs::write(part.join("b.index/meta.json"), b"{}").unwrap();
        let cat = Catalog {
            version: 1,
            flushed_upto: 3,
            files: vec![FileEntry {
                signal: "spans".into(),
                path: "spans/2026-11-25/13/a.parquet".into(),
                rows: 1,
                bytes: 1,
                min_time: 0,
                max_time: 0,
                index_bytes: 0,
                components: Default::default(),
            }],
            next_log_id: 0,
        };
        cat.store(dir.path()).unwrap();
        let loaded = Catalog::load(dir.path()).unwrap();
        assert_eq!(loaded.files, cat.files);
        assert_eq!(loaded.flushed_upto, 3);
        let removed = loaded.remove_orphans(dir.path()).unwrap();
        assert_eq!(removed.len(), 5);
        assert!(part.join("_a.series").exists());
        assert!(!part.join("_b.series").exists());
        assert!(part.join("a.parquet").exists());
        assert!(part.join("_a.agg").exists());
        assert!(!part.join("_b.agg").exists());
        assert!(part.join("a.index").exists());
        assert!(!part.join("b.index").exists());
        assert!(!part.join("b.parquet").exists());
    }

    #[test]
    fn a_damaged_catalog_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let err = Catalog::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cannot be parsed"), "{err}");
    }
}
