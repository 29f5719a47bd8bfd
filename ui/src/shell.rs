//! The page shell: document head, the navigation bar, the main area.

use axum::response::Html;
use leptos::prelude::*;

use crate::format::PRESETS;

/// The pages in the navigation bar: title and path.
pub const NAV: [(&str, &str); 8] = [
    ("Overview", "/ui/"),
    ("Service map", "/ui/map"),
    ("Traces", "/ui/traces"),
    ("Logs", "/ui/logs"),
    ("Metrics", "/ui/metrics"),
    ("SQL", "/ui/sql"),
    ("Alerts", "/ui/alerts"),
    ("Storage", "/ui/storage"),
];

/// Keyboard shortcuts, as progressive enhancement: `/` focuses the page's query box,
/// `g` then a letter opens a page (o overview, m map, t traces, l logs, x metrics,
/// s SQL, a alerts, d storage).
const KEYS: &str = r#"(function () {
  var pages = {o: '/ui/', m: '/ui/map', t: '/ui/traces', l: '/ui/logs', x: '/ui/metrics', s: '/ui/sql', a: '/ui/alerts', d: '/ui/storage'};
  var pendingG = false;
  document.addEventListener('keydown', function (e) {
    var t = e.target.tagName;
    if (t === 'INPUT' || t === 'TEXTAREA' || t === 'SELECT' || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === '/') {
      var box = document.querySelector('#log-query, #sql-query, #promql, #trace-search input[name=operation]');
      if (box) { e.preventDefault(); box.focus(); }
    } else if (e.key === 'g') {
      pendingG = true;
      setTimeout(function () { pendingG = false; }, 1000);
    } else if (pendingG && pages[e.key]) {
      window.location.href = pages[e.key];
    }
  });
})();"#;

/// Renders `body` inside the shell, with `active` (a path of [`NAV`]) highlighted.
pub fn page(title: &str, active: &str, body: impl IntoView + 'static) -> Html<String> {
    let links = NAV
        .iter()
        .map(|(name, path)| {
            let class = if *path == active { "active" } else { "" };
            view! { <a href=*path class=class>{*name}</a> }
        })
        .collect_view();
    let title = format!("{title} · Periscope");
    let html = view! {
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <title>{title}</title>
                <link rel="stylesheet" href="/ui/assets/style.css"/>
            </head>
            <body>
                <header class="top">
                    <a class="brand" href="/ui/">"Periscope"</a>
                    <nav>{links}</nav>
                </header>
                <main id="main">{body}</main>
                <script inner_html=KEYS></script>
            </body>
        </html>
    }
    .to_html();
    Html(format!("<!DOCTYPE html>{html}"))
}

/// `s` with `&`, `<`, `>`, `"` and `'` as character references, for raw HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The links of the time-range presets, the `active` one marked; `href` makes a link's
/// target from its preset name.
pub fn preset_links(active: &str, href: &dyn Fn(&str) -> String) -> impl IntoView + use<> {
    PRESETS
        .iter()
        .map(|(label, name, _)| {
            let class = if *name == active { "active" } else { "" };
            view! { <a href=href(name) class=class>{*label}</a> }
        })
        .collect_view()
}

/// The box shown when there is no data yet: how to send some.
pub fn no_data(what: &'static str) -> impl IntoView {
    view! {
        <div class="empty" id="empty">
            <p>{format!("No {what} yet.")}" Point an OpenTelemetry exporter at Periscope:"</p>
            <pre>"export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318   # OTLP/HTTP
# or OTLP/gRPC:
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc
export OTEL_SERVICE_NAME=checkout"</pre>
            <p class="muted">"Prometheus can remote-write to "<code>"/api/v1/write"</code>" on this port. See docs/metrics.md, \"Remote write\"."</p>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        let hostile = "</textarea><script>alert(1)</script>\"'&";
        let html = page(
            "t",
            "/ui/",
            view! {
                <p title=hostile>{hostile}</p>
                <textarea inner_html=escape(hostile)></textarea>
            },
        )
        .0;
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;/textarea&gt;&lt;script&gt;"), "{html}");
        assert_eq!(html.matches("</textarea>").count(), 1, "{html}");
    }
}
