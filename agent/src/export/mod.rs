//! The exporter: a bounded queue the request path writes to without waiting, one task
//! that batches spans and logs and sends them to the collector with retries, and a
//! periodic metrics export.
//!
//! When the collector is slow or down the queue fills and further items are dropped and
//! counted (`otel.sdk.processor.*.processed{error.type="queue_full"}`); a batch whose
//! retries run out is dropped and counted too. Nothing ever blocks the caller.

pub mod transport;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{HttpMetrics, Signal, SignalStats};
use transport::{Request, Transport};

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// OTLP/gRPC (default port 4317).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// None (the OpenTelemetry SDKs' default).
    None,
    /// gzip.
    Gzip,
}

/// Exporter settings.
#[derive(Debug, Clone)]
pub struct ExporterConfig {
    /// Collector endpoint: `http://HOST:4317` for gRPC, `http://HOST:4318` for HTTP.
    pub endpoint: String,
    /// Transport.
    pub protocol: Protocol,
    /// Compression.
    pub compression: Compression,
    /// Headers on every export (e.g. `authorization = "Bearer …"`).
    pub headers: Vec<(String, String)>,
    /// Items the queue holds before dropping (spans and logs together).
    pub queue_size: usize,
    /// Items per export request.
    pub max_batch: usize,
    /// How long an item may wait for a batch to fill.
    pub batch_delay: Duration,
    /// Deadline of one export call.
    pub timeout: Duration,
    /// How long one batch is retried before it is dropped.
    pub max_retry_time: Duration,
    /// How often metrics are exported.
    pub metrics_interval: Duration,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: Protocol::Grpc,
            compression: Compression::None,
            headers: Vec::new(),
            queue_size: 4096,
            max_batch: 512,
            batch_delay: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            max_retry_time: Duration::from_secs(30),
            metrics_interval: Duration::from_secs(10),
        }
    }
}

/// Which instrumentation produced an item (its OTLP scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Scope {
    /// The HTTP tower layers.
    Http,
    /// The `tracing` layer.
    Tracing,
}

impl Scope {
    pub(crate) fn proto(self) -> InstrumentationScope {
        InstrumentationScope {
            name: match self {
                Scope::Http => "periscope-agent/http".into(),
                Scope::Tracing => "periscope-agent/tracing".into(),
            },
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }
    }
}

/// One item on the queue: an encoded OTLP `Span` or `LogRecord`.
pub(crate) enum Item {
    Span(Scope, Vec<u8>),
    Log(Scope, Vec<u8>),
}

/// Shared between the request path and the exporter task.
pub(crate) struct Shared {
    pub resource: Resource,
    /// `resource`, encoded once.
    pub resource_bytes: Vec<u8>,
    /// The scopes, encoded once, in [`Scope`] order.
    pub scope_bytes: [Vec<u8>; 2],
    pub spans: SignalStats,
    pub logs: SignalStats,
    pub http: HttpMetrics,
    pub start_ns: u64,
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Commands to the exporter task.
pub(crate) enum Control {
    /// Send everything queued, then answer.
    Flush(oneshot::Sender<()>),
    /// Flush, export metrics a last time, stop.
    Shutdown(oneshot::Sender<()>),
}

/// The exporter task: batches the queue and exports, and exports metrics on a timer.
pub(crate) async fn run(
    config: ExporterConfig,
    transport: Transport,
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Item>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut batch = Batch::default();
    let mut tick = tokio::time::interval(config.batch_delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics_tick = tokio::time::interval(config.metrics_interval);
    metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    metrics_tick.tick().await;
    loop {
        tokio::select! {
            biased;
            cmd = control.recv() => {
                while let Ok(item) = queue.try_recv() {
                    batch.push(item);
                    if batch.len() >= config.max_batch {
                        export_batch(&config, &transport, &shared, &mut batch).await;
                    }
                }
                export_batch(&config, &transport, &shared, &mut batch).await;
                match cmd {
                    Some(Control::Flush(done)) => { let _ = done.send(()); }
                    Some(Control::Shutdown(done)) => {
                        export_metrics(&config, &transport, &shared).await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                }
            }
            item = queue.recv() => match item {
                Some(item) => {
                    batch.push(item);
                    if batch.len() >= config.max_batch {
                        export_batch(&config, &transport, &shared, &mut batch).await;
                    }
                }
                None => {
                    export_batch(&config, &transport, &shared, &mut batch).await;
                    return;
                }
            },
            _ = tick.tick() => {
                export_batch(&config, &transport, &shared, &mut batch).await;
            }
            _ = metrics_tick.tick() => {
                export_metrics(&config, &transport, &shared).await;
            }
        }
    }
}

/// Spans and logs waiting to be sent, by scope.
#[derive(Default)]
struct Batch {
    spans: Vec<(Scope, Vec<u8>)>,
    logs: Vec<(Scope, Vec<u8>)>,
}

impl Batch {
    fn push(&mut self, item: Item) {
        match item {
            Item::Span(scope, s) => self.spans.push((scope, s)),
            Item::Log(scope, l) => self.logs.push((scope, l)),
        }
    }

    fn len(&self) -> usize {
        self.spans.len() + self.logs.len()
    }
}

/// The export request framing `items` (encoded spans or log records) under the resource,
/// grouped by scope.
fn request_bytes(shared: &Shared, items: &[(Scope, Vec<u8>)]) -> Vec<u8> {
    let mut groups: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
    for scope in [Scope::Http, Scope::Tracing] {
        let of_scope: Vec<&[u8]> = items
            .iter()
            .filter(|(s, _)| *s == scope)
            .map(|(_, b)| b.as_slice())
            .collect();
        if !of_scope.is_empty() {
            groups.push((&shared.scope_bytes[scope as usize], of_scope));
        }
    }
    crate::encode::export_request(&shared.resource_bytes, &groups)
}

async fn export_batch(
    config: &ExporterConfig,
    transport: &Transport,
    shared: &Shared,
    batch: &mut Batch,
) {
    let spans = std::mem::take(&mut batch.spans);
    let logs = std::mem::take(&mut batch.logs);
    if !spans.is_empty() {
        let body = bytes::Bytes::from(request_bytes(shared, &spans));
        let ok = send_with_retries(config, transport, || Request::Traces(body.clone())).await;
        record_outcome(&shared.spans, spans.len() as u64, ok);
    }
    if !logs.is_empty() {
        let body = bytes::Bytes::from(request_bytes(shared, &logs));
        let ok = send_with_retries(config, transport, || Request::Logs(body.clone())).await;
        record_outcome(&shared.logs, logs.len() as u64, ok);
    }
}

fn record_outcome(stats: &SignalStats, n: u64, ok: bool) {
    use std::sync::atomic::Ordering;
    if ok {
        stats.exported.fetch_add(n, Ordering::Relaxed);
    } else {
        stats.export_failed.fetch_add(n, Ordering::Relaxed);
    }
}

/// Sends a request, retrying retryable failures with exponential backoff and jitter
/// (or the server's requested delay) until `max_retry_time` has passed.
async fn send_with_retries(
    config: &ExporterConfig,
    transport: &Transport,
    request: impl Fn() -> Request,
) -> bool {
    let deadline = tokio::time::Instant::now() + config.max_retry_time;
    let mut backoff = Duration::from_millis(100);
    loop {
        match transport.send(request(), config.timeout).await {
            Ok(()) => return true,
            Err(f) => {
                let wait = f.retry_after.unwrap_or_else(|| {
                    let jitter = rand::random_range(0.5..1.0);
                    backoff.mul_f64(jitter)
                });
                let now = tokio::time::Instant::now();
                if !f.retryable || now + wait > deadline {
                    tracing::debug!(error = %f.message, "telemetry export dropped");
                    return false;
                }
                tracing::trace!(error = %f.message, ?wait, "telemetry export retrying");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Exports the HTTP histograms and the agent's own counters once (cumulative: a failed
/// export loses nothing, the next one carries the totals).
async fn export_metrics(config: &ExporterConfig, transport: &Transport, shared: &Shared) {
    let now = now_ns();
    let mut metrics = shared.http.collect(shared.start_ns, now);
    metrics.extend(
        shared
            .spans
            .collect(Signal::Span, transport.kind(), shared.start_ns, now),
    );
    metrics.extend(
        shared
            .logs
            .collect(Signal::Log, transport.kind(), shared.start_ns, now),
    );
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(shared.resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(Scope::Http.proto()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    if let Err(f) = transport
        .send(
            Request::Metrics(bytes::Bytes::from(request.encode_to_vec())),
            config.timeout,
        )
        .await
    {
        tracing::debug!(error = %f.message, "metrics export failed; the next carries the totals");
    }
}
