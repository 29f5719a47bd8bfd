//! Metrics: pick a metric or type PromQL; a line chart over the time range with a
//! legend, drawn as SVG on the server. Histogram quantiles are PromQL's
//! `histogram_quantile` (an example link fills it in).

use axum::extract::{Query, State};
use axum::response::Html;
use leptos::prelude::*;
use periscope_query::promql::{metric_names, range_query, series};
use serde::Deserialize;
use serde_json::Value;

use crate::format::{preset_window, q};
use crate::shell::{page, preset_links};
use crate::state::UiState;

/// Points per series the chart asks for.
const POINTS: i64 = 120;
/// Series drawn at most (the legend says how many more there were).
const MAX_SERIES: usize = 20;

/// `?query=&range=`
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    query: Option<String>,
    range: Option<String>,
}

/// A colour per series index.
fn colour(i: usize) -> String {
    format!("hsl({}, 70%, 60%)", (i * 137) % 360)
}

/// A series label as Prometheus prints it: `name{k="v", ...}`.
fn label(metric: &Value) -> String {
    let obj = metric.as_object().cloned().unwrap_or_default();
    let name = obj
        .get("__name__")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let rest: Vec<String> = obj
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or("")))
        .collect();
    if rest.is_empty() && name.is_empty() {
        "{}".into()
    } else {
        format!("{name}{{{}}}", rest.join(", "))
    }
}

/// `GET /ui/metrics`
pub async fn handler(State(s): State<UiState>, Query(p): Query<Params>) -> Html<String> {
    let (start, end, preset) = preset_window(p.range.as_deref());
    let (start_ms, end_ms) = (start / 1_000_000, end / 1_000_000);
    let names = metric_names(&s.engine, start_ms, end_ms)
        .await
        .unwrap_or_default();
    let query = p.query.clone().unwrap_or_default();
    let options = names
        .iter()
        .map(|n| {
            let selected = *n == query;
            let value = n.clone();
            view! { <option value=value selected=selected>{n.clone()}</option> }
        })
        .collect_view();
    // Label picker: when the query is a bare metric name, its label values as links that
    // add a matcher.
    let labels = if names.contains(&query) {
        match series(&s.engine, std::slice::from_ref(&query), start_ms, end_ms).await {
            Ok(list) => {
                let mut pairs: std::collections::BTreeMap<
                    String,
                    std::collections::BTreeSet<String>,
                > = std::collections::BTreeMap::new();
                for one in &list {
                    for (k, v) in one.labels.pairs() {
                        if k != "__name__" {
                            pairs.entry(k.clone()).or_default().insert(v.clone());
                        }
                    }
                }
                let items = pairs
                    .into_iter()
                    .map(|(k, values)| {
                        let links = values
                            .into_iter()
                            .take(30)
                            .map(|v| {
                                let expr = format!("{query}{{{k}=\"{}\"}}", v.replace('\\', "\\\\").replace('"', "\\\""));
                                view! { <a class="label-value" href=format!("/ui/metrics?query={}&range={preset}", q(&expr))>{v}</a>" " }
                            })
                            .collect_view();
                        view! { <li><span class="muted">{format!("{k}: ")}</span>{links}</li> }
                    })
                    .collect_view();
                Some(view! { <ul id="label-picker" class="labels">{items}</ul> })
            }
            Err(_) => None,
        }
    } else {
        None
    };
    let step = ((end_ms - start_ms) / POINTS).max(1000);
    let chart = if query.trim().is_empty() {
        None
    } else {
        Some(
            match range_query(&s.engine, &query, start_ms, end_ms, step).await {
                Err(e) => {
                    view! { <div class="error" id="metrics-error">{e.message}</div> }.into_any()
                }
                Ok(v) => line_chart(&v, start_ms, end_ms).into_any(),
            },
        )
    };
    let presets = preset_links(preset, &|name| {
        format!("/ui/metrics?query={}&range={name}", q(&query))
    });
    let bucket = names.iter().find(|n| n.ends_with("_bucket")).cloned();
    let example = bucket.map(|b| {
        let expr = format!("histogram_quantile(0.99, sum by (le) (rate({b}[5m])))");
        view! { <p class="muted">"Histogram quantile: "<a id="quantile-example" href=format!("/ui/metrics?query={}&range={preset}", q(&expr))>{expr.clone()}</a></p> }
    });
    let body = view! {
        <h1>"Metrics"</h1>
        <form class="bar" method="get" action="/ui/metrics">
            <select name="query" id="metric-pick" onchange="this.form.submit()">
                <option value="">{format!("pick one of {} metrics", names.len())}</option>
                {options}
            </select>
            <input type="hidden" name="range" value=preset/>
            <button type="submit">"Show"</button>
        </form>
        <form class="bar" method="get" action="/ui/metrics">
            <input type="text" class="query" name="query" id="promql" value=query.clone()
                placeholder="sum by (service_name) (rate(http_server_request_duration_seconds_count[5m]))"/>
            <input type="hidden" name="range" value=preset/>
            <button type="submit" id="run-promql">"Run PromQL"</button>
        </form>
        <div class="presets">{presets}</div>
        {example}
        {labels}
        {chart}
    };
    page("Metrics", "/ui/metrics", body)
}

fn line_chart(v: &Value, start: i64, end: i64) -> impl IntoView + use<> {
    let series = v["result"].as_array().cloned().unwrap_or_default();
    if series.is_empty() {
        return view! { <p class="muted" id="no-series">"The query returned no series in this range."</p> }.into_any();
    }
    let shown = &series[..series.len().min(MAX_SERIES)];
    let points: Vec<Vec<(i64, f64)>> = shown
        .iter()
        .map(|s| {
            s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let t = (p[0].as_f64()? * 1000.0) as i64;
                    let y: f64 = p[1].as_str()?.parse().ok()?;
                    y.is_finite().then_some((t, y))
                })
                .collect()
        })
        .collect();
    let all = points.iter().flatten().map(|(_, y)| *y);
    let (mut lo, mut hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if (hi - lo).abs() < f64::EPSILON {
        (lo, hi) = (lo - 1.0, hi + 1.0);
    }
    let (w, h, left, bottom) = (1000.0_f64, 260.0_f64, 60.0_f64, 20.0_f64);
    let x = |t: i64| left + (w - left - 10.0) * (t - start) as f64 / (end - start).max(1) as f64;
    let y = |v: f64| 10.0 + (h - bottom - 10.0) * (1.0 - (v - lo) / (hi - lo));
    let lines = points
        .iter()
        .enumerate()
        .map(|(i, pts)| {
            let d: Vec<String> = pts.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
            view! { <polyline class="series" points=d.join(" ") fill="none" stroke=colour(i) stroke-width="1.6"/> }
        })
        .collect_view();
    let legend = shown
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let last = s["values"]
                .as_array()
                .and_then(|v| v.last())
                .and_then(|p| p[1].as_str())
                .unwrap_or("")
                .to_string();
            view! { <li class="legend-item"><span class="swatch" style=format!("background:{}", colour(i))></span>{label(&s["metric"])}<span class="muted">{format!(" = {last}")}</span></li> }
        })
        .collect_view();
    let more = (series.len() > MAX_SERIES)
        .then(|| view! { <p class="muted">{format!("{} more series not drawn; aggregate the query to see them.", series.len() - MAX_SERIES)}</p> });
    view! {
        <svg class="chart line" id="metric-chart" viewBox=format!("0 0 {w} {h}") preserveAspectRatio="none" role="img" aria-label="metric over time">
            <text x="2" y="14">{format!("{hi:.3}")}</text>
            <text x="2" y=format!("{:.0}", h - bottom)>{format!("{lo:.3}")}</text>
            <text x=format!("{left}") y=format!("{:.0}", h - 4.0)>{crate::format::time_ns(start * 1_000_000)}</text>
            <text x=format!("{:.0}", w - 150.0) y=format!("{:.0}", h - 4.0)>{crate::format::time_ns(end * 1_000_000)}</text>
            {lines}
        </svg>
        <ul class="legend-list" id="metric-legend">{legend}</ul>
        {more}
    }
    .into_any()
}
