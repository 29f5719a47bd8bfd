//! Built-in SQL functions whose output size comes from an argument (`repeat`, `lpad`,
//! `rpad`, `replace`, `regexp_replace`, `array_repeat`, `array_resize`, `range`,
//! `generate_series`, and the `generate_series` / `range` table functions), wrapped so
//! that a call is refused before it allocates when its output would be larger than the
//! query memory limit.
//!
//! DataFusion does not count a scalar function's output against the memory pool, and
//! `repeat('x', 1000000000000000)` asks the allocator for a petabyte, which aborts the
//! process. Each wrapper estimates, from its arguments, the bytes the call builds for
//! the whole batch and answers `ResourcesExhausted` (HTTP 422) past the limit; under it,
//! the built-in function runs unchanged.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array};
use arrow::compute::kernels::length::length;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::Expr;

/// How a function's output grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s) × n`.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: `n` characters.
    Pad,
    /// `replace(s, from, to)`: every `from` in `s` becomes `to`.
    Replace,
    /// `regexp_replace(s, re, to [, flags])`: at worst `to` at every position of `s`.
    RegexpReplace,
    /// `array_repeat(v, n)`: `n` copies of `v`.
    ArrayRepeat,
    /// `array_resize(a, n [, v])`: `n` elements.
    Resize,
    /// `range(start, stop [, step])`, `generate_series`: `(stop - start) / step` elements.
    Series,
}

/// A built-in function with a size check in front of it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    limit: u64,
}

/// The wrapped functions, refusing any call that would build more than `limit` bytes.
/// Registering them replaces the built-ins of the same names.
pub(crate) fn functions(limit: usize) -> Vec<ScalarUDF> {
    use datafusion::functions::{regex, string, unicode};
    use datafusion::functions_nested::{range, repeat, resize};
    [
        (string::repeat(), Growth::Repeat),
        (unicode::lpad(), Growth::Pad),
        (unicode::rpad(), Growth::Pad),
        (string::replace(), Growth::Replace),
        (regex::regexp_replace(), Growth::RegexpReplace),
        (repeat::array_repeat_udf(), Growth::ArrayRepeat),
        (resize::array_resize_udf(), Growth::Resize),
        (range::range_udf(), Growth::Series),
        (range::gen_series_udf(), Growth::Series),
    ]
    .into_iter()
    .map(|(inner, growth)| {
        ScalarUDF::new_from_impl(Bounded {
            inner,
            growth,
            limit: limit as u64,
        })
    })
    .collect()
}

/// The `generate_series` and `range` table functions, refusing a series whose rows
/// would take more than `limit` bytes (eight a row), by name.
pub(crate) fn table_functions(limit: usize) -> Vec<(String, Arc<dyn TableFunctionImpl>)> {
    datafusion::functions_table::all_default_table_functions()
        .into_iter()
        .map(|f| {
            let bounded: Arc<dyn TableFunctionImpl> = Arc::new(BoundedTable {
                inner: Arc::clone(f.function()),
                name: f.name().to_string(),
                limit: limit as u64,
            });
            (f.name().to_string(), bounded)
        })
        .collect()
}

/// A series table function with a size check in front of it.
#[derive(Debug)]
struct BoundedTable {
    inner: Arc<dyn TableFunctionImpl>,
    name: String,
    limit: u64,
}

impl TableFunctionImpl for BoundedTable {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let int = |i: usize| -> Option<i64> {
            match exprs.get(i)? {
                Expr::Literal(v, _) => match v.cast_to(&DataType::Int64).ok()? {
                    ScalarValue::Int64(x) => x,
                    _ => None,
                },
                _ => None,
            }
        };
        // (stop) counts from 0; (start, stop) by 1; (start, stop, step). Dates and
        // timestamps stream a row at a time and are left to the row cap and timeout.
        let bounds = match exprs.len() {
            1 => (Some(0), int(0), Some(1)),
            2 => (int(0), int(1), Some(1)),
            3 => (int(0), int(1), int(2)),
            _ => (None, None, None),
        };
        if let (Some(start), Some(stop), Some(step)) = bounds
            && step != 0
        {
            let steps = (i128::from(stop) - i128::from(start)) / i128::from(step);
            let bytes = if steps >= 0 {
                (steps as u128 + 1) * 8
            } else {
                0
            };
            if bytes > u128::from(self.limit) {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "{}() would produce {} rows, about {bytes} bytes, more than the query memory limit of {} bytes; narrow the series",
                    self.name,
                    bytes / 8,
                    self.limit
                )));
            }
        }
        self.inner.call_with_args(args)
    }
}

/// An argument's value per row, as an integer.
enum PerRow {
    Same(Option<i64>),
    Each(Int64Array),
}

impl PerRow {
    fn at(&self, row: usize) -> Option<i64> {
        match self {
            PerRow::Same(v) => *v,
            PerRow::Each(a) => (row < a.len() && !a.is_null(row)).then(|| a.value(row)),
        }
    }
}

fn to_i64(array: &dyn Array) -> Result<Int64Array> {
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    let array = arrow::array::make_array(array.to_data());
    Ok(cast_with_options(&array, &DataType::Int64, &options)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// An integer argument (a count, a length, a bound).
fn ints(v: &ColumnarValue) -> Result<PerRow> {
    Ok(match v {
        ColumnarValue::Scalar(s) => PerRow::Same(match s.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(x)) => x,
            _ => None,
        }),
        ColumnarValue::Array(a) => PerRow::Each(to_i64(a.as_ref())?),
    })
}

/// Bytes of a string or binary argument, else the size of one value.
fn sizes(v: &ColumnarValue) -> Result<PerRow> {
    Ok(match v {
        ColumnarValue::Scalar(s) => PerRow::Same(Some(match s {
            ScalarValue::Utf8(Some(x))
            | ScalarValue::LargeUtf8(Some(x))
            | ScalarValue::Utf8View(Some(x)) => x.len() as i64,
            ScalarValue::Binary(Some(x))
            | ScalarValue::LargeBinary(Some(x))
            | ScalarValue::BinaryView(Some(x)) => x.len() as i64,
            other => other.size() as i64,
        })),
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView => PerRow::Each(to_i64(length(a.as_ref())?.as_ref())?),
            _ => PerRow::Same(Some(
                (a.get_array_memory_size() / a.len().max(1)).max(8) as i64
            )),
        },
    })
}

/// Start and stop of a series as integers in the unit of its step, and the step.
fn series_bounds(args: &[ColumnarValue]) -> Result<Option<(PerRow, PerRow, PerRow)>> {
    let (Some(start), Some(stop)) = (args.first(), args.get(1)) else {
        return Ok(None);
    };
    // Dates count in days, timestamps in nanoseconds; a step of months counts as 28
    // days, the shortest month, so the estimate is never below the real length.
    let (unit_nanos, per_day): (i64, i64) = match start.data_type() {
        DataType::Int64 => {
            let step = match args.get(2) {
                Some(s) => ints(s)?,
                None => PerRow::Same(Some(1)),
            };
            return Ok(Some((ints(start)?, ints(stop)?, step)));
        }
        DataType::Date32 => (86_400_000_000_000, 1),
        DataType::Timestamp(TimeUnit::Second, _) => (1_000_000_000, 86_400),
        DataType::Timestamp(TimeUnit::Millisecond, _) => (1_000_000, 86_400_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => (1_000, 86_400_000_000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => (1, 86_400_000_000_000),
        _ => return Ok(None),
    };
    let step = match args.get(2) {
        Some(ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(i)))) => {
            let (months, days, nanos) = IntervalMonthDayNanoType::to_parts(*i);
            let days = i64::from(months) * 28 + i64::from(days);
            let in_unit = days
                .saturating_mul(per_day)
                .saturating_add(nanos / unit_nanos);
            PerRow::Same(Some(in_unit))
        }
        // A step per row, or no step: leave the check to the function itself.
        _ => return Ok(None),
    };
    Ok(Some((ints(start)?, ints(stop)?, step)))
}

impl Bounded {
    /// Bytes the call builds for the whole batch, at most.
    fn estimate(&self, args: &ScalarFunctionArgs) -> Result<u128> {
        let a = &args.args;
        let rows = if a.iter().all(|v| matches!(v, ColumnarValue::Scalar(_))) {
            1
        } else {
            args.number_rows
        };
        let count = |v: Option<i64>| v.unwrap_or(0).max(0) as u128;
        let mut total: u128 = 0;
        match self.growth {
            Growth::Repeat | Growth::ArrayRepeat => {
                let (Some(v), Some(n)) = (a.first(), a.get(1)) else {
                    return Ok(0);
                };
                let (size, n) = (sizes(v)?, ints(n)?);
                for r in 0..rows {
                    let unit =
                        count(size.at(r)).max(u128::from(self.growth == Growth::ArrayRepeat) * 8);
                    total = total.saturating_add(unit.saturating_mul(count(n.at(r))));
                }
            }
            Growth::Pad => {
                let (Some(s), Some(n)) = (a.first(), a.get(1)) else {
                    return Ok(0);
                };
                // A fill of several-byte characters takes up to four bytes a character.
                let per_char: u128 = match a.get(2) {
                    None => 1,
                    Some(ColumnarValue::Scalar(
                        ScalarValue::Utf8(Some(f))
                        | ScalarValue::LargeUtf8(Some(f))
                        | ScalarValue::Utf8View(Some(f)),
                    )) if f.is_ascii() => 1,
                    Some(_) => 4,
                };
                let (size, n) = (sizes(s)?, ints(n)?);
                for r in 0..rows {
                    let out = count(n.at(r))
                        .saturating_mul(per_char)
                        .max(count(size.at(r)));
                    total = total.saturating_add(out);
                }
            }
            Growth::Replace | Growth::RegexpReplace => {
                let (Some(s), Some(from), Some(to)) = (a.first(), a.get(1), a.get(2)) else {
                    return Ok(0);
                };
                let (s, from, to) = (sizes(s)?, sizes(from)?, sizes(to)?);
                for r in 0..rows {
                    let len = count(s.at(r));
                    let places = if self.growth == Growth::Replace {
                        len / count(from.at(r)).max(1) + 1
                    } else {
                        len + 1
                    };
                    total = total
                        .saturating_add(len.saturating_add(places.saturating_mul(count(to.at(r)))));
                }
            }
            Growth::Resize => {
                let Some(n) = a.get(1) else {
                    return Ok(0);
                };
                let unit = match a.get(2) {
                    Some(v) => count(sizes(v)?.at(0)).max(8),
                    None => 8,
                };
                let n = ints(n)?;
                for r in 0..rows {
                    total = total.saturating_add(count(n.at(r)).saturating_mul(unit));
                }
            }
            Growth::Series => {
                let Some((start, stop, step)) = series_bounds(a)? else {
                    return Ok(0);
                };
                for r in 0..rows {
                    let (Some(start), Some(stop), Some(step)) =
                        (start.at(r), stop.at(r), step.at(r))
                    else {
                        continue;
                    };
                    if step == 0 {
                        continue;
                    }
                    let span = i128::from(stop) - i128::from(start);
                    let steps = span / i128::from(step);
                    if steps >= 0 {
                        let elements = steps as u128 + 1;
                        total = total.saturating_add(elements.saturating_mul(8));
                    }
                }
            }
        }
        Ok(total)
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.estimate(&args)?;
        if bytes > u128::from(self.limit) {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would build about {} bytes for {} row(s), more than the query memory limit of {} bytes",
                self.inner.name(),
                bytes,
                args.number_rows,
                self.limit
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::{QueryConfig, QueryEngine};
    use crate::error::QueryError;

    fn engine() -> (tempfile::TempDir, QueryEngine) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = periscope_storage::Store::open(periscope_storage::StoreConfig::new(dir.path()))
            .expect("store opens");
        let engine = QueryEngine::new(
            store,
            QueryConfig {
                memory_limit: 64 << 20,
                ..QueryConfig::default()
            },
        )
        .expect("engine");
        (dir, engine)
    }

    #[tokio::test]
    async fn functions_that_would_build_more_than_the_memory_limit_are_refused() {
        let (_dir, engine) = engine();
        for sql in [
            "SELECT repeat(arrow_cast('x','LargeUtf8'), 1000000000000000)",
            "SELECT repeat('ab', 100000000)",
            "SELECT array_repeat(1, 1000000000000)",
            "SELECT lpad('x', 1000000000000)",
            "SELECT rpad('x', 1000000000000, 'é')",
            "SELECT range(1, 1000000000000)",
            "SELECT generate_series(1, 1000000000000)",
            "SELECT generate_series(TIMESTAMP '2000-01-01', TIMESTAMP '2030-01-01', INTERVAL '1 microsecond')",
            "SELECT array_resize([1], 1000000000000)",
            "SELECT replace(repeat('a', 100000), 'a', repeat('b', 100000))",
            "SELECT regexp_replace(repeat('a', 100000), '', repeat('b', 100000), 'g')",
            "SELECT repeat('x', v) FROM (VALUES (1), (1000000000000)) AS t(v)",
            "SELECT * FROM generate_series(1, 300000000)",
            "SELECT count(*) FROM range(300000000)",
        ] {
            match engine.execute(sql).await {
                Err(QueryError::ResourcesExhausted(m)) => {
                    assert!(m.contains("memory limit"), "{sql}: {m}")
                }
                other => panic!("{sql}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn the_same_functions_answer_under_the_limit() {
        let (_dir, engine) = engine();
        for (sql, want) in [
            ("SELECT length(repeat('ab', 1000))", "2000"),
            ("SELECT lpad('x', 5, '-')", "----x"),
            ("SELECT rpad('x', 3)", "x  "),
            ("SELECT cardinality(array_repeat(7, 1000))", "1000"),
            ("SELECT cardinality(range(0, 10000, 2))", "5000"),
            ("SELECT cardinality(generate_series(1, 10))", "10"),
            ("SELECT replace('a-b-c', '-', '+')", "a+b+c"),
            ("SELECT regexp_replace('a1b22', '[0-9]+', '#', 'g')", "a#b#"),
            ("SELECT cardinality(array_resize([1, 2], 4, 0))", "4"),
            ("SELECT count(*) FROM generate_series(1, 100000)", "100000"),
            ("SELECT count(*) FROM range(10)", "10"),
            (
                "SELECT cardinality(generate_series(DATE '2020-01-01', DATE '2020-12-31', INTERVAL '1 month'))",
                "12",
            ),
        ] {
            let result = engine
                .execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let cell =
                crate::json::cell_text(&crate::json::value_json(result.batches[0].column(0), 0));
            assert_eq!(cell, want, "{sql}");
        }
    }
}
