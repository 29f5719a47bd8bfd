//! Traces through the binary: a fixture MSA topology sent over OTLP/HTTP in many exports
//! and across a flush, then the trace view, search, service graph, RED, components and
//! Jaeger's API checked against what was sent; huge traces; bad requests.

use std::collections::{BTreeMap, BTreeSet};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Av};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;
use serde_json::Value;

use crate::support::{Server, otlp::kv, parquet_files};

/// 2025-11-24T16:00:00Z.
const T0: u64 = 1_764_000_000_000_000_000;
const MS: u64 = 1_000_000;
const START: &str = "2025-11-24T15:59:00Z";
const END: &str = "2025-11-24T17:00:00Z";

fn int_kv(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Av::IntValue(v)),
        }),
        ..Default::default()
    }
}

fn trace_id(t: u8) -> Vec<u8> {
    let mut id = vec![0xaa; 16];
    id[15] = t;
    id
}

fn trace_hex(t: u8) -> String {
    trace_id(t).iter().map(|b| format!("{b:02x}")).collect()
}

fn span_id(t: u8, n: u8) -> Vec<u8> {
    vec![t, 0, 0, 0, 0, 0, 0, n]
}

fn span_hex(t: u8, n: u8) -> String {
    span_id(t, n).iter().map(|b| format!("{b:02x}")).collect()
}

/// Kinds as OTLP numbers.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// A span of trace `t` at `base` + `[start, start + dur)` ms.
#[allow(clippy::too_many_arguments)]
fn sp(
    t: u8,
    n: u8,
    parent: Option<u8>,
    name: &str,
    kind: i32,
    base: u64,
    start: u64,
    dur: u64,
    attributes: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: trace_id(t),
        span_id: span_id(t, n),
        parent_span_id: parent.map(|p| span_id(t, p)).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: base + start * MS,
        end_time_unix_nano: base + (start + dur) * MS,
        attributes,
        ..Default::default()
    }
}

fn failed(mut s: Span) -> Span {
    s.status = Some(Status {
        message: "card declined".into(),
        code: 2,
    });
    s
}

/// Resource attributes of each fixture service.
fn resource(service: &str, instance: &str) -> Resource {
    let kind = match service {
        "gateway" => "gateway",
        "cart-envoy" => "mesh-proxy",
        _ => "service",
    };
    Resource {
        attributes: vec![
            kv("service.name", service),
            kv("periscope.component.kind", kind),
            kv("service.instance.id", instance),
            kv("service.version", "1.4.2"),
            kv("host.name", &format!("node-{instance}")),
        ],
        ..Default::default()
    }
}

type Spans = Vec<(&'static str, Span)>;

/// gateway → frontend → {cart-envoy → cart → redis, catalog → postgres, payment → kafka
/// → worker, payment → bank.example ×3 (two failures)}: 18 spans.
fn checkout(t: u8) -> Spans {
    let b = T0 + u64::from(t) * 1_000 * MS;
    let addr = |h: &str| vec![kv("server.address", h)];
    vec![
        (
            "gateway",
            sp(t, 1, None, "GET /checkout", SERVER, b, 0, 100, vec![]),
        ),
        (
            "gateway",
            sp(t, 2, Some(1), "proxy", CLIENT, b, 1, 98, addr("frontend")),
        ),
        (
            "frontend",
            sp(t, 3, Some(2), "POST /checkout", SERVER, b, 2, 95, vec![]),
        ),
        (
            "frontend",
            sp(t, 4, Some(3), "GET cart", CLIENT, b, 3, 20, addr("cart")),
        ),
        (
            "cart-envoy",
            sp(t, 5, Some(4), "ingress", SERVER, b, 4, 18, vec![]),
        ),
        (
            "cart-envoy",
            sp(t, 6, Some(5), "egress", CLIENT, b, 4, 17, addr("cart")),
        ),
        (
            "cart",
            sp(t, 7, Some(6), "GET /cart", SERVER, b, 5, 15, vec![]),
        ),
        (
            "cart",
            sp(
                t,
                8,
                Some(7),
                "HGETALL",
                CLIENT,
                b,
                6,
                2,
                vec![kv("db.system", "redis")],
            ),
        ),
        (
            "frontend",
            sp(
                t,
                9,
                Some(3),
                "GET catalog",
                CLIENT,
                b,
                25,
                20,
                addr("catalog"),
            ),
        ),
        (
            "catalog",
            sp(t, 10, Some(9), "GET /items", SERVER, b, 26, 18, vec![]),
        ),
        (
            "catalog",
            sp(
                t,
                11,
                Some(10),
                "SELECT items",
                CLIENT,
                b,
                27,
                10,
                vec![kv("db.system", "postgresql"), kv("db.name", "catalogdb")],
            ),
        ),
        (
            "frontend",
            sp(
                t,
                12,
                Some(3),
                "POST payment",
                CLIENT,
                b,
                50,
                45,
                addr("payment"),
            ),
        ),
        (
            "payment",
            sp(t, 13, Some(12), "POST /pay", SERVER, b, 51, 43, vec![]),
        ),
        (
            "payment",
            sp(
                t,
                14,
                Some(13),
                "orders publish",
                PRODUCER,
                b,
                52,
                3,
                vec![
                    kv("messaging.system", "kafka"),
                    kv("messaging.destination.name", "orders"),
                ],
            ),
        ),
        (
            "worker",
            sp(
                t,
                15,
                Some(14),
                "orders process",
                CONSUMER,
                b,
                60,
                30,
                vec![
                    kv("messaging.system", "kafka"),
                    kv("messaging.destination.name", "orders"),
                ],
            ),
        ),
        (
            "payment",
            failed(sp(
                t,
                16,
                Some(13),
                "POST /charge",
                CLIENT,
                b,
                56,
                5,
                vec![
                    kv("server.address", "bank.example"),
                    int_kv("http.resend_count", 0),
                ],
            )),
        ),
        (
            "payment",
            failed(sp(
                t,
                17,
                Some(13),
                "POST /charge",
                CLIENT,
                b,
                62,
                5,
                vec![
                    kv("server.address", "bank.example"),
                    int_kv("http.resend_count", 1),
                ],
            )),
        ),
        (
            "payment",
            sp(
                t,
                18,
                Some(13),
                "POST /charge",
                CLIENT,
                b,
                68,
                5,
                vec![
                    kv("server.address", "bank.example"),
                    int_kv("http.resend_count", 2),
                ],
            ),
        ),
    ]
}

/// Adds an event and a link to the root span of trace 1 (flushed to Parquet in the test)
/// and an event to its first payment retry (kept in memory).
fn decorate(spans: &mut Spans) {
    for (_, s) in spans.iter_mut() {
        if s.trace_id == trace_id(1) && s.span_id == span_id(1, 1) {
            s.events.push(span::Event {
                time_unix_nano: s.start_time_unix_nano + 7 * MS,
                name: "auth checked".into(),
                attributes: vec![kv("user.role", "buyer")],
                dropped_attributes_count: 0,
            });
            s.links.push(span::Link {
                trace_id: trace_id(4),
                span_id: span_id(4, 1),
                attributes: vec![kv("link.reason", "same session")],
                ..Default::default()
            });
        }
        if s.trace_id == trace_id(1) && s.span_id == span_id(1, 16) {
            s.events.push(span::Event {
                time_unix_nano: s.start_time_unix_nano + MS,
                name: "exception".into(),
                attributes: vec![kv("exception.type", "CardDeclined")],
                dropped_attributes_count: 0,
            });
        }
    }
}

/// gateway → frontend fanning out to catalog four times in parallel: 11 spans.
fn fan_out(t: u8) -> Spans {
    let b = T0 + u64::from(t) * 1_000 * MS;
    let mut v: Spans = vec![
        (
            "gateway",
            sp(t, 1, None, "GET /search", SERVER, b, 0, 50, vec![]),
        ),
        (
            "gateway",
            sp(
                t,
                2,
                Some(1),
                "proxy",
                CLIENT,
                b,
                1,
                48,
                vec![kv("server.address", "frontend")],
            ),
        ),
        (
            "frontend",
            sp(t, 3, Some(2), "GET /search", SERVER, b, 2, 46, vec![]),
        ),
    ];
    for i in 0..4u8 {
        v.push((
            "frontend",
            sp(
                t,
                4 + i,
                Some(3),
                "GET catalog",
                CLIENT,
                b,
                3,
                10,
                vec![kv("server.address", "catalog")],
            ),
        ));
        v.push((
            "catalog",
            sp(t, 8 + i, Some(4 + i), "GET /items", SERVER, b, 4, 8, vec![]),
        ));
    }
    v
}

/// One export per service of `spans` (so traces arrive in many pieces).
fn exports(spans: Spans) -> Vec<ExportTraceServiceRequest> {
    let mut by: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for (service, s) in spans {
        by.entry(service).or_default().push(s);
    }
    by.into_iter()
        .map(|(service, spans)| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource(service, &format!("{service}-1"))),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        })
        .collect()
}

async fn post(server: &Server, path: &str, body: Vec<u8>) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", server.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

async fn get(server: &Server, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", server.api()))
        .query(params)
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    let body = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}")),
    )
}

async fn ok(server: &Server, path: &str, params: &[(&str, &str)]) -> Value {
    let (status, v) = get(server, path, params).await;
    assert_eq!(status, 200, "{path} {params:?}: {v}");
    v
}

fn window() -> Vec<(&'static str, &'static str)> {
    vec![("start", START), ("end", END)]
}

fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut p = window();
    p.extend_from_slice(extra);
    p
}

fn trace_ids(v: &Value) -> Vec<String> {
    v["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Logs of the worker's second instance and a gauge of cart's second instance, so that
/// the inventory must merge all three signals; two log lines carry trace 1's id.
async fn other_signals(server: &Server) {
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource("worker", "worker-2")),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    LogRecord {
                        time_unix_nano: T0 + 1_070 * MS,
                        severity_number: 17,
                        body: Some(AnyValue {
                            value: Some(Av::StringValue("charge failed, retrying".into())),
                        }),
                        trace_id: trace_id(1),
                        span_id: span_id(1, 16),
                        ..Default::default()
                    },
                    LogRecord {
                        time_unix_nano: T0 + 1_075 * MS,
                        severity_number: 9,
                        body: Some(AnyValue {
                            value: Some(Av::StringValue("charge ok".into())),
                        }),
                        trace_id: trace_id(1),
                        span_id: span_id(1, 18),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    post(server, "/v1/logs", logs.encode_to_vec()).await;
    let legacy = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "legacy"), kv("host.name", "vm-7")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: T0 + 2_000 * MS,
                    body: Some(AnyValue {
                        value: Some(Av::StringValue("cron ran".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    post(server, "/v1/logs", legacy.encode_to_vec()).await;
    let metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource("cart", "cart-2")),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "queue.depth".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: T0 + 9_000 * MS,
                            value: Some(number_data_point::Value::AsInt(3)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    post(server, "/v1/metrics", metrics.encode_to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_topology_through_every_trace_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all: Spans = Vec::new();
    for t in 1..=3 {
        all.extend(checkout(t));
    }
    all.extend(fan_out(4));
    decorate(&mut all);
    let sent = all.len();
    assert_eq!(sent, 3 * 18 + 11);
    // The edge services' spans go first and are flushed to Parquet by a restart; the rest
    // arrive afterwards and stay in memory: every trace spans both.
    let (first, rest): (Spans, Spans) = all
        .into_iter()
        .partition(|(s, _)| matches!(*s, "gateway" | "frontend" | "cart-envoy"));
    let mut server = Server::start(dir.path(), &[]);
    for e in exports(first) {
        post(&server, "/v1/traces", e.encode_to_vec()).await;
    }
    assert!(server.terminate().success());
    assert!(!parquet_files(dir.path()).is_empty(), "the restart flushed");
    let server = Server::start(dir.path(), &[]);
    for e in exports(rest) {
        post(&server, "/v1/traces", e.encode_to_vec()).await;
    }
    other_signals(&server).await;
    let in_files = server
        .scalar("SELECT count(*) FROM spans WHERE service_name = 'gateway'")
        .await;
    assert_eq!(in_files, 8);

    // The trace view: one tree from both halves.
    let t1 = trace_hex(1);
    let v = ok(&server, &format!("/api/v1/traces/{t1}"), &[]).await;
    assert_eq!(v["span_count"], 18, "{v}");
    assert_eq!(v["error_count"], 2);
    assert_eq!(v["roots"], serde_json::json!([span_hex(1, 1)]));
    assert_eq!(v["orphans"], serde_json::json!([]));
    assert_eq!(v["root_service"], "gateway");
    assert_eq!(v["root_name"], "GET /checkout");
    assert_eq!(v["duration_ns"], 100 * MS);
    assert_eq!(v["start_time"], "2025-11-24T16:00:01.000000000Z");
    assert_eq!(v["services"].as_array().map(Vec::len), Some(7));
    let spans = v["spans"].as_array().expect("spans");
    let order: Vec<(String, u64)> = spans
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["depth"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(order[0], ("GET /checkout".to_string(), 0));
    assert_eq!(order[7], ("HGETALL".to_string(), 7), "{order:?}");
    let charge = spans
        .iter()
        .find(|s| s["span_id"] == span_hex(1, 17))
        .expect("retry span");
    assert_eq!(charge["attributes"]["http.resend_count"], 1, "typed int");
    assert_eq!(charge["status_code"], "error");
    assert_eq!(charge["status_message"], "card declined");
    assert_eq!(charge["kind"], "client");
    assert_eq!(charge["service_name"], "payment");
    assert_eq!(charge["start_offset_ns"], 62 * MS);
    assert_eq!(charge["duration_ns"], 5 * MS);
    assert_eq!(charge["parent_span_id"], span_hex(1, 13));
    assert_eq!(
        charge["resource_attributes"]["service.instance.id"],
        "payment-1"
    );
    // Events and links, from a flushed span and from one still in memory.
    let root = &spans[0];
    assert_eq!(root["events"][0]["name"], "auth checked");
    assert_eq!(root["events"][0]["offset_ns"], 7 * MS);
    assert_eq!(root["events"][0]["attributes"]["user.role"], "buyer");
    assert_eq!(root["links"][0]["trace_id"], trace_hex(4));
    assert_eq!(root["links"][0]["span_id"], span_hex(4, 1));
    assert_eq!(
        root["links"][0]["attributes"]["link.reason"],
        "same session"
    );
    let retry = spans
        .iter()
        .find(|s| s["span_id"] == span_hex(1, 16))
        .expect("first retry");
    assert_eq!(retry["events"][0]["name"], "exception");
    assert_eq!(retry["events"][0]["time"], "2025-11-24T16:00:01.057000000Z");
    let logs = v["logs"].as_array().expect("logs");
    assert_eq!(logs.len(), 2, "{v}");
    assert_eq!(logs[0]["body"], "charge failed, retrying");
    assert_eq!(logs[0]["span_id"], span_hex(1, 16));

    // The service graph: exact edges, counts and node kinds.
    let g = ok(&server, "/api/v1/service-graph", &window()).await;
    let edges: BTreeSet<(String, String, u64, u64)> = g["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap_or_default().to_string(),
                e["target"].as_str().unwrap_or_default().to_string(),
                e["calls"].as_u64().unwrap_or(0),
                e["errors"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, u64, u64)> = [
        ("gateway", "frontend", 4, 0),
        ("frontend", "cart-envoy", 3, 0),
        ("cart-envoy", "cart", 3, 0),
        ("cart", "database:redis", 3, 0),
        ("frontend", "catalog", 7, 0),
        ("catalog", "database:catalogdb", 3, 0),
        ("frontend", "payment", 3, 0),
        ("payment", "messaging:orders", 3, 0),
        ("messaging:orders", "worker", 3, 0),
        ("payment", "external:bank.example", 9, 6),
    ]
    .into_iter()
    .map(|(a, b, c, e)| (a.to_string(), b.to_string(), c, e))
    .collect();
    assert_eq!(edges, expected, "{g}");
    let nodes: BTreeMap<String, (String, u64)> = g["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap_or_default().to_string(),
                (
                    n["kind"].as_str().unwrap_or_default().to_string(),
                    n["requests"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect();
    let expected_nodes: BTreeMap<String, (String, u64)> = [
        ("gateway", "gateway", 4),
        ("frontend", "service", 4),
        ("cart-envoy", "mesh-proxy", 3),
        ("cart", "service", 3),
        ("catalog", "service", 7),
        ("payment", "service", 3),
        ("worker", "service", 3),
        ("database:redis", "database", 3),
        ("database:catalogdb", "database", 3),
        ("messaging:orders", "messaging", 3),
        ("external:bank.example", "external", 9),
    ]
    .into_iter()
    .map(|(id, k, r)| (id.to_string(), (k.to_string(), r)))
    .collect();
    assert_eq!(nodes, expected_nodes, "{g}");
    let bank = g["edges"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["target"] == "external:bank.example"))
        .expect("bank edge");
    // Percentiles come from buckets 1% wide.
    let near = |v: &serde_json::Value, want: f64| {
        v.as_f64()
            .is_some_and(|got| (got - want).abs() <= want * 0.01)
    };
    assert!(near(&bank["p50_ms"], 5.0), "{bank}");
    assert!(near(&bank["p99_ms"], 5.0), "{bank}");

    // Search.
    let found = ok(&server, "/api/v1/traces", &with(&[("service", "payment")])).await;
    assert_eq!(
        trace_ids(&found),
        vec![trace_hex(3), trace_hex(2), trace_hex(1)]
    );
    let first = &found["traces"][0];
    assert_eq!(first["root_service"], "gateway");
    assert_eq!(first["root_name"], "GET /checkout");
    assert_eq!(first["span_count"], 18);
    assert_eq!(first["error_count"], 2);
    assert_eq!(first["duration_ns"], 100 * MS);
    assert_eq!(first["start_time"], "2025-11-24T16:00:03.000000000Z");
    assert_eq!(
        first["services"],
        serde_json::json!([
            "cart",
            "cart-envoy",
            "catalog",
            "frontend",
            "gateway",
            "payment",
            "worker"
        ])
    );
    let n = |v: &Value| trace_ids(v).len();
    assert_eq!(
        n(&ok(&server, "/api/v1/traces", &with(&[("service", "catalog")])).await),
        4
    );
    assert_eq!(
        n(&ok(&server, "/api/v1/traces", &with(&[("status", "error")])).await),
        3
    );
    assert_eq!(
        n(&ok(
            &server,
            "/api/v1/traces",
            &with(&[("service", "catalog"), ("status", "error")])
        )
        .await),
        3
    );
    assert_eq!(
        trace_ids(
            &ok(
                &server,
                "/api/v1/traces",
                &with(&[("max_duration", "0.06s")])
            )
            .await
        ),
        vec![trace_hex(4)]
    );
    assert_eq!(
        n(&ok(
            &server,
            "/api/v1/traces",
            &with(&[("min_duration", "60ms")])
        )
        .await),
        3
    );
    assert_eq!(
        n(&ok(
            &server,
            "/api/v1/traces",
            &with(&[("min_duration", "1.5s")])
        )
        .await),
        0
    );
    assert_eq!(
        n(&ok(
            &server,
            "/api/v1/traces",
            &with(&[("attributes", "http.resend_count=2")])
        )
        .await),
        3
    );
    assert_eq!(
        n(&ok(
            &server,
            "/api/v1/traces",
            &with(&[
                ("attributes", "http.resend_count=2"),
                ("attributes", "server.address=nowhere")
            ])
        )
        .await),
        0
    );
    assert_eq!(
        trace_ids(
            &ok(
                &server,
                "/api/v1/traces",
                &with(&[("operation", "GET /search")])
            )
            .await
        ),
        vec![trace_hex(4)]
    );
    assert_eq!(
        n(&ok(
            &server,
            "/api/v1/traces",
            &with(&[("span_kind", "consumer")])
        )
        .await),
        3
    );
    let errors_recent = ok(
        &server,
        "/api/v1/traces",
        &with(&[("status", "error"), ("min_duration", "1ms"), ("limit", "1")]),
    )
    .await;
    assert_eq!(trace_ids(&errors_recent), vec![trace_hex(3)]);
    assert_eq!(
        trace_ids(&ok(&server, "/api/v1/traces", &with(&[("limit", "2")])).await),
        vec![trace_hex(4), trace_hex(3)]
    );

    // RED.
    let s = ok(&server, "/api/v1/services", &window()).await;
    let red: BTreeMap<String, (u64, u64)> = s["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|r| {
            (
                r["service_name"].as_str().unwrap_or_default().to_string(),
                (
                    r["requests"].as_u64().unwrap_or(0),
                    r["errors"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect();
    assert_eq!(red["catalog"], (7, 0));
    assert_eq!(red["gateway"], (4, 0));
    assert_eq!(red["worker"], (3, 0));
    assert_eq!(red.len(), 7);
    let pay = s["services"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["service_name"] == "payment"))
        .expect("payment");
    let p50 = pay["p50_ms"].as_f64().unwrap_or(0.0);
    assert!((p50 - 43.0).abs() <= 0.43, "within 1%: {pay}");
    let ops = ok(&server, "/api/v1/services/payment/operations", &window()).await;
    assert_eq!(ops["operations"].as_array().map(Vec::len), Some(1), "{ops}");
    assert_eq!(ops["operations"][0]["operation"], "POST /pay");
    assert_eq!(ops["operations"][0]["requests"], 3);
    let ops = ok(
        &server,
        "/api/v1/services/payment/operations",
        &with(&[("span_kind", "client")]),
    )
    .await;
    assert_eq!(ops["operations"][0]["operation"], "POST /charge");
    assert_eq!(ops["operations"][0]["requests"], 9);
    assert_eq!(ops["operations"][0]["errors"], 6);

    // Components across the three signals.
    let c = ok(&server, "/api/v1/components", &window()).await;
    let comp = |name: &str| {
        c["components"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {c}"))
    };
    assert_eq!(comp("gateway")["kind"], "gateway");
    assert_eq!(comp("cart-envoy")["kind"], "mesh-proxy");
    assert_eq!(comp("gateway")["instance_count"], 1);
    assert_eq!(comp("gateway")["red"]["requests"], 4);
    let worker = comp("worker");
    assert_eq!(worker["instance_count"], 2, "{worker}");
    assert_eq!(worker["instances"][1]["instance_id"], "worker-2");
    assert_eq!(
        worker["instances"][1]["signals"],
        serde_json::json!(["logs"])
    );
    assert_eq!(
        worker["instances"][1]["last_seen"],
        "2025-11-24T16:00:01.075000000Z"
    );
    let cart = comp("cart");
    assert_eq!(cart["instance_count"], 2);
    assert_eq!(cart["instances"][1]["instance_id"], "cart-2");
    assert_eq!(cart["instances"][1]["version"], "1.4.2");
    assert_eq!(cart["instances"][1]["host"], "node-cart-2");
    assert_eq!(cart["last_seen"], "2025-11-24T16:00:09.000000000Z");
    let legacy = comp("legacy");
    assert_eq!(legacy["kind"], "service");
    assert_eq!(legacy["instances"][0]["instance_id"], "vm-7");
    assert_eq!(legacy["instances"][0]["version"], Value::Null);
    assert_eq!(legacy["red"]["requests"], 0);
    let peers: BTreeSet<(String, String)> = c["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap_or_default().to_string(),
                p["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        peers.contains(&("database".into(), "redis".into())),
        "{peers:?}"
    );
    assert!(peers.contains(&("database".into(), "catalogdb".into())));
    assert!(peers.contains(&("messaging".into(), "orders".into())));
    assert!(peers.contains(&("external".into(), "bank.example".into())));
    assert_eq!(peers.len(), 4);

    jaeger_api(&server).await;
    bad_requests(&server).await;
}

async fn jaeger_api(server: &Server) {
    let services = ok(server, "/api/services", &[]).await;
    assert_eq!(
        services["data"],
        serde_json::json!([
            "cart",
            "cart-envoy",
            "catalog",
            "frontend",
            "gateway",
            "payment",
            "worker"
        ])
    );
    assert_eq!(services["total"], 7);
    assert_eq!(services["errors"], Value::Null);
    let ops = ok(server, "/api/services/payment/operations", &[]).await;
    let names: BTreeSet<&str> = ops["data"]
        .as_array()
        .expect("ops")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["POST /charge", "POST /pay", "orders publish"])
    );
    let ops = ok(
        server,
        "/api/operations",
        &[("service", "payment"), ("spanKind", "client")],
    )
    .await;
    assert_eq!(
        ops["data"],
        serde_json::json!([{"name": "POST /charge", "spanKind": "client"}])
    );

    let t1 = trace_hex(1);
    let v = ok(server, &format!("/api/traces/{t1}"), &[]).await;
    let trace = &v["data"][0];
    assert_eq!(trace["traceID"], t1);
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 18);
    assert_eq!(trace["processes"].as_object().map(|p| p.len()), Some(7));
    let by_id = |id: String| {
        spans
            .iter()
            .find(|s| s["spanID"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("span {id}"))
    };
    let root = by_id(span_hex(1, 1));
    assert_eq!(root["operationName"], "GET /checkout");
    assert_eq!(
        root["references"],
        serde_json::json!([{"refType": "FOLLOWS_FROM", "traceID": trace_hex(4), "spanID": span_hex(4, 1)}])
    );
    assert_eq!(
        root["logs"][0]["fields"][0],
        serde_json::json!({"key": "event", "type": "string", "value": "auth checked"})
    );
    assert_eq!(root["logs"][0]["timestamp"], (T0 + 1_007 * MS) / 1_000);
    assert_eq!(root["startTime"], (T0 + 1_000 * MS) / 1_000);
    assert_eq!(root["duration"], 100_000);
    let pid = root["processID"].as_str().expect("processID");
    assert_eq!(trace["processes"][pid]["serviceName"], "gateway");
    let tags = trace["processes"][pid]["tags"]
        .as_array()
        .expect("process tags");
    assert!(
        tags.iter()
            .any(|t| t["key"] == "service.instance.id" && t["value"] == "gateway-1")
    );
    let charge = by_id(span_hex(1, 16));
    assert_eq!(
        charge["references"],
        serde_json::json!([{"refType": "CHILD_OF", "traceID": t1, "spanID": span_hex(1, 13)}])
    );
    assert_eq!(charge["startTime"], (T0 + 1_056 * MS) / 1_000);
    assert_eq!(charge["duration"], 5_000);
    let tag = |s: &Value, k: &str| {
        s["tags"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["key"] == k))
            .map(|t| (t["type"].clone(), t["value"].clone()))
    };
    assert_eq!(tag(&charge, "error"), Some(("bool".into(), true.into())));
    assert_eq!(
        tag(&charge, "span.kind"),
        Some(("string".into(), "client".into()))
    );
    assert_eq!(
        tag(&charge, "otel.status_code"),
        Some(("string".into(), "ERROR".into()))
    );
    assert_eq!(
        tag(&charge, "otel.status_description"),
        Some(("string".into(), "card declined".into()))
    );
    assert_eq!(
        tag(&charge, "http.resend_count"),
        Some(("int64".into(), 0.into()))
    );
    assert_eq!(
        tag(&by_id(span_hex(1, 15)), "span.kind"),
        Some(("string".into(), "consumer".into()))
    );

    let start_us = ((T0 - 60_000 * MS) / 1_000).to_string();
    let end_us = ((T0 + 3_600_000 * MS) / 1_000).to_string();
    let search = |extra: Vec<(&'static str, String)>| {
        let mut p: Vec<(&str, String)> = vec![("start", start_us.clone()), ("end", end_us.clone())];
        p.extend(extra);
        p
    };
    let count = |v: &Value| v["data"].as_array().map_or(0, Vec::len);
    let q = search(vec![
        ("service", "payment".into()),
        ("tags", r#"{"http.resend_count":"2"}"#.into()),
    ]);
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let found = ok(server, "/api/traces", &q).await;
    assert_eq!(count(&found), 3, "{found}");
    assert_eq!(found["data"][0]["spans"].as_array().map(Vec::len), Some(18));
    for (extra, expect) in [
        (vec![("service", "payment"), ("minDuration", "40ms")], 3),
        (vec![("service", "payment"), ("minDuration", "50ms")], 0),
        (
            vec![("service", "payment"), ("tags", r#"{"error":"true"}"#)],
            3,
        ),
        (
            vec![("service", "frontend"), ("tags", r#"{"error":"true"}"#)],
            0,
        ),
        (
            vec![
                ("service", "catalog"),
                ("operation", "GET /items"),
                ("limit", "2"),
            ],
            2,
        ),
        (
            vec![
                ("service", "payment"),
                ("tag", "server.address:bank.example"),
            ],
            3,
        ),
    ] {
        let mut p: Vec<(&str, &str)> = vec![("start", &start_us), ("end", &end_us)];
        p.extend(extra.iter().copied());
        assert_eq!(
            count(&ok(server, "/api/traces", &p).await),
            expect,
            "{extra:?}"
        );
    }
    let by_ids = ok(
        server,
        "/api/traces",
        &[("traceID", t1.as_str()), ("traceID", &trace_hex(4))],
    )
    .await;
    assert_eq!(count(&by_ids), 2);

    let end_ms = ((T0 + 3_600_000 * MS) / 1_000_000).to_string();
    let deps = ok(
        server,
        "/api/dependencies",
        &[("endTs", end_ms.as_str()), ("lookback", "7200000")],
    )
    .await;
    let links: BTreeSet<(String, String, u64)> = deps["data"]
        .as_array()
        .expect("deps")
        .iter()
        .map(|d| {
            (
                d["parent"].as_str().unwrap_or_default().to_string(),
                d["child"].as_str().unwrap_or_default().to_string(),
                d["callCount"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        links.contains(&("gateway".into(), "frontend".into(), 4)),
        "{links:?}"
    );
    assert!(links.contains(&("payment".into(), "bank.example".into(), 9)));
    assert!(links.contains(&("orders".into(), "worker".into(), 3)));
    assert_eq!(links.len(), 10);

    let (status, v) = get(server, &format!("/api/traces/{}", "f".repeat(32)), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(v["errors"][0]["code"], 404);
    assert_eq!(v["data"], Value::Null);
    let (status, v) = get(server, "/api/traces/not-a-trace", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(v["errors"][0]["code"], 400);
    let (status, v) = get(server, "/api/traces", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(v["errors"][0]["msg"], "parameter 'service' is required");
    let (status, _) = get(
        server,
        "/api/traces",
        &[("service", "x"), ("minDuration", "fast")],
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = get(
        server,
        "/api/traces",
        &[("service", "x"), ("tags", "{nope")],
    )
    .await;
    assert_eq!(status, 400);
    let (status, v) = get(
        server,
        "/api/traces",
        &[("service", "x"), ("start", "2000"), ("end", "1000")],
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let missing = "f".repeat(32);
    let v = ok(
        server,
        "/api/traces",
        &[("traceID", t1.as_str()), ("traceID", missing.as_str())],
    )
    .await;
    assert_eq!(count(&v), 1);
    assert_eq!(v["errors"][0]["traceID"], missing);
    assert_eq!(v["errors"][0]["msg"], "trace not found");
}

async fn bad_requests(server: &Server) {
    for (path, params, status) in [
        ("/api/v1/traces/xyz", vec![], 400),
        ("/api/v1/traces/abc", vec![], 400),
        (
            "/api/v1/traces/00000000000000000000000000000000",
            vec![],
            400,
        ),
        ("/api/v1/traces/%FF%FE", vec![], 400),
        (
            "/api/v1/traces/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa01",
            vec![("span_limit", "0")],
            400,
        ),
        (
            "/api/v1/traces/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa01/spans/zz",
            vec![],
            400,
        ),
        (
            "/api/v1/traces/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa01/spans/00000000000000ff",
            vec![],
            404,
        ),
        (
            "/api/v1/traces/0123456789abcdef0123456789abcdefff",
            vec![],
            400,
        ),
        (
            "/api/v1/traces/0123456789abcdef0123456789abcdef",
            vec![],
            404,
        ),
        (
            "/api/v1/traces",
            vec![("start", "now"), ("end", "now-1h")],
            400,
        ),
        ("/api/v1/traces", vec![("min_duration", "fast")], 400),
        ("/api/v1/traces", vec![("status", "maybe")], 400),
        ("/api/v1/traces", vec![("attributes", "novalue")], 400),
        ("/api/v1/traces", vec![("limit", "-1")], 400),
        ("/api/v1/traces", vec![("limit", "0")], 400),
        (
            "/api/v1/service-graph",
            vec![("start", "now"), ("end", "now-1h")],
            400,
        ),
        ("/api/v1/services", vec![("start", "yesterday")], 400),
        (
            "/api/v1/components",
            vec![("start", "now"), ("end", "now-1d")],
            400,
        ),
        (
            "/api/v1/services/x/operations",
            vec![("span_kind", "weird")],
            400,
        ),
    ] {
        let (got, v) = get(server, path, &params).await;
        assert_eq!(got, status, "{path} {params:?}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    // Nothing stored was harmed.
    assert_eq!(server.scalar("SELECT count(*) FROM spans").await, 65);
    assert_eq!(server.scalar("SELECT count(*) FROM logs").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_traces_orphans_and_skew_stay_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    const N: u32 = 100_000;
    let t = 9u8;
    let id = |n: u32| {
        let mut v = vec![0x77; 8];
        v[4..].copy_from_slice(&n.to_be_bytes());
        v
    };
    let big = "x".repeat(1 << 20);
    for chunk in 0..10u32 {
        let spans: Vec<Span> = (chunk * N / 10..(chunk + 1) * N / 10)
            .map(|n| Span {
                trace_id: trace_id(t),
                span_id: id(n + 1),
                parent_span_id: if n == 0 { vec![] } else { id(1) },
                name: format!("step {n}"),
                kind: 1,
                start_time_unix_nano: T0 + u64::from(n) * 1_000,
                end_time_unix_nano: T0 + u64::from(n) * 1_000 + 500,
                attributes: if n == 5 {
                    vec![kv("payload", &big)]
                } else {
                    vec![]
                },
                ..Default::default()
            })
            .collect();
        let e = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource("batch", "batch-1")),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        };
        post(&server, "/v1/traces", e.encode_to_vec()).await;
    }
    let path = format!("/api/v1/traces/{}", trace_hex(t));
    let v = ok(&server, &path, &[]).await;
    assert_eq!(v["span_count"], N);
    assert_eq!(v["spans"].as_array().map(Vec::len), Some(10_000));
    assert_eq!(v["next_span_offset"], 10_000);
    let big_span = &v["spans"][5];
    assert_eq!(big_span["name"], "step 5");
    assert_eq!(
        big_span["truncated_attributes"],
        serde_json::json!(["payload"])
    );
    assert_eq!(
        big_span["attributes"]["payload"].as_str().map(str::len),
        Some(64 * 1024)
    );
    let last = ok(
        &server,
        &path,
        &[("span_offset", "99990"), ("span_limit", "100")],
    )
    .await;
    assert_eq!(last["spans"].as_array().map(Vec::len), Some(10));
    assert_eq!(last["next_span_offset"], Value::Null);
    assert_eq!(last["spans"][9]["name"], format!("step {}", N - 1));
    let whole = ok(
        &server,
        &format!(
            "{path}/spans/{}",
            id(6).iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        &[],
    )
    .await;
    assert_eq!(
        whole["attributes"]["payload"].as_str().map(str::len),
        Some(1 << 20)
    );
    assert!(whole.get("truncated_attributes").is_none());
    let all = ok(&server, &path, &[("span_limit", "100000")]).await;
    assert_eq!(all["spans"].as_array().map(Vec::len), Some(N as usize));
    let (status, _) = get(&server, &path, &[("span_limit", "100001")]).await;
    assert_eq!(status, 400);
    // The same after a flush to Parquet.
    let mut server = server;
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), &[]);
    let v = ok(&server, &path, &[("span_offset", "99999")]).await;
    assert_eq!(v["span_count"], N);
    assert_eq!(v["spans"][0]["name"], format!("step {}", N - 1));
    let whole = ok(
        &server,
        &format!(
            "{path}/spans/{}",
            id(6).iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        &[],
    )
    .await;
    assert_eq!(whole["attributes"]["payload"].as_str(), Some(big.as_str()));

    // Orphans and clock skew: `cart` claims to start before its parent on `frontend`.
    let b = T0 + 50_000 * MS;
    let mut front = sp(8, 1, None, "GET /", SERVER, b, 0, 100, vec![]);
    front.kind = SERVER;
    let skewed = sp(
        8,
        2,
        Some(1),
        "GET /cart",
        SERVER,
        b - 30 * MS,
        0,
        40,
        vec![],
    );
    let orphan = sp(8, 3, Some(42), "late", SERVER, b, 10, 5, vec![]);
    let mut reqs = exports(vec![
        ("frontend", front),
        ("cart", skewed),
        ("cart", orphan),
    ]);
    for e in reqs.drain(..) {
        post(&server, "/v1/traces", e.encode_to_vec()).await;
    }
    let v = ok(&server, &format!("/api/v1/traces/{}", trace_hex(8)), &[]).await;
    assert_eq!(v["orphans"], serde_json::json!([span_hex(8, 3)]), "{v}");
    let names: Vec<(&str, bool, bool, i64)> = v["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default(),
                s["orphan"].as_bool().unwrap_or(false),
                s["clock_skew"].as_bool().unwrap_or(false),
                s["clock_skew_ns"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("GET /", false, false, 0),
            ("GET /cart", false, true, (60 * MS) as i64),
            ("late", true, false, 0),
        ]
    );
    assert!(
        v["warnings"].as_array().is_some_and(|w| w.len() == 2),
        "{v}"
    );
    // Jaeger's API applies the shift, as Jaeger's query service does, unless raw=true.
    let jpath = format!("/api/traces/{}", trace_hex(8));
    let cart_start = |v: &Value| {
        let span = v["data"][0]["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["operationName"] == "GET /cart"))
            .cloned()
            .expect("cart span");
        (
            span["startTime"].as_u64().unwrap_or(0),
            span["warnings"].clone(),
        )
    };
    let (adjusted, warnings) = cart_start(&ok(&server, &jpath, &[]).await);
    assert_eq!(adjusted, (b + 30 * MS) / 1_000);
    assert_eq!(
        warnings,
        serde_json::json!(["This span's timestamps were adjusted by 60ms"])
    );
    let (raw, warnings) = cart_start(&ok(&server, &jpath, &[("raw", "true")]).await);
    assert_eq!(raw, (b - 30 * MS) / 1_000);
    assert_eq!(warnings, Value::Null);

    // The service graph reads per-minute span aggregates, not an index of every span:
    // under a 2 MiB query memory limit it answers the same.
    let before = ok(&server, "/api/v1/service-graph", &window()).await;
    let mut server = server;
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), &["--query-memory-limit", "2MiB"]);
    let (status, v) = get(&server, "/api/v1/service-graph", &window()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["edges"], before["edges"], "{v}");
    assert_eq!(v["nodes"], before["nodes"], "{v}");
    let v = ok(&server, &format!("/api/v1/traces/{}", trace_hex(8)), &[]).await;
    assert_eq!(v["span_count"], 3);
}
