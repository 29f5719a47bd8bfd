//! Trace assembly: spans ordered as a tree (depth-first, children by start time), with
//! orphans (spans whose parent is missing) kept under the trace and clock skew between
//! hosts detected as Jaeger's clock-skew adjuster does.

use std::collections::{HashMap, HashSet};

use super::span::Span;

/// Where a span sits in the assembled tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// 0 for roots and orphans.
    pub depth: u32,
    /// Number of direct children.
    pub children: u32,
    /// The span names a parent that is not in the trace.
    pub orphan: bool,
    /// The shift (ns) Jaeger's clock-skew adjuster would apply to this span; non-zero
    /// when this span or an ancestor on the same host starts before or ends after its
    /// parent on another host.
    pub skew: i64,
    /// This span is where skew was detected (its host differs from its parent's).
    pub skew_detected: bool,
}

/// A trace assembled for display.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Spans in display order: each root's subtree depth-first, then each orphan's.
    pub spans: Vec<Span>,
    /// One placement per span, same order.
    pub placement: Vec<Placement>,
    /// Earliest start, Unix ns.
    pub start: i64,
    /// Latest end, Unix ns.
    pub end: i64,
    /// Span ids of roots (no parent).
    pub roots: Vec<String>,
    /// Span ids of orphans (parent missing).
    pub orphans: Vec<String>,
    /// What a reader should know: missing root, skew, duplicates, cycles.
    pub warnings: Vec<String>,
}

impl Tree {
    /// The root span if the trace has one, else the earliest span.
    pub fn root(&self) -> Option<&Span> {
        self.roots
            .first()
            .and_then(|id| self.spans.iter().find(|s| &s.span_id == id))
            .or_else(|| self.spans.iter().min_by_key(|s| s.start))
    }

    /// Number of spans whose status is error.
    pub fn error_count(&self) -> usize {
        self.spans.iter().filter(|s| s.is_error()).count()
    }

    /// Services in the trace, sorted and deduplicated.
    pub fn services(&self) -> Vec<String> {
        let mut s: Vec<String> = self.spans.iter().map(|s| s.service_name.clone()).collect();
        s.sort();
        s.dedup();
        s
    }
}

/// The host a span ran on, for skew detection: instance id or host name, else service.
fn host_key(span: &Span) -> String {
    let host = span
        .resource_attr("service.instance.id")
        .or_else(|| span.resource_attr("host.name"))
        .unwrap_or("");
    format!("{}\u{0}{}", span.service_name, host)
}

/// Jaeger's `calculateSkew`: the shift that puts `child` inside `parent` (adjusted
/// times), assuming network latency splits evenly between request and response.
fn calculate_skew(child_start: i64, child_dur: i64, parent_start: i64, parent_dur: i64) -> i64 {
    let child_end = child_start.saturating_add(child_dur);
    let parent_end = parent_start.saturating_add(parent_dur);
    if parent_dur < child_dur {
        // An asynchronous child: only make sure it does not start before its parent.
        return if child_start < parent_start {
            parent_start - child_start
        } else {
            0
        };
    }
    if child_start >= parent_start && child_end <= parent_end {
        return 0;
    }
    let latency = (parent_dur - child_dur) / 2;
    parent_start.saturating_add(latency) - child_start
}

/// Assembles `spans` of one trace. Exact duplicates (same span id, service, name and
/// start) are dropped with a warning.
pub fn assemble(mut spans: Vec<Span>) -> Tree {
    let mut warnings = Vec::new();
    spans.sort_by(|a, b| (a.start, &a.span_id).cmp(&(b.start, &b.span_id)));
    let before = spans.len();
    let mut seen = HashSet::new();
    spans.retain(|s| {
        seen.insert((
            s.span_id.clone(),
            s.service_name.clone(),
            s.name.clone(),
            s.start,
        ))
    });
    if spans.len() < before {
        warnings.push(format!(
            "{} duplicate spans (same id, service, name and start) were dropped",
            before - spans.len()
        ));
    }
    let n = spans.len();
    let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (i, s) in spans.iter().enumerate() {
        by_id.entry(s.span_id.as_str()).or_insert(i);
    }
    let mut parent: Vec<Option<usize>> = vec![None; n];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut tops: Vec<usize> = Vec::new();
    let mut orphan = vec![false; n];
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.as_deref() {
            None => tops.push(i),
            Some(p) => match by_id.get(p) {
                Some(&pi) if pi != i => {
                    parent[i] = Some(pi);
                    children[pi].push(i);
                }
                _ => {
                    orphan[i] = true;
                    tops.push(i);
                }
            },
        }
    }
    // Roots first, then orphans, each by start time (spans are sorted already).
    tops.sort_by_key(|&i| (orphan[i], i));
    let hosts: Vec<String> = spans.iter().map(host_key).collect();
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut placement: Vec<Option<Placement>> = vec![None; n];
    let mut visited = vec![false; n];
    let walk = |top: usize,
                as_orphan: bool,
                placement: &mut Vec<Option<Placement>>,
                visited: &mut Vec<bool>,
                order: &mut Vec<usize>| {
        let mut stack = vec![(top, 0u32)];
        while let Some((i, depth)) = stack.pop() {
            if visited[i] {
                continue;
            }
            visited[i] = true;
            order.push(i);
            let (skew, detected) = match parent[i] {
                Some(p) if depth > 0 => {
                    let parent_skew = placement[p].as_ref().map_or(0, |pl| pl.skew);
                    if hosts[i] != hosts[p] {
                        let s = calculate_skew(
                            spans[i].start,
                            spans[i].duration,
                            spans[p].start.saturating_add(parent_skew),
                            spans[p].duration,
                        );
                        (s, s != 0)
                    } else {
                        (parent_skew, false)
                    }
                }
                _ => (0, false),
            };
            placement[i] = Some(Placement {
                depth,
                children: children[i].len() as u32,
                orphan: as_orphan && depth == 0,
                skew,
                skew_detected: detected,
            });
            for &c in children[i].iter().rev() {
                stack.push((c, depth + 1));
            }
        }
    };
    for &t in &tops {
        walk(t, orphan[t], &mut placement, &mut visited, &mut order);
    }
    // Spans caught in a parent cycle are reachable from no root: show them as orphans.
    let reached = order.len();
    let mut missing_parent = tops.iter().filter(|&&t| orphan[t]).count();
    for i in 0..n {
        if !visited[i] {
            orphan[i] = true;
            walk(i, true, &mut placement, &mut visited, &mut order);
        }
    }
    let cyclic = order.len() - reached;
    if cyclic > 0 {
        warnings.push(format!(
            "{cyclic} spans form a parent cycle and are shown as orphans"
        ));
    }
    let roots: Vec<String> = tops
        .iter()
        .filter(|&&i| !orphan[i])
        .map(|&i| spans[i].span_id.clone())
        .collect();
    let orphans: Vec<String> = order
        .iter()
        .filter(|&&i| placement[i].as_ref().is_some_and(|p| p.orphan))
        .map(|&i| spans[i].span_id.clone())
        .collect();
    if roots.is_empty() && n > 0 {
        warnings.push("the root span of this trace has not been received".into());
    }
    missing_parent = missing_parent.min(orphans.len());
    if missing_parent > 0 {
        warnings.push(format!(
            "{missing_parent} spans refer to a parent that has not been received; they are shown as orphans"
        ));
    }
    let skewed = placement
        .iter()
        .filter(|p| p.as_ref().is_some_and(|p| p.skew_detected))
        .count();
    if skewed > 0 {
        warnings.push(format!(
            "clock skew: {skewed} spans start before or end after their parent on another host; \
             clock_skew_ns gives the shift that would fit them (times are shown as received)"
        ));
    }
    let start = spans.iter().map(|s| s.start).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end).max().unwrap_or(0);
    let mut slots: Vec<Option<Span>> = spans.into_iter().map(Some).collect();
    let mut out_spans = Vec::with_capacity(n);
    let mut out_place = Vec::with_capacity(n);
    for i in order {
        if let (Some(s), Some(p)) = (slots[i].take(), placement[i].take()) {
            out_spans.push(s);
            out_place.push(p);
        }
    }
    Tree {
        spans: out_spans,
        placement: out_place,
        start,
        end,
        roots,
        orphans,
        warnings,
    }
}
