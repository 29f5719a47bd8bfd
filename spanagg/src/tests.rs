//! The aggregates equal a single pass over every span: spans split at random into files
//! (parents in other files, orphans, clock skew, late spans in minutes other files already
//! hold), files merged at random as compaction does, and query windows resolved from the
//! stored aggregates plus the rows deferred spans wait for.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, MapBuilder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::builder::{Aggregate, SummaryBuilder};
use crate::facts::{Names, SpanFacts, components, note_component, read_batch};
use crate::hash::IdMap;
use crate::rules::{ParentFacts, Tallies, contribute, end_name};
use crate::summary::{EndName, Summary};
use crate::tally::Tally;

#[derive(Debug, Clone)]
struct Row {
    trace: String,
    span: String,
    parent: Option<String>,
    service: String,
    name: String,
    kind: &'static str,
    start: i64,
    duration: i64,
    error: bool,
    attrs: Vec<(&'static str, String)>,
    component: Option<&'static str>,
}

fn batch(rows: &[&Row]) -> RecordBatch {
    let mut trace = StringBuilder::new();
    let mut span = StringBuilder::new();
    let mut parent = StringBuilder::new();
    let mut service = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut start = TimestampNanosecondBuilder::new();
    let mut duration = Int64Builder::new();
    let mut status = StringBuilder::new();
    let mut attrs = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut resource = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for r in rows {
        trace.append_value(&r.trace);
        span.append_value(&r.span);
        parent.append_option(r.parent.as_deref());
        service.append_value(&r.service);
        name.append_value(&r.name);
        kind.append_value(r.kind);
        start.append_value(r.start);
        duration.append_value(r.duration);
        status.append_value(if r.error { "error" } else { "unset" });
        for (k, v) in &r.attrs {
            attrs.keys().append_value(k);
            attrs.values().append_value(v);
        }
        attrs.append(true).unwrap();
        if let Some(c) = r.component {
            resource.keys().append_value("periscope.component.kind");
            resource.values().append_value(c);
        }
        resource.append(true).unwrap();
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(trace.finish()),
        Arc::new(span.finish()),
        Arc::new(parent.finish()),
        Arc::new(service.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(start.finish()),
        Arc::new(duration.finish()),
        Arc::new(status.finish()),
        Arc::new(attrs.finish()),
        Arc::new(resource.finish()),
    ];
    let utf8 = |n: &str| Field::new(n, DataType::Utf8, true);
    let map = |n: &str, a: &ArrayRef| Field::new(n, a.data_type().clone(), true);
    let schema = Schema::new(vec![
        utf8("trace_id"),
        utf8("span_id"),
        utf8("parent_span_id"),
        utf8("service_name"),
        utf8("name"),
        utf8("kind"),
        Field::new(
            "start_time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        ),
        Field::new("duration_ns", DataType::Int64, true),
        utf8("status_code"),
        map("attributes", &cols[9]),
        map("resource_attributes", &cols[10]),
    ]);
    RecordBatch::try_new(Arc::new(schema), cols).unwrap()
}

const SERVICES: [&str; 5] = ["gateway", "frontend", "cart", "payment", "mailer"];
const MINUTE: i64 = 60_000_000_000;

/// Random traces: calls between services (client → server below it), databases,
/// queues, external hosts (some of them services that export spans), orphans and skew.
fn corpus(rng: &mut StdRng, traces: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut next_id = 1u64;
    for t in 0..traces {
        let trace = format!("{:032x}", (t as u128 + 1) * 0x9e37_79b9_7f4a_7c15);
        let base = rng.random_range(0..20) * MINUTE + rng.random_range(0..MINUTE);
        let mut id = || {
            next_id += 1;
            format!("{:016x}", next_id.wrapping_mul(0x2545_f491_4f6c_dd1d))
        };
        let root_parent = if rng.random_bool(0.1) {
            Some(id())
        } else {
            None
        };
        let root = id();
        let s0 = SERVICES[rng.random_range(0..2)].to_string();
        let mut spans = vec![(root.clone(), s0.clone(), "server")];
        rows.push(Row {
            trace: trace.clone(),
            span: root,
            parent: root_parent,
            service: s0,
            name: "GET /".into(),
            kind: "server",
            start: base,
            duration: rng.random_range(1_000..50_000_000),
            error: rng.random_bool(0.1),
            attrs: vec![],
            component: rng.random_bool(0.5).then_some("gateway"),
        });
        for _ in 0..rng.random_range(0..8) {
            let (pid, pservice, _) = spans[rng.random_range(0..spans.len())].clone();
            let skew = rng.random_range(-2 * MINUTE..2 * MINUTE);
            let start = base + if rng.random_bool(0.2) { skew } else { 1000 };
            let sid = id();
            let choice = rng.random_range(0..6);
            let (kind, service, attrs): (&'static str, String, Vec<(&'static str, String)>) =
                match choice {
                    0 => (
                        "client",
                        pservice.clone(),
                        vec![("server.address", SERVICES[rng.random_range(0..5)].into())],
                    ),
                    1 => (
                        "client",
                        pservice.clone(),
                        vec![
                            ("db.system", "postgresql".into()),
                            ("db.namespace", "shop".into()),
                        ],
                    ),
                    2 => (
                        "producer",
                        pservice.clone(),
                        vec![
                            ("messaging.system", "kafka".into()),
                            ("messaging.destination.name", "orders".into()),
                        ],
                    ),
                    3 => (
                        "consumer",
                        SERVICES[rng.random_range(0..5)].into(),
                        vec![
                            ("messaging.system", "kafka".into()),
                            ("messaging.destination.name", "orders".into()),
                        ],
                    ),
                    4 => ("server", SERVICES[rng.random_range(0..5)].into(), vec![]),
                    _ => ("internal", pservice.clone(), vec![]),
                };
            // Some parents never arrive (sampled out, lost).
            let parent = if rng.random_bool(0.05) { id() } else { pid };
            rows.push(Row {
                trace: trace.clone(),
                span: sid.clone(),
                parent: Some(parent),
                service: service.clone(),
                name: format!("op{}", rng.random_range(0..3)),
                kind,
                start,
                duration: rng.random_range(1_000..50_000_000),
                error: rng.random_bool(0.1),
                attrs,
                component: None,
            });
            spans.push((sid, service, kind));
        }
    }
    rows
}

/// The single pass: every span's parent and children looked up among all spans.
fn reference(rows: &[Row], window: (i64, i64)) -> Aggregate {
    let mut names = Names::default();
    let mut spans: Vec<SpanFacts> = Vec::new();
    let all: Vec<&Row> = rows.iter().collect();
    read_batch(&batch(&all), &mut names, &mut spans);
    let mut index: IdMap<(u128, u64), usize> = IdMap::default();
    for (i, s) in spans.iter().enumerate() {
        index.entry((s.trace, s.span)).or_insert(i);
    }
    let parent_of = |s: &SpanFacts, i: usize| {
        s.has_parent()
            .then(|| index.get(&(s.trace, s.parent)).copied())
            .flatten()
            .filter(|&p| p != i)
    };
    let mut remote = vec![false; spans.len()];
    for (i, s) in spans.iter().enumerate() {
        if let Some(p) = parent_of(s, i)
            && spans[p].service != s.service
        {
            remote[p] = true;
        }
    }
    let mut tallies = Tallies::default();
    for (i, s) in spans.iter().enumerate() {
        if s.minute < window.0 || s.minute >= window.1 {
            continue;
        }
        let parent = parent_of(s, i).map(|p| ParentFacts::of(&spans[p]));
        contribute(s, parent, remote[i], &names.peers, &mut tallies);
    }
    Aggregate { names, tallies }
}

type Answer = (
    Vec<(EndName, EndName, Tally)>,
    Vec<(String, String, String, Tally)>,
);

fn answer(a: &Aggregate) -> Answer {
    let mut edges: Vec<_> = a
        .tallies
        .edges
        .iter()
        .map(|((s, t), tally)| {
            (
                end_name(*s, &a.names),
                end_name(*t, &a.names),
                tally.clone(),
            )
        })
        .collect();
    edges.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    let mut ops: Vec<_> = a
        .tallies
        .operations
        .iter()
        .map(|((s, o, k), tally)| {
            (
                a.names.services.get(*s).to_string(),
                a.names.operations.get(*o).to_string(),
                a.names.kinds.get(*k).to_string(),
                tally.clone(),
            )
        })
        .collect();
    ops.sort_by(|x, y| (&x.0, &x.1, &x.2).cmp(&(&y.0, &y.1, &y.2)));
    (edges, ops)
}

/// A file: its rows, its stored aggregates and its services' component kinds (which the
/// part writer records in the file's catalog entry).
struct File {
    rows: Vec<usize>,
    summary: Summary,
    components: BTreeMap<String, String>,
}

fn write_file(rows: &[Row], ids: Vec<usize>, rng: &mut StdRng) -> File {
    let mut b = SummaryBuilder::new();
    let mut kinds = BTreeMap::new();
    // Rows arrive in batches, as the part writer sees them.
    for chunk in ids.chunks(rng.random_range(1..64)) {
        let refs: Vec<&Row> = chunk.iter().map(|&i| &rows[i]).collect();
        let rows = batch(&refs);
        b.add_batch(&rows);
        components(&rows, &mut kinds);
    }
    let summary = Summary::decode(&b.finish().encode().unwrap()).unwrap();
    File {
        rows: ids,
        summary,
        components: kinds,
    }
}

fn merge_files(rows: &[Row], inputs: Vec<File>, rng: &mut StdRng) -> File {
    let mut b = SummaryBuilder::merging(inputs.iter().map(|f| &f.summary), None);
    let mut ids: Vec<usize> = inputs.iter().flat_map(|f| f.rows.clone()).collect();
    ids.shuffle(rng);
    let mut kinds = BTreeMap::new();
    for chunk in ids.chunks(rng.random_range(1..64)) {
        let refs: Vec<&Row> = chunk.iter().map(|&i| &rows[i]).collect();
        let rows = batch(&refs);
        b.add_batch(&rows);
        components(&rows, &mut kinds);
    }
    let summary = Summary::decode(&b.finish().encode().unwrap()).unwrap();
    File {
        rows: ids,
        summary,
        components: kinds,
    }
}

fn query(rows: &[Row], files: &[File], window: (i64, i64)) -> Aggregate {
    let mut b = SummaryBuilder::merging(files.iter().map(|f| &f.summary), Some(window));
    let wanted: std::collections::HashSet<String> = b.wanted_traces().into_iter().collect();
    // The lookup a query makes: every stored row of those traces.
    let hits: Vec<&Row> = rows.iter().filter(|r| wanted.contains(&r.trace)).collect();
    if !hits.is_empty() {
        b.add_batch(&batch(&hits));
    }
    b.finish_window()
}

#[test]
fn aggregates_equal_a_single_pass_over_every_span() {
    for seed in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let rows = corpus(&mut rng, 300);
        let mut ids: Vec<usize> = (0..rows.len()).collect();
        ids.shuffle(&mut rng);
        let mut files = Vec::new();
        let mut rest = &ids[..];
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(200));
            files.push(write_file(&rows, rest[..n].to_vec(), &mut rng));
            rest = &rest[n..];
        }
        // Compaction rounds: merge random groups.
        for _ in 0..rng.random_range(0..4) {
            files.shuffle(&mut rng);
            let n = rng.random_range(2..=files.len().max(2)).min(files.len());
            if n < 2 {
                break;
            }
            let inputs: Vec<File> = files.drain(..n).collect();
            files.push(merge_files(&rows, inputs, &mut rng));
        }
        for window in [
            (i64::MIN / 2, i64::MAX / 2),
            (3, 9),
            (0, 1),
            (-3, 2),
            (15, 40),
        ] {
            let want = reference(&rows, window);
            let got = query(&rows, &files, window);
            assert_eq!(
                answer(&got),
                answer(&want),
                "seed {seed}, window {window:?}, {} files",
                files.len()
            );
            // Node kinds: each file's recorded kinds, merged, are those of all rows.
            let mut merged = BTreeMap::new();
            for f in &files {
                for (service, kind) in &f.components {
                    note_component(&mut merged, service, kind);
                }
            }
            let mut all = BTreeMap::new();
            components(&batch(&rows.iter().collect::<Vec<_>>()), &mut all);
            assert_eq!(merged, all);
        }
    }
}

#[test]
fn a_file_with_whole_traces_defers_only_what_waits_outside_it() {
    let mut rng = StdRng::seed_from_u64(7);
    let rows: Vec<Row> = corpus(&mut rng, 50)
        .into_iter()
        .filter(|r| r.kind != "client" || !r.attrs.iter().any(|(k, _)| *k == "server.address"))
        .collect();
    let f = write_file(&rows, (0..rows.len()).collect(), &mut rng);
    // Only orphans wait: their parents are in no file.
    let orphans = f.summary.deferred.len();
    assert!(
        orphans > 0 && orphans < rows.len(),
        "{orphans} of {}",
        rows.len()
    );
    assert!(f.summary.deferred.iter().all(|d| d.parent_row.is_none()));
}

#[test]
fn damaged_or_foreign_aggregates_are_a_clear_error() {
    assert!(Summary::decode(b"not zstd").is_err());
    let s = Summary {
        version: 99,
        ..Summary::default()
    };
    let err = Summary::decode(&s.encode().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("version 99"), "{err}");
}
