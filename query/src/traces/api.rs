//! Periscope's own trace routes under `/api/v1`: trace view, trace search, service graph,
//! RED per service and operation, and the component inventory.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::aggregate::window_aggregate;
use super::components;
use super::error::TraceError;
use super::fetch::{Window, lit, rows, trace_spans};
use super::graph::{service_graph, service_graph_of};
use super::id::parse_v1_trace_id;
use super::red;
use super::search::{SearchFilter, search};
use super::span::{Attr, Span};
use super::tree::{Placement, Tree, assemble};
use crate::api::error_response;
use crate::engine::QueryEngine;
use crate::json::rfc3339_text as rfc3339;
use crate::logsearch::log_json;
use crate::time::{now_nanos, parse_duration, parse_range};

const HOUR: i64 = 3_600_000_000_000;
/// Spans per page of a trace when `span_limit` is not given.
pub const DEFAULT_SPAN_LIMIT: usize = 10_000;
/// Largest `span_limit`.
pub const MAX_SPAN_LIMIT: usize = 100_000;
/// Attribute values longer than this many bytes are cut in the trace view (the span
/// endpoint returns them whole) unless `max_attribute_bytes` says otherwise.
pub const DEFAULT_MAX_ATTRIBUTE_BYTES: usize = 64 * 1024;
/// Logs returned with a trace when `logs_limit` is not given.
pub const DEFAULT_LOGS_LIMIT: usize = 1_000;
/// Traces per search when `limit` is not given; and the largest `limit`.
pub const DEFAULT_SEARCH_LIMIT: usize = 20;
const MAX_SEARCH_LIMIT: usize = 1_000;

/// Query-string parameters; repeated keys keep every value.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(raw: Option<&str>) -> Params {
        Params(
            raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    /// The last non-empty value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub(crate) fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A path parameter, or why it could not be read.
pub(crate) type PathParam<T> = Result<Path<T>, axum::extract::rejection::PathRejection>;

/// A path that could not be read (not UTF-8, say) as a 400 with a JSON body.
pub(crate) fn rejected(r: axum::extract::rejection::PathRejection) -> TraceError {
    bad(format!("invalid path: {}", r.body_text()))
}

fn bad(message: impl Into<String>) -> TraceError {
    TraceError::BadRequest(message.into())
}

fn respond(result: Result<Value, TraceError>) -> Response {
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
        ),
    }
}

/// `start`/`end` (RFC 3339, Unix seconds or `now-15m`; the last hour by default).
pub(crate) fn window(p: &Params) -> Result<Window, TraceError> {
    let (start, end) = parse_range(p.get("start"), p.get("end"), now_nanos(), HOUR).map_err(bad)?;
    // `end` is inclusive for users.
    Ok(Window {
        start,
        end: end.saturating_add(1),
    })
}

fn number(p: &Params, name: &str, default: usize, max: usize) -> Result<usize, TraceError> {
    match p.get(name) {
        None => Ok(default),
        Some(t) => match t.parse::<usize>() {
            Ok(n) if n <= max => Ok(n),
            Ok(_) => Err(bad(format!("{name} must be at most {max}, not {t}"))),
            Err(_) => Err(bad(format!("{name} must be a whole number ≥ 0, not {t:?}"))),
        },
    }
}

fn duration(p: &Params, name: &str) -> Result<Option<i64>, TraceError> {
    p.get(name)
        .map(|t| parse_duration(t).map_err(|e| bad(format!("{name}: {e}"))))
        .transpose()
}

/// Attributes as a JSON object; values longer than `max` bytes are cut (at a character
/// boundary) and their keys added to `cut`.
fn attrs_capped(attrs: &[Attr], max: usize, cut: &mut Vec<String>) -> Value {
    let mut out = serde_json::Map::new();
    for a in attrs {
        let value = if a.text.len() > max {
            cut.push(a.key.clone());
            let mut end = max;
            while end > 0 && !a.text.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(a.text[..end].to_string())
        } else {
            a.json()
        };
        out.insert(a.key.clone(), value);
    }
    Value::Object(out)
}

/// One span as the trace view shows it.
pub fn span_json(span: &Span, trace_start: i64, place: Option<&Placement>, max: usize) -> Value {
    let mut cut = Vec::new();
    let attributes = attrs_capped(&span.attributes, max, &mut cut);
    let resource = attrs_capped(&span.resource_attributes, max, &mut cut);
    let events: Vec<Value> = span
        .events
        .iter()
        .map(|e| {
            json!({
                "time": rfc3339(e.time),
                "offset_ns": e.time - trace_start,
                "name": e.name,
                "attributes": attrs_capped(&e.attributes, max, &mut cut),
            })
        })
        .collect();
    let links: Vec<Value> = span
        .links
        .iter()
        .map(|l| {
            json!({
                "trace_id": l.trace_id,
                "span_id": l.span_id,
                "trace_state": l.trace_state,
                "attributes": attrs_capped(&l.attributes, max, &mut cut),
            })
        })
        .collect();
    let mut v = json!({
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "service_name": span.service_name,
        "name": span.name,
        "kind": span.kind,
        "start_time": rfc3339(span.start),
        "end_time": rfc3339(span.end),
        "start_offset_ns": span.start - trace_start,
        "duration_ns": span.duration,
        "status_code": span.status_code,
        "status_message": span.status_message,
        "trace_state": span.trace_state,
        "flags": span.flags,
        "scope_name": span.scope_name,
        "scope_version": span.scope_version,
        "attributes": attributes,
        "resource_attributes": resource,
        "events": events,
        "links": links,
    });
    if let Some(o) = v.as_object_mut() {
        if let Some(p) = place {
            o.insert("depth".into(), json!(p.depth));
            o.insert("child_count".into(), json!(p.children));
            o.insert("orphan".into(), json!(p.orphan));
            o.insert("clock_skew".into(), json!(p.skew_detected));
            o.insert("clock_skew_ns".into(), json!(p.skew));
        }
        if !cut.is_empty() {
            o.insert("truncated_attributes".into(), json!(cut));
        }
    }
    v
}

/// Logs that carry `trace_id`, oldest first, at most `limit`; and whether more exist.
async fn trace_logs(
    engine: &QueryEngine,
    trace_id: &str,
    limit: usize,
) -> Result<(Vec<Value>, bool), TraceError> {
    let sql = format!(
        "SELECT * FROM logs WHERE trace_id = {} ORDER BY timestamp, log_id LIMIT {}",
        lit(trace_id),
        limit + 1
    );
    let mut out = Vec::new();
    for b in rows(engine, &sql).await? {
        for row in 0..b.num_rows() {
            out.push(log_json(&b, row));
        }
    }
    let more = out.len() > limit;
    out.truncate(limit);
    Ok((out, more))
}

/// The trace view of `trace_id`.
pub async fn trace_view(
    engine: &QueryEngine,
    trace_id: &str,
    p: &Params,
) -> Result<Value, TraceError> {
    let offset = number(p, "span_offset", 0, usize::MAX)?;
    let limit = number(p, "span_limit", DEFAULT_SPAN_LIMIT, MAX_SPAN_LIMIT)?;
    if limit == 0 {
        return Err(bad("span_limit must be at least 1"));
    }
    let max = number(
        p,
        "max_attribute_bytes",
        DEFAULT_MAX_ATTRIBUTE_BYTES,
        usize::MAX,
    )?;
    let logs_limit = number(p, "logs_limit", DEFAULT_LOGS_LIMIT, 100_000)?;
    // Spans and logs are read at once: two independent scans.
    let (spans, logs) = tokio::join!(
        trace_spans(engine, trace_id),
        trace_logs(engine, trace_id, logs_limit)
    );
    let spans = spans?;
    if spans.is_empty() {
        return Err(TraceError::NotFound(format!("trace {trace_id} not found")));
    }
    let tree: Tree = assemble(spans);
    let (logs, more_logs) = logs?;
    let total = tree.spans.len();
    let page: Vec<Value> = tree
        .spans
        .iter()
        .zip(&tree.placement)
        .skip(offset)
        .take(limit)
        .map(|(s, pl)| span_json(s, tree.start, Some(pl), max))
        .collect();
    let next = (offset.saturating_add(limit) < total).then_some(offset + limit);
    let root = tree.root();
    Ok(json!({
        "trace_id": trace_id,
        "root_service": root.map(|r| r.service_name.clone()),
        "root_name": root.map(|r| r.name.clone()),
        "start_time": rfc3339(tree.start),
        "end_time": rfc3339(tree.end),
        "duration_ns": tree.end - tree.start,
        "span_count": total,
        "error_count": tree.error_count(),
        "services": tree.services(),
        "roots": tree.roots,
        "orphans": tree.orphans,
        "warnings": tree.warnings,
        "span_offset": offset,
        "span_limit": limit,
        "next_span_offset": next,
        "spans": page,
        "logs": logs,
        "logs_truncated": more_logs,
    }))
}

/// One span of a trace, every attribute whole.
async fn one_span(
    engine: &QueryEngine,
    trace_id: &str,
    span_id: &str,
) -> Result<Value, TraceError> {
    let span_id = span_id.trim().to_ascii_lowercase();
    if span_id.len() != 16 || !span_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "invalid span id {span_id:?}: expected 16 hexadecimal digits"
        )));
    }
    let spans = trace_spans(engine, trace_id).await?;
    let start = spans.iter().map(|s| s.start).min().unwrap_or(0);
    let span = spans.iter().find(|s| s.span_id == span_id).ok_or_else(|| {
        TraceError::NotFound(format!("span {span_id} of trace {trace_id} not found"))
    })?;
    Ok(span_json(span, start, None, usize::MAX))
}

/// The search filter of `/api/v1/traces`.
fn search_filter(p: &Params) -> Result<SearchFilter, TraceError> {
    let mut attributes = Vec::new();
    for a in p.all("attributes").filter(|a| !a.is_empty()) {
        let (k, v) = a.split_once('=').ok_or_else(|| {
            bad(format!(
                "attributes must be written key=value, as in attributes=http.route=/cart, not {a:?}"
            ))
        })?;
        attributes.push((k.to_string(), v.to_string()));
    }
    let errors_only = match p.get("status") {
        None | Some("any" | "all") => false,
        Some("error") => true,
        Some(other) => {
            return Err(bad(format!("status must be error (or any), not {other:?}")));
        }
    };
    let min_duration = duration(p, "min_duration")?;
    let max_duration = duration(p, "max_duration")?;
    if let (Some(lo), Some(hi)) = (min_duration, max_duration)
        && hi < lo
    {
        return Err(bad("max_duration is less than min_duration"));
    }
    Ok(SearchFilter {
        window: window(p)?,
        service: p.get("service").map(str::to_string),
        operation: p.get("operation").map(str::to_string),
        attributes,
        span_kind: p.get("span_kind").map(str::to_string),
        errors_only,
        span_errors: false,
        min_duration,
        max_duration,
        span_durations: false,
        limit: match number(p, "limit", DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT)? {
            0 => return Err(bad("limit must be at least 1")),
            n => n,
        },
    })
}

/// Trace search as `GET /api/v1/traces` answers it, from the same query parameters.
///
/// # Errors
/// Bad parameters, or tables that cannot be read.
pub async fn search_json(
    engine: &QueryEngine,
    params: Vec<(String, String)>,
) -> Result<Value, TraceError> {
    search_traces(engine, &Params(params)).await
}

async fn search_traces(engine: &QueryEngine, p: &Params) -> Result<Value, TraceError> {
    let filter = search_filter(p)?;
    let found = search(engine, &filter).await?;
    let traces: Vec<Value> = found
        .iter()
        .map(|s| {
            json!({
                "trace_id": s.trace_id,
                "root_service": s.root_service,
                "root_name": s.root_name,
                "has_root": s.has_root,
                "start_time": rfc3339(s.start),
                "duration_ns": s.duration,
                "span_count": s.span_count,
                "error_count": s.error_count,
                "services": s.services,
            })
        })
        .collect();
    Ok(json!({ "traces": traces, "limit": filter.limit }))
}

async fn graph(engine: &QueryEngine, p: &Params) -> Result<Value, TraceError> {
    let w = window(p)?;
    let g = service_graph(engine, w).await?;
    let mut v = g.json();
    if let Some(o) = v.as_object_mut() {
        o.insert("start".into(), json!(rfc3339(w.start)));
        o.insert("end".into(), json!(rfc3339(w.end - 1)));
    }
    Ok(v)
}

/// The service graph of `w` as `GET /api/v1/service-graph` answers it (without the
/// window's bounds).
///
/// # Errors
/// When the tables cannot be read.
pub async fn service_graph_json(engine: &QueryEngine, w: Window) -> Result<Value, TraceError> {
    Ok(service_graph(engine, w).await?.json())
}

/// RED per operation of `service` as `GET /api/v1/services/{name}/operations` answers
/// it, from the same query parameters.
///
/// # Errors
/// Bad parameters, or tables that cannot be read.
pub async fn operations_json(
    engine: &QueryEngine,
    service: &str,
    params: Vec<(String, String)>,
) -> Result<Value, TraceError> {
    operations(engine, service, &Params(params)).await
}

async fn services(engine: &QueryEngine, p: &Params) -> Result<Value, TraceError> {
    let w = window(p)?;
    let list = red::services(engine, w).await?;
    let services: Vec<Value> = list.iter().map(|r| r.json(w)).collect();
    Ok(json!({ "start": rfc3339(w.start), "end": rfc3339(w.end - 1), "services": services }))
}

async fn operations(engine: &QueryEngine, service: &str, p: &Params) -> Result<Value, TraceError> {
    let w = window(p)?;
    let kind = p.get("span_kind");
    if let Some(k) = kind
        && !matches!(
            k,
            "all" | "server" | "client" | "producer" | "consumer" | "internal" | "unspecified"
        )
    {
        return Err(bad(format!(
            "span_kind must be server, client, producer, consumer, internal, unspecified or all, not {k:?}"
        )));
    }
    let list = red::operations(engine, service, kind, w).await?;
    let ops: Vec<Value> = list.iter().map(|r| r.json(w)).collect();
    Ok(json!({
        "service_name": service,
        "start": rfc3339(w.start),
        "end": rfc3339(w.end - 1),
        "operations": ops,
    }))
}

async fn components_view(engine: &QueryEngine, p: &Params) -> Result<Value, TraceError> {
    components_json(engine, window(p)?).await
}

/// The MSA inventory of `w` as `GET /api/v1/components` answers it.
///
/// # Errors
/// When the tables cannot be read.
pub async fn components_json(engine: &QueryEngine, w: Window) -> Result<Value, TraceError> {
    let inventory = components::inventory(engine, w).await?;
    // RED and the graph read the same aggregates: read them once.
    let aggregate = window_aggregate(engine, w).await?;
    let red = red::services_of(&aggregate);
    let graph = service_graph_of(engine, &aggregate, w).await?;
    Ok(components::json(w, &inventory, &red, &graph))
}

/// The `/api/v1` trace routes.
pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .route(
            "/api/v1/traces",
            get(|State(e): State<QueryEngine>, RawQuery(q): RawQuery| async move {
                respond(search_traces(&e, &Params::parse(q.as_deref())).await)
            }),
        )
        .route(
            "/api/v1/traces/{trace_id}",
            get(
                |State(e): State<QueryEngine>, path: PathParam<String>, RawQuery(q): RawQuery| async move {
                    let p = Params::parse(q.as_deref());
                    respond(match path.map(|Path(id)| id).map_err(rejected).and_then(|id| parse_v1_trace_id(&id)) {
                        Ok(id) => trace_view(&e, &id, &p).await,
                        Err(err) => Err(err),
                    })
                },
            ),
        )
        .route(
            "/api/v1/traces/{trace_id}/spans/{span_id}",
            get(
                |State(e): State<QueryEngine>, path: PathParam<(String, String)>| async move {
                    let (id, span) = match path {
                        Ok(Path(p)) => p,
                        Err(r) => return respond(Err(rejected(r))),
                    };
                    respond(match parse_v1_trace_id(&id) {
                        Ok(id) => one_span(&e, &id, &span).await,
                        Err(err) => Err(err),
                    })
                },
            ),
        )
        .route(
            "/api/v1/service-graph",
            get(|State(e): State<QueryEngine>, RawQuery(q): RawQuery| async move {
                respond(graph(&e, &Params::parse(q.as_deref())).await)
            }),
        )
        .route(
            "/api/v1/services",
            get(|State(e): State<QueryEngine>, RawQuery(q): RawQuery| async move {
                respond(services(&e, &Params::parse(q.as_deref())).await)
            }),
        )
        .route(
            "/api/v1/services/{name}/operations",
            get(
                |State(e): State<QueryEngine>, path: PathParam<String>, RawQuery(q): RawQuery| async move {
                    match path {
                        Ok(Path(name)) => respond(operations(&e, &name, &Params::parse(q.as_deref())).await),
                        Err(r) => respond(Err(rejected(r))),
                    }
                },
            ),
        )
        .route(
            "/api/v1/components",
            get(|State(e): State<QueryEngine>, RawQuery(q): RawQuery| async move {
                respond(components_view(&e, &Params::parse(q.as_deref())).await)
            }),
        )
        .with_state(engine)
}
