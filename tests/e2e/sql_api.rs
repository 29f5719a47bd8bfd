//! The SQL API and CLI: read-only, clear errors, limits, and every metric point type
//! read back exactly.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exemplar,
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use prost::Message;
use serde_json::{Value, json};

use crate::support::{Server, otlp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_read_only_and_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for stmt in [
        "CREATE TABLE t (a INT)",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'",
        "INSERT INTO spans (name) VALUES ('x')",
        "COPY (SELECT 1) TO '/tmp/periscope-copy-test.parquet'",
        "DROP TABLE spans",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let (status, v) = server.sql_status(stmt).await;
        assert_eq!(status, 403, "{stmt}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("read-only"),
            "{stmt}: {v}"
        );
    }
    assert!(!std::path::Path::new("/tmp/periscope-copy-test.parquet").exists());
    let (status, v) = server.sql_status("SELECT * FROM '/etc/passwd'").await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = server.sql_status("SELEC 1").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().len() > 10);
    let (status, v) = server.sql_status("SELECT nope FROM spans").await;
    assert_eq!(status, 400, "{v}");
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/sql", server.api()))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("query"), "{v}");
    let r = reqwest::get(format!("{}/api/v1/nothing", server.api()))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());
    // The server still answers.
    assert_eq!(server.scalar("SELECT 1 + 1").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_past_their_limits_fail_cleanly() {
    // One server per limit, so a slow machine cannot turn the memory case into a timeout.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--query-timeout", "1s"]);
    let (status, v) = server
        .sql_status(
            "SELECT count(*) FROM generate_series(1, 1000000) a CROSS JOIN generate_series(1, 1000000) b",
        )
        .await;
    assert_eq!(status, 504, "{v}");
    assert!(v["error"].as_str().unwrap().contains("timeout"), "{v}");
    assert_eq!(server.scalar("SELECT 40 + 2").await, 42);

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--query-timeout", "120s", "--query-memory-limit", "2MiB"],
    );
    let (status, v) = server
        .sql_status(
            "SELECT a.value * 1000 + b.value AS v FROM generate_series(1, 3000) a CROSS JOIN generate_series(1, 1000) b ORDER BY v DESC",
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("memory"), "{v}");
    assert_eq!(server.scalar("SELECT 40 + 2").await, 42);
}

fn metric(name: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        unit: "ms".into(),
        description: format!("{name} help"),
        data: Some(data),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_point_type_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let t = 1_764_000_000_123_456_789u64;
    let exemplar = Exemplar {
        time_unix_nano: t - 5,
        value: Some(exemplar::Value::AsDouble(12.5)),
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        filtered_attributes: vec![otlp::kv("user", "u1")],
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: otlp::resource("metrics-svc"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric(
                        "g",
                        Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: t,
                                value: Some(number_data_point::Value::AsInt(9_007_199_254_740_993)),
                                attributes: vec![otlp::kv("host", "a")],
                                ..Default::default()
                            }],
                        }),
                    ),
                    metric(
                        "s",
                        Data::Sum(Sum {
                            aggregation_temporality: 1,
                            is_monotonic: true,
                            data_points: vec![NumberDataPoint {
                                start_time_unix_nano: t - 1000,
                                time_unix_nano: t,
                                value: Some(number_data_point::Value::AsDouble(0.1)),
                                exemplars: vec![exemplar],
                                ..Default::default()
                            }],
                        }),
                    ),
                    metric(
                        "e",
                        Data::ExponentialHistogram(ExponentialHistogram {
                            aggregation_temporality: 2,
                            data_points: vec![ExponentialHistogramDataPoint {
                                time_unix_nano: t,
                                count: 6,
                                sum: Some(21.0),
                                scale: 3,
                                zero_count: 1,
                                zero_threshold: 0.001,
                                positive: Some(Buckets {
                                    offset: -2,
                                    bucket_counts: vec![1, 2, 3],
                                }),
                                negative: Some(Buckets {
                                    offset: 4,
                                    bucket_counts: vec![],
                                }),
                                min: Some(0.0),
                                max: Some(9.0),
                                ..Default::default()
                            }],
                        }),
                    ),
                    metric(
                        "q",
                        Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                time_unix_nano: t,
                                count: 10,
                                sum: 55.5,
                                quantile_values: vec![
                                    ValueAtQuantile {
                                        quantile: 0.5,
                                        value: 5.0,
                                    },
                                    ValueAtQuantile {
                                        quantile: 0.99,
                                        value: 9.9,
                                    },
                                ],
                                ..Default::default()
                            }],
                        }),
                    ),
                ],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    let r = reqwest::Client::new()
        .post(format!("{}/v1/metrics", server.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows = server
        .rows("SELECT metric_name, metric_type, unit, description, service_name, timestamp, start_timestamp, value, int_value, \
               is_monotonic, temporality, count, sum, min, max, scale, zero_count, zero_threshold, positive_offset, \
               positive_bucket_counts, negative_offset, negative_bucket_counts, quantile_values, exemplars, attributes \
               FROM metrics ORDER BY metric_name")
        .await;
    let ts = "2025-11-24T16:00:00.123456789Z";
    assert_eq!(rows.len(), 4);
    let e = &rows[0];
    assert_eq!(e[0], "e");
    assert_eq!(e[1], "exponential_histogram");
    assert_eq!(e[5], ts);
    assert_eq!(e[10], "cumulative");
    assert_eq!(
        (e[11].clone(), e[12].clone(), e[13].clone(), e[14].clone()),
        (json!(6), json!(21.0), json!(0.0), json!(9.0))
    );
    assert_eq!(
        (e[15].clone(), e[16].clone(), e[17].clone(), e[18].clone()),
        (json!(3), json!(1), json!(0.001), json!(-2))
    );
    assert_eq!(e[19], json!([1, 2, 3]));
    assert_eq!((e[20].clone(), e[21].clone()), (json!(4), json!([])));
    let g = &rows[1];
    assert_eq!(
        (g[1].clone(), g[2].clone(), g[3].clone(), g[4].clone()),
        (
            json!("gauge"),
            json!("ms"),
            json!("g help"),
            json!("metrics-svc")
        )
    );
    assert_eq!(
        g[8],
        json!(9_007_199_254_740_993i64),
        "integer points keep every digit"
    );
    assert_eq!(g[24], json!({"host": "a"}));
    let q = &rows[2];
    assert_eq!(q[1], "summary");
    assert_eq!((q[11].clone(), q[12].clone()), (json!(10), json!(55.5)));
    assert_eq!(
        q[22],
        json!([{"quantile": 0.5, "value": 5.0}, {"quantile": 0.99, "value": 9.9}])
    );
    let s = &rows[3];
    assert_eq!(s[1], "sum");
    assert_eq!(s[6], "2025-11-24T16:00:00.123455789Z");
    assert_eq!(
        (s[7].clone(), s[9].clone(), s[10].clone()),
        (json!(0.1), json!(true), json!("delta"))
    );
    assert_eq!(
        s[23],
        json!([{"time": "2025-11-24T16:00:00.123456784Z", "value": 12.5, "trace_id": "ab".repeat(16),
                "span_id": "cd".repeat(8), "attributes": {"user": "u1"}}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_health_and_metrics_work_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let spans = vec![
        otlp::span(vec![1; 16], vec![1; 8], "GET /a"),
        otlp::span(vec![1; 16], vec![2; 8], "GET /b"),
    ];
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(otlp::traces("cli", spans).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Queryable right after the acknowledgement.
    assert_eq!(server.scalar("SELECT count(*) FROM spans").await, 2);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args([
            "sql",
            "--server",
            &server.api(),
            "SELECT name, span_id FROM spans ORDER BY name",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], " name   | span_id");
    assert_eq!(lines[2], " GET /a | 0101010101010101");
    assert_eq!(lines[4], "(2 rows)");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args([
            "sql",
            "--server",
            &server.api(),
            "--format",
            "csv",
            "SELECT name, attributes FROM spans ORDER BY name",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().nth(1),
        Some(r#"GET /a,"{""http.route"":""/cart""}""#)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(["sql", "--server", &server.api(), "SELECT * FROM nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));

    let health = reqwest::get(format!("{}/healthz", server.api()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{}/readyz", server.api()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(format!("{}/metrics", server.api()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("periscope_ingest_items_total{signal=\"spans\",outcome=\"accepted\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("periscope_wal_fsyncs_total"), "{metrics}");
    assert!(
        metrics.contains("periscope_queries_total{outcome=\"ok\"}"),
        "{metrics}"
    );
}
