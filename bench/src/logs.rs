//! `periscope-bench logs`: ingest realistic log lines over OTLP/HTTP into a server of its
//! own, flush them, then time searches through `/api/v1/logs` and the same searches
//! with `rg` over a plain-text copy of the lines. Prints CPU per line, lines per second,
//! bytes on disk against the OTLP bytes received, and search latencies.

use std::io::{BufWriter, Write};
use std::process::Command;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::harness::{cpu_seconds, dir_bytes, kv, median, post_export, spawn_server_at, stop};

/// Arguments of `periscope-bench logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Log lines to send in total.
    #[arg(long, default_value_t = 5_000_000)]
    pub lines: usize,
    /// Lines per export request.
    #[arg(long, default_value_t = 2000)]
    pub batch: usize,
    /// Export requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Times each search is run (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub repeat: usize,
}

const SERVICES: [&str; 6] = [
    "api-gateway",
    "checkout",
    "cart",
    "payment",
    "inventory",
    "auth",
];
const ROUTES: [&str; 6] = [
    "/api/checkout",
    "/cart/{id}",
    "/charge",
    "/login",
    "/items",
    "/health",
];
/// A rare term: about one line in 100,000 carries it.
const RARE: &str = "checksum";
/// A common term: about one line in three carries it.
const COMMON: &str = "user_id";

/// One realistic line: (severity number, severity text, body).
fn line(rng: &mut StdRng) -> (i32, &'static str, String) {
    let ms = rng.random_range(1..900);
    let user = rng.random_range(1..50_000);
    let rid: u64 = rng.random();
    if rng.random_bool(0.000_01) {
        return (
            17,
            "ERROR",
            format!(
                "{RARE} mismatch in segment {rid:016x}: expected crc {:08x}, re-reading from replica",
                rng.random::<u32>()
            ),
        );
    }
    match rng.random_range(0..10) {
        0..=2 => (
            9,
            "INFO",
            format!(
                "GET /api/v1/cart/{} 200 {ms}ms {COMMON}={user} request_id={rid:016x} client=10.0.{}.{}",
                rng.random_range(1..100_000),
                rng.random_range(0..8),
                rng.random_range(1..255)
            ),
        ),
        3 => (
            9,
            "INFO",
            format!(
                "payment authorized order=ord-{} amount={}.{:02} currency=EUR psp=adyen latency={ms}ms",
                rng.random_range(1..1_000_000),
                rng.random_range(1..500),
                rng.random_range(0..100)
            ),
        ),
        4 => (
            13,
            "WARN",
            format!(
                "connection to redis-cart.shop.svc:6379 timed out after {ms}ms, retrying (attempt {}/3) request_id={rid:016x}",
                rng.random_range(1..4)
            ),
        ),
        5 => (
            9,
            "INFO",
            format!(
                "added item sku-{} quantity={} to cart {} for session {rid:016x}",
                rng.random_range(1..20_000),
                rng.random_range(1..5),
                rng.random_range(1..100_000)
            ),
        ),
        6 => (
            17,
            "ERROR",
            format!(
                "POST /charge failed: card declined (code=51 insufficient_funds) order=ord-{} request_id={rid:016x}",
                rng.random_range(1..1_000_000)
            ),
        ),
        7 => (
            9,
            "INFO",
            format!(
                "사용자 로그인 성공 {COMMON}={user} 세션={rid:016x} 지역=ap-northeast-2 소요시간={ms}ms"
            ),
        ),
        8 => (
            5,
            "DEBUG",
            format!(
                "cache hit ratio={:.3} evictions={} keys={} shard={}",
                rng.random::<f64>(),
                rng.random_range(0..1000),
                rng.random_range(1000..100_000),
                rng.random_range(0..16)
            ),
        ),
        _ => (
            9,
            "INFO",
            format!(
                "在庫を更新しました sku-{} 残り={} 倉庫=tokyo-{} {COMMON}={user}",
                rng.random_range(1..20_000),
                rng.random_range(0..500),
                rng.random_range(1..4)
            ),
        ),
    }
}

/// An encoded export request of `n` lines, plus the same lines as text for `rg`.
fn make_batch(
    rng: &mut StdRng,
    n: usize,
    now: u64,
    text: &mut impl Write,
) -> anyhow::Result<Vec<u8>> {
    let mut per_service: Vec<Vec<LogRecord>> = vec![Vec::new(); SERVICES.len()];
    for _ in 0..n {
        let s = rng.random_range(0..SERVICES.len());
        let (severity, severity_text, body) = line(rng);
        let ts = now - rng.random_range(0..600_000_000_000u64);
        let traced = rng.random_bool(0.5);
        let trace: [u8; 16] = rng.random();
        let span: [u8; 8] = rng.random();
        writeln!(
            text,
            "{ts} {} {severity_text} {} {body}",
            SERVICES[s],
            if traced {
                hex::encode(trace)
            } else {
                String::new()
            }
        )?;
        per_service[s].push(LogRecord {
            time_unix_nano: ts,
            observed_time_unix_nano: ts,
            severity_number: severity,
            severity_text: severity_text.into(),
            body: Some(AnyValue {
                value: Some(Value::StringValue(body)),
            }),
            attributes: vec![kv("http.route", ROUTES[rng.random_range(0..ROUTES.len())])],
            trace_id: if traced { trace.to_vec() } else { Vec::new() },
            span_id: if traced { span.to_vec() } else { Vec::new() },
            ..Default::default()
        });
    }
    let request = ExportLogsServiceRequest {
        resource_logs: per_service
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(s, records)| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", SERVICES[s]),
                        kv("k8s.namespace.name", "shop"),
                        kv("k8s.pod.name", &format!("{}-7d9f8b6c4-x2x9k", SERVICES[s])),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                schema_url: String::new(),
            })
            .collect(),
    };
    Ok(request.encode_to_vec())
}

/// Runs `periscope-bench logs`.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.lines < args.batch {
        bail!("--batch must be positive and --lines at least --batch");
    }
    let batches = args.lines / args.batch;
    let total = batches * args.batch;
    let data_dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let text_path = data_dir.path().join("lines.txt");
    eprintln!(
        "generating {total} lines in {batches} requests of {}...",
        args.batch
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = StdRng::seed_from_u64(42);
    let mut text = BufWriter::new(std::fs::File::create(&text_path)?);
    let mut requests = Vec::with_capacity(batches);
    for _ in 0..batches {
        requests.push(make_batch(&mut rng, args.batch, now, &mut text)?);
    }
    text.flush()?;
    drop(text);
    let otlp_bytes: u64 = requests.iter().map(|r| r.len() as u64).sum();
    let text_bytes = std::fs::metadata(&text_path)?.len();

    let server_path = data_dir.path().join("periscope-data");
    let mut server = spawn_server_at(&server_path)?;
    let url = format!("http://{}/v1/logs", server.otlp_http);
    let client = reqwest::Client::new();
    let cpu_before = cpu_seconds(server.child.id())?;
    let queue = Arc::new(tokio::sync::Mutex::new(requests.into_iter()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let queue = Arc::clone(&queue);
        let client = client.clone();
        let url = url.clone();
        workers.spawn(async move {
            let mut retries = 0u64;
            loop {
                let Some(body) = queue.lock().await.next() else {
                    break;
                };
                retries += post_export(&client, &url, body).await?;
            }
            Ok::<u64, anyhow::Error>(retries)
        });
    }
    let mut retries = 0;
    while let Some(r) = workers.join_next().await {
        retries += r??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ingest_cpu = cpu_seconds(server.child.id())? - cpu_before;
    let all_cpu = stop(&mut server).await? - cpu_before;

    let parquet = dir_bytes(&server_path.join("logs"), &|p| {
        p.extension().is_some_and(|x| x == "parquet")
    });
    let index = dir_bytes(&server_path.join("logs"), &|p| {
        p.parent()
            .and_then(|d| d.extension())
            .is_some_and(|x| x == "index")
    });

    // Search a store where every line is flushed.
    let mut server = spawn_server_at(&server_path)?;
    let api = format!("http://{}/api/v1/logs", server.http);
    let mut results = Vec::new();
    for (name, query) in [
        ("rare term", RARE),
        ("common term", COMMON),
        ("phrase", "\"card declined\""),
        ("field + term", "service:payment timed"),
    ] {
        let mut times = Vec::new();
        let mut server_ms = Vec::new();
        let mut total = 0;
        for _ in 0..args.repeat.max(1) {
            let t = Instant::now();
            let v: serde_json::Value = client
                .get(&api)
                .query(&[
                    ("query", query),
                    ("start", "now-2h"),
                    ("end", "now+1h"),
                    ("limit", "100"),
                ])
                .send()
                .await?
                .json()
                .await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            server_ms.push(v["elapsed_ms"].as_f64().unwrap_or(0.0));
            total = v["total"].as_u64().unwrap_or(0);
        }
        let rg_word = query
            .trim_matches('"')
            .split_whitespace()
            .last()
            .unwrap_or(query)
            .to_string();
        let mut rg_times = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let out = Command::new("rg")
                .args(["-c", "-i", "-F", &rg_word])
                .arg(&text_path)
                .output();
            match out {
                Ok(o) if o.status.code().is_some_and(|c| c <= 1) => {
                    rg_times.push(t.elapsed().as_secs_f64() * 1000.0)
                }
                _ => break,
            }
        }
        results.push((
            name,
            query,
            total,
            median(times),
            median(server_ms),
            (!rg_times.is_empty()).then(|| median(rg_times)),
        ));
    }
    let _ = stop(&mut server).await;

    println!(
        "command: periscope-bench logs --lines {} --batch {} --concurrency {} --repeat {}",
        args.lines, args.batch, args.concurrency, args.repeat
    );
    println!(
        "lines sent:               {total} ({:.0} bytes of text each on average)",
        text_bytes as f64 / total as f64
    );
    println!("wall time:                {elapsed:.2} s");
    println!(
        "throughput:               {:.0} lines/s (WAL + head index)",
        total as f64 / elapsed
    );
    println!("retried exports (503):    {retries}");
    println!(
        "server CPU, ingest:       {ingest_cpu:.2} s = {:.2} CPU-us/line",
        ingest_cpu * 1e6 / total as f64
    );
    println!(
        "server CPU, with flush:   {all_cpu:.2} s = {:.2} CPU-us/line (Parquet + file indexes)",
        all_cpu * 1e6 / total as f64
    );
    println!("OTLP protobuf received:   {otlp_bytes} bytes");
    println!(
        "parquet on disk:          {parquet} bytes = {:.1}% of OTLP",
        parquet as f64 * 100.0 / otlp_bytes as f64
    );
    println!(
        "log index on disk:        {index} bytes = {:.1}% of OTLP",
        index as f64 * 100.0 / otlp_bytes as f64
    );
    println!(
        "parquet + index:          {:.1}% of OTLP ({:.1} bytes/line)",
        (parquet + index) as f64 * 100.0 / otlp_bytes as f64,
        (parquet + index) as f64 / total as f64
    );
    println!("plain text copy:          {text_bytes} bytes");
    println!(
        "search (median of {}, top 100 newest, with total and histogram):",
        args.repeat
    );
    for (name, query, hits, ms, server_ms, rg) in results {
        let rg_text = rg.map_or("rg not installed".to_string(), |r| {
            format!("rg -c {r:.1} ms, ratio {:.3}", ms / r)
        });
        println!(
            "  {name:<13} {query:<24} total {hits:>8}  {ms:>8.1} ms (server {server_ms:.1} ms)  {rg_text}"
        );
    }
    Ok(())
}
