//! # periscope-alerting
//!
//! Alert rules over Periscope's data, alert state, and notifications:
//!
//! ```text
//! rule files (Prometheus format + sql:/logs:) ─► rules.rs (checked, line-accurate errors)
//!   ─► runtime.rs: GroupRuntime / RuleRuntime, the live state the engine owns
//!   ─► engine.rs: starts each group on its own ticks (schedule.rs: aligned, at most
//!        MAX_EVALUATING at once, a still-running group skips and counts its ticks)
//!        ─► evaluation.rs: one task per group evaluation, its rules in order:
//!             source.rs (PromQL / SQL / log count) ─► state.rs (pending → firing → resolved)
//!             ─► ALERTS, ALERTS_FOR_STATE, recorded series ─► series.rs SeriesSink
//!             ─► Alertmanager payloads (Prometheus's resend rules)
//!        ◄─ Evaluated (the group's new state), taken in by the engine alone
//!        ─► dispatch.rs (webhook groups: group_wait / group_interval / repeat_interval)
//!   ─► outbox.rs: notifications + state in one fsynced append, on a blocking thread,
//!        one commit at a time, in order
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
mod evaluation;
mod matcher;
mod metrics;
mod outbox;
pub mod rules;
mod runtime;
mod schedule;
mod series;
mod source;
pub mod state;
pub mod template;
mod yaml;

pub use api::{router, value_text};
pub use config::{AlertingConfig, AlertingSection};
pub use deliver::{DELIVERY_HEADER, SIGNATURE_HEADER, signature};
pub use dispatch::go_time;
pub use engine::{Alerting, load};
pub use error::AlertingError;
pub use metrics::AlertingMetrics;
pub use outbox::{Notification, Outcome};
pub use runtime::{GroupRuntime, Health, RuleRuntime, View};
pub use series::{STALE_NAN, SeriesSample, SeriesSink};
pub use source::Sources;

#[cfg(test)]
mod fuzz_tests;
