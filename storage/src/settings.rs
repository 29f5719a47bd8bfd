//! The storage sections of the server's TOML file, `[storage]`, `[retention]` and
//! `[compaction]`, with their defaults.
//!
//! The binary reads the file into these sections (durations such as `"30s"` through
//! `humantime-serde`, sizes such as `"256MiB"` through `bytesize`), lays the command-line
//! flags over them, and resolves them here into the values [`crate::StoreConfig`] is
//! built from. A value the flags and the file leave out takes the default written on
//! its field. See `docs/architecture.md` for where the store sits in the server.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::{CompactionConfig, Retention};

/// `[storage]`: where the data lives and when the head is flushed to Parquet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Directory for the WAL, Parquet files and catalog [default: ./periscope-data].
    pub data_dir: Option<PathBuf>,
    /// Flush buffered rows once the oldest is this old [default: 60s].
    #[serde(default, with = "humantime_serde")]
    pub flush_interval: Option<Duration>,
    /// Flush buffered rows once they take this much memory [default: 1/8 of the memory
    /// budget, at most 256MiB].
    pub flush_bytes: Option<ByteSize>,
}

/// `[retention]`: how long each table keeps its rows, and how often that is applied.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Keep spans this long [default: forever].
    #[serde(default, with = "humantime_serde")]
    pub traces: Option<Duration>,
    /// Keep logs this long [default: forever].
    #[serde(default, with = "humantime_serde")]
    pub logs: Option<Duration>,
    /// Keep metric points this long [default: forever].
    #[serde(default, with = "humantime_serde")]
    pub metrics: Option<Duration>,
    /// How often retention runs [default: 1m].
    #[serde(default, with = "humantime_serde")]
    pub check_interval: Option<Duration>,
}

/// `[compaction]`: when small Parquet files are merged, and into what size.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionSection {
    /// How often partitions are checked; `0s` turns compaction off [default: 1m].
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Small files a recent hour partition needs before they are merged [default: 8].
    pub min_files: Option<usize>,
    /// Size a merged file aims at [default: 256MiB].
    pub target_size: Option<ByteSize>,
}

/// A storage setting that is out of range.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `[compaction] min_files` (or `--compaction-min-files`) below two.
    #[error("compaction-min-files: give at least 2 (a merge needs two files)")]
    TooFewCompactionFiles,
}

/// The resolved `[storage]` values.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Directory for the WAL, Parquet files and catalog.
    pub data_dir: PathBuf,
    /// Flush the head once its oldest row is this old.
    pub flush_interval: Duration,
    /// Flush the head once it holds this many bytes.
    pub flush_bytes: u64,
}

impl StorageSection {
    /// Fills in the defaults; `memory_limit` is the process's memory budget.
    pub fn resolve(self, memory_limit: u64) -> StorageSettings {
        StorageSettings {
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from("periscope-data")),
            flush_interval: self.flush_interval.unwrap_or(Duration::from_secs(60)),
            flush_bytes: self
                .flush_bytes
                .map_or((memory_limit / 8).min(256 << 20), |b| b.as_u64()),
        }
    }
}

impl RetentionSection {
    /// How long each table keeps its rows (`None`: forever).
    pub fn retention(&self) -> Retention {
        Retention {
            spans: self.traces,
            logs: self.logs,
            metrics: self.metrics,
        }
    }

    /// How often retention runs [default: 1m].
    pub fn check_interval(&self) -> Duration {
        self.check_interval.unwrap_or(Duration::from_secs(60))
    }
}

impl CompactionSection {
    /// The compaction settings, defaults filled in from [`CompactionConfig::default`].
    ///
    /// # Errors
    ///
    /// [`SettingsError::TooFewCompactionFiles`] when `min_files` is below two.
    pub fn resolve(self) -> Result<CompactionConfig, SettingsError> {
        let defaults = CompactionConfig::default();
        let compaction = CompactionConfig {
            interval: self.interval.unwrap_or(defaults.interval),
            min_files: self.min_files.unwrap_or(defaults.min_files),
            target_bytes: self
                .target_size
                .map_or(defaults.target_bytes, |b| b.as_u64()),
            max_inputs: defaults.max_inputs,
        };
        if compaction.min_files < 2 {
            return Err(SettingsError::TooFewCompactionFiles);
        }
        Ok(compaction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_read_durations_and_sizes_and_default_the_rest() {
        let c: CompactionSection =
            serde_json::from_str(r#"{"interval": "30s", "target_size": "64MiB"}"#).unwrap();
        let c = c.resolve().unwrap();
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.target_bytes, 64 << 20);
        assert_eq!(c.min_files, CompactionConfig::default().min_files);
        let s = StorageSection::default().resolve(1 << 30);
        assert_eq!(s.flush_bytes, 128 << 20);
        assert_eq!(s.flush_interval, Duration::from_secs(60));
        let r: RetentionSection = serde_json::from_str(r#"{"logs": "7d"}"#).unwrap();
        assert_eq!(r.retention().logs, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(r.check_interval(), Duration::from_secs(60));
    }
}
