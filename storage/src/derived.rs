//! Columns a spans file leaves out because they are derived on read: a span's `end_time`
//! is `start_time + duration_ns`. A file written from rows where that holds for every row
//! has no `end_time` column (about 3 bytes per span less); otherwise, and in files
//! written before, the column is stored. Readers (the SQL table, compaction) derive it
//! where it is missing, so every reader sees the same values.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::cast;
use arrow::compute::kernels::cmp::not_distinct;
use arrow::compute::kernels::numeric::add;
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};

/// The derived column.
pub const END_TIME: &str = "end_time";

/// `start + duration` (nanoseconds), null where either is.
///
/// # Errors
/// When the columns are not a timestamp and an integer of nanoseconds.
pub fn end_time(start: &ArrayRef, duration: &ArrayRef) -> Result<ArrayRef> {
    let duration = cast(duration, &DataType::Duration(TimeUnit::Nanosecond))?;
    Ok(add(start, &duration)?)
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::Schema(format!("spans rows lack `{name}`")))
}

/// Whether every row of a spans batch has `end_time = start_time + duration_ns` (nulls
/// included), so that a file of these rows may leave `end_time` out.
///
/// # Errors
/// When a column is missing or of another type.
pub(crate) fn end_time_derivable(batch: &RecordBatch) -> Result<bool> {
    let Some(stored) = batch.column_by_name(END_TIME) else {
        return Ok(true);
    };
    let derived = end_time(column(batch, "start_time")?, column(batch, "duration_ns")?)?;
    let same = not_distinct(&derived, stored)?;
    Ok(same.true_count() == batch.num_rows())
}

/// `schema` without `end_time`.
pub(crate) fn without_end_time(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| f.name() != END_TIME)
            .cloned()
            .collect::<Vec<_>>(),
    ))
}

/// `batch` with exactly the columns of `schema`, by name: others dropped, a missing
/// `end_time` derived, any other missing column null.
///
/// # Errors
/// When a column has another type than `schema` says.
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => Ok(c.clone()),
            None if f.name() == END_TIME => {
                let t = end_time(column(batch, "start_time")?, column(batch, "duration_ns")?)?;
                Ok(cast(&t, f.data_type())?)
            }
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampNanosecondArray};
    use arrow::datatypes::Field;

    fn spans(
        start: Vec<Option<i64>>,
        end: Vec<Option<i64>>,
        duration: Vec<Option<i64>>,
    ) -> RecordBatch {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("start_time", ts.clone(), true),
            Field::new(END_TIME, ts, true),
            Field::new("duration_ns", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampNanosecondArray::from(start).with_timezone("UTC")),
                Arc::new(TimestampNanosecondArray::from(end).with_timezone("UTC")),
                Arc::new(Int64Array::from(duration)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn end_time_is_left_out_only_when_every_row_derives_it_and_comes_back_exactly() {
        let b = spans(
            vec![Some(10), None],
            vec![Some(15), None],
            vec![Some(5), None],
        );
        assert!(end_time_derivable(&b).unwrap());
        let file = without_end_time(&b.schema());
        let stored = conform(&b, &file).unwrap();
        assert_eq!(stored.num_columns(), 2);
        let back = conform(&stored, &b.schema()).unwrap();
        assert_eq!(back, b, "read back with end_time derived");
        // A span with an end but no start (or any other mismatch) keeps the column.
        let odd = spans(
            vec![None, Some(1)],
            vec![Some(15), Some(2)],
            vec![None, Some(1)],
        );
        assert!(!end_time_derivable(&odd).unwrap());
    }
}
