//! `periscope gateway`: runs the reverse proxy of `periscope-gateway` from a TOML config.

use std::path::PathBuf;
use std::time::Duration;

use periscope_gateway::{Gateway, GatewayConfig};

/// `periscope gateway` flags.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// The gateway config file (see docs/gateway.md).
    #[arg(long, env = "PERISCOPE_GATEWAY_CONFIG")]
    pub config: PathBuf,
    /// Proxy without the agent: no spans, logs or metrics (for comparison runs).
    #[arg(long)]
    pub no_telemetry: bool,
    /// Log filter for the gateway's own logs (stderr), e.g. `info` or `debug`.
    #[arg(long, env = "PERISCOPE_LOG", default_value = "info")]
    pub log: String,
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let config = GatewayConfig::load(&args.config)?;
    let telemetry = Gateway::telemetry_for(&config, args.no_telemetry)?;
    let gateway = Gateway::start(&config, telemetry).await?;
    println!(
        "listening gateway={} mode={}",
        gateway.local_addr(),
        config.mode.kind().as_str()
    );
    crate::server::shutdown_signal().await;
    gateway.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
