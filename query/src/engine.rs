//! The query engine: one DataFusion session over the store's tables, read-only, with a
//! memory pool and a timeout for every query, and answers read batch by batch under a
//! row and byte cap (see [`QueryEngine::answer`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use periscope_storage::{Signal, Store};

use crate::error::QueryError;
use crate::metrics::QueryMetrics;
use crate::table::StoreTable;

/// Limits applied to every query.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// A query running longer is cancelled.
    pub timeout: Duration,
    /// Memory all running queries may use together for sorts, joins, aggregations,
    /// collected results and the answers being encoded.
    pub memory_limit: usize,
    /// Most rows an answer carries; past it the answer is cut and says so.
    pub max_rows: usize,
    /// Most encoded bytes an answer carries; past it the answer is cut and says so.
    pub max_bytes: usize,
    /// Most points a PromQL query may load or produce while it is evaluated.
    pub max_samples: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(30),
            memory_limit: 1024 * 1024 * 1024,
            max_rows: 100_000,
            max_bytes: 64 << 20,
            max_samples: 50_000_000,
        }
    }
}

/// Turns an answer's rows into what is sent back (JSON, CSV, an HTML table), one row at
/// a time, so that no answer is held twice.
pub trait AnswerWriter: Send {
    /// Called once with the answer's columns, before any row.
    fn columns(&mut self, schema: &Schema);
    /// Writes row `row` of `batch`; returns the bytes it added to the answer.
    ///
    /// # Errors
    /// When the row cannot be encoded.
    fn row(&mut self, batch: &RecordBatch, row: usize) -> Result<usize, QueryError>;
}

/// What [`QueryEngine::answer`] wrote.
#[derive(Debug)]
pub struct Answered {
    /// Rows written.
    pub rows: usize,
    /// Why the answer is incomplete, when it was cut at a cap.
    pub warnings: Vec<String>,
}

/// The rows a query returned.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Column names and types.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

/// Runs read-only SQL over the `spans`, `logs` and `metrics` tables.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    store: Store,
    config: QueryConfig,
    metrics: QueryMetrics,
    /// PromQL's view of each metrics file's series index, kept while the file is listed.
    series_views: Arc<crate::promql::SeriesViews>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("config", &self.config)
            .finish()
    }
}

impl QueryEngine {
    /// An engine over `store`.
    ///
    /// # Errors
    /// When DataFusion cannot set up its runtime.
    pub fn new(store: Store, config: QueryConfig) -> Result<QueryEngine, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit, 1.0)
            // No spilling: a query over its memory limit fails cleanly instead of filling
            // the disk the store needs.
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(QueryError::from_datafusion)?;
        let mut session = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(2);
        // Selective filters (a trace id, a service) decode their own columns first and
        // the wide ones (attribute maps, events) only for the rows that match.
        session.options_mut().execution.parquet.pushdown_filters = true;
        session.options_mut().execution.parquet.reorder_filters = true;
        let ctx = SessionContext::new_with_config_rt(session, runtime);
        ctx.register_udf(crate::udf::HistogramQuantile::udf());
        // Functions whose output size comes from an argument refuse what would not fit.
        for udf in crate::bounded::functions(config.memory_limit) {
            ctx.register_udf(udf);
        }
        for (name, udtf) in crate::bounded::table_functions(config.memory_limit) {
            ctx.register_udtf(&name, udtf);
        }
        for signal in Signal::ALL {
            ctx.register_table(
                signal.name(),
                Arc::new(StoreTable::new(store.clone(), signal)),
            )
            .map_err(QueryError::from_datafusion)?;
        }
        Ok(QueryEngine {
            ctx,
            store,
            config,
            metrics: QueryMetrics::default(),
            series_views: Arc::default(),
        })
    }

    /// This engine, counting its queries in `metrics` (another engine's), so that
    /// engines with separate memory pools show as one on `/metrics`.
    pub fn sharing_metrics(mut self, metrics: &QueryMetrics) -> Self {
        self.metrics = metrics.clone();
        self
    }

    /// The limits every query runs under.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// The engine's metrics, for registration on `/metrics`.
    pub fn metrics(&self) -> &QueryMetrics {
        &self.metrics
    }

    /// PromQL's cache of the metrics files' series (see `promql::indexed`).
    pub(crate) fn series_views(&self) -> Arc<crate::promql::SeriesViews> {
        self.series_views.clone()
    }

    /// The store the tables read, for APIs that read its files' aggregates directly.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The DataFusion session, for other query APIs built on the same tables.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one read-only SQL statement and hands each result batch to `each` as it is
    /// produced, so a large result never sits in memory whole. Same limits as
    /// [`QueryEngine::execute`].
    ///
    /// # Errors
    /// As [`QueryEngine::execute`].
    pub async fn for_each_batch(
        &self,
        sql: &str,
        mut each: impl FnMut(RecordBatch) + Send,
    ) -> Result<(), QueryError> {
        use futures::StreamExt;
        self.limited(async {
            let (_, mut stream) = self.stream(sql).await?;
            while let Some(batch) = stream.next().await {
                each(batch.map_err(QueryError::from_datafusion)?);
            }
            Ok(())
        })
        .await
    }

    /// Runs `run` under the query timeout and counts it in the engine's metrics.
    async fn limited<T>(
        &self,
        run: impl Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.config.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(QueryError::Timeout(self.config.timeout)),
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .queries
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
        self.metrics
            .seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Plans `sql` without running it: checks that it is one read-only statement over
    /// known tables and columns.
    ///
    /// # Errors
    /// [`QueryError::ReadOnly`] for DDL, DML, COPY and other statements;
    /// [`QueryError::Invalid`] for SQL that does not plan.
    pub async fn check(&self, sql: &str) -> Result<(), QueryError> {
        self.ctx
            .sql_with_options(sql, read_only())
            .await
            .map(|_| ())
            .map_err(QueryError::from_datafusion)
    }

    /// Runs `sql` and collects the result. The collected batches count against the
    /// query memory limit, so a result too large to hold fails instead of growing.
    ///
    /// # Errors
    /// As [`QueryEngine::check`], plus execution errors, the timeout and the memory
    /// limit.
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, QueryError> {
        use futures::StreamExt;
        self.limited(async {
            let (schema, mut stream) = self.stream(sql).await?;
            let held = self.reservation("collected result");
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(QueryError::from_datafusion)?;
                held.try_grow(batch.get_array_memory_size())
                    .map_err(QueryError::from_datafusion)?;
                batches.push(batch);
            }
            Ok(QueryResult { schema, batches })
        })
        .await
    }

    /// Plans one read-only statement and starts it: its columns and its batches.
    async fn stream(
        &self,
        sql: &str,
    ) -> Result<(SchemaRef, SendableRecordBatchStream), QueryError> {
        let df = self
            .ctx
            .sql_with_options(sql, read_only())
            .await
            .map_err(QueryError::from_datafusion)?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let stream = df
            .execute_stream()
            .await
            .map_err(QueryError::from_datafusion)?;
        Ok((schema, stream))
    }

    /// A reservation in the query memory pool.
    fn reservation(&self, name: &str) -> MemoryReservation {
        MemoryConsumer::new(name).register(&self.ctx.runtime_env().memory_pool)
    }

    /// Runs `sql` and writes its rows to `out` batch by batch, under the timeout and the
    /// memory limit (the encoded answer counts against the pool), stopping at
    /// `max_rows` rows or [`QueryConfig::max_bytes`] bytes with a warning that says so.
    ///
    /// # Errors
    /// As [`QueryEngine::execute`], plus the writer's errors.
    pub async fn answer(
        &self,
        sql: &str,
        max_rows: usize,
        out: &mut dyn AnswerWriter,
    ) -> Result<Answered, QueryError> {
        use futures::StreamExt;
        /// Pool reservations grow by this much at a time.
        const CHUNK: usize = 64 << 10;
        let max_bytes = self.config.max_bytes;
        self.limited(async {
            let (schema, mut stream) = self.stream(sql).await?;
            out.columns(&schema);
            let held = self.reservation("SQL answer");
            let (mut rows, mut bytes, mut warnings) = (0usize, 0usize, Vec::new());
            'batches: while let Some(batch) = stream.next().await {
                let batch = batch.map_err(QueryError::from_datafusion)?;
                for row in 0..batch.num_rows() {
                    if rows >= max_rows {
                        warnings.push(format!(
                            "the answer was cut at {max_rows} rows (--query-max-rows); add a LIMIT or aggregate to see the rest"
                        ));
                        break 'batches;
                    }
                    if bytes >= max_bytes {
                        warnings.push(format!(
                            "the answer was cut at {rows} rows, its {max_bytes}-byte limit (--query-max-bytes); select fewer columns or rows"
                        ));
                        break 'batches;
                    }
                    bytes += out.row(&batch, row)?;
                    rows += 1;
                    if bytes > held.size() {
                        held.try_grow((bytes - held.size()).max(CHUNK))
                            .map_err(QueryError::from_datafusion)?;
                    }
                }
            }
            Ok(Answered { rows, warnings })
        })
        .await
    }
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}
