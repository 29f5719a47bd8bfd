//! `periscope demo`: the all-in-one server, a gateway, and a small simulated shop of real
//! HTTP services on loopback, each instrumented by the agent, with steady traffic,
//! occasional errors and latency spikes, and an alert rule that fires during a spike.

mod shop;
mod traffic;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{oneshot, watch};

use crate::config::{ServeArgs, Settings, parse_duration};
use crate::server;

/// `periscope demo` flags; every `periscope serve` flag applies too.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address of the shop's gateway (the entry point of the simulated traffic).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub gateway_addr: String,
    /// Requests per second the traffic generator sends.
    #[arg(long, default_value_t = 10.0, value_name = "N")]
    pub rate: f64,
    /// When the first latency spike of the payment service starts.
    #[arg(long, default_value = "40s", value_name = "DURATION")]
    pub spike_after: String,
    /// How long each spike lasts.
    #[arg(long, default_value = "50s", value_name = "DURATION")]
    pub spike_length: String,
    /// Time from the start of one spike to the next.
    #[arg(long, default_value = "3m", value_name = "DURATION")]
    pub spike_every: String,
    /// The server's flags (`periscope serve --help`); the data directory defaults to
    /// `./periscope-demo-data`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The rule the demo installs: checkout's p95 latency above 500 ms for 20 s.
const RULES: &str = r#"groups:
  - name: shop-demo
    interval: 5s
    rules:
      - alert: CheckoutSlow
        expr: |
          histogram_quantile(0.95,
            sum by (le) (rate(http_server_request_duration_seconds_bucket{job="checkout"}[30s]))
          ) > 0.5
        for: 20s
        labels:
          severity: page
        annotations:
          summary: "checkout p95 latency is {{ $value | humanizeDuration }}"
          description: "The payment service is slow; checkout waits for it."
      - alert: PaymentErrors
        expr: |
          sum(rate(http_server_request_duration_seconds_count{job="payment", http_response_status_code=~"5.."}[1m]))
            / sum(rate(http_server_request_duration_seconds_count{job="payment"}[1m])) > 0.2
        for: 30s
        labels:
          severity: ticket
        annotations:
          summary: "payment fails {{ $value | humanizePercentage }} of charges"
"#;

/// The spike schedule, shared by the traffic generator and the payment service.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    after: Duration,
    length: Duration,
    every: Duration,
}

impl Schedule {
    /// Whether `elapsed` since the start falls in a spike.
    pub fn spiking(&self, elapsed: Duration) -> bool {
        if elapsed < self.after {
            return false;
        }
        let every = self.every.max(self.length).max(Duration::from_secs(1));
        let into = (elapsed - self.after).as_millis() % every.as_millis();
        into < self.length.as_millis()
    }
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let schedule = Schedule {
        after: parse_duration("spike-after", &args.spike_after)?,
        length: parse_duration("spike-length", &args.spike_length)?,
        every: parse_duration("spike-every", &args.spike_every)?,
    };
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        anyhow::bail!(
            "rate: {} is not between 0 and 10000 requests per second",
            args.rate
        );
    }
    let mut serve = args.serve;
    let data_dir = serve
        .data_dir
        .get_or_insert_with(|| PathBuf::from("periscope-demo-data"))
        .clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let rules = data_dir.join("demo-rules.yml");
    std::fs::write(&rules, RULES).with_context(|| format!("cannot write {}", rules.display()))?;
    serve.rules.push(rules);
    serve.log.get_or_insert_with(|| "warn".into());
    let settings = Settings::resolve(serve)?;
    if settings.auth.is_some() {
        anyhow::bail!(
            "the demo's services send telemetry without tokens: run it without --tokens-file or [[token]]"
        );
    }
    if settings.tls.is_some() {
        anyhow::bail!(
            "the demo's services send telemetry over plain OTLP: run it without --tls-cert, --tls-key or [tls]"
        );
    }
    // The server's own events go to stderr; the shop's spans and events only to the
    // agent's `tracing` layer (exported as OTLP), not to the terminal.
    crate::logging::init_logging(
        &settings.log,
        "warn",
        false,
        Some(periscope_agent::TracingLayer::new()),
    );
    settings.warn_deprecated_keys();

    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_server_tx, mut stop_server) = watch::channel(false);
    let server = tokio::spawn(server::serve_until(
        settings,
        async move {
            let _ = stop_server.wait_for(|s| *s).await;
        },
        Some(ready_tx),
    ));
    let bound = match ready_rx.await {
        Ok(b) => b,
        Err(_) => {
            // The server failed before listening; its error says why.
            return server.await.context("server task")?;
        }
    };
    let start = tokio::time::Instant::now();
    let shop = shop::Shop::start(
        &format!("http://{}", bound.grpc),
        &args.gateway_addr,
        Arc::new(shop::Chaos::new(schedule, start)),
    )
    .await?;
    let traffic = tokio::spawn(traffic::drive(
        shop.gateway_addr(),
        args.rate,
        stop_rx.clone(),
    ));
    println!(
        "demo gateway={} ui=http://{}/",
        shop.gateway_addr(),
        bound.http
    );
    println!(
        "\nPeriscope demo is running.\n  UI:       http://{ui}/   (service map: http://{ui}/ui/map)\n  Shop:     http://{gw}/   (the gateway; try /api/catalog/products)\n  Traffic:  {rate} requests/s; payment slows down {after:?} after start, for {len:?}, every {every:?}\n  Alerts:   CheckoutSlow fires during a slowdown: http://{ui}/ui/alerts\nPress Ctrl-C to stop.",
        ui = bound.http,
        gw = shop.gateway_addr(),
        rate = args.rate,
        after = schedule.after,
        len = schedule.length,
        every = schedule.every,
    );
    server::shutdown_signal().await;
    println!("Stopping the demo…");
    let _ = stop_tx.send(true);
    let _ = traffic.await;
    // The shop flushes its telemetry while the server still listens.
    shop.shutdown().await;
    let _ = stop_server_tx.send(true);
    server.await.context("server task")??;
    println!("Stopped. Data kept in {}.", data_dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spikes_follow_the_schedule() {
        let s = Schedule {
            after: Duration::from_secs(40),
            length: Duration::from_secs(50),
            every: Duration::from_secs(180),
        };
        assert!(!s.spiking(Duration::from_secs(39)));
        assert!(s.spiking(Duration::from_secs(40)));
        assert!(s.spiking(Duration::from_secs(89)));
        assert!(!s.spiking(Duration::from_secs(90)));
        assert!(s.spiking(Duration::from_secs(40 + 180 + 10)));
    }
}
