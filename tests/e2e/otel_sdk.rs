//! The official OpenTelemetry Rust SDK exports traces, logs and metrics over OTLP/gRPC,
//! OTLP/HTTP protobuf and OTLP/HTTP JSON; SQL reads every field back exactly.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::json;

use crate::support::Server;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Grpc,
    HttpProto,
    HttpJson,
}

const BASE: u64 = 1_764_000_000_000_000_000; // 2025-11-24T16:00:00Z

fn at(offset_ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(BASE + offset_ns)
}

fn rfc3339(offset_ns: u64) -> String {
    format!("2025-11-24T16:00:00.{offset_ns:09}Z")
}

/// Exported ids and the service name used, for the checks.
struct Sent {
    service: String,
    root: SpanContext,
    child: SpanContext,
    linked: SpanContext,
}

fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_string())
        .with_attribute(KeyValue::new("deployment.environment.name", "e2e"))
        .build()
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("periscope-e2e")
        .with_version("1.2.3")
        .build()
}

fn export_with_sdk(server: &Server, transport: Transport) -> Sent {
    let service = format!("sdk-{transport:?}").to_lowercase();
    let http = |signal: &str| format!("{}/v1/{signal}", server.otlp_http());
    let protocol = if transport == Transport::HttpJson {
        Protocol::HttpJson
    } else {
        Protocol::HttpBinary
    };

    let span_exporter = match transport {
        Transport::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(server.grpc())
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build(),
        _ => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(http("traces"))
            .build(),
    }
    .expect("span exporter");
    let log_exporter = match transport {
        Transport::Grpc => opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .with_endpoint(server.grpc())
            .build(),
        _ => opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(http("logs"))
            .build(),
    }
    .expect("log exporter");
    let temporality = if transport == Transport::HttpJson {
        Temporality::Delta
    } else {
        Temporality::Cumulative
    };
    let metric_exporter = match transport {
        Transport::Grpc => opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(server.grpc())
            .with_temporality(temporality)
            .build(),
        _ => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(http("metrics"))
            .with_temporality(temporality)
            .build(),
    }
    .expect("metric exporter");

    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        .with_resource(resource(&service))
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_batch_exporter(log_exporter)
        .with_resource(resource(&service))
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_periodic_exporter(metric_exporter)
        .with_resource(resource(&service))
        .build();

    let tracer = tracer_provider.tracer_with_scope(scope());
    let linked = SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes([0x11; 16]),
        opentelemetry::trace::SpanId::from_bytes([0x22; 8]),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let mut root = tracer
        .span_builder("GET /cart")
        .with_kind(SpanKind::Server)
        .with_start_time(at(1))
        .with_attributes(vec![
            KeyValue::new("str", "v"),
            KeyValue::new("int", 42i64),
            KeyValue::new("float", 1.5f64),
            KeyValue::new("bool", true),
            KeyValue::new(
                "arr",
                Value::Array(Array::String(vec!["a".into(), "b".into()])),
            ),
        ])
        .with_links(vec![Link::new(
            linked.clone(),
            vec![KeyValue::new("link.kind", "follows")],
            0,
        )])
        .start(&tracer);
    root.add_event_with_timestamp("cache-miss", at(500), vec![KeyValue::new("key", "k1")]);
    root.set_status(Status::error("boom"));
    let root_cx = opentelemetry::Context::current_with_span(root);
    let root_sc = root_cx.span().span_context().clone();
    let mut child = tracer
        .span_builder("SELECT orders")
        .with_kind(SpanKind::Client)
        .with_start_time(at(1_000))
        .with_attributes(vec![KeyValue::new("db.system.name", "postgresql")])
        .start_with_context(&tracer, &root_cx);
    let child_sc = child.span_context().clone();
    child.end_with_timestamp(at(2_000_001));
    root_cx.span().end_with_timestamp(at(3_000_000_002));

    let logger = logger_provider.logger_with_scope(scope());
    let mut record = logger.create_log_record();
    record.set_timestamp(at(7));
    record.set_observed_timestamp(at(8));
    record.set_severity_number(Severity::Error);
    record.set_severity_text("ERROR");
    record.set_body(AnyValue::Map(Box::new(HashMap::from([(
        Key::new("user"),
        AnyValue::Int(7),
    )]))));
    record.add_attribute("order.id", "o-1");
    record.add_attribute("retry", 2i64);
    record.set_trace_context(
        root_sc.trace_id(),
        root_sc.span_id(),
        Some(TraceFlags::SAMPLED),
    );
    logger.emit(record);

    let meter = meter_provider.meter_with_scope(scope());
    let requests = meter
        .u64_counter("requests")
        .with_unit("1")
        .with_description("served")
        .build();
    requests.add(5, &[KeyValue::new("route", "/cart")]);
    let latency = meter.f64_histogram("latency").with_unit("ms").build();
    for v in [3.0, 7.0, 120.0] {
        latency.record(v, &[]);
    }
    let temperature = meter.f64_gauge("temperature").build();
    temperature.record(2.5, &[]);
    let queue = meter.i64_up_down_counter("queue.depth").build();
    queue.add(-3, &[]);

    tracer_provider.force_flush().expect("flush spans");
    logger_provider.force_flush().expect("flush logs");
    tracer_provider.shutdown().expect("shutdown");
    logger_provider.shutdown().expect("shutdown");
    // Shutdown collects and exports once; a flush before it would export cumulative
    // points a second time.
    meter_provider.shutdown().expect("shutdown");
    Sent {
        service,
        root: root_sc,
        child: child_sc,
        linked,
    }
}

async fn check(server: &Server, sent: &Sent, transport: Transport) {
    let svc = &sent.service;
    let spans = server
        .rows(&format!(
            "SELECT trace_id, span_id, parent_span_id, name, kind, start_time, end_time, duration_ns, status_code, \
             status_message, attributes, resource_attributes['service.name'], resource_attributes['deployment.environment.name'], \
             scope_name, scope_version, events, links, attributes['int'], attribute_types \
             FROM spans WHERE service_name = '{svc}' ORDER BY start_time"
        ))
        .await;
    assert_eq!(spans.len(), 2, "{transport:?}: {spans:?}");
    let trace_id = sent.root.trace_id().to_string();
    let root = &spans[0];
    assert_eq!(root[0], trace_id.as_str());
    assert_eq!(root[1], sent.root.span_id().to_string().as_str());
    assert_eq!(root[2], json!(null), "a root has no parent");
    assert_eq!(
        (root[3].clone(), root[4].clone()),
        (json!("GET /cart"), json!("server"))
    );
    assert_eq!(root[5], rfc3339(1).as_str());
    assert_eq!(root[6], "2025-11-24T16:00:03.000000002Z");
    assert_eq!(root[7], json!(3_000_000_001i64));
    assert_eq!(
        (root[8].clone(), root[9].clone()),
        (json!("error"), json!("boom"))
    );
    assert_eq!(
        root[10],
        json!({"str": "v", "int": "42", "float": "1.5", "bool": "true", "arr": "[\"a\",\"b\"]"})
    );
    assert_eq!(
        (root[11].clone(), root[12].clone()),
        (json!(svc), json!("e2e"))
    );
    assert_eq!(
        (root[13].clone(), root[14].clone()),
        (json!("periscope-e2e"), json!("1.2.3"))
    );
    assert_eq!(
        root[15],
        json!([{"time": rfc3339(500), "name": "cache-miss", "attributes": {"key": "k1"}}])
    );
    assert_eq!(
        root[16],
        json!([{"trace_id": sent.linked.trace_id().to_string(), "span_id": sent.linked.span_id().to_string(),
                "trace_state": null, "attributes": {"link.kind": "follows"}}])
    );
    assert_eq!(root[17], "42");
    assert_eq!(
        root[18],
        json!({"int": "int", "float": "double", "bool": "bool", "arr": "array"}),
        "the OTLP type of every non-string value is kept"
    );
    let child = &spans[1];
    assert_eq!(child[0], trace_id.as_str());
    assert_eq!(child[1], sent.child.span_id().to_string().as_str());
    assert_eq!(child[2], sent.root.span_id().to_string().as_str());
    assert_eq!(
        (child[4].clone(), child[7].clone()),
        (json!("client"), json!(1_999_001))
    );
    assert_eq!(child[8], "unset");

    let logs = server
        .rows(&format!(
            "SELECT timestamp, observed_timestamp, trace_id, span_id, severity_number, severity_text, body, attributes, scope_name \
             FROM logs WHERE service_name = '{svc}'"
        ))
        .await;
    assert_eq!(logs.len(), 1, "{transport:?}");
    let l = &logs[0];
    assert_eq!(
        (l[0].clone(), l[1].clone()),
        (json!(rfc3339(7)), json!(rfc3339(8)))
    );
    assert_eq!(
        (l[2].clone(), l[3].clone()),
        (json!(trace_id), json!(sent.root.span_id().to_string()))
    );
    assert_eq!((l[4].clone(), l[5].clone()), (json!(17), json!("ERROR")));
    assert_eq!(l[6], r#"{"user":7}"#);
    assert_eq!(l[7], json!({"order.id": "o-1", "retry": "2"}));
    assert_eq!(l[8], "periscope-e2e");

    let metrics = server
        .rows(&format!(
            "SELECT metric_name, metric_type, unit, value, is_monotonic, temporality, count, sum, min, max, \
             bucket_counts, explicit_bounds, attributes, scope_name, description \
             FROM metrics WHERE service_name = '{svc}' ORDER BY metric_name"
        ))
        .await;
    let names: Vec<&str> = metrics.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["latency", "queue.depth", "requests", "temperature"],
        "{transport:?}"
    );
    let delta = transport == Transport::HttpJson;
    let temporality = if delta { "delta" } else { "cumulative" };
    let latency = &metrics[0];
    assert_eq!(
        (latency[1].clone(), latency[2].clone()),
        (json!("histogram"), json!("ms"))
    );
    assert_eq!(latency[5], temporality);
    assert_eq!(
        (latency[6].clone(), latency[7].clone()),
        (json!(3), json!(130.0))
    );
    assert_eq!(
        (latency[8].clone(), latency[9].clone()),
        (json!(3.0), json!(120.0))
    );
    let buckets: Vec<u64> = serde_json::from_value(latency[10].clone()).unwrap();
    let bounds: Vec<f64> = serde_json::from_value(latency[11].clone()).unwrap();
    assert_eq!(buckets.len(), bounds.len() + 1);
    assert_eq!(buckets.iter().sum::<u64>(), 3);
    let queue = &metrics[1];
    assert_eq!(
        (queue[1].clone(), queue[3].clone(), queue[4].clone()),
        (json!("sum"), json!(-3.0), json!(false))
    );
    let requests = &metrics[2];
    assert_eq!(
        (
            requests[1].clone(),
            requests[3].clone(),
            requests[4].clone()
        ),
        (json!("sum"), json!(5.0), json!(true))
    );
    assert_eq!(requests[5], temporality);
    assert_eq!(requests[12], json!({"route": "/cart"}));
    assert_eq!(
        (requests[13].clone(), requests[14].clone()),
        (json!("periscope-e2e"), json!("served"))
    );
    let temperature = &metrics[3];
    assert_eq!(
        (temperature[1].clone(), temperature[3].clone()),
        (json!("gauge"), json!(2.5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opentelemetry_sdk_exports_over_every_transport_and_sql_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for transport in [Transport::Grpc, Transport::HttpProto, Transport::HttpJson] {
        let sent = {
            let s = &server;
            // The SDK's processors block; keep them off the async workers.
            tokio::task::block_in_place(|| export_with_sdk(s, transport))
        };
        check(&server, &sent, transport).await;
    }
}
