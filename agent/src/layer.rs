//! Tower layers for HTTP services (hyper 1, axum, tonic): [`ServerLayer`] wraps the
//! inbound side (a SERVER span, the server duration histogram and an access log per
//! request), [`ClientLayer`] the outbound side (a CLIENT span and the client histogram per
//! call, `traceparent` injected).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use tower::{Layer, Service};

use crate::context::{self, Current, TRACEPARENT, TRACESTATE, TraceContext};
use crate::encode::{self, Writer};
pub use crate::error_type::{TypedError, error_type};
use crate::export::{Scope, now_ns};
use crate::metrics::HttpSeries;
use crate::semconv;
use crate::telemetry::Telemetry;

/// Boxed error of the client layer (tower's convention).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The matched route template (`http.route`), when the caller knows it: put it in the
/// request's or the response's extensions.
#[derive(Debug, Clone)]
pub struct HttpRoute(pub Arc<str>);

/// The peer address of an inbound connection (`client.address`), when the server knows
/// it: put it in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// How many times this outbound request was sent before (`http.request.resend_count`):
/// put it in the request's extensions on a retry.
#[derive(Debug, Clone, Copy)]
pub struct ResendCount(pub u32);

/// Instruments an inbound HTTP service.
#[derive(Debug, Clone)]
pub struct ServerLayer {
    telemetry: Telemetry,
    access_log: bool,
}

impl ServerLayer {
    /// A layer reporting to `telemetry`, with access logs on.
    pub fn new(telemetry: Telemetry) -> ServerLayer {
        ServerLayer {
            telemetry,
            access_log: true,
        }
    }

    /// Turns the per-request access log on or off.
    pub fn access_log(mut self, on: bool) -> ServerLayer {
        self.access_log = on;
        self
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService {
            inner,
            telemetry: self.telemetry.clone(),
            access_log: self.access_log,
        }
    }
}

/// The service [`ServerLayer`] makes.
#[derive(Debug, Clone)]
pub struct ServerService<S> {
    inner: S,
    telemetry: Telemetry,
    access_log: bool,
}

/// What the server span needs from the request, taken before it is handed on.
struct Inbound {
    method: http::Method,
    target: String,
    path_len: usize,
    version: http::Version,
    host: Option<String>,
    user_agent: Option<String>,
    peer: Option<SocketAddr>,
    route: Option<Arc<str>>,
    parent: Option<TraceContext>,
    context: TraceContext,
    start: Instant,
    start_ns: u64,
}

impl<S, B, RB> Service<http::Request<B>> for ServerService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !self.telemetry.is_enabled() {
            return Box::pin(self.inner.call(req));
        }
        let start = Instant::now();
        let headers = req.headers();
        let parent = headers.get(TRACEPARENT).and_then(|tp| {
            TraceContext::from_headers(tp.as_bytes(), headers.get(TRACESTATE).map(|v| v.as_bytes()))
        });
        let context = parent
            .as_ref()
            .map(TraceContext::child)
            .unwrap_or_else(TraceContext::new_root);
        let text = |name: http::header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let uri = req.uri();
        let target = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let inbound = Inbound {
            method: req.method().clone(),
            path_len: uri.path().len(),
            target,
            version: req.version(),
            host: uri
                .host()
                .map(str::to_owned)
                .or_else(|| text(http::header::HOST)),
            user_agent: text(http::header::USER_AGENT),
            peer: req.extensions().get::<PeerAddr>().map(|p| p.0),
            route: req.extensions().get::<HttpRoute>().map(|r| r.0.clone()),
            parent,
            context: context.clone(),
            start,
            start_ns: now_ns(),
        };
        req.extensions_mut().insert(context.clone());
        let current = Current {
            context,
            telemetry: self.telemetry.clone(),
        };
        let fut = context::sync_scope(current.clone(), || self.inner.call(req));
        let telemetry = self.telemetry.clone();
        let access_log = self.access_log;
        Box::pin(async move {
            let result = context::scope(current, fut).await;
            let (status, route, body_size) = match &result {
                Ok(resp) => (
                    resp.status().as_u16(),
                    resp.extensions().get::<HttpRoute>().map(|r| r.0.clone()),
                    resp.headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok()),
                ),
                Err(_) => (0, None, None),
            };
            finish_server(&telemetry, inbound, status, route, body_size, access_log);
            result
        })
    }
}

fn finish_server(
    telemetry: &Telemetry,
    inbound: Inbound,
    status: u16,
    response_route: Option<Arc<str>>,
    body_size: Option<i64>,
    access_log: bool,
) {
    let elapsed = inbound.start.elapsed();
    let end_ns = inbound.start_ns + elapsed.as_nanos() as u64;
    let method = semconv::method_name(&inbound.method);
    let route = inbound.route.or(response_route);
    let error_type = match status {
        0 => Some(std::borrow::Cow::Borrowed("_OTHER")),
        500.. => Some(std::borrow::Cow::Owned(status.to_string())),
        _ => None,
    };
    let protocol = semconv::protocol_version(inbound.version);
    telemetry.record_http(
        &HttpSeries {
            server: true,
            method,
            status,
            route: route.as_deref(),
            scheme: "http",
            server_address: None,
            server_port: 0,
            error_type: error_type.as_deref(),
            protocol,
        },
        elapsed.as_secs_f64(),
    );
    let path = &inbound.target[..inbound.path_len];
    let query = inbound
        .target
        .get(inbound.path_len + 1..)
        .filter(|q| !q.is_empty());
    let host = inbound.host.as_deref().map(split_host);
    let client_ip = inbound.peer.map(|p| p.ip().to_string());
    let write_attributes = |w: &mut Writer<'_>, field: u32| {
        w.kv_str(field, semconv::HTTP_REQUEST_METHOD, method);
        if method == "_OTHER" {
            w.kv_str(
                field,
                semconv::HTTP_REQUEST_METHOD_ORIGINAL,
                inbound.method.as_str(),
            );
        }
        w.kv_str(field, semconv::URL_PATH, path);
        if let Some(q) = query {
            w.kv_str(field, semconv::URL_QUERY, q);
        }
        w.kv_str(field, semconv::URL_SCHEME, "http");
        w.kv_str(field, semconv::NETWORK_PROTOCOL_VERSION, protocol);
        if status != 0 {
            w.kv_i64(field, semconv::HTTP_RESPONSE_STATUS_CODE, i64::from(status));
        }
        if let Some(r) = &route {
            w.kv_str(field, semconv::HTTP_ROUTE, r);
        }
        if let Some((name, port)) = host {
            w.kv_str(field, semconv::SERVER_ADDRESS, name);
            if let Some(p) = port {
                w.kv_i64(field, semconv::SERVER_PORT, i64::from(p));
            }
        }
        if let Some(ip) = &client_ip {
            w.kv_str(field, semconv::CLIENT_ADDRESS, ip);
        }
        if let Some(ua) = &inbound.user_agent {
            w.kv_str(field, semconv::USER_AGENT_ORIGINAL, ua);
        }
        if let Some(e) = &error_type {
            w.kv_str(field, semconv::ERROR_TYPE, e);
        }
    };
    let ctx = &inbound.context;
    if access_log {
        let (severity, severity_text) = match status {
            0 | 500.. => (SeverityNumber::Error, "ERROR"),
            400..=499 => (SeverityNumber::Warn, "WARN"),
            _ => (SeverityNumber::Info, "INFO"),
        };
        let body = format!(
            "{} {} HTTP/{} {} {:.3}ms",
            inbound.method,
            inbound.target,
            protocol,
            status,
            elapsed.as_secs_f64() * 1e3
        );
        let mut buf = Vec::with_capacity(512);
        let mut w = Writer(&mut buf);
        w.fixed64(encode::log::TIME, end_ns);
        w.fixed64(encode::log::OBSERVED_TIME, end_ns);
        w.uint(encode::log::SEVERITY_NUMBER, severity as u64);
        w.string(encode::log::SEVERITY_TEXT, severity_text);
        w.any_str(encode::log::BODY, &body);
        write_attributes(&mut w, encode::log::ATTRIBUTES);
        w.kv_str(encode::log::ATTRIBUTES, "event.name", "http.server.access");
        w.kv_f64(
            encode::log::ATTRIBUTES,
            "http.server.request.duration",
            elapsed.as_secs_f64(),
        );
        if let Some(size) = body_size {
            w.kv_i64(
                encode::log::ATTRIBUTES,
                semconv::HTTP_RESPONSE_BODY_SIZE,
                size,
            );
        }
        w.fixed32(encode::log::FLAGS, u32::from(ctx.flags));
        w.bytes(encode::log::TRACE_ID, &ctx.trace_id);
        w.bytes(encode::log::SPAN_ID, &ctx.span_id);
        telemetry.record_encoded_log(Scope::Http, buf);
    }
    let mut buf = Vec::with_capacity(512);
    let mut w = Writer(&mut buf);
    write_span_ids(&mut w, ctx, inbound.parent.as_ref());
    // Bit 8: the parent-is-remote flag is known; bit 9: the parent is remote.
    let remote = if inbound.parent.is_some() { 0x200 } else { 0 };
    w.fixed32(encode::span::FLAGS, 0x100 | remote | u32::from(ctx.flags));
    match &route {
        Some(r) if method != "_OTHER" => w.string_parts(encode::span::NAME, &[method, " ", r]),
        _ => w.string(encode::span::NAME, span_name(method)),
    }
    w.uint(encode::span::KIND, SpanKind::Server as u64);
    w.fixed64(encode::span::START, inbound.start_ns);
    w.fixed64(encode::span::END, end_ns);
    write_attributes(&mut w, encode::span::ATTRIBUTES);
    write_status(&mut w, status == 0 || status >= 500);
    telemetry.record_encoded_span(Scope::Http, buf);
}

/// `Span.trace_id`, `span_id`, `trace_state` (when set) and `parent_span_id` (when the
/// span has a parent), the first fields of both HTTP spans.
fn write_span_ids(w: &mut Writer<'_>, ctx: &TraceContext, parent: Option<&TraceContext>) {
    w.bytes(encode::span::TRACE_ID, &ctx.trace_id);
    w.bytes(encode::span::SPAN_ID, &ctx.span_id);
    if let Some(ts) = &ctx.trace_state {
        w.string(encode::span::TRACE_STATE, ts);
    }
    if let Some(p) = parent {
        w.bytes(encode::span::PARENT_SPAN_ID, &p.span_id);
    }
}

/// `Span.status` with code Error, or nothing (Unset).
fn write_status(w: &mut Writer<'_>, error: bool) {
    if error {
        // Status { code (field 3, varint) = ERROR }
        let status = [
            (encode::span::STATUS_CODE << 3) as u8,
            StatusCode::Error as u8,
        ];
        w.bytes(encode::span::STATUS, &status);
    }
}

/// The span name when there is no route: the method, or `HTTP` for unknown methods.
fn span_name(method: &'static str) -> &'static str {
    if method == "_OTHER" { "HTTP" } else { method }
}

/// Splits `host[:port]` (IPv6 literals in brackets).
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((h, tail)) = rest.split_once(']')
    {
        return (h, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

/// Instruments an outbound HTTP client.
#[derive(Debug, Clone)]
pub struct ClientLayer {
    telemetry: Telemetry,
}

impl ClientLayer {
    /// A layer reporting to `telemetry`.
    pub fn new(telemetry: Telemetry) -> ClientLayer {
        ClientLayer { telemetry }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

/// The service [`ClientLayer`] makes.
#[derive(Debug, Clone)]
pub struct ClientService<S> {
    inner: S,
    telemetry: Telemetry,
}

impl<S, B, RB> Service<http::Request<B>> for ClientService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    RB: 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !self.telemetry.is_enabled() {
            let fut = self.inner.call(req);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        }
        let start = Instant::now();
        let start_ns = now_ns();
        let parent = req
            .extensions()
            .get::<TraceContext>()
            .cloned()
            .or_else(|| context::current().map(|c| c.context));
        let context = parent
            .as_ref()
            .map(TraceContext::child)
            .unwrap_or_else(TraceContext::new_root);
        if let Ok(v) = http::HeaderValue::from_str(&context.traceparent()) {
            req.headers_mut().insert(TRACEPARENT, v);
        }
        if let Some(ts) = context
            .trace_state
            .as_deref()
            .and_then(|s| http::HeaderValue::from_str(s).ok())
        {
            req.headers_mut().insert(TRACESTATE, ts);
        }
        let uri = req.uri();
        let scheme = if uri.scheme_str() == Some("https") {
            "https"
        } else {
            "http"
        };
        let (address, port) = match uri.authority() {
            Some(a) => (
                a.host().to_owned(),
                a.port_u16()
                    .unwrap_or(if scheme == "https" { 443 } else { 80 }),
            ),
            None => {
                let host = req
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let (h, p) = split_host(host);
                (h.to_owned(), p.unwrap_or(80))
            }
        };
        let outbound = Outbound {
            method: req.method().clone(),
            url: req.uri().to_string(),
            address,
            port,
            scheme,
            version: req.version(),
            resend: req.extensions().get::<ResendCount>().map_or(0, |r| r.0),
            parent,
            context,
            start,
            start_ns,
        };
        let fut = self.inner.call(req);
        let telemetry = self.telemetry.clone();
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            let (status, error) = match &result {
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    (s, (s >= 400).then(|| s.to_string()))
                }
                Err(e) => (0, Some(error_type(e.as_ref()).to_owned())),
            };
            finish_client(&telemetry, outbound, status, error);
            result
        })
    }
}

struct Outbound {
    method: http::Method,
    url: String,
    address: String,
    port: u16,
    scheme: &'static str,
    version: http::Version,
    resend: u32,
    parent: Option<TraceContext>,
    context: TraceContext,
    start: Instant,
    start_ns: u64,
}

fn finish_client(telemetry: &Telemetry, out: Outbound, status: u16, error: Option<String>) {
    let elapsed = out.start.elapsed();
    let method = semconv::method_name(&out.method);
    let protocol = semconv::protocol_version(out.version);
    telemetry.record_http(
        &HttpSeries {
            server: false,
            method,
            status,
            route: None,
            scheme: out.scheme,
            server_address: Some(&out.address),
            server_port: out.port,
            error_type: error.as_deref(),
            protocol,
        },
        elapsed.as_secs_f64(),
    );
    let ctx = &out.context;
    let mut buf = Vec::with_capacity(384);
    let mut w = Writer(&mut buf);
    write_span_ids(&mut w, ctx, out.parent.as_ref());
    w.fixed32(encode::span::FLAGS, 0x100 | u32::from(ctx.flags));
    w.string(encode::span::NAME, span_name(method));
    w.uint(encode::span::KIND, SpanKind::Client as u64);
    w.fixed64(encode::span::START, out.start_ns);
    w.fixed64(encode::span::END, out.start_ns + elapsed.as_nanos() as u64);
    let a = encode::span::ATTRIBUTES;
    w.kv_str(a, semconv::HTTP_REQUEST_METHOD, method);
    if method == "_OTHER" {
        w.kv_str(
            a,
            semconv::HTTP_REQUEST_METHOD_ORIGINAL,
            out.method.as_str(),
        );
    }
    w.kv_str(a, semconv::SERVER_ADDRESS, &out.address);
    w.kv_i64(a, semconv::SERVER_PORT, i64::from(out.port));
    w.kv_str(a, semconv::URL_FULL, &out.url);
    w.kv_str(a, semconv::NETWORK_PROTOCOL_VERSION, protocol);
    if status != 0 {
        w.kv_i64(a, semconv::HTTP_RESPONSE_STATUS_CODE, i64::from(status));
    }
    if out.resend > 0 {
        w.kv_i64(a, semconv::HTTP_REQUEST_RESEND_COUNT, i64::from(out.resend));
    }
    if let Some(e) = &error {
        w.kv_str(a, semconv::ERROR_TYPE, e);
    }
    write_status(&mut w, error.is_some());
    telemetry.record_encoded_span(Scope::Http, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_into_name_and_port() {
        assert_eq!(
            split_host("shop.example:8080"),
            ("shop.example", Some(8080))
        );
        assert_eq!(split_host("shop.example"), ("shop.example", None));
        assert_eq!(split_host("[::1]:9000"), ("::1", Some(9000)));
        assert_eq!(split_host("::1"), ("::1", None));
    }
}
