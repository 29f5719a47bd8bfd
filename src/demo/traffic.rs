//! The demo's traffic: a steady mix of page views, catalog reads, cart writes and
//! checkouts sent to the gateway, each in its own task so slow answers never slow the
//! rate.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

/// Sends `rate` requests per second to the gateway at `addr` until `stop` turns true.
pub async fn drive(addr: SocketAddr, rate: f64, mut stop: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the traffic client");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
        "Mozilla/5.0 (Macintosh) Safari/18.1",
        "shop-mobile/3.2 (Android 15)",
    ];
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let roll: f64 = rand::random();
        let (method, path) = match roll {
            r if r < 0.35 => (reqwest::Method::GET, "/".to_owned()),
            r if r < 0.60 => (reqwest::Method::GET, "/api/catalog/products".to_owned()),
            r if r < 0.65 => (
                reqwest::Method::GET,
                format!("/api/catalog/products/{}", rand::random_range(1..1200)),
            ),
            r if r < 0.82 => (reqwest::Method::POST, "/api/cart/items".to_owned()),
            _ => (reqwest::Method::POST, "/api/checkout".to_owned()),
        };
        let agent = agents[rand::random_range(0..agents.len())];
        let request = client
            .request(method, format!("http://{addr}{path}"))
            .header(reqwest::header::USER_AGENT, agent)
            .body("{}");
        tokio::spawn(async move {
            let _ = request.send().await;
        });
    }
}
