//! Delivery workers: one per target, sending the outbox's notifications in order, with
//! retries (exponential backoff with jitter) on timeouts, connection errors, 429 and
//! 5xx, and a dead letter once the retry budget is spent or the receiver refuses the
//! request (other 4xx).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use tokio::sync::watch;

use crate::config::{Delivery, Webhook};
use crate::metrics::AlertingMetrics;
use crate::outbox::{Notification, Outbox};

/// The header carrying a webhook body's HMAC-SHA256: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Periscope-Signature";
/// The header carrying the notification's id, the same on every retry, so a receiver
/// can drop a duplicate.
pub const DELIVERY_HEADER: &str = "X-Periscope-Delivery";

/// Where a worker sends.
#[derive(Debug, Clone)]
pub enum Target {
    /// A webhook receiver.
    Webhook(Webhook),
    /// An Alertmanager (base URL).
    Alertmanager(String),
}

impl Target {
    /// The outbox key: `webhook/<name>` or `alertmanager/<url>`.
    pub fn key(&self) -> String {
        match self {
            Target::Webhook(w) => webhook_key(&w.name),
            Target::Alertmanager(url) => alertmanager_key(url),
        }
    }
}

/// Outbox key of a webhook receiver.
pub fn webhook_key(name: &str) -> String {
    format!("webhook/{name}")
}

/// Outbox key of an Alertmanager.
pub fn alertmanager_key(url: &str) -> String {
    format!("alertmanager/{url}")
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why an attempt failed.
enum Failure {
    /// Worth retrying.
    Retry(String),
    /// Retrying cannot help.
    Permanent(String),
}

async fn send(client: &reqwest::Client, target: &Target, n: &Notification) -> Result<(), Failure> {
    let request = match target {
        Target::Webhook(w) => {
            let mut r = client
                .post(&w.url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(DELIVERY_HEADER, n.id.to_string());
            for (k, v) in &w.headers {
                r = r.header(k.as_str(), v.as_str());
            }
            if let Some(secret) = &w.secret {
                r = r.header(SIGNATURE_HEADER, signature(secret, n.body.as_bytes()));
            }
            r
        }
        Target::Alertmanager(base) => {
            let url = if base.ends_with("/api/v2/alerts") {
                base.clone()
            } else {
                format!("{}/api/v2/alerts", base.trim_end_matches('/'))
            };
            client
                .post(url)
                .header(http::header::CONTENT_TYPE, "application/json")
        }
    };
    let response = request
        .body(n.body.clone())
        .send()
        .await
        .map_err(|e| Failure::Retry(format!("request failed: {}", request_error(e))))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let excerpt: String = text.chars().take(200).collect();
    let message = without_urls(&format!("the receiver answered {status}: {excerpt}"));
    if status.is_server_error()
        || status == http::StatusCode::TOO_MANY_REQUESTS
        || status == http::StatusCode::REQUEST_TIMEOUT
    {
        Err(Failure::Retry(message))
    } else {
        Err(Failure::Permanent(message))
    }
}

/// A failed request's error and its causes, without the URL: webhook URLs often carry
/// their secret (Slack's `/services/T…/B…/<secret>`), and these texts are logged and kept
/// in the dead letters that any `read` token may list.
fn request_error(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "error"
    };
    let e = e.without_url();
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    without_urls(&text)
}

/// `text` with every `scheme://…` word replaced by `<url>`, so that no URL reaches a log
/// or a stored error whatever the library or the receiver put in its message.
pub(crate) fn without_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at + 3..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .map_or(rest.len(), |i| at + 3 + i);
        out.push_str(&rest[..start]);
        out.push_str("<url>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The delay before retry `attempt` (1-based): doubling from `initial`, capped at `max`,
/// then between half and all of it (jitter).
pub fn backoff(d: &Delivery, attempt: u32) -> Duration {
    let exp = d
        .initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(d.max_backoff);
    let jitter = rand::rng().random_range(0.5..=1.0);
    Duration::from_secs_f64((exp.as_secs_f64() * jitter).min(86_400.0 * 365.0))
}

/// Delivers `target`'s queued notifications until `stop`.
pub async fn run(
    outbox: Arc<Outbox>,
    target: Target,
    client: reqwest::Client,
    delivery: Delivery,
    metrics: AlertingMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let key = target.key();
    let wake = outbox.waker(&key);
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(n) = outbox.head(&key) else {
            tokio::select! {
                _ = wake.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        let first = Instant::now();
        let mut attempts = 0u32;
        let outcome = loop {
            attempts += 1;
            match send(&client, &target, &n).await {
                Ok(()) => break None,
                Err(Failure::Permanent(e)) => break Some(e),
                Err(Failure::Retry(e)) => {
                    let delay = backoff(&delivery, attempts);
                    if first.elapsed() + delay > delivery.retry_for {
                        break Some(format!("gave up after {attempts} attempts: {e}"));
                    }
                    metrics.notified("retried");
                    tracing::warn!(target = %key, id = n.id, attempts, error = %e, retry_in = ?delay, "Notification not delivered; retrying.");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        };
        metrics.notified(if outcome.is_some() {
            "dead"
        } else {
            "delivered"
        });
        if let Some(e) = &outcome {
            tracing::error!(target = %key, id = n.id, error = %e, "Notification given up; it is in the dead letters.");
        }
        // Retry recording the outcome, not the delivery: sending again would be a
        // duplicate. (If the process dies meanwhile, the receiver gets it again, with the
        // same X-Periscope-Delivery id.)
        let at = now_ms();
        while let Err(e) = outbox
            .finish_blocking(&key, n.id, attempts, outcome.clone(), at)
            .await
        {
            tracing::error!(error = %e, "Cannot record a delivery in the alerting journal; retrying.");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
        metrics.queued.set(outbox.queued() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_are_cut_out_of_error_texts() {
        assert_eq!(
            without_urls(
                "error sending request for url (https://hooks.slack.com/services/T0/B0/s3cr3t?x=1): closed"
            ),
            "error sending request for url (<url>): closed"
        );
        assert_eq!(
            without_urls("a http://u:p@h/x, and \"ftp://h/y\" end"),
            "a <url>, and \"<url>\" end"
        );
        assert_eq!(without_urls("no url here"), "no url here");
        assert_eq!(without_urls("https://x"), "<url>");
    }

    #[tokio::test]
    async fn a_failed_request_names_no_part_of_its_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let e = reqwest::Client::new()
            .post(format!("http://{addr}/services/T000/B000/s3cr3t"))
            .send()
            .await
            .expect_err("nothing listens");
        let text = request_error(e);
        assert!(!text.contains("s3cr3t") && !text.contains("http"), "{text}");
        assert!(text.contains("could not connect"), "{text}");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let d = Delivery {
            timeout: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            retry_for: Duration::from_secs(60),
        };
        for (attempt, full) in [(1, 100), (2, 200), (3, 400), (5, 1000), (40, 1000)] {
            let b = backoff(&d, attempt).as_millis() as u64;
            assert!((full / 2..=full).contains(&b), "attempt {attempt}: {b}");
        }
    }
}
