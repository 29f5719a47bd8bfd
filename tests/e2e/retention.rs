//! Retention while ingest and queries run: rows older than a table's retention go, whole
//! files at a time, together with their log index; concurrent queries never see a row
//! twice or miss an acknowledged one; the space is freed; a `kill -9` between the
//! catalog change and the deletion loses nothing and leaks no file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

use crate::support::{Server, eventually, otlp};

const PER_EXPORT: i64 = 100;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

fn spans(
    name: &str,
    at_ns: u64,
    batch: u8,
    n: i64,
) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    (0..n)
        .map(|i| {
            let mut s = otlp::span(
                [[batch; 8], (i as u64).to_be_bytes()].concat(),
                (i as u64 + 1).to_be_bytes().to_vec(),
                name,
            );
            s.start_time_unix_nano = at_ns + i as u64;
            s.end_time_unix_nano = at_ns + i as u64 + 1000;
            s
        })
        .collect()
}

fn logs(body: &str, at_ns: u64, n: i64) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: otlp::resource("retained"),
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: at_ns + i as u64,
                        severity_number: 9,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(body.into())),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn start(dir: &std::path::Path) -> Server {
    Server::start(
        dir,
        &[
            "--retention-traces",
            "1h",
            "--retention-logs",
            "1h",
            "--retention-check-interval",
            "200ms",
            "--query-timeout",
            "2s",
            "--flush-interval",
            "500ms",
        ],
    )
}

/// The hour-partition directory of `table` holding rows of time `ns`.
fn partition(dir: &std::path::Path, table: &str, ns: u64) -> std::path::PathBuf {
    let t = chrono::DateTime::from_timestamp((ns / 1_000_000_000) as i64, 0).expect("time");
    dir.join(table).join(t.format("%Y-%m-%d/%H").to_string())
}

/// Parquet files and index directories in a partition directory.
fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|x| x == "parquet" || x == "index")
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn count(server: &Server, sql: &str) -> i64 {
    server.scalar(sql).await
}

/// How many log lines the log search finds for `query` over the last six hours.
async fn search_total(server: &Server, query: &str) -> u64 {
    let search: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/logs", server.api()))
        .query(&[("query", query), ("start", "now-6h"), ("end", "now")])
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    search["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total: {search}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_files_while_ingest_and_queries_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start(dir.path());
    let three_hours_ago = now_ns() - 3 * 3_600_000_000_000;
    let mut traces = TraceServiceClient::connect(server.grpc())
        .await
        .expect("connect");
    let mut log_client = LogsServiceClient::connect(server.grpc())
        .await
        .expect("connect");

    // Old rows (three hours ago) and recent ones, acknowledged before retention can see
    // them in files.
    for b in 1..=3u8 {
        traces
            .export(otlp::traces(
                "retained",
                spans("old", three_hours_ago, b, PER_EXPORT),
            ))
            .await
            .expect("old spans");
    }
    log_client
        .export(logs("ancient entry", three_hours_ago, PER_EXPORT))
        .await
        .expect("old logs");
    log_client
        .export(logs("fresh entry", now_ns(), PER_EXPORT))
        .await
        .expect("new logs");
    // The log search finds the old lines while they are there (once the head's index
    // committed them, within 200 ms; retention drops files only, after a flush).
    eventually("the old lines to be searchable", 10, || async {
        let total = search_total(&server, "ancient").await;
        assert!(total <= PER_EXPORT as u64, "{total} hits");
        (total == PER_EXPORT as u64).then_some(())
    })
    .await;
    let old_spans_dir = partition(dir.path(), "spans", three_hours_ago);
    let old_logs_dir = partition(dir.path(), "logs", three_hours_ago);

    // Live ingest and queries while retention runs: each query sees every row that was
    // acknowledged before it started and none twice.
    let acked = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let acked = acked.clone();
        let stop = stop.clone();
        let mut client = traces.clone();
        tokio::spawn(async move {
            let mut b = 10u8;
            while !stop.load(Ordering::Relaxed) && b < 200 {
                client
                    .export(otlp::traces(
                        "retained",
                        spans("live", now_ns(), b, PER_EXPORT),
                    ))
                    .await
                    .expect("live spans");
                acked.fetch_add(PER_EXPORT, Ordering::SeqCst);
                b += 1;
            }
        })
    };
    let mut checks = 0;
    let mut old_seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let before = acked.load(Ordering::SeqCst);
        let rows = server
            .rows(
                "SELECT count(*) FILTER (WHERE name = 'live'), count(*) FILTER (WHERE name = 'old'), \
                 count(DISTINCT trace_id || span_id) FILTER (WHERE name = 'live') FROM spans",
            )
            .await;
        let after = acked.load(Ordering::SeqCst);
        let live = rows[0][0].as_i64().expect("live");
        let old = rows[0][1].as_i64().expect("old");
        let distinct = rows[0][2].as_i64().expect("distinct");
        // Every span acknowledged before the query is seen; at most the one export in
        // flight is seen before its acknowledgement reaches the writer.
        assert!(
            before <= live && live <= after + PER_EXPORT,
            "acknowledged {before}..{after} live spans, the query saw {live}"
        );
        assert_eq!(live, distinct, "a live span was counted twice");
        assert!(
            old == 3 * PER_EXPORT || old == 0,
            "old spans half gone: {old}"
        );
        old_seen.push(old);
        checks += 1;
        if old == 0 && checks > 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention never dropped the old spans"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    assert_eq!(
        old_seen[0],
        3 * PER_EXPORT,
        "old rows were there before retention"
    );
    let total_live = acked.load(Ordering::SeqCst);
    assert_eq!(
        count(&server, "SELECT count(*) FROM spans WHERE name = 'live'").await,
        total_live
    );

    // Logs: the old ones are gone from SQL and from the log search (their index with
    // them); the fresh ones stay.
    eventually("old logs dropped", 30, || async {
        (count(
            &server,
            "SELECT count(*) FROM logs WHERE body = 'ancient entry'",
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM logs WHERE body = 'fresh entry'"
        )
        .await,
        PER_EXPORT
    );
    assert_eq!(search_total(&server, "ancient").await, 0);
    assert_eq!(search_total(&server, "fresh").await, PER_EXPORT as u64);

    // Kill -9 right after the catalog dropped the files, inside the grace period: the
    // next start removes them as orphans, Parquet file and index together, and nothing
    // acknowledged is lost. The files are still there (grace period) when it lands.
    assert!(
        !files_in(&old_spans_dir).is_empty(),
        "the old spans' files went before the kill: the kill misses the grace period"
    );
    assert!(
        !files_in(&old_logs_dir).is_empty(),
        "the old logs' files went before the kill: the kill misses the grace period"
    );
    server.kill9();
    let server = start(dir.path());
    assert!(
        files_in(&old_spans_dir).is_empty(),
        "{:?}",
        files_in(&old_spans_dir)
    );
    assert!(
        files_in(&old_logs_dir).is_empty(),
        "{:?}",
        files_in(&old_logs_dir)
    );
    assert_eq!(
        count(&server, "SELECT count(*) FROM spans WHERE name = 'old'").await,
        0
    );
    assert_eq!(
        count(&server, "SELECT count(*) FROM spans WHERE name = 'live'").await,
        total_live
    );
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM logs WHERE body = 'fresh entry'"
        )
        .await,
        PER_EXPORT
    );

    // While running: late old rows are flushed to their partition, dropped, and their
    // files deleted after the grace period (query timeout 2 s + 5 s): the space is freed.
    let mut log_client = LogsServiceClient::connect(server.grpc())
        .await
        .expect("connect");
    log_client
        .export(logs("late ancient entry", three_hours_ago, PER_EXPORT))
        .await
        .expect("late logs");
    eventually("late old logs dropped", 30, || async {
        (count(
            &server,
            "SELECT count(*) FROM logs WHERE body = 'late ancient entry'",
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    eventually("their files deleted", 30, || async {
        files_in(&old_logs_dir).is_empty().then_some(())
    })
    .await;
}
