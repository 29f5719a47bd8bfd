//! Acknowledged means durable: `kill -9` at a random moment loses no acknowledged span
//! and duplicates none.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use rand::Rng;

use crate::support::{Server, otlp};

const SPANS_PER_EXPORT: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingest_loses_no_acknowledged_span() {
    let dir = tempfile::tempdir().unwrap();
    // Frequent flushes, so the kill can land in the middle of one.
    let mut server = Server::start(dir.path(), &["--flush-interval", "150ms"]);
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Set before the kill: an export that fails earlier is a failure of the test.
    let killed = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for worker in 0..4u64 {
        let endpoint = server.grpc();
        let acked = Arc::clone(&acked);
        let killed = Arc::clone(&killed);
        senders.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(endpoint)
                .await
                .expect("connect to the running server");
            for n in 0u64.. {
                let first = (worker << 40) | (n * SPANS_PER_EXPORT);
                let spans = (first..first + SPANS_PER_EXPORT)
                    .map(|id| otlp::span(vec![7; 16], (id + 1).to_be_bytes().to_vec(), "crash"))
                    .collect();
                match client.export(otlp::traces("crash", spans)).await {
                    Ok(r) => {
                        assert!(r.into_inner().partial_success.is_none());
                        let mut set = acked.lock().unwrap();
                        for id in first..first + SPANS_PER_EXPORT {
                            set.insert(hex::encode((id + 1).to_be_bytes()));
                        }
                    }
                    Err(status) => {
                        assert!(
                            killed.load(Ordering::SeqCst),
                            "an export failed before the kill: {status}"
                        );
                        return; // the server is gone
                    }
                }
            }
        }));
    }
    let wait = rand::rng().random_range(400..1500);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    killed.store(true, Ordering::SeqCst);
    server.kill9();
    // A sender's failed assertion fails the test.
    for s in senders {
        if let Err(error) = s.await {
            std::panic::resume_unwind(error.into_panic());
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() as u64 >= SPANS_PER_EXPORT,
        "some exports were acknowledged before the kill"
    );

    let server = Server::start(dir.path(), &[]);
    let total = server.scalar("SELECT count(*) FROM spans").await;
    let distinct = server
        .scalar("SELECT count(DISTINCT span_id) FROM spans")
        .await;
    assert_eq!(total, distinct, "no span is stored twice");
    let stored: HashSet<String> = server
        .rows("SELECT span_id FROM spans")
        .await
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = acked.difference(&stored).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged spans lost after kill -9 at {wait} ms, e.g. {missing:?}",
        acked.difference(&stored).count()
    );
}
