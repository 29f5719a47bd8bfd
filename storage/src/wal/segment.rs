//! Appending to the WAL: the segment being written, and the rule that a segment whose
//! write or fsync failed is never appended to again.
//!
//! After a failed `write` or `fdatasync` the state of the file's pages is unknown (the
//! kernel may have dropped the dirty pages and cleared the error), and a cut-back of the
//! failed bytes may fail too. So [`Log`] abandons the segment on any failure and the next
//! append starts a new one; every later acknowledged record lands in a clean file, never
//! after garbage. Creating a segment is idempotent: a creation that failed halfway (file
//! made, header or directory fsync failed) leaves a file without records, which the next
//! attempt takes over instead of failing with "file exists" forever.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::format::{FILE_HEADER, file_header, is_unfinished_header};
use super::segment_path;
use crate::durability::sync_dir;
use crate::error::{Error, Result};

/// One segment file open for appending.
pub(crate) struct Segment {
    path: PathBuf,
    id: u64,
    file: File,
    len: u64,
}

impl Segment {
    /// Creates segment `id` with its header and makes its entry durable. A file of that
    /// id left by a creation that failed halfway is taken over.
    ///
    /// # Errors
    /// When the file cannot be written or synced, or already holds records.
    pub fn create(dir: &Path, id: u64) -> Result<Segment> {
        let path = segment_path(dir, id);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("create WAL segment", &path))?;
        let mut existing = Vec::new();
        (&mut file)
            .take(FILE_HEADER as u64 + 1)
            .read_to_end(&mut existing)
            .map_err(Error::io("read WAL segment", &path))?;
        if !is_unfinished_header(&existing) {
            return Err(Error::Io {
                op: "create WAL segment",
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the segment already holds records",
                ),
            });
        }
        let header = file_header();
        file.set_len(0)
            .and_then(|()| file.write_all(&header))
            .and_then(|()| file.sync_data())
            .map_err(Error::io("create WAL segment", &path))?;
        sync_dir(dir)?;
        Ok(Segment {
            path,
            id,
            file,
            len: header.len() as u64,
        })
    }

    /// Writes `data` (whole records) and fsyncs. On failure the segment is cut back to
    /// its previous length (best effort) and must not be appended to again.
    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        #[cfg(test)]
        if tests::take_fault(&self.path) {
            // A write that failed halfway and whose cut-back failed too.
            let _ = self.file.write_all(&data[..data.len() / 2]);
            return Err(Error::io("append to WAL segment", &self.path)(
                std::io::Error::from_raw_os_error(5),
            ));
        }
        let result = self
            .file
            .write_all(data)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += data.len() as u64;
                Ok(())
            }
            Err(source) => {
                if let Err(error) = self.file.set_len(self.len) {
                    warn!(%error, path = %self.path.display(), "Could not cut a failed WAL write back.");
                }
                Err(Error::Io {
                    op: "append to WAL segment",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

/// The WAL as its writer sees it: the segment being appended to, if one is open.
pub(crate) struct Log {
    dir: PathBuf,
    current: Option<Segment>,
    /// The newest segment id in use; every segment up to it holds only rows that are in
    /// the head.
    last_id: u64,
}

impl Log {
    /// A log in `dir` whose segments up to `last_id` exist already; new records go to a
    /// new segment.
    pub fn new(dir: &Path, last_id: u64) -> Log {
        let mut log = Log {
            dir: dir.to_path_buf(),
            current: None,
            last_id,
        };
        if let Err(error) = log.open_next() {
            // Not fatal: the first append tries again and reports the error.
            warn!(%error, "Could not create a WAL segment; will retry at the next write.");
        }
        log
    }

    fn open_next(&mut self) -> Result<&mut Segment> {
        let segment = match self.current.take() {
            Some(segment) => segment,
            None => {
                let segment = Segment::create(&self.dir, self.last_id + 1)?;
                self.last_id = segment.id;
                segment
            }
        };
        Ok(self.current.insert(segment))
    }

    /// Appends whole records and fsyncs them. On failure the segment is abandoned: the
    /// next append goes to a new one.
    ///
    /// # Errors
    /// When no segment can be created, or the write or fsync fails; nothing is
    /// acknowledged then.
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        let result = self.open_next()?.append_durable(data);
        if result.is_err()
            && let Some(abandoned) = self.current.take()
        {
            warn!(path = %abandoned.path.display(), "WAL segment abandoned after a failed write; the next write starts a new one.");
        }
        result
    }

    /// Closes the current segment and starts the next one; returns the id up to which
    /// segments hold only rows written before this call.
    pub fn rotate(&mut self) -> u64 {
        let upto = self.last_id;
        self.current = None;
        if let Err(error) = self.open_next() {
            warn!(%error, "Could not create a WAL segment; will retry at the next write.");
        }
        upto
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    static FAULTS: parking_lot::Mutex<Vec<PathBuf>> = parking_lot::Mutex::new(Vec::new());

    /// Makes the next write to the segment `path` fail halfway, with a failed cut-back.
    pub(crate) fn inject_fault(path: &Path) {
        FAULTS.lock().push(path.to_path_buf());
    }

    pub(super) fn take_fault(path: &Path) -> bool {
        let mut faults = FAULTS.lock();
        let before = faults.len();
        faults.retain(|p| p != path);
        faults.len() != before
    }
}
