//! The alerting engine: the one owner of alert state. It starts every rule group's
//! evaluation on the group's own ticks, each as a task of its own (`evaluation.rs`;
//! when, and how many at once: `schedule.rs`), so a slow group holds up no other. As
//! evaluations finish it takes their results in, routes alerts to webhook groups and
//! Alertmanager, and commits the notifications and the state they came from to the
//! outbox in one fsynced append. Delivery workers send from the outbox.
//!
//! Commits run on a blocking thread, one at a time: the next starts once the previous
//! has finished, so they land in the journal in the order they were made, and the
//! engine keeps starting and taking in evaluations meanwhile. A notification reaches
//! the outbox's queues, where delivery workers find it, only once its append is durable.
//!
//! Rules reload on request (SIGHUP, `POST /api/v1/rules/reload`) and when a rule file
//! changes; a file with problems is refused and the old rules keep running. A group
//! being evaluated during a reload keeps evaluating; its result is taken in for the
//! rules the reload kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};

use crate::config::AlertingConfig;
use crate::deliver::{self, Target};
use crate::dispatch::Dispatcher;
use crate::error::AlertingError;
use crate::evaluation::{Evaluated, Evaluator};
use crate::metrics::AlertingMetrics;
use crate::outbox::{Outbox, joined};
use crate::rules::{self, Group, Problem, Problems};
use crate::runtime::{self, Carried, GroupId, GroupRuntime, View};
use crate::schedule::{MAX_EVALUATING, Schedule};
use crate::series::{self, SeriesSink, stale};
use crate::source::{Evaluate, Sources};
use crate::state::{Context, RuleAlerts};
use crate::template::QueryFn;

/// How often rule files are checked for changes.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How long the engine waits before trying again after a commit failed.
const RETRY_COMMIT_AFTER_MS: i64 = 1000;

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

/// A notification to queue: target, summary, body.
type Queued = (String, String, String);

struct Engine {
    config: Arc<AlertingConfig>,
    sources: Sources,
    outbox: Arc<Outbox>,
    view: Arc<RwLock<Arc<View>>>,
    groups: Vec<GroupRuntime>,
    dispatcher: Dispatcher,
    stamps: Vec<(PathBuf, Option<(SystemTime, u64)>)>,
    metrics: AlertingMetrics,
    /// What every evaluation shares.
    evaluator: Arc<Evaluator>,
    /// The evaluations running, one task per group.
    evaluating: JoinSet<Evaluated>,
    /// Which group each of those tasks evaluates.
    tasks: BTreeMap<tokio::task::Id, GroupId>,
    /// The groups being evaluated (a group evaluates once at a time).
    in_flight: BTreeSet<GroupId>,
    /// Alerts for Alertmanager from the evaluations taken in since the last commit.
    to_alertmanager: Vec<serde_json::Value>,
    /// Whether an evaluation was taken in since the state was last committed.
    changed: bool,
    /// The commit being written, and its notifications (queued again if it fails).
    committing: Option<(JoinHandle<std::io::Result<()>>, Vec<Queued>)>,
    /// Notifications whose commit failed, first in the next commit.
    unsent: Vec<Queued>,
    /// After a failed commit, no new one before this time (Unix ms).
    retry_commit_at: i64,
}

/// What woke the engine.
enum Event {
    /// A tick, a webhook group or a rule-file check may be due; or `stop` changed.
    Wake,
    /// Whoever could stop the engine is gone: stop.
    Orphaned,
    /// An evaluation finished (or its task failed).
    Evaluated(Box<Result<(tokio::task::Id, Evaluated), JoinError>>),
    /// The commit being written finished.
    Committed(std::io::Result<()>),
    /// A reload was asked for.
    Reload(oneshot::Sender<Result<usize, String>>),
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
        let rules = Arc::new(sources.clone());
        Alerting::start_with(config, sources, rules, sink, metrics, stop).await
    }

    /// [`Alerting::start`], with rule expressions run by `rules`.
    pub(crate) async fn start_with(
        config: AlertingConfig,
        sources: Sources,
        rules: Arc<dyn Evaluate>,
        sink: Option<Arc<dyn SeriesSink>>,
        metrics: AlertingMetrics,
        stop: watch::Receiver<bool>,
    ) -> Result<(Alerting, JoinSet<()>), AlertingError> {
        let groups = load(&config.rule_files, &sources)
            .await
            .map_err(AlertingError::Rules)?;
        let outbox = Arc::new(
            Outbox::open_blocking(config.state_dir.clone())
                .await
                .map_err(|e| {
                    AlertingError::Io(format!(
                        "cannot open the alerting journal in {}: {e}",
                        config.state_dir.display()
                    ))
                })?,
        );
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
                    .finish_blocking(&t, n.id, 0, error, now_ms())
                    .await
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
        let evaluator = Arc::new(Evaluator {
            config: config.clone(),
            rules,
            sink,
            cx: Context {
                external_labels: config.external_labels.clone(),
                external_url: config.external_url.clone(),
                query: Some(template_query(sources.engine.clone())),
            },
            metrics: metrics.clone(),
        });
        let engine = Engine {
            stamps: file_stamps(&config.rule_files),
            groups: runtime::build(
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
            config: config.clone(),
            sources,
            outbox: outbox.clone(),
            view: view.clone(),
            metrics,
            evaluator,
            evaluating: JoinSet::new(),
            tasks: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            to_alertmanager: Vec::new(),
            changed: false,
            committing: None,
            unsent: Vec::new(),
            retry_commit_at: 0,
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

/// Waits for the commit being written; never ready when there is none.
async fn commit_written(
    committing: &mut Option<(JoinHandle<std::io::Result<()>>, Vec<Queued>)>,
) -> std::io::Result<()> {
    match committing {
        Some((handle, _)) => joined(handle.await),
        None => std::future::pending().await,
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
        let mut fresh = runtime::build(groups, &self.config, &mut carried, now);
        // Groups that still exist keep their schedule (and, while their evaluation runs,
        // do not start another: `in_flight` is by file and name).
        for g in &mut fresh {
            if let Some(old) = self.groups.iter().find(|o| o.id() == g.id()) {
                g.schedule = Schedule::continuing(&old.schedule, g.interval);
            }
        }
        self.groups = fresh;
        // The series of rules that are gone go stale now; their webhook alerts resolve
        // when their `valid_until` passes.
        let gone = stale(carried.into_values().flat_map(|(_, series)| series));
        if !gone.is_empty() {
            series::write(self.evaluator.sink.as_ref(), &gone, now).await;
        }
        self.publish();
        tracing::info!(rules = count, "Alert rules loaded.");
        Ok(count)
    }

    async fn run(mut self, mut requests: mpsc::Receiver<Request>, mut stop: watch::Receiver<bool>) {
        let mut last_watch = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            let now = now_ms();
            self.start_due(now);
            self.commit(now);
            if last_watch.elapsed() >= WATCH_EVERY {
                last_watch = Instant::now();
                if file_stamps(&self.config.rule_files) != self.stamps
                    && let Err(e) = self.reload().await
                {
                    tracing::error!(error = %e, "A rule file changed but has problems; the old rules keep running.");
                }
            }
            let wait = self.wait(now_ms());
            let evaluating = &mut self.evaluating;
            let committing = &mut self.committing;
            let event = tokio::select! {
                _ = tokio::time::sleep(wait) => Event::Wake,
                Some(done) = evaluating.join_next_with_id() => Event::Evaluated(Box::new(done)),
                written = commit_written(committing) => Event::Committed(written),
                Some(Request::Reload(reply)) = requests.recv() => Event::Reload(reply),
                changed = stop.changed() => match changed {
                    Ok(()) => Event::Wake,
                    Err(_) => Event::Orphaned,
                },
            };
            match event {
                Event::Wake => {}
                Event::Orphaned => break,
                Event::Evaluated(done) => self.take_in(*done).await,
                Event::Committed(written) => self.committed(written),
                Event::Reload(reply) => {
                    let result = self.reload().await;
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "Rule reload refused; the old rules keep running.");
                    }
                    let _ = reply.send(result);
                }
            }
        }
        self.shut_down().await;
    }

    /// Starts the evaluations that are due, the most overdue first, while fewer than
    /// [`MAX_EVALUATING`] run. A group already evaluating is left alone: when it can
    /// start again it evaluates at its latest due tick and counts the ones it missed.
    fn start_due(&mut self, now: i64) {
        let mut due: Vec<(i64, usize)> = self
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.schedule.is_due(now) && !self.in_flight.contains(&g.id()))
            .map(|(i, g)| (g.schedule.next(), i))
            .collect();
        due.sort_unstable();
        for (_, i) in due {
            if self.in_flight.len() >= MAX_EVALUATING {
                break;
            }
            let g = &mut self.groups[i];
            let Some(tick) = g.schedule.start(now) else {
                continue;
            };
            if tick.missed > 0 {
                self.metrics.missed(g.metric_name(), tick.missed);
                tracing::debug!(group = %g.group.name, missed = tick.missed, "A rule group skipped ticks: it was still evaluating, or waiting for a free slot.");
            }
            let id = g.id();
            let task = self
                .evaluating
                .spawn(self.evaluator.clone().evaluate(g.clone(), tick.ts));
            self.tasks.insert(task.id(), id.clone());
            self.in_flight.insert(id);
        }
    }

    /// Takes in a finished evaluation: its state, its alerts for the webhook groups and
    /// Alertmanager (committed with the next commit).
    async fn take_in(&mut self, done: Result<(tokio::task::Id, Evaluated), JoinError>) {
        let task = match &done {
            Ok((task, _)) => *task,
            Err(e) => e.id(),
        };
        let group = self.tasks.remove(&task);
        if let Some(id) = &group {
            self.in_flight.remove(id);
        }
        let done = match done {
            Ok((_, done)) => done,
            Err(e) => {
                // Its state stays as before the evaluation; the next tick evaluates again.
                tracing::error!(group = ?group.map(|g| g.1), error = %e, "A rule group's evaluation stopped before it finished.");
                return;
            }
        };
        let now = now_ms();
        for alert in &done.updates {
            self.dispatcher.update(&self.config, alert, now);
        }
        self.to_alertmanager.extend(done.to_alertmanager);
        let gone = runtime::absorb(&mut self.groups, done.group);
        if !gone.is_empty() {
            series::write(self.evaluator.sink.as_ref(), &stale(gone), now).await;
        }
        self.changed = true;
        self.publish();
    }

    /// Starts committing what changed, unless a commit is being written: the state, the
    /// webhook notifications that are due, the alerts for Alertmanager, and what a failed
    /// commit left behind (first).
    fn commit(&mut self, now: i64) {
        if self.committing.is_some() || now < self.retry_commit_at {
            return;
        }
        let mut ready: Vec<Queued> = self
            .dispatcher
            .flush(&self.config, now)
            .into_iter()
            .map(|(receiver, summary, body)| (deliver::webhook_key(&receiver), summary, body))
            .collect();
        if !self.to_alertmanager.is_empty() {
            let alerts = std::mem::take(&mut self.to_alertmanager);
            let body = serde_json::Value::Array(alerts).to_string();
            let summary = "alerts for Alertmanager".to_string();
            for url in &self.config.alertmanager_urls {
                ready.push((
                    deliver::alertmanager_key(url),
                    summary.clone(),
                    body.clone(),
                ));
            }
        }
        if !self.changed && ready.is_empty() && self.unsent.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.unsent);
        batch.extend(ready);
        let state = Some(self.snapshot());
        self.changed = false;
        let handle = self.outbox.spawn_commit(batch.clone(), state, now);
        self.committing = Some((handle, batch));
    }

    /// The commit being written finished.
    fn committed(&mut self, written: std::io::Result<()>) {
        let Some((_, batch)) = self.committing.take() else {
            return;
        };
        self.metrics.queued.set(self.outbox.queued() as i64);
        if let Err(e) = written {
            tracing::error!(error = %e, queued = batch.len(), "Cannot write the alerting journal; retrying in a second.");
            self.unsent = batch;
            // The state was not saved either.
            self.changed = true;
            self.retry_commit_at = now_ms() + RETRY_COMMIT_AFTER_MS;
        }
    }

    /// How long to sleep: until the next tick of a group that could start, a webhook
    /// group or a commit retry is due, or the next rule-file check (a finished
    /// evaluation or commit wakes the engine sooner).
    fn wait(&self, now: i64) -> Duration {
        let mut due = now + WATCH_EVERY.as_millis() as i64;
        if self.in_flight.len() < MAX_EVALUATING {
            for g in &self.groups {
                if !self.in_flight.contains(&g.id()) {
                    due = due.min(g.schedule.next());
                }
            }
        }
        if self.committing.is_none() {
            if self.changed || !self.unsent.is_empty() {
                due = due.min(self.retry_commit_at);
            }
            if let Some(d) = self.dispatcher.next_due(&self.config) {
                due = due.min(d.max(self.retry_commit_at));
            }
        }
        Duration::from_millis((due - now).clamp(0, 1000) as u64)
    }

    /// Stops the evaluations (a restart evaluates again), lets the commit being written
    /// finish, and commits what was taken in since.
    async fn shut_down(mut self) {
        self.evaluating.shutdown().await;
        if let Some((handle, _)) = &mut self.committing {
            let written = joined(handle.await);
            self.committed(written);
        }
        self.retry_commit_at = 0;
        self.commit(now_ms());
        if let Some((handle, batch)) = self.committing.take()
            && let Err(e) = joined(handle.await)
        {
            tracing::error!(error = %e, queued = batch.len(), "Cannot write the alerting journal at shutdown; the last evaluations run again at start.");
        }
    }
}

#[cfg(test)]
mod tests;
