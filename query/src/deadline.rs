//! A deadline for whole read requests: the API and UI routes that read the store (SQL,
//! traces, the service graph, PromQL, log search, every UI page) answer 504 once a
//! request has run longer than `--query-timeout`, and the work it was doing is dropped.
//!
//! Each query already runs under the timeout; this covers handlers that run several
//! queries, or CPU work between them, in one request.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::api::error_response;

/// Slack after the timeout, so that a single query's own, more precise timeout error
/// answers first.
const SLACK: Duration = Duration::from_secs(1);

/// Middleware: runs the request under `timeout` (plus a second of slack).
pub async fn deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout + SLACK, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the request exceeded the timeout of {timeout:?} and was cancelled; narrow the time range or raise --query-timeout"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_request_past_the_timeout_is_answered_504_and_dropped() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
        let app = Router::new()
            .route(
                "/slow",
                get(move || {
                    // Dropped with the handler when the deadline cancels it.
                    let guard = tx.lock().ok().and_then(|mut t| t.take());
                    async move {
                        let _guard = guard;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        "never"
                    }
                }),
            )
            .route("/fast", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_millis(10),
                deadline,
            ));
        let slow = app
            .clone()
            .oneshot(Request::get("/slow").body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(rx.await.is_err(), "the handler was dropped");
        let fast = app
            .oneshot(Request::get("/fast").body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        assert_eq!(fast.status(), StatusCode::OK);
    }
}
