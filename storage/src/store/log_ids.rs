//! Ids of `logs` rows: every row gets the next id of one increasing sequence when it is
//! appended (before it reaches the WAL, so a replay restores the same ids), and a
//! restart continues after the largest id in the catalog or the WAL.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// `batch` with its `log_id` column set to `first`, `first + 1`, ….
pub(super) fn with_log_ids(batch: RecordBatch, first: u64) -> Result<RecordBatch> {
    let schema = batch.schema();
    let Ok(index) = schema.index_of("log_id") else {
        return Err(Error::Schema("logs batch lacks column `log_id`".into()));
    };
    let ids = arrow::array::UInt64Array::from_iter_values(first..first + batch.num_rows() as u64);
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(ids);
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The largest `log_id` in a `logs` batch.
pub(super) fn max_log_id(batch: &RecordBatch) -> Option<u64> {
    let ids = batch
        .column_by_name("log_id")?
        .as_any()
        .downcast_ref::<arrow::array::UInt64Array>()?;
    arrow::compute::max(ids)
}
