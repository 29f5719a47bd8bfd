//! The few facts of a span the graph and RED need, read from `spans` rows, with service,
//! operation and peer names interned so that a span is a small fixed-size record.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray, MapArray, RecordBatch, StringArray};
use arrow::datatypes::{Int64Type, TimestampNanosecondType};

use crate::ids::{parse_u64, parse_u128};
use crate::peer::{Peer, PeerRef};

/// Nanoseconds in a minute, the unit the aggregates are kept in.
pub const NANOS_PER_MINUTE: i64 = 60_000_000_000;

/// The span kinds the graph distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// Client, producer and consumer spans name the peer they talk to.
    pub fn names_peer(self) -> bool {
        matches!(self, Kind::Client | Kind::Producer | Kind::Consumer)
    }
}

/// Strings numbered in the order first seen.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Interner {
    /// The number of `name`, adding it if new.
    pub fn intern(&mut self, name: &str) -> u32 {
        // Names are few: a scan of the first ones beats hashing.
        if self.names.len() <= 32 {
            if let Some(i) = self.names.iter().position(|s| s == name) {
                return i as u32;
            }
        } else if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        i
    }

    /// The name numbered `i`.
    pub fn get(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", String::as_str)
    }
}

/// Peers numbered in the order first seen.
#[derive(Debug, Default, Clone)]
pub struct Peers {
    peers: Vec<Peer>,
    index: HashMap<Peer, u32>,
}

impl Peers {
    /// The number of `peer`, adding it if new.
    pub fn intern(&mut self, peer: PeerRef<'_>) -> u32 {
        if self.peers.len() <= 32
            && let Some(i) = self.peers.iter().position(|p| p.as_ref() == peer)
        {
            return i as u32;
        }
        let owned = peer.to_owned();
        if let Some(&i) = self.index.get(&owned) {
            return i;
        }
        let i = self.peers.len() as u32;
        self.peers.push(owned.clone());
        self.index.insert(owned, i);
        i
    }

    /// The peer numbered `i`.
    pub fn get(&self, i: u32) -> &Peer {
        &self.peers[i as usize]
    }
}

/// The name tables the facts point into.
#[derive(Debug, Default, Clone)]
pub struct Names {
    /// Service names.
    pub services: Interner,
    /// Operation (span) names.
    pub operations: Interner,
    /// Span kinds as the `kind` column spells them.
    pub kinds: Interner,
    /// Peers of client, producer and consumer spans.
    pub peers: Peers,
}

/// One span, compactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanFacts {
    /// Trace id (0 when not hex).
    pub trace: u128,
    /// Span id.
    pub span: u64,
    /// Parent span id; 0 for none.
    pub parent: u64,
    /// Minute of the start time (Unix minutes).
    pub minute: i64,
    /// Service, in [`Names::services`].
    pub service: u32,
    /// Operation, in [`Names::operations`].
    pub operation: u32,
    /// Span kind.
    pub kind: Kind,
    /// Span kind as spelled, in [`Names::kinds`].
    pub kind_name: u32,
    /// Duration, ns.
    pub duration: i64,
    /// Status is error.
    pub error: bool,
    /// Peer of a client, producer or consumer span, in [`Names::peers`].
    pub peer: Option<u32>,
}

impl SpanFacts {
    /// Whether the span names a parent other than itself.
    pub fn has_parent(&self) -> bool {
        self.parent != 0 && self.parent != self.span
    }
}

/// The minute of a Unix-nanosecond instant.
pub fn minute_of(nanos: i64) -> i64 {
    nanos.div_euclid(NANOS_PER_MINUTE)
}

fn text<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
}

fn get(a: Option<&StringArray>, row: usize) -> Option<&str> {
    a.filter(|a| a.is_valid(row)).map(|a| a.value(row))
}

/// Reads the facts of every row of `b` (columns of the `spans` table; rows without a
/// trace or span id are skipped) into `out`, interning names into `names`.
pub fn read_batch(b: &RecordBatch, names: &mut Names, out: &mut Vec<SpanFacts>) {
    read_rows(b, names, out, None);
}

/// [`read_batch`] of the rows whose (trace, span) `keep` accepts.
pub fn read_rows(
    b: &RecordBatch,
    names: &mut Names,
    out: &mut Vec<SpanFacts>,
    keep: Option<&dyn Fn(u128, u64) -> bool>,
) {
    let (trace, span, parent, service, operation, kind, status) = (
        text(b, "trace_id"),
        text(b, "span_id"),
        text(b, "parent_span_id"),
        text(b, "service_name"),
        text(b, "name"),
        text(b, "kind"),
        text(b, "status_code"),
    );
    let attrs = b
        .column_by_name("attributes")
        .and_then(|c| c.as_any().downcast_ref::<MapArray>());
    let keys = attrs.and_then(|m| m.keys().as_string_opt::<i32>());
    let values = attrs.and_then(|m| m.values().as_string_opt::<i32>());
    let durations = b
        .column_by_name("duration_ns")
        .and_then(|c| c.as_primitive_opt::<Int64Type>());
    let starts = b
        .column_by_name("start_time")
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>());
    // (name, number) of the last row's service.
    let mut last_service: Option<(&str, u32)> = None;
    if keep.is_none() {
        out.reserve(b.num_rows());
    }
    for row in 0..b.num_rows() {
        let (Some(trace), Some(span)) = (get(trace, row), get(span, row)) else {
            continue;
        };
        let (trace, span) = (parse_u128(trace), parse_u64(span));
        if keep.is_some_and(|keep| !keep(trace, span)) {
            continue;
        }
        let kind_text = get(kind, row).unwrap_or("");
        let kind = Kind::parse(kind_text);
        let peer = match (attrs, keys, values) {
            (Some(m), Some(keys), Some(values)) if m.is_valid(row) && kind.names_peer() => {
                let offsets = m.value_offsets();
                let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
                PeerRef::from_attributes(|k| {
                    (from..to)
                        .find(|&i| keys.value(i) == k)
                        .filter(|&i| values.is_valid(i))
                        .map(|i| values.value(i))
                })
                .map(|p| names.peers.intern(p))
            }
            _ => None,
        };
        let service_name = get(service, row).unwrap_or("");
        // Neighbouring rows often share a service: the last one's number is the answer.
        let service = match last_service {
            Some((name, i)) if name == service_name => i,
            _ => {
                let i = names.services.intern(service_name);
                last_service = Some((service_name, i));
                i
            }
        };
        out.push(SpanFacts {
            trace,
            span,
            parent: get(parent, row).map_or(0, parse_u64),
            minute: starts
                .filter(|s| s.is_valid(row))
                .map_or(0, |s| minute_of(s.value(row))),
            service,
            operation: names.operations.intern(get(operation, row).unwrap_or("")),
            kind,
            kind_name: names.kinds.intern(kind_text),
            duration: durations
                .filter(|d| d.is_valid(row))
                .map_or(0, |d| d.value(row)),
            error: get(status, row) == Some("error"),
            peer,
        });
    }
}

/// The `periscope.component.kind` resource attribute of `row`.
fn component_kind(m: &MapArray, row: usize) -> Option<&str> {
    if !m.is_valid(row) {
        return None;
    }
    let keys = m.keys().as_string_opt::<i32>()?;
    let values = m.values().as_string_opt::<i32>()?;
    let offsets = m.value_offsets();
    (offsets[row] as usize..offsets[row + 1] as usize)
        .find(|&i| keys.value(i) == "periscope.component.kind")
        .filter(|&i| values.is_valid(i))
        .map(|i| values.value(i))
}

/// Records a service's component kind; of several, the greatest, so that the answer does
/// not depend on the order rows were read in.
pub fn note_component(components: &mut BTreeMap<String, String>, service: &str, kind: &str) {
    match components.get_mut(service) {
        Some(k) if k.as_str() >= kind => {}
        Some(k) => *k = kind.to_string(),
        None => {
            components.insert(service.to_string(), kind.to_string());
        }
    }
}

/// Notes the `periscope.component.kind` of the services of `b`'s rows (any table with
/// `service_name` and `resource_attributes`), looking again whenever the service changes
/// from the row before or the row before had none.
pub fn components(b: &RecordBatch, out: &mut BTreeMap<String, String>) {
    let (Some(services), Some(resources)) = (
        text(b, "service_name"),
        b.column_by_name("resource_attributes")
            .and_then(|c| c.as_any().downcast_ref::<MapArray>()),
    ) else {
        return;
    };
    let mut last: Option<(&str, bool)> = None;
    for row in 0..b.num_rows() {
        let service = get(Some(services), row).unwrap_or("");
        if matches!(last, Some((s, true)) if s == service) {
            continue;
        }
        let kind = component_kind(resources, row);
        if let Some(kind) = kind {
            note_component(out, service, kind);
        }
        last = Some((service, kind.is_some()));
    }
}
