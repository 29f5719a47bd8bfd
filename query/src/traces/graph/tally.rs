//! Latency and error tallies of the graph's nodes and edges, in bounded memory.

use std::collections::BTreeMap;

/// Durations kept exactly up to this many; beyond, in logarithmic buckets.
const EXACT_SAMPLES: usize = 4096;
/// Relative width of a bucket: quantiles past [`EXACT_SAMPLES`] are within 1%.
const BUCKET_GROWTH: f64 = 1.01;

/// Latency and error tallies of a node or edge, in bounded memory: durations are exact
/// for the first [`EXACT_SAMPLES`] calls, then counted in buckets 1% wide (at most a few
/// thousand buckets however many calls).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Calls or requests.
    pub calls: u64,
    /// Of which failed.
    pub errors: u64,
    exact: Vec<i64>,
    buckets: BTreeMap<i32, u64>,
}

fn bucket_of(duration: i64) -> i32 {
    if duration <= 0 {
        return i32::MIN;
    }
    ((duration as f64).ln() / BUCKET_GROWTH.ln()).floor() as i32
}

/// The value a bucket reports: its geometric middle.
fn bucket_value(bucket: i32) -> i64 {
    if bucket == i32::MIN {
        return 0;
    }
    (BUCKET_GROWTH.powf(f64::from(bucket) + 0.5)).round() as i64
}

impl Tally {
    pub(super) fn add(&mut self, duration: i64, error: bool) {
        self.calls += 1;
        self.errors += u64::from(error);
        if self.buckets.is_empty() && self.exact.len() < EXACT_SAMPLES {
            self.exact.push(duration);
            return;
        }
        for d in self.exact.drain(..) {
            *self.buckets.entry(bucket_of(d)).or_default() += 1;
        }
        *self.buckets.entry(bucket_of(duration)).or_default() += 1;
    }

    pub(super) fn merge(&mut self, other: &Tally) {
        self.calls += other.calls;
        self.errors += other.errors;
        if self.buckets.is_empty()
            && other.buckets.is_empty()
            && self.exact.len() + other.exact.len() <= EXACT_SAMPLES
        {
            self.exact.extend_from_slice(&other.exact);
            return;
        }
        for d in self.exact.drain(..).chain(other.exact.iter().copied()) {
            *self.buckets.entry(bucket_of(d)).or_default() += 1;
        }
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
    }

    pub(super) fn finish(&mut self) {
        self.exact.sort_unstable();
    }

    /// The nearest-rank `q` quantile of the durations, ns: exact while at most
    /// [`EXACT_SAMPLES`] were seen, else within 1%.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        if self.buckets.is_empty() {
            return quantile(&self.exact, q);
        }
        let total: u64 = self.buckets.values().sum();
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(bucket_value(*b));
            }
        }
        None
    }
}

/// Nearest-rank quantile of sorted values.
pub fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}
