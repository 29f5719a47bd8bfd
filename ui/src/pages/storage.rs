//! Storage: bytes on disk and rows per signal and per service, the oldest and newest data
//! kept, what is not yet flushed, how fast data arrives and what ingest refused, so an
//! operator sees what fills the disk.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Html;
use leptos::prelude::*;

use crate::format::{now_ns, time_ns};
use crate::shell::page;
use crate::state::UiState;

/// The tables and the column that dates their rows.
const TABLES: [(&str, &str); 3] = [
    ("spans", "start_time"),
    ("logs", "timestamp"),
    ("metrics", "timestamp"),
];

/// Bytes as `12.3 MiB`.
pub fn bytes_text(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Per table: files, rows in files, bytes (Parquet + log index), oldest and newest row.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    files: u64,
    rows: u64,
    bytes: u64,
    oldest: Option<i64>,
    newest: Option<i64>,
}

async fn rows_by_service(
    s: &UiState,
    table: &str,
    time: &str,
    since: i64,
) -> Vec<(String, u64, u64)> {
    let sql = format!(
        "SELECT service_name, count(*) AS n, \
           sum(CASE WHEN {time} >= to_timestamp_nanos({since}) THEN 1 ELSE 0 END) AS recent \
         FROM {table} GROUP BY service_name ORDER BY n DESC LIMIT 200"
    );
    match s.engine.execute(&sql).await {
        Ok(r) => r
            .batches
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |i| {
                    let cell = |c: usize| periscope_query::value_json(b.column(c), i);
                    (
                        periscope_query::cell_text(&cell(0)),
                        cell(1).as_u64().unwrap_or(0),
                        cell(2).as_u64().unwrap_or(0),
                    )
                })
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `GET /ui/storage`
/// "Retention: spans 7d, logs 7d, metrics kept forever" (see `--retention-*`).
fn retention_text(r: &periscope_query::storage::Retention) -> String {
    let one = |name: &str, d: Option<std::time::Duration>| match d {
        Some(d) => format!("{name} {}", humantime_short(d)),
        None => format!("{name} kept forever"),
    };
    format!(
        "Retention: {}, {}, {} (--retention-traces, --retention-logs, --retention-metrics).",
        one("spans", r.spans),
        one("logs", r.logs),
        one("metrics", r.metrics)
    )
}

/// `7d`, `36h`, `90m`, `45s`.
fn humantime_short(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s >= 86_400 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s >= 3_600 && s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s >= 60 && s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

pub async fn handler(State(s): State<UiState>) -> Html<String> {
    let mut totals: BTreeMap<&str, Totals> = BTreeMap::new();
    for f in s.store.files() {
        let Some((table, _)) = TABLES.iter().find(|(t, _)| *t == f.signal) else {
            continue;
        };
        let t = totals.entry(table).or_default();
        t.files += 1;
        t.rows += f.rows;
        t.bytes += f.bytes + f.index_bytes;
        t.oldest = Some(t.oldest.map_or(f.min_time, |o| o.min(f.min_time)));
        t.newest = Some(t.newest.map_or(f.max_time, |n| n.max(f.max_time)));
    }
    let disk: u64 = totals.values().map(|t| t.bytes).sum();
    let window_s = 300;
    let since = now_ns() - window_s * 1_000_000_000;
    let mut sections = Vec::new();
    let mut table_rows = Vec::new();
    for (table, time) in TABLES {
        let t = totals.get(table).copied().unwrap_or_default();
        let services = rows_by_service(&s, table, time, since).await;
        let all_rows: u64 = services.iter().map(|x| x.1).sum();
        let recent: u64 = services.iter().map(|x| x.2).sum();
        let unflushed = all_rows.saturating_sub(t.rows);
        table_rows.push(view! {
            <tr class="table-row" data-table=table>
                <td>{table}</td>
                <td class="num">{all_rows}</td>
                <td class="num">{unflushed}</td>
                <td class="num">{t.files}</td>
                <td class="num">{bytes_text(t.bytes)}</td>
                <td class="num">{if t.rows > 0 { format!("{:.1}", t.bytes as f64 / t.rows as f64) } else { "–".into() }}</td>
                <td>{t.oldest.map_or_else(|| "–".to_string(), time_ns)}</td>
                <td>{t.newest.map_or_else(|| "–".to_string(), time_ns)}</td>
                <td class="num">{format!("{:.1}", recent as f64 / window_s as f64)}</td>
            </tr>
        });
        let service_rows = services
            .into_iter()
            .map(|(name, n, _)| {
                let share = if all_rows > 0 {
                    n as f64 / all_rows as f64
                } else {
                    0.0
                };
                view! {
                    <tr>
                        <td>{name}</td>
                        <td class="num">{n}</td>
                        <td class="num">{format!("{:.1}%", share * 100.0)}</td>
                        <td class="num">{bytes_text((t.bytes as f64 * share) as u64)}</td>
                    </tr>
                }
            })
            .collect_view();
        sections.push(view! {
            <h3>{table}</h3>
            <table class="by-service" id=format!("services-{table}")>
                <thead><tr><th>"service"</th><th>"rows"</th><th>"share"</th><th>"≈ bytes on disk"</th></tr></thead>
                <tbody>{service_rows}</tbody>
            </table>
        });
    }
    let ingest = s
        .ops_metrics
        .as_ref()
        .map(|text| {
            text()
                .lines()
                .filter(|l| {
                    l.starts_with("periscope_ingest_") || l.starts_with("periscope_buffered_bytes")
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let body = view! {
        <h1>"Storage"</h1>
        <p id="disk-total">{format!("{} on disk in {} ({} not yet flushed to Parquet)", bytes_text(disk), s.store.data_dir().display(), bytes_text(s.store.buffered_bytes()))}</p>
        <p class="muted" id="retention">{retention_text(&s.store.retention())}</p>
        <table id="tables">
            <thead><tr><th>"table"</th><th>"rows"</th><th>"not yet in files"</th><th>"files"</th><th>"bytes on disk"</th><th>"bytes/row"</th><th>"oldest"</th><th>"newest"</th><th>"rows/s (5 min)"</th></tr></thead>
            <tbody>{table_rows}</tbody>
        </table>
        <h2>"By service"</h2>
        {sections}
        <h2>"Ingest since start"</h2>
        <pre id="ingest-counters">{ingest}</pre>
    };
    page("Storage", "/ui/storage", body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_well() {
        assert_eq!(super::bytes_text(512), "512 B");
        assert_eq!(super::bytes_text(1536), "1.5 KiB");
        assert_eq!(super::bytes_text(3 << 30), "3.0 GiB");
    }
}
