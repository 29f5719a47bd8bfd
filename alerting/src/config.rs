//! The `[alerting]` section of the TOML config: evaluation defaults, webhook receivers,
//! routes, delivery retries. Rule files and Alertmanager URLs are read here too
//! (`rule_files`, `alertmanager_urls`), but the binary lays the flags over them and
//! passes the result in beside the section.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::AlertingError;
use crate::matcher::Matcher;

/// `[alerting]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingSection {
    /// Rule files; relative paths are relative to the config file (`--rules` wins).
    pub rule_files: Option<Vec<PathBuf>>,
    /// Alertmanagers to send alerts to (`--alertmanager-url` wins).
    pub alertmanager_urls: Option<Vec<String>>,
    /// Interval of groups that set none [default: 1m].
    pub evaluation_interval: Option<String>,
    /// Least time between two sends of a firing alert to Alertmanager [default: 1m].
    pub resend_delay: Option<String>,
    /// URL of this server as users reach it, for `generatorURL` and `$externalURL`.
    pub external_url: Option<String>,
    /// Labels added to every alert sent (unless the alert has them).
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Receiver of alerts that no route matches.
    pub default_receiver: Option<String>,
    /// Webhook receivers.
    #[serde(default)]
    pub webhook: Vec<WebhookSection>,
    /// Routes from alerts to receivers.
    #[serde(default)]
    pub route: Vec<RouteSection>,
    /// Delivery timeouts and retries.
    #[serde(default)]
    pub delivery: DeliverySection,
}

/// `[[alerting.webhook]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Name routes refer to.
    pub name: String,
    /// Where notifications are POSTed.
    pub url: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Shared secret for the `X-Periscope-Signature` HMAC-SHA256 header.
    pub secret: Option<String>,
    /// Labels that group alerts into one notification [default: ["alertname"]];
    /// `["..."]` gives each alert its own.
    pub group_by: Option<Vec<String>>,
    /// Wait before the first notification of a new group [default: 30s].
    pub group_wait: Option<String>,
    /// Wait before notifying a change of a group already notified [default: 5m].
    pub group_interval: Option<String>,
    /// Wait before repeating an unchanged firing notification [default: 4h].
    pub repeat_interval: Option<String>,
    /// Whether resolved alerts are notified [default: true].
    pub send_resolved: Option<bool>,
}

/// `[[alerting.route]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// The receiver the matching alerts go to.
    pub receiver: String,
    /// Alertmanager-style matchers (`severity="page"`, `team=~"pay.*"`), all of which
    /// must match.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Keep looking at later routes after this one matched [default: false].
    #[serde(default, rename = "continue")]
    pub continue_: bool,
}

/// `[alerting.delivery]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    /// Timeout of one request [default: 10s].
    pub timeout: Option<String>,
    /// First retry delay [default: 1s]; doubles up to `max_backoff`, with jitter.
    pub initial_backoff: Option<String>,
    /// Longest retry delay [default: 1m].
    pub max_backoff: Option<String>,
    /// Give up (dead letter) this long after the first attempt [default: 24h].
    pub retry_for: Option<String>,
}

/// A webhook receiver, resolved.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// HMAC secret.
    pub secret: Option<String>,
    /// Grouping labels; `None` = every label (`...`).
    pub group_by: Option<Vec<String>>,
    /// See [`WebhookSection`].
    pub group_wait: Duration,
    /// See [`WebhookSection`].
    pub group_interval: Duration,
    /// See [`WebhookSection`].
    pub repeat_interval: Duration,
    /// See [`WebhookSection`].
    pub send_resolved: bool,
}

/// A route, resolved.
#[derive(Debug, Clone)]
pub struct Route {
    /// Receiver name.
    pub receiver: String,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Keep looking after a match.
    pub continue_: bool,
}

/// Delivery settings, resolved.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Per request.
    pub timeout: Duration,
    /// First retry delay.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Retry budget from the first attempt.
    pub retry_for: Duration,
}

/// Everything the alerting engine needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    /// Rule files.
    pub rule_files: Vec<PathBuf>,
    /// Alertmanager base URLs (alerts are POSTed to `<url>/api/v2/alerts`).
    pub alertmanager_urls: Vec<String>,
    /// Default group interval.
    pub evaluation_interval: Duration,
    /// Least time between resends to Alertmanager.
    pub resend_delay: Duration,
    /// This server's URL as users reach it.
    pub external_url: String,
    /// Labels added to every alert sent.
    pub external_labels: BTreeMap<String, String>,
    /// Receiver of unrouted alerts.
    pub default_receiver: Option<String>,
    /// Webhook receivers.
    pub webhooks: Vec<Webhook>,
    /// Routes.
    pub routes: Vec<Route>,
    /// Delivery.
    pub delivery: Delivery,
    /// Where the journal (state and outbox) lives.
    pub state_dir: PathBuf,
}

fn duration(
    key: &str,
    text: Option<&String>,
    default: Duration,
) -> Result<Duration, AlertingError> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            AlertingError::Config(format!(
                "{key}: {t:?} is not a duration like 500ms, 30s or 5m ({e})"
            ))
        }),
    }
}

fn url(key: &str, text: &str) -> Result<String, AlertingError> {
    let parsed = reqwest::Url::parse(text)
        .map_err(|e| AlertingError::Config(format!("{key}: {text:?} is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AlertingError::Config(format!(
            "{key}: {text:?} must be an http:// or https:// URL"
        )));
    }
    Ok(text.to_string())
}

impl AlertingConfig {
    /// Resolves `[alerting]` with the rule files, Alertmanager URLs, the default external
    /// URL and the state directory.
    ///
    /// # Errors
    /// A message naming the key for any bad value, unknown receiver or duplicate name.
    pub fn resolve(
        section: AlertingSection,
        rule_files: Vec<PathBuf>,
        alertmanager_urls: Vec<String>,
        default_external_url: String,
        state_dir: PathBuf,
    ) -> Result<AlertingConfig, AlertingError> {
        let mut webhooks = Vec::new();
        for w in &section.webhook {
            let key = |k: &str| format!("alerting.webhook[{}].{k}", w.name);
            if w.name.is_empty() {
                return Err(AlertingError::Config(
                    "alerting.webhook: every webhook needs a name".into(),
                ));
            }
            if webhooks.iter().any(|x: &Webhook| x.name == w.name) {
                return Err(AlertingError::Config(format!(
                    "alerting.webhook: the name {:?} is used twice",
                    w.name
                )));
            }
            for (name, value) in &w.headers {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(AlertingError::Config(format!(
                        "{}: {name:?} is not a header name",
                        key("headers")
                    )));
                }
                if http::HeaderValue::from_str(value).is_err() {
                    return Err(AlertingError::Config(format!(
                        "{}: the value of {name:?} is not a valid header value",
                        key("headers")
                    )));
                }
            }
            let group_by = match &w.group_by {
                None => Some(vec!["alertname".to_string()]),
                Some(list) if list.iter().any(|l| l == "...") => None,
                Some(list) => Some(list.clone()),
            };
            webhooks.push(Webhook {
                name: w.name.clone(),
                url: url(&key("url"), &w.url)?,
                headers: w.headers.clone(),
                secret: w.secret.clone(),
                group_by,
                group_wait: duration(
                    &key("group_wait"),
                    w.group_wait.as_ref(),
                    Duration::from_secs(30),
                )?,
                group_interval: duration(
                    &key("group_interval"),
                    w.group_interval.as_ref(),
                    Duration::from_secs(300),
                )?,
                repeat_interval: duration(
                    &key("repeat_interval"),
                    w.repeat_interval.as_ref(),
                    Duration::from_secs(4 * 3600),
                )?,
                send_resolved: w.send_resolved.unwrap_or(true),
            });
        }
        let known = |name: &str| webhooks.iter().any(|w| w.name == name);
        let mut routes = Vec::new();
        for (i, r) in section.route.iter().enumerate() {
            if !known(&r.receiver) {
                return Err(AlertingError::Config(format!(
                    "alerting.route[{i}].receiver: no webhook is named {:?}",
                    r.receiver
                )));
            }
            let matchers = r
                .matchers
                .iter()
                .map(|m| {
                    Matcher::parse(m).map_err(|e| {
                        AlertingError::Config(format!("alerting.route[{i}].matchers: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            routes.push(Route {
                receiver: r.receiver.clone(),
                matchers,
                continue_: r.continue_,
            });
        }
        if let Some(d) = &section.default_receiver
            && !known(d)
        {
            return Err(AlertingError::Config(format!(
                "alerting.default_receiver: no webhook is named {d:?}"
            )));
        }
        let alertmanager_urls = alertmanager_urls
            .iter()
            .map(|u| url("alertmanager-url", u))
            .collect::<Result<Vec<_>, _>>()?;
        let external_url = match &section.external_url {
            Some(u) => url("alerting.external_url", u)?,
            None => default_external_url,
        };
        let d = &section.delivery;
        Ok(AlertingConfig {
            rule_files,
            alertmanager_urls,
            evaluation_interval: duration(
                "alerting.evaluation_interval",
                section.evaluation_interval.as_ref(),
                Duration::from_secs(60),
            )?,
            resend_delay: duration(
                "alerting.resend_delay",
                section.resend_delay.as_ref(),
                Duration::from_secs(60),
            )?,
            external_url: external_url.trim_end_matches('/').to_string(),
            external_labels: section.external_labels,
            default_receiver: section.default_receiver,
            webhooks,
            routes,
            delivery: Delivery {
                timeout: duration(
                    "alerting.delivery.timeout",
                    d.timeout.as_ref(),
                    Duration::from_secs(10),
                )?,
                initial_backoff: duration(
                    "alerting.delivery.initial_backoff",
                    d.initial_backoff.as_ref(),
                    Duration::from_secs(1),
                )?,
                max_backoff: duration(
                    "alerting.delivery.max_backoff",
                    d.max_backoff.as_ref(),
                    Duration::from_secs(60),
                )?,
                retry_for: duration(
                    "alerting.delivery.retry_for",
                    d.retry_for.as_ref(),
                    Duration::from_secs(24 * 3600),
                )?,
            },
            state_dir,
        })
    }

    /// The webhook receivers an alert with `labels` goes to.
    pub fn receivers_for(&self, labels: &BTreeMap<String, String>) -> Vec<&Webhook> {
        let by_name = |name: &str| self.webhooks.iter().find(|w| w.name == name);
        if self.routes.is_empty() {
            return match &self.default_receiver {
                Some(d) => by_name(d).into_iter().collect(),
                None => self.webhooks.iter().collect(),
            };
        }
        let mut out: Vec<&Webhook> = Vec::new();
        for route in &self.routes {
            if route.matchers.iter().all(|m| m.matches(labels)) {
                if let Some(w) = by_name(&route.receiver)
                    && !out.iter().any(|o| o.name == w.name)
                {
                    out.push(w);
                }
                if !route.continue_ {
                    break;
                }
            }
        }
        if out.is_empty()
            && let Some(w) = self.default_receiver.as_deref().and_then(by_name)
        {
            out.push(w);
        }
        out
    }
}
