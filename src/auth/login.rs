//! The UI's login: a form that takes a token once and keeps it in an HttpOnly,
//! SameSite=Strict cookie, and a logout that clears it.

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

/// `GET/POST /ui/login`, `GET /ui/logout`.
pub fn router(tokens: Arc<Tokens>) -> Router {
    Router::new()
        .route("/ui/login", get(form).post(submit))
        .route("/ui/logout", get(logout))
        .with_state(tokens)
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

/// Only local UI paths: no scheme, no `//host`, no backslashes.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
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

async fn submit(State(tokens): State<Arc<Tokens>>, Form(f): Form<Submitted>) -> Response {
    let next = safe_next(f.next.as_deref());
    let token = f.token.trim();
    if tokens.check(Some(token), Role::Read, Utc::now()).is_err()
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
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout() -> Response {
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("periscope_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
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
        assert_eq!(safe_next(None), "/ui/");
        assert!(!page("\"><script>", None).contains("<script>"));
    }
}
