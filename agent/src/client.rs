//! A ready-made instrumented HTTP client for services: hyper's pooled client behind the
//! [`ClientLayer`], so each call gets a CLIENT span in the current trace and carries
//! `traceparent` to the callee.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};

use crate::layer::{BoxError, ClientLayer, ClientService};
use crate::telemetry::Telemetry;

/// An instrumented HTTP/1.1 client. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    service: ClientService<Client<HttpConnector, Full<Bytes>>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client reporting to `telemetry`, with a 30 s deadline per call.
    pub fn new(telemetry: Telemetry) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        HttpClient {
            service: ClientLayer::new(telemetry).layer(client),
            timeout: Duration::from_secs(30),
        }
    }

    /// Sets the deadline of each call (until the whole body is read).
    pub fn with_timeout(mut self, timeout: Duration) -> HttpClient {
        self.timeout = timeout;
        self
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), BoxError> {
        let service = self.service.clone();
        let call = async move {
            let resp = service.oneshot(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((status, body))
        };
        tokio::time::timeout(self.timeout, call).await?
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> Result<(StatusCode, Bytes), BoxError> {
        self.send(Request::get(url).body(Full::new(Bytes::new()))?)
            .await
    }

    /// `method` `url` with a body.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        body: impl Into<Bytes>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        self.send(
            Request::builder()
                .method(method)
                .uri(url)
                .body(Full::new(body.into()))?,
        )
        .await
    }
}
