//! Metric data points: `ExportMetricsServiceRequest` → rows of the `metrics` table, one
//! row per data point of every OTLP type.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, ArrowPrimitiveType, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, MapBuilder, PrimitiveBuilder, StringBuilder, TimestampNanosecondBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, Metric, NumberDataPoint, exemplar, exponential_histogram_data_point::Buckets,
    metric::Data, number_data_point,
};

use super::{
    Converted, Rejections, TypedAttributes, append_attributes, hex_id, list_of_structs,
    push_offset, resource_attributes, scope_name_version, service_name, time,
};
use periscope_storage::{Signal, attributes_builder, exemplar_fields, quantile_fields};

/// The name the `metrics` table gives each aggregation temporality (docs/sql.md).
fn temporality_name(t: i32) -> Option<&'static str> {
    match t {
        1 => Some("delta"),
        2 => Some("cumulative"),
        _ => None,
    }
}

/// Everything one row holds beyond the metric's and resource's common fields.
#[derive(Default)]
struct Point<'a> {
    metric_type: &'static str,
    attributes: &'a [KeyValue],
    start: Option<i64>,
    time: Option<i64>,
    value: Option<f64>,
    int_value: Option<i64>,
    is_monotonic: Option<bool>,
    temporality: Option<&'static str>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    bucket_counts: Option<&'a [u64]>,
    explicit_bounds: Option<&'a [f64]>,
    scale: Option<i32>,
    zero_count: Option<u64>,
    zero_threshold: Option<f64>,
    positive: Option<(i32, &'a [u64])>,
    negative: Option<(i32, &'a [u64])>,
    quantiles: Option<Vec<(f64, f64)>>,
    exemplars: &'a [Exemplar],
    flags: u32,
}

struct Exemplars {
    offsets: Vec<i32>,
    time: TimestampNanosecondBuilder,
    value: Float64Builder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
}

struct Columns {
    metric_name: StringBuilder,
    metric_type: StringBuilder,
    unit: StringBuilder,
    description: StringBuilder,
    service_name: StringBuilder,
    timestamp: TimestampNanosecondBuilder,
    start_timestamp: TimestampNanosecondBuilder,
    attributes: TypedAttributes,
    resource_attributes: TypedAttributes,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    value: Float64Builder,
    int_value: Int64Builder,
    is_monotonic: BooleanBuilder,
    temporality: StringBuilder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListBuilder<UInt64Builder>,
    explicit_bounds: ListBuilder<Float64Builder>,
    scale: Int32Builder,
    zero_count: UInt64Builder,
    zero_threshold: Float64Builder,
    positive_offset: Int32Builder,
    positive_bucket_counts: ListBuilder<UInt64Builder>,
    negative_offset: Int32Builder,
    negative_bucket_counts: ListBuilder<UInt64Builder>,
    quantile_offsets: Vec<i32>,
    quantile: Float64Builder,
    quantile_value: Float64Builder,
    exemplars: Exemplars,
    flags: UInt32Builder,
}

/// Appends one row of a list column: the values, or NULL when there are none.
fn append_list<T: ArrowPrimitiveType>(
    b: &mut ListBuilder<PrimitiveBuilder<T>>,
    values: Option<&[T::Native]>,
) {
    match values {
        Some(v) => {
            b.values().append_slice(v);
            b.append(true);
        }
        None => b.append(false),
    }
}

/// Each exemplar's time, trace id and span id, validated.
type ExemplarIds = Vec<(Option<i64>, Option<String>, Option<String>)>;

/// Exemplar values and ids, checked before anything of the point is appended.
fn validate_exemplars(exemplars: &[Exemplar]) -> Result<ExemplarIds, String> {
    exemplars
        .iter()
        .map(|e| {
            Ok((
                time(e.time_unix_nano, "exemplar time_unix_nano")?,
                hex_id(&e.trace_id, 16, "exemplar trace_id")?,
                hex_id(&e.span_id, 8, "exemplar span_id")?,
            ))
        })
        .collect()
}

impl Columns {
    fn new() -> Self {
        let ts = || TimestampNanosecondBuilder::new().with_timezone("UTC");
        Columns {
            metric_name: StringBuilder::new(),
            metric_type: StringBuilder::new(),
            unit: StringBuilder::new(),
            description: StringBuilder::new(),
            service_name: StringBuilder::new(),
            timestamp: ts(),
            start_timestamp: ts(),
            attributes: TypedAttributes::new(),
            resource_attributes: TypedAttributes::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            value: Float64Builder::new(),
            int_value: Int64Builder::new(),
            is_monotonic: BooleanBuilder::new(),
            temporality: StringBuilder::new(),
            count: UInt64Builder::new(),
            sum: Float64Builder::new(),
            min: Float64Builder::new(),
            max: Float64Builder::new(),
            bucket_counts: ListBuilder::new(UInt64Builder::new()),
            explicit_bounds: ListBuilder::new(Float64Builder::new()),
            scale: Int32Builder::new(),
            zero_count: UInt64Builder::new(),
            zero_threshold: Float64Builder::new(),
            positive_offset: Int32Builder::new(),
            positive_bucket_counts: ListBuilder::new(UInt64Builder::new()),
            negative_offset: Int32Builder::new(),
            negative_bucket_counts: ListBuilder::new(UInt64Builder::new()),
            quantile_offsets: vec![0],
            quantile: Float64Builder::new(),
            quantile_value: Float64Builder::new(),
            exemplars: Exemplars {
                offsets: vec![0],
                time: ts(),
                value: Float64Builder::new(),
                trace_id: StringBuilder::new(),
                span_id: StringBuilder::new(),
                attributes: attributes_builder(),
            },
            flags: UInt32Builder::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        metric: &Metric,
        service: &str,
        resource: &[KeyValue],
        scope: (Option<&str>, Option<&str>),
        p: Point<'_>,
        exemplar_ids: ExemplarIds,
    ) {
        self.metric_name.append_value(&metric.name);
        self.metric_type.append_value(p.metric_type);
        self.unit.append_value(&metric.unit);
        self.description.append_value(&metric.description);
        self.service_name.append_value(service);
        self.timestamp.append_option(p.time);
        self.start_timestamp.append_option(p.start);
        self.attributes.append(p.attributes);
        self.resource_attributes.append(resource);
        self.scope_name.append_option(scope.0);
        self.scope_version.append_option(scope.1);
        self.value.append_option(p.value);
        self.int_value.append_option(p.int_value);
        self.is_monotonic.append_option(p.is_monotonic);
        self.temporality.append_option(p.temporality);
        self.count.append_option(p.count);
        self.sum.append_option(p.sum);
        self.min.append_option(p.min);
        self.max.append_option(p.max);
        append_list(&mut self.bucket_counts, p.bucket_counts);
        append_list(&mut self.explicit_bounds, p.explicit_bounds);
        self.scale.append_option(p.scale);
        self.zero_count.append_option(p.zero_count);
        self.zero_threshold.append_option(p.zero_threshold);
        self.positive_offset.append_option(p.positive.map(|b| b.0));
        append_list(&mut self.positive_bucket_counts, p.positive.map(|b| b.1));
        self.negative_offset.append_option(p.negative.map(|b| b.0));
        append_list(&mut self.negative_bucket_counts, p.negative.map(|b| b.1));
        let quantiles = p.quantiles.unwrap_or_default();
        for (q, v) in &quantiles {
            self.quantile.append_value(*q);
            self.quantile_value.append_value(*v);
        }
        push_offset(&mut self.quantile_offsets, quantiles.len());
        for (e, (t, trace, span)) in p.exemplars.iter().zip(exemplar_ids) {
            self.exemplars.time.append_option(t);
            self.exemplars.value.append_option(e.value.map(|v| match v {
                exemplar::Value::AsDouble(d) => d,
                exemplar::Value::AsInt(i) => i as f64,
            }));
            self.exemplars.trace_id.append_option(trace);
            self.exemplars.span_id.append_option(span);
            append_attributes(&mut self.exemplars.attributes, &e.filtered_attributes);
        }
        push_offset(&mut self.exemplars.offsets, p.exemplars.len());
        self.flags.append_value(p.flags);
    }

    fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let quantiles = list_of_structs(
            quantile_fields(),
            vec![
                Arc::new(self.quantile.finish()),
                Arc::new(self.quantile_value.finish()),
            ],
            self.quantile_offsets,
        );
        let e = &mut self.exemplars;
        let exemplars = list_of_structs(
            exemplar_fields(),
            vec![
                Arc::new(e.time.finish()),
                Arc::new(e.value.finish()),
                Arc::new(e.trace_id.finish()),
                Arc::new(e.span_id.finish()),
                Arc::new(e.attributes.finish()),
            ],
            std::mem::take(&mut e.offsets),
        );
        let (attributes, attribute_types) = self.attributes.finish();
        let (resource_attributes, resource_attribute_types) = self.resource_attributes.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.metric_name.finish()),
            Arc::new(self.metric_type.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.start_timestamp.finish()),
            attributes,
            resource_attributes,
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.int_value.finish()),
            Arc::new(self.is_monotonic.finish()),
            Arc::new(self.temporality.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.bucket_counts.finish()),
            Arc::new(self.explicit_bounds.finish()),
            Arc::new(self.scale.finish()),
            Arc::new(self.zero_count.finish()),
            Arc::new(self.zero_threshold.finish()),
            Arc::new(self.positive_offset.finish()),
            Arc::new(self.positive_bucket_counts.finish()),
            Arc::new(self.negative_offset.finish()),
            Arc::new(self.negative_bucket_counts.finish()),
            quantiles,
            exemplars,
            Arc::new(self.flags.finish()),
            attribute_types,
            resource_attribute_types,
        ];
        RecordBatch::try_new(Signal::Metrics.schema(), columns)
    }
}

/// The rows of one metric, one per data point, before validation of times.
fn points(metric: &Metric) -> Vec<(Point<'_>, u64, u64)> {
    let Some(data) = metric.data.as_ref() else {
        return Vec::new();
    };
    match data {
        Data::Gauge(g) => g
            .data_points
            .iter()
            .map(|d| number_point("gauge", d))
            .collect(),
        Data::Sum(s) => s
            .data_points
            .iter()
            .map(|d| {
                let (p, start, time) = number_point("sum", d);
                let p = Point {
                    is_monotonic: Some(s.is_monotonic),
                    temporality: temporality_name(s.aggregation_temporality),
                    ..p
                };
                (p, start, time)
            })
            .collect(),
        Data::Histogram(h) => h
            .data_points
            .iter()
            .map(|d| {
                let p = Point {
                    metric_type: "histogram",
                    attributes: &d.attributes,
                    temporality: temporality_name(h.aggregation_temporality),
                    count: Some(d.count),
                    sum: d.sum,
                    min: d.min,
                    max: d.max,
                    bucket_counts: Some(&d.bucket_counts),
                    explicit_bounds: Some(&d.explicit_bounds),
                    exemplars: &d.exemplars,
                    flags: d.flags,
                    ..Default::default()
                };
                (p, d.start_time_unix_nano, d.time_unix_nano)
            })
            .collect(),
        Data::ExponentialHistogram(h) => h
            .data_points
            .iter()
            .map(|d| {
                let p = Point {
                    metric_type: "exponential_histogram",
                    attributes: &d.attributes,
                    temporality: temporality_name(h.aggregation_temporality),
                    count: Some(d.count),
                    sum: d.sum,
                    min: d.min,
                    max: d.max,
                    scale: Some(d.scale),
                    zero_count: Some(d.zero_count),
                    zero_threshold: Some(d.zero_threshold),
                    positive: buckets(d.positive.as_ref()),
                    negative: buckets(d.negative.as_ref()),
                    exemplars: &d.exemplars,
                    flags: d.flags,
                    ..Default::default()
                };
                (p, d.start_time_unix_nano, d.time_unix_nano)
            })
            .collect(),
        Data::Summary(s) => s
            .data_points
            .iter()
            .map(|d| {
                let p = Point {
                    metric_type: "summary",
                    attributes: &d.attributes,
                    count: Some(d.count),
                    sum: Some(d.sum),
                    quantiles: Some(
                        d.quantile_values
                            .iter()
                            .map(|q| (q.quantile, q.value))
                            .collect(),
                    ),
                    flags: d.flags,
                    ..Default::default()
                };
                (p, d.start_time_unix_nano, d.time_unix_nano)
            })
            .collect(),
    }
}

/// The row of a gauge or sum point, before validation of times; a sum adds its
/// monotonicity and temporality.
fn number_point<'a>(metric_type: &'static str, d: &'a NumberDataPoint) -> (Point<'a>, u64, u64) {
    let (value, int_value) = number(d.value);
    let p = Point {
        metric_type,
        attributes: &d.attributes,
        value,
        int_value,
        exemplars: &d.exemplars,
        flags: d.flags,
        ..Default::default()
    };
    (p, d.start_time_unix_nano, d.time_unix_nano)
}

/// An exponential histogram's bucket offset and counts.
fn buckets(b: Option<&Buckets>) -> Option<(i32, &[u64])> {
    b.map(|b| (b.offset, &b.bucket_counts[..]))
}

/// A number point's value as a double, and as the exact integer when it was sent as one.
fn number(value: Option<number_data_point::Value>) -> (Option<f64>, Option<i64>) {
    match value {
        Some(number_data_point::Value::AsDouble(d)) => (Some(d), None),
        Some(number_data_point::Value::AsInt(i)) => (Some(i as f64), Some(i)),
        None => (None, None),
    }
}

/// Converts an export request into `metrics` rows, one per data point.
///
/// # Errors
/// Only when Arrow cannot assemble the batch, which would be a bug in this module.
pub fn metrics(
    request: &ExportMetricsServiceRequest,
) -> Result<Converted, arrow::error::ArrowError> {
    let mut c = Columns::new();
    let mut rejected = Rejections::default();
    let mut accepted = 0u64;
    for rm in &request.resource_metrics {
        let resource = resource_attributes(rm.resource.as_ref());
        let service = service_name(resource);
        for sm in &rm.scope_metrics {
            let scope = scope_name_version(sm.scope.as_ref());
            for metric in &sm.metrics {
                if metric.name.is_empty() {
                    let n = points(metric).len().max(1);
                    for _ in 0..n {
                        rejected.reject(|| "metric: name is empty".to_string());
                    }
                    continue;
                }
                for (mut p, start, t) in points(metric) {
                    let checked = time(start, "start_time_unix_nano").and_then(|s| {
                        let t = time(t, "time_unix_nano")?.ok_or("time_unix_nano is missing")?;
                        Ok((s, t, validate_exemplars(p.exemplars)?))
                    });
                    match checked {
                        Ok((s, t, exemplar_ids)) => {
                            p.start = s;
                            p.time = Some(t);
                            accepted += 1;
                            c.push(metric, &service, resource, scope, p, exemplar_ids);
                        }
                        Err(why) => {
                            rejected.reject(|| format!("metric {:?}: {why}", metric.name));
                        }
                    }
                }
            }
        }
    }
    rejected.into_converted(accepted, || c.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics, ScopeMetrics,
        Summary, SummaryDataPoint, summary_data_point::ValueAtQuantile,
    };

    fn metric(name: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            unit: "s".into(),
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn every_point_type_becomes_a_row() {
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(
                            "g",
                            Data::Gauge(Gauge {
                                data_points: vec![NumberDataPoint {
                                    time_unix_nano: 10,
                                    value: Some(number_data_point::Value::AsInt(
                                        9_007_199_254_740_993,
                                    )),
                                    ..Default::default()
                                }],
                            }),
                        ),
                        metric(
                            "h",
                            Data::Histogram(Histogram {
                                aggregation_temporality: 2,
                                data_points: vec![HistogramDataPoint {
                                    time_unix_nano: 11,
                                    count: 3,
                                    bucket_counts: vec![1, 2],
                                    explicit_bounds: vec![0.5],
                                    ..Default::default()
                                }],
                            }),
                        ),
                        metric(
                            "s",
                            Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    time_unix_nano: 12,
                                    quantile_values: vec![ValueAtQuantile {
                                        quantile: 0.99,
                                        value: 4.0,
                                    }],
                                    ..Default::default()
                                }],
                            }),
                        ),
                        metric(
                            "bad",
                            Data::Gauge(Gauge {
                                data_points: vec![NumberDataPoint::default()],
                            }),
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let out = metrics(&req).unwrap();
        assert_eq!((out.accepted, out.rejected), (3, 1));
        let b = out.batch.unwrap();
        let types = b.column_by_name("metric_type").unwrap().as_string::<i32>();
        assert_eq!(
            (0..3).map(|i| types.value(i)).collect::<Vec<_>>(),
            ["gauge", "histogram", "summary"]
        );
        let ints = b
            .column_by_name("int_value")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(ints.value(0), 9_007_199_254_740_993);
        let buckets = b.column_by_name("bucket_counts").unwrap().as_list::<i32>();
        assert!(buckets.is_null(0));
        assert_eq!(buckets.value(1).len(), 2);
        let q = b
            .column_by_name("quantile_values")
            .unwrap()
            .as_list::<i32>();
        assert_eq!(q.value(2).len(), 1);
        assert_eq!(q.value(0).len(), 0);
    }
}
