//! `periscope gateway`: a reverse proxy on hyper with the agent ([`periscope_agent`])
//! embedded, as an API gateway (routes by host and path prefix to upstream pools) or a
//! mesh proxy (a sidecar in front of one service). Load balancing (round robin, least
//! outstanding requests), active health checks, per-route timeouts and retries of
//! idempotent requests. Paths with dot segments or encoded separators are refused before
//! the route match, and the forwarding headers are the gateway's own (see [`forwarded`]).
//!
//! A product of its own on top of the agent: the agent stays embeddable (no TOML, no
//! server), and this crate adds the config file, the listener and the proxy. A request
//! flows: listener ([`periscope_listen`]) → the agent's [`ServerLayer`] (SERVER span,
//! access log) → [`proxy`] (route match, body buffering, target choice from [`balance`],
//! retries) → the agent's `ClientLayer` (CLIENT span) → upstream.
//!
//! ```no_run
//! # async fn run() -> Result<(), periscope_gateway::GatewayError> {
//! use periscope_gateway::{Gateway, GatewayConfig};
//! let config = GatewayConfig::load(std::path::Path::new("gateway.toml"))?;
//! let telemetry = Gateway::telemetry_for(&config, false)?;
//! let gateway = Gateway::start(&config, telemetry).await?;
//! gateway.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

pub mod balance;
pub mod config;
mod error;
pub mod forwarded;
mod health;
mod path;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use periscope_agent::{PeerAddr, ResourceInfo, ServerLayer, Telemetry};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Layer, ServiceBuilder};

pub use config::{GatewayConfig, Mode};
pub use error::GatewayError;
pub use proxy::UpstreamError;

use proxy::{ProxyService, ProxyState};

/// A running gateway or mesh proxy.
pub struct Gateway {
    addr: SocketAddr,
    telemetry: Telemetry,
    state: Arc<ProxyState>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// The telemetry a config asks for: the agent's exporter, or nothing when
    /// `[telemetry] enabled = false` or `no_telemetry`. Call inside a tokio runtime.
    pub fn telemetry_for(
        config: &GatewayConfig,
        no_telemetry: bool,
    ) -> Result<Telemetry, GatewayError> {
        if no_telemetry || !config.telemetry.enabled {
            return Ok(Telemetry::disabled());
        }
        let mut resource = ResourceInfo::new(config.service_name(), config.mode.kind());
        resource.service_version = config.service_version.clone();
        Ok(Telemetry::start(resource, config.telemetry.exporter())?)
    }

    /// Binds the listener, starts health checks and serves until [`Gateway::shutdown`].
    pub async fn start(
        config: &GatewayConfig,
        telemetry: Telemetry,
    ) -> Result<Gateway, GatewayError> {
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState::new(config, telemetry.clone()));
        let mut tasks = Vec::new();
        for (pool, upstream) in state.pools.iter().zip(&config.upstream) {
            if let Some(hc) = &upstream.health_check {
                tasks.push(health::spawn(pool.clone(), hc.clone()));
            }
        }
        let (stop, stopped) = watch::channel(false);
        let server_layer =
            ServerLayer::new(telemetry.clone()).access_log(config.telemetry.access_log);
        let header_timeout = config.header_read_timeout;
        let proxy = ProxyService {
            state: state.clone(),
        };
        tasks.push(tokio::spawn(accept_loop(
            listener,
            proxy,
            server_layer,
            header_timeout,
            stopped,
        )));
        Ok(Gateway {
            addr,
            telemetry,
            state,
            stop,
            tasks,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The embedded agent's telemetry handle.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Whether target `target` of upstream `upstream` is in rotation.
    pub fn target_healthy(&self, upstream: &str, target: usize) -> Option<bool> {
        let pool = self.state.pools.iter().find(|p| p.name == upstream)?;
        pool.targets
            .get(target)
            .map(|t| t.healthy.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Requests in flight on target `target` of upstream `upstream`.
    pub fn target_outstanding(&self, upstream: &str, target: usize) -> Option<usize> {
        let pool = self.state.pools.iter().find(|p| p.name == upstream)?;
        pool.targets
            .get(target)
            .map(|t| t.outstanding.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Stops accepting connections and health checks, and flushes telemetry (waiting at
    /// most `flush_timeout`).
    pub async fn shutdown(self, flush_timeout: Duration) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        self.telemetry.shutdown(flush_timeout).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    proxy: ProxyService,
    server_layer: ServerLayer,
    header_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let builder = Arc::new(builder);
    let stop = async move {
        let _ = stopped.changed().await;
    };
    periscope_listen::accept_until(&listener, stop, |stream, peer| {
        let service = ServiceBuilder::new()
            .map_request(move |mut r: http::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(PeerAddr(peer));
                r
            })
            .service(server_layer.layer(proxy.clone()));
        let builder = builder.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            if let Err(e) = builder
                .serve_connection(io, TowerToHyperService::new(service))
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    })
    .await;
}
