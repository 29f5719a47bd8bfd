//! Log search through the binary: OTLP/HTTP in, `/api/v1/logs` and its live tail out;
//! CJK, emoji, 1 MiB and structured bodies; `kill -9` and restart; bad queries.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value as Av,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use rand::Rng;
use serde_json::Value;

use crate::support::{Server, otlp};

const T0: u64 = 1_764_000_000_000_000_000;

fn text(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Av::StringValue(s.into())),
    })
}

fn record(i: u64, body: Option<AnyValue>, severity: i32) -> LogRecord {
    LogRecord {
        time_unix_nano: T0 + i * 1_000_000,
        severity_number: severity,
        severity_text: if severity >= 17 {
            "ERROR".into()
        } else {
            "INFO".into()
        },
        body,
        attributes: vec![
            otlp::kv("http.route", "/cart"),
            otlp::kv("seq", &i.to_string()),
        ],
        trace_id: if i.is_multiple_of(2) {
            vec![0xab; 16]
        } else {
            vec![]
        },
        span_id: if i.is_multiple_of(2) {
            vec![0xcd; 8]
        } else {
            vec![]
        },
        ..Default::default()
    }
}

fn export(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: otlp::resource(service),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

async fn send(server: &Server, request: &ExportLogsServiceRequest) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/logs", server.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .expect("POST /v1/logs");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

async fn get(server: &Server, params: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/logs", server.api()))
        .query(params)
        .send()
        .await
        .expect("GET /api/v1/logs");
    let status = r.status().as_u16();
    let body = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")),
    )
}

/// Searches the whole time range of the test data.
async fn search(server: &Server, query: &str) -> Value {
    let (status, v) = get(
        server,
        &[
            ("query", query),
            ("start", "2025-11-24T00:00:00Z"),
            ("end", "2025-11-26T00:00:00Z"),
            ("limit", "1000"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{query}: {v}");
    v
}

fn bodies(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| {
            h["body"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(60)
                .collect()
        })
        .collect()
}

/// Waits until `query` finds `n` lines (the head index commits within 200 ms).
async fn until_total(server: &Server, query: &str, n: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = search(server, query).await;
        if last["total"] == n {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{query}: expected {n} lines, last answer {last}");
}

fn lines() -> Vec<ExportLogsServiceRequest> {
    let mut long = String::with_capacity(1 << 20);
    while long.len() < (1 << 20) {
        long.push_str("lorem ipsum dolor ");
    }
    long.push_str("needle-in-the-haystack");
    let structured = AnyValue {
        value: Some(Av::KvlistValue(KeyValueList {
            values: vec![
                KeyValue {
                    key: "order".into(),
                    value: text("A-1001"),
                    ..Default::default()
                },
                KeyValue {
                    key: "items".into(),
                    value: Some(AnyValue {
                        value: Some(Av::ArrayValue(ArrayValue {
                            values: vec![
                                text("widget").unwrap_or_default(),
                                text("gizmo").unwrap_or_default(),
                            ],
                        })),
                    }),
                    ..Default::default()
                },
            ],
        })),
    };
    vec![
        export(
            "checkout",
            vec![
                record(0, text("결제 실패: 카드 승인 거절 user_id=42"), 17),
                record(1, text("支付失败，余额不足"), 17),
                record(2, text("ユーザーがログインしました"), 9),
                record(3, text("deploy finished 🚀 in 3s"), 9),
                record(4, text("GET /api/v1/cart returned E1234 after timeout"), 13),
            ],
        ),
        export(
            "payments",
            vec![
                record(5, text(&long), 9),
                record(6, Some(structured), 9),
                record(7, text("mixed 한국어 English 日本語 text"), 9),
                record(8, text("connection refused by upstream"), 17),
            ],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_every_script_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    for request in lines() {
        send(&server, &request).await;
    }
    let all = until_total(&server, "*", 9).await;
    assert_eq!(server.scalar("SELECT count(*) FROM logs").await, 9);

    // The answer's shape.
    let hit = &all["hits"][0];
    for key in [
        "timestamp",
        "service_name",
        "severity_text",
        "severity_number",
        "body",
        "trace_id",
        "span_id",
        "attributes",
        "resource_attributes",
        "highlights",
    ] {
        assert!(hit.get(key).is_some(), "hit lacks {key}: {hit}");
    }
    assert!(
        all["elapsed_ms"].is_number() && all["histogram"].is_array(),
        "{all}"
    );
    assert_eq!(all["next_cursor"], Value::Null);
    let newest_first: Vec<&str> = all["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["attributes"]["seq"].as_str().unwrap())
        .collect();
    assert_eq!(newest_first, ["8", "7", "6", "5", "4", "3", "2", "1", "0"]);

    let cases: [(&str, &[&str]); 14] = [
        ("결제", &["결제 실패: 카드 승인 거절 user_id=42"]),
        ("승인", &["결제 실패: 카드 승인 거절 user_id=42"]),
        ("支付", &["支付失败，余额不足"]),
        ("余额", &["支付失败，余额不足"]),
        ("ログイン", &["ユーザーがログインしました"]),
        ("🚀", &["deploy finished 🚀 in 3s"]),
        ("user_id=42", &["결제 실패: 카드 승인 거절 user_id=42"]),
        (
            "E1234 /api/v1/cart",
            &["GET /api/v1/cart returned E1234 after timeout"],
        ),
        (
            "needle-in-the-haystack",
            &["lorem ipsum dolor lorem ipsum dolor lorem ipsum dolor lorem "],
        ),
        (
            "gizmo",
            &[r#"{"items":["widget","gizmo"],"order":"A-1001"}"#],
        ),
        (
            "A-1001",
            &[r#"{"items":["widget","gizmo"],"order":"A-1001"}"#],
        ),
        ("日本語 english", &["mixed 한국어 English 日本語 text"]),
        (
            "service:payments severity>=error",
            &["connection refused by upstream"],
        ),
        (
            "timeout* OR upstr*",
            &[
                "connection refused by upstream",
                "GET /api/v1/cart returned E1234 after timeout",
            ],
        ),
    ];
    for (query, want) in cases {
        let v = search(&server, query).await;
        let mut got = bodies(&v);
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.chars().take(60).collect()).collect();
        want.sort();
        assert_eq!(got, want, "{query}");
    }
    // Highlights mark the words found.
    let v = search(&server, "timeout").await;
    let body = v["hits"][0]["body"].as_str().unwrap();
    let mark = &v["hits"][0]["highlights"]["body"][0];
    let (s, e) = (
        mark[0].as_u64().unwrap() as usize,
        mark[1].as_u64().unwrap() as usize,
    );
    assert_eq!(&body[s..e], "timeout");
    // From a trace to its logs, and back.
    let trace = "abababababababababababababababab";
    let v = search(&server, &format!("trace_id:{trace}")).await;
    assert_eq!(v["total"], 5);
    assert!(
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["trace_id"] == trace)
    );

    // kill -9: everything acknowledged is still found, once.
    server.kill9();
    let mut server = Server::start(dir.path(), &[]);
    let v = until_total(&server, "*", 9).await;
    let ids: HashSet<u64> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["log_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 9);
    send(
        &server,
        &export(
            "checkout",
            vec![record(9, text("after restart timeout"), 9)],
        ),
    )
    .await;
    until_total(&server, "timeout", 2).await;
    // A clean stop flushes to Parquet; the file indexes answer the same.
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), &[]);
    let v = until_total(&server, "*", 10).await;
    let ids: HashSet<u64> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["log_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(search(&server, "결제").await["total"], 1);
    assert!(
        crate::support::parquet_files(dir.path())
            .iter()
            .any(|p| p.to_string_lossy().contains("/logs/")),
        "logs were flushed to Parquet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_log_queries_get_clear_400s() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let cases: [(&[(&str, &str)], &str); 9] = [
        (&[("query", "\"timeout")], "unterminated quote"),
        (&[("query", "a AND")], "at column 3"),
        (&[("query", "(a OR b")], "missing `)`"),
        (&[("query", "color:red")], "unknown field `color`"),
        (&[("query", "severity>=loud")], "loud"),
        (&[("start", "now"), ("end", "now-1h")], "start is after end"),
        (&[("start", "yesterday")], "RFC 3339"),
        (&[("limit", "-5")], "limit must be a whole number"),
        (&[("cursor", "garbage!")], "invalid cursor"),
    ];
    for (params, want) in cases {
        let (status, v) = get(&server, params).await;
        assert_eq!(status, 400, "{params:?}: {v}");
        let message = v["error"].as_str().unwrap_or_default();
        assert!(message.contains(want), "{params:?}: {message}");
    }
    // A huge limit is cut to the documented maximum, and said so.
    let (status, v) = get(&server, &[("limit", "1000000")]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["limit"], 10_000);
    assert!(
        v["warnings"][0].as_str().unwrap().contains("cut to 10000"),
        "{v}"
    );
    // The server still serves.
    assert_eq!(server.scalar("SELECT count(*) FROM logs").await, 0);
}

/// Appends the next chunk of an SSE response to `stream`.
async fn read_more(stream: &mut String, response: &mut reqwest::Response) {
    let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("tail sent nothing for 10 s")
        .expect("read")
        .expect("stream ended");
    stream.push_str(&String::from_utf8_lossy(&chunk));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tail_streams_only_new_matching_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    send(
        &server,
        &export("checkout", vec![record(0, text("old payment failure"), 17)]),
    )
    .await;
    let mut response = reqwest::Client::new()
        .get(format!("{}/api/v1/logs/tail", server.api()))
        .query(&[("query", "payment severity>=error")])
        .send()
        .await
        .expect("GET /api/v1/logs/tail");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = String::new();
    while !stream.contains("event: ready") {
        read_more(&mut stream, &mut response).await;
    }
    send(
        &server,
        &export(
            "checkout",
            vec![
                record(1, text("new payment declined"), 17),
                record(2, text("payment ok"), 9),
                record(3, text("unrelated error"), 17),
            ],
        ),
    )
    .await;
    while !stream.contains("new payment declined") {
        read_more(&mut stream, &mut response).await;
    }
    send(
        &server,
        &export(
            "checkout",
            vec![record(4, text("second payment timeout"), 18)],
        ),
    )
    .await;
    while !stream.contains("second payment timeout") {
        read_more(&mut stream, &mut response).await;
    }
    let events: Vec<Value> = stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("body").is_some())
        .collect();
    let got: Vec<&str> = events.iter().map(|e| e["body"].as_str().unwrap()).collect();
    assert_eq!(got, ["new payment declined", "second payment timeout"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_log_ingest_loses_nothing_from_search() {
    let dir = tempfile::tempdir().unwrap();
    // Frequent flushes, so the kill can land while a file index is being built.
    let mut server = Server::start(dir.path(), &["--flush-interval", "150ms"]);
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut senders = Vec::new();
    for worker in 0..3u64 {
        let url = format!("{}/v1/logs", server.otlp_http());
        let acked = Arc::clone(&acked);
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 0u64.. {
                let names: Vec<String> = (0..20).map(|i| format!("w{worker}n{n}i{i}")).collect();
                let records = names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        record(n * 20 + i as u64, text(&format!("crash line {name}")), 9)
                    })
                    .collect();
                let body = export("crash", records).encode_to_vec();
                match client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(names),
                    Ok(_) => {}
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    let wait = rand::rng().random_range(400..1500);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    server.kill9();
    for s in senders {
        let _ = s.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "some exports were acknowledged before the kill"
    );

    let server = Server::start(dir.path(), &[]);
    let stored = server.scalar("SELECT count(*) FROM logs").await as u64;
    let v = until_total(&server, "crash", stored).await;
    assert!(v["total"].as_u64().unwrap() >= acked.len() as u64);
    // Every page of the listing: each acknowledged line found, none twice.
    let mut found: Vec<String> = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = get(
            &server,
            &[
                ("query", "crash"),
                ("start", "2025-11-24T00:00:00Z"),
                ("end", "2025-11-26T00:00:00Z"),
                ("limit", "5000"),
                ("cursor", &cursor),
            ],
        )
        .await;
        assert_eq!(status, 200, "{page}");
        for hit in page["hits"].as_array().unwrap() {
            let body = hit["body"].as_str().unwrap();
            found.push(body.trim_start_matches("crash line ").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let unique: HashSet<String> = found.iter().cloned().collect();
    assert_eq!(unique.len(), found.len(), "no line is found twice");
    assert_eq!(found.len() as u64, stored, "search finds what SQL counts");
    let missing: Vec<&String> = acked.difference(&unique).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged lines missing from search after kill -9 at {wait} ms, e.g. {missing:?}",
        acked.difference(&unique).count()
    );
}
