//! The service map: the dependency graph as a layered SVG (callers left of callees, no
//! overlapping nodes), nodes coloured by error rate, edges labelled with calls/s and
//! p99; a node's link opens its RED, operations, recent error traces and logs.

use axum::extract::{Query, State};
use axum::response::Html;
use leptos::prelude::*;
use periscope_query::traces::{Window, operations_json, search_json, service_graph_json};
use serde::Deserialize;
use serde_json::Value;

use crate::format::{preset_window, q};
use crate::layout::layered;
use crate::shell::{no_data, page, preset_links};
use crate::state::UiState;

const NODE_W: f64 = 190.0;
const NODE_H: f64 = 46.0;
const COL_W: f64 = 360.0;
const ROW_H: f64 = 70.0;
const PAD: f64 = 20.0;

/// `?range=&service=`
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    range: Option<String>,
    service: Option<String>,
}

/// Fill of a node by error rate.
fn fill(error_rate: f64, requests: f64) -> &'static str {
    if requests == 0.0 {
        "#2a333d"
    } else if error_rate > 0.05 {
        "#6e2323"
    } else if error_rate > 0.0 {
        "#5c4a12"
    } else {
        "#1f4d2b"
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// `GET /ui/map`
pub async fn handler(State(s): State<UiState>, Query(p): Query<Params>) -> Html<String> {
    let (start, end, preset) = preset_window(p.range.as_deref());
    let graph = service_graph_json(&s.engine, Window { start, end }).await;
    let presets = preset_links(preset, &|name| format!("/ui/map?range={name}"));
    let content = match graph {
        Err(e) => view! { <div class="error">{e.to_string()}</div> }.into_any(),
        Ok(g) => {
            let nodes = g["nodes"].as_array().cloned().unwrap_or_default();
            if nodes.is_empty() {
                no_data("traces in this time range").into_any()
            } else {
                let selected = match &p.service {
                    Some(name) => Some(service_panel(&s, name, preset, &nodes).await),
                    None => None,
                };
                view! { {svg(&g, preset, p.service.as_deref())} {selected} }.into_any()
            }
        }
    };
    let body = view! {
        <h1>"Service map"</h1>
        <div class="presets">{presets}</div>
        {content}
    };
    page("Service map", "/ui/map", body)
}

fn svg(g: &Value, preset: &str, selected: Option<&str>) -> impl IntoView + use<> {
    let nodes = g["nodes"].as_array().cloned().unwrap_or_default();
    let edges = g["edges"].as_array().cloned().unwrap_or_default();
    let ids: Vec<String> = nodes
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect();
    let pairs: Vec<(String, String)> = edges
        .iter()
        .filter_map(|e| {
            Some((
                e["source"].as_str()?.to_string(),
                e["target"].as_str()?.to_string(),
            ))
        })
        .collect();
    let places = layered(&ids, &pairs);
    let at = |id: &str| {
        places
            .get(id)
            .map(|p| (PAD + p.layer as f64 * COL_W, PAD + p.slot as f64 * ROW_H))
    };
    let width =
        PAD * 2.0 + places.values().map(|p| p.layer).max().unwrap_or(0) as f64 * COL_W + NODE_W;
    let height =
        PAD * 2.0 + places.values().map(|p| p.slot).max().unwrap_or(0) as f64 * ROW_H + NODE_H;
    let edge_views = edges
        .iter()
        .filter_map(|e| {
            let (sx, sy) = at(e["source"].as_str()?)?;
            let (tx, ty) = at(e["target"].as_str()?)?;
            let (x1, y1, x2, y2) = (sx + NODE_W, sy + NODE_H / 2.0, tx, ty + NODE_H / 2.0);
            let (x2, y2) = if x2 <= x1 {
                // A call back to an earlier layer: go around the right of the source.
                (tx + NODE_W / 2.0, ty + NODE_H)
            } else {
                (x2, y2)
            };
            let mid = (x1 + x2) / 2.0;
            let d = format!("M{x1:.1},{y1:.1} C{mid:.1},{y1:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}");
            let p99 = e["p99_ms"]
                .as_f64()
                .map_or_else(String::new, |ms| format!(" · p99 {ms:.0} ms"));
            let label = format!("{:.2}/s{p99}", num(&e["call_rate"]));
            let class = if num(&e["error_rate"]) > 0.0 {
                "edge failing"
            } else {
                "edge"
            };
            let id = format!("{}->{}", e["source"].as_str()?, e["target"].as_str()?);
            Some(view! {
                <g class=class data-edge=id>
                    <path d=d marker-end="url(#arrow)"/>
                    <text x=format!("{:.1}", x1 + 8.0) y=format!("{:.1}", y1 - 5.0)>{label}</text>
                </g>
            })
        })
        .collect_view();
    let node_views = nodes
        .iter()
        .filter_map(|n| {
            let id = n["id"].as_str()?.to_string();
            let (x, y) = at(&id)?;
            let name = n["name"].as_str().unwrap_or(&id).to_string();
            let kind = n["kind"].as_str().unwrap_or("").to_string();
            let stats = format!(
                "{:.2} req/s · {:.1}% err",
                num(&n["request_rate"]),
                num(&n["error_rate"]) * 100.0
            );
            let class = if selected == Some(name.as_str()) { "node selected" } else { "node" };
            let href = if n["is_peer"].as_bool().unwrap_or(false) {
                format!("/ui/map?range={preset}")
            } else {
                format!("/ui/map?range={preset}&service={}", q(&name))
            };
            let short: String = if name.chars().count() > 24 {
                name.chars().take(23).chain(std::iter::once('…')).collect()
            } else {
                name.clone()
            };
            Some(view! {
                <a href=href>
                    <g class=class data-id=id>
                        <rect x=format!("{x:.1}") y=format!("{y:.1}") width=NODE_W height=NODE_H rx="6"
                            fill=fill(num(&n["error_rate"]), num(&n["requests"]))/>
                        <text class="kind" x=format!("{:.1}", x + 8.0) y=format!("{:.1}", y + 13.0)>{kind}</text>
                        <text class="name" x=format!("{:.1}", x + 8.0) y=format!("{:.1}", y + 28.0)>{short}<title>{name}</title></text>
                        <text class="stats" x=format!("{:.1}", x + 8.0) y=format!("{:.1}", y + 41.0)>{stats}</text>
                    </g>
                </a>
            })
        })
        .collect_view();
    view! {
        <div class="map-wrap">
            <svg id="service-map" class="map" width=format!("{width:.0}") height=format!("{height:.0}")
                viewBox=format!("0 0 {width:.0} {height:.0}") role="img" aria-label="service map">
                <defs>
                    <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
                        <path d="M 0 0 L 10 5 L 0 10 z" fill="#8a96a3"/>
                    </marker>
                </defs>
                {edge_views}
                {node_views}
            </svg>
        </div>
    }
}

async fn service_panel(
    s: &UiState,
    name: &str,
    preset: &str,
    nodes: &[Value],
) -> impl IntoView + use<> {
    let node = nodes
        .iter()
        .find(|n| n["name"] == name && n["is_peer"] == false)
        .cloned();
    let range = [("start".to_string(), format!("now-{preset}"))];
    let ops = operations_json(&s.engine, name, range.to_vec()).await;
    let errors = search_json(
        &s.engine,
        vec![
            ("service".into(), name.to_string()),
            ("status".into(), "error".into()),
            ("start".into(), format!("now-{preset}")),
            ("limit".into(), "10".into()),
        ],
    )
    .await;
    let red = node.map(|n| {
        let p = |k: &str| {
            n[k].as_f64()
                .map_or_else(|| "–".to_string(), |v| format!("{v:.1} ms"))
        };
        format!(
            "{:.2} req/s · {:.1}% errors · p50 {} · p95 {} · p99 {}",
            num(&n["request_rate"]),
            num(&n["error_rate"]) * 100.0,
            p("p50_ms"),
            p("p95_ms"),
            p("p99_ms")
        )
    });
    let op_rows = match ops {
        Ok(v) => v["operations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|o| {
                let p99 = o["p99_ms"]
                    .as_f64()
                    .map_or_else(|| "–".to_string(), |v| format!("{v:.1} ms"));
                view! {
                    <tr>
                        <td>{o["operation"].as_str().unwrap_or("").to_string()}</td>
                        <td>{o["span_kind"].as_str().unwrap_or("").to_string()}</td>
                        <td class="num">{format!("{:.2}", num(&o["request_rate"]))}</td>
                        <td class="num">{format!("{:.1}%", num(&o["error_rate"]) * 100.0)}</td>
                        <td class="num">{p99}</td>
                    </tr>
                }
            })
            .collect_view()
            .into_any(),
        Err(e) => view! { <tr><td class="health-err">{e.to_string()}</td></tr> }.into_any(),
    };
    let error_traces = match errors {
        Ok(v) => v["traces"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| {
                let id = t["trace_id"].as_str().unwrap_or("").to_string();
                let title = format!(
                    "{} {}",
                    t["root_name"].as_str().unwrap_or("?"),
                    t["start_time"].as_str().unwrap_or("")
                );
                view! { <li><a href=format!("/ui/traces/{id}")>{title}</a></li> }
            })
            .collect_view()
            .into_any(),
        Err(e) => view! { <li class="health-err">{e.to_string()}</li> }.into_any(),
    };
    let name = name.to_string();
    view! {
        <div class="card" id="service-panel">
            <h3>{name.clone()}</h3>
            <p id="service-red">{red}</p>
            <h4>"Operations"</h4>
            <table id="operations">
                <thead><tr><th>"operation"</th><th>"kind"</th><th>"req/s"</th><th>"errors"</th><th>"p99"</th></tr></thead>
                <tbody>{op_rows}</tbody>
            </table>
            <h4>"Recent error traces"</h4>
            <ul id="error-traces">{error_traces}</ul>
            <p>
                <a href=format!("/ui/logs?q={}&range={preset}", q(&format!("service:{name}")))>"Logs of this service"</a>" · "
                <a href=format!("/ui/traces?service={}&start=now-{preset}", q(&name))>"Traces of this service"</a>
            </p>
        </div>
    }
}
