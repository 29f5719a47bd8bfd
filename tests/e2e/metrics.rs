//! OTLP metrics of every point type: read back field by field through SQL, and seen by
//! PromQL under the OpenTelemetry-to-Prometheus names. Remote write's bad input,
//! out-of-order and duplicate samples.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric::Data,
    number_data_point, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use periscope_collector::remote_write::{Sample, TimeSeries, WriteRequest};
use prost::Message;
use serde_json::{Value, json};

use crate::promql::{label, remote_write};
use crate::support::Server;
use crate::support::otlp::kv;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn int_kv(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        description: format!("{name} help"),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

fn number(t: u64, v: number_data_point::Value, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: t - 60_000_000_000,
        time_unix_nano: t,
        value: Some(v),
        ..Default::default()
    }
}

/// One metric of every type; `t1 < t2` are the two point times (ns).
fn request(t1: u64, t2: u64) -> ExportMetricsServiceRequest {
    use number_data_point::Value::{AsDouble, AsInt};
    let exemplar = Exemplar {
        filtered_attributes: vec![kv("user", "u-1")],
        time_unix_nano: t1 - 5,
        value: Some(exemplar::Value::AsDouble(0.25)),
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        trace_id: vec![9; 16],
    };
    let metrics = vec![
        metric(
            "system.cpu.utilization",
            "1",
            Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    exemplars: vec![exemplar.clone()],
                    ..number(t2, AsDouble(0.75), vec![kv("cpu", "0")])
                }],
            }),
        ),
        metric(
            "queue.depth",
            "{item}",
            Data::Gauge(Gauge {
                data_points: vec![number(t2, AsInt(-7), vec![int_kv("shard", 3)])],
            }),
        ),
        metric(
            "http.requests",
            "{request}",
            Data::Sum(Sum {
                data_points: vec![
                    number(t1, AsInt(100), vec![kv("http.route", "/cart")]),
                    number(t2, AsInt(160), vec![kv("http.route", "/cart")]),
                ],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        ),
        metric(
            "bytes.sent",
            "By",
            Data::Sum(Sum {
                data_points: vec![
                    number(t1, AsDouble(10.0), vec![]),
                    number(t2, AsDouble(5.5), vec![]),
                ],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            }),
        ),
        metric(
            "active.connections",
            "",
            Data::Sum(Sum {
                data_points: vec![number(t2, AsInt(12), vec![])],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: false,
            }),
        ),
        metric(
            "http.server.duration",
            "ms",
            Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![kv("http.route", "/cart")],
                    start_time_unix_nano: t1,
                    time_unix_nano: t2,
                    count: 10,
                    sum: Some(1234.5),
                    bucket_counts: vec![2, 3, 4, 1],
                    explicit_bounds: vec![10.0, 100.0, 1000.0],
                    exemplars: vec![exemplar.clone()],
                    flags: 0,
                    min: Some(1.5),
                    max: Some(2000.0),
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        ),
        metric(
            "rpc.latency",
            "s",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    start_time_unix_nano: t1,
                    time_unix_nano: t2,
                    count: 9,
                    sum: Some(4.5),
                    scale: 3,
                    zero_count: 1,
                    positive: Some(Buckets {
                        offset: -2,
                        bucket_counts: vec![1, 2, 3],
                    }),
                    negative: Some(Buckets {
                        offset: 1,
                        bucket_counts: vec![2],
                    }),
                    min: Some(-0.5),
                    max: Some(2.0),
                    zero_threshold: 0.001,
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Delta as i32,
            }),
        ),
        metric(
            "gc.pause",
            "s",
            Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    start_time_unix_nano: t1,
                    time_unix_nano: t2,
                    count: 4,
                    sum: 0.8,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 0.1,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 0.5,
                        },
                    ],
                    ..Default::default()
                }],
            }),
        ),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.namespace", "shop"),
                    kv("service.instance.id", "i-1"),
                    kv("host.name", "h1"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn export(server: &Server, request: &ExportMetricsServiceRequest) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/metrics", server.otlp_http()))
        .header("Content-Type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .expect("export");
    assert_eq!(r.status().as_u16(), 200);
}

async fn promql(server: &Server, query: &str, time_ms: i64) -> Value {
    let r: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/query", server.api()))
        .query(&[
            ("query", query),
            ("time", &format!("{}", time_ms as f64 / 1000.0)),
        ])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert_eq!(r["status"], "success", "{query}: {r}");
    r["data"]["result"].clone()
}

fn rfc3339(ns: u64) -> String {
    periscope_query::rfc3339_text(ns as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_otlp_point_type_round_trips_through_sql_and_promql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let t2_ms = now_ms() - 30_000;
    let (t1, t2) = (
        ((t2_ms - 60_000) * 1_000_000) as u64 + 123,
        (t2_ms * 1_000_000) as u64 + 456,
    );
    export(&server, &request(t1, t2)).await;

    // SQL: every field of every type.
    let rows = server
        .rows(
            "SELECT metric_name, metric_type, unit, description, service_name, timestamp, start_timestamp, \
             attributes, resource_attributes, value, int_value, is_monotonic, temporality, count, sum, min, max, \
             bucket_counts, explicit_bounds, scale, zero_count, zero_threshold, positive_offset, \
             positive_bucket_counts, negative_offset, negative_bucket_counts, quantile_values, exemplars, \
             attribute_types \
             FROM metrics ORDER BY metric_name, timestamp",
        )
        .await;
    let by_name =
        |name: &str| -> Vec<&Vec<Value>> { rows.iter().filter(|r| r[0] == name).collect() };
    let resource = json!({"service.name": "checkout", "service.namespace": "shop", "service.instance.id": "i-1", "host.name": "h1"});
    for r in &rows {
        assert_eq!(r[3], json!(format!("{} help", r[0].as_str().unwrap())));
        assert_eq!(r[4], "checkout");
        assert_eq!(r[8], resource);
    }
    let exemplar = json!([{
        "time": rfc3339(t1 - 5), "value": 0.25, "trace_id": "09".repeat(16),
        "span_id": "0102030405060708", "attributes": {"user": "u-1"}
    }]);

    let cpu = by_name("system.cpu.utilization");
    assert_eq!(cpu.len(), 1);
    let cpu = cpu[0];
    assert_eq!((&cpu[1], &cpu[2]), (&json!("gauge"), &json!("1")));
    assert_eq!(cpu[5], rfc3339(t2));
    assert_eq!(cpu[6], rfc3339(t2 - 60_000_000_000));
    assert_eq!(
        (&cpu[7], &cpu[9], &cpu[10]),
        (&json!({"cpu": "0"}), &json!(0.75), &Value::Null)
    );
    assert_eq!(cpu[27], exemplar);

    let queue = by_name("queue.depth")[0];
    assert_eq!((&queue[9], &queue[10]), (&json!(-7.0), &json!(-7)));
    assert_eq!(queue[7], json!({"shard": "3"}));
    assert_eq!(queue[28], json!({"shard": "int"}), "the OTLP type is kept");

    let requests = by_name("http.requests");
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests.iter().map(|r| r[10].clone()).collect::<Vec<_>>(),
        [json!(100), json!(160)]
    );
    assert_eq!(
        (&requests[0][11], &requests[0][12]),
        (&json!(true), &json!("cumulative"))
    );

    let sent = by_name("bytes.sent");
    assert_eq!(
        sent.iter()
            .map(|r| (r[9].clone(), r[12].clone()))
            .collect::<Vec<_>>(),
        [(json!(10.0), json!("delta")), (json!(5.5), json!("delta"))]
    );
    let active = by_name("active.connections")[0];
    assert_eq!((&active[10], &active[11]), (&json!(12), &json!(false)));

    let h = by_name("http.server.duration")[0];
    assert_eq!(h[1], "histogram");
    assert_eq!(h[6], rfc3339(t1));
    assert_eq!(
        (&h[13], &h[14], &h[15], &h[16]),
        (&json!(10), &json!(1234.5), &json!(1.5), &json!(2000.0))
    );
    assert_eq!(
        (&h[17], &h[18]),
        (&json!([2, 3, 4, 1]), &json!([10.0, 100.0, 1000.0]))
    );
    assert_eq!(h[12], "cumulative");
    assert_eq!(h[27], exemplar);

    let e = by_name("rpc.latency")[0];
    assert_eq!(e[1], "exponential_histogram");
    assert_eq!(
        (&e[13], &e[14], &e[15], &e[16]),
        (&json!(9), &json!(4.5), &json!(-0.5), &json!(2.0))
    );
    assert_eq!(
        (&e[19], &e[20], &e[21]),
        (&json!(3), &json!(1), &json!(0.001))
    );
    assert_eq!((&e[22], &e[23]), (&json!(-2), &json!([1, 2, 3])));
    assert_eq!((&e[24], &e[25]), (&json!(1), &json!([2])));
    assert_eq!(e[12], "delta");

    let s = by_name("gc.pause")[0];
    assert_eq!(s[1], "summary");
    assert_eq!((&s[13], &s[14]), (&json!(4), &json!(0.8)));
    assert_eq!(
        s[26],
        json!([{"quantile": 0.5, "value": 0.1}, {"quantile": 0.99, "value": 0.5}])
    );

    // PromQL: the compatibility names, job/instance, target_info.
    let at = t2_ms + 1_000;
    let names = promql(
        &server,
        r#"count by (__name__) ({job="shop/checkout"})"#,
        at,
    )
    .await;
    let mut names: Vec<String> = names
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metric"]["__name__"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "active_connections",
            "bytes_sent_total",
            "gc_pause_seconds",
            "gc_pause_seconds_count",
            "gc_pause_seconds_sum",
            "http_requests_total",
            "http_server_duration_milliseconds_bucket",
            "http_server_duration_milliseconds_count",
            "http_server_duration_milliseconds_sum",
            "queue_depth",
            "rpc_latency_seconds_count",
            "rpc_latency_seconds_sum",
            "system_cpu_utilization_ratio",
            "target_info",
        ]
    );
    let value = |v: &Value| v[0]["value"][1].as_str().unwrap().to_string();
    let cart = promql(&server, r#"http_requests_total{http_route="/cart"}"#, at).await;
    assert_eq!(
        cart[0]["metric"],
        json!({"__name__": "http_requests_total", "http_route": "/cart", "job": "shop/checkout", "instance": "i-1"})
    );
    assert_eq!(value(&cart), "160");
    // A delta sum reads as a counter: the running total.
    assert_eq!(
        value(&promql(&server, "bytes_sent_total", at).await),
        "15.5"
    );
    assert_eq!(value(&promql(&server, "queue_depth", at).await), "-7");
    // Histograms as cumulative le buckets; histogram_quantile over them.
    let buckets = promql(&server, "http_server_duration_milliseconds_bucket", at).await;
    let mut les: Vec<(String, String)> = buckets
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["metric"]["le"].as_str().unwrap().to_string(),
                b["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    les.sort_by(|a, b| {
        a.1.parse::<f64>()
            .unwrap()
            .total_cmp(&b.1.parse::<f64>().unwrap())
    });
    assert_eq!(
        les,
        [("10", "2"), ("100", "5"), ("1000", "9"), ("+Inf", "10")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // rank 5 of 10 falls at the top of the (10, 100] bucket.
    let p50 = promql(
        &server,
        "histogram_quantile(0.5, http_server_duration_milliseconds_bucket)",
        at,
    )
    .await;
    assert_eq!(value(&p50), "100");
    let p70 = promql(
        &server,
        "histogram_quantile(0.7, http_server_duration_milliseconds_bucket)",
        at,
    )
    .await;
    assert_eq!(value(&p70), "550");
    let q99 = promql(&server, r#"gc_pause_seconds{quantile="0.99"}"#, at).await;
    assert_eq!(value(&q99), "0.5");
    assert_eq!(
        value(&promql(&server, "rpc_latency_seconds_count", at).await),
        "9"
    );
    let info = promql(&server, "target_info", at).await;
    assert_eq!(
        info[0]["metric"],
        json!({"__name__": "target_info", "job": "shop/checkout", "instance": "i-1", "host_name": "h1"})
    );
    // Grafana posts its queries as a form.
    let posted: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/query", server.api()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("query=queue_depth&time={}", at as f64 / 1000.0))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(posted["data"]["result"][0]["value"][1], "-7", "{posted}");
    // Metadata under the Prometheus names.
    let meta: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/metadata", server.api()))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(
        meta["data"]["http_requests_total"],
        json!([{"type": "counter", "help": "http.requests help", "unit": ""}])
    );
    assert_eq!(
        meta["data"]["http_server_duration_milliseconds"][0]["type"],
        "histogram"
    );
    assert_eq!(meta["data"]["gc_pause_seconds"][0]["type"], "summary");
}

async fn write_status(server: &Server, body: Vec<u8>, encoding: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/write", server.api()))
        .header("Content-Encoding", encoding)
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("write");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn series(name: &str, samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: vec![label("__name__", name), label("job", "rw")],
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_refuses_bad_bodies_and_keeps_out_of_order_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let t = now_ms() / 1000 * 1000 - 120_000;
    let good = WriteRequest {
        timeseries: vec![series("rw_gauge", &[(t, 1.0)])],
        metadata: Vec::new(),
    };
    assert_eq!(remote_write(&server.api(), &good).await, 204);

    let snappy = |bytes: &[u8]| {
        snap::raw::Encoder::new()
            .compress_vec(bytes)
            .expect("snappy")
    };
    let invalid_label = WriteRequest {
        timeseries: vec![
            series("rw_gauge", &[(t + 1_000, 2.0)]),
            TimeSeries {
                labels: vec![label("__name__", "rw_gauge"), label("bad-label", "x")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: t,
                }],
                ..Default::default()
            },
        ],
        metadata: Vec::new(),
    };
    for (body, encoding, status, says) in [
        (b"definitely not snappy".to_vec(), "snappy", 400, "snappy"),
        (
            snappy(&[0xff, 0xff, 0xff, 0x01]),
            "snappy",
            400,
            "WriteRequest",
        ),
        (
            snappy(&invalid_label.encode_to_vec()),
            "snappy",
            400,
            "invalid label name",
        ),
        (snappy(&good.encode_to_vec()), "gzip", 415, "snappy"),
    ] {
        let (got, body) = write_status(&server, body, encoding).await;
        assert_eq!(got, status, "{body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message}");
    }
    // Nothing of a refused request is stored.
    assert_eq!(server.scalar("SELECT count(*) FROM metrics").await, 1);

    // Out of order: accepted and read in time order. Duplicates: one sample per instant.
    let later = WriteRequest {
        timeseries: vec![series("rw_gauge", &[(t + 60_000, 3.0)])],
        metadata: Vec::new(),
    };
    let earlier = WriteRequest {
        timeseries: vec![series("rw_gauge", &[(t + 30_000, 2.0), (t, 1.0)])],
        metadata: Vec::new(),
    };
    assert_eq!(remote_write(&server.api(), &later).await, 204);
    assert_eq!(remote_write(&server.api(), &earlier).await, 204);
    let r: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/query", server.api()))
        .query(&[
            ("query", "rw_gauge[5m]"),
            ("time", &format!("{}", (t + 90_000) / 1000)),
        ])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    let values = &r["data"]["result"][0]["values"];
    assert_eq!(
        values,
        &json!([
            [t / 1000, "1"],
            [(t + 30_000) / 1000, "2"],
            [(t + 60_000) / 1000, "3"]
        ]),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_under_memory_pressure_answers_retry_later_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 64 MiB budget, flushes only by pressure: large series fill it quickly.
    let server = Server::start(
        dir.path(),
        &[
            "--memory-limit",
            "64MiB",
            "--flush-bytes",
            "1GiB",
            "--flush-interval",
            "1h",
        ],
    );
    let t = now_ms() / 1000 * 1000 - 600_000;
    let padding = "x".repeat(4096);
    let client = reqwest::Client::new();
    let mut acked = 0i64;
    let mut refused = None;
    for n in 0..400i64 {
        let request = WriteRequest {
            timeseries: (0..400)
                .map(|i| TimeSeries {
                    labels: vec![
                        label("__name__", "pressure"),
                        label("batch", &n.to_string()),
                        label("i", &i.to_string()),
                        label("padding", &padding),
                    ],
                    samples: vec![Sample {
                        value: 1.0,
                        timestamp: t,
                    }],
                    ..Default::default()
                })
                .collect(),
            metadata: Vec::new(),
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .expect("snappy");
        let r = client
            .post(format!("{}/api/v1/write", server.api()))
            .header("Content-Encoding", "snappy")
            .body(body)
            .send()
            .await
            .expect("write");
        match r.status().as_u16() {
            204 => acked += 400,
            503 => {
                refused = Some(r);
                break;
            }
            other => panic!("unexpected {other}: {}", r.text().await.unwrap_or_default()),
        }
    }
    let refused = refused.expect("the server refused once its budget was used up");
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("")),
        Some("1")
    );
    let body: Value = refused.json().await.expect("json error");
    assert!(
        !body["error"].as_str().unwrap_or_default().is_empty(),
        "{body}"
    );
    assert!(acked > 0);
    // Everything acknowledged is stored; nothing of the refused request is.
    assert_eq!(
        server
            .scalar("SELECT count(*) FROM metrics WHERE metric_name = 'pressure'")
            .await,
        acked
    );
}
