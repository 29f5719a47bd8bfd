//! Settings of `periscope serve`: flags > environment > TOML file > defaults.
//!
//! The TOML file has one section per part of the server, and each part owns its section
//! and its defaults: `[storage]`, `[retention]` and `[compaction]` in
//! `periscope_storage::settings`, `[query]` in `periscope_query::settings`, `[collector]`
//! in `periscope_collector::settings`, `[alerting]` in `periscope_alerting`, `[auth]` in
//! `auth::policy`, `[tls]` in `tls`, `[logging]` in `logging`; `[server]` and `[http]`
//! are the binary's own, here. Durations (`"30s"`) and sizes (`"64MiB"`) are read by
//! serde through `humantime-serde` and `bytesize`; an error names the file, the line,
//! the key and the flag that sets the same thing.
//!
//! This module reads the file, folds the flat keys of older files into their sections
//! (they still work, with a deprecation warning at start), lays the flags over the
//! sections and lets each section resolve itself into the values the server runs with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytesize::ByteSize;
use clap::Args;
use periscope_alerting::{AlertingConfig, AlertingSection};
use periscope_collector::settings::CollectorSection;
use periscope_query::settings::QuerySection;
use periscope_storage::settings::{CompactionSection, RetentionSection, StorageSection};
use serde::Deserialize;

use crate::auth::policy::AuthSection;
use crate::logging::LogSection;
use crate::tls::TlsSection;

/// Flags of `periscope serve`. Each has an environment variable and a TOML key.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML configuration file: a section per part, e.g. `[query] timeout` for
    /// --query-timeout (see docs/configuration.md).
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

/// `[server]`: settings of the whole process.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    /// Process memory budget [default: 50% of the machine's memory].
    memory_limit: Option<ByteSize>,
}

/// `[http]`: the UI and API port, and the rules of all HTTP ports.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    /// Address of the UI and query APIs [default: 127.0.0.1:7070].
    addr: Option<SocketAddr>,
    /// Time a client has to send a request's headers [default: 10s].
    #[serde(default, with = "humantime_serde")]
    header_read_timeout: Option<Duration>,
    /// Largest request header block [default: 64KiB].
    max_header_bytes: Option<ByteSize>,
    /// Host names the HTTP ports answer to besides IP addresses and `localhost`.
    allowed_hosts: Option<Vec<String>>,
    /// The URL browsers use to reach the UI.
    public_url: Option<String>,
    /// Web origins whose pages may send OTLP/HTTP (CORS).
    cors_allowed_origins: Option<Vec<String>>,
}

/// The TOML file: one section per part of the server. The flat keys below the sections
/// are the spelling of older files, read as aliases (see [`FLAT_KEYS`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    logging: LogSection,
    #[serde(default)]
    collector: CollectorSection,
    #[serde(default)]
    http: HttpSection,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    retention: RetentionSection,
    #[serde(default)]
    compaction: CompactionSection,
    #[serde(default)]
    query: QuerySection,
    /// `[alerting]`: rule files, Alertmanagers, evaluation, webhooks, routes, delivery.
    #[serde(default)]
    alerting: AlertingSection,
    #[serde(default)]
    auth: AuthSection,
    /// `[[token]]` tables: name, role, hash, expires.
    #[serde(default)]
    token: Vec<crate::auth::TokenEntry>,
    /// `[tls]`: cert, key, client_ca; relative to the config file.
    #[serde(default)]
    tls: TlsSection,

    // Deprecated flat keys, each an alias of a section key.
    otlp_grpc_addr: Option<SocketAddr>,
    otlp_http_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    memory_limit: Option<ByteSize>,
    max_request_bytes: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    query_timeout: Option<Duration>,
    query_memory_limit: Option<ByteSize>,
    query_max_rows: Option<usize>,
    query_max_bytes: Option<ByteSize>,
    query_max_samples: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    flush_interval: Option<Duration>,
    flush_bytes: Option<ByteSize>,
    log: Option<String>,
    log_format: Option<String>,
    #[serde(alias = "rules")]
    rule_files: Option<Vec<PathBuf>>,
    #[serde(alias = "alertmanager_urls")]
    alertmanager_url: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    header_read_timeout: Option<Duration>,
    max_header_bytes: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    retention_traces: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retention_logs: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retention_metrics: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retention_check_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    compaction_interval: Option<Duration>,
    compaction_min_files: Option<usize>,
    compaction_target_size: Option<ByteSize>,
    tokens_file: Option<PathBuf>,
    insecure_no_auth: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    allowed_hosts: Option<Vec<String>>,
    public_url: Option<String>,
    cors_allowed_origins: Option<Vec<String>>,
}

/// A flat key found in the config file: still read, but deprecated in favour of its
/// section key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeprecatedKey {
    /// The flat key as written, e.g. `query_timeout`.
    pub old: &'static str,
    /// The section that holds it now, e.g. `query`.
    pub section: &'static str,
    /// Its name in the section, e.g. `timeout`.
    pub key: &'static str,
}

impl std::fmt::Display for DeprecatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DeprecatedKey { old, section, key } = self;
        write!(
            f,
            "config key `{old}` is deprecated: write `{key}` under `[{section}]` instead"
        )
    }
}

/// Declares the flat keys once: the table [`FLAT_KEYS`] (for error messages) and
/// `FileConfig::fold_flat_keys`, which moves each flat key found into its section.
macro_rules! flat_keys {
    ($($flat:ident => [$section:ident] $key:ident, $flag:literal;)*) => {
        /// Every flat key of older files: the key, its section, its name in the section,
        /// and the flag that sets it.
        const FLAT_KEYS: &[(&str, &str, &str, &str)] = &[
            $((stringify!($flat), stringify!($section), stringify!($key), $flag)),*
        ];

        impl FileConfig {
            /// Moves the flat keys into their sections; a flat key wins over the section
            /// key, as it did before sections. Returns the flat keys found.
            fn fold_flat_keys(&mut self) -> Vec<DeprecatedKey> {
                let mut found = Vec::new();
                $(
                    if let Some(value) = self.$flat.take() {
                        self.$section.$key = Some(value);
                        found.push(DeprecatedKey {
                            old: stringify!($flat),
                            section: stringify!($section),
                            key: stringify!($key),
                        });
                    }
                )*
                found
            }
        }
    };
}

flat_keys! {
    memory_limit => [server] memory_limit, "memory-limit";
    log => [logging] filter, "log";
    log_format => [logging] format, "log-format";
    otlp_grpc_addr => [collector] otlp_grpc_addr, "otlp-grpc-addr";
    otlp_http_addr => [collector] otlp_http_addr, "otlp-http-addr";
    max_request_bytes => [collector] max_request_bytes, "max-request-bytes";
    http_addr => [http] addr, "http-addr";
    header_read_timeout => [http] header_read_timeout, "header-read-timeout";
    max_header_bytes => [http] max_header_bytes, "max-header-bytes";
    allowed_hosts => [http] allowed_hosts, "allowed-hosts";
    public_url => [http] public_url, "public-url";
    cors_allowed_origins => [http] cors_allowed_origins, "cors-allowed-origins";
    data_dir => [storage] data_dir, "data-dir";
    flush_interval => [storage] flush_interval, "flush-interval";
    flush_bytes => [storage] flush_bytes, "flush-bytes";
    retention_traces => [retention] traces, "retention-traces";
    retention_logs => [retention] logs, "retention-logs";
    retention_metrics => [retention] metrics, "retention-metrics";
    retention_check_interval => [retention] check_interval, "retention-check-interval";
    compaction_interval => [compaction] interval, "compaction-interval";
    compaction_min_files => [compaction] min_files, "compaction-min-files";
    compaction_target_size => [compaction] target_size, "compaction-target-size";
    query_timeout => [query] timeout, "query-timeout";
    query_memory_limit => [query] memory_limit, "query-memory-limit";
    query_max_rows => [query] max_rows, "query-max-rows";
    query_max_bytes => [query] max_bytes, "query-max-bytes";
    query_max_samples => [query] max_samples, "query-max-samples";
    rule_files => [alerting] rule_files, "rules";
    alertmanager_url => [alerting] alertmanager_urls, "alertmanager-url";
    tokens_file => [auth] tokens_file, "tokens-file";
    insecure_no_auth => [auth] insecure_no_auth, "insecure-no-auth";
    tls_cert => [tls] cert, "tls-cert";
    tls_key => [tls] key, "tls-key";
    tls_client_ca => [tls] client_ca, "tls-client-ca";
}

/// The flag that sets the key at `path` (`compaction.interval` or `compaction_interval`),
/// if any.
fn flag_of(path: &str) -> Option<&'static str> {
    FLAT_KEYS
        .iter()
        .find(|(old, section, key, _)| {
            path == *old
                || path
                    .strip_prefix(section)
                    .and_then(|rest| rest.strip_prefix('.'))
                    == Some(key)
        })
        .map(|(_, _, _, flag)| *flag)
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
    /// The `[query]` limits, resolved.
    pub query: periscope_query::settings::QueryLimits,
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
    /// The config file, when there is one.
    pub config_file: Option<PathBuf>,
    /// Flat keys the config file uses, to warn about once logging is set up.
    pub deprecated_keys: Vec<DeprecatedKey>,
}

impl Settings {
    /// `https` with TLS, else `http`: the scheme of the UI and API URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Logs one warning per deprecated flat key of the config file (call once, after
    /// logging is set up).
    pub fn warn_deprecated_keys(&self) {
        let file = self
            .config_file
            .as_deref()
            .map(Path::display)
            .map(|d| d.to_string())
            .unwrap_or_default();
        for key in &self.deprecated_keys {
            tracing::warn!(
                file,
                old = key.old,
                new = format!("[{}] {}", key.section, key.key),
                "{key}"
            );
        }
    }
}

/// Parses a size such as `16MiB`, `2GiB` or `1048576` given as the flag `key`.
pub fn parse_size(key: &str, text: &str) -> anyhow::Result<u64> {
    text.trim()
        .parse::<ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| anyhow::anyhow!("{key}: {text:?} is not a size like 512MiB or 2GiB ({e})"))
}

/// Parses a duration such as `500ms`, `30s`, `5m`, `7d` given as the flag `key`.
pub fn parse_duration(key: &str, text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text.trim())
        .map_err(|e| anyhow::anyhow!("{key}: {text:?} is not a duration like 30s, 5m or 7d ({e})"))
}

fn parse_addr(key: &str, text: &str) -> anyhow::Result<SocketAddr> {
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{key}: {text:?} is not an address like 127.0.0.1:4317 ({e})"))
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

/// Reads the config file; an error names the file, the line and the key (and the flag
/// that sets the same thing).
fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let parsed = toml::de::Deserializer::parse(&text)
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    serde_path_to_error::deserialize(parsed).map_err(|e| {
        let key = e.path().to_string();
        let flag = flag_of(&key)
            .map(|flag| format!(" (--{flag})"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "config file {}: key `{key}`{flag}: {}",
            path.display(),
            e.inner()
        )
    })
}

/// Lays a flag over the file's value: the flag wins when given.
fn over<T>(slot: &mut Option<T>, flag: Option<T>) {
    if flag.is_some() {
        *slot = flag;
    }
}

/// A list flag over the file's list: the flag wins when given at all.
fn over_list<T>(slot: &mut Option<Vec<T>>, flag: Vec<T>) {
    if !flag.is_empty() {
        *slot = Some(flag);
    }
}

impl Settings {
    /// Merges flags and environment (already in `args`) over the file over defaults.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        let mut file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let deprecated_keys = file.fold_flat_keys();
        let base = args
            .config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let relative = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let size =
            |key: &str, v: Option<String>| v.map(|t| parse_size(key, &t).map(ByteSize)).transpose();
        let duration =
            |key: &str, v: Option<String>| v.map(|t| parse_duration(key, &t)).transpose();
        let addr = |key: &str, v: Option<String>| v.map(|t| parse_addr(key, &t)).transpose();

        let memory_limit =
            match size("memory-limit", args.memory_limit)?.or(file.server.memory_limit) {
                Some(b) => b.as_u64(),
                None => machine_memory() / 2,
            };
        if memory_limit < 64 << 20 {
            bail!("memory-limit: {memory_limit} bytes is too small; give at least 64MiB");
        }

        over(&mut file.logging.filter, args.log);
        over(&mut file.logging.format, args.log_format);
        let log_format = file.logging.format.unwrap_or_else(|| "text".into());
        let json_logs = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => bail!("log-format: {other:?} is not text or json"),
        };

        let c = &mut file.collector;
        over(
            &mut c.max_request_bytes,
            size("max-request-bytes", args.max_request_bytes)?,
        );
        over(
            &mut c.otlp_grpc_addr,
            addr("otlp-grpc-addr", args.otlp_grpc_addr)?,
        );
        over(
            &mut c.otlp_http_addr,
            addr("otlp-http-addr", args.otlp_http_addr)?,
        );
        let collector = file.collector.resolve()?;

        let h = &mut file.http;
        over(&mut h.addr, addr("http-addr", args.http_addr)?);
        over(
            &mut h.header_read_timeout,
            duration("header-read-timeout", args.header_read_timeout)?,
        );
        over(
            &mut h.max_header_bytes,
            size("max-header-bytes", args.max_header_bytes)?,
        );
        over_list(&mut h.allowed_hosts, args.allowed_hosts);
        over(&mut h.public_url, args.public_url);
        over_list(&mut h.cors_allowed_origins, args.cors_allowed_origins);
        let http_addr = h.addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7070)));

        over(&mut file.storage.data_dir, args.data_dir);
        over(
            &mut file.storage.flush_interval,
            duration("flush-interval", args.flush_interval)?,
        );
        over(
            &mut file.storage.flush_bytes,
            size("flush-bytes", args.flush_bytes)?,
        );
        let storage = file.storage.resolve(memory_limit);

        let r = &mut file.retention;
        over(
            &mut r.traces,
            duration("retention-traces", args.retention_traces)?,
        );
        over(
            &mut r.logs,
            duration("retention-logs", args.retention_logs)?,
        );
        over(
            &mut r.metrics,
            duration("retention-metrics", args.retention_metrics)?,
        );
        over(
            &mut r.check_interval,
            duration("retention-check-interval", args.retention_check_interval)?,
        );

        let c = &mut file.compaction;
        over(
            &mut c.interval,
            duration("compaction-interval", args.compaction_interval)?,
        );
        over(&mut c.min_files, args.compaction_min_files);
        over(
            &mut c.target_size,
            size("compaction-target-size", args.compaction_target_size)?,
        );
        let compaction = file.compaction.resolve()?;

        let q = &mut file.query;
        over(
            &mut q.timeout,
            duration("query-timeout", args.query_timeout)?,
        );
        over(
            &mut q.memory_limit,
            size("query-memory-limit", args.query_memory_limit)?,
        );
        over(&mut q.max_rows, args.query_max_rows);
        over(
            &mut q.max_bytes,
            size("query-max-bytes", args.query_max_bytes)?,
        );
        over(&mut q.max_samples, args.query_max_samples);
        let query = file.query.resolve(memory_limit)?;

        let tls = crate::tls::resolve(
            [args.tls_cert, args.tls_key, args.tls_client_ca],
            file.tls,
            &base,
        )?;

        let rule_files = if args.rules.is_empty() {
            file.alerting
                .rule_files
                .take()
                .unwrap_or_default()
                .into_iter()
                .map(relative)
                .collect()
        } else {
            args.rules
        };
        let mut alertmanager_urls = file.alerting.alertmanager_urls.take();
        over_list(&mut alertmanager_urls, args.alertmanager_url);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let alerting = AlertingConfig::resolve(
            file.alerting,
            rule_files,
            alertmanager_urls.unwrap_or_default(),
            format!("{scheme}://{http_addr}"),
            storage.data_dir.join("alerting"),
        )?;

        let tokens_file = args
            .tokens_file
            .or_else(|| file.auth.tokens_file.map(relative));
        let tokens = crate::auth::Tokens::load(&file.token, tokens_file.as_deref())?;
        let insecure = args.insecure_no_auth || file.auth.insecure_no_auth.unwrap_or(false);
        let auth = crate::auth::policy::auth_decision(
            http_addr,
            &[collector.otlp_grpc_addr, collector.otlp_http_addr],
            tls.as_ref().is_some_and(|t| t.client_auth),
            tokens,
            insecure,
        )?;
        let h = file.http;
        let browser = crate::auth::origin::BrowserPolicy::new(
            &h.allowed_hosts.unwrap_or_default(),
            h.public_url.as_deref(),
            &h.cors_allowed_origins.unwrap_or_default(),
            auth.is_some(),
        )?;
        Ok(Settings {
            otlp_grpc_addr: collector.otlp_grpc_addr,
            otlp_http_addr: collector.otlp_http_addr,
            http_addr,
            data_dir: storage.data_dir,
            memory_limit,
            max_request_bytes: collector.max_request_bytes,
            query,
            flush_interval: storage.flush_interval,
            flush_bytes: storage.flush_bytes,
            log: file.logging.filter.unwrap_or_else(|| "info".into()),
            json_logs,
            alerting,
            auth,
            retention: file.retention.retention(),
            retention_interval: file.retention.check_interval(),
            compaction,
            header_read_timeout: h.header_read_timeout.unwrap_or(Duration::from_secs(10)),
            max_header_bytes: h.max_header_bytes.map_or(64 << 10, |b| b.as_u64()),
            tls,
            browser: std::sync::Arc::new(browser),
            config_file: args.config,
            deprecated_keys,
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
        assert_eq!(s.query.timeout, Duration::from_secs(2));
        assert_eq!(s.memory_limit, 1 << 30);
        assert_eq!(s.query.memory_limit, 1 << 28);
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
    fn the_alerting_docs_example_is_a_working_config() {
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
        assert!(s.deprecated_keys.is_empty(), "{:?}", s.deprecated_keys);
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
    fn the_configuration_docs_example_is_a_working_config_in_sections() {
        let dir = tempfile::tempdir().unwrap();
        // The example points at a tokens file beside it (it listens beyond loopback).
        std::fs::write(
            dir.path().join("tokens"),
            "grafana read sha256:9a41f0c2d3b4a5e6f7081920a1b2c3d4e5f60718293a4b5c6d7e8f9012345607\n",
        )
        .unwrap();
        let file = dir.path().join("periscope.toml");
        std::fs::write(
            &file,
            doc_block("configuration.md", "Example server config", "toml"),
        )
        .unwrap();
        let s = Settings::resolve(ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap();
        assert!(
            s.deprecated_keys.is_empty(),
            "the documented example uses flat keys: {:?}",
            s.deprecated_keys
        );
        assert_eq!(s.memory_limit, 4 << 30);
        assert_eq!(s.query.timeout, Duration::from_secs(30));
        assert_eq!(s.query.memory_limit, 1 << 30);
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/periscope"));
        assert_eq!(s.flush_bytes, 256 << 20);
        assert_eq!(s.otlp_grpc_addr, SocketAddr::from(([0, 0, 0, 0], 4317)));
        assert_eq!(s.http_addr, SocketAddr::from(([127, 0, 0, 1], 7070)));
        assert!(s.json_logs);
        assert!(s.auth.is_some(), "tokens from the tokens file beside it");
        assert!(s.browser.host_allowed(Some("periscope.internal:7070")));
        assert!(!s.browser.host_allowed(Some("evil.example")));
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
    fn the_security_docs_tls_example_is_a_working_config() {
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
    fn flat_keys_and_sections_resolve_alike_and_flat_keys_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        let resolve = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Settings::resolve(ServeArgs {
                config: Some(file.clone()),
                ..Default::default()
            })
            .unwrap()
        };
        let flat = resolve(
            "memory_limit = \"1GiB\"\nquery_timeout = \"5s\"\nhttp_addr = \"127.0.0.1:9999\"\n\
             flush_bytes = \"8MiB\"\nretention_logs = \"7d\"\nmax_request_bytes = \"1MiB\"\n\
             log_format = \"json\"\n",
        );
        let sectioned = resolve(
            "[server]\nmemory_limit = \"1GiB\"\n[query]\ntimeout = \"5s\"\n\
             [http]\naddr = \"127.0.0.1:9999\"\n[storage]\nflush_bytes = \"8MiB\"\n\
             [retention]\nlogs = \"7d\"\n[collector]\nmax_request_bytes = \"1MiB\"\n\
             [logging]\nformat = \"json\"\n",
        );
        for s in [&flat, &sectioned] {
            assert_eq!(s.memory_limit, 1 << 30);
            assert_eq!(s.query.timeout, Duration::from_secs(5));
            assert_eq!(s.http_addr.port(), 9999);
            assert_eq!(s.flush_bytes, 8 << 20);
            assert_eq!(s.retention.logs, Some(Duration::from_secs(7 * 86400)));
            assert_eq!(s.max_request_bytes, 1 << 20);
            assert!(s.json_logs);
        }
        assert!(sectioned.deprecated_keys.is_empty());
        assert_eq!(flat.deprecated_keys.len(), 7);
        let timeout = flat
            .deprecated_keys
            .iter()
            .find(|k| k.old == "query_timeout")
            .unwrap();
        assert_eq!(
            timeout.to_string(),
            "config key `query_timeout` is deprecated: write `timeout` under `[query]` instead"
        );
    }

    #[test]
    fn a_bad_value_in_the_file_names_the_file_the_line_the_key_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        for (text, want) in [
            (
                "[query]\nmax_rows = 10\ntimeout = \"soon\"\n",
                ["line 3", "`query.timeout` (--query-timeout)"],
            ),
            (
                "log = \"info\"\nflush_bytes = \"lots\"\n",
                ["line 2", "`flush_bytes` (--flush-bytes)"],
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = Settings::resolve(ServeArgs {
                config: Some(file.clone()),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(&file.display().to_string()), "{err}");
            for want in want {
                assert!(err.contains(want), "{text}: {err}");
            }
        }
    }

    #[test]
    fn every_flat_key_names_a_flag_of_serve() {
        use clap::Args as _;
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        let flags: Vec<&str> = command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .collect();
        for (old, section, key, flag) in FLAT_KEYS {
            assert!(flags.contains(flag), "{old} -> [{section}] {key}: --{flag}");
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
