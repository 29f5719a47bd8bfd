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
