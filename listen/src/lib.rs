//! Accepting TCP connections, the one accept loop of Periscope's listeners: the server's
//! HTTP ports (API/UI and OTLP/HTTP), its OTLP/gRPC port and the gateway (see
//! docs/architecture.md). Every accepted connection has Nagle's algorithm off, and an
//! accept error (out of file descriptors and the like) is logged and retried after a
//! short pause, so a port keeps serving. What is done with a connection (TLS, HTTP/1 or
//! HTTP/2, graceful shutdown) stays with the caller.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let stop = tokio::signal::ctrl_c();
//! periscope_listen::accept_until(&listener, async { let _ = stop.await; }, |stream, peer| {
//!     tokio::spawn(async move { drop((stream, peer)) });
//! })
//! .await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// Accepts connections of `listener` and hands each, with its peer's address, to
/// `on_connection` until `stop` completes. `on_connection` runs on the accept loop: it
/// should spawn the connection's work, not do it.
pub async fn accept_until<F>(
    listener: &TcpListener,
    stop: impl Future<Output = ()>,
    mut on_connection: F,
) where
    F: FnMut(TcpStream, SocketAddr),
{
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(listener) => accepted,
            _ = &mut stop => break,
        };
        on_connection(stream, peer);
    }
}

/// The next connection of `listener` and its peer's address, with Nagle's algorithm off.
/// Accept errors (out of file descriptors and the like) are logged and retried after a
/// short pause: the port keeps serving.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
