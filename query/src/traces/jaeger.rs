//! Jaeger's HTTP query API (`/api/...`), as Jaeger UI and Grafana's Jaeger data source
//! call it, answering in Jaeger's JSON model: the `{data, total, limit, offset, errors}`
//! envelope, traces with `processes` and `references`, times and durations in
//! microseconds. OTLP spans are translated as the OpenTelemetry Collector's Jaeger
//! translator does (`span.kind`, `otel.status_code`, `error`, `otel.scope.name`, events
//! as logs, links as `FOLLOWS_FROM`), and clock skew is adjusted as Jaeger's query service
//! does unless `raw=true`.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::api::{Params, PathParam, rejected};
use super::error::TraceError;
use super::fetch::{Window, spans_of_traces, trace_spans};
use super::graph::service_graph;
use super::id::parse_trace_id;
use super::red::{operation_names, service_names};
use super::search::{SearchFilter, matching_trace_ids};
use super::span::{Attr, Span};
use super::tree::assemble;
use crate::engine::QueryEngine;
use crate::time::{now_nanos, parse_duration};

/// Traces per search when `limit` is not given (Jaeger's default).
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_500;
const DEFAULT_LOOKBACK_NS: i64 = 48 * 3_600_000_000_000;
const DEFAULT_DEPENDENCY_LOOKBACK_MS: i64 = 24 * 3_600_000;
/// The largest integer a JSON number carries exactly; bigger int64 tags are strings.
const MAX_SAFE_INT: i64 = (1 << 53) - 1;

/// Jaeger's `structuredResponse`: `errors` is `null` when there are none.
fn body(data: Value, total: usize, errors: Vec<Value>) -> Value {
    json!({
        "data": data,
        "total": total,
        "limit": 0,
        "offset": 0,
        "errors": if errors.is_empty() { Value::Null } else { Value::Array(errors) },
    })
}

fn envelope(data: Value, total: usize) -> Response {
    axum::Json(body(data, total, Vec::new())).into_response()
}

fn error(e: &TraceError) -> Response {
    let code = e.http_status();
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(body(
            Value::Null,
            0,
            vec![json!({ "code": code, "msg": e.to_string() })],
        )),
    )
        .into_response()
}

fn bad(message: impl Into<String>) -> TraceError {
    TraceError::BadRequest(message.into())
}

fn kv(key: &str, kind: &str, value: Value) -> Value {
    json!({ "key": key, "type": kind, "value": value })
}

fn string_kv(key: &str, value: &str) -> Value {
    kv(key, "string", Value::String(value.to_string()))
}

/// An attribute as a Jaeger tag: int → int64, double → float64, bool, bytes → binary
/// (base64), arrays and maps → their JSON text as a string.
fn tag(a: &Attr) -> Value {
    match a.kind {
        "int" => match a.text.parse::<i64>() {
            Ok(n) if n.abs() <= MAX_SAFE_INT => kv(&a.key, "int64", json!(n)),
            _ => kv(&a.key, "int64", Value::String(a.text.clone())),
        },
        "double" => match a.text.parse::<f64>() {
            Ok(f) if f.is_finite() => kv(&a.key, "float64", json!(f)),
            _ => kv(&a.key, "float64", Value::String(a.text.clone())),
        },
        "bool" => kv(&a.key, "bool", json!(a.text == "true")),
        "bytes" => kv(&a.key, "binary", Value::String(a.text.clone())),
        _ => string_kv(&a.key, &a.text),
    }
}

fn micros(nanos: i64) -> i64 {
    nanos.div_euclid(1_000)
}

/// A Jaeger trace from the spans of one trace; `adjust` applies clock-skew shifts.
pub fn jaeger_trace(spans: Vec<Span>, adjust: bool) -> Value {
    let tree = assemble(spans);
    let mut processes: Vec<(String, Vec<Value>)> = Vec::new();
    let mut process_ids: HashMap<(String, Vec<(String, String)>), String> = HashMap::new();
    let mut out_spans = Vec::with_capacity(tree.spans.len());
    // Jaeger lists spans in storage order; start order reads best in raw JSON.
    let mut order: Vec<usize> = (0..tree.spans.len()).collect();
    let shift_of = |i: usize| if adjust { tree.placement[i].skew } else { 0 };
    order.sort_by_key(|&i| (tree.spans[i].start + shift_of(i), i));
    for i in order {
        let s = &tree.spans[i];
        let place = &tree.placement[i];
        let key = (
            s.service_name.clone(),
            s.resource_attributes
                .iter()
                .filter(|a| a.key != "service.name")
                .map(|a| (a.key.clone(), a.text.clone()))
                .collect::<Vec<_>>(),
        );
        let pid = match process_ids.get(&key) {
            Some(id) => id.clone(),
            None => {
                let id = format!("p{}", processes.len() + 1);
                let tags = s
                    .resource_attributes
                    .iter()
                    .filter(|a| a.key != "service.name")
                    .map(tag)
                    .collect();
                processes.push((s.service_name.clone(), tags));
                process_ids.insert(key, id.clone());
                id
            }
        };
        let mut tags = Vec::new();
        if let Some(n) = s.scope_name.as_deref().filter(|n| !n.is_empty()) {
            tags.push(string_kv("otel.scope.name", n));
        }
        if let Some(v) = s.scope_version.as_deref().filter(|v| !v.is_empty()) {
            tags.push(string_kv("otel.scope.version", v));
        }
        tags.extend(s.attributes.iter().map(tag));
        if matches!(
            s.kind.as_str(),
            "server" | "client" | "producer" | "consumer" | "internal"
        ) {
            tags.push(string_kv("span.kind", &s.kind));
        }
        match s.status_code.as_str() {
            "ok" => tags.push(string_kv("otel.status_code", "OK")),
            "error" => {
                tags.push(string_kv("otel.status_code", "ERROR"));
                tags.push(kv("error", "bool", json!(true)));
            }
            _ => {}
        }
        if let Some(m) = s.status_message.as_deref().filter(|m| !m.is_empty()) {
            tags.push(string_kv("otel.status_description", m));
        }
        if let Some(ts) = s.trace_state.as_deref().filter(|t| !t.is_empty()) {
            tags.push(string_kv("w3c.tracestate", ts));
        }
        let mut references = Vec::new();
        if let Some(p) = &s.parent_span_id {
            references.push(json!({"refType": "CHILD_OF", "traceID": s.trace_id, "spanID": p}));
        }
        for l in &s.links {
            let child_of = l
                .attributes
                .iter()
                .any(|a| a.key == "opentracing.ref_type" && a.text == "child_of");
            let ref_type = if child_of { "CHILD_OF" } else { "FOLLOWS_FROM" };
            if s.parent_span_id.as_deref() == Some(l.span_id.as_str()) && l.trace_id == s.trace_id {
                if let Some(first) = references.first_mut() {
                    first["refType"] = json!(ref_type);
                }
                continue;
            }
            references
                .push(json!({"refType": ref_type, "traceID": l.trace_id, "spanID": l.span_id}));
        }
        let shift = shift_of(i);
        let logs: Vec<Value> = s
            .events
            .iter()
            .map(|e| {
                let mut fields = Vec::new();
                if !e.name.is_empty() && !e.attributes.iter().any(|a| a.key == "event") {
                    fields.push(string_kv("event", &e.name));
                }
                fields.extend(e.attributes.iter().map(tag));
                json!({ "timestamp": micros(e.time + shift), "fields": fields })
            })
            .collect();
        let warnings: Value = if adjust && place.skew != 0 {
            json!([format!(
                "This span's timestamps were adjusted by {}",
                humanize(place.skew)
            )])
        } else {
            Value::Null
        };
        let mut span = json!({
            "traceID": s.trace_id,
            "spanID": s.span_id,
            "operationName": s.name,
            "references": references,
            "startTime": micros(s.start + shift),
            "duration": micros(s.duration.max(0)),
            "tags": tags,
            "logs": logs,
            "processID": pid,
            "warnings": warnings,
        });
        if s.flags.is_some_and(|f| f & 1 == 1) {
            span["flags"] = json!(1);
        }
        out_spans.push(span);
    }
    let processes: serde_json::Map<String, Value> = processes
        .into_iter()
        .enumerate()
        .map(|(i, (service, tags))| {
            (
                format!("p{}", i + 1),
                json!({ "serviceName": service, "tags": tags }),
            )
        })
        .collect();
    let trace_id = tree
        .spans
        .first()
        .map(|s| s.trace_id.clone())
        .unwrap_or_default();
    let warnings = if tree.warnings.is_empty() {
        Value::Null
    } else {
        json!(tree.warnings)
    };
    json!({
        "traceID": trace_id,
        "spans": out_spans,
        "processes": processes,
        "warnings": warnings,
    })
}

/// A duration as Go prints it (`1.5ms`, `-2s`), for adjustment warnings.
fn humanize(nanos: i64) -> String {
    let a = nanos.unsigned_abs() as f64;
    let sign = if nanos < 0 { "-" } else { "" };
    let (value, unit) = if a >= 1e9 {
        (a / 1e9, "s")
    } else if a >= 1e6 {
        (a / 1e6, "ms")
    } else if a >= 1e3 {
        (a / 1e3, "µs")
    } else {
        (a, "ns")
    };
    format!("{sign}{}{unit}", (value * 1000.0).round() / 1000.0)
}

fn micros_param(p: &Params, name: &str) -> Result<Option<i64>, TraceError> {
    p.get(name)
        .map(|t| {
            t.parse::<i64>()
                .map_err(|e| bad(format!("unable to parse param '{name}': {e}")))
        })
        .transpose()
}

fn go_duration(p: &Params, name: &str) -> Result<Option<i64>, TraceError> {
    p.get(name)
        .map(|t| parse_duration(t).map_err(|e| bad(format!("unable to parse param '{name}': {e}"))))
        .transpose()
}

/// The search filter of Jaeger's `/api/traces`.
fn jaeger_filter(p: &Params) -> Result<SearchFilter, TraceError> {
    let service = p
        .get("service")
        .ok_or_else(|| bad("parameter 'service' is required"))?;
    let now = now_nanos();
    let end = micros_param(p, "end")?.map_or(now, |us| us.saturating_mul(1_000));
    let start = micros_param(p, "start")?.map_or(end.saturating_sub(DEFAULT_LOOKBACK_NS), |us| {
        us.saturating_mul(1_000)
    });
    if start > end {
        return Err(bad("'start' must be before 'end'"));
    }
    let limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(t) => t
            .parse::<usize>()
            .map_err(|e| bad(format!("unable to parse param 'limit': {e}")))?
            .clamp(1, MAX_LIMIT),
    };
    let min_duration = go_duration(p, "minDuration")?;
    let max_duration = go_duration(p, "maxDuration")?;
    if let (Some(lo), Some(hi)) = (min_duration, max_duration)
        && hi < lo
    {
        return Err(bad("'maxDuration' should be greater than 'minDuration'"));
    }
    let mut tags: BTreeMap<String, String> = BTreeMap::new();
    for t in p.all("tag").filter(|t| !t.is_empty()) {
        let (k, v) = t.split_once(':').ok_or_else(|| {
            bad(format!(
                "malformed 'tag' parameter, expecting key:value, received: {t}"
            ))
        })?;
        tags.insert(k.to_string(), v.to_string());
    }
    for t in p.all("tags").filter(|t| !t.is_empty()) {
        let map: BTreeMap<String, Value> = serde_json::from_str(t).map_err(|e| {
            bad(format!(
                "malformed 'tags' parameter, cannot unmarshal JSON: {e}"
            ))
        })?;
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            tags.insert(k, v);
        }
    }
    // `error=true` and `span.kind` are translated tags, not stored attributes.
    let mut errors_only = false;
    let mut span_kind = None;
    let mut attributes = Vec::new();
    for (k, v) in tags {
        match k.as_str() {
            "error" if v == "true" => errors_only = true,
            "span.kind" => span_kind = Some(v),
            "otel.status_code" if v.eq_ignore_ascii_case("error") => errors_only = true,
            _ => attributes.push((k, v)),
        }
    }
    Ok(SearchFilter {
        window: Window {
            start,
            end: end.saturating_add(1),
        },
        service: Some(service.to_string()),
        operation: p.get("operation").map(str::to_string),
        attributes,
        span_kind,
        errors_only: false,
        // In Jaeger an `error=true` tag constrains the matching span itself.
        span_errors: errors_only,
        min_duration,
        max_duration,
        span_durations: true,
        limit,
    })
}

fn group(spans: Vec<Span>, ids: &[String]) -> Vec<Vec<Span>> {
    let mut by: HashMap<String, Vec<Span>> = HashMap::new();
    for s in spans {
        by.entry(s.trace_id.clone()).or_default().push(s);
    }
    ids.iter().filter_map(|id| by.remove(id)).collect()
}

/// Traces found, and the `errors` entries for requested trace ids not stored.
async fn find_traces(engine: &QueryEngine, p: &Params) -> Result<(Value, Vec<Value>), TraceError> {
    let adjust = p.get("raw") != Some("true");
    let ids: Vec<String> = p
        .all("traceID")
        .filter(|t| !t.is_empty())
        .map(|t| parse_trace_id(t).map_err(|e| bad(format!("cannot parse traceID param: {e}"))))
        .collect::<Result<_, _>>()?;
    if !ids.is_empty() {
        let spans = spans_of_traces(engine, &ids).await?;
        let found: std::collections::HashSet<&str> =
            spans.iter().map(|s| s.trace_id.as_str()).collect();
        let missing: Vec<Value> = ids
            .iter()
            .filter(|id| !found.contains(id.as_str()))
            .map(|id| json!({"msg": "trace not found", "traceID": id}))
            .collect();
        let traces: Vec<Value> = group(spans, &ids)
            .into_iter()
            .map(|t| jaeger_trace(t, adjust))
            .collect();
        return Ok((Value::Array(traces), missing));
    }
    let filter = jaeger_filter(p)?;
    let ids = matching_trace_ids(engine, &filter, filter.limit, 0).await?;
    let spans = spans_of_traces(engine, &ids).await?;
    Ok((
        Value::Array(
            group(spans, &ids)
                .into_iter()
                .map(|t| jaeger_trace(t, adjust))
                .collect(),
        ),
        Vec::new(),
    ))
}

async fn dependencies(engine: &QueryEngine, p: &Params) -> Result<Value, TraceError> {
    let ms = |name: &str| -> Result<Option<i64>, TraceError> {
        p.get(name)
            .map(|t| {
                t.parse::<i64>()
                    .map_err(|e| bad(format!("unable to parse param '{name}': {e}")))
            })
            .transpose()
    };
    let end_ms = ms("endTs")?.unwrap_or(now_nanos() / 1_000_000);
    let lookback = ms("lookback")?.unwrap_or(DEFAULT_DEPENDENCY_LOOKBACK_MS);
    if lookback < 0 {
        return Err(bad("'lookback' must not be negative"));
    }
    let end = end_ms.saturating_mul(1_000_000);
    let window = Window {
        start: end.saturating_sub(lookback.saturating_mul(1_000_000)),
        end: end.saturating_add(1),
    };
    let graph = service_graph(engine, window).await?;
    let names: HashMap<&str, &str> = graph
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.name.as_str()))
        .collect();
    let only = p.get("service");
    let links: Vec<Value> = graph
        .edges
        .iter()
        .map(|e| {
            (
                names.get(e.source.as_str()).copied().unwrap_or(&e.source),
                names.get(e.target.as_str()).copied().unwrap_or(&e.target),
                e.tally.calls,
            )
        })
        .filter(|(parent, child, _)| only.is_none_or(|s| s == *parent || s == *child))
        .map(|(parent, child, calls)| json!({"parent": parent, "child": child, "callCount": calls}))
        .collect();
    Ok(Value::Array(links))
}

/// The Jaeger-compatible routes.
pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .route(
            "/api/services",
            get(|State(e): State<QueryEngine>| async move {
                match service_names(&e).await {
                    Ok(names) => {
                        let n = names.len();
                        envelope(json!(names), n)
                    }
                    Err(err) => error(&err),
                }
            }),
        )
        .route(
            "/api/services/{service}/operations",
            get(|State(e): State<QueryEngine>, path: PathParam<String>| async move {
                let service = match path {
                    Ok(Path(s)) => s,
                    Err(r) => return error(&rejected(r)),
                };
                match operation_names(&e, &service, None).await {
                    Ok(ops) => {
                        let mut names: Vec<String> = ops.into_iter().map(|(n, _)| n).collect();
                        names.dedup();
                        let n = names.len();
                        envelope(if n == 0 { Value::Null } else { json!(names) }, n)
                    }
                    Err(err) => error(&err),
                }
            }),
        )
        .route(
            "/api/operations",
            get(|State(e): State<QueryEngine>, RawQuery(q): RawQuery| async move {
                let p = Params::parse(q.as_deref());
                let Some(service) = p.get("service") else {
                    return error(&bad("parameter 'service' is required"));
                };
                match operation_names(&e, service, p.get("spanKind")).await {
                    Ok(ops) => {
                        let list: Vec<Value> = ops
                            .into_iter()
                            .map(|(name, kind)| json!({"name": name, "spanKind": kind}))
                            .collect();
                        let n = list.len();
                        envelope(Value::Array(list), n)
                    }
                    Err(err) => error(&err),
                }
            }),
        )
        .route(
            "/api/traces",
            get(|State(e): State<QueryEngine>, RawQuery(q): RawQuery| async move {
                match find_traces(&e, &Params::parse(q.as_deref())).await {
                    Ok((data, missing)) => axum::Json(body(data, 0, missing)).into_response(),
                    Err(err) => error(&err),
                }
            }),
        )
        .route(
            "/api/traces/{trace_id}",
            get(
                |State(e): State<QueryEngine>, path: PathParam<String>, RawQuery(q): RawQuery| async move {
                    let p = Params::parse(q.as_deref());
                    let id = match path.map_err(rejected).and_then(|Path(id)| parse_trace_id(&id)) {
                        Ok(id) => id,
                        Err(err) => return error(&err),
                    };
                    match trace_spans(&e, &id).await {
                        Ok(spans) if spans.is_empty() => {
                            error(&TraceError::NotFound("trace not found".into()))
                        }
                        Ok(spans) => envelope(
                            json!([jaeger_trace(spans, p.get("raw") != Some("true"))]),
                            0,
                        ),
                        Err(err) => error(&err),
                    }
                },
            ),
        )
        .route(
            "/api/dependencies",
            get(|State(e): State<QueryEngine>, RawQuery(q): RawQuery| async move {
                match dependencies(&e, &Params::parse(q.as_deref())).await {
                    Ok(data) => envelope(data, 0),
                    Err(err) => error(&err),
                }
            }),
        )
        .with_state(engine)
}
