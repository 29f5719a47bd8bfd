//! Search against a brute-force scan: generated logs in a real store (WAL, head index,
//! Parquet files and their indexes), many queries, every page compared with what a scan
//! of the same rows finds.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Av};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use periscope_otlp as otlp;
use periscope_storage::logindex::tokenize;
use periscope_storage::{Signal, Store, StoreConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::exec::{Cursor, SearchRequest, search};
use super::syntax::{self, CmpOp, Expr, Field, MatchKind};

const T0: i64 = 1_764_000_000_000_000_000;
const WORDS: [&str; 16] = [
    "timeout",
    "connection",
    "refused",
    "payment",
    "declined",
    "user",
    "cart",
    "checkout",
    "결제실패",
    "데이터베이스",
    "支付失败",
    "ログイン",
    "retry",
    "🚀",
    "upstream",
    "E1234",
];
const SERVICES: [&str; 4] = ["checkout", "cart", "Payments", "gateway"];
const ROUTES: [&str; 4] = ["/cart", "/cart/items", "/checkout", "/api/v1/pay"];

/// One generated log line, as the oracle sees it.
#[derive(Debug, Clone)]
struct Line {
    id: u64,
    ts: i64,
    service: String,
    severity: i32,
    body: String,
    trace_id: Option<String>,
    route: String,
    pod: String,
}

fn kv(key: &str, value: Av) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn generate(rng: &mut StdRng, n: usize, first_id: u64) -> Vec<Line> {
    (0..n)
        .map(|i| {
            let words: Vec<&str> = (0..rng.random_range(1..7))
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect();
            let mut body = words.join(" ");
            if rng.random_bool(0.3) {
                body.push_str(&format!(" user_id={}", rng.random_range(0..5)));
            }
            Line {
                id: first_id + i as u64,
                // Few distinct times, so that ties on the timestamp are common.
                ts: T0 + rng.random_range(0..40) * 60_000_000_000,
                service: SERVICES[rng.random_range(0..SERVICES.len())].into(),
                severity: rng.random_range(1..25),
                body,
                trace_id: rng
                    .random_bool(0.5)
                    .then(|| format!("{:032x}", rng.random_range(1..5u32))),
                route: ROUTES[rng.random_range(0..ROUTES.len())].into(),
                pod: format!("web-{}", rng.random_range(0..3)),
            }
        })
        .collect()
}

fn request(lines: &[Line]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: lines
            .iter()
            .map(|l| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", Av::StringValue(l.service.clone())),
                        kv("k8s.pod.name", Av::StringValue(l.pod.clone())),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: l.ts as u64,
                        severity_number: l.severity,
                        body: Some(AnyValue {
                            value: Some(Av::StringValue(l.body.clone())),
                        }),
                        trace_id: l
                            .trace_id
                            .as_ref()
                            .map(|t| hex_bytes(t))
                            .unwrap_or_default(),
                        span_id: if l.trace_id.is_some() {
                            vec![1; 8]
                        } else {
                            vec![]
                        },
                        attributes: vec![kv("http.route", Av::StringValue(l.route.clone()))],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

fn contains_tokens(haystack: &[String], needle: &[String], prefix: bool) -> bool {
    if needle.is_empty() {
        return true;
    }
    let n = needle.len();
    haystack.windows(n).any(|w| {
        w[..n - 1] == needle[..n - 1]
            && if prefix {
                w[n - 1].starts_with(needle[n - 1].as_str())
            } else {
                w[n - 1] == needle[n - 1]
            }
    })
}

fn text_matches(value: &str, text: &str, kind: MatchKind) -> bool {
    contains_tokens(&tokenize(value), &tokenize(text), kind == MatchKind::Prefix)
}

fn exact_matches(value: &str, text: &str, kind: MatchKind) -> bool {
    let (v, t) = (value.to_lowercase(), text.to_lowercase());
    if kind == MatchKind::Prefix {
        v.starts_with(&t)
    } else {
        v == t
    }
}

/// The oracle: does `expr` match `line`?
fn matches(expr: &Expr, line: &Line) -> bool {
    match expr {
        Expr::All => true,
        Expr::And(parts) => parts.iter().all(|p| matches(p, line)),
        Expr::Or(parts) => parts.iter().any(|p| matches(p, line)),
        Expr::Not(inner) => !matches(inner, line),
        Expr::Severity { op, number } => match op {
            CmpOp::Eq => line.severity == *number,
            CmpOp::Gt => line.severity > *number,
            CmpOp::Ge => line.severity >= *number,
            CmpOp::Lt => line.severity < *number,
            CmpOp::Le => line.severity <= *number,
        },
        Expr::Match { field, text, kind } => match field {
            Field::Body => text_matches(&line.body, text, *kind),
            Field::Service => exact_matches(&line.service, text, *kind),
            Field::TraceId => line
                .trace_id
                .as_ref()
                .is_some_and(|t| exact_matches(t, text, *kind)),
            Field::SpanId => {
                line.trace_id.is_some() && exact_matches("0101010101010101", text, *kind)
            }
            Field::SeverityText => false,
            Field::Attribute(key) if key == "http.route" => text_matches(&line.route, text, *kind),
            Field::Attribute(key) | Field::ResourceAttribute(key) if key == "k8s.pod.name" => {
                text_matches(&line.pod, text, *kind)
            }
            Field::Attribute(key) | Field::ResourceAttribute(key) if key == "service.name" => {
                text_matches(&line.service, text, *kind)
            }
            Field::Attribute(_) | Field::ResourceAttribute(_) => false,
        },
    }
}

fn random_query(rng: &mut StdRng) -> String {
    let term = |rng: &mut StdRng| -> String {
        match rng.random_range(0..12) {
            0 => format!(
                "\"{} {}\"",
                WORDS[rng.random_range(0..WORDS.len())],
                WORDS[rng.random_range(0..WORDS.len())]
            ),
            1 => format!("{}*", &WORDS[rng.random_range(0..8)][..3]),
            2 => format!(
                "service:{}",
                SERVICES[rng.random_range(0..SERVICES.len())].to_uppercase()
            ),
            3 => [
                "severity>=warn",
                "severity<info",
                "severity:error",
                "severity>=17",
            ][rng.random_range(0..4)]
            .into(),
            4 => format!(
                "attributes.http.route:\"{}\"",
                ROUTES[rng.random_range(0..ROUTES.len())]
            ),
            5 => format!("resource.k8s.pod.name:web-{}", rng.random_range(0..3)),
            6 => format!("trace_id:{:032x}", rng.random_range(1..5u32)),
            7 => format!("user_id={}", rng.random_range(0..5)),
            8 => "결제".into(),
            _ => WORDS[rng.random_range(0..WORDS.len())].to_uppercase(),
        }
    };
    match rng.random_range(0..6) {
        0 => term(rng),
        1 => format!("{} {}", term(rng), term(rng)),
        2 => format!("{} OR {}", term(rng), term(rng)),
        3 => format!("{} NOT {}", term(rng), term(rng)),
        4 => format!("({} OR {}) AND -{}", term(rng), term(rng), term(rng)),
        _ => format!("NOT ({} {})", term(rng), term(rng)),
    }
}

/// Every page of a search, following cursors; `between` runs after the first page.
async fn all_pages(
    store: &Store,
    expr: &Expr,
    start: i64,
    end: i64,
    limit: usize,
    between: Option<&Store>,
) -> (Vec<u64>, u64) {
    let mut ids = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut total = None;
    for page in 0.. {
        let req = SearchRequest {
            expr: expr.clone(),
            start,
            end,
            limit,
            cursor,
            buckets: 10,
        };
        let result = search(store, &req).expect("search");
        assert_eq!(
            result.histogram.iter().map(|h| h.1).sum::<u64>(),
            result.total,
            "histogram sums to total"
        );
        if let Some(t) = total {
            assert_eq!(t, result.total, "total stays the same across pages");
        }
        total = Some(result.total);
        for hit in &result.hits {
            ids.push(hit["log_id"].as_u64().expect("log_id"));
        }
        if page == 0
            && let Some(s) = between
        {
            s.flush().await.expect("flush");
        }
        match result.next_cursor {
            Some(c) => cursor = Some(Cursor::decode(&c).expect("cursor")),
            None => break,
        }
    }
    (ids, total.unwrap_or(0))
}

fn expected(lines: &[Line], expr: &Expr, start: i64, end: i64) -> Vec<u64> {
    let mut hits: Vec<&Line> = lines
        .iter()
        .filter(|l| l.ts >= start && l.ts < end && matches(expr, l))
        .collect();
    hits.sort_by_key(|h| std::cmp::Reverse((h.ts, h.id)));
    hits.iter().map(|l| l.id).collect()
}

async fn wait_indexed(store: &Store, n: u64) {
    for _ in 0..200 {
        let req = SearchRequest {
            expr: Expr::All,
            start: i64::MIN,
            end: i64::MAX,
            limit: 0,
            cursor: None,
            buckets: 1,
        };
        if search(store, &req).expect("search").total == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let req = SearchRequest {
        expr: Expr::All,
        start: i64::MIN,
        end: i64::MAX,
        limit: 0,
        cursor: None,
        buckets: 1,
    };
    panic!(
        "the head index never reached {n} rows: {}",
        search(store, &req).expect("search").total
    );
}

async fn append(store: &Store, lines: &[Line]) {
    for chunk in lines.chunks(50) {
        let converted = otlp::logs(&request(chunk), T0).expect("convert");
        assert_eq!(
            converted.accepted as usize,
            chunk.len(),
            "{:?}",
            converted.error
        );
        store
            .append(Signal::Logs, converted.batch.expect("rows"))
            .await
            .expect("append");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_a_brute_force_scan_across_flushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open");
    let mut rng = StdRng::seed_from_u64(7);
    let mut lines = generate(&mut rng, 600, 0);
    append(&store, &lines).await;
    store.flush().await.expect("flush");
    let more = generate(&mut rng, 400, 600);
    append(&store, &more).await;
    lines.extend(more);
    wait_indexed(&store, 1000).await;

    let mut queries: Vec<String> = [
        "timeout",
        "TIMEOUT connection",
        "\"connection refused\"",
        "timeout OR 결제실패",
        "timeout -retry",
        "NOT timeout",
        "(cart OR checkout) AND NOT payment",
        "service:checkout",
        "service:payments severity>=warn",
        "attributes.http.route:\"/cart\"",
        "attributes.k8s.pod.name:web-1",
        "resource.k8s.pod.name:web-2",
        "user_id=3",
        "time*",
        "결제",
        "실패",
        "데이터",
        "支付",
        "ログ",
        "🚀",
        "e1234",
        "severity:fatal",
        "severity<=debug",
        "*",
        "",
        "!!!",
        "trace_id:00000000000000000000000000000002",
        "span_id:0101010101010101",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    queries.extend((0..150).map(|_| random_query(&mut rng)));
    let ranges = [
        (i64::MIN, i64::MAX),
        (T0 + 600_000_000_000, T0 + 1_800_000_000_000),
    ];
    for (i, q) in queries.iter().enumerate() {
        let expr = syntax::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let (start, end) = ranges[i % 2];
        let want = expected(&lines, &expr, start, end);
        let (got, total) = all_pages(&store, &expr, start, end, 37, None).await;
        assert_eq!(total as usize, want.len(), "total for {q:?}");
        assert_eq!(got, want, "hits for {q:?}");
    }

    // Pages stay exact when the rows move from the head into a file between two pages.
    let expr = syntax::parse("timeout OR payment").expect("parse");
    let want = expected(&lines, &expr, i64::MIN, i64::MAX);
    let (got, _) = all_pages(&store, &expr, i64::MIN, i64::MAX, 25, Some(&store)).await;
    assert_eq!(got, want, "pagination across a flush");
    assert!(store.log_view().head.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_past_its_deadline_stops_with_a_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open");
    let mut rng = StdRng::seed_from_u64(11);
    let lines = generate(&mut rng, 200, 0);
    append(&store, &lines).await;
    store.flush().await.expect("flush");
    let req = SearchRequest {
        expr: Expr::All,
        start: i64::MIN,
        end: i64::MAX,
        limit: 10,
        cursor: None,
        buckets: 1,
    };
    let timeout = Duration::from_millis(5);
    let past = std::time::Instant::now()
        .checked_sub(Duration::from_millis(1))
        .expect("an instant in the past");
    match super::exec::search_until(&store, &req, Some((past, timeout))) {
        Err(super::error::SearchError::Timeout(t)) => assert_eq!(t, timeout),
        other => panic!("expected a timeout, got {:?}", other.map(|r| r.total)),
    }
    let e = super::error::SearchError::Timeout(timeout);
    assert_eq!(e.http_status(), 504);
    assert!(e.to_string().contains("--query-timeout"), "{e}");
    // With time left, the same search answers.
    let later = std::time::Instant::now() + Duration::from_secs(60);
    let found = super::exec::search_until(&store, &req, Some((later, Duration::from_secs(60))))
        .expect("search");
    assert_eq!(found.total, 200);
}
