//! Nodes the graph names: what kind a node is ([`NodeKind`]) and the peer a client or
//! producer span talks to ([`Peer`]), named from its `db.*`, `messaging.*` or host
//! attributes.

use serde::{Deserialize, Serialize};

/// What a node of the map is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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

    pub fn is_peer(self) -> bool {
        matches!(
            self,
            NodeKind::Database | NodeKind::Messaging | NodeKind::External
        )
    }
}

/// A peer a client or producer span talks to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

    pub fn as_ref(&self) -> PeerRef<'_> {
        PeerRef {
            kind: self.kind,
            name: &self.name,
            system: self.system.as_deref(),
        }
    }
}

/// A [`Peer`] borrowing its names from the span's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRef<'a> {
    kind: NodeKind,
    name: &'a str,
    system: Option<&'a str>,
}

impl<'a> PeerRef<'a> {
    pub fn from_attributes(attr: impl Fn(&str) -> Option<&'a str>) -> Option<PeerRef<'a>> {
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

    pub fn to_owned(self) -> Peer {
        Peer {
            kind: self.kind,
            name: self.name.to_string(),
            system: self.system.map(str::to_string),
        }
    }
}
