//! Overview: the MSA at a glance. Gateways, mesh proxies and services (health, instances,
//! versions, last seen), the databases, queues and external hosts they call, and the
//! alerts firing now.

use axum::extract::{Query, State};
use axum::response::Html;
use leptos::prelude::*;
use periscope_alerting::state::AlertState;
use periscope_query::traces::{Window, components_json};
use serde::Deserialize;
use serde_json::Value;

use crate::format::preset_window;
use crate::shell::{no_data, page, preset_links};
use crate::state::UiState;

/// `?range=`
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    range: Option<String>,
}

/// The headings of the component sections: kind and title.
const SECTIONS: [(&str, &str); 3] = [
    ("gateway", "Gateways"),
    ("mesh-proxy", "Mesh proxies"),
    ("service", "Services"),
];

/// `GET /ui/`
pub async fn handler(State(s): State<UiState>, Query(p): Query<Params>) -> Html<String> {
    let (start, end, preset) = preset_window(p.range.as_deref());
    let data = components_json(&s.engine, Window { start, end })
        .await
        .map_err(|e| e.to_string());
    let presets = preset_links(preset, &|name| format!("/ui/?range={name}"));
    let firing: Vec<(String, String)> = s
        .alerting
        .view()
        .groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .flat_map(|r| r.alerts.alerts.values())
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| {
            (
                a.labels.get("alertname").cloned().unwrap_or_default(),
                a.annotations.get("summary").cloned().unwrap_or_default(),
            )
        })
        .collect();
    let alerts_view = if firing.is_empty() {
        view! { <p class="muted" id="firing">"No alert is firing."</p> }.into_any()
    } else {
        let items = firing
            .into_iter()
            .map(|(name, summary)| view! { <li><strong class="state-firing">{name}</strong>" "{summary}</li> })
            .collect_view();
        view! { <ul id="firing">{items}</ul> }.into_any()
    };
    let content = match data {
        Err(e) => view! { <div class="error">{e}</div> }.into_any(),
        Ok(v) => {
            let components = v["components"].as_array().cloned().unwrap_or_default();
            let peers = v["peers"].as_array().cloned().unwrap_or_default();
            if components.is_empty() && peers.is_empty() {
                no_data("telemetry in this time range").into_any()
            } else {
                let sections = SECTIONS
                    .iter()
                    .map(|(kind, title)| {
                        let cards: Vec<Value> = components
                            .iter()
                            .filter(|c| c["kind"] == *kind)
                            .cloned()
                            .collect();
                        let count = cards.len();
                        let cards = cards.iter().map(component_card).collect_view();
                        view! {
                            <h2>{format!("{title} ({count})")}</h2>
                            <div class="cards" id=format!("kind-{kind}")>{cards}</div>
                        }
                    })
                    .collect_view();
                let peer_cards = peers.iter().map(peer_card).collect_view();
                view! {
                    {sections}
                    <h2>{format!("Databases, queues and external hosts ({})", peers.len())}</h2>
                    <div class="cards" id="peers">{peer_cards}</div>
                }
                .into_any()
            }
        }
    };
    let body = view! {
        <h1>"Overview"</h1>
        <div class="presets">{presets}</div>
        <h2>"Alerts firing now"</h2>
        {alerts_view}
        {content}
    };
    page("Overview", "/ui/", body)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn component_card(c: &Value) -> impl IntoView + use<> {
    let name = c["name"].as_str().unwrap_or("").to_string();
    let kind = c["kind"].as_str().unwrap_or("").to_string();
    let red = &c["red"];
    let versions: Vec<String> = {
        let mut v: Vec<String> = c["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["version"].as_str().map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let error_rate = num(&red["error_rate"]);
    let health = if num(&red["requests"]) == 0.0 {
        "muted"
    } else if error_rate > 0.05 {
        "state-firing"
    } else if error_rate > 0.0 {
        "state-pending"
    } else {
        "health-ok"
    };
    let p99 = red["p99_ms"]
        .as_f64()
        .map_or_else(|| "–".to_string(), |ms| format!("{ms:.1} ms"));
    let data_name = name.clone();
    view! {
        <div class="card component" data-name=data_name>
            <div class="kind">{kind}</div>
            <h3>{name}</h3>
            <div class=health>
                {format!("{:.2} req/s · {:.1}% errors · p99 {p99}", num(&red["request_rate"]), error_rate * 100.0)}
            </div>
            <div class="muted">
                {format!("{} instance(s)", c["instance_count"].as_u64().unwrap_or(0))}
                {(!versions.is_empty()).then(|| format!(" · version {}", versions.join(", ")))}
            </div>
            <div class="muted">{format!("last seen {}", c["last_seen"].as_str().unwrap_or(""))}</div>
        </div>
    }
}

fn peer_card(p: &Value) -> impl IntoView + use<> {
    let name = p["name"].as_str().unwrap_or("").to_string();
    let kind = p["kind"].as_str().unwrap_or("").to_string();
    let callers: Vec<String> = p["callers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    let data_name = name.clone();
    view! {
        <div class="card peer" data-name=data_name>
            <div class="kind">{kind}</div>
            <h3>{name}</h3>
            <div class="muted">{format!("{} calls, {} errors", num(&p["requests"]), num(&p["errors"]))}</div>
            <div class="muted">{format!("called by {}", callers.join(", "))}</div>
        </div>
    }
}
