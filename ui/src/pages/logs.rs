//! Log search: the query box with the log query language, time-range presets and a
//! custom range, the count histogram, hits with highlighted matches, severity colours,
//! expandable attributes and a link to the trace.

use axum::extract::{Query, State};
use axum::response::Html;
use leptos::prelude::*;
use periscope_query::logsearch::SearchRequest;
use serde::Deserialize;
use serde_json::Value;

use crate::chart::histogram;
use crate::format::{now_ns, preset_window, q};
use crate::shell::{no_data, page, preset_links};
use crate::state::UiState;

/// Hits per page.
const LIMIT: usize = 100;

/// Live tail, as progressive enhancement: with the box ticked, new matching lines stream
/// in from `/api/v1/logs/tail` (server-sent events) above the results. Text is set with
/// `textContent`, so log content stays text. Without JavaScript the page is unchanged.
const TAIL_SCRIPT: &str = r#"(function () {
  var box = document.getElementById('live-tail');
  if (!box || !window.EventSource) return;
  box.closest('p').hidden = false;
  var source = null;
  box.addEventListener('change', function () {
    if (source) { source.close(); source = null; box.removeAttribute('data-ready'); }
    if (!box.checked) return;
    var q = document.getElementById('log-query').value;
    source = new EventSource('/api/v1/logs/tail?query=' + encodeURIComponent(q));
    source.addEventListener('ready', function () { box.setAttribute('data-ready', '1'); });
    source.addEventListener('log', function (ev) {
      var h = JSON.parse(ev.data);
      var row = document.createElement('div');
      row.className = 'log tail';
      var meta = document.createElement('span');
      meta.className = 'meta';
      meta.textContent = h.timestamp + ' ' + h.service_name + ' ' + (h.severity_text || '');
      var body = document.createElement('span');
      body.className = 'body';
      body.textContent = typeof h.body === 'string' ? h.body : JSON.stringify(h.body);
      row.appendChild(meta);
      row.appendChild(body);
      var list = document.getElementById('tail-hits');
      list.insertBefore(row, list.firstChild);
      while (list.children.length > 500) list.removeChild(list.lastChild);
    });
  });
})();"#;

/// `?q=&range=&start=&end=`
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    q: Option<String>,
    range: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

/// The window: `start`/`end` when given (RFC 3339, Unix seconds, `now-15m`), else the
/// preset.
fn window(p: &Params) -> Result<(i64, i64, &'static str), String> {
    match (&p.start, &p.end) {
        (None, None) => Ok(preset_window(p.range.as_deref())),
        (start, end) => {
            let now = now_ns();
            let end = match end {
                Some(t) if !t.trim().is_empty() => periscope_query::time::parse_time(t, now)?,
                _ => now,
            };
            let start = match start {
                Some(t) if !t.trim().is_empty() => periscope_query::time::parse_time(t, now)?,
                _ => end - 3_600_000_000_000,
            };
            if start > end {
                return Err("start is after end".into());
            }
            Ok((start, end, ""))
        }
    }
}

/// `GET /ui/logs`
pub async fn handler(State(s): State<UiState>, Query(p): Query<Params>) -> Html<String> {
    let query = p.q.clone().unwrap_or_default();
    let found = match window(&p) {
        Err(e) => Err(format!("invalid time range: {e}")),
        Ok((start, end, preset)) => match periscope_query::logsearch::syntax::parse(&query) {
            Err(e) => Err(format!(
                "invalid query at column {}: {}",
                e.column, e.message
            )),
            Ok(expr) => {
                let request = SearchRequest {
                    expr,
                    start,
                    end: end.saturating_add(1),
                    limit: LIMIT,
                    cursor: None,
                    buckets: 60,
                };
                let store = s.store.clone();
                let timeout = s.engine.config().timeout;
                let deadline = Some((std::time::Instant::now() + timeout, timeout));
                match tokio::task::spawn_blocking(move || store.search_logs(&request, deadline))
                    .await
                {
                    Ok(Ok(r)) => Ok((r, preset)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("the search failed: {e}")),
                }
            }
        },
    };
    let active = match &found {
        Ok((_, preset)) => *preset,
        Err(_) => "",
    };
    let presets = preset_links(active, &|name| {
        format!("/ui/logs?q={}&range={name}", q(&query))
    });
    let results = match found {
        Err(e) => view! { <div class="error" id="logs-error">{e}</div> }.into_any(),
        Ok((r, _)) if r.total == 0 && query.trim().is_empty() => no_data("logs").into_any(),
        Ok((r, _)) => {
            let hits = r.hits.iter().map(hit).collect_view();
            let shown = r.hits.len();
            view! {
                <p id="log-total">{format!("{} matching lines", r.total)}
                    {(r.total as usize > shown).then(|| format!(", the newest {shown} shown"))}</p>
                {histogram("log-histogram", &r.histogram)}
                <div id="log-hits">{hits}</div>
            }
            .into_any()
        }
    };
    let body = view! {
        <h1>"Logs"</h1>
        <form class="bar" method="get" action="/ui/logs">
            <input type="text" class="query" name="q" id="log-query" value=query.clone()
                placeholder="timeout service:checkout severity>=warn"/>
            <input type="hidden" name="range" value=active/>
            <button type="submit" id="search">"Search"</button>
        </form>
        <div class="presets">{presets}
            <form class="bar" method="get" action="/ui/logs" style="display:inline-flex">
                <input type="hidden" name="q" value=query/>
                <input type="text" name="start" placeholder="start: now-2h or RFC 3339" value=p.start.unwrap_or_default()/>
                <input type="text" name="end" placeholder="end: now" value=p.end.unwrap_or_default()/>
                <button type="submit">"Apply"</button>
            </form>
        </div>
        <p hidden><label><input type="checkbox" id="live-tail"/>" Live tail (new matching lines appear here)"</label></p>
        <div id="tail-hits"></div>
        {results}
        <script inner_html=TAIL_SCRIPT></script>
    };
    page("Logs", "/ui/logs", body)
}

/// The CSS class of an OTLP severity number.
fn severity_class(number: i64) -> &'static str {
    match number {
        1..=4 => "sev-trace",
        5..=8 => "sev-debug",
        9..=12 => "sev-info",
        13..=16 => "sev-warn",
        17..=20 => "sev-error",
        21.. => "sev-fatal",
        _ => "sev-unset",
    }
}

/// `text` cut into (piece, highlighted) at the byte `ranges`, on character boundaries.
pub fn segments(text: &str, ranges: &[(usize, usize)]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut sorted: Vec<(usize, usize)> = ranges.to_vec();
    sorted.sort_unstable();
    for (start, end) in sorted {
        let (start, end) = (start.max(at).min(text.len()), end.min(text.len()));
        if start >= end || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
            continue;
        }
        if start > at {
            out.push((text[at..start].to_string(), false));
        }
        out.push((text[start..end].to_string(), true));
        at = end;
    }
    if at < text.len() {
        out.push((text[at..].to_string(), false));
    }
    out
}

fn hit(h: &Value) -> impl IntoView + use<> {
    let text = |k: &str| h[k].as_str().unwrap_or("").to_string();
    let body = match &h["body"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let ranges: Vec<(usize, usize)> = h["highlights"]["body"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r[0].as_u64()? as usize, r[1].as_u64()? as usize)))
        .collect();
    let pieces = segments(&body, &ranges)
        .into_iter()
        .map(|(piece, marked)| {
            if marked {
                view! { <mark>{piece}</mark> }.into_any()
            } else {
                piece.into_any()
            }
        })
        .collect_view();
    let severity = h["severity_number"].as_i64().unwrap_or(0);
    let class = format!("log {}", severity_class(severity));
    let trace = text("trace_id");
    let trace_link = (!trace.is_empty()).then(|| {
        view! { <a class="meta trace" href=format!("/ui/traces/{trace}")>"trace"</a> }
    });
    let attributes = serde_json::to_string_pretty(&h["attributes"]).unwrap_or_default();
    let resource = serde_json::to_string_pretty(&h["resource_attributes"]).unwrap_or_default();
    view! {
        <div class=class>
            <span class="meta">{text("timestamp")}</span>
            <span class="meta service">{text("service_name")}</span>
            <span class="meta severity">{text("severity_text")}</span>
            {trace_link}
            <span class="body">{pieces}</span>
            <details>
                <summary>"attributes"</summary>
                <pre>{attributes}</pre>
                <pre>{resource}</pre>
            </details>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::segments;

    #[test]
    fn highlights_split_on_character_boundaries() {
        assert_eq!(
            segments("payment timeout after 3s", &[(8, 15)]),
            [
                ("payment ".to_string(), false),
                ("timeout".to_string(), true),
                (" after 3s".to_string(), false)
            ]
        );
        // A range inside a multi-byte character is ignored rather than panicking.
        assert_eq!(segments("é", &[(1, 2)]), [("é".to_string(), false)]);
        assert_eq!(segments("ab", &[(0, 9)]), [("ab".to_string(), true)]);
    }
}
