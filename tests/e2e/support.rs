//! Starting and stopping the server, and talking to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `periscope serve` process.
pub struct Server {
    child: Option<Child>,
    pub grpc_addr: String,
    pub otlp_http_addr: String,
    pub api_addr: String,
}

impl Server {
    /// Starts the server on free loopback ports with `data_dir` and extra flags, and waits
    /// for its `listening` line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_at(data_dir, "127.0.0.1:0", extra)
    }

    /// As [`Server::start`], with OTLP/gRPC on `grpc_addr`.
    pub fn start_at(data_dir: &Path, grpc_addr: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_periscope"))
            .args([
                "serve",
                "--otlp-grpc-addr",
                grpc_addr,
                "--otlp-http-addr",
                "127.0.0.1:0",
            ])
            .args(["--http-addr", "127.0.0.1:0", "--log", "warn"])
            .args(if extra.contains(&"--memory-limit") {
                &[][..]
            } else {
                &["--memory-limit", "2GiB"][..]
            })
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start periscope");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the server never blocks on a full pipe.
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server printed its listening line");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_string()
        };
        assert!(line.starts_with("listening "), "{line:?}");
        Server {
            grpc_addr: field("otlp-grpc"),
            otlp_http_addr: field("otlp-http"),
            api_addr: field("http"),
            child: Some(child),
        }
    }

    pub fn api(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn otlp_http(&self) -> String {
        format!("http://{}", self.otlp_http_addr)
    }

    pub fn grpc(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("wait");
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("server is running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
        c.wait().expect("wait")
    }

    /// Runs SQL and returns the HTTP status and JSON answer.
    pub async fn sql_status(&self, query: &str) -> (u16, Value) {
        self.sql_request(query, None).await
    }

    /// Runs SQL with a bearer token and returns the HTTP status and JSON answer.
    pub async fn sql_status_with_token(&self, query: &str, token: &str) -> (u16, Value) {
        self.sql_request(query, Some(token)).await
    }

    async fn sql_request(&self, query: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/api/v1/sql", self.api()))
            .json(&serde_json::json!({ "query": query }));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let r = request.send().await.expect("POST /api/v1/sql");
        let status = r.status().as_u16();
        let body = r.text().await.expect("body");
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        (status, v)
    }

    /// Runs SQL that must succeed and returns its rows.
    pub async fn rows(&self, query: &str) -> Vec<Vec<Value>> {
        let (status, v) = self.sql_status(query).await;
        assert_eq!(status, 200, "{query}: {v}");
        v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r.as_array().expect("row").clone())
            .collect()
    }

    /// Asserts that the `spans` table holds `expected` rows, every span id once.
    pub async fn assert_spans_exactly_once(&self, expected: i64) {
        assert_eq!(self.scalar("SELECT count(*) FROM spans").await, expected);
        assert_eq!(
            self.scalar("SELECT count(DISTINCT span_id) FROM spans")
                .await,
            expected,
            "a span is there twice"
        );
    }

    /// A single number from SQL.
    pub async fn scalar(&self, query: &str) -> i64 {
        let rows = self.rows(query).await;
        rows[0][0]
            .as_i64()
            .unwrap_or_else(|| panic!("{query}: {rows:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every `*.parquet` file under `dir`.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(parquet_files(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out
}

pub mod otlp {
    //! Hand-built OTLP messages.
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    pub fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key_strindex: 0,
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
        }
    }

    pub fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Default::default()
        })
    }

    /// A span with the given ids.
    pub fn span(trace_id: Vec<u8>, span_id: Vec<u8>, name: &str) -> Span {
        Span {
            trace_id,
            span_id,
            name: name.into(),
            kind: 2,
            start_time_unix_nano: 1_764_000_000_000_000_123,
            end_time_unix_nano: 1_764_000_000_100_000_123,
            attributes: vec![kv("http.route", "/cart")],
            ..Default::default()
        }
    }

    pub fn traces(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(service),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        }
    }
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `secs`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends one span named `sdk-span` of `service` through `exporter` with the OpenTelemetry
/// SDK, then flushes and shuts the provider down; returns the flush's outcome.
pub fn export_sdk_span(
    service: String,
    exporter: opentelemetry_otlp::SpanExporter,
    tracer: &'static str,
) -> opentelemetry_sdk::error::OTelSdkResult {
    use opentelemetry::trace::{Tracer, TracerProvider};
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    provider.tracer(tracer).in_span("sdk-span", |_| {});
    let flushed = provider.force_flush();
    let _ = provider.shutdown();
    flushed
}

/// Sends a request with a 64 KiB header on `stream` (to `addr`) and asserts the answer
/// is 431.
pub async fn assert_big_header_gets_431<S>(mut stream: S, addr: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let _ = stream.write_all(big.as_bytes()).await;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 431"), "{addr}: {text:?}");
}

/// The peak resident memory of a process, sampled from /proc every 20 ms on a thread of
/// its own until dropped.
pub struct RssPeak {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RssPeak {
    /// Starts sampling process `pid`.
    pub fn sample(pid: u32) -> RssPeak {
        use std::sync::atomic::Ordering;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                    break;
                };
                if let Some(kb) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    p.fetch_max(kb * 1024, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssPeak { peak, stop }
    }

    /// The highest resident memory seen so far, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends `GET /healthz` with one header of `bytes` bytes on `stream` and returns the
/// answer's status line (empty when the server closed without one).
pub async fn status_for_header_of<S>(mut stream: S, bytes: usize) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(bytes)
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// How long a flag test waits for the server to cut off a silent client: well past a
/// `--header-read-timeout 1s`, well before the 10 s default, so a server that ignored
/// the flag fails the test.
pub const CUT_OFF_WITHIN: Duration = Duration::from_secs(5);

/// Header size between a `--max-header-bytes 16KiB` and the 64 KiB default: refused with
/// the flag, accepted without it.
pub const BETWEEN_FLAG_AND_DEFAULT: usize = 24 << 10;

/// Whether a status line from [`status_for_header_of`] shows the header block was read
/// and routed (200 on the API port's `/healthz`, 404 on the OTLP port, which has none).
pub fn header_block_taken(status: &str) -> bool {
    status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.1 404")
}
