//! The query engine: one DataFusion session over the store's tables, read-only, with a
//! memory pool and a timeout for every query.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
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
    /// Memory all running queries may use together for sorts, joins and aggregations.
    pub memory_limit: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(30),
            memory_limit: 1024 * 1024 * 1024,
        }
    }
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
    config: QueryConfig,
    metrics: QueryMetrics,
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
        for signal in Signal::ALL {
            ctx.register_table(
                signal.name(),
                Arc::new(StoreTable::new(store.clone(), signal)),
            )
            .map_err(QueryError::from_datafusion)?;
        }
        Ok(QueryEngine {
            ctx,
            config,
            metrics: QueryMetrics::default(),
        })
    }

    /// The limits every query runs under.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// The engine's metrics, for registration on `/metrics`.
    pub fn metrics(&self) -> &QueryMetrics {
        &self.metrics
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
            let df = self
                .ctx
                .sql_with_options(sql, read_only())
                .await
                .map_err(QueryError::from_datafusion)?;
            let mut stream = df
                .execute_stream()
                .await
                .map_err(QueryError::from_datafusion)?;
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

    /// Runs `sql` and collects the result.
    ///
    /// # Errors
    /// As [`QueryEngine::check`], plus execution errors, the timeout and the memory
    /// limit.
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, QueryError> {
        self.limited(async {
            let df = self
                .ctx
                .sql_with_options(sql, read_only())
                .await
                .map_err(QueryError::from_datafusion)?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await.map_err(QueryError::from_datafusion)?;
            Ok(QueryResult { schema, batches })
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
