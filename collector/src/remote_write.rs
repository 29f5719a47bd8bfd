//! Prometheus remote write 1.0: `POST /api/v1/write`, a snappy-compressed (block
//! format) protobuf `prometheus.WriteRequest`, as Prometheus, Grafana Agent / Alloy and
//! the OpenTelemetry Collector's `prometheusremotewrite` exporter send it.
//!
//! Each time series becomes one metric of the `metrics` table, one row per sample:
//! `metric_name` is `__name__`, the other labels are the row's `attributes` (string
//! values), `service_name` is the `job` label, and `scope_name` is
//! [`REMOTE_WRITE_SCOPE`], which tells PromQL to use the names as they are instead of
//! applying the OpenTelemetry-to-Prometheus naming rules. Metadata sent in the same
//! request gives the type (`counter` becomes a monotonic cumulative sum), unit and help.
//!
//! Answers: 204 when every sample is stored (durably, like an OTLP export); 400 with
//! `{"error": …}` for a body that is not snappy, not a `WriteRequest`, or carries an
//! invalid series (nothing of that request is stored, so the sender does not retry a
//! half-stored batch); 413 past `--max-request-bytes`; 503 with `Retry-After` when the
//! store is under pressure, which senders retry.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use periscope_storage::names::{is_label_name, is_metric_name};
use prost::Message;

use crate::error::IngestError;
use crate::http::{BODY_TIMEOUT, Refusal, declared_length, read_body, too_large};
use crate::ingest::Ingest;
use crate::status::RETRY_AFTER_SECS;

/// `scope_name` of rows that came through remote write: their names and labels are
/// Prometheus's already.
pub const REMOTE_WRITE_SCOPE: &str = periscope_otlp::PROMETHEUS_SCOPE;

/// `prometheus.WriteRequest` (prompb/remote.proto).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series and their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric family metadata (type, help, unit).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Labels, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars (not stored).
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub exemplars: Vec<Vec<u8>>,
    /// Native histograms: refused, kept only to notice them.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub histograms: Vec<Vec<u8>>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    /// UNKNOWN=0 COUNTER=1 GAUGE=2 HISTOGRAM=3 GAUGEHISTOGRAM=4 SUMMARY=5 INFO=6 STATESET=7.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// The family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// Help text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

#[derive(Debug, Clone)]
struct WriteState {
    ingest: Ingest,
    max_request_bytes: usize,
}

/// The remote-write route, for the API port.
pub fn router(ingest: Ingest, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/write", post(write))
        .with_state(WriteState {
            ingest,
            max_request_bytes,
        })
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    let mut response = (status, axum::Json(body)).into_response();
    if matches!(
        status,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
    ) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    response
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Response {
        json_error(r.status, r.message)
    }
}

async fn write(State(state): State<WriteState>, headers: HeaderMap, body: Body) -> Response {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if encoding != "snappy" {
            return json_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content encoding {encoding:?} is not supported; remote write 1.0 bodies are snappy-compressed"
                ),
            );
        }
    }
    // Admitted like an OTLP/HTTP export: refused while unflushed rows fill their budget,
    // and its body reserves decoding memory while it is read, within the same deadline.
    let length = declared_length(&headers, state.max_request_bytes);
    let admission = match state.ingest.admit("metrics", Some(length * 4)) {
        Ok(admission) => admission,
        Err(e) => return ingest_error(e),
    };
    let compressed = match tokio::time::timeout(
        BODY_TIMEOUT,
        read_body(body, false, state.max_request_bytes),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(refusal)) => return refusal.into(),
        Err(_) => {
            return json_error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            );
        }
    };
    let raw = match decompress(&compressed, state.max_request_bytes) {
        Ok(r) => r,
        Err(refusal) => return refusal.into(),
    };
    // Reserve what decoding and converting build: every sample copies its series'
    // labels, so a small body can become gigabytes.
    let (estimate, rows) = match crate::decoded::remote_write(&raw) {
        Ok(e) => (e.decoded.saturating_add(e.rows.saturating_mul(3)), e.rows),
        Err(m) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body is not a Prometheus remote write WriteRequest: {}",
                    m.0
                ),
            );
        }
    };
    let _admission = match state.ingest.admit_decoding("metrics", estimate, admission) {
        Ok(a) => a,
        Err(e) => return ingest_error(e),
    };
    // The rows' room in the head, taken before the work of converting them.
    let reserved = match state
        .ingest
        .reserve_rows(periscope_storage::Signal::Metrics, rows)
    {
        Ok(r) => r,
        Err(e) => return ingest_error(e),
    };
    let request = match parse(&raw) {
        Ok(r) => r,
        Err(refusal) => return refusal.into(),
    };
    drop(raw);
    // Straight to rows: each series' labels are laid out once for all its samples.
    let converted = match crate::remote_write_rows::to_rows(&request) {
        Ok(c) => c,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, message),
    };
    drop(request);
    // The WAL logs the body as it arrived (see `replay_wire`).
    match state
        .ingest
        .store_metric_rows(converted, &compressed, Some(reserved))
        .await
    {
        Ok(response) => match response.partial_success {
            Some(partial) if partial.rejected_data_points > 0 => json_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} samples were rejected: {}",
                    partial.rejected_data_points, partial.error_message
                ),
            ),
            _ => StatusCode::NO_CONTENT.into_response(),
        },
        Err(e) => ingest_error(e),
    }
}

/// The answer to a refusal of the ingest path.
fn ingest_error(e: IngestError) -> Response {
    match e {
        IngestError::Unavailable(m) => json_error(StatusCode::SERVICE_UNAVAILABLE, m),
        IngestError::TooLarge(m) => json_error(StatusCode::PAYLOAD_TOO_LARGE, m),
        IngestError::Invalid(m) => json_error(StatusCode::BAD_REQUEST, m),
        IngestError::Internal(m) => json_error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

/// Snappy (block format) and protobuf decoding, bounded by `limit` decompressed bytes.
pub(crate) fn decode(compressed: &[u8], limit: usize) -> Result<WriteRequest, Refusal> {
    parse(&decompress(compressed, limit)?)
}

fn bad(message: String) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        message,
        rpc: None,
    }
}

/// Snappy (block format) decompression, refusing more than `limit` bytes of output.
fn decompress(compressed: &[u8], limit: usize) -> Result<Vec<u8>, Refusal> {
    let length = snap::raw::decompress_len(compressed)
        .map_err(|e| bad(format!("body is not snappy-compressed (block format): {e}")))?;
    if length > limit {
        return Err(too_large(limit));
    }
    snap::raw::Decoder::new()
        .decompress_vec(compressed)
        .map_err(|e| bad(format!("body is not snappy-compressed (block format): {e}")))
}

/// Protobuf decoding of a decompressed body.
fn parse(raw: &[u8]) -> Result<WriteRequest, Refusal> {
    WriteRequest::decode(raw).map_err(|e| {
        bad(format!(
            "body is not a Prometheus remote write WriteRequest: {e}"
        ))
    })
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// The metadata of a request by family name.
pub(crate) fn metadata_by_name(request: &WriteRequest) -> HashMap<&str, &MetricMetadata> {
    request
        .metadata
        .iter()
        .map(|m| (m.metric_family_name.as_str(), m))
        .collect()
}

/// Checks a series the way Prometheus's receiver does (no native histograms, valid and
/// distinct label names, a metric name) and returns its name and its other labels
/// (empty values dropped: Prometheus treats them as absent).
pub(crate) fn series_labels(series: &TimeSeries) -> Result<(&str, Vec<&Label>), String> {
    if !series.histograms.is_empty() {
        return Err(
            "native histograms are not supported; send classic histograms (_bucket series)"
                .to_string(),
        );
    }
    let mut name = None;
    let mut labels = Vec::with_capacity(series.labels.len());
    // A series has a handful of labels: comparing pairs costs less than a hash set
    // allocated (and freed) per series.
    let mut seen = (series.labels.len() > 32).then(std::collections::HashSet::new);
    for (i, label) in series.labels.iter().enumerate() {
        let twice = match &mut seen {
            Some(seen) => !seen.insert(label.name.as_str()),
            None => series.labels[..i].iter().any(|l| l.name == label.name),
        };
        if twice {
            return Err(format!("series has the label {:?} twice", label.name));
        }
        if label.name == "__name__" {
            if !is_metric_name(&label.value) {
                return Err(format!("invalid metric name {:?}", label.value));
            }
            name = Some(label.value.as_str());
        } else if !is_label_name(&label.name) {
            return Err(format!("invalid label name {:?}", label.name));
        } else if !label.value.is_empty() {
            labels.push(label);
        }
    }
    let name = name.ok_or_else(|| "a series has no __name__ label".to_string())?;
    Ok((name, labels))
}

/// The WriteRequest as an OTLP export of gauges (or monotonic sums, for counters),
/// validated as a whole: any invalid series refuses the request.
pub fn to_otlp(request: &WriteRequest) -> Result<ExportMetricsServiceRequest, String> {
    let metadata = metadata_by_name(request);
    // One resource per job, so `service_name` is the job.
    let mut by_job: HashMap<&str, Vec<Metric>> = HashMap::new();
    for series in &request.timeseries {
        let (name, labels) = series_labels(series)?;
        // The series' labels, built once and shared by its samples.
        let attributes: Vec<KeyValue> = labels
            .iter()
            .map(|l| string_kv(&l.name, &l.value))
            .collect();
        let mut points = Vec::with_capacity(series.samples.len());
        for sample in &series.samples {
            if sample.timestamp < 0 {
                return Err(format!(
                    "sample of {name} has a negative timestamp ({} ms)",
                    sample.timestamp
                ));
            }
            points.push(NumberDataPoint {
                attributes: attributes.clone(),
                time_unix_nano: (sample.timestamp as u64).saturating_mul(1_000_000),
                value: Some(number_data_point::Value::AsDouble(sample.value)),
                ..Default::default()
            });
        }
        if points.is_empty() {
            continue;
        }
        let meta = metadata.get(name);
        let data = match meta.map(|m| m.r#type) {
            Some(1) => Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            _ => Data::Gauge(Gauge {
                data_points: points,
            }),
        };
        let job = labels
            .iter()
            .find(|l| l.name == "job")
            .map(|l| l.value.as_str())
            .unwrap_or("");
        by_job.entry(job).or_default().push(Metric {
            name: name.to_string(),
            description: meta.map(|m| m.help.clone()).unwrap_or_default(),
            unit: meta.map(|m| m.unit.clone()).unwrap_or_default(),
            data: Some(data),
            ..Default::default()
        });
    }
    let resource_metrics = by_job
        .into_iter()
        .map(|(job, metrics)| ResourceMetrics {
            resource: Some(Resource {
                attributes: if job.is_empty() {
                    Vec::new()
                } else {
                    vec![string_kv("service.name", job)]
                },
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: REMOTE_WRITE_SCOPE.to_string(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    Ok(ExportMetricsServiceRequest { resource_metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn series(labels: Vec<Label>) -> TimeSeries {
        TimeSeries {
            labels,
            samples: vec![Sample {
                value: 1.5,
                timestamp: 1_700_000_000_123,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_series_becomes_a_gauge_with_its_labels() {
        let request = WriteRequest {
            timeseries: vec![series(vec![
                label("__name__", "up"),
                label("job", "api"),
                label("empty", ""),
            ])],
            metadata: Vec::new(),
        };
        let export = to_otlp(&request).expect("valid");
        let rm = &export.resource_metrics[0];
        let metric = &rm.scope_metrics[0].metrics[0];
        assert_eq!(metric.name, "up");
        let Some(Data::Gauge(g)) = &metric.data else {
            panic!("gauge expected")
        };
        assert_eq!(g.data_points[0].time_unix_nano, 1_700_000_000_123_000_000);
        let keys: Vec<&str> = g.data_points[0]
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(keys, ["job"], "empty label values are absent");
        assert_eq!(
            rm.scope_metrics[0].scope.as_ref().unwrap().name,
            REMOTE_WRITE_SCOPE
        );
    }

    #[test]
    fn counters_from_metadata_become_monotonic_sums() {
        let request = WriteRequest {
            timeseries: vec![series(vec![label("__name__", "requests_total")])],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "requests_total".into(),
                help: "Requests.".into(),
                unit: String::new(),
            }],
        };
        let export = to_otlp(&request).expect("valid");
        let metric = &export.resource_metrics[0].scope_metrics[0].metrics[0];
        assert!(matches!(&metric.data, Some(Data::Sum(s)) if s.is_monotonic));
        assert_eq!(metric.description, "Requests.");
    }

    #[test]
    fn invalid_series_refuse_the_request() {
        for (labels, expected) in [
            (vec![label("job", "x")], "no __name__"),
            (vec![label("__name__", "1up")], "invalid metric name"),
            (
                vec![label("__name__", "up"), label("bad-name", "x")],
                "invalid label name",
            ),
            (
                vec![label("__name__", "up"), label("a", "1"), label("a", "2")],
                "twice",
            ),
        ] {
            let request = WriteRequest {
                timeseries: vec![series(labels)],
                metadata: Vec::new(),
            };
            let error = to_otlp(&request).expect_err("invalid");
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn bodies_must_be_snappy_protobuf() {
        assert!(decode(b"not snappy at all", 1 << 20).is_err());
        let garbage = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .expect("compress");
        assert!(decode(&garbage, 1 << 20).is_err());
        let request = WriteRequest {
            timeseries: vec![series(vec![label("__name__", "up")])],
            metadata: Vec::new(),
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .expect("compress");
        assert_eq!(decode(&body, 1 << 20).ok(), Some(request));
        assert!(decode(&body, 4).is_err(), "decompressed size is bounded");
    }
}
