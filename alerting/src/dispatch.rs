//! Webhook notifications as Alertmanager builds them: alerts routed to receivers,
//! grouped by labels, the first notification of a group after `group_wait`, changes
//! after `group_interval`, unchanged firing groups repeated every `repeat_interval`,
//! in Alertmanager's webhook JSON (`version: "4"`).
//!
//! The dispatcher is plain data so the engine can save it with the alert state: after a
//! restart a group already notified is not notified again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{AlertingConfig, Webhook};
use crate::state::{LabelSet, fingerprint};

/// An alert as notifications carry it. Times are Unix ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyAlert {
    /// Labels (external labels included).
    pub labels: LabelSet,
    /// Annotations.
    pub annotations: LabelSet,
    /// When it started firing.
    pub starts_at: i64,
    /// When it resolved; `None` while it fires.
    pub ends_at: Option<i64>,
    /// A firing alert not refreshed by then is taken as resolved at that time (its rule
    /// was removed or stopped reporting it), as Alertmanager does with `endsAt`.
    #[serde(default)]
    pub valid_until: i64,
    /// Link to the expression.
    pub generator_url: String,
}

/// A group of alerts of one receiver.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct AggGroup {
    labels: LabelSet,
    created: i64,
    last_flush: Option<i64>,
    changed: bool,
    alerts: BTreeMap<u64, NotifyAlert>,
    /// Fingerprint → whether it was firing when last notified.
    notified: BTreeMap<u64, bool>,
}

/// All groups of all webhook receivers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dispatcher {
    groups: BTreeMap<String, BTreeMap<String, AggGroup>>,
}

/// A notification ready to queue: receiver name, one-line summary, JSON body.
pub type Ready = (String, String, String);

/// Formats Unix ms as RFC 3339 with nanosecond precision trimmed, as Go's JSON does.
pub fn go_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Formats Unix ms as RFC 3339 with milliseconds (Alertmanager's API v2).
pub fn millis_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn label_string(labels: &LabelSet) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

fn group_labels(w: &Webhook, labels: &LabelSet) -> LabelSet {
    match &w.group_by {
        None => labels.clone(),
        Some(names) => names
            .iter()
            .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
            .collect(),
    }
}

impl Dispatcher {
    /// Takes in the current version of an alert (firing or resolved).
    pub fn update(&mut self, config: &AlertingConfig, alert: &NotifyAlert, now: i64) {
        let fp = fingerprint(&alert.labels);
        for w in config.receivers_for(&alert.labels) {
            let labels = group_labels(w, &alert.labels);
            let key = label_string(&labels);
            let groups = self.groups.entry(w.name.clone()).or_default();
            if alert.ends_at.is_some() && !groups.contains_key(&key) {
                continue;
            }
            let group = groups.entry(key).or_insert_with(|| AggGroup {
                labels,
                created: now,
                ..AggGroup::default()
            });
            let firing = alert.ends_at.is_none();
            if !firing && !w.send_resolved {
                // Nothing to tell this receiver: forget the alert quietly.
                group.alerts.remove(&fp);
                continue;
            }
            match group.alerts.get(&fp) {
                Some(old) if (old.ends_at.is_none()) == firing => {}
                None if !firing => continue,
                _ => group.changed = true,
            }
            group.alerts.insert(fp, alert.clone());
        }
    }

    /// When the next group is due, Unix ms.
    pub fn next_due(&self, config: &AlertingConfig) -> Option<i64> {
        let mut due: Option<i64> = None;
        for (name, groups) in &self.groups {
            let Some(w) = config.webhooks.iter().find(|w| &w.name == name) else {
                continue;
            };
            for g in groups.values() {
                if let Some(t) = g.due(w) {
                    due = Some(due.map_or(t, |d| d.min(t)));
                }
            }
        }
        due
    }

    /// The notifications due at `now`; updates the groups as notified.
    pub fn flush(&mut self, config: &AlertingConfig, now: i64) -> Vec<Ready> {
        self.expire(now);
        let mut out = Vec::new();
        for (name, groups) in &mut self.groups {
            let Some(w) = config.webhooks.iter().find(|w| &w.name == name) else {
                groups.clear();
                continue;
            };
            groups.retain(|_, g| {
                if g.due(w).is_some_and(|t| t <= now)
                    && let Some(ready) = g.flush(w, config, now)
                {
                    out.push(ready);
                }
                !g.alerts.is_empty()
            });
        }
        self.groups.retain(|_, g| !g.is_empty());
        out
    }
}

impl Dispatcher {
    /// Resolves firing alerts whose `valid_until` has passed.
    fn expire(&mut self, now: i64) {
        for group in self.groups.values_mut().flat_map(|g| g.values_mut()) {
            for a in group.alerts.values_mut() {
                if a.ends_at.is_none() && a.valid_until > 0 && a.valid_until < now {
                    a.ends_at = Some(a.valid_until);
                    group.changed = true;
                }
            }
        }
    }
}

impl AggGroup {
    fn due(&self, w: &Webhook) -> Option<i64> {
        let ms = |d: std::time::Duration| d.as_millis() as i64;
        match self.last_flush {
            None => Some(self.created + ms(w.group_wait)),
            Some(last) if self.changed => Some(last + ms(w.group_interval)),
            Some(last) if self.alerts.values().any(|a| a.ends_at.is_none()) => {
                Some(last + ms(w.repeat_interval))
            }
            Some(_) => None,
        }
    }

    fn flush(&mut self, w: &Webhook, config: &AlertingConfig, now: i64) -> Option<Ready> {
        self.last_flush = Some(now);
        self.changed = false;
        // Resolved alerts are only news to a receiver that heard they fired.
        let shown: Vec<(u64, NotifyAlert)> = self
            .alerts
            .iter()
            .filter(|(fp, a)| {
                a.ends_at.is_none()
                    || (w.send_resolved && self.notified.get(fp).copied().unwrap_or(false))
            })
            .map(|(fp, a)| (*fp, a.clone()))
            .collect();
        let firing = shown.iter().filter(|(_, a)| a.ends_at.is_none()).count();
        self.notified = self
            .alerts
            .iter()
            .map(|(fp, a)| (*fp, a.ends_at.is_none()))
            .collect();
        self.alerts.retain(|_, a| a.ends_at.is_none());
        if shown.is_empty() {
            return None;
        }
        let status = if firing > 0 { "firing" } else { "resolved" };
        let alerts: Vec<Value> = shown
            .iter()
            .map(|(fp, a)| {
                json!({
                    "status": if a.ends_at.is_none() { "firing" } else { "resolved" },
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": go_time(a.starts_at),
                    // Alertmanager hides the end of an alert that has not ended.
                    "endsAt": a.ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), go_time),
                    "generatorURL": a.generator_url,
                    "fingerprint": format!("{fp:016x}"),
                })
            })
            .collect();
        let common = |pick: fn(&NotifyAlert) -> &LabelSet| -> LabelSet {
            let mut iter = shown.iter().map(|(_, a)| pick(a));
            let mut common = iter.next().cloned().unwrap_or_default();
            for other in iter {
                common.retain(|k, v| other.get(k) == Some(v));
            }
            common
        };
        let body = json!({
            "receiver": w.name,
            "status": status,
            "alerts": alerts,
            "groupLabels": self.labels,
            "commonLabels": common(|a| &a.labels),
            "commonAnnotations": common(|a| &a.annotations),
            "externalURL": config.external_url,
            "version": "4",
            "groupKey": format!("{{}}:{}", label_string(&self.labels)),
            "truncatedAlerts": 0,
        });
        let summary = format!(
            "{status} {} ({} firing, {} resolved)",
            label_string(&self.labels),
            firing,
            shown.len() - firing
        );
        Some((w.name.clone(), summary, body.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::{AlertingSection, WebhookSection};

    fn config() -> AlertingConfig {
        AlertingConfig::resolve(
            AlertingSection {
                webhook: vec![WebhookSection {
                    name: "hook".into(),
                    url: "http://127.0.0.1:1/".into(),
                    group_wait: Some("1s".into()),
                    group_interval: Some("5s".into()),
                    repeat_interval: Some("60s".into()),
                    ..Default::default()
                }],
                ..Default::default()
            },
            vec![],
            vec![],
            "http://periscope".into(),
            PathBuf::new(),
        )
        .unwrap()
    }

    fn alert(instance: &str, ends_at: Option<i64>) -> NotifyAlert {
        NotifyAlert {
            labels: [
                ("alertname".to_string(), "Down".to_string()),
                ("instance".to_string(), instance.to_string()),
            ]
            .into(),
            annotations: [("summary".to_string(), "down".to_string())].into(),
            starts_at: 0,
            ends_at,
            valid_until: 1_000_000,
            generator_url: "http://periscope/graph".into(),
        }
    }

    fn bodies(ready: &[Ready]) -> Vec<Value> {
        ready
            .iter()
            .map(|r| serde_json::from_str(&r.2).unwrap())
            .collect()
    }

    #[test]
    fn group_wait_interval_repeat_and_resolve() {
        let c = config();
        let mut d = Dispatcher::default();
        d.update(&c, &alert("a", None), 0);
        assert!(d.flush(&c, 999).is_empty(), "group_wait");
        d.update(&c, &alert("b", None), 500);
        let first = bodies(&d.flush(&c, 1000));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["status"], "firing");
        assert_eq!(first[0]["version"], "4");
        assert_eq!(first[0]["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(first[0]["groupLabels"], json!({"alertname": "Down"}));
        assert_eq!(first[0]["commonLabels"], json!({"alertname": "Down"}));
        assert_eq!(first[0]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(
            first[0]["alerts"][0]["fingerprint"].as_str().unwrap().len(),
            16
        );
        // Unchanged: nothing until the repeat interval.
        d.update(&c, &alert("a", None), 2000);
        assert!(d.flush(&c, 30_000).is_empty());
        assert_eq!(d.next_due(&c), Some(61_000));
        let repeat = bodies(&d.flush(&c, 61_000));
        assert_eq!(repeat.len(), 1);
        // A resolve is a change: notified group_interval after the last notification.
        d.update(&c, &alert("a", Some(62_000)), 62_000);
        assert_eq!(d.next_due(&c), Some(66_000));
        let resolved = bodies(&d.flush(&c, 66_000));
        assert_eq!(resolved[0]["status"], "firing", "b still fires");
        let statuses: Vec<&str> = resolved[0]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["resolved", "firing"]);
        d.update(&c, &alert("b", Some(67_000)), 67_000);
        let last = bodies(&d.flush(&c, 71_000));
        assert_eq!(last[0]["status"], "resolved");
        assert!(d.groups.is_empty(), "an empty group is dropped");
    }

    #[test]
    fn an_alert_no_longer_refreshed_resolves_at_its_valid_until() {
        let c = config();
        let mut d = Dispatcher::default();
        let a = NotifyAlert {
            valid_until: 50_000,
            ..alert("a", None)
        };
        d.update(&c, &a, 0);
        assert_eq!(d.flush(&c, 1000).len(), 1);
        // Nothing refreshes it (its rule was deleted): it resolves after valid_until.
        assert!(d.flush(&c, 49_000).is_empty());
        let resolved = bodies(&d.flush(&c, 50_001));
        assert_eq!(resolved[0]["status"], "resolved");
        assert_eq!(resolved[0]["alerts"][0]["endsAt"], go_time(50_000));
        assert!(d.groups.is_empty());
    }

    #[test]
    fn a_resolve_never_notified_as_firing_is_not_sent() {
        let c = config();
        let mut d = Dispatcher::default();
        d.update(&c, &alert("a", None), 0);
        d.update(&c, &alert("a", Some(500)), 500);
        assert!(d.flush(&c, 1000).is_empty());
        assert!(d.groups.is_empty());
        let mut c = c;
        c.webhooks[0].group_by = None;
        c.webhooks[0].group_wait = Duration::ZERO;
        d.update(&c, &alert("a", None), 0);
        d.update(&c, &alert("b", None), 0);
        assert_eq!(d.flush(&c, 0).len(), 2, "`...` groups each alert alone");
    }
}
