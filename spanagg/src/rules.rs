//! The service graph's rules, applied to one span: which edges its call adds and which
//! operation tally it counts in, given its parent and whether a span of another service
//! sits below it. The rules (see `docs/traces.md`):
//! - a parent and child span in different services: `parent service → child service`,
//!   with the child's duration as latency (the callee's view, as Tempo's server latency);
//! - a client or producer span to a peer that exports nothing: a database (`db.system`),
//!   a queue or topic (`messaging.system`, `messaging.destination.name`), or an external
//!   host (`peer.service`, `server.address`) when no span of another service is its child;
//! - messaging: `producer service → queue` for each producer span and `queue → consumer
//!   service` for each consumer span below it (or carrying the same messaging attributes).

use std::collections::{BTreeMap, HashMap};

use crate::facts::{Kind, Names, Peers, SpanFacts};
use crate::peer::NodeKind;
use crate::summary::{EdgeRow, EndName, MinuteRow, OperationRow};
use crate::tally::Tally;

/// One end of an edge, by number in [`Names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum End {
    /// A service.
    Service(u32),
    /// A peer.
    Peer(u32),
}

/// What the rules need of a span's parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentFacts {
    /// Service, in [`Names::services`].
    pub service: u32,
    /// Span kind.
    pub kind: Kind,
    /// Span kind as spelled, in [`Names::kinds`].
    pub kind_name: u32,
    /// Status is error.
    pub error: bool,
    /// Peer, in [`Names::peers`].
    pub peer: Option<u32>,
}

impl ParentFacts {
    /// The parent facts of a span.
    pub fn of(s: &SpanFacts) -> ParentFacts {
        ParentFacts {
            service: s.service,
            kind: s.kind,
            kind_name: s.kind_name,
            error: s.error,
            peer: s.peer,
        }
    }
}

/// The tallies of one minute (or of a window, once summed).
#[derive(Debug, Clone, Default)]
pub struct Tallies {
    /// Graph edges.
    pub edges: HashMap<(End, End), Tally>,
    /// RED per (service, operation, kind as spelled).
    pub operations: HashMap<(u32, u32, u32), Tally>,
}

impl Tallies {
    fn edge(&mut self, source: End, target: End) -> &mut Tally {
        self.edges.entry((source, target)).or_default()
    }

    /// Adds every tally of `other`.
    pub fn merge(&mut self, other: &Tallies) {
        for (k, t) in &other.edges {
            self.edges.entry(*k).or_default().merge(t);
        }
        for (k, t) in &other.operations {
            self.operations.entry(*k).or_default().merge(t);
        }
    }

    /// The stored rows of minute `minute`, sorted.
    pub fn to_row(&self, minute: i64, names: &Names) -> MinuteRow {
        let mut edges: Vec<EdgeRow> = self
            .edges
            .iter()
            .map(|((s, t), tally)| EdgeRow {
                source: end_name(*s, names),
                target: end_name(*t, names),
                tally: tally.clone(),
            })
            .collect();
        edges.sort_by(|a, b| (&a.source, &a.target).cmp(&(&b.source, &b.target)));
        let mut operations: Vec<OperationRow> = self
            .operations
            .iter()
            .map(|((s, o, k), tally)| OperationRow {
                service: names.services.get(*s).to_string(),
                operation: names.operations.get(*o).to_string(),
                kind: names.kinds.get(*k).to_string(),
                tally: tally.clone(),
            })
            .collect();
        operations.sort_by(|a, b| {
            (&a.service, &a.operation, &a.kind).cmp(&(&b.service, &b.operation, &b.kind))
        });
        MinuteRow {
            minute,
            edges,
            operations,
        }
    }

    /// Adds the stored rows of a minute, interning their names into `names`.
    pub fn add_row(&mut self, row: &MinuteRow, names: &mut Names) {
        for e in &row.edges {
            let key = (end_id(&e.source, names), end_id(&e.target, names));
            self.edges.entry(key).or_default().merge(&e.tally);
        }
        for o in &row.operations {
            let key = (
                names.services.intern(&o.service),
                names.operations.intern(&o.operation),
                names.kinds.intern(&o.kind),
            );
            self.operations.entry(key).or_default().merge(&o.tally);
        }
    }
}

/// An end by name.
pub fn end_name(end: End, names: &Names) -> EndName {
    match end {
        End::Service(i) => EndName::Service(names.services.get(i).to_string()),
        End::Peer(i) => EndName::Peer(names.peers.get(i).clone()),
    }
}

fn end_id(end: &EndName, names: &mut Names) -> End {
    match end {
        EndName::Service(s) => End::Service(names.services.intern(s)),
        EndName::Peer(p) => End::Peer(names.peers.intern(p.as_ref())),
    }
}

/// Tallies per minute.
pub type ByMinute = BTreeMap<i64, Tallies>;

/// Whether a span's contribution depends on what is not known yet: its parent is named
/// but was not found, or it calls an external host and no span of another service was
/// found below it.
pub fn waits(s: &SpanFacts, parent_found: bool, remote_child: bool, peers: &Peers) -> bool {
    (s.has_parent() && !parent_found)
        || (matches!(s.kind, Kind::Client | Kind::Producer)
            && s.peer
                .is_some_and(|p| peers.get(p).kind == NodeKind::External)
            && !remote_child)
}

/// Counts span `s` into `t`, given its parent (if found) and whether a span of another
/// service was found below it.
pub fn contribute(
    s: &SpanFacts,
    parent: Option<ParentFacts>,
    remote_child: bool,
    peers: &Peers,
    t: &mut Tallies,
) {
    t.operations
        .entry((s.service, s.operation, s.kind_name))
        .or_default()
        .add(s.duration, s.error);
    let messaging = |q: &u32| peers.get(*q).kind == NodeKind::Messaging;
    let mut consumed_from_queue = false;
    if let Some(p) = parent.filter(|p| p.service != s.service) {
        let queue = p.peer.filter(|q| p.kind == Kind::Producer && messaging(q));
        // A consumer naming its queue, below a span that is not that queue's producer:
        // the queue sits between the two services.
        let own_queue = s.peer.filter(|q| s.kind == Kind::Consumer && messaging(q));
        let (source, error) = match (queue, own_queue) {
            (Some(q), _) => {
                consumed_from_queue = true;
                (End::Peer(q), s.error)
            }
            (None, Some(q)) => {
                consumed_from_queue = true;
                t.edge(End::Service(p.service), End::Peer(q))
                    .add(s.duration, p.error && p.kind == Kind::Producer);
                (End::Peer(q), s.error)
            }
            (None, None) => (
                End::Service(p.service),
                s.error || (p.kind == Kind::Client && p.error),
            ),
        };
        t.edge(source, End::Service(s.service))
            .add(s.duration, error);
    }
    let Some(peer) = s.peer else { return };
    let peer_kind = peers.get(peer).kind;
    match s.kind {
        Kind::Consumer if peer_kind == NodeKind::Messaging && !consumed_from_queue => {
            t.edge(End::Peer(peer), End::Service(s.service))
                .add(s.duration, s.error);
        }
        Kind::Client | Kind::Producer if peer_kind != NodeKind::External || !remote_child => {
            t.edge(End::Service(s.service), End::Peer(peer))
                .add(s.duration, s.error);
        }
        _ => {}
    }
}
