//! The graph as the JSON answer of `/api/v1/service-graph`.

use serde_json::{Value, json};

use super::Graph;
use super::tally::Tally;

fn ms(ns: Option<i64>) -> Value {
    ns.map_or(Value::Null, |n| json!(n as f64 / 1e6))
}

fn tally_json(t: &Tally, seconds: f64) -> Value {
    json!({
        "requests": t.calls,
        "errors": t.errors,
        "request_rate": t.calls as f64 / seconds,
        "error_rate": if t.calls == 0 { 0.0 } else { t.errors as f64 / t.calls as f64 },
        "p50_ms": ms(t.quantile(0.5)),
        "p95_ms": ms(t.quantile(0.95)),
        "p99_ms": ms(t.quantile(0.99)),
    })
}

impl Graph {
    /// The JSON answer of `/api/v1/service-graph`.
    pub fn json(&self) -> Value {
        let seconds = self.window.seconds();
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| {
                let mut v = tally_json(&n.requests, seconds);
                if let Some(o) = v.as_object_mut() {
                    o.insert("id".into(), json!(n.id));
                    o.insert("name".into(), json!(n.name));
                    o.insert("kind".into(), json!(n.kind.as_str()));
                    o.insert("system".into(), json!(n.system));
                    o.insert("is_peer".into(), json!(n.kind.is_peer()));
                }
                v
            })
            .collect();
        let edges: Vec<Value> = self
            .edges
            .iter()
            .map(|e| {
                json!({
                    "source": e.source,
                    "target": e.target,
                    "calls": e.tally.calls,
                    "errors": e.tally.errors,
                    "call_rate": e.tally.calls as f64 / seconds,
                    "error_rate": if e.tally.calls == 0 { 0.0 } else { e.tally.errors as f64 / e.tally.calls as f64 },
                    "p50_ms": ms(e.tally.quantile(0.5)),
                    "p99_ms": ms(e.tally.quantile(0.99)),
                })
            })
            .collect();
        json!({ "nodes": nodes, "edges": edges })
    }
}
