//! `periscope-bench agent`: the cost of the agent in a gateway. Two `periscope gateway`
//! processes proxy to the same fast upstream on loopback, one with the agent exporting to
//! an OTLP sink and one with `--no-telemetry`; the same closed-loop load is sent to each
//! in alternating rounds. Prints throughput, the gateway's CPU per request (from /proc)
//! and latency for both, and the difference.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use clap::Args;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use prost::Message;

use crate::harness::{cpu_seconds, parse_duration, periscope_exe};

/// Arguments of `periscope-bench agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Length of each measured round.
    #[arg(long, default_value = "8s", value_name = "DURATION")]
    pub duration: String,
    /// Rounds; each measures the gateway without and with the agent (order alternates).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
}

/// An OTLP/HTTP receiver that accepts and discards spans and logs without decoding them
/// (the sink must not starve the gateway of CPU), and reads the agent's own counters from
/// its metrics exports.
#[derive(Default, Clone)]
struct Sink {
    bytes: Arc<AtomicU64>,
    /// Latest cumulative counters: spans and logs processed, dropped at the queue,
    /// exported, failed.
    counters: Arc<std::sync::Mutex<std::collections::BTreeMap<String, i64>>>,
}

async fn sink_items(State(sink): State<Sink>, body: Bytes) -> StatusCode {
    sink.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    StatusCode::OK
}

async fn sink_metrics(State(sink): State<Sink>, body: Bytes) -> StatusCode {
    let Ok(req) = ExportMetricsServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(mut counters) = sink.counters.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    for m in req
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name.starts_with("otel.sdk."))
    {
        if let Some(Data::Sum(sum)) = &m.data {
            for p in &sum.data_points {
                let error = p
                    .attributes
                    .iter()
                    .find(|a| a.key == "error.type")
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    });
                let key = format!(
                    "{}{}",
                    m.name,
                    error.map(|e| format!("{{{e}}}")).unwrap_or_default()
                );
                if let Some(number_data_point::Value::AsInt(v)) = p.value {
                    counters.insert(key, v);
                }
            }
        }
    }
    StatusCode::OK
}

struct GatewayProcess {
    child: Child,
    addr: String,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_gateway(config: &std::path::Path, no_telemetry: bool) -> anyhow::Result<GatewayProcess> {
    let mut cmd = Command::new(periscope_exe()?);
    cmd.args(["gateway", "--log", "warn", "--config"])
        .arg(config);
    if no_telemetry {
        cmd.arg("--no-telemetry");
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("gateway="))
        .with_context(|| format!("gateway did not start: {line:?}"))?
        .to_owned();
    Ok(GatewayProcess { child, addr })
}

/// One measured round against one gateway.
struct Round {
    requests: u64,
    seconds: f64,
    cpu: f64,
    latencies: Vec<Duration>,
}

async fn load(
    gw: &GatewayProcess,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Round> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let url = format!("http://{}/", gw.addr);
    // Warm the connections.
    for _ in 0..connections {
        client.get(&url).send().await?.bytes().await?;
    }
    let pid = gw.child.id();
    let cpu0 = cpu_seconds(pid)?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = Vec::new();
    for _ in 0..connections {
        let client = client.clone();
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match client.get(&url).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    n += 1;
                    if n.is_multiple_of(8) {
                        lat.push(t.elapsed());
                    }
                }
            }
            (n, lat)
        }));
    }
    let mut requests = 0;
    let mut latencies = Vec::new();
    for w in workers {
        let (n, lat) = w.await?;
        requests += n;
        latencies.extend(lat);
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    Ok(Round {
        requests,
        seconds,
        cpu,
        latencies,
    })
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

#[derive(Default)]
struct Totals {
    requests: u64,
    seconds: f64,
    cpu: f64,
    latencies: Vec<Duration>,
}

impl Totals {
    fn add(&mut self, r: Round) {
        self.requests += r.requests;
        self.seconds += r.seconds;
        self.cpu += r.cpu;
        self.latencies.extend(r.latencies);
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / self.requests.max(1) as f64
    }
}

/// Runs the benchmark.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let duration = parse_duration("duration", &args.duration)?;
    let sink = Sink::default();
    let sink_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink_listener.local_addr()?;
    let sink_app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(sink_items))
        .route("/v1/logs", axum::routing::post(sink_items))
        .route("/v1/metrics", axum::routing::post(sink_metrics))
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
        .with_state(sink.clone());
    tokio::spawn(async move {
        let _ = axum::serve(sink_listener, sink_app).await;
    });
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr: SocketAddr = upstream.local_addr()?;
    tokio::spawn(async move {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let _ = axum::serve(upstream, app).await;
    });

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nservice_name = \"bench-gateway\"\n\n[telemetry]\nendpoint = \"http://{sink_addr}\"\nprotocol = \"http/protobuf\"\nmetrics_interval = \"1s\"\n\n[[upstream]]\nname = \"app\"\ntargets = [\"{upstream_addr}\"]\n\n[[route]]\nupstream = \"app\"\n"
        ),
    )?;
    let off = spawn_gateway(&config, true)?;
    let on = spawn_gateway(&config, false)?;
    println!(
        "periscope-bench agent: {} rounds × {:?} per mode, {} connections, upstream answers \"ok\" on loopback",
        args.rounds, duration, args.connections
    );
    let mut without = Totals::default();
    let mut with = Totals::default();
    for round in 0..args.rounds {
        let order: [(bool, &GatewayProcess); 2] = if round % 2 == 0 {
            [(false, &off), (true, &on)]
        } else {
            [(true, &on), (false, &off)]
        };
        for (agent, gw) in order {
            let r = load(gw, args.connections, duration).await?;
            println!(
                "  round {} {:<13} {:>9.0} req/s  {:>6.1} µs CPU/request",
                round + 1,
                if agent { "agent on" } else { "agent off" },
                r.requests as f64 / r.seconds,
                r.cpu * 1e6 / r.requests.max(1) as f64
            );
            if agent {
                with.add(r);
            } else {
                without.add(r);
            }
        }
    }
    // Wait (at most 10 s) until the agent reports every queued span and log as exported
    // or failed: its counters arrive with each 1 s metrics export.
    let settled = |c: &std::collections::BTreeMap<String, i64>| {
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        ["span", "log"].iter().all(|s| {
            let queued = get(&format!("otel.sdk.processor.{s}.processed"));
            queued > 0
                && queued
                    == get(&format!("otel.sdk.exporter.{s}.exported"))
                        + get(&format!("otel.sdk.exporter.{s}.exported{{export_failed}}"))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !sink.counters.lock().map(|c| settled(&c)).unwrap_or(false) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let loss = (1.0 - with.rps() / without.rps()) * 100.0;
    let added = with.cpu_us() - without.cpu_us();
    println!();
    println!(
        "{:<12} {:>12} {:>16} {:>10} {:>10}",
        "", "req/s", "CPU µs/request", "p50", "p99"
    );
    for (name, t) in [("agent off", &mut without), ("agent on", &mut with)] {
        let p50 = percentile(&mut t.latencies, 0.5);
        let p99 = percentile(&mut t.latencies, 0.99);
        println!(
            "{:<12} {:>12.0} {:>16.2} {:>10.0?} {:>10.0?}",
            name,
            t.rps(),
            t.cpu_us(),
            p50,
            p99
        );
    }
    println!();
    println!(
        "added CPU per request: {added:.2} µs (target ≤ 2 µs); throughput loss: {loss:.1}% (target ≤ 5%)"
    );
    let counters = sink.counters.lock().map(|c| c.clone()).unwrap_or_default();
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    println!(
        "agent counters: spans queued {}, dropped (queue full) {}, exported {}, failed {}; logs queued {}, dropped {}, exported {}",
        get("otel.sdk.processor.span.processed"),
        get("otel.sdk.processor.span.processed{queue_full}"),
        get("otel.sdk.exporter.span.exported"),
        get("otel.sdk.exporter.span.exported{export_failed}"),
        get("otel.sdk.processor.log.processed"),
        get("otel.sdk.processor.log.processed{queue_full}"),
        get("otel.sdk.exporter.log.exported"),
    );
    println!(
        "OTLP bytes received: {:.1} MiB ({:.0} bytes per request)",
        sink.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        sink.bytes.load(Ordering::Relaxed) as f64 / with.requests.max(1) as f64
    );
    Ok(())
}
