//! RED metrics (rate, errors, duration) per service and per operation, from the window's
//! span aggregates: a service's requests are its SERVER and CONSUMER spans, its entry
//! points, as in Jaeger's SPM and Tempo's span metrics. Percentiles come from the
//! aggregates' tallies (buckets 1% wide), so memory stays bounded over any window.

use serde_json::{Value, json};

use std::collections::BTreeMap;

use periscope_spanagg::{Aggregate, Kind, Tally};

use super::aggregate::window_aggregate;
use super::error::TraceError;
use super::fetch::{Window, lit, rows, str_at};
use crate::engine::QueryEngine;

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

fn red_of(service: &str, operation: Option<(&str, &str)>, t: &Tally) -> Red {
    let q = |p: f64| t.quantile(p).map(|v| v as f64);
    Red {
        service: service.to_string(),
        operation: operation.map(|(o, _)| o.to_string()),
        span_kind: operation.map(|(_, k)| k.to_string()),
        requests: t.calls,
        errors: t.errors,
        p50: q(0.5),
        p95: q(0.95),
        p99: q(0.99),
    }
}

/// RED per service over `window`, from the window's span aggregates; services with spans
/// but no entry spans are listed with zero requests.
pub async fn services(engine: &QueryEngine, window: Window) -> Result<Vec<Red>, TraceError> {
    Ok(services_of(&window_aggregate(engine, window).await?))
}

/// RED per service from a window's aggregates (already read).
pub fn services_of(a: &Aggregate) -> Vec<Red> {
    let mut by_service: BTreeMap<&str, Tally> = BTreeMap::new();
    for ((service, _, kind), tally) in &a.tallies.operations {
        let t = by_service
            .entry(a.names.services.get(*service))
            .or_default();
        if Kind::parse(a.names.kinds.get(*kind)).is_entry() {
            t.merge(tally);
        }
    }
    by_service
        .iter()
        .map(|(service, t)| red_of(service, None, t))
        .collect()
}

/// RED per operation of `service` over `window`: its entry spans by default, or spans
/// of `span_kind` (`all` for every kind).
pub async fn operations(
    engine: &QueryEngine,
    service: &str,
    span_kind: Option<&str>,
    window: Window,
) -> Result<Vec<Red>, TraceError> {
    let a = window_aggregate(engine, window).await?;
    let wanted = |kind: &str| match span_kind {
        None | Some("") => Kind::parse(kind).is_entry(),
        Some("all") => true,
        Some(k) => kind == k,
    };
    let mut by_op: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
    for ((s, op, kind), tally) in &a.tallies.operations {
        let kind = a.names.kinds.get(*kind);
        if a.names.services.get(*s) == service && wanted(kind) {
            by_op
                .entry((a.names.operations.get(*op), kind))
                .or_default()
                .merge(tally);
        }
    }
    Ok(by_op
        .iter()
        .map(|(op, t)| red_of(service, Some(*op), t))
        .collect())
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
