//! Durability: what makes a write survive a crash. A file's data is made durable by
//! fsyncing the file; its name (a new file, or a rename into place) only by fsyncing the
//! directory that holds it. The WAL, the part files, their log indexes, the catalog and
//! the WAL quarantine all go through the directory fsync here before anything that
//! depends on them is acknowledged or committed.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Makes a directory entry (a new or renamed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}
