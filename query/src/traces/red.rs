//! RED metrics (rate, errors, duration) per service and per operation, computed from
//! spans: a service's requests are its SERVER and CONSUMER spans, its entry points, as in
//! Jaeger's SPM and Tempo's span metrics. Percentiles are DataFusion's t-digest
//! (`approx_percentile_cont`), so memory stays bounded over any window.

use serde_json::{Value, json};

use super::error::TraceError;
use super::fetch::{Window, float_at, int_at, lit, rows, str_at};
use crate::engine::QueryEngine;

/// The SQL condition for entry spans.
pub const ENTRY_KINDS: &str = "kind IN ('server', 'consumer')";

/// RED of one service or operation over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Red {
    /// Service name.
    pub service: String,
    /// Operation name, for per-operation rows.
    pub operation: Option<String>,
    /// Span kind, for per-operation rows.
    pub span_kind: Option<String>,
    /// Requests in the window.
    pub requests: u64,
    /// Requests with status error.
    pub errors: u64,
    /// Duration quantiles, ns.
    pub p50: Option<f64>,
    /// 95th percentile, ns.
    pub p95: Option<f64>,
    /// 99th percentile, ns.
    pub p99: Option<f64>,
}

impl Red {
    /// JSON with rates over `window`.
    pub fn json(&self, window: Window) -> Value {
        let ms = |ns: Option<f64>| ns.map_or(Value::Null, |n| json!(n / 1e6));
        let mut v = json!({
            "service_name": self.service,
            "requests": self.requests,
            "errors": self.errors,
            "request_rate": self.requests as f64 / window.seconds(),
            "error_rate": if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 },
            "p50_ms": ms(self.p50),
            "p95_ms": ms(self.p95),
            "p99_ms": ms(self.p99),
        });
        if let (Some(o), Some(op)) = (v.as_object_mut(), &self.operation) {
            o.insert("operation".into(), json!(op));
            o.insert("span_kind".into(), json!(self.span_kind));
        }
        v
    }
}

fn percentile(q: f64, entry: &str) -> String {
    format!(
        "approx_percentile_cont({q}) WITHIN GROUP (ORDER BY CASE WHEN {entry} THEN duration_ns END)"
    )
}

/// RED per service over `window`; services with spans but no entry spans are listed
/// with zero requests.
pub async fn services(engine: &QueryEngine, window: Window) -> Result<Vec<Red>, TraceError> {
    let sql = format!(
        "SELECT service_name, \
           sum(CASE WHEN {ENTRY_KINDS} THEN 1 ELSE 0 END) AS requests, \
           sum(CASE WHEN {ENTRY_KINDS} AND status_code = 'error' THEN 1 ELSE 0 END) AS errors, \
           {} AS p50, {} AS p95, {} AS p99 \
         FROM spans WHERE {} GROUP BY service_name ORDER BY service_name",
        percentile(0.5, ENTRY_KINDS),
        percentile(0.95, ENTRY_KINDS),
        percentile(0.99, ENTRY_KINDS),
        window.sql("start_time")
    );
    collect(engine, &sql, false).await
}

/// RED per operation of `service` over `window`: its entry spans by default, or spans
/// of `span_kind` (`all` for every kind).
pub async fn operations(
    engine: &QueryEngine,
    service: &str,
    span_kind: Option<&str>,
    window: Window,
) -> Result<Vec<Red>, TraceError> {
    let kind = match span_kind {
        None | Some("") => ENTRY_KINDS.to_string(),
        Some("all") => "TRUE".to_string(),
        Some(k) => format!("kind = {}", lit(k)),
    };
    let sql = format!(
        "SELECT service_name, name, kind AS span_kind, count(*) AS requests, \
           sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors, \
           {} AS p50, {} AS p95, {} AS p99 \
         FROM spans WHERE service_name = {} AND {kind} AND {} \
         GROUP BY service_name, name, kind ORDER BY name, kind",
        percentile(0.5, "TRUE"),
        percentile(0.95, "TRUE"),
        percentile(0.99, "TRUE"),
        lit(service),
        window.sql("start_time")
    );
    collect(engine, &sql, true).await
}

async fn collect(engine: &QueryEngine, sql: &str, per_op: bool) -> Result<Vec<Red>, TraceError> {
    let mut out = Vec::new();
    for b in rows(engine, sql).await? {
        for row in 0..b.num_rows() {
            out.push(Red {
                service: str_at(&b, "service_name", row).unwrap_or_default(),
                operation: if per_op {
                    str_at(&b, "name", row)
                } else {
                    None
                },
                span_kind: if per_op {
                    str_at(&b, "span_kind", row)
                } else {
                    None
                },
                requests: int_at(&b, "requests", row).unwrap_or(0).max(0) as u64,
                errors: int_at(&b, "errors", row).unwrap_or(0).max(0) as u64,
                p50: float_at(&b, "p50", row),
                p95: float_at(&b, "p95", row),
                p99: float_at(&b, "p99", row),
            });
        }
    }
    Ok(out)
}

/// Names of every service with spans (any time), sorted.
pub async fn service_names(engine: &QueryEngine) -> Result<Vec<String>, TraceError> {
    let mut out = Vec::new();
    for b in rows(
        engine,
        "SELECT DISTINCT service_name FROM spans WHERE service_name IS NOT NULL ORDER BY 1",
    )
    .await?
    {
        for row in 0..b.num_rows() {
            if let Some(s) = str_at(&b, "service_name", row) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// `(operation, span kind)` pairs of `service` (any time), sorted; `kind` filters.
pub async fn operation_names(
    engine: &QueryEngine,
    service: &str,
    kind: Option<&str>,
) -> Result<Vec<(String, String)>, TraceError> {
    let kind = kind
        .filter(|k| !k.is_empty())
        .map(|k| format!(" AND kind = {}", lit(k)))
        .unwrap_or_default();
    let sql = format!(
        "SELECT DISTINCT name, kind FROM spans WHERE service_name = {}{kind} ORDER BY 1, 2",
        lit(service)
    );
    let mut out = Vec::new();
    for b in rows(engine, &sql).await? {
        for row in 0..b.num_rows() {
            out.push((
                str_at(&b, "name", row).unwrap_or_default(),
                str_at(&b, "kind", row).unwrap_or_default(),
            ));
        }
    }
    Ok(out)
}
