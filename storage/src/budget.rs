//! The memory budget of unflushed rows.
//!
//! Every append reserves the bytes its rows will hold in the head before it is queued
//! for the WAL. The reservation is a [`Reservation`] value that travels with the append:
//! it becomes the head's once the rows are acknowledged ([`Reservation::into_head`]; the
//! flush that writes them out gives the bytes back), and it is given back when dropped
//! anywhere else — a refused write, or a caller that stopped waiting (a client deadline,
//! a closed connection) before its append reached the WAL. So no path can leak budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::gauge::Gauge;

use crate::error::{Error, Result};

/// Bytes held by unflushed rows, against a limit.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicU64,
    limit: u64,
    gauge: Gauge,
}

impl Budget {
    /// A budget of `limit` bytes whose use is published on `gauge`.
    pub fn new(limit: u64, gauge: Gauge) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicU64::new(0),
            limit,
            gauge,
        })
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether the budget is used up.
    pub fn is_full(&self) -> bool {
        self.used() >= self.limit
    }

    /// Reserves `bytes` for one append.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when they do not fit; nothing is reserved then.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation> {
        let used = self.used.fetch_add(bytes, Ordering::AcqRel);
        if used + bytes > self.limit {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Error::Overloaded {
                used,
                limit: self.limit,
            });
        }
        self.publish();
        Ok(Reservation {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Counts rows that are already in the head (replayed from the WAL), past the limit
    /// if need be.
    pub fn hold(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
        self.publish();
    }

    /// Gives back bytes the head no longer holds.
    pub fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.publish();
    }

    fn publish(&self) {
        self.gauge
            .set(i64::try_from(self.used()).unwrap_or(i64::MAX));
    }
}

/// Bytes reserved for one append; given back on drop unless [`Reservation::into_head`]
/// handed them to the head. A receiver may take one before it converts a request (see
/// [`crate::Store::reserve_rows`]), so that a request refused for memory is refused
/// before the work of converting it, not after.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Reservation {
    /// The rows were acknowledged and joined the head: the bytes stay in use until the
    /// flush that writes them out releases them. Returns the bytes.
    pub(crate) fn into_head(mut self) -> u64 {
        std::mem::take(&mut self.bytes)
    }

    /// The bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes the reservation exactly `bytes`: gives back what is over, or reserves what
    /// is missing.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the missing bytes do not fit; the reservation is
    /// unchanged then.
    pub(crate) fn resize(&mut self, bytes: u64) -> Result<()> {
        if bytes <= self.bytes {
            self.budget.release(self.bytes - bytes);
        } else {
            let more = self.budget.reserve(bytes - self.bytes)?;
            more.into_head();
        }
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_reservation_gives_its_bytes_back_and_one_in_the_head_keeps_them() {
        let budget = Budget::new(100, Gauge::default());
        let a = budget.reserve(60).unwrap();
        assert!(matches!(budget.reserve(50), Err(Error::Overloaded { .. })));
        assert_eq!(budget.used(), 60);
        drop(a);
        assert_eq!(budget.used(), 0);
        let b = budget.reserve(70).unwrap();
        assert_eq!(b.into_head(), 70);
        assert_eq!(budget.used(), 70);
        budget.release(70);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_reservation_resizes_to_what_the_rows_really_hold() {
        let budget = Budget::new(100, Gauge::default());
        let mut a = budget.reserve(60).unwrap();
        a.resize(20).unwrap();
        assert_eq!((a.bytes(), budget.used()), (20, 20));
        a.resize(90).unwrap();
        assert_eq!((a.bytes(), budget.used()), (90, 90));
        assert!(matches!(a.resize(101), Err(Error::Overloaded { .. })));
        assert_eq!(
            (a.bytes(), budget.used()),
            (90, 90),
            "a failed resize changes nothing"
        );
        drop(a);
        assert_eq!(budget.used(), 0);
    }
}
