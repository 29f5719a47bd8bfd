//! The alerting engine: one task that evaluates rule groups on their intervals, keeps
//! alert state, writes `ALERTS`, `ALERTS_FOR_STATE` and recorded series, routes alerts
//! to webhook groups and Alertmanager, and commits notifications and state to the
//! outbox in one fsynced append. Delivery workers send from the outbox.
//!
//! Rules reload on request (SIGHUP, `POST /api/v1/rules/reload`) and when a rule file
//! changes; a file with problems is refused and the old rules keep running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::AlertingConfig;
use crate::deliver::{self, Target};
use crate::dispatch::{Dispatcher, NotifyAlert, millis_time};
use crate::error::AlertingError;
use crate::metrics::AlertingMetrics;
use crate::outbox::Outbox;
use crate::rules::{self, Group, Problem, Problems, Rule, RuleExpr, RuleType};
use crate::source::Sources;
use crate::state::{Alert, AlertState, Context, LabelSet, RuleAlerts};
use crate::template::QueryFn;

/// Prometheus's staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// How often rule files are checked for changes.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// One sample the engine writes: labels (with `__name__`), time (Unix ms), value.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSample {
    /// Labels, `__name__` included.
    pub labels: LabelSet,
    /// Unix ms.
    pub timestamp_ms: i64,
    /// The value (a staleness marker is [`STALE_NAN`]'s bits).
    pub value: f64,
}

/// Where `ALERTS`, `ALERTS_FOR_STATE` and recorded series go (the binary wires it to
/// the ingest path, so they are stored like remote-written series).
#[async_trait]
pub trait SeriesSink: Send + Sync {
    /// Stores the samples durably.
    async fn write(&self, samples: Vec<SeriesSample>) -> Result<(), String>;
}

/// Health of a rule's last evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// Evaluated without error.
    Ok,
    /// The last evaluation failed.
    Err,
}

/// A rule and its live state.
#[derive(Debug, Clone)]
pub struct RuleRuntime {
    /// The rule as written.
    pub rule: Rule,
    /// Its labels merged over its group's.
    pub labels: LabelSet,
    /// Its alerts (alerting rules).
    pub alerts: RuleAlerts,
    /// Last evaluation's health.
    pub health: Health,
    /// Last evaluation's error.
    pub last_error: Option<String>,
    /// When it was last evaluated, Unix ms.
    pub last_evaluation: Option<i64>,
    /// How long that took.
    pub evaluation_time: Duration,
    /// Identifies the rule across reloads and restarts.
    key: String,
    /// Series it wrote last time, to mark the ones that go away stale.
    last_series: BTreeSet<LabelSet>,
}

/// A group and its live state.
#[derive(Debug, Clone)]
pub struct GroupRuntime {
    /// The group as written.
    pub group: Group,
    /// Its interval (its own or the default).
    pub interval: Duration,
    /// Its rules.
    pub rules: Vec<RuleRuntime>,
    /// When it was last evaluated, Unix ms.
    pub last_evaluation: Option<i64>,
    /// How long that took.
    pub evaluation_time: Duration,
    next_eval: i64,
}

/// What the API shows: the groups as of the last evaluation, and the last reload error.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Groups in file, then name order.
    pub groups: Vec<GroupRuntime>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    rules: BTreeMap<String, RuleAlerts>,
    dispatcher: Dispatcher,
}

enum Request {
    Reload(oneshot::Sender<Result<usize, String>>),
}

/// The running alerting engine: cheap to clone.
#[derive(Clone)]
pub struct Alerting {
    config: Arc<AlertingConfig>,
    view: Arc<RwLock<Arc<View>>>,
    outbox: Arc<Outbox>,
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Alerting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerting").finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The keys of a group's rules: file, group, name and labels, and which of the rules
/// with those is meant (as Prometheus carries state over a reload), so editing an
/// expression keeps the rule's alerts.
fn rule_keys(g: &Group) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    g.rules
        .iter()
        .map(|r| {
            let base = format!(
                "{}\u{0}{}\u{0}{}\u{0}{:?}",
                g.file.display(),
                g.name,
                r.name,
                r.labels
            );
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            format!("{base}\u{0}{n}")
        })
        .collect()
}

/// What a rule carries over a reload.
type Carried = BTreeMap<String, (RuleAlerts, BTreeSet<LabelSet>)>;

/// Reads and checks the rule files, including what needs the server (SQL plans).
///
/// # Errors
/// Every problem, sorted by file and line.
pub async fn load(files: &[PathBuf], sources: &Sources) -> Result<Vec<Group>, Problems> {
    let (groups, mut problems) = rules::read_files(files);
    for g in &groups {
        for r in &g.rules {
            if let Err(e) = sources.check(&r.expr).await {
                problems.push(Problem {
                    file: g.file.clone(),
                    line: r.expr_line,
                    col: 1,
                    message: format!("rule {:?}: invalid SQL: {e}", r.name),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        problems.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        Err(Problems(problems))
    }
}

fn build(
    groups: Vec<Group>,
    config: &AlertingConfig,
    states: &mut Carried,
    now: i64,
) -> Vec<GroupRuntime> {
    let mut out: Vec<GroupRuntime> = groups
        .into_iter()
        .map(|group| {
            let interval = group.interval.unwrap_or(config.evaluation_interval);
            let rules = group
                .rules
                .iter()
                .zip(rule_keys(&group))
                .map(|(rule, key)| {
                    let mut labels = group.labels.clone();
                    labels.extend(rule.labels.clone());
                    let (alerts, last_series) = states.remove(&key).unwrap_or_default();
                    RuleRuntime {
                        alerts,
                        last_series,
                        key,
                        rule: rule.clone(),
                        labels,
                        health: Health::Unknown,
                        last_error: None,
                        last_evaluation: None,
                        evaluation_time: Duration::ZERO,
                    }
                })
                .collect();
            GroupRuntime {
                interval,
                rules,
                last_evaluation: None,
                evaluation_time: Duration::ZERO,
                next_eval: now,
                group,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.group.file, &a.group.name).cmp(&(&b.group.file, &b.group.name)));
    out
}

/// The rule files (patterns expanded) with their modification time and size: a
/// change, a new file or a removed one means reload.
fn file_stamps(files: &[PathBuf]) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    rules::expand(files)
        .0
        .into_iter()
        .map(|f| {
            let stamp = std::fs::metadata(&f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (f, stamp)
        })
        .collect()
}

/// `generatorURL` of a rule: Prometheus's table link for PromQL, the UI for the rest.
fn generator_url(config: &AlertingConfig, expr: &RuleExpr) -> String {
    let q = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    match expr {
        RuleExpr::PromQL(e) => format!("{}/graph?g0.expr={}&g0.tab=1", config.external_url, q(e)),
        RuleExpr::Sql { query, .. } => format!("{}/ui/sql?q={}", config.external_url, q(query)),
        RuleExpr::Logs { query, .. } => format!("{}/ui/logs?q={}", config.external_url, q(query)),
    }
}

/// The `query` template function: PromQL at the evaluation time. Templates expand in
/// synchronous code, so the query runs on this worker thread, which tells the runtime to
/// move its other tasks elsewhere meanwhile.
fn template_query(engine: periscope_query::QueryEngine) -> QueryFn {
    Arc::new(move |query: &str, t: i64| {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "query is not available here".to_string())?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err("query is not available here".into());
        }
        let engine = engine.clone();
        let query = query.to_string();
        tokio::task::block_in_place(|| {
            handle.block_on(async move {
                periscope_query::promql::instant_samples(&engine, &query, t).await
            })
        })
        .map(|samples| {
            samples
                .into_iter()
                .map(|(labels, v)| (labels.into_iter().collect(), v))
                .collect()
        })
        .map_err(|e| e.message)
    })
}

fn with_external(config: &AlertingConfig, labels: &LabelSet) -> LabelSet {
    let mut out = labels.clone();
    for (k, v) in &config.external_labels {
        out.entry(k.clone()).or_insert_with(|| v.clone());
    }
    out
}

struct Engine {
    config: Arc<AlertingConfig>,
    sources: Sources,
    sink: Option<Arc<dyn SeriesSink>>,
    outbox: Arc<Outbox>,
    view: Arc<RwLock<Arc<View>>>,
    groups: Vec<GroupRuntime>,
    dispatcher: Dispatcher,
    stamps: Vec<(PathBuf, Option<(SystemTime, u64)>)>,
    cx: Context,
    metrics: AlertingMetrics,
    /// Notifications whose commit failed, retried at the next tick.
    unsent: Vec<(String, String, String)>,
}

impl Alerting {
    /// Loads the rules, restores saved state, and starts the engine and one delivery
    /// worker per receiver and Alertmanager; they stop when `stop` turns true.
    ///
    /// # Errors
    /// Rule-file problems (every one, with lines), or an unreadable state directory.
    pub async fn start(
        config: AlertingConfig,
        sources: Sources,
        sink: Option<Arc<dyn SeriesSink>>,
        metrics: AlertingMetrics,
        stop: watch::Receiver<bool>,
    ) -> Result<(Alerting, JoinSet<()>), AlertingError> {
        let groups = load(&config.rule_files, &sources)
            .await
            .map_err(AlertingError::Rules)?;
        let outbox = Arc::new(Outbox::open(&config.state_dir).map_err(|e| {
            AlertingError::Io(format!(
                "cannot open the alerting journal in {}: {e}",
                config.state_dir.display()
            ))
        })?);
        let snapshot: Snapshot = match outbox.saved_state().map(serde_json::from_value) {
            None => Snapshot::default(),
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                return Err(AlertingError::Io(format!(
                    "the alert state saved in {} cannot be read ({e}); move the directory away to start without it",
                    config.state_dir.display()
                )));
            }
        };
        let config = Arc::new(config);
        let mut targets: Vec<Target> = config
            .webhooks
            .iter()
            .cloned()
            .map(Target::Webhook)
            .collect();
        targets.extend(
            config
                .alertmanager_urls
                .iter()
                .cloned()
                .map(Target::Alertmanager),
        );
        let keys: Vec<String> = targets.iter().map(Target::key).collect();
        for t in outbox.targets() {
            if keys.contains(&t) {
                continue;
            }
            while let Some(n) = outbox.head(&t) {
                let error = Some(format!("{t} is no longer configured"));
                outbox
                    .finish(&t, n.id, 0, error, now_ms())
                    .map_err(|e| AlertingError::Io(e.to_string()))?;
            }
        }
        let client = reqwest::Client::builder()
            .timeout(config.delivery.timeout)
            // A redirect would turn the POST into a GET; receivers must give the final URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Periscope/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AlertingError::Io(format!("cannot build the HTTP client: {e}")))?;
        let mut tasks = JoinSet::new();
        for target in targets {
            tasks.spawn(deliver::run(
                outbox.clone(),
                target,
                client.clone(),
                config.delivery.clone(),
                metrics.clone(),
                stop.clone(),
            ));
        }
        let now = now_ms();
        let view = Arc::new(RwLock::new(Arc::new(View::default())));
        let (tx, rx) = mpsc::channel(8);
        let engine = Engine {
            stamps: file_stamps(&config.rule_files),
            groups: build(
                groups,
                &config,
                &mut snapshot
                    .rules
                    .into_iter()
                    .map(|(k, v)| (k, (v, BTreeSet::new())))
                    .collect(),
                now,
            ),
            dispatcher: snapshot.dispatcher,
            cx: Context {
                external_labels: config.external_labels.clone(),
                external_url: config.external_url.clone(),
                query: Some(template_query(sources.engine.clone())),
            },
            config: config.clone(),
            sources,
            sink,
            outbox: outbox.clone(),
            view: view.clone(),
            metrics,
            unsent: Vec::new(),
        };
        engine.publish();
        tasks.spawn(engine.run(rx, stop));
        Ok((
            Alerting {
                config,
                view,
                outbox,
                requests: tx,
            },
            tasks,
        ))
    }

    /// Reloads the rule files now. Returns the number of rules loaded.
    ///
    /// # Errors
    /// The files' problems (the old rules keep running), or a stopped engine.
    pub async fn reload(&self) -> Result<usize, String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Reload(tx))
            .await
            .map_err(|_| "the alerting engine has stopped".to_string())?;
        rx.await
            .map_err(|_| "the alerting engine has stopped".to_string())?
    }

    /// The groups as of their last evaluation.
    pub fn view(&self) -> Arc<View> {
        self.view.read().clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &AlertingConfig {
        &self.config
    }

    /// The outbox (for the notifications API).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

impl Engine {
    fn publish(&self) {
        *self.view.write() = Arc::new(View {
            groups: self.groups.clone(),
        });
    }

    fn snapshot(&self) -> serde_json::Value {
        let mut rules = BTreeMap::new();
        for g in &self.groups {
            for r in &g.rules {
                if !r.alerts.alerts.is_empty() {
                    rules.insert(r.key.clone(), r.alerts.clone());
                }
            }
        }
        serde_json::to_value(Snapshot {
            rules,
            dispatcher: self.dispatcher.clone(),
        })
        .unwrap_or_default()
    }

    async fn reload(&mut self) -> Result<usize, String> {
        self.stamps = file_stamps(&self.config.rule_files);
        let groups = load(&self.config.rule_files, &self.sources)
            .await
            .map_err(|p| p.to_string())?;
        let mut carried: Carried = BTreeMap::new();
        for g in &self.groups {
            for r in &g.rules {
                carried.insert(r.key.clone(), (r.alerts.clone(), r.last_series.clone()));
            }
        }
        let count = groups.iter().map(|g| g.rules.len()).sum();
        let now = now_ms();
        let mut fresh = build(groups, &self.config, &mut carried, now);
        // Groups that still exist keep their schedule.
        for g in &mut fresh {
            if let Some(old) = self
                .groups
                .iter()
                .find(|o| o.group.file == g.group.file && o.group.name == g.group.name)
            {
                g.next_eval = old.next_eval;
            }
        }
        self.groups = fresh;
        // The series of rules that are gone go stale now; their webhook alerts resolve
        // when their `valid_until` passes.
        let stale: Vec<(LabelSet, f64)> = carried
            .into_values()
            .flat_map(|(_, series)| series)
            .map(|l| (l, f64::from_bits(STALE_NAN)))
            .collect();
        if !stale.is_empty() {
            self.write(&stale, now).await;
        }
        self.publish();
        tracing::info!(rules = count, "Alert rules loaded.");
        Ok(count)
    }

    async fn run(mut self, mut requests: mpsc::Receiver<Request>, mut stop: watch::Receiver<bool>) {
        let mut last_watch = Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            self.tick().await;
            if last_watch.elapsed() >= WATCH_EVERY {
                last_watch = Instant::now();
                if file_stamps(&self.config.rule_files) != self.stamps
                    && let Err(e) = self.reload().await
                {
                    tracing::error!(error = %e, "A rule file changed but has problems; the old rules keep running.");
                }
            }
            let now = now_ms();
            let mut due = now + WATCH_EVERY.as_millis() as i64;
            for g in &self.groups {
                due = due.min(g.next_eval);
            }
            if let Some(d) = self.dispatcher.next_due(&self.config) {
                due = due.min(d);
            }
            let wait = Duration::from_millis((due - now).clamp(0, 1000) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Some(Request::Reload(reply)) = requests.recv() => {
                    let result = self.reload().await;
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "Rule reload refused; the old rules keep running.");
                    }
                    let _ = reply.send(result);
                }
                _ = stop.changed() => {}
            }
        }
    }

    /// Evaluates the groups that are due, flushes the webhook groups that are due, and
    /// commits what changed.
    async fn tick(&mut self) {
        let now = now_ms();
        let mut to_alertmanager: Vec<serde_json::Value> = Vec::new();
        let mut updates: Vec<NotifyAlert> = Vec::new();
        let mut evaluated = false;
        for gi in 0..self.groups.len() {
            if self.groups[gi].next_eval > now {
                continue;
            }
            evaluated = true;
            let ts = self.groups[gi].next_eval;
            let interval = self.groups[gi].interval.as_millis().max(1) as i64;
            let mut next = ts + interval;
            if next <= now {
                next += (now - next) / interval * interval + interval;
            }
            self.groups[gi].next_eval = next;
            self.eval_group(gi, ts, &mut to_alertmanager, &mut updates)
                .await;
        }
        for alert in &updates {
            self.dispatcher.update(&self.config, alert, now);
        }
        let mut ready: Vec<(String, String, String)> = self
            .dispatcher
            .flush(&self.config, now)
            .into_iter()
            .map(|(receiver, summary, body)| (deliver::webhook_key(&receiver), summary, body))
            .collect();
        if !to_alertmanager.is_empty() {
            let body = serde_json::Value::Array(to_alertmanager).to_string();
            let summary = "alerts for Alertmanager".to_string();
            for url in &self.config.alertmanager_urls {
                ready.push((
                    deliver::alertmanager_key(url),
                    summary.clone(),
                    body.clone(),
                ));
            }
        }
        if !evaluated && ready.is_empty() && self.unsent.is_empty() {
            return;
        }
        // Notifications a failed commit left behind go first.
        let mut batch = std::mem::take(&mut self.unsent);
        batch.extend(ready);
        let committed = self
            .outbox
            .commit(batch.clone(), Some(self.snapshot()), now);
        self.metrics.queued.set(self.outbox.queued() as i64);
        if let Err(e) = committed {
            tracing::error!(error = %e, queued = batch.len(), "Cannot write the alerting journal; retrying with the next evaluation.");
            self.unsent = batch;
        }
        if evaluated {
            self.publish();
        }
    }

    async fn eval_group(
        &mut self,
        gi: usize,
        ts: i64,
        to_alertmanager: &mut Vec<serde_json::Value>,
        updates: &mut Vec<NotifyAlert>,
    ) {
        let started = Instant::now();
        // As Prometheus: the query (and the samples written) are `query_offset` in the
        // past; alert times are the evaluation time.
        let offset = self.groups[gi].group.query_offset.as_millis() as i64;
        let query_ts = ts - offset;
        let limit = self.groups[gi].group.limit;
        let interval = self.groups[gi].interval;
        let resend = self.config.resend_delay;
        let valid_for = (resend.max(interval).as_millis() * 4) as i64;
        for ri in 0..self.groups[gi].rules.len() {
            let rule_started = Instant::now();
            let result = {
                let r = &self.groups[gi].rules[ri];
                self.sources.eval(&r.rule.expr, query_ts).await
            };
            let generator = generator_url(&self.config, &self.groups[gi].rules[ri].rule.expr);
            let r = &mut self.groups[gi].rules[ri];
            let mut rule_series: Vec<(LabelSet, f64)> = Vec::new();
            let outcome = result.and_then(|instances| match r.rule.rule_type {
                RuleType::Recording => {
                    for i in instances {
                        let mut labels = i.labels;
                        labels.extend(r.labels.clone());
                        labels.retain(|_, v| !v.is_empty());
                        labels.insert("__name__".into(), r.rule.name.clone());
                        rule_series.push((labels, i.value));
                    }
                    let distinct: BTreeSet<&LabelSet> = rule_series.iter().map(|(l, _)| l).collect();
                    if distinct.len() < rule_series.len() {
                        return Err("vector contains metrics with the same labelset after applying rule labels".into());
                    }
                    if limit > 0 && rule_series.len() > limit {
                        return Err(format!(
                            "exceeded limit of {limit} with {} series",
                            rule_series.len()
                        ));
                    }
                    Ok(())
                }
                RuleType::Alerting => {
                    r.alerts
                        .apply(&r.rule, &r.labels, &instances, ts, limit, &self.cx)?;
                    rule_series = r.alerts.series();
                    Ok(())
                }
            });
            match outcome {
                Ok(()) => {
                    r.health = Health::Ok;
                    r.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(rule = %r.rule.name, error = %e, "Rule evaluation failed.");
                    r.health = Health::Err;
                    r.last_error = Some(e);
                }
            }
            r.last_evaluation = Some(ts);
            r.evaluation_time = rule_started.elapsed();
            self.metrics.evaluated(r.health == Health::Ok);
            // A failed evaluation sends nothing and writes nothing: its series are neither
            // refreshed nor marked stale.
            if r.health != Health::Ok {
                continue;
            }
            if r.rule.rule_type == RuleType::Alerting {
                for a in r.alerts.alerts.values_mut() {
                    notify_updates(a, ts, ts + valid_for, &generator, &self.config, updates);
                    if a.needs_sending(ts, resend.as_millis() as i64) {
                        a.last_sent_at = Some(ts);
                        a.valid_until = Some(ts + valid_for);
                        to_alertmanager.push(alertmanager_alert(a, &generator, &self.config));
                    }
                }
            }
            let current: BTreeSet<LabelSet> = rule_series.iter().map(|(l, _)| l.clone()).collect();
            rule_series.extend(
                r.last_series
                    .iter()
                    .filter(|l| !current.contains(*l))
                    .map(|l| (l.clone(), f64::from_bits(STALE_NAN))),
            );
            r.last_series = current;
            if !rule_series.is_empty() {
                self.write(&rule_series, query_ts).await;
            }
        }
        let g = &mut self.groups[gi];
        g.last_evaluation = Some(ts);
        g.evaluation_time = started.elapsed();
    }

    async fn write(&self, series: &[(LabelSet, f64)], ts: i64) {
        let Some(sink) = &self.sink else { return };
        let samples = series
            .iter()
            .map(|(labels, value)| SeriesSample {
                labels: labels.clone(),
                timestamp_ms: ts,
                value: *value,
            })
            .collect();
        if let Err(e) = sink.write(samples).await {
            tracing::warn!(error = %e, "Could not store ALERTS or recorded series.");
        }
    }
}

/// Webhook dispatch sees an alert when it fires and when it resolves.
fn notify_updates(
    a: &Alert,
    ts: i64,
    valid_until: i64,
    generator: &str,
    config: &AlertingConfig,
    updates: &mut Vec<NotifyAlert>,
) {
    let ends_at = match a.state {
        AlertState::Firing => None,
        AlertState::Inactive if a.resolved_at == Some(ts) && a.fired_at.is_some() => a.resolved_at,
        _ => return,
    };
    updates.push(NotifyAlert {
        labels: with_external(config, &a.labels),
        annotations: a.annotations.clone(),
        starts_at: a.fired_at.unwrap_or(a.active_at),
        ends_at,
        valid_until,
        generator_url: generator.to_string(),
    });
}

/// An alert as Prometheus posts it to Alertmanager's `/api/v2/alerts`.
fn alertmanager_alert(a: &Alert, generator: &str, config: &AlertingConfig) -> serde_json::Value {
    let ends = a.resolved_at.or(a.valid_until).unwrap_or(a.active_at);
    let mut v = json!({
        "labels": with_external(config, &a.labels),
        "startsAt": millis_time(a.fired_at.unwrap_or(a.active_at)),
        "endsAt": millis_time(ends),
        "generatorURL": generator,
    });
    if !a.annotations.is_empty() {
        v["annotations"] = json!(a.annotations);
    }
    v
}
