//! The query HTTP API: `POST /api/v1/sql`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;

use crate::engine::{AnswerWriter, QueryEngine};
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
    if csv {
        csv_answer(&engine, &body.query, engine.config().max_rows).await
    } else {
        json_answer(&engine, &body.query).await
    }
}

/// The JSON answer of `sql`: `{"columns": [{"name", "type"}], "rows": [[...]]}`, with
/// `"warnings": [...]` when it was cut at a cap. Encoded row by row while the query runs,
/// under its limits.
pub async fn json_answer(engine: &QueryEngine, sql: &str) -> Response {
    let mut out = JsonAnswer::default();
    match engine.answer(sql, engine.config().max_rows, &mut out).await {
        Ok(answered) => (
            [(header::CONTENT_TYPE, "application/json")],
            out.finish(&answered.warnings),
        )
            .into_response(),
        Err(e) => query_error(&e),
    }
}

/// The CSV answer of `sql` (header row first), at most `max_rows` rows; when it was cut
/// at a cap, the `X-Periscope-Warnings` header says so.
pub async fn csv_answer(engine: &QueryEngine, sql: &str, max_rows: usize) -> Response {
    let mut out = CsvAnswer::default();
    match engine.answer(sql, max_rows, &mut out).await {
        Ok(answered) => {
            let mut response = (
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                out.bytes,
            )
                .into_response();
            if !answered.warnings.is_empty()
                && let Ok(v) = header::HeaderValue::from_str(&answered.warnings.join("; "))
            {
                response.headers_mut().insert("x-periscope-warnings", v);
            }
            response
        }
        Err(e) => query_error(&e),
    }
}

/// An answer as JSON bytes.
#[derive(Debug, Default)]
struct JsonAnswer {
    bytes: Vec<u8>,
    rows: usize,
}

impl JsonAnswer {
    fn finish(mut self, warnings: &[String]) -> Vec<u8> {
        self.bytes.extend_from_slice(b"]");
        if !warnings.is_empty() {
            self.bytes.extend_from_slice(b",\"warnings\":");
            self.bytes
                .extend_from_slice(Value::from(warnings.to_vec()).to_string().as_bytes());
        }
        self.bytes.extend_from_slice(b"}");
        self.bytes
    }
}

impl AnswerWriter for JsonAnswer {
    fn columns(&mut self, schema: &Schema) {
        let columns: Vec<Value> = schema
            .fields()
            .iter()
            .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
            .collect();
        self.bytes.extend_from_slice(b"{\"columns\":");
        self.bytes
            .extend_from_slice(Value::Array(columns).to_string().as_bytes());
        self.bytes.extend_from_slice(b",\"rows\":[");
    }

    fn row(&mut self, batch: &RecordBatch, row: usize) -> Result<usize, QueryError> {
        let before = self.bytes.len();
        if self.rows > 0 {
            self.bytes.push(b',');
        }
        let cells = Value::Array(batch.columns().iter().map(|c| value_json(c, row)).collect());
        serde_json::to_writer(&mut self.bytes, &cells)
            .map_err(|e| QueryError::Execution(format!("could not write JSON: {e}")))?;
        self.rows += 1;
        Ok(self.bytes.len() - before)
    }
}

/// An answer as CSV bytes.
#[derive(Debug, Default)]
struct CsvAnswer {
    bytes: Vec<u8>,
}

impl CsvAnswer {
    fn record<I: IntoIterator<Item = String>>(&mut self, cells: I) -> Result<usize, QueryError> {
        let before = self.bytes.len();
        let mut w = csv::Writer::from_writer(&mut self.bytes);
        w.write_record(cells)
            .and_then(|()| w.flush().map_err(csv::Error::from))
            .map_err(|e| QueryError::Execution(format!("could not write CSV: {e}")))?;
        drop(w);
        Ok(self.bytes.len() - before)
    }
}

impl AnswerWriter for CsvAnswer {
    fn columns(&mut self, schema: &Schema) {
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        // Column names always encode.
        let _ = self.record(names);
    }

    fn row(&mut self, batch: &RecordBatch, row: usize) -> Result<usize, QueryError> {
        self.record(
            batch
                .columns()
                .iter()
                .map(|c| cell_text(&value_json(c, row))),
        )
    }
}
