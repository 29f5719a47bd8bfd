//! The alerting HTTP API, in Prometheus's shapes: `GET /api/v1/rules`,
//! `GET /api/v1/alerts`, `POST /api/v1/rules/reload`; and Periscope's
//! `GET /api/v1/notifications` (queued, delivered and dead notifications).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::dispatch::go_time;
use crate::engine::Alerting;
use crate::outbox::{Notification, Outcome};
use crate::rules::RuleType;
use crate::runtime::{Health, RuleRuntime};
use crate::state::{Alert, AlertState};

/// The router: mount it on the API port.
pub fn router(alerting: Alerting) -> Router {
    Router::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/rules/reload", post(reload))
        .route("/api/v1/notifications", get(notifications))
        .with_state(alerting)
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`, which Prometheus uses for alert values.
pub fn value_text(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

fn time_or_zero(ms: Option<i64>) -> String {
    ms.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), go_time)
}

fn alert_json(a: &Alert) -> Value {
    let mut v = json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": go_time(a.active_at),
        "value": value_text(a.value),
    });
    if let Some(since) = a.keep_firing_since {
        v["keepFiringSince"] = json!(go_time(since));
    }
    v
}

fn listed(a: &Alert) -> bool {
    a.state != AlertState::Inactive
}

fn health(h: Health) -> &'static str {
    match h {
        Health::Unknown => "unknown",
        Health::Ok => "ok",
        Health::Err => "err",
    }
}

fn rule_json(r: &RuleRuntime) -> Value {
    let mut v = match r.rule.rule_type {
        RuleType::Alerting => {
            let state = if r.health == Health::Unknown {
                "unknown"
            } else {
                r.alerts.state().as_str()
            };
            json!({
                "state": state,
                "name": r.rule.name,
                "query": r.rule.expr.text(),
                "duration": r.rule.for_.as_secs_f64(),
                "keepFiringFor": r.rule.keep_firing_for.as_secs_f64(),
                "labels": r.rule.labels,
                "annotations": r.rule.annotations,
                "alerts": r.alerts.alerts.values().filter(|a| listed(a)).map(alert_json).collect::<Vec<_>>(),
                "type": "alerting",
            })
        }
        RuleType::Recording => json!({
            "name": r.rule.name,
            "query": r.rule.expr.text(),
            "labels": r.rule.labels,
            "type": "recording",
        }),
    };
    v["health"] = json!(health(r.health));
    if let Some(e) = &r.last_error {
        v["lastError"] = json!(e);
    }
    v["evaluationTime"] = json!(r.evaluation_time.as_secs_f64());
    v["lastEvaluation"] = json!(time_or_zero(r.last_evaluation));
    v
}

#[derive(Debug, Deserialize)]
struct RulesParams {
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn bad_data(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"status": "error", "errorType": "bad_data", "error": message})),
    )
        .into_response()
}

async fn rules(State(a): State<Alerting>, Query(p): Query<RulesParams>) -> Response {
    let want = match p.kind.as_deref() {
        None | Some("") => None,
        Some("alert") => Some(RuleType::Alerting),
        Some("record") => Some(RuleType::Recording),
        Some(other) => {
            return bad_data(format!(
                "invalid parameter \"type\": {other:?} is not alert or record"
            ));
        }
    };
    let view = a.view();
    let groups: Vec<Value> = view
        .groups
        .iter()
        .map(|g| {
            json!({
                "name": g.group.name,
                "file": g.group.file.display().to_string(),
                "rules": g.rules.iter().filter(|r| want.is_none_or(|t| t == r.rule.rule_type)).map(rule_json).collect::<Vec<_>>(),
                "interval": g.interval.as_secs_f64(),
                "limit": g.group.limit,
                "evaluationTime": g.evaluation_time.as_secs_f64(),
                "lastEvaluation": time_or_zero(g.last_evaluation),
            })
        })
        .collect();
    axum::Json(json!({"status": "success", "data": {"groups": groups}})).into_response()
}

async fn alerts(State(a): State<Alerting>) -> Response {
    let view = a.view();
    let list: Vec<Value> = view
        .groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .flat_map(|r| r.alerts.alerts.values())
        .filter(|a| listed(a))
        .map(alert_json)
        .collect();
    axum::Json(json!({"status": "success", "data": {"alerts": list}})).into_response()
}

async fn reload(State(a): State<Alerting>) -> Response {
    match a.reload().await {
        Ok(n) => axum::Json(json!({"status": "success", "data": {"rules": n}})).into_response(),
        Err(e) => bad_data(e),
    }
}

fn notification_json(n: &Notification) -> Value {
    json!({
        "id": n.id,
        "target": n.target,
        "created": go_time(n.created),
        "summary": n.summary,
        "body": serde_json::from_str::<Value>(&n.body).unwrap_or(Value::String(n.body.clone())),
    })
}

fn outcome_json(o: &Outcome) -> Value {
    let mut v = notification_json(&o.notification);
    v["at"] = json!(go_time(o.at));
    v["attempts"] = json!(o.attempts);
    if let Some(e) = &o.error {
        v["error"] = json!(e);
    }
    v
}

async fn notifications(State(a): State<Alerting>) -> Response {
    let (pending, delivered, dead) = a.outbox().report();
    axum::Json(json!({
        "status": "success",
        "data": {
            "pending": pending.iter().map(notification_json).collect::<Vec<_>>(),
            "delivered": delivered.iter().rev().map(outcome_json).collect::<Vec<_>>(),
            "dead": dead.iter().rev().map(outcome_json).collect::<Vec<_>>(),
        }
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_as_go_does() {
        assert_eq!(value_text(1.0), "1e+00");
        assert_eq!(value_text(11.0), "1.1e+01");
        assert_eq!(value_text(0.05), "5e-02");
        assert_eq!(value_text(1234567.0), "1.234567e+06");
        assert_eq!(value_text(1e100), "1e+100");
        assert_eq!(value_text(f64::NAN), "NaN");
        assert_eq!(value_text(f64::NEG_INFINITY), "-Inf");
    }
}
