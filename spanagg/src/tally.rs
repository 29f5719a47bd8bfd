//! Latency and error tallies of the graph's nodes and edges and of RED rows: counts plus
//! durations in logarithmic buckets 1% wide, so that a tally is small, merges exactly
//! (the merge of two tallies is the tally of all their calls) and is stored as is in the
//! span aggregates of each file.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Relative width of a bucket: quantiles are within 1% of the true value.
const BUCKET_GROWTH: f64 = 1.01;

/// Calls, errors and the durations of a node, edge or operation, in buckets 1% wide (at
/// most a few thousand buckets however many calls).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Calls or requests.
    pub calls: u64,
    /// Of which failed.
    pub errors: u64,
    /// Bucket → calls whose duration falls in it.
    #[serde(with = "pairs")]
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
    /// Counts one call.
    pub fn add(&mut self, duration: i64, error: bool) {
        self.calls += 1;
        self.errors += u64::from(error);
        *self.buckets.entry(bucket_of(duration)).or_default() += 1;
    }

    /// Adds every call of `other`.
    pub fn merge(&mut self, other: &Tally) {
        self.calls += other.calls;
        self.errors += other.errors;
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
    }

    /// The nearest-rank `q` quantile of the durations, ns, within 1%.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let total: u64 = self.buckets.values().sum();
        if total == 0 {
            return None;
        }
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

/// The buckets as a list of `[bucket, count]` pairs (JSON keys must be strings).
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(map: &BTreeMap<i32, u64>, s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<(i32, u64)> = map.iter().map(|(k, v)| (*k, *v)).collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<i32, u64>, D::Error> {
        Ok(Vec::<(i32, u64)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_equals_tallying_everything_and_quantiles_are_within_one_percent() {
        let (mut a, mut b, mut all) = (Tally::default(), Tally::default(), Tally::default());
        for d in 1..=10_000i64 {
            let t = if d % 3 == 0 { &mut a } else { &mut b };
            t.add(d * 1000, d % 7 == 0);
            all.add(d * 1000, d % 7 == 0);
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(all.calls, 10_000);
        assert_eq!(all.errors, 10_000 / 7);
        let p50 = all.quantile(0.5).unwrap() as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.01, "{p50}");
        let back: Tally = serde_json::from_str(&serde_json::to_string(&all).unwrap()).unwrap();
        assert_eq!(back, all);
        assert_eq!(Tally::default().quantile(0.5), None);
    }
}
