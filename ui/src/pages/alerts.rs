//! Alerts: every rule with its state, last evaluation and error; the firing and
//! pending alerts; queued and delivered notifications and dead letters.

use axum::extract::State;
use axum::response::Html;
use leptos::prelude::*;
use periscope_alerting::rules::RuleType;
use periscope_alerting::state::AlertState;
use periscope_alerting::{Health, Notification, Outcome, go_time, value_text};

use crate::shell::page;
use crate::state::UiState;

fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .filter(|(k, _)| *k != "alertname")
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `GET /ui/alerts`
pub async fn handler(State(s): State<UiState>) -> Html<String> {
    let view_data = s.alerting.view();
    let mut rules = Vec::new();
    let mut active = Vec::new();
    for g in &view_data.groups {
        for r in &g.rules {
            let (kind, state) = match r.rule.rule_type {
                RuleType::Alerting => (
                    "alert",
                    if r.health == Health::Unknown {
                        "unknown"
                    } else {
                        r.alerts.state().as_str()
                    },
                ),
                RuleType::Recording => ("record", ""),
            };
            let health = match r.health {
                Health::Ok => "ok",
                Health::Err => "err",
                Health::Unknown => "unknown",
            };
            let last = r
                .last_evaluation
                .map(go_time)
                .unwrap_or_else(|| "never".into());
            rules.push(view! {
                <tr class="rule">
                    <td>{g.group.name.clone()}<span class="type muted">{g.group.file.display().to_string()}</span></td>
                    <td class="rule-name">{r.rule.name.clone()}</td>
                    <td>{kind}</td>
                    <td class=format!("state-{state}")>{state}</td>
                    <td class=format!("health-{health}")>{health}</td>
                    <td>{last}</td>
                    <td><code>{r.rule.expr.text()}</code></td>
                    <td class="health-err">{r.last_error.clone().unwrap_or_default()}</td>
                </tr>
            });
            for a in r.alerts.alerts.values() {
                if a.state == AlertState::Inactive {
                    continue;
                }
                let st = a.state.as_str();
                let summary = a.annotations.get("summary").cloned().unwrap_or_default();
                active.push(view! {
                    <tr class=format!("alert {st}")>
                        <td class=format!("state-{st}")>{st}</td>
                        <td class="alertname">{r.rule.name.clone()}</td>
                        <td>{labels_text(&a.labels)}</td>
                        <td>{go_time(a.active_at)}</td>
                        <td class="num">{value_text(a.value)}</td>
                        <td>{summary}</td>
                    </tr>
                });
            }
        }
    }
    let (pending, delivered, dead) = s.alerting.outbox().report();
    let no_rules = rules.is_empty().then(|| {
        view! {
            <div class="empty" id="empty">
                <p>"No alert rules are loaded. Start Periscope with "<code>"--rules rules.yml"</code>
                   " (Prometheus's rule format, plus "<code>"sql:"</code>" and "<code>"logs:"</code>
                   " rules); docs/alerting.md has an example."</p>
            </div>
        }
    });
    let no_active = active
        .is_empty()
        .then(|| view! { <p class="muted" id="no-alerts">"Nothing is firing or pending."</p> });
    let body = view! {
        <h1>"Alerts"</h1>
        <h2>"Firing and pending"</h2>
        {no_active}
        <table id="active-alerts">
            <thead><tr><th>"state"</th><th>"alert"</th><th>"labels"</th><th>"active since"</th><th>"value"</th><th>"summary"</th></tr></thead>
            <tbody>{active}</tbody>
        </table>
        <h2>"Rules"</h2>
        {no_rules}
        <table id="rules">
            <thead><tr><th>"group"</th><th>"rule"</th><th>"type"</th><th>"state"</th><th>"health"</th><th>"last evaluation"</th><th>"expression"</th><th>"error"</th></tr></thead>
            <tbody>{rules}</tbody>
        </table>
        <h2>"Notifications"</h2>
        {notifications("queued", "pending-notifications", pending.iter().map(|n| (n, None)).collect())}
        {notifications("delivered (newest first)", "delivered-notifications", delivered.iter().rev().take(50).map(|o| (&o.notification, Some(o))).collect())}
        {notifications("dead letters", "dead-letters", dead.iter().rev().map(|o| (&o.notification, Some(o))).collect())}
    };
    page("Alerts", "/ui/alerts", body)
}

fn notifications(
    title: &'static str,
    id: &'static str,
    list: Vec<(&Notification, Option<&Outcome>)>,
) -> impl IntoView + use<> {
    let count = list.len();
    let rows = list
        .into_iter()
        .map(|(n, o)| {
            view! {
                <tr>
                    <td class="num">{n.id}</td>
                    <td>{n.target.clone()}</td>
                    <td>{go_time(n.created)}</td>
                    <td>{n.summary.clone()}</td>
                    <td>{o.map(|o| format!("{} after {} attempt(s)", go_time(o.at), o.attempts))}</td>
                    <td class="health-err">{o.and_then(|o| o.error.clone())}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h3>{format!("{title}: {count}")}</h3>
        <table id=id>
            <thead><tr><th>"id"</th><th>"receiver"</th><th>"queued"</th><th>"what"</th><th>"done"</th><th>"error"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}
