//! What every benchmark shares: the `periscope` binary under test, started as a process of
//! its own (`serve` in a data directory of the benchmark's, or `gateway`), its CPU time read
//! from /proc (user + system: the server's work only, never the load generator's), bytes on
//! disk, OTLP/HTTP exports with back-pressure retries, and medians.
//!
//! The server is the real binary and not a library in this process, so that "server CPU"
//! counts exactly what a deployed server would spend, its allocator and threads included.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// The `periscope` binary the benchmarks measure: `$PERISCOPE_BIN`, or `periscope` beside
/// this binary (the same `target/<profile>/` directory).
///
/// # Errors
///
/// When neither exists: build the server first (`cargo build --release`).
pub(crate) fn periscope_exe() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PERISCOPE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?.with_file_name("periscope");
    if !exe.is_file() {
        bail!(
            "{} not found: build the server first (`cargo build --release`) or set PERISCOPE_BIN",
            exe.display()
        );
    }
    Ok(exe)
}

/// `text` as a duration like 30s, 5m or 7d; errors name `key`.
pub(crate) fn parse_duration(key: &str, text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text.trim())
        .map_err(|e| anyhow::anyhow!("{key}: {text:?} is not a duration like 30s, 5m or 7d ({e})"))
}

/// A `periscope serve` started by a benchmark, and where to reach it.
pub(crate) struct Spawned {
    pub child: Child,
    pub data_dir: PathBuf,
    pub grpc: String,
    pub otlp_http: String,
    pub http: String,
}

/// Starts `periscope serve` on free ports with its data in `data_dir`.
pub(crate) fn spawn_server_at(data_dir: &Path) -> anyhow::Result<Spawned> {
    let exe = periscope_exe()?;
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--log", "warn"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
            .with_context(|| format!("unexpected first line from the server: {line:?}"))
    };
    Ok(Spawned {
        grpc: addr("otlp-grpc=")?,
        otlp_http: addr("otlp-http=")?,
        http: addr("http=")?,
        child,
        data_dir: data_dir.to_path_buf(),
    })
}

/// CPU seconds (user + system) a process has used, from /proc.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}

/// The state letter of a process (`R`, `S`, `Z`, ...), from /proc.
pub(crate) fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Bytes of the files under `dir` (recursively) that `filter` accepts.
pub(crate) fn dir_bytes(dir: &Path, filter: &dyn Fn(&Path) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p, filter)
            } else if filter(&p) {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            }
        })
        .sum()
}

/// POSTs one OTLP/HTTP protobuf export, retrying after 50 ms while the server answers
/// 429 or 503 (its back-pressure); returns how many retries it took.
pub(crate) async fn post_export(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> anyhow::Result<u64> {
    let mut retries = 0;
    loop {
        let r = client
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await?;
        match r.status().as_u16() {
            200 => return Ok(retries),
            429 | 503 => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => bail!(
                "export failed with HTTP {other}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }
}

/// The median of `v` (the upper one of an even count; 0 when empty).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Stops the server with SIGTERM (it flushes) and returns its total CPU seconds.
pub(crate) async fn stop(s: &mut Spawned) -> anyhow::Result<f64> {
    let pid = s.child.id();
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut cpu = 0.0;
    while Instant::now() < deadline {
        if process_state(pid).is_none_or(|state| state == 'Z') {
            cpu = cpu_seconds(pid).unwrap_or(0.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = s.child.wait()?;
    if !status.success() {
        bail!("the server exited with {status} while flushing");
    }
    Ok(cpu)
}

/// An attribute with a string value, for the generated telemetry.
pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// An attribute with an integer value, for the generated telemetry.
pub fn int_kv(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

/// The spans of one resource with these attributes, in one instrumentation scope.
pub fn resource_spans(attributes: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    }
}
