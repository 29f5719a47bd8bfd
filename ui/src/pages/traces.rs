//! Traces: the search form with a duration-over-time scatter plot of the results, and
//! the trace view: a waterfall on a time axis with nested, collapsible spans (native
//! `<details>`, so it works without JavaScript), service colours, error marks, the
//! critical path, and the detail of one span (attributes, events, links, its logs).

use std::collections::HashMap;

use axum::extract::{Path, Query, RawQuery, State};
use axum::response::Html;
use leptos::prelude::*;
use periscope_query::traces::{Span, Tree, assemble, parse_trace_id, search_json, trace_spans};
use serde::Deserialize;
use serde_json::Value;

use crate::format::{q, time_ns};
use crate::shell::page;
use crate::state::UiState;

/// Subtrees below this depth start collapsed in traces with more spans than
/// [`COLLAPSE_OVER`], so a 10,000-span trace opens short.
const COLLAPSE_DEPTH: u32 = 2;
/// See [`COLLAPSE_DEPTH`].
const COLLAPSE_OVER: usize = 500;

/// A stable colour per service: a hue from the name's hash.
pub fn service_colour(service: &str) -> String {
    let h = service.bytes().fold(2_166_136_261_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    format!("hsl({}, 60%, 55%)", h % 360)
}

/// Nanoseconds as `12.3 ms`, `1.2 s`, `850 µs`.
pub fn duration_text(ns: i64) -> String {
    let ns = ns as f64;
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.0} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// `GET /ui/traces?service=&operation=&attributes=k=v&min_duration=&max_duration=&status=&start=&end=`
pub async fn search(State(s): State<UiState>, RawQuery(raw): RawQuery) -> Html<String> {
    let pairs: Vec<(String, String)> = raw
        .as_deref()
        .map(|r| {
            form_pairs(r)
                .into_iter()
                .filter(|(_, v)| !v.trim().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let attributes = pairs
        .iter()
        .filter(|(k, _)| k == "attributes")
        .map(|(_, v)| v.clone())
        .collect::<Vec<_>>()
        .join(" ");
    let mut params: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "attributes")
        .cloned()
        .collect();
    for a in attributes.split_whitespace() {
        params.push(("attributes".into(), a.to_string()));
    }
    let found = search_json(&s.engine, params).await;
    let services = match s
        .engine
        .execute("SELECT DISTINCT service_name FROM spans ORDER BY 1 LIMIT 500")
        .await
    {
        Ok(r) => r
            .batches
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |i| {
                    periscope_query::cell_text(&periscope_query::value_json(b.column(0), i))
                })
            })
            .collect::<Vec<_>>(),
        Err(_) => Vec::new(),
    };
    let chosen = get("service");
    let options = services
        .into_iter()
        .map(|name| {
            let selected = name == chosen;
            let value = name.clone();
            view! { <option value=value selected=selected>{name}</option> }
        })
        .collect_view();
    let status = get("status");
    let results = match found {
        Err(e) => view! { <div class="error" id="traces-error">{e.to_string()}</div> }.into_any(),
        Ok(v) => results_view(&v).into_any(),
    };
    let body = view! {
        <h1>"Traces"</h1>
        <form class="bar" method="get" action="/ui/traces" id="trace-search">
            <select name="service" id="service">
                <option value="">"any service"</option>
                {options}
            </select>
            <input type="text" name="operation" placeholder="operation" value=get("operation")/>
            <input type="text" name="attributes" placeholder="http.route=/cart" value=attributes/>
            <input type="text" name="min_duration" placeholder="min 100ms" size="8" value=get("min_duration")/>
            <input type="text" name="max_duration" placeholder="max 2s" size="8" value=get("max_duration")/>
            <select name="status">
                <option value="">"any status"</option>
                <option value="error" selected=status == "error">"errors only"</option>
            </select>
            <input type="text" name="start" placeholder="start: now-1h" size="12" value=get("start")/>
            <input type="text" name="end" placeholder="end: now" size="10" value=get("end")/>
            <button type="submit" id="find">"Find traces"</button>
        </form>
        {results}
    };
    page("Traces", "/ui/traces", body)
}

/// Splits a query string into decoded pairs (a key may repeat).
fn form_pairs(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn results_view(v: &Value) -> impl IntoView + use<> {
    let traces = v["traces"].as_array().cloned().unwrap_or_default();
    if traces.is_empty() {
        return view! { <p class="muted" id="no-traces">"No trace matches. Widen the time range or remove a filter."</p> }.into_any();
    }
    let times: Vec<(i64, i64)> = traces
        .iter()
        .filter_map(|t| {
            let start = chrono::DateTime::parse_from_rfc3339(t["start_time"].as_str()?).ok()?;
            Some((start.timestamp_nanos_opt()?, t["duration_ns"].as_i64()?))
        })
        .collect();
    let rows = traces
        .iter()
        .map(|t| {
            let id = t["trace_id"].as_str().unwrap_or("").to_string();
            let errors = t["error_count"].as_u64().unwrap_or(0);
            let error_class = if errors > 0 {
                "num state-firing"
            } else {
                "num"
            };
            let title = format!(
                "{}: {}",
                t["root_service"].as_str().unwrap_or("?"),
                t["root_name"].as_str().unwrap_or("(no root span)")
            );
            let services = t["services"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            view! {
                <tr class="trace-row">
                    <td><a href=format!("/ui/traces/{id}")>{title}</a></td>
                    <td class="num">{duration_text(t["duration_ns"].as_i64().unwrap_or(0))}</td>
                    <td class="num">{t["span_count"].as_u64().unwrap_or(0)}</td>
                    <td class=error_class>{errors}</td>
                    <td>{services}</td>
                    <td>{t["start_time"].as_str().unwrap_or("").to_string()}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        {scatter(&times)}
        <table id="trace-results">
            <thead><tr><th>"trace"</th><th>"duration"</th><th>"spans"</th><th>"errors"</th><th>"services"</th><th>"start"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}

/// Duration over time, one dot per trace.
fn scatter(points: &[(i64, i64)]) -> impl IntoView + use<> {
    let (w, h) = (1000.0_f64, 120.0_f64);
    let t0 = points.iter().map(|p| p.0).min().unwrap_or(0);
    let t1 = points.iter().map(|p| p.0).max().unwrap_or(0).max(t0 + 1);
    let dmax = points.iter().map(|p| p.1).max().unwrap_or(1).max(1) as f64;
    let dots = points
        .iter()
        .map(|(t, d)| {
            let x = 10.0 + (w - 20.0) * (t - t0) as f64 / (t1 - t0) as f64;
            let y = h - 8.0 - (h - 20.0) * (*d as f64 / dmax);
            view! { <circle cx=format!("{x:.1}") cy=format!("{y:.1}") r="4" fill="#4aa3ff"><title>{duration_text(*d)}</title></circle> }
        })
        .collect_view();
    view! {
        <svg class="chart" id="trace-scatter" viewBox=format!("0 0 {w} {h}") preserveAspectRatio="none" role="img" aria-label="duration over time">
            <text x="4" y="10">{format!("max {}", duration_text(dmax as i64))}</text>
            {dots}
        </svg>
    }
}

/// `?span=&zoom=`
#[derive(Debug, Default, Deserialize)]
pub struct TraceParams {
    span: Option<String>,
    /// The part of the trace shown, in percent of its duration: `25-50`.
    zoom: Option<String>,
}

/// Parses `a-b` (percent, `0 <= a < b <= 100`); anything else is the whole trace.
pub fn zoom_range(text: Option<&str>) -> (f64, f64) {
    text.and_then(|t| t.split_once('-'))
        .and_then(|(a, b)| Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?)))
        .filter(|(a, b)| *a >= 0.0 && b > a && *b <= 100.0)
        .unwrap_or((0.0, 100.0))
}

/// The spans on the critical path: from each root, the child that ends last, then its
/// last-ending child, and so on (the spans the trace's end waits for).
pub fn critical_path(tree: &Tree) -> std::collections::HashSet<String> {
    let mut children: HashMap<&str, Vec<&Span>> = HashMap::new();
    for s in &tree.spans {
        if let Some(p) = &s.parent_span_id {
            children.entry(p.as_str()).or_default().push(s);
        }
    }
    let mut out = std::collections::HashSet::new();
    let mut roots: Vec<&Span> = tree
        .spans
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .collect();
    roots.sort_by_key(|s| std::cmp::Reverse(s.end));
    let mut at = roots.first().copied();
    while let Some(span) = at {
        if !out.insert(span.span_id.clone()) {
            break;
        }
        at = children
            .get(span.span_id.as_str())
            .and_then(|c| c.iter().max_by_key(|s| s.end).copied());
    }
    out
}

/// `GET /ui/traces/{trace_id}`
pub async fn trace(
    State(s): State<UiState>,
    Path(id): Path<String>,
    Query(p): Query<TraceParams>,
) -> Html<String> {
    let title = format!("Trace {id}");
    let error_page = |message: String| {
        page(
            &title,
            "/ui/traces",
            view! { <div class="error">{message}</div> },
        )
    };
    let id = match parse_trace_id(&id) {
        Ok(id) => id,
        Err(e) => return error_page(e.to_string()),
    };
    let spans = match trace_spans(&s.engine, &id).await {
        Ok(spans) if spans.is_empty() => {
            return page(
                &title,
                "/ui/traces",
                view! { <div class="error" id="trace-error">{format!("Trace {id} is not stored (yet). Spans are queryable within a second of their export.")}</div> },
            );
        }
        Ok(spans) => spans,
        Err(e) => return error_page(e.to_string()),
    };
    let tree = assemble(spans);
    let critical = critical_path(&tree);
    let total = (tree.end - tree.start).max(1);
    let collapse = tree.spans.len() > COLLAPSE_OVER;
    let selected = p.span.clone().unwrap_or_default();
    let detail = match tree.spans.iter().find(|s| s.span_id == selected) {
        Some(span) => Some(span_detail(&s, span, tree.start).await),
        None => None,
    };
    let (za, zb) = zoom_range(p.zoom.as_deref());
    let zoom_param = if (za, zb) == (0.0, 100.0) {
        String::new()
    } else {
        format!("&zoom={za}-{zb}")
    };
    let window = (
        tree.start + (total as f64 * za / 100.0) as i64,
        tree.start + (total as f64 * zb / 100.0) as i64,
    );
    let waterfall = waterfall(
        &tree,
        &critical,
        window,
        collapse,
        &id,
        &selected,
        &zoom_param,
    );
    let zoom_links = (0..4)
        .map(|i| {
            let step = (zb - za) / 4.0;
            let (a, b) = (za + step * f64::from(i), za + step * f64::from(i + 1));
            let href = format!("/ui/traces/{id}?zoom={a}-{b}&span={selected}");
            view! { <a class="zoom" href=href>{format!("{}–{}", duration_text((total as f64 * a / 100.0) as i64), duration_text((total as f64 * b / 100.0) as i64))}</a>" " }
        })
        .collect_view();
    let reset = format!("/ui/traces/{id}?span={selected}");
    let root = tree.root();
    let services = tree.services();
    let legend = services
        .iter()
        .map(|s| view! { <span class="legend"><span class="swatch" style=format!("background:{}", service_colour(s))></span>{s.clone()}</span> })
        .collect_view();
    let warnings = tree
        .warnings
        .iter()
        .map(|w| view! { <li>{w.clone()}</li> })
        .collect_view();
    let body = view! {
        <h1 id="trace-title">{root.map_or_else(|| "(no root span)".to_string(), |r| format!("{}: {}", r.service_name, r.name))}</h1>
        <p class="muted" id="trace-summary">
            {format!("{} · {} spans · {} errors · started {} · trace {id}", duration_text(total), tree.spans.len(), tree.error_count(), time_ns(tree.start))}
        </p>
        <ul class="warnings">{warnings}</ul>
        <div class="legend-row">{legend}</div>
        {detail}
        <div class="waterfall">
            <div class="zoom-row" id="zoom">"Zoom: "{zoom_links}<a href=reset>"whole trace"</a></div>
            <div class="axis">
                <span>{duration_text(window.0 - tree.start)}</span>
                <span>{duration_text((window.0 + window.1) / 2 - tree.start)}</span>
                <span>{duration_text(window.1 - tree.start)}</span>
            </div>
            <div id="waterfall" inner_html=waterfall></div>
        </div>
    };
    page(&title, "/ui/traces", body)
}

/// The waterfall as nested `<details>`: a span with children is a `<details>` whose
/// summary is its row and whose body holds its children.
fn waterfall(
    tree: &Tree,
    critical: &std::collections::HashSet<String>,
    (from, to): (i64, i64),
    collapse: bool,
    trace_id: &str,
    selected: &str,
    zoom_param: &str,
) -> String {
    let shown = (to - from).max(1) as f64;
    // Built as a string: nesting depth follows the trace, which Leptos's typed views
    // cannot express without boxing every level; every text goes through `escape`.
    use crate::shell::escape;
    let mut html = String::new();
    let mut open: Vec<u32> = Vec::new();
    for (span, place) in tree.spans.iter().zip(&tree.placement) {
        while open.last().is_some_and(|d| *d >= place.depth) {
            open.pop();
            html.push_str("</div></details>");
        }
        // Position in the shown window, clipped to it.
        let left = ((span.start - from) as f64 / shown * 100.0).clamp(0.0, 100.0);
        let right = ((span.end - from) as f64 / shown * 100.0).clamp(0.0, 100.0);
        let width = (right - left).max(0.15);
        let mut class = String::from("span-row");
        if span.end < from || span.start > to {
            class.push_str(" outside");
        }
        if span.status_code == "error" {
            class.push_str(" error");
        }
        if critical.contains(&span.span_id) {
            class.push_str(" critical");
        }
        if span.span_id == selected {
            class.push_str(" selected");
        }
        let row = format!(
            "<div class=\"{class}\" data-depth=\"{depth}\" data-span-id=\"{id}\" style=\"--depth:{depth}\" title=\"{tip}\">\
             <a class=\"name\" href=\"/ui/traces/{trace}?span={id}{zoom}\"><span class=\"swatch\" style=\"background:{colour}\"></span>\
             <span class=\"service\">{service}</span> <span class=\"op\">{name}</span>{err}</a>\
             <span class=\"track\"><span class=\"bar\" style=\"left:{left:.3}%;width:{width:.3}%;background:{colour}\"></span>\
             <span class=\"dur\" style=\"left:{after:.3}%\">{dur}</span></span></div>",
            depth = place.depth,
            zoom = escape(zoom_param),
            id = escape(&span.span_id),
            trace = escape(trace_id),
            colour = service_colour(&span.service_name),
            service = escape(&span.service_name),
            name = escape(&span.name),
            err = if span.status_code == "error" {
                " <span class=\"errmark\" title=\"error\">!</span>"
            } else {
                ""
            },
            after = (left + width).min(92.0),
            dur = duration_text(span.duration),
            tip = escape(&format!(
                "{} {} · {} · starts at +{} · {}",
                span.service_name,
                span.name,
                duration_text(span.duration),
                duration_text(span.start - tree.start),
                span.status_code
            )),
        );
        if place.children > 0 {
            let is_open = !(collapse && place.depth >= COLLAPSE_DEPTH);
            html.push_str(&format!(
                "<details class=\"subtree\"{}><summary>{row}</summary><div class=\"children\">",
                if is_open { " open" } else { "" }
            ));
            open.push(place.depth);
        } else {
            html.push_str(&row);
        }
    }
    for _ in open {
        html.push_str("</div></details>");
    }
    html
}

async fn span_detail(s: &UiState, span: &Span, trace_start: i64) -> impl IntoView + use<> {
    let attrs = |list: &[periscope_query::traces::Attr]| {
        list.iter()
            .map(|a| view! { <tr><td>{a.key.clone()}</td><td>{a.text.clone()}</td></tr> })
            .collect_view()
    };
    let events = span
        .events
        .iter()
        .map(|e| {
            let detail = e
                .attributes
                .iter()
                .map(|a| format!("{}={}", a.key, a.text))
                .collect::<Vec<_>>()
                .join(", ");
            view! { <li>{format!("+{} {}", duration_text(e.time - trace_start), e.name)}" "<span class="muted">{detail}</span></li> }
        })
        .collect_view();
    let links = span
        .links
        .iter()
        .map(|l| view! { <li><a href=format!("/ui/traces/{}", l.trace_id)>{format!("{} / {}", l.trace_id, l.span_id)}</a></li> })
        .collect_view();
    let sql = format!(
        "SELECT timestamp, severity_text, body FROM logs WHERE trace_id = '{}' AND span_id = '{}' ORDER BY timestamp LIMIT 100",
        span.trace_id.replace('\'', ""),
        span.span_id.replace('\'', "")
    );
    let logs = match s.engine.execute(&sql).await {
        Ok(r) => r
            .batches
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |i| {
                    let cell = |c: usize| {
                        periscope_query::cell_text(&periscope_query::value_json(b.column(c), i))
                    };
                    (cell(0), cell(1), cell(2))
                })
            })
            .collect::<Vec<_>>(),
        Err(_) => Vec::new(),
    };
    let logs = logs
        .into_iter()
        .map(|(t, sev, body)| view! { <li><span class="muted">{t}" "{sev}</span>" "<span class="body">{body}</span></li> })
        .collect_view();
    view! {
        <div class="card" id="span-detail">
            <h3>
                <a id="span-service" href=format!("/ui/map?range=24h&service={}", q(&span.service_name))>{span.service_name.clone()}</a>
                {format!(": {}", span.name)}
            </h3>
            <p class="muted">{format!("{} · {} · status {} · starts at +{} · span {}", span.kind, duration_text(span.duration), span.status_code, duration_text(span.start - trace_start), span.span_id)}
                {span.status_message.clone().map(|m| format!(" · {m}"))}</p>
            <h4>"Attributes"</h4>
            <table class="attrs">{attrs(&span.attributes)}</table>
            <h4>"Resource"</h4>
            <table class="attrs">{attrs(&span.resource_attributes)}</table>
            <h4>"Events"</h4><ul>{events}</ul>
            <h4>"Links"</h4><ul>{links}</ul>
            <h4>"Logs of this span"</h4><ul id="span-logs">{logs}</ul>
            <p><a href=format!("/ui/logs?q={}&range=7d", q(&format!("trace_id:{}", span.trace_id)))>"All logs of this trace"</a></p>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            form_pairs("service=check+out&attributes=http.route%3D%2Fcart&attributes=a%3Db&x"),
            [
                ("service".to_string(), "check out".to_string()),
                ("attributes".to_string(), "http.route=/cart".to_string()),
                ("attributes".to_string(), "a=b".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
        assert_eq!(
            form_pairs("q=%zz%4"),
            [("q".to_string(), "%zz%4".to_string())]
        );
        assert_eq!(duration_text(1_500_000), "1.5 ms");
        assert_eq!(service_colour("a"), service_colour("a"));
        assert_eq!(zoom_range(Some("25-50")), (25.0, 50.0));
        assert_eq!(zoom_range(Some("50-25")), (0.0, 100.0));
        assert_eq!(zoom_range(Some("x")), (0.0, 100.0));
    }
}
