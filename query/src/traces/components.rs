//! The MSA component inventory: gateways, mesh proxies and services with their instances,
//! derived from the resource attributes of all three signals, with RED from spans and the
//! databases, queues and external hosts seen as peers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::error::TraceError;
use super::fetch::{Window, int_at, rows, str_at};
use super::graph::{Graph, NodeKind};
use super::red::Red;
use crate::engine::QueryEngine;
use crate::json::rfc3339_text as rfc3339;

/// One running copy of a component.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Instance {
    /// `service.instance.id` (or `host.name` when absent; empty when neither is set).
    pub instance_id: String,
    /// `service.version`.
    pub version: Option<String>,
    /// `host.name`.
    pub host: Option<String>,
    /// Latest item received from it, Unix ns.
    pub last_seen: i64,
    /// Signals it sent (`spans`, `logs`, `metrics`).
    pub signals: BTreeSet<&'static str>,
}

/// A gateway, mesh proxy or service.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// `service.name`.
    pub name: String,
    /// `gateway`, `mesh-proxy` or `service`.
    pub kind: NodeKind,
    /// Instances by id.
    pub instances: BTreeMap<String, Instance>,
}

/// Reads the inventory rows of `window` from the three tables.
pub async fn inventory(
    engine: &QueryEngine,
    window: Window,
) -> Result<BTreeMap<String, Component>, TraceError> {
    let mut out: BTreeMap<String, Component> = BTreeMap::new();
    for (table, time) in [
        ("spans", "start_time"),
        ("logs", "timestamp"),
        ("metrics", "timestamp"),
    ] {
        let sql = format!(
            "SELECT service_name, \
               resource_attributes['periscope.component.kind'] AS kind, \
               resource_attributes['service.instance.id'] AS instance, \
               resource_attributes['service.version'] AS version, \
               resource_attributes['host.name'] AS host, \
               max({time}) AS last_seen \
             FROM {table} WHERE {}{} GROUP BY 1, 2, 3, 4, 5",
            window.sql(time),
            // Series remote-written without a `job` (Periscope's own ALERTS and recorded
            // series among them) come from no component.
            if table == "metrics" {
                format!(
                    " AND NOT (scope_name = '{}' AND resource_attributes['service.name'] IS NULL)",
                    periscope_otlp::PROMETHEUS_SCOPE
                )
            } else {
                String::new()
            }
        );
        for b in rows(engine, &sql).await? {
            for row in 0..b.num_rows() {
                let name = str_at(&b, "service_name", row).unwrap_or_default();
                let kind = str_at(&b, "kind", row);
                let host = str_at(&b, "host", row);
                let instance_id = str_at(&b, "instance", row)
                    .or_else(|| host.clone())
                    .unwrap_or_default();
                let component = out.entry(name.clone()).or_insert_with(|| Component {
                    name,
                    kind: NodeKind::Service,
                    instances: BTreeMap::new(),
                });
                if let Some(k) = kind {
                    component.kind = NodeKind::from_component(&k);
                }
                let inst = component
                    .instances
                    .entry(instance_id.clone())
                    .or_insert_with(|| Instance {
                        instance_id,
                        ..Instance::default()
                    });
                let last = int_at(&b, "last_seen", row).unwrap_or(0);
                if last >= inst.last_seen {
                    inst.last_seen = last;
                    if let Some(v) = str_at(&b, "version", row) {
                        inst.version = Some(v);
                    }
                    if host.is_some() {
                        inst.host = host;
                    }
                }
                inst.signals.insert(table);
            }
        }
    }
    Ok(out)
}

/// The JSON answer of `/api/v1/components`.
pub fn json(
    window: Window,
    components: &BTreeMap<String, Component>,
    red: &[Red],
    graph: &Graph,
) -> Value {
    let empty = Red {
        service: String::new(),
        operation: None,
        span_kind: None,
        requests: 0,
        errors: 0,
        p50: None,
        p95: None,
        p99: None,
    };
    let list: Vec<Value> = components
        .values()
        .map(|c| {
            let r = red.iter().find(|r| r.service == c.name).unwrap_or(&empty);
            let mut red = r.json(window);
            if let Some(o) = red.as_object_mut() {
                o.remove("service_name");
            }
            let instances: Vec<Value> = c
                .instances
                .values()
                .map(|i| {
                    json!({
                        "instance_id": i.instance_id,
                        "version": i.version,
                        "host": i.host,
                        "last_seen": rfc3339(i.last_seen),
                        "signals": i.signals,
                    })
                })
                .collect();
            let last_seen = c.instances.values().map(|i| i.last_seen).max().unwrap_or(0);
            json!({
                "kind": c.kind.as_str(),
                "name": c.name,
                "instance_count": instances.len(),
                "instances": instances,
                "last_seen": rfc3339(last_seen),
                "red": red,
            })
        })
        .collect();
    let peers: Vec<Value> = graph
        .nodes
        .iter()
        .filter(|n| {
            matches!(
                n.kind,
                NodeKind::Database | NodeKind::Messaging | NodeKind::External
            )
        })
        .map(|n| {
            let mut callers: Vec<&str> = graph
                .edges
                .iter()
                .filter(|e| e.target == n.id)
                .map(|e| e.source.as_str())
                .collect();
            callers.dedup();
            let consumers: Vec<&str> = graph
                .edges
                .iter()
                .filter(|e| e.source == n.id)
                .map(|e| e.target.as_str())
                .collect();
            json!({
                "id": n.id,
                "kind": n.kind.as_str(),
                "name": n.name,
                "system": n.system,
                "callers": callers,
                "consumers": consumers,
                "requests": n.requests.calls,
                "errors": n.requests.errors,
            })
        })
        .collect();
    json!({
        "start": rfc3339(window.start),
        "end": rfc3339(window.end - 1),
        "components": list,
        "peers": peers,
    })
}
