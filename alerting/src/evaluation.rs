//! One evaluation of one rule group at one tick, run as a task of its own so that a
//! slow group holds up no other.
//!
//! The rules of a group run in file order, and a rule's series are stored before the
//! next rule runs (a recording rule can feed a later rule of its group, as in
//! Prometheus). The evaluation works on its own copy of the group's state and returns
//! it with the notifications it produced; the engine takes both in and commits them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::config::AlertingConfig;
use crate::dispatch::{NotifyAlert, millis_time};
use crate::metrics::AlertingMetrics;
use crate::rules::{RuleExpr, RuleType};
use crate::runtime::{GroupRuntime, Health};
use crate::series::{self, SeriesSink, stale};
use crate::source::Evaluate;
use crate::state::{Alert, AlertState, Context, LabelSet};

/// What every group evaluation shares.
pub(crate) struct Evaluator {
    /// The settings.
    pub(crate) config: Arc<AlertingConfig>,
    /// Runs the expressions.
    pub(crate) rules: Arc<dyn Evaluate>,
    /// Where series go.
    pub(crate) sink: Option<Arc<dyn SeriesSink>>,
    /// What templates see.
    pub(crate) cx: Context,
    /// Evaluation counters.
    pub(crate) metrics: AlertingMetrics,
}

/// A finished evaluation: the group's state after it, and what it has to notify.
pub(crate) struct Evaluated {
    /// The evaluated copy of the group.
    pub(crate) group: GroupRuntime,
    /// Alerts to send to every Alertmanager.
    pub(crate) to_alertmanager: Vec<serde_json::Value>,
    /// Alerts that fired or resolved, for the webhook groups.
    pub(crate) updates: Vec<NotifyAlert>,
}

impl Evaluator {
    /// Evaluates `group`'s rules at `ts` (Unix ms).
    pub(crate) async fn evaluate(self: Arc<Self>, mut group: GroupRuntime, ts: i64) -> Evaluated {
        let started = Instant::now();
        let mut to_alertmanager = Vec::new();
        let mut updates = Vec::new();
        // As Prometheus: the query (and the samples written) are `query_offset` in the
        // past; alert times are the evaluation time.
        let offset = group.group.query_offset.as_millis() as i64;
        let query_ts = ts - offset;
        let limit = group.group.limit;
        let resend = self.config.resend_delay;
        let valid_for = (resend.max(group.interval).as_millis() * 4) as i64;
        for r in &mut group.rules {
            let rule_started = Instant::now();
            let result = self.rules.eval(&r.rule.expr, query_ts).await;
            let generator = generator_url(&self.config, &r.rule.expr);
            let mut rule_series: Vec<(LabelSet, f64)> = Vec::new();
            let outcome = result.and_then(|instances| match r.rule.rule_type {
                RuleType::Recording => {
                    for i in instances {
                        let mut labels = i.labels;
                        labels.extend(r.labels.clone());
                        labels.retain(|_, v| !v.is_empty());
                        labels.insert("__name__".into(), r.rule.name.clone());
                        rule_series.push((labels, i.value));
                    }
                    let distinct: BTreeSet<&LabelSet> = rule_series.iter().map(|(l, _)| l).collect();
                    if distinct.len() < rule_series.len() {
                        return Err("vector contains metrics with the same labelset after applying rule labels".into());
                    }
                    if limit > 0 && rule_series.len() > limit {
                        return Err(format!(
                            "exceeded limit of {limit} with {} series",
                            rule_series.len()
                        ));
                    }
                    Ok(())
                }
                RuleType::Alerting => {
                    r.alerts
                        .apply(&r.rule, &r.labels, &instances, ts, limit, &self.cx)?;
                    rule_series = r.alerts.series();
                    Ok(())
                }
            });
            match outcome {
                Ok(()) => {
                    r.health = Health::Ok;
                    r.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(rule = %r.rule.name, error = %e, "Rule evaluation failed.");
                    r.health = Health::Err;
                    r.last_error = Some(e);
                }
            }
            r.last_evaluation = Some(ts);
            r.evaluation_time = rule_started.elapsed();
            self.metrics.evaluated(r.health == Health::Ok);
            // A failed evaluation sends nothing and writes nothing: its series are neither
            // refreshed nor marked stale.
            if r.health != Health::Ok {
                continue;
            }
            if r.rule.rule_type == RuleType::Alerting {
                for a in r.alerts.alerts.values_mut() {
                    notify_updates(
                        a,
                        ts,
                        ts + valid_for,
                        &generator,
                        &self.config,
                        &mut updates,
                    );
                    if a.needs_sending(ts, resend.as_millis() as i64) {
                        a.last_sent_at = Some(ts);
                        a.valid_until = Some(ts + valid_for);
                        to_alertmanager.push(alertmanager_alert(a, &generator, &self.config));
                    }
                }
            }
            let current: BTreeSet<LabelSet> = rule_series.iter().map(|(l, _)| l.clone()).collect();
            rule_series.extend(stale(
                r.last_series
                    .iter()
                    .filter(|l| !current.contains(*l))
                    .cloned(),
            ));
            r.last_series = current;
            if !rule_series.is_empty() {
                series::write(self.sink.as_ref(), &rule_series, query_ts).await;
            }
        }
        group.last_evaluation = Some(ts);
        group.evaluation_time = started.elapsed();
        Evaluated {
            group,
            to_alertmanager,
            updates,
        }
    }
}

/// `generatorURL` of a rule: Prometheus's table link for PromQL, the UI for the rest.
fn generator_url(config: &AlertingConfig, expr: &RuleExpr) -> String {
    let q = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    match expr {
        RuleExpr::PromQL(e) => format!("{}/graph?g0.expr={}&g0.tab=1", config.external_url, q(e)),
        RuleExpr::Sql { query, .. } => format!("{}/ui/sql?q={}", config.external_url, q(query)),
        RuleExpr::Logs { query, .. } => format!("{}/ui/logs?q={}", config.external_url, q(query)),
    }
}

fn with_external(config: &AlertingConfig, labels: &LabelSet) -> LabelSet {
    let mut out = labels.clone();
    for (k, v) in &config.external_labels {
        out.entry(k.clone()).or_insert_with(|| v.clone());
    }
    out
}

/// Webhook dispatch sees an alert when it fires and when it resolves.
fn notify_updates(
    a: &Alert,
    ts: i64,
    valid_until: i64,
    generator: &str,
    config: &AlertingConfig,
    updates: &mut Vec<NotifyAlert>,
) {
    let ends_at = match a.state {
        AlertState::Firing => None,
        AlertState::Inactive if a.resolved_at == Some(ts) && a.fired_at.is_some() => a.resolved_at,
        _ => return,
    };
    updates.push(NotifyAlert {
        labels: with_external(config, &a.labels),
        annotations: a.annotations.clone(),
        starts_at: a.fired_at.unwrap_or(a.active_at),
        ends_at,
        valid_until,
        generator_url: generator.to_string(),
    });
}

/// An alert as Prometheus posts it to Alertmanager's `/api/v2/alerts`.
fn alertmanager_alert(a: &Alert, generator: &str, config: &AlertingConfig) -> serde_json::Value {
    let ends = a.resolved_at.or(a.valid_until).unwrap_or(a.active_at);
    let mut v = json!({
        "labels": with_external(config, &a.labels),
        "startsAt": millis_time(a.fired_at.unwrap_or(a.active_at)),
        "endsAt": millis_time(ends),
        "generatorURL": generator,
    });
    if !a.annotations.is_empty() {
        v["annotations"] = json!(a.annotations);
    }
    v
}
