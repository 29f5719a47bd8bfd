//! `gateway.toml`: listener, mode, telemetry, upstream pools and routes. Every error names
//! the file and line.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::error::GatewayError;
use periscope_agent::export::{Compression, ExporterConfig, Protocol};
use periscope_agent::resource::ComponentKind;

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on, e.g. `127.0.0.1:8080` (port 0 picks a free one).
    pub listen: String,
    /// `gateway` (an edge gateway with routes) or `mesh-proxy` (a sidecar in front of one
    /// service).
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// `service.name` of this component.
    pub service_name: Option<String>,
    /// `service.version` of this component.
    pub service_version: Option<String>,
    /// Mesh-proxy shorthand: the address of the one service behind this proxy.
    pub service: Option<Spanned<String>>,
    /// Largest request body accepted (bodies are buffered so that retries can resend
    /// them); larger requests get 413.
    #[serde(default = "default_max_body")]
    pub max_request_body_bytes: usize,
    /// Time allowed to receive a request's headers before the connection is closed.
    #[serde(default = "default_header_timeout", deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// Telemetry settings.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Upstream pools.
    #[serde(default)]
    pub upstream: Vec<UpstreamConfig>,
    /// Routes, matched by host and longest path prefix.
    #[serde(default)]
    pub route: Vec<RouteConfig>,
    /// Addresses or networks (`10.0.0.0/8`) of proxies in front of the gateway whose
    /// `X-Forwarded-*`, `Forwarded` and `X-Real-IP` headers are kept; every other client's
    /// are dropped and the gateway sets its own.
    #[serde(default)]
    pub trusted_proxies: Vec<crate::forwarded::TrustedProxy>,
}

/// What the proxy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// An API gateway.
    Gateway,
    /// A mesh proxy (sidecar).
    MeshProxy,
}

impl Mode {
    /// The component kind it reports.
    pub fn kind(self) -> ComponentKind {
        match self {
            Mode::Gateway => ComponentKind::Gateway,
            Mode::MeshProxy => ComponentKind::MeshProxy,
        }
    }
}

fn default_mode() -> Mode {
    Mode::Gateway
}

fn default_max_body() -> usize {
    16 << 20
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[telemetry]`: where the embedded agent exports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Off switch (also `periscope gateway --no-telemetry`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Collector endpoint.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// `none` or `gzip`.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Headers on every export, e.g. `{ authorization = "Bearer …" }`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Spans and logs held while the collector is slow or down.
    #[serde(default = "default_queue")]
    pub queue_size: usize,
    /// Items per export request.
    #[serde(default = "default_batch")]
    pub max_batch: usize,
    /// Longest wait before a partial batch is sent.
    #[serde(default = "default_batch_delay", deserialize_with = "duration")]
    pub batch_delay: Duration,
    /// How often the HTTP metrics are exported.
    #[serde(default = "default_metrics_interval", deserialize_with = "duration")]
    pub metrics_interval: Duration,
    /// How long a failed batch is retried before it is dropped.
    #[serde(default = "default_retry_time", deserialize_with = "duration")]
    pub max_retry_time: Duration,
    /// Deadline of one export call.
    #[serde(default = "default_export_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// One access log record per request.
    #[serde(default = "yes")]
    pub access_log: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: true,
            endpoint: default_endpoint(),
            protocol: default_protocol(),
            compression: default_compression(),
            headers: Default::default(),
            queue_size: default_queue(),
            max_batch: default_batch(),
            batch_delay: default_batch_delay(),
            metrics_interval: default_metrics_interval(),
            max_retry_time: default_retry_time(),
            timeout: default_export_timeout(),
            access_log: true,
        }
    }
}

impl TelemetryConfig {
    /// The exporter settings.
    pub fn exporter(&self) -> ExporterConfig {
        ExporterConfig {
            endpoint: self.endpoint.clone(),
            protocol: self.protocol,
            compression: self.compression,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            queue_size: self.queue_size,
            max_batch: self.max_batch,
            batch_delay: self.batch_delay,
            timeout: self.timeout,
            max_retry_time: self.max_retry_time,
            metrics_interval: self.metrics_interval,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_endpoint() -> String {
    "http://127.0.0.1:4317".into()
}
fn default_protocol() -> Protocol {
    Protocol::Grpc
}
fn default_compression() -> Compression {
    Compression::None
}
fn default_queue() -> usize {
    4096
}
fn default_batch() -> usize {
    512
}
fn default_batch_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_metrics_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_export_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_time() -> Duration {
    Duration::from_secs(30)
}

/// `[[upstream]]`: a pool of equivalent targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name routes refer to.
    pub name: Spanned<String>,
    /// `host:port` of each target.
    #[serde(deserialize_with = "targets")]
    pub targets: Vec<String>,
    /// `round-robin` (default) or `least-outstanding`.
    #[serde(default = "default_balance")]
    pub balance: Balance,
    /// Active health checking; without it every target is always eligible.
    pub health_check: Option<HealthCheckConfig>,
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Each target in turn.
    RoundRobin,
    /// The target with the fewest requests in flight.
    LeastOutstanding,
}

fn default_balance() -> Balance {
    Balance::RoundRobin
}

/// `[upstream.health_check]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path probed with GET; a 2xx answer is healthy.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between probes.
    #[serde(default = "default_health_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// Deadline of one probe.
    #[serde(default = "default_health_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Consecutive failures that take a target out.
    #[serde(default = "two")]
    pub unhealthy_threshold: u32,
    /// Consecutive successes that bring it back.
    #[serde(default = "two")]
    pub healthy_threshold: u32,
}

fn default_health_path() -> String {
    "/healthz".into()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(1)
}
fn two() -> u32 {
    2
}

/// `[[route]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Host to match (the `Host` header without port); any host when absent.
    pub host: Option<String>,
    /// Path prefix to match, on segment boundaries (`/api` matches `/api` and `/api/x`,
    /// not `/apix`).
    #[serde(default = "root")]
    pub path_prefix: String,
    /// The upstream pool.
    pub upstream: Spanned<String>,
    /// Deadline for the whole request, retries included (until response headers).
    #[serde(default = "default_route_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Deadline of each attempt; the route timeout when absent.
    #[serde(default, deserialize_with = "opt_duration")]
    pub per_try_timeout: Option<Duration>,
    /// Extra attempts for idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE, TRACE)
    /// after a connection failure, a per-try timeout, or a 502/503/504 answer.
    #[serde(default)]
    pub retries: u32,
    /// Remove the prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
}

fn root() -> String {
    "/".into()
}
fn default_route_timeout() -> Duration {
    Duration::from_secs(15)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn targets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    if list.is_empty() {
        return Err(serde::de::Error::custom(
            "an upstream needs at least one target",
        ));
    }
    for t in &list {
        check_host_port(t).map_err(serde::de::Error::custom)?;
    }
    Ok(list)
}

fn check_host_port(t: &str) -> Result<(), String> {
    let ok = t
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if ok && !t.contains('/') {
        Ok(())
    } else {
        Err(format!("invalid target {t:?}: expected host:port"))
    }
}

impl GatewayConfig {
    /// Parses and checks a config; `path` names the file in errors.
    pub fn parse(path: &str, text: &str) -> Result<GatewayConfig, GatewayError> {
        let err = |message: String| GatewayError::ConfigFile {
            path: path.to_owned(),
            message,
        };
        let at = |span: std::ops::Range<usize>, message: String| {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            err(format!("line {line}: {message}"))
        };
        let mut config: GatewayConfig =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_owned()))?;
        if config.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(err(format!(
                "listen = {:?} is not an address like 127.0.0.1:8080",
                config.listen
            )));
        }
        if let Some(service) = config.service.clone() {
            if config.mode != Mode::MeshProxy {
                return Err(at(
                    service.span(),
                    "`service` is the mesh-proxy shorthand; use [[upstream]] and [[route]] in gateway mode".into(),
                ));
            }
            check_host_port(service.get_ref()).map_err(|m| at(service.span(), m))?;
            config.upstream.push(UpstreamConfig {
                name: Spanned::new(service.span(), "service".into()),
                targets: vec![service.into_inner()],
                balance: Balance::RoundRobin,
                health_check: None,
            });
        }
        let mut names = HashSet::new();
        for u in &config.upstream {
            if !names.insert(u.name.get_ref().clone()) {
                return Err(at(
                    u.name.span(),
                    format!("upstream {:?} is defined twice", u.name.get_ref()),
                ));
            }
        }
        if config.mode == Mode::MeshProxy {
            if config.upstream.len() != 1 {
                return Err(err(format!(
                    "a mesh proxy fronts exactly one service: set `service = \"HOST:PORT\"` (found {} upstreams)",
                    config.upstream.len()
                )));
            }
            if config.route.is_empty() {
                let name = config.upstream[0].name.clone();
                config.route.push(RouteConfig {
                    host: None,
                    path_prefix: "/".into(),
                    upstream: name,
                    timeout: default_route_timeout(),
                    per_try_timeout: None,
                    retries: 0,
                    strip_prefix: false,
                });
            }
        }
        if config.route.is_empty() {
            return Err(err(
                "no [[route]]: the gateway would answer 404 to everything".into(),
            ));
        }
        for r in &config.route {
            if !names.contains(r.upstream.get_ref()) {
                return Err(at(
                    r.upstream.span(),
                    format!(
                        "route uses upstream {:?}, which is not defined",
                        r.upstream.get_ref()
                    ),
                ));
            }
            if !r.path_prefix.starts_with('/') {
                return Err(err(format!(
                    "path_prefix {:?} must start with '/'",
                    r.path_prefix
                )));
            }
        }
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &std::path::Path) -> Result<GatewayConfig, GatewayError> {
        let text = std::fs::read_to_string(path).map_err(|e| GatewayError::ConfigFile {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        GatewayConfig::parse(&path.display().to_string(), &text)
    }

    /// `service.name`: the configured one, else `periscope-gateway` or
    /// `periscope-mesh-proxy`.
    pub fn service_name(&self) -> String {
        self.service_name
            .clone()
            .unwrap_or_else(|| match self.mode {
                Mode::Gateway => "periscope-gateway".into(),
                Mode::MeshProxy => "periscope-mesh-proxy".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:0"
service_name = "edge"

[telemetry]
endpoint = "http://127.0.0.1:4318"
protocol = "http/protobuf"
compression = "gzip"
headers = { authorization = "Bearer abc" }

[[upstream]]
name = "cart"
targets = ["127.0.0.1:9001", "127.0.0.1:9002"]
balance = "least-outstanding"
health_check = { path = "/health", interval = "2s" }

[[route]]
path_prefix = "/api/cart"
upstream = "cart"
timeout = "3s"
retries = 2
"#;

    #[test]
    fn a_full_config_parses() {
        let c = GatewayConfig::parse("gw.toml", GOOD).expect("valid");
        assert_eq!(c.mode, Mode::Gateway);
        assert_eq!(c.telemetry.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.upstream[0].balance, Balance::LeastOutstanding);
        let hc = c.upstream[0].health_check.as_ref().expect("health check");
        assert_eq!(hc.interval, Duration::from_secs(2));
        assert_eq!(hc.unhealthy_threshold, 2);
        assert_eq!(c.route[0].timeout, Duration::from_secs(3));
        assert_eq!(c.route[0].retries, 2);
    }

    #[test]
    fn trusted_proxies_parse_or_name_the_line() {
        let c = GatewayConfig::parse(
            "gw.toml",
            &format!("trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n{GOOD}"),
        )
        .expect("valid");
        assert_eq!(c.trusted_proxies.len(), 2);
        let e = error_of(&format!("trusted_proxies = [\"10.0.0.0/99\"]\n{GOOD}"));
        assert!(e.contains("line 1") && e.contains("trusted_proxies"), "{e}");
    }

    #[test]
    fn mesh_proxy_shorthand_makes_one_route() {
        let c = GatewayConfig::parse(
            "s.toml",
            "listen = \"127.0.0.1:0\"\nmode = \"mesh-proxy\"\nservice = \"127.0.0.1:9000\"\n",
        )
        .expect("valid");
        assert_eq!(c.route.len(), 1);
        assert_eq!(c.route[0].path_prefix, "/");
        assert_eq!(c.upstream[0].targets, vec!["127.0.0.1:9000".to_string()]);
    }

    fn error_of(text: &str) -> String {
        GatewayConfig::parse("gw.toml", text)
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let unknown_upstream = GOOD.replace("upstream = \"cart\"", "upstream = \"carts\"");
        let e = error_of(&unknown_upstream);
        assert!(e.starts_with("gw.toml: line 19:"), "{e}");
        assert!(e.contains("\"carts\""), "{e}");

        let bad_duration = GOOD.replace("timeout = \"3s\"", "timeout = \"3 parsecs\"");
        let e = error_of(&bad_duration);
        assert!(
            e.contains("line 20") && e.contains("invalid duration"),
            "{e}"
        );

        let bad_target = GOOD.replace("127.0.0.1:9002", "127.0.0.1");
        let e = error_of(&bad_target);
        assert!(e.contains("line 13") && e.contains("host:port"), "{e}");

        let typo = GOOD.replace("retries = 2", "retires = 2");
        let e = error_of(&typo);
        assert!(e.contains("line 21") && e.contains("retires"), "{e}");

        let e = error_of(&GOOD.replace("balance = \"least-outstanding\"", "balance = \"random\""));
        assert!(e.contains("line 14"), "{e}");

        let e = error_of("listen = \"nowhere\"\n[[route]]\nupstream = \"x\"\n");
        assert!(e.contains("listen"), "{e}");

        let e = error_of("listen = \"127.0.0.1:0\"\nmode = \"mesh-proxy\"\n");
        assert!(e.contains("exactly one service"), "{e}");
    }
}
