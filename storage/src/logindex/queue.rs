//! The queue between the WAL writer and the head log index's indexer thread, bounded in
//! bytes: when the indexer falls behind by more than the limit, the writer waits (and
//! with it new acknowledgements), rather than holding an unbounded backlog of batches
//! that a flush may already have released from the head. Its size is published on
//! `/metrics` (`periscope_log_index_queue_bytes`), and every wait is counted
//! (`periscope_log_index_queue_waits`).

use parking_lot::{Condvar, Mutex};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// Bytes of batches in the queue, against a limit.
#[derive(Debug)]
pub(crate) struct QueueBudget {
    bytes: Mutex<u64>,
    drained: Condvar,
    limit: u64,
    gauge: Gauge,
    waits: Counter,
}

impl QueueBudget {
    /// A budget of `limit` bytes, published on `gauge`, its waits counted in `waits`.
    pub fn new(limit: u64, gauge: Gauge, waits: Counter) -> QueueBudget {
        QueueBudget {
            bytes: Mutex::new(0),
            drained: Condvar::new(),
            limit,
            gauge,
            waits,
        }
    }

    /// Takes `bytes` for a batch about to be queued, waiting while the queue holds
    /// other batches and `bytes` more would pass the limit (a batch larger than the
    /// limit goes alone).
    pub fn take(&self, bytes: u64) {
        let mut held = self.bytes.lock();
        if *held > 0 && *held + bytes > self.limit {
            self.waits.inc();
            while *held > 0 && *held + bytes > self.limit {
                self.drained.wait(&mut held);
            }
        }
        *held += bytes;
        self.gauge.set(i64::try_from(*held).unwrap_or(i64::MAX));
    }

    /// Gives back the bytes of a batch the indexer has taken in.
    pub fn give(&self, bytes: u64) {
        let mut held = self.bytes.lock();
        *held = held.saturating_sub(bytes);
        self.gauge.set(i64::try_from(*held).unwrap_or(i64::MAX));
        self.drained.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_full_queue_makes_the_sender_wait_and_counts_it() {
        let (gauge, waits) = (Gauge::default(), Counter::default());
        let queue = Arc::new(QueueBudget::new(100, gauge.clone(), waits.clone()));
        queue.take(60);
        let sender = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || queue.take(60))
        };
        // The second batch waits for room.
        while waits.get() == 0 {
            assert!(!sender.is_finished(), "a batch passed a full queue");
            std::thread::yield_now();
        }
        assert_eq!(gauge.get(), 60);
        assert!(!sender.is_finished());
        queue.give(60);
        sender.join().unwrap();
        assert_eq!(gauge.get(), 60);
        // A batch larger than the whole limit goes alone.
        queue.give(60);
        queue.take(500);
        assert_eq!(gauge.get(), 500);
    }
}
