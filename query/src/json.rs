//! Arrow values → JSON, as the SQL API returns them: times as RFC 3339 with nanoseconds
//! in UTC, maps as objects, lists as arrays, structs as objects.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::*;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use base64::Engine;
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Number, Value};

fn float(v: f64) -> Value {
    Number::from_f64(v).map(Value::Number).unwrap_or_else(|| {
        Value::String(if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        })
    })
}

/// A Unix-nanosecond instant as the APIs write times: RFC 3339 with nanoseconds, UTC.
pub fn rfc3339_text(nanos: i64) -> String {
    DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn rfc3339(nanos: i64) -> Value {
    Value::String(rfc3339_text(nanos))
}

fn timestamp_nanos(array: &ArrayRef, row: usize, unit: TimeUnit) -> Option<i64> {
    match unit {
        TimeUnit::Second => array
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .checked_mul(1_000_000_000),
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .checked_mul(1_000_000),
        TimeUnit::Microsecond => array
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .checked_mul(1_000),
        TimeUnit::Nanosecond => Some(array.as_primitive::<TimestampNanosecondType>().value(row)),
    }
}

fn formatted(array: &ArrayRef, row: usize) -> Value {
    match ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default()) {
        Ok(f) => Value::String(f.value(row).to_string()),
        Err(_) => Value::Null,
    }
}

/// The JSON form of one cell.
pub fn value_json(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => Value::from(array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => Value::from(array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::from(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => Value::from(array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => Value::from(array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => Value::from(array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::Binary => Value::String(
            base64::engine::general_purpose::STANDARD.encode(array.as_binary::<i32>().value(row)),
        ),
        DataType::Timestamp(unit, _) => match timestamp_nanos(array, row, *unit) {
            Some(n) => rfc3339(n),
            None => formatted(array, row),
        },
        DataType::List(_) => {
            let values = array.as_list::<i32>().value(row);
            Value::Array((0..values.len()).map(|i| value_json(&values, i)).collect())
        }
        DataType::LargeList(_) => {
            let values = array.as_list::<i64>().value(row);
            Value::Array((0..values.len()).map(|i| value_json(&values, i)).collect())
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut obj = Map::new();
            for (i, f) in fields.iter().enumerate() {
                obj.insert(f.name().clone(), value_json(s.column(i), row));
            }
            Value::Object(obj)
        }
        DataType::Map(_, _) => {
            let entries = array.as_map().value(row);
            let keys = entries.column(0);
            let values = entries.column(1);
            let mut obj = Map::new();
            for i in 0..entries.len() {
                let key = match value_json(keys, i) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj.insert(key, value_json(values, i));
            }
            Value::Object(obj)
        }
        DataType::Dictionary(_, _) => {
            let dict = array.as_any_dictionary();
            let key = dict.normalized_keys()[row];
            value_json(dict.values(), key)
        }
        _ => formatted(array, row),
    }
}

/// The text of one cell in CSV and in the CLI's table: NULL is empty, strings are
/// themselves, everything else is its JSON form.
pub fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampNanosecondArray};
    use std::sync::Arc;

    #[test]
    fn timestamps_keep_nanoseconds() {
        let a: ArrayRef = Arc::new(
            TimestampNanosecondArray::from(vec![1_700_000_000_000_000_001]).with_timezone("UTC"),
        );
        assert_eq!(
            value_json(&a, 0),
            Value::String("2023-11-14T22:13:20.000000001Z".into())
        );
    }

    #[test]
    fn nulls_and_numbers() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(i64::MAX), None]));
        assert_eq!(value_json(&a, 0), Value::from(i64::MAX));
        assert_eq!(value_json(&a, 1), Value::Null);
        assert_eq!(cell_text(&Value::Null), "");
        assert_eq!(float(f64::NAN), Value::String("NaN".into()));
    }
}
