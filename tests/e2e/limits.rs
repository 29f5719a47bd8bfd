//! One request must never take the server down: SQL that would allocate without limit,
//! PromQL that would produce points without limit, and remote-write and OTLP bodies
//! that are small on the wire but decode to gigabytes are each refused with a 4xx
//! before they allocate, the server's resident memory stays under its budget, and the
//! next request is served. SQL answers are cut at `--query-max-rows` and
//! `--query-max-bytes` and say so.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use periscope_collector::remote_write::{Sample, TimeSeries, WriteRequest};
use prost::Message;
use serde_json::Value;

use crate::promql::{label, remote_write};
use crate::support::{RssPeak, Server, otlp};

/// The memory budget of the servers here.
const BUDGET: u64 = 256 << 20;

fn start(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut flags = vec!["--memory-limit", "256MiB", "--query-timeout", "20s"];
    flags.extend_from_slice(extra);
    Server::start(dir, &flags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_that_would_allocate_without_limit_is_refused_and_the_server_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &[]);
    let rss = RssPeak::sample(server.pid());
    for query in [
        "SELECT repeat(arrow_cast('x','LargeUtf8'), 1000000000000000)",
        "SELECT array_repeat(1, 1000000000000)",
        "SELECT lpad('x', 1000000000000)",
        "SELECT rpad('x', 1000000000000)",
        "SELECT * FROM generate_series(1, 300000000)",
        "SELECT range(1, 1000000000000)",
        "SELECT generate_series(1, 1000000000000)",
        "SELECT replace(repeat('a', 1000000), 'a', repeat('b', 1000000))",
    ] {
        let (status, body) = server.sql_status(query).await;
        assert_eq!(status, 422, "{query}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("memory limit"), "{query}: {error}");
        // The next query is served.
        assert_eq!(server.scalar("SELECT 40 + 2").await, 42);
    }
    let peak = rss.peak();
    assert!(
        peak < BUDGET,
        "peak RSS {} MiB over the 256 MiB budget",
        peak >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cut_at_the_row_and_byte_caps_and_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        &["--query-max-rows", "1000", "--query-max-bytes", "1MiB"],
    );
    let rss = RssPeak::sample(server.pid());
    // Under the row cap: every row, no warning.
    let (status, body) = server
        .sql_status("SELECT * FROM generate_series(1, 1000)")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(1000));
    assert!(body.get("warnings").is_none(), "{body}");
    // Past it: cut, and the answer says so.
    let (status, body) = server
        .sql_status("SELECT * FROM generate_series(1, 50000)")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(1000));
    assert_eq!(body["rows"][999][0], Value::from(1000));
    let warning = body["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("1000 rows"), "{body}");
    // Past the byte cap: 10 KB rows, cut near 1 MiB.
    let (status, body) = server
        .sql_status("SELECT repeat('x', 10000) AS wide FROM generate_series(1, 900)")
        .await;
    assert_eq!(status, 200);
    let rows = body["rows"].as_array().map(Vec::len).unwrap_or(0);
    assert!(
        (100..=110).contains(&rows),
        "{rows} rows of 10 KB under a 1 MiB cap"
    );
    let warning = body["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("--query-max-bytes"), "{warning}");
    // CSV says it in a header.
    let csv = reqwest::Client::new()
        .post(format!("{}/api/v1/sql?format=csv", server.api()))
        .json(&serde_json::json!({"query": "SELECT * FROM generate_series(1, 5000)"}))
        .send()
        .await
        .expect("csv");
    assert_eq!(csv.status(), 200);
    let warning = csv
        .headers()
        .get("x-periscope-warnings")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(warning.contains("1000 rows"), "{warning}");
    let text = csv.text().await.expect("csv body");
    assert_eq!(text.lines().count(), 1001, "a header and 1000 rows");
    // The UI's download is cut the same way.
    let ui = reqwest::get(format!(
        "{}/ui/sql.csv?q=SELECT%20*%20FROM%20generate_series(1,%205000)",
        server.api()
    ))
    .await
    .expect("ui csv");
    assert_eq!(ui.status(), 200);
    assert!(ui.headers().contains_key("x-periscope-warnings"));
    assert_eq!(ui.text().await.expect("body").lines().count(), 1001);
    assert!(rss.peak() < BUDGET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_that_would_produce_points_without_limit_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &["--query-max-samples", "1000000"]);
    let rss = RssPeak::sample(server.pid());
    let get = |query: &'static str| {
        let url = format!("{}/api/v1/query", server.api());
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .query(&[("query", query), ("time", "1700000000")])
                .send()
                .await
                .expect("query");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = get("count_over_time(vector(1)[1y:1ms])").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("too many samples"),
        "{body}"
    );
    // Under the limit the same shape answers: 1 h at 1 m is 60 points.
    let (status, body) = get("count_over_time(vector(1)[1h:1m])").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["result"][0]["value"][1], "60", "{body}");
    assert!(rss.peak() < BUDGET, "peak RSS {} MiB", rss.peak() >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_write_that_decodes_to_gigabytes_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &[]);
    let rss = RssPeak::sample(server.pid());
    // One series, a 64 KiB label and a million empty samples: about 2 MB on the wire,
    // 64 GB once the label is copied into every sample.
    let bomb = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                label("__name__", "bomb"),
                label("big", &"x".repeat(64 << 10)),
            ],
            samples: vec![Sample::default(); 1_000_000],
            exemplars: Vec::new(),
            histograms: Vec::new(),
        }],
        metadata: Vec::new(),
    };
    assert!(bomb.encoded_len() < 3 << 20);
    assert_eq!(remote_write(&server.api(), &bomb).await, 413);
    // The server serves, and a normal write is stored.
    let ok = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![label("__name__", "fine"), label("job", "a")],
            samples: vec![Sample {
                value: 1.0,
                timestamp: 1_700_000_000_000,
            }],
            exemplars: Vec::new(),
            histograms: Vec::new(),
        }],
        metadata: Vec::new(),
    };
    assert_eq!(remote_write(&server.api(), &ok).await, 204);
    assert_eq!(
        server
            .scalar("SELECT count(*) FROM metrics WHERE metric_name = 'fine'")
            .await,
        1
    );
    assert_eq!(
        server
            .scalar("SELECT count(*) FROM metrics WHERE metric_name = 'bomb'")
            .await,
        0
    );
    assert!(rss.peak() < BUDGET, "peak RSS {} MiB", rss.peak() >> 20);
}

/// A resource with an 8 MiB attribute over 3.5 million empty log records: under 16 MiB
/// on the wire, gigabytes decoded.
fn log_bomb() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![otlp::kv("big", &"x".repeat(8 << 20))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(); 3_500_000],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_export_that_decodes_to_gigabytes_is_refused_on_both_transports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &[]);
    let rss = RssPeak::sample(server.pid());
    let bomb = log_bomb();
    let body = bomb.encode_to_vec();
    assert!(body.len() < 16 << 20, "{} bytes", body.len());
    // OTLP/HTTP: 413 with a google.rpc.Status.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/logs", server.otlp_http()))
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 413);
    // OTLP/gRPC: RESOURCE_EXHAUSTED.
    let mut client = LogsServiceClient::connect(server.grpc())
        .await
        .expect("connect")
        .max_encoding_message_size(64 << 20);
    let status = client.export(bomb).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // Nothing stored, and the server takes a normal export on both.
    let ok = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: otlp::resource("fine"),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                "hello".into(),
                            ),
                        ),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    client.export(ok.clone()).await.expect("normal gRPC export");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/logs", server.otlp_http()))
        .header("Content-Type", "application/x-protobuf")
        .body(ok.encode_to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(server.scalar("SELECT count(*) FROM logs").await, 2);
    let peak = rss.peak();
    assert!(peak < BUDGET, "peak RSS {} MiB", peak >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_queries_that_exhaust_their_memory_do_not_fail_rule_evaluation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: fair\n    interval: 100ms\n    rules:\n      - record: job:up:count\n        \
         expr: count by (job) (up)\n",
    )
    .expect("rules");
    let data = dir.path().join("data");
    let server = start(&data, &["--rules", rules.to_str().expect("utf-8 path")]);
    // Series for the rule to read: 200 series of `up`, a sample every 15 s for 10 min.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let series = WriteRequest {
        timeseries: (0..200)
            .map(|i| TimeSeries {
                labels: vec![
                    label("__name__", "up"),
                    label("job", &format!("job{}", i % 10)),
                    label("instance", &format!("host{i}")),
                ],
                samples: (0..40)
                    .map(|s| Sample {
                        value: 1.0,
                        timestamp: now_ms - 600_000 + s * 15_000,
                    })
                    .collect(),
                exemplars: Vec::new(),
                histograms: Vec::new(),
            })
            .collect(),
        metadata: Vec::new(),
    };
    assert_eq!(remote_write(&server.api(), &series).await, 204);
    let evaluations = |outcome: &'static str| {
        let url = format!("{}/metrics", server.api());
        async move {
            let text = reqwest::get(url)
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            text.lines()
                .find(|l| {
                    l.starts_with("periscope_alert_rule_evaluations_total")
                        && l.contains(&format!("outcome=\"{outcome}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    let ok_before = evaluations("ok").await;
    // Two users run sorts that fill the query memory a batch at a time until they fail,
    // for 5 s, so the user pool is nearly full most of that time.
    let hog = "SELECT a.value * 100000 + b.value AS v FROM generate_series(1, 10000) a CROSS JOIN generate_series(1, 10000) b ORDER BY v DESC";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let url = format!("{}/api/v1/sql", server.api());
        hogs.push(tokio::spawn(async move {
            let mut refused = 0;
            while std::time::Instant::now() < deadline {
                let r = reqwest::Client::new()
                    .post(&url)
                    .json(&serde_json::json!({ "query": hog }))
                    .send()
                    .await
                    .expect("hog");
                if r.status() == 422 {
                    refused += 1;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for h in hogs {
        refused += h.await.expect("hog task");
    }
    assert!(refused > 0, "the hogs never reached the memory limit");
    // Rules kept evaluating while the user pool was full. How many times depends on how
    // much CPU the two sorting hogs leave them on a loaded 2-core machine, so the test asks
    // for evaluations and no failures, not for a rate.
    let ok = evaluations("ok").await - ok_before;
    assert!(ok >= 1.0, "no rule evaluation succeeded while the hogs ran");
    assert_eq!(evaluations("err").await, 0.0, "a rule evaluation failed");
}
