//! Alerting through the binary: rules over PromQL, SQL and log searches; a real
//! Alertmanager (Debian's `prometheus-alertmanager`) routing Periscope's alerts to a
//! webhook receiver run by the test; direct webhooks through a receiver outage and
//! through restarts (`kill -9`); bad rule files; reloads. Intervals are fractions of a
//! second so the suite stays short.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value as Av};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use periscope_collector::remote_write::{Sample, TimeSeries, WriteRequest};
use prost::Message;
use serde_json::Value;

use crate::promql::{label, remote_write};
use crate::support::{Server, eventually, otlp};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One request a receiver accepted.
#[derive(Clone, Debug)]
struct Got {
    headers: HashMap<String, String>,
    raw: Vec<u8>,
    body: Value,
}

#[derive(Default)]
struct Inbox {
    down: AtomicBool,
    /// What it answers while down (or always, when `down` stays true).
    refuse_with: AtomicU16,
    attempts: AtomicUsize,
    got: Mutex<Vec<Got>>,
}

/// A webhook receiver run by the test: records every POST it accepts, and answers
/// `refuse_with` while down.
struct Receiver {
    url: String,
    inbox: Arc<Inbox>,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inbox.attempts.fetch_add(1, Ordering::SeqCst);
    if inbox.down.load(Ordering::SeqCst) {
        return StatusCode::from_u16(inbox.refuse_with.load(Ordering::SeqCst))
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    }
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inbox.got.lock().unwrap().push(Got {
        headers,
        raw: body.to_vec(),
        body: parsed,
    });
    StatusCode::OK
}

impl Receiver {
    async fn start() -> Receiver {
        let inbox = Arc::new(Inbox {
            refuse_with: AtomicU16::new(503),
            ..Inbox::default()
        });
        let app = axum::Router::new()
            .route("/", axum::routing::post(receive))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, inbox, task }
    }

    fn set_down(&self, down: bool) {
        self.inbox.down.store(down, Ordering::SeqCst);
    }

    fn got(&self) -> Vec<Got> {
        self.inbox.got.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what arrived; panics with what arrived otherwise.
    async fn wait(&self, what: &str, secs: u64, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.got();
            if done(&got) {
                return got;
            }
            if Instant::now() > deadline {
                let bodies: Vec<&Value> = got.iter().map(|g| &g.body).collect();
                panic!("timed out waiting for {what}; received: {bodies:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Remote-writes one sample of a gauge at the current time.
async fn gauge(server: &Server, name: &str, labels: &[(&str, &str)], value: f64) {
    let mut all = vec![label("__name__", name)];
    all.extend(labels.iter().map(|(k, v)| label(k, v)));
    let request = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: all,
            samples: vec![Sample {
                value,
                timestamp: now_ms(),
            }],
            exemplars: vec![],
            histograms: vec![],
        }],
        metadata: vec![],
    };
    assert_eq!(remote_write(&server.api(), &request).await, 204);
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn alerts(server: &Server) -> Vec<Value> {
    let (status, body) = get_json(&format!("{}/api/v1/alerts", server.api())).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn alert_named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|a| a["labels"]["alertname"] == name)
}

async fn promql(server: &Server, query: &str) -> Vec<Value> {
    let url = format!(
        "{}/api/v1/query?query={}",
        server.api(),
        form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
    );
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn notifications(server: &Server) -> Value {
    let (status, body) = get_json(&format!("{}/api/v1/notifications", server.api())).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// Waits until nothing is queued for delivery and the first rule group has been
/// evaluated `rounds` more times: by then anything an evaluation or a retry would send
/// has been sent.
async fn settled(server: &Server, rounds: usize) {
    let last = || async {
        let (_, body) = get_json(&format!("{}/api/v1/rules", server.api())).await;
        body["data"]["groups"][0]["lastEvaluation"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let mut seen = last().await;
    for _ in 0..rounds {
        seen = eventually("another evaluation", 10, || {
            let before = seen.clone();
            async move {
                let now = last().await;
                (now != before).then_some(now)
            }
        })
        .await;
    }
    eventually("an empty outbox", 20, || async {
        let n = notifications(server).await;
        n["pending"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .await;
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

fn start(data: &Path, config: &Path, rules: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start(data, &args)
}

/// A webhook receiver section with sub-second timers.
fn webhook(name: &str, url: &str, group_by: &str) -> String {
    format!(
        "[[alerting.webhook]]\nname = \"{name}\"\nurl = \"{url}\"\ngroup_by = {group_by}\n\
         group_wait = \"100ms\"\ngroup_interval = \"300ms\"\nrepeat_interval = \"1h\"\n"
    )
}

const FAST_DELIVERY: &str = "[alerting.delivery]\ninitial_backoff = \"100ms\"\nmax_backoff = \"400ms\"\nretry_for = \"2m\"\ntimeout = \"2s\"\n";

/// Statuses each alert (by `instance`) was notified with, in arrival order.
fn per_instance(got: &[Got]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for g in got {
        for a in g.body["alerts"].as_array().into_iter().flatten() {
            let instance = a["labels"]["instance"].as_str().unwrap_or("").to_string();
            out.entry(instance)
                .or_default()
                .push(a["status"].as_str().unwrap_or("").to_string());
        }
    }
    out
}

/// A real Alertmanager on loopback (no cluster port) sending to `receiver`.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start(receiver: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            dir.path(),
            "alertmanager.yml",
            &format!(
                "route:\n  receiver: test\n  group_by: ['alertname']\n  group_wait: 100ms\n  \
                 group_interval: 500ms\n  repeat_interval: 1s\nreceivers:\n  - name: test\n    \
                 webhook_configs:\n      - url: '{receiver}'\n        send_resolved: true\n"
            ),
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus-alertmanager must be installed (scripts/test.sh installs it)");
        let am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let url = am.url.clone();
        eventually("Alertmanager to be ready", 30, || {
            let url = url.clone();
            async move {
                let r = reqwest::get(format!("{url}/-/ready")).await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        am
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_routes_periscope_alerts_fire_repeat_resolve() {
    let receiver = Receiver::start().await;
    let am = Alertmanager::start(&receiver.url).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = write(
        dir.path(),
        "rules.yml",
        "groups:\n  - name: queues\n    interval: 200ms\n    rules:\n      - alert: QueueBacklog\n        \
         expr: am_backlog > 10\n        labels:\n          severity: page\n        annotations:\n          \
         summary: 'backlog {{ $value }} on {{ $labels.instance }}'\n",
    );
    let config = write(
        dir.path(),
        "periscope.toml",
        "[alerting]\nresend_delay = \"300ms\"\nexternal_labels = { cluster = \"test\" }\n",
    );
    let data = dir.path().join("data");
    let server = start(&data, &config, &rules, &["--alertmanager-url", &am.url]);
    let before = now_ms();
    gauge(
        &server,
        "am_backlog",
        &[("job", "queue"), ("instance", "q1")],
        50.0,
    )
    .await;

    let firing = |g: &Got| g.body["status"] == "firing";
    let got = receiver
        .wait("a firing notification through Alertmanager", 30, |g| {
            g.iter().any(firing)
        })
        .await;
    let first = got.iter().find(|g| firing(g)).unwrap();
    assert_eq!(first.body["version"], "4");
    let alert = &first.body["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "QueueBacklog");
    assert_eq!(alert["labels"]["instance"], "q1");
    assert_eq!(alert["labels"]["job"], "queue");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(
        alert["labels"]["cluster"], "test",
        "external labels are added"
    );
    assert_eq!(alert["annotations"]["summary"], "backlog 50 on q1");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    let generator = alert["generatorURL"].as_str().unwrap();
    assert!(
        generator.starts_with(&format!("{}/graph?g0.expr=am_backlog", server.api())),
        "{generator}"
    );
    let starts = chrono::DateTime::parse_from_rfc3339(alert["startsAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(
        starts >= before - 1000 && starts <= now_ms(),
        "startsAt {starts} vs {before}"
    );

    // The alert is queryable as ALERTS and ALERTS_FOR_STATE.
    let series = eventually("ALERTS", 10, || async {
        let r = promql(&server, "ALERTS{alertname=\"QueueBacklog\"}").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(series[0]["metric"]["alertstate"], "firing");
    assert_eq!(series[0]["metric"]["severity"], "page");
    assert_eq!(series[0]["value"][1], "1");
    let for_state = promql(&server, "ALERTS_FOR_STATE{alertname=\"QueueBacklog\"}").await;
    let active: f64 = for_state[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(
        (active * 1000.0 - starts as f64).abs() < 2000.0,
        "{active} vs {starts}"
    );

    // Periscope keeps re-sending; Alertmanager repeats after its repeat_interval.
    receiver
        .wait("a repeated firing notification", 30, |g| {
            g.iter().filter(|g| firing(g)).count() >= 2
        })
        .await;

    gauge(
        &server,
        "am_backlog",
        &[("job", "queue"), ("instance", "q1")],
        0.0,
    )
    .await;
    let got = receiver
        .wait("a resolved notification", 30, |g| {
            g.iter().any(|g| g.body["status"] == "resolved")
        })
        .await;
    let resolved = got.iter().find(|g| g.body["status"] == "resolved").unwrap();
    let alert = &resolved.body["alerts"][0];
    assert_eq!(alert["labels"]["instance"], "q1");
    let ends = chrono::DateTime::parse_from_rfc3339(alert["endsAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(
        ends > starts && ends <= now_ms(),
        "endsAt {ends}, startsAt {starts}"
    );
    eventually("ALERTS to go stale", 10, || async {
        promql(&server, "ALERTS{alertname=\"QueueBacklog\"}")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_notifications_survive_a_receiver_outage_in_order_and_once() {
    let hook = Receiver::start().await;
    let gone = Receiver::start().await;
    gone.set_down(true);
    gone.inbox.refuse_with.store(410, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let rules = write(
        dir.path(),
        "rules.yml",
        "groups:\n  - name: outage\n    interval: 200ms\n    rules:\n      - alert: Outage\n        \
         expr: outage_value > 10\n",
    );
    let config = write(
        dir.path(),
        "periscope.toml",
        &format!(
            "[alerting]\n{}secret = \"s3cret\"\nheaders = {{ \"X-Team\" = \"payments\" }}\n{}\
             [[alerting.route]]\nreceiver = \"hook\"\nmatchers = ['instance=~\"a|b\"']\ncontinue = true\n\
             [[alerting.route]]\nreceiver = \"gone\"\nmatchers = ['instance=\"a\"']\n{FAST_DELIVERY}",
            webhook("hook", &hook.url, "[\"...\"]"),
            webhook("gone", &gone.url, "[\"...\"]"),
        ),
    );
    let server = start(&dir.path().join("data"), &config, &rules, &[]);
    hook.set_down(true);
    gauge(&server, "outage_value", &[("instance", "a")], 50.0).await;
    gauge(&server, "outage_value", &[("instance", "b")], 50.0).await;
    eventually("two queued firing notifications", 20, || async {
        let n = notifications(&server).await;
        let pending = n["pending"].as_array().map_or(0, Vec::len);
        (pending >= 2 && hook.inbox.attempts.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    gauge(&server, "outage_value", &[("instance", "a")], 0.0).await;
    eventually("the resolve queued behind them", 20, || async {
        let n = notifications(&server).await;
        let hook_pending = n["pending"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["target"] == "webhook/hook")
            .count();
        (hook_pending >= 3).then_some(())
    })
    .await;
    hook.set_down(false);
    let got = hook
        .wait("three notifications after the outage", 30, |g| g.len() >= 3)
        .await;
    settled(&server, 3).await;
    let got_later = hook.got();
    assert_eq!(got_later.len(), got.len(), "nothing arrives twice");
    let order = per_instance(&got_later);
    assert_eq!(order["a"], ["firing", "resolved"], "{order:?}");
    assert_eq!(order["b"], ["firing"], "{order:?}");
    let mut ids: Vec<&str> = got_later
        .iter()
        .map(|g| g.headers["x-periscope-delivery"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        got_later.len(),
        "one delivery id per notification"
    );
    for g in &got_later {
        assert_eq!(g.headers["x-team"], "payments");
        assert_eq!(
            g.headers["x-periscope-signature"],
            periscope_alerting::signature("s3cret", &g.raw),
            "the signature covers the exact body"
        );
        assert_eq!(g.body["receiver"], "hook");
    }
    // The receiver that answers 410 Gone only got alert a (routing), and gave up at once.
    let n = eventually("dead letters for the refusing receiver", 20, || async {
        let n = notifications(&server).await;
        let dead = n["dead"].as_array().cloned().unwrap_or_default();
        (dead.len() >= 2).then_some(n)
    })
    .await;
    for d in n["dead"].as_array().unwrap() {
        assert_eq!(d["target"], "webhook/gone");
        assert!(d["error"].as_str().unwrap().contains("410"), "{d}");
        assert_eq!(d["attempts"], 1);
        for a in d["body"]["alerts"].as_array().unwrap() {
            assert_eq!(a["labels"]["instance"], "a", "routing sends only a to gone");
        }
    }
    assert!(n["pending"].as_array().unwrap().is_empty(), "{n}");
    assert!(n["delivered"].as_array().unwrap().len() >= 3);
    let metrics = reqwest::get(format!("{}/metrics", server.api()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |outcome: &str| -> f64 {
        let key = format!("periscope_alert_notifications_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("delivered") >= 3.0, "{metrics}");
    assert!(count("dead") >= 2.0, "{metrics}");
    assert!(count("retried") >= 1.0, "{metrics}");
    assert!(
        metrics.contains("periscope_alert_notifications_queued 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_neither_repeat_a_firing_alert_nor_lose_a_queued_resolve() {
    let hook = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = write(
        dir.path(),
        "rules.yml",
        "groups:\n  - name: restart\n    interval: 200ms\n    rules:\n      - alert: Restart\n        \
         expr: restart_value > 10\n",
    );
    let config = write(
        dir.path(),
        "periscope.toml",
        &format!(
            "[alerting]\n{}{FAST_DELIVERY}",
            webhook("hook", &hook.url, "[\"...\"]")
        ),
    );
    let data = dir.path().join("data");
    let mut server = start(&data, &config, &rules, &[]);
    gauge(&server, "restart_value", &[("instance", "r")], 50.0).await;
    hook.wait("the firing notification", 20, |g| g.len() == 1)
        .await;

    // kill -9 while firing: the restarted server knows it already notified.
    server.kill9();
    let server = start(&data, &config, &rules, &[]);
    eventually("the restarted server to evaluate", 10, || async {
        let a = alerts(&server).await;
        alert_named(&a, "Restart")
            .is_some_and(|a| a["state"] == "firing")
            .then_some(())
    })
    .await;
    settled(&server, 5).await;
    assert_eq!(hook.got().len(), 1, "no duplicate firing after the restart");

    // A resolve queued while the receiver is down survives kill -9.
    hook.set_down(true);
    gauge(&server, "restart_value", &[("instance", "r")], 0.0).await;
    eventually("the resolve to be queued", 20, || async {
        let n = notifications(&server).await;
        (n["pending"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;
    let mut server = server;
    server.kill9();
    hook.set_down(false);
    let server = start(&data, &config, &rules, &[]);
    let got = hook.wait("the queued resolve", 30, |g| g.len() >= 2).await;
    settled(&server, 3).await;
    assert_eq!(
        hook.got().len(),
        2,
        "nothing twice: {:?}",
        per_instance(&got)
    );
    assert_eq!(per_instance(&got)["r"], ["firing", "resolved"]);
    let n = notifications(&server).await;
    assert!(n["pending"].as_array().unwrap().is_empty(), "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_retry_budget_makes_a_dead_letter() {
    let hook = Receiver::start().await;
    hook.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let rules = write(
        dir.path(),
        "rules.yml",
        "groups:\n  - name: budget\n    interval: 200ms\n    rules:\n      - alert: Budget\n        \
         expr: vector(1)\n",
    );
    let config = write(
        dir.path(),
        "periscope.toml",
        &format!(
            "[alerting]\n{}[alerting.delivery]\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\nretry_for = \"1s\"\n",
            webhook("hook", &hook.url, "[\"alertname\"]")
        ),
    );
    let server = start(&dir.path().join("data"), &config, &rules, &[]);
    let dead = eventually("the dead letter", 20, || async {
        let n = notifications(&server).await;
        n["dead"].as_array().and_then(|d| d.first().cloned())
    })
    .await;
    assert_eq!(dead["target"], "webhook/hook");
    let attempts = dead["attempts"].as_u64().unwrap();
    assert!(attempts >= 3, "retried before giving up: {dead}");
    assert!(dead["error"].as_str().unwrap().contains("503"), "{dead}");
    assert_eq!(dead["body"]["alerts"][0]["labels"]["alertname"], "Budget");
    assert!(hook.inbox.attempts.load(Ordering::SeqCst) >= attempts as usize);
    assert!(hook.got().is_empty());
}

/// Item: a webhook URL carries its secret (Slack's `/services/T…/B…/<secret>`); a failed
/// delivery's stored error names no part of it, so `GET /api/v1/notifications` (any read
/// token) does not show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_keeps_no_part_of_the_webhook_url() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let secret_url = format!("http://{dead}/services/T0000/B0000/s3cr3tH00kT0ken");
    let dir = tempfile::tempdir().unwrap();
    let rules = write(
        dir.path(),
        "rules.yml",
        "groups:\n  - name: leak\n    interval: 200ms\n    rules:\n      - alert: Leak\n        \
         expr: vector(1)\n",
    );
    let config = write(
        dir.path(),
        "periscope.toml",
        &format!(
            "[alerting]\n{}[alerting.delivery]\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\nretry_for = \"1s\"\n",
            webhook("hook", &secret_url, "[\"alertname\"]")
        ),
    );
    let server = start(&dir.path().join("data"), &config, &rules, &[]);
    let dead_letter = eventually("the dead letter", 20, || async {
        let n = notifications(&server).await;
        n["dead"].as_array().and_then(|d| d.first().cloned())
    })
    .await;
    let error = dead_letter["error"].as_str().unwrap();
    assert!(error.contains("could not connect"), "{error}");
    assert!(!error.contains("http"), "{error}");
    let everything = notifications(&server).await.to_string();
    for part in ["s3cr3tH00kT0ken", "/services/", &dead.to_string()] {
        assert!(!everything.contains(part), "{part} shown: {everything}");
    }
}

fn log_request(service: &str, count: usize) -> ExportLogsServiceRequest {
    let now = now_ms() as u64 * 1_000_000;
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: otlp::resource(service),
            scope_logs: vec![ScopeLogs {
                log_records: (0..count)
                    .map(|i| LogRecord {
                        time_unix_nano: now + i as u64,
                        severity_number: 17,
                        severity_text: "ERROR".into(),
                        body: Some(AnyValue {
                            value: Some(Av::StringValue(format!("card declined {i}"))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_kind_fires_and_resolves_with_for_and_keep_firing_for() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write(
        dir.path(),
        "rules.yml",
        r#"groups:
  - name: kinds
    interval: 200ms
    rules:
      - alert: PromHigh
        expr: kinds_value > 10
        for: 1s
        keep_firing_for: 1s
        annotations:
          summary: '{{ $labels.instance }} is at {{ $value | humanize }}'
          peers: '{{ with query "count(kinds_value)" }}{{ . | first | value }}{{ end }}'
      - alert: SqlHigh
        sql: >-
          SELECT attributes['instance'] AS instance, max(value) AS value FROM metrics
          WHERE metric_name = 'kinds_sql' AND timestamp > now() - INTERVAL '2 seconds'
          GROUP BY 1
        condition: value > 10
      - alert: PaymentErrors
        logs:
          query: 'severity>=error service:payment'
          window: 2s
          threshold: 2
        labels:
          team: payments
      - record: kinds:doubled
        expr: kinds_value * 2
"#,
    );
    let config = write(dir.path(), "periscope.toml", "");
    let server = start(&dir.path().join("data"), &config, &rules, &[]);
    gauge(&server, "kinds_value", &[("instance", "k")], 50.0).await;
    gauge(&server, "kinds_sql", &[("instance", "s")], 50.0).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/logs", server.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(log_request("payment", 3).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // `for: 1s`: pending first, firing a second later.
    let pending_seen = eventually("PromHigh pending", 10, || async {
        let a = alerts(&server).await;
        alert_named(&a, "PromHigh")
            .filter(|a| a["state"] == "pending")
            .map(|_| Instant::now())
    })
    .await;
    let firing = eventually("PromHigh firing", 10, || async {
        let a = alerts(&server).await;
        alert_named(&a, "PromHigh")
            .filter(|a| a["state"] == "firing")
            .cloned()
    })
    .await;
    assert!(
        pending_seen.elapsed() >= Duration::from_millis(600),
        "fired {:?} after pending was seen",
        pending_seen.elapsed()
    );
    assert_eq!(firing["annotations"]["summary"], "k is at 50");
    assert_eq!(
        firing["annotations"]["peers"], "1",
        "the query template function"
    );
    assert_eq!(firing["value"], "5e+01");

    let sql = eventually("SqlHigh firing", 10, || async {
        alert_named(&alerts(&server).await, "SqlHigh").cloned()
    })
    .await;
    assert_eq!(sql["labels"]["instance"], "s");
    assert_eq!(sql["state"], "firing");
    let logs = eventually("PaymentErrors firing", 10, || async {
        alert_named(&alerts(&server).await, "PaymentErrors").cloned()
    })
    .await;
    assert_eq!(logs["value"], "3e+00");
    assert_eq!(logs["labels"]["team"], "payments");

    let recorded = eventually("the recorded series", 10, || async {
        let r = promql(&server, "kinds:doubled").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(recorded[0]["value"][1], "100");
    assert_eq!(recorded[0]["metric"]["instance"], "k");

    // The rules API in Prometheus's shape.
    let (status, body) = get_json(&format!("{}/api/v1/rules", server.api())).await;
    assert_eq!(status, 200);
    let group = &body["data"]["groups"][0];
    assert_eq!(group["name"], "kinds");
    assert_eq!(group["interval"], 0.2);
    let rules_list = group["rules"].as_array().unwrap();
    assert_eq!(rules_list.len(), 4);
    assert_eq!(rules_list[0]["type"], "alerting");
    assert_eq!(rules_list[0]["duration"], 1.0);
    assert_eq!(rules_list[0]["keepFiringFor"], 1.0);
    assert_eq!(rules_list[0]["health"], "ok");
    assert_eq!(rules_list[0]["state"], "firing");
    assert_eq!(rules_list[3]["type"], "recording");
    let (_, only_records) = get_json(&format!("{}/api/v1/rules?type=record", server.api())).await;
    assert_eq!(
        only_records["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The data stops crossing the thresholds: keep_firing_for holds PromHigh a second.
    gauge(&server, "kinds_value", &[("instance", "k")], 0.0).await;
    let kept = eventually("PromHigh kept firing", 10, || async {
        alert_named(&alerts(&server).await, "PromHigh")
            .filter(|a| a.get("keepFiringSince").is_some())
            .cloned()
    })
    .await;
    assert_eq!(kept["state"], "firing");
    let kept_seen = Instant::now();
    eventually("every alert to resolve", 15, || async {
        let a = alerts(&server).await;
        a.is_empty().then_some(())
    })
    .await;
    assert!(
        kept_seen.elapsed() >= Duration::from_millis(600),
        "keep_firing_for held"
    );
    let (_, body) = get_json(&format!("{}/api/v1/rules", server.api())).await;
    for r in body["data"]["groups"][0]["rules"].as_array().unwrap() {
        if r["type"] == "alerting" {
            assert_eq!(r["state"], "inactive", "{r}");
        }
    }
}

fn periscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(args)
        .output()
        .expect("run periscope")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rule_files_are_refused_with_lines_and_reloads_keep_the_old_rules() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.yml",
        "groups:\n  - name: a\n    rules:\n      - alert: BadPromQL\n        expr: rate(x[5m]\n      \
         - alert: NoTable\n        sql: SELECT 1 AS value FROM nosuchtable\n      - alert: BadLogs\n        \
         logs: {query: 'severity>=', window: 1m}\n      - alert: Unknown\n        expr: up\n        \
         severity: page\n  - name: a\n    rules: []\n",
    );
    let out = periscope(&["rules", "check", bad.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAILED"), "{text}");
    for (line, what) in [
        (5, "invalid PromQL"),
        (7, "nosuchtable"),
        (9, "invalid log query"),
        (12, "field \"severity\" not found"),
        (13, "is repeated"),
    ] {
        let prefix = format!("{}:{line}:", bad.display());
        assert!(
            text.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(what)),
            "no {prefix} ... {what} in\n{text}"
        );
    }
    // The example rule file of docs/alerting.md passes the check.
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/alerting.md")).unwrap();
    let after = &doc[doc.find("## Rule files").unwrap()..];
    let from = after.find("```yaml\n").unwrap() + 8;
    let len = after[from..].find("```").unwrap();
    let example = write(dir.path(), "example.yml", &after[from..from + len]);
    let out = periscope(&["rules", "check", example.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("SUCCESS: 4 rules found"),
        "{text}"
    );

    let good_text = "groups:\n  - name: g\n    interval: 200ms\n    rules:\n      - alert: First\n        \
                     expr: vector(1)\n      - alert: Sql\n        sql: SELECT count(*) AS value FROM spans\n";
    let good = write(dir.path(), "good.yml", good_text);
    let out = periscope(&["rules", "check", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 2 rules found"));

    // The server refuses to start on a broken file, and says where.
    let out = periscope(&[
        "serve",
        "--data-dir",
        dir.path().join("refused").to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:0",
        "--otlp-grpc-addr",
        "127.0.0.1:0",
        "--otlp-http-addr",
        "127.0.0.1:0",
        "--rules",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:5:", bad.display())), "{err}");

    let config = write(dir.path(), "periscope.toml", "");
    let server = start(&dir.path().join("data"), &config, &good, &[]);
    let names = || async {
        let (_, body) = get_json(&format!("{}/api/v1/rules", server.api())).await;
        body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| r["name"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names().await, ["First", "Sql"]);

    // A broken edit is refused by an explicit reload, with its line; the old rules stay.
    std::fs::write(
        &good,
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: sum(\n",
    )
    .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/rules/reload", server.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("{}:5:", good.display())),
        "{body}"
    );
    // Nothing observable says the watch looked and refused; give it more than its 1 s
    // period before checking that the old rules still run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        names().await,
        ["First", "Sql"],
        "the file watch refused it too"
    );

    // A valid edit is picked up by the file watch.
    std::fs::write(
        &good,
        "groups:\n  - name: g\n    rules:\n      - alert: Alpha\n        expr: vector(2)\n",
    )
    .unwrap();
    eventually("the edited file to load", 10, || async {
        (names().await == ["Alpha"]).then_some(())
    })
    .await;

    // SIGHUP reloads: an edit the file watch cannot see (same size, same mtime).
    let mtime = std::fs::metadata(&good).unwrap().modified().unwrap();
    std::fs::write(
        &good,
        "groups:\n  - name: g\n    rules:\n      - alert: Bravo\n        expr: vector(3)\n",
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&good)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // As above: more than one watch period, then the edit must still be unseen.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(names().await, ["Alpha"], "the watch saw no change");
    let ok = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    eventually("the SIGHUP reload", 10, || async {
        (names().await == ["Bravo"]).then_some(())
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/rules/reload", server.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
