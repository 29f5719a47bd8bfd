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
//!
//! The parts: `peer` (node kinds, peers from span attributes), `tally` (latency and error
//! counts in bounded memory), `build` (spans → [`Graph`]), `render` (the JSON answer) and
//! `load` (the spans of a window, through SQL).

mod build;
mod load;
mod peer;
mod render;
mod tally;

use super::fetch::Window;

pub use build::GraphBuilder;
pub use load::service_graph;
pub use peer::{NodeKind, Peer};
pub use tally::Tally;

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
