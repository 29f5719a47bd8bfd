//! Accepted connections for tonic, each prepared in its own task under a deadline before
//! the gRPC server gets it: a TLS handshake, or on a plain port the client's first bytes
//! (the HTTP/2 preface). A client that connects and stays silent holds nothing but its own
//! socket until the deadline, and never the accept loop (the one the HTTP ports and the
//! gateway use too, [`periscope_listen`]).

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

/// Connections of `listener` that `prepare` turned into `S`, for tonic's
/// `serve_with_incoming_shutdown`, and the accept loop that feeds them, which the caller
/// runs. The loop ends once the stream is dropped.
pub fn incoming<S, F, Fut>(
    listener: TcpListener,
    prepare: F,
) -> (
    ReceiverStream<io::Result<S>>,
    impl Future<Output = ()> + Send + 'static,
)
where
    S: Send + 'static,
    F: Fn(TcpStream) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Option<S>> + Send + 'static,
{
    // Prepared connections wait here until tonic takes them; a full channel holds the
    // preparing tasks, never the accept loop.
    let (tx, rx) = mpsc::channel(64);
    let accept_loop = async move {
        periscope_listen::accept_until(&listener, tx.closed(), |stream, _peer| {
            let (prepare, tx) = (prepare.clone(), tx.clone());
            tokio::spawn(async move {
                if let Some(ready) = prepare(stream).await {
                    let _ = tx.send(Ok(ready)).await;
                }
            });
        })
        .await;
    };
    (ReceiverStream::new(rx), accept_loop)
}

/// `stream` once its client has sent its first bytes, or `None` if it has not by
/// `deadline` (the connection is then closed).
pub async fn first_bytes(stream: TcpStream, deadline: Duration) -> Option<TcpStream> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(deadline, stream.peek(&mut byte)).await {
        Ok(Ok(n)) if n > 0 => Some(stream),
        Ok(_) => None,
        Err(_) => {
            debug!(peer = ?stream.peer_addr().ok(), ?deadline, "client sent nothing in time");
            None
        }
    }
}
