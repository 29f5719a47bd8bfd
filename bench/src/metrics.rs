//! `periscope-bench metrics`: remote-writes counter samples (100,000 series every 15 s for
//! 6 hours by default) to a Periscope server and to a real Prometheus on the same machine,
//! then runs the same PromQL queries on both and prints each figure side by side with the
//! ratio Periscope ÷ Prometheus.
//!
//! Both receive the same remote-write requests, in time order (series chunks inside each
//! time window), as a Prometheus agent sends them. Bytes on disk are Periscope's Parquet
//! files after the final flush, and Prometheus's TSDB directory (WAL, head chunks and any
//! compacted blocks) after ingest.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use prost::Message;
use serde_json::Value;

use crate::harness::{cpu_seconds, dir_bytes, median, spawn_server_at, stop};
use crate::remote_write::{Label, Sample, TimeSeries, WriteRequest};

/// Arguments of `periscope-bench metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Active series (100 services × 10 instances × endpoints).
    #[arg(long, default_value_t = 100_000)]
    pub series: usize,
    /// Hours of data, ending now.
    #[arg(long, default_value_t = 6.0)]
    pub hours: f64,
    /// Seconds between samples of a series.
    #[arg(long, default_value_t = 15)]
    pub interval: u64,
    /// Series per remote-write request.
    #[arg(long, default_value_t = 2_000)]
    pub batch_series: usize,
    /// Samples per series per request (consecutive instants).
    #[arg(long, default_value_t = 20)]
    pub batch_steps: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Times each query runs (the median is printed).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// The Prometheus binary to compare with; `none` skips the comparison.
    #[arg(long, default_value = "prometheus")]
    pub prometheus: String,
    /// Keep Periscope's data directory here (it must not exist).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Send Periscope the same samples as OTLP/HTTP metrics exports (a monotonic sum
    /// `bench_requests`, which PromQL names `bench_requests_total`; `job` from the
    /// resource's `service.name`) instead of remote write. Prometheus 2.42 has no OTLP
    /// receiver: it still gets remote write.
    #[arg(long)]
    pub otlp: bool,
}

const METRIC: &str = "bench_requests_total";

/// The labels of series `s`.
fn labels(s: usize) -> Vec<Label> {
    let label = |name: &str, value: String| Label {
        name: name.to_string(),
        value,
    };
    vec![
        label("__name__", METRIC.to_string()),
        label("endpoint", format!("/api/v1/ep{}", s % 100)),
        label("instance", format!("inst-{}", (s / 100) % 10)),
        label("job", "bench".to_string()),
        label("service", format!("svc-{:03}", s / 1000)),
    ]
}

/// A monotonic counter: `rate` grows by 3..19 per step, with jitter smaller than that.
fn value(s: usize, k: usize) -> f64 {
    let rate = 3 + (s % 17);
    let jitter = (s.wrapping_mul(2_654_435_761) ^ k.wrapping_mul(40_503)) % 3;
    (k * rate + jitter) as f64
}

/// The plan of requests: time windows outer, series chunks inner.
#[derive(Debug, Clone, Copy)]
struct Plan {
    series: usize,
    steps: usize,
    batch_series: usize,
    batch_steps: usize,
    first_ms: i64,
    interval_ms: i64,
}

impl Plan {
    fn chunks(&self) -> usize {
        self.series.div_ceil(self.batch_series)
    }

    fn requests(&self) -> usize {
        self.chunks() * self.steps.div_ceil(self.batch_steps)
    }

    fn samples(&self) -> usize {
        self.series * self.steps
    }

    /// The instants and series of request `i`.
    fn request(&self, i: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (window, chunk) = (i / self.chunks(), i % self.chunks());
        let steps = window * self.batch_steps..((window + 1) * self.batch_steps).min(self.steps);
        let series = chunk * self.batch_series..((chunk + 1) * self.batch_series).min(self.series);
        (steps, series)
    }

    /// Request `i` as the body of `protocol`.
    fn body(&self, i: usize, protocol: Protocol) -> anyhow::Result<Vec<u8>> {
        match protocol {
            Protocol::RemoteWrite => self.remote_write_body(i),
            Protocol::Otlp => Ok(self.otlp_body(i)),
        }
    }

    /// Request `i` as an OTLP metrics export: one monotonic cumulative sum whose points
    /// carry the series' labels (but `job`, the resource's `service.name`).
    fn otlp_body(&self, i: usize) -> Vec<u8> {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::metrics::v1::{
            AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
            metric::Data, number_data_point,
        };
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let (steps, series) = self.request(i);
        let mut points = Vec::with_capacity(steps.len() * series.len());
        for s in series {
            let attributes: Vec<_> = labels(s)
                .into_iter()
                .filter(|l| l.name != "__name__" && l.name != "job")
                .map(|l| crate::harness::kv(&l.name, &l.value))
                .collect();
            for k in steps.clone() {
                points.push(NumberDataPoint {
                    attributes: attributes.clone(),
                    time_unix_nano: ((self.first_ms + k as i64 * self.interval_ms) as u64)
                        * 1_000_000,
                    value: Some(number_data_point::Value::AsDouble(value(s, k))),
                    ..Default::default()
                });
            }
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![crate::harness::kv("service.name", "bench")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: METRIC.trim_end_matches("_total").to_string(),
                        data: Some(Data::Sum(Sum {
                            data_points: points,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    /// Request `i`, snappy-compressed.
    fn remote_write_body(&self, i: usize) -> anyhow::Result<Vec<u8>> {
        let (steps, series) = self.request(i);
        let request = WriteRequest {
            timeseries: series
                .map(|s| TimeSeries {
                    labels: labels(s),
                    samples: steps
                        .clone()
                        .map(|k| Sample {
                            value: value(s, k),
                            timestamp: self.first_ms + k as i64 * self.interval_ms,
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            metadata: Vec::new(),
        };
        Ok(snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())?)
    }
}

/// How samples are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Prometheus remote write 1.0.
    RemoteWrite,
    /// OTLP/HTTP protobuf metrics exports.
    Otlp,
}

/// Sends every request of `plan` to `url` in order with `concurrency` in flight; returns
/// the seconds it took and how many retries back-pressure caused.
async fn send_all(
    plan: Plan,
    url: &str,
    concurrency: usize,
    protocol: Protocol,
) -> anyhow::Result<(f64, u64)> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(concurrency * 4);
    let producer = tokio::task::spawn_blocking(move || {
        for i in 0..plan.requests() {
            let body = plan.body(i, protocol)?;
            if tx.blocking_send(body).is_err() {
                break;
            }
        }
        Ok::<(), anyhow::Error>(())
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (rx, client, url) = (rx.clone(), client.clone(), url.to_string());
        workers.spawn(async move {
            let mut retries = 0u64;
            loop {
                let Some(body) = rx.lock().await.recv().await else {
                    break;
                };
                loop {
                    let mut request = client
                        .post(&url)
                        .header("Content-Type", "application/x-protobuf");
                    if protocol == Protocol::RemoteWrite {
                        request = request
                            .header("Content-Encoding", "snappy")
                            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
                    }
                    let r = request.body(body.clone()).send().await?;
                    match r.status().as_u16() {
                        200 | 204 => break,
                        429 | 503 => {
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => bail!(
                            "remote write to {url} failed with HTTP {other}: {}",
                            r.text().await.unwrap_or_default()
                        ),
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
    producer.await??;
    Ok((started.elapsed().as_secs_f64(), retries))
}

/// A Prometheus server with remote write receiving, in a temporary directory.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(binary: &str) -> anyhow::Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--web.enable-remote-write-receiver", "--log.level=warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {binary} (install Prometheus or pass --prometheus none)")
            })?;
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = client.get(format!("{}/-/ready", p.url)).send().await
                && r.status().is_success()
            {
                return Ok(p);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("prometheus did not become ready")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One query of the comparison.
struct Query {
    label: &'static str,
    path: &'static str,
    params: Vec<(&'static str, String)>,
}

fn queries(end_ms: i64) -> Vec<Query> {
    let secs = |ms: i64| format!("{}", ms as f64 / 1000.0);
    let range = |q: &str| {
        vec![
            ("query", q.to_string()),
            ("start", secs(end_ms - 3_600_000)),
            ("end", secs(end_ms)),
            ("step", "15".to_string()),
        ]
    };
    let instant = |q: &str| vec![("query", q.to_string()), ("time", secs(end_ms))];
    vec![
        Query {
            label: "query_range sum by (service) (rate(x[5m])), 1h at 15s",
            path: "query_range",
            params: range(&format!("sum by (service) (rate({METRIC}[5m]))")),
        },
        Query {
            label: "query_range one service's rate, 1h at 15s",
            path: "query_range",
            params: range(&format!(r#"sum(rate({METRIC}{{service="svc-007"}}[5m]))"#)),
        },
        Query {
            label: "instant topk(5, sum by (service) (rate(x[5m])))",
            path: "query",
            params: instant(&format!("topk(5, sum by (service) (rate({METRIC}[5m])))")),
        },
        Query {
            label: "instant count(x)",
            path: "query",
            params: instant(&format!("count({METRIC})")),
        },
    ]
}

/// Runs a query `repeat` times; returns the median milliseconds and the last answer.
async fn time_query(base: &str, q: &Query, repeat: usize) -> anyhow::Result<(f64, Value)> {
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    let mut last = Value::Null;
    for _ in 0..repeat.max(1) {
        let started = Instant::now();
        let r = client
            .get(format!("{base}/api/v1/{}", q.path))
            .query(&q.params)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            bail!("{} on {base} failed: {body}", q.label);
        }
        last = body;
    }
    Ok((median(times), last))
}

/// Whether two answers hold the same series with values equal to 1e-9 relative.
fn same_answer(a: &Value, b: &Value) -> bool {
    let points = |v: &Value| -> Vec<(String, Vec<f64>)> {
        let mut out: Vec<(String, Vec<f64>)> = v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let values = s
                    .get("values")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_else(|| vec![s["value"].clone()]);
                (
                    s["metric"].to_string(),
                    values
                        .iter()
                        .map(|p| {
                            p[1].as_str()
                                .and_then(|x| x.parse().ok())
                                .unwrap_or(f64::NAN)
                        })
                        .collect(),
                )
            })
            .collect();
        out.sort_by(|x, y| x.0.cmp(&y.0));
        out
    };
    let (a, b) = (points(a), points(b));
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            x.0 == y.0
                && x.1.len() == y.1.len()
                && x.1.iter().zip(&y.1).all(|(p, q)| {
                    (p.is_nan() && q.is_nan())
                        || (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0)
                })
        })
}

fn row(label: &str, ours: f64, theirs: Option<f64>, unit: &str) {
    match theirs {
        Some(t) if t > 0.0 => println!(
            "{label:<58} {ours:>12.3} {t:>12.3} {:>8.2}  {unit}",
            ours / t
        ),
        Some(t) => println!("{label:<58} {ours:>12.3} {t:>12.3} {:>8}  {unit}", "-"),
        None => println!("{label:<58} {ours:>12.3} {:>12} {:>8}  {unit}", "-", "-"),
    }
}

/// Ingest seconds, CPU seconds, bytes on disk, and each query's median ms and answer.
type Measured = (f64, f64, f64, Vec<(f64, Value)>);

/// Runs `periscope-bench metrics`.
pub async fn run(args: MetricsArgs) -> anyhow::Result<()> {
    if args.batch_series == 0 || args.batch_steps == 0 || args.interval == 0 || args.series == 0 {
        bail!("--series, --interval, --batch-series and --batch-steps must be positive");
    }
    let interval_ms = args.interval as i64 * 1000;
    let steps = ((args.hours * 3_600_000.0) / interval_ms as f64).round() as usize;
    if steps == 0 {
        bail!("--hours must cover at least one interval");
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let last_ms = now_ms / interval_ms * interval_ms - interval_ms;
    let plan = Plan {
        series: args.series,
        steps,
        batch_series: args.batch_series,
        batch_steps: args.batch_steps,
        first_ms: last_ms - (steps as i64 - 1) * interval_ms,
        interval_ms,
    };
    let samples = plan.samples() as f64;
    eprintln!(
        "{} series × {steps} samples = {} samples in {} remote-write requests",
        args.series,
        plan.samples(),
        plan.requests()
    );

    let data_dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let path = match &args.keep {
        Some(dir) if dir.exists() => bail!("--keep {}: the directory exists", dir.display()),
        Some(dir) => dir.clone(),
        None => data_dir.path().join("periscope-data"),
    };

    // Periscope: ingest, flush, then query from the files.
    let mut server = spawn_server_at(&path)?;
    let pid = server.child.id();
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    let (url, protocol) = if args.otlp {
        (
            format!("http://{}/v1/metrics", server.otlp_http),
            Protocol::Otlp,
        )
    } else {
        (
            format!("http://{}/api/v1/write", server.http),
            Protocol::RemoteWrite,
        )
    };
    let (ingest_s, retries) = send_all(plan, &url, args.concurrency, protocol).await?;
    let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    eprintln!("periscope: ingested in {ingest_s:.1}s ({retries} retries); flushing...");
    stop(&mut server).await?;
    let bytes = dir_bytes(&path.join("metrics"), &|p: &Path| {
        p.extension().is_some_and(|x| x == "parquet")
    }) as f64;
    let mut server = spawn_server_at(&path)?;
    let api = format!("http://{}", server.http);
    let mut ours = Vec::new();
    for q in queries(last_ms) {
        ours.push(time_query(&api, &q, args.repeat).await?);
    }

    // Prometheus: the same requests and queries.
    let mut theirs: Option<Measured> = None;
    if args.prometheus != "none" {
        let prometheus = Prometheus::start(&args.prometheus).await?;
        let ppid = prometheus.child.id();
        let before = cpu_seconds(ppid).unwrap_or(0.0);
        let (seconds, _) = send_all(
            plan,
            &format!("{}/api/v1/write", prometheus.url),
            args.concurrency,
            Protocol::RemoteWrite,
        )
        .await?;
        let cpu = cpu_seconds(ppid).unwrap_or(0.0) - before;
        eprintln!("prometheus: ingested in {seconds:.1}s");
        let bytes = dir_bytes(&prometheus.data(), &|_| true) as f64;
        let mut answers = Vec::new();
        for q in queries(last_ms) {
            answers.push(time_query(&prometheus.url, &q, args.repeat).await?);
        }
        theirs = Some((seconds, cpu, bytes, answers));
    }

    println!(
        "\n{} series, {}s interval, {:.1} h: {} samples (periscope over {})",
        args.series,
        args.interval,
        args.hours,
        plan.samples(),
        if args.otlp {
            "OTLP/HTTP"
        } else {
            "remote write"
        }
    );
    println!(
        "{:<58} {:>12} {:>12} {:>8}",
        "", "periscope", "prometheus", "ratio"
    );
    row(
        "ingest (samples/s)",
        samples / ingest_s,
        theirs.as_ref().map(|t| samples / t.0),
        "samples/s",
    );
    row(
        "server CPU per sample",
        cpu / samples * 1e6,
        theirs.as_ref().map(|t| t.1 / samples * 1e6),
        "µs",
    );
    row(
        "bytes on disk per sample",
        bytes / samples,
        theirs.as_ref().map(|t| t.2 / samples),
        "bytes",
    );
    for (i, q) in queries(last_ms).iter().enumerate() {
        let mine = ours[i].0;
        let other = theirs.as_ref().map(|t| t.3[i].0);
        row(q.label, mine, other, "ms (median)");
        if let Some(t) = &theirs {
            let agree = same_answer(&ours[i].1, &t.3[i].1);
            println!("{:<58} answers agree: {agree}", "");
        }
    }
    stop(&mut server).await?;
    Ok(())
}
