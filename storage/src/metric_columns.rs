//! Typed access to the columns of `metrics` rows that the series order and the series
//! index read: string, map and time columns by name (a clear error when one is missing
//! or of another type), a string cell with NULL read as "", and a map cell's entries.

use arrow::array::{Array, AsArray, BooleanArray, MapArray, RecordBatch, StringArray};
use arrow::datatypes::TimestampNanosecondType;

use crate::error::{Error, Result};

fn missing(name: &str) -> Error {
    Error::Schema(format!("metrics rows lack `{name}` of its type"))
}

/// The string column `name` of `batch`.
pub(crate) fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| missing(name))
}

/// The map column `name` of `batch`.
pub(crate) fn map<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a MapArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<MapArray>())
        .ok_or_else(|| missing(name))
}

/// The boolean column `name` of `batch`.
pub(crate) fn booleans<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a BooleanArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_boolean_opt())
        .ok_or_else(|| missing(name))
}

/// The `timestamp` column of `batch`.
pub(crate) fn times(
    batch: &RecordBatch,
) -> Result<&arrow::array::PrimitiveArray<TimestampNanosecondType>> {
    batch
        .column_by_name("timestamp")
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| missing("timestamp"))
}

/// The string at `row`, "" for NULL.
pub(crate) fn text(a: &StringArray, row: usize) -> &str {
    if a.is_valid(row) { a.value(row) } else { "" }
}

/// The entries of map `m` at `row` whose value is not NULL.
pub(crate) fn entries(m: &MapArray, row: usize) -> impl Iterator<Item = (&str, &str)> {
    let offsets = m.value_offsets();
    let (start, end) = if m.is_valid(row) {
        (offsets[row] as usize, offsets[row + 1] as usize)
    } else {
        (0, 0)
    };
    let keys = m.keys().as_string_opt::<i32>();
    let values = m.values().as_string_opt::<i32>();
    (start..end).filter_map(move |i| match (keys, values) {
        (Some(k), Some(v)) if v.is_valid(i) => Some((k.value(i), v.value(i))),
        _ => None,
    })
}

/// The entry range of map `m` at `row` (empty for NULL).
fn entry_range(m: &MapArray, row: usize) -> std::ops::Range<usize> {
    if m.is_valid(row) {
        let offsets = m.value_offsets();
        offsets[row] as usize..offsets[row + 1] as usize
    } else {
        0..0
    }
}

/// Whether map `m` holds the same entries at rows `a` and `b`, as [`entries`] reads
/// them. Keys and values are compared as two byte ranges and their lengths, not string
/// by string: consecutive rows of one series are the common case this is asked about.
pub(crate) fn same_entries(m: &MapArray, a: usize, b: usize) -> bool {
    let (ra, rb) = (entry_range(m, a), entry_range(m, b));
    if ra.len() != rb.len() {
        return false;
    }
    let (Some(keys), Some(values)) = (
        m.keys().as_string_opt::<i32>(),
        m.values().as_string_opt::<i32>(),
    ) else {
        return entries(m, a).eq(entries(m, b));
    };
    if values.null_count() > 0 {
        return entries(m, a).eq(entries(m, b));
    }
    let same = |s: &StringArray| {
        let o = s.value_offsets();
        let bytes =
            |r: &std::ops::Range<usize>| &s.value_data()[o[r.start] as usize..o[r.end] as usize];
        bytes(&ra) == bytes(&rb)
            && (0..ra.len()).all(|i| {
                o[ra.start + i + 1] - o[ra.start + i] == o[rb.start + i + 1] - o[rb.start + i]
            })
    };
    same(keys) && same(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::attributes_builder;

    #[test]
    fn same_entries_compares_pairs_not_just_their_bytes() {
        let mut b = attributes_builder();
        let rows: [&[(&str, &str)]; 5] = [
            &[("a", "bc"), ("d", "e")],
            &[("a", "bc"), ("d", "e")],
            &[("ab", "c"), ("d", "e")], // the same bytes, split otherwise
            &[("a", "bc")],
            &[],
        ];
        for pairs in rows {
            for (k, v) in pairs {
                b.keys().append_value(k);
                b.values().append_value(v);
            }
            b.append(true).unwrap();
        }
        b.append(false).unwrap(); // NULL reads as no entries
        let m = b.finish();
        assert!(same_entries(&m, 0, 1));
        assert!(!same_entries(&m, 1, 2));
        assert!(!same_entries(&m, 1, 3));
        assert!(!same_entries(&m, 3, 4));
        assert!(same_entries(&m, 4, 5));
    }
}
