//! SVG charts drawn on the server.

use leptos::prelude::*;

/// A bar chart of counts over time: `(bucket start ns, count)`, oldest first.
pub fn histogram(id: &'static str, buckets: &[(i64, u64)]) -> impl IntoView {
    let width = 1000.0_f64;
    let height = 100.0_f64;
    let max = buckets.iter().map(|(_, c)| *c).max().unwrap_or(0).max(1) as f64;
    let n = buckets.len().max(1) as f64;
    let bar = width / n;
    let bars = buckets
        .iter()
        .enumerate()
        .filter(|(_, (_, c))| *c > 0)
        .map(|(i, (start, count))| {
            let h = (*count as f64 / max) * (height - 14.0);
            let title = format!("{}: {count}", crate::format::time_ns(*start));
            view! {
                <rect class="bar" x=format!("{:.2}", i as f64 * bar) y=format!("{:.2}", height - h)
                    width=format!("{:.2}", (bar - 1.0).max(0.5)) height=format!("{h:.2}")>
                    <title>{title}</title>
                </rect>
            }
        })
        .collect_view();
    view! {
        <svg class="chart" id=id viewBox=format!("0 0 {width} {height}") preserveAspectRatio="none"
            role="img" aria-label="matches over time">
            <text x="4" y="10">{format!("max {max}")}</text>
            {bars}
        </svg>
    }
}
