//! SQL functions Periscope adds to DataFusion.
//!
//! `histogram_quantile(q, bucket_counts, explicit_bounds)`: the `q` quantile of an OTLP
//! explicit-bucket histogram point (the `metrics` columns of those names), estimated as
//! Prometheus's `histogram_quantile` does for classic buckets: linear interpolation inside
//! the bucket holding the rank, 0 as the lower bound of the first bucket (when its upper
//! bound is positive), and the highest finite bound when the rank falls in the last
//! (+Inf) bucket.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Float64Builder};
use arrow::datatypes::{DataType, Field, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The `q` quantile of a histogram with per-bucket (not cumulative) `counts` and
/// `bounds` (upper bounds of all but the last bucket, which is +Inf), as Prometheus's
/// `bucketQuantile` computes it. `None` when the shape is invalid (`counts` must have
/// one more entry than `bounds`); NaN when there are no observations or no finite bound.
pub fn bucket_quantile(q: f64, counts: &[f64], bounds: &[f64]) -> Option<f64> {
    if counts.len() != bounds.len() + 1 {
        return None;
    }
    if q.is_nan() {
        return Some(f64::NAN);
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    if bounds.is_empty() {
        return Some(f64::NAN);
    }
    // Cumulative counts, forced monotonic as Prometheus does for inconsistent input.
    let mut cumulative = Vec::with_capacity(counts.len());
    let mut total = 0.0;
    for c in counts {
        total += c.max(0.0);
        cumulative.push(total);
    }
    if total == 0.0 {
        return Some(f64::NAN);
    }
    let rank = q * total;
    let b = cumulative.partition_point(|&c| c < rank);
    let last = counts.len() - 1;
    if b >= last {
        return Some(bounds[last - 1]);
    }
    if b == 0 && bounds[0] <= 0.0 {
        return Some(bounds[0]);
    }
    let (start, below) = if b == 0 {
        (0.0, 0.0)
    } else {
        (bounds[b - 1], cumulative[b - 1])
    };
    let end = bounds[b];
    let in_bucket = cumulative[b] - below;
    Some(start + (end - start) * ((rank - below) / in_bucket))
}

/// The `histogram_quantile` SQL function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HistogramQuantile {
    signature: Signature,
}

impl Default for HistogramQuantile {
    fn default() -> Self {
        HistogramQuantile {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl HistogramQuantile {
    /// The function, ready to register on a session.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::from(HistogramQuantile::default())
    }
}

fn float_list(array: &ArrayRef, what: &str) -> Result<ArrayRef> {
    let target = DataType::List(Arc::new(Field::new("item", DataType::Float64, true)));
    match array.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            Ok(arrow::compute::cast(array, &target)?)
        }
        DataType::Null => Ok(arrow::array::new_null_array(&target, array.len())),
        other => exec_err!("histogram_quantile: {what} must be a list of numbers, not {other}"),
    }
}

impl ScalarUDFImpl for HistogramQuantile {
    fn name(&self) -> &str {
        "histogram_quantile"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [q, counts, bounds] = args.args.as_slice() else {
            return exec_err!("histogram_quantile takes (q, bucket_counts, explicit_bounds)");
        };
        let q = arrow::compute::cast(&q.to_array(n)?, &DataType::Float64)?;
        let q: &Float64Array = q.as_primitive::<Float64Type>();
        let counts = float_list(&counts.to_array(n)?, "bucket_counts")?;
        let bounds = float_list(&bounds.to_array(n)?, "explicit_bounds")?;
        let (counts, bounds) = (counts.as_list::<i32>(), bounds.as_list::<i32>());
        let mut out = Float64Builder::with_capacity(n);
        for row in 0..n {
            if q.is_null(row) || counts.is_null(row) || bounds.is_null(row) {
                out.append_null();
                continue;
            }
            let c = counts.value(row);
            let b = bounds.value(row);
            let (c, b) = (
                c.as_primitive::<Float64Type>(),
                b.as_primitive::<Float64Type>(),
            );
            if c.null_count() > 0 || b.null_count() > 0 {
                out.append_null();
                continue;
            }
            out.append_option(bucket_quantile(q.value(row), c.values(), b.values()));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};

    use super::bucket_quantile;

    #[test]
    fn quantiles_interpolate_inside_buckets_as_prometheus_does() {
        // Buckets (0,1] 10, (1,2] 10, (2,4] 20, (4,+Inf) 0: 40 observations.
        let counts = [10.0, 10.0, 20.0, 0.0];
        let bounds = [1.0, 2.0, 4.0];
        assert_eq!(bucket_quantile(0.25, &counts, &bounds), Some(1.0));
        assert_eq!(bucket_quantile(0.5, &counts, &bounds), Some(2.0));
        assert_eq!(bucket_quantile(0.75, &counts, &bounds), Some(3.0));
        assert_eq!(bucket_quantile(0.125, &counts, &bounds), Some(0.5));
        assert_eq!(bucket_quantile(1.0, &counts, &bounds), Some(4.0));
        // The rank in the +Inf bucket gives the highest finite bound.
        assert_eq!(
            bucket_quantile(0.99, &[1.0, 0.0, 0.0, 9.0], &bounds),
            Some(4.0)
        );
        // A first bucket with a bound ≤ 0 answers its bound.
        assert_eq!(bucket_quantile(0.1, &[5.0, 5.0], &[-1.0]), Some(-1.0));
    }

    #[test]
    fn edge_cases_follow_prometheus() {
        let bounds = [1.0, 2.0];
        assert_eq!(
            bucket_quantile(-0.1, &[1.0, 1.0, 1.0], &bounds),
            Some(f64::NEG_INFINITY)
        );
        assert_eq!(
            bucket_quantile(1.1, &[1.0, 1.0, 1.0], &bounds),
            Some(f64::INFINITY)
        );
        assert!(bucket_quantile(0.5, &[0.0, 0.0, 0.0], &bounds).is_some_and(f64::is_nan));
        assert!(bucket_quantile(0.5, &[3.0], &[]).is_some_and(f64::is_nan));
        assert_eq!(bucket_quantile(0.5, &[1.0, 1.0], &bounds), None);
    }

    #[tokio::test]
    async fn sql_histogram_quantile_takes_list_columns_and_literals() {
        use periscope_storage::{Store, StoreConfig};

        use crate::{QueryConfig, QueryEngine};

        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreConfig::new(dir.path())).expect("open");
        let engine = QueryEngine::new(store, QueryConfig::default()).expect("engine");
        let r = engine
            .execute(
                "SELECT histogram_quantile(q, [10, 10, 20, 0], [1.0, 2.0, 4.0]) AS v \
                 FROM (VALUES (0.75), (0.125), (NULL)) AS t(q)",
            )
            .await
            .expect("query");
        let v: Vec<Option<f64>> = r
            .batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column(0)
                    .as_primitive::<arrow::datatypes::Float64Type>()
                    .clone();
                (0..a.len())
                    .map(|i| a.is_valid(i).then(|| a.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(v, vec![Some(3.0), Some(0.5), None]);
        let bad = engine
            .execute("SELECT histogram_quantile(0.5, 'x', [1.0])")
            .await;
        assert!(bad.is_err());
        // Over the metrics table's columns (no rows yet: the query plans and runs).
        engine
            .execute(
                "SELECT histogram_quantile(0.99, bucket_counts, explicit_bounds) FROM metrics \
                 WHERE metric_type = 'histogram'",
            )
            .await
            .expect("over metrics columns");
    }
}
