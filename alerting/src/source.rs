//! Running a rule's expression at an instant: PromQL through the query crate's
//! evaluator, SQL through DataFusion (rows are instances), log searches through the
//! tantivy index (the match count in the window).

use async_trait::async_trait;
use periscope_query::QueryEngine;
use periscope_query::logsearch::{SearchRequest, search};
use periscope_storage::Store;
use serde_json::Value;

use crate::rules::RuleExpr;
use crate::state::{Instance, LabelSet};

/// What runs rule expressions for the engine: [`Sources`] in the server; tests wrap it
/// to hold one rule's evaluation back.
#[async_trait]
pub(crate) trait Evaluate: Send + Sync {
    /// Evaluates `expr` at `ts` (Unix ms).
    async fn eval(&self, expr: &RuleExpr, ts: i64) -> Result<Vec<Instance>, String>;
}

#[async_trait]
impl Evaluate for Sources {
    async fn eval(&self, expr: &RuleExpr, ts: i64) -> Result<Vec<Instance>, String> {
        Sources::eval(self, expr, ts).await
    }
}

/// What a rule reads.
#[derive(Clone, Debug)]
pub struct Sources {
    /// SQL and PromQL.
    pub engine: QueryEngine,
    /// Log searches.
    pub store: Store,
}

impl Sources {
    /// Evaluates `expr` at `ts` (Unix ms).
    ///
    /// # Errors
    /// The query's error, or a SQL result without a numeric `value` column.
    pub async fn eval(&self, expr: &RuleExpr, ts: i64) -> Result<Vec<Instance>, String> {
        match expr {
            RuleExpr::PromQL(q) => {
                let samples = periscope_query::promql::instant_samples(&self.engine, q, ts)
                    .await
                    .map_err(|e| e.message)?;
                Ok(samples
                    .into_iter()
                    .map(|(labels, value)| Instance {
                        labels: labels.into_iter().collect(),
                        value,
                    })
                    .collect())
            }
            RuleExpr::Sql { query, condition } => {
                let result = self
                    .engine
                    .execute(query)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(value_col) = result.schema.index_of("value").ok() else {
                    return Err("the query must return a numeric column named `value`".into());
                };
                let mut out = Vec::new();
                for batch in &result.batches {
                    for row in 0..batch.num_rows() {
                        let value = match periscope_query::value_json(batch.column(value_col), row)
                        {
                            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                            Value::Null => continue,
                            other => {
                                return Err(format!(
                                    "the `value` column must be numeric, not {other}"
                                ));
                            }
                        };
                        if condition.is_some_and(|c| !c.holds(value)) {
                            continue;
                        }
                        let mut labels = LabelSet::new();
                        for (i, field) in result.schema.fields().iter().enumerate() {
                            if i == value_col {
                                continue;
                            }
                            let cell = periscope_query::value_json(batch.column(i), row);
                            let text = periscope_query::cell_text(&cell);
                            if !text.is_empty() {
                                labels.insert(label_name(field.name()), text);
                            }
                        }
                        out.push(Instance { labels, value });
                    }
                }
                Ok(out)
            }
            RuleExpr::Logs {
                query,
                window,
                threshold,
            } => {
                let parsed = periscope_query::logsearch::syntax::parse(query)
                    .map_err(|e| format!("invalid log query: {}", e.message))?;
                let end = ts.saturating_mul(1_000_000).saturating_add(1);
                let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
                let request = SearchRequest {
                    expr: parsed,
                    start: end.saturating_sub(window_ns),
                    end,
                    limit: 1,
                    cursor: None,
                    buckets: 1,
                };
                let store = self.store.clone();
                let found = tokio::task::spawn_blocking(move || search(&store, &request))
                    .await
                    .map_err(|e| format!("log search failed: {e}"))?
                    .map_err(|e| e.to_string())?;
                let count = found.total as f64;
                Ok(if count > *threshold {
                    vec![Instance {
                        labels: LabelSet::new(),
                        value: count,
                    }]
                } else {
                    Vec::new()
                })
            }
        }
    }

    /// Checks what can only be checked against the running server: SQL rules plan
    /// (their tables and columns exist).
    ///
    /// # Errors
    /// The planner's message.
    pub async fn check(&self, expr: &RuleExpr) -> Result<(), String> {
        match expr {
            RuleExpr::Sql { query, .. } => {
                self.engine.check(query).await.map_err(|e| e.to_string())
            }
            _ => Ok(()),
        }
    }
}

/// A column name as a Prometheus label name: characters outside `[a-zA-Z0-9_]` become
/// `_`, and a leading digit gets a `_` in front (`attributes[http.route]` →
/// `attributes_http_route_`). Alias columns to choose the names.
fn label_name(column: &str) -> String {
    let mut out: String = column
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn column_names_become_label_names() {
        assert_eq!(super::label_name("service_name"), "service_name");
        assert_eq!(
            super::label_name("metrics.attributes[instance]"),
            "metrics_attributes_instance_"
        );
        assert_eq!(super::label_name("1x"), "_1x");
    }
}
