//! The agent, the gateway and the mesh proxy: one trace across gateway → mesh proxy →
//! service → mesh proxy → service; the request path while the collector is down; and
//! the proxy's routing, balancing, health checks, timeouts and retries.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use periscope_agent::{
    ComponentKind, ExporterConfig, HttpClient, ResourceInfo, ServerLayer, Telemetry,
};
use periscope_gateway::{Gateway, GatewayConfig};
use serde_json::Value;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{Server, eventually};

/// Serves `router` on a free loopback port.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

fn fast_export(endpoint: &str) -> ExporterConfig {
    ExporterConfig {
        endpoint: endpoint.to_string(),
        batch_delay: Duration::from_millis(100),
        metrics_interval: Duration::from_millis(500),
        ..ExporterConfig::default()
    }
}

fn telemetry_toml(endpoint: &str) -> String {
    format!(
        "[telemetry]\nendpoint = \"{endpoint}\"\nbatch_delay = \"100ms\"\nmetrics_interval = \"500ms\"\n"
    )
}

async fn mesh_proxy(name: &str, service: SocketAddr, endpoint: &str) -> Gateway {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmode = \"mesh-proxy\"\nservice_name = \"{name}\"\nservice = \"{service}\"\n{}",
        telemetry_toml(endpoint)
    );
    let config = GatewayConfig::parse("sidecar.toml", &text).expect("sidecar config");
    let telemetry = Gateway::telemetry_for(&config, false).expect("telemetry");
    Gateway::start(&config, telemetry).await.expect("sidecar")
}

/// Runs `periscope gateway --config FILE` and returns the child and its address.
fn gateway_binary(config: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(["gateway", "--log", "warn", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start gateway");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("gateway="))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, addr)
}

fn col(row: &[Value], i: usize) -> &str {
    row[i].as_str().unwrap_or_default()
}

/// Installs the agent's `tracing` layer as this test process's subscriber (once). With no
/// default telemetry it exports only what happens inside instrumented requests.
fn install_tracing_layer() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(periscope_agent::TracingLayer::new());
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_across_gateway_mesh_proxies_and_services() {
    install_tracing_layer();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let endpoint = server.grpc();

    // inventory: the last service.
    let inventory_t = Telemetry::start(
        ResourceInfo::new("inventory", ComponentKind::Service),
        fast_export(&endpoint),
    )
    .expect("telemetry");
    let inventory = serve(
        Router::new()
            .route("/stock", get(|| async { "42" }))
            .layer(ServerLayer::new(inventory_t.clone())),
    )
    .await;
    let inventory_proxy = mesh_proxy("inventory-sidecar", inventory, &endpoint).await;

    // orders: calls inventory through inventory's sidecar.
    let orders_t = Telemetry::start(
        ResourceInfo::new("orders", ComponentKind::Service),
        fast_export(&endpoint),
    )
    .expect("telemetry");
    let client = HttpClient::new(orders_t.clone());
    let stock_url = format!("http://{}/stock", inventory_proxy.local_addr());
    let orders = serve(
        Router::new()
            .route(
                "/order",
                get(move || {
                    let client = client.clone();
                    let url = stock_url.clone();
                    async move {
                        // A `tracing` span and event inside the request: exported by the
                        // tracing layer into the same trace.
                        let db = tracing::info_span!(
                            "SELECT shop.orders",
                            otel.kind = "client",
                            db.system.name = "postgresql",
                            db.namespace = "shop"
                        );
                        async {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            tracing::info!(order_id = 7, "order stored");
                        }
                        .instrument(db)
                        .await;
                        match client.get(&url).await {
                            Ok((s, body)) if s.is_success() => (
                                StatusCode::OK,
                                format!("stock={}", String::from_utf8_lossy(&body)),
                            ),
                            other => (StatusCode::BAD_GATEWAY, format!("{other:?}")),
                        }
                    }
                }),
            )
            .layer(ServerLayer::new(orders_t.clone())),
    )
    .await;
    let orders_proxy = mesh_proxy("orders-sidecar", orders, &endpoint).await;

    // The edge gateway is the real binary.
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nservice_name = \"edge\"\n{}\n[[upstream]]\nname = \"orders\"\ntargets = [\"{}\"]\n\n[[route]]\npath_prefix = \"/api/orders\"\nupstream = \"orders\"\nstrip_prefix = true\n",
            telemetry_toml(&endpoint),
            orders_proxy.local_addr()
        ),
    )
    .expect("write config");
    let (mut gw, gw_addr) = gateway_binary(&config);

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let resp = reqwest::Client::new()
        .get(format!("http://{gw_addr}/api/orders/order?id=7"))
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .header("user-agent", "e2e-test")
        .send()
        .await
        .expect("request through the gateway");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "stock=42");

    let q = format!(
        "SELECT service_name, kind, name, span_id, parent_span_id, \
         attributes['http.request.method'], attributes['http.response.status_code'], \
         attributes['url.path'], attributes['server.address'], \
         resource_attributes['periscope.component.kind'], attributes['http.route'] \
         FROM spans WHERE trace_id = '{trace}' ORDER BY start_time"
    );
    let all = eventually("ten spans", 30, || async {
        let rows = server.rows(&q).await;
        (rows.len() >= 10).then_some(rows)
    })
    .await;
    assert_eq!(all.len(), 10, "{all:#?}");
    let (db, spans): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|r| col(r, 2) == "SELECT shop.orders");
    assert_eq!(db.len(), 1, "the tracing span: {db:?}");
    let expected = [
        ("edge", "server", "gateway"),
        ("edge", "client", "gateway"),
        ("orders-sidecar", "server", "mesh-proxy"),
        ("orders-sidecar", "client", "mesh-proxy"),
        ("orders", "server", "service"),
        ("orders", "client", "service"),
        ("inventory-sidecar", "server", "mesh-proxy"),
        ("inventory-sidecar", "client", "mesh-proxy"),
        ("inventory", "server", "service"),
    ];
    // Walk the chain by parent links, from the caller's span down.
    let mut parent = caller_span.to_string();
    for (service, kind, component) in expected {
        let row = spans
            .iter()
            .find(|r| col(r, 4) == parent)
            .unwrap_or_else(|| panic!("no child of {parent} ({service} {kind}): {spans:#?}"));
        assert_eq!(col(row, 0), service, "{row:?}");
        assert_eq!(col(row, 1), kind, "{row:?}");
        assert_eq!(col(row, 9), component, "{row:?}");
        assert_eq!(col(row, 5), "GET", "{row:?}");
        assert_eq!(
            row[6]
                .as_str()
                .map(str::to_owned)
                .or(row[6].as_i64().map(|v| v.to_string()))
                .as_deref(),
            Some("200"),
            "{row:?}"
        );
        if kind == "server" {
            assert!(
                col(row, 7).starts_with('/'),
                "url.path on a server span: {row:?}"
            );
        } else {
            assert_eq!(
                col(row, 8),
                "127.0.0.1",
                "server.address on a client span: {row:?}"
            );
        }
        parent = col(row, 3).to_string();
    }
    let edge_server = spans
        .iter()
        .find(|r| col(r, 0) == "edge" && col(r, 1) == "server")
        .expect("edge");
    assert_eq!(col(edge_server, 2), "GET /api/orders");
    assert_eq!(col(edge_server, 7), "/api/orders/order");
    assert_eq!(col(edge_server, 10), "/api/orders");

    // One access log per server span, carrying its trace and span ids.
    let logs = eventually("five access logs and one event", 30, || async {
        let rows = server
            .rows(&format!(
                "SELECT service_name, span_id, body, attributes['http.response.status_code'], \
                 attributes['user_agent.original'] FROM logs WHERE trace_id = '{trace}'"
            ))
            .await;
        (rows.len() >= 6).then_some(rows)
    })
    .await;
    assert_eq!(logs.len(), 6, "{logs:#?}");
    let (event, logs): (Vec<_>, Vec<_>) =
        logs.into_iter().partition(|l| col(l, 2) == "order stored");
    assert_eq!(event.len(), 1, "the tracing event: {event:?}");
    assert_eq!(
        col(&event[0], 1),
        col(&db[0], 3),
        "the event belongs to the span it was made in"
    );
    for s in spans.iter().filter(|r| col(r, 1) == "server") {
        let log = logs
            .iter()
            .find(|l| col(l, 1) == col(s, 3))
            .unwrap_or_else(|| panic!("no access log for {s:?}: {logs:#?}"));
        assert_eq!(col(log, 0), col(s, 0));
        assert!(col(log, 2).starts_with("GET /"), "{log:?}");
        assert!(col(log, 2).contains(" 200 "), "{log:?}");
    }
    let edge_log = logs.iter().find(|l| col(l, 0) == "edge").expect("edge log");
    assert_eq!(col(edge_log, 4), "e2e-test");

    // The duration histograms arrive as metrics, queryable with PromQL names.
    let buckets = eventually("http.server.request.duration of orders", 30, || async {
        let n = server
            .scalar(
                "SELECT count(*) FROM metrics WHERE metric_name = 'http.server.request.duration' \
                 AND service_name = 'orders' AND metric_type = 'histogram'",
            )
            .await;
        (n > 0).then_some(n)
    })
    .await;
    assert!(buckets > 0);
    let client_hist = eventually("http.client.request.duration of edge", 30, || async {
        let n = server
            .scalar(
                "SELECT count(*) FROM metrics WHERE metric_name = 'http.client.request.duration' \
                 AND service_name = 'edge'",
            )
            .await;
        (n > 0).then_some(n)
    })
    .await;
    assert!(client_hist > 0);

    // A broken config is refused with its line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:0\"\n\n[[route]]\nupstream = \"nowhere\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(["gateway", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: line 4") && err.contains("nowhere"),
        "{err}"
    );

    let _ = gw.kill();
    let _ = gw.wait();
    orders_proxy.shutdown(Duration::from_secs(1)).await;
    inventory_proxy.shutdown(Duration::from_secs(1)).await;
}

/// A TCP listener that accepts connections and never answers: the worst collector.
async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collector_down_costs_requests_nothing_and_drops_are_counted() {
    let upstream = serve(Router::new().route("/", get(|| async { "ok" }))).await;
    let (hole, hole_task) = black_hole().await;
    let config_text = |telemetry: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\nservice_name = \"edge-down\"\n{telemetry}\n\
             [[upstream]]\nname = \"app\"\ntargets = [\"{upstream}\"]\n\n[[route]]\nupstream = \"app\"\n"
        )
    };
    // Export calls take 2 s to time out: a request that waited for one would show it.
    let config = GatewayConfig::parse(
        "gw.toml",
        &config_text(&format!(
            "[telemetry]\nendpoint = \"http://{hole}\"\nqueue_size = 64\nmax_batch = 16\n\
             batch_delay = \"50ms\"\ntimeout = \"2s\"\nmax_retry_time = \"3s\"\nmetrics_interval = \"500ms\"\n"
        )),
    )
    .expect("config");
    let telemetry = Gateway::telemetry_for(&config, false).expect("telemetry");
    let on = Gateway::start(&config, telemetry).await.expect("gateway");
    let off_config = GatewayConfig::parse("gw.toml", &config_text("")).expect("config");
    let off = Gateway::start(&off_config, Telemetry::disabled())
        .await
        .expect("gateway");

    let http = reqwest::Client::new();
    let timings = |addr: SocketAddr| {
        let http = http.clone();
        async move {
            let mut t = Vec::new();
            for _ in 0..400 {
                let start = Instant::now();
                let r = http
                    .get(format!("http://{addr}/"))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 200);
                assert_eq!(r.text().await.expect("body"), "ok");
                t.push(start.elapsed());
            }
            t
        }
    };
    let with_agent = timings(on.local_addr()).await;
    let without = timings(off.local_addr()).await;
    let slowest = *with_agent.iter().max().expect("timings");
    println!(
        "collector black-holed: p50 {:?} / p99 {:?} with the agent, p50 {:?} / p99 {:?} without",
        percentile(with_agent.clone(), 0.5),
        percentile(with_agent, 0.99),
        percentile(without.clone(), 0.5),
        percentile(without, 0.99),
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a request waited for the exporter ({slowest:?}, export timeout 2 s)"
    );
    let counts = on.telemetry().span_counts();
    assert!(
        counts.dropped_queue_full > 0,
        "800 spans into a 64-item queue with the collector down must drop: {counts:?}"
    );
    assert_eq!(counts.exported, 0, "{counts:?}");

    // The collector comes back on the same address: export resumes, and the drops are
    // reported as a metric.
    hole_task.abort();
    let _ = hole_task.await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_at(dir.path(), &hole.to_string(), &[]);
    for _ in 0..20 {
        let r = http
            .get(format!("http://{}/", on.local_addr()))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
    }
    let stored = eventually("spans after the collector returned", 60, || async {
        let n = server
            .scalar("SELECT count(*) FROM spans WHERE service_name = 'edge-down'")
            .await;
        (n > 0).then_some(n)
    })
    .await;
    assert!(stored > 0);
    let dropped_metric = eventually("the drop counter in Periscope", 60, || async {
        let rows = server
            .rows(
                "SELECT max(value) FROM metrics WHERE service_name = 'edge-down' \
                 AND metric_name = 'otel.sdk.processor.span.processed' \
                 AND attributes['error.type'] = 'queue_full'",
            )
            .await;
        rows[0][0].as_f64().filter(|v| *v > 0.0)
    })
    .await;
    let now = on.telemetry().span_counts();
    assert!(
        dropped_metric as u64 >= counts.dropped_queue_full
            && dropped_metric as u64 <= now.dropped_queue_full,
        "exported drop count {dropped_metric} vs counted {counts:?} .. {now:?}"
    );
    assert!(now.exported > 0, "{now:?}");
    on.shutdown(Duration::from_secs(2)).await;
    off.shutdown(Duration::from_secs(1)).await;
}

/// An upstream that says who it is, with a switchable health endpoint.
async fn upstream(id: &'static str) -> (SocketAddr, Arc<AtomicBool>) {
    let healthy = Arc::new(AtomicBool::new(true));
    let router = Router::new()
        .route("/who", get(move || async move { id }))
        .route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(Duration::from_millis(800)).await;
                id
            }),
        )
        .route(
            "/healthz",
            get(|State(h): State<Arc<AtomicBool>>| async move {
                if h.load(Ordering::Relaxed) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        )
        .with_state(healthy.clone());
    (serve(router).await, healthy)
}

/// A loopback address nothing listens on.
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_routes_balances_checks_health_times_out_and_retries() {
    let (a, _) = upstream("a").await;
    let (b, b_health) = upstream("b").await;
    let (admin, _) = upstream("admin").await;
    let dead = dead_addr();
    let text = format!(
        r#"
listen = "127.0.0.1:0"
[telemetry]
enabled = false

[[upstream]]
name = "main"
targets = ["{a}", "{b}"]
health_check = {{ path = "/healthz", interval = "100ms", timeout = "200ms", unhealthy_threshold = 2, healthy_threshold = 1 }}

[[upstream]]
name = "admin"
targets = ["{admin}"]

[[upstream]]
name = "flaky"
targets = ["{dead}", "{a}"]

[[upstream]]
name = "lo"
targets = ["{a}", "{b}"]
balance = "least-outstanding"

[[route]]
host = "admin.local"
upstream = "admin"

[[route]]
path_prefix = "/api"
upstream = "main"
strip_prefix = true

[[route]]
path_prefix = "/tight"
upstream = "main"
strip_prefix = true
timeout = "300ms"

[[route]]
path_prefix = "/retry"
upstream = "flaky"
strip_prefix = true
retries = 1

[[route]]
path_prefix = "/noretry"
upstream = "flaky"
strip_prefix = true

[[route]]
path_prefix = "/lo"
upstream = "lo"
strip_prefix = true
"#
    );
    let config = GatewayConfig::parse("gw.toml", &text).expect("config");
    let gw = Gateway::start(&config, Telemetry::disabled())
        .await
        .expect("gateway");
    let base = format!("http://{}", gw.local_addr());
    let http = reqwest::Client::new();
    let fetch = |method: reqwest::Method, path: &str, host: Option<&str>| {
        let mut r = http.request(method, format!("{base}{path}"));
        if let Some(h) = host {
            r = r.header("host", h);
        }
        async move {
            let resp = r.send().await.expect("request");
            let status = resp.status().as_u16();
            (status, resp.text().await.expect("body"))
        }
    };

    // Routing: by host, by prefix on segment boundaries, 404 when nothing matches.
    assert_eq!(
        fetch(reqwest::Method::GET, "/who", Some("admin.local")).await,
        (200, "admin".into())
    );
    assert_eq!(fetch(reqwest::Method::GET, "/nothing", None).await.0, 404);
    assert_eq!(fetch(reqwest::Method::GET, "/apix/who", None).await.0, 404);

    // Round robin: sequential requests alternate.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (s, who) = fetch(reqwest::Method::GET, "/api/who", None).await;
        assert_eq!(s, 200);
        seen.push(who);
    }
    assert_eq!(seen.iter().filter(|w| *w == "a").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|w| *w == "b").count(), 3, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");

    // Health checks take b out, then bring it back.
    b_health.store(false, Ordering::Relaxed);
    eventually("b taken out", 10, || async {
        (gw.target_healthy("main", 1) == Some(false)).then_some(())
    })
    .await;
    for _ in 0..6 {
        assert_eq!(
            fetch(reqwest::Method::GET, "/api/who", None).await,
            (200, "a".into())
        );
    }
    b_health.store(true, Ordering::Relaxed);
    eventually("b back", 10, || async {
        (gw.target_healthy("main", 1) == Some(true)).then_some(())
    })
    .await;
    let mut back = Vec::new();
    for _ in 0..4 {
        back.push(fetch(reqwest::Method::GET, "/api/who", None).await.1);
    }
    assert!(back.contains(&"b".to_string()), "{back:?}");

    // Timeout: an 800 ms answer on a 300 ms route is a 504.
    let (s, body) = fetch(reqwest::Method::GET, "/tight/slow", None).await;
    assert_eq!(s, 504, "{body}");
    assert_eq!(fetch(reqwest::Method::GET, "/api/slow", None).await.0, 200);

    // Retries: an idempotent request that hits the dead target is retried on the other;
    // a POST is not retried; without retries a GET fails half the time.
    for _ in 0..6 {
        assert_eq!(
            fetch(reqwest::Method::GET, "/retry/who", None).await,
            (200, "a".into())
        );
    }
    let mut post = Vec::new();
    let mut plain = Vec::new();
    // (Separate loops: both routes share the pool's rotation.)
    for _ in 0..6 {
        post.push(fetch(reqwest::Method::POST, "/retry/who", None).await.0);
    }
    for _ in 0..6 {
        plain.push(fetch(reqwest::Method::GET, "/noretry/who", None).await.0);
    }
    assert!(post.contains(&502), "POST must not be retried: {post:?}");
    assert!(plain.contains(&502) && plain.contains(&200), "{plain:?}");

    // Least outstanding: while one target is busy, requests go to the other.
    let slow = tokio::spawn(fetch(reqwest::Method::GET, "/lo/slow", None));
    eventually("the slow request in flight", 10, || async {
        let busy = (0..2)
            .filter(|i| gw.target_outstanding("lo", *i) == Some(1))
            .count();
        (busy == 1).then_some(())
    })
    .await;
    let mut during = Vec::new();
    for _ in 0..5 {
        during.push(fetch(reqwest::Method::GET, "/lo/who", None).await.1);
    }
    let (s, busy) = slow.await.expect("slow request");
    assert_eq!(s, 200);
    assert!(
        during.iter().all(|w| *w != busy),
        "busy {busy}, others went to {during:?}"
    );

    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_the_shop_and_fires_its_alert_then_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args([
            "demo",
            "--http-addr",
            "127.0.0.1:0",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--memory-limit",
            "2GiB",
            "--rate",
            "30",
            "--spike-after",
            "1s",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the demo");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut api = None;
    let mut gateway = None;
    let mut line = String::new();
    while api.is_none() || gateway.is_none() {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("read") > 0,
            "demo exited early"
        );
        for w in line.split_whitespace() {
            if let Some(a) = w.strip_prefix("http=") {
                api = Some(format!("http://{a}"));
            }
            if let Some(g) = w.strip_prefix("gateway=") {
                gateway = Some(g.to_string());
            }
        }
    }
    let api = api.expect("api");
    // Keep draining stdout so the demo never blocks on it.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let http = reqwest::Client::new();
    let sql = |q: String| {
        let http = http.clone();
        let api = api.clone();
        async move {
            let v: Value = http
                .post(format!("{api}/api/v1/sql"))
                .json(&serde_json::json!({ "query": q }))
                .send()
                .await
                .expect("sql")
                .json()
                .await
                .expect("json");
            v["rows"].as_array().cloned().unwrap_or_default()
        }
    };

    // Every component of the shop reports, with its kind.
    let components = eventually("all nine components", 60, || async {
        let rows = sql(
            "SELECT DISTINCT service_name, resource_attributes['periscope.component.kind'] FROM spans"
                .into(),
        )
        .await;
        (rows.len() >= 9).then_some(rows)
    })
    .await;
    for (service, kind) in [
        ("shop-gateway", "gateway"),
        ("frontend", "service"),
        ("catalog", "service"),
        ("cart-sidecar", "mesh-proxy"),
        ("cart", "service"),
        ("checkout", "service"),
        ("payment-sidecar", "mesh-proxy"),
        ("payment", "service"),
        ("order-worker", "service"),
    ] {
        assert!(
            components.iter().any(|r| r[0] == service && r[1] == kind),
            "{service} ({kind}) missing from {components:?}"
        );
    }

    // The service map has the shop's topology, databases and queue included.
    let graph: Value = eventually("the service map", 60, || async {
        let g: Value = http
            .get(format!("{api}/api/v1/service-graph"))
            .send()
            .await
            .expect("graph")
            .json()
            .await
            .expect("json");
        let edges = g["edges"].as_array().map_or(0, Vec::len);
        (edges >= 10).then_some(g)
    })
    .await;
    let edges: Vec<(String, String)> = graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap_or_default().to_string(),
                e["target"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (from, to) in [
        ("shop-gateway", "frontend"),
        ("shop-gateway", "checkout"),
        ("checkout", "payment-sidecar"),
        ("payment-sidecar", "payment"),
        ("frontend", "cart-sidecar"),
        ("cart-sidecar", "cart"),
    ] {
        assert!(
            edges.iter().any(|(s, t)| s == from && t == to),
            "edge {from} → {to} missing from {edges:?}"
        );
    }
    assert!(
        edges
            .iter()
            .any(|(s, t)| s == "payment" && t.starts_with("database:")),
        "payment → its database: {edges:?}"
    );
    assert!(
        edges
            .iter()
            .any(|(s, t)| s == "checkout" && t.starts_with("messaging:"))
            && edges
                .iter()
                .any(|(s, t)| s.starts_with("messaging:") && t == "order-worker"),
        "checkout → queue → worker: {edges:?}"
    );

    // Logs carry trace ids; metrics arrive.
    let logged = eventually("logs in traces", 30, || async {
        let rows = sql("SELECT count(*) FROM logs WHERE trace_id IS NOT NULL".into()).await;
        rows.first().and_then(|r| r[0].as_i64()).filter(|n| *n > 0)
    })
    .await;
    assert!(logged > 0);

    // The spike starts after 1 s: the alert goes pending (then firing after 20 s).
    let state = eventually("CheckoutSlow pending or firing", 90, || async {
        let v: Value = http
            .get(format!("{api}/api/v1/alerts"))
            .send()
            .await
            .expect("alerts")
            .json()
            .await
            .expect("json");
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["labels"]["alertname"] == "CheckoutSlow")
            .and_then(|a| a["state"].as_str().map(str::to_owned))
    })
    .await;
    assert!(state == "pending" || state == "firing", "{state}");

    // The shop answers through the gateway.
    let r = http
        .get(format!(
            "http://{}/api/catalog/products",
            gateway.expect("gateway")
        ))
        .send()
        .await
        .expect("shop");
    assert_eq!(r.status(), 200);

    // Ctrl-C stops everything cleanly.
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    let status = eventually("the demo to exit", 60, || {
        let s = child.try_wait().expect("try_wait");
        async move { s }
    })
    .await;
    assert!(status.success(), "{status:?}");
}

/// An upstream that answers every request with the request's headers as JSON, counting
/// the requests it got.
async fn echo_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let router = Router::new()
        .fallback(
            |State(hits): State<Arc<std::sync::atomic::AtomicUsize>>,
             headers: axum::http::HeaderMap| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let map: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            Value::String(v.to_str().unwrap_or_default().to_string()),
                        )
                    })
                    .collect();
                axum::Json(Value::Object(map))
            },
        )
        .with_state(hits.clone());
    (serve(router).await, hits)
}

/// A gateway with one route, `/public`, to `upstream`, and `extra` config lines.
async fn public_gateway(upstream: SocketAddr, extra: &str) -> Gateway {
    let text = format!(
        "listen = \"127.0.0.1:0\"\n{extra}\n[telemetry]\nenabled = false\n\n[[upstream]]\nname = \"app\"\ntargets = [\"{upstream}\"]\n\n[[route]]\npath_prefix = \"/public\"\nupstream = \"app\"\n"
    );
    let config = GatewayConfig::parse("gw.toml", &text).expect("config");
    Gateway::start(&config, Telemetry::disabled())
        .await
        .expect("gateway")
}

/// The status line of a raw HTTP/1.1 `GET path` to `addr` (no client normalizes it).
async fn raw_get_status(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Item: the gateway sets X-Forwarded-For/Host/Proto itself and drops what a client
/// claims in them, `Forwarded` and `X-Real-IP`, unless the client is a trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_sets_forwarding_headers_and_trusts_only_configured_proxies() {
    let (app, _) = echo_upstream().await;
    let claims = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-prefix", "/admin"),
        ("forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
        ("x-real-ip", "6.6.6.6"),
    ];
    let seen = |gw: &Gateway| {
        let url = format!("http://{}/public/who", gw.local_addr());
        async move {
            let mut r = reqwest::Client::new().get(url);
            for (k, v) in claims {
                r = r.header(k, v);
            }
            let resp = r.send().await.expect("request");
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.expect("json")
        }
    };

    let gw = public_gateway(app, "").await;
    let got = seen(&gw).await;
    assert_eq!(got["x-forwarded-for"], "127.0.0.1", "{got}");
    assert_eq!(
        got["x-forwarded-host"],
        gw.local_addr().to_string(),
        "the Host the client sent: {got}"
    );
    assert_eq!(got["x-forwarded-proto"], "http", "{got}");
    for dropped in ["forwarded", "x-real-ip", "x-forwarded-prefix"] {
        assert!(
            got.get(dropped).is_none(),
            "{dropped} passed through: {got}"
        );
    }
    gw.shutdown(Duration::from_secs(1)).await;

    // Behind a trusted load balancer its headers stand and the address is appended.
    let gw = public_gateway(app, "trusted_proxies = [\"127.0.0.0/8\"]").await;
    let got = seen(&gw).await;
    assert_eq!(got["x-forwarded-for"], "6.6.6.6, 127.0.0.1", "{got}");
    assert_eq!(got["x-forwarded-host"], "evil.example", "{got}");
    assert_eq!(got["x-forwarded-proto"], "https", "{got}");
    assert_eq!(got["x-real-ip"], "6.6.6.6", "{got}");
    assert!(got.get("forwarded").is_some(), "{got}");
    gw.shutdown(Duration::from_secs(1)).await;
}

/// Item: paths with `..` or `.` segments or percent-encoded dots, slashes or backslashes
/// are refused with 400 before the route match, so `/public/../admin` never reaches an
/// upstream that would read it as `/admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_paths_that_climb_out_of_a_route() {
    let (app, hits) = echo_upstream().await;
    let gw = public_gateway(app, "").await;
    assert!(
        raw_get_status(gw.local_addr(), "/public/ok")
            .await
            .contains(" 200 ")
    );
    let before = hits.load(Ordering::SeqCst);
    for path in [
        "/public/../admin",
        "/public/./../admin",
        "/public/..",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public%2f..%2fadmin",
        "/public/%2F/admin",
        "/public/%5c../admin",
        "/public/..\\admin",
    ] {
        let status = raw_get_status(gw.local_addr(), path).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{path}: {status}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "a refused path reached the upstream"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}
