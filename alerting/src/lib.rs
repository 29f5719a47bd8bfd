//! # periscope-alerting
//!
//! Alert rules over Periscope's data, alert state, and notifications:
//!
//! ```text
//! rule files (Prometheus format + sql:/logs:) ─► rules.rs (checked, line-accurate errors)
//!   ─► engine.rs: every group interval, per rule
//!        source.rs (PromQL / SQL / log count) ─► state.rs (pending → firing → resolved)
//!        ─► ALERTS, ALERTS_FOR_STATE, recorded series ─► SeriesSink (stored as metrics)
//!        ─► Alertmanager payloads (Prometheus's resend rules)
//!        ─► dispatch.rs (webhook groups: group_wait / group_interval / repeat_interval)
//!   ─► outbox.rs: notifications + state in one fsynced append
//!   ─► deliver.rs: one worker per receiver, in order, retries with backoff, dead letters
//! api.rs: /api/v1/rules, /api/v1/alerts, /api/v1/rules/reload, /api/v1/notifications
//! ```
//!
//! Semantics follow Prometheus's rule manager and the Alert Generator Compliance
//! Specification; webhook bodies are Alertmanager's webhook JSON (version 4).

mod api;
pub mod config;
mod deliver;
mod dispatch;
mod engine;
mod error;
mod matcher;
mod metrics;
mod outbox;
pub mod rules;
mod source;
pub mod state;
pub mod template;
mod yaml;

pub use api::{router, value_text};
pub use config::{AlertingConfig, AlertingSection};
pub use deliver::{DELIVERY_HEADER, SIGNATURE_HEADER, signature};
pub use dispatch::go_time;
pub use engine::{
    Alerting, GroupRuntime, Health, RuleRuntime, STALE_NAN, SeriesSample, SeriesSink, View, load,
};
pub use error::AlertingError;
pub use metrics::AlertingMetrics;
pub use outbox::{Notification, Outcome};
pub use source::Sources;

#[cfg(test)]
mod fuzz_tests;
