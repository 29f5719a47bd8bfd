//! `periscope-bench ingest`: sends realistic microservice spans over OTLP/gRPC to a
//! Periscope server and prints throughput, server CPU per span and bytes on disk per span.
//!
//! By default it starts its own server (the `periscope` binary, `serve`, in a temporary data
//! directory) so that it can read the server's CPU time from /proc and measure the
//! Parquet bytes after the final flush.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span};
use rand::Rng;

use crate::harness::{cpu_seconds, int_kv, kv, process_state, resource_spans, spawn_server_at};

/// Arguments of `periscope-bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Spans to send in total.
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: usize,
    /// Spans per export request.
    #[arg(long, default_value_t = 2000)]
    pub batch: usize,
    /// Export requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Send to this running server's OTLP/gRPC address instead of starting one (then
    /// only throughput is measured).
    #[arg(long, value_name = "ADDR")]
    pub target: Option<String>,
}

fn parquet_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p: PathBuf = e.path();
            if p.is_dir() {
                parquet_bytes(&p)
            } else if p.extension().is_some_and(|x| x == "parquet") {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            }
        })
        .sum()
}

/// One hop of the synthetic request path: service, span name, kind, parent hop index.
const HOPS: &[(&str, &str, i32, Option<usize>)] = &[
    ("api-gateway", "GET /api/checkout", 2, None),
    ("api-gateway", "POST checkout-service", 3, Some(0)),
    ("checkout-service", "POST /checkout", 2, Some(1)),
    ("checkout-service", "GET cart-service", 3, Some(2)),
    ("cart-service", "GET /cart/{id}", 2, Some(3)),
    ("cart-service", "GET redis", 3, Some(4)),
    ("checkout-service", "POST payment-service", 3, Some(2)),
    ("payment-service", "POST /charge", 2, Some(6)),
    ("payment-service", "INSERT orders", 3, Some(7)),
    ("checkout-service", "publish orders", 4, Some(2)),
];

/// Who a trace is for: the same user, session, cart and client on every hop.
struct Visitor {
    user: u32,
    session: u64,
    cart: u32,
    client: String,
}

impl Visitor {
    fn random(rng: &mut impl Rng) -> Visitor {
        Visitor {
            user: rng.random_range(1..50_000),
            session: rng.random(),
            cart: rng.random_range(1..100_000),
            client: format!(
                "10.0.{}.{}",
                rng.random_range(0..8),
                rng.random_range(1..255)
            ),
        }
    }
}

fn attributes(hop: usize, visitor: &Visitor, status: i64) -> Vec<KeyValue> {
    let (service, name, kind, _) = HOPS[hop];
    let mut a = match (kind, name) {
        (3, "GET redis") => vec![
            kv("db.system.name", "redis"),
            kv("db.operation.name", "GET"),
            kv("db.query.text", "GET cart:{id}"),
            kv("server.address", "redis-cart.shop.svc"),
            int_kv("server.port", 6379),
        ],
        (3, "INSERT orders") => vec![
            kv("db.system.name", "postgresql"),
            kv("db.namespace", "orders"),
            kv("db.operation.name", "INSERT"),
            kv(
                "db.query.text",
                "INSERT INTO orders (id, user_id, total) VALUES ($1, $2, $3)",
            ),
            kv("server.address", "postgres.shop.svc"),
            int_kv("server.port", 5432),
        ],
        (4, _) => vec![
            kv("messaging.system", "kafka"),
            kv("messaging.destination.name", "orders"),
            kv("messaging.operation.type", "send"),
            kv("server.address", "kafka.shop.svc"),
        ],
        _ => vec![
            kv(
                "http.request.method",
                if name.starts_with("GET") {
                    "GET"
                } else {
                    "POST"
                },
            ),
            kv("url.scheme", "http"),
            kv("network.protocol.version", "1.1"),
            int_kv("http.response.status_code", status),
        ],
    };
    match kind {
        2 => {
            a.push(kv(
                "http.route",
                name.split_once(' ').map(|x| x.1).unwrap_or(name),
            ));
            a.push(kv("url.path", &format!("/api/checkout/{}", visitor.cart)));
            a.push(kv("client.address", &visitor.client));
            a.push(kv(
                "user_agent.original",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            ));
            a.push(kv("server.address", &format!("{service}.shop.svc")));
        }
        3 if a.len() < 6 => {
            a.push(kv(
                "server.address",
                &format!("{}.shop.svc", name.split(' ').nth(1).unwrap_or("svc")),
            ));
            a.push(int_kv("server.port", 8080));
        }
        _ => {}
    }
    a.push(kv("user.id", &format!("u{}", visitor.user)));
    a.push(kv("session.id", &format!("{:016x}", visitor.session)));
    a.truncate(10);
    a
}

/// Export requests holding `traces` traces of the 10-hop checkout path each.
fn make_request(traces: usize, rng: &mut impl Rng) -> ExportTraceServiceRequest {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut by_service: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for _ in 0..traces {
        let trace_id: [u8; 16] = rng.random();
        let ids: Vec<[u8; 8]> = (0..HOPS.len()).map(|_| rng.random()).collect();
        let start = now - rng.random_range(0..1_000_000_000u64);
        let error = rng.random_bool(0.02);
        let visitor = Visitor::random(rng);
        for (h, (service, name, kind, parent)) in HOPS.iter().enumerate() {
            let offset = h as u64 * rng.random_range(100_000..400_000);
            let duration = rng.random_range(200_000..(40_000_000 / (h as u64 + 1)));
            let status = if error && h == 0 { 500 } else { 200 };
            let events = if error && h == 7 {
                vec![span::Event {
                    time_unix_nano: start + offset + duration / 2,
                    name: "exception".into(),
                    attributes: vec![
                        kv("exception.type", "PaymentDeclined"),
                        kv("exception.message", "card declined"),
                    ],
                    dropped_attributes_count: 0,
                }]
            } else {
                Vec::new()
            };
            by_service.entry(service).or_default().push(Span {
                trace_id: trace_id.to_vec(),
                span_id: ids[h].to_vec(),
                parent_span_id: parent.map(|p| ids[p].to_vec()).unwrap_or_default(),
                name: (*name).into(),
                kind: *kind,
                start_time_unix_nano: start + offset,
                end_time_unix_nano: start + offset + duration,
                attributes: attributes(h, &visitor, status),
                events,
                status: Some(Status {
                    code: if error && (h == 0 || h == 7) { 2 } else { 0 },
                    message: String::new(),
                }),
                flags: 0x100,
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| {
                resource_spans(
                    vec![
                        kv("service.name", service),
                        kv("service.version", "1.4.2"),
                        kv("service.instance.id", &format!("{service}-7d9f8b6c4-x2x9k")),
                        kv("deployment.environment.name", "production"),
                        kv("k8s.namespace.name", "shop"),
                    ],
                    spans,
                )
            })
            .collect(),
    }
}

/// Runs `periscope-bench ingest`.
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    if args.batch < HOPS.len() || args.spans < args.batch {
        bail!(
            "--batch must be at least {} and --spans at least --batch",
            HOPS.len()
        );
    }
    let traces_per_batch = args.batch / HOPS.len();
    let spans_per_batch = traces_per_batch * HOPS.len();
    let batches = args.spans / spans_per_batch;
    let total = batches * spans_per_batch;
    eprintln!("generating {total} spans in {batches} requests of {spans_per_batch}...");
    let mut rng = rand::rng();
    let requests: Vec<ExportTraceServiceRequest> = (0..batches)
        .map(|_| make_request(traces_per_batch, &mut rng))
        .collect();

    let temp = tempfile::tempdir().context("creating a temporary data directory")?;
    let spawned = match &args.target {
        Some(_) => None,
        None => Some(spawn_server_at(temp.path())?),
    };
    let target = match (&args.target, &spawned) {
        (Some(t), _) => t.clone(),
        (None, Some(s)) => s.grpc.clone(),
        (None, None) => unreachable!("a server was spawned when no target was given"),
    };
    let endpoint = format!("http://{target}");
    let client = TraceServiceClient::connect(endpoint.clone())
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))?
        .max_decoding_message_size(64 << 20);
    let cpu_before = match &spawned {
        Some(s) => cpu_seconds(s.child.id())?,
        None => 0.0,
    };

    let queue = Arc::new(tokio::sync::Mutex::new(requests.into_iter()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let queue = Arc::clone(&queue);
        let mut client = client.clone();
        workers.spawn(async move {
            let mut retries = 0u64;
            loop {
                let Some(mut req) = queue.lock().await.next() else {
                    break;
                };
                loop {
                    // Sent by value: cloning 2,000 spans per export would take CPU from
                    // the server under test. A refused export is replaced by a fresh one
                    // of the same size.
                    match client.export(req).await {
                        Ok(_) => break,
                        Err(status) if status.code() == tonic::Code::Unavailable => {
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            req = make_request(traces_per_batch, &mut rand::rng());
                        }
                        Err(status) => return Err(anyhow::anyhow!("export failed: {status}")),
                    }
                }
            }
            Ok::<u64, anyhow::Error>(retries)
        });
    }
    let mut retries = 0;
    while let Some(r) = workers.join_next().await {
        retries += r??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = total as f64 / elapsed;
    println!(
        "command: periscope-bench ingest --spans {} --batch {} --concurrency {}",
        args.spans, args.batch, args.concurrency
    );
    println!("spans sent:             {total}");
    println!("wall time:              {elapsed:.2} s");
    println!("throughput:             {rate:.0} spans/s (WAL on, fsync per group commit)");
    println!("retried exports (503):  {retries}");
    if let Some(mut s) = spawned {
        let pid = s.child.id();
        let ingest_cpu = cpu_seconds(pid)? - cpu_before;
        println!(
            "server CPU, ingest:     {ingest_cpu:.2} s = {:.2} CPU-us/span",
            ingest_cpu * 1e6 / total as f64
        );
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        // Read the CPU time once the server has exited (a zombie keeps its counters)
        // but before reaping it, so the final flush to Parquet is counted too.
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut total_cpu = None;
        while Instant::now() < deadline {
            if process_state(pid).is_none_or(|state| state == 'Z') {
                total_cpu = cpu_seconds(pid).ok();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = s.child.wait()?;
        if !status.success() {
            bail!("the server exited with {status} while flushing");
        }
        if let Some(cpu) = total_cpu {
            let cpu = cpu - cpu_before;
            println!(
                "server CPU, with flush: {cpu:.2} s = {:.2} CPU-us/span",
                cpu * 1e6 / total as f64
            );
        }
        let bytes = parquet_bytes(&s.data_dir.join("spans"));
        println!(
            "parquet on disk:        {bytes} bytes = {:.1} bytes/span",
            bytes as f64 / total as f64
        );
    }
    Ok(())
}
