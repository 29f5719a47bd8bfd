//! `periscope sql`: sends a query to a running server and prints the answer.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::header;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
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
    /// CA certificate(s) (PEM) that signed an `https://` server's certificate [default:
    /// the system's trusted CAs].
    #[arg(long, env = "PERISCOPE_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

/// The TLS client configuration for `server`: the CAs of `ca`, else the system's (only
/// read for an `https://` server).
fn tls_config(server: &str, ca: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca {
        for (i, cert) in crate::tls::read_certs("tls-ca", path)?
            .into_iter()
            .enumerate()
        {
            roots.add(cert).map_err(|e| {
                anyhow::anyhow!(
                    "--tls-ca: certificate {} in {} is not a usable CA certificate ({e})",
                    i + 1,
                    path.display()
                )
            })?;
        }
    } else if server.starts_with("https://") {
        let (added, _) =
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if added == 0 {
            bail!(
                "no trusted CA certificates found on this system: give the server's CA with --tls-ca FILE"
            );
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .context("the ring provider offers no TLS version")?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Runs the query and prints the result to stdout.
pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let base = args.server.trim_end_matches('/');
    let url = match args.format {
        Format::Csv => format!("{base}/api/v1/sql?format=csv"),
        _ => format!("{base}/api/v1/sql"),
    };
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("--server {base}: not a URL like http://127.0.0.1:7070"))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(base, args.tls_ca.as_deref())?)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut request = http::Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = &args.token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = serde_json::to_vec(&serde_json::json!({ "query": args.query }))?;
    let response = client
        .request(request.body(Full::new(Bytes::from(body)))?)
        .await
        .map_err(|e| {
            // hyper's error says only "client error (Connect)"; the cause (refused, TLS) is
            // in its source chain.
            let mut cause = String::new();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                cause = s.to_string();
                source = s.source();
            }
            anyhow::anyhow!(
                "cannot reach Periscope at {base} ({cause}); is `periscope serve` running? (--server, --tls-ca)"
            )
        })?;
    let status = response.status();
    // A CSV answer cut at a cap says so in a header.
    if let Some(w) = response
        .headers()
        .get("x-periscope-warnings")
        .and_then(|v| v.to_str().ok())
    {
        eprintln!("warning: {w}");
    }
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
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
            for w in v["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", w.as_str().unwrap_or_default());
            }
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
