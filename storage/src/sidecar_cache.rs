//! A cache of what is read from beside each data file (span aggregates, series indexes):
//! files never change once written, so an entry stays valid until its file leaves the
//! catalog, and entries of files no longer given are dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::catalog::FileEntry;
use crate::error::Result;

/// Values read per file, by the file's path.
pub(crate) struct Cache<T> {
    entries: Mutex<HashMap<String, Arc<T>>>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Cache<T> {
    /// The values of `files`, in the same order, loading with `load` those not cached
    /// yet (outside the lock); entries of files not given are dropped.
    ///
    /// # Errors
    /// The first error of `load`.
    pub(crate) fn get(
        &self,
        files: &[FileEntry],
        load: impl Fn(&FileEntry) -> Result<T>,
    ) -> Result<Vec<Arc<T>>> {
        let mut out: Vec<Option<Arc<T>>> = {
            let cache = self.entries.lock();
            files.iter().map(|f| cache.get(&f.path).cloned()).collect()
        };
        for (slot, file) in out.iter_mut().zip(files) {
            if slot.is_none() {
                *slot = Some(Arc::new(load(file)?));
            }
        }
        let out: Vec<Arc<T>> = out.into_iter().flatten().collect();
        let live: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let mut cache = self.entries.lock();
        cache.retain(|path, _| live.contains(path.as_str()));
        for (f, v) in files.iter().zip(&out) {
            cache.entry(f.path.clone()).or_insert_with(|| v.clone());
        }
        Ok(out)
    }
}
