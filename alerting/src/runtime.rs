//! The live state of rule groups and rules: what the API shows, what the journal saves,
//! and how an evaluation's result is taken back in.
//!
//! The engine owns one [`GroupRuntime`] per group. An evaluation works on its own copy
//! of its group and hands it back; [`absorb`] puts its rules' state back by rule key, so
//! a reload that happened meanwhile keeps what the evaluation found for the rules it
//! kept (as if the evaluation had ended just before the reload).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::AlertingConfig;
use crate::rules::{Group, Rule};
use crate::schedule::Schedule;
use crate::state::{LabelSet, RuleAlerts};

/// Health of a rule's last evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// Evaluated without error.
    Ok,
    /// The last evaluation failed.
    Err,
}

/// A rule and its live state.
#[derive(Debug, Clone)]
pub struct RuleRuntime {
    /// The rule as written.
    pub rule: Rule,
    /// Its labels merged over its group's.
    pub labels: LabelSet,
    /// Its alerts (alerting rules).
    pub alerts: RuleAlerts,
    /// Last evaluation's health.
    pub health: Health,
    /// Last evaluation's error.
    pub last_error: Option<String>,
    /// When it was last evaluated, Unix ms.
    pub last_evaluation: Option<i64>,
    /// How long that took.
    pub evaluation_time: Duration,
    /// Identifies the rule across reloads and restarts.
    pub(crate) key: String,
    /// Series it wrote last time, to mark the ones that go away stale.
    pub(crate) last_series: BTreeSet<LabelSet>,
}

/// A group and its live state.
#[derive(Debug, Clone)]
pub struct GroupRuntime {
    /// The group as written.
    pub group: Group,
    /// Its interval (its own or the default).
    pub interval: Duration,
    /// Its rules.
    pub rules: Vec<RuleRuntime>,
    /// When it was last evaluated, Unix ms.
    pub last_evaluation: Option<i64>,
    /// How long that took.
    pub evaluation_time: Duration,
    /// Its ticks.
    pub(crate) schedule: Schedule,
}

/// What identifies a group across reloads: its file and name.
pub(crate) type GroupId = (PathBuf, String);

impl GroupRuntime {
    /// Its file and name.
    pub(crate) fn id(&self) -> GroupId {
        (self.group.file.clone(), self.group.name.clone())
    }

    /// `rule_group` label value of its metrics: `file;name`, as Prometheus writes it.
    pub(crate) fn metric_name(&self) -> String {
        format!("{};{}", self.group.file.display(), self.group.name)
    }
}

/// What the API shows: the groups as of the last evaluation, and the last reload error.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Groups in file, then name order.
    pub groups: Vec<GroupRuntime>,
}

/// What a rule carries over a reload: its alerts and the series it wrote last.
pub(crate) type Carried = BTreeMap<String, (RuleAlerts, BTreeSet<LabelSet>)>;

/// The keys of a group's rules: file, group, name and labels, and which of the rules
/// with those is meant (as Prometheus carries state over a reload), so editing an
/// expression keeps the rule's alerts.
fn rule_keys(g: &Group) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    g.rules
        .iter()
        .map(|r| {
            let base = format!(
                "{}\u{0}{}\u{0}{}\u{0}{:?}",
                g.file.display(),
                g.name,
                r.name,
                r.labels
            );
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            format!("{base}\u{0}{n}")
        })
        .collect()
}

/// The runtimes of `groups`, first due at `now`; each rule takes its state out of
/// `states` (what is left there belongs to rules that are gone).
pub(crate) fn build(
    groups: Vec<Group>,
    config: &AlertingConfig,
    states: &mut Carried,
    now: i64,
) -> Vec<GroupRuntime> {
    let mut out: Vec<GroupRuntime> = groups
        .into_iter()
        .map(|group| {
            let interval = group.interval.unwrap_or(config.evaluation_interval);
            let rules = group
                .rules
                .iter()
                .zip(rule_keys(&group))
                .map(|(rule, key)| {
                    let mut labels = group.labels.clone();
                    labels.extend(rule.labels.clone());
                    let (alerts, last_series) = states.remove(&key).unwrap_or_default();
                    RuleRuntime {
                        alerts,
                        last_series,
                        key,
                        rule: rule.clone(),
                        labels,
                        health: Health::Unknown,
                        last_error: None,
                        last_evaluation: None,
                        evaluation_time: Duration::ZERO,
                    }
                })
                .collect();
            GroupRuntime {
                interval,
                rules,
                last_evaluation: None,
                evaluation_time: Duration::ZERO,
                schedule: Schedule::new(now, interval),
                group,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.group.file, &a.group.name).cmp(&(&b.group.file, &b.group.name)));
    out
}

/// Takes back an evaluated copy of a group: every rule of `done` whose key is still in
/// `groups` gets the state the evaluation left (its definition stays the current one),
/// and the group of the same file and name its evaluation time.
///
/// Returns the series last written by the rules that are gone (a reload removed them
/// while they were being evaluated), which the caller marks stale.
pub(crate) fn absorb(groups: &mut [GroupRuntime], done: GroupRuntime) -> Vec<LabelSet> {
    let id = done.id();
    if let Some(g) = groups.iter_mut().find(|g| g.id() == id) {
        g.last_evaluation = done.last_evaluation;
        g.evaluation_time = done.evaluation_time;
    }
    let mut gone = Vec::new();
    for r in done.rules {
        let current = groups
            .iter_mut()
            .flat_map(|g| g.rules.iter_mut())
            .find(|c| c.key == r.key);
        match current {
            Some(c) => {
                c.alerts = r.alerts;
                c.last_series = r.last_series;
                c.health = r.health;
                c.last_error = r.last_error;
                c.last_evaluation = r.last_evaluation;
                c.evaluation_time = r.evaluation_time;
            }
            None => gone.extend(r.last_series),
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::AlertingSection;

    fn groups(text: &str) -> Vec<GroupRuntime> {
        let config = AlertingConfig::resolve(
            AlertingSection::default(),
            vec![],
            vec![],
            "http://periscope".into(),
            PathBuf::new(),
        )
        .expect("the default config resolves");
        let parsed = crate::rules::parse_file(Path::new("r.yml"), text).expect("rules parse");
        build(parsed, &config, &mut Carried::new(), 0)
    }

    #[test]
    fn an_evaluation_ended_after_a_reload_updates_the_rules_the_reload_kept() {
        let before = groups(
            "groups:\n- name: g\n  rules:\n  - record: kept\n    expr: vector(1)\n  - record: removed\n    expr: vector(2)\n",
        );
        let mut done = before[0].clone();
        done.last_evaluation = Some(1000);
        for r in &mut done.rules {
            r.health = Health::Ok;
            r.last_evaluation = Some(1000);
            r.last_series = [LabelSet::from([("__name__".into(), r.rule.name.clone())])].into();
        }
        // The reload edited `kept`'s expression and removed `removed`.
        let mut after =
            groups("groups:\n- name: g\n  rules:\n  - record: kept\n    expr: vector(3)\n");
        let gone = absorb(&mut after, done);
        let kept = &after[0].rules[0];
        assert_eq!(kept.health, Health::Ok);
        assert_eq!(kept.last_evaluation, Some(1000));
        assert_eq!(after[0].last_evaluation, Some(1000));
        assert!(
            matches!(&kept.rule.expr, crate::rules::RuleExpr::PromQL(e) if e == "vector(3)"),
            "the definition stays the reloaded one: {:?}",
            kept.rule.expr
        );
        assert_eq!(
            gone,
            [LabelSet::from([("__name__".into(), "removed".into())])]
        );
    }
}
