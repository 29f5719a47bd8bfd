//! The graph of a window from its span aggregates ([`periscope_spanagg::Aggregate`]):
//! services from the operations counted, peers from the edges, node kinds from the
//! services' `periscope.component.kind`. [`GraphBuilder`] feeds spans given one by one
//! through the same aggregates (tests and callers without stored rows).

use std::collections::{BTreeMap, HashMap};

use periscope_spanagg::rules::end_name;
use periscope_spanagg::{Aggregate, EndName, Kind, Peer, SummaryBuilder};

use super::peer::NodeKind;
use super::tally::Tally;
use super::{Edge, Graph, Node};
use crate::traces::fetch::Window;

/// Accumulates spans into a graph.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    spans: SummaryBuilder,
}

impl GraphBuilder {
    /// Adds one span (starting at the Unix epoch's minute).
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
        self.spans.add_span(
            trace_id,
            span_id,
            parent_span_id,
            service,
            "",
            kind,
            0,
            duration,
            error,
            peer.as_ref(),
        );
    }

    /// Builds the graph; `component_kinds` maps service names to their
    /// `periscope.component.kind`.
    pub fn build(self, window: Window, component_kinds: &HashMap<String, String>) -> Graph {
        let summary = self.spans.finish();
        let aggregate = SummaryBuilder::merging([&summary], None).finish_window();
        let kinds = component_kinds
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        graph_of(&aggregate, &kinds, window)
    }
}

fn id_of(end: &EndName) -> String {
    match end {
        EndName::Service(s) => s.clone(),
        EndName::Peer(p) => p.id(),
    }
}

/// The graph of `aggregate` over `window`; `kinds` maps services to their
/// `periscope.component.kind`.
pub fn graph_of(aggregate: &Aggregate, kinds: &BTreeMap<String, String>, window: Window) -> Graph {
    let names = &aggregate.names;
    // Services: every one with spans; its requests are its entry spans.
    let mut services: BTreeMap<String, Tally> = BTreeMap::new();
    for ((service, _, kind), tally) in &aggregate.tallies.operations {
        let requests = services
            .entry(names.services.get(*service).to_string())
            .or_default();
        if Kind::parse(names.kinds.get(*kind)).is_entry() {
            requests.merge(tally);
        }
    }
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (name, requests) in services {
        let kind = kinds
            .get(&name)
            .map_or(NodeKind::Service, |k| NodeKind::from_component(k));
        nodes.insert(
            name.clone(),
            Node {
                id: name.clone(),
                name,
                kind,
                system: None,
                requests,
            },
        );
    }
    let mut edges: Vec<Edge> = Vec::new();
    let mut peers: BTreeMap<String, (Peer, Tally, bool)> = BTreeMap::new();
    for ((source, target), tally) in &aggregate.tallies.edges {
        let (source, target) = (end_name(*source, names), end_name(*target, names));
        if let EndName::Peer(p) = &target {
            let entry = peers
                .entry(p.id())
                .or_insert_with(|| (p.clone(), Tally::default(), false));
            entry.1.merge(tally);
        }
        if let EndName::Peer(p) = &source {
            peers
                .entry(p.id())
                .or_insert_with(|| (p.clone(), Tally::default(), false))
                .2 = true;
        }
        edges.push(Edge {
            source: id_of(&source),
            target: id_of(&target),
            tally: tally.clone(),
        });
    }
    for (id, (peer, requests, is_source)) in peers {
        // A queue only consumed from (its producer outside the window) still shows.
        if requests.calls == 0 && !is_source {
            continue;
        }
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
