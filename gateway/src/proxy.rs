//! The proxying service: route match, body buffering, target choice, per-try timeouts,
//! retries of idempotent requests, and header rewriting.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceExt};

use crate::balance::Pool;
use crate::config::{GatewayConfig, RouteConfig};
use crate::forwarded::{self, TrustedProxy};
use periscope_agent::Telemetry;
use periscope_agent::TraceContext;
use periscope_agent::layer::{
    BoxError, ClientLayer, ClientService, HttpRoute, PeerAddr, ResendCount, TypedError,
};

/// Response body of the proxy: the upstream's body streamed, or a local answer.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The per-try deadline passed before response headers arrived.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// Connecting or talking to the upstream failed.
    #[error("upstream request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
}

impl UpstreamError {
    /// The `error.type` of this failure.
    pub fn error_type(&self) -> &'static str {
        match self {
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Request(e) if e.is_connect() => "connection_error",
            UpstreamError::Request(_) => "_OTHER",
        }
    }

    /// This failure as the agent's client layer reads it: named by [`Self::error_type`].
    fn typed(self) -> TypedError {
        TypedError::new(self.error_type(), self)
    }
}

/// The deadline of one attempt, carried in the request's extensions.
#[derive(Debug, Clone, Copy)]
struct AttemptTimeout(Duration);

/// The plain upstream client: one HTTP call with the attempt's deadline.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl UpstreamClient {
    fn new() -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        UpstreamClient {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(connector),
        }
    }
}

impl Service<Request<Full<Bytes>>> for UpstreamClient {
    type Response = Response<Incoming>;
    type Error = TypedError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, TypedError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), TypedError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let timeout = req
            .extensions()
            .get::<AttemptTimeout>()
            .map_or(Duration::from_secs(15), |t| t.0);
        let fut = self.client.request(req);
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(|e| UpstreamError::from(e).typed()),
                Err(_) => Err(UpstreamError::Timeout(timeout).typed()),
            }
        })
    }
}

/// A route with its pool.
struct Route {
    host: Option<String>,
    prefix: String,
    template: Arc<str>,
    pool: Arc<Pool>,
    timeout: Duration,
    per_try_timeout: Option<Duration>,
    retries: u32,
    strip_prefix: bool,
}

impl Route {
    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(h) = &self.host
            && !host.is_some_and(|x| x.eq_ignore_ascii_case(h))
        {
            return false;
        }
        let p = self.prefix.trim_end_matches('/');
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// Shared state of the proxy.
pub struct ProxyState {
    routes: Vec<Route>,
    /// The pools, for health checks.
    pub pools: Vec<Arc<Pool>>,
    client: ClientService<UpstreamClient>,
    max_body: usize,
    trusted_proxies: Vec<TrustedProxy>,
}

impl ProxyState {
    /// Builds routes and pools from a checked config.
    pub fn new(config: &GatewayConfig, telemetry: Telemetry) -> ProxyState {
        let pools: Vec<Arc<Pool>> = config
            .upstream
            .iter()
            .map(|u| Arc::new(Pool::new(u)))
            .collect();
        let mut routes: Vec<Route> = config
            .route
            .iter()
            .filter_map(|r: &RouteConfig| {
                let pool = pools
                    .iter()
                    .find(|p| p.name == *r.upstream.get_ref())?
                    .clone();
                Some(Route {
                    host: r.host.clone(),
                    prefix: r.path_prefix.clone(),
                    template: Arc::from(r.path_prefix.as_str()),
                    pool,
                    timeout: r.timeout,
                    per_try_timeout: r.per_try_timeout,
                    retries: r.retries,
                    strip_prefix: r.strip_prefix,
                })
            })
            .collect();
        // Host-specific routes first, then longest prefix.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        ProxyState {
            routes,
            pools,
            client: ClientLayer::new(telemetry).layer(UpstreamClient::new()),
            max_body: config.max_request_body_bytes,
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }
}

/// The proxy as a tower service (wrapped by the server layer per connection).
#[derive(Clone)]
pub struct ProxyService {
    /// Shared state.
    pub state: Arc<ProxyState>,
}

impl Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { Ok(handle(&state, req).await) })
    }
}

fn local(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Headers that describe one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for h in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(h);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

async fn handle(state: &ProxyState, req: Request<Incoming>) -> Response<ProxyBody> {
    if let Some(why) = crate::path::refusal(req.uri().path()) {
        return local(StatusCode::BAD_REQUEST, why);
    }
    let host = req.uri().host().map(str::to_owned).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(n, _)| n).to_owned())
    });
    let Some(route) = state
        .routes
        .iter()
        .find(|r| r.matches(host.as_deref(), req.uri().path()))
    else {
        return local(StatusCode::NOT_FOUND, "no route matches this request");
    };
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    let trace = req.extensions().get::<TraceContext>().cloned();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, state.max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return with_route(
                local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
                route,
            );
        }
        Err(_) => {
            return with_route(
                local(StatusCode::BAD_REQUEST, "could not read the request body"),
                route,
            );
        }
    };
    let attempts = if idempotent(&parts.method) {
        1 + route.retries
    } else {
        1
    };
    let deadline = Instant::now() + route.timeout;
    let mut tried = Vec::new();
    let mut failure = (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    for attempt in 0..attempts {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            failure = (StatusCode::GATEWAY_TIMEOUT, "upstream timed out");
            break;
        }
        let per_try = route
            .per_try_timeout
            .unwrap_or(route.timeout)
            .min(remaining);
        let Some(i) = route.pool.pick(&tried) else {
            failure = (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
            break;
        };
        tried.push(i);
        let upstream = build_request(
            &parts,
            body.clone(),
            &route.pool.targets[i].addr,
            route,
            peer,
            &state.trusted_proxies,
        );
        let mut upstream = match upstream {
            Ok(r) => r,
            Err(_) => return local(StatusCode::BAD_REQUEST, "request cannot be forwarded"),
        };
        upstream.extensions_mut().insert(AttemptTimeout(per_try));
        if attempt > 0 {
            upstream.extensions_mut().insert(ResendCount(attempt));
        }
        if let Some(t) = &trace {
            upstream.extensions_mut().insert(t.clone());
        }
        let in_flight = route.pool.start(i);
        let result = state.client.clone().oneshot(upstream).await;
        drop(in_flight);
        let last = attempt + 1 == attempts;
        match result {
            Ok(resp) => {
                let retryable = matches!(resp.status().as_u16(), 502..=504);
                if retryable && !last {
                    continue;
                }
                return with_route(into_proxy_response(resp), route);
            }
            Err(e) => {
                failure = if is_timeout(&e) {
                    (StatusCode::GATEWAY_TIMEOUT, "upstream timed out")
                } else {
                    (StatusCode::BAD_GATEWAY, "upstream unreachable")
                };
                tracing::debug!(upstream = %route.pool.name, target = %route.pool.targets[i].addr, error = %e, attempt, "upstream attempt failed");
            }
        }
    }
    with_route(local(failure.0, failure.1), route)
}

fn is_timeout(e: &BoxError) -> bool {
    e.downcast_ref::<TypedError>()
        .and_then(|t| t.get_ref().downcast_ref::<UpstreamError>())
        .is_some_and(|u| matches!(u, UpstreamError::Timeout(_)))
}

fn with_route(mut resp: Response<ProxyBody>, route: &Route) -> Response<ProxyBody> {
    resp.extensions_mut()
        .insert(HttpRoute(route.template.clone()));
    resp
}

fn into_proxy_response(resp: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

fn build_request(
    parts: &http::request::Parts,
    body: Bytes,
    target: &str,
    route: &Route,
    peer: Option<SocketAddr>,
    trusted: &[TrustedProxy],
) -> Result<Request<Full<Bytes>>, http::Error> {
    let path = parts.uri.path();
    let path = if route.strip_prefix {
        let rest = &path[route.prefix.trim_end_matches('/').len().min(path.len())..];
        if rest.is_empty() { "/" } else { rest }
    } else {
        path
    };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://{target}{path}{query}"));
    if let Some(headers) = builder.headers_mut() {
        headers.clone_from(&parts.headers);
        strip_hop_by_hop(headers);
        if !headers.contains_key(header::HOST)
            && let Some(h) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(header::HOST, h);
        }
        let host = headers.get(header::HOST).cloned();
        forwarded::rewrite(headers, peer, host.as_ref(), trusted);
    }
    builder.body(Full::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let pool = Arc::new(Pool::new(
            &toml::from_str("name = \"p\"\ntargets = [\"127.0.0.1:1\"]").expect("pool"),
        ));
        let route = |host: Option<&str>, prefix: &str| Route {
            host: host.map(str::to_owned),
            prefix: prefix.into(),
            template: Arc::from(prefix),
            pool: pool.clone(),
            timeout: Duration::from_secs(1),
            per_try_timeout: None,
            retries: 0,
            strip_prefix: false,
        };
        let api = route(None, "/api");
        assert!(api.matches(None, "/api"));
        assert!(api.matches(None, "/api/cart"));
        assert!(!api.matches(None, "/apix"));
        let root = route(None, "/");
        assert!(root.matches(None, "/anything"));
        let hosted = route(Some("shop.example"), "/");
        assert!(hosted.matches(Some("SHOP.example"), "/"));
        assert!(!hosted.matches(Some("other"), "/"));
        assert!(!hosted.matches(None, "/"));
    }

    #[test]
    fn the_agent_names_upstream_failures_as_the_gateway_does() {
        let e: BoxError = Box::new(UpstreamError::Timeout(Duration::from_secs(1)).typed());
        assert_eq!(periscope_agent::layer::error_type(e.as_ref()), "timeout");
        assert!(is_timeout(&e));
        assert_eq!(e.to_string(), "upstream did not answer within 1s");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
