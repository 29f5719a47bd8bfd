//! [`Telemetry`]: the handle instrumentation writes spans, logs and measurements to.
//! Cheap to clone; every write is a non-blocking queue push or an in-memory update.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::error::AgentError;
use crate::export::{self, Control, ExporterConfig, Item, Scope, Shared};
use crate::metrics::{HttpMetrics, HttpSeries, SignalCounts, SignalStats};
use crate::resource::ResourceInfo;

/// The handle to one component's telemetry pipeline. A disabled handle (see
/// [`Telemetry::disabled`]) accepts every call and does nothing.
#[derive(Clone)]
pub struct Telemetry {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Item>,
    control: mpsc::UnboundedSender<Control>,
}

impl Inner {
    /// Queues `item`, counted in `stats` as queued, or as dropped when the queue is full.
    fn enqueue(&self, stats: &SignalStats, item: Item) {
        match self.queue.try_send(item) {
            Ok(()) => stats.queued.fetch_add(1, Ordering::Relaxed),
            Err(_) => stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed),
        };
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Starts the exporter task on the current tokio runtime and returns the handle.
    pub fn start(resource: ResourceInfo, config: ExporterConfig) -> Result<Telemetry, AgentError> {
        if config.queue_size == 0 || config.max_batch == 0 {
            return Err(AgentError::Config(
                "queue_size and max_batch must be at least 1".into(),
            ));
        }
        let transport = export::transport::Transport::new(&config)?;
        let resource = resource.to_proto();
        let shared = Arc::new(Shared {
            resource_bytes: resource.encode_to_vec(),
            scope_bytes: [
                Scope::Http.proto().encode_to_vec(),
                Scope::Tracing.proto().encode_to_vec(),
            ],
            resource,
            spans: SignalStats::default(),
            logs: SignalStats::default(),
            http: HttpMetrics::default(),
            start_ns: export::now_ns(),
        });
        let (queue, rx) = mpsc::channel(config.queue_size);
        let (control, control_rx) = mpsc::unbounded_channel();
        tokio::spawn(export::run(
            config,
            transport,
            shared.clone(),
            rx,
            control_rx,
        ));
        Ok(Telemetry {
            inner: Some(Arc::new(Inner {
                shared,
                queue,
                control,
            })),
        })
    }

    /// A handle that records nothing (telemetry switched off).
    pub fn disabled() -> Telemetry {
        Telemetry { inner: None }
    }

    /// Whether this handle records anything.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues a finished span; dropped (and counted) when the queue is full.
    pub fn record_span(&self, scope: Scope, span: Span) {
        if self.inner.is_some() {
            self.record_encoded_span(scope, span.encode_to_vec());
        }
    }

    /// Queues a log record; dropped (and counted) when the queue is full.
    pub fn record_log(&self, scope: Scope, log: LogRecord) {
        if self.inner.is_some() {
            self.record_encoded_log(scope, log.encode_to_vec());
        }
    }

    /// Queues an encoded OTLP `Span`.
    pub(crate) fn record_encoded_span(&self, scope: Scope, span: Vec<u8>) {
        if let Some(inner) = &self.inner {
            inner.enqueue(&inner.shared.spans, Item::Span(scope, span));
        }
    }

    /// Queues an encoded OTLP `LogRecord`.
    pub(crate) fn record_encoded_log(&self, scope: Scope, log: Vec<u8>) {
        if let Some(inner) = &self.inner {
            inner.enqueue(&inner.shared.logs, Item::Log(scope, log));
        }
    }

    /// Records an HTTP request duration in the server or client histogram.
    pub fn record_http(&self, series: &HttpSeries<'_>, seconds: f64) {
        if let Some(inner) = &self.inner {
            inner.shared.http.record(series, seconds);
        }
    }

    /// Counters of spans: queued, dropped, exported, failed.
    pub fn span_counts(&self) -> SignalCounts {
        self.inner
            .as_ref()
            .map(|i| i.shared.spans.snapshot())
            .unwrap_or_default()
    }

    /// Counters of logs: queued, dropped, exported, failed.
    pub fn log_counts(&self) -> SignalCounts {
        self.inner
            .as_ref()
            .map(|i| i.shared.logs.snapshot())
            .unwrap_or_default()
    }

    /// Sends everything queued so far; waits at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        self.command(Control::Flush, timeout).await;
    }

    /// Flushes, exports metrics a last time and stops the exporter; waits at most
    /// `timeout`. Later writes are dropped.
    pub async fn shutdown(&self, timeout: Duration) {
        self.command(Control::Shutdown, timeout).await;
    }

    async fn command(&self, make: fn(oneshot::Sender<()>) -> Control, timeout: Duration) {
        if let Some(inner) = &self.inner {
            let (tx, rx) = oneshot::channel();
            if inner.control.send(make(tx)).is_ok() {
                let _ = tokio::time::timeout(timeout, rx).await;
            }
        }
    }
}
