//! Browser guards of the two HTTP ports: which `Host` a request may name, which `Origin`
//! it may come from, and the opt-in CORS of OTLP/HTTP.
//!
//! A web page the operator visits can send requests to a server on loopback: `fetch` with
//! `mode: 'no-cors'` and a `text/plain` body needs no preflight, and DNS rebinding makes
//! an attacker's name resolve to 127.0.0.1 so that the page may even read the answers.
//! Browsers always name the page's origin in `Origin` on such requests and the rebound
//! name in `Host`; curl and the OpenTelemetry SDKs send no `Origin` at all. So:
//!
//! - **Host**: an IP literal, `localhost` (and `*.localhost`), a name of `--allowed-hosts`
//!   or the host of `--public-url`. Anything else is refused (403) when authentication is
//!   off or when allowed hosts or a public URL are configured (as Grafana's
//!   `enforce_domain`); with tokens and neither setting, any `Host` is served (a
//!   rebinding page has no token).
//! - **Origin**: when present it must name the request's own `Host` (host and port; the
//!   scheme is not compared, as a TLS-terminating proxy changes it and one host and port
//!   serve one site) or be the public URL's origin; `Origin: null` and every other origin
//!   get 403, as Grafana's CSRF check does. On the OTLP/HTTP port the origins of
//!   `--cors-allowed-origins` are served too, with CORS headers; no other response ever
//!   carries `Access-Control-*` headers.
//! - **Cookies**: a state-changing request (anything but GET, HEAD, OPTIONS) that is
//!   authenticated by the UI cookie alone must carry a same-origin `Origin` (browsers send
//!   one on every such request), so a form on another site cannot use the cookie.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Why a browser setting is refused at start.
#[derive(Debug)]
pub enum OriginError {
    /// `--public-url` or a CORS origin is not `http(s)://host[:port]`.
    NotAnOrigin {
        /// The setting.
        key: &'static str,
        /// What was given.
        value: String,
    },
    /// An allowed host is not a host name.
    NotAHost(String),
}

impl std::fmt::Display for OriginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginError::NotAnOrigin { key, value } => write!(
                f,
                "{key}: {value:?} is not a URL like https://periscope.example.com[:port] (http or https, a host, an optional port)"
            ),
            OriginError::NotAHost(h) => write!(
                f,
                "allowed-hosts: {h:?} is not a host name like periscope.example.com"
            ),
        }
    }
}

impl std::error::Error for OriginError {}

/// The browser guards of a server.
#[derive(Debug, Clone, Default)]
pub struct BrowserPolicy {
    /// Host names (lowercase, no port) served besides IP literals and loopback names.
    hosts: Vec<String>,
    /// Whether a `Host` outside of those is refused.
    enforce_host: bool,
    /// The public URL's origin (`scheme://host[:port]`, default port omitted).
    public_origin: Option<String>,
    /// Origins whose browser pages may send OTLP/HTTP; `*` for any.
    cors: Vec<String>,
}

impl BrowserPolicy {
    /// The policy of the settings: `allowed_hosts` (host names), `public_url` (its origin is
    /// trusted and its host allowed), `cors_origins` (OTLP/HTTP only) and whether tokens
    /// are required.
    ///
    /// # Errors
    ///
    /// When a host, the public URL or a CORS origin does not parse.
    pub fn new(
        allowed_hosts: &[String],
        public_url: Option<&str>,
        cors_origins: &[String],
        auth: bool,
    ) -> Result<BrowserPolicy, OriginError> {
        let mut hosts = Vec::new();
        for h in allowed_hosts
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
        {
            let name = h.trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(OriginError::NotAHost(h.to_owned()));
            }
            hosts.push(name);
        }
        let public_origin = match public_url {
            Some(url) => {
                // The origin of the URL: a path (a proxy's prefix) is not part of it.
                let url = url.trim();
                let end = url
                    .find("://")
                    .and_then(|at| url[at + 3..].find('/').map(|slash| at + 3 + slash))
                    .unwrap_or(url.len());
                let origin = parse_origin(&url[..end]).ok_or_else(|| OriginError::NotAnOrigin {
                    key: "public-url",
                    value: url.to_owned(),
                })?;
                hosts.push(host_name(&origin.1).to_owned());
                Some(origin.to_string())
            }
            None => None,
        };
        let mut cors = Vec::new();
        for o in cors_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
        {
            if o == "*" {
                cors.push("*".to_owned());
                continue;
            }
            let origin = parse_origin(o).ok_or_else(|| OriginError::NotAnOrigin {
                key: "cors-allowed-origins",
                value: o.to_owned(),
            })?;
            cors.push(origin.to_string());
        }
        Ok(BrowserPolicy {
            enforce_host: !auth || !hosts.is_empty(),
            hosts,
            public_origin,
            cors,
        })
    }

    /// Whether a request naming `host` (a `Host` value, port included) is served.
    pub(crate) fn host_allowed(&self, host: Option<&str>) -> bool {
        // HTTP/1.0 without Host: no browser sends that.
        let Some(host) = host else { return true };
        let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
        if name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.hosts.contains(&name)
        {
            return true;
        }
        !self.enforce_host
    }

    /// Whether `origin` (an `Origin` value) names the request's own host and port, or is
    /// the public URL's.
    fn same_origin(&self, origin: &Origin, host: Option<&str>) -> bool {
        if self.public_origin.as_deref() == Some(origin.to_string().as_str()) {
            return true;
        }
        let Some(host) = host else { return false };
        let host = host.to_ascii_lowercase();
        let own = host
            .strip_suffix(":80")
            .or_else(|| host.strip_suffix(":443"))
            .unwrap_or(&host);
        origin.1 == own
    }

    /// The CORS entry that lets `origin` in, if any: `*` or the origin itself.
    fn cors_allows(&self, origin: &Origin) -> Option<HeaderValue> {
        let text = origin.to_string();
        if self.cors.iter().any(|c| c == "*") {
            return Some(HeaderValue::from_static("*"));
        }
        if self.cors.contains(&text) {
            return HeaderValue::from_str(&text).ok();
        }
        None
    }
}

/// An origin: scheme and `host[:port]`, lowercase, default port left out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin(String, String);

impl Origin {
    fn normalized(self) -> Origin {
        let Origin(scheme, authority) = self;
        let default = match scheme.as_str() {
            "http" => ":80",
            "https" => ":443",
            _ => "",
        };
        let authority = match authority.strip_suffix(default) {
            Some(a) if !default.is_empty() => a.to_owned(),
            _ => authority,
        };
        Origin(scheme, authority)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.0, self.1)
    }
}

/// `scheme://host[:port]` with nothing after it; `None` for `null` and anything else.
fn parse_origin(text: &str) -> Option<Origin> {
    let (scheme, authority) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || authority.is_empty() {
        return None;
    }
    let ok = authority
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'));
    ok.then(|| Origin(scheme, authority.to_ascii_lowercase()).normalized())
}

/// The host of `host[:port]` (IPv6 literals keep no brackets).
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

/// The `Host` of a request: the header, else the URI's authority (HTTP/2).
fn request_host(req: &Request<Body>) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
}

fn refused(message: &str) -> Response {
    periscope_query::error_response(StatusCode::FORBIDDEN, message)
}

/// What a request's `Origin` header says.
enum Sent {
    /// No `Origin` header: curl, an SDK, or a browser's same-origin GET.
    Nothing,
    /// The request's own origin or the public URL's.
    Same,
    /// Another origin, parsed.
    Other(Origin),
    /// `null` or something that is not an origin.
    Opaque,
}

fn sent_origin(policy: &BrowserPolicy, headers: &HeaderMap, host: Option<&str>) -> Sent {
    let Some(value) = headers.get(header::ORIGIN) else {
        return Sent::Nothing;
    };
    match value.to_str().ok().and_then(parse_origin) {
        Some(o) if policy.same_origin(&o, host) => Sent::Same,
        Some(o) => Sent::Other(o),
        None => Sent::Opaque,
    }
}

const HOST_REFUSED: &str = "this server does not answer to that Host name; add it to --allowed-hosts (or set --public-url)";
const ORIGIN_REFUSED: &str = "cross-origin request refused: the Origin header names another site";

/// Middleware for the API/UI port: the `Host` and `Origin` checks and the cookie rule.
pub async fn api(
    State(policy): State<Arc<BrowserPolicy>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let host = request_host(&req);
    if !policy.host_allowed(host.as_deref()) {
        tracing::debug!(
            host = host.as_deref().unwrap_or(""),
            "Refused a request for an unknown Host."
        );
        return refused(HOST_REFUSED);
    }
    let sent = sent_origin(&policy, req.headers(), host.as_deref());
    match sent {
        Sent::Other(_) | Sent::Opaque => return refused(ORIGIN_REFUSED),
        Sent::Same => {}
        Sent::Nothing => {
            let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            if !safe && cookie_only(req.headers()) {
                return refused(
                    "a request that changes something and carries only the UI cookie needs a same-origin Origin header (or send Authorization: Bearer)",
                );
            }
        }
    }
    next.run(req).await
}

/// Whether the request's credentials are the UI cookie alone (no `Authorization`).
fn cookie_only(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::AUTHORIZATION) && super::middleware::presented(headers).is_some()
}

/// Middleware for the OTLP/HTTP port: the `Host` and `Origin` checks, with the origins of
/// `--cors-allowed-origins` served with CORS headers (preflights answered here).
pub async fn otlp(
    State(policy): State<Arc<BrowserPolicy>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let host = request_host(&req);
    if !policy.host_allowed(host.as_deref()) {
        return refused(HOST_REFUSED);
    }
    let allow = match sent_origin(&policy, req.headers(), host.as_deref()) {
        Sent::Nothing | Sent::Same => None,
        Sent::Opaque => return refused(ORIGIN_REFUSED),
        Sent::Other(o) => match policy.cors_allows(&o) {
            Some(allow) => Some(allow),
            None => return refused(ORIGIN_REFUSED),
        },
    };
    let Some(allow) = allow else {
        return next.run(req).await;
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, content-encoding, authorization"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        resp
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], public: Option<&str>, auth: bool) -> BrowserPolicy {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        BrowserPolicy::new(&hosts, public, &["http://app.example:8080".into()], auth)
            .expect("policy")
    }

    #[test]
    fn loopback_names_and_ip_literals_are_always_served() {
        let p = policy(&[], None, false);
        for host in [
            "127.0.0.1:7070",
            "localhost:7070",
            "LOCALHOST",
            "app.localhost:1",
            "[::1]:7070",
            "10.1.2.3:7070",
        ] {
            assert!(p.host_allowed(Some(host)), "{host}");
        }
        assert!(!p.host_allowed(Some("evil.example:7070")));
        assert!(!p.host_allowed(Some("localhost.evil.example")));
    }

    #[test]
    fn configured_hosts_are_served_and_tokens_alone_do_not_enforce() {
        let p = policy(&["Periscope.Internal"], None, true);
        assert!(p.host_allowed(Some("periscope.internal:7070")));
        assert!(!p.host_allowed(Some("evil.example")));
        let p = policy(&[], Some("https://obs.example.com/"), true);
        assert!(p.host_allowed(Some("obs.example.com")));
        assert!(!p.host_allowed(Some("evil.example")));
        assert!(policy(&[], None, true).host_allowed(Some("anything.example")));
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let p = policy(&[], Some("https://obs.example.com"), false);
        let o = |s: &str| parse_origin(s).expect(s);
        assert!(p.same_origin(&o("http://127.0.0.1:7070"), Some("127.0.0.1:7070")));
        assert!(p.same_origin(&o("http://localhost"), Some("localhost:80")));
        assert!(!p.same_origin(&o("http://127.0.0.1:7071"), Some("127.0.0.1:7070")));
        assert!(p.same_origin(&o("https://127.0.0.1:7070"), Some("127.0.0.1:7070")));
        assert!(p.same_origin(&o("https://obs.example.com"), Some("obs.example.com")));
        assert!(!p.same_origin(&o("http://evil.example:7070"), Some("127.0.0.1:7070")));
        assert!(p.same_origin(&o("https://obs.example.com:443"), Some("10.0.0.1:7070")));
        assert!(parse_origin("null").is_none());
        assert!(parse_origin("http://a.example/path").is_none());
        assert!(p.cors_allows(&o("http://app.example:8080")).is_some());
        assert!(p.cors_allows(&o("http://app.example")).is_none());
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        let e = BrowserPolicy::new(&[], Some("obs.example.com"), &[], false).unwrap_err();
        assert!(e.to_string().contains("public-url"), "{e}");
        let e = BrowserPolicy::new(&["a/b".into()], None, &[], false).unwrap_err();
        assert!(e.to_string().contains("allowed-hosts"), "{e}");
        let e = BrowserPolicy::new(&[], None, &["app.example".into()], false).unwrap_err();
        assert!(e.to_string().contains("cors-allowed-origins"), "{e}");
    }
}
