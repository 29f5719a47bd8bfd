//! The exporter against a small OTLP/HTTP receiver: gzip bodies, Retry-After honoured,
//! non-retryable answers dropped and counted.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use periscope_agent::export::Scope;
use periscope_agent::{
    ComponentKind, Compression, ExporterConfig, Protocol, ResourceInfo, Telemetry,
};
use prost::Message;

#[derive(Default)]
struct Receiver {
    calls: AtomicUsize,
    spans: AtomicUsize,
    /// Answer of the first N calls: (status, Retry-After).
    script: parking_lot::Mutex<Vec<(u16, Option<&'static str>)>>,
    first_at: parking_lot::Mutex<Option<Instant>>,
    last_at: parking_lot::Mutex<Option<Instant>>,
}

async fn traces(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    r.calls.fetch_add(1, Ordering::SeqCst);
    let now = Instant::now();
    r.first_at.lock().get_or_insert(now);
    *r.last_at.lock() = Some(now);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(headers["authorization"], "Bearer sekrit");
    let step = {
        let mut s = r.script.lock();
        if s.is_empty() {
            None
        } else {
            Some(s.remove(0))
        }
    };
    if let Some((status, retry_after)) = step {
        let mut h = HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert("retry-after", v.parse().expect("header"));
        }
        return (StatusCode::from_u16(status).expect("status"), h, Vec::new());
    }
    assert_eq!(headers["content-encoding"], "gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut raw)
        .expect("gzip body");
    let req = ExportTraceServiceRequest::decode(raw.as_slice()).expect("protobuf");
    let n: usize = req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    r.spans.fetch_add(n, Ordering::SeqCst);
    (StatusCode::OK, HeaderMap::new(), Vec::new())
}

async fn start(receiver: Arc<Receiver>) -> String {
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(|| async { StatusCode::OK }))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn telemetry(endpoint: String) -> Telemetry {
    Telemetry::start(
        ResourceInfo::new("exporter-test", ComponentKind::Service),
        ExporterConfig {
            endpoint,
            protocol: Protocol::HttpProtobuf,
            compression: Compression::Gzip,
            headers: vec![("authorization".into(), "Bearer sekrit".into())],
            batch_delay: Duration::from_millis(20),
            max_retry_time: Duration::from_secs(5),
            ..ExporterConfig::default()
        },
    )
    .expect("telemetry")
}

fn span(i: u8) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![i + 1; 8],
        name: format!("s{i}"),
        ..Default::default()
    }
}

async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn retry_after_is_honoured_and_gzip_bodies_arrive() {
    let receiver = Arc::new(Receiver::default());
    receiver.script.lock().push((503, Some("1")));
    let t = telemetry(start(receiver.clone()).await);
    for i in 0..3 {
        t.record_span(Scope::Http, span(i));
    }
    wait_for("three spans", || receiver.spans.load(Ordering::SeqCst) == 3).await;
    assert_eq!(
        receiver.calls.load(Ordering::SeqCst),
        2,
        "one refusal, one retry"
    );
    let first = receiver.first_at.lock().expect("first");
    let last = receiver.last_at.lock().expect("last");
    assert!(
        last - first >= Duration::from_millis(950),
        "the retry waited for Retry-After: {:?}",
        last - first
    );
    wait_for("exported count", || t.span_counts().exported == 3).await;
    assert_eq!(t.span_counts().dropped(), 0);
}

#[tokio::test]
async fn a_refused_batch_is_dropped_and_counted_not_retried() {
    let receiver = Arc::new(Receiver::default());
    receiver.script.lock().push((400, None));
    let t = telemetry(start(receiver.clone()).await);
    t.record_span(Scope::Http, span(0));
    wait_for("failure counted", || t.span_counts().export_failed == 1).await;
    assert_eq!(
        receiver.calls.load(Ordering::SeqCst),
        1,
        "400 is not retried"
    );
    t.record_span(Scope::Http, span(1));
    t.flush(Duration::from_secs(5)).await;
    assert_eq!(receiver.spans.load(Ordering::SeqCst), 1);
    assert_eq!(t.span_counts().exported, 1);
}
