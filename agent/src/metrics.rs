//! In-process metric aggregation: the HTTP duration histograms and the agent's own
//! counters (items processed, dropped, exported), collected as cumulative OTLP metrics.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
    metric::Data, number_data_point,
};
use parking_lot::Mutex;

use crate::semconv::{self, kv, kv_i64};

/// Bucket boundaries (seconds) the semantic conventions advise for HTTP durations.
pub const DURATION_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// One histogram series.
#[derive(Debug, Clone)]
struct HistPoint {
    server: bool,
    attributes: Vec<KeyValue>,
    counts: [u64; DURATION_BOUNDS.len() + 1],
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl HistPoint {
    fn new(server: bool, attributes: Vec<KeyValue>) -> HistPoint {
        HistPoint {
            server,
            attributes,
            counts: [0; DURATION_BOUNDS.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn record(&mut self, seconds: f64) {
        let i = DURATION_BOUNDS.partition_point(|b| *b < seconds);
        self.counts[i] += 1;
        self.count += 1;
        self.sum += seconds;
        self.min = self.min.min(seconds);
        self.max = self.max.max(seconds);
    }
}

/// What identifies one HTTP duration series; attributes are only built for a new one.
#[derive(Debug, Clone, Copy, Hash)]
pub struct HttpSeries<'a> {
    /// Server or client side.
    pub server: bool,
    /// `http.request.method` (semantic-convention value).
    pub method: &'static str,
    /// `http.response.status_code`, 0 when there was no response.
    pub status: u16,
    /// `http.route` (server side).
    pub route: Option<&'a str>,
    /// `url.scheme`.
    pub scheme: &'static str,
    /// `server.address` (client side).
    pub server_address: Option<&'a str>,
    /// `server.port` (client side).
    pub server_port: u16,
    /// `error.type`, when the request failed.
    pub error_type: Option<&'a str>,
    /// `network.protocol.version`.
    pub protocol: &'static str,
}

impl HttpSeries<'_> {
    fn attributes(&self) -> Vec<KeyValue> {
        let mut a = vec![
            kv(semconv::HTTP_REQUEST_METHOD, self.method),
            kv(semconv::URL_SCHEME, self.scheme),
            kv(semconv::NETWORK_PROTOCOL_VERSION, self.protocol),
        ];
        if self.status != 0 {
            a.push(kv_i64(
                semconv::HTTP_RESPONSE_STATUS_CODE,
                i64::from(self.status),
            ));
        }
        if let Some(r) = self.route {
            a.push(kv(semconv::HTTP_ROUTE, r));
        }
        if let Some(s) = self.server_address {
            a.push(kv(semconv::SERVER_ADDRESS, s));
            a.push(kv_i64(semconv::SERVER_PORT, i64::from(self.server_port)));
        }
        if let Some(e) = self.error_type {
            a.push(kv(semconv::ERROR_TYPE, e));
        }
        a
    }
}

/// The two HTTP duration histograms.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    series: Mutex<HashMap<u64, HistPoint>>,
    hasher: std::hash::RandomState,
}

impl HttpMetrics {
    /// Records one request's duration.
    pub fn record(&self, series: &HttpSeries<'_>, seconds: f64) {
        let key = self.hasher.hash_one(series);
        let mut map = self.series.lock();
        map.entry(key)
            .or_insert_with(|| HistPoint::new(series.server, series.attributes()))
            .record(seconds);
    }

    /// The histograms as cumulative OTLP metrics since `start_ns`.
    pub fn collect(&self, start_ns: u64, now_ns: u64) -> Vec<Metric> {
        let map = self.series.lock();
        let mut server = Vec::new();
        let mut client = Vec::new();
        for p in map.values() {
            let point = HistogramDataPoint {
                attributes: p.attributes.clone(),
                start_time_unix_nano: start_ns,
                time_unix_nano: now_ns,
                count: p.count,
                sum: Some(p.sum),
                bucket_counts: p.counts.to_vec(),
                explicit_bounds: DURATION_BOUNDS.to_vec(),
                min: p.min.is_finite().then_some(p.min),
                max: p.max.is_finite().then_some(p.max),
                ..Default::default()
            };
            if p.server {
                server.push(point);
            } else {
                client.push(point);
            }
        }
        let mut out = Vec::new();
        for (name, desc, points) in [
            (
                "http.server.request.duration",
                "Duration of HTTP server requests.",
                server,
            ),
            (
                "http.client.request.duration",
                "Duration of HTTP client requests.",
                client,
            ),
        ] {
            if points.is_empty() {
                continue;
            }
            out.push(Metric {
                name: name.into(),
                description: desc.into(),
                unit: "s".into(),
                data: Some(Data::Histogram(Histogram {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            });
        }
        out
    }
}

/// The kinds of item the agent exports through its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Spans.
    Span,
    /// Log records.
    Log,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Span => "span",
            Signal::Log => "log",
        }
    }
}

/// Counters for one signal.
#[derive(Debug, Default)]
pub struct SignalStats {
    /// Items accepted into the queue.
    pub queued: AtomicU64,
    /// Items dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Items the collector accepted.
    pub exported: AtomicU64,
    /// Items dropped after export failed for good.
    pub export_failed: AtomicU64,
}

/// A snapshot of [`SignalStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalCounts {
    /// Items accepted into the queue.
    pub queued: u64,
    /// Items dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Items the collector accepted.
    pub exported: u64,
    /// Items dropped after export failed for good.
    pub export_failed: u64,
}

impl SignalCounts {
    /// Every item dropped, for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.export_failed
    }
}

impl SignalStats {
    /// A snapshot.
    pub fn snapshot(&self) -> SignalCounts {
        SignalCounts {
            queued: self.queued.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            exported: self.exported.load(Ordering::Relaxed),
            export_failed: self.export_failed.load(Ordering::Relaxed),
        }
    }

    /// The self-observability metrics of the semantic conventions for this signal:
    /// `otel.sdk.processor.<signal>.processed` (with `error.type=queue_full` for drops)
    /// and `otel.sdk.exporter.<signal>.exported` (with `error.type` for failures).
    pub fn collect(
        &self,
        signal: Signal,
        exporter_type: &str,
        start_ns: u64,
        now_ns: u64,
    ) -> Vec<Metric> {
        let s = self.snapshot();
        let name = signal.name();
        let processor = format!("batching_{name}_processor");
        let exporter = format!("{exporter_type}_{name}_exporter");
        let point = |value: u64, component: &str, error: Option<&str>| {
            let mut attributes = vec![
                kv("otel.component.type", component),
                kv("otel.component.name", format!("{component}/0")),
            ];
            if let Some(e) = error {
                attributes.push(kv(semconv::ERROR_TYPE, e));
            }
            NumberDataPoint {
                attributes,
                start_time_unix_nano: start_ns,
                time_unix_nano: now_ns,
                value: Some(number_data_point::Value::AsInt(
                    i64::try_from(value).unwrap_or(i64::MAX),
                )),
                ..Default::default()
            }
        };
        let sum = |metric: String, points: Vec<NumberDataPoint>| Metric {
            name: metric,
            unit: format!("{{{name}}}"),
            data: Some(Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        vec![
            sum(
                format!("otel.sdk.processor.{name}.processed"),
                vec![
                    point(s.queued, &processor, None),
                    point(s.dropped_queue_full, &processor, Some("queue_full")),
                ],
            ),
            sum(
                format!("otel.sdk.exporter.{name}.exported"),
                vec![
                    point(s.exported, &exporter, None),
                    point(s.export_failed, &exporter, Some("export_failed")),
                ],
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_bucket_and_separate_series() {
        let m = HttpMetrics::default();
        let s = HttpSeries {
            server: true,
            method: "GET",
            status: 200,
            route: Some("/api"),
            scheme: "http",
            server_address: None,
            server_port: 0,
            error_type: None,
            protocol: "1.1",
        };
        m.record(&s, 0.003);
        m.record(&s, 0.2);
        m.record(&HttpSeries { status: 500, ..s }, 0.2);
        m.record(&HttpSeries { server: false, ..s }, 12.0);
        let out = m.collect(1, 2);
        assert_eq!(out.len(), 2);
        let Some(Data::Histogram(h)) = &out[0].data else {
            panic!("histogram")
        };
        assert_eq!(out[0].name, "http.server.request.duration");
        assert_eq!(h.data_points.len(), 2);
        let ok = h
            .data_points
            .iter()
            .find(|p| p.count == 2)
            .expect("200 series");
        assert_eq!(ok.bucket_counts[0], 1); // 3 ms ≤ 5 ms
        assert_eq!(ok.bucket_counts[6], 1); // 200 ms in (100, 250]
        assert_eq!(ok.attributes.len(), 5);
        let Some(Data::Histogram(c)) = &out[1].data else {
            panic!("histogram")
        };
        assert_eq!(c.data_points[0].bucket_counts[14], 1); // above 10 s
    }
}
