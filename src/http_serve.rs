//! Serving the HTTP ports (API/UI and OTLP/HTTP) with limits against slow and oversized
//! requests: a client must send its request headers within `header_read_timeout`
//! (slowloris), and headers larger than `max_header_bytes` get 431. On shutdown the
//! listener closes at once and requests in flight get up to 10 s to finish.
//!
//! With TLS, each connection's handshake runs in the connection's own task and must also
//! finish within `header_read_timeout`; a verified client certificate is passed to every
//! request of its connection as a [`crate::tls::ClientCertificate`] extension.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::tls::ClientCertificate;

/// Limits of one HTTP port.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Largest request header block (HTTP/1.1 buffer; HTTP/2 header list).
    pub max_header_bytes: usize,
}

/// Serves `router` on `listener` until `shutdown` completes; over TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper refuses buffers under 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    periscope_listen::accept_until(&listener, shutdown, |stream, _peer| {
        let router = router.clone();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        // Counts for the graceful shutdown from here on, handshake included.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let ended = match acceptor {
                None => {
                    let service = TowerToHyperService::new(router);
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    let Some(tls) =
                        crate::tls::handshake(&acceptor, stream, limits.header_read_timeout).await
                    else {
                        return;
                    };
                    let cert = crate::tls::client_certificate(&tls);
                    let service = TowerToHyperService::new(router.map_request(with_cert(cert)));
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(e) = ended {
                debug!(error = %e, "connection ended with an error");
            }
        });
    })
    .await;
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            warn!("requests still running 10 s after shutdown began; closing them");
        }
    }
    Ok(())
}

/// Adds the connection's verified client certificate, if any, to each request.
fn with_cert<B>(
    cert: Option<ClientCertificate>,
) -> impl Fn(http::Request<B>) -> http::Request<B> + Clone {
    move |mut request| {
        if let Some(cert) = cert {
            request.extensions_mut().insert(cert);
        }
        request
    }
}
