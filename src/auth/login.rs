//! The UI's login: a form that takes a token once and keeps it in an HttpOnly,
//! SameSite=Strict cookie (`Secure` when the port speaks TLS), and a logout that clears
//! it. After the login the browser goes back to the page it asked for, which must be a
//! path on this server.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::Utc;
use serde::Deserialize;

use super::middleware::COOKIE;
use super::{Role, Tokens};

/// What the login handlers need.
#[derive(Clone)]
struct Login {
    tokens: Arc<Tokens>,
    /// `; Secure` when the port speaks TLS, else empty.
    secure: &'static str,
}

/// `GET/POST /ui/login`, `GET /ui/logout`; `tls` marks the cookie `Secure`.
pub fn router(tokens: Arc<Tokens>, tls: bool) -> Router {
    Router::new()
        .route("/ui/login", get(form).post(submit))
        .route("/ui/logout", get(logout))
        .with_state(Login {
            tokens,
            secure: if tls { "; Secure" } else { "" },
        })
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

#[derive(Deserialize)]
struct Submitted {
    token: String,
    next: Option<String>,
}

/// Only paths on this server: an absolute path that parses as one (no scheme, no
/// `//host`), with no backslash, control character or whitespace anywhere. Browsers drop
/// tabs and newlines from URLs and read `\\` as `/`, so `/\t/evil.example/` or
/// `/\\evil.example` would otherwise lead to `//evil.example/`.
fn safe_next(next: Option<&str>) -> String {
    let local = |n: &str| {
        n.starts_with('/')
            && !n
                .chars()
                .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
            && n.parse::<http::Uri>().is_ok_and(|u| {
                u.scheme().is_none()
                    && u.authority().is_none()
                    && u.path().starts_with('/')
                    && !u.path().starts_with("//")
            })
    };
    match next {
        Some(n) if local(n) => n.to_owned(),
        _ => "/ui/".to_owned(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(next: &str, message: Option<&str>) -> String {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in · Periscope</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/style.css\"></head><body><main class=\"login\">\
         <h1>Periscope</h1><p>This server needs a token with the <code>read</code> or <code>admin</code> role \
         (<code>periscope token create --role read</code>).</p>{message}\
         <form method=\"post\" action=\"/ui/login\"><label>Token <input type=\"password\" name=\"token\" \
         autocomplete=\"current-password\" autofocus required></label>\
         <input type=\"hidden\" name=\"next\" value=\"{}\"><button type=\"submit\">Sign in</button></form>\
         </main></body></html>",
        escape(next)
    )
}

async fn form(Query(q): Query<Next>) -> Html<String> {
    Html(page(&safe_next(q.next.as_deref()), None))
}

async fn submit(State(login): State<Login>, Form(f): Form<Submitted>) -> Response {
    let next = safe_next(f.next.as_deref());
    let token = f.token.trim();
    if login
        .tokens
        .check(Some(token), Role::Read, Utc::now())
        .is_err()
        || !token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    {
        return (
            StatusCode::UNAUTHORIZED,
            Html(page(&next, Some("That token cannot open the UI."))),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}",
        login.secure
    );
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout(State(login): State<Login>) -> Response {
    let mut resp = Redirect::to("/ui/login").into_response();
    let cookie = format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        login.secure
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/ui/logs?q=a")), "/ui/logs?q=a");
        assert_eq!(safe_next(Some("//evil.example/")), "/ui/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/ui/");
        for bad in [
            "/\t/evil.example/",
            "/\n/evil.example/",
            "/\r/evil.example/",
            "/ /evil.example/",
            "/\u{7f}/evil.example/",
            "/ui/\\..\\\\evil.example",
            "/\u{85}/evil.example/",
            "http:/evil.example/",
            "evil.example",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad:?}");
        }
        assert_eq!(safe_next(Some("/ui/trace/ab12")), "/ui/trace/ab12");
        assert_eq!(safe_next(None), "/ui/");
        assert!(!page("\"><script>", None).contains("<script>"));
    }
}
