//! `periscope-bench traces`: stores millions of spans of a realistic MSA topology
//! (gateway → frontend → cart → redis, catalog → postgres, payment → kafka → worker)
//! spread over two hours, flushes them, restarts the server, then times trace-by-id,
//! trace search for one service over one hour, the service graph and RED over one hour.
//! Prints median latencies and server CPU per request.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{
    cpu_seconds, dir_bytes, int_kv, kv, median, post_export, resource_spans, spawn_server_at, stop,
};

/// Arguments of `periscope-bench traces`.
#[derive(Debug, Args)]
pub struct TracesArgs {
    /// Spans to store in total (traces of 12 spans, over the last two hours).
    #[arg(long, default_value_t = 20_000_000)]
    pub spans: usize,
    /// Traces per export request.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// Export requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Times each query is run (the median is reported).
    #[arg(long, default_value_t = 11)]
    pub repeat: usize,
    /// Keep the stored data in this new directory (for `periscope serve --data-dir`)
    /// instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<std::path::PathBuf>,
}

const SPANS_PER_TRACE: usize = 12;
const SPAN_WINDOW_NS: u64 = 2 * 3_600_000_000_000;
const MS: u64 = 1_000_000;

/// (service, component kind) of each service index.
const SERVICES: [(&str, &str); 7] = [
    ("gateway", "gateway"),
    ("frontend", "service"),
    ("cart-envoy", "mesh-proxy"),
    ("cart", "service"),
    ("catalog", "service"),
    ("payment", "service"),
    ("worker", "service"),
];

/// One span of the plan: service, parent index, name, kind, start ms, duration ms,
/// attributes.
type Planned = (
    usize,
    Option<usize>,
    &'static str,
    i32,
    u64,
    u64,
    Vec<KeyValue>,
);

/// The spans of one trace: (service index, span).
fn trace(rng: &mut StdRng, base: u64) -> ([u8; 16], Vec<(usize, Span)>) {
    let tid: [u8; 16] = rng.random();
    let mut ids: Vec<Vec<u8>> = Vec::with_capacity(SPANS_PER_TRACE);
    for _ in 0..SPANS_PER_TRACE {
        ids.push(rng.random::<[u8; 8]>().to_vec());
    }
    let failed = rng.random_bool(0.02);
    let user = rng.random_range(1..100_000i64);
    // (service, parent index, name, kind, start ms, duration ms, attributes)
    let plan: [Planned; SPANS_PER_TRACE] = [
        (
            0,
            None,
            "GET /checkout",
            2,
            0,
            120,
            vec![
                kv("http.request.method", "GET"),
                kv("http.route", "/checkout"),
                int_kv("http.response.status_code", if failed { 502 } else { 200 }),
            ],
        ),
        (
            0,
            Some(0),
            "proxy frontend",
            3,
            1,
            118,
            vec![kv("server.address", "frontend")],
        ),
        (
            1,
            Some(1),
            "POST /checkout",
            2,
            2,
            115,
            vec![int_kv("app.user_id", user)],
        ),
        (
            1,
            Some(2),
            "GET cart",
            3,
            3,
            20,
            vec![kv("server.address", "cart")],
        ),
        (2, Some(3), "ingress", 2, 4, 18, vec![]),
        (
            3,
            Some(4),
            "GET /cart",
            2,
            5,
            15,
            vec![int_kv("app.items", rng.random_range(0..9))],
        ),
        (
            3,
            Some(5),
            "HGETALL",
            3,
            6,
            2,
            vec![kv("db.system", "redis"), kv("server.address", "redis")],
        ),
        (
            1,
            Some(2),
            "GET catalog",
            3,
            25,
            30,
            vec![kv("server.address", "catalog")],
        ),
        (4, Some(7), "GET /items", 2, 26, 28, vec![]),
        (
            4,
            Some(8),
            "SELECT items",
            3,
            27,
            rng.random_range(2..20),
            vec![
                kv("db.system", "postgresql"),
                kv("db.name", "catalogdb"),
                kv("db.statement", "SELECT * FROM items WHERE id = $1"),
            ],
        ),
        (
            5,
            Some(2),
            "POST /pay",
            2,
            60,
            50,
            vec![kv("payment.method", "card")],
        ),
        (
            6,
            Some(10),
            "orders process",
            5,
            80,
            30,
            vec![
                kv("messaging.system", "kafka"),
                kv("messaging.destination.name", "orders"),
            ],
        ),
    ];
    let spans = plan
        .into_iter()
        .enumerate()
        .map(
            |(i, (service, parent, name, kind, start, dur, attributes))| {
                let error = failed && (i == 10 || i == 0);
                (
                    service,
                    Span {
                        trace_id: tid.to_vec(),
                        span_id: ids[i].clone(),
                        parent_span_id: parent.map(|p| ids[p].clone()).unwrap_or_default(),
                        name: name.into(),
                        kind,
                        start_time_unix_nano: base + start * MS,
                        end_time_unix_nano: base + (start + dur) * MS,
                        attributes,
                        status: error.then(|| Status {
                            message: "payment provider unavailable".into(),
                            code: 2,
                        }),
                        ..Default::default()
                    },
                )
            },
        )
        .collect();
    (tid, spans)
}

/// One export request of `traces` traces, generated from `seed`; and its first trace id.
fn request(seed: u64, traces: usize, now: u64) -> ([u8; 16], Vec<u8>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut per_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    let mut first = [0u8; 16];
    for i in 0..traces {
        let base = now - rng.random_range(MS..SPAN_WINDOW_NS);
        let (tid, spans) = trace(&mut rng, base);
        if i == 0 {
            first = tid;
        }
        for (s, span) in spans {
            per_service[s].push(span);
        }
    }
    let request = ExportTraceServiceRequest {
        resource_spans: per_service
            .into_iter()
            .enumerate()
            .map(|(s, spans)| {
                resource_spans(
                    vec![
                        kv("service.name", SERVICES[s].0),
                        kv("periscope.component.kind", SERVICES[s].1),
                        kv(
                            "service.instance.id",
                            &format!("{}-{}", SERVICES[s].0, seed % 3),
                        ),
                        kv("service.version", "2.1.0"),
                        kv("k8s.namespace.name", "shop"),
                    ],
                    spans,
                )
            })
            .collect(),
    };
    (first, request.encode_to_vec())
}

struct Timing {
    name: &'static str,
    ms: Vec<f64>,
    cpu_ms: f64,
    note: String,
}

async fn time_get(
    client: &reqwest::Client,
    pid: u32,
    name: &'static str,
    urls: &[String],
) -> anyhow::Result<Timing> {
    let mut ms = Vec::new();
    let cpu0 = cpu_seconds(pid)?;
    let mut note = String::new();
    for url in urls {
        let t = Instant::now();
        let r = client.get(url).send().await?;
        let status = r.status();
        let body = r.text().await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if !status.is_success() {
            bail!("{url}: HTTP {status}: {body}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        note = if let Some(n) = v["span_count"].as_u64() {
            format!("{n} spans")
        } else if let Some(t) = v["traces"].as_array() {
            format!("{} traces", t.len())
        } else if let Some(e) = v["edges"].as_array() {
            let calls: u64 = e.iter().filter_map(|e| e["calls"].as_u64()).sum();
            format!(
                "{} nodes, {} edges, {calls} calls",
                v["nodes"].as_array().map_or(0, Vec::len),
                e.len()
            )
        } else if let Some(s) = v["services"].as_array() {
            let req: u64 = s.iter().filter_map(|s| s["requests"].as_u64()).sum();
            format!("{} services, {req} requests", s.len())
        } else {
            String::new()
        };
    }
    let cpu_ms = (cpu_seconds(pid)? - cpu0) * 1e3 / urls.len().max(1) as f64;
    Ok(Timing {
        name,
        ms,
        cpu_ms,
        note,
    })
}

/// Runs the benchmark.
pub async fn run(args: TracesArgs) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("--batch must be positive");
    }
    let traces = args.spans / SPANS_PER_TRACE;
    let requests = traces.div_ceil(args.batch);
    let total_spans = requests * args.batch * SPANS_PER_TRACE;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let data_dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let path = match &args.keep {
        Some(dir) => {
            if dir.exists() {
                bail!(
                    "--keep {}: the directory exists; give a new one",
                    dir.display()
                );
            }
            dir.clone()
        }
        None => data_dir.path().join("periscope-data"),
    };
    let mut server = spawn_server_at(&path)?;
    let url = format!("http://{}/v1/traces", server.otlp_http);
    let client = reqwest::Client::new();
    eprintln!(
        "sending {total_spans} spans in {requests} requests of {} traces...",
        args.batch
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let firsts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (next, firsts, client, url) =
            (next.clone(), firsts.clone(), client.clone(), url.clone());
        let batch = args.batch;
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let (first, body) = tokio::task::block_in_place(|| request(i as u64, batch, now));
                if i % (requests / 40).max(1) == 0
                    && let Ok(mut f) = firsts.lock()
                {
                    f.push(first);
                }
                post_export(&client, &url, body).await?;
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let ingest_s = started.elapsed().as_secs_f64();
    eprintln!("sent in {ingest_s:.1}s; flushing...");
    stop(&mut server).await?;
    let parquet = dir_bytes(&path.join("spans"), &|p| {
        p.extension().is_some_and(|x| x == "parquet")
    });

    let mut server = spawn_server_at(&path)?;
    let pid = server.child.id();
    let api = format!("http://{}", server.http);
    let ids: Vec<String> = firsts
        .lock()
        .map(|f| f.iter().map(hex::encode).collect())
        .unwrap_or_default();
    let repeat = args.repeat.max(1);
    let by_id: Vec<String> = ids
        .iter()
        .cycle()
        .take(repeat.max(ids.len()))
        .map(|id| format!("{api}/api/v1/traces/{id}"))
        .collect();
    let jaeger_by_id: Vec<String> = ids
        .iter()
        .cycle()
        .take(repeat.max(ids.len()))
        .map(|id| format!("{api}/api/traces/{id}"))
        .collect();
    let hour = "start=now-1h&end=now";
    let same = |u: String| vec![u; repeat];
    let mut results = Vec::new();
    // Warm the page cache and the file metadata once, as a running server would be.
    let _ = client.get(&by_id[0]).send().await?.text().await?;
    results.push(time_get(&client, pid, "trace by id (/api/v1/traces/{id})", &by_id).await?);
    results.push(
        time_get(
            &client,
            pid,
            "trace by id (Jaeger /api/traces/{id})",
            &jaeger_by_id,
        )
        .await?,
    );
    results.push(
        time_get(
            &client,
            pid,
            "search: service=payment, 1 h, limit 20",
            &same(format!(
                "{api}/api/v1/traces?service=payment&{hour}&limit=20"
            )),
        )
        .await?,
    );
    results.push(
        time_get(
            &client,
            pid,
            "search: status=error, 1 h, limit 20",
            &same(format!("{api}/api/v1/traces?status=error&{hour}&limit=20")),
        )
        .await?,
    );
    let few = (repeat / 3).max(3);
    results.push(
        time_get(
            &client,
            pid,
            "service graph, 1 h",
            &vec![format!("{api}/api/v1/service-graph?{hour}"); few],
        )
        .await?,
    );
    results.push(
        time_get(
            &client,
            pid,
            "RED per service, 1 h",
            &vec![format!("{api}/api/v1/services?{hour}"); few],
        )
        .await?,
    );

    println!(
        "periscope-bench traces --spans {} --batch {} --concurrency {} --repeat {}",
        args.spans, args.batch, args.concurrency, args.repeat
    );
    println!(
        "stored {total_spans} spans ({} traces) over the last 2 h; ingest {ingest_s:.1} s ({:.0} spans/s); Parquet {:.1} B/span",
        total_spans / SPANS_PER_TRACE,
        total_spans as f64 / ingest_s,
        parquet as f64 / total_spans as f64
    );
    println!(
        "{:<44} {:>10} {:>10} {:>12}  answer",
        "query", "median ms", "max ms", "server CPU ms"
    );
    for t in &results {
        let max = t.ms.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<44} {:>10.1} {:>10.1} {:>12.1}  {}",
            t.name,
            median(t.ms.clone()),
            max,
            t.cpu_ms,
            t.note
        );
    }
    let _ = stop(&mut server).await;
    Ok(())
}
