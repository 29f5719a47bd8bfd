//! The state of an alerting rule's instances, as Prometheus keeps it (rules/alerting.go
//! and the Alert Generator Compliance Specification): inactive → pending → firing →
//! resolved, `for`, `keep_firing_for`, 15 minutes of resolved retention, and when an
//! instance must be (re)sent to Alertmanager.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rules::Rule;
use crate::template::{self, QueryFn, TemplateData};

/// How long a resolved alert is kept (and re-sent to Alertmanager).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// A label set, sorted by name.
pub type LabelSet = BTreeMap<String, String>;

/// Where an alert instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Resolved: its condition stopped holding.
    Inactive,
    /// Its condition holds, for less than the rule's `for`.
    Pending,
    /// Its condition has held for `for`.
    Firing,
}

impl AlertState {
    /// The name the APIs use.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert instance. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Its labels (series labels + rule labels + `alertname`).
    pub labels: LabelSet,
    /// Its expanded annotations.
    pub annotations: LabelSet,
    /// Its state.
    pub state: AlertState,
    /// The value of the last evaluation that returned it.
    #[serde(with = "float_text")]
    pub value: f64,
    /// When it became active (pending).
    pub active_at: i64,
    /// When it started firing.
    pub fired_at: Option<i64>,
    /// When it resolved.
    pub resolved_at: Option<i64>,
    /// When it was last sent to Alertmanager.
    pub last_sent_at: Option<i64>,
    /// `endsAt` of the last firing send.
    pub valid_until: Option<i64>,
    /// Since when it has been kept firing by `keep_firing_for`.
    pub keep_firing_since: Option<i64>,
}

impl Alert {
    /// Its fingerprint (Prometheus's, over the labels).
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.labels)
    }

    /// Whether Alertmanager must be sent this alert now (Prometheus's `needsSending`).
    pub fn needs_sending(&self, ts: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        let last = self.last_sent_at.unwrap_or(i64::MIN);
        if self.resolved_at.is_some_and(|r| r > last) {
            return true;
        }
        self.last_sent_at.is_none_or(|l| l + resend_delay_ms < ts)
    }
}

/// Floats as text, so NaN and the infinities survive JSON.
mod float_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Prometheus's label-set fingerprint: FNV-1a 64 over the sorted names and values,
/// each followed by 0xff.
pub fn fingerprint(labels: &LabelSet) -> u64 {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        eat(k.as_bytes());
        eat(&[0xff]);
        eat(v.as_bytes());
        eat(&[0xff]);
    }
    h
}

/// One result of a rule's expression: raw labels (with `__name__` when the series had
/// one) and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The series or row labels.
    pub labels: LabelSet,
    /// The value.
    pub value: f64,
}

/// What the template functions and labels need to know about the server.
#[derive(Clone, Default)]
pub struct Context {
    /// `$externalLabels`.
    pub external_labels: LabelSet,
    /// `$externalURL`.
    pub external_url: String,
    /// Runs the `query` template function.
    pub query: Option<QueryFn>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("external_labels", &self.external_labels)
            .field("external_url", &self.external_url)
            .finish_non_exhaustive()
    }
}

/// The alerts of one alerting rule, by fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleAlerts {
    /// Active (pending, firing) and recently resolved alerts.
    pub alerts: BTreeMap<u64, Alert>,
}

/// Expands a template, or says why it failed in its place (as Prometheus).
fn expand(name: &str, text: &str, data: &TemplateData<'_>) -> String {
    template::expand(name, text, data)
        .unwrap_or_else(|e| format!("<error expanding template: {e}>"))
}

impl RuleAlerts {
    /// Applies an evaluation at `ts` that returned `results` (Prometheus's
    /// `AlertingRule.Eval`). `labels` are the rule's labels merged over its group's.
    ///
    /// # Errors
    /// When two results end with the same labels, or more than `limit` alerts are
    /// active; the alerts are left as they were (duplicates) or cleared (limit), as in
    /// Prometheus.
    pub fn apply(
        &mut self,
        rule: &Rule,
        labels: &LabelSet,
        results: &[Instance],
        ts: i64,
        limit: usize,
        cx: &Context,
    ) -> Result<(), String> {
        let mut fresh: BTreeMap<u64, Alert> = BTreeMap::new();
        for r in results {
            let data = TemplateData {
                labels: &r.labels,
                external_labels: &cx.external_labels,
                external_url: &cx.external_url,
                value: r.value,
                time_ms: ts,
                query: cx.query.clone(),
            };
            let mut alert_labels = r.labels.clone();
            alert_labels.remove("__name__");
            for (k, v) in labels {
                let value = expand(&format!("__alert_{}", rule.name), v, &data);
                if value.is_empty() {
                    alert_labels.remove(k);
                } else {
                    alert_labels.insert(k.clone(), value);
                }
            }
            alert_labels.insert("alertname".into(), rule.name.clone());
            let annotations = rule
                .annotations
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        expand(&format!("__alert_{}", rule.name), v, &data),
                    )
                })
                .collect();
            let fp = fingerprint(&alert_labels);
            if fresh.contains_key(&fp) {
                return Err(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .into(),
                );
            }
            fresh.insert(
                fp,
                Alert {
                    labels: alert_labels,
                    annotations,
                    state: AlertState::Pending,
                    value: r.value,
                    active_at: ts,
                    fired_at: None,
                    resolved_at: None,
                    last_sent_at: None,
                    valid_until: None,
                    keep_firing_since: None,
                },
            );
        }
        for (fp, alert) in &fresh {
            match self.alerts.get_mut(fp) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = alert.value;
                    a.annotations = alert.annotations.clone();
                }
                _ => {
                    self.alerts.insert(*fp, alert.clone());
                }
            }
        }
        let for_ms = rule.for_.as_millis() as i64;
        let keep_ms = rule.keep_firing_for.as_millis() as i64;
        let mut active = 0;
        self.alerts.retain(|fp, a| {
            if !fresh.contains_key(fp) {
                let mut kept = false;
                if a.state == AlertState::Firing && keep_ms > 0 {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    kept = ts - since < keep_ms;
                }
                if !kept {
                    if a.state == AlertState::Pending
                        || a.resolved_at
                            .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
                    {
                        return false;
                    }
                    if a.state != AlertState::Inactive {
                        a.state = AlertState::Inactive;
                        a.resolved_at = Some(ts);
                    }
                    return true;
                }
            } else {
                a.keep_firing_since = None;
            }
            active += 1;
            if a.state == AlertState::Pending && ts - a.active_at >= for_ms {
                a.state = AlertState::Firing;
                a.fired_at = Some(ts);
            }
            true
        });
        if limit > 0 && active > limit {
            self.alerts.clear();
            return Err(format!("exceeded limit of {limit} with {active} alerts"));
        }
        Ok(())
    }

    /// The rule's state for the API: firing if any alert fires, else pending if any is
    /// pending, else inactive.
    pub fn state(&self) -> AlertState {
        let mut state = AlertState::Inactive;
        for a in self.alerts.values() {
            match a.state {
                AlertState::Firing => return AlertState::Firing,
                AlertState::Pending => state = AlertState::Pending,
                AlertState::Inactive => {}
            }
        }
        state
    }

    /// The `ALERTS` and `ALERTS_FOR_STATE` series of the active alerts: labels (with
    /// `__name__`) and value.
    pub fn series(&self) -> Vec<(LabelSet, f64)> {
        let mut out = Vec::new();
        for a in self.alerts.values() {
            if a.state == AlertState::Inactive {
                continue;
            }
            let mut labels = a.labels.clone();
            labels.insert("__name__".into(), "ALERTS_FOR_STATE".into());
            out.push((labels.clone(), (a.active_at / 1000) as f64));
            labels.insert("__name__".into(), "ALERTS".into());
            labels.insert("alertstate".into(), a.state.as_str().into());
            out.push((labels, 1.0));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rules::{RuleExpr, RuleType};

    fn rule(for_s: u64, keep_s: u64) -> Rule {
        Rule {
            name: "HighLatency".into(),
            rule_type: RuleType::Alerting,
            expr: RuleExpr::PromQL("x > 1".into()),
            for_: Duration::from_secs(for_s),
            keep_firing_for: Duration::from_secs(keep_s),
            labels: [("severity".to_string(), "page".to_string())].into(),
            annotations: [(
                "summary".to_string(),
                "{{ $labels.instance }} at {{ $value }}".to_string(),
            )]
            .into(),
            line: 1,
            expr_line: 1,
        }
    }

    fn hit(instance: &str, value: f64) -> Instance {
        Instance {
            labels: [
                ("__name__".to_string(), "x".to_string()),
                ("instance".to_string(), instance.to_string()),
            ]
            .into(),
            value,
        }
    }

    fn eval(s: &mut RuleAlerts, r: &Rule, results: &[Instance], ts: i64) {
        s.apply(r, &r.labels, results, ts, 0, &Context::default())
            .unwrap();
    }

    #[test]
    fn pending_then_firing_then_resolved_then_forgotten() {
        let r = rule(60, 0);
        let mut s = RuleAlerts::default();
        eval(&mut s, &r, &[hit("a", 2.0)], 0);
        let a = s.alerts.values().next().unwrap().clone();
        assert_eq!(a.state, AlertState::Pending);
        assert_eq!(a.labels["alertname"], "HighLatency");
        assert_eq!(a.labels["severity"], "page");
        assert!(!a.labels.contains_key("__name__"));
        assert_eq!(a.annotations["summary"], "a at 2");
        assert!(!a.needs_sending(0, 60_000));
        eval(&mut s, &r, &[hit("a", 3.0)], 30_000);
        assert_eq!(s.state(), AlertState::Pending);
        eval(&mut s, &r, &[hit("a", 4.0)], 60_000);
        let a = s.alerts.values().next().unwrap().clone();
        assert_eq!(a.state, AlertState::Firing);
        assert_eq!((a.active_at, a.fired_at), (0, Some(60_000)));
        assert_eq!(a.annotations["summary"], "a at 4");
        let series = s.series();
        assert_eq!(series.len(), 2);
        assert!(
            series.iter().any(|(l, v)| l["__name__"] == "ALERTS"
                && l["alertstate"] == "firing"
                && *v == 1.0)
        );
        eval(&mut s, &r, &[], 90_000);
        let a = s.alerts.values().next().unwrap().clone();
        assert_eq!(
            (a.state, a.resolved_at),
            (AlertState::Inactive, Some(90_000))
        );
        assert!(s.series().is_empty());
        eval(&mut s, &r, &[], 90_000 + RESOLVED_RETENTION_MS + 1);
        assert!(s.alerts.is_empty());
    }

    #[test]
    fn a_pending_alert_that_goes_away_is_dropped_and_a_returning_one_is_new() {
        let r = rule(60, 0);
        let mut s = RuleAlerts::default();
        eval(&mut s, &r, &[hit("a", 2.0)], 0);
        eval(&mut s, &r, &[], 10_000);
        assert!(s.alerts.is_empty());
        let r0 = rule(0, 0);
        eval(&mut s, &r0, &[hit("a", 2.0)], 20_000);
        assert_eq!(s.state(), AlertState::Firing, "for: 0 fires at once");
        eval(&mut s, &r0, &[], 30_000);
        eval(&mut s, &r0, &[hit("a", 2.0)], 40_000);
        let a = s.alerts.values().next().unwrap();
        assert_eq!(
            (a.state, a.active_at, a.resolved_at),
            (AlertState::Firing, 40_000, None)
        );
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert() {
        let r = rule(0, 60);
        let mut s = RuleAlerts::default();
        eval(&mut s, &r, &[hit("a", 2.0)], 0);
        eval(&mut s, &r, &[], 10_000);
        let a = s.alerts.values().next().unwrap();
        assert_eq!(
            (a.state, a.keep_firing_since),
            (AlertState::Firing, Some(10_000))
        );
        eval(&mut s, &r, &[], 69_999);
        assert_eq!(s.state(), AlertState::Firing);
        eval(&mut s, &r, &[], 70_000);
        assert_eq!(s.state(), AlertState::Inactive);
        // Back before the hold ran out: the hold resets.
        let mut s = RuleAlerts::default();
        eval(&mut s, &r, &[hit("a", 2.0)], 0);
        eval(&mut s, &r, &[], 10_000);
        eval(&mut s, &r, &[hit("a", 2.0)], 20_000);
        assert_eq!(s.alerts.values().next().unwrap().keep_firing_since, None);
    }

    #[test]
    fn sending_follows_prometheus() {
        let r = rule(0, 0);
        let mut s = RuleAlerts::default();
        eval(&mut s, &r, &[hit("a", 2.0)], 0);
        let a = s.alerts.values_mut().next().unwrap();
        assert!(a.needs_sending(0, 60_000));
        a.last_sent_at = Some(0);
        assert!(
            !a.needs_sending(60_000, 60_000),
            "strictly after the resend delay"
        );
        assert!(a.needs_sending(60_001, 60_000));
        eval(&mut s, &r, &[], 61_000);
        assert!(
            s.alerts
                .values()
                .next()
                .unwrap()
                .needs_sending(61_000, 60_000)
        );
    }

    #[test]
    fn duplicates_and_limits_are_errors() {
        let mut r = rule(0, 0);
        r.labels.insert("instance".into(), "same".into());
        let mut s = RuleAlerts::default();
        let err = s
            .apply(
                &r,
                &r.labels,
                &[hit("a", 1.0), hit("b", 1.0)],
                0,
                0,
                &Context::default(),
            )
            .unwrap_err();
        assert!(err.contains("same labelset"), "{err}");
        let r = rule(0, 0);
        let err = s
            .apply(
                &r,
                &r.labels,
                &[hit("a", 1.0), hit("b", 1.0)],
                0,
                1,
                &Context::default(),
            )
            .unwrap_err();
        assert!(err.contains("exceeded limit of 1 with 2 alerts"), "{err}");
        assert!(s.alerts.is_empty());
    }

    #[test]
    fn fingerprints_are_prometheus_fingerprints() {
        // model.LabelSet{}.Fingerprint() is the FNV-1a offset basis.
        assert_eq!(fingerprint(&LabelSet::new()), 14_695_981_039_346_656_037);
        // prometheus/common's TestMetricToFingerprint: two labels, hashed in name order.
        let two: LabelSet = [
            ("name".to_string(), "garland, briggs".to_string()),
            ("fear".to_string(), "love is not enough".to_string()),
        ]
        .into();
        assert_eq!(fingerprint(&two), 5_799_056_148_416_392_346);
        let one: LabelSet = [("a".to_string(), "b".to_string())].into();
        let other: LabelSet = [("a".to_string(), "c".to_string())].into();
        assert_ne!(fingerprint(&one), fingerprint(&other));
    }
}
