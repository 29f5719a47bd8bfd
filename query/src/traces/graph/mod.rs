//! The service dependency graph of a time window, from the span aggregates of the window
//! (see `periscope-spanagg` for the rules that make edges, and `docs/traces.md`).
//!
//! Node kinds come from the `periscope.component.kind` resource attribute (`gateway`,
//! `mesh-proxy`, `service`) or from the peer type (`database`, `messaging`, `external`).
//!
//! The parts: `build` (aggregates → [`Graph`]), `render` (the JSON answer) and `load`
//! (the aggregates of a window).

mod build;
mod load;
mod render;

use periscope_spanagg::{peer, tally};

use super::fetch::Window;

pub use build::GraphBuilder;
pub use load::{service_graph, service_graph_of};
pub use periscope_spanagg::{NodeKind, Peer, Tally};

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
