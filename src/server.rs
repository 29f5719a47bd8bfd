//! `periscope serve`: opens the store, starts the receivers, the query API and the
//! flusher, and shuts them down in order on Ctrl-C or SIGTERM.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use periscope_alerting::{Alerting, Sources};
use periscope_collector::Ingest;
use periscope_query::{QueryEngine, error_response};
use periscope_storage::{Store, StoreConfig};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::alerts::IngestSink;
use crate::config::Settings;

/// Completes on Ctrl-C or SIGTERM. The handlers are registered when this is called, not
/// when the future is first polled: a SIGTERM that arrives while the server is still
/// starting (after it printed `listening`, before it waits for the signal) must drain and
/// flush it, not kill it with the default action.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, interrupt) {
                (Some(mut term), Some(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                (Some(mut one), None) | (None, Some(mut one)) => {
                    one.recv().await;
                }
                (None, None) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Reloads the alert rules on SIGHUP, as Prometheus does.
fn reload_on_sighup(alerting: Alerting) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match alerting.reload().await {
                Ok(n) => info!(rules = n, "SIGHUP: alert rules reloaded."),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: rule reload refused; the old rules keep running.")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = alerting;
}

async fn metrics_text(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode metrics: {e}"),
        ),
    }
}

fn ops_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(metrics_text))
        .with_state(registry)
}

async fn bind(what: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}; is another server using it? choose another with --{what}-addr"))
}

/// The addresses a server bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// OTLP/gRPC.
    pub grpc: std::net::SocketAddr,
    /// UI and query APIs.
    pub http: std::net::SocketAddr,
}

/// Runs the server until a shutdown signal, then drains and flushes.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    serve_until(settings, shutdown_signal(), None).await
}

/// Runs the server until `shutdown` completes; sends the bound addresses to `ready` once
/// listening.
pub async fn serve_until(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
    ready: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> anyhow::Result<()> {
    let store = Store::open(StoreConfig {
        data_dir: settings.data_dir.clone(),
        flush_bytes: settings.flush_bytes,
        flush_interval: settings.flush_interval,
        max_buffered_bytes: settings.max_buffered_bytes(),
        retention: settings.retention,
        retention_interval: settings.retention_interval,
        // Longer than any query may run: a file a query has listed stays readable.
        retention_grace: settings.query.timeout + Duration::from_secs(5),
        work_bytes: settings.work_bytes(),
        compaction: settings.compaction,
        wire_decoder: Some(periscope_collector::replay_wire),
    })
    .with_context(|| {
        format!(
            "cannot open the data directory {}",
            settings.data_dir.display()
        )
    })?;
    // Requests being decoded may take an eighth of the budget (docs/operations.md,
    // "Memory budget"); the rest of it is the head's, the queries' and the flushes'.
    let ingest = Ingest::with_decoding_limit(store.clone(), settings.memory_limit / 8);
    // Alert rules evaluate in a pool of their own (a quarter of the query memory), so
    // that no user's query can starve them; user queries share the rest.
    let rules_memory = settings.query.memory_limit / 4;
    let engine = QueryEngine::new(
        store.clone(),
        settings
            .query
            .config(settings.query.memory_limit - rules_memory),
    )?;
    let rules_engine = QueryEngine::new(store.clone(), settings.query.config(rules_memory))?
        .sharing_metrics(engine.metrics());
    let mut registry = Registry::default();
    store.metrics().register(&mut registry);
    ingest.metrics().register(&mut registry);
    engine.metrics().register(&mut registry);
    let alerting_metrics = periscope_alerting::AlertingMetrics::default();
    alerting_metrics.register(&mut registry);
    let registry = Arc::new(registry);

    let grpc_listener = bind("otlp-grpc", settings.otlp_grpc_addr).await?;
    let http_listener = bind("otlp-http", settings.otlp_http_addr).await?;
    let api_listener = bind("http", settings.http_addr).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;
    // With port 0 the default external URL is only known now.
    let mut alerting_config = settings.alerting.clone();
    let scheme = settings.scheme();
    if alerting_config.external_url == format!("{scheme}://{}", settings.http_addr) {
        alerting_config.external_url = format!("{scheme}://{api_addr}");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (alerting, mut alert_tasks) = Alerting::start(
        alerting_config,
        Sources {
            engine: rules_engine.clone(),
            store: store.clone(),
        },
        Some(Arc::new(IngestSink(ingest.clone()))),
        alerting_metrics,
        stop_rx.clone(),
    )
    .await?;
    reload_on_sighup(alerting.clone());
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "listening otlp-grpc={grpc_addr} otlp-http={http_addr} http={api_addr}"
        )?;
        out.flush()?;
    }
    if let Some(ready) = ready {
        let _ = ready.send(Bound {
            grpc: grpc_addr,
            http: api_addr,
        });
    }
    info!(%grpc_addr, %http_addr, %api_addr, data_dir = %settings.data_dir.display(), "Periscope is serving.");
    if let Some(tls) = &settings.tls {
        info!(
            cert = %tls.cert_file.display(),
            client_certificates = tls.client_auth,
            "TLS on all ports."
        );
    }

    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let max = settings.max_request_bytes as usize;

    let mut tasks = tokio::task::JoinSet::new();
    let grpc_tokens = settings.auth.clone();
    let grpc = tonic::transport::Server::builder()
        // Huge header blocks are refused as on the HTTP ports.
        .http2_max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .layer(tonic::service::InterceptorLayer::new(
            move |req: tonic::Request<()>| match &grpc_tokens {
                Some(tokens) => crate::auth::middleware::grpc(tokens, req),
                None => Ok(req),
            },
        ))
        .add_routes(periscope_collector::grpc::services(ingest.clone(), max));
    match &settings.tls {
        None => {
            let deadline = settings.header_read_timeout;
            let (incoming, accept_loop) = crate::incoming::incoming(grpc_listener, move |s| {
                crate::incoming::first_bytes(s, deadline)
            });
            let grpc = grpc.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
            tasks.spawn(async move {
                let (served, ()) = tokio::join!(grpc, accept_loop);
                served.context("OTLP/gRPC server failed")
            });
        }
        Some(tls) => {
            let (incoming, accept_loop) = crate::tls::incoming(
                grpc_listener,
                tls.otlp_grpc.clone(),
                settings.header_read_timeout,
            );
            let grpc = grpc.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
            // Once tonic stops, it drops the incoming stream and the accept loop ends.
            tasks.spawn(async move {
                let (served, ()) = tokio::join!(grpc, accept_loop);
                served.context("OTLP/gRPC server failed")
            });
        }
    }
    let mut otlp_router = periscope_collector::http::router(ingest.clone(), max);
    if let Some(tokens) = &settings.auth {
        otlp_router = otlp_router.layer(axum::middleware::from_fn_with_state(
            tokens.clone(),
            crate::auth::middleware::ingest,
        ));
    }
    // Host and Origin first: a foreign page is refused (or given CORS) before anything else.
    let otlp_router = otlp_router.layer(axum::middleware::from_fn_with_state(
        settings.browser.clone(),
        crate::auth::origin::otlp,
    ));
    let limits = crate::http_serve::Limits {
        header_read_timeout: settings.header_read_timeout,
        max_header_bytes: settings.max_header_bytes as usize,
    };
    let tls = |port: fn(&crate::tls::ServerTls) -> &Arc<rustls::ServerConfig>| {
        settings.tls.as_ref().map(|t| port(t).clone())
    };
    let otlp_http = crate::http_serve::serve(
        http_listener,
        otlp_router,
        limits,
        tls(|t| &t.otlp_http),
        stopped(stop_rx.clone()),
    );
    tasks.spawn(async move { otlp_http.await.context("OTLP/HTTP server failed") });
    let ui_engine = engine.clone();
    // Every route that reads the store answers within --query-timeout.
    let reads = periscope_query::router(engine.clone())
        .merge(periscope_query::traces::router(engine.clone()))
        .merge(periscope_query::promql::router(engine))
        .merge(periscope_query::logsearch::router(
            store.clone(),
            stop_rx.clone(),
            settings.query.timeout,
        ))
        .merge(periscope_ui::router(periscope_ui::UiState {
            engine: ui_engine,
            store: periscope_query::storage::StoreView::new(store.clone()),
            alerting: alerting.clone(),
            ops_metrics: Some({
                let registry = registry.clone();
                Arc::new(move || {
                    let mut text = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                    text
                })
            }),
        }))
        .layer(axum::middleware::from_fn_with_state(
            settings.query.timeout,
            periscope_query::deadline,
        ));
    let api = reads
        .merge(periscope_collector::remote_write::router(ingest, max))
        .merge(periscope_alerting::router(alerting.clone()))
        .merge(ops_router(registry))
        .fallback(|| async {
            error_response(
                StatusCode::NOT_FOUND,
                "no such endpoint; see docs/ in the repository for the API",
            )
        });
    let api = match &settings.auth {
        Some(tokens) => api
            .merge(crate::auth::login::router(
                tokens.clone(),
                settings.tls.is_some(),
            ))
            .layer(axum::middleware::from_fn_with_state(
                tokens.clone(),
                crate::auth::middleware::api,
            )),
        None => api,
    };
    // Outermost: the security headers reach every answer, refusals included.
    let api = api
        .layer(axum::middleware::from_fn_with_state(
            settings.browser.clone(),
            crate::auth::origin::api,
        ))
        .layer(axum::middleware::from_fn(crate::auth::headers::secure));
    let api = crate::http_serve::serve(
        api_listener,
        api,
        limits,
        tls(|t| &t.api),
        stopped(stop_rx.clone()),
    );
    tasks.spawn(async move { api.await.context("HTTP API server failed") });
    let flusher = tokio::spawn(store.clone().run_flusher(stop_rx));

    let mut failure = None;
    tokio::select! {
        _ = shutdown => info!("Shutting down: draining requests, then flushing."),
        Some(result) = tasks.join_next() => {
            failure = Some(match result {
                Ok(Ok(())) => anyhow::anyhow!("a server stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a server task failed: {e}"),
            });
        }
    }
    let _ = stop_tx.send(true);
    while let Some(result) = tasks.join_next().await {
        if let Ok(Err(e)) = result {
            failure.get_or_insert(e);
        }
    }
    while alert_tasks.join_next().await.is_some() {}
    let _ = flusher.await;
    info!("Stopped.");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
