//! Settings of `periscope serve`: flags > environment > TOML file > defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use periscope_alerting::{AlertingConfig, AlertingSection};
use serde::Deserialize;

/// Flags of `periscope serve`. Each has an environment variable and a TOML key.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML configuration file; its keys are the flag names with `-` as `_`.
    #[arg(long, env = "PERISCOPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the OTLP/gRPC receiver [default: 127.0.0.1:4317].
    #[arg(long, env = "PERISCOPE_OTLP_GRPC_ADDR", value_name = "ADDR")]
    pub otlp_grpc_addr: Option<String>,
    /// Address of the OTLP/HTTP receiver [default: 127.0.0.1:4318].
    #[arg(long, env = "PERISCOPE_OTLP_HTTP_ADDR", value_name = "ADDR")]
    pub otlp_http_addr: Option<String>,
    /// Address of the UI and query APIs [default: 127.0.0.1:7070].
    #[arg(long, env = "PERISCOPE_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// Directory for the WAL, Parquet files and catalog [default: ./periscope-data].
    #[arg(long, env = "PERISCOPE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Process memory budget, e.g. `2GiB` [default: 50% of the machine's memory].
    #[arg(long, env = "PERISCOPE_MEMORY_LIMIT", value_name = "SIZE")]
    pub memory_limit: Option<String>,
    /// Largest OTLP request body after decompression [default: 16MiB].
    #[arg(long, env = "PERISCOPE_MAX_REQUEST_BYTES", value_name = "SIZE")]
    pub max_request_bytes: Option<String>,
    /// Longest a SQL query may run [default: 30s].
    #[arg(long, env = "PERISCOPE_QUERY_TIMEOUT", value_name = "DURATION")]
    pub query_timeout: Option<String>,
    /// Memory for running queries [default: 25% of the memory budget].
    #[arg(long, env = "PERISCOPE_QUERY_MEMORY_LIMIT", value_name = "SIZE")]
    pub query_memory_limit: Option<String>,
    /// Most rows a SQL answer carries; past it the answer is cut and says so in
    /// `warnings` [default: 100000].
    #[arg(long, env = "PERISCOPE_QUERY_MAX_ROWS", value_name = "ROWS")]
    pub query_max_rows: Option<usize>,
    /// Most bytes a SQL answer carries, encoded; past it the answer is cut and says so in
    /// `warnings` [default: 64MiB].
    #[arg(long, env = "PERISCOPE_QUERY_MAX_BYTES", value_name = "SIZE")]
    pub query_max_bytes: Option<String>,
    /// Most points a PromQL query may produce while it is evaluated, as Prometheus's
    /// --query.max-samples [default: 50000000, at most the query memory / 16 bytes].
    #[arg(long, env = "PERISCOPE_QUERY_MAX_SAMPLES", value_name = "POINTS")]
    pub query_max_samples: Option<usize>,
    /// Flush buffered rows to Parquet once the oldest is this old [default: 60s].
    #[arg(long, env = "PERISCOPE_FLUSH_INTERVAL", value_name = "DURATION")]
    pub flush_interval: Option<String>,
    /// Flush buffered rows to Parquet once they take this much memory [default: 1/8 of the memory budget, at most 256MiB].
    #[arg(long, env = "PERISCOPE_FLUSH_BYTES", value_name = "SIZE")]
    pub flush_bytes: Option<String>,
    /// Log filter in `tracing` syntax, e.g. `info` or `periscope_storage=debug` [default: info].
    #[arg(long, env = "PERISCOPE_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "PERISCOPE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Alert rule file (Prometheus's format, plus `sql:` and `logs:` rules); repeat the
    /// flag for more files.
    #[arg(
        long = "rules",
        env = "PERISCOPE_RULES",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub rules: Vec<PathBuf>,
    /// Alertmanager to send alerts to, e.g. `http://127.0.0.1:9093`; repeat the flag for
    /// more.
    #[arg(
        long = "alertmanager-url",
        env = "PERISCOPE_ALERTMANAGER_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub alertmanager_url: Vec<String>,
    /// Time a client has to send a request's headers on the HTTP ports [default: 10s].
    #[arg(long, env = "PERISCOPE_HEADER_READ_TIMEOUT", value_name = "DURATION")]
    pub header_read_timeout: Option<String>,
    /// Largest request header block on the HTTP ports; larger gets 431 [default: 64KiB].
    #[arg(long, env = "PERISCOPE_MAX_HEADER_BYTES", value_name = "SIZE")]
    pub max_header_bytes: Option<String>,
    /// Keep spans this long, e.g. `7d` [default: forever]; TOML `[retention] traces`.
    #[arg(long, env = "PERISCOPE_RETENTION_TRACES", value_name = "DURATION")]
    pub retention_traces: Option<String>,
    /// Keep logs this long [default: forever]; TOML `[retention] logs`.
    #[arg(long, env = "PERISCOPE_RETENTION_LOGS", value_name = "DURATION")]
    pub retention_logs: Option<String>,
    /// Keep metric points this long [default: forever]; TOML `[retention] metrics`.
    #[arg(long, env = "PERISCOPE_RETENTION_METRICS", value_name = "DURATION")]
    pub retention_metrics: Option<String>,
    /// How often retention runs [default: 1m]; TOML `[retention] check_interval`.
    #[arg(
        long,
        env = "PERISCOPE_RETENTION_CHECK_INTERVAL",
        value_name = "DURATION"
    )]
    pub retention_check_interval: Option<String>,
    /// How often small Parquet files are merged; `0s` turns compaction off [default: 1m];
    /// TOML `[compaction] interval`.
    #[arg(long, env = "PERISCOPE_COMPACTION_INTERVAL", value_name = "DURATION")]
    pub compaction_interval: Option<String>,
    /// Small files an hour partition of the current or last hour needs before they are
    /// merged (older partitions: two) [default: 8]; TOML `[compaction] min_files`.
    #[arg(long, env = "PERISCOPE_COMPACTION_MIN_FILES", value_name = "N")]
    pub compaction_min_files: Option<usize>,
    /// Size a merged file aims at; files from half of it on are left alone
    /// [default: 256MiB]; TOML `[compaction] target_size`.
    #[arg(long, env = "PERISCOPE_COMPACTION_TARGET_SIZE", value_name = "SIZE")]
    pub compaction_target_size: Option<String>,
    /// Tokens file (`NAME ROLE sha256:HEX [EXPIRES]` per line; see `periscope token
    /// create`). With tokens, every request needs one.
    #[arg(long, env = "PERISCOPE_TOKENS_FILE", value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Serve without authentication even on a non-loopback address.
    #[arg(long, env = "PERISCOPE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Server certificate chain (PEM), leaf first; with --tls-key, all three ports speak
    /// TLS only. TOML `[tls] cert`.
    #[arg(long, env = "PERISCOPE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1). TOML `[tls] key`.
    #[arg(long, env = "PERISCOPE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM): the OTLP ports then accept only clients with a certificate signed
    /// by one of these CAs (mTLS), and such a client may ingest without a token. Needs
    /// --tls-cert. TOML `[tls] client_ca`.
    #[arg(long, env = "PERISCOPE_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Host names the HTTP ports answer to besides IP addresses and `localhost`, e.g.
    /// `periscope.internal`; other `Host` headers get 403 when authentication is off or
    /// when this or --public-url is set (DNS rebinding guard).
    #[arg(
        long = "allowed-hosts",
        env = "PERISCOPE_ALLOWED_HOSTS",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// The URL browsers use to reach the UI when it differs from the listening address
    /// (behind a reverse proxy), e.g. `https://periscope.example.com`: its host is
    /// allowed and its origin is same-origin.
    #[arg(long, env = "PERISCOPE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Web origins whose pages may send OTLP/HTTP from the browser (CORS), e.g.
    /// `https://shop.example.com`, or `*` [default: none; other origins get 403].
    #[arg(
        long = "cors-allowed-origins",
        env = "PERISCOPE_CORS_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Vec<String>,
}

/// The TOML file: the same keys as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    otlp_grpc_addr: Option<String>,
    otlp_http_addr: Option<String>,
    http_addr: Option<String>,
    data_dir: Option<PathBuf>,
    memory_limit: Option<String>,
    max_request_bytes: Option<String>,
    query_timeout: Option<String>,
    query_memory_limit: Option<String>,
    query_max_rows: Option<usize>,
    query_max_bytes: Option<String>,
    query_max_samples: Option<usize>,
    flush_interval: Option<String>,
    flush_bytes: Option<String>,
    log: Option<String>,
    log_format: Option<String>,
    /// Rule files; relative paths are relative to the config file.
    #[serde(alias = "rules")]
    rule_files: Option<Vec<PathBuf>>,
    #[serde(alias = "alertmanager_urls")]
    alertmanager_url: Option<Vec<String>>,
    /// `[alerting]`: evaluation, webhooks, routes, delivery.
    alerting: Option<AlertingSection>,
    header_read_timeout: Option<String>,
    max_header_bytes: Option<String>,
    /// `[retention]`: traces, logs, metrics, check_interval.
    retention: Option<RetentionSection>,
    retention_traces: Option<String>,
    retention_logs: Option<String>,
    retention_metrics: Option<String>,
    retention_check_interval: Option<String>,
    /// `[compaction]`: interval, min_files, target_size.
    compaction: Option<CompactionSection>,
    compaction_interval: Option<String>,
    compaction_min_files: Option<usize>,
    compaction_target_size: Option<String>,
    /// Tokens file; relative to the config file.
    tokens_file: Option<PathBuf>,
    insecure_no_auth: Option<bool>,
    /// `[[token]]` tables: name, role, hash, expires.
    #[serde(default)]
    token: Vec<crate::auth::TokenEntry>,
    /// `[tls]`: cert, key, client_ca; relative to the config file.
    tls: Option<TlsSection>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    allowed_hosts: Option<Vec<String>>,
    public_url: Option<String>,
    cors_allowed_origins: Option<Vec<String>>,
}

/// `[tls]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
}

/// `[retention]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    traces: Option<String>,
    logs: Option<String>,
    metrics: Option<String>,
    check_interval: Option<String>,
}

/// `[compaction]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactionSection {
    interval: Option<String>,
    min_files: Option<usize>,
    target_size: Option<String>,
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub memory_limit: u64,
    pub max_request_bytes: u64,
    pub query_timeout: Duration,
    pub query_memory_limit: u64,
    pub query_max_rows: usize,
    pub query_max_bytes: u64,
    pub query_max_samples: usize,
    pub flush_interval: Duration,
    pub flush_bytes: u64,
    pub log: String,
    pub json_logs: bool,
    pub alerting: AlertingConfig,
    /// The tokens requests must present; `None` when authentication is off.
    pub auth: Option<std::sync::Arc<crate::auth::Tokens>>,
    /// How long each table keeps its rows.
    pub retention: periscope_storage::Retention,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// When and what to compact.
    pub compaction: periscope_storage::CompactionConfig,
    /// Time a client has to send a request's headers on the HTTP ports.
    pub header_read_timeout: Duration,
    /// Largest request header block on the HTTP ports.
    pub max_header_bytes: u64,
    /// TLS on the three ports; `None` serves plain HTTP and gRPC.
    pub tls: Option<crate::tls::ServerTls>,
    /// The `Host`, `Origin` and CORS rules of the HTTP ports.
    pub browser: std::sync::Arc<crate::auth::origin::BrowserPolicy>,
}

impl Settings {
    /// `https` with TLS, else `http`: the scheme of the UI and API URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Parses a size such as `16MiB`, `2GiB` or `1048576`.
pub fn parse_size(key: &str, text: &str) -> anyhow::Result<u64> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| anyhow::anyhow!("{key}: {text:?} is not a size like 512MiB or 2GiB ({e})"))
}

/// Parses a duration such as `500ms`, `30s`, `5m`, `7d`.
pub fn parse_duration(key: &str, text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text.trim())
        .map_err(|e| anyhow::anyhow!("{key}: {text:?} is not a duration like 30s, 5m or 7d ({e})"))
}

fn parse_addr(key: &str, text: &str) -> anyhow::Result<SocketAddr> {
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{key}: {text:?} is not an address like 127.0.0.1:4317 ({e})"))
}

/// Whether requests need tokens: yes when tokens are configured; refused when a
/// non-loopback address is bound without tokens, unless `insecure` (which turns
/// authentication off). `ingest_addrs` count as authenticated when `client_certs`: their
/// clients must show a certificate from the client CA to connect at all.
fn auth_decision(
    api_addr: SocketAddr,
    ingest_addrs: &[SocketAddr],
    client_certs: bool,
    tokens: crate::auth::Tokens,
    insecure: bool,
) -> anyhow::Result<Option<std::sync::Arc<crate::auth::Tokens>>> {
    if insecure {
        return Ok(None);
    }
    if !tokens.is_empty() {
        return Ok(Some(std::sync::Arc::new(tokens)));
    }
    let mut open = vec![api_addr];
    if !client_certs {
        open.extend_from_slice(ingest_addrs);
    }
    if let Some(open) = open.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "refusing to listen on {open} without authentication: add tokens (--tokens-file; \
             `periscope token create --role ingest` makes one) or pass --insecure-no-auth"
        );
    }
    Ok(None)
}

/// Where the TLS files are: `[cert, key, client_ca]`.
type TlsPaths = [Option<PathBuf>; 3];

/// TLS from the flags, else the flat keys, else `[tls]` (file paths relative to `base`).
fn resolve_tls(
    flags: TlsPaths,
    flat: TlsPaths,
    section: Option<TlsSection>,
    base: &Path,
) -> anyhow::Result<Option<crate::tls::ServerTls>> {
    let section = section.unwrap_or_default();
    let sectioned = [section.cert, section.key, section.client_ca];
    let [cert, key, client_ca] = std::array::from_fn(|i| {
        flags[i].clone().or_else(|| {
            flat[i]
                .clone()
                .or_else(|| sectioned[i].clone())
                .map(|p| if p.is_relative() { base.join(p) } else { p })
        })
    });
    match (cert, key) {
        (Some(cert), Some(key)) => {
            crate::tls::ServerTls::load(&cert, &key, client_ca.as_deref()).map(Some)
        }
        (None, None) => match client_ca {
            Some(ca) => bail!(
                "--tls-client-ca {}: client certificates need TLS: give --tls-cert and --tls-key too",
                ca.display()
            ),
            None => Ok(None),
        },
        (Some(cert), None) => bail!(
            "--tls-cert {} needs --tls-key (the certificate's private key; TOML [tls] key)",
            cert.display()
        ),
        (None, Some(key)) => bail!(
            "--tls-key {} needs --tls-cert (the certificate it belongs to; TOML [tls] cert)",
            key.display()
        ),
    }
}

/// Total memory of the machine, from /proc/meminfo; 4 GiB when it cannot be read.
fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(4 << 30)
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

impl Settings {
    /// Merges flags and environment (already in `args`) over the file over defaults.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let pick = |flag: Option<String>, file: Option<String>| flag.or(file);
        let memory_limit = match pick(args.memory_limit, file.memory_limit) {
            Some(t) => parse_size("memory-limit", &t)?,
            None => machine_memory() / 2,
        };
        if memory_limit < 64 << 20 {
            bail!("memory-limit: {memory_limit} bytes is too small; give at least 64MiB");
        }
        let size_or = |key: &str, v: Option<String>, default: u64| -> anyhow::Result<u64> {
            v.map_or(Ok(default), |t| parse_size(key, &t))
        };
        let dur_or =
            |key: &str, v: Option<String>, default: Duration| -> anyhow::Result<Duration> {
                v.map_or(Ok(default), |t| parse_duration(key, &t))
            };
        let addr_or = |key: &str, v: Option<String>, default: &str| -> anyhow::Result<SocketAddr> {
            parse_addr(key, v.as_deref().unwrap_or(default))
        };
        let log_format = pick(args.log_format, file.log_format).unwrap_or_else(|| "text".into());
        let json_logs = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => bail!("log-format: {other:?} is not text or json"),
        };
        let max_request_bytes = size_or(
            "max-request-bytes",
            pick(args.max_request_bytes, file.max_request_bytes),
            16 << 20,
        )?;
        if max_request_bytes == 0 {
            bail!("max-request-bytes: must be more than 0");
        }
        let http_addr = addr_or(
            "http-addr",
            pick(args.http_addr, file.http_addr),
            "127.0.0.1:7070",
        )?;
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("periscope-data"));
        let base = args
            .config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let rule_files = if args.rules.is_empty() {
            file.rule_files
                .unwrap_or_default()
                .into_iter()
                .map(|p| if p.is_relative() { base.join(p) } else { p })
                .collect()
        } else {
            args.rules
        };
        let alertmanager_urls = if args.alertmanager_url.is_empty() {
            file.alertmanager_url.unwrap_or_default()
        } else {
            args.alertmanager_url
        };
        let tls = resolve_tls(
            [args.tls_cert, args.tls_key, args.tls_client_ca],
            [file.tls_cert, file.tls_key, file.tls_client_ca],
            file.tls,
            &base,
        )?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let alerting = AlertingConfig::resolve(
            file.alerting.unwrap_or_default(),
            rule_files,
            alertmanager_urls,
            format!("{scheme}://{http_addr}"),
            data_dir.join("alerting"),
        )?;
        let otlp_grpc_addr = addr_or(
            "otlp-grpc-addr",
            pick(args.otlp_grpc_addr, file.otlp_grpc_addr),
            "127.0.0.1:4317",
        )?;
        let otlp_http_addr = addr_or(
            "otlp-http-addr",
            pick(args.otlp_http_addr, file.otlp_http_addr),
            "127.0.0.1:4318",
        )?;
        let tokens_file = args.tokens_file.or_else(|| {
            file.tokens_file
                .map(|p| if p.is_relative() { base.join(p) } else { p })
        });
        let tokens = crate::auth::Tokens::load(&file.token, tokens_file.as_deref())?;
        let insecure = args.insecure_no_auth || file.insecure_no_auth.unwrap_or(false);
        let section = file.retention.unwrap_or_default();
        let keep =
            |key: &str, flag: Option<String>, flat: Option<String>, sectioned: Option<String>| {
                flag.or(flat)
                    .or(sectioned)
                    .map(|t| parse_duration(key, &t))
                    .transpose()
            };
        let retention = periscope_storage::Retention {
            spans: keep(
                "retention-traces",
                args.retention_traces,
                file.retention_traces,
                section.traces,
            )?,
            logs: keep(
                "retention-logs",
                args.retention_logs,
                file.retention_logs,
                section.logs,
            )?,
            metrics: keep(
                "retention-metrics",
                args.retention_metrics,
                file.retention_metrics,
                section.metrics,
            )?,
        };
        let retention_interval = keep(
            "retention-check-interval",
            args.retention_check_interval,
            file.retention_check_interval,
            section.check_interval,
        )?
        .unwrap_or(Duration::from_secs(60));
        let compaction_section = file.compaction.unwrap_or_default();
        let defaults = periscope_storage::CompactionConfig::default();
        let compaction = periscope_storage::CompactionConfig {
            interval: dur_or(
                "compaction-interval",
                pick(
                    args.compaction_interval,
                    file.compaction_interval.or(compaction_section.interval),
                ),
                defaults.interval,
            )?,
            min_files: args
                .compaction_min_files
                .or(file.compaction_min_files)
                .or(compaction_section.min_files)
                .unwrap_or(defaults.min_files),
            target_bytes: size_or(
                "compaction-target-size",
                pick(
                    args.compaction_target_size,
                    file.compaction_target_size
                        .or(compaction_section.target_size),
                ),
                defaults.target_bytes,
            )?,
            max_inputs: defaults.max_inputs,
        };
        if compaction.min_files < 2 {
            bail!("compaction-min-files: give at least 2 (a merge needs two files)");
        }
        let auth = auth_decision(
            http_addr,
            &[otlp_grpc_addr, otlp_http_addr],
            tls.as_ref().is_some_and(|t| t.client_auth),
            tokens,
            insecure,
        )?;
        let query_memory_limit = size_or(
            "query-memory-limit",
            pick(args.query_memory_limit, file.query_memory_limit),
            memory_limit / 4,
        )?;
        let list = |flag: Vec<String>, file: Option<Vec<String>>| {
            if flag.is_empty() {
                file.unwrap_or_default()
            } else {
                flag
            }
        };
        let browser = crate::auth::origin::BrowserPolicy::new(
            &list(args.allowed_hosts, file.allowed_hosts),
            pick(args.public_url, file.public_url).as_deref(),
            &list(args.cors_allowed_origins, file.cors_allowed_origins),
            auth.is_some(),
        )?;
        Ok(Settings {
            otlp_grpc_addr,
            otlp_http_addr,
            http_addr,
            data_dir,
            memory_limit,
            max_request_bytes,
            query_timeout: dur_or(
                "query-timeout",
                pick(args.query_timeout, file.query_timeout),
                Duration::from_secs(30),
            )?,
            query_memory_limit,
            query_max_rows: match args.query_max_rows.or(file.query_max_rows) {
                Some(0) => bail!("query-max-rows: give at least 1"),
                Some(n) => n,
                None => 100_000,
            },
            query_max_bytes: match size_or(
                "query-max-bytes",
                pick(args.query_max_bytes, file.query_max_bytes),
                64 << 20,
            )? {
                0 => bail!("query-max-bytes: give at least 1KiB"),
                n => n,
            },
            query_max_samples: match args.query_max_samples.or(file.query_max_samples) {
                Some(0) => bail!("query-max-samples: give at least 1"),
                Some(n) => n,
                // A point held during evaluation takes about 16 bytes.
                None => usize::try_from(query_memory_limit / 16)
                    .unwrap_or(usize::MAX)
                    .min(50_000_000),
            },
            flush_interval: dur_or(
                "flush-interval",
                pick(args.flush_interval, file.flush_interval),
                Duration::from_secs(60),
            )?,
            flush_bytes: size_or(
                "flush-bytes",
                pick(args.flush_bytes, file.flush_bytes),
                (memory_limit / 8).min(256 << 20),
            )?,
            log: pick(args.log, file.log).unwrap_or_else(|| "info".into()),
            json_logs,
            alerting,
            auth,
            retention,
            retention_interval,
            compaction,
            header_read_timeout: dur_or(
                "header-read-timeout",
                pick(args.header_read_timeout, file.header_read_timeout),
                Duration::from_secs(10),
            )?,
            max_header_bytes: size_or(
                "max-header-bytes",
                pick(args.max_header_bytes, file.max_header_bytes),
                64 << 10,
            )?,
            tls,
            browser: std::sync::Arc::new(browser),
        })
    }

    /// Memory that unflushed rows may hold before ingest answers "retry later": a quarter
    /// of the budget. Queries get another quarter, flushes and compaction an eighth (see
    /// [`Settings::work_bytes`]); the rest is for requests being decoded, the log
    /// indexes and the process itself.
    pub fn max_buffered_bytes(&self) -> u64 {
        self.memory_limit / 4
    }

    /// Memory a flush or a compaction may use at work besides the rows it writes.
    pub fn work_bytes(&self) -> u64 {
        self.memory_limit / 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:9999\"\nquery_timeout = \"5s\"\nmemory_limit = \"1GiB\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            query_timeout: Some("2s".into()),
            ..Default::default()
        };
        let s = Settings::resolve(args).unwrap();
        assert_eq!(s.http_addr.port(), 9999);
        assert_eq!(s.query_timeout, Duration::from_secs(2));
        assert_eq!(s.memory_limit, 1 << 30);
        assert_eq!(s.query_memory_limit, 1 << 28);
        assert_eq!(s.otlp_grpc_addr.port(), 4317);
        assert_eq!(s.max_request_bytes, 16 << 20);
    }

    /// The block of `lang` after `marker` in the documentation page `docs/{page}`.
    pub(crate) fn doc_block(page: &str, marker: &str, lang: &str) -> String {
        let path = format!("{}/docs/{page}", env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(&path).unwrap();
        let after = &doc[doc.find(marker).expect("marker in the page")..];
        let start = after.find(&format!("```{lang}\n")).unwrap() + lang.len() + 4;
        let end = after[start..].find("```").unwrap();
        after[start..start + end].to_string()
    }

    #[test]
    fn the_readme_alerting_example_is_a_working_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            doc_block("alerting.md", "Example alerting config", "toml"),
        )
        .unwrap();
        let s = Settings::resolve(ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap();
        let a = &s.alerting;
        assert_eq!(a.rule_files[0], dir.path().join("rules/checkout.yml"));
        assert_eq!(a.alertmanager_urls, ["http://127.0.0.1:9093"]);
        assert_eq!(a.evaluation_interval, Duration::from_secs(30));
        assert_eq!(a.external_url, "https://periscope.example.com");
        assert_eq!(a.webhooks.len(), 2);
        assert_eq!(a.webhooks[0].repeat_interval, Duration::from_secs(4 * 3600));
        assert!(!a.webhooks[1].send_resolved);
        assert_eq!(a.routes.len(), 2);
        assert_eq!(a.delivery.retry_for, Duration::from_secs(24 * 3600));
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let to = |l| {
            a.receivers_for(&l)
                .iter()
                .map(|w| w.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            to(labels(&[("service_name", "payment"), ("severity", "page")])),
            ["payments-team", "oncall"]
        );
        assert_eq!(
            to(labels(&[("severity", "ticket")])),
            ["oncall"],
            "default receiver"
        );
        // Flags win over the file.
        let args = ServeArgs {
            config: Some(dir.path().join("p.toml")),
            rules: vec![PathBuf::from("/etc/r.yml")],
            ..Default::default()
        };
        assert_eq!(
            Settings::resolve(args).unwrap().alerting.rule_files,
            [PathBuf::from("/etc/r.yml")]
        );
    }

    #[test]
    fn bad_alerting_settings_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        for (text, key) in [
            (
                "[alerting]\nresend_delay = \"soon\"\n",
                "alerting.resend_delay",
            ),
            (
                "[[alerting.route]]\nreceiver = \"nobody\"\n",
                "alerting.route[0].receiver",
            ),
            (
                "[[alerting.webhook]]\nname = \"a\"\nurl = \"ftp://x\"\n",
                "alerting.webhook[a].url",
            ),
            ("[alerting]\nno_such = 1\n", "no_such"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = Settings::resolve(ServeArgs {
                config: Some(file.clone()),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    /// A self-signed certificate and its key, written as `cert.pem` and `key.pem` in `dir`.
    fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        (dir.join("cert.pem"), dir.join("key.pem"))
    }

    #[test]
    fn compaction_comes_from_its_table_flat_keys_or_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        let resolve = |text: &str, args: ServeArgs| {
            std::fs::write(&file, text).unwrap();
            Settings::resolve(ServeArgs {
                config: Some(file.clone()),
                ..args
            })
        };
        let s = resolve(
            "[compaction]\ninterval = \"30s\"\nmin_files = 4\ntarget_size = \"64MiB\"\n",
            ServeArgs::default(),
        )
        .unwrap();
        assert_eq!(s.compaction.interval, Duration::from_secs(30));
        assert_eq!(s.compaction.min_files, 4);
        assert_eq!(s.compaction.target_bytes, 64 << 20);
        let s = resolve(
            "compaction_interval = \"0s\"\n[compaction]\nmin_files = 4\n",
            ServeArgs {
                compaction_min_files: Some(6),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(s.compaction.interval.is_zero(), "0s turns it off");
        assert_eq!(s.compaction.min_files, 6, "the flag wins");
        let e = resolve("[compaction]\nmin_files = 1\n", ServeArgs::default()).unwrap_err();
        assert!(format!("{e:#}").contains("compaction-min-files"), "{e:#}");
        let e = resolve("[compaction]\ninterval = \"often\"\n", ServeArgs::default()).unwrap_err();
        assert!(format!("{e:#}").contains("compaction-interval"), "{e:#}");
    }

    #[test]
    fn tls_comes_from_the_flags_or_the_tls_table_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_cert(dir.path());
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nclient_ca = \"cert.pem\"\n",
        )
        .unwrap();
        let s = Settings::resolve(ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        let tls = s.tls.as_ref().expect("tls from [tls]");
        assert!(tls.client_auth);
        assert_eq!(tls.cert_file, cert);
        assert_eq!(s.scheme(), "https");
        assert!(s.alerting.external_url.starts_with("https://"));
        // A flag wins over the file.
        let err = Settings::resolve(ServeArgs {
            config: Some(file),
            tls_key: Some(dir.path().join("nowhere.pem")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("nowhere.pem"), "{err:#}");
        let s = Settings::resolve(ServeArgs {
            tls_cert: Some(cert),
            tls_key: Some(key),
            ..Default::default()
        })
        .unwrap();
        assert!(!s.tls.expect("tls from flags").client_auth);
    }

    #[test]
    fn the_readme_tls_example_is_a_working_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tls")).unwrap();
        let (cert, _) = write_cert(&dir.path().join("tls"));
        std::fs::rename(&cert, dir.path().join("tls/server.crt")).unwrap();
        std::fs::rename(
            dir.path().join("tls/key.pem"),
            dir.path().join("tls/server.key"),
        )
        .unwrap();
        std::fs::copy(
            dir.path().join("tls/server.crt"),
            dir.path().join("tls/ca.crt"),
        )
        .unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            doc_block("security.md", "Example TLS config", "toml"),
        )
        .unwrap();
        let s = Settings::resolve(ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap();
        let tls = s.tls.expect("tls");
        assert_eq!(tls.cert_file, dir.path().join("tls/server.crt"));
        assert!(tls.client_auth);
    }

    #[test]
    fn half_a_tls_setup_is_refused_naming_the_missing_flag() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_cert(dir.path());
        for (args, want) in [
            (
                ServeArgs {
                    tls_cert: Some(cert.clone()),
                    ..Default::default()
                },
                "needs --tls-key",
            ),
            (
                ServeArgs {
                    tls_key: Some(key),
                    ..Default::default()
                },
                "needs --tls-cert",
            ),
            (
                ServeArgs {
                    tls_client_ca: Some(cert),
                    ..Default::default()
                },
                "--tls-client-ca",
            ),
        ] {
            let err = format!("{:#}", Settings::resolve(args).unwrap_err());
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn client_certificates_authenticate_the_otlp_ports_but_not_the_api_port() {
        let public: SocketAddr = "0.0.0.0:4317".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let none = crate::auth::Tokens::default;
        assert!(auth_decision(local, &[public, public], true, none(), false).is_ok());
        let err = auth_decision(local, &[public], false, none(), false).unwrap_err();
        assert!(
            err.to_string()
                .contains("refusing to listen on 0.0.0.0:4317")
        );
        let err = auth_decision(public, &[local], true, none(), false).unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
    }

    #[test]
    fn browser_settings_come_from_flags_or_the_file_and_bad_ones_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            "allowed_hosts = [\"periscope.internal\"]\npublic_url = \"https://obs.example.com\"\n\
             cors_allowed_origins = [\"https://shop.example.com\", \"*\"]\n",
        )
        .unwrap();
        assert!(
            Settings::resolve(ServeArgs {
                config: Some(file.clone()),
                ..Default::default()
            })
            .is_ok()
        );
        for (args, key) in [
            (
                ServeArgs {
                    public_url: Some("obs.example.com".into()),
                    ..Default::default()
                },
                "public-url",
            ),
            (
                ServeArgs {
                    config: Some(file),
                    cors_allowed_origins: vec!["shop.example.com".into()],
                    ..Default::default()
                },
                "cors-allowed-origins",
            ),
            (
                ServeArgs {
                    allowed_hosts: vec!["http://periscope.internal".into()],
                    ..Default::default()
                },
                "allowed-hosts",
            ),
        ] {
            let err = format!("{:#}", Settings::resolve(args).unwrap_err());
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let args = ServeArgs {
            max_request_bytes: Some("lots".into()),
            ..Default::default()
        };
        let err = Settings::resolve(args).unwrap_err().to_string();
        assert!(err.contains("max-request-bytes"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        let err = Settings::resolve(ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("no_such_key"), "{err}");
    }
}
