//! Bounded memory: past its budget the server refuses with a retryable answer instead of
//! growing, and keeps every export it did acknowledge.

use std::collections::HashSet;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::support::{Server, otlp};

/// An export of 400 spans, each with a 4 KiB attribute, with span ids from `first`.
fn big_export(
    first: u64,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let padding = "x".repeat(4096);
    let spans = (first..first + 400)
        .map(|id| {
            let mut s = otlp::span(vec![8; 16], (id + 1).to_be_bytes().to_vec(), "big");
            s.attributes.push(otlp::kv("padding", &padding));
            s
        })
        .collect();
    otlp::traces("overload", spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_memory_budget_the_server_answers_retry_later_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // 64 MiB budget: at most 32 MiB of unflushed rows. Flushes only by pressure.
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
    let client = reqwest::Client::new();
    let mut acked = HashSet::new();
    let mut refused_http = None;
    for n in 0..400u64 {
        let first = n * 1000;
        let r = client
            .post(format!("{}/v1/traces", server.otlp_http()))
            .header("content-type", "application/x-protobuf")
            .body(big_export(first).encode_to_vec())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {
                acked.insert(first);
            }
            503 => {
                refused_http = Some(r);
                break;
            }
            other => panic!("unexpected status {other}: {}", r.text().await.unwrap()),
        }
    }
    let r = refused_http.expect("the server refused once its buffer was full");
    assert_eq!(r.headers()["retry-after"], "1");
    let body = r.bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("memory budget"));

    // gRPC exporters get UNAVAILABLE (retryable) while the buffer is still full, or
    // success once a flush has made room; never INTERNAL.
    let mut grpc = TraceServiceClient::connect(server.grpc()).await.unwrap();
    let mut grpc_acked = None;
    match grpc.export(big_export(9_000_000)).await {
        Ok(_) => grpc_acked = Some(9_000_000u64),
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status}"),
    }

    // Every acknowledged export is there, exactly once.
    let stored = server.scalar("SELECT count(*) FROM spans").await;
    let expected = (acked.len() + usize::from(grpc_acked.is_some())) as i64 * 400;
    assert_eq!(stored, expected);
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT span_id) FROM spans")
            .await,
        expected
    );
}
