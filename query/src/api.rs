//! The query HTTP API: `POST /api/v1/sql`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::{QueryEngine, QueryResult};
use crate::error::QueryError;
use crate::json::{cell_text, value_json};

#[derive(Debug, Deserialize)]
struct SqlBody {
    query: String,
}

#[derive(Debug, Deserialize)]
struct SqlParams {
    format: Option<String>,
}

/// A JSON error answer, `{"error": "..."}`, as every `/api/v1` endpoint gives.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn query_error(e: &QueryError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_response(status, e.to_string())
}

/// The query API routes.
pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .route("/api/v1/sql", post(sql))
        .with_state(engine)
}

async fn sql(
    State(engine): State<QueryEngine>,
    Query(params): Query<SqlParams>,
    body: Bytes,
) -> Response {
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("format {other:?} is not supported; use json or csv"),
            );
        }
    };
    let body: SqlBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("request body must be JSON {{\"query\": \"SELECT ...\"}}: {e}"),
            );
        }
    };
    match engine.execute(&body.query).await {
        Ok(result) if csv => csv_response(&result),
        Ok(result) => axum::Json(result_json(&result)).into_response(),
        Err(e) => query_error(&e),
    }
}

/// `{"columns": [{"name", "type"}], "rows": [[...]]}`.
pub fn result_json(result: &QueryResult) -> Value {
    let columns: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let mut rows = Vec::new();
    for batch in &result.batches {
        for row in 0..batch.num_rows() {
            rows.push(Value::Array(
                batch.columns().iter().map(|c| value_json(c, row)).collect(),
            ));
        }
    }
    json!({ "columns": columns, "rows": rows })
}

/// A query result as a CSV download (header row first).
pub fn csv_response(result: &QueryResult) -> Response {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header: Vec<&str> = result
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for batch in &result.batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| cell_text(&value_json(c, row)))
                    .collect(),
            );
        }
    }
    for r in rows {
        if let Err(e) = w.write_record(&r) {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not write CSV: {e}"),
            );
        }
    }
    match w.into_inner() {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response(),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not write CSV: {e}"),
        ),
    }
}
