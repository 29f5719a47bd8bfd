//! Unit tests of trace assembly, the graph builder and the Jaeger model.

use std::collections::HashMap;

use serde_json::Value;

use super::fetch::Window;
use super::graph::{GraphBuilder, NodeKind, Peer};
use super::jaeger::jaeger_trace;
use super::span::{Attr, Span, SpanEvent, SpanLink};
use super::tree::assemble;

const T: i64 = 1_764_000_000_000_000_000;
const MS: i64 = 1_000_000;

fn span(id: &str, parent: Option<&str>, service: &str, start_ms: i64, dur_ms: i64) -> Span {
    Span {
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        span_id: format!("{id:0>16}"),
        parent_span_id: parent.map(|p| format!("{p:0>16}")),
        trace_state: None,
        service_name: service.into(),
        name: format!("op-{id}"),
        kind: "server".into(),
        start: T + start_ms * MS,
        end: T + (start_ms + dur_ms) * MS,
        duration: dur_ms * MS,
        status_code: "unset".into(),
        status_message: None,
        attributes: Vec::new(),
        resource_attributes: vec![Attr {
            key: "service.name".into(),
            text: service.into(),
            kind: "string",
        }],
        scope_name: None,
        scope_version: None,
        events: Vec::new(),
        links: Vec::new(),
        flags: None,
    }
}

fn ids(tree: &super::tree::Tree) -> Vec<(String, u32)> {
    tree.spans
        .iter()
        .zip(&tree.placement)
        .map(|(s, p)| (s.span_id.trim_start_matches('0').to_string(), p.depth))
        .collect()
}

#[test]
fn spans_are_ordered_depth_first_with_children_by_start() {
    let tree = assemble(vec![
        span("c", Some("a"), "x", 30, 5),
        span("b", Some("a"), "x", 10, 5),
        span("a", None, "x", 0, 100),
        span("d", Some("b"), "x", 11, 2),
    ]);
    assert_eq!(
        ids(&tree),
        vec![
            ("a".into(), 0),
            ("b".into(), 1),
            ("d".into(), 2),
            ("c".into(), 1)
        ]
    );
    assert_eq!(tree.placement[0].children, 2);
    assert_eq!(tree.roots, vec![format!("{:0>16}", "a")]);
    assert!(tree.orphans.is_empty());
    assert!(tree.warnings.is_empty(), "{:?}", tree.warnings);
    assert_eq!(tree.end - tree.start, 100 * MS);
}

#[test]
fn spans_with_a_missing_parent_are_kept_as_orphans() {
    let tree = assemble(vec![
        span("a", None, "x", 0, 100),
        span("e", Some("f"), "y", 50, 10),
        span("g", Some("e"), "y", 51, 1),
    ]);
    assert_eq!(
        ids(&tree),
        vec![("a".into(), 0), ("e".into(), 0), ("g".into(), 1)]
    );
    assert!(tree.placement[1].orphan);
    assert!(!tree.placement[2].orphan);
    assert_eq!(tree.orphans, vec![format!("{:0>16}", "e")]);
    assert!(tree.warnings.iter().any(|w| w.contains("orphans")));
}

#[test]
fn a_trace_without_root_says_so_and_a_parent_cycle_loses_no_span() {
    let tree = assemble(vec![
        span("a", Some("b"), "x", 0, 10),
        span("b", Some("a"), "x", 1, 10),
        span("c", Some("zz"), "x", 2, 1),
    ]);
    assert_eq!(tree.spans.len(), 3);
    assert!(tree.roots.is_empty());
    assert!(tree.warnings.iter().any(|w| w.contains("root span")));
    assert!(
        tree.warnings
            .iter()
            .any(|w| w.starts_with("2 spans form a parent cycle")),
        "{:?}",
        tree.warnings
    );
    assert!(
        tree.warnings
            .iter()
            .any(|w| w.starts_with("1 spans refer to a parent")),
        "{:?}",
        tree.warnings
    );
    assert_eq!(
        tree.root().map(|s| s.span_id.as_str()),
        Some("000000000000000a")
    );
}

#[test]
fn exact_duplicates_are_dropped_once() {
    let tree = assemble(vec![
        span("a", None, "x", 0, 10),
        span("a", None, "x", 0, 10),
    ]);
    assert_eq!(tree.spans.len(), 1);
    assert!(tree.warnings[0].contains("duplicate"));
}

#[test]
fn clock_skew_on_another_host_is_flagged_as_jaeger_computes_it() {
    // Parent 0..100 ms on host x; child on host y claims to start 20 ms before it and
    // last 40 ms: Jaeger centres it: shift = parent.start + (100-40)/2 - child.start.
    let mut tree = assemble(vec![
        span("a", None, "x", 0, 100),
        span("b", Some("a"), "y", -20, 40),
        span("c", Some("b"), "y", -10, 5),
        span("d", Some("a"), "x", -5, 1),
    ]);
    let by: HashMap<String, _> = tree
        .spans
        .iter()
        .zip(tree.placement.iter())
        .map(|(s, p)| (s.span_id.trim_start_matches('0').to_string(), p.clone()))
        .collect();
    assert!(by["b"].skew_detected);
    assert_eq!(by["b"].skew, 50 * MS);
    // Same host as its parent: it inherits the shift, but is not where skew was found.
    assert!(!by["c"].skew_detected);
    assert_eq!(by["c"].skew, 50 * MS);
    // Same host as its parent: Jaeger never adjusts within a host.
    assert_eq!(by["d"].skew, 0);
    assert!(tree.warnings.iter().any(|w| w.contains("clock skew")));
    // A child that fits is not touched.
    tree = assemble(vec![
        span("a", None, "x", 0, 100),
        span("b", Some("a"), "y", 10, 40),
    ]);
    assert!(
        tree.placement
            .iter()
            .all(|p| p.skew == 0 && !p.skew_detected)
    );
}

fn attr(key: &str, text: &str, kind: &'static str) -> Attr {
    Attr {
        key: key.into(),
        text: text.into(),
        kind,
    }
}

#[test]
fn jaeger_model_follows_the_collector_translation() {
    let mut root = span("a", None, "gateway", 0, 100);
    root.scope_name = Some("io.opentelemetry.http".into());
    root.status_code = "error".into();
    root.status_message = Some("boom".into());
    root.flags = Some(1);
    root.attributes = vec![
        attr("http.status_code", "503", "int"),
        attr("ratio", "0.25", "double"),
        attr("cached", "false", "bool"),
        attr("blob", "AAEC", "bytes"),
        attr("list", "[1,2]", "array"),
        attr("big", "9223372036854775807", "int"),
        attr("route", "/cart", "string"),
    ];
    root.events = vec![SpanEvent {
        time: T + 5 * MS,
        name: "exception".into(),
        attributes: vec![attr("exception.type", "Boom", "string")],
    }];
    let mut child = span("b", Some("a"), "cart", 10, 20);
    child.kind = "client".into();
    child.links = vec![SpanLink {
        trace_id: "11111111111111111111111111111111".into(),
        span_id: "2222222222222222".into(),
        trace_state: None,
        attributes: Vec::new(),
    }];
    let t = jaeger_trace(vec![child, root], true);
    assert_eq!(t["traceID"], "0af7651916cd43dd8448eb211c80319c");
    let spans = t["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    let a = &spans[0];
    assert_eq!(a["spanID"], "000000000000000a");
    assert_eq!(a["operationName"], "op-a");
    assert_eq!(a["startTime"], (T / 1000));
    assert_eq!(a["duration"], 100_000);
    assert_eq!(a["flags"], 1);
    assert_eq!(a["references"], Value::Array(vec![]));
    let tags: Vec<(String, String, Value)> = a["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap_or_default().to_string(),
                t["type"].as_str().unwrap_or_default().to_string(),
                t["value"].clone(),
            )
        })
        .collect();
    let expect = |k: &str, ty: &str, v: Value| {
        assert!(
            tags.contains(&(k.to_string(), ty.to_string(), v.clone())),
            "{k} {ty} {v} not in {tags:?}"
        );
    };
    expect("otel.scope.name", "string", "io.opentelemetry.http".into());
    expect("http.status_code", "int64", 503.into());
    expect("ratio", "float64", 0.25.into());
    expect("cached", "bool", false.into());
    expect("blob", "binary", "AAEC".into());
    expect("list", "string", "[1,2]".into());
    expect("big", "int64", "9223372036854775807".into());
    expect("span.kind", "string", "server".into());
    expect("otel.status_code", "string", "ERROR".into());
    expect("error", "bool", true.into());
    expect("otel.status_description", "string", "boom".into());
    assert_eq!(tags[0].0, "otel.scope.name", "scope tags come first");
    let logs = a["logs"].as_array().expect("logs");
    assert_eq!(logs[0]["timestamp"], (T + 5 * MS) / 1000);
    assert_eq!(logs[0]["fields"][0]["key"], "event");
    assert_eq!(logs[0]["fields"][0]["value"], "exception");
    let b = &spans[1];
    assert_eq!(b["references"][0]["refType"], "CHILD_OF");
    assert_eq!(b["references"][0]["spanID"], "000000000000000a");
    assert_eq!(b["references"][1]["refType"], "FOLLOWS_FROM");
    assert_eq!(
        b["references"][1]["traceID"],
        "11111111111111111111111111111111"
    );
    assert!(b.get("flags").is_none());
    let (pa, pb) = (
        a["processID"].as_str().unwrap_or(""),
        b["processID"].as_str().unwrap_or(""),
    );
    assert_ne!(pa, pb);
    assert_eq!(t["processes"][pa]["serviceName"], "gateway");
    assert_eq!(t["processes"][pb]["serviceName"], "cart");
}

#[test]
fn jaeger_adjusts_skewed_spans_unless_raw() {
    let spans = vec![
        span("a", None, "x", 0, 100),
        span("b", Some("a"), "y", -20, 40),
    ];
    let adjusted = jaeger_trace(spans.clone(), true);
    let b = &adjusted["spans"][1];
    assert_eq!(b["startTime"], (T + 30 * MS) / 1000);
    assert!(
        b["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("adjusted by 50ms")
    );
    let raw = jaeger_trace(spans, false);
    let b = raw["spans"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["spanID"] == "000000000000000b"))
        .expect("span b");
    assert_eq!(b["startTime"], (T - 20 * MS) / 1000);
    assert_eq!(b["warnings"], Value::Null);
}

#[test]
fn peers_are_named_by_the_semantic_conventions() {
    let peer = |pairs: &[(&str, &str)]| {
        let m: HashMap<&str, &str> = pairs.iter().copied().collect();
        Peer::from_attributes(|k| m.get(k).copied())
    };
    let db = peer(&[
        ("db.system", "postgresql"),
        ("db.name", "shop"),
        ("server.address", "pg"),
    ])
    .expect("db");
    assert_eq!(
        (db.kind, db.name.as_str(), db.system.as_deref()),
        (NodeKind::Database, "shop", Some("postgresql"))
    );
    assert_eq!(db.id(), "database:shop");
    let redis = peer(&[("db.system", "redis")]).expect("redis");
    assert_eq!(redis.id(), "database:redis");
    let q = peer(&[
        ("messaging.system", "kafka"),
        ("messaging.destination.name", "orders"),
    ])
    .expect("queue");
    assert_eq!(q.id(), "messaging:orders");
    assert_eq!(
        peer(&[("peer.service", "stripe"), ("server.address", "x")]).map(|p| p.id()),
        Some("external:stripe".into())
    );
    assert_eq!(
        peer(&[("server.address", "api.example.com")]).map(|p| p.id()),
        Some("external:api.example.com".into())
    );
    assert_eq!(peer(&[("http.route", "/x")]), None);
}

#[test]
fn graph_counts_each_call_once_and_keeps_exporting_peers_as_services() {
    let tid = "0af7651916cd43dd8448eb211c80319c";
    let mut g = GraphBuilder::default();
    let ext = |h: &str| {
        Some(Peer {
            kind: NodeKind::External,
            name: h.into(),
            system: None,
        })
    };
    // a (server) → a client to b (server.address=b) → b server; a client to an
    // external host that exports nothing, retried twice, one failure.
    g.add(tid, "1", None, "a", "server", 100, false, None);
    g.add(tid, "2", Some("1"), "a", "client", 50, false, ext("b"));
    g.add(tid, "3", Some("2"), "b", "server", 40, true, None);
    g.add(
        tid,
        "4",
        Some("1"),
        "a",
        "client",
        10,
        true,
        ext("pay.example"),
    );
    g.add(
        tid,
        "5",
        Some("1"),
        "a",
        "client",
        12,
        false,
        ext("pay.example"),
    );
    // Same span ids in another trace must not join this one.
    g.add(
        "1af7651916cd43dd8448eb211c80319c",
        "3",
        Some("9"),
        "c",
        "server",
        5,
        false,
        None,
    );
    let graph = g.build(
        Window {
            start: 0,
            end: 1_000_000_000,
        },
        &HashMap::from([("a".to_string(), "gateway".to_string())]),
    );
    let edges: Vec<(String, String, u64, u64)> = graph
        .edges
        .iter()
        .map(|e| {
            (
                e.source.clone(),
                e.target.clone(),
                e.tally.calls,
                e.tally.errors,
            )
        })
        .collect();
    assert_eq!(
        edges,
        vec![
            ("a".into(), "b".into(), 1, 1),
            ("a".into(), "external:pay.example".into(), 2, 1),
        ]
    );
    let kinds: Vec<(String, &str, u64)> = graph
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.kind.as_str(), n.requests.calls))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("a".into(), "gateway", 1),
            ("b".into(), "service", 1),
            ("c".into(), "service", 1),
            ("external:pay.example".into(), "external", 2),
        ]
    );
    let pay = &graph.edges[1].tally;
    assert_eq!(pay.quantile(0.5), Some(10));
    assert_eq!(pay.quantile(0.99), Some(12));
}

#[test]
fn latency_tallies_are_within_one_percent() {
    let mut g = GraphBuilder::default();
    let tid = "0af7651916cd43dd8448eb211c80319c";
    g.add(tid, "1", None, "a", "server", 1, false, None);
    for i in 0..20_000u32 {
        let id = format!("{:x}", i + 2);
        g.add(
            tid,
            &id,
            Some("1"),
            "b",
            "server",
            i64::from(i + 1) * 1_000,
            i % 10 == 0,
            None,
        );
    }
    let graph = g.build(Window { start: 0, end: 1 }, &HashMap::new());
    let edge = &graph.edges[0];
    assert_eq!((edge.tally.calls, edge.tally.errors), (20_000, 2_000));
    for (q, exact) in [(0.5, 10_000_000.0), (0.99, 19_800_000.0)] {
        let got = edge.tally.quantile(q).expect("quantile") as f64;
        assert!((got - exact).abs() / exact < 0.01, "q{q}: {got} vs {exact}");
    }
}

#[test]
fn a_consumer_naming_its_queue_puts_the_queue_between_the_services() {
    let tid = "0af7651916cd43dd8448eb211c80319c";
    let queue = || {
        Some(Peer {
            kind: NodeKind::Messaging,
            name: "orders".into(),
            system: Some("kafka".into()),
        })
    };
    let mut g = GraphBuilder::default();
    g.add(tid, "1", None, "payment", "server", 100, false, None);
    g.add(
        tid,
        "2",
        Some("1"),
        "worker",
        "consumer",
        30,
        false,
        queue(),
    );
    // A producer span: payment → queue; its consumer below it: queue → worker.
    g.add(
        tid,
        "3",
        Some("1"),
        "payment",
        "producer",
        3,
        false,
        queue(),
    );
    g.add(tid, "4", Some("3"), "worker", "consumer", 20, true, queue());
    let graph = g.build(Window { start: 0, end: 1 }, &HashMap::new());
    let edges: Vec<(String, String, u64, u64)> = graph
        .edges
        .iter()
        .map(|e| {
            (
                e.source.clone(),
                e.target.clone(),
                e.tally.calls,
                e.tally.errors,
            )
        })
        .collect();
    assert_eq!(
        edges,
        vec![
            ("messaging:orders".into(), "worker".into(), 2, 1),
            ("payment".into(), "messaging:orders".into(), 2, 0),
        ]
    );
}

#[test]
fn hex_ids_parse_in_either_case_and_garbage_is_zero() {
    use periscope_spanagg::ids::{parse_u64, parse_u128};
    assert_eq!(parse_u64("00f067aa0ba902b7"), 0x00f0_67aa_0ba9_02b7);
    assert_eq!(parse_u64("00F067AA0BA902B7"), 0x00f0_67aa_0ba9_02b7);
    assert_eq!(parse_u64("1"), 1);
    assert_eq!(parse_u64("0g"), 0);
    assert_eq!(parse_u64("11111111111111111"), 0);
    assert_eq!(
        parse_u128("4bf92f3577b34da6a3ce929d0e0e4736"),
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736
    );
    assert_eq!(parse_u128("abc"), 0xabc);
    assert_eq!(parse_u128("zz"), 0);
}
