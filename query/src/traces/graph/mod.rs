//! The service dependency graph of a time window, computed from spans.
//!
//! Edges come from
//! - a parent and child span in different services: `parent service → child service`,
//!   with the child's duration as latency (the callee's view, as Tempo's server latency);
//! - a client or producer span to a peer that exports nothing: a database (`db.system`),
//!   a queue or topic (`messaging.system`, `messaging.destination.name`), or an external
//!   host (`peer.service`, `server.address`) when no span of another service is its child;
//! - messaging: `producer service → queue` for each producer span and `queue → consumer
//!   service` for each consumer span below it (or carrying the same messaging attributes).
//!
//! Node kinds come from the `periscope.component.kind` resource attribute (`gateway`,
//! `mesh-proxy`, `service`) or from the peer type (`database`, `messaging`, `external`).

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray, Int64Array, MapArray, RecordBatch, StringArray};
use serde_json::{Value, json};

use super::error::TraceError;
use super::fetch::{Window, rows, str_at};
use crate::engine::QueryEngine;

/// What a node of the map is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    /// An instrumented service.
    Service,
    /// An API gateway.
    Gateway,
    /// A service-mesh proxy.
    MeshProxy,
    /// A database seen by its clients.
    Database,
    /// A queue or topic seen by producers and consumers.
    Messaging,
    /// A host outside the instrumented system.
    External,
}

impl NodeKind {
    /// The name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Service => "service",
            NodeKind::Gateway => "gateway",
            NodeKind::MeshProxy => "mesh-proxy",
            NodeKind::Database => "database",
            NodeKind::Messaging => "messaging",
            NodeKind::External => "external",
        }
    }

    /// The kind a `periscope.component.kind` value names.
    pub fn from_component(kind: &str) -> NodeKind {
        match kind {
            "gateway" => NodeKind::Gateway,
            "mesh-proxy" | "mesh_proxy" | "sidecar" => NodeKind::MeshProxy,
            _ => NodeKind::Service,
        }
    }

    fn is_peer(self) -> bool {
        matches!(
            self,
            NodeKind::Database | NodeKind::Messaging | NodeKind::External
        )
    }
}

/// A peer a client or producer span talks to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Database, messaging or external.
    pub kind: NodeKind,
    /// Display name: database name, destination, or host.
    pub name: String,
    /// `db.system` or `messaging.system`, when known.
    pub system: Option<String>,
}

impl Peer {
    /// The node id: peers are prefixed by their kind so that they never collide with a
    /// service of the same name.
    pub fn id(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.name)
    }

    /// The peer named by a span's attributes (looked up with `attr`), if any.
    pub fn from_attributes<'a>(attr: impl Fn(&str) -> Option<&'a str>) -> Option<Peer> {
        PeerRef::from_attributes(attr).map(|p| p.to_owned())
    }

    fn as_ref(&self) -> PeerRef<'_> {
        PeerRef {
            kind: self.kind,
            name: &self.name,
            system: self.system.as_deref(),
        }
    }
}

/// A [`Peer`] borrowing its names from the span's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeerRef<'a> {
    kind: NodeKind,
    name: &'a str,
    system: Option<&'a str>,
}

impl<'a> PeerRef<'a> {
    fn from_attributes(attr: impl Fn(&str) -> Option<&'a str>) -> Option<PeerRef<'a>> {
        let nonempty = |k: &str| attr(k).filter(|v| !v.is_empty());
        if let Some(system) = nonempty("db.system.name").or_else(|| nonempty("db.system")) {
            let name = nonempty("db.namespace")
                .or_else(|| nonempty("db.name"))
                .unwrap_or(system);
            return Some(PeerRef {
                kind: NodeKind::Database,
                name,
                system: Some(system),
            });
        }
        if let Some(system) = nonempty("messaging.system") {
            let name = nonempty("messaging.destination.name")
                .or_else(|| nonempty("messaging.destination"))
                .unwrap_or(system);
            return Some(PeerRef {
                kind: NodeKind::Messaging,
                name,
                system: Some(system),
            });
        }
        let host = nonempty("peer.service")
            .or_else(|| nonempty("server.address"))
            .or_else(|| nonempty("net.peer.name"))?;
        Some(PeerRef {
            kind: NodeKind::External,
            name: host,
            system: None,
        })
    }

    fn to_owned(self) -> Peer {
        Peer {
            kind: self.kind,
            name: self.name.to_string(),
            system: self.system.map(str::to_string),
        }
    }
}

/// The span kinds the graph distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SERVER.
    Server,
    /// CLIENT.
    Client,
    /// PRODUCER.
    Producer,
    /// CONSUMER.
    Consumer,
    /// INTERNAL or unspecified.
    Other,
}

impl Kind {
    /// From the `kind` column.
    pub fn parse(text: &str) -> Kind {
        match text {
            "server" => Kind::Server,
            "client" => Kind::Client,
            "producer" => Kind::Producer,
            "consumer" => Kind::Consumer,
            _ => Kind::Other,
        }
    }

    /// SERVER and CONSUMER spans are a service's requests (its entry points).
    pub fn is_entry(self) -> bool {
        matches!(self, Kind::Server | Kind::Consumer)
    }
}

/// The few facts of a span the graph needs, compactly.
#[derive(Debug, Clone)]
pub struct GraphSpan {
    /// Trace id, as parsed from hex (0 when unparsable).
    pub trace: u128,
    /// Span id.
    pub span: u64,
    /// Parent span id; 0 for none.
    pub parent: u64,
    /// Index into the service names.
    pub service: u32,
    /// Span kind.
    pub kind: Kind,
    /// Duration, ns.
    pub duration: i64,
    /// Status is error.
    pub error: bool,
    /// Index into the peers, for client/producer/consumer spans naming one.
    pub peer: Option<u32>,
}

/// Durations kept exactly up to this many; beyond, in logarithmic buckets.
const EXACT_SAMPLES: usize = 4096;
/// Relative width of a bucket: quantiles past [`EXACT_SAMPLES`] are within 1%.
const BUCKET_GROWTH: f64 = 1.01;

/// Latency and error tallies of a node or edge, in bounded memory: durations are exact
/// for the first [`EXACT_SAMPLES`] calls, then counted in buckets 1% wide (at most a few
/// thousand buckets however many calls).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Calls or requests.
    pub calls: u64,
    /// Of which failed.
    pub errors: u64,
    exact: Vec<i64>,
    buckets: BTreeMap<i32, u64>,
}

fn bucket_of(duration: i64) -> i32 {
    if duration <= 0 {
        return i32::MIN;
    }
    ((duration as f64).ln() / BUCKET_GROWTH.ln()).floor() as i32
}

/// The value a bucket reports: its geometric middle.
fn bucket_value(bucket: i32) -> i64 {
    if bucket == i32::MIN {
        return 0;
    }
    (BUCKET_GROWTH.powf(f64::from(bucket) + 0.5)).round() as i64
}

impl Tally {
    fn add(&mut self, duration: i64, error: bool) {
        self.calls += 1;
        self.errors += u64::from(error);
        if self.buckets.is_empty() && self.exact.len() < EXACT_SAMPLES {
            self.exact.push(duration);
            return;
        }
        for d in self.exact.drain(..) {
            *self.buckets.entry(bucket_of(d)).or_default() += 1;
        }
        *self.buckets.entry(bucket_of(duration)).or_default() += 1;
    }

    fn merge(&mut self, other: &Tally) {
        self.calls += other.calls;
        self.errors += other.errors;
        if self.buckets.is_empty()
            && other.buckets.is_empty()
            && self.exact.len() + other.exact.len() <= EXACT_SAMPLES
        {
            self.exact.extend_from_slice(&other.exact);
            return;
        }
        for d in self.exact.drain(..).chain(other.exact.iter().copied()) {
            *self.buckets.entry(bucket_of(d)).or_default() += 1;
        }
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
    }

    fn finish(&mut self) {
        self.exact.sort_unstable();
    }

    /// The nearest-rank `q` quantile of the durations, ns: exact while at most
    /// [`EXACT_SAMPLES`] were seen, else within 1%.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        if self.buckets.is_empty() {
            return quantile(&self.exact, q);
        }
        let total: u64 = self.buckets.values().sum();
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(bucket_value(*b));
            }
        }
        None
    }
}

/// Nearest-rank quantile of sorted values.
pub fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A node of the map.
#[derive(Debug, Clone)]
pub struct Node {
    /// Unique id (a service's name; `kind:name` for peers).
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it is.
    pub kind: NodeKind,
    /// `db.system` / `messaging.system` of peers.
    pub system: Option<String>,
    /// Requests served: entry spans for services, incoming calls for peers.
    pub requests: Tally,
}

/// An edge of the map.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Caller node id.
    pub source: String,
    /// Callee node id.
    pub target: String,
    /// Calls over the window.
    pub tally: Tally,
}

/// The service graph of a window.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The window.
    pub window: Window,
    /// Nodes, sorted by id.
    pub nodes: Vec<Node>,
    /// Edges, sorted by (source, target).
    pub edges: Vec<Edge>,
}

type IdMap<V> = crate::hash::IdMap<u64, V>;

/// Span index by (trace id, span id): a map keyed by a 64-bit mix of both, checked
/// against the span on lookup; the rare keys two spans share go to an exact side map.
struct IdIndex {
    first: IdMap<u32>,
    clashes: HashMap<(u128, u64), u32>,
}

fn id_key(trace: u128, span: u64) -> u64 {
    span ^ (trace as u64).rotate_left(29) ^ ((trace >> 64) as u64)
}

impl IdIndex {
    fn new(spans: &[GraphSpan]) -> IdIndex {
        let mut first: IdMap<u32> =
            IdMap::with_capacity_and_hasher(spans.len(), Default::default());
        let mut clashes = HashMap::new();
        for (i, s) in spans.iter().enumerate() {
            match first.entry(id_key(s.trace, s.span)) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i as u32);
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    let other = &spans[*o.get() as usize];
                    if (other.trace, other.span) != (s.trace, s.span) {
                        clashes.entry((s.trace, s.span)).or_insert(i as u32);
                    }
                }
            }
        }
        IdIndex { first, clashes }
    }

    fn get(&self, spans: &[GraphSpan], trace: u128, span: u64) -> Option<u32> {
        let i = *self.first.get(&id_key(trace, span))?;
        let s = &spans[i as usize];
        if (s.trace, s.span) == (trace, span) {
            Some(i)
        } else {
            self.clashes.get(&(trace, span)).copied()
        }
    }
}

/// One end of an edge while building: a service or a peer, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum End {
    Service(u32),
    Peer(u32),
}

/// Accumulates spans into a graph.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    services: Vec<String>,
    service_index: HashMap<String, u32>,
    peers: Vec<Peer>,
    peer_index: HashMap<Peer, u32>,
    spans: Vec<GraphSpan>,
}

/// Value of each byte as a hex digit; 0xff for bytes that are not one.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Parses at most 16 hex digits; `None` when a byte is not one.
fn hex64(bytes: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    let mut bad = 0u8;
    for &b in bytes {
        let d = HEX[b as usize];
        bad |= d;
        v = (v << 4) | u64::from(d & 0x0f);
    }
    (bad & 0xf0 == 0).then_some(v)
}

/// A trace id (up to 32 hex digits); 0 when it is not hex.
pub(crate) fn parse_u128(hex: &str) -> u128 {
    let b = hex.as_bytes();
    if b.len() > 32 {
        return 0;
    }
    let split = b.len().saturating_sub(16);
    match (hex64(&b[..split]), hex64(&b[split..])) {
        (Some(hi), Some(lo)) => (u128::from(hi) << 64) | u128::from(lo),
        _ => 0,
    }
}

/// A span id (up to 16 hex digits); 0 when it is not hex.
pub(crate) fn parse_u64(hex: &str) -> u64 {
    if hex.len() > 16 {
        return 0;
    }
    hex64(hex.as_bytes()).unwrap_or(0)
}

impl GraphBuilder {
    /// About how much memory the span index takes.
    pub fn memory_bytes(&self) -> usize {
        // Each span: its compact record plus its entry in the id map built at the end.
        self.spans.len() * (std::mem::size_of::<GraphSpan>() + 48)
    }

    fn service(&mut self, name: &str) -> u32 {
        // Services are few: a scan beats hashing the name.
        if self.services.len() <= 64 {
            if let Some(i) = self.services.iter().position(|s| s == name) {
                return i as u32;
            }
        } else if let Some(&i) = self.service_index.get(name) {
            return i;
        }
        let i = self.services.len() as u32;
        self.services.push(name.to_string());
        self.service_index.insert(name.to_string(), i);
        i
    }

    fn peer(&mut self, peer: PeerRef<'_>) -> u32 {
        if self.peers.len() <= 64 {
            if let Some(i) = self.peers.iter().position(|p| p.as_ref() == peer) {
                return i as u32;
            }
        } else {
            let owned = peer.to_owned();
            if let Some(&i) = self.peer_index.get(&owned) {
                return i;
            }
        }
        let owned = peer.to_owned();
        let i = self.peers.len() as u32;
        self.peers.push(owned.clone());
        self.peer_index.insert(owned, i);
        i
    }

    /// Adds one span.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        trace_id: &str,
        span_id: &str,
        parent_span_id: Option<&str>,
        service: &str,
        kind: &str,
        duration: i64,
        error: bool,
        peer: Option<Peer>,
    ) {
        self.add_ref(
            trace_id,
            span_id,
            parent_span_id,
            service,
            kind,
            duration,
            error,
            peer.as_ref().map(Peer::as_ref),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn add_ref(
        &mut self,
        trace_id: &str,
        span_id: &str,
        parent_span_id: Option<&str>,
        service: &str,
        kind: &str,
        duration: i64,
        error: bool,
        peer: Option<PeerRef<'_>>,
    ) {
        let service = self.service(service);
        let kind = Kind::parse(kind);
        let peer = match (kind, peer) {
            (Kind::Client | Kind::Producer | Kind::Consumer, Some(p)) => Some(self.peer(p)),
            _ => None,
        };
        self.spans.push(GraphSpan {
            trace: parse_u128(trace_id),
            span: parse_u64(span_id),
            parent: parent_span_id.map_or(0, parse_u64),
            service,
            kind,
            duration,
            error,
            peer,
        });
    }

    /// Adds the rows of a batch with columns `trace_id, span_id, parent_span_id,
    /// service_name, kind, duration_ns, status_code` and `peer_attributes` (the
    /// attributes of client, producer and consumer spans).
    pub fn add_batch(&mut self, b: &RecordBatch) {
        let text = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        };
        fn get(a: Option<&StringArray>, row: usize) -> Option<&str> {
            a.filter(|a| a.is_valid(row)).map(|a| a.value(row))
        }
        let (trace, span, parent, service, kind, status) = (
            text("trace_id"),
            text("span_id"),
            text("parent_span_id"),
            text("service_name"),
            text("kind"),
            text("status_code"),
        );
        let peer_attrs = b
            .column_by_name("peer_attributes")
            .and_then(|c| c.as_any().downcast_ref::<MapArray>());
        let peer_keys = peer_attrs.and_then(|m| m.keys().as_string_opt::<i32>());
        let peer_values = peer_attrs.and_then(|m| m.values().as_string_opt::<i32>());
        let durations = b
            .column_by_name("duration_ns")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
        for row in 0..b.num_rows() {
            let (Some(trace), Some(span)) = (get(trace, row), get(span, row)) else {
                continue;
            };
            let kind = get(kind, row).unwrap_or("");
            let peer = match (peer_attrs, peer_keys, peer_values) {
                (Some(m), Some(keys), Some(values))
                    if m.is_valid(row) && matches!(kind, "client" | "producer" | "consumer") =>
                {
                    let offsets = m.value_offsets();
                    let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
                    PeerRef::from_attributes(|k| {
                        (from..to)
                            .find(|&i| keys.value(i) == k)
                            .filter(|&i| values.is_valid(i))
                            .map(|i| values.value(i))
                    })
                }
                _ => None,
            };
            self.add_ref(
                trace,
                span,
                get(parent, row),
                get(service, row).unwrap_or(""),
                kind,
                durations
                    .filter(|d| d.is_valid(row))
                    .map_or(0, |d| d.value(row)),
                get(status, row) == Some("error"),
                peer,
            );
        }
    }

    /// Builds the graph; `component_kinds` maps service names to their
    /// `periscope.component.kind`.
    pub fn build(self, window: Window, component_kinds: &HashMap<String, String>) -> Graph {
        let spans = &self.spans;
        let by_key = IdIndex::new(spans);
        // Does a span have a child in another service (its peer then exports spans)?
        let mut remote_child = vec![false; spans.len()];
        let mut parent_of: Vec<Option<u32>> = vec![None; spans.len()];
        for (i, s) in spans.iter().enumerate() {
            if s.parent == 0 {
                continue;
            }
            if let Some(p) = by_key.get(spans, s.trace, s.parent)
                && p as usize != i
            {
                parent_of[i] = Some(p);
                if spans[p as usize].service != s.service {
                    remote_child[p as usize] = true;
                }
            }
        }
        let service_id = End::Service;
        let peer_id = End::Peer;
        let mut edges: crate::hash::IdMap<(End, End), Tally> = HashMap::default();
        let mut service_requests: Vec<Tally> = vec![Tally::default(); self.services.len()];
        for (i, s) in spans.iter().enumerate() {
            if s.kind.is_entry() {
                service_requests[s.service as usize].add(s.duration, s.error);
            }
            let mut consumed_from_queue = false;
            if let Some(p) = parent_of[i] {
                let parent = &spans[p as usize];
                if parent.service != s.service {
                    let queue = parent.peer.filter(|&q| {
                        parent.kind == Kind::Producer
                            && self.peers[q as usize].kind == NodeKind::Messaging
                    });
                    // A consumer naming its queue, below a span that is not that queue's
                    // producer: the queue sits between the two services.
                    let own_queue = s.peer.filter(|&q| {
                        s.kind == Kind::Consumer
                            && self.peers[q as usize].kind == NodeKind::Messaging
                    });
                    let (source, error) = match (queue, own_queue) {
                        (Some(q), _) => {
                            consumed_from_queue = true;
                            (peer_id(q), s.error)
                        }
                        (None, Some(q)) => {
                            consumed_from_queue = true;
                            edges
                                .entry((service_id(parent.service), peer_id(q)))
                                .or_default()
                                .add(s.duration, parent.error && parent.kind == Kind::Producer);
                            (peer_id(q), s.error)
                        }
                        (None, None) => (
                            service_id(parent.service),
                            s.error || (parent.kind == Kind::Client && parent.error),
                        ),
                    };
                    edges
                        .entry((source, service_id(s.service)))
                        .or_default()
                        .add(s.duration, error);
                }
            }
            let Some(peer) = s.peer else { continue };
            let peer_kind = self.peers[peer as usize].kind;
            match s.kind {
                Kind::Consumer if peer_kind == NodeKind::Messaging && !consumed_from_queue => {
                    edges
                        .entry((peer_id(peer), service_id(s.service)))
                        .or_default()
                        .add(s.duration, s.error);
                }
                Kind::Client | Kind::Producer
                    if peer_kind != NodeKind::External || !remote_child[i] =>
                {
                    edges
                        .entry((service_id(s.service), peer_id(peer)))
                        .or_default()
                        .add(s.duration, s.error);
                }
                _ => {}
            }
        }
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        for (i, name) in self.services.iter().enumerate() {
            let kind = component_kinds
                .get(name)
                .map_or(NodeKind::Service, |k| NodeKind::from_component(k));
            let mut requests = std::mem::take(&mut service_requests[i]);
            requests.finish();
            nodes.insert(
                name.clone(),
                Node {
                    id: name.clone(),
                    name: name.clone(),
                    kind,
                    system: None,
                    requests,
                },
            );
        }
        let name = |e: End| match e {
            End::Service(i) => self.services[i as usize].clone(),
            End::Peer(i) => self.peers[i as usize].id(),
        };
        let mut edges: Vec<Edge> = edges
            .into_iter()
            .map(|((source, target), mut tally)| {
                tally.finish();
                Edge {
                    source: name(source),
                    target: name(target),
                    tally,
                }
            })
            .collect();
        for peer in &self.peers {
            let id = peer.id();
            let mut requests = Tally::default();
            for e in edges.iter().filter(|e| e.target == id) {
                requests.merge(&e.tally);
            }
            // A queue only consumed from (its producer outside the window) still shows.
            if requests.calls == 0 && !edges.iter().any(|e| e.source == id) {
                continue;
            }
            requests.finish();
            nodes.insert(
                id.clone(),
                Node {
                    id,
                    name: peer.name.clone(),
                    kind: peer.kind,
                    system: peer.system.clone(),
                    requests,
                },
            );
        }
        edges.sort_by(|a, b| (&a.source, &a.target).cmp(&(&b.source, &b.target)));
        Graph {
            window,
            nodes: nodes.into_values().collect(),
            edges,
        }
    }
}

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

/// Service name → `periscope.component.kind`, from spans, logs and metrics of the window.
pub async fn component_kinds(
    engine: &QueryEngine,
    window: Window,
) -> Result<HashMap<String, String>, TraceError> {
    let mut out = HashMap::new();
    for (table, time) in [
        ("spans", "start_time"),
        ("logs", "timestamp"),
        ("metrics", "timestamp"),
    ] {
        let sql = format!(
            "SELECT service_name, resource_attributes['periscope.component.kind'] AS kind \
             FROM {table} WHERE {} GROUP BY 1, 2",
            window.sql(time)
        );
        for b in rows(engine, &sql).await? {
            for row in 0..b.num_rows() {
                if let (Some(s), Some(k)) =
                    (str_at(&b, "service_name", row), str_at(&b, "kind", row))
                {
                    out.insert(s, k);
                }
            }
        }
    }
    Ok(out)
}

/// The service graph of `window`.
pub async fn service_graph(engine: &QueryEngine, window: Window) -> Result<Graph, TraceError> {
    let mut builder = GraphBuilder::default();
    let sql = format!(
        "SELECT trace_id, span_id, parent_span_id, service_name, kind, duration_ns, \
           status_code, \
           CASE WHEN kind IN ('client', 'producer', 'consumer') THEN attributes END \
             AS peer_attributes \
         FROM spans WHERE {}",
        window.sql("start_time")
    );
    // The span index lives outside DataFusion's memory pool: hold it to the same limit.
    let limit = engine.config().memory_limit;
    let mut over = false;
    engine
        .for_each_batch(&sql, |b| {
            if !over {
                builder.add_batch(&b);
                over = builder.memory_bytes() > limit;
            }
        })
        .await?;
    if over {
        return Err(TraceError::Query(crate::QueryError::ResourcesExhausted(
            format!(
                "the service graph of this window indexes over {} spans, more than {limit} bytes",
                builder.spans.len()
            ),
        )));
    }
    let kinds = component_kinds(engine, window).await?;
    Ok(builder.build(window, &kinds))
}
