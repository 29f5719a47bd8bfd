//! Disk space held back for retention.
//!
//! Retention frees space by committing a catalog without the expired files, and writing
//! that catalog needs space itself: on a disk that ingest filled to the last block it
//! would fail forever, and nothing would ever be freed. So the store keeps a file of
//! zeros, `space.reserve`, in the data directory. When retention's catalog write fails
//! for lack of space, the reserve is deleted and the write tried again; the flusher
//! makes the reserve again at a later retention round, once the dropped files are
//! deleted.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::error::{Error, Result};

/// File name of the reserve, in the data directory.
pub(crate) const FILE_NAME: &str = "space.reserve";
/// Size of the reserve: room for a catalog of some ten thousand files.
pub(crate) const RESERVE_BYTES: u64 = 4 << 20;

/// The reserve file of one data directory.
#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    /// The reserve of `bytes` in `data_dir` (none for 0).
    pub fn new(data_dir: &Path, bytes: u64) -> Reserve {
        Reserve {
            path: data_dir.join(FILE_NAME),
            bytes,
        }
    }

    /// Makes sure the reserve exists at its full size. A reserve that cannot be made
    /// (no space yet) is removed again and tried at the next call.
    pub fn ensure(&self) {
        if self.bytes == 0 || fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.bytes) {
            return;
        }
        if let Err(error) = self.write() {
            let _ = fs::remove_file(&self.path);
            tracing::debug!(%error, "Could not make the disk space reserve yet.");
        }
    }

    fn write(&self) -> Result<()> {
        let mut file = fs::File::create(&self.path).map_err(Error::io("create", &self.path))?;
        let chunk = vec![0u8; 64 << 10];
        let mut left = self.bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])
                .map_err(Error::io("write", &self.path))?;
            left -= n as u64;
        }
        file.sync_all().map_err(Error::io("fsync", &self.path))
    }

    /// Deletes the reserve to make room; true when there was one.
    pub fn release(&self) -> bool {
        match fs::remove_file(&self.path) {
            Ok(()) => {
                info!(
                    bytes = self.bytes,
                    "Released the disk space reserve so that retention can free space."
                );
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(error) => {
                warn!(%error, path = %self.path.display(), "Could not release the disk space reserve.");
                false
            }
        }
    }
}

/// Whether `error` says the disk (or quota) is full.
pub(crate) fn is_out_of_space(error: &Error) -> bool {
    matches!(error, Error::Io { source, .. } if matches!(source.raw_os_error(), Some(28) | Some(122)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_made_released_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Reserve::new(dir.path(), 100_000);
        reserve.ensure();
        assert_eq!(
            fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(),
            100_000
        );
        assert!(reserve.release());
        assert!(!reserve.release());
        reserve.ensure();
        assert!(dir.path().join(FILE_NAME).exists());
        Reserve::new(dir.path(), 0).ensure();
    }
}
