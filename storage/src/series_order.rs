//! The order of metric points in a file: grouped by series, series ordered by metric,
//! service, then the labels dashboards filter by (`service`, `namespace`, `instance`
//! attributes, when present), then the rest of their labels (a hash), and each series'
//! points by time. A series' points then sit together (its timestamps delta-encode to a
//! few bits, its labels are runs of one dictionary entry, and the series index lists it
//! as one run), and a selector on a service reads one stretch of the file.
//!
//! Each distinct series is found once (by a hash of its identity, or because the row
//! before had the same one) and ranked once; rows are then sorted by (rank, time), with
//! no string comparisons per row.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use arrow::array::{Array, MapArray, RecordBatch, StringArray};
use arrow::datatypes::TimestampNanosecondType;

use crate::error::Result;

/// The labels that order series after metric and service, in this order.
pub const CLUSTER_LABELS: [&str; 3] = ["service", "namespace", "instance"];

/// The columns of a batch the order reads.
struct Columns<'a> {
    name: &'a StringArray,
    kind: &'a StringArray,
    service: &'a StringArray,
    time: &'a arrow::array::PrimitiveArray<TimestampNanosecondType>,
    maps: [&'a MapArray; 2],
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Columns<'a>> {
        use crate::metric_columns::{map, strings, times};
        Ok(Columns {
            name: strings(batch, "metric_name")?,
            kind: strings(batch, "metric_type")?,
            service: strings(batch, "service_name")?,
            time: times(batch)?,
            maps: [
                map(batch, "attributes")?,
                map(batch, "resource_attributes")?,
            ],
        })
    }

    fn text(a: &'a StringArray, row: usize) -> &'a str {
        crate::metric_columns::text(a, row)
    }

    fn entries(m: &'a MapArray, row: usize) -> impl Iterator<Item = (&'a str, &'a str)> {
        crate::metric_columns::entries(m, row)
    }

    /// Whether rows `a` and `b` are points of the same series.
    fn same_series(&self, a: usize, b: usize) -> bool {
        Self::text(self.name, a) == Self::text(self.name, b)
            && Self::text(self.kind, a) == Self::text(self.kind, b)
            && Self::text(self.service, a) == Self::text(self.service, b)
            && self
                .maps
                .iter()
                .all(|m| crate::metric_columns::same_entries(m, a, b))
    }

    fn identity_hash(&self, row: usize) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        Self::text(self.name, row).hash(&mut h);
        Self::text(self.kind, row).hash(&mut h);
        Self::text(self.service, row).hash(&mut h);
        for m in &self.maps {
            for (k, v) in Self::entries(m, row) {
                k.hash(&mut h);
                v.hash(&mut h);
            }
            0xffu8.hash(&mut h);
        }
        h.finish()
    }

    /// What orders the series of `row` before its hash.
    fn cluster_key(&self, row: usize) -> (&'a str, &'a str, [&'a str; 3]) {
        let mut cluster = [""; 3];
        for (k, v) in Self::entries(self.maps[0], row) {
            if let Some(i) = CLUSTER_LABELS.iter().position(|c| *c == k) {
                cluster[i] = v;
            }
        }
        (
            Self::text(self.name, row),
            Self::text(self.service, row),
            cluster,
        )
    }
}

/// The rows of `batches` (batch, row), metric points, in file order (see the module).
///
/// # Errors
/// When a batch lacks a column the order reads.
pub(crate) fn metric_rows(batches: &[RecordBatch]) -> Result<Vec<(usize, usize)>> {
    let columns = batches
        .iter()
        .map(Columns::of)
        .collect::<Result<Vec<_>>>()?;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    // Distinct series: their cluster key and hash; each row: its series and time.
    type Key<'a> = ((&'a str, &'a str, [&'a str; 3]), u64);
    let mut distinct: Vec<Key<'_>> = Vec::new();
    let mut by_hash: HashMap<u64, u32> = HashMap::new();
    let mut rows: Vec<(u32, i64, u32, u32)> = Vec::with_capacity(total);
    for (b, c) in columns.iter().enumerate() {
        let mut previous: Option<u32> = None;
        for row in 0..batches[b].num_rows() {
            let series = match previous {
                Some(s) if c.same_series(row - 1, row) => s,
                _ => {
                    let h = c.identity_hash(row);
                    *by_hash.entry(h).or_insert_with(|| {
                        distinct.push((c.cluster_key(row), h));
                        (distinct.len() - 1) as u32
                    })
                }
            };
            previous = Some(series);
            let time = if c.time.is_valid(row) {
                c.time.value(row)
            } else {
                i64::MIN
            };
            rows.push((series, time, b as u32, row as u32));
        }
    }
    let mut ranked: Vec<u32> = (0..distinct.len() as u32).collect();
    ranked.sort_unstable_by(|a, b| distinct[*a as usize].cmp(&distinct[*b as usize]));
    let mut rank = vec![0u32; distinct.len()];
    for (r, d) in ranked.iter().enumerate() {
        rank[*d as usize] = r as u32;
    }
    for r in &mut rows {
        r.0 = rank[r.0 as usize];
    }
    rows.sort_unstable();
    Ok(rows
        .into_iter()
        .map(|(_, _, b, r)| (b as usize, r as usize))
        .collect())
}
