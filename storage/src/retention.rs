//! Retention: how long each table keeps its rows. Whole files go when their newest row
//! is older than the table's retention: the catalog drops them first (atomically, so a
//! crash leaves either the old or the new catalog), and the Parquet file and its log
//! index are deleted together once no query can still be reading them (after a grace
//! period at least as long as the query timeout; see `store::gc`).

use std::time::Duration;

use crate::catalog::FileEntry;
use crate::schema::Signal;

/// Retention per table; `None` keeps rows forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// `spans`.
    pub spans: Option<Duration>,
    /// `logs`.
    pub logs: Option<Duration>,
    /// `metrics`.
    pub metrics: Option<Duration>,
}

impl Retention {
    /// The retention of one table.
    pub fn of(&self, signal: Signal) -> Option<Duration> {
        match signal {
            Signal::Spans => self.spans,
            Signal::Logs => self.logs,
            Signal::Metrics => self.metrics,
        }
    }

    /// Whether every table keeps its rows forever.
    pub fn is_off(&self) -> bool {
        self.spans.is_none() && self.logs.is_none() && self.metrics.is_none()
    }

    /// Whether `file` holds only rows older than its table's retention at `now_ns`.
    pub fn expired(&self, file: &FileEntry, now_ns: i64) -> bool {
        let Some(signal) = Signal::ALL.into_iter().find(|s| s.name() == file.signal) else {
            return false;
        };
        self.of(signal).is_some_and(|keep| {
            let keep = i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX);
            file.max_time < now_ns.saturating_sub(keep)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(signal: &str, max_time: i64) -> FileEntry {
        FileEntry {
            signal: signal.into(),
            path: format!("{signal}/f.parquet"),
            rows: 1,
            bytes: 1,
            min_time: max_time - 10,
            max_time,
            index_bytes: 0,
            components: Default::default(),
        }
    }

    #[test]
    fn files_expire_by_their_newest_row_and_table() {
        let hour = Duration::from_secs(3600);
        let r = Retention {
            spans: Some(hour),
            logs: None,
            metrics: Some(24 * hour),
        };
        let now = 100 * 3_600_000_000_000i64;
        let ago = |h: i64| now - h * 3_600_000_000_000;
        assert!(r.expired(&file("spans", ago(2)), now));
        assert!(!r.expired(&file("spans", ago(0)), now));
        assert!(
            !r.expired(&file("logs", ago(99)), now),
            "logs are kept forever"
        );
        assert!(!r.expired(&file("metrics", ago(23)), now));
        assert!(r.expired(&file("metrics", ago(25)), now));
        assert!(Retention::default().is_off());
    }
}
