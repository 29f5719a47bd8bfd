//! A `tracing` subscriber layer that exports a Rust service's `tracing` spans as OTLP
//! spans and its events as OTLP logs, through the same exporter as the HTTP layers.
//!
//! Spans join the trace of the request being served (the context the
//! [`crate::ServerLayer`] set) or of their `tracing` parent; outside any request they
//! start a new trace when a default [`Telemetry`] is given, and are ignored otherwise.
//! Special fields, as in `tracing-opentelemetry`: `otel.name`, `otel.kind`
//! (`client`, `server`, `producer`, `consumer`, `internal`), `otel.status_code`
//! (`ok`, `error`), `otel.status_message`. Events from the HTTP stack's own crates
//! (`hyper`, `h2`, `tonic`, `tower`) and from the agent itself are not exported.

use std::fmt::Debug;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status::StatusCode};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::context::{self, Current, TraceContext};
use crate::export::{Scope, now_ns};
use crate::semconv::{kv, kv_bool, kv_f64, kv_i64};
use crate::telemetry::Telemetry;

/// Targets whose events are never exported (the HTTP stack and the agent itself).
const QUIET_TARGETS: [&str; 5] = ["periscope_agent", "hyper", "h2", "tonic", "tower"];

/// The `tracing` layer. Add it to a `tracing_subscriber::registry()`.
#[derive(Debug, Clone, Default)]
pub struct TracingLayer {
    default: Option<Telemetry>,
}

impl TracingLayer {
    /// A layer exporting only spans and events made while a request is being served by a
    /// [`crate::ServerLayer`] (or inside [`crate::context::scope`]).
    pub fn new() -> TracingLayer {
        TracingLayer { default: None }
    }

    /// A layer that also exports spans and events made outside any request, to
    /// `telemetry`.
    pub fn with_default(telemetry: Telemetry) -> TracingLayer {
        TracingLayer {
            default: Some(telemetry),
        }
    }
}

/// What the layer keeps for an open span.
struct SpanState {
    current: Current,
    parent: Option<[u8; 8]>,
    start_ns: u64,
    name: String,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    error: bool,
    status_message: String,
}

/// Collects a span's or event's fields as attributes, picking out the special ones.
#[derive(Default)]
struct Fields {
    attributes: Vec<KeyValue>,
    message: Option<String>,
    name: Option<String>,
    kind: Option<SpanKind>,
    error: Option<bool>,
    status_message: Option<String>,
}

impl Fields {
    fn special(&mut self, field: &Field, value: &str) -> bool {
        match field.name() {
            "message" => self.message = Some(value.to_owned()),
            "otel.name" => self.name = Some(value.to_owned()),
            "otel.kind" => {
                self.kind = Some(match value.to_ascii_lowercase().as_str() {
                    "client" => SpanKind::Client,
                    "server" => SpanKind::Server,
                    "producer" => SpanKind::Producer,
                    "consumer" => SpanKind::Consumer,
                    _ => SpanKind::Internal,
                })
            }
            "otel.status_code" => self.error = Some(value.eq_ignore_ascii_case("error")),
            "otel.status_message" => self.status_message = Some(value.to_owned()),
            _ => return false,
        }
        true
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.special(field, value) {
            self.attributes.push(kv(field.name(), value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let text = format!("{value:?}");
        if !self.special(field, &text) {
            self.attributes.push(kv(field.name(), text));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attributes.push(kv_i64(field.name(), value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.attributes.push(kv_i64(
            field.name(),
            i64::try_from(value).unwrap_or(i64::MAX),
        ));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attributes.push(kv_f64(field.name(), value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attributes.push(kv_bool(field.name(), value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.error = Some(true);
        self.attributes.push(kv(field.name(), value.to_string()));
    }
}

fn severity(level: &Level) -> (SeverityNumber, &'static str) {
    match *level {
        Level::TRACE => (SeverityNumber::Trace, "TRACE"),
        Level::DEBUG => (SeverityNumber::Debug, "DEBUG"),
        Level::INFO => (SeverityNumber::Info, "INFO"),
        Level::WARN => (SeverityNumber::Warn, "WARN"),
        _ => (SeverityNumber::Error, "ERROR"),
    }
}

impl TracingLayer {
    /// The context a new span or an event belongs to: its `tracing` parent's, else the
    /// request's, else the default telemetry's (with no parent).
    fn parent_of<S>(
        &self,
        parent: Option<tracing_subscriber::registry::SpanRef<'_, S>>,
    ) -> Option<(Current, bool)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if let Some(p) = parent
            && let Some(state) = p.extensions().get::<SpanState>()
        {
            return Some((state.current.clone(), true));
        }
        if let Some(c) = context::current() {
            return Some((c, true));
        }
        self.default.as_ref().map(|t| {
            (
                Current {
                    context: TraceContext::new_root(),
                    telemetry: t.clone(),
                },
                false,
            )
        })
    }
}

impl<S> tracing_subscriber::Layer<S> for TracingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some((parent, has_parent)) = self.parent_of(span.parent()) else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let context = if has_parent {
            parent.context.child()
        } else {
            parent.context.clone()
        };
        let meta = attrs.metadata();
        fields.attributes.push(kv("code.namespace", meta.target()));
        let state = SpanState {
            current: Current {
                context,
                telemetry: parent.telemetry.clone(),
            },
            parent: has_parent.then_some(parent.context.span_id),
            start_ns: now_ns(),
            name: fields.name.unwrap_or_else(|| meta.name().to_owned()),
            kind: fields.kind.unwrap_or(SpanKind::Internal),
            attributes: fields.attributes,
            error: fields.error.unwrap_or(false),
            status_message: fields.status_message.unwrap_or_default(),
        };
        span.extensions_mut().insert(state);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(state) = ext.get_mut::<SpanState>() else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        state.attributes.extend(fields.attributes);
        if let Some(n) = fields.name {
            state.name = n;
        }
        if let Some(k) = fields.kind {
            state.kind = k;
        }
        if let Some(e) = fields.error {
            state.error = e;
        }
        if let Some(m) = fields.status_message {
            state.status_message = m;
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(state) = span.extensions().get::<SpanState>()
        {
            context::push_entered(state.current.clone());
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(state) = span.extensions().get::<SpanState>()
        {
            context::pop_entered(state.current.context.span_id);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if QUIET_TARGETS.iter().any(|t| meta.target().starts_with(t)) {
            return;
        }
        let Some((current, in_trace)) = self.parent_of(ctx.event_span(event)) else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (number, text) = severity(meta.level());
        let now = now_ns();
        let mut attributes = fields.attributes;
        attributes.push(kv("code.namespace", meta.target()));
        let c = &current.context;
        current.telemetry.record_log(
            Scope::Tracing,
            LogRecord {
                time_unix_nano: now,
                observed_time_unix_nano: now,
                severity_number: number as i32,
                severity_text: text.into(),
                body: Some(AnyValue {
                    value: Some(Value::StringValue(fields.message.unwrap_or_default())),
                }),
                attributes,
                flags: if in_trace { u32::from(c.flags) } else { 0 },
                trace_id: if in_trace {
                    c.trace_id.to_vec()
                } else {
                    Vec::new()
                },
                span_id: if in_trace {
                    c.span_id.to_vec()
                } else {
                    Vec::new()
                },
                ..Default::default()
            },
        );
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(state) = span.extensions_mut().remove::<SpanState>() else {
            return;
        };
        let c = &state.current.context;
        state.current.telemetry.record_span(
            Scope::Tracing,
            Span {
                trace_id: c.trace_id.to_vec(),
                span_id: c.span_id.to_vec(),
                parent_span_id: state.parent.map(|p| p.to_vec()).unwrap_or_default(),
                flags: 0x100 | u32::from(c.flags),
                name: state.name,
                kind: state.kind as i32,
                start_time_unix_nano: state.start_ns,
                end_time_unix_nano: now_ns(),
                attributes: state.attributes,
                status: Some(Status {
                    code: if state.error {
                        StatusCode::Error as i32
                    } else {
                        StatusCode::Unset as i32
                    },
                    message: state.status_message,
                }),
                ..Default::default()
            },
        );
    }
}
