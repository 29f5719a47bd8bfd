//! The alerting engine's own metrics, exported on `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set such as `{outcome="ok"}`.
pub type OutcomeLabels = Vec<(&'static str, &'static str)>;

/// Label set `{rule_group="<file>;<group>"}`, as Prometheus names a group.
pub type GroupLabels = Vec<(&'static str, String)>;

/// Rule evaluations, group ticks skipped, and notification deliveries.
#[derive(Debug, Clone, Default)]
pub struct AlertingMetrics {
    pub(crate) evaluations: Family<OutcomeLabels, Counter>,
    pub(crate) iterations_missed: Family<GroupLabels, Counter>,
    pub(crate) notifications: Family<OutcomeLabels, Counter>,
    pub(crate) queued: Gauge,
}

impl AlertingMetrics {
    /// Registers every metric under the `periscope_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "periscope_alert_rule_evaluations",
            "Rule evaluations, by outcome (ok, err)",
            self.evaluations.clone(),
        );
        registry.register(
            "periscope_alert_rule_group_iterations_missed",
            "Group evaluations skipped because the group was still evaluating (or waiting for a free evaluation slot) past its next tick, by rule_group (file;group)",
            self.iterations_missed.clone(),
        );
        registry.register(
            "periscope_alert_notifications",
            "Notification attempts, by outcome (delivered, retried, dead)",
            self.notifications.clone(),
        );
        registry.register(
            "periscope_alert_notifications_queued",
            "Notifications waiting in the outbox",
            self.queued.clone(),
        );
    }

    pub(crate) fn evaluated(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "err" };
        self.evaluations
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    pub(crate) fn missed(&self, rule_group: String, ticks: u64) {
        self.iterations_missed
            .get_or_create(&vec![("rule_group", rule_group)])
            .inc_by(ticks);
    }

    pub(crate) fn notified(&self, outcome: &'static str) {
        self.notifications
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }
}
