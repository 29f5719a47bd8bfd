//! Building span aggregates: from the rows of a file being written (flush), from the
//! aggregates of files being merged plus the few rows their deferred spans wait for
//! (compaction), and for a query window from every file's aggregates plus the head's
//! rows (query time). All three resolve deferred spans the same way, so that the answer
//! is the one a single pass over every span would give.

use std::collections::HashSet;

use arrow::array::RecordBatch;

use crate::facts::{Kind, Names, SpanFacts, read_batch, read_rows};
use crate::hash::IdMap;
use crate::ids::{parse_u128, trace_hex};
use crate::rules::{ByMinute, ParentFacts, Tallies, contribute, waits};
use crate::summary::{DeferredRow, ParentRow, Summary, VERSION};

/// A deferred span while building.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    facts: SpanFacts,
    parent: Option<ParentFacts>,
    remote_child: bool,
}

type Index<V> = IdMap<(u128, u64), V>;

/// Aggregates being built.
#[derive(Debug, Default)]
pub struct SummaryBuilder {
    names: Names,
    /// Flush: every row; merge: the rows deferred spans waited for.
    spans: Vec<SpanFacts>,
    /// Set when merging: tallies and deferred spans of the inputs.
    merge: Option<Merge>,
    span_minutes: Option<(i64, i64)>,
}

#[derive(Debug, Default)]
struct Merge {
    tallies: ByMinute,
    deferred: Vec<Waiting>,
    /// (trace, span) of parents not found yet.
    wanted: HashSet<(u128, u64)>,
    /// Only minutes in `[from, to)` are kept (query windows).
    window: Option<(i64, i64)>,
}

/// The window-summed aggregates a query reads.
#[derive(Debug, Default)]
pub struct Aggregate {
    /// Names the tallies point into.
    pub names: Names,
    /// Summed over the window's minutes.
    pub tallies: Tallies,
}

impl SummaryBuilder {
    /// A builder for the rows of one file.
    pub fn new() -> SummaryBuilder {
        SummaryBuilder::default()
    }

    /// A builder that merges `inputs` (aggregates of files being merged, or of every file
    /// a query may need); with `window` (Unix minutes `[from, to)`), only those minutes'
    /// tallies are kept and only deferred spans in them are counted.
    pub fn merging<'a>(
        inputs: impl IntoIterator<Item = &'a Summary>,
        window: Option<(i64, i64)>,
    ) -> SummaryBuilder {
        let mut b = SummaryBuilder::new();
        let mut merge = Merge {
            window,
            ..Merge::default()
        };
        for input in inputs {
            for row in &input.minutes {
                if window.is_some_and(|(from, to)| row.minute < from || row.minute >= to) {
                    continue;
                }
                merge
                    .tallies
                    .entry(row.minute)
                    .or_default()
                    .add_row(row, &mut b.names);
            }
            for d in &input.deferred {
                merge.deferred.push(waiting_of(d, &mut b.names));
            }
            b.span_minutes = join(b.span_minutes, input.span_minutes);
        }
        merge.wanted = merge
            .deferred
            .iter()
            .filter(|w| w.parent.is_none() && w.facts.has_parent())
            .map(|w| (w.facts.trace, w.facts.parent))
            .collect();
        b.merge = Some(merge);
        b
    }

    /// Trace ids of the parents deferred spans wait for (merging only): the rows a query
    /// should look up and pass to [`SummaryBuilder::add_batch`].
    pub fn wanted_traces(&self) -> Vec<String> {
        let Some(m) = &self.merge else {
            return Vec::new();
        };
        let traces: HashSet<u128> = m.wanted.iter().map(|(t, _)| *t).collect();
        let mut out: Vec<String> = traces.into_iter().map(trace_hex).collect();
        out.sort();
        out
    }

    /// About how much memory the builder holds.
    pub fn memory_bytes(&self) -> usize {
        let deferred = self.merge.as_ref().map_or(0, |m| m.deferred.len());
        (self.spans.len() + deferred) * (std::mem::size_of::<SpanFacts>() + 32)
    }

    /// Reads rows of the `spans` table: all of them for a file being written; when
    /// merging, only the parents deferred spans wait for.
    pub fn add_batch(&mut self, b: &RecordBatch) {
        match &self.merge {
            None => {
                let from = self.spans.len();
                read_batch(b, &mut self.names, &mut self.spans);
                for s in &self.spans[from..] {
                    self.span_minutes = join(self.span_minutes, Some((s.minute, s.minute)));
                }
            }
            Some(m) if !m.wanted.is_empty() => {
                let wanted = |t: u128, s: u64| m.wanted.contains(&(t, s));
                read_rows(b, &mut self.names, &mut self.spans, Some(&wanted));
            }
            Some(_) => {}
        }
    }

    /// Adds one span given by its fields (for callers without Arrow rows), starting in
    /// Unix minute `minute`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_span(
        &mut self,
        trace_id: &str,
        span_id: &str,
        parent_span_id: Option<&str>,
        service: &str,
        operation: &str,
        kind: &str,
        minute: i64,
        duration: i64,
        error: bool,
        peer: Option<&crate::peer::Peer>,
    ) {
        let k = Kind::parse(kind);
        let s = SpanFacts {
            trace: parse_u128(trace_id),
            span: crate::ids::parse_u64(span_id),
            parent: parent_span_id.map_or(0, crate::ids::parse_u64),
            minute,
            service: self.names.services.intern(service),
            operation: self.names.operations.intern(operation),
            kind: k,
            kind_name: self.names.kinds.intern(kind),
            duration,
            error,
            peer: peer
                .filter(|_| k.names_peer())
                .map(|p| self.names.peers.intern(p.as_ref())),
        };
        self.span_minutes = join(self.span_minutes, Some((minute, minute)));
        self.spans.push(s);
    }

    /// The aggregates of a file: of its rows (flush) or of the merged inputs.
    pub fn finish(self) -> Summary {
        let SummaryBuilder {
            names,
            spans,
            merge,
            span_minutes,
        } = self;
        let (tallies, deferred) = match merge {
            None => resolve_file(&names, &spans),
            Some(m) => resolve_merge(&names, &spans, m, false),
        };
        Summary {
            version: VERSION,
            minutes: tallies.iter().map(|(m, t)| t.to_row(*m, &names)).collect(),
            deferred: deferred.iter().map(|w| row_of(w, &names)).collect(),
            span_minutes,
        }
    }

    /// The aggregates of the window given to [`SummaryBuilder::merging`], summed; spans
    /// still waiting count as they are (no parent, no span below them).
    pub fn finish_window(self) -> Aggregate {
        let SummaryBuilder {
            names,
            spans,
            merge,
            ..
        } = self;
        let mut out = Tallies::default();
        if let Some(m) = merge {
            let (tallies, _) = resolve_merge(&names, &spans, m, true);
            for t in tallies.values() {
                out.merge(t);
            }
        }
        Aggregate {
            names,
            tallies: out,
        }
    }
}

fn join(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A file's own rows: everything whose parent and children are in the file is counted;
/// the rest waits.
fn resolve_file(names: &Names, spans: &[SpanFacts]) -> (ByMinute, Vec<Waiting>) {
    let mut index: Index<u32> = Index::with_capacity_and_hasher(spans.len(), Default::default());
    for (i, s) in spans.iter().enumerate() {
        index.entry((s.trace, s.span)).or_insert(i as u32);
    }
    let mut parent_of: Vec<Option<u32>> = vec![None; spans.len()];
    let mut remote_child = vec![false; spans.len()];
    for (i, s) in spans.iter().enumerate() {
        if !s.has_parent() {
            continue;
        }
        if let Some(&p) = index.get(&(s.trace, s.parent))
            && p as usize != i
        {
            parent_of[i] = Some(p);
            if spans[p as usize].service != s.service {
                remote_child[p as usize] = true;
            }
        }
    }
    let mut tallies = ByMinute::new();
    let mut deferred = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        let parent = parent_of[i].map(|p| ParentFacts::of(&spans[p as usize]));
        if waits(s, parent.is_some(), remote_child[i], &names.peers) {
            deferred.push(Waiting {
                facts: *s,
                parent,
                remote_child: remote_child[i],
            });
        } else {
            contribute(
                s,
                parent,
                remote_child[i],
                &names.peers,
                tallies.entry(s.minute).or_default(),
            );
        }
    }
    (tallies, deferred)
}

/// Merged inputs: deferred spans find their parents among the rows looked up and each
/// other, and their children among each other; those resolved are counted. With
/// `last`, nothing waits any more (a query's answer): the rest count as they are.
fn resolve_merge(
    names: &Names,
    found: &[SpanFacts],
    mut m: Merge,
    last: bool,
) -> (ByMinute, Vec<Waiting>) {
    let mut facts: Index<ParentFacts> = Index::default();
    for s in found {
        facts.entry((s.trace, s.span)).or_insert(ParentFacts::of(s));
    }
    let mut at: Index<usize> = Index::default();
    for (i, w) in m.deferred.iter().enumerate() {
        facts
            .entry((w.facts.trace, w.facts.span))
            .or_insert(ParentFacts::of(&w.facts));
        at.entry((w.facts.trace, w.facts.span)).or_insert(i);
    }
    for i in 0..m.deferred.len() {
        let w = m.deferred[i];
        if !w.facts.has_parent() {
            continue;
        }
        let k = (w.facts.trace, w.facts.parent);
        if w.parent.is_none() {
            m.deferred[i].parent = facts.get(&k).copied();
        }
        if let Some(&p) = at.get(&k)
            && p != i
            && m.deferred[p].facts.service != w.facts.service
        {
            m.deferred[p].remote_child = true;
        }
    }
    let mut waiting = Vec::new();
    for w in m.deferred {
        let in_window = m
            .window
            .is_none_or(|(from, to)| w.facts.minute >= from && w.facts.minute < to);
        if !last && waits(&w.facts, w.parent.is_some(), w.remote_child, &names.peers) {
            waiting.push(w);
        } else if in_window {
            contribute(
                &w.facts,
                w.parent,
                w.remote_child,
                &names.peers,
                m.tallies.entry(w.facts.minute).or_default(),
            );
        }
    }
    (m.tallies, waiting)
}

fn waiting_of(d: &DeferredRow, names: &mut Names) -> Waiting {
    let peer = d.peer.as_ref().map(|p| names.peers.intern(p.as_ref()));
    let facts = SpanFacts {
        trace: parse_u128(&d.trace),
        span: d.span,
        parent: d.parent,
        minute: d.minute,
        service: names.services.intern(&d.service),
        operation: names.operations.intern(&d.operation),
        kind: Kind::parse(&d.kind),
        kind_name: names.kinds.intern(&d.kind),
        duration: d.duration,
        error: d.error,
        peer,
    };
    let parent = d.parent_row.as_ref().map(|p| ParentFacts {
        service: names.services.intern(&p.service),
        kind: Kind::parse(&p.kind),
        kind_name: names.kinds.intern(&p.kind),
        error: p.error,
        peer: p.peer.as_ref().map(|q| names.peers.intern(q.as_ref())),
    });
    Waiting {
        facts,
        parent,
        remote_child: d.remote_child,
    }
}

fn row_of(w: &Waiting, names: &Names) -> DeferredRow {
    let s = &w.facts;
    DeferredRow {
        trace: trace_hex(s.trace),
        span: s.span,
        parent: s.parent,
        minute: s.minute,
        service: names.services.get(s.service).to_string(),
        operation: names.operations.get(s.operation).to_string(),
        kind: names.kinds.get(s.kind_name).to_string(),
        duration: s.duration,
        error: s.error,
        peer: s.peer.map(|p| names.peers.get(p).clone()),
        parent_row: w.parent.map(|p| ParentRow {
            service: names.services.get(p.service).to_string(),
            kind: names.kinds.get(p.kind_name).to_string(),
            error: p.error,
            peer: p.peer.map(|q| names.peers.get(q).clone()),
        }),
        remote_child: w.remote_child,
    }
}
