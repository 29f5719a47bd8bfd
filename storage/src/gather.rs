//! Gathering rows from several batches into one, in a given order: how flush and
//! compaction sort rows. Arrow's `take` and `interleave` copy list and map columns
//! (attributes, events, links) one row at a time through `MutableArrayData`, which was
//! half of a flush's CPU; here a list column is gathered as new offsets plus one gather
//! of its child values, so every leaf column is copied by Arrow's fast primitive and
//! string kernels.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, ListArray, MapArray, RecordBatch, StructArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;

/// Where gathered elements come from: (array, element) pairs.
type Positions = Vec<(usize, usize)>;

/// The rows `indices` (batch, row) of `batches`, in that order, as one batch of `schema`.
///
/// # Errors
/// When the batches' columns do not match `schema`.
pub(crate) fn gather_batch(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    indices: &[(usize, usize)],
) -> Result<RecordBatch, ArrowError> {
    let columns = (0..schema.fields().len())
        .map(|i| {
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            gather(&arrays, indices)
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(indices.len())),
    )
}

/// The elements `indices` (array, element) of `arrays` (all of one type), in order.
///
/// # Errors
/// When the arrays differ in type.
pub(crate) fn gather(
    arrays: &[&dyn Array],
    indices: &[(usize, usize)],
) -> Result<ArrayRef, ArrowError> {
    let Some(first) = arrays.first() else {
        return Err(ArrowError::InvalidArgumentError(
            "nothing to gather from".into(),
        ));
    };
    if arrays.iter().any(|a| a.data_type() != first.data_type()) {
        return Err(ArrowError::InvalidArgumentError(
            "gathered arrays differ in type".into(),
        ));
    }
    match first.data_type() {
        DataType::List(field) => {
            let lists: Vec<&ListArray> = arrays.iter().map(|a| a.as_list::<i32>()).collect();
            let offsets: Vec<&OffsetBuffer<i32>> = lists.iter().map(|l| l.offsets()).collect();
            let (offsets, children) = child_indices(&offsets, indices)?;
            let values: Vec<&dyn Array> = lists.iter().map(|l| l.values().as_ref()).collect();
            let values = gather(&values, &children)?;
            Ok(Arc::new(ListArray::try_new(
                field.clone(),
                offsets,
                values,
                nulls(arrays, indices),
            )?))
        }
        DataType::Map(field, sorted) => {
            let maps: Vec<&MapArray> = arrays.iter().map(|a| a.as_map()).collect();
            let offsets: Vec<&OffsetBuffer<i32>> = maps.iter().map(|m| m.offsets()).collect();
            let (offsets, children) = child_indices(&offsets, indices)?;
            let entries: Vec<&dyn Array> = maps.iter().map(|m| m.entries() as &dyn Array).collect();
            let entries = gather(&entries, &children)?;
            Ok(Arc::new(MapArray::try_new(
                field.clone(),
                offsets,
                entries.as_struct().clone(),
                nulls(arrays, indices),
                *sorted,
            )?))
        }
        DataType::Struct(fields) => {
            let structs: Vec<&StructArray> = arrays.iter().map(|a| a.as_struct()).collect();
            let children = (0..fields.len())
                .map(|i| {
                    let column: Vec<&dyn Array> =
                        structs.iter().map(|s| s.column(i).as_ref()).collect();
                    gather(&column, indices)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                children,
                nulls(arrays, indices),
            )?))
        }
        _ => interleave(arrays, indices),
    }
}

/// The offsets of the gathered lists, and where each of their elements comes from.
fn child_indices(
    offsets: &[&OffsetBuffer<i32>],
    indices: &[(usize, usize)],
) -> Result<(OffsetBuffer<i32>, Positions), ArrowError> {
    let mut lengths = Vec::with_capacity(indices.len());
    let mut children = Vec::new();
    for &(array, row) in indices {
        let o = offsets[array];
        let (start, end) = (o[row] as usize, o[row + 1] as usize);
        lengths.push(end - start);
        children.extend((start..end).map(|i| (array, i)));
    }
    if i32::try_from(children.len()).is_err() {
        return Err(ArrowError::OffsetOverflowError(children.len()));
    }
    Ok((OffsetBuffer::from_lengths(lengths), children))
}

/// The validity of the gathered rows; `None` when every source row is valid.
fn nulls(arrays: &[&dyn Array], indices: &[(usize, usize)]) -> Option<NullBuffer> {
    if arrays.iter().all(|a| a.null_count() == 0) {
        return None;
    }
    let mut valid = BooleanBufferBuilder::new(indices.len());
    for &(array, row) in indices {
        valid.append(arrays[array].is_valid(row));
    }
    Some(NullBuffer::new(valid.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Signal;
    use arrow::array::UInt32Array;
    use arrow::compute::{concat_batches, take_record_batch};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};

    fn kv(k: &str, v: u64) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(if v.is_multiple_of(2) {
                    Value::IntValue(v as i64)
                } else {
                    Value::StringValue(format!("s{v}"))
                }),
            }),
            key_strindex: 0,
        }
    }

    /// Spans with attributes, events, links and NULLs, `n` of them.
    fn batch(seed: u64, n: u64) -> RecordBatch {
        let spans = (0..n)
            .map(|i| Span {
                trace_id: vec![(seed * 31 + i) as u8 | 1; 16],
                span_id: vec![i as u8 + 1; 8],
                parent_span_id: if i % 3 == 0 {
                    vec![]
                } else {
                    vec![i as u8 + 1; 8]
                },
                name: format!("op{i}"),
                start_time_unix_nano: if i % 7 == 0 {
                    0
                } else {
                    1_700_000_000_000_000_000 + i
                },
                end_time_unix_nano: 1_700_000_000_000_000_100 + i,
                attributes: (0..i % 4).map(|k| kv(&format!("k{k}"), k + i)).collect(),
                events: (0..i % 3)
                    .map(|e| span::Event {
                        time_unix_nano: 1_700_000_000_000_000_010,
                        name: format!("e{e}"),
                        attributes: vec![kv("x", e)],
                        dropped_attributes_count: 0,
                    })
                    .collect(),
                links: (0..i % 2)
                    .map(|_| span::Link {
                        trace_id: vec![7; 16],
                        span_id: vec![8; 8],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        periscope_otlp::spans(&req).unwrap().batch.unwrap()
    }

    #[test]
    fn gathering_equals_concat_and_take() {
        // The second batch is a slice: offsets that do not start at zero.
        let batches = vec![batch(1, 20), batch(2, 40).slice(7, 25)];
        let schema = Signal::Spans.schema();
        let all = concat_batches(&schema, &batches).unwrap();
        let mut order: Vec<(usize, usize)> = (0..20)
            .map(|r| (0, r))
            .chain((0..25).map(|r| (1, r)))
            .collect();
        // A fixed shuffle, with a repeated row.
        order.sort_by_key(|&(b, r)| (r * 7 + b * 3) % 11);
        order.push(order[3]);
        let flat: Vec<u32> = order.iter().map(|&(b, r)| (b * 20 + r) as u32).collect();
        let want = take_record_batch(&all, &UInt32Array::from(flat)).unwrap();
        let got = gather_batch(&schema, &batches, &order).unwrap();
        assert_eq!(got, want);
        assert!(got.column_by_name("parent_span_id").unwrap().null_count() > 0);
    }

    #[test]
    fn arrays_of_different_types_are_refused() {
        let a = batch(1, 3);
        let arrays: Vec<&dyn Array> = vec![a.column(0).as_ref(), a.column(7).as_ref()];
        assert!(gather(&arrays, &[(0, 0)]).is_err());
    }
}
