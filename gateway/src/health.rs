//! Active health checks: each target of a pool is probed with GET on an interval; a run
//! of failures takes it out of rotation and a run of successes brings it back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::balance::Pool;
use crate::config::HealthCheckConfig;

/// Probes `pool` until the returned task is aborted.
pub fn spawn(pool: Arc<Pool>, config: HealthCheckConfig) -> tokio::task::JoinHandle<()> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.timeout));
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let probes = pool.targets.iter().map(|t| {
                let client = &client;
                let url = format!("http://{}{}", t.addr, config.path);
                async move {
                    let Ok(req) = http::Request::get(url)
                        .header(http::header::USER_AGENT, "periscope-gateway-health-check")
                        .body(Empty::new())
                    else {
                        return false;
                    };
                    match tokio::time::timeout(config.timeout, client.request(req)).await {
                        Ok(Ok(resp)) => {
                            let ok = resp.status().is_success();
                            let _ = resp.into_body().collect().await;
                            ok
                        }
                        _ => false,
                    }
                }
            });
            let results = futures::future::join_all(probes).await;
            for (t, ok) in pool.targets.iter().zip(results) {
                if ok {
                    t.failures.store(0, Ordering::Relaxed);
                    let n = t.successes.fetch_add(1, Ordering::Relaxed) + 1;
                    if !t.healthy.load(Ordering::Relaxed) && n >= config.healthy_threshold {
                        t.healthy.store(true, Ordering::Relaxed);
                        tracing::info!(upstream = %pool.name, target = %t.addr, "target healthy again");
                    }
                } else {
                    t.successes.store(0, Ordering::Relaxed);
                    let n = t.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if t.healthy.load(Ordering::Relaxed) && n >= config.unhealthy_threshold {
                        t.healthy.store(false, Ordering::Relaxed);
                        tracing::warn!(upstream = %pool.name, target = %t.addr, "target failed health checks; out of rotation");
                    }
                }
            }
        }
    })
}
