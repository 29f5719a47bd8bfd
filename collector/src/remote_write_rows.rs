//! Rows of the `metrics` table straight from a remote-write `WriteRequest`, one per
//! sample, without an OTLP request in between: each series' labels are checked and laid
//! out once, then copied into the rows of its samples. The rows are exactly those the
//! OTLP path makes of the same series (see the tests), so SQL and PromQL cannot tell
//! which way they came.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, ListArray, MapBuilder, StringBuilder,
    TimestampNanosecondBuilder, UInt32Builder, new_empty_array, new_null_array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use periscope_otlp::Converted;
use periscope_storage::{Signal, attributes_builder_with_capacity};

use crate::remote_write::{REMOTE_WRITE_SCOPE, WriteRequest, metadata_by_name, series_labels};

/// The columns a remote-written sample fills; every other column is null.
struct Columns {
    metric_name: StringBuilder,
    metric_type: StringBuilder,
    unit: StringBuilder,
    description: StringBuilder,
    service_name: StringBuilder,
    timestamp: TimestampNanosecondBuilder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    attribute_types: MapBuilder<StringBuilder, StringBuilder>,
    resource_attributes: MapBuilder<StringBuilder, StringBuilder>,
    resource_attribute_types: MapBuilder<StringBuilder, StringBuilder>,
    scope_name: StringBuilder,
    value: Float64Builder,
    is_monotonic: BooleanBuilder,
    temporality: StringBuilder,
    flags: UInt32Builder,
    rows: usize,
}

/// One series, laid out once for all its samples.
struct Series<'a> {
    name: &'a str,
    counter: bool,
    unit: &'a str,
    help: &'a str,
    service: &'a str,
    job: &'a str,
    labels: Vec<(&'a str, &'a str)>,
}

/// What the rows of a request take, counted before they are built so that no builder
/// grows (and copies) while it is filled.
#[derive(Default)]
struct Sizes {
    rows: usize,
    name: usize,
    unit: usize,
    help: usize,
    service: usize,
    label_entries: usize,
    label_keys: usize,
    label_values: usize,
    job_rows: usize,
    job_bytes: usize,
}

impl Sizes {
    fn add(&mut self, s: &Series<'_>, samples: usize) {
        self.rows += samples;
        self.name += s.name.len() * samples;
        self.unit += s.unit.len() * samples;
        self.help += s.help.len() * samples;
        self.service += s.service.len() * samples;
        self.label_entries += s.labels.len() * samples;
        self.label_keys += s.labels.iter().map(|l| l.0.len()).sum::<usize>() * samples;
        self.label_values += s.labels.iter().map(|l| l.1.len()).sum::<usize>() * samples;
        if !s.job.is_empty() {
            self.job_rows += samples;
            self.job_bytes += s.job.len() * samples;
        }
    }
}

impl Columns {
    fn new(z: &Sizes) -> Columns {
        let rows = z.rows;
        let strings = |bytes: usize| StringBuilder::with_capacity(rows, bytes);
        Columns {
            metric_name: strings(z.name),
            metric_type: strings(rows * 5),
            unit: strings(z.unit),
            description: strings(z.help),
            service_name: strings(z.service),
            timestamp: TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            attributes: attributes_builder_with_capacity(
                rows,
                z.label_entries,
                z.label_keys,
                z.label_values,
            ),
            attribute_types: attributes_builder_with_capacity(rows, 0, 0, 0),
            resource_attributes: attributes_builder_with_capacity(
                rows,
                z.job_rows,
                z.job_rows * "service.name".len(),
                z.job_bytes,
            ),
            resource_attribute_types: attributes_builder_with_capacity(rows, 0, 0, 0),
            scope_name: strings(rows * REMOTE_WRITE_SCOPE.len()),
            value: Float64Builder::with_capacity(rows),
            is_monotonic: BooleanBuilder::with_capacity(rows),
            temporality: strings(rows * "cumulative".len()),
            flags: UInt32Builder::with_capacity(rows),
            rows: 0,
        }
    }

    fn push(
        &mut self,
        s: &Series<'_>,
        time: i64,
        value: f64,
    ) -> Result<(), arrow::error::ArrowError> {
        self.metric_name.append_value(s.name);
        self.metric_type
            .append_value(if s.counter { "sum" } else { "gauge" });
        self.unit.append_value(s.unit);
        self.description.append_value(s.help);
        self.service_name.append_value(s.service);
        self.timestamp.append_value(time);
        for (k, v) in &s.labels {
            self.attributes.keys().append_value(k);
            self.attributes.values().append_value(v);
        }
        self.attributes.append(true)?;
        self.attribute_types.append(true)?;
        if !s.job.is_empty() {
            self.resource_attributes.keys().append_value("service.name");
            self.resource_attributes.values().append_value(s.job);
        }
        self.resource_attributes.append(true)?;
        self.resource_attribute_types.append(true)?;
        self.scope_name.append_value(REMOTE_WRITE_SCOPE);
        self.value.append_value(value);
        if s.counter {
            self.is_monotonic.append_value(true);
            self.temporality.append_value("cumulative");
        } else {
            self.is_monotonic.append_null();
            self.temporality.append_null();
        }
        self.flags.append_value(0);
        self.rows += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let schema = Signal::Metrics.schema();
        let n = self.rows;
        let columns = schema
            .fields()
            .iter()
            .map(|field| -> ArrayRef {
                match field.name().as_str() {
                    "metric_name" => Arc::new(self.metric_name.finish()),
                    "metric_type" => Arc::new(self.metric_type.finish()),
                    "unit" => Arc::new(self.unit.finish()),
                    "description" => Arc::new(self.description.finish()),
                    "service_name" => Arc::new(self.service_name.finish()),
                    "timestamp" => Arc::new(self.timestamp.finish()),
                    "attributes" => Arc::new(self.attributes.finish()),
                    "attribute_types" => Arc::new(self.attribute_types.finish()),
                    "resource_attributes" => Arc::new(self.resource_attributes.finish()),
                    "resource_attribute_types" => Arc::new(self.resource_attribute_types.finish()),
                    "scope_name" => Arc::new(self.scope_name.finish()),
                    "value" => Arc::new(self.value.finish()),
                    "is_monotonic" => Arc::new(self.is_monotonic.finish()),
                    "temporality" => Arc::new(self.temporality.finish()),
                    "flags" => Arc::new(self.flags.finish()),
                    // No quantiles and no exemplars: empty lists, as the OTLP path writes.
                    "quantile_values" | "exemplars" => match field.data_type() {
                        DataType::List(item) => Arc::new(ListArray::new(
                            item.clone(),
                            OffsetBuffer::new_zeroed(n),
                            new_empty_array(item.data_type()),
                            None,
                        )),
                        other => new_null_array(other, n),
                    },
                    _ => new_null_array(field.data_type(), n),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns)
    }
}

/// The rows of `request`, validated as a whole like [`crate::remote_write::to_otlp`]: an
/// invalid series refuses the request (`Err`); a sample at time 0 is rejected alone,
/// as the OTLP path rejects a point without a time.
///
/// # Errors
/// The reason the request is refused.
pub fn to_rows(request: &WriteRequest) -> Result<Converted, String> {
    let metadata = metadata_by_name(request);
    // Each series is checked and laid out once; then the builders are sized for all of
    // them and filled.
    let mut laid = Vec::with_capacity(request.timeseries.len());
    let mut sizes = Sizes::default();
    for series in &request.timeseries {
        let (name, labels) = series_labels(series)?;
        if series.samples.is_empty() {
            continue;
        }
        let meta = metadata.get(name);
        let job = labels
            .iter()
            .find(|l| l.name == "job")
            .map_or("", |l| l.value.as_str());
        let laid_out = Series {
            name,
            counter: meta.is_some_and(|m| m.r#type == 1),
            unit: meta.map_or("", |m| m.unit.as_str()),
            help: meta.map_or("", |m| m.help.as_str()),
            service: if job.is_empty() {
                "unknown_service"
            } else {
                job
            },
            job,
            labels: labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect(),
        };
        sizes.add(&laid_out, series.samples.len());
        laid.push((laid_out, series));
    }
    let mut columns = Columns::new(&sizes);
    let (mut accepted, mut rejected, mut first) = (0u64, 0u64, None);
    for (laid_out, series) in &laid {
        let name = laid_out.name;
        for sample in &series.samples {
            if sample.timestamp < 0 {
                return Err(format!(
                    "sample of {name} has a negative timestamp ({} ms)",
                    sample.timestamp
                ));
            }
            if sample.timestamp == 0 {
                rejected += 1;
                first.get_or_insert_with(|| format!("metric {name:?}: time_unix_nano is missing"));
                continue;
            }
            let Some(time) = sample.timestamp.checked_mul(1_000_000) else {
                rejected += 1;
                first.get_or_insert_with(|| {
                    format!(
                        "metric {name:?}: time_unix_nano {} is past the year 2262 and cannot be stored",
                        (sample.timestamp as u64).saturating_mul(1_000_000)
                    )
                });
                continue;
            };
            columns
                .push(laid_out, time, sample.value)
                .map_err(|e| e.to_string())?;
            accepted += 1;
        }
    }
    let batch = if accepted > 0 {
        Some(columns.finish().map_err(|e| e.to_string())?)
    } else {
        None
    };
    Ok(Converted {
        batch,
        accepted,
        rejected,
        error: first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::{Label, MetricMetadata, Sample, TimeSeries, to_otlp};

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn series(labels: Vec<Label>, times: &[i64]) -> TimeSeries {
        TimeSeries {
            labels,
            samples: times
                .iter()
                .map(|t| Sample {
                    value: *t as f64 / 7.0,
                    timestamp: *t,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Every row of `batch` as text, sorted: rows compared whatever their order.
    fn row_texts(batch: &RecordBatch) -> Vec<String> {
        let text = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))
            .expect("format")
            .to_string();
        let mut rows: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(1)
            .map(str::to_string)
            .collect();
        rows.sort();
        rows
    }

    #[test]
    fn rows_are_those_the_otlp_path_makes() {
        let request = WriteRequest {
            timeseries: vec![
                series(
                    vec![
                        label("__name__", "http_requests_total"),
                        label("job", "api"),
                        label("code", "200"),
                        label("empty", ""),
                    ],
                    &[1_700_000_000_000, 1_700_000_015_000],
                ),
                series(
                    vec![label("__name__", "temperature"), label("room", "b")],
                    &[1_700_000_000_000],
                ),
                series(
                    vec![label("__name__", "queue_depth"), label("job", "worker")],
                    &[1_700_000_000_500],
                ),
                series(vec![label("__name__", "no_samples")], &[]),
            ],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "http_requests_total".into(),
                help: "Requests served.".into(),
                unit: "requests".into(),
            }],
        };
        let direct = to_rows(&request).expect("valid");
        let via_otlp = periscope_otlp::metrics(&to_otlp(&request).expect("valid")).expect("rows");
        assert_eq!(direct.accepted, 4);
        assert_eq!(direct.accepted, via_otlp.accepted);
        let (direct, via_otlp) = (direct.batch.expect("rows"), via_otlp.batch.expect("rows"));
        assert_eq!(direct.schema(), via_otlp.schema());
        assert_eq!(row_texts(&direct), row_texts(&via_otlp));
        // Rows keep the order of the request: a series' samples stay together.
        let names = direct
            .column_by_name("metric_name")
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
            .expect("names");
        assert_eq!(names.value(0), "http_requests_total");
        assert_eq!(names.value(1), "http_requests_total");
    }

    #[test]
    fn logged_bodies_replay_into_the_same_rows() {
        use prost::Message;
        let request = WriteRequest {
            timeseries: vec![
                series(
                    vec![label("__name__", "up"), label("job", "api")],
                    &[1_700_000_000_000, 1_700_000_015_000],
                ),
                series(vec![label("__name__", "up")], &[0]),
            ],
            metadata: Vec::new(),
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .expect("compress");
        let stored = to_rows(&request).expect("valid").batch.expect("rows");
        let framed = crate::ingest::metrics_wire(crate::ingest::MetricsWire::RemoteWrite, &body);
        let replayed = crate::ingest::replay_wire(Signal::Metrics, &framed).expect("replays");
        assert_eq!(replayed, stored);
        let garbage =
            crate::ingest::metrics_wire(crate::ingest::MetricsWire::RemoteWrite, b"not snappy");
        assert!(crate::ingest::replay_wire(Signal::Metrics, &garbage).is_err());
        assert!(crate::ingest::replay_wire(Signal::Metrics, &[9, 1, 2]).is_err());

        // An OTLP export is logged and replayed the same way.
        let export = to_otlp(&request).expect("valid");
        let framed =
            crate::ingest::metrics_wire(crate::ingest::MetricsWire::Otlp, &export.encode_to_vec());
        let replayed = crate::ingest::replay_wire(Signal::Metrics, &framed).expect("replays");
        let converted = periscope_otlp::metrics(&export)
            .expect("rows")
            .batch
            .expect("rows");
        assert_eq!(replayed, converted);
    }

    #[test]
    fn invalid_series_refuse_and_timeless_samples_are_rejected_alone() {
        let bad = WriteRequest {
            timeseries: vec![series(vec![label("job", "x")], &[1])],
            metadata: Vec::new(),
        };
        assert!(to_rows(&bad).expect_err("no name").contains("no __name__"));
        let negative = WriteRequest {
            timeseries: vec![series(vec![label("__name__", "up")], &[-5])],
            metadata: Vec::new(),
        };
        assert!(
            to_rows(&negative)
                .expect_err("negative")
                .contains("negative")
        );
        let timeless = WriteRequest {
            timeseries: vec![series(vec![label("__name__", "up")], &[0, 1_000])],
            metadata: Vec::new(),
        };
        let converted = to_rows(&timeless).expect("valid");
        assert_eq!((converted.accepted, converted.rejected), (1, 1));
        let via_otlp = periscope_otlp::metrics(&to_otlp(&timeless).expect("valid")).expect("rows");
        assert_eq!((via_otlp.accepted, via_otlp.rejected), (1, 1));
        assert_eq!(converted.error, via_otlp.error);
    }
}
