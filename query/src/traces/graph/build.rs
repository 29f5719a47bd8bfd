//! The graph builder: spans in (one at a time or by record batch), edges and nodes out,
//! following the rules in the module header ([`super`]).

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray, Int64Array, MapArray, RecordBatch, StringArray};

use super::peer::{NodeKind, Peer, PeerRef};
use super::tally::Tally;
use super::{Edge, Graph, Node};
use crate::traces::fetch::Window;
use crate::traces::id::{parse_u64, parse_u128};

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
    pub(super) spans: Vec<GraphSpan>,
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
