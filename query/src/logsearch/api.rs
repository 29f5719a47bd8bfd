//! `GET /api/v1/logs` (search) and `GET /api/v1/logs/tail` (Server-Sent Events).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::stream::{self, StreamExt};
use periscope_storage::Store;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::error::SearchError;
use super::exec::{Cursor, MAX_LIMIT, SearchRequest, search_until, tail_hits, tail_query};
use super::syntax;
use crate::api::error_response;
use crate::json::rfc3339_text as rfc3339;
use crate::time::{now_nanos, parse_range};

/// Hits per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Histogram buckets when `buckets` is not given.
pub const DEFAULT_BUCKETS: usize = 60;
const HOUR: i64 = 3_600_000_000_000;

#[derive(Debug, Deserialize)]
struct Params {
    query: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    buckets: Option<String>,
}

#[derive(Clone)]
struct AppState {
    store: Store,
    stop: watch::Receiver<bool>,
    timeout: Duration,
}

/// The log search routes; they read `store` directly. A search stops at `timeout`
/// (`--query-timeout`), answering 504. Live tail streams end when `stop` turns true, so
/// a graceful shutdown does not wait for tail clients.
pub fn router(store: Store, stop: watch::Receiver<bool>, timeout: Duration) -> Router {
    Router::new()
        .route("/api/v1/logs", get(logs))
        .route("/api/v1/logs/tail", get(tail))
        .with_state(AppState {
            store,
            stop,
            timeout,
        })
}

fn bad(message: impl Into<String>) -> SearchError {
    SearchError::BadRequest(message.into())
}

fn parse_expr(query: Option<&str>) -> Result<syntax::Expr, SearchError> {
    syntax::parse(query.unwrap_or("")).map_err(|e| bad(format!("invalid query: {e}")))
}

fn number(name: &str, text: Option<&str>, default: usize) -> Result<usize, SearchError> {
    match text {
        None | Some("") => Ok(default),
        Some(t) => t
            .parse()
            .map_err(|_| bad(format!("{name} must be a whole number ≥ 0, not {t:?}"))),
    }
}

fn request(p: &Params) -> Result<(SearchRequest, usize), SearchError> {
    let expr = parse_expr(p.query.as_deref())?;
    let (start, end) =
        parse_range(p.start.as_deref(), p.end.as_deref(), now_nanos(), HOUR).map_err(bad)?;
    let asked = number("limit", p.limit.as_deref(), DEFAULT_LIMIT)?;
    let buckets = number("buckets", p.buckets.as_deref(), DEFAULT_BUCKETS)?;
    let cursor = match p.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(Cursor::decode(c)?),
    };
    Ok((
        SearchRequest {
            expr,
            start,
            // `end` is inclusive for users (`end=now` includes lines stamped now).
            end: end.saturating_add(1),
            limit: asked.min(MAX_LIMIT),
            cursor,
            buckets: buckets.max(1),
        },
        asked,
    ))
}

fn failure(e: &SearchError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_response(status, e.to_string())
}

async fn logs(
    State(AppState { store, timeout, .. }): State<AppState>,
    Query(params): Query<Params>,
) -> Response {
    let started = Instant::now();
    let deadline = Some((started + timeout, timeout));
    let (req, asked) = match request(&params) {
        Ok(r) => r,
        Err(e) => return failure(&e),
    };
    let limit = req.limit;
    let result = tokio::task::spawn_blocking(move || search_until(&store, &req, deadline)).await;
    let result = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return failure(&e),
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("search failed: {e}"),
            );
        }
    };
    let mut body = json!({
        "hits": result.hits,
        "total": result.total,
        "next_cursor": result.next_cursor,
        "histogram": result.histogram.iter().map(|(start, count)| json!({"start": rfc3339(*start), "count": count})).collect::<Vec<Value>>(),
        "histogram_step_seconds": result.step as f64 / 1e9,
        "limit": limit,
        "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
    });
    if asked > limit {
        body["warnings"] = json!([format!(
            "limit {asked} is above the maximum; cut to {limit}"
        )]);
    }
    axum::Json(body).into_response()
}

async fn tail(
    State(AppState {
        store, mut stop, ..
    }): State<AppState>,
    Query(params): Query<Params>,
) -> Response {
    let expr = match parse_expr(params.query.as_deref()) {
        Ok(e) => e,
        Err(e) => return failure(&e),
    };
    let receiver = store.subscribe_logs(tail_query(&expr, &store), 256);
    let events = stream::unfold((receiver, expr), |(mut rx, expr)| async move {
        let batch = rx.recv().await?;
        let events: Vec<Result<Event, Infallible>> = tail_hits(&batch, &expr)
            .into_iter()
            .map(|hit| {
                let id = hit["log_id"].to_string();
                Ok(Event::default().event("log").id(id).data(hit.to_string()))
            })
            .collect();
        Some((stream::iter(events), (rx, expr)))
    })
    .flatten();
    let ready =
        stream::once(async { Ok::<Event, Infallible>(Event::default().event("ready").data("{}")) });
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    Sse::new(ready.chain(events).take_until(stopped))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
