//! `periscope sql`: sends a query to a running server and prints the answer.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

/// Output formats of `periscope sql`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// The API's JSON answer.
    Json,
}

/// Arguments of `periscope sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The SQL query, e.g. "SELECT service_name, count(*) FROM spans GROUP BY 1".
    pub query: String,
    /// Base URL of the server's HTTP API.
    #[arg(
        long,
        env = "PERISCOPE_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Token with the `read` role, when the server requires one.
    #[arg(long, env = "PERISCOPE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Runs the query and prints the result to stdout.
pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let base = args.server.trim_end_matches('/');
    let url = match args.format {
        Format::Csv => format!("{base}/api/v1/sql?format=csv"),
        _ => format!("{base}/api/v1/sql"),
    };
    let mut request = reqwest::Client::new().post(&url);
    if let Some(t) = &args.token {
        request = request.bearer_auth(t);
    }
    let response = request
        .json(&serde_json::json!({ "query": args.query }))
        .send()
        .await
        .with_context(|| {
            format!("cannot reach Periscope at {base}; is `periscope serve` running? (--server)")
        })?;
    let status = response.status();
    let body = response.text().await.context("reading the answer")?;
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(body);
        bail!("{status}: {message}");
    }
    match args.format {
        Format::Csv | Format::Json => print!("{body}"),
        Format::Table => {
            let v: Value = serde_json::from_str(&body).context("the answer is not JSON")?;
            print!("{}", render_table(&v));
        }
    }
    Ok(())
}

fn cell(v: &Value) -> String {
    periscope_query::cell_text(v).replace(['\n', '\r', '\t'], " ")
}

/// An aligned table like `psql` prints, with the row count below.
fn render_table(result: &Value) -> String {
    let header: Vec<String> = result["columns"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .map(|c| c["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = result["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map(|r| r.iter().map(cell).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!(" {}\n", parts.join(" | ").trim_end())
    };
    let mut out = line(&header);
    let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format!("-{}-\n", sep.join("-+-")));
    for r in &rows {
        out.push_str(&line(r));
    }
    let n = rows.len();
    out.push_str(&format!("({n} row{})\n", if n == 1 { "" } else { "s" }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let v = serde_json::json!({
            "columns": [{"name": "service", "type": "Utf8"}, {"name": "n", "type": "Int64"}],
            "rows": [["checkout", 12], ["db", null]]
        });
        let t = render_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], " service  | n");
        assert_eq!(lines[1], "----------+----");
        assert_eq!(lines[2], " checkout | 12");
        assert_eq!(lines[3], " db       |");
        assert_eq!(lines[4], "(2 rows)");
    }
}
