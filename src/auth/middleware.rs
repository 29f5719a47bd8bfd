//! Enforcing tokens: an axum middleware for the API/UI port and the OTLP/HTTP port, and a
//! tonic interceptor for OTLP/gRPC. Refusals say nothing about why beyond 401 or 403.
//!
//! On the two OTLP ports a client certificate that the client CA verified during the TLS
//! handshake (mTLS) stands for an `ingest` token: such a request needs no token. A
//! certificate never grants `read` or `admin`, and the API/UI port never asks for one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;

use super::{Denied, Role, Tokens};
use crate::tls::ClientCertificate;

/// The cookie the UI keeps the token in.
pub const COOKIE: &str = "periscope_token";

/// The token of an `Authorization: Bearer …` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The token of a request: `Authorization: Bearer …`, else the UI cookie.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return bearer(v);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// What a request to the API/UI port needs; `None` for the always-open endpoints.
pub fn needed(method: &Method, path: &str) -> Option<Role> {
    match path {
        "/healthz" | "/readyz" => None,
        "/ui/login" | "/ui/logout" => None,
        p if p.starts_with("/ui/assets/") => None,
        "/api/v1/write" if method == Method::POST => Some(Role::Ingest),
        "/api/v1/rules/reload" if method == Method::POST => Some(Role::Admin),
        _ => Some(Role::Read),
    }
}

/// The answer to a refused request.
pub fn denied(d: Denied) -> Response {
    let (status, error) = match d {
        Denied::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            "missing, invalid or expired token: send Authorization: Bearer <token>",
        ),
        Denied::Forbidden => (StatusCode::FORBIDDEN, "this token's role may not do this"),
    };
    let mut resp = periscope_query::error_response(status, error);
    if d == Denied::Unauthenticated {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"periscope\""),
        );
    }
    resp
}

fn is_page(req: &Request<Body>) -> bool {
    let p = req.uri().path();
    req.method() == Method::GET && (p == "/" || p == "/ui" || p.starts_with("/ui/"))
}

/// Middleware for the API/UI port: each route needs the role [`needed`] names; a browser
/// asking for a UI page without a token is sent to the login page.
pub async fn api(State(tokens): State<Arc<Tokens>>, req: Request<Body>, next: Next) -> Response {
    let Some(role) = needed(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    match tokens.check(presented(req.headers()), role, Utc::now()) {
        Ok(_) => next.run(req).await,
        Err(Denied::Unauthenticated) if is_page(&req) => {
            let next_path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/ui/");
            let target: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("next", next_path)
                .finish();
            Redirect::to(&format!("/ui/login?{target}")).into_response()
        }
        Err(d) => denied(d),
    }
}

/// Middleware for the OTLP/HTTP port: everything needs `ingest`, which a verified client
/// certificate of the connection gives as well as a token.
pub async fn ingest(State(tokens): State<Arc<Tokens>>, req: Request<Body>, next: Next) -> Response {
    if req.extensions().get::<ClientCertificate>().is_some() {
        return next.run(req).await;
    }
    match tokens.check(presented(req.headers()), Role::Ingest, Utc::now()) {
        Ok(_) => next.run(req).await,
        Err(d) => denied(d),
    }
}

/// The OTLP/gRPC check: a client certificate verified in the TLS handshake, or
/// `authorization` metadata with an `ingest` (or `admin`) token.
pub fn grpc(tokens: &Tokens, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    // Peer certificates exist only when the port verifies them against the client CA.
    if req.peer_certs().is_some_and(|certs| !certs.is_empty()) {
        return Ok(req);
    }
    let token = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match tokens.check(token, Role::Ingest, Utc::now()) {
        Ok(_) => Ok(req),
        Err(Denied::Unauthenticated) => Err(tonic::Status::unauthenticated(
            "missing, invalid or expired token",
        )),
        Err(Denied::Forbidden) => Err(tonic::Status::permission_denied(
            "this token's role may not ingest",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(presented(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented(&h), None);
        let mut c = HeaderMap::new();
        c.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; periscope_token=xyz; b=2"),
        );
        assert_eq!(presented(&c), Some("xyz"));
    }

    #[test]
    fn routes_need_the_right_role() {
        assert_eq!(needed(&Method::GET, "/healthz"), None);
        assert_eq!(needed(&Method::GET, "/ui/assets/style.css"), None);
        assert_eq!(needed(&Method::POST, "/api/v1/write"), Some(Role::Ingest));
        assert_eq!(
            needed(&Method::POST, "/api/v1/rules/reload"),
            Some(Role::Admin)
        );
        assert_eq!(needed(&Method::POST, "/api/v1/sql"), Some(Role::Read));
        assert_eq!(needed(&Method::GET, "/ui/"), Some(Role::Read));
        assert_eq!(needed(&Method::GET, "/metrics"), Some(Role::Read));
    }
}
