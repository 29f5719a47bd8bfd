//! Tests of the store: durability across restarts, flush, compaction, the memory
//! budget, WAL damage and the log index.

use super::*;
use crate::compaction::{self, MergeTarget};
use crate::flush;
use crate::layout;
use crate::logindex;
use crate::span_aggregates;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use periscope_otlp as otlp;

fn spans(n: usize, seed: u8) -> RecordBatch {
    spans_at(n, seed, 1_700_000_000_000_000_000)
}

/// `n` spans of trace `seed` starting at `base` (Unix ns).
fn spans_at(n: usize, seed: u8, base: u64) -> RecordBatch {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![seed; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: "op".into(),
            start_time_unix_nano: base + i as u64,
            end_time_unix_nano: base + 100 + i as u64,
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    otlp::spans(&req).unwrap().batch.unwrap()
}

fn rows(s: &Snapshot) -> usize {
    s.batches.iter().map(|b| b.num_rows()).sum::<usize>()
        + s.files.iter().map(|f| f.rows as usize).sum::<usize>()
}

#[tokio::test]
async fn acknowledged_rows_survive_a_reopen_without_flush() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.append(Signal::Spans, spans(3, 1)).await.unwrap();
        store.append(Signal::Spans, spans(2, 2)).await.unwrap();
        assert_eq!(rows(&store.snapshot(Signal::Spans)), 5);
    }
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 5);
    assert_eq!(rows(&store.snapshot(Signal::Logs)), 0);
}

#[tokio::test]
async fn flushed_rows_are_in_files_once_and_the_wal_is_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    store.append(Signal::Spans, spans(4, 1)).await.unwrap();
    store.flush().await.unwrap();
    let snap = store.snapshot(Signal::Spans);
    assert!(snap.batches.is_empty());
    assert_eq!(rows(&snap), 4);
    assert_eq!(store.buffered_bytes(), 0);
    store.append(Signal::Spans, spans(1, 2)).await.unwrap();
    drop(store);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(
        rows(&store.snapshot(Signal::Spans)),
        5,
        "no row lost or doubled"
    );
    // Only the segment after the flush may remain (plus the new one).
    let segments = wal::list_segments(&dir.path().join("wal")).unwrap();
    assert!(segments.iter().all(|id| *id > 1), "{segments:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_during_a_flush_see_every_row_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    for seed in 1..=20 {
        store.append(Signal::Spans, spans(50, seed)).await.unwrap();
    }
    let watcher = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = 0usize;
            loop {
                let snapshot = store.snapshot(Signal::Spans);
                assert_eq!(rows(&snapshot), 1000, "a row vanished or doubled mid-flush");
                seen += 1;
                if !snapshot.files.is_empty() {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    store.flush().await.unwrap();
    let snapshots = watcher.await.unwrap();
    assert!(snapshots > 0);
    let after = store.snapshot(Signal::Spans);
    assert!(after.batches.is_empty());
    assert_eq!(rows(&after), 1000);
}

#[tokio::test]
async fn over_the_memory_budget_appends_are_refused_retryably() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.max_buffered_bytes = 1;
    let store = Store::open(cfg).unwrap();
    let err = store.append(Signal::Spans, spans(3, 1)).await.unwrap_err();
    assert!(matches!(err, Error::Overloaded { .. }));
    assert!(err.is_retryable());
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 0);
    assert_eq!(store.buffered_bytes(), 0);
}

#[tokio::test]
async fn room_reserved_before_converting_becomes_exactly_what_the_rows_hold() {
    let dir = tempfile::tempdir().unwrap();
    let batch = spans(3, 1);
    let held = crate::schema::batch_bytes(&batch);
    let mut cfg = StoreConfig::new(dir.path());
    cfg.max_buffered_bytes = held * 3;
    let store = Store::open(cfg).unwrap();
    // An estimate over the budget is refused before any work, and holds nothing.
    let err = store.reserve_rows(Signal::Spans, held * 4).unwrap_err();
    assert!(matches!(err, Error::Overloaded { .. }));
    assert_eq!(store.buffered_bytes(), 0);
    // An estimate over what the rows hold is trimmed to it once they are stored...
    let reserved = store.reserve_rows(Signal::Spans, held * 2).unwrap();
    assert_eq!(store.buffered_bytes(), held * 2);
    store
        .append_reserved(Signal::Spans, batch.clone(), None, Some(reserved))
        .await
        .unwrap();
    assert_eq!(store.buffered_bytes(), held);
    // ...one under it is topped up, or refused (giving its estimate back) when the rest
    // does not fit.
    let short = store.reserve_rows(Signal::Spans, 1).unwrap();
    store
        .append_reserved(Signal::Spans, batch.clone(), None, Some(short))
        .await
        .unwrap();
    assert_eq!(store.buffered_bytes(), held * 2);
    let short = store.reserve_rows(Signal::Spans, held / 2).unwrap();
    let err = store
        .append_reserved(Signal::Spans, spans(6, 1), None, Some(short))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Overloaded { .. }));
    assert_eq!(
        store.buffered_bytes(),
        held * 2,
        "the refused estimate is given back"
    );
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 6);
}

#[tokio::test]
async fn a_crash_between_files_and_catalog_leaves_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.append(Signal::Spans, spans(4, 1)).await.unwrap();
    }
    // Simulate a flush that wrote its file but crashed before the catalog commit.
    let replayed =
        wal::replay_segment(&wal::segment_path(&dir.path().join("wal"), 1), None).unwrap();
    let batches: Vec<_> = replayed.batches.into_iter().map(|(_, b)| b).collect();
    flush::write_parts(
        dir.path(),
        Signal::Spans,
        &batches,
        1,
        &LogFields::new(),
        None,
        flush::TEST_LIMITS,
        &mut Vec::new(),
    )
    .unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 4);
    assert!(store.snapshot(Signal::Spans).files.is_empty());
}

/// A `logs` batch of the given bodies, one nanosecond apart (also used by other
/// modules' tests).
pub(crate) fn logs(bodies: &[&str]) -> RecordBatch {
    let timed: Vec<(String, u64)> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (b.to_string(), 1_700_000_000_000_000_000 + i as u64))
        .collect();
    logs_timed(&timed)
}

/// A `logs` batch of (body, Unix ns) rows.
fn logs_timed(rows: &[(String, u64)]) -> RecordBatch {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let records = rows
        .iter()
        .map(|(b, t)| LogRecord {
            time_unix_nano: *t,
            body: Some(AnyValue {
                value: Some(Value::StringValue(b.clone())),
            }),
            ..Default::default()
        })
        .collect();
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    otlp::logs(&req, 1).unwrap().batch.unwrap()
}

/// Matching documents in the view's head (skipping flushed batches) and files.
fn indexed(store: &Store, word: &str) -> (u64, u64) {
    use tantivy::query::TermQuery;
    let view = store.log_view();
    let term = tantivy::Term::from_field_text(store.log_fields().body, word);
    let query = TermQuery::new(term, tantivy::schema::IndexRecordOption::Basic);
    let collect = |min_head_seq, rows_are_docs| logindex::Collect {
        start: i64::MIN,
        end: i64::MAX,
        limit: 10,
        before: None,
        histogram: None,
        min_head_seq,
        rows_are_docs,
    };
    let head = view
        .head_searcher
        .search(&query, &collect(Some(view.min_head_seq), false))
        .unwrap()
        .total;
    let files = view
        .files
        .iter()
        .map(|f| {
            let (searcher, rows_are_docs) = store.log_file_searcher(f).unwrap();
            searcher
                .search(&query, &collect(None, rows_are_docs))
                .unwrap()
                .total
        })
        .sum();
    (head, files)
}

async fn until_indexed(store: &Store, word: &str, want: (u64, u64)) {
    for _ in 0..100 {
        if indexed(store, word) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{word}: {:?}, expected {want:?}", indexed(store, word));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_index_follows_rows_through_flush_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store
            .append(Signal::Logs, logs(&["disk full", "disk ok"]))
            .await
            .unwrap();
        until_indexed(&store, "disk", (2, 0)).await;
        store.flush().await.unwrap();
        // At once after the flush: counted in the file, not again in the head.
        assert_eq!(indexed(&store, "disk"), (0, 2));
        store
            .append(Signal::Logs, logs(&["disk again"]))
            .await
            .unwrap();
        until_indexed(&store, "disk", (1, 2)).await;
    }
    // Restart: the head index is rebuilt from the WAL; a lost file index is rebuilt.
    let file = Catalog::load(dir.path()).unwrap().files[0].path.clone();
    std::fs::remove_dir_all(logindex::index_path(&dir.path().join(file))).unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    until_indexed(&store, "disk", (1, 2)).await;
    store.append(Signal::Logs, logs(&["next"])).await.unwrap();
    let ids: Vec<u64> = store
        .snapshot(Signal::Logs)
        .batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("log_id")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::UInt64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(ids, [2, 3], "log ids continue after a restart");
}

fn compacting(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.compaction.interval = Duration::ZERO;
    config.compaction.min_files = 2;
    config.retention_grace = Duration::ZERO;
    config
}

/// A merge of `files`' partition into `name`, for calling `compaction::merge` directly.
fn target<'a>(
    store: &'a Store,
    files: &'a [FileEntry],
    name: &'a str,
    stop: &'a std::sync::atomic::AtomicBool,
) -> MergeTarget<'a> {
    MergeTarget {
        rel_dir: layout::partition_of(&files[0]),
        name,
        log_fields: store.log_fields(),
        limits: store.inner.config.write_limits(),
        read_bytes: 1 << 20,
        stop,
    }
}

fn read_file(dir: &Path, f: &FileEntry) -> RecordBatch {
    let file = std::fs::File::open(dir.join(&f.path)).unwrap();
    let batches: Vec<RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// (start time, trace id, span id) of every span in the table's files, in file order.
fn file_spans(dir: &Path, store: &Store) -> Vec<Vec<(i64, String, String)>> {
    use arrow::array::AsArray;
    store
        .snapshot(Signal::Spans)
        .files
        .iter()
        .map(|f| {
            let b = read_file(dir, f);
            let t = b
                .column_by_name("start_time")
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                .clone();
            let column = |name| b.column_by_name(name).unwrap().as_string::<i32>().clone();
            let (trace, span) = (column("trace_id"), column("span_id"));
            (0..b.num_rows())
                .map(|i| {
                    (
                        t.value(i),
                        trace.value(i).to_string(),
                        span.value(i).to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_files_into_one_file_of_sorted_row_groups_with_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = compacting(dir.path());
    // Small enough that one flush of 600 spans writes several chunk files.
    config.work_bytes = 64 << 10;
    let store = Store::open(config.clone()).unwrap();
    // Every span distinct (a trace per append), so a lost row and a doubled one cannot
    // cancel out.
    for flush in 0..4u8 {
        for k in 1..=3u8 {
            store
                .append(Signal::Spans, spans(200, flush * 3 + k))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
    }
    let before = store.snapshot(Signal::Spans).files;
    assert!(before.len() > 4, "one file per chunk: {}", before.len());
    let mut rows_before: Vec<_> = file_spans(dir.path(), &store).concat();
    rows_before.sort();
    assert_eq!(rows_before.len(), 2400);
    assert!(
        rows_before.windows(2).all(|w| w[0] != w[1]),
        "distinct rows"
    );

    for f in &before {
        assert!(
            span_aggregates::agg_path(&dir.path().join(&f.path)).exists(),
            "a flushed spans file has its span aggregates"
        );
    }
    let merged = store.compact().await;
    assert_eq!(merged, before.len());
    let after = store.snapshot(Signal::Spans).files;
    // The output's aggregates, merged from the inputs', are those of its rows.
    let out = dir.path().join(&after[0].path);
    let stored = span_aggregates::load(dir.path(), &after[0]).unwrap();
    assert_eq!(stored, span_aggregates::from_rows(&out).unwrap());
    let ops: u64 = stored
        .minutes
        .iter()
        .flat_map(|m| &m.operations)
        .map(|o| o.tally.calls)
        .sum();
    assert_eq!(ops, 2400, "every span counted once");
    assert!(after[0].index_bytes > 0, "the aggregates' size is counted");
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].path.contains("/c"), "{}", after[0].path);
    assert_eq!(after[0].rows, 2400);
    let in_file = file_spans(dir.path(), &store).concat();
    // Every row group is sorted by the sort key (trace id, then start time).
    let file = std::fs::File::open(dir.path().join(&after[0].path)).unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let groups = builder.metadata().num_row_groups();
    assert!(groups > 1, "small work memory makes several row groups");
    for g in 0..groups {
        let file = std::fs::File::open(dir.path().join(&after[0].path)).unwrap();
        let keys: Vec<(String, i64)> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .with_row_groups(vec![g])
                .build()
                .unwrap()
                .flat_map(|b| {
                    let b = b.unwrap();
                    let t = arrow::array::AsArray::as_primitive::<
                        arrow::datatypes::TimestampNanosecondType,
                    >(b.column_by_name("start_time").unwrap())
                    .clone();
                    let ids = arrow::array::AsArray::as_string::<i32>(
                        b.column_by_name("trace_id").unwrap(),
                    )
                    .clone();
                    (0..b.num_rows())
                        .map(|i| (ids.value(i).to_string(), t.value(i)))
                        .collect::<Vec<_>>()
                })
                .collect();
        assert!(
            keys.is_sorted(),
            "row group {g} is not sorted by trace, then time"
        );
    }
    let mut rows_after = in_file;
    rows_after.sort();
    assert_eq!(
        rows_after, rows_before,
        "the same rows, none lost or doubled"
    );

    // The inputs are deleted once their grace period is over, the output stays.
    store.delete_doomed();
    for f in &before {
        let path = dir.path().join(&f.path);
        assert!(!path.exists(), "{} left", f.path);
        assert!(
            !span_aggregates::agg_path(&path).exists(),
            "{} aggregates left",
            f.path
        );
    }
    assert!(dir.path().join(&after[0].path).exists());
    assert_eq!(store.compact().await, 0, "nothing more to merge");
    drop(store);
    let store = Store::open(config).unwrap();
    assert_eq!(store.snapshot(Signal::Spans).files, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_logs_keep_a_working_index() {
    let dir = tempfile::tempdir().unwrap();
    let config = compacting(dir.path());
    let store = Store::open(config.clone()).unwrap();
    for words in [
        ["disk full", "cpu hot"],
        ["disk ok", "net down"],
        ["disk gone", "fan"],
    ] {
        store.append(Signal::Logs, logs(&words)).await.unwrap();
        store.flush().await.unwrap();
    }
    until_indexed(&store, "disk", (0, 3)).await;
    assert_eq!(store.compact().await, 3);
    assert_eq!(store.snapshot(Signal::Logs).files.len(), 1);
    until_indexed(&store, "disk", (0, 3)).await;
    until_indexed(&store, "fan", (0, 1)).await;
    // Every hit's locator points at a row with the word in its body.
    let view = store.log_view();
    let file = &view.files[0];
    let batch = read_file(dir.path(), file);
    let bodies =
        arrow::array::AsArray::as_string::<i32>(batch.column_by_name("body").unwrap()).clone();
    let term = tantivy::Term::from_field_text(store.log_fields().body, "disk");
    let query = tantivy::query::TermQuery::new(term, tantivy::schema::IndexRecordOption::Basic);
    let (searcher, rows_are_docs) = store.log_file_searcher(file).unwrap();
    let found = searcher
        .search(&query, &logindex::Collect::any_time(10, rows_are_docs))
        .unwrap();
    assert_eq!(found.hits.len(), 3);
    for hit in &found.hits {
        assert!(bodies.value(hit.locator as usize).contains("disk"));
    }
    drop(store);
    let store = Store::open(config).unwrap();
    until_indexed(&store, "disk", (0, 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_or_after_the_compaction_commit_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = compacting(dir.path());
    config.retention_grace = Duration::from_secs(3600);
    {
        let store = Store::open(config.clone()).unwrap();
        for seed in 1..4u8 {
            store.append(Signal::Spans, spans(50, seed)).await.unwrap();
            store.flush().await.unwrap();
        }
        // A merge whose output was written but never committed: an orphan.
        let files = store.snapshot(Signal::Spans).files;
        let stop = std::sync::atomic::AtomicBool::new(false);
        let target = target(&store, &files, "c999999999999-000.parquet", &stop);
        let orphan = compaction::merge(dir.path(), Signal::Spans, &files, &target)
            .unwrap()
            .unwrap();
        assert!(dir.path().join(&orphan.path).exists());
    }
    let store = Store::open(config.clone()).unwrap();
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 150);
    assert_eq!(store.snapshot(Signal::Spans).files.len(), 3);
    assert!(
        !dir.path()
            .join(layout::partition_of(
                &store.snapshot(Signal::Spans).files[0]
            ))
            .join("c999999999999-000.parquet")
            .exists(),
        "the uncommitted output was removed"
    );
    assert!(
        !dir.path()
            .join(layout::partition_of(
                &store.snapshot(Signal::Spans).files[0]
            ))
            .join("_c999999999999-000.agg")
            .exists(),
        "and its span aggregates"
    );
    // A committed merge whose inputs were not deleted yet when the process died.
    let inputs = store.snapshot(Signal::Spans).files;
    assert_eq!(store.compact().await, 3);
    for f in &inputs {
        assert!(
            dir.path().join(&f.path).exists(),
            "inputs wait for their grace"
        );
    }
    drop(store);
    let store = Store::open(config).unwrap();
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 150);
    assert_eq!(store.snapshot(Signal::Spans).files.len(), 1);
    for f in &inputs {
        let path = dir.path().join(&f.path);
        assert!(!path.exists(), "{} was not removed", f.path);
        assert!(
            !span_aggregates::agg_path(&path).exists(),
            "{} aggregates left",
            f.path
        );
    }
    let merged = &store.snapshot(Signal::Spans).files[0];
    assert!(span_aggregates::agg_path(&dir.path().join(&merged.path)).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_merge_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = compacting(dir.path());
    let store = Store::open(config.clone()).unwrap();
    for seed in 1..3u8 {
        store.append(Signal::Logs, logs(&["a", "b"])).await.unwrap();
        store.append(Signal::Spans, spans(10, seed)).await.unwrap();
        store.flush().await.unwrap();
    }
    let files = store.snapshot(Signal::Logs).files;
    let stop = std::sync::atomic::AtomicBool::new(true);
    let target = target(&store, &files, "c000000000001-000.parquet", &stop);
    let merged = compaction::merge(dir.path(), Signal::Logs, &files, &target).unwrap();
    assert!(merged.is_none());
    let left: Vec<_> = std::fs::read_dir(dir.path().join(target.rel_dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('c'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_fails_to_merge_leaves_the_others_merging() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(compacting(dir.path())).unwrap();
    let hour = 3_600_000_000_000u64;
    for seed in 1..=4u8 {
        // Two hours, two files each.
        let base = 1_700_000_000_000_000_000 + u64::from(seed % 2) * hour;
        store
            .append(Signal::Spans, spans_at(10, seed, base))
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let files = store.snapshot(Signal::Spans).files;
    assert_eq!(files.len(), 4);
    // Damage one file of the first partition.
    let broken = &files[0];
    std::fs::write(dir.path().join(&broken.path), b"not parquet").unwrap();
    let errors_before = store.inner.metrics.compaction_errors.get();
    assert_eq!(store.compact().await, 2, "the healthy partition is merged");
    assert_eq!(
        store.inner.metrics.compaction_errors.get(),
        errors_before + 1
    );
    let after = store.snapshot(Signal::Spans).files;
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(
        after.contains(broken),
        "the failed partition is left as it was"
    );
    let partition = dir.path().join(layout::partition_of(broken));
    let partial: Vec<_> = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('c'))
        .collect();
    assert!(partial.is_empty(), "no partial output left: {partial:?}");
}

/// Every Parquet or temporary file under `dir`.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && path.extension().is_none_or(|e| e != "index") {
            out.extend(data_files(&path));
        } else if path
            .extension()
            .is_some_and(|e| e == "parquet" || e == "tmp" || e == "index")
        {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_given_up_while_the_wal_is_slow_leave_no_budget_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    // A slow WAL: the writer stalls on the state lock after its first write.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, holding) = std::sync::mpsc::channel::<()>();
    let stall = {
        let store = store.clone();
        std::thread::spawn(move || {
            let _state = store.inner.state.read();
            held.send(()).unwrap();
            let _ = released.recv();
        })
    };
    holding.recv().unwrap();
    let tasks: Vec<_> = (0..300u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.append(Signal::Spans, spans(5, i as u8)).await })
        })
        .collect();
    // Until the writer's queue is full and appends wait to be queued.
    for _ in 0..3000 {
        if store.inner.commands.capacity() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.inner.commands.capacity(), 0, "the queue filled up");
    // The clients hang up (deadline, closed connection).
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    release.send(()).unwrap();
    stall.join().unwrap();
    store.flush().await.unwrap();
    assert_eq!(
        store.buffered_bytes(),
        0,
        "a given-up append kept its budget"
    );
    assert_eq!(store.inner.metrics.buffered_bytes.get(), 0);
    store.append(Signal::Spans, spans(5, 1)).await.unwrap();
}

/// Flips a byte in the middle of the `n`th record (from 0) of a format-2 segment.
fn damage_record(path: &Path, n: usize) {
    let mut data = std::fs::read(path).unwrap();
    let mut pos = 16;
    for _ in 0..n {
        let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
        pos += 12 + len;
    }
    let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
    data[pos + 12 + len / 2] ^= 0xff;
    std::fs::write(path, data).unwrap();
}

#[tokio::test]
async fn a_corrupt_record_mid_segment_is_counted_quarantined_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        for seed in 1..=3 {
            store.append(Signal::Spans, spans(3, seed)).await.unwrap();
        }
    }
    let wal_dir = dir.path().join("wal");
    let segment = wal::segment_path(&wal_dir, 1);
    damage_record(&segment, 1);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(
        rows(&store.snapshot(Signal::Spans)),
        6,
        "the records after the bad one are back"
    );
    assert_eq!(store.metrics().wal_corrupt_records.get(), 1);
    assert_eq!(store.metrics().wal_quarantined_segments.get(), 1);
    let mut registry = prometheus_client::registry::Registry::default();
    store.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("periscope_wal_corrupt_records_total 1"),
        "{text}"
    );
    // The flush that covers the segment deletes it from the WAL, not from quarantine.
    store.flush().await.unwrap();
    assert!(!segment.exists());
    let kept = wal_dir.join(wal::QUARANTINE).join("000000000001.wal");
    let replayed = wal::replay_segment(&kept, None).unwrap();
    assert_eq!((replayed.batches.len(), replayed.corrupt), (2, 1));
    drop(store);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 6);
    assert_eq!(
        store.metrics().wal_corrupt_records.get(),
        0,
        "reported once"
    );
}

#[tokio::test]
async fn after_a_failed_wal_write_acknowledged_rows_never_land_after_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    {
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.append(Signal::Spans, spans(3, 1)).await.unwrap();
        wal::inject_fault(&wal::segment_path(&wal_dir, 1));
        let error = store.append(Signal::Spans, spans(3, 2)).await.unwrap_err();
        assert!(matches!(error, Error::Io { .. }), "{error}");
        store.append(Signal::Spans, spans(4, 3)).await.unwrap();
        assert_eq!(wal::list_segments(&wal_dir).unwrap(), [1, 2]);
        let second = wal::replay_segment(&wal::segment_path(&wal_dir, 2), None).unwrap();
        assert_eq!((second.batches.len(), second.skipped), (1, 0));
    }
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 7);
    assert_eq!(store.buffered_bytes(), {
        let s = store.snapshot(Signal::Spans);
        s.batches.iter().map(schema::batch_bytes).sum::<u64>()
    });
}

#[tokio::test]
async fn a_segment_creation_that_failed_halfway_does_not_stop_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    store.append(Signal::Spans, spans(3, 1)).await.unwrap();
    // The next segment's file exists: its creation failed after the file was made.
    std::fs::write(wal::segment_path(&wal_dir, 2), b"PSC").unwrap();
    store.flush().await.unwrap();
    store.append(Signal::Spans, spans(2, 2)).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 5);
    drop(store);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 5);
}

#[tokio::test]
async fn a_failed_flush_deletes_the_files_it_wrote_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    store.append(Signal::Spans, spans(3, 1)).await.unwrap();
    store.append(Signal::Logs, logs(&["a", "b"])).await.unwrap();
    // The logs table's directory cannot be made: the spans files are written first.
    let blocker = dir.path().join("logs");
    std::fs::write(&blocker, b"").unwrap();
    store.flush().await.unwrap_err();
    assert_eq!(data_files(dir.path()), Vec::<PathBuf>::new());
    std::fs::remove_file(&blocker).unwrap();
    // The catalog cannot be written: every table's files are written first.
    let blocker = dir.path().join("catalog.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    store.flush().await.unwrap_err();
    assert_eq!(data_files(dir.path()), Vec::<PathBuf>::new());
    std::fs::remove_dir(&blocker).unwrap();
    store.flush().await.unwrap();
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 3);
    assert_eq!(rows(&store.snapshot(Signal::Logs)), 2);
    assert_eq!(data_files(dir.path()).len(), 3, "two files and one index");
}

#[tokio::test]
async fn replayed_rows_are_counted_at_their_real_size() {
    let dir = tempfile::tempdir().unwrap();
    let appended = {
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        for seed in 1..=20 {
            store.append(Signal::Spans, spans(50, seed)).await.unwrap();
        }
        store.buffered_bytes()
    };
    let mut config = StoreConfig::new(dir.path());
    // Room for all of them in one sorted chunk, so one file.
    config.work_bytes = appended * 4;
    let store = Store::open(config).unwrap();
    let replayed = store.buffered_bytes();
    assert!(
        replayed <= appended + appended / 10,
        "replayed rows count {replayed} bytes, {appended} when appended"
    );
    store.flush().await.unwrap();
    assert_eq!(store.snapshot(Signal::Spans).files.len(), 1);
    assert_eq!(store.buffered_bytes(), 0);
}

#[tokio::test]
async fn a_wal_of_the_old_format_is_replayed_and_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    std::fs::create_dir_all(&wal_dir).unwrap();
    let mut old = wal::legacy_record(Signal::Spans, &spans(3, 1));
    old.extend(wal::legacy_record(Signal::Logs, &logs(&["old format"])));
    std::fs::write(wal::segment_path(&wal_dir, 1), old).unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 3);
    store.flush().await.unwrap();
    assert_eq!(rows(&store.snapshot(Signal::Spans)), 3);
    assert_eq!(rows(&store.snapshot(Signal::Logs)), 1);
    assert!(!wal::segment_path(&wal_dir, 1).exists());

    // A newer format: a clear refusal, naming the segment.
    drop(store);
    let last = *wal::list_segments(&wal_dir).unwrap().last().unwrap();
    let path = wal::segment_path(&wal_dir, last);
    let mut newer = std::fs::read(&path).unwrap();
    newer[8] = 7;
    std::fs::write(&path, newer).unwrap();
    let error = Store::open(StoreConfig::new(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("{last:012}.wal")) && error.contains("format 7"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_index_queue_is_counted_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    store.append(Signal::Logs, logs(&["queued"])).await.unwrap();
    until_indexed(&store, "queued", (1, 0)).await;
    assert_eq!(store.metrics().log_index_queue_bytes.get(), 0);
}

/// Asserts that every `logs` file's index has its documents in row order: document n's
/// `log_id` is row n's.
fn assert_docs_are_rows(dir: &Path, store: &Store) {
    use arrow::array::AsArray;
    use arrow::datatypes::UInt64Type;
    let view = store.log_view();
    assert!(!view.files.is_empty());
    for file in &view.files {
        let (searcher, rows_are_docs) = store.log_file_searcher(file).unwrap();
        assert!(rows_are_docs, "{} was indexed from its rows", file.path);
        let batch = read_file(dir, file);
        let ids = batch
            .column_by_name("log_id")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let readers = searcher.segment_readers();
        assert_eq!(readers.len(), 1, "{}", file.path);
        let column = readers[0].fast_fields().u64("log_id").unwrap();
        let docs: Vec<u64> = (0..readers[0].max_doc())
            .map(|d| column.first(d).unwrap())
            .collect();
        assert_eq!(docs, ids.values().to_vec(), "{}", file.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_files_copy_their_index_from_the_head_in_row_order() {
    use std::collections::HashMap;
    let dir = tempfile::tempdir().unwrap();
    let config = compacting(dir.path());
    let store = Store::open(config.clone()).unwrap();
    const WORDS: [&str; 6] = ["disk", "cpu", "fan", "net", "ok", "down"];
    let hour = layout::NANOS_PER_HOUR as u64;
    let base = 472_222 * hour;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut want: HashMap<&str, u64> = HashMap::new();
    for _flush in 0..3 {
        for _batch in 0..3 {
            let rows: Vec<(String, u64)> = (0..40)
                .map(|_| {
                    let words: Vec<&str> = (0..1 + next() % 3)
                        .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                        .collect();
                    let mut unique = words.clone();
                    unique.sort_unstable();
                    unique.dedup();
                    for w in unique {
                        *want.entry(w).or_default() += 1;
                    }
                    // Two hours, out of order inside a batch.
                    (words.join(" "), base + next() % (2 * hour))
                })
                .collect();
            store.append(Signal::Logs, logs_timed(&rows)).await.unwrap();
        }
        store.flush().await.unwrap();
    }
    assert_eq!(store.log_view().files.len(), 6);
    assert_docs_are_rows(dir.path(), &store);
    for word in WORDS {
        assert_eq!(indexed(&store, word), (0, want[word]), "{word} after flush");
    }
    assert_eq!(store.compact().await, 6);
    assert_eq!(store.log_view().files.len(), 2);
    assert_docs_are_rows(dir.path(), &store);
    for word in WORDS {
        assert_eq!(
            indexed(&store, word),
            (0, want[word]),
            "{word} after compaction"
        );
    }
    drop(store);
    let store = Store::open(config).unwrap();
    for word in WORDS {
        assert_eq!(
            indexed(&store, word),
            (0, want[word]),
            "{word} after a restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_index_of_an_older_format_is_built_again_at_start() {
    // A data directory written by an earlier version: its log index holds FST term
    // dictionaries, which this build does not read.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fst-log-index");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture, dir.path());
    let index = dir.path().join("logs/2023-11-14/22/000000000001.index");
    assert!(!logindex::file::readable(&index, &LogFields::new()));
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert!(logindex::file::readable(&index, store.log_fields()));
    assert_eq!(indexed(&store, "disk"), (0, 3));
    assert_eq!(indexed(&store, "fan"), (0, 1));
    assert_eq!(rows(&store.snapshot(Signal::Logs)), 5);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Gauge points of `series` series (label `s`) at `times` (Unix ns), time-major as a
/// scraper sends them: series `k` has value `k * 1000 + i` at its `i`th time.
fn gauges(series: usize, times: &[u64]) -> RecordBatch {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data,
        number_data_point,
    };
    let mut points = Vec::new();
    for (i, t) in times.iter().enumerate() {
        for k in 0..series {
            points.push(NumberDataPoint {
                attributes: vec![KeyValue {
                    key: "s".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("series-{k}"))),
                    }),
                    ..Default::default()
                }],
                time_unix_nano: *t,
                value: Some(number_data_point::Value::AsDouble((k * 1000 + i) as f64)),
                ..Default::default()
            });
        }
    }
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "temperature".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: points,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    otlp::metrics(&req).unwrap().batch.unwrap()
}

/// The values of `runs` of a metrics file, read through its series index.
fn run_values(file: &crate::series_index::IndexedFile, runs: &[usize]) -> Vec<f64> {
    use arrow::array::AsArray;
    let mut out = Vec::new();
    file.read_runs(runs, &["value"], |b| {
        let v = b
            .column_by_name("value")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>();
        out.extend(v.values().iter().copied());
    })
    .unwrap();
    out
}

#[tokio::test]
async fn a_metrics_file_has_a_series_index_that_selects_its_runs_and_is_rebuilt_when_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let base = 1_700_000_000_000_000_000u64;
    let times: Vec<u64> = (0..5).map(|i| base + i * 15_000_000_000).collect();
    store
        .append(Signal::Metrics, gauges(3, &times))
        .await
        .unwrap();
    store.flush().await.unwrap();
    let files = store.snapshot(Signal::Metrics).files;
    assert_eq!(files.len(), 1);
    let path = dir.path().join(&files[0].path);
    let sidecar = crate::series_index::series_path(&path);
    assert!(sidecar.exists(), "the flush wrote {}", sidecar.display());
    assert!(files[0].index_bytes > 0, "the catalog counts the index");
    let opened = store.metric_files(&files).unwrap();
    let index = &opened[0].index;
    assert_eq!(
        index.len(),
        3,
        "one run per series: rows are grouped by series"
    );
    assert_eq!(index.total_rows(), 15);
    let mut by_label = Vec::new();
    for run in 0..index.len() {
        let pairs: Vec<(String, String)> = index
            .attribute_pairs(run)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(index.rows[run], 5);
        assert_eq!(index.min_time[run], times[0] as i64);
        // Stored in whole milliseconds, rounded outwards.
        let newest = times[4] as i64;
        assert!((newest..newest + 1_000_000).contains(&index.max_time[run]));
        by_label.push((pairs[0].1.clone(), run));
    }
    by_label.sort();
    let second = by_label[1].1;
    assert_eq!(by_label[1].0, "series-1");
    assert_eq!(
        run_values(&opened[0], &[second]),
        vec![1000.0, 1001.0, 1002.0, 1003.0, 1004.0]
    );
    let both = {
        let mut r = vec![by_label[0].1, by_label[2].1];
        r.sort();
        r
    };
    let mut values = run_values(&opened[0], &both);
    values.sort_by(f64::total_cmp);
    assert_eq!(
        values,
        vec![
            0.0, 1.0, 2.0, 3.0, 4.0, 2000.0, 2001.0, 2002.0, 2003.0, 2004.0
        ]
    );
    let family = &index.families[index.family[0] as usize];
    assert_eq!(index.string(family.name), "temperature");
    assert_eq!(index.string(family.kind), "gauge");
    drop(opened);
    drop(store);

    // Lost (or damaged) indexes are rebuilt from the rows, with the same runs.
    std::fs::remove_file(&sidecar).unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let rebuilt = store.metric_files(&files).unwrap();
    assert_eq!(rebuilt[0].index.len(), 3);
    assert_eq!(
        run_values(&rebuilt[0], &[second]),
        vec![1000.0, 1001.0, 1002.0, 1003.0, 1004.0]
    );
    drop(rebuilt);
    drop(store);
    std::fs::write(&sidecar, b"not an index").unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(store.metric_files(&files).unwrap()[0].index.len(), 3);

    // The index goes with its file.
    crate::store::gc::delete(dir.path(), &files[0]).unwrap();
    assert!(!sidecar.exists());
}

/// Every (time, value) of each run of a metrics file, by the run's `s` label.
fn runs_by_label(file: &crate::series_index::IndexedFile) -> Vec<(String, Vec<(i64, f64)>)> {
    use arrow::array::AsArray;
    let index = &file.index;
    let mut out = Vec::new();
    for run in 0..index.len() {
        let label = index
            .attribute_pairs(run)
            .find(|(k, _)| *k == "s")
            .map(|(_, v)| v.to_string())
            .unwrap();
        let mut points = Vec::new();
        file.read_runs(&[run], &["timestamp", "value"], |b| {
            let t = b
                .column_by_name("timestamp")
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
            let v = b
                .column_by_name("value")
                .unwrap()
                .as_primitive::<arrow::datatypes::Float64Type>();
            points.extend(t.values().iter().copied().zip(v.values().iter().copied()));
        })
        .unwrap();
        out.push((label, points));
    }
    out
}

#[tokio::test]
async fn metrics_files_merge_into_one_run_per_series_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(compacting(dir.path())).unwrap();
    let base = 1_700_000_000_000_000_000u64;
    let step = 15_000_000_000u64;
    // Three flushes of 40 series: two in time order, the third between them (a late
    // sender), so runs of one series overlap in time.
    let first: Vec<u64> = (0..4).map(|i| base + i * step).collect();
    let second: Vec<u64> = (4..8).map(|i| base + i * step).collect();
    let late: Vec<u64> = (0..3).map(|i| base + i * step + step / 2).collect();
    for times in [&first, &second, &late] {
        store
            .append(Signal::Metrics, gauges(40, times))
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let before = store.snapshot(Signal::Metrics).files;
    assert_eq!(before.len(), 3);
    let runs_before: usize = store
        .metric_files(&before)
        .unwrap()
        .iter()
        .map(|f| f.index.len())
        .sum();
    assert_eq!(runs_before, 120);
    assert_eq!(store.compact().await, 3);
    let after = store.snapshot(Signal::Metrics).files;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].rows, 40 * 11);
    let merged = store.metric_files(&after).unwrap();
    let runs = runs_by_label(&merged[0]);
    assert_eq!(runs.len(), 40, "one run per series");
    let mut labels: Vec<&str> = runs.iter().map(|(l, _)| l.as_str()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), 40, "each series once");
    for (label, points) in &runs {
        let k: usize = label.trim_start_matches("series-").parse().unwrap();
        assert_eq!(points.len(), 11, "{label}");
        assert!(
            points.windows(2).all(|w| w[0].0 < w[1].0),
            "{label}'s points are in time order: {points:?}"
        );
        // The values each flush wrote, at their times.
        let mut expected: Vec<(i64, f64)> = Vec::new();
        for times in [&first, &second, &late] {
            for (i, t) in times.iter().enumerate() {
                expected.push((*t as i64, (k * 1000 + i) as f64));
            }
        }
        expected.sort_by_key(|p| p.0);
        assert_eq!(points, &expected, "{label}");
    }
    let ordered: Vec<&str> = runs.iter().map(|(l, _)| l.as_str()).collect();
    let mut sorted = ordered.clone();
    sorted.sort_unstable();
    assert_eq!(ordered, sorted, "series follow each other in label order");
}

#[tokio::test]
async fn a_series_longer_than_a_row_group_merges_whole_over_several() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(compacting(dir.path())).unwrap();
    let base = 1_700_000_000_000_000_000u64;
    let first: Vec<u64> = (0..900).map(|i| base + i * 1_000_000_000).collect();
    let second: Vec<u64> = (900..1800).map(|i| base + i * 1_000_000_000).collect();
    for times in [&first, &second] {
        store
            .append(Signal::Metrics, gauges(2, times))
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let files = store.snapshot(Signal::Metrics).files;
    let stop = std::sync::atomic::AtomicBool::new(false);
    // A tiny memory allowance: row groups of the least rows a merge writes (1024).
    let mut merge_target = target(&store, &files, "merged.parquet", &stop);
    merge_target.read_bytes = 1;
    let merged = compaction::merge(dir.path(), Signal::Metrics, &files, &merge_target)
        .unwrap()
        .unwrap();
    assert_eq!(merged.rows, 3600);
    let path = dir.path().join(&merged.path);
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&path).unwrap())
            .unwrap();
    use parquet::file::reader::FileReader;
    assert_eq!(
        reader.metadata().num_row_groups(),
        4,
        "3,600 rows in row groups of 1,024"
    );
    let file = crate::series_index::IndexedFile::open(&path).unwrap();
    let runs = runs_by_label(&file);
    assert_eq!(
        runs.len(),
        2,
        "each series is one run across its row groups"
    );
    for (label, points) in &runs {
        assert_eq!(points.len(), 1800, "{label}");
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0), "{label}");
    }
}
