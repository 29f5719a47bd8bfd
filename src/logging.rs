//! The process's own logs: `[log]` of the config file and the one place that sets up
//! `tracing` output for `serve`, `demo` and `gateway`.
//!
//! Logs go to stderr (stdout carries the `listening` line the tests and scripts read),
//! as text or JSON, filtered with `tracing`'s `EnvFilter` syntax. The demo adds the
//! agent's layer, which exports the simulated shop's spans and events as OTLP instead of
//! printing them.

use serde::Deserialize;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `[logging]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// Log filter in `tracing` syntax, e.g. `info` or `periscope_storage=debug`
    /// [default: info].
    pub filter: Option<String>,
    /// Log format: `text` or `json` [default: text].
    pub format: Option<String>,
}

/// Target prefix of the demo shop's own spans and events.
const SHOP_TARGET: &str = "periscope::demo";

/// Sets up `tracing` output on stderr with `filter` (`fallback` when it does not parse),
/// as JSON lines when `json`. With `demo_shop`, events of the demo's shop go to that
/// layer (the agent, which exports them) and not to stderr.
pub fn init_logging(
    filter: &str,
    fallback: &str,
    json: bool,
    demo_shop: Option<periscope_agent::TracingLayer>,
) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(fallback));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let stderr = if json {
        stderr.json().boxed()
    } else {
        stderr.boxed()
    };
    let shop_only =
        tracing_subscriber::filter::filter_fn(|meta| meta.target().starts_with(SHOP_TARGET));
    let not_shop = demo_shop.is_some().then(|| {
        tracing_subscriber::filter::filter_fn(|meta| !meta.target().starts_with(SHOP_TARGET))
    });
    tracing_subscriber::registry()
        .with(stderr.with_filter(filter).with_filter(not_shop))
        .with(demo_shop.map(|layer| layer.with_filter(shop_only)))
        .init();
}
