//! `StoreTable`: a DataFusion table over one signal of the store (head + Parquet files).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::logical_expr::{cast, col, when};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::union::UnionExec;
use periscope_storage::{FileEntry, Signal, Store, derived};

/// Number of partitions the head and the files are each read in.
const PARTITIONS: usize = 2;

/// One table of the store.
#[derive(Debug)]
pub(crate) struct StoreTable {
    store: Store,
    signal: Signal,
    schema: SchemaRef,
}

impl StoreTable {
    pub fn new(store: Store, signal: Signal) -> Self {
        StoreTable {
            store,
            signal,
            schema: signal.schema(),
        }
    }
}

/// Inclusive bounds (Unix ns) on a time column that the filters imply.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeBounds {
    pub min: Option<i64>,
    pub max: Option<i64>,
}

impl TimeBounds {
    /// Bounds from conjunctive filters of the form `col op literal` (either side).
    pub fn from_filters(filters: &[Expr], column: &str) -> TimeBounds {
        let mut b = TimeBounds::default();
        for f in filters {
            b.add(f, column);
        }
        b
    }

    fn add(&mut self, expr: &Expr, column: &str) {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
            return;
        };
        if *op == Operator::And {
            self.add(left, column);
            self.add(right, column);
            return;
        }
        let (op, value) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) if c.name == column => (*op, v),
            (Expr::Literal(v, _), Expr::Column(c)) if c.name == column => match op.swap() {
                Some(op) => (op, v),
                None => return,
            },
            _ => return,
        };
        let Some(t) = nanos(value) else { return };
        match op {
            Operator::Gt | Operator::GtEq => self.min = Some(self.min.map_or(t, |m| m.max(t))),
            Operator::Lt | Operator::LtEq => self.max = Some(self.max.map_or(t, |m| m.min(t))),
            Operator::Eq => {
                self.min = Some(self.min.map_or(t, |m| m.max(t)));
                self.max = Some(self.max.map_or(t, |m| m.min(t)));
            }
            _ => {}
        }
    }

    /// Whether a file spanning `[min, max]` may hold matching rows.
    pub fn overlaps(&self, file: &FileEntry) -> bool {
        self.min.is_none_or(|lo| file.max_time >= lo)
            && self.max.is_none_or(|hi| file.min_time <= hi)
    }
}

fn nanos(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampNanosecond(Some(t), _) => Some(*t),
        ScalarValue::TimestampMicrosecond(Some(t), _) => t.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(t), _) => t.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(t), _) => t.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Files prune with them; DataFusion still filters every row above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self.store.snapshot(self.signal);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        if !snapshot.batches.is_empty() {
            let per = snapshot.batches.len().div_ceil(PARTITIONS);
            let partitions: Vec<Vec<_>> =
                snapshot.batches.chunks(per).map(|c| c.to_vec()).collect();
            inputs.push(MemorySourceConfig::try_new_exec(
                &partitions,
                Arc::clone(&self.schema),
                projection.cloned(),
            )?);
        }

        let bounds = TimeBounds::from_filters(filters, self.signal.time_column());
        let files: Vec<PartitionedFile> = snapshot
            .files
            .iter()
            .filter(|f| bounds.overlaps(f))
            .map(|f| {
                let path = snapshot.data_dir.join(&f.path);
                PartitionedFile::new(
                    path.to_string_lossy().trim_start_matches('/').to_string(),
                    f.bytes,
                )
            })
            .collect();
        if !files.is_empty() {
            // The session's Parquet options, so that filter pushdown (decode the filter
            // columns first, the rest only for matching rows) applies.
            let options = TableParquetOptions {
                global: state.config_options().execution.parquet.clone(),
                ..TableParquetOptions::default()
            };
            // Footers and page indexes are read once per file and kept in the runtime's
            // bounded metadata cache (files never change once written, and a path never
            // names two different files), instead of being read and parsed per query.
            let store = state
                .runtime_env()
                .object_store(ObjectStoreUrl::local_filesystem())?;
            let metadata = state.runtime_env().cache_manager.get_file_metadata_cache();
            // Spans files may leave `end_time` out (derived on read): the scan reads
            // `start_time` and `duration_ns` for it, and filters on it stay above the scan.
            let derive = self.end_time_derived(projection);
            let scan_projection = derive
                .as_ref()
                .map_or_else(|| projection.cloned(), |d| Some(d.scan.clone()));
            let mut source = ParquetSource::new(Arc::clone(&self.schema))
                .with_table_parquet_options(options)
                .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
                    store, metadata,
                )));
            let pushed = filters
                .iter()
                .filter(|f| !(self.signal == Signal::Spans && mentions(f, derived::END_TIME)))
                .cloned();
            if let Some(predicate) = pushed.reduce(|a, b| a.and(b)) {
                let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
                let physical = state.create_physical_expr(predicate, &df_schema)?;
                source = source.with_predicate(physical);
            }
            let per = files.len().div_ceil(PARTITIONS);
            let groups: Vec<FileGroup> = files
                .chunks(per)
                .map(|c| FileGroup::new(c.to_vec()))
                .collect();
            let config =
                FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                    .with_file_groups(groups)
                    .with_projection_indices(scan_projection)?
                    .with_limit(limit)
                    .build();
            let scan = DataSourceExec::from_data_source(config);
            inputs.push(match derive {
                Some(d) => d.project(scan, state)?,
                None => scan,
            });
        }

        if inputs.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}

/// Whether `expr` refers to column `name`.
fn mentions(expr: &Expr, name: &str) -> bool {
    expr.column_refs().iter().any(|c| c.name == name)
}

/// How a spans scan that returns `end_time` reads it: the columns read from the files,
/// and which output column is derived.
struct DerivedEndTime {
    /// The table's columns to return, in order.
    wanted: Vec<usize>,
    /// The columns read from the files: `wanted` plus what `end_time` is derived from.
    scan: Vec<usize>,
}

impl StoreTable {
    /// For a spans scan that returns `end_time`, how to derive it; `None` otherwise.
    fn end_time_derived(&self, projection: Option<&Vec<usize>>) -> Option<DerivedEndTime> {
        if self.signal != Signal::Spans {
            return None;
        }
        let end = self.schema.index_of(derived::END_TIME).ok()?;
        let wanted: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        if !wanted.contains(&end) {
            return None;
        }
        let mut scan = wanted.clone();
        for name in ["start_time", "duration_ns"] {
            let i = self.schema.index_of(name).ok()?;
            if !scan.contains(&i) {
                scan.push(i);
            }
        }
        Some(DerivedEndTime { wanted, scan })
    }
}

impl DerivedEndTime {
    /// `scan` (which read [`DerivedEndTime::scan`]) projected to the wanted columns, with
    /// `end_time` as stored or, in files that leave it out, `start_time + duration_ns`.
    fn project(
        &self,
        scan: Arc<dyn ExecutionPlan>,
        state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = scan.schema();
        let df_schema = DFSchema::try_from(input.as_ref().clone())?;
        let exprs = self
            .wanted
            .iter()
            .map(|&i| {
                let field = input.field(self.scan.iter().position(|&s| s == i).unwrap_or(i));
                let name = field.name().clone();
                let expr = if name == derived::END_TIME {
                    // As stored where the file has it, else derived (a CASE: the physical
                    // planner takes no `coalesce`).
                    when(col(derived::END_TIME).is_not_null(), col(derived::END_TIME)).otherwise(
                        col("start_time")
                            + cast(
                                col("duration_ns"),
                                arrow::datatypes::DataType::Duration(
                                    arrow::datatypes::TimeUnit::Nanosecond,
                                ),
                            ),
                    )?
                } else {
                    col(name.as_str())
                };
                Ok(ProjectionExpr::new(
                    state.create_physical_expr(expr, &df_schema)?,
                    name,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, scan)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(n: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(n),
            Some("UTC".into()),
        ))
    }

    fn file(min: i64, max: i64) -> FileEntry {
        FileEntry {
            signal: "spans".into(),
            path: String::new(),
            rows: 1,
            bytes: 1,
            min_time: min,
            max_time: max,
            index_bytes: 0,
            components: Default::default(),
        }
    }

    #[test]
    fn time_bounds_prune_files_outside_the_range() {
        let filters = vec![
            col("start_time").gt_eq(ts(100)),
            ts(200).gt(col("start_time")),
        ];
        let b = TimeBounds::from_filters(&filters, "start_time");
        assert_eq!(
            b,
            TimeBounds {
                min: Some(100),
                max: Some(200)
            }
        );
        assert!(b.overlaps(&file(150, 160)));
        assert!(b.overlaps(&file(50, 100)));
        assert!(!b.overlaps(&file(0, 99)));
        assert!(!b.overlaps(&file(201, 300)));
    }

    #[test]
    fn other_filters_do_not_bound_time() {
        let filters = vec![
            col("service_name").eq(lit("a")),
            col("start_time").not_eq(ts(5)),
        ];
        let b = TimeBounds::from_filters(&filters, "start_time");
        assert_eq!(b, TimeBounds::default());
    }

    /// The `spans` rows of `spans`, as the collector makes them.
    fn span_rows(
        spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
    ) -> arrow::record_batch::RecordBatch {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        periscope_otlp::spans(&request)
            .expect("spans")
            .batch
            .expect("rows")
    }

    #[tokio::test]
    async fn a_relative_data_directory_serves_its_flushed_files() {
        use opentelemetry_proto::tonic::trace::v1::Span;
        // `periscope serve --data-dir data`: the files are found from the working
        // directory, not from the file system's root.
        let dir = tempfile::tempdir_in(".").expect("temp dir");
        let cwd = std::env::current_dir().expect("working directory");
        let relative = dir.path().strip_prefix(&cwd).unwrap_or(dir.path());
        assert!(relative.is_relative(), "{}", relative.display());
        let store = Store::open(periscope_storage::StoreConfig::new(relative)).expect("open");
        assert!(store.data_dir().is_absolute());
        let spans = (0..10u64)
            .map(|i| Span {
                trace_id: vec![7; 16],
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: "op".into(),
                start_time_unix_nano: 1_700_000_000_000_000_000 + i,
                end_time_unix_nano: 1_700_000_000_000_000_100 + i,
                ..Default::default()
            })
            .collect();
        store
            .append(Signal::Spans, span_rows(spans))
            .await
            .expect("append");
        store.flush().await.expect("flush");
        assert_eq!(store.snapshot(Signal::Spans).files.len(), 1);
        let engine = crate::engine::QueryEngine::new(store, crate::engine::QueryConfig::default())
            .expect("engine");
        let out = engine
            .execute("SELECT count(*) AS n FROM spans")
            .await
            .expect("the flushed file is read");
        let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
            out.batches[0].column(0),
        )
        .value(0);
        assert_eq!(n, 10);
    }

    #[tokio::test]
    async fn end_time_reads_the_same_whether_stored_or_derived() {
        use opentelemetry_proto::tonic::trace::v1::Span;
        let base = 1_700_000_000_000_000_000u64;
        let batch = span_rows;
        let span = |i: u64, start: u64, end: u64| Span {
            trace_id: vec![9; 16],
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "op".into(),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(periscope_storage::StoreConfig::new(dir.path())).expect("open");
        // A file whose rows all derive end_time (left out), then one with a span that has
        // an end but no start (stored), then rows still in the head.
        let derivable: Vec<Span> = (0..5)
            .map(|i| span(i, base + i, base + 100 * i + 7))
            .collect();
        store
            .append(Signal::Spans, batch(derivable))
            .await
            .expect("append");
        store.flush().await.expect("flush");
        store
            .append(
                Signal::Spans,
                batch(vec![span(5, 0, base + 1_000), span(6, base + 6, base + 60)]),
            )
            .await
            .expect("append");
        store.flush().await.expect("flush");
        store
            .append(Signal::Spans, batch(vec![span(7, base + 7, base + 70)]))
            .await
            .expect("append");
        // The span without a start goes to the partition of time 0: three files.
        let files = store.snapshot(Signal::Spans).files;
        assert_eq!(files.len(), 3);
        let stores_end = |f: &FileEntry| {
            let file = std::fs::File::open(dir.path().join(&f.path)).expect("file");
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("parquet")
                .schema()
                .column_with_name("end_time")
                .is_some()
        };
        let mut stored: Vec<bool> = files.iter().map(stores_end).collect();
        stored.sort();
        assert_eq!(
            stored,
            [false, false, true],
            "only the file with the odd span stores end_time"
        );
        let engine = crate::engine::QueryEngine::new(store, crate::engine::QueryConfig::default())
            .expect("engine");
        let ends = |sql: &'static str| {
            let engine = engine.clone();
            async move {
                let out = engine.execute(sql).await.expect("query");
                let mut v: Vec<Option<i64>> = Vec::new();
                for b in &out.batches {
                    let a = arrow::array::AsArray::as_primitive::<
                        arrow::datatypes::TimestampNanosecondType,
                    >(b.column(0));
                    v.extend(
                        (0..a.len())
                            .map(|i| arrow::array::Array::is_valid(a, i).then(|| a.value(i))),
                    );
                }
                v.sort();
                v
            }
        };
        let b = base as i64;
        let mut want: Vec<Option<i64>> = (0..5).map(|i| Some(b + 100 * i + 7)).collect();
        want.extend([Some(b + 1_000), Some(b + 60), Some(b + 70)]);
        want.sort();
        assert_eq!(ends("SELECT end_time FROM spans").await, want);
        assert_eq!(
            ends("SELECT end_time FROM spans WHERE end_time >= '2023-11-14T22:13:20.000000300Z'")
                .await,
            want.iter()
                .copied()
                .filter(|e| e.is_some_and(|e| e >= b + 300))
                .collect::<Vec<_>>(),
            "filters on the derived column see derived values"
        );
        let out = engine
            .execute("SELECT count(*) FROM spans WHERE end_time - start_time = arrow_cast(duration_ns, 'Duration(Nanosecond)')")
            .await
            .expect("query");
        let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
            out.batches[0].column(0),
        )
        .value(0);
        assert_eq!(n, 7, "every span with a start has end = start + duration");
    }
}
