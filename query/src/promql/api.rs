//! The Prometheus HTTP API routes, with Prometheus's envelope
//! (`{"status":"success","data":…}` / `{"status":"error","errorType":…,"error":…}`).
//! Parameters come from the query string and, for POST, from a form body, as Grafana's
//! Prometheus data source sends them.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};

use super::error::PromError;
use crate::engine::QueryEngine;
use crate::time::now_nanos;

/// The window `series`, `labels` and `label values` read when no `start` is given.
const DEFAULT_WINDOW_MS: i64 = 60 * 60 * 1000;

/// The window `metadata` reads.
const METADATA_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// The Prometheus-compatible routes.
pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .with_state(engine)
}

/// Query-string and form parameters together.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: Option<String>, headers: &HeaderMap, body: &[u8]) -> Params {
        let mut pairs: Vec<(String, String)> = query
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(pairs)
    }

    /// A parameter that must be present.
    fn required(&self, name: &str) -> Result<&str, PromError> {
        self.get(name)
            .ok_or_else(|| PromError::bad_data(format!("invalid parameter {name:?}: missing")))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn time(&self, name: &str, default: i64) -> Result<i64, PromError> {
        match self.get(name) {
            None => Ok(default),
            Some(t) => super::parse_time_ms(t, now_ms())
                .map_err(|e| PromError::bad_data(format!("invalid parameter {name:?}: {e}"))),
        }
    }

    /// `start`/`end` of the metadata-style endpoints.
    fn window(&self) -> Result<(i64, i64), PromError> {
        let end = self.time("end", now_ms())?;
        let start = self.time("start", end - DEFAULT_WINDOW_MS)?;
        if start > end {
            return Err(PromError::bad_data(
                "invalid parameter \"end\": end timestamp must not be before start time",
            ));
        }
        Ok((start, end))
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let query = req.uri().query().map(str::to_string);
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Params::new(query, &headers, &body))
    }
}

fn now_ms() -> i64 {
    now_nanos().div_euclid(1_000_000)
}

fn success(data: Json) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({"status": "success", "data": data})),
    )
        .into_response()
}

fn failure(e: PromError) -> Response {
    (
        e.status(),
        axum::Json(json!({"status": "error", "errorType": e.error_type(), "error": e.message})),
    )
        .into_response()
}

fn answer(result: Result<Json, PromError>) -> Response {
    match result {
        Ok(data) => success(data),
        Err(e) => failure(e),
    }
}

async fn query(State(engine): State<QueryEngine>, p: Params) -> Response {
    answer(
        async {
            let query = p.required("query")?;
            let t = p.time("time", now_ms())?;
            super::instant_query(&engine, query, t).await
        }
        .await,
    )
}

async fn query_range(State(engine): State<QueryEngine>, p: Params) -> Response {
    answer(
        async {
            let query = p.required("query")?;
            p.required("start")?;
            p.required("end")?;
            let (start, end) = (p.time("start", 0)?, p.time("end", 0)?);
            let step = p.required("step")?;
            let step = super::parse_step(step)
                .map_err(|e| PromError::bad_data(format!("invalid parameter \"step\": {e}")))?;
            super::range_query(&engine, query, start, end, step).await
        }
        .await,
    )
}

async fn series(State(engine): State<QueryEngine>, p: Params) -> Response {
    answer(
        async {
            let matchers = p.all("match[]");
            if matchers.is_empty() {
                return Err(PromError::bad_data("no match[] parameter provided"));
            }
            let (start, end) = p.window()?;
            let found = super::series(&engine, &matchers, start, end).await?;
            Ok(Json::Array(found.iter().map(|s| s.labels.json()).collect()))
        }
        .await,
    )
}

async fn labels(State(engine): State<QueryEngine>, p: Params) -> Response {
    answer(
        async {
            let (start, end) = p.window()?;
            let found = super::series(&engine, &p.all("match[]"), start, end).await?;
            let names: BTreeSet<&str> = found
                .iter()
                .flat_map(|s| s.labels.pairs().iter().map(|(k, _)| k.as_str()))
                .collect();
            Ok(json!(names))
        }
        .await,
    )
}

async fn label_values(
    State(engine): State<QueryEngine>,
    Path(name): Path<String>,
    p: Params,
) -> Response {
    answer(
        async {
            if !periscope_storage::names::is_label_name(&name) {
                return Err(PromError::bad_data(format!("invalid label name: {name:?}")));
            }
            let (start, end) = p.window()?;
            let matchers = p.all("match[]");
            if name == super::value::NAME && matchers.is_empty() {
                return Ok(json!(super::metric_names(&engine, start, end).await?));
            }
            let found = super::series(&engine, &matchers, start, end).await?;
            let values: BTreeSet<&str> = found
                .iter()
                .map(|s| s.labels.get(&name))
                .filter(|v| !v.is_empty())
                .collect();
            Ok(json!(values))
        }
        .await,
    )
}

async fn metadata(State(engine): State<QueryEngine>, p: Params) -> Response {
    answer(
        async {
            let limit = match p.get("limit") {
                Some(l) => Some(l.parse::<usize>().map_err(|_| {
                    PromError::bad_data("invalid parameter \"limit\": not a number")
                })?),
                None => None,
            };
            let end = now_ms();
            let mut out: BTreeMap<String, Vec<Json>> = BTreeMap::new();
            for (name, kind, help, unit) in
                super::metadata(&engine, end - METADATA_WINDOW_MS, end).await?
            {
                if p.get("metric").is_some_and(|m| m != name) {
                    continue;
                }
                let entry = json!({"type": kind, "help": help, "unit": unit});
                let list = out.entry(name).or_default();
                if !list.contains(&entry) {
                    list.push(entry);
                }
            }
            if let Some(limit) = limit.filter(|l| *l > 0) {
                while out.len() > limit {
                    out.pop_last();
                }
            }
            Ok(json!(out))
        }
        .await,
    )
}

async fn buildinfo() -> Response {
    success(json!({
        "version": "2.42.0",
        "revision": "periscope",
        "branch": "periscope",
        "buildUser": "periscope",
        "buildDate": "",
        "goVersion": "none (Periscope is written in Rust; this is the Prometheus API version it follows)",
    }))
}
