//! When a rule group evaluates. Each group has its own ticks: its first evaluation time
//! plus whole multiples of its interval, so evaluation times stay aligned whatever
//! happens. Groups evaluate concurrently, at most [`MAX_EVALUATING`] at once.
//!
//! A group never evaluates twice at once. A tick that comes due while the group is still
//! evaluating (or while it waits for a free slot) is not queued: when the group can
//! start, it evaluates at its latest due tick and the older due ticks are skipped and
//! counted as missed, as Prometheus counts `prometheus_rule_group_iterations_missed_total`.

use std::time::Duration;

/// Most groups evaluating at once. Rule queries share the rules' own query memory pool
/// (a quarter of the query memory) and the machine's cores; a few at once keep a slow
/// group from holding up the others without letting many big queries compete for that
/// pool. A due group waits for a free slot; past a whole interval, it skips ticks.
pub(crate) const MAX_EVALUATING: usize = 4;

/// A group's ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// The next tick, Unix ms.
    next: i64,
    /// The interval in ms (at least 1).
    interval: i64,
}

/// An evaluation to run: at `ts`, after skipping `missed` due ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tick {
    /// The evaluation time, Unix ms: always one of the group's ticks.
    pub ts: i64,
    /// Due ticks before `ts` that are skipped.
    pub missed: u64,
}

impl Schedule {
    /// Ticks at `first`, `first + interval`, ...
    pub(crate) fn new(first: i64, interval: Duration) -> Schedule {
        Schedule {
            next: first,
            interval: i64::try_from(interval.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }

    /// The same ticks as `old` (a reloaded group keeps its schedule) at this interval:
    /// the next tick stays, the ones after it follow the new interval.
    pub(crate) fn continuing(old: &Schedule, interval: Duration) -> Schedule {
        Schedule::new(old.next, interval)
    }

    /// The next tick, Unix ms.
    pub(crate) fn next(&self) -> i64 {
        self.next
    }

    /// Whether a tick is due at `now`.
    pub(crate) fn is_due(&self, now: i64) -> bool {
        self.next <= now
    }

    /// Starts an evaluation at `now`, if a tick is due: the latest due tick, the number
    /// of due ticks skipped before it; the next tick is the first one after it.
    pub(crate) fn start(&mut self, now: i64) -> Option<Tick> {
        if !self.is_due(now) {
            return None;
        }
        let missed = (now - self.next) / self.interval;
        let ts = self.next + missed * self.interval;
        self.next = ts + self.interval;
        Some(Tick {
            ts,
            missed: u64::try_from(missed).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_on_time_tick_skips_nothing_and_the_next_follows_one_interval_later() {
        let mut s = Schedule::new(1_000, Duration::from_millis(100));
        assert_eq!(s.start(999), None);
        assert_eq!(
            s.start(1_030),
            Some(Tick {
                ts: 1_000,
                missed: 0
            })
        );
        assert_eq!(s.next(), 1_100);
        assert_eq!(s.start(1_099), None);
        assert_eq!(
            s.start(1_100),
            Some(Tick {
                ts: 1_100,
                missed: 0
            })
        );
    }

    #[test]
    fn a_late_start_evaluates_the_latest_due_tick_and_counts_the_skipped_ones() {
        // A group that was still evaluating from 1000 to 1350: ticks 1100 and 1200 are
        // skipped, it evaluates at 1300 (aligned), then at 1400.
        let mut s = Schedule::new(1_000, Duration::from_millis(100));
        assert_eq!(
            s.start(1_000),
            Some(Tick {
                ts: 1_000,
                missed: 0
            })
        );
        assert_eq!(
            s.start(1_350),
            Some(Tick {
                ts: 1_300,
                missed: 2
            })
        );
        assert_eq!(s.next(), 1_400);
    }

    #[test]
    fn a_reloaded_group_keeps_its_next_tick_and_takes_the_new_interval() {
        let mut old = Schedule::new(1_000, Duration::from_millis(100));
        old.start(1_000);
        let mut s = Schedule::continuing(&old, Duration::from_millis(500));
        assert_eq!(s.next(), 1_100);
        assert_eq!(
            s.start(1_100),
            Some(Tick {
                ts: 1_100,
                missed: 0
            })
        );
        assert_eq!(s.next(), 1_600);
    }
}
