//! The web UI in a real headless Chromium: every page opened against a server loaded
//! with fixture data, the content a person would check asserted, hostile log text shown
//! as text, empty states, and a screenshot of each page under target/tmp/ui-screenshots.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value as Av};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::browser::Browser;
use crate::support::{Server, otlp};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn resource(service: &str, kind: &str, instance: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            otlp::kv("service.name", service),
            otlp::kv("service.version", "1.4.2"),
            otlp::kv("service.instance.id", instance),
            otlp::kv("periscope.component.kind", kind),
        ],
        ..Default::default()
    })
}

async fn post(server: &Server, path: &str, body: Vec<u8>) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", server.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("OTLP/HTTP");
    assert_eq!(r.status(), 200, "{path}");
}

/// A gateway calling checkout, which calls postgres; logs of checkout, one hostile.
async fn load_fixture(server: &Server) {
    let t = now_ns() - 5_000_000_000;
    let trace_id = vec![0x4b; 16];
    let mut gw = otlp::span(trace_id.clone(), vec![1; 8], "GET /checkout");
    gw.start_time_unix_nano = t;
    gw.end_time_unix_nano = t + 40_000_000;
    let mut client = otlp::span(trace_id.clone(), vec![2; 8], "GET /checkout");
    client.kind = 3;
    client.parent_span_id = vec![1; 8];
    client.start_time_unix_nano = t + 1_000_000;
    client.end_time_unix_nano = t + 39_000_000;
    client
        .attributes
        .push(otlp::kv("server.address", "checkout"));
    let mut server_span = otlp::span(trace_id.clone(), vec![3; 8], "GET /checkout");
    server_span.parent_span_id = vec![2; 8];
    server_span.start_time_unix_nano = t + 2_000_000;
    server_span.end_time_unix_nano = t + 38_000_000;
    let mut db: Span = otlp::span(trace_id.clone(), vec![4; 8], "SELECT orders");
    db.kind = 3;
    db.parent_span_id = vec![3; 8];
    db.start_time_unix_nano = t + 3_000_000;
    db.end_time_unix_nano = t + 20_000_000;
    db.attributes.push(otlp::kv("db.system", "postgresql"));
    db.attributes.push(otlp::kv("server.address", "orders-db"));
    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: resource("edge-gateway", "gateway", "gw-1"),
                scope_spans: vec![ScopeSpans {
                    spans: vec![gw, client],
                    ..Default::default()
                }],
                schema_url: String::new(),
            },
            ResourceSpans {
                resource: resource("checkout", "service", "checkout-1"),
                scope_spans: vec![ScopeSpans {
                    spans: vec![server_span, db],
                    ..Default::default()
                }],
                schema_url: String::new(),
            },
        ],
    };
    post(server, "/v1/traces", request.encode_to_vec()).await;

    let long = "x".repeat(5000);
    let bodies = [
        "payment timeout after 3s".to_string(),
        "<script>document.title='owned'</script><b>bold</b> &amp; <img src=x onerror=alert(1)>"
            .to_string(),
        format!("unbroken {long}"),
    ];
    let records = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| LogRecord {
            time_unix_nano: t + i as u64 * 1_000_000,
            severity_number: 17,
            severity_text: "ERROR".into(),
            body: Some(AnyValue {
                value: Some(Av::StringValue(b.clone())),
            }),
            attributes: vec![
                otlp::kv("http.route", "/checkout"),
                otlp::kv("note", "<script>document.title='owned'</script>"),
            ],
            trace_id: trace_id.clone(),
            span_id: vec![3; 8],
            ..Default::default()
        })
        .collect();
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("checkout", "service", "checkout-1"),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    post(server, "/v1/logs", logs.encode_to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: ui\n    interval: 200ms\n    rules:\n      - alert: CheckoutErrors\n        \
         logs: {query: 'severity>=error service:checkout', window: 1h, threshold: 1}\n        \
         annotations: {summary: '{{ $value }} errors <b>now</b>'}\n",
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--rules", rules.to_str().unwrap()],
    );
    load_fixture(&server).await;
    let browser = Browser::start().await;
    let ui = |path: &str| format!("{}{path}", server.api());

    // `/` leads to the overview: components by kind, peers, the firing alert.
    browser.goto(&ui("/")).await;
    assert!(
        browser.url().await.ends_with("/ui/"),
        "{}",
        browser.url().await
    );
    let gateways = browser.texts("#kind-gateway .card h3").await;
    assert_eq!(gateways, ["edge-gateway"]);
    let peers = browser.text_of("#peers").await;
    assert!(
        peers.contains("orders-db") || peers.contains("postgresql"),
        "{peers}"
    );
    let mut firing = String::new();
    for _ in 0..50 {
        browser.goto(&ui("/ui/")).await;
        firing = browser.text_of("#firing").await;
        if firing.contains("CheckoutErrors") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(firing.contains("CheckoutErrors"), "{firing}");
    // Periscope's own ALERTS series are no component.
    let services = browser.texts("#kind-service .card h3").await;
    assert_eq!(services, ["checkout"]);
    browser.screenshot("overview").await;

    // Logs: matches highlighted, hostile text shown as text, long lines wrapped.
    browser.goto(&ui("/ui/logs?q=timeout&range=1h")).await;
    assert_eq!(browser.text_of("#log-total").await, "1 matching lines");
    assert_eq!(browser.texts("#log-hits mark").await, ["timeout"]);
    assert!(browser.all("#log-histogram rect.bar").await.len() == 1);
    browser.screenshot("logs-search").await;
    browser.goto(&ui("/ui/logs?range=1h")).await;
    let bodies = browser.texts("#log-hits .body").await;
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("<script>document.title='owned'</script><b>bold</b>")),
        "hostile text is shown as text: {bodies:?}"
    );
    assert_ne!(browser.eval("return document.title").await, "owned");
    assert!(
        browser
            .all("#log-hits b, #log-hits img, #log-hits script")
            .await
            .is_empty()
    );
    let overflow = browser
        .eval("return document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the page scrolls sideways by {overflow}"
    );
    browser.screenshot("logs-hostile").await;

    // Live tail (progressive enhancement): new matching lines stream in, as text.
    browser.goto(&ui("/ui/logs?q=tailme&range=1h")).await;
    browser.click(&browser.one("#live-tail").await).await;
    browser.wait("#live-tail[data-ready]").await;
    let tail = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("checkout", "service", "checkout-1"),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: now_ns(),
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(Av::StringValue("tailme <i>live</i>".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    post(&server, "/v1/logs", tail.encode_to_vec()).await;
    browser.wait("#tail-hits .log").await;
    let tailed = browser.text_of("#tail-hits .log .body").await;
    assert_eq!(tailed, "tailme <i>live</i>");

    // Log → trace: the waterfall nests and orders the spans, the detail shows a span.
    browser.goto(&ui("/ui/logs?q=timeout&range=1h")).await;
    browser.click(&browser.one("#log-hits a.trace").await).await;
    browser.wait("#waterfall .span-row").await;
    assert!(
        browser
            .url()
            .await
            .contains(&format!("/ui/traces/{}", "4b".repeat(16))),
        "{}",
        browser.url().await
    );
    let seen = browser.texts("#waterfall .span-row").await;
    let depths = browser
        .eval("return [...document.querySelectorAll('#waterfall .span-row')].map(r => r.dataset.depth + ' ' + r.querySelector('.service').textContent + ' ' + r.querySelector('.op').textContent)")
        .await;
    assert_eq!(
        depths,
        serde_json::json!([
            "0 edge-gateway GET /checkout",
            "1 edge-gateway GET /checkout",
            "2 checkout GET /checkout",
            "3 checkout SELECT orders"
        ]),
        "{seen:?}"
    );
    let critical = browser.all("#waterfall .span-row.critical").await.len();
    assert_eq!(critical, 4, "one chain: every span is on the critical path");
    browser.screenshot("trace").await;
    // Zoom into the first quarter: the axis ends at 10 ms, the root's bar fills the row.
    browser.click(&browser.one("#zoom a.zoom").await).await;
    browser.wait("#zoom").await;
    assert!(
        browser.url().await.contains("zoom=0-25"),
        "{}",
        browser.url().await
    );
    let axis = browser.texts(".waterfall .axis span").await;
    assert_eq!(axis.last().map(String::as_str), Some("10.0 ms"), "{axis:?}");
    let root_width = browser
        .eval("return document.querySelector('#waterfall .span-row .bar').style.width")
        .await;
    assert_eq!(root_width, "100%");
    browser
        .goto(&browser.url().await.replace("zoom=0-25", "zoom=0-100"))
        .await;
    // Collapsing a subtree hides its children (native <details>, no script needed).
    browser
        .click(&browser.one("#waterfall details.subtree > summary").await)
        .await;
    let state = browser
        .eval("return [document.querySelector('#waterfall details.subtree').open, location.href]")
        .await;
    let visible = browser
        .eval("return [...document.querySelectorAll('#waterfall .span-row')].filter(r => r.checkVisibility()).length")
        .await;
    assert_eq!(visible, 1, "the root's subtree is collapsed: {state}");
    browser
        .goto(&format!(
            "{}?span={}",
            browser.url().await.split('?').next().unwrap_or(""),
            "04".repeat(8)
        ))
        .await;
    let detail = browser.text_of("#span-detail").await;
    assert!(
        detail.contains("db.system") && detail.contains("postgresql"),
        "{detail}"
    );
    browser
        .goto(&format!(
            "{}?span={}",
            browser.url().await.split('?').next().unwrap_or(""),
            "03".repeat(8)
        ))
        .await;
    let span_logs = browser.texts("#span-logs li").await;
    assert_eq!(span_logs.len(), 3, "the logs of that span: {span_logs:?}");
    let overflow = browser
        .eval("return document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the trace page scrolls sideways by {overflow}"
    );
    browser.screenshot("trace-span").await;
    // Trace → service: the span's service opens on the service map with its RED.
    browser.click(&browser.one("#span-service").await).await;
    browser.wait("#service-panel").await;
    assert!(
        browser.url().await.contains("/ui/map"),
        "{}",
        browser.url().await
    );
    let panel = browser.text_of("#service-panel").await;
    assert!(panel.starts_with("checkout"), "{panel}");
    let ops = browser.texts("#operations tbody td").await;
    assert!(ops.contains(&"GET /checkout".to_string()), "{ops:?}");
    let nodes = browser
        .eval("return [...document.querySelectorAll('#service-map .node')].map(n => n.dataset.id).sort()")
        .await;
    assert_eq!(
        nodes,
        serde_json::json!(["checkout", "database:postgresql", "edge-gateway"]),
        "the map's nodes"
    );
    let edges = browser
        .eval("return [...document.querySelectorAll('#service-map .edge')].map(e => e.dataset.edge + ' ' + e.textContent).sort()")
        .await;
    let edges: Vec<String> = serde_json::from_value(edges).unwrap_or_default();
    assert_eq!(edges.len(), 2, "{edges:?}");
    assert!(
        edges[0].starts_with("checkout->database:postgresql ") && edges[0].contains("/s"),
        "{edges:?}"
    );
    assert!(
        edges[1].starts_with("edge-gateway->checkout ") && edges[1].contains("p99"),
        "{edges:?}"
    );
    // No two nodes overlap.
    let overlaps = browser
        .eval("const r=[...document.querySelectorAll('#service-map .node rect')].map(e=>e.getBoundingClientRect());let n=0;for(let i=0;i<r.length;i++)for(let j=i+1;j<r.length;j++){const a=r[i],b=r[j];if(a.left<b.right&&b.left<a.right&&a.top<b.bottom&&b.top<a.bottom)n++;}return n;")
        .await;
    assert_eq!(overlaps, 0);
    browser.screenshot("service-map").await;

    // Trace search: filter by service, one result, one dot in the scatter plot.
    browser
        .goto(&ui("/ui/traces?service=checkout&start=now-1h"))
        .await;
    assert_eq!(browser.all("#trace-results .trace-row").await.len(), 1);
    assert_eq!(browser.all("#trace-scatter circle").await.len(), 1);
    assert!(
        browser
            .text_of("#trace-results")
            .await
            .contains("edge-gateway: GET /checkout")
    );
    browser.screenshot("traces").await;
    browser.goto(&ui("/ui/traces?service=nobody")).await;
    assert!(
        browser
            .text_of("#no-traces")
            .await
            .contains("No trace matches")
    );

    // Metrics: pick a metric, a line per series with its legend; bad PromQL says why.
    let now_ms = (now_ns() / 1_000_000) as i64;
    let request = periscope_collector::remote_write::WriteRequest {
        timeseries: ["w1", "w2"]
            .iter()
            .map(|instance| periscope_collector::remote_write::TimeSeries {
                labels: vec![
                    crate::promql::label("__name__", "ui_queue_depth"),
                    crate::promql::label("job", "worker"),
                    crate::promql::label("instance", instance),
                ],
                samples: (0..10)
                    .map(|i| periscope_collector::remote_write::Sample {
                        value: f64::from(i) * if *instance == "w1" { 1.0 } else { 2.0 },
                        timestamp: now_ms - (10 - i64::from(i)) * 30_000,
                    })
                    .collect(),
                exemplars: vec![],
                histograms: vec![],
            })
            .collect(),
        metadata: vec![],
    };
    assert_eq!(
        crate::promql::remote_write(&server.api(), &request).await,
        204
    );
    browser.goto(&ui("/ui/metrics?range=15m")).await;
    let options = browser.texts("#metric-pick option").await;
    assert!(
        options.contains(&"ui_queue_depth".to_string()),
        "{options:?}"
    );
    browser
        .goto(&ui("/ui/metrics?query=ui_queue_depth&range=15m"))
        .await;
    assert_eq!(browser.all("#metric-chart polyline.series").await.len(), 2);
    let legend = browser.texts("#metric-legend li").await;
    assert_eq!(legend.len(), 2, "{legend:?}");
    assert!(
        legend[0].starts_with("ui_queue_depth{instance=\"w1\", job=\"worker\"}"),
        "{legend:?}"
    );
    browser.screenshot("metrics").await;
    // Picking a label value narrows the query to that series.
    let pick = browser.all("#label-picker a.label-value").await;
    let mut w2 = None;
    for a in pick {
        if browser.text(&a).await == "w2" {
            w2 = Some(a);
        }
    }
    browser.click(&w2.expect("a link for instance w2")).await;
    browser.wait("#metric-chart").await;
    assert_eq!(browser.all("#metric-chart polyline.series").await.len(), 1);
    let promql = browser
        .eval("return document.getElementById('promql').value")
        .await;
    assert_eq!(promql, "ui_queue_depth{instance=\"w2\"}");
    browser
        .goto(&ui("/ui/metrics?query=sum(%20&range=15m"))
        .await;
    let error = browser.text_of("#metrics-error").await;
    assert!(error.contains("invalid parameter"), "{error}");

    // SQL: type a query, run it, read the rows; a bad query says why.
    browser.goto(&ui("/ui/sql")).await;
    let editor = browser.one("#sql-query").await;
    browser
        .clear_and_type(
            &editor,
            "SELECT service_name, count(*) AS n FROM spans GROUP BY service_name ORDER BY service_name",
        )
        .await;
    browser.click(&browser.one("#run").await).await;
    browser.wait("#sql-result").await;
    let header = browser.texts("#sql-result th").await;
    assert!(
        header[0].starts_with("service_name") && header[1].starts_with('n'),
        "{header:?}"
    );
    let cells = browser.texts("#sql-result tbody td").await;
    assert_eq!(cells, ["checkout", "2", "edge-gateway", "2"]);
    assert!(
        browser.url().await.contains("/ui/sql?q=SELECT"),
        "a shareable URL"
    );
    browser.screenshot("sql").await;
    browser.goto(&ui("/ui/sql?q=SELECT+nope+FROM+spans")).await;
    let error = browser.text_of("#sql-error").await;
    assert!(error.contains("nope"), "{error}");
    let hostile = "SELECT 1 AS x -- </textarea><script>document.title='owned'</script>";
    browser
        .goto(&format!(
            "{}?q={}",
            ui("/ui/sql"),
            form_urlencoded::byte_serialize(hostile.as_bytes()).collect::<String>()
        ))
        .await;
    let text = browser
        .eval("return document.getElementById('sql-query').value")
        .await;
    assert_eq!(
        text, hostile,
        "the query round-trips into the editor as text"
    );
    assert_ne!(browser.eval("return document.title").await, "owned");

    // Alerts: the rule and its firing alert, with its annotation as text.
    browser.goto(&ui("/ui/alerts")).await;
    let active = browser.text_of("#active-alerts").await;
    assert!(
        active.contains("CheckoutErrors") && active.contains("firing"),
        "{active}"
    );
    assert!(active.contains("errors <b>now</b>"), "{active}");
    assert_eq!(browser.texts("#rules .rule-name").await, ["CheckoutErrors"]);
    browser.screenshot("alerts").await;

    // Storage: rows per table and per service, bytes, ingest counters.
    browser.goto(&ui("/ui/storage")).await;
    let spans_row = browser.texts("#tables tr[data-table=spans] td").await;
    assert_eq!(spans_row[1], "4", "{spans_row:?}");
    let logs_row = browser.texts("#tables tr[data-table=logs] td").await;
    assert_eq!(
        logs_row[1], "4",
        "three fixture lines and the tailed one: {logs_row:?}"
    );
    let by_service = browser.text_of("#services-spans").await;
    assert!(
        by_service.contains("checkout") && by_service.contains("edge-gateway"),
        "{by_service}"
    );
    let counters = browser.text_of("#ingest-counters").await;
    assert!(
        counters.contains("periscope_ingest_items_total"),
        "{counters}"
    );
    browser.screenshot("storage").await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_pages_say_what_to_do_next() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let browser = Browser::start().await;
    for (path, needle) in [
        ("/ui/", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ("/ui/logs", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ("/ui/alerts", "--rules"),
    ] {
        browser.goto(&format!("{}{path}", server.api())).await;
        let empty = browser.text_of("#empty").await;
        assert!(empty.contains(needle), "{path}: {empty}");
        let name = format!("empty{}", path.replace('/', "-").trim_end_matches('-'));
        browser.screenshot(&name).await;
    }
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_span_trace_opens_collapsed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let base = now_ns() - 60_000_000_000;
    let trace_id = vec![0x5a; 16];
    let id = |n: u64| (n + 1).to_be_bytes().to_vec();
    let spans: Vec<Span> = (0..10_000u64)
        .map(|i| {
            let depth = u64::from(64 - (3 * i + 1).leading_zeros()) / 2;
            Span {
                trace_id: trace_id.clone(),
                span_id: id(i),
                parent_span_id: if i == 0 { Vec::new() } else { id((i - 1) / 4) },
                name: format!("op-{}", i % 50),
                kind: 2,
                start_time_unix_nano: base + i * 1_000,
                end_time_unix_nano: base + 2_000_000_000 - depth * 10_000_000,
                ..Default::default()
            }
        })
        .collect();
    for chunk in spans.chunks(2_500) {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource("deep", "service", "deep-1"),
                scope_spans: vec![ScopeSpans {
                    spans: chunk.to_vec(),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        };
        post(&server, "/v1/traces", request.encode_to_vec()).await;
    }
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/traces/{}", server.api(), "5a".repeat(16)))
        .await;
    let summary = browser.text_of("#trace-summary").await;
    assert!(summary.contains("10000 spans"), "{summary}");
    let counts = browser
        .eval("const r=[...document.querySelectorAll('#waterfall .span-row')];return [r.length, r.filter(x => x.checkVisibility()).length]")
        .await;
    assert_eq!(counts[0], 10_000, "every span is in the page");
    let visible = counts[1].as_u64().unwrap_or(0);
    assert!(
        visible > 1 && visible <= 21,
        "subtrees below depth 2 start collapsed: {visible} rows shown"
    );
    let tip = browser
        .eval("return document.querySelector('#waterfall .span-row').title")
        .await;
    assert!(tip.as_str().unwrap_or("").contains("deep op-0"), "{tip}");
    browser.screenshot("trace-10000").await;
    // `/` focuses the search box on the logs page (keyboard shortcut, with JavaScript).
    browser.goto(&format!("{}/ui/logs", server.api())).await;
    browser
        .eval("document.dispatchEvent(new KeyboardEvent('keydown', {key: '/'})); return 0")
        .await;
    let focused = browser.eval("return document.activeElement.id").await;
    assert_eq!(focused, "log-query");
    browser.quit().await;
}
