//! W3C trace context: ids, the `traceparent`/`tracestate` headers, and the context of
//! the request being served (a task-local set by the server layer and a thread-local
//! stack kept by the `tracing` layer).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;

use rand::RngCore;

use crate::telemetry::Telemetry;

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";

/// The position of a span in a trace, as carried between processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id (never all zero).
    pub trace_id: [u8; 16],
    /// 8-byte id of the span this context names (never all zero).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
    /// The `tracestate` header, passed on unchanged.
    pub trace_state: Option<Arc<str>>,
}

impl TraceContext {
    /// A context for a new root span: fresh trace and span ids, sampled.
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            flags: 1,
            trace_state: None,
        }
    }

    /// A context for a child span of this one: same trace, new span id.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: new_span_id(),
            flags: self.flags,
            trace_state: self.trace_state.clone(),
        }
    }

    /// Parses a `traceparent` header (version 00, or a later version read as 00, as the
    /// W3C recommendation says) and an optional `tracestate`. `None` when invalid.
    pub fn from_headers(traceparent: &[u8], tracestate: Option<&[u8]>) -> Option<TraceContext> {
        // version "-" trace-id "-" parent-id "-" flags
        if traceparent.len() < 55 {
            return None;
        }
        let version = hex_byte(&traceparent[0..2])?;
        if version == 0xff || (version == 0 && traceparent.len() != 55) {
            return None;
        }
        if version != 0 && traceparent.len() > 55 && traceparent[55] != b'-' {
            return None;
        }
        if traceparent[2] != b'-' || traceparent[35] != b'-' || traceparent[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&traceparent[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, b) in span_id.iter_mut().enumerate() {
            *b = hex_byte(&traceparent[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&traceparent[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let trace_state = tracestate
            .and_then(|s| std::str::from_utf8(s).ok())
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 512)
            .map(Arc::from);
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
            trace_state,
        })
    }

    /// The `traceparent` header value naming this context.
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        let _ = write!(s, "-{:02x}", self.flags);
        s
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        push_hex(&mut s, &self.trace_id);
        s
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None, // the W3C format is lowercase only
        }
    }
    Some(nibble(pair[0])? << 4 | nibble(pair[1])?)
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
}

/// A random, non-zero trace id.
pub fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    while id == [0; 16] {
        rand::rng().fill_bytes(&mut id);
    }
    id
}

/// A random, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        rand::rng().fill_bytes(&mut id);
    }
    id
}

/// The context of the request a task is serving, with the telemetry it reports to.
#[derive(Clone)]
pub struct Current {
    /// The span to parent new spans on.
    pub context: TraceContext,
    /// Where spans and logs made in this context go.
    pub telemetry: Telemetry,
}

tokio::task_local! {
    static TASK_CURRENT: Current;
}

thread_local! {
    /// Spans of the `tracing` layer entered on this thread, innermost last.
    static ENTERED: RefCell<Vec<Current>> = const { RefCell::new(Vec::new()) };
}

/// Runs `fut` with `current` as the context of the task (what [`current`] returns inside
/// it, unless a `tracing` span is entered).
pub async fn scope<F: Future>(current: Current, fut: F) -> F::Output {
    TASK_CURRENT.scope(current, fut).await
}

/// Runs `f` with `current` as the context of the task (for work a service does inside
/// `call` before returning its future).
pub fn sync_scope<R>(current: Current, f: impl FnOnce() -> R) -> R {
    TASK_CURRENT.sync_scope(current, f)
}

/// The innermost context: an entered `tracing` span exported by the agent, else the
/// request the task is serving, else `None`.
pub fn current() -> Option<Current> {
    if let Some(c) = ENTERED.with(|e| e.borrow().last().cloned()) {
        return Some(c);
    }
    TASK_CURRENT.try_with(Clone::clone).ok()
}

/// Pushes the context of an entered `tracing` span.
pub(crate) fn push_entered(current: Current) {
    ENTERED.with(|e| e.borrow_mut().push(current));
}

/// Pops the context of an exited `tracing` span (the innermost with that span id: exits
/// may come out of order when futures interleave on a thread).
pub(crate) fn pop_entered(span_id: [u8; 8]) {
    ENTERED.with(|e| {
        let mut e = e.borrow_mut();
        if let Some(i) = e.iter().rposition(|c| c.context.span_id == span_id) {
            e.remove(i);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::from_headers(tp, Some(b"congo=t61rcWkgMzE")).expect("valid");
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.flags, 1);
        assert_eq!(c.traceparent().as_bytes(), tp);
        assert_eq!(c.trace_state.as_deref(), Some("congo=t61rcWkgMzE"));
        let child = c.child();
        assert_eq!(child.trace_id, c.trace_id);
        assert_ne!(child.span_id, c.span_id);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            b"garbage",
        ] {
            assert!(TraceContext::from_headers(bad, None).is_none(), "{bad:?}");
        }
        // A future version may append fields after a dash.
        let future = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what";
        assert!(TraceContext::from_headers(future, None).is_some());
    }
}
