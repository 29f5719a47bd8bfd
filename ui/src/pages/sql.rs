//! The SQL console: a query box, the result table with column types, clear errors, a
//! CSV download, and example queries over `spans`, `logs` and `metrics`.

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use axum::extract::{Query, State};
use axum::response::{Html, Response};
use leptos::prelude::*;
use periscope_query::{AnswerWriter, QueryError, cell_text, value_json};
use serde::Deserialize;

use crate::format::q;
use crate::shell::page;
use crate::state::UiState;

/// Most rows drawn in the page (the CSV download has up to `--query-max-rows`).
const SHOWN_ROWS: usize = 1000;

/// The rows of an answer as the page draws them: column names and types, then each
/// cell's text and whether it is a number.
#[derive(Debug, Default)]
struct Table {
    columns: Vec<(String, String)>,
    rows: Vec<Vec<(String, bool)>>,
}

impl AnswerWriter for Table {
    fn columns(&mut self, schema: &Schema) {
        self.columns = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect();
    }

    fn row(&mut self, batch: &RecordBatch, row: usize) -> Result<usize, QueryError> {
        let mut bytes = 0;
        let cells = batch
            .columns()
            .iter()
            .map(|c| {
                let v = value_json(c, row);
                let numeric = v.is_number();
                let text = if v.is_null() {
                    "NULL".to_string()
                } else {
                    cell_text(&v)
                };
                bytes += text.len() + 16;
                (text, numeric)
            })
            .collect();
        self.rows.push(cells);
        Ok(bytes)
    }
}

/// Example queries: title and SQL.
const EXAMPLES: [(&str, &str); 4] = [
    (
        "Slowest services (spans)",
        "SELECT service_name, count(*) AS spans, avg(duration_ns) / 1e6 AS avg_ms\nFROM spans\nGROUP BY service_name\nORDER BY avg_ms DESC\nLIMIT 20",
    ),
    (
        "Latest errors (logs)",
        "SELECT timestamp, service_name, severity_text, body\nFROM logs\nWHERE severity_number >= 17\nORDER BY timestamp DESC\nLIMIT 50",
    ),
    (
        "Busiest metrics (metrics)",
        "SELECT metric_name, metric_type, count(*) AS points\nFROM metrics\nGROUP BY metric_name, metric_type\nORDER BY points DESC\nLIMIT 20",
    ),
    (
        "Error rate per route (spans)",
        "SELECT service_name, attributes['http.route'] AS route,\n       avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate\nFROM spans\nWHERE kind = 'server'\nGROUP BY 1, 2\nORDER BY error_rate DESC\nLIMIT 20",
    ),
];

/// `?q=`
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    q: Option<String>,
}

/// `GET /ui/sql?q=...`
pub async fn handler(State(s): State<UiState>, Query(p): Query<Params>) -> Html<String> {
    let query = p.q.unwrap_or_default();
    let outcome = if query.trim().is_empty() {
        None
    } else {
        // One row more than is shown tells whether there are more.
        let mut table = Table::default();
        let max = SHOWN_ROWS.min(s.engine.config().max_rows) + 1;
        Some(
            s.engine
                .answer(&query, max, &mut table)
                .await
                .map(|answered| (table, answered.warnings))
                .map_err(|e| e.to_string()),
        )
    };
    let result_view = match outcome {
        None => None,
        Some(Err(e)) => Some(view! { <div class="error" id="sql-error">{e}</div> }.into_any()),
        Some(Ok((result, warnings))) => Some(table(result, &warnings, &query).into_any()),
    };
    let examples = EXAMPLES
        .iter()
        .map(|(title, sql)| {
            view! { <li><a href=format!("/ui/sql?q={}", q(sql))>{*title}</a></li> }
        })
        .collect_view();
    let body = view! {
        <h1>"SQL"</h1>
        <form class="bar" method="get" action="/ui/sql">
            // Leptos writes a textarea's text unescaped; escape it here (and say so with
            // inner_html) so `</textarea>` in a query cannot end the element.
            <textarea name="q" id="sql-query" rows="6" spellcheck="false"
                placeholder="SELECT service_name, count(*) FROM spans GROUP BY 1"
                inner_html=crate::shell::escape(&query)></textarea>
            <button type="submit" id="run">"Run"</button>
            <span class="muted">"Tables: spans, logs, metrics. Read-only."</span>
        </form>
        {result_view}
        <h2>"Examples"</h2>
        <ul id="examples">{examples}</ul>
    };
    page("SQL", "/ui/sql", body)
}

fn table(result: Table, warnings: &[String], query: &str) -> impl IntoView + use<> {
    let header = result
        .columns
        .into_iter()
        .map(|(name, ty)| view! { <th>{name}<span class="type">{ty}</span></th> })
        .collect_view();
    let total = result.rows.len();
    let rows = result
        .rows
        .into_iter()
        .take(SHOWN_ROWS)
        .map(|cells| {
            let cells = cells
                .into_iter()
                .map(|(text, numeric)| view! { <td class:num=numeric>{text}</td> })
                .collect_view();
            view! { <tr>{cells}</tr> }
        })
        .collect_view();
    // Past SHOWN_ROWS the answer was cut on purpose; a cut below it is a cap's.
    let note = if total > SHOWN_ROWS {
        format!("More than {SHOWN_ROWS} rows; the first {SHOWN_ROWS} are shown, the CSV has more.")
    } else if let Some(w) = warnings.first() {
        format!("{total} rows shown: {w}")
    } else {
        format!("{total} row{}", if total == 1 { "" } else { "s" })
    };
    let csv = format!("/ui/sql.csv?q={}", q(query));
    view! {
        <p><span id="row-count">{note}</span>" · "<a id="csv" href=csv download="periscope.csv">"Download CSV"</a></p>
        <div style="overflow-x:auto">
            <table id="sql-result">
                <thead><tr>{header}</tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
}

/// `GET /ui/sql.csv?q=...`: the result as CSV, up to `--query-max-rows` rows.
pub async fn csv(State(s): State<UiState>, Query(p): Query<Params>) -> Response {
    let query = p.q.unwrap_or_default();
    periscope_query::csv_answer(&s.engine, &query, s.engine.config().max_rows).await
}
