//! Compaction while ingest and queries run: the small files of frequent flushes are
//! merged, and no query ever sees a row twice or misses an acknowledged one; a `kill -9`
//! while a merge writes its output, or after it committed but before its inputs were
//! deleted, loses and doubles nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::support::{Server, eventually, otlp};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// Export `n` of `per` spans with globally unique span ids, each with `padding` bytes.
fn export(n: u64, per: u64, padding: usize) -> Vec<u8> {
    let at = now_ns();
    let pad = "p".repeat(padding);
    let spans = (0..per)
        .map(|i| {
            let id = n * 100_000 + i + 1;
            let mut s = otlp::span(
                [(n + 1).to_be_bytes(), i.to_be_bytes()].concat(),
                id.to_be_bytes().to_vec(),
                "compacted",
            );
            s.start_time_unix_nano = at + i;
            s.end_time_unix_nano = at + i + 1000;
            if padding > 0 {
                s.attributes.push(otlp::kv("padding", &pad));
            }
            s
        })
        .collect();
    otlp::traces("compaction", spans).encode_to_vec()
}

async fn post(client: &reqwest::Client, server: &Server, body: Vec<u8>) -> u16 {
    client
        .post(format!("{}/v1/traces", server.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("export")
        .status()
        .as_u16()
}

/// The files the catalog lists.
fn catalog_files(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dir.join("catalog.json")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&text).expect("catalog JSON");
    v["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_string())
        .collect()
}

/// Every file under `dir` whose name satisfies `pred`.
fn files_named(dir: &Path, pred: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_named(&p, pred));
            } else if p.file_name().and_then(|n| n.to_str()).is_some_and(pred) {
                out.push(p);
            }
        }
    }
    out
}

/// The value of an unlabelled counter on `/metrics`.
async fn counter(server: &Server, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", server.api()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}_total ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_ingest_and_queries_run_never_shows_a_row_twice_or_misses_one() {
    const PER: i64 = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Arc::new(Server::start(
        dir.path(),
        &[
            "--flush-interval",
            "200ms",
            "--compaction-interval",
            "1s",
            "--compaction-min-files",
            "3",
        ],
    ));
    let acked = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, acked, stop) = (Arc::clone(&server), Arc::clone(&acked), Arc::clone(&stop));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(post(&client, &server, export(n, PER as u64, 0)).await, 200);
                acked.fetch_add(1, Ordering::SeqCst);
                n += 1;
                // A steady stream of small exports, not a flood: flushes stay small.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let mut queries = 0;
    while started.elapsed() < Duration::from_secs(8) {
        let before = acked.load(Ordering::SeqCst) * PER;
        let rows = server
            .rows("SELECT count(*), count(DISTINCT span_id) FROM spans")
            .await;
        let (n, distinct) = (
            rows[0][0].as_i64().expect("n"),
            rows[0][1].as_i64().expect("d"),
        );
        assert_eq!(n, distinct, "a row seen twice");
        assert!(n >= before, "acknowledged rows missing: {n} < {before}");
        queries += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    let expected = acked.load(Ordering::SeqCst) * PER;
    server.assert_spans_exactly_once(expected).await;
    let compactions = counter(&server, "periscope_compactions").await;
    let flushes = counter(&server, "periscope_flushes").await;
    assert!(compactions >= 1.0, "no compaction ran");
    let files = catalog_files(dir.path());
    assert!(
        files.iter().any(|f| f.contains("/c")),
        "no merged file in {files:?}"
    );
    assert!(
        (files.len() as f64) < flushes,
        "{} files after {flushes} flushes",
        files.len()
    );
    eprintln!(
        "compaction: {queries} queries, {flushes} flushes, {compactions} compactions, {} files left",
        files.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_or_after_a_compaction_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let spans_dir = data.join("spans");
    let quiet = ["--compaction-interval", "0s"];
    let compacting = [
        "--compaction-interval",
        "100ms",
        "--compaction-min-files",
        "2",
        "--query-timeout",
        "60s",
    ];
    // Many small files: a flush every few exports.
    let mut server = Server::start(data, &["--flush-interval", "100ms", quiet[0], quiet[1]]);
    let client = reqwest::Client::new();
    let exports = 30u64;
    for n in 0..exports {
        assert_eq!(post(&client, &server, export(n, 2000, 512)).await, 200);
        if n % 3 == 2 {
            let have = catalog_files(data).len();
            eventually("a flush", 10, || async {
                (catalog_files(data).len() > have).then_some(())
            })
            .await;
        }
    }
    assert!(server.terminate().success());
    let inputs = catalog_files(data);
    assert!(inputs.len() >= 10, "{inputs:?}");
    let expected = (exports * 2000) as i64;

    // A merge killed while it writes its output.
    let mut server = Server::start(data, &compacting);
    let deadline = Instant::now() + Duration::from_secs(60);
    let is_partial = |n: &str| n.starts_with('c') && n.ends_with(".parquet.tmp");
    while files_named(&spans_dir, &is_partial).is_empty() {
        assert!(Instant::now() < deadline, "no merge started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill9();
    assert!(
        !catalog_files(data).iter().any(|f| f.contains("/c")),
        "the merge finished before the kill"
    );
    let server = Server::start(data, &quiet);
    server.assert_spans_exactly_once(expected).await;
    assert!(files_named(&spans_dir, &|n: &str| n.starts_with('c')).is_empty());
    assert_eq!(catalog_files(data), inputs);
    drop(server);

    // A merge committed, killed before its inputs were deleted (they wait for queries).
    let mut server = Server::start(data, &compacting);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !catalog_files(data).iter().any(|f| f.contains("/c")) {
        assert!(Instant::now() < deadline, "no merge committed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill9();
    let merged: Vec<String> = inputs
        .iter()
        .filter(|f| !catalog_files(data).contains(f))
        .cloned()
        .collect();
    assert!(!merged.is_empty());
    assert!(
        merged.iter().all(|f| data.join(f).exists()),
        "inputs are kept for running queries"
    );
    let server = Server::start(data, &quiet);
    server.assert_spans_exactly_once(expected).await;
    for f in &merged {
        assert!(!data.join(f).exists(), "{f} was not removed");
    }
    assert!(files_named(&spans_dir, &|n: &str| n.ends_with(".tmp")).is_empty());
}
