//! Exports logged in the WAL as they arrived (`Store::append_wire`): replay turns them
//! back into exactly the acknowledged rows, and a store without a decoder refuses to
//! open such a WAL rather than skip its records.

use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use periscope_otlp as otlp;
use prost::Message;

/// The decoder the server gives its store, restated with the converter alone.
fn decode(signal: Signal, bytes: &[u8]) -> std::result::Result<RecordBatch, String> {
    assert_eq!(signal, Signal::Spans);
    otlp::spans_from_protobuf(bytes)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .batch
        .ok_or_else(|| "no rows".to_string())
}

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        wire_decoder: Some(decode),
        ..StoreConfig::new(dir)
    }
}

/// An export of `n` spans (one of them invalid) and its bytes.
fn export(n: usize, seed: u8) -> Vec<u8> {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: if i == 1 {
                vec![seed; 3]
            } else {
                vec![seed; 16]
            },
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("op{i}"),
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_000_000_100 + i as u64,
            attributes: vec![KeyValue {
                key: "http.route".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(format!("/r{i}"))),
                }),
                key_strindex: 0,
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn head(store: &Store) -> Vec<RecordBatch> {
    store.snapshot(Signal::Spans).batches
}

#[tokio::test]
async fn exports_logged_as_they_arrived_replay_into_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = Store::open(config(dir.path())).unwrap();
        for seed in 1..=3 {
            let bytes = export(5, seed);
            let rows = decode(Signal::Spans, &bytes).unwrap();
            assert_eq!(rows.num_rows(), 4, "the invalid span is not a row");
            store
                .append_wire(Signal::Spans, rows, &bytes)
                .await
                .unwrap();
        }
        head(&store)
    };
    let segment = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .unwrap();
    let logged = std::fs::read(&segment).unwrap();
    let raw = export(5, 1);
    assert!(
        logged.windows(raw.len()).any(|w| w == raw.as_slice()),
        "the WAL holds the export's bytes as they arrived"
    );
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(head(&store), before);
}

#[tokio::test]
async fn without_a_decoder_rows_are_logged_and_such_a_wal_is_refused_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        // No decoder: append_wire logs the rows, which any store can replay.
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let bytes = export(3, 9);
        store
            .append_wire(
                Signal::Spans,
                decode(Signal::Spans, &bytes).unwrap(),
                &bytes,
            )
            .await
            .unwrap();
    }
    {
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(head(&store).iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        let bytes = export(3, 8);
        store
            .append(Signal::Spans, decode(Signal::Spans, &bytes).unwrap())
            .await
            .unwrap();
    }
    let dir2 = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir2.path())).unwrap();
        let bytes = export(3, 7);
        store
            .append_wire(
                Signal::Spans,
                decode(Signal::Spans, &bytes).unwrap(),
                &bytes,
            )
            .await
            .unwrap();
    }
    let Err(error) = Store::open(StoreConfig::new(dir2.path())) else {
        panic!("a WAL of logged exports needs a decoder");
    };
    let error = error.to_string();
    assert!(error.contains("decoder"), "{error}");
    // Nothing was lost by the refusal: a store with the decoder still replays it.
    let store = Store::open(config(dir2.path())).unwrap();
    assert_eq!(head(&store).iter().map(|b| b.num_rows()).sum::<usize>(), 2);
}
