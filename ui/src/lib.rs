//! # periscope-ui
//!
//! Periscope's web UI: pages written as Leptos components and rendered to HTML on the
//! server by axum handlers, under `/ui/` on the API port (`/` redirects there).
//!
//! Every page works without JavaScript: its data is in the HTML, forms use GET so every
//! view has a shareable URL, charts are SVG drawn on the server, and the one stylesheet
//! is embedded in the binary (the UI works offline).
//!
//! ```text
//! GET /ui/...?params ─► pages::<page>::handler ─► data from periscope-query / -alerting
//!   ─► Leptos view ─► shell::page (nav, layout) ─► HTML
//! ```

mod chart;
mod format;
mod layout;
mod pages;
mod shell;
mod state;

pub use state::UiState;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

/// The stylesheet, embedded.
const STYLE: &str = include_str!("../assets/style.css");

/// The UI's routes: mount on the API port.
pub fn router(state: UiState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::overview::handler))
        .route("/ui/map", get(pages::map::handler))
        .route("/ui/traces", get(pages::traces::search))
        .route("/ui/traces/{trace_id}", get(pages::traces::trace))
        .route("/ui/logs", get(pages::logs::handler))
        .route("/ui/metrics", get(pages::metrics::handler))
        .route("/ui/sql", get(pages::sql::handler))
        .route("/ui/sql.csv", get(pages::sql::csv))
        .route("/ui/alerts", get(pages::alerts::handler))
        .route("/ui/storage", get(pages::storage::handler))
        .route(
            "/ui/assets/style.css",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=3600"),
                    ],
                    STYLE,
                )
                    .into_response()
            }),
        )
        .with_state(state)
}
