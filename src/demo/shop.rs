//! The simulated shop: frontend, catalog, cart, checkout, payment and an order worker,
//! real HTTP services on loopback instrumented by the agent (cart and payment behind
//! mesh proxies), with `tracing` spans for their database and queue calls, behind a
//! gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use periscope_agent::context::{self, Current};
use periscope_agent::{
    ComponentKind, ExporterConfig, HttpClient, ResourceInfo, ServerLayer, Telemetry, TraceContext,
};
use periscope_gateway::{Gateway, GatewayConfig};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::Schedule;

/// When the payment service is slow.
#[derive(Debug)]
pub struct Chaos {
    schedule: Schedule,
    start: tokio::time::Instant,
}

impl Chaos {
    /// Chaos on `schedule`, counted from `start`.
    pub fn new(schedule: Schedule, start: tokio::time::Instant) -> Chaos {
        Chaos { schedule, start }
    }

    fn spiking(&self) -> bool {
        self.schedule.spiking(self.start.elapsed())
    }
}

/// An order handed from checkout to the worker through the simulated queue.
struct Message {
    order_id: u64,
    traceparent: String,
}

/// What a service's handlers need.
struct Deps {
    chaos: Arc<Chaos>,
    client: HttpClient,
    catalog: String,
    cart: String,
    payment: String,
    queue: Option<mpsc::Sender<Message>>,
    orders: AtomicU64,
}

/// The running shop.
pub struct Shop {
    gateway: Gateway,
    sidecars: Vec<Gateway>,
    telemetry: Vec<Telemetry>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn exporter(endpoint: &str) -> ExporterConfig {
    ExporterConfig {
        endpoint: endpoint.to_owned(),
        batch_delay: Duration::from_millis(500),
        metrics_interval: Duration::from_secs(5),
        ..ExporterConfig::default()
    }
}

fn telemetry_toml(endpoint: &str) -> String {
    format!(
        "[telemetry]\nendpoint = \"{endpoint}\"\nbatch_delay = \"500ms\"\nmetrics_interval = \"5s\"\n"
    )
}

async fn serve(router: Router) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((addr, task))
}

/// A random number of milliseconds in `range`.
fn millis(range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rand::random_range(range))
}

impl Shop {
    /// Starts every service, the mesh proxies and the gateway (on `gateway_addr`), all
    /// exporting to `endpoint` (OTLP/gRPC).
    pub async fn start(
        endpoint: &str,
        gateway_addr: &str,
        chaos: Arc<Chaos>,
    ) -> anyhow::Result<Shop> {
        let mut telemetry = Vec::new();
        let mut tasks = Vec::new();
        let mut sidecars = Vec::new();
        let mut service = |name: &str| -> anyhow::Result<Telemetry> {
            let t = Telemetry::start(
                ResourceInfo::new(name, ComponentKind::Service).with_version("1.4.2"),
                exporter(endpoint),
            )?;
            telemetry.push(t.clone());
            Ok(t)
        };
        let deps = |t: &Telemetry, catalog: &str, cart: &str, payment: &str| {
            Arc::new(Deps {
                chaos: chaos.clone(),
                client: HttpClient::new(t.clone()).with_timeout(Duration::from_secs(10)),
                catalog: catalog.to_owned(),
                cart: cart.to_owned(),
                payment: payment.to_owned(),
                queue: None,
                orders: AtomicU64::new(1000),
            })
        };

        // payment, behind its mesh proxy.
        let t = service("payment")?;
        let router = Router::new()
            .route("/charge", post(charge))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(deps(&t, "", "", ""))
            .layer(ServerLayer::new(t));
        let (payment, task) = serve(router).await?;
        tasks.push(task);
        let payment_proxy = sidecar("payment-sidecar", payment, endpoint).await?;

        // cart, behind its mesh proxy.
        let t = service("cart")?;
        let router = Router::new()
            .route("/", get(cart_get))
            .route("/items", post(cart_add))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(deps(&t, "", "", ""))
            .layer(ServerLayer::new(t));
        let (cart, task) = serve(router).await?;
        tasks.push(task);
        let cart_proxy = sidecar("cart-sidecar", cart, endpoint).await?;
        let cart_url = format!("http://{}", cart_proxy.local_addr());
        let payment_url = format!("http://{}", payment_proxy.local_addr());
        sidecars.push(payment_proxy);
        sidecars.push(cart_proxy);

        // catalog.
        let t = service("catalog")?;
        let router = Router::new()
            .route("/products", get(products))
            .route("/products/{id}", get(product))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(deps(&t, "", "", ""))
            .layer(ServerLayer::new(t));
        let (catalog, task) = serve(router).await?;
        tasks.push(task);
        let catalog_url = format!("http://{catalog}");

        // order worker, fed by checkout through the queue.
        let (queue, rx) = mpsc::channel(1024);
        let t = service("order-worker")?;
        tasks.push(tokio::spawn(worker(t, rx)));

        // checkout.
        let t = service("checkout")?;
        let mut d = deps(&t, &catalog_url, &cart_url, &payment_url);
        if let Some(d) = Arc::get_mut(&mut d) {
            d.queue = Some(queue);
        }
        let router = Router::new()
            .route("/", post(checkout))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(d)
            .layer(ServerLayer::new(t));
        let (checkout_addr, task) = serve(router).await?;
        tasks.push(task);

        // frontend.
        let t = service("frontend")?;
        let router = Router::new()
            .route("/", get(home))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(deps(&t, &catalog_url, &cart_url, &payment_url))
            .layer(ServerLayer::new(t));
        let (frontend, task) = serve(router).await?;
        tasks.push(task);

        let config = format!(
            r#"listen = "{gateway_addr}"
service_name = "shop-gateway"
service_version = "1.0.0"
{telemetry}
[[upstream]]
name = "frontend"
targets = ["{frontend}"]
health_check = {{ path = "/healthz", interval = "5s" }}

[[upstream]]
name = "catalog"
targets = ["{catalog}"]
health_check = {{ path = "/healthz", interval = "5s" }}

[[upstream]]
name = "cart"
targets = ["{cart}"]

[[upstream]]
name = "checkout"
targets = ["{checkout_addr}"]

[[route]]
path_prefix = "/api/catalog"
upstream = "catalog"
strip_prefix = true
retries = 1

[[route]]
path_prefix = "/api/cart"
upstream = "cart"
strip_prefix = true

[[route]]
path_prefix = "/api/checkout"
upstream = "checkout"
strip_prefix = true
timeout = "5s"

[[route]]
path_prefix = "/"
upstream = "frontend"
"#,
            telemetry = telemetry_toml(endpoint),
            cart = cart_url.trim_start_matches("http://"),
        );
        let config = GatewayConfig::parse("demo gateway", &config)?;
        let gateway_telemetry = Gateway::telemetry_for(&config, false)?;
        let gateway = Gateway::start(&config, gateway_telemetry)
            .await
            .context("starting the demo gateway (choose another with --gateway-addr)")?;
        Ok(Shop {
            gateway,
            sidecars,
            telemetry,
            tasks,
        })
    }

    /// The gateway's address.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway.local_addr()
    }

    /// Stops the services and flushes every component's telemetry.
    pub async fn shutdown(self) {
        let flush = Duration::from_secs(3);
        self.gateway.shutdown(flush).await;
        for s in self.sidecars {
            s.shutdown(flush).await;
        }
        for t in &self.telemetry {
            t.shutdown(flush).await;
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

async fn sidecar(name: &str, service: SocketAddr, endpoint: &str) -> anyhow::Result<Gateway> {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmode = \"mesh-proxy\"\nservice_name = \"{name}\"\nservice = \"{service}\"\n{}",
        telemetry_toml(endpoint)
    );
    let config = GatewayConfig::parse(name, &text)?;
    let telemetry = Gateway::telemetry_for(&config, false)?;
    Ok(Gateway::start(&config, telemetry).await?)
}

/// A simulated database call: a CLIENT span with the database conventions.
async fn db_call(system: &str, namespace: &str, operation: &str, query: &str, took: Duration) {
    let span = tracing::info_span!(
        "db",
        otel.name = format!("{operation} {namespace}").as_str(),
        otel.kind = "client",
        db.system.name = system,
        db.namespace = namespace,
        db.operation.name = operation,
        db.query.text = query,
        server.address = format!("{system}.{namespace}.svc").as_str(),
    );
    tokio::time::sleep(took).instrument(span).await;
}

async fn charge(State(d): State<Arc<Deps>>) -> Response {
    let slow = d.chaos.spiking();
    let took = if slow {
        millis(600..1300)
    } else {
        millis(15..60)
    };
    let roll: f64 = rand::random();
    let amount = rand::random_range(5..400);
    db_call(
        "postgresql",
        "payments",
        "INSERT",
        "INSERT INTO charges (order_id, amount_cents) VALUES ($1, $2)",
        took,
    )
    .await;
    if roll < 0.03 {
        tracing::error!(
            error.type = "processor_unavailable",
            amount,
            "charge failed: the card processor did not answer"
        );
        return (StatusCode::INTERNAL_SERVER_ERROR, "processor unavailable").into_response();
    }
    if roll < 0.08 {
        tracing::warn!(amount, "card declined");
        return (StatusCode::PAYMENT_REQUIRED, "declined").into_response();
    }
    if slow {
        tracing::warn!(took_ms = took.as_millis() as i64, "card processor is slow");
    }
    tracing::info!(amount, "charge accepted");
    (StatusCode::OK, "charged").into_response()
}

async fn cart_get() -> Response {
    db_call(
        "redis",
        "carts",
        "HGETALL",
        "HGETALL cart:{id}",
        millis(1..4),
    )
    .await;
    (StatusCode::OK, "[{\"sku\":\"periscope-mug\",\"qty\":1}]").into_response()
}

async fn cart_add() -> Response {
    db_call(
        "redis",
        "carts",
        "HSET",
        "HSET cart:{id} {sku} {qty}",
        millis(1..4),
    )
    .await;
    tracing::info!("item added to cart");
    (StatusCode::CREATED, "added").into_response()
}

async fn products() -> Response {
    let slow = rand::random::<f64>() < 0.02;
    let took = if slow {
        millis(200..350)
    } else {
        millis(3..12)
    };
    db_call(
        "postgresql",
        "catalog",
        "SELECT",
        "SELECT id, name, price FROM products WHERE active ORDER BY rank LIMIT 50",
        took,
    )
    .await;
    if slow {
        tracing::warn!(took_ms = took.as_millis() as i64, "slow product query");
    }
    (StatusCode::OK, "[{\"id\":1,\"name\":\"Periscope mug\"}]").into_response()
}

async fn product(Path(id): Path<u64>) -> Response {
    db_call(
        "postgresql",
        "catalog",
        "SELECT",
        "SELECT * FROM products WHERE id = $1",
        millis(1..5),
    )
    .await;
    if id >= 1000 {
        tracing::info!(product_id = id as i64, "no such product");
        return (StatusCode::NOT_FOUND, "no such product").into_response();
    }
    (StatusCode::OK, "{\"id\":1}").into_response()
}

async fn checkout(State(d): State<Arc<Deps>>) -> Response {
    match d.client.get(&format!("{}/", d.cart)).await {
        Ok((s, _)) if s.is_success() => {}
        other => {
            tracing::error!(error = ?other.err(), "cannot read the cart");
            return (StatusCode::BAD_GATEWAY, "cart unavailable").into_response();
        }
    }
    let paid = d
        .client
        .call(Method::POST, &format!("{}/charge", d.payment), "{}")
        .await;
    match paid {
        Ok((s, _)) if s.is_success() => {}
        Ok((StatusCode::PAYMENT_REQUIRED, _)) => {
            return (StatusCode::PAYMENT_REQUIRED, "payment declined").into_response();
        }
        Ok((s, _)) => {
            tracing::error!(status = s.as_u16() as i64, "payment failed");
            return (StatusCode::BAD_GATEWAY, "payment failed").into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "payment unreachable");
            return (StatusCode::BAD_GATEWAY, "payment unreachable").into_response();
        }
    }
    let order_id = d.orders.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!(
        "publish",
        otel.name = "orders publish",
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.destination.name = "orders",
        messaging.operation.type = "send",
        messaging.message.id = order_id as i64,
    );
    let queue = d.queue.clone();
    async move {
        // The message carries the producer span's context, as a Kafka header would.
        let traceparent = context::current()
            .map(|c| c.context.traceparent())
            .unwrap_or_default();
        if let Some(q) = queue {
            let _ = q.try_send(Message {
                order_id,
                traceparent,
            });
        }
    }
    .instrument(span)
    .await;
    tracing::info!(order_id = order_id as i64, "order placed");
    (StatusCode::CREATED, format!("{{\"order_id\":{order_id}}}")).into_response()
}

async fn home(State(d): State<Arc<Deps>>) -> Response {
    let (products_url, cart_url) = (format!("{}/products", d.catalog), format!("{}/", d.cart));
    let (products, cart) = tokio::join!(d.client.get(&products_url), d.client.get(&cart_url));
    match (products, cart) {
        (Ok((p, _)), Ok((c, _))) if p.is_success() && c.is_success() => Html(
            "<!doctype html><title>Periscope shop</title><h1>Periscope shop</h1><p>Mugs, in stock.</p>",
        )
        .into_response(),
        _ => {
            tracing::error!("home page degraded: catalog or cart failed");
            (StatusCode::BAD_GATEWAY, "shop unavailable").into_response()
        }
    }
}

/// The queue worker: one CONSUMER span per order in the trace that placed it.
async fn worker(telemetry: Telemetry, mut rx: mpsc::Receiver<Message>) {
    while let Some(m) = rx.recv().await {
        let parent = TraceContext::from_headers(m.traceparent.as_bytes(), None)
            .unwrap_or_else(TraceContext::new_root);
        let current = Current {
            context: parent,
            telemetry: telemetry.clone(),
        };
        context::scope(current, async move {
            let span = tracing::info_span!(
                "process",
                otel.name = "orders process",
                otel.kind = "consumer",
                messaging.system = "kafka",
                messaging.destination.name = "orders",
                messaging.operation.type = "process",
                messaging.message.id = m.order_id as i64,
            );
            async {
                tokio::time::sleep(millis(5..30)).await;
                db_call(
                    "postgresql",
                    "orders",
                    "INSERT",
                    "INSERT INTO orders (id, status) VALUES ($1, 'paid')",
                    millis(2..10),
                )
                .await;
                tracing::info!(order_id = m.order_id as i64, "order fulfilled");
            }
            .instrument(span)
            .await;
        })
        .await;
    }
}
